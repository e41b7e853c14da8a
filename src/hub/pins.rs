//! Starred messages: they never leave the log (nor a durable store's retention), up to
//! [`MAX_PINNED`](super::MAX_PINNED) of them.

use std::sync::atomic::Ordering;

use thiserror::Error;

use super::Hub;
use super::message::MessageId;
use super::store::{Change, Commit};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PinError {
    #[error("message {0} is not in the log's memory (only messages it holds can be starred)")]
    UnknownMessage(MessageId),
    #[error("{max} messages are pinned already, the most the log keeps; unpin one first")]
    TooMany { max: usize },
}

impl Hub {
    /// Pins message `id` (it stays in the log, and in the store, whatever their limits)
    /// or unpins it (it may then leave, as any other).
    pub fn pin_message(&self, id: MessageId, pinned: bool) -> Result<Commit, PinError> {
        // Only what memory holds can be pinned, so that every pin is counted (a restart
        // loads them all back); one that left may still be unpinned in the store.
        let in_memory = self.message(id).is_some();
        if !in_memory && (pinned || self.shared.store.get(id).is_none()) {
            return Err(PinError::UnknownMessage(id));
        }
        // The store hears of pins under the log's lock, in the order they were made; the
        // commit says whether it kept this one.
        let mut kept = None;
        let starred = self.shared.log.star(id, pinned, || {
            kept = Some(self.shared.store.keep(Change::Pinned { id, pinned }))
        });
        match starred {
            Ok(true) => {}
            // It left memory since it was looked up.
            Ok(false) => return Err(PinError::UnknownMessage(id)),
            Err(max) => return Err(PinError::TooMany { max }),
        }
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        // Already as asked: nothing to keep.
        Ok(kept.unwrap_or_else(Commit::done))
    }
}
