//! A small benchmark harness: run a sample a few times, keep the median.
//!
//! Each sample times itself (so its setup and cleanup stay outside the
//! clock) and says how many operations it ran; the figure is the median over
//! the samples of time per operation, after one warm-up sample.

use std::time::{Duration, Instant};

/// The median and spread of one benchmark, in nanoseconds per operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Median over the samples.
    pub median_ns: f64,
    /// Fastest sample.
    pub min_ns: f64,
    /// Slowest sample.
    pub max_ns: f64,
    /// Samples taken (after the warm-up).
    pub samples: usize,
}

/// Times `body`, returning what it returned and the elapsed time.
pub fn time<T>(body: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = body();
    (out, start.elapsed())
}

/// Runs `sample` once to warm up and then `samples` times (at least 5); each
/// call returns `(elapsed, operations)`.
pub fn measure(samples: usize, mut sample: impl FnMut() -> (Duration, u64)) -> Measured {
    let samples = samples.max(5);
    let _ = sample();
    let mut per_op: Vec<f64> = (0..samples)
        .map(|_| {
            let (elapsed, ops) = sample();
            elapsed.as_nanos() as f64 / ops.max(1) as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    Measured {
        median_ns: median(&per_op),
        min_ns: per_op[0],
        max_ns: per_op[per_op.len() - 1],
        samples,
    }
}

/// The median of sorted values (mean of the middle two for an even count).
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert!((median(&[1.0, 2.0, 9.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[1.0, 2.0, 4.0, 9.0]) - 3.0).abs() < f64::EPSILON);
    }

    #[test]
    fn measure_takes_at_least_five_samples_after_a_warm_up() {
        let mut calls = 0;
        let m = measure(1, || {
            calls += 1;
            (Duration::from_nanos(100 * calls), 10)
        });
        assert_eq!(calls, 6);
        assert_eq!(m.samples, 5);
        // Samples 2..=6 take 200..600 ns for 10 ops: median 40 ns.
        assert!((m.median_ns - 40.0).abs() < 1e-9);
        assert!((m.min_ns - 20.0).abs() < 1e-9);
    }
}
