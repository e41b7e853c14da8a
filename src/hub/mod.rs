//! The domain: subscribers, their keep-alive, the message log and what happened to each
//! delivery.
//!
//! Every operation is a plain, non-blocking method that takes a lock only long enough to
//! copy or change a few fields, so the HTTP server and the GUI thread call the same methods.
//! This module knows nothing of HTTP frameworks or GUIs: sending is done by whatever
//! [`Launch`] implementation the hub is built with (see `crate::delivery`).
//!
//! `Hub`'s methods live with their concern: [`registry`](self) (who is subscribed),
//! `intake` (publishing), `fan_out` (queueing for the subscribers), `resend`, `recording`
//! (outcomes and suspension) and `reads` (listings, totals, events).

mod address;
mod attempt;
mod backlog;
mod cluster_port;
mod event;
mod fan_out;
mod intake;
mod log;
mod message;
mod metrics;
mod outcome;
mod pins;
mod policy;
mod reads;
mod reaper;
mod recording;
mod registry;
mod replay;
mod resend;
mod restore;
mod routing;
mod secret;
mod setting;
mod store;
mod subscriber;
mod subscription;
mod topic;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use address::{AddressError, MAX_ADDRESS_LEN};
pub use attempt::{
    Answer, Attempt, Delivery, DeliverySummary, Exchange, Headers, MAX_KEPT_BODY, NOT_KEPT,
};
pub use cluster_port::{ClusterPort, Made, Outgoing, Relay, RelayError, Relayed, SubscriberChange};
pub use event::{Activity, HubEvent};
pub(crate) use intake::sendable;
pub use intake::{Accepted, PublishError, Published};
pub use log::{MAX_PINNED, MAX_TOPICS_SEEN, TopicSeen};
pub use message::{Draft, MessageId, MessageRecord, Source};
pub use metrics::{LATENCY_BUCKETS, MetricsSnapshot};
pub use outcome::{DeliveryError, DeliveryState, Outcome, OutcomeKind};
pub use pins::PinError;
pub use policy::{TargetPolicy, TargetRefused};
pub use reads::Totals;
pub use replay::{Edits, ReplayError};
pub use resend::ResendError;
pub use routing::{Reach, ReachSummary};
pub use secret::{Secret, SecretError};
pub use setting::LiveDuration;
pub use store::{
    Change, Commit, Keeps, Memory, Restored, Store, StoreError, StoreUsage, StoredSubscriber,
};
pub use subscriber::{RemovalReason, SubscriberState, SubscriberView};
pub use subscription::{ControlError, MAX_IN_FLIGHT, RegisterError, Registration, Subscription};
pub use topic::{
    MAX_HUB_PATTERNS, MAX_PATTERNS, MAX_TOKENS, MAX_TOPIC_LEN, Pattern, Topic, TopicError,
};

pub(crate) use address::redact as redact_address;
pub(crate) use outcome::{MAX_STORED_TEXT, clip};
pub(crate) use subscriber::{Job, Mailbox, SubscriberShared};

use fan_out::FanOut;
use log::Log;
use metrics::Metrics;
use registry::Registry;

/// A task the hub needs run for as long as it lives.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the hub's background work on some runtime. Implemented by the delivery module.
pub(crate) trait Launch: Send + Sync + 'static {
    /// Starts the worker that drains a new subscriber's queue.
    fn launch(&self, hub: Hub, mailbox: Mailbox);
    /// Runs one of the hub's own tasks (the fan-out, the reaper) until it ends. `name`
    /// says which, for logs and for tests that hold some back.
    fn spawn(&self, name: &'static str, task: Task);
}

/// How the hub is bounded and timed. Its `Default` is the command line's (`crate::config`).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// A subscriber not refreshed for this long is removed by the reaper.
    pub ttl: Duration,
    /// How often the reaper looks for expired subscribers.
    pub reap_every: Duration,
    /// Deliveries waiting per subscriber before new ones are dropped (and recorded).
    pub queue_capacity: usize,
    /// Messages kept in the log.
    pub log_capacity: usize,
    /// Bytes the log keeps at most: payloads and what is kept per delivery and attempt.
    pub log_max_bytes: usize,
    /// Live subscribers at most; registering one more is refused.
    pub max_subscribers: usize,
    /// Which addresses deliveries may go to.
    pub policy: TargetPolicy,
}

