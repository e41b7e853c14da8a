//! What of a publisher's headers its deliveries carry, by one set of rules wherever the
//! message came in: an HTTP publish, or a plain NATS client's message on the cluster's
//! stream. A value a delivery could never send is refused here, at the door: past it,
//! every attempt would fail the same way and count against a healthy subscriber.

use axum::http::{HeaderName, HeaderValue};
use bytes::Bytes;

use super::TraceContext;

/// The headers a publish passes on: every value, in order, of each header `allowed`
/// (`--forward-header`) names, that a delivery can send. `values_of` gives the values a
/// name had on the publish, in order.
pub fn forwarded<'a, I>(
    allowed: &[HeaderName],
    mut values_of: impl FnMut(&HeaderName) -> I,
) -> Vec<(String, Bytes)>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut forwarded = Vec::new();
    for name in allowed {
        for value in values_of(name) {
            // An HTTP publish's always can (hyper parsed them); a NATS message's may hold
            // control bytes that no request can carry.
            if HeaderValue::from_bytes(value).is_ok() {
                forwarded.push((name.as_str().to_owned(), Bytes::copy_from_slice(value)));
            }
        }
    }
    forwarded
}

/// A header value as text, by the rule `HeaderValue::to_str` reads one with: visible
/// ASCII and tabs only. What an HTTP publish's `Content-Type` or `tracestate` must be.
pub fn header_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (32..127).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// A publisher's trace context: `None` (a new trace) without exactly one valid
/// `traceparent`. `tracestate` fields are joined as one, and dropped if not plain text;
/// a bad one does not spoil the `traceparent`.
pub fn trace<'a>(
    parents: impl IntoIterator<Item = &'a [u8]>,
    states: impl IntoIterator<Item = &'a [u8]>,
) -> Option<TraceContext> {
    let mut parents = parents.into_iter();
    let (Some(parent), None) = (parents.next(), parents.next()) else {
        return None;
    };
    let mut trace = TraceContext::parse(header_text(parent)?)?;
    let fields: Option<Vec<&str>> = states.into_iter().map(header_text).collect();
    trace.state = fields
        .map(|fields| fields.join(","))
        .filter(|state| !state.trim().is_empty());
    Some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_what_http_reads_as_text() {
        for byte in 0..=u8::MAX {
            let value = [b'a', byte, b'b'];
            let http = HeaderValue::from_bytes(&value)
                .ok()
                .and_then(|v| v.to_str().ok().map(str::to_owned));
            assert_eq!(header_text(&value).map(str::to_owned), http, "{byte:#x}");
        }
    }

    #[test]
    fn only_allowed_names_and_sendable_values_are_forwarded() {
        let allowed = [HeaderName::from_static("x-request-id")];
        let forwarded = forwarded(&allowed, |name| {
            assert_eq!(name, "x-request-id");
            vec![&b"abc"[..], b"bad\x01", b"def"]
        });
        assert_eq!(
            forwarded,
            [
                ("x-request-id".to_owned(), Bytes::from_static(b"abc")),
                ("x-request-id".to_owned(), Bytes::from_static(b"def")),
            ]
        );
    }

    #[test]
    fn a_trace_needs_exactly_one_valid_traceparent() {
        let parent = &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..];
        let trace = super::trace([parent], [&b"a=1"[..], b"b=2"]).unwrap();
        assert_eq!(trace.state.as_deref(), Some("a=1,b=2"));
        assert!(super::trace([parent, parent], []).is_none());
        assert!(super::trace([], []).is_none());
        let unsendable = super::trace([parent], [&b"a=\x01"[..]]).unwrap();
        assert_eq!(unsendable.state, None);
    }
}
