//! The domain: subscribers, their keep-alive, the message log and what happened to each
//! delivery.
//!
//! Every operation is a plain, non-blocking method that takes a lock only long enough to
//! copy or change a few fields, so the HTTP server and the GUI thread call the same methods.
//! This module knows nothing of HTTP frameworks or GUIs: sending is done by whatever
//! [`Launch`] implementation the hub is built with (see `crate::delivery`).

mod address;
mod event;
mod log;
mod message;
mod metrics;
mod policy;
mod reaper;
mod secret;
mod subscriber;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc};

pub use address::{AddressError, MAX_ADDRESS_LEN, parse_target};
pub use event::{Activity, HubEvent};
pub use message::{
    Attempt, Delivery, DeliveryError, DeliveryStatus, DeliverySummary, MessageId, MessageRecord,
    RemovalReason, Source,
};
pub use metrics::{LATENCY_BUCKETS, MetricsSnapshot, OUTCOMES};
pub use policy::{TargetPolicy, TargetRefused};
pub use secret::{Secret, SecretError};
pub use subscriber::{
    Job, Mailbox, SubscriberShared, SubscriberState, SubscriberStats, SubscriberView,
};

pub use reaper::reap_expired;

use log::MessageLog;
use metrics::Metrics;
use subscriber::{Entry, Outstanding};

/// Starts the worker that drains a new subscriber's queue. Implemented by the delivery
/// module; tests may supply their own.
pub trait Launch: Send + Sync + 'static {
    fn launch(&self, hub: Hub, mailbox: Mailbox);
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// A subscriber not refreshed for this long is removed by the reaper.
    pub ttl: Duration,
    /// How often the reaper looks for expired subscribers.
    pub reap_every: Duration,
    /// Deliveries waiting per subscriber before new ones are dropped (and recorded).
    pub queue_capacity: usize,
    /// Messages kept in the log.
    pub log_capacity: usize,
    /// Live subscribers at most; registering one more is refused.
    pub max_subscribers: usize,
    /// Which addresses deliveries may go to.
    pub policy: TargetPolicy,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(120),
            reap_every: Duration::from_secs(60),
            queue_capacity: 1024,
            log_capacity: 10_000,
            max_subscribers: 10_000,
            policy: TargetPolicy::default(),
        }
    }
}

/// Shortest and longest per-subscriber lease accepted; others are clamped into this range.
pub const LEASE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 60 * 60));

/// What a subscriber asks for when it registers or refreshes.
#[derive(Debug, Clone)]
pub struct Subscription<'a> {
    pub address: &'a str,
    /// Signs its deliveries with this secret instead of the hub's.
    pub secret: Option<Secret>,
    /// Its own keep-alive period instead of the hub's TTL (clamped to [`LEASE_RANGE`]).
    pub lease: Option<Duration>,
}

impl<'a> Subscription<'a> {
    pub fn new(address: &'a str) -> Self {
        Self {
            address,
            secret: None,
            lease: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegisterError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("refused: {0}")]
    Target(#[from] TargetRefused),
    #[error(
        "the hub already has {max} subscribers, its limit; deregister some or raise --max-subscribers"
    )]
    Full { max: usize },
    #[error("the hub is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResendError {
    #[error("message {0} is not in the log (it may have been evicted or cleared)")]
    UnknownMessage(MessageId),
    #[error("{0:?} is not a live subscriber")]
    UnknownSubscriber(String),
    #[error("the hub is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Registered,
    Refreshed,
}

/// What `publish` did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub id: MessageId,
    /// Subscribers the message was queued for (those with a full queue are not counted).
    pub queued: usize,
    pub dropped: usize,
}

