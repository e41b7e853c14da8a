//! The registry: who is subscribed, where a message goes, and who is banned. A part that
//! owns its state: the subscribers, the routing and the bans are private to this module,
//! changed by the hub's operations in `subscribe` and read through the views below.
//!
//! - `subscribe`: registering and refreshing, topics, pause, pin, bans, removal, expiry
//!   and close, as `Hub` operations, and bringing kept subscribers back at start.
//!
//! Lock order: `subscribers`, then `routing` (and a subscriber's own `topics` under it);
//! `bans` is taken alone. A subscriber's topics and its place in `routing` change
//! together, under `subscribers` (read or write) and the `routing` write lock, so the two
//! always agree. Both come before the log's locks.

mod subscribe;

pub(super) use subscribe::MadeAt;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

use super::address::ban_key;
use super::routing::{Reach, Recipient, Route, Routing};
use super::store::StoredSubscriber;
use super::subscriber::{Entry, SubscriberView};
use super::topic::{Pattern, Topic, TopicError};

/// Bans kept at most: each is an operator's act, but a script could loop.
const MAX_BANS: usize = 10_000;

#[derive(Default)]
pub(super) struct Registry {
    /// Keyed by the address exactly as registered, as the seed did. Ordered so that
    /// listings are stable.
    subscribers: RwLock<BTreeMap<Arc<str>, Entry>>,
    /// Where a publish goes: the live subscribers' queues, by topic, kept in step with
    /// `subscribers`.
    routing: RwLock<Routing>,
    /// Addresses refused registration until a time (monotonic, and as shown), by
    /// `ban_key`: every spelling of one address is one ban.
    bans: Mutex<HashMap<String, (Instant, SystemTime)>>,
}

