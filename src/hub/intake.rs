//! Intake: accepting a message into the log and handing it to the fan-out (`fan_out`), and
//! importing an exported log. Resending is in `resend`.

use std::sync::atomic::Ordering;

use thiserror::Error;
use tokio::sync::mpsc;

use super::Hub;
use super::attempt::Round;
use super::event::HubEvent;
use super::fan_out::{FAN_OUT_BACKLOG, FanOut, INLINE_FAN_OUT};
use super::message::{Draft, MessageId, MessageRecord, Source};
use super::outcome::Outcome;
use super::routing::{Recipient, Route};
use super::store::{Commit, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    #[error("the hub is shutting down; nothing was published")]
    ShuttingDown,
    #[error(
        "the hub is still queueing {0} earlier messages for their subscribers; nothing was published, try again shortly"
    )]
    Backlog(usize),
    /// The store failed a moment ago: refused before anything was done.
    #[error("not accepted: {0}")]
    Store(#[from] StoreError),
    /// The store did not keep it once it was queued: it may reach its subscribers, but
    /// would not survive a restart.
    #[error(
        "not kept: {0}; it may still reach the subscribers live now, but would not be sent again after a restart"
    )]
    NotKept(StoreError),
    #[error(transparent)]
    Relay(#[from] super::RelayError),
    /// Refused where it enters: it would be accepted, then fail every delivery.
    #[error(
        "the content type {0:?} cannot be sent as a header; use printable ASCII only, e.g. application/json"
    )]
    ContentType(String),
}

/// Refuses a draft that could never be sent: its content type goes out as a header, which
/// takes printable ASCII and tabs only (`wire::forward::header_text`, the one rule for
/// every header Herald passes on; a CR, LF or other control byte would make every
/// delivery of it fail, and a resend of several suspend a healthy subscriber).
pub(crate) fn sendable(draft: &Draft) -> Result<(), PublishError> {
    match &draft.content_type {
        Some(text) if crate::wire::forward::header_text(text.as_bytes()).is_none() => {
            Err(PublishError::ContentType(text.clone()))
        }
        _ => Ok(()),
    }
}

/// A message `publish` accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub id: MessageId,
    /// Live subscribers when it was accepted; each gets a delivery (or, if its queue is
    /// full, a delivery recorded as dropped).
    pub subscribers: usize,
}

/// What a publish that does not wait ([`Hub::publish`]) was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Logged here.
    Logged(Published),
    /// Handed to a cluster's shared log, which gives it its id an instant later.
    Relayed { subscribers: usize },
}

impl Accepted {
    /// Its id, once it has one: a message handed to a cluster does not yet.
    pub fn id(&self) -> Option<MessageId> {
        match self {
            Accepted::Logged(published) => Some(published.id),
            Accepted::Relayed { .. } => None,
        }
    }

    /// What it was answered, if it was logged here.
    pub fn logged(self) -> Option<Published> {
        match self {
            Accepted::Logged(published) => Some(published),
            Accepted::Relayed { .. } => None,
        }
    }

    /// Live subscribers when it was accepted.
    pub fn subscribers(&self) -> usize {
        match self {
            Accepted::Logged(published) => published.subscribers,
            Accepted::Relayed { subscribers } => *subscribers,
        }
    }
}

fn outgoing(draft: Draft, source: Source, aim: Aim) -> super::cluster_port::Outgoing {
    super::cluster_port::Outgoing {
        draft,
        source,
        to: aim.to.map(|r| r.subscriber.key.clone()),
        replay_of: aim.replay_of,
    }
}

/// Where a publish goes besides what its draft says.
#[derive(Default)]
pub(super) struct Aim {
    /// The message it replays.
    pub(super) replay_of: Option<MessageId>,
    /// Only this recipient, whatever the topic.
    pub(super) to: Option<Recipient>,
}

