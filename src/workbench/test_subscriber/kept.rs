//! What the test subscribers keep of the requests they received: each its newest
//! [`KEEP`], and all of them together within [`KEPT_BUDGET`] bytes, the oldest kept
//! request (whichever subscriber took it) going first beyond it.
//!
//! One lock for all of them, so that the budget and the lists always agree. Under it a
//! request is added or dropped, and a reader copies the few it shows.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;

/// Received requests each keeps: what the console and the API list.
pub const KEEP: usize = 100;

/// Bytes all test subscribers together keep of what they received. 64 of them keeping
/// 100 requests of 64 KiB each would be 400 MiB; a developer reads the newest few. 16 MiB
/// holds 256 bodies cut at 64 KiB, or every subscriber's whole 100 when bodies are under
/// 2.5 KiB.
pub const KEPT_BUDGET: usize = 16 * 1024 * 1024;

/// One request a test subscriber received, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: SystemTime,
    pub content_type: Option<String>,
    pub message_id: Option<u64>,
    /// The first [`super::MAX_KEPT_BODY`] bytes of the body: a copy of its own, so that
    /// it holds no buffer it was read from.
    pub body: Bytes,
    /// The whole body's size.
    pub size: usize,
    /// What it answered; `None` while hanging.
    pub status: Option<u16>,
}

impl Received {
    /// What keeping it costs: its body, its content type and itself.
    fn cost(&self) -> usize {
        size_of::<(u64, Self)>()
            + self.body.len()
            + self.content_type.as_ref().map_or(0, String::capacity)
    }
}

/// Every test subscriber's kept requests, in one budget.
#[derive(Debug, Default)]
pub(super) struct Kept {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By live test subscriber (from `open` to `forget`), oldest first, each with the
    /// order it came in among all of them (which one is oldest overall).
    lists: HashMap<u64, VecDeque<(u64, Received)>>,
    /// What all of `lists` costs.
    bytes: usize,
    next: u64,
}

impl Kept {
    /// Starts keeping what test subscriber `id` receives.
    pub(super) fn open(&self, id: u64) {
        self.inner.lock().lists.entry(id).or_default();
    }

    /// Keeps `received` as test subscriber `id`'s newest, dropping its oldest beyond
    /// [`KEEP`] and the oldest of all beyond [`KEPT_BUDGET`].
    pub(super) fn push(&self, id: u64, received: Received) {
        let mut inner = self.inner.lock();
        let Inner { lists, bytes, next } = &mut *inner;
        // A request that ends as its subscriber is removed: nobody can list it any more.
        let Some(list) = lists.get_mut(&id) else {
            return;
        };
        *next += 1;
        *bytes += received.cost();
        list.push_back((*next, received));
        if list.len() > KEEP
            && let Some((_, old)) = list.pop_front()
        {
            *bytes -= old.cost();
        }
        while *bytes > KEPT_BUDGET {
            // At most 64 lists: finding the oldest front is cheap.
            let oldest = lists
                .iter()
                .filter_map(|(id, list)| list.front().map(|(n, _)| (*n, *id)))
                .min();
            let Some((_, id)) = oldest else { break };
            if let Some((_, old)) = lists.get_mut(&id).and_then(VecDeque::pop_front) {
                *bytes -= old.cost();
            }
        }
    }

    /// Test subscriber `id`'s newest `limit`, newest first.
    pub(super) fn newest(&self, id: u64, limit: usize) -> Vec<Received> {
        let inner = self.inner.lock();
        inner.lists.get(&id).map_or_else(Vec::new, |list| {
            list.iter()
                .rev()
                .take(limit)
                .map(|(_, r)| r.clone())
                .collect()
        })
    }

    /// Drops everything test subscriber `id` kept.
    pub(super) fn forget(&self, id: u64) {
        let mut inner = self.inner.lock();
        if let Some(list) = inner.lists.remove(&id) {
            inner.bytes -= list.iter().map(|(_, r)| r.cost()).sum::<usize>();
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: u64, size: usize) -> Received {
        Received {
            at: SystemTime::now(),
            content_type: None,
            message_id: Some(n),
            body: Bytes::from(vec![b'x'; size]),
            size,
            status: Some(204),
        }
    }

    fn ids(kept: &Kept, id: u64) -> Vec<u64> {
        let newest = kept.newest(id, usize::MAX);
        newest.iter().map(|r| r.message_id.unwrap()).collect()
    }

    #[test]
    fn each_keeps_its_newest_hundred() {
        let kept = Kept::default();
        kept.open(1);
        for n in 0..150 {
            kept.push(1, request(n, 10));
        }
        assert_eq!(ids(&kept, 1), (50..150).rev().collect::<Vec<_>>());
        assert_eq!(kept.bytes(), 100 * request(0, 10).cost());
    }

    #[test]
    fn beyond_the_budget_the_oldest_of_all_goes_first() {
        let kept = Kept::default();
        let big = 64 * 1024;
        let fits = KEPT_BUDGET / request(0, big).cost();
        (1..=4).for_each(|id| kept.open(id));
        // Four subscribers taking turns (none past its hundred), then one more request
        // than the budget holds.
        for n in 0..=fits as u64 {
            kept.push(1 + n % 4, request(n, big));
        }
        assert!(kept.bytes() <= KEPT_BUDGET);
        let lists: Vec<Vec<u64>> = (1..=4).map(|id| ids(&kept, id)).collect();
        assert_eq!(lists.iter().map(Vec::len).sum::<usize>(), fits);
        // The very first (subscriber 1's oldest) went; everything after it stayed.
        assert_eq!(lists[0].last(), Some(&4));
        assert_eq!(lists[1].last(), Some(&1));
        (1..=4).for_each(|id| kept.forget(id));
        assert_eq!(kept.bytes(), 0);
        // One removed keeps nothing it is still answering.
        kept.push(1, request(0, big));
        assert!(kept.newest(1, 1).is_empty());
        assert_eq!(kept.bytes(), 0);
    }
}
