use std::time::Duration;

use herald::hub::{DeliveryError, DeliveryState, HubEvent, Outcome, RemovalReason};

use crate::utils::{Receiver, eventually, hanging_receiver, start_hub};

#[tokio::test]
async fn deregistering_stops_delivery_at_once() {
    let hub = start_hub(|_| {}).await;
    let mut leaving = Receiver::start().await;
    let mut staying = Receiver::start().await;
    hub.register(&leaving.address()).await;
    hub.register(&staying.address()).await;

    hub.publish("before", None).await;
    assert_eq!(leaving.recv().await.body, "before");
    assert_eq!(staying.recv().await.body, "before");

    hub.deregister(&leaving.address()).await;
    let id = hub.publish("after", None).await;
    assert_eq!(staying.recv().await.body, "after");
    assert!(
        leaving.drain().is_empty(),
        "a deregistered subscriber still got a message"
    );
    let deliveries = hub.hub().message(id).unwrap().deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(*deliveries[0].subscriber, staying.address());
}

#[tokio::test]
async fn subscribers_that_stop_refreshing_expire() {
    let hub = start_hub(|config| {
        config.ttl = Duration::from_millis(300);
        config.reap_every = Duration::from_millis(100);
    })
    .await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    assert_eq!(hub.listed().await, [receiver.address()]);

    let hub_ref = hub.hub();
    eventually("the subscriber has expired", || {
        hub_ref.subscriber_count() == 0
    })
    .await;
    assert!(hub.listed().await.is_empty());
    let expired = hub_ref.activity().into_iter().any(|a| {
        matches!(&a.event, HubEvent::Removed { address, reason: RemovalReason::Expired }
            if **address == receiver.address())
    });
    assert!(
        expired,
        "the expiry was not recorded: {:?}",
        hub_ref.activity()
    );

    let id = hub.publish("too late", None).await;
    assert!(hub_ref.message(id).unwrap().deliveries().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.drain().is_empty());
}

#[tokio::test]
async fn refreshing_keeps_a_subscriber_alive() {
    let hub = start_hub(|config| {
        config.ttl = Duration::from_secs(1);
        config.reap_every = Duration::from_millis(100);
    })
    .await;
    let mut receiver = Receiver::start().await;
    for _ in 0..10 {
        hub.register(&receiver.address()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(hub.listed().await, [receiver.address()]);
    hub.publish("still here", None).await;
    assert_eq!(receiver.recv().await.body, "still here");
    let refreshed = hub
        .hub()
        .activity()
        .iter()
        .filter(|a| matches!(a.event, HubEvent::Registered { .. }))
        .count();
    assert_eq!(refreshed, 1, "a refresh was recorded as a new registration");
}

#[tokio::test]
async fn removing_a_subscriber_abandons_its_queue_and_records_why() {
    let hub = start_hub(|config| config.delivery_timeout = Duration::from_secs(600)).await;
    let (hanging, _held) = hanging_receiver().await;
    hub.register(&hanging).await;
    let first = hub.publish("in flight", None).await;
    let second = hub.publish("queued", None).await;

    let hub_ref = hub.hub();
    assert!(hub_ref.remove(&hanging, RemovalReason::Kicked));
    assert!(hub.listed().await.is_empty());
    for id in [first, second] {
        let message = hub_ref.message(id).unwrap();
        eventually("the abandoned delivery is recorded", || {
            message.summary().failed == 1
        })
        .await;
        assert_eq!(
            message.deliveries()[0].state,
            DeliveryState::Done(Outcome::Failed(DeliveryError::Removed(
                RemovalReason::Kicked
            )))
        );
    }
}

#[tokio::test]
async fn shutdown_abandons_hanging_deliveries_promptly() {
    let hub = start_hub(|config| config.delivery_timeout = Duration::from_secs(600)).await;
    let (hanging, _held) = hanging_receiver().await;
    hub.register(&hanging).await;
    let id = hub.publish("in flight", None).await;
    let inner = hub.hub().clone();
    tokio::time::timeout(Duration::from_secs(8), hub.shutdown())
        .await
        .expect("shutdown waited on a hanging subscriber");
    let message = inner.message(id).unwrap();
    eventually("the abandoned delivery is recorded", || {
        message.summary().failed == 1
    })
    .await;
    assert!(inner.is_stopping());
}