/// Hub-wide delivery counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// The hub. Cheap to clone: every clone is a handle to the same state.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    config: HubConfig,
    /// `config.ttl` and `config.reap_every` as they are now, in milliseconds: the console
    /// changes them live.
    ttl_ms: AtomicU64,
    reap_every_ms: AtomicU64,
    /// `config.policy`, plus this hub's own address once it listens.
    policy: RwLock<TargetPolicy>,
    /// Keyed by the address exactly as registered, as the seed did. Ordered so that
    /// listings are stable. Lock order: `subscribers` before `log`.
    subscribers: RwLock<BTreeMap<Arc<str>, Entry>>,
    log: Mutex<MessageLog>,
    /// Subscribers coming and going, newest last, bounded like the message log.
    activity: Mutex<VecDeque<Activity>>,
    next_id: AtomicU64,
    /// Bumped on every event: readers that poll (the console) redraw only on change.
    version: AtomicU64,
    /// Jobs queued or in flight, across all subscribers (see `subscriber::Outstanding`).
    outstanding: Arc<AtomicU64>,
    messages: AtomicU64,
    metrics: Metrics,
    /// Fan-out of hub events to live followers. Lagging receivers lose the oldest events
    /// (and are told so by `broadcast`), so a slow follower never slows the hub.
    events: broadcast::Sender<HubEvent>,
    launcher: Arc<dyn Launch>,
    /// Random per process: names this hub in delivery headers, so that ids differ across
    /// restarts and a delivery that loops back to the hub is recognised.
    instance: String,
    /// Cancelled at shutdown: no new subscribers, no new messages, live followers end.
    closing: tokio_util::sync::CancellationToken,
}

const ACTIVITY_CAPACITY: usize = 1_000;
const EVENT_BUFFER: usize = 4_096;

