//! Topics and the patterns subscribers ask for, in NATS subject syntax, and the index
//! that finds a topic's subscribers by walking its tokens, never by trying every pattern.
//!
//! A topic is dot-separated tokens of ASCII letters, digits, `-` and `_`
//! (`orders.created`). A pattern may also have `*` for exactly one token and, as its last
//! token, `>` for one or more. The syntax is NATS's on purpose: a topic becomes a JetStream
//! subject unchanged.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// The longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;
/// The most tokens in a topic or pattern. Each token of a pattern is a node of the index,
/// so this (with [`MAX_PATTERNS`] and the hub's cap on patterns in all) bounds its memory.
pub const MAX_TOKENS: usize = 16;
/// The most patterns one subscriber may hold.
pub const MAX_PATTERNS: usize = 64;
/// The most patterns all subscribers together may hold: with [`MAX_TOKENS`], what bounds
/// the index (some tens of MiB at worst).
pub const MAX_HUB_PATTERNS: usize = 100_000;

/// What a topic looks like, for error messages.
const TOPIC_RULE: &str =
    "dot-separated tokens of letters, digits, '-' and '_', e.g. orders.created";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("topic {given:?} {reason}; a topic is {TOPIC_RULE}")]
    Topic { given: String, reason: String },
    #[error(
        "topic pattern {given:?} {reason}; a pattern is {TOPIC_RULE}, where a token may be * (any one token) and the last may be > (one or more)"
    )]
    Pattern { given: String, reason: String },
    #[error("{given} topic patterns is more than one subscriber may hold ({MAX_PATTERNS})")]
    TooMany { given: usize },
    #[error(
        "the hub already holds {max} topic patterns in all, its limit; deregister some subscribers or give them fewer patterns"
    )]
    HubFull { max: usize },
}

/// A message's topic, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    pub fn parse(text: &str) -> Result<Self, TopicError> {
        check(text, false).map_err(|reason| TopicError::Topic {
            given: shorten(text),
            reason,
        })?;
        Ok(Self(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a subscriber asks for: a topic, or one with wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern(Arc<str>);

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, TopicError> {
        check(text, true).map_err(|reason| TopicError::Pattern {
            given: shorten(text),
            reason,
        })?;
        Ok(Self(text.into()))
    }

    /// A list as a registration gives it: at most [`MAX_PATTERNS`], each checked, in
    /// order and without repeats.
    pub fn parse_all<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Self>, TopicError> {
        if texts.len() > MAX_PATTERNS {
            return Err(TopicError::TooMany { given: texts.len() });
        }
        let mut patterns: Vec<Self> = Vec::with_capacity(texts.len());
        for text in texts {
            let pattern = Self::parse(text.as_ref())?;
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        Ok(patterns)
    }

    /// Comma-separated patterns as a person types them (`orders.*, payments.>`), blanks
    /// skipped, as [`Pattern::parse_all`] takes them.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, TopicError> {
        let parts: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        Self::parse_all(&parts)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, topic: &Topic) -> bool {
        let mut topic = topic.0.split('.');
        for token in self.0.split('.') {
            match (token, topic.next()) {
                (">", Some(_)) => return true,
                ("*", Some(_)) => {}
                (token, Some(given)) if token == given => {}
                _ => return false,
            }
        }
        topic.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why `text` is not a topic (or, with `wildcards`, a pattern).
fn check(text: &str, wildcards: bool) -> Result<(), String> {
    if text.is_empty() {
        return Err("is empty".into());
    }
    if text.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "is {} bytes, more than {MAX_TOPIC_LEN}",
            text.len()
        ));
    }
    let tokens: Vec<&str> = text.split('.').collect();
    if tokens.len() > MAX_TOKENS {
        return Err(format!(
            "has {} tokens, more than {MAX_TOKENS}",
            tokens.len()
        ));
    }
    for (n, token) in tokens.iter().enumerate() {
        let last = n + 1 == tokens.len();
        match *token {
            "" => return Err(format!("has an empty token (token {})", n + 1)),
            "*" if wildcards => {}
            ">" if wildcards && last => {}
            ">" if wildcards => return Err("has > before its last token".into()),
            "*" | ">" => {
                return Err(format!(
                    "has the wildcard {token}, which only subscriptions may use"
                ));
            }
            token => {
                if let Some(bad) = token
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
                {
                    let hint = if matches!(bad, '*' | '>') {
                        " (a wildcard must be a whole token)"
                    } else {
                        ""
                    };
                    return Err(format!("has the character {bad:?}{hint}"));
                }
            }
        }
    }
    Ok(())
}

