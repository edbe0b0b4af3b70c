//! The kernel clock as chrony, ntpd or phc2sys keep it: CLOCK_REALTIME with
//! the state `adjtimex` reports (`maxerror`, `esterror`, `STA_UNSYNC`).
//!
//! The state is read once per `refresh_ns` (default 1 ms) and cached; a
//! reading in between costs two vDSO clock reads and no syscall. Between
//! refreshes the `maxerror` bound grows as the kernel grows it (500 µs/s).
//! Steps of CLOCK_REALTIME are detected against CLOCK_MONOTONIC at each
//! refresh; for [`STEP_SETTLE_NS`] after one the status is at most degraded.

use std::cell::Cell;

use jasper_core::clock::ClockStatus;
use jasper_core::config::{KernelBound, KernelClockSettings};

use crate::clock::{mono_now_ns, worse, StepDetector, STEP_SETTLE_NS};
use crate::host_now_ns;

/// How fast the kernel grows `maxerror` between updates (MAXFREQ, 500 ppm).
pub const KERNEL_MAXERROR_GROWTH_PPB: u64 = 500_000;

/// What `adjtimex` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelState {
    /// `maxerror`, µs.
    pub maxerror_us: i64,
    /// `esterror`, µs.
    pub esterror_us: i64,
    /// `status` flags (STA_*).
    pub status: i32,
    /// Return value of `adjtimex` (TIME_OK, TIME_ERROR, …).
    pub state: i32,
}

impl KernelState {
    /// Read the kernel's state (one syscall).
    pub fn read() -> KernelState {
        // SAFETY: `timex` is plain old data; all-zero (modes = 0) asks
        // adjtimex only to read the state, which it writes into our struct.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `tx` is a valid, exclusively borrowed timex for the call.
        let state = unsafe { libc::adjtimex(&mut tx) };
        KernelState {
            maxerror_us: tx.maxerror as i64,
            esterror_us: tx.esterror as i64,
            status: tx.status,
            state,
        }
    }

    /// Whether the kernel says the clock is not synchronized.
    pub fn unsynchronized(&self) -> bool {
        self.state == libc::TIME_ERROR || self.state < 0 || self.status & libc::STA_UNSYNC != 0
    }
}

/// Bound and status from a kernel state. `declared_ns` (an agent's bound,
/// `[clock] bound_ns`) replaces the kernel's figure but never the status.
pub fn evaluate(
    k: &KernelState,
    s: &KernelClockSettings,
    declared_ns: Option<u64>,
) -> (u64, ClockStatus) {
    let kernel_ns = match s.bound {
        KernelBound::Maxerror => k.maxerror_us,
        KernelBound::Esterror => k.esterror_us,
    }
    .max(0) as u64
        * 1_000;
    let bound = declared_ns.unwrap_or(kernel_ns);
    let status = if k.unsynchronized() {
        ClockStatus::Unsynchronized
    } else if bound > s.degraded_above_ns {
        ClockStatus::Degraded
    } else {
        ClockStatus::Synchronized
    };
    (bound, status)
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    at_mono_ns: u64,
    bound_ns: u64,
    status: ClockStatus,
    grows: bool,
}

/// CLOCK_REALTIME with the kernel's bound and status, cached.
#[derive(Debug, Clone)]
pub struct KernelClock {
    settings: KernelClockSettings,
    declared_ns: Option<u64>,
    cache: Cell<Option<Cached>>,
    steps: Cell<StepDetector>,
}

impl KernelClock {
    /// A kernel clock with these settings; `declared_ns` as in [`evaluate`].
    pub fn new(settings: KernelClockSettings, declared_ns: Option<u64>) -> Self {
        KernelClock {
            settings,
            declared_ns,
            cache: Cell::new(None),
            steps: Cell::new(StepDetector::new(settings.step_threshold_ns)),
        }
    }

    fn current(&self) -> (u64, ClockStatus) {
        let mono = mono_now_ns();
        let c = match self.cache.get() {
            Some(c) if mono.saturating_sub(c.at_mono_ns) < self.settings.refresh_ns => c,
            _ => {
                let (bound_ns, status) =
                    evaluate(&KernelState::read(), &self.settings, self.declared_ns);
                let mut det = self.steps.get();
                det.observe(host_now_ns(), mono_now_ns());
                self.steps.set(det);
                let c = Cached {
                    at_mono_ns: mono,
                    bound_ns,
                    status,
                    grows: self.declared_ns.is_none()
                        && self.settings.bound == KernelBound::Maxerror,
                };
                self.cache.set(Some(c));
                c
            }
        };
        let growth = if c.grows {
            (mono - c.at_mono_ns) * KERNEL_MAXERROR_GROWTH_PPB / 1_000_000_000
        } else {
            0
        };
        let mut status = c.status;
        if self.steps.get().stepped_within(mono, STEP_SETTLE_NS) {
            status = worse(status, ClockStatus::Degraded);
        }
        (c.bound_ns.saturating_add(growth), status)
    }

    /// Steps of CLOCK_REALTIME seen so far.
    pub fn steps(&self) -> u64 {
        self.steps.get().steps()
    }
}

cached_clock!(KernelClock, |s| host_now_ns());

#[cfg(test)]
mod tests {
    use super::*;

    fn state(maxerror_us: i64, esterror_us: i64, unsync: bool) -> KernelState {
        KernelState {
            maxerror_us,
            esterror_us,
            status: if unsync { libc::STA_UNSYNC } else { 0 },
            state: if unsync {
                libc::TIME_ERROR
            } else {
                libc::TIME_OK
            },
        }
    }

    #[test]
    fn chrony_host_is_synchronized_under_its_own_threshold() {
        let s = KernelClockSettings::default();
        // chrony with a local PHC: maxerror 40 µs.
        assert_eq!(
            evaluate(&state(40, 2, false), &s, None),
            (40_000, ClockStatus::Synchronized)
        );
        // Over the configured threshold (1 ms): degraded, not unsynchronized.
        assert_eq!(
            evaluate(&state(3_000, 2, false), &s, None),
            (3_000_000, ClockStatus::Degraded)
        );
        // esterror as the bound, if so configured.
        let e = KernelClockSettings {
            bound: KernelBound::Esterror,
            ..s
        };
        assert_eq!(
            evaluate(&state(3_000, 2, false), &e, None),
            (2_000, ClockStatus::Synchronized)
        );
    }

    #[test]
    fn unsynchronized_kernel_stays_unsynchronized_whatever_the_declared_bound() {
        let s = KernelClockSettings::default();
        // The kernel's default on a host nobody disciplines: 16 s, STA_UNSYNC.
        assert_eq!(
            evaluate(&state(16_000_000, 16_000_000, true), &s, None),
            (16_000_000_000, ClockStatus::Unsynchronized)
        );
        // A declared bound replaces the figure, never the status.
        assert_eq!(
            evaluate(&state(16_000_000, 16_000_000, true), &s, Some(200)),
            (200, ClockStatus::Unsynchronized)
        );
        assert_eq!(
            evaluate(&state(16_000_000, 0, false), &s, Some(200)),
            (200, ClockStatus::Synchronized)
        );
    }

    #[test]
    fn this_host_reports_a_consistent_state() {
        let c = KernelClock::new(KernelClockSettings::default(), None);
        let (_, status) = c.current();
        // Cached: a second reading within the refresh period agrees.
        assert_eq!(c.current().1, status);
        if KernelState::read().unsynchronized() {
            assert_eq!(status, ClockStatus::Unsynchronized);
        }
        assert_eq!(c.steps(), 0);
    }
}
