//! A durable hub's backlog: deliveries a full queue would have dropped wait in the store
//! instead ("parked"), and are read back, in order, as the queue drains.
//!
//! Every delivery is handed to the store as a pending row before it is queued (a publish
//! round's with its message, a resend's as `Change::Queued`, a restart's was there at
//! start), so parking costs nothing but a count and where the backlog starts and ends;
//! a read flushes the store first, so what was parked before it is on disk. In memory
//! there is no disk to wait on: a full queue is a recorded `QueueFull`, as documented.
//!
//! A read takes the store's pending rows for the subscriber from the backlog's start up
//! to the last delivery parked, in `(message id, slot)` order: publishes are offered in
//! id order, so those rows are exactly what was parked. A resend of an older message is
//! the exception (parked below the last, where a read may already have gone): it is
//! kept apart as a straggler, read back by id in its turn, and its row skipped.
//!
//! Order per subscriber: once a subscriber has parked deliveries, every new one is parked
//! behind them until the store's read comes back short with nothing parked meanwhile.
//! The decision and the queueing happen under the subscriber's own `Backlog::state`
//! mutex, so the worker's read-back and a publish never overtake each other. Lock order:
//! the log's `ring` (a publish queues under it), then a subscriber's backlog mutex, then
//! its queue's channel (a leaf). The registry's locks are taken before the backlog's,
//! never under it; the store is read under no lock at all.

pub(super) mod state;

use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;

use state::Straggler;
pub(crate) use state::{Backlog, Read, Refill};

use super::Hub;
use super::outcome::{DeliveryError, Outcome};
use super::routing::Recipient;
use super::subscriber::{Job, RemovalReason, SubscriberShared};

fn removed(subscriber: &SubscriberShared) -> DeliveryError {
    // The worker is gone: the subscriber was removed (maybe since the message was
    // accepted).
    DeliveryError::Removed(subscriber.removal().unwrap_or(RemovalReason::Shutdown))
}

