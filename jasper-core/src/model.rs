//! The reference cloud model (`docs/MODEL.md`), shared by the simulator and
//! the delay-injecting backend wrapper, so both apply the same numbers.
//!
//! Pure: randomness comes from a caller-owned seeded generator and time from
//! arguments. Every distribution is pluggable and every cost can be 0.

use rand::Rng;
use rand_distr::{Distribution, Exp, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::clock::ClockClass;

/// The seeded generator used everywhere (portable, reproducible).
pub type SimRng = rand_xoshiro::Xoshiro256PlusPlus;

/// Make a generator from a seed.
pub fn rng(seed: u64) -> SimRng {
    use rand::SeedableRng;
    SimRng::seed_from_u64(seed)
}

/// z-score of the 99th percentile of a standard normal.
const Z99: f64 = 2.326_347_874;

/// A distribution of non-negative durations, in ns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Always `ns`.
    Constant {
        /// Value.
        ns: f64,
    },
    /// Uniform in `[a, b]`.
    Uniform {
        /// Low.
        a: f64,
        /// High.
        b: f64,
    },
    /// Lognormal with the given median and 99th percentile.
    Lognormal {
        /// Median.
        median_ns: f64,
        /// 99th percentile (≥ median).
        p99_ns: f64,
    },
    /// Drawn uniformly from samples (inline, or one number per line in `file`,
    /// loaded by the front end before use).
    Empirical {
        /// File of samples, ns, one per line.
        #[serde(default)]
        file: Option<String>,
        /// Samples, ns.
        #[serde(default)]
        samples: Vec<f64>,
    },
}

/// `x.round()` (half away from zero) without a call: on baseline x86-64
/// (no SSE4.1) `f64::round` and `f64::ceil` are library calls, and the
/// simulator rounds several draws per event.
#[inline]
pub fn round(x: f64) -> f64 {
    // Beyond 2^52 every f64 is an integer (and NaN, ±∞ stay as they are).
    if x.is_nan() || x.abs() >= 4_503_599_627_370_496.0 {
        return x;
    }
    // Truncation, keeping the sign of zero as the library does.
    let t = (x as i64 as f64).copysign(x);
    let f = x - t;
    if f >= 0.5 {
        t + 1.0
    } else if f <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// `x.ceil()` without a call (see [`round`]).
#[inline]
pub fn ceil(x: f64) -> f64 {
    if x.is_nan() || x.abs() >= 4_503_599_627_370_496.0 {
        return x;
    }
    let t = (x as i64 as f64).copysign(x);
    if x > t {
        t + 1.0
    } else {
        t
    }
}

impl Dist {
    /// Constant 0.
    pub const ZERO: Dist = Dist::Constant { ns: 0.0 };

    /// Draw one value (ns, ≥ 0).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let v = match self {
            Dist::Constant { ns } => *ns,
            Dist::Uniform { a, b } => {
                if b > a {
                    rng.random_range(*a..=*b)
                } else {
                    *a
                }
            }
            Dist::Lognormal { median_ns, p99_ns } => {
                if *median_ns <= 0.0 {
                    0.0
                } else {
                    // exp(ln median + σz) as median·exp(σz): one logarithm
                    // per draw fewer, the same normal draw.
                    let sigma = (p99_ns / median_ns).max(1.0).ln() / Z99;
                    let z: f64 = StandardNormal.sample(rng);
                    median_ns * (sigma * z).exp()
                }
            }
            Dist::Empirical { samples, .. } => {
                if samples.is_empty() {
                    0.0
                } else {
                    samples[rng.random_range(0..samples.len())]
                }
            }
        };
        if v.is_finite() && v > 0.0 {
            round(v) as u64
        } else {
            0
        }
    }

    /// Check parameters; the error names the problem.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        match self {
            Dist::Constant { ns } if !ok(*ns) => {
                Err(format!("constant ns = {ns} must be finite and ≥ 0"))
            }
            Dist::Uniform { a, b } if !ok(*a) || !ok(*b) || b < a => {
                Err(format!("uniform needs 0 ≤ a ≤ b, got a = {a}, b = {b}"))
            }
            Dist::Lognormal { median_ns, p99_ns }
                if !ok(*median_ns) || !ok(*p99_ns) || p99_ns < median_ns =>
            {
                Err(format!(
                    "lognormal needs 0 ≤ median_ns ≤ p99_ns, got {median_ns} and {p99_ns}"
                ))
            }
            Dist::Empirical {
                file: None,
                samples,
            } if samples.is_empty() => Err("empirical needs `file` or `samples`".into()),
            Dist::Empirical { samples, .. } if samples.iter().any(|x| !ok(*x)) => {
                Err("empirical samples must be finite and ≥ 0".into())
            }
            _ => Ok(()),
        }
    }
}

