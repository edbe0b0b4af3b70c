//! A third-party MoldUDP64 client (the `moldudp` crate from the Rust
//! registry) reads a receiver's MoldUDP64 hand-off after a run with loss and
//! reordering, and ends up holding every message exactly once, in sequence,
//! with every one of its re-requests answered.
//!
//! The run:
//! - a publisher (`SenderCore`) sends each packet twice (two hedged copies)
//!   through the seeded fault injector (`jasper_io::fault::Faulty`: loss and
//!   reordering) over the in-memory backend to a real `ReceiverNode`;
//!   30 ms later every packet goes once more, clean — the tree's
//!   retransmission, played by the test — so a message whose copies were
//!   both lost is recovered late and released out of sequence order;
//! - the receiver's MoldUDP64 downstream goes through a lossy, reordering
//!   relay (loopback UDP) to the client's downstream socket;
//! - the client's re-requests go through a tap that forwards them to the
//!   receiver's request server and the replies back, counting both.
//!
//! The client is used as its documentation says: it detects gaps in the live
//! stream and re-requests them itself; the consumer of its datagram channel
//! reorders by sequence (the crate leaves that to it) and asks for the rest
//! of a range when a reply held only part of it (a reply is one packet).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use jasper_core::clock::Clock;
use jasper_core::config::NodeConfig;
use jasper_core::model::{CloudModel, Dist};
use jasper_core::sender::{SenderConfig, SenderCore};
use jasper_io::clock::NodeClock;
use jasper_io::fault::Faulty;
use jasper_io::mem::MemHub;
use jasper_io::PacketIo;
use jasper_receiver::ReceiverNode;
use moldudp::{MoldUDP64, Packet, PacketKind, RetransmissionPacket, RetransmissionRequest};

/// Messages published.
const MESSAGES: u64 = 4_000;
/// Messages per second.
const RATE: u64 = 20_000;

/// A small seeded generator (the test's own choices: sizes, relay faults).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1e6 < p
    }
}

/// Message `k`: its number, then filler of a size that varies.
fn message(k: u64) -> Vec<u8> {
    let mut m = format!("msg {k:08} ").into_bytes();
    m.resize(12 + (k * 7919 % 49) as usize, b'0' + (k % 10) as u8);
    m
}

fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Loses and reorders the receiver's downstream packets on their way to
/// the client.
struct Relay {
    sock: UdpSocket,
    to: SocketAddr,
    rng: Rng,
    held: VecDeque<(Vec<u8>, u32)>,
    passed: u64,
    lost: u64,
    reordered: u64,
}

impl Relay {
    fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.sock.recv(&mut buf) {
            // Held-back packets go out after two more have passed.
            for h in self.held.iter_mut() {
                h.1 = h.1.saturating_sub(1);
            }
            if self.rng.chance(0.05) {
                self.lost += 1;
            } else if self.rng.chance(0.05) {
                self.reordered += 1;
                self.held.push_back((buf[..n].to_vec(), 2));
            } else {
                self.sock.send_to(&buf[..n], self.to).unwrap();
                self.passed += 1;
            }
            while self.held.front().is_some_and(|h| h.1 == 0) {
                let (p, _) = self.held.pop_front().unwrap();
                self.sock.send_to(&p, self.to).unwrap();
                self.passed += 1;
            }
        }
    }
    /// Whatever is still held back goes out (the feed goes quiet).
    fn release_all(&mut self) {
        while let Some((p, _)) = self.held.pop_front() {
            self.sock.send_to(&p, self.to).unwrap();
            self.passed += 1;
        }
    }
}

/// Sits between the client's re-request socket and the request server:
/// forwards both ways and counts requests and replies by (session, seq).
struct Tap {
    sock: UdpSocket,
    server: SocketAddr,
    client: Option<SocketAddr>,
    requests: HashMap<([u8; 10], u64), u64>,
    replies: HashMap<([u8; 10], u64), u64>,
    total_requests: u64,
}

impl Tap {
    fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            let key = (buf[..10].try_into().unwrap(), {
                u64::from_be_bytes(buf[10..18].try_into().unwrap())
            });
            if from == self.server {
                *self.replies.entry(key).or_default() += 1;
                if let Some(c) = self.client {
                    self.sock.send_to(&buf[..n], c).unwrap();
                }
            } else {
                assert_eq!(n, 20, "the client's requests are standard request packets");
                self.client = Some(from);
                self.total_requests += 1;
                *self.requests.entry(key).or_default() += 1;
                self.sock.send_to(&buf[..n], self.server).unwrap();
            }
        }
    }
    /// Requests no reply starting at their sequence answered.
    fn unanswered(&self) -> u64 {
        self.requests
            .iter()
            .map(|(k, n)| n.saturating_sub(self.replies.get(k).copied().unwrap_or(0)))
            .sum()
    }
}

