//! `jasper-proxy --config node.toml`: run one proxy node.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use jasper_core::config::NodeRole;
use jasper_io::node::open_backend;
use jasper_io::runtime::{stop_on_signals, ParentWatch};
use jasper_proxy::{dpdk_opener, ProxyNode};

/// Run one Jasper proxy node from its TOML config (written by `jasper plan`).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Node config file.
    #[arg(long)]
    config: PathBuf,
    /// Exit when the process that started this one exits.
    #[arg(long)]
    managed: bool,
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    jasper_io::runtime::precise_sleep();
    let cfg =
        jasper_io::node::load_config(&args.config, NodeRole::Proxy).map_err(anyhow::Error::msg)?;
    let io = open_backend(&cfg, dpdk_opener()).map_err(anyhow::Error::msg)?;
    let mut node = ProxyNode::new(&cfg, io).map_err(anyhow::Error::msg)?;
    jasper_io::runtime::warn_if_unsynchronized(&cfg.node.name, node.clock());
    jasper_io::runtime::warn_if_insecure(&cfg.node.name, node.report(&cfg.node.name).authenticated);
    println!("ready {} {:?}", cfg.node.name, node.io().local_addrs());
    if let Some(a) = cfg.metrics.listen {
        println!("metrics {} http://{a}/metrics", cfg.node.name);
    }
    let stop = stop_on_signals();
    // SIGHUP: re-read the config and take the new table, sources and keys
    // in place (a bad config is reported and the old one kept).
    node.serve(&args.config, &stop, ParentWatch::new(args.managed))?;
    eprintln!("{}", serde_json::to_string(&node.report(&cfg.node.name))?);
    Ok(())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
