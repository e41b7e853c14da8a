//! The feed: the message stream read into this instance's log, so that every instance
//! shows the same messages under the same ids.

use std::sync::Arc;
use std::time::SystemTime;

use async_nats::jetstream::consumer;
use futures_util::StreamExt as _;

use super::bridge::Checked;
use super::{Links, State};
use crate::hub::{MessageId, MessageRecord};

/// Reads the shared log into this instance's: the newest `log_capacity` messages, then
/// every new one, in the stream's order.
pub(super) async fn feed(state: Arc<State>, links: Links) -> anyhow::Result<()> {
    let mut stream = links.messages.clone();
    let last = stream.info().await?.state.last_sequence;
    // Where this feed left off (a delivery loop may have logged newer messages since,
    // which says nothing of those in between).
    let read = state.fed.load(std::sync::atomic::Ordering::Relaxed);
    let capacity = state.config.log_capacity as u64;
    let start = first_to_read(read, last, capacity);
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
        match links.bridge.check(&message) {
            Ok(checked) => {
                admit(&state, &checked, id, at);
            }
            // Said once per instance, here; the delivery loops pass it over quietly.
            Err(refused) => tracing::warn!(id, "{refused}"),
        }
        state.fed.store(id, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// The first message the feed reads: the one after where it left off (`read`), and none
/// older than the newest `capacity` of the stream's (`last` the newest).
fn first_to_read(read: u64, last: u64, capacity: u64) -> u64 {
    read.max(last.saturating_sub(capacity)) + 1
}

/// Logs a message read from the stream (its sequence `id`, stored at `at`) as this
/// instance's log holds it: the feed's way, and a delivery loop's when it reads one first.
pub(super) fn admit(
    state: &State,
    message: &Checked<'_>,
    id: MessageId,
    at: SystemTime,
) -> Arc<MessageRecord> {
    let incoming = message.decode();
    state
        .hub
        .admit(id, at, incoming.draft, incoming.source, incoming.replay_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_instance_reads_the_newest_messages_its_log_holds() {
        assert_eq!(first_to_read(0, 5_000, 1_000), 4_001);
        // A stream shorter than the log is read from its start.
        assert_eq!(first_to_read(0, 10, 1_000), 1);
        assert_eq!(first_to_read(0, 0, 1_000), 1);
    }

    #[test]
    fn a_feed_opened_again_goes_on_where_it_left_off() {
        assert_eq!(first_to_read(4_500, 5_000, 1_000), 4_501);
        assert_eq!(first_to_read(5_000, 5_000, 1_000), 5_001);
        // Unless it fell further behind than its log holds: the oldest are skipped.
        assert_eq!(first_to_read(100, 5_000, 1_000), 4_001);
    }
}
