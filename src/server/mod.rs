//! HTTP: the axum router over the hub, and serving it.
//!
//! `router` is separate from binding so tests can serve it on port 0. Only this module
//! knows status codes and wire formats; it turns every hub error into an answer that says
//! what to fix.

mod api;
mod connections;
mod error;
mod guard;
mod metrics;
mod publish;
mod query;
mod seed;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

pub use connections::ConnectionLimits;

use crate::config::Config;
use crate::hub::Hub;
use crate::wire::Origin;
use crate::workbench::TestSubscribers;
use connections::{Admitted, Busy, Phase, Registry, Watched};
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
            // Named twice, a header would be forwarded twice.
            forward_headers: config
                .forward_headers
                .iter()
                .enumerate()
                .filter(|(i, name)| !config.forward_headers[..*i].contains(name))
                .map(|(_, name)| name.clone())
                .collect(),
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
/// flight finish.
///
/// Like `axum::serve`, but with HTTP/1 half-close allowed: a client that sends its request
/// and then shuts down its sending side (as `nc -N` does) still gets its answer, as it did
/// from the Go design, instead of a closed connection. And no client can hoard
/// connections: slow heads, stalled bodies and idle keep-alives time out, and at
/// `--max-connections` the connection that has waited longest makes room (see
/// [`connections`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> io::Result<()> {
    let registry = Registry::new(limits);
    // Bounds the sockets held open only to be told there is no room.
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
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
        let Some(admitted) = registry.admit(&stop) else {
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                connections.spawn(async move {
                    refuse_for_lack_of_room(stream, limits.max_connections).await;
                    drop(permit);
                });
            }
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            admitted,
            limits.header_timeout,
        ));
    }
    // Closed before the requests in flight finish, so that a stopping hub refuses new
    // connections at once instead of leaving them in the backlog until it exits.
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Most connections answered 503 at once; beyond it a newcomer is closed unanswered.
const MAX_REFUSALS: usize = 64;
/// Longest a refused connection is held to deliver its 503.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Serves one connection until it ends, times out, or is asked to close.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    admitted: Admitted,
    body_timeout: Duration,
) {
    let handle = admitted.handle();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = handle.busy();
        let mut request = request.map(|body| Body::new(TimeoutBody::new(body_timeout, body)));
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = router.clone().oneshot(request);
        async move {
            let Ok(response) = response.await;
            Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let io = TokioIo::new(Watched::new(stream, admitted.handle()));
    let connection = http1::Builder::new()
        .half_close(true)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let why = loop {
        let deadline = admitted.deadline();
        if let Some((at, phase)) = deadline
            && at <= Instant::now()
        {
            break match phase {
                Phase::Head => "its request's head took longer than --header-timeout",
                _ => "it was idle for --idle-timeout",
            };
        }
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%peer, "connection ended: {err}");
                }
                return;
            }
            () = admitted.signal.close.cancelled() => break "asked to close",
            () = admitted.signal.changed.notified() => {}
            () = tokio::time::sleep_until(deadline.map_or_else(Instant::now, |(at, _)| at)),
                if deadline.is_some() => {}
        }
    };
    tracing::debug!(%peer, "closing a connection: {why}");
    // A half-read head has nothing to finish (and hyper would wait for the rest of a
    // first request's): drop it. Otherwise let hyper close it, which it does at once when
    // idle and after the response when busy.
    if admitted.phase() == Phase::Head {
        return;
    }
    connection.as_mut().graceful_shutdown();
    if let Err(err) = connection.await {
        tracing::debug!(%peer, "connection ended: {err}");
    }
}

/// Answers a connection there is no room for with a plain 503, and closes it.
async fn refuse_for_lack_of_room(mut stream: TcpStream, max_connections: usize) {
    let body = format!(
        "Error: all {max_connections} connections this hub allows are busy; try again \
         shortly, or start Herald with a larger --max-connections\n"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answered = tokio::time::timeout(REFUSAL_GRACE, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sends until it closes: closing with its request unread
        // would reset the connection, and the client could lose the answer.
        let mut sink = [0; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
    if let Ok(Err(err)) = answered {
        tracing::debug!("could not answer a connection there was no room for: {err}");
    }
}

/// A response body that keeps its connection busy until it is finished or dropped: an
/// open event stream is never idle.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
