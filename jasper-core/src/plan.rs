//! From an inventory of machines to a multicast tree and per-node
//! forwarding tables.
//!
//! # Shape
//! Level 0 is the sender. Levels `1..=depth` are proxies: level 1 is a single
//! root proxy fed by the sender (the publisher sends one copy per packet),
//! level `l + 1` is spread evenly under level `l`, and the receiver endpoints
//! are spread evenly under the last level. With fanout `F`, the last level has
//! `ceil(E / F)` proxies for `E` endpoints, and each level above has
//! `ceil(next / F)`. The automatic shape is `depth = max(1, round(log10 E))`,
//! `F = ceil(E^(1/depth))` (≈ 10).
//!
//! # Hedging
//! - **Sibling hedging `H`**: every non-root proxy (levels ≥ 2) sends each
//!   packet to its own children *and* to the children of its next `H`
//!   siblings in the same level, cyclically. Every node below level 2 —
//!   receivers included — therefore receives `H + 1` copies from `H + 1`
//!   distinct proxies of one level (equal path lengths), and each such proxy
//!   emits `(H + 1)·F` copies per packet. Level-2 proxies have a single
//!   upstream (the root has no siblings).
//! - **Round-robin packet spraying**: the sibling a proxy serves rotates with
//!   the packet's sequence number (`slot = (index + seq + j) mod n`), so a slow
//!   proxy hurts every subtree a little instead of one subtree always. Every
//!   child still gets exactly `H + 1` copies of every packet.
//! - **Receiver hedging**: an MP may list a second endpoint (`hedge_addr`);
//!   the two endpoints are placed under different last-level proxies (when
//!   there are at least two) and the MP's receiver keeps the first copy.
//!
//! Delay reports flow up the *primary* tree: each node reports to the proxy
//! whose own slot contains it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Dense node identifier: 0 = sender, proxies `1..=P` in level order (1 is
/// the root), then receiver endpoints. A proxy's id is also its path tag
/// (16 bits on the wire, so proxy ids stop at [`MAX_PROXY_ID`]); receiver
/// ids are never path tags and may go beyond.
pub type NodeId = u32;

/// Largest proxy id, hence most proxies a tree may have: a proxy's id is
/// its 16-bit path tag (`u16::MAX` stays unused).
pub const MAX_PROXY_ID: NodeId = 65_534;

/// The sender's id.
pub const SENDER: NodeId = 0;
/// The first root proxy's id (roots are `ROOT..ROOT + R`).
pub const ROOT: NodeId = 1;
/// Most root proxies a tree may have.
pub const MAX_ROOTS: u32 = 8;

/// A machine in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Unique name.
    pub name: String,
    /// Address the node listens on.
    pub addr: SocketAddr,
}

/// A further publisher (another matching-engine shard, or a hot standby):
/// its own stream, fed into the same roots. The `[sender]` publishes
/// [`PRIMARY_STREAM`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherSpec {
    /// Unique name.
    pub name: String,
    /// Address it sends from (and takes delay reports and retransmit
    /// requests on).
    pub addr: SocketAddr,
    /// Its stream id: not 0, not [`PRIMARY_STREAM`], distinct per publisher.
    pub stream: u32,
}

/// Stream of the inventory's `[sender]`.
pub const PRIMARY_STREAM: u32 = 1;

/// A market participant's receiver, optionally with a hedge endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSpec {
    /// Unique name (the MP).
    pub name: String,
    /// Primary endpoint.
    pub addr: SocketAddr,
    /// Second endpoint for receiver hedging.
    #[serde(default)]
    pub hedge_addr: Option<SocketAddr>,
}

/// What the operator has: a sender, proxies, receivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The publisher.
    pub sender: HostSpec,
    /// Proxy machines, used in this order (the first is the root).
    #[serde(default, rename = "proxy")]
    pub proxies: Vec<HostSpec>,
    /// Receivers.
    #[serde(default, rename = "receiver")]
    pub receivers: Vec<ReceiverSpec>,
    /// Further publishers, each its own stream into the same roots.
    #[serde(default, rename = "publisher", skip_serializing_if = "Vec::is_empty")]
    pub publishers: Vec<PublisherSpec>,
}

/// Requested tree shape and hedging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSpec {
    /// Proxy levels; `None` = automatic.
    #[serde(default)]
    pub depth: Option<u32>,
    /// Children per proxy; `None` = automatic.
    #[serde(default)]
    pub fanout: Option<u32>,
    /// Sibling hedging factor H.
    #[serde(default)]
    pub hedge: u32,
    /// Round-robin packet spraying.
    #[serde(default)]
    pub spray: bool,
    /// Root proxies R: the publisher sends every packet to each, and each
    /// sends it to the whole level below, so the first hop is hedged too
    /// and no single proxy is a single point of failure.
    #[serde(default = "default_roots")]
    pub roots: u32,
}

/// Root proxies unless the shape says otherwise.
pub const DEFAULT_ROOTS: u32 = 2;

fn default_roots() -> u32 {
    DEFAULT_ROOTS
}

impl Default for TreeSpec {
    fn default() -> Self {
        TreeSpec {
            depth: None,
            fanout: None,
            hedge: 0,
            spray: false,
            roots: DEFAULT_ROOTS,
        }
    }
}

/// An inventory or shape that cannot make a tree; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}; {fix}")]
pub struct PlanError {
    /// What is wrong.
    pub problem: String,
    /// What to change.
    pub fix: String,
}

fn err<T>(problem: impl Into<String>, fix: impl Into<String>) -> Result<T, PlanError> {
    Err(PlanError {
        problem: problem.into(),
        fix: fix.into(),
    })
}

