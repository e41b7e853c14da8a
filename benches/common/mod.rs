//! What the end-to-end benchmarks share: the `herald` binary started as its own process.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A running `herald --headless` on a free loopback port.
pub struct Herald {
    pub child: Child,
    /// Its base URL, e.g. `http://127.0.0.1:40123`, read from the line it logs.
    pub url: String,
    pub pid: u32,
}

/// Starts `herald --headless` with `extra` flags and waits until it listens. Another build
/// of Herald (an older commit, say) is measured by the same bench with `HERALD_BIN`.
pub async fn start_herald(extra: &[&str]) -> Herald {
    let binary =
        std::env::var("HERALD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_herald").to_owned());
    let mut child = Command::new(binary)
        .args(["--headless", "--bind", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn,herald::headless=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("herald starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("herald exited early");
        if let Some((_, url)) = line.split_once("Herald listening on ") {
            break url.trim().to_owned();
        }
    };
    // Keep draining, so that herald never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id().unwrap();
    Herald { child, url, pid }
}
