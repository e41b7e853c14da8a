//! The port a cluster plugs in at, as delivery does through `Launch` and keeping through
//! `Store`. A cluster attaches with its [`Relay`] (where a publish goes instead of this
//! log, and where this hub's subscriber changes are told) and gets a [`ClusterPort`]: the
//! one object with what it does to the hub, nothing more. Messages come back from the
//! shared log through [`ClusterPort::admit`]; which instance makes each delivery is the
//! cluster's to arrange ([`ClusterPort::deliver_one`]), and what the others made comes
//! back through [`ClusterPort::record_remote`]. The hub knows nothing of how.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::attempt::{Attempt, Delivery, Round};
use super::event::HubEvent;
use super::message::{Draft, MessageId, MessageRecord, Source};
use super::outcome::{DeliveryState, Outcome};
use super::registry::MadeAt;
use super::routing::Route;
use super::store::StoredSubscriber;
use super::subscriber::RemovalReason;
use super::subscription::{RegisterError, Subscription};
use super::topic::Topic;
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

/// How a delivery made for a cluster ended: its outcome, and how many attempts it took
/// (`None` when the record no longer says: the message left the log meanwhile).
#[derive(Debug, Clone)]
pub struct Made {
    pub outcome: Outcome,
    pub attempts: Option<usize>,
}

/// A subscriber change made here, for the other instances.
#[derive(Debug, Clone)]
pub enum SubscriberChange {
    /// Registered, or changed: where it stands now.
    Put(StoredSubscriber),
    /// A keep-alive that changed nothing else.
    Seen(Arc<str>),
    Removed(Arc<str>),
    /// A subscriber that was never shared (a test subscriber) left: only what the
    /// cluster made for it here (its consumer) goes.
    Left(Arc<str>),
}

/// What the shared log answers: the id it gave the message, once it is kept.
pub type Relayed = Pin<Box<dyn Future<Output = Result<MessageId, RelayError>> + Send>>;

/// What a cluster gives the hub when it attaches.
pub trait Relay: Send + Sync + 'static {
    /// Resolves once the shared log has kept the message (or refused it).
    fn publish(&self, message: Outgoing) -> Relayed;
    /// A subscriber changed here. Called under the registry's lock, in the order the
    /// changes were made, so it must not block: queue it and return.
    fn subscriber_changed(&self, change: SubscriberChange);
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

/// What a hub holds of the cluster it is attached to.
pub(super) struct Attached {
    relay: Arc<dyn Relay>,
    /// The cluster's identity, once it has joined: this hub's instance id from then on
    /// ([`ClusterPort::name`]).
    instance: OnceLock<String>,
    /// Deliveries made for the cluster ([`ClusterPort::deliver_one`]) whose outcome it
    /// waits for, by message record (its address: the cluster may hold a record of a
    /// message the log no longer has, one per reader) and slot. Only a clustered hub
    /// has it, so a standalone hub's workers never take this lock.
    waiting: Mutex<HashMap<(usize, usize), oneshot::Sender<Made>>>,
}

/// The hub as a cluster uses it: handed out once, by [`Hub::attach`].
#[derive(Clone)]
pub struct ClusterPort {
    hub: Hub,
}

impl Hub {
    /// Makes this hub an instance of a cluster: every publish goes through `relay`, and
    /// every subscriber change made here is told to it. Once, before the hub takes
    /// messages: a second relay would split the log, so the first one stays.
    pub fn attach(&self, relay: Arc<dyn Relay>) -> ClusterPort {
        let attached = Attached {
            relay,
            instance: OnceLock::new(),
            waiting: Mutex::default(),
        };
        if self.shared.cluster.set(attached).is_err() {
            tracing::warn!("the hub is part of a cluster already; a second relay is ignored");
        }
        ClusterPort { hub: self.clone() }
    }

    pub fn is_clustered(&self) -> bool {
        self.shared.cluster.get().is_some()
    }

    /// The instance id the cluster named this hub with, once it has.
    pub(super) fn cluster_instance(&self) -> Option<&str> {
        let attached = self.shared.cluster.get()?;
        attached.instance.get().map(String::as_str)
    }

