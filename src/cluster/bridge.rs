//! The stream's door: what a message read from it may carry into this instance's log
//! and deliveries. Anyone allowed to publish on `herald.>` can put a message there, so
//! a message is taken at its word only when Herald sealed it (see `seal`); any other is
//! a plain NATS client's, held to an HTTP publish's rules: source `nats`, no replay link
//! and no one subscriber it is for, only the headers `--forward-header` names (by their
//! plain names), a `Content-Type` only if a request can carry it, the trace context read
//! as from HTTP. A body over `--max-body` is refused, sealed or not.

use std::sync::Arc;

use async_nats::HeaderMap;
use axum::http::HeaderName;
use bytes::Bytes;

use super::ClusterConfig;
use super::codec::{self, Incoming};
use super::seal::Seal;
use crate::hub::{Draft, Outgoing, Source, Topic};
use crate::wire::{TRACEPARENT_HEADER, TRACESTATE_HEADER, forward};

/// The rules messages cross the stream by, one set per instance.
pub(crate) struct Bridge {
    seal: Seal,
    /// `--forward-header`, for plain NATS clients' messages.
    forward_headers: Vec<HeaderName>,
    /// `--max-body`.
    max_body: usize,
}

/// A message refused at the door: its body is over `--max-body`. It never gets a
/// delivery, nor a place in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a message on {subject} has {size} bytes, more than --max-body's {max}: not delivered")]
pub(crate) struct TooLarge {
    pub(crate) subject: String,
    pub(crate) size: usize,
    pub(crate) max: usize,
}

/// A message read from the stream, past the door.
pub(crate) struct Checked<'a> {
    bridge: &'a Bridge,
    message: &'a async_nats::Message,
    /// Herald published it, so its headers are believed.
    sealed: bool,
}

impl Bridge {
    pub(crate) fn new(seal: Seal, config: &ClusterConfig) -> Self {
        Self {
            seal,
            forward_headers: config.forward_headers.clone(),
            max_body: config.max_body,
        }
    }

    /// A message as it goes into the stream, sealed as Herald's.
    pub(crate) fn encode(&self, message: &Outgoing) -> (String, HeaderMap, Bytes) {
        let (subject, mut headers, body) = codec::encode(message);
        self.seal.apply(&subject, &mut headers, &body);
        (subject, headers, body)
    }

    /// Takes a message read from the stream through the door, or says why not.
    pub(crate) fn check<'a>(
        &'a self,
        message: &'a async_nats::Message,
    ) -> Result<Checked<'a>, TooLarge> {
        // Before the seal is computed: an oversized body is not worth hashing.
        let size = message.payload.len();
        if size > self.max_body {
            return Err(TooLarge {
                subject: message.subject.to_string(),
                size,
                max: self.max_body,
            });
        }
        let sealed = self.seal.verifies(
            message.subject.as_str(),
            message.headers.as_ref(),
            &message.payload,
        );
        Ok(Checked {
            bridge: self,
            message,
            sealed,
        })
    }
}

impl Checked<'_> {
    /// What routing the message needs: its topic, and the one subscriber it is for, which
    /// only Herald can name.
    pub(crate) fn route(&self) -> (Option<Topic>, Option<Arc<str>>) {
        let subject = self.message.subject.as_str();
        if self.sealed {
            codec::route_of(subject, self.message.headers.as_ref())
        } else {
            (codec::topic_of(subject), None)
        }
    }

    /// The message as this instance logs and delivers it.
    pub(crate) fn decode(&self) -> Incoming {
        let message = self.message;
        let (subject, headers) = (message.subject.as_str(), message.headers.as_ref());
        if self.sealed {
            return codec::decode(subject, headers, message.payload.clone());
        }
        let headers = Headers(headers);
        let content_type = headers.values("content-type").first().and_then(|value| {
            let text = forward::header_text(value);
            if text.is_none() {
                tracing::warn!(
                    subject,
                    content_type = ?String::from_utf8_lossy(value),
                    "a NATS message's Content-Type is no header a request can carry: \
                     delivered without one"
                );
            }
            text.map(str::to_owned)
        });
        let forwarded = forward::forwarded(&self.bridge.forward_headers, |name| {
            headers.values(name.as_str())
        });
        let trace = forward::trace(
            headers.values(TRACEPARENT_HEADER),
            headers.values(TRACESTATE_HEADER),
        );
        Incoming {
            draft: Draft {
                body: message.payload.clone(),
                content_type,
                headers: forwarded,
                trace,
                topic: codec::topic_of(subject),
            },
            source: Source::Nats,
            replay_of: None,
        }
    }
}

/// A plain NATS client's headers, read as HTTP's: names in any case.
struct Headers<'a>(Option<&'a HeaderMap>);

