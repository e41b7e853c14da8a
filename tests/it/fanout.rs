use std::time::Duration;

use axum::http::StatusCode;
use herald::hub::{DeliveryError, DeliveryState, Outcome};

use crate::utils::{
    Receiver, Reply, dead_address, eventually, hanging_receiver, raw_request, start_hub,
};

#[tokio::test]
async fn every_subscriber_gets_identical_bytes_and_content_type() {
    let hub = start_hub(|_| {}).await;
    let mut receivers = Vec::new();
    for _ in 0..100 {
        let receiver = Receiver::start().await;
        hub.register(&receiver.address()).await;
        receivers.push(receiver);
    }
    let binary: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let large: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let utf8 = "Grüße, 世界! 🚀 {\"emoji\": true}".as_bytes().to_vec();
    let payloads: [(Vec<u8>, Option<&str>); 4] = [
        (binary, Some("application/octet-stream")),
        (Vec::new(), None),
        (large, Some("application/x-large")),
        (utf8, Some("application/json; charset=utf-8")),
    ];
    for (payload, content_type) in &payloads {
        hub.publish(payload.clone(), *content_type).await;
    }
    for receiver in &mut receivers {
        for (payload, content_type) in &payloads {
            let received = receiver.recv().await;
            assert_eq!(received.path, "/event");
            assert_eq!(
                received.body.as_ref(),
                payload.as_slice(),
                "bytes changed in flight"
            );
            assert_eq!(received.content_type(), *content_type);
            assert!(received.headers.contains_key("x-herald-message-id"));
        }
    }
    let hub_ref = hub.hub();
    eventually("every delivery is recorded as delivered", || {
        hub_ref.totals().delivered == 400
    })
    .await;
    for message in hub_ref.messages(None, 10) {
        let summary = message.summary();
        assert_eq!(
            (summary.delivered, summary.failed, summary.pending),
            (100, 0, 0)
        );
        for delivery in message.deliveries() {
            assert!(
                matches!(
                    delivery.state,
                    DeliveryState::Done(Outcome::Delivered { status: 200, .. })
                ),
                "{delivery:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_full_url_address_is_used_as_given() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&format!("http://{}/hooks/herald%3Fx", receiver.address()))
        .await;
    hub.publish("ping", Some("text/plain")).await;
    let received = receiver.recv().await;
    assert_eq!(received.path, "/hooks/herald");
    assert_eq!(received.body.as_ref(), b"ping");
}

#[tokio::test]
async fn each_subscriber_receives_messages_in_publish_order() {
    let hub = start_hub(|_| {}).await;
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let receiver = Receiver::start().await;
        hub.register(&receiver.address()).await;
        receivers.push(receiver);
    }
    for i in 0..200 {
        hub.publish(i.to_string(), None).await;
    }
    for receiver in &mut receivers {
        for i in 0..200 {
            assert_eq!(receiver.recv().await.body, i.to_string(), "out of order");
        }
    }
}

#[tokio::test]
async fn a_hanging_subscriber_delays_neither_publishers_nor_others() {
    // The delivery timeout is far longer than the test's patience: if anything waited
    // on the hanging subscriber, the test would time out.
    let hub = start_hub(|config| config.delivery_timeout = Duration::from_secs(600)).await;
    let (hanging, _held) = hanging_receiver().await;
    hub.register(&hanging).await;
    let mut fast = Receiver::start().await;
    hub.register(&fast.address()).await;

    for i in 0..5 {
        hub.publish(format!("m{i}"), None).await;
    }
    for i in 0..5 {
        assert_eq!(fast.recv().await.body, format!("m{i}"));
    }
    let last = hub.hub().messages(None, 1)[0].clone();
    eventually("the fast delivery is recorded", || {
        last.summary().delivered == 1
    })
    .await;
    let pending: Vec<_> = last
        .deliveries()
        .into_iter()
        .filter(|d| d.state == DeliveryState::Pending)
        .map(|d| d.subscriber.to_string())
        .collect();
    assert_eq!(pending, [hanging]);
}

#[tokio::test]
async fn connections_to_a_subscriber_are_reused() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    for i in 0..30 {
        hub.publish(i.to_string(), None).await;
        receiver.recv().await;
    }
    let connections = receiver.connections();
    assert!(
        (1..=3).contains(&connections),
        "30 deliveries used {connections} connections"
    );
}

#[tokio::test]
async fn a_publish_cut_short_is_not_delivered() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;

    let answer = raw_request(
        hub.addr(),
        b"POST /sendMessage HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nonly part of it",
    )
    .await;
    assert!(
        !answer.contains("success"),
        "a cut-short body was accepted: {answer}"
    );

    // Per-subscriber order makes this exact: had the cut-short publish been queued, it
    // would arrive before the marker.
    hub.publish("marker", None).await;
    assert_eq!(receiver.recv().await.body, "marker");
    assert_eq!(hub.hub().totals().messages, 1);
    assert!(receiver.drain().is_empty());
}

