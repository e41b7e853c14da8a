//! A published message and what became of it at each subscriber.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;

use super::outcome::{DeliveryState, Outcome};

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
            match delivery.state.outcome() {
                None => summary.pending += 1,
                Some(outcome) if outcome.is_delivered() => summary.delivered += 1,
                Some(_) => summary.failed += 1,
            }
        }
        summary
    }

    pub(crate) fn push_attempt(&self, slot: usize, attempt: Attempt) {
        if let Some(delivery) = self.deliveries.lock().list.get_mut(slot) {
            delivery.attempts.push(attempt);
        }
    }

    pub(crate) fn set_outcome(&self, slot: usize, outcome: Outcome) {
        if let Some(delivery) = self.deliveries.lock().list.get_mut(slot) {
            delivery.state = DeliveryState::Done(outcome);
        }
    }

    /// Adds a pending delivery to each of `subscribers` and returns the first one's slot;
    /// the rest follow in order.
    pub(crate) fn add_deliveries(
        &self,
        subscribers: impl ExactSizeIterator<Item = Arc<str>>,
        round: Round,
    ) -> usize {
        let mut deliveries = self.deliveries.lock();
        let first = deliveries.list.len();
        deliveries.queued |= round == Round::Publish;
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

    /// A copy of at most `limit` deliveries from slot `from` on, and how many there are:
    /// a message resent many times has more than one answer should carry.
    pub fn deliveries_page(&self, from: usize, limit: usize) -> (Vec<Delivery>, usize) {
        let deliveries = self.deliveries.lock();
        let page = deliveries.list.get(from..).unwrap_or_default();
        (
            page.iter().take(limit).cloned().collect(),
            deliveries.list.len(),
        )
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
    pub state: DeliveryState,
    /// Every HTTP request made for this delivery, oldest first.
    pub attempts: Vec<Attempt>,
}

impl Delivery {
    pub(crate) fn pending(subscriber: Arc<str>) -> Self {
        Self {
            subscriber,
            state: DeliveryState::Pending,
            attempts: Vec::new(),
        }
    }
}

/// One HTTP request of a delivery and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub at: SystemTime,
    pub outcome: Outcome,
}

/// Why deliveries are being added to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// For the subscribers live when it was published.
    Publish,
    /// Sent again on request.
    Resend,
}
