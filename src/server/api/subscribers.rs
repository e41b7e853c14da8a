//! `/api/v1/subscribers`: list, register or refresh, kick.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiJson, ErrorBody, HttpError, millis, time};
use crate::hub::{
    ControlError, Pattern, Registration, RemovalReason, Secret, SubscriberState, SubscriberView,
    Subscription,
};
use crate::server::AppState;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum StateJson {
    Active,
    /// Failing repeatedly: deliveries wait while it is probed with backoff.
    Suspended,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SubscriberJson {
    /// The address as registered: `host:port` or a full URL.
    address: String,
    /// Where deliveries are POSTed.
    target: String,
    /// When it first registered (RFC 3339).
    registered_at: String,
    /// Its last keep-alive (RFC 3339).
    last_seen: String,
    /// When it will be removed unless it refreshes (RFC 3339).
    expires_at: String,
    /// Its keep-alive period in seconds.
    lease_seconds: f64,
    state: StateJson,
    /// Whether its deliveries are signed with a secret of its own.
    own_secret: bool,
    /// Strict order: a delivery waiting for its retry holds back the later ones.
    ordered: bool,
    /// Deliveries it takes at once.
    max_in_flight: u64,
    /// Held: nothing new is sent until it is resumed (PATCH `paused`).
    paused: bool,
    /// Never expires (PATCH `pinned`).
    pinned: bool,
    /// The topic patterns it receives; empty: every message.
    #[schema(example = json!(["orders.*", "payments.>"]))]
    topics: Vec<String>,
    /// Deliveries waiting in its queue.
    queue_depth: u64,
    /// With a store (`--data-dir`): deliveries beyond the queue, waiting on disk, read
    /// back in order as the queue drains. Always 0 in memory, where a full queue drops
    /// (recorded as "queue full").
    backlog: u64,
    delivered: u64,
    failed: u64,
    /// HTTP status of its last finished delivery, if it answered.
    last_status: Option<u16>,
    /// Latency of its last finished delivery, in milliseconds.
    last_latency_ms: Option<f64>,
}

impl From<SubscriberView> for SubscriberJson {
    fn from(view: SubscriberView) -> Self {
        Self {
            address: view.address.to_string(),
            target: view.target.to_string(),
            registered_at: time(view.registered_at),
            last_seen: time(view.last_seen),
            expires_at: time(view.expires_at),
            lease_seconds: view.lease.as_secs_f64(),
            state: match view.state {
                SubscriberState::Active => StateJson::Active,
                SubscriberState::Suspended => StateJson::Suspended,
            },
            own_secret: view.signed,
            ordered: view.ordered,
            max_in_flight: view.max_in_flight as u64,
            paused: view.paused,
            pinned: view.pinned,
            topics: view.topics.iter().map(ToString::to_string).collect(),
            queue_depth: view.queue_depth as u64,
            backlog: view.backlog as u64,
            delivered: view.delivered,
            failed: view.failed,
            last_status: view.last_status,
            last_latency_ms: view.last_latency.map(millis),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubscribeRequest {
    /// `host:port` (delivered to `http://host:port/event`) or a full http(s) URL.
    #[schema(example = "localhost:8080")]
    address: String,
    /// Its own keep-alive period instead of the hub's TTL; clamped to 1 s .. 24 h.
    lease_seconds: Option<u64>,
    /// Sign its deliveries with this Standard Webhooks secret (`whsec_` + base64).
    secret: Option<String>,
    /// Strict order: a delivery waiting for its retry holds back the later ones (default
    /// false: each delivery retries on its own schedule while later ones go out).
    ordered: Option<bool>,
    /// Deliveries it takes at once, 1 to 256 (default 1), with no order promise beyond 1.
    #[schema(minimum = 1, maximum = 256)]
    max_in_flight: Option<u32>,
    /// Topic patterns to receive (NATS syntax: `*` is one token, a last `>` one or more),
    /// replacing those it had; `[]` receives every message again. Left out, a refresh
    /// keeps the patterns it had, and a new subscriber receives every message.
    #[schema(example = json!(["orders.*", "payments.>"]), max_items = 64)]
    topics: Option<Vec<String>>,
}

/// Every live subscriber, ordered by address.
#[utoipa::path(
    get,
    path = "/api/v1/subscribers",
    operation_id = "listSubscribers",
    tag = "subscribers",
    responses((status = OK, description = "Live subscribers", body = [SubscriberJson]))
)]
pub(super) async fn list(State(state): State<AppState>) -> Json<Vec<SubscriberJson>> {
    Json(
        state
            .hub
            .subscribers()
            .into_iter()
            .map(Into::into)
            .collect(),
    )
}

/// Registers a subscriber, or refreshes it (keep-alive, and lease and secret when given).
#[utoipa::path(
    post,
    path = "/api/v1/subscribers",
    operation_id = "registerSubscriber",
    tag = "subscribers",
    request_body = SubscribeRequest,
    responses(
        (status = CREATED, description = "Registered", body = SubscriberJson),
        (status = OK, description = "Already registered: refreshed", body = SubscriberJson),
        (status = BAD_REQUEST, description = "Malformed or refused address, bad secret, bad topic pattern, bad JSON", body = ErrorBody),
        (status = FORBIDDEN, description = "The address is banned (DELETE ?ban=): the error says until when", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Subscriber limit reached, or shutting down", body = ErrorBody),
    )
)]
pub(super) async fn register(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<SubscribeRequest>,
) -> Result<Response, ApiError> {
    let secret = request
        .secret
        .as_deref()
        .map(str::parse::<Secret>)
        .transpose()?;
    let topics = request
        .topics
        .as_deref()
        .map(Pattern::parse_all)
        .transpose()?;
    let registration = state.hub.subscribe(Subscription {
        address: &request.address,
        secret,
        lease: request.lease_seconds.map(Duration::from_secs),
        ordered: request.ordered,
        max_in_flight: request.max_in_flight,
        topics,
        // Only a test subscriber's server ends with this process.
        ephemeral: false,
    })?;
    let view = state.hub.subscriber(&request.address).ok_or_else(|| {
        // Only possible if it was removed in the instant since registering.
        HttpError::new(
            StatusCode::CONFLICT,
            "the subscriber was removed while registering",
        )
    })?;
    let status = match registration {
        Registration::Registered => StatusCode::CREATED,
        Registration::Refreshed => StatusCode::OK,
    };
    Ok((status, Json(SubscriberJson::from(view))).into_response())
}

/// Removes a subscriber at once; its queued deliveries are recorded as not delivered.
#[utoipa::path(
    delete,
    path = "/api/v1/subscribers/{address}",
    operation_id = "kickSubscriber",
    tag = "subscribers",
    params(
        ("address" = String, Path, description = "The address as registered, URL-encoded"),
        ("ban" = Option<String>, Query, description = "Also refuse its registration for this long (e.g. 10m, at most 365 days), with 403 saying until when; the address need not be registered now", example = "10m"),
    ),
    responses(
        (status = NO_CONTENT, description = "Kicked (and banned)"),
        (status = BAD_REQUEST, description = "Undecodable address or bad ban duration", body = ErrorBody),
        (status = NOT_FOUND, description = "No such subscriber (without ban)", body = ErrorBody),
        (status = CONFLICT, description = "The most bans the hub keeps are in force: nothing was done", body = ErrorBody),
    )
)]
pub(super) async fn kick(
    State(state): State<AppState>,
    address: Result<Path<String>, PathRejection>,
    query: Result<Query<KickQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(address) = address?;
    let Query(query) = query?;
    if let Some(ban) = query.ban.as_deref() {
        let ban = crate::values::ban_duration(ban)
            .map_err(|err| HttpError::new(StatusCode::BAD_REQUEST, format!("ban: {err}")))?;
        state.hub.ban(&address, ban)?;
        return Ok(StatusCode::NO_CONTENT);
    }
    if state.hub.remove(&address, RemovalReason::Kicked) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown(&address))
    }
}

