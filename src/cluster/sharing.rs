//! What the hub changes about its subscribers, shared with the other instances through
//! the subscribers' bucket. The hub tells each change made here through its relay's
//! `subscriber_changed` ([`Sharer::share`]); what an instance applies from the bucket goes
//! through the cluster port as made elsewhere, so it is never told back.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::State;
use super::codec::{self, SharedSubscriber};
use crate::hub::SubscriberChange;

/// The changes the hub shared, for [`write`] to put into the bucket.
pub(super) struct Writes(mpsc::Receiver<SubscriberChange>);

/// Changes waiting for the bucket (while NATS is away, say). Beyond it they are dropped
/// and logged: a keep-alive spammer must not grow memory, and a subscriber's next
/// keep-alive shares it again.
const WRITES_WAITING: usize = 65_536;

/// Where the hub's subscriber changes go: a channel to [`write`], never waiting under
/// the hub's locks.
pub(super) struct Sharer(mpsc::Sender<SubscriberChange>);

impl Sharer {
    pub(super) fn new() -> (Self, Writes) {
        let (writes, receiver) = mpsc::channel(WRITES_WAITING);
        (Self(writes), Writes(receiver))
    }

    pub(super) fn share(&self, change: SubscriberChange) {
        match self.0.try_send(change) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(change)) => {
                tracing::warn!(
                    ?change,
                    "too many subscriber changes wait for the cluster; one is dropped"
                );
            }
            // The writer is gone only when the hub is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
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
            SubscriberChange::Put(stored) => {
                put(&links.subscribers, &SharedSubscriber::of(&stored)).await
            }
            SubscriberChange::Seen(key) => match state.hub.stored_subscriber(&key) {
                Some(stored) => put(&links.subscribers, &SharedSubscriber::of(&stored)).await,
                // Gone since: its removal follows.
                None => Ok(()),
            },
            SubscriberChange::Removed(key) => {
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
            SubscriberChange::Left(key) => {
                // Never in the bucket: only the consumer this instance made for it.
                let name = codec::name_of(&key);
                links.messages.delete_consumer(&name).await.ok();
                Ok(())
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
