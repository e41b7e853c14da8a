//! Cluster mode (`--cluster nats://HOST:PORT`): instances of Herald sharing one NATS
//! JetStream, so that a team's hub survives the loss of a process and spreads delivery.
//!
//! - **Messages** go into the stream `HERALD` (subject `herald.<topic>`, or `herald`):
//!   a publish at any instance is answered once JetStream has stored it, and every
//!   instance reads the stream into its own log ([`Hub::admit`]). A NATS client that
//!   publishes on those subjects is fanned out like anyone else.
//! - **Subscribers** live in the key-value bucket `herald_subscribers`: what the hub
//!   changes goes there through [`Sharing`] (its `Store`), and every instance applies
//!   what the bucket holds to its own registry, so a keep-alive anywhere refreshes a
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
//!
//! The hub knows none of this: it sees a [`Relay`] for publishes and a `Store` for its
//! changes.

mod codec;
mod sharing;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::hub::{
    DeliveryError, Hub, MessageId, Outgoing, Relay, RelayError, Relayed, RemovalReason,
    Subscription,
};
use codec::{SharedInstance, SharedOutcome, SharedSubscriber};
pub use sharing::{Sharing, Writes};

const STREAM: &str = "HERALD";
const OUTCOMES: &str = "HERALD_OUTCOMES";
const OUTCOME_SUBJECT: &str = "herald_outcomes";
const SUBSCRIBERS: &str = "herald_subscribers";
const INSTANCES: &str = "herald_instances";
/// How often an instance announces itself, and how long after its last it is gone.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
const INSTANCE_TTL: Duration = Duration::from_secs(10);
/// How long a publish waits for JetStream's acknowledgement before it is refused.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the consumers are matched against the subscribers.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);
/// Subscribers' entries outlive any lease (the longest is a day); their expiry is the
/// hubs' own, and an entry left by a subscriber that stopped is skipped by its age.
const SUBSCRIBER_MAX_AGE: Duration = Duration::from_secs(25 * 60 * 60);
/// Messages the stream keeps at most, and for how long: the shared log's retention.
const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Bytes the message stream keeps at most (the oldest go first).
const STREAM_MAX_BYTES: i64 = 1 << 30;
const OUTCOMES_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// A subscriber's consumer left behind (its subscriber gone while no instance ran) is
/// removed by JetStream after this long unused.
/// Messages a subscriber without strict order may have unacknowledged at once (in
/// flight, queued at an instance, retrying): its worker's queue holds as many.
const UNORDERED_WINDOW: usize = 1_024;
/// Outcomes gathered into one stream message: for at most this long, at most this many.
const OUTCOMES_EVERY: Duration = Duration::from_millis(20);
const OUTCOMES_PER_MESSAGE: usize = 512;
/// Outcomes waiting to be told (while NATS is away, say); beyond it they are not told.
const OUTCOMES_WAITING: usize = 65_536;
/// How long shutdown waits for the last acknowledgements to go out.
const FINISH_GRACE: Duration = Duration::from_secs(2);
const FRESH_REGISTRATION: Duration = Duration::from_secs(30);
const CONSUMER_IDLE: Duration = Duration::from_secs(60 * 60);

/// The hub's instance id in cluster mode, the same at every instance: it names deliveries
/// (`webhook-id`), and one made again elsewhere must keep its name.
pub const INSTANCE_ID: &str = "cluster";

