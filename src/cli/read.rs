//! `herald subscribers`, `herald messages [--follow]` and `herald resend`: the JSON API,
//! readable in a terminal, or as it is with `--json`.

use std::io::Write as _;

use anyhow::bail;
use clap::Args;
use reqwest::Method;
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
    #[arg(long, conflicts_with_all = ["limit", "topic"])]
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

/// The most an event may hold before the stream is given up on: the hub's are small, and
/// a stream that never ends an event must not grow without end.
const MAX_EVENT: usize = 1024 * 1024;

/// Prints the event stream, one line per event, until the hub goes away or whoever reads
/// the output does (`messages --follow | head`).
async fn follow(hub: &HubClient, json: bool) -> anyhow::Result<std::process::ExitCode> {
    let mut response = hub.stream("/api/v1/events").await?;
    let mut pending: Vec<u8> = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        for data in take_events(&mut pending) {
            let line = if json {
                data
            } else {
                match serde_json::from_str::<Value>(&data) {
                    Ok(value) => describe(&value),
                    Err(_) => continue,
                }
            };
            if let Err(err) = writeln!(out, "{line}") {
                if err.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(std::process::ExitCode::SUCCESS);
                }
                return Err(err.into());
            }
        }
        if pending.len() > MAX_EVENT {
            bail!("the hub at {} sent an event of over 1 MiB", hub.url());
        }
    }
    bail!("the hub at {} closed the event stream", hub.url())
}

/// Takes the complete events off the front of `pending` and returns each one's data (its
/// `data:` lines joined with newlines, as Server-Sent Events have it). Lines may end in
/// LF, CRLF or CR; bytes are decoded per event, so a character split across chunks is
/// whole.
fn take_events(pending: &mut Vec<u8>) -> Vec<String> {
    let mut events = Vec::new();
    loop {
        let text = String::from_utf8_lossy(pending)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        let Some(end) = text.find("\n\n") else {
            return events;
        };
        // Where the event ends in the raw bytes: as many line ends as the text had, counted
        // again over the bytes (CRLF is two bytes for one).
        let consumed = raw_end(pending, text[..end].matches('\n').count() + 2);
        let event = &text[..end];
        let data: Vec<&str> = event
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| data.strip_prefix(' ').unwrap_or(data))
            .collect();
        pending.drain(..consumed);
        if !data.is_empty() {
            events.push(data.join("\n"));
        }
    }
}

/// The byte offset just past the `lines`-th line end (CRLF, LF or CR) in `bytes`.
fn raw_end(bytes: &[u8], lines: usize) -> usize {
    let mut seen = 0;
    let mut at = 0;
    while at < bytes.len() {
        let width = match (bytes[at], bytes.get(at + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r' | b'\n', _) => 1,
            _ => {
                at += 1;
                continue;
            }
        };
        at += width;
        seen += 1;
        if seen == lines {
            return at;
        }
    }
    bytes.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_whatever_the_line_ends_and_however_they_are_cut() {
        let stream = "event: published\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: comment\n\ndata: \"é\"\r\rdata: x";
        let bytes = stream.as_bytes();
        for cut in 0..bytes.len() {
            let mut pending = bytes[..cut].to_vec();
            let mut events = take_events(&mut pending);
            pending.extend_from_slice(&bytes[cut..]);
            events.extend(take_events(&mut pending));
            assert_eq!(events, ["{\"a\":\n1}", "\"é\""], "cut at {cut}");
            assert_eq!(pending, b"data: x", "cut at {cut}");
        }
    }
}
