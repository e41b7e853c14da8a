//! How a message, a subscriber and a delivery's outcome travel through JetStream: a
//! message as a NATS message (its topic in the subject, the rest in headers, so that a
//! plain NATS client can publish one and read one), the others as JSON. A message's
//! `Herald-*` headers are read only from one Herald sealed: `bridge` decides which.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::{
    Draft, MessageId, Outcome, Outgoing, Pattern, Secret, Source, StoredSubscriber, Topic,
};
use crate::store::codec::{millis, outcome_columns, outcome_from, time_of};
use crate::wire::{TRACEPARENT_HEADER, TRACESTATE_HEADER, TraceContext};

/// Every message's subject starts with this; the topic follows it (`herald.orders.paid`).
pub(crate) const SUBJECT: &str = "herald";
const SOURCE_HEADER: &str = "Herald-Source";
const TO_HEADER: &str = "Herald-To";
const REPLAY_OF_HEADER: &str = "Herald-Replay-Of";
const CONTENT_TYPE_HEADER: &str = "Content-Type";
/// A forwarded header travels as `Herald-Header-<name>`.
const FORWARDED_PREFIX: &str = "Herald-Header-";

/// The subject a message with `topic` goes on.
pub(crate) fn subject(topic: Option<&Topic>) -> String {
    match topic {
        Some(topic) => format!("{SUBJECT}.{topic}"),
        None => SUBJECT.to_owned(),
    }
}

/// A message as JetStream keeps it.
pub(crate) fn encode(message: &Outgoing) -> (String, HeaderMap, Bytes) {
    let draft = &message.draft;
    let mut headers = HeaderMap::new();
    headers.insert(SOURCE_HEADER, message.source.to_string().as_str());
    if let Some(content_type) = &draft.content_type {
        headers.insert(CONTENT_TYPE_HEADER, content_type.as_str());
    }
    if let Some(to) = &message.to {
        headers.insert(TO_HEADER, &**to);
    }
    if let Some(original) = message.replay_of {
        headers.insert(REPLAY_OF_HEADER, original.to_string().as_str());
    }
    if let Some(trace) = &draft.trace {
        headers.insert(TRACEPARENT_HEADER, trace.child().as_str());
        if let Some(state) = &trace.state {
            headers.insert(TRACESTATE_HEADER, state.as_str());
        }
    }
    for (name, value) in &draft.headers {
        // Forwarded headers were valid HTTP header values; one that is not text has no
        // NATS form and stays behind.
        if let Ok(value) = std::str::from_utf8(value) {
            headers.append(format!("{FORWARDED_PREFIX}{name}").as_str(), value);
        }
    }
    (subject(draft.topic.as_ref()), headers, draft.body.clone())
}

/// A message read back from the stream, as Herald published it or as any NATS client did.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) draft: Draft,
    pub(crate) source: Source,
    pub(crate) replay_of: Option<MessageId>,
}

/// The topic of a message on `subject`. A subject whose tokens are not a topic Herald
/// accepts (NATS allows more) is delivered as a message without one.
pub(crate) fn topic_of(subject: &str) -> Option<Topic> {
    subject
        .strip_prefix(SUBJECT)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|topic| Topic::parse(topic).ok())
}

/// What routing a message Herald published needs, without reading the rest: its topic,
/// and the one subscriber it is for, if any.
pub(crate) fn route_of(
    subject: &str,
    headers: Option<&HeaderMap>,
) -> (Option<Topic>, Option<Arc<str>>) {
    let to = headers
        .and_then(|h| h.get(TO_HEADER))
        .map(|v| v.as_str().into());
    (topic_of(subject), to)
}

/// A message as Herald published it, its headers believed: only for a sealed one.
pub(crate) fn decode(subject: &str, headers: Option<&HeaderMap>, payload: Bytes) -> Incoming {
    let topic = topic_of(subject);
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let trace = header(TRACEPARENT_HEADER)
        .and_then(|parent| TraceContext::parse(&parent))
        .map(|mut trace| {
            trace.state = header(TRACESTATE_HEADER);
            trace
        });
    let forwarded = headers
        .into_iter()
        .flat_map(|h| h.iter())
        .filter_map(|(name, values)| {
            let name = AsRef::<str>::as_ref(name)
                .strip_prefix(FORWARDED_PREFIX)?
                .to_owned();
            Some(values.iter().map(move |v| {
                (
                    name.to_ascii_lowercase(),
                    Bytes::copy_from_slice(v.as_str().as_bytes()),
                )
            }))
        })
        .flatten()
        .collect();
    Incoming {
        draft: Draft {
            body: payload,
            content_type: header(CONTENT_TYPE_HEADER),
            headers: forwarded,
            trace,
            topic,
        },
        source: header(SOURCE_HEADER).map_or(Source::Nats, |s| Source::parse(&s)),
        replay_of: header(REPLAY_OF_HEADER).and_then(|id| id.parse().ok()),
    }
}

