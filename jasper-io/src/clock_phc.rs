//! A PTP hardware clock (`/dev/ptpN`) as the time source — e.g. the AWS ENA
//! PHC, disciplined by the cloud to its reference clock.
//!
//! Reading the PHC is a syscall (a dynamic POSIX clock), so the PHC is never
//! read per message: every `refresh_ns` (default 1 ms) the offset PHC −
//! CLOCK_REALTIME is measured with `PTP_SYS_OFFSET_EXTENDED` (the kernel
//! brackets each PHC read with two system-clock reads; the narrowest of 5
//! samples wins) or, where the driver lacks it, by bracketing
//! `clock_gettime` on the PHC with two CLOCK_REALTIME reads. In between,
//! `now = CLOCK_REALTIME + offset` (a vDSO read).
//!
//! Bound = the PHC's own accuracy (config) + half the measurement window +
//! the assumed drift since the measurement. Status: unsynchronized when no
//! measurement succeeded for `stale_after_ns`, degraded above
//! `degraded_above_ns` or for a while after a CLOCK_REALTIME step.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::AsRawFd;

use jasper_core::clock::ClockStatus;
use jasper_core::config::PhcSettings;

use crate::clock::{clock_ns, mono_now_ns, worse, ClockError, StepDetector, STEP_SETTLE_NS};
use crate::host_now_ns;

const SAMPLES: usize = 5;

/// One bracketed reading: system clock before, PHC, system clock after (ns).
pub type Sample = (i128, i128, i128);

/// Offset PHC − system clock from the narrowest bracketed sample, and its
/// uncertainty (half the window), ns. `None` without a usable sample.
pub fn best_offset(samples: &[Sample]) -> Option<(i64, u64)> {
    samples
        .iter()
        .filter(|(b, _, a)| a >= b)
        .min_by_key(|(b, _, a)| a - b)
        .map(|(b, p, a)| {
            let mid = b + (a - b) / 2;
            ((p - mid) as i64, ((a - b) / 2) as u64)
        })
}

/// Bound and status of a PHC reading from the last good measurement
/// (`uncertainty_ns`, taken `age_ns` ago; `None` if none yet).
pub fn evaluate(s: &PhcSettings, last: Option<(u64, u64)>) -> (u64, ClockStatus) {
    match last {
        Some((uncertainty_ns, age_ns)) if age_ns <= s.stale_after_ns => {
            let drift = (age_ns as u128 * s.max_drift_ppb as u128 / 1_000_000_000) as u64;
            let bound = s
                .accuracy_ns
                .saturating_add(uncertainty_ns)
                .saturating_add(drift);
            let status = if bound > s.degraded_above_ns {
                ClockStatus::Degraded
            } else {
                ClockStatus::Synchronized
            };
            (bound, status)
        }
        _ => (u64::MAX, ClockStatus::Unsynchronized),
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cached {
    tried_mono_ns: Option<u64>,
    /// (offset, uncertainty, measured at monotonic ns).
    good: Option<(i64, u64, u64)>,
    failures: u64,
}

/// A PTP hardware clock, read through a cached offset to CLOCK_REALTIME.
#[derive(Debug)]
pub struct PhcClock {
    file: File,
    clockid: libc::clockid_t,
    settings: PhcSettings,
    extended: Cell<bool>,
    cache: Cell<Cached>,
    steps: Cell<StepDetector>,
}

fn ts_ns(t: &libc::ptp_clock_time) -> i128 {
    t.sec as i128 * 1_000_000_000 + t.nsec as i128
}

impl PhcClock {
    /// Open the device and take a first measurement.
    pub fn open(settings: &PhcSettings) -> Result<PhcClock, ClockError> {
        let file = File::open(&settings.device).map_err(|e| ClockError::Open {
            what: settings.device.clone(),
            error: e.to_string(),
        })?;
        // A dynamic POSIX clock: clockid = (~fd << 3) | CLOCKFD (3).
        let clockid = ((!file.as_raw_fd()) << 3) | 3;
        if clock_ns(clockid).is_none() {
            return Err(ClockError::Open {
                what: settings.device.clone(),
                error: "not a PTP clock (clock_gettime failed)".into(),
            });
        }
        let c = PhcClock {
            file,
            clockid,
            settings: settings.clone(),
            extended: Cell::new(true),
            cache: Cell::new(Cached::default()),
            steps: Cell::new(StepDetector::new(settings.step_threshold_ns)),
        };
        c.refresh(mono_now_ns());
        Ok(c)
    }

    fn samples_extended(&self) -> Option<Vec<Sample>> {
        // SAFETY: plain old data; all-zero is a valid request header
        // (clockid 0 = CLOCK_REALTIME on kernels that read it).
        let mut req: libc::ptp_sys_offset_extended = unsafe { std::mem::zeroed() };
        req.n_samples = SAMPLES as u32;
        // SAFETY: the fd is open for the lifetime of `self.file`; `req` is a
        // valid, exclusively borrowed struct of the size the ioctl encodes.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::PTP_SYS_OFFSET_EXTENDED,
                &mut req as *mut libc::ptp_sys_offset_extended,
            )
        };
        if rc != 0 {
            return None;
        }
        let n = (req.n_samples as usize).min(SAMPLES);
        Some(
            req.ts[..n]
                .iter()
                .map(|t| (ts_ns(&t[0]), ts_ns(&t[1]), ts_ns(&t[2])))
                .collect(),
        )
    }

    fn samples_bracketed(&self) -> Option<Vec<Sample>> {
        let mut out = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let b = clock_ns(libc::CLOCK_REALTIME)? as i128;
            let p = clock_ns(self.clockid)? as i128;
            let a = clock_ns(libc::CLOCK_REALTIME)? as i128;
            out.push((b, p, a));
        }
        Some(out)
    }

    fn refresh(&self, mono: u64) {
        let mut c = self.cache.get();
        c.tried_mono_ns = Some(mono);
        let samples = if self.extended.get() {
            self.samples_extended().or_else(|| {
                // The driver does not offer it: bracket reads from now on.
                self.extended.set(false);
                self.samples_bracketed()
            })
        } else {
            self.samples_bracketed()
        };
        match samples.as_deref().and_then(best_offset) {
            Some((offset, unc)) => c.good = Some((offset, unc, mono)),
            None => c.failures += 1,
        }
        self.cache.set(c);
        let mut det = self.steps.get();
        det.observe(host_now_ns(), mono_now_ns());
        self.steps.set(det);
    }

    fn cached(&self) -> (Cached, u64) {
        let mono = mono_now_ns();
        let c = self.cache.get();
        if c.tried_mono_ns
            .is_none_or(|t| mono.saturating_sub(t) >= self.settings.refresh_ns)
        {
            self.refresh(mono);
            return (self.cache.get(), mono);
        }
        (c, mono)
    }

    fn offset_ns(&self) -> i64 {
        let (c, _) = self.cached();
        c.good.map_or(0, |g| g.0) + self.settings.utc_offset_ns
    }

    fn current(&self) -> (u64, ClockStatus) {
        let (c, mono) = self.cached();
        let (bound, mut status) = evaluate(
            &self.settings,
            c.good.map(|(_, unc, at)| (unc, mono.saturating_sub(at))),
        );
        if self.steps.get().stepped_within(mono, STEP_SETTLE_NS) {
            status = worse(status, ClockStatus::Degraded);
        }
        (bound, status)
    }

    /// PHC-derived time at host time `host_ns` (CLOCK_REALTIME).
    pub fn at(&self, host_ns: u64) -> u64 {
        host_ns.saturating_add_signed(self.offset_ns())
    }

    /// Host time at which the PHC-derived time reads `local_ns`.
    pub fn host_time_of(&self, local_ns: u64) -> u64 {
        local_ns.saturating_add_signed(-self.offset_ns())
    }

    /// Failed offset measurements so far.
    pub fn failures(&self) -> u64 {
        self.cache.get().failures
    }

    /// Steps of CLOCK_REALTIME seen so far.
    pub fn steps(&self) -> u64 {
        self.steps.get().steps()
    }
}

