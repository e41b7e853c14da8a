//! The backlog against a store that keeps only which deliveries are pending.

use std::collections::BTreeMap;

use super::state::Key;
use super::*;
use crate::hub::fan_out::tests::{Held, publish};
use crate::hub::message::{MessageId, MessageRecord};
use crate::hub::store::{Change, Commit, Restored, Store};
use crate::hub::{HubConfig, Mailbox};

/// A durable store that keeps only which deliveries are pending, as the SQLite one
/// does in its `deliveries` table; messages stay in the hub's log.
#[derive(Default)]
struct Pending(parking_lot::Mutex<BTreeMap<Key, Arc<str>>>);

impl Store for Arc<Pending> {
    fn append(&self, message: &Arc<MessageRecord>, subscribers: Vec<Arc<str>>) -> Commit {
        let mut pending = self.0.lock();
        for (slot, address) in subscribers.into_iter().enumerate() {
            pending.insert((message.id, slot), address);
        }
        Commit::done()
    }

    fn record(&self, change: Change) {
        let mut pending = self.0.lock();
        match change {
            Change::Queued {
                id,
                first,
                subscribers,
            } => {
                for (slot, address) in (first..).zip(subscribers) {
                    pending.insert((id, slot), address);
                }
            }
            Change::Finished { id, slot, .. } => {
                pending.remove(&(id, slot));
            }
            _ => {}
        }
    }

    fn backlog(&self, subscriber: &str, from: Key, to: Key, limit: usize) -> Vec<Key> {
        if from > to {
            return Vec::new();
        }
        let pending = self.0.lock();
        let rows = pending.range(from..=to);
        rows.filter(|(_, address)| &***address == subscriber)
            .map(|(key, _)| *key)
            .take(limit)
            .collect()
    }
}

fn durable_hub(capacity: usize) -> (Hub, Mailbox) {
    let held = Arc::new(Held::default());
    let config = HubConfig {
        queue_capacity: capacity,
        ..HubConfig::default()
    };
    let store: Arc<dyn Store> = Arc::new(Arc::new(Pending::default()));
    let hub = Hub::with_store(config, Arc::new(held.clone()), store, Restored::default());
    hub.subscribe("127.0.0.1:1024").unwrap();
    let mailbox = held.mailboxes.lock().remove(0);
    (hub, mailbox)
}

fn queued(mailbox: &mut Mailbox) -> Vec<MessageId> {
    std::iter::from_fn(|| mailbox.jobs.try_recv().ok())
        .map(|job| job.message.id)
        .collect()
}

/// What the worker does when its queue has `room`.
fn refill(hub: &Hub, mailbox: &Mailbox, room: usize) {
    let subscriber = &mailbox.subscriber;
    let refill = hub.backlog_to_read(subscriber, room).expect("a backlog");
    let read = hub.read_backlog(subscriber, &refill);
    hub.queue_backlog(subscriber, refill, read);
}

#[test]
fn beyond_a_full_queue_deliveries_wait_on_disk_and_come_back_in_order() {
    let (hub, mut mailbox) = durable_hub(2);
    let ids: Vec<_> = (0..5).map(|_| publish(&hub, "m").unwrap().id).collect();
    let subscriber = mailbox.subscriber.clone();
    let backlog = &subscriber.backlog;
    assert_eq!(backlog.parked(), 3);
    assert!(
        ids.iter()
            .all(|&id| hub.message(id).unwrap().summary().failed == 0)
    );
    assert_eq!(queued(&mut mailbox), ids[..2]);

    refill(&hub, &mailbox, 2);
    assert_eq!(queued(&mut mailbox), ids[2..4]);
    // The queue has room now, but the backlog is not over: a new one waits behind it.
    let sixth = publish(&hub, "m").unwrap().id;
    assert!(queued(&mut mailbox).is_empty(), "overtook the backlog");
    assert_eq!(backlog.parked(), 2);

    refill(&hub, &mailbox, 2);
    assert_eq!(queued(&mut mailbox), [ids[4], sixth]);
    assert!(backlog.is_active(), "a full read does not end it");
    refill(&hub, &mailbox, 2);
    assert!(
        !backlog.is_active(),
        "a short read with nothing parked ends it"
    );
    assert_eq!(backlog.parked(), 0);
    let seventh = publish(&hub, "m").unwrap().id;
    assert_eq!(
        queued(&mut mailbox),
        [seventh],
        "straight to the queue again"
    );
}

#[test]
fn a_resend_of_an_older_message_waits_behind_the_backlog_too() {
    let (hub, mut mailbox) = durable_hub(1);
    let first = publish(&hub, "m").unwrap().id;
    let second = publish(&hub, "m").unwrap().id;
    assert_eq!(queued(&mut mailbox), [first]);
    // Older than where the backlog starts: kept apart, read back by id in its turn,
    // after what was parked before it and before what is parked after it.
    assert_eq!(hub.resend(first, None), Ok(1));
    let third = publish(&hub, "m").unwrap().id;
    assert!(queued(&mut mailbox).is_empty());
    assert_eq!(mailbox.subscriber.backlog.parked(), 3);
    let mut order = Vec::new();
    while mailbox.subscriber.backlog.is_active() {
        refill(&hub, &mailbox, 1);
        order.extend(std::iter::from_fn(|| mailbox.jobs.try_recv().ok()));
        assert!(order.len() <= 3, "read back twice");
    }
    let order: Vec<Key> = order.iter().map(|j| (j.message.id, j.slot)).collect();
    assert_eq!(order, [(second, 0), (first, 1), (third, 0)]);
    assert_eq!(mailbox.subscriber.backlog.parked(), 0);
}

#[test]
fn a_resend_inside_the_backlog_is_read_back_once_in_its_turn() {
    let (hub, mut mailbox) = durable_hub(1);
    let first = publish(&hub, "m").unwrap().id;
    let second = publish(&hub, "m").unwrap().id;
    let third = publish(&hub, "m").unwrap().id;
    assert_eq!(queued(&mut mailbox), [first]);
    // Its row, (second, 1), lies inside the store's range of the backlog.
    assert_eq!(hub.resend(second, None), Ok(1));
    let mut order = Vec::new();
    while mailbox.subscriber.backlog.is_active() {
        refill(&hub, &mailbox, 2);
        order.extend(std::iter::from_fn(|| mailbox.jobs.try_recv().ok()));
        assert!(order.len() <= 3, "read back twice");
    }
    let order: Vec<Key> = order.iter().map(|j| (j.message.id, j.slot)).collect();
    assert_eq!(order, [(second, 0), (third, 0), (second, 1)]);
}
