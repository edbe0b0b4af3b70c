//! The fuzz targets: one function per parser and per state machine, taking
//! the fuzzer's bytes. The AFL binaries in `fuzz/` call exactly these; the
//! CI mutation test calls them and the [`crate::check`] harnesses directly.
//!
//! The state-machine targets read their input as a small program: a config
//! from the first bytes, then operations (a built packet, possibly damaged,
//! possibly tagged; a raw packet; a replay of an earlier one; a clock step;
//! polls), so the fuzzer reaches the state machines past the parser.

use jasper_core::auth::MasterKeys;
use jasper_core::clock::{ClockStatus, Reading};
use jasper_core::deadline::DeadlinePolicy;
use jasper_core::guard::GuardRole;
use jasper_core::proxy::ProxyConfig;
use jasper_core::receiver::ReceiverConfig;
use jasper_core::sender::{SenderConfig, SenderCore};
use jasper_core::wire::{self, Body, DelayReport, Kind, Repr};

use crate::build::{self, Ctx};
use crate::check::{self, GuardCheck, ProxyCheck, ReceiverCheck, ReducerCheck, Signer};
use crate::input::Input;

/// Most operations one input runs (bounds the cost of one execution).
const MAX_OPS: usize = 512;
/// Earlier packets kept for replays.
const REPLAYS: usize = 16;

/// The key sets the targets use: the deployment's ids 1 and 2, and a
/// foreign deployment reusing id 1.
pub fn fuzz_keys() -> ([MasterKeys; 2], MasterKeys) {
    let r = |seed: u8| {
        let mut a = [0u8; 96];
        for (i, b) in a.iter_mut().enumerate() {
            *b = seed.wrapping_mul(97).wrapping_add(i as u8);
        }
        a
    };
    (
        [
            MasterKeys::from_random(1, &r(1)),
            MasterKeys::from_random(2, &r(2)),
        ],
        MasterKeys::from_random(1, &r(3)),
    )
}

/// `Repr::parse_bytes` / `Packet::new_checked` on raw bytes.
pub fn wire(data: &[u8]) {
    check::wire(data);
}

/// `KeyFile::parse` on text (non-UTF-8 input is skipped).
pub fn key_file(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        check::key_file(s);
    }
}

/// `NodeConfig::from_toml` (parse and validate) on text.
pub fn node_config(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        check::node_config(s);
    }
}

/// Packets kept for replays, and the last one built.
#[derive(Debug, Default)]
struct Replays {
    ring: Vec<Vec<u8>>,
    next: usize,
}

impl Replays {
    fn keep(&mut self, p: &[u8]) {
        if self.ring.len() < REPLAYS {
            self.ring.push(p.to_vec());
        } else {
            self.ring[self.next % REPLAYS] = p.to_vec();
        }
        self.next += 1;
    }
    fn pick(&self, inp: &mut Input<'_>) -> Option<Vec<u8>> {
        if self.ring.is_empty() {
            return None;
        }
        Some(self.ring[inp.u8() as usize % self.ring.len()].clone())
    }
}

/// One packet for a state-machine target: built (maybe damaged), raw, or a
/// replay.
fn next_packet(inp: &mut Input<'_>, ctx: &mut Ctx, replays: &mut Replays) -> Vec<u8> {
    match inp.u8() % 8 {
        0 => {
            let n = inp.u8() as usize;
            inp.bytes(n).to_vec()
        }
        1 => replays.pick(inp).unwrap_or_else(|| build::packet(inp, ctx)),
        _ => {
            let mut p = build::packet(inp, ctx);
            build::corrupt(inp, &mut p);
            replays.keep(&p);
            p
        }
    }
}

