//! The log: the messages a hub holds, the ids it gives them, how many it took in, and the
//! topics they came with. A part that owns its state: nothing else in the hub reaches
//! into the ring, the counters or the topics seen.
//!
//! - `ring`: `MessageLog`, the bounded ring itself (by messages, delivery records and
//!   bytes), with the starred messages kept beyond its budgets.
//! - `usage`: what the logged messages hold, counted without the ring's lock.
//! - `topics_seen`: the topics published, for the Topics view and `/metrics`.
//!
//! Every message comes in through [`Log::enter`] (a new id) or [`Log::enter_at`] (an id
//! it has), which share what follows: the count and the topics seen.
//!
//! Lock order inside the log: `ring`, then `topics` (never the other way), and both after
//! the registry's locks. A message's own lock (its deliveries) may be taken under `ring`.

mod ring;
mod topics_seen;
pub(super) mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

pub use topics_seen::{MAX_TOPICS_SEEN, TopicSeen};
pub use usage::MAX_PINNED;
pub(crate) use usage::{Budget, LogUsage};

use super::message::{MessageId, MessageRecord};
use super::topic::Topic;
use ring::MessageLog;
use topics_seen::TopicsSeen;

/// Delivery records the log keeps at most (about 75 MB).
pub(crate) const DELIVERY_BUDGET: usize = 500_000;

/// A message that entered the log.
pub(super) struct Entered<T> {
    pub(super) message: Arc<MessageRecord>,
    /// What the caller's `then` answered.
    pub(super) then: T,
    /// Messages its arrival pushed out: the caller evicts them (or has them evicted)
    /// once it holds no lock, since freeing thousands of records takes a while.
    pub(super) evicted: Vec<Arc<MessageRecord>>,
}

pub(super) struct Log {
    /// The messages, oldest first. Held while a message enters, so that ids are given,
    /// and whatever must follow their order is done, in one order.
    ring: Mutex<MessageLog>,
    /// What the ring's messages hold, shared with each of them: a message that grows
    /// after it was logged (resends, attempts) counts itself here, without the lock.
    usage: Arc<LogUsage>,
    next_id: AtomicU64,
    /// Messages taken in since the hub started (counting from the newest kept one).
    taken: AtomicU64,
    topics: Mutex<TopicsSeen>,
}

impl Log {
    /// An empty log whose next id is `next_id`, bounded to `messages` messages and
    /// `bytes` bytes (and [`DELIVERY_BUDGET`] delivery records).
    pub(super) fn new(messages: usize, bytes: usize, next_id: MessageId) -> Self {
        let ring = MessageLog::new(Budget {
            messages,
            records: DELIVERY_BUDGET,
            bytes,
        });
        Self {
            usage: ring.usage().clone(),
            ring: Mutex::new(ring),
            next_id: AtomicU64::new(next_id),
            taken: AtomicU64::new(0),
            topics: Mutex::default(),
        }
    }

    /// The way into the log for a message that takes the next id (a publish, an
    /// import). Under the ring's lock, in id order: `gate` may refuse before an id is
    /// given; `make` builds the record for its id; `then` does what must happen in the
    /// order of the ids (a store's append, queueing), and may take the evicted messages
    /// to free them elsewhere.
    pub(super) fn enter<G, T, E>(
        &self,
        gate: impl FnOnce() -> Result<G, E>,
        make: impl FnOnce(MessageId) -> MessageRecord,
        then: impl FnOnce(&Arc<MessageRecord>, G, &mut Vec<Arc<MessageRecord>>) -> T,
    ) -> Result<Entered<T>, E> {
        let mut ring = self.ring.lock();
        let gated = gate()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(make(id));
        let mut evicted = ring.push(message.clone());
        // Counted before `then` announces it, so a reader woken by it sees it counted.
        self.taken.fetch_add(1, Ordering::Relaxed);
        let then = then(&message, gated, &mut evicted);
        drop(ring);
        Ok(self.entered(message, then, evicted))
    }

    /// The way in for a message that has its id: given by a shared log (admit) or by the
    /// store it was kept in (restore). It takes its place by id. `Err`: not logged, being
    /// there already (the one logged is returned) or older than all the log holds (the
    /// record is returned, unlogged).
    pub(super) fn enter_at(
        &self,
        message: Arc<MessageRecord>,
    ) -> Result<Entered<()>, Arc<MessageRecord>> {
        let mut ring = self.ring.lock();
        if let Some(known) = ring.get(message.id) {
            return Err(known);
        }
        let Some(evicted) = ring.insert(message.clone()) else {
            return Err(message);
        };
        self.next_id.fetch_max(message.id + 1, Ordering::Relaxed);
        self.taken.fetch_add(1, Ordering::Relaxed);
        drop(ring);
        Ok(self.entered(message, (), evicted))
    }