impl Hub {
    pub fn new(config: HubConfig, launcher: Arc<dyn Launch>) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            shared: Arc::new(Shared {
                log: Mutex::new(MessageLog::new(config.log_capacity)),
                ttl_ms: AtomicU64::new(millis(config.ttl)),
                reap_every_ms: AtomicU64::new(millis(config.reap_every)),
                policy: RwLock::new(config.policy.clone()),
                config,
                subscribers: RwLock::new(BTreeMap::new()),
                activity: Mutex::new(VecDeque::new()),
                next_id: AtomicU64::new(1),
                version: AtomicU64::new(0),
                outstanding: Arc::default(),
                messages: AtomicU64::new(0),
                metrics: Metrics::default(),
                events,
                launcher,
                instance: new_instance_id(),
                closing: Default::default(),
            }),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// The keep-alive period for subscribers without a lease of their own.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.shared.ttl_ms.load(Ordering::Relaxed))
    }

    pub fn set_ttl(&self, ttl: Duration) {
        self.shared
            .ttl_ms
            .store(millis(ttl).max(1), Ordering::Relaxed);
    }

    pub fn reap_every(&self) -> Duration {
        Duration::from_millis(self.shared.reap_every_ms.load(Ordering::Relaxed))
    }

    pub fn set_reap_every(&self, every: Duration) {
        self.shared
            .reap_every_ms
            .store(millis(every).max(1), Ordering::Relaxed);
    }

    /// Where this hub listens, so that no subscriber address can point back at it.
    pub fn set_own_addr(&self, addr: Option<SocketAddr>) {
        self.shared.policy.write().own_addr = addr;
    }

    /// This hub's random instance id (hex).
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Registers `address`, or refreshes its keep-alive if it is already registered.
    pub fn register(&self, address: &str) -> Result<Registration, RegisterError> {
        self.subscribe(Subscription::new(address))
    }

    /// Registers a subscriber, or refreshes it: its keep-alive, and its secret and lease
    /// when given. Refreshing a suspended subscriber resumes it at once.
    pub fn subscribe(&self, request: Subscription<'_>) -> Result<Registration, RegisterError> {
        let Subscription {
            address,
            secret,
            lease,
        } = request;
        let target = parse_target(address)?;
        self.shared.policy.read().check_url(&target)?;
        if self.is_closed() {
            return Err(RegisterError::ShuttingDown);
        }
        let lease = lease.map(|l| l.clamp(LEASE_RANGE.0, LEASE_RANGE.1));
        let now = SystemTime::now();
        let mut subscribers = self.shared.subscribers.write();
        if let Some(entry) = subscribers.get_mut(address) {
            entry.last_seen = now;
            entry.last_seen_at = Instant::now();
            if lease.is_some() {
                entry.lease = lease;
            }
            let shared = entry.shared.clone();
            drop(subscribers);
            if let Some(secret) = secret {
                shared.set_secret(secret);
            }
            self.emit(HubEvent::Refreshed {
                address: shared.address.clone(),
            });
            if shared.is_suspended() {
                self.set_suspended(&shared, false);
                shared.resume.notify_one();
            }
            return Ok(Registration::Refreshed);
        }
        let max = self.shared.config.max_subscribers;
        if subscribers.len() >= max {
            return Err(RegisterError::Full { max });
        }
        let address: Arc<str> = address.into();
        let shared = Arc::new(SubscriberShared::new(address.clone(), target));
        if let Some(secret) = secret {
            shared.set_secret(secret);
        }
        let (queue, jobs) = mpsc::channel(self.shared.config.queue_capacity.max(1));
        subscribers.insert(
            address.clone(),
            Entry {
                shared: shared.clone(),
                registered_at: now,
                last_seen: now,
                last_seen_at: Instant::now(),
                lease,
                queue,
            },
        );
        drop(subscribers);
        tracing::info!(%address, "subscriber registered");
        self.shared.launcher.launch(
            self.clone(),
            Mailbox {
                subscriber: shared,
                jobs,
            },
        );
        self.record_activity(HubEvent::Registered { address });
        Ok(Registration::Registered)
    }

    /// Removes a subscriber at once: its queued and in-flight deliveries are abandoned and
    /// recorded as failed with `reason`. Returns whether it was registered.
    pub fn remove(&self, address: &str, reason: RemovalReason) -> bool {
        let entry = self.shared.subscribers.write().remove(address);
        match entry {
            Some(entry) => {
                self.retire(entry, reason);
                true
            }
            None => false,
        }
    }

    /// Removes every subscriber whose last keep-alive is older than the TTL at `now`.
    pub fn expire(&self, now: Instant) -> Vec<Arc<str>> {
        let ttl = self.ttl();
        let expired: Vec<Entry> = {
            let mut subscribers = self.shared.subscribers.write();
            let stale: Vec<Arc<str>> = subscribers
                .iter()
                .filter(|(_, e)| now.saturating_duration_since(e.last_seen_at) > e.lease(ttl))
                .map(|(address, _)| address.clone())
                .collect();
            stale
                .iter()
                .filter_map(|address| subscribers.remove(address))
                .collect()
        };
        expired
            .into_iter()
            .map(|entry| {
                let address = entry.shared.address.clone();
                self.retire(entry, RemovalReason::Expired);
                address
            })
            .collect()
    }

    /// Stops taking subscribers and messages; what is queued is still delivered.
    pub fn stop_intake(&self) {
        self.shared.closing.cancel();
    }

    /// Cancelled when the hub starts shutting down.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.shared.closing.clone()
    }

    /// Whether no delivery is queued or in flight.
    pub fn is_drained(&self) -> bool {
        self.shared.outstanding.load(Ordering::Acquire) == 0
    }

    /// Stops taking subscribers and messages, and removes every subscriber, which cancels
    /// their deliveries.
    pub fn close(&self) {
        self.stop_intake();
        let all = std::mem::take(&mut *self.shared.subscribers.write());
        for entry in all.into_values() {
            self.retire(entry, RemovalReason::Shutdown);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closing.is_cancelled()
    }

    fn retire(&self, entry: Entry, reason: RemovalReason) {
        let address = entry.shared.address.clone();
        tracing::info!(%address, %reason, "subscriber removed");
        entry.shared.remove(reason);
        self.record_activity(HubEvent::Removed { address, reason });
    }

    /// Queues `body` for every live subscriber and logs it. Never waits on delivery: a
    /// subscriber whose queue is full gets this delivery recorded as dropped instead.
    pub fn publish(
        &self,
        body: Bytes,
        content_type: Option<String>,
        source: Source,
    ) -> Option<Published> {
        if self.is_closed() {
            return None;
        }
        let subscribers = self.shared.subscribers.read();
        let deliveries = subscribers
            .values()
            .map(|entry| Delivery::pending(entry.shared.address.clone()))
            .collect();
        let record = {
            // Allocating the id under the log lock keeps the log in id order.
            let mut log = self.shared.log.lock();
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            let record = Arc::new(MessageRecord::new(
                id,
                body,
                content_type,
                source,
                deliveries,
            ));
            log.push(record.clone());
            record
        };
        self.shared.messages.fetch_add(1, Ordering::Relaxed);
        let mut dropped = Vec::new();
        for (slot, entry) in subscribers.values().enumerate() {
            if let Err(error) = self.enqueue(entry, &record, slot) {
                dropped.push((slot, entry.shared.clone(), error));
            }
        }
        let queued = subscribers.len() - dropped.len();
        drop(subscribers);
        let published = Published {
            id: record.id,
            queued,
            dropped: dropped.len(),
        };
        self.emit(HubEvent::Published {
            id: record.id,
            queued,
        });
        for (slot, subscriber, error) in dropped {
            self.finish(&record, slot, &subscriber, DeliveryStatus::Failed(error));
        }
        Some(published)
    }

    /// Delivers a logged message again, to every live subscriber or to one. The resends
    /// are added to the message's deliveries; returns how many were queued.
    pub fn resend(&self, id: MessageId, to: Option<&str>) -> Result<usize, ResendError> {
        if self.is_closed() {
            return Err(ResendError::ShuttingDown);
        }
        let record = self.message(id).ok_or(ResendError::UnknownMessage(id))?;
        let subscribers = self.shared.subscribers.read();
        let targets: Vec<&Entry> = match to {
            Some(address) => vec![
                subscribers
                    .get(address)
                    .ok_or_else(|| ResendError::UnknownSubscriber(address.to_owned()))?,
            ],
            None => subscribers.values().collect(),
        };
        let mut dropped = Vec::new();
        for entry in &targets {
            let slot = record.add_delivery(entry.shared.address.clone());
            if let Err(error) = self.enqueue(entry, &record, slot) {
                dropped.push((slot, entry.shared.clone(), error));
            }
        }
        let queued = targets.len() - dropped.len();
        drop(subscribers);
        for (slot, subscriber, error) in dropped {
            self.finish(&record, slot, &subscriber, DeliveryStatus::Failed(error));
        }
        Ok(queued)
    }

    /// Marks a subscriber suspended or active, recording the change. Called by its worker
    /// (and by re-registration, which resumes).
    pub fn set_suspended(&self, subscriber: &SubscriberShared, suspended: bool) {
        if !subscriber.set_suspended(suspended) {
            return;
        }
        let address = subscriber.address.clone();
        if suspended {
            tracing::warn!(%address, "subscriber suspended after repeated failures");
            self.record_activity(HubEvent::Suspended { address });
        } else {
            tracing::info!(%address, "subscriber resumed");
            self.record_activity(HubEvent::Resumed { address });
        }
    }

    /// Records the final outcome of one delivery. Called by delivery workers.
    pub fn finish(
        &self,
        message: &MessageRecord,
        slot: usize,
        subscriber: &SubscriberShared,
        status: DeliveryStatus,
    ) {
        let ok = matches!(status, DeliveryStatus::Delivered { .. });
        if let DeliveryStatus::Failed(error) = &status {
            tracing::debug!(id = message.id, address = %subscriber.address, %error, "delivery failed");
        }
        subscriber
            .stats
            .record(ok, status.http_status(), status.latency());
        self.shared.metrics.record(&status);
        message.set_status(slot, status.clone());
        self.emit(HubEvent::Delivery {
            id: message.id,
            address: subscriber.address.clone(),
            status,
        });
    }

    /// Every live subscriber, ordered by address.
    pub fn subscribers(&self) -> Vec<SubscriberView> {
        let ttl = self.ttl();
        self.shared
            .subscribers
            .read()
            .values()
            .map(|entry| entry.view(ttl))
            .collect()
    }

    /// One live subscriber.
    pub fn subscriber(&self, address: &str) -> Option<SubscriberView> {
        let ttl = self.ttl();
        self.shared
            .subscribers
            .read()
            .get(address)
            .map(|entry| entry.view(ttl))
    }

    /// Delivery outcome counts and the latency histogram.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    pub fn subscriber_count(&self) -> usize {
        self.shared.subscribers.read().len()
    }

    /// Up to `limit` logged messages published before message `before`, newest first.
    pub fn messages(&self, before: Option<MessageId>, limit: usize) -> Vec<Arc<MessageRecord>> {
        self.shared.log.lock().page(before, limit)
    }

    /// The `index`-th newest logged message (0 is the newest): for views that show a
    /// window of the log without copying all of it.
    pub fn nth_newest_message(&self, index: usize) -> Option<Arc<MessageRecord>> {
        self.shared.log.lock().nth_newest(index)
    }

    pub fn message(&self, id: MessageId) -> Option<Arc<MessageRecord>> {
        self.shared.log.lock().get(id)
    }

    pub fn logged_messages(&self) -> usize {
        self.shared.log.lock().len()
    }

    pub fn clear_log(&self) {
        self.shared.log.lock().clear();
        self.shared.version.fetch_add(1, Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            messages: self.shared.messages.load(Ordering::Relaxed),
            delivered: self.shared.metrics.delivered(),
            failed: self.shared.metrics.failed(),
        }
    }

    /// Subscribers registered and removed, oldest first.
    pub fn activity(&self) -> Vec<Activity> {
        self.shared.activity.lock().iter().cloned().collect()
    }

    /// Follows hub events live from now on.
    pub fn events(&self) -> broadcast::Receiver<HubEvent> {
        self.shared.events.subscribe()
    }

    /// Queues one delivery without waiting; a full or closed queue becomes the reason it
    /// failed.
    fn enqueue(
        &self,
        entry: &Entry,
        message: &Arc<MessageRecord>,
        slot: usize,
    ) -> Result<(), DeliveryError> {
        let job = Job {
            message: message.clone(),
            slot,
            _outstanding: Outstanding::new(&self.shared.outstanding),
        };
        entry.queue.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => DeliveryError::QueueFull {
                capacity: entry.queue.max_capacity(),
            },
            // The worker is gone: the subscriber is being removed right now.
            mpsc::error::TrySendError::Closed(_) => {
                DeliveryError::Removed(entry.shared.removal().unwrap_or(RemovalReason::Shutdown))
            }
        })
    }

    fn record_activity(&self, event: HubEvent) {
        {
            let mut activity = self.shared.activity.lock();
            if activity.len() == ACTIVITY_CAPACITY {
                activity.pop_front();
            }
            activity.push_back(Activity {
                at: SystemTime::now(),
                event: event.clone(),
            });
        }
        self.emit(event);
    }

    /// Changes whenever anything in the hub changes.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Relaxed)
    }

    fn emit(&self, event: HubEvent) {
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        // No receiver is the common case in headless mode; that is not an error.
        self.shared.events.send(event).ok();
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn new_instance_id() -> String {
    // Uniqueness across restarts is all that matters here; if the OS has no randomness
    // to give, the clock still differs from one start to the next.
    let random = getrandom::u64().unwrap_or_else(|_| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    format!("{random:016x}")
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscriber_count())
            .field("totals", &self.totals())
            .finish_non_exhaustive()
    }
}