/// Per-node clock model: the error of a node's clock is a process, not a
/// constant, and it can break its declared bound.
///
/// error(t) = wander(t) + drift·t + miss(t) + step(t) + read noise, where
/// wander is an Ornstein–Uhlenbeck process with stationary σ
/// `offset_sigma_ns` and correlation time `wander_tau_ns` (so offsets are
/// N(0, σ) and wander slowly); misses of ±(1, `tail_max_bounds`] × bound
/// last `tail_duration_ns` and come often enough that a fraction
/// `tail_prob` of the time is outside the bound; and a step of ±(1,
/// `step_max_bounds`] × bound arrives at `step_rate_per_s` per node and
/// lasts `step_duration_ns` (until the sync agent corrects it). Nothing is
/// clamped to the bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockModel {
    /// Class (sets bound and offset spread unless overridden).
    pub class: ClockClass,
    /// Offset σ override, ns.
    pub offset_sigma_ns: Option<f64>,
    /// Bound override, ns.
    pub bound_ns: Option<u64>,
    /// Drift, parts per billion (each node draws uniformly in ±drift).
    pub drift_ppb: f64,
    /// Per-read noise σ, ns.
    pub noise_ns: f64,
    /// Correlation time of the offset's wander, ns (0: a fixed offset).
    pub wander_tau_ns: f64,
    /// Share of the time a clock is outside its declared bound (misses).
    pub tail_prob: f64,
    /// Largest miss, in bounds (≥ 1).
    pub tail_max_bounds: f64,
    /// How long a miss lasts.
    pub tail_duration_ns: Dist,
    /// Steps per node per second.
    pub step_rate_per_s: f64,
    /// Largest step, in bounds (> 1).
    pub step_max_bounds: f64,
    /// How long a step lasts.
    pub step_duration_ns: Dist,
}

impl Default for ClockModel {
    fn default() -> Self {
        ClockModel {
            class: ClockClass::Huygens,
            offset_sigma_ns: None,
            bound_ns: None,
            drift_ppb: 0.0,
            noise_ns: 0.0,
            wander_tau_ns: 1e9,
            tail_prob: 1e-4,
            tail_max_bounds: 3.0,
            tail_duration_ns: Dist::Constant { ns: 100_000.0 },
            step_rate_per_s: 1e-3,
            step_max_bounds: 3.0,
            step_duration_ns: Dist::Uniform { a: 1e6, b: 10e6 },
        }
    }
}

impl ClockModel {
    /// Error bound, ns.
    pub fn bound_ns(&self) -> u64 {
        self.bound_ns.unwrap_or(self.class.bound_ns())
    }
    /// Offset σ, ns.
    pub fn offset_sigma_ns(&self) -> f64 {
        self.offset_sigma_ns.unwrap_or(self.class.offset_sigma_ns())
    }
    /// Draw a node's fixed offset (ns), clamped within the bound so the
    /// bound holds by construction.
    pub fn draw_offset<R: Rng + ?Sized>(&self, rng: &mut R) -> i64 {
        let z: f64 = rand_distr::StandardNormal.sample(rng);
        let b = self.bound_ns() as f64;
        (z * self.offset_sigma_ns()).clamp(-b, b).round() as i64
    }
    /// Draw a node's drift (ppb).
    pub fn draw_drift<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        if self.drift_ppb > 0.0 {
            rng.random_range(-self.drift_ppb..=self.drift_ppb)
        } else {
            0.0
        }
    }
}