/// An instance's name when none is given: the host's name and the port it serves on (the
/// process id for a port chosen by the system).
pub fn default_name(bind: std::net::SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_owned());
    match bind.port() {
        0 => format!("{host}:pid{}", std::process::id()),
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
    hub: Hub,
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

impl Cluster {
    /// Joins the cluster in the background: publishes are refused (503) until the
    /// connection is up and again while it is lost. Returns the store the hub must be
    /// built with, and the membership to attach once it is ([`Cluster::attach`]).
    pub fn prepare() -> (Arc<Sharing>, sharing::Writes) {
        Sharing::new()
    }

    pub fn start(
        hub: Hub,
        config: ClusterConfig,
        writes: sharing::Writes,
        runtime: &tokio::runtime::Handle,
    ) -> Arc<Self> {
        let (outcomes, told) = mpsc::channel(OUTCOMES_WAITING);
        let state = Arc::new(State {
            outcomes,
            stop: hub.stopping().child_token(),
            hub: hub.clone(),
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
        hub.set_relay(Arc::new(Relayer {
            state: state.clone(),
        }));
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
        let state_text = match (&connection.connected, connection.ever, &connection.error) {
            (true, _, _) => "connected".to_owned(),
            (false, false, None) => "connecting".to_owned(),
            (false, false, Some(error)) => format!("connecting: {error}"),
            (false, true, None) => "disconnected".to_owned(),
            (false, true, Some(error)) => format!("disconnected: {error}"),
        };
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

struct Relayer {
    state: Arc<State>,
}

impl Relay for Relayer {
    fn publish(&self, message: Outgoing) -> Relayed {
        let state = self.state.clone();
        Box::pin(async move {
            let unavailable = |why: String| RelayError::Unavailable(why);
            let links = state
                .links
                .get()
                .ok_or_else(|| unavailable("not connected to NATS yet".to_owned()))?;
            // While the client reconnects it would queue the publish: refused at once
            // instead, so that nothing is taken that might not be kept.
            if !state.connection.lock().connected {
                return Err(unavailable("the connection to NATS is lost".to_owned()));
            }
            let (subject, headers, body) = codec::encode(&message);
            let ack = async {
                let pending = links
                    .js
                    .publish_with_headers(subject, headers, body)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                pending.await.map_err(|e| unavailable(e.to_string()))
            };
            let ack = tokio::time::timeout(PUBLISH_TIMEOUT, ack)
                .await
                .map_err(|_| RelayError::Unconfirmed(PUBLISH_TIMEOUT))??;
            Ok(ack.sequence)
        })
    }
}

/// Connects (and reconnects, through the client), then runs every task until the hub
/// stops.
async fn run(state: Arc<State>, writes: sharing::Writes, told: mpsc::Receiver<SharedOutcome>) {
    let links = loop {
        match connect(&state).await {
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
        tokio::spawn(retrying(state.clone(), "feed", feed)),
        tokio::spawn(retrying(state.clone(), "outcomes", outcomes)),
        tokio::spawn(retrying(state.clone(), "subscribers", watch_subscribers)),
        tokio::spawn(retrying(state.clone(), "instances", instances)),
        tokio::spawn(supervise(state.clone())),
        tokio::spawn(sharing::write(state.clone(), writes)),
        tokio::spawn(tell_outcomes(state.clone(), told)),
    ];
    state.stop.cancelled().await;
    for task in tasks {
        task.abort();
    }
}

async fn connect(state: &Arc<State>) -> anyhow::Result<Links> {
    let events = Arc::downgrade(state);
    let client = async_nats::ConnectOptions::new()
        .name(format!("herald {}", state.config.name))
        .connection_timeout(Duration::from_secs(2))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let Some(state) = events.upgrade() else {
                    return;
                };
                let mut connection = state.connection.lock();
                match event {
                    async_nats::Event::Connected => {
                        connection.connected = true;
                        connection.error = None;
                    }
                    async_nats::Event::Disconnected => connection.connected = false,
                    async_nats::Event::ClientError(error) => {
                        connection.error = Some(error.to_string());
                    }
                    _ => {}
                }
            }
        })
        .connect(state.config.url.as_str())
        .await?;
    let js = jetstream::new(client.clone());
    let messages = js
        .get_or_create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![codec::SUBJECT.to_owned(), format!("{}.>", codec::SUBJECT)],
            max_age: STREAM_MAX_AGE,
            max_bytes: STREAM_MAX_BYTES,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    js.get_or_create_stream(stream::Config {
        name: OUTCOMES.to_owned(),
        subjects: vec![format!("{OUTCOME_SUBJECT}.>")],
        max_age: OUTCOMES_MAX_AGE,
        max_bytes: STREAM_MAX_BYTES / 4,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let subscribers = bucket(&js, SUBSCRIBERS, SUBSCRIBER_MAX_AGE).await?;
    let instances = bucket(&js, INSTANCES, INSTANCE_TTL).await?;
    Ok(Links {
        client,
        js,
        messages,
        subscribers,
        instances,
    })
}

/// A key-value bucket, its stream made by hand: the client's `create_key_value` cannot
/// read what nats-server 2.9 (Debian's) answers, and `get_key_value` works on a stream
/// laid out as the bucket's would be.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
) -> anyhow::Result<kv::Store> {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(name).await?)
}

/// Runs `task` again whenever it fails (the connection dropped under it), a second
/// later, until the hub stops.
async fn retrying<F, Fut>(state: Arc<State>, name: &'static str, task: F)
where
    F: Fn(Arc<State>, Links) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let links = state
        .links
        .get()
        .expect("connected before the tasks start")
        .clone();
    loop {
        tokio::select! {
            () = state.stop.cancelled() => return,
            result = task(state.clone(), links.clone()) => {
                if let Err(error) = result {
                    tracing::warn!(%error, task = name, "cluster task failed; again in a second");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads the shared log into this instance's: the newest `log_capacity` messages, then
/// every new one, in the stream's order.
async fn feed(state: Arc<State>, links: Links) -> anyhow::Result<()> {
    let mut stream = links.messages.clone();
    let last = stream.info().await?.state.last_sequence;
    // Where this feed left off (a delivery loop may have logged newer messages since,
    // which says nothing of those in between).
    let read = state.fed.load(std::sync::atomic::Ordering::Relaxed);
    let capacity = state.config.log_capacity as u64;
    let start = read.max(last.saturating_sub(capacity)) + 1;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (id, at) = (info.stream_sequence, SystemTime::from(info.published));
        let incoming = codec::decode(
            message.subject.as_str(),
            message.headers.as_ref(),
            message.payload.clone(),
        );
        state
            .hub
            .admit(id, at, incoming.draft, incoming.source, incoming.replay_of);
        state.fed.store(id, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Records the deliveries other instances made, and who made each subscriber's last.
async fn outcomes(state: Arc<State>, links: Links) -> anyhow::Result<()> {
    let stream = links.js.get_stream(OUTCOMES).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let Ok(batch) = serde_json::from_slice::<Vec<SharedOutcome>>(&message.payload) else {
            tracing::warn!("outcomes in the cluster's stream do not parse; skipped");
            continue;
        };
        for shared in batch {
            // Only for subscribers this hub has: anyone may publish on the subject.
            if !state.hub.is_subscribed(&shared.address) {
                continue;
            }
            state
                .deliverers
                .lock()
                .insert(shared.address.clone(), (shared.instance.clone(), shared.id));
            if shared.instance == state.config.name {
                continue;
            }
            if let Some(outcome) = shared.outcome() {
                state
                    .hub
                    .record_remote(shared.id, &shared.address, outcome, Vec::new());
            }
        }
    }
    Ok(())
}

/// Tells the others this instance's outcomes, gathered for up to `OUTCOMES_EVERY` into
/// one stream message: one per delivery would cost JetStream a write, and every other
/// instance a read, for each delivery.
async fn tell_outcomes(state: Arc<State>, mut outcomes: mpsc::Receiver<SharedOutcome>) {
    let Some(links) = state.links.get().cloned() else {
        return;
    };
    let subject = format!("{OUTCOME_SUBJECT}.{}", codec::name_of(&state.config.name));
    let mut batch = Vec::new();
    while let Some(first) = outcomes.recv().await {
        batch.push(first);
        let until = tokio::time::Instant::now() + OUTCOMES_EVERY;
        while batch.len() < OUTCOMES_PER_MESSAGE {
            match tokio::time::timeout_at(until, outcomes.recv()).await {
                Ok(Some(outcome)) => batch.push(outcome),
                Ok(None) | Err(_) => break,
            }
        }
        let Ok(payload) = serde_json::to_vec(&batch) else {
            batch.clear();
            continue;
        };
        batch.clear();
        // Lost if NATS is gone this instant, which costs the other consoles some lines,
        // never a delivery.
        links
            .client
            .publish(subject.clone(), payload.into())
            .await
            .ok();
    }
}

/// Applies what the subscribers' bucket holds, and every change to it, to this hub.
async fn watch_subscribers(state: Arc<State>, links: Links) -> anyhow::Result<()> {
    let mut entries = links.subscribers.watch_with_history(">").await?;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<SharedSubscriber>(&entry.value) {
                Ok(shared) => {
                    let key: Arc<str> = shared.address.as_str().into();
                    state.registered.lock().insert(key, shared.registered_at());
                    sharing::applying(|| apply(&state.hub, &shared));
                }
                Err(error) => {
                    tracing::warn!(%error, "a subscriber in the cluster's bucket does not parse")
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                if let Some(address) = state.hub.address_named(&entry.key, codec::name_of) {
                    sharing::applying(|| state.hub.remove(&address, RemovalReason::Deregistered));
                    state.registered.lock().remove(&address);
                    state.deliverers.lock().remove(&*address);
                }
            }
        }
    }
    Ok(())
}

/// Registers or refreshes a subscriber as another instance (or this one) shared it.
fn apply(hub: &Hub, shared: &SharedSubscriber) {
    let lease = shared.lease().unwrap_or_else(|| hub.ttl());
    let age = SystemTime::now()
        .duration_since(shared.seen_at())
        .unwrap_or_default();
    if age > lease && !shared.pinned {
        // Left by a subscriber that stopped refreshing while no instance removed it.
        return;
    }
    let Some(topics) = shared.patterns() else {
        tracing::warn!(address = %shared.address, "a shared subscriber's topics do not parse here; not applied");
        return;
    };
    let subscription = Subscription {
        address: &shared.address,
        secret: shared.secret(),
        lease: shared.lease(),
        ordered: Some(shared.ordered),
        max_in_flight: Some(shared.max_in_flight),
        topics: Some(topics),
    };
    if let Err(error) = hub.subscribe(subscription) {
        tracing::warn!(address = %shared.address, %error, "a shared subscriber is refused here");
        return;
    }
    if let Some(now) = hub.subscriber(&shared.address) {
        // Both answer only "unknown subscriber", and it was registered a line above.
        if now.paused != shared.paused {
            hub.set_paused(&shared.address, shared.paused).ok();
        }
        if now.pinned != shared.pinned {
            hub.set_pinned(&shared.address, shared.pinned).ok();
        }
    }
}

/// Announces this instance, and keeps the list of the others.
async fn instances(state: Arc<State>, links: Links) -> anyhow::Result<()> {
    let started_ms = crate::store::codec::millis(SystemTime::now());
    let me = state.config.name.clone();
    let announce = {
        let state = state.clone();
        let links = links.clone();
        async move {
            loop {
                let instance = SharedInstance {
                    name: me.clone(),
                    url: state.url.lock().clone(),
                    started_ms,
                };
                let value = serde_json::to_vec(&instance)?;
                links
                    .instances
                    .put(codec::name_of(&me), value.into())
                    .await?;
                tokio::time::sleep(ANNOUNCE_EVERY).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        }
    };
    let watch = async {
        let mut entries = links.instances.watch_with_history(">").await?;
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            if entry.operation != kv::Operation::Put {
                continue;
            }
            if let Ok(instance) = serde_json::from_slice::<SharedInstance>(&entry.value) {
                // An announcement read from history is as old as its entry.
                let age = SystemTime::now()
                    .duration_since(SystemTime::from(entry.created))
                    .unwrap_or_default();
                let seen = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                let mut known = state.instances.lock();
                known.insert(instance.name.clone(), (instance, seen));
                known.retain(|_, (_, seen)| seen.elapsed() < INSTANCE_TTL * 6);
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::try_join!(announce, watch)?;
    Ok(())
}

/// Keeps a delivery loop running for each subscriber this hub has, and none for those
/// it no longer has.
async fn supervise(state: Arc<State>) {
    type Running = (bool, CancellationToken, tokio::task::JoinHandle<()>);
    let mut running: HashMap<Arc<str>, Running> = HashMap::new();
    loop {
        let subscribers: HashMap<Arc<str>, (SystemTime, bool)> = state
            .hub
            .subscriber_keys()
            .into_iter()
            .map(|(key, at, ordered)| (key, (at, ordered)))
            .collect();
        running.retain(|key, (ordered, stop, task)| {
            // A loop that ended on its own (its subscriber left and came back between two
            // looks) is started again below, as is one for a subscriber that changed its
            // order: its consumer's window changes with it.
            let keep =
                subscribers.get(key).is_some_and(|(_, now)| now == ordered) && !task.is_finished();
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (key, (registered_at, ordered)) in subscribers {
            if running.contains_key(&key) {
                continue;
            }
            let stop = state.stop.child_token();
            let task = tokio::spawn(deliver_loop(
                state.clone(),
                key.clone(),
                (registered_at, ordered),
                stop.clone(),
            ));
            running.insert(key, (ordered, stop, task));
        }
        tokio::select! {
            () = state.stop.cancelled() => return,
            () = tokio::time::sleep(SUPERVISE_EVERY) => {}
        }
    }
}

/// Pulls the messages for subscriber `key` from its consumer and delivers each here,
/// while JetStream hands them to this instance, until `stop` or the subscriber leaves
/// this hub. The deliveries under way outlive a failed pull stream (a missed heartbeat):
/// the stream is opened again beside them, so that one retrying delivery never holds
/// back the next. A delivery under way when the loop ends is finished (acknowledged,
/// or handed back) first.
async fn deliver_loop(
    state: Arc<State>,
    key: Arc<str>,
    (registered_at, ordered): (SystemTime, bool),
    stop: CancellationToken,
) {
    let mut under_way = tokio::task::JoinSet::new();
    let mut gone = false;
    'open: while !gone && !stop.is_cancelled() {
        let (mut messages, ack_wait) = match open(&state, &key, registered_at, ordered).await {
            Ok(opened) => opened,
            Err(error) => {
                tracing::debug!(%error, address = %key, "a subscriber's consumer cannot be read; again in a second");
                tokio::select! {
                    () = stop.cancelled() => break 'open,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue 'open,
                }
            }
        };
        while !gone {
            // Only waiting for the next message is cut short by `stop`: a delivery taken
            // is seen to its end, so that a stopping instance hands nothing out twice.
            tokio::select! {
                () = stop.cancelled() => break 'open,
                Some(done) = under_way.join_next(), if !under_way.is_empty() => {
                    gone = matches!(done, Ok(Ok(Handled::Gone)));
                    if let Ok(Err(error)) = done {
                        tracing::debug!(%error, address = %key, "a delivery's acknowledgement failed");
                    }
                }
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        let token = state.delivering.token();
                        let (state, key) = (state.clone(), key.clone());
                        under_way.spawn(async move {
                            let handled = handle(&state, &key, message, ack_wait).await;
                            drop(token);
                            handled
                        });
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, address = %key, "a subscriber's pull stream failed; opened again");
                        continue 'open;
                    }
                    None => continue 'open,
                },
            }
        }
    }
    // Dropping them would leave their deliveries queued here and unacknowledged there,
    // to be made again elsewhere.
    while under_way.join_next().await.is_some() {}
}

/// The consumer of subscriber `key`, as its options want it now, and a pull stream of
/// it; with the acknowledgement wait.
async fn open(
    state: &Arc<State>,
    key: &Arc<str>,
    registered_at: SystemTime,
    ordered: bool,
) -> anyhow::Result<(consumer::pull::Stream, Duration)> {
    let links = state
        .links
        .get()
        .ok_or_else(|| anyhow::anyhow!("not connected"))?;
    let name = codec::name_of(key);
    // An ordered subscriber gets one message at a time, cluster-wide: the next only once
    // the last is acknowledged. Any other may have many under way (in its worker's
    // queue, retrying), so that one failing delivery never holds back the next, as the
    // seed behaves; no more than its queue holds, or the rest would be dropped as
    // "queue full" while JetStream could have kept them.
    let window = if ordered {
        1
    } else {
        UNORDERED_WINDOW.min(state.hub.config().queue_capacity.max(1))
    };
    let ack_wait = state.config.delivery_timeout + Duration::from_secs(2);
    let registered_at = state
        .registered
        .lock()
        .get(key)
        .copied()
        .unwrap_or(registered_at);
    // A consumer made soon after the registration starts from it, so that nothing
    // published in between is missed. One made much later (the last was removed while
    // the subscriber lived on at some instance) starts from now: a subscriber gets what
    // is published while it is live, never a backlog from before.
    let fresh = SystemTime::now()
        .duration_since(registered_at)
        .is_ok_and(|age| age < FRESH_REGISTRATION);
    let deliver_policy = if fresh {
        consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(registered_at),
        }
    } else {
        consumer::DeliverPolicy::New
    };
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        deliver_policy,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: window as i64,
        inactive_threshold: CONSUMER_IDLE,
        ..Default::default()
    };
    let mut consumer: consumer::PullConsumer = links
        .messages
        .get_or_create_consumer(&name, config.clone())
        .await?;
    // One made for other options (the subscriber registered again, ordered now, or the
    // delivery timeout changed) is brought to these: both fields may change in place.
    let made = &consumer.cached_info().config;
    if made.max_ack_pending != config.max_ack_pending || made.ack_wait != ack_wait {
        let config = consumer::pull::Config {
            deliver_policy: made.deliver_policy,
            ..config
        };
        match links.messages.create_consumer(config).await {
            Ok(updated) => consumer = updated,
            Err(error) => {
                tracing::warn!(%error, address = %key, "a subscriber's consumer keeps its earlier options");
            }
        }
    }
    let messages = consumer
        .stream()
        .max_messages_per_batch(window.min(256))
        // Long enough that a busy machine does not miss one: a missed heartbeat ends the
        // stream, and what the server had already sent it comes again after `ack_wait`.
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    Ok((messages, ack_wait))
}

/// What became of one message taken from a subscriber's consumer.
enum Handled {
    Done,
    /// The subscriber is gone from this hub: handed back, and the loop ends.
    Gone,
}

/// Delivers one message taken from `key`'s consumer here, and acknowledges it, or hands
/// it back when it was not made.
async fn handle(
    state: &Arc<State>,
    key: &Arc<str>,
    message: jetstream::Message,
    ack_wait: Duration,
) -> anyhow::Result<Handled> {
    let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (id, at, redelivered) = (
        info.stream_sequence,
        SystemTime::from(info.published),
        info.delivered > 1,
    );
    let hand_back = || async {
        // Another instance, or this one later, makes it.
        message.ack_with(jetstream::AckKind::Nak(None)).await.ok();
        Ok(Handled::Gone)
    };
    let (topic, to) = codec::route_of(message.subject.as_str(), message.headers.as_ref());
    match state.hub.wants(key, topic.as_ref(), to.as_deref()) {
        // Gone from this hub (removed, or this instance is stopping): it may live on at
        // another instance.
        None => return hand_back().await,
        Some(false) => {
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            return Ok(Handled::Done);
        }
        Some(true) => {}
    }
    // Read whole only by the first of this instance's consumers to see it.
    let record = state.hub.message(id).unwrap_or_else(|| {
        let incoming = codec::decode(
            message.subject.as_str(),
            message.headers.as_ref(),
            message.payload.clone(),
        );
        state
            .hub
            .admit(id, at, incoming.draft, incoming.source, incoming.replay_of)
    });
    let Ok(mut done) = state.hub.deliver_one(&record, key) else {
        return hand_back().await;
    };
    // Retries (and a wait in the worker's queue) can take longer than `ack_wait`:
    // JetStream is told the delivery is still under way, so that it hands it to nobody
    // else while this instance lives.
    let outcome = loop {
        tokio::select! {
            made = &mut done => break made.ok(),
            () = tokio::time::sleep(ack_wait / 3) => {
                message.ack_with(jetstream::AckKind::Progress).await.ok();
            }
        }
    };
    // Removed here while it was under way (deregistered, kicked, or this instance
    // stopping): not made, so not acknowledged; if the subscriber lives on elsewhere, it
    // is made there.
    let Some(made) =
        outcome.filter(|m| !matches!(m.outcome.error(), Some(DeliveryError::Removed(_))))
    else {
        return hand_back().await;
    };
    // Not waited for: one lost with the connection hands the message out again, which
    // is the "twice, never zero times" a cut-off delivery is allowed.
    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if redelivered {
        state
            .redelivered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let attempts = made.attempts.unwrap_or(1);
    let shared = SharedOutcome::new(
        id,
        key,
        &state.config.name,
        &made.outcome,
        attempts,
        redelivered,
    );
    // Full only while NATS is away and outcomes pile up: the others' consoles miss
    // those lines, deliveries are unaffected.
    state.outcomes.try_send(shared).ok();
    Ok(Handled::Done)
}
