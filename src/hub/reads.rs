//! What the console, the API and `/metrics` read: listings, the log, totals, and the
//! events and version that tell them something changed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::Hub;
use super::event::{Activity, HubEvent};
use super::log::TopicSeen;
use super::message::{MessageId, MessageRecord};
use super::metrics::MetricsSnapshot;
use super::routing::{Reach, ReachSummary, Recipient, Route};
use super::subscriber::SubscriberView;
use super::topic::{Pattern, Topic};

/// Subscribers coming and going kept for [`Hub::activity`].
const ACTIVITY_CAPACITY: usize = 1_000;

/// Hub-wide delivery counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages: u64,
    pub delivered: u64,
    pub failed: u64,
}

impl Hub {
    /// Every live subscriber, ordered by address.
    pub fn subscribers(&self) -> Vec<SubscriberView> {
        self.shared.registry.views(self.ttl())
    }

    /// One live subscriber, by its address as registered or as shown.
    pub fn subscriber(&self, address: &str) -> Option<SubscriberView> {
        self.shared.registry.view(address, self.ttl())
    }

    pub fn subscriber_count(&self) -> usize {
        self.shared.registry.len()
    }

    /// Where a message with `topic` goes now: every subscriber without topics, and those
    /// with a pattern that matches.
    pub(super) fn route(&self, topic: Option<&Topic>) -> Route {
        self.shared.registry.route(topic)
    }

    /// Who a message with `topic` would go to now, as a publish would queue it.
    pub fn reach(&self, topic: Option<&Topic>) -> Reach {
        self.shared.registry.reach(topic)
    }

    /// The recipient of one live subscriber, by its address as registered or as shown.
    pub(super) fn recipient(&self, address: &str) -> Option<Recipient> {
        self.shared.registry.recipient(address)
    }

