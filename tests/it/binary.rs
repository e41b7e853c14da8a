use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::utils::{PATIENCE, hanging_receiver};

pub(crate) fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .env("RUST_LOG", "info")
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

async fn output(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(PATIENCE, herald().args(args).output())
        .await
        .expect("herald did not exit")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts `herald --headless` on a free port and returns it with its base URL, read from
/// the line it logs once it is listening.
pub(crate) async fn start_headless(extra: &[&str]) -> (Child, String) {
    let mut child = herald()
        .args(["--headless", "--bind", "127.0.0.1:0"])
        .args(extra)
        .spawn()
        .unwrap();
    let url = listening_url(&mut child).await;
    (child, url)
}

/// SIGTERM, as an operator stops it, and waits (a while) for it to be gone, cleanly: a
/// durable hub keeps what it holds first.
pub(crate) async fn stop(mut child: Child) {
    let pid = libc::pid_t::try_from(child.id().unwrap()).unwrap();
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own live child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("herald did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// The base URL a starting `herald` logs once it is listening; its stderr is drained
/// from then on, so that the child never blocks on a full pipe.
pub(crate) async fn listening_url(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, url)) = line.split_once("Herald listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("herald exited without a listening line");
    })
    .await
    .expect("no listening line");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    url
}

#[tokio::test]
async fn bad_flags_exit_non_zero_with_a_message() {
    for (args, expected) in [
        (&["--headless", "--bogus"][..], "--bogus"),
        (&["--headless", "--ttl", "soon"], "500ms"),
        (&["--headless", "--bind", "localhost"], "--bind"),
        (&["--headless", "--reap-every", "0s"], "longer than zero"),
    ] {
        let (code, stderr) = output(args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn no_setting_near_overflow_gets_past_the_command_line() {
    let many_retries = vec!["1s"; 51].join(",");
    for (flag, value, expected) in [
        (
            "--probe-backoff",
            "10000000000000000000s",
            "at most 365 days",
        ),
        ("--probe-backoff", "1s,2s,3s", "first and the longest"),
        ("--ttl", "10000000000000000000s", "at most 365 days"),
        ("--reap-every", "99999999999999d", "at most 365 days"),
        ("--delivery-timeout", "1000y", "at most 365 days"),
        ("--connect-timeout", "0s", "longer than zero"),
        ("--retry-schedule", "18446744073709551616ms", "500ms"),
        ("--retry-schedule", &many_retries, "at most 50"),
        ("--queue-capacity", "0", "1..=1000000"),
        ("--queue-capacity", "99999999999", "--queue-capacity"),
        ("--log-capacity", "-1", "--log-capacity"),
        ("--max-subscribers", "4294967296", "--max-subscribers"),
        ("--max-connections-per-host", "70000", "1..=65535"),
        ("--suspend-after", "0", "1..=1000000"),
        ("--max-body", "0", "at least one byte"),
        ("--max-body", "99999999999999999999", "not a size"),
        ("--max-body", "1024GiB", "largest allowed"),
    ] {
        // `--flag=value`, so that a value like -1 is not taken for a flag.
        let (code, stderr) = output(&["--headless", &format!("{flag}={value}")]).await;
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flag} {value}: {stderr}");
    }
}

#[tokio::test]
async fn a_header_that_cannot_be_forwarded_exits_2_and_says_why() {
    for (name, expected) in [
        ("connection", "hop by hop"),
        ("Content-Length", "hop by hop"),
        ("x-herald-instance", "Herald sets it"),
        ("webhook-id", "Herald sets it"),
        ("traceparent", "always passed on"),
        ("not a name", "not a header name"),
    ] {
        let (code, stderr) = output(&["--headless", "--forward-header", name]).await;
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(stderr.contains("--forward-header"), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn a_busy_port_exits_non_zero_and_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = output(&["--headless", "--bind", &addr]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("--bind"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
}

#[tokio::test]
async fn serves_the_seed_routes_and_stops_promptly_on_sigterm() {
    let (mut child, url) = start_headless(&["--delivery-timeout", "10m"]).await;
    let http = reqwest::Client::new();
    let (hanging, _held) = hanging_receiver().await;
    let response = http
        .post(format!("{url}/registerAndKeepAlive?address={hanging}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "success");
    let response = http
        .post(format!("{url}/sendMessage"))
        .body("stuck")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "success");

    let pid = libc::pid_t::try_from(child.id().unwrap()).unwrap();
    let started = Instant::now();
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own live child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(8), child.wait())
        .await
        .expect("herald did not stop within 8 s of SIGTERM with a hanging subscriber")
        .unwrap();
    assert!(status.success(), "{status:?}");
    eprintln!("stopped {:?} after SIGTERM", started.elapsed());
    assert!(
        http.get(format!("{url}/listSubscribers"))
            .send()
            .await
            .is_err()
    );
}

/// Without a display the window cannot open: Herald says so in its own words, names
/// `--headless`, and exits 1, before it opens anything.
#[tokio::test]
async fn without_a_display_the_console_says_to_run_headless() {
    let output = tokio::time::timeout(
        PATIENCE,
        herald()
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("WAYLAND_SOCKET")
            .args(["--in-memory", "--bind", "127.0.0.1:0"])
            .output(),
    )
    .await
    .expect("herald did not exit")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--headless") && stderr.contains("DISPLAY"),
        "{stderr}"
    );
}
