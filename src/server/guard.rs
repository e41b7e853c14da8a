//! Checks every request passes before any route sees it: the `Host` header (DNS
//! rebinding), the bearer token, and the declared body size.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq as _;

use super::AppState;
use super::error::{Dialect, HttpError, Result};

pub(super) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(err) = check(&state, request.headers()) {
        return err.render(Dialect::of(request.uri().path()));
    }
    next.run(request).await
}

fn check(state: &AppState, headers: &HeaderMap) -> Result<()> {
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
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
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
    use super::*;

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