/// The cloud: links, hosts, faults, clocks. Defaults = the reference model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudModel {
    /// Per-hop base latency.
    pub base_ns: Dist,
    /// Per-hop jitter above base.
    pub jitter_ns: Dist,
    /// Slow episodes per link per second.
    pub slow_rate_per_s: f64,
    /// Slow episode length.
    pub slow_duration_ns: Dist,
    /// Extra latency during a slow episode.
    pub slow_extra_ns: Dist,
    /// Per packet copy send cost at a host (serialized).
    pub copy_cost_ns: Dist,
    /// Per packet processing at a proxy.
    pub proxy_processing_ns: Dist,
    /// Loss probability per packet per hop.
    pub loss: f64,
    /// Duplication probability per packet per hop.
    pub duplicate: f64,
    /// Reordering probability per packet per hop (the packet is held back).
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_delay_ns: Dist,
    /// Clocks.
    pub clock: ClockModel,
    /// At a receiver, how late after its clock reaches the deadline the
    /// hand-over starts (spin/wake error), drawn per release.
    pub release_jitter_ns: Dist,
    /// At a receiver, the cost of handing one message to the MP; messages
    /// released together go out one after another.
    pub handoff_ns: Dist,
    /// Per-level overrides of `base_ns` and `jitter_ns`: entry `k` applies
    /// to links into nodes `k + 1` hops from the publisher (0: publisher →
    /// root, 1: root → level 2, …, the last: last proxy → receiver; direct
    /// unicast is level 0).
    pub levels: Vec<LevelModel>,
}

/// Delay distributions of one tree level (unset: the model's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LevelModel {
    /// Base latency.
    pub base_ns: Option<Dist>,
    /// Jitter above base.
    pub jitter_ns: Option<Dist>,
}

impl Default for CloudModel {
    fn default() -> Self {
        CloudModel {
            base_ns: Dist::Constant { ns: 20_000.0 },
            jitter_ns: Dist::Lognormal {
                median_ns: 10_000.0,
                p99_ns: 100_000.0,
            },
            slow_rate_per_s: 0.1,
            slow_duration_ns: Dist::Uniform { a: 50e6, b: 200e6 },
            slow_extra_ns: Dist::Constant { ns: 100_000.0 },
            copy_cost_ns: Dist::Constant { ns: 2_500.0 },
            proxy_processing_ns: Dist::Constant { ns: 5_000.0 },
            loss: 1e-5,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay_ns: Dist::Uniform {
                a: 10_000.0,
                b: 50_000.0,
            },
            clock: ClockModel::default(),
            release_jitter_ns: Dist::Lognormal {
                median_ns: 30.0,
                p99_ns: 150.0,
            },
            handoff_ns: Dist::Constant { ns: 200.0 },
            levels: Vec::new(),
        }
    }
}

impl CloudModel {
    /// A model with every cost and fault at zero (exact analytical checks).
    pub fn zero() -> Self {
        CloudModel {
            base_ns: Dist::ZERO,
            jitter_ns: Dist::ZERO,
            slow_rate_per_s: 0.0,
            slow_duration_ns: Dist::ZERO,
            slow_extra_ns: Dist::ZERO,
            copy_cost_ns: Dist::ZERO,
            proxy_processing_ns: Dist::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay_ns: Dist::ZERO,
            clock: ClockModel {
                bound_ns: Some(0),
                offset_sigma_ns: Some(0.0),
                tail_prob: 0.0,
                step_rate_per_s: 0.0,
                ..ClockModel::default()
            },
            release_jitter_ns: Dist::ZERO,
            handoff_ns: Dist::ZERO,
            levels: Vec::new(),
        }
    }

