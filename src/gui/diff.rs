//! Two messages' payloads side by side: each line of the first and of the second, removed
//! lines in red on the left, added lines in green on the right.
//!
//! The comparison runs on a blocking thread of the runtime (up to 200 ms of work and a
//! few MiB), in one of the few turns the API's comparisons share: when none is free the
//! window says so and offers to try again, rather than comparing anyway or not at all.

use std::sync::Arc;

use egui::RichText;
use parking_lot::Mutex;
use tokio::runtime::Handle;

use super::action::Action;
use super::{format, theme};
use crate::hub::{Hub, MessageId};
use crate::workbench::diff::{self, Comparisons, Diff, Op};

/// The comparison on screen, if any: computed once, when it is opened.
#[derive(Default)]
pub(crate) struct DiffWindow {
    open: Option<(MessageId, MessageId, State)>,
}

enum State {
    /// Running; the slot is filled when it is done.
    Comparing(Arc<Mutex<Option<Diff>>>),
    Done(Diff),
    /// No turn was free: what to tell the user.
    Refused(String),
}

impl DiffWindow {
    /// Compares two messages the log holds; `false` if one is gone.
    pub(crate) fn open(
        &mut self,
        hub: &Hub,
        comparisons: &Comparisons,
        runtime: &Handle,
        ctx: &egui::Context,
        (a, b): (MessageId, MessageId),
    ) -> bool {
        let (Some(old), Some(new)) = (hub.message(a), hub.message(b)) else {
            return false;
        };
        let state = match comparisons.try_start() {
            Ok(turn) => {
                let slot = Arc::new(Mutex::new(None));
                let (done, ctx) = (slot.clone(), ctx.clone());
                runtime.spawn_blocking(move || {
                    *done.lock() = Some(turn.compare(&old.body, &new.body));
                    ctx.request_repaint();
                });
                State::Comparing(slot)
            }
            Err(busy) => State::Refused(format::sentence(&busy.to_string())),
        };
        self.open = Some((a, b, state));
        true
    }

    /// The window, if open; asks for the comparison again when the user says to.
    pub(crate) fn show(&mut self, ctx: &egui::Context) -> Option<Action> {
        let (a, b, state) = self.open.as_mut()?;
        let (a, b) = (*a, *b);
        let finished = match state {
            State::Comparing(slot) => slot.lock().take(),
            _ => None,
        };
        if let Some(done) = finished {
            *state = State::Done(done);
        }
        let mut open = true;
        let mut again = false;
        egui::Window::new(format!("Message {a} and message {b}"))
            .open(&mut open)
            .default_size([760.0, 480.0])
            .show(ctx, |ui| match state {
                State::Comparing(_) => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Comparing…");
                    });
                }
                State::Refused(why) => {
                    ui.label(why.as_str());
                    again = ui.button("Try again").clicked();
                }
                State::Done(compared) => rows_ui(ui, compared),
            });
        if !open {
            self.open = None;
        }
        again.then_some(Action::Compare(a, b))
    }
}

fn rows_ui(ui: &mut egui::Ui, compared: &Diff) {
    let changed = compared.rows.iter().filter(|r| r.op != Op::Same).count();
    ui.label(if compared.identical {
        "The same payload".to_owned()
    } else {
        format!("{changed} lines differ")
    });
    if let Some(note) = compared.note() {
        ui.weak(format::sentence(note));
    }
    if compared.truncated {
        ui.weak(format!("Only the first {} lines are shown", diff::MAX_ROWS));
    }
    let row_height = ui.text_style_height(&egui::TextStyle::Monospace) + 2.0;
    egui::ScrollArea::both()
        .auto_shrink([false, false])
        .show_rows(ui, row_height, compared.rows.len(), |ui, range| {
            egui::Grid::new("diff_rows")
                .num_columns(4)
                .striped(false)
                .show(ui, |ui| {
                    for row in &compared.rows[range] {
                        side(ui, row.old, &row.text, row.op != Op::Added, row.op);
                        side(ui, row.new, &row.text, row.op != Op::Removed, row.op);
                        ui.end_row();
                    }
                });
        });
}

/// One side of a row: its line number and text, if the line is on this side.
fn side(ui: &mut egui::Ui, line: Option<usize>, text: &str, here: bool, op: Op) {
    let number = line.map_or_else(String::new, |n| n.to_string());
    ui.label(RichText::new(number).monospace().weak());
    if !here {
        ui.label("");
        return;
    }
    let text = RichText::new(text).monospace();
    ui.label(match op {
        Op::Same => text,
        Op::Removed => text.color(theme::FAILED),
        Op::Added => text.color(theme::OK),
    });
}
