//! The test subscriber's panel: a switch, where it listens, and what it received.

use egui::RichText;

use super::action::Action;
use super::{format, theme};
use crate::server::{TestState, TestSubscriber};

/// Received messages listed, newest first.
const LISTED: usize = 20;

pub(crate) fn test_subscriber_ui(ui: &mut egui::Ui, subscriber: &TestSubscriber) -> Option<Action> {
    let state = subscriber.state();
    let mut action = None;
    ui.horizontal(|ui| {
        let mut on = matches!(state, TestState::On(_) | TestState::Starting);
        if ui
            .checkbox(&mut on, "Test subscriber")
            .on_hover_text("A subscriber inside Herald that shows what it receives")
            .changed()
        {
            action = Some(if on {
                Action::StartTestSubscriber
            } else {
                Action::StopTestSubscriber
            });
        }
        match &state {
            TestState::On(address) => {
                ui.weak(format!(
                    "at {address} · received {}",
                    subscriber.received_count()
                ));
            }
            TestState::Starting => {
                ui.spinner();
            }
            TestState::Failed(error) => {
                ui.colored_label(theme::FAILED, error);
            }
            TestState::Off => {}
        }
    });
    if let TestState::On(_) = state {
        let received = subscriber.received(LISTED);
        egui::ScrollArea::vertical()
            .id_salt("test_received")
            .max_height(90.0)
            .show(ui, |ui| {
                if received.is_empty() {
                    ui.weak("Nothing received yet: publish something");
                }
                for item in &received {
                    let preview: String = String::from_utf8_lossy(&item.body)
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(90)
                        .collect();
                    ui.horizontal(|ui| {
                        ui.label(RichText::new(format::time_of_day(item.at)).weak());
                        ui.label(format!("Received {}", format::size(item.body.len())));
                        ui.weak(item.content_type.as_deref().unwrap_or("–"));
                        ui.monospace(preview);
                    });
                }
            });
    }
    action
}
