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
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
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

/// Runs the hub's background work on some runtime. Implemented by the delivery module.
pub trait Launch: Send + Sync + 'static {
    /// Starts the worker that drains a new subscriber's queue.
    fn launch(&self, hub: Hub, mailbox: Mailbox);
    /// Runs one of the hub's own tasks (the fan-out) until it ends.
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>);
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
pub enum PublishError {
    #[error("the hub is shutting down; nothing was published")]
    ShuttingDown,
    #[error(
        "the hub is still queueing {0} earlier messages for their subscribers; nothing was published, try again shortly"
    )]
    Backlog(usize),
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

/// A message `publish` accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub id: MessageId,
    /// Live subscribers when it was accepted; each gets a delivery (or, if its queue is
    /// full, a delivery recorded as dropped).
    pub subscribers: usize,
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
    /// listings are stable. Lock order: `subscribers`, then `targets`, then `log`.
    subscribers: RwLock<BTreeMap<Arc<str>, Entry>>,
    /// Where a publish goes: the live subscribers' queues, in registration order, kept in
    /// step with `subscribers`. A publish takes an `Arc` of it, however many subscribers
    /// there are; a change copies it only while a publish still holds the old one.
    targets: Mutex<Arc<Vec<Target>>>,
    /// Accepted messages on their way to the fan-out task, in id order.
    fan_out: mpsc::Sender<FanOut>,
    /// Messages sent to the fan-out task and not yet queued for their subscribers. While
    /// there are any, a publish must go the same way, behind them, to keep the order.
    fanning_out: AtomicUsize,
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
/// Accepted messages waiting for the fan-out; beyond this, publishing waits (over HTTP)
/// or is refused (from the console). The per-subscriber queues bound memory the same way.
const FAN_OUT_BACKLOG: usize = 1_024;
/// Up to this many subscribers, the publishing thread queues a message itself: that
/// costs it microseconds, and saves a hop through the fan-out task, which at thousands
/// of messages a second costs more than the queueing. (Through the fan-out, K=100 at
/// 2,000 deliveries/s had p50 3.5 ms instead of 2.8-3.1, and K=1 at full rate delivered
/// half as much.)
const INLINE_FAN_OUT: usize = 256;

/// One live subscriber as a publish sees it: whom to record and where to queue.
#[derive(Debug, Clone)]
struct Target {
    subscriber: Arc<SubscriberShared>,
    queue: mpsc::Sender<Job>,
}

impl Target {
    fn of(entry: &Entry) -> Self {
        Self {
            subscriber: entry.shared.clone(),
            queue: entry.queue.clone(),
        }
    }
}

/// An accepted message and the subscribers that were live when it was accepted.
struct FanOut {
    message: Arc<MessageRecord>,
    targets: Arc<Vec<Target>>,
    /// Messages its arrival pushed out of the log, whose records the fan-out frees,
    /// sparing the accepting thread.
    evicted: Vec<Arc<MessageRecord>>,
    /// Shutdown waits for the fan-out as it does for deliveries.
    _outstanding: Outstanding,
}