impl<'a> Headers<'a> {
    /// Every value of the header `name`, however each was spelled; the spellings in
    /// order (NATS keeps none between them), the values of each as they came.
    fn values(&self, name: &str) -> Vec<&'a [u8]> {
        let Some(headers) = self.0 else {
            return Vec::new();
        };
        let mut spellings: Vec<(&str, _)> = headers
            .iter()
            .map(|(spelled, values)| (AsRef::<str>::as_ref(spelled), values))
            .filter(|(spelled, _)| spelled.eq_ignore_ascii_case(name))
            .collect();
        spellings.sort_by_key(|(spelled, _)| *spelled);
        spellings
            .into_iter()
            .flat_map(|(_, values)| values.iter().map(|v| v.as_str().as_bytes()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hub::MessageId;

    fn bridge(forward: &[&str], max_body: usize) -> Bridge {
        let config = ClusterConfig {
            url: "nats://127.0.0.1:4222".to_owned(),
            name: "a".to_owned(),
            delivery_timeout: Duration::from_secs(1),
            log_capacity: 10,
            max_body,
            forward_headers: forward
                .iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
                .collect(),
        };
        Bridge::new(Seal::new(b"key"), &config)
    }

    fn message(subject: &str, headers: HeaderMap, payload: &'static [u8]) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: Bytes::from_static(payload),
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        }
    }

    fn forged() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("Herald-Source", "console"),
            ("Herald-Replay-Of", "18446744073709551615"),
            ("Herald-To", "127.0.0.1:9"),
            ("Herald-Header-Authorization", "Bearer stolen"),
            ("Herald-Header-Content-Length", "3"),
            ("Herald-Header-x-request-id", "forged"),
            ("Content-Length", "3"),
            ("Host", "evil.example"),
            ("X-Request-Id", "plain"),
            ("webhook-id", "msg_forged_1"),
            ("Content-Type", "text/plain\u{1}"),
        ] {
            headers.insert(name, value);
        }
        headers
    }

    #[test]
    fn a_plain_clients_message_gets_only_what_an_http_publish_would() {
        let bridge = bridge(&["x-request-id"], 1024);
        let message = message("herald.orders.paid", forged(), b"0123456789");
        let checked = bridge.check(&message).unwrap();
        assert_eq!(checked.route().1, None, "Herald-To ignored");
        let incoming = checked.decode();
        assert_eq!(incoming.source, Source::Nats);
        assert_eq!(incoming.replay_of, None::<MessageId>);
        assert_eq!(incoming.draft.content_type, None, "a control byte in it");
        assert_eq!(
            incoming.draft.headers,
            [("x-request-id".to_owned(), Bytes::from_static(b"plain"))]
        );
        assert_eq!(incoming.draft.topic.unwrap().to_string(), "orders.paid");
        assert_eq!(&incoming.draft.body[..], b"0123456789");
    }

    #[test]
    fn a_plain_clients_content_type_and_trace_are_read_as_from_http() {
        let bridge = bridge(&[], 1024);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json");
        headers.insert(
            "Traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        headers.insert("tracestate", "a=1");
        let message = message("herald", headers, b"{}");
        let incoming = bridge.check(&message).unwrap().decode();
        assert_eq!(
            incoming.draft.content_type.as_deref(),
            Some("application/json")
        );
        let trace = incoming.draft.trace.unwrap();
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace.state.as_deref(), Some("a=1"));
    }

    #[test]
    fn heralds_own_message_is_believed() {
        let bridge = bridge(&[], 1024);
        let outgoing = Outgoing {
            draft: Draft {
                headers: vec![("x-request-id".to_owned(), Bytes::from_static(b"abc"))],
                content_type: Some("text/plain".to_owned()),
                ..Draft::new("hello")
            },
            source: Source::Console,
            to: Some("127.0.0.1:9".into()),
            replay_of: Some(7),
        };
        let (subject, headers, _) = bridge.encode(&outgoing);
        let message = message(&subject, headers, b"hello");
        let checked = bridge.check(&message).unwrap();
        assert_eq!(checked.route().1.as_deref(), Some("127.0.0.1:9"));
        let incoming = checked.decode();
        assert_eq!(incoming.source, Source::Console);
        assert_eq!(incoming.replay_of, Some(7));
        assert_eq!(incoming.draft.headers, outgoing.draft.headers);
    }

    #[test]
    fn a_body_over_the_limit_is_refused_sealed_or_not() {
        let bridge = bridge(&[], 4);
        let message = message("herald.big", HeaderMap::new(), b"12345");
        let refused = bridge.check(&message).err().unwrap();
        assert_eq!((refused.size, refused.max), (5, 4));
        assert!(refused.to_string().contains("herald.big"), "{refused}");
        let outgoing = Outgoing {
            draft: Draft::new("12345"),
            source: Source::Console,
            to: None,
            replay_of: None,
        };
        let (subject, headers, _) = bridge.encode(&outgoing);
        assert!(bridge.check(&message_of(&subject, headers)).is_err());
    }

    fn message_of(subject: &str, headers: HeaderMap) -> async_nats::Message {
        message(subject, headers, b"12345")
    }
}
