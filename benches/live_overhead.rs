//! What the live counters cost: a receiver's whole receive → release →
//! housekeeping path over the in-memory backend (no sockets: CPU only),
//! with the metrics endpoint off, on, and on while scraped without pause;
//! then the pieces (per-release histogram update, the snapshot a run loop
//! copies ten times a second, rendering an endpoint of 64 receivers).
//!
//! Run: `cargo bench -p jasper-benches --bench live_overhead`
//! (optional arg: messages per trial, default 100000).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_core::clock::Clock;
use jasper_core::config::NodeConfig;
use jasper_core::receiver::{ReceiverStats, Release};
use jasper_core::sender::{SenderConfig, SenderCore};
use jasper_io::clock::NodeClock;
use jasper_io::mem::MemHub;
use jasper_io::PacketIo;
use jasper_live::expo::NodeView;
use jasper_live::{Exporter, Figures, Published, ReceiverFigures, Role, Snapshot};
use jasper_receiver::ReceiverNode;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Off,
    On,
    OnScraped,
}

fn config(metrics: bool) -> NodeConfig {
    let me: SocketAddr = "10.1.0.2:1".parse().unwrap();
    let parent: SocketAddr = "10.1.0.1:1".parse().unwrap();
    let mut cfg = NodeConfig::leaf_receiver("mp", 5, 0, me, (1, parent));
    // Released at arrival: the bench measures work, not waiting.
    cfg.receiver.core.hold = false;
    if metrics {
        // A free port, named in the config as a deployment would.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        cfg.metrics.listen = Some(l.local_addr().unwrap());
    }
    cfg
}

/// ns per message through one receiver, `messages` messages.
fn trial(mode: Mode, messages: u64) -> f64 {
    let cfg = config(mode != Mode::Off);
    let (me, parent) = (cfg.node.listen[0], cfg.peers[0].addr);
    let hub = MemHub::new();
    let mut node = ReceiverNode::with_io(&cfg, Box::new(hub.attach(&[me], 32))).unwrap();
    let _parent_queue = hub.attach(&[parent], 32);
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = (mode == Mode::OnScraped).then(|| {
        let addr = cfg.metrics.listen.unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if jasper_live::scrape::fetch(addr, Duration::from_secs(2)).is_ok() {
                    n += 1;
                }
            }
            n
        })
    });
    let mut up = hub.attach(&[parent], 32);
    let mut s = SenderCore::new(SenderConfig::default());
    let clock = NodeClock::from_config(&Default::default());
    let mut busy = Duration::ZERO;
    let mut released = 0u64;
    let chunk = 2_000u64;
    let mut sent = 0u64;
    while sent < messages {
        for _ in 0..chunk.min(messages - sent) {
            s.publish(clock.read(), &[0x41; 32]).unwrap();
            sent += 1;
        }
        while let Some(p) = s.poll_transmit() {
            up.send_to(&p, me);
        }
        up.flush().unwrap();
        let t = Instant::now();
        while released < sent {
            node.receive().unwrap();
            released += node.release(&mut |_, _| {}) as u64;
            node.housekeeping().unwrap();
        }
        busy += t.elapsed();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = scraper {
        let scrapes = h.join().unwrap();
        assert!(scrapes > 0, "the scraper never got an answer");
    }
    busy.as_nanos() as f64 / messages as f64
}

/// ns per call, best of 5 rounds of `n` (the machine is shared).
fn per_call(n: u64, mut f: impl FnMut(u64)) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::MAX, f64::min)
}

fn receiver_snapshot(i: u64) -> Snapshot {
    Snapshot {
        now_ns: i,
        io: Default::default(),
        guard: Default::default(),
        upstreams: vec![],
        clock_status: jasper_core::clock::ClockStatus::Synchronized,
        clock_bound_ns: 200,
        figures: Figures::Receiver(ReceiverFigures {
            stats: ReceiverStats {
                released: i,
                path_wins: vec![(1, i), (2, i)],
                ..Default::default()
            },
            held: 3,
            held_bytes: 108,
            mold_packets: 0,
        }),
    }
}

fn main() {
    let messages: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    println!("live counters: one receiver, receive → release → housekeeping over the in-memory backend, {messages} messages of 32 bytes per trial, best of 7 (interleaved)");
    let modes = [Mode::Off, Mode::On, Mode::OnScraped];
    let mut best = [f64::MAX; 3];
    for _ in 0..7 {
        for (k, m) in modes.iter().enumerate() {
            best[k] = best[k].min(trial(*m, messages));
        }
    }
    for (k, m) in modes.iter().enumerate() {
        println!(
            "  {:<38} {:>8.1} ns/msg  ({:+.1}% vs off)",
            match m {
                Mode::Off => "metrics off",
                Mode::On => "metrics on (copied every 100 ms)",
                Mode::OnScraped => "metrics on, scraped without pause",
            },
            best[k],
            (best[k] / best[0] - 1.0) * 100.0
        );
    }

    println!("pieces:");
    let mut e = Exporter::serve("127.0.0.1:0".parse().unwrap(), "mp", Role::Receiver, 100).unwrap();
    let rel = Release {
        stream: 1,
        session: 1,
        seq: 0,
        send_time_ns: 1_000,
        deadline_ns: 300_000,
        arrival_ns: 41_000,
        release_ns: 301_000,
        late: false,
        early: false,
        path: 0,
        hops: 2,
    };
    // Latencies spread over several buckets, as on a real feed.
    let ns = per_call(10_000_000, |i| {
        let mut r = rel;
        r.release_ns += (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) & 0xf_ffff;
        r.arrival_ns += (i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) >> 44) & 0x3_ffff;
        e.released(std::hint::black_box(&r));
    });
    println!("  per released message (two histogram updates):  {ns:>8.1} ns");
    let mut off = Exporter::off();
    let ns = per_call(10_000_000, |i| {
        std::hint::black_box(off.due(std::hint::black_box(i)));
    });
    println!("  per duty cycle, endpoint off (due?):            {ns:>8.2} ns");
    let ns = per_call(10_000_000, |i| {
        std::hint::black_box(e.due(std::hint::black_box(i)));
    });
    println!("  per duty cycle, endpoint on, not due:           {ns:>8.2} ns");
    let ns = per_call(200_000, |i| e.publish(receiver_snapshot(i)));
    println!(
        "  snapshot + publish (10 per second per node):    {:>8.2} µs  → {:.4}% of a core for 64 receivers",
        ns / 1e3,
        ns * 10.0 * 64.0 / 1e9 * 100.0
    );
    let views: Vec<NodeView> = (0..64)
        .map(|i| NodeView {
            node: format!("mp{i}"),
            role: Role::Receiver,
            published: Published {
                snapshot: receiver_snapshot(i),
                handover: Default::default(),
                owd: Default::default(),
                host_ns: jasper_io::host_now_ns(),
            },
        })
        .collect();
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..20 {
        bytes = jasper_live::expo::render(views.clone(), jasper_io::host_now_ns()).len();
    }
    println!(
        "  render an endpoint of 64 receivers:             {:>8.2} ms, {} bytes (HTTP thread, per scrape)",
        t.elapsed().as_secs_f64() * 1e3 / 20.0,
        bytes
    );
}
