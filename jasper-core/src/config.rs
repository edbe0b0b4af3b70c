//! Per-node configuration: one TOML file per node (written by `jasper plan`),
//! parsed with serde and validated into typed structs. Every error names the
//! field and says how to fix it.
//!
//! ```toml
//! [node]
//! id = 3
//! name = "proxy2"
//! role = "proxy"             # sender | proxy | receiver
//! listen = ["10.0.0.3:7000"]  # receivers may list two endpoints (receiver hedging)
//!
//! [backend]
//! kind = "udp"               # udp | dpdk
//! idle = "backoff"           # spin | yield | backoff
//! burst = 32
//!
//! [clock]
//! source = "system"          # system | emulated | { kernel = {..} } | { phc = {..} } | { clockbound = {..} }
//!
//! [table]                    # from the plan
//! # ...
//! [[peers]]
//! id = 7
//! addr = "10.0.0.7:7000"
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::clock::ClockClass;
use crate::guard::TrustSection;
use crate::model::CloudModel;
use crate::plan::{Fanout, ForwardingTable, NodeId};
use crate::proxy::ProxyConfig;
use crate::receiver::ReceiverConfig;
use crate::sender::SenderConfig;

/// Largest dedup window (receiver and proxy), in sequences: each stream's
/// bitmap is allocated whole (window / 8 bytes, 8 MiB here) when its first
/// packet arrives, so an unbounded window aborts the node on that packet.
pub const MAX_DEDUP_WINDOW: u64 = 1 << 26;

/// A configuration problem: which field, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error in `{field}`: {problem} — {fix}")]
pub struct ConfigError {
    /// Dotted field path (or "toml" for syntax errors).
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

fn bad<T>(
    field: &str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> Result<T, ConfigError> {
    Err(ConfigError {
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    })
}

/// The node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Publisher.
    Sender,
    /// Proxy.
    Proxy,
    /// Receiver (one MP).
    Receiver,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Plan id.
    pub id: NodeId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: NodeRole,
    /// Addresses to receive on (receivers: one or two endpoints).
    pub listen: Vec<SocketAddr>,
    /// Receivers: index of the MP in the inventory.
    #[serde(default)]
    pub mp: Option<u32>,
    /// Receivers with a second endpoint (receiver hedging): that endpoint's
    /// plan id and its parent, which also gets this MP's delay reports.
    #[serde(default)]
    pub hedge: Option<HedgeEndpoint>,
}

/// The second endpoint of a hedged MP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeEndpoint {
    /// Plan id of the endpoint.
    pub id: NodeId,
    /// Its parent proxy.
    pub parent: NodeId,
}

/// How a poll loop waits when there is no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdleStrategy {
    /// Spin (lowest latency; burns a core).
    Spin,
    /// `sched_yield` between polls.
    Yield,
    /// Spin for `spin_us` of idle time, then block until a packet arrives or
    /// a timer is due (at most `max_sleep_us` per wait).
    #[default]
    Backoff,
}

/// Packet I/O backend kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Kernel UDP sockets (recvmmsg/sendmmsg).
    #[default]
    Udp,
    /// DPDK poll-mode driver.
    Dpdk,
}

/// `[backend.dpdk]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkSection {
    /// EAL arguments, e.g. `["-l", "1", "--no-huge", "-m", "256", "--vdev=net_af_packet0,iface=eth1"]`.
    pub eal_args: Vec<String>,
    /// Port id.
    #[serde(default)]
    pub port: u16,
    /// This node's IPv4 address on that port.
    pub ip: Ipv4Addr,
    /// Static ARP entries `ip = "aa:bb:cc:dd:ee:ff"` (otherwise resolved by ARP).
    #[serde(default)]
    pub static_arp: Vec<(Ipv4Addr, String)>,
    /// Mbufs in the pool.
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
}

fn default_mbufs() -> u32 {
    8191
}

/// `[backend]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSection {
    /// Which backend.
    pub kind: BackendKind,
    /// Idle strategy of the poll loop.
    pub idle: IdleStrategy,
    /// Longest single wait of the backoff strategy, µs (arrivals end it early).
    pub max_sleep_us: u64,
    /// How long the backoff strategy keeps polling after the last work
    /// before it blocks, µs (0 = block at once). A budget of time, not of
    /// rounds: a receiver process polling 64 sockets pays as much per round
    /// as 64 single-socket loops. Longer spins shave the wake-up (tens of
    /// µs) off a hop when packets come closer than the spin; on a machine
    /// with fewer cores than busy nodes they take the CPU the other nodes
    /// need.
    pub spin_us: u64,
    /// Packets per burst.
    pub burst: usize,
    /// Socket buffer size, bytes (udp).
    pub socket_buffer: usize,
    /// Segmentation offload (udp): packets queued for one destination leave
    /// as one UDP GSO super-packet and coalesced arrivals (UDP GRO) are
    /// split back, so a burst crosses the kernel once per destination
    /// instead of once per packet. Where the kernel or the route refuses,
    /// the backend falls back to single datagrams by itself.
    pub offload: bool,
    /// DPDK settings (required when `kind = "dpdk"`).
    pub dpdk: Option<DpdkSection>,
}

impl Default for BackendSection {
    fn default() -> Self {
        BackendSection {
            kind: BackendKind::Udp,
            idle: IdleStrategy::Backoff,
            max_sleep_us: 1_000,
            spin_us: 20,
            burst: 32,
            socket_buffer: 4 << 20,
            offload: true,
            dpdk: None,
        }
    }
}

