//! The bounded message log: the newest messages, oldest evicted first.
//!
//! Bounded three times: by messages, by the delivery records they carry (a message keeps
//! one per subscriber and per resend), and by bytes (payloads and everything kept per
//! attempt). Ten thousand messages to ten thousand subscribers would otherwise hold 10^8
//! records, some 15 GB, and a thousand publishes of 1 MiB a gigabyte.
//!
//! What the messages hold is counted in `usage` (`LogUsage`, which each of them shares).

use std::collections::VecDeque;
use std::sync::Arc;

use super::usage::{Budget, LogUsage};
use crate::hub::message::{MessageId, MessageRecord};

#[derive(Debug)]
pub(crate) struct MessageLog {
    usage: Arc<LogUsage>,
    entries: VecDeque<Arc<MessageRecord>>,
    /// Pinned messages the budgets would have taken out, oldest first: all older than
    /// every entry, since messages leave from the front in id order.
    kept: VecDeque<Arc<MessageRecord>>,
}

impl MessageLog {
    pub(crate) fn new(budget: Budget) -> Self {
        // Grow on demand: a 10,000-message log that only ever sees ten should not
        // reserve room for 10,000 up front.
        Self {
            usage: Arc::new(LogUsage::new(Budget {
                messages: budget.messages.max(1),
                ..budget
            })),
            entries: VecDeque::new(),
            kept: VecDeque::new(),
        }
    }

    /// The usage its messages count themselves into.
    pub(crate) fn usage(&self) -> &Arc<LogUsage> {
        &self.usage
    }

    /// Adds the newest message, and takes out the oldest ones while the log is over any
    /// bound (the newest is always kept). The caller evicts what is returned once it no
    /// longer holds the log: freeing 10,000 records takes a while.
    #[must_use = "evict what left the log"]
    pub(crate) fn push(&mut self, record: Arc<MessageRecord>) -> Vec<Arc<MessageRecord>> {
        record.enter_log(&self.usage);
        self.entries.push_back(record);
        self.trim()
    }

    /// Adds a message that may be older than the newest (a shared log's, read by more
    /// than one reader) in its place by id. `None` when it is not logged: it is there
    /// already, or older than every message the log holds.
    #[must_use = "evict what left the log"]
    pub(crate) fn insert(&mut self, record: Arc<MessageRecord>) -> Option<Vec<Arc<MessageRecord>>> {
        // Pinned messages kept beyond the budgets are older than every entry: nothing
        // goes below them.
        if self.kept.back().is_some_and(|kept| record.id <= kept.id) {
            return None;
        }
        let newest = self.entries.back().map(|m| m.id);
        if newest.is_none_or(|newest| record.id > newest) {
            return Some(self.push(record));
        }
        let at = self
            .entries
            .binary_search_by_key(&record.id, |m| m.id)
            .err()?;
        // Older than the oldest entry: taken while there is room (a reader that fell
        // behind catching up); otherwise it would be the first to go.
        if at == 0 && self.entries.len() >= self.usage.budget().messages {
            return None;
        }
        record.enter_log(&self.usage);
        self.entries.insert(at, record);
        Some(self.trim())
    }

    /// Takes out the oldest messages while the log is over any bound, keeping the newest.
    #[must_use = "evict what left the log"]
    pub(crate) fn trim(&mut self) -> Vec<Arc<MessageRecord>> {
        let mut out = Vec::new();
        while self.entries.len() > 1
            && (self.entries.len() > self.usage.budget().messages || self.usage.over())
        {
            if let Some(oldest) = self.entries.pop_front() {
                if oldest.is_pinned() {
                    oldest.leave_budget();
                    self.kept.push_back(oldest);
                    continue;
                }
                oldest.leave_log();
                out.push(oldest);
            }
        }
        out
    }

    /// The oldest message under the budgets (pinned ones kept beyond them are older).
    pub(crate) fn oldest_id(&self) -> Option<MessageId> {
        self.entries.front().map(|m| m.id)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len() + self.kept.len()
    }

    /// How many messages are pinned.
    pub(crate) fn pinned(&self) -> usize {
        self.kept.len() + self.entries.iter().filter(|m| m.is_pinned()).count()
    }

    /// Unpins a message kept beyond the budgets: it leaves, and is returned to be
    /// evicted. One still under the budgets stays where it is.
    #[must_use = "evict what left the log"]
    pub(crate) fn unpin(&mut self, id: MessageId) -> Option<Arc<MessageRecord>> {
        let index = self.kept.binary_search_by_key(&id, |m| m.id).ok()?;
        let message = self.kept.remove(index)?;
        message.leave_log();
        Some(message)
    }

    /// Empties the log but for its pinned messages, returning the rest to be evicted.
    #[must_use = "evict what left the log"]
    pub(crate) fn clear(&mut self) -> Vec<Arc<MessageRecord>> {
        let mut out = Vec::new();
        for message in self.entries.drain(..) {
            if message.is_pinned() {
                message.leave_budget();
                self.kept.push_back(message);
            } else {
                message.leave_log();
                out.push(message);
            }
        }
        out
    }