    pub(super) fn relay(&self) -> Option<&Arc<dyn Relay>> {
        self.shared.cluster.get().map(|attached| &attached.relay)
    }

    /// Tells the cluster, if any, of a subscriber change made here.
    pub(super) fn tell_cluster(&self, change: impl FnOnce() -> SubscriberChange) {
        if let Some(attached) = self.shared.cluster.get() {
            attached.relay.subscriber_changed(change());
        }
    }

    /// Tells whoever waits for the delivery in `slot` of `message` its outcome: only a
    /// cluster does.
    pub(super) fn notify_finished(&self, message: &MessageRecord, slot: usize, outcome: &Outcome) {
        let Some(attached) = self.shared.cluster.get() else {
            return;
        };
        let waiter = attached.waiting.lock().remove(&(record_key(message), slot));
        if let Some(waiter) = waiter {
            let made = Made {
                outcome: outcome.clone(),
                attempts: message.attempts_at(slot),
            };
            // Nobody listening any more (its instance is stopping): nothing to tell.
            waiter.send(made).ok();
        }
    }
}

impl ClusterPort {
    /// Names this hub with its cluster's identity: from now on, the `webhook-id`s and
    /// `X-Herald-Instance` of its deliveries, and the loop check, are the cluster's, the
    /// same at every instance. Once, on joining, before the first message is admitted:
    /// until then it has nothing to deliver (every message comes from the shared log),
    /// and goes by the random id it started with. A second, different name is refused:
    /// deliveries already made went out under the first.
    pub fn name(&self, instance: &str) {
        let Some(attached) = self.hub.shared.cluster.get() else {
            return;
        };
        let named = attached.instance.get_or_init(|| instance.to_owned());
        if named != instance {
            tracing::warn!(
                named = %named,
                ignored = %instance,
                "the cluster's identity changed while this instance ran; it keeps the first"
            );
        }
    }

