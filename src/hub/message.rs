//! A published message and what became of it at each subscriber.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;

use super::log::LogUsage;
use super::outcome::{DeliveryError, DeliveryState, Outcome};
use super::topic::Topic;
use crate::wire::TraceContext;

/// Hub-wide message number, in publish order, starting at 1.
pub type MessageId = u64;

/// Who published a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Over HTTP, from this peer (unknown when the server ran without connect info).
    Http(Option<SocketAddr>),
    /// From the desktop console.
    Console,
    /// Read back from an exported log: logged, never fanned out.
    Imported,
}

impl Source {
    /// Reads back what [`Source`]'s `Display` wrote (a store, an exported log).
    pub fn parse(text: &str) -> Self {
        match text {
            "console" => Source::Console,
            "imported" => Source::Imported,
            other => Source::Http(other.parse().ok()),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Http(Some(peer)) => write!(f, "{peer}"),
            Source::Http(None) => f.write_str("http"),
            Source::Console => f.write_str("console"),
            Source::Imported => f.write_str("imported"),
        }
    }
}

/// What a publish hands the hub: the payload and what travels with it to every delivery.
/// Built by the server from a request and by the console from its compose box.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub body: Bytes,
    pub content_type: Option<String>,
    /// Publisher headers passed on to every delivery (`--forward-header`): lowercase
    /// names, each value as it came, in the order they came.
    pub headers: Vec<(String, Bytes)>,
    /// The publisher's trace; without one, the message starts a new trace.
    pub trace: Option<TraceContext>,
    /// Without one, the message goes only to subscribers without topics.
    pub topic: Option<Topic>,
}

impl Draft {
    /// Just a payload: no content type, no forwarded headers, a new trace.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
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
    /// Passed on to every delivery, as in [`Draft::headers`].
    pub headers: Vec<(String, Bytes)>,
    /// Every delivery attempt carries a child of it.
    pub trace: TraceContext,
    pub topic: Option<Topic>,
    pub source: Source,
    /// The message this one replays, edited or not.
    pub replay_of: Option<MessageId>,
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
    /// What this message holds, as counted into its log's usage.
    held: Held,
    /// The usage of the log that holds it: none before it is logged or once it left.
    log: Option<Arc<LogUsage>>,
    /// The messages that replay it (under this lock, which guards what grows after it
    /// was logged).
    replays: Vec<MessageId>,
}

/// Delivery records and bytes, as the log's budgets count them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

/// What one delivery record costs, before its attempts.
const DELIVERY_BYTES: usize = std::mem::size_of::<Delivery>();

impl Deliveries {
    fn grow(&mut self, by: Held) {
        self.held.records += by.records;
        self.held.bytes += by.bytes;
        if let Some(log) = &self.log {
            log.add(by);
        }
    }
}

impl MessageRecord {
    /// A draft without a trace starts a new one here (callers under a lock fill it in
    /// first: that asks the OS for random bytes).
    pub(crate) fn new(id: MessageId, draft: Draft, source: Source, subscribers: usize) -> Self {
        let Draft {
            body,
            content_type,
            headers,
            trace,
            topic,
        } = draft;
        Self {
            id,
            received_at: SystemTime::now(),
            content_type,
            body,
            headers,
            trace: trace.unwrap_or_else(TraceContext::new_root),
            topic,
            source,
            replay_of: None,
            subscribers,
            deliveries: Mutex::default(),
        }
    }

    /// Links a message read back from a store to its original and its replays.
    pub(crate) fn linked(mut self, replay_of: Option<MessageId>, replays: Vec<MessageId>) -> Self {
        self.replay_of = replay_of;
        self.deliveries.get_mut().replays = replays;
        self
    }

    /// The messages that replay this one, oldest first.
    pub fn replays(&self) -> Vec<MessageId> {
        self.deliveries.lock().replays.clone()
    }

    pub(crate) fn add_replay(&self, id: MessageId) {
        self.deliveries.lock().replays.push(id);
    }

    /// A message read back from a store or an export, with the deliveries it had. Its
    /// publish round is over: every delivery it will get is in `deliveries`.
    pub(crate) fn restored(
        id: MessageId,
        received_at: SystemTime,
        draft: Draft,
        source: Source,
        deliveries: Vec<Delivery>,
    ) -> Self {
        let mut record = Self::new(id, draft, source, deliveries.len());
        record.received_at = received_at;
        let list = record.deliveries.get_mut();
        list.queued = true;
        list.held.bytes = deliveries
            .iter()
            .flat_map(|d| &d.attempts)
            .map(Attempt::stored_bytes)
            .sum();
        list.list = deliveries;
        record
    }

