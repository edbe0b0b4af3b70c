//! `jasper sim`: the simulator's front end — the schemes side by side, JSON,
//! CDF plot, and sweeps over N, depth, fanout and H.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use jasper_core::clock::ClockClass;
use jasper_core::model::CloudModel;
use jasper_sim::{run, Scheme, SchemeResult, SimParams};
use serde_json::{json, Value};

/// Flags of `jasper sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Receivers (MPs).
    #[arg(long, default_value_t = 1000)]
    pub receivers: usize,
    /// Messages published.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Messages per second (the paper's 5000).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Seed; one seed reproduces a run exactly.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// direct | cloudex | jasper-v1 | ours | all
    #[arg(long, default_value = "all")]
    pub scheme: String,
    /// Proxy levels (tree schemes; default round(log10 N)).
    #[arg(long)]
    pub depth: Option<u32>,
    /// Children per proxy (default ≈ 10).
    #[arg(long)]
    pub fanout: Option<u32>,
    /// Sibling hedging H (default 2).
    #[arg(long)]
    pub hedge: Option<u32>,
    /// Round-robin spraying on/off (default: off for jasper-v1, on for ours).
    #[arg(long)]
    pub spray: Option<bool>,
    /// Root proxies R (default: jasper-v1 1, the paper's single root; ours 2,
    /// the hedged roots `jasper plan` builds).
    #[arg(long)]
    pub roots: Option<u32>,
    /// Simulate loss recovery: stores at the publisher and proxies,
    /// receivers ask their upstreams for what they miss.
    #[arg(long)]
    pub recovery: bool,
    /// Publishers K, each its own stream into the same roots (publisher k
    /// of K gets a share (K − k) / (1 + … + K) of --messages and --rate);
    /// receivers hand over in one deadline order; the order figures follow
    /// the table.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Cloud model TOML (keys in docs/MODEL.md; default the reference model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Clock class (overrides the model's).
    #[arg(long)]
    pub clock: Option<String>,
    /// Write the results as JSON (one object per scheme under `schemes`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of the OWD and DWS CDFs.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Deadline estimate percentile of the tree schemes (default: jasper-v1 97, ours 99).
    #[arg(long)]
    pub percentile: Option<f64>,
    /// Deadline safety margin of the tree schemes, ns (default 25000).
    #[arg(long)]
    pub margin_ns: Option<u64>,
    /// "ours" with a tracked deadline: the quantile (0..1) of the root's
    /// per-interval max reports kept over `--tracked-history-ms`.
    #[arg(long)]
    pub tracked_quantile: Option<f64>,
    /// History of the tracked deadline, ms.
    #[arg(long, default_value_t = 100)]
    pub tracked_history_ms: u64,
    /// Headline fairness threshold: a message is fair when every receiver
    /// was handed it within this spread (ns; the paper's 1 µs resolution).
    #[arg(long, default_value_t = jasper_core::metrics::DEFAULT_FAIR_THRESHOLD_NS)]
    pub fair_threshold_ns: u64,
    /// Trace each tree scheme's P(F)-vs-hand-over-latency frontier by
    /// sweeping its deadline knobs (jasper-v1: percentile × margin; ours:
    /// the tracked deadline's quantile × margin) over `--seeds`, and say which points
    /// of jasper-v1 ours dominates.
    #[arg(long)]
    pub frontier: bool,
    /// Seeds averaged by `--frontier` (comma separated).
    #[arg(long, default_value = "1,2")]
    pub seeds: String,
    /// Sweep a parameter: `n=100,1000`, `depth=2,3`, `fanout=5,10`, `hedge=0,1,2` (repeatable; the product is run).
    #[arg(long)]
    pub sweep: Vec<String>,
}

