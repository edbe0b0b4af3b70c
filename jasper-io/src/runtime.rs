//! Process plumbing shared by the node binaries: a stop flag set by
//! SIGINT/SIGTERM, a reload flag set by SIGHUP, and noticing that the
//! managing parent died.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A flag that becomes true on SIGINT or SIGTERM (SIGHUP is a reload:
/// [`reload_on_sighup`]). Every call registers its own flag.
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// Also set `flag` on SIGHUP (a process with nothing to reload, such as a
/// publisher run, ends on a hangup).
pub fn stop_on_hangup(flag: &Arc<AtomicBool>) {
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, flag.clone());
}

/// A flag set on every SIGHUP: the node re-reads its config and takes the
/// new forwarding table, sources and keys without restarting (the caller
/// clears it after reloading).
pub fn reload_on_sighup() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, flag.clone());
    flag
}

/// Notices when the process that started us exits (so managed children of
/// `jasper local` never outlive it).
#[derive(Debug, Clone, Copy)]
pub struct ParentWatch {
    parent: u32,
    enabled: bool,
}

impl ParentWatch {
    /// Watch the current parent when `enabled`.
    pub fn new(enabled: bool) -> Self {
        ParentWatch {
            parent: std::os::unix::process::parent_id(),
            enabled,
        }
    }
    /// True once the parent is gone.
    pub fn parent_gone(&self) -> bool {
        self.enabled && std::os::unix::process::parent_id() != self.parent
    }
}

/// Make `nanosleep` precise (timer slack 1 µs instead of the default 50 µs),
/// so poll loops can sleep until shortly before a deadline instead of
/// spinning. Best effort; returns false if the kernel refused.
pub fn precise_sleep() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long value and no pointers;
    // it only changes this thread's timer slack (inherited by threads
    // created afterwards).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0) == 0 }
}

/// Say so on stderr when a node's clock is not synchronized: deadlines are in
/// synchronized time, so fairness cannot be claimed. The node still runs and
/// its reports carry the status.
pub fn warn_if_unsynchronized(name: &str, clock: &dyn jasper_core::clock::Clock) {
    let status = clock.status();
    if status != jasper_core::clock::ClockStatus::Synchronized {
        eprintln!(
            "warning: {name}: clock is {} (error bound {} ns): releases are not fair until it synchronizes (chrony/PTP; see deploy/prepare-host.sh)",
            status.name(),
            clock.error_bound_ns()
        );
    }
}

/// Say loudly, at start-up, that a node runs without authentication.
pub fn warn_if_insecure(name: &str, authenticated: bool) {
    if !authenticated {
        eprintln!(
            "warning: {name}: NOT authenticated ([trust] insecure = true): any host that can reach it controls it; create keys with `jasper keys`"
        );
    }
}
