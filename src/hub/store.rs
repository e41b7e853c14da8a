//! The seam between the hub and where it keeps what it accepted.
//!
//! The hub tells its [`Store`] every change as it makes it (a message accepted, the
//! deliveries queued for it, each attempt and outcome, subscribers coming, refreshing and
//! going) and reads back what its own bounded memory no longer holds. [`Memory`] keeps
//! nothing beyond that memory: the hub as it always was. `crate::store` has the SQLite
//! one. The hub knows nothing of how a store keeps things, only when they are safe.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::sync::oneshot;

use super::attempt::Attempt;
use super::message::{MessageId, MessageRecord};
use super::outcome::Outcome;
use super::secret::Secret;
use super::topic::Pattern;

/// Why a store could not keep something.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The disk (or the store's own limit) is full: what the store did not keep was not
    /// accepted.
    #[error("the store at {place} is full ({detail}); free some space or lower --retain")]
    Full { place: String, detail: String },
    #[error("the store at {place} failed: {detail}")]
    Failed { place: String, detail: String },
    #[error("the store was closed: the hub is shutting down")]
    Closed,
}

/// Resolves once what was handed to the store is kept (committed and synced), or could
/// not be.
#[must_use = "a publish is acknowledged only once its commit resolves"]
pub struct Commit(Option<oneshot::Receiver<Result<(), StoreError>>>);

impl Commit {
    /// Already kept: a store that keeps nothing beyond memory.
    pub fn done() -> Self {
        Self(None)
    }

    /// Resolves when `kept` is sent to (or dropped, which means the store went away).
    pub fn when(kept: oneshot::Receiver<Result<(), StoreError>>) -> Self {
        Self(Some(kept))
    }
}

impl Future for Commit {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            None => Poll::Ready(Ok(())),
            Some(kept) => Pin::new(kept)
                .poll(cx)
                .map(|result| result.unwrap_or(Err(StoreError::Closed))),
        }
    }
}

/// A subscriber as a store keeps it: enough to bring it back after a restart.
#[derive(Debug, Clone)]
pub struct StoredSubscriber {
    /// The address as registered (it may hold a password).
    pub key: Arc<str>,
    pub topics: Arc<[Pattern]>,
    pub lease: Option<Duration>,
    pub ordered: bool,
    pub max_in_flight: u32,
    pub secret: Option<Secret>,
    pub paused: bool,
    pub pinned: bool,
    pub registered_at: SystemTime,
    /// Its last keep-alive, by the wall clock, so that its age goes on across a restart.
    pub last_seen: SystemTime,
}

#[cfg(test)]
impl StoredSubscriber {
    /// One registered just now with nothing asked for but its address, for tests.
    pub(crate) fn plain(key: &str) -> Self {
        let now = SystemTime::now();
        Self {
            key: key.into(),
            topics: Arc::new([]),
            lease: None,
            ordered: false,
            max_in_flight: 1,
            secret: None,
            paused: false,
            pinned: false,
            registered_at: now,
            last_seen: now,
        }
    }
}

/// One change the hub made, in the order it made them.
#[derive(Debug, Clone)]
pub enum Change {
    /// Deliveries of message `id` were added (a resend), in slots `first..`, one per
    /// address.
    Queued {
        id: MessageId,
        first: usize,
        subscribers: Vec<Arc<str>>,
    },
    Attempt {
        id: MessageId,
        slot: usize,
        attempt: Attempt,
    },
    /// A delivery's final outcome (a pending one has none to keep).
    Finished {
        id: MessageId,
        slot: usize,
        outcome: Outcome,
    },
    /// Registered, or changed: its topics, options, pause or pin.
    Subscriber(StoredSubscriber),
    /// A keep-alive.
    Seen {
        key: Arc<str>,
        at: SystemTime,
    },
    Removed {
        key: Arc<str>,
    },
    /// The console's "forget history": every message, delivery and attempt kept so far.
    Forget,
    /// A message starred (kept whatever the retention) or no longer.
    Pinned {
        id: MessageId,
        pinned: bool,
    },
}

