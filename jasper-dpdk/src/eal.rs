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
            owned.extend(
                args.iter()
                    .map(|a| CString::new(a.as_str()).expect("checked above")),
            );
            let mut argv: Vec<*mut libc::c_char> = owned
                .iter()
                .map(|c| c.as_ptr() as *mut libc::c_char)
                .collect();
            // SAFETY (rte_eal_init below): argv points at NUL-terminated
            // strings that outlive the call (`owned`); rte_eal_init may
            // permute argv but not free it. OnceLock guarantees one call per
            // process.
            // The EAL says why it failed only in its log (stderr): keep a
            // copy to explain the failure, and still show it to the operator.
            let capture = StderrCapture::start();
            // SAFETY: as above.
            let rc = unsafe { ffi::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
            let log = capture.map(StderrCapture::finish).unwrap_or_default();
            if rc < 0 {
                let mut e = crate::last_error("rte_eal_init");
                if e.code == 0 {
                    e.msg = "the EAL set no error code".into();
                }
                if let Some(d) = diagnose(e.code, args, &log, &HostFacts::read()) {
                    e.msg = format!("{}. {d}", e.msg);
                }
                return Err(e);
            }
            // SAFETY: the EAL is initialized.
            let ports = unsafe { ffi::rte_eth_dev_count_avail() };
            if ports == 0 {
                return Err(DpdkError {
                    op: "rte_eal_init",
                    code: libc::ENODEV,
                    msg: format!(
                        "the EAL started but no port was probed. {}",
                        no_port_hint(args)
                    ),
                });
            }
            Ok(Eal {
                args: args.to_vec(),
            })
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

/// Copies what the process writes to stderr (fd 2) while the EAL starts:
/// fd 2 points at an anonymous memory file meanwhile, and everything is
/// written to the real stderr afterwards.
struct StderrCapture {
    saved: libc::c_int,
    mem: libc::c_int,
}

impl StderrCapture {
    /// `None` when fd 2 cannot be redirected (the EAL then logs as usual).
    fn start() -> Option<Self> {
        // SAFETY: plain syscalls on file descriptors this function owns;
        // the name is a NUL-terminated literal. On any failure the
        // descriptors opened so far are closed and fd 2 is left as it was.
        unsafe {
            let mem = libc::memfd_create(c"jasper-eal-log".as_ptr(), libc::MFD_CLOEXEC);
            if mem < 0 {
                return None;
            }
            let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
            if saved < 0 {
                libc::close(mem);
                return None;
            }
            if libc::dup2(mem, 2) < 0 {
                libc::close(mem);
                libc::close(saved);
                return None;
            }
            Some(StderrCapture { saved, mem })
        }
    }

    /// Restore fd 2, replay what was captured to it, and return it.
    fn finish(self) -> String {
        let mut out = Vec::new();
        // SAFETY: `saved` and `mem` are open descriptors owned by `self`;
        // the buffer outlives each read and its length bounds the read.
        unsafe {
            libc::dup2(self.saved, 2);
            libc::close(self.saved);
            let mut buf = [0u8; 4096];
            let mut off: libc::off_t = 0;
            loop {
                let n = libc::pread(self.mem, buf.as_mut_ptr().cast(), buf.len(), off);
                if n <= 0 || out.len() > 1 << 20 {
                    break;
                }
                out.extend_from_slice(&buf[..n as usize]);
                off += n as libc::off_t;
            }
            libc::close(self.mem);
        }
        use std::io::Write;
        let _ = std::io::stderr().write_all(&out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// What the host looks like, for explaining an EAL failure (read only when
/// one happens).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Effective user id of the process.
    pub euid: u32,
    /// `HugePages_Total` from `/proc/meminfo` (`None`: unreadable).
    pub hugepages_total: Option<u64>,
    /// `HugePages_Free` from `/proc/meminfo`.
    pub hugepages_free: Option<u64>,
    /// `/dev/vfio/vfio` exists (the vfio-pci module is loaded).
    pub vfio: bool,
}

impl HostFacts {
    /// Read them from this host.
    pub fn read() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        };
        HostFacts {
            // SAFETY: geteuid has no preconditions and cannot fail.
            euid: unsafe { libc::geteuid() },
            hugepages_total: field("HugePages_Total:"),
            hugepages_free: field("HugePages_Free:"),
            vfio: std::path::Path::new("/dev/vfio/vfio").exists(),
        }
    }
}

/// The likely cause of an EAL failure and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalHint {
    /// What most likely went wrong.
    pub cause: String,
    /// What to change.
    pub fix: String,
}

