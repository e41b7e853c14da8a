//! Search: case-insensitive matching of what a person typed, and the log's search
//! results, kept up to date without searching the whole log again.
//!
//! Matching makes no lowercased copy of each text it looks in, and the log is searched
//! whole only when the search text changes: a log holds up to 100,000 messages, and the
//! first 4 KiB of each body is searched (besides its content type, source, trace id and
//! topic),
//! on the GUI thread.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use crate::hub::{Hub, MessageId, MessageRecord, Pattern};

/// Bytes of each body that search looks through.
const SEARCHED_PAYLOAD: usize = 4 * 1024;

/// A search text, prepared once to be looked for in many places.
pub(crate) enum Needle {
    /// Compared byte by byte, ignoring ASCII case.
    Ascii(Box<[u8]>),
    /// Lowercased; each text it is looked for in is lowercased too, as Unicode case
    /// folding can change lengths.
    Unicode(String),
}

impl Needle {
    pub(crate) fn new(text: &str) -> Self {
        if text.is_ascii() {
            Self::Ascii(text.as_bytes().into())
        } else {
            Self::Unicode(text.to_lowercase())
        }
    }

    /// Whether `haystack` contains the needle, ignoring case. Bytes that are not UTF-8
    /// match nothing but themselves.
    pub(crate) fn is_in(&self, haystack: &[u8]) -> bool {
        match self {
            Self::Ascii(needle) => {
                needle.is_empty()
                    || haystack
                        .windows(needle.len())
                        .any(|window| window.eq_ignore_ascii_case(needle))
            }
            Self::Unicode(needle) => String::from_utf8_lossy(haystack)
                .to_lowercase()
                .contains(needle.as_str()),
        }
    }
}

/// The logged messages matching one search text and topic pattern, newest first.
pub(crate) struct LogSearch {
    text: String,
    needle: Needle,
    /// Only messages whose topic matches it.
    topic: Option<Pattern>,
    rows: VecDeque<Arc<MessageRecord>>,
    /// The newest message looked at; an update looks only at newer ones.
    newest: Option<MessageId>,
    /// The hub's version and the time as of the last update.
    version: u64,
    updated_at: Instant,
}

impl LogSearch {
    /// A search for `text` (with a topic that matches `topic`, if given) that has not
    /// looked at any message yet.
    pub(crate) fn new(text: &str, topic: Option<Pattern>) -> Self {
        Self {
            text: text.to_owned(),
            needle: Needle::new(text),
            topic,
            rows: VecDeque::new(),
            newest: None,
            version: 0,
            updated_at: Instant::now(),
        }
    }

    /// Whether this is the search for `text` and `topic`.
    pub(crate) fn is_for(&self, text: &str, topic: Option<&Pattern>) -> bool {
        self.text == text && self.topic.as_ref() == topic
    }

    pub(crate) fn rows(&self) -> &VecDeque<Arc<MessageRecord>> {
        &self.rows
    }

    /// The hub's version as of the last update, and when that was.
    pub(crate) fn updated(&self) -> (u64, Instant) {
        (self.version, self.updated_at)
    }

    /// Drops the rows that left the log and adds the new messages that match. The first
    /// update searches the whole log.
    pub(crate) fn update(&mut self, hub: &Hub) {
        // Read first: what changes while this runs is picked up by the next update.
        self.version = hub.version();
        self.updated_at = Instant::now();
        // The log evicts its oldest messages first, and clearing it takes them all, so
        // the rows still in the log are the newest ones.
        let kept = self.rows.partition_point(|m| hub.message(m.id).is_some());
        self.rows.truncate(kept);
        let fresh = newer_than(hub, self.newest);
        if let Some(newest) = fresh.first() {
            self.newest = Some(newest.id);
        }
        let mut text = String::new();
        for message in fresh.into_iter().rev() {
            if self.matches(&message, &mut text) {
                self.rows.push_front(message);
            }
        }
    }

    /// `text` is room to write the message's source and trace id in, reused from one
    /// message to the next.
    fn matches(&self, message: &MessageRecord, text: &mut String) -> bool {
        if let Some(pattern) = &self.topic
            && !message.topic.as_ref().is_some_and(|t| pattern.matches(t))
        {
            return false;
        }
        let body = &message.body[..message.body.len().min(SEARCHED_PAYLOAD)];
        let mut written_is_in = |shown: &dyn std::fmt::Display| {
            text.clear();
            write!(text, "{shown}").ok();
            self.needle.is_in(text.as_bytes())
        };
        message
            .content_type
            .as_deref()
            .is_some_and(|t| self.needle.is_in(t.as_bytes()))
            || written_is_in(&message.source)
            || written_is_in(&message.trace.trace_id)
            || message
                .topic
                .as_ref()
                .is_some_and(|t| self.needle.is_in(t.as_str().as_bytes()))
            || self.needle.is_in(body)
    }
}

/// The logged messages newer than `seen` (all of them without it), newest first.
fn newer_than(hub: &Hub, seen: Option<MessageId>) -> Vec<Arc<MessageRecord>> {
    let Some(seen) = seen else {
        return hub.messages(None, usize::MAX);
    };
    // Pages from the newest, doubling, so that a burst costs at most twice its size and
    // a quiet log one short page.
    let mut limit = 64;
    loop {
        let mut page = hub.messages(None, limit);
        if let Some(end) = page.iter().position(|m| m.id <= seen) {
            page.truncate(end);
            return page;
        }
        if page.len() < limit {
            return page;
        }
        limit *= 2;
    }
}