    /// Base and jitter distributions of links into nodes `level + 1` hops
    /// from the publisher.
    pub fn level(&self, level: usize) -> (&Dist, &Dist) {
        let l = self.levels.get(level);
        (
            l.and_then(|l| l.base_ns.as_ref()).unwrap_or(&self.base_ns),
            l.and_then(|l| l.jitter_ns.as_ref())
                .unwrap_or(&self.jitter_ns),
        )
    }

    /// The fate of one packet on a link at `level`: loss, base + jitter,
    /// the slow-episode extra when `slow(rng)` says the link is in one,
    /// reordering, duplication — drawn from `rng` in that order.
    pub fn fate_at_level<R: Rng + ?Sized>(
        &self,
        level: usize,
        rng: &mut R,
        slow: impl FnOnce(&mut R) -> bool,
    ) -> LinkFate {
        if self.loss > 0.0 && rng.random_bool(self.loss) {
            return LinkFate::Lost;
        }
        let (base, jitter) = self.level(level);
        let mut delay = base.sample(rng) + jitter.sample(rng);
        if slow(rng) {
            delay += self.slow_extra_ns.sample(rng);
        }
        if self.reorder > 0.0 && rng.random_bool(self.reorder) {
            delay += self.reorder_delay_ns.sample(rng);
        }
        let duplicate_ns = (self.duplicate > 0.0 && rng.random_bool(self.duplicate))
            .then(|| base.sample(rng) + jitter.sample(rng));
        LinkFate::Delivered {
            delay_ns: delay,
            duplicate_ns,
        }
    }

    /// Whether a link is in a slow episode at `t_ns`, without per-link
    /// state: its episodes (starting at `slow_rate_per_s`, lasting
    /// `slow_duration_ns`) are drawn from `origin_ns` on from `rng`, a fresh
    /// stream of the link's own, so every call for one link sees the same
    /// episodes. Costs one draw per episode before `t_ns` (usually none).
    pub fn slow_at<R: Rng + ?Sized>(&self, origin_ns: u64, t_ns: u64, rng: &mut R) -> bool {
        if self.slow_rate_per_s <= 0.0 {
            return false;
        }
        let Ok(exp) = Exp::new(self.slow_rate_per_s / 1e9) else {
            return false;
        };
        let mut at = origin_ns;
        loop {
            let start = at.saturating_add(exp.sample(rng) as u64);
            if t_ns < start {
                return false;
            }
            let end = start.saturating_add(self.slow_duration_ns.sample(rng));
            if t_ns < end {
                return true;
            }
            at = end;
        }
    }