/// Role of a planned node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The publisher.
    Sender,
    /// A proxy at `level` (1 = root).
    Proxy {
        /// Level, 1-based.
        level: u32,
    },
    /// A receiver endpoint of MP number `mp` (index in the inventory);
    /// `endpoint` 0 is the primary, 1 the hedge.
    Receiver {
        /// MP index.
        mp: u32,
        /// Endpoint number.
        endpoint: u8,
    },
}

/// A node of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedNode {
    /// Dense id.
    pub id: NodeId,
    /// Name (endpoints of a hedged MP get `name` and `name#hedge`).
    pub name: String,
    /// Listen address.
    pub addr: SocketAddr,
    /// Role.
    pub role: Role,
    /// A publisher's stream id (publishers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<u32>,
}

/// How a node fans a packet out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fanout {
    /// Receivers forward nothing.
    None,
    /// Send every packet to all of these (sender, root proxy).
    Direct {
        /// Destinations.
        children: Vec<NodeId>,
    },
    /// Sibling-hedged fan-out of a non-root proxy.
    Hedged {
        /// This proxy's position in its level.
        index: u32,
        /// Children of every proxy of the level, by position (one copy
        /// shared by the level's tables: a level of P proxies would
        /// otherwise hold P copies of it).
        slots: Arc<[Vec<NodeId>]>,
        /// H.
        hedge: u32,
        /// Round-robin spraying.
        spray: bool,
    },
}

impl Fanout {
    /// Call `f(destination, hedged)` for every copy of the packet whose
    /// spraying key (first sequence) is `key`. No allocation.
    #[inline]
    pub fn for_each(&self, key: u64, mut f: impl FnMut(NodeId, bool)) {
        match self {
            Fanout::None => {}
            Fanout::Direct { children } => children.iter().for_each(|&c| f(c, false)),
            Fanout::Hedged {
                index,
                slots,
                hedge,
                spray,
            } => {
                let n = slots.len() as u64;
                if n == 0 {
                    return;
                }
                let rot = if *spray { key % n } else { 0 };
                for j in 0..=(*hedge as u64).min(n - 1) {
                    let slot = ((*index as u64 + rot + j) % n) as usize;
                    for &c in &slots[slot] {
                        f(c, j > 0);
                    }
                }
            }
        }
    }

    /// Copies emitted for a packet with spraying key `key`: the sizes of
    /// the H+1 served slots, without walking the destinations.
    #[inline]
    pub fn copies_for(&self, key: u64) -> usize {
        match self {
            Fanout::None => 0,
            Fanout::Direct { children } => children.len(),
            Fanout::Hedged {
                index,
                slots,
                hedge,
                spray,
            } => {
                let n = slots.len() as u64;
                if n == 0 {
                    return 0;
                }
                let rot = if *spray { key % n } else { 0 };
                (0..=(*hedge as u64).min(n - 1))
                    .map(|j| slots[((*index as u64 + rot + j) % n) as usize].len())
                    .sum()
            }
        }
    }

    /// Copies emitted per packet (unsprayed key).
    pub fn copies(&self) -> usize {
        self.copies_for(0)
    }
}

/// What one node needs to know to play its part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardingTable {
    /// This node.
    pub node: NodeId,
    /// Where delay reports go (primary parent); `None` for the sender.
    pub parent: Option<NodeId>,
    /// Every node that sends data to this node (its hedged upstreams;
    /// shared by the children of a sprayed level, whose upstreams are the
    /// whole level).
    pub upstreams: Arc<[NodeId]>,
    /// Nodes whose delay reports this node reduces (primary children).
    pub report_children: Vec<NodeId>,
    /// Further nodes that take this node's delay reports besides `parent`
    /// (the other root proxies, for the level below the roots).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub report_also: Vec<NodeId>,
    /// Data fan-out.
    pub fanout: Fanout,
}

/// The tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Proxy levels.
    pub depth: u32,
    /// Fanout used.
    pub fanout: u32,
    /// H.
    pub hedge: u32,
    /// Spraying on.
    pub spray: bool,
    /// Root proxies R.
    #[serde(default = "default_roots")]
    pub roots: u32,
    /// Every node, indexed by id.
    pub nodes: Vec<PlannedNode>,
    /// Proxy ids per level (`levels[0]` = the roots).
    pub levels: Vec<Vec<NodeId>>,
    /// Forwarding table per node, indexed by id.
    pub tables: Vec<ForwardingTable>,
    /// Number of MPs (receivers in the inventory).
    pub mps: u32,
}

fn auto_depth(endpoints: usize) -> u32 {
    ((endpoints as f64).log10().round() as u32).max(1)
}

/// Smallest fanout (at least 2) whose `depth` levels reach `endpoints`:
/// `ceil(endpoints^(1/depth))`, exact where floating point is not
/// (100,000^(1/5) computes to 10.000000000000002).
pub fn fanout_for_depth(endpoints: usize, depth: u32) -> u32 {
    let depth = depth.max(1);
    let mut f = ((endpoints as f64).powf(1.0 / depth as f64).ceil() as u32).max(1);
    // Guard against floating-point rounding down, then up.
    while (f as u128).pow(depth) < endpoints as u128 {
        f += 1;
    }
    while f > 1 && ((f - 1) as u128).pow(depth) >= endpoints as u128 {
        f -= 1;
    }
    f.max(2)
}

/// Most proxy levels a tree may have.
pub const MAX_DEPTH: u32 = 16;

/// Smallest depth at which `fanout` reaches `endpoints`, or `None` when no
/// depth up to [`MAX_DEPTH`] does (fanout 1 never branches).
fn depth_for_fanout(endpoints: usize, fanout: u32) -> Option<u32> {
    (1..=MAX_DEPTH).find(|d| (fanout as u128).saturating_pow(*d) >= endpoints as u128)
}

