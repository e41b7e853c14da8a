//! Who is subscribed, as the hub's operations: registering and refreshing, topics, pause,
//! pin, bans, removal, expiry and close, and bringing back the subscribers a store kept.
//! Each change reaches the store (when it keeps anything) and, when it was made here, a
//! cluster; one applied from a cluster is not told back. What a subscriber asks for, and
//! the answers and errors, are in `subscription`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::Registry;
use crate::hub::Hub;
use crate::hub::address::{parse_target, redact};
use crate::hub::cluster_port::SubscriberChange;
use crate::hub::event::HubEvent;
use crate::hub::store::{Change, StoredSubscriber};
use crate::hub::subscriber::{Entry, Mailbox, RemovalReason, SubscriberShared};
use crate::hub::subscription::{
    ControlError, MAX_IN_FLIGHT, RegisterError, Registration, Subscription,
};
use crate::hub::topic::{MAX_PATTERNS, Pattern, TopicError};

/// Shortest and longest per-subscriber lease accepted; others are clamped into this range.
const LEASE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 60 * 60));

/// Where a subscriber change was made: here (the store keeps it, a cluster hears of
/// it), at another instance of the cluster, which told it (kept, not told back), or
/// read back from the store at start (the store has it as it is; no cluster restores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::hub) enum MadeAt {
    Here,
    Elsewhere,
    Restored,
}

/// A subscriber joining: registered now, or kept by a store.
struct Joining {
    shared: Arc<SubscriberShared>,
    registered_at: SystemTime,
    last_seen: SystemTime,
    last_seen_at: Instant,
    lease: Option<Duration>,
    pinned: bool,
    topics: Arc<[Pattern]>,
}

