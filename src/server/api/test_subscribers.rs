//! Programmable test subscribers: add, read, change, remove, and what each received.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiJson, ErrorBody, HttpError, time};
use crate::hub::RegisterError;
use crate::server::AppState;
use crate::workbench::{Behaviour, BehaviourError, StartFailure, TestState, TestSubscriber};

/// How a test subscriber answers; what is left out is the default (or, in a PATCH, stays
/// as it is).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BehaviourJson {
    /// The status it answers with (default 204).
    #[schema(minimum = 100, maximum = 599, example = 200)]
    status: Option<u16>,
    /// Added latency before it answers, in ms (at most 60,000).
    #[schema(maximum = 60_000)]
    delay_ms: Option<u64>,
    /// The share of requests answered 500 instead, 0 to 100.
    #[schema(maximum = 100, example = 50)]
    fail_percent: Option<u8>,
    /// Answers 410 Gone (and so unsubscribes) after this many deliveries; null: never.
    gone_after: Option<Option<u64>>,
    /// Never answers: each request hangs until Herald's delivery timeout.
    hang: Option<bool>,
    /// Waits this long between the request body's chunks, in ms: a slow reader.
    #[schema(maximum = 60_000)]
    read_delay_ms: Option<u64>,
}

impl BehaviourJson {
    /// `base` with these changes.
    fn apply(self, base: Behaviour) -> Behaviour {
        let ms = |ms: u64| Duration::from_millis(ms.min(u64::from(u32::MAX)));
        Behaviour {
            status: self.status.unwrap_or(base.status),
            delay: self.delay_ms.map_or(base.delay, ms),
            fail_percent: self.fail_percent.unwrap_or(base.fail_percent),
            gone_after: self.gone_after.unwrap_or(base.gone_after),
            hang: self.hang.unwrap_or(base.hang),
            read_delay: self.read_delay_ms.map_or(base.read_delay, ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TestSubscriberJson {
    id: u64,
    /// Where it is registered (127.0.0.1:PORT); absent while starting or once failed.
    address: Option<String>,
    /// starting, on or failed.
    state: String,
    /// Why it failed, if it did (say, after answering 410 it is unsubscribed).
    error: Option<String>,
    status: u16,
    delay_ms: u64,
    fail_percent: u8,
    gone_after: Option<u64>,
    hang: bool,
    read_delay_ms: u64,
    /// Requests it took since it started.
    received: u64,
}

fn view(subscriber: &TestSubscriber) -> TestSubscriberJson {
    let behaviour = subscriber.behaviour();
    let (state, address, error) = match subscriber.state() {
        TestState::On(address) => ("on", Some(address), None),
        TestState::Starting | TestState::Off => ("starting", None, None),
        TestState::Failed(error) => ("failed", None, Some(error)),
    };
    TestSubscriberJson {
        id: subscriber.id,
        address,
        state: state.to_owned(),
        error,
        status: behaviour.status,
        delay_ms: behaviour.delay.as_millis() as u64,
        fail_percent: behaviour.fail_percent,
        gone_after: behaviour.gone_after,
        hang: behaviour.hang,
        read_delay_ms: behaviour.read_delay.as_millis() as u64,
        received: subscriber.received_count(),
    }
}

fn refused(err: BehaviourError) -> HttpError {
    let status = match err {
        BehaviourError::TooMany => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    HttpError::new(status, err.to_string())
}

/// Adds a test subscriber: a server inside Herald, registered like any subscriber, that
/// answers as told.
#[utoipa::path(
    post,
    path = "/api/v1/test-subscribers",
    operation_id = "addTestSubscriber",
    tag = "subscribers",
    request_body = BehaviourJson,
    responses(
        (status = CREATED, description = "Serving and registered", body = TestSubscriberJson),
        (status = BAD_REQUEST, description = "A bad status, percentage or delay", body = ErrorBody),
        (status = CONFLICT, description = "64 run already, or the hub's target policy refuses loopback", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Not application/json", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "It could not start or register", body = ErrorBody),
    )
)]
pub(super) async fn add(
    State(state): State<AppState>,
    ApiJson(asked): ApiJson<BehaviourJson>,
) -> Result<(StatusCode, Json<TestSubscriberJson>), ApiError> {
    let behaviour = asked.apply(Behaviour::default());
    behaviour.check().map_err(refused)?;
    let subscriber = state
        .tests
        .add_started(&state.hub, &state.runtime, behaviour)
        .await
        .map_err(|err| match err {
            StartFailure::Refused(err) => refused(err),
            // Test subscribers live on loopback: a policy that refuses it is the hub's
            // settings, not the request, at fault.
            StartFailure::Register(RegisterError::Target(_)) => HttpError::new(
                StatusCode::CONFLICT,
                format!("{err}; test subscribers listen on 127.0.0.1, which this hub's --deny-target refuses"),
            ),
            StartFailure::Register(register) => register.into(),
            StartFailure::Failed(_) => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
            }
        })?;
    Ok((StatusCode::CREATED, Json(view(&subscriber))))
}

/// Every test subscriber.
#[utoipa::path(
    get,
    path = "/api/v1/test-subscribers",
    operation_id = "listTestSubscribers",
    tag = "subscribers",
    responses((status = OK, description = "The test subscribers", body = [TestSubscriberJson]))
)]
pub(super) async fn list(State(state): State<AppState>) -> Json<Vec<TestSubscriberJson>> {
    Json(state.tests.list().iter().map(|s| view(s)).collect())
}

fn find(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
) -> Result<Arc<TestSubscriber>, HttpError> {
    let Path(text) = id?;
    let missing = || {
        HttpError::new(
            StatusCode::NOT_FOUND,
            format!(
                "there is no test subscriber {text:?}: GET /api/v1/test-subscribers lists them"
            ),
        )
    };
    let id: u64 = text.parse().map_err(|_| missing())?;
    state.tests.get(id).ok_or_else(missing)
}

/// One test subscriber.
#[utoipa::path(
    get,
    path = "/api/v1/test-subscribers/{id}",
    operation_id = "getTestSubscriber",
    tag = "subscribers",
    params(("id" = u64, Path, description = "Its id")),
    responses(
        (status = OK, description = "It", body = TestSubscriberJson),
        (status = NOT_FOUND, description = "No such test subscriber", body = ErrorBody),
    )
)]
pub(super) async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TestSubscriberJson>, ApiError> {
    let subscriber = find(&state, id)?;
    Ok(Json(view(&subscriber)))
}

