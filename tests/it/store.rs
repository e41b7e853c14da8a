use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::Child;

use crate::binary::{herald, listening_url};
use crate::utils::{PATIENCE, Receiver, TempDir, dead_address, eventually, start_hub};

/// `herald --headless` keeping its store in `dir`, on a free port.
async fn start_durable(dir: &TempDir, extra: &[&str]) -> (Child, String) {
    let mut child = herald()
        .args([
            "--headless",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            dir.arg(),
        ])
        .args(extra)
        .spawn()
        .unwrap();
    let url = listening_url(&mut child).await;
    (child, url)
}

/// SIGKILL, and waits for the process to be gone: nothing gets to flush or say goodbye.
async fn kill(mut child: Child) {
    child.kill().await.unwrap();
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// Publishes `body` through the JSON API; the id it was acknowledged with.
async fn publish(http: &reqwest::Client, url: &str, body: String) -> Option<u64> {
    let response = http
        .post(format!("{url}/api/v1/messages"))
        .body(body)
        .send()
        .await
        .ok()?;
    if response.status() != StatusCode::ACCEPTED {
        return None;
    }
    let json: Value = response.json().await.ok()?;
    json["id"].as_u64()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.json().await.unwrap()
}

async fn register(http: &reqwest::Client, url: &str, address: &str) {
    let response = http
        .post(format!("{url}/registerAndKeepAlive?address={address}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

fn message_id(received: &crate::utils::Received) -> u64 {
    received.headers["x-herald-message-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn messages_for_a_subscriber_that_is_down_reach_it_after_a_kill_and_a_restart() {
    let dir = TempDir::new("kill-down");
    let http = client();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let flags = ["--signing-secret", secret, "--retry-schedule", "5s"];
    let (child, url) = start_durable(&dir, &flags).await;
    let subscriber = dead_address().await;
    register(&http, &url, &subscriber).await;
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let id = publish(&http, &url, format!("message {n}")).await.unwrap();
        let json = get_json(&http, &format!("{url}/api/v1/messages/{id}")).await;
        acknowledged.push((id, json["webhook_id"].as_str().unwrap().to_owned()));
    }
    kill(child).await;

    let mut receiver = Receiver::at(subscriber.parse().unwrap()).await;
    let (child, url) = start_durable(&dir, &flags).await;
    for (n, (id, webhook_id)) in acknowledged.iter().enumerate() {
        let received = receiver.recv().await;
        assert_eq!(message_id(&received), *id, "in publish order");
        assert_eq!(received.body, format!("message {n}"));
        // The same id as before the kill, so that a receiver can tell a repeat.
        assert_eq!(received.headers["webhook-id"], webhook_id.as_str());
    }
    // And the subscriber is still registered, with its keep-alive's age going on.
    let listed = http
        .get(format!("{url}/listSubscribers"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains(&subscriber), "{listed}");
    kill(child).await;
}

#[tokio::test]
async fn a_kill_under_load_loses_no_acknowledged_message() {
    let dir = TempDir::new("kill-load");
    let http = client();
    let mut receiver = Receiver::start().await;
    let (child, url) = start_durable(&dir, &[]).await;
    register(&http, &url, &receiver.address()).await;

    // About 2,000 publishes a second from 8 publishers, each recording what was
    // acknowledged, until the hub is killed under them.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let (http, url, acknowledged) = (http.clone(), url.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(4));
                for n in 0.. {
                    tick.tick().await;
                    match publish(&http, &url, format!("{p}-{n}")).await {
                        Some(id) => {
                            acknowledged.lock().insert(id);
                        }
                        None => break,
                    }
                }
            })
        })
        .collect();
    eventually("a few hundred messages are acknowledged", || {
        acknowledged.lock().len() >= 600
    })
    .await;
    kill(child).await;
    for publisher in publishers {
        tokio::time::timeout(PATIENCE, publisher)
            .await
            .unwrap()
            .unwrap();
    }
    let acknowledged = acknowledged.lock().clone();

    let (child, _url) = start_durable(&dir, &[]).await;
    let mut received = BTreeSet::new();
    let mut duplicates = 0;
    let deadline = Instant::now() + PATIENCE * 3;
    while !acknowledged.is_subset(&received) {
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged messages never arrived",
            acknowledged.difference(&received).count(),
            acknowledged.len()
        );
        let id = message_id(&receiver.recv().await);
        if !received.insert(id) {
            duplicates += 1;
        }
    }
    // At least once: a delivery cut off by the kill may come twice, but only those.
    assert!(duplicates < 64, "{duplicates} duplicates");
    kill(child).await;
}

