//! `/api/v1/topics` and `/api/v1/reach`: the topics messages were published with, and
//! who a message with a topic would reach, as the console's Topics view and Compose show.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ErrorBody, time};
use crate::hub::{Reach, Topic};
use crate::server::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TopicJson {
    #[schema(example = "orders.created")]
    topic: String,
    /// Messages published with it.
    messages: u64,
    /// When the last one was accepted (RFC 3339).
    last_at: String,
    /// The last one's id, for `GET /api/v1/messages/{id}` (while the log keeps it).
    last_message_id: u64,
    /// Subscribers a message with it reaches now: those without topics and `matching`.
    subscribers: u64,
    /// Subscribers with a pattern that matches it, by address: the first 20.
    matching: Vec<String>,
    /// How many subscribers match it by their patterns, listed or not.
    matching_total: u64,
}

/// Subscribers named per topic in `/api/v1/topics`; `/api/v1/reach` names them all.
const NAMED_PER_TOPIC: usize = 20;

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ReachJson {
    /// How many subscribers it would be queued for.
    subscribers: u64,
    /// Subscribers without topics, who get every message.
    everyone: Vec<String>,
    /// Subscribers with a pattern that matches the topic, by address.
    matching: Vec<String>,
}

impl From<Reach> for ReachJson {
    fn from(reach: Reach) -> Self {
        let strings = |list: Vec<std::sync::Arc<str>>| list.iter().map(|a| a.to_string()).collect();
        Self {
            subscribers: reach.len() as u64,
            everyone: strings(reach.everyone),
            matching: strings(reach.matched),
        }
    }
}

// The `pattern`s in this document restate `hub::topic`'s rules for clients and fuzzers
// (utoipa takes only literals there); the server's own checks are what decide.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ReachQuery {
    /// The topic of the message to be; without one, a message without a topic (which
    /// reaches only subscribers without topics).
    #[param(
        example = "orders.created",
        max_length = 256,
        pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,15}$"
    )]
    topic: Option<String>,
}

/// Every topic messages were published with (the 10,000 most recent), the most recent
/// first.
#[utoipa::path(
    get,
    path = "/api/v1/topics",
    operation_id = "listTopics",
    tag = "topics",
    responses((status = OK, description = "Topics seen", body = [TopicJson]))
)]
pub(super) async fn list(State(state): State<AppState>) -> Json<Vec<TopicJson>> {
    let hub = &state.hub;
    let topics = hub
        .topics()
        .into_iter()
        .map(|seen| {
            let reach = hub.reach_of(&seen.topic, NAMED_PER_TOPIC);
            TopicJson {
                topic: seen.topic.to_string(),
                messages: seen.messages,
                last_at: time(seen.last_at),
                last_message_id: seen.last_id,
                subscribers: reach.subscribers as u64,
                matching: reach.named.iter().map(|a| a.to_string()).collect(),
                matching_total: reach.matched as u64,
            }
        })
        .collect();
    Json(topics)
}

/// Who a message would be queued for if it were published now: what Compose previews.
#[utoipa::path(
    get,
    path = "/api/v1/reach",
    operation_id = "reach",
    tag = "topics",
    params(ReachQuery),
    responses(
        (status = OK, description = "The subscribers it would reach", body = ReachJson),
        (status = BAD_REQUEST, description = "Not a topic", body = ErrorBody),
    )
)]
pub(super) async fn reach(
    State(state): State<AppState>,
    query: Result<Query<ReachQuery>, QueryRejection>,
) -> Result<Json<ReachJson>, ApiError> {
    let Query(query) = query?;
    let topic = query.topic.as_deref().map(Topic::parse).transpose()?;
    Ok(Json(state.hub.reach(topic.as_ref()).into()))
}
