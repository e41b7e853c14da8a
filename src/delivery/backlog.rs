//! A durable hub's backlog, read back as a subscriber's queue drains (the hub decides
//! what is parked: `hub::backlog`). The worker starts one read at a time; each waits for
//! the store to have kept what was parked so far, then reads on a blocking thread of the
//! runtime, never on the worker's.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::hub::{Hub, Mailbox, SubscriberShared};

/// Whether the worker should read its backlog back now: it has one, the hub is not
/// stopping (what is left waits for the next start), and the queue is below half full,
/// so that reads come in batches rather than one delivery at a time. Returns the room.
pub(super) fn wanted(hub: &Hub, mailbox: &Mailbox) -> Option<usize> {
    if !mailbox.subscriber.backlog.is_active() || hub.is_stopping() {
        return None;
    }
    let queued = mailbox.jobs.len();
    (queued < mailbox.capacity / 2 || queued == 0).then(|| mailbox.capacity - queued)
}

/// Reads up to `room` parked deliveries back into the queue.
pub(super) fn refill(
    hub: Hub,
    subscriber: Arc<SubscriberShared>,
    room: usize,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let Some(refill) = hub.backlog_to_read(&subscriber, room) else {
            return;
        };
        // Parked before this point: on disk once this resolves. A failed commit is the
        // store's to report; the read then finds what it has.
        hub.flush_store().await.ok();
        let read = {
            let (hub, subscriber) = (hub.clone(), subscriber.clone());
            tokio::task::spawn_blocking(move || {
                let read = hub.read_backlog(&subscriber, &refill);
                (refill, read)
            })
            .await
        };
        match read {
            Ok((refill, read)) => hub.queue_backlog(&subscriber, refill, read),
            Err(error) => {
                tracing::warn!(address = %subscriber.address, %error, "reading the backlog failed")
            }
        }
    })
}

/// Records the removal of what a removed subscriber still had parked.
pub(super) async fn abandon(hub: Hub, subscriber: Arc<SubscriberShared>) {
    if !subscriber.backlog.is_active() {
        return;
    }
    hub.flush_store().await.ok();
    let done = tokio::task::spawn_blocking(move || hub.abandon_backlog(&subscriber)).await;
    if let Err(error) = done {
        tracing::warn!(%error, "recording a removed subscriber's backlog failed");
    }
}
