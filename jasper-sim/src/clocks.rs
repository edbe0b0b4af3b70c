//! Simulated clocks: each node's clock error is a process
//! ([`jasper_core::model::ClockModel`]) with its own random stream, so the
//! same node has the same clock in every scheme run from one seed.
//!
//! error(t) = wander(t) + drift·(t − start) + miss(t) + step(t) + injected
//! steps, and each reading adds read noise. Misses and steps are episodes
//! beyond the declared bound; nothing is clamped: a clock can break its
//! bound, and the checkers count when it does. The engine learns from
//! [`ClockProcess::next_change`] when the error jumps, so a receiver whose
//! clock jumps past a deadline is released at that instant, as a spinning
//! receiver would be.

use jasper_core::model::{ClockModel, Dist, SimRng};
use rand::Rng;
use rand_distr::{Distribution, Exp, StandardNormal};

/// An episode source: Poisson arrivals, each adding `±(1, max] × bound`
/// for a drawn duration; its own random stream ([`EpisodeGen`]). The
/// state read on every clock reading is apart from the generator.
#[derive(Debug, Clone)]
#[repr(C)]
struct Episodes {
    next: u64,
    until: u64,
    value: f64,
}

/// What draws an [`Episodes`]' arrivals, sizes and durations.
#[derive(Debug, Clone)]
struct EpisodeGen {
    rng: SimRng,
    rate_per_s: f64,
    max_bounds: f64,
    duration: Dist,
}

impl EpisodeGen {
    fn gap(&mut self, from: u64) -> u64 {
        if self.rate_per_s <= 0.0 {
            return u64::MAX;
        }
        match Exp::new(self.rate_per_s / 1e9) {
            Ok(e) => from.saturating_add(e.sample(&mut self.rng) as u64),
            Err(_) => u64::MAX,
        }
    }
}

impl Episodes {
    fn new(gen: &mut EpisodeGen, start: u64) -> Self {
        Episodes {
            next: gen.gap(start),
            until: 0,
            value: 0.0,
        }
    }

    fn advance(&mut self, gen: &mut EpisodeGen, t: u64, bound: f64) {
        while self.next <= t {
            let at = self.next;
            let size = (bound * gen.rng.random_range(1.0..=gen.max_bounds.max(1.0 + 1e-9)))
                .max(bound + 1.0);
            self.value = if gen.rng.random_bool(0.5) {
                size
            } else {
                -size
            };
            self.until = at.saturating_add(gen.duration.sample(&mut gen.rng).max(1));
            self.next = gen.gap(at);
        }
    }

    fn at(&self, t: u64) -> f64 {
        if t < self.until {
            self.value
        } else {
            0.0
        }
    }

    /// The next instant the episode contribution changes after `t`.
    fn next_change(&self, t: u64) -> u64 {
        let end = if self.until > t { self.until } else { u64::MAX };
        end.min(self.next)
    }
}

/// The wander is sampled on this grid and interpolated, so its path does
/// not depend on when the clock happens to be read (common random numbers
/// across schemes that read it at different instants).
const WANDER_GRID_NS: u64 = 1_000_000;

/// One node's clock error process.
///
/// Laid out for the simulator's hottest path (a reading per delivery and
/// per wake-up, at a random one of 10⁴–10⁵ clocks): what every reading
/// touches comes first, in three cache lines; the generators after it.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub struct ClockProcess {
    start: u64,
    /// Wander at grid points `k` and `k + 1`.
    k: u64,
    w0: f64,
    w1: f64,
    drift_ppb: f64,
    injected: f64,
    noise: f64,
    bound: f64,
    misses: Episodes,
    steps: Episodes,
    noise_rng: SimRng,
    sigma: f64,
    tau: f64,
    /// The wander's step per grid point, `w' = a·w + b·z`: fixed per
    /// clock, computed once (a clock read rarely steps many grid points at
    /// a time: an `exp` and a square root each were a sixth of direct
    /// unicast's run).
    wander_a: f64,
    wander_b: f64,
    wander_rng: SimRng,
    miss_gen: EpisodeGen,
    step_gen: EpisodeGen,
}

