//! Test subscribers: their ports have the hub's own edge, what they keep is copied and
//! budgeted, and they do not outlive a restart as someone else's port.
//!
//! Descriptors and memory are read from `/proc` for a `herald` process of its own: the
//! other tests of this binary run in its process at the same time, so its own counts
//! would measure them too.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::binary::{start_headless, stop};
use crate::utils::{PATIENCE, Receiver, TempDir};
use herald::workbench::test_subscriber::{KEPT_BUDGET, MAX_CONNECTIONS, MAX_KEPT_BODY};

/// A headless `herald` on a free port of its own, with its base URL and process id.
async fn hub_process(extra: &[&str]) -> (Child, String, u32) {
    let (child, url) = start_headless(extra).await;
    let pid = child.id().unwrap();
    (child, url, pid)
}

/// File descriptors process `pid` has open.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Process `pid`'s resident memory, in bytes.
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// Adds a test subscriber answering as `behaviour` and returns its id and address.
async fn add_stub(http: &reqwest::Client, url: &str, behaviour: Value) -> (u64, String) {
    let answer = http
        .post(format!("{url}/api/v1/test-subscribers"))
        .json(&behaviour)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let added: Value = answer.json().await.unwrap();
    let id = added["id"].as_u64().unwrap();
    (id, added["address"].as_str().unwrap().to_owned())
}

