//! `jasper status`: scrape every node's metrics endpoint and show the tree
//! live — up or down, rates (from two scrapes), drops, late share and
//! clock per receiver, dead upstreams — refreshing in place; `--once
//! --json` for scripts. A node that does not answer is shown down; that is
//! never an error exit.
//!
//! Also where nodes get their endpoints: `jasper plan --metrics-port` and
//! `jasper local --metrics` (see [`assign_plan`], [`assign_local`]).

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jasper_core::config::{NodeConfig, NodeRole};
use jasper_core::plan::NodeId;
use jasper_live::hist::quantile;
use jasper_live::scrape::{self, Sample};
use serde::Serialize;

/// Flags of `jasper status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Directory of node configs: `jasper plan --out DIR --metrics-port P`,
    /// or the run directory `jasper local --metrics ADDR` prints. Every
    /// node with a `[metrics] listen` address is scraped.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Metrics endpoints (host:port) to scrape, besides or instead of --plan.
    pub addrs: Vec<String>,
    /// One view (two scrapes --interval apart, for the rates), then exit.
    #[arg(long)]
    pub once: bool,
    /// JSON instead of the table (with --once one object; otherwise one
    /// object per line per refresh).
    #[arg(long)]
    pub json: bool,
    /// Seconds between scrapes; rates are computed over it.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// How long to wait for each endpoint, ms.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Late share above which a receiver is flagged (0.001 = 0.1%).
    #[arg(long, default_value_t = 0.001)]
    pub late_budget: f64,
}

/// A node the plan names.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    role: &'static str,
    id: Option<NodeId>,
    parent: Option<NodeId>,
    addr: Option<SocketAddr>,
}

/// The plan's nodes, and plan id → name (for upstream labels).
fn load_plan(dir: &Path) -> anyhow::Result<(Vec<Planned>, HashMap<NodeId, String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the plan directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut nodes = Vec::new();
    let mut names = HashMap::new();
    for f in &files {
        // Other TOML files (an inventory) are not node configs: skipped.
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let Ok(c) = NodeConfig::from_toml(&text) else {
            continue;
        };
        names.insert(c.node.id, c.node.name.clone());
        if let Some(h) = c.node.hedge {
            names.insert(h.id, format!("{} (hedge)", c.node.name));
        }
        nodes.push(Planned {
            name: c.node.name.clone(),
            role: jasper_live::Role::from(c.node.role).name(),
            id: Some(c.node.id),
            parent: c.table.parent,
            addr: c.metrics.listen,
        });
    }
    if nodes.is_empty() {
        bail!(
            "no node configs in {} (it should hold the <name>.toml files `jasper plan --out` writes)",
            dir.display()
        );
    }
    if nodes.iter().all(|n| n.addr.is_none()) {
        bail!(
            "none of the {} node configs in {} has a metrics endpoint: write them with `jasper plan --metrics-port 9100 ...`, or add `[metrics] listen = \"ip:port\"` to each",
            nodes.len(),
            dir.display()
        );
    }
    Ok((nodes, names))
}

/// One scrape of every endpoint.
struct Round {
    at: Instant,
    by_addr: HashMap<SocketAddr, Result<Vec<Sample>, String>>,
}

/// Endpoints scraped at once (a large tree has one per host).
const SCRAPERS: usize = 32;

fn scrape_all(addrs: &[SocketAddr], timeout: Duration) -> Round {
    let at = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let by_addr = std::thread::scope(|s| {
        let workers: Vec<_> = (0..SCRAPERS.min(addrs.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut got = Vec::new();
                    while let Some(a) = addrs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let r = scrape::fetch(*a, timeout)
                            .and_then(|t| Ok(scrape::parse(&t)?))
                            .map_err(|e| e.to_string());
                        got.push((*a, r));
                    }
                    got
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().ok())
            .flatten()
            .collect()
    });
    Round { at, by_addr }
}

/// A node's samples of one round.
struct Seen<'a> {
    samples: Vec<&'a Sample>,
}