impl ClockProcess {
    /// A clock whose process starts at true time `start`.
    pub fn new(model: &ClockModel, start: u64, mut rng: SimRng) -> Self {
        let sigma = model.offset_sigma_ns();
        let bound = model.bound_ns() as f64;
        let mut sub = || jasper_core::model::rng(rng.random::<u64>());
        let (mut wander_rng, noise_rng, miss_rng, step_rng) = (sub(), sub(), sub(), sub());
        let z: f64 = StandardNormal.sample(&mut wander_rng);
        let drift_ppb = model.draw_drift(&mut wander_rng);
        // Misses: a fraction `tail_prob` of the time, in episodes of the
        // mean duration.
        let mean_ns = mean(&model.tail_duration_ns).max(1.0);
        let miss_rate = model.tail_prob / (mean_ns / 1e9);
        let mut miss_gen = EpisodeGen {
            rng: miss_rng,
            rate_per_s: miss_rate,
            max_bounds: model.tail_max_bounds,
            duration: model.tail_duration_ns.clone(),
        };
        let mut step_gen = EpisodeGen {
            rng: step_rng,
            rate_per_s: model.step_rate_per_s,
            max_bounds: model.step_max_bounds,
            duration: model.step_duration_ns.clone(),
        };
        let tau = model.wander_tau_ns;
        let wander_a = (-(WANDER_GRID_NS as f64) / tau).exp();
        let mut c = ClockProcess {
            sigma,
            tau,
            wander_a,
            wander_b: sigma * (1.0 - wander_a * wander_a).sqrt(),
            noise: model.noise_ns,
            bound,
            start,
            drift_ppb,
            w0: z * sigma,
            w1: z * sigma,
            k: 0,
            wander_rng,
            noise_rng,
            misses: Episodes::new(&mut miss_gen, start),
            steps: Episodes::new(&mut step_gen, start),
            miss_gen,
            step_gen,
            injected: 0.0,
        };
        c.w1 = c.next_wander(c.w0);
        c
    }

    fn next_wander(&mut self, w: f64) -> f64 {
        if self.tau <= 0.0 || self.sigma <= 0.0 {
            return w;
        }
        let z: f64 = StandardNormal.sample(&mut self.wander_rng);
        w * self.wander_a + self.wander_b * z
    }

    /// The wander `m ≥ 2` grid points after `w`, in one exact draw: the
    /// process is Gaussian and Markov, so `w(k + m) = aᵐ·w(k) + σ·√(1 − a²ᵐ)·z`
    /// has the law of `m` single steps (a clock read every 25 ms — direct
    /// unicast at N = 10,000 — no longer draws 25 normals per reading).
    fn wander_after(&mut self, w: f64, m: u64) -> f64 {
        if self.tau <= 0.0 || self.sigma <= 0.0 {
            return w;
        }
        let am = self.wander_a.powi(m.min(i32::MAX as u64) as i32);
        let z: f64 = StandardNormal.sample(&mut self.wander_rng);
        w * am + self.sigma * (1.0 - am * am).max(0.0).sqrt() * z
    }

    /// Move the process to true time `t`.
    pub fn advance(&mut self, t: u64) {
        let grid = t.saturating_sub(self.start) / WANDER_GRID_NS;
        if self.k < grid {
            // `w1` is the wander at `k + 1`; the new `w0` is at `grid`.
            let m = grid - self.k - 1;
            self.w0 = match m {
                0 => self.w1,
                1 => self.next_wander(self.w1),
                _ => self.wander_after(self.w1, m),
            };
            self.w1 = self.next_wander(self.w0);
            self.k = grid;
        }
        self.misses.advance(&mut self.miss_gen, t, self.bound);
        self.steps.advance(&mut self.step_gen, t, self.bound);
    }

    /// The error without read noise at `t`, from the state as of the last
    /// [`ClockProcess::advance`] (for scheduling).
    pub fn smooth_error(&self, t: u64) -> f64 {
        let since = t.saturating_sub(self.start);
        let frac = ((since as f64 - (self.k * WANDER_GRID_NS) as f64) / WANDER_GRID_NS as f64)
            .clamp(0.0, 1.0);
        let wander = self.w0 + (self.w1 - self.w0) * frac;
        let drift = since as f64 * self.drift_ppb / 1e9;
        wander + drift + self.misses.at(t) + self.steps.at(t) + self.injected
    }

    /// The error of a reading taken at true time `t` (local − true), ns.
    pub fn read_error(&mut self, t: u64) -> i64 {
        self.advance(t);
        let mut e = self.smooth_error(t);
        if self.noise > 0.0 {
            let z: f64 = StandardNormal.sample(&mut self.noise_rng);
            e += z * self.noise;
        }
        jasper_core::model::round(e) as i64
    }

    /// The next instant after `t` at which the error jumps (a miss or a
    /// step starts or ends); `u64::MAX` if none is due.
    pub fn next_change(&self, t: u64) -> u64 {
        self.misses.next_change(t).min(self.steps.next_change(t))
    }

    /// A fault: the offset jumps by `ns` and stays.
    pub fn inject_step(&mut self, ns: i64) {
        self.injected += ns as f64;
    }

    /// Read noise σ, ns.
    pub fn noise_ns(&self) -> f64 {
        self.noise
    }
}

