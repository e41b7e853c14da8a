//! Accepting a published message, the same way on every route that publishes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{StatusCode, header};
use bytes::Bytes;

use super::error::{HttpError, Result};
use super::{AppState, ServerConfig};
use crate::hub::{Published, Source};

/// Reads the whole body and publishes it with the request's content type. A body that is
/// too large or did not arrive whole is never published. (The guard has already refused
/// the hub's own deliveries, which must not be published again.)
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
    let body = read_body(request, &state.config).await?;
    // Waits, rather than refusing, while the fan-out is a full backlog behind: a
    // publisher that outruns it is slowed down, and nothing it was told was accepted is lost.
    Ok(state
        .hub
        .publish_when_ready(body, content_type, Source::Http(peer))
        .await?)
}

async fn read_body(request: Request, config: &ServerConfig) -> Result<Bytes> {
    // A declared length over the limit was already refused by the guard; this catches
    // chunked bodies that grow past it.
    axum::body::to_bytes(request.into_body(), config.max_body)
        .await
        .map_err(|err| HttpError::unreadable_body(&err, config))
}
