//! `jasper-receiver --config mp.toml`: run one MP's receiver.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use jasper_core::config::NodeRole;
use jasper_io::runtime::{stop_on_signals, ParentWatch};
use jasper_receiver::{run_until, ReceiverNode};

/// Run Jasper receivers (one per config file; several MPs may share a process).
/// Released messages go to the MoldUDP64 address of each config
/// (`[receiver] mold_udp`, one MoldUDP64 session per publisher stream;
/// re-requests answered on `mold_request`) and, with `--print`, to stdout.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Receiver config files.
    #[arg(long, required = true)]
    config: Vec<PathBuf>,
    /// Print one line per released message.
    #[arg(long)]
    print: bool,
    /// Exit when the process that started this one exits.
    #[arg(long)]
    managed: bool,
    /// Exit once the session ended and every held message was released
    /// (by default a receiver serves session after session).
    #[arg(long)]
    exit_after_session: bool,
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    jasper_io::runtime::precise_sleep();
    let mut nodes = Vec::new();
    for path in &args.config {
        let cfg =
            jasper_io::node::load_config(path, NodeRole::Receiver).map_err(anyhow::Error::msg)?;
        if let Some(a) = cfg.metrics.listen {
            println!("metrics {} http://{a}/metrics", cfg.node.name);
        }
        #[cfg(feature = "dpdk")]
        let dpdk: Option<jasper_io::node::DpdkOpener> = Some(jasper_dpdk::open_backend);
        #[cfg(not(feature = "dpdk"))]
        let dpdk: Option<jasper_io::node::DpdkOpener> = None;
        let mut node = ReceiverNode::open(&cfg, dpdk).map_err(anyhow::Error::msg)?;
        node.set_exit_after_session(args.exit_after_session);
        nodes.push(node);
    }
    for n in &nodes {
        jasper_io::runtime::warn_if_unsynchronized(n.name(), n.clock());
        jasper_io::runtime::warn_if_insecure(n.name(), n.report().authenticated);
        println!("ready {} {:?}", n.name(), n.local_addrs());
    }
    let stop = stop_on_signals();
    // SIGHUP: re-read every config and take the new upstreams, sources and
    // keys in place (a bad config is reported and the old one kept).
    let reload = jasper_io::runtime::reload_on_sighup();
    let print = args.print;
    let names: Vec<String> = nodes.iter().map(|n| n.name().to_string()).collect();
    while run_until(
        &mut nodes,
        &stop,
        &reload,
        ParentWatch::new(args.managed),
        |i, rel, payload| {
            if print {
                let host = jasper_io::host_now_ns();
                println!(
                    "{} seq={} bytes={} deadline={} released_host={} late={} path={} stream={}",
                    names[i],
                    rel.seq,
                    payload.len(),
                    rel.deadline_ns,
                    host,
                    rel.late,
                    rel.path,
                    rel.stream
                );
            }
        },
    ) {
        reload.store(false, std::sync::atomic::Ordering::SeqCst);
        for (n, path) in nodes.iter_mut().zip(&args.config) {
            match jasper_io::node::load_config(path, NodeRole::Receiver).and_then(|c| n.reload(&c))
            {
                Ok(()) => eprintln!("{}: reloaded {}", n.name(), path.display()),
                Err(e) => eprintln!("{}: reload refused, running on: {e}", n.name()),
            }
        }
    }
    for n in &nodes {
        eprintln!("{}", serde_json::to_string(&n.report())?);
    }
    Ok(())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