impl Hub {
    /// Queues `job` for `recipient`; with a durable store, parks it instead when the
    /// queue is full or the subscriber already has a backlog (it stays pending on disk).
    /// An error is the outcome to record for it.
    pub(super) fn offer(&self, recipient: &Recipient, job: Job) -> Result<(), DeliveryError> {
        let subscriber = &recipient.subscriber;
        if !self.shared.store.is_durable() {
            return match recipient.queue.try_send(job) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(DeliveryError::QueueFull {
                    capacity: recipient.queue.max_capacity(),
                }),
                Err(TrySendError::Closed(_)) => Err(removed(subscriber)),
            };
        }
        let backlog = &subscriber.backlog;
        let mut state = backlog.state.lock();
        // A removed subscriber's worker reads nothing back: record the removal now.
        if subscriber.cancel.is_cancelled() {
            return Err(removed(subscriber));
        }
        let key = (job.message.id, job.slot);
        if state.from.is_some() {
            backlog.park(&mut state, key);
            return Ok(());
        }
        match recipient.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                backlog.park(&mut state, key);
                Ok(())
            }
            Err(TrySendError::Closed(_)) => Err(removed(subscriber)),
        }
    }

    /// What the worker of `subscriber` should read back, for a queue with `room` free,
    /// if it has a backlog.
    pub(crate) fn backlog_to_read(
        &self,
        subscriber: &SubscriberShared,
        room: usize,
    ) -> Option<Refill> {
        let mut state = subscriber.backlog.state.lock();
        let from = state.from?;
        // Those whose turn has come: everything parked before them was read back.
        let ready = state
            .stragglers
            .iter()
            .take(room)
            .take_while(|s| s.after < from)
            .count();
        let stragglers: Vec<Straggler> = state.stragglers.drain(..ready).collect();
        let take = stragglers.len();
        // The read stops at the next one's turn.
        let to = state
            .stragglers
            .front()
            .map_or(state.last, |s| s.after.min(state.last));
        Some(Refill {
            from,
            to,
            parks: state.parks,
            limit: room - take,
            stragglers,
        })
    }

    /// Reads the deliveries `refill` plans from the store (or the log, where memory still
    /// holds the message, so that its record is the one the console shows). Blocking: on
    /// a blocking thread, under no lock, after the store was flushed.
    pub(crate) fn read_backlog(&self, subscriber: &SubscriberShared, refill: &Refill) -> Read {
        let keys =
            self.shared
                .store
                .backlog(&subscriber.address, refill.from, refill.to, refill.limit);
        let from_store = keys.len();
        let deliveries = refill
            .stragglers
            .iter()
            .map(|s| &s.key)
            .chain(&keys)
            .map(|&(id, slot)| ((id, slot), self.find_message(id)))
            .collect();
        Read {
            deliveries,
            from_store,
        }
    }

    /// Queues what was read back, moves the backlog's start past it, and ends the backlog
    /// when the store had no more and nothing was parked meanwhile.
    pub(crate) fn queue_backlog(
        &self,
        subscriber: &Arc<SubscriberShared>,
        refill: Refill,
        read: Read,
    ) {
        let recipient = self
            .recipient(&subscriber.key)
            .filter(|r| Arc::ptr_eq(&r.subscriber, subscriber));
        let backlog = &subscriber.backlog;
        let mut state = backlog.state.lock();
        let Some(recipient) = recipient else {
            // Removed meanwhile: `abandon_backlog` records the rest, these too.
            for s in refill.stragglers.iter().rev() {
                state.stragglers.push_front(*s);
            }
            return;
        };
        let stragglers = refill.stragglers.len();
        let mut queued_all = true;
        for (i, (key, message)) in read.deliveries.into_iter().enumerate() {
            let straggler = i < stragglers;
            if !straggler {
                Backlog::pass(&mut state, key);
                // Read back by id in its turn, not in the store's order.
                if Backlog::is_straggler(&state, &refill, key) {
                    continue;
                }
            }
            // None: gone from the store (forgotten, or pruned): nothing left to send.
            if let Some(message) = message {
                let job = Job {
                    message,
                    slot: key.1,
                    _outstanding: self.shared.outstanding.token(),
                };
                if recipient.queue.try_send(job).is_err() {
                    // No room after all (or the worker went): read again from here, this
                    // straggler and those after it first.
                    if let Some(from) = &mut state.from
                        && !straggler
                    {
                        *from = key;
                    }
                    for s in refill.stragglers.iter().skip(i).rev() {
                        state.stragglers.push_front(*s);
                    }
                    queued_all = false;
                    break;
                }
            }
            backlog.unpark_one();
        }
        if queued_all && read.from_store < refill.limit {
            // The store has nothing more up to where this read could go.
            Backlog::pass(&mut state, refill.to);
        }
        let over = queued_all
            && read.from_store < refill.limit
            && state.parks == refill.parks
            && state.stragglers.is_empty();
        if over {
            backlog.end(&mut state);
        }
    }

    /// Records the removal of every delivery a removed subscriber still had parked, in
    /// memory and in the store, so nothing stays pending for ever. Blocking: on a
    /// blocking thread, after the store was flushed.
    pub(crate) fn abandon_backlog(&self, subscriber: &SubscriberShared) {
        let reason = subscriber.removal().unwrap_or(RemovalReason::Shutdown);
        // Cut off by shutdown: left pending on disk, for the next start to send.
        if reason == RemovalReason::Shutdown || !subscriber.backlog.is_active() {
            return;
        }
        const CHUNK: usize = 1_024;
        loop {
            let Some(refill) = self.backlog_to_read(subscriber, CHUNK) else {
                return;
            };
            let read = self.read_backlog(subscriber, &refill);
            let short = read.from_store < refill.limit;
            let mut removed = Vec::new();
            let done = {
                let mut state = subscriber.backlog.state.lock();
                let stragglers = refill.stragglers.len();
                for (i, (key, message)) in read.deliveries.into_iter().enumerate() {
                    if i >= stragglers {
                        Backlog::pass(&mut state, key);
                        if Backlog::is_straggler(&state, &refill, key) {
                            continue;
                        }
                    }
                    removed.extend(message.map(|m| (m, key.1)));
                }
                if short {
                    Backlog::pass(&mut state, refill.to);
                }
                // A read cut short by a straggler's turn is not the end.
                let done = short && state.stragglers.is_empty();
                if done {
                    subscriber.backlog.end(&mut state);
                }
                done
            };
            // Recorded once the lock is let go.
            for (message, slot) in removed {
                let outcome = Outcome::Failed(DeliveryError::Removed(reason));
                self.finish(&message, slot, subscriber, outcome);
            }
            if done {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