    /// Check every parameter; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (k, d) in [
            ("base_ns", &self.base_ns),
            ("jitter_ns", &self.jitter_ns),
            ("slow_duration_ns", &self.slow_duration_ns),
            ("slow_extra_ns", &self.slow_extra_ns),
            ("copy_cost_ns", &self.copy_cost_ns),
            ("proxy_processing_ns", &self.proxy_processing_ns),
            ("reorder_delay_ns", &self.reorder_delay_ns),
            ("release_jitter_ns", &self.release_jitter_ns),
            ("handoff_ns", &self.handoff_ns),
            ("clock.step_duration_ns", &self.clock.step_duration_ns),
            ("clock.tail_duration_ns", &self.clock.tail_duration_ns),
        ] {
            d.validate().map_err(|e| format!("{k}: {e}"))?;
        }
        for (i, l) in self.levels.iter().enumerate() {
            for (k, d) in [("base_ns", &l.base_ns), ("jitter_ns", &l.jitter_ns)] {
                if let Some(d) = d {
                    d.validate().map_err(|e| format!("levels[{i}].{k}: {e}"))?;
                }
            }
        }
        let c = &self.clock;
        if !(0.0..=1.0).contains(&c.tail_prob) {
            return Err(format!(
                "clock.tail_prob = {} must be a probability in [0, 1]",
                c.tail_prob
            ));
        }
        if !(c.wander_tau_ns >= 0.0
            && c.step_rate_per_s >= 0.0
            && c.tail_max_bounds >= 1.0
            && c.step_max_bounds >= 1.0)
        {
            return Err(
                "clock.wander_tau_ns and clock.step_rate_per_s must be ≥ 0, clock.tail_max_bounds and clock.step_max_bounds ≥ 1".into(),
            );
        }
        for (k, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{k} = {p} must be a probability in [0, 1]"));
            }
        }
        if !(self.slow_rate_per_s.is_finite() && self.slow_rate_per_s >= 0.0) {
            return Err(format!(
                "slow_rate_per_s = {} must be ≥ 0",
                self.slow_rate_per_s
            ));
        }
        if !(self.clock.drift_ppb >= 0.0 && self.clock.noise_ns >= 0.0) {
            return Err("clock.drift_ppb and clock.noise_ns must be ≥ 0".into());
        }
        Ok(())
    }
}

/// What a link does to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFate {
    /// Lost.
    Lost,
    /// Delivered after `delay_ns`; `duplicate_after_ns` is a second copy.
    Delivered {
        /// One-way delay.
        delay_ns: u64,
        /// A duplicate copy's delay, if duplicated.
        duplicate_ns: Option<u64>,
    },
}

/// Per-link state (slow episodes).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkState {
    next_slow_ns: Option<u64>,
    slow_until_ns: u64,
}

impl LinkState {
    /// Decide the fate of a packet entering the link at `now_ns`.
    pub fn transmit<R: Rng + ?Sized>(
        &mut self,
        model: &CloudModel,
        now_ns: u64,
        rng: &mut R,
    ) -> LinkFate {
        self.transmit_at_level(model, usize::MAX, now_ns, rng)
    }

    /// [`LinkState::transmit`] with the delay distributions of `level`
    /// ([`CloudModel::level`]).
    pub fn transmit_at_level<R: Rng + ?Sized>(
        &mut self,
        model: &CloudModel,
        level: usize,
        now_ns: u64,
        rng: &mut R,
    ) -> LinkFate {
        model.fate_at_level(level, rng, |rng| {
            if model.slow_rate_per_s > 0.0 {
                let exp = Exp::new(model.slow_rate_per_s / 1e9).ok();
                let draw = |rng: &mut R| exp.map(|e| e.sample(rng) as u64).unwrap_or(u64::MAX / 4);
                let next = *self.next_slow_ns.get_or_insert_with(|| now_ns + draw(rng));
                if now_ns >= next {
                    self.slow_until_ns = next + model.slow_duration_ns.sample(rng);
                    self.next_slow_ns = Some(self.slow_until_ns + draw(rng));
                }
            }
            now_ns < self.slow_until_ns
        })
    }

    /// In a slow episode at `now_ns`?
    pub fn is_slow(&self, now_ns: u64) -> bool {
        now_ns < self.slow_until_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_and_ceil_match_the_library() {
        let mut r = rng(5);
        let mut xs = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4_503_599_627_370_495.5,
            4_503_599_627_370_497.0,
            1e300,
            -1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            9.2e18,
            -9.2e18,
        ];
        xs.extend((0..100_000).map(|_| r.random_range(-1e7..1e7)));
        xs.extend((0..100_000).map(|_| r.random_range(-3.0..3.0)));
        for x in xs {
            assert_eq!(round(x).to_bits(), x.round().to_bits(), "round({x})");
            assert_eq!(ceil(x).to_bits(), x.ceil().to_bits(), "ceil({x})");
        }
        assert!(round(f64::NAN).is_nan() && ceil(f64::NAN).is_nan());
    }