/// The guard: first byte = role (proxy, receiver, publisher), key sets held
/// (none, one, two) and whether sources are checked; then packets from
/// input-chosen sources, tagged by input-chosen signers (the publisher,
/// a child speaking for itself or for another, a foreign deployment).
pub fn guard(data: &[u8]) {
    let mut inp = Input::new(data);
    let c = inp.u8();
    let role = match c % 3 {
        0 => GuardRole::Proxy,
        1 => GuardRole::Receiver,
        _ => GuardRole::Sender,
    };
    let held = ((c / 3) % 3) as usize;
    let check_sources = (c / 9) % 4 != 0;
    let (masters, foreign) = fuzz_keys();
    let mut g = GuardCheck::new(role, masters, foreign, held, check_sources);
    let mut ctx = Ctx::new(&[1, 2], &[5, 6]);
    let addrs = check::guard_addrs();
    let mut replays = Replays::default();
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        let op = inp.u8();
        if op % 8 == 0 {
            ctx.advance(&mut inp);
            continue;
        }
        let src = addrs[inp.u8() as usize % addrs.len()];
        let bytes = if op % 8 == 1 {
            match replays.pick(&mut inp) {
                Some(p) => p,
                None => continue,
            }
        } else if op % 8 == 2 {
            let n = inp.u8() as usize;
            inp.bytes(n).to_vec()
        } else {
            let p = build::packet(&mut inp, &mut ctx);
            let s = inp.u8();
            let signer = match s % 6 {
                0 => Signer::None,
                1 | 2 => Signer::Publisher((s / 6) as usize % 3),
                _ => {
                    let from = [5, 6, 7, 1][(s / 6) as usize % 4];
                    Signer::Node(from, (s / 24) as usize % 3)
                }
            };
            let mut p = g.seal(signer, p);
            build::corrupt(&mut inp, &mut p);
            replays.keep(&p);
            p
        };
        g.admit(ctx.now, src, &bytes);
    }
}

/// Receiver config from input: small windows and caps so the limits are hit.
fn receiver_config(inp: &mut Input<'_>) -> ReceiverConfig {
    let dedup_window = 64u64 << (inp.u8() % 8);
    let jump = 1 + inp.u16() as u64 % dedup_window;
    ReceiverConfig {
        dedup_window,
        max_held: 1 + inp.u8() as usize % 64,
        max_held_bytes: 1 + inp.u16() as usize,
        max_seq_jump: jump,
        max_streams: 1 + inp.u8() as usize % 4,
        join_reorder: inp.u16() as u64 % dedup_window,
        report_interval_ns: 1 + inp.u32() as u64,
        hold: inp.u8() % 8 != 0,
        ..ReceiverConfig::default()
    }
}

/// The receiver: a config, then packets with arrival times, interleaved
/// with `poll_release`, `poll_event` and `poll_report`; ends with a release
/// at the end of time.
pub fn receiver(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = receiver_config(&mut inp);
    let mut rc = ReceiverCheck::new(cfg);
    let mut ctx = Ctx::new(&[1, 2, 3], &[9]);
    let mut replays = Replays::default();
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        match inp.u8() % 8 {
            0 | 1 => ctx.advance(&mut inp),
            2 => {
                rc.release(ctx.now);
            }
            3 => rc.events(),
            4 => rc.report(ctx.now),
            _ => {
                let p = next_packet(&mut inp, &mut ctx, &mut replays);
                rc.packet(ctx.now, &p);
            }
        }
    }
    let _ = rc.finish();
}

/// The proxy: a config, then packets (built, damaged, raw, replayed) and
/// report polls.
pub fn proxy(data: &[u8]) {
    let mut inp = Input::new(data);
    let dedup_window = 64u64 << (inp.u8() % 6);
    let cfg = ProxyConfig {
        dedup_window,
        max_seq_jump: 1 + inp.u16() as u64 % dedup_window,
        max_streams: 1 + inp.u8() as usize % 4,
        max_hops: inp.u8() % 40,
        report_ceiling_ns: inp.u32() as u64,
        report_interval_ns: 1 + inp.u32() as u64,
        ..ProxyConfig::default()
    };
    let mut pc = ProxyCheck::new(cfg);
    let mut ctx = Ctx::new(&[1, 2, 3], &[5, 6, 7]);
    let mut replays = Replays::default();
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        match inp.u8() % 8 {
            0 => ctx.advance(&mut inp),
            1 => pc.report(ctx.now),
            _ => {
                let p = next_packet(&mut inp, &mut ctx, &mut replays);
                pc.packet(ctx.now, &p);
            }
        }
    }
}

