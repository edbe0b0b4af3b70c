//! The bounded mutation run CI does: from a seeded RNG, valid packets (data,
//! heartbeat, control, delay reports; tagged with keys from
//! `MasterKeys::from_random`), key files and node configs are built and
//! damaged (bit flips, truncation, splices, count and length fields,
//! sequence and deadline extremes, replays), and every target is fed,
//! asserting its invariants. A failure names the seed that reproduces it.
//!
//! `JASPER_MUTATION_ROUNDS` scales the run (default 1).

use std::net::SocketAddr;

use rand::{Rng, RngCore};

use jasper_core::guard::GuardRole;
use jasper_core::proxy::ProxyConfig;
use jasper_core::receiver::ReceiverConfig;
use jasper_core::wire::DelayReport;
use jasper_fuzz_targets::check::{
    self, guard_addrs, GuardCheck, ProxyCheck, ReceiverCheck, ReducerCheck, Signer,
};
use jasper_fuzz_targets::mutate::{key_file_texts, node_config_texts, seeds, Gen};
use jasper_fuzz_targets::{targets, TARGETS};

fn rounds() -> u64 {
    std::env::var("JASPER_MUTATION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Run `f(seed)` for each seed of this test, naming the seed on failure.
fn for_seeds(base: u64, n: u64, f: impl Fn(u64)) {
    for s in base..base + n * rounds() {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s)));
        if let Err(e) = r {
            eprintln!("failed with seed {s}");
            std::panic::resume_unwind(e);
        }
    }
}

/// A stream of packets: mostly valid, some damaged, some authentic but
/// hostile, some replayed; tagged by `seal` (after hostile changes, before
/// damage).
fn stream(
    g: &mut Gen,
    n: usize,
    mut seal: impl FnMut(&mut Gen, Vec<u8>) -> Vec<u8>,
) -> Vec<(u64, Vec<u8>)> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::with_capacity(n);
    for _ in 0..n {
        g.advance(100_000);
        let mut p = g.valid();
        let m = g.rng.random_range(0..20);
        if m == 0 {
            g.hostile_fields(&mut p);
        }
        let mut p = seal(g, p);
        if (1..6).contains(&m) {
            let other = out.last().map(|x| x.1.clone()).unwrap_or_default();
            p = g.mutate(&p, &other);
        }
        if m == 6 && !out.is_empty() {
            let i = g.rng.random_range(0..out.len());
            p = out[i].1.clone();
        }
        out.push((g.now, p.clone()));
        if g.rng.random_range(0..4) == 0 {
            // A hedged copy right behind.
            out.push((g.now + g.rng.random_range(0..50_000), p));
        }
    }
    out
}

#[test]
fn wire_parser() {
    for_seeds(1, 12, |seed| {
        let mut g = Gen::new(seed);
        let ks = g.masters(1);
        let sender =
            jasper_core::auth::Auth::new(&ks.key_file(jasper_core::auth::KeyRole::Sender, 0, None));
        let mut last = Vec::new();
        for _ in 0..2_500 {
            let mut p = g.valid();
            if g.rng.random_range(0..4) == 0 {
                g.hostile_fields(&mut p);
            }
            if g.rng.random() {
                let n = p.len();
                p.resize(n + 32, 0);
                let m = sender.seal_publisher(&mut p, n).unwrap_or(n);
                p.truncate(m);
            }
            check::wire(&p);
            for _ in 0..4 {
                let q = g.mutate(&p, &last);
                check::wire(&q);
            }
            last = p;
        }
    });
}

#[test]
fn guards_admit_only_rightful_plausible_packets() {
    let roles = [GuardRole::Proxy, GuardRole::Receiver, GuardRole::Sender];
    let admitted = std::cell::Cell::new([0u64; 3]);
    for_seeds(100, 2, |seed| {
        for role in roles {
            for held in 0..3 {
                for sources in [true, false] {
                    let mut g = Gen::new(seed * 31 + held as u64);
                    let masters = [g.masters(1), g.masters(2)];
                    let foreign = g.masters(1);
                    let mut gc = GuardCheck::new(role, masters, foreign, held, sources);
                    let addrs = guard_addrs();
                    let pkts = stream(&mut g, 600, |g, p| {
                        let signer = match g.rng.random_range(0..10) {
                            0 => Signer::None,
                            1 => Signer::Publisher(g.rng.random_range(1..3)),
                            2 => Signer::Node(g.rng.random_range(5..8), g.rng.random_range(0..3)),
                            _ if p.get(5) == Some(&5) => {
                                // A report: its claimed node's own key, usually.
                                let node = u32::from_be_bytes([p[48], p[49], p[50], p[51]]);
                                Signer::Node(node, 0)
                            }
                            _ => Signer::Publisher(0),
                        };
                        gc.seal(signer, p)
                    });
                    for (now, p) in pkts {
                        let src: SocketAddr = match g.rng.random_range(0..8) {
                            0 => addrs[g.rng.random_range(0..addrs.len())],
                            _ if p.get(5) == Some(&5) => addrs[g.rng.random_range(1..4)],
                            _ => addrs[0],
                        };
                        gc.admit(now, src, &p);
                    }
                    let mut a = admitted.get();
                    a[held] += gc.stats().admitted;
                    admitted.set(a);
                }
            }
        }
    });
    // Not vacuous: authentic traffic passes, with and without keys.
    assert!(
        admitted.get().iter().all(|a| *a > 1_000),
        "{:?}",
        admitted.get()
    );
}

