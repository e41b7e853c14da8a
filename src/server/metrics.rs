//! `/metrics` in the Prometheus text format, and `/healthz`.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use crate::hub::SubscriberState;

/// Topics with a series of their own in `/metrics`; a series per topic without a bound
/// would let publishers grow every scrape without end.
const TOPIC_SERIES: usize = 100;
/// The label value of the messages of every other topic.
const OTHER: &str = "other";

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let hub = &state.hub;
    let subscribers = hub.subscribers();
    let suspended = subscribers
        .iter()
        .filter(|s| s.state == SubscriberState::Suspended)
        .count();
    let queued: usize = subscribers.iter().map(|s| s.queue_depth).sum();
    let deepest = subscribers.iter().map(|s| s.queue_depth).max().unwrap_or(0);
    let totals = hub.totals();
    let metrics = hub.metrics();

    let mut out = String::with_capacity(2048);
    write_family(
        &mut out,
        "herald_subscribers",
        "gauge",
        "Live subscribers by state.",
    );
    let active = subscribers.len() - suspended;
    writeln!(out, "herald_subscribers{{state=\"active\"}} {active}").ok();
    writeln!(out, "herald_subscribers{{state=\"suspended\"}} {suspended}").ok();

    write_family(
        &mut out,
        "herald_messages_total",
        "counter",
        "Messages accepted for fan-out.",
    );
    writeln!(out, "herald_messages_total {}", totals.messages).ok();
    write_family(
        &mut out,
        "herald_topic_messages_total",
        "counter",
        "Messages accepted with a topic: the 100 busiest topics each, the rest as \"other\" (which topics those are can change as traffic does). Messages without a topic are not counted here.",
    );
    // Topic text is letters, digits, '-', '_' and '.': nothing a label value must escape.
    let (busiest, mut other) = hub.busiest_topics(TOPIC_SERIES);
    for (topic, count) in &busiest {
        // A topic spelt "other" is counted with the rest: two series with one label
        // would make Prometheus refuse the whole scrape.
        if topic.as_str() == OTHER {
            other += count;
            continue;
        }
        writeln!(
            out,
            "herald_topic_messages_total{{topic=\"{topic}\"}} {count}"
        )
        .ok();
    }
    writeln!(
        out,
        "herald_topic_messages_total{{topic=\"{OTHER}\"}} {other}"
    )
    .ok();
    write_family(
        &mut out,
        "herald_log_messages",
        "gauge",
        "Messages currently kept in the log.",
    );
    writeln!(out, "herald_log_messages {}", hub.logged_messages()).ok();
    write_family(
        &mut out,
        "herald_log_bytes",
        "gauge",
        "Bytes the log holds: payloads, delivery records and attempts (at most --log-max-bytes).",
    );
    writeln!(out, "herald_log_bytes {}", hub.logged_bytes()).ok();
    write_family(
        &mut out,
        "herald_deliveries_total",
        "counter",
        "Finished deliveries by outcome.",
    );
    for (outcome, count) in &metrics.outcomes {
        writeln!(
            out,
            "herald_deliveries_total{{outcome=\"{outcome}\"}} {count}"
        )
        .ok();
    }
    write_family(
        &mut out,
        "herald_delivery_latency_seconds",
        "histogram",
        "Time from sending a delivery to the subscriber's answer.",
    );
    for (bound, count) in &metrics.latency_buckets {
        writeln!(
            out,
            "herald_delivery_latency_seconds_bucket{{le=\"{bound}\"}} {count}"
        )
        .ok();
    }
    writeln!(
        out,
        "herald_delivery_latency_seconds_bucket{{le=\"+Inf\"}} {}\n\
         herald_delivery_latency_seconds_sum {}\n\
         herald_delivery_latency_seconds_count {}",
        metrics.latency_count,
        metrics.latency_sum.as_secs_f64(),
        metrics.latency_count
    )
    .ok();
    write_family(
        &mut out,
        "herald_queue_depth",
        "gauge",
        "Deliveries waiting in subscriber queues, in all.",
    );
    writeln!(out, "herald_queue_depth {queued}").ok();
    write_family(
        &mut out,
        "herald_queue_depth_max",
        "gauge",
        "Deliveries waiting in the fullest subscriber queue.",
    );
    writeln!(out, "herald_queue_depth_max {deepest}").ok();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

fn write_family(out: &mut String, name: &str, kind: &str, help: &str) {
    writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}").ok();
}

pub(super) async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "status": if state.hub.is_stopping() { "stopping" } else { "ok" },
        "subscribers": state.hub.subscriber_count(),
    }))
}