fn scheme_json(r: &SchemeResult) -> Value {
    let x = &r.report;
    let mut v = json!({
        "p_f": x.p_f,
        "fairness_threshold_ns": x.fairness_threshold_ns,
        "p_f_bound": x.p_f_bound,
        "bound_threshold_ns": x.bound_threshold_ns,
        "messages_incomplete": x.messages_incomplete,
        "oml_ns_p50": x.oml_ns_p50,
        "oml_ns_p99": x.oml_ns_p99,
        "handover_ns_p50": x.handover_ns_p50,
        "handover_ns_p99": x.handover_ns_p99,
        "handover_ns_max": x.handover_ns_max,
        "handover_max_ns_p50": x.handover_max_ns_p50,
        "handover_max_ns_p99": x.handover_max_ns_p99,
        "dws_ns_p50": x.dws_ns_p50,
        "dws_ns_p99": x.dws_ns_p99,
        "dws_ns_max": x.dws_ns_max,
        "late_fraction": x.late_fraction,
        "holding_ns_mean": x.holding_ns.mean,
        "owd_ns_mean": x.owd_ns.mean,
        "owd_ns_std": x.owd_ns.std,
        "missing": x.missing_total,
        "duplicates": x.duplicates_total,
        "clock_bound_ns": x.clock_bound_ns,
        "clock_status": x.clock_status.name(),
        "max_host_load": r.max_host_load,
        "saturated": r.saturated(),
        "events": r.events,
        "events_per_s": r.events_per_s(),
        "invariant_violations": r.violations,
        "invariant_violation_count": r.violation_count,
        "clock_releases_outside_bound": r.clock.releases_outside_bound,
        "clock_messages_beyond_2b": r.clock.messages_beyond_2b,
        "clock_messages_beyond_2b_by_clock": r.clock.messages_beyond_2b_by_clock,
        "clock_max_abs_error_ns": r.clock.max_abs_error_ns,
        "unfair_incomplete": r.unfair.incomplete,
        "unfair_late": r.unfair.late,
        "unfair_spread_clock": r.unfair.spread_clock,
        "unfair_spread_other": r.unfair.spread_other,
        "description": r.description,
    });
    // Deadline-ordered multicast across publishers.
    v["out_of_order"] = x.out_of_order_total.into();
    v["in_order_fraction"] = x.in_order_fraction.into();
    v["in_order_fraction_min"] = x.in_order_fraction_min.into();
    v["same_order_fraction"] = x.same_order_fraction.into();
    v
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

fn print_table(results: &[SchemeResult]) {
    let Some(first) = results.first() else {
        return;
    };
    println!(
        "{:<10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "scheme",
        format!("P(F)@{}", ns_label(first.report.fairness_threshold_ns)),
        "P(F)@2b",
        "OML p50",
        "OML p99",
        "HO p50",
        "HO p99",
        "HOmax p50",
        "HOmax p99",
        "DWS p50",
        "DWS p99",
        "hold mean",
        "late",
        "missing",
        "events/s"
    );
    let us = |v: u64| format!("{:.1}µs", v as f64 / 1e3);
    for r in results {
        let x = &r.report;
        println!(
            "{:<10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7.2}M{}",
            r.scheme.name(),
            pct(x.p_f),
            x.p_f_bound.map_or("n/a".into(), pct),
            us(x.oml_ns_p50),
            us(x.oml_ns_p99),
            us(x.handover_ns_p50),
            us(x.handover_ns_p99),
            us(x.handover_max_ns_p50),
            us(x.handover_max_ns_p99),
            format!("{:.2}µs", x.dws_ns_p50 as f64 / 1e3),
            us(x.dws_ns_p99),
            format!("{:.1}µs", x.holding_ns.mean / 1e3),
            format!("{:.3}%", x.late_fraction * 100.0),
            x.missing_total,
            r.events_per_s() / 1e6,
            if r.saturated() {
                format!(
                    "  SATURATED: a host needs {:.0}% of the time to send its copies; latencies grow with the run, they are not the scheme's",
                    r.max_host_load * 100.0
                )
            } else {
                String::new()
            }
        );
    }
    if results
        .iter()
        .any(|r| r.description.contains(" publishers "))
    {
        for r in results {
            let x = &r.report;
            println!(
                "  {}: order — {:.4}% of hand-overs in deadline order (worst receiver {:.4}%, {} out of order); {:.2}% of messages handed to every receiver in the same order",
                r.scheme.name(),
                x.in_order_fraction * 100.0,
                x.in_order_fraction_min * 100.0,
                x.out_of_order_total,
                x.same_order_fraction * 100.0
            );
        }
    }
    for r in results {
        let u = &r.unfair;
        if r.scheme.holds() {
            println!(
                "  {}: unfair messages — {} incomplete, {} late somewhere, {} spread by a clock outside its bound, {} spread otherwise",
                r.scheme.name(),
                u.incomplete,
                u.late,
                u.spread_clock,
                u.spread_other
            );
        }
    }
    for r in results {
        let c = &r.clock;
        if c.releases_outside_bound > 0 {
            println!(
                "  {}: clocks broke their ±{} ns bound at {} on-time releases (worst error {} ns); {} messages spread beyond 2 × bound, {} of them with a clock outside its bound",
                r.scheme.name(),
                r.report.clock_bound_ns,
                c.releases_outside_bound,
                c.max_abs_error_ns,
                c.messages_beyond_2b,
                c.messages_beyond_2b_by_clock
            );
        }
    }
    for r in results {
        if !r.violations.is_empty() {
            println!(
                "INVARIANT VIOLATIONS ({}) in {} (seed reproduces): {}",
                r.violation_count,
                r.scheme.name(),
                r.violations.join("; ")
            );
        }
    }
}

fn ns_label(ns: u64) -> String {
    if ns % 1000 == 0 {
        format!("{}µs", ns / 1000)
    } else {
        format!("{ns}ns")
    }
}

fn run_all(schemes: &[Scheme], p: &SimParams) -> anyhow::Result<Vec<SchemeResult>> {
    let mut out = Vec::new();
    for s in schemes {
        out.push(run(*s, p).map_err(|e| anyhow::anyhow!("{}: {e} (seed {})", s.name(), p.seed))?);
    }
    Ok(out)
}

/// Entry point of `jasper sim`.
pub fn main(a: SimArgs) -> anyhow::Result<()> {
    let schemes: Vec<Scheme> = if a.scheme == "all" {
        Scheme::ALL.to_vec()
    } else {
        vec![Scheme::parse(&a.scheme).with_context(|| {
            format!(
                "unknown scheme {:?}: use direct, cloudex, jasper-v1, ours or all",
                a.scheme
            )
        })?]
    };
    let mut model = match &a.model {
        Some(p) => jasper_sim::model_file::load(p).map_err(anyhow::Error::msg)?,
        None => CloudModel::default(),
    };
    if let Some(c) = &a.clock {
        model.clock.class = ClockClass::parse(c)
            .with_context(|| format!("unknown clock class {c:?}: use huygens, ptp or ntp"))?;
    }
    anyhow::ensure!(
        a.receivers >= 1 && a.messages >= 1 && a.rate > 0.0,
        "--receivers, --messages and --rate must be positive"
    );
    let base = SimParams {
        receivers: a.receivers,
        messages: a.messages,
        rate: a.rate,
        seed: a.seed,
        depth: a.depth,
        fanout: a.fanout,
        hedge: a.hedge,
        spray: a.spray,
        roots: a.roots,
        recovery: a.recovery,
        publishers: a.publishers,
        model,
        faults: Default::default(),
        fair_threshold_ns: a.fair_threshold_ns,
        percentile: a.percentile,
        margin_ns: a.margin_ns,
        tracked: a
            .tracked_quantile
            .map(|quantile| jasper_sim::schemes::Tracked {
                history_ns: a.tracked_history_ms * 1_000_000,
                quantile,
            }),
    };
    if a.frontier {
        return frontier(&a, &base);
    }
    if !a.sweep.is_empty() {
        return sweep(&a, &schemes, &base);
    }
    println!(
        "simulating {} receivers, {} messages at {} msg/s, seed {} (model: {})",
        a.receivers,
        a.messages,
        a.rate,
        a.seed,
        a.model
            .as_ref()
            .map_or("reference cloud model".into(), |p| p.display().to_string())
    );
    let results = run_all(&schemes, &base)?;
    for r in &results {
        println!("  {}", r.description);
    }
    print_table(&results);
    let x = &results[0].report;
    println!(
        "P(F)@{} = share of the {} published messages handed to every receiver within a {} ns spread (true time); \
         P(F)@2b = the same within 2 × the {} ns clock bound ({} ns). HO = hand-over latency (release − send) per delivery; \
         HOmax = its per-message max (what the slowest MP lives with). OML is at arrival.",
        ns_label(x.fairness_threshold_ns),
        x.messages_published,
        x.fairness_threshold_ns,
        x.clock_bound_ns,
        x.bound_threshold_ns
    );
    if let Some(path) = &a.json {
        let mut schemes = serde_json::Map::new();
        for r in &results {
            schemes.insert(r.scheme.name().into(), scheme_json(r));
        }
        let v = json!({
            "receivers": a.receivers, "messages": a.messages, "rate": a.rate, "seed": a.seed,
            "schemes": schemes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    if let Some(path) = &a.plot {
        let series: Vec<_> = results
            .iter()
            .map(|r| (r.scheme.name(), &r.collector, r.report.messages_published))
            .collect();
        crate::plot::cdf_svg(path, &series)?;
        println!("plot written to {}", path.display());
    }
    if results.iter().any(|r| !r.violations.is_empty()) {
        anyhow::bail!("invariant violations (seed {})", a.seed);
    }
    Ok(())
}

fn sweep(a: &SimArgs, schemes: &[Scheme], base: &SimParams) -> anyhow::Result<()> {
    let mut axes: Vec<(String, Vec<u64>)> = Vec::new();
    for s in &a.sweep {
        let (k, vs) = s.split_once('=').with_context(|| {
            format!("--sweep {s:?}: write KEY=V1,V2 (keys n, depth, fanout, hedge)")
        })?;
        anyhow::ensure!(
            ["n", "depth", "fanout", "hedge"].contains(&k),
            "--sweep key {k:?}: use n, depth, fanout or hedge"
        );
        let vals = vs
            .split(',')
            .map(|v| v.trim().parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("--sweep {s:?}: values must be integers"))?;
        axes.push((k.to_string(), vals));
    }
    let mut combos: Vec<Vec<(String, u64)>> = vec![Vec::new()];
    for (k, vals) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                vals.iter()
                    .map(move |v| [c.clone(), vec![(k.clone(), *v)]].concat())
            })
            .collect();
    }
    let mut rows = Vec::new();
    for c in combos {
        let mut p = base.clone();
        for (k, v) in &c {
            match k.as_str() {
                "n" => p.receivers = *v as usize,
                "depth" => p.depth = Some(*v as u32),
                "fanout" => p.fanout = Some(*v as u32),
                _ => p.hedge = Some(*v as u32),
            }
        }
        let label = c
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!("== {label}");
        match run_all(schemes, &p) {
            Ok(results) => {
                print_table(&results);
                let mut o = serde_json::Map::new();
                for r in &results {
                    o.insert(r.scheme.name().into(), scheme_json(r));
                }
                rows.push(json!({"params": label, "schemes": o}));
            }
            Err(e) => println!("   skipped: {e}"),
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&json!({"sweep": rows}))?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// One point of a frontier: a scheme with one knob setting, averaged over seeds.
#[derive(Debug, Clone)]
struct FrontierPoint {
    scheme: Scheme,
    knob: String,
    p_f: f64,
    handover_p50_ns: f64,
    handover_p99_ns: f64,
    late: f64,
}

/// The knob settings `--frontier` sweeps.
fn frontier_grid(base: &SimParams) -> Vec<(Scheme, String, SimParams)> {
    let mut out = Vec::new();
    for percentile in [95.0, 97.0, 99.0] {
        for margin in [0u64, 25_000, 50_000] {
            out.push((
                Scheme::JasperV1,
                format!("p{percentile} + {} µs", margin / 1000),
                SimParams {
                    percentile: Some(percentile),
                    margin_ns: Some(margin),
                    ..base.clone()
                },
            ));
        }
    }
    // Ours has two knobs too: the quantile of the roots' reports over the
    // history, and the margin. Higher quantiles (p75, p90) with smaller
    // margins landed on the median's curve when they were swept, so the
    // median's margin alone traces the frontier.
    let ours = (0..=10).map(|k| (0.5, k * 10_000u64));
    for (quantile, margin) in ours {
        let name = if quantile == 0.5 {
            "median".to_string()
        } else {
            format!("p{}", quantile * 100.0)
        };
        out.push((
            Scheme::Ours,
            format!("{name} + {} µs", margin / 1000),
            SimParams {
                margin_ns: Some(margin),
                tracked: Some(jasper_sim::schemes::Tracked {
                    history_ns: 100_000_000,
                    quantile,
                }),
                ..base.clone()
            },
        ));
    }
    out
}

fn frontier(a: &SimArgs, base: &SimParams) -> anyhow::Result<()> {
    let seeds: Vec<u64> = a
        .seeds
        .split(',')
        .map(|v| v.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--seeds {:?}: comma-separated integers", a.seeds))?;
    anyhow::ensure!(!seeds.is_empty(), "--seeds: give at least one seed");
    let grid = frontier_grid(base);
    let jobs: Vec<(usize, u64)> = (0..grid.len())
        .flat_map(|g| seeds.iter().map(move |s| (g, *s)))
        .collect();
    println!(
        "frontier: {} receivers, {} messages at {} msg/s, seeds {:?}: {} runs",
        base.receivers,
        base.messages,
        base.rate,
        seeds,
        jobs.len()
    );
    for s in [Scheme::JasperV1, Scheme::Ours] {
        let t = jasper_sim::schemes::tree_spec(s, base);
        println!(
            "  {}: depth {} fanout {} hedge {} spray {} roots {}",
            s.name(),
            t.depth.unwrap_or(0),
            t.fanout.unwrap_or(0),
            t.hedge,
            t.spray,
            t.roots
        );
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(g, seed)) = jobs.get(i) else {
                    break;
                };
                let (scheme, _, p) = &grid[g];
                let r = run(*scheme, &SimParams { seed, ..p.clone() });
                if let Ok(mut v) = results.lock() {
                    v.push((g, seed, r));
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a frontier run panicked"))?;
    let mut points = Vec::new();
    for (g, (scheme, knob, _)) in grid.iter().enumerate() {
        let runs: Vec<&SchemeResult> = results
            .iter()
            .filter(|(i, _, _)| *i == g)
            .filter_map(|(_, _, r)| r.as_ref().ok())
            .collect();
        if let Some((_, seed, Err(e))) = results.iter().find(|(i, _, r)| *i == g && r.is_err()) {
            anyhow::bail!("{} {knob}: {e} (seed {seed})", scheme.name());
        }
        let n = runs.len().max(1) as f64;
        let avg = |f: &dyn Fn(&SchemeResult) -> f64| runs.iter().map(|r| f(r)).sum::<f64>() / n;
        points.push(FrontierPoint {
            scheme: *scheme,
            knob: knob.clone(),
            p_f: avg(&|r| r.report.p_f),
            handover_p50_ns: avg(&|r| r.report.handover_max_ns_p50 as f64),
            handover_p99_ns: avg(&|r| r.report.handover_max_ns_p99 as f64),
            late: avg(&|r| r.report.late_fraction),
        });
    }
    // A point dominates another when it is at least as fair at no more
    // latency (p50 and p99), and strictly better in one of them.
    let dominates = |x: &FrontierPoint, y: &FrontierPoint| {
        x.p_f >= y.p_f
            && x.handover_p50_ns <= y.handover_p50_ns
            && x.handover_p99_ns <= y.handover_p99_ns
            && (x.p_f > y.p_f
                || x.handover_p50_ns < y.handover_p50_ns
                || x.handover_p99_ns < y.handover_p99_ns)
    };
    println!(
        "{:<10} {:<18} {:>9} {:>12} {:>12} {:>8}  dominated by",
        "scheme", "knob", "P(F)", "HOmax p50", "HOmax p99", "late"
    );
    let mut rows = Vec::new();
    for p in &points {
        let by: Vec<String> = points
            .iter()
            .filter(|q| q.scheme != p.scheme && dominates(q, p))
            .map(|q| format!("{} {}", q.scheme.name(), q.knob))
            .collect();
        println!(
            "{:<10} {:<18} {:>8.2}% {:>10.1}µs {:>10.1}µs {:>7.3}%  {}",
            p.scheme.name(),
            p.knob,
            p.p_f * 100.0,
            p.handover_p50_ns / 1e3,
            p.handover_p99_ns / 1e3,
            p.late * 100.0,
            by.join("; ")
        );
        rows.push(json!({
            "scheme": p.scheme.name(), "knob": p.knob, "p_f": p.p_f,
            "handover_max_ns_p50": p.handover_p50_ns, "handover_max_ns_p99": p.handover_p99_ns,
            "late_fraction": p.late, "dominated_by": by,
        }));
    }
    // Pareto frontier of each scheme, and whether ours covers jasper-v1's.
    let pareto = |s: Scheme| -> Vec<&FrontierPoint> {
        points
            .iter()
            .filter(|p| p.scheme == s)
            .filter(|p| !points.iter().any(|q| q.scheme == s && dominates(q, p)))
            .collect()
    };
    let v1 = pareto(Scheme::JasperV1);
    let ours = pareto(Scheme::Ours);
    let undominated: Vec<&&FrontierPoint> = v1
        .iter()
        .filter(|p| !ours.iter().any(|q| dominates(q, p)))
        .collect();
    // Ours's frontier interpolated at each of jasper-v1's latencies.
    let mut curve: Vec<(f64, f64)> = ours.iter().map(|p| (p.handover_p50_ns, p.p_f)).collect();
    curve.sort_by(|x, y| x.0.total_cmp(&y.0));
    let at = |x: f64| -> Option<f64> {
        curve
            .windows(2)
            .find(|w| w[0].0 <= x && x <= w[1].0)
            .map(|w| {
                let f = if w[1].0 > w[0].0 {
                    (x - w[0].0) / (w[1].0 - w[0].0)
                } else {
                    0.0
                };
                w[0].1 + f * (w[1].1 - w[0].1)
            })
    };
    for p in &v1 {
        match at(p.handover_p50_ns) {
            Some(o) => println!(
                "  at jasper-v1 {} ({:.1} µs): jasper-v1 {:.2}%, ours {:.2}% ({:+.2} points)",
                p.knob,
                p.handover_p50_ns / 1e3,
                p.p_f * 100.0,
                o * 100.0,
                (o - p.p_f) * 100.0
            ),
            None => println!(
                "  at jasper-v1 {} ({:.1} µs): outside ours's swept range",
                p.knob,
                p.handover_p50_ns / 1e3
            ),
        }
    }
    println!(
        "jasper-v1's frontier: {} points, {} dominated by ours{}",
        v1.len(),
        v1.len() - undominated.len(),
        if undominated.is_empty() {
            String::new()
        } else {
            format!(
                "; not dominated: {}",
                undominated
                    .iter()
                    .map(|p| p.knob.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if let Some(path) = &a.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({
                "receivers": base.receivers, "messages": base.messages, "rate": base.rate,
                "seeds": seeds, "fairness_threshold_ns": base.fair_threshold_ns, "points": rows,
            }))?,
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    if let Some(path) = &a.plot {
        let series: Vec<(&str, Vec<(f64, f64)>)> = [Scheme::JasperV1, Scheme::Ours]
            .iter()
            .map(|s| {
                let mut v: Vec<(f64, f64)> = points
                    .iter()
                    .filter(|p| p.scheme == *s)
                    .map(|p| (p.handover_p50_ns / 1e3, p.p_f * 100.0))
                    .collect();
                v.sort_by(|x, y| x.0.total_cmp(&y.0));
                (s.name(), v)
            })
            .collect();
        crate::plot::frontier_svg(path, &series)?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}
