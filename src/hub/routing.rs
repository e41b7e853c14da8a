//! Who a message goes to: every subscriber without topics, and those whose patterns match
//! its topic, found through the topic index. Kept in step with the subscribers by the
//! registry, under its lock.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::subscriber::{Entry, Job, SubscriberShared};
use super::topic::{MAX_HUB_PATTERNS, Pattern, Topic, TopicError, TopicIndex};

/// One live subscriber as a publish sees it: whom to record and where to queue.
#[derive(Debug, Clone)]
pub(super) struct Recipient {
    pub(super) subscriber: Arc<SubscriberShared>,
    pub(super) queue: mpsc::Sender<Job>,
}

impl Recipient {
    pub(super) fn of(entry: &Entry) -> Self {
        Self {
            subscriber: entry.shared.clone(),
            queue: entry.queue.clone(),
        }
    }
}

/// The recipients of one message: those who take everything, shared with every other
/// publish (however many there are, a publish copies none of them), and those its topic
/// matched.
#[derive(Debug, Clone, Default)]
pub(super) struct Route {
    everyone: Arc<Vec<Recipient>>,
    matched: Vec<Recipient>,
}

impl Route {
    pub(super) fn one(recipient: Recipient) -> Self {
        Self {
            everyone: Arc::default(),
            matched: vec![recipient],
        }
    }

    pub(super) fn len(&self) -> usize {
        self.everyone.len() + self.matched.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Recipient> {
        self.everyone.iter().chain(&self.matched)
    }

    /// How many it reaches, and the first `named` of those its topic matched.
    pub(super) fn summary(&self, named: usize) -> ReachSummary {
        let matched = self.matched.iter().take(named);
        ReachSummary {
            subscribers: self.len(),
            matched: self.matched.len(),
            named: matched.map(|r| r.subscriber.address.clone()).collect(),
        }
    }

    pub(super) fn reach(&self) -> Reach {
        let addresses = |list: &[Recipient]| -> Vec<Arc<str>> {
            list.iter().map(|r| r.subscriber.address.clone()).collect()
        };
        Reach {
            everyone: addresses(&self.everyone),
            matched: addresses(&self.matched),
        }
    }
}

/// How many a message with some topic would go to now, in short.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReachSummary {
    /// Everyone it reaches: those without topics and those it matched.
    pub subscribers: usize,
    /// Those whose patterns it matched.
    pub matched: usize,
    /// The first few of those, by address.
    pub named: Vec<Arc<str>>,
}

/// Who a message with some topic would go to now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Subscribers without topics, who get every message, in registration order.
    pub everyone: Vec<Arc<str>>,
    /// Subscribers with a pattern that matches the topic, by address.
    pub matched: Vec<Arc<str>>,
}

impl Reach {
    pub fn len(&self) -> usize {
        self.everyone.len() + self.matched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.everyone.iter().chain(&self.matched)
    }
}

#[derive(Debug, Default)]
pub(super) struct Routing {
    /// Subscribers without topics, in registration order. A change copies it only while
    /// a publish still holds the old one.
    everyone: Arc<Vec<Recipient>>,
    /// Subscribers with topics, by key, and their patterns in the index.
    topical: HashMap<Arc<str>, Recipient>,
    index: TopicIndex<Arc<str>>,
    /// Patterns in the index, held to [`MAX_HUB_PATTERNS`].
    patterns: usize,
}

impl Routing {
    /// Where a message with `topic` goes now.
    pub(super) fn route(&self, topic: Option<&Topic>) -> Route {
        let matched = match topic {
            Some(topic) if !self.topical.is_empty() => self
                .index
                .matching(topic)
                .iter()
                .filter_map(|key| self.topical.get(key).cloned())
                .collect(),
            _ => Vec::new(),
        };
        Route {
            everyone: self.everyone.clone(),
            matched,
        }
    }

    /// Whether the index has room for `added` patterns once `dropped` are taken out.
    pub(super) fn room_for(&self, added: usize, dropped: usize) -> Result<(), TopicError> {
        if self.patterns - dropped + added > MAX_HUB_PATTERNS {
            return Err(TopicError::HubFull {
                max: MAX_HUB_PATTERNS,
            });
        }
        Ok(())
    }

    /// Adds a subscriber with `patterns` (none: it gets everything).
    pub(super) fn add(&mut self, recipient: Recipient, patterns: &[Pattern]) {
        if patterns.is_empty() {
            Arc::make_mut(&mut self.everyone).push(recipient);
            return;
        }
        let key = &recipient.subscriber.key;
        for pattern in patterns {
            self.index.insert(pattern, key.clone());
        }
        self.patterns += patterns.len();
        self.topical.insert(key.clone(), recipient);
    }

    /// Takes a subscriber out, with the patterns it was added with (or last given).
    pub(super) fn remove(&mut self, subscriber: &SubscriberShared, patterns: &[Pattern]) {
        let key = &subscriber.key;
        if patterns.is_empty() {
            Arc::make_mut(&mut self.everyone).retain(|r| r.subscriber.key != *key);
            return;
        }
        for pattern in patterns {
            self.index.remove(pattern, key);
        }
        self.patterns -= patterns.len();
        self.topical.remove(key);
    }

    /// Takes several subscribers out at once, each with its patterns: one pass over those
    /// without topics, however many leave (10,000 expiring together after a laptop slept
    /// would otherwise be 10,000 passes under the lock).
    pub(super) fn remove_all(&mut self, leaving: &[&SubscriberShared]) {
        let mut without_topics = std::collections::HashSet::new();
        for subscriber in leaving {
            let patterns = subscriber.topics();
            if patterns.is_empty() {
                without_topics.insert(subscriber.key.clone());
            } else {
                self.remove(subscriber, &patterns);
            }
        }
        if !without_topics.is_empty() {
            Arc::make_mut(&mut self.everyone)
                .retain(|r| !without_topics.contains(&r.subscriber.key));
        }
    }

    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.everyone.is_empty() && self.topical.is_empty() && self.patterns == 0
    }
}