/// A subscriber as the key-value bucket holds it: what every instance needs to deliver
/// to it as the one it registered with would.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SharedSubscriber {
    pub(crate) address: String,
    pub(crate) topics: Vec<String>,
    pub(crate) lease_ms: Option<u64>,
    pub(crate) ordered: bool,
    pub(crate) max_in_flight: u32,
    pub(crate) secret: Option<String>,
    pub(crate) registered_ms: i64,
    pub(crate) seen_ms: i64,
    /// Paused or pinned at one instance is so at all: a pause holds the one consumer
    /// every instance delivers from, and a pin keeps every reaper off it.
    #[serde(default)]
    pub(crate) paused: bool,
    #[serde(default)]
    pub(crate) pinned: bool,
}

impl SharedSubscriber {
    pub(crate) fn of(stored: &StoredSubscriber) -> Self {
        Self {
            address: stored.key.to_string(),
            topics: stored.topics.iter().map(ToString::to_string).collect(),
            lease_ms: stored
                .lease
                .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
            ordered: stored.ordered,
            max_in_flight: stored.max_in_flight,
            secret: stored.secret.as_ref().map(Secret::expose),
            registered_ms: millis(stored.registered_at),
            seen_ms: millis(stored.last_seen),
            paused: stored.paused,
            pinned: stored.pinned,
        }
    }

    pub(crate) fn lease(&self) -> Option<Duration> {
        self.lease_ms.map(Duration::from_millis)
    }

    pub(crate) fn registered_at(&self) -> SystemTime {
        time_of(self.registered_ms)
    }

    pub(crate) fn seen_at(&self) -> SystemTime {
        time_of(self.seen_ms)
    }

    /// Its topics; one this version cannot read is dropped rather than widening the
    /// subscription to everything.
    pub(crate) fn patterns(&self) -> Option<Vec<Pattern>> {
        let patterns: Vec<Pattern> = self
            .topics
            .iter()
            .filter_map(|t| Pattern::parse(t).ok())
            .collect();
        (patterns.len() == self.topics.len()).then_some(patterns)
    }

    pub(crate) fn secret(&self) -> Option<Secret> {
        self.secret.as_deref().and_then(|s| s.parse().ok())
    }
}

/// One delivery's outcome, as the instance that made it tells the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SharedOutcome {
    pub(crate) id: MessageId,
    pub(crate) address: String,
    pub(crate) instance: String,
    pub(crate) kind: String,
    pub(crate) number: Option<i64>,
    pub(crate) micros: Option<i64>,
    pub(crate) text: Option<String>,
    pub(crate) attempts: usize,
    /// Whether JetStream had handed this message to an instance before (it died, or
    /// did not answer in time): the delivery may have been made twice.
    pub(crate) redelivered: bool,
}

impl SharedOutcome {
    pub(crate) fn new(
        id: MessageId,
        address: &str,
        instance: &str,
        outcome: &Outcome,
        attempts: usize,
        redelivered: bool,
    ) -> Self {
        let (kind, number, micros, text) = outcome_columns(outcome);
        Self {
            id,
            address: address.to_owned(),
            instance: instance.to_owned(),
            kind: kind.to_owned(),
            number,
            micros,
            text,
            attempts,
            redelivered,
        }
    }

    pub(crate) fn outcome(&self) -> Option<Outcome> {
        outcome_from(&self.kind, self.number, self.micros, self.text.clone())
    }
}

/// An instance, as it announces itself every few seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SharedInstance {
    pub(crate) name: String,
    /// Its HTTP API, once it listens.
    pub(crate) url: Option<String>,
    pub(crate) started_ms: i64,
}