/// Changes how a test subscriber answers, from its next request on.
#[utoipa::path(
    patch,
    path = "/api/v1/test-subscribers/{id}",
    operation_id = "updateTestSubscriber",
    tag = "subscribers",
    params(("id" = u64, Path, description = "Its id")),
    request_body = BehaviourJson,
    responses(
        (status = OK, description = "Changed", body = TestSubscriberJson),
        (status = BAD_REQUEST, description = "A bad status, percentage or delay", body = ErrorBody),
        (status = NOT_FOUND, description = "No such test subscriber", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Not application/json", body = ErrorBody),
    )
)]
pub(super) async fn update(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ApiJson(asked): ApiJson<BehaviourJson>,
) -> Result<Json<TestSubscriberJson>, ApiError> {
    let subscriber = find(&state, id)?;
    let behaviour = asked.apply(subscriber.behaviour());
    subscriber.set_behaviour(behaviour).map_err(refused)?;
    Ok(Json(view(&subscriber)))
}

/// Deregisters a test subscriber and stops it.
#[utoipa::path(
    delete,
    path = "/api/v1/test-subscribers/{id}",
    operation_id = "removeTestSubscriber",
    tag = "subscribers",
    params(("id" = u64, Path, description = "Its id")),
    responses(
        (status = NO_CONTENT, description = "Removed"),
        (status = NOT_FOUND, description = "No such test subscriber", body = ErrorBody),
    )
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let subscriber = find(&state, id)?;
    state.tests.remove(&state.hub, subscriber.id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ReceivedJson {
    at: String,
    /// The message it was a delivery of.
    message_id: Option<u64>,
    content_type: Option<String>,
    size: u64,
    /// Its first 64 KiB: text when it is UTF-8, base64 otherwise.
    body: String,
    base64: bool,
    /// Whether the body went on past what was kept.
    truncated: bool,
    /// What it answered; absent while it hangs.
    status: Option<u16>,
}

/// What a test subscriber received (the newest 100), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/test-subscribers/{id}/received",
    operation_id = "testSubscriberReceived",
    tag = "subscribers",
    params(("id" = u64, Path, description = "Its id")),
    responses(
        (status = OK, description = "Newest first", body = [ReceivedJson]),
        (status = NOT_FOUND, description = "No such test subscriber", body = ErrorBody),
    )
)]
pub(super) async fn received(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<ReceivedJson>>, ApiError> {
    let subscriber = find(&state, id)?;
    let received = subscriber.received(usize::MAX);
    Ok(Json(
        received
            .into_iter()
            .map(|r| {
                let (body, base64) = match std::str::from_utf8(&r.body) {
                    Ok(text) => (text.to_owned(), false),
                    Err(_) => (STANDARD.encode(&r.body), true),
                };
                ReceivedJson {
                    at: time(r.at),
                    message_id: r.message_id,
                    content_type: r.content_type,
                    size: r.size as u64,
                    truncated: r.size > r.body.len(),
                    body,
                    base64,
                    status: r.status,
                }
            })
            .collect(),
    ))
}
