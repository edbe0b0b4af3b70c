//! Idle strategies for poll loops (Aeron style). On a 2-core machine a
//! busy-spinning loop starves everything else; `backoff` is the default:
//! keep polling for a budget of idle *time* (`spin_us`), then block until a
//! packet arrives (`ppoll` on the backend's sockets) or the next timer is
//! due, whichever comes first. Backends without file descriptors (DPDK)
//! sleep instead.

use std::os::fd::RawFd;
use std::time::Duration;

pub use jasper_core::config::IdleStrategy;

/// Stateful idler.
#[derive(Debug, Clone)]
pub struct Idler {
    strategy: IdleStrategy,
    max_sleep_ns: u64,
    spin_ns: u64,
    /// Monotonic time of the first idle round since the last work (0: working).
    idle_since_ns: u64,
}

/// Block until one of `fds` is readable or `timeout_ns` passed.
pub fn wait_readable(fds: &[RawFd], timeout_ns: u64) {
    if fds.is_empty() {
        std::thread::sleep(Duration::from_nanos(timeout_ns));
        return;
    }
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `pfds` is a live array of `pfds.len()` pollfd entries, `ts` a
    // live timespec; a null sigmask leaves the signal mask unchanged. The
    // kernel only writes `revents`.
    unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        );
    }
}

impl Idler {
    /// New idler; `max_sleep_us` bounds one wait, `spin_us` is the idle
    /// time the backoff strategy keeps polling before it blocks.
    pub fn new(strategy: IdleStrategy, max_sleep_us: u64, spin_us: u64) -> Self {
        Idler {
            strategy,
            max_sleep_ns: max_sleep_us.max(1).saturating_mul(1_000),
            spin_ns: spin_us.saturating_mul(1_000),
            idle_since_ns: 0,
        }
    }
    /// From a node's backend settings.
    pub fn from_config(b: &jasper_core::config::BackendSection) -> Self {
        Idler::new(b.idle, b.max_sleep_us, b.spin_us)
    }

    /// Call once per loop iteration with the amount of work done.
    /// `wake_in_ns` bounds how long it may wait (next timer); `fds` are the
    /// sockets whose readability ends the wait early.
    pub fn idle(&mut self, work: usize, wake_in_ns: Option<u64>, fds: &[RawFd]) {
        if work > 0 {
            self.idle_since_ns = 0;
            return;
        }
        match self.strategy {
            IdleStrategy::Spin => std::hint::spin_loop(),
            IdleStrategy::Yield => std::thread::yield_now(),
            IdleStrategy::Backoff => {
                if self.spin_ns > 0 {
                    let now = crate::clock::mono_now_ns();
                    if self.idle_since_ns == 0 {
                        self.idle_since_ns = now;
                    }
                    if now.saturating_sub(self.idle_since_ns) < self.spin_ns {
                        std::hint::spin_loop();
                        return;
                    }
                }
                let ns = wake_in_ns.map_or(self.max_sleep_ns, |w| w.min(self.max_sleep_ns));
                if ns > 0 {
                    wait_readable(fds, ns);
                } else {
                    // A timer is due now: let the loop run it.
                    std::hint::spin_loop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    #[test]
    fn wait_ends_when_a_packet_arrives() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        let t = Instant::now();
        wait_readable(&[a.as_raw_fd()], 5_000_000_000);
        assert!(t.elapsed() < Duration::from_secs(4));
    }
}
