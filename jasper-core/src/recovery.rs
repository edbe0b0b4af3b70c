//! The receiver's side of loss recovery: which sequences are missing, when
//! to ask the upstreams for them, and when to give up and report them lost.
//!
//! A gap is not asked for at once: with hedging, a second copy is usually
//! on its way. The delay before the first request follows how late the
//! hedged (or reordered) copies that *did* fill gaps arrived — the p90 of
//! the recent fill delays — clamped to `[nak_delay_min_ns,
//! nak_delay_max_ns]`, rather than a fixed 10 ms. A range still missing is
//! asked for again every `retry_ns` and reported lost, with its bounds,
//! after `give_up_ns`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::deadline::QuantileTracker;

/// `[receiver.core.recovery]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Ask upstreams for missing sequences (off = detect and report only).
    pub enabled: bool,
    /// Shortest wait before the first request, ns.
    pub nak_delay_min_ns: u64,
    /// Longest wait before the first request, ns.
    pub nak_delay_max_ns: u64,
    /// Interval between repeated requests for a range, ns.
    pub retry_ns: u64,
    /// A range still missing this long after it was detected is reported
    /// lost, ns. Below the guard's `deadline_past_ns` (older copies would
    /// be refused anyway).
    pub give_up_ns: u64,
    /// Most missing ranges tracked; a gap beyond it is reported lost at once.
    pub max_ranges: usize,
    /// Most sequences asked for in one request.
    pub max_request: u32,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            enabled: true,
            nak_delay_min_ns: 30_000,
            nak_delay_max_ns: 1_000_000,
            retry_ns: 1_000_000,
            give_up_ns: 500_000_000,
            max_ranges: 1024,
            max_request: 4096,
        }
    }
}

/// A request to send to every upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Stream.
    pub stream: u32,
    /// Session.
    pub session: u32,
    /// First sequence wanted.
    pub first: u64,
    /// How many.
    pub count: u32,
}

/// A range given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Stream.
    pub stream: u32,
    /// Session.
    pub session: u32,
    /// First lost sequence.
    pub first: u64,
    /// How many.
    pub count: u64,
}

/// How a missing sequence turned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// After a request went out (a retransmission), not a late hedged copy.
    pub requested: bool,
    /// Time from detection to arrival, ns.
    pub delay_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    stream: u32,
    session: u32,
    first: u64,
    end: u64,
    detected_ns: u64,
    next_ns: u64,
    requested: bool,
}

/// Missing ranges of every stream of one receiver.
#[derive(Debug)]
#[repr(C)]
pub struct Gaps {
    ranges: VecDeque<Missing>,
    cfg: RecoveryConfig,
    fill_delays: QuantileTracker,
}

impl Gaps {
    /// An empty tracker.
    pub fn new(cfg: RecoveryConfig) -> Self {
        Gaps {
            cfg,
            ranges: VecDeque::new(),
            fill_delays: QuantileTracker::new(1_000_000_000, 0.9, 256),
        }
    }

    /// Ranges tracked now.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Nothing missing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Sequences missing now.
    pub fn missing(&self) -> u64 {
        self.ranges.iter().map(|m| m.end - m.first).sum()
    }

    /// The current wait before a first request, ns.
    pub fn nak_delay_ns(&mut self, now_ns: u64) -> u64 {
        let seen = self.fill_delays.quantile(now_ns).unwrap_or(0);
        (seen + seen / 4).clamp(self.cfg.nak_delay_min_ns, self.cfg.nak_delay_max_ns)
    }

    /// `first .. end` of `stream` went missing at `now_ns`. Returns the
    /// range when it cannot be tracked (too many ranges): lost at once.
    pub fn open(
        &mut self,
        now_ns: u64,
        stream: u32,
        session: u32,
        first: u64,
        end: u64,
    ) -> Option<Lost> {
        if first >= end {
            return None;
        }
        if self.ranges.len() >= self.cfg.max_ranges {
            return Some(Lost {
                stream,
                session,
                first,
                count: end - first,
            });
        }
        let delay = self.nak_delay_ns(now_ns);
        self.ranges.push_back(Missing {
            stream,
            session,
            first,
            end,
            detected_ns: now_ns,
            next_ns: now_ns.saturating_add(delay),
            requested: false,
        });
        None
    }

    /// Sequence `seq` of `stream` arrived; `Some` when it was missing.
    pub fn fill(&mut self, now_ns: u64, stream: u32, seq: u64) -> Option<Filled> {
        let i = self
            .ranges
            .iter()
            .position(|m| m.stream == stream && m.first <= seq && seq < m.end)?;
        let m = self.ranges[i];
        let filled = Filled {
            requested: m.requested,
            delay_ns: now_ns.saturating_sub(m.detected_ns),
        };
        if !m.requested {
            self.fill_delays.observe(now_ns, filled.delay_ns);
        }
        match (seq == m.first, seq + 1 == m.end) {
            (true, true) => {
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i].first = seq + 1,
            (false, true) => self.ranges[i].end = seq,
            (false, false) => {
                self.ranges[i].end = seq;
                self.ranges.insert(
                    i + 1,
                    Missing {
                        first: seq + 1,
                        ..m
                    },
                );
            }
        }
        Some(filled)
    }

    /// Forget `stream`'s ranges (a new session): returned as lost.
    pub fn close_stream(&mut self, stream: u32, mut lost: impl FnMut(Lost)) {
        self.ranges.retain(|m| {
            if m.stream == stream {
                lost(Lost {
                    stream: m.stream,
                    session: m.session,
                    first: m.first,
                    count: m.end - m.first,
                });
                false
            } else {
                true
            }
        });
    }

