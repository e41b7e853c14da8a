//! The cluster's identity: made once, by whichever instance joins first, and read by
//! every other from the bucket `herald_cluster`, so that two clusters are never one.
//!
//! - Its **instance id** is every instance's hub instance id: the `webhook-id` namespace
//!   and `X-Herald-Instance`. One cluster's deliveries are named alike whichever instance
//!   makes them (one made again elsewhere keeps its `webhook-id`), and differently from
//!   any other cluster's, so a delivery from one cluster into another's publish route is
//!   not taken for a loop.
//! - Its **sealing key** seals Herald's own messages in the stream (see `seal`). It is
//!   as secret as the bucket: a NATS user that may publish on `herald.>` but must not
//!   pass for Herald must not read `$KV.herald_cluster.>` (nor the JetStream API).
//!
//! Created with the bucket's only-if-absent `create`, so two instances joining at once
//! agree on the first one written.

use async_nats::jetstream::kv;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::seal::Seal;

/// The bucket's name, and its one key.
pub(super) const BUCKET: &str = "herald_cluster";
const KEY: &str = "identity";
/// Bytes of the sealing key: as many as the HMAC's output.
const KEY_BYTES: usize = 32;

/// What the bucket holds.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    /// 16 lowercase hex digits, as a standalone hub's instance id.
    instance: String,
    /// Base64.
    seal: String,
}

/// The cluster's identity, as this instance uses it.
pub(crate) struct Identity {
    pub(crate) instance: String,
    pub(crate) seal: Seal,
}

/// Reads the cluster's identity, made now if no instance made it before.
pub(super) async fn identity(bucket: &kv::Store) -> anyhow::Result<Identity> {
    let made = new_stored()?;
    let value = serde_json::to_vec(&made)?;
    match bucket.create(KEY, value.into()).await {
        Ok(_) => {
            tracing::info!(instance = %made.instance, "made the cluster's identity");
        }
        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(error) => return Err(error.into()),
    }
    let stored = bucket.get(KEY).await?.ok_or_else(|| {
        anyhow::anyhow!("the cluster's identity ({BUCKET}, key {KEY}) was written and is gone")
    })?;
    parse(&stored)
}

fn new_stored() -> anyhow::Result<Stored> {
    let instance: [u8; 8] = random()?;
    let seal: [u8; KEY_BYTES] = random()?;
    Ok(Stored {
        instance: instance.iter().map(|b| format!("{b:02x}")).collect(),
        seal: STANDARD.encode(seal),
    })
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for the cluster's identity: {e}"))?;
    Ok(bytes)
}

/// The identity as stored, checked: anyone who may write the bucket could have put
/// something else there, and the instance id goes into every delivery's headers.
fn parse(value: &[u8]) -> anyhow::Result<Identity> {
    let fix = format!(
        "delete it (nats kv del {BUCKET} {KEY}) with every instance stopped, and one is made again"
    );
    let stored: Stored = serde_json::from_slice(value)
        .map_err(|e| anyhow::anyhow!("the cluster's identity is not Herald's ({e}); {fix}"))?;
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if stored.instance.len() != 16 || !stored.instance.chars().all(hex) {
        anyhow::bail!(
            "the cluster's instance id {:?} is not 16 lowercase hex digits; {fix}",
            stored.instance.chars().take(40).collect::<String>()
        );
    }
    let key = STANDARD
        .decode(&stored.seal)
        .ok()
        .filter(|key| key.len() == KEY_BYTES)
        .ok_or_else(|| {
            anyhow::anyhow!("the cluster's sealing key is not {KEY_BYTES} bytes of base64; {fix}")
        })?;
    Ok(Identity {
        instance: stored.instance,
        seal: Seal::new(&key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_identity_reads_back() {
        let made = new_stored().unwrap();
        let back = parse(&serde_json::to_vec(&made).unwrap()).unwrap();
        assert_eq!(back.instance, made.instance);
        assert_ne!(new_stored().unwrap().instance, made.instance);
    }

    #[test]
    fn an_identity_herald_did_not_make_is_refused_with_what_to_do() {
        for value in [
            &br#"{"instance":"cluster","seal":"AAAA"}"#[..],
            br#"{"instance":"00000000000000aa","seal":"AAAA"}"#,
            br#"{"instance":"0000000000000\r\naa"}"#,
            b"not json",
        ] {
            let error = parse(value).err().unwrap().to_string();
            assert!(
                error.contains("nats kv del herald_cluster identity"),
                "{error}"
            );
        }
    }
}