impl std::fmt::Display for EalHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Likely cause: {}. Fix: {}", self.cause, self.fix)
    }
}

/// The value of an EAL option given as `--opt value` or `--opt=value`.
fn arg_value<'a>(args: &'a [String], names: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        for n in names {
            if a == n {
                if let Some(v) = it.clone().next() {
                    out.push(v.as_str());
                }
            } else if let Some(v) = a.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                out.push(v);
            }
        }
    }
    out
}

fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}

const BIND_FIX: &str = "modprobe vfio-pci, then `dpdk-devbind.py --bind=vfio-pci <PCI>` \
     (on instances without an IOMMU, such as most AWS ENA ones, first \
     `echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode`); \
     `dpdk-devbind.py --status` shows what is bound; keep the management NIC on the kernel \
     (the Ansible prepare_host role does this from the inventory's dpdk.pci)";

const CAPS_FIX: &str = "run the node as its service user with the DPDK drop-in \
     (deploy/systemd/dpdk.conf: CAP_IPC_LOCK, LimitMEMLOCK=infinity, the VFIO devices \
     owned by the jasper group; with vfio in no-IOMMU mode also CAP_SYS_RAWIO and \
     CAP_SYS_ADMIN), or as root to confirm it is a permission problem";

/// What to say when the EAL started but probed no port.
fn no_port_hint(args: &[String]) -> EalHint {
    let pci = arg_value(args, &["-a", "--allow", "-w", "--pci-whitelist"]);
    let vdevs = arg_value(args, &["--vdev"]);
    if !vdevs.is_empty() {
        EalHint {
            cause: format!("the virtual device(s) {vdevs:?} failed to probe"),
            fix: "check the driver name and its arguments (e.g. net_af_packet0,iface=<an existing interface>); the EAL log above says why".into(),
        }
    } else if !pci.is_empty() {
        EalHint {
            cause: format!(
                "the NIC {} is not bound to vfio-pci, or the address is wrong",
                pci.join(", ")
            ),
            fix: BIND_FIX.replace("<PCI>", pci[0]),
        }
    } else if has_flag(args, "--no-pci") {
        EalHint {
            cause: "--no-pci and no --vdev leave DPDK without any port".into(),
            fix:
                "name the NIC with -a <PCI address> (from the inventory's dpdk.pci) or add a --vdev"
                    .into(),
        }
    } else {
        EalHint {
            cause: "no NIC is bound to vfio-pci".into(),
            fix: format!("{BIND_FIX}, and name it with -a <PCI>"),
        }
    }
}

/// Explain a port that fails to start (`rte_eth_dev_start`), or `None`.
pub fn port_start_hint(code: i32) -> Option<EalHint> {
    (code == libc::EPERM || code == libc::EACCES).then(|| EalHint {
        cause: "the driver may not configure its interface: kernel-backed drivers (net_af_packet, net_af_xdp, net_tap) set the MAC address and promiscuous mode through the kernel".into(),
        fix: "give the node CAP_NET_RAW and CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN), or use a NIC bound to vfio-pci".into(),
    })
}

