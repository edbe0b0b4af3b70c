//! What both sides share: the clock, the message layout, pacing, what a
//! receiving application records, and the figures computed from it. Every
//! definition is applied to Aeron and to Jasper-rs by the same code.

use std::time::{Duration, Instant};

/// Wall-clock time, ns (CLOCK_REALTIME through the vDSO). Both sides stamp
/// sends and hand-overs with this one function.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Bytes of every message the benchmark itself uses: send time (8, LE) and
/// sequence (8, LE); the rest of the message is filler.
pub const STAMP_BYTES: usize = 16;

/// Write the send time and sequence into a message.
pub fn stamp(msg: &mut [u8], seq: u64, sent_ns: u64) {
    msg[0..8].copy_from_slice(&sent_ns.to_le_bytes());
    msg[8..16].copy_from_slice(&seq.to_le_bytes());
}

/// Read (sequence, send time) back; `None` for a message too short.
pub fn read_stamp(msg: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_le_bytes(msg.get(0..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(msg.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}

/// What a trial measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every hand-over time is kept (latency and spread).
    Latency,
    /// Only counts are kept (zero-loss throughput, CPU).
    Throughput,
}

/// One trial: the same for both sides.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    /// Receivers (Aeron subscriptions; Jasper-rs MPs).
    pub n: usize,
    /// Message size, bytes.
    pub size: usize,
    /// Offered rate, msgs/s.
    pub rate: u64,
    /// Messages sent first and left out of every figure (latency trials).
    pub warmup: u64,
    /// Messages measured.
    pub messages: u64,
    /// What is kept.
    pub kind: Kind,
    /// Messages handed to the library at once: 1 for latency trials; for
    /// throughput, as many as fill one of that library's datagrams.
    pub burst: u64,
    /// A throughput trial fails unless every receiver had every message
    /// this long after the last one was due.
    pub slack: Duration,
}

impl Trial {
    /// Messages sent in all.
    pub fn total(&self) -> u64 {
        self.warmup + self.messages
    }
}

/// The publishing schedule: message k is due at start + k / rate; the
/// application hands messages over `burst` at a time (and the remainder at
/// the end).
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    rate: f64,
    total: u64,
    burst: u64,
}

impl Pacer {
    /// Start the schedule now.
    pub fn start(t: &Trial) -> Pacer {
        Pacer {
            start: Instant::now(),
            rate: t.rate as f64,
            total: t.total(),
            burst: t.burst.max(1),
        }
    }
    /// When the last message is due.
    pub fn end(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.total as f64 / self.rate)
    }
    /// How many messages to hand over now, `published` being handed so far.
    pub fn ready(&self, published: u64) -> u64 {
        let due = ((self.start.elapsed().as_secs_f64() * self.rate) as u64 + 1).min(self.total);
        let backlog = due.saturating_sub(published);
        if backlog >= self.burst || (due == self.total && backlog > 0) {
            backlog
        } else {
            0
        }
    }
    /// Time until the next burst is due (zero when it is).
    pub fn wait(&self, published: u64) -> Duration {
        let next = (published + self.burst).min(self.total).saturating_sub(1);
        let at = self.start + Duration::from_secs_f64(next as f64 / self.rate);
        at.saturating_duration_since(Instant::now())
    }
}

/// Sleep until the next burst is due, when it is far enough away for a
/// sleep to be worth it (sleeps overshoot by tens of µs here).
pub fn sleep_until_due(p: &Pacer, published: u64) {
    let w = p.wait(published);
    if w > Duration::from_micros(30) {
        std::thread::sleep(w - Duration::from_micros(20));
    }
}

