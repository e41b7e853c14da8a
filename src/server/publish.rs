//! Accepting a published message, the same way on every route that publishes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use bytes::Bytes;

use super::error::{HttpError, Result};
use super::{AppState, ServerConfig};
use crate::hub::{Draft, Published, Source};
use crate::wire::{TRACEPARENT_HEADER, TRACESTATE_HEADER, TraceContext};

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
    let headers = forwarded(request.headers(), &state.config.forward_headers);
    let trace = trace(request.headers());
    let body = read_body(request, &state.config).await?;
    let draft = Draft {
        body,
        content_type,
        headers,
        trace,
    };
    // Waits, rather than refusing, while the fan-out is a full backlog behind: a
    // publisher that outruns it is slowed down, and nothing it was told was accepted is lost.
    Ok(state
        .hub
        .publish_when_ready(draft, Source::Http(peer))
        .await?)
}

/// Every value of each header in `names`, in order.
fn forwarded(headers: &HeaderMap, names: &[HeaderName]) -> Vec<(String, Bytes)> {
    names
        .iter()
        .flat_map(|name| {
            headers.get_all(name).iter().map(|value| {
                let value = Bytes::copy_from_slice(value.as_bytes());
                (name.as_str().to_owned(), value)
            })
        })
        .collect()
}

/// The publisher's trace context: `None` (a new trace) without exactly one valid
/// `traceparent`. `tracestate` fields are joined as one, and dropped if not plain text;
/// a bad one does not spoil the `traceparent`.
fn trace(headers: &HeaderMap) -> Option<TraceContext> {
    let mut parents = headers.get_all(TRACEPARENT_HEADER).iter();
    let (Some(parent), None) = (parents.next(), parents.next()) else {
        return None;
    };
    let mut trace = TraceContext::parse(parent.to_str().ok()?)?;
    let fields: Option<Vec<&str>> = headers
        .get_all(TRACESTATE_HEADER)
        .iter()
        .map(|v| v.to_str().ok())
        .collect();
    trace.state = fields
        .map(|fields| fields.join(","))
        .filter(|state| !state.trim().is_empty());
    Some(trace)
}

async fn read_body(request: Request, config: &ServerConfig) -> Result<Bytes> {
    // A declared length over the limit was already refused by the guard; this catches
    // chunked bodies that grow past it.
    axum::body::to_bytes(request.into_body(), config.max_body)
        .await
        .map_err(|err| HttpError::unreadable_body(&err, config))
}
