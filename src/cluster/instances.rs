//! The instances' announcements: this instance's, put in the instances' bucket every few
//! seconds, and the others' read from it for the cluster's listing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::kv;
use futures_util::StreamExt as _;

use super::codec::{self, SharedInstance};
use super::{INSTANCE_TTL, Links, State};

/// How often an instance announces itself (it is gone `INSTANCE_TTL` after its last).
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);

/// Announces this instance, and keeps the list of the others.
pub(super) async fn instances(state: Arc<State>, links: Links) -> anyhow::Result<()> {
    let started_ms = crate::store::codec::millis(SystemTime::now());
    let me = state.config.name.clone();
    let announce = {
        let state = state.clone();
        let links = links.clone();
        async move {
            loop {
                let instance = SharedInstance {
                    name: me.clone(),
                    url: state.url.lock().clone(),
                    started_ms,
                };
                let value = serde_json::to_vec(&instance)?;
                links
                    .instances
                    .put(codec::name_of(&me), value.into())
                    .await?;
                tokio::time::sleep(ANNOUNCE_EVERY).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        }
    };
    let watch = async {
        let mut entries = links.instances.watch_with_history(">").await?;
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            if entry.operation != kv::Operation::Put {
                continue;
            }
            if let Ok(instance) = serde_json::from_slice::<SharedInstance>(&entry.value) {
                // An announcement read from history is as old as its entry.
                let age = SystemTime::now()
                    .duration_since(SystemTime::from(entry.created))
                    .unwrap_or_default();
                let seen = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                let mut known = state.instances.lock();
                known.insert(instance.name.clone(), (instance, seen));
                known.retain(|_, (_, seen)| seen.elapsed() < INSTANCE_TTL * 6);
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::try_join!(announce, watch)?;
    Ok(())
}
