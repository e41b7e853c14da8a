//! Fan-out: queueing an accepted message for each of its recipients, on the publishing
//! thread or, when there are many, on the fan-out task, and recording the deliveries a
//! queue refused.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::attempt::Round;
use super::message::MessageRecord;
use super::outcome::{DeliveryError, Outcome};
use super::routing::{Recipient, Route};
use super::store::Change;
use super::subscriber::Job;
use super::{Hub, Shared};

/// Accepted messages waiting for the fan-out; beyond this, publishing waits (over HTTP)
/// or is refused (from the console). The per-subscriber queues bound memory the same way.
pub(super) const FAN_OUT_BACKLOG: usize = 1_024;
/// Up to this many subscribers, the publishing thread queues a message itself: that
/// costs it microseconds, and saves a hop through the fan-out task, which at thousands
/// of messages a second costs more than the queueing. (Through the fan-out, K=100 at
/// 2,000 deliveries/s had p50 3.5 ms instead of 2.8-3.1, and K=1 at full rate delivered
/// half as much.)
pub(super) const INLINE_FAN_OUT: usize = 256;

/// An accepted message and the subscribers that were live when it was accepted.
pub(super) struct FanOut {
    pub(super) message: Arc<MessageRecord>,
    pub(super) route: Route,
    /// Messages its arrival pushed out of the log, whose records the fan-out frees,
    /// sparing the accepting thread.
    pub(super) evicted: Vec<Arc<MessageRecord>>,
    /// Shutdown waits for the fan-out as it does for deliveries.
    pub(super) _outstanding: TaskTrackerToken,
}

/// A delivery a queue refused, to be recorded once no lock is held.
pub(super) type Refused<'r> = (usize, &'r Recipient, DeliveryError);

impl Hub {
    /// Adds a delivery of `message` for each recipient and queues it. Returns those whose
    /// queue refused it, for [`Hub::record_refused`] once no lock is held.
    pub(super) fn queue<'r>(
        &self,
        message: &Arc<MessageRecord>,
        route: &'r Route,
        round: Round,
    ) -> Vec<Refused<'r>> {
        let addresses = route.iter().map(|r| r.subscriber.address.clone());
        let first = message.add_deliveries(addresses, round);
        // A publish round was kept with its message. A resend's is kept before any of
        // its jobs can reach a worker, whose attempts are recorded after it.
        if round == Round::Resend && self.shared.store.is_durable() {
            self.shared.store.record(Change::Queued {
                id: message.id,
                first,
                subscribers: route.iter().map(|r| r.subscriber.address.clone()).collect(),
            });
        }
        self.queue_at(message, route, first)
    }

    /// Queues a job for each recipient, for the deliveries already added in slots
    /// `first..`. Returns those whose queue refused it.
    pub(super) fn queue_at<'r>(
        &self,
        message: &Arc<MessageRecord>,
        route: &'r Route,
        first: usize,
    ) -> Vec<Refused<'r>> {
        let mut refused = Vec::new();
        for (slot, recipient) in (first..).zip(route.iter()) {
            let job = Job {
                message: message.clone(),
                slot,
                _outstanding: self.shared.outstanding.token(),
            };
            // Queued, parked in a durable store's backlog, or refused (`backlog`).
            if let Err(error) = self.offer(recipient, job) {
                refused.push((slot, recipient, error));
            }
        }
        refused
    }

    pub(super) fn record_refused(&self, message: &MessageRecord, refused: Vec<Refused<'_>>) {
        for (slot, recipient, error) in refused {
            self.finish(message, slot, &recipient.subscriber, Outcome::Failed(error));
        }
    }
}

/// Fans accepted messages out, one at a time in id order, until the hub is gone.
pub(super) async fn fan_out_loop(shared: Weak<Shared>, mut backlog: mpsc::Receiver<FanOut>) {
    while let Some(job) = backlog.recv().await {
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let hub = Hub { shared };
        let refused = hub.queue(&job.message, &job.route, Round::Publish);
        hub.shared.fanning_out.fetch_sub(1, Ordering::AcqRel);
        hub.record_refused(&job.message, refused);
        job.evicted.iter().for_each(|m| m.evict());
    }
}

