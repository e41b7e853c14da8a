//! The seam a cluster plugs in at, as delivery does through `Launch` and keeping through
//! `Store`: with a relay, a publish is handed to the shared log instead of this hub's, and
//! comes back into every instance's log from there ([`Hub::admit`]). Which instance makes
//! each delivery is the relay's to arrange ([`Hub::deliver_one`]), and what the others
//! made comes back as [`Hub::record_remote`]. The hub knows nothing of how.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use thiserror::Error;
use tokio::sync::oneshot;

use super::attempt::{Delivery, Round};
use super::event::HubEvent;
use super::message::{Draft, MessageId, MessageRecord, Source};
use super::outcome::{DeliveryState, Outcome};
use super::routing::Route;
use super::{Hub, ResendError};

/// A message on its way to the shared log.
#[derive(Debug)]
pub struct Outgoing {
    pub draft: Draft,
    pub source: Source,
    /// Only this subscriber, whatever the topic (a replay to one).
    pub to: Option<Arc<str>>,
    pub replay_of: Option<MessageId>,
}

/// How a delivery made for a relay ended: its outcome, and how many attempts it took
/// (`None` when the record no longer says: the message left the log meanwhile).
#[derive(Debug, Clone)]
pub struct Made {
    pub outcome: Outcome,
    pub attempts: Option<usize>,
}

/// What the shared log answers: the id it gave the message, once it is kept.
pub type Relayed = Pin<Box<dyn Future<Output = Result<MessageId, RelayError>> + Send>>;

pub trait Relay: Send + Sync + 'static {
    /// Resolves once the shared log has kept the message (or refused it).
    fn publish(&self, message: Outgoing) -> Relayed;
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RelayError {
    #[error("the cluster is unreachable ({0}); nothing was published, try again once it is back")]
    Unavailable(String),
    #[error("{0} is not available in cluster mode")]
    Unsupported(&'static str),
    /// Sent, but JetStream did not say it kept it: it may have.
    #[error(
        "JetStream did not confirm it within {0:?}; it may or may not have been kept, so check the log before publishing it again"
    )]
    Unconfirmed(std::time::Duration),
}