/// What a store held at start: the hub resumes from it.
#[derive(Debug, Default)]
pub struct Restored {
    /// Names this hub in delivery ids (`webhook-id`), so that a delivery sent again after a
    /// restart carries the id it had before. `None`: a new store, the hub picks one.
    pub instance: Option<String>,
    /// The highest message id kept, so that ids go on from it.
    pub last_id: MessageId,
    pub subscribers: Vec<StoredSubscriber>,
    /// The newest messages (as many as the log holds) and every message with a delivery
    /// still to make, oldest first, with their deliveries.
    pub messages: Vec<Arc<MessageRecord>>,
}

/// What a store holds now, as Settings shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Where it is kept; `None` for memory.
    pub place: Option<String>,
    pub bytes: u64,
    pub messages: u64,
    /// How much it keeps at most, when it keeps anything.
    pub keeps: Option<Keeps>,
}

/// How much a store keeps: whichever limit is reached first prunes the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keeps {
    pub messages: u64,
    pub bytes: u64,
    pub age: std::time::Duration,
}

/// Where the hub keeps what it accepted. Every method returns at once: a store does its
/// writing on its own thread, and a publish waits on the [`Commit`] it is given.
pub trait Store: Send + Sync + 'static {
    /// Keeps a newly accepted message and the deliveries of its publish round, one per
    /// address in `subscribers` (slots from 0), in one commit: an acknowledged message
    /// is never kept without the deliveries it owes. Called under the log lock, in id
    /// order, before any change about it.
    fn append(&self, message: &Arc<MessageRecord>, subscribers: Vec<Arc<str>>) -> Commit;

    /// Keeps one change. What it fails to keep is logged and shows in [`Store::failing`].
    fn record(&self, change: Change);

    /// Keeps one change someone is told of (a star, a forget): the commit resolves with
    /// whether that change was kept, not with how a later group fared.
    fn keep(&self, change: Change) -> Commit {
        self.record(change);
        Commit::done()
    }

    // What follows is, by default, a store that keeps no messages of its own.

    /// Whether the store failed lately, and why: publishes are refused meanwhile rather
    /// than accepted and then not kept.
    fn failing(&self) -> Option<StoreError> {
        None
    }

    /// Up to `limit` kept messages older than `before`, newest first, with a topic that
    /// `pattern` matches if one is given: the log's pages beyond what memory holds.
    fn page(
        &self,
        _before: MessageId,
        _limit: usize,
        _pattern: Option<&Pattern>,
    ) -> Vec<Arc<MessageRecord>> {
        Vec::new()
    }

    /// One kept message with its deliveries.
    fn get(&self, _id: MessageId) -> Option<Arc<MessageRecord>> {
        None
    }

    /// Up to `limit` deliveries to `subscriber` (the address as shown) that have no
    /// outcome, from `(message id, slot)` `from` to `to` (inclusive), in that order: a
    /// subscriber's backlog read back as its queue drains. Blocking (it may read the
    /// disk).
    fn backlog(
        &self,
        _subscriber: &str,
        _from: (MessageId, usize),
        _to: (MessageId, usize),
        _limit: usize,
    ) -> Vec<(MessageId, usize)> {
        Vec::new()
    }

    fn usage(&self) -> StoreUsage {
        StoreUsage::default()
    }

    /// Waits until everything recorded so far is kept (shutdown, tests).
    fn flush(&self) -> Commit {
        Commit::done()
    }

    /// Whether it keeps anything at all: the hub spares itself building changes for a
    /// store that drops them.
    fn is_durable(&self) -> bool {
        true
    }
}

/// Keeps nothing beyond the hub's own memory: `--in-memory`, and `--headless` without a
/// `--data-dir`.
#[derive(Debug, Default)]
pub struct Memory;

