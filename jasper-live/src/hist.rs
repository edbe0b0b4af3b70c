//! A fixed-bucket latency histogram: one array increment per observation,
//! exported as a Prometheus histogram in seconds.

/// Upper bounds of the buckets, ns (a value lands in the first bound it
/// does not exceed; larger values only in `+Inf`). 2 µs to 1 s: loopback
/// hops to the deadline ceiling and beyond.
pub const BOUNDS_NS: [u64; 19] = [
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// Counts per bucket (the last is `+Inf`), their sum and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: [u64; BOUNDS_NS.len() + 1],
    sum_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [0; BOUNDS_NS.len() + 1],
            sum_ns: 0,
        }
    }
}

impl Histogram {
    /// Count one value, ns.
    #[inline]
    pub fn observe(&mut self, ns: u64) {
        let i = BOUNDS_NS.partition_point(|b| *b < ns);
        self.counts[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, ns (saturating).
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// `(upper bound in seconds, count in that bucket alone)`, `+Inf` last.
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        BOUNDS_NS
            .iter()
            .map(|b| *b as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// The `q` quantile (0..=1) of a histogram given as cumulative Prometheus
/// buckets `(le, cumulative count)` sorted by `le`, interpolated linearly
/// within the bucket as Prometheus' `histogram_quantile` does. `None`
/// without observations; the highest finite bound when it falls in `+Inf`.
pub fn quantile(q: f64, cumulative: &[(f64, f64)]) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in cumulative {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let in_bucket = c - prev.1;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1) / in_bucket
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, c);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bound_they_do_not_exceed() {
        let mut h = Histogram::default();
        for ns in [0, 2_000, 2_001, 1_000_000_000, 20_000_000_000] {
            h.observe(ns);
        }
        let b = h.buckets_seconds();
        assert_eq!(b[0], (2e-6, 2), "0 and exactly 2 µs");
        assert_eq!(b[1], (5e-6, 1));
        assert_eq!(b[17], (1.0, 1));
        assert_eq!(b[19], (f64::INFINITY, 1));
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum_ns(), 21_000_004_001);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let cum = [(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &cum), Some(0.001));
        assert!((quantile(0.75, &cum).unwrap() - 0.0015).abs() < 1e-12);
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.99, &[(1.0, 1.0), (f64::INFINITY, 10.0)]),
            Some(1.0)
        );
    }
}