impl Seen<'_> {
    fn sum(&self, name: &str, keep: impl Fn(&Sample) -> bool) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for s in self.samples.iter().filter(|s| s.name == name && keep(s)) {
            found = true;
            total += s.value;
        }
        found.then_some(total)
    }
    fn get(&self, name: &str) -> Option<f64> {
        self.sum(name, |_| true)
    }
    fn with(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        self.sum(name, |s| s.label(key) == Some(value))
    }
    /// Label `key` of the series of `name` whose value is 1 (a state set).
    fn state(&self, name: &str, key: &str) -> Option<String> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.value == 1.0)
            .and_then(|s| s.label(key).map(str::to_string))
    }
    /// Cumulative buckets `(le, count)` of histogram `name`.
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut b: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.name == bucket)
            .filter_map(|s| {
                let le = match s.label("le")? {
                    "+Inf" => f64::INFINITY,
                    x => x.parse().ok()?,
                };
                Some((le, s.value))
            })
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    }
}

fn index(round: &Round) -> HashMap<(SocketAddr, String), Seen<'_>> {
    let mut out: HashMap<(SocketAddr, String), Seen<'_>> = HashMap::new();
    for (a, r) in &round.by_addr {
        if let Ok(samples) = r {
            for s in samples {
                if let Some(n) = s.label("node") {
                    out.entry((*a, n.to_string()))
                        .or_insert_with(|| Seen { samples: vec![] })
                        .samples
                        .push(s);
                }
            }
        }
    }
    out
}

/// One node's line of the view.
#[derive(Debug, Clone, Serialize)]
struct NodeStatus {
    name: String,
    role: String,
    address: Option<String>,
    parent: Option<String>,
    up: bool,
    error: Option<String>,
    snapshot_age_s: Option<f64>,
    rx_packets_total: Option<u64>,
    tx_packets_total: Option<u64>,
    rx_packets_per_s: Option<f64>,
    tx_packets_per_s: Option<f64>,
    tx_dropped_total: Option<u64>,
    guard_dropped_total: Option<u64>,
    auth_dropped_total: Option<u64>,
    drops_per_s: Option<f64>,
    clock_status: Option<String>,
    clock_bound_ns: Option<u64>,
    upstreams_dead: Vec<String>,
    upstreams_silent: Vec<String>,
    session: Option<u64>,
    messages_total: Option<u64>,
    messages_per_s: Option<f64>,
    released_total: Option<u64>,
    released_per_s: Option<f64>,
    late_total: Option<u64>,
    late_fraction: Option<f64>,
    late_fraction_interval: Option<f64>,
    gaps_open: Option<u64>,
    held_bytes: Option<u64>,
    handover_p50_us: Option<f64>,
    handover_p99_us: Option<f64>,
    depth: usize,
    #[serde(skip)]
    prefix: String,
}

/// The whole view.
#[derive(Debug, Serialize)]
struct View {
    time_unix_ms: u64,
    interval_s: Option<f64>,
    nodes_total: usize,
    nodes_up: usize,
    nodes_down: Vec<String>,
    released_total: u64,
    late_total: u64,
    late_fraction: Option<f64>,
    dead_upstreams: Vec<DeadUpstream>,
    clocks_not_synchronized: Vec<String>,
    nodes: Vec<NodeStatus>,
}

#[derive(Debug, Serialize)]
struct DeadUpstream {
    node: String,
    upstream: String,
}

/// Every counter whose drop share an operator wants on one line.
const DROP_COUNTERS: [&str; 4] = [
    "jasper_tx_dropped_total",
    "jasper_guard_dropped_total",
    "jasper_proxy_dropped_total",
    "jasper_receiver_dropped_total",
];

