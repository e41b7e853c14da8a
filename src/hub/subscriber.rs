//! A registered subscriber: where it receives, when it was last seen, how delivery fares.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use url::Url;

use super::address::redact;
use super::backlog::state::Backlog;
use super::message::MessageRecord;
use super::outcome::Outcome;
pub use super::outcome::RemovalReason;
use super::secret::Secret;
use super::topic::Pattern;

/// The part of a subscriber that its delivery worker shares with the hub.
#[derive(Debug)]
pub(crate) struct SubscriberShared {
    /// The address exactly as registered: the hub's key for it. May hold a password.
    pub(crate) key: Arc<str>,
    /// The address as it is shown everywhere: the key with any password hidden.
    pub(crate) address: Arc<str>,
    /// Where its deliveries go. Shared, so that listing thousands of subscribers copies
    /// no strings.
    pub(crate) target: Arc<Url>,
    /// `target` as it is shown, with any password hidden.
    pub(crate) shown_target: Arc<str>,
    pub(crate) stats: SubscriberStats,
    /// Cancelled when the subscriber leaves the hub, so that its worker abandons even a
    /// request that is hanging, instead of holding the queue until a timeout.
    pub(crate) cancel: CancellationToken,
    /// Set once, just before `cancel`, so the worker can record why it stopped.
    pub(crate) removal: OnceLock<RemovalReason>,
    /// Per-subscriber signing secret; replaced when a registration brings a new one.
    secret: RwLock<Option<Secret>>,
    /// Set by the worker after repeated failures, cleared on success or re-registration.
    suspended: AtomicBool,
    /// Strict order: a delivery waiting for its retry holds back the later ones.
    ordered: AtomicBool,
    /// Deliveries it takes at once (without any order promise beyond one).
    max_in_flight: AtomicU32,
    /// Wakes a suspended worker to try again now: the subscriber re-registered.
    pub(crate) resume: Notify,
    /// Paused from the console or the API: its worker starts nothing new, and its queue
    /// fills until it is resumed (then, in memory, drops are recorded; with a durable
    /// store, the rest waits on disk).
    paused: AtomicBool,
    /// Wakes a paused worker when it is resumed.
    pub(crate) unpaused: Notify,
    /// The topics it asked for; none: every message. Changed only with the hub's routing,
    /// under the subscribers' lock, so the two agree.
    topics: RwLock<Arc<[Pattern]>>,
    /// Neither kept by a store nor told to a cluster ([`super::Subscription::ephemeral`]).
    pub(crate) ephemeral: bool,
    /// With a durable store: deliveries beyond the queue, waiting on disk (`backlog`).
    pub(crate) backlog: Backlog,
}

impl SubscriberShared {
    pub(crate) fn new(key: Arc<str>, target: Url, ephemeral: bool) -> Self {
        let address = match redact(&key) {
            Cow::Borrowed(_) => key.clone(),
            Cow::Owned(shown) => shown.into(),
        };
        let shown_target = redact(target.as_str()).into();
        Self {
            key,
            address,
            shown_target,
            target: Arc::new(target),
            stats: SubscriberStats::default(),
            cancel: CancellationToken::new(),
            removal: OnceLock::new(),
            secret: RwLock::new(None),
            suspended: AtomicBool::new(false),
            ordered: AtomicBool::new(false),
            max_in_flight: AtomicU32::new(1),
            resume: Notify::new(),
            paused: AtomicBool::new(false),
            unpaused: Notify::new(),
            topics: RwLock::new(Arc::new([])),
            ephemeral,
            backlog: Backlog::default(),
        }
    }

    pub(crate) fn topics(&self) -> Arc<[Pattern]> {
        self.topics.read().clone()
    }

    pub(super) fn set_topics(&self, topics: Arc<[Pattern]>) {
        *self.topics.write() = topics;
    }

    pub(crate) fn secret(&self) -> Option<Secret> {
        self.secret.read().clone()
    }

    pub(crate) fn set_secret(&self, secret: Secret) {
        *self.secret.write() = Some(secret);
    }

    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Relaxed)
    }

    /// Returns whether the state changed.
    pub(crate) fn set_suspended(&self, suspended: bool) -> bool {
        self.suspended.swap(suspended, Ordering::Relaxed) != suspended
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Returns whether the state changed; resuming wakes the worker.
    pub(crate) fn set_paused(&self, paused: bool) -> bool {
        let changed = self.paused.swap(paused, Ordering::Relaxed) != paused;
        if changed && !paused {
            self.unpaused.notify_one();
        }
        changed
    }

    pub(crate) fn is_ordered(&self) -> bool {
        self.ordered.load(Ordering::Relaxed)
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Relaxed) as usize
    }

    /// Applies what a registration asked for; what it left out stays as it was.
    pub(crate) fn set_options(&self, ordered: Option<bool>, max_in_flight: Option<u32>) {
        if let Some(ordered) = ordered {
            self.ordered.store(ordered, Ordering::Relaxed);
        }
        if let Some(most) = max_in_flight {
            self.max_in_flight.store(most.max(1), Ordering::Relaxed);
        }
    }

    pub(crate) fn removal(&self) -> Option<RemovalReason> {
        self.removal.get().copied()
    }

    pub(crate) fn remove(&self, reason: RemovalReason) {
        self.removal.set(reason).ok();
        self.cancel.cancel();
    }
}

const NONE: u64 = u64::MAX;

/// Delivery counters, updated by the worker without taking any hub lock.
#[derive(Debug)]
pub(crate) struct SubscriberStats {
    delivered: AtomicU64,
    failed: AtomicU64,
    last_status: AtomicU64,
    last_latency_us: AtomicU64,
}

