//! The publisher's live counters: copied out of [`Publisher::service`]
//! once per interval for the metrics endpoint (`[metrics]` in the node
//! config; see `jasper_live`).

use jasper_core::config::NodeConfig;
use jasper_live::{Exporter, Figures, SenderFigures, Snapshot};

use crate::Publisher;

/// The exporter and what it labels the publisher's series with.
#[derive(Debug)]
pub(crate) struct Live {
    exporter: Exporter,
    stream: u32,
}

impl Live {
    /// No endpoint.
    pub(crate) fn off() -> Live {
        Live {
            exporter: Exporter::off(),
            stream: 0,
        }
    }

    /// From the node config (off unless `[metrics] listen` is set).
    pub(crate) fn open(cfg: &NodeConfig) -> Result<Live, String> {
        Ok(Live {
            exporter: Exporter::open(cfg)?,
            stream: cfg.sender.stream,
        })
    }
}

/// Copy the counters out when due.
pub(crate) fn tick(p: &mut Publisher, now_ns: u64) {
    if !p.live.exporter.due(now_ns) {
        return;
    }
    let bound = p.clock.error_bound_ns();
    let snapshot = Snapshot {
        now_ns,
        io: p.io.counters(),
        guard: p.guard.stats().clone(),
        upstreams: Vec::new(),
        clock_status: p.clock.status(),
        clock_bound_ns: bound,
        figures: Figures::Sender(SenderFigures {
            stats: p.core.stats().clone(),
            stream: p.live.stream,
            session: p.core.session(),
            deadline_offset_ns: p.core.offset_ns(bound),
        }),
    };
    p.live.exporter.publish(snapshot);
}
