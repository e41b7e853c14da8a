//! HTTP: the axum router over the hub, and serving it.
//!
//! `router` is separate from binding so tests can serve it on port 0. Only this module
//! knows status codes and wire formats; it turns every hub error into an answer that says
//! what to fix.

mod error;
mod guard;
mod query;
mod seed;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Required as `Authorization: Bearer TOKEN` on every route when set.
    pub token: Option<String>,
    /// Host names answered besides localhost and IP literals.
    pub allowed_hosts: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body: 1024 * 1024,
            token: None,
            allowed_hosts: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct AppState {
    hub: Hub,
    config: Arc<ServerConfig>,
    /// The token in force: the configured one, or one generated for a non-loopback bind.
    token: Option<Arc<str>>,
}

/// Every route Herald serves, behind the host, token and size checks.
pub fn router(hub: Hub, config: ServerConfig) -> Router {
    let state = AppState {
        hub,
        token: config.token.as_deref().map(Arc::from),
        config: Arc::new(config),
    };
    Router::new()
        .merge(seed::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

/// Go's `http.NotFound` body, so seed clients see the same 404.
async fn not_found() -> Response {
    seed::text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// Serves `router` on `listener` until `stop` is cancelled, then finishes the requests in
/// flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> io::Result<()> {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
