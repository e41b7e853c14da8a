//! The compose box: write or load a payload and publish it through the same hub path as
//! `/sendMessage`.

use bytes::Bytes;
use egui::RichText;

use super::action::Action;
use super::{format, theme};
use crate::hub::{Draft, Hub, Source};

/// Example payloads from `assets/templates/`, built into the binary.
const TEMPLATES: [(&str, &str); 4] = [
    (
        "order.created",
        include_str!("../../assets/templates/order-created.json"),
    ),
    (
        "user.signed_up",
        include_str!("../../assets/templates/user-signed-up.json"),
    ),
    (
        "deployment.finished",
        include_str!("../../assets/templates/deployment-finished.json"),
    ),
    ("ping", include_str!("../../assets/templates/ping.json")),
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
        }
    }
}

impl Compose {
    fn is_json(&self) -> bool {
        self.content_type.contains("json")
    }

    /// Revalidates only when the text or content type changed since the last frame.
    fn check(&mut self) {
        let key = (self.text.clone(), self.content_type.clone());
        if self.checked.as_ref() == Some(&key) {
            return;
        }
        self.json_error = if self.is_json() && self.binary.is_none() {
            serde_json::from_str::<serde::de::IgnoredAny>(&self.text)
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
        let publish_shortcut =
            ui.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::Enter));
        let mut publish = publish_shortcut;
        ui.horizontal(|ui| {
            let ready = self.json_error.is_none();
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
        if publish && self.json_error.is_none() {
            self.publish(hub);
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
        let label = ui.label(RichText::new("Message").weak());
        egui::ScrollArea::vertical()
            .id_salt("compose_scroll")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                ui.add(
                    egui::TextEdit::multiline(&mut self.text)
                        .code_editor()
                        .desired_width(f32::INFINITY)
                        .desired_rows(8),
                )
                .labelled_by(label.id);
            });
        action
    }

    fn publish(&mut self, hub: &Hub) {
        let body = match &self.binary {
            Some((_, bytes)) => bytes.clone(),
            None => Bytes::from(self.text.clone().into_bytes()),
        };
        let draft = Draft {
            content_type: (self.content_type != "(none)").then(|| self.content_type.clone()),
            ..Draft::new(body)
        };
        self.result = Some(match hub.publish(draft, Source::Console) {
            Ok(published) => {
                let noun = if published.subscribers == 1 {
                    "subscriber"
                } else {
                    "subscribers"
                };
                let text = format!(
                    "Message {} queued for {} {noun}",
                    published.id, published.subscribers
                );
                (text, true)
            }
            // The error already says that nothing was published, and why.
            Err(err) => (format::sentence(&err.to_string()), false),
        });
    }
}
