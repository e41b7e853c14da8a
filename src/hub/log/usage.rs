//! What the logged messages hold, counted without the log's lock: delivery records and
//! bytes, against the `Budget` the log keeps to.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Pinned messages a log keeps at most.
pub const MAX_PINNED: usize = 100;

/// Delivery records and bytes, as the log's budgets count them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

/// How much the log may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub(crate) messages: usize,
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

impl Budget {
    /// What one message may hold: all of the budget, since the log keeps at least its
    /// newest message however much it holds; a starred one, which is kept beyond the
    /// budgets with up to [`MAX_PINNED`] others, its share of them.
    pub(crate) fn share(&self, starred: bool) -> Held {
        let parts = if starred { MAX_PINNED } else { 1 };
        Held {
            records: self.records / parts,
            bytes: self.bytes / parts,
        }
    }
}

/// What the logged messages hold. Shared with each of them, since they grow after they
/// were logged (resends, attempts) without taking the log's lock.
#[derive(Debug)]
pub(crate) struct LogUsage {
    records: AtomicUsize,
    bytes: AtomicUsize,
    budget: Budget,
}

impl LogUsage {
    /// Nothing held yet, against `budget`.
    pub(super) fn new(budget: Budget) -> Self {
        Self {
            records: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            budget,
        }
    }

    pub(crate) fn add(&self, held: Held) {
        self.records.fetch_add(held.records, Ordering::Relaxed);
        self.bytes.fetch_add(held.bytes, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, held: Held) {
        self.records.fetch_sub(held.records, Ordering::Relaxed);
        self.bytes.fetch_sub(held.bytes, Ordering::Relaxed);
    }

    /// Whether the log holds more records or bytes than its budget allows.
    pub(crate) fn over(&self) -> bool {
        self.records.load(Ordering::Relaxed) > self.budget.records
            || self.bytes.load(Ordering::Relaxed) > self.budget.bytes
    }

    pub(crate) fn budget(&self) -> Budget {
        self.budget
    }

    /// Records and bytes held now.
    pub(crate) fn held(&self) -> Held {
        Held {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}
