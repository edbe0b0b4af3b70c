//! Clocks drivers read: the host's system clock (with the kernel's error
//! estimate) and an emulated clock (offset, drift, noise over the host clock)
//! so a local run has realistic clock-sync error while the host clock stays
//! the ground truth.

use std::cell::Cell;

use jasper_core::clock::{Clock, ClockStatus};
use jasper_core::config::{ClockSection, ClockSource};

use crate::host_now_ns;

/// CLOCK_REALTIME with the error bound and status the kernel reports
/// (`adjtimex`: `maxerror`, `STA_UNSYNC`), as chrony/ntpd maintain them.
#[derive(Debug, Clone)]
pub struct SystemClock {
    bound_override_ns: Option<u64>,
    degraded_above_ns: u64,
}

impl SystemClock {
    /// `bound_override_ns` replaces the kernel's estimate (e.g. a PTP or
    /// Huygens agent's bound); the status is degraded when the bound exceeds
    /// `degraded_above_ns`.
    pub fn new(bound_override_ns: Option<u64>, degraded_above_ns: u64) -> Self {
        SystemClock {
            bound_override_ns,
            degraded_above_ns,
        }
    }

    fn kernel_state(&self) -> (u64, bool) {
        // SAFETY: `timex` is plain old data; a zeroed value with modes = 0 asks
        // adjtimex to only read the state, which it writes into our struct.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `tx` is a valid, exclusively borrowed timex for the call.
        let state = unsafe { libc::adjtimex(&mut tx) };
        let unsync = state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0;
        ((tx.maxerror.max(0) as u64) * 1_000, unsync)
    }
}

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        host_now_ns()
    }
    fn error_bound_ns(&self) -> u64 {
        self.bound_override_ns
            .unwrap_or_else(|| self.kernel_state().0)
    }
    fn status(&self) -> ClockStatus {
        if self.bound_override_ns.is_some() {
            return ClockStatus::Synchronized;
        }
        let (bound, unsync) = self.kernel_state();
        if unsync {
            ClockStatus::Unsynchronized
        } else if bound > self.degraded_above_ns {
            ClockStatus::Degraded
        } else {
            ClockStatus::Synchronized
        }
    }
}

/// Host clock + fixed offset + drift + Gaussian-ish noise, with a declared bound.
#[derive(Debug, Clone)]
pub struct EmulatedClock {
    offset_ns: i64,
    drift_ppb: f64,
    noise_ns: f64,
    bound_ns: u64,
    t0_ns: u64,
    state: Cell<u64>,
}

impl EmulatedClock {
    /// New emulated clock starting its drift now.
    pub fn new(offset_ns: i64, drift_ppb: f64, noise_ns: f64, bound_ns: u64, seed: u64) -> Self {
        EmulatedClock {
            offset_ns,
            drift_ppb,
            noise_ns,
            bound_ns,
            t0_ns: host_now_ns(),
            state: Cell::new(seed | 1),
        }
    }

    fn noise(&self) -> i64 {
        if self.noise_ns <= 0.0 {
            return 0;
        }
        // xorshift64*, summed 4 uniforms ≈ normal (Irwin–Hall), σ scaled.
        let mut acc = 0.0;
        for _ in 0..4 {
            let mut x = self.state.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.state.set(x);
            acc += (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        }
        ((acc - 2.0) * 1.732 * self.noise_ns) as i64
    }

    /// The emulated reading at host time `host_ns` (e.g. a kernel rx timestamp).
    pub fn at(&self, host_ns: u64) -> u64 {
        let drift = (host_ns.saturating_sub(self.t0_ns) as f64 * self.drift_ppb / 1e9) as i64;
        (host_ns as i64 + self.offset_ns + drift + self.noise()) as u64
    }

    /// Host time at which this clock will read `local_ns` (ignoring noise).
    pub fn host_time_of(&self, local_ns: u64) -> u64 {
        let approx = local_ns as i64 - self.offset_ns;
        let drift =
            (approx.max(self.t0_ns as i64) as u64 - self.t0_ns) as f64 * self.drift_ppb / 1e9;
        (approx - drift as i64) as u64
    }
}

impl Clock for EmulatedClock {
    fn now_ns(&self) -> u64 {
        self.at(host_now_ns())
    }
    fn error_bound_ns(&self) -> u64 {
        self.bound_ns
    }
    fn status(&self) -> ClockStatus {
        ClockStatus::Synchronized
    }
}

/// A node's clock as configured.
#[derive(Debug, Clone)]
pub enum NodeClock {
    /// The system clock.
    System(SystemClock),
    /// An emulated clock.
    Emulated(EmulatedClock),
}

impl NodeClock {
    /// From `[clock]`.
    pub fn from_config(c: &ClockSection) -> NodeClock {
        match c.source {
            ClockSource::System => NodeClock::System(SystemClock::new(c.bound_ns, c.bound_ns())),
            ClockSource::Emulated => NodeClock::Emulated(EmulatedClock::new(
                c.offset_ns,
                c.drift_ppb,
                c.noise_ns,
                c.bound_ns(),
                c.seed,
            )),
        }
    }
    /// Local reading at host time `host_ns`.
    pub fn at(&self, host_ns: u64) -> u64 {
        match self {
            NodeClock::System(_) => host_ns,
            NodeClock::Emulated(e) => e.at(host_ns),
        }
    }
    /// Host time at which the local clock reads `local_ns`.
    pub fn host_time_of(&self, local_ns: u64) -> u64 {
        match self {
            NodeClock::System(_) => local_ns,
            NodeClock::Emulated(e) => e.host_time_of(local_ns),
        }
    }
}

impl Clock for NodeClock {
    fn now_ns(&self) -> u64 {
        match self {
            NodeClock::System(c) => c.now_ns(),
            NodeClock::Emulated(c) => c.now_ns(),
        }
    }
    fn error_bound_ns(&self) -> u64 {
        match self {
            NodeClock::System(c) => c.error_bound_ns(),
            NodeClock::Emulated(c) => c.error_bound_ns(),
        }
    }
    fn status(&self) -> ClockStatus {
        match self {
            NodeClock::System(c) => c.status(),
            NodeClock::Emulated(c) => c.status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_offset_and_inverse() {
        let c = EmulatedClock::new(5_000, 0.0, 0.0, 200, 1);
        let h = host_now_ns();
        assert_eq!(c.at(h), h + 5_000);
        assert_eq!(c.host_time_of(h + 5_000), h);
    }

    #[test]
    fn emulated_noise_is_bounded_and_centered() {
        let c = EmulatedClock::new(0, 0.0, 50.0, 200, 7);
        let h = host_now_ns();
        let v: Vec<i64> = (0..10_000).map(|_| c.at(h) as i64 - h as i64).collect();
        let mean = v.iter().sum::<i64>() as f64 / v.len() as f64;
        assert!(mean.abs() < 5.0, "{mean}");
        assert!(v.iter().all(|x| x.abs() <= 4 * 50 * 2));
    }

    #[test]
    fn system_clock_reports_a_state() {
        let c = SystemClock::new(None, 1_000_000);
        let _ = c.status();
        let c = SystemClock::new(Some(300), 1_000);
        assert_eq!(c.error_bound_ns(), 300);
        assert_eq!(c.status(), ClockStatus::Synchronized);
    }
}
