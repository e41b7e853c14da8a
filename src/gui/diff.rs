//! Two messages' payloads side by side: each line of the first and of the second, removed
//! lines in red on the left, added lines in green on the right.

use egui::RichText;

use super::theme;
use crate::hub::{Hub, MessageId};
use crate::workbench::diff::{self, Diff, Op};

/// The comparison on screen, if any: computed once, when it is opened.
#[derive(Default)]
pub(crate) struct DiffWindow {
    open: Option<(MessageId, MessageId, Diff)>,
}

impl DiffWindow {
    /// Compares two messages the log holds; `false` if one is gone.
    pub(crate) fn open(&mut self, hub: &Hub, a: MessageId, b: MessageId) -> bool {
        let (Some(old), Some(new)) = (hub.message(a), hub.message(b)) else {
            return false;
        };
        self.open = Some((a, b, diff::payloads(&old.body, &new.body)));
        true
    }

    pub(crate) fn show(&mut self, ctx: &egui::Context) {
        let Some((a, b, compared)) = &self.open else {
            return;
        };
        let mut open = true;
        egui::Window::new(format!("Message {a} and message {b}"))
            .open(&mut open)
            .default_size([760.0, 480.0])
            .show(ctx, |ui| {
                let changed = compared.rows.iter().filter(|r| r.op != Op::Same).count();
                ui.label(if compared.identical {
                    "The same payload".to_owned()
                } else {
                    format!("{changed} lines differ")
                });
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
            });
        if !open {
            self.open = None;
        }
    }
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