#[cfg(test)]
pub(super) mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::hub::{
        Draft, HubConfig, Launch, Mailbox, PublishError, Published, RemovalReason, Source, Task,
    };

    /// Keeps what the hub launches, so a test decides when the fan-out runs and reads
    /// the subscribers' queues itself.
    #[derive(Default)]
    pub(in crate::hub) struct Held {
        pub(in crate::hub) mailboxes: Mutex<Vec<Mailbox>>,
        /// The fan-out task; the reaper is not kept (these tests expire by hand).
        pub(in crate::hub) tasks: Mutex<Vec<Task>>,
    }

    impl Launch for Arc<Held> {
        fn launch(&self, _hub: Hub, mailbox: Mailbox) {
            self.mailboxes.lock().push(mailbox);
        }

        fn spawn(&self, name: &'static str, task: Task) {
            if name == "fan-out" {
                self.tasks.lock().push(task);
            }
        }
    }

    pub(in crate::hub) fn hub_with(subscribers: usize) -> (Hub, Arc<Held>) {
        let held = Arc::new(Held::default());
        let hub = Hub::new(HubConfig::default(), Arc::new(held.clone()));
        for port in 0..subscribers {
            hub.subscribe(&format!("127.0.0.1:{}", 1024 + port))
                .unwrap();
        }
        (hub, held)
    }

    pub(in crate::hub) fn publish(
        hub: &Hub,
        text: &'static str,
    ) -> Result<Published, PublishError> {
        hub.publish(Draft::new(text), Source::Console)
            .map(|accepted| accepted.logged().expect("no cluster here"))
    }

    #[test]
    fn a_publish_queues_behind_a_fan_out_still_under_way() {
        let (hub, held) = hub_with(INLINE_FAN_OUT + 1);
        let first = publish(&hub, "to many").unwrap();
        assert!(!hub.is_drained(), "shutdown would not wait for the fan-out");
        // One subscriber left: few enough to queue inline, but the first message is
        // still waiting for the fan-out, so the second must wait behind it.
        for port in 1..=INLINE_FAN_OUT {
            assert!(hub.remove(&format!("127.0.0.1:{}", 1024 + port), RemovalReason::Kicked));
        }
        let second = publish(&hub, "to one").unwrap();
        assert_eq!(
            (first.subscribers, second.subscribers),
            (INLINE_FAN_OUT + 1, 1)
        );
        let mut mailbox = held.mailboxes.lock().remove(0);
        // What the removed subscribers' workers do as they stop: close their queues.
        held.mailboxes.lock().clear();
        assert!(
            mailbox.jobs.try_recv().is_err(),
            "queued ahead of the fan-out"
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let task = held.tasks.lock().pop().unwrap();
        runtime.spawn(task);
        let ids = runtime.block_on(async {
            let a = mailbox.jobs.recv().await.unwrap().message.id;
            let b = mailbox.jobs.recv().await.unwrap().message.id;
            (a, b)
        });
        assert_eq!(ids, (first.id, second.id));
        // The removed subscribers' deliveries of the first message are recorded, not lost.
        let record = hub.message(first.id).unwrap();
        assert_eq!(record.summary().failed, INLINE_FAN_OUT);
        assert_eq!(record.summary().pending, 1);
    }

    #[test]
    fn a_full_fan_out_backlog_refuses_a_console_publish_and_says_why() {
        let (hub, _held) = hub_with(INLINE_FAN_OUT + 1);
        for _ in 0..FAN_OUT_BACKLOG {
            publish(&hub, "m").unwrap();
        }
        let refused = publish(&hub, "one too many").unwrap_err();
        assert_eq!(refused, PublishError::Backlog(FAN_OUT_BACKLOG));
        assert!(refused.to_string().contains("try again"), "{refused}");
        assert_eq!(
            hub.logged_messages(),
            FAN_OUT_BACKLOG,
            "the refused one is not logged"
        );
    }

    #[test]
    fn a_small_fan_out_is_queued_before_publish_returns() {
        let (hub, held) = hub_with(3);
        let published = publish(&hub, "now").unwrap();
        assert!(held.tasks.lock().len() == 1, "the fan-out task was started");
        for mailbox in held.mailboxes.lock().iter_mut() {
            let job = mailbox.jobs.try_recv().expect("queued at once");
            assert_eq!(job.message.id, published.id);
        }
        assert_eq!(hub.message(published.id).unwrap().summary().pending, 3);
    }
}
