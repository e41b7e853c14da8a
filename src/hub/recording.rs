//! What delivery workers report back: each delivery's outcome, and a subscriber's
//! suspension and recovery.

use std::sync::atomic::Ordering;

use super::Hub;
use super::attempt::Attempt;
use super::event::HubEvent;
use super::message::MessageRecord;
use super::outcome::{DeliveryError, Outcome};
use super::store::Change;
use super::subscriber::RemovalReason;
use super::subscriber::SubscriberShared;

impl Hub {
    /// Keeps one attempt of a delivery, and keeps the log within its budget.
    pub(crate) fn record_attempt(
        &self,
        message: &MessageRecord,
        slot: usize,
        subscriber: &SubscriberShared,
        attempt: Attempt,
    ) {
        subscriber.stats.record_last(&attempt.outcome);
        if self.shared.store.is_durable() {
            self.shared.store.record(Change::Attempt {
                id: message.id,
                slot,
                attempt: attempt.clone(),
            });
        }
        message.push_attempt(slot, attempt);
        self.trim_log();
        // The console's "Last" column and a retrying delivery show it at once.
        self.shared.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the oldest messages out of the log while it holds more than its budget.
    /// Cheap when it does not: two atomic reads.
    pub(super) fn trim_log(&self) {
        self.shared.log.trim();
    }

    /// Records the final outcome of one delivery: in the message, the subscriber's stats,
    /// the metrics and the event stream.
    pub(crate) fn finish(
        &self,
        message: &MessageRecord,
        slot: usize,
        subscriber: &SubscriberShared,
        outcome: Outcome,
    ) {
        if let Some(error) = outcome.error() {
            tracing::debug!(id = message.id, address = %subscriber.address, %error, "delivery failed");
        }
        subscriber.stats.record(&outcome);
        self.shared.metrics.record(&outcome);
        message.set_outcome(slot, outcome.clone());
        self.notify_finished(message, slot, &outcome);
        // A delivery cut off by shutdown is made at the next start, so the store keeps
        // it without an outcome.
        let abandoned = outcome.error() == Some(&DeliveryError::Removed(RemovalReason::Shutdown));
        if self.shared.store.is_durable() && !abandoned {
            self.shared.store.record(Change::Finished {
                id: message.id,
                slot,
                outcome: outcome.clone(),
            });
        }
        self.emit(HubEvent::Delivery {
            id: message.id,
            address: subscriber.address.clone(),
            topic: message.topic.clone(),
            outcome,
        });
    }

    /// Marks a subscriber suspended or active, recording the change. Called by its worker
    /// (and by re-registration, which resumes).
    pub(crate) fn set_suspended(&self, subscriber: &SubscriberShared, suspended: bool) {
        if !subscriber.set_suspended(suspended) {
            return;
        }
        let address = subscriber.address.clone();
        if suspended {
            tracing::warn!(%address, "subscriber suspended after repeated failures");
            self.record_activity(HubEvent::Suspended { address });
        } else {
            tracing::info!(%address, "subscriber resumed");
            self.record_activity(HubEvent::Resumed { address });
        }
    }
}
