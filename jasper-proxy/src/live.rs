//! The proxy's live counters: copied out of the run loop once per interval
//! for the metrics endpoint (`[metrics]` in the config; see `jasper_live`).

use jasper_core::clock::Clock;
use jasper_live::{Figures, ProxyFigures, Snapshot};

use crate::ProxyNode;

/// Copy the counters out when due (once per duty cycle, after liveness).
pub(crate) fn tick(n: &mut ProxyNode, now_ns: u64) {
    if !n.live.due(now_ns) {
        return;
    }
    let snapshot = Snapshot {
        now_ns,
        io: n.io.counters(),
        guard: n.guard.stats().clone(),
        upstreams: n.liveness.states().to_vec(),
        clock_status: n.clock.status(),
        clock_bound_ns: n.clock.error_bound_ns(),
        figures: Figures::Proxy(ProxyFigures {
            stats: n.core.stats().clone(),
            unknown_peer: n.unknown_peer,
        }),
    };
    n.live.publish(snapshot);
}
