//! The edge of every listener Herald serves HTTP on: the hub's own (`server`) and each
//! test subscriber's (`workbench`). It knows no routes: it serves whatever `Router` it is
//! given, so that every port Herald opens has the same bounds.
//!
//! [`serve`] is `axum::serve` with what it lacks: HTTP/1 half-close allowed (a client that
//! shuts down its sending side, as `nc -N` does, still gets its answer), a request body
//! that stalls for the header timeout ends in an error (tower-http's `TimeoutBody`), and
//! no client can hoard connections: slow heads and idle keep-alives time out, and at the
//! cap the connection that has waited longest makes room (`connections.rs`). When it stops
//! the listener is closed at once; what happens to the connections still open is the
//! caller's choice ([`AtStop`]).

mod connections;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
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

use connections::{Admitted, Busy, Phase, Registry, Watched};

/// How one listener guards its edge.
#[derive(Debug, Clone)]
pub struct Edge {
    pub limits: ConnectionLimits,
    /// The body of the 503 a newcomer gets when every connection allowed is busy: which
    /// limit it met and what to do about it.
    pub refusal: Arc<str>,
    pub at_stop: AtStop,
}

/// What happens to the connections still open when a listener stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtStop {
    /// Idle ones close at once; requests in flight finish and their answers are written.
    Finish,
    /// Every one is dropped at once, whatever it is doing: nobody waits for its answers.
    Abort,
}

/// Serves `router` on `listener` until `stop` is cancelled, then closes the listener and
/// ends the connections still open as `edge.at_stop` says.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    edge: Edge,
    stop: CancellationToken,
) -> io::Result<()> {
    let limits = edge.limits;
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
                let refusal = edge.refusal.clone();
                connections.spawn(async move {
                    refuse_for_lack_of_room(stream, &refusal).await;
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
    // Closed before the connections end, so that a stopping listener refuses new ones at
    // once instead of leaving them in the backlog.
    drop(listener);
    match edge.at_stop {
        AtStop::Finish => while connections.join_next().await.is_some() {},
        // Dropped, not waited for: a slow reader would otherwise hold its socket (and the
        // sender's) for as long as it takes to read.
        AtStop::Abort => connections.shutdown().await,
    }
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
                Phase::Head => "its request's head took longer than the header timeout",
                _ => "it was idle for the idle timeout",
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

/// Answers a connection there is no room for with a plain 503 saying `body`, and closes
/// it.
async fn refuse_for_lack_of_room(mut stream: TcpStream, body: &str) {
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