/// What the receiving applications record (one per trial, owned by the
/// thread that hands messages over).
#[derive(Debug)]
pub struct Sink {
    n: usize,
    total: u64,
    warmup: u64,
    /// Hand-over times of measured messages, `[(seq - warmup) * n + r]`, 0
    /// when not handed over (latency trials only).
    times: Vec<u64>,
    /// Send times of measured messages (latency trials only).
    sent: Vec<u64>,
    /// Per receiver, a bit per sequence seen.
    seen: Vec<Vec<u64>>,
    /// Per receiver, distinct messages handed over.
    pub unique: Vec<u64>,
    /// Messages handed over twice (never expected).
    pub duplicates: u64,
    /// Messages whose stamp was unreadable or out of range.
    pub malformed: u64,
    /// Measured messages handed over marked late (hold-and-release).
    pub late: u64,
    /// Last hand-over, ns.
    pub last_ns: u64,
    /// Throughput trials: something was handed over since the last
    /// [`Sink::end_pass`].
    untimed: bool,
}

impl Sink {
    /// For `t`.
    pub fn new(t: &Trial) -> Sink {
        let total = t.total();
        let words = total.div_ceil(64) as usize;
        let (times, sent) = match t.kind {
            Kind::Latency => (
                vec![0; t.messages as usize * t.n],
                vec![0; t.messages as usize],
            ),
            Kind::Throughput => (Vec::new(), Vec::new()),
        };
        Sink {
            n: t.n,
            total,
            warmup: t.warmup,
            times,
            sent,
            seen: vec![vec![0; words]; t.n],
            unique: vec![0; t.n],
            duplicates: 0,
            malformed: 0,
            late: 0,
            last_ns: 0,
            untimed: false,
        }
    }

    /// The time to record a hand-over with: the clock in latency trials,
    /// where every hand-over is timed; 0 in throughput trials, which only
    /// need the last hand-over's time and take it once per pass
    /// ([`Sink::end_pass`]), on both sides alike.
    #[inline]
    pub fn now(&self) -> u64 {
        if self.times.is_empty() {
            0
        } else {
            now_ns()
        }
    }

    /// End of a pass over the receivers (both sides call it after each
    /// poll of their subscriptions / receivers): a throughput trial's
    /// hand-overs in that pass are taken to happen now.
    #[inline]
    pub fn end_pass(&mut self) {
        if self.untimed {
            self.untimed = false;
            self.last_ns = self.last_ns.max(now_ns());
        }
    }

    /// Receiver `r` was handed `msg` at `at_ns` (0: untimed, see
    /// [`Sink::now`]); `late` as the library marks it. Returns true for a
    /// new message.
    #[inline]
    pub fn deliver(&mut self, r: usize, msg: &[u8], at_ns: u64, late: bool) -> bool {
        let Some((seq, sent)) = read_stamp(msg) else {
            self.malformed += 1;
            return false;
        };
        if seq >= self.total || r >= self.n {
            self.malformed += 1;
            return false;
        }
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.seen[r][w] & (1 << b) != 0 {
            self.duplicates += 1;
            return false;
        }
        self.seen[r][w] |= 1 << b;
        self.unique[r] += 1;
        self.last_ns = self.last_ns.max(at_ns);
        self.untimed |= at_ns == 0;
        if seq >= self.warmup {
            let i = (seq - self.warmup) as usize;
            if late {
                self.late += 1;
            }
            if !self.times.is_empty() {
                self.times[i * self.n + r] = at_ns;
                self.sent[i] = sent;
            }
        }
        true
    }

    /// The fewest messages any receiver got.
    pub fn min_unique(&self) -> u64 {
        self.unique.iter().copied().min().unwrap_or(0)
    }

    /// Every receiver has every message.
    pub fn complete(&self) -> bool {
        self.min_unique() == self.total
    }

