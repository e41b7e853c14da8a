//! Bursts: N messages from a template at a rate, their progress, and cancel.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiJson, ErrorBody, HttpError, time};
use crate::hub::Topic;
use crate::server::AppState;
use crate::workbench::burst::{BurstError, BurstSpec, MAX_COUNT, Progress};
use crate::workbench::template::Template;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BurstRequest {
    /// Messages to publish, 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000, example = 200)]
    count: u64,
    /// Messages a second (above 0, at most 100,000); left out: as fast as the hub takes
    /// them.
    #[schema(example = 100.0)]
    rate: Option<f64>,
    /// The payload, rendered per message: Jinja syntax with `{{ seq }}`, `{{ uuid() }}`,
    /// `{{ now() }}`, `{{ now_ms() }}`, `{{ random(1, 100) }}`, `{{ pick(["a", "b"]) }}`.
    #[schema(example = r#"{"n": {{ seq }}, "id": "{{ uuid() }}"}"#)]
    template: String,
    content_type: Option<String>,
    /// The messages' topic.
    #[schema(example = "orders.created")]
    topic: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BurstJson {
    id: u64,
    /// running, done, cancelled or failed (its template failed part way).
    state: String,
    count: u64,
    rate: Option<f64>,
    /// Tried so far: accepted and refused.
    sent: u64,
    accepted: u64,
    refused: u64,
    /// Deliveries of its messages (those the log's memory still holds), by state.
    delivered: u64,
    failed: u64,
    pending: u64,
    started_at: String,
    finished_at: Option<String>,
    /// Why it stopped early, or the last refusal.
    error: Option<String>,
}

impl From<Progress> for BurstJson {
    fn from(p: Progress) -> Self {
        Self {
            id: p.id,
            state: p.state.label().to_owned(),
            count: p.count,
            rate: p.rate,
            sent: p.sent,
            accepted: p.accepted,
            refused: p.refused,
            delivered: p.delivered,
            failed: p.failed,
            pending: p.pending,
            started_at: time(p.started_at),
            finished_at: p.finished_at.map(time),
            error: p.error,
        }
    }
}

/// Starts a burst: `count` messages rendered from `template`, at `rate` a second.
#[utoipa::path(
    post,
    path = "/api/v1/bursts",
    operation_id = "startBurst",
    tag = "messages",
    request_body = BurstRequest,
    responses(
        (status = ACCEPTED, description = "Started; follow it with GET /api/v1/bursts/{id}", body = BurstJson),
        (status = BAD_REQUEST, description = "A bad count, rate, template or topic", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Not application/json", body = ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "Eight bursts are running already", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Shutting down, or no thread to render templates on", body = ErrorBody),
    )
)]
pub(super) async fn start(
    State(state): State<AppState>,
    ApiJson(asked): ApiJson<BurstRequest>,
) -> Result<(StatusCode, Json<BurstJson>), ApiError> {
    let bad = |message: String| HttpError::new(StatusCode::BAD_REQUEST, message);
    // Off the server's own thread: a long template takes a while to parse.
    let source = asked.template;
    let template = state
        .runtime
        .spawn_blocking(move || Template::parse(&source))
        .await
        .map_err(|_| HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?
        .map_err(|err| bad(err.to_string()))?;
    let topic = asked
        .topic
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Topic::parse)
        .transpose()
        .map_err(|err| bad(err.to_string()))?;
    if let Some(text) = &asked.content_type
        && crate::wire::forward::header_text(text.as_bytes()).is_none()
    {
        return Err(bad(format!("content_type {text:?} cannot be sent as a header")).into());
    }
    let spec = BurstSpec {
        count: asked.count,
        rate: asked.rate,
        template,
        content_type: asked.content_type.filter(|t| !t.is_empty()),
        topic,
    };
    // On the runtime the deliveries run on, not the server's own thread.
    let burst = state
        .bursts
        .start(&state.hub, &state.runtime, spec)
        .map_err(|err| {
            let status = match err {
                BurstError::Count(_) | BurstError::Rate(_) => StatusCode::BAD_REQUEST,
                BurstError::Busy => StatusCode::TOO_MANY_REQUESTS,
                BurstError::ShuttingDown | BurstError::NoRenderer(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            HttpError::new(status, err.to_string())
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(burst.progress(&state.hub).into()),
    ))
}

/// A burst's progress.
#[utoipa::path(
    get,
    path = "/api/v1/bursts/{id}",
    operation_id = "getBurst",
    tag = "messages",
    params(("id" = u64, Path, description = "The burst's id")),
    responses(
        (status = OK, description = "Its progress", body = BurstJson),
        (status = NOT_FOUND, description = "No such burst (the 64 newest finished ones are kept)", body = ErrorBody),
    )
)]
pub(super) async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<BurstJson>, ApiError> {
    let burst = burst(&state, id)?;
    Ok(Json(burst.progress(&state.hub).into()))
}

/// Cancels a running burst (what it published stays published); answers its progress.
#[utoipa::path(
    delete,
    path = "/api/v1/bursts/{id}",
    operation_id = "cancelBurst",
    tag = "messages",
    params(("id" = u64, Path, description = "The burst's id")),
    responses(
        (status = OK, description = "Cancelled (or it had finished already)", body = BurstJson),
        (status = NOT_FOUND, description = "No such burst", body = ErrorBody),
    )
)]
pub(super) async fn cancel(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<BurstJson>, ApiError> {
    let burst = burst(&state, id)?;
    burst.cancel();
    // Its task sees the cancel at its next step (a publish waiting on the disk may take a
    // moment): answer with where it stopped, unless that takes long.
    let stopped = std::time::Duration::from_millis(500);
    tokio::time::timeout(stopped, burst.stopped()).await.ok();
    Ok(Json(burst.progress(&state.hub).into()))
}

fn burst(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
) -> Result<std::sync::Arc<crate::workbench::burst::Burst>, HttpError> {
    let Path(text) = id?;
    let missing = || {
        HttpError::new(
            StatusCode::NOT_FOUND,
            format!(
                "there is no burst {text:?}: POST /api/v1/bursts answers with the id of one it starts (up to {MAX_COUNT} messages)"
            ),
        )
    };
    let id: u64 = text.parse().map_err(|_| missing())?;
    state.bursts.get(id).ok_or_else(missing)
}