/// Replaces a subscriber's topic patterns, as the console's topics column does; `[]`
/// gives it every message again. Not a keep-alive.
#[utoipa::path(
    put,
    path = "/api/v1/subscribers/{address}/topics",
    operation_id = "setSubscriberTopics",
    tag = "subscribers",
    params(("address" = String, Path, description = "The address as registered, URL-encoded")),
    request_body(content = Vec<String>, description = "Topic patterns (at most 64)",
        example = json!(["orders.*", "payments.>"])),
    responses(
        (status = OK, description = "The subscriber, with its new topics", body = SubscriberJson),
        (status = BAD_REQUEST, description = "Undecodable address, bad pattern or too many, bad JSON", body = ErrorBody),
        (status = NOT_FOUND, description = "No such subscriber", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = ErrorBody),
    )
)]
pub(super) async fn set_topics(
    State(state): State<AppState>,
    address: Result<Path<String>, PathRejection>,
    ApiJson(topics): ApiJson<Vec<String>>,
) -> Result<Json<SubscriberJson>, ApiError> {
    let Path(address) = address?;
    let topics = Pattern::parse_all(&topics)?;
    state.hub.set_topics(&address, topics)?;
    view(&state, &address)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct KickQuery {
    ban: Option<String>,
}

/// What `PATCH /api/v1/subscribers/{address}` changes; what it leaves out stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlRequest {
    /// Hold its deliveries (the queue is kept, and drops once full), or let them go again,
    /// in order.
    paused: Option<bool>,
    /// Never expire it (for a service that cannot send keep-alives), or let it expire
    /// again, a whole lease from now.
    pinned: Option<bool>,
}

