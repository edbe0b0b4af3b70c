//! Seeded generation of valid packets, key files and configs, and the
//! mutations the CI test applies to them; also the seed corpus for AFL.

use rand::{Rng, RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use jasper_core::auth::{KeyRole, MasterKeys};
use jasper_core::plan::{loopback_inventory, Plan, TreeSpec};
use jasper_core::plan_configs::{node_configs, ConfigOptions};
use jasper_core::wire::{
    emit_control, emit_empty, emit_report, Control, ControlOp, DataBuilder, DelayReport, Header,
    Kind, HEADER_LEN,
};

use crate::build::NOW0;

/// A seeded source of valid packets and their mutations.
#[derive(Debug)]
pub struct Gen {
    /// The generator (public so tests draw their own choices from it).
    pub rng: Xoshiro256PlusPlus,
    /// The running clock.
    pub now: u64,
    /// Next sequence per stream 1 and 2.
    pub seq: [u64; 2],
    /// Session per stream 1 and 2.
    pub session: [u32; 2],
}

impl Gen {
    /// From a seed.
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            now: NOW0,
            seq: [0, 1 << 20],
            session: [1, 1],
        }
    }

    /// Master keys with `id` from this generator's random bytes.
    pub fn masters(&mut self, id: u8) -> MasterKeys {
        let mut r = [0u8; 96];
        self.rng.fill_bytes(&mut r);
        MasterKeys::from_random(id, &r)
    }

    /// Move the clock by up to `max_ns`.
    pub fn advance(&mut self, max_ns: u64) {
        self.now += self.rng.random_range(0..=max_ns);
    }

    /// A valid, untagged packet: data (half), heartbeat, control or a delay
    /// report from child 5 or 6, near the running sequence and clock.
    pub fn valid(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        let si = r.random_range(0..2usize);
        let kind = match r.random_range(0..20) {
            0..=9 => Kind::Data,
            10..=12 => Kind::Heartbeat,
            13..=15 => Kind::Control,
            16 => Kind::RetransmitData,
            _ => Kind::DelayReport,
        };
        let mut h = Header::new(kind);
        h.stream = si as u32 + 1;
        h.session = self.session[si];
        if r.random_range(0..200) == 0 {
            // A restarted publisher.
            self.session[si] += 1;
            h.session = self.session[si];
        }
        // Mostly the next batch; sometimes a reordered or hedged copy.
        h.seq = match r.random_range(0..10) {
            0 => self.seq[si].saturating_sub(r.random_range(0..64)),
            _ => self.seq[si],
        };
        h.path = r.random_range(0..8);
        h.hops = r.random_range(0..3);
        h.send_time_ns = self.now - r.random_range(0..200_000);
        h.deadline_ns = self.now + r.random_range(0..2_000_000);
        let mut buf = vec![0u8; 4096];
        let n = match kind {
            Kind::Data | Kind::RetransmitData => {
                let mut b = DataBuilder::new(&mut buf, 1472).expect("room");
                let count = r.random_range(1..20u64);
                for i in 0..count {
                    let mut m = vec![0u8; r.random_range(0..64)];
                    r.fill_bytes(&mut m);
                    let s = (h.seq + i).to_be_bytes();
                    let k = m.len().min(8);
                    m[..k].copy_from_slice(&s[..k]);
                    if !b.push(&m).expect("a small message") {
                        break;
                    }
                }
                if kind == Kind::Data {
                    self.seq[si] = self.seq[si].max(h.seq + b.count() as u64);
                }
                b.finish(&h)
            }
            Kind::Heartbeat => {
                h.seq = self.seq[si];
                emit_empty(&h, &mut buf).expect("room")
            }
            Kind::Control => {
                let op = match r.random_range(0..8) {
                    0 => ControlOp::EndOfSession,
                    1 => ControlOp::Other(r.random()),
                    _ => ControlOp::SessionStart,
                };
                h.seq = self.seq[si];
                emit_control(
                    &h,
                    Control {
                        op,
                        arg: self.seq[si],
                    },
                    &mut buf,
                )
                .expect("room")
            }
            _ => {
                h.send_time_ns = self.now;
                let rep = DelayReport {
                    node: [5, 6][r.random_range(0..2)],
                    receivers: r.random_range(1..4),
                    owd_ns: r.random_range(0..1_000_000),
                    clock_bound_ns: r.random_range(0..1_000),
                    samples: r.random_range(1..1_000),
                };
                emit_report(&h, &rep, &mut buf).expect("room")
            }
        };
        buf.truncate(n);
        buf
    }

    /// An authentic-looking but hostile header change, made before tagging:
    /// sequence or deadline extremes, a far jump, a new session, a count
    /// that no longer matches the body.
    pub fn hostile_fields(&mut self, p: &mut [u8]) {
        if p.len() < HEADER_LEN {
            return;
        }
        let r = &mut self.rng;
        let seq = u64::from_be_bytes(p[16..24].try_into().expect("8 bytes"));
        match r.random_range(0..9) {
            0 => p[16..24].copy_from_slice(&u64::MAX.to_be_bytes()),
            1 => p[16..24].copy_from_slice(&(u64::MAX - r.random_range(0..30)).to_be_bytes()),
            2 => p[16..24].copy_from_slice(&0u64.to_be_bytes()),
            3 => {
                let j = seq.wrapping_add(1 << r.random_range(10..64));
                p[16..24].copy_from_slice(&j.to_be_bytes())
            }
            4 => p[40..48].copy_from_slice(&0u64.to_be_bytes()),
            5 => p[40..48].copy_from_slice(&u64::MAX.to_be_bytes()),
            6 => {
                let d = self.now + r.random_range(1..3_600) * 1_000_000_000;
                p[40..48].copy_from_slice(&d.to_be_bytes())
            }
            7 => p[12..16].copy_from_slice(&r.random::<u32>().to_be_bytes()),
            _ => p[24..26].copy_from_slice(&r.random::<u16>().to_be_bytes()),
        }
    }

    /// A damaged copy of `p`: bit flips, truncation, a splice with `other`,
    /// a count or message-length change, tag-length and flag bytes, a kind
    /// change, garbage appended or inserted.
    pub fn mutate(&mut self, p: &[u8], other: &[u8]) -> Vec<u8> {
        let r = &mut self.rng;
        let mut q = p.to_vec();
        if q.is_empty() {
            return q;
        }
        match r.random_range(0..10) {
            0 => {
                for _ in 0..r.random_range(1..5) {
                    let i = r.random_range(0..q.len());
                    q[i] ^= 1 << r.random_range(0..8);
                }
            }
            1 => q.truncate(r.random_range(0..q.len())),
            2 => {
                let a = r.random_range(0..=q.len());
                let b = r.random_range(0..=other.len());
                q.truncate(a);
                q.extend_from_slice(&other[b..]);
            }
            3 if q.len() >= 26 => {
                let c = u16::from_be_bytes([q[24], q[25]]);
                let c = match r.random_range(0..3) {
                    0 => c.wrapping_add(1),
                    1 => c.wrapping_sub(1),
                    _ => r.random(),
                };
                q[24..26].copy_from_slice(&c.to_be_bytes());
            }
            4 if q.len() >= HEADER_LEN + 2 => {
                // One message length prefix somewhere in the body.
                let i = r.random_range(HEADER_LEN..q.len() - 1);
                let v: u16 = match r.random_range(0..3) {
                    0 => 0,
                    1 => u16::MAX,
                    _ => r.random_range(0..128),
                };
                q[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            5 if q.len() >= 31 => {
                q[7] ^= 1 << r.random_range(0..8);
                q[29] = r.random_range(0..80);
                q[30] = r.random_range(0..4);
            }
            6 if q.len() >= 6 => q[5] = r.random_range(0..8),
            7 => {
                let n = r.random_range(1..64);
                q.extend((0..n).map(|_| r.random::<u8>()));
            }
            8 => {
                let i = r.random_range(0..=q.len());
                q.insert(i, r.random());
            }
            _ => {
                let i = r.random_range(0..q.len());
                q[i] = r.random();
            }
        }
        q
    }

    /// A damaged copy of a text: a byte changed, a line removed or
    /// duplicated, a number replaced by an extreme, a truncation.
    pub fn mutate_text(&mut self, text: &str) -> String {
        let r = &mut self.rng;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.is_empty() {
            return String::new();
        }
        let i = r.random_range(0..lines.len());
        match r.random_range(0..6) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                if let Some(eq) = lines[i].find(" = ") {
                    let v = [
                        "0",
                        "-1",
                        "18446744073709551615",
                        "9223372036854775807",
                        "4611686018427387904",
                        "1e309",
                        "nan",
                        "\"\"",
                        "[]",
                        "true",
                    ][r.random_range(0..10)];
                    lines[i] = format!("{}{v}", &lines[i][..eq + 3]);
                }
            }
            3 => {
                let mut b = lines[i].clone().into_bytes();
                if !b.is_empty() {
                    let j = r.random_range(0..b.len());
                    b[j] = r.random_range(0x20..0x7f);
                }
                lines[i] = String::from_utf8_lossy(&b).into_owned();
            }
            4 => lines.truncate(i),
            _ => {
                let j = r.random_range(0..lines.len());
                lines.swap(i, j);
            }
        }
        lines.join("\n")
    }
}

