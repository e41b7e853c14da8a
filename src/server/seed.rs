//! The routes of the Go design Herald grew from, byte-compatible so its clients work
//! unchanged: same paths, same status codes, same plain-text bodies.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use http_body_util::LengthLimitError;

use super::AppState;
use super::query::{first, parse_query};
use crate::hub::{RegisterError, RemovalReason, Source};

pub(super) fn router() -> Router<AppState> {
    // `any`, not `post`/`get`: the seed answers a wrong method with 400 and its own text,
    // where a method router would answer 405.
    Router::new()
        .route("/registerAndKeepAlive", any(register_and_keep_alive))
        .route("/deregister", any(deregister))
        .route("/sendMessage", any(send_message))
        .route("/listSubscribers", any(list_subscribers))
}

/// A plain-text answer, as Go's `fmt.Fprint` on a `ResponseWriter` gives.
pub(super) fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body.into(),
    )
        .into_response()
}

fn success() -> Response {
    text(StatusCode::OK, "success")
}

fn only(method: &str) -> Response {
    text(
        StatusCode::BAD_REQUEST,
        format!("Error: Only {method} accepted"),
    )
}

/// The `address` query parameter, or the seed's error response.
fn address(request: &Request) -> Result<String, Response> {
    let pairs = parse_query(request.uri().query().unwrap_or(""))
        .map_err(|err| text(StatusCode::BAD_REQUEST, format!("Error:{err}")))?;
    match first(&pairs, "address") {
        "" => Err(text(StatusCode::BAD_REQUEST, "Error:Wrong input address.")),
        address => Ok(address.to_owned()),
    }
}

async fn register_and_keep_alive(State(state): State<AppState>, request: Request) -> Response {
    if request.method() != Method::POST {
        return only("POST");
    }
    let address = match address(&request) {
        Ok(address) => address,
        Err(response) => return response,
    };
    match state.hub.register(&address) {
        Ok(_) => success(),
        Err(RegisterError::Address(err)) => text(
            StatusCode::BAD_REQUEST,
            format!("Error:Wrong input address. {err}"),
        ),
        Err(err @ (RegisterError::Full { .. } | RegisterError::ShuttingDown)) => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("Error: {err}"))
        }
    }
}

async fn deregister(State(state): State<AppState>, request: Request) -> Response {
    if request.method() != Method::DELETE {
        return only("DELETE");
    }
    match address(&request) {
        Ok(address) => {
            // Unknown addresses are fine: the seed answered "success" for them too.
            state.hub.remove(&address, RemovalReason::Deregistered);
            success()
        }
        Err(response) => response,
    }
}

async fn send_message(State(state): State<AppState>, request: Request) -> Response {
    if request.method() != Method::POST {
        return only("POST");
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = match read_body(request, state.config.max_body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(published) = state.hub.publish(body, content_type, Source::Http(peer)) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Error: the hub is shutting down; nothing was published",
        );
    };
    let mut response = success();
    let headers = response.headers_mut();
    headers.insert("x-herald-message-id", published.id.into());
    headers.insert("x-herald-subscribers", published.queued.into());
    response
}

/// The whole request body, or the answer to give when it is too large or cut short.
/// A body that did not arrive whole is never published.
async fn read_body(request: Request, limit: usize) -> Result<Bytes, Response> {
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Error: the message is larger than the hub's limit of {limit} bytes; \
                 send less or start Herald with a larger --max-body"
            ),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|err| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
            while let Some(inner) = cause {
                if inner.is::<LengthLimitError>() {
                    return too_large();
                }
                cause = inner.source();
            }
            text(
                StatusCode::BAD_REQUEST,
                format!("Error: the message body did not arrive whole ({err}); nothing was published"),
            )
        })
}

async fn list_subscribers(State(state): State<AppState>, request: Request) -> Response {
    if request.method() != Method::GET {
        return only("GET");
    }
    let mut body = String::new();
    for subscriber in state.hub.subscribers() {
        // Go's `Fprintln(w, a, " : ", t)` puts a space between operands: "A  :  T\n".
        let seen = humantime::format_rfc3339_seconds(subscriber.last_seen);
        body.push_str(&format!("{}  :  {seen}\n", subscriber.address));
    }
    text(StatusCode::OK, body)
}
