//! Counters for `/metrics`, updated lock-free on the delivery path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::message::{DeliveryError, DeliveryStatus};

/// Upper bounds of the delivery latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Outcome labels, in the order of `Outcomes::counts`.
pub const OUTCOMES: [&str; 9] = [
    "delivered",
    "error_status",
    "redirect",
    "connect",
    "timeout",
    "request",
    "blocked",
    "queue_full",
    "removed",
];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    outcomes: [AtomicU64; OUTCOMES.len()],
    /// Non-cumulative counts per bucket; the last slot counts what is above every bound.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Final delivery outcomes, labelled as in [`OUTCOMES`].
    pub outcomes: Vec<(&'static str, u64)>,
    /// Cumulative counts per bound in [`LATENCY_BUCKETS`], as Prometheus wants them.
    pub latency_buckets: Vec<(f64, u64)>,
    pub latency_count: u64,
    pub latency_sum: Duration,
}

impl Metrics {
    pub(crate) fn record(&self, status: &DeliveryStatus) {
        let (outcome, latency) = match status {
            DeliveryStatus::Pending => return,
            DeliveryStatus::Delivered { latency, .. } => (0, Some(*latency)),
            DeliveryStatus::Failed(error) => match error {
                DeliveryError::Status { latency, .. } => (1, Some(*latency)),
                DeliveryError::Redirect { .. } => (2, None),
                DeliveryError::Connect(_) => (3, None),
                DeliveryError::Timeout(_) => (4, None),
                DeliveryError::Request(_) => (5, None),
                DeliveryError::Blocked(_) => (6, None),
                DeliveryError::QueueFull { .. } => (7, None),
                DeliveryError::Removed(_) => (8, None),
            },
        };
        self.outcomes[outcome].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
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

    /// Finished deliveries that were delivered.
    pub(crate) fn delivered(&self) -> u64 {
        self.outcomes[0].load(Ordering::Relaxed)
    }

    /// Finished deliveries that failed, for any reason.
    pub(crate) fn failed(&self) -> u64 {
        self.outcomes[1..]
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
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
            outcomes: OUTCOMES
                .iter()
                .zip(&self.outcomes)
                .map(|(label, count)| (*label, count.load(Ordering::Relaxed)))
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

    #[test]
    fn buckets_are_cumulative() {
        let metrics = Metrics::default();
        for ms in [0, 2, 2, 40, 20_000] {
            metrics.record(&DeliveryStatus::Delivered {
                status: 200,
                latency: Duration::from_millis(ms),
            });
        }
        metrics.record(&DeliveryStatus::Failed(DeliveryError::QueueFull {
            capacity: 1,
        }));
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
