//! The per-subscriber delivery loop.
//!
//! Deliveries start in publish order, up to the subscriber's `max_in_flight` at once (one
//! by default). A delivery that fails waits for its retry on its own schedule while the
//! following ones go out, as the Go design sent every message at once, failing or not; a
//! subscriber that asked for strict order (`ordered`) has a retrying delivery hold back
//! the later ones instead. A subscriber whose messages keep failing is suspended: it gets
//! one probe at a time, with backoff, until one gets through.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio_util::time::DelayQueue;

use super::attempt::{Sender, Tried, Verdict, jitter, verdict};
use super::backlog;
use crate::hub::{
    Attempt, DeliveryError, DeliveryState, Job, Mailbox, Outcome, RemovalReason, SubscriberShared,
    clip,
};

pub(super) struct Worker {
    sender: Arc<Sender>,
    /// Messages that ended failed in a row; reaching `suspend_after` suspends.
    failed_in_row: u32,
    /// Wait before the next probe while suspended.
    probe_delay: Duration,
    /// While suspended: when the next probe may go.
    probe_at: Option<Instant>,
}

/// A delivery taken from the queue, with how far it has got.
struct Taking {
    job: Job,
    /// Attempts made so far.
    attempts: u32,
    /// Whether its delivery shows as retrying, to be shown pending again once sent.
    shown_retrying: bool,
    /// Retries of the schedule used so far (probes while suspended do not count).
    retries: usize,
}

/// The deliveries a worker has taken from the queue and not finished. Kept by its
/// supervisor rather than the worker, so that a worker that panics loses none of them.
#[derive(Default)]
pub(super) struct Taken {
    /// Being sent, by key.
    sending: HashMap<u64, Taking>,
    /// Waiting for their next attempt.
    waiting: Waiting,
    /// Taken from the queue just as a pause began, in queue order: they go first when it
    /// ends (a `DelayQueue` would let the queue's next overtake them).
    held: std::collections::VecDeque<Taking>,
    next_key: u64,
}

/// One attempt in flight: its key in `Taken::sending`, when it started, and how it went.
type Sending = BoxFuture<'static, (u64, SystemTime, Tried)>;

/// Runs a subscriber's worker, and a new one whenever one panics: the deliveries it was
/// sending are recorded as failed with the panic's message, and those waiting to be
/// retried and the rest of the queue are served by the new worker. Without this, a panic
/// would leave deliveries pending for ever and close the queue as if the subscriber left.
pub(super) async fn supervise(mut mailbox: Mailbox, mut new_worker: impl FnMut() -> Worker) {
    let mut taken = Taken::default();
    loop {
        let worker = new_worker();
        let hub = worker.sender.hub.clone();
        let run = AssertUnwindSafe(worker.run(&mut mailbox, &mut taken));
        let Err(panic) = run.catch_unwind().await else {
            return;
        };
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        let subscriber = &mailbox.subscriber;
        tracing::error!(address = %subscriber.address, "delivery worker panicked ({reason}); a new one takes over");
        let reason = clip(reason);
        for (_, Taking { job, .. }) in taken.sending.drain() {
            let outcome = Outcome::Failed(DeliveryError::Crashed(reason.clone()));
            hub.finish(&job.message, job.slot, subscriber, outcome);
        }
    }
}

impl Worker {
    pub(super) fn new(sender: Arc<Sender>) -> Self {
        Self {
            probe_delay: sender.config.probe_backoff.0,
            sender,
            failed_in_row: 0,
            probe_at: None,
        }
    }

