//! Programmable test subscribers: HTTP servers inside Herald, on 127.0.0.1, registered
//! like real ones, each answering as its [`Behaviour`] says (which can change while it
//! runs) and keeping what it received. The console's panel and `/api/v1/test-subscribers`
//! drive the same ones.
//!
//! Each runs on the runtime it is started on: a server, and a loop that keeps its
//! registration alive until it is removed. It knows no GUI: whoever shows what it received
//! passes a [`Wake`] callback.
//!
//! Each port has the hub's own edge ([`crate::edge`]): its header and idle timeouts, a cap
//! on connections ([`MAX_CONNECTIONS`]) and the hub's `--max-body`; removing one closes
//! its listener and drops every connection it has at once. What they keep of the requests
//! they received is a copy of each body's first [`MAX_KEPT_BODY`] bytes, all of them
//! together within one budget (`kept.rs`). Their registrations are ephemeral: no store
//! keeps one and no cluster hears of one, since the server behind it lives only as long
//! as this process.

mod kept;
mod receive;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use parking_lot::{Mutex, RwLock};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

pub use kept::{KEEP, KEPT_BUDGET, Received};

use crate::edge::{AtStop, ConnectionLimits, Edge};
use crate::hub::{Hub, RegisterError, RemovalReason, Subscription};
use kept::Kept;

/// The most of each body it keeps: 100 requests to each of 64 must not hold gigabytes.
pub const MAX_KEPT_BODY: usize = 64 * 1024;
/// Test subscribers at most.
pub const MAX_TEST_SUBSCRIBERS: usize = 64;
/// The longest added latency or read delay: a minute.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Connections one test subscriber holds open at most (or the hub's `--max-connections`,
/// if lower). The hub delivers to one a request at a time (it registers without
/// `max_in_flight`), so 64 leave room for a developer's own clients while 64 of them
/// hold at most 4,096 descriptors; past it, the connection idle longest makes room.
pub const MAX_CONNECTIONS: usize = 64;

/// Called on a runtime thread when a test subscriber starts (or fails to), and on every
/// request it receives.
pub(crate) type Wake = Arc<dyn Fn() + Send + Sync>;

/// How a test subscriber answers, changed at will while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// The status it answers with (when it does not fail or say it is gone).
    pub status: u16,
    /// Added before it answers.
    pub delay: Duration,
    /// The share of requests answered 500 instead, 0 to 100.
    pub fail_percent: u8,
    /// Answers 410 Gone (and so unsubscribes) after this many deliveries.
    pub gone_after: Option<u64>,
    /// Never answers: the request hangs until Herald's delivery timeout.
    pub hang: bool,
    /// Waits this long between the body's chunks: a slow reader.
    pub read_delay: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            status: 204,
            delay: Duration::ZERO,
            fail_percent: 0,
            gone_after: None,
            hang: false,
            read_delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BehaviourError {
    #[error("status must be an HTTP status from 100 to 599, not {0}")]
    Status(u16),
    #[error("fail_percent must be from 0 to 100, not {0}")]
    FailPercent(u8),
    #[error("delays must be at most a minute (60000 ms)")]
    Delay,
    #[error("{MAX_TEST_SUBSCRIBERS} test subscribers run already; remove one first")]
    TooMany,
}

impl Behaviour {
    pub fn check(&self) -> Result<(), BehaviourError> {
        if !(100..=599).contains(&self.status) {
            return Err(BehaviourError::Status(self.status));
        }
        if self.fail_percent > 100 {
            return Err(BehaviourError::FailPercent(self.fail_percent));
        }
        if self.delay > MAX_DELAY || self.read_delay > MAX_DELAY {
            return Err(BehaviourError::Delay);
        }
        Ok(())
    }
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

/// One test subscriber. Cheap to share.
pub struct TestSubscriber {
    pub id: u64,
    behaviour: RwLock<Behaviour>,
    state: Mutex<TestState>,
    /// What it keeps of what it received, with every other test subscriber's.
    kept: Arc<Kept>,
    /// The largest request body it reads: the hub's `--max-body`.
    max_body: usize,
    /// Bounds on its port's connections.
    limits: ConnectionLimits,
    /// Requests it took, all told (the `gone_after` count).
    requests: AtomicU64,
    /// Stops the server and its keep-alive loop.
    stop: CancellationToken,
    /// Why it did not start, for whoever waits on its start.
    failure: Mutex<Option<StartFailure>>,
}

impl std::fmt::Debug for TestSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSubscriber")
            .field("id", &self.id)
            .field("state", &*self.state.lock())
            .finish_non_exhaustive()
    }
}

