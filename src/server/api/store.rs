//! The log's keeping: where it is stored and how much it holds, forgetting it, and
//! importing an exported log back.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ErrorBody, HttpError};
use crate::server::AppState;
use crate::workbench::ndjson::{ImportError, import_ndjson};

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StoreJson {
    /// Whether what is accepted is kept on disk (`--data-dir`) or in memory only.
    durable: bool,
    /// The database file, when durable.
    path: Option<String>,
    /// Bytes it takes on disk (the database and its write-ahead log).
    bytes: u64,
    /// Messages it keeps (the log in memory holds the newest of them).
    messages: u64,
    /// Messages in memory now.
    in_memory: u64,
    /// The most messages memory holds (`--log-capacity`; fewer when the log's delivery
    /// records or bytes run out first). Listings give memory's messages first, then the
    /// store's: with `retain.messages` below it, more are listed than the store keeps.
    memory_capacity: u64,
    /// What the store keeps at most (`--retain`), when durable: whichever is reached
    /// first prunes the oldest, every second.
    retain: Option<RetainJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RetainJson {
    messages: u64,
    bytes: u64,
    age_seconds: u64,
}

/// Where the log is kept and how much it holds.
#[utoipa::path(
    get,
    path = "/api/v1/store",
    operation_id = "getStore",
    tag = "messages",
    responses((status = OK, description = "The store", body = StoreJson))
)]
pub(super) async fn get(State(state): State<AppState>) -> Json<StoreJson> {
    let usage = state.hub.store_usage();
    Json(StoreJson {
        durable: usage.place.is_some(),
        path: usage.place,
        bytes: usage.bytes,
        messages: usage.messages,
        in_memory: state.hub.logged_messages() as u64,
        memory_capacity: state.hub.config().log_capacity as u64,
        retain: usage.keeps.map(|keeps| RetainJson {
            messages: keeps.messages,
            bytes: keeps.bytes,
            age_seconds: keeps.age.as_secs(),
        }),
    })
}

/// Forgets the log, in memory and on disk, except messages with a delivery still to
/// make (the console's Clear and "forget history").
#[utoipa::path(
    delete,
    path = "/api/v1/messages",
    operation_id = "forgetMessages",
    tag = "messages",
    responses(
        (status = NO_CONTENT, description = "Forgotten"),
        (status = SERVICE_UNAVAILABLE, description = "The store did not keep the forget (shutting down, or it failed): memory is cleared, the disk is not", body = ErrorBody),
        (status = INSUFFICIENT_STORAGE, description = "The store's disk is full: memory is cleared, the disk is not", body = ErrorBody),
    )
)]
pub(super) async fn forget(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    // Answered once the store kept it, or with why it did not.
    state.hub.clear_log().await.map_err(HttpError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ImportedJson {
    /// Messages logged.
    imported: u64,
    /// The ids they were given, in the file's order (first and last).
    first_id: Option<u64>,
    last_id: Option<u64>,
}

/// Logs the messages of an exported log (NDJSON, one message a line, as the console's
/// Export writes it) without sending them anywhere: to inspect and resend. Every line is
/// checked first; one bad line imports nothing.
#[utoipa::path(
    post,
    path = "/api/v1/messages/import",
    operation_id = "importMessages",
    tag = "messages",
    request_body(content = String, content_type = "application/x-ndjson",
        description = "An exported log: one JSON message a line"),
    responses(
        (status = CREATED, description = "Logged, and kept by the store", body = ImportedJson),
        (status = BAD_REQUEST, description = "A line that is not an exported message", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Not application/x-ndjson", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Shutting down, or the store failed", body = ErrorBody),
        (status = INSUFFICIENT_STORAGE, description = "The store's disk is full", body = ErrorBody),
    )
)]
pub(super) async fn import(
    State(state): State<AppState>,
    request: Request,
) -> Result<(StatusCode, Json<ImportedJson>), ApiError> {
    let ndjson = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/x-ndjson")
                || essence.eq_ignore_ascii_case("application/jsonl")
        });
    if !ndjson {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the exported log with Content-Type: application/x-ndjson",
        )
        .into());
    }
    let body = axum::body::to_bytes(request.into_body(), state.config.max_body)
        .await
        .map_err(|err| HttpError::unreadable_body(&err, &state.config))?;
    let ids = import_ndjson(&state.hub, &body)
        .await
        .map_err(|err| match err {
            ImportError::Line(message) => HttpError::new(StatusCode::BAD_REQUEST, message),
            ImportError::Publish(err) => err.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(ImportedJson {
            imported: ids.len() as u64,
            first_id: ids.first().copied(),
            last_id: ids.last().copied(),
        }),
    ))
}
