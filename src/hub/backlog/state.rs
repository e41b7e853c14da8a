//! One subscriber's backlog as its shared part holds it: where the read starts and ends,
//! the stragglers, the count shown. The decisions are `super`'s, under its `state` mutex.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::hub::message::{MessageId, MessageRecord};

/// A delivery's place in the store's order: message id, then slot.
pub(crate) type Key = (MessageId, usize);

/// One subscriber's backlog on disk.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// Whether it has one: read by the worker on every turn, without the lock.
    active: AtomicBool,
    /// Deliveries parked and not yet read back, for the console and the API.
    parked: AtomicUsize,
    pub(super) state: Mutex<State>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// The first parked delivery not yet read back: where the next read starts. `None`:
    /// no backlog, deliveries go straight to the queue.
    pub(super) from: Option<Key>,
    /// The highest delivery parked: a read goes no further. A row beyond it may be on
    /// disk and not yet offered (a publish the fan-out task has still to queue, a
    /// restart's requeue under way); read back now, it would be sent again when offered.
    /// Publishes are offered in id order, so every row up to it was offered already.
    pub(super) last: Key,
    /// Parks so far: a read that comes back short ends the backlog only if nothing was
    /// parked while it read (that may not have been on disk yet).
    pub(super) parks: u64,
    /// Parked below `last` (a resend of an older message), which a read might already
    /// have passed, each with `last` when it was parked: it is read back by id once
    /// everything parked before it was, reads stop there until it is, and a read skips
    /// its row. Rare and small.
    pub(super) stragglers: VecDeque<Straggler>,
}

impl Backlog {
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Deliveries waiting in the store.
    pub(crate) fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    pub(super) fn park(&self, state: &mut State, key: Key) {
        match state.from {
            // Not at the tail (a resend of an older message): a read may have passed its
            // place already, or pass it before its row is on disk.
            Some(_) if key < state.last => {
                let after = state.last;
                state.stragglers.push_back(Straggler { key, after });
            }
            Some(_) => state.last = key,
            None => {
                state.from = Some(key);
                state.last = key;
                self.active.store(true, Ordering::Release);
            }
        }
        state.parks += 1;
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn is_straggler(state: &State, refill: &Refill, key: Key) -> bool {
        let is = |s: &Straggler| s.key == key;
        state.stragglers.iter().any(is) || refill.stragglers.iter().any(is)
    }

    pub(super) fn unpark_one(&self) {
        let _ = self
            .parked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Moves the read's start past `key`.
    pub(super) fn pass(state: &mut State, key: Key) {
        if let Some(from) = &mut state.from {
            *from = (*from).max((key.0, key.1 + 1));
        }
    }

    pub(super) fn end(&self, state: &mut State) {
        state.from = None;
        state.stragglers.clear();
        self.active.store(false, Ordering::Release);
        self.parked.store(0, Ordering::Relaxed);
    }
}

/// A delivery parked below where the backlog's read is, and the last one parked before it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Straggler {
    pub(super) key: Key,
    pub(super) after: Key,
}

/// A read of the backlog about to be made: where it starts and what it may take.
#[derive(Debug)]
pub(crate) struct Refill {
    pub(super) from: Key,
    /// `State::last` when it was planned: the read's end, inclusive.
    pub(super) to: Key,
    /// `State::parks` when it was planned.
    pub(super) parks: u64,
    /// How many deliveries the store may give (the queue's room less the stragglers).
    pub(super) limit: usize,
    pub(super) stragglers: Vec<Straggler>,
}

/// What a read gave: the stragglers' and the store's deliveries, in queueing order, and
/// how many the store gave (short of the limit: the store has no more).
pub(crate) struct Read {
    pub(super) deliveries: Vec<(Key, Option<Arc<MessageRecord>>)>,
    pub(super) from_store: usize,
}
