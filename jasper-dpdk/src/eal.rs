//! EAL initialization and ports.

use std::ffi::CString;
use std::sync::OnceLock;

use jasper_ffi as ffi;

use crate::mbuf::Mempool;
use crate::{rte_error, DpdkError};

/// Proof that the EAL is initialized (once per process).
#[derive(Debug)]
pub struct Eal {
    args: Vec<String>,
}

static EAL: OnceLock<Result<Eal, DpdkError>> = OnceLock::new();

impl Eal {
    /// Initialize the EAL with `args` (e.g. `["-l", "1", "--no-huge", "-m",
    /// "256", "--vdev=net_ring0"]`). A second call returns the same EAL when
    /// the arguments are equal, an error otherwise (DPDK initializes once per
    /// process).
    pub fn init(args: &[String]) -> Result<&'static Eal, DpdkError> {
        if args.is_empty() {
            return Err(DpdkError {
                op: "rte_eal_init",
                code: libc::EINVAL,
                msg: "no EAL arguments; give at least the core list, e.g. [\"-l\", \"1\"]".into(),
            });
        }
        if let Some(a) = args.iter().find(|a| a.contains('\0')) {
            return Err(DpdkError {
                op: "rte_eal_init",
                code: libc::EINVAL,
                msg: format!("EAL argument {a:?} contains a NUL byte"),
            });
        }
        let r = EAL.get_or_init(|| {
            let mut owned: Vec<CString> = vec![CString::new("jasper").expect("static")];
            owned.extend(args.iter().map(|a| CString::new(a.as_str()).expect("checked above")));
            let mut argv: Vec<*mut libc::c_char> = owned.iter().map(|c| c.as_ptr() as *mut libc::c_char).collect();
            // SAFETY: argv points at NUL-terminated strings that outlive the
            // call (`owned`); rte_eal_init may permute argv but not free it.
            // OnceLock guarantees one call per process.
            let rc = unsafe { ffi::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
            if rc < 0 {
                return Err(crate::last_error("rte_eal_init"));
            }
            // SAFETY: the EAL is initialized.
            let ports = unsafe { ffi::rte_eth_dev_count_avail() };
            if ports == 0 {
                return Err(DpdkError {
                    op: "rte_eal_init",
                    code: libc::ENODEV,
                    msg: "the EAL started but no port was probed: check the --vdev / -a (PCI) arguments and that the NIC is bound to vfio-pci".into(),
                });
            }
            Ok(Eal { args: args.to_vec() })
        });
        match r {
            Ok(e) if e.args == args => Ok(e),
            Ok(e) => Err(DpdkError {
                op: "rte_eal_init",
                code: libc::EALREADY,
                msg: format!(
                    "the EAL is already initialized in this process with {:?}",
                    e.args
                ),
            }),
            Err(e) => Err(e.clone()),
        }
    }

    /// Ports DPDK probed.
    pub fn port_count(&self) -> u16 {
        // SAFETY: `self` proves the EAL is initialized.
        unsafe { ffi::rte_eth_dev_count_avail() }
    }
}

/// A started port with one RX and one TX queue.
#[derive(Debug)]
pub struct Port {
    id: u16,
    mac: [u8; 6],
}

const RX_DESC: u16 = 1024;
const TX_DESC: u16 = 1024;

impl Port {
    /// Configure and start `id`, receiving into `pool`.
    pub fn start(eal: &Eal, id: u16, pool: &Mempool) -> Result<Port, DpdkError> {
        if id >= eal.port_count() {
            return Err(DpdkError {
                op: "rte_eth_dev_configure",
                code: libc::ENODEV,
                msg: format!(
                    "port {id} does not exist: DPDK probed {} port(s)",
                    eal.port_count()
                ),
            });
        }
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: the EAL is initialized and `id` exists; `info` is a valid
        // out-parameter.
        let rc = unsafe { ffi::rte_eth_dev_info_get(id, &mut info) };
        if rc < 0 {
            return Err(rte_error("rte_eth_dev_info_get", rc));
        }
        let mut conf = ffi::rte_eth_conf::default();
        // RTE_ETH_TX_OFFLOAD_MULTI_SEGS is RTE_BIT64(15), a macro bindgen
        // cannot evaluate. Request it where advertised; the software PMDs
        // (ring, null, pcap, af_packet) handle chains without advertising it.
        let multi_segs = 1u64 << 15;
        if info.tx_offload_capa & multi_segs != 0 {
            conf.txmode.offloads = multi_segs;
        }
        // SAFETY: the EAL is initialized (`eal`), `conf` is a valid config
        // that lives through the call.
        let rc = unsafe { ffi::rte_eth_dev_configure(id, 1, 1, &conf) };
        if rc < 0 {
            return Err(rte_error("rte_eth_dev_configure", rc));
        }
        // SAFETY: port configured above.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        // SAFETY: port configured; the pool outlives the port's use of it
        // (the backend owns both and drops the port first).
        let rc = unsafe {
            ffi::rte_eth_rx_queue_setup(id, 0, RX_DESC, socket, std::ptr::null(), pool.as_ptr())
        };
        if rc < 0 {
            return Err(rte_error("rte_eth_rx_queue_setup", rc));
        }
        // SAFETY: port configured.
        let rc = unsafe { ffi::rte_eth_tx_queue_setup(id, 0, TX_DESC, socket, std::ptr::null()) };
        if rc < 0 {
            return Err(rte_error("rte_eth_tx_queue_setup", rc));
        }
        // SAFETY: queues set up.
        let rc = unsafe { ffi::rte_eth_dev_start(id) };
        if rc < 0 {
            return Err(rte_error("rte_eth_dev_start", rc));
        }
        // SAFETY: port started; failure to enable promiscuous mode is harmless.
        unsafe { ffi::rte_eth_promiscuous_enable(id) };
        let mut mac = ffi::rte_ether_addr::default();
        // SAFETY: `mac` is a valid out-parameter.
        unsafe { ffi::rte_eth_macaddr_get(id, &mut mac) };
        Ok(Port {
            id,
            mac: mac.addr_bytes,
        })
    }
    /// Port id.
    pub fn id(&self) -> u16 {
        self.id
    }
    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port was started by `Port::start`; stopping and closing
        // flush PMD state (e.g. net_pcap's output file). Errors at teardown
        // are ignored.
        unsafe {
            ffi::rte_eth_dev_stop(self.id);
            ffi::rte_eth_dev_close(self.id);
        }
    }
}