/// Number of proxies per level for `endpoints` endpoints.
pub fn level_sizes(endpoints: usize, depth: u32, fanout: u32) -> Vec<usize> {
    let mut sizes = vec![0usize; depth as usize];
    let f = fanout.max(1) as usize;
    let mut below = endpoints;
    for l in (0..depth as usize).rev() {
        sizes[l] = if l == 0 { 1 } else { below.div_ceil(f).max(1) };
        below = sizes[l];
    }
    sizes
}

/// A shape that uses exactly the inventory's proxies, as advice in an error
/// (", e.g. --depth 2 --fanout 3"), or nothing when none is found.
fn suggest_shape(inv: &Inventory, spec: &TreeSpec, endpoints: usize) -> String {
    for depth in 1..=6u32 {
        for fanout in 2..=(endpoints.max(2) as u32).min(1024) {
            if level_sizes(endpoints, depth, fanout).iter().sum::<usize>() - 1 + spec.roots as usize
                != inv.proxies.len()
            {
                continue;
            }
            let candidate = TreeSpec {
                depth: Some(depth),
                fanout: Some(fanout),
                ..*spec
            };
            if Plan::build(inv, &candidate).is_ok() {
                return format!(", e.g. --depth {depth} --fanout {fanout}");
            }
        }
    }
    String::new()
}

/// Even split: item `j` of `n_items` goes to group `j * n_groups / n_items`.
fn spread(n_items: usize, n_groups: usize) -> Vec<Vec<usize>> {
    let mut groups = vec![Vec::new(); n_groups];
    for j in 0..n_items {
        groups[j * n_groups / n_items].push(j);
    }
    groups
}

