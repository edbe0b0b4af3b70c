//! AWS ClockBound as the time source: CLOCK_REALTIME, disciplined by
//! chrony, with the bound and status the ClockBound daemon publishes in a
//! shared-memory segment (default `/var/run/clockbound/shm0`).
//!
//! Segment layout (protocol versions 1 and 2, native endianness; see the
//! ClockBound project's `docs/PROTOCOL.md`):
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic, 8 bytes `41 4D 5A 4E 43 42 02 00` |
//! | 8 | segment size, u32 |
//! | 12 | version, u16 |
//! | 14 | generation, u16: odd while the daemon writes, even when done, never 0 once written |
//! | 16 | as-of, CLOCK_MONOTONIC_COARSE timespec (i64 s, i64 ns) |
//! | 32 | void-after, same clock and form |
//! | 48 | bound at as-of, i64 ns |
//! | v2: 56 / v1: — | disruption marker, u64 |
//! | v2: 64 / v1: 56 | max drift, u32 ppb |
//! | v2: 68 / v1: 64 | clock status, i32: 0 unknown, 1 synchronized, 2 free running, 3 disrupted (v2) |
//!
//! Reading is seqlock-style and needs no syscall: load the generation
//! (acquire), retry while it is odd, copy the fields, load it again and
//! retry if it moved. The snapshot is taken once per `refresh_ns` (1 ms);
//! the bound at any instant is `bound + max_drift × (now − as_of)` on
//! CLOCK_MONOTONIC, and past void-after nothing is promised
//! (unsynchronized).

use std::cell::Cell;
use std::fs::File;
use std::sync::atomic::{fence, AtomicU16, Ordering};

use jasper_core::clock::ClockStatus;
use jasper_core::config::ClockBoundSettings;

use crate::clock::{mono_now_ns, worse, ClockError, StepDetector, STEP_SETTLE_NS};
use crate::host_now_ns;

/// The segment's magic number.
pub const MAGIC: [u8; 8] = [0x41, 0x4D, 0x5A, 0x4E, 0x43, 0x42, 0x02, 0x00];

/// Attempts at a consistent snapshot before giving up for this refresh.
const READ_ATTEMPTS: usize = 64;

/// The daemon's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonStatus {
    /// 0: unknown.
    Unknown,
    /// 1: kept accurate by the synchronization daemon.
    Synchronized,
    /// 2: free running (the bound keeps growing by the max drift).
    FreeRunning,
    /// 3: disrupted (e.g. the VM was live-migrated): no bound.
    Disrupted,
    /// Anything else.
    Other(i32),
}

impl From<i32> for DaemonStatus {
    fn from(v: i32) -> Self {
        match v {
            0 => DaemonStatus::Unknown,
            1 => DaemonStatus::Synchronized,
            2 => DaemonStatus::FreeRunning,
            3 => DaemonStatus::Disrupted,
            x => DaemonStatus::Other(x),
        }
    }
}

/// A consistent copy of the segment's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Layout version (1 or 2).
    pub version: u16,
    /// Generation the copy was taken at (even).
    pub generation: u16,
    /// When the bound was computed, CLOCK_MONOTONIC(_COARSE) ns.
    pub as_of_ns: u64,
    /// After this (same clock), the bound must not be trusted.
    pub void_after_ns: u64,
    /// Bound on |CLOCK_REALTIME − true time| at `as_of_ns`, ns.
    pub bound_ns: u64,
    /// Growth of the bound, ppb.
    pub max_drift_ppb: u32,
    /// Daemon status.
    pub status: DaemonStatus,
}

/// Bound and status at monotonic instant `mono_ns` from a snapshot.
pub fn evaluate(s: &Snapshot, mono_ns: u64, degraded_above_ns: u64) -> (u64, ClockStatus) {
    if mono_ns > s.void_after_ns {
        return (u64::MAX, ClockStatus::Unsynchronized);
    }
    let age = mono_ns.saturating_sub(s.as_of_ns) as u128;
    let bound = s
        .bound_ns
        .saturating_add((age * s.max_drift_ppb as u128 / 1_000_000_000) as u64);
    let status = match s.status {
        DaemonStatus::Synchronized if bound <= degraded_above_ns => ClockStatus::Synchronized,
        DaemonStatus::Synchronized | DaemonStatus::FreeRunning => ClockStatus::Degraded,
        DaemonStatus::Unknown | DaemonStatus::Disrupted | DaemonStatus::Other(_) => {
            return (u64::MAX, ClockStatus::Unsynchronized)
        }
    };
    (bound, status)
}

