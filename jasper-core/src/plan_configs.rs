//! From a plan to one node config per node (used by `jasper plan`, `jasper local`, benchmarks).

use std::collections::BTreeSet;

use crate::clock::ClockClass;
use crate::config::{
    BackendSection, ClockSection, ClockSource, FaultSection, HedgeEndpoint, NodeConfig, NodeRole,
    NodeSection, Peer, ReceiverSection,
};
use crate::guard::TrustSection;
use crate::model::{rng, ClockModel, CloudModel};
use crate::plan::{Fanout, NodeId, Plan, Role, SENDER};
use crate::proxy::ProxyConfig;
use crate::sender::SenderConfig;

/// How to fill the per-node sections.
#[derive(Debug, Clone)]
pub struct ConfigOptions {
    /// `[backend]` for every node.
    pub backend: BackendSection,
    /// Emulated clocks of this class (offsets drawn per node), or the system clock.
    pub emulated_clock: Option<ClockClass>,
    /// Fault injection model, if any.
    pub faults: Option<CloudModel>,
    /// Seed for clock offsets and fault injection.
    pub seed: u64,
    /// `[sender]`.
    pub sender: SenderConfig,
    /// `[receiver]`.
    pub receiver: ReceiverSection,
    /// `[proxy]`.
    pub proxy: ProxyConfig,
    /// Direct unicast from the sender to every receiver (no proxies).
    pub direct: bool,
    /// Where each node's key file is (`<dir>/<name>.key`); `None` writes
    /// insecure (unauthenticated) configs.
    pub keys_dir: Option<std::path::PathBuf>,
}

impl Default for ConfigOptions {
    /// Every section's defaults, the system clock, no fault injection,
    /// seed 1, the tree (not direct unicast), insecure configs.
    fn default() -> Self {
        ConfigOptions {
            backend: BackendSection::default(),
            emulated_clock: None,
            faults: None,
            seed: 1,
            sender: SenderConfig::default(),
            receiver: ReceiverSection::default(),
            proxy: ProxyConfig::default(),
            direct: false,
            keys_dir: None,
        }
    }
}

fn clock_for(opts: &ConfigOptions, id: NodeId) -> ClockSection {
    match opts.emulated_clock {
        None => ClockSection::default(),
        Some(class) => {
            let model = ClockModel {
                class,
                ..ClockModel::default()
            };
            let mut r = rng(opts.seed.wrapping_mul(1_000_003).wrapping_add(id as u64));
            ClockSection {
                source: ClockSource::Emulated,
                class,
                offset_ns: model.draw_offset(&mut r),
                drift_ppb: 0.0,
                noise_ns: 0.0,
                bound_ns: None,
                seed: opts.seed ^ id as u64,
            }
        }
    }
}

/// One config per sender, proxy and MP (an MP with two endpoints gets one
/// config listening on both).
pub fn node_configs(plan: &Plan, opts: &ConfigOptions) -> Vec<NodeConfig> {
    let mut tables = plan.tables.clone();
    if opts.direct {
        let eps: Vec<NodeId> = plan.endpoints().collect();
        tables[SENDER as usize].fanout = Fanout::Direct {
            children: eps.clone(),
        };
        tables[SENDER as usize].report_children = eps.clone();
        for e in eps {
            tables[e as usize].parent = Some(SENDER);
            tables[e as usize].upstreams = [SENDER].into();
        }
    }
    // Every node admits every planned publisher's stream.
    let mut streams: Vec<u32> = plan
        .nodes
        .iter()
        .filter(|n| n.role == Role::Sender)
        .map(|n| match n.stream {
            Some(s) if n.id != SENDER => s,
            _ => opts.sender.stream,
        })
        .collect();
    streams.sort_unstable();
    streams.dedup();
    let mut out = Vec::new();
    for n in &plan.nodes {
        let mut hedge = None;
        let (role, listen, mp, table) = match n.role {
            // Direct unicast: one publisher only.
            Role::Sender if opts.direct && n.id != SENDER => continue,
            Role::Sender => (
                NodeRole::Sender,
                vec![n.addr],
                None,
                tables[n.id as usize].clone(),
            ),
            Role::Proxy { .. } if opts.direct => continue,
            Role::Proxy { .. } => (
                NodeRole::Proxy,
                vec![n.addr],
                None,
                tables[n.id as usize].clone(),
            ),
            Role::Receiver { endpoint: 1, .. } => continue,
            Role::Receiver { mp, .. } => {
                let eps = plan.endpoints_of(mp);
                let listen = eps.iter().map(|e| plan.nodes[*e as usize].addr).collect();
                let mut t = tables[n.id as usize].clone();
                let mut upstreams = t.upstreams.to_vec();
                for e in eps.iter().skip(1) {
                    upstreams.extend(tables[*e as usize].upstreams.iter().copied());
                    if let Some(parent) = tables[*e as usize].parent {
                        hedge = Some(HedgeEndpoint { id: *e, parent });
                    }
                }
                upstreams.sort_unstable();
                upstreams.dedup();
                t.upstreams = upstreams.into();
                (NodeRole::Receiver, listen, Some(mp), t)
            }
        };
        let mut ids = BTreeSet::new();
        table.fanout.for_each(0, |c, _| {
            ids.insert(c);
        });
        if let Fanout::Hedged { slots, .. } = &table.fanout {
            ids.extend(slots.iter().flatten().copied());
        }
        // An MP fed here may ask for retransmissions as either endpoint.
        let fed: Vec<NodeId> = ids.iter().copied().collect();
        for c in fed {
            if let Role::Receiver { mp, .. } = plan.nodes[c as usize].role {
                ids.extend(plan.endpoints_of(mp));
            }
        }
        ids.extend(table.parent);
        ids.extend(table.report_also.iter().copied());
        ids.extend(hedge.map(|h| h.parent));
        // Who may send to this node (the guard's source allowlist): its
        // upstreams, and its report children with their MP's other endpoint.
        ids.extend(table.upstreams.iter().copied());
        for c in &table.report_children {
            ids.insert(*c);
            if let Role::Receiver { mp, .. } = plan.nodes[*c as usize].role {
                ids.extend(plan.endpoints_of(mp));
            }
        }
        let peers = ids
            .into_iter()
            .map(|id| Peer {
                id,
                addr: plan.nodes[id as usize].addr,
                mp: match plan.nodes[id as usize].role {
                    Role::Receiver { mp, .. } => Some(mp),
                    _ => None,
                },
            })
            .collect();
        let faults = match &opts.faults {
            Some(m) => FaultSection {
                enabled: true,
                seed: opts.seed.wrapping_add(7_919 * (n.id as u64 + 1)),
                model: m.clone(),
            },
            None => FaultSection::default(),
        };
        out.push(NodeConfig {
            node: NodeSection {
                id: n.id,
                name: n.name.clone(),
                role,
                listen,
                mp,
                hedge,
            },
            backend: opts.backend.clone(),
            clock: clock_for(opts, n.id),
            faults,
            sender: SenderConfig {
                stream: match n.stream {
                    Some(s) if n.id != SENDER => s,
                    _ => opts.sender.stream,
                },
                ..opts.sender
            },
            proxy: opts.proxy,
            receiver: opts.receiver.clone(),
            trust: TrustSection {
                key_file: opts
                    .keys_dir
                    .as_ref()
                    .map(|d| d.join(format!("{}.key", n.name))),
                insecure: opts.keys_dir.is_none(),
                streams: streams.clone(),
                ..TrustSection::default()
            },
            metrics: Default::default(),
            table,
            peers,
        });
    }
    out
}

