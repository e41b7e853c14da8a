//! `herald listen`: a receiver in the terminal. It serves `POST /event` on loopback,
//! registers that address with a running hub, refreshes it well within its lease, prints
//! each delivery, checks signatures with the secret the real service would hold (never
//! handed to the hub, so a hub signing with another is caught), can forward each delivery
//! to a local URL, and deregisters on Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::io::Write as _;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::HubArgs;
use super::client::{HubClient, segment};
use crate::delivery::root_cause;
use crate::delivery::signature::verify;
use crate::hub::{Pattern, Secret};
use crate::wire::{
    MESSAGE_ID_HEADER, TOPIC_HEADER, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
};

/// The most of a delivery's body `listen` reads; a larger one is answered 413.
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// The loopback port to receive on (0: any free one).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub port: u16,
    /// Also POST each delivery to this URL (your service), and answer the hub with what
    /// it answered.
    #[arg(long, value_name = "URL")]
    pub forward: Option<url::Url>,
    /// Receive only these topics (comma-separated patterns: orders.*, payments.>).
    #[arg(long, value_name = "PATTERNS")]
    pub topics: Option<String>,
    /// Check each delivery's Standard Webhooks signature with this secret, as your
    /// service would; a bad one is printed and answered 400.
    #[arg(long, value_name = "whsec_...")]
    pub secret: Option<Secret>,
    /// Print JSON bodies indented.
    #[arg(long, conflicts_with = "json")]
    pub pretty: bool,
    /// Print one JSON object per delivery (NDJSON), for pipes.
    #[arg(long)]
    pub json: bool,
}

struct Listening {
    args: ListenArgs,
    forward: reqwest::Client,
    /// Cancelled to stop: by a signal, or when stdout is gone (`listen | head`).
    stop: CancellationToken,
}

/// The longest the deregistration is waited for at exit: a hub that accepts the
/// connection and never answers must not keep the terminal.
const DEREGISTER_WAIT: Duration = Duration::from_secs(3);
/// The longest a forwarded delivery may take: a hub's default delivery timeout.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn run(args: ListenArgs) -> anyhow::Result<std::process::ExitCode> {
    let topics = args
        .topics
        .as_deref()
        .map(Pattern::parse_list)
        .transpose()?;
    let hub = HubClient::new(&args.hub)?;
    // Before registering: from here on a Ctrl-C deregisters rather than kills.
    let stop = CancellationToken::new();
    tokio::spawn(on_signals(stop.clone()));
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let address = listener.local_addr()?.to_string();
    if hub.url().host_str().is_some_and(|h| !is_loopback(h)) {
        eprintln!(
            "herald listen: registering {address}, a loopback address: a hub on another machine cannot deliver to it"
        );
    }
    let mut registration = json!({ "address": address });
    if let Some(topics) = &topics {
        registration["topics"] = topics.iter().map(ToString::to_string).collect();
    }
    let registered = hub
        .json(Method::POST, "/api/v1/subscribers", Some(&registration))
        .await?;
    // Without one (a hub that says nothing of it), refresh often rather than too late.
    let lease = registered["lease_seconds"].as_f64().unwrap_or(3.0);
    eprintln!(
        "herald listen: receiving at http://{address}/event, registered with {} (lease {lease:.0} s){}",
        hub.url(),
        topics.as_ref().map_or_else(String::new, |t| {
            let list: Vec<String> = t.iter().map(ToString::to_string).collect();
            format!(", topics {}", list.join(", "))
        }),
    );
    let state = Arc::new(Listening {
        forward: reqwest::Client::builder()
            .no_proxy()
            .timeout(FORWARD_TIMEOUT)
            // The hub must hear what the service itself answered, not where it pointed.
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        args: args.clone(),
        stop: stop.clone(),
    });
    let app = Router::new()
        .fallback(receive)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let keep_alive = tokio::spawn(keep_alive(hub.clone(), registration, lease, stop.clone()));
    stop.cancelled().await;
    // Awaited, so that a refresh already sent cannot land after the deregistration and
    // register again a port nobody listens on.
    keep_alive.await.ok();
    let path = format!("/api/v1/subscribers/{}", segment(&address));
    match tokio::time::timeout(DEREGISTER_WAIT, hub.json(Method::DELETE, &path, None)).await {
        Ok(Ok(_)) => eprintln!("herald listen: deregistered {address}"),
        Ok(Err(err)) => eprintln!("herald listen: could not deregister {address}: {err:#}"),
        Err(_) => eprintln!(
            "herald listen: no answer to the deregistration within {DEREGISTER_WAIT:?}; {address} expires with its lease"
        ),
    }
    server.abort();
    Ok(std::process::ExitCode::SUCCESS)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refreshes the registration at a third of the lease, so that two missed refreshes in a
