//! HTTP: the axum router over the hub, and serving it.
//!
//! `router` is separate from binding so tests can serve it on port 0. Only this module
//! knows status codes and wire formats; it turns every hub error into an answer that says
//! what to fix.

mod api;
mod error;
mod guard;
mod metrics;
mod publish;
mod query;
mod seed;
mod test_subscriber;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

pub use api::log_ndjson;
pub use test_subscriber::{TestState, TestSubscriber};

use crate::hub::Hub;
use error::{Dialect, HttpError};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Required as `Authorization: Bearer TOKEN` on every route when set.
    pub token: Option<String>,
    /// Host names answered besides localhost and IP literals.
    pub allowed_hosts: Vec<String>,
    /// Publisher headers passed on to every delivery (`--forward-header`), besides
    /// `Content-Type` and the trace context, which always are.
    pub forward_headers: Vec<axum::http::HeaderName>,
}

#[derive(Clone)]
struct AppState {
    hub: Hub,
    config: Arc<ServerConfig>,
}

/// Every route Herald serves, behind the host, token and size checks.
pub fn router(hub: Hub, config: ServerConfig) -> Router {
    let state = AppState {
        hub,
        config: Arc::new(config),
    };
    Router::new()
        .merge(seed::router())
        .merge(api::router())
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(metrics::healthz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

/// Go's `http.NotFound` body, so seed clients see the same 404; JSON under `/api`.
async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    let message = format!(
        "no route {} {path}; the routes are listed in /api/v1/openapi.json",
        request.method()
    );
    HttpError::new(StatusCode::NOT_FOUND, message)
        .with_seed_body("404 page not found\n")
        .render(Dialect::of(path))
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets the requests in
/// flight finish.
///
/// Like `axum::serve`, but with HTTP/1 half-close allowed: a client that sends its request
/// and then shuts down its sending side (as `nc -N` does) still gets its answer, as it did
/// from the Go design, instead of a closed connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, usually: wait for some to be released.
                    tracing::warn!("cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        stream.set_nodelay(true).ok();
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            });
        let stop = stop.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .half_close(true)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = served {
                tracing::debug!(%peer, "connection ended: {err}");
            }
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}
