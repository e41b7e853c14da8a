//! Command-line flags. The flag names are part of Herald's interface: scripts use them.
//! The same settings may come from a config file ([`file`]).

mod file;

pub use file::parse_noting_given;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderName;
use clap::Parser;
use ipnet::IpNet;

use crate::delivery::DeliveryConfig;
use crate::hub::{HubConfig, Secret, TargetPolicy};
use crate::values::{Retention, byte_size, duration_up_to, positive_duration, token};
use crate::wire::{
    HERALD_HEADER_PREFIX, Origin, TRACEPARENT_HEADER, TRACESTATE_HEADER, WEBHOOK_HEADER_PREFIX,
};

/// Herald: a desktop event hub for microservices. Services register a callback address and
/// keep it alive; every message published to the hub is POSTed to every live subscriber.
#[derive(Debug, Clone, Parser)]
#[command(name = "herald", version, about)]
pub struct Config {
    /// Read settings from this TOML file (keys are the flags' names: ttl = "30s"), instead
    /// of herald.toml here or in the user's config directory. Flags and the environment
    /// beat it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Print every setting in force, and where each came from (flag, environment, config
    /// file or default), then exit.
    #[arg(long)]
    pub print_config: bool,

    /// Run the hub without a window (CI, containers, shared use).
    #[arg(long)]
    pub headless: bool,

    /// Keep messages, deliveries and subscribers in SQLite in this directory, so that
    /// nothing accepted is lost and the log outlives the process. The console keeps them
    /// in $XDG_DATA_HOME/herald by default; --headless keeps them in memory unless given
    /// this.
    #[arg(long, value_name = "DIR", conflicts_with = "in_memory")]
    pub data_dir: Option<std::path::PathBuf>,

    /// Keep everything in memory only, the console included.
    #[arg(long)]
    pub in_memory: bool,

    /// Be an instance of a cluster sharing this NATS JetStream (nats://HOST:PORT):
    /// subscribers, messages and outcomes are shared, and each delivery is made by one
    /// instance. The stream keeps the history, so no --data-dir.
    #[arg(long, value_name = "URL", value_parser = cluster_url, conflicts_with = "data_dir")]
    pub cluster: Option<String>,

    /// This instance's name in the cluster (default: host name and port).
    #[arg(long, value_name = "NAME", requires = "cluster", value_parser = instance_name)]
    pub instance_name: Option<String>,

    /// How much the history on disk keeps: the newest COUNT messages, at most SIZE on disk,
    /// none older than AGE, whichever is reached first, pruned every second (a message
    /// with a delivery still to make, or starred, is always kept). Memory is bounded apart
    /// (--log-capacity, --log-max-bytes): the API and the console list memory's messages
    /// first, then the disk's, so with a COUNT below --log-capacity more are listed than
    /// the disk keeps, until they leave memory. GET /api/v1/store shows both.
    #[arg(long, default_value = "100000,1GiB,7d", value_name = "COUNT,SIZE,AGE")]
    pub retain: Retention,