impl TestSubscriber {
    pub fn state(&self) -> TestState {
        self.state.lock().clone()
    }

    /// The address it is registered under, once it is.
    pub fn address(&self) -> Option<String> {
        match &*self.state.lock() {
            TestState::On(address) => Some(address.clone()),
            _ => None,
        }
    }

    pub fn behaviour(&self) -> Behaviour {
        self.behaviour.read().clone()
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) -> Result<(), BehaviourError> {
        behaviour.check()?;
        *self.behaviour.write() = behaviour;
        Ok(())
    }

    /// The newest `limit` received, newest first.
    pub fn received(&self, limit: usize) -> Vec<Received> {
        self.kept.newest(self.id, limit)
    }

    /// Requests it took since it started.
    pub fn received_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn record(&self, received: Received) {
        self.kept.push(self.id, received);
    }

    /// How it registers and keeps alive: ephemeral, as its server ends with this process.
    fn subscription(address: &str) -> Subscription<'_> {
        Subscription {
            ephemeral: true,
            ..Subscription::new(address)
        }
    }

    /// Serves on 127.0.0.1, registers with `hub`, and keeps the registration alive.
    async fn serve(self: &Arc<Self>, hub: &Hub, wake: Wake) -> Result<String, StartFailure> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|err| StartFailure::Failed(format!("cannot listen on 127.0.0.1: {err}")))?;
        let address = listener
            .local_addr()
            .map_err(|err| StartFailure::Failed(err.to_string()))?
            .to_string();
        let app = Router::new()
            .fallback(receive::receive)
            .with_state((self.clone(), wake.clone()));
        let edge = Edge {
            limits: self.limits,
            refusal: format!(
                "Error: all {} connections a test subscriber allows are busy; try again shortly\n",
                self.limits.max_connections
            )
            .into(),
            // Removed means gone: a slow reader must not keep its sockets (and the hub's
            // own, delivering to it) open until it has read.
            at_stop: AtStop::Abort,
        };
        tokio::spawn(crate::edge::serve(listener, app, edge, self.stop.clone()));
        if let Err(err) = hub.subscribe(Self::subscription(&address)) {
            self.stop.cancel();
            return Err(StartFailure::Register(err));
        }
        let (hub, keep_alive, this) = (hub.clone(), address.clone(), self.clone());
        tokio::spawn(async move {
            loop {
                let every = (hub.ttl() / 3).max(Duration::from_millis(100));
                tokio::select! {
                    () = this.stop.cancelled() => {
                        hub.remove(&keep_alive, RemovalReason::Deregistered);
                        return;
                    }
                    () = tokio::time::sleep(every) => {
                        if let Err(err) = hub.subscribe(Self::subscription(&keep_alive)) {
                            // Say so, rather than look "on" while the hub has dropped it
                            // (it may have answered 410 on purpose).
                            this.stop.cancel();
                            *this.state.lock() =
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
}

/// Why a test subscriber did not start.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StartFailure {
    #[error(transparent)]
    Refused(BehaviourError),
    #[error("the hub refused its registration: {0}")]
    Register(RegisterError),
    #[error("the test subscriber did not start: {0}")]
    Failed(String),
}

/// Every test subscriber running, in the order they were added.
#[derive(Debug)]
pub struct TestSubscribers {
    next: AtomicU64,
    list: Mutex<Vec<Arc<TestSubscriber>>>,
    /// What they all keep of what they received, in one budget.
    kept: Arc<Kept>,
    /// Each one's port's bounds.
    limits: ConnectionLimits,
    max_body: usize,
}

impl TestSubscribers {
    /// Test subscribers whose ports have the hub's timeouts (`hub`, its own listener's
    /// bounds) and its `max_body`, and at most [`MAX_CONNECTIONS`] connections each.
    pub fn new(hub: ConnectionLimits, max_body: usize) -> Self {
        Self {
            next: AtomicU64::new(0),
            list: Mutex::default(),
            kept: Arc::default(),
            limits: ConnectionLimits {
                max_connections: MAX_CONNECTIONS.min(hub.max_connections),
                ..hub
            },
            max_body,
        }
    }

    /// Adds one answering as `behaviour` and starts it on `runtime`; it shows as
    /// [`TestState::Starting`] until it is registered.
    pub fn add(
        &self,
        hub: &Hub,
        runtime: &Handle,
        behaviour: Behaviour,
        wake: Wake,
    ) -> Result<Arc<TestSubscriber>, BehaviourError> {
        behaviour.check()?;
        let subscriber = {
            let mut list = self.list.lock();
            if list.len() >= MAX_TEST_SUBSCRIBERS {
                return Err(BehaviourError::TooMany);
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            self.kept.open(id);
            let subscriber = Arc::new(TestSubscriber {
                id,
                behaviour: RwLock::new(behaviour),
                state: Mutex::new(TestState::Starting),
                kept: self.kept.clone(),
                max_body: self.max_body,
                limits: self.limits,
                requests: AtomicU64::new(0),
                stop: hub.stopping().child_token(),
                failure: Mutex::new(None),
            });
            list.push(subscriber.clone());
            subscriber
        };
        let (this, hub) = (subscriber.clone(), hub.clone());
        runtime.spawn(async move {
            let state = match this.serve(&hub, wake.clone()).await {
                Ok(address) => TestState::On(address),
                Err(error) => {
                    let state = TestState::Failed(error.to_string());
                    *this.failure.lock() = Some(error);
                    state
                }
            };
            *this.state.lock() = state;
            wake();
        });
        Ok(subscriber)
    }

    /// Adds one and waits until it is registered (the API answers with its address).
    pub async fn add_started(
        &self,
        hub: &Hub,
        runtime: &Handle,
        behaviour: Behaviour,
    ) -> Result<Arc<TestSubscriber>, StartFailure> {
        let (started, done) = tokio::sync::oneshot::channel::<()>();
        let started = Mutex::new(Some(started));
        let wake: Wake = Arc::new(move || {
            if let Some(started) = started.lock().take() {
                started.send(()).ok();
            }
        });
        let subscriber = self
            .add(hub, runtime, behaviour, wake)
            .map_err(StartFailure::Refused)?;
        done.await.ok();
        match subscriber.state() {
            TestState::On(_) => Ok(subscriber),
            TestState::Failed(error) => {
                self.remove(hub, subscriber.id);
                let failure = subscriber.failure.lock().take();
                Err(failure.unwrap_or(StartFailure::Failed(error)))
            }
            other => Err(StartFailure::Failed(format!(
                "it did not start ({other:?})"
            ))),
        }
    }

    pub fn list(&self) -> Vec<Arc<TestSubscriber>> {
        self.list.lock().clone()
    }

    pub fn get(&self, id: u64) -> Option<Arc<TestSubscriber>> {
        self.list.lock().iter().find(|s| s.id == id).cloned()
    }

    /// Deregisters and stops one (deregistered before this returns); returns whether
    /// there was one.
    pub fn remove(&self, hub: &Hub, id: u64) -> bool {
        let removed = {
            let mut list = self.list.lock();
            let index = list.iter().position(|s| s.id == id);
            index.map(|i| list.remove(i))
        };
        match removed {
            Some(subscriber) => {
                // Its listener closes and its connections are dropped, at once.
                subscriber.stop.cancel();
                if let Some(address) = subscriber.address() {
                    hub.remove(&address, RemovalReason::Deregistered);
                }
                self.kept.forget(id);
                true
            }
            None => false,
        }
    }
}
