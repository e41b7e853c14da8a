//! The hub's [`Relay`] in cluster mode: a publish goes into the stream, and is answered
//! once JetStream has stored it; a subscriber change made here is queued for the bucket.

use std::sync::Weak;
use std::time::Duration;

use super::State;
use super::sharing::Sharer;
use crate::hub::{Outgoing, Relay, RelayError, Relayed, SubscriberChange};

/// How long a publish waits for JetStream's acknowledgement before it is refused.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Relayer {
    /// Weak: the state holds the hub, which holds this relay.
    pub(super) state: Weak<State>,
    pub(super) sharer: Sharer,
}

impl Relay for Relayer {
    fn subscriber_changed(&self, change: SubscriberChange) {
        self.sharer.share(change);
    }

    fn publish(&self, message: Outgoing) -> Relayed {
        let state = self.state.upgrade();
        Box::pin(async move {
            let unavailable = |why: String| RelayError::Unavailable(why);
            let state = state
                .ok_or_else(|| unavailable("the instance is starting or stopping".to_owned()))?;
            let links = state
                .links
                .get()
                .ok_or_else(|| unavailable("not connected to NATS yet".to_owned()))?;
            // While the client reconnects it would queue the publish: refused at once
            // instead, so that nothing is taken that might not be kept.
            if !state.connection.lock().connected {
                return Err(unavailable("the connection to NATS is lost".to_owned()));
            }
            let (subject, headers, body) = links.bridge.encode(&message);
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