/// Pauses or resumes a subscriber, pins or unpins it, as the console's buttons do.
#[utoipa::path(
    patch,
    path = "/api/v1/subscribers/{address}",
    operation_id = "controlSubscriber",
    tag = "subscribers",
    params(("address" = String, Path, description = "The address as registered, URL-encoded")),
    request_body = ControlRequest,
    responses(
        (status = OK, description = "The subscriber as it is now", body = SubscriberJson),
        (status = BAD_REQUEST, description = "Undecodable address, bad JSON", body = ErrorBody),
        (status = NOT_FOUND, description = "No such subscriber", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = ErrorBody),
    )
)]
pub(super) async fn control(
    State(state): State<AppState>,
    address: Result<Path<String>, PathRejection>,
    ApiJson(request): ApiJson<ControlRequest>,
) -> Result<Json<SubscriberJson>, ApiError> {
    let Path(address) = address?;
    if let Some(paused) = request.paused {
        state.hub.set_paused(&address, paused)?;
    }
    if let Some(pinned) = request.pinned {
        state.hub.set_pinned(&address, pinned)?;
    }
    view(&state, &address)
}

/// Removes a subscriber as if its lease had run out, to test a service's
/// re-registration.
#[utoipa::path(
    post,
    path = "/api/v1/subscribers/{address}/expire",
    operation_id = "expireSubscriber",
    tag = "subscribers",
    params(("address" = String, Path, description = "The address as registered, URL-encoded")),
    responses(
        (status = NO_CONTENT, description = "Expired"),
        (status = BAD_REQUEST, description = "Undecodable address", body = ErrorBody),
        (status = NOT_FOUND, description = "No such subscriber", body = ErrorBody),
    )
)]
pub(super) async fn expire(
    State(state): State<AppState>,
    address: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(address) = address?;
    if state.hub.expire_now(&address) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown(&address))
    }
}

/// The subscriber as the API shows it, or 404 if it left (or never was).
fn view(state: &AppState, address: &str) -> Result<Json<SubscriberJson>, ApiError> {
    let view = state
        .hub
        .subscriber(address)
        .ok_or_else(|| unknown(address))?;
    Ok(Json(view.into()))
}

fn unknown(address: &str) -> ApiError {
    HttpError::from(ControlError::UnknownSubscriber(address.to_owned())).into()
}
