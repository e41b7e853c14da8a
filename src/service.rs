//! A running hub: the HTTP server, the delivery workers and the reaper, started together
//! and stopped together. The headless binary, the GUI and the tests all start it this way.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::Dispatcher;
use crate::hub::{Hub, reap_expired};
use crate::server;

/// How long in-flight HTTP requests get to finish once shutdown starts.
const SERVER_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum StartError {
    #[error(
        "cannot listen on {addr}: {source}; is another Herald running? Choose another address with --bind"
    )]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot build the HTTP client for deliveries: {0}")]
    Client(#[from] reqwest::Error),
}

pub struct Service {
    hub: Hub,
    local_addr: SocketAddr,
    /// Cancelled once, by `shutdown`: the server stops accepting and the reaper stops.
    stop: CancellationToken,
    server: JoinHandle<io::Result<()>>,
    reaper: JoinHandle<()>,
}

impl Service {
    /// Binds `config.bind` and starts serving. Must be called within a tokio runtime.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        Self::start_on(listener, config)
    }

    /// Starts serving on a listener the caller bound (tests bind port 0).
    pub fn start_on(listener: TcpListener, config: &Config) -> Result<Self, StartError> {
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let dispatcher = Dispatcher::new(config.delivery(), Handle::current())?;
        let hub = Hub::new(config.hub(), Arc::new(dispatcher));
        let stop = CancellationToken::new();
        let router = server::router(hub.clone(), config.server());
        let server = tokio::spawn(server::serve(listener, router, stop.clone()));
        let reaper = tokio::spawn(reap_expired(hub.clone(), config.reap_every, stop.clone()));
        Ok(Self {
            hub,
            local_addr,
            stop,
            server,
            reaper,
        })
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients use, e.g. `http://127.0.0.1:3000`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting requests, abandons (and records) every pending delivery, and waits
    /// briefly for requests in flight. Bounded in time even with hanging clients.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.hub.close();
        match tokio::time::timeout(SERVER_GRACE, self.server).await {
            Ok(Ok(Err(err))) => tracing::warn!("HTTP server stopped with an error: {err}"),
            Ok(_) => {}
            Err(_) => tracing::warn!(
                "requests still in flight after {SERVER_GRACE:?}; not waiting for them"
            ),
        }
        self.reaper.abort();
    }
}
