//! Starred messages: they never leave the log (nor a durable store's retention), up to
//! [`MAX_PINNED`] of them.

use std::sync::atomic::Ordering;

use thiserror::Error;

use super::Hub;
use super::log::MAX_PINNED;
use super::message::MessageId;
use super::store::Change;

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
    pub fn pin_message(&self, id: MessageId, pinned: bool) -> Result<(), PinError> {
        // Only what memory holds can be pinned, so that every pin is counted (a restart
        // loads them all back); one that left may still be unpinned in the store.
        let in_memory = self.message(id).is_some();
        if !in_memory && (pinned || self.shared.store.get(id).is_none()) {
            return Err(PinError::UnknownMessage(id));
        }
        let left = {
            let mut log = self.shared.log.lock();
            if let Some(message) = log.get(id) {
                if message.is_pinned() == pinned {
                    return Ok(());
                }
                if pinned && log.pinned() >= MAX_PINNED {
                    return Err(PinError::TooMany { max: MAX_PINNED });
                }
                message.set_pinned(pinned);
            } else if pinned {
                // It left memory since it was looked up.
                return Err(PinError::UnknownMessage(id));
            }
            // Under the log lock, so that the store hears of pins in the order they were
            // made.
            self.shared.store.record(Change::Pinned { id, pinned });
            if pinned { None } else { log.unpin(id) }
        };
        if let Some(message) = left {
            message.evict();
        }
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
