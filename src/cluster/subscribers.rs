//! The subscribers' watcher: what the subscribers' bucket holds, and every change to it,
//! applied to this hub through its cluster port, as made elsewhere (so that it is not
//! shared back).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use futures_util::StreamExt as _;

use super::codec::{self, SharedSubscriber};
use super::{Links, State};
use crate::hub::{ClusterPort, Subscription};

/// Applies what the subscribers' bucket holds, and every change to it, to this hub.
pub(super) async fn watch_subscribers(state: Arc<State>, links: Links) -> anyhow::Result<()> {
    let mut entries = links.subscribers.watch_with_history(">").await?;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<SharedSubscriber>(&entry.value) {
                Ok(shared) => {
                    let key: Arc<str> = shared.address.as_str().into();
                    state.registered.lock().insert(key, shared.registered_at());
                    apply(&state.hub, &shared);
                }
                Err(error) => {
                    tracing::warn!(%error, "a subscriber in the cluster's bucket does not parse")
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                if let Some(address) = state.hub.address_named(&entry.key, codec::name_of) {
                    state.hub.remove(&address);
                    state.registered.lock().remove(&address);
                    state.deliverers.lock().remove(&*address);
                }
            }
        }
    }
    Ok(())
}

/// Registers or refreshes a subscriber as another instance (or this one) shared it.
fn apply(hub: &ClusterPort, shared: &SharedSubscriber) {
    let lease = shared.lease().unwrap_or_else(|| hub.ttl());
    if outlived(shared, lease, SystemTime::now()) {
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
        // Shared, so kept by the bucket: never one of this instance's test subscribers.
        ephemeral: false,
    };
    if let Err(error) = hub.apply(subscription, shared.paused, shared.pinned) {
        tracing::warn!(address = %shared.address, %error, "a shared subscriber is refused here");
    }
}

/// Whether a shared entry was last refreshed longer ago than `lease`, at `now`: a pinned
/// subscriber never is.
fn outlived(shared: &SharedSubscriber, lease: Duration, now: SystemTime) -> bool {
    let age = now.duration_since(shared.seen_at()).unwrap_or_default();
    age > lease && !shared.pinned
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::store::codec::millis;

    fn seen(at: SystemTime, pinned: bool) -> SharedSubscriber {
        SharedSubscriber {
            address: "127.0.0.1:9".to_owned(),
            topics: Vec::new(),
            lease_ms: None,
            ordered: false,
            max_in_flight: 1,
            secret: None,
            registered_ms: millis(at),
            seen_ms: millis(at),
            paused: false,
            pinned,
        }
    }

    #[test]
    fn an_entry_is_applied_until_its_lease_runs_out() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let lease = Duration::from_secs(30);
        let secs = Duration::from_secs;
        assert!(!outlived(&seen(now - secs(10), false), lease, now));
        assert!(!outlived(&seen(now - secs(30), false), lease, now));
        assert!(outlived(&seen(now - secs(31), false), lease, now));
        // Seen "later" than now (another instance's clock runs ahead): as good as fresh.
        assert!(!outlived(&seen(now + secs(5), false), lease, now));
    }

    #[test]
    fn a_pinned_entry_is_applied_however_old() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let long_ago = now - Duration::from_secs(24 * 60 * 60);
        assert!(!outlived(
            &seen(long_ago, true),
            Duration::from_secs(30),
            now
        ));
    }
}
