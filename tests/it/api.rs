use std::time::Duration;

use axum::http::StatusCode;
use herald::hub::{Draft, Source};
use serde_json::{Value, json};

use crate::utils::{PATIENCE, Receiver, TestHub, start_hub};

async fn send(hub: &TestHub, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = hub
        .http
        .request(method.parse().unwrap(), format!("{}{path}", hub.url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response.headers().get("content-type").cloned();
    let text = response.text().await.unwrap();
    if text.is_empty() {
        return (status, Value::Null);
    }
    assert_eq!(
        content_type.as_ref().map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{method} {path}: {text}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
}

#[tokio::test]
async fn subscribers_register_refresh_list_and_kick() {
    let hub = start_hub(|_| {}).await;
    let body = json!({"address": "localhost:9001", "lease_seconds": 0});
    let (status, created) = send(&hub, "POST", "/api/v1/subscribers", Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["address"], "localhost:9001");
    assert_eq!(created["target"], "http://localhost:9001/event");
    assert_eq!(created["state"], "active");
    assert_eq!(
        created["lease_seconds"], 1.0,
        "a lease is clamped to at least 1 s"
    );
    assert_eq!(created["own_secret"], false);
    for field in ["registered_at", "last_seen", "expires_at"] {
        humantime::parse_rfc3339(created[field].as_str().unwrap()).unwrap();
    }

    let with_secret =
        json!({"address": "localhost:9001", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
    let (status, refreshed) = send(&hub, "POST", "/api/v1/subscribers", Some(with_secret)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refreshed["own_secret"], true);

    let url = "http://localhost:9002/hooks?x=1";
    send(
        &hub,
        "POST",
        "/api/v1/subscribers",
        Some(json!({"address": url})),
    )
    .await;
    let (status, list) = send(&hub, "GET", "/api/v1/subscribers", None).await;
    assert_eq!(status, StatusCode::OK);
    let addresses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        ["http://localhost:9002/hooks?x=1", "localhost:9001"]
    );
    assert_eq!(list[1]["queue_depth"], 0);
    assert_eq!(list[1]["last_status"], Value::Null);

    let encoded = "http%3A%2F%2Flocalhost%3A9002%2Fhooks%3Fx%3D1";
    let (status, _) = send(
        &hub,
        "DELETE",
        &format!("/api/v1/subscribers/{encoded}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send(
        &hub,
        "DELETE",
        &format!("/api/v1/subscribers/{encoded}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("not a live subscriber"));
    assert_eq!(hub.listed().await, ["localhost:9001"]);
}

#[tokio::test]
async fn subscriber_errors_are_json_with_the_right_status() {
    let hub = start_hub(|config| {
        config.max_body = 256;
        config.max_subscribers = 1;
    })
    .await;
    let cases = [
        (
            json!({"address": "localhost"}),
            StatusCode::BAD_REQUEST,
            "no port",
        ),
        (
            json!({"address": "169.254.169.254:80"}),
            StatusCode::BAD_REQUEST,
            "link-local",
        ),
        (
            json!({"address": "a:1", "secret": "x"}),
            StatusCode::BAD_REQUEST,
            "whsec_",
        ),
        (
            json!({"address": "a:1", "lease_seconds": -5}),
            StatusCode::BAD_REQUEST,
            "lease_seconds",
        ),
        (
            json!({"addres": "a:1"}),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            json!({"address": "x".repeat(300)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "--max-body",
        ),
    ];
    for (body, expected, needle) in cases {
        let (status, answer) = send(&hub, "POST", "/api/v1/subscribers", Some(body.clone())).await;
        assert_eq!(status, expected, "{body}: {answer}");
        assert!(error_of(&answer).contains(needle), "{body}: {answer}");
    }
    let response = hub
        .http
        .post(format!("{}/api/v1/subscribers", hub.url))
        .body("address=a:1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = hub
        .http
        .post(format!("{}/api/v1/subscribers", hub.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    send(
        &hub,
        "POST",
        "/api/v1/subscribers",
        Some(json!({"address": "a:1"})),
    )
    .await;
    let (status, answer) = send(
        &hub,
        "POST",
        "/api/v1/subscribers",
        Some(json!({"address": "b:1"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&answer).contains("--max-subscribers"));

    let response = hub
        .http
        .put(format!("{}/api/v1/subscribers", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let body: Value = response.json().await.unwrap();
    assert!(error_of(&body).contains("Allow"));

    let (status, answer) = send(&hub, "GET", "/api/v1/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&answer).contains("openapi.json"));
}

#[tokio::test]
async fn messages_publish_page_inspect_and_resend() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;

    let response = hub
        .http
        .post(format!("{}/api/v1/messages", hub.url))
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let published: Value = response.json().await.unwrap();
    assert_eq!(published["subscribers"], 1);
    let id = published["id"].as_u64().unwrap();
    let received = receiver.recv().await;
    assert_eq!(received.body, r#"{"n":1}"#);
    assert_eq!(received.content_type(), Some("application/json"));

    hub.until_delivered(id, 1).await;
    let (status, detail) = send(&hub, "GET", &format!("/api/v1/messages/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["body"], r#"{"n":1}"#);
    assert_eq!(detail["body_encoding"], "utf8");
    assert_eq!(detail["webhook_id"], published["webhook_id"]);
    assert_eq!(detail["content_type"], "application/json");
    assert_eq!(detail["delivery_counts"]["delivered"], 1);
    let delivery = &detail["deliveries"][0];
    assert_eq!(delivery["subscriber"], receiver.address());
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["http_status"], 200);
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);

    let binary = hub
        .hub()
        .publish(Draft::new(vec![0xff, 0x00, 0xfe]), Source::Console)
        .unwrap();
    receiver.recv().await;
    let (_, detail) = send(
        &hub,
        "GET",
        &format!("/api/v1/messages/{}", binary.id().unwrap()),
        None,
    )
    .await;
    assert_eq!(detail["body_encoding"], "base64");
    assert_eq!(detail["body"], "/wD+");
    assert_eq!(detail["source"], "console");

    for i in 0..3 {
        hub.publish(format!("p{i}"), None).await;
        receiver.recv().await;
    }
    let (_, page) = send(&hub, "GET", "/api/v1/messages?limit=2", None).await;
    let ids: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [5, 4]);
    assert_eq!(page["next_before"], 4);
    let (_, page) = send(&hub, "GET", "/api/v1/messages?limit=10&before=4", None).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 3);
    assert_eq!(page["next_before"], Value::Null);

    let (status, resent) = send(&hub, "POST", &format!("/api/v1/messages/{id}/resend"), None).await;
    assert_eq!(
        (status, resent["queued"].as_u64()),
        (StatusCode::ACCEPTED, Some(1))
    );
    assert_eq!(receiver.recv().await.body, r#"{"n":1}"#);
    let path = format!(
        "/api/v1/messages/{id}/resend?subscriber={}",
        receiver.address()
    );
    let (status, _) = send(&hub, "POST", &path, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    receiver.recv().await;

    for (method, path, expected) in [
        ("GET", "/api/v1/messages?limit=0", StatusCode::BAD_REQUEST),
        (
            "GET",
            "/api/v1/messages?limit=1001",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/v1/messages?before=soon",
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/api/v1/messages/999", StatusCode::NOT_FOUND),
        ("GET", "/api/v1/messages/abc", StatusCode::NOT_FOUND),
        ("POST", "/api/v1/messages/1x/resend", StatusCode::NOT_FOUND),
        ("POST", "/api/v1/messages/999/resend", StatusCode::NOT_FOUND),
        (
            "POST",
            "/api/v1/messages/1/resend?subscriber=nobody:1",
            StatusCode::NOT_FOUND,
        ),
        ("PUT", "/api/v1/messages", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let (status, body) = send(&hub, method, path, None).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert!(!error_of(&body).is_empty());
    }
}

#[tokio::test]
async fn unauthorized_api_calls_get_json_401() {
    let hub = start_hub(|config| config.token = Some("s3cret".into())).await;
    let (status, body) = send(&hub, "GET", "/api/v1/subscribers", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_of(&body).contains("Bearer"));
}

/// The JSON data of the first `name` event in an SSE transcript.
fn event_data(seen: &str, name: &str) -> Value {
    let marker = format!("event: {name}");
    seen.lines()
        .skip_while(|line| *line != marker)
        .find_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .unwrap_or_else(|| panic!("no {name} event in:\n{seen}"))
}

/// Reads an SSE response until `wanted` has been seen, returning everything read.
async fn read_until(response: &mut reqwest::Response, wanted: &[&str]) -> String {
    let mut seen = String::new();
    tokio::time::timeout(PATIENCE, async {
        while !wanted.iter().all(|w| seen.contains(w)) {
            let chunk = response.chunk().await.unwrap().expect("stream ended");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never saw {wanted:?} in:\n{seen}"));
    seen
}

#[tokio::test]
async fn the_event_stream_follows_the_hub_live() {
    let hub = start_hub(|config| config.retry_schedule.0.clear()).await;
    let mut events = hub
        .http
        .get(format!("{}/api/v1/events", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(events.headers()["content-type"], "text/event-stream");

    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("live", None).await;
    receiver.recv().await;
    hub.until_delivered(id, 1).await;
    hub.deregister(&receiver.address()).await;

    let seen = read_until(
        &mut events,
        &[
            "event: registered",
            "event: published",
            "event: delivery",
            "event: removed",
        ],
    )
    .await;
    let delivery = event_data(&seen, "delivery");
    assert_eq!(delivery["type"], "delivery");
    assert_eq!(delivery["id"], id);
    assert_eq!(delivery["address"], receiver.address());
    assert_eq!(delivery["outcome"], "delivered");
    assert_eq!(delivery["http_status"], 200);
    assert!(seen.contains("\"reason\":\"deregistered\""), "{seen}");
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_told_what_it_missed() {
    let hub = start_hub(|_| {}).await;
    let mut events = hub
        .http
        .get(format!("{}/api/v1/events", hub.url))
        .send()
        .await
        .unwrap();
    // Far more events than the reader's buffer and the sockets between can hold, while
    // the reader reads nothing. Publishing must not wait for it.
    for _ in 0..60_000 {
        hub.hub()
            .publish_when_ready(Draft::default(), Source::Console)
            .await
            .unwrap();
    }
    let seen = read_until(&mut events, &["event: lagged"]).await;
    let missed = event_data(&seen, "lagged");
    assert!(missed["missed"].as_u64().unwrap() > 0, "{missed}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn metrics_and_health() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("count me", None).await;
    receiver.recv().await;
    hub.until_delivered(id, 1).await;

    let response = hub
        .http
        .get(format!("{}/metrics", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in [
        "herald_subscribers{state=\"active\"} 1",
        "herald_messages_total 1",
        "herald_deliveries_total{outcome=\"delivered\"} 1",
        "herald_delivery_latency_seconds_bucket{le=\"+Inf\"} 1",
        "herald_delivery_latency_seconds_count 1",
        "herald_queue_depth 0",
        "# TYPE herald_delivery_latency_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let (status, health) = send(&hub, "GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["subscribers"], 1);
}

#[tokio::test]
async fn the_openapi_document_covers_every_api_route() {
    let hub = start_hub(|_| {}).await;
    let (status, doc) = send(&hub, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/subscribers", &["get", "post"][..]),
        ("/api/v1/subscribers/{address}", &["delete"]),
        ("/api/v1/messages", &["get", "post"]),
        ("/api/v1/messages/{id}", &["get"]),
        ("/api/v1/messages/{id}/resend", &["post"]),
        ("/api/v1/events", &["get"]),
    ] {
        for method in methods {
            let operation = &paths[path][method];
            assert!(operation.is_object(), "{method} {path} is not documented");
            assert!(operation["operationId"].is_string());
        }
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}
