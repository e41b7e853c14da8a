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
use super::error::HttpError;
use super::query::{first, parse_query};
use crate::delivery::INSTANCE_HEADER;
use crate::hub::{RegisterError, RemovalReason, Secret, Source, Subscription};

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

type SeedResult = Result<Response, HttpError>;

fn only(method: &str) -> HttpError {
    HttpError::seed(
        StatusCode::BAD_REQUEST,
        format!("Error: Only {method} accepted"),
    )
}

/// The query's pairs, and its `address`, as the seed read them.
fn address(request: &Request) -> Result<(String, Vec<(String, String)>), HttpError> {
    let pairs = parse_query(request.uri().query().unwrap_or(""))
        .map_err(|err| HttpError::seed(StatusCode::BAD_REQUEST, format!("Error:{err}")))?;
    match first(&pairs, "address") {
        "" => Err(HttpError::seed(
            StatusCode::BAD_REQUEST,
            "Error:Wrong input address.".to_owned(),
        )),
        address => Ok((address.to_owned(), pairs.clone())),
    }
}

async fn register_and_keep_alive(State(state): State<AppState>, request: Request) -> SeedResult {
    if request.method() != Method::POST {
        return Err(only("POST"));
    }
    let (address, query) = address(&request)?;
    // Herald's addition: `&secret=whsec_...` signs this subscriber's deliveries.
    let secret = match first(&query, "secret") {
        "" => None,
        text => Some(text.parse::<Secret>().map_err(|err| {
            HttpError::new(StatusCode::BAD_REQUEST, format!("bad secret: {err}"))
        })?),
    };
    let subscription = Subscription {
        secret,
        ..Subscription::new(&address)
    };
    match state.hub.subscribe(subscription) {
        Ok(_) => Ok(success()),
        Err(err @ (RegisterError::Address(_) | RegisterError::Target(_))) => Err(HttpError::seed(
            StatusCode::BAD_REQUEST,
            format!("Error:Wrong input address. {err}"),
        )),
        Err(err @ (RegisterError::Full { .. } | RegisterError::ShuttingDown)) => Err(
            HttpError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
        ),
    }
}

async fn deregister(State(state): State<AppState>, request: Request) -> SeedResult {
    if request.method() != Method::DELETE {
        return Err(only("DELETE"));
    }
    let (address, _) = address(&request)?;
    // Unknown addresses are fine: the seed answered "success" for them too.
    state.hub.remove(&address, RemovalReason::Deregistered);
    Ok(success())
}

async fn send_message(State(state): State<AppState>, request: Request) -> SeedResult {
    if request.method() != Method::POST {
        return Err(only("POST"));
    }
    if request
        .headers()
        .get(INSTANCE_HEADER)
        .is_some_and(|v| v.as_bytes() == state.hub.instance().as_bytes())
    {
        return Err(HttpError::new(
            StatusCode::LOOP_DETECTED,
            "this request is one of this hub's own deliveries (a subscriber address points \
             back at Herald); it was not published again"
                .to_owned(),
        ));
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let content_type = match request.headers().get(header::CONTENT_TYPE) {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "the Content-Type header must be plain ASCII, e.g. application/json".to_owned(),
            )
        })?),
    };
    let body = read_body(request, state.config.max_body).await?;
    let Some(published) = state.hub.publish(body, content_type, Source::Http(peer)) else {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the hub is shutting down; nothing was published".to_owned(),
        ));
    };
    let mut response = success();
    let headers = response.headers_mut();
    headers.insert("x-herald-message-id", published.id.into());
    headers.insert("x-herald-subscribers", published.queued.into());
    Ok(response)
}

/// The whole request body, or the answer to give when it is too large or cut short.
/// A body that did not arrive whole is never published.
async fn read_body(request: Request, limit: usize) -> Result<Bytes, HttpError> {
    // A declared length over the limit was already refused by the guard; this catches
    // chunked bodies that grow past it.
    let too_large = || HttpError::too_large(limit);
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
            HttpError::new(
                StatusCode::BAD_REQUEST,
                format!("the message body did not arrive whole ({err}); nothing was published"),
            )
        })
}

async fn list_subscribers(State(state): State<AppState>, request: Request) -> SeedResult {
    if request.method() != Method::GET {
        return Err(only("GET"));
    }
    let mut body = String::new();
    for subscriber in state.hub.subscribers() {
        // Go's `Fprintln(w, a, " : ", t)` puts a space between operands: "A  :  T\n".
        let seen = humantime::format_rfc3339_seconds(subscriber.last_seen);
        body.push_str(&format!("{}  :  {seen}\n", subscriber.address));
    }
    Ok(text(StatusCode::OK, body))
}