    #[test]
    fn lognormal_matches_median_and_p99() {
        let d = Dist::Lognormal {
            median_ns: 10_000.0,
            p99_ns: 100_000.0,
        };
        let mut r = rng(1);
        let mut v: Vec<u64> = (0..200_000).map(|_| d.sample(&mut r)).collect();
        v.sort_unstable();
        let med = v[v.len() / 2] as f64;
        let p99 = v[v.len() * 99 / 100] as f64;
        assert!((9_500.0..10_500.0).contains(&med), "{med}");
        assert!((90_000.0..110_000.0).contains(&p99), "{p99}");
    }

    #[test]
    fn seeded_runs_repeat_and_zero_model_is_exact() {
        let m = CloudModel::default();
        let draw = |seed| {
            let mut r = rng(seed);
            let mut l = LinkState::default();
            (0..1000)
                .map(|i| l.transmit(&m, i * 1_000_000, &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let z = CloudModel::zero();
        let mut r = rng(1);
        let mut l = LinkState::default();
        assert_eq!(
            l.transmit(&z, 0, &mut r),
            LinkFate::Delivered {
                delay_ns: 0,
                duplicate_ns: None
            }
        );
    }

    #[test]
    fn slow_episodes_add_latency() {
        let m = CloudModel {
            jitter_ns: Dist::ZERO,
            slow_rate_per_s: 100.0,
            loss: 0.0,
            ..CloudModel::default()
        };
        let mut r = rng(3);
        let mut l = LinkState::default();
        let mut slow = 0;
        for i in 0..10_000u64 {
            if let LinkFate::Delivered { delay_ns, .. } = l.transmit(&m, i * 100_000, &mut r) {
                if delay_ns > 20_000 {
                    assert_eq!(delay_ns, 120_000);
                    slow += 1;
                }
            }
        }
        assert!(slow > 100, "{slow}");
    }

    #[test]
    fn per_level_distributions_override_the_model() {
        let mut m = CloudModel::zero();
        m.base_ns = Dist::Constant { ns: 7.0 };
        m.levels = vec![
            LevelModel::default(),
            LevelModel {
                base_ns: Some(Dist::Constant { ns: 100.0 }),
                jitter_ns: Some(Dist::Constant { ns: 5.0 }),
            },
        ];
        let mut r = rng(1);
        let mut l = LinkState::default();
        let delay = |f| match f {
            LinkFate::Delivered { delay_ns, .. } => delay_ns,
            LinkFate::Lost => u64::MAX,
        };
        assert_eq!(delay(l.transmit_at_level(&m, 0, 0, &mut r)), 7);
        assert_eq!(delay(l.transmit_at_level(&m, 1, 0, &mut r)), 105);
        assert_eq!(delay(l.transmit_at_level(&m, 9, 0, &mut r)), 7);
        assert_eq!(delay(l.transmit(&m, 0, &mut r)), 7);
        m.levels[1].base_ns = Some(Dist::Uniform { a: 2.0, b: 1.0 });
        assert!(m.validate().unwrap_err().starts_with("levels[1].base_ns"));
    }

    #[test]
    fn validation_names_the_key() {
        let m = CloudModel {
            loss: 2.0,
            ..CloudModel::default()
        };
        assert!(m.validate().unwrap_err().contains("loss"));
        let m = CloudModel {
            jitter_ns: Dist::Uniform { a: 5.0, b: 1.0 },
            ..CloudModel::default()
        };
        assert!(m.validate().unwrap_err().starts_with("jitter_ns"));
        let m: CloudModel =
            toml::from_str("loss = 0.0\n[base_ns]\nkind = \"constant\"\nns = 5.0\n").unwrap();
        assert_eq!(m.base_ns, Dist::Constant { ns: 5.0 });
        assert!(toml::from_str::<CloudModel>("lossy = 1").is_err());
    }
}
