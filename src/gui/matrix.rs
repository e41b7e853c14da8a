//! The fan-out matrix: recent messages (rows) by subscribers (columns), each cell coloured
//! by what became of that delivery. Only the cells on screen are built, so 1,000
//! messages by 10,000 subscribers cost what one screenful does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Color32, Rect, Sense, Vec2, pos2, vec2};

use super::action::Action;
use super::{format, theme};
use crate::hub::{DeliveryError, DeliveryState, Hub, Outcome};

/// Messages the matrix shows, newest first.
const ROWS: usize = 1_000;
const CELL: f32 = 14.0;
/// Room for the message ids on the left and the subscribers' numbers on top.
const ROW_HEADER: f32 = 64.0;
const COLUMN_HEADER: f32 = 18.0;
/// How often the list of subscribers (the columns) is read again while the hub changes.
const COLUMNS_EVERY: Duration = Duration::from_millis(500);

const DROPPED: Color32 = Color32::from_rgb(0x8e, 0x44, 0xad);
const NONE: Color32 = Color32::from_gray(60);

/// How long a changing row's cells are reused: reading them walks the message's
/// deliveries.
const ROW_EVERY: Duration = Duration::from_millis(200);
/// Deliveries walked per frame to read rows again. Rows fall due together (they were
/// read in the same frame), so without a bound every 200 ms one frame would read them
/// all: 40 rows of 10,000 deliveries is tens of milliseconds. Beyond it, rows keep
/// their last cells until a later frame.
const WALK_PER_FRAME: usize = 20_000;

/// One row's cells, for the columns they were read for, when, and at which of the
/// message's versions.
struct Row {
    at: Instant,
    version: u64,
    columns: (u64, std::ops::Range<usize>),
    cells: Vec<Option<(DeliveryState, usize)>>,
}

#[derive(Default)]
pub(crate) struct MatrixWindow {
    pub(crate) open: bool,
    /// The subscribers' addresses, in the hub's order, as last read, and when.
    columns: Option<(Instant, u64, Vec<Arc<str>>)>,
    /// Moves when the columns read differ from the last: rows read for others are stale.
    generation: u64,
    /// The rows on screen, by message id.
    rows: std::collections::HashMap<crate::hub::MessageId, Row>,
}

impl MatrixWindow {
    pub(crate) fn show(&mut self, ctx: &egui::Context, hub: &Hub) -> Option<Action> {
        if !self.open {
            return None;
        }
        let version = hub.version();
        let stale = self
            .columns
            .as_ref()
            .is_none_or(|(at, seen, _)| *seen != version && at.elapsed() >= COLUMNS_EVERY);
        if stale {
            let addresses: Vec<_> = hub.subscribers().into_iter().map(|s| s.address).collect();
            if self
                .columns
                .as_ref()
                .is_none_or(|(_, _, c)| *c != addresses)
            {
                self.generation += 1;
            }
            self.columns = Some((Instant::now(), version, addresses));
        }
        let generation = self.generation;
        let columns = self
            .columns
            .as_ref()
            .map(|(_, _, c)| c.clone())
            .unwrap_or_default();
        let rows = hub.logged_messages().min(ROWS);
        let mut action = None;
        let mut open = self.open;
        egui::Window::new("Fan-out matrix")
            .open(&mut open)
            .default_size([900.0, 520.0])
            .show(ctx, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.weak(format!(
                        "The newest {rows} messages by {} subscribers:",
                        columns.len()
                    ));
                    for (color, what) in [
                        (theme::OK, "delivered"),
                        (theme::PENDING, "pending or retrying"),
                        (theme::FAILED, "failed"),
                        (DROPPED, "dropped (queue full)"),
                        (NONE, "not sent (topic, or not live then)"),
                    ] {
                        ui.colored_label(color, "■");
                        ui.weak(what);
                    }
                });
                let size = vec2(
                    ROW_HEADER + columns.len() as f32 * CELL,
                    COLUMN_HEADER + rows as f32 * CELL,
                );
                let cache = &mut self.rows;
                egui::ScrollArea::both()
                    .auto_shrink([false, false])
                    .show_viewport(ui, |ui, viewport| {
                        // One response for the whole grid, the cell found from the
                        // pointer: two thousand widgets a frame would cost more than
                        // drawing them.
                        let (_, grid) = ui.allocate_exact_size(size, Sense::click());
                        let columns = (generation, &columns[..]);
                        action = cells_ui(ui, hub, columns, rows, &grid, viewport, cache);
                    });
            });
        self.open = open;
        action
    }
}

