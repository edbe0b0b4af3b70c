//! Fault scenarios beyond the cloud model's link faults (stalled and
//! crashed proxies, chosen losses, clock steps) and the random scenarios of
//! the swarm test.

use jasper_core::model::{rng, CloudModel};
use jasper_core::plan::NodeId;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::SimParams;

/// Proxy stall: proxies at these plan positions (index among all proxies,
/// root = 0) delay messages `from_msg..to_msg` by `stall_ns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// Proxy positions.
    pub proxies: Vec<usize>,
    /// First message affected.
    pub from_msg: u64,
    /// One past the last message affected.
    pub to_msg: u64,
    /// Added delay.
    pub stall_ns: u64,
}

/// Chosen losses: proxies at these plan positions (index among all
/// proxies, root = 0) forward no copy of messages `from_msg..to_msg` (by
/// sequence, like [`Stall`]). With one root, losing them at the root loses
/// every copy on every path: a deterministic loss, unlike the model's
/// per-link `loss` probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    /// Proxy positions.
    pub proxies: Vec<usize>,
    /// First message lost.
    pub from_msg: u64,
    /// One past the last message lost.
    pub to_msg: u64,
}

/// Faults beyond the model's link faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Stalled proxies.
    pub stalls: Vec<Stall>,
    /// Messages chosen to be lost at chosen proxies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub losses: Vec<Loss>,
    /// (proxy position, time since start in ns): the proxy drops everything from then on.
    pub crashes: Vec<(usize, u64)>,
    /// (node id, time since start, step ns): the node's clock offset jumps
    /// and stays off (nothing keeps it within its bound).
    pub clock_steps: Vec<(NodeId, u64, i64)>,
    /// Authenticated nodes under attack (forged, replayed, insider packets).
    #[serde(default)]
    pub byzantine: Option<crate::byzantine::Byzantine>,
}

impl Faults {
    /// Whether the proxy at plan position `pos` loses the message with
    /// sequence `seq` ([`Faults::losses`]).
    pub fn loses(&self, pos: usize, seq: u64) -> bool {
        self.losses
            .iter()
            .any(|l| l.proxies.contains(&pos) && (l.from_msg..l.to_msg).contains(&seq))
    }
}

/// Draw a random fault scenario from `seed` (for swarm testing).
pub fn random_scenario(seed: u64) -> SimParams {
    let mut r = rng(seed ^ 0x5EED_5EED);
    let receivers = r.random_range(4..=120);
    let messages = r.random_range(50..=300);
    let mut model = CloudModel {
        loss: [0.0, 1e-4, 1e-3, 1e-2][r.random_range(0..4)],
        duplicate: [0.0, 1e-3, 1e-2][r.random_range(0..3)],
        reorder: [0.0, 1e-2, 5e-2][r.random_range(0..3)],
        slow_rate_per_s: [0.0, 0.1, 20.0][r.random_range(0..3)],
        ..CloudModel::default()
    };
    model.clock.class = [
        jasper_core::clock::ClockClass::Huygens,
        jasper_core::clock::ClockClass::Ptp,
        jasper_core::clock::ClockClass::Ntp,
    ][r.random_range(0..3)];
    model.clock.drift_ppb = [0.0, 100.0][r.random_range(0..2)];
    let mut faults = Faults::default();
    if r.random_bool(0.3) {
        faults.stalls.push(Stall {
            proxies: vec![r.random_range(0..3)],
            from_msg: r.random_range(0..messages),
            to_msg: messages,
            stall_ns: 300_000,
        });
    }
    if r.random_bool(0.2) {
        faults
            .crashes
            .push((r.random_range(1..4), r.random_range(0..20_000_000)));
    }
    if r.random_bool(0.3) {
        // A node's clock steps mid-run, by up to 4 × its bound: clocks break
        // their promise, and the run must report it, not pass by construction.
        let node = r.random_range(1..(receivers as u32 + 4));
        let b = model.clock.bound_ns() as i64;
        faults.clock_steps.push((
            node,
            r.random_range(0..20_000_000),
            r.random_range(-4 * b..=4 * b),
        ));
    }
    // Clock tails and steps: none, the reference rates, or frequent.
    let (tail, steps) = [(0.0, 0.0), (1e-4, 1e-3), (1e-2, 1.0)][r.random_range(0..3)];
    model.clock.tail_prob = tail;
    model.clock.step_rate_per_s = steps;
    // Level 2 has ceil(R / F) ≈ √R proxies; H must leave room for siblings.
    let fanout = ((receivers as f64).sqrt().ceil() as u32).max(2);
    let level2 = (receivers as u32).div_ceil(fanout);
    let hedge = r.random_range(0..=2).min(level2.saturating_sub(1));
    // Byzantine injectors: an outsider (maybe forging sources) or an insider
    // holding MP 0's keys (from its own address: the covered case).
    if r.random_bool(0.4) {
        let insider = r.random_bool(0.5);
        faults.byzantine = Some(crate::byzantine::Byzantine {
            injections: r.random_range(50..=500),
            insider_mp: insider.then_some(0),
            spoof: !insider && r.random_bool(0.5),
        });
    }
    SimParams {
        receivers,
        messages,
        rate: [2000.0, 5000.0, 20000.0][r.random_range(0..3)],
        seed,
        depth: Some(2),
        fanout: Some(fanout),
        hedge: Some(hedge),
        spray: Some(r.random_bool(0.5)),
        model,
        faults,
        // Drawn last, so the earlier draws (and their seeds' scenarios) stay.
        roots: Some(r.random_range(1..=2)),
        recovery: r.random_bool(0.5),
        publishers: r.random_range(1..=3),
        ..SimParams::default()
    }
}
