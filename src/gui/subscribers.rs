//! The subscribers panel: who is live, how their keep-alive and deliveries fare, and a
//! Kick button per row.

use std::time::{Duration, Instant, SystemTime};

use egui::RichText;
use egui_extras::{Column, TableBuilder};

use super::format;
use super::search::Needle;
use super::theme;
use std::sync::Arc;

use crate::hub::{Hub, Pattern, RemovalReason, SubscriberState, SubscriberView, Subscription};

/// What a row's buttons ask of one subscriber, carried out once the table is drawn.
#[derive(Debug, Clone, Copy)]
enum Control {
    Paused(bool),
    Pinned(bool),
    Expire,
    Ban(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Address,
    Registered,
    Age,
    Queue,
    Delivered,
    Failed,
}

pub(crate) struct SubscribersPanel {
    filter: String,
    sort: SortKey,
    descending: bool,
    add_address: String,
    /// Register the next one in strict order.
    add_ordered: bool,
    /// Topic patterns for the next one, comma-separated; none: every message.
    add_topics: String,
    add_error: Option<String>,
    /// The subscriber whose topics are being edited, the text as typed, and why the
    /// last save was refused.
    editing: Option<(Arc<str>, String, Option<String>)>,
    /// The hub's subscribers as of `seen_version`, sorted and filtered.
    rows: Vec<SubscriberView>,
    seen_version: u64,
    seen_at: Option<Instant>,
    seen_filter: (String, SortKey, bool),
}

impl Default for SubscribersPanel {
    fn default() -> Self {
        Self {
            filter: String::new(),
            sort: SortKey::Address,
            descending: false,
            add_address: String::new(),
            add_ordered: false,
            add_topics: String::new(),
            add_error: None,
            editing: None,
            rows: Vec::new(),
            seen_version: u64::MAX,
            seen_at: None,
            seen_filter: (String::new(), SortKey::Address, false),
        }
    }
}

impl SubscribersPanel {
    /// Re-reads the hub when it changed, at most ten times a second (once a second beyond
    /// a thousand subscribers, where a copy costs milliseconds), so the hub is never copied
    /// on every frame. Also once a second when its version did not move, for queue
    /// depths: they change without a bump (the fan-out task queues after the publish was
    /// announced, and a worker takes a job silently), as do leases when the TTL is set.
    /// Ages and expiry bars move on their own: they are worked out from the stored times
    /// as rows are drawn.
    fn refresh(&mut self, hub: &Hub) {
        let version = hub.version();
        let settings = (self.filter.clone(), self.sort, self.descending);
        let stale = self
            .seen_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        let every = if self.rows.len() > 1_000 {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(100)
        };
        let changed =
            version != self.seen_version && self.seen_at.is_none_or(|at| at.elapsed() >= every);
        if !(stale || changed || settings != self.seen_filter) {
            return;
        }
        let needle = Needle::new(&self.filter);
        let mut rows: Vec<SubscriberView> = hub
            .subscribers()
            .into_iter()
            .filter(|s| needle.is_in(s.address.as_bytes()))
            .collect();
        rows.sort_by(|a, b| {
            let order = match self.sort {
                SortKey::Address => a.address.cmp(&b.address),
                SortKey::Registered => a.registered_at.cmp(&b.registered_at),
                // Oldest keep-alive first when ascending: those closest to expiry.
                SortKey::Age => a.last_seen.cmp(&b.last_seen),
                SortKey::Queue => (a.queue_depth + a.backlog).cmp(&(b.queue_depth + b.backlog)),
                SortKey::Delivered => a.delivered.cmp(&b.delivered),
                SortKey::Failed => a.failed.cmp(&b.failed),
            };
            let order = order.then_with(|| a.address.cmp(&b.address));
            if self.descending {
                order.reverse()
            } else {
                order
            }
        });
        self.rows = rows;
        self.seen_version = version;
        self.seen_at = Some(Instant::now());
        self.seen_filter = settings;
    }

