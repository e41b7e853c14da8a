//! Delivery: a supervisor that keeps one delivery loop per subscriber this hub has, each
//! pulling the subscriber's messages from its durable consumer (shared by every
//! instance, so that JetStream hands each message to one of them) and delivering them
//! here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::State;
use super::codec::{self, SharedOutcome};
use crate::hub::DeliveryError;

/// How often the consumers are matched against the subscribers.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);
/// Messages a subscriber without strict order may have unacknowledged at once (in
/// flight, queued at an instance, retrying): its worker's queue holds as many.
const UNORDERED_WINDOW: usize = 1_024;
const FRESH_REGISTRATION: Duration = Duration::from_secs(30);
/// A subscriber's consumer left behind (its subscriber gone while no instance ran) is
/// removed by JetStream after this long unused.
const CONSUMER_IDLE: Duration = Duration::from_secs(60 * 60);

/// Keeps a delivery loop running for each subscriber this hub has, and none for those
/// it no longer has.
pub(super) async fn supervise(state: Arc<State>) {
    type Running = (bool, CancellationToken, tokio::task::JoinHandle<()>);
    let mut running: HashMap<Arc<str>, Running> = HashMap::new();
    loop {
        let subscribers: HashMap<Arc<str>, (SystemTime, bool)> = state
            .hub
            .subscriber_keys()
            .into_iter()
            .map(|(key, at, ordered)| (key, (at, ordered)))
            .collect();
        running.retain(|key, (ordered, stop, task)| {
            // A loop that ended on its own (its subscriber left and came back between two
            // looks) is started again below, as is one for a subscriber that changed its
            // order: its consumer's window changes with it.
            let now = subscribers.get(key).map(|(_, now)| *now);
            let keep = keeps_running(now, *ordered, task.is_finished());
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (key, (registered_at, ordered)) in subscribers {
            if running.contains_key(&key) {
                continue;
            }
            let stop = state.stop.child_token();
            let task = tokio::spawn(deliver_loop(
                state.clone(),
                key.clone(),
                (registered_at, ordered),
                stop.clone(),
            ));
            running.insert(key, (ordered, stop, task));
        }
        tokio::select! {
            () = state.stop.cancelled() => return,
            () = tokio::time::sleep(SUPERVISE_EVERY) => {}
        }
    }
}

/// Whether a running delivery loop goes on: its subscriber is still here (`now`, its
/// order now), in the order the loop was started for, and the loop has not ended.
fn keeps_running(now: Option<bool>, ordered: bool, finished: bool) -> bool {
    now == Some(ordered) && !finished
}

/// Pulls the messages for subscriber `key` from its consumer and delivers each here,
/// while JetStream hands them to this instance, until `stop` or the subscriber leaves
/// this hub. The deliveries under way outlive a failed pull stream (a missed heartbeat):
/// the stream is opened again beside them, so that one retrying delivery never holds
/// back the next. A delivery under way when the loop ends is finished (acknowledged,
/// or handed back) first.
async fn deliver_loop(
    state: Arc<State>,
    key: Arc<str>,
    (registered_at, ordered): (SystemTime, bool),
    stop: CancellationToken,
) {
    let mut under_way = tokio::task::JoinSet::new();
    let mut gone = false;
    'open: while !gone && !stop.is_cancelled() {
        let (mut messages, ack_wait) = match open(&state, &key, registered_at, ordered).await {
            Ok(opened) => opened,
            Err(error) => {
                tracing::debug!(%error, address = %key, "a subscriber's consumer cannot be read; again in a second");
                tokio::select! {
                    () = stop.cancelled() => break 'open,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue 'open,
                }
            }
        };
        while !gone {
            // Only waiting for the next message is cut short by `stop`: a delivery taken
            // is seen to its end, so that a stopping instance hands nothing out twice.
            tokio::select! {
                () = stop.cancelled() => break 'open,
                Some(done) = under_way.join_next(), if !under_way.is_empty() => {
                    gone = matches!(done, Ok(Ok(Handled::Gone)));
                    if let Ok(Err(error)) = done {
                        tracing::debug!(%error, address = %key, "a delivery's acknowledgement failed");
                    }
                }
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        let token = state.delivering.token();
                        let (state, key) = (state.clone(), key.clone());
                        under_way.spawn(async move {
                            let handled = handle(&state, &key, message, ack_wait).await;
                            drop(token);
                            handled
                        });
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, address = %key, "a subscriber's pull stream failed; opened again");
                        continue 'open;
                    }
                    None => continue 'open,
                },
            }
        }
    }
    // Dropping them would leave their deliveries queued here and unacknowledged there,
    // to be made again elsewhere.
    while under_way.join_next().await.is_some() {}
}