/// Switch on the MoldUDP64 hand-off of every receiver config: MP `k`
/// re-emits to `ip:base + 2k` (where its feed handler listens) and answers
/// re-requests on `ip:base + 2k + 1`. Distinct ports per MP let MPs share a
/// host (`jasper local`); on one host per MP they are as good as any.
pub fn set_mold_ports(
    cfgs: &mut [NodeConfig],
    ip: std::net::IpAddr,
    base: u16,
) -> Result<(), String> {
    if base == 0 {
        return Err("MoldUDP64 base port 0: give the port the first MP's feed handler listens on, e.g. 9000".into());
    }
    for c in cfgs
        .iter_mut()
        .filter(|c| c.node.role == NodeRole::Receiver)
    {
        let k = c.node.mp.unwrap_or(c.node.id);
        let port = |off: u32| {
            u16::try_from(base as u32 + 2 * k + off).map_err(|_| {
                format!(
                    "MoldUDP64 base port {base} leaves no port for MP {k} (MP k uses base + 2k and base + 2k + 1): use a lower base port"
                )
            })
        };
        c.receiver.mold_udp = Some(std::net::SocketAddr::new(ip, port(0)?));
        c.receiver.mold_request = Some(std::net::SocketAddr::new(ip, port(1)?));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{loopback_inventory, TreeSpec};

    fn opts(direct: bool) -> ConfigOptions {
        ConfigOptions {
            backend: BackendSection::default(),
            emulated_clock: Some(ClockClass::Huygens),
            faults: Some(CloudModel::default()),
            seed: 1,
            sender: SenderConfig::default(),
            receiver: ReceiverSection::default(),
            proxy: ProxyConfig::default(),
            direct,
            keys_dir: None,
        }
    }

    #[test]
    fn every_config_validates_and_round_trips() {
        let spec = TreeSpec {
            depth: Some(2),
            fanout: Some(4),
            hedge: 1,
            spray: true,
            roots: 1,
        };
        let plan = Plan::build(&loopback_inventory(5, 8, true, 43000), &spec).unwrap();
        let cfgs = node_configs(&plan, &opts(false));
        assert_eq!(cfgs.len(), 1 + 5 + 8);
        for c in &cfgs {
            let back = NodeConfig::from_toml(&c.to_toml()).unwrap();
            assert_eq!(&back, c);
            if c.node.role == NodeRole::Receiver {
                assert_eq!(c.node.listen.len(), 2, "receiver hedging: two endpoints");
                // Spraying: every last-level proxy may send to either endpoint.
                assert_eq!(c.table.upstreams.len(), 4);
                let h = c.node.hedge.expect("hedge endpoint");
                assert_ne!(
                    Some(h.parent),
                    c.table.parent,
                    "the hedge endpoint has another parent"
                );
            }
        }
        let mut cfgs = cfgs;
        set_mold_ports(&mut cfgs, [127, 0, 0, 1].into(), 9000).unwrap();
        let mut ports = Vec::new();
        for c in cfgs.iter().filter(|c| c.node.role == NodeRole::Receiver) {
            let (feed, req) = (
                c.receiver.mold_udp.unwrap(),
                c.receiver.mold_request.unwrap(),
            );
            assert_eq!(feed.port(), 9000 + 2 * c.node.mp.unwrap() as u16);
            assert_eq!(req.port(), feed.port() + 1);
            ports.extend([feed.port(), req.port()]);
            c.validate().unwrap();
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 16, "every MP its own ports");
        assert!(set_mold_ports(&mut cfgs, [127, 0, 0, 1].into(), 65530)
            .unwrap_err()
            .contains("lower base port"));
        let direct = node_configs(&plan, &opts(true));
        assert_eq!(direct.len(), 1 + 8);
        let mut n = 0;
        direct[0].table.fanout.for_each(0, |_, _| n += 1);
        assert_eq!(n, 16);
    }
}
