//! A running hub: the HTTP server, the delivery workers and the hub's own tasks, started
//! together and stopped together. The headless binary, the GUI and the tests all start it this way.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::Dispatcher;
use crate::hub::Hub;
use crate::server::{self, ServerConfig};

/// A hub of its own: in memory, or kept in a data directory.
fn standalone(config: &Config, launcher: Arc<dyn crate::hub::Launch>) -> Result<Hub, StartError> {
    Ok(
        match config.data_dir.as_deref().filter(|_| !config.in_memory) {
            Some(dir) => {
                let (store, restored) =
                    crate::store::open(dir, config.retain, config.log_capacity as usize)?;
                tracing::info!(
                    "keeping messages in {} ({} subscribers and {} messages restored)",
                    dir.display(),
                    restored.subscribers.len(),
                    restored.messages.len()
                );
                Hub::with_store(config.hub(), launcher, Arc::new(store), restored)
            }
            None => Hub::new(config.hub(), launcher),
        },
    )
}

/// An instance of the cluster at `url`: a hub that keeps nothing itself (the stream and
/// the bucket keep everything), attached to the cluster.
fn clustered(
    config: &Config,
    url: &str,
    launcher: Arc<dyn crate::hub::Launch>,
    runtime: &Handle,
) -> (Hub, Arc<crate::cluster::Cluster>) {
    // Its instance id is the cluster's, the same at every instance (a delivery made again
    // by another carries the `webhook-id` it had) and no other cluster's: the cluster
    // names the hub once it has joined (`ClusterPort::name`), as it is read from NATS.
    let hub = Hub::with_store(
        config.hub(),
        launcher,
        Arc::new(crate::hub::Memory),
        crate::hub::Restored::default(),
    );
    let cluster = crate::cluster::Cluster::start(
        &hub,
        crate::cluster::ClusterConfig {
            url: url.to_owned(),
            name: config
                .instance_name
                .clone()
                .unwrap_or_else(|| crate::cluster::default_name(config.bind)),
            delivery_timeout: config.delivery_timeout,
            log_capacity: config.log_capacity as usize,
            max_body: config.max_body,
            forward_headers: config.forwarded_headers(),
        },
        runtime,
    );
    (hub, cluster)
}

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
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
}

pub struct Service {
    hub: Hub,
    /// Bursts started from the console or the API.
    bursts: Arc<crate::workbench::burst::Bursts>,
    /// Test subscribers added from the console or the API.
    tests: Arc<crate::workbench::TestSubscribers>,
    /// Room for payload comparisons, the console's and the API's.
    diffs: Arc<crate::workbench::diff::Comparisons>,
    /// The runtime the hub's work runs on.
    runtime: Handle,
    dispatcher: Arc<Dispatcher>,
    config: ServerConfig,
    /// The HTTP server's own runtime, on a thread of its own: however many delivery tasks
    /// compete on the main runtime, accepting a publish never waits behind them.
    http: HttpThread,
    /// The HTTP server, once it listens.
    listening: Option<Listening>,
    /// This instance's membership, in cluster mode (`--cluster`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

struct Listening {
    local_addr: SocketAddr,
    /// The bearer token every request needs, if any.
    token: Option<String>,
    /// Stops this server: a child of the hub's stop signal, cancelled on its own when the
    /// service moves to another address.
    stop: CancellationToken,
    server: JoinHandle<io::Result<()>>,
}

impl Service {
    /// The hub with its workers and tasks, not yet listening. Must be called within a
    /// tokio runtime.
    pub fn new(config: &Config) -> Result<Self, StartError> {
        let runtime = Handle::current();
        let http = HttpThread::start().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let dispatcher = Arc::new(Dispatcher::new(config.delivery(), runtime.clone())?);
        let launcher: Arc<dyn crate::hub::Launch> = Arc::new(dispatcher.clone());
        let (hub, cluster) = match &config.cluster {
            Some(url) => {
                let (hub, cluster) = clustered(config, url, launcher, &runtime);
                (hub, Some(cluster))
            }
            None => (standalone(config, launcher)?, None),
        };
        let server = ServerConfig::from_config(config);
        Ok(Self {
            hub,
            bursts: Arc::default(),
            // Their ports have the hub's own timeouts and body limit.
            tests: Arc::new(crate::workbench::TestSubscribers::new(
                server.connections,
                server.max_body,
            )),
            diffs: Arc::default(),
            runtime: runtime.clone(),
            dispatcher,
            config: server,
            http,
            listening: None,
            cluster,
        })
    }

    /// Binds `config.bind` and starts serving. Must be called within a tokio runtime.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let mut service = Self::new(config)?;
        service.listen(config.bind).await?;
        Ok(service)
    }

    /// Starts serving on a listener the caller bound (tests bind port 0).
    pub fn start_on(listener: TcpListener, config: &Config) -> Result<Self, StartError> {
        let mut service = Self::new(config)?;
        service.listen_on(listener)?;
        Ok(service)
    }

    /// Binds `addr` and serves there (instead of wherever it served before).
    pub async fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, StartError> {
        let listener = bind(addr).await?;
        self.listen_on(listener)
    }

