//! `herald subscribers`, `herald messages [--follow]` and `herald resend`: the JSON API,
//! readable in a terminal, or as it is with `--json`.

use anyhow::bail;
use clap::Args;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::client::{HubClient, segment};
use super::{HubArgs, ReadArgs};

#[derive(Debug, Clone, Args)]
pub struct MessagesArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    /// How many of the newest.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
    pub limit: u32,
    /// Only those whose topic matches this pattern.
    #[arg(long, value_name = "PATTERN")]
    pub topic: Option<String>,
    /// Follow the hub live instead: publishes, deliveries, subscribers coming and going.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ResendArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// The message's id.
    pub id: u64,
    /// Only to this subscriber (its address); default: to every subscriber its topic
    /// reaches now.
    #[arg(long, value_name = "ADDRESS")]
    pub subscriber: Option<String>,
}

pub(super) async fn subscribers(args: ReadArgs) -> anyhow::Result<std::process::ExitCode> {
    let hub = HubClient::new(&args.hub)?;
    let list = hub.json(Method::GET, "/api/v1/subscribers", None).await?;
    if args.json {
        println!("{list}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let topics: Vec<&str> = s["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            [
                text(&s["address"]),
                if topics.is_empty() {
                    "all".to_owned()
                } else {
                    topics.join(",")
                },
                text(&s["state"]),
                format!("{}/{}", s["delivered"], s["failed"]),
                s["last_status"]
                    .as_u64()
                    .map_or("-".to_owned(), |c| c.to_string()),
                text(&s["last_seen"]),
            ]
        })
        .collect();
    table(
        &[
            "ADDRESS",
            "TOPICS",
            "STATE",
            "OK/FAILED",
            "LAST",
            "LAST SEEN",
        ],
        &rows,
    );
    Ok(std::process::ExitCode::SUCCESS)
}

pub(super) async fn messages(args: MessagesArgs) -> anyhow::Result<std::process::ExitCode> {
    let hub = HubClient::new(&args.read.hub)?;
    if args.follow {
        return follow(&hub, args.read.json).await;
    }
    let mut path = format!("/api/v1/messages?limit={}", args.limit);
    if let Some(topic) = &args.topic {
        path.push_str(&format!("&topic={}", segment(topic)));
    }
    let page = hub.json(Method::GET, &path, None).await?;
    if args.read.json {
        println!("{page}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = page["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let counts = &m["delivery_counts"];
            [
                m["id"].to_string(),
                text(&m["received_at"]),
                m["topic"].as_str().unwrap_or("-").to_owned(),
                format!("{} B", m["size"]),
                format!(
                    "{} ok, {} failed, {} pending",
                    counts["delivered"], counts["failed"], counts["pending"]
                ),
            ]
        })
        .collect();
    table(&["ID", "RECEIVED", "TOPIC", "SIZE", "DELIVERIES"], &rows);
    Ok(std::process::ExitCode::SUCCESS)
}

/// Prints the event stream, one line per event, until the hub goes away.
async fn follow(hub: &HubClient, json: bool) -> anyhow::Result<std::process::ExitCode> {
    let mut response = hub
        .send(Method::GET, "/api/v1/events", HeaderMap::new(), None)
        .await?;
    let mut pending = String::new();
    while let Some(chunk) = response.chunk().await? {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        // An event ends with a blank line; its JSON is on its `data:` line.
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let data = data.trim();
            if json {
                println!("{data}");
            } else if let Ok(value) = serde_json::from_str::<Value>(data) {
                println!("{}", describe(&value));
            }
        }
    }
    bail!("the hub at {} closed the event stream", hub.url())
}

/// One event as a line of text.
fn describe(event: &Value) -> String {
    let at = text(&event["at"]);
    let time = at.get(11..23).unwrap_or(&at);
    let topic = event["topic"]
        .as_str()
        .map_or_else(String::new, |t| format!(" on {t}"));
    let what = match event["type"].as_str().unwrap_or("") {
        "published" => format!(
            "message {}{topic} published for {} subscribers",
            event["id"], event["subscribers"]
        ),
        "delivery" => {
            let how = match (event["http_status"].as_u64(), event["error"].as_str()) {
                (_, Some(error)) => error.to_owned(),
                (Some(status), None) => status.to_string(),
                (None, None) => String::new(),
            };
            format!(
                "message {}{topic} {} at {}: {how}",
                event["id"],
                text(&event["outcome"]),
                text(&event["address"])
            )
        }
        "removed" => format!(
            "{} removed: {}",
            text(&event["address"]),
            text(&event["reason"])
        ),
        "lagged" => format!(
            "(missed {} events: this terminal fell behind)",
            event["missed"]
        ),
        kind => format!("{} {kind}", text(&event["address"])),
    };
    format!("{time}  {what}")
}

pub(super) async fn resend(args: ResendArgs) -> anyhow::Result<std::process::ExitCode> {
    let hub = HubClient::new(&args.hub)?;
    let mut path = format!("/api/v1/messages/{}/resend", args.id);
    if let Some(subscriber) = &args.subscriber {
        path.push_str(&format!("?subscriber={}", segment(subscriber)));
    }
    let answer = hub.json(Method::POST, &path, None).await?;
    println!(
        "message {} queued again for {} deliveries",
        args.id, answer["queued"]
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// A JSON string as text; anything else as JSON.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Rows under a header, in columns as wide as their widest cell.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
