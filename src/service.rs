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

/// How long queued deliveries get to drain once shutdown starts; then they are abandoned
/// (and recorded as such).
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long in-flight HTTP requests then get to finish.
const SERVER_GRACE: Duration = Duration::from_millis(500);

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
    /// The bearer token every request needs, if any.
    token: Option<String>,
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
        let mut hub_config = config.hub();
        hub_config.policy.own_addr = Some(local_addr);
        let mut delivery = config.delivery();
        delivery.policy = hub_config.policy.clone();
        let dispatcher = Dispatcher::new(delivery, Handle::current())?;
        let hub = Hub::new(hub_config, Arc::new(dispatcher));
        let mut server_config = config.server();
        if server_config.token.is_none() && !local_addr.ip().is_loopback() {
            // Reachable from other machines: never without a token.
            server_config.token = Some(generate_token());
        }
        let token = server_config.token.clone();
        let stop = CancellationToken::new();
        let router = server::router(hub.clone(), server_config);
        let server = tokio::spawn(server::serve(listener, router, stop.clone()));
        let reaper = tokio::spawn(reap_expired(hub.clone(), config.reap_every, stop.clone()));
        Ok(Self {
            hub,
            local_addr,
            token,
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

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Stops accepting requests and messages at once, lets queued deliveries drain for up
    /// to 5 s, abandons (and records) the rest, and gives requests in flight a moment.
    /// Bounded in time even with hanging subscribers and clients.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.hub.stop_intake();
        let drained = tokio::time::timeout(DRAIN_GRACE, async {
            while !self.hub.is_drained() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("deliveries still pending after {DRAIN_GRACE:?}; abandoning them");
        }
        self.hub.close();
        // Give the cancelled workers a moment to record what they abandoned.
        tokio::time::timeout(SERVER_GRACE, async {
            while !self.hub.is_drained() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .ok();
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

/// 32 random bytes as hex: a bearer token nobody can guess.
fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system has no random numbers to give");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
