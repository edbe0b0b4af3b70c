//! A local run's set-up: the plan, one config per node (with the run's
//! faults, clocks, hold mode, MoldUDP64 and metrics ports), fresh keys, and
//! the config files the child processes read.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use jasper_core::clock::{Clock, ClockClass, ClockStatus};
use jasper_core::config::{BackendSection, IdleStrategy, NodeConfig, NodeRole, ReceiverSection};
use jasper_core::deadline::{DeadlinePolicy, EstimatorConfig, TrackedDeadline};
use jasper_core::model::CloudModel;
use jasper_core::plan::Plan;
use jasper_core::plan_configs::{node_configs, ConfigOptions};
use jasper_core::proxy::ProxyConfig;
use jasper_core::sender::SenderConfig;
use jasper_io::clock::NodeClock;

use super::{inventory, tree_spec, ClockChoice, DelayModel, IdleArg, LocalArgs, Variant};

/// Everything a run needs before any process starts.
pub(super) struct Setup {
    pub(super) plan: Plan,
    pub(super) cfgs: Vec<NodeConfig>,
    /// Config file of each of `cfgs`, in order.
    pub(super) files: Vec<PathBuf>,
    pub(super) dir: PathBuf,
    pub(super) description: String,
    pub(super) clock_bound: u64,
    pub(super) clock_status: ClockStatus,
    /// Metrics endpoints (process name, address), when asked for.
    pub(super) metrics: Vec<(String, SocketAddr)>,
}

/// Packet copies per second a local tree may send in all (publishers'
/// copies to the roots, every proxy's to its children), the budget the
/// default gap keeps to. On loopback the kernel's UDP send path, the
/// receiving socket's work included, is most of a proxy's cost: measured
/// on a 2-core VM, 60–80 thousand copies a second (a 16-MP tree, 42
/// copies a packet, at 50,000 msgs/s) took the proxies' process about half
/// a core; this budget leaves the receivers and the publisher the rest.
pub(super) const LOCAL_COPIES_PER_S: u64 = 100_000;

/// The least gap between two data packets of a publisher by default:
/// 50 µs, or longer when the tree's copies of one packet would exceed
/// [`LOCAL_COPIES_PER_S`] at one packet per gap from every publisher.
/// What an operator sizes `[sender] packet_gap_ns` by, too: the packet rate
/// the tree carries, whatever the message rate.
pub(super) fn default_packet_gap_ns(cfgs: &[NodeConfig]) -> u64 {
    let copies = |c: &NodeConfig| {
        let mut n = 0u64;
        c.table.fanout.for_each(0, |_, _| n += 1);
        n
    };
    let proxies: u64 = cfgs
        .iter()
        .filter(|c| c.node.role == NodeRole::Proxy)
        .map(copies)
        .sum();
    let senders: Vec<u64> = cfgs
        .iter()
        .filter(|c| c.node.role == NodeRole::Sender)
        .map(copies)
        .collect();
    let per_packet: u64 = senders.iter().map(|s| s + proxies).sum();
    (per_packet.saturating_mul(1_000_000_000) / LOCAL_COPIES_PER_S).max(50_000)
}

