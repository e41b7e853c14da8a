//! Compose's topic: the field, the topics seen that it could be, and who a publish with
//! it would reach.

use std::time::Instant;

use super::{Compose, NAMED_IN_PREVIEW, REACH_EVERY, SEEN_EVERY, SUGGESTED_TOPICS};
use crate::gui::{format, theme};
use crate::hub::{Hub, TopicError};

impl Compose {
    /// Who the draft would reach now.
    fn reach(&mut self, hub: &Hub) -> &Result<String, TopicError> {
        let version = hub.version();
        let fresh = self.reach.as_ref().is_some_and(|(text, seen, at, _)| {
            *text == self.topic && (*seen == version || at.elapsed() < REACH_EVERY)
        });
        if !fresh {
            let reach = self.topic().map(|topic| {
                let (count, first) = hub.reach_first(topic.as_ref(), NAMED_IN_PREVIEW);
                reach_text(count, &first)
            });
            self.reach = Some((self.topic.clone(), version, Instant::now(), reach));
        }
        &self.reach.as_ref().expect("set above").3
    }

    /// The topic field, the topics seen that it could be, and who the draft reaches.
    pub(super) fn topic_ui(&mut self, ui: &mut egui::Ui, hub: &Hub) {
        ui.horizontal(|ui| {
            let label = ui.label("Topic");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.topic)
                        .hint_text("none: subscribers without topics")
                        .desired_width(220.0),
                )
                .labelled_by(label.id);
            // Completion: the topics seen that contain what is typed, most recent first;
            // read from the hub only while the list is open.
            egui::ComboBox::from_id_salt("topic_suggestions")
                .selected_text("seen")
                .width(60.0)
                .show_ui(ui, |ui| {
                    let typed = self.topic.trim().to_owned();
                    // Read again at most once a second while the list is open.
                    if self
                        .seen
                        .as_ref()
                        .is_none_or(|(at, _)| at.elapsed() >= SEEN_EVERY)
                    {
                        let topics = hub.topics().into_iter().map(|t| t.topic.to_string());
                        self.seen = Some((Instant::now(), topics.collect()));
                    }
                    let seen = self
                        .seen
                        .as_ref()
                        .map(|(_, seen)| seen.as_slice())
                        .unwrap_or(&[]);
                    let mut shown = 0;
                    let mut picked = None;
                    for topic in seen.iter().filter(|t| t.contains(&typed)) {
                        if ui.selectable_label(false, topic).clicked() {
                            picked = Some(topic.clone());
                        }
                        shown += 1;
                        if shown == SUGGESTED_TOPICS {
                            break;
                        }
                    }
                    if shown == 0 {
                        ui.weak("no topic seen yet");
                    }
                    if let Some(topic) = picked {
                        self.topic = topic;
                    }
                })
                .response
                .on_hover_text("Topics messages were published with");
            if field.has_focus() {
                ui.weak("Enter a topic like orders.created");
            }
        });
        let preview = match self.reach(hub) {
            Err(err) => Err(format::sentence(&err.to_string())),
            Ok(text) => Ok(text.clone()),
        };
        match preview {
            Err(error) => {
                ui.colored_label(theme::FAILED, error);
            }
            Ok(text) => {
                ui.weak(text);
            }
        }
    }
}

/// "Reaches 3 subscribers: a, b, c and 2 more", as Compose previews a publish.
pub(super) fn reach_text(count: usize, first: &[std::sync::Arc<str>]) -> String {
    if count == 0 {
        return "Reaches no subscriber now".to_owned();
    }
    let noun = if count == 1 {
        "subscriber"
    } else {
        "subscribers"
    };
    let named: Vec<&str> = first.iter().map(|a| &**a).collect();
    let more = count.saturating_sub(NAMED_IN_PREVIEW);
    let rest = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("Reaches {count} {noun}: {}{rest}", named.join(", "))
}
