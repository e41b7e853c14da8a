//! A duration that can be changed while the hub runs (the console's settings window).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A duration read on every use and changed live, kept in whole milliseconds (at least
/// one: a zero TTL or timeout would mean "now" everywhere it is read).
#[derive(Debug)]
pub struct LiveDuration(AtomicU64);

impl LiveDuration {
    pub fn new(duration: Duration) -> Self {
        Self(AtomicU64::new(Self::millis(duration)))
    }

    pub fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, duration: Duration) {
        self.0.store(Self::millis(duration), Ordering::Relaxed);
    }

    fn millis(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_and_never_reaches_zero() {
        let live = LiveDuration::new(Duration::ZERO);
        assert_eq!(live.get(), Duration::from_millis(1));
        live.set(Duration::MAX);
        assert_eq!(live.get(), Duration::from_millis(u64::MAX));
        live.set(Duration::from_millis(1500));
        assert_eq!(live.get(), Duration::from_millis(1500));
    }
}
