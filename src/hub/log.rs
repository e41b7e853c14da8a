//! The bounded message log: the newest messages, oldest evicted first.
//!
//! Bounded twice: by messages, and by the delivery records they carry, since a message
//! keeps one per subscriber (about 150 bytes with its first attempt). Ten thousand
//! messages to ten thousand subscribers would otherwise hold 10^8 of them, some 15 GB.

use std::collections::VecDeque;
use std::sync::Arc;

use super::message::{MessageId, MessageRecord};

/// Delivery records the log keeps at most (about 75 MB), counted by the subscribers each
/// message was published to.
pub(crate) const DELIVERY_BUDGET: usize = 500_000;

#[derive(Debug)]
pub(crate) struct MessageLog {
    capacity: usize,
    delivery_budget: usize,
    /// The sum of `subscribers` over `entries`.
    deliveries: usize,
    entries: VecDeque<Arc<MessageRecord>>,
}

impl MessageLog {
    pub(crate) fn new(capacity: usize, delivery_budget: usize) -> Self {
        // Grow on demand: a 10,000-message log that only ever sees ten should not
        // reserve room for 10,000 up front.
        Self {
            capacity: capacity.max(1),
            delivery_budget,
            deliveries: 0,
            entries: VecDeque::new(),
        }
    }

    /// Adds the newest message, and takes out the oldest ones while the log is over
    /// either bound (the newest is always kept). The caller evicts what is returned once
    /// it no longer holds the log: freeing 10,000 records takes a while.
    #[must_use = "evict what left the log"]
    pub(crate) fn push(&mut self, record: Arc<MessageRecord>) -> Vec<Arc<MessageRecord>> {
        self.deliveries += record.subscribers;
        self.entries.push_back(record);
        let mut out = Vec::new();
        while self.entries.len() > 1
            && (self.entries.len() > self.capacity || self.deliveries > self.delivery_budget)
        {
            if let Some(oldest) = self.entries.pop_front() {
                self.deliveries -= oldest.subscribers;
                out.push(oldest);
            }
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Empties the log, returning what was in it to be evicted.
    #[must_use = "evict what left the log"]
    pub(crate) fn clear(&mut self) -> Vec<Arc<MessageRecord>> {
        self.deliveries = 0;
        self.entries.drain(..).collect()
    }

    /// Up to `limit` messages older than `before` (all when `None`), newest first.
    pub(crate) fn page(&self, before: Option<MessageId>, limit: usize) -> Vec<Arc<MessageRecord>> {
        self.entries
            .iter()
            .rev()
            .filter(|m| before.is_none_or(|before| m.id < before))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The `index`-th newest message (0 is the newest).
    pub(crate) fn nth_newest(&self, index: usize) -> Option<Arc<MessageRecord>> {
        let len = self.entries.len();
        index
            .checked_add(1)
            .and_then(|n| len.checked_sub(n))
            .and_then(|i| self.entries.get(i))
            .cloned()
    }

    pub(crate) fn get(&self, id: MessageId) -> Option<Arc<MessageRecord>> {
        // Ids are increasing along the deque, so a binary search finds one in O(log n).
        let index = self.entries.binary_search_by_key(&id, |m| m.id).ok()?;
        self.entries.get(index).cloned()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::hub::message::{Round, Source};

    fn record(id: MessageId) -> Arc<MessageRecord> {
        to_subscribers(id, 0)
    }

    fn to_subscribers(id: MessageId, subscribers: usize) -> Arc<MessageRecord> {
        Arc::new(MessageRecord::new(
            id,
            Bytes::new(),
            None,
            Source::Console,
            subscribers,
        ))
    }

    #[test]
    fn messages_with_many_subscribers_are_evicted_sooner() {
        let mut log = MessageLog::new(100, 1_000);
        for id in 1..=5 {
            let _ = log.push(to_subscribers(id, 300));
        }
        let ids: Vec<_> = log.page(None, 10).iter().map(|m| m.id).collect();
        assert_eq!(
            ids,
            [5, 4, 3],
            "900 delivery records fit in 1,000, 1,200 do not"
        );
        let oldest = log.get(3).unwrap();
        oldest.add_deliveries(
            std::iter::repeat_n(Arc::<str>::from("s:1"), 300),
            Round::Publish,
        );
        assert_eq!(oldest.deliveries().len(), 300);
        let evicted = log.push(to_subscribers(6, 5_000));
        assert_eq!(evicted.len(), 3);
        evicted.iter().for_each(|m| m.evict());
        let ids: Vec<_> = log.page(None, 10).iter().map(|m| m.id).collect();
        assert_eq!(ids, [6], "the newest is kept even over the budget");
        assert!(
            oldest.deliveries().is_empty(),
            "an evicted message keeps its records"
        );
        assert_eq!(log.clear().len(), 1);
        for id in 7..=16 {
            let _ = log.push(to_subscribers(id, 100));
        }
        assert_eq!(log.len(), 10, "clearing gave the budget back");
    }

    #[test]
    fn keeps_only_the_newest_messages() {
        let mut log = MessageLog::new(3, DELIVERY_BUDGET);
        for id in 1..=5 {
            let _ = log.push(record(id));
        }
        assert_eq!(log.len(), 3);
        let ids: Vec<_> = log.page(None, 10).iter().map(|m| m.id).collect();
        assert_eq!(ids, [5, 4, 3]);
        assert!(log.get(2).is_none(), "evicted message still found");
        assert_eq!(log.nth_newest(0).map(|m| m.id), Some(5));
        assert_eq!(log.nth_newest(2).map(|m| m.id), Some(3));
        assert!(log.nth_newest(3).is_none());
        assert_eq!(log.get(4).map(|m| m.id), Some(4));
    }

    #[test]
    fn pages_walk_backwards_from_a_cursor() {
        let mut log = MessageLog::new(100, DELIVERY_BUDGET);
        for id in 1..=10 {
            let _ = log.push(record(id));
        }
        let ids: Vec<_> = log.page(Some(8), 3).iter().map(|m| m.id).collect();
        assert_eq!(ids, [7, 6, 5]);
        assert!(log.page(Some(1), 3).is_empty());
    }

    #[test]
    fn a_zero_capacity_still_keeps_the_latest() {
        let mut log = MessageLog::new(0, DELIVERY_BUDGET);
        let _ = log.push(record(1));
        let _ = log.push(record(2));
        assert_eq!(log.page(None, 10).len(), 1);
        assert_eq!(log.get(2).map(|m| m.id), Some(2));
    }
}
