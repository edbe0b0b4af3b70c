//! Attacks on a running tree (`jasper local --attack …`): what a host
//! without keys, or an insider holding one MP receiver's keys, can send.
//! Every forged message carries [`FORGED_MARK`], so a receiver that hands
//! one to its MP is caught by the run's report.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use jasper_core::auth::{Auth, KeyFile, KeyRole, KeySetFile, MasterKeys};
use jasper_core::wire::{
    emit_control, emit_report, Control, ControlOp, DataBuilder, DelayReport, Header, Kind,
};
use serde::Serialize;

/// Payload marker of every forged message.
pub const FORGED_MARK: &[u8] = b"FORGED!!";

/// One attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    /// A data packet 2^40 sequences ahead, to the root proxy.
    SeqJumpRoot,
    /// A data packet of a newer session, to the root proxy.
    NewSessionRoot,
    /// End-of-session control packets, to the root and to every receiver.
    EndOfSession,
    /// A data packet 2^22 sequences ahead, to one receiver.
    SeqJumpReceiver,
    /// Delay reports claiming 0 ns one-way delay, to the publisher (as the root).
    ReportsPublisher,
    /// Delay reports claiming 0 ns, to the root (as each of its children).
    ReportsRoot,
    /// 30,000 data packets with distinct stream ids, to one receiver.
    StreamFlood,
    /// 20,000 9 KB data packets with far-future deadlines, to one receiver.
    HoldFlood,
}

impl AttackKind {
    /// Every attack.
    pub fn all() -> Vec<AttackKind> {
        AttackKind::value_variants().to_vec()
    }
}

/// Who attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attacker {
    /// A host without keys: no tags, or tags under keys of its own.
    Outsider,
    /// An MP holding its receiver's keys (feed key and its own node key):
    /// valid feed tags, its own report tags, from its own host.
    Insider,
}

/// Where the attacks go, and what the attacker holds.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The publisher's socket.
    pub publisher: SocketAddr,
    /// The root proxy.
    pub root: SocketAddr,
    /// The root's report children: id and address.
    pub root_children: Vec<(u32, SocketAddr)>,
    /// The receiver the single-target attacks go to (not the insider's own).
    pub victim: SocketAddr,
    /// A proxy the victim takes data from (the source a spoofer forges).
    pub victim_parent: SocketAddr,
    /// Every receiver endpoint.
    pub receivers: Vec<SocketAddr>,
    /// Stream and current session of the feed.
    pub stream: u32,
    /// Session id in use.
    pub session: u32,
    /// Next sequence of the feed.
    pub next_seq: u64,
    /// Synchronized-ish now (host clock), ns.
    pub now_ns: u64,
    /// Scale of the floods (1.0 = 30,000 streams and 20,000 9 KB packets).
    pub volume: f64,
}

/// What an attack sent.
#[derive(Debug, Clone, Serialize)]
pub struct Fired {
    /// Attack.
    pub kind: AttackKind,
    /// By whom.
    pub attacker: Attacker,
    /// Packets sent.
    pub packets: u64,
}

/// The attacker's keys: the outsider's own (valid nowhere), or the insider's
/// receiver keys plus a made-up tree key (so it can produce feed tags,
/// never tree tags).
fn sealer(attacker: Attacker, insider_keys: Option<&Path>) -> anyhow::Result<(Auth, u32)> {
    let fake = MasterKeys::from_random(1, &[0x5a; 96]);
    match attacker {
        Attacker::Outsider => Ok((Auth::new(&fake.key_file(KeyRole::Sender, 0, None)), 0)),
        Attacker::Insider => {
            let path = insider_keys.context("the insider attack needs an MP's key file")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut kf: KeyFile = toml::from_str(&text).context("insider key file")?;
            let own = kf.node;
            for k in &mut kf.keyset {
                let real: &KeySetFile = k;
                *k = KeySetFile {
                    tree: fake.for_node(KeyRole::Sender, 0).tree,
                    nodes: None,
                    ..real.clone()
                };
            }
            Ok((Auth::new(&kf), own))
        }
    }
}