fn drops(s: &Seen) -> Option<f64> {
    let v: Vec<f64> = DROP_COUNTERS.iter().filter_map(|n| s.get(n)).collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

fn rate(now: Option<f64>, before: Option<f64>, dt: f64) -> Option<f64> {
    let (a, b) = (now?, before?);
    (a >= b && dt > 0.0).then(|| (a - b) / dt)
}

/// Who to show: the plan's nodes (tree order), then any other node an
/// endpoint serves.
struct Who {
    planned: Vec<Planned>,
    names: HashMap<NodeId, String>,
    extra_addrs: Vec<SocketAddr>,
}

impl Who {
    fn addrs(&self) -> Vec<SocketAddr> {
        let mut a: Vec<SocketAddr> = self
            .planned
            .iter()
            .filter_map(|p| p.addr)
            .chain(self.extra_addrs.iter().copied())
            .collect();
        a.sort();
        a.dedup();
        a
    }
}

fn build(who: &Who, cur: &Round, prev: Option<&Round>) -> View {
    let now_idx = index(cur);
    let prev_idx = prev.map(index);
    let dt = prev.map(|p| cur.at.duration_since(p.at).as_secs_f64());
    // Nodes found at the endpoints but not in the plan (or no plan).
    let mut rows: Vec<Planned> = who.planned.clone();
    let mut found: Vec<(SocketAddr, String, String)> = now_idx
        .iter()
        .filter(|((a, n), _)| !rows.iter().any(|p| p.addr == Some(*a) && &p.name == n))
        .map(|((a, n), s)| {
            let role = s
                .samples
                .first()
                .and_then(|x| x.label("role"))
                .unwrap_or("node")
                .to_string();
            (*a, n.clone(), role)
        })
        .collect();
    found.sort_by(|x, y| (role_rank(&x.2), &x.1).cmp(&(role_rank(&y.2), &y.1)));
    for (a, n, role) in found {
        rows.push(Planned {
            name: n,
            role: match role.as_str() {
                "sender" => "sender",
                "proxy" => "proxy",
                "receiver" => "receiver",
                _ => "node",
            },
            id: None,
            parent: None,
            addr: Some(a),
        });
    }
    // An endpoint given by address that did not answer: one row, down.
    for a in &who.extra_addrs {
        if !rows.iter().any(|p| p.addr == Some(*a)) {
            rows.push(Planned {
                name: format!("endpoint {a}"),
                role: "node",
                id: None,
                parent: None,
                addr: Some(*a),
            });
        }
    }
    let order = tree_order(&rows);
    let mut nodes = Vec::new();
    for (i, depth, prefix) in order {
        let p = &rows[i];
        let parent = p.parent.and_then(|id| who.names.get(&id).cloned());
        let mut st = NodeStatus {
            name: p.name.clone(),
            role: p.role.to_string(),
            address: p.addr.map(|a| a.to_string()),
            parent,
            up: false,
            error: None,
            snapshot_age_s: None,
            rx_packets_total: None,
            tx_packets_total: None,
            rx_packets_per_s: None,
            tx_packets_per_s: None,
            tx_dropped_total: None,
            guard_dropped_total: None,
            auth_dropped_total: None,
            drops_per_s: None,
            clock_status: None,
            clock_bound_ns: None,
            upstreams_dead: vec![],
            upstreams_silent: vec![],
            session: None,
            messages_total: None,
            messages_per_s: None,
            released_total: None,
            released_per_s: None,
            late_total: None,
            late_fraction: None,
            late_fraction_interval: None,
            gaps_open: None,
            held_bytes: None,
            handover_p50_us: None,
            handover_p99_us: None,
            depth,
            prefix,
        };
        let Some(addr) = p.addr else {
            st.error = Some("no [metrics] listen in its config".into());
            nodes.push(st);
            continue;
        };
        let key = (addr, p.name.clone());
        let Some(s) = now_idx.get(&key) else {
            st.error = Some(match cur.by_addr.get(&addr) {
                Some(Err(e)) => e.clone(),
                Some(Ok(_)) => "its endpoint answers without it (not started, or stopped)".into(),
                None => "not scraped".into(),
            });
            nodes.push(st);
            continue;
        };
        let before = prev_idx.as_ref().and_then(|i| i.get(&key));
        let r = |name: &str| {
            rate(
                s.get(name),
                before.and_then(|b| b.get(name)),
                dt.unwrap_or(0.0),
            )
        };
        let int = |v: Option<f64>| v.map(|x| x as u64);
        st.up = true;
        st.snapshot_age_s = s.get("jasper_snapshot_age_seconds");
        st.rx_packets_total = int(s.get("jasper_rx_packets_total"));
        st.tx_packets_total = int(s.get("jasper_tx_packets_total"));
        st.rx_packets_per_s = r("jasper_rx_packets_total");
        st.tx_packets_per_s = r("jasper_tx_packets_total");
        st.tx_dropped_total = int(s.get("jasper_tx_dropped_total"));
        st.guard_dropped_total = int(s.get("jasper_guard_dropped_total"));
        st.auth_dropped_total =
            int(s.with("jasper_guard_dropped_total", "check", "authentication"));
        st.drops_per_s = rate(drops(s), before.and_then(drops), dt.unwrap_or(0.0));
        st.clock_status = s.state("jasper_clock_status", "status");
        st.clock_bound_ns = s
            .get("jasper_clock_error_bound_seconds")
            .map(|b| (b * 1e9).round() as u64);
        for x in s
            .samples
            .iter()
            .filter(|x| x.name == "jasper_upstream_state" && x.value == 1.0)
        {
            let id = x.label("upstream").unwrap_or("?");
            let name = id
                .parse::<NodeId>()
                .ok()
                .and_then(|i| who.names.get(&i).cloned())
                .unwrap_or_else(|| format!("node {id}"));
            match x.label("state") {
                Some("dead") => st.upstreams_dead.push(name),
                Some("silent") => st.upstreams_silent.push(name),
                _ => {}
            }
        }
        st.session = int(s.get("jasper_sender_session"));
        st.messages_total = int(s.get("jasper_sender_messages_total"));
        st.messages_per_s = r("jasper_sender_messages_total");
        st.released_total = int(s.get("jasper_receiver_released_total"));
        st.released_per_s = r("jasper_receiver_released_total");
        st.late_total = int(s.get("jasper_receiver_late_total"));
        st.late_fraction = match (st.late_total, st.released_total) {
            (Some(l), Some(r)) if r > 0 => Some(l as f64 / r as f64),
            _ => None,
        };
        if let (Some(b), Some(l), Some(rel)) = (
            before,
            s.get("jasper_receiver_late_total"),
            s.get("jasper_receiver_released_total"),
        ) {
            let (l0, r0) = (
                b.get("jasper_receiver_late_total").unwrap_or(0.0),
                b.get("jasper_receiver_released_total").unwrap_or(0.0),
            );
            if rel > r0 && l >= l0 {
                st.late_fraction_interval = Some((l - l0) / (rel - r0));
            }
        }
        st.gaps_open = int(s.get("jasper_receiver_gaps_open"));
        st.held_bytes = int(s.get("jasper_receiver_held_bytes"));
        if st.role == "receiver" {
            // Over the interval when it released something, else since start.
            let cum = s.buckets("jasper_receiver_handover_seconds");
            let old = before.map(|b| b.buckets("jasper_receiver_handover_seconds"));
            let window: Vec<(f64, f64)> = match old {
                Some(o)
                    if o.len() == cum.len() && cum.last().map(|x| x.1) > o.last().map(|x| x.1) =>
                {
                    cum.iter()
                        .zip(&o)
                        .map(|(a, b)| (a.0, (a.1 - b.1).max(0.0)))
                        .collect()
                }
                _ => cum,
            };
            st.handover_p50_us = quantile(0.5, &window).map(|x| x * 1e6);
            st.handover_p99_us = quantile(0.99, &window).map(|x| x * 1e6);
        }
        nodes.push(st);
    }
    let released_total: u64 = nodes.iter().filter_map(|n| n.released_total).sum();
    let late_total: u64 = nodes.iter().filter_map(|n| n.late_total).sum();
    View {
        time_unix_ms: jasper_io::host_now_ns() / 1_000_000,
        interval_s: dt,
        nodes_total: nodes.len(),
        nodes_up: nodes.iter().filter(|n| n.up).count(),
        nodes_down: nodes
            .iter()
            .filter(|n| !n.up)
            .map(|n| n.name.clone())
            .collect(),
        released_total,
        late_total,
        late_fraction: (released_total > 0).then(|| late_total as f64 / released_total as f64),
        dead_upstreams: nodes
            .iter()
            .flat_map(|n| {
                n.upstreams_dead.iter().map(|u| DeadUpstream {
                    node: n.name.clone(),
                    upstream: u.clone(),
                })
            })
            .collect(),
        clocks_not_synchronized: nodes
            .iter()
            .filter(|n| {
                n.clock_status
                    .as_deref()
                    .is_some_and(|c| c != "synchronized")
            })
            .map(|n| n.name.clone())
            .collect(),
        nodes,
    }
}

fn role_rank(role: &str) -> u8 {
    match role {
        "sender" => 0,
        "proxy" => 1,
        "receiver" => 2,
        _ => 3,
    }
}

/// Depth-first order of the rows by their parents, with tree prefixes;
/// rows whose parent is not shown start their own trees.
fn tree_order(rows: &[Planned]) -> Vec<(usize, usize, String)> {
    let ids: HashMap<NodeId, usize> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((r.id?, i)))
        .collect();
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        match r.parent.and_then(|p| ids.get(&p)) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let key = |i: &usize| (role_rank(rows[*i].role), rows[*i].id, rows[*i].name.clone());
    roots.sort_by_key(key);
    for c in children.values_mut() {
        c.sort_by_key(key);
    }
    let mut out = Vec::new();
    fn walk(
        i: usize,
        depth: usize,
        lead: &str,
        last: bool,
        children: &BTreeMap<usize, Vec<usize>>,
        out: &mut Vec<(usize, usize, String)>,
    ) {
        let prefix = if depth == 0 {
            String::new()
        } else {
            format!("{lead}{}", if last { "└ " } else { "├ " })
        };
        out.push((i, depth, prefix));
        let next = if depth == 0 {
            String::new()
        } else {
            format!("{lead}{}", if last { "  " } else { "│ " })
        };
        if let Some(cs) = children.get(&i) {
            for (k, c) in cs.iter().enumerate() {
                // Guard against a cycle in a hand-edited plan.
                if out.iter().any(|(x, _, _)| x == c) {
                    continue;
                }
                walk(*c, depth + 1, &next, k + 1 == cs.len(), children, out);
            }
        }
    }
    for r in roots {
        walk(r, 0, "", true, &children, &mut out);
    }
    out
}

