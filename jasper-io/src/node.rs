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
        BackendKind::Udp => Box::new(UdpBackend::bind(&cfg.node.listen, b.burst, b.socket_buffer).map_err(|e| e.to_string())?),
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
