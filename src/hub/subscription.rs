//! What a subscriber asks for when it registers or refreshes (`Subscription`), and what
//! registering or changing a subscriber answers: `Registration`, `RegisterError`,
//! `ControlError`.

use std::time::{Duration, SystemTime};

use thiserror::Error;

use super::address::AddressError;
use super::policy::TargetRefused;
use super::secret::Secret;
use super::topic::{Pattern, TopicError};

/// What a subscriber asks for when it registers or refreshes.
#[derive(Debug, Clone)]
pub struct Subscription<'a> {
    pub address: &'a str,
    /// Signs its deliveries with this secret instead of the hub's.
    pub secret: Option<Secret>,
    /// Its own keep-alive period instead of the hub's TTL (clamped to `LEASE_RANGE`).
    pub lease: Option<Duration>,
    /// Strict order: a delivery waiting for its retry holds back the later ones.
    pub ordered: Option<bool>,
    /// Deliveries it takes at once, 1 to [`MAX_IN_FLIGHT`], with no order promise.
    pub max_in_flight: Option<u32>,
    /// The topics it receives, replacing those it had; an empty list: every message.
    /// `None` keeps what it had, so that a plain keep-alive never widens a subscription.
    pub topics: Option<Vec<Pattern>>,
    /// Lives only in this process (a test subscriber, whose server ends with it): no
    /// store keeps it, so a restart does not bring it back to deliver to whoever holds
    /// its port then, and no cluster hears of it, as it is on this instance's loopback.
    /// Fixed when it registers; a refresh does not change it. Not offered over HTTP.
    pub ephemeral: bool,
}

/// The most deliveries one subscriber may take at once.
pub const MAX_IN_FLIGHT: u32 = 256;

impl<'a> Subscription<'a> {
    /// Just the address, as the seed's clients register.
    pub fn new(address: &'a str) -> Self {
        Self {
            address,
            secret: None,
            lease: None,
            ordered: None,
            max_in_flight: None,
            topics: None,
            ephemeral: false,
        }
    }
}

impl<'a> From<&'a str> for Subscription<'a> {
    fn from(address: &'a str) -> Self {
        Self::new(address)
    }
}

impl<'a> From<&'a String> for Subscription<'a> {
    fn from(address: &'a String) -> Self {
        Self::new(address)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegisterError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("refused: {0}")]
    Target(#[from] TargetRefused),
    #[error(
        "the hub already has {max} subscribers, its limit; deregister some or raise --max-subscribers"
    )]
    Full { max: usize },
    #[error("max_in_flight must be from 1 to {MAX_IN_FLIGHT}, not {given}")]
    MaxInFlight { given: u32 },
    #[error(
        "this address is banned until {}; it may register again then",
        humantime::format_rfc3339_seconds(*until)
    )]
    Banned { until: SystemTime },
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("the hub is shutting down")]
    ShuttingDown,
}

/// Why a change to a live subscriber (its topics, pause, pin) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    #[error("{0:?} is not a live subscriber")]
    UnknownSubscriber(String),
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error(
        "{max} bans are in force, the most the hub keeps; nothing was done: try again once one has run out"
    )]
    TooManyBans { max: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Registered,
    Refreshed,
}