impl Hub {
    /// Logs the draft and queues it for every subscriber live now. With many subscribers
    /// the queueing is handed to the fan-out task, to be done an instant later off the
    /// caller's thread, so that accepting costs the same with ten subscribers or ten
    /// thousand. A subscriber whose queue is full gets this delivery recorded as dropped.
    /// Refused while the fan-out is a full backlog behind; [`Hub::publish_when_ready`]
    /// waits instead.
    pub fn publish(&self, draft: Draft, source: Source) -> Result<Accepted, PublishError> {
        self.accept_now(draft, source, Aim::default())
    }

    /// [`Hub::publish`] with an aim: refused rather than waiting for the fan-out. The
    /// console is told of a failed commit through the store's `failing`, which refuses
    /// the next publish; it never waits on the disk.
    pub(super) fn accept_now(
        &self,
        draft: Draft,
        source: Source,
        aim: Aim,
    ) -> Result<Accepted, PublishError> {
        sendable(&draft)?;
        if let Some(relay) = self.relay() {
            // The console never waits: the shared log's answer comes on the runtime, and
            // the message into this log (and the console) from there.
            let subscribers = self.reach_of_aim(&draft, &aim);
            let relayed = relay.publish(outgoing(draft, source, aim));
            let task = async move {
                if let Err(error) = relayed.await {
                    tracing::warn!(%error, "a message from the console was not published");
                }
            };
            self.shared
                .launcher
                .spawn("relayed publish", Box::pin(task));
            return Ok(Accepted::Relayed { subscribers });
        }
        let room = self.shared.fan_out.try_reserve().ok();
        self.accept(room, draft, source, aim)
            .map(|(published, _commit)| Accepted::Logged(published))
    }

    /// Like [`Hub::publish`], but waits for the fan-out to have room instead of refusing,
    /// and answers only once the store has kept the message: what the HTTP routes
    /// acknowledge is on disk (with a durable store).
    pub async fn publish_when_ready(
        &self,
        draft: Draft,
        source: Source,
    ) -> Result<Published, PublishError> {
        self.accept_when_ready(draft, source, Aim::default()).await
    }

    /// [`Hub::publish_when_ready`] with an aim.
    pub(super) async fn accept_when_ready(
        &self,
        draft: Draft,
        source: Source,
        aim: Aim,
    ) -> Result<Published, PublishError> {
        // Not worth waiting for room in a hub that is going away.
        if self.is_stopping() {
            return Err(PublishError::ShuttingDown);
        }
        sendable(&draft)?;
        if let Some(relay) = self.relay() {
            let subscribers = self.reach_of_aim(&draft, &aim);
            let id = relay.publish(outgoing(draft, source, aim)).await?;
            return Ok(Published { id, subscribers });
        }
        let room = self.shared.fan_out.reserve().await.ok();
        let (published, commit) = self.accept(room, draft, source, aim)?;
        commit.await.map_err(PublishError::NotKept)?;
        Ok(published)
    }

