//! Web origins (scheme, host, port), as browsers send them in `Origin` and as
//! `--allow-origin` names them, compared the way the cross-site check needs.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use url::{Host, Url};

/// A web origin. `localhost`, `127.0.0.1` and `[::1]` are one host: a page reaches the hub
/// under whichever spelling its user typed, and all of them are this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    /// Lowercase, without a trailing dot; `None` for loopback in any spelling.
    host: Option<String>,
    port: u16,
}

impl Origin {
    /// The origin a request's `Host` header addresses: the hub serves plain `http`.
    pub(crate) fn of_host_header(host: &str) -> Option<Self> {
        if host.contains(['/', '?', '#', '@']) {
            return None;
        }
        Self::from_url(&Url::parse(&format!("http://{host}")).ok()?)
    }

    fn from_url(url: &Url) -> Option<Self> {
        let host = match url.host()? {
            Host::Domain(name) => {
                let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
                (name != "localhost").then_some(name)
            }
            Host::Ipv4(ip) if ip == Ipv4Addr::LOCALHOST => None,
            Host::Ipv6(ip) if ip == Ipv6Addr::LOCALHOST => None,
            Host::Ipv4(ip) => Some(ip.to_string()),
            Host::Ipv6(ip) => Some(format!("[{ip}]")),
        };
        Some(Self {
            scheme: url.scheme().to_owned(),
            host,
            port: url.port_or_known_default()?,
        })
    }
}

impl FromStr for Origin {
    type Err = String;

    /// `scheme://host[:port]`, as in an `Origin` header (a trailing `/` is allowed).
    fn from_str(text: &str) -> Result<Self, String> {
        let expected = "write an origin as scheme://host:port, e.g. http://localhost:5173";
        let url = Url::parse(text).map_err(|err| format!("{text:?}: {err}; {expected}"))?;
        let bare = url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none();
        if !bare {
            return Err(format!(
                "{text:?} has more than an origin (a path, query or user); {expected}"
            ));
        }
        Self::from_url(&url).ok_or_else(|| format!("{text:?} has no host and port; {expected}"))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host.as_deref().unwrap_or("localhost");
        write!(f, "{}://{host}:{}", self.scheme, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> Origin {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_spellings_are_one_host() {
        let own = Origin::of_host_header("127.0.0.1:3000").unwrap();
        for text in [
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "http://LOCALHOST.:3000/",
            "http://[::1]:3000",
        ] {
            assert_eq!(origin(text), own, "{text}");
        }
        for text in [
            "https://127.0.0.1:3000",
            "http://127.0.0.1:3001",
            "http://127.0.0.1",
            "http://evil.example:3000",
            "http://localhost.evil.example:3000",
        ] {
            assert_ne!(origin(text), own, "{text}");
        }
    }

    #[test]
    fn default_ports_and_case() {
        assert_eq!(
            origin("http://Herald.Test"),
            Origin::of_host_header("herald.test:80").unwrap()
        );
        assert_eq!(
            origin("https://evil.example"),
            origin("https://EVIL.example:443")
        );
        assert_eq!(origin("http://[::1]").to_string(), "http://localhost:80");
        assert_eq!(origin("http://10.0.0.5:8").to_string(), "http://10.0.0.5:8");
    }

    #[test]
    fn only_bare_origins_parse() {
        for text in [
            "null",
            "evil.example",
            "http://evil.example/path",
            "http://evil.example/?q",
            "http://user@evil.example",
            "file:///etc/passwd",
            "",
        ] {
            assert!(text.parse::<Origin>().is_err(), "{text}");
        }
        assert!(Origin::of_host_header("evil.example/x").is_none());
        assert!(Origin::of_host_header("").is_none());
    }
}
