//! Clocks drivers read, behind the core's [`Clock`] trait: each gives now,
//! an error bound and a status, and none makes a syscall per message.
//!
//! - [`kernel::KernelClock`] (`source = "system"` or `{ kernel = {..} }`):
//!   CLOCK_REALTIME with the kernel's state as chrony/ntpd/phc2sys keep it
//!   (`adjtimex` maxerror/esterror, STA_UNSYNC), cached for `refresh_ns`.
//! - [`phc::PhcClock`] (`{ phc = {..} }`): a PTP hardware clock `/dev/ptpN`
//!   through its offset to CLOCK_REALTIME, measured every `refresh_ns` with
//!   the PTP_SYS_OFFSET ioctls.
//! - [`clockbound::ClockBoundClock`] (`{ clockbound = {..} }`): AWS
//!   ClockBound's shared-memory segment (seqlock read, as-of/void-after,
//!   bound growing by the max drift, daemon status).
//! - [`EmulatedClock`]: the host clock plus offset, drift and noise, so a
//!   local run has realistic clock error while the host clock stays the
//!   ground truth.
//!
//! Real sources detect steps of CLOCK_REALTIME against CLOCK_MONOTONIC
//! ([`StepDetector`]) and report at most "degraded" for a second after one.
//! A source that cannot be opened gives [`UnavailableClock`]: the host
//! clock, reported unsynchronized, with the reason.

use std::cell::Cell;

use jasper_core::clock::{Clock, ClockStatus};
use jasper_core::config::{ClockSection, ClockSource, KernelClockSettings};

use crate::host_now_ns;

/// `Clock` for a source that caches `(bound, status)` in `current()`:
/// time from `$now`, bound and status from the cache (no syscall per read).
macro_rules! cached_clock {
    ($ty:ty, |$s:ident| $now:expr) => {
        impl jasper_core::clock::Clock for $ty {
            fn now_ns(&self) -> u64 {
                #[allow(unused_variables)]
                let $s = self;
                $now
            }
            fn error_bound_ns(&self) -> u64 {
                self.current().0
            }
            fn status(&self) -> jasper_core::clock::ClockStatus {
                self.current().1
            }
            fn read(&self) -> jasper_core::clock::Reading {
                let (error_bound_ns, status) = self.current();
                jasper_core::clock::Reading {
                    now_ns: jasper_core::clock::Clock::now_ns(self),
                    error_bound_ns,
                    status,
                }
            }
        }
    };
}

#[path = "clock_clockbound.rs"]
pub mod clockbound;
#[path = "clock_kernel.rs"]
pub mod kernel;
#[path = "clock_phc.rs"]
pub mod phc;

/// A clock source that could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// Opening or checking a device or segment failed.
    #[error("cannot use clock source {what}: {error}")]
    Open {
        /// Device or path.
        what: String,
        /// Why.
        error: String,
    },
}

/// After a step, the status is at most degraded for this long (ns).
pub const STEP_SETTLE_NS: u64 = 1_000_000_000;

/// The kernel slews CLOCK_REALTIME by at most 500 ppm; more is a step.
const MAX_SLEW_PPB: u128 = 500_000;

/// Reads a POSIX clock, ns (`None` if the clock id is invalid). A vDSO call
/// for CLOCK_REALTIME/CLOCK_MONOTONIC; a syscall for a PHC.
pub fn clock_ns(id: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the call.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// CLOCK_MONOTONIC, ns.
pub fn mono_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC).unwrap_or(0)
}

