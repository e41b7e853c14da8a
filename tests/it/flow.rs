use std::time::{Duration, Instant};

use axum::http::StatusCode;
use herald::hub::DeliveryState;

use crate::utils::{Receiver, Reply, TestHub, eventually, start_hub};

/// Retries two seconds after a failure: long enough to see what happens meanwhile,
/// however slow the machine.
async fn slow_retries() -> TestHub {
    start_hub(|config| {
        config.retry_schedule.0 = vec![Duration::from_secs(2)];
    })
    .await
}

async fn bodies(receiver: &mut Receiver, count: usize) -> Vec<(String, Instant)> {
    let mut out = Vec::new();
    for _ in 0..count {
        let received = receiver.recv().await;
        out.push((
            String::from_utf8_lossy(&received.body).into_owned(),
            received.at,
        ));
    }
    out
}

#[tokio::test]
async fn a_failing_delivery_does_not_hold_back_the_next_one() {
    let hub = slow_retries().await;
    let mut receiver = Receiver::scripted(vec![Reply::status(500)], Reply::status(200)).await;
    hub.register(&receiver.address()).await;
    let first = hub.publish("first", None).await;
    hub.publish("second", None).await;
    let got = bodies(&mut receiver, 2).await;
    assert_eq!([got[0].0.as_str(), got[1].0.as_str()], ["first", "second"]);
    assert!(
        got[1].1 - got[0].1 < Duration::from_secs(1),
        "the second waited for the first's retry: {:?}",
        got[1].1 - got[0].1
    );
    let state = hub.hub().message(first).unwrap().deliveries()[0]
        .state
        .clone();
    assert!(
        matches!(
            state,
            DeliveryState::Retrying {
                attempt: 2,
                of: Some(2),
                ..
            }
        ),
        "{state:?}"
    );
    let detail: serde_json::Value = serde_json::from_str(
        &hub.call("GET", &format!("/api/v1/messages/{first}"))
            .await
            .1,
    )
    .unwrap();
    let delivery = &detail["deliveries"][0];
    assert_eq!(delivery["status"], "retrying", "{detail}");
    assert_eq!(delivery["next_attempt"], 2, "{detail}");
    assert_eq!(delivery["attempts"][0]["http_status"], 500, "{detail}");
    // The subscriber's last answer shows before the delivery is over.
    let view = hub.hub().subscriber(&receiver.address()).unwrap();
    assert!(
        matches!(view.last_status, Some(500 | 200)),
        "{:?}",
        view.last_status
    );
    let retry = bodies(&mut receiver, 1).await;
    assert_eq!(retry[0].0, "first");
    hub.until_delivered(first, 1).await;
}

#[tokio::test]
async fn a_subscriber_that_fails_everything_still_gets_each_message_at_once() {
    let hub = start_hub(|config| {
        config.retry_schedule.0 = vec![Duration::from_secs(5); 3];
    })
    .await;
    let mut receiver = Receiver::answering(StatusCode::INTERNAL_SERVER_ERROR).await;
    hub.register(&receiver.address()).await;
    for n in 0..5 {
        let body = format!("message {n}");
        let published = Instant::now();
        hub.publish(body.clone(), None).await;
        // Retries of earlier messages may come in between; this one must not wait.
        loop {
            let received = receiver.recv().await;
            if received.body == body.as_bytes() {
                let waited = received.at - published;
                assert!(
                    waited < Duration::from_millis(400),
                    "{body} waited {waited:?}"
                );
                break;
            }
        }
    }
}

#[tokio::test]
async fn an_ordered_subscriber_has_a_retry_hold_back_what_follows() {
    let hub = slow_retries().await;
    let mut receiver = Receiver::scripted(vec![Reply::status(500)], Reply::status(200)).await;
    let (status, body) = hub
        .call(
            "POST",
            &format!(
                "/registerAndKeepAlive?address={}&ordered=true",
                receiver.address()
            ),
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "success"));
    hub.publish("first", None).await;
    hub.publish("second", None).await;
    let got = bodies(&mut receiver, 3).await;
    let order: Vec<&str> = got.iter().map(|(body, _)| body.as_str()).collect();
    assert_eq!(order, ["first", "first", "second"]);
    let listed: serde_json::Value =
        serde_json::from_str(&hub.call("GET", "/api/v1/subscribers").await.1).unwrap();
    assert_eq!(listed[0]["ordered"], true, "{listed}");
    let (status, body) = hub
        .call(
            "POST",
            &format!(
                "/registerAndKeepAlive?address={}&ordered=maybe",
                receiver.address()
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("true or false"), "{body}");
}