fn data(t: &Targets, stream: u32, session: u32, seq: u64, deadline: u64, size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 9_100];
    let mut b = match DataBuilder::new(&mut buf, 9_000) {
        Ok(b) => b,
        Err(_) => return Vec::new(),
    };
    let mut msg = FORGED_MARK.to_vec();
    msg.resize(size.max(FORGED_MARK.len()), b'!');
    let _ = b.push(&msg);
    let mut h = Header::new(Kind::Data);
    h.stream = stream;
    h.session = session;
    h.seq = seq;
    h.send_time_ns = t.now_ns;
    h.deadline_ns = deadline;
    let n = b.finish(&h);
    buf.truncate(n);
    buf
}

fn report(node: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let mut h = Header::new(Kind::DelayReport);
    h.send_time_ns = jasper_io::host_now_ns();
    let n = emit_report(
        &h,
        &DelayReport {
            node,
            receivers: 1,
            owd_ns: 0,
            clock_bound_ns: 0,
            samples: 1_000_000,
        },
        &mut buf,
    )
    .unwrap_or(0);
    buf.truncate(n);
    buf
}

fn eos(t: &Targets) -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let mut h = Header::new(Kind::Control);
    h.stream = t.stream;
    h.session = t.session;
    h.seq = t.next_seq;
    h.send_time_ns = t.now_ns;
    h.deadline_ns = t.now_ns + 100_000;
    let n = emit_control(
        &h,
        Control {
            op: ControlOp::EndOfSession,
            arg: t.next_seq,
        },
        &mut buf,
    )
    .unwrap_or(0);
    buf.truncate(n);
    buf
}

/// Tag a publisher packet the way this attacker can: the outsider with its
/// own keys, the insider with a valid feed tag and a made-up tree tag.
fn tag(auth: &Auth, mut p: Vec<u8>) -> Vec<u8> {
    let n = p.len();
    p.resize(n + jasper_core::auth::PUBLISHER_TRAILER, 0);
    match auth.seal_publisher(&mut p, n) {
        Ok(m) => p.truncate(m),
        Err(_) => p.truncate(n),
    }
    p
}

fn tag_node(auth: &Auth, mut p: Vec<u8>, as_node: u32) -> Vec<u8> {
    let n = p.len();
    p.resize(n + jasper_core::auth::NODE_TRAILER, 0);
    match auth.seal_node(&mut p, n, as_node) {
        Ok(m) => p.truncate(m),
        Err(_) => p.truncate(n),
    }
    p
}

/// Sends UDP datagrams, from its own socket or with a forged source
/// address (a raw IPv4 socket; needs CAP_NET_RAW).
enum Wire {
    Own(UdpSocket),
    Spoofed(socket2::Socket),
}

impl Wire {
    fn open(spoof: bool) -> anyhow::Result<Wire> {
        if !spoof {
            return Ok(Wire::Own(
                UdpSocket::bind("127.0.0.1:0").context("attacker socket")?,
            ));
        }
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::UDP),
        )
        .context("a raw socket to forge source addresses (run as root or with CAP_NET_RAW)")?;
        s.set_header_included_v4(true).context("IP_HDRINCL")?;
        Ok(Wire::Spoofed(s))
    }

    /// Send `payload` to `dst`, appearing to come from `src` when spoofing.
    fn send(&self, payload: &[u8], src: SocketAddr, dst: SocketAddr) -> bool {
        match self {
            Wire::Own(s) => s.send_to(payload, dst).is_ok(),
            Wire::Spoofed(s) => {
                let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
                    return false;
                };
                let len = 20 + 8 + payload.len();
                if len > u16::MAX as usize {
                    return false;
                }
                let mut p = Vec::with_capacity(len);
                p.extend_from_slice(&[0x45, 0]);
                p.extend_from_slice(&(len as u16).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
                p.extend_from_slice(&src.ip().octets());
                p.extend_from_slice(&dst.ip().octets());
                let sum = p
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
                    .sum::<u32>();
                let sum = (sum & 0xffff) + (sum >> 16);
                let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
                p[10..12].copy_from_slice(&sum.to_be_bytes());
                p.extend_from_slice(&src.port().to_be_bytes());
                p.extend_from_slice(&dst.port().to_be_bytes());
                p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed on IPv4)
                p.extend_from_slice(payload);
                s.send_to(&p, &socket2::SockAddr::from(SocketAddr::V4(dst)))
                    .is_ok()
            }
        }
    }
}