impl Store for Memory {
    fn append(&self, _message: &Arc<MessageRecord>, _subscribers: Vec<Arc<str>>) -> Commit {
        Commit::done()
    }

    fn record(&self, _change: Change) {}

    fn is_durable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use parking_lot::Mutex;

    use super::*;
    use crate::hub::{
        Delivery, DeliveryState, Draft, Hub, HubConfig, Launch, Mailbox, PublishError, Source,
        Subscription, Task,
    };

    /// Keeps the subscribers' mailboxes, so that a test reads what was queued.
    #[derive(Default)]
    struct Mailboxes(Mutex<Vec<Mailbox>>);

    impl Launch for Arc<Mailboxes> {
        fn launch(&self, _hub: Hub, mailbox: Mailbox) {
            self.0.lock().push(mailbox);
        }

        fn spawn(&self, _name: &'static str, _task: Task) {}
    }

    /// A store whose commits resolve when the test says.
    #[derive(Default)]
    struct Held {
        commits: Mutex<Vec<oneshot::Sender<Result<(), StoreError>>>>,
    }

    impl Store for Arc<Held> {
        fn append(&self, _message: &Arc<MessageRecord>, _subscribers: Vec<Arc<str>>) -> Commit {
            let (kept, commit) = oneshot::channel();
            self.commits.lock().push(kept);
            Commit::when(commit)
        }
        fn record(&self, _change: Change) {}
    }

    /// A store that keeps every subscriber change it is told, and a relay that keeps
    /// every one a cluster is told.
    #[derive(Default)]
    struct Told {
        kept: Mutex<Vec<String>>,
        shared: Mutex<Vec<String>>,
    }

    impl Store for Arc<Told> {
        fn append(&self, _message: &Arc<MessageRecord>, _subscribers: Vec<Arc<str>>) -> Commit {
            Commit::done()
        }
        fn record(&self, change: Change) {
            let told = match change {
                Change::Subscriber(s) => format!("put {}", s.key),
                Change::Seen { key, .. } => format!("seen {key}"),
                Change::Removed { key } => format!("removed {key}"),
                _ => return,
            };
            self.kept.lock().push(told);
        }
    }

    impl crate::hub::Relay for Told {
        fn publish(&self, _message: crate::hub::Outgoing) -> crate::hub::Relayed {
            Box::pin(async { Err(crate::hub::RelayError::Unsupported("publishing")) })
        }
        fn subscriber_changed(&self, change: crate::hub::SubscriberChange) {
            use crate::hub::SubscriberChange as C;
            let told = match change {
                C::Put(s) => format!("put {}", s.key),
                C::Seen(key) => format!("seen {key}"),
                C::Removed(key) => format!("removed {key}"),
                C::Left(key) => format!("left {key}"),
            };
            self.shared.lock().push(told);
        }
    }

    #[test]
    fn an_ephemeral_subscriber_is_neither_kept_nor_shared() {
        let told = Arc::new(Told::default());
        let (hub, _) = hub(Arc::new(told.clone()), Restored::default());
        hub.attach(told.clone());
        for ephemeral in [true, false] {
            let address = if ephemeral {
                "127.0.0.1:1"
            } else {
                "127.0.0.1:2"
            };
            let subscription = || Subscription {
                ephemeral,
                ..Subscription::new(address)
            };
            hub.subscribe(subscription()).unwrap();
            hub.subscribe(subscription()).unwrap();
            hub.set_paused(address, true).unwrap();
            hub.set_pinned(address, true).unwrap();
            assert!(hub.remove(address, crate::hub::RemovalReason::Deregistered));
        }
        // Only the one that is not ephemeral, each time; of the ephemeral one a cluster
        // hears only that it left (so that the consumer it made for it goes too).
        let expected = [
            "put 127.0.0.1:2",
            "seen 127.0.0.1:2",
            "put 127.0.0.1:2",
            "put 127.0.0.1:2",
            "removed 127.0.0.1:2",
        ];
        assert_eq!(*told.kept.lock(), expected);
        let shared: Vec<&str> = std::iter::once("left 127.0.0.1:1")
            .chain(expected)
            .collect();
        assert_eq!(*told.shared.lock(), shared);
    }

