//! Accepting a published message, the same way on every route that publishes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use bytes::Bytes;

use super::error::{HttpError, Result};
use super::{AppState, ServerConfig};
use crate::hub::{Draft, Published, Source, Topic};
use crate::wire::{
    CLOUDEVENTS_TYPE_HEADER, TOPIC_HEADER, TRACEPARENT_HEADER, TRACESTATE_HEADER, TraceContext,
    forward,
};

/// Reads the whole body and publishes it with the request's content type, trace context
/// and the headers `--forward-header` names. A body that is too large or did not arrive
/// whole is never published. (The guard has already refused the hub's own deliveries,
/// which must not be published again.)
pub(super) async fn publish(state: &AppState, request: Request) -> Result<Published> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let content_type = match request.headers().get(header::CONTENT_TYPE) {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "the Content-Type header must be plain ASCII, e.g. application/json",
            )
        })?),
    };
    // Checked before the body is read: a bad topic publishes nothing.
    let topic = topic(request.uri().query(), request.headers())?;
    let headers = forwarded(request.headers(), &state.config.forward_headers);
    let trace = trace(request.headers());
    let body = read_body(request, &state.config).await?;
    let draft = Draft {
        body,
        content_type,
        headers,
        trace,
        topic,
    };
    // Waits, rather than refusing, while the fan-out is a full backlog behind: a
    // publisher that outruns it is slowed down, and nothing it was told was accepted is lost.
    Ok(state
        .hub
        .publish_when_ready(draft, Source::Http(peer))
        .await?)
}

/// The topic a publish names: `?topic=`, or else the `X-Herald-Topic` header, or else a
/// CloudEvents `ce-type` that is a topic. A `ce-type` that is not (`com.example/v1:x`) is
/// no topic rather than an error: publishers that sent it before Herald had topics must
/// keep working. A topic given both ways must be the same.
fn topic(query: Option<&str>, headers: &HeaderMap) -> Result<Option<Topic>> {
    let bad = |message: String| HttpError::new(StatusCode::BAD_REQUEST, message);
    // Leniently parsed: the seed never read this route's query, so a query that Go would
    // call malformed must not start failing now.
    let in_query: Vec<String> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(key, _)| key == "topic")
        .map(|(_, value)| value.into_owned())
        .collect();
    let mut in_header = headers.get_all(TOPIC_HEADER).iter();
    let in_header = match (in_header.next(), in_header.next()) {
        (_, Some(_)) => return Err(bad(format!("send one {TOPIC_HEADER} header, not several"))),
        (None, None) => None,
        (Some(value), None) => Some(value.to_str().map_err(|_| {
            bad(format!(
                "the {TOPIC_HEADER} header must be plain ASCII, e.g. orders.created"
            ))
        })?),
    };
    let given = match (in_query.as_slice(), in_header) {
        ([], None) => None,
        ([one], None) => Some(one.as_str()),
        ([], Some(header)) => Some(header),
        ([one], Some(header)) if one == header => Some(header),
        ([_], Some(_)) => {
            let message = format!("?topic= and the {TOPIC_HEADER} header differ; give one");
            return Err(bad(message));
        }
        _ => return Err(bad("give ?topic= once".to_owned())),
    };
    if let Some(given) = given {
        return Ok(Some(Topic::parse(given)?));
    }
    Ok(headers
        .get(CLOUDEVENTS_TYPE_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| Topic::parse(text).ok()))
}

/// Every value of each header in `names`, in order.
fn forwarded(headers: &HeaderMap, names: &[HeaderName]) -> Vec<(String, Bytes)> {
    forward::forwarded(names, |name| {
        headers.get_all(name).iter().map(|v| v.as_bytes())
    })
}

fn trace(headers: &HeaderMap) -> Option<TraceContext> {
    let values = |name: &str| headers.get_all(name).iter().map(|v| v.as_bytes());
    forward::trace(values(TRACEPARENT_HEADER), values(TRACESTATE_HEADER))
}

async fn read_body(request: Request, config: &ServerConfig) -> Result<Bytes> {
    // A declared length over the limit was already refused by the guard; this catches
    // chunked bodies that grow past it.
    axum::body::to_bytes(request.into_body(), config.max_body)
        .await
        .map_err(|err| HttpError::unreadable_body(&err, config))
}