/// Where time comes from. `system` and `emulated` are written as strings;
/// the other sources take a table of settings (each with its own
/// "degraded" threshold), e.g. `source = { phc = { device = "/dev/ptp0" } }`
/// or `[clock.source.clockbound]`. Every real source is read cheaply: its
/// state is cached and refreshed every `refresh_ns`, never per message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockSource {
    /// The host's CLOCK_REALTIME with the kernel's state (`adjtimex`:
    /// maxerror, esterror, STA_UNSYNC) as chrony/ntpd/phc2sys keep it;
    /// default [`KernelClockSettings`].
    #[default]
    System,
    /// The same source with explicit settings.
    Kernel(KernelClockSettings),
    /// The host clock plus an emulated offset/drift/noise (local runs).
    Emulated,
    /// A PTP hardware clock (`/dev/ptpN`, e.g. the AWS ENA PHC), read as a
    /// dynamic POSIX clock through its cached offset to CLOCK_REALTIME.
    Phc(PhcSettings),
    /// AWS ClockBound's shared-memory segment (CLOCK_REALTIME with the
    /// daemon's bound and status).
    Clockbound(ClockBoundSettings),
}

/// Which kernel figure is the error bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KernelBound {
    /// `maxerror`: the kernel's guaranteed bound (grows 500 µs/s between
    /// updates of the sync agent).
    #[default]
    Maxerror,
    /// `esterror`: the agent's estimate — tighter, not a guarantee.
    Esterror,
}

/// Settings of the kernel source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelClockSettings {
    /// Which kernel figure is the bound.
    pub bound: KernelBound,
    /// Status is "degraded" while the bound exceeds this, ns.
    pub degraded_above_ns: u64,
    /// Re-read the kernel state this often, ns.
    pub refresh_ns: u64,
    /// A jump of CLOCK_REALTIME against CLOCK_MONOTONIC larger than this
    /// (beyond the kernel's 500 ppm slew) is a step, ns.
    pub step_threshold_ns: u64,
}

impl Default for KernelClockSettings {
    fn default() -> Self {
        KernelClockSettings {
            bound: KernelBound::Maxerror,
            degraded_above_ns: 1_000_000,
            refresh_ns: 1_000_000,
            step_threshold_ns: 100_000,
        }
    }
}

/// Settings of a PTP hardware clock source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhcSettings {
    /// The device.
    pub device: String,
    /// The PHC's own error against true time, ns (what its provider
    /// promises; the AWS ENA PHC is disciplined to Amazon Time Sync).
    pub accuracy_ns: u64,
    /// Added to the PHC reading to get UTC, ns (0 for a UTC PHC such as
    /// AWS ENA's; −37 s for a TAI PHC run by ptp4l).
    pub utc_offset_ns: i64,
    /// Drift assumed between offset measurements, ppb.
    pub max_drift_ppb: u64,
    /// Status is "degraded" while the bound exceeds this, ns.
    pub degraded_above_ns: u64,
    /// Measure the PHC − CLOCK_REALTIME offset this often, ns.
    pub refresh_ns: u64,
    /// No successful measurement for this long: unsynchronized, ns.
    pub stale_after_ns: u64,
    /// CLOCK_REALTIME step threshold (see [`KernelClockSettings`]), ns.
    pub step_threshold_ns: u64,
}

impl Default for PhcSettings {
    fn default() -> Self {
        PhcSettings {
            device: "/dev/ptp0".into(),
            accuracy_ns: 20_000,
            utc_offset_ns: 0,
            max_drift_ppb: 50_000,
            degraded_above_ns: 100_000,
            refresh_ns: 1_000_000,
            stale_after_ns: 100_000_000,
            step_threshold_ns: 100_000,
        }
    }
}

/// Settings of the ClockBound source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockBoundSettings {
    /// The daemon's shared-memory segment.
    pub path: String,
    /// Status is "degraded" while the bound exceeds this, ns.
    pub degraded_above_ns: u64,
    /// Re-read the segment this often, ns.
    pub refresh_ns: u64,
    /// CLOCK_REALTIME step threshold (see [`KernelClockSettings`]), ns.
    pub step_threshold_ns: u64,
}

impl Default for ClockBoundSettings {
    fn default() -> Self {
        ClockBoundSettings {
            path: "/var/run/clockbound/shm0".into(),
            degraded_above_ns: 1_000_000,
            refresh_ns: 1_000_000,
            step_threshold_ns: 100_000,
        }
    }
}

/// `[clock]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSection {
    /// Source.
    pub source: ClockSource,
    /// Class (bound of emulated clocks).
    pub class: ClockClass,
    /// Emulated offset, ns.
    pub offset_ns: i64,
    /// Emulated drift, ppb.
    pub drift_ppb: f64,
    /// Emulated read noise σ, ns.
    pub noise_ns: f64,
    /// Declared bound, ns. Emulated clocks: their bound (default the
    /// class's). Kernel source: the bound an agent declares (e.g. a PTP or
    /// Huygens agent whose kernel maxerror means nothing), used instead of
    /// the kernel's figure — it never changes the status: an unsynchronized
    /// kernel clock stays unsynchronized. Other sources ignore it.
    pub bound_ns: Option<u64>,
    /// Seed of the noise.
    pub seed: u64,
}

