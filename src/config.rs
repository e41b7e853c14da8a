//! Command-line flags. The flag names are part of Herald's interface: scripts use them.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::delivery::DeliveryConfig;
use crate::hub::HubConfig;
use crate::server::ServerConfig;

/// Herald: a desktop event hub for microservices. Services register a callback address and
/// keep it alive; every message published to the hub is POSTed to every live subscriber.
#[derive(Debug, Clone, Parser)]
#[command(name = "herald", version, about)]
pub struct Config {
    /// Run the hub without a window (CI, containers, shared use).
    #[arg(long)]
    pub headless: bool,

    /// Address and port the HTTP server listens on.
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "IP:PORT")]
    pub bind: SocketAddr,

    /// Remove a subscriber that has not refreshed its registration for this long.
    #[arg(long, default_value = "2m", value_parser = positive_duration, value_name = "DURATION")]
    pub ttl: Duration,

    /// How often to look for subscribers past their TTL.
    #[arg(long, default_value = "1m", value_parser = positive_duration, value_name = "DURATION")]
    pub reap_every: Duration,

    /// Deliveries waiting per subscriber; beyond this new ones are dropped and recorded.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub queue_capacity: u32,

    /// Messages kept in the log (newest kept).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub log_capacity: u32,

    /// Most subscribers the hub accepts at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_subscribers: u32,

    /// Longest wait for a connection to a subscriber.
    #[arg(long, default_value = "2s", value_parser = positive_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// Longest wait for one whole delivery.
    #[arg(long, default_value = "10s", value_parser = positive_duration, value_name = "DURATION")]
    pub delivery_timeout: Duration,

    /// Largest message body accepted (bytes; KiB and MiB suffixes allowed).
    #[arg(long, default_value = "1MiB", value_parser = byte_size, value_name = "SIZE")]
    pub max_body: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self::parse_from(["herald"])
    }
}

impl Config {
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            ttl: self.ttl,
            queue_capacity: self.queue_capacity as usize,
            log_capacity: self.log_capacity as usize,
            max_subscribers: self.max_subscribers as usize,
        }
    }

    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            connect_timeout: self.connect_timeout,
            timeout: self.delivery_timeout,
        }
    }

    pub fn server(&self) -> ServerConfig {
        ServerConfig {
            max_body: self.max_body,
        }
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("{err}; write a duration such as 500ms, 3s or 2m"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(duration)
}

fn byte_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => {
            return Err(format!(
                "unknown unit {other:?}; write e.g. 65536, 512KiB or 2MiB"
            ));
        }
    };
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 65536, 512KiB or 2MiB"))?;
    number
        .checked_mul(multiplier)
        .filter(|size| *size > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
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
}
