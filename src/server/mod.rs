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

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::edge::ConnectionLimits;

use crate::config::Config;
use crate::edge::{AtStop, Edge};
use crate::hub::Hub;
use crate::wire::Origin;
use crate::workbench::TestSubscribers;
use error::{Dialect, HttpError};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Required as `Authorization: Bearer TOKEN` on every route when set.
    pub token: Option<String>,
    /// Host names answered besides localhost and IP literals.
    pub allowed_hosts: Vec<String>,
    /// Web pages at these origins may send requests, besides the hub's own.
    pub allowed_origins: Vec<Origin>,
    /// Timeouts and the cap on inbound connections.
    pub connections: ConnectionLimits,
    /// Publisher headers passed on to every delivery (`--forward-header`), besides
    /// `Content-Type` and the trace context, which always are.
    pub forward_headers: Vec<axum::http::HeaderName>,
}

impl ServerConfig {
    /// The server's part of the command line.
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_body: config.max_body,
            token: config.token.clone(),
            allowed_hosts: config.allow_hosts.clone(),
            allowed_origins: config.allow_origins.clone(),
            connections: ConnectionLimits {
                header_timeout: config.header_timeout,
                idle_timeout: config.idle_timeout,
                max_connections: config.max_connections as usize,
            },
            forward_headers: config.forwarded_headers(),
        }
    }
}

// The default is the command line's, written once in its flags.
impl Default for ServerConfig {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

#[derive(Clone)]
struct AppState {
    hub: Hub,
    bursts: Arc<crate::workbench::burst::Bursts>,
    tests: Arc<TestSubscribers>,
    /// Room for payload comparisons, shared with the console.
    diffs: Arc<crate::workbench::diff::Comparisons>,
    /// The runtime the deliveries run on: bursts and test subscribers started over HTTP
    /// run there, not on the server's own thread.
    runtime: tokio::runtime::Handle,
    config: Arc<ServerConfig>,
    /// This instance's cluster, in cluster mode.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Every route Herald serves, behind the host, token and size checks.
pub fn router(
    hub: Hub,
    bursts: Arc<crate::workbench::burst::Bursts>,
    tests: Arc<TestSubscribers>,
    diffs: Arc<crate::workbench::diff::Comparisons>,
    runtime: tokio::runtime::Handle,
    config: ServerConfig,
    cluster: Option<Arc<crate::cluster::Cluster>>,
) -> Router {
    let max_body = config.max_body;
    let state = AppState {
        hub,
        bursts,
        tests,
        diffs,
        runtime,
        config: Arc::new(config),
        cluster,
    };
    Router::new()
        .merge(seed::router())
        .merge(api::router())
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(metrics::healthz))
        .fallback(not_found)
        // axum's extractors (the JSON routes') would otherwise allow 2 MB.
        .layer(DefaultBodyLimit::max(max_body))
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
/// flight finish: the hub's edge (see [`crate::edge`]), with `--header-timeout`,
/// `--idle-timeout` and `--max-connections`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> io::Result<()> {
    let max_connections = limits.max_connections;
    let edge = Edge {
        limits,
        refusal: format!(
            "Error: all {max_connections} connections this hub allows are busy; try again \
             shortly, or start Herald with a larger --max-connections\n"
        )
        .into(),
        at_stop: AtStop::Finish,
    };
    crate::edge::serve(listener, router, edge, stop).await
}
