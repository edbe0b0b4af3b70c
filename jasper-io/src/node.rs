//! Opening a node's backend from its config (the same for every binary).

use jasper_core::config::{BackendKind, NodeConfig};

use crate::fault::Faulty;
use crate::udp::UdpBackend;
use crate::PacketIo;

/// A backend as the runners use it.
pub type BoxedIo = Box<dyn PacketIo + Send>;

/// Opens the DPDK backend (provided by `jasper-dpdk` when built with DPDK).
pub type DpdkOpener = fn(&NodeConfig) -> Result<BoxedIo, String>;

/// Open the configured backend (wrapped in the fault injector when
/// `[faults] enabled = true`). Errors are phrased for the operator.
pub fn open_backend(cfg: &NodeConfig, dpdk: Option<DpdkOpener>) -> Result<BoxedIo, String> {
    let b = &cfg.backend;
    let io: BoxedIo = match b.kind {
        BackendKind::Udp => Box::new(
            UdpBackend::bind_with(&cfg.node.listen, b.burst, b.socket_buffer, b.offload)
                .map_err(|e| e.to_string())?,
        ),
        BackendKind::Dpdk => match dpdk {
            Some(open) => open(cfg)?,
            None => {
                return Err(format!(
                    "node {:?} asks for backend kind = \"dpdk\" but this binary was built without DPDK; \
                     install libdpdk-dev and build with `--features dpdk`, or set kind = \"udp\"",
                    cfg.node.name
                ))
            }
        },
    };
    Ok(if cfg.faults.enabled {
        Box::new(Faulty::new(io, cfg.faults.model.clone(), cfg.faults.seed))
    } else {
        io
    })
}

/// Addresses of the plan's nodes indexed by id (dense), from `[[peers]]`.
pub fn peer_table(cfg: &NodeConfig) -> Vec<Option<std::net::SocketAddr>> {
    let max = cfg.peers.iter().map(|p| p.id).max().unwrap_or(0) as usize;
    let mut t = vec![None; max + 1];
    for p in &cfg.peers {
        t[p.id as usize] = Some(p.addr);
    }
    t
}

/// Read, parse and validate a node config file, resolving relative paths
/// (the key file) against its directory, and check its role.
pub fn load_config(
    path: &std::path::Path,
    role: jasper_core::config::NodeRole,
) -> Result<NodeConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut cfg =
        NodeConfig::from_toml(&text).map_err(|e| format!("in {}: {e}", path.display()))?;
    if cfg.node.role != role {
        return Err(format!(
            "{} is a {:?} config, not a {:?}'s",
            path.display(),
            cfg.node.role,
            role
        ));
    }
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    cfg.resolve_paths(base);
    Ok(cfg)
}
