//! The adversarial suite: a real local tree (one process per node, loopback,
//! every packet authenticated) under every attack of `jasper local --attack
//! all`, fired by a host without keys, by one that forges source addresses,
//! and by an insider holding one MP receiver's keys. Per receiver: nothing
//! missing, nothing duplicated, nothing forged handed over; every forged
//! packet refused by a guard; memory bounded; the deadline not moved by
//! forged reports.

mod common;

fn attack_run(extra: &[&str]) -> serde_json::Value {
    let json = common::tmp(&format!("adv-{}.json", extra.join("")));
    let mut args = vec![
        "local",
        "--receivers",
        "8",
        "--rate",
        "2000",
        "--duration",
        "3",
        "--attack",
        "all",
        "--attack-volume",
        "0.02",
    ];
    args.extend_from_slice(extra);
    let (v, stdout) = common::run_local(&args, &json, &[]);
    assert_eq!(v["missing_total"], 0, "{stdout}");
    assert_eq!(v["duplicates_total"], 0, "{stdout}");
    assert_eq!(v["forged_deliveries"], 0, "{stdout}");
    assert_eq!(v["attacks"].as_array().unwrap().len(), 8, "{stdout}");
    let nodes = v["nodes"].as_array().unwrap();
    for n in nodes {
        if let Some(rss) = n["process_peak_rss_bytes"].as_u64() {
            assert!(rss < 256 << 20, "receiver process grew to {rss} bytes");
        }
        // No receiver saw the forged end of session or a forged stream.
        if n["core"].get("sessions").is_some() && n.get("mold_packets").is_some() {
            assert_eq!(n["core"]["sessions"], 1, "{stdout}");
            assert_eq!(n["core"]["stream_limit"], 0, "{stdout}");
        }
    }
    // Forged reports moved nothing: the publisher heard only the root.
    let sender = nodes.iter().find(|n| n["name"] == "sender").unwrap();
    let g = &sender["guard"];
    let refused = [
        "unauthenticated",
        "bad_tag",
        "not_a_child",
        "unknown_source",
    ]
    .iter()
    .map(|k| g[k].as_u64().unwrap())
    .sum::<u64>();
    assert!(
        refused >= 20,
        "forged reports refused by the publisher: {g}"
    );
    // What the guard admitted is the roots' reports and, when a root saw a
    // gap (the machine was busy), its retransmit requests: nothing else.
    let r = &sender["retransmit"];
    let requests = r["requests_in"].as_u64().unwrap() + r["requests_limited"].as_u64().unwrap();
    assert_eq!(
        sender["reports"].as_u64().unwrap() + requests,
        g["admitted"].as_u64().unwrap(),
        "{g} {r}"
    );
    v
}

#[test]
fn outsider_without_keys_changes_nothing() {
    let v = attack_run(&[]);
    assert!(v["guard_drops"]["unknown_source"].as_u64().unwrap() > 0);
}

#[test]
fn insider_with_one_receivers_keys_changes_nothing() {
    let v = attack_run(&["--attacker", "insider"]);
    assert!(v["guard_drops"]["unknown_source"].as_u64().unwrap() > 0);
}

/// Forging source addresses needs a raw socket (root or CAP_NET_RAW, which
/// CI has); elsewhere the test says so and passes.
#[test]
fn outsider_forging_source_addresses_is_stopped_by_the_tags() {
    if std::net::UdpSocket::bind("127.0.0.1:0").is_ok()
        && std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                !s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(true)
    {
        eprintln!("skipped: forging source addresses needs root");
        return;
    }
    let v = attack_run(&["--spoof"]);
    let d = &v["guard_drops"];
    for k in ["bad_tag", "unauthenticated", "unknown_stream"] {
        assert!(d[k].as_u64().unwrap_or(0) > 0, "{k}: {d}");
    }
}
