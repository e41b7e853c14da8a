//! The binary's subcommands, run as a user runs them, against a hub started in the test.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::utils::{PATIENCE, Receiver, TestHub, eventually, start_hub};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn herald(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(args)
        .env_remove("HERALD_HUB")
        .env_remove("HERALD_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // No config file of this machine's: none in a config directory that is not there.
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("herald-tests-no-config"),
        );
    command
}

/// Runs a subcommand to its end: exit code, stdout, stderr.
async fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(PATIENCE, herald(args).output())
        .await
        .expect("the subcommand did not finish")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `herald listen --json` against `hub` with `extra` flags, once it is registered.
async fn listen(hub: &TestHub, extra: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let before = hub.hub().subscriber_count();
    let mut child = herald(&[&["listen", "--hub", &hub.url, "--json"], extra].concat())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    eventually("listen registers", || hub.hub().subscriber_count() > before).await;
    (child, lines)
}

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("listen printed nothing")
        .unwrap()
        .expect("listen ended");
    serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"))
}

/// Ctrl-C, as a person stops it, and what it said on stderr.
async fn interrupt(mut child: Child) -> String {
    let pid = child.id().unwrap() as i32;
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own live child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("listen did not stop on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    stderr
}

#[tokio::test]
async fn listen_prints_what_its_topics_bring_and_deregisters_on_ctrl_c() {
    let hub = start_hub(|_| {}).await;
    let (child, mut lines) = listen(&hub, &["--topics", "orders.*"]).await;
    let view = hub.hub().subscribers().remove(0);
    assert_eq!(view.topics.len(), 1, "{view:?}");
    assert_eq!(view.topics[0].as_str(), "orders.*");

    let (status, body) = hub.call("POST", "/sendMessage?topic=billing.paid").await;
    assert!(status.is_success(), "{body}");
    let response = hub
        .http
        .post(format!("{}/sendMessage?topic=orders.created", hub.url))
        .header("content-type", "application/json")
        .body(r#"{"order": 42}"#)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let printed = next_json(&mut lines).await;
    assert_eq!(printed["topic"], "orders.created", "{printed}");
    assert_eq!(
        printed["id"], 2,
        "billing.paid (1) is not its topic: {printed}"
    );
    assert_eq!(printed["body"]["order"], 42);
    assert_eq!(printed["content_type"], "application/json");
    assert_eq!(
        printed["signature"],
        Value::Null,
        "no secret, nothing checked"
    );

    let stderr = interrupt(child).await;
    assert!(stderr.contains("deregistered"), "{stderr}");
    assert_eq!(hub.hub().subscriber_count(), 0);
}

#[tokio::test]
async fn listen_checks_signatures_with_its_own_secret() {
    let hub = start_hub(|config| config.signing_secret = Some(SECRET.parse().unwrap())).await;
    let (good, mut good_lines) = listen(&hub, &["--secret", SECRET]).await;
    let (bad, mut bad_lines) = listen(&hub, &["--secret", OTHER_SECRET]).await;
    let id = hub.publish("signed", Some("text/plain")).await;
    let (first, second) = (
        next_json(&mut good_lines).await,
        next_json(&mut bad_lines).await,
    );
    let (valid, invalid) = if first["signature"] == "valid" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(valid["signature"], "valid", "{valid}");
    assert!(
        invalid["signature"]
            .as_str()
            .unwrap()
            .contains("matches this secret"),
        "{invalid}"
    );
    // The listener with the wrong secret refused it, as the real service would.
    hub.until_delivered(id, 1).await;
    let message = hub.until_failed(id, 1).await;
    let refused = message
        .deliveries()
        .iter()
        .flat_map(|d| d.attempts.clone())
        .any(|a| a.outcome.http_status() == Some(400));
    assert!(refused, "{:?}", message.deliveries());
    let stderr = interrupt(bad).await;
    assert!(stderr.contains("BAD SIGNATURE"), "{stderr}");
    interrupt(good).await;
}

#[tokio::test]
async fn listen_forwards_to_a_service_and_answers_with_its_status() {
    let hub = start_hub(|config| config.retry_schedule.0 = Vec::new()).await;
    let mut service = Receiver::answering(axum::http::StatusCode::ACCEPTED).await;
    let forward = format!("http://{}/hooks", service.address());
    let (child, mut lines) = listen(&hub, &["--forward", &forward]).await;
    let id = hub.publish(r#"{"n": 1}"#, Some("application/json")).await;
    let got = service.recv().await;
    assert_eq!(got.body, r#"{"n": 1}"#);
    assert_eq!(got.headers["x-herald-message-id"], id.to_string());
    let printed = next_json(&mut lines).await;
    assert!(
        printed["forwarded"].as_str().unwrap().starts_with("202"),
        "{printed}"
    );
    let message = hub.until_delivered(id, 1).await;
    assert_eq!(
        message.deliveries()[0].attempts[0].outcome.http_status(),
        Some(202),
        "the hub got the service's own answer"
    );
    interrupt(child).await;
}

#[tokio::test]
async fn publish_reaches_a_subscriber_and_says_so() {
    let hub = start_hub(|config| {
        config.forward_headers = vec!["x-tenant".parse().unwrap()];
    })
    .await;
    let mut receiver = Receiver::start().await;
    let register = format!(
        "/registerAndKeepAlive?address={}&topics=orders.*",
        receiver.address()
    );
    assert!(hub.call("POST", &register).await.0.is_success());
    let (code, stdout, stderr) = run(&[
        "publish",
        "--hub",
        &hub.url,
        "--topic",
        "orders.created",
        "--header",
        "X-Tenant: acme",
        "--data",
        r#"{"order": 7}"#,
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "message 1 queued for 1 subscriber");
    let got = receiver.recv().await;
    assert_eq!(got.body, r#"{"order": 7}"#);
    assert_eq!(got.headers["x-herald-topic"], "orders.created");
    assert_eq!(got.headers["x-tenant"], "acme");
    assert_eq!(got.headers["content-type"], "application/json");

    let (code, stdout, _) = run(&[
        "publish", "--hub", &hub.url, "--topic", "orders.x", "--data", "x", "--repeat", "5",
    ])
    .await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("5 messages published"), "{stdout}");
    assert!(stdout.contains("5 deliveries queued"), "{stdout}");
    assert_eq!(hub.hub().totals().messages, 6);
}

#[tokio::test]
async fn publish_fails_clearly_when_refused_or_when_no_hub_is_there() {
    let hub = start_hub(|config| config.max_body = 8).await;
    let (code, _, stderr) = run(&[
        "publish",
        "--hub",
        &hub.url,
        "--data",
        "far more than eight bytes",
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("413") && stderr.contains("nothing was published"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&[
        "publish", "--hub", &hub.url, "--topic", "a..b", "--data", "x",
    ])
    .await;
    assert_eq!(code, Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("empty token"), "{stderr}");
    assert_eq!(hub.hub().totals().messages, 0);

    let dead = crate::utils::dead_address().await;
    let (code, _, stderr) =
        run(&["publish", "--hub", &format!("http://{dead}"), "--data", "x"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no hub answers at"), "{stderr}");
    assert!(stderr.contains("refused"), "the cause is told: {stderr}");
}

#[tokio::test]
async fn subscribers_messages_and_resend_read_the_api() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("hello", Some("text/plain")).await;
    receiver.recv().await;
    hub.until_delivered(id, 1).await;

    let (code, stdout, stderr) = run(&["subscribers", "--hub", &hub.url]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("ADDRESS"), "{stdout}");
    assert!(
        stdout.contains(&receiver.address()) && stdout.contains("1/0"),
        "{stdout}"
    );
    let (_, json, _) = run(&["subscribers", "--hub", &hub.url, "--json"]).await;
    let list: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list[0]["address"], receiver.address());

    let (code, stdout, _) = run(&["messages", "--hub", &hub.url]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("1 ok, 0 failed"), "{stdout}");

    let (code, stdout, stderr) = run(&["resend", "--hub", &hub.url, &id.to_string()]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("message {id} queued again for 1 deliveries")
    );
    assert_eq!(receiver.recv().await.body, "hello");
    let (code, _, stderr) = run(&["resend", "--hub", &hub.url, "999"]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("404") && stderr.contains("not in the log"),
        "{stderr}"
    );
}

#[tokio::test]
async fn messages_follow_prints_the_hub_live() {
    let hub = start_hub(|_| {}).await;
    let mut child = herald(&["messages", "--hub", &hub.url, "--follow"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // A publish made before the stream is open is not followed: publish until one is.
    let line = tokio::time::timeout(PATIENCE, async {
        loop {
            let (status, _) = hub.call("POST", "/sendMessage?topic=orders.created").await;
            assert!(status.is_success());
            let wait = tokio::time::timeout(Duration::from_millis(300), lines.next_line());
            if let Ok(line) = wait.await {
                return line.unwrap().expect("follow ended");
            }
        }
    })
    .await
    .expect("nothing followed");
    assert!(
        line.contains(" on orders.created published for 0 subscribers"),
        "{line}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn completions_and_the_man_page_come_from_the_flags() {
    let (code, bash, _) = run(&["completions", "bash"]).await;
    assert_eq!(code, Some(0));
    assert!(
        bash.contains("--topics") && bash.contains("listen"),
        "{bash:.400}"
    );
    let (code, man, _) = run(&["man"]).await;
    assert_eq!(code, Some(0));
    assert!(man.starts_with(".ie") || man.contains(".TH"), "{man:.200}");
    assert!(man.contains("headless"), "{man:.400}");
    let (code, _, stderr) = run(&["completions", "tcsh"]).await;
    assert_eq!(code, Some(2), "{stderr}");
}

/// A receiver written as the guides say: verifies signatures with `secret` (400 when
/// wrong), acknowledges a repeated id, refuses bodies over 1 MiB with 413.
async fn careful_receiver(secret: &'static str) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(std::collections::HashSet::new()));
    let app = axum::Router::new()
        .route(
            "/event",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                async move {
                    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let secret = secret.parse().unwrap();
                    let verified = herald::delivery::signature::verify(
                        &secret,
                        text("webhook-id"),
                        text("webhook-timestamp"),
                        text("webhook-signature"),
                        &body,
                        now,
                    );
                    if verified.is_err() {
                        return StatusCode::BAD_REQUEST;
                    }
                    if seen.lock().insert(text("webhook-id").unwrap().to_owned()) {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/event", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// One that takes whatever comes, and fails on a large body.
async fn sloppy_receiver() -> String {
    use axum::body::Bytes;
    use axum::http::StatusCode;
    let app = axum::Router::new()
        .route(
            "/event",
            axum::routing::post(|body: Bytes| async move {
                if body.len() > 1024 * 1024 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/event", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn check_passes_a_careful_receiver_and_says_where_a_sloppy_one_fails() {
    let careful = careful_receiver(SECRET).await;
    let junit = std::env::temp_dir().join(format!("herald-check-{}.xml", std::process::id()));
    let junit_path = junit.to_str().unwrap();
    let (code, stdout, stderr) =
        run(&["check", &careful, "--secret", SECRET, "--junit", junit_path]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("8 passed, 0 failed, 0 skipped"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"tests="8" failures="0""#), "{xml}");
    std::fs::remove_file(&junit).ok();

    let sloppy = sloppy_receiver().await;
    let (code, stdout, _) = run(&["check", &sloppy, "--secret", SECRET]).await;
    assert_eq!(code, Some(4), "{stdout}");
    for failing in [
        "FAIL  refuses a bad signature",
        "FAIL  refuses a stale timestamp",
        "FAIL  refuses a delivery without signature headers",
        "FAIL  accepts or cleanly refuses (413)",
    ] {
        assert!(stdout.contains(failing), "{failing}: {stdout}");
    }
    assert!(
        stdout.contains("pass  copes with 100 concurrent deliveries"),
        "{stdout}"
    );

    // Without a secret, the signature checks are skipped, not passed.
    let (code, stdout, _) = run(&["check", &careful]).await;
    assert_eq!(
        code,
        Some(3),
        "unsigned deliveries are refused by it: {stdout}"
    );
    assert!(stdout.contains("skip  refuses a bad signature"), "{stdout}");
}

#[tokio::test]
async fn check_fails_a_receiver_slower_than_the_timeout() {
    let app = axum::Router::new().route(
        "/event",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            axum::http::StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/event", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (code, stdout, _) = run(&["check", &url, "--timeout", "200ms"]).await;
    assert!(code.is_some_and(|c| c >= 2), "{stdout}");
    assert!(
        stdout.contains("FAIL  answers within the delivery timeout"),
        "{stdout}"
    );
    assert!(stdout.contains("timed out"), "{stdout}");
}

#[tokio::test]
async fn publish_reads_standard_input_and_refuses_mixed_or_loose_flags() {
    let hub = start_hub(|_| {}).await;
    let mut child = herald(&["publish", "--hub", &hub.url, "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, br#"{"from": "stdin"}"#)
        .await
        .unwrap();
    drop(stdin);
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        &hub.hub().message(1).unwrap().body[..],
        br#"{"from": "stdin"}"#
    );
    for args in [
        &["publish", "--hub", &hub.url, "--data", "x", "-"][..],
        &["publish", "--hub", &hub.url],
        &["publish", "--hub", &hub.url, "--data", "x", "--rate", "5"],
        &["publish", "--hub", "localhost:3000", "--data", "x"],
        &["messages", "--hub", &hub.url, "--follow", "--limit", "3"],
    ] {
        let (code, _, stderr) = run(args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
    }
    assert_eq!(hub.hub().totals().messages, 1);
}

#[tokio::test]
async fn listen_stops_on_ctrl_c_even_when_the_hub_is_gone() {
    let hub = start_hub(|_| {}).await;
    let (child, _lines) = listen(&hub, &[]).await;
    hub.shutdown().await;
    let started = std::time::Instant::now();
    let stderr = interrupt(child).await;
    assert!(stderr.contains("could not deregister"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_flag_beats_the_environment_which_beats_the_config_file() {
    let dir = std::env::temp_dir().join(format!("herald-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("herald.toml"),
        "ttl = \"30s\"\nreap-every = \"9s\"\ntoken = \"from-the-file\"\nforward-header = [\"x-tenant\"]\nheadless = true\n",
    )
    .unwrap();
    let output = herald(&["--print-config", "--reap-every", "5s"])
        .current_dir(&dir)
        .env("HERALD_TOKEN", "from-the-environment")
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let line = |key: &str| -> String {
        printed
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing: {printed}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("ttl"), "ttl = \"30s\" # config file");
    assert_eq!(line("reap-every"), "reap-every = \"5s\" # flag");
    assert_eq!(line("token"), "token = \"***\" # environment");
    assert_eq!(
        line("forward-header"),
        "forward-header = [\"x-tenant\"] # config file"
    );
    assert_eq!(line("headless"), "headless = true # config file");
    assert_eq!(line("max-body"), "max-body = \"1MiB\" # default");
    assert!(
        !printed.contains("from-the"),
        "secrets are not printed: {printed}"
    );

    // The file is the hub's: a bad key or value is refused with its name and the file's.
    let refused = |content: &'static str| {
        let path = dir.join("bad.toml");
        std::fs::write(&path, content).unwrap();
        async move {
            let (code, _, stderr) =
                run(&["--config", path.to_str().unwrap(), "--print-config"]).await;
            assert_eq!(code, Some(2), "{content}: {stderr}");
            stderr
        }
    };
    let stderr = refused("tll = \"30s\"\n").await;
    assert!(
        stderr.contains("`tll` is not a setting") && stderr.contains("ttl"),
        "{stderr}"
    );
    let stderr = refused("ttl = \"soon\"\n").await;
    assert!(
        stderr.contains("bad.toml") && stderr.contains("--ttl"),
        "{stderr}"
    );
    let stderr = refused("headless = \"yes\"\n").await;
    assert!(stderr.contains("`headless` is a switch"), "{stderr}");

    // And a hub started with it uses it.
    std::fs::write(
        dir.join("hub.toml"),
        "headless = true\nbind = \"127.0.0.1:0\"\nttl = \"42s\"\n",
    )
    .unwrap();
    let mut hub = herald(&["--config", dir.join("hub.toml").to_str().unwrap()])
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let url = crate::binary::listening_url(&mut hub).await;
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/api/v1/subscribers"))
        .json(&serde_json::json!({"address": "127.0.0.1:9"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["lease_seconds"], 42.0, "{answer}");
    hub.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn config_file_lists_and_odd_values_are_taken_as_they_are_meant() {
    let dir = std::env::temp_dir().join(format!("herald-config-odd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("odd.toml");
    std::fs::write(
        &path,
        "token = \"-starts-like-a-flag\"\nforward-header = [\"x-from-file\"]\nallow-origin = []\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&[
        "--config",
        path.to_str().unwrap(),
        "--forward-header",
        "x-from-flag",
        "--print-config",
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let line = |key: &str| -> String {
        let found = stdout.lines().find(|l| l.starts_with(&format!("{key} = ")));
        found
            .unwrap_or_else(|| panic!("{key}: {stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("token"), "token = \"***\" # config file");
    // A list given as a flag replaces the file's, rather than adding to it.
    assert_eq!(
        line("forward-header"),
        "forward-header = [\"x-from-flag\"] # flag"
    );
    assert_eq!(
        line("allow-origin"),
        "allow-origin = [] # not set",
        "an empty list sets nothing"
    );
    std::fs::remove_dir_all(&dir).ok();
}