    /// The deliveries without an outcome: their slots, and who each is for.
    pub(crate) fn unfinished(&self) -> Vec<(usize, Arc<str>)> {
        let deliveries = self.deliveries.lock();
        let list = deliveries.list.iter().enumerate();
        list.filter(|(_, d)| d.state.outcome().is_none())
            .map(|(slot, d)| (slot, d.subscriber.clone()))
            .collect()
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
            if matches!(delivery.state, DeliveryState::Retrying { .. }) {
                summary.retrying += 1;
            }
            match delivery.state.outcome() {
                None => summary.pending += 1,
                Some(outcome) if outcome.is_delivered() => summary.delivered += 1,
                Some(_) => summary.failed += 1,
            }
        }
        summary
    }

    /// What it holds now, as the log's budgets count it.
    pub(crate) fn held(&self) -> Held {
        self.deliveries.lock().held
    }

    pub(crate) fn push_attempt(&self, slot: usize, attempt: Attempt) {
        let mut deliveries = self.deliveries.lock();
        let bytes = attempt.stored_bytes();
        if let Some(delivery) = deliveries.list.get_mut(slot) {
            delivery.attempts.push(attempt);
            deliveries.grow(Held { records: 0, bytes });
        }
    }

    pub(crate) fn set_outcome(&self, slot: usize, outcome: Outcome) {
        let mut deliveries = self.deliveries.lock();
        let bytes = outcome.error().map_or(0, DeliveryError::text_len);
        if let Some(delivery) = deliveries.list.get_mut(slot) {
            delivery.state = DeliveryState::Done(outcome);
            // The final outcome is a copy of the last attempt's, text and all.
            deliveries.grow(Held { records: 0, bytes });
        }
    }

    /// Where a delivery stands while it has no outcome: sending, or retrying when.
    pub(crate) fn set_state(&self, slot: usize, state: DeliveryState) {
        if let Some(delivery) = self.deliveries.lock().list.get_mut(slot) {
            delivery.state = state;
        }
    }

    /// Adds a pending delivery to each of `subscribers` and returns the first one's slot;
    /// the rest follow in order.
    pub(crate) fn add_deliveries(
        &self,
        subscribers: impl Iterator<Item = Arc<str>>,
        round: Round,
    ) -> usize {
        let mut deliveries = self.deliveries.lock();
        let first = deliveries.list.len();
        deliveries.queued |= round == Round::Publish;
        if !deliveries.evicted {
            deliveries.list.extend(subscribers.map(Delivery::pending));
            let added = deliveries.list.len() - first;
            // The publish round was counted when the message entered the log.
            if round == Round::Resend {
                deliveries.grow(Held {
                    records: added,
                    bytes: added * DELIVERY_BYTES,
                });
            }
        }
        first
    }

    /// Counts the message into `usage`, the log it enters, with a record for each of the
    /// subscribers its publish round will reach.
    pub(crate) fn enter_log(&self, usage: &Arc<LogUsage>) {
        let mut deliveries = self.deliveries.lock();
        deliveries.log = Some(usage.clone());
        // What a restored message brought with it (its attempts).
        usage.add(deliveries.held);
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| std::mem::size_of::<(String, Bytes)>() + name.len() + value.len())
            .sum();
        let own = std::mem::size_of::<Self>()
            + self.body.len()
            + self.content_type.as_ref().map_or(0, String::len)
            + headers
            + self.trace.heap_bytes()
            + self.topic.as_ref().map_or(0, |t| t.as_str().len());
        deliveries.grow(Held {
            records: self.subscribers,
            bytes: own + self.subscribers * DELIVERY_BYTES,
        });
    }

    /// Takes the message out of its log's usage: from now on, nothing it gains is kept.
    /// Its records are freed by [`MessageRecord::evict`], once no log lock is held.
    pub(crate) fn leave_log(&self) {
        let mut deliveries = self.deliveries.lock();
        deliveries.evicted = true;
        if let Some(log) = deliveries.log.take() {
            log.sub(deliveries.held);
        }
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
    /// Without an outcome yet: queued, in flight or retrying.
    pub pending: usize,
    /// Of the pending, those waiting for a retry.
    pub retrying: usize,
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
    /// When it started.
    pub at: SystemTime,
    pub outcome: Outcome,
    /// What was sent and what came back; none when nothing was sent (a refused target).
    pub exchange: Option<Arc<Exchange>>,
}

impl Attempt {
    /// What keeping it costs: itself, the text its outcome carries and its exchange.
    fn stored_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.outcome.error().map_or(0, DeliveryError::text_len)
            + self.exchange.as_deref().map_or(0, Exchange::stored_bytes)
    }
}

/// What one attempt sent and what came back, as the delivery inspector shows it.
/// Credentials are hidden: a password in the URL, `Authorization` values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exchange {
    pub method: &'static str,
    /// Shared with the subscriber: every attempt goes to the same place.
    pub url: Arc<str>,
    pub request_headers: Headers,
    /// What the subscriber answered, if it answered.
    pub response: Option<Answer>,
}

/// Header lines as kept by the inspector, in one string (one allocation an attempt,
/// not two a header: attempts are made thousands of times a second).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(String);

impl Headers {
    pub fn from_pairs<'a, V: AsRef<str>>(pairs: impl IntoIterator<Item = (&'a str, V)>) -> Self {
        let mut lines = String::with_capacity(256);
        for (name, value) in pairs {
            let value = value.as_ref();
            lines.push_str(name);
            lines.push_str(": ");
            // A line break cannot come from HTTP, but keep lines whole whatever comes.
            if value.contains(['\r', '\n']) {
                lines.extend(
                    value
                        .chars()
                        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
                );
            } else {
                lines.push_str(value);
            }
            lines.push('\n');
        }
        Self(lines)
    }

    /// Header lines as [`Headers::as_text`] gave them (read back from a store).
    pub fn from_text(lines: String) -> Self {
        Self(lines)
    }

    /// Every line, `name: value`, each ending in a line break.
    pub fn as_text(&self) -> &str {
        &self.0
    }

    /// Name and value pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.lines().filter_map(|line| line.split_once(": "))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A subscriber's answer to one attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Headers,
    /// The start of the body, at most [`MAX_KEPT_BODY`] bytes.
    pub body: Bytes,
    /// Whether the body went on past what was kept.
    pub truncated: bool,
}

/// The most of a subscriber's answer body an attempt keeps.
pub const MAX_KEPT_BODY: usize = 64 * 1024;

impl Exchange {
    fn stored_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.request_headers.len()
            + self
                .response
                .as_ref()
                .map_or(0, |answer| answer.headers.len() + answer.body.len())
    }
}

/// Why deliveries are being added to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// For the subscribers live when it was published.
    Publish,
    /// Sent again on request.
    Resend,
}
