//! The receiver's live counters: copied out of the run loop once per
//! interval for the metrics endpoint (`[metrics]` in the config; see
//! `jasper_live`). Hand-over latencies are counted at release, in the
//! exporter's own memory.

use jasper_core::clock::Clock;
use jasper_live::{Figures, ReceiverFigures, Snapshot};

use crate::ReceiverNode;

/// Copy the counters out when due (from housekeeping).
pub(crate) fn tick(n: &mut ReceiverNode, now_ns: u64) {
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
        figures: Figures::Receiver(ReceiverFigures {
            stats: n.core.stats().clone(),
            held: n.core.held(),
            held_bytes: n.core.held_bytes(),
            mold_packets: n.mold.as_ref().map_or(0, |m| m.stats().packets),
        }),
    };
    n.live.publish(snapshot);
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicBool;

    use jasper_core::clock::Clock;
    use jasper_core::config::NodeConfig;
    use jasper_core::sender::{SenderConfig, SenderCore};
    use jasper_io::clock::NodeClock;
    use jasper_io::mem::MemHub;
    use jasper_io::runtime::ParentWatch;
    use jasper_io::PacketIo;
    use jasper_live::scrape;

    use crate::{run, ReceiverNode};

    #[test]
    fn released_messages_show_on_the_endpoint() {
        let me: SocketAddr = "10.1.0.2:1".parse().unwrap();
        let parent: SocketAddr = "10.1.0.1:1".parse().unwrap();
        let mut cfg = NodeConfig::leaf_receiver("mp", 5, 0, me, (1, parent));
        // Any free port (a deployed config names a fixed one).
        cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        let hub = MemHub::new();
        let mut node = ReceiverNode::with_io(&cfg, Box::new(hub.attach(&[me], 32))).unwrap();
        node.set_exit_after_session(true);
        let addr = node.live.local_addr().unwrap();
        let mut up = hub.attach(&[parent], 32);
        let mut s = SenderCore::new(SenderConfig::default());
        let clock = NodeClock::from_config(&Default::default());
        for i in 0..3u8 {
            s.publish(clock.read(), &[i]).unwrap();
        }
        s.end_session(clock.read());
        while let Some(p) = s.poll_transmit() {
            up.send_to(&p, me);
        }
        up.flush().unwrap();
        let stop = AtomicBool::new(false);
        run(
            std::slice::from_mut(&mut node),
            &stop,
            ParentWatch::new(false),
            |_, _, _| {},
        );
        // The last housekeeping may fall inside the interval: a copy now.
        super::tick(&mut node, 1 << 62);
        let text = scrape::fetch(addr, std::time::Duration::from_secs(5)).unwrap();
        let samples = scrape::parse(&text).unwrap();
        let get = |name: &str| {
            samples
                .iter()
                .find(|s| s.name == name && s.label("node") == Some("mp"))
                .map(|s| s.value)
        };
        assert_eq!(get("jasper_receiver_released_total"), Some(3.0), "{text}");
        assert_eq!(get("jasper_receiver_handover_seconds_count"), Some(3.0));
        assert_eq!(get("jasper_receiver_held_bytes"), Some(0.0));
        assert!(
            get("jasper_guard_admitted_total") >= Some(4.0),
            "3 data packets and the end"
        );
        assert!(samples
            .iter()
            .any(|s| s.name == "jasper_upstream_state" && s.label("upstream") == Some("1")));
    }
}
