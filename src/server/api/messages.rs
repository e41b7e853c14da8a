//! `/api/v1/messages`: publish, page through the log, inspect one, resend.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ErrorBody, HttpError, millis, time};
use crate::hub::{Attempt, Delivery, Hub, MessageRecord, Outcome, ResendError};
use crate::server::AppState;
use crate::server::publish::publish as accept;
use crate::wire::webhook_id;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// Any bytes; forwarded unchanged with the request's `Content-Type`.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Only describes the body in the OpenAPI document.
struct Payload(Vec<u8>);

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PublishedJson {
    /// The hub's message id.
    id: u64,
    /// The `webhook-id` its deliveries carry (stable across retries and resends).
    webhook_id: String,
    /// Live subscribers when it was accepted: each gets a delivery, queued an instant
    /// later (one whose queue is full is recorded as dropped).
    subscribers: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct CountsJson {
    delivered: u64,
    failed: u64,
    pending: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct MessageSummaryJson {
    id: u64,
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
    Pending,
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
}

#[derive(Debug, Serialize, ToSchema)]
struct DeliveryJson {
    subscriber: String,
    status: DeliveryStateJson,
    http_status: Option<u16>,
    latency_ms: Option<f64>,
    error: Option<String>,
    /// Every HTTP request made for this delivery, oldest first.
    attempts: Vec<AttemptJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MessageJson {
    #[serde(flatten)]
    summary: MessageSummaryJson,
    /// The payload: text when it is UTF-8, base64 otherwise.
    body: String,
    body_encoding: BodyEncoding,
    /// One per subscriber it was queued for, then one per resend.
    deliveries: Vec<DeliveryJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MessagePageJson {
    /// Newest first.
    messages: Vec<MessageSummaryJson>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    next_before: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// How many messages, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only messages with a smaller id (for paging backwards).
    before: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ResendQuery {
    /// Resend to this subscriber only (its address as registered); default: to all.
    subscriber: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ResentJson {
    /// Deliveries queued.
    queued: u64,
}

fn summary(hub_instance: &str, message: &MessageRecord) -> MessageSummaryJson {
    let counts = message.summary();
    MessageSummaryJson {
        id: message.id,
        webhook_id: webhook_id(hub_instance, message.id),
        received_at: time(message.received_at),
        size: message.body.len() as u64,
        content_type: message.content_type.clone(),
        source: message.source.to_string(),
        delivery_counts: CountsJson {
            delivered: counts.delivered as u64,
            failed: counts.failed as u64,
            pending: counts.pending as u64,
        },
        trace_id: message.trace.trace_id.to_string(),
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

fn delivery(delivery: Delivery) -> DeliveryJson {
    let outcome = delivery.state.outcome();
    let (http_status, latency_ms, error) = outcome_fields(outcome);
    DeliveryJson {
        subscriber: delivery.subscriber.to_string(),
        status: outcome.into(),
        http_status,
        latency_ms,
        error,
        attempts: delivery.attempts.iter().map(attempt).collect(),
    }
}

fn attempt(attempt: &Attempt) -> AttemptJson {
    let (http_status, latency_ms, error) = outcome_fields(Some(&attempt.outcome));
    AttemptJson {
        at: time(attempt.at),
        status: Some(&attempt.outcome).into(),
        http_status,
        latency_ms,
        error,
    }
}

fn message_json(hub: &Hub, message: &MessageRecord) -> MessageJson {
    let (body, body_encoding) = match std::str::from_utf8(&message.body) {
        Ok(text) => (text.to_owned(), BodyEncoding::Utf8),
        Err(_) => (STANDARD.encode(&message.body), BodyEncoding::Base64),
    };
    MessageJson {
        summary: summary(hub.instance(), message),
        body,
        body_encoding,
        deliveries: message.deliveries().into_iter().map(delivery).collect(),
    }
}

/// The whole message log, oldest first, as NDJSON: each line one message as
/// `GET /api/v1/messages/{id}` gives it.
pub fn log_ndjson(hub: &Hub) -> Vec<u8> {
    let mut out = Vec::new();
    for message in hub.messages(None, usize::MAX).iter().rev() {
        if serde_json::to_writer(&mut out, &message_json(hub, message)).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// Publishes the raw request body to every live subscriber.
#[utoipa::path(
    post,
    path = "/api/v1/messages",
    operation_id = "publishMessage",
    tag = "messages",
    request_body(content = Payload, content_type = "application/octet-stream",
        description = "Any bytes, with any Content-Type; forwarded unchanged"),
    responses(
        (status = ACCEPTED, description = "Queued for every live subscriber", body = PublishedJson),
        (status = BAD_REQUEST, description = "Body cut short, or a non-ASCII Content-Type", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Shutting down", body = ErrorBody),
    )
)]
pub(super) async fn publish(
    State(state): State<AppState>,
    request: Request,
) -> Result<(StatusCode, Json<PublishedJson>), ApiError> {
    let published = accept(&state, request).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PublishedJson {
            id: published.id,
            webhook_id: webhook_id(state.hub.instance(), published.id),
            subscribers: published.subscribers as u64,
        }),
    ))
}

/// Pages through the message log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/messages",
    operation_id = "listMessages",
    tag = "messages",
    params(PageQuery),
    responses(
        (status = OK, description = "A page of the log", body = MessagePageJson),
        (status = BAD_REQUEST, description = "Bad limit or cursor", body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<MessagePageJson>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_PAGE}, not {limit}"),
        )
        .into());
    }
    let page = state.hub.messages(query.before, limit as usize + 1);
    let more = page.len() > limit as usize;
    let messages: Vec<MessageSummaryJson> = page
        .iter()
        .take(limit as usize)
        .map(|m| summary(state.hub.instance(), m))
        .collect();
    let next_before = more.then(|| messages.last().map(|m| m.id)).flatten();
    Ok(Json(MessagePageJson {
        messages,
        next_before,
    }))
}

/// One message: its payload and every delivery attempt.
#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}",
    operation_id = "getMessage",
    tag = "messages",
    params(("id" = u64, Path, description = "The message id")),
    responses(
        (status = OK, description = "The message", body = MessageJson),
        (status = BAD_REQUEST, description = "Not a message id", body = ErrorBody),
        (status = NOT_FOUND, description = "Not in the log", body = ErrorBody),
    )
)]
pub(super) async fn get(
    State(state): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<MessageJson>, ApiError> {
    let Path(id) = id?;
    let message = state
        .hub
        .message(id)
        .ok_or(ResendError::UnknownMessage(id))?;
    Ok(Json(message_json(&state.hub, &message)))
}

/// Delivers a logged message again, to every live subscriber or to one.
#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/resend",
    operation_id = "resendMessage",
    tag = "messages",
    params(("id" = u64, Path, description = "The message id"), ResendQuery),
    responses(
        (status = ACCEPTED, description = "Queued again", body = ResentJson),
        (status = BAD_REQUEST, description = "Not a message id", body = ErrorBody),
        (status = NOT_FOUND, description = "No such message or subscriber", body = ErrorBody),
        (status = CONFLICT, description = "The message already holds as many deliveries as the log keeps", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Shutting down", body = ErrorBody),
    )
)]
pub(super) async fn resend(
    State(state): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
    query: Result<Query<ResendQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<ResentJson>), ApiError> {
    let Path(id) = id?;
    let Query(query) = query?;
    let queued = state.hub.resend(id, query.subscriber.as_deref())?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ResentJson {
            queued: queued as u64,
        }),
    ))
}