cached_clock!(PhcClock, |s| s.at(host_now_ns()));

#[cfg(test)]
mod tests {
    use super::*;
    use jasper_core::clock::Clock;

    #[test]
    fn narrowest_sample_gives_the_offset() {
        // PHC 1000 ns ahead; windows 400, 60 and 2000 ns wide.
        let s = [
            (10_000, 11_200, 10_400),
            (20_000, 21_030, 20_060),
            (30_000, 32_000, 32_000),
        ];
        assert_eq!(best_offset(&s), Some((1_000, 30)));
        // A PHC behind the system clock, and a reversed (bogus) window ignored.
        assert_eq!(
            best_offset(&[(5_000, 4_000, 5_010), (9, 0, 1)]),
            Some((-1_005, 5))
        );
        assert_eq!(best_offset(&[]), None);
    }

    #[test]
    fn bound_grows_with_age_and_goes_stale() {
        let s = PhcSettings {
            accuracy_ns: 10_000,
            max_drift_ppb: 50_000,
            degraded_above_ns: 12_000,
            stale_after_ns: 100_000_000,
            ..PhcSettings::default()
        };
        assert_eq!(
            evaluate(&s, Some((100, 0))),
            (10_100, ClockStatus::Synchronized)
        );
        // 50 ppm over 20 ms = 1 µs more; over 40 ms crosses the threshold.
        assert_eq!(
            evaluate(&s, Some((100, 20_000_000))),
            (11_100, ClockStatus::Synchronized)
        );
        assert_eq!(
            evaluate(&s, Some((100, 40_000_000))).1,
            ClockStatus::Degraded
        );
        assert_eq!(
            evaluate(&s, Some((100, 200_000_000))),
            (u64::MAX, ClockStatus::Unsynchronized)
        );
        assert_eq!(evaluate(&s, None).1, ClockStatus::Unsynchronized);
    }

    #[test]
    fn a_missing_device_is_a_clear_error() {
        let e = PhcClock::open(&PhcSettings {
            device: "/dev/ptp-none-here".into(),
            ..PhcSettings::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("/dev/ptp-none-here"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_ptp_clock_is_refused() {
        let p = std::env::temp_dir().join(format!("jasper-not-ptp-{}", std::process::id()));
        std::fs::write(&p, b"x").unwrap();
        let e = PhcClock::open(&PhcSettings {
            device: p.display().to_string(),
            ..PhcSettings::default()
        })
        .unwrap_err();
        let _ = std::fs::remove_file(&p);
        assert!(e.to_string().contains("not a PTP clock"), "{e}");
    }

    #[test]
    fn a_real_phc_reads_close_to_the_system_clock_when_present() {
        // Runs only where /dev/ptp0 exists (cloud VMs with a PHC).
        let Ok(c) = PhcClock::open(&PhcSettings::default()) else {
            return;
        };
        let r = c.read();
        assert!(r.status != ClockStatus::Unsynchronized || c.failures() > 0);
    }
}
