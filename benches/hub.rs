//! End-to-end benchmark of the `herald` binary on loopback.
//!
//! Starts the release `herald --headless` as its own process, K sink subscribers (small
//! HTTP servers in this process that count `POST /event` and read the send time from the
//! body), and a publisher; then prints one line per run. Each K is also measured against a
//! direct reference: the same client posting straight to the same sinks, one request at a
//! time per sink, which is the most this machine delivers that way.
//!
//!     cargo bench --bench hub              # every scenario, about nine minutes
//!     cargo bench --bench hub -- quick     # shorter runs
//!     cargo bench --bench hub -- idle      # one scenario: fanout, idle or isolation
//!     cargo bench --bench hub -- fanout k=100 secs=20   # one K, longer runs
//!     cargo bench --bench hub -- idle publishes=150     # 10,000 subscribers, more messages
//!     cargo bench --bench hub -- payloads               # 1,000 publishes of 1 MiB
//!     cargo bench --bench hub -- topics                 # 10,000 patterns; topic fan-out
//!     cargo bench --bench hub -- durable                # K=10 in memory and on disk
//!     cargo bench --bench hub -- restart                # 100,000 messages back after a kill
//!     cargo bench --bench hub -- cluster                # K=100, one instance and three, over nats-server
//!     cargo bench --bench hub -- takeover               # kill -9 of the delivering instance at 1,000/s
//!     HERALD_BIN=/path/to/herald cargo bench --bench hub -- quick   # another build
//!
//! Numbers are for the machine it runs on; the hub, the sinks and the publisher share its
//! cores, so they are a floor for what the hub does on its own.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::serve::ListenerExt as _;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::process::Child;

/// Publishing connections at "max rate": one client publishing back to back.
const PUBLISHERS: usize = 1;
/// Publishing connections for the overload run, which outruns delivery on purpose.
const OVERLOAD_PUBLISHERS: usize = 8;

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Where sinks count and time what they receive.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    /// Publish-to-receive, in microseconds.
    latencies: Mutex<Vec<u32>>,
    /// When the last delivery arrived (`now_nanos`).
    last_nanos: AtomicU64,
}

impl Tally {
    fn reset(&self) -> (u64, Vec<u32>) {
        let received = self.received.swap(0, Ordering::SeqCst);
        (received, std::mem::take(&mut *self.latencies.lock()))
    }
}

async fn sink(State(tally): State<Arc<Tally>>, request: Request) -> StatusCode {
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let received_at = now_nanos();
    if let Some(sent) = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| b.split(';').next())
        .and_then(|t| t.parse::<u64>().ok())
    {
        let micros = received_at.saturating_sub(sent) / 1000;
        tally
            .latencies
            .lock()
            .push(micros.min(u32::MAX as u64) as u32);
    }
    tally.received.fetch_add(1, Ordering::Relaxed);
    tally.last_nanos.fetch_max(received_at, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

/// `count` sink servers on their own ports, all counting into `tally`.
async fn start_sinks(count: usize, tally: &Arc<Tally>) -> Vec<SocketAddr> {
    let mut addrs = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        // Answers go out at once rather than wait for an ACK (Nagle), as a fast server's do.
        let listener = listener.tap_io(|tcp| {
            tcp.set_nodelay(true).ok();
        });
        let app = Router::new().fallback(sink).with_state(tally.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    }
    addrs
}

/// A port that accepts connections and never answers.
async fn start_hanging() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

struct Hub {
    child: Child,
    url: String,
    pid: u32,
}

impl Hub {
    async fn start(extra: &[&str]) -> Self {
        let common::Herald { child, url, pid } = common::start_herald(extra).await;
        Self { child, url, pid }
    }

    /// Peak resident memory since start (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        status_kib(self.pid, "VmHWM:") / 1024.0
    }

    fn rss_mib(&self) -> f64 {
        status_kib(self.pid, "VmRSS:") / 1024.0
    }

    /// User + system CPU time so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(self.pid)
    }

    async fn metric(&self, http: &reqwest::Client, line_start: &str) -> u64 {
        let text = get_text(http, format!("{}/metrics", self.url)).await;
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn stop(mut self) {
        self.child.kill().await.ok();
    }
}

/// User + system CPU time of process `pid` so far.
fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}

/// CPU time the hypervisor gave to other guests (steal), in seconds, summed over cores:
/// a run with much of it measured a machine that was not all there.
fn steal_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: f64 = stat
        .lines()
        .next()
        .and_then(|cpu| cpu.split_whitespace().nth(8))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Steal since `before`, as a share of all the machine's CPU time over `elapsed`.