    /// Address and port the HTTP server listens on.
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "IP:PORT")]
    pub bind: SocketAddr,

    /// Remove a subscriber that has not refreshed its registration for this long.
    #[arg(long, default_value = "2m", value_parser = positive_duration, value_name = "DURATION")]
    pub ttl: Duration,

    /// How often to look for subscribers past their TTL.
    #[arg(long, default_value = "1m", value_parser = positive_duration, value_name = "DURATION")]
    pub reap_every: Duration,

    /// Deliveries waiting per subscriber; beyond this new ones are dropped and recorded
    /// (with --data-dir they wait on disk instead, read back as the queue drains).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "N")]
    pub queue_capacity: u32,

    /// Messages kept in memory (newest kept; fewer when they went to many subscribers:
    /// the log holds at most 500,000 delivery records). With a store, the API and the
    /// console list memory's and then the store's, which --retain bounds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000), value_name = "N")]
    pub log_capacity: u32,

    /// Bytes the message log keeps at most, counting payloads and everything kept per
    /// delivery attempt; the oldest messages leave first.
    #[arg(long, default_value = "256MiB", value_parser = |text: &str| byte_size(text, MAX_LOG_BYTES), value_name = "SIZE")]
    pub log_max_bytes: usize,

    /// Most subscribers the hub accepts at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "N")]
    pub max_subscribers: u32,

    /// Longest wait for a connection to a subscriber.
    #[arg(long, default_value = "2s", value_parser = positive_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// Longest wait for one whole delivery.
    #[arg(long, default_value = "10s", value_parser = positive_duration, value_name = "DURATION")]
    pub delivery_timeout: Duration,

    /// Most deliveries in flight at once to one subscriber host (scheme, host and port),
    /// and so most connections to it: subscribers that share a service take turns.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_535), value_name = "N")]
    pub max_connections_per_host: u32,

    /// Largest request body accepted on any route (bytes; KiB and MiB suffixes allowed).
    #[arg(long, default_value = "1MiB", value_parser = |text: &str| byte_size(text, MAX_BODY), value_name = "SIZE")]
    pub max_body: usize,

    /// Waits before each retry of a failed delivery, comma-separated; "" for no retries.
    #[arg(long, default_value = "500ms,2s,8s", value_parser = retry_schedule, value_name = "DURATIONS")]
    pub retry_schedule: RetrySchedule,

    /// After this many failed messages in a row a subscriber is suspended: its queue is
    /// kept and it is probed until it answers.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "N")]
    pub suspend_after: u32,

    /// First and longest wait between probes of a suspended subscriber (doubling).
    #[arg(long, default_value = "1s,60s", value_parser = probe_backoff, value_name = "FIRST,MAX")]
    pub probe_backoff: RetrySchedule,

    /// Sign every delivery (Standard Webhooks) with this secret, unless the subscriber
    /// registered its own.
    #[arg(
        long,
        value_name = "whsec_…",
        env = "HERALD_SIGNING_SECRET",
        hide_env_values = true
    )]
    pub signing_secret: Option<Secret>,

    /// Require `Authorization: Bearer TOKEN` on every route. Bound to a non-loopback
    /// address, Herald always requires one and generates it if none is given.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "HERALD_TOKEN",
        hide_env_values = true,
        value_parser = token
    )]
    pub token: Option<String>,

    /// Also answer requests whose Host header names this host (besides localhost and IP
    /// addresses). Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,

    /// Never deliver to addresses in this network. Repeatable.
    #[arg(long = "deny-target", value_name = "CIDR")]
    pub deny_targets: Vec<IpNet>,

    /// Deliver to addresses in this network even where the defaults refuse (link-local,
    /// multicast...). Repeatable.
    #[arg(long = "allow-target", value_name = "CIDR")]
    pub allow_targets: Vec<IpNet>,

    /// Also accept requests from web pages at this origin (scheme://host:port, e.g.
    /// http://localhost:5173). Without it, a request whose Origin header is not the hub's
    /// own, or that a browser marks as cross-site or same-site, is refused with 403, so
    /// that no page you visit can drive the hub. Repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<Origin>,

    /// Drop a connection whose request head is not complete this long after its first
    /// byte, and answer 408 to a request whose body stalls this long (nothing of it is
    /// published), so that slow clients cannot hold connections (at most 24h).
    #[arg(long, default_value = "10s", value_parser = edge_timeout, value_name = "DURATION")]
    pub header_timeout: Duration,

    /// Close a keep-alive connection that has waited this long for its next request; an
    /// open /api/v1/events stream is not idle (at most 24h).
    #[arg(long, default_value = "60s", value_parser = edge_timeout, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Most inbound connections open at once (1 to 1,000,000), well below the open-file
    /// limit so that deliveries always have descriptors. At the cap the connection idle or
    /// incomplete the longest is closed to make room; if every one is busy, a newcomer
    /// gets 503.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "N")]
    pub max_connections: u32,
    /// Pass this header of a publish on to every delivery (besides Content-Type and
    /// the trace context, which always pass). Repeatable.
    #[arg(long = "forward-header", value_name = "NAME", value_parser = forward_header)]
    pub forward_headers: Vec<HeaderName>,
}

