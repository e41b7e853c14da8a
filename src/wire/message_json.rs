//! How a logged message is spelt in JSON, by `/api/v1/messages` and in an exported log:
//! its summary, its payload, and each delivery with every attempt (what was sent and what
//! came back). Clients and scripts depend on it, as on the headers beside it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use utoipa::ToSchema;

use super::{millis, rfc3339, webhook_id};
use crate::hub::{Attempt, Delivery, DeliveryState, Headers, Hub, MessageRecord, Outcome};

/// A page of a message's deliveries: slots `from..`, and how many there are in all.
pub(crate) struct DeliveryPage {
    pub(crate) from: usize,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) total: usize,
}

impl DeliveryPage {
    /// All of `message`'s deliveries.
    pub(crate) fn all(message: &MessageRecord) -> Self {
        let deliveries = message.deliveries();
        Self {
            from: 0,
            total: deliveries.len(),
            deliveries,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct CountsJson {
    delivered: u64,
    failed: u64,
    /// Without an outcome yet: queued, in flight or retrying.
    pending: u64,
    /// Of the pending, those waiting for a retry.
    retrying: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageSummaryJson {
    pub(crate) id: u64,
    webhook_id: String,
    /// When the hub accepted it (RFC 3339).
    received_at: String,
    /// Payload size in bytes.
    size: u64,
    content_type: Option<String>,
    /// The publisher's address, or "console".
    source: String,
    delivery_counts: CountsJson,
    /// The W3C trace it belongs to (32 lowercase hex digits): the publisher's
    /// `traceparent`'s, or a new one. Its deliveries carry it as children.
    #[schema(
        pattern = "^[0-9a-f]{32}$",
        example = "4bf92f3577b34da6a3ce929d0e0e4736"
    )]
    trace_id: String,
    /// Its topic; absent for a message without one (which went only to subscribers
    /// without topics).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "orders.created")]
    topic: Option<String>,
    /// The message it replays; absent for one that replays none.
    #[serde(skip_serializing_if = "Option::is_none")]
    replay_of: Option<u64>,
    /// Starred: it never leaves the log (nor the store).
    pinned: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum BodyEncoding {
    Utf8,
    Base64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum DeliveryStateJson {
    /// Queued, or an attempt is in flight.
    Pending,
    /// An attempt failed and the next one is due at `next_attempt_at`.
    Retrying,
    Delivered,
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
struct AttemptJson {
    /// When the request was sent (RFC 3339).
    at: String,
    status: DeliveryStateJson,
    /// The HTTP status, if the subscriber answered.
    http_status: Option<u16>,
    latency_ms: Option<f64>,
    /// Why it failed, if it did.
    error: Option<String>,
    /// What was sent; absent when nothing was (a refused target).
    request: Option<SentJson>,
    /// What the subscriber answered, if it answered.
    response: Option<AnswerJson>,
    /// Why headers and body are missing, when they were not kept: the message held more
    /// than its share of the log's bytes (`--log-max-bytes`), so only statuses were.
    not_kept: Option<String>,
}

/// A request as sent, credentials hidden.
#[derive(Debug, Serialize, ToSchema)]
struct SentJson {
    method: String,
    url: String,
    /// Name and value pairs, in the order sent.
    headers: Vec<(String, String)>,
}

/// A subscriber's answer: status, headers and the first 64 KiB of its body.
#[derive(Debug, Serialize, ToSchema)]
struct AnswerJson {
    status: u16,
    headers: Vec<(String, String)>,
    /// Text when it is UTF-8, base64 otherwise.
    body: String,
    body_encoding: BodyEncoding,
    /// Whether the body went on past the 64 KiB kept.
    body_truncated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct DeliveryJson {
    /// Its place among the message's deliveries, from 0: pass as `deliveries_after` for
    /// the ones after it.
    slot: u64,
    subscriber: String,
    status: DeliveryStateJson,
    http_status: Option<u16>,
    latency_ms: Option<f64>,
    error: Option<String>,
    /// While retrying: the number of the next attempt, and when it is due (RFC 3339).
    next_attempt: Option<u32>,
    next_attempt_at: Option<String>,
    /// Every HTTP request made for this delivery, oldest first.
    attempts: Vec<AttemptJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageJson {
    #[serde(flatten)]
    summary: MessageSummaryJson,
    /// The payload: text when it is UTF-8, base64 otherwise.
    body: String,
    body_encoding: BodyEncoding,
    /// One per subscriber it was queued for, then one per resend, in slot order; a page
    /// of them (see `deliveries_limit`).
    deliveries: Vec<DeliveryJson>,
    /// How many deliveries the message has in all.
    deliveries_total: u64,
    /// Pass as `deliveries_after` for the next page of deliveries; absent on the last.
    next_deliveries_after: Option<u64>,
    /// The messages that replay it, oldest first.
    replays: Vec<u64>,
}

pub(crate) fn summary(hub_instance: &str, message: &MessageRecord) -> MessageSummaryJson {
    let counts = message.summary();
    MessageSummaryJson {
        id: message.id,
        webhook_id: webhook_id(hub_instance, message.id),
        received_at: rfc3339(message.received_at),
        size: message.body.len() as u64,
        content_type: message.content_type.clone(),
        source: message.source.to_string(),
        delivery_counts: CountsJson {
            delivered: counts.delivered as u64,
            failed: counts.failed as u64,
            pending: counts.pending as u64,
            retrying: counts.retrying as u64,
        },
        trace_id: message.trace.trace_id.to_string(),
        topic: message.topic.as_ref().map(ToString::to_string),
        replay_of: message.replay_of,
        pinned: message.is_pinned(),
    }
}

impl From<Option<&Outcome>> for DeliveryStateJson {
    fn from(outcome: Option<&Outcome>) -> Self {
        match outcome {
            None => DeliveryStateJson::Pending,
            Some(outcome) if outcome.is_delivered() => DeliveryStateJson::Delivered,
            Some(_) => DeliveryStateJson::Failed,
        }
    }
}

/// An outcome as the API spells it: (http status, latency, error), absent while pending.
fn outcome_fields(outcome: Option<&Outcome>) -> (Option<u16>, Option<f64>, Option<String>) {
    outcome.map_or((None, None, None), |outcome| {
        (
            outcome.http_status(),
            outcome.latency().map(millis),
            outcome.error().map(ToString::to_string),
        )
    })
}

fn delivery(slot: usize, delivery: Delivery) -> DeliveryJson {
    let outcome = delivery.state.outcome();
    let (http_status, latency_ms, error) = outcome_fields(outcome);
    let (status, next_attempt, next_attempt_at) = match &delivery.state {
        DeliveryState::Retrying { attempt, at, .. } => (
            DeliveryStateJson::Retrying,
            Some(*attempt),
            Some(rfc3339(*at)),
        ),
        _ => (outcome.into(), None, None),
    };
    DeliveryJson {
        slot: slot as u64,
        subscriber: delivery.subscriber.to_string(),
        status,
        http_status,
        latency_ms,
        error,
        next_attempt,
        next_attempt_at,
        attempts: delivery.attempts.iter().map(attempt).collect(),
    }
}

fn attempt(attempt: &Attempt) -> AttemptJson {
    let (http_status, latency_ms, error) = outcome_fields(Some(&attempt.outcome));
    let exchange = attempt.exchange.as_deref();
    AttemptJson {
        at: rfc3339(attempt.at),
        status: Some(&attempt.outcome).into(),
        http_status,
        latency_ms,
        error,
        request: exchange.map(|sent| SentJson {
            method: sent.method.to_owned(),
            url: sent.url.to_string(),
            headers: pairs(&sent.request_headers),
        }),
        response: exchange.and_then(|e| e.response.as_ref()).map(|answer| {
            let (body, body_encoding) = encoded(&answer.body);
            AnswerJson {
                status: answer.status,
                headers: pairs(&answer.headers),
                body,
                body_encoding,
                body_truncated: answer.truncated,
            }
        }),
        not_kept: exchange
            .filter(|e| e.not_kept)
            .map(|_| crate::hub::NOT_KEPT.to_owned()),
    }
}

fn pairs(headers: &Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// Bytes as JSON can carry them: text when they are UTF-8, base64 otherwise.
fn encoded(bytes: &[u8]) -> (String, BodyEncoding) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), BodyEncoding::Utf8),
        Err(_) => (STANDARD.encode(bytes), BodyEncoding::Base64),
    }
}

pub(crate) fn message_json(hub: &Hub, message: &MessageRecord, page: DeliveryPage) -> MessageJson {
    let (body, body_encoding) = encoded(&message.body);
    let end = page.from + page.deliveries.len();
    let next_deliveries_after = (end < page.total && end > 0).then(|| end as u64 - 1);
    MessageJson {
        summary: summary(hub.instance(), message),
        body,
        body_encoding,
        deliveries: (page.deliveries.into_iter().enumerate())
            .map(|(i, d)| delivery(page.from + i, d))
            .collect(),
        deliveries_total: page.total as u64,
        next_deliveries_after,
        replays: message.replays(),
    }
}
