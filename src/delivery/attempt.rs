//! One delivery attempt: one HTTP request to a subscriber, how it ended, and whether
//! it is worth another.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use reqwest::Url;
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION, PROXY_AUTHORIZATION, RETRY_AFTER,
};
use tokio::sync::Semaphore;

use super::DeliveryConfig;
use super::resolver::blocked_reason;
use super::signature::sign;
use crate::hub::{
    Answer, DeliveryError, Exchange, Headers, Hub, LiveDuration, MAX_KEPT_BODY, MAX_STORED_TEXT,
    MessageRecord, Outcome, SubscriberShared, clip,
};
use crate::wire::{
    INSTANCE_HEADER, MESSAGE_ID_HEADER, TOPIC_HEADER, TRACEPARENT_HEADER, TRACESTATE_HEADER,
    WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, webhook_id,
};

/// How an attempt went: its outcome, the wait a `Retry-After` asked for, and what was
/// sent and answered.
pub(super) struct Tried {
    pub(super) outcome: Outcome,
    pub(super) after: Option<Duration>,
    pub(super) exchange: Option<Exchange>,
}

impl Tried {
    fn failed(error: DeliveryError, exchange: Option<Exchange>) -> Self {
        Self {
            outcome: Outcome::Failed(error),
            after: None,
            exchange,
        }
    }
}

/// What every attempt for one subscriber needs, shared by its attempts in flight.
pub(super) struct Sender {
    pub(super) hub: Hub,
    client: reqwest::Client,
    pub(super) config: Arc<DeliveryConfig>,
    /// The dispatcher's whole-delivery timeout, which the console changes live.
    timeout: Arc<LiveDuration>,
    /// Shared with every subscriber at the same origin: a permit per request in flight.
    origin_limit: Arc<Semaphore>,
}

/// What to do after one attempt.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Done,
    Retry {
        after: Option<Duration>,
    },
    /// 410: the subscriber asked to be removed.
    Unsubscribe,
}

impl Sender {
    pub(super) fn new(
        hub: Hub,
        client: reqwest::Client,
        config: Arc<DeliveryConfig>,
        timeout: Arc<LiveDuration>,
        origin_limit: Arc<Semaphore>,
    ) -> Self {
        Self {
            hub,
            client,
            config,
            timeout,
            origin_limit,
        }
    }

    /// One HTTP request, and what was sent and answered. The answer's body is read (so the
    /// connection can be reused) and kept up to [`MAX_KEPT_BODY`]; a subscriber that
    /// answers with more gets its connection closed instead.
    pub(super) async fn attempt(
        &self,
        subscriber: &SubscriberShared,
        message: &MessageRecord,
    ) -> Tried {
        if let Some(reason) = self.loops_back(&subscriber.target).await {
            return Tried::failed(DeliveryError::Blocked(reason), None);
        }
        // Held until the body is read, so the connection is back in the pool for the next
        // worker at this origin. The wait for it is not part of the delivery's timeout, and
        // comes before the request is signed, so the signature's timestamp is fresh however
        // long the wait. (Nothing closes the semaphore, so acquiring fails never.)
        let _permit = self.origin_limit.acquire().await.ok();
        let timeout = self.timeout.get();
        let mut request = self
            .client
            .post(Url::clone(&subscriber.target))
            .timeout(timeout)
            .header(MESSAGE_ID_HEADER, message.id)
            // Read per request, not once per worker: a clustered hub learns its
            // cluster's id after its workers may have started.
            .header(INSTANCE_HEADER, self.hub.instance())
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
        if let Some(topic) = &message.topic {
            request = request.header(TOPIC_HEADER, topic.as_str());
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
        let request = match request.build() {
            Ok(request) => request,
            Err(err) => return Tried::failed(self.classify(&err, timeout), None),
        };
        let mut exchange = Exchange {
            method: "POST",
            url: subscriber.shown_target.clone(),
            request_headers: shown_headers(request.headers()),
            response: None,
            not_kept: false,
        };
        let started = Instant::now();
        let mut response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(err) => return Tried::failed(self.classify(&err, timeout), Some(exchange)),
        };
        let latency = started.elapsed();
        let status = response.status().as_u16();
        let mut answer = Answer {
            status,
            headers: shown_headers(response.headers()),
            ..Answer::default()
        };
        if response.status().is_redirection() {
            let location = clip(header_text(response.headers(), LOCATION));
            exchange.response = Some(answer);
            let error = DeliveryError::Redirect { status, location };
            return Tried::failed(error, Some(exchange));
        }
        let after = retry_after(response.headers(), SystemTime::now());
        // Read the (normally tiny) body to its end so the connection goes back to the pool.
        let mut body = BytesMut::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = MAX_KEPT_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                answer.truncated = true;
                break;
            }
        }
        answer.body = body.freeze();
        exchange.response = Some(answer);
        let outcome = if response_ok(status) {
            Outcome::Delivered { status, latency }
        } else {
            Outcome::Failed(DeliveryError::Status { status, latency })
        };
        Tried {
            outcome,
            after,
            exchange: Some(exchange),
        }
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
pub(super) fn verdict(outcome: &Outcome, after: Option<Duration>) -> Verdict {
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
pub(super) fn jitter(base: Duration) -> Duration {
    let random = getrandom::u64().unwrap_or(u64::MAX / 2);
    let factor = 0.8 + 0.4 * (random as f64 / u64::MAX as f64);
    Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Headers as the inspector keeps them: values as text cut to 2 KiB, credentials hidden.
fn shown_headers(headers: &HeaderMap) -> Headers {
    Headers::from_pairs(headers.iter().map(|(name, value)| {
        let value = match value.to_str() {
            // The usual case, visible ASCII, borrows: this runs twice per attempt.
            Ok(text) if text.len() <= MAX_STORED_TEXT => Cow::Borrowed(text),
            _ => Cow::Owned(clip(String::from_utf8_lossy(value.as_bytes()).into_owned())),
        };
        let value = if name == AUTHORIZATION || name == PROXY_AUTHORIZATION {
            let scheme = value.split(' ').next().unwrap_or("");
            Cow::Owned(format!("{scheme} ***"))
        } else {
            value
        };
        (name.as_str(), value)
    }))
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// The innermost error message, e.g. "Connection refused (os error 111)", which says more
/// than reqwest's outer "error sending request for url (...)".
pub(crate) fn root_cause(err: &reqwest::Error) -> String {
    anyhow::Chain::new(err)
        .last()
        .map_or_else(|| err.to_string(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

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
