//! What delivery workers report back: each delivery's outcome, and a subscriber's
//! suspension and recovery.

use super::Hub;
use super::event::HubEvent;
use super::message::MessageRecord;
use super::outcome::Outcome;
use super::subscriber::SubscriberShared;

impl Hub {
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
        self.emit(HubEvent::Delivery {
            id: message.id,
            address: subscriber.address.clone(),
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
