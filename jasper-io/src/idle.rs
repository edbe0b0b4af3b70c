//! Idle strategies for poll loops (Aeron style). On a 2-core machine a
//! busy-spinning loop starves everything else; `backoff` is the default.

use std::time::Duration;

pub use jasper_core::config::IdleStrategy;

/// Stateful idler.
#[derive(Debug, Clone)]
pub struct Idler {
    strategy: IdleStrategy,
    max_sleep_ns: u64,
    idle_rounds: u32,
}

const SPIN_ROUNDS: u32 = 64;
const YIELD_ROUNDS: u32 = 16;

impl Idler {
    /// New idler; `max_sleep_us` bounds backoff sleeps.
    pub fn new(strategy: IdleStrategy, max_sleep_us: u64) -> Self {
        Idler {
            strategy,
            max_sleep_ns: max_sleep_us.max(1) * 1_000,
            idle_rounds: 0,
        }
    }

    /// Call once per loop iteration with the amount of work done.
    /// `wake_in_ns` bounds how long it may sleep (next timer).
    pub fn idle(&mut self, work: usize, wake_in_ns: Option<u64>) {
        if work > 0 {
            self.idle_rounds = 0;
            return;
        }
        self.idle_rounds = self.idle_rounds.saturating_add(1);
        match self.strategy {
            IdleStrategy::Spin => std::hint::spin_loop(),
            IdleStrategy::Yield => std::thread::yield_now(),
            IdleStrategy::Backoff => {
                if self.idle_rounds <= SPIN_ROUNDS {
                    std::hint::spin_loop();
                } else if self.idle_rounds <= SPIN_ROUNDS + YIELD_ROUNDS {
                    std::thread::yield_now();
                } else {
                    let exp = (self.idle_rounds - SPIN_ROUNDS - YIELD_ROUNDS).min(16);
                    let mut ns = (1_000u64 << exp).min(self.max_sleep_ns);
                    if let Some(w) = wake_in_ns {
                        ns = ns.min(w);
                    }
                    if ns > 0 {
                        std::thread::sleep(Duration::from_nanos(ns));
                    }
                }
            }
        }
    }
}
