//! Which messages were late, and at how many receivers (a diagnostic):
//! `cargo run --release -p jasper-sim --example late_times -- N MESSAGES SEED [tracked-quantile]`.

use jasper_sim::{run, schemes::Tracked, Scheme, SimParams};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let tracked = a
        .get(3)
        .and_then(|v| v.parse().ok())
        .map(|quantile| Tracked {
            history_ns: 100_000_000,
            quantile,
        });
    let p = SimParams {
        receivers: arg(0, 1000) as usize,
        messages: arg(1, 2000),
        seed: arg(2, 1),
        percentile: Some(99.0),
        tracked,
        ..SimParams::default()
    };
    let scheme = if tracked.is_some() {
        Scheme::Ours
    } else {
        Scheme::JasperV1
    };
    let r = run(scheme, &p).expect("run");
    println!("{} P(F) {:.4}", r.description, r.report.p_f);
    for (m, late) in r.late_per_message.iter().enumerate() {
        if *late > 0 {
            println!(
                "message {m} (t = {:.1} ms): late at {late} receivers",
                m as f64 / p.rate * 1e3
            );
        }
    }
}