/// The consumer of subscriber `key`, as its options want it now, and a pull stream of
/// it; with the acknowledgement wait.
async fn open(
    state: &Arc<State>,
    key: &Arc<str>,
    registered_at: SystemTime,
    ordered: bool,
) -> anyhow::Result<(consumer::pull::Stream, Duration)> {
    let links = state
        .links
        .get()
        .ok_or_else(|| anyhow::anyhow!("not connected"))?;
    let name = codec::name_of(key);
    let window = window_for(ordered, state.hub.queue_capacity());
    let ack_wait = state.config.delivery_timeout + Duration::from_secs(2);
    let registered_at = state
        .registered
        .lock()
        .get(key)
        .copied()
        .unwrap_or(registered_at);
    let deliver_policy = deliver_policy_for(registered_at, SystemTime::now());
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        deliver_policy,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: window as i64,
        inactive_threshold: CONSUMER_IDLE,
        ..Default::default()
    };
    let mut consumer: consumer::PullConsumer = links
        .messages
        .get_or_create_consumer(&name, config.clone())
        .await?;
    // One made for other options (the subscriber registered again, ordered now, or the
    // delivery timeout changed) is brought to these: both fields may change in place.
    let made = &consumer.cached_info().config;
    if needs_update(made, &config) {
        let config = consumer::pull::Config {
            deliver_policy: made.deliver_policy,
            ..config
        };
        match links.messages.create_consumer(config).await {
            Ok(updated) => consumer = updated,
            Err(error) => {
                tracing::warn!(%error, address = %key, "a subscriber's consumer keeps its earlier options");
            }
        }
    }
    let messages = consumer
        .stream()
        .max_messages_per_batch(window.min(256))
        // Long enough that a busy machine does not miss one: a missed heartbeat ends the
        // stream, and what the server had already sent it comes again after `ack_wait`.
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    Ok((messages, ack_wait))
}

/// How many of a subscriber's messages may be unacknowledged at once.
fn window_for(ordered: bool, queue_capacity: usize) -> usize {
    // An ordered subscriber gets one message at a time, cluster-wide: the next only once
    // the last is acknowledged. Any other may have many under way (in its worker's
    // queue, retrying), so that one failing delivery never holds back the next, as the
    // seed behaves; no more than its queue holds, or the rest would be dropped as
    // "queue full" while JetStream could have kept them.
    if ordered {
        1
    } else {
        UNORDERED_WINDOW.min(queue_capacity.max(1))
    }
}

/// Where a subscriber's consumer made `now` starts, for a subscriber registered at
/// `registered_at`.
fn deliver_policy_for(registered_at: SystemTime, now: SystemTime) -> consumer::DeliverPolicy {
    // A consumer made soon after the registration starts from it, so that nothing
    // published in between is missed. One made much later (the last was removed while
    // the subscriber lived on at some instance) starts from now: a subscriber gets what
    // is published while it is live, never a backlog from before.
    let fresh = now
        .duration_since(registered_at)
        .is_ok_and(|age| age < FRESH_REGISTRATION);
    if fresh {
        consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(registered_at),
        }
    } else {
        consumer::DeliverPolicy::New
    }
}

/// Whether a consumer made with `made` is to be brought to `wanted`: they differ in what
/// may change in place, the window and the acknowledgement wait.
fn needs_update(made: &consumer::Config, wanted: &consumer::pull::Config) -> bool {
    made.max_ack_pending != wanted.max_ack_pending || made.ack_wait != wanted.ack_wait
}

/// What became of one message taken from a subscriber's consumer.
enum Handled {
    Done,
    /// The subscriber is gone from this hub: handed back, and the loop ends.
    Gone,
}