impl Default for ClockSection {
    fn default() -> Self {
        ClockSection {
            source: ClockSource::System,
            class: ClockClass::Huygens,
            offset_ns: 0,
            drift_ppb: 0.0,
            noise_ns: 0.0,
            bound_ns: None,
            seed: 1,
        }
    }
}

impl ClockSection {
    /// Declared bound of an emulated clock.
    pub fn bound_ns(&self) -> u64 {
        self.bound_ns.unwrap_or(self.class.bound_ns())
    }
}

/// `[faults]`: the delay/loss-injecting wrapper around the backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSection {
    /// Wrap the backend at all.
    pub enabled: bool,
    /// Seed.
    pub seed: u64,
    /// The model (per-link delay, loss, duplication, reordering).
    pub model: CloudModel,
}

impl Default for FaultSection {
    fn default() -> Self {
        FaultSection {
            enabled: false,
            seed: 1,
            model: CloudModel::default(),
        }
    }
}

/// `[receiver]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverSection {
    /// The state machine.
    pub core: ReceiverConfig,
    /// Spin (instead of sleeping) for the last stretch before a deadline, ns.
    pub spin_ns: u64,
    /// Re-emit released messages as MoldUDP64 to this address (the MP's
    /// feed handler). Every publisher stream is its own MoldUDP64 session.
    pub mold_udp: Option<SocketAddr>,
    /// MoldUDP64 session-name prefix: 1 to 7 ASCII letters. A stream's
    /// session is named prefix ‖ stream id (decimal) ‖ a code of the
    /// publisher's session (letters A–Z), 10 characters in all, so a
    /// restarted publisher starts a session with a new name.
    pub mold_session: String,
    /// MoldUDP64 request server: answers re-requests (session, sequence,
    /// count) from what this receiver released. Needs `mold_udp`.
    pub mold_request: Option<SocketAddr>,
    /// Heartbeat interval of each MoldUDP64 session, ms.
    pub mold_heartbeat_ms: u64,
    /// How long a session's end of session waits for sequences never
    /// released (lost), ms. At least the deadline window
    /// (`trust.deadline_future_ns`), so every message held when the end
    /// arrived is out first.
    pub mold_end_wait_ms: u64,
    /// End-of-session packets per session: the first, then one in place of
    /// each heartbeat.
    pub mold_end_packets: u32,
    /// Retransmit buffer of each MoldUDP64 session: payload bytes kept.
    pub mold_buffer_bytes: usize,
    /// Retransmit buffer of each MoldUDP64 session: messages kept.
    pub mold_buffer_messages: usize,
    /// Reply packets per second to one requester (bursts of a tenth of a
    /// second); all requesters together get four times this.
    pub mold_replies_per_s: u32,
    /// How long a request for a sequence not released yet (a gap this
    /// receiver is still filling) waits before it is dropped, ms.
    pub mold_request_wait_ms: u64,
}

impl Default for ReceiverSection {
    fn default() -> Self {
        ReceiverSection {
            core: ReceiverConfig::default(),
            spin_ns: 20_000,
            mold_udp: None,
            mold_session: "J".into(),
            mold_request: None,
            mold_heartbeat_ms: 1_000,
            mold_end_wait_ms: 1_000,
            mold_end_packets: 10,
            mold_buffer_bytes: 4 << 20,
            mold_buffer_messages: 1 << 16,
            mold_replies_per_s: 10_000,
            mold_request_wait_ms: 1_000,
        }
    }
}

/// Longest MoldUDP64 session-name prefix.
pub const MOLD_PREFIX_MAX: usize = 7;
/// Letters a MoldUDP64 session name keeps for the publisher-session code.
pub const MOLD_CODE_MIN: usize = 3;
/// Largest MoldUDP64 retransmit buffer per session, bytes.
pub const MOLD_BUFFER_BYTES_MAX: usize = 1 << 30;
/// Largest MoldUDP64 retransmit buffer per session, messages.
pub const MOLD_BUFFER_MESSAGES_MAX: usize = 1 << 22;

/// Address of a node the table refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Plan id.
    pub id: NodeId,
    /// Address.
    pub addr: SocketAddr,
    /// For receiver endpoints: the MP it belongs to (a hedged MP's two
    /// endpoints share it, and either socket may carry its reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mp: Option<u32>,
}

/// `[metrics]`: where the node serves its live counters (Prometheus text
/// format, `GET /metrics` over HTTP). Off unless `listen` is set.
///
/// ```toml
/// [metrics]
/// listen = "127.0.0.1:9100"
/// interval_ms = 100          # how often the run loop copies its counters out
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// TCP address of the endpoint; `None` = no endpoint.
    pub listen: Option<SocketAddr>,
    /// How often the run loop copies its counters for the endpoint, ms.
    pub interval_ms: u64,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: None,
            interval_ms: 100,
        }
    }
}

