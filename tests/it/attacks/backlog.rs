//! A durable hub with a paused subscriber and more publishes than its queue holds: the
//! rest used to be recorded "queue full" though each was on disk (#24, item 9). They wait
//! on disk now and are read back, in order, as the queue drains, across a restart too.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Child;

use crate::binary::{start_headless, stop};
use crate::utils::{PATIENCE, Receiver, Reply, TempDir};

const MESSAGES: u64 = 3_000;
const QUEUE: u64 = 100;

async fn start(dir: &TempDir) -> (Child, String) {
    start_headless(&[
        "--data-dir",
        dir.arg(),
        "--queue-capacity",
        &QUEUE.to_string(),
    ])
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

fn subscriber_path(url: &str, address: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(address.as_bytes()).collect();
    format!("{url}/api/v1/subscribers/{encoded}")
}

async fn set_paused(http: &reqwest::Client, url: &str, address: &str, paused: bool) {
    let response = http
        .patch(subscriber_path(url, address))
        .json(&json!({ "paused": paused }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn subscriber(http: &reqwest::Client, url: &str, address: &str) -> Value {
    let list: Value = http
        .get(format!("{url}/api/v1/subscribers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == address)
        .cloned()
        .unwrap_or_else(|| panic!("{address} is not listed: {list}"))
}

/// Publishes `MESSAGES` small bodies, a few at a time (each answer waits on a commit);
/// returns their ids, lowest first.
async fn publish_all(http: &reqwest::Client, url: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = futures_util::stream::iter(0..MESSAGES)
        .map(|n| async move {
            let response = http
                .post(format!("{url}/api/v1/messages"))
                .body(format!("m{n}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            response.json::<Value>().await.unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    ids.sort_unstable();
    ids
}

/// Waits until the paused subscriber shows its queue full and the rest on disk, none
/// failed.
async fn shows_backlog(http: &reqwest::Client, url: &str, address: &str) {
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = subscriber(http, url, address).await;
        let (queued, parked) = (shown["queue_depth"].as_u64(), shown["backlog"].as_u64());
        // The worker may have taken one as the pause began, and hold it.
        if queued == Some(QUEUE)
            && parked.is_some_and(|p| p + QUEUE + 1 >= MESSAGES && p + QUEUE <= MESSAGES)
            && shown["failed"] == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no backlog of {} shown: {shown}", MESSAGES - QUEUE);
}

/// A receiver registered and paused, then `MESSAGES` published: the queue full and the
/// rest waiting on disk. Its address, and the ids published.
async fn paused_with_backlog(http: &reqwest::Client, url: &str) -> (Receiver, String, Vec<u64>) {
    let receiver = Receiver::start().await;
    let address = receiver.address();
    let response = http
        .post(format!("{url}/registerAndKeepAlive?address={address}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    set_paused(http, url, &address, true).await;
    let ids = publish_all(http, url).await;
    shows_backlog(http, url, &address).await;
    (receiver, address, ids)
}

/// Receives until every id has arrived, in order and once each, and then nothing more.
async fn receives_all_in_order(receiver: &mut Receiver, ids: &[u64]) {
    let mut got = Vec::with_capacity(ids.len());
    while got.len() < ids.len() {
        let received = receiver.recv().await;
        let id: u64 = received.headers["x-herald-message-id"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        got.push(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let extra = receiver.drain().len();
    assert_eq!(extra, 0, "{extra} deliveries arrived twice");
    if got != ids {
        let first = got.iter().zip(ids).position(|(g, w)| g != w);
        panic!("out of order or missing from position {first:?}");
    }
}

/// Waits until the subscriber shows no backlog any more; what it shows then.
async fn backlog_read_back(http: &reqwest::Client, url: &str, address: &str) -> Value {
    let mut shown = Value::Null;
    for _ in 0..50 {
        shown = subscriber(http, url, address).await;
        if shown["backlog"] == 0 {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the backlog was never read back in full: {shown}");
}

async fn delivered(http: &reqwest::Client, url: &str, id: u64) {
    let message: Value = http
        .get(format!("{url}/api/v1/messages/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivery = &message["deliveries"][0];
    assert_eq!(delivery["status"], "delivered", "{message}");
}

#[tokio::test]
async fn a_backlog_beyond_the_queue_waits_on_disk_and_arrives_in_order() {
    let dir = TempDir::new("backlog");
    let (_child, url) = start(&dir).await;
    let http = client();
    let (mut receiver, address, ids) = paused_with_backlog(&http, &url).await;

    set_paused(&http, &url, &address, false).await;
    receives_all_in_order(&mut receiver, &ids).await;
    // A late one is delivered, not "queue full".
    delivered(&http, &url, *ids.last().unwrap()).await;
    delivered(&http, &url, ids[ids.len() / 2]).await;
    let shown = backlog_read_back(&http, &url, &address).await;
    assert_eq!(shown["failed"], 0, "{shown}");
}

#[tokio::test]
async fn a_backlog_left_at_a_restart_is_delivered_after_it() {
    let dir = TempDir::new("backlog-restart");
    let (child, url) = start(&dir).await;
    let http = client();
    let (mut receiver, address, ids) = paused_with_backlog(&http, &url).await;
    stop(child).await;

    // Its pause came back with it: what the queue does not hold waits on disk again.
    let (_child, url) = start(&dir).await;
    shows_backlog(&http, &url, &address).await;
    set_paused(&http, &url, &address, false).await;
    receives_all_in_order(&mut receiver, &ids).await;
    delivered(&http, &url, *ids.last().unwrap()).await;
    backlog_read_back(&http, &url, &address).await;
}

/// Kicked with a backlog on disk: each parked delivery gets its removal recorded, in
/// memory and in the store, rather than staying pending for ever.
#[tokio::test]
async fn a_kicked_subscribers_backlog_is_recorded_removed() {
    let dir = TempDir::new("backlog-kicked");
    let (child, url) = start(&dir).await;
    let http = client();
    let receiver = Receiver::start().await;
    let address = receiver.address();
    let response = http
        .post(format!("{url}/registerAndKeepAlive?address={address}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    set_paused(&http, &url, &address, true).await;
    let ids = publish_all(&http, &url).await;
    shows_backlog(&http, &url, &address).await;
    let response = http
        .delete(subscriber_path(&url, &address))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    let last = *ids.last().unwrap();
    let state = |message: &Value| message["deliveries"][0].clone();
    let mut message = Value::Null;
    for _ in 0..100 {
        message = http
            .get(format!("{url}/api/v1/messages/{last}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if state(&message)["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivery = state(&message);
    assert_eq!(delivery["status"], "failed", "{message}");
    let error = delivery["error"].as_str().unwrap_or_default();
    assert!(error.contains("kicked"), "{error}");
    // Kept so: the next start has nothing left to send it.
    stop(child).await;
    let (_child, url) = start(&dir).await;
    let message: Value = http
        .get(format!("{url}/api/v1/messages/{}", ids[ids.len() / 2]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state(&message)["status"], "failed", "{message}");
}

/// A slow subscriber, not paused, while publishes keep coming: its backlog starts and
/// ends again and again as the queue fills and drains, and order holds through each
/// turn.
#[tokio::test]
async fn a_backlog_that_comes_and_goes_keeps_the_order() {
    let dir = TempDir::new("backlog-churn");
    let (_child, url) = start(&dir).await;
    let http = client();
    let mut receiver = Receiver::scripted(
        Vec::new(),
        Reply::status(200).after(Duration::from_millis(1)),
    )
    .await;
    let address = receiver.address();
    let response = http
        .post(format!("{url}/registerAndKeepAlive?address={address}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let publishing = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move { publish_all(&http, &url).await })
    };
    let mut most = 0;
    while !publishing.is_finished() {
        let shown = subscriber(&http, &url, &address).await;
        most = most.max(shown["backlog"].as_u64().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids = publishing.await.unwrap();
    assert!(
        most > 0,
        "the queue never overflowed: the test proves nothing"
    );
    receives_all_in_order(&mut receiver, &ids).await;
    let shown = backlog_read_back(&http, &url, &address).await;
    assert_eq!(shown["failed"], 0, "{shown}");
}