impl Default for SubscriberStats {
    fn default() -> Self {
        Self {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_status: AtomicU64::new(NONE),
            last_latency_us: AtomicU64::new(NONE),
        }
    }
}

impl SubscriberStats {
    /// Counts a delivery that ended.
    pub(crate) fn record(&self, outcome: &Outcome) {
        let counter = if outcome.is_delivered() {
            &self.delivered
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.record_last(outcome);
    }

    /// Keeps the last attempt's answer, as soon as each attempt ends.
    pub(crate) fn record_last(&self, outcome: &Outcome) {
        self.last_status.store(
            outcome.http_status().map_or(NONE, u64::from),
            Ordering::Relaxed,
        );
        self.last_latency_us.store(
            outcome
                .latency()
                .map_or(NONE, |l| l.as_micros().min(u128::from(NONE - 1)) as u64),
            Ordering::Relaxed,
        );
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The HTTP status of the last finished delivery, if it got one.
    fn last_status(&self) -> Option<u16> {
        match self.last_status.load(Ordering::Relaxed) {
            NONE => None,
            status => u16::try_from(status).ok(),
        }
    }

    fn last_latency(&self) -> Option<Duration> {
        match self.last_latency_us.load(Ordering::Relaxed) {
            NONE => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// One queued delivery: the message, shared by every subscriber, and this subscriber's
/// slot in its delivery list.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) message: Arc<MessageRecord>,
    pub(crate) slot: usize,
    /// Holds shutdown's drain open until the job is dropped, wherever that happens (done,
    /// abandoned, or still queued when the channel goes).
    pub(crate) _outstanding: TaskTrackerToken,
}

/// What a delivery worker drains: a subscriber's bounded FIFO.
#[derive(Debug)]
pub(crate) struct Mailbox {
    pub(crate) subscriber: Arc<SubscriberShared>,
    pub(crate) jobs: mpsc::Receiver<Job>,
    /// The queue's bound, which also bounds what its worker may take from it and hold.
    pub(crate) capacity: usize,
}

/// The hub's own entry for a live subscriber.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) shared: Arc<SubscriberShared>,
    pub(crate) registered_at: SystemTime,
    pub(crate) last_seen: SystemTime,
    /// Monotonic twin of `last_seen`: expiry must not jump when the wall clock does.
    pub(crate) last_seen_at: Instant,
    /// This subscriber's own keep-alive period, instead of the hub's TTL.
    pub(crate) lease: Option<Duration>,
    pub(crate) queue: mpsc::Sender<Job>,
    /// Never expires: for a service that cannot send keep-alives.
    pub(crate) pinned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberState {
    Active,
    /// Repeated failures: deliveries wait while the subscriber is probed with backoff.
    Suspended,
}

/// A point-in-time copy of one subscriber, for listings.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberView {
    /// As registered, with any password hidden.
    pub address: Arc<str>,
    /// Where deliveries go, with any password hidden.
    pub target: Arc<str>,
    pub registered_at: SystemTime,
    pub last_seen: SystemTime,
    pub expires_at: SystemTime,
    /// The keep-alive period that applies to this subscriber.
    pub lease: Duration,
    pub state: SubscriberState,
    pub signed: bool,
    /// Whether a retrying delivery holds back the later ones.
    pub ordered: bool,
    /// Deliveries it takes at once.
    pub max_in_flight: usize,
    /// Held by the console or the API: nothing new is sent until it is resumed.
    pub paused: bool,
    /// Never expires.
    pub pinned: bool,
    /// The topics it receives; none: every message.
    pub topics: Arc<[Pattern]>,
    pub queue_depth: usize,
    /// Deliveries beyond the queue, waiting in a durable store to be read back.
    pub backlog: usize,
    pub delivered: u64,
    pub failed: u64,
    pub last_status: Option<u16>,
    pub last_latency: Option<Duration>,
}

impl Entry {
    /// Where it stands now, as a store keeps it.
    pub(crate) fn stored(&self) -> super::store::StoredSubscriber {
        let shared = &self.shared;
        super::store::StoredSubscriber {
            key: shared.key.clone(),
            topics: shared.topics(),
            lease: self.lease,
            ordered: shared.is_ordered(),
            max_in_flight: shared.max_in_flight() as u32,
            secret: shared.secret(),
            paused: shared.is_paused(),
            pinned: self.pinned,
            registered_at: self.registered_at,
            last_seen: self.last_seen,
        }
    }

    pub(crate) fn lease(&self, ttl: Duration) -> Duration {
        self.lease.unwrap_or(ttl)
    }

    pub(crate) fn view(&self, ttl: Duration) -> SubscriberView {
        let stats = &self.shared.stats;
        let lease = self.lease(ttl);
        SubscriberView {
            address: self.shared.address.clone(),
            target: self.shared.shown_target.clone(),
            registered_at: self.registered_at,
            last_seen: self.last_seen,
            expires_at: self.last_seen.checked_add(lease).unwrap_or(self.last_seen),
            lease,
            state: if self.shared.is_suspended() {
                SubscriberState::Suspended
            } else {
                SubscriberState::Active
            },
            signed: self.shared.secret.read().is_some(),
            ordered: self.shared.is_ordered(),
            max_in_flight: self.shared.max_in_flight(),
            paused: self.shared.is_paused(),
            pinned: self.pinned,
            topics: self.shared.topics(),
            queue_depth: self.queue.max_capacity() - self.queue.capacity(),
            backlog: self.shared.backlog.parked(),
            delivered: stats.delivered(),
            failed: stats.failed(),
            last_status: stats.last_status(),
            last_latency: stats.last_latency(),
        }
    }
}
