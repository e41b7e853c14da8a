//! The seal on Herald's own messages in the stream: an HMAC-SHA256 over the subject,
//! every header and the body, keyed by a secret only the cluster's instances hold (its
//! identity, see `identity`). Anyone allowed to publish on `herald.>` can put a message
//! in the stream; only a sealed one is Herald's, so only its `Herald-*` headers (source,
//! replay link, the one subscriber it is for, forwarded headers) are believed.
//!
//! Every header is covered, not just Herald's: a header added to a copy of a sealed
//! message (in another spelling, say) breaks the seal rather than slipping past it.

use async_nats::HeaderMap;
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq as _;

/// Where the seal travels. Left out of what it covers.
pub(super) const SEAL_HEADER: &str = "Herald-Seal";
/// Names the layout below, so that a later one cannot be read as this.
const LAYOUT: &[u8] = b"herald-seal-1";

/// The cluster's sealing key.
pub(crate) struct Seal(hmac::Key);

impl Seal {
    pub(crate) fn new(key: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// Seals a message about to go into the stream: `headers` gets the seal.
    pub(crate) fn apply(&self, subject: &str, headers: &mut HeaderMap, body: &[u8]) {
        let tag = self.tag(subject, headers, body);
        headers.insert(SEAL_HEADER, STANDARD.encode(tag.as_ref()).as_str());
    }

    /// Whether a message read from the stream carries a seal this key made, over all it
    /// carries now.
    pub(crate) fn verifies(&self, subject: &str, headers: Option<&HeaderMap>, body: &[u8]) -> bool {
        let Some(headers) = headers else {
            return false;
        };
        let mut seals = headers.get_all(SEAL_HEADER);
        let (Some(seal), None) = (seals.next(), seals.next()) else {
            return false;
        };
        let Ok(given) = STANDARD.decode(seal.as_str()) else {
            return false;
        };
        let made = self.tag(subject, headers, body);
        bool::from(made.as_ref().ct_eq(&given))
    }

    /// The HMAC of the message laid out without ambiguity: each part length-prefixed,
    /// the headers sorted by name (NATS keeps no order between names; it does within
    /// one, so a name's values stay as they came).
    fn tag(&self, subject: &str, headers: &HeaderMap, body: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.0);
        let mut part = |bytes: &[u8]| {
            context.update(&(bytes.len() as u64).to_be_bytes());
            context.update(bytes);
        };
        part(LAYOUT);
        part(subject.as_bytes());
        let mut names: Vec<(&str, _)> = headers
            .iter()
            .map(|(name, values)| (AsRef::<str>::as_ref(name), values))
            .filter(|(name, _)| *name != SEAL_HEADER)
            .collect();
        names.sort_by_key(|(name, _)| *name);
        let count: usize = names.iter().map(|(_, values)| values.len()).sum();
        part(&(count as u64).to_be_bytes());
        for (name, values) in names {
            for value in values {
                part(name.as_bytes());
                part(value.as_str().as_bytes());
            }
        }
        part(body);
        context.sign()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(seal: &Seal) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("Herald-Source", "console");
        headers.append("Herald-Header-x-request-id", "a");
        headers.append("Herald-Header-x-request-id", "b");
        seal.apply("herald.orders", &mut headers, b"body");
        headers
    }

    #[test]
    fn a_sealed_message_verifies_as_it_was_sealed() {
        let seal = Seal::new(b"k");
        let headers = sealed(&seal);
        assert!(seal.verifies("herald.orders", Some(&headers), b"body"));
    }

    #[test]
    fn any_change_breaks_the_seal() {
        let seal = Seal::new(b"k");
        let headers = sealed(&seal);
        assert!(!seal.verifies("herald.payments", Some(&headers), b"body"));
        assert!(!seal.verifies("herald.orders", Some(&headers), b"bodY"));
        assert!(!Seal::new(b"other").verifies("herald.orders", Some(&headers), b"body"));
        let mut added = headers.clone();
        added.insert("herald-to", "127.0.0.1:9");
        assert!(!seal.verifies("herald.orders", Some(&added), b"body"));
        let mut reordered = HeaderMap::new();
        for (name, values) in headers.iter() {
            for value in values.iter().rev() {
                reordered.append(name.clone(), value.clone());
            }
        }
        assert!(!seal.verifies("herald.orders", Some(&reordered), b"body"));
        let mut twice = headers.clone();
        twice.append(SEAL_HEADER, headers.get(SEAL_HEADER).unwrap().clone());
        assert!(!seal.verifies("herald.orders", Some(&twice), b"body"));
    }

    #[test]
    fn an_unsealed_message_does_not_verify() {
        let seal = Seal::new(b"k");
        assert!(!seal.verifies("herald", None, b""));
        let mut forged = HeaderMap::new();
        forged.insert(SEAL_HEADER, "not base64!");
        assert!(!seal.verifies("herald", Some(&forged), b""));
    }
}
