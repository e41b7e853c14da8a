//! `herald publish`: one message, or `--repeat N` of them at `--rate R`, through the JSON
//! API; prints each message's id and how many subscribers it reached, and exits non-zero
//! (saying why) when the hub refused one or is not there.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::HubArgs;
use super::client::{HubClient, segment};
use crate::hub::Topic;

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("payload").required(true).args(["data", "file", "stdin"])))]
pub struct PublishArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// The message's topic (orders.created); without one it reaches only subscribers
    /// without topics.
    #[arg(long, value_name = "TOPIC", value_parser = |text: &str| Topic::parse(text).map_err(|e| e.to_string()))]
    pub topic: Option<Topic>,
    /// Its Content-Type.
    #[arg(long, default_value = "application/json", value_name = "TYPE")]
    pub content_type: String,
    /// A header to publish with, `Name: value` (repeatable); reaches subscribers when the
    /// hub forwards it (`--forward-header`).
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The payload, as given.
    #[arg(long, value_name = "TEXT")]
    pub data: Option<String>,
    /// The payload, read from this file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// The payload, read from standard input (`-`).
    #[arg(id = "stdin", value_name = "-", value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
    pub stdin: Option<String>,
    /// Publish it this many times.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000_000), value_name = "N")]
    pub repeat: u32,
    /// At most this many a second with --repeat (default: as fast as the hub accepts).
    #[arg(long, value_name = "PER_SECOND", value_parser = rate, requires = "repeat")]
    pub rate: Option<f64>,
    /// Print the hub's JSON answer for each message.
    #[arg(long)]
    pub json: bool,
}

/// How often the progress counter is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

fn header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not `Name: value`"))?;
    let name = HeaderName::try_from(name.trim())
        .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
    let value = HeaderValue::try_from(value.trim())
        .map_err(|_| format!("the value of {name} is not a header value"))?;
    Ok((name, value))
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate from a fraction to 1000000 a second"
        )),
    }
}

pub(super) async fn run(args: PublishArgs) -> anyhow::Result<std::process::ExitCode> {
    let body = match (&args.data, &args.file) {
        (Some(data), _) => data.clone().into_bytes(),
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, None) => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            bytes
        }
    };
    let hub = HubClient::new(&args.hub)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::try_from(args.content_type.as_str())
            .context("--content-type is not a header value")?,
    );
    for (name, value) in &args.headers {
        // A Content-Type given as a header replaces --content-type's, not adds a second.
        if *name == CONTENT_TYPE {
            headers.insert(name, value.clone());
        } else {
            headers.append(name, value.clone());
        }
    }
    let path = match &args.topic {
        Some(topic) => format!("/api/v1/messages?topic={}", segment(topic.as_str())),
        None => "/api/v1/messages".to_owned(),
    };
    let every = args.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let started = Instant::now();
    // A counter on the terminal's last line, redrawn a few times a second (written by
    // hand: one line of `\r`, where a progress-bar crate would bring its own terminal
    // handling for no more than this).
    let progress = args.repeat > 1 && std::io::stderr().is_terminal();
    let mut drawn = Instant::now();
    let mut reached = 0u64;
    for n in 0..args.repeat {
        if let Some(every) = every {
            let due = started + every.mul_f64(f64::from(n));
            tokio::time::sleep_until(due.into()).await;
        }
        let response = hub
            .send(Method::POST, &path, headers.clone(), Some(body.clone()))
            .await
            .with_context(|| match n {
                0 => "nothing was published".to_owned(),
                n => format!("{n} of {} were published before this", args.repeat),
            })?;
        let text = response.text().await?;
        let answer: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "the hub's answer to message {} of {} is not JSON: {text:.200}",
                n + 1,
                args.repeat
            )
        })?;
        let subscribers = answer["subscribers"].as_u64().unwrap_or(0);
        reached += subscribers;
        if args.json {
            println!("{answer}");
        } else if args.repeat == 1 {
            let noun = if subscribers == 1 {
                "subscriber"
            } else {
                "subscribers"
            };
            println!("message {} queued for {subscribers} {noun}", answer["id"]);
        } else if progress && (drawn.elapsed() >= PROGRESS_EVERY || n + 1 == args.repeat) {
            eprint!("\r{} of {} published", n + 1, args.repeat);
            drawn = Instant::now();
        }
    }
    if args.repeat > 1 && !args.json {
        if progress {
            eprintln!();
        }
        let took = started.elapsed().as_secs_f64();
        println!(
            "{} messages published in {took:.2} s ({:.0}/s), {reached} deliveries queued",
            args.repeat,
            f64::from(args.repeat) / took.max(1e-9)
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
