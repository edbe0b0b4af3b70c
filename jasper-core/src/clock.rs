//! Synchronized time as the core sees it.
//!
//! The core never reads a clock: drivers read a [`Clock`] and pass `now`
//! (nanoseconds since the Unix epoch, in synchronized time) and the error
//! bound into the state machines. The trait lives here so every driver
//! (kernel, DPDK, simulator) offers the same contract.

use serde::{Deserialize, Serialize};

/// How trustworthy the clock currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStatus {
    /// Disciplined; `error_bound_ns` holds.
    Synchronized,
    /// Still disciplined but the bound is larger than configured or growing
    /// (e.g. lost its reference recently). Deadlines include the bound.
    Degraded,
    /// Not synchronized: fairness cannot be claimed. Nodes keep running and
    /// show this state in their counters and reports.
    Unsynchronized,
}

impl ClockStatus {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            ClockStatus::Synchronized => "synchronized",
            ClockStatus::Degraded => "degraded",
            ClockStatus::Unsynchronized => "unsynchronized",
        }
    }
}

/// One reading: time, bound and status together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Synchronized nanoseconds since the Unix epoch.
    pub now_ns: u64,
    /// |true time − now_ns| ≤ this, when status is not `Unsynchronized`.
    pub error_bound_ns: u64,
    /// Status.
    pub status: ClockStatus,
}

/// A source of synchronized time. Implemented by drivers (system clock,
/// emulated clock, simulated clock), never called by the core.
pub trait Clock {
    /// Synchronized nanoseconds since the Unix epoch.
    fn now_ns(&self) -> u64;
    /// Current error bound, ns.
    fn error_bound_ns(&self) -> u64;
    /// Current status.
    fn status(&self) -> ClockStatus;
    /// All three at once.
    fn read(&self) -> Reading {
        Reading {
            now_ns: self.now_ns(),
            error_bound_ns: self.error_bound_ns(),
            status: self.status(),
        }
    }
}

/// Clock quality classes of the reference cloud model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockClass {
    /// Huygens-class software sync: offset σ 50 ns, bound ±200 ns.
    #[default]
    Huygens,
    /// PTP hardware clock on a cloud VM: bound ±5 µs.
    Ptp,
    /// NTP/chrony: bound ±500 µs.
    Ntp,
}

impl ClockClass {
    /// Error bound of the class, ns.
    pub fn bound_ns(self) -> u64 {
        match self {
            ClockClass::Huygens => 200,
            ClockClass::Ptp => 5_000,
            ClockClass::Ntp => 500_000,
        }
    }
    /// Standard deviation of the per-node offset, ns (bound / 4).
    pub fn offset_sigma_ns(self) -> f64 {
        match self {
            ClockClass::Huygens => 50.0,
            ClockClass::Ptp => 1_250.0,
            ClockClass::Ntp => 125_000.0,
        }
    }
    /// Parse a class name.
    pub fn parse(s: &str) -> Option<ClockClass> {
        match s {
            "huygens" => Some(ClockClass::Huygens),
            "ptp" => Some(ClockClass::Ptp),
            "ntp" => Some(ClockClass::Ntp),
            _ => None,
        }
    }
    /// Name.
    pub fn name(self) -> &'static str {
        match self {
            ClockClass::Huygens => "huygens",
            ClockClass::Ptp => "ptp",
            ClockClass::Ntp => "ntp",
        }
    }
}

/// A clock set by hand (tests, invoker-mode drivers). Reads nothing.
#[derive(Debug, Clone, Copy)]
pub struct ManualClock {
    /// Current reading.
    pub reading: Reading,
}

impl ManualClock {
    /// A synchronized clock at `now_ns` with `bound_ns`.
    pub fn new(now_ns: u64, bound_ns: u64) -> Self {
        ManualClock {
            reading: Reading {
                now_ns,
                error_bound_ns: bound_ns,
                status: ClockStatus::Synchronized,
            },
        }
    }
    /// Move time forward.
    pub fn advance(&mut self, ns: u64) {
        self.reading.now_ns += ns;
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.reading.now_ns
    }
    fn error_bound_ns(&self) -> u64 {
        self.reading.error_bound_ns
    }
    fn status(&self) -> ClockStatus {
        self.reading.status
    }
}