fn timespec_ns(sec: i64, nsec: i64) -> u64 {
    (sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(nsec.clamp(0, 999_999_999) as u64)
}

/// Why a snapshot could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// Generation 0: the daemon has not written the segment yet.
    NotInitialized,
    /// The daemon kept writing during every attempt.
    Busy,
}

/// The mapped segment.
#[derive(Debug)]
pub struct Segment {
    map: memmap2::Mmap,
    version: u16,
}

impl Segment {
    /// Map `path` read-only and check its header.
    pub fn open(path: &str) -> Result<Segment, ClockError> {
        let bad = |error: String| ClockError::Open {
            what: path.into(),
            error,
        };
        let file = File::open(path).map_err(|e| bad(e.to_string()))?;
        // SAFETY: the mapping is read-only and the daemon rewrites it while
        // we hold it; we never form references into it except the atomic
        // generation counter, and read every other field with volatile
        // loads, validated by the seqlock protocol.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
        if map.len() < 72 {
            return Err(bad(format!(
                "{} bytes: too short for a ClockBound segment",
                map.len()
            )));
        }
        let seg = Segment { map, version: 0 };
        let magic: [u8; 8] = std::array::from_fn(|i| seg.byte(i));
        if magic != MAGIC {
            return Err(bad("not a ClockBound segment (bad magic)".into()));
        }
        let size = seg.u32_at(8) as usize;
        let version = seg.u16_at(12);
        let need = match version {
            1 => 72,
            2 => 80,
            v => {
                return Err(bad(format!(
                    "layout version {v} is not supported (1 and 2 are)"
                )))
            }
        };
        if size < need || size > seg.map.len() {
            return Err(bad(format!(
                "segment size {size} does not fit version {version} ({need} bytes) in a {}-byte file",
                seg.map.len()
            )));
        }
        Ok(Segment { version, ..seg })
    }

    fn ptr(&self, off: usize) -> *const u8 {
        debug_assert!(off < self.map.len());
        // SAFETY: every caller's offset + size is within the ≥ 72/80 bytes
        // checked at open.
        unsafe { self.map.as_ptr().add(off) }
    }
    fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        debug_assert!(off + N <= self.map.len());
        // SAFETY: in bounds (every offset + size lies within the ≥ 72/80
        // bytes checked at open); a volatile read of shared memory into an
        // array of bytes (alignment 1).
        unsafe { std::ptr::read_volatile(self.ptr(off) as *const [u8; N]) }
    }
    fn byte(&self, off: usize) -> u8 {
        self.bytes::<1>(off)[0]
    }
    fn u16_at(&self, off: usize) -> u16 {
        u16::from_ne_bytes(self.bytes(off))
    }
    fn u32_at(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.bytes(off))
    }
    fn i32_at(&self, off: usize) -> i32 {
        i32::from_ne_bytes(self.bytes(off))
    }
    fn i64_at(&self, off: usize) -> i64 {
        i64::from_ne_bytes(self.bytes(off))
    }
    fn generation(&self) -> u16 {
        // SAFETY: offset 14 of a page-aligned mapping is 2-byte aligned and
        // in bounds; the daemon updates it as a 16-bit value, so an atomic
        // view of it is sound.
        let g = unsafe { &*(self.ptr(14) as *const AtomicU16) };
        g.load(Ordering::Acquire)
    }

    /// A consistent copy of the fields (seqlock read, no syscall).
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        for _ in 0..READ_ATTEMPTS {
            let g1 = self.generation();
            if g1 == 0 {
                return Err(ReadError::NotInitialized);
            }
            if g1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let (drift_at, status_at) = if self.version == 1 {
                (56, 64)
            } else {
                (64, 68)
            };
            let s = Snapshot {
                version: self.version,
                generation: g1,
                as_of_ns: timespec_ns(self.i64_at(16), self.i64_at(24)),
                void_after_ns: timespec_ns(self.i64_at(32), self.i64_at(40)),
                bound_ns: self.i64_at(48).max(0) as u64,
                max_drift_ppb: self.u32_at(drift_at),
                status: DaemonStatus::from(self.i32_at(status_at)),
            };
            fence(Ordering::Acquire);
            if self.generation() == g1 {
                return Ok(s);
            }
        }
        Err(ReadError::Busy)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cached {
    read_mono_ns: Option<u64>,
    snapshot: Option<Snapshot>,
    busy: u64,
}

