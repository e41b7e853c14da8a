//! Joining the cluster: the connection, the streams and buckets it needs (made if they
//! are not there), and `retrying`, which runs a task again whenever it fails.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use super::bridge::Bridge;
use super::{INSTANCE_TTL, Links, OUTCOME_SUBJECT, OUTCOMES, State, codec, identity};

const STREAM: &str = "HERALD";
const SUBSCRIBERS: &str = "herald_subscribers";
const INSTANCES: &str = "herald_instances";
/// Subscribers' entries outlive any lease (the longest is a day); their expiry is the
/// hubs' own, and an entry left by a subscriber that stopped is skipped by its age.
const SUBSCRIBER_MAX_AGE: Duration = Duration::from_secs(25 * 60 * 60);
/// Messages the stream keeps at most, and for how long: the shared log's retention.
const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Bytes the message stream keeps at most (the oldest go first).
const STREAM_MAX_BYTES: i64 = 1 << 30;
const OUTCOMES_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

pub(super) async fn connect(state: &Arc<State>) -> anyhow::Result<Links> {
    let events = Arc::downgrade(state);
    let client = async_nats::ConnectOptions::new()
        .name(format!("herald {}", state.config.name))
        .connection_timeout(Duration::from_secs(2))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let Some(state) = events.upgrade() else {
                    return;
                };
                let mut connection = state.connection.lock();
                match event {
                    // Joined only once the streams, the buckets and the cluster's
                    // identity are there (`run` says so then): until then the hub still
                    // has the name it started with, and publishes are refused.
                    async_nats::Event::Connected if state.links.get().is_some() => {
                        connection.connected = true;
                        connection.error = None;
                    }
                    async_nats::Event::Disconnected => connection.connected = false,
                    async_nats::Event::ClientError(error) => {
                        connection.error = Some(error.to_string());
                    }
                    _ => {}
                }
            }
        })
        .connect(state.config.url.as_str())
        .await?;
    let js = jetstream::new(client.clone());
    let messages = js
        .get_or_create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![codec::SUBJECT.to_owned(), format!("{}.>", codec::SUBJECT)],
            max_age: STREAM_MAX_AGE,
            max_bytes: STREAM_MAX_BYTES,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    js.get_or_create_stream(stream::Config {
        name: OUTCOMES.to_owned(),
        subjects: vec![format!("{OUTCOME_SUBJECT}.>")],
        max_age: OUTCOMES_MAX_AGE,
        max_bytes: STREAM_MAX_BYTES / 4,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let subscribers = bucket(&js, SUBSCRIBERS, SUBSCRIBER_MAX_AGE).await?;
    let instances = bucket(&js, INSTANCES, INSTANCE_TTL).await?;
    // Kept for ever: a cluster that forgot it would deliver under another name.
    let cluster = bucket(&js, identity::BUCKET, Duration::ZERO).await?;
    let identity = identity::identity(&cluster).await?;
    // Before any message is admitted or delivered, and before a publish is taken: every
    // `webhook-id` this instance hands out is the cluster's.
    state.hub.name(&identity.instance);
    Ok(Links {
        client,
        bridge: Arc::new(Bridge::new(identity.seal, &state.config)),
        js,
        messages,
        subscribers,
        instances,
    })
}

/// A key-value bucket, its stream made by hand: the client's `create_key_value` cannot
/// read what nats-server 2.9 (Debian's) answers, and `get_key_value` works on a stream
/// laid out as the bucket's would be.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
) -> anyhow::Result<kv::Store> {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(name).await?)
}

/// Runs `task` again whenever it fails (the connection dropped under it), a second
/// later, until the hub stops.
pub(super) async fn retrying<F, Fut>(state: Arc<State>, name: &'static str, task: F)
where
    F: Fn(Arc<State>, Links) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let links = state
        .links
        .get()
        .expect("connected before the tasks start")
        .clone();
    loop {
        tokio::select! {
            () = state.stop.cancelled() => return,
            result = task(state.clone(), links.clone()) => {
                if let Err(error) = result {
                    tracing::warn!(%error, task = name, "cluster task failed; again in a second");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
