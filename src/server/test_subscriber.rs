//! A subscriber built into the console, so a person sees a whole round trip (publish,
//! fan-out over HTTP, receipt) with no other service running.
//!
//! Starting it spawns, on the given runtime, a server on 127.0.0.1 that records every
//! request, and a loop that keeps its registration alive until it is stopped. It knows no
//! GUI: whoever shows what it received passes a [`Wake`] callback.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, RemovalReason};

/// Largest body it takes: it keeps what it receives, so not without end.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Received messages kept for display.
const KEEP: usize = 100;

/// Called on a runtime thread once the test subscriber has started (or failed to), and on
/// every request it receives.
pub(crate) type Wake = Arc<dyn Fn() + Send + Sync>;

/// One request the test subscriber received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) at: SystemTime,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Bytes,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TestState {
    #[default]
    Off,
    Starting,
    /// Registered with the hub under this address.
    On(String),
    Failed(String),
}

#[derive(Default)]
struct Inner {
    state: TestState,
    received: VecDeque<Received>,
    /// Stops the server and its keep-alive loop.
    stop: Option<CancellationToken>,
}

/// Cheap to clone; every clone drives the same subscriber.
#[derive(Clone, Default)]
pub struct TestSubscriber {
    inner: Arc<Mutex<Inner>>,
}

impl TestSubscriber {
    pub fn state(&self) -> TestState {
        self.inner.lock().state.clone()
    }

    /// The newest `limit` received, newest first.
    pub(crate) fn received(&self, limit: usize) -> Vec<Received> {
        let inner = self.inner.lock();
        inner.received.iter().rev().take(limit).cloned().collect()
    }

    pub fn received_count(&self) -> usize {
        self.inner.lock().received.len()
    }

    /// Starts a server on 127.0.0.1 and registers it with `hub`, refreshing its
    /// keep-alive well within the hub's TTL.
    pub(crate) fn start(&self, hub: &Hub, runtime: &Handle, wake: Wake) {
        let stop = CancellationToken::new();
        {
            let mut inner = self.inner.lock();
            if matches!(inner.state, TestState::Starting | TestState::On(_)) {
                return;
            }
            inner.state = TestState::Starting;
            inner.stop = Some(stop.clone());
        }
        let this = self.clone();
        let hub = hub.clone();
        runtime.spawn(async move {
            let state = match this.serve(&hub, wake.clone(), stop).await {
                Ok(address) => TestState::On(address),
                Err(error) => TestState::Failed(error),
            };
            this.inner.lock().state = state;
            wake();
        });
    }

    async fn serve(
        &self,
        hub: &Hub,
        wake: Wake,
        stop: CancellationToken,
    ) -> Result<String, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|err| format!("cannot listen on 127.0.0.1: {err}"))?;
        let address = listener
            .local_addr()
            .map_err(|err| err.to_string())?
            .to_string();
        let app = Router::new()
            .fallback(receive)
            .with_state((self.clone(), wake.clone()));
        let serving = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(serving.cancelled_owned())
                .await
                .ok();
        });
        if let Err(err) = hub.subscribe(&address) {
            stop.cancel();
            return Err(err.to_string());
        }
        let hub = hub.clone();
        let keep_alive = address.clone();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let every = (hub.ttl() / 3).max(Duration::from_millis(100));
                tokio::select! {
                    () = stop.cancelled() => {
                        hub.remove(&keep_alive, RemovalReason::Deregistered);
                        return;
                    }
                    () = tokio::time::sleep(every) => {
                        if let Err(err) = hub.subscribe(&keep_alive) {
                            // Say so, rather than look "on" while the hub has dropped it.
                            stop.cancel();
                            this.inner.lock().state =
                                TestState::Failed(format!("the hub refused its keep-alive: {err}"));
                            wake();
                            return;
                        }
                    }
                }
            }
        });
        Ok(address)
    }

    /// Deregisters and stops the server.
    pub(crate) fn stop(&self) {
        let mut inner = self.inner.lock();
        if let Some(stop) = inner.stop.take() {
            stop.cancel();
        }
        inner.state = TestState::Off;
    }

    fn record(&self, received: Received) {
        let mut inner = self.inner.lock();
        if inner.received.len() == KEEP {
            inner.received.pop_front();
        }
        inner.received.push_back(received);
    }
}

async fn receive(
    State((subscriber, wake)): State<(TestSubscriber, Wake)>,
    request: Request,
) -> StatusCode {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => {
            subscriber.record(Received {
                at: SystemTime::now(),
                content_type,
                body,
            });
            wake();
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}
