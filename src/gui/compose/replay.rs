//! Compose replaying a logged message: which one, where to, and a way back to a plain
//! publish.

use egui::RichText;

use super::Compose;
use crate::hub::{Hub, MessageRecord, Topic};

impl Compose {
    /// Opens a logged message to be edited and replayed: its payload, content type and
    /// topic, and a link to it that Publish follows.
    pub(crate) fn load_replay(&mut self, message: &MessageRecord) {
        let topic = message.topic.as_ref().map_or("", Topic::as_str).to_owned();
        let name = format!("message {}", message.id);
        self.load_message(name, &message.body, message.content_type.as_deref(), &topic);
        if message.content_type.is_none() {
            self.content_type = "(none)".to_owned();
        }
        self.replaying = Some(message.id);
        self.replay_to.clear();
        self.result = None;
        // What was sent, byte for byte: braces in it are not variables.
        self.variables = false;
    }

    /// While replaying: which message, where to, and a way back to a plain publish.
    pub(super) fn replay_ui(&mut self, ui: &mut egui::Ui, hub: &Hub) {
        let Some(id) = self.replaying else {
            return;
        };
        let mut stop = false;
        ui.horizontal(|ui| {
            ui.label(RichText::new(format!("Replaying message {id}")).strong());
            let label = ui.label("to");
            egui::ComboBox::from_id_salt("replay_to")
                .selected_text(if self.replay_to.is_empty() {
                    "all it reaches"
                } else {
                    &self.replay_to
                })
                .width(170.0)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.replay_to, String::new(), "all it reaches");
                    // Listed only while the box is open: a large hub is not copied per frame.
                    for subscriber in hub.subscribers() {
                        let address = subscriber.address.to_string();
                        ui.selectable_value(&mut self.replay_to, address.clone(), address);
                    }
                })
                .response
                .labelled_by(label.id);
            stop = ui
                .small_button("Stop replaying")
                .on_hover_text("Publish the box as a new message instead")
                .clicked();
        });
        if stop {
            self.replaying = None;
            self.replay_to.clear();
        }
    }
}
