//! A published message and what became of it at each subscriber.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use thiserror::Error;

/// Hub-wide message number, in publish order, starting at 1.
pub type MessageId = u64;

/// Who published a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Over HTTP, from this peer (unknown when the server ran without connect info).
    Http(Option<SocketAddr>),
    /// From the desktop console.
    Console,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Http(Some(peer)) => write!(f, "{peer}"),
            Source::Http(None) => f.write_str("http"),
            Source::Console => f.write_str("console"),
        }
    }
}

/// One accepted message: its bytes, shared by every delivery, and one delivery slot per
/// subscriber that was live when it was published.
#[derive(Debug)]
pub struct MessageRecord {
    pub id: MessageId,
    pub received_at: SystemTime,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub source: Source,
    /// Written by the delivery workers as outcomes arrive. A mutex per message rather than
    /// one for the whole log, so that workers for different messages never contend.
    deliveries: Mutex<Vec<Delivery>>,
}

impl MessageRecord {
    pub(crate) fn new(
        id: MessageId,
        body: Bytes,
        content_type: Option<String>,
        source: Source,
        deliveries: Vec<Delivery>,
    ) -> Self {
        Self {
            id,
            received_at: SystemTime::now(),
            content_type,
            body,
            source,
            deliveries: Mutex::new(deliveries),
        }
    }

    /// A copy of every delivery's current state.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().clone()
    }

    /// How many deliveries are delivered, failed and still pending.
    pub fn summary(&self) -> DeliverySummary {
        let mut summary = DeliverySummary::default();
        for delivery in self.deliveries.lock().iter() {
            match delivery.status {
                DeliveryStatus::Pending => summary.pending += 1,
                DeliveryStatus::Delivered { .. } => summary.delivered += 1,
                DeliveryStatus::Failed(_) => summary.failed += 1,
            }
        }
        summary
    }

    pub(crate) fn push_attempt(&self, slot: usize, attempt: Attempt) {
        if let Some(delivery) = self.deliveries.lock().get_mut(slot) {
            delivery.attempts.push(attempt);
        }
    }

    pub(crate) fn set_status(&self, slot: usize, status: DeliveryStatus) {
        if let Some(delivery) = self.deliveries.lock().get_mut(slot) {
            delivery.status = status;
        }
    }

    /// Adds a delivery (a resend) and returns its slot.
    pub(crate) fn add_delivery(&self, subscriber: Arc<str>) -> usize {
        let mut deliveries = self.deliveries.lock();
        deliveries.push(Delivery::pending(subscriber));
        deliveries.len() - 1
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySummary {
    pub delivered: usize,
    pub failed: usize,
    pub pending: usize,
}

/// One message's delivery to one subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub subscriber: Arc<str>,
    pub status: DeliveryStatus,
    /// Every HTTP request made for this delivery, oldest first.
    pub attempts: Vec<Attempt>,
}

impl Delivery {
    pub(crate) fn pending(subscriber: Arc<str>) -> Self {
        Self {
            subscriber,
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
        }
    }
}

/// One HTTP request of a delivery and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub at: SystemTime,
    /// `Delivered` or `Failed`, never `Pending`.
    pub status: DeliveryStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryStatus {
    /// Queued or in flight.
    Pending,
    /// The subscriber answered 2xx.
    Delivered { status: u16, latency: Duration },
    /// The hub gave up on this delivery, for this reason.
    Failed(DeliveryError),
}

impl DeliveryStatus {
    /// The HTTP status the subscriber answered with, if it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            DeliveryStatus::Delivered { status, .. }
            | DeliveryStatus::Failed(DeliveryError::Status { status, .. })
            | DeliveryStatus::Failed(DeliveryError::Redirect { status, .. }) => Some(*status),
            _ => None,
        }
    }

    /// How long the subscriber took to answer, for answers that were timed.
    pub fn latency(&self) -> Option<Duration> {
        match self {
            DeliveryStatus::Delivered { latency, .. }
            | DeliveryStatus::Failed(DeliveryError::Status { latency, .. }) => Some(*latency),
            _ => None,
        }
    }
}

/// Why a delivery did not succeed. Every variant is recorded; none is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeliveryError {
    #[error("answered HTTP {status} after {latency:?}")]
    Status { status: u16, latency: Duration },
    #[error("answered with a redirect (HTTP {status}) to {location:?}; redirects are not followed")]
    Redirect { status: u16, location: String },
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("refused by the target policy: {0}")]
    Blocked(String),
    #[error("dropped: the subscriber's queue was full ({capacity} messages waiting)")]
    QueueFull { capacity: usize },
    #[error("not delivered: the subscriber was {0} first")]
    Removed(RemovalReason),
}

/// Why a subscriber left the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    Deregistered,
    Expired,
    Kicked,
    /// The subscriber answered 410 Gone.
    Gone,
    Shutdown,
}

impl fmt::Display for RemovalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemovalReason::Deregistered => "deregistered",
            RemovalReason::Expired => "expired (no keep-alive)",
            RemovalReason::Kicked => "kicked",
            RemovalReason::Gone => "unsubscribed by answering 410 Gone",
            RemovalReason::Shutdown => "removed at shutdown",
        })
    }
}