    pub(crate) fn subscribers_ui(&mut self, ui: &mut egui::Ui, hub: &Hub) {
        self.refresh(hub);
        ui.horizontal(|ui| {
            ui.heading("Subscribers");
            ui.label(RichText::new(format!("{}", hub.subscriber_count())).weak());
        });
        // Wrapped: in a narrow panel, registering goes to a second line instead of
        // widening the panel past the message log.
        ui.horizontal_wrapped(|ui| {
            let label = ui.label("Filter");
            ui.add(
                egui::TextEdit::singleline(&mut self.filter)
                    .hint_text("address contains…")
                    .desired_width(120.0),
            )
            .labelled_by(label.id);
            ui.separator();
            let label = ui.label("Add");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.add_address)
                        .hint_text("host:port or URL")
                        .desired_width(130.0),
                )
                .labelled_by(label.id);
            let label = ui.label("topics");
            ui.add(
                egui::TextEdit::singleline(&mut self.add_topics)
                    .hint_text("all")
                    .desired_width(80.0),
            )
            .labelled_by(label.id)
            .on_hover_text("Comma-separated patterns: orders.* (one token), payments.> (the rest); empty: every message");
            ui.checkbox(&mut self.add_ordered, "ordered").on_hover_text(
                "Strict order: a delivery waiting for its retry holds back the later ones",
            );
            let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Register").clicked() || entered {
                self.register(hub);
            }
        });
        if let Some(error) = &self.add_error {
            ui.colored_label(theme::FAILED, error);
        }
        ui.add_space(4.0);
        self.table_ui(ui, hub);
    }

    fn register(&mut self, hub: &Hub) {
        let address = self.add_address.trim();
        if address.is_empty() {
            return;
        }
        let topics = match parse_topics(&self.add_topics) {
            Ok(topics) => topics,
            Err(err) => {
                self.add_error = Some(err);
                return;
            }
        };
        let subscription = Subscription {
            ordered: self.add_ordered.then_some(true),
            topics: (!topics.is_empty()).then_some(topics),
            ..Subscription::new(address)
        };
        match hub.subscribe(subscription) {
            Ok(_) => {
                self.add_error = None;
                self.add_address.clear();
                self.add_topics.clear();
                self.seen_at = None;
            }
            Err(err) => self.add_error = Some(err.to_string()),
        }
    }

    fn table_ui(&mut self, ui: &mut egui::Ui, hub: &Hub) {
        let now = SystemTime::now();
        let mut kick = None;
        let mut control = None;
        let mut save = None;
        let row_height = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
        TableBuilder::new(ui)
            .id_salt("subscribers")
            .striped(true)
            .auto_shrink([false, false])
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::remainder().at_least(120.0).clip(true))
            // A fixed start, not sized to the longest list: patterns can be long.
            .column(Column::initial(70.0).at_least(40.0).clip(true))
            .column(Column::auto().at_least(86.0))
            .column(Column::auto().at_least(40.0))
            .column(Column::exact(58.0))
            .column(Column::auto().at_least(36.0))
            .column(Column::auto().at_least(28.0))
            .column(Column::auto().at_least(36.0))
            .column(Column::auto().at_least(76.0))
            .column(Column::auto())
            .header(22.0, |mut header| {
                let columns = [
                    ("Address", Some(SortKey::Address)),
                    ("Topics", None),
                    ("Registered", Some(SortKey::Registered)),
                    ("Age", Some(SortKey::Age)),
                    ("Expires", None),
                    ("Queue", Some(SortKey::Queue)),
                    ("OK", Some(SortKey::Delivered)),
                    ("Failed", Some(SortKey::Failed)),
                    ("Last", None),
                    ("", None),
                ];
                for (title, key) in columns {
                    header.col(|ui| match key {
                        Some(key) => {
                            let arrow = match (self.sort == key, self.descending) {
                                (true, false) => " ⏶",
                                (true, true) => " ⏷",
                                _ => "",
                            };
                            let heading = RichText::new(format!("{title}{arrow}")).strong();
                            if ui.add(egui::Button::new(heading).frame(false)).clicked() {
                                if self.sort == key {
                                    self.descending = !self.descending;
                                } else {
                                    self.sort = key;
                                    self.descending = false;
                                }
                            }
                        }
                        None => {
                            ui.strong(title);
                        }
                    });
                }
            })
            .body(|body| {
                body.rows(row_height, self.rows.len(), |mut row| {
                    let s = &self.rows[row.index()];
                    row.col(|ui| {
                        let suspended = s.state == SubscriberState::Suspended;
                        let text = RichText::new(&*s.address).monospace();
                        ui.label(if suspended { text.color(theme::SUSPENDED) } else { text })
                            .on_hover_text(format!("delivers to {}", s.target));
                        if suspended {
                            ui.label(RichText::new("suspended").small().color(theme::SUSPENDED))
                                .on_hover_text(
                                    "Failing repeatedly: its deliveries wait while it is probed with backoff",
                                );
                        }
                        if s.signed {
                            ui.label(RichText::new("signed").small().weak());
                        }
                        if s.ordered {
                            ui.label(RichText::new("ordered").small().weak()).on_hover_text(
                                "Strict order: a delivery waiting for its retry holds back the later ones",
                            );
                        }
                        if s.max_in_flight > 1 {
                            ui.label(RichText::new(format!("×{}", s.max_in_flight)).small().weak())
                                .on_hover_text("Deliveries it takes at once");
                        }
                        if s.paused {
                            ui.label(RichText::new("paused").small().color(theme::PENDING))
                                .on_hover_text("Deliveries held; its queue fills until it is resumed");
                        }
                        if s.pinned {
                            ui.label(RichText::new("pinned").small().weak())
                                .on_hover_text("Never expires");
                        }
                    });
                    row.col(|ui| match &mut self.editing {
                        Some((address, text, _)) if *address == s.address => {
                            let field = ui.add(
                                egui::TextEdit::singleline(text)
                                    .hint_text("all")
                                    .desired_width(120.0),
                            );
                            let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                            if ui.small_button("Save").clicked() || entered {
                                save = Some((address.clone(), text.clone()));
                            }
                            if ui.small_button("Cancel").clicked() {
                                save = None;
                                self.editing = None;
                            }
                        }
                        _ => {
                            let shown = if s.topics.is_empty() {
                                RichText::new("all").weak()
                            } else {
                                let list: Vec<&str> = s.topics.iter().map(Pattern::as_str).collect();
                                RichText::new(list.join(", ")).monospace()
                            };
                            let edit = ui
                                .add(egui::Button::new(shown).frame(false))
                                .on_hover_text("Click to change its topics (empty: every message)");
                            if edit.clicked() {
                                let list: Vec<&str> = s.topics.iter().map(Pattern::as_str).collect();
                                self.editing = Some((s.address.clone(), list.join(", "), None));
                            }
                        }
                    });
                    row.col(|ui| {
                        ui.label(format::time_of_day(s.registered_at));
                    });
                    row.col(|ui| {
                        ui.label(format::age(now.duration_since(s.last_seen).unwrap_or_default()));
                    });
                    row.col(|ui| {
                        let left = s.expires_at.duration_since(now).unwrap_or_default();
                        let fraction = (left.as_secs_f32() / s.lease.as_secs_f32().max(0.001)).clamp(0.0, 1.0);
                        let colour = if fraction < 0.25 { theme::FAILED } else { theme::OK };
                        ui.add(
                            egui::ProgressBar::new(fraction)
                                .desired_width(52.0)
                                .desired_height(8.0)
                                .fill(colour),
                        )
                        .on_hover_text(format!("expires in {} unless refreshed", format::age(left)));
                    });
                    row.col(|ui| {
                        let label = ui.label(format::queue(s.queue_depth, s.backlog));
                        if s.backlog > 0 {
                            label.on_hover_text(format!(
                                "{} queued in memory; {} more wait on disk and are read back in order as the queue drains",
                                format::count(s.queue_depth),
                                format::count(s.backlog)
                            ));
                        }
                    });
                    row.col(|ui| {
                        ui.label(RichText::new(s.delivered.to_string()).color(theme::OK));
                    });
                    row.col(|ui| {
                        let text = RichText::new(s.failed.to_string());
                        ui.label(if s.failed > 0 { text.color(theme::FAILED) } else { text });
                    });
                    row.col(|ui| {
                        let status = s.last_status.map_or("–".to_owned(), |c| c.to_string());
                        let latency = s.last_latency.map(format::latency).unwrap_or_default();
                        let colour = match s.last_status {
                            Some(200..300) => theme::OK,
                            Some(_) => theme::FAILED,
                            None => ui.visuals().weak_text_color(),
                        };
                        ui.label(RichText::new(format!("{status} {latency}")).color(colour));
                    });
                    row.col(|ui| {
                        if ui
                            .small_button("Kick")
                            .on_hover_text("Remove now; its queued deliveries are recorded as not delivered")
                            .clicked()
                        {
                            kick = Some(s.address.clone());
                        }
                        let pause = if s.paused { "Resume" } else { "Pause" };
                        if ui
                            .small_button(pause)
                            .on_hover_text("Hold its deliveries (the queue is kept), or let them go again, in order")
                            .clicked()
                        {
                            control = Some((s.address.clone(), Control::Paused(!s.paused)));
                        }
                        ui.menu_button("More", |ui| {
                            let pin = if s.pinned { "Unpin" } else { "Pin (never expires)" };
                            if ui.button(pin).clicked() {
                                control = Some((s.address.clone(), Control::Pinned(!s.pinned)));
                            }
                            if ui.button("Expire now").on_hover_text("As if its lease ran out: to test its re-registration").clicked() {
                                control = Some((s.address.clone(), Control::Expire));
                            }
                            for (label, minutes) in [("Ban for 10 minutes", 10), ("Ban for an hour", 60)] {
                                if ui.button(label).on_hover_text("Kick it, and refuse its registration meanwhile (403)").clicked() {
                                    control = Some((s.address.clone(), Control::Ban(Duration::from_secs(minutes * 60))));
                                }
                            }
                        });
                    });
                });
            });
        if let Some(address) = kick {
            hub.remove(&address, RemovalReason::Kicked);
            self.seen_at = None;
        }
        if let Some((address, control)) = control {
            // Each of these is also in the JSON API (PATCH, POST .../expire, DELETE ?ban=).
            let done = match control {
                Control::Paused(paused) => {
                    hub.set_paused(&address, paused).map_err(|e| e.to_string())
                }
                Control::Pinned(pinned) => {
                    hub.set_pinned(&address, pinned).map_err(|e| e.to_string())
                }
                Control::Expire => {
                    hub.expire_now(&address);
                    Ok(())
                }
                Control::Ban(ban) => hub.ban(&address, ban).map(drop).map_err(|e| e.to_string()),
            };
            self.add_error = done.err();
            self.seen_at = None;
        }
        if let Some((address, text)) = save {
            let saved = parse_topics(&text)
                .and_then(|topics| hub.set_topics(&address, topics).map_err(|e| e.to_string()));
            match saved {
                Ok(()) => {
                    self.editing = None;
                    self.seen_at = None;
                }
                Err(err) => {
                    if let Some((_, _, error)) = &mut self.editing {
                        *error = Some(err);
                    }
                }
            }
        }
        if let Some((address, _, Some(error))) = &self.editing {
            ui.colored_label(
                theme::FAILED,
                format!("Topics of {address} not changed: {error}"),
            );
        }
    }
}

/// Comma-separated patterns as typed; blank is none (every message).
fn parse_topics(text: &str) -> Result<Vec<Pattern>, String> {
    Pattern::parse_list(text).map_err(|e| e.to_string())
}