/// Enough of a refused value to recognise it, however long it was.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// Patterns and who holds them, as a trie of tokens: finding a topic's holders visits
/// only the nodes its tokens lead to (each at most once), whatever else is held.
#[derive(Debug)]
pub(super) struct TopicIndex<K> {
    root: Node<K>,
}

impl<K> Default for TopicIndex<K> {
    fn default() -> Self {
        Self {
            root: Node::default(),
        }
    }
}

#[derive(Debug)]
struct Node<K> {
    /// Sorted by token, found by binary search: a `Vec` holds one child in one small
    /// allocation where a map takes several buckets, and most nodes have one child.
    exact: Vec<(Box<str>, Node<K>)>,
    /// Where a `*` token leads.
    any: Option<Box<Node<K>>>,
    /// Holders of a pattern that ends here.
    here: Vec<K>,
    /// Holders of a pattern whose next and last token is `>`.
    rest: Vec<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Self {
            exact: Vec::new(),
            any: None,
            here: Vec::new(),
            rest: Vec::new(),
        }
    }
}

impl<K> Node<K> {
    fn is_empty(&self) -> bool {
        self.here.is_empty() && self.rest.is_empty() && self.exact.is_empty() && self.any.is_none()
    }

    fn find(&self, token: &str) -> Result<usize, usize> {
        self.exact.binary_search_by(|(t, _)| (**t).cmp(token))
    }

    fn child(&self, token: &str) -> Option<&Node<K>> {
        self.find(token).ok().map(|at| &self.exact[at].1)
    }

    fn child_or_new(&mut self, token: &str) -> &mut Node<K> {
        let at = match self.find(token) {
            Ok(at) => at,
            Err(at) => {
                self.exact.insert(at, (token.into(), Node::default()));
                at
            }
        };
        &mut self.exact[at].1
    }
}

impl<K: Clone + Ord> TopicIndex<K> {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    pub(super) fn insert(&mut self, pattern: &Pattern, holder: K) {
        let mut node = &mut self.root;
        for token in pattern.0.split('.') {
            node = match token {
                ">" => {
                    node.rest.push(holder);
                    return;
                }
                "*" => node.any.get_or_insert_with(Box::default),
                token => node.child_or_new(token),
            };
        }
        node.here.push(holder);
    }

    pub(super) fn remove(&mut self, pattern: &Pattern, holder: &K) {
        let tokens: Vec<&str> = pattern.0.split('.').collect();
        remove_from(&mut self.root, &tokens, holder);
    }

    /// Everyone holding a pattern that matches `topic`, each once, in order.
    pub(super) fn matching(&self, topic: &Topic) -> BTreeSet<K> {
        let tokens: Vec<&str> = topic.0.split('.').collect();
        let mut found = BTreeSet::new();
        collect(&self.root, &tokens, &mut found);
        found
    }
}

fn collect<K: Clone + Ord>(node: &Node<K>, tokens: &[&str], found: &mut BTreeSet<K>) {
    let Some((first, rest)) = tokens.split_first() else {
        found.extend(node.here.iter().cloned());
        return;
    };
    found.extend(node.rest.iter().cloned());
    if let Some(next) = node.child(first) {
        collect(next, rest, found);
    }
    if let Some(next) = &node.any {
        collect(next, rest, found);
    }
}