    /// Delivers from `mailbox` until the subscriber leaves, then records every delivery
    /// it still had as not delivered.
    async fn run(mut self, mailbox: &mut Mailbox, taken: &mut Taken) {
        let subscriber = mailbox.subscriber.clone();
        // One waiter for the worker's whole life, rather than registering a new one with
        // the token on every turn of the loop.
        let cancelled = subscriber.cancel.clone().cancelled_owned();
        tokio::pin!(cancelled);
        let mut sending = FuturesUnordered::<Sending>::new();
        // At most one read of a durable store's backlog at a time.
        let mut refilling = FuturesUnordered::<BoxFuture<'static, ()>>::new();
        loop {
            if refilling.is_empty()
                && let Some(room) = backlog::wanted(&self.sender.hub, mailbox)
            {
                let hub = self.sender.hub.clone();
                refilling.push(backlog::refill(hub, subscriber.clone(), room));
            }
            let suspended = subscriber.is_suspended();
            // Paused: nothing new starts, from the queue or the retry wheel; what is in
            // flight finishes. The queue keeps filling, and drops once full, recorded.
            let paused = subscriber.is_paused();
            // One at a time when suspended (a probe) or in strict order.
            let most = if suspended || subscriber.is_ordered() {
                1
            } else {
                subscriber.max_in_flight()
            };
            if !paused {
                while sending.len() < most
                    && let Some(taking) = taken.held.pop_front()
                {
                    self.start(&subscriber, taken, &mut sending, taking);
                }
            }
            let room = sending.len() < most;
            // What waits for a retry counts against the queue's bound too: otherwise a
            // subscriber that fails slowly would move its whole backlog out of the bounded
            // queue into the retry wheel, and nothing would ever be dropped.
            let held = sending.len() + taken.waiting.len() + taken.held.len();
            // Strict order: nothing new while an earlier delivery waits for its retry.
            // Suspended: nothing new but the one probe the queue gives when nothing else
            // is there to probe with.
            let take_new = room
                && !paused
                && held < mailbox.capacity
                && if suspended {
                    held == 0
                } else {
                    !subscriber.is_ordered() || taken.waiting.is_empty()
                };
            tokio::select! {
                biased;
                () = &mut cancelled => break,
                // Read back into the queue: the loop turns and takes it.
                Some(()) = refilling.next() => {}
                Some((key, at, tried)) = sending.next() => {
                    self.settle(&subscriber, taken, key, at, tried);
                }
                Some(due) = taken.waiting.next(), if room && !paused => {
                    if let Some(wait) = self.probe_gate(&subscriber) {
                        // Suspended, and not yet time to probe: it waits without an attempt.
                        taken.waiting.insert(due, wait);
                    } else {
                        self.start(&subscriber, taken, &mut sending, due);
                    }
                }
                // Registered again: whatever waits is due now. Watched only while something
                // waits or the subscriber is suspended: waiting on a `Notify` takes its
                // lock, which every turn of a busy loop would otherwise pay for.
                () = subscriber.resume.notified(), if suspended || !taken.waiting.is_empty() => {
                    self.resumed(&subscriber, taken);
                }
                // Resumed from a pause: the loop turns, and what is queued goes, in order.
                () = subscriber.unpaused.notified(), if paused => {}
                job = mailbox.jobs.recv(), if take_new => match job {
                    Some(job) => {
                        let taking = Taking { job, attempts: 0, retries: 0, shown_retrying: false };
                        if suspended {
                            // Through the probe gate, like everything else while suspended.
                            taken.waiting.insert(taking, Duration::ZERO);
                        } else if subscriber.is_paused() {
                            // Paused since this turn began (the pause does not wake the
                            // loop, to spare it one more `Notify` on every turn): held, and
                            // first to go when it ends.
                            taken.held.push_back(taking);
                        } else {
                            self.start(&subscriber, taken, &mut sending, taking);
                        }
                    }
                    None => break,
                },
            }
        }
        // Whatever was taken or is still queued will never be sent: say so for each.
        drop(sending);
        let mut abandoned: Vec<Job> = taken.sending.drain().map(|(_, t)| t.job).collect();
        abandoned.extend(taken.waiting.drain().into_iter().map(|t| t.job));
        abandoned.extend(taken.held.drain(..).map(|t| t.job));
        mailbox.jobs.close();
        // `recv`, not `try_recv`: a publish that reserved its place before the close may
        // not have put its job there yet, and it must still be recorded.
        while let Some(job) = mailbox.jobs.recv().await {
            abandoned.push(job);
        }
        for job in abandoned {
            self.abandon(&subscriber, &job);
        }
        drop(refilling);
        backlog::abandon(self.sender.hub.clone(), subscriber).await;
    }