/// Delivers one message taken from `key`'s consumer here, and acknowledges it, or hands
/// it back when it was not made.
async fn handle(
    state: &Arc<State>,
    key: &Arc<str>,
    message: jetstream::Message,
    ack_wait: Duration,
) -> anyhow::Result<Handled> {
    let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (id, at, redelivered) = (
        info.stream_sequence,
        SystemTime::from(info.published),
        info.delivered > 1,
    );
    let hand_back = || async {
        // Another instance, or this one later, makes it.
        message.ack_with(jetstream::AckKind::Nak(None)).await.ok();
        Ok(Handled::Gone)
    };
    let links = state
        .links
        .get()
        .ok_or_else(|| anyhow::anyhow!("not connected"))?;
    let checked = match links.bridge.check(&message) {
        Ok(checked) => checked,
        Err(refused) => {
            // Never to be made: acknowledged, or JetStream would hand it out for ever.
            // The feed says so once; every subscriber's loop passes here.
            tracing::debug!(id, address = %key, "{refused}");
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            return Ok(Handled::Done);
        }
    };
    let (topic, to) = checked.route();
    match state.hub.wants(key, topic.as_ref(), to.as_deref()) {
        // Gone from this hub (removed, or this instance is stopping): it may live on at
        // another instance.
        None => return hand_back().await,
        Some(false) => {
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            return Ok(Handled::Done);
        }
        Some(true) => {}
    }
    // Read whole only by the first of this instance's consumers to see it.
    let record = state
        .hub
        .message(id)
        .unwrap_or_else(|| super::feed::admit(state, &checked, id, at));
    let Ok(mut done) = state.hub.deliver_one(&record, key) else {
        return hand_back().await;
    };
    // Retries (and a wait in the worker's queue) can take longer than `ack_wait`:
    // JetStream is told the delivery is still under way, so that it hands it to nobody
    // else while this instance lives.
    let outcome = loop {
        tokio::select! {
            made = &mut done => break made.ok(),
            () = tokio::time::sleep(ack_wait / 3) => {
                message.ack_with(jetstream::AckKind::Progress).await.ok();
            }
        }
    };
    // Removed here while it was under way (deregistered, kicked, or this instance
    // stopping): not made, so not acknowledged; if the subscriber lives on elsewhere, it
    // is made there.
    let Some(made) =
        outcome.filter(|m| !matches!(m.outcome.error(), Some(DeliveryError::Removed(_))))
    else {
        return hand_back().await;
    };
    // Not waited for: one lost with the connection hands the message out again, which
    // is the "twice, never zero times" a cut-off delivery is allowed.
    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if redelivered {
        state
            .redelivered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let attempts = made.attempts.unwrap_or(1);
    let shared = SharedOutcome::new(
        id,
        key,
        &state.config.name,
        &made.outcome,
        attempts,
        redelivered,
    );
    // Full only while NATS is away and outcomes pile up: the others' consoles miss
    // those lines, deliveries are unaffected.
    state.outcomes.try_send(shared).ok();
    Ok(Handled::Done)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_loop_runs_on_while_its_subscriber_is_here_in_the_same_order() {
        assert!(keeps_running(Some(true), true, false));
        assert!(keeps_running(Some(false), false, false));
        // Gone from this hub.
        assert!(!keeps_running(None, false, false));
        // Its order changed, and its consumer's window with it: started again.
        assert!(!keeps_running(Some(false), true, false));
        assert!(!keeps_running(Some(true), false, false));
        // Ended on its own: started again.
        assert!(!keeps_running(Some(true), true, true));
    }

    #[test]
    fn an_ordered_subscriber_has_one_message_under_way() {
        assert_eq!(window_for(true, 100), 1);
        assert_eq!(window_for(true, 0), 1);
    }

    #[test]
    fn an_unordered_subscriber_has_as_many_under_way_as_its_queue_holds() {
        assert_eq!(window_for(false, 100), 100);
        assert_eq!(window_for(false, 0), 1);
        assert_eq!(window_for(false, 1_000_000), UNORDERED_WINDOW);
    }

    #[test]
    fn a_consumer_made_soon_after_the_registration_starts_from_it() {
        let registered_at = now() - Duration::from_secs(5);
        assert_eq!(
            deliver_policy_for(registered_at, now()),
            consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from(registered_at),
            }
        );
    }

    #[test]
    fn a_consumer_made_later_starts_from_now() {
        let late = now() - FRESH_REGISTRATION;
        assert_eq!(
            deliver_policy_for(late, now()),
            consumer::DeliverPolicy::New
        );
        let long_ago = now() - Duration::from_secs(24 * 60 * 60);
        assert_eq!(
            deliver_policy_for(long_ago, now()),
            consumer::DeliverPolicy::New
        );
        // Stamped ahead of this instance's clock: no start time to trust.
        let ahead = now() + Duration::from_secs(5);
        assert_eq!(
            deliver_policy_for(ahead, now()),
            consumer::DeliverPolicy::New
        );
    }

    #[test]
    fn a_consumer_made_for_another_window_or_wait_is_updated() {
        let ack_wait = Duration::from_secs(12);
        let wanted = consumer::pull::Config {
            max_ack_pending: 1,
            ack_wait,
            ..Default::default()
        };
        let made = consumer::Config {
            max_ack_pending: 1,
            ack_wait,
            ..Default::default()
        };
        assert!(!needs_update(&made, &wanted));
        let wider = consumer::Config {
            max_ack_pending: 1_024,
            ..made.clone()
        };
        assert!(needs_update(&wider, &wanted));
        let longer = consumer::Config {
            ack_wait: Duration::from_secs(32),
            ..made.clone()
        };
        assert!(needs_update(&longer, &wanted));
        // Where it started is kept, so it is no reason to update.
        let started = consumer::Config {
            deliver_policy: consumer::DeliverPolicy::New,
            ..made
        };
        assert!(!needs_update(&started, &wanted));
    }
}