    /// One-way latencies (hand-over − send, every measured message at every
    /// receiver that got it) and spreads (max − min hand-over across the
    /// receivers, messages every receiver got), ns.
    pub fn latency_and_spread(&self) -> (Vec<u64>, Vec<u64>) {
        let mut lat = Vec::with_capacity(self.times.len());
        let mut spread = Vec::with_capacity(self.sent.len());
        for (i, &sent) in self.sent.iter().enumerate() {
            let row = &self.times[i * self.n..(i + 1) * self.n];
            let (mut lo, mut hi, mut all) = (u64::MAX, 0, true);
            for &t in row {
                if t == 0 {
                    all = false;
                    continue;
                }
                lat.push(t.saturating_sub(sent));
                lo = lo.min(t);
                hi = hi.max(t);
            }
            if all && sent != 0 {
                spread.push(hi - lo);
            }
        }
        (lat, spread)
    }
}

/// What one trial of one side measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Messages handed to the library.
    pub published: u64,
    /// Messages due.
    pub total: u64,
    /// The fewest messages a receiver got.
    pub min_unique: u64,
    /// Duplicates handed over.
    pub duplicates: u64,
    /// Malformed hand-overs.
    pub malformed: u64,
    /// Every receiver had every message within the slack after the last
    /// was due.
    pub on_time: bool,
    /// Process CPU, s (user + system) from the first send to the last
    /// hand-over (or the end of the trial).
    pub cpu_s: f64,
    /// Time the process's threads waited for a CPU over the same span, s
    /// (summed over threads).
    pub run_queue_s: f64,
    /// Wall time of that span, s.
    pub wall_s: f64,
    /// Deliveries (distinct messages × receivers).
    pub deliveries: u64,
    /// One-way latencies, ns (latency trials).
    pub latency_ns: Vec<u64>,
    /// Spreads, ns (latency trials).
    pub spread_ns: Vec<u64>,
    /// Measured deliveries marked late (Jasper-rs with hold-and-release).
    pub late: u64,
    /// Side-specific notes (counters worth a look when a trial fails).
    pub note: String,
}

impl Outcome {
    /// Zero loss: every message at every receiver, on time, exactly once.
    pub fn zero_loss(&self) -> bool {
        self.on_time
            && self.published == self.total
            && self.min_unique == self.total
            && self.duplicates == 0
            && self.malformed == 0
    }

    /// Fill the delivery figures from a sink.
    pub fn from_sink(sink: &Sink, published: u64, total: u64, deadline_ns: u64) -> Outcome {
        let (latency_ns, spread_ns) = sink.latency_and_spread();
        Outcome {
            published,
            total,
            min_unique: sink.min_unique(),
            duplicates: sink.duplicates,
            malformed: sink.malformed,
            on_time: sink.complete() && sink.last_ns <= deadline_ns,
            cpu_s: 0.0,
            run_queue_s: 0.0,
            wall_s: 0.0,
            deliveries: sink.unique.iter().sum(),
            latency_ns,
            spread_ns,
            late: sink.late,
            note: String::new(),
        }
    }
}

/// Process CPU time so far (every thread, user + system), s.
pub fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 * 1e-6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => f64::NAN,
    }
}

/// Time this process's live threads spent runnable but not running
/// (waiting for a CPU), s: the second field of each
/// /proc/self/task/*/schedstat. What other load on the machine costs.
pub fn run_queue_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let mut ns = 0u64;
    for t in dir.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            ns += s
                .split_whitespace()
                .nth(1)
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 * 1e-9
}

/// The q-quantile (0..=1) of `v` (sorted in place); `None` when empty.
pub fn quantile(v: &mut [u64], q: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[i.min(v.len() - 1)])
}

/// Median of some figures (NaNs left out); `None` when none.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Free loopback UDP ports (bound, read, released).
pub fn free_ports(k: usize) -> Vec<u16> {
    let socks: Vec<std::net::UdpSocket> = (0..k)
        .filter_map(|_| std::net::UdpSocket::bind("127.0.0.1:0").ok())
        .collect();
    socks
        .iter()
        .filter_map(|s| s.local_addr().ok().map(|a| a.port()))
        .collect()
}
