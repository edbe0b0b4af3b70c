//! Well-formed packets built from a few fuzzer bytes, so the state machines
//! are reached past the parser; values near the running sequence and clock
//! mostly, extremes (0, `u64::MAX`, far jumps) sometimes. Mutations after
//! building ([`corrupt`]) reach the malformed cases.

use jasper_core::wire::{
    emit_control, emit_empty, emit_report, flags, Control, ControlOp, DataBuilder, DelayReport,
    Header, Kind, HEADER_LEN,
};

use crate::input::Input;

/// A plausible synchronized clock reading to start from (late 2023).
pub const NOW0: u64 = 1_700_000_000_000_000_000;

/// Largest body the builder makes.
const MAX_BODY: usize = 12_000;

/// What the builder knows about the run: the clock, the ids that exist,
/// the running sequence.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Current clock.
    pub now: u64,
    /// Stream ids in the plan (others are picked sometimes).
    pub streams: Vec<u32>,
    /// Node ids that report (others are picked sometimes).
    pub nodes: Vec<u32>,
    /// One past the highest sequence built so far.
    pub next_seq: u64,
}

impl Ctx {
    /// At [`NOW0`], sequence 0.
    pub fn new(streams: &[u32], nodes: &[u32]) -> Ctx {
        Ctx {
            now: NOW0,
            streams: streams.to_vec(),
            nodes: nodes.to_vec(),
            next_seq: 0,
        }
    }

    /// Move the clock forward by an input-chosen step (up to ~4.3 s).
    pub fn advance(&mut self, inp: &mut Input<'_>) {
        let step = match inp.u8() % 4 {
            0 => inp.u8() as u64,
            1 => inp.u16() as u64 * 16,
            2 => inp.u16() as u64 * 1_000,
            _ => inp.u32() as u64,
        };
        self.now = self.now.saturating_add(step);
    }
}

/// A sequence near `hint` mostly, an extreme sometimes.
pub fn seq(inp: &mut Input<'_>, hint: u64) -> u64 {
    match inp.u8() % 16 {
        0 => 0,
        1 => u64::MAX - inp.u8() as u64,
        2 => inp.u64(),
        3 => hint.wrapping_add(1u64 << (inp.u8() % 64)),
        4 => hint.saturating_sub(inp.u16() as u64),
        _ => hint.saturating_add(inp.u8() as u64).saturating_sub(16),
    }
}

/// A time near `now` mostly (just past, a little ahead), an extreme sometimes.
pub fn time_near(inp: &mut Input<'_>, now: u64) -> u64 {
    match inp.u8() % 16 {
        0 => 0,
        1 => u64::MAX,
        2 => inp.u64(),
        3 => now.saturating_sub(inp.u32() as u64 * 1_000),
        4 => now.saturating_add(inp.u32() as u64 * 1_000),
        5..=7 => now.saturating_sub(inp.u16() as u64 * 10),
        _ => now.saturating_add(inp.u16() as u64 * 10),
    }
}

fn pick(inp: &mut Input<'_>, known: &[u32]) -> u32 {
    let s = inp.u8();
    if s & 0x80 == 0 && !known.is_empty() {
        known[s as usize % known.len()]
    } else {
        inp.u32()
    }
}

/// The payload the builder gives message `seq`: its sequence, then filler.
pub fn payload(seq: u64, len: usize, fill: u8) -> Vec<u8> {
    let mut m = vec![fill; len];
    let s = seq.to_be_bytes();
    let k = len.min(8);
    m[..k].copy_from_slice(&s[..k]);
    m
}

