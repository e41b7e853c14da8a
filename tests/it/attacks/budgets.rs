//! Budgets that hold under pressure: concurrent diffs, resends of big answers, bursts of
//! slow templates beside deliveries. Each runs the binary, so that what it measures (the
//! process's memory, its runtime's threads) is the hub's alone, not shared with the other
//! tests of this binary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Child;

use crate::binary::{herald, listening_url};
use crate::utils::{PATIENCE, Receiver, Reply};

/// A line of the child's `/proc/PID/status`, in KiB (`VmRSS`, `VmHWM`).
fn status_kib(child: &Child, field: &str) -> u64 {
    let pid = child.id().expect("the hub is running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

async fn start(args: &[&str]) -> (Child, String, reqwest::Client) {
    let mut child = herald()
        .args(["--headless", "--bind", "127.0.0.1:0"])
        .args(args)
        .spawn()
        .unwrap();
    let url = listening_url(&mut child).await;
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    (child, url, http)
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Publishes `body` as JSON and returns its id.
async fn publish(http: &reqwest::Client, url: &str, body: String) -> u64 {
    let response = http
        .post(format!("{url}/api/v1/messages"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["id"].as_u64().unwrap()
}

/// Two arrays 127 deep pretty-printed on six blocking threads at once took the hub from
/// ~50 MB to 3.4 GB. Now at most two comparisons run; the others are told to try again,
/// with `Retry-After`; what would pretty-print past the budget is compared as raw text,
/// and says so.
#[tokio::test]
async fn concurrent_diffs_take_turns_and_deep_json_is_compared_raw() {
    let (mut child, url, http) = start(&[]).await;
    // 87,000 elements a line each, 127 deep: 256 KiB as sent, 22 MiB a side
    // pretty-printed (each line indented by 254 spaces). Every line differs, so a
    // comparison runs its full 200 ms before it settles: the six overlap.
    let deep = |n: u8| {
        let inner = vec![n.to_string(); 87_000].join(",\n");
        format!("{}\n{inner}\n{}", "[".repeat(127), "]".repeat(127))
    };
    let a = publish(&http, &url, deep(0)).await;
    let b = publish(&http, &url, deep(1)).await;
    let before = status_kib(&child, "VmHWM");
    let diff = || {
        http.get(format!("{url}/api/v1/diff?a={a}&b={b}"))
            .timeout(Duration::from_secs(60))
            .send()
    };
    let answers = futures_util::future::join_all((0..6).map(|_| diff())).await;
    let grown = status_kib(&child, "VmHWM").saturating_sub(before);
    let mut read = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        let retry_after = answer.headers().get("retry-after").cloned();
        let (status, body) = json_of(answer).await;
        read.push((status, retry_after, body));
    }
    let compared = read.iter().filter(|(s, ..)| *s == StatusCode::OK).count();
    // Unbounded, six comparisons held some 300 MB at once; two raw ones a few MB.
    assert!(
        grown < 100 * 1024,
        "the hub's peak memory grew by {grown} KiB"
    );
    assert!((1..=2).contains(&compared), "{compared} compared at once");
    for (status, retry_after, body) in read {
        match status {
            StatusCode::OK => {
                assert_eq!(body["raw"], true, "{}", body["note"]);
                assert_eq!(
                    body["note"], "compared as raw text: too large to pretty-print",
                    "{}",
                    body["note"]
                );
                assert_eq!(body["identical"], false);
                assert_eq!(body["rows"][0]["text"], "[".repeat(127));
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(retry_after.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
                let error = body["error"].as_str().unwrap();
                assert!(error.contains("try again"), "{error}");
            }
            status => panic!("{status}: {body}"),
        }
    }
    // Once they are done there is room again.
    let (status, again) = json_of(diff().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    child.kill().await.ok();
}

/// With `--log-max-bytes 8MiB`, 4,000 resends of one message to a subscriber answering
/// 64 KiB grew the hub by some 260 MB: the log never evicts its newest message, and each
/// attempt kept its answer. Now a resend is refused once the message holds more than the
/// budget, and attempts that land past it (resends already queued) keep no answer body.
#[tokio::test]
async fn resends_of_big_answers_stay_within_the_byte_budget() {
    let (mut child, url, http) = start(&["--log-max-bytes", "1MiB"]).await;
    let big = Reply::status(200).body(vec![b'a'; 64 * 1024]);
    let receiver = Receiver::scripted(Vec::new(), big).await;
    let address = receiver.address();
    let registered = http
        .post(format!("{url}/registerAndKeepAlive?address={address}"))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::OK);
    let id = publish(&http, &url, "{}".to_owned()).await;
    let message = |query: &str| {
        let http = http.clone();
        let url = format!("{url}/api/v1/messages/{id}?{query}");
        async move { json_of(http.get(url).send().await.unwrap()).await.1 }
    };
    let settled = || async {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let counts = message("deliveries_limit=1").await["delivery_counts"].clone();
            if counts["pending"] == 0 {
                return counts;
            }
            assert!(Instant::now() < deadline, "still pending: {counts}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    settled().await;
    let before = status_kib(&child, "VmRSS");

    // Sixteen at a time: most are queued before the attempts of the earlier ones land.
    let resend = || {
        let http = http.clone();
        let url = format!("{url}/api/v1/messages/{id}/resend?subscriber={address}");
        async move { json_of(http.post(url).send().await.unwrap()).await }
    };
    let answers: Vec<(StatusCode, Value)> = futures_util::stream::iter(0..1_000)
        .map(|_| resend())
        .buffer_unordered(16)
        .collect()
        .await;
    let mut accepted = 0;
    for (status, body) in &answers {
        match *status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::CONFLICT => {}
            status => panic!("{status}: {body}"),
        }
    }
    let counts = settled().await;
    assert_eq!(counts["delivered"], accepted + 1, "{counts}");

    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logged: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("herald_log_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    let grown = status_kib(&child, "VmRSS").saturating_sub(before);
    // Unbounded, the thousand answers alone are 64 MB.
    assert!(grown < 24 * 1024, "the hub grew by {grown} KiB");
    // The budget, and a few hundred bytes for each delivery that landed past it.
    assert!(logged < 3 * 1024 * 1024, "{logged} bytes logged");

    // Over its share now: refused, as a message with too many deliveries is.
    let (status, refusal) = resend().await;
    assert_eq!(status, StatusCode::CONFLICT, "{refusal}");
    let error = refusal["error"].as_str().unwrap();
    assert!(
        error.contains("share of the log's bytes") && error.contains("publish it again"),
        "{error}"
    );
    // The last attempt says what it did not keep.
    let total = message("deliveries_limit=1").await["deliveries_total"]
        .as_u64()
        .unwrap();
    let last = message(&format!("deliveries_after={}", total - 2)).await;
    let attempt = &last["deliveries"][0]["attempts"][0];
    assert_eq!(attempt["http_status"], 200, "{attempt}");
    assert_eq!(attempt["response"]["body"], "", "{attempt}");
    let not_kept = attempt["not_kept"].as_str().unwrap_or_default();
    assert!(not_kept.contains("--log-max-bytes"), "{attempt}");
    child.kill().await.ok();
}

/// A template that takes milliseconds a message (5 in a release build, 30 in a debug one)
/// and renders to a number: fuel charges for bytes made, not for a function's work, so a
/// loop of random UUIDs stays well within it.
const SLOW_TEMPLATE: &str =
    r#"{% for i in range(5000) %}{% set x = uuid() %}{% endfor %}{{ seq }}"#;

/// Two bursts rendering a 15 ms template on the runtime pushed an unrelated subscriber's
/// delivery latency from 2.3 ms to 2.8 s. Now templates render on a thread of their own
/// at the lowest priority, and deliveries go on as if no burst ran.
#[tokio::test]
async fn bursts_of_a_slow_template_do_not_hold_up_deliveries() {
    // Two runtime workers, and four bursts: without a thread of their own, the bursts'
    // rendering holds every worker whatever the machine's cores.
    let mut child = herald()
        .env("TOKIO_WORKER_THREADS", "2")
        .args(["--headless", "--bind", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let url = listening_url(&mut child).await;
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let mut probe = Receiver::start().await;
    let registered = http
        .post(format!("{url}/api/v1/subscribers"))
        .json(&json!({"address": probe.address(), "topics": ["probe"]}))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success(), "{}", registered.status());
    let mut bursts = Vec::new();
    for _ in 0..4 {
        let answer = http
            .post(format!("{url}/api/v1/bursts"))
            .json(&json!({"count": 1_000_000, "template": SLOW_TEMPLATE, "topic": "load"}))
            .send()
            .await
            .unwrap();
        let (status, burst) = json_of(answer).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{burst}");
        bursts.push(burst["id"].as_u64().unwrap());
    }
    let progress = |id: u64| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer = http.get(format!("{url}/api/v1/bursts/{id}")).send().await;
            json_of(answer.unwrap()).await.1
        }
    };
    // Rendering under way before the probes go.
    let deadline = Instant::now() + PATIENCE;
    while progress(bursts[0]).await["sent"].as_u64() < Some(1) {
        assert!(Instant::now() < deadline, "the burst sent nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Twenty probes, 50 ms apart, each timed from just before its publish to its arrival.
    let mut sent = HashMap::new();
    for n in 0..20u32 {
        sent.insert(n.to_string(), Instant::now());
        let answer = http
            .post(format!("{url}/api/v1/messages?topic=probe"))
            .body(n.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while latencies.len() < sent.len() {
        let Ok(received) = tokio::time::timeout_at(deadline, probe.recv()).await else {
            break;
        };
        let n = String::from_utf8_lossy(&received.body).into_owned();
        latencies.push(received.at - sent[&n]);
    }
    for &id in &bursts {
        let still = progress(id).await;
        assert_eq!(still["state"], "running", "{still}");
        http.delete(format!("{url}/api/v1/bursts/{id}"))
            .send()
            .await
            .unwrap();
    }
    child.kill().await.ok();
    // Those that never arrived within 3 s count as the slowest.
    latencies.sort();
    let median = latencies.get(sent.len() / 2).copied();
    // A delivery to a loopback subscriber takes a few ms; held behind the bursts it took
    // seconds (or never came within the 3 s). 250 ms is fifty times the first, so a busy
    // machine does not fail it, and ten times less than the second.
    assert!(
        median.is_some_and(|median| median < Duration::from_millis(250)),
        "median delivery latency {median:?} ({} of {} delivered: {latencies:?})",
        latencies.len(),
        sent.len()
    );
}