/// A name JetStream accepts for keys and consumers (no dots, wildcards or spaces) that
/// every instance derives alike from a subscriber's address: SHA-256, in hex.
pub(crate) fn name_of(address: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, address.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("s{hex}")
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::hub::DeliveryError;

    #[test]
    fn a_message_travels_whole_through_nats_form() {
        let draft = Draft {
            content_type: Some("application/json".to_owned()),
            headers: vec![("x-request-id".to_owned(), Bytes::from_static(b"abc"))],
            trace: Some(TraceContext::new_root()),
            topic: Some(Topic::parse("orders.paid").unwrap()),
            ..Draft::new(r#"{"n":1}"#)
        };
        let trace_id = draft.trace.as_ref().unwrap().trace_id;
        let outgoing = Outgoing {
            draft,
            source: Source::Console,
            to: Some("127.0.0.1:9".into()),
            replay_of: Some(7),
        };
        let (subject, headers, body) = encode(&outgoing);
        assert_eq!(subject, "herald.orders.paid");
        let (_, to) = route_of(&subject, Some(&headers));
        assert_eq!(to.as_deref(), Some("127.0.0.1:9"));
        let back = decode(&subject, Some(&headers), body);
        assert_eq!(back.draft.body, r#"{"n":1}"#.as_bytes());
        assert_eq!(back.draft.content_type.as_deref(), Some("application/json"));
        assert_eq!(back.draft.topic.unwrap().to_string(), "orders.paid");
        assert_eq!(back.draft.trace.unwrap().trace_id, trace_id);
        assert_eq!(
            back.draft.headers,
            vec![("x-request-id".to_owned(), Bytes::from_static(b"abc"))]
        );
        assert_eq!(back.source, Source::Console);
        assert_eq!(back.replay_of, Some(7));
    }

    #[test]
    fn a_plain_nats_message_is_a_message_from_nats() {
        let back = decode("herald", None, Bytes::from_static(b"hi"));
        assert_eq!(back.source, Source::Nats);
        assert!(back.draft.topic.is_none());
        let odd = decode("herald.a b", None, Bytes::new());
        assert!(odd.draft.topic.is_none(), "not a topic, so none");
    }

    #[test]
    fn names_are_stable_and_fit_jetstream() {
        let name = name_of("127.0.0.1:8080");
        assert_eq!(name, name_of("127.0.0.1:8080"));
        assert_ne!(name, name_of("127.0.0.1:8081"));
        assert_eq!(name.len(), 33);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn a_topic_is_the_subject_after_herald() {
        assert_eq!(subject(None), "herald");
        let topic = Topic::parse("orders.paid").unwrap();
        assert_eq!(subject(Some(&topic)), "herald.orders.paid");
        assert_eq!(route_of("herald.orders.paid", None), (Some(topic), None));
        // A subject that only starts like Herald's has no topic.
        assert_eq!(route_of("heraldry.orders", None), (None, None));
    }

    #[test]
    fn a_subscriber_travels_whole_through_the_bucket() {
        let at = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let stored = StoredSubscriber {
            key: "127.0.0.1:9".into(),
            topics: vec![
                Pattern::parse("orders.*").unwrap(),
                Pattern::parse("payments.>").unwrap(),
            ]
            .into(),
            lease: Some(Duration::from_secs(90)),
            ordered: true,
            max_in_flight: 4,
            secret: Some(secret.clone()),
            paused: true,
            pinned: false,
            registered_at: at(1_700_000_000_123),
            last_seen: at(1_700_000_060_456),
        };
        let json = serde_json::to_vec(&SharedSubscriber::of(&stored)).unwrap();
        let shared: SharedSubscriber = serde_json::from_slice(&json).unwrap();
        assert_eq!(shared.address, "127.0.0.1:9");
        assert_eq!(shared.patterns().as_deref(), Some(&stored.topics[..]));
        assert_eq!(shared.lease(), Some(Duration::from_secs(90)));
        assert!(shared.ordered);
        assert_eq!(shared.max_in_flight, 4);
        assert_eq!(shared.secret(), Some(secret));
        assert_eq!(shared.registered_at(), stored.registered_at);
        assert_eq!(shared.seen_at(), stored.last_seen);
        assert!(shared.paused);
        assert!(!shared.pinned);
    }

    #[test]
    fn a_subscriber_shared_by_an_older_instance_is_neither_paused_nor_pinned() {
        let json = r#"{"address":"127.0.0.1:9","topics":[],"lease_ms":null,"ordered":false,
            "max_in_flight":1,"secret":null,"registered_ms":0,"seen_ms":0}"#;
        let shared: SharedSubscriber = serde_json::from_str(json).unwrap();
        assert!(!shared.paused);
        assert!(!shared.pinned);
    }

    fn subscriber(topics: &[&str]) -> SharedSubscriber {
        SharedSubscriber {
            address: "127.0.0.1:9".to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            lease_ms: None,
            ordered: false,
            max_in_flight: 1,
            secret: None,
            registered_ms: 0,
            seen_ms: 0,
            paused: false,
            pinned: false,
        }
    }

    #[test]
    fn a_topic_this_version_cannot_read_leaves_a_subscriber_without_patterns() {
        let patterns = subscriber(&["orders.*", "payments.>"]).patterns().unwrap();
        assert_eq!(patterns.len(), 2);
        // Not the rest alone: were it the only one, none left would mean every message.
        assert!(
            subscriber(&["orders.*", "orders.>.paid"])
                .patterns()
                .is_none()
        );
        // One without topics takes every message, as it registered.
        assert_eq!(subscriber(&[]).patterns(), Some(Vec::new()));
    }

    #[test]
    fn an_outcome_travels_whole_between_instances() {
        let outcome = Outcome::Failed(DeliveryError::Status {
            status: 503,
            latency: Duration::from_micros(1_500),
        });
        let shared = SharedOutcome::new(7, "127.0.0.1:9", "a:8080", &outcome, 3, true);
        let json = serde_json::to_vec(&shared).unwrap();
        let back: SharedOutcome = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.outcome(), Some(outcome));
        assert_eq!(back.id, 7);
        assert_eq!(back.address, "127.0.0.1:9");
        assert_eq!(back.instance, "a:8080");
        assert_eq!(back.attempts, 3);
        assert!(back.redelivered);
        // A kind only a newer version knows is not read as anything else.
        let newer = SharedOutcome {
            kind: "teleported".to_owned(),
            ..back
        };
        assert_eq!(newer.outcome(), None);
    }
}
