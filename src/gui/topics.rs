//! The Topics window: every topic messages were published with, how many and when last,
//! and who a message with it reaches now. A click loads the topic's last payload into
//! Compose.

use std::time::{Duration, Instant, SystemTime};

use egui::RichText;
use egui_extras::{Column, TableBuilder};

use super::action::Action;
use super::format;
use crate::hub::{Hub, MessageId};

/// How often an open window reads the topics again while the hub is busy.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Topics the window shows, the most recent first: each costs a walk of the topic index
/// per refresh, on the GUI thread, and the hub remembers up to 10,000.
const SHOWN: usize = 1_000;
/// Matching subscribers named per topic.
const NAMED: usize = 5;

struct Row {
    topic: String,
    messages: u64,
    last_at: SystemTime,
    last_id: MessageId,
    reach: usize,
    /// Subscribers whose patterns match, as one line.
    matching: String,
}

#[derive(Default)]
pub(crate) struct TopicsWindow {
    pub(crate) open: bool,
    rows: Vec<Row>,
    /// Topics the hub remembers, shown or not.
    total: usize,
    seen: Option<(u64, Instant)>,
}

impl TopicsWindow {
    fn refresh(&mut self, hub: &Hub) {
        let version = hub.version();
        if self
            .seen
            .is_some_and(|(seen, at)| seen == version || at.elapsed() < REFRESH_EVERY)
        {
            return;
        }
        let topics = hub.topics();
        self.total = topics.len();
        self.rows = topics
            .into_iter()
            .take(SHOWN)
            .map(|seen| {
                let reach = hub.reach_of(&seen.topic, NAMED);
                let mut matching: Vec<&str> = reach.named.iter().map(|a| &**a).collect();
                let more = format!("and {} more", reach.matched.saturating_sub(NAMED));
                if reach.matched > NAMED {
                    matching.push(&more);
                }
                Row {
                    topic: seen.topic.to_string(),
                    messages: seen.messages,
                    last_at: seen.last_at,
                    last_id: seen.last_id,
                    reach: reach.subscribers,
                    matching: matching.join(", "),
                }
            })
            .collect();
        self.seen = Some((version, Instant::now()));
    }

    /// The window, while open; asks for a topic's last message to be composed again.
    pub(crate) fn show(&mut self, ctx: &egui::Context, hub: &Hub) -> Option<Action> {
        if !self.open {
            self.seen = None;
            return None;
        }
        self.refresh(hub);
        let mut action = None;
        let mut open = self.open;
        egui::Window::new("Topics")
            .open(&mut open)
            .default_size([560.0, 320.0])
            .show(ctx, |ui| {
                if self.rows.is_empty() {
                    ui.weak("No message with a topic yet. Publish with ?topic=orders.created, the X-Herald-Topic header, or Compose's Topic field.");
                    return;
                }
                ui.weak("Click a topic to load its last payload into Compose");
                if self.total > self.rows.len() {
                    ui.weak(format!(
                        "The {} most recent of {} topics",
                        self.rows.len(),
                        self.total
                    ));
                }
                action = self.table_ui(ui);
            });
        self.open = open;
        action
    }

    fn table_ui(&self, ui: &mut egui::Ui) -> Option<Action> {
        let mut clicked = None;
        let row_height = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
        ui.style_mut().interaction.selectable_labels = false;
        TableBuilder::new(ui)
            .id_salt("topics")
            .striped(true)
            .sense(egui::Sense::click())
            .auto_shrink([false, false])
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::auto().at_least(150.0).clip(true))
            .column(Column::auto().at_least(70.0))
            .column(Column::auto().at_least(90.0))
            .column(Column::auto().at_least(70.0))
            .column(Column::remainder().at_least(120.0).clip(true))
            .header(22.0, |mut header| {
                for title in ["Topic", "Messages", "Last (UTC)", "Reaches", "Matching"] {
                    header.col(|ui| {
                        ui.strong(title);
                    });
                }
            })
            .body(|body| {
                body.rows(row_height, self.rows.len(), |mut row| {
                    let topic = &self.rows[row.index()];
                    row.col(|ui| {
                        ui.label(RichText::new(&topic.topic).monospace());
                    });
                    row.col(|ui| {
                        ui.label(topic.messages.to_string());
                    });
                    row.col(|ui| {
                        ui.label(format::time_of_day(topic.last_at));
                    });
                    row.col(|ui| {
                        ui.label(topic.reach.to_string())
                            .on_hover_text("Subscribers a message with it reaches now, those without topics included");
                    });
                    row.col(|ui| {
                        if topic.matching.is_empty() {
                            ui.weak("none by topic");
                        } else {
                            ui.label(&topic.matching);
                        }
                    });
                    if row.response().clicked() {
                        clicked = Some(Action::Compose {
                            id: topic.last_id,
                            topic: topic.topic.clone(),
                        });
                    }
                });
            });
        clicked
    }
}
