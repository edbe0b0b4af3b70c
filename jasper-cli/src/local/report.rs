//! The local run's report: the fairness figures, recovery, trust and
//! failure lines, MoldUDP64, and the JSON form.

use anyhow::Context;
use clap::ValueEnum;
use serde_json::{json, Value};

use super::RunResult;

fn sum(nodes: &[Value], path: &[&str]) -> u64 {
    nodes
        .iter()
        .filter_map(|n| {
            let mut v = n;
            for p in path {
                v = v.get(p)?;
            }
            v.as_u64()
        })
        .sum()
}

/// Loss recovery over the run: requests, recovered and lost sequences,
/// gap-to-recovery latency (median of the receivers' p50s, worst p99, max).
fn recovery_summary(nodes: &[Value]) -> Value {
    let lat: Vec<[u64; 3]> = nodes
        .iter()
        .filter_map(|n| n.get("recovery_ns")?.as_array().cloned())
        .filter(|a| a.len() == 3)
        .map(|a| [0, 1, 2].map(|i| a[i].as_u64().unwrap_or(0)))
        .filter(|a| a[2] > 0)
        .collect();
    let mut p50s: Vec<u64> = lat.iter().map(|a| a[0]).collect();
    p50s.sort_unstable();
    let lost_ranges: Vec<Value> = nodes
        .iter()
        .filter_map(|n| {
            let ranges = n.get("lost_ranges")?.as_array()?;
            (!ranges.is_empty()).then(|| json!({"node": n["name"], "ranges": ranges}))
        })
        .collect();
    json!({
        "requests": sum(nodes, &["core", "recovery_requests"]),
        "recovered": sum(nodes, &["core", "recovered"]),
        "lost": sum(nodes, &["core", "lost"]).saturating_sub(sum(nodes, &["core", "arrived_after_lost"])),
        "given_up": sum(nodes, &["core", "lost"]),
        "missing_now": sum(nodes, &["missing_now"]),
        "gap_to_recovery_p50_ns": p50s.get(p50s.len() / 2).copied().unwrap_or(0),
        "gap_to_recovery_p99_ns_worst_receiver": lat.iter().map(|a| a[1]).max().unwrap_or(0),
        "gap_to_recovery_max_ns": lat.iter().map(|a| a[2]).max().unwrap_or(0),
        "proxy_requests": sum(nodes, &["core", "retransmit_requests"]),
        "proxy_packets_resent": sum(nodes, &["retransmit", "packets_resent"]),
        "requests_passed_up": sum(nodes, &["retransmit", "requests_up"]),
        "requests_rate_limited": sum(nodes, &["retransmit", "requests_limited"]),
        "unavailable": sum(nodes, &["retransmit", "unavailable"]),
        "lost_ranges": lost_ranges,
    })
}

fn print_recovery(nodes: &[Value]) {
    let s = recovery_summary(nodes);
    let g = |k: &str| s[k].as_u64().unwrap_or(0);
    if g("requests") == 0 && g("lost") == 0 && g("recovered") == 0 {
        return;
    }
    println!(
        "  recovery: {} requests, {} sequences recovered (gap → arrival p50 {:.1} µs, worst receiver p99 {:.1} µs, max {:.1} µs), {} lost ({} given up on, some arrived later), {} still missing; nodes re-sent {} packets, passed {} requests up, {} unavailable, {} rate-limited",
        g("requests"),
        g("recovered"),
        g("gap_to_recovery_p50_ns") as f64 / 1e3,
        g("gap_to_recovery_p99_ns_worst_receiver") as f64 / 1e3,
        g("gap_to_recovery_max_ns") as f64 / 1e3,
        g("lost"),
        g("given_up"),
        g("missing_now"),
        g("proxy_packets_resent"),
        g("requests_passed_up"),
        g("unavailable"),
        g("requests_rate_limited"),
    );
    if let Some(ranges) = s["lost_ranges"].as_array() {
        for r in ranges.iter().take(8) {
            println!(
                "    lost at {}: (stream, session, first, count) {}",
                r["node"].as_str().unwrap_or("?"),
                r["ranges"]
            );
        }
    }
}

fn clock_states(nodes: &[Value]) -> String {
    let mut states: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n["clock_status"].as_str())
        .collect();
    states.sort_unstable();
    states.dedup();
    states.join(", ")
}

