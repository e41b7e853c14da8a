//! `/api/v1/events`: the hub's events as Server-Sent Events, for terminals and tests that
//! follow it live.
//!
//! Each reader gets its own bounded buffer (the hub's broadcast channel). A reader that
//! falls behind loses the oldest events and is told how many with a `lagged` event; the
//! hub never waits for it.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use super::{millis, time};
use crate::hub::HubEvent;
use crate::server::AppState;

/// One hub event. The SSE `event:` field carries `type`; `data:` carries this JSON.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventJson {
    Registered {
        at: String,
        address: String,
    },
    Refreshed {
        at: String,
        address: String,
    },
    /// Deregistered, expired, kicked, unsubscribed by 410, or removed at shutdown.
    Removed {
        at: String,
        address: String,
        reason: String,
    },
    Suspended {
        at: String,
        address: String,
    },
    Resumed {
        at: String,
        address: String,
    },
    Published {
        at: String,
        id: u64,
        /// Live subscribers its topic reached when it was accepted.
        subscribers: u64,
        /// Absent for a message without a topic.
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// A delivery reached its outcome.
    Delivery {
        at: String,
        id: u64,
        address: String,
        /// The message's topic; absent without one.
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// "delivered" or "failed".
        outcome: String,
        http_status: Option<u16>,
        latency_ms: Option<f64>,
        error: Option<String>,
    },
    /// This reader fell behind and missed `missed` events.
    Lagged {
        at: String,
        missed: u64,
    },
}

impl EventJson {
    fn name(&self) -> &'static str {
        match self {
            EventJson::Registered { .. } => "registered",
            EventJson::Refreshed { .. } => "refreshed",
            EventJson::Removed { .. } => "removed",
            EventJson::Suspended { .. } => "suspended",
            EventJson::Resumed { .. } => "resumed",
            EventJson::Published { .. } => "published",
            EventJson::Delivery { .. } => "delivery",
            EventJson::Lagged { .. } => "lagged",
        }
    }

    fn from_hub(event: HubEvent) -> Self {
        let at = time(SystemTime::now());
        match event {
            HubEvent::Registered { address } => Self::Registered {
                at,
                address: address.to_string(),
            },
            HubEvent::Refreshed { address } => Self::Refreshed {
                at,
                address: address.to_string(),
            },
            HubEvent::Removed { address, reason } => Self::Removed {
                at,
                address: address.to_string(),
                reason: reason.to_string(),
            },
            HubEvent::Suspended { address } => Self::Suspended {
                at,
                address: address.to_string(),
            },
            HubEvent::Resumed { address } => Self::Resumed {
                at,
                address: address.to_string(),
            },
            HubEvent::Published {
                id,
                subscribers,
                topic,
            } => Self::Published {
                at,
                id,
                subscribers: subscribers as u64,
                topic: topic.map(|t| t.to_string()),
            },
            HubEvent::Delivery {
                id,
                address,
                topic,
                outcome,
            } => Self::Delivery {
                at,
                id,
                address: address.to_string(),
                topic: topic.map(|t| t.to_string()),
                outcome: outcome.label().to_owned(),
                http_status: outcome.http_status(),
                latency_ms: outcome.latency().map(millis),
                error: outcome.error().map(ToString::to_string),
            },
        }
    }

    fn into_sse(self) -> Event {
        Event::default()
            .event(self.name())
            .json_data(&self)
            .unwrap_or_else(|_| Event::default().event("error"))
    }
}

/// Follows the hub live: subscribers coming and going, publishes, delivery results.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    operation_id = "followEvents",
    tag = "events",
    responses((status = OK, description = "An endless text/event-stream; each event's data is one of these",
        content_type = "text/event-stream", body = EventJson))
)]
pub(super) async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.hub.events();
    // Ends with the hub, so that shutdown does not wait on readers.
    let stopping = state.hub.stopping();
    let events = futures_util::stream::unfold(
        (receiver, stopping),
        |(mut receiver, stopping)| async move {
            let received = tokio::select! {
                () = stopping.cancelled() => return None,
                received = receiver.recv() => received,
            };
            let event = match received {
                Ok(event) => EventJson::from_hub(event),
                Err(RecvError::Lagged(missed)) => EventJson::Lagged {
                    at: time(SystemTime::now()),
                    missed,
                },
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event.into_sse()), (receiver, stopping)))
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
