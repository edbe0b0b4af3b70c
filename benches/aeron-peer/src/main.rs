//! Peer benchmark: Jasper-rs against Aeron multi-destination-cast, on one
//! box, loopback only, the same definitions applied by the same code to
//! both (see `common`), repetitions interleaved, one table with medians and
//! ratios.
//!
//! Run: `benches/aeron-peer/run.sh` (sets up cmake ≥ 3.30 and builds), or
//! `cargo run --release -- --help` in this directory.

mod aeron;
mod common;
mod jasper;

use std::time::{Duration, Instant};

use clap::Parser;

use common::{load_average, median, quantile, Kind, Outcome, Trial};

/// Jasper-rs against Aeron MDC on this machine: one-way latency and spread
/// at a fixed rate, zero-loss throughput per receiver, CPU per delivery.
#[derive(Debug, Parser)]
#[command(name = "jasper-aeron-peer")]
struct Args {
    /// Short trials and one repetition (unless --reps is given): a smoke run.
    #[arg(long)]
    quick: bool,
    /// Receivers (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [4, 16])]
    n: Vec<usize>,
    /// Message sizes, bytes, at least 16 (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [36, 64])]
    size: Vec<usize>,
    /// Repetitions (interleaved: every case and side once per repetition).
    #[arg(long)]
    reps: Option<usize>,
    /// Rate of the latency and spread trials, msgs/s.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds measured in each latency trial (after a warm-up of a quarter of it).
    #[arg(long)]
    latency_seconds: Option<f64>,
    /// Seconds of each throughput trial.
    #[arg(long)]
    trial_seconds: Option<f64>,
    /// Skip the throughput search (latency and spread only).
    #[arg(long)]
    no_throughput: bool,
    /// Jasper-rs without authentication (the product authenticates every packet).
    #[arg(long)]
    no_auth: bool,
    /// Declared clock error bound for Jasper-rs's deadlines, ns (every node
    /// reads this host's clock, so the true error is 0).
    #[arg(long, default_value_t = 0)]
    clock_bound_ns: u64,
    /// Idle strategy of our nodes' poll loops (the product's default: backoff).
    #[arg(long, value_enum, default_value_t = Idle::Backoff)]
    idle: Idle,
    /// Our deadline's margin over the tree's delay estimate, µs (default:
    /// the product's).
    #[arg(long)]
    margin_us: Option<u64>,
    /// Our publisher's adaptive batching, µs: the least time between two
    /// packets; messages coming faster (a loop that fell behind) wait,
    /// packed, for it (0 = a packet per publish). Aeron's sender packs
    /// what accumulated in its term buffer the same way.
    #[arg(long, default_value_t = 50)]
    packet_gap_us: u64,
    /// Our deadline from the tracked rule: this quantile (0..1) of the
    /// roots' reports over 100 ms, plus the margin (default: the latest
    /// report plus the margin, the product's default rule).
    #[arg(long)]
    tracked_quantile: Option<f64>,
    /// How our side is threaded: a thread per role (publisher, proxy,
    /// receivers; as deployed, where each is its own host) or everything
    /// stepped from one thread (as Aeron's side runs here).
    #[arg(long, value_enum, default_value_t = Threads::PerRole)]
    threads: Threads,
    /// Our tree without its proxy: the publisher sends to the N receivers
    /// itself (the product's direct plan, `ConfigOptions::direct`), the
    /// hop count of Aeron's MDC publication → subscriptions. Shows what
    /// the proxy's hop costs; the comparison is the tree.
    #[arg(long)]
    direct: bool,
    /// Sides to run (comma-separated: aeron, no-hold, hold), e.g. to profile one.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [Side::Aeron, Side::NoHold, Side::Hold])]
    sides: Vec<Side>,
    /// Print every trial.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Idle {
    Spin,
    Yield,
    Backoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Threads {
    PerRole,
    One,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Side {
    Aeron,
    NoHold,
    Hold,
}

impl Side {
    const ALL: [Side; 3] = [Side::Aeron, Side::NoHold, Side::Hold];
    fn name(self) -> &'static str {
        match self {
            Side::Aeron => "Aeron MDC",
            Side::NoHold => "ours, no hold",
            Side::Hold => "ours, hold",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Per case (n, size) and side: what each repetition measured.
#[derive(Debug, Default, Clone)]
struct Figures {
    lat_p50: Vec<f64>,
    lat_p99: Vec<f64>,
    spread_p50: Vec<f64>,
    spread_p99: Vec<f64>,
    late: Vec<f64>,
    /// Share of measured (message, receiver) pairs not handed over within
    /// the latency trial's slack (left out of the percentiles).
    undelivered: Vec<f64>,
    /// Run-queue wait in the latency trials, ms per s (all threads): what
    /// other load and the side's own threads competing for the cores cost.
    run_queue: Vec<f64>,
    throughput: Vec<f64>,
    cpu_per_m: Vec<f64>,
}

struct Bench {
    args: Args,
    reps: usize,
    latency_s: f64,
    trial_s: f64,
    /// Search stops when the passing and failing rates are this close.
    resolution: f64,
}

impl Bench {
    fn trial(&self, side: Side, t: &Trial) -> Result<Outcome, String> {
        match side {
            Side::Aeron => aeron::run(t),
            Side::NoHold | Side::Hold => jasper::run(
                t,
                &jasper::Setup {
                    hold: side == Side::Hold,
                    auth: !self.args.no_auth,
                    clock_bound_ns: self.args.clock_bound_ns,
                    idle: match self.args.idle {
                        Idle::Spin => jasper_core::config::IdleStrategy::Spin,
                        Idle::Yield => jasper_core::config::IdleStrategy::Yield,
                        Idle::Backoff => jasper_core::config::IdleStrategy::Backoff,
                    },
                    one_thread: self.args.threads == Threads::One,
                    direct: self.args.direct,
                    packet_gap_ns: self.args.packet_gap_us * 1_000,
                    tracked_quantile: self.args.tracked_quantile,
                    margin_ns: self.args.margin_us.map_or(
                        jasper_core::deadline::DeadlinePolicy::default().margin_ns,
                        |us| us * 1_000,
                    ),
                },
            ),
        }
    }

    fn burst(&self, side: Side, size: usize) -> u64 {
        match side {
            Side::Aeron => aeron::per_datagram(size),
            Side::NoHold | Side::Hold => jasper::per_packet(size, !self.args.no_auth),
        }
    }

    /// Latency and spread at the fixed rate.
    fn latency(&self, side: Side, n: usize, size: usize, f: &mut Figures) -> Result<(), String> {
        let rate = self.args.rate;
        let messages = (self.latency_s * rate as f64) as u64;
        let t = Trial {
            n,
            size,
            rate,
            warmup: messages / 4,
            messages,
            kind: Kind::Latency,
            burst: 1,
            slack: Duration::from_millis(500),
        };
        let mut o = self.trial(side, &t)?;
        let us = |v: Option<u64>| v.map_or(f64::NAN, |x| x as f64 / 1e3);
        let (l50, l99) = (
            us(quantile(&mut o.latency_ns, 0.5)),
            us(quantile(&mut o.latency_ns, 0.99)),
        );
        let (s50, s99) = (
            us(quantile(&mut o.spread_ns, 0.5)),
            us(quantile(&mut o.spread_ns, 0.99)),
        );
        let measured = (messages * n as u64) as f64;
        let late = o.late as f64 / measured;
        // Measured (message, receiver) pairs never handed over.
        let lost = (messages * n as u64).saturating_sub(o.latency_ns.len() as u64);
        if self.args.verbose || lost > 0 {
            eprintln!(
                "  latency {:>13} n={n:<2} {size:>2} B: one-way p50 {l50:.1} p99 {l99:.1} µs, spread p50 {s50:.1} p99 {s99:.1} µs, late {:.2}%, not delivered {lost}, waited for a CPU {:.0} ms/s; {}",
                side.name(),
                late * 100.0,
                o.run_queue_s / o.wall_s * 1e3,
                o.note
            );
        }
        f.lat_p50.push(l50);
        f.lat_p99.push(l99);
        f.spread_p50.push(s50);
        f.spread_p99.push(s99);
        f.late.push(late);
        f.undelivered.push(lost as f64 / measured);
        f.run_queue.push(o.run_queue_s / o.wall_s * 1e3);
        Ok(())
    }

    /// The highest rate with zero loss, by a short search from `start`:
    /// ×1.5 steps up (or down) to bracket it, then halving the bracket
    /// (geometrically) down to the resolution. Returns (rate, CPU s per
    /// million deliveries at that rate); rate 0 when even the floor fails.
    fn throughput(
        &self,
        side: Side,
        n: usize,
        size: usize,
        start: f64,
    ) -> Result<(f64, f64), String> {
        const FLOOR: f64 = 5_000.0;
        const CEILING: f64 = 20e6;
        let run = |rate: f64| -> Result<Option<f64>, String> {
            let messages = (rate * self.trial_s).max(1.0) as u64;
            let t = Trial {
                n,
                size,
                rate: rate as u64,
                warmup: 0,
                messages,
                kind: Kind::Throughput,
                burst: self.burst(side, size),
                slack: Duration::from_millis(50),
            };
            let o = self.trial(side, &t)?;
            let pass = o.zero_loss();
            if self.args.verbose {
                eprintln!(
                    "    trial {:>13} n={n:<2} {size:>2} B at {:>9.0}/s: {} (fewest delivered {} of {}, cpu {:.3} s, waited for a CPU {:.3} s; {})",
                    side.name(),
                    rate,
                    if pass { "zero loss" } else { "LOSS" },
                    o.min_unique,
                    o.total,
                    o.cpu_s,
                    o.run_queue_s,
                    o.note
                );
            }
            Ok(pass.then(|| o.cpu_s / (o.deliveries as f64 / 1e6)))
        };
        let mut rate = start.clamp(FLOOR, CEILING);
        let (mut lo, mut hi, mut cpu);
        match run(rate)? {
            Some(c) => {
                (lo, cpu) = (rate, c);
                loop {
                    rate *= 1.5;
                    if rate > CEILING {
                        return Ok((lo, cpu));
                    }
                    match run(rate)? {
                        Some(c) => (lo, cpu) = (rate, c),
                        None => {
                            hi = rate;
                            break;
                        }
                    }
                }
            }
            None => {
                hi = rate;
                loop {
                    rate /= 1.5;
                    if rate < FLOOR {
                        return Ok((0.0, f64::NAN));
                    }
                    if let Some(c) = run(rate)? {
                        (lo, cpu) = (rate, c);
                        break;
                    }
                    hi = rate;
                }
            }
        }
        while hi / lo > self.resolution {
            let mid = (lo * hi).sqrt();
            match run(mid)? {
                Some(c) => (lo, cpu) = (mid, c),
                None => hi = mid,
            }
        }
        Ok((lo, cpu))
    }
}

fn main() {
    let args = Args::parse();
    if let Some(&s) = args.size.iter().find(|&&s| s < common::STAMP_BYTES) {
        eprintln!(
            "--size {s}: messages carry a {}-byte stamp (send time, sequence); use at least that",
            common::STAMP_BYTES
        );
        std::process::exit(2);
    }
    if args.n.contains(&0) || args.rate == 0 {
        eprintln!("--n and --rate must be positive");
        std::process::exit(2);
    }
    let bench = Bench {
        reps: args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        latency_s: args
            .latency_seconds
            .unwrap_or(if args.quick { 0.5 } else { 1.6 }),
        trial_s: args
            .trial_seconds
            .unwrap_or(if args.quick { 0.3 } else { 0.8 }),
        resolution: if args.quick { 1.25 } else { 1.12 },
        args,
    };
    let command: Vec<String> = std::env::args().collect();
    let started = Instant::now();
    let load_before = load_average();
    let cases: Vec<(usize, usize)> = bench
        .args
        .n
        .iter()
        .flat_map(|&n| bench.args.size.iter().map(move |&s| (n, s)))
        .collect();
    let mut figures = vec![[(); 3].map(|_| Figures::default()); cases.len()];
    let mut starts = vec![[200_000.0f64; 3]; cases.len()];
    for rep in 0..bench.reps {
        eprintln!(
            "repetition {}/{} (load average {})",
            rep + 1,
            bench.reps,
            load_average()
        );
        for (c, &(n, size)) in cases.iter().enumerate() {
            // Rotate which side goes first, so none always runs first.
            for k in 0..3 {
                let side = Side::ALL[(k + rep + c) % 3];
                if !bench.args.sides.contains(&side) {
                    continue;
                }
                let f = &mut figures[c][side.index()];
                if let Err(e) = bench.latency(side, n, size, f) {
                    eprintln!("error: {} n={n} {size} B latency trial: {e}", side.name());
                    std::process::exit(1);
                }
                if !bench.args.no_throughput {
                    match bench.throughput(side, n, size, starts[c][side.index()]) {
                        Ok((rate, cpu)) => {
                            eprintln!(
                                "  throughput {:>13} n={n:<2} {size:>2} B: {rate:.0} msgs/s per receiver with zero loss, {cpu:.3} CPU s per million deliveries",
                                side.name()
                            );
                            if rate > 0.0 {
                                starts[c][side.index()] = rate;
                            }
                            f.throughput.push(rate);
                            f.cpu_per_m.push(cpu);
                        }
                        Err(e) => {
                            eprintln!(
                                "error: {} n={n} {size} B throughput trial: {e}",
                                side.name()
                            );
                            std::process::exit(1);
                        }
                    }
                }
            }
        }
    }
    let load_after = load_average();
    print_table(&bench, &cases, &figures);
    println!();
    println!(
        "{} repetitions, interleaved; medians. Load average (1, 5, 15 min) before {load_before}, after {load_after}; {} CPUs. Run time {:.0} s.",
        bench.reps,
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        started.elapsed().as_secs_f64()
    );
    println!("Command: {}", command.join(" "));
}

fn fmt_us(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "—".into(),
    }
}

fn fmt_rate(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 1e6 => format!("{:.2}M", x / 1e6),
        Some(x) if x > 0.0 => format!("{:.0}k", x / 1e3),
        Some(_) => "< 5k".into(),
        None => "—".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

fn print_table(bench: &Bench, cases: &[(usize, usize)], figures: &[[Figures; 3]]) {
    let a = &bench.args;
    println!(
        "Jasper-rs vs Aeron {} (rusteron-client 0.2) on one box, loopback only, messages of {} B.",
        aeron::version(),
        a.size
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
    );
    println!(
        "- Aeron: embedded C media driver (threading mode SHARED) stepped inline with the client conductor (agent invoker), the publication and the N subscriptions, all in one thread; MDC publication, control-mode=dynamic, fc=min; {} MiB socket buffers.",
        aeron::SOCKET_BUFFER >> 20,
    );
    println!(
        "- Ours: publisher → {}N receivers ({}), kernel UDP, no injected delay, {} idle, authentication {}, the host clock with a declared bound of {} ns, deadline {} + margin {} µs, packet gap {} µs.",
        if a.direct { "(direct plan, no proxy) " } else { "1 proxy → " },
        match a.threads {
            Threads::PerRole => "a thread each for the publisher, the proxy and the N receivers",
            Threads::One => "all stepped in one thread, one duty cycle after another, like Aeron's side",
        },
        format!("{:?}", a.idle).to_lowercase(),
        if a.no_auth { "off" } else { "on" },
        a.clock_bound_ns,
        a.tracked_quantile.map_or("the latest report".to_string(), |q| format!(
            "quantile {q} of the reports over 100 ms"
        )),
        a.margin_us
            .unwrap_or(jasper_core::deadline::DeadlinePolicy::default().margin_ns / 1_000),
        a.packet_gap_us,
    );
    println!(
        "- One-way = hand-over to the application − send, both stamped with CLOCK_REALTIME; spread = per message, max − min of its hand-overs across the receivers; zero-loss throughput = highest rate at which every receiver got every message exactly once within 50 ms of the last one due ({:.1} s trials, searched); CPU = the process's user + system time at that rate; ratios = ours / Aeron.",
        bench.trial_s,
    );
    println!();
    println!(
        "| N / size | metric | Aeron MDC | ours, no hold | ours, hold | no hold / Aeron | hold / Aeron |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (c, &(n, size)) in cases.iter().enumerate() {
        let f = &figures[c];
        let m = |s: Side, g: fn(&Figures) -> &Vec<f64>| median(g(&f[s.index()]));
        let case = format!("{n} / {size} B");
        let pair = |s: Side, p: fn(&Figures) -> &Vec<f64>, q: fn(&Figures) -> &Vec<f64>| {
            format!("{} / {}", fmt_us(m(s, p)), fmt_us(m(s, q)))
        };
        let ratios = |s: Side, p: fn(&Figures) -> &Vec<f64>, q: fn(&Figures) -> &Vec<f64>| {
            format!(
                "{} / {}",
                ratio(m(s, p), m(Side::Aeron, p)),
                ratio(m(s, q), m(Side::Aeron, q))
            )
        };
        println!(
            "| {case} | one-way p50 / p99 at {}k msgs/s, µs | {} | {} | {} | {} | {} |",
            a.rate / 1000,
            pair(Side::Aeron, |f| &f.lat_p50, |f| &f.lat_p99),
            pair(Side::NoHold, |f| &f.lat_p50, |f| &f.lat_p99),
            pair(Side::Hold, |f| &f.lat_p50, |f| &f.lat_p99),
            ratios(Side::NoHold, |f| &f.lat_p50, |f| &f.lat_p99),
            ratios(Side::Hold, |f| &f.lat_p50, |f| &f.lat_p99),
        );
        println!(
            "| {case} | spread across receivers p50 / p99, µs | {} | {} | {} | {} | {} |",
            pair(Side::Aeron, |f| &f.spread_p50, |f| &f.spread_p99),
            pair(Side::NoHold, |f| &f.spread_p50, |f| &f.spread_p99),
            pair(Side::Hold, |f| &f.spread_p50, |f| &f.spread_p99),
            ratios(Side::NoHold, |f| &f.spread_p50, |f| &f.spread_p99),
            ratios(Side::Hold, |f| &f.spread_p50, |f| &f.spread_p99),
        );
        println!(
            "| {case} | late (hold-and-release: released after the deadline) | — | — | {} | | |",
            m(Side::Hold, |f| &f.late).map_or("—".into(), |x| format!("{:.2}%", x * 100.0))
        );
        let rq = |s: Side| m(s, |f| &f.run_queue).map_or("—".into(), |x| format!("{x:.0}"));
        println!(
            "| {case} | runnable but waiting for a CPU in those trials (other load, and a side's own threads on 2 cores), ms/s summed over threads | {} | {} | {} | | |",
            rq(Side::Aeron),
            rq(Side::NoHold),
            rq(Side::Hold)
        );
        let undelivered = |s: Side| m(s, |f| &f.undelivered).unwrap_or(0.0);
        if Side::ALL.iter().any(|&s| undelivered(s) > 0.0) {
            let pct = |s: Side| format!("{:.2}%", undelivered(s) * 100.0);
            println!(
                "| {case} | not handed over within 0.5 s at {}k msgs/s (left out of the percentiles above) | {} | {} | {} | | |",
                a.rate / 1000,
                pct(Side::Aeron),
                pct(Side::NoHold),
                pct(Side::Hold)
            );
        }
        if a.no_throughput {
            continue;
        }
        let tp = |s: Side| m(s, |f| &f.throughput);
        let cpu = |s: Side| m(s, |f| &f.cpu_per_m);
        println!(
            "| {case} | zero-loss throughput per receiver, msgs/s | {} | {} | {} | {} | {} |",
            fmt_rate(tp(Side::Aeron)),
            fmt_rate(tp(Side::NoHold)),
            fmt_rate(tp(Side::Hold)),
            ratio(tp(Side::NoHold), tp(Side::Aeron)),
            ratio(tp(Side::Hold), tp(Side::Aeron)),
        );
        let c3 = |v: Option<f64>| v.map_or("—".into(), |x| format!("{x:.2}"));
        println!(
            "| {case} | CPU s per million deliveries at capacity | {} | {} | {} | {} | {} |",
            c3(cpu(Side::Aeron)),
            c3(cpu(Side::NoHold)),
            c3(cpu(Side::Hold)),
            ratio(cpu(Side::NoHold), cpu(Side::Aeron)),
            ratio(cpu(Side::Hold), cpu(Side::Aeron)),
        );
    }
}