    /// Logs a message the shared log gave id `id`, without sending it anywhere: each of
    /// its deliveries is made where the cluster arranges. It takes its place by id; one
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
        let hub = &self.hub;
        if let Some(known) = hub.message(id) {
            return known;
        }
        let subscribers = hub.route(draft.topic.as_ref()).len();
        let mut record = MessageRecord::restored(id, received_at, draft, source, Vec::new());
        record.subscribers = subscribers;
        record.replay_of = replay_of;
        let entered = match hub.shared.log.enter_at(Arc::new(record)) {
            Ok(entered) => entered,
            // Admitted a moment ago by another reader (the feed, or a delivery loop), or
            // older than all the log holds: delivered, but not shown.
            Err(message) => return message,
        };
        let (message, evicted) = (entered.message, entered.evicted);
        hub.link_replay(&message);
        hub.emit(HubEvent::Published {
            id,
            subscribers,
            topic: message.topic.clone(),
        });
        evicted.iter().for_each(|m| m.evict());
        message
    }

    /// Makes the delivery of `message` (as [`ClusterPort::admit`] returned it) to
    /// `address` here, through that subscriber's worker (its order, retries and
    /// signing), and tells its outcome.
    pub fn deliver_one(
        &self,
        message: &Arc<MessageRecord>,
        address: &str,
    ) -> Result<oneshot::Receiver<Made>, ResendError> {
        let hub = &self.hub;
        if hub.is_stopping() {
            return Err(ResendError::ShuttingDown);
        }
        let recipient = hub
            .recipient(address)
            .ok_or_else(|| ResendError::UnknownSubscriber(address.to_owned()))?;
        let Some(attached) = hub.shared.cluster.get() else {
            return Err(ResendError::ShuttingDown);
        };
        let shown = recipient.subscriber.address.clone();
        let route = Route::one(recipient);
        let (done, outcome) = oneshot::channel();
        // Registered before the job is queued: its worker may finish it at once.
        let slot = {
            let mut waiting = attached.waiting.lock();
            let first = message.add_deliveries(std::iter::once(shown), Round::Resend);
            waiting.insert((record_key(message), first), done);
            first
        };
        let refused = hub.queue_at(message, &route, slot);
        hub.record_refused(message, refused);
        hub.trim_log();
        Ok(outcome)
    }

    /// Records a delivery another instance made: its outcome and how many attempts it
    /// took, in this hub's copy of the message, the metrics and the event stream.
    pub fn record_remote(
        &self,
        id: MessageId,
        address: &str,
        outcome: Outcome,
        attempts: Vec<Attempt>,
    ) {
        let hub = &self.hub;
        let Some(message) = hub.message(id) else {
            return;
        };
        // One message cannot take the whole log (a NATS client can tell outcomes too).
        if message.held().records >= hub.shared.log.usage().budget().records {
            return;
        }
        let address: Arc<str> = super::redact_address(address).into();
        message.add_remote(Delivery {
            subscriber: address.clone(),
            state: DeliveryState::Done(outcome.clone()),
            attempts,
        });
        hub.shared.metrics.record(&outcome);
        hub.trim_log();
        hub.emit(HubEvent::Delivery {
            id,
            address,
            topic: message.topic.clone(),
            outcome,
        });
    }

    /// Registers or refreshes a subscriber as another instance shared it, with its pause
    /// and pin: applied here, not told back.
    pub fn apply(
        &self,
        subscription: Subscription<'_>,
        paused: bool,
        pinned: bool,
    ) -> Result<(), RegisterError> {
        let hub = &self.hub;
        let address = subscription.address;
        hub.subscribe_at(subscription, MadeAt::Elsewhere)?;
        if let Some(now) = hub.subscriber(address) {
            // Both answer only "unknown subscriber", and it was registered a line above.
            if now.paused != paused {
                hub.set_paused_at(address, paused, MadeAt::Elsewhere).ok();
            }
            if now.pinned != pinned {
                hub.set_pinned_at(address, pinned, MadeAt::Elsewhere).ok();
            }
        }
        Ok(())
    }

    /// Removes a subscriber another instance removed: not told back.
    pub fn remove(&self, key: &str) -> bool {
        self.hub
            .remove_at(key, RemovalReason::Deregistered, MadeAt::Elsewhere)
    }

    /// Every subscriber's address as registered, when it registered here, and whether
    /// it asked for strict order.
    pub fn subscriber_keys(&self) -> Vec<(Arc<str>, SystemTime, bool)> {
        self.hub.shared.registry.keys()
    }

    /// The subscriber registered as `key`, as a store keeps it.
    pub fn stored_subscriber(&self, key: &str) -> Option<StoredSubscriber> {
        self.hub.shared.registry.stored(key)
    }

    /// The address (as registered) of the subscriber whose `name_of` is `name`.
    pub fn address_named(&self, name: &str, name_of: impl Fn(&str) -> String) -> Option<Arc<str>> {
        self.hub.shared.registry.named(name, name_of)
    }

    /// Whether a message on `topic` (for `to` only, if given) is for subscriber `key`,
    /// as a publish here would route it; `None` when `key` is not subscribed here.
    pub fn wants(&self, key: &str, topic: Option<&Topic>, to: Option<&str>) -> Option<bool> {
        self.hub.shared.registry.wants(key, topic, to)
    }

    /// Whether `key` is a live subscriber here.
    pub fn is_subscribed(&self, key: &str) -> bool {
        self.hub.shared.registry.contains(key)
    }

    /// A message the log holds in memory.
    pub fn message(&self, id: MessageId) -> Option<Arc<MessageRecord>> {
        self.hub.message(id)
    }

    /// The keep-alive period for subscribers without a lease of their own.
    pub fn ttl(&self) -> Duration {
        self.hub.ttl()
    }

    /// Deliveries waiting per subscriber at most.
    pub fn queue_capacity(&self) -> usize {
        self.hub.config().queue_capacity
    }

    /// Cancelled when the hub begins to shut down.
    pub fn stopping(&self) -> CancellationToken {
        self.hub.stopping()
    }
}

/// Which record a waiter waits on: its address, stable while the waiter's job holds it.
fn record_key(message: &MessageRecord) -> usize {
    std::ptr::from_ref(message) as usize
}
