//! The message log: newest first, one row per message with a coloured delivery summary;
//! the selected message's payload and every delivery below it.

use std::time::Duration;

use egui::RichText;
use egui_extras::{Column, TableBuilder};

use super::action::Action;
use super::search::LogSearch;
use super::theme;
use super::{format, inspector};
use crate::hub::{Hub, MessageId, MessageRecord, Pattern};

/// Bytes of a payload shown in the details view; the rest is summarised.
const SHOWN_PAYLOAD: usize = 64 * 1024;
/// Deliveries listed at a time: a message to 10,000 subscribers is read a page at once,
/// not copied whole every frame.
const DELIVERIES_PAGE: usize = 100;
/// Search results are brought up to date at most this often.
const SEARCH_EVERY: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(crate) struct LogPanel {
    search: String,
    /// A topic pattern the rows must match, as typed.
    topic: String,
    selected: Option<MessageId>,
    /// While searching: the matching messages.
    found: Option<LogSearch>,
    /// The selected payload, rendered once on selection rather than every frame.
    payload: Option<(MessageId, String, &'static str)>,
    resend_to: String,
    /// The message picked to be compared with the next one selected.
    compare_from: Option<MessageId>,
    /// A delivery to open in the next frame (the matrix asked for its timeline).
    inspect: Option<String>,
    /// The page of deliveries shown, and the message it is for.
    deliveries_page: (MessageId, usize),
}

impl LogPanel {
    /// With a search, keeps the matching messages: the whole log is searched when the
    /// search text changes, and after that, when the hub changed (at most twice a second),
    /// only the messages logged since. Without a search, rows are read from the hub as
    /// they are drawn, so a log of 100,000 messages is never copied.
    fn refresh(&mut self, hub: &Hub) {
        // A pattern that does not parse filters nothing (and is shown in red).
        let topic = Pattern::parse(self.topic.trim()).ok();
        if self.search.is_empty() && topic.is_none() {
            self.found = None;
            return;
        }
        match &mut self.found {
            Some(found) if found.is_for(&self.search, topic.as_ref()) => {
                let (version, at) = found.updated();
                if version != hub.version() && at.elapsed() >= SEARCH_EVERY {
                    found.update(hub);
                }
            }
            found => found
                .insert(LogSearch::new(&self.search, topic))
                .update(hub),
        }
    }

    pub(crate) fn log_ui(&mut self, ui: &mut egui::Ui, hub: &Hub) -> Option<Action> {
        let mut action = None;
        ui.horizontal_wrapped(|ui| {
            ui.heading("Messages");
            ui.label(RichText::new(format!("{}", hub.logged_messages())).weak());
            let label = ui.label("Search");
            ui.add(
                egui::TextEdit::singleline(&mut self.search)
                    .hint_text("type, source, trace, topic or body…")
                    .desired_width(180.0),
            )
            .labelled_by(label.id);
            let label = ui.label("Topic filter");
            let bad = !self.topic.trim().is_empty() && Pattern::parse(self.topic.trim()).is_err();
            let mut field = egui::TextEdit::singleline(&mut self.topic)
                .hint_text("orders.* or payments.>")
                .desired_width(130.0);
            if bad {
                field = field.text_color(theme::FAILED);
            }
            let response = ui.add(field).labelled_by(label.id);
            if bad {
                let error = Pattern::parse(self.topic.trim()).err();
                response.on_hover_text(error.map(|e| e.to_string()).unwrap_or_default());
            }
            if ui
                .button("Export…")
                .on_hover_text("Save the log as NDJSON, one message per line")
                .clicked()
            {
                action = Some(Action::ExportLog);
            }
            if ui
                .button("Import…")
                .on_hover_text("Read an exported log back, to inspect and resend (nothing is sent)")
                .clicked()
            {
                action = Some(Action::ImportLog);
            }
            if ui
                .button("Clear")
                .on_hover_text("Forget the logged messages (deliveries in flight go on)")
                .clicked()
            {
                action = Some(Action::ForgetHistory);
            }
        });
        ui.add_space(4.0);
        self.refresh(hub);
        self.table_ui(ui, hub);
        action
    }

    /// The message it replays and those that replay it, each a link that selects it.
    fn links_ui(&mut self, ui: &mut egui::Ui, message: &crate::hub::MessageRecord) {
        let replays = message.replays();
        if message.replay_of.is_none() && replays.is_empty() {
            return;
        }
        let mut go = None;
        ui.horizontal_wrapped(|ui| {
            if let Some(original) = message.replay_of {
                ui.weak("Replay of");
                if ui.link(format!("message {original}")).clicked() {
                    go = Some(original);
                }
            }
            if !replays.is_empty() {
                ui.weak("Replayed as");
                for id in replays {
                    if ui.link(format!("message {id}")).clicked() {
                        go = Some(id);
                    }
                }
            }
        });
        if go.is_some() {
            self.selected = go;
        }
    }

    /// Selects message `id` and opens its delivery to `subscriber`.
    pub(crate) fn inspect(&mut self, id: MessageId, subscriber: String) {
        self.selected = Some(id);
        self.inspect = Some(subscriber);
    }

    /// Drops the selection and the search results: the log they were in is gone.
    pub(crate) fn forget_selection(&mut self) {
        self.selected = None;
        self.found = None;
    }

    fn table_ui(&mut self, ui: &mut egui::Ui, hub: &Hub) {
        let found = self.found.as_ref();
        let count = found.map_or_else(|| hub.logged_messages(), |found| found.rows().len());
        let row_height = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
        let mut clicked = None;
        // A click anywhere on a row selects it, so its labels must not take the click.
        ui.style_mut().interaction.selectable_labels = false;
        TableBuilder::new(ui)
            .id_salt("messages")
            .striped(true)
            .sense(egui::Sense::click())
            .auto_shrink([false, false])
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::auto().at_least(40.0))
            .column(Column::auto().at_least(92.0))
            // What matters most comes first, at fixed starts rather than sized to the
            // longest value, so that the deliveries stay in view in a narrow window
            // however long a topic is (the details show it whole).
            .column(Column::initial(110.0).at_least(40.0).clip(true))
            .column(Column::initial(170.0).at_least(90.0).clip(true))
            .column(Column::auto().at_least(56.0))
            .column(Column::initial(96.0).at_least(40.0).clip(true))
            .column(Column::remainder().at_least(90.0).clip(true))
            .header(22.0, |mut header| {
                for title in [
                    "#",
                    "Time (UTC)",
                    "Topic",
                    "Deliveries",
                    "Size",
                    "Type",
                    "Source",
                ] {
                    header.col(|ui| {
                        ui.strong(title);
                    });
                }
            })
            .body(|body| {
                body.rows(row_height, count, |mut row| {
                    let message = match found {
                        Some(found) => found.rows().get(row.index()).cloned(),
                        None => hub.nth_newest_message(row.index()),
                    };
                    // The log can shrink between counting and drawing (cleared, evicted).
                    let Some(message) = message else {
                        return;
                    };
                    row.set_selected(self.selected == Some(message.id));
                    row.col(|ui| {
                        if message.is_pinned() {
                            ui.label(
                                RichText::new(format!("*{}", message.id)).color(theme::PENDING),
                            )
                            .on_hover_text("Starred: it stays in the log");
                        } else {
                            ui.label(RichText::new(message.id.to_string()).weak());
                        }
                    });
                    row.col(|ui| {
                        ui.label(format::time_of_day(message.received_at));
                    });
                    row.col(|ui| match &message.topic {
                        Some(topic) => {
                            ui.label(topic.as_str());
                        }
                        None => {
                            ui.weak("–");
                        }
                    });
                    row.col(|ui| summary_ui(ui, &message));
                    row.col(|ui| {
                        ui.label(format::size(message.body.len()));
                    });
                    row.col(|ui| {
                        ui.label(message.content_type.as_deref().unwrap_or("–"));
                    });
                    row.col(|ui| {
                        ui.label(message.source.to_string());
                    });
                    if row.response().clicked() {
                        clicked = Some(message.id);
                    }
                });
            });
        if let Some(id) = clicked {
            self.selected = Some(id);
        }
    }

    /// The selected message: payload, deliveries, and what can be done with it.
    pub(crate) fn details_ui(
        &mut self,
        ui: &mut egui::Ui,
        hub: &Hub,
        url: Option<&str>,
        token: Option<&str>,
    ) -> Option<Action> {
        let Some(message) = self.selected.and_then(|id| hub.message(id)) else {
            ui.centered_and_justified(|ui| {
                ui.weak("Select a message to see its payload and every delivery");
            });
            return None;
        };
        let mut action = None;
        ui.horizontal_wrapped(|ui| {
            ui.strong(format!("Message {}", message.id));
            ui.label(format!(
                "{} · {} · {} · {} · from {}",
                format::time_of_day(message.received_at),
                format::size(message.body.len()),
                message.content_type.as_deref().unwrap_or("no content type"),
                message
                    .topic
                    .as_ref()
                    .map_or_else(|| "no topic".to_owned(), |t| format!("topic {t}")),
                message.source
            ));
        });
        ui.horizontal(|ui| {
            ui.weak("Trace");
            ui.add(
                egui::Label::new(RichText::new(message.trace.trace_id.to_string()).monospace())
                    .selectable(true),
            );
        });
        self.links_ui(ui, &message);
        // Wrapped: in a narrow panel the buttons go on a second line rather than push
        // the deliveries out of sight.
        ui.horizontal_wrapped(|ui| {
            if ui
                .button("Open in Compose")
                .on_hover_text("Edit it and publish it again, to all or to one subscriber")
                .clicked()
            {
                action = Some(Action::Replay(message.id));
            }
            let starred = message.is_pinned();
            if ui
                .button(if starred { "Unstar" } else { "Star" })
                .on_hover_text("A starred message never leaves the log (nor the store)")
                .clicked()
            {
                action = Some(Action::Star {
                    id: message.id,
                    starred: !starred,
                });
            }
            match self.compare_from {
                Some(other) if other != message.id => {
                    if ui.button(format!("Compare with message {other}")).clicked() {
                        action = Some(Action::Compare(other, message.id));
                        self.compare_from = None;
                    }
                }
                _ => {
                    if ui
                        .button("Compare…")
                        .on_hover_text("Then select another message to compare its payload with")
                        .clicked()
                    {
                        self.compare_from = Some(message.id);
                        action = Some(Action::Notice(format!(
                            "Select another message to compare with message {}",
                            message.id
                        )));
                    }
                }
            }
            if ui.button("Resend to all").clicked() {
                action = Some(Action::Resend {
                    id: message.id,
                    to: None,
                });
            }
            let label = ui.label("or to");
            egui::ComboBox::from_id_salt("resend_to")
                .selected_text(if self.resend_to.is_empty() {
                    "pick a subscriber"
                } else {
                    &self.resend_to
                })
                .width(170.0)
                .show_ui(ui, |ui| {
                    // Listed only while the box is open: a large hub is not copied per frame.
                    for subscriber in hub.subscribers() {
                        let address = subscriber.address.to_string();
                        ui.selectable_value(&mut self.resend_to, address.clone(), address);
                    }
                })
                .response
                .labelled_by(label.id);
            let can_resend_one = !self.resend_to.is_empty();
            if ui
                .add_enabled(can_resend_one, egui::Button::new("Resend"))
                .clicked()
            {
                action = Some(Action::Resend {
                    id: message.id,
                    to: Some(self.resend_to.clone()),
                });
            }
            if let Some(url) = url
                && ui
                    .button("Copy as cURL")
                    .on_hover_text("A command that publishes this payload again")
                    .clicked()
            {
                let command =
                    format::curl(url, message.content_type.as_deref(), &message.body, token);
                ui.ctx().copy_text(command);
                action = Some(Action::Notice("cURL command copied".to_owned()));
            }
        });
        ui.separator();
        let opened = self
            .inspect
            .take()
            .and_then(|address| message.last_delivery_to(&address));
        if let Some(slot) = opened {
            self.deliveries_page = (message.id, slot / DELIVERIES_PAGE);
        }
        let (count, _) = message.deliveries_version();
        let pages = count.div_ceil(DELIVERIES_PAGE).max(1);
        let mut page = match self.deliveries_page {
            (id, page) if id == message.id => page.min(pages - 1),
            _ => 0,
        };
        let (deliveries, count) = message.deliveries_page(page * DELIVERIES_PAGE, DELIVERIES_PAGE);
        let height = ui.available_height();
        ui.columns(2, |columns| {
            let (text, kind) = self.payload_text(&message);
            columns[0].label(RichText::new(format!("Payload ({kind})")).strong());
            egui::ScrollArea::both()
                .id_salt("payload")
                .max_height(height - 24.0)
                .auto_shrink([false, false])
                .show(&mut columns[0], |ui| {
                    // Not wrapped: the pane scrolls sideways, and a narrow one would
                    // otherwise break JSON a character per line.
                    ui.add(
                        egui::Label::new(RichText::new(text).monospace())
                            .selectable(true)
                            .extend(),
                    );
                });
            columns[1].horizontal(|ui| {
                ui.label(RichText::new(format!("Deliveries ({count})")).strong());
                if pages > 1 {
                    pager_ui(ui, &mut page, pages, count);
                }
            });
            egui::ScrollArea::vertical()
                .id_salt(("deliveries", page))
                .max_height(height - 24.0)
                .auto_shrink([false, false])
                .show(&mut columns[1], |ui| {
                    if message.subscribers == 0 {
                        ui.weak("No subscriber was live when it was published");
                    } else if deliveries.is_empty() {
                        ui.weak(format!(
                            "Being queued for {} subscribers",
                            message.subscribers
                        ));
                    }
                    let first = page * DELIVERIES_PAGE;
                    let clustered = hub.is_clustered();
                    inspector::deliveries_ui(ui, first, &deliveries, opened, clustered);
                });
        });
        self.deliveries_page = (message.id, page);
        action
    }

    fn payload_text(&mut self, message: &MessageRecord) -> (&str, &'static str) {
        if self
            .payload
            .as_ref()
            .is_none_or(|(id, ..)| *id != message.id)
        {
            let (text, kind) = format::payload(&message.body, SHOWN_PAYLOAD);
            self.payload = Some((message.id, text, kind));
        }
        let (_, text, kind) = self.payload.as_ref().expect("set above");
        (text, kind)
    }
}

