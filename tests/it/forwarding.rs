use std::time::Duration;

use axum::http::{HeaderName, StatusCode};
use serde_json::Value;

use crate::utils::{Received, Receiver, Reply, TestHub, start_hub};

/// The W3C spec's own example.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn traceparent(flags: &str) -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-{flags}")
}

/// Publishes through `/sendMessage` with these headers; returns the message id.
async fn publish_with(hub: &TestHub, headers: &[(&str, &str)]) -> u64 {
    let mut request = hub
        .http
        .post(format!("{}/sendMessage", hub.url))
        .body("traced");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["x-herald-message-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The delivery's `traceparent` as (trace id, parent id, flags), checked against the W3C
/// format here rather than by Herald's own parser.
fn trace_of(received: &Received) -> (String, String, String) {
    let values: Vec<_> = received.headers.get_all("traceparent").iter().collect();
    assert_eq!(values.len(), 1, "one traceparent: {:?}", received.headers);
    let value = values[0].to_str().unwrap();
    let fields: Vec<&str> = value.split('-').collect();
    let lowercase_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert!(
        fields.len() == 4
            && fields.iter().map(|f| f.len()).eq([2, 32, 16, 2])
            && fields.iter().all(|f| lowercase_hex(f))
            && fields[0] == "00"
            && fields[1].bytes().any(|b| b != b'0')
            && fields[2].bytes().any(|b| b != b'0'),
        "not a valid version-00 traceparent: {value:?}"
    );
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3].to_owned(),
    )
}

fn tracestate_of(received: &Received) -> Option<&str> {
    received
        .headers
        .get("tracestate")
        .map(|v| v.to_str().unwrap())
}

async fn json(hub: &TestHub, path: &str) -> Value {
    let (status, body) = hub.call("GET", path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn a_traceparent_reaches_each_attempt_as_a_child_with_its_tracestate() {
    let hub = start_hub(|config| {
        config.retry_schedule.0 = vec![Duration::from_millis(20)];
    })
    .await;
    let mut receiver = Receiver::scripted(vec![Reply::status(500)], Reply::status(200)).await;
    hub.register(&receiver.address()).await;
    let parent = traceparent("01");
    let id = publish_with(
        &hub,
        &[
            ("traceparent", &parent),
            // Two fields, as the spec allows: passed on as one.
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ],
    )
    .await;
    let (first, retry) = (receiver.recv().await, receiver.recv().await);
    let mut parents = Vec::new();
    for received in [&first, &retry] {
        let (trace_id, parent_id, flags) = trace_of(received);
        assert_eq!((trace_id.as_str(), flags.as_str()), (TRACE_ID, "01"));
        assert_ne!(parent_id, PARENT_ID, "a child has a parent id of its own");
        parents.push(parent_id);
        assert_eq!(
            tracestate_of(received),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
    }
    assert_ne!(parents[0], parents[1], "each attempt is its own child");
    let detail = json(&hub, &format!("/api/v1/messages/{id}")).await;
    assert_eq!(detail["trace_id"], TRACE_ID);

    // Flags pass as they came.
    let unsampled = traceparent("00");
    publish_with(&hub, &[("traceparent", &unsampled)]).await;
    let received = receiver.recv().await;
    assert_eq!(trace_of(&received).2, "00");
    assert_eq!(tracestate_of(&received), None);
}

#[tokio::test]
async fn a_publish_without_a_trace_starts_one_that_the_api_shows() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("untraced", None).await;
    let received = receiver.recv().await;
    let (trace_id, _, flags) = trace_of(&received);
    assert_eq!(flags, "01", "a trace Herald starts is sampled");
    assert_eq!(tracestate_of(&received), None);

    let detail = json(&hub, &format!("/api/v1/messages/{id}")).await;
    assert_eq!(detail["trace_id"], trace_id);
    let page = json(&hub, "/api/v1/messages").await;
    assert_eq!(page["messages"][0]["id"], id);
    assert_eq!(page["messages"][0]["trace_id"], trace_id);

    let other = hub.publish("untraced too", None).await;
    assert_ne!(trace_of(&receiver.recv().await).0, trace_id);
    let detail = json(&hub, &format!("/api/v1/messages/{other}")).await;
    assert_ne!(detail["trace_id"], trace_id, "each publish starts its own");
}

#[tokio::test]
async fn an_invalid_traceparent_is_replaced_and_its_tracestate_dropped() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let uppercase = traceparent("01").to_uppercase();
    let zero_trace = format!("00-{}-{PARENT_ID}-01", "0".repeat(32));
    let zero_parent = format!("00-{TRACE_ID}-{}-01", "0".repeat(16));
    let version_ff = traceparent("01").replacen("00", "ff", 1);
    let extra_field = traceparent("01") + "-extra";
    let valid = traceparent("01");
    let cases: [&[(&str, &str)]; 6] = [
        &[("traceparent", &uppercase)],
        &[("traceparent", &zero_trace)],
        &[("traceparent", &zero_parent)],
        &[("traceparent", &version_ff)],
        &[("traceparent", &extra_field)],
        // Two traceparents: which one is the parent?
        &[("traceparent", &valid), ("traceparent", &valid)],
    ];
    for headers in cases {
        let headers = [headers, &[("tracestate", "congo=t61rcWkgMzE")]].concat();
        let id = publish_with(&hub, &headers).await;
        let received = receiver.recv().await;
        let (trace_id, _, _) = trace_of(&received);
        assert_ne!(trace_id, TRACE_ID, "{headers:?}");
        assert!(!trace_id.chars().all(|c| c == '0'), "{headers:?}");
        assert_eq!(tracestate_of(&received), None, "{headers:?}");
        let detail = json(&hub, &format!("/api/v1/messages/{id}")).await;
        assert_eq!(detail["trace_id"], trace_id, "{headers:?}");
    }
}

#[tokio::test]
async fn forward_header_passes_on_the_headers_it_names_and_no_others() {
    let hub = start_hub(|config| {
        config.forward_headers = vec![HeaderName::from_static("x-request-id")];
    })
    .await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    publish_with(
        &hub,
        &[
            ("X-Request-Id", "req-42"),
            ("x-other", "not named"),
            ("authorization", "Bearer for-herald"),
            ("content-type", "text/plain"),
        ],
    )
    .await;
    let received = receiver.recv().await;
    assert_eq!(received.headers["x-request-id"], "req-42");
    assert!(!received.headers.contains_key("x-other"));
    assert!(!received.headers.contains_key("authorization"));
    assert_eq!(received.content_type(), Some("text/plain"));
    trace_of(&received);

    // Every field of a named header passes, in order; a publish without it sends none.
    publish_with(&hub, &[("x-request-id", "a"), ("x-request-id", "b")]).await;
    let received = receiver.recv().await;
    let values: Vec<_> = received.headers.get_all("x-request-id").iter().collect();
    assert_eq!(values, ["a", "b"]);
    publish_with(&hub, &[]).await;
    assert!(!receiver.recv().await.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn without_forward_header_no_publisher_header_passes() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    publish_with(&hub, &[("x-request-id", "req-42")]).await;
    let received = receiver.recv().await;
    assert!(!received.headers.contains_key("x-request-id"));
}
