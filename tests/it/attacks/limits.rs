//! Limits that must never answer yes and do nothing, poison refused at the door, one
//! identity per cluster, and the small ones.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::json;

use crate::binary::{herald, start_headless};
use crate::utils::{PATIENCE, start_hub};

/// A content type that can never be sent as a header is refused where it enters: by an
/// import (naming the line) and by the console's publish, so that no delivery of it fails
/// and no resend of it suspends a healthy subscriber.
#[tokio::test]
async fn a_content_type_that_cannot_be_sent_is_refused_at_the_door() {
    let hub = start_hub(|_| {}).await;
    let lines = [
        json!({"body": "fine", "content_type": "application/json"}).to_string(),
        json!({"body": "poison", "content_type": "text/plain\r\nX-Evil: 1"}).to_string(),
    ]
    .join("\n");
    let answer = hub
        .http
        .post(format!("{}/api/v1/messages/import", hub.url))
        .header("content-type", "application/x-ndjson")
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let text = answer.text().await.unwrap();
    assert!(
        text.contains("line 2") && text.contains("content type"),
        "{text}"
    );
    assert_eq!(
        hub.hub().logged_messages(),
        0,
        "one bad line imports nothing"
    );
    let draft = herald::hub::Draft {
        content_type: Some("text/plain\u{1}".to_owned()),
        ..herald::hub::Draft::new("poison")
    };
    let refused = hub.hub().publish(draft, herald::hub::Source::Console);
    assert!(
        matches!(refused, Err(herald::hub::PublishError::ContentType(_))),
        "{refused:?}"
    );
    hub.shutdown().await;
}

/// A ban is kept under the address a delivery would go to: every spelling of a banned
/// address is refused. Past the most bans the hub keeps, a ban says no instead of
/// answering yes and keeping nothing.
#[tokio::test]
async fn a_ban_holds_for_every_spelling_and_the_last_one_says_no() {
    let hub = start_hub(|_| {}).await;
    let port = 4_000;
    let (status, body) = hub
        .call(
            "DELETE",
            &format!("/api/v1/subscribers/127.0.0.1:{port}?ban=1h"),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for spelling in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("127.1:{port}"),
        format!("http://127.0.0.1:{port}/event"),
        format!("http://LOCALHOST:{port}/event"),
    ] {
        let (status, body) = hub
            .call("POST", &format!("/registerAndKeepAlive?address={spelling}"))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{spelling}: {body}");
    }
    // Another path or port is another address.
    let (status, _) = hub
        .call(
            "POST",
            &format!("/registerAndKeepAlive?address=127.0.0.1:{}", port + 1),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Other ports than the one above: every loopback spelling of a port is one address.
    for n in 1..10_000 {
        assert!(
            hub.hub()
                .ban(
                    &format!("127.0.0.2:{}", 20_000 + n),
                    Duration::from_secs(3600)
                )
                .is_ok(),
            "ban {n} refused"
        );
    }
    let (status, body) = hub
        .call("DELETE", "/api/v1/subscribers/127.0.0.3:9?ban=1h")
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("10000 bans"), "{body}");
    // Refused, so not kept: the address still registers.
    let (status, _) = hub
        .call("POST", "/registerAndKeepAlive?address=127.0.0.3:9")
        .await;
    assert_eq!(status, StatusCode::OK);
    hub.shutdown().await;
}

