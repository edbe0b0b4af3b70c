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

/// The bounds with a sentinel above every value.
const PADDED: [u64; BOUNDS_NS.len() + 1] = {
    let mut p = [u64::MAX; BOUNDS_NS.len() + 1];
    let mut i = 0;
    while i < BOUNDS_NS.len() {
        p[i] = BOUNDS_NS[i];
        i += 1;
    }
    p
};

/// For each power of two `2^k`: how many bounds lie below it. Consecutive
/// bounds are at least a factor 2 apart, so an octave `[2^k, 2^(k+1))`
/// holds at most one: a value's bucket is one table look-up and one compare.
const OCTAVE_START: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut k = 0;
    while k < 64 {
        let lo = 1u64 << k;
        let mut c = 0;
        while c < BOUNDS_NS.len() && BOUNDS_NS[c] < lo {
            c += 1;
        }
        t[k] = c as u8;
        k += 1;
    }
    t
};

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
        // The number of bounds below the value, without branches.
        let c = OCTAVE_START[63 - (ns | 1).leading_zeros() as usize] as usize;
        let i = c + usize::from(PADDED[c] < ns);
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
    fn the_octave_table_agrees_with_a_search() {
        // Consecutive bounds at least a factor 2 apart (the table needs it).
        assert!(BOUNDS_NS.windows(2).all(|w| w[1] >= 2 * w[0]));
        let mut values: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1];
        for b in BOUNDS_NS {
            values.extend([b - 1, b, b + 1]);
        }
        for k in 0..64 {
            values.extend([1u64 << k, (1u64 << k).wrapping_sub(1)]);
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 50));
        }
        for v in values {
            let mut h = Histogram::default();
            h.observe(v);
            let want = BOUNDS_NS.partition_point(|b| *b < v);
            assert_eq!(h.counts[want], 1, "{v}");
        }
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
