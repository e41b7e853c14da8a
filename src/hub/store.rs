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

use super::message::{Attempt, MessageId, MessageRecord};
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

/// One change the hub made, in the order it made them.
#[derive(Debug, Clone)]
pub enum Change {
    /// Deliveries of message `id` were queued, in slots `first..`, one per address.
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
}

/// Where the hub keeps what it accepted. Every method returns at once: a store does its
/// writing on its own thread, and a publish waits on the [`Commit`] it is given.
pub trait Store: Send + Sync + 'static {
    /// Keeps a newly accepted message (called under the log lock, in id order, before
    /// any change about it).
    fn append(&self, message: &Arc<MessageRecord>) -> Commit;

    /// Keeps one change. What it fails to keep is logged and shows in [`Store::failing`].
    fn record(&self, change: Change);

    /// Whether the store failed lately, and why: publishes are refused meanwhile rather
    /// than accepted and then not kept.
    fn failing(&self) -> Option<StoreError>;

    /// Up to `limit` kept messages older than `before`, newest first, that `keep` wants:
    /// the log's pages beyond what memory holds.
    fn page(
        &self,
        before: MessageId,
        limit: usize,
        keep: &dyn Fn(&MessageRecord) -> bool,
    ) -> Vec<Arc<MessageRecord>>;

    /// One kept message with its deliveries.
    fn get(&self, id: MessageId) -> Option<Arc<MessageRecord>>;

    fn usage(&self) -> StoreUsage;

    /// Waits until everything recorded so far is kept (shutdown, tests).
    fn flush(&self) -> Commit;

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
    fn append(&self, _message: &Arc<MessageRecord>) -> Commit {
        Commit::done()
    }

    fn record(&self, _change: Change) {}

    fn failing(&self) -> Option<StoreError> {
        None
    }

    fn page(
        &self,
        _before: MessageId,
        _limit: usize,
        _keep: &dyn Fn(&MessageRecord) -> bool,
    ) -> Vec<Arc<MessageRecord>> {
        Vec::new()
    }

    fn get(&self, _id: MessageId) -> Option<Arc<MessageRecord>> {
        None
    }

    fn usage(&self) -> StoreUsage {
        StoreUsage::default()
    }

    fn flush(&self) -> Commit {
        Commit::done()
    }

    fn is_durable(&self) -> bool {
        false
    }
}