impl Plan {
    /// Build the tree. Errors say what to change in the inventory or shape.
    pub fn build(inv: &Inventory, spec: &TreeSpec) -> Result<Plan, PlanError> {
        validate_inventory(inv)?;
        let mps = inv.receivers.len();
        // Endpoints: all primaries, then all hedges (so the two endpoints of
        // an MP fall in different halves of the last level).
        let mut endpoints: Vec<(String, SocketAddr, u32, u8)> = inv
            .receivers
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), r.addr, i as u32, 0u8))
            .collect();
        for (i, r) in inv.receivers.iter().enumerate() {
            if let Some(h) = r.hedge_addr {
                endpoints.push((format!("{}#hedge", r.name), h, i as u32, 1));
            }
        }
        let e = endpoints.len();
        let (depth, fanout) = match (spec.depth, spec.fanout) {
            (Some(0), _) => return err("depth = 0", "set depth to at least 1 (one root proxy)"),
            (_, Some(0)) => return err("fanout = 0", "set fanout to at least 1"),
            (Some(d), Some(f)) => (d, f),
            (Some(d), None) => (d, fanout_for_depth(e, d)),
            (None, Some(f)) => match depth_for_fanout(e, f) {
                Some(d) => (d, f),
                None => {
                    return err(
                        format!(
                        "fanout {f} cannot reach {e} receiver endpoints within {MAX_DEPTH} levels"
                    ),
                        if f == 1 {
                            "a fanout-1 tree never branches: set fanout to at least 2 (e.g. 10), or give depth as well".to_string()
                        } else {
                            format!(
                                "raise fanout (at least {}), or give depth as well",
                                fanout_for_depth(e, MAX_DEPTH)
                            )
                        },
                    )
                }
            },
            (None, None) => {
                let d = auto_depth(e);
                (d, fanout_for_depth(e, d))
            }
        };
        if spec.roots == 0 || spec.roots > MAX_ROOTS {
            return err(
                format!("roots = {}", spec.roots),
                format!("use 1 to {MAX_ROOTS} root proxies (2 hedges the first hop)"),
            );
        }
        if depth > MAX_DEPTH {
            return err(
                format!("depth {depth} is too deep"),
                format!("use at most {MAX_DEPTH} levels"),
            );
        }
        let sizes = level_sizes(e, depth, fanout);
        // Each level must fit under the one above at this fanout.
        let last = *sizes.last().unwrap_or(&1);
        if last * fanout as usize > 0 && e > last * fanout as usize {
            return err(
                format!("{e} receiver endpoints do not fit under {last} last-level proxies at fanout {fanout}"),
                "raise fanout or depth",
            );
        }
        for l in 1..sizes.len() {
            if sizes[l] > sizes[l - 1] * fanout as usize {
                return err(
                    format!(
                        "level {} needs {} proxies but level {} can feed only {} at fanout {fanout}",
                        l + 1,
                        sizes[l],
                        l,
                        sizes[l - 1] * fanout as usize
                    ),
                    "raise depth or fanout",
                );
            }
        }
        // The roots all feed the same level below: R of them count as one
        // for capacity.
        let mut sizes = sizes;
        sizes[0] = spec.roots as usize;
        let needed: usize = sizes.iter().sum();
        if needed > MAX_PROXY_ID as usize {
            return err(
                format!(
                    "more than 65,534 proxies: the path tag is 16 bits, and the tree (depth {depth}, fanout {fanout}, {e} endpoints) needs {needed}"
                ),
                "shard the tree (one tree per symbol range), or raise fanout",
            );
        }
        if inv.proxies.len() < needed {
            return err(
                format!(
                    "the tree (depth {depth}, fanout {fanout}, {e} endpoints, levels {sizes:?}) needs {needed} proxies but the inventory lists {}",
                    inv.proxies.len()
                ),
                format!(
                    "add {} proxies, or lower depth, or raise fanout{}",
                    needed - inv.proxies.len(),
                    suggest_shape(inv, spec, e)
                ),
            );
        }
        if inv.proxies.len() > needed {
            return err(
                format!(
                    "the inventory lists {} proxies but the tree (depth {depth}, fanout {fanout}, levels {sizes:?}) uses {needed}; the rest would be unreachable",
                    inv.proxies.len()
                ),
                format!(
                    "remove {} proxies, or set depth/fanout so the tree uses them all{}",
                    inv.proxies.len() - needed,
                    suggest_shape(inv, spec, e)
                ),
            );
        }
        if spec.hedge > 0 {
            if depth < 2 {
                return err(
                    format!(
                        "hedge = {} needs sibling proxies but depth is 1 (a single root)",
                        spec.hedge
                    ),
                    "set depth ≥ 2 or hedge = 0",
                );
            }
            for (l, &n) in sizes.iter().enumerate().skip(1) {
                if (spec.hedge as usize) >= n {
                    return err(
                        format!("hedge = {} needs at least {} proxies in every level below the root, but level {} has {n}", spec.hedge, spec.hedge + 1, l + 1),
                        format!("lower hedge to {} or raise depth/fanout so that level has more proxies", n.saturating_sub(1)),
                    );
                }
            }
        }
        // Nodes.
        let mut nodes = Vec::with_capacity(1 + needed + e);
        nodes.push(PlannedNode {
            id: SENDER,
            name: inv.sender.name.clone(),
            addr: inv.sender.addr,
            role: Role::Sender,
            stream: Some(PRIMARY_STREAM),
        });
        let mut levels: Vec<Vec<NodeId>> = Vec::new();
        let mut next = 1u32;
        let mut proxies = inv.proxies.iter();
        for (l, &n) in sizes.iter().enumerate() {
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                let h = proxies.next().expect("proxy count checked above");
                nodes.push(PlannedNode {
                    id: next,
                    name: h.name.clone(),
                    addr: h.addr,
                    role: Role::Proxy {
                        level: l as u32 + 1,
                    },
                    stream: None,
                });
                ids.push(next);
                next += 1;
            }
            levels.push(ids);
        }
        let first_endpoint = next;
        for (name, addr, mp, ep) in &endpoints {
            nodes.push(PlannedNode {
                id: next,
                name: name.clone(),
                addr: *addr,
                role: Role::Receiver {
                    mp: *mp,
                    endpoint: *ep,
                },
                stream: None,
            });
            next += 1;
        }
        // Further publishers come last: adding or removing one changes no
        // other node's id.
        let mut publishers = vec![SENDER];
        for p in &inv.publishers {
            nodes.push(PlannedNode {
                id: next,
                name: p.name.clone(),
                addr: p.addr,
                role: Role::Sender,
                stream: Some(p.stream),
            });
            publishers.push(next);
            next += 1;
        }
        let total = nodes.len();

        // Primary children of each proxy.
        let mut primary: Vec<Vec<NodeId>> = vec![Vec::new(); total];
        primary[SENDER as usize] = levels[0].clone();
        for l in 0..levels.len() {
            let below: Vec<NodeId> = if l + 1 < levels.len() {
                levels[l + 1].clone()
            } else {
                (first_endpoint..first_endpoint + e as u32).collect()
            };
            let groups = spread(below.len(), levels[l].len());
            for (p, g) in levels[l].iter().zip(groups) {
                primary[*p as usize] = g.into_iter().map(|j| below[j]).collect();
            }
        }
        let mut parent: Vec<Option<NodeId>> = vec![None; total];
        for (p, ch) in primary.iter().enumerate() {
            for &c in ch {
                parent[c as usize] = Some(p as NodeId);
            }
        }
        // Below the roots every node reports to every root (its primary
        // parent first), so the publisher's estimate survives a root's loss;
        // each root reduces the whole level below.
        let below_roots: Vec<NodeId> = levels[0]
            .iter()
            .flat_map(|r| primary[*r as usize].clone())
            .collect();
        let mut report_also: Vec<Vec<NodeId>> = vec![Vec::new(); total];
        for &c in &below_roots {
            report_also[c as usize] = levels[0]
                .iter()
                .copied()
                .filter(|r| Some(*r) != parent[c as usize])
                .collect();
        }

        // Fan-out.
        let mut tables: Vec<ForwardingTable> = (0..total as u32)
            .map(|id| ForwardingTable {
                node: id,
                parent: parent[id as usize],
                upstreams: Arc::from([]),
                report_children: primary[id as usize].clone(),
                report_also: report_also[id as usize].clone(),
                fanout: Fanout::None,
            })
            .collect();
        // Every publisher sends to every root and takes every root's delay
        // reports (the primary as the roots' parent, the others as
        // `report_also`), so all derive deadlines from one estimate.
        for &p in &publishers {
            tables[p as usize].fanout = Fanout::Direct {
                children: levels[0].clone(),
            };
            tables[p as usize].report_children = levels[0].clone();
        }
        for &r in &levels[0] {
            tables[r as usize]
                .report_also
                .extend(publishers.iter().skip(1).copied());
            tables[r as usize].fanout = Fanout::Direct {
                children: below_roots.clone(),
            };
            tables[r as usize].report_children = below_roots.clone();
        }
        for level in levels.iter().skip(1) {
            let slots: Arc<[Vec<NodeId>]> =
                level.iter().map(|p| primary[*p as usize].clone()).collect();
            for (i, p) in level.iter().enumerate() {
                tables[*p as usize].fanout = Fanout::Hedged {
                    index: i as u32,
                    slots: slots.clone(),
                    hedge: spec.hedge,
                    spray: spec.spray,
                };
            }
        }
        // Upstreams: every node that may send to this one, over every
        // spraying rotation (the guard admits data only from these). Over
        // all rotations a spraying proxy serves every slot of its level, so
        // every child of a sprayed level has the whole level as upstreams:
        // one shared list, not a copy per child (that would be quadratic).
        let mut upstreams: Vec<Vec<NodeId>> = vec![Vec::new(); total];
        for (id, t) in tables.iter().enumerate() {
            if matches!(t.fanout, Fanout::Hedged { spray: true, .. }) {
                continue;
            }
            let mut dsts = Vec::new();
            t.fanout.for_each(0, |c, _| dsts.push(c));
            dsts.sort_unstable();
            dsts.dedup();
            for c in dsts {
                upstreams[c as usize].push(id as NodeId);
            }
        }
        for (t, u) in tables.iter_mut().zip(upstreams) {
            t.upstreams = u.into();
        }
        for level in levels.iter().skip(1).filter(|_| spec.spray) {
            let whole: Arc<[NodeId]> = level.as_slice().into();
            for p in level {
                for &c in &primary[*p as usize] {
                    tables[c as usize].upstreams = whole.clone();
                }
            }
        }
        Ok(Plan {
            depth,
            fanout,
            hedge: spec.hedge,
            spray: spec.spray,
            roots: spec.roots,
            nodes,
            levels,
            tables,
            mps: mps as u32,
        })
    }

    /// Ids of all proxies.
    pub fn proxies(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.levels.iter().flatten().copied()
    }

    /// Ids of all receiver endpoints.
    pub fn endpoints(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .filter(|n| matches!(n.role, Role::Receiver { .. }))
            .map(|n| n.id)
    }

    /// Endpoint ids of MP `mp` (one or two).
    pub fn endpoints_of(&self, mp: u32) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.role, Role::Receiver { mp: m, .. } if m == mp))
            .map(|n| n.id)
            .collect()
    }

    /// Copies of each packet that reach each endpoint (the hedging degree).
    pub fn copies_per_endpoint(&self) -> u32 {
        if self.depth >= 2 {
            self.hedge + 1
        } else {
            self.roots
        }
    }

    /// Human-readable description of the tree.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "tree: depth {} fanout {} hedge {} spray {} roots {} — {} proxies, {} receiver endpoints for {} MPs",
            self.depth,
            self.fanout,
            self.hedge,
            self.spray,
            self.roots,
            self.proxies().count(),
            self.endpoints().count(),
            self.mps
        );
        let _ = writeln!(
            s,
            "  sender {} {} -> roots",
            self.nodes[0].name, self.nodes[0].addr
        );
        for (l, level) in self.levels.iter().enumerate() {
            let _ = writeln!(s, "  level {} ({} proxies):", l + 1, level.len());
            for &p in level {
                let t = &self.tables[p as usize];
                let names: Vec<&str> = t
                    .report_children
                    .iter()
                    .map(|c| self.nodes[*c as usize].name.as_str())
                    .collect();
                let _ = writeln!(
                    s,
                    "    {} {} children [{}] copies/packet {}",
                    self.nodes[p as usize].name,
                    self.nodes[p as usize].addr,
                    names.join(", "),
                    t.fanout.copies()
                );
            }
        }
        s
    }
}