#[test]
fn receiver_state_machine() {
    let released = std::cell::Cell::new(0u64);
    for_seeds(200, 40, |seed| {
        let mut g = Gen::new(seed);
        let w = 1 << g.rng.random_range(6..12);
        let cfg = ReceiverConfig {
            dedup_window: w,
            max_held: g.rng.random_range(1..200),
            max_held_bytes: g.rng.random_range(64..20_000),
            max_seq_jump: g.rng.random_range(1..=w),
            max_streams: g.rng.random_range(1..3),
            join_reorder: g.rng.random_range(0..64),
            report_interval_ns: 1_000_000,
            hold: g.rng.random_range(0..6) != 0,
            ..ReceiverConfig::default()
        };
        let mut rc = ReceiverCheck::new(cfg);
        let pkts = stream(&mut g, 600, |_, p| p);
        for (now, p) in pkts {
            rc.packet(now, &p);
            match g.rng.random_range(0..4) {
                0 => {
                    rc.release(now);
                }
                1 => rc.events(),
                2 => rc.report(now),
                _ => {}
            }
        }
        let s = rc.finish();
        released.set(released.get() + s.released);
    });
    assert!(released.get() > 10_000, "released {}", released.get());
}

#[test]
fn proxy_state_machine() {
    let forwarded = std::cell::Cell::new(0u64);
    for_seeds(300, 40, |seed| {
        let mut g = Gen::new(seed);
        let w = 1 << g.rng.random_range(6..12);
        let cfg = ProxyConfig {
            dedup_window: w,
            max_seq_jump: g.rng.random_range(1..=w),
            max_streams: g.rng.random_range(1..3),
            max_hops: g.rng.random_range(0..4),
            ..ProxyConfig::default()
        };
        let mut pc = ProxyCheck::new(cfg);
        let pkts = stream(&mut g, 600, |_, p| p);
        for (now, p) in pkts {
            pc.packet(now, &p);
            if g.rng.random_range(0..8) == 0 {
                pc.report(now);
            }
        }
        forwarded.set(forwarded.get() + pc.stats().forwarded);
    });
    assert!(forwarded.get() > 5_000, "forwarded {}", forwarded.get());
}

#[test]
fn reducer_matches_its_model() {
    for_seeds(400, 60, |seed| {
        let mut g = Gen::new(seed);
        let n = g.rng.random_range(1..8u32);
        let children: Vec<u32> = (0..n).map(|i| 10 + i).collect();
        let ceiling = [0, 5_000_000, u64::MAX][g.rng.random_range(0..3)];
        let mut rc = ReducerCheck::new(&children, 100_000_000, ceiling);
        let mut now = g.now;
        for _ in 0..500 {
            now += g.rng.random_range(0..20_000_000);
            if g.rng.random_range(0..4) == 0 {
                rc.reduce(now);
                continue;
            }
            let from = 10 + g.rng.random_range(0..n + 2);
            let wide = g.rng.random_range(0..4) == 0;
            let v = |g: &mut Gen| {
                if wide {
                    [0, u64::MAX, g.rng.random()][g.rng.random_range(0..3)]
                } else {
                    g.rng.random_range(0..2_000_000)
                }
            };
            let rep = DelayReport {
                node: from,
                receivers: if wide { u32::MAX } else { 1 },
                owd_ns: v(&mut g),
                clock_bound_ns: v(&mut g),
                samples: v(&mut g),
            };
            rc.report(now, from, rep);
        }
    });
}

#[test]
fn key_files_and_node_configs() {
    for_seeds(500, 1, |seed| {
        let mut g = Gen::new(seed);
        let keys = key_file_texts(&mut g);
        let cfgs = node_config_texts();
        for t in keys.iter().chain(&cfgs) {
            check::key_file(t);
            check::node_config(t);
        }
        for _ in 0..300 {
            let t = &keys[g.rng.random_range(0..keys.len())];
            let m = g.mutate_text(t);
            check::key_file(&m);
            let t = &cfgs[g.rng.random_range(0..cfgs.len())];
            let m = g.mutate_text(t);
            check::node_config(&m);
        }
    });
}

#[test]
fn every_numeric_config_field_at_its_extremes() {
    // Each number in a receiver's and a proxy's config set to 0, the
    // largest TOML integer and 2^62 in turn: a config that validates must
    // never make a node panic or abort (a 2^62 dedup window once did).
    let cfgs = node_config_texts();
    for role in ["role = \"receiver\"", "role = \"proxy\""] {
        let text = cfgs.iter().find(|t| t.contains(role)).expect("a config");
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let Some(eq) = l.find(" = ") else { continue };
            if l[eq + 3..].parse::<u64>().is_err() {
                continue;
            }
            for v in ["0", "9223372036854775807", "4611686018427387904"] {
                let mut m = lines.clone();
                let changed = format!("{}{v}", &l[..eq + 3]);
                m[i] = &changed;
                check::node_config(&m.join("\n"));
            }
        }
    }
}

#[test]
fn byte_targets_on_mutated_seeds() {
    for_seeds(600, 2, |seed| {
        let mut g = Gen::new(seed);
        for (name, f) in TARGETS {
            let corpus = seeds(name);
            for s in &corpus {
                f(s);
            }
            let n = match *name {
                "node_config" | "key_file" => 10,
                _ => 150,
            };
            for _ in 0..n {
                let a = &corpus[g.rng.random_range(0..corpus.len())];
                let b = &corpus[g.rng.random_range(0..corpus.len())];
                let m = g.mutate(a, b);
                f(&m);
                let mut r = vec![0u8; g.rng.random_range(0..1024)];
                g.rng.fill_bytes(&mut r);
                f(&r);
            }
        }
        targets::sender(&[]);
    });
}