impl MetricsSection {
    /// No endpoint and default settings (left out of written configs).
    pub fn is_off(&self) -> bool {
        *self == MetricsSection::default()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(a) = self.listen {
            if a.port() == 0 {
                return bad(
                    "metrics.listen",
                    format!("{a} has port 0: the node would pick a port nobody knows"),
                    "choose a fixed port, e.g. \"127.0.0.1:9100\", so Prometheus and `jasper status` can find it",
                );
            }
            if a.ip().is_multicast() || a.ip() == std::net::IpAddr::V4(Ipv4Addr::BROADCAST) {
                return bad(
                    "metrics.listen",
                    format!("{} is not an address a TCP endpoint can listen on", a.ip()),
                    "use a local unicast address (127.0.0.1 keeps it on the host; a management interface's address exposes it to Prometheus)",
                );
            }
        }
        if !(10..=60_000).contains(&self.interval_ms) {
            return bad(
                "metrics.interval_ms",
                format!("{} is out of range", self.interval_ms),
                "use 10..=60000 (100 is typical: fresh to a tenth of a second, no cost on the data path)",
            );
        }
        Ok(())
    }
}

/// A whole node config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`.
    pub node: NodeSection,
    /// `[backend]`.
    #[serde(default)]
    pub backend: BackendSection,
    /// `[clock]`.
    #[serde(default)]
    pub clock: ClockSection,
    /// `[faults]`.
    #[serde(default)]
    pub faults: FaultSection,
    /// `[sender]` (sender only).
    #[serde(default)]
    pub sender: SenderConfig,
    /// `[proxy]` (proxy only).
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// `[receiver]` (receiver only).
    #[serde(default)]
    pub receiver: ReceiverSection,
    /// `[trust]`: keys, allowlists and plausibility bounds.
    #[serde(default)]
    pub trust: TrustSection,
    /// `[metrics]`: the live counters endpoint (off unless `listen` is set).
    #[serde(default, skip_serializing_if = "MetricsSection::is_off")]
    pub metrics: MetricsSection,
    /// `[table]`: this node's forwarding table from the plan.
    pub table: ForwardingTable,
    /// `[[peers]]`: addresses of every node the table names.
    #[serde(default)]
    pub peers: Vec<Peer>,
}

impl NodeConfig {
    /// A config with every optional section at its default, and
    /// unauthenticated (`trust.insecure = true`): for tests and tools that
    /// build configs in memory. `jasper plan` writes authenticated ones.
    pub fn with_defaults(
        node: NodeSection,
        table: ForwardingTable,
        peers: Vec<Peer>,
    ) -> NodeConfig {
        NodeConfig {
            node,
            backend: BackendSection::default(),
            clock: ClockSection::default(),
            faults: FaultSection::default(),
            sender: SenderConfig::default(),
            proxy: ProxyConfig::default(),
            receiver: ReceiverSection::default(),
            trust: TrustSection {
                insecure: true,
                ..TrustSection::default()
            },
            metrics: MetricsSection::default(),
            table,
            peers,
        }
    }

    /// A receiver (MP `mp`, plan id `id`, listening on `listen`) with one
    /// upstream, proxy `parent` (plan id, address), every other section at
    /// its default and unauthenticated, as [`NodeConfig::with_defaults`]:
    /// for tests, benchmarks and tools that run a receiver in memory.
    pub fn leaf_receiver(
        name: &str,
        id: NodeId,
        mp: u32,
        listen: SocketAddr,
        parent: (NodeId, SocketAddr),
    ) -> NodeConfig {
        NodeConfig::with_defaults(
            NodeSection {
                id,
                name: name.into(),
                role: NodeRole::Receiver,
                listen: vec![listen],
                mp: Some(mp),
                hedge: None,
            },
            ForwardingTable {
                node: id,
                parent: Some(parent.0),
                upstreams: [parent.0].into(),
                report_children: vec![],
                report_also: vec![],
                fanout: Fanout::None,
            },
            vec![Peer {
                id: parent.0,
                addr: parent.1,
                mp: None,
            }],
        )
    }