#[tokio::test]
async fn retention_keeps_the_newest_messages_and_those_still_to_deliver() {
    let dir = TempDir::new("retain");
    let http = client();
    let flags = ["--retain", "5,1GiB,7d", "--retry-schedule", "60s"];
    let (child, url) = start_durable(&dir, &flags).await;
    // Down, and waiting for the one message on its topic.
    let subscriber = dead_address().await;
    let response = http
        .post(format!(
            "{url}/registerAndKeepAlive?address={subscriber}&topics=kept"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = http
        .post(format!("{url}/api/v1/messages?topic=kept"))
        .body("still to deliver")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(
            publish(&http, &url, format!("to nobody {n}"))
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let store = get_json(&http, &format!("{url}/api/v1/store")).await;
        assert_eq!(store["durable"], true);
        if store["messages"] == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "never pruned: {store}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill(child).await;

    let (child, url) = start_durable(&dir, &flags).await;
    let page = get_json(&http, &format!("{url}/api/v1/messages?limit=100")).await;
    let kept: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    let mut expected: Vec<u64> = ids[7..].iter().rev().copied().collect();
    expected.push(1);
    assert_eq!(kept, expected);
    kill(child).await;
}

#[tokio::test]
async fn retention_by_age_and_by_size() {
    let http = client();
    let dir = TempDir::new("retain-age");
    let (child, url) = start_durable(&dir, &["--retain", "1000,1GiB,1s"]).await;
    for n in 0..3 {
        publish(&http, &url, format!("old {n}")).await.unwrap();
    }
    eventually_store(
        &http,
        &url,
        "every message older than a second is pruned",
        |n| n == 0,
    )
    .await;
    kill(child).await;

    let dir = TempDir::new("retain-size");
    let (child, url) = start_durable(&dir, &["--retain", "1000,256KiB,7d"]).await;
    for n in 0..40 {
        publish(&http, &url, format!("{n:>20000}")).await.unwrap();
    }
    // 40 payloads of 20 KB are 800 KB: the store keeps only what fits in 256 KiB.
    eventually_store(&http, &url, "the oldest are pruned to fit", |n| {
        (1..20).contains(&n)
    })
    .await;
    kill(child).await;
}

/// Which limit governs what is said plainly: `--retain` bounds the store, memory is
/// bounded apart, and `GET /api/v1/store` shows both, so that a listing longer than the
/// history keeps is explained by the API itself.
#[tokio::test]
async fn the_store_says_which_limit_governs_what() {
    let http = client();
    let dir = TempDir::new("retain-said");
    let (child, url) = start_durable(&dir, &["--retain", "50,1GiB,7d"]).await;
    for n in 0..200 {
        publish(&http, &url, format!("to nobody {n}"))
            .await
            .unwrap();
    }
    eventually_store(&http, &url, "the store keeps its 50", |n| n == 50).await;
    let store = get_json(&http, &format!("{url}/api/v1/store")).await;
    assert_eq!(store["retain"]["messages"], 50, "{store}");
    assert_eq!(store["retain"]["age_seconds"], 7 * 24 * 60 * 60, "{store}");
    assert_eq!(store["memory_capacity"], 10_000, "{store}");
    assert_eq!(store["in_memory"], 200, "{store}");
    // What the listing gives is what the two say: memory's 200.
    let page = get_json(&http, &format!("{url}/api/v1/messages?limit=1000")).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 200);
    kill(child).await;
}

async fn eventually_store(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    holds: impl Fn(u64) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let store = get_json(http, &format!("{url}/api/v1/store")).await;
        if holds(store["messages"].as_u64().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out until {what}: {store}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn subscribers_come_back_with_their_settings_but_not_past_their_lease() {
    let dir = TempDir::new("subscribers");
    let http = client();
    let (child, url) = start_durable(&dir, &[]).await;
    let staying = dead_address().await;
    let leaving = dead_address().await;
    for (address, lease) in [(&staying, 600), (&leaving, 1)] {
        let response = http
            .post(format!("{url}/api/v1/subscribers"))
            .json(&serde_json::json!({
                "address": address,
                "lease_seconds": lease,
                "topics": ["orders.*"],
            }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    let before = get_json(&http, &format!("{url}/api/v1/subscribers")).await;
    kill(child).await;
    // The short lease runs out while the hub is down.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let (child, url) = start_durable(&dir, &[]).await;
    let after = get_json(&http, &format!("{url}/api/v1/subscribers")).await;
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    let was = before
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == staying.as_str())
        .unwrap();
    let now = &after[0];
    assert_eq!(now["address"], staying.as_str());
    assert_eq!(now["topics"], serde_json::json!(["orders.*"]));
    assert_eq!(now["lease_seconds"], 600.0);
    // Registered when it was, and seen last when it was: its age went on.
    assert_eq!(now["registered_at"], was["registered_at"]);
    assert_eq!(now["last_seen"], was["last_seen"]);
    kill(child).await;
}

#[tokio::test]
async fn a_data_directory_that_cannot_be_used_stops_the_start_with_what_to_do() {
    let dir = TempDir::new("bad");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("herald.db"), vec![0x5a; 8192]).unwrap();
    let newer = dir.path().join("newer");
    std::fs::create_dir_all(&newer).unwrap();
    rusqlite::Connection::open(newer.join("herald.db"))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let cases = [
        (file.clone(), "it is a file, not a directory"),
        (corrupt, "is not a readable Herald store"),
        (newer, "written by a newer Herald (schema version 99"),
    ];
    for (path, expected) in cases {
        let output = tokio::time::timeout(
            PATIENCE,
            herald()
                .args(["--headless", "--bind", "127.0.0.1:0", "--data-dir"])
                .arg(&path)
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{path:?}: {stderr}");
        assert!(stderr.contains(expected), "{path:?}: {stderr}");
        assert!(stderr.contains("--data-dir"), "says what to do: {stderr}");
    }

    // In use by another Herald, which is named.
    let shared = TempDir::new("in-use");
    let (child, _url) = start_durable(&shared, &[]).await;
    let output = herald()
        .args([
            "--headless",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            shared.arg(),
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let pid = child.id().unwrap();
    assert!(
        stderr.contains(&format!("in use by another Herald (process {pid})")),
        "{stderr}"
    );
    kill(child).await;

    // Memory and a directory at once is a contradiction.
    let output = herald()
        .args(["--headless", "--in-memory", "--data-dir", shared.arg()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[tokio::test]
async fn the_api_pages_into_the_store_and_forgets_it() {
    let dir = TempDir::new("paging");
    let path = dir.path().to_owned();
    let hub = start_hub(|config| {
        config.data_dir = Some(path);
        config.log_capacity = 5;
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(hub.publish(format!("m{n}"), None).await);
    }
    // Memory holds 5; the other 7 come from the store, newest first, in one page.
    let page = get_json(&hub.http, &format!("{}/api/v1/messages?limit=100", hub.url)).await;
    let listed: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, ids.iter().rev().copied().collect::<Vec<_>>());
    let oldest = get_json(
        &hub.http,
        &format!("{}/api/v1/messages/{}", hub.url, ids[0]),
    )
    .await;
    assert_eq!(oldest["body"], "m0");
    // A page that starts below memory's oldest.
    let page = get_json(
        &hub.http,
        &format!("{}/api/v1/messages?limit=2&before={}", hub.url, ids[3]),
    )
    .await;
    assert_eq!(page["messages"][0]["id"], ids[2]);
    assert_eq!(page["next_before"], ids[1]);

    let (status, _) = hub.call("DELETE", "/api/v1/messages").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let store = get_json(&hub.http, &format!("{}/api/v1/store", hub.url)).await;
        let page = get_json(&hub.http, &format!("{}/api/v1/messages", hub.url)).await;
        if store["messages"] == 0 && page["messages"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not forgotten: {store} {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn an_exported_log_imports_back_without_being_sent() {
    let mut receiver = Receiver::start().await;
    let source = start_hub(|_| {}).await;
    source.register(&receiver.address()).await;
    let text = source.publish("plain text", Some("text/plain")).await;
    let binary = source.publish(vec![0u8, 159, 146, 150], None).await;
    source.publish("about orders", None).await;
    source.until_delivered(text, 1).await;
    source.until_delivered(binary, 1).await;
    receiver.drain();
    let export = herald::workbench::ndjson::export(source.hub());

    let target = start_hub(|_| {}).await;
    target.register(&receiver.address()).await;
    let response = target
        .http
        .post(format!("{}/api/v1/messages/import", target.url))
        .header("content-type", "application/x-ndjson")
        .body(export)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let imported: Value = response.json().await.unwrap();
    assert_eq!(imported["imported"], 3);
    let first = imported["first_id"].as_u64().unwrap();
    let message = get_json(
        &target.http,
        &format!("{}/api/v1/messages/{first}", target.url),
    )
    .await;
    assert_eq!(message["body"], "plain text");
    assert_eq!(message["content_type"], "text/plain");
    assert_eq!(message["source"], "imported");
    assert_eq!(message["deliveries_total"], 0);
    let binary = get_json(
        &target.http,
        &format!("{}/api/v1/messages/{}", target.url, first + 1),
    )
    .await;
    assert_eq!(binary["body_encoding"], "base64");
    let original = get_json(&source.http, &format!("{}/api/v1/messages/2", source.url)).await;
    assert_eq!(binary["body"], original["body"]);
    assert_eq!(binary["received_at"], original["received_at"]);
    // Logged, never fanned out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.drain().is_empty());

    // One bad line imports nothing, and says which.
    let before = target.hub().logged_messages();
    let response = target
        .http
        .post(format!("{}/api/v1/messages/import", target.url))
        .header("content-type", "application/x-ndjson")
        .body("{\"body\":\"fine\"}\n{\"body\":\"x\",\"body_encoding\":\"rot13\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("line 2"),
        "{error}"
    );
    assert_eq!(target.hub().logged_messages(), before);
    let response = target
        .http
        .post(format!("{}/api/v1/messages/import", target.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    source.shutdown().await;
    target.shutdown().await;
}
