//! Resuming from a store at start: the subscribers it kept (those whose lease ran out
//! while the hub was down are removed, and recorded so), its newest messages, and every
//! delivery that had no outcome, queued again in publish order.

use std::sync::Arc;
use std::time::SystemTime;

use super::Hub;
use super::address::redact;
use super::event::HubEvent;
use super::message::MessageRecord;
use super::outcome::{DeliveryError, Outcome};
use super::store::{Change, Restored};
use super::subscriber::{Job, RemovalReason};

impl Hub {
    pub(super) fn restore(&self, restored: Restored) {
        let Restored {
            subscribers,
            messages,
            ..
        } = restored;
        let now = SystemTime::now();
        let ttl = self.ttl();
        for stored in subscribers {
            let lease = stored.lease.unwrap_or(ttl);
            let age = now.duration_since(stored.last_seen).unwrap_or_default();
            if !stored.pinned && age > lease {
                tracing::info!(address = %stored.key, "subscriber expired while the hub was down");
                self.shared.store.record(Change::Removed {
                    key: stored.key.clone(),
                });
                self.record_activity(HubEvent::Removed {
                    address: redact(&stored.key).into(),
                    reason: RemovalReason::Expired,
                });
                continue;
            }
            self.readmit(stored, age);
        }
        let newest = messages.last().map_or(0, |m| m.id);
        let mut evicted = Vec::new();
        let mut logged = Vec::with_capacity(messages.len());
        for message in messages {
            match self.shared.log.enter_at(message) {
                Ok(entered) => {
                    evicted.extend(entered.evicted);
                    logged.push(entered.message);
                }
                Err(message) => logged.push(message),
            }
        }
        self.shared.log.count_from(newest);
        for message in &logged {
            self.requeue(message);
        }
        evicted.iter().for_each(|m| m.evict());
    }

    /// Queues again every delivery of `message` that has no outcome, to the subscriber it
    /// was for; one that is gone gets its removal recorded instead.
    fn requeue(&self, message: &Arc<MessageRecord>) {
        for (slot, address) in message.unfinished() {
            let Some(recipient) = self.recipient(&address) else {
                let error = DeliveryError::Removed(RemovalReason::Expired);
                self.finish_restored(message, slot, Outcome::Failed(error));
                continue;
            };
            let job = Job {
                message: message.clone(),
                slot,
                _outstanding: self.shared.outstanding.token(),
            };
            // What does not fit the queue waits on disk, read back as it drains.
            if let Err(error) = self.offer(&recipient, job) {
                self.finish(message, slot, &recipient.subscriber, Outcome::Failed(error));
            }
        }
    }

    /// Records the outcome of a restored delivery whose subscriber is gone.
    fn finish_restored(&self, message: &MessageRecord, slot: usize, outcome: Outcome) {
        self.shared.metrics.record(&outcome);
        message.set_outcome(slot, outcome.clone());
        self.shared.store.record(Change::Finished {
            id: message.id,
            slot,
            outcome,
        });
    }
}