/// Draws the cells inside `viewport` (relative to the `grid`'s corner), and answers a
/// click or a hover on one of them.
fn cells_ui(
    ui: &mut egui::Ui,
    hub: &Hub,
    (generation, columns): (u64, &[Arc<str>]),
    rows: usize,
    grid: &egui::Response,
    viewport: Rect,
    cache: &mut std::collections::HashMap<crate::hub::MessageId, Row>,
) -> Option<Action> {
    let first_col = ((viewport.min.x - ROW_HEADER).max(0.0) / CELL) as usize;
    let last_col =
        (((viewport.max.x - ROW_HEADER).max(0.0) / CELL).ceil() as usize).min(columns.len());
    let first_row = ((viewport.min.y - COLUMN_HEADER).max(0.0) / CELL) as usize;
    let last_row = (((viewport.max.y - COLUMN_HEADER).max(0.0) / CELL).ceil() as usize).min(rows);
    let visible = &columns[first_col.min(last_col)..last_col];
    let origin = grid.rect.min;
    // The cell under the pointer, and whether it was clicked.
    let at = |pos: Option<egui::Pos2>| {
        let offset = pos? - origin - vec2(ROW_HEADER, COLUMN_HEADER);
        (offset.x >= 0.0 && offset.y >= 0.0)
            .then(|| ((offset.y / CELL) as usize, (offset.x / CELL) as usize))
    };
    let hovered = at(grid.hover_pos());
    let clicked = at(grid.interact_pointer_pos()).filter(|_| grid.clicked());
    let requests = ui
        .input(|i| (i.events.iter()).any(|e| matches!(e, egui::Event::AccessKitActionRequest(_))));
    let mut tooltip = None;
    let painter = ui.painter().clone();
    let text = |pos, label: String| {
        painter.text(
            pos,
            egui::Align2::LEFT_TOP,
            label,
            egui::FontId::monospace(9.0),
            ui.visuals().weak_text_color(),
        )
    };
    for (i, _) in visible.iter().enumerate().step_by(5) {
        let x = origin.x + ROW_HEADER + (first_col + i) as f32 * CELL;
        text(
            pos2(x, origin.y + viewport.min.y.max(0.0)),
            format!("{}", first_col + i + 1),
        );
    }
    let mut action = None;
    let range = (generation, first_col.min(last_col)..last_col);
    let mut shown = Vec::with_capacity(last_row.saturating_sub(first_row));
    let (mut walked, mut behind) = (0, false);

    let on_screen: Vec<(usize, Arc<crate::hub::MessageRecord>)> = (first_row..last_row)
        .map_while(|row| hub.nth_newest_message(row).map(|m| (row, m)))
        .collect();
    // The rows to read again, those never read first, then the longest unread: rows
    // fall due together, and the budget would otherwise always go to the top ones.
    let mut due: Vec<(Option<Instant>, usize, u64, &Arc<crate::hub::MessageRecord>)> = on_screen
        .iter()
        .filter_map(|(_, message)| {
            let (count, version) = message.deliveries_version();
            match cache.get(&message.id) {
                None => Some((None, count, version, message)),
                Some(row) if row.columns != range => Some((None, count, version, message)),
                Some(row) if row.version != version && row.at.elapsed() >= ROW_EVERY => {
                    Some((Some(row.at), count, version, message))
                }
                Some(_) => None,
            }
        })
        .collect();
    due.sort_by_key(|(at, ..)| *at);
    for (_, count, version, message) in due {
        // The first row read this frame is always read, so a screenful of large rows
        // still moves along; a row never read is drawn blank until its turn.
        if walked > 0 && walked + count > WALK_PER_FRAME {
            behind = true;
            continue;
        }
        walked += count;
        let row = Row {
            at: Instant::now(),
            version,
            columns: range.clone(),
            cells: message.states_for(visible),
        };
        cache.insert(message.id, row);
    }
    for &(row, ref message) in &on_screen {
        shown.push(message.id);
        let y = origin.y + COLUMN_HEADER + row as f32 * CELL;
        text(
            pos2(origin.x + viewport.min.x.max(0.0), y),
            format!("#{}", message.id),
        );
        let Some(Row { cells: states, .. }) = cache.get(&message.id) else {
            continue;
        };
        for (i, (state, address)) in states.iter().zip(visible).enumerate() {
            let col = first_col + i;
            let rect = Rect::from_min_size(
                pos2(origin.x + ROW_HEADER + col as f32 * CELL, y),
                Vec2::splat(CELL - 2.0),
            );
            painter.rect_filled(rect, 2.0, colour(state.as_ref()));
            // Words only where they are read: a screen reader, or the cell under the
            // pointer. Formatting two thousand a frame would cost more than the drawing.
            let label = || {
                let (_, what) = describe(state.as_ref());
                let attempts = state.as_ref().map_or(0, |(_, n)| *n);
                format!(
                    "message {} to {address}: {what}, {attempts} attempts",
                    message.id
                )
            };
            let id = grid.id.with((message.id, col));
            // Only while a screen reader (or a test) reads the tree.
            ui.ctx().accesskit_node_builder(id, |node| {
                node.set_role(egui::accesskit::Role::Button);
                node.set_label(label());
                node.set_bounds(egui::accesskit::Rect {
                    x0: rect.min.x.into(),
                    y0: rect.min.y.into(),
                    x1: rect.max.x.into(),
                    y1: rect.max.y.into(),
                });
                node.add_action(egui::accesskit::Action::Click);
            });
            if hovered == Some((row, col)) {
                tooltip = Some(label());
            }
            let pressed = requests
                && ui.input(|i| i.has_accesskit_action_request(id, egui::accesskit::Action::Click));
            if clicked == Some((row, col)) || pressed {
                action = Some(Action::Inspect {
                    id: message.id,
                    subscriber: address.to_string(),
                });
            }
        }
    }
    if let Some(text) = tooltip {
        // At the pointer: the grid is one response, and its own anchor is far away.
        grid.clone().on_hover_text_at_pointer(text);
    }
    // Rows scrolled away are forgotten.
    cache.retain(|id, _| shown.contains(id));
    if behind {
        ui.ctx().request_repaint();
    }
    action
}