    /// Serves on `listener`, stopping the server that was listening before, if any.
    pub fn listen_on(&mut self, listener: TcpListener) -> Result<SocketAddr, StartError> {
        let io_error = |source| StartError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        };
        let local_addr = listener.local_addr().map_err(io_error)?;
        // Re-register the socket with the HTTP thread's runtime, which will poll it.
        let listener = {
            let std = listener.into_std().map_err(io_error)?;
            let _entered = self.http.handle.enter();
            TcpListener::from_std(std).map_err(io_error)?
        };
        if let Some(previous) = self.listening.take() {
            previous.stop.cancel();
        }
        let mut config = self.config.clone();
        // An empty token would let every request in (the flag refuses one; this is for
        // configs built in code).
        if config.token.as_deref().is_some_and(str::is_empty) {
            config.token = None;
        }
        if config.token.is_none() && !local_addr.ip().is_loopback() {
            // Reachable from other machines: never without a token.
            config.token = Some(generate_token());
        }
        self.hub.set_own_addr(Some(local_addr));
        if let Some(cluster) = &self.cluster {
            cluster.set_url(Some(format!("http://{local_addr}")));
        }
        let stop = self.hub.stopping().child_token();
        let router = server::router(
            self.hub.clone(),
            self.bursts.clone(),
            self.tests.clone(),
            self.diffs.clone(),
            self.runtime.clone(),
            config.clone(),
            self.cluster.clone(),
        );
        let server = self.http.handle.spawn(server::serve(
            listener,
            router,
            config.connections,
            stop.clone(),
        ));
        self.listening = Some(Listening {
            local_addr,
            token: config.token,
            stop,
            server,
        });
        Ok(local_addr)
    }

    /// This instance's membership, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn bursts(&self) -> &Arc<crate::workbench::burst::Bursts> {
        &self.bursts
    }

    pub fn test_subscribers(&self) -> &Arc<crate::workbench::TestSubscribers> {
        &self.tests
    }

    /// Room for payload comparisons, shared by the console and the API.
    pub fn comparisons(&self) -> &Arc<crate::workbench::diff::Comparisons> {
        &self.diffs
    }

    /// Sending: its live settings (the delivery timeout).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Where it listens, once it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listening.as_ref().map(|l| l.local_addr)
    }

    /// The base URL clients use, e.g. `http://127.0.0.1:3000`, once it listens.
    pub fn url(&self) -> Option<String> {
        self.local_addr().map(|addr| format!("http://{addr}"))
    }

    /// The bearer token requests need, if any.
    pub fn token(&self) -> Option<&str> {
        self.listening.as_ref().and_then(|l| l.token.as_deref())
    }

    /// Stops accepting requests and messages at once, lets queued deliveries drain for up
    /// to 5 s, abandons (and records) the rest, and gives requests in flight a moment.
    /// Bounded in time even with hanging subscribers and clients.
    pub async fn shutdown(self) {
        // The one stop signal: intake, the listener, the reaper and event streams end.
        self.hub.stop_intake();
        if tokio::time::timeout(DRAIN_GRACE, self.hub.drained())
            .await
            .is_err()
        {
            tracing::warn!("deliveries still pending after {DRAIN_GRACE:?}; abandoning them");
        }
        self.hub.close();
        // The cancelled workers record what they abandoned, then let their jobs go.
        tokio::time::timeout(SERVER_GRACE, self.hub.drained())
            .await
            .ok();
        if let Some(cluster) = &self.cluster {
            cluster.finish().await;
        }
        // Whatever the workers recorded last is kept before the process goes.
        if let Err(err) = self.hub.flush_store().await {
            tracing::warn!("the store did not keep the last changes: {err}");
        }
        if let Some(listening) = self.listening {
            match tokio::time::timeout(SERVER_GRACE, listening.server).await {
                Ok(Ok(Err(err))) => tracing::warn!("HTTP server stopped with an error: {err}"),
                Ok(_) => {}
                Err(_) => tracing::warn!(
                    "requests still in flight after {SERVER_GRACE:?}; not waiting for them"
                ),
            }
        }
    }
}

/// A current-thread runtime on a thread of its own, for the HTTP server.
struct HttpThread {
    handle: Handle,
    /// Cancelled when the service goes: the thread returns and its runtime, with any
    /// connection still open, is dropped.
    stop: CancellationToken,
}

impl HttpThread {
    fn start() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("herald-http".to_owned())
            .spawn(move || runtime.block_on(stopped.cancelled()))?;
        Ok(Self { handle, stop })
    }
}

impl Drop for HttpThread {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Binds a listening socket, with an error that says what to do about a busy port.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// 32 random bytes as hex: a bearer token nobody can guess.
fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system has no random numbers to give");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The runtime for deliveries, the fan-out and the reaper, in both modes.
pub fn background_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herald-rt")
        .on_thread_start(mark_as_batch_work)
        .build()
        .context("cannot start the async runtime")
}

/// Tells Linux that a delivery thread is throughput work (`SCHED_BATCH`): it keeps its
/// full share of the CPU, but does not preempt on waking, so the HTTP thread and the
/// window, which people wait on, get the CPU first. With 10,000 subscribers (three runs
/// of 40 publishes each way), publish accepted p99 went from 4.5-11.2 ms to 3.4-4.9 ms,
/// p50 stayed about 0.5 ms, and deliveries were no slower. (A higher nice value was
/// tried instead: it took CPU away from delivery, and more was dropped under overload.)
fn mark_as_batch_work() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` only; 0 names the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            tracing::debug!("could not mark a delivery thread as batch work");
        }
    }
}

/// Lifts the soft limit on open files to the hard one: every subscriber may hold a
/// connection, and 1,024 (a common default) is too few for a hub of thousands.
pub fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    tracing::debug!("could not raise the open-file limit");
                }
            }
        }
    }
}
