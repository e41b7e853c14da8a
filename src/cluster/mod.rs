//! Cluster mode (`--cluster nats://HOST:PORT`): instances of Herald sharing one NATS
//! JetStream, so that a team's hub survives the loss of a process and spreads delivery.
//!
//! - **Messages** go into the stream `HERALD` (subject `herald.<topic>`, or `herald`):
//!   a publish at any instance is answered once JetStream has stored it, and every
//!   instance reads the stream into its own log ([`ClusterPort::admit`]). A NATS client that
//!   publishes on those subjects is fanned out like anyone else, by an HTTP publish's
//!   rules: only Herald's own messages carry a seal, and only a sealed message's
//!   `Herald-*` headers are believed (`bridge`).
//! - **Subscribers** live in the key-value bucket `herald_subscribers`: what the hub
//!   changes here goes there (the relay's `subscriber_changed`), and every instance
//!   applies what the bucket holds to its own registry, as made elsewhere (never told
//!   back), so a keep-alive anywhere refreshes a
//!   subscriber everywhere, under one TTL.
//! - **Each delivery is made once**: every subscriber has a durable pull consumer on the
//!   stream, and every instance pulls from it. JetStream hands each message to one of
//!   them and, with one unacknowledged at a time, only after the last was acknowledged,
//!   so a subscriber gets its messages in order. An instance acknowledges once its
//!   worker reached an outcome; one that dies leaves the message unacknowledged, and
//!   JetStream hands it to another after `ack_wait` (the delivery timeout and a little).
//! - **Outcomes** go into the stream `HERALD_OUTCOMES`, read back by every instance, so
//!   every console and API shows the same log.
//! - **Instances** announce themselves in the bucket `herald_instances` every few
//!   seconds.
//! - **The cluster's identity** (its instance id, the `webhook-id` namespace every
//!   instance delivers under, and the key that seals Herald's messages) is made by the
//!   first instance to join, in the bucket `herald_cluster` (`identity`).
//!
//! The hub knows none of this: the cluster attaches with a [`Relay`](crate::hub::Relay)
//! (publishes, and the subscriber changes made here) and works the hub through the
//! [`ClusterPort`] it gets back, the one object with what it needs.
//!
//! This module holds [`Cluster`], its configuration and views, the state its tasks share,
//! and `run`, which connects and starts the tasks. The rest, a file each:
//! - `connect`: the connection, the streams and buckets (made if missing), and
//!   `retrying`, which runs a task again whenever it fails.
//! - `relayer`: `Relayer`, the hub's `Relay`: a publish is answered on JetStream's ack,
//!   a subscriber change is queued for the bucket.
//! - `feed`: the message stream read into this instance's log.
//! - `outcomes`: the others' outcomes read into the log, and this instance's told.
//! - `subscribers`: the subscribers' bucket watched and applied to this hub.
//! - `instances`: this instance's announcements, and the others' listing.
//! - `deliver`: the supervisor and the delivery loops, one per subscriber, that pull
//!   from its consumer, deliver here and acknowledge.
//! - `sharing`: the queue of subscriber changes made here, and the writer that puts them
//!   into the bucket.
//! - `codec`: how messages, subscribers, outcomes and instances travel through NATS.
//! - `bridge`: the stream's door: sealed messages believed, plain clients' held to an
//!   HTTP publish's rules, bodies over `--max-body` refused; `seal` the seal itself.
//! - `identity`: the cluster's identity, made once and shared through its bucket.

mod bridge;
mod codec;
mod connect;
mod deliver;
mod feed;
mod identity;
mod instances;
mod outcomes;
mod relayer;
mod seal;
mod sharing;
mod subscribers;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, kv, stream};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::hub::{ClusterPort, Hub, MessageId};
use codec::{SharedInstance, SharedOutcome};
use connect::retrying;
use relayer::Relayer;
use sharing::{Sharer, Writes};
use subscribers::watch_subscribers;

const OUTCOMES: &str = "HERALD_OUTCOMES";
const OUTCOME_SUBJECT: &str = "herald_outcomes";
/// How long after its last announcement an instance is gone.
const INSTANCE_TTL: Duration = Duration::from_secs(10);
/// Outcomes waiting to be told (while NATS is away, say); beyond it they are not told.
const OUTCOMES_WAITING: usize = 65_536;
/// How long shutdown waits for the last acknowledgements to go out.
const FINISH_GRACE: Duration = Duration::from_secs(2);

/// An instance's name when none is given: the host's name and the port it serves on (the
/// process id for a port chosen by the system).
pub fn default_name(bind: std::net::SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok());
    instance_name(host, bind.port(), std::process::id())
}