impl Hub {
    /// The keep-alive period for subscribers without a lease of their own.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl.get()
    }

    pub fn set_ttl(&self, ttl: Duration) {
        self.shared.ttl.set(ttl);
    }

    pub fn reap_every(&self) -> Duration {
        self.shared.reap_every.get()
    }

    pub fn set_reap_every(&self, every: Duration) {
        self.shared.reap_every.set(every);
    }

    /// Where this hub listens, so that no subscriber address can point back at it.
    pub fn set_own_addr(&self, addr: Option<SocketAddr>) {
        self.shared.policy.write().own_addr = addr;
    }

    /// Where this hub listens, once it does.
    pub(crate) fn own_addr(&self) -> Option<SocketAddr> {
        self.shared.policy.read().own_addr
    }

    /// Whether connecting to `addr` would reach this hub itself.
    pub(crate) fn is_own_addr(&self, addr: SocketAddr) -> bool {
        self.shared.policy.read().is_own(addr)
    }

    fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Registers a subscriber, or refreshes it: its keep-alive, and its secret and lease
    /// when given. Refreshing a suspended subscriber resumes it at once.
    pub fn subscribe<'a>(
        &self,
        request: impl Into<Subscription<'a>>,
    ) -> Result<Registration, RegisterError> {
        self.subscribe_at(request.into(), MadeAt::Here)
    }

    /// [`Hub::subscribe`], made here or at another instance of a cluster.
    pub(in crate::hub) fn subscribe_at(
        &self,
        request: Subscription<'_>,
        at: MadeAt,
    ) -> Result<Registration, RegisterError> {
        let Subscription {
            address,
            secret,
            lease,
            ordered,
            max_in_flight,
            topics,
            ephemeral,
        } = request;
        if let Some(most) = max_in_flight.filter(|n| !(1..=MAX_IN_FLIGHT).contains(n)) {
            return Err(RegisterError::MaxInFlight { given: most });
        }
        let topics_given = topics.is_some();
        let topics = topics.map(distinct).transpose()?;
        let target = parse_target(address)?;
        self.shared.policy.read().check_url(&target)?;
        if let Some(until) = self.registry().banned_until(address) {
            return Err(RegisterError::Banned { until });
        }
        if self.is_stopping() {
            return Err(RegisterError::ShuttingDown);
        }
        let lease = lease.map(|l| l.clamp(LEASE_RANGE.0, LEASE_RANGE.1));
        let now = SystemTime::now();
        let registry = self.registry();
        let mut subscribers = registry.subscribers.write();
        // Again under the lock: `close` empties the map under it, and a subscriber added
        // after that would never be retired.
        if self.is_stopping() {
            return Err(RegisterError::ShuttingDown);
        }
        if let Some(entry) = subscribers.get_mut(address) {
            // First, as it may be refused: a refused registration changes nothing.
            if let Some(topics) = topics {
                registry.retopic(entry, topics)?;
            }
            entry.last_seen = now;
            entry.last_seen_at = Instant::now();
            let changed = lease.is_some()
                || secret.is_some()
                || ordered.is_some()
                || max_in_flight.is_some()
                || topics_given;
            if lease.is_some() {
                entry.lease = lease;
            }
            let shared = entry.shared.clone();
            if let Some(secret) = secret {
                shared.set_secret(secret);
            }
            shared.set_options(ordered, max_in_flight);
            if changed {
                self.keep(entry, at);
            } else {
                self.seen(&shared, now, at);
            }
            drop(subscribers);
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
        let shared = Arc::new(SubscriberShared::new(address.into(), target, ephemeral));
        if let Some(secret) = secret {
            shared.set_secret(secret);
        }
        shared.set_options(ordered, max_in_flight);
        let joining = Joining {
            shared,
            registered_at: now,
            last_seen: now,
            last_seen_at: Instant::now(),
            lease,
            pinned: false,
            topics: topics.unwrap_or_else(|| Arc::new([])),
        };
        let mailbox = self.join(&mut subscribers, joining, at)?;
        drop(subscribers);
        self.start(mailbox);
        Ok(Registration::Registered)
    }

    /// The one way a subscriber joins, registered now or kept by a store: its entry and
    /// queue are made, it is routed and entered with `subscribers` (the write lock)
    /// held, and told. Its worker starts once the lock is let go ([`Hub::start`]).
    fn join(
        &self,
        subscribers: &mut BTreeMap<Arc<str>, Entry>,
        joining: Joining,
        at: MadeAt,
    ) -> Result<Mailbox, TopicError> {
        let capacity = self.shared.config.queue_capacity.max(1);
        let (queue, jobs) = mpsc::channel(capacity);
        let entry = Entry {
            shared: joining.shared.clone(),
            registered_at: joining.registered_at,
            last_seen: joining.last_seen,
            last_seen_at: joining.last_seen_at,
            lease: joining.lease,
            queue,
            pinned: joining.pinned,
        };
        let key = entry.shared.key.clone();
        self.registry().insert(subscribers, entry, joining.topics)?;
        if let Some(entry) = subscribers.get(&key) {
            self.keep(entry, at);
        }
        Ok(Mailbox {
            subscriber: joining.shared,
            jobs,
            capacity,
        })
    }

    /// Starts the worker of a subscriber that joined, and says so.
    fn start(&self, mailbox: Mailbox) {
        let address = mailbox.subscriber.address.clone();
        tracing::info!(%address, "subscriber registered");
        self.shared.launcher.launch(self.clone(), mailbox);
        self.record_activity(HubEvent::Registered { address });
    }

    /// Brings back a subscriber a store kept, its keep-alive `age` old.
    pub(in crate::hub) fn readmit(&self, stored: StoredSubscriber, age: Duration) {
        let Ok(target) = parse_target(&stored.key) else {
            tracing::warn!(address = %stored.key, "a kept subscriber's address no longer parses; dropped");
            self.shared
                .store
                .record(Change::Removed { key: stored.key });
            return;
        };
        let shared = Arc::new(SubscriberShared::new(stored.key.clone(), target, false));
        if let Some(secret) = stored.secret {
            shared.set_secret(secret);
        }
        // A store may have been edited by hand: what it says is held to what a
        // registration may ask for.
        let max_in_flight = stored.max_in_flight.clamp(1, MAX_IN_FLIGHT);
        shared.set_options(Some(stored.ordered), Some(max_in_flight));
        shared.set_paused(stored.paused);
        let joining = Joining {
            shared,
            registered_at: stored.registered_at,
            last_seen: stored.last_seen,
            last_seen_at: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            lease: stored.lease.map(|l| l.clamp(LEASE_RANGE.0, LEASE_RANGE.1)),
            pinned: stored.pinned,
            topics: stored.topics,
        };
        let mut subscribers = self.registry().subscribers.write();
        let joined = self.join(&mut subscribers, joining, MadeAt::Restored);
        drop(subscribers);
        match joined {
            Ok(mailbox) => self.start(mailbox),
            Err(_) => tracing::warn!(
                address = %redact(&stored.key),
                "no room left for a kept subscriber's topics; dropped"
            ),
        }
    }

    /// Replaces the topics of a live subscriber (by its address as registered or as
    /// shown) without counting as a keep-alive; an empty list: every message.
    pub fn set_topics(&self, address: &str, topics: Vec<Pattern>) -> Result<(), ControlError> {
        let topics = distinct(topics)?;
        self.change(address, MadeAt::Here, |registry, entry| {
            registry.retopic(entry, topics)?;
            Ok(true)
        })
    }

    /// Holds a subscriber's deliveries (its queue is kept, and fills), or lets them go
    /// again, in order. `address` is as registered, or as shown.
    pub fn set_paused(&self, address: &str, paused: bool) -> Result<(), ControlError> {
        self.set_paused_at(address, paused, MadeAt::Here)
    }

    pub(in crate::hub) fn set_paused_at(
        &self,
        address: &str,
        paused: bool,
        at: MadeAt,
    ) -> Result<(), ControlError> {
        self.change(address, at, |_, entry| Ok(entry.shared.set_paused(paused)))
    }

    /// Changes the live subscriber `address` names with `change`, under the subscribers'
    /// read lock; when it says something changed, the change is kept and told.
    fn change(
        &self,
        address: &str,
        at: MadeAt,
        change: impl FnOnce(&Registry, &Entry) -> Result<bool, ControlError>,
    ) -> Result<(), ControlError> {
        let registry = self.registry();
        let subscribers = registry.subscribers.read();
        let entry = super::key_of(&subscribers, address)
            .and_then(|key| subscribers.get(&key))
            .ok_or_else(|| ControlError::UnknownSubscriber(address.to_owned()))?;
        let changed = change(registry, entry)?;
        if changed {
            self.keep(entry, at);
        }
        drop(subscribers);
        if changed {
            self.shared.version.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Pins a subscriber (it never expires) or unpins it (its lease counts from now).
    pub fn set_pinned(&self, address: &str, pinned: bool) -> Result<(), ControlError> {
        self.set_pinned_at(address, pinned, MadeAt::Here)
    }

    pub(in crate::hub) fn set_pinned_at(
        &self,
        address: &str,
        pinned: bool,
        at: MadeAt,
    ) -> Result<(), ControlError> {
        let mut subscribers = self.registry().subscribers.write();
        let entry = super::key_of(&subscribers, address)
            .and_then(|key| subscribers.get_mut(&key))
            .ok_or_else(|| ControlError::UnknownSubscriber(address.to_owned()))?;
        if entry.pinned && !pinned {
            // A pinned subscriber may not have refreshed for days: give it a whole lease.
            entry.last_seen = SystemTime::now();
            entry.last_seen_at = Instant::now();
        }
        entry.pinned = pinned;
        self.keep(entry, at);
        drop(subscribers);
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a subscriber as if its lease had run out, to test a service's
    /// re-registration. Returns whether it was registered.
    pub fn expire_now(&self, address: &str) -> bool {
        self.remove(address, RemovalReason::Expired)
    }

    /// Kicks a subscriber and refuses its registration, in any spelling of its address,
    /// for `ban` (from the console or the API), whether or not it is registered now.
    /// Returns whether it was; refused, and nobody kicked, when the most bans are in force.
    pub fn ban(&self, address: &str, ban: Duration) -> Result<bool, ControlError> {
        let key = self.registry().key_or(address);
        self.registry()
            .ban(&key, ban)
            .map_err(|max| ControlError::TooManyBans { max })?;
        Ok(self.remove(&key, RemovalReason::Kicked))
    }

    /// Removes a subscriber at once: its queued and in-flight deliveries are abandoned and
    /// recorded as failed with `reason`. Returns whether it was registered.
    /// `address` is as registered, or as shown (with its password hidden).
    pub fn remove(&self, address: &str, reason: RemovalReason) -> bool {
        self.remove_at(address, reason, MadeAt::Here)
    }

    pub(in crate::hub) fn remove_at(
        &self,
        address: &str,
        reason: RemovalReason,
        at: MadeAt,
    ) -> bool {
        match self.registry().take(address) {
            Some(entry) => {
                self.retire(entry, reason, at);
                true
            }
            None => false,
        }
    }

    /// Removes every subscriber whose last keep-alive is older than its lease at `now`.
    pub(in crate::hub) fn expire(&self, now: Instant) -> Vec<Arc<str>> {
        let expired = self.registry().take_expired(now, self.ttl());
        expired
            .into_iter()
            .map(|entry| {
                let address = entry.shared.address.clone();
                self.retire(entry, RemovalReason::Expired, MadeAt::Here);
                address
            })
            .collect()
    }

    /// Stops taking subscribers and messages, and removes every subscriber, which cancels
    /// their deliveries.
    pub fn close(&self) {
        self.stop_intake();
        for entry in self.registry().take_all() {
            self.retire(entry, RemovalReason::Shutdown, MadeAt::Here);
        }
    }

    fn retire(&self, entry: Entry, reason: RemovalReason, at: MadeAt) {
        // Those removed by shutdown are registered still when the hub starts again, and
        // live on at the other instances of a cluster. An ephemeral one was never kept
        // nor shared, but a cluster made it a consumer, which must not outlive it (a
        // later test subscriber at the same port would inherit its backlog).
        if entry.shared.ephemeral {
            if at == MadeAt::Here {
                let key = entry.shared.key.clone();
                self.tell_cluster(|| SubscriberChange::Left(key));
            }
        } else if reason != RemovalReason::Shutdown {
            let key = entry.shared.key.clone();
            if self.shared.store.is_durable() {
                self.shared
                    .store
                    .record(Change::Removed { key: key.clone() });
            }
            if at == MadeAt::Here {
                self.tell_cluster(|| SubscriberChange::Removed(key));
            }
        }
        let address = entry.shared.address.clone();
        tracing::info!(%address, %reason, "subscriber removed");
        entry.shared.remove(reason);
        self.record_activity(HubEvent::Removed { address, reason });
    }

    /// Tells the store, and a cluster when the change was made here, where a subscriber
    /// stands now (neither, for an ephemeral one). Called under the subscribers lock, so
    /// that both hear of each subscriber's changes in the order they were made.
    fn keep(&self, entry: &Entry, at: MadeAt) {
        if entry.shared.ephemeral {
            return;
        }
        if at != MadeAt::Restored && self.shared.store.is_durable() {
            self.shared.store.record(Change::Subscriber(entry.stored()));
        }
        if at == MadeAt::Here {
            self.tell_cluster(|| SubscriberChange::Put(entry.stored()));
        }
    }

    /// A keep-alive that changed nothing else: the store keeps its time, a cluster
    /// rewrites the entry (neither, for an ephemeral one).
    fn seen(&self, subscriber: &SubscriberShared, at_time: SystemTime, at: MadeAt) {
        if subscriber.ephemeral {
            return;
        }
        let key = &subscriber.key;
        if self.shared.store.is_durable() {
            let key = key.clone();
            self.shared.store.record(Change::Seen { key, at: at_time });
        }
        if at == MadeAt::Here {
            self.tell_cluster(|| SubscriberChange::Seen(key.clone()));
        }
    }
}

/// Patterns as a subscriber holds them: each once, in the order given, at most
/// [`MAX_PATTERNS`].
fn distinct(patterns: Vec<Pattern>) -> Result<Arc<[Pattern]>, TopicError> {
    let mut kept: Vec<Pattern> = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        if !kept.contains(&pattern) {
            kept.push(pattern);
        }
    }
    if kept.len() > MAX_PATTERNS {
        return Err(TopicError::TooMany { given: kept.len() });
    }
    Ok(kept.into())
}
