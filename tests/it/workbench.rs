use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::utils::{Receiver, TempDir, start_hub};

#[tokio::test]
async fn a_replay_with_edits_reaches_the_one_subscriber_asked_for_and_links_both_ways() {
    let mut a = Receiver::start().await;
    let mut b = Receiver::start().await;
    let hub = start_hub(|config| {
        config.forward_headers = vec![axum::http::HeaderName::from_static("x-tenant")]
    })
    .await;
    hub.register(&a.address()).await;
    hub.register(&b.address()).await;
    let response = hub
        .http
        .post(format!("{}/api/v1/messages?topic=orders.created", hub.url))
        .header("content-type", "application/json")
        .header("x-tenant", "acme")
        .body(r#"{"n": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let original = hub.until_delivered(1, 2).await.id;
    a.recv().await;
    b.recv().await;

    let (status, replayed) = hub
        .call_json(
            "POST",
            &format!("/api/v1/messages/{original}/replay"),
            json!({"body": r#"{"n": 2}"#, "subscriber": b.address()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(replayed["replay_of"], original);
    assert_eq!(replayed["subscribers"], 1);
    let received = b.recv().await;
    assert_eq!(received.body, r#"{"n": 2}"#);
    // What was not edited is the original's: content type, topic, forwarded headers.
    assert_eq!(received.content_type(), Some("application/json"));
    assert_eq!(received.headers["x-herald-topic"], "orders.created");
    assert_eq!(received.headers["x-tenant"], "acme");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.drain().is_empty(), "only the subscriber asked for");

    let id = replayed["id"].as_u64().unwrap();
    let (_, replay) = hub
        .call_json("GET", &format!("/api/v1/messages/{id}"), json!(null))
        .await;
    assert_eq!(replay["replay_of"], original);
    let (_, first) = hub
        .call_json("GET", &format!("/api/v1/messages/{original}"), json!(null))
        .await;
    assert_eq!(first["replays"], json!([id]));

    // Without edits: the same payload, to every subscriber its topic reaches.
    let (status, again) = hub
        .call_json(
            "POST",
            &format!("/api/v1/messages/{original}/replay"),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["subscribers"], 2);
    assert_eq!(a.recv().await.body, r#"{"n": 1}"#);
    assert_eq!(b.recv().await.body, r#"{"n": 1}"#);

    // A new topic and content type, and bytes that are not text.
    let (status, edited) = hub
        .call_json(
            "POST",
            &format!("/api/v1/messages/{original}/replay"),
            json!({"body_base64": "AP8=", "content_type": "application/octet-stream", "topic": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{edited}");
    let received = a.recv().await;
    assert_eq!(&received.body[..], &[0x00, 0xff]);
    assert_eq!(received.content_type(), Some("application/octet-stream"));
    assert!(received.headers.get("x-herald-topic").is_none());
    hub.shutdown().await;
}

#[tokio::test]
async fn a_bad_replay_says_what_to_fix() {
    let hub = start_hub(|_| {}).await;
    let id = hub.publish("x", None).await;
    let path = format!("/api/v1/messages/{id}/replay");
    for (body, expected, says) in [
        (
            json!({"body": "a", "body_base64": "YQ=="}),
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            json!({"body_base64": "%%%"}),
            StatusCode::BAD_REQUEST,
            "not base64",
        ),
        (
            json!({"topic": "orders..created"}),
            StatusCode::BAD_REQUEST,
            "topic",
        ),
        (
            json!({"bodyy": "a"}),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            json!({"content_type": "a\nb"}),
            StatusCode::BAD_REQUEST,
            "header",
        ),
        (
            json!({"subscriber": "127.0.0.1:1"}),
            StatusCode::NOT_FOUND,
            "not a live subscriber",
        ),
    ] {
        let (status, answer) = hub.call_json("POST", &path, body.clone()).await;
        assert_eq!(status, expected, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{body}: {error}");
    }
    let (status, answer) = hub
        .call_json("POST", "/api/v1/messages/999/replay", json!(null))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_replay_of_a_message_only_the_store_holds_is_linked_on_disk() {
    let dir = TempDir::new("replay-store");
    let path = dir.path().to_owned();
    let mut receiver = Receiver::start().await;
    let hub = start_hub(|config| {
        config.data_dir = Some(path);
        config.log_capacity = 1;
    })
    .await;
    hub.register(&receiver.address()).await;
    let original = hub.publish("first", None).await;
    receiver.recv().await;
    // Pushed out of memory by the next one.
    hub.publish("second", None).await;
    receiver.recv().await;
    assert!(hub.hub().message(original).is_none());
    let (status, replayed) = hub
        .call_json(
            "POST",
            &format!("/api/v1/messages/{original}/replay"),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(receiver.recv().await.body, "first");
    let (_, first) = hub
        .call_json("GET", &format!("/api/v1/messages/{original}"), json!(null))
        .await;
    assert_eq!(first["replays"], json!([replayed["id"]]));
    hub.shutdown().await;
}
