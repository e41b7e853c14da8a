//! `herald listen`: a receiver in the terminal. It serves `POST /event` on loopback,
//! registers that address with a running hub, refreshes it well within its lease, prints
//! each delivery, checks signatures with the secret the real service would hold (never
//! handed to the hub, so a hub signing with another is caught), can forward each delivery
//! to a local URL, and deregisters on Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::HubArgs;
use super::client::{HubClient, segment};
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
    #[arg(long)]
    pub pretty: bool,
    /// Print one JSON object per delivery (NDJSON), for pipes.
    #[arg(long)]
    pub json: bool,
}

struct Listening {
    args: ListenArgs,
    forward: reqwest::Client,
}

pub(super) async fn run(args: ListenArgs) -> anyhow::Result<std::process::ExitCode> {
    let topics = match &args.topics {
        None => None,
        Some(list) => {
            let parts: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            Some(Pattern::parse_all(&parts)?)
        }
    };
    let hub = HubClient::new(&args.hub)?;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let address = listener.local_addr()?.to_string();
    let mut registration = json!({ "address": address });
    if let Some(topics) = &topics {
        registration["topics"] = topics.iter().map(ToString::to_string).collect();
    }
    let registered = hub
        .json(Method::POST, "/api/v1/subscribers", Some(&registration))
        .await?;
    let lease = registered["lease_seconds"].as_f64().unwrap_or(120.0);
    eprintln!(
        "herald listen: receiving at http://{address}/event, registered with {} (lease {lease:.0} s){}",
        hub.url(),
        topics.as_ref().map_or_else(String::new, |t| {
            let list: Vec<String> = t.iter().map(ToString::to_string).collect();
            format!(", topics {}", list.join(", "))
        }),
    );
    let state = Arc::new(Listening {
        forward: reqwest::Client::builder().no_proxy().build()?,
        args: args.clone(),
    });
    let app = Router::new()
        .fallback(receive)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let keep_alive = tokio::spawn(keep_alive(hub.clone(), registration, lease));
    stopped().await;
    keep_alive.abort();
    server.abort();
    let path = format!("/api/v1/subscribers/{}", segment(&address));
    match hub.json(Method::DELETE, &path, None).await {
        Ok(_) => eprintln!("herald listen: deregistered {address}"),
        Err(err) => eprintln!("herald listen: could not deregister {address}: {err:#}"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Refreshes the registration at a third of the lease, so that two missed refreshes in a
/// row still leave it alive; says so when the hub stops answering or comes back.
async fn keep_alive(hub: HubClient, registration: Value, lease: f64) {
    let every = Duration::from_secs_f64((lease / 3.0).clamp(0.5, 60.0));
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        match hub
            .json(Method::POST, "/api/v1/subscribers", Some(&registration))
            .await
        {
            Ok(_) if failing => {
                eprintln!("herald listen: registered again with {}", hub.url());
                failing = false;
            }
            Ok(_) => {}
            Err(err) if !failing => {
                eprintln!("herald listen: keep-alive failed, retrying: {err:#}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn stopped() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.ok();
}

async fn receive(
    State(state): State<Arc<Listening>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
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
    print(
        &state.args,
        &id,
        topic.as_deref(),
        &headers,
        &body,
        &signature,
        &forwarded,
    );
    match (&signature, forwarded) {
        (Some(Err(_)), _) => (StatusCode::BAD_REQUEST, "bad signature"),
        (_, Some(Ok((status, _)))) => (status, ""),
        (_, Some(Err(_))) => (StatusCode::BAD_GATEWAY, "the forward target did not answer"),
        _ => (StatusCode::OK, ""),
    }
}

/// What the forward target answered, and how long it took; or why it did not.
type Forwarded = Result<(StatusCode, Duration), String>;

async fn forward(
    client: &reqwest::Client,
    url: &url::Url,
    headers: &HeaderMap,
    body: &Bytes,
) -> Forwarded {
    let started = std::time::Instant::now();
    let mut request = client.post(url.clone()).body(body.clone());
    for (name, value) in headers {
        // The hop's own headers are for this hop; the rest (content type, webhook and
        // trace headers, Herald's) are what the service would have received.
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            Ok((status, started.elapsed()))
        }
        Err(err) => Err(err.to_string()),
    }
}

fn print(
    args: &ListenArgs,
    id: &str,
    topic: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    signature: &Option<Result<(), crate::delivery::signature::Unverified>>,
    forwarded: &Option<Forwarded>,
) {
    let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let text = String::from_utf8_lossy(body);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let signature_text = signature.as_ref().map(|s| match s {
        Ok(()) => "valid".to_owned(),
        Err(why) => format!("invalid: {why}"),
    });
    let forwarded_text = forwarded.as_ref().map(|f| match f {
        Ok((status, took)) => format!(
            "{} in {:.1} ms",
            status.as_u16(),
            took.as_secs_f64() * 1000.0
        ),
        Err(why) => format!("failed: {why}"),
    });
    if args.json {
        let line = json!({
            "at": at,
            "id": id.parse::<u64>().ok(),
            "topic": topic,
            "content_type": headers.get("content-type").and_then(|v| v.to_str().ok()),
            "body": parsed.clone().unwrap_or_else(|| Value::String(text.clone().into_owned())),
            "signature": signature_text,
            "forwarded": forwarded_text,
        });
        println!("{line}");
        return;
    }
    let shown = match (&parsed, args.pretty) {
        (Some(value), true) => format!(
            "\n{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        (Some(value), false) => value.to_string(),
        (None, _) => text.into_owned(),
    };
    let mut line = format!("{}  #{id}  {}  {shown}", &at[11..23], topic.unwrap_or("-"));
    if let Some(signature) = signature_text {
        line.push_str(&format!("  [signature {signature}]"));
    }
    if let Some(forwarded) = forwarded_text {
        line.push_str(&format!("  [forwarded: {forwarded}]"));
    }
    println!("{line}");
}