/// Explain an EAL failure from its error code (`rte_errno`), the arguments,
/// the EAL's own log and the host, or `None` when nothing fits (DPDK's
/// message stands alone). Pure: [`Eal::init`] gathers the inputs.
pub fn diagnose(code: i32, args: &[String], log: &str, host: &HostFacts) -> Option<EalHint> {
    let log_lc = log.to_ascii_lowercase();
    let said = |s: &str| log_lc.contains(&s.to_ascii_lowercase());
    let no_huge = has_flag(args, "--no-huge");
    let in_memory = has_flag(args, "--in-memory");
    let prefix = arg_value(args, &["--file-prefix"])
        .first()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "rte".into());
    let hint = |cause: String, fix: String| Some(EalHint { cause, fix });

    if code == libc::EALREADY || said("already called initialization") {
        return hint(
            "the EAL was already initialized in this process".into(),
            "run each DPDK node in its own process (one EAL per process)".into(),
        );
    }
    if said("is another primary process running") || said("cannot create lock on") {
        return hint(
            format!("another DPDK process on this host uses the same --file-prefix ({prefix:?}) and holds its runtime files"),
            format!("give every DPDK process its own --file-prefix, or add --in-memory (hugepages) or --no-shconf (with --no-huge) so none shares state; if no other DPDK process runs, remove the stale /var/run/dpdk/{prefix}"),
        );
    }
    if said("cannot create runtime directory") {
        return hint(
            "the EAL cannot create its runtime directory (/var/run/dpdk as root; $XDG_RUNTIME_DIR or /tmp for other users)".into(),
            "run the node as the unprivileged service user (its runtime directory is then in the unit's private /tmp), or make that directory writable (systemd: RuntimeDirectory=dpdk)".into(),
        );
    }
    let hugepage_failure = !no_huge
        && (said("cannot get hugepage information")
            || said("no available") && said("hugepages reported")
            || said("no free") && said("hugepages")
            || (code == libc::EACCES && host.hugepages_total == Some(0)));
    if hugepage_failure {
        let reserve = "reserve hugepages as root (`echo 1024 > /proc/sys/vm/nr_hugepages`; deploy/prepare-host.sh --dpdk and the prepare_host role keep them across boots) and keep --in-memory in eal_args, or run without hugepages: --no-huge -m 256 --no-shconf (tests and low rates only)";
        if host.hugepages_total == Some(0) {
            return hint(
                "no hugepages are reserved on this host (HugePages_Total is 0), and eal_args lack --no-huge".into(),
                reserve.into(),
            );
        }
        if host.hugepages_free == Some(0) {
            return hint(
                format!("every reserved hugepage is in use (HugePages_Total {}, HugePages_Free 0)", host.hugepages_total.unwrap_or(0)),
                "stop what holds them (another DPDK process?) or reserve more: `echo <more> > /proc/sys/vm/nr_hugepages`".into(),
            );
        }
        if !in_memory && (said("no mounted hugetlbfs") || said("not mounted")) {
            return hint(
                "hugepages are reserved but no hugetlbfs is mounted".into(),
                "add --in-memory to eal_args (no mount needed), or mount hugetlbfs writable by the service user (`mount -t hugetlbfs -o gid=jasper,mode=1770 nodev /dev/hugepages`)".into(),
            );
        }
        if host.euid != 0 && !in_memory {
            return hint(
                "the service user cannot use the hugepage mount".into(),
                "add --in-memory to eal_args (hugepages through memfd, no mount), or mount hugetlbfs with the user's uid/gid".into(),
            );
        }
        return hint("the EAL found no usable hugepages".into(), reserve.into());
    }
    if said("/dev/vfio") && (said("permission denied") || said("operation not permitted"))
        || said("vfio group is not viable")
    {
        return hint(
            "the process cannot open the VFIO devices".into(),
            "give the service user the device group (a udev rule: SUBSYSTEM==\"vfio\", GROUP=\"jasper\", MODE=\"0660\"; the prepare_host role writes it), allow them in the unit (DeviceAllow=char-vfio rw, in deploy/systemd/dpdk.conf); vfio in no-IOMMU mode also needs CAP_SYS_RAWIO".into(),
        );
    }
    if said("cannot init memory") || said("cannot use iova as 'pa'") || code == libc::ENOMEM {
        if said("pagemap") || said("iova as 'pa'") || said("physical addresses are not available") {
            return hint(
                "the EAL needs physical addresses (IOVA as PA) but this process may not read /proc/self/pagemap".into(),
                "use vfio-pci with an IOMMU and add --iova-mode=va, or grant CAP_SYS_ADMIN and CAP_IPC_LOCK (deploy/systemd/dpdk.conf, no-IOMMU lines)".into(),
            );
        }
        if said("mlock") || said("memlock") || (host.euid != 0 && code == libc::ENOMEM) {
            return hint(
                "the locked-memory limit is too low for DPDK's memory".into(),
                "LimitMEMLOCK=infinity in the unit (the jasper units set it) or CAP_IPC_LOCK; in a shell, `ulimit -l unlimited`".into(),
            );
        }
        return hint(
            format!(
                "not enough hugepage memory for the requested -m / --socket-mem ({} free hugepages)",
                host.hugepages_free.map_or("unknown".into(), |n| n.to_string())
            ),
            "reserve more hugepages or lower -m in eal_args".into(),
        );
    }
    if said("cannot probe devices")
        || said("cannot be used")
        || code == libc::ENOTSUP
        || code == libc::ENODEV
    {
        let mut h = no_port_hint(args);
        if !host.vfio {
            h.cause
                .push_str(" (there is no /dev/vfio/vfio: the vfio-pci module is not loaded)");
        }
        return Some(h);
    }
    if said("unable to parse device") || said("failed to parse device") {
        let mut named: Vec<&str> = log
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("parse device"))
            .filter_map(|l| l.split(['"', '\'']).nth(1))
            .collect();
        named.dedup();
        return hint(
            format!("the EAL cannot parse the device {named:?}: an unknown driver or bad arguments"),
            "check the -a PCI address (DDDD:BB:DD.F) or the --vdev driver name and arguments (net_af_packet0,iface=…; the drivers are under /usr/lib/x86_64-linux-gnu/dpdk/)".into(),
        );
    }
    if said("invalid 'command line' arguments")
        || said("invalid core")
        || said("not managed by eal")
        || said("unavailable")
        || code == libc::EINVAL
    {
        let cores = arg_value(args, &["-l", "--lcores", "-c"]);
        return hint(
            format!("the EAL rejected eal_args {args:?}"),
            format!(
                "check the node's [backend.dpdk] eal_args (from the inventory's dpdk.lcores and dpdk.pci): the core list {cores:?} must name CPUs this process may run on (nproc; the unit's CPUAffinity=), a PCI address reads DDDD:BB:DD.F; the EAL log above names the bad one"
            ),
        );
    }
    if code == libc::EACCES || code == libc::EPERM {
        if host.euid != 0 {
            return hint(
                format!(
                    "permission denied to an unprivileged user (uid {})",
                    host.euid
                ),
                CAPS_FIX.into(),
            );
        }
        return hint(
            "permission denied although running as root: a sandbox (systemd ProtectSystem=, PrivateDevices=, DevicePolicy=) hides hugepages, /dev/vfio or /var/run/dpdk".into(),
            "use the DPDK drop-in deploy/systemd/dpdk.conf, which opens exactly those, and --in-memory".into(),
        );
    }
    None
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
            let mut e = rte_error("rte_eth_dev_start", rc);
            if let Some(h) = port_start_hint(e.code) {
                e.msg = format!("{}. {h}", e.msg);
            }
            return Err(e);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn root() -> HostFacts {
        HostFacts {
            euid: 0,
            hugepages_total: Some(1024),
            hugepages_free: Some(1024),
            vfio: true,
        }
    }

    const NIC: &str = "-l 1 -a 0000:00:06.0 --in-memory";

    #[test]
    fn no_hugepages_says_reserve_or_no_huge() {
        // What DPDK 22.11 printed here with HugePages_Total 0 (rte_errno EACCES).
        let log = "EAL: Detected CPU lcores: 2\nEAL: Detected NUMA nodes: 1\nEAL: Detected shared linkage of DPDK\nEAL: Selected IOVA mode 'PA'\nEAL: FATAL: Cannot get hugepage information.\nEAL: Cannot get hugepage information.\n";
        let host = HostFacts {
            hugepages_total: Some(0),
            hugepages_free: Some(0),
            ..root()
        };
        let h = diagnose(libc::EACCES, &args(NIC), log, &host).unwrap();
        assert!(h.cause.contains("no hugepages"), "{h}");
        assert!(
            h.fix.contains("nr_hugepages") && h.fix.contains("--no-huge"),
            "{h}"
        );
        // Even with no log at all, the code and the host tell.
        let h = diagnose(libc::EACCES, &args(NIC), "", &host).unwrap();
        assert!(h.cause.contains("no hugepages"), "{h}");
        // With --no-huge, hugepages are not the problem.
        let h = diagnose(libc::EACCES, &args("-l 1 --no-huge -m 256"), "", &host);
        assert!(!h.is_some_and(|h| h.cause.contains("no hugepages")));
    }

    #[test]
    fn hugepages_in_use_or_unmounted() {
        let log = "EAL: FATAL: Cannot get hugepage information.\n";
        let busy = HostFacts {
            hugepages_free: Some(0),
            ..root()
        };
        let h = diagnose(libc::EACCES, &args(NIC), log, &busy).unwrap();
        assert!(h.cause.contains("in use"), "{h}");
        let log = "EAL: 1024 hugepages of size 2097152 reserved, but no mounted hugetlbfs found for that size\nEAL: FATAL: Cannot get hugepage information.\n";
        let h = diagnose(libc::EACCES, &args("-l 1 -a 0000:00:06.0"), log, &root()).unwrap();
        assert!(h.cause.contains("no hugetlbfs"), "{h}");
        assert!(h.fix.contains("--in-memory"), "{h}");
    }

    #[test]
    fn file_prefix_clash_names_the_prefix() {
        // Seen here with two processes on one prefix (rte_errno left at 0).
        let log = "EAL: Cannot create lock on '/var/run/dpdk/proxy1/config'. Is another primary process running?\nEAL: FATAL: Cannot init config\nEAL: Cannot init config\n";
        let a = args("-l 1 --no-huge -m 256 --file-prefix proxy1");
        let h = diagnose(0, &a, log, &root()).unwrap();
        assert!(h.cause.contains("\"proxy1\""), "{h}");
        assert!(
            h.fix.contains("--file-prefix") && h.fix.contains("/var/run/dpdk/proxy1"),
            "{h}"
        );
        // The default prefix is "rte".
        let h = diagnose(0, &args("-l 1"), log, &root()).unwrap();
        assert!(h.cause.contains("\"rte\""), "{h}");
    }

    #[test]
    fn permission_problems_name_capabilities_or_the_sandbox() {
        let user = HostFacts {
            euid: 998,
            ..root()
        };
        let h = diagnose(libc::EACCES, &args(NIC), "", &user).unwrap();
        assert!(h.cause.contains("unprivileged"), "{h}");
        assert!(
            h.fix.contains("CAP_IPC_LOCK") && h.fix.contains("dpdk.conf"),
            "{h}"
        );
        let h = diagnose(libc::EACCES, &args(NIC), "", &root()).unwrap();
        assert!(h.cause.contains("sandbox"), "{h}");
        let log =
            "EAL: Cannot create runtime directory\nEAL: FATAL: Cannot create runtime directory\n";
        let h = diagnose(libc::EACCES, &args(NIC), log, &root()).unwrap();
        assert!(h.cause.contains("runtime directory"), "{h}");
        let log =
            "EAL: Failed to open VFIO group 12\nEAL: Cannot open /dev/vfio/12: Permission denied\n";
        let h = diagnose(libc::EACCES, &args(NIC), log, &user).unwrap();
        assert!(h.cause.contains("VFIO"), "{h}");
        assert!(
            h.fix.contains("udev") && h.fix.contains("CAP_SYS_RAWIO"),
            "{h}"
        );
    }

    #[test]
    fn physical_addresses_and_memlock() {
        let user = HostFacts {
            euid: 998,
            ..root()
        };
        let log = "EAL: rte_mem_virt2phy(): cannot open /proc/self/pagemap: Permission denied\nEAL: Cannot use IOVA as 'PA' since physical addresses are not available\n";
        let h = diagnose(libc::EINVAL, &args(NIC), log, &user).unwrap();
        assert!(
            h.fix.contains("--iova-mode=va") && h.fix.contains("CAP_SYS_ADMIN"),
            "{h}"
        );
        let h = diagnose(libc::ENOMEM, &args(NIC), "EAL: Cannot init memory\n", &user).unwrap();
        assert!(h.fix.contains("LimitMEMLOCK"), "{h}");
        let h = diagnose(
            libc::ENOMEM,
            &args(NIC),
            "EAL: Cannot init memory\n",
            &root(),
        )
        .unwrap();
        assert!(h.cause.contains("1024 free hugepages"), "{h}");
    }

    #[test]
    fn unbound_device_says_devbind() {
        let log =
            "EAL: Requested device 0000:00:06.0 cannot be used\nEAL: FATAL: Cannot probe devices\n";
        let h = diagnose(libc::ENOTSUP, &args(NIC), log, &root()).unwrap();
        assert!(h.cause.contains("0000:00:06.0"), "{h}");
        assert!(
            h.fix
                .contains("dpdk-devbind.py --bind=vfio-pci 0000:00:06.0"),
            "{h}"
        );
        let no_vfio = HostFacts {
            vfio: false,
            ..root()
        };
        let h = diagnose(libc::ENOTSUP, &args(NIC), log, &no_vfio).unwrap();
        assert!(h.cause.contains("not loaded"), "{h}");
        // Started, but nothing probed.
        assert!(no_port_hint(&args("-l 1 --allow=0000:00:07.0"))
            .fix
            .contains("0000:00:07.0"));
        assert!(no_port_hint(&args("-l 1 --vdev=net_af_packet0,iface=x"))
            .cause
            .contains("net_af_packet0"));
        assert!(no_port_hint(&args("-l 1 --no-pci"))
            .cause
            .contains("--no-pci"));
    }

    #[test]
    fn a_port_the_kernel_will_not_configure_needs_net_admin() {
        // Seen with net_af_packet as an unprivileged user: the EAL started,
        // rte_eth_dev_start failed with EPERM.
        let h = port_start_hint(libc::EPERM).unwrap();
        assert!(
            h.fix.contains("CAP_NET_ADMIN") && h.fix.contains("CAP_NET_RAW"),
            "{h}"
        );
        assert_eq!(port_start_hint(libc::EIO), None);
    }

    #[test]
    fn bad_arguments_point_at_the_core_list() {
        let log = "EAL: lcore 7 unavailable\nEAL: invalid core list syntax\n";
        let h = diagnose(libc::EINVAL, &args("-l 7 -a 0000:00:06.0"), log, &root()).unwrap();
        assert!(
            h.fix.contains("[\"7\"]") && h.fix.contains("dpdk.lcores"),
            "{h}"
        );
        // Seen here with --vdev=net_nosuchdriver0.
        let log = "EAL: failed to parse device \"net_nosuchdriver0\"\nEAL: Unable to parse device 'net_nosuchdriver0'\n";
        let h = diagnose(
            libc::EINVAL,
            &args("-l 0 --vdev=net_nosuchdriver0"),
            log,
            &root(),
        )
        .unwrap();
        assert!(h.cause.contains("[\"net_nosuchdriver0\"]:"), "{h}");
        let h = diagnose(libc::EALREADY, &args(NIC), "", &root()).unwrap();
        assert!(h.fix.contains("own process"), "{h}");
        // Nothing recognisable: DPDK's own message stands alone.
        assert_eq!(
            diagnose(libc::EIO, &args(NIC), "EAL: something else\n", &root()),
            None
        );
    }
}
