//! The last round's surfaces probed as an attacker would (#24): each test sends what broke
//! a promise and checks the promise holds. Deep templates and empty tokens here; the
//! rest by surface:

/// A durable hub's backlog beyond the queue waits on disk.
mod backlog;
/// Budgets that must hold: diffs, resends, bursts beside deliveries.
mod budgets;
/// Limits that must not say yes and do nothing; poison at the door; identities; small ones.
mod limits;
/// A plain NATS client writing on `herald.>` in cluster mode.
mod nats;
/// Test subscribers' ports and what they keep.
mod stubs;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::binary::{herald, listening_url};
use crate::utils::PATIENCE;

/// Templates whose nesting overflowed the HTTP thread's stack and aborted the process: each
/// is refused with a 400 that says what to change, and the hub goes on serving.
#[tokio::test]
async fn a_deep_template_is_refused_and_the_hub_lives_on() {
    let mut child = herald()
        .args(["--headless", "--bind", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let url = listening_url(&mut child).await;
    let http = reqwest::Client::new();
    for template in [
        format!("{{{{ {}1 }}}}", "-".repeat(5_400)),
        format!("{{{{ 1{} }}}}", "+1".repeat(6_700)),
        format!("{{{{ 1{} }}}}", "|abs".repeat(11_000)),
    ] {
        let answer = http
            .post(format!("{url}/api/v1/bursts"))
            .json(&json!({"count": 1, "template": template}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        let body: Value = answer.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("operators") && error.contains("line 1"),
            "{error}"
        );
    }
    // A template at the limit still parses and publishes.
    let answer = http
        .post(format!("{url}/api/v1/bursts"))
        .json(&json!({"count": 1, "template": format!("{{{{ {}1 }}}}", "-".repeat(200))}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(child.try_wait().unwrap().is_none(), "the hub exited");
    child.kill().await.ok();
}

/// An empty token (flag, environment or config file) would switch authentication off, and
/// one with characters a header cannot carry could never match: both stop the start.
#[tokio::test]
async fn an_empty_or_unsendable_token_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("herald-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("herald.toml");
    std::fs::write(&config, "token = \"\"\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (&["--token", ""], None, "empty"),
        (&[], Some(""), "empty"),
        (&["--config", &config], None, "empty"),
        (&["--token", "pässword"], None, "'ä'"),
        (&["--token", "two words"], None, "' '"),
    ];
    for (args, env, says) in cases {
        let mut command = herald();
        command
            .args(["--headless", "--bind", "0.0.0.0:0"])
            .args(args);
        if let Some(value) = env {
            command.env("HERALD_TOKEN", value);
        }
        let output = tokio::time::timeout(PATIENCE, command.output())
            .await
            .expect("herald did not exit")
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("token"),
            "{args:?} {env:?}: {stderr}"
        );
    }
    // A real token on a non-loopback bind is required on every route.
    let mut child = herald()
        .args([
            "--headless",
            "--bind",
            "0.0.0.0:0",
            "--token",
            "s3cret-token",
        ])
        .spawn()
        .unwrap();
    let url = listening_url(&mut child)
        .await
        .replace("0.0.0.0", "127.0.0.1");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let refused = http
        .get(format!("{url}/listSubscribers"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let allowed = http
        .get(format!("{url}/listSubscribers"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    child.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();
}