/// The hub. Cheap to clone: every clone is a handle to the same state.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    config: HubConfig,
    /// `config.ttl` and `config.reap_every` as they are now: the console changes them live.
    ttl: LiveDuration,
    reap_every: LiveDuration,
    /// `config.policy`, plus this hub's own address once it listens.
    policy: RwLock<TargetPolicy>,
    /// Who is subscribed, where a message goes, who is banned (see `registry`). Its
    /// locks come before the log's.
    registry: Registry,
    /// Accepted messages on their way to the fan-out task, in id order.
    fan_out: mpsc::Sender<FanOut>,
    /// Messages sent to the fan-out task and not yet queued for their subscribers. While
    /// there are any, a publish must go the same way, behind them, to keep the order.
    fanning_out: AtomicUsize,
    /// The messages, their ids and the topics they came with (see `log`).
    log: Log,
    /// Subscribers coming and going, newest last, bounded like the message log.
    activity: Mutex<VecDeque<Activity>>,
    /// Bumped on every event: readers that poll (the console) redraw only on change.
    version: AtomicU64,
    /// Every queued or in-flight delivery and every fan-out under way holds a token of
    /// it; shutdown's drain ends when the last one is dropped.
    outstanding: TaskTracker,
    metrics: Metrics,
    /// Fan-out of hub events to live followers. Lagging receivers lose the oldest events
    /// (and are told so by `broadcast`), so a slow follower never slows the hub.
    events: broadcast::Sender<HubEvent>,
    launcher: Arc<dyn Launch>,
    /// Where accepted messages and every change are kept beyond memory (or not).
    store: Arc<dyn Store>,
    /// Names this hub in delivery headers, so that a delivery that loops back to the hub
    /// is recognised: random per process in memory, kept by a durable store, so that a
    /// delivery made again after a restart has the `webhook-id` it had. A cluster's
    /// identity replaces it once known ([`Hub::instance`]).
    instance: String,
    /// In cluster mode, the cluster this hub is attached to (see `cluster_port`).
    cluster: OnceLock<cluster_port::Attached>,
    /// The one stop signal, cancelled when shutdown begins: no new subscribers or
    /// messages, and the reaper, the listener and live followers end.
    stopping: CancellationToken,
}

const EVENT_BUFFER: usize = 4_096;

impl Hub {
    /// A hub in memory only.
    pub(crate) fn new(config: HubConfig, launcher: Arc<dyn Launch>) -> Self {
        Self::with_store(config, launcher, Arc::new(Memory), Restored::default())
    }

    /// A hub that keeps everything in `store`, resuming from what it held at start:
    /// its subscribers, its newest messages, and every delivery still to make.
    pub(crate) fn with_store(
        config: HubConfig,
        launcher: Arc<dyn Launch>,
        store: Arc<dyn Store>,
        mut restored: Restored,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (fan_out, backlog) = mpsc::channel(fan_out::FAN_OUT_BACKLOG);
        let hub = Self {
            shared: Arc::new(Shared {
                log: Log::new(
                    config.log_capacity,
                    config.log_max_bytes,
                    restored.last_id + 1,
                ),
                ttl: LiveDuration::new(config.ttl),
                reap_every: LiveDuration::new(config.reap_every),
                policy: RwLock::new(config.policy.clone()),
                config,
                registry: Registry::default(),
                fan_out,
                fanning_out: AtomicUsize::new(0),
                activity: Mutex::new(VecDeque::new()),
                version: AtomicU64::new(0),
                outstanding: TaskTracker::new(),
                metrics: Metrics::default(),
                events,
                launcher,
                store,
                instance: restored.instance.take().unwrap_or_else(new_instance_id),
                cluster: OnceLock::new(),
                stopping: CancellationToken::new(),
            }),
        };
        // Weak handles, so that the tasks do not keep the hub alive: the fan-out ends when
        // the last handle goes (taking the channel's sender with it), the reaper then or
        // at shutdown.
        let weak = Arc::downgrade(&hub.shared);
        let launcher = &hub.shared.launcher;
        launcher.spawn("reaper", Box::pin(reaper::run(weak.clone())));
        launcher.spawn("fan-out", Box::pin(fan_out::fan_out_loop(weak, backlog)));
        hub.restore(restored);
        hub
    }

    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// This hub's instance id (hex): random per process in memory, kept by a durable
    /// store, and the cluster's once a clustered hub has joined it.
    pub fn instance(&self) -> &str {
        self.cluster_instance().unwrap_or(&self.shared.instance)
    }

    /// Begins shutdown: no new subscribers or messages; what is queued is still
    /// delivered. See [`Hub::drained`] and [`Hub::close`].
    pub fn stop_intake(&self) {
        self.shared.stopping.cancel();
    }

    /// Cancelled when shutdown begins.
    pub fn stopping(&self) -> CancellationToken {
        self.shared.stopping.clone()
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.is_cancelled()
    }

    /// Whether no delivery is queued or in flight, and no fan-out under way.
    #[cfg(test)]
    fn is_drained(&self) -> bool {
        self.shared.outstanding.is_empty()
    }

    /// Resolves once no delivery is queued or in flight. For shutdown: from the first
    /// call on, it waits for every delivery there is, not just those there were.
    pub async fn drained(&self) {
        self.shared.outstanding.close();
        self.shared.outstanding.wait().await;
    }
}

/// A new random instance id (hex): per process in memory, once per store on disk.
pub(crate) fn new_instance_id() -> String {
    // Uniqueness across restarts is all that matters here; if the OS has no randomness
    // to give, the clock still differs from one start to the next.
    let random = getrandom::u64().unwrap_or_else(|_| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    format!("{random:016x}")
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscriber_count())
            .field("totals", &self.totals())
            .finish_non_exhaustive()
    }
}
