//! HTTP: the axum router over the hub, and serving it.
//!
//! `router` is separate from binding so tests can serve it on port 0. Only this module
//! knows status codes and wire formats; it turns every hub error into an answer that says
//! what to fix.

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body: 1024 * 1024,
        }
    }
}

#[derive(Clone)]
struct AppState {
    hub: Hub,
    config: Arc<ServerConfig>,
}

/// Every route Herald serves.
pub fn router(hub: Hub, config: ServerConfig) -> Router {
    Router::new()
        .merge(seed::router())
        .fallback(not_found)
        .with_state(AppState {
            hub,
            config: Arc::new(config),
        })
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
