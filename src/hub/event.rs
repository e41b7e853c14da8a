//! What happened in the hub, for anyone following it live (console, event stream, logs).

use std::sync::Arc;
use std::time::SystemTime;

use super::message::MessageId;
use super::outcome::Outcome;
use super::subscriber::RemovalReason;
use super::topic::Topic;

#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    Registered {
        address: Arc<str>,
    },
    Refreshed {
        address: Arc<str>,
    },
    Removed {
        address: Arc<str>,
        reason: RemovalReason,
    },
    /// Repeated failures: deliveries to it wait while it is probed.
    Suspended {
        address: Arc<str>,
    },
    Resumed {
        address: Arc<str>,
    },
    /// Accepted, for this many live subscribers.
    Published {
        id: MessageId,
        subscribers: usize,
        topic: Option<Topic>,
    },
    /// A delivery reached its outcome.
    Delivery {
        id: MessageId,
        address: Arc<str>,
        topic: Option<Topic>,
        outcome: Outcome,
    },
}

/// A hub event worth keeping in the activity log: subscribers coming and going.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub at: SystemTime,
    pub event: HubEvent,
}
