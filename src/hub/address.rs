//! Subscriber addresses: what a client may register, and where its deliveries go.
//!
//! The seed accepted any string and posted to `http://ADDRESS/event`, so a typo only showed
//! up as failed deliveries nobody saw. Herald checks the address when it is registered:
//! `host:port` keeps the seed's meaning, a full `http://` or `https://` URL is used as
//! given, and anything else is refused with a message that says what was expected.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;
use url::Url;

/// Longest address accepted; longer ones are refused rather than stored and logged forever.
pub const MAX_ADDRESS_LEN: usize = 2048;

const EXPECTED: &str = "expected host:port (for example localhost:8080, 10.0.0.7:80 or [::1]:8080) \
                        or a full http:// or https:// URL";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("the address is empty: {EXPECTED}")]
    Empty,
    #[error("the address is {len} bytes long; at most {MAX_ADDRESS_LEN} bytes are accepted")]
    TooLong { len: usize },
    #[error("{address:?} contains whitespace or control characters: {EXPECTED}")]
    Unprintable { address: String },
    #[error(
        "{address:?} has a path but no scheme: write the full URL, for example http://{address}"
    )]
    PathWithoutScheme { address: String },
    #[error(
        "{address:?} uses an unsupported scheme: only http:// and https:// URLs are delivered to"
    )]
    UnsupportedScheme { address: String },
    #[error("{address:?} is not a valid URL ({reason}): {EXPECTED}")]
    BadUrl { address: String, reason: String },
    #[error("{address:?} has no port: {EXPECTED}")]
    MissingPort { address: String },
    #[error("{address:?} has port {port:?}, but a port is a number from 1 to 65535")]
    BadPort { address: String, port: String },
    #[error("{address:?} has an invalid host {host:?}: {EXPECTED}")]
    BadHost { address: String, host: String },
}

/// What a ban is kept under: the address a delivery would go to, with every spelling of
/// this machine (`localhost`, `127.1`, `[::1]`) as one, so that `localhost:P`, `127.1:P`
/// and `http://127.0.0.1:P/event` are one address. One that does not parse is kept as it
/// is (it cannot register anyway).
pub(crate) fn ban_key(address: &str) -> String {
    let Ok(url) = parse_target(address) else {
        return address.to_owned();
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let host = match url.host_str() {
        _ if loopback => "loopback".to_owned(),
        Some(host) => host.to_ascii_lowercase(),
        None => String::new(),
    };
    let port = url.port_or_known_default().unwrap_or(0);
    format!("{}://{host}:{port}{}", url.scheme(), url.path())
}

/// Turns a registered address into the URL its deliveries are posted to.
pub fn parse_target(address: &str) -> Result<Url, AddressError> {
    if address.is_empty() {
        return Err(AddressError::Empty);
    }
    if address.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong { len: address.len() });
    }
    let owned = || address.to_owned();
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AddressError::Unprintable { address: owned() });
    }
    if let Some((scheme, _)) = address.split_once("://") {
        return if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
            parse_url(address)
        } else {
            Err(AddressError::UnsupportedScheme { address: owned() })
        };
    }
    if address.contains('/') {
        return Err(AddressError::PathWithoutScheme { address: owned() });
    }
    let (host, port) = split_host_port(address)?;
    if !valid_host(host) {
        return Err(AddressError::BadHost {
            address: owned(),
            host: host.to_owned(),
        });
    }
    let port = parse_port(address, port)?;
    parse_url(&format!("http://{host}:{port}/event"))
}

/// An address as it may be shown: a password in it (`http://user:pass@host/`) becomes
/// `***`. Listings, logs, events and the console show this, never the password.
pub(crate) fn redact(address: &str) -> Cow<'_, str> {
    let Some(start) = address.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(address);
    };
    let authority_end = address[start..]
        .find(['/', '?', '#'])
        .map_or(address.len(), |i| start + i);
    let Some(at) = address[start..authority_end].rfind('@').map(|i| start + i) else {
        return Cow::Borrowed(address);
    };
    match address[start..at].find(':').map(|i| start + i) {
        Some(colon) => Cow::Owned(format!("{}:***{}", &address[..colon], &address[at..])),
        None => Cow::Borrowed(address),
    }
}

