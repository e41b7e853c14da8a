//! Checks every request passes before any route sees it: that no other web site sent it
//! (`Origin`, `Sec-Fetch-Site`), that it is not one of this hub's own deliveries (loops),
//! the `Host` header (DNS rebinding), the bearer token, and the declared body size.

use aws_lc_rs::digest::{SHA256, digest};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq as _;

use super::AppState;
use super::error::{Dialect, HttpError, Result};
use crate::wire::INSTANCE_HEADER;
use crate::wire::Origin;

/// The Fetch Metadata header a browser adds to every request it sends.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

pub(super) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(err) = check(&state, request.headers()) {
        return err.render(Dialect::of(request.uri().path()));
    }
    next.run(request).await
}

fn check(state: &AppState, headers: &HeaderMap) -> Result<()> {
    cross_site(headers, &state.config.allowed_origins)?;
    if headers
        .get(INSTANCE_HEADER)
        .is_some_and(|v| v.as_bytes() == state.hub.instance().as_bytes())
    {
        return Err(HttpError::new(
            StatusCode::LOOP_DETECTED,
            "this request is one of this hub's own deliveries (a subscriber address points \
             back at Herald, under some name); it was refused so that it cannot loop",
        ));
    }
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !host_allowed(host, &state.config.allowed_hosts) {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Host {host:?} is not allowed: Herald answers requests addressed to localhost \
                     or an IP address, so that a web page cannot reach it through DNS \
                     rebinding; to use a name, start Herald with --allow-host NAME"
                ),
            ));
        }
    }
    if let Some(token) = &state.config.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !token_matches(given, token) {
            return Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "this hub requires the header `Authorization: Bearer TOKEN`, with the token \
                 given by --token or printed when Herald started",
            ));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.config.max_body as u64) {
        return Err(HttpError::too_large(state.config.max_body));
    }
    Ok(())
}

/// Refuses what a web page on another site sent: any web page the user visits can send
/// "simple" requests (a POST with a `text/plain` body needs no preflight) to a hub on
/// localhost. Browsers name the sending page in `Origin` and say how it relates to the
/// target in `Sec-Fetch-Site`; clients that are not browsers send neither, and pass.
/// An origin given with `--allow-origin` is trusted whatever `Sec-Fetch-Site` says (a dev
/// server on another port of localhost is `same-site`).
fn cross_site(headers: &HeaderMap, allowed: &[Origin]) -> Result<()> {
    let refuse = |why: String| {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{why}; Herald refuses requests that web pages on other sites send, so that a \
                 page you visit cannot drive it; to let a page use it, start Herald with \
                 --allow-origin ORIGIN (the page's scheme://host:port)"
            ),
        ))
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = String::from_utf8_lossy(origin.as_bytes());
        let origin = text.parse::<Origin>().ok();
        if origin.as_ref().is_some_and(|o| allowed.contains(o)) {
            return Ok(());
        }
        let own = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(Origin::of_host_header);
        if origin.is_none() || origin != own {
            return refuse(format!(
                "this request comes from a web page at {text:?}, not from this hub's own origin"
            ));
        }
    }
    if let Some(site) = headers.get(SEC_FETCH_SITE)
        && matches!(site.as_bytes(), b"cross-site" | b"same-site")
    {
        let site = String::from_utf8_lossy(site.as_bytes());
        return refuse(format!(
            "a browser sent this request for a web page on another site \
             (Sec-Fetch-Site: {site})"
        ));
    }
    Ok(())
}

/// Compares SHA-256 digests rather than the tokens themselves: comparing byte strings of
/// different lengths returns at once, which would tell a prober the token's length.
fn token_matches(given: &str, token: &str) -> bool {
    let given = digest(&SHA256, given.as_bytes());
    let token = digest(&SHA256, token.as_bytes());
    bool::from(given.as_ref().ct_eq(token.as_ref()))
}

/// Whether a `Host` header value may be answered. A DNS-rebinding page reaches the hub
/// under the attacker's own host name, so names must be known; IP literals (any port) can
/// never be such a name.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || valid_port(port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn valid_port(port: &str) -> bool {
    port.strip_prefix(':')
        .unwrap_or(port)
        .parse::<u16>()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn tokens_are_judged_by_their_whole_value() {
        let token = "0123456789abcdef";
        assert!(token_matches(token, token));
        for given in [
            "",
            "0123456789abcdeX",
            "0123456789abcde",
            "0123456789abcdef0",
            "x",
        ] {
            assert!(!token_matches(given, token), "{given:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let allowed = ["http://localhost:5173".parse::<Origin>().unwrap()];
        let host = ("host", "127.0.0.1:3000");
        for passes in [
            headers(&[host]),
            headers(&[host, ("origin", "http://localhost:3000")]),
            headers(&[host, ("origin", "http://[::1]:3000")]),
            headers(&[host, ("sec-fetch-site", "same-origin")]),
            headers(&[host, ("sec-fetch-site", "none")]),
            headers(&[host, ("origin", "http://127.0.0.1:5173")]),
            headers(&[
                host,
                ("origin", "http://localhost:5173"),
                ("sec-fetch-site", "same-site"),
            ]),
        ] {
            assert!(cross_site(&passes, &allowed).is_ok(), "{passes:?}");
        }
        for refused in [
            headers(&[host, ("origin", "https://evil.example")]),
            headers(&[host, ("origin", "null")]),
            headers(&[host, ("origin", "https://127.0.0.1:3000")]),
            headers(&[host, ("origin", "http://127.0.0.1:3001")]),
            headers(&[("origin", "http://127.0.0.1:3000")]),
            headers(&[host, ("sec-fetch-site", "cross-site")]),
            headers(&[host, ("sec-fetch-site", "same-site")]),
            headers(&[
                host,
                ("origin", "http://127.0.0.1:3000"),
                ("sec-fetch-site", "cross-site"),
            ]),
        ] {
            assert!(cross_site(&refused, &allowed).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn hosts() {
        let allowed = ["herald.test".to_owned()];
        for host in [
            "localhost",
            "localhost:3000",
            "LOCALHOST.:3000",
            "127.0.0.1:3000",
            "10.0.0.5:3000",
            "[::1]:3000",
            "[::1]",
            "herald.test:3000",
        ] {
            assert!(host_allowed(host, &allowed), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example:3000",
            "127.0.0.1.nip.io:3000",
            "[::1]x",
            "[evil]:80",
            "localhost:notaport",
            "",
        ] {
            assert!(!host_allowed(host, &allowed), "{host}");
        }
    }
}
