//! Keep-alive expiry: one task for the whole hub, spawned with it.

use std::sync::Weak;
use std::time::Instant;

use super::{Hub, Shared};

/// Every reap interval, removes the subscribers whose keep-alive is older than their
/// lease, until shutdown begins or the hub is gone. The interval is read afresh each
/// round, so changing it takes effect without a restart.
pub(super) async fn run(shared: Weak<Shared>) {
    loop {
        // Only a weak handle across the wait, so the reaper never keeps a hub alive.
        let Some((every, stopping)) = shared
            .upgrade()
            .map(|shared| (shared.reap_every.get(), shared.stopping.clone()))
        else {
            return;
        };
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        Hub { shared }.expire(Instant::now());
    }
}
