//! Replaying a logged message, edited or not, to everyone or to one subscriber.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::messages::message_id;
use super::{ApiError, ErrorBody, HttpError};
use crate::hub::{Edits, Source, Topic};
use crate::server::AppState;
use crate::wire::webhook_id;

/// What a replay changes; everything left out is the original's.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    /// A new payload, as text.
    body: Option<String>,
    /// A new payload, as base64 (for bytes that are not text); not with `body`.
    body_base64: Option<String>,
    /// A new content type; "" for none.
    content_type: Option<String>,
    /// A new topic; "" for none.
    #[schema(example = "orders.created")]
    topic: Option<String>,
    /// Only to this live subscriber (its address), whatever the topic.
    subscriber: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ReplayedJson {
    /// The new message's id.
    id: u64,
    webhook_id: String,
    /// The subscribers it was queued for.
    subscribers: u64,
    /// The message it replays.
    replay_of: u64,
}

/// Publishes a logged message again as a new message, with the edits given, to every
/// subscriber its topic reaches or to one; the new message names its original, and the
/// original lists its replays.
#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/replay",
    operation_id = "replayMessage",
    tag = "messages",
    params(("id" = u64, Path, description = "The message to replay")),
    request_body(content = ReplayRequest, description = "The edits (none: replayed as it was)"),
    responses(
        (status = ACCEPTED, description = "Queued, and kept by the store", body = ReplayedJson),
        (status = BAD_REQUEST, description = "Not JSON, both body and body_base64, bad base64 or a bad topic", body = ErrorBody),
        (status = NOT_FOUND, description = "No such message, or no such live subscriber", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "Body over --max-body", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Shutting down, or the store failed", body = ErrorBody),
        (status = INSUFFICIENT_STORAGE, description = "The store's disk is full", body = ErrorBody),
    )
)]
pub(super) async fn replay(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<(StatusCode, Json<ReplayedJson>), ApiError> {
    let id = message_id(id)?;
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let body = axum::body::to_bytes(request.into_body(), state.config.max_body)
        .await
        .map_err(|err| HttpError::unreadable_body(&err, &state.config))?;
    let bad = |message: String| HttpError::new(StatusCode::BAD_REQUEST, message);
    let asked: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            bad(format!(
                "the body must be a JSON object of edits (body, body_base64, content_type, topic, subscriber): {err}"
            ))
        })?
    };
    let body = match (asked.body, asked.body_base64) {
        (Some(_), Some(_)) => {
            return Err(
                bad("give the new payload as body or as body_base64, not both".into()).into(),
            );
        }
        (Some(text), None) => Some(text.into_bytes().into()),
        (None, Some(encoded)) => Some(
            STANDARD
                .decode(encoded)
                .map_err(|err| bad(format!("body_base64 is not base64: {err}")))?
                .into(),
        ),
        (None, None) => None,
    };
    if body
        .as_ref()
        .is_some_and(|b: &bytes::Bytes| b.len() > state.config.max_body)
    {
        return Err(HttpError::too_large(state.config.max_body).into());
    }
    let topic = match asked.topic.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(text) => Some(Some(
            Topic::parse(text).map_err(|err| bad(err.to_string()))?,
        )),
    };
    let content_type = asked
        .content_type
        .map(|t| Some(t).filter(|t| !t.is_empty()));
    // One that cannot be sent is refused by the hub where every publish enters.
    let edits = Edits {
        body,
        content_type,
        topic,
        to: asked.subscriber,
    };
    let published = state.hub.replay(id, edits, Source::Http(peer)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayedJson {
            id: published.id,
            webhook_id: webhook_id(state.hub.instance(), published.id),
            subscribers: published.subscribers as u64,
            replay_of: id,
        }),
    ))
}