/// [`default_name`] from what it found: the host's name as read (`herald` when there is
/// none), the port, and the process id for port 0.
fn instance_name(host: Option<String>, port: u16, pid: u32) -> String {
    let host = host
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_owned());
    match port {
        0 => format!("{host}:pid{pid}"),
        port => format!("{host}:{port}"),
    }
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `nats://HOST:PORT`.
    pub url: String,
    /// This instance's name in the cluster's listings.
    pub name: String,
    /// The delivery timeout: a message unacknowledged this long (and two seconds more)
    /// is handed to another instance.
    pub delivery_timeout: Duration,
    /// Messages each instance loads into its log at start.
    pub log_capacity: usize,
    /// `--max-body`: a message in the stream with a larger body is never delivered.
    pub max_body: usize,
    /// `--forward-header`: what of a plain NATS client's headers its deliveries carry.
    pub forward_headers: Vec<axum::http::HeaderName>,
}

/// The cluster as this instance sees it, for the console and `GET /api/v1/cluster`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterView {
    /// The NATS server, as given to `--cluster`.
    pub url: String,
    /// This instance's name.
    pub instance: String,
    pub connected: bool,
    /// "connected", "connecting", "disconnected", with the last error if any.
    pub state: String,
    /// The instances announced in the last 10 seconds, this one included.
    pub instances: Vec<InstanceView>,
    /// Which instance made each subscriber's last delivery.
    pub deliverers: Vec<DelivererView>,
    /// Deliveries made again after another instance had been handed them (it died or
    /// did not answer in time): each may have reached its subscriber twice.
    pub redelivered: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceView {
    pub name: String,
    pub url: Option<String>,
    /// Milliseconds since it last announced itself.
    pub seen_ms_ago: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DelivererView {
    pub subscriber: String,
    pub instance: String,
    pub message: MessageId,
}

/// This instance's membership: the connection, and the tasks that keep it in step.
pub struct Cluster {
    state: Arc<State>,
}

struct State {
    /// The hub, as the cluster works it.
    hub: ClusterPort,
    config: ClusterConfig,
    connection: Mutex<Connection>,
    /// Set once connected (and the streams and buckets are there).
    links: std::sync::OnceLock<Links>,
    url: Mutex<Option<String>>,
    instances: Mutex<BTreeMap<String, (SharedInstance, Instant)>>,
    deliverers: Mutex<HashMap<String, (String, MessageId)>>,
    /// When each shared subscriber registered, at the instance it registered with: its
    /// consumer starts there, whichever instance creates it.
    registered: Mutex<HashMap<Arc<str>, SystemTime>>,
    redelivered: std::sync::atomic::AtomicU64,
    /// The last message the feed read into the log.
    fed: std::sync::atomic::AtomicU64,
    /// Held while a delivery taken from JetStream is under way, until it is acknowledged
    /// or handed back: shutdown waits for them before it lets the connection go.
    delivering: tokio_util::task::TaskTracker,
    /// This instance's outcomes, on their way to `tell_outcomes`.
    outcomes: mpsc::Sender<SharedOutcome>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Links {
    client: async_nats::Client,
    /// The stream's door, with the cluster's seal.
    bridge: Arc<bridge::Bridge>,
    js: jetstream::Context,
    messages: stream::Stream,
    subscribers: kv::Store,
    instances: kv::Store,
}

#[derive(Debug, Clone, Default)]
struct Connection {
    connected: bool,
    ever: bool,
    error: Option<String>,
}

impl Connection {
    /// The connection as the cluster's view says it, with the last error if any.
    fn state_text(&self) -> String {
        match (&self.connected, self.ever, &self.error) {
            (true, _, _) => "connected".to_owned(),
            (false, false, None) => "connecting".to_owned(),
            (false, false, Some(error)) => format!("connecting: {error}"),
            (false, true, None) => "disconnected".to_owned(),
            (false, true, Some(error)) => format!("disconnected: {error}"),
        }
    }
}

impl Cluster {
    /// Attaches `hub` to the cluster and joins it in the background: publishes are
    /// refused (503) until the connection is up and again while it is lost.
    pub fn start(hub: &Hub, config: ClusterConfig, runtime: &tokio::runtime::Handle) -> Arc<Self> {
        let (outcomes, told) = mpsc::channel(OUTCOMES_WAITING);
        let (sharer, writes) = Sharer::new();
        // The relay reaches the state the tasks share, which holds the port the relay's
        // attachment gives: a weak handle closes the circle.
        let state = Arc::new_cyclic(|state| State {
            outcomes,
            stop: hub.stopping().child_token(),
            hub: hub.attach(Arc::new(Relayer {
                state: state.clone(),
                sharer,
            })),
            config,
            connection: Mutex::default(),
            links: std::sync::OnceLock::new(),
            url: Mutex::new(None),
            instances: Mutex::default(),
            deliverers: Mutex::default(),
            registered: Mutex::default(),
            redelivered: Default::default(),
            fed: Default::default(),
            delivering: tokio_util::task::TaskTracker::new(),
        });
        runtime.spawn(run(state.clone(), writes, told));
        Arc::new(Self { state })
    }

    /// Where this instance's HTTP API is, for the others' listings.
    pub fn set_url(&self, url: Option<String>) {
        *self.state.url.lock() = url;
    }

    /// Waits (a little) for the deliveries under way to be acknowledged or handed back,
    /// and for the connection to send them: shutdown, once the hub has drained.
    pub async fn finish(&self) {
        let state = &self.state;
        state.delivering.close();
        tokio::time::timeout(FINISH_GRACE, state.delivering.wait())
            .await
            .ok();
        if let Some(links) = state.links.get() {
            tokio::time::timeout(FINISH_GRACE, links.client.flush())
                .await
                .ok();
        }
    }

    pub fn view(&self) -> ClusterView {
        let state = &self.state;
        let connection = state.connection.lock().clone();
        let mut instances: Vec<InstanceView> = state
            .instances
            .lock()
            .values()
            .filter(|(_, seen)| seen.elapsed() < INSTANCE_TTL)
            .map(|(instance, seen)| InstanceView {
                name: instance.name.clone(),
                url: instance.url.clone(),
                seen_ms_ago: u64::try_from(seen.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        let mut deliverers: Vec<DelivererView> = state
            .deliverers
            .lock()
            .iter()
            .map(|(subscriber, (instance, message))| DelivererView {
                subscriber: crate::hub::redact_address(subscriber).into_owned(),
                instance: instance.clone(),
                message: *message,
            })
            .collect();
        deliverers.sort_by(|a, b| a.subscriber.cmp(&b.subscriber));
        let state_text = connection.state_text();
        ClusterView {
            url: state.config.url.clone(),
            instance: state.config.name.clone(),
            connected: connection.connected,
            state: state_text,
            instances,
            deliverers,
            redelivered: state.redelivered.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Connects (and reconnects, through the client), then runs every task until the hub
/// stops.
async fn run(state: Arc<State>, writes: Writes, told: mpsc::Receiver<SharedOutcome>) {
    let links = loop {
        match connect::connect(&state).await {
            Ok(links) => break links,
            Err(error) => {
                tracing::warn!(%error, url = %state.config.url, "cannot join the cluster yet");
                state.connection.lock().error = Some(error.to_string());
                tokio::select! {
                    () = state.stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    {
        let mut connection = state.connection.lock();
        connection.connected = true;
        connection.ever = true;
        connection.error = None;
    }
    let _ = state.links.set(links.clone());
    tracing::info!(url = %state.config.url, "joined the cluster");
    let tasks = [
        tokio::spawn(retrying(state.clone(), "feed", feed::feed)),
        tokio::spawn(retrying(state.clone(), "outcomes", outcomes::outcomes)),
        tokio::spawn(retrying(state.clone(), "subscribers", watch_subscribers)),
        tokio::spawn(retrying(state.clone(), "instances", instances::instances)),
        tokio::spawn(deliver::supervise(state.clone())),
        tokio::spawn(sharing::write(state.clone(), writes)),
        tokio::spawn(outcomes::tell_outcomes(state.clone(), told)),
    ];
    state.stop.cancelled().await;
    for task in tasks {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_named_after_its_host_and_port() {
        assert_eq!(instance_name(Some("box\n".to_owned()), 8080, 7), "box:8080");
        assert_eq!(instance_name(Some(" box ".to_owned()), 8080, 7), "box:8080");
    }

    #[test]
    fn a_port_chosen_by_the_system_is_named_by_the_process() {
        assert_eq!(
            instance_name(Some("box".to_owned()), 0, 4242),
            "box:pid4242"
        );
    }

    #[test]
    fn an_instance_without_a_host_name_is_herald() {
        assert_eq!(instance_name(None, 8080, 7), "herald:8080");
        assert_eq!(instance_name(Some(" \n".to_owned()), 0, 7), "herald:pid7");
    }

    #[test]
    fn the_default_name_ends_with_the_port_or_the_process() {
        let name = default_name("127.0.0.1:8080".parse().unwrap());
        assert!(name.ends_with(":8080"), "{name}");
        assert!(!name.starts_with(':'), "{name}");
        let name = default_name("127.0.0.1:0".parse().unwrap());
        assert!(
            name.ends_with(&format!(":pid{}", std::process::id())),
            "{name}"
        );
    }

    fn text(connected: bool, ever: bool, error: Option<&str>) -> String {
        let error = error.map(str::to_owned);
        Connection {
            connected,
            ever,
            error,
        }
        .state_text()
    }

    #[test]
    fn the_connection_says_where_it_stands() {
        assert_eq!(text(false, false, None), "connecting");
        assert_eq!(text(false, false, Some("refused")), "connecting: refused");
        assert_eq!(text(true, true, None), "connected");
        // Connected again: an error from before is not shown.
        assert_eq!(text(true, true, Some("timed out")), "connected");
        assert_eq!(text(false, true, None), "disconnected");
        assert_eq!(
            text(false, true, Some("timed out")),
            "disconnected: timed out"
        );
    }
}