impl Hub {
    pub fn new(config: HubConfig, launcher: Arc<dyn Launch>) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (fan_out, backlog) = mpsc::channel(FAN_OUT_BACKLOG);
        let hub = Self {
            shared: Arc::new(Shared {
                log: Mutex::new(MessageLog::new(config.log_capacity, log::DELIVERY_BUDGET)),
                ttl_ms: AtomicU64::new(millis(config.ttl)),
                reap_every_ms: AtomicU64::new(millis(config.reap_every)),
                policy: RwLock::new(config.policy.clone()),
                config,
                subscribers: RwLock::new(BTreeMap::new()),
                targets: Mutex::default(),
                fan_out,
                fanning_out: AtomicUsize::new(0),
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
        };
        // A weak handle, so that the task does not keep the hub alive: it ends when the
        // last handle goes, taking the channel's sender with it.
        let task = fan_out_loop(Arc::downgrade(&hub.shared), backlog);
        hub.shared.launcher.spawn(Box::pin(task));
        hub
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
        Arc::make_mut(&mut self.shared.targets.lock()).push(Target {
            subscriber: shared.clone(),
            queue: queue.clone(),
        });
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
        let entry = {
            let mut subscribers = self.shared.subscribers.write();
            let entry = subscribers.remove(address);
            if let Some(entry) = &entry {
                self.drop_targets(|t| Arc::ptr_eq(&t.subscriber, &entry.shared));
            }
            entry
        };
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
            let expired: Vec<Entry> = stale
                .iter()
                .filter_map(|address| subscribers.remove(address))
                .collect();
            if !expired.is_empty() {
                self.drop_targets(|t| !subscribers.contains_key(&t.subscriber.address));
            }
            expired
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
        let all = {
            let mut subscribers = self.shared.subscribers.write();
            *self.shared.targets.lock() = Arc::default();
            std::mem::take(&mut *subscribers)
        };
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

    /// Logs `body` and queues it for every subscriber live now. With many subscribers
    /// the queueing is handed to the fan-out task, to be done an instant later off the
    /// caller's thread, so that accepting costs the same with ten subscribers or ten
    /// thousand. A subscriber whose queue is full gets this delivery recorded as dropped.
    /// Refused while the fan-out is a full backlog behind; [`Hub::publish_when_ready`]
    /// waits instead.
    pub fn publish(
        &self,
        body: Bytes,
        content_type: Option<String>,
        source: Source,
    ) -> Result<Published, PublishError> {
        let room = self.shared.fan_out.try_reserve().ok();
        self.accept(room, body, content_type, source)
    }

    /// Like [`Hub::publish`], but waits for the fan-out to have room instead of refusing.
    pub async fn publish_when_ready(
        &self,
        body: Bytes,
        content_type: Option<String>,
        source: Source,
    ) -> Result<Published, PublishError> {
        // Not worth waiting for room in a hub that is going away.
        if self.is_closed() {
            return Err(PublishError::ShuttingDown);
        }
        let room = self.shared.fan_out.reserve().await.ok();
        self.accept(room, body, content_type, source)
    }

    /// Logs the message and queues it, here or through the fan-out task (`room` is a
    /// place in its backlog, if one could be had).
    fn accept(
        &self,
        room: Option<mpsc::Permit<'_, FanOut>>,
        body: Bytes,
        content_type: Option<String>,
        source: Source,
    ) -> Result<Published, PublishError> {
        if self.is_closed() {
            return Err(PublishError::ShuttingDown);
        }
        let targets = self.targets();
        let subscribers = targets.len();
        // Under the log lock, ids are allocated, and messages queued or handed to the
        // fan-out, in one order: the order in which each subscriber receives them.
        let mut log = self.shared.log.lock();
        let inline =
            subscribers <= INLINE_FAN_OUT && self.shared.fanning_out.load(Ordering::Acquire) == 0;
        if !inline && room.is_none() {
            return Err(PublishError::Backlog(FAN_OUT_BACKLOG));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(MessageRecord::new(
            id,
            body,
            content_type,
            source,
            subscribers,
        ));
        let mut evicted = log.push(message.clone());
        self.shared.messages.fetch_add(1, Ordering::Relaxed);
        // Announced before any of its deliveries can be.
        self.emit(HubEvent::Published { id, subscribers });
        let refused = match room {
            Some(room) if !inline => {
                self.shared.fanning_out.fetch_add(1, Ordering::AcqRel);
                room.send(FanOut {
                    message: message.clone(),
                    targets: targets.clone(),
                    evicted: std::mem::take(&mut evicted),
                    _outstanding: Outstanding::new(&self.shared.outstanding),
                });
                Vec::new()
            }
            _ => self.queue(&message, &targets, true),
        };
        drop(log);
        self.record_refused(&message, refused);
        evicted.iter().for_each(|m| m.evict());
        Ok(Published { id, subscribers })
    }

    /// The live subscribers' queues as they are now.
    fn targets(&self) -> Arc<Vec<Target>> {
        self.shared.targets.lock().clone()
    }

    /// Takes the subscribers for which `gone` holds out of the targets. Called with the
    /// `subscribers` write lock held, so the two stay in step.
    fn drop_targets(&self, gone: impl Fn(&Target) -> bool) {
        Arc::make_mut(&mut self.shared.targets.lock()).retain(|t| !gone(t));
    }

    /// Adds a delivery of `message` for each target and queues it. Returns the targets
    /// whose queue refused it, for [`Hub::record_refused`] once no lock is held.
    /// `fan_out` marks the deliveries made for the subscribers it was published to.
    fn queue<'t>(
        &self,
        message: &Arc<MessageRecord>,
        targets: &'t [Target],
        fan_out: bool,
    ) -> Vec<(usize, &'t Target, DeliveryError)> {
        let addresses = targets.iter().map(|t| t.subscriber.address.clone());
        let first = message.add_deliveries(addresses, fan_out);
        let mut refused = Vec::new();
        for (slot, target) in (first..).zip(targets) {
            let job = Job {
                message: message.clone(),
                slot,
                _outstanding: Outstanding::new(&self.shared.outstanding),
            };
            if let Err(err) = target.queue.try_send(job) {
                let error = match err {
                    mpsc::error::TrySendError::Full(_) => DeliveryError::QueueFull {
                        capacity: target.queue.max_capacity(),
                    },
                    // The worker is gone: the subscriber was removed (maybe since the
                    // message was accepted).
                    mpsc::error::TrySendError::Closed(_) => DeliveryError::Removed(
                        target
                            .subscriber
                            .removal()
                            .unwrap_or(RemovalReason::Shutdown),
                    ),
                };
                refused.push((slot, target, error));
            }
        }
        refused
    }

    fn record_refused(
        &self,
        message: &MessageRecord,
        refused: Vec<(usize, &Target, DeliveryError)>,
    ) {
        for (slot, target, error) in refused {
            let status = DeliveryStatus::Failed(error);
            self.finish(message, slot, &target.subscriber, status);
        }
    }

    /// Delivers a logged message again, to every live subscriber or to one. The resends
    /// are added to the message's deliveries; returns how many were queued.
    pub fn resend(&self, id: MessageId, to: Option<&str>) -> Result<usize, ResendError> {
        if self.is_closed() {
            return Err(ResendError::ShuttingDown);
        }
        let message = self.message(id).ok_or(ResendError::UnknownMessage(id))?;
        let targets: Arc<Vec<Target>> = match to {
            Some(address) => {
                let subscribers = self.shared.subscribers.read();
                let entry = subscribers
                    .get(address)
                    .ok_or_else(|| ResendError::UnknownSubscriber(address.to_owned()))?;
                Arc::new(vec![Target::of(entry)])
            }
            None => self.targets(),
        };
        let refused = self.queue(&message, &targets, false);
        let queued = targets.len() - refused.len();
        self.record_refused(&message, refused);
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
        let cleared = self.shared.log.lock().clear();
        cleared.iter().for_each(|m| m.evict());
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

/// Fans accepted messages out, one at a time in id order, until the hub is gone.
async fn fan_out_loop(shared: Weak<Shared>, mut backlog: mpsc::Receiver<FanOut>) {
    while let Some(job) = backlog.recv().await {
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let hub = Hub { shared };
        let refused = hub.queue(&job.message, &job.targets, true);
        hub.shared.fanning_out.fetch_sub(1, Ordering::AcqRel);
        hub.record_refused(&job.message, refused);
        job.evicted.iter().for_each(|m| m.evict());
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

#[cfg(test)]
mod tests {
    use super::*;

    type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Keeps what the hub launches, so a test decides when the fan-out runs and reads
    /// the subscribers' queues itself.
    #[derive(Default)]
    struct Held {
        mailboxes: Mutex<Vec<Mailbox>>,
        tasks: Mutex<Vec<Task>>,
    }

    impl Launch for Arc<Held> {
        fn launch(&self, _hub: Hub, mailbox: Mailbox) {
            self.mailboxes.lock().push(mailbox);
        }

        fn spawn(&self, task: Task) {
            self.tasks.lock().push(task);
        }
    }

    fn hub_with(subscribers: usize) -> (Hub, Arc<Held>) {
        let held = Arc::new(Held::default());
        let hub = Hub::new(HubConfig::default(), Arc::new(held.clone()));
        for port in 0..subscribers {
            hub.register(&format!("127.0.0.1:{}", 1024 + port)).unwrap();
        }
        (hub, held)
    }

    fn publish(hub: &Hub, text: &'static str) -> Result<Published, PublishError> {
        hub.publish(Bytes::from_static(text.as_bytes()), None, Source::Console)
    }

    #[test]
    fn a_publish_queues_behind_a_fan_out_still_under_way() {
        let (hub, held) = hub_with(INLINE_FAN_OUT + 1);
        let first = publish(&hub, "to many").unwrap();
        assert!(!hub.is_drained(), "shutdown would not wait for the fan-out");
        // One subscriber left: few enough to queue inline, but the first message is
        // still waiting for the fan-out, so the second must wait behind it.
        for port in 1..=INLINE_FAN_OUT {
            assert!(hub.remove(&format!("127.0.0.1:{}", 1024 + port), RemovalReason::Kicked));
        }
        let second = publish(&hub, "to one").unwrap();
        assert_eq!(
            (first.subscribers, second.subscribers),
            (INLINE_FAN_OUT + 1, 1)
        );
        let mut mailbox = held.mailboxes.lock().remove(0);
        // What the removed subscribers' workers do as they stop: close their queues.
        held.mailboxes.lock().clear();
        assert!(
            mailbox.jobs.try_recv().is_err(),
            "queued ahead of the fan-out"
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let task = held.tasks.lock().pop().unwrap();
        runtime.spawn(task);
        let ids = runtime.block_on(async {
            let a = mailbox.jobs.recv().await.unwrap().message.id;
            let b = mailbox.jobs.recv().await.unwrap().message.id;
            (a, b)
        });
        assert_eq!(ids, (first.id, second.id));
        // The removed subscribers' deliveries of the first message are recorded, not lost.
        let record = hub.message(first.id).unwrap();
        assert_eq!(record.summary().failed, INLINE_FAN_OUT);
        assert_eq!(record.summary().pending, 1);
    }

    #[test]
    fn publishes_go_to_the_subscribers_live_at_the_time() {
        let (hub, held) = hub_with(3);
        let first = publish(&hub, "to three").unwrap();
        assert!(hub.remove("127.0.0.1:1025", RemovalReason::Kicked));
        hub.register("127.0.0.1:2000").unwrap();
        let second = publish(&hub, "to three others").unwrap();
        let expired = hub.expire(Instant::now() + hub.ttl() + Duration::from_secs(1));
        assert_eq!(expired.len(), 3);
        let third = publish(&hub, "to nobody").unwrap();
        assert_eq!(
            (first.subscribers, second.subscribers, third.subscribers),
            (3, 3, 0)
        );
        let received: Vec<Vec<MessageId>> = held
            .mailboxes
            .lock()
            .iter_mut()
            .map(|mailbox| {
                std::iter::from_fn(|| mailbox.jobs.try_recv().ok())
                    .map(|job| job.message.id)
                    .collect()
            })
            .collect();
        // In registration order: 1024, 1025 (kicked), 1026, then 2000.
        let (a, b) = (first.id, second.id);
        assert_eq!(received, [vec![a, b], vec![a], vec![a, b], vec![b]]);
    }

    #[test]
    fn a_full_fan_out_backlog_refuses_a_console_publish_and_says_why() {
        let (hub, _held) = hub_with(INLINE_FAN_OUT + 1);
        for _ in 0..FAN_OUT_BACKLOG {
            publish(&hub, "m").unwrap();
        }
        let refused = publish(&hub, "one too many").unwrap_err();
        assert_eq!(refused, PublishError::Backlog(FAN_OUT_BACKLOG));
        assert!(refused.to_string().contains("try again"), "{refused}");
        assert_eq!(
            hub.logged_messages(),
            FAN_OUT_BACKLOG,
            "the refused one is not logged"
        );
    }

    #[test]
    fn a_small_fan_out_is_queued_before_publish_returns() {
        let (hub, held) = hub_with(3);
        let published = publish(&hub, "now").unwrap();
        assert!(held.tasks.lock().len() == 1, "the fan-out task was started");
        for mailbox in held.mailboxes.lock().iter_mut() {
            let job = mailbox.jobs.try_recv().expect("queued at once");
            assert_eq!(job.message.id, published.id);
        }
        assert_eq!(hub.message(published.id).unwrap().summary().pending, 3);
    }
}
