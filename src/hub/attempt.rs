//! The plain data of a delivery: its state, each attempt with what it sent and what came
//! back, summary counts, and why deliveries are added to a message. `MessageRecord`
//! (`message`) keeps them and counts what they hold.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::outcome::{DeliveryError, DeliveryState, Outcome};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySummary {
    pub delivered: usize,
    pub failed: usize,
    /// Without an outcome yet: queued, in flight or retrying.
    pub pending: usize,
    /// Of the pending, those waiting for a retry.
    pub retrying: usize,
}

/// One message's delivery to one subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub subscriber: Arc<str>,
    pub state: DeliveryState,
    /// Every HTTP request made for this delivery, oldest first.
    pub attempts: Vec<Attempt>,
}

impl Delivery {
    pub(crate) fn pending(subscriber: Arc<str>) -> Self {
        Self {
            subscriber,
            state: DeliveryState::Pending,
            attempts: Vec::new(),
        }
    }
}

/// One HTTP request of a delivery and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// When it started.
    pub at: SystemTime,
    pub outcome: Outcome,
    /// What was sent and what came back; none when nothing was sent (a refused target).
    pub exchange: Option<Arc<Exchange>>,
}

impl Attempt {
    /// What keeping it costs: itself, the text its outcome carries and its exchange.
    pub(super) fn stored_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.outcome.error().map_or(0, DeliveryError::text_len)
            + self.exchange.as_deref().map_or(0, Exchange::stored_bytes)
    }

    /// What a message over its share of the log's bytes keeps of an attempt: its
    /// outcome, where it went and the answer's status, without the headers either way or
    /// the answer's body (up to 64 KiB each, which a flood of resends or retries would
    /// otherwise pile up in the one message the log never evicts).
    pub(super) fn lean(self) -> Self {
        let exchange = self.exchange.map(|sent| {
            Arc::new(Exchange {
                method: sent.method,
                url: sent.url.clone(),
                request_headers: Headers::default(),
                response: sent.response.as_ref().map(|answer| Answer {
                    status: answer.status,
                    ..Answer::default()
                }),
                not_kept: true,
            })
        });
        Self { exchange, ..self }
    }
}

/// What an attempt that kept only its status says of its headers and body.
pub const NOT_KEPT: &str = "headers and body not kept: the message held more than its share \
     of the log's bytes (--log-max-bytes)";

/// What one attempt sent and what came back, as the delivery inspector shows it.
/// Credentials are hidden: a password in the URL, `Authorization` values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exchange {
    pub method: &'static str,
    /// Shared with the subscriber: every attempt goes to the same place.
    pub url: Arc<str>,
    pub request_headers: Headers,
    /// What the subscriber answered, if it answered.
    pub response: Option<Answer>,
    /// The headers and the answer's body were not kept, only the status: [`NOT_KEPT`].
    pub not_kept: bool,
}

/// Header lines as kept by the inspector, in one string (one allocation an attempt,
/// not two a header: attempts are made thousands of times a second).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(String);

impl Headers {
    pub fn from_pairs<'a, V: AsRef<str>>(pairs: impl IntoIterator<Item = (&'a str, V)>) -> Self {
        let mut lines = String::with_capacity(256);
        for (name, value) in pairs {
            let value = value.as_ref();
            lines.push_str(name);
            lines.push_str(": ");
            // A line break cannot come from HTTP, but keep lines whole whatever comes.
            if value.contains(['\r', '\n']) {
                lines.extend(
                    value
                        .chars()
                        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
                );
            } else {
                lines.push_str(value);
            }
            lines.push('\n');
        }
        Self(lines)
    }

    /// Header lines as [`Headers::as_text`] gave them (read back from a store).
    pub fn from_text(lines: String) -> Self {
        Self(lines)
    }

    /// Every line, `name: value`, each ending in a line break.
    pub fn as_text(&self) -> &str {
        &self.0
    }

    /// Name and value pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.lines().filter_map(|line| line.split_once(": "))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A subscriber's answer to one attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Headers,
    /// The start of the body, at most [`MAX_KEPT_BODY`] bytes.
    pub body: Bytes,
    /// Whether the body went on past what was kept.
    pub truncated: bool,
}

/// The most of a subscriber's answer body an attempt keeps.
pub const MAX_KEPT_BODY: usize = 64 * 1024;

impl Exchange {
    fn stored_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.request_headers.len()
            + self
                .response
                .as_ref()
                .map_or(0, |answer| answer.headers.len() + answer.body.len())
    }
}

/// Why deliveries are being added to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// For the subscribers live when it was published.
    Publish,
    /// Sent again on request.
    Resend,
}
