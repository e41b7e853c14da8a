//! A plain NATS client publishing on `herald.>` in cluster mode gets only what an HTTP
//! publish would: the same header rules, body limit and routing. Herald's own messages
//! (sealed) keep what they carry, and each cluster delivers under an identity of its own.

use axum::http::HeaderName;
use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::{Nats, member_with, until_listed};
use crate::utils::{PATIENCE, Received, Receiver, TestHub};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// An instance that forwards `x-request-id` and takes bodies up to 64 KiB.
async fn instance(nats: &Nats, name: &str) -> TestHub {
    member_with(nats, name, |config| {
        config.forward_headers = vec![HeaderName::from_static("x-request-id")];
        config.max_body = 64 * 1024;
    })
    .await
}

/// Registers `receiver` at `hub` through the API, with strict order (so that a message
/// the stream holds before another would reach it first), signed, on `topics`.
async fn subscribe(hub: &TestHub, receiver: &Receiver, topics: &[&str]) {
    let (status, answer) = hub
        .call_json(
            "POST",
            "/api/v1/subscribers",
            json!({"address": receiver.address(), "topics": topics, "ordered": true,
                   "secret": SECRET}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

/// Publishes on the stream as a NATS client that knows nothing of Herald (but has read
/// its headers); returns the stream's sequence, which is the message's id.
async fn publish_raw(nats: &Nats, subject: &str, headers: &[(&str, &str)], body: Bytes) -> u64 {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        map.append(*name, *value);
    }
    js.publish_with_headers(subject.to_owned(), map, body)
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// Publishes through Herald's API at `hub`, with `headers`; returns its answer.
async fn publish_http(hub: &TestHub, topic: &str, headers: &[(&str, &str)], body: &str) -> Value {
    let mut request = hub
        .http
        .post(format!("{}/api/v1/messages?topic={topic}", hub.url))
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    answer.json().await.unwrap()
}

/// `GET /api/v1/messages/{id}` at `hub`: its status and JSON.
async fn message_json(hub: &TestHub, id: u64) -> (StatusCode, Value) {
    let answer = hub
        .http
        .get(format!("{}/api/v1/messages/{id}", hub.url))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// Message `id` as `hub` logs it, once its feed has read it.
async fn logged(hub: &TestHub, id: u64) -> Value {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, message) = message_json(hub, id).await;
        if status == StatusCode::OK {
            return message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never logged message {id}",
            hub.url
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn values<'a>(received: &'a Received, name: &str) -> Vec<&'a str> {
    received
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// What a NATS client could once write onto every delivery, through Herald's own
/// `Herald-Header-*` form or plainly, with a forged origin: none of it arrives, the body
/// arrives whole, and the log says it came from NATS.
#[tokio::test]
async fn a_nats_clients_forged_headers_never_reach_a_delivery() {
    let nats = Nats::start().await;
    let a = instance(&nats, "a").await;
    let mut receiver = Receiver::start().await;
    subscribe(&a, &receiver, &["orders.*"]).await;
    let forged = [
        ("Herald-Source", "console"),
        ("Herald-Replay-Of", "18446744073709551615"),
        ("Herald-Header-Host", "evil.example"),
        ("Herald-Header-Authorization", "Bearer stolen"),
        ("Herald-Header-Cookie", "session=stolen"),
        ("Herald-Header-Transfer-Encoding", "chunked"),
        ("Herald-Header-Content-Length", "3"),
        ("Herald-Header-webhook-id", "msg_forged_1"),
        ("Herald-Header-webhook-signature", "v1,forged"),
        ("Herald-Header-X-Herald-Instance", "forged"),
        ("Herald-Header-X-Herald-Message-Id", "1"),
        ("Herald-Header-x-request-id", "forged"),
        ("Content-Length", "3"),
        ("Authorization", "Bearer stolen"),
        ("Cookie", "session=stolen"),
        ("webhook-id", "msg_forged_2"),
        ("X-Herald-Instance", "forged"),
        // Named by --forward-header, by its plain name: passed on, as from HTTP.
        ("X-Request-Id", "plain"),
        ("Content-Type", "text/plain"),
        ("traceparent", TRACEPARENT),
    ];
    let id = publish_raw(
        &nats,
        "herald.orders.paid",
        &forged,
        Bytes::from_static(b"0123456789"),
    )
    .await;
    let got = receiver.recv().await;
    assert_eq!(&got.body[..], b"0123456789", "the body whole");
    let address = receiver.address();
    for (name, expected) in [
        ("content-length", vec!["10"]),
        ("host", vec![address.as_str()]),
        ("x-request-id", vec!["plain"]),
        ("content-type", vec!["text/plain"]),
        ("authorization", vec![]),
        ("cookie", vec![]),
        ("transfer-encoding", vec![]),
    ] {
        assert_eq!(values(&got, name), expected, "{name}: {:?}", got.headers);
    }
    let instance = a.hub().instance().to_owned();
    assert_eq!(
        values(&got, "webhook-id"),
        [format!("msg_{instance}_{id}")],
        "{:?}",
        got.headers
    );
    assert_eq!(values(&got, "x-herald-instance"), [instance.as_str()]);
    assert_eq!(values(&got, "x-herald-message-id"), [id.to_string()]);
    assert_eq!(values(&got, "webhook-signature").len(), 1);
    assert!(values(&got, "traceparent")[0].contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    let message = logged(&a, id).await;
    assert_eq!(message["source"], "nats", "{message}");
    assert!(message.get("replay_of").is_none(), "{message}");
}

/// `Herald-To` names the one subscriber a replay is for; from a NATS client it is
/// ignored, and the message goes where its topic does.
#[tokio::test]
async fn herald_to_from_a_nats_client_reaches_no_subscriber_of_another_topic() {
    let nats = Nats::start().await;
    let a = instance(&nats, "a").await;
    let mut orders = Receiver::start().await;
    let mut payments = Receiver::start().await;
    subscribe(&a, &orders, &["orders.*"]).await;
    subscribe(&a, &payments, &["payments.*"]).await;
    let to = payments.address();
    publish_raw(
        &nats,
        "herald.orders.paid",
        &[("Herald-To", to.as_str())],
        Bytes::from_static(b"forged"),
    )
    .await;
    assert_eq!(
        &orders.recv().await.body[..],
        b"forged",
        "its topic's subscriber"
    );
    // In strict order, a message the stream holds first would reach it first.
    publish_http(&a, "payments.made", &[], "control").await;
    assert_eq!(&payments.recv().await.body[..], b"control");
    assert!(payments.drain().is_empty());
}

/// A body over --max-body never gets a delivery (nor a place in the log), and it does
/// not hold back the next: a subscriber in strict order gets the next message.
#[tokio::test]
async fn a_nats_message_over_max_body_is_never_delivered() {
    let nats = Nats::start().await;
    let a = instance(&nats, "a").await;
    let mut receiver = Receiver::start().await;
    subscribe(&a, &receiver, &[]).await;
    let big = publish_raw(&nats, "herald", &[], Bytes::from(vec![b'x'; 512 * 1024])).await;
    // At the limit: delivered, whole.
    let at_limit = Bytes::from(vec![b'y'; 64 * 1024]);
    let next = publish_raw(&nats, "herald", &[], at_limit.clone()).await;
    let got = receiver.recv().await;
    assert_eq!(
        got.body.len(),
        at_limit.len(),
        "the one at the limit comes first"
    );
    assert_eq!(got.body, at_limit);
    // The feed reads in order: past the next one, it has passed the big one over.
    logged(&a, next).await;
    let (status, message) = message_json(&a, big).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{message}");
    assert!(receiver.drain().is_empty());
}

/// A `Content-Type` with a control byte could never be sent: every attempt failed, and
/// a few such messages suspended a healthy subscriber. It is dropped at the door now,
/// and the message delivered without it.
#[tokio::test]
async fn a_nats_content_type_no_request_can_carry_is_dropped_and_the_message_delivered() {
    let nats = Nats::start().await;
    let a = instance(&nats, "a").await;
    let mut receiver = Receiver::start().await;
    subscribe(&a, &receiver, &[]).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let body = Bytes::from(format!("poison {n}"));
        let id = publish_raw(
            &nats,
            "herald",
            &[("Content-Type", "text/plain\u{1}")],
            body,
        );
        ids.push(id.await);
    }
    for n in 0..6 {
        let got = receiver.recv().await;
        assert_eq!(got.body, format!("poison {n}"));
        assert_eq!(got.content_type(), None, "{:?}", got.headers);
    }
    let last = *ids.last().unwrap();
    a.until_delivered(last, 1).await;
    let (status, subscribers) = a.call_json("GET", "/api/v1/subscribers", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(subscribers[0]["state"], "active", "{subscribers}");
    assert_eq!(subscribers[0]["failed"], 0, "{subscribers}");
}

/// What Herald publishes itself is sealed, and keeps all it carries across instances:
/// forwarded headers, content type and trace, the one subscriber a replay is for, and
/// the replay's link.
#[tokio::test]
async fn heralds_own_messages_keep_their_headers_and_replay_links() {
    let nats = Nats::start().await;
    let a = instance(&nats, "a").await;
    let b = instance(&nats, "b").await;
    let mut orders = Receiver::start().await;
    let mut payments = Receiver::start().await;
    subscribe(&a, &orders, &["orders.*"]).await;
    subscribe(&a, &payments, &["payments.*"]).await;
    until_listed(&b, &payments.address()).await;
    let headers = [
        ("x-request-id", "legit"),
        ("content-type", "application/json"),
        ("traceparent", TRACEPARENT),
    ];
    let published = publish_http(&b, "orders.paid", &headers, r#"{"n":1}"#).await;
    let id = published["id"].as_u64().unwrap();
    let got = orders.recv().await;
    assert_eq!(&got.body[..], br#"{"n":1}"#);
    assert_eq!(values(&got, "x-request-id"), ["legit"]);
    assert_eq!(got.content_type(), Some("application/json"));
    assert!(values(&got, "traceparent")[0].contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    // Replayed at the other instance, to one subscriber whose topics it does not match.
    a.until_delivered(id, 1).await;
    let (status, replayed) = a
        .call_json(
            "POST",
            &format!("/api/v1/messages/{id}/replay"),
            json!({"subscriber": payments.address()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    let replay = replayed["id"].as_u64().unwrap();
    let got = payments.recv().await;
    assert_eq!(&got.body[..], br#"{"n":1}"#);
    assert_eq!(values(&got, "x-request-id"), ["legit"]);
    let copy = logged(&b, replay).await;
    assert_eq!(copy["replay_of"], id, "{copy}");
    assert_ne!(copy["source"], "nats", "{copy}");
    let original = logged(&b, id).await;
    assert_ne!(original["source"], "nats", "{original}");
    assert!(
        orders.drain().is_empty(),
        "the replay was for one subscriber"
    );
}

/// Two independent clusters once signed with the same instance id: the same
/// `webhook-id`s, and a delivery from one into the other's publish route refused as a
/// loop (508). Each has its own now, shared by all of its instances, even two that
/// joined at once.
#[tokio::test]
async fn two_clusters_have_identities_of_their_own_and_chain_without_a_loop() {
    let (first, second) = (Nats::start().await, Nats::start().await);
    let (a, b) = tokio::join!(instance(&first, "a"), instance(&first, "b"));
    let c = instance(&second, "c").await;
    let (one, two) = (a.hub().instance(), c.hub().instance());
    assert_eq!(one, b.hub().instance(), "one cluster, one identity");
    assert_ne!(one, two, "two clusters, two identities");
    for id in [one, two] {
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    // The first cluster's deliveries go into the second's publish route.
    let mut receiver = Receiver::start().await;
    subscribe(&c, &receiver, &[]).await;
    let into_second = format!("http://{}/sendMessage", c.addr());
    let (status, answer) = a
        .call_json(
            "POST",
            "/api/v1/subscribers",
            json!({"address": into_second, "topics": ["chain.*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let published = publish_http(&a, "chain.one", &[], "across").await;
    let id = published["id"].as_u64().unwrap();
    let webhook_id = published["webhook_id"].as_str().unwrap();
    assert!(
        webhook_id.starts_with(&format!("msg_{one}_")),
        "{webhook_id}"
    );
    let got = receiver.recv().await;
    assert_eq!(&got.body[..], b"across");
    assert_eq!(values(&got, "x-herald-instance"), [two]);
    assert!(values(&got, "webhook-id")[0].starts_with(&format!("msg_{two}_")));
    a.until_delivered(id, 1).await;
}
