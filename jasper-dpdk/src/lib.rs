//! # jasper-dpdk
//!
//! The safe layer over DPDK (`jasper-ffi`) and the DPDK backend of
//! [`jasper_io::PacketIo`]:
//!
//! - [`Eal`]: initialization as a value that proves it happened (once per
//!   process; arguments validated; the port count checked).
//! - [`Mempool`], [`Mbuf`] (RAII, `Send`, not `Sync`), [`Port`] (one RX and one
//!   TX queue), errors from `rte_errno` mapped in one place ([`DpdkError`]).
//! - [`DpdkBackend`]: bursts received into stack arrays; Ethernet/IPv4/UDP
//!   parsing; ARP (answers requests for our address, learns and resolves
//!   next hops, or static entries from the config); zero-copy replication:
//!   each copy is a fresh 42-byte header mbuf (Ethernet/IPv4/UDP, checksums
//!   correct, written from a per-destination template with the checksums
//!   folded in incrementally) chained to the received mbuf itself, which
//!   carries one reference per copy; header mbufs are allocated in bulk and
//!   the copies transmitted in bursts across all children.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment.

mod backend;
mod eal;
mod mbuf;
pub mod net;

pub use backend::{DpdkBackend, DpdkCounters};
pub use eal::{Eal, Port};
pub use mbuf::{Mbuf, Mempool};

use jasper_core::config::NodeConfig;
use jasper_io::node::BoxedIo;

/// A DPDK failure, with the operation and DPDK's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DPDK {op} failed: {msg} (code {code})")]
pub struct DpdkError {
    /// The DPDK call.
    pub op: &'static str,
    /// Error code (`rte_errno` or the negative return value, made positive).
    pub code: i32,
    /// Human-readable explanation.
    pub msg: String,
}

/// Map a DPDK error code to [`DpdkError`] (the one place that does it).
pub(crate) fn rte_error(op: &'static str, code: i32) -> DpdkError {
    let code = code.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any code.
    let msg = unsafe { std::ffi::CStr::from_ptr(jasper_ffi::rte_strerror(code)) }
        .to_string_lossy()
        .into_owned();
    DpdkError { op, code, msg }
}

/// The last `rte_errno` as an error.
pub(crate) fn last_error(op: &'static str) -> DpdkError {
    // SAFETY: reads the per-lcore errno variable through the shim.
    rte_error(op, unsafe { jasper_ffi::jasper_errno() })
}

/// EAL arguments for running without a NIC or hugepages (tests, benchmarks,
/// the virtual devices of `docs`): no hugepages, no PCI scan, no shared
/// config, a unique file prefix, one core, and the given `--vdev`s.
pub fn vdev_eal_args(prefix: &str, lcore: u32, vdevs: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "--log-level=error",
        "--file-prefix",
        prefix,
        "-l",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(lcore.to_string());
    a.extend(vdevs.iter().map(|v| format!("--vdev={v}")));
    a
}

/// Open the DPDK backend for a node config (`backend.kind = "dpdk"`);
/// usable as a [`jasper_io::node::DpdkOpener`].
pub fn open_backend(cfg: &NodeConfig) -> Result<BoxedIo, String> {
    let d = cfg.backend.dpdk.as_ref().ok_or_else(|| {
        format!(
            "node {:?}: backend kind = \"dpdk\" needs a [backend.dpdk] section",
            cfg.node.name
        )
    })?;
    if cfg.node.listen.len() != 1 {
        return Err(format!(
            "node {:?}: the DPDK backend serves exactly one listen address",
            cfg.node.name
        ));
    }
    let listen = match cfg.node.listen[0] {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(_) => {
            return Err(format!(
                "node {:?}: the DPDK backend speaks IPv4 only",
                cfg.node.name
            ))
        }
    };
    if *listen.ip() != d.ip && !listen.ip().is_unspecified() {
        return Err(format!(
            "node {:?}: listen address {} differs from backend.dpdk.ip {}",
            cfg.node.name,
            listen.ip(),
            d.ip
        ));
    }
    let eal = Eal::init(&d.eal_args).map_err(|e| e.to_string())?;
    let mut arp = Vec::new();
    for (ip, mac) in &d.static_arp {
        let m = jasper_core::config::parse_mac(mac)
            .ok_or_else(|| format!("static_arp: {mac:?} is not a MAC address"))?;
        arp.push((*ip, m));
    }
    let b = DpdkBackend::open(
        eal,
        d.port,
        d.ip,
        listen.port(),
        d.mbufs,
        cfg.backend.burst,
        &arp,
    )
    .map_err(|e| e.to_string())?;
    Ok(Box::new(b))
}