/// Takes `holder` out where `tokens` lead, and prunes what is left empty.
fn remove_from<K: PartialEq>(node: &mut Node<K>, tokens: &[&str], holder: &K) {
    let drop_one = |holders: &mut Vec<K>| {
        if let Some(at) = holders.iter().position(|h| h == holder) {
            holders.swap_remove(at);
        }
    };
    match tokens.split_first() {
        None => drop_one(&mut node.here),
        Some((&">", _)) => drop_one(&mut node.rest),
        Some((&"*", rest)) => {
            if let Some(next) = node.any.as_deref_mut() {
                remove_from(next, rest, holder);
                if next.is_empty() {
                    node.any = None;
                }
            }
        }
        Some((token, rest)) => {
            if let Ok(at) = node.find(token) {
                let next = &mut node.exact[at].1;
                remove_from(next, rest, holder);
                if next.is_empty() {
                    node.exact.remove(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(text: &str) -> Topic {
        Topic::parse(text).unwrap()
    }

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn what_a_topic_may_be() {
        for good in ["orders", "orders.created", "billing.invoice-paid", "a_b.C9"] {
            assert!(Topic::parse(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("", "is empty"),
            ("orders..created", "empty token (token 2)"),
            (".orders", "empty token (token 1)"),
            ("orders.", "empty token (token 2)"),
            ("orders.*", "only subscriptions"),
            ("orders.>", "only subscriptions"),
            ("orders created", "' '"),
            ("commande.créée", "'é'"),
        ] {
            let err = Topic::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
            assert!(err.contains("e.g. orders.created"), "{err}");
        }
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        let err = Topic::parse(&long).unwrap_err().to_string();
        assert!(err.contains("257 bytes, more than 256"), "{err}");
        assert!(err.len() < 400, "the whole value was echoed: {err}");
        assert!(Topic::parse(&long[1..]).is_ok());
        let deep = vec!["a"; MAX_TOKENS + 1].join(".");
        let err = Topic::parse(&deep).unwrap_err().to_string();
        assert!(err.contains("17 tokens, more than 16"), "{err}");
        assert!(Topic::parse(&deep[2..]).is_ok());
    }

    #[test]
    fn what_a_pattern_may_be() {
        for good in ["orders.*", "payments.>", ">", "*", "*.created", "a.*.c.>"] {
            assert!(Pattern::parse(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("orders.>.x", "before its last token"),
            ("orders.cre*", "whole token"),
            ("orders.>x", "whole token"),
            ("a..b", "empty token"),
        ] {
            let err = Pattern::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let long = format!("{}.>", "a".repeat(MAX_TOPIC_LEN - 1));
        let err = Pattern::parse(&long).unwrap_err().to_string();
        assert!(err.contains("257 bytes"), "{err}");
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|n| format!("t{n}")).collect();
        assert_eq!(
            Pattern::parse_all(&many),
            Err(TopicError::TooMany {
                given: MAX_PATTERNS + 1
            })
        );
        let repeated = Pattern::parse_all(&["a", "b", "a"]).unwrap();
        assert_eq!(repeated, [pattern("a"), pattern("b")]);
    }

    #[test]
    fn wildcards_match_as_nats_does() {
        let cases = [
            ("orders.*", "orders.created", true),
            ("orders.*", "orders", false),
            ("orders.*", "orders.created.eu", false),
            ("orders.>", "orders.created", true),
            ("orders.>", "orders.created.eu", true),
            ("orders.>", "orders", false),
            (">", "anything.at.all", true),
            ("*", "one", true),
            ("*", "one.two", false),
            ("*.created", "orders.created", true),
            ("orders.created", "orders.created", true),
            ("orders.created", "orders.updated", false),
            ("a.*.c.>", "a.b.c.d.e", true),
            ("a.*.c.>", "a.b.c", false),
        ];
        for (pattern_text, topic_text, expected) in cases {
            let (p, t) = (pattern(pattern_text), topic(topic_text));
            assert_eq!(p.matches(&t), expected, "{pattern_text} ~ {topic_text}");
            let mut index = TopicIndex::default();
            index.insert(&p, 7);
            let found = index.matching(&t).contains(&7);
            assert_eq!(found, expected, "index: {pattern_text} ~ {topic_text}");
        }
    }

    #[test]
    fn many_siblings_are_found_and_removed_in_any_order() {
        let mut index = TopicIndex::default();
        let names: Vec<String> = (0..500).map(|n| format!("s{}", (n * 7919) % 500)).collect();
        for (holder, name) in names.iter().enumerate() {
            index.insert(&pattern(&format!("bench.{name}.*")), holder);
        }
        for (holder, name) in names.iter().enumerate() {
            let found = index.matching(&topic(&format!("bench.{name}.created")));
            assert_eq!(found.into_iter().collect::<Vec<_>>(), [holder], "{name}");
        }
        for (holder, name) in names.iter().enumerate().rev() {
            index.remove(&pattern(&format!("bench.{name}.*")), &holder);
        }
        assert!(index.is_empty(), "{index:?}");
    }

    #[test]
    fn the_index_finds_each_holder_once_and_forgets_removed_ones() {
        let mut index = TopicIndex::default();
        for (holder, p) in [(1, "orders.*"), (1, "orders.>"), (2, "orders.created")] {
            index.insert(&pattern(p), holder);
        }
        index.insert(&pattern("payments.>"), 3);
        let found: Vec<i32> = index
            .matching(&topic("orders.created"))
            .into_iter()
            .collect();
        assert_eq!(found, [1, 2]);
        index.remove(&pattern("orders.*"), &1);
        index.remove(&pattern("orders.>"), &1);
        let found: Vec<i32> = index
            .matching(&topic("orders.created"))
            .into_iter()
            .collect();
        assert_eq!(found, [2]);
        index.remove(&pattern("orders.created"), &2);
        index.remove(&pattern("payments.>"), &3);
        assert!(index.is_empty(), "{index:?}");
    }
}