    /// What every entry does once the message is in the ring (and counted): its topic
    /// counts too.
    fn entered<T>(
        &self,
        message: Arc<MessageRecord>,
        then: T,
        evicted: Vec<Arc<MessageRecord>>,
    ) -> Entered<T> {
        if let Some(topic) = &message.topic {
            self.topics
                .lock()
                .record(topic, message.id, message.received_at);
        }
        Entered {
            message,
            then,
            evicted,
        }
    }

    /// After a restore: the count of messages taken in goes on from the newest kept.
    pub(super) fn count_from(&self, newest: MessageId) {
        self.taken.store(newest, Ordering::Relaxed);
    }

    /// Messages taken in since start.
    pub(super) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Takes the oldest messages out while the log holds more than its budget. Cheap
    /// when it does not: two atomic reads.
    pub(super) fn trim(&self) {
        if !self.usage.over() {
            return;
        }
        let evicted = self.ring.lock().trim();
        evicted.iter().for_each(|m| m.evict());
    }

    /// How much the log may hold, and how much it holds now.
    pub(super) fn usage(&self) -> &LogUsage {
        &self.usage
    }

    pub(super) fn get(&self, id: MessageId) -> Option<Arc<MessageRecord>> {
        self.ring.lock().get(id)
    }

    /// Up to `limit` messages older than `before` (all when `None`), newest first; with
    /// `with_kept`, the starred ones kept beyond the budgets too, in their place.
    pub(super) fn page(
        &self,
        before: Option<MessageId>,
        limit: usize,
        keep: impl Fn(&MessageRecord) -> bool,
        with_kept: bool,
    ) -> Vec<Arc<MessageRecord>> {
        self.ring.lock().page_of(before, limit, keep, with_kept)
    }

    /// The messages with ids in `runs` (inclusive ranges, in order) that the log holds,
    /// copied out (a few `Arc`s) so that reading them happens without the lock.
    pub(super) fn in_runs(&self, runs: &[(MessageId, MessageId)]) -> Vec<Arc<MessageRecord>> {
        let ring = self.ring.lock();
        let Some(oldest) = ring.oldest_id() else {
            return Vec::new();
        };
        runs.iter()
            .filter(|(_, last)| *last >= oldest)
            .flat_map(|&(first, last)| first.max(oldest)..=last)
            .filter_map(|id| ring.get(id))
            .collect()
    }

    /// The oldest message under the budgets (starred ones kept beyond them are older).
    pub(super) fn oldest_id(&self) -> Option<MessageId> {
        self.ring.lock().oldest_id()
    }

    pub(super) fn nth_newest(&self, index: usize) -> Option<Arc<MessageRecord>> {
        self.ring.lock().nth_newest(index)
    }

    pub(super) fn len(&self) -> usize {
        self.ring.lock().len()
    }

    /// Empties the log but for its starred messages; `also` runs under the lock (the
    /// store's forget, in order with the appends).
    pub(super) fn clear(&self, also: impl FnOnce()) {
        let cleared = {
            let mut ring = self.ring.lock();
            also();
            ring.clear()
        };
        cleared.iter().for_each(|m| m.evict());
    }

    /// Stars message `id` or takes its star away. A star is given only to a message the
    /// log holds (`Ok(false)` when it does not); a star is taken away whether or not it
    /// does (the store may hold the message). `also` runs under the lock once the star
    /// changed (the store hears of stars in the order they were given). At most
    /// [`MAX_PINNED`] are starred: `Err` with that number.
    pub(super) fn star(
        &self,
        id: MessageId,
        starred: bool,
        also: impl FnOnce(),
    ) -> Result<bool, usize> {
        let left = {
            let mut ring = self.ring.lock();
            match ring.get(id) {
                Some(message) if message.is_pinned() == starred => return Ok(true),
                Some(_) if starred && ring.pinned() >= MAX_PINNED => return Err(MAX_PINNED),
                Some(message) => message.set_pinned(starred),
                None if starred => return Ok(false),
                // Not in memory: only the store's star is taken away.
                None => {}
            }
            also();
            if starred { None } else { ring.unpin(id) }
        };
        if let Some(message) = left {
            message.evict();
        }
        Ok(true)
    }

    pub(super) fn topics(&self) -> Vec<TopicSeen> {
        self.topics.lock().list()
    }

    /// The `n` topics with the most messages, and how many messages the others had.
    pub(super) fn busiest_topics(&self, n: usize) -> (Vec<(Topic, u64)>, u64) {
        let counts = self.topics.lock().counts();
        topics_seen::busiest(counts, n)
    }
}