/// Previous and next page of a message's deliveries, and where in them the page is.
fn pager_ui(ui: &mut egui::Ui, page: &mut usize, pages: usize, count: usize) {
    if ui
        .add_enabled(*page > 0, egui::Button::new("‹"))
        .on_hover_text("Previous page of deliveries")
        .clicked()
    {
        *page -= 1;
    }
    let first = *page * DELIVERIES_PAGE + 1;
    let last = (first + DELIVERIES_PAGE - 1).min(count);
    ui.weak(format!("{first}–{last}"));
    if ui
        .add_enabled(*page + 1 < pages, egui::Button::new("›"))
        .on_hover_text("Next page of deliveries")
        .clicked()
    {
        *page += 1;
    }
}

/// "3 ok · 1 failed · 2 pending", each in its colour.
fn summary_ui(ui: &mut egui::Ui, message: &MessageRecord) {
    let summary = message.summary();
    if summary.delivered + summary.failed + summary.pending == 0 {
        ui.weak("no subscribers");
        return;
    }
    for (count, word, colour) in [
        (summary.delivered, "ok", theme::OK),
        (summary.failed, "failed", theme::FAILED),
        (
            summary.pending - summary.retrying,
            "pending",
            theme::PENDING,
        ),
        (summary.retrying, "retrying", theme::PENDING),
    ] {
        if count > 0 {
            ui.label(RichText::new(format!("{count} {word}")).color(colour));
        }
    }
}
