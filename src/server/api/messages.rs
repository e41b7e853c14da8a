//! `/api/v1/messages`: publish, page through the log, inspect one, resend. The JSON a
//! message and its deliveries are shown as is in `json`.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ErrorBody, HttpError};
use crate::hub::{Pattern, ResendError};
use crate::server::AppState;
use crate::server::publish::publish as accept;
use crate::wire::webhook_id;

pub(super) use crate::wire::message_json::{MessageSummaryJson, summary};

use crate::wire::message_json::{DeliveryPage, MessageJson, message_json};

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
    /// Only messages whose topic matches this pattern (`orders.*`, `payments.>`, or a
    /// topic), percent-encoded (`payments.%3E`).
    #[param(
        example = "orders.*",
        max_length = 256,
        pattern = r"^(([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*)){0,14}(\.>)?|>)$"
    )]
    topic: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesQuery {
    /// How many deliveries, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    deliveries_limit: Option<u32>,
    /// Only deliveries in later slots (for paging forwards).
    deliveries_after: Option<u64>,
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

/// The message a path names. Anything but a message id names no message: 404, in
/// Herald's words rather than the framework's ("Cannot parse `x` to a `u64`").
pub(super) fn message_id(path: Result<Path<String>, PathRejection>) -> Result<u64, HttpError> {
    let Path(text) = path?;
    text.parse().map_err(|_| {
        let message = format!(
            "there is no message {text:?}: message ids are whole numbers, as GET /api/v1/messages lists them"
        );
        HttpError::new(StatusCode::NOT_FOUND, message)
    })
}

/// A page size given as query parameter `name`: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] if
/// not given.
fn page_size(name: &str, given: Option<u32>) -> Result<usize, HttpError> {
    let size = given.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&size) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("{name} must be between 1 and {MAX_PAGE}, not {size}"),
        ));
    }
    Ok(size as usize)
}

/// Publishes the raw request body to every live subscriber its topic reaches.
#[utoipa::path(
    post,
    path = "/api/v1/messages",
    operation_id = "publishMessage",
    tag = "messages",
    params(
        ("topic" = Option<String>, Query, description = "The message's topic: dot-separated tokens of letters, digits, '-' and '_', at most 256 bytes. Subscribers without topics get every message; those with topics, the messages their patterns match. It may come in the X-Herald-Topic header instead (the same if in both), or else from a ce-type header that is a topic.", example = "orders.created", max_length = 256, pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,15}$"),
    ),
    request_body(content = Payload, content_type = "application/octet-stream",
        description = "Any bytes, with any Content-Type; forwarded unchanged"),
    responses(
        (status = ACCEPTED, description = "Queued for every live subscriber its topic reaches; with a data directory, answered once the message is on disk", body = PublishedJson),
        (status = BAD_REQUEST, description = "Body cut short, a non-ASCII Content-Type, or a bad topic", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Shutting down, or the store failed: not accepted", body = ErrorBody),
        (status = INSUFFICIENT_STORAGE, description = "The store's disk is full: not accepted", body = ErrorBody),
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

/// Pages through the message log, newest first: memory's messages (`--log-capacity`)
/// first, then, with a store, the store's (`--retain`). `GET /api/v1/store` says how much
/// each keeps.
#[utoipa::path(
    get,
    path = "/api/v1/messages",
    operation_id = "listMessages",
    tag = "messages",
    params(PageQuery),
    responses(
        (status = OK, description = "A page of the log", body = MessagePageJson),
        (status = BAD_REQUEST, description = "Bad limit, cursor or topic pattern", body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<MessagePageJson>, ApiError> {
    let Query(query) = query?;
    let limit = page_size("limit", query.limit)?;
    let pattern = query.topic.as_deref().map(Pattern::parse).transpose()?;
    // Pages past what memory holds are read from the store: off the server's thread.
    let hub = state.hub.clone();
    let before = query.before;
    let page =
        tokio::task::spawn_blocking(move || hub.history(before, limit + 1, pattern.as_ref()))
            .await
            .map_err(|err| {
                HttpError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reading the log failed: {err}"),
                )
            })?;
    let more = page.len() > limit;
    let messages: Vec<MessageSummaryJson> = page
        .iter()
        .take(limit)
        .map(|m| summary(state.hub.instance(), m))
        .collect();
    let next_before = more.then(|| messages.last().map(|m| m.id)).flatten();
    Ok(Json(MessagePageJson {
        messages,
        next_before,
    }))
}

/// One message: its payload, and a page of its deliveries with every attempt.
#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}",
    operation_id = "getMessage",
    tag = "messages",
    params(("id" = u64, Path, description = "The message id"), DeliveriesQuery),
    responses(
        (status = OK, description = "The message", body = MessageJson),
        (status = BAD_REQUEST, description = "A bad deliveries_limit or cursor", body = ErrorBody),
        (status = NOT_FOUND, description = "Not in the log, or not a message id", body = ErrorBody),
    )
)]
pub(super) async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<MessageJson>, ApiError> {
    let id = message_id(id)?;
    let Query(query) = query?;
    let limit = page_size("deliveries_limit", query.deliveries_limit)?;
    // From memory, or a point read from the store: not worth a thread hop.
    let message = state
        .hub
        .find_message(id)
        .ok_or(ResendError::UnknownMessage(id))?;
    let from = query.deliveries_after.map_or(0, |after| {
        usize::try_from(after).map_or(usize::MAX, |a| a.saturating_add(1))
    });
    let (deliveries, total) = message.deliveries_page(from, limit);
    let page = DeliveryPage {
        from,
        deliveries,
        total,
    };
    Ok(Json(message_json(&state.hub, &message, page)))
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
        (status = BAD_REQUEST, description = "A bad subscriber parameter", body = ErrorBody),
        (status = NOT_FOUND, description = "No such message or subscriber", body = ErrorBody),
        (status = CONFLICT, description = "The message already holds as many deliveries as the log keeps, or more bytes than its share of --log-max-bytes", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Shutting down", body = ErrorBody),
    )
)]
pub(super) async fn resend(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ResendQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<ResentJson>), ApiError> {
    let id = message_id(id)?;
    let Query(query) = query?;
    let queued = state.hub.resend(id, query.subscriber.as_deref())?;
    // Answered once the resend's deliveries are kept, as a publish is.
    state
        .hub
        .flush_store()
        .await
        .map_err(crate::hub::PublishError::NotKept)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ResentJson {
            queued: queued as u64,
        }),
    ))
}