/// row still leave it alive; says so when the hub stops answering or comes back.
async fn keep_alive(hub: HubClient, registration: Value, mut lease: f64, stop: CancellationToken) {
    let mut failing = false;
    loop {
        let every = Duration::from_secs_f64((lease / 3.0).clamp(0.5, 60.0));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let refresh = hub.json(Method::POST, "/api/v1/subscribers", Some(&registration));
        // No longer than a period: a hung refresh must not hold the next one past the lease.
        let answer = tokio::time::timeout(every, refresh)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {every:?}")));
        match answer {
            Ok(answer) => {
                // The console can change the TTL live: follow what the hub says now.
                if let Some(now) = answer["lease_seconds"].as_f64() {
                    lease = now;
                }
                if failing {
                    eprintln!("herald listen: registered again with {}", hub.url());
                    failing = false;
                }
            }
            Err(err) if !failing => {
                eprintln!("herald listen: keep-alive failed, retrying: {err:#}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Ctrl-C or SIGTERM stops (and deregisters); a second one exits at once, past a hub
/// that hangs.
async fn on_signals(stop: CancellationToken) {
    signal().await;
    stop.cancel();
    signal().await;
    eprintln!("herald listen: stopped without deregistering");
    std::process::exit(130);
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                tokio::signal::ctrl_c().await.ok();
            }
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.ok();
}

async fn receive(
    State(state): State<Arc<Listening>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, &'static str) {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature = state.args.secret.as_ref().map(|secret| {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        verify(
            secret,
            text(WEBHOOK_ID_HEADER),
            text(WEBHOOK_TIMESTAMP_HEADER),
            text(WEBHOOK_SIGNATURE_HEADER),
            &body,
            now,
        )
    });
    let id = text(MESSAGE_ID_HEADER).unwrap_or("?").to_owned();
    let topic = text(TOPIC_HEADER).map(str::to_owned);
    if let Some(Err(why)) = &signature {
        // Loud, on stderr, whatever --json says: this is what a real service would reject.
        eprintln!("herald listen: BAD SIGNATURE on message {id}: {why}; answered 400");
    }
    let forwarded = match (&state.args.forward, &signature) {
        (Some(url), None | Some(Ok(()))) => {
            Some(forward(&state.forward, url, &headers, &body).await)
        }
        _ => None,
    };
    let delivery = Delivery {
        id: &id,
        topic: topic.as_deref(),
        headers: &headers,
        body: &body,
        signature: &signature,
        forwarded: &forwarded,
    };
    let line = delivery.shown(&state.args);
    if let Err(err) = writeln!(std::io::stdout().lock(), "{line}") {
        // Whoever read the output is gone (`listen | head -3`): stop, deregistering.
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            state.stop.cancel();
        }
    }
    match (&signature, forwarded) {
        (Some(Err(_)), _) => (StatusCode::BAD_REQUEST, HeaderMap::new(), "bad signature"),
        (_, Some(Ok(answered))) => {
            // Its Retry-After too: the hub honours it.
            let mut passed_on = HeaderMap::new();
            if let Some(value) = answered.retry_after {
                passed_on.insert(axum::http::header::RETRY_AFTER, value);
            }
            (answered.status, passed_on, "")
        }
        (_, Some(Err(_))) => (
            StatusCode::BAD_GATEWAY,
            HeaderMap::new(),
            "the forward target did not answer",
        ),
        _ => (StatusCode::OK, HeaderMap::new(), ""),
    }
}