/// The key of the subscriber `address` names: as registered, or else as shown (with its
/// password hidden), which is all that listings give away.
fn key_of(subscribers: &BTreeMap<Arc<str>, Entry>, address: &str) -> Option<Arc<str>> {
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

impl Registry {
    /// The one way a subscriber is added, for a registration and for one kept by a store:
    /// routed by `topics` and entered, with `subscribers` (the write lock) held.
    fn insert(
        &self,
        subscribers: &mut BTreeMap<Arc<str>, Entry>,
        entry: Entry,
        topics: Arc<[Pattern]>,
    ) -> Result<(), TopicError> {
        let mut routing = self.routing.write();
        routing.room_for(topics.len(), 0)?;
        routing.add(Recipient::of(&entry), &topics);
        entry.shared.set_topics(topics);
        subscribers.insert(entry.shared.key.clone(), entry);
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
        let mut routing = self.routing.write();
        routing.room_for(topics.len(), old.len())?;
        routing.remove(shared, &old);
        routing.add(Recipient::of(entry), &topics);
        shared.set_topics(topics);
        Ok(())
    }

    /// Takes the subscriber `address` names out, and out of the routing.
    fn take(&self, address: &str) -> Option<Entry> {
        let mut subscribers = self.subscribers.write();
        let entry = key_of(&subscribers, address).and_then(|key| subscribers.remove(&key))?;
        let shared = &entry.shared;
        self.routing.write().remove(shared, &shared.topics());
        Some(entry)
    }

    /// Takes out every subscriber whose last keep-alive is older than its lease at `now`
    /// (`ttl` for those without one), in one pass over the routing.
    fn take_expired(&self, now: Instant, ttl: Duration) -> Vec<Entry> {
        let mut subscribers = self.subscribers.write();
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
        let leaving: Vec<&_> = expired.iter().map(|e| &*e.shared).collect();
        self.routing.write().remove_all(&leaving);
        expired
    }

    /// Takes out every subscriber.
    fn take_all(&self) -> Vec<Entry> {
        let mut subscribers = self.subscribers.write();
        self.routing.write().clear();
        std::mem::take(&mut *subscribers).into_values().collect()
    }

    /// Refuses `address` (in every spelling) registration until `ban` from now. Past
    /// [`MAX_BANS`] live bans a new one is refused: `Err` with the most.
    fn ban(&self, address: &str, ban: Duration) -> Result<(), usize> {
        let key = ban_key(address);
        let (Some(at), Some(shown)) = (
            Instant::now().checked_add(ban),
            SystemTime::now().checked_add(ban),
        ) else {
            // Past what clocks can hold: `ban_duration` never gives one.
            return Ok(());
        };
        let mut bans = self.bans.lock();
        let now = Instant::now();
        bans.retain(|_, (at, _)| *at > now);
        if bans.len() >= MAX_BANS && !bans.contains_key(&key) {
            return Err(MAX_BANS);
        }
        bans.insert(key, (at, shown));
        Ok(())
    }

    /// Until when `address` is banned, if it is.
    fn banned_until(&self, address: &str) -> Option<SystemTime> {
        let key = ban_key(address);
        let bans = self.bans.lock();
        let (at, shown) = bans.get(&key)?;
        (*at > Instant::now()).then_some(*shown)
    }

    /// The key of the subscriber `address` names (as registered or as shown), or the
    /// address itself.
    fn key_or(&self, address: &str) -> Arc<str> {
        key_of(&self.subscribers.read(), address).unwrap_or_else(|| address.into())
    }

    // Views: what the rest of the hub reads, each under one brief read lock.

    /// Every live subscriber, ordered by address.
    pub(super) fn views(&self, ttl: Duration) -> Vec<SubscriberView> {
        self.subscribers
            .read()
            .values()
            .map(|entry| entry.view(ttl))
            .collect()
    }

    /// One live subscriber, by its address as registered or as shown.
    pub(super) fn view(&self, address: &str, ttl: Duration) -> Option<SubscriberView> {
        let subscribers = self.subscribers.read();
        key_of(&subscribers, address)
            .and_then(|key| subscribers.get(&key))
            .map(|entry| entry.view(ttl))
    }

    pub(super) fn len(&self) -> usize {
        self.subscribers.read().len()
    }

    /// Where a message with `topic` goes now: every subscriber without topics, and those
    /// with a pattern that matches.
    pub(super) fn route(&self, topic: Option<&Topic>) -> Route {
        self.routing.read().route(topic)
    }

    /// Who a message with `topic` would go to now, as a publish would queue it.
    pub(super) fn reach(&self, topic: Option<&Topic>) -> Reach {
        self.route(topic).reach()
    }

    /// The recipient of one live subscriber, by its address as registered or as shown.
    pub(super) fn recipient(&self, address: &str) -> Option<Recipient> {
        let subscribers = self.subscribers.read();
        key_of(&subscribers, address)
            .and_then(|key| subscribers.get(&key))
            .map(Recipient::of)
    }

    /// Every subscriber's address as registered, when it registered, and whether it
    /// asked for strict order.
    pub(super) fn keys(&self) -> Vec<(Arc<str>, SystemTime, bool)> {
        self.subscribers
            .read()
            .iter()
            .map(|(key, entry)| (key.clone(), entry.registered_at, entry.shared.is_ordered()))
            .collect()
    }

    /// The subscriber registered as `key`, as a store keeps it.
    pub(super) fn stored(&self, key: &str) -> Option<StoredSubscriber> {
        self.subscribers.read().get(key).map(Entry::stored)
    }

    /// The address (as registered) of the subscriber whose `name_of` is `name`.
    pub(super) fn named(&self, name: &str, name_of: impl Fn(&str) -> String) -> Option<Arc<str>> {
        let subscribers = self.subscribers.read();
        subscribers.keys().find(|key| name_of(key) == name).cloned()
    }

    /// Whether a message on `topic` (for `to` only, if given) is for subscriber `key`,
    /// as a publish here would route it; `None` when `key` is not subscribed here.
    pub(super) fn wants(&self, key: &str, topic: Option<&Topic>, to: Option<&str>) -> Option<bool> {
        let subscribers = self.subscribers.read();
        let entry = subscribers.get(key)?;
        if let Some(to) = to {
            return Some(to == key);
        }
        let patterns = entry.shared.topics();
        Some(match topic {
            _ if patterns.is_empty() => true,
            None => false,
            Some(topic) => patterns.iter().any(|p| p.matches(topic)),
        })
    }

    /// Whether `key` is a live subscriber here.
    pub(super) fn contains(&self, key: &str) -> bool {
        self.subscribers.read().contains_key(key)
    }

    #[cfg(test)]
    pub(super) fn is_unrouted(&self) -> bool {
        self.routing.read().is_empty()
    }
}