/// A `Retry-After` longer than this is cut to it (a subscriber cannot park its queue).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The most retries `--retry-schedule` may list.
const MAX_RETRIES: usize = 50;
/// The largest `--log-max-bytes`.
const MAX_LOG_BYTES: usize = 1024 * 1024 * 1024 * 1024;
/// The largest `--max-body`.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// The `--retry-schedule` list. A type of its own so clap takes it as one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl Default for Config {
    fn default() -> Self {
        Self::parse_from(["herald"])
    }
}

impl Config {
    /// `--forward-header`'s names, each once: named twice, a header would be forwarded
    /// twice. The server's and the cluster's (for plain NATS clients) alike.
    pub fn forwarded_headers(&self) -> Vec<HeaderName> {
        let names = &self.forward_headers;
        names
            .iter()
            .enumerate()
            .filter(|(i, name)| !names[..*i].contains(name))
            .map(|(_, name)| name.clone())
            .collect()
    }

    pub fn hub(&self) -> HubConfig {
        HubConfig {
            ttl: self.ttl,
            reap_every: self.reap_every,
            queue_capacity: self.queue_capacity as usize,
            log_capacity: self.log_capacity as usize,
            log_max_bytes: self.log_max_bytes,
            max_subscribers: self.max_subscribers as usize,
            policy: self.policy(),
        }
    }

    /// `--probe-backoff` as (first, longest); one value means a fixed interval.
    fn probe_backoff(&self) -> (Duration, Duration) {
        let first = self
            .probe_backoff
            .0
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(1));
        let max = self.probe_backoff.0.get(1).copied().unwrap_or(first);
        (first, max.max(first))
    }

    /// The target policy; the hub's own address is filled in once it is bound.
    pub fn policy(&self) -> TargetPolicy {
        TargetPolicy {
            deny: self.deny_targets.clone(),
            allow: self.allow_targets.clone(),
            own_addr: None,
        }
    }

    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            connect_timeout: self.connect_timeout,
            timeout: self.delivery_timeout,
            retry_schedule: self.retry_schedule.0.clone(),
            suspend_after: self.suspend_after,
            max_connections_per_host: self.max_connections_per_host as usize,
            probe_backoff: self.probe_backoff(),
            signing_secret: self.signing_secret.clone(),
            policy: self.policy(),
            max_retry_after: MAX_RETRY_AFTER,
        }
    }
}

// Each default is written once, in the flags above; the parts' configs take theirs from
// there, so a default shown by `--help` is the one in force everywhere.
impl Default for HubConfig {
    fn default() -> Self {
        Config::default().hub()
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Config::default().delivery()
    }
}

fn retry_schedule(text: &str) -> Result<RetrySchedule, String> {
    let schedule: Vec<Duration> = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(positive_duration)
        .collect::<Result<_, _>>()?;
    if schedule.len() > MAX_RETRIES {
        return Err(format!(
            "{} retries listed; at most {MAX_RETRIES} are taken",
            schedule.len()
        ));
    }
    Ok(RetrySchedule(schedule))
}

/// `FIRST` or `FIRST,MAX`.
fn probe_backoff(text: &str) -> Result<RetrySchedule, String> {
    let schedule = retry_schedule(text)?;
    match schedule.0.len() {
        1 | 2 => Ok(schedule),
        _ => Err("write the first and the longest wait, e.g. 1s,60s".to_owned()),
    }
}

/// A header a publisher may have forwarded: a valid name, neither about one connection
/// (hop-by-hop) nor one Herald sets or reads itself.
fn forward_header(text: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("{text:?} is not a header name; write one such as x-request-id"))?;
    let refused = match name.as_str() {
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te"
        | "trailer" | "upgrade" | "host" | "content-length" | "expect" => {
            "it is about one connection (hop by hop), and each delivery has its own"
        }
        "authorization" | "proxy-authorization" | "proxy-authenticate" => {
            "it carries a publisher's credentials for Herald (--token), not for subscribers"
        }
        "content-type" | TRACEPARENT_HEADER | TRACESTATE_HEADER => {
            "it is always passed on; there is no need to name it"
        }
        other
            if other.starts_with(HERALD_HEADER_PREFIX)
                || other.starts_with(WEBHOOK_HEADER_PREFIX) =>
        {
            "Herald sets it on every delivery itself"
        }
        _ => return Ok(name),
    };
    Err(format!("{name} cannot be forwarded: {refused}"))
}

