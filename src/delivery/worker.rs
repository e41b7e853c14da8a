//! The per-subscriber delivery loop: one message at a time, in order, with retries,
//! suspension of a subscriber that keeps failing, and probing until it recovers.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt as _;

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use tokio::sync::Semaphore;

use super::DeliveryConfig;
use super::resolver::blocked_reason;
use super::signature::sign;
use crate::hub::{
    Attempt, DeliveryError, Hub, Job, LiveDuration, Mailbox, MessageRecord, Outcome, RemovalReason,
    SubscriberShared, clip,
};
use crate::wire::{
    INSTANCE_HEADER, MESSAGE_ID_HEADER, TRACEPARENT_HEADER, TRACESTATE_HEADER, WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, webhook_id,
};

/// A subscriber's response body is read (so the connection can be reused) up to this
/// much; a subscriber that answers with more gets its connection closed instead.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

pub(super) struct Worker {
    hub: Hub,
    client: reqwest::Client,
    config: Arc<DeliveryConfig>,
    /// The dispatcher's whole-delivery timeout, which the console changes live.
    timeout: Arc<LiveDuration>,
    /// Shared with every subscriber at the same origin: a permit per request in flight.
    origin_limit: Arc<Semaphore>,
    /// The hub's instance id as a header value, made once rather than per request.
    instance: reqwest::header::HeaderValue,
    /// Messages that ended failed in a row; reaching `suspend_after` suspends.
    failed_in_row: u32,
    /// Wait before the next probe while suspended.
    probe_delay: Duration,
}

/// The delivery a worker is making, noted where its supervisor can see it.
pub(super) struct InHand {
    message: Arc<MessageRecord>,
    slot: usize,
}

/// Runs a subscriber's worker, and a new one whenever one panics: the delivery it had in
/// hand is recorded as failed with the panic's message, and the rest of the queue is
/// served by the new worker. Without this, a panic would leave that delivery pending for
/// ever and close the queue as if the subscriber had left.
pub(super) async fn supervise(mut mailbox: Mailbox, mut new_worker: impl FnMut() -> Worker) {
    let mut in_hand = None;
    loop {
        let worker = new_worker();
        let hub = worker.hub.clone();
        let run = AssertUnwindSafe(worker.run(&mut mailbox, &mut in_hand));
        let Err(panic) = run.catch_unwind().await else {
            return;
        };
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        let subscriber = &mailbox.subscriber;
        tracing::error!(address = %subscriber.address, "delivery worker panicked ({reason}); a new one takes over");
        if let Some(InHand { message, slot }) = in_hand.take() {
            let outcome = Outcome::Failed(DeliveryError::Crashed(reason));
            hub.finish(&message, slot, subscriber, outcome);
        }
    }
}

/// What to do after one attempt.
#[derive(Debug, PartialEq)]
enum Verdict {
    Done,
    Retry {
        after: Option<Duration>,
    },
    /// 410: the subscriber asked to be removed.
    Unsubscribe,
}

impl Worker {
    pub(super) fn new(
        hub: Hub,
        client: reqwest::Client,
        config: Arc<DeliveryConfig>,
        timeout: Arc<LiveDuration>,
        origin_limit: Arc<Semaphore>,
    ) -> Self {
        let instance = reqwest::header::HeaderValue::from_str(hub.instance())
            .expect("the instance id is hex digits");
        Self {
            hub,
            client,
            timeout,
            origin_limit,
            instance,
            probe_delay: config.probe_backoff.0,
            config,
            failed_in_row: 0,
        }
    }

