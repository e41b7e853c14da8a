//! The console's link to the running hub.
//!
//! The GUI thread only ever calls the hub's non-blocking methods or hands work to the
//! tokio runtime through a `Handle`; results come back through shared slots that the
//! next frame reads. Every completion asks egui for a repaint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::broadcast::error::RecvError;

use crate::config::Config;
use crate::hub::Hub;
use crate::service::{Service, StartError, bind};

/// Frames a busy hub may cause per second; more would only burn CPU.
const MAX_EVENT_REPAINTS: Duration = Duration::from_millis(33);

/// Where the HTTP server stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenState {
    Starting(SocketAddr),
    Listening { url: String, token: Option<String> },
    Failed { addr: SocketAddr, error: String },
}

pub struct Backend {
    hub: Hub,
    bursts: Arc<crate::workbench::burst::Bursts>,
    tests: Arc<crate::workbench::TestSubscribers>,
    comparisons: Arc<crate::workbench::diff::Comparisons>,
    runtime: Handle,
    /// Taken out when the window closes, to be shut down.
    service: Arc<Mutex<Option<Service>>>,
    listen: Arc<Mutex<ListenState>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Backend {
    /// Starts the hub (workers, reaper) on `runtime`; call [`Backend::listen`] to serve.
    pub fn start(config: &Config, runtime: Handle) -> Result<Self, StartError> {
        let service = {
            let _entered = runtime.enter();
            Service::new(config)?
        };
        Ok(Self {
            hub: service.hub().clone(),
            bursts: service.bursts().clone(),
            tests: service.test_subscribers().clone(),
            comparisons: service.comparisons().clone(),
            cluster: service.cluster().cloned(),
            runtime,
            service: Arc::new(Mutex::new(Some(service))),
            listen: Arc::new(Mutex::new(ListenState::Starting(config.bind))),
        })
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// This instance's membership, in cluster mode.
    pub(crate) fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// The test subscribers the console and the API add.
    pub fn test_subscribers(&self) -> &Arc<crate::workbench::TestSubscribers> {
        &self.tests
    }

    /// The bursts the console and the API start.
    pub(crate) fn bursts(&self) -> &Arc<crate::workbench::burst::Bursts> {
        &self.bursts
    }

    /// Room for payload comparisons, shared with the API.
    pub(crate) fn comparisons(&self) -> &crate::workbench::diff::Comparisons {
        &self.comparisons
    }

    pub(crate) fn runtime(&self) -> &Handle {
        &self.runtime
    }

    pub(crate) fn listen_state(&self) -> ListenState {
        self.listen.lock().clone()
    }

    /// Binds `addr` in the background and serves there; the outcome shows up in
    /// [`Backend::listen_state`].
    pub fn listen(&self, addr: SocketAddr, ctx: &egui::Context) {
        *self.listen.lock() = ListenState::Starting(addr);
        let service = self.service.clone();
        let listen = self.listen.clone();
        let ctx = ctx.clone();
        self.runtime.spawn(async move {
            let state = match bind(addr).await {
                Ok(listener) => match service.lock().as_mut().map(|s| {
                    s.listen_on(listener)?;
                    Ok::<_, StartError>((s.url(), s.token().map(str::to_owned)))
                }) {
                    Some(Ok((Some(url), token))) => ListenState::Listening { url, token },
                    Some(Err(err)) => ListenState::Failed {
                        addr,
                        error: err.to_string(),
                    },
                    Some(Ok((None, _))) | None => ListenState::Failed {
                        addr,
                        error: "the hub is shutting down".to_owned(),
                    },
                },
                Err(err) => {
                    tracing::warn!("{err}");
                    ListenState::Failed {
                        addr,
                        error: err.to_string(),
                    }
                }
            };
            if let ListenState::Listening { url, .. } = &state {
                tracing::info!("Herald listening on {url}");
            }
            *listen.lock() = state;
            ctx.request_repaint();
        });
    }

    /// Changes the whole-delivery timeout from the next attempt on.
    pub(crate) fn set_delivery_timeout(&self, timeout: Duration) {
        if let Some(service) = self.service.lock().as_ref() {
            service.dispatcher().set_timeout(timeout);
        }
    }

    /// Repaints the window when the hub changes, at most ~30 times a second.
    pub(crate) fn repaint_on_hub_events(&self, ctx: &egui::Context) {
        let mut events = self.hub.events();
        let stopping = self.hub.stopping();
        let ctx = ctx.clone();
        self.runtime.spawn(async move {
            loop {
                let received = tokio::select! {
                    () = stopping.cancelled() => return,
                    received = events.recv() => received,
                };
                match received {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        ctx.request_repaint_after(MAX_EVENT_REPAINTS)
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// The service, for shutting it down once the window is gone.
    pub(crate) fn take_service(&self) -> Option<Service> {
        self.service.lock().take()
    }
}