pub(super) fn print_run(r: &RunResult) {
    println!("== {}", r.description);
    println!(
        "published {} msgs in {:.2} s → {:.0} msgs/s{}",
        r.report.messages_published,
        r.seconds,
        r.throughput,
        if r.interrupted {
            "  (interrupted: partial run)"
        } else {
            ""
        }
    );
    if let Some(n) = r.nodes.iter().find(|n| n.get("feed_wait_ns").is_some()) {
        let w = |i: usize| n["feed_wait_ns"][i].as_u64().unwrap_or(0) as f64 / 1e3;
        let packets = n["core"]["packets"].as_u64().unwrap_or(0);
        let msgs = n["core"]["messages"].as_u64().unwrap_or(0);
        println!(
            "publisher: {packets} data packets, {:.1} msgs each (batching gap {} µs); wait of a message from its due instant to the publish call that packs it: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (not in OWD, OML or hand-over latency, which start when the packet leaves)",
            msgs as f64 / packets.max(1) as f64,
            n["packet_gap_ns"].as_u64().unwrap_or(0) / 1_000,
            w(0),
            w(1),
            w(2),
        );
    }
    let publishers: Vec<String> = r
        .nodes
        .iter()
        .filter(|n| n.get("stream").is_some())
        .map(|n| {
            format!(
                "{} (stream {}, {} msgs/s, {} published)",
                n["name"].as_str().unwrap_or("?"),
                n["stream"],
                n["rate"],
                n["published"]
            )
        })
        .collect();
    if publishers.len() > 1 {
        println!(
            "{} publishers, one deadline order: {}",
            publishers.len(),
            publishers.join(", ")
        );
    }
    print!("{}", r.report.render());
    let clocks = clock_states(&r.nodes);
    if clocks != "synchronized" {
        println!(
            "  clocks: {clocks} — fairness cannot be claimed while a clock is not synchronized"
        );
    }
    println!(
        "  proxies: packets in {}  copies out {}  tx drops {}  malformed {}   receivers: duplicates suppressed {}  late {}  gaps {}  rx packets {}",
        sum(&r.nodes, &["core", "packets_in"]),
        sum(&r.nodes, &["core", "copies_out"]),
        sum(&r.nodes, &["tx_dropped"]),
        sum(&r.nodes, &["core", "dropped_malformed"]) + sum(&r.nodes, &["core", "malformed"]),
        sum(&r.nodes, &["core", "duplicates"]),
        sum(&r.nodes, &["core", "late"]),
        sum(&r.nodes, &["core", "gaps_detected"]).saturating_sub(sum(&r.nodes, &["core", "gaps_filled"])),
        sum(&r.nodes, &["rx_packets"]),
    );
    print_queueing(&r.nodes);
    print_recovery(&r.nodes);
    print_trust(r);
    print_mold(r);
}

