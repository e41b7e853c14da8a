//! Keep-alive expiry: one task for the whole hub.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Hub;

/// Every `every`, removes the subscribers whose keep-alive is older than the hub's TTL,
/// until `stop` is cancelled.
pub async fn reap_expired(hub: Hub, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                hub.expire(std::time::Instant::now());
            }
        }
    }
}