/// The feed handler behind the client: reorders by sequence, keeps each
/// message once, and asks for the rest of a gap a reply did not cover.
#[derive(Default)]
struct FeedHandler {
    session: Option<[u8; 10]>,
    next: u64,
    early: BTreeMap<u64, Vec<u8>>,
    held: Vec<Vec<u8>>,
    end: Option<u64>,
    known: u64,
    duplicates: u64,
    gaps_seen: u64,
    asked_for: Option<(u64, Instant)>,
    requests: u64,
}

impl FeedHandler {
    fn take(&mut self, bytes: &[u8]) {
        let p = Packet::new(bytes);
        let session = *p.session_ident_raw();
        assert_eq!(
            *self.session.get_or_insert(session),
            session,
            "one publisher stream, one MoldUDP64 session"
        );
        match p.packet_kind() {
            PacketKind::EndOfSession => self.end = Some(p.seq_num()),
            PacketKind::Heartbeat => self.known = self.known.max(p.seq_num()),
            PacketKind::Standard => {
                if p.seq_num() > self.next.max(self.known) {
                    self.gaps_seen += 1;
                }
                for (i, m) in p.iter().enumerate() {
                    let seq = p.seq_num() + i as u64;
                    if seq < self.next || self.early.contains_key(&seq) {
                        self.duplicates += 1;
                    } else {
                        self.early.insert(seq, m.data().to_vec());
                    }
                    self.known = self.known.max(seq + 1);
                }
            }
        }
        while let Some(m) = self.early.remove(&self.next) {
            self.held.push(m);
            self.next += 1;
        }
    }

    /// Everything up to the end of session is held.
    fn complete(&self) -> bool {
        self.end.is_some_and(|e| self.next == e)
    }

    /// Ask for the first missing message on, if something beyond it is
    /// known to exist and it was not asked for lately.
    fn ask(&mut self, send: impl Fn(RetransmissionRequest), now: Instant) {
        let Some(session) = self.session else { return };
        let end = self.known.max(self.end.unwrap_or(0));
        if end <= self.next {
            return;
        }
        if self
            .asked_for
            .is_some_and(|(s, at)| s == self.next && now - at < Duration::from_millis(20))
        {
            return;
        }
        let upto = self.early.keys().next().copied().unwrap_or(end);
        let count = (upto - self.next).min(u16::MAX as u64) as u16;
        send(RetransmissionRequest::new(RetransmissionPacket::new(
            session, self.next, count,
        )));
        self.asked_for = Some((self.next, now));
        self.requests += 1;
    }
}

fn receiver_config(mold_udp: SocketAddr) -> NodeConfig {
    let me: SocketAddr = "10.1.0.2:1".parse().unwrap();
    let parent: SocketAddr = "10.1.0.1:1".parse().unwrap();
    let mut cfg = NodeConfig::leaf_receiver("mp", 5, 0, me, (1, parent));
    cfg.receiver.mold_udp = Some(mold_udp);
    cfg.receiver.mold_request = Some("127.0.0.1:0".parse().unwrap());
    cfg.receiver.mold_heartbeat_ms = 20;
    cfg.receiver.mold_end_wait_ms = 200;
    cfg.receiver.mold_end_packets = 5;
    cfg.validate().unwrap();
    cfg
}