fn parse_url(address: &str) -> Result<Url, AddressError> {
    let url = Url::parse(address).map_err(|err| AddressError::BadUrl {
        address: address.to_owned(),
        reason: err.to_string(),
    })?;
    if url.host().is_none() {
        return Err(AddressError::BadUrl {
            address: address.to_owned(),
            reason: "it has no host".to_owned(),
        });
    }
    Ok(url)
}

fn split_host_port(address: &str) -> Result<(&str, &str), AddressError> {
    let missing_port = || AddressError::MissingPort {
        address: address.to_owned(),
    };
    if address.starts_with('[') {
        let end = address.find(']').ok_or_else(|| AddressError::BadHost {
            address: address.to_owned(),
            host: address.to_owned(),
        })?;
        let port = address[end + 1..]
            .strip_prefix(':')
            .ok_or_else(missing_port)?;
        return Ok((&address[..=end], port));
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(missing_port)?;
    if host.contains(':') {
        // An IPv6 literal without brackets: the port cannot be told apart from the address.
        return Err(AddressError::BadHost {
            address: address.to_owned(),
            host: format!("{host} (an IPv6 address needs brackets: [{host}])"),
        });
    }
    Ok((host, port))
}

fn parse_port(address: &str, port: &str) -> Result<u16, AddressError> {
    let bad = || AddressError::BadPort {
        address: address.to_owned(),
        port: port.to_owned(),
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    // Underscores are not legal in DNS hostnames but are common in container and compose
    // service names, which is exactly where Herald's subscribers live.
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(address: &str) -> String {
        parse_target(address)
            .unwrap_or_else(|err| panic!("{address:?} refused: {err}"))
            .to_string()
    }

    #[test]
    fn host_port_goes_to_the_event_path() {
        assert_eq!(target("localhost:8080"), "http://localhost:8080/event");
        assert_eq!(target("127.0.0.1:1"), "http://127.0.0.1:1/event");
        assert_eq!(target("[::1]:65535"), "http://[::1]:65535/event");
        assert_eq!(target("orders_service:80"), "http://orders_service/event");
        assert_eq!(
            target("svc.internal.example:9000"),
            "http://svc.internal.example:9000/event"
        );
    }

    #[test]
    fn full_urls_are_used_as_given() {
        assert_eq!(
            target("http://localhost:8080/hooks/in"),
            "http://localhost:8080/hooks/in"
        );
        assert_eq!(
            target("https://example.com/x?y=1"),
            "https://example.com/x?y=1"
        );
        assert_eq!(target("HTTP://localhost:9/"), "http://localhost:9/");
    }

    #[test]
    fn malformed_addresses_are_refused_with_what_was_expected() {
        let cases = [
            ("", "empty"),
            ("localhost", "no port"),
            ("localhost:", "port"),
            ("localhost:0", "from 1 to 65535"),
            ("localhost:65536", "from 1 to 65535"),
            ("localhost:80a", "from 1 to 65535"),
            ("localhost:8080/hook", "no scheme"),
            ("ftp://localhost:21", "unsupported scheme"),
            ("::1:8080", "needs brackets"),
            ("[::1:8080", "invalid host"),
            ("[zz::1]:80", "invalid host"),
            ("-bad-.example:80", "invalid host"),
            ("bad host:80", "whitespace"),
            ("http://", "not a valid URL"),
            ("https://:80/x", "not a valid URL"),
        ];
        for (address, needle) in cases {
            let err = parse_target(address).expect_err(address).to_string();
            assert!(
                err.contains(needle),
                "{address:?} gave {err:?}, wanted {needle:?}"
            );
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        for (address, shown) in [
            ("http://user:pass@host:80/", "http://user:***@host:80/"),
            ("https://u:p@ss:w0rd@h/x?a=b@c", "https://u:***@h/x?a=b@c"),
            ("http://user@host:80/", "http://user@host:80/"),
            ("http://host:80/path@x", "http://host:80/path@x"),
            ("localhost:8080", "localhost:8080"),
            ("http://:secret@host/", "http://:***@host/"),
        ] {
            assert_eq!(redact(address), shown, "{address}");
        }
    }

    #[test]
    fn long_addresses_are_refused() {
        let long = format!("{}:80", "a.".repeat(MAX_ADDRESS_LEN));
        assert_eq!(
            parse_target(&long),
            Err(AddressError::TooLong { len: long.len() })
        );
    }
}
