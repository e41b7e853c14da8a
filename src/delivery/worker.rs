//! The per-subscriber delivery loop.

use std::sync::Arc;
use std::time::Instant;

use reqwest::header::{CONTENT_TYPE, LOCATION};

use super::DeliveryConfig;
use crate::hub::{
    DeliveryError, DeliveryStatus, Hub, Job, Mailbox, RemovalReason, SubscriberShared,
};

/// A subscriber's response body is read (so the connection can be reused) up to this
/// much; a subscriber that answers with more gets its connection closed instead.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

pub(super) struct Worker {
    pub(super) hub: Hub,
    pub(super) client: reqwest::Client,
    pub(super) config: Arc<DeliveryConfig>,
}

impl Worker {
    pub(super) async fn run(self, mut mailbox: Mailbox) {
        let subscriber = mailbox.subscriber.clone();
        let cancelled = subscriber.cancel.clone();
        loop {
            let job = tokio::select! {
                biased;
                () = cancelled.cancelled() => break,
                job = mailbox.jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            let status = tokio::select! {
                biased;
                () = cancelled.cancelled() => {
                    self.abandon(&subscriber, job, 1);
                    break;
                }
                status = self.post(&subscriber, &job) => status,
            };
            self.hub
                .finish(&job.message, job.slot, &subscriber, status, 1);
        }
        // Whatever is still queued will never be sent: say so for each message.
        mailbox.jobs.close();
        while let Ok(job) = mailbox.jobs.try_recv() {
            self.abandon(&subscriber, job, 0);
        }
    }

    fn abandon(&self, subscriber: &SubscriberShared, job: Job, attempts: u32) {
        let reason = subscriber.removal().unwrap_or(RemovalReason::Shutdown);
        let status = DeliveryStatus::Failed(DeliveryError::Removed(reason));
        self.hub
            .finish(&job.message, job.slot, subscriber, status, attempts);
    }

    async fn post(&self, subscriber: &SubscriberShared, job: &Job) -> DeliveryStatus {
        let message = &job.message;
        let mut request = self
            .client
            .post(subscriber.target.clone())
            .header("x-herald-message-id", message.id)
            // `Bytes` clones share the buffer: no per-subscriber copy of the payload.
            .body(message.body.clone());
        if let Some(content_type) = &message.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let started = Instant::now();
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => return DeliveryStatus::Failed(self.classify(&err)),
        };
        let latency = started.elapsed();
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                .unwrap_or_default();
            return DeliveryStatus::Failed(DeliveryError::Redirect {
                status: status.as_u16(),
                location,
            });
        }
        // Read the (normally tiny) body to its end so the connection goes back to the pool.
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > MAX_RESPONSE_BODY {
                break;
            }
        }
        if status.is_success() {
            DeliveryStatus::Delivered {
                status: status.as_u16(),
                latency,
            }
        } else {
            DeliveryStatus::Failed(DeliveryError::Status {
                status: status.as_u16(),
                latency,
            })
        }
    }

    fn classify(&self, err: &reqwest::Error) -> DeliveryError {
        if err.is_connect() {
            if err.is_timeout() {
                return DeliveryError::Connect(format!(
                    "no connection within {:?}",
                    self.config.connect_timeout
                ));
            }
            return DeliveryError::Connect(root_cause(err));
        }
        if err.is_timeout() {
            return DeliveryError::Timeout(self.config.timeout);
        }
        DeliveryError::Request(root_cause(err))
    }
}

/// The innermost error message, e.g. "Connection refused (os error 111)", which says more
/// than reqwest's outer "error sending request for url (...)".
fn root_cause(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
