//! `--mold` switches the MoldUDP64 hand-off on from `jasper local` and
//! `jasper plan`. (The hand-off itself, read by a third-party MoldUDP64
//! client after loss and reordering, is tested in
//! `jasper-receiver/tests/mold_client.rs`.)

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{jasper, run_local, tmp};

/// A base port whose next `n` UDP ports are free on loopback now; the first
/// one stays bound (the feed handler's socket).
fn free_ports(n: u16) -> UdpSocket {
    for _ in 0..50 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p.checked_add(n).is_some()
            && (1..n).all(|k| UdpSocket::bind(("127.0.0.1", p + k)).is_ok())
        {
            return s;
        }
    }
    panic!("no {n} free consecutive ports");
}

fn field(b: &[u8]) -> (Vec<u8>, u64, u16) {
    (
        b[..10].to_vec(),
        u64::from_be_bytes(b[10..18].try_into().unwrap()),
        u16::from_be_bytes(b[18..20].try_into().unwrap()),
    )
}

#[test]
fn local_mold_feeds_a_feed_handler_and_answers_its_requests() {
    // 4 MPs: MP k on base + 2k (feed) and base + 2k + 1 (requests).
    let feed = free_ports(8);
    let base = feed.local_addr().unwrap().port();
    feed.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // MP 0's feed handler: reads the feed, asks once for sequences 1..=5.
    let handler = std::thread::spawn(move || {
        let ask = UdpSocket::bind("127.0.0.1:0").unwrap();
        ask.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut names, mut msgs, mut ends, mut reply) = (Vec::new(), 0u64, 0u64, None);
        let mut buf = [0u8; 2048];
        while let Ok(n) = feed.recv(&mut buf) {
            let (name, seq, count) = field(&buf[..n]);
            if !names.contains(&name) {
                names.push(name.clone());
            }
            match count {
                0xFFFF => {
                    ends += 1;
                    break;
                }
                0 => {}
                c => msgs += c as u64,
            }
            if reply.is_none() && seq > 5 {
                let mut r = name.clone();
                r.extend_from_slice(&1u64.to_be_bytes());
                r.extend_from_slice(&5u16.to_be_bytes());
                ask.send_to(&r, ("127.0.0.1", base + 1)).unwrap();
                let n = ask.recv(&mut buf).unwrap();
                reply = Some(field(&buf[..n]));
            }
        }
        (names, msgs, ends, reply)
    });
    let json = tmp("mold.json");
    let base_s = base.to_string();
    let (v, stdout) = run_local(
        &[
            "local",
            "--receivers",
            "4",
            "--rate",
            "2000",
            "--duration",
            "1",
            "--mold",
            &base_s,
        ],
        &json,
        &[],
    );
    let (names, msgs, ends, reply) = handler.join().unwrap();
    assert_eq!(
        names.len(),
        1,
        "one stream, one MoldUDP64 session: {names:?}"
    );
    assert!(names[0].starts_with(b"J1"), "prefix J, stream 1: {names:?}");
    assert_eq!(msgs, 2000, "{stdout}");
    assert_eq!(ends, 1);
    let (name, seq, count) = reply.expect("a reply");
    assert_eq!((name, seq, count), (names[0].clone(), 1, 5));
    assert!(stdout.contains("MoldUDP64: 4 sessions"), "{stdout}");
    let nodes = v["nodes"].as_array().unwrap();
    let mold: Vec<&serde_json::Value> = nodes.iter().filter_map(|n| n.get("mold")).collect();
    assert_eq!(mold.len(), 4);
    for m in &mold {
        assert_eq!(m["messages"], 2000, "{m}");
        assert!(m["end_packets"].as_u64().unwrap() >= 1, "{m}");
        assert_eq!(m["requests_refused"], 0, "{m}");
    }
    assert_eq!(
        mold.iter()
            .map(|m| m["requests_served"].as_u64().unwrap())
            .sum::<u64>(),
        1
    );
}

#[test]
fn plan_mold_writes_the_hand_off_into_every_receiver_config() {
    let dir = tmp("plan-mold");
    let inv = tmp("inv-mold.toml");
    let mut text = String::from("[sender]\nname = \"pub\"\naddr = \"10.0.0.1:7000\"\n");
    text += "[[proxy]]\nname = \"p0\"\naddr = \"10.0.1.0:7000\"\n";
    for i in 0..3 {
        text += &format!("[[receiver]]\nname = \"mp{i}\"\naddr = \"10.0.2.{i}:7000\"\n");
    }
    std::fs::write(&inv, text).unwrap();
    let out = jasper()
        .args(["plan", "--roots", "1", "--mold", "9000", "--inventory"])
        .arg(&inv)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("MoldUDP64 hand-off"), "{stdout}");
    for i in 0..3u16 {
        let cfg = std::fs::read_to_string(dir.join(format!("mp{i}.toml"))).unwrap();
        let (f, r) = (9000 + 2 * i, 9001 + 2 * i);
        assert!(
            cfg.contains(&format!("mold_udp = \"127.0.0.1:{f}\"")),
            "{cfg}"
        );
        assert!(
            cfg.contains(&format!("mold_request = \"127.0.0.1:{r}\"")),
            "{cfg}"
        );
    }
    let proxy = std::fs::read_to_string(dir.join("p0.toml")).unwrap();
    assert!(!proxy.contains("mold_udp ="), "{proxy}");
    let dir2 = tmp("plan-mold-bad");
    let bad = jasper()
        .args(["plan", "--roots", "1", "--mold", "65535", "--inventory"])
        .arg(&inv)
        .arg("--out")
        .arg(&dir2)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("lower base port"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
    let _ = std::fs::remove_file(inv);
}