/// Polls `condition` every 50 ms until it holds or `within` has passed; whether it held.
async fn within(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 20,000 idle connections straight to one test subscriber took every descriptor the hub
/// had. Three times its cap are held open here: the hub holds no more than the cap of
/// them, and its own port still answers at once.
#[tokio::test]
async fn a_test_subscribers_connections_are_capped() {
    let (mut child, url, pid) = hub_process(&[]).await;
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let (_, address) = add_stub(&http, &url, json!({})).await;
    let before = descriptors(pid);

    let mut held = Vec::new();
    for _ in 0..3 * MAX_CONNECTIONS {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    // Newcomers beyond the cap are told so within a second and closed; a few more for
    // what the hub itself opens meanwhile.
    let bound = before + MAX_CONNECTIONS + 16;
    let bounded = within(Duration::from_secs(4), || descriptors(pid) <= bound).await;
    let open = descriptors(pid);
    assert!(
        bounded,
        "{} connections held open to one test subscriber: the hub has {open} descriptors, \
         {before} before them (bound {bound})",
        held.len()
    );

    let started = Instant::now();
    let health = tokio::time::timeout(
        Duration::from_secs(2),
        http.get(format!("{url}/healthz")).send(),
    )
    .await
    .expect("/healthz took over 2 s")
    .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    println!(
        "{} held, the hub at {open} descriptors ({before} before), /healthz in {:?}",
        held.len(),
        started.elapsed()
    );
    assert!(child.try_wait().unwrap().is_none(), "the hub exited");
    child.kill().await.ok();
}

/// Slow-reading test subscribers kept their connections (and the hub's own, delivering to
/// them) open long after they were deleted. Removing one drops them at once.
#[tokio::test]
async fn a_removed_test_subscriber_drops_its_slow_readers_at_once() {
    let (mut child, url, pid) = hub_process(&[]).await;
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let before = descriptors(pid);
    let (id, address) = add_stub(&http, &url, json!({"read_delay_ms": 60_000})).await;

    // Requests whose bodies it reads a chunk a minute: each holds its connection busy.
    let readers = 32;
    let mut held = Vec::new();
    for _ in 0..readers {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let head = format!("POST / HTTP/1.1\r\nHost: {address}\r\nContent-Length: 1000000\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b'x'; 16 * 1024]).await.unwrap();
        held.push(stream);
    }
    // And the hub's own deliveries to it, read as slowly.
    let published = http
        .post(format!("{url}/sendMessage"))
        .body(vec![b'y'; 512 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), StatusCode::OK);
    assert!(
        within(PATIENCE, || descriptors(pid) >= before + readers).await,
        "the test subscriber never held its readers ({} descriptors, {before} before)",
        descriptors(pid)
    );
    let busy = descriptors(pid);

    let removed = http
        .delete(format!("{url}/api/v1/test-subscribers/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let started = Instant::now();
    let bound = before + 4;
    let released = within(Duration::from_secs(2), || descriptors(pid) <= bound).await;
    assert!(
        released,
        "2 s after its removal the hub still has {} descriptors ({busy} while it read, \
         {before} before it was added)",
        descriptors(pid)
    );
    println!(
        "{busy} descriptors while it read, {} {:?} after its removal, {before} before",
        descriptors(pid),
        started.elapsed()
    );
    child.kill().await.ok();
}

/// The first 64 KiB kept of each request held the whole body it was cut from: 100 bodies
/// of 1 MiB to each of 4 test subscribers took the hub from 15 to 495 MB. Now it keeps
/// copies of 64 KiB, within one budget for all of them, and reads no body past the hub's
/// --max-body.
#[tokio::test]
async fn what_test_subscribers_keep_is_a_copy_within_a_budget() {
    let (mut child, url, pid) = hub_process(&[]).await;
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let mut stubs = Vec::new();
    for _ in 0..4 {
        stubs.push(add_stub(&http, &url, json!({})).await);
    }
    let (each, size) = (100, 1024 * 1024);
    let before = resident(pid);

    let sends = stubs.iter().map(|(_, address)| {
        let (http, address) = (http.clone(), address.clone());
        async move {
            for n in 0..each {
                // ASCII, so the API shows it as text; numbered, so the kept copies differ.
                let mut body = format!("{n:08}").into_bytes();
                body.resize(size, b'a' + (n % 26) as u8);
                let answer = http
                    .post(format!("http://{address}/"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), StatusCode::NO_CONTENT);
            }
        }
    });
    futures_util::future::join_all(sends).await;

    let sent = (stubs.len() * each * size) as u64;
    let grown = resident(pid).saturating_sub(before);
    assert!(
        grown < sent / 6,
        "{sent} bytes sent to test subscribers grew the hub by {grown} bytes"
    );

    // Bodies past --max-body (1 MiB), declared or not, are refused having read at most
    // that much, and cost nothing kept.
    let (_, first) = &stubs[0];
    for _ in 0..4 {
        let answer = http
            .post(format!("http://{first}/"))
            .body(vec![b'z'; 16 * size])
            .send()
            .await;
        // The 413 may be cut off by the unread body: the refusal is what matters.
        if let Ok(answer) = answer {
            assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
        }
        // Answered 413, or cut off by the unread body; never taken.
        let answer = chunked(first, 4 * size).await;
        assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");
    }
    let grown = resident(pid).saturating_sub(before);
    assert!(
        grown < sent / 6,
        "after bodies past --max-body the hub had grown by {grown} bytes"
    );

    let mut kept = 0;
    for (id, _) in &stubs {
        let answer = http
            .get(format!("{url}/api/v1/test-subscribers/{id}/received"))
            .send()
            .await
            .unwrap();
        let received: Vec<Value> = answer.json().await.unwrap();
        assert!(!received.is_empty(), "test subscriber {id} kept nothing");
        for request in &received {
            assert!(
                request["size"].as_u64().unwrap() <= size as u64,
                "a body past --max-body was taken"
            );
            assert_eq!(request["truncated"], true);
            assert_eq!(request["base64"], false);
            kept += request["body"].as_str().unwrap().len();
        }
        // The newest shows its first 64 KiB, as it came.
        let newest = received[0]["body"].as_str().unwrap();
        assert_eq!(newest.len(), MAX_KEPT_BODY);
        assert!(
            newest.starts_with(&format!("{:08}", each - 1)),
            "{}",
            &newest[..16]
        );
        assert_eq!(received[0]["size"], size);
    }
    assert!(kept <= KEPT_BUDGET, "{kept} bytes kept");
    println!("{sent} bytes sent, the hub grew by {grown}, {kept} bytes of bodies kept");
    assert!(child.try_wait().unwrap().is_none(), "the hub exited");
    child.kill().await.ok();
}

/// Sends `total` bytes as a chunked POST to `address` (no length declared), and returns
/// whatever was answered before the connection closed.
async fn chunked(address: &str, total: usize) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!("POST / HTTP/1.1\r\nHost: {address}\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = vec![b'c'; 64 * 1024];
    let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
    frame.extend_from_slice(&chunk);
    frame.extend_from_slice(b"\r\n");
    let mut written = stream.write_all(head.as_bytes()).await.is_ok();
    let mut sent = 0;
    // It stops reading at its limit: writing on would fill the socket's buffers and wait.
    while written && sent < total {
        written = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame))
            .await
            .is_ok_and(|w| w.is_ok());
        sent += chunk.len();
    }
    if written {
        stream.write_all(b"0\r\n\r\n").await.ok();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the test subscriber neither answered nor closed")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A test subscriber's registration came back from the store after a restart, without
/// the test subscriber: the hub delivered to whatever held its port then. It is never
/// kept; a real subscriber still is.
#[tokio::test]
async fn a_test_subscriber_is_not_registered_again_after_a_restart() {
    let dir = TempDir::new("stub-restart");
    // Keep-alives every 200 ms: a few are made before the stop.
    let durable = ["--data-dir", dir.arg(), "--ttl", "600ms"];
    let (child, url, _) = hub_process(&durable).await;
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let receiver = Receiver::start().await;
    let registered = http
        .post(format!(
            "{url}/registerAndKeepAlive?address={}",
            receiver.address()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::OK);
    let (_, stub) = add_stub(&http, &url, json!({})).await;
    // Changes the store keeps of a real subscriber: a pin (so that neither expires while
    // the hub is down), a pause, keep-alives.
    for (address, change) in [
        (&stub, json!({"pinned": true, "paused": true})),
        (&receiver.address(), json!({"pinned": true})),
    ] {
        let changed = http
            .patch(format!("{url}/api/v1/subscribers/{address}"))
            .json(&change)
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), StatusCode::OK, "{address}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = list(&http, &url).await;
    assert!(listed.contains(&stub) && listed.contains(&receiver.address()));
    // Stopped as a user stops it, so that the store keeps everything it was told.
    stop(child).await;

    let (mut child, url, _) = hub_process(&durable).await;
    let listed = list(&http, &url).await;
    assert!(
        listed.contains(&receiver.address()),
        "the real one is kept: {listed:?}"
    );
    assert!(
        !listed.contains(&stub),
        "the test subscriber's registration came back without it: {listed:?}"
    );
    let stubs: Value = http
        .get(format!("{url}/api/v1/test-subscribers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stubs, json!([]));
    child.kill().await.ok();
}

/// The addresses `/listSubscribers` lists.
async fn list(http: &reqwest::Client, url: &str) -> Vec<String> {
    let listed = http
        .get(format!("{url}/listSubscribers"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let text = listed.text().await.unwrap();
    text.lines()
        .map(|line| line.split("  :  ").next().unwrap().to_owned())
        .collect()
}