/// The report reducer: children, staleness and ceiling from input, then
/// reports (any field values, from children and strangers) and reductions.
pub fn reducer(data: &[u8]) {
    let mut inp = Input::new(data);
    let n = 1 + inp.u8() as u32 % 8;
    let children: Vec<u32> = (0..n).map(|i| 10 + i).collect();
    let stale = inp.u32() as u64;
    let ceiling = match inp.u8() % 4 {
        0 => u64::MAX,
        1 => 0,
        _ => inp.u32() as u64,
    };
    let mut rc = ReducerCheck::new(&children, stale, ceiling);
    let mut now = build::NOW0;
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        match inp.u8() % 4 {
            0 => now = now.saturating_add(inp.u32() as u64),
            1 => rc.reduce(now),
            _ => {
                let from = 10 + inp.u8() as u32 % (n + 2);
                let m = inp.u8();
                let big = |inp: &mut Input<'_>, wide: bool| {
                    if wide {
                        inp.u64()
                    } else {
                        inp.u16() as u64
                    }
                };
                let rep = DelayReport {
                    node: from,
                    receivers: if m & 1 == 0 {
                        u32::MAX
                    } else {
                        inp.u8() as u32
                    },
                    owd_ns: big(&mut inp, m & 2 != 0),
                    clock_bound_ns: big(&mut inp, m & 4 != 0),
                    samples: big(&mut inp, m & 8 != 0),
                };
                rc.report(now, from, rep);
            }
        }
    }
}

