//! Counters for `/metrics`, updated lock-free on the delivery path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::outcome::{Outcome, OutcomeKind};

/// Upper bounds of the delivery latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Indexed by `OutcomeKind as usize`.
    outcomes: [AtomicU64; OutcomeKind::ALL.len()],
    /// Non-cumulative counts per bucket; the last slot counts what is above every bound.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Final delivery outcomes, by [`OutcomeKind::label`], in [`OutcomeKind::ALL`] order.
    pub outcomes: Vec<(&'static str, u64)>,
    /// Cumulative counts per bound in [`LATENCY_BUCKETS`], as Prometheus wants them.
    pub latency_buckets: Vec<(f64, u64)>,
    pub latency_count: u64,
    pub latency_sum: Duration,
}

impl Metrics {
    pub(crate) fn record(&self, outcome: &Outcome) {
        self.count(outcome.kind()).fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = outcome.latency() {
            let seconds = latency.as_secs_f64();
            let bucket = LATENCY_BUCKETS
                .iter()
                .position(|bound| seconds <= *bound)
                .unwrap_or(LATENCY_BUCKETS.len());
            self.latency[bucket].fetch_add(1, Ordering::Relaxed);
            self.latency_sum_us
                .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        }
    }

    fn count(&self, kind: OutcomeKind) -> &AtomicU64 {
        &self.outcomes[kind as usize]
    }

    /// Finished deliveries that were delivered.
    pub(crate) fn delivered(&self) -> u64 {
        self.count(OutcomeKind::Delivered).load(Ordering::Relaxed)
    }

    /// Finished deliveries that failed, for any reason.
    pub(crate) fn failed(&self) -> u64 {
        OutcomeKind::ALL
            .iter()
            .filter(|kind| **kind != OutcomeKind::Delivered)
            .map(|kind| self.count(*kind).load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let mut cumulative = 0;
        let latency_buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.latency)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (*bound, cumulative)
            })
            .collect();
        let latency_count =
            cumulative + self.latency[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        MetricsSnapshot {
            outcomes: OutcomeKind::ALL
                .iter()
                .map(|kind| (kind.label(), self.count(*kind).load(Ordering::Relaxed)))
                .collect(),
            latency_buckets,
            latency_count,
            latency_sum: Duration::from_micros(self.latency_sum_us.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::DeliveryError;

    #[test]
    fn buckets_are_cumulative() {
        let metrics = Metrics::default();
        for ms in [0, 2, 2, 40, 20_000] {
            metrics.record(&Outcome::Delivered {
                status: 200,
                latency: Duration::from_millis(ms),
            });
        }
        metrics.record(&Outcome::Failed(DeliveryError::QueueFull { capacity: 1 }));
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.latency_count, 5);
        assert_eq!(snapshot.latency_buckets[0], (0.001, 1));
        assert_eq!(snapshot.latency_buckets[1], (0.0025, 3));
        assert_eq!(snapshot.latency_buckets[5], (0.05, 4));
        assert_eq!(snapshot.latency_buckets.last().unwrap().1, 4);
        assert_eq!(snapshot.outcomes[0], ("delivered", 5));
        assert_eq!(snapshot.outcomes[7], ("queue_full", 1));
        assert_eq!(snapshot.latency_sum, Duration::from_millis(20_044));
    }
}