/// A NATS server's URL: `nats://HOST:PORT` (the port may be left out: 4222).
fn cluster_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text)
        .map_err(|err| format!("{err}; give the NATS server as nats://HOST:PORT"))?;
    if !matches!(url.scheme(), "nats" | "tls") {
        return Err(format!(
            "{:?} is not a NATS URL; give it as nats://HOST:PORT",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host; give it as nats://HOST:PORT".to_owned());
    }
    Ok(text.to_owned())
}

/// An instance's name: what a NATS client name and a listing can show as it is.
fn instance_name(text: &str) -> Result<String, String> {
    let fits = (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if !fits {
        return Err("use 1 to 64 letters, digits, '-', '_', '.' or ':'".to_owned());
    }
    Ok(text.to_owned())
}

/// Longest `--header-timeout` or `--idle-timeout`: beyond a day a timeout protects
/// nothing, and adding a vast one to the clock would overflow it.
const MAX_EDGE_TIMEOUT: (Duration, &str) = (Duration::from_secs(24 * 60 * 60), "1day");

fn edge_timeout(text: &str) -> Result<Duration, String> {
    duration_up_to(text, MAX_EDGE_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_seed() {
        let config = Config::default();
        assert_eq!(config.bind, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(config.ttl, Duration::from_secs(120));
        assert_eq!(config.reap_every, Duration::from_secs(60));
        assert_eq!(config.max_body, 1024 * 1024);
        assert!(!config.headless);
    }

    #[test]
    fn durations_and_sizes_parse() {
        let config = Config::try_parse_from([
            "herald",
            "--headless",
            "--ttl",
            "500ms",
            "--reap-every",
            "3s",
            "--max-body",
            "64KiB",
        ])
        .unwrap();
        assert_eq!(config.ttl, Duration::from_millis(500));
        assert_eq!(config.reap_every, Duration::from_secs(3));
        assert_eq!(config.max_body, 65536);
        assert!(Config::try_parse_from(["herald", "--ttl", "0s"]).is_err());
        assert!(Config::try_parse_from(["herald", "--ttl", "soon"]).is_err());
        assert!(Config::try_parse_from(["herald", "--max-body", "1GB"]).is_err());
        assert!(Config::try_parse_from(["herald", "--bind", "localhost"]).is_err());
    }

    #[test]
    fn retry_schedules_and_policies_parse() {
        assert_eq!(
            Config::default().retry_schedule.0,
            [500, 2000, 8000].map(Duration::from_millis)
        );
        let config = Config::try_parse_from([
            "herald",
            "--retry-schedule",
            "",
            "--deny-target",
            "10.0.0.0/8",
            "--allow-target",
            "169.254.1.0/24",
            "--signing-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ])
        .unwrap();
        assert!(config.retry_schedule.0.is_empty());
        assert_eq!(config.policy().deny.len(), 1);
        assert_eq!(config.policy().allow.len(), 1);
        assert!(config.signing_secret.is_some());
        assert!(Config::try_parse_from(["herald", "--retry-schedule", "1s,x"]).is_err());
        assert!(Config::try_parse_from(["herald", "--signing-secret", "hunter2"]).is_err());
        assert!(Config::try_parse_from(["herald", "--deny-target", "10.0.0.0/99"]).is_err());
    }

    #[test]
    fn forwarded_headers_are_checked_and_named_once() {
        let config = Config::try_parse_from([
            "herald",
            "--forward-header",
            "X-Request-Id",
            "--forward-header",
            "baggage",
            "--forward-header",
            "x-request-id",
        ])
        .unwrap();
        assert_eq!(config.forwarded_headers(), ["x-request-id", "baggage"]);
        for (name, why) in [
            ("connection", "hop by hop"),
            ("Transfer-Encoding", "hop by hop"),
            ("host", "hop by hop"),
            ("authorization", "credentials"),
            ("content-type", "always passed on"),
            ("traceparent", "always passed on"),
            ("x-herald-instance", "sets it"),
            ("webhook-signature", "sets it"),
            ("x request", "not a header name"),
            ("", "not a header name"),
        ] {
            let err = forward_header(name).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
    }
}
