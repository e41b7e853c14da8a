//! Turning hub data into text for the console.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// `18:42:05.123` (UTC): the console shows times of day, the date is rarely news.
pub(crate) fn time_of_day(at: SystemTime) -> String {
    let text = humantime::format_rfc3339_millis(at).to_string();
    text.get(11..23).unwrap_or(&text).to_owned()
}

/// `4s`, `2m 05s`, `1h 02m`.
pub(crate) fn age(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

pub(crate) fn size(bytes: usize) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// `1,976`: counts that can run into thousands, grouped so they read at a glance.
pub(crate) fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// A subscriber's queue: its depth, and with a store, what waits on disk behind it
/// (`1,024 + 1,976 on disk`).
pub(crate) fn queue(depth: usize, backlog: usize) -> String {
    if backlog == 0 {
        count(depth)
    } else {
        format!("{} + {} on disk", count(depth), count(backlog))
    }
}

pub(crate) fn latency(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// How a payload is shown: pretty JSON, text, or a hex dump, cut at `limit` bytes.
pub(crate) fn payload(body: &[u8], limit: usize) -> (String, &'static str) {
    let shown = &body[..body.len().min(limit)];
    let cut = if body.len() > limit {
        format!("\n… {} more bytes not shown", body.len() - limit)
    } else {
        String::new()
    };
    if body.len() <= limit
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
        && let Ok(pretty) = serde_json::to_string_pretty(&value)
    {
        return (pretty, "JSON");
    }
    match std::str::from_utf8(shown) {
        Ok(text) => (format!("{text}{cut}"), "text"),
        Err(_) => (format!("{}{cut}", hex_dump(shown)), "binary"),
    }
}

/// Offset, sixteen hex bytes, and their printable ASCII, per line.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4);
    for (line, chunk) in bytes.chunks(16).enumerate() {
        write!(out, "{:08x}  ", line * 16).ok();
        for i in 0..16 {
            match chunk.get(i) {
                Some(b) => write!(out, "{b:02x} ").ok(),
                None => write!(out, "   ").ok(),
            };
        }
        out.push(' ');
        out.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        out.push('\n');
    }
    out
}

/// A shell command that publishes `body` to the hub at `url` again.
pub(crate) fn curl(
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
    token: Option<&str>,
) -> String {
    let mut command = String::new();
    let data = match std::str::from_utf8(body) {
        Ok(text) => format!("--data-binary {}", shell_quote(text)),
        Err(_) => {
            // Bytes a shell string cannot hold go through printf's \x escapes.
            let escaped: String = body.iter().map(|b| format!("\\x{b:02x}")).collect();
            command.push_str(&format!("printf '{escaped}' | "));
            "--data-binary @-".to_owned()
        }
    };
    command.push_str(&format!(
        "curl -X POST {}",
        shell_quote(&format!("{url}/sendMessage"))
    ));
    if let Some(content_type) = content_type {
        command.push_str(&format!(
            " -H {}",
            shell_quote(&format!("Content-Type: {content_type}"))
        ));
    }
    if let Some(token) = token {
        command.push_str(&format!(
            " -H {}",
            shell_quote(&format!("Authorization: Bearer {token}"))
        ));
    }
    command.push(' ');
    command.push_str(&data);
    command
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `text` with its first letter capitalised, to stand alone as a status line.
pub(crate) fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_status_lines() {
        assert_eq!(
            sentence("the hub is shutting down"),
            "The hub is shutting down"
        );
        assert_eq!(sentence("élan"), "Élan");
        assert_eq!(sentence(""), "");
    }

    #[test]
    fn counts_and_queues() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_024), "1,024");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(queue(7, 0), "7");
        assert_eq!(queue(1_024, 1_976), "1,024 + 1,976 on disk");
    }

    #[test]
    fn ages_and_sizes() {
        assert_eq!(age(Duration::from_secs(4)), "4s");
        assert_eq!(age(Duration::from_secs(125)), "2m 05s");
        assert_eq!(age(Duration::from_secs(3720)), "1h 02m");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1_048_576), "3.0 MiB");
    }

    #[test]
    fn payloads_are_shown_for_what_they_are() {
        let (json, kind) = payload(br#"{"a":[1,2]}"#, 1024);
        assert_eq!(kind, "JSON");
        assert!(json.contains("\n  \"a\": ["), "{json}");
        assert_eq!(
            payload(b"plain words", 1024),
            ("plain words".to_owned(), "text")
        );
        let (hex, kind) = payload(&[0xff, 0x00, b'A'], 1024);
        assert_eq!(kind, "binary");
        assert!(hex.starts_with("00000000  ff 00 41 "), "{hex}");
        assert!(hex.trim_end().ends_with("..A"), "{hex}");
        let (cut, _) = payload(b"0123456789", 4);
        assert_eq!(cut, "0123\n… 6 more bytes not shown");
    }

    #[test]
    fn curl_commands_quote_what_they_carry() {
        assert_eq!(
            curl(
                "http://127.0.0.1:3000",
                Some("application/json"),
                br#"{"it's":1}"#,
                None
            ),
            r#"curl -X POST 'http://127.0.0.1:3000/sendMessage' -H 'Content-Type: application/json' --data-binary '{"it'\''s":1}'"#
        );
        assert_eq!(
            curl("http://h:1", None, &[0xff, 0x01], Some("t")),
            r"printf '\xff\x01' | curl -X POST 'http://h:1/sendMessage' -H 'Authorization: Bearer t' --data-binary @-"
        );
    }
}
