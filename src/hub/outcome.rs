//! How a delivery attempt ended, and where a delivery stands.
//!
//! An attempt always ends in an [`Outcome`]; a delivery is [`DeliveryState::Pending`] until
//! its last attempt (or its abandonment) gives it one. The two are separate types so that
//! nothing final can be "pending".

use std::time::{Duration, SystemTime};

use thiserror::Error;

/// Why a subscriber left the hub, and so why its abandoned deliveries failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    Deregistered,
    Expired,
    Kicked,
    /// The subscriber answered 410 Gone.
    Gone,
    Shutdown,
}

impl std::fmt::Display for RemovalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RemovalReason::Deregistered => "deregistered",
            RemovalReason::Expired => "expired (no keep-alive)",
            RemovalReason::Kicked => "kicked",
            RemovalReason::Gone => "unsubscribed by answering 410 Gone",
            RemovalReason::Shutdown => "removed at shutdown",
        })
    }
}

/// How one attempt ended, and so, for its last attempt, how a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The subscriber answered 2xx.
    Delivered { status: u16, latency: Duration },
    /// Not delivered, for this reason.
    Failed(DeliveryError),
}

impl Outcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }

    /// The HTTP status the subscriber answered with, if it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status, .. }
            | Outcome::Failed(DeliveryError::Status { status, .. })
            | Outcome::Failed(DeliveryError::Redirect { status, .. }) => Some(*status),
            Outcome::Failed(_) => None,
        }
    }

    /// How long the subscriber took to answer, for answers that were timed.
    pub fn latency(&self) -> Option<Duration> {
        match self {
            Outcome::Delivered { latency, .. }
            | Outcome::Failed(DeliveryError::Status { latency, .. }) => Some(*latency),
            Outcome::Failed(_) => None,
        }
    }

    pub fn error(&self) -> Option<&DeliveryError> {
        match self {
            Outcome::Delivered { .. } => None,
            Outcome::Failed(error) => Some(error),
        }
    }

    /// "delivered" or "failed", as the API, the event stream and the console name it.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Failed(_) => "failed",
        }
    }

    /// The finer kind `/metrics` counts it under.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Delivered { .. } => OutcomeKind::Delivered,
            Outcome::Failed(error) => match error {
                DeliveryError::Status { .. } => OutcomeKind::ErrorStatus,
                DeliveryError::Redirect { .. } => OutcomeKind::Redirect,
                DeliveryError::Connect(_) => OutcomeKind::Connect,
                DeliveryError::Timeout(_) => OutcomeKind::Timeout,
                DeliveryError::Request(_) => OutcomeKind::Request,
                DeliveryError::Blocked(_) => OutcomeKind::Blocked,
                DeliveryError::QueueFull { .. } => OutcomeKind::QueueFull,
                DeliveryError::Removed(_) => OutcomeKind::Removed,
                DeliveryError::Crashed(_) => OutcomeKind::Crashed,
            },
        }
    }
}

/// Where one delivery stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum DeliveryState {
    /// Queued, or an attempt is in flight.
    #[default]
    Pending,
    /// An attempt failed; attempt number `attempt` (of `of` in all; none while the
    /// subscriber is suspended and attempts are probes) is due at `at`.
    Retrying {
        attempt: u32,
        of: Option<u32>,
        at: SystemTime,
    },
    Done(Outcome),
}

impl DeliveryState {
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            DeliveryState::Pending | DeliveryState::Retrying { .. } => None,
            DeliveryState::Done(outcome) => Some(outcome),
        }
    }

    /// "pending", "retrying", or the outcome's label.
    pub fn label(&self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Retrying { .. } => "retrying",
            DeliveryState::Done(outcome) => outcome.label(),
        }
    }
}

/// Outcomes as `/metrics` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Delivered,
    ErrorStatus,
    Redirect,
    Connect,
    Timeout,
    Request,
    Blocked,
    QueueFull,
    Removed,
    Crashed,
}

impl OutcomeKind {
    pub const ALL: [OutcomeKind; 10] = [
        OutcomeKind::Delivered,
        OutcomeKind::ErrorStatus,
        OutcomeKind::Redirect,
        OutcomeKind::Connect,
        OutcomeKind::Timeout,
        OutcomeKind::Request,
        OutcomeKind::Blocked,
        OutcomeKind::QueueFull,
        OutcomeKind::Removed,
        OutcomeKind::Crashed,
    ];

    /// The `outcome` label of `herald_deliveries_total`.
    pub fn label(self) -> &'static str {
        match self {
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::ErrorStatus => "error_status",
            OutcomeKind::Redirect => "redirect",
            OutcomeKind::Connect => "connect",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::Request => "request",
            OutcomeKind::Blocked => "blocked",
            OutcomeKind::QueueFull => "queue_full",
            OutcomeKind::Removed => "removed",
            OutcomeKind::Crashed => "worker_panic",
        }
    }
}

/// Why a delivery did not succeed. Every variant is recorded; none is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeliveryError {
    #[error("answered HTTP {status} after {latency:?}")]
    Status { status: u16, latency: Duration },
    #[error("answered with a redirect (HTTP {status}) to {location:?}; redirects are not followed")]
    Redirect { status: u16, location: String },
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("refused by the target policy: {0}")]
    Blocked(String),
    #[error("dropped: the subscriber's queue was full ({capacity} messages waiting)")]
    QueueFull { capacity: usize },
    #[error("not delivered: the subscriber was {0} first")]
    Removed(RemovalReason),
    #[error(
        "the delivery worker failed unexpectedly ({0}); this is a bug in Herald, please report it"
    )]
    Crashed(String),
}

impl DeliveryError {
    /// Bytes of text it carries (a `Location`, an error message), for the log's budget.
    pub(crate) fn text_len(&self) -> usize {
        match self {
            DeliveryError::Redirect { location: text, .. }
            | DeliveryError::Connect(text)
            | DeliveryError::Request(text)
            | DeliveryError::Blocked(text)
            | DeliveryError::Crashed(text) => text.len(),
            DeliveryError::Status { .. }
            | DeliveryError::Timeout(_)
            | DeliveryError::QueueFull { .. }
            | DeliveryError::Removed(_) => 0,
        }
    }
}

/// Longest text kept from a subscriber's answer or an error (a `Location`, a message):
/// a subscriber must not be able to make every record of it cost 200 KB.
pub(crate) const MAX_STORED_TEXT: usize = 2 * 1024;

/// `text` cut to [`MAX_STORED_TEXT`] bytes (at a character boundary), marked as cut.
pub(crate) fn clip(mut text: String) -> String {
    if text.len() > MAX_STORED_TEXT {
        let mut end = MAX_STORED_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("… (cut)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        assert_eq!(clip("short".to_owned()), "short");
        let long = "é".repeat(MAX_STORED_TEXT);
        let cut = clip(long);
        assert!(
            cut.len() <= MAX_STORED_TEXT + "… (cut)".len(),
            "{}",
            cut.len()
        );
        assert!(cut.ends_with("… (cut)"));
    }

    #[test]
    fn every_kind_is_listed_once_in_its_own_place() {
        for (index, kind) in OutcomeKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index, "{kind:?}");
        }
    }
}
