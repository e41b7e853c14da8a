//! Keep-alive expiry: one task for the whole hub.

use tokio_util::sync::CancellationToken;

use super::Hub;

/// Every reap interval, removes the subscribers whose keep-alive is older than their
/// lease, until `stop` is cancelled. Both periods are read afresh each round, so changing
/// them takes effect without a restart.
pub async fn reap_expired(hub: Hub, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(hub.reap_every()) => {
                hub.expire(std::time::Instant::now());
            }
        }
    }
}
