//! Swarm test: many seeds, each drawing a random fault scenario (loss,
//! duplication, reordering, slow episodes, clock class and drift, stalled and
//! crashed proxies, tree shape, hedging, one or two roots, loss recovery on or
//! off) and running every scheme with the
//! invariant checkers on. A failure names the seed and how to reproduce it.
//!
//! CI runs `JASPER_SWARM_SEEDS` seeds (default 24); by hand:
//! `JASPER_SWARM_SEEDS=2000 cargo test --release -p jasper-sim --test swarm`.
//! `JASPER_SWARM_FIRST` picks the first seed (default 0).

use jasper_sim::{random_scenario, run, Scheme};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn invariants_hold_under_random_faults() {
    let n = env("JASPER_SWARM_SEEDS", 24);
    let first = env("JASPER_SWARM_FIRST", 0);
    let mut failures = Vec::new();
    for seed in first..first + n {
        let params = random_scenario(seed);
        for scheme in Scheme::ALL {
            let r = match run(scheme, &params) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("seed {seed} {}: cannot run: {e}", scheme.name()));
                    continue;
                }
            };
            if !r.violations.is_empty() {
                failures.push(format!(
                    "seed {seed} {}: {}\n    reproduce: JASPER_SWARM_FIRST={seed} JASPER_SWARM_SEEDS=1 cargo test --release -p jasper-sim --test swarm\n    scenario: {params:?}",
                    scheme.name(),
                    r.violations.join("; ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} invariant failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