#[cfg(test)]
mod tests {

    use bytes::Bytes;

    use super::*;
    use crate::hub::{Draft, HubConfig, Launch, Mailbox, Source, Task};

    #[test]
    fn case_is_ignored() {
        let needle = Needle::new("Order.CREATED");
        assert!(needle.is_in(br#"{"type":"order.created"}"#));
        assert!(needle.is_in(b"ORDER.CREATED"));
        assert!(!needle.is_in(b"order.create"));
        assert!(!needle.is_in(b""));
        assert!(Needle::new("").is_in(b"anything"));
        assert!(Needle::new("ff").is_in(&[0x00, b'F', b'f', 0xff]));
    }

    #[test]
    fn a_needle_beyond_ascii_is_folded_as_unicode() {
        let needle = Needle::new("Élan");
        assert!(needle.is_in("avec élan".as_bytes()));
        assert!(needle.is_in("ÉLAN".as_bytes()));
        assert!(!needle.is_in(b"elan"));
        assert!(Needle::new("straße").is_in("STRAßE".as_bytes()));
    }

    /// Runs nothing: no subscriber is registered, and nothing needs to run for messages
    /// to be logged.
    struct Nowhere;

    impl Launch for Nowhere {
        fn launch(&self, _hub: Hub, _mailbox: Mailbox) {}

        fn spawn(&self, _name: &'static str, _task: Task) {}
    }

    fn publish(hub: &Hub, body: &str) -> MessageId {
        let draft = Draft {
            content_type: Some("text/plain".to_owned()),
            ..Draft::new(Bytes::from(body.to_owned()))
        };
        hub.publish(draft, Source::Console).unwrap().id().unwrap()
    }

    fn ids(search: &LogSearch) -> Vec<MessageId> {
        search.rows().iter().map(|m| m.id).collect()
    }

    #[test]
    fn an_update_adds_new_matches_and_drops_what_left_the_log() {
        let config = HubConfig {
            log_capacity: 4,
            ..HubConfig::default()
        };
        let hub = Hub::new(config, Arc::new(Nowhere));
        let a = publish(&hub, "Alpha one");
        publish(&hub, "beta");
        let b = publish(&hub, "two ALPHA");
        let mut search = LogSearch::new("alpha", None);
        search.update(&hub);
        assert_eq!(ids(&search), [b, a]);

        let c = publish(&hub, "alpha three");
        publish(&hub, "gamma");
        search.update(&hub);
        assert_eq!(ids(&search), [c, b], "the oldest left the log");
        search.update(&hub);
        assert_eq!(ids(&search), [c, b], "nothing new, nothing added twice");

        for text in ["TEXT/PLAIN", "Console"] {
            let mut by_type_or_source = LogSearch::new(text, None);
            by_type_or_source.update(&hub);
            assert_eq!(by_type_or_source.rows().len(), 4, "{text}");
        }
        let trace_id = hub.message(c).unwrap().trace.trace_id.to_string();
        let mut by_trace = LogSearch::new(&trace_id.to_uppercase(), None);
        by_trace.update(&hub);
        assert_eq!(ids(&by_trace), [c], "found by its trace id");

        drop(hub.clear_log());
        let d = publish(&hub, "alpha four");
        search.update(&hub);
        assert_eq!(ids(&search), [d], "clearing the log drops every row");
    }

    #[test]
    fn a_topic_pattern_narrows_the_search_and_topics_are_searched() {
        let hub = Hub::new(HubConfig::default(), Arc::new(Nowhere));
        let on = |topic: &str, body: &str| {
            let draft = Draft {
                topic: Some(crate::hub::Topic::parse(topic).unwrap()),
                ..Draft::new(Bytes::from(body.to_owned()))
            };
            hub.publish(draft, Source::Console).unwrap().id().unwrap()
        };
        let created = on("orders.created", "x");
        on("billing.paid", "x");
        let shipped = on("orders.shipped.eu", "y");
        publish(&hub, "x");
        let pattern = |text| Some(Pattern::parse(text).unwrap());
        let mut orders = LogSearch::new("", pattern("orders.>"));
        orders.update(&hub);
        assert_eq!(ids(&orders), [shipped, created]);
        let mut one_token = LogSearch::new("x", pattern("orders.*"));
        one_token.update(&hub);
        assert_eq!(ids(&one_token), [created]);
        let mut by_topic_text = LogSearch::new("SHIPPED", None);
        by_topic_text.update(&hub);
        assert_eq!(ids(&by_topic_text), [shipped]);
    }

    #[test]
    fn a_burst_longer_than_a_page_is_searched_whole() {
        let hub = Hub::new(HubConfig::default(), Arc::new(Nowhere));
        let mut search = LogSearch::new("match", None);
        publish(&hub, "match");
        search.update(&hub);
        let burst: Vec<MessageId> = (0..300)
            .map(|i| publish(&hub, if i % 3 == 0 { "a match" } else { "other" }))
            .collect();
        search.update(&hub);
        let expected: Vec<MessageId> = burst.iter().step_by(3).rev().copied().collect();
        assert_eq!(search.rows().len(), 101);
        assert_eq!(ids(&search)[..100], expected);
    }
}
