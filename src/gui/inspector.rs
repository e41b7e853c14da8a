//! The delivery inspector: each delivery of the selected message as a timeline of its
//! attempts, with the next retry's countdown, and what each attempt sent and got back.

use std::time::SystemTime;

use egui::RichText;

use super::{format, theme};
use crate::hub::{
    Attempt, Delivery, DeliveryError, DeliveryState, Headers, MAX_KEPT_BODY, Outcome,
};

/// Deliveries from slot `first` on, collapsed to one line each until opened; the one in
/// slot `open`, if given, is opened now (the matrix asked for its timeline).
pub(crate) fn deliveries_ui(
    ui: &mut egui::Ui,
    first: usize,
    deliveries: &[Delivery],
    open: Option<usize>,
    clustered: bool,
) {
    for (slot, delivery) in (first..).zip(deliveries) {
        let (state, colour) = state_text(delivery);
        let attempts = match delivery.attempts.len() {
            0 | 1 => String::new(),
            n => format!(" · {n} attempts"),
        };
        let title =
            RichText::new(format!("{}  {state}{attempts}", delivery.subscriber)).color(colour);
        egui::CollapsingHeader::new(title)
            .id_salt(("delivery", slot))
            .open((open == Some(slot)).then_some(true))
            .show(ui, |ui| {
                for (n, attempt) in delivery.attempts.iter().enumerate() {
                    attempt_ui(ui, (slot, n), attempt);
                }
                if delivery.attempts.is_empty() {
                    ui.weak(no_attempt(&delivery.state, clustered));
                }
            });
    }
}

/// Why a delivery shows no attempt. One that reached an answer without any here was
/// made by another instance of the cluster, which keeps its requests and answers.
fn no_attempt(state: &DeliveryState, clustered: bool) -> &'static str {
    match state {
        DeliveryState::Done(Outcome::Failed(
            DeliveryError::QueueFull { .. } | DeliveryError::Removed(_),
        )) => "Never sent",
        DeliveryState::Done(_) if clustered => {
            "Made by another instance of the cluster, which keeps its requests and answers"
        }
        DeliveryState::Done(_) => "No attempt was recorded",
        _ => "No attempt yet",
    }
}

/// One attempt: when, how it ended, and (opened) the request and the answer.
fn attempt_ui(ui: &mut egui::Ui, id: (usize, usize), attempt: &Attempt) {
    let (outcome, colour) = outcome_text(Some(&attempt.outcome));
    let title = RichText::new(format!(
        "#{} at {}  {outcome}",
        id.1 + 1,
        format::time_of_day(attempt.at)
    ))
    .color(colour);
    let Some(exchange) = attempt.exchange.as_deref() else {
        ui.label(title);
        return;
    };
    egui::CollapsingHeader::new(title)
        .id_salt(("attempt", id))
        .show(ui, |ui| {
            ui.label(RichText::new(format!("{} {}", exchange.method, exchange.url)).strong());
            if exchange.not_kept {
                ui.weak(format::sentence(crate::hub::NOT_KEPT));
            }
            headers_ui(ui, &exchange.request_headers);
            match &exchange.response {
                None => {
                    ui.weak("No answer");
                }
                Some(answer) => {
                    ui.separator();
                    ui.label(RichText::new(format!("HTTP {}", answer.status)).strong());
                    headers_ui(ui, &answer.headers);
                    if answer.body.is_empty() {
                        ui.weak("Empty body");
                    } else {
                        // Rendered only while the attempt is open.
                        let (text, kind) = format::payload(&answer.body, MAX_KEPT_BODY);
                        let cut = if answer.truncated {
                            ", cut at 64 KiB"
                        } else {
                            ""
                        };
                        ui.weak(format!("Body ({kind}{cut})"));
                        ui.add(egui::Label::new(RichText::new(text).monospace()).selectable(true));
                    }
                }
            }
        });
}

fn headers_ui(ui: &mut egui::Ui, headers: &Headers) {
    for (name, value) in headers.iter() {
        ui.label(
            RichText::new(format!("{name}: {value}"))
                .monospace()
                .small(),
        );
    }
}

/// Where a delivery stands: its outcome, "pending", or when its next attempt comes and
/// what the last one got ("retrying 2 of 4 in 1.6 s: 500 in 3 ms"), with its colour.
fn state_text(delivery: &Delivery) -> (String, egui::Color32) {
    let DeliveryState::Retrying { attempt, of, at } = &delivery.state else {
        return outcome_text(delivery.state.outcome());
    };
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    let of = of.map_or_else(|| " (probing)".to_owned(), |of| format!(" of {of}"));
    let last = delivery
        .attempts
        .last()
        .map(|last| format!(": {}", outcome_text(Some(&last.outcome)).0))
        .unwrap_or_default();
    let text = format!(
        "retrying {attempt}{of} in {:.1} s{last}",
        left.as_secs_f64()
    );
    (text, theme::PENDING)
}

/// An outcome as one line, or "pending" while there is none, with its colour.
fn outcome_text(outcome: Option<&Outcome>) -> (String, egui::Color32) {
    match outcome {
        None => ("pending".to_owned(), theme::PENDING),
        Some(Outcome::Delivered { status, latency }) => (
            format!("{status} in {}", format::latency(*latency)),
            theme::OK,
        ),
        Some(Outcome::Failed(DeliveryError::Status { status, latency })) => (
            format!("{status} in {}", format::latency(*latency)),
            theme::FAILED,
        ),
        Some(Outcome::Failed(error)) => (error.to_string(), theme::FAILED),
    }
}