#[test]
fn a_third_party_client_holds_every_message_once_in_order_after_loss_and_reordering() {
    // The client and what sits in front of it.
    let client_feed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_rereq = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut relay = Relay {
        sock: udp(),
        to: client_feed.local_addr().unwrap(),
        rng: Rng(0x5EED_F10A),
        held: VecDeque::new(),
        passed: 0,
        lost: 0,
        reordered: 0,
    };
    let cfg = receiver_config(relay.sock.local_addr().unwrap());
    let hub = MemHub::new();
    let me = cfg.node.listen[0];
    let parent = cfg.peers[0].addr;
    let mut node = ReceiverNode::with_io(&cfg, Box::new(hub.attach(&[me], 64))).unwrap();
    let server = node.mold().unwrap().request_addr().unwrap();
    let mut tap = Tap {
        sock: udp(),
        server,
        client: None,
        requests: HashMap::new(),
        replies: HashMap::new(),
        total_requests: 0,
    };
    let tap_addr = tap.sock.local_addr().unwrap();
    let (rx, tx) = MoldUDP64::builder()
        .multicast_addr("239.0.0.1:1".parse().unwrap())
        .interface_addr(std::net::Ipv4Addr::LOCALHOST)
        .rerequest_server_addrs(vec![tap_addr])
        .expected_seq_num(1)
        .build()
        .start_with_sockets(client_feed, client_rereq, &[tap_addr])
        .unwrap();
    let send_request = |r: RetransmissionRequest| tx.try_send(r).unwrap();

    // The publisher, its two lossy, reordering copies, and the clean resend.
    let model = CloudModel {
        base_ns: Dist::ZERO,
        jitter_ns: Dist::ZERO,
        slow_rate_per_s: 0.0,
        loss: 0.05,
        reorder: 0.05,
        reorder_delay_ns: Dist::Constant { ns: 2_000_000.0 },
        ..CloudModel::zero()
    };
    let mut copies = Faulty::new(hub.attach(&[parent], 64), model, 7);
    let mut resend = hub.attach(&[parent], 64);
    let mut later: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut sender = SenderCore::new(SenderConfig::default());
    let clock = NodeClock::from_config(&Default::default());
    let mut rng = Rng(0xC0FFEE);

    let mut feed = FeedHandler {
        next: 1,
        ..FeedHandler::default()
    };
    let start = Instant::now();
    let mut published = 0u64;
    let mut ended = false;
    let mut done_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        assert!(
            now - start < Duration::from_secs(60),
            "stuck: held {} of {MESSAGES}, next {}, end {:?}, tap {} requests {} unanswered, report {}",
            feed.held.len(),
            feed.next,
            feed.end,
            tap.total_requests,
            tap.unanswered(),
            serde_json::to_string(&node.report()).unwrap()
        );
        // Publish what is due (1 to 4 messages a packet).
        let due = ((now - start).as_secs_f64() * RATE as f64) as u64;
        while published < due.min(MESSAGES) {
            let n = (1 + rng.next() % 4).min(MESSAGES - published);
            let batch: Vec<Vec<u8>> = (published..published + n).map(message).collect();
            sender
                .publish_batch(clock.read(), batch.iter().map(|m| m.as_slice()))
                .unwrap();
            published += n;
        }
        if published == MESSAGES && !ended {
            sender.end_session(clock.read());
            ended = true;
        }
        while let Some(p) = sender.poll_transmit() {
            copies.send_to(&p, me);
            copies.send_to(&p, me);
            later.push_back((now + Duration::from_millis(30), p));
        }
        while later.front().is_some_and(|(t, _)| *t <= now) {
            let (_, p) = later.pop_front().unwrap();
            resend.send_to(&p, me);
        }
        copies.flush().unwrap();
        resend.flush().unwrap();
        // Delay reports to the publisher: read and dropped.
        let _ = resend.recv_burst();

        node.receive().unwrap();
        node.release(&mut |_, _| {});
        node.housekeeping().unwrap();

        relay.pump();
        tap.pump();
        while let Ok(d) = rx.try_recv() {
            feed.take(d.bytes());
        }
        feed.ask(send_request, now);
        if feed.complete() && done_at.is_none() {
            done_at = Some(now);
            relay.release_all();
        }
        // Then until every request the client made was answered.
        if done_at.is_some_and(|t| now - t > Duration::from_millis(300)) && tap.unanswered() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_micros(50));
    }

    let report = node.report();
    let m = &report.mold;
    eprintln!(
        "{MESSAGES} messages; Jasper input: {} copies lost, receiver late {} (released out of order {}); \
         downstream: {} packets, relay lost {} and reordered {}; feed handler saw {} gaps, {} duplicates; \
         client re-requests {} ({} by the feed handler for the rest of a range), server: {} requests, {} served ({} after waiting), {} refused, {} messages re-sent",
        copies.counters().injected_loss,
        report.core.late,
        m.out_of_order,
        m.packets,
        relay.lost,
        relay.reordered,
        feed.gaps_seen,
        feed.duplicates,
        tap.total_requests,
        feed.requests,
        m.requests,
        m.requests_served,
        m.requests_deferred,
        m.requests_refused,
        m.messages_resent
    );

    // Every message exactly once, in sequence.
    assert_eq!(feed.held.len() as u64, MESSAGES);
    for (k, got) in feed.held.iter().enumerate() {
        assert_eq!(got, &message(k as u64), "MoldUDP64 sequence {}", k + 1);
    }
    assert_eq!(feed.end, Some(MESSAGES + 1));
    // Every request answered.
    assert!(tap.total_requests > 0);
    assert_eq!(tap.unanswered(), 0);
    assert_eq!(m.requests, tap.total_requests);
    assert_eq!(m.requests_served, m.requests);
    assert_eq!(m.requests_refused, 0);
    // The run did lose and reorder, on both legs.
    assert!(copies.counters().injected_loss > 0);
    assert!(
        m.out_of_order > 0,
        "a recovered message was released out of order"
    );
    assert!(relay.lost > 0 && relay.reordered > 0);
    assert!(feed.gaps_seen > 0);
    assert!(m.end_packets >= 1);
}
