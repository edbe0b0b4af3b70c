//! Simulator speed: simulated events per second of wall time, for every
//! scheme, at N = 1000 and N = 10,000 receivers under the reference cloud
//! model (target ≥ 1M events/s at N = 10,000). Events are everything the
//! engine pops: deliveries, wake-ups, publishes, clock changes.
//!
//! Run: `cargo bench -p jasper-benches --bench sim_events` (args: receiver
//! counts, and optionally scheme names, e.g. `-- 10000 ours`).
//!
//! Besides wall time it prints the run's CPU time (Linux: the thread's
//! user + system time from `/proc`, 10 ms ticks) and events per CPU
//! second: on a shared machine the wall figure falls with the load, the
//! CPU figure much less.

use jasper_sim::{run, Scheme, SimParams};

/// This thread's CPU time so far, s (`None` off Linux).
fn cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command (which may hold spaces) and its ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let schemes: Vec<Scheme> = args.iter().filter_map(|a| Scheme::parse(a)).collect();
    let schemes = if schemes.is_empty() {
        Scheme::ALL.to_vec()
    } else {
        schemes
    };
    let args: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() {
        vec![1000, 10_000]
    } else {
        args
    };
    println!(
        "{:>8} {:<10} {:>12} {:>10} {:>12} {:>8} {:>12} {:>8} {:>10}",
        "N", "scheme", "events", "wall s", "events/s", "cpu s", "events/cpu-s", "P(F)", "OML p50"
    );
    for n in sizes {
        let p = SimParams {
            receivers: n,
            messages: if n >= 10_000 { 300 } else { 1000 },
            ..SimParams::default()
        };
        for &s in &schemes {
            let cpu0 = cpu_s();
            let r = run(s, &p).expect("run");
            let cpu = cpu_s().zip(cpu0).map_or(f64::NAN, |(b, a)| b - a);
            assert!(r.violations.is_empty(), "{:?}", r.violations);
            println!(
                "{:>8} {:<10} {:>12} {:>10.2} {:>11.2}M {:>8.2} {:>11.2}M {:>7.2}% {:>8.1}µs",
                n,
                s.name(),
                r.events,
                r.wall_s,
                r.events_per_s() / 1e6,
                cpu,
                r.events as f64 / cpu / 1e6,
                r.report.p_f * 100.0,
                r.report.oml_ns_p50 as f64 / 1e3
            );
        }
    }
}
