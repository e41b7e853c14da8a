//! Bursts: N messages from a template, at R a second or as fast as the hub takes them,
//! published by a task on the runtime (never the GUI thread), with live progress and
//! cancel. The console's Burst and `/api/v1/bursts` share one registry. The task only
//! paces and publishes: each message is rendered on the render thread (`render`), so
//! the runtime's workers, which deliver, never run template code.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use thiserror::Error;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::render::Renderer;
use crate::hub::{Draft, Hub, MessageId, Source, Topic};
use crate::workbench::template::Template;

/// The most messages one burst sends.
pub const MAX_COUNT: u64 = 1_000_000;
/// The fastest rate one may ask for, per second.
pub const MAX_RATE: f64 = 100_000.0;
/// The slowest: one message in 1,000 s (slower would overflow the pacing's durations).
pub const MIN_RATE: f64 = 0.001;
/// Bursts running at once.
pub const MAX_RUNNING: usize = 8;
/// Finished bursts kept for their progress to be read.
const KEPT: usize = 64;
/// How long a progress count is reused: counting reads every message of the burst.
const RECOUNT_EVERY: Duration = Duration::from_millis(200);

/// What a burst sends.
#[derive(Debug)]
pub struct BurstSpec {
    pub count: u64,
    /// Messages a second; `None`: as fast as the hub accepts them.
    pub rate: Option<f64>,
    pub template: Template,
    pub content_type: Option<String>,
    pub topic: Option<Topic>,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum BurstError {
    #[error("count must be from 1 to {MAX_COUNT}, not {0}")]
    Count(u64),
    #[error(
        "rate must be a number of messages a second above 0 and at most {MAX_RATE}, or left out for as fast as possible; not {0}"
    )]
    Rate(f64),
    #[error("{MAX_RUNNING} bursts are running already; wait for one to finish or cancel one")]
    Busy,
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("no thread to render templates on: {0}")]
    NoRenderer(String),
}

/// Where a burst stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstState {
    Running,
    Done,
    Cancelled,
    /// Stopped early: its template failed, or the hub refused it.
    Failed,
}

impl BurstState {
    pub fn label(self) -> &'static str {
        match self {
            BurstState::Running => "running",
            BurstState::Done => "done",
            BurstState::Cancelled => "cancelled",
            BurstState::Failed => "failed",
        }
    }
}

/// A burst's progress, as the console and the API show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub id: u64,
    pub state: BurstState,
    pub count: u64,
    pub rate: Option<f64>,
    /// Tried so far (accepted and refused).
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    /// Of the deliveries of the accepted messages that memory still holds.
    pub delivered: u64,
    pub failed: u64,
    pub pending: u64,
    pub started_at: SystemTime,
    pub finished_at: Option<SystemTime>,
    /// Why it stopped early, or the last refusal.
    pub error: Option<String>,
}

/// One burst.
#[derive(Debug)]
pub struct Burst {
    pub id: u64,
    count: u64,
    rate: Option<f64>,
    sent: AtomicU64,
    refused: AtomicU64,
    /// The ids of what was accepted, in order, as runs of consecutive ids (a burst's ids
    /// run on but for other publishes between): a million of them cost a few runs.
    accepted: Mutex<Vec<(MessageId, MessageId)>>,
    accepted_count: AtomicU64,
    state: Mutex<(BurstState, Option<SystemTime>, Option<String>)>,
    started_at: SystemTime,
    cancel: CancellationToken,
    /// Cancelled once it has stopped, for whoever waits on that.
    done: CancellationToken,
    /// The delivery counts, as last counted, and when.
    counted: Mutex<Option<(Instant, [u64; 3])>>,
}

impl Burst {
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub fn is_running(&self) -> bool {
        self.state.lock().0 == BurstState::Running
    }

    /// Resolves once it has stopped, however it stopped.
    pub async fn stopped(&self) {
        self.done.cancelled().await;
    }

    /// Where it stands; the delivery counts are at most [`RECOUNT_EVERY`] old.
    pub fn progress(&self, hub: &Hub) -> Progress {
        let (state, finished_at, error) = self.state.lock().clone();
        let [delivered, failed, pending] = self.deliveries(hub);
        Progress {
            id: self.id,
            state,
            count: self.count,
            rate: self.rate,
            sent: self.sent.load(Ordering::Relaxed),
            accepted: self.accepted_count.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            delivered,
            failed,
            pending,
            started_at: self.started_at,
            finished_at,
            error,
        }
    }

    fn deliveries(&self, hub: &Hub) -> [u64; 3] {
        if let Some((at, counts)) = *self.counted.lock()
            && at.elapsed() < RECOUNT_EVERY
        {
            return counts;
        }
        let runs = self.accepted.lock().clone();
        // Memory only, under one lock: a count must never read the disk (the console
        // calls it per frame).
        let summary = hub.delivery_counts(&runs);
        let counts = [
            summary.delivered as u64,
            summary.failed as u64,
            summary.pending as u64,
        ];
        *self.counted.lock() = Some((Instant::now(), counts));
        counts
    }

    fn finish(&self, state: BurstState, error: Option<String>) {
        let mut current = self.state.lock();
        let error = error.or_else(|| current.2.take());
        *current = (state, Some(SystemTime::now()), error);
        drop(current);
        self.done.cancel();
    }
}