fn validate_inventory(inv: &Inventory) -> Result<(), PlanError> {
    if inv.receivers.is_empty() {
        return err(
            "the inventory has no receivers",
            "add at least one [[receiver]]",
        );
    }
    if inv.proxies.is_empty() {
        return err(
            "the inventory has no proxies",
            "add at least one [[proxy]] (the root)",
        );
    }
    let mut names = HashSet::new();
    let mut addrs: HashMap<SocketAddr, String> = HashMap::new();
    let mut check = |name: &str, addr: SocketAddr| -> Result<(), PlanError> {
        if name.is_empty() {
            return err(
                format!("a node at {addr} has an empty name"),
                "give every node a unique name",
            );
        }
        if !names.insert(name.to_string()) {
            return err(
                format!("duplicate node name {name:?}"),
                "give every node a unique name",
            );
        }
        if addr.port() == 0 {
            return err(
                format!("node {name:?} has port 0"),
                "give every node an explicit port",
            );
        }
        if let Some(other) = addrs.insert(addr, name.to_string()) {
            return err(
                format!("nodes {other:?} and {name:?} share address {addr}"),
                "give every endpoint its own address:port",
            );
        }
        Ok(())
    };
    check(&inv.sender.name, inv.sender.addr)?;
    let mut streams = HashSet::from([PRIMARY_STREAM]);
    for p in &inv.publishers {
        check(&p.name, p.addr)?;
        if p.stream == 0 || !streams.insert(p.stream) {
            return err(
                format!(
                    "publisher {:?} has stream {}, {}",
                    p.name,
                    p.stream,
                    if p.stream == 0 {
                        "which is not a stream id".to_string()
                    } else if p.stream == PRIMARY_STREAM {
                        format!("the [sender]'s stream ({PRIMARY_STREAM})")
                    } else {
                        "which another publisher has".to_string()
                    }
                ),
                "give every [[publisher]] its own stream id, 2 or above",
            );
        }
    }
    for p in &inv.proxies {
        check(&p.name, p.addr)?;
    }
    for r in &inv.receivers {
        check(&r.name, r.addr)?;
        if let Some(h) = r.hedge_addr {
            check(&format!("{}#hedge", r.name), h)?;
        }
    }
    Ok(())
}