    /// Sends the next attempt of `taking`.
    fn start(
        &mut self,
        subscriber: &Arc<SubscriberShared>,
        taken: &mut Taken,
        sending: &mut FuturesUnordered<Sending>,
        mut taking: Taking,
    ) {
        let key = taken.next_key;
        taken.next_key += 1;
        let message = taking.job.message.clone();
        let slot = taking.job.slot;
        if std::mem::take(&mut taking.shown_retrying) {
            // It was shown retrying; now it is being sent again.
            message.set_state(slot, DeliveryState::Pending);
        }
        taken.sending.insert(key, taking);
        #[cfg(test)]
        if message.body == tests::PANIC {
            panic!("a panic injected by a test");
        }
        let sender = self.sender.clone();
        let subscriber = subscriber.clone();
        sending.push(Box::pin(async move {
            let at = SystemTime::now();
            let tried = sender.attempt(&subscriber, &message).await;
            (key, at, tried)
        }));
    }

    /// Records an attempt that ended, and finishes the delivery or has it wait.
    fn settle(
        &mut self,
        subscriber: &SubscriberShared,
        taken: &mut Taken,
        key: u64,
        at: SystemTime,
        tried: Tried,
    ) {
        let Tried {
            outcome,
            after,
            exchange,
        } = tried;
        let Some(mut taking) = taken.sending.remove(&key) else {
            return;
        };
        taking.attempts += 1;
        let job = &taking.job;
        let attempt = Attempt {
            at,
            outcome: outcome.clone(),
            exchange: exchange.map(Arc::new),
        };
        self.sender
            .hub
            .record_attempt(&job.message, job.slot, subscriber, attempt);
        let config = &self.sender.config;
        match verdict(&outcome, after) {
            Verdict::Done => self.finish(subscriber, taken, taking.job, outcome),
            Verdict::Unsubscribe => {
                self.sender.hub.remove(&subscriber.key, RemovalReason::Gone);
                self.finish(subscriber, taken, taking.job, outcome);
            }
            // While suspended, attempts are probes: they wait for the subscriber to come
            // back (through the probe gate), not for a retry of the schedule.
            Verdict::Retry { .. } if subscriber.is_suspended() => {
                let wait = self.probe_gate(subscriber).unwrap_or_default();
                self.wait(taken, taking, wait, None);
            }
            Verdict::Retry { after } => match config.retry_schedule.get(taking.retries) {
                None => self.finish(subscriber, taken, taking.job, outcome),
                Some(base) => {
                    taking.retries += 1;
                    let wait = after
                        .map(|after| after.min(config.max_retry_after))
                        .unwrap_or_else(|| jitter(*base));
                    let of = 1 + config.retry_schedule.len() as u32;
                    self.wait(taken, taking, wait, Some(of));
                }
            },
        }
    }

    /// Puts `taking` aside for its next attempt in `wait`; `of` is how many attempts it
    /// gets in all (none while suspended, when attempts are probes).
    fn wait(&self, taken: &mut Taken, mut taking: Taking, wait: Duration, of: Option<u32>) {
        let state = DeliveryState::Retrying {
            attempt: taking.attempts + 1,
            of,
            at: SystemTime::now() + wait,
        };
        taking.job.message.set_state(taking.job.slot, state);
        taking.shown_retrying = true;
        taken.waiting.insert(taking, wait);
    }

    fn finish(
        &mut self,
        subscriber: &SubscriberShared,
        taken: &mut Taken,
        job: Job,
        outcome: Outcome,
    ) {
        let delivered = outcome.is_delivered();
        self.sender
            .hub
            .finish(&job.message, job.slot, subscriber, outcome);
        if delivered {
            self.failed_in_row = 0;
            if subscriber.is_suspended() {
                // A probe got through: what waited for it goes now.
                self.resumed(subscriber, taken);
            }
        } else {
            self.failed_in_row += 1;
            if self.failed_in_row >= self.sender.config.suspend_after {
                self.sender.hub.set_suspended(subscriber, true);
            }
        }
    }

    /// The subscriber registered again: a fresh start, with every waiting delivery due.
    fn resumed(&mut self, subscriber: &SubscriberShared, taken: &mut Taken) {
        self.failed_in_row = 0;
        self.probe_delay = self.sender.config.probe_backoff.0;
        self.probe_at = None;
        self.sender.hub.set_suspended(subscriber, false);
        for taking in taken.waiting.drain() {
            taken.waiting.insert(taking, Duration::ZERO);
        }
    }