#[tokio::test]
async fn failed_deliveries_are_recorded_with_why() {
    let hub = start_hub(|config| config.retry_schedule.0.clear()).await;
    let mut failing = Receiver::answering(StatusCode::INTERNAL_SERVER_ERROR).await;
    let dead = dead_address().await;
    hub.register(&failing.address()).await;
    hub.register(&dead).await;
    let id = hub.publish("doomed", None).await;
    failing.recv().await;

    let hub_ref = hub.hub();
    let message = hub.until_failed(id, 2).await;
    for delivery in message.deliveries() {
        let DeliveryState::Done(Outcome::Failed(error)) = &delivery.state else {
            panic!("{delivery:?} did not fail");
        };
        if *delivery.subscriber == *dead {
            assert!(matches!(error, DeliveryError::Connect(_)), "{error:?}");
            assert!(error.to_string().contains("refused"), "{error}");
        } else {
            assert!(
                matches!(error, DeliveryError::Status { status: 500, .. }),
                "{error:?}"
            );
        }
    }
    let failing_view = hub_ref
        .subscribers()
        .into_iter()
        .find(|s| *s.address == failing.address())
        .unwrap();
    assert_eq!((failing_view.delivered, failing_view.failed), (0, 1));
    assert_eq!(failing_view.last_status, Some(500));
}

#[tokio::test]
async fn a_full_queue_drops_and_records_the_delivery() {
    let hub = start_hub(|config| {
        config.queue_capacity = 2;
        config.delivery_timeout = Duration::from_secs(600);
    })
    .await;
    let (hanging, _held) = hanging_receiver().await;
    hub.register(&hanging).await;
    let hub_ref = hub.hub();
    // One in flight, two queued; the rest find the queue full.
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(hub.publish(format!("m{i}"), None).await);
    }
    let dropped: Vec<u64> = ids
        .iter()
        .filter(|id| {
            let message = hub_ref.message(**id).unwrap();
            matches!(
                message.deliveries()[0].state,
                DeliveryState::Done(Outcome::Failed(DeliveryError::QueueFull { capacity: 2 }))
            )
        })
        .copied()
        .collect();
    assert!(
        (2..=3).contains(&dropped.len()),
        "dropped {dropped:?} of {ids:?}"
    );
    assert_eq!(*dropped.last().unwrap(), *ids.last().unwrap());
    assert!(hub_ref.totals().failed >= 2);
}

#[tokio::test]
async fn a_large_fan_out_reaches_everyone() {
    // Three hundred subscribers sharing one server, told apart by their paths.
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    for i in 0..300 {
        hub.register(&format!("http://{}/event/{i}", receiver.address()))
            .await;
    }
    let response = hub
        .http
        .post(format!("{}/sendMessage", hub.url))
        .body("to all")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-herald-subscribers"], "300");
    let mut paths: Vec<String> = Vec::new();
    for _ in 0..300 {
        paths.push(receiver.recv().await.path);
    }
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 300, "every subscriber got it once");
}

#[tokio::test]
async fn subscribers_sharing_a_server_take_turns_for_its_connections() {
    let hub = start_hub(|config| config.max_connections_per_host = 3).await;
    let slow = Reply::status(200).after(Duration::from_millis(40));
    let mut shared = Receiver::scripted(Vec::new(), slow).await;
    for i in 0..24 {
        hub.register(&format!("http://{}/event/{i}", shared.address()))
            .await;
    }
    let mut elsewhere = Receiver::start().await;
    hub.register(&elsewhere.address()).await;

    let id = hub.publish("to all", None).await;
    elsewhere.recv().await;
    for _ in 0..24 {
        shared.recv().await;
    }
    hub.until_delivered(id, 25).await;
    assert_eq!(
        shared.most_in_flight(),
        3,
        "24 deliveries to one server, at most 3 at a time"
    );
}
