//! Name resolution that applies the target policy to every address a host name resolves
//! to, so a name cannot smuggle a delivery to a refused address (DNS rebinding included:
//! the check is on the address actually connected to, at connection time).

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::hub::{TargetPolicy, TargetRefused};

#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to refused addresses: {reason}")]
pub(super) struct Blocked {
    host: String,
    reason: TargetRefused,
}

pub(super) struct PolicyResolver {
    pub(super) policy: TargetPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_ip(addr.ip()) {
                    Ok(()) => true,
                    Err(reason) => {
                        refused.get_or_insert(reason);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(reason)) => Err(Box::new(Blocked { host, reason }) as _),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// Whether a request error came from the policy refusing every address.
pub(super) fn blocked_reason(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    anyhow::Chain::new(err)
        .find_map(|cause| cause.downcast_ref::<Blocked>())
        .map(ToString::to_string)
}
