//! How the hub's values are written into columns and read back.
//!
//! An outcome is four columns: its `/metrics` kind, a number, a duration and a text, each
//! kind using the ones it needs. Forwarded headers are one blob of length-prefixed names
//! and values: their values are bytes, not always text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::hub::{DeliveryError, Outcome, OutcomeKind, RemovalReason};

/// An outcome as its columns: kind, number, microseconds, text.
pub(crate) type OutcomeColumns = (&'static str, Option<i64>, Option<i64>, Option<String>);

pub(crate) fn outcome_columns(outcome: &Outcome) -> OutcomeColumns {
    let kind = outcome.kind().label();
    let micros = |d: &Duration| Some(i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    match outcome {
        Outcome::Delivered { status, latency } => {
            (kind, Some(i64::from(*status)), micros(latency), None)
        }
        Outcome::Failed(error) => match error {
            DeliveryError::Status { status, latency } => {
                (kind, Some(i64::from(*status)), micros(latency), None)
            }
            DeliveryError::Redirect { status, location } => {
                (kind, Some(i64::from(*status)), None, Some(location.clone()))
            }
            DeliveryError::Connect(text)
            | DeliveryError::Request(text)
            | DeliveryError::Blocked(text)
            | DeliveryError::Crashed(text) => (kind, None, None, Some(text.clone())),
            DeliveryError::Timeout(after) => (kind, None, micros(after), None),
            DeliveryError::QueueFull { capacity } => {
                (kind, i64::try_from(*capacity).ok(), None, None)
            }
            DeliveryError::Removed(reason) => {
                (kind, None, None, Some(removal_label(*reason).to_owned()))
            }
        },
    }
}

/// Reads an outcome back; `None` for a kind this version does not know.
pub(crate) fn outcome_from(
    kind: &str,
    number: Option<i64>,
    micros: Option<i64>,
    text: Option<String>,
) -> Option<Outcome> {
    let kind = OutcomeKind::ALL.into_iter().find(|k| k.label() == kind)?;
    let status = || number.and_then(|n| u16::try_from(n).ok()).unwrap_or(0);
    let duration =
        || Duration::from_micros(micros.and_then(|m| u64::try_from(m).ok()).unwrap_or(0));
    let text = || text.clone().unwrap_or_default();
    let error = match kind {
        OutcomeKind::Delivered => {
            return Some(Outcome::Delivered {
                status: status(),
                latency: duration(),
            });
        }
        OutcomeKind::ErrorStatus => DeliveryError::Status {
            status: status(),
            latency: duration(),
        },
        OutcomeKind::Redirect => DeliveryError::Redirect {
            status: status(),
            location: text(),
        },
        OutcomeKind::Connect => DeliveryError::Connect(text()),
        OutcomeKind::Timeout => DeliveryError::Timeout(duration()),
        OutcomeKind::Request => DeliveryError::Request(text()),
        OutcomeKind::Blocked => DeliveryError::Blocked(text()),
        OutcomeKind::QueueFull => DeliveryError::QueueFull {
            capacity: number.and_then(|n| usize::try_from(n).ok()).unwrap_or(0),
        },
        OutcomeKind::Removed => DeliveryError::Removed(removal_from(&text())),
        OutcomeKind::Crashed => DeliveryError::Crashed(text()),
    };
    Some(Outcome::Failed(error))
}

fn removal_label(reason: RemovalReason) -> &'static str {
    match reason {
        RemovalReason::Deregistered => "deregistered",
        RemovalReason::Expired => "expired",
        RemovalReason::Kicked => "kicked",
        RemovalReason::Gone => "gone",
        RemovalReason::Shutdown => "shutdown",
    }
}

fn removal_from(label: &str) -> RemovalReason {
    match label {
        "deregistered" => RemovalReason::Deregistered,
        "kicked" => RemovalReason::Kicked,
        "gone" => RemovalReason::Gone,
        "shutdown" => RemovalReason::Shutdown,
        _ => RemovalReason::Expired,
    }
}

/// Milliseconds since the Unix epoch (0 for a time before it).
pub(crate) fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The latest time read back: the end of year 9999, the last RFC 3339 can write (a damaged
/// row must not make every later formatting of it fail).
const LATEST_MILLIS: u64 = 253_402_300_799_999;

pub(crate) fn time_of(millis: i64) -> SystemTime {
    let millis = u64::try_from(millis).unwrap_or(0).min(LATEST_MILLIS);
    UNIX_EPOCH + Duration::from_millis(millis)
}

/// Header pairs as one blob: for each, the name's and the value's length (4 bytes, little
/// endian) followed by their bytes.
pub(crate) fn headers_blob(headers: &[(String, bytes::Bytes)]) -> Vec<u8> {
    let mut blob = Vec::new();
    for (name, value) in headers {
        for part in [name.as_bytes(), value.as_ref()] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            blob.extend_from_slice(&len.to_le_bytes());
            blob.extend_from_slice(part);
        }
    }
    blob
}

/// Reads [`headers_blob`] back; a blob cut short yields the pairs before the cut.
pub(crate) fn headers_from(mut blob: &[u8]) -> Vec<(String, bytes::Bytes)> {
    let take = |blob: &mut &[u8]| -> Option<Vec<u8>> {
        let (len, rest) = blob.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let part = rest.get(..len)?.to_vec();
        *blob = &rest[len..];
        Some(part)
    };
    let mut headers = Vec::new();
    while let (Some(name), Some(value)) = (take(&mut blob), take(&mut blob)) {
        headers.push((String::from_utf8_lossy(&name).into_owned(), value.into()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_kind_reads_back_as_it_was_written() {
        let outcomes = [
            Outcome::Delivered {
                status: 204,
                latency: Duration::from_micros(1_234),
            },
            Outcome::Failed(DeliveryError::Status {
                status: 503,
                latency: Duration::from_millis(7),
            }),
            Outcome::Failed(DeliveryError::Redirect {
                status: 302,
                location: "http://elsewhere/".into(),
            }),
            Outcome::Failed(DeliveryError::Connect("refused".into())),
            Outcome::Failed(DeliveryError::Timeout(Duration::from_secs(10))),
            Outcome::Failed(DeliveryError::Request("reset".into())),
            Outcome::Failed(DeliveryError::Blocked("loopback".into())),
            Outcome::Failed(DeliveryError::QueueFull { capacity: 1024 }),
            Outcome::Failed(DeliveryError::Removed(RemovalReason::Gone)),
            Outcome::Failed(DeliveryError::Crashed("panic".into())),
        ];
        assert_eq!(outcomes.len(), OutcomeKind::ALL.len());
        for outcome in outcomes {
            let (kind, number, micros, text) = outcome_columns(&outcome);
            assert_eq!(outcome_from(kind, number, micros, text), Some(outcome));
        }
        assert_eq!(outcome_from("from_a_later_version", None, None, None), None);
    }

    #[test]
    fn headers_read_back_whole_even_when_their_values_are_not_text() {
        let headers = vec![
            ("x-a".to_owned(), bytes::Bytes::from_static(b"1")),
            ("x-bin".to_owned(), bytes::Bytes::from_static(&[0, 255, 10])),
            ("x-empty".to_owned(), bytes::Bytes::new()),
        ];
        let blob = headers_blob(&headers);
        assert_eq!(headers_from(&blob), headers);
        assert_eq!(headers_from(&blob[..blob.len() - 1]), headers[..2]);
    }
}