fn mean(d: &Dist) -> f64 {
    match d {
        Dist::Constant { ns } => *ns,
        Dist::Uniform { a, b } => (a + b) / 2.0,
        Dist::Lognormal { median_ns, p99_ns } => {
            let sigma = (p99_ns / median_ns).max(1.0).ln() / 2.326_347_874;
            median_ns * (sigma * sigma / 2.0).exp()
        }
        Dist::Empirical { samples, .. } => {
            samples.iter().sum::<f64>() / samples.len().max(1) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jasper_core::model::rng;

    #[test]
    fn offsets_spread_as_declared_and_misses_break_the_bound() {
        let m = ClockModel {
            tail_prob: 1e-2,
            step_rate_per_s: 0.0,
            ..ClockModel::default()
        };
        let (mut outside, mut sum2, mut total) = (0u64, 0.0, 0u64);
        let n = 500;
        for i in 0..n {
            let mut c = ClockProcess::new(&m, 0, rng(i));
            for k in 0..2000u64 {
                let e = c.read_error(k * 50_000);
                outside += (e.unsigned_abs() > 200) as u64;
                total += 1;
                if k == 0 {
                    sum2 += (e * e) as f64;
                }
            }
        }
        let sigma = (sum2 / n as f64).sqrt();
        assert!((40.0..60.0).contains(&sigma), "{sigma}");
        // 1% of the time in misses (plus N(0, 50) beyond 4σ, ~6e-5).
        let share = outside as f64 / total as f64;
        assert!((0.005..0.02).contains(&share), "{share}");
    }

    #[test]
    fn steps_go_beyond_the_bound_end_and_are_announced() {
        let m = ClockModel {
            tail_prob: 0.0,
            step_rate_per_s: 100.0,
            offset_sigma_ns: Some(0.0),
            step_duration_ns: Dist::Constant { ns: 1e6 },
            ..ClockModel::default()
        };
        let mut c = ClockProcess::new(&m, 0, rng(5));
        let errs: Vec<i64> = (0..100_000u64).map(|k| c.read_error(k * 10_000)).collect();
        let stepped = errs.iter().filter(|e| e.unsigned_abs() > 200).count();
        // ~100 steps/s × 1 ms over 1 s ≈ 10% of the time.
        assert!((3_000..20_000).contains(&stepped), "{stepped}");
        assert!(errs.iter().all(|e| e.unsigned_abs() <= 600));
        assert!(errs.contains(&0));
        // Every change is announced: between announced instants the error
        // is constant (no wander here).
        let mut c = ClockProcess::new(&m, 0, rng(6));
        let mut t = 0;
        for _ in 0..50 {
            let e = c.read_error(t);
            let next = c.next_change(t);
            assert!(next > t && next < u64::MAX);
            assert_eq!(c.read_error(next - 1), e);
            t = next;
        }
    }

    #[test]
    fn wander_jumps_keep_the_process_law() {
        // Readings 40 ms apart (one draw for 39 grid points) and 1 ms apart
        // (a draw per grid point): both stationary N(0, σ²), correlated
        // exp(−lag/τ).
        let m = ClockModel {
            tail_prob: 0.0,
            step_rate_per_s: 0.0,
            wander_tau_ns: 20e6,
            ..ClockModel::default()
        };
        let sigma = m.offset_sigma_ns();
        for lag_ms in [1u64, 40] {
            let (mut sxx, mut sxy, mut syy, mut n) = (0.0, 0.0, 0.0, 0.0);
            for i in 0..2000 {
                let mut c = ClockProcess::new(&m, 0, rng(1000 + i));
                let mut x = c.read_error(0) as f64;
                for k in 1..=20u64 {
                    let y = c.read_error(k * lag_ms * WANDER_GRID_NS) as f64;
                    (sxx, sxy, syy, n) = (sxx + x * x, sxy + x * y, syy + y * y, n + 1.0);
                    x = y;
                }
            }
            let (vx, vy) = ((sxx / n).sqrt(), (syy / n).sqrt());
            let rho = sxy / n / (vx * vy);
            let want = (-((lag_ms * WANDER_GRID_NS) as f64) / 20e6).exp();
            assert!((vx / sigma - 1.0).abs() < 0.05, "{lag_ms} ms: σ {vx}");
            assert!((vy / sigma - 1.0).abs() < 0.05, "{lag_ms} ms: σ {vy}");
            assert!(
                (rho - want).abs() < 0.03,
                "{lag_ms} ms: ρ {rho} want {want}"
            );
        }
    }

    #[test]
    fn same_stream_same_clock() {
        let m = ClockModel::default();
        let mut a = ClockProcess::new(&m, 0, rng(9));
        let mut b = ClockProcess::new(&m, 0, rng(9));
        for k in 0..1000u64 {
            assert_eq!(a.read_error(k * 1000), b.read_error(k * 1000));
        }
    }
}