#[tokio::test]
async fn max_in_flight_lets_one_subscriber_take_several_at_once() {
    let hub = start_hub(|_| {}).await;
    let receiver = Receiver::scripted(
        Vec::new(),
        Reply::status(200).after(Duration::from_millis(300)),
    )
    .await;
    let response = hub
        .http
        .post(format!("{}/api/v1/subscribers", hub.url))
        .json(&serde_json::json!({"address": receiver.address(), "max_in_flight": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let listed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(listed["max_in_flight"], 4);
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(hub.publish(format!("m{n}"), None).await);
    }
    for id in ids {
        hub.until_delivered(id, 1).await;
    }
    assert_eq!(receiver.most_in_flight(), 4);

    let response = hub
        .http
        .post(format!("{}/api/v1/subscribers", hub.url))
        .json(&serde_json::json!({"address": "127.0.0.1:9", "max_in_flight": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("from 1 to 256"));
    eventually("nothing registered", || hub.hub().subscriber_count() == 1).await;
}

#[tokio::test]
async fn each_attempt_keeps_what_was_sent_and_what_came_back() {
    let hub = start_hub(|config| {
        config.retry_schedule.0 = vec![Duration::from_millis(50)];
    })
    .await;
    let receiver = Receiver::scripted(
        vec![
            Reply::status(500)
                .header("x-trace", "abc")
                .body("boom: a stack trace"),
        ],
        Reply::status(200).body(vec![0xff_u8, 0x00, 0x01]),
    )
    .await;
    hub.register(&receiver.address()).await;
    let id = hub
        .publish(r#"{"order": 1}"#, Some("application/json"))
        .await;
    let message = hub.until_delivered(id, 1).await;
    let attempts = &message.deliveries()[0].attempts;
    assert_eq!(attempts.len(), 2);
    let first = attempts[0]
        .exchange
        .as_deref()
        .expect("the first attempt was sent");
    assert_eq!(first.method, "POST");
    assert_eq!(&*first.url, format!("http://{}/event", receiver.address()));
    let sent = |name: &str| {
        first
            .request_headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_owned())
    };
    assert_eq!(sent("content-type").as_deref(), Some("application/json"));
    assert_eq!(sent("x-herald-message-id"), Some(id.to_string()));
    let answer = first.response.as_ref().expect("it answered");
    assert_eq!(answer.status, 500);
    assert_eq!(&answer.body[..], b"boom: a stack trace");
    assert!(
        answer
            .headers
            .iter()
            .any(|(n, v)| (n, v) == ("x-trace", "abc"))
    );

    let detail: serde_json::Value =
        serde_json::from_str(&hub.call("GET", &format!("/api/v1/messages/{id}")).await.1).unwrap();
    let attempts = &detail["deliveries"][0]["attempts"];
    assert_eq!(
        attempts[0]["response"]["body"], "boom: a stack trace",
        "{detail}"
    );
    assert_eq!(attempts[0]["response"]["body_encoding"], "utf8");
    assert_eq!(attempts[0]["request"]["method"], "POST");
    assert_eq!(attempts[1]["response"]["status"], 200);
    assert_eq!(attempts[1]["response"]["body_encoding"], "base64");
    assert_eq!(attempts[1]["response"]["body"], "/wAB");
}

#[tokio::test]
async fn retries_count_against_the_queue_so_a_failing_subscriber_holds_no_more() {
    let hub = start_hub(|config| {
        config.queue_capacity = 4;
        config.retry_schedule.0 = vec![Duration::from_secs(30)];
    })
    .await;
    let receiver = Receiver::answering(StatusCode::SERVICE_UNAVAILABLE).await;
    hub.register(&receiver.address()).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(hub.publish(format!("m{n}"), None).await);
        // Each is taken and fails before the next comes, so it waits for its retry.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped = || {
        ids.iter()
            .filter(|id| {
                matches!(
                    hub.hub().message(**id).unwrap().deliveries()[0].state,
                    DeliveryState::Done(herald::hub::Outcome::Failed(
                        herald::hub::DeliveryError::QueueFull { .. }
                    ))
                )
            })
            .count()
    };
    // At most 4 waiting for a retry and 4 in the queue: the other 12 are recorded as
    // dropped, not held in memory for ever.
    eventually("the overflow is recorded as dropped", || dropped() == 12).await;
}
