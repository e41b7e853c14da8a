//! The topics messages have been published with: how many, when last, and which message
//! was the last, for the console's Topics view, the API and the metrics. Bounded: past
//! [`MAX_TOPICS_SEEN`], the topic seen least recently is forgotten, so that a publisher
//! inventing a topic per message cannot grow the hub without end.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use crate::hub::message::MessageId;
use crate::hub::topic::Topic;

/// Topics remembered at most.
pub const MAX_TOPICS_SEEN: usize = 10_000;

/// One topic as it has been published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSeen {
    pub topic: Topic,
    /// Messages published with it (since it was last forgotten, if ever).
    pub messages: u64,
    pub last_at: SystemTime,
    /// The newest message with it: its payload, while the log keeps it, is the one the
    /// console loads into Compose.
    pub last_id: MessageId,
}

#[derive(Debug, Default)]
pub(super) struct TopicsSeen {
    by_topic: HashMap<Topic, (TopicSeen, u64)>,
    /// Topics by when they were last seen, oldest first, for forgetting.
    by_turn: BTreeMap<u64, Topic>,
    turn: u64,
    /// Messages with any topic, forgotten or not.
    messages: u64,
}

impl TopicsSeen {
    pub(super) fn record(&mut self, topic: &Topic, id: MessageId, at: SystemTime) {
        self.messages += 1;
        self.turn += 1;
        let turn = self.turn;
        if let Some((seen, last_turn)) = self.by_topic.get_mut(topic) {
            seen.messages += 1;
            seen.last_at = seen.last_at.max(at);
            seen.last_id = seen.last_id.max(id);
            self.by_turn.remove(last_turn);
            *last_turn = turn;
            self.by_turn.insert(turn, topic.clone());
            return;
        }
        if self.by_topic.len() >= MAX_TOPICS_SEEN
            && let Some((_, oldest)) = self.by_turn.pop_first()
        {
            self.by_topic.remove(&oldest);
        }
        let seen = TopicSeen {
            topic: topic.clone(),
            messages: 1,
            last_at: at,
            last_id: id,
        };
        self.by_topic.insert(topic.clone(), (seen, turn));
        self.by_turn.insert(turn, topic.clone());
    }

    /// Every topic remembered, the most recent first.
    pub(super) fn list(&self) -> Vec<TopicSeen> {
        self.by_turn
            .values()
            .rev()
            .filter_map(|topic| self.by_topic.get(topic))
            .map(|(seen, _)| seen.clone())
            .collect()
    }

    /// Every topic's count, and the messages with any topic: what [`busiest`] picks
    /// from, copied out so that the sorting happens without the lock publishes take.
    pub(super) fn counts(&self) -> (Vec<(Topic, u64)>, u64) {
        let counts = self
            .by_topic
            .values()
            .map(|(seen, _)| (seen.topic.clone(), seen.messages))
            .collect();
        (counts, self.messages)
    }
}

/// The `n` topics with the most messages, most first, and how many messages with a topic
/// the others had, from [`TopicsSeen::counts`].
pub(super) fn busiest(
    (mut counts, messages): (Vec<(Topic, u64)>, u64),
    n: usize,
) -> (Vec<(Topic, u64)>, u64) {
    let by_count = |a: &(Topic, u64), b: &(Topic, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if counts.len() > n && n > 0 {
        counts.select_nth_unstable_by(n - 1, by_count);
    }
    counts.truncate(n);
    counts.sort_unstable_by(by_count);
    let named: u64 = counts.iter().map(|(_, count)| count).sum();
    (counts, messages.saturating_sub(named))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn topic(text: &str) -> Topic {
        Topic::parse(text).unwrap()
    }

    #[test]
    fn counts_and_remembers_the_last() {
        let mut seen = TopicsSeen::default();
        let t0 = SystemTime::UNIX_EPOCH;
        seen.record(&topic("a"), 1, t0);
        seen.record(&topic("b"), 2, t0 + Duration::from_secs(1));
        seen.record(&topic("a"), 3, t0 + Duration::from_secs(2));
        let list = seen.list();
        assert_eq!(list[0].topic, topic("a"));
        assert_eq!((list[0].messages, list[0].last_id), (2, 3));
        assert_eq!(list[1].topic, topic("b"));
        let (busiest, other) = busiest(seen.counts(), 1);
        assert_eq!(busiest, [(topic("a"), 2)]);
        assert_eq!(other, 1);
    }

    #[test]
    fn forgets_the_least_recent_past_its_bound() {
        let mut seen = TopicsSeen::default();
        let at = SystemTime::UNIX_EPOCH;
        seen.record(&topic("kept"), 0, at);
        for n in 1..MAX_TOPICS_SEEN as u64 {
            seen.record(&topic(&format!("t{n}")), n, at);
        }
        // Seen again, so no longer the oldest.
        seen.record(&topic("kept"), 1, at);
        seen.record(&topic("new"), 2, at);
        let list = seen.list();
        assert_eq!(list.len(), MAX_TOPICS_SEEN);
        assert!(list.iter().any(|s| s.topic == topic("kept")));
        assert!(
            !list.iter().any(|s| s.topic == topic("t1")),
            "t1 was oldest"
        );
        // Forgotten topics still count, as "other".
        assert_eq!(busiest(seen.counts(), 0).1, MAX_TOPICS_SEEN as u64 + 2);
    }
}