    /// Resolve relative paths in the config (the key file) against the
    /// directory of the config file.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(k) = &self.trust.key_file {
            if k.is_relative() {
                self.trust.key_file = Some(base.join(k));
            }
        }
    }

    /// Parse and validate.
    pub fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| ConfigError {
            field: "toml".into(),
            problem: e.message().to_string()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
            fix: "fix the file; `jasper plan` writes a valid one to start from".into(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Serialize.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("node config serializes")
    }

    /// Address of peer `id`.
    pub fn peer(&self, id: NodeId) -> Option<SocketAddr> {
        self.peers.iter().find(|p| p.id == id).map(|p| p.addr)
    }

    /// Check everything serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.node;
        if n.listen.is_empty() {
            return bad(
                "node.listen",
                "no address to listen on",
                "add at least one \"ip:port\"",
            );
        }
        if n.role != NodeRole::Receiver && n.listen.len() > 1 {
            return bad(
                "node.listen",
                "only receivers may have two endpoints",
                "keep one address",
            );
        }
        if n.listen.len() > 2 {
            return bad(
                "node.listen",
                "more than two endpoints",
                "receiver hedging uses at most two",
            );
        }
        if self.table.node != n.id {
            return bad(
                "table.node",
                format!(
                    "table is for node {} but node.id = {}",
                    self.table.node, n.id
                ),
                "use the table `jasper plan` wrote for this node",
            );
        }
        if n.role == NodeRole::Proxy && n.id > crate::plan::MAX_PROXY_ID {
            return bad(
                "node.id",
                format!(
                    "proxy id {} is beyond {}: a proxy's id is its 16-bit path tag",
                    n.id,
                    crate::plan::MAX_PROXY_ID
                ),
                "use the config `jasper plan` wrote (proxies come first in its ids), or shard the tree",
            );
        }
        match (n.role, &self.table.fanout) {
            (NodeRole::Receiver, Fanout::None) => {}
            (NodeRole::Receiver, _) => {
                return bad(
                    "table.fanout",
                    "a receiver cannot forward",
                    "set fanout kind = \"none\"",
                )
            }
            (_, Fanout::None) => {
                return bad(
                    "table.fanout",
                    "a sender or proxy must forward",
                    "use the table from `jasper plan`",
                )
            }
            _ => {}
        }
        let mut needed = Vec::new();
        self.table.fanout.for_each(0, |c, _| needed.push(c));
        if let Fanout::Hedged { slots, .. } = &self.table.fanout {
            needed.extend(slots.iter().flatten());
        }
        needed.extend(self.table.parent);
        needed.extend(self.node.hedge.map(|h| h.parent));
        for id in needed {
            if self.peer(id).is_none() {
                return bad(
                    "peers",
                    format!("node {id} is in the forwarding table but has no address"),
                    format!("add [[peers]] id = {id} addr = \"ip:port\""),
                );
            }
        }
        let b = &self.backend;
        if b.burst == 0 || b.burst > 512 {
            return bad(
                "backend.burst",
                format!("{} is out of range", b.burst),
                "use 1..=512 (32 is typical)",
            );
        }
        if b.kind == BackendKind::Dpdk {
            match &b.dpdk {
                None => {
                    return bad(
                        "backend.dpdk",
                        "kind = \"dpdk\" without a [backend.dpdk] section",
                        "add eal_args and ip",
                    )
                }
                Some(d) if d.eal_args.is_empty() => {
                    return bad(
                        "backend.dpdk.eal_args",
                        "empty",
                        "give at least the core list, e.g. [\"-l\", \"1\"]",
                    )
                }
                Some(d) => {
                    for (ip, mac) in &d.static_arp {
                        if parse_mac(mac).is_none() {
                            return bad(
                                "backend.dpdk.static_arp",
                                format!("{mac:?} for {ip} is not a MAC address"),
                                "write it as aa:bb:cc:dd:ee:ff",
                            );
                        }
                    }
                }
            }
        }
        let r = &self.receiver.core;
        if !(r.estimator.percentile > 0.0 && r.estimator.percentile <= 100.0) {
            return bad(
                "receiver.core.estimator.percentile",
                format!("{} is not in (0, 100]", r.estimator.percentile),
                "use e.g. 97.0",
            );
        }
        if r.estimator.window_ns == 0 || r.estimator.max_samples == 0 {
            return bad(
                "receiver.core.estimator",
                "window_ns and max_samples must be > 0",
                "use e.g. window_ns = 10000000, max_samples = 65536",
            );
        }
        check_window("receiver.core", r.dedup_window, r.max_seq_jump, 1 << 20)?;
        if r.max_held == 0 {
            return bad("receiver.core.max_held", "0", "use e.g. 1048576");
        }
        if r.max_held_bytes < 65_536 {
            return bad(
                "receiver.core.max_held_bytes",
                format!(
                    "{} bytes cannot hold even one jumbo packet",
                    r.max_held_bytes
                ),
                "use e.g. 268435456 (256 MiB)",
            );
        }
        if r.max_hold_ns == 0 {
            return bad(
                "receiver.core.max_hold_ns",
                "0",
                "use the publishers' deadline ceiling plus the clocks' slack, e.g. 10000000 (10 ms)",
            );
        }
        if r.max_streams == 0 {
            return bad(
                "receiver.core.max_streams",
                "0",
                "use the number of publishers in the plan (e.g. 16)",
            );
        }
        check_window(
            "proxy",
            self.proxy.dedup_window,
            self.proxy.max_seq_jump,
            1 << 16,
        )?;
        let t = &self.trust;
        if t.key_file.is_none() && !t.insecure {
            return bad(
                "trust.key_file",
                "no key file, and `insecure` is not set",
                "run `jasper keys` (or `jasper plan`, which writes keys) and set key_file, or set insecure = true for a local experiment",
            );
        }
        if t.streams.is_empty() {
            return bad(
                "trust.streams",
                "no stream is allowed",
                "list the publishers' stream ids, e.g. [1]",
            );
        }
        if n.role == NodeRole::Sender && !t.streams.contains(&self.sender.stream) {
            return bad(
                "trust.streams",
                format!(
                    "the sender's own stream {} is not listed",
                    self.sender.stream
                ),
                format!("add {} to trust.streams", self.sender.stream),
            );
        }
        if t.deadline_future_ns < self.sender.deadline.ceiling_ns {
            return bad(
                "trust.deadline_future_ns",
                format!(
                    "{} ns is below the deadline ceiling ({} ns): every deadline near the ceiling would be refused",
                    t.deadline_future_ns, self.sender.deadline.ceiling_ns
                ),
                "set it to the ceiling plus the clocks' disagreement (e.g. ceiling + 5 ms)",
            );
        }
        self.check_mold()?;
        let s = &self.sender;
        if s.max_packet < 64 || s.max_packet > 9000 {
            return bad(
                "sender.max_packet",
                format!("{} is out of range", s.max_packet),
                "use 64..=9000 (1472 for a 1500-byte MTU)",
            );
        }
        if s.packet_gap_ns > 10_000_000 {
            return bad(
                "sender.packet_gap_ns",
                format!("{} ns is more than 10 ms", s.packet_gap_ns),
                "every message may wait this long: use tens of µs (e.g. 50000), or 0 for off",
            );
        }
        if s.deadline.ceiling_ns < s.deadline.floor_ns {
            return bad(
                "sender.deadline.ceiling_ns",
                "below floor_ns",
                "raise ceiling_ns or lower floor_ns",
            );
        }
        self.metrics.validate()?;
        if self.faults.enabled {
            self.faults.model.validate().map_err(|e| ConfigError {
                field: "faults.model".into(),
                problem: e,
                fix: "see docs/MODEL.md for valid values".into(),
            })?;
        }
        Ok(())
    }
}