/// A cell's colour, without its words.
fn colour(state: Option<&(DeliveryState, usize)>) -> Color32 {
    match state {
        None => NONE,
        Some((DeliveryState::Pending | DeliveryState::Retrying { .. }, _)) => theme::PENDING,
        Some((DeliveryState::Done(Outcome::Delivered { .. }), _)) => theme::OK,
        Some((DeliveryState::Done(Outcome::Failed(DeliveryError::QueueFull { .. })), _)) => DROPPED,
        Some((DeliveryState::Done(Outcome::Failed(_)), _)) => theme::FAILED,
    }
}

/// A cell's colour and what it says.
fn describe(state: Option<&(DeliveryState, usize)>) -> (Color32, String) {
    match state {
        None => (NONE, "not sent".to_owned()),
        Some((DeliveryState::Pending, _)) => (theme::PENDING, "pending".to_owned()),
        Some((DeliveryState::Retrying { .. }, _)) => (theme::PENDING, "retrying".to_owned()),
        Some((DeliveryState::Done(Outcome::Delivered { latency, .. }), _)) => (
            theme::OK,
            format!("delivered in {}", format::latency(*latency)),
        ),
        Some((DeliveryState::Done(Outcome::Failed(DeliveryError::QueueFull { .. })), _)) => {
            (DROPPED, "dropped: its queue was full".to_owned())
        }
        Some((DeliveryState::Done(Outcome::Failed(error)), _)) => {
            (theme::FAILED, format!("failed: {error}"))
        }
    }
}