/// `herald check` against a receiver whose answer never ends: the answer is not read
/// whole (it is a failure that says so), and the timeout row does not claim a time it did
/// not measure.
#[tokio::test]
async fn check_stops_reading_an_endless_answer() {
    let app = axum::Router::new().route(
        "/event",
        axum::routing::post(|| async {
            let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
            let endless = futures_util::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
            axum::body::Body::from_stream(endless)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/event", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let output = tokio::time::timeout(
        PATIENCE,
        herald().args(["check", &url, "--timeout", "5s"]).output(),
    )
    .await
    .expect("herald check did not finish")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.code().is_some_and(|c| c >= 2), "{stdout}");
    assert!(stdout.contains("went on past"), "{stdout}");
    assert!(
        stdout.contains("FAIL  answers within the delivery timeout")
            && !stdout.contains("slowest 0.0 ms"),
        "{stdout}"
    );
}

/// A named pipe given as the config file would hold the start until someone wrote to
/// it: refused at once, saying what it is.
#[tokio::test]
async fn a_fifo_as_the_config_file_is_refused_at_once() {
    let dir = std::env::temp_dir().join(format!("herald-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("herald.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        herald()
            .args(["--headless", "--config", fifo.to_str().unwrap()])
            .output(),
    )
    .await
    .expect("a FIFO config file hung the start")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("named pipe"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A store edited by hand (values no registration could make: a lease of 292 million
/// years, four billion deliveries at once, times past any calendar, a negative slot)
/// neither stops the start nor panics a read. (A value that does not fit its column at
/// all, such as a status of 70,000, makes the store unreadable: the start refuses it with
/// advice, as for any damaged store.)
#[tokio::test]
async fn a_hand_edited_store_neither_stops_the_start_nor_panics_a_read() {
    use crate::utils::{Receiver, TempDir};

    let dir = TempDir::new("hand-edited");
    let mut receiver = Receiver::start().await;
    let flags = ["--data-dir", dir.arg()];
    let start = || start_headless(&flags);
    let http = reqwest::Client::new();
    let (child, url) = start().await;
    let registered = http
        .post(format!(
            "{url}/registerAndKeepAlive?address={}",
            receiver.address()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::OK);
    let published = http
        .post(format!("{url}/sendMessage"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), StatusCode::OK);
    receiver.recv().await;
    // A stop as an operator makes it: everything kept first.
    crate::binary::stop(child).await;

    let db = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
    db.execute_batch(
        "UPDATE subscribers SET lease_ms = 9223372036854775807, max_in_flight = 4000000000;
         UPDATE attempts SET micros = -5, at_ms = 9223372036854775807;
         UPDATE deliveries SET slot = -3, number = 99999999999;
         UPDATE messages SET received_ms = -9223372036854775808, source = 'burst 18446744073709551616';",
    )
    .unwrap();
    drop(db);

    let (mut child, url) = start().await;
    for path in [
        "/listSubscribers",
        "/api/v1/subscribers",
        "/api/v1/messages",
        "/api/v1/messages?before=2",
        "/api/v1/messages/1",
        "/healthz",
    ] {
        let answer = http.get(format!("{url}{path}")).send().await.unwrap();
        assert!(
            answer.status().is_success() || answer.status() == StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.status()
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "the hub exited");
    child.kill().await.ok();
}

/// A star and a forget the store could not keep (its files may grow no further here: a
/// file size limit on the process, as a full disk would stop it) are never answered as
/// done: what was answered done is there after a restart, and the forget, which needs
/// the most room, is refused.
#[tokio::test]
async fn a_star_or_forget_the_store_cannot_keep_says_so() {
    use crate::utils::TempDir;

    let dir = TempDir::new("no-room");
    // `ulimit -f` (in KiB) caps every file the hub writes; SIGXFSZ ignored, so that a
    // write past it fails instead of killing the process.
    let script = format!(
        "trap '' XFSZ; ulimit -f 600; exec {} --headless --bind 127.0.0.1:0 --data-dir {}",
        env!("CARGO_BIN_EXE_herald"),
        dir.arg()
    );
    let mut child = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .env("RUST_LOG", "info")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("herald-tests-no-config"),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = crate::binary::listening_url(&mut child).await;
    let http = reqwest::Client::new();
    let publish = |body: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(format!("{url}/api/v1/messages"))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Many small rows, so that forgetting them takes room; then large ones until the
    // store refuses one: its files are at their limit.
    for n in 0..40 {
        assert_eq!(publish(format!("small {n}")).await, StatusCode::ACCEPTED);
    }
    let mut refused = false;
    for _ in 0..100 {
        if publish("x".repeat(10 * 1024)).await.is_server_error() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the store never filled");
    // Past the second in which a failed store refuses everything at once.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let star = http
        .patch(format!("{url}/api/v1/messages/1"))
        .json(&json!({"pinned": true}))
        .send()
        .await
        .unwrap();
    let starred = star.status();
    let star_text = star.text().await.unwrap();
    assert!(
        starred == StatusCode::OK || star_text.contains("not kept"),
        "{starred}: {star_text}"
    );
    let forget = http
        .delete(format!("{url}/api/v1/messages"))
        .send()
        .await
        .unwrap();
    let forgot = forget.status();
    let forget_text = forget.text().await.unwrap();
    assert!(forgot.is_server_error(), "{forgot}: {forget_text}");
    assert!(forget_text.contains("not kept"), "{forget_text}");
    child.kill().await.ok();
    child.wait().await.ok();

    // Started again without the limit: what was answered done is there.
    let (mut child, url) = start_headless(&["--data-dir", dir.arg()]).await;
    let first = http
        .get(format!("{url}/api/v1/messages/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK, "the forget was not kept");
    let first: serde_json::Value = first.json().await.unwrap();
    if starred == StatusCode::OK {
        assert_eq!(
            first["pinned"], true,
            "answered starred, but not kept: {first}"
        );
    }
    child.kill().await.ok();
}