impl Hub {
    /// Makes this hub an instance of a cluster: every publish goes through `relay`.
    /// Set once, before the hub takes messages.
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        // A second relay would split the log; the first one stays.
        if self.shared.relay.set(relay).is_err() {
            tracing::warn!("the hub already has a relay; the second one is ignored");
        }
    }

    pub fn is_clustered(&self) -> bool {
        self.shared.relay.get().is_some()
    }

    pub(super) fn relay(&self) -> Option<&Arc<dyn Relay>> {
        self.shared.relay.get()
    }

    /// Logs a message the shared log gave id `id`, without sending it anywhere: each of
    /// its deliveries is made where the relay arranges. It takes its place by id; one
    /// already logged (read again after a reconnection) is returned as it is, and one
    /// older than the whole log is returned without being logged.
    pub fn admit(
        &self,
        id: MessageId,
        received_at: SystemTime,
        draft: Draft,
        source: Source,
        replay_of: Option<MessageId>,
    ) -> Arc<MessageRecord> {
        if let Some(known) = self.message(id) {
            return known;
        }
        let subscribers = self.route(draft.topic.as_ref()).len();
        let mut record = MessageRecord::restored(id, received_at, draft, source, Vec::new());
        record.subscribers = subscribers;
        record.replay_of = replay_of;
        let entered = match self.shared.log.enter_at(Arc::new(record)) {
            Ok(entered) => entered,
            // Admitted a moment ago by another reader (the feed, or a delivery loop), or
            // older than all the log holds: delivered, but not shown.
            Err(message) => return message,
        };
        let (message, evicted) = (entered.message, entered.evicted);
        self.link_replay(&message);
        self.emit(HubEvent::Published {
            id,
            subscribers,
            topic: message.topic.clone(),
        });
        evicted.iter().for_each(|m| m.evict());
        message
    }

    /// Makes the delivery of `message` (as [`Hub::admit`] returned it) to `address` here,
    /// through that subscriber's worker (its order, retries and signing), and tells its
    /// outcome.
    pub fn deliver_one(
        &self,
        message: &Arc<MessageRecord>,
        address: &str,
    ) -> Result<oneshot::Receiver<Made>, ResendError> {
        if self.is_stopping() {
            return Err(ResendError::ShuttingDown);
        }
        let recipient = self
            .recipient(address)
            .ok_or_else(|| ResendError::UnknownSubscriber(address.to_owned()))?;
        let shown = recipient.subscriber.address.clone();
        let route = Route::one(recipient);
        let (done, outcome) = oneshot::channel();
        // Registered before the job is queued: its worker may finish it at once.
        let slot = {
            let mut waiting = self.shared.waiting.lock();
            let first = message.add_deliveries(std::iter::once(shown), Round::Resend);
            waiting.insert((record_key(message), first), done);
            first
        };
        let refused = self.queue_at(message, &route, slot);
        self.record_refused(message, refused);
        self.trim_log();
        Ok(outcome)
    }

    /// Tells whoever waits for the delivery in `slot` of `message` its outcome.
    pub(super) fn notify_finished(&self, message: &MessageRecord, slot: usize, outcome: &Outcome) {
        let waiter = {
            let mut waiting = self.shared.waiting.lock();
            if waiting.is_empty() {
                return;
            }
            waiting.remove(&(record_key(message), slot))
        };
        if let Some(waiter) = waiter {
            let made = Made {
                outcome: outcome.clone(),
                attempts: message.attempts_at(slot),
            };
            // Nobody listening any more (its instance is stopping): nothing to tell.
            waiter.send(made).ok();
        }
    }

    /// Records a delivery another instance made: its outcome and how many attempts it
    /// took, in this hub's copy of the message, the metrics and the event stream.
    pub fn record_remote(
        &self,
        id: MessageId,
        address: &str,
        outcome: Outcome,
        attempts: Vec<super::attempt::Attempt>,
    ) {
        let Some(message) = self.message(id) else {
            return;
        };
        // One message cannot take the whole log (a NATS client can tell outcomes too).
        if message.held().records >= self.shared.log.usage().budget().records {
            return;
        }
        let address: Arc<str> = super::redact_address(address).into();
        message.add_remote(Delivery {
            subscriber: address.clone(),
            state: DeliveryState::Done(outcome.clone()),
            attempts,
        });
        self.shared.metrics.record(&outcome);
        self.trim_log();
        self.emit(HubEvent::Delivery {
            id,
            address,
            topic: message.topic.clone(),
            outcome,
        });
    }
}

/// Which record a waiter waits on: its address, stable while the waiter's job holds it.
fn record_key(message: &MessageRecord) -> usize {
    std::ptr::from_ref(message) as usize
}

impl Hub {
    /// Every subscriber's address as registered, when it registered here, and whether
    /// it asked for strict order.
    pub fn subscriber_keys(&self) -> Vec<(Arc<str>, SystemTime, bool)> {
        let subscribers = self.shared.subscribers.read();
        subscribers
            .iter()
            .map(|(key, entry)| (key.clone(), entry.registered_at, entry.shared.is_ordered()))
            .collect()
    }

    /// The subscriber registered as `key`, as a store keeps it.
    pub fn stored_subscriber(&self, key: &str) -> Option<super::StoredSubscriber> {
        self.shared.subscribers.read().get(key).map(|e| e.stored())
    }

    /// The address (as registered) of the subscriber whose `name_of` is `name`.
    pub fn address_named(&self, name: &str, name_of: impl Fn(&str) -> String) -> Option<Arc<str>> {
        let subscribers = self.shared.subscribers.read();
        subscribers.keys().find(|key| name_of(key) == name).cloned()
    }

    /// Whether a message on `topic` (for `to` only, if given) is for subscriber `key`,
    /// as a publish here would route it; `None` when `key` is not subscribed here.
    pub fn wants(&self, key: &str, topic: Option<&super::Topic>, to: Option<&str>) -> Option<bool> {
        let subscribers = self.shared.subscribers.read();
        let entry = subscribers.get(key)?;
        if let Some(to) = to {
            return Some(to == key);
        }
        let patterns = entry.shared.topics();
        Some(match topic {
            _ if patterns.is_empty() => true,
            None => false,
            Some(topic) => patterns.iter().any(|p| p.matches(topic)),
        })
    }

    /// Whether `key` is a live subscriber here.
    pub fn is_subscribed(&self, key: &str) -> bool {
        self.shared.subscribers.read().contains_key(key)
    }
}
