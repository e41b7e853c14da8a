//! The test subscribers' panel: add one, set how each answers (status, latency, failure
//! share, 410 after N, hang, slow read) while it runs, and see what it received.

use std::time::Duration;

use egui::RichText;

use super::action::Action;
use super::{format, theme};
use crate::workbench::{Behaviour, TestState, TestSubscriber, TestSubscribers};

/// Received messages listed per subscriber, newest first.
const LISTED: usize = 3;

pub(crate) fn test_subscribers_ui(ui: &mut egui::Ui, tests: &TestSubscribers) -> Option<Action> {
    let mut action = None;
    let list = tests.list();
    ui.horizontal(|ui| {
        ui.label(RichText::new("Test subscribers").strong());
        if ui
            .button("Add test subscriber")
            .on_hover_text(
                "A subscriber inside Herald that answers as you set it, and shows what it receives",
            )
            .clicked()
        {
            action = Some(Action::AddTestSubscriber);
        }
        if list.is_empty() {
            ui.weak("none: add one for a round trip with no other service running");
        }
    });
    for subscriber in &list {
        if let Some(removed) = row_ui(ui, subscriber) {
            action = Some(removed);
        }
    }
    action
}

/// One test subscriber: its state, its behaviour's controls and what it received.
fn row_ui(ui: &mut egui::Ui, subscriber: &TestSubscriber) -> Option<Action> {
    let mut action = None;
    let mut behaviour = subscriber.behaviour();
    let before = behaviour.clone();
    ui.push_id(subscriber.id, |ui| {
        ui.horizontal_wrapped(|ui| {
            match subscriber.state() {
                TestState::On(address) => {
                    ui.monospace(address);
                    ui.weak(format!("received {}", subscriber.received_count()));
                }
                TestState::Starting | TestState::Off => {
                    ui.spinner();
                }
                TestState::Failed(error) => {
                    ui.colored_label(theme::FAILED, format::sentence(&error));
                }
            }
            // Under ids of their own: what comes before them changes as it starts and
            // receives, and a click must find the widget it was aimed at.
            ui.push_id("behaviour", |ui| behaviour_ui(ui, &mut behaviour));
            let button = egui::Button::new("Remove")
                .small()
                .wrap_mode(egui::TextWrapMode::Extend);
            let remove = ui.push_id("remove", |ui| ui.add(button)).inner;
            if remove.clicked() {
                action = Some(Action::RemoveTestSubscriber(subscriber.id));
            }
        });
        if behaviour != before {
            // Checked by the controls' ranges; a refusal cannot happen from here.
            subscriber.set_behaviour(behaviour).ok();
        }
        received_ui(ui, &subscriber.received(LISTED));
    });
    action
}

fn behaviour_ui(ui: &mut egui::Ui, behaviour: &mut Behaviour) {
    let label = ui.label("answers");
    ui.add(egui::DragValue::new(&mut behaviour.status).range(100..=599))
        .labelled_by(label.id);
    let label = ui.label("after");
    let mut delay = behaviour.delay.as_millis() as u64;
    if ui
        .add(
            egui::DragValue::new(&mut delay)
                .range(0..=60_000)
                .suffix(" ms"),
        )
        .labelled_by(label.id)
        .changed()
    {
        behaviour.delay = Duration::from_millis(delay);
    }
    let label = ui.label("fails");
    ui.add(
        egui::DragValue::new(&mut behaviour.fail_percent)
            .range(0..=100)
            .suffix(" %"),
    )
    .labelled_by(label.id)
    .on_hover_text("The share of requests answered 500 instead");
    let mut gone = behaviour.gone_after.is_some();
    if ui
        .checkbox(&mut gone, "410 after")
        .on_hover_text("Answers 410 Gone, and so unsubscribes, after that many deliveries")
        .changed()
    {
        behaviour.gone_after = gone.then_some(10);
    }
    if let Some(after) = &mut behaviour.gone_after {
        ui.add(egui::DragValue::new(after).range(0..=1_000_000));
    }
    ui.checkbox(&mut behaviour.hang, "hang")
        .on_hover_text("Never answers: each delivery waits for Herald's timeout");
    let label = ui.label("slow read");
    let mut read = behaviour.read_delay.as_millis() as u64;
    if ui
        .add(
            egui::DragValue::new(&mut read)
                .range(0..=60_000)
                .suffix(" ms"),
        )
        .labelled_by(label.id)
        .on_hover_text("Waits this long between the body's chunks")
        .changed()
    {
        behaviour.read_delay = Duration::from_millis(read);
    }
}

/// The newest requests it took, and what it answered each.
fn received_ui(ui: &mut egui::Ui, received: &[crate::workbench::Received]) {
    ui.indent("received", |ui| {
        for item in received {
            let preview: String = String::from_utf8_lossy(&item.body)
                .chars()
                .filter(|c| !c.is_control())
                .take(90)
                .collect();
            ui.horizontal(|ui| {
                ui.label(RichText::new(format::time_of_day(item.at)).weak());
                ui.label(format!("Received {}", format::size(item.body.len())));
                match item.status {
                    Some(status) if status < 400 => {
                        ui.colored_label(theme::OK, format!("answered {status}"));
                    }
                    Some(status) => {
                        ui.colored_label(theme::FAILED, format!("answered {status}"));
                    }
                    None => {
                        ui.weak("hanging");
                    }
                }
                ui.weak(item.content_type.as_deref().unwrap_or("–"));
                ui.monospace(preview);
            });
        }
    });
}
