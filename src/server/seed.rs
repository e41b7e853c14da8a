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

/// A failure on a seed route, rendered the way the seed rendered its errors: a status and
/// a plain-text body that starts with `Error:`.
struct SeedError {
    status: StatusCode,
    body: String,
}

impl SeedError {
    fn bad_request(body: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body,
        }
    }

    fn only(method: &str) -> Self {
        Self::bad_request(format!("Error: Only {method} accepted"))
    }
}

impl IntoResponse for SeedError {
    fn into_response(self) -> Response {
        text(self.status, self.body)
    }
}

type SeedResult = Result<Response, SeedError>;

/// The `address` query parameter, as the seed read it.
fn address(request: &Request) -> Result<String, SeedError> {
    let pairs = parse_query(request.uri().query().unwrap_or(""))
        .map_err(|err| SeedError::bad_request(format!("Error:{err}")))?;
    match first(&pairs, "address") {
        "" => Err(SeedError::bad_request(
            "Error:Wrong input address.".to_owned(),
        )),
        address => Ok(address.to_owned()),
    }
}

async fn register_and_keep_alive(State(state): State<AppState>, request: Request) -> SeedResult {
    if request.method() != Method::POST {
        return Err(SeedError::only("POST"));
    }
    let address = address(&request)?;
    match state.hub.register(&address) {
        Ok(_) => Ok(success()),
        Err(RegisterError::Address(err)) => Err(SeedError::bad_request(format!(
            "Error:Wrong input address. {err}"
        ))),
        Err(err @ (RegisterError::Full { .. } | RegisterError::ShuttingDown)) => Err(SeedError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: format!("Error: {err}"),
        }),
    }
}

async fn deregister(State(state): State<AppState>, request: Request) -> SeedResult {
    if request.method() != Method::DELETE {
        return Err(SeedError::only("DELETE"));
    }
    let address = address(&request)?;
    // Unknown addresses are fine: the seed answered "success" for them too.
    state.hub.remove(&address, RemovalReason::Deregistered);
    Ok(success())
}

async fn send_message(State(state): State<AppState>, request: Request) -> SeedResult {
    if request.method() != Method::POST {
        return Err(SeedError::only("POST"));
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let content_type = match request.headers().get(header::CONTENT_TYPE) {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
            SeedError::bad_request(
                "Error: the Content-Type header must be plain ASCII, e.g. application/json"
                    .to_owned(),
            )
        })?),
    };
    let body = read_body(request, state.config.max_body).await?;
    let Some(published) = state.hub.publish(body, content_type, Source::Http(peer)) else {
        return Err(SeedError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: "Error: the hub is shutting down; nothing was published".to_owned(),
        });
    };
    let mut response = success();
    let headers = response.headers_mut();
    headers.insert("x-herald-message-id", published.id.into());
    headers.insert("x-herald-subscribers", published.queued.into());
    Ok(response)
}

/// The whole request body, or the answer to give when it is too large or cut short.
/// A body that did not arrive whole is never published.
async fn read_body(request: Request, limit: usize) -> Result<Bytes, SeedError> {
    let too_large = || SeedError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        body: format!(
            "Error: the message is larger than the hub's limit of {limit} bytes; \
             send less or start Herald with a larger --max-body"
        ),
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
            SeedError::bad_request(format!(
                "Error: the message body did not arrive whole ({err}); nothing was published"
            ))
        })
}

async fn list_subscribers(State(state): State<AppState>, request: Request) -> SeedResult {
    if request.method() != Method::GET {
        return Err(SeedError::only("GET"));
    }
    let mut body = String::new();
    for subscriber in state.hub.subscribers() {
        // Go's `Fprintln(w, a, " : ", t)` puts a space between operands: "A  :  T\n".
        let seen = humantime::format_rfc3339_seconds(subscriber.last_seen);
        body.push_str(&format!("{}  :  {seen}\n", subscriber.address));
    }
    Ok(text(StatusCode::OK, body))
}
