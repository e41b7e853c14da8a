//! The compose box: write or load a payload and publish it through the same hub path as
//! `/sendMessage`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use egui::RichText;

use super::action::Action;
use super::{format, theme};
use crate::hub::{Accepted, Draft, Edits, Hub, MessageId, Source, Topic, TopicError};
use crate::workbench::template::{Template, TemplateError};

mod burst;
mod replay;
mod topic;

pub(crate) use burst::BurstPanel;

/// Addresses the reach preview names before it says "and N more".
const NAMED_IN_PREVIEW: usize = 3;
/// Topics seen that the topic field offers.
const SUGGESTED_TOPICS: usize = 12;
/// How often the topic suggestions are read again while their list is open.
const SEEN_EVERY: Duration = Duration::from_secs(1);
/// How often the reach preview follows a busy hub.
const REACH_EVERY: Duration = Duration::from_millis(250);

/// Example payloads from `assets/templates/`, built into the binary.
const TEMPLATES: [(&str, &str); 4] = [
    (
        "order.created",
        include_str!("../../../assets/templates/order-created.json"),
    ),
    (
        "user.signed_up",
        include_str!("../../../assets/templates/user-signed-up.json"),
    ),
    (
        "deployment.finished",
        include_str!("../../../assets/templates/deployment-finished.json"),
    ),
    ("ping", include_str!("../../../assets/templates/ping.json")),
];

const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "(none)",
];

pub(crate) struct Compose {
    text: String,
    content_type: String,
    /// A loaded file that is not text: published as is instead of `text`.
    binary: Option<(String, Bytes)>,
    /// Where the JSON stops making sense, checked when the text changes.
    json_error: Option<String>,
    checked: Option<(String, String)>,
    /// What the last publish did.
    result: Option<(String, bool)>,
    /// The topic, as typed; blank: none.
    topic: String,
    /// The topics seen, as the suggestions last read them, and when.
    seen: Option<(Instant, Vec<String>)>,
    /// Who the draft would reach, for the topic text and hub version it was worked out
    /// at, and when: worked out again when the text changes, or the hub did (at most
    /// four times a second: it lists every subscriber).
    reach: Option<(String, u64, Instant, Result<String, TopicError>)>,
    /// Render `{{ … }}` variables per publish (see `crate::workbench::template`).
    variables: bool,
    /// The text rendered once, as a sample, for the text it was rendered from.
    rendered: Option<Result<String, TemplateError>>,
    /// Publishes of a template so far: its `seq`.
    seq: u64,
    /// The message being replayed, edited: Publish replays it instead.
    replaying: Option<MessageId>,
    /// Where the replay goes: blank for every subscriber its topic reaches.
    replay_to: String,
    pub(crate) burst: BurstPanel,
}

impl Default for Compose {
    fn default() -> Self {
        Self {
            text: TEMPLATES[0].1.to_owned(),
            content_type: CONTENT_TYPES[0].to_owned(),
            binary: None,
            json_error: None,
            checked: None,
            result: None,
            topic: String::new(),
            seen: None,
            reach: None,
            variables: true,
            rendered: None,
            seq: 0,
            replaying: None,
            replay_to: String::new(),
            burst: BurstPanel::default(),
        }
    }
}

impl Compose {
    fn is_json(&self) -> bool {
        self.content_type.contains("json")
    }

    /// Whether the text is rendered as a template when published.
    fn templated(&self) -> bool {
        self.variables && self.binary.is_none() && Template::is_template(&self.text)
    }

    /// Revalidates only when the text, content type or templating changed since the
    /// last frame. A template is rendered once as a sample, and the JSON check is of
    /// what it renders to.
    fn check(&mut self) {
        let key = (
            format!("{}{}", self.text, if self.templated() { "\0t" } else { "" }),
            self.content_type.clone(),
        );
        if self.checked.as_ref() == Some(&key) {
            return;
        }
        self.rendered = self
            .templated()
            .then(|| Template::parse(&self.text).and_then(|t| t.render(self.seq + 1)));
        let checked = match &self.rendered {
            Some(Ok(rendered)) => rendered.as_str(),
            _ => self.text.as_str(),
        };
        self.json_error = if let Some(Err(err)) = &self.rendered {
            Some(format::sentence(&err.to_string()))
        } else if self.is_json() && self.binary.is_none() {
            serde_json::from_str::<serde::de::IgnoredAny>(checked)
                .err()
                .map(|err| {
                    format!(
                        "Invalid JSON at line {}, column {}: {err}",
                        err.line(),
                        err.column()
                    )
                })
        } else {
            None
        };
        self.checked = Some(key);
    }

