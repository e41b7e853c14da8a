//! Who is subscribed: registering and refreshing, removal and expiry, and the list of
//! recipients a publish goes to, kept in step with the subscribers. What a subscriber
//! asks for, and the answers and errors, are in `subscription`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::Hub;
use super::address::parse_target;
use super::event::HubEvent;
use super::routing::{Reach, Recipient, Route};
use super::store::Change;
use super::subscriber::{Entry, Mailbox, RemovalReason, SubscriberShared};
use super::subscription::{ControlError, MAX_IN_FLIGHT, RegisterError, Registration, Subscription};
use super::topic::{MAX_PATTERNS, Pattern, Topic, TopicError};

/// Shortest and longest per-subscriber lease accepted; others are clamped into this range.
const LEASE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 60 * 60));

/// Bans kept at most: each is an operator's act, but a script could loop.
const MAX_BANS: usize = 10_000;

/// The key of the subscriber `address` names: as registered, or else as shown (with its
/// password hidden), which is all that listings give away.
pub(super) fn key_of(subscribers: &BTreeMap<Arc<str>, Entry>, address: &str) -> Option<Arc<str>> {
    if let Some((key, _)) = subscribers.get_key_value(address) {
        return Some(key.clone());
    }
    if !address.contains(":***@") {
        return None;
    }
    subscribers
        .values()
        .find(|entry| &*entry.shared.address == address)
        .map(|entry| entry.shared.key.clone())
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

    /// Registers a subscriber, or refreshes it: its keep-alive, and its secret and lease
    /// when given. Refreshing a suspended subscriber resumes it at once.
    pub fn subscribe<'a>(
        &self,
        request: impl Into<Subscription<'a>>,
    ) -> Result<Registration, RegisterError> {
        let Subscription {
            address,
            secret,
            lease,
            ordered,
            max_in_flight,
            topics,
        } = request.into();
        if let Some(most) = max_in_flight.filter(|n| !(1..=MAX_IN_FLIGHT).contains(n)) {
            return Err(RegisterError::MaxInFlight { given: most });
        }
        let topics_given = topics.is_some();
        let topics = topics.map(distinct).transpose()?;
        let target = parse_target(address)?;
        self.shared.policy.read().check_url(&target)?;
        if let Some(until) = self.banned_until(address) {
            return Err(RegisterError::Banned { until });
        }
        if self.is_stopping() {
            return Err(RegisterError::ShuttingDown);
        }
        let lease = lease.map(|l| l.clamp(LEASE_RANGE.0, LEASE_RANGE.1));
        let now = SystemTime::now();
        let mut subscribers = self.shared.subscribers.write();
        // Again under the lock: `close` empties the map under it, and a subscriber added
        // after that would never be retired.
        if self.is_stopping() {
            return Err(RegisterError::ShuttingDown);
        }
        if let Some(entry) = subscribers.get_mut(address) {
            // First, as it may be refused: a refused registration changes nothing.
            if let Some(topics) = topics {
                self.retopic(entry, topics)?;
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
                self.keep(entry);
            } else if self.shared.store.is_durable() {
                let key = shared.key.clone();
                self.shared.store.record(Change::Seen { key, at: now });
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
        let topics = topics.unwrap_or_else(|| Arc::new([]));
        let mut routing = self.shared.routing.write();
        routing.room_for(topics.len(), 0)?;
        let key: Arc<str> = address.into();
        let shared = Arc::new(SubscriberShared::new(key.clone(), target));
        if let Some(secret) = secret {
            shared.set_secret(secret);
        }
        shared.set_options(ordered, max_in_flight);
        let capacity = self.shared.config.queue_capacity.max(1);
        let (queue, jobs) = mpsc::channel(capacity);
        let entry = Entry {
            shared: shared.clone(),
            registered_at: now,
            last_seen: now,
            last_seen_at: Instant::now(),
            lease,
            queue,
            pinned: false,
        };
        routing.add(Recipient::of(&entry), &topics);
        shared.set_topics(topics);
        drop(routing);
        self.keep(&entry);
        subscribers.insert(key, entry);
        drop(subscribers);
        let address = shared.address.clone();
        tracing::info!(%address, "subscriber registered");
        self.shared.launcher.launch(
            self.clone(),
            Mailbox {
                subscriber: shared,
                jobs,
                capacity,
            },
        );
        self.record_activity(HubEvent::Registered { address });
        Ok(Registration::Registered)
    }

    /// Replaces the topics of a live subscriber (by its address as registered or as
    /// shown) without counting as a keep-alive; an empty list: every message.
    pub fn set_topics(&self, address: &str, topics: Vec<Pattern>) -> Result<(), ControlError> {
        let topics = distinct(topics)?;
        let subscribers = self.shared.subscribers.read();
        let entry = key_of(&subscribers, address)
            .and_then(|key| subscribers.get(&key))
            .ok_or_else(|| ControlError::UnknownSubscriber(address.to_owned()))?;
        self.retopic(entry, topics)?;
        self.keep(entry);
        drop(subscribers);
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Routes a subscriber by `topics` from now on. Called with the `subscribers` lock
    /// held (read is enough: the entry stays, and only `routing` changes), so the topics
    /// and the routing agree.
    fn retopic(&self, entry: &Entry, topics: Arc<[Pattern]>) -> Result<(), TopicError> {
        let shared = &entry.shared;
        let old = shared.topics();
        if topics == old {
            return Ok(());
        }
        let mut routing = self.shared.routing.write();
        routing.room_for(topics.len(), old.len())?;
        routing.remove(shared, &old);
        routing.add(Recipient::of(entry), &topics);
        shared.set_topics(topics);
        Ok(())
    }

    /// Holds a subscriber's deliveries (its queue is kept, and fills), or lets them go
    /// again, in order. `address` is as registered, or as shown.
    pub fn set_paused(&self, address: &str, paused: bool) -> Result<(), ControlError> {
        let subscribers = self.shared.subscribers.read();
        let entry = key_of(&subscribers, address)
            .and_then(|key| subscribers.get(&key))
            .ok_or_else(|| ControlError::UnknownSubscriber(address.to_owned()))?;
        let changed = entry.shared.set_paused(paused);
        if changed {
            self.keep(entry);
        }
        drop(subscribers);
        if changed {
            self.shared.version.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Pins a subscriber (it never expires) or unpins it (its lease counts from now).
    pub fn set_pinned(&self, address: &str, pinned: bool) -> Result<(), ControlError> {
        let mut subscribers = self.shared.subscribers.write();
        let entry = key_of(&subscribers, address)
            .and_then(|key| subscribers.get_mut(&key))
            .ok_or_else(|| ControlError::UnknownSubscriber(address.to_owned()))?;
        if entry.pinned && !pinned {
            // A pinned subscriber may not have refreshed for days: give it a whole lease.
            entry.last_seen = SystemTime::now();
            entry.last_seen_at = Instant::now();
        }
        entry.pinned = pinned;
        self.keep(entry);
        drop(subscribers);
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a subscriber as if its lease had run out, to test a service's
    /// re-registration. Returns whether it was registered.
    pub fn expire_now(&self, address: &str) -> bool {
        self.remove(address, RemovalReason::Expired)
    }

    /// Kicks a subscriber and refuses its registration for `ban` (from the console or
    /// the API), whether or not it is registered now. Returns whether it was.
    pub fn ban(&self, address: &str, ban: Duration) -> bool {
        let key = {
            let subscribers = self.shared.subscribers.read();
            key_of(&subscribers, address).unwrap_or_else(|| address.into())
        };
        let until = (
            Instant::now().checked_add(ban),
            SystemTime::now().checked_add(ban),
        );
        if let (Some(at), Some(shown)) = until {
            let mut bans = self.shared.bans.lock();
            let now = Instant::now();
            bans.retain(|_, (at, _)| *at > now);
            if bans.len() < MAX_BANS || bans.contains_key(&key) {
                bans.insert(key.clone(), (at, shown));
            }
        }
        self.remove(&key, RemovalReason::Kicked)
    }

    /// Until when `address` is banned, if it is.
    fn banned_until(&self, address: &str) -> Option<SystemTime> {
        let bans = self.shared.bans.lock();
        let (at, shown) = bans.get(address)?;
        (*at > Instant::now()).then_some(*shown)
    }

    /// Removes a subscriber at once: its queued and in-flight deliveries are abandoned and
    /// recorded as failed with `reason`. Returns whether it was registered.
    /// `address` is as registered, or as shown (with its password hidden).
    pub fn remove(&self, address: &str, reason: RemovalReason) -> bool {
        let entry = {
            let mut subscribers = self.shared.subscribers.write();
            let entry = key_of(&subscribers, address).and_then(|key| subscribers.remove(&key));
            if let Some(entry) = &entry {
                self.unroute(&entry.shared);
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

    /// Removes every subscriber whose last keep-alive is older than its lease at `now`.
    pub(super) fn expire(&self, now: Instant) -> Vec<Arc<str>> {
        let ttl = self.ttl();
        let expired: Vec<Entry> = {
            let mut subscribers = self.shared.subscribers.write();
            let stale: Vec<Arc<str>> = subscribers
                .iter()
                .filter(|(_, e)| {
                    !e.pinned && now.saturating_duration_since(e.last_seen_at) > e.lease(ttl)
                })
                .map(|(address, _)| address.clone())
                .collect();
            let expired: Vec<Entry> = stale
                .iter()
                .filter_map(|address| subscribers.remove(address))
                .collect();
            let leaving: Vec<&SubscriberShared> = expired.iter().map(|e| &*e.shared).collect();
            self.shared.routing.write().remove_all(&leaving);
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

    /// Stops taking subscribers and messages, and removes every subscriber, which cancels
    /// their deliveries.
    pub fn close(&self) {
        self.stop_intake();
        let all = {
            let mut subscribers = self.shared.subscribers.write();
            self.shared.routing.write().clear();
            std::mem::take(&mut *subscribers)
        };
        for entry in all.into_values() {
            self.retire(entry, RemovalReason::Shutdown);
        }
    }

    fn retire(&self, entry: Entry, reason: RemovalReason) {
        // Those removed by shutdown are registered still when the hub starts again.
        if reason != RemovalReason::Shutdown && self.shared.store.is_durable() {
            let key = entry.shared.key.clone();
            self.shared.store.record(Change::Removed { key });
        }
        let address = entry.shared.address.clone();
        tracing::info!(%address, %reason, "subscriber removed");
        entry.shared.remove(reason);
        self.record_activity(HubEvent::Removed { address, reason });
    }

    /// Where a message with `topic` goes now: every subscriber without topics, and those
    /// with a pattern that matches.
    pub(super) fn route(&self, topic: Option<&Topic>) -> Route {
        self.shared.routing.read().route(topic)
    }

    /// Who a message with `topic` would go to now, as a publish would queue it.
    pub fn reach(&self, topic: Option<&Topic>) -> Reach {
        self.route(topic).reach()
    }

    /// The recipient of one live subscriber, by its address as registered or as shown.
    pub(super) fn recipient(&self, address: &str) -> Option<Recipient> {
        let subscribers = self.shared.subscribers.read();
        key_of(&subscribers, address)
            .and_then(|key| subscribers.get(&key))
            .map(Recipient::of)
    }

    /// Tells the store where a subscriber stands now. Called under the subscribers lock,
    /// so that the store hears of each subscriber's changes in the order they were made.
    fn keep(&self, entry: &Entry) {
        if self.shared.store.is_durable() {
            self.shared.store.record(Change::Subscriber(entry.stored()));
        }
    }

    /// Takes a subscriber out of the routing. Called with the `subscribers` write lock
    /// held, so the two stay in step.
    fn unroute(&self, subscriber: &SubscriberShared) {
        self.shared
            .routing
            .write()
            .remove(subscriber, &subscriber.topics());
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