    /// Delivers from `mailbox` until the subscriber leaves. Which delivery is under way is
    /// noted in `in_hand`, outside the worker, so that if the worker panics its supervisor
    /// can still record it.
    async fn run(mut self, mailbox: &mut Mailbox, in_hand: &mut Option<InHand>) {
        let subscriber = mailbox.subscriber.clone();
        // One waiter for the worker's whole life, rather than registering a new one with
        // the token twice per delivery.
        let cancelled = subscriber.cancel.clone().cancelled_owned();
        tokio::pin!(cancelled);
        loop {
            let job = tokio::select! {
                biased;
                () = &mut cancelled => break,
                job = mailbox.jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            *in_hand = Some(InHand {
                message: job.message.clone(),
                slot: job.slot,
            });
            #[cfg(test)]
            if job.message.body == tests::PANIC {
                panic!("a panic injected by a test");
            }
            let outcome = tokio::select! {
                biased;
                () = &mut cancelled => {
                    *in_hand = None;
                    self.abandon(&subscriber, &job);
                    break;
                }
                outcome = self.deliver(&subscriber, &job) => outcome,
            };
            *in_hand = None;
            let delivered = outcome.is_delivered();
            self.hub
                .finish(&job.message, job.slot, &subscriber, outcome);
            if delivered {
                self.resumed(&subscriber);
            } else {
                self.failed_in_row += 1;
                if self.failed_in_row >= self.config.suspend_after {
                    self.hub.set_suspended(&subscriber, true);
                }
            }
        }
        // Whatever is still queued will never be sent: say so for each message.
        mailbox.jobs.close();
        while let Ok(job) = mailbox.jobs.try_recv() {
            self.abandon(&subscriber, &job);
        }
    }

    fn resumed(&mut self, subscriber: &SubscriberShared) {
        self.failed_in_row = 0;
        self.probe_delay = self.config.probe_backoff.0;
        self.hub.set_suspended(subscriber, false);
    }

    fn abandon(&self, subscriber: &SubscriberShared, job: &Job) {
        let reason = subscriber.removal().unwrap_or(RemovalReason::Shutdown);
        let outcome = Outcome::Failed(DeliveryError::Removed(reason));
        self.hub.finish(&job.message, job.slot, subscriber, outcome);
    }

    /// Attempts one message until it is delivered, fails for good, or (while the
    /// subscriber is suspended) until a probe gets through.
    async fn deliver(&mut self, subscriber: &SubscriberShared, job: &Job) -> Outcome {
        let mut schedule = self.config.retry_schedule.iter();
        loop {
            let was_suspended = subscriber.is_suspended();
            if was_suspended {
                let wait = self.probe_delay;
                self.probe_delay = wait.saturating_mul(2).min(self.config.probe_backoff.1);
                tokio::select! {
                    () = subscriber.resume.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                if !subscriber.is_suspended() {
                    // Re-registered while we waited: a fresh start.
                    self.resumed(subscriber);
                    schedule = self.config.retry_schedule.iter();
                }
            }
            let at = SystemTime::now();
            let (outcome, after) = self.attempt(subscriber, job).await;
            self.hub.record_attempt(
                &job.message,
                job.slot,
                Attempt {
                    at,
                    outcome: outcome.clone(),
                },
            );
            match verdict(&outcome, after) {
                Verdict::Done => return outcome,
                Verdict::Unsubscribe => {
                    self.hub.remove(&subscriber.key, RemovalReason::Gone);
                    return outcome;
                }
                Verdict::Retry { .. } if subscriber.is_suspended() => {}
                Verdict::Retry { after } => {
                    let Some(base) = schedule.next() else {
                        return outcome;
                    };
                    let wait = after
                        .map(|after| after.min(self.config.max_retry_after))
                        .unwrap_or_else(|| jitter(*base));
                    tokio::select! {
                        () = subscriber.resume.notified() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One HTTP request. Returns how it went and, for a retryable answer, the wait the
    /// subscriber asked for in `Retry-After`.
    async fn attempt(
        &self,
        subscriber: &SubscriberShared,
        job: &Job,
    ) -> (Outcome, Option<Duration>) {
        let message = &job.message;
        let timeout = self.timeout.get();
        let mut request = self
            .client
            .post(Url::clone(&subscriber.target))
            .timeout(timeout)
            .header(MESSAGE_ID_HEADER, message.id)
            .header(INSTANCE_HEADER, self.instance.clone())
            // `Bytes` clones share the buffer: no per-subscriber copy of the payload.
            .body(message.body.clone());
        if let Some(content_type) = &message.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        // Each attempt is its own request, so its own child span: a new parent id.
        request = request.header(TRACEPARENT_HEADER, message.trace.child());
        if let Some(state) = &message.trace.state {
            request = request.header(TRACESTATE_HEADER, state);
        }
        for (name, value) in &message.headers {
            request = request.header(name, &value[..]);
        }
        if let Some(secret) = subscriber
            .secret()
            .or_else(|| self.config.signing_secret.clone())
        {
            let id = webhook_id(self.hub.instance(), message.id);
            let timestamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let signature = sign(&secret, &id, timestamp, &message.body);
            request = request
                .header(WEBHOOK_ID_HEADER, id)
                .header(WEBHOOK_TIMESTAMP_HEADER, timestamp)
                .header(WEBHOOK_SIGNATURE_HEADER, signature);
        }
        if let Some(reason) = self.loops_back(&subscriber.target).await {
            return (Outcome::Failed(DeliveryError::Blocked(reason)), None);
        }
        // Held until the body is read, so the connection is back in the pool for the next
        // worker at this origin. The wait for it is not part of the delivery's timeout.
        // (Nothing closes the semaphore, so acquiring fails never.)
        let _permit = self.origin_limit.acquire().await.ok();
        let started = Instant::now();
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => return (Outcome::Failed(self.classify(&err, timeout)), None),
        };
        let latency = started.elapsed();
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            let location = clip(header_text(response.headers(), LOCATION));
            let error = DeliveryError::Redirect { status, location };
            return (Outcome::Failed(error), None);
        }
        let after = retry_after(response.headers(), SystemTime::now());
        // Read the (normally tiny) body to its end so the connection goes back to the pool.
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > MAX_RESPONSE_BODY {
                break;
            }
        }
        let outcome = if response_ok(status) {
            Outcome::Delivered { status, latency }
        } else {
            Outcome::Failed(DeliveryError::Status { status, latency })
        };
        (outcome, after)
    }

    /// Why a delivery to `target` would reach this hub itself, whatever name leads there
    /// (an `/etc/hosts` alias, a port the hub has since moved to). The registration check
    /// knows only the spelling; this looks at the addresses, just before connecting.
    async fn loops_back(&self, target: &Url) -> Option<String> {
        let port = target.port_or_known_default()?;
        if self.hub.own_addr()?.port() != port {
            return None;
        }
        let addrs: Vec<SocketAddr> = match target.host()? {
            url::Host::Ipv4(ip) => vec![SocketAddr::from((ip, port))],
            url::Host::Ipv6(ip) => vec![SocketAddr::from((ip, port))],
            // A failed lookup is the request's own failure to report, not a loop.
            url::Host::Domain(name) => tokio::net::lookup_host((name, port)).await.ok()?.collect(),
        };
        let own = addrs.into_iter().find(|addr| self.hub.is_own_addr(*addr))?;
        Some(format!(
            "{target} reaches {own}, this hub's own address; delivering there would loop"
        ))
    }

    fn classify(&self, err: &reqwest::Error, timeout: Duration) -> DeliveryError {
        if let Some(reason) = blocked_reason(err) {
            return DeliveryError::Blocked(clip(reason));
        }
        if err.is_connect() {
            if err.is_timeout() {
                return DeliveryError::Connect(format!(
                    "no connection within {:?}",
                    self.config.connect_timeout
                ));
            }
            return DeliveryError::Connect(clip(root_cause(err)));
        }
        if err.is_timeout() {
            return DeliveryError::Timeout(timeout);
        }
        DeliveryError::Request(clip(root_cause(err)))
    }
}

fn response_ok(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Retry connection failures, timeouts, 408, 429 and 5xx; 410 unsubscribes; the rest
/// (other 4xx, redirects, refused targets) are final.
fn verdict(outcome: &Outcome, after: Option<Duration>) -> Verdict {
    match outcome {
        Outcome::Delivered { .. } => Verdict::Done,
        Outcome::Failed(error) => match error {
            DeliveryError::Status { status: 410, .. } => Verdict::Unsubscribe,
            DeliveryError::Status {
                status: 408 | 429 | 500..=599,
                ..
            } => Verdict::Retry { after },
            DeliveryError::Connect(_) | DeliveryError::Timeout(_) | DeliveryError::Request(_) => {
                Verdict::Retry { after: None }
            }
            DeliveryError::Status { .. }
            | DeliveryError::Redirect { .. }
            | DeliveryError::Blocked(_)
            | DeliveryError::QueueFull { .. }
            | DeliveryError::Removed(_)
            | DeliveryError::Crashed(_) => Verdict::Done,
        },
    }
}

/// `Retry-After` as delta-seconds or an HTTP date, relative to `now`.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `base` ± 20%, so that subscribers that failed together do not retry together.
fn jitter(base: Duration) -> Duration {
    let random = getrandom::u64().unwrap_or(u64::MAX / 2);
    let factor = 0.8 + 0.4 * (random as f64 / u64::MAX as f64);
    Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// The innermost error message, e.g. "Connection refused (os error 111)", which says more
/// than reqwest's outer "error sending request for url (...)".
fn root_cause(err: &reqwest::Error) -> String {
    anyhow::Chain::new(err)
        .last()
        .map_or_else(|| err.to_string(), ToString::to_string)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A payload that makes a worker panic, to test its supervision.
    pub(in crate::delivery) const PANIC: &[u8] = b"panic in the worker, please";

    #[test]
    fn a_worker_that_panics_is_replaced_and_its_delivery_recorded() {
        use crate::delivery::{DeliveryConfig, Dispatcher};
        use crate::hub::{DeliveryState, Draft, HubConfig, Source};

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            let receiver = axum::Router::new().route(
                "/event",
                axum::routing::post(|| async { axum::http::StatusCode::OK }),
            );
            tokio::spawn(async move { axum::serve(listener, receiver).await });
            let dispatcher =
                Dispatcher::new(DeliveryConfig::default(), tokio::runtime::Handle::current());
            let hub = Hub::new(
                HubConfig::default(),
                Arc::new(Arc::new(dispatcher.unwrap())),
            );
            hub.subscribe(&address).unwrap();
            let publish =
                |body: &'static [u8]| hub.publish(Draft::new(body), Source::Console).unwrap().id;
            let (crashed, after) = (publish(PANIC), publish(b"fine"));
            let state = |id| hub.message(id).unwrap().deliveries()[0].state.clone();
            let deadline = Instant::now() + Duration::from_secs(10);
            while state(after) == DeliveryState::Pending && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let DeliveryState::Done(Outcome::Failed(DeliveryError::Crashed(reason))) =
                state(crashed)
            else {
                panic!("{:?}", state(crashed));
            };
            assert!(reason.contains("injected"), "{reason}");
            assert!(
                matches!(state(after), DeliveryState::Done(Outcome::Delivered { .. })),
                "the next message was not delivered by a new worker: {:?}",
                state(after)
            );
        });
    }

    fn failed(status: u16) -> Outcome {
        Outcome::Failed(DeliveryError::Status {
            status,
            latency: Duration::ZERO,
        })
    }

    #[test]
    fn what_is_retried() {
        let after = Some(Duration::from_secs(1));
        for status in [408, 429, 500, 502, 503, 599] {
            assert_eq!(
                verdict(&failed(status), after),
                Verdict::Retry { after },
                "{status}"
            );
        }
        for status in [400, 401, 404, 409, 422] {
            assert_eq!(verdict(&failed(status), None), Verdict::Done, "{status}");
        }
        assert_eq!(verdict(&failed(410), None), Verdict::Unsubscribe);
        let refused = Outcome::Failed(DeliveryError::Connect("refused".into()));
        assert_eq!(verdict(&refused, None), Verdict::Retry { after: None });
        let timeout = Outcome::Failed(DeliveryError::Timeout(Duration::from_secs(1)));
        assert_eq!(verdict(&timeout, None), Verdict::Retry { after: None });
        let redirect = Outcome::Failed(DeliveryError::Redirect {
            status: 302,
            location: "/x".into(),
        });
        assert_eq!(verdict(&redirect, None), Verdict::Done);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        headers.insert(RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_secs(10);
        for _ in 0..1000 {
            let wait = jitter(base);
            assert!(
                wait >= Duration::from_secs(8) && wait <= Duration::from_secs(12),
                "{wait:?}"
            );
        }
    }
}