    /// Ranges of `stream` below `floor` can no longer be accepted (the
    /// dedup window moved past them): reported lost.
    pub fn below(&mut self, stream: u32, floor: u64, mut lost: impl FnMut(Lost)) {
        for m in self.ranges.iter_mut().filter(|m| m.stream == stream) {
            if m.first < floor {
                let end = m.end.min(floor);
                lost(Lost {
                    stream,
                    session: m.session,
                    first: m.first,
                    count: end - m.first,
                });
                m.first = end;
            }
        }
        self.ranges.retain(|m| m.first < m.end);
    }

    /// When [`Gaps::poll`] next has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.ranges.iter().map(|m| m.next_ns).min()
    }

    /// Requests due at `now_ns` (`request`), and ranges given up (`lost`).
    pub fn poll(
        &mut self,
        now_ns: u64,
        mut request: impl FnMut(Request),
        mut lost: impl FnMut(Lost),
    ) {
        if self.ranges.is_empty() {
            return;
        }
        let cfg = self.cfg;
        self.ranges.retain_mut(|m| {
            if now_ns.saturating_sub(m.detected_ns) >= cfg.give_up_ns {
                lost(Lost {
                    stream: m.stream,
                    session: m.session,
                    first: m.first,
                    count: m.end - m.first,
                });
                return false;
            }
            if now_ns >= m.next_ns {
                if cfg.enabled {
                    let mut first = m.first;
                    while first < m.end {
                        let count = (m.end - first).min(cfg.max_request.max(1) as u64);
                        request(Request {
                            stream: m.stream,
                            session: m.session,
                            first,
                            count: count as u32,
                        });
                        first += count;
                    }
                    m.requested = true;
                }
                m.next_ns = if cfg.enabled {
                    now_ns.saturating_add(cfg.retry_ns)
                } else {
                    m.detected_ns.saturating_add(cfg.give_up_ns)
                };
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_after_the_nak_delay_then_retries_then_gives_up() {
        let cfg = RecoveryConfig::default();
        let mut g = Gaps::new(cfg);
        assert!(g.open(1_000, 1, 7, 10, 13).is_none());
        let mut reqs = Vec::new();
        let mut lost = Vec::new();
        g.poll(1_000, |r| reqs.push(r), |l| lost.push(l));
        assert!(reqs.is_empty(), "not before the NAK delay");
        g.poll(
            1_000 + cfg.nak_delay_min_ns,
            |r| reqs.push(r),
            |l| lost.push(l),
        );
        assert_eq!(
            reqs,
            vec![Request {
                stream: 1,
                session: 7,
                first: 10,
                count: 3
            }]
        );
        // A retransmission fills the middle: two ranges remain, marked requested.
        let f = g.fill(200_000, 1, 11).unwrap();
        assert!(f.requested);
        assert_eq!(f.delay_ns, 199_000);
        assert_eq!(g.missing(), 2);
        g.poll(
            1_000 + cfg.nak_delay_min_ns + cfg.retry_ns,
            |r| reqs.push(r),
            |l| lost.push(l),
        );
        assert_eq!(reqs.len(), 3);
        g.poll(1_000 + cfg.give_up_ns, |r| reqs.push(r), |l| lost.push(l));
        assert_eq!(
            lost.iter().map(|l| (l.first, l.count)).collect::<Vec<_>>(),
            vec![(10, 1), (12, 1)]
        );
        assert!(g.is_empty());
    }

    #[test]
    fn nak_delay_follows_how_late_hedged_copies_fill_gaps() {
        let cfg = RecoveryConfig::default();
        let mut g = Gaps::new(cfg);
        assert_eq!(g.nak_delay_ns(0), cfg.nak_delay_min_ns);
        for i in 0..100u64 {
            let t = 1_000_000 + i * 1_000_000;
            g.open(t, 1, 1, i, i + 1);
            assert!(!g.fill(t + 200_000, 1, i).unwrap().requested);
        }
        assert_eq!(g.nak_delay_ns(101_000_000), 250_000);
        // Never beyond the maximum, whatever the copies did.
        g.open(200_000_000, 1, 1, 500, 501);
        g.fill(300_000_000, 1, 500);
        for _ in 0..50 {
            g.open(300_000_000, 1, 1, 600, 601);
            g.fill(310_000_000, 1, 600);
        }
        assert_eq!(g.nak_delay_ns(310_000_000), cfg.nak_delay_max_ns);
    }

    #[test]
    fn bounded_ranges_and_windows_report_lost_never_silently() {
        let mut g = Gaps::new(RecoveryConfig {
            max_ranges: 2,
            ..RecoveryConfig::default()
        });
        assert!(g.open(0, 1, 1, 0, 5).is_none());
        assert!(g.open(0, 1, 1, 10, 20).is_none());
        assert_eq!(g.open(0, 1, 1, 30, 31).unwrap().count, 1);
        let mut lost = Vec::new();
        g.below(1, 12, |l| lost.push((l.first, l.count)));
        assert_eq!(lost, vec![(0, 5), (10, 2)]);
        g.close_stream(1, |l| lost.push((l.first, l.count)));
        assert_eq!(lost.last(), Some(&(12, 8)));
        assert!(g.is_empty());
    }

    #[test]
    fn a_long_gap_is_asked_for_in_bounded_requests() {
        let mut g = Gaps::new(RecoveryConfig {
            max_request: 100,
            ..RecoveryConfig::default()
        });
        g.open(0, 1, 1, 0, 250);
        let mut reqs = Vec::new();
        g.poll(10_000_000, |r| reqs.push((r.first, r.count)), |_| {});
        assert_eq!(reqs, vec![(0, 100), (100, 100), (200, 50)]);
    }
}
