//! Upstream liveness: which of a node's upstreams went silent.
//!
//! A node feeds [`Liveness::heard`] with the source of every packet its
//! guard admitted (forged packets keep nothing alive) and calls
//! [`Liveness::poll`] now and then. An upstream that was heard and then
//! stays silent for `dead_after_ns` is marked dead (counted and named); it
//! comes back to life with its next authentic packet.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::plan::NodeId;

/// Packets overtaken by their end of session still arrive this long after it.
const ENDED_REORDER_NS: u64 = 100_000_000;

/// The state of one upstream, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamState {
    /// Plan id.
    pub node: NodeId,
    /// Heard at least once.
    pub heard: bool,
    /// Silent for longer than the limit.
    pub dead: bool,
    /// Times it was marked dead.
    pub deaths: u64,
    /// Last authentic packet (local synchronized ns; 0 = never).
    pub last_ns: u64,
    /// Its last packet ended the session: silence is expected, not death.
    pub ended: bool,
}

/// Liveness of a node's upstreams.
#[derive(Debug, Clone)]
pub struct Liveness {
    addrs: Vec<SocketAddr>,
    ended_at: Vec<u64>,
    /// When any upstream was first heard (0 = none yet).
    first_heard_ns: u64,
    states: Vec<UpstreamState>,
    dead_after_ns: u64,
}

impl Liveness {
    /// Track these upstreams.
    pub fn new(upstreams: &[(NodeId, SocketAddr)], dead_after_ns: u64) -> Liveness {
        Liveness {
            addrs: upstreams.iter().map(|u| u.1).collect(),
            ended_at: vec![0; upstreams.len()],
            first_heard_ns: 0,
            states: upstreams
                .iter()
                .map(|(node, _)| UpstreamState {
                    node: *node,
                    heard: false,
                    dead: false,
                    deaths: 0,
                    last_ns: 0,
                    ended: false,
                })
                .collect(),
            dead_after_ns,
        }
    }

    /// An admitted packet from `src` at `now_ns`; `ends` when it is an end
    /// of session (after which silence is expected).
    #[inline]
    pub fn heard(&mut self, now_ns: u64, src: SocketAddr, ends: bool) {
        if let Some(i) = self.addrs.iter().position(|a| *a == src) {
            if self.first_heard_ns == 0 {
                self.first_heard_ns = now_ns.max(1);
            }
            let s = &mut self.states[i];
            s.heard = true;
            s.dead = false;
            if ends {
                s.ended = true;
                self.ended_at[i] = now_ns;
            } else if s.ended && now_ns.saturating_sub(self.ended_at[i]) > ENDED_REORDER_NS {
                // A packet well after the end of session: a new session.
                s.ended = false;
            }
            s.last_ns = now_ns;
        }
    }

    /// Mark upstreams silent for too long; returns how many died just now.
    pub fn poll(&mut self, now_ns: u64) -> usize {
        let mut died = 0;
        // An upstream never heard while the others have been talking for
        // longer than the limit is dead too (e.g. it died before this node
        // started).
        let others_talk = self.first_heard_ns != 0
            && now_ns.saturating_sub(self.first_heard_ns) > self.dead_after_ns
            && self.states.iter().any(|s| s.heard && !s.dead && !s.ended);
        for s in &mut self.states {
            if !s.heard && !s.dead && others_talk {
                s.dead = true;
                s.deaths += 1;
                died += 1;
                continue;
            }
            if s.heard
                && !s.dead
                && !s.ended
                && now_ns.saturating_sub(s.last_ns) > self.dead_after_ns
            {
                s.dead = true;
                s.deaths += 1;
                died += 1;
            }
        }
        died
    }

    /// Every upstream's state.
    pub fn states(&self) -> &[UpstreamState] {
        &self.states
    }

    /// Ids of the upstreams currently dead.
    pub fn dead(&self) -> Vec<NodeId> {
        self.states
            .iter()
            .filter(|s| s.dead)
            .map(|s| s.node)
            .collect()
    }

    /// Deaths so far, all upstreams.
    pub fn deaths(&self) -> u64 {
        self.states.iter().map(|s| s.deaths).sum()
    }
}

/// True when an admitted packet is an end of session (for [`Liveness::heard`]).
pub fn ends_session(repr: &crate::wire::Repr<'_>) -> bool {
    matches!(
        repr.body,
        crate::wire::Body::Control(c) if c.op == crate::wire::ControlOp::EndOfSession
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_upstreams_die_and_revive() {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let c: SocketAddr = "10.0.0.3:1".parse().unwrap();
        let mut never = Liveness::new(&[(1, a), (3, c)], 100);
        assert_eq!(never.poll(1_000), 0, "nobody heard yet: not dead");
        never.heard(1_000, a, false);
        assert_eq!(never.poll(1_050), 0);
        never.heard(1_150, a, false);
        assert_eq!(never.poll(1_200), 1, "silent while its sibling talks");
        assert_eq!(never.dead(), vec![3]);
        let mut l = Liveness::new(&[(1, a), (2, b)], 100);
        assert_eq!(l.poll(1_000), 0, "never heard: not dead");
        l.heard(1_000, a, false);
        l.heard(1_000, b, false);
        l.heard(1_000, "10.0.0.9:1".parse().unwrap(), false);
        l.heard(1_150, b, true);
        assert_eq!(l.poll(1_200), 1);
        assert_eq!(l.dead(), vec![1]);
        assert_eq!(l.poll(1_220), 0, "counted once");
        assert_eq!(
            l.poll(9_000),
            0,
            "silence after an end of session is not death"
        );
        l.heard(1_300, a, false);
        assert!(l.dead().is_empty());
        assert_eq!(l.deaths(), 1);
    }
}