    /// Up to `limit` messages older than `before` (all when `None`), newest first.
    #[cfg(test)]
    pub(crate) fn page(&self, before: Option<MessageId>, limit: usize) -> Vec<Arc<MessageRecord>> {
        self.page_of(before, limit, |_| true, true)
    }

    /// Up to `limit` messages older than `before` (all when `None`) for which `keep`
    /// holds, newest first; `with_kept` includes the pinned messages kept beyond the
    /// budgets (a durable store has those too, in their place among the older ones).
    pub(crate) fn page_of(
        &self,
        before: Option<MessageId>,
        limit: usize,
        keep: impl Fn(&MessageRecord) -> bool,
        with_kept: bool,
    ) -> Vec<Arc<MessageRecord>> {
        // Ids increase along both deques: the cursor is found by binary search.
        let end = |list: &VecDeque<Arc<MessageRecord>>| {
            before.map_or(list.len(), |before| list.partition_point(|m| m.id < before))
        };
        let kept = if with_kept {
            self.kept.range(..end(&self.kept))
        } else {
            self.kept.range(0..0)
        };
        self.entries
            .range(..end(&self.entries))
            .rev()
            .chain(kept.rev())
            .filter(|m| keep(m))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The `index`-th newest message (0 is the newest), pinned ones kept beyond the
    /// budgets last.
    pub(crate) fn nth_newest(&self, index: usize) -> Option<Arc<MessageRecord>> {
        let newest = |list: &VecDeque<Arc<MessageRecord>>, index: usize| {
            index
                .checked_add(1)
                .and_then(|n| list.len().checked_sub(n))
                .and_then(|i| list.get(i))
                .cloned()
        };
        match index.checked_sub(self.entries.len()) {
            None => newest(&self.entries, index),
            Some(index) => newest(&self.kept, index),
        }
    }

    pub(crate) fn get(&self, id: MessageId) -> Option<Arc<MessageRecord>> {
        // Ids are increasing along the deques, so a binary search finds one in O(log n).
        let find = |list: &VecDeque<Arc<MessageRecord>>| {
            let index = list.binary_search_by_key(&id, |m| m.id).ok()?;
            list.get(index).cloned()
        };
        find(&self.entries).or_else(|| find(&self.kept))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::hub::attempt::{Attempt, Round};
    use crate::hub::log::DELIVERY_BUDGET;
    use crate::hub::message::{Draft, Held, Source};
    use crate::hub::{DeliveryError, Outcome};

    fn budget(messages: usize, records: usize) -> Budget {
        Budget {
            messages,
            records,
            bytes: usize::MAX,
        }
    }

    fn record(id: MessageId) -> Arc<MessageRecord> {
        to_subscribers(id, 0)
    }

    fn to_subscribers(id: MessageId, subscribers: usize) -> Arc<MessageRecord> {
        Arc::new(MessageRecord::new(
            id,
            Draft::default(),
            Source::Console,
            subscribers,
        ))
    }

    #[test]
    fn a_shared_message_takes_its_place_by_id_and_one_older_than_all_is_not_logged() {
        let mut log = MessageLog::new(budget(100, 1_000));
        for id in [2, 5, 3] {
            assert!(log.insert(record(id)).is_some());
        }
        assert!(log.insert(record(3)).is_none(), "there already");
        assert!(log.insert(record(1)).is_some(), "older than all, with room");
        let ids: Vec<_> = log.page(None, 10).iter().map(|m| m.id).collect();
        assert_eq!(ids, [5, 3, 2, 1]);
        assert_eq!(log.get(3).unwrap().id, 3, "still found by its id");
        let mut full = MessageLog::new(budget(2, 1_000));
        for id in [4, 6] {
            assert!(full.insert(record(id)).is_some());
        }
        assert!(
            full.insert(record(2)).is_none(),
            "older than all, and no room"
        );
    }

    #[test]
    fn deliveries_added_after_eviction_still_get_slots_of_their_own() {
        let message = record(1);
        let one = || std::iter::once(Arc::<str>::from("s:1"));
        assert_eq!(message.add_deliveries(one(), Round::Resend), 0);
        assert_eq!(message.add_deliveries(one(), Round::Resend), 1);
        message.evict();
        assert_eq!(message.add_deliveries(one(), Round::Resend), 2);
        assert_eq!(message.add_deliveries(one(), Round::Resend), 3);
        assert!(message.deliveries().is_empty(), "none kept once evicted");
    }

    #[test]
    fn messages_with_many_subscribers_are_evicted_sooner() {
        let mut log = MessageLog::new(budget(100, 1_000));
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
    fn a_pinned_message_stays_whatever_the_budgets_and_a_clear() {
        let mut log = MessageLog::new(budget(3, DELIVERY_BUDGET));
        for id in 1..=2 {
            let _ = log.push(record(id));
        }
        log.get(1).unwrap().set_pinned(true);
        for id in 3..=6 {
            let _ = log.push(record(id));
        }
        let ids: Vec<_> = log.page(None, 10).iter().map(|m| m.id).collect();
        assert_eq!(ids, [6, 5, 4, 1], "the newest three, and the pinned one");
        assert_eq!(log.nth_newest(3).map(|m| m.id), Some(1));
        assert_eq!(log.get(1).map(|m| m.id), Some(1));
        assert_eq!(
            log.page(Some(4), 10)
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(log.pinned(), 1);
        let _ = log.clear();
        assert_eq!(
            log.page(None, 10).iter().map(|m| m.id).collect::<Vec<_>>(),
            [1]
        );
        let unpinned = log.unpin(1).unwrap();
        assert_eq!(unpinned.id, 1);
        assert_eq!(log.len(), 0);
    }

    #[test]
    fn keeps_only_the_newest_messages() {
        let mut log = MessageLog::new(budget(3, DELIVERY_BUDGET));
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
        let mut log = MessageLog::new(budget(100, DELIVERY_BUDGET));
        for id in 1..=10 {
            let _ = log.push(record(id));
        }
        let ids: Vec<_> = log.page(Some(8), 3).iter().map(|m| m.id).collect();
        assert_eq!(ids, [7, 6, 5]);
        assert!(log.page(Some(1), 3).is_empty());
    }

    #[test]
    fn a_zero_capacity_still_keeps_the_latest() {
        let mut log = MessageLog::new(budget(0, DELIVERY_BUDGET));
        let _ = log.push(record(1));
        let _ = log.push(record(2));
        assert_eq!(log.page(None, 10).len(), 1);
        assert_eq!(log.get(2).map(|m| m.id), Some(2));
    }

    #[test]
    fn payloads_and_attempts_count_against_the_byte_budget() {
        let mut log = MessageLog::new(Budget {
            messages: 1_000,
            records: DELIVERY_BUDGET,
            bytes: 3 * 1024 * 1024 + 4096,
        });
        let mib = |id| {
            Arc::new(MessageRecord::new(
                id,
                Draft::new(vec![b'x'; 1024 * 1024]),
                Source::Console,
                1,
            ))
        };
        for id in 1..=5 {
            log.push(mib(id)).iter().for_each(|m| m.evict());
        }
        assert_eq!(log.len(), 3, "three MiB fit in the budget, four do not");
        assert!(log.usage().held().bytes <= log.usage().budget().bytes);
        // What an attempt keeps counts too, so a subscriber's long answers push old
        // messages out.
        let newest = log.get(5).unwrap();
        newest.add_deliveries(std::iter::once(Arc::<str>::from("s:1")), Round::Publish);
        let before = log.usage().held().bytes;
        newest.push_attempt(
            0,
            Attempt {
                at: std::time::SystemTime::now(),
                outcome: Outcome::Failed(DeliveryError::Request("x".repeat(5000))),
                exchange: None,
            },
        );
        assert!(log.usage().held().bytes >= before + 5000);
        assert_eq!(log.trim().len(), 1, "over the budget, the oldest leaves");
        let evicted = log.clear();
        assert_eq!(evicted.len(), 2);
        assert_eq!(log.usage().held(), Held::default(), "all given back");
    }

    #[test]
    fn forwarded_headers_and_trace_state_count_against_the_byte_budget() {
        let mut log = MessageLog::new(budget(100, DELIVERY_BUDGET));
        let _ = log.push(record(1));
        let bare = log.usage().held().bytes;
        let mut trace = crate::wire::TraceContext::new_root();
        trace.state = Some("congo=".to_owned() + &"t".repeat(3000));
        let draft = Draft {
            headers: vec![("x-request-id".to_owned(), Bytes::from(vec![b'r'; 5000]))],
            trace: Some(trace),
            ..Draft::default()
        };
        let _ = log.push(Arc::new(MessageRecord::new(2, draft, Source::Console, 0)));
        let grown = log.usage().held().bytes - bare;
        assert!(grown >= bare + 8000, "{grown} bytes counted for the second");
    }

    #[test]
    fn resends_count_against_the_record_budget() {
        let mut log = MessageLog::new(budget(100, 50));
        let _ = log.push(to_subscribers(1, 10));
        let _ = log.push(to_subscribers(2, 10));
        let first = log.get(1).unwrap();
        first.add_deliveries(
            std::iter::repeat_n(Arc::<str>::from("s:1"), 10),
            Round::Publish,
        );
        assert_eq!(
            log.usage().held().records,
            20,
            "the publish round is counted once"
        );
        let second = log.get(2).unwrap();
        for _ in 0..4 {
            second.add_deliveries(
                std::iter::repeat_n(Arc::<str>::from("s:1"), 10),
                Round::Resend,
            );
        }
        assert_eq!(log.usage().held().records, 60);
        let evicted = log.trim();
        assert_eq!(evicted.iter().map(|m| m.id).collect::<Vec<_>>(), [1]);
        assert_eq!(log.usage().held().records, 50);
    }
}