/// The publisher: a config, then publishes (batches, sizes up to the
/// limit), flushes, timeouts, reports from the tree (any values) and the
/// end of the session. Asserts: every packet it emits parses (and carries
/// valid tree and feed tags when keyed) within the size limit; data
/// sequences are contiguous from 0 and match what `publish` returned;
/// heartbeats and the end of session carry the next sequence; deadlines
/// never decrease and never exceed send time + the ceiling.
pub fn sender(data: &[u8]) {
    let mut inp = Input::new(data);
    let c = inp.u8();
    let floor = inp.u16() as u64 * 100;
    let cfg = SenderConfig {
        stream: 1,
        session: (c % 3) as u32,
        max_packet: 64 + inp.u16() as usize % 2000,
        linger_ns: if c & 8 == 0 { 0 } else { inp.u16() as u64 },
        heartbeat_interval_ns: inp.u16() as u64 * 10,
        deadline: DeadlinePolicy {
            initial_offset_ns: inp.u32() as u64,
            margin_ns: inp.u16() as u64,
            add_clock_bound: c & 16 != 0,
            floor_ns: floor,
            ceiling_ns: floor + inp.u32() as u64,
            tracked: (c & 64 != 0).then(|| jasper_core::deadline::TrackedDeadline {
                history_ns: inp.u32() as u64,
                quantile_ppm: inp.u32(),
            }),
        },
        ..SenderConfig::default()
    };
    let keyed = c & 32 != 0;
    let (masters, _) = fuzz_keys();
    let mut tx = SenderCore::new(cfg);
    let (proxy, rx) = if keyed {
        let m = &masters[0];
        tx.set_auth(Some(jasper_core::auth::Auth::new(&m.key_file(
            jasper_core::auth::KeyRole::Sender,
            0,
            None,
        ))));
        (
            Some(jasper_core::auth::Auth::new(&m.key_file(
                jasper_core::auth::KeyRole::Proxy,
                1,
                None,
            ))),
            Some(jasper_core::auth::Auth::new(&m.key_file(
                jasper_core::auth::KeyRole::Receiver,
                9,
                None,
            ))),
        )
    } else {
        (None, None)
    };
    let ceiling = cfg.deadline.ceiling_ns.max(cfg.deadline.floor_ns);
    let max_packet = tx.max_message() + wire::HEADER_LEN + wire::MSG_LEN_PREFIX;
    let mut ctx = Ctx::new(&[1], &[1]);
    let mut published = 0u64;
    let mut seen_next = 0u64;
    let mut last_deadline = 0u64;
    let mut ended = false;
    let mut session = None;
    let msg = vec![0x5a; 70_000];
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        let reading = Reading {
            now_ns: ctx.now,
            error_bound_ns: inp.u16() as u64,
            status: match inp.u8() % 4 {
                0 => ClockStatus::Degraded,
                1 => ClockStatus::Unsynchronized,
                _ => ClockStatus::Synchronized,
            },
        };
        match inp.u8() % 8 {
            0 | 1 => ctx.advance(&mut inp),
            2 | 3 => {
                let len = match inp.u8() % 4 {
                    0 => tx.max_message(),
                    1 => tx.max_message() + 1,
                    _ => inp.u8() as usize,
                };
                match tx.publish(reading, &msg[..len.min(msg.len())]) {
                    Ok(s) => {
                        assert!(!ended);
                        assert_eq!(s, published, "publish returns the next sequence");
                        published += 1;
                    }
                    Err(_) => assert!(ended || len > tx.max_message()),
                }
            }
            4 => {
                let n = inp.u8() as usize % 8;
                let lens: Vec<usize> = (0..n).map(|_| inp.u8() as usize).collect();
                let msgs: Vec<&[u8]> = lens.iter().map(|l| &msg[..*l]).collect();
                match tx.publish_batch(reading, msgs.iter().copied()) {
                    Ok(first) => {
                        assert!(!ended);
                        assert_eq!(first, published);
                        published += n as u64;
                    }
                    Err(_) => assert!(ended || lens.iter().any(|l| *l > tx.max_message())),
                }
            }
            5 => tx.flush(reading),
            6 => tx.handle_timeout(reading),
            _ => {
                if inp.u8() % 16 == 0 {
                    tx.end_session(reading);
                    ended = true;
                } else {
                    let p = build::packet(&mut inp, &mut ctx);
                    let _ = tx.handle_packet(&p);
                }
            }
        }
        while let Some(p) = tx.poll_transmit() {
            let tag = if keyed {
                jasper_core::auth::PUBLISHER_TRAILER
            } else {
                0
            };
            assert!(p.len() <= max_packet + tag, "a packet over max_packet");
            if let (Some(px), Some(r)) = (&proxy, &rx) {
                assert_eq!(px.verify_tree(&p), Ok(()));
                assert_eq!(r.verify_feed(&p), Ok(()));
            }
            let r = Repr::parse_bytes(&p).expect("the publisher emits valid packets");
            let h = r.header;
            assert_eq!(h.stream, 1);
            assert_ne!(h.session, 0, "a session id is never 0 on the wire");
            assert_eq!(*session.get_or_insert(h.session), h.session);
            assert!(h.deadline_ns >= last_deadline, "deadlines decreased");
            assert!(
                h.deadline_ns <= h.send_time_ns.saturating_add(ceiling),
                "deadline beyond the ceiling"
            );
            last_deadline = h.deadline_ns;
            match (h.kind, r.body) {
                (Kind::Data, Body::Messages(_)) => {
                    assert_eq!(h.seq, seen_next, "data sequences are contiguous");
                    assert!(h.count > 0);
                    seen_next += h.count as u64;
                    assert!(seen_next <= published);
                }
                (Kind::Heartbeat, _) => assert_eq!(h.seq, tx.next_seq()),
                (Kind::Control, Body::Control(ctl)) => {
                    assert!(ctl.arg <= published, "control beyond what was published");
                }
                (k, _) => panic!("the publisher emitted a {k}"),
            }
        }
    }
}