/// Build a loopback inventory: sender on `base`, proxies and receivers on the
/// following ports (used by `jasper local`, tests and the simulator). Past
/// port 65535 the addresses go on from `base` on 127.0.0.2, 127.0.0.3, …
pub fn loopback_inventory(
    proxies: usize,
    receivers: usize,
    hedged_receivers: bool,
    base_port: u16,
) -> Inventory {
    let base = base_port.max(1) as usize;
    let span = 65_536 - base;
    let addr = |i: usize| {
        let ip = std::net::Ipv4Addr::from(0x7F00_0001 + (i / span) as u32);
        SocketAddr::from((ip, (base + i % span) as u16))
    };
    let mut port = 0;
    let mut next = || {
        port += 1;
        addr(port - 1)
    };
    let sender = HostSpec {
        name: "sender".into(),
        addr: next(),
    };
    let proxies = (0..proxies)
        .map(|i| HostSpec {
            name: format!("proxy{i}"),
            addr: next(),
        })
        .collect();
    let mut rs: Vec<ReceiverSpec> = (0..receivers)
        .map(|i| ReceiverSpec {
            name: format!("mp{i}"),
            addr: next(),
            hedge_addr: None,
        })
        .collect();
    if hedged_receivers {
        for r in &mut rs {
            r.hedge_addr = Some(next());
        }
    }
    Inventory {
        sender,
        proxies,
        receivers: rs,
        publishers: Vec::new(),
    }
}