fn steal_percent(before: f64, elapsed: Duration) -> f64 {
    (steal_seconds() - before) / (elapsed.as_secs_f64() * num_cpus() as f64) * 100.0
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// Registers every address, with `options` (`&name=value...`) added to each query.
async fn register(http: &reqwest::Client, hub: &str, addresses: &[String], options: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in addresses.chunks(addresses.len().div_ceil(16).max(1)) {
        let chunk = chunk.to_vec();
        let http = http.clone();
        let hub = hub.to_owned();
        let options = options.to_owned();
        tasks.spawn(async move {
            for address in chunk {
                let encoded: String =
                    url::form_urlencoded::byte_serialize(address.as_bytes()).collect();
                let response = http
                    .post(format!(
                        "{hub}/registerAndKeepAlive?address={encoded}{options}"
                    ))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "registering {address}");
            }
        });
    }
    tasks.join_all().await;
}

/// Posts `body()` to `url` from `tasks` loops for `duration`, or at `rate` per second in
/// total; returns how many were accepted (2xx) and each accept's latency in µs.
async fn publish(
    http: &reqwest::Client,
    url: String,
    duration: Duration,
    rate: Option<f64>,
    tasks: usize,
) -> (u64, Vec<u32>) {
    let accepted = Arc::new(AtomicU64::new(0));
    let accept_times = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + duration;
    let mut set = tokio::task::JoinSet::new();
    let tasks = if rate.is_some() { 1 } else { tasks };
    for _ in 0..tasks {
        let (http, url, accepted, accept_times) = (
            http.clone(),
            url.clone(),
            accepted.clone(),
            accept_times.clone(),
        );
        set.spawn(async move {
            let post = |http: reqwest::Client, url: String| async move {
                let started = Instant::now();
                let body = format!("{};{}", now_nanos(), "x".repeat(64));
                let ok = http
                    .post(url)
                    .header("content-type", "text/plain")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                (ok, started.elapsed().as_micros() as u32)
            };
            match rate {
                None => {
                    while Instant::now() < deadline {
                        let (ok, micros) = post(http.clone(), url.clone()).await;
                        if ok {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            accept_times.lock().push(micros);
                        }
                    }
                }
                Some(rate) => {
                    let mut inflight = tokio::task::JoinSet::new();
                    paced(rate, deadline, || {
                        let (http, url, accepted, accept_times) = (
                            http.clone(),
                            url.clone(),
                            accepted.clone(),
                            accept_times.clone(),
                        );
                        inflight.spawn(async move {
                            let (ok, micros) = post(http, url).await;
                            if ok {
                                accepted.fetch_add(1, Ordering::Relaxed);
                                accept_times.lock().push(micros);
                            }
                        });
                    })
                    .await;
                    inflight.join_all().await;
                }
            }
        });
    }
    set.join_all().await;
    let mut times = std::mem::take(&mut *accept_times.lock());
    times.sort_unstable();
    (accepted.load(Ordering::Relaxed), times)
}

/// Calls `send` `per_second` times a second until `deadline`, in ticks of 1 ms that each
/// send their share; `send` starts work and must not wait for it.
async fn paced(per_second: f64, deadline: Instant, mut send: impl FnMut()) {
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut owed = 0.0;
    while Instant::now() < deadline {
        ticker.tick().await;
        owed += per_second / 1000.0;
        while owed >= 1.0 {
            owed -= 1.0;
            send();
        }
    }
}