    /// Logs the message and queues it, here or through the fan-out task (`room` is a
    /// place in its backlog, if one could be had).
    fn accept(
        &self,
        room: Option<mpsc::Permit<'_, FanOut>>,
        mut draft: Draft,
        source: Source,
        aim: Aim,
    ) -> Result<(Published, Commit), PublishError> {
        if self.is_stopping() {
            return Err(PublishError::ShuttingDown);
        }
        if let Some(error) = self.shared.store.failing() {
            return Err(PublishError::Store(error));
        }
        // A new trace asks the OS for random bytes: done before taking the log lock.
        draft
            .trace
            .get_or_insert_with(crate::wire::TraceContext::new_root);
        let route = match aim.to {
            Some(recipient) => Route::one(recipient),
            None => self.route(draft.topic.as_ref()),
        };
        let subscribers = route.len();
        // Kept with the message, in its commit (copies of `Arc`s, made before the lock).
        let addresses = if self.shared.store.is_durable() {
            route.iter().map(|r| r.subscriber.address.clone()).collect()
        } else {
            Vec::new()
        };
        // Under the log's lock, ids are given, and messages queued or handed to the
        // fan-out, in one order: the order in which each subscriber receives them.
        let entered = self.shared.log.enter(
            || {
                let inline = subscribers <= INLINE_FAN_OUT
                    && self.shared.fanning_out.load(Ordering::Acquire) == 0;
                match room {
                    Some(room) if !inline => Ok(Some(room)),
                    _ if inline => Ok(None),
                    _ => Err(PublishError::Backlog(FAN_OUT_BACKLOG)),
                }
            },
            |id| {
                let mut message = MessageRecord::new(id, draft, source, subscribers);
                message.replay_of = aim.replay_of;
                message
            },
            |message, room, evicted| {
                // In id order, and before any change about it.
                let commit = self.shared.store.append(message, addresses);
                // Announced before any of its deliveries can be.
                self.emit(HubEvent::Published {
                    id: message.id,
                    subscribers,
                    topic: message.topic.clone(),
                });
                let refused: Vec<_> = match room {
                    Some(room) => {
                        self.shared.fanning_out.fetch_add(1, Ordering::AcqRel);
                        room.send(FanOut {
                            message: message.clone(),
                            route,
                            evicted: std::mem::take(evicted),
                            _outstanding: self.shared.outstanding.token(),
                        });
                        Vec::new()
                    }
                    // Recorded once the lock is let go.
                    None => self
                        .queue(message, &route, Round::Publish)
                        .into_iter()
                        .map(|(slot, recipient, error)| (slot, recipient.subscriber.clone(), error))
                        .collect(),
                };
                (commit, refused)
            },
        )?;
        let (commit, refused) = entered.then;
        let message = entered.message;
        self.link_replay(&message);
        for (slot, subscriber, error) in refused {
            self.finish(&message, slot, &subscriber, Outcome::Failed(error));
        }
        entered.evicted.iter().for_each(|m| m.evict());
        let id = message.id;
        Ok((Published { id, subscribers }, commit))
    }

    /// How many live subscribers a publish with `aim` reaches now.
    fn reach_of_aim(&self, draft: &Draft, aim: &Aim) -> usize {
        match aim.to {
            Some(_) => 1,
            None => self.route(draft.topic.as_ref()).len(),
        }
    }

