//! Subscriber control: pause and resume, pin, expire now, kick and ban.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::utils::{Receiver, eventually, start_hub};

fn path(address: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(address.as_bytes()).collect();
    format!("/api/v1/subscribers/{encoded}")
}

#[tokio::test]
async fn a_paused_subscriber_gets_nothing_until_resumed_then_all_in_order() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let at = path(&receiver.address());
    let (status, body) = hub.call_json("PATCH", &at, json!({"paused": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["paused"], true);
    let ids: Vec<u64> = [
        hub.publish("one", None).await,
        hub.publish("two", None).await,
        hub.publish("three", None).await,
    ]
    .into();
    // The first may be held by the worker rather than wait in the queue.
    eventually("they wait in its queue", || {
        hub.hub()
            .subscriber(&receiver.address())
            .unwrap()
            .queue_depth
            >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.drain().is_empty(), "a paused subscriber received");
    let (status, body) = hub.call_json("PATCH", &at, json!({"paused": false})).await;
    assert_eq!((status, &body["paused"]), (StatusCode::OK, &json!(false)));
    for expected in ["one", "two", "three"] {
        assert_eq!(receiver.recv().await.body, expected);
    }
    hub.until_delivered(ids[2], 1).await;
}

#[tokio::test]
async fn a_pinned_subscriber_outlives_its_lease_and_expire_now_removes_one() {
    let hub = start_hub(|config| {
        config.ttl = Duration::from_secs(1);
        config.reap_every = Duration::from_millis(100);
    })
    .await;
    let (pinned, other) = ("127.0.0.1:9001", "127.0.0.1:9002");
    hub.register(pinned).await;
    hub.register(other).await;
    let (status, body) = hub
        .call_json("PATCH", &path(pinned), json!({"pinned": true}))
        .await;
    assert_eq!(
        (status, &body["pinned"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(
        hub.listed().await,
        [pinned],
        "only the unpinned one expired"
    );

    let (status, _) = hub.call("POST", &format!("{}/expire", path(pinned))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(hub.listed().await.is_empty());
    let (status, body) = hub.call("POST", &format!("{}/expire", path(pinned))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = hub
        .call_json("PATCH", &path("nobody:1"), json!({"paused": true}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_ban_refuses_registration_saying_until_when() {
    let hub = start_hub(|_| {}).await;
    let address = "127.0.0.1:9003";
    hub.register(address).await;
    let (status, body) = hub
        .call("DELETE", &format!("{}?ban=10m", path(address)))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(hub.listed().await.is_empty());
    for route in [format!("/registerAndKeepAlive?address={address}")] {
        let (status, body) = hub.call("POST", &route).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body.contains("banned until") && body.contains("register again then"),
            "{body}"
        );
    }
    let (status, body) = hub
        .call_json("POST", "/api/v1/subscribers", json!({"address": address}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("banned until"));
    // Others are not.
    hub.register("127.0.0.1:9004").await;
    // A bad length is refused, and bans nothing.
    for bad in ["soon", "0s", "400days"] {
        let (status, body): (StatusCode, Value) = hub
            .call_json(
                "DELETE",
                &format!("{}?ban={bad}", path("127.0.0.1:9004")),
                Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(hub.listed().await, ["127.0.0.1:9004"]);
}