/// Waits until `expected` deliveries arrived or nothing arrived for two seconds.
async fn drain(tally: &Tally, expected: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = (tally.received.load(Ordering::Relaxed), Instant::now());
    while Instant::now() < deadline {
        let received = tally.received.load(Ordering::Relaxed);
        if received >= expected {
            return;
        }
        if received != last.0 {
            last = (received, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The direct reference: one loop per sink posting to it back to back.
async fn direct(
    http: &reqwest::Client,
    sinks: &[SocketAddr],
    tally: &Arc<Tally>,
    duration: Duration,
) -> f64 {
    tally.reset();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for addr in sinks {
        let http = http.clone();
        let url = format!("http://{addr}/event");
        set.spawn(async move {
            while Instant::now() < deadline {
                let body = format!("{};{}", now_nanos(), "x".repeat(64));
                http.post(&url).body(body).send().await.ok();
            }
        });
    }
    set.join_all().await;
    let (received, _) = tally.reset();
    received as f64 / started.elapsed().as_secs_f64()
}

/// The direct reference at a fixed rate: `per_second` times a second, one post to every
/// sink at once, as a hub's fan-out would. Returns p50 and p99 send-to-receive in ms.
async fn direct_paced(
    http: &reqwest::Client,
    sinks: &[SocketAddr],
    tally: &Arc<Tally>,
    duration: Duration,
    per_second: f64,
) -> (f64, f64) {
    tally.reset();
    let urls: Vec<String> = sinks.iter().map(|a| format!("http://{a}/event")).collect();
    let mut inflight = tokio::task::JoinSet::new();
    paced(per_second, Instant::now() + duration, || {
        let body = bytes::Bytes::from(format!("{};{}", now_nanos(), "x".repeat(64)));
        for url in &urls {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            inflight.spawn(async move { http.post(url).body(body).send().await.ok() });
        }
    })
    .await;
    inflight.join_all().await;
    let (_, mut latencies) = tally.reset();
    latencies.sort_unstable();
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

struct Run<'a> {
    label: &'a str,
    k: usize,
    rate: Option<f64>,
    publishers: usize,
    duration: Duration,
    /// Each subscriber's `max_in_flight`.
    in_flight: u32,
    /// Subscribers take `bench.>` and every message has a topic under it.
    topical: bool,
    /// The hub keeps everything in a `--data-dir` (a fresh one in the temp directory).
    durable: bool,
}

/// One run; `direct_rate`, when given, is what the line compares its deliveries with.
async fn fan_out(http: &reqwest::Client, run: Run<'_>, direct_rate: Option<f64>) -> String {
    let tally = Arc::new(Tally::default());
    let sinks = start_sinks(run.k, &tally).await;
    let store = run.durable.then(|| BenchDir::new("fanout"));
    let hub = match &store {
        Some(dir) => Hub::start(&["--data-dir", dir.arg()]).await,
        None => Hub::start(&[]).await,
    };
    let addresses: Vec<String> = sinks.iter().map(ToString::to_string).collect();
    let mut options = format!("&max_in_flight={}", run.in_flight);
    let mut url = format!("{}/sendMessage", hub.url);
    if run.topical {
        options.push_str("&topics=bench.%3E");
        url.push_str("?topic=bench.load");
    }
    register(http, &hub.url, &addresses, &options).await;
    let cpu_before = hub.cpu_seconds();
    let steal_before = steal_seconds();
    let started = Instant::now();
    let (accepted, accept_times) = publish(http, url, run.duration, run.rate, run.publishers).await;
    let expected = accepted * run.k as u64;
    drain(&tally, expected, Duration::from_secs(30)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (received, mut latencies) = tally.reset();
    latencies.sort_unstable();
    let dropped = hub
        .metric(http, "herald_deliveries_total{outcome=\"queue_full\"}")
        .await;
    let failed_other: u64 = {
        let mut sum = 0;
        for outcome in ["error_status", "connect", "timeout", "request"] {
            sum += hub
                .metric(
                    http,
                    &format!("herald_deliveries_total{{outcome=\"{outcome}\"}}"),
                )
                .await;
        }
        sum
    };
    let deliveries_per_sec = received as f64 / elapsed;
    let cpu = hub.cpu_seconds() - cpu_before;
    let of_direct = direct_rate.map_or_else(String::new, |direct| {
        format!(
            "{:>5.1}% of direct ({direct:.0}/s)  ",
            deliveries_per_sec / direct * 100.0
        )
    });
    let line = format!(
        "{:<24} K={:<4} accepted {:>8.0}/s (p50 {:.2} ms, p99 {:.2} ms)  deliveries {:>8.0}/s  ratio {:.4} ({} dropped: queue full, {} other failures)  p50 {:>7.2} ms  p99 {:>8.2} ms  hub RSS peak {:>5.1} MiB  CPU {:>5.1} s ({:.0} µs per delivery)  {}steal {:.0}%",
        run.label,
        run.k,
        accepted as f64 / run.duration.as_secs_f64(),
        percentile(&accept_times, 0.50),
        percentile(&accept_times, 0.99),
        deliveries_per_sec,
        received as f64 / expected.max(1) as f64,
        dropped,
        failed_other,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        hub.peak_rss_mib(),
        cpu,
        cpu * 1e6 / received.max(1) as f64,
        of_direct,
        steal_percent(steal_before, started.elapsed()),
    );
    hub.stop().await;
    line
}

async fn idle_subscribers(http: &reqwest::Client, count: usize, publishes: usize) -> String {
    let tally = Arc::new(Tally::default());
    let sinks = start_sinks(8, &tally).await;
    let hub = Hub::start(&["--max-subscribers", "20000"]).await;
    // Distinct subscribers sharing a few ports, as URLs with their own paths.
    let addresses: Vec<String> = (0..count)
        .map(|i| format!("http://{}/event/{i}", sinks[i % sinks.len()]))
        .collect();
    register(http, &hub.url, &addresses, "").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = hub.rss_mib();
    let steal_before = steal_seconds();
    let started = Instant::now();
    let mut accept = Vec::new();
    for _ in 0..publishes {
        let started = Instant::now();
        let response = http
            .post(format!("{}/sendMessage", hub.url))
            .body(format!("{};idle", now_nanos()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        accept.push(started.elapsed().as_micros() as u32);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drain(&tally, (count * publishes) as u64, Duration::from_secs(60)).await;
    let (received, _) = tally.reset();
    accept.sort_unstable();
    let line = format!(
        "{count} idle subscribers         RSS idle {idle_rss:.1} MiB  publish accepted p50 {:.2} ms p99 {:.2} ms ({publishes} publishes)  delivered {received}/{}  hub RSS peak {:.1} MiB  steal {:.0}%",
        percentile(&accept, 0.5),
        percentile(&accept, 0.99),
        count * publishes,
        hub.peak_rss_mib(),
        steal_percent(steal_before, started.elapsed()),
    );
    hub.stop().await;
    line
}

/// `count` subscribers each with its own pattern (`bench.s{i}.*`), and publishes whose
/// topic matches one of them: what accepting costs when matching has that many patterns
/// to choose from.
async fn many_patterns(http: &reqwest::Client, count: usize, publishes: usize) -> String {
    let tally = Arc::new(Tally::default());
    let sinks = start_sinks(8, &tally).await;
    let hub = Hub::start(&["--max-subscribers", "20000"]).await;
    // With `count` 1, one subscriber and no topics: the same publishes' HTTP round trip
    // without any matching, to read the other line against.
    if count == 1 {
        register(http, &hub.url, &[sinks[0].to_string()], "").await;
        let accept = timed_publishes(http, &hub.url, publishes, |_| String::new()).await;
        drain(&tally, publishes as u64, Duration::from_secs(30)).await;
        hub.stop().await;
        return format!(
            "1 subscriber, no topics           publish accepted p50 {:.2} ms p99 {:.2} ms ({publishes} publishes, the reference)",
            percentile(&accept, 0.5),
            percentile(&accept, 0.99),
        );
    }
    let addresses: Vec<String> = (0..count)
        .map(|i| format!("http://{}/event/{i}", sinks[i % sinks.len()]))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, chunk) in addresses.chunks(count.div_ceil(16)).enumerate() {
        let (http, url, chunk) = (http.clone(), hub.url.clone(), chunk.to_vec());
        let first = i * count.div_ceil(16);
        tasks.spawn(async move {
            for (n, address) in chunk.iter().enumerate() {
                let encoded: String =
                    url::form_urlencoded::byte_serialize(address.as_bytes()).collect();
                let response = http
                    .post(format!(
                        "{url}/registerAndKeepAlive?address={encoded}&topics=bench.s{}.*",
                        first + n
                    ))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
            }
        });
    }
    tasks.join_all().await;
    let accept = timed_publishes(http, &hub.url, publishes, |n| {
        format!("?topic=bench.s{}.created", (n * 7919) % count)
    })
    .await;
    drain(&tally, publishes as u64, Duration::from_secs(30)).await;
    let (received, _) = tally.reset();
    let line = format!(
        "{count} subscribers, {count} patterns  publish accepted p50 {:.2} ms p99 {:.2} ms ({publishes} publishes, each matching one)  delivered {received}/{publishes}  hub RSS peak {:.1} MiB",
        percentile(&accept, 0.5),
        percentile(&accept, 0.99),
        hub.peak_rss_mib(),
    );
    hub.stop().await;
    line
}

/// `publishes` publishes 5 ms apart, each to `/sendMessage` + `query(n)` and reaching one
/// subscriber; each one's accept time in µs, sorted.
async fn timed_publishes(
    http: &reqwest::Client,
    hub: &str,
    publishes: usize,
    query: impl Fn(usize) -> String,
) -> Vec<u32> {
    let mut accept = Vec::new();
    for n in 0..publishes {
        let started = Instant::now();
        let response = http
            .post(format!("{hub}/sendMessage{}", query(n)))
            .body(format!("{};topic", now_nanos()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        assert_eq!(response.headers()["x-herald-subscribers"], "1");
        accept.push(started.elapsed().as_micros() as u32);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    accept.sort_unstable();
    accept
}

/// `count` publishes of `size` bytes to one subscriber: what the log's byte budget holds
/// the hub's memory to.
async fn large_payloads(http: &reqwest::Client, count: usize, size: usize) -> String {
    let tally = Arc::new(Tally::default());
    let sinks = start_sinks(1, &tally).await;
    let hub = Hub::start(&["--max-body", "2MiB"]).await;
    register(http, &hub.url, &[sinks[0].to_string()], "").await;
    let padding = "x".repeat(size.saturating_sub(32));
    let started = Instant::now();
    for _ in 0..count {
        let response = http
            .post(format!("{}/sendMessage", hub.url))
            .body(format!("{};{padding}", now_nanos()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    drain(&tally, count as u64, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    let (received, _) = tally.reset();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let line = format!(
        "{count} publishes of {:.0} KiB   delivered {received}/{count} in {:.1} s  hub RSS after {:.1} MiB  peak {:.1} MiB  log holds {} messages",
        size as f64 / 1024.0,
        elapsed.as_secs_f64(),
        hub.rss_mib(),
        hub.peak_rss_mib(),
        hub.metric(http, "herald_log_messages ").await,
    );
    hub.stop().await;
    line
}

async fn isolation(
    http: &reqwest::Client,
    fast: usize,
    hanging: usize,
    rate: f64,
    duration: Duration,
) -> String {
    let tally = Arc::new(Tally::default());
    let sinks = start_sinks(10, &tally).await;
    let stuck = start_hanging().await;
    let hub = Hub::start(&["--max-subscribers", "20000"]).await;
    let mut addresses: Vec<String> = (0..fast)
        .map(|i| format!("http://{}/event/{i}", sinks[i % sinks.len()]))
        .collect();
    addresses.extend((0..hanging).map(|i| format!("http://{stuck}/event/{i}")));
    register(http, &hub.url, &addresses, "").await;
    let cpu_before = hub.cpu_seconds();
    let steal_before = steal_seconds();
    let started = Instant::now();
    let (accepted, _) = publish(
        http,
        format!("{}/sendMessage", hub.url),
        duration,
        Some(rate),
        1,
    )
    .await;
    let expected = accepted * fast as u64;
    drain(&tally, expected, Duration::from_secs(30)).await;
    let (received, mut latencies) = tally.reset();
    latencies.sort_unstable();
    let line = format!(
        "{fast} fast + {hanging} hanging  {accepted} publishes at {rate:.0}/s: fast ones got {received}/{expected}  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  hub RSS peak {:.1} MiB  CPU {:.1} s  steal {:.0}%",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        hub.peak_rss_mib(),
        hub.cpu_seconds() - cpu_before,
        steal_percent(steal_before, started.elapsed()),
    );
    hub.stop().await;
    line
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    // Scenario names to run (fanout, idle, isolation, payloads, topics, durable,
    // restart); all when none is named.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| {
            [
                "fanout",
                "idle",
                "isolation",
                "payloads",
                "topics",
                "durable",
                "restart",
                "cluster",
                "takeover",
            ]
            .contains(&a.as_str())
        })
        .collect();
    let wanted = |name: &str| named.is_empty() || named.iter().any(|n| n == name);
    let arg = |key: &str| {
        std::env::args().find_map(|a| a.strip_prefix(key).and_then(|v| v.parse::<u64>().ok()))
    };
    let only_k = arg("k=");
    let duration = Duration::from_secs(arg("secs=").unwrap_or(if quick { 2 } else { 5 }));
    // Thousands of subscribers mean thousands of sockets on the sink side.
    herald::service::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .unwrap();
        println!(
            "herald end-to-end benchmark: {} cores, runs of {duration:?}",
            num_cpus()
        );
        for k in [1usize, 10, 100]
            .into_iter()
            .filter(|&k| wanted("fanout") && only_k.is_none_or(|only| only == k as u64))
        {
            let tally = Arc::new(Tally::default());
            let sinks = start_sinks(k, &tally).await;
            // The median of three: the direct rate swings by a third from run to run on a
            // shared machine, and every "% of direct" below leans on it.
            let mut rates = Vec::new();
            for _ in 0..3 {
                rates.push(direct(&http, &sinks, &tally, duration).await);
            }
            rates.sort_by(f64::total_cmp);
            let direct_rate = rates[1];
            let (p50, p99) =
                direct_paced(&http, &sinks, &tally, duration, 2000.0 / k as f64).await;
            println!(
                "direct reference         K={k:<4} {direct_rate:>8.0} deliveries/s (median of {:.0}, {:.0}, {:.0}); at 2,000/s in bursts of K: p50 {p50:.2} ms  p99 {p99:.2} ms",
                rates[0], rates[1], rates[2]
            );
            let mut runs = vec![
                Run {
                    label: "max rate",
                    k,
                    rate: None,
                    publishers: PUBLISHERS,
                    duration,
                    in_flight: 1,
                    topical: false,
                    durable: false,
                },
                Run {
                    label: "2,000 deliveries/s",
                    k,
                    rate: Some(2000.0 / k as f64),
                    publishers: 1,
                    duration,
                    in_flight: 1,
                    topical: false,
                    durable: false,
                },
            ];
            if k == 1 {
                runs.push(Run {
                    label: "max rate, 16 in flight",
                    k,
                    rate: None,
                    publishers: PUBLISHERS,
                    duration,
                    in_flight: 16,
                    topical: false,
                    durable: false,
                });
            }
            if k == 10 {
                runs.push(Run {
                    label: "overload, 8 publishers",
                    k,
                    rate: None,
                    publishers: OVERLOAD_PUBLISHERS,
                    duration,
                    in_flight: 1,
                    topical: false,
                    durable: false,
                });
            }
            for run in runs {
                println!("{}", fan_out(&http, run, Some(direct_rate)).await);
            }
        }
        if wanted("idle") {
            let publishes = arg("publishes=").map_or(if quick { 10 } else { 100 }, |n| n as usize);
            println!("{}", idle_subscribers(&http, 10_000, publishes).await);
        }
        if wanted("isolation") {
            println!("{}", isolation(&http, 1000, 300, 10.0, duration).await);
        }
        if wanted("payloads") {
            println!("{}", large_payloads(&http, 1000, 1024 * 1024).await);
        }
        if wanted("durable") {
            // In memory and durable, alternated: runs drift more than a few percent.
            let k = only_k.map_or(10, |k| k as usize);
            for (label, rate, durable) in [
                ("max rate, in memory", None, false),
                ("max rate, durable", None, true),
                ("max rate, in memory", None, false),
                ("max rate, durable", None, true),
                ("2,000/s, in memory", Some(2000.0 / k as f64), false),
                ("2,000/s, durable", Some(2000.0 / k as f64), true),
                ("2,000/s K=1, in memory", Some(2000.0), false),
                ("2,000/s K=1, durable", Some(2000.0), true),
            ] {
                let k = if label.contains("K=1") { 1 } else { k };
                let run = Run {
                    label,
                    k,
                    rate,
                    publishers: PUBLISHERS,
                    duration,
                    in_flight: 1,
                    topical: false,
                    durable,
                };
                println!("{}", fan_out(&http, run, None).await);
            }
        }
        if wanted("restart") {
            let messages = arg("messages=").map_or(100_000, |n| n as usize);
            println!("{}", restart(&http, messages, 10_000).await);
        }
        if wanted("cluster") {
            // One instance and three, alternated: runs drift more than a few percent.
            let k = only_k.map_or(100, |k| k as usize);
            for instances in [1, 3, 1, 3] {
                println!("{}", cluster(&http, k, instances, duration).await);
            }
        }
        if wanted("takeover") {
            let secs = arg("secs=").unwrap_or(10);
            for ordered in [false, true] {
                let duration = Duration::from_secs(secs);
                println!("{}", takeover(&http, 1000.0, duration, ordered).await);
            }
        }
        if wanted("topics") {
            println!("{}", many_patterns(&http, 1, 1000).await);
            println!("{}", many_patterns(&http, 10_000, 1000).await);
            // Topic-less and topical fan-out, alternated: runs drift more than the two
            // paths differ.
            let k = only_k.map_or(100, |k| k as usize);
            for topical in [false, true, false, true] {
                let label = if topical { "max rate, topic bench.>" } else { "max rate, no topics" };
                let run = Run {
                    label,
                    k,
                    rate: None,
                    publishers: PUBLISHERS,
                    duration,
                    in_flight: 1,
                    topical,
                    durable: false,
                };
                println!("{}", fan_out(&http, run, None).await);
            }
        }
    });
}

/// A directory of its own in the temp directory, for a durable hub; removed when dropped.
struct BenchDir(std::path::PathBuf);

impl BenchDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("herald-bench-{name}-{}-{n}", std::process::id()));
        std::fs::remove_dir_all(&path).ok();
        Self(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("the temp directory is UTF-8")
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A durable hub with `subscribers` subscribers and `messages` messages kept, killed with
/// SIGKILL and started again on its directory: how long until it serves, all restored.
async fn restart(http: &reqwest::Client, messages: usize, subscribers: usize) -> String {
    let dir = BenchDir::new("restart");
    let flags = ["--data-dir", dir.arg(), "--retain", "1000000,1GiB,7d"];
    let hub = Hub::start(&flags).await;
    // Subscribers to a topic nothing is published on: kept, never delivered to.
    let addresses: Vec<String> = (0..subscribers)
        .map(|n| format!("127.0.0.1:{}", 20_000 + n))
        .collect();
    register(http, &hub.url, &addresses, "&topics=never.published").await;
    let filled = Instant::now();
    let mut sent = 0;
    while sent < messages {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..64.min(messages - sent) {
            let (http, url) = (http.clone(), format!("{}/sendMessage", hub.url));
            batch.spawn(async move {
                let response = http.post(url).body("x".repeat(200)).send().await.unwrap();
                assert!(response.status().is_success());
            });
            sent += 1;
        }
        batch.join_all().await;
    }
    let fill_secs = filled.elapsed().as_secs_f64();
    let size = std::fs::metadata(dir.0.join("herald.db")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.0.join("herald.db-wal")).map_or(0, |m| m.len());
    hub.stop().await;
    let started = Instant::now();
    let hub = Hub::start(&flags).await;
    let listening = started.elapsed();
    let listed = http
        .get(format!("{}/api/v1/subscribers", hub.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let restored = listed.matches("\"address\"").count();
    let serving = started.elapsed();
    let rss = hub.rss_mib();
    hub.stop().await;
    format!(
        "restart after SIGKILL, {messages} messages ({fill_secs:.1} s to publish, store {:.0} MiB) and {subscribers} subscribers: listening in {:.2} s, {restored} subscribers listed {:.2} s after start, RSS {rss:.0} MiB",
        size as f64 / 1_048_576.0,
        listening.as_secs_f64(),
        serving.as_secs_f64(),
    )
}

/// The body of `GET url`.
async fn get_text(http: &reqwest::Client, url: String) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// The cluster as instance `url` sees it.
async fn cluster_view(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let text = get_text(http, format!("{url}/api/v1/cluster")).await;
    serde_json::from_str(&text).unwrap()
}

/// A `nats-server -js` on a free port with a store of its own (Debian's `nats-server`).
struct Nats {
    child: Child,
    url: String,
    _dir: BenchDir,
}

impl Nats {
    async fn start() -> Self {
        let dir = BenchDir::new("nats");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("nats-server")
            .args(["-js", "-sd", dir.arg(), "-a", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server is not installed: apt-get install nats-server");
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn cpu_seconds(&self) -> f64 {
        self.child.id().map_or(0.0, cpu_seconds_of)
    }
}

/// `instances` herald instances over `nats`, each connected and seeing all the others.
async fn cluster_of(http: &reqwest::Client, nats: &Nats, instances: usize) -> Vec<Hub> {
    let mut hubs = Vec::new();
    for n in 0..instances {
        let name = format!("i{n}");
        hubs.push(Hub::start(&["--cluster", &nats.url, "--instance-name", &name]).await);
    }
    for hub in &hubs {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let view = cluster_view(http, &hub.url).await;
            let seen = view["instances"].as_array().map_or(0, Vec::len);
            if view["connected"] == true && seen == instances {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not form: {view}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    hubs
}

/// Waits until `hub` lists `count` subscribers.
async fn until_listing(http: &reqwest::Client, hub: &Hub, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = get_text(http, format!("{}/listSubscribers", hub.url)).await;
        if listed.lines().count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} lists {} of {count}",
            hub.url,
            listed.lines().count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// K sinks registered at one instance of a cluster of `instances`; one publisher per
/// instance, back to back, for `duration`: what the cluster delivers.
async fn cluster(http: &reqwest::Client, k: usize, instances: usize, duration: Duration) -> String {
    let nats = Nats::start().await;
    let hubs = cluster_of(http, &nats, instances).await;
    let tally = Arc::new(Tally::default());
    let sinks = start_sinks(k, &tally).await;
    let addresses: Vec<String> = sinks.iter().map(ToString::to_string).collect();
    register(http, &hubs[0].url, &addresses, "").await;
    for hub in &hubs {
        until_listing(http, hub, k).await;
    }
    // Every instance's consumers are made a moment after it sees the subscribers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before: f64 = hubs.iter().map(Hub::cpu_seconds).sum::<f64>() + nats.cpu_seconds();
    let nats_before = nats.cpu_seconds();
    let started_nanos = now_nanos();
    let publishers: Vec<_> = hubs
        .iter()
        .map(|hub| publish(http, format!("{}/sendMessage", hub.url), duration, None, 1))
        .collect();
    let results = futures_util::future::join_all(publishers).await;
    let accepted: u64 = results.iter().map(|(n, _)| n).sum();
    let mut accept_times: Vec<u32> = results.into_iter().flat_map(|(_, t)| t).collect();
    accept_times.sort_unstable();
    let expected = accepted * k as u64;
    drain(&tally, expected, Duration::from_secs(60)).await;
    // Over by the last delivery, not by the drain's wait for stragglers.
    let elapsed = (tally.last_nanos.load(Ordering::Relaxed) - started_nanos) as f64 / 1e9;
    let cpu = hubs.iter().map(Hub::cpu_seconds).sum::<f64>() + nats.cpu_seconds() - cpu_before;
    let nats_cpu = nats.cpu_seconds() - nats_before;
    // A message JetStream handed to an instance that never said it got it (a pull lost
    // to a missed heartbeat) comes again after the acknowledgement wait: waited for too,
    // and counted apart.
    let on_time = tally.received.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = tally.received.load(Ordering::Relaxed) - on_time;
    let (delivered, mut latencies) = tally.reset();
    latencies.sort_unstable();
    let peak: f64 = hubs.iter().map(Hub::peak_rss_mib).fold(0.0, f64::max);
    for hub in hubs {
        hub.stop().await;
    }
    format!(
        "cluster of {instances}, K={k}, max rate: {:.0} accepted/s, {:.0} deliveries/s ({} of {expected} by {elapsed:.1} s, {late} more within 30 s), publish answered p50 {:.2} ms p99 {:.2} ms, publish-to-receive p50 {:.1} ms p99 {:.1} ms, CPU {:.0} µs per delivery ({:.0}% of it nats-server's), peak RSS per instance {peak:.0} MiB",
        accepted as f64 / duration.as_secs_f64(),
        on_time as f64 / elapsed,
        on_time,
        percentile(&accept_times, 0.50),
        percentile(&accept_times, 0.99),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        cpu * 1e6 / delivered.max(1) as f64,
        nats_cpu * 100.0 / cpu.max(1e-9),
    )
}

/// What one subscriber received, by message number: the takeover's count of losses and
/// duplicates.
#[derive(Default)]
struct Seen {
    times: Mutex<std::collections::HashMap<u64, u32>>,
    last: Mutex<Option<Instant>>,
    longest_gap: Mutex<Duration>,
}

async fn numbered_sink(State(seen): State<Arc<Seen>>, request: Request) -> StatusCode {
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    if let Some(n) = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| b.parse::<u64>().ok())
    {
        *seen.times.lock().entry(n).or_default() += 1;
    }
    let now = Instant::now();
    if let Some(last) = seen.last.lock().replace(now) {
        let mut longest = seen.longest_gap.lock();
        *longest = (*longest).max(now - last);
    }
    StatusCode::NO_CONTENT
}

/// Three instances, one subscriber, `rate` publishes a second for `duration`; a third of
/// the way in, the instance that made the latest delivery is killed with SIGKILL. Every
/// publish answered 2xx must arrive; duplicates are counted.
async fn takeover(http: &reqwest::Client, rate: f64, duration: Duration, ordered: bool) -> String {
    let nats = Nats::start().await;
    let mut hubs = cluster_of(http, &nats, 3).await;
    let seen = Arc::new(Seen::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = listener.local_addr().unwrap();
    let app = Router::new()
        .fallback(numbered_sink)
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let options = if ordered { "&ordered=true" } else { "" };
    register(http, &hubs[0].url, &[sink.to_string()], options).await;
    for hub in &hubs {
        until_listing(http, hub, 1).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let urls: Vec<String> = hubs.iter().map(|h| h.url.clone()).collect();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let publishing = {
        let (http, acknowledged, refused) = (http.clone(), acknowledged.clone(), refused.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + duration;
            let mut inflight = tokio::task::JoinSet::new();
            let mut n = 0u64;
            paced(rate, deadline, || {
                n += 1;
                // Spread over the instances; those killed refuse, and are not counted.
                let url = format!("{}/sendMessage", urls[n as usize % urls.len()]);
                let (http, acknowledged, refused) =
                    (http.clone(), acknowledged.clone(), refused.clone());
                inflight.spawn(async move {
                    let ok = http
                        .post(url)
                        .body(n.to_string())
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        acknowledged.lock().push(n);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                });
            })
            .await;
            inflight.join_all().await;
        })
    };
    tokio::time::sleep(duration / 3).await;
    let view = cluster_view(http, &hubs[0].url).await;
    let victim = view["deliverers"][0]["instance"]
        .as_str()
        .unwrap_or("i0")
        .to_owned();
    let index: usize = victim.trim_start_matches('i').parse().unwrap_or(0);
    let mut killed = hubs.remove(index);
    killed.child.start_kill().unwrap();
    killed.child.wait().await.ok();
    publishing.await.unwrap();
    let acknowledged = std::mem::take(&mut *acknowledged.lock());
    let deadline = Instant::now() + Duration::from_secs(60);
    let all_arrived = || {
        let times = seen.times.lock();
        acknowledged.iter().all(|n| times.contains_key(n))
    };
    while Instant::now() < deadline && !all_arrived() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (lost, twice) = {
        let times = seen.times.lock();
        let lost = acknowledged
            .iter()
            .filter(|n| !times.contains_key(n))
            .count();
        let twice: u32 = times.values().map(|t| t.saturating_sub(1)).sum();
        (lost, twice)
    };
    let gap = *seen.longest_gap.lock();
    for hub in hubs {
        hub.stop().await;
    }
    format!(
        "takeover at {rate:.0}/s for {duration:?}, {} subscriber, {victim} (the latest deliverer) killed with SIGKILL {:.1} s in: {} acknowledged, {lost} lost, {twice} delivered twice, {} publishes refused (sent to the killed instance); longest pause in deliveries {:.2} s",
        if ordered {
            "an ordered"
        } else {
            "an unordered"
        },
        (duration / 3).as_secs_f64(),
        acknowledged.len(),
        refused.load(Ordering::Relaxed),
        gap.as_secs_f64(),
    )
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