fn fmt_rate(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x >= 1e6 => format!("{:.1}M", x / 1e6),
        Some(x) if x >= 1e4 => format!("{:.1}k", x / 1e3),
        Some(x) => format!("{x:.0}"),
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else {
        format!("{ns}ns")
    }
}

struct Paint(bool);

impl Paint {
    fn red(&self, s: &str) -> String {
        if self.0 {
            format!("\x1b[1;31m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn yellow(&self, s: &str) -> String {
        if self.0 {
            format!("\x1b[33m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// The table.
fn render(v: &View, late_budget: f64, paint: &Paint) -> String {
    let mut o = String::new();
    let down = v.nodes_total - v.nodes_up;
    o.push_str(&format!(
        "jasper status — {} nodes: {} up, {}   released {}  late {}{}\n",
        v.nodes_total,
        v.nodes_up,
        if down > 0 {
            paint.red(&format!("{down} down"))
        } else {
            "0 down".into()
        },
        v.released_total,
        v.late_total,
        v.late_fraction
            .map(|f| format!(" ({:.3}%)", f * 100.0))
            .unwrap_or_default(),
    ));
    let w = v
        .nodes
        .iter()
        .map(|n| n.prefix.chars().count() + n.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    o.push_str(&format!(
        "{:<w$}  {:<8} {:<5} {:>8} {:>8} {:>7} {:>8} {:>9}  {:<22} {}\n",
        "NODE", "ROLE", "STATE", "RX/s", "TX/s", "DROP/s", "LATE%", "HO p99", "CLOCK", "NOTES"
    ));
    for n in &v.nodes {
        let name = format!("{}{}", n.prefix, n.name);
        let pad = w.saturating_sub(name.chars().count());
        if !n.up {
            o.push_str(&format!(
                "{name}{:pad$}  {:<8} {}  {}\n",
                "",
                n.role,
                paint.red("DOWN "),
                n.error.as_deref().unwrap_or("")
            ));
            continue;
        }
        let late = match (
            n.late_fraction_interval.or(n.late_fraction),
            n.role.as_str(),
        ) {
            (Some(f), _) => {
                let s = format!("{:.3}", f * 100.0);
                if f > late_budget {
                    paint.yellow(&format!("{s:>8}"))
                } else {
                    format!("{s:>8}")
                }
            }
            (None, "receiver") => format!("{:>8}", "0.000"),
            _ => format!("{:>8}", "-"),
        };
        let clock = match (&n.clock_status, n.clock_bound_ns) {
            (Some(s), Some(b)) => {
                let t = format!("{s} ±{}", fmt_ns(b));
                if s == "synchronized" {
                    format!("{t:<22}")
                } else {
                    paint.yellow(&format!("{t:<22}"))
                }
            }
            _ => format!("{:<22}", "-"),
        };
        let mut notes = Vec::new();
        if !n.upstreams_dead.is_empty() {
            notes.push(paint.red(&format!("dead upstream {}", n.upstreams_dead.join(", "))));
        }
        if let Some(g) = n.gaps_open.filter(|g| *g > 0) {
            notes.push(paint.yellow(&format!("gaps open {g}")));
        }
        if let Some(a) = n.auth_dropped_total.filter(|a| *a > 0) {
            notes.push(paint.yellow(&format!("auth drops {a}")));
        }
        if let Some(age) = n.snapshot_age_s.filter(|a| *a > 2.0) {
            notes.push(paint.red(&format!("counters {age:.1} s old (run loop stalled?)")));
        }
        if let Some(s) = n.session {
            notes.push(format!(
                "session {s}, {} msgs/s",
                fmt_rate(n.messages_per_s)
            ));
        }
        if let Some(h) = n.held_bytes.filter(|h| *h > 0) {
            notes.push(format!("holding {h} B"));
        }
        o.push_str(&format!(
            "{name}{:pad$}  {:<8} {:<5} {:>8} {:>8} {:>7} {} {:>9}  {} {}\n",
            "",
            n.role,
            "up",
            fmt_rate(n.rx_packets_per_s),
            fmt_rate(n.tx_packets_per_s),
            fmt_rate(n.drops_per_s),
            late,
            n.handover_p99_us
                .map(|u| format!("{u:.0}µs"))
                .unwrap_or_else(|| "-".into()),
            clock,
            notes.join("; ")
        ));
    }
    o
}

/// Entry point of `jasper status`.
pub fn main(a: StatusArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.interval.is_finite() && (0.05..=3600.0).contains(&a.interval),
        "--interval must be within 0.05..=3600 seconds"
    );
    let (planned, names) = match &a.plan {
        Some(d) => load_plan(d)?,
        None => (Vec::new(), HashMap::new()),
    };
    let mut extra_addrs = Vec::new();
    for s in &a.addrs {
        let addr = s
            .to_socket_addrs()
            .ok()
            .and_then(|mut i| i.next())
            .with_context(|| {
                format!("{s:?} is not an address: give host:port, e.g. 127.0.0.1:9100")
            })?;
        extra_addrs.push(addr);
    }
    if planned.is_empty() && extra_addrs.is_empty() {
        bail!("nothing to watch: give --plan DIR (node configs with [metrics] listen) or metrics addresses (host:port)");
    }
    let who = Who {
        planned,
        names,
        extra_addrs,
    };
    let addrs = who.addrs();
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let interval = Duration::from_secs_f64(a.interval);
    let paint = Paint(!a.json && std::io::stdout().is_terminal());
    let stop = jasper_io::runtime::stop_on_signals();
    let mut prev = scrape_all(&addrs, timeout);
    let mut out = std::io::stdout();
    loop {
        // Sleep in steps so Ctrl-C is prompt.
        let next = prev.at + interval;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20).min(next - Instant::now()));
        }
        let cur = scrape_all(&addrs, timeout);
        let view = build(&who, &cur, Some(&prev));
        if a.json {
            let text = if a.once {
                serde_json::to_string_pretty(&view)?
            } else {
                serde_json::to_string(&view)?
            };
            writeln!(out, "{text}")?;
        } else {
            let table = render(&view, a.late_budget, &paint);
            if paint.0 && !a.once {
                // Home and clear: the view refreshes in place.
                writeln!(
                    out,
                    "\x1b[H\x1b[2J{table}(every {:.1} s; Ctrl-C quits)",
                    a.interval
                )?;
            } else {
                writeln!(out, "{table}")?;
            }
        }
        out.flush()?;
        if a.once {
            return Ok(());
        }
        prev = cur;
    }
}

/// `jasper plan --metrics-port PORT`: every node serves on its own
/// address's IP at `port`; nodes sharing an IP take the following ports.
pub(crate) fn assign_plan(cfgs: &mut [NodeConfig], port: u16) -> anyhow::Result<()> {
    let mut next: HashMap<std::net::IpAddr, u16> = HashMap::new();
    for c in cfgs.iter_mut() {
        let ip = c.node.listen[0].ip();
        let p = next.entry(ip).or_insert(port);
        anyhow::ensure!(
            *p != 0,
            "--metrics-port {port}: too many nodes on {ip} for the ports above it; choose a lower port"
        );
        c.metrics.listen = Some(SocketAddr::new(ip, *p));
        *p = p.checked_add(1).unwrap_or(0);
    }
    Ok(())
}

/// `jasper local --metrics ADDR`: the publisher (this process) on ADDR,
/// each proxy and each receiver process (its MPs share one endpoint) on the
/// following ports; port 0 picks free ports. Returns what serves where.
pub(crate) fn assign_local(
    cfgs: &mut [NodeConfig],
    base: Option<SocketAddr>,
    receivers_per_process: usize,
) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let Some(base) = base else {
        return Ok(Vec::new());
    };
    let proxies = cfgs
        .iter()
        .filter(|c| c.node.role == NodeRole::Proxy)
        .count();
    let receivers: Vec<String> = cfgs
        .iter()
        .filter(|c| c.node.role == NodeRole::Receiver)
        .map(|c| c.node.name.clone())
        .collect();
    let per = receivers_per_process.max(1);
    let groups = receivers.len().div_ceil(per);
    let n = 1 + proxies + groups;
    let addrs: Vec<SocketAddr> = if base.port() == 0 {
        let held: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind(base))
            .collect::<Result<_, _>>()
            .with_context(|| format!("--metrics {base}: cannot open TCP ports there"))?;
        held.iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()?
    } else {
        let mut out = Vec::new();
        for i in 0..n {
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| base.port().checked_add(i));
            let port = port.with_context(|| {
                format!("--metrics {base}: {n} endpoints do not fit below port 65535")
            })?;
            let a = SocketAddr::new(base.ip(), port);
            // This process's own endpoint (the publisher's, from an earlier
            // run of --compare) is reused, not busy.
            if jasper_live::serves(a) {
                out.push(a);
                continue;
            }
            if let Err(e) = TcpListener::bind(a) {
                bail!("--metrics: TCP port {a} is busy or unusable ({e}); the run needs {n} ports from {base} on (publisher, {proxies} proxies, {groups} receiver processes): choose another, or port 0 for free ones");
            }
            out.push(a);
        }
        out
    };
    let mut shown = vec![("sender".to_string(), addrs[0])];
    let mut proxy_i = 0;
    let mut receiver_i = 0;
    for c in cfgs.iter_mut() {
        let a = match c.node.role {
            NodeRole::Sender => addrs[0],
            NodeRole::Proxy => {
                proxy_i += 1;
                shown.push((c.node.name.clone(), addrs[proxy_i]));
                addrs[proxy_i]
            }
            NodeRole::Receiver => {
                let g = receiver_i / per;
                receiver_i += 1;
                addrs[1 + proxies + g]
            }
        };
        c.metrics.listen = Some(a);
    }
    for g in 0..groups {
        let first = &receivers[g * per];
        let last = &receivers[((g + 1) * per).min(receivers.len()) - 1];
        shown.push((
            format!("receivers{g} ({first}..{last})"),
            addrs[1 + proxies + g],
        ));
    }
    Ok(shown)
}