/// Every burst started, running or kept.
#[derive(Debug, Default)]
pub struct Bursts {
    next: AtomicU64,
    list: Mutex<VecDeque<Arc<Burst>>>,
    /// The render thread every burst shares, started with the first burst.
    renderer: Mutex<Option<Arc<Renderer>>>,
}

impl Bursts {
    /// Checks `spec` and starts it on `runtime`.
    pub fn start(
        &self,
        hub: &Hub,
        runtime: &Handle,
        spec: BurstSpec,
    ) -> Result<Arc<Burst>, BurstError> {
        if !(1..=MAX_COUNT).contains(&spec.count) {
            return Err(BurstError::Count(spec.count));
        }
        if let Some(rate) = spec.rate
            && !(MIN_RATE..=MAX_RATE).contains(&rate)
        {
            return Err(BurstError::Rate(rate));
        }
        if hub.is_stopping() {
            return Err(BurstError::ShuttingDown);
        }
        let renderer = self.renderer()?;
        let burst = {
            let mut list = self.list.lock();
            if list.iter().filter(|b| b.is_running()).count() >= MAX_RUNNING {
                return Err(BurstError::Busy);
            }
            let burst = Arc::new(Burst {
                id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
                count: spec.count,
                rate: spec.rate,
                sent: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                accepted: Mutex::new(Vec::new()),
                accepted_count: AtomicU64::new(0),
                state: Mutex::new((BurstState::Running, None, None)),
                started_at: SystemTime::now(),
                cancel: hub.stopping().child_token(),
                done: CancellationToken::new(),
                counted: Mutex::new(None),
            });
            list.push_back(burst.clone());
            // Forget the oldest finished ones beyond what is kept.
            while list.len() > KEPT + MAX_RUNNING {
                let Some(done) = list.iter().position(|b| !b.is_running()) else {
                    break;
                };
                list.remove(done);
            }
            burst
        };
        runtime.spawn(run(burst.clone(), hub.clone(), spec, renderer));
        Ok(burst)
    }

    fn renderer(&self) -> Result<Arc<Renderer>, BurstError> {
        let mut renderer = self.renderer.lock();
        if let Some(running) = &*renderer {
            return Ok(running.clone());
        }
        let started =
            Arc::new(Renderer::start().map_err(|e| BurstError::NoRenderer(e.to_string()))?);
        *renderer = Some(started.clone());
        Ok(started)
    }

    pub fn get(&self, id: u64) -> Option<Arc<Burst>> {
        self.list.lock().iter().find(|b| b.id == id).cloned()
    }
}

/// Marks a burst failed if its task ends without saying how (it panicked), so that it
/// never looks running for ever.
struct Finished(Arc<Burst>);

impl Drop for Finished {
    fn drop(&mut self) {
        if self.0.is_running() {
            self.0.finish(
                BurstState::Failed,
                Some("its task stopped unexpectedly".into()),
            );
        }
    }
}

impl Burst {
    fn accept(&self, id: MessageId) {
        let mut runs = self.accepted.lock();
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => runs.push((id, id)),
        }
        self.accepted_count.fetch_add(1, Ordering::Relaxed);
    }
}

async fn run(burst: Arc<Burst>, hub: Hub, spec: BurstSpec, renderer: Arc<Renderer>) {
    let _finished = Finished(burst.clone());
    let every = spec.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let started = tokio::time::Instant::now();
    // Paced from the start, not from the last send, so that the rate holds however long
    // each publish took. (At most 1,000 s apart and a million messages: no overflow.)
    let due = |seq: u64| every.map(|every| started + every.mul_f64((seq - 1) as f64));
    let template = Arc::new(spec.template);
    // The next message, rendering while this one is published.
    let mut next = None;
    for seq in 1..=spec.count {
        if let Some(due) = due(seq) {
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = burst.cancel.cancelled() => break,
            }
        }
        if burst.cancel.is_cancelled() {
            break;
        }
        let rendering = next
            .take()
            .unwrap_or_else(|| renderer.render(&template, seq));
        let rendered = tokio::select! {
            rendered = rendering => rendered,
            () = burst.cancel.cancelled() => break,
        };
        let body = match rendered {
            Ok(Ok(body)) => body,
            Ok(Err(err)) => {
                burst.finish(BurstState::Failed, Some(format!("message {seq}: {err}")));
                return;
            }
            Err(_) => {
                let error = format!("message {seq}: the render thread is gone");
                burst.finish(BurstState::Failed, Some(error));
                return;
            }
        };
        // Only one that is due already: rendered early, its now() would be early too.
        if seq < spec.count && due(seq + 1).is_none_or(|due| due <= tokio::time::Instant::now()) {
            next = Some(renderer.render(&template, seq + 1));
        }
        let draft = Draft {
            body: body.into(),
            content_type: spec.content_type.clone(),
            topic: spec.topic.clone(),
            ..Draft::default()
        };
        // Not cut off by a cancel: once accepted it counts, and the wait is a commit.
        let published = hub.publish_when_ready(draft, Source::Burst(burst.id)).await;
        burst.sent.fetch_add(1, Ordering::Relaxed);
        match published {
            Ok(published) => burst.accept(published.id),
            Err(err) => {
                burst.refused.fetch_add(1, Ordering::Relaxed);
                burst.state.lock().2 = Some(err.to_string());
                if hub.is_stopping() {
                    break;
                }
            }
        }
    }
    let state = if burst.sent.load(Ordering::Relaxed) == spec.count {
        BurstState::Done
    } else {
        BurstState::Cancelled
    };
    burst.finish(state, None);
}
