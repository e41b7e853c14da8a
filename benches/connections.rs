//! Connections held open against the `herald` binary, on loopback: while HELD connections
//! are held (idle, or with half a request head sent), how long a new client waits for an
//! answer, how many file descriptors the hub has open, and whether deliveries still go out.
//!
//!     cargo bench --bench connections                    # 20,000 idle connections
//!     cargo bench --bench connections -- held=5000       # fewer
//!     cargo bench --bench connections -- partial         # half-sent heads instead of idle
//!     cargo bench --bench connections -- uncapped        # the hub without a cap, to compare
//!
//! The hub runs with its defaults (`--max-connections 1024`) unless `uncapped`. The
//! connections are held by helper processes (this program again, `helper ...`), up to
//! 10,000 each, so that no process needs more descriptors than a common limit allows.
//! Bounded: every connect and request gives up after 5 s, and the whole run after 3
//! minutes.

mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const STEP: Duration = Duration::from_secs(5);
const RUN: Duration = Duration::from_secs(180);
/// Connects in flight at once while filling up (the hub's backlog is 1,024).
const CONNECTING: usize = 256;
/// Connections one helper process holds at most.
const PER_HELPER: usize = 10_000;
const SAMPLES: usize = 20;
const MESSAGES: u64 = 100;

struct Hub {
    /// Killed when dropped.
    _child: Child,
    addr: SocketAddr,
    pid: u32,
}

impl Hub {
    async fn start(extra: &[&str]) -> Self {
        let common::Herald { child, url, pid } = common::start_herald(extra).await;
        let addr = url.trim_start_matches("http://").parse().unwrap();
        Self {
            _child: child,
            addr,
            pid,
        }
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |dir| dir.count())
    }
}

