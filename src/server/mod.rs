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
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::log_ndjson;

use crate::hub::{Hub, RegisterError};
use error::HttpError;

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
    if path.starts_with("/api/") {
        let message = format!(
            "no route {} {path}; the routes are listed in /api/v1/openapi.json",
            request.method()
        );
        return HttpError::new(StatusCode::NOT_FOUND, message).render(path);
    }
    seed::text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// The status and message for a refused registration, on any route.
fn register_error(err: RegisterError) -> HttpError {
    let status = match err {
        RegisterError::Address(_) | RegisterError::Target(_) => StatusCode::BAD_REQUEST,
        RegisterError::Full { .. } | RegisterError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    HttpError::new(status, err.to_string())
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
