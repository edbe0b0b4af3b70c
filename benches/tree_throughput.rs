//! Throughput of one tree on kernel UDP: sender → 1 proxy → 16 receivers,
//! 32-byte messages packed into 1472-byte packets, real sockets on loopback,
//! one thread per role. For each offered rate, reports what arrived and
//! whether every receiver got every message (zero loss).
//!
//! Run: `cargo bench -p jasper-benches --bench tree_throughput`
//! (optional args: rates in msgs/s, e.g. `-- 500000 1000000`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_benches::loopback_tree;
use jasper_core::config::{BackendSection, NodeRole, ReceiverSection};
use jasper_core::plan::TreeSpec;
use jasper_core::plan_configs::ConfigOptions;
use jasper_core::receiver::ReceiverConfig;
use jasper_core::sender::SenderConfig;
use jasper_io::node::open_backend;
use jasper_io::runtime::ParentWatch;
use jasper_proxy::ProxyNode;
use jasper_receiver::ReceiverNode;
use jasper_sender::Publisher;

const RECEIVERS: usize = 16;
const MSG: usize = 32;
const SECONDS: f64 = 2.0;

struct Outcome {
    offered: u64,
    published: u64,
    delivered_min: u64,
    seconds: f64,
    proxy_in: u64,
    proxy_out: u64,
    proxy_tx_dropped: u64,
}

fn run(rate: u64, max_packet: usize, auth: bool) -> Outcome {
    let opts = ConfigOptions {
        backend: BackendSection {
            socket_buffer: 16 << 20,
            burst: 64,
            ..BackendSection::default()
        },
        sender: SenderConfig {
            max_packet,
            ..SenderConfig::default()
        },
        receiver: ReceiverSection {
            core: ReceiverConfig {
                hold: false,
                ..ReceiverConfig::default()
            },
            ..ReceiverSection::default()
        },
        ..ConfigOptions::default()
    };
    let spec = TreeSpec {
        depth: Some(1),
        fanout: Some(RECEIVERS as u32),
        hedge: 0,
        spray: false,
        roots: 1,
    };
    let (_plan, cfgs) = loopback_tree(RECEIVERS, spec, &opts, auth);
    let stop = Arc::new(AtomicBool::new(false));
    let proxy_cfg = cfgs
        .iter()
        .find(|c| c.node.role == NodeRole::Proxy)
        .expect("proxy")
        .clone();
    let pstop = stop.clone();
    let proxy = std::thread::spawn(move || {
        jasper_io::runtime::precise_sleep();
        let io = open_backend(&proxy_cfg, None).expect("proxy socket");
        let mut node = ProxyNode::new(&proxy_cfg, io).expect("proxy keys");
        node.run(&pstop, ParentWatch::new(false))
            .expect("proxy run");
        let r = node.report("proxy");
        (r.core.packets_in, r.tx_packets, r.tx_dropped)
    });
    let rcfgs: Vec<_> = cfgs
        .iter()
        .filter(|c| c.node.role == NodeRole::Receiver)
        .cloned()
        .collect();
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..RECEIVERS).map(|_| AtomicU64::new(0)).collect());
    let (rstop, rcounts) = (stop.clone(), counts.clone());
    let receivers = std::thread::spawn(move || {
        jasper_io::runtime::precise_sleep();
        let mut nodes: Vec<ReceiverNode> = rcfgs
            .iter()
            .map(|c| ReceiverNode::open(c, None).expect("receiver socket"))
            .collect();
        jasper_receiver::run(&mut nodes, &rstop, ParentWatch::new(false), |i, _, _| {
            rcounts[i].fetch_add(1, Ordering::Relaxed);
        });
    });
    std::thread::sleep(Duration::from_millis(100));
    jasper_io::runtime::precise_sleep();
    let scfg = cfgs
        .iter()
        .find(|c| c.node.role == NodeRole::Sender)
        .expect("sender");
    let mut publisher = Publisher::from_node_config(scfg, None).expect("publisher");
    let total = (rate as f64 * SECONDS) as u64;
    let msg = [0x41u8; MSG];
    let per_packet = (max_packet - 48) / (MSG + 2);
    let batch: Vec<&[u8]> = vec![&msg[..]; per_packet];
    let start = Instant::now();
    let mut published = 0u64;
    while published < total {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if due >= published + batch.len() as u64 || due == total {
            let k = (due - published).min(batch.len() as u64) as usize;
            publisher.publish_batch(&batch[..k]).expect("publish");
            published += k as u64;
        } else {
            publisher.service();
            // Sleep until the next full batch is due (this machine has 2 cores
            // for three roles: a spinning sender would starve the others).
            let next = (published + batch.len() as u64) as f64 / rate as f64;
            let wait = next - start.elapsed().as_secs_f64();
            if wait > 20e-6 {
                std::thread::sleep(Duration::from_secs_f64(wait - 10e-6));
            }
        }
    }
    publisher.end_session();
    // Wait until delivery stops progressing.
    let mut last = 0;
    let mut still = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let sum: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        if sum == total * RECEIVERS as u64 || still.elapsed() > Duration::from_millis(300) {
            break;
        }
        if sum != last {
            last = sum;
            still = Instant::now();
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let (proxy_in, proxy_out, proxy_tx_dropped) = proxy.join().expect("proxy thread");
    receivers.join().expect("receiver thread");
    Outcome {
        offered: rate,
        published,
        delivered_min: counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0),
        seconds,
        proxy_in,
        proxy_out,
        proxy_tx_dropped,
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rates = if args.is_empty() {
        vec![
            250_000, 500_000, 750_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000,
        ]
    } else {
        args
    };
    for max_packet in [1472, 8972] {
        let per_packet = (max_packet - 48) / (MSG + 2);
        for auth in [false, true] {
            println!(
                "\ntree throughput: sender → 1 proxy → {RECEIVERS} receivers, {MSG}-byte messages, {max_packet}-byte packets ({per_packet} msgs each), kernel UDP on loopback, {SECONDS} s per rate, authentication {}",
                if auth { "on" } else { "off" }
            );
            table(&rates, max_packet, auth);
        }
    }
}

fn table(rates: &[u64], max_packet: usize, auth: bool) {
    println!(
        "{:>12} {:>12} {:>14} {:>10} {:>12} {:>12} {:>10}",
        "offered/s", "published", "min delivered", "loss", "proxy in/s", "proxy out/s", "tx drops"
    );
    let mut best = 0;
    for &rate in rates {
        let o = run(rate, max_packet, auth);
        let loss = o.published - o.delivered_min;
        if loss == 0 {
            best = best.max(o.offered);
        }
        println!(
            "{:>12} {:>12} {:>14} {:>10} {:>12.0} {:>12.0} {:>10}",
            o.offered,
            o.published,
            o.delivered_min,
            loss,
            o.proxy_in as f64 / o.seconds,
            o.proxy_out as f64 / o.seconds,
            o.proxy_tx_dropped
        );
    }
    println!("highest offered rate with zero loss at every receiver: {best} msgs/s");
}