    /// The topic as typed, checked: `Ok(None)` when blank.
    fn topic(&self) -> Result<Option<Topic>, TopicError> {
        match self.topic.trim() {
            "" => Ok(None),
            text => Topic::parse(text).map(Some),
        }
    }

    /// Loads a message again: its payload, content type and topic.
    pub(crate) fn load_message(
        &mut self,
        name: String,
        body: &[u8],
        content_type: Option<&str>,
        topic: &str,
    ) {
        self.load(name, body.to_vec());
        if let Some(content_type) = content_type {
            self.content_type = content_type.to_owned();
        }
        self.topic = topic.to_owned();
    }

    /// Puts a loaded file in the box: text is editable, anything else is sent as is.
    pub(crate) fn load(&mut self, name: String, bytes: Vec<u8>) {
        match String::from_utf8(bytes) {
            Ok(text) => {
                self.text = text;
                self.binary = None;
            }
            Err(err) => {
                self.binary = Some((name, Bytes::from(err.into_bytes())));
                self.content_type = "application/octet-stream".to_owned();
            }
        }
        self.checked = None;
    }

    pub(crate) fn compose_ui(
        &mut self,
        ui: &mut egui::Ui,
        hub: &Hub,
        files_busy: bool,
    ) -> Option<Action> {
        self.check();
        let mut action = None;
        ui.horizontal(|ui| {
            ui.heading("Compose");
            let label = ui.label("Template");
            egui::ComboBox::from_id_salt("template")
                .selected_text("insert")
                .width(70.0)
                .show_ui(ui, |ui| {
                    for (name, body) in TEMPLATES {
                        if ui.selectable_label(false, name).clicked() {
                            self.text = body.to_owned();
                            self.binary = None;
                            self.content_type = CONTENT_TYPES[0].to_owned();
                        }
                    }
                })
                .response
                .labelled_by(label.id);
            let label = ui.label("Content-Type");
            egui::ComboBox::from_id_salt("content_type")
                .selected_text(&self.content_type)
                .width(170.0)
                .show_ui(ui, |ui| {
                    for content_type in CONTENT_TYPES {
                        ui.selectable_value(
                            &mut self.content_type,
                            content_type.to_owned(),
                            content_type,
                        );
                    }
                })
                .response
                .labelled_by(label.id);
            if ui
                .add_enabled(!files_busy, egui::Button::new("Load file…"))
                .clicked()
            {
                action = Some(Action::LoadFile);
            }
        });
        self.replay_ui(ui, hub);
        self.topic_ui(ui, hub);
        let publish_shortcut =
            ui.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::Enter));
        let mut publish = publish_shortcut;
        let topic_ok = self.topic().is_ok();
        ui.horizontal(|ui| {
            let ready = self.json_error.is_none() && topic_ok;
            if ui
                .add_enabled(ready, egui::Button::new(RichText::new("Publish").strong()))
                .on_hover_text("Ctrl+Enter")
                .clicked()
            {
                publish = true;
            }
            match (&self.json_error, &self.result) {
                (Some(error), _) => {
                    ui.colored_label(theme::FAILED, error);
                }
                (None, Some((text, ok))) => {
                    ui.colored_label(if *ok { theme::OK } else { theme::FAILED }, text);
                }
                (None, None) => {
                    ui.weak("Ctrl+Enter publishes");
                }
            }
        });
        if publish && self.json_error.is_none() && topic_ok {
            self.publish(hub);
        }
        if let Some(burst) = self.burst_ui(ui, hub, self.json_error.is_none() && topic_ok) {
            action = Some(burst);
        }
        if let Some((name, bytes)) = &self.binary {
            let summary = format!(
                "Binary file {name} ({} bytes) will be published as is",
                bytes.len()
            );
            let discard = ui
                .horizontal(|ui| {
                    ui.label(summary);
                    ui.small_button("Discard").clicked()
                })
                .inner;
            if discard {
                self.binary = None;
                self.checked = None;
            }
            return action;
        }
        let label = ui
            .horizontal(|ui| {
                let label = ui.label(RichText::new("Message").weak());
                if Template::is_template(&self.text) {
                    ui.checkbox(&mut self.variables, "Variables")
                        .on_hover_text(VARIABLES_HELP);
                } else {
                    ui.weak("· {{ seq }}, {{ uuid() }}, {{ now() }}… are rendered per message")
                        .on_hover_text(VARIABLES_HELP);
                }
                label
            })
            .inner;
        let editor = |ui: &mut egui::Ui, text: &mut String| {
            egui::ScrollArea::vertical()
                .id_salt("compose_scroll")
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    ui.add(
                        egui::TextEdit::multiline(text)
                            .code_editor()
                            .desired_width(f32::INFINITY)
                            .desired_rows(8),
                    )
                    .labelled_by(label.id);
                });
        };
        match &self.rendered {
            // Side by side: what is typed, and what the next publish sends.
            Some(Ok(rendered)) => {
                let rendered = rendered.clone();
                ui.columns(2, |columns| {
                    editor(&mut columns[0], &mut self.text);
                    let label = columns[1]
                        .label(RichText::new("Rendered, as the next publish sends it").weak());
                    egui::ScrollArea::vertical()
                        .id_salt("compose_rendered")
                        .auto_shrink([false, false])
                        .show(&mut columns[1], |ui| {
                            // Read-only, drawn as the editor is, so the two line up.
                            ui.add(
                                egui::TextEdit::multiline(&mut rendered.as_str())
                                    .code_editor()
                                    .desired_width(f32::INFINITY),
                            )
                            .labelled_by(label.id);
                        });
                });
            }
            _ => editor(ui, &mut self.text),
        }
        action
    }

    fn publish(&mut self, hub: &Hub) {
        let body = match &self.binary {
            Some((_, bytes)) => bytes.clone(),
            None if self.templated() => {
                let rendered = Template::parse(&self.text).and_then(|t| t.render(self.seq + 1));
                match rendered {
                    Ok(text) => {
                        self.seq += 1;
                        // The next sample shows the next number.
                        self.checked = None;
                        Bytes::from(text.into_bytes())
                    }
                    Err(err) => {
                        self.result = Some((format::sentence(&err.to_string()), false));
                        return;
                    }
                }
            }
            None => Bytes::from(self.text.clone().into_bytes()),
        };
        let Ok(topic) = self.topic() else {
            return;
        };
        let content_type = (self.content_type != "(none)").then(|| self.content_type.clone());
        if let Some(id) = self.replaying {
            let edits = Edits {
                body: Some(body),
                content_type: Some(content_type),
                topic: Some(topic),
                to: Some(self.replay_to.clone()).filter(|to| !to.is_empty()),
            };
            self.result = Some(match hub.replay_now(id, edits, Source::Console) {
                Ok(Accepted::Logged(published)) => {
                    let text = format!(
                        "Replay of message {id}: message {} queued for {}",
                        published.id,
                        count(published.subscribers)
                    );
                    (text, true)
                }
                Ok(Accepted::Relayed { subscribers }) => {
                    let text = format!(
                        "Replay of message {id}: handed to the cluster, for {}",
                        count(subscribers)
                    );
                    (text, true)
                }
                Err(err) => (format::sentence(&err.to_string()), false),
            });
            return;
        }
        let draft = Draft {
            content_type,
            topic,
            ..Draft::new(body)
        };
        self.result = Some(match hub.publish(draft, Source::Console) {
            Ok(Accepted::Logged(published)) => {
                let text = format!(
                    "Message {} queued for {}",
                    published.id,
                    count(published.subscribers)
                );
                (text, true)
            }
            Ok(Accepted::Relayed { subscribers }) => {
                let text = format!("Handed to the cluster, for {}", count(subscribers));
                (text, true)
            }
            // The error already says that nothing was published, and why.
            Err(err) => (format::sentence(&err.to_string()), false),
        });
    }
}

const VARIABLES_HELP: &str = "Rendered per message: {{ seq }} (1, 2, 3…), {{ uuid() }}, \
{{ now() }} (RFC 3339), {{ now_ms() }}, {{ random(1, 100) }}, {{ pick([\"a\", \"b\"]) }}; \
Jinja syntax (minijinja)";

/// "1 subscriber", "3 subscribers".
fn count(subscribers: usize) -> String {
    match subscribers {
        1 => "1 subscriber".to_owned(),
        n => format!("{n} subscribers"),
    }
}