/// How long packets waited in the nodes' socket queues: what a CPU-starved
/// node shows first (its OWD, stamped by the kernel on arrival, does not).
fn print_queueing(nodes: &[Value]) {
    let queued = sum(nodes, &["rx_queued_over_1ms"]);
    let (wait, packets) = (sum(nodes, &["rx_queue_ns"]), sum(nodes, &["rx_packets"]));
    let worst = nodes
        .iter()
        .filter_map(|n| {
            let p = n["rx_packets"].as_u64().filter(|p| *p > 0)?;
            let w = n["rx_queue_ns"].as_u64()?;
            Some((w as f64 / p as f64, n["name"].as_str().unwrap_or("?")))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    print!(
        "  socket queues: mean wait {:.1} µs, {queued} packets read > 1 ms after arrival",
        wait as f64 / packets.max(1) as f64 / 1e3
    );
    match worst {
        Some((w, name)) if queued > 0 => println!(
            " (worst {name}: mean {:.1} µs) — nodes short of CPU, not the network",
            w / 1e3
        ),
        _ => println!(),
    }
}

/// Guard refusals summed over nodes, by reason (non-zero only).
fn guard_drops(nodes: &[Value]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for n in nodes {
        let Some(g) = n.get("guard").and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in g {
            let v = v.as_u64().unwrap_or(0);
            if k == "admitted" || k == "feed_tags_remembered" || v == 0 {
                continue;
            }
            match out.iter_mut().find(|(r, _)| r == k) {
                Some((_, x)) => *x += v,
                None => out.push((k.clone(), v)),
            }
        }
    }
    out
}

/// Trust, liveness and failure lines of the report.
fn print_trust(r: &RunResult) {
    let auth = r
        .nodes
        .iter()
        .filter_map(|n| n.get("authenticated").and_then(Value::as_bool))
        .all(|a| a);
    let drops = guard_drops(&r.nodes);
    println!(
        "  trust: packets {}; refused by the guards: {}",
        if auth {
            "authenticated at every node"
        } else {
            "NOT authenticated (insecure mode)"
        },
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let gaps = sum(&r.nodes, &["core", "gaps_detected"])
        .saturating_sub(sum(&r.nodes, &["core", "gaps_filled"]));
    let missing = r.report.missing_total;
    if missing > 0 || gaps > 0 {
        println!(
            "  missing {missing}: receivers detected {gaps} as gaps{}",
            if missing > gaps {
                "; the rest no receiver could see (lost before it started, while its process was down, after its only upstream died — see the events and dead upstreams below — or after a forged end of session, possible only for an insider forging source addresses: docs/SECURITY.md)"
            } else {
                ""
            }
        );
    }
    let forged = sum(&r.nodes, &["forged_deliveries"]);
    let out_of_range = sum(&r.nodes, &["out_of_range_deliveries"]);
    let rss = r
        .nodes
        .iter()
        .filter_map(|n| n["process_peak_rss_bytes"].as_u64())
        .max()
        .unwrap_or(0);
    println!(
        "  forged deliveries {forged}  out-of-range deliveries {out_of_range}  receiver process peak RSS {:.0} MB  truncated datagrams {}",
        rss as f64 / 1e6,
        sum(&r.nodes, &["rx_truncated"])
    );
    for a in &r.attacks {
        println!(
            "  attack {} by {}: {} packets sent",
            a.kind
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
            a.attacker
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
            a.packets
        );
    }
    for h in &r.happened {
        println!("  at {:.2} s: {}", h.at_s, h.what);
    }
    let mut dead: Vec<(u64, usize)> = Vec::new();
    for n in &r.nodes {
        for d in n["upstreams_dead"].as_array().into_iter().flatten() {
            if let Some(id) = d.as_u64() {
                match dead.iter_mut().find(|(x, _)| *x == id) {
                    Some((_, c)) => *c += 1,
                    None => dead.push((id, 1)),
                }
            }
        }
    }
    for (id, by) in dead {
        let name = r
            .names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("node {id}"));
        println!(
            "  upstream {name} (node {id}) silent > 200 ms for {by} nodes (dead, or cut off above it)"
        );
    }
    if let Some(s) = r.nodes.iter().find(|n| n["name"] == "sender") {
        if let Some(sessions) = s["sessions"].as_array().filter(|a| a.len() > 1) {
            println!(
                "  publisher sessions: {}",
                sessions
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" → ")
            );
        }
    }
}

/// The MoldUDP64 line of the report (with `--mold`).
fn print_mold(r: &RunResult) {
    let m = |k: &str| sum(&r.nodes, &["mold", k]);
    if m("sessions") == 0 {
        return;
    }
    println!(
        "  MoldUDP64: {} sessions, {} packets ({} messages, {} heartbeats, {} end of session), {} released out of order; requests {}: served {} (waited {}), refused {}, messages re-sent {}, send errors {}",
        m("sessions"),
        m("packets"),
        m("messages"),
        m("heartbeats"),
        m("end_packets"),
        m("out_of_order"),
        m("requests"),
        m("requests_served"),
        m("requests_deferred"),
        m("requests_refused"),
        m("messages_resent"),
        m("send_errors"),
    );
}

pub(super) fn to_json(r: &RunResult) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(&r.report)?;
    let o = v.as_object_mut().context("report object")?;
    o.insert("throughput_msgs_per_s".into(), json!(r.throughput));
    o.insert("scheme".into(), json!(r.variant.name()));
    o.insert("seconds".into(), json!(r.seconds));
    o.insert("interrupted".into(), json!(r.interrupted));
    o.insert("description".into(), json!(r.description));
    o.insert("nodes".into(), json!(r.nodes));
    o.insert("attacks".into(), serde_json::to_value(&r.attacks)?);
    o.insert("events".into(), serde_json::to_value(&r.happened)?);
    o.insert(
        "forged_deliveries".into(),
        json!(sum(&r.nodes, &["forged_deliveries"])),
    );
    o.insert(
        "guard_drops".into(),
        json!(guard_drops(&r.nodes)
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect::<serde_json::Map<_, _>>()),
    );
    o.insert("recovery".into(), recovery_summary(&r.nodes));
    o.insert(
        "gaps_unfilled".into(),
        json!(sum(&r.nodes, &["core", "gaps_detected"])
            .saturating_sub(sum(&r.nodes, &["core", "gaps_filled"]))),
    );
    Ok(v)
}
