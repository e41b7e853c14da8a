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
/// subscriber that was live when it was published (plus one per resend).
#[derive(Debug)]
pub struct MessageRecord {
    pub id: MessageId,
    pub received_at: SystemTime,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub source: Source,
    /// Subscribers live when it was accepted: each gets a delivery when the hub's
    /// fan-out reaches the message, an instant after it was accepted.
    pub subscribers: usize,
    /// Written by the delivery workers as outcomes arrive. A mutex per message rather than
    /// one for the whole log, so that workers for different messages never contend.
    deliveries: Mutex<Deliveries>,
}

#[derive(Debug, Default)]
struct Deliveries {
    list: Vec<Delivery>,
    /// Whether the fan-out has added a delivery for each of `subscribers`.
    queued: bool,
    /// Out of the log: nothing can look the message up any more, so its records are
    /// dropped, and none are kept for deliveries still queued (they are still counted in
    /// the metrics and the subscribers' stats). A subscriber's queue can hold a message
    /// long after the log let it go, and its records are most of its memory.
    evicted: bool,
}

impl MessageRecord {
    pub(crate) fn new(
        id: MessageId,
        body: Bytes,
        content_type: Option<String>,
        source: Source,
        subscribers: usize,
    ) -> Self {
        Self {
            id,
            received_at: SystemTime::now(),
            content_type,
            body,
            source,
            subscribers,
            deliveries: Mutex::default(),
        }
    }

    /// A copy of every delivery's current state.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().list.clone()
    }

    /// How many deliveries are delivered, failed and still pending (counting those the
    /// fan-out has yet to queue).
    pub fn summary(&self) -> DeliverySummary {
        let mut summary = DeliverySummary::default();
        let deliveries = self.deliveries.lock();
        if !deliveries.queued {
            summary.pending += self.subscribers;
        }
        for delivery in &deliveries.list {
            match delivery.status {
                DeliveryStatus::Pending => summary.pending += 1,
                DeliveryStatus::Delivered { .. } => summary.delivered += 1,
                DeliveryStatus::Failed(_) => summary.failed += 1,
            }
        }
        summary
    }

    pub(crate) fn push_attempt(&self, slot: usize, attempt: Attempt) {
        if let Some(delivery) = self.deliveries.lock().list.get_mut(slot) {
            delivery.attempts.push(attempt);
        }
    }

    pub(crate) fn set_status(&self, slot: usize, status: DeliveryStatus) {
        if let Some(delivery) = self.deliveries.lock().list.get_mut(slot) {
            delivery.status = status;
        }
    }

    /// Adds a pending delivery to each of `subscribers` and returns the first one's slot;
    /// the rest follow in order. `fan_out` marks the deliveries made for `self.subscribers`.
    pub(crate) fn add_deliveries(
        &self,
        subscribers: impl ExactSizeIterator<Item = Arc<str>>,
        fan_out: bool,
    ) -> usize {
        let mut deliveries = self.deliveries.lock();
        let first = deliveries.list.len();
        deliveries.queued |= fan_out;
        if !deliveries.evicted {
            deliveries.list.reserve(subscribers.len());
            deliveries.list.extend(subscribers.map(Delivery::pending));
        }
        first
    }

    /// Drops the delivery records of a message the log no longer holds.
    pub(crate) fn evict(&self) {
        let records = {
            let mut deliveries = self.deliveries.lock();
            deliveries.evicted = true;
            std::mem::take(&mut deliveries.list)
        };
        // Freed without the lock, which workers finishing deliveries of it may want.
        drop(records);
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