/// The lines `jasper local --metrics` prints once its nodes are up.
pub(crate) fn announce(shown: &[(String, SocketAddr)], dir: &Path) {
    if shown.is_empty() {
        return;
    }
    println!(
        "metrics (GET /metrics, Prometheus text): {}",
        shown
            .iter()
            .map(|(n, a)| format!("{n} {a}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("watch it: jasper status --plan {}", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(text: &str) -> Vec<Sample> {
        scrape::parse(text).unwrap()
    }

    #[test]
    fn a_view_from_two_rounds() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let body = |rel: u64, late: u64, rx: u64| {
            format!(
                "jasper_rx_packets_total{{node=\"mp0\",role=\"receiver\"}} {rx}\n\
                 jasper_receiver_released_total{{node=\"mp0\",role=\"receiver\"}} {rel}\n\
                 jasper_receiver_late_total{{node=\"mp0\",role=\"receiver\"}} {late}\n\
                 jasper_clock_status{{node=\"mp0\",role=\"receiver\",status=\"synchronized\"}} 0\n\
                 jasper_clock_status{{node=\"mp0\",role=\"receiver\",status=\"degraded\"}} 1\n\
                 jasper_clock_error_bound_seconds{{node=\"mp0\",role=\"receiver\"}} 2e-7\n\
                 jasper_upstream_state{{node=\"mp0\",role=\"receiver\",upstream=\"1\",state=\"dead\"}} 1\n\
                 jasper_receiver_handover_seconds_bucket{{node=\"mp0\",role=\"receiver\",le=\"0.001\"}} {rel}\n\
                 jasper_receiver_handover_seconds_bucket{{node=\"mp0\",role=\"receiver\",le=\"+Inf\"}} {rel}\n"
            )
        };
        let t0 = Instant::now();
        let r0 = Round {
            at: t0,
            by_addr: [
                (a, Ok(samples(&body(100, 0, 1000)))),
                (b, Err("refused".into())),
            ]
            .into(),
        };
        let r1 = Round {
            at: t0 + Duration::from_secs(2),
            by_addr: [
                (a, Ok(samples(&body(300, 2, 3000)))),
                (b, Err("refused".into())),
            ]
            .into(),
        };
        let who = Who {
            planned: vec![
                Planned {
                    name: "proxy0".into(),
                    role: "proxy",
                    id: Some(1),
                    parent: Some(0),
                    addr: Some(b),
                },
                Planned {
                    name: "mp0".into(),
                    role: "receiver",
                    id: Some(2),
                    parent: Some(1),
                    addr: Some(a),
                },
            ],
            names: [(1, "proxy0".to_string()), (2, "mp0".to_string())].into(),
            extra_addrs: vec![],
        };
        let v = build(&who, &r1, Some(&r0));
        assert_eq!((v.nodes_total, v.nodes_up), (2, 1));
        assert_eq!(v.nodes_down, vec!["proxy0"]);
        let mp = &v.nodes[1];
        assert_eq!(mp.prefix, "└ ", "mp0 under proxy0");
        assert_eq!(mp.rx_packets_per_s, Some(1000.0));
        assert_eq!(mp.released_per_s, Some(100.0));
        assert_eq!(mp.late_fraction_interval, Some(0.01));
        assert_eq!(mp.clock_status.as_deref(), Some("degraded"));
        assert_eq!(mp.clock_bound_ns, Some(200));
        assert_eq!(mp.upstreams_dead, vec!["proxy0"]);
        assert!(mp.handover_p99_us.unwrap() <= 1000.0);
        assert_eq!(v.nodes[0].error.as_deref(), Some("refused"));
        assert_eq!(v.clocks_not_synchronized, vec!["mp0"]);
        let table = render(&v, 0.001, &Paint(false));
        assert!(
            table.contains("DOWN") && table.contains("dead upstream proxy0"),
            "{table}"
        );
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(
            j["nodes"][1]["late_fraction"],
            serde_json::json!(2.0 / 300.0)
        );
    }

    #[test]
    fn local_endpoints_follow_the_receiver_processes() {
        let plan = jasper_core::plan::Plan::build(
            &jasper_core::plan::loopback_inventory(1, 5, false, 43000),
            &jasper_core::plan::TreeSpec {
                roots: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let opts = jasper_core::plan_configs::ConfigOptions::default();
        let mut cfgs = jasper_core::plan_configs::node_configs(&plan, &opts);
        let shown = assign_local(&mut cfgs, Some("127.0.0.1:0".parse().unwrap()), 2).unwrap();
        let proxies = plan.proxies().count();
        // Publisher, each proxy, three receiver processes (2 + 2 + 1).
        assert_eq!(shown.len(), 1 + proxies + 3, "{shown:?}");
        let rx: Vec<_> = cfgs
            .iter()
            .filter(|c| c.node.role == NodeRole::Receiver)
            .map(|c| c.metrics.listen.unwrap())
            .collect();
        assert_eq!(rx[0], rx[1]);
        assert_ne!(rx[1], rx[2]);
        assert_eq!(rx[2], rx[3]);
        assert_ne!(rx[3], rx[4]);
        for c in &cfgs {
            c.validate().unwrap();
        }
        let mut cfgs = jasper_core::plan_configs::node_configs(&plan, &opts);
        assign_plan(&mut cfgs, 9100).unwrap();
        let mut ports: Vec<u16> = cfgs
            .iter()
            .map(|c| c.metrics.listen.unwrap().port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), cfgs.len(), "one port per node on a shared IP");
        assert_eq!(ports[0], 9100);
    }
}
