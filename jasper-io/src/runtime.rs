//! Process plumbing shared by the node binaries: a stop flag set by
//! SIGINT/SIGTERM/SIGHUP, and noticing that the managing parent died.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag that becomes true on SIGINT, SIGTERM or SIGHUP. Only one handler
/// can be installed per process; later calls return a fresh flag that is
/// never set by signals (callers share the first one instead).
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
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
