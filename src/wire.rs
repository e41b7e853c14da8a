//! Names that travel on the wire: the headers Herald adds to its answers and deliveries,
//! the `webhook-id` format and W3C trace context ([`trace`]). Clients, receivers and other
//! Herald instances depend on them, so each is spelled here once and imported by
//! `delivery` and `server`. [`forward`]: what of a publisher's headers deliveries carry,
//! the same for an HTTP publish and a plain NATS client's message.

pub mod forward;
pub(crate) mod message_json;
pub mod origin;
pub mod trace;

pub use origin::Origin;
pub use trace::{TraceContext, TraceId};

/// On a publish answer and on every delivery: the hub's message id.
pub const MESSAGE_ID_HEADER: &str = "x-herald-message-id";
/// On a `/sendMessage` answer: the live subscribers the message goes to.
pub const SUBSCRIBERS_HEADER: &str = "x-herald-subscribers";
/// On a publish: the message's topic (or `?topic=`). On every delivery of a message with
/// a topic: that topic.
pub const TOPIC_HEADER: &str = "x-herald-topic";
/// The CloudEvents binary-mode type, taken as the topic when none is given and it is one.
pub const CLOUDEVENTS_TYPE_HEADER: &str = "ce-type";
/// On every delivery: the hub it came from. A hub refuses requests carrying its own.
pub const INSTANCE_HEADER: &str = "x-herald-instance";

/// Standard Webhooks headers, on signed deliveries.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

/// Herald sets headers with these prefixes itself, so a publisher's are never forwarded.
pub const HERALD_HEADER_PREFIX: &str = "x-herald-";
pub const WEBHOOK_HEADER_PREFIX: &str = "webhook-";

/// W3C trace context: read from a publish, and on every delivery as its child.
pub const TRACEPARENT_HEADER: &str = "traceparent";
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The `webhook-id` of a message: stable across retries and resends, and unique across
/// hub restarts (the instance differs), so receivers can deduplicate on it.
pub fn webhook_id(instance: &str, id: u64) -> String {
    format!("msg_{instance}_{id}")
}

/// A time as Herald's JSON gives it: RFC 3339 in UTC, with milliseconds.
pub(crate) fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A duration as Herald's JSON gives it: milliseconds, with a fraction.
pub(crate) fn millis(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