/// Plan the tree and write its configs and keys under a fresh run directory.
pub(super) fn prepare(args: &LocalArgs, variant: Variant) -> anyhow::Result<Setup> {
    let spec = tree_spec(args);
    let inv = inventory(args, &spec)?;
    let plan =
        Plan::build(&inv, &spec).map_err(|e| anyhow::anyhow!("cannot plan the tree: {e}"))?;
    let model = match args.delay_model {
        DelayModel::Cloud => Some(CloudModel {
            loss: args.loss,
            ..CloudModel::default()
        }),
        DelayModel::None if args.loss > 0.0 => Some(CloudModel {
            loss: args.loss,
            ..CloudModel::zero()
        }),
        DelayModel::None => None,
    };
    let idle = match args.idle {
        IdleArg::Spin => IdleStrategy::Spin,
        IdleArg::Yield => IdleStrategy::Yield,
        IdleArg::Backoff => IdleStrategy::Backoff,
    };
    let hold = variant == Variant::Jasper;
    let opts = ConfigOptions {
        backend: BackendSection {
            idle,
            spin_us: args.spin_us.unwrap_or(BackendSection::default().spin_us),
            ..BackendSection::default()
        },
        emulated_clock: match args.clock {
            ClockChoice::Huygens => Some(ClockClass::Huygens),
            ClockChoice::Ptp => Some(ClockClass::Ptp),
            ClockChoice::Ntp => Some(ClockClass::Ntp),
            ClockChoice::System => None,
        },
        faults: model,
        seed: args.seed,
        sender: SenderConfig {
            deadline: DeadlinePolicy {
                margin_ns: args
                    .margin_us
                    .map_or(DeadlinePolicy::default().margin_ns, |m| {
                        m.saturating_mul(1_000)
                    }),
                tracked: args.deadline_quantile.map(|q| TrackedDeadline {
                    history_ns: args.deadline_history_ms.saturating_mul(1_000_000),
                    quantile_ppm: (q.clamp(0.0, 1.0) * 1e6).round() as u32,
                }),
                ..DeadlinePolicy::default()
            },
            packet_gap_ns: args.packet_gap_us.unwrap_or(0).saturating_mul(1_000),
            ..SenderConfig::default()
        },
        receiver: ReceiverSection {
            core: {
                let d = jasper_core::receiver::ReceiverConfig::default();
                jasper_core::receiver::ReceiverConfig {
                    hold,
                    // The tracked deadline takes each interval's max.
                    estimator: if args.deadline_quantile.is_some() {
                        EstimatorConfig {
                            window_ns: d.report_interval_ns,
                            percentile: 100.0,
                            ..d.estimator
                        }
                    } else {
                        d.estimator
                    },
                    ..d
                }
            },
            ..ReceiverSection::default()
        },
        proxy: ProxyConfig::default(),
        direct: variant == Variant::Direct,
        keys_dir: None,
    };
    let mut cfgs = node_configs(&plan, &opts);
    if args.packet_gap_us.is_none() {
        let gap_ns = default_packet_gap_ns(&cfgs);
        for c in cfgs.iter_mut().filter(|c| c.node.role == NodeRole::Sender) {
            c.sender.packet_gap_ns = gap_ns;
        }
    }
    if let Some(base) = args.mold {
        jasper_core::plan_configs::set_mold_ports(&mut cfgs, [127, 0, 0, 1].into(), base)
            .map_err(|e| anyhow::anyhow!("--mold: {e}"))?;
    }
    let metrics = crate::status::assign_local(&mut cfgs, args.metrics, args.receivers_per_process)?;
    let description = format!(
        "{}: {} receivers{}, {} — {} proxies (depth {}, fanout {}, hedge {}, spray {}), kernel UDP on loopback, clock {:?}, delay model {:?}, loss {}",
        variant.name(),
        args.receivers,
        if args.receiver_hedging { " (2 endpoints each)" } else { "" },
        if variant == Variant::Direct { "direct unicast from the sender" } else { "tree" },
        if variant == Variant::Direct { 0 } else { plan.proxies().count() },
        plan.depth,
        plan.fanout,
        plan.hedge,
        plan.spray,
        args.clock,
        args.delay_model,
        args.loss
    );
    let clocks: Vec<NodeClock> = cfgs
        .iter()
        .map(|c| NodeClock::from_config(&c.clock))
        .collect();
    let clock_bound = clocks.iter().map(|c| c.error_bound_ns()).max().unwrap_or(0);
    let clock_status = clocks
        .iter()
        .map(|c| c.status())
        .max_by_key(|s| match s {
            ClockStatus::Synchronized => 0,
            ClockStatus::Degraded => 1,
            ClockStatus::Unsynchronized => 2,
        })
        .unwrap_or(ClockStatus::Synchronized);

    let dir = std::env::temp_dir().join(format!(
        "jasper-run-{}-{}",
        std::process::id(),
        variant.name()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Every node authenticates, with keys made for this run.
    let masters = jasper_io::trust::random_masters(1).map_err(anyhow::Error::msg)?;
    jasper_io::trust::install_keys(&mut cfgs, &dir.join("keys"), &masters, None)
        .map_err(anyhow::Error::msg)?;
    let mut files = Vec::new();
    for c in &cfgs {
        let p = dir.join(format!("{}.toml", c.node.name));
        std::fs::write(&p, c.to_toml()).with_context(|| format!("cannot write {}", p.display()))?;
        files.push(p);
    }
    Ok(Setup {
        plan,
        cfgs,
        files,
        dir,
        description,
        clock_bound,
        clock_status,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jasper_core::plan::{loopback_inventory, proxies_needed};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        local: LocalArgs,
    }

    /// The configs `jasper local` plans for these flags (loopback ports).
    fn cfgs_for(flags: &[&str]) -> Vec<NodeConfig> {
        let args = Cli::parse_from(std::iter::once("local").chain(flags.iter().copied())).local;
        let spec = tree_spec(&args);
        let proxies = proxies_needed(args.receivers, false, &spec);
        let inv = loopback_inventory(proxies, args.receivers, false, 43000);
        let plan = Plan::build(&inv, &spec).unwrap();
        let opts = ConfigOptions::default();
        node_configs(&plan, &opts)
    }

    #[test]
    fn the_default_gap_keeps_the_trees_copies_within_the_budget() {
        // The default tree (16 MPs, depth 2, fanout 4, H = 1, two roots):
        // every copy of one packet that the publisher and the proxies
        // send, counted from the plan, over the budget.
        let cfgs = cfgs_for(&[]);
        let mut copies = 0u64;
        for c in cfgs.iter().filter(|c| c.node.role != NodeRole::Receiver) {
            c.table.fanout.for_each(0, |_, _| copies += 1);
        }
        let gap = default_packet_gap_ns(&cfgs);
        assert_eq!(copies, 42, "as the README's 420 µs says");
        assert_eq!(gap, copies * 1_000_000_000 / LOCAL_COPIES_PER_S);
        assert!(
            gap > 50_000,
            "the default tree needs more than the floor: {gap} ns"
        );
        // A tiny tree keeps the 50 µs floor.
        let small = cfgs_for(&["--receivers", "2", "--hedge", "0", "--roots", "1"]);
        assert_eq!(default_packet_gap_ns(&small), 50_000);
    }

    #[test]
    fn proxies_share_processes_parents_first_and_a_kill_target_runs_alone() {
        let cfgs = cfgs_for(&[]);
        let paths: Vec<(&NodeConfig, PathBuf)> = cfgs
            .iter()
            .map(|c| (c, PathBuf::from(format!("{}.toml", c.node.name))))
            .collect();
        let names = |groups: Vec<Vec<&(&NodeConfig, PathBuf)>>| {
            groups
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|(c, _)| c.node.name.clone())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let proxies: Vec<String> = cfgs
            .iter()
            .filter(|c| c.node.role == NodeRole::Proxy)
            .map(|c| c.node.name.clone())
            .collect();
        assert_eq!(proxies.len(), 6);
        // Default: a process each, in plan order.
        let one = Cli::parse_from(["local"]).local;
        let g = names(super::super::proxy_groups(&paths, &one));
        assert_eq!(
            g,
            proxies.iter().map(|p| vec![p.clone()]).collect::<Vec<_>>()
        );
        // All in one, but the proxy a run kills gets its own process.
        let kill = format!("{}@2", proxies[2]);
        let all = Cli::parse_from([
            "local",
            "--proxies-per-process",
            "64",
            "--kill-proxy",
            &kill,
        ])
        .local;
        let g = names(super::super::proxy_groups(&paths, &all));
        let rest: Vec<String> = proxies
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, p)| p.clone())
            .collect();
        assert_eq!(g, vec![vec![proxies[2].clone()], rest]);
    }
}