/// CLOCK_REALTIME with ClockBound's bound and status.
#[derive(Debug)]
pub struct ClockBoundClock {
    segment: Segment,
    settings: ClockBoundSettings,
    cache: Cell<Cached>,
    steps: Cell<StepDetector>,
}

impl ClockBoundClock {
    /// Map the segment.
    pub fn open(settings: &ClockBoundSettings) -> Result<ClockBoundClock, ClockError> {
        Ok(ClockBoundClock {
            segment: Segment::open(&settings.path)?,
            settings: settings.clone(),
            cache: Cell::new(Cached::default()),
            steps: Cell::new(StepDetector::new(settings.step_threshold_ns)),
        })
    }

    fn current(&self) -> (u64, ClockStatus) {
        let mono = mono_now_ns();
        let mut c = self.cache.get();
        if c.read_mono_ns
            .is_none_or(|t| mono.saturating_sub(t) >= self.settings.refresh_ns)
        {
            c.read_mono_ns = Some(mono);
            match self.segment.snapshot() {
                Ok(s) => c.snapshot = Some(s),
                // Keep the last good snapshot: its void-after still applies.
                Err(ReadError::Busy) => c.busy += 1,
                Err(ReadError::NotInitialized) => c.snapshot = None,
            }
            self.cache.set(c);
            let mut det = self.steps.get();
            det.observe(host_now_ns(), mono_now_ns());
            self.steps.set(det);
        }
        let Some(s) = c.snapshot else {
            return (u64::MAX, ClockStatus::Unsynchronized);
        };
        let (bound, mut status) = evaluate(&s, mono, self.settings.degraded_above_ns);
        if self.steps.get().stepped_within(mono, STEP_SETTLE_NS) {
            status = worse(status, ClockStatus::Degraded);
        }
        (bound, status)
    }

    /// Steps of CLOCK_REALTIME seen so far.
    pub fn steps(&self) -> u64 {
        self.steps.get().steps()
    }
}

cached_clock!(ClockBoundClock, |s| host_now_ns());

#[cfg(test)]
mod tests {
    use super::*;
    use jasper_core::clock::Clock;