/// What the forward target answered.
struct Answered {
    status: StatusCode,
    took: Duration,
    retry_after: Option<axum::http::HeaderValue>,
}

/// Headers that belong to one hop and are never passed on (RFC 9110, 7.6.1), besides
/// those a `Connection` header names.
const HOP_BY_HOP: [&str; 10] = [
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

async fn forward(
    client: &reqwest::Client,
    url: &url::Url,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Answered, String> {
    let started = std::time::Instant::now();
    let named: Vec<String> = headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .collect();
    let mut request = client.post(url.clone()).body(body.clone());
    for (name, value) in headers {
        // The rest (content type, webhook and trace headers, Herald's) are what the
        // service would have received from the hub.
        let name_text = name.as_str();
        if !HOP_BY_HOP.contains(&name_text) && !named.iter().any(|n| n == name_text) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(response) => Ok(Answered {
            status: StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            took: started.elapsed(),
            retry_after: response
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .and_then(|v| axum::http::HeaderValue::from_bytes(v.as_bytes()).ok()),
        }),
        Err(err) => Err(root_cause(&err)),
    }
}

/// One delivery received, and what became of it here.
struct Delivery<'a> {
    id: &'a str,
    topic: Option<&'a str>,
    headers: &'a HeaderMap,
    body: &'a [u8],
    signature: &'a Option<Result<(), crate::delivery::signature::Unverified>>,
    forwarded: &'a Option<Result<Answered, String>>,
}

impl Delivery<'_> {
    /// As `listen` prints it: one line, or one JSON object with `--json`.
    fn shown(&self, args: &ListenArgs) -> String {
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let text = String::from_utf8_lossy(self.body);
        let parsed: Option<Value> = serde_json::from_slice(self.body).ok();
        let signature = self.signature.as_ref().map(|s| match s {
            Ok(()) => "valid".to_owned(),
            Err(why) => format!("invalid: {why}"),
        });
        let forwarded = self.forwarded.as_ref().map(|f| match f {
            Ok(answered) => format!(
                "{} in {:.1} ms",
                answered.status.as_u16(),
                answered.took.as_secs_f64() * 1000.0
            ),
            Err(why) => format!("failed: {why}"),
        });
        if args.json {
            return json!({
                "at": at,
                "id": self.id.parse::<u64>().ok(),
                "topic": self.topic,
                "content_type": self.headers.get("content-type").and_then(|v| v.to_str().ok()),
                "body": parsed.unwrap_or_else(|| Value::String(text.into_owned())),
                "signature": signature,
                "forwarded": forwarded,
            })
            .to_string();
        }
        let body = match (&parsed, args.pretty) {
            (Some(value), true) => {
                format!(
                    "\n{}",
                    serde_json::to_string_pretty(value).unwrap_or_default()
                )
            }
            (Some(value), false) => value.to_string(),
            // A publisher's bytes must not drive the terminal: control characters escaped.
            (None, _) => text
                .chars()
                .flat_map(|c| {
                    let escaped: Vec<char> = if c.is_control() {
                        c.escape_default().collect()
                    } else {
                        vec![c]
                    };
                    escaped
                })
                .collect(),
        };
        let time = at.get(11..23).unwrap_or(&at);
        let mut line = format!(
            "{time}  #{}  {}  {body}",
            self.id,
            self.topic.unwrap_or("-")
        );
        if let Some(signature) = signature {
            line.push_str(&format!("  [signature {signature}]"));
        }
        if let Some(forwarded) = forwarded {
            line.push_str(&format!("  [forwarded: {forwarded}]"));
        }
        line
    }
}
