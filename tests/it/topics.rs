use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::utils::{Receiver, TestHub, start_hub};

/// Registers `receiver` over the seed route with `topics` as given in the query (already
/// percent-encoded), and checks it was accepted.
async fn register_with(hub: &TestHub, receiver: &Receiver, topics: &str) {
    let path = format!(
        "/registerAndKeepAlive?address={}&topics={topics}",
        receiver.address()
    );
    let (status, body) = hub.call("POST", &path).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "success"),
        "{path}"
    );
}

/// Publishes over `/sendMessage?topic=` and returns the message id and the
/// `X-Herald-Subscribers` count.
async fn publish_on(hub: &TestHub, topic: &str, body: &str) -> (u64, usize) {
    let response = hub
        .http
        .post(format!("{}/sendMessage?topic={topic}", hub.url))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "publishing on {topic}");
    let header =
        |name: &str| -> u64 { response.headers()[name].to_str().unwrap().parse().unwrap() };
    (
        header("x-herald-message-id"),
        header("x-herald-subscribers") as usize,
    )
}

/// Who message `id` was queued for.
fn queued_for(hub: &TestHub, id: u64) -> BTreeSet<String> {
    hub.hub()
        .message(id)
        .unwrap()
        .deliveries()
        .iter()
        .map(|d| d.subscriber.to_string())
        .collect()
}

fn set<const N: usize>(receivers: [&Receiver; N]) -> BTreeSet<String> {
    receivers.iter().map(|r| r.address()).collect()
}

#[tokio::test]
async fn each_wildcard_routes_as_nats_does() {
    let hub = start_hub(|_| {}).await;
    let mut star = Receiver::start().await;
    let mut rest = Receiver::start().await;
    let mut exact = Receiver::start().await;
    let mut first_any = Receiver::start().await;
    let mut everything = Receiver::start().await;
    register_with(&hub, &star, "orders.*").await;
    register_with(&hub, &rest, "orders.%3E").await;
    register_with(&hub, &exact, "orders.created").await;
    register_with(&hub, &first_any, "*.created,payments.%3E").await;
    hub.register(&everything.address()).await;

    let cases = [
        (
            "orders.created",
            set([&star, &rest, &exact, &first_any, &everything]),
        ),
        ("orders.updated", set([&star, &rest, &everything])),
        ("orders.created.eu", set([&rest, &everything])),
        ("orders", set([&everything])),
        ("payments.card.settled", set([&first_any, &everything])),
        ("users.created", set([&first_any, &everything])),
    ];
    for (topic, expected) in &cases {
        let (id, subscribers) = publish_on(&hub, topic, topic).await;
        assert_eq!(subscribers, expected.len(), "{topic}");
        assert_eq!(&queued_for(&hub, id), expected, "{topic}");
    }
    // A message without a topic reaches only the subscriber without topics.
    let plain = hub.publish("no topic", None).await;
    assert_eq!(queued_for(&hub, plain), set([&everything]));

    // What was queued is what arrived, each delivery saying its topic.
    for (receiver, count) in [
        (&mut star, 2),
        (&mut rest, 3),
        (&mut exact, 1),
        (&mut first_any, 3),
        (&mut everything, 7),
    ] {
        for _ in 0..count {
            let got = receiver.recv().await;
            let body = String::from_utf8_lossy(&got.body).into_owned();
            let topic = got
                .headers
                .get("x-herald-topic")
                .map(|v| v.to_str().unwrap());
            match body.as_str() {
                "no topic" => assert_eq!(topic, None),
                body => assert_eq!(topic, Some(body), "the delivery names its topic"),
            }
        }
    }
    hub.until_delivered(plain, 1).await;
    assert!(star.drain().is_empty() && exact.drain().is_empty());
}

