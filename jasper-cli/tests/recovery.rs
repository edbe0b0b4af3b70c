//! Nothing lost: a real local tree with 1% loss on every hop, hedging
//! (H = 1) and two hedged roots, with one root and one non-root proxy killed
//! mid-run. Every receiver gets every message exactly once, in order, and
//! the report carries the recovery figures.

mod common;

#[test]
fn loss_and_two_dead_proxies_lose_nothing_and_recovery_is_reported() {
    let json = common::tmp("recovery-loss-kill.json");
    let args = [
        "local",
        "--receivers",
        "8",
        "--rate",
        "2000",
        "--duration",
        "3",
        "--hedge",
        "1",
        "--roots",
        "2",
        "--loss",
        "0.01",
        "--receivers-per-process",
        "4",
        "--kill-proxy",
        "proxy0@1",
        "--kill-proxy",
        "proxy3@1.5",
    ];
    let (v, stdout) = common::run_local(&args, &json, &[]);
    assert_eq!(v["missing_total"], 0, "{stdout}");
    assert_eq!(v["duplicates_total"], 0, "{stdout}");
    // In order: a recovered message handed over after a later one is
    // flagged late; nothing breaks the order silently.
    assert_eq!(v["out_of_order_unflagged_total"], 0, "{stdout}");
    assert!(stdout.contains("proxy0 killed"), "{stdout}");
    assert!(stdout.contains("proxy3 killed"), "{stdout}");
    let rec = &v["recovery"];
    // 1% loss per hop over thousands of packets: gaps happen, and the
    // ones no hedged copy filled were asked for and recovered.
    assert!(rec["requests"].as_u64().unwrap() > 0, "{stdout}");
    assert!(rec["recovered"].as_u64().unwrap() > 0, "{stdout}");
    assert_eq!(rec["lost"], 0, "{stdout}");
    assert_eq!(rec["missing_now"], 0, "{stdout}");
    assert!(
        rec["gap_to_recovery_p50_ns"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    assert!(stdout.contains("recovery:"), "{stdout}");
    // No receiver gave up on a range.
    for n in v["nodes"].as_array().unwrap() {
        if n.get("mold_packets").is_some() {
            assert_eq!(n["core"]["lost"], 0, "{stdout}");
        }
    }
}