/// One well-formed, untagged packet of an input-chosen kind.
pub fn packet(inp: &mut Input<'_>, ctx: &mut Ctx) -> Vec<u8> {
    let kind = match inp.u8() % 10 {
        0..=4 => Kind::Data,
        5 => Kind::Heartbeat,
        6 => Kind::Control,
        7 => Kind::DelayReport,
        8 => Kind::RetransmitData,
        _ => Kind::RetransmitRequest,
    };
    let mut h = Header::new(kind);
    h.stream = pick(inp, &ctx.streams);
    let s = inp.u8();
    h.session = if s & 0x80 == 0 {
        (s % 4) as u32
    } else {
        inp.u32()
    };
    h.seq = seq(inp, ctx.next_seq);
    let f = inp.u8();
    h.path = (f % 8) as u16;
    h.hops = f / 8;
    if inp.bool() {
        h.flags |= flags::CLOCK_DEGRADED;
    }
    h.send_time_ns = time_near(inp, ctx.now);
    h.deadline_ns = time_near(inp, ctx.now);
    let mut buf = vec![0u8; HEADER_LEN + MAX_BODY];
    let n = match kind {
        Kind::Data | Kind::RetransmitData => {
            let c = inp.u8();
            let count = if c & 0x80 == 0 {
                c % 24
            } else {
                c.wrapping_mul(3)
            } as u64;
            let mut b = DataBuilder::new(&mut buf, HEADER_LEN + MAX_BODY)
                .expect("builder buffer holds a header");
            for i in 0..count {
                let l = inp.u8();
                let m = payload(h.seq.wrapping_add(i), (l % 48) as usize, l);
                if !b.push(&m).unwrap_or(false) {
                    break;
                }
            }
            let got = b.count() as u64;
            if h.seq.abs_diff(ctx.next_seq) < 1 << 16 {
                ctx.next_seq = ctx.next_seq.max(h.seq.saturating_add(got));
            }
            b.finish(&h)
        }
        Kind::Heartbeat | Kind::RetransmitRequest => {
            h.count = inp.u8() as u16;
            emit_empty(&h, &mut buf).expect("room for a header")
        }
        Kind::Control => {
            let op = match inp.u8() % 4 {
                0 => ControlOp::EndOfSession,
                1 => ControlOp::SessionStart,
                2 => ControlOp::Shutdown,
                _ => ControlOp::Other(inp.u16()),
            };
            let arg = seq(inp, ctx.next_seq);
            emit_control(&h, Control { op, arg }, &mut buf).expect("room for a control")
        }
        Kind::DelayReport => {
            let m = inp.u8();
            let rep = DelayReport {
                node: pick(inp, &ctx.nodes),
                receivers: if m & 1 == 0 {
                    (m >> 4) as u32
                } else {
                    inp.u32()
                },
                owd_ns: if m & 2 == 0 {
                    inp.u16() as u64 * 100
                } else {
                    inp.u64()
                },
                clock_bound_ns: inp.u16() as u64,
                samples: if m & 4 == 0 {
                    (m >> 3) as u64
                } else {
                    inp.u64()
                },
            };
            emit_report(&h, &rep, &mut buf).expect("room for a report")
        }
    };
    buf.truncate(n);
    buf
}

/// Maybe damage a packet: mostly nothing; bit flips, truncation, a changed
/// count or message length, extended bodies, flag and tag-length bytes.
pub fn corrupt(inp: &mut Input<'_>, p: &mut Vec<u8>) {
    let op = inp.u8();
    if op < 160 || p.is_empty() {
        return;
    }
    let at = inp.u16() as usize % p.len();
    match op % 8 {
        0 => p[at] ^= 1 << (inp.u8() % 8),
        1 => p.truncate(at),
        2 => {
            if p.len() >= 26 {
                let c = inp.u16().to_be_bytes();
                p[24..26].copy_from_slice(&c);
            }
        }
        3 => {
            // A message length prefix (the first at byte 48).
            if p.len() >= HEADER_LEN + 2 {
                let v = inp.u16().to_be_bytes();
                p[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&v);
            }
        }
        4 => {
            let n = inp.u8() as usize;
            p.extend(std::iter::repeat_n(inp.u8(), n));
        }
        5 => p[at] = inp.u8(),
        6 => {
            // Flags, tag length, key id.
            if p.len() >= 31 {
                p[7] = inp.u8();
                p[29] = inp.u8();
                p[30] = inp.u8();
            }
        }
        _ => {
            let b = inp.u8();
            p.insert(at, b);
        }
    }
}