/// Fire one attack; returns the packets sent. Each forged packet goes out
/// both untagged and tagged with the attacker's keys. With `spoof`, every
/// packet carries the source address the plan expects for it (the
/// publisher's towards the root, a parent's towards a receiver, the claimed
/// child's for reports), so only the tags stand in the way.
pub fn fire(
    kind: AttackKind,
    attacker: Attacker,
    spoof: bool,
    insider_keys: Option<&Path>,
    t: &Targets,
) -> anyhow::Result<Fired> {
    let wire = Wire::open(spoof)?;
    let (auth, own) = sealer(attacker, insider_keys)?;
    let mut sent = 0u64;
    let mut send_from = |bytes: &[u8], src: SocketAddr, dst: SocketAddr| {
        if !bytes.is_empty() && wire.send(bytes, src, dst) {
            sent += 1;
        }
    };
    let both = |p: Vec<u8>| [p.clone(), tag(&auth, p)];
    let soon = t.now_ns + 200_000;
    // Sources a spoofer forges.
    let (pub_src, parent_src) = (t.publisher, t.victim_parent);
    let root_src = t.root;
    match kind {
        AttackKind::SeqJumpRoot | AttackKind::NewSessionRoot | AttackKind::SeqJumpReceiver => {
            let (session, seq, src, dst) = match kind {
                AttackKind::SeqJumpRoot => (t.session, t.next_seq + (1 << 40), pub_src, t.root),
                AttackKind::NewSessionRoot => (t.session.saturating_add(1000), 0, pub_src, t.root),
                _ => (t.session, t.next_seq + (1 << 22), parent_src, t.victim),
            };
            for p in both(data(t, t.stream, session, seq, soon, 36)) {
                send_from(&p, src, dst);
            }
        }
        AttackKind::EndOfSession => {
            for p in both(eos(t)) {
                send_from(&p, pub_src, t.root);
                for r in &t.receivers {
                    send_from(&p, parent_src, *r);
                }
            }
        }
        AttackKind::ReportsPublisher => {
            for _ in 0..((200.0 * t.volume) as u32).max(20) {
                send_from(&report(1), root_src, t.publisher);
                send_from(&tag_node(&auth, report(1), own), root_src, t.publisher);
                send_from(&tag_node(&auth, report(own), own), root_src, t.publisher);
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        AttackKind::ReportsRoot => {
            for _ in 0..((200.0 * t.volume) as u32).max(20) {
                for (c, addr) in &t.root_children {
                    send_from(&report(*c), *addr, t.root);
                    send_from(&tag_node(&auth, report(*c), own), *addr, t.root);
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        AttackKind::StreamFlood => {
            for s in 0..(30_000.0 * t.volume) as u32 {
                let p = data(t, 1000 + s, t.session, t.next_seq, soon, 36);
                send_from(&tag(&auth, p), parent_src, t.victim);
                if s % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        AttackKind::HoldFlood => {
            let far = t.now_ns + 3_600_000_000_000;
            for i in 0..(20_000.0 * t.volume) as u64 {
                let p = data(t, t.stream, t.session, t.next_seq + 10 + i, far, 8_900);
                send_from(&tag(&auth, p), parent_src, t.victim);
                // Paced (~5k packets/s): a test of state bounds, not of the
                // socket buffer (volume is for the network to stop).
                if i % 5 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    Ok(Fired {
        kind,
        attacker,
        packets: sent,
    })
}

/// Does a released payload carry the forgery mark?
pub fn is_forged(payload: &[u8]) -> bool {
    payload.windows(FORGED_MARK.len()).any(|w| w == FORGED_MARK)
}
