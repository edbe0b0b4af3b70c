//! Several publishers, one tree: three publishers at their own rates feed
//! the same hedged roots of a real local tree; every receiver gets every
//! message of every stream once, and hands them over in one deadline order
//! (deadline, stream, sequence) except the ones it flags late.

mod common;

#[test]
fn three_publishers_one_deadline_order_at_every_receiver() {
    let json = common::tmp("publishers-3.json");
    let args = [
        "local",
        "--receivers",
        "8",
        "--publishers",
        "3",
        "--publisher-rates",
        "1500,1000,500",
        "--duration",
        "3",
        "--receivers-per-process",
        "4",
    ];
    let (v, stdout) = common::run_local(&args, &json, &[]);
    assert_eq!(v["messages_published"], 9000, "{stdout}");
    assert_eq!(v["missing_total"], 0, "{stdout}");
    assert_eq!(v["duplicates_total"], 0, "{stdout}");
    // Deadline order across publishers: nothing handed over after a
    // later-deadline message unless the receiver flagged it late, so any
    // two messages no receiver got late reached every receiver in the same
    // order.
    assert_eq!(v["out_of_order_unflagged_total"], 0, "{stdout}");
    let late = v["late_fraction"].as_f64().unwrap();
    let in_order = v["in_order_fraction"].as_f64().unwrap();
    assert!(
        1.0 - in_order <= late + 1e-9,
        "out-of-order share {} exceeds the late share {late}: {stdout}",
        1.0 - in_order
    );
    assert!(v["same_order_fraction"].as_f64().unwrap() > 0.0, "{stdout}");
    // Each publisher published its own stream at its own rate, and every
    // one took delay reports from the roots.
    let pubs: Vec<&serde_json::Value> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.get("stream").is_some())
        .collect();
    assert_eq!(pubs.len(), 3, "{stdout}");
    let mut streams: Vec<u64> = pubs.iter().map(|p| p["stream"].as_u64().unwrap()).collect();
    streams.sort_unstable();
    assert_eq!(streams, [1, 2, 3]);
    let published: Vec<u64> = pubs
        .iter()
        .map(|p| p["published"].as_u64().unwrap())
        .collect();
    assert_eq!(published, [4500, 3000, 1500], "{stdout}");
    for p in &pubs {
        assert!(p["reports"].as_u64().unwrap() > 0, "{p}");
    }
    assert!(
        stdout.contains("3 publishers, one deadline order"),
        "{stdout}"
    );
    assert!(stdout.contains("order:"), "{stdout}");
}
