//! Starring a message, and comparing two.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::messages::{MessageSummaryJson, message_id, summary};
use super::{ApiError, ApiJson, ErrorBody, HttpError};
use crate::hub::PinError;
use crate::server::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MessagePatch {
    /// Starred: it never leaves the log, nor the store's retention (100 at most).
    pinned: bool,
}

/// Stars a message or unstars it.
#[utoipa::path(
    patch,
    path = "/api/v1/messages/{id}",
    operation_id = "updateMessage",
    tag = "messages",
    params(("id" = u64, Path, description = "The message id")),
    request_body = MessagePatch,
    responses(
        (status = OK, description = "The message", body = MessageSummaryJson),
        (status = BAD_REQUEST, description = "Not a patch of pinned", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Not application/json", body = ErrorBody),
        (status = NOT_FOUND, description = "Not in the log", body = ErrorBody),
        (status = CONFLICT, description = "100 messages are pinned already", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "The store did not keep the change (shutting down, or it failed)", body = ErrorBody),
        (status = INSUFFICIENT_STORAGE, description = "The store's disk is full: the change was not kept", body = ErrorBody),
    )
)]
pub(super) async fn update(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ApiJson(patch): ApiJson<MessagePatch>,
) -> Result<Json<MessageSummaryJson>, ApiError> {
    let id = message_id(id)?;
    let kept = state.hub.pin_message(id, patch.pinned).map_err(|err| {
        let status = match err {
            PinError::UnknownMessage(_) => StatusCode::NOT_FOUND,
            PinError::TooMany { .. } => StatusCode::CONFLICT,
        };
        HttpError::new(status, err.to_string())
    })?;
    // Answered once the store kept it: a star that did not reach the disk is no star.
    kept.await.map_err(HttpError::from)?;
    let message = state
        .hub
        .find_message(id)
        .ok_or_else(|| HttpError::new(StatusCode::NOT_FOUND, format!("message {id} is gone")))?;
    Ok(Json(summary(state.hub.instance(), &message)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DiffQuery {
    /// The first message's id.
    a: u64,
    /// The second message's id.
    b: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct DiffRowJson {
    /// same, removed (only in a) or added (only in b).
    op: String,
    /// Its line in a and in b, from 1.
    a_line: Option<u64>,
    b_line: Option<u64>,
    text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DiffJson {
    a: u64,
    b: u64,
    /// The same payload (JSON compared as values, pretty-printed).
    identical: bool,
    rows: Vec<DiffRowJson>,
    /// More than 10,000 rows: the rest were left out.
    truncated: bool,
    /// Compared as the raw text of the payloads, since one would have pretty-printed (or
    /// hex-dumped) to more than 4 MiB; `note` says so in words.
    raw: bool,
    /// How it was compared, when not as usual: "compared as raw text: too large to
    /// pretty-print".
    note: Option<String>,
}

/// Compares two messages' payloads line by line (JSON pretty-printed first, bytes that
/// are not text as a hex dump; either as raw text when that would pass 4 MiB). Two
/// comparisons run at a time, the console's included; beyond that the answer is 429.
#[utoipa::path(
    get,
    path = "/api/v1/diff",
    operation_id = "diffMessages",
    tag = "messages",
    params(DiffQuery),
    responses(
        (status = OK, description = "Their payloads, side by side", body = DiffJson),
        (status = BAD_REQUEST, description = "a and b must be message ids", body = ErrorBody),
        (status = NOT_FOUND, description = "One is not in the log", body = ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "Two comparisons are running already; try again after Retry-After", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
    )
)]
pub(super) async fn compare(
    State(state): State<AppState>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Json<DiffJson>, ApiError> {
    let Query(DiffQuery { a, b }) = query?;
    let find = |id: u64| {
        state.hub.find_message(id).ok_or_else(|| {
            HttpError::new(
                StatusCode::NOT_FOUND,
                format!("message {id} is not in the log"),
            )
        })
    };
    let (old, new) = (find(a)?, find(b)?);
    // Taken here and held by the comparison itself: a client that goes away does not
    // free the room before the work it started is done.
    let turn = state.diffs.try_start()?;
    // Up to 200 ms of work: off the server's thread.
    let compared = tokio::task::spawn_blocking(move || turn.compare(&old.body, &new.body))
        .await
        .map_err(|err| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    Ok(Json(DiffJson {
        a,
        b,
        identical: compared.identical,
        truncated: compared.truncated,
        raw: compared.raw,
        note: compared.note().map(str::to_owned),
        rows: compared
            .rows
            .into_iter()
            .map(|row| DiffRowJson {
                op: row.op.label().to_owned(),
                a_line: row.old.map(|n| n as u64),
                b_line: row.new.map(|n| n as u64),
                text: row.text,
            })
            .collect(),
    }))
}
