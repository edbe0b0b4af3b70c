//! Failures during a real local tree run: a proxy killed (H = 1), the
//! publisher killed and restarted (a new session), a receiver process
//! killed with and without a restart. Every other node carries on without
//! an operator, and the report says what happened.

mod common;

fn run(extra: &[&str]) -> (serde_json::Value, String) {
    let json = common::tmp(&format!(
        "fail-{}.json",
        extra.join("").replace(['@', '+'], "_")
    ));
    let mut args = vec![
        "local",
        "--receivers",
        "8",
        "--rate",
        "2000",
        "--duration",
        "3",
        "--hedge",
        "1",
        "--receivers-per-process",
        "4",
    ];
    args.extend_from_slice(extra);
    common::run_local(&args, &json, &[])
}

#[test]
fn a_dead_proxy_loses_nothing_with_hedging_and_is_named() {
    let (v, stdout) = run(&["--kill-proxy", "proxy2@1"]);
    assert_eq!(v["missing_total"], 0, "{stdout}");
    assert_eq!(v["duplicates_total"], 0, "{stdout}");
    assert!(stdout.contains("proxy2 killed"), "{stdout}");
    assert!(stdout.contains("upstream proxy2"), "{stdout}");
    let dead: usize = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n["upstreams_dead"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
        })
        .count();
    assert!(dead >= 1, "{stdout}");
}

#[test]
fn a_restarted_publisher_is_a_new_session_every_node_accepts() {
    let (v, stdout) = run(&["--restart-publisher", "1.5"]);
    assert_eq!(v["missing_total"], 0, "{stdout}");
    assert_eq!(v["duplicates_total"], 0, "{stdout}");
    let nodes = v["nodes"].as_array().unwrap();
    let sender = nodes.iter().find(|n| n["name"] == "sender").unwrap();
    assert_eq!(sender["sessions"].as_array().unwrap().len(), 2, "{stdout}");
    for n in nodes.iter().filter(|n| n.get("mold_packets").is_some()) {
        assert_eq!(
            n["core"]["sessions"], 2,
            "every receiver took the new session: {stdout}"
        );
    }
}

#[test]
fn a_dead_receiver_process_is_reported_and_the_rest_carry_on() {
    let (v, stdout) = run(&["--kill-receivers", "1@1.5"]);
    assert!(stdout.contains("receivers1 killed"), "{stdout}");
    // The other process's MPs lost nothing; the dead one's MPs are missing
    // what came after its last snapshot, and the report says so.
    let per: Vec<u64> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("receiver "))
        .filter_map(|l| {
            l.split("missing ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        !per.is_empty() && v["missing_total"].as_u64().unwrap() > 0,
        "{stdout}"
    );
}

#[test]
fn a_restarted_receiver_process_serves_again() {
    let (v, stdout) = run(&["--kill-receivers", "0@1+0.3"]);
    assert!(stdout.contains("receivers0 restarted"), "{stdout}");
    let missing = v["missing_total"].as_u64().unwrap();
    // At most ~0.3 s down + 0.2 s since the last snapshot, × 4 MPs, × 2000
    // msgs/s; retransmission from the proxies' stores fills some or all of
    // it (the restarted receivers ask for what they missed).
    assert!(missing < 4 * 2000, "{stdout}");
}