/// Sends `request` on a fresh connection and reads the answer to its end; the time it
/// took, or `None` if it was not answered within [`STEP`].
async fn new_client(addr: SocketAddr, request: &str) -> Option<(Duration, String)> {
    let started = Instant::now();
    let answer = tokio::time::timeout(STEP, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .ok()??;
    Some((started.elapsed(), answer))
}

/// A new client's latency, `SAMPLES` times: (median, slowest, unanswered or not 200).
async fn latency(addr: SocketAddr) -> (Duration, Duration, usize) {
    let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut times = Vec::new();
    let mut failed = 0;
    for _ in 0..SAMPLES {
        match new_client(addr, request).await {
            Some((took, answer)) if answer.starts_with("HTTP/1.1 200") => times.push(took),
            _ => failed += 1,
        }
    }
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or(STEP);
    (median, times.last().copied().unwrap_or(STEP), failed)
}

/// A process holding connections to the hub: it prints `held N F` (held, failed) once
/// they are open, `closed N` (how many the hub has closed) for each line it reads, and
/// exits when its input ends.
struct Helper {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Helper {
    async fn start(addr: SocketAddr, count: usize, partial: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["helper", &format!("addr={addr}"), &format!("held={count}")])
            .args(partial.then_some("partial"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the helper starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    async fn line(&mut self) -> Vec<usize> {
        let line = self
            .lines
            .next_line()
            .await
            .unwrap()
            .expect("the helper died");
        line.split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    }

    async fn closed(&mut self) -> usize {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
        self.line().await[0]
    }
}

async fn helper(addr: SocketAddr, count: usize, partial: bool) {
    herald::service::raise_open_file_limit();
    let prefix: &'static [u8] = if partial {
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
    } else {
        b""
    };
    let (held, failed) = hold(addr, count, prefix).await;
    println!("held {} {failed}", held.len());
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = input.next_line().await {
        println!("closed {}", closed_by_hub(&held));
    }
}

/// Opens `count` connections, each sending `prefix` (nothing, or half a request head).
async fn hold(addr: SocketAddr, count: usize, prefix: &'static [u8]) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::with_capacity(count);
    let mut failed = 0;
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..count {
        if connecting.len() >= CONNECTING
            && let Some(joined) = connecting.join_next().await
        {
            match joined.unwrap() {
                Some(stream) => held.push(stream),
                None => failed += 1,
            }
        }
        connecting.spawn(async move {
            let mut stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
                .await
                .ok()?
                .ok()?;
            stream.write_all(prefix).await.ok()?;
            Some(stream)
        });
    }
    while let Some(joined) = connecting.join_next().await {
        match joined.unwrap() {
            Some(stream) => held.push(stream),
            None => failed += 1,
        }
    }
    (held, failed)
}

/// How many of `held` the hub has closed, by a peek at each socket.
fn closed_by_hub(held: &[TcpStream]) -> usize {
    let mut byte = [0u8; 1];
    held.iter()
        .filter(|stream| {
            // SAFETY: the descriptor is open for as long as `stream`, and recv writes at
            // most one byte into `byte`.
            let read = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    byte.as_mut_ptr().cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            read == 0
                || (read < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
        })
        .count()
}

/// A subscriber that counts what it receives.
async fn sink() -> (SocketAddr, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            StatusCode::OK
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

/// Publishes [`MESSAGES`] messages as new clients, and how long until the sink had them
/// all (or `None` if it did not within [`STEP`]); also how many publishes were refused.
async fn deliveries(addr: SocketAddr, received: &AtomicU64) -> (Option<Duration>, usize) {
    let before = received.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut refused = 0;
    for i in 0..MESSAGES {
        let body = format!("m{i}");
        let request = format!(
            "POST /sendMessage HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if !new_client(addr, &request)
            .await
            .is_some_and(|(_, answer)| answer.starts_with("HTTP/1.1 200"))
        {
            refused += 1;
        }
    }
    let wanted = before + MESSAGES - refused as u64;
    while received.load(Ordering::SeqCst) < wanted {
        if started.elapsed() > STEP + STEP {
            return (None, refused);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (Some(started.elapsed()), refused)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |key: &str| args.iter().find_map(|a| a.strip_prefix(key));
    let count = arg("held=")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000usize);
    let partial = args.iter().any(|a| a == "partial");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.first().is_some_and(|a| a == "helper") {
        let addr = arg("addr=").and_then(|v| v.parse().ok()).expect("addr=");
        runtime.block_on(helper(addr, count, partial));
        return;
    }
    let uncapped = args.iter().any(|a| a == "uncapped");
    let finished =
        runtime.block_on(async { tokio::time::timeout(RUN, run(count, partial, uncapped)).await });
    if finished.is_err() {
        println!("gave up after {RUN:?}");
    }
}

async fn run(count: usize, partial: bool, uncapped: bool) {
    let extra: &[&str] = if uncapped {
        &["--max-connections", "1000000"]
    } else {
        &[]
    };
    let hub = Hub::start(extra).await;
    let (sink, received) = sink().await;
    let register = format!(
        "POST /registerAndKeepAlive?address={sink} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    assert!(
        new_client(hub.addr, &register).await.is_some(),
        "cannot register"
    );
    let (median, slowest, _) = latency(hub.addr).await;
    println!(
        "before: hub fds {}, new client {median:.1?} median, {slowest:.1?} slowest",
        hub.open_fds()
    );

    let started = Instant::now();
    let mut helpers = Vec::new();
    for first in (0..count).step_by(PER_HELPER) {
        let share = PER_HELPER.min(count - first);
        helpers.push(Helper::start(hub.addr, share, partial).await);
    }
    let (mut held, mut failed) = (0, 0);
    for helper in &mut helpers {
        let counts = helper.line().await;
        held += counts[0];
        failed += counts[1];
    }
    let kind = if partial { "half-sent heads" } else { "idle" };
    println!(
        "held {held} {kind} connections in {:.1?} ({failed} connects failed)",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fds = hub.open_fds();
    let (median, slowest, unanswered) = latency(hub.addr).await;
    let (delivered, refused) = deliveries(hub.addr, &received).await;
    let delivered = delivered.map_or_else(
        || format!("not all delivered within {:?}", STEP + STEP),
        |took| format!("all delivered in {took:.1?}"),
    );
    let mut closed = 0;
    for helper in &mut helpers {
        closed += helper.closed().await;
    }
    println!(
        "with them held: hub fds {fds} ({closed} closed by the hub), new client \
         {median:.1?} median, {slowest:.1?} slowest, {unanswered} of {SAMPLES} not \
         answered 200; {MESSAGES} publishes ({refused} refused), {delivered}"
    );
}
