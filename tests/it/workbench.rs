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

async fn burst_until_stopped(hub: &crate::utils::TestHub, id: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + crate::utils::PATIENCE;
    loop {
        let (status, progress) = hub
            .call_json("GET", &format!("/api/v1/bursts/{id}"), json!(null))
            .await;
        assert_eq!(status, StatusCode::OK, "{progress}");
        if progress["state"] != "running" {
            return progress;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {progress}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_burst_publishes_its_template_rendered_per_message_at_its_rate() {
    let mut receiver = Receiver::start().await;
    let hub = start_hub(|_| {}).await;
    hub.register(&receiver.address()).await;
    let (status, started) = hub
        .call_json(
            "POST",
            "/api/v1/bursts",
            json!({
                "count": 200,
                "rate": 100.0,
                "template": r#"{"n": {{ seq }}, "id": "{{ uuid() }}"}"#,
                "content_type": "application/json",
                "topic": "load.test",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["state"], "running");
    let id = started["id"].as_u64().unwrap();
    let began = std::time::Instant::now();
    let mut ids = std::collections::HashSet::new();
    for n in 1..=200 {
        let received = receiver.recv().await;
        let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
        assert_eq!(body["n"], n, "in order");
        assert!(ids.insert(body["id"].as_str().unwrap().to_owned()));
        assert_eq!(received.content_type(), Some("application/json"));
    }
    // Paced: 200 at 100 a second take about two seconds, not a moment.
    assert!(
        began.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        began.elapsed()
    );
    let done = burst_until_stopped(&hub, id).await;
    assert_eq!(done["state"], "done");
    assert_eq!(
        (done["sent"].as_u64(), done["accepted"].as_u64()),
        (Some(200), Some(200))
    );
    let deadline = std::time::Instant::now() + crate::utils::PATIENCE;
    loop {
        let (_, progress) = hub
            .call_json("GET", &format!("/api/v1/bursts/{id}"), json!(null))
            .await;
        if progress["delivered"] == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{progress}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, page) = hub
        .call_json("GET", "/api/v1/messages?limit=1", json!(null))
        .await;
    assert_eq!(page["messages"][0]["source"], format!("burst {id}"));
    assert_eq!(page["messages"][0]["topic"], "load.test");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_burst_can_be_cancelled_and_bad_ones_are_refused() {
    let hub = start_hub(|_| {}).await;
    let (status, slow) = hub
        .call_json(
            "POST",
            "/api/v1/bursts",
            json!({"count": 100000, "rate": 20.0, "template": "tick {{ seq }}"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{slow}");
    let id = slow["id"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, cancelled) = hub
        .call_json("DELETE", &format!("/api/v1/bursts/{id}"), json!(null))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let sent = cancelled["sent"].as_u64().unwrap();
    assert!((1..100).contains(&sent), "{sent}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, later) = hub
        .call_json("GET", &format!("/api/v1/bursts/{id}"), json!(null))
        .await;
    assert_eq!(later["sent"], sent, "nothing sent after the cancel");

    for (body, says) in [
        (json!({"count": 0, "template": "x"}), "count must be"),
        (json!({"count": 2000000, "template": "x"}), "count must be"),
        (
            json!({"count": 1, "rate": 0.0, "template": "x"}),
            "rate must be",
        ),
        (
            json!({"count": 1, "rate": 1e9, "template": "x"}),
            "rate must be",
        ),
        (json!({"count": 1, "template": "{{ seq "}), "does not parse"),
        (
            json!({"count": 1, "template": "x", "topic": "a..b"}),
            "topic",
        ),
    ] {
        let (status, answer) = hub.call_json("POST", "/api/v1/bursts", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    // A template that fails part way stops the burst and says why.
    let (_, failing) = hub
        .call_json(
            "POST",
            "/api/v1/bursts",
            json!({"count": 5, "template": "{% if seq == 3 %}{{ missing }}{% endif %}ok"}),
        )
        .await;
    let stopped = burst_until_stopped(&hub, failing["id"].as_u64().unwrap()).await;
    assert_eq!(stopped["state"], "failed", "{stopped}");
    assert_eq!(stopped["sent"], 2);
    assert!(
        stopped["error"].as_str().unwrap().contains("message 3"),
        "{stopped}"
    );

    // No more than eight at once.
    let mut running = Vec::new();
    for _ in 0..8 {
        let (status, burst) = hub
            .call_json(
                "POST",
                "/api/v1/bursts",
                json!({"count": 100000, "rate": 1.0, "template": "x"}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        running.push(burst["id"].as_u64().unwrap());
    }
    let (status, answer) = hub
        .call_json(
            "POST",
            "/api/v1/bursts",
            json!({"count": 1, "template": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    for id in running {
        hub.call("DELETE", &format!("/api/v1/bursts/{id}")).await;
    }
    let (status, _) = hub.call("GET", "/api/v1/bursts/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_starred_message_stays_in_the_log_and_in_the_store() {
    let dir = TempDir::new("pins");
    let path = dir.path().to_owned();
    let hub = start_hub(|config| {
        config.data_dir = Some(path);
        config.log_capacity = 3;
        config.retain = "2,1GiB,7d".parse().unwrap();
    })
    .await;
    let starred = hub.publish("keep me", None).await;
    let (status, patched) = hub
        .call_json(
            "PATCH",
            &format!("/api/v1/messages/{starred}"),
            json!({"pinned": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["pinned"], true);
    let mut others = Vec::new();
    for n in 0..6 {
        others.push(hub.publish(format!("other {n}"), None).await);
    }
    // Memory holds the newest three and the starred one.
    let logged: Vec<u64> = hub.hub().messages(None, 100).iter().map(|m| m.id).collect();
    assert_eq!(logged, [others[5], others[4], others[3], starred]);
    // The store keeps the newest two and the starred one.
    let deadline = std::time::Instant::now() + crate::utils::PATIENCE;
    loop {
        let (_, store) = hub.call_json("GET", "/api/v1/store", json!(null)).await;
        if store["messages"] == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{store}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, kept) = hub
        .call_json("GET", &format!("/api/v1/messages/{starred}"), json!(null))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kept["body"], "keep me");
    // Unstarred, it leaves memory at once (it is past the budgets).
    let (status, _) = hub
        .call_json(
            "PATCH",
            &format!("/api/v1/messages/{starred}"),
            json!({"pinned": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(hub.hub().message(starred).is_none());
    for (body, expected) in [
        (json!({"pinned": "yes"}), StatusCode::BAD_REQUEST),
        (json!({"starred": true}), StatusCode::BAD_REQUEST),
    ] {
        let (status, answer) = hub
            .call_json(
                "PATCH",
                &format!("/api/v1/messages/{}", others[5]),
                body.clone(),
            )
            .await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let (status, _) = hub
        .call_json("PATCH", "/api/v1/messages/99999", json!({"pinned": true}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    hub.shutdown().await;
}

#[tokio::test]
async fn no_more_than_a_hundred_messages_are_starred() {
    let hub = start_hub(|_| {}).await;
    let mut ids = Vec::new();
    for n in 0..=herald::hub::MAX_PINNED {
        ids.push(hub.publish(format!("{n}"), None).await);
    }
    for id in &ids[..herald::hub::MAX_PINNED] {
        hub.hub().pin_message(*id, true).unwrap().await.unwrap();
    }
    let (status, answer) = hub
        .call_json(
            "PATCH",
            &format!("/api/v1/messages/{}", ids[herald::hub::MAX_PINNED]),
            json!({"pinned": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("unpin one"));
    hub.shutdown().await;
}

#[tokio::test]
async fn two_payloads_compare_line_by_line() {
    let hub = start_hub(|_| {}).await;
    let a = hub
        .publish(
            r#"{"id":1,"status":"new","total":10}"#,
            Some("application/json"),
        )
        .await;
    let b = hub
        .publish(
            r#"{"id":1,"status":"paid","total":10}"#,
            Some("application/json"),
        )
        .await;
    let (status, diff) = hub
        .call_json("GET", &format!("/api/v1/diff?a={a}&b={b}"), json!(null))
        .await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(diff["identical"], false);
    let changed: Vec<(String, String)> = diff["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["op"] != "same")
        .map(|r| {
            (
                r["op"].as_str().unwrap().into(),
                r["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        [
            ("removed".into(), r#"  "status": "new","#.into()),
            ("added".into(), r#"  "status": "paid","#.into())
        ]
    );
    let (status, same) = hub
        .call_json("GET", &format!("/api/v1/diff?a={a}&b={a}"), json!(null))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["identical"], true);
    let (status, _) = hub.call("GET", &format!("/api/v1/diff?a={a}&b=999")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = hub.call("GET", &format!("/api/v1/diff?a={a}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    hub.shutdown().await;
}

#[tokio::test]
async fn test_subscribers_answer_as_told_and_change_while_they_run() {
    let hub = start_hub(|config| {
        config.retry_schedule.0 = Vec::new();
        config.delivery_timeout = Duration::from_millis(300);
        // Keep-alives every 200 ms: one after the 410 would show.
        config.ttl = Duration::from_millis(600);
    })
    .await;
    let (status, added) = hub
        .call_json(
            "POST",
            "/api/v1/test-subscribers",
            json!({"status": 202, "gone_after": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let id = added["id"].as_u64().unwrap();
    let address = added["address"].as_str().unwrap().to_owned();
    assert!(
        hub.listed().await.contains(&address),
        "registered like a real one"
    );

    let first = hub.publish(r#"{"n":1}"#, Some("application/json")).await;
    let delivered = hub.until_delivered(first, 1).await;
    assert_eq!(
        delivered.deliveries()[0]
            .state
            .outcome()
            .unwrap()
            .http_status(),
        Some(202)
    );

    // Changed live: now it answers 503.
    let (status, changed) = hub
        .call_json(
            "PATCH",
            &format!("/api/v1/test-subscribers/{id}"),
            json!({"status": 503}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (changed["status"].as_u64(), changed["gone_after"].as_u64()),
        (Some(503), Some(3))
    );
    let second = hub.publish("two", None).await;
    let failed = hub.until_failed(second, 1).await;
    assert_eq!(
        failed.deliveries()[0]
            .state
            .outcome()
            .unwrap()
            .http_status(),
        Some(503)
    );

    // Its fourth request is past "gone after 3": 410, and the hub lets it go.
    hub.publish("three", None).await;
    hub.publish("four", None).await;
    crate::utils::eventually("it unsubscribed by answering 410", || {
        hub.hub().subscriber_count() == 0
    })
    .await;
    // And stays unsubscribed: its keep-alive does not bring it back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hub.hub().subscriber_count(), 0);
    let (_, received) = hub
        .call_json(
            "GET",
            &format!("/api/v1/test-subscribers/{id}/received"),
            json!(null),
        )
        .await;
    let statuses: Vec<u64> = received
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [410, 503, 503, 202], "newest first");
    assert_eq!(received[3]["body"], r#"{"n":1}"#);
    assert_eq!(received[3]["message_id"], first);

    // One that never answers: the delivery times out.
    let (_, hanging) = hub
        .call_json("POST", "/api/v1/test-subscribers", json!({"hang": true}))
        .await;
    let hung = hub.publish("hello?", None).await;
    let timed_out = hub.until_failed(hung, 1).await;
    let error = timed_out.deliveries()[0]
        .state
        .outcome()
        .unwrap()
        .error()
        .unwrap()
        .to_string();
    assert!(error.contains("no answer within"), "{error}");
    let hanging_id = hanging["id"].as_u64().unwrap();
    let (status, _) = hub
        .call("DELETE", &format!("/api/v1/test-subscribers/{hanging_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        hub.hub().subscriber_count(),
        0,
        "removed means deregistered"
    );

    for (body, expected) in [
        (json!({"status": 42}), StatusCode::BAD_REQUEST),
        (json!({"fail_percent": 101}), StatusCode::BAD_REQUEST),
        (json!({"delay_ms": 3_600_000}), StatusCode::BAD_REQUEST),
        (json!({"sttaus": 200}), StatusCode::BAD_REQUEST),
    ] {
        let (status, answer) = hub
            .call_json("POST", "/api/v1/test-subscribers", body.clone())
            .await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let (status, _) = hub.call("GET", "/api/v1/test-subscribers/99").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, all) = hub
        .call_json("GET", "/api/v1/test-subscribers", json!(null))
        .await;
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "the one that said 410 is still listed"
    );
    assert_eq!(all[0]["state"], "failed");
    assert!(all[0]["error"].as_str().unwrap().contains("410"), "{all}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_test_subscriber_the_target_policy_refuses_says_so() {
    let hub = start_hub(|config| config.deny_targets = vec!["0.0.0.0/0".parse().unwrap()]).await;
    let (status, answer) = hub
        .call_json("POST", "/api/v1/test-subscribers", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("--deny-target"),
        "{answer}"
    );
    let (_, all) = hub
        .call_json("GET", "/api/v1/test-subscribers", json!(null))
        .await;
    assert!(all.as_array().unwrap().is_empty(), "nothing left behind");
    hub.shutdown().await;
}
