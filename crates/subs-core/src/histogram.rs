//! A fixed-bucket latency histogram of relaxed atomics: recording is a
//! comparison walk over a dozen bounds and two `fetch_add`s, so it can sit on
//! the resolver path; a scrape reads the buckets and the encoder makes them
//! cumulative.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The upper bounds of the buckets, in seconds (Prometheus' `le`), from
/// 100 µs (an in-memory resolver) to 10 s (past any sane resolver deadline).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// The same bounds in nanoseconds, for the comparison when recording.
const BOUNDS_NANOS: [u64; DURATION_BUCKETS.len()] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// Counts of durations per bucket (not cumulative; the last slot is `+Inf`)
/// and their sum.
#[derive(Debug, Default)]
pub(crate) struct DurationHistogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    pub(crate) fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BOUNDS_NANOS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_nanos: self.sum_nanos.load(Relaxed),
        }
    }
}

/// A copy of a duration histogram at one moment (relaxed reads: not a
/// consistent cut while it is being recorded into).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum_nanos: u64,
}

impl HistogramSnapshot {
    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Their sum, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        Duration::from_nanos(self.sum_nanos).as_secs_f64()
    }

    /// `(upper bound in seconds, durations in this bucket)` for every bound
    /// of [`DURATION_BUCKETS`] then `+Inf`. Not cumulative: a bucket counts
    /// the durations above the previous bound (the shape `prometheus-client`
    /// encoders take; they sum the buckets into Prometheus' cumulative `le`).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        DURATION_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_with_the_published_seconds() {
        for (nanos, seconds) in BOUNDS_NANOS.iter().zip(DURATION_BUCKETS) {
            assert_eq!(Duration::from_nanos(*nanos).as_secs_f64(), seconds);
        }
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let histogram = DurationHistogram::default();
        histogram.record(Duration::from_micros(100));
        histogram.record(Duration::from_micros(101));
        histogram.record(Duration::from_secs(11));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 3);
        let buckets = snapshot.buckets();
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets[1], (0.00025, 1));
        assert_eq!(buckets[DURATION_BUCKETS.len() - 1], (10.0, 0));
        assert_eq!(buckets[DURATION_BUCKETS.len()], (f64::INFINITY, 1));
        assert!((snapshot.sum_seconds() - 11.000201).abs() < 1e-9);
    }
}