    #[test]
    fn a_subscriber_read_back_at_start_is_not_written_again() {
        let told = Arc::new(Told::default());
        let restored = Restored {
            subscribers: vec![StoredSubscriber::plain("127.0.0.1:3")],
            ..Restored::default()
        };
        let (hub, _) = hub(Arc::new(told.clone()), restored);
        assert_eq!(hub.subscriber_count(), 1);
        assert!(told.kept.lock().is_empty(), "{:?}", told.kept.lock());
    }

    fn hub(store: Arc<dyn Store>, restored: Restored) -> (Hub, Arc<Mailboxes>) {
        let mailboxes = Arc::new(Mailboxes::default());
        let launcher = Arc::new(mailboxes.clone());
        let hub = Hub::with_store(HubConfig::default(), launcher, store, restored);
        (hub, mailboxes)
    }

    #[tokio::test]
    async fn a_publish_is_acknowledged_once_its_commit_is_and_not_before() {
        let held = Arc::new(Held::default());
        let (hub, _) = hub(Arc::new(held.clone()), Restored::default());
        let publish = hub.publish_when_ready(Draft::new("kept?"), Source::Console);
        let mut publish = std::pin::pin!(publish);
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), &mut publish);
        assert!(early.await.is_err(), "acknowledged before it was kept");
        held.commits.lock().remove(0).send(Ok(())).unwrap();
        assert_eq!(publish.await.unwrap().id, 1);

        let publish = hub.publish_when_ready(Draft::new("no room"), Source::Console);
        let full = StoreError::Full {
            place: "test".into(),
            detail: "disk full".into(),
        };
        let mut publish = std::pin::pin!(publish);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(10), &mut publish).await;
        held.commits
            .lock()
            .remove(0)
            .send(Err(full.clone()))
            .unwrap();
        assert_eq!(publish.await, Err(PublishError::NotKept(full)));
    }

    #[tokio::test]
    async fn a_restart_queues_again_what_had_no_outcome_in_publish_order() {
        let address: Arc<str> = "127.0.0.1:9".into();
        let subscriber = StoredSubscriber {
            paused: true,
            ..StoredSubscriber::plain(&address)
        };
        let delivery = |state| Delivery {
            subscriber: address.clone(),
            state,
            attempts: Vec::new(),
        };
        let done = DeliveryState::Done(crate::hub::Outcome::Delivered {
            status: 200,
            latency: std::time::Duration::ZERO,
        });
        let message = |id, deliveries| {
            let draft = Draft::new(format!("message {id}"));
            let at = SystemTime::now();
            Arc::new(MessageRecord::restored(
                id,
                at,
                draft,
                Source::Console,
                deliveries,
            ))
        };
        let restored = Restored {
            instance: Some("00000000000000aa".into()),
            last_id: 7,
            subscribers: vec![subscriber],
            messages: vec![
                message(3, vec![delivery(DeliveryState::Pending)]),
                message(5, vec![delivery(done)]),
                message(6, vec![delivery(DeliveryState::Pending)]),
            ],
        };
        let (hub, mailboxes) = hub(Arc::new(Memory), restored);
        assert_eq!(hub.instance(), "00000000000000aa");
        let view = hub.subscriber(&address).unwrap();
        assert!(view.paused, "its pause came back with it");
        let mut mailbox = mailboxes.0.lock().remove(0);
        let mut queued = Vec::new();
        while let Ok(job) = mailbox.jobs.try_recv() {
            queued.push(job.message.id);
        }
        assert_eq!(queued, [3, 6]);
        // Ids go on from the last one kept.
        let next = hub.publish(Draft::new("new"), Source::Console).unwrap();
        assert_eq!(next.id(), Some(8));
    }
}