    /// A synthetic v2 segment, as the daemon would write it.
    fn segment_v2(
        generation: u16,
        as_of_ns: u64,
        void_after_ns: u64,
        bound: i64,
        drift: u32,
        status: i32,
    ) -> Vec<u8> {
        let mut b = vec![0u8; 80];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&80u32.to_ne_bytes());
        b[12..14].copy_from_slice(&2u16.to_ne_bytes());
        b[14..16].copy_from_slice(&generation.to_ne_bytes());
        let ts = |b: &mut [u8], at: usize, ns: u64| {
            b[at..at + 8].copy_from_slice(&((ns / 1_000_000_000) as i64).to_ne_bytes());
            b[at + 8..at + 16].copy_from_slice(&((ns % 1_000_000_000) as i64).to_ne_bytes());
        };
        ts(&mut b, 16, as_of_ns);
        ts(&mut b, 32, void_after_ns);
        b[48..56].copy_from_slice(&bound.to_ne_bytes());
        b[64..68].copy_from_slice(&drift.to_ne_bytes());
        b[68..72].copy_from_slice(&status.to_ne_bytes());
        b
    }

    fn write(name: &str, bytes: &[u8]) -> String {
        let p = std::env::temp_dir().join(format!("jasper-cb-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    #[test]
    fn reads_a_v2_segment() {
        let p = write(
            "v2",
            &segment_v2(10, 5_000_000_000, 15_000_000_000, 30_000, 15_000, 1),
        );
        let seg = Segment::open(&p).unwrap();
        let s = seg.snapshot().unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(
            s,
            Snapshot {
                version: 2,
                generation: 10,
                as_of_ns: 5_000_000_000,
                void_after_ns: 15_000_000_000,
                bound_ns: 30_000,
                max_drift_ppb: 15_000,
                status: DaemonStatus::Synchronized,
            }
        );
        // At as-of: the bound itself; 1 s later, + 15 ppm × 1 s = 15 µs.
        assert_eq!(
            evaluate(&s, 5_000_000_000, 1_000_000),
            (30_000, ClockStatus::Synchronized)
        );
        assert_eq!(
            evaluate(&s, 6_000_000_000, 1_000_000),
            (45_000, ClockStatus::Synchronized)
        );
        // Above the configured threshold: degraded.
        assert_eq!(evaluate(&s, 6_000_000_000, 40_000).1, ClockStatus::Degraded);
        // Past void-after: nothing is promised.
        assert_eq!(
            evaluate(&s, 15_000_000_001, 1_000_000),
            (u64::MAX, ClockStatus::Unsynchronized)
        );
    }

    #[test]
    fn reads_a_v1_segment() {
        let mut b = vec![0u8; 72];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&72u32.to_ne_bytes());
        b[12..14].copy_from_slice(&1u16.to_ne_bytes());
        b[14..16].copy_from_slice(&2u16.to_ne_bytes());
        b[48..56].copy_from_slice(&1_000i64.to_ne_bytes());
        b[56..60].copy_from_slice(&7u32.to_ne_bytes());
        b[64..68].copy_from_slice(&2i32.to_ne_bytes());
        let p = write("v1", &b);
        let s = Segment::open(&p).unwrap().snapshot().unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!((s.version, s.bound_ns, s.max_drift_ppb), (1, 1_000, 7));
        assert_eq!(s.status, DaemonStatus::FreeRunning);
    }

    #[test]
    fn daemon_status_maps_to_ours() {
        let base = Snapshot {
            version: 2,
            generation: 2,
            as_of_ns: 0,
            void_after_ns: u64::MAX,
            bound_ns: 1_000,
            max_drift_ppb: 0,
            status: DaemonStatus::Synchronized,
        };
        let st = |status| evaluate(&Snapshot { status, ..base }, 10, 1_000_000).1;
        assert_eq!(st(DaemonStatus::Synchronized), ClockStatus::Synchronized);
        assert_eq!(st(DaemonStatus::FreeRunning), ClockStatus::Degraded);
        assert_eq!(st(DaemonStatus::Unknown), ClockStatus::Unsynchronized);
        assert_eq!(st(DaemonStatus::Disrupted), ClockStatus::Unsynchronized);
        assert_eq!(st(DaemonStatus::Other(9)), ClockStatus::Unsynchronized);
    }

    #[test]
    fn odd_or_zero_generation_is_not_read_as_data() {
        let p = write("odd", &segment_v2(7, 0, u64::MAX / 2, 10, 0, 1));
        let seg = Segment::open(&p).unwrap();
        assert_eq!(seg.snapshot(), Err(ReadError::Busy));
        let p0 = write("zero", &segment_v2(0, 0, u64::MAX / 2, 10, 0, 1));
        assert_eq!(
            Segment::open(&p0).unwrap().snapshot(),
            Err(ReadError::NotInitialized)
        );
        // The clock built on an unwritten segment says so.
        let c = ClockBoundClock::open(&ClockBoundSettings {
            path: p0.clone(),
            ..ClockBoundSettings::default()
        })
        .unwrap();
        assert_eq!(c.read().status, ClockStatus::Unsynchronized);
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&p0);
    }

    #[test]
    fn a_segment_updated_in_place_is_picked_up_at_the_next_refresh() {
        // Void-after far in the future on CLOCK_MONOTONIC; status synchronized.
        let now = mono_now_ns();
        let p = write(
            "live",
            &segment_v2(2, now, now + 3_600_000_000_000, 20_000, 0, 1),
        );
        let c = ClockBoundClock::open(&ClockBoundSettings {
            path: p.clone(),
            refresh_ns: 0,
            ..ClockBoundSettings::default()
        })
        .unwrap();
        let r = c.read();
        assert_eq!(
            (r.error_bound_ns, r.status),
            (20_000, ClockStatus::Synchronized)
        );
        // The daemon rewrites the segment in place and reports a
        // disruption: the next read sees it.
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(
            &segment_v2(4, now, now + 3_600_000_000_000, 20_000, 0, 3),
            0,
        )
        .unwrap();
        assert_eq!(c.read().status, ClockStatus::Unsynchronized);
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn malformed_segments_are_refused_with_a_reason() {
        let mut b = segment_v2(2, 0, 1, 1, 0, 1);
        b[0] = 0;
        let p = write("magic", &b);
        assert!(Segment::open(&p).unwrap_err().to_string().contains("magic"));
        let mut b = segment_v2(2, 0, 1, 1, 0, 1);
        b[12..14].copy_from_slice(&9u16.to_ne_bytes());
        std::fs::write(&p, &b).unwrap();
        assert!(Segment::open(&p)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        std::fs::write(&p, &b[..40]).unwrap();
        assert!(Segment::open(&p)
            .unwrap_err()
            .to_string()
            .contains("too short"));
        let _ = std::fs::remove_file(&p);
        assert!(Segment::open("/nonexistent/shm0").is_err());
    }
}