/// How many proxies a shape needs for `receivers` MPs.
pub fn proxies_needed(receivers: usize, hedged_receivers: bool, spec: &TreeSpec) -> usize {
    let e = receivers * if hedged_receivers { 2 } else { 1 };
    let (depth, fanout) = match (spec.depth, spec.fanout) {
        (Some(d), Some(f)) => (d.max(1), f.max(1)),
        (Some(d), None) => (d.max(1), fanout_for_depth(e, d.max(1))),
        (None, Some(f)) => (depth_for_fanout(e, f.max(2)).unwrap_or(MAX_DEPTH), f.max(1)),
        (None, None) => {
            let d = auto_depth(e);
            (d, fanout_for_depth(e, d))
        }
    };
    level_sizes(e, depth, fanout).iter().sum::<usize>() - 1 + spec.roots.max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn plan(receivers: usize, hedged: bool, spec: TreeSpec) -> Result<Plan, PlanError> {
        let p = proxies_needed(receivers, hedged, &spec);
        Plan::build(&loopback_inventory(p, receivers, hedged, 20000), &spec)
    }

    fn spec(depth: u32, fanout: u32, hedge: u32, spray: bool) -> TreeSpec {
        TreeSpec {
            depth: Some(depth),
            fanout: Some(fanout),
            hedge,
            spray,
            roots: 1,
        }
    }

    /// Every node reachable from the sender, edges only go one level down.
    fn check_connected_acyclic(p: &Plan, key: u64) {
        let level_of = |id: NodeId| match p.nodes[id as usize].role {
            Role::Sender => 0,
            Role::Proxy { level } => level,
            Role::Receiver { .. } => p.depth + 1,
        };
        let mut seen = vec![false; p.nodes.len()];
        let mut q = VecDeque::from([SENDER]);
        seen[0] = true;
        while let Some(n) = q.pop_front() {
            p.tables[n as usize].fanout.for_each(key, |c, _| {
                assert_eq!(
                    level_of(c),
                    level_of(n) + 1,
                    "edge {n}->{c} skips or climbs levels"
                );
                if !seen[c as usize] {
                    seen[c as usize] = true;
                    q.push_back(c);
                }
            });
        }
        assert!(seen.iter().all(|s| *s), "unreachable nodes");
    }

    fn copies_received(p: &Plan, key: u64) -> Vec<Vec<NodeId>> {
        let mut from = vec![Vec::new(); p.nodes.len()];
        for t in &p.tables {
            t.fanout.for_each(key, |c, _| from[c as usize].push(t.node));
        }
        from
    }

    #[test]
    fn automatic_shape_follows_log10() {
        let p = plan(100, false, TreeSpec::default()).unwrap();
        assert_eq!((p.depth, p.fanout), (2, 10));
        assert_eq!(
            p.levels.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 10]
        );
        let p = plan(1000, false, TreeSpec::default()).unwrap();
        assert_eq!((p.depth, p.fanout), (3, 10));
        assert_eq!(
            p.levels.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 10, 100]
        );
        let p = plan(16, false, TreeSpec::default()).unwrap();
        assert_eq!(p.depth, 1);
        assert_eq!(p.tables[ROOT as usize].fanout.copies(), 16);
    }

    #[test]
    fn a_hundred_thousand_receivers_plan_with_fanout_10() {
        // 100,000^(1/5) computes to 10.000000000000002: still fanout 10.
        assert_eq!(fanout_for_depth(100_000, 5), 10);
        assert_eq!(fanout_for_depth(1_000_000, 6), 10);
        assert_eq!(fanout_for_depth(100_001, 5), 11);
        for spray in [false, true] {
            let p = plan(
                100_000,
                false,
                TreeSpec {
                    hedge: 2,
                    spray,
                    ..TreeSpec::default()
                },
            )
            .unwrap();
            assert_eq!((p.depth, p.fanout), (5, 10));
            assert_eq!(
                p.levels.iter().map(Vec::len).collect::<Vec<_>>(),
                vec![2, 10, 100, 1000, 10_000]
            );
            // Ids dense and unique, proxies first and within the path tag,
            // receivers beyond it.
            assert!(p.nodes.iter().enumerate().all(|(i, n)| n.id as usize == i));
            let names: HashSet<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
            assert_eq!(names.len(), p.nodes.len());
            let max_proxy = p.proxies().max().unwrap();
            assert_eq!(max_proxy as usize, p.proxies().count());
            assert!(max_proxy < 65_535, "{max_proxy}");
            assert_eq!(p.endpoints().count(), 100_000);
            assert!(p.endpoints().all(|e| e > max_proxy));
            assert_eq!(p.endpoints().max(), Some(100_000 + max_proxy));
            // Every endpoint hears H + 1 proxies (all of its level when sprayed),
            // and a sprayed level's children share one list.
            let last = p.levels.last().unwrap();
            let (a, b) = (p.endpoints().next().unwrap(), p.endpoints().last().unwrap());
            let (ua, ub) = (
                &p.tables[a as usize].upstreams,
                &p.tables[b as usize].upstreams,
            );
            if spray {
                assert_eq!(**ua, **last);
                assert!(Arc::ptr_eq(ua, ub));
            } else {
                assert_eq!((ua.len(), ub.len()), (3, 3));
                assert!(ua.iter().all(|u| last.contains(u)));
            }
            // One copy of a level's slots, shared by its proxies.
            let slots = |px: NodeId| match &p.tables[px as usize].fanout {
                Fanout::Hedged { slots, .. } => slots.clone(),
                f => panic!("{f:?}"),
            };
            assert!(Arc::ptr_eq(&slots(last[0]), &slots(last[9_999])));
        }
    }

    #[test]
    fn more_proxies_than_path_tags_is_an_error_naming_the_limit() {
        // Fanout 2 over 16 levels for 65,536 endpoints: 65,535 proxies.
        let inv = loopback_inventory(1, 65_536, false, 1);
        let e = Plan::build(&inv, &spec(16, 2, 0, false)).unwrap_err();
        assert!(
            e.problem
                .contains("more than 65,534 proxies: the path tag is 16 bits"),
            "{e}"
        );
        assert!(e.problem.contains("needs 65535"), "{e}");
        assert!(e.fix.starts_with("shard the tree"), "{e}");
        // Receivers alone are no limit: 65,536 of them under 257 proxies.
        let p = plan(65_536, false, spec(2, 256, 0, false)).unwrap();
        assert_eq!(p.nodes.len(), 1 + 1 + 256 + 65_536);
    }

    #[test]
    fn loopback_inventories_go_on_past_port_65535() {
        let inv = loopback_inventory(0, 70_000, false, 60_000);
        assert_eq!(inv.sender.addr, "127.0.0.1:60000".parse().unwrap());
        assert_eq!(
            inv.receivers[5_534].addr,
            "127.0.0.1:65535".parse().unwrap()
        );
        assert_eq!(
            inv.receivers[5_535].addr,
            "127.0.0.2:60000".parse().unwrap()
        );
        let addrs: HashSet<SocketAddr> = inv.receivers.iter().map(|r| r.addr).collect();
        assert_eq!(addrs.len(), 70_000);
    }

    #[test]
    fn hedged_roots_each_feed_and_hear_the_whole_level_below() {
        let p = plan(
            16,
            false,
            TreeSpec {
                depth: Some(2),
                fanout: Some(4),
                hedge: 1,
                roots: 2,
                ..TreeSpec::default()
            },
        )
        .unwrap();
        let roots = p.levels[0].clone();
        assert_eq!(roots.len(), 2);
        let mut sent = Vec::new();
        p.tables[SENDER as usize]
            .fanout
            .for_each(0, |c, _| sent.push(c));
        assert_eq!(sent, roots);
        assert_eq!(p.tables[SENDER as usize].report_children, roots);
        for &r in &roots {
            assert_eq!(p.tables[r as usize].fanout.copies(), 4);
            assert_eq!(p.tables[r as usize].report_children, p.levels[1]);
            assert_eq!(*p.tables[r as usize].upstreams, [SENDER]);
        }
        for &l2 in &p.levels[1] {
            let t = &p.tables[l2 as usize];
            assert_eq!(*t.upstreams, *roots, "both roots feed level 2");
            let mut reports_to: Vec<NodeId> =
                t.parent.into_iter().chain(t.report_also.clone()).collect();
            reports_to.sort_unstable();
            assert_eq!(reports_to, roots, "level 2 reports to both roots");
        }
        // A one-level tree: every receiver hears both roots.
        let p = plan(
            4,
            false,
            TreeSpec {
                depth: Some(1),
                roots: 2,
                ..TreeSpec::default()
            },
        )
        .unwrap();
        assert_eq!(p.copies_per_endpoint(), 2);
        for e in p.endpoints() {
            assert_eq!(*p.tables[e as usize].upstreams, *p.levels[0]);
        }
        let e = plan(
            4,
            false,
            TreeSpec {
                roots: 0,
                ..TreeSpec::default()
            },
        )
        .unwrap_err();
        assert!(e.fix.contains("root proxies"), "{e}");
    }

    #[test]
    fn receivers_spread_evenly() {
        let p = plan(95, false, spec(2, 10, 0, false)).unwrap();
        let sizes: Vec<usize> = p.levels[1]
            .iter()
            .map(|x| p.tables[*x as usize].report_children.len())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 95);
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
    }

    #[test]
    fn hedged_trees_have_h_plus_one_equal_paths() {
        for &(n, d, f, h) in &[
            (100, 2, 10, 2),
            (1000, 3, 10, 2),
            (64, 3, 4, 1),
            (16, 2, 4, 3),
            (1000, 3, 10, 0),
        ] {
            for spray in [false, true] {
                let p = plan(n, false, spec(d, f, h, spray)).unwrap();
                for key in [0u64, 1, 7, 12345] {
                    check_connected_acyclic(&p, key);
                    let from = copies_received(&p, key);
                    for node in &p.nodes {
                        let ups = &from[node.id as usize];
                        let expect = match node.role {
                            Role::Sender => 0,
                            Role::Proxy { level: 1 | 2 } => 1,
                            _ => h as usize + 1,
                        };
                        assert_eq!(
                            ups.len(),
                            expect,
                            "node {} ({:?}) n={n} h={h} spray={spray}",
                            node.id,
                            node.role
                        );
                        let distinct: HashSet<_> = ups.iter().collect();
                        assert_eq!(
                            distinct.len(),
                            ups.len(),
                            "copies must come from distinct proxies"
                        );
                    }
                }
                for t in &p.tables {
                    for key in [0u64, 3, 11] {
                        let mut n = 0;
                        t.fanout.for_each(key, |_, _| n += 1);
                        assert_eq!(t.fanout.copies_for(key), n);
                    }
                }
                // Each non-root proxy emits (H+1)·F copies when the tree is full.
                if (f as usize).pow(d) == n {
                    for &px in p.levels.iter().skip(1).flatten() {
                        assert_eq!(
                            p.tables[px as usize].fanout.copies(),
                            (h as usize + 1) * f as usize
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn spraying_rotates_the_serving_proxy() {
        let p = plan(100, false, spec(2, 10, 0, true)).unwrap();
        let px = p.levels[1][0];
        let mut a = Vec::new();
        p.tables[px as usize].fanout.for_each(0, |c, _| a.push(c));
        let mut b = Vec::new();
        p.tables[px as usize].fanout.for_each(1, |c, _| b.push(c));
        assert_ne!(a, b);
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn receiver_hedging_uses_different_proxies() {
        let p = plan(40, true, spec(2, 10, 1, false)).unwrap();
        for mp in 0..40 {
            let eps = p.endpoints_of(mp);
            assert_eq!(eps.len(), 2);
            let (a, b) = (
                p.tables[eps[0] as usize].parent,
                p.tables[eps[1] as usize].parent,
            );
            assert_ne!(a, b, "both endpoints of mp{mp} under one proxy");
        }
    }

    #[test]
    fn report_tree_is_the_primary_tree() {
        let p = plan(1000, false, spec(3, 10, 2, true)).unwrap();
        for n in &p.nodes {
            match n.role {
                Role::Sender => assert_eq!(p.tables[0].parent, None),
                _ => {
                    let par = p.tables[n.id as usize].parent.unwrap();
                    assert!(p.tables[par as usize].report_children.contains(&n.id));
                }
            }
        }
    }

    #[test]
    fn fanout_without_depth_that_cannot_branch_is_an_error() {
        // Fanout 1 never reaches 10 endpoints: an error naming the fix,
        // not an endless search for a depth.
        let only_fanout = |f| TreeSpec {
            depth: None,
            fanout: Some(f),
            hedge: 0,
            spray: false,
            roots: 1,
        };
        let e = plan(10, false, only_fanout(1)).unwrap_err();
        assert!(e.problem.contains("fanout 1"), "{e}");
        assert!(e.fix.contains("at least 2"), "{e}");
        // One endpoint needs no branching.
        assert_eq!(plan(1, false, only_fanout(1)).unwrap().depth, 1);
        // 2^16 < 100,000: fanout 2 needs 17 levels, beyond the limit.
        assert_eq!(depth_for_fanout(100_000, 2), None);
        assert_eq!(depth_for_fanout(100_000, 10), Some(5));
    }

    #[test]
    fn errors_say_what_to_change() {
        let inv = loopback_inventory(3, 10, false, 20000);
        let e = Plan::build(&inv, &spec(2, 10, 0, false)).unwrap_err();
        assert!(e.problem.contains("uses 2"), "{e}");
        assert!(e.fix.contains("remove 1"), "{e}");
        // ...and suggests a shape that uses every proxy, which plans.
        assert!(e.fix.contains("e.g. --depth 2 --fanout"), "{e}");
        let f: Vec<u32> = e
            .fix
            .rsplit("--fanout ")
            .next()
            .and_then(|x| x.parse().ok())
            .into_iter()
            .collect();
        assert!(Plan::build(&inv, &spec(2, f[0], 0, false)).is_ok(), "{e}");
        let inv = loopback_inventory(1, 10, false, 20000);
        let e = Plan::build(&inv, &spec(2, 5, 0, false)).unwrap_err();
        assert!(e.fix.contains("add 2 proxies"), "{e}");
        let e = plan(20, false, spec(2, 10, 2, false)).unwrap_err();
        assert!(e.problem.contains("hedge = 2"), "{e}");
        assert!(e.fix.contains("lower hedge to 1"), "{e}");
        let e = plan(20, false, spec(1, 20, 1, false)).unwrap_err();
        assert!(e.fix.contains("depth ≥ 2"), "{e}");
        let e = plan(200, false, spec(2, 10, 0, false)).unwrap_err();
        assert!(e.fix.contains("raise"), "{e}");
        let mut inv = loopback_inventory(1, 3, false, 20000);
        inv.receivers[2].name = "mp0".into();
        let e = Plan::build(&inv, &TreeSpec::default()).unwrap_err();
        assert!(e.problem.contains("duplicate node name"), "{e}");
        let mut inv = loopback_inventory(1, 3, false, 20000);
        inv.receivers[2].addr = inv.receivers[0].addr;
        let e = Plan::build(&inv, &TreeSpec::default()).unwrap_err();
        assert!(e.problem.contains("share address"), "{e}");
        let mut inv = loopback_inventory(1, 3, false, 20000);
        inv.receivers.clear();
        assert!(Plan::build(&inv, &TreeSpec::default()).is_err());
    }

    #[test]
    fn inventory_parses_from_toml() {
        let text = r#"
            [sender]
            name = "pub"
            addr = "10.0.0.1:7000"
            [[proxy]]
            name = "root"
            addr = "10.0.0.2:7000"
            [[proxy]]
            name = "root2"
            addr = "10.0.0.3:7000"
            [[receiver]]
            name = "mp-a"
            addr = "10.0.1.1:7000"
            hedge_addr = "10.0.2.1:7000"
            [[receiver]]
            name = "mp-b"
            addr = "10.0.1.2:7000"
        "#;
        let inv: Inventory = toml::from_str(text).unwrap();
        let p = Plan::build(&inv, &TreeSpec::default()).unwrap();
        assert_eq!(p.endpoints().count(), 3);
        assert_eq!(p.endpoints_of(0).len(), 2);
    }
}