    /// Logs messages read back from an exported log, with the times they had, without
    /// sending them anywhere: to inspect and resend. Answers once the store has kept them.
    pub async fn import(
        &self,
        messages: Vec<(Draft, std::time::SystemTime)>,
    ) -> Result<Vec<MessageId>, PublishError> {
        if self.is_stopping() {
            return Err(PublishError::ShuttingDown);
        }
        if self.is_clustered() {
            // Its ids are this log's, which the shared log's would collide with.
            return Err(super::RelayError::Unsupported("importing an exported log").into());
        }
        if let Some(error) = self.shared.store.failing() {
            return Err(PublishError::Store(error));
        }
        for (draft, _) in &messages {
            sendable(draft)?;
        }
        let mut ids = Vec::with_capacity(messages.len());
        let mut commit = Commit::done();
        let mut evicted = Vec::new();
        for (mut draft, received_at) in messages {
            draft
                .trace
                .get_or_insert_with(crate::wire::TraceContext::new_root);
            let entered = self.shared.log.enter(
                || Ok::<_, PublishError>(()),
                |id| MessageRecord::restored(id, received_at, draft, Source::Imported, Vec::new()),
                // Commits resolve in order: the last one answers for them all.
                |message, (), _| self.shared.store.append(message, Vec::new()),
            )?;
            commit = entered.then;
            evicted.extend(entered.evicted);
            let message = entered.message;
            self.emit(HubEvent::Published {
                id: message.id,
                subscribers: 0,
                topic: message.topic.clone(),
            });
            ids.push(message.id);
        }
        evicted.iter().for_each(|m| m.evict());
        commit.await.map_err(PublishError::NotKept)?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::hub::fan_out::tests::{hub_with, publish};
    use crate::hub::{RegisterError, RemovalReason};

    #[test]
    fn leaving_takes_a_subscriber_out_of_the_routing_whatever_its_topics() {
        use crate::hub::{Pattern, Subscription, Topic};

        let (hub, _held) = hub_with(3);
        let patterns = |list: &[&str]| list.iter().map(|p| Pattern::parse(p).unwrap()).collect();
        for (port, list) in [
            (2000, &["orders.*"][..]),
            (2001, &["orders.>", "billing.*"]),
        ] {
            let address = format!("127.0.0.1:{port}");
            let subscription = Subscription {
                topics: Some(patterns(list)),
                ..Subscription::new(&address)
            };
            hub.subscribe(subscription).unwrap();
        }
        let topic = Topic::parse("orders.created").unwrap();
        assert_eq!(hub.reach(Some(&topic)).len(), 5);
        hub.set_topics("127.0.0.1:1024", patterns(&["billing.paid"]))
            .unwrap();
        assert_eq!(hub.reach(Some(&topic)).len(), 4);
        assert!(hub.remove("127.0.0.1:2000", RemovalReason::Kicked));
        assert_eq!(hub.reach(Some(&topic)).len(), 3);
        // The rest expire together: one pass takes them all out.
        let expired = hub.expire(Instant::now() + hub.ttl() + Duration::from_secs(1));
        assert_eq!(expired.len(), 4);
        assert!(hub.shared.registry.is_unrouted());
        // Registered again, it starts afresh: no topics, every message.
        hub.subscribe("127.0.0.1:2001").unwrap();
        assert!(hub.subscriber("127.0.0.1:2001").unwrap().topics.is_empty());
        assert_eq!(hub.reach(Some(&topic)).len(), 1);
    }

    #[test]
    fn the_hub_holds_its_cap_on_patterns_in_all() {
        use crate::hub::{MAX_HUB_PATTERNS, MAX_PATTERNS, Pattern, Subscription, TopicError};

        let (hub, _held) = hub_with(0);
        let full = MAX_HUB_PATTERNS / MAX_PATTERNS;
        let register = |n: usize| {
            let patterns = (0..MAX_PATTERNS)
                .map(|p| Pattern::parse(&format!("s{n}.p{p}")).unwrap())
                .collect();
            let address = format!("127.0.0.1:{}", 1024 + n);
            let subscription = Subscription {
                topics: Some(patterns),
                ..Subscription::new(&address)
            };
            hub.subscribe(subscription)
        };
        for n in 0..full {
            register(n).unwrap();
        }
        let Err(RegisterError::Topics(TopicError::HubFull { .. })) = register(full) else {
            panic!("registered past the cap");
        };
        assert_eq!(
            hub.subscriber_count(),
            full,
            "the refused one is not registered"
        );
        // Without topics it may still come.
        hub.subscribe("127.0.0.1:9").unwrap();
    }

    #[test]
    fn publishes_go_to_the_subscribers_live_at_the_time() {
        let (hub, held) = hub_with(3);
        let first = publish(&hub, "to three").unwrap();
        assert!(hub.remove("127.0.0.1:1025", RemovalReason::Kicked));
        hub.subscribe("127.0.0.1:2000").unwrap();
        let second = publish(&hub, "to three others").unwrap();
        let expired = hub.expire(Instant::now() + hub.ttl() + Duration::from_secs(1));
        assert_eq!(expired.len(), 3);
        let third = publish(&hub, "to nobody").unwrap();
        assert_eq!(
            (first.subscribers, second.subscribers, third.subscribers),
            (3, 3, 0)
        );
        let received: Vec<Vec<MessageId>> = held
            .mailboxes
            .lock()
            .iter_mut()
            .map(|mailbox| {
                std::iter::from_fn(|| mailbox.jobs.try_recv().ok())
                    .map(|job| job.message.id)
                    .collect()
            })
            .collect();
        // In registration order: 1024, 1025 (kicked), 1026, then 2000.
        let (a, b) = (first.id, second.id);
        assert_eq!(received, [vec![a, b], vec![a], vec![a, b], vec![b]]);
    }
}
