//! What the hub changes about its subscribers, shared with the other instances through
//! the subscribers' bucket. It plugs into the hub as its `Store`: the hub records every
//! registration, keep-alive and removal there already, and knows nothing more of it.
//!
//! What an instance applies from the bucket changes its hub too, and must not be shared
//! back (each keep-alive would echo between the instances for ever): it is applied
//! inside [`applying`], which marks the thread while the hub, synchronously, records it.

use std::cell::Cell;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::State;
use super::codec::{self, SharedSubscriber};
use crate::hub::{Change, Commit, MessageRecord, Store, StoredSubscriber};

thread_local! {
    static APPLYING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `apply` (changes to the hub read from the bucket) without sharing what it records.
pub(super) fn applying<R>(apply: impl FnOnce() -> R) -> R {
    /// Lowers the flag however `apply` ends, a panic included.
    struct Lower;
    impl Drop for Lower {
        fn drop(&mut self) {
            APPLYING.with(|flag| flag.set(false));
        }
    }
    APPLYING.with(|flag| flag.set(true));
    let _lower = Lower;
    apply()
}

/// The changes the hub shared before the cluster's tasks run, for them to write.
pub struct Writes(pub(super) mpsc::Receiver<Write>);

/// A change to share.
#[derive(Debug)]
pub(crate) enum Write {
    Put(StoredSubscriber),
    /// A keep-alive: the entry is written again from the hub's subscriber as it is now.
    Seen(Arc<str>),
    Delete(Arc<str>),
}

/// The hub's store in cluster mode: subscribers' changes go to the bucket (through a
/// channel to [`write`], never waiting under the hub's locks); messages are kept by the
/// stream, not here.
pub struct Sharing {
    writes: mpsc::Sender<Write>,
}

/// Changes waiting for the bucket (while NATS is away, say). Beyond it they are dropped
/// and logged: a keep-alive spammer must not grow memory, and a subscriber's next
/// keep-alive shares it again.
const WRITES_WAITING: usize = 65_536;

impl Sharing {
    pub(super) fn new() -> (Arc<Self>, Writes) {
        let (writes, receiver) = mpsc::channel(WRITES_WAITING);
        (Arc::new(Self { writes }), Writes(receiver))
    }

    fn share(&self, write: Write) {
        if APPLYING.with(Cell::get) {
            return;
        }
        match self.writes.try_send(write) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(write)) => {
                tracing::warn!(
                    ?write,
                    "too many subscriber changes wait for the cluster; one is dropped"
                );
            }
            // The writer is gone only when the hub is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl Store for Sharing {
    fn append(&self, _message: &Arc<MessageRecord>, _subscribers: Vec<Arc<str>>) -> Commit {
        Commit::done()
    }

    fn record(&self, change: Change) {
        match change {
            // Turned into the bucket's form by the writer: this runs under the hub's locks.
            Change::Subscriber(stored) => self.share(Write::Put(stored)),
            Change::Seen { key, .. } => self.share(Write::Seen(key)),
            Change::Removed { key } => self.share(Write::Delete(key)),
            // Outcomes are told by the delivery loops, which know who delivered.
            _ => {}
        }
    }
}

/// Writes the shared changes into the bucket, in the order the hub made them. A
/// keep-alive rewrites the subscriber's whole entry, read from the hub then (the bucket
/// keeps one value per key, and its age is the entry's age): never from an older copy,
/// which would undo a change another instance made since.
pub(super) async fn write(state: Arc<State>, Writes(mut writes): Writes) {
    let Some(links) = state.links.get().cloned() else {
        return;
    };
    while let Some(write) = writes.recv().await {
        let result = match write {
            Write::Put(stored) => put(&links.subscribers, &SharedSubscriber::of(&stored)).await,
            Write::Seen(key) => match state.hub.stored_subscriber(&key) {
                Some(stored) => put(&links.subscribers, &SharedSubscriber::of(&stored)).await,
                // Gone since: its removal follows.
                None => Ok(()),
            },
            Write::Delete(key) => {
                let name = codec::name_of(&key);
                let deleted = links
                    .subscribers
                    .delete(&name)
                    .await
                    .map_err(anyhow::Error::from);
                // Its consumer goes with it: a subscriber registering again later starts
                // from then, not from what it missed meanwhile.
                links.messages.delete_consumer(&name).await.ok();
                deleted
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "a subscriber change was not shared with the cluster");
        }
    }
}

async fn put(
    bucket: &async_nats::jetstream::kv::Store,
    shared: &SharedSubscriber,
) -> anyhow::Result<()> {
    let value = serde_json::to_vec(shared)?;
    bucket
        .put(codec::name_of(&shared.address), value.into())
        .await?;
    Ok(())
}