/// The worse of two statuses.
pub fn worse(a: ClockStatus, b: ClockStatus) -> ClockStatus {
    let rank = |s| match s {
        ClockStatus::Synchronized => 0,
        ClockStatus::Degraded => 1,
        ClockStatus::Unsynchronized => 2,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

/// Detects steps of CLOCK_REALTIME: between two (realtime, monotonic)
/// pairs, realtime may differ from monotonic by the kernel's slew (500 ppm)
/// plus `threshold_ns`; anything larger is a step.
#[derive(Debug, Clone, Copy)]
pub struct StepDetector {
    threshold_ns: u64,
    last: Option<(u64, u64)>,
    steps: u64,
    last_step_mono_ns: Option<u64>,
}

impl StepDetector {
    /// A detector with this tolerance.
    pub fn new(threshold_ns: u64) -> Self {
        StepDetector {
            threshold_ns,
            last: None,
            steps: 0,
            last_step_mono_ns: None,
        }
    }

    /// Feed a pair read together; returns the step (realtime jump beyond
    /// monotonic, signed ns) when one happened since the previous pair.
    pub fn observe(&mut self, real_ns: u64, mono_ns: u64) -> Option<i64> {
        let prev = self.last.replace((real_ns, mono_ns));
        let (r0, m0) = prev?;
        let dm = mono_ns.saturating_sub(m0) as i128;
        let jump = (real_ns as i128 - r0 as i128) - dm;
        let slew = dm as u128 * MAX_SLEW_PPB / 1_000_000_000;
        if jump.unsigned_abs() > slew + self.threshold_ns as u128 {
            self.steps += 1;
            self.last_step_mono_ns = Some(mono_ns);
            return Some(jump.clamp(i64::MIN as i128, i64::MAX as i128) as i64);
        }
        None
    }

    /// Steps seen.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Whether a step happened within `window_ns` before `mono_ns`.
    pub fn stepped_within(&self, mono_ns: u64, window_ns: u64) -> bool {
        self.last_step_mono_ns
            .is_some_and(|t| mono_ns.saturating_sub(t) < window_ns)
    }
}

/// A configured source that could not be opened: the host clock, reported
/// unsynchronized (bound `u64::MAX`), with the reason.
#[derive(Debug, Clone)]
pub struct UnavailableClock {
    /// Why the configured source is not in use.
    pub reason: String,
}

impl Clock for UnavailableClock {
    fn now_ns(&self) -> u64 {
        host_now_ns()
    }
    fn error_bound_ns(&self) -> u64 {
        u64::MAX
    }
    fn status(&self) -> ClockStatus {
        ClockStatus::Unsynchronized
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
#[derive(Debug)]
pub enum NodeClock {
    /// The kernel clock (chrony/ntpd/phc2sys state).
    System(kernel::KernelClock),
    /// An emulated clock.
    Emulated(EmulatedClock),
    /// A PTP hardware clock.
    Phc(phc::PhcClock),
    /// AWS ClockBound.
    ClockBound(clockbound::ClockBoundClock),
    /// The configured source could not be opened.
    Unavailable(UnavailableClock),
}

impl NodeClock {
    /// Open the source `[clock]` names.
    pub fn open(c: &ClockSection) -> Result<NodeClock, ClockError> {
        Ok(match &c.source {
            ClockSource::System => NodeClock::System(kernel::KernelClock::new(
                KernelClockSettings::default(),
                c.bound_ns,
            )),
            ClockSource::Kernel(k) => NodeClock::System(kernel::KernelClock::new(*k, c.bound_ns)),
            ClockSource::Emulated => NodeClock::Emulated(EmulatedClock::new(
                c.offset_ns,
                c.drift_ppb,
                c.noise_ns,
                c.bound_ns(),
                c.seed,
            )),
            ClockSource::Phc(p) => NodeClock::Phc(phc::PhcClock::open(p)?),
            ClockSource::Clockbound(b) => {
                NodeClock::ClockBound(clockbound::ClockBoundClock::open(b)?)
            }
        })
    }

    /// From `[clock]`; a source that cannot be opened becomes
    /// [`NodeClock::Unavailable`] (unsynchronized, with the reason, printed
    /// once to stderr) so the node still runs and says so.
    pub fn from_config(c: &ClockSection) -> NodeClock {
        NodeClock::open(c).unwrap_or_else(|e| {
            eprintln!("warning: {e}; the clock is reported unsynchronized");
            NodeClock::Unavailable(UnavailableClock {
                reason: e.to_string(),
            })
        })
    }

    /// Local reading at host time `host_ns`.
    pub fn at(&self, host_ns: u64) -> u64 {
        match self {
            NodeClock::Emulated(e) => e.at(host_ns),
            NodeClock::Phc(p) => p.at(host_ns),
            NodeClock::System(_) | NodeClock::ClockBound(_) | NodeClock::Unavailable(_) => host_ns,
        }
    }

    /// Host time at which the local clock reads `local_ns`.
    pub fn host_time_of(&self, local_ns: u64) -> u64 {
        match self {
            NodeClock::Emulated(e) => e.host_time_of(local_ns),
            NodeClock::Phc(p) => p.host_time_of(local_ns),
            NodeClock::System(_) | NodeClock::ClockBound(_) | NodeClock::Unavailable(_) => local_ns,
        }
    }

    /// Steps of CLOCK_REALTIME detected so far (real sources).
    pub fn steps(&self) -> u64 {
        match self {
            NodeClock::System(c) => c.steps(),
            NodeClock::Phc(c) => c.steps(),
            NodeClock::ClockBound(c) => c.steps(),
            NodeClock::Emulated(_) | NodeClock::Unavailable(_) => 0,
        }
    }

    fn inner(&self) -> &dyn Clock {
        match self {
            NodeClock::System(c) => c,
            NodeClock::Emulated(c) => c,
            NodeClock::Phc(c) => c,
            NodeClock::ClockBound(c) => c,
            NodeClock::Unavailable(c) => c,
        }
    }
}

impl Clock for NodeClock {
    fn now_ns(&self) -> u64 {
        self.inner().now_ns()
    }
    fn error_bound_ns(&self) -> u64 {
        self.inner().error_bound_ns()
    }
    fn status(&self) -> ClockStatus {
        self.inner().status()
    }
    fn read(&self) -> jasper_core::clock::Reading {
        self.inner().read()
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
    fn a_declared_bound_does_not_force_synchronized() {
        // `bound_ns` replaces the kernel's figure; the status stays the
        // kernel's (on an unsynchronized host: unsynchronized).
        let c = NodeClock::from_config(&ClockSection {
            bound_ns: Some(300),
            ..ClockSection::default()
        });
        assert_eq!(c.error_bound_ns(), 300);
        let unsync = kernel::KernelState::read().unsynchronized();
        assert_eq!(c.status() == ClockStatus::Unsynchronized, unsync);
    }

    #[test]
    fn an_unavailable_source_is_unsynchronized_not_fatal() {
        let c = NodeClock::from_config(&ClockSection {
            source: ClockSource::Clockbound(jasper_core::config::ClockBoundSettings {
                path: "/nonexistent/clockbound/shm0".into(),
                ..Default::default()
            }),
            ..ClockSection::default()
        });
        assert!(matches!(&c, NodeClock::Unavailable(u) if u.reason.contains("/nonexistent")));
        assert_eq!(c.status(), ClockStatus::Unsynchronized);
        assert_eq!(c.error_bound_ns(), u64::MAX);
        let h = host_now_ns();
        assert_eq!(c.at(h), h);
    }

    #[test]
    fn steps_are_detected_against_monotonic_time() {
        let mut d = StepDetector::new(100_000);
        let s = 1_000_000_000u64;
        assert_eq!(d.observe(1_000 * s, 5 * s), None);
        // 1 ms later on both clocks, plus a 300 ns slew: no step.
        assert_eq!(d.observe(1_000 * s + 1_000_300, 5 * s + 1_000_000), None);
        // 1 s later with chrony slewing at 400 ppm (400 µs): no step.
        assert_eq!(d.observe(1_001 * s + 1_400_300, 6 * s + 1_000_000), None);
        // Realtime jumps back 5 ms within 1 ms: a step.
        assert_eq!(
            d.observe(1_001 * s - 2_599_700, 6 * s + 2_000_000),
            Some(-5_000_000)
        );
        assert_eq!(d.steps(), 1);
        assert!(d.stepped_within(6 * s + 2_000_000 + 10, STEP_SETTLE_NS));
        assert!(!d.stepped_within(8 * s, STEP_SETTLE_NS));
    }

    #[test]
    fn worse_status_wins() {
        use ClockStatus::*;
        assert_eq!(worse(Synchronized, Degraded), Degraded);
        assert_eq!(worse(Unsynchronized, Degraded), Unsynchronized);
        assert_eq!(worse(Synchronized, Synchronized), Synchronized);
    }
}
