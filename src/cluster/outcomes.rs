//! Outcomes across the cluster: this instance's told to the others through the outcomes
//! stream, and theirs read back into its log, so that every console shows every delivery.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::codec::{self, SharedOutcome};
use super::{Links, OUTCOME_SUBJECT, OUTCOMES, State};

/// Outcomes gathered into one stream message: for at most this long, at most this many.
const OUTCOMES_EVERY: Duration = Duration::from_millis(20);
const OUTCOMES_PER_MESSAGE: usize = 512;

/// Records the deliveries other instances made, and who made each subscriber's last.
pub(super) async fn outcomes(state: Arc<State>, links: Links) -> anyhow::Result<()> {
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
pub(super) async fn tell_outcomes(state: Arc<State>, mut outcomes: mpsc::Receiver<SharedOutcome>) {
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