impl NodeConfig {
    /// `[receiver]` MoldUDP64 keys.
    fn check_mold(&self) -> Result<(), ConfigError> {
        let r = &self.receiver;
        let prefix = &r.mold_session;
        if prefix.is_empty()
            || prefix.len() > MOLD_PREFIX_MAX
            || !prefix.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return bad(
                "receiver.mold_session",
                format!("{prefix:?} is not 1 to {MOLD_PREFIX_MAX} ASCII letters"),
                "use a short prefix of letters such as \"J\" (the stream id and a session code follow it)",
            );
        }
        if r.mold_udp.is_some() {
            let room = MOLD_PREFIX_MAX - prefix.len();
            if let Some(s) = self
                .trust
                .streams
                .iter()
                .find(|s| s.to_string().len() > room)
            {
                return bad(
                    "receiver.mold_session",
                    format!(
                        "prefix {prefix:?} and stream {s} leave fewer than {MOLD_CODE_MIN} of the 10 session-name characters for the publisher-session code"
                    ),
                    match MOLD_PREFIX_MAX.checked_sub(s.to_string().len()) {
                        Some(n) if n > 0 => format!("shorten the prefix to at most {n} letters"),
                        _ => "use stream ids below 1000000 (the name holds a 1-letter prefix and 6 digits)".into(),
                    },
                );
            }
        }
        match (r.mold_request, r.mold_udp) {
            (Some(_), None) => {
                return bad(
                    "receiver.mold_request",
                    "a request server without `mold_udp` has nothing to answer from",
                    "set mold_udp to the feed handler's address, or remove mold_request",
                )
            }
            (Some(a), Some(b)) if a == b => {
                return bad(
                    "receiver.mold_request",
                    format!("{a} is also the feed address `mold_udp`"),
                    "give the request server its own port, e.g. the feed port + 1",
                )
            }
            _ => {}
        }
        if !(1..=60_000).contains(&r.mold_heartbeat_ms) {
            return bad(
                "receiver.mold_heartbeat_ms",
                format!("{} is out of range", r.mold_heartbeat_ms),
                "use 1..=60000 (MoldUDP64 servers send one a second: 1000)",
            );
        }
        let window_ms = self.trust.deadline_future_ns.div_ceil(1_000_000);
        if r.mold_end_wait_ms < window_ms || r.mold_end_wait_ms > 600_000 {
            return bad(
                "receiver.mold_end_wait_ms",
                format!(
                    "{} ms is outside {window_ms}..=600000: below the deadline window (trust.deadline_future_ns) an end of session could overtake held messages",
                    r.mold_end_wait_ms
                ),
                format!("use e.g. {}", window_ms.max(1_000)),
            );
        }
        if !(1..=1_000).contains(&r.mold_end_packets) {
            return bad(
                "receiver.mold_end_packets",
                format!("{} is out of range", r.mold_end_packets),
                "use 1..=1000 (e.g. 10: the end is repeated in place of heartbeats)",
            );
        }
        if !(65_536..=MOLD_BUFFER_BYTES_MAX).contains(&r.mold_buffer_bytes) {
            return bad(
                "receiver.mold_buffer_bytes",
                format!("{} is out of range", r.mold_buffer_bytes),
                format!("use 65536..={MOLD_BUFFER_BYTES_MAX} (the largest message must fit; e.g. 4194304)"),
            );
        }
        if !(16..=MOLD_BUFFER_MESSAGES_MAX).contains(&r.mold_buffer_messages) {
            return bad(
                "receiver.mold_buffer_messages",
                format!("{} is out of range", r.mold_buffer_messages),
                format!("use 16..={MOLD_BUFFER_MESSAGES_MAX} (e.g. 65536)"),
            );
        }
        if !(1..=1_000_000).contains(&r.mold_replies_per_s) {
            return bad(
                "receiver.mold_replies_per_s",
                format!("{} is out of range", r.mold_replies_per_s),
                "use 1..=1000000 (e.g. 10000)",
            );
        }
        if r.mold_request_wait_ms > 60_000 {
            return bad(
                "receiver.mold_request_wait_ms",
                format!("{} is out of range", r.mold_request_wait_ms),
                "use 0..=60000 (e.g. 1000)",
            );
        }
        Ok(())
    }
}

