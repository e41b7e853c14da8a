//! Fan-out: one worker task per subscriber drains its bounded queue in order and posts
//! each message to the subscriber's target through one shared HTTP client.
//!
//! The client is shared so that connections to a subscriber are pooled and reused; each
//! worker has at most one request in flight, so a hung subscriber holds up only itself.

mod attempt;
mod backlog;
mod resolver;
pub mod signature;
mod worker;

pub(crate) use attempt::root_cause;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::hub::{Hub, Launch, LiveDuration, Mailbox, Secret, TargetPolicy, Task};

/// What sending needs to know. Its `Default` is the command line's (`crate::config`).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Longest wait for a TCP (and TLS) connection to a subscriber.
    pub connect_timeout: Duration,
    /// Longest wait for a whole delivery, connection to response body.
    pub timeout: Duration,
    /// Waits before each retry of a failed attempt (±20% jitter); empty: no retries.
    pub retry_schedule: Vec<Duration>,
    /// A `Retry-After` longer than this is cut to it.
    pub max_retry_after: Duration,
    /// Failed messages in a row after which a subscriber is suspended.
    pub suspend_after: u32,
    /// Deliveries in flight at once to one origin (scheme, host, port). HTTP/1.1 needs a
    /// connection per request in flight, so without this a publish to 10,000 subscribers
    /// of one service would open 10,000 sockets, each with its buffers.
    pub max_connections_per_host: usize,
    /// First and longest wait between probes of a suspended subscriber (doubling).
    pub probe_backoff: (Duration, Duration),
    /// Signs every delivery, unless the subscriber registered a secret of its own.
    pub signing_secret: Option<Secret>,
    /// Checked again on every address a host name resolves to.
    pub policy: TargetPolicy,
}

/// Starts delivery workers on a tokio runtime; the hub calls it for each new subscriber.
pub struct Dispatcher {
    client: reqwest::Client,
    config: Arc<DeliveryConfig>,
    /// The whole-delivery timeout, read by workers on every attempt so the console can
    /// change it live (`config.timeout` is only where it starts).
    timeout: Arc<LiveDuration>,
    /// Workers are spawned through a handle, not `tokio::spawn`, because registration may
    /// come from the GUI thread, which is outside the runtime.
    runtime: Handle,
    /// One semaphore per origin with `max_connections_per_host` permits, shared by the
    /// workers of every subscriber at that origin; gone when the last of them is.
    origins: Mutex<Origins>,
}

#[derive(Default)]
struct Origins {
    limits: HashMap<String, Weak<Semaphore>>,
    /// Dead entries are swept when the map reaches this size, which then doubles: a
    /// sweep per new origin would cost 10,000 registrations at 10,000 origins 10^8 checks.
    sweep_at: usize,
}

impl Dispatcher {
    pub(crate) fn new(config: DeliveryConfig, runtime: Handle) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            // A redirect could send a delivery anywhere; it is recorded, never followed.
            .redirect(reqwest::redirect::Policy::none())
            // Subscribers are local services: a desktop's HTTP_PROXY must not intercept them.
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(config.max_connections_per_host)
            .dns_resolver(resolver::PolicyResolver {
                policy: config.policy.clone(),
            })
            .build()?;
        Ok(Self {
            client,
            timeout: Arc::new(LiveDuration::new(config.timeout)),
            config: Arc::new(config),
            runtime,
            origins: Mutex::default(),
        })
    }

    /// Changes the whole-delivery timeout for every attempt from now on.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout.set(timeout);
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.get()
    }

    /// The connection limit shared by every subscriber at `target`'s origin.
    fn origin_limit(&self, target: &url::Url) -> Arc<Semaphore> {
        let origin = target.origin().ascii_serialization();
        let mut origins = self.origins.lock();
        if let Some(limit) = origins.limits.get(&origin).and_then(Weak::upgrade) {
            return limit;
        }
        if origins.limits.len() >= origins.sweep_at {
            origins.limits.retain(|_, limit| limit.strong_count() > 0);
            origins.sweep_at = (origins.limits.len() * 2).max(64);
        }
        let limit = Arc::new(Semaphore::new(self.config.max_connections_per_host.max(1)));
        origins.limits.insert(origin, Arc::downgrade(&limit));
        limit
    }
}

impl Launch for Arc<Dispatcher> {
    fn launch(&self, hub: Hub, mailbox: Mailbox) {
        let client = self.client.clone();
        let config = self.config.clone();
        let timeout = self.timeout.clone();
        let origin_limit = self.origin_limit(&mailbox.subscriber.target);
        let sender = Arc::new(attempt::Sender::new(
            hub,
            client,
            config,
            timeout,
            origin_limit,
        ));
        let new_worker = move || worker::Worker::new(sender.clone());
        self.runtime.spawn(worker::supervise(mailbox, new_worker));
    }

    fn spawn(&self, name: &'static str, task: Task) {
        tracing::debug!("starting the hub's {name} task");
        self.runtime.spawn(task);
    }
}