    /// While the subscriber is suspended, lets one attempt through per probe interval
    /// (doubling up to the longest): `None` when this one may go now (and the next probe
    /// is due one interval later), otherwise how long until a probe may go. Not
    /// suspended, everything may go.
    fn probe_gate(&mut self, subscriber: &SubscriberShared) -> Option<Duration> {
        if !subscriber.is_suspended() {
            self.probe_at = None;
            return None;
        }
        let now = Instant::now();
        match self.probe_at {
            Some(at) if at > now => Some(at - now),
            _ => {
                let wait = self.probe_delay;
                self.probe_delay = wait
                    .saturating_mul(2)
                    .min(self.sender.config.probe_backoff.1);
                self.probe_at = Some(now + wait);
                None
            }
        }
    }

    fn abandon(&self, subscriber: &SubscriberShared, job: &Job) {
        let reason = subscriber.removal().unwrap_or(RemovalReason::Shutdown);
        let outcome = Outcome::Failed(DeliveryError::Removed(reason));
        self.sender
            .hub
            .finish(&job.message, job.slot, subscriber, outcome);
    }
}

/// Deliveries waiting for their next attempt. The timer wheel behind them costs some
/// kilobytes, so it exists only while something waits: otherwise 10,000 idle
/// subscribers would hold 60 MB of empty wheels.
#[derive(Default)]
struct Waiting(Option<DelayQueue<Taking>>);

impl Waiting {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(DelayQueue::is_empty)
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, DelayQueue::len)
    }

    fn insert(&mut self, taking: Taking, wait: Duration) {
        self.0
            .get_or_insert_with(DelayQueue::new)
            .insert(taking, wait);
    }

    /// The next one due, when it is; none at once when nothing waits.
    async fn next(&mut self) -> Option<Taking> {
        let queue = self.0.as_mut()?;
        let due = queue.next().await.map(|due| due.into_inner());
        if queue.is_empty() {
            self.0 = None;
        }
        due
    }

    /// Every one waiting, due or not.
    fn drain(&mut self) -> Vec<Taking> {
        let Some(mut queue) = self.0.take() else {
            return Vec::new();
        };
        std::iter::from_fn(|| {
            let key = queue.peek()?;
            Some(queue.remove(&key).into_inner())
        })
        .collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Instant;

    use super::*;

    /// A payload that makes a worker panic, to test its supervision.
    pub(in crate::delivery) const PANIC: &[u8] = b"panic in the worker, please";

    #[test]
    fn a_worker_that_panics_is_replaced_and_its_delivery_recorded() {
        use crate::delivery::{DeliveryConfig, Dispatcher};
        use crate::hub::{DeliveryState, Draft, Hub, HubConfig, Source};

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            let receiver = axum::Router::new().route(
                "/event",
                axum::routing::post(|| async { axum::http::StatusCode::OK }),
            );
            tokio::spawn(async move { axum::serve(listener, receiver).await });
            let dispatcher =
                Dispatcher::new(DeliveryConfig::default(), tokio::runtime::Handle::current());
            let hub = Hub::new(
                HubConfig::default(),
                Arc::new(Arc::new(dispatcher.unwrap())),
            );
            hub.subscribe(&address).unwrap();
            let publish = |body: &'static [u8]| {
                hub.publish(Draft::new(body), Source::Console)
                    .unwrap()
                    .id()
                    .unwrap()
            };
            let (crashed, after) = (publish(PANIC), publish(b"fine"));
            let state = |id| hub.message(id).unwrap().deliveries()[0].state.clone();
            let deadline = Instant::now() + Duration::from_secs(10);
            while state(after) == DeliveryState::Pending && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let DeliveryState::Done(Outcome::Failed(DeliveryError::Crashed(reason))) =
                state(crashed)
            else {
                panic!("{:?}", state(crashed));
            };
            assert!(reason.contains("injected"), "{reason}");
            assert!(
                matches!(state(after), DeliveryState::Done(Outcome::Delivered { .. })),
                "the next message was not delivered by a new worker: {:?}",
                state(after)
            );
        });
    }
}