#[tokio::test]
async fn the_topic_comes_from_the_query_a_header_or_ce_type() {
    let hub = start_hub(|_| {}).await;
    let orders = Receiver::start().await;
    register_with(&hub, &orders, "orders.%3E").await;
    let send = |headers: Vec<(&'static str, &'static str)>, query: &'static str| {
        let mut request = hub
            .http
            .post(format!("{}/sendMessage{query}", hub.url))
            .body("x");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let reached = |response: &reqwest::Response| -> String {
        response.headers()["x-herald-subscribers"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let by_header = send(vec![("x-herald-topic", "orders.created")], "")
        .await
        .unwrap();
    assert_eq!(reached(&by_header), "1");
    let by_ce_type = send(vec![("ce-type", "orders.shipped")], "").await.unwrap();
    assert_eq!(reached(&by_ce_type), "1");
    // A CloudEvents type that is no topic is not taken for one, and nothing fails.
    let odd_type = send(vec![("ce-type", "com.example/orders:v1")], "")
        .await
        .unwrap();
    assert_eq!(odd_type.status(), StatusCode::OK);
    assert_eq!(reached(&odd_type), "0");
    // The query and the header win over ce-type; query and header must agree.
    let both = send(vec![("ce-type", "other")], "?topic=orders.created")
        .await
        .unwrap();
    assert_eq!(reached(&both), "1");
    let header_first = send(
        vec![("x-herald-topic", "orders.paid"), ("ce-type", "other")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(reached(&header_first), "1");
    let published = hub.hub().totals().messages;
    let differ = send(vec![("x-herald-topic", "orders.x")], "?topic=orders.y")
        .await
        .unwrap();
    assert_eq!(differ.status(), StatusCode::BAD_REQUEST);
    assert!(differ.text().await.unwrap().contains("differ"));
    assert_eq!(hub.hub().totals().messages, published, "nothing published");
    let topics: Vec<String> = hub
        .hub()
        .topics()
        .iter()
        .map(|t| t.topic.to_string())
        .collect();
    assert_eq!(topics, ["orders.paid", "orders.created", "orders.shipped"]);
}

#[tokio::test]
async fn refused_topics_publish_nothing_and_say_what_is_expected() {
    let hub = start_hub(|_| {}).await;
    let long = "a".repeat(257);
    for (topic, says) in [
        ("orders..created", "empty token"),
        ("orders.*", "only subscriptions"),
        ("orders.%3E", "only subscriptions"),
        ("orders%20created", "' '"),
        (long.as_str(), "257 bytes"),
    ] {
        for path in ["/sendMessage", "/api/v1/messages"] {
            let response = hub
                .http
                .post(format!("{}{path}?topic={topic}", hub.url))
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {topic}");
            let text = response.text().await.unwrap();
            assert!(text.contains(says), "{path} {topic}: {text}");
            assert!(text.contains("e.g. orders.created"), "{text}");
        }
    }
    assert_eq!(hub.hub().totals().messages, 0);
    assert_eq!(hub.hub().logged_messages(), 0);
}

#[tokio::test]
async fn bad_patterns_register_nothing() {
    let hub = start_hub(|_| {}).await;
    let receiver = Receiver::start().await;
    let too_many: Vec<String> = (0..65).map(|n| format!("t{n}")).collect();
    let too_many = too_many.join(",");
    for (topics, says) in [
        ("orders.%3E.x", "before its last token"),
        ("orders.cre*", "whole token"),
        ("a..b", "empty token"),
        ("ok,bad%20one", "' '"),
        (too_many.as_str(), "65 topic patterns"),
    ] {
        let path = format!(
            "/registerAndKeepAlive?address={}&topics={topics}",
            receiver.address()
        );
        let (status, body) = hub.call("POST", &path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{topics}: {body}");
        assert!(body.contains(says), "{topics}: {body}");
    }
    let (status, body) = hub
        .call_json(
            "POST",
            "/api/v1/subscribers",
            json!({"address": receiver.address(), "topics": ["fine", "not fine"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not fine"),
        "{body}"
    );
    assert!(hub.listed().await.is_empty());
}

#[tokio::test]
async fn a_keep_alive_keeps_the_topics_and_a_new_list_replaces_them() {
    let hub = start_hub(|_| {}).await;
    let receiver = Receiver::start().await;
    let topics_of = |hub: &TestHub| -> Vec<String> {
        let view = hub.hub().subscriber(&receiver.address()).unwrap();
        view.topics.iter().map(ToString::to_string).collect()
    };
    register_with(&hub, &receiver, "orders.*,payments.%3E").await;
    assert_eq!(topics_of(&hub), ["orders.*", "payments.>"]);
    // A plain keep-alive, as every seed client sends: the subscription stays as narrow.
    hub.register(&receiver.address()).await;
    assert_eq!(topics_of(&hub), ["orders.*", "payments.>"]);
    assert_eq!(publish_on(&hub, "users.created", "u").await.1, 0);
    // A new list replaces the old one.
    register_with(&hub, &receiver, "users.*").await;
    assert_eq!(topics_of(&hub), ["users.*"]);
    assert_eq!(publish_on(&hub, "users.created", "u").await.1, 1);
    assert_eq!(publish_on(&hub, "orders.created", "o").await.1, 0);
    // Through the API the same; an empty list is every message again.
    let (status, body) = hub
        .call_json(
            "POST",
            "/api/v1/subscribers",
            json!({"address": receiver.address(), "topics": ["orders.>"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["topics"], json!(["orders.>"]));
    let (_, body) = hub
        .call_json(
            "POST",
            "/api/v1/subscribers",
            json!({"address": receiver.address()}),
        )
        .await;
    assert_eq!(body["topics"], json!(["orders.>"]), "a refresh keeps them");
    register_with(&hub, &receiver, "").await;
    assert!(topics_of(&hub).is_empty());
    assert_eq!(publish_on(&hub, "anything.at.all", "a").await.1, 1);
    assert_eq!(
        hub.hub()
            .message(hub.publish("plain", None).await)
            .unwrap()
            .subscribers,
        1
    );
}

#[tokio::test]
async fn the_api_filters_lists_and_previews_by_topic() {
    let hub = start_hub(|_| {}).await;
    let orders = Receiver::start().await;
    let everything = Receiver::start().await;
    register_with(&hub, &orders, "orders.*").await;
    hub.register(&everything.address()).await;
    let (created, _) = publish_on(&hub, "orders.created", "c").await;
    let (_, _) = publish_on(&hub, "billing.invoice-paid", "b").await;
    let (updated, _) = publish_on(&hub, "orders.updated", "u").await;
    hub.publish("plain", None).await;

    let (status, page) = hub
        .call_json("GET", "/api/v1/messages?topic=orders.*", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [updated, created]);
    assert_eq!(page["messages"][0]["topic"], "orders.updated");
    let (_, all) = hub
        .call_json("GET", "/api/v1/messages?topic=%3E", Value::Null)
        .await;
    assert_eq!(
        all["messages"].as_array().unwrap().len(),
        3,
        "every message with a topic"
    );
    let (status, _) = hub
        .call_json("GET", "/api/v1/messages?topic=a..b", Value::Null)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, topics) = hub.call_json("GET", "/api/v1/topics", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(topics[0]["topic"], "orders.updated");
    assert_eq!(topics[0]["last_message_id"], updated);
    assert_eq!(topics[0]["subscribers"], 2);
    assert_eq!(topics[0]["matching"], json!([orders.address()]));
    assert_eq!(topics[1]["topic"], "billing.invoice-paid");
    assert_eq!(topics[1]["matching"], json!([]));

    let (_, reach) = hub
        .call_json("GET", "/api/v1/reach?topic=orders.shipped", Value::Null)
        .await;
    assert_eq!(reach["subscribers"], 2);
    assert_eq!(reach["everyone"], json!([everything.address()]));
    assert_eq!(reach["matching"], json!([orders.address()]));
    let (_, reach) = hub.call_json("GET", "/api/v1/reach", Value::Null).await;
    assert_eq!(reach["subscribers"], 1);
    let (status, _) = hub
        .call_json("GET", "/api/v1/reach?topic=orders.*", Value::Null)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a pattern is no topic");

    let (_, metrics) = hub.call("GET", "/metrics").await;
    assert!(
        metrics.contains("herald_topic_messages_total{topic=\"orders.created\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("herald_topic_messages_total{topic=\"other\"} 0"));

    let (_, subscribers) = hub
        .call_json("GET", "/api/v1/subscribers", Value::Null)
        .await;
    let topics: Vec<&Value> = subscribers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["topics"])
        .collect();
    assert!(topics.contains(&&json!(["orders.*"])) && topics.contains(&&json!([])));
}

#[tokio::test]
async fn metrics_name_the_busiest_topics_and_count_the_rest_as_other() {
    let hub = start_hub(|_| {}).await;
    for n in 0..105 {
        publish_on(&hub, &format!("t{n}"), "x").await;
    }
    publish_on(&hub, "t104", "x").await;
    let (_, metrics) = hub.call("GET", "/metrics").await;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("herald_topic_messages_total{"))
        .collect();
    assert_eq!(series.len(), 101, "{series:?}");
    assert!(series.contains(&"herald_topic_messages_total{topic=\"t104\"} 2"));
    assert!(series.contains(&"herald_topic_messages_total{topic=\"other\"} 5"));

    // A topic spelt "other" joins the rest rather than make a second such series.
    for _ in 0..3 {
        publish_on(&hub, "other", "x").await;
    }
    let (_, metrics) = hub.call("GET", "/metrics").await;
    let others: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("herald_topic_messages_total{topic=\"other\"}"))
        .collect();
    // "other" (3) is now among the 100 busiest and pushes one more of the single
    // messages out: 6 singles and its own 3.
    assert_eq!(others, ["herald_topic_messages_total{topic=\"other\"} 9"]);
}

#[tokio::test]
async fn events_carry_the_topic_and_a_resend_follows_the_topic() {
    let hub = start_hub(|_| {}).await;
    let mut orders = Receiver::start().await;
    register_with(&hub, &orders, "orders.*").await;
    let mut response = hub
        .http
        .get(format!("{}/api/v1/events", hub.url))
        .send()
        .await
        .unwrap();
    let (id, _) = publish_on(&hub, "orders.created", "c").await;
    let mut seen = String::new();
    while !(seen.contains("event: published") && seen.contains("event: delivery")) {
        let chunk = tokio::time::timeout(crate::utils::PATIENCE, response.chunk())
            .await
            .expect("events within patience")
            .unwrap()
            .expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let topics = seen.matches(r#""topic":"orders.created""#).count();
    assert_eq!(topics, 2, "both events carry it: {seen}");
    orders.recv().await;

    // Resent to all, it goes to those its topic reaches now.
    let late = Receiver::start().await;
    register_with(&hub, &late, "orders.%3E").await;
    let other = Receiver::start().await;
    register_with(&hub, &other, "billing.*").await;
    let (status, body) = hub
        .call_json(
            "POST",
            &format!("/api/v1/messages/{id}/resend"),
            Value::Null,
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(body["queued"], 2);
    let queued: Vec<String> = queued_for(&hub, id).into_iter().collect();
    assert_eq!(queued.len(), 2, "{queued:?}");
    let resent: BTreeSet<String> = hub.hub().message(id).unwrap().deliveries()[1..]
        .iter()
        .map(|d| d.subscriber.to_string())
        .collect();
    assert_eq!(resent, set([&orders, &late]));
}

#[tokio::test]
async fn topics_can_be_changed_without_a_keep_alive() {
    let hub = start_hub(|_| {}).await;
    let receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let seen_before = hub.hub().subscriber(&receiver.address()).unwrap().last_seen;
    let encoded: String =
        url::form_urlencoded::byte_serialize(receiver.address().as_bytes()).collect();
    let path = format!("/api/v1/subscribers/{encoded}/topics");
    let (status, body) = hub.call_json("PUT", &path, json!(["orders.*"])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["topics"], json!(["orders.*"]));
    assert_eq!(publish_on(&hub, "users.created", "u").await.1, 0);
    assert_eq!(publish_on(&hub, "orders.created", "o").await.1, 1);
    let view = hub.hub().subscriber(&receiver.address()).unwrap();
    assert_eq!(view.last_seen, seen_before, "not a keep-alive");

    let (status, body) = hub.call_json("PUT", &path, json!(["orders..x"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("empty token"),
        "{body}"
    );
    let (status, _) = hub
        .call_json("PUT", "/api/v1/subscribers/nobody%3A1/topics", json!([]))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = hub.call_json("PUT", &path, json!([])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["topics"], json!([]));
    assert_eq!(publish_on(&hub, "users.created", "u").await.1, 1);
}