    /// Delivery outcome counts and the latency histogram.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    pub fn totals(&self) -> Totals {
        Totals {
            messages: self.shared.log.taken(),
            delivered: self.shared.metrics.delivered(),
            failed: self.shared.metrics.failed(),
        }
    }

    /// Up to `limit` messages in the log's memory published before message `before`,
    /// newest first. Never touches the store: the console calls it every frame.
    pub fn messages(&self, before: Option<MessageId>, limit: usize) -> Vec<Arc<MessageRecord>> {
        self.shared.log.page(before, limit, |_| true, true)
    }

    /// Like [`Hub::messages`], but going on into the store for messages memory no longer
    /// holds, and only those whose topic matches `pattern` if one is given. May read the
    /// disk: call it where blocking is allowed.
    pub fn history(
        &self,
        before: Option<MessageId>,
        limit: usize,
        pattern: Option<&Pattern>,
    ) -> Vec<Arc<MessageRecord>> {
        let matches = |m: &MessageRecord| {
            pattern.is_none_or(|p| m.topic.as_ref().is_some_and(|t| p.matches(t)))
        };
        // Pinned messages kept beyond memory's budgets are in the store, in their place.
        let with_kept = !self.shared.store.is_durable();
        let page = self.shared.log.page(before, limit, matches, with_kept);
        self.and_kept(page, before, limit, pattern)
    }

    /// `page` from memory, continued from the store when it is short of `limit`.
    fn and_kept(
        &self,
        mut page: Vec<Arc<MessageRecord>>,
        before: Option<MessageId>,
        limit: usize,
        pattern: Option<&Pattern>,
    ) -> Vec<Arc<MessageRecord>> {
        if page.len() >= limit || !self.shared.store.is_durable() {
            return page;
        }
        // Below the oldest message memory holds (or `before`, if that is lower).
        let oldest = self.shared.log.oldest_id();
        let from = match (before, oldest) {
            (Some(before), Some(oldest)) => before.min(oldest),
            (Some(before), None) => before,
            (None, Some(oldest)) => oldest,
            (None, None) => MessageId::MAX,
        };
        let more = self.shared.store.page(from, limit - page.len(), pattern);
        page.extend(more);
        page
    }

    /// Every topic messages were published with (the most recent [`MAX_TOPICS_SEEN`]),
    /// the most recent first.
    ///
    /// [`MAX_TOPICS_SEEN`]: super::MAX_TOPICS_SEEN
    pub fn topics(&self) -> Vec<TopicSeen> {
        self.shared.log.topics()
    }

    /// The `n` topics with the most messages, and how many messages the other topics had.
    pub fn busiest_topics(&self, n: usize) -> (Vec<(Topic, u64)>, u64) {
        self.shared.log.busiest_topics(n)
    }

    /// How many subscribers a message with `topic` would reach now, and the addresses of
    /// those it reaches by their patterns (the first `named` of them): what the Topics
    /// view and `/api/v1/topics` show per topic, without listing every subscriber that
    /// takes everything once per topic.
    pub fn reach_of(&self, topic: &Topic, named: usize) -> ReachSummary {
        self.route(Some(topic)).summary(named)
    }

    /// How many subscribers a message with `topic` (or none) would reach now, and the
    /// first `named` of them as a publish would queue them: what Compose previews.
    pub fn reach_first(&self, topic: Option<&Topic>, named: usize) -> (usize, Vec<Arc<str>>) {
        let route = self.route(topic);
        let first = route.iter().take(named);
        (
            route.len(),
            first.map(|r| r.subscriber.address.clone()).collect(),
        )
    }

    /// The `index`-th newest logged message (0 is the newest): for views that show a
    /// window of the log without copying all of it.
    pub fn nth_newest_message(&self, index: usize) -> Option<Arc<MessageRecord>> {
        self.shared.log.nth_newest(index)
    }

    /// The deliveries of the messages with ids in `runs` (inclusive ranges, in order)
    /// that memory holds, summed: the messages are found under the log's lock, their
    /// deliveries read after it.
    pub fn delivery_counts(&self, runs: &[(MessageId, MessageId)]) -> super::DeliverySummary {
        let mut total = super::DeliverySummary::default();
        for message in self.shared.log.in_runs(runs) {
            let summary = message.summary();
            total.delivered += summary.delivered;
            total.failed += summary.failed;
            total.pending += summary.pending;
            total.retrying += summary.retrying;
        }
        total
    }

    /// A message the log holds in memory.
    pub fn message(&self, id: MessageId) -> Option<Arc<MessageRecord>> {
        self.shared.log.get(id)
    }

    /// A logged message: from memory, or else from the store (which may read the disk).
    pub fn find_message(&self, id: MessageId) -> Option<Arc<MessageRecord>> {
        self.message(id).or_else(|| self.shared.store.get(id))
    }

    /// What the store holds, and where.
    pub fn store_usage(&self) -> super::StoreUsage {
        self.shared.store.usage()
    }

    /// Resolves once everything the hub recorded so far is kept by its store.
    pub fn flush_store(&self) -> super::Commit {
        self.shared.store.flush()
    }

    pub fn logged_messages(&self) -> usize {
        self.shared.log.len()
    }

    /// Bytes the log holds now (payloads, delivery records, attempts), against
    /// `--log-max-bytes`.
    pub fn logged_bytes(&self) -> usize {
        self.shared.log.usage().held().bytes
    }

    /// Forgets the log: what memory holds and what the store keeps, but for messages
    /// with a delivery still to make (the console's Clear and "forget history"). The
    /// commit says whether the store forgot too.
    pub fn clear_log(&self) -> super::Commit {
        let mut kept = None;
        self.shared
            .log
            .clear(|| kept = Some(self.shared.store.keep(super::Change::Forget)));
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        kept.unwrap_or_else(super::Commit::done)
    }

    /// Subscribers registered and removed, oldest first.
    pub fn activity(&self) -> Vec<Activity> {
        self.shared.activity.lock().iter().cloned().collect()
    }

    /// Follows hub events live from now on.
    pub fn events(&self) -> broadcast::Receiver<HubEvent> {
        self.shared.events.subscribe()
    }

    /// Changes whenever anything in the hub changes.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Relaxed)
    }

    /// Keeps `event` in the activity log as well as sending it.
    pub(super) fn record_activity(&self, event: HubEvent) {
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

    pub(super) fn emit(&self, event: HubEvent) {
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        // No receiver is the common case in headless mode; that is not an error.
        self.shared.events.send(event).ok();
    }
}