/// A dedup window (power of two, bounded) and the largest sequence jump
/// allowed with it (`0 < jump ≤ window`), for the section `prefix`.
fn check_window(prefix: &str, window: u64, jump: u64, example: u64) -> Result<(), ConfigError> {
    if !window.is_power_of_two() || !(64..=MAX_DEDUP_WINDOW).contains(&window) {
        return bad(
            &format!("{prefix}.dedup_window"),
            format!("{window} is not a power of two in 64..={MAX_DEDUP_WINDOW}"),
            format!("use e.g. {example}"),
        );
    }
    if jump == 0 || jump > window {
        return bad(
            &format!("{prefix}.max_seq_jump"),
            format!(
                "{jump} must be within 1..=dedup_window ({window}): a larger jump would slide the dedup window past messages still to come"
            ),
            format!("use at most {window} (half the window is typical)"),
        );
    }
    Ok(())
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for o in &mut out {
        *o = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_receiver_is_a_valid_receiver_under_its_parent() {
        let me: SocketAddr = "10.1.0.2:1".parse().unwrap();
        let parent: SocketAddr = "10.1.0.1:1".parse().unwrap();
        let c = NodeConfig::leaf_receiver("mp3", 7, 3, me, (1, parent));
        c.validate().unwrap();
        assert_eq!(
            (c.node.id, c.node.role, c.node.mp, c.node.listen.clone()),
            (7, NodeRole::Receiver, Some(3), vec![me])
        );
        assert_eq!((c.table.node, c.table.parent), (7, Some(1)));
        assert_eq!((c.peers[0].id, c.peers[0].addr), (1, parent));
    }

    #[test]
    fn clock_sources_parse_with_per_source_settings() {
        let c: ClockSection = toml::from_str("source = \"system\"").unwrap();
        assert_eq!(c.source, ClockSource::System);
        let c: ClockSection = toml::from_str(
            "source = { phc = { device = \"/dev/ptp1\", degraded_above_ns = 50000 } }",
        )
        .unwrap();
        let ClockSource::Phc(p) = c.source else {
            panic!("{c:?}")
        };
        assert_eq!(
            (p.device.as_str(), p.degraded_above_ns),
            ("/dev/ptp1", 50_000)
        );
        assert_eq!(p.refresh_ns, PhcSettings::default().refresh_ns);
        let c: ClockSection =
            toml::from_str("[source.clockbound]\npath = \"/tmp/shm0\"\n").unwrap();
        assert!(matches!(c.source, ClockSource::Clockbound(ref b) if b.path == "/tmp/shm0"));
        let c: ClockSection = toml::from_str(
            "source = { kernel = { bound = \"esterror\", degraded_above_ns = 5000000 } }",
        )
        .unwrap();
        assert!(matches!(
            c.source,
            ClockSource::Kernel(KernelClockSettings {
                bound: KernelBound::Esterror,
                degraded_above_ns: 5_000_000,
                ..
            })
        ));
        assert!(toml::from_str::<ClockSection>("source = { phc = { devic = \"x\" } }").is_err());
    }
    use crate::plan::{loopback_inventory, Plan, TreeSpec};

    fn sample() -> NodeConfig {
        let p = Plan::build(
            &loopback_inventory(1, 4, false, 41000),
            &TreeSpec {
                roots: 1,
                ..TreeSpec::default()
            },
        )
        .unwrap();
        let t = p.tables[1].clone();
        let mut peers: Vec<Peer> = p
            .nodes
            .iter()
            .map(|n| Peer {
                id: n.id,
                addr: n.addr,
                mp: None,
            })
            .collect();
        peers.retain(|x| x.id != 1);
        NodeConfig::with_defaults(
            NodeSection {
                id: 1,
                name: "proxy0".into(),
                role: NodeRole::Proxy,
                listen: vec![p.nodes[1].addr],
                mp: None,
                hedge: None,
            },
            t,
            peers,
        )
    }

    #[test]
    fn round_trips_through_toml() {
        let c = sample();
        let text = c.to_toml();
        assert_eq!(NodeConfig::from_toml(&text).unwrap(), c);
    }

    #[test]
    fn errors_name_field_and_fix() {
        let mut c = sample();
        c.peers.pop();
        let e = NodeConfig::from_toml(&c.to_toml()).unwrap_err();
        assert_eq!(e.field, "peers");
        assert!(e.fix.contains("[[peers]]"));

        // A proxy id beyond the 16-bit path tag (receivers may go beyond).
        let mut c = sample();
        c.node.id = 70_000;
        c.table.node = 70_000;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "node.id");
        assert!(e.problem.contains("16-bit path tag"), "{e}");

        let mut c = sample();
        c.receiver.core.estimator.percentile = 120.0;
        let e = c.validate().unwrap_err();
        assert!(e.field.ends_with("percentile"), "{e}");

        let mut c = sample();
        c.backend.kind = BackendKind::Dpdk;
        assert_eq!(c.validate().unwrap_err().field, "backend.dpdk");

        let text = sample().to_toml().replace("[node]", "[node]\nbogus = 1");
        let e = NodeConfig::from_toml(&text).unwrap_err();
        assert_eq!(e.field, "toml");
        assert!(e.problem.contains("bogus"), "{e}");

        let text = sample()
            .to_toml()
            .replace("role = \"proxy\"", "role = \"router\"");
        assert!(NodeConfig::from_toml(&text)
            .unwrap_err()
            .problem
            .contains("router"));
    }

    #[test]
    fn trust_bounds_are_enforced() {
        // A jump beyond the dedup window, or none at all, is refused.
        let mut c = sample();
        c.receiver.core.max_seq_jump = c.receiver.core.dedup_window * 2;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "receiver.core.max_seq_jump", "{e}");
        c.receiver.core.max_seq_jump = 0;
        assert_eq!(
            c.validate().unwrap_err().field,
            "receiver.core.max_seq_jump"
        );
        let mut c = sample();
        c.proxy.max_seq_jump = c.proxy.dedup_window + 1;
        assert_eq!(c.validate().unwrap_err().field, "proxy.max_seq_jump");
        // Without keys a node runs only when told it is insecure.
        let mut c = sample();
        c.trust.insecure = false;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "trust.key_file");
        assert!(e.fix.contains("jasper keys"), "{e}");
        c.trust.key_file = Some("keys/proxy0.key".into());
        c.validate().unwrap();
        c.resolve_paths(std::path::Path::new("/etc/jasper"));
        assert_eq!(
            c.trust.key_file.as_deref(),
            Some(std::path::Path::new("/etc/jasper/keys/proxy0.key"))
        );
        // The plausibility window must admit deadlines at the ceiling.
        let mut c = sample();
        c.trust.deadline_future_ns = c.sender.deadline.ceiling_ns - 1;
        assert_eq!(c.validate().unwrap_err().field, "trust.deadline_future_ns");
        let mut c = sample();
        c.receiver.core.max_held_bytes = 100;
        assert_eq!(
            c.validate().unwrap_err().field,
            "receiver.core.max_held_bytes"
        );
    }

    #[test]
    fn mold_keys_are_checked() {
        let mut c = sample();
        c.receiver.mold_udp = Some("127.0.0.1:9000".parse().unwrap());
        c.receiver.mold_request = Some("127.0.0.1:9001".parse().unwrap());
        c.validate().unwrap();
        // Old configs name the session "JASPER": still valid for stream 1.
        c.receiver.mold_session = "JASPER".into();
        c.validate().unwrap();
        c.trust.streams = vec![1, 4711];
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "receiver.mold_session", "{e}");
        assert!(e.fix.contains("at most 3 letters"), "{e}");
        c.receiver.mold_session = "JASPER1".into();
        assert!(c.validate().unwrap_err().problem.contains("letters"));
        c.receiver.mold_session = "J".into();
        c.validate().unwrap();
        c.trust.streams = vec![123_456_789];
        assert!(c.validate().unwrap_err().fix.contains("below 1000000"));
        c.trust.streams = vec![1];
        c.receiver.mold_request = c.receiver.mold_udp;
        assert_eq!(c.validate().unwrap_err().field, "receiver.mold_request");
        c.receiver.mold_udp = None;
        assert!(c
            .validate()
            .unwrap_err()
            .problem
            .contains("nothing to answer"));
        let mut c = sample();
        c.receiver.mold_end_wait_ms = 1;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "receiver.mold_end_wait_ms");
        assert!(e.problem.contains("deadline window"), "{e}");
        for (field, set) in [
            (
                "receiver.mold_buffer_bytes",
                (|c: &mut NodeConfig| c.receiver.mold_buffer_bytes = usize::MAX)
                    as fn(&mut NodeConfig),
            ),
            ("receiver.mold_buffer_messages", |c| {
                c.receiver.mold_buffer_messages = 0
            }),
            ("receiver.mold_heartbeat_ms", |c| {
                c.receiver.mold_heartbeat_ms = 0
            }),
            ("receiver.mold_end_packets", |c| {
                c.receiver.mold_end_packets = 0
            }),
            ("receiver.mold_replies_per_s", |c| {
                c.receiver.mold_replies_per_s = 0
            }),
            ("receiver.mold_request_wait_ms", |c| {
                c.receiver.mold_request_wait_ms = u64::MAX
            }),
        ] {
            let mut c = sample();
            set(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn dedup_windows_are_bounded() {
        // Found by the node_config fuzz check: a window of 2^62 validated,
        // then the first packet asked for a 2^59-byte bitmap and aborted.
        let huge = 1u64 << 62;
        let mut c = sample();
        c.receiver.core.dedup_window = huge;
        assert_eq!(
            c.validate().unwrap_err().field,
            "receiver.core.dedup_window"
        );
        let mut c = sample();
        c.proxy.dedup_window = huge;
        assert_eq!(c.validate().unwrap_err().field, "proxy.dedup_window");
        let mut c = sample();
        c.receiver.core.dedup_window = MAX_DEDUP_WINDOW;
        c.proxy.dedup_window = MAX_DEDUP_WINDOW;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn metrics_endpoint_is_checked() {
        // Off by default, and then not written.
        let c = sample();
        assert!(c.metrics.listen.is_none());
        assert!(!c.to_toml().contains("[metrics]"));
        let mut c = sample();
        c.metrics.listen = Some("127.0.0.1:9100".parse().unwrap());
        let back = NodeConfig::from_toml(&c.to_toml()).unwrap();
        assert_eq!(back.metrics, c.metrics);
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "metrics.listen");
        assert!(e.fix.contains("fixed port"), "{e}");
        c.metrics.listen = Some("239.1.2.3:9100".parse().unwrap());
        assert_eq!(c.validate().unwrap_err().field, "metrics.listen");
        let mut c = sample();
        c.metrics.interval_ms = 0;
        assert_eq!(c.validate().unwrap_err().field, "metrics.interval_ms");
        let text = sample().to_toml() + "\n[metrics]\nlisten = \"localhost\"\n";
        let e = NodeConfig::from_toml(&text).unwrap_err();
        assert_eq!(e.field, "toml", "{e}");
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:00:01"), None);
    }
}