/// Valid key-file texts (node 7) for every role, with one and two key sets
/// and a hedged receiver.
pub fn key_file_texts(g: &mut Gen) -> Vec<String> {
    let a = g.masters(1);
    let b = g.masters(2);
    let mut out = Vec::new();
    for role in [KeyRole::Sender, KeyRole::Proxy, KeyRole::Receiver] {
        let mut kf = a.key_file(role, 7, None);
        out.push(kf.to_toml());
        kf.keyset.push(b.for_node(role, 7));
        kf.active = 2;
        out.push(kf.to_toml());
    }
    out.push(a.key_file(KeyRole::Receiver, 7, Some(8)).to_toml());
    out
}

/// Valid node-config texts: every node of a small hedged loopback plan,
/// authenticated (a key-file path) and not.
pub fn node_config_texts() -> Vec<String> {
    let spec = TreeSpec {
        depth: Some(2),
        fanout: Some(4),
        hedge: 1,
        spray: true,
        roots: 1,
    };
    let plan = Plan::build(&loopback_inventory(5, 8, true, 40000), &spec).expect("a small plan");
    let mut out = Vec::new();
    for keys in [None, Some(std::path::PathBuf::from("keys"))] {
        let opts = ConfigOptions {
            keys_dir: keys,
            ..ConfigOptions::default()
        };
        out.extend(node_configs(&plan, &opts).iter().map(|c| c.to_toml()));
    }
    out
}

/// Seed inputs for the AFL target `name`.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let mut g = Gen::new(0x5eed);
    match name {
        "wire" => {
            let (masters, _) = crate::targets::fuzz_keys();
            let sender =
                jasper_core::auth::Auth::new(&masters[0].key_file(KeyRole::Sender, 0, None));
            let mut out = Vec::new();
            for i in 0..24 {
                let mut p = g.valid();
                if i % 2 == 1 {
                    let n = p.len();
                    p.resize(n + 32, 0);
                    let m = if Kind::from_u8(p[5]) == Some(Kind::DelayReport) {
                        sender.seal_node(&mut p, n, 0)
                    } else {
                        sender.seal_publisher(&mut p, n)
                    };
                    p.truncate(m.unwrap_or(n));
                }
                out.push(p);
            }
            out
        }
        "key_file" => key_file_texts(&mut g)
            .into_iter()
            .map(String::into_bytes)
            .collect(),
        "node_config" => node_config_texts()
            .into_iter()
            .map(String::into_bytes)
            .collect(),
        _ => (0..12)
            .map(|i| {
                let mut v = vec![0u8; 32 << (i % 6)];
                g.rng.fill_bytes(&mut v);
                v
            })
            .collect(),
    }
}
