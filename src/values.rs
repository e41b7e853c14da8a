//! The values settings are made of, parsed with messages that say what to write:
//! durations, sizes, retention, ban lengths, tokens, XDG directories. Imports nothing of
//! Herald's, so that every layer (the command line, the store, the API, the subcommands)
//! can use the same parsers without depending on one another.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The longest duration any flag takes. Far beyond any sensible keep-alive or timeout,
/// and far enough inside what clocks can add that no deadline overflows.
pub const MAX_DURATION: (Duration, &str) = (Duration::from_secs(365 * 24 * 60 * 60), "365 days");

/// A ban's length, as the console and the API take it: 1 s to 365 days.
pub fn ban_duration(text: &str) -> Result<Duration, String> {
    let ban = positive_duration(text)?;
    if ban > Duration::from_secs(365 * 24 * 60 * 60) {
        return Err(format!("{text:?} is more than 365 days"));
    }
    if ban < Duration::from_secs(1) {
        return Err(format!("{text:?} is less than a second"));
    }
    Ok(ban)
}

pub fn positive_duration(text: &str) -> Result<Duration, String> {
    duration_up_to(text, MAX_DURATION)
}

/// A duration longer than zero and at most `max` (a duration, and how to say it).
pub fn duration_up_to(text: &str, (max, said): (Duration, &str)) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("{err}; write a duration such as 500ms, 3s or 2m"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    if duration > max {
        return Err(format!("{text:?} is too long: it must be at most {said}"));
    }
    Ok(duration)
}

/// A size in bytes, with an optional unit (KiB, MiB, GiB), from 1 to `max`.
pub fn byte_size(text: &str, max: usize) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "unknown unit {other:?}; write e.g. 65536, 512KiB or 2MiB"
            ));
        }
    };
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 65536, 512KiB or 2MiB"))?;
    match number.checked_mul(multiplier) {
        Some(0) => Err("must be at least one byte".to_owned()),
        Some(size) if size <= max => Ok(size),
        _ => Err(format!(
            "{text:?} is more than the largest allowed, {max} bytes"
        )),
    }
}

/// How much the store keeps: whichever limit is reached first prunes the oldest
/// messages (never one with a delivery still to make).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub count: u64,
    pub bytes: u64,
    pub age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        "100000,1GiB,7d"
            .parse()
            .expect("the default retention parses")
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{}B,{}",
            self.count,
            self.bytes,
            humantime::format_duration(self.age)
        )
    }
}

/// The largest SIZE `--retain` takes (1 PiB): beyond it a byte count could overflow.
const MAX_RETAIN_BYTES: u64 = 1 << 50;

impl FromStr for Retention {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "give COUNT,SIZE,AGE, e.g. 100000,1GiB,7d";
        let [count, size, age] = text.split(',').map(str::trim).collect::<Vec<_>>()[..] else {
            return Err(format!("{text:?} is not three values; {usage}"));
        };
        let count: u64 = count.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            format!("COUNT {count:?} is not a whole number of messages of at least 1; {usage}")
        })?;
        let bytes = byte_size(size, MAX_RETAIN_BYTES as usize)
            .map_err(|err| format!("SIZE: {err}; {usage}"))? as u64;
        let age = humantime::parse_duration(age)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("AGE {age:?} is not a duration such as 7d or 12h; {usage}"))?;
        Ok(Self { count, bytes, age })
    }
}

/// The longest token accepted: far beyond any generated one, well within a header.
const MAX_TOKEN: usize = 1024;

/// A bearer token a client can send: an empty one would switch authentication off, and a
/// character a header cannot carry as it is would make it one that no request matches.
pub fn token(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err(
            "the token is empty, which would let every request in; give a token of \
                    letters, digits and punctuation, or leave --token out (a hub bound to \
                    another address than loopback then makes one)"
                .to_owned(),
        );
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the token holds {c:?}, which a client cannot send as it is in an Authorization \
             header; use letters, digits and ASCII punctuation only"
        ));
    }
    if text.len() > MAX_TOKEN {
        return Err(format!(
            "the token is {} bytes; at most {MAX_TOKEN}",
            text.len()
        ));
    }
    Ok(text.to_owned())
}

/// An XDG base directory: `$VAR` if set and not empty, or else `~/in_home`. Written by
/// hand for the config file and the data directory alike, so that both follow the same
/// rules on every platform (and tests move both with the environment).
pub fn xdg_dir(var: &str, in_home: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(in_home)))
}
