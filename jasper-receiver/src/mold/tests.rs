//! The hand-off driven with virtual time: every packet it sends is recorded.

use super::emit::{END_COUNT, MAX_PACKET};
use super::server::MAX_WAITING;
use super::*;

const MS: u64 = 1_000_000;
const T0: u64 = 1_000 * MS;

#[derive(Debug, Default)]
struct Tape {
    feed: Vec<Vec<u8>>,
    replies: Vec<(Vec<u8>, SocketAddr)>,
}

impl Wire for Tape {
    fn feed(&mut self, pkt: &[u8]) {
        self.feed.push(pkt.to_vec());
    }
    fn reply(&mut self, pkt: &[u8], to: SocketAddr) {
        self.replies.push((pkt.to_vec(), to));
    }
}

/// A decoded downstream packet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pkt {
    name: String,
    seq: u64,
    count: u16,
    msgs: Vec<Vec<u8>>,
}

fn decode(b: &[u8]) -> Pkt {
    assert!(b.len() >= 20);
    let count = u16::from_be_bytes([b[18], b[19]]);
    let mut msgs = Vec::new();
    let mut rest = &b[20..];
    if count != END_COUNT {
        for _ in 0..count {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            msgs.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
    }
    assert!(rest.is_empty(), "trailing bytes");
    Pkt {
        name: String::from_utf8(b[..10].to_vec()).unwrap(),
        seq: u64::from_be_bytes(b[10..18].try_into().unwrap()),
        count,
        msgs,
    }
}

fn cfg() -> ReceiverSection {
    ReceiverSection {
        mold_udp: Some("127.0.0.1:9000".parse().unwrap()),
        mold_request: Some("127.0.0.1:9001".parse().unwrap()),
        ..ReceiverSection::default()
    }
}

fn rel(stream: u32, session: u32, seq: u64) -> Release {
    Release {
        stream,
        session,
        seq,
        send_time_ns: 0,
        deadline_ns: 0,
        arrival_ns: 0,
        release_ns: 0,
        late: false,
        early: false,
        path: 0,
        hops: 0,
    }
}

fn name(stream: u32, session: u32) -> String {
    String::from_utf8(session_name("J", stream, session).to_vec()).unwrap()
}

fn request(name: &str, seq: u64, count: u16) -> Vec<u8> {
    let mut r = name.as_bytes().to_vec();
    r.extend_from_slice(&seq.to_be_bytes());
    r.extend_from_slice(&count.to_be_bytes());
    r
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A core with stream 1, session 7 open, and Jasper sequences `seqs`
/// released (payload = the sequence as one byte, repeated `size` times).
fn released(c: &ReceiverSection, seqs: &[u64], size: usize) -> (MoldCore, Tape) {
    let mut m = MoldCore::new(c, T0);
    let mut tape = Tape::default();
    m.new_session(1, 7, T0);
    for &s in seqs {
        m.release(&rel(1, 7, s), &vec![s as u8; size], T0, &mut tape);
    }
    m.poll(T0, &mut tape);
    (m, tape)
}

#[test]
fn session_names_hold_prefix_stream_and_publisher_session() {
    assert_eq!(&session_name("J", 1, 0), b"J1AAAAAAAA");
    assert_eq!(&session_name("J", 1, 27), b"J1AAAAAABB");
    assert_eq!(&session_name("JASPER", 1, 26 * 26 * 26 - 1), b"JASPER1ZZZ");
    assert_eq!(&session_name("J", 123_456, 1), b"J123456AAB");
    // Letters after the digits: stream 1 and stream 12 never collide.
    let a: Vec<[u8; 10]> = (0..2000).map(|s| session_name("J", 1, s)).collect();
    let b: Vec<[u8; 10]> = (0..2000).map(|s| session_name("J", 12, s)).collect();
    assert!(a.iter().all(|x| !b.contains(x)));
    // A restarted publisher (a newer session) gets a new name.
    assert_ne!(session_name("J", 1, 1_000), session_name("J", 1, 1_001));
}

#[test]
fn frames_are_moldudp64() {
    let mut m = MoldCore::new(&cfg(), T0);
    let mut tape = Tape::default();
    m.new_session(1, 7, T0);
    m.release(&rel(1, 7, 0), b"ab", T0, &mut tape);
    m.release(&rel(1, 7, 1), b"cde", T0, &mut tape);
    m.release(&rel(1, 7, 5), b"z", T0, &mut tape); // a gap starts a new packet
    m.poll(T0, &mut tape);
    let n = name(1, 7);
    let got: Vec<Pkt> = tape.feed.iter().map(|p| decode(p)).collect();
    assert_eq!(
        got,
        vec![
            Pkt {
                name: n.clone(),
                seq: 1,
                count: 2,
                msgs: vec![b"ab".to_vec(), b"cde".to_vec()]
            },
            Pkt {
                name: n,
                seq: 6,
                count: 1,
                msgs: vec![b"z".to_vec()]
            },
        ]
    );
    assert_eq!(&tape.feed[0][20..], b"\x00\x02ab\x00\x03cde");
}

#[test]
fn packets_stay_within_one_mtu() {
    let (m, tape) = released(&cfg(), &(0..200).collect::<Vec<_>>(), 100);
    let mut next = 1;
    for p in &tape.feed {
        assert!(p.len() <= MAX_PACKET, "{} bytes", p.len());
        let d = decode(p);
        assert_eq!(d.seq, next);
        next += d.count as u64;
    }
    assert_eq!(next, 201);
    assert_eq!(m.stats().messages, 200);
}

#[test]
fn each_stream_is_its_own_session() {
    let mut m = MoldCore::new(&cfg(), T0);
    let mut tape = Tape::default();
    m.new_session(1, 7, T0);
    m.new_session(2, 9, T0);
    for s in 0..3 {
        m.release(&rel(1, 7, s), b"a", T0, &mut tape);
        m.release(&rel(2, 9, s), b"b", T0, &mut tape);
        m.poll(T0, &mut tape);
    }
    let mut by: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for p in tape.feed.iter().map(|p| decode(p)) {
        let e = by.entry(p.name.clone()).or_default();
        e.extend((0..p.count as u64).map(|i| p.seq + i));
    }
    assert_eq!(by.len(), 2);
    assert_eq!(by[&name(1, 7)], vec![1, 2, 3]);
    assert_eq!(by[&name(2, 9)], vec![1, 2, 3]);
    assert_eq!(m.stats().sessions, 2);
}

#[test]
fn heartbeats_carry_the_next_sequence() {
    let c = cfg();
    let (mut m, mut tape) = released(&c, &[0, 1, 2], 4);
    tape.feed.clear();
    let hb = c.mold_heartbeat_ms * MS;
    m.poll(T0 + hb - 1, &mut tape);
    assert!(tape.feed.is_empty(), "no heartbeat before the interval");
    assert_eq!(m.next_timer_ns(), Some(T0 + hb));
    m.poll(T0 + hb, &mut tape);
    m.poll(T0 + 2 * hb, &mut tape);
    let got: Vec<Pkt> = tape.feed.iter().map(|p| decode(p)).collect();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| p.count == 0 && p.seq == 4));
    assert_eq!(m.stats().heartbeats, 2);
}

#[test]
fn end_of_session_waits_for_every_held_message_then_repeats() {
    let c = cfg();
    let (mut m, mut tape) = released(&c, &[0, 1], 4);
    // The publisher's end (next Jasper sequence 4) overtakes messages 2 and 3.
    m.end_of_session(1, 4, T0);
    m.poll(T0, &mut tape);
    m.release(&rel(1, 7, 3), b"three", T0 + MS, &mut tape);
    m.poll(T0 + MS, &mut tape);
    assert!(
        tape.feed.iter().all(|p| decode(p).count != END_COUNT),
        "no end while message 2 is held"
    );
    assert!(!m.settled(T0 + MS, 0));
    m.release(&rel(1, 7, 2), b"two", T0 + 2 * MS, &mut tape);
    m.poll(T0 + 2 * MS, &mut tape);
    let last = decode(tape.feed.last().unwrap());
    assert_eq!((last.seq, last.count), (5, END_COUNT));
    let before_end: Vec<u64> = tape
        .feed
        .iter()
        .map(|p| decode(p))
        .take_while(|p| p.count != END_COUNT)
        .flat_map(|p| (0..p.count as u64).map(move |i| p.seq + i))
        .collect();
    assert_eq!(before_end, vec![1, 2, 4, 3], "every message before the end");
    assert!(m.settled(T0 + 2 * MS, 0));
    // Repeated in place of heartbeats, `mold_end_packets` in all, then quiet.
    let hb = c.mold_heartbeat_ms * MS;
    for k in 1..=2 * c.mold_end_packets as u64 {
        m.poll(T0 + 2 * MS + k * hb, &mut tape);
    }
    let ends: Vec<Pkt> = tape
        .feed
        .iter()
        .map(|p| decode(p))
        .filter(|p| p.count == END_COUNT)
        .collect();
    assert_eq!(ends.len(), c.mold_end_packets as usize);
    assert!(ends.iter().all(|p| p.seq == 5));
    assert_eq!(m.stats().heartbeats, 0, "ends replace heartbeats");
    assert_eq!(m.stats().out_of_order, 1);
    assert_eq!(m.next_timer_ns(), None);
}

#[test]
fn end_of_session_gives_up_on_lost_messages_after_the_wait() {
    let c = cfg();
    let (mut m, mut tape) = released(&c, &[0], 4);
    m.end_of_session(1, 3, T0);
    let wait = c.mold_end_wait_ms * MS;
    m.poll(T0 + wait - 1, &mut tape);
    assert!(tape.feed.iter().all(|p| decode(p).count != END_COUNT));
    assert_eq!(m.next_timer_ns(), Some(T0 + wait));
    m.poll(T0 + wait, &mut tape);
    let last = decode(tape.feed.last().unwrap());
    assert_eq!((last.seq, last.count), (4, END_COUNT));
}

#[test]
fn a_restarted_publisher_starts_a_new_session_and_ends_the_old_one() {
    let c = cfg();
    let (mut m, mut tape) = released(&c, &[0, 1, 2], 4);
    m.new_session(1, 8, T0);
    // A held message of the old session still goes to the old session.
    m.release(&rel(1, 7, 3), b"old", T0, &mut tape);
    m.release(&rel(1, 8, 0), b"new", T0, &mut tape);
    m.poll(T0, &mut tape);
    let got: Vec<Pkt> = tape.feed.iter().map(|p| decode(p)).collect();
    assert_eq!(got[got.len() - 2].name, name(1, 7));
    assert_eq!(got[got.len() - 2].seq, 4);
    assert_eq!(
        (got[got.len() - 1].name.clone(), got[got.len() - 1].seq),
        (name(1, 8), 1)
    );
    // The old one ends after the wait, at one past what it released.
    m.poll(T0 + c.mold_end_wait_ms * MS, &mut tape);
    let ends: Vec<Pkt> = tape
        .feed
        .iter()
        .map(|p| decode(p))
        .filter(|p| p.count == END_COUNT)
        .collect();
    assert_eq!(ends.len(), 1);
    assert_eq!((ends[0].name.clone(), ends[0].seq), (name(1, 7), 5));
    // A third session replaces the oldest; its late messages are dropped.
    m.new_session(1, 9, T0);
    m.release(&rel(1, 7, 4), b"x", T0, &mut tape);
    assert_eq!(m.stats().unrouted, 1);
    assert_eq!(m.sessions.len(), 2);
}

#[test]
fn requests_are_answered_from_the_buffer_one_mtu_at_a_time() {
    let (mut m, _) = released(&cfg(), &(0..100).collect::<Vec<_>>(), 36);
    let mut tape = Tape::default();
    let n = name(1, 7);
    m.request(T0, client(5000), &request(&n, 1, 100), &mut tape);
    m.request(T0, client(5000), &request(&n, 50, 2), &mut tape);
    m.request(T0, client(5000), &request(&n, 99, 0xFFFF), &mut tape);
    let got: Vec<Pkt> = tape.replies.iter().map(|(p, _)| decode(p)).collect();
    assert!(tape
        .replies
        .iter()
        .all(|(p, to)| p.len() <= MAX_PACKET && *to == client(5000)));
    // (1472 - 20) / (2 + 36) = 38 messages fit.
    assert_eq!((got[0].seq, got[0].count), (1, 38));
    assert_eq!(got[0].msgs[37], vec![37u8; 36]);
    assert_eq!((got[1].seq, got[1].count), (50, 2));
    assert_eq!(got[1].msgs, vec![vec![49u8; 36], vec![50u8; 36]]);
    assert_eq!(
        (got[2].seq, got[2].count),
        (99, 2),
        "what is kept of a huge count"
    );
    let st = m.stats();
    assert_eq!(
        (st.requests, st.requests_served, st.messages_resent),
        (3, 3, 42)
    );
    assert_eq!(st.requests_refused, 0);
}

#[test]
fn a_request_for_a_message_not_released_yet_is_answered_when_it_is() {
    // Released 0, 1, then 3 (2 is late): the feed handler sees a gap at 3.
    let (mut m, mut tape) = released(&cfg(), &[0, 1, 3], 1);
    let n = name(1, 7);
    m.request(T0, client(5000), &request(&n, 3, 2), &mut tape);
    m.poll(T0 + MS, &mut tape);
    assert!(tape.replies.is_empty());
    assert_eq!(m.stats().requests_deferred, 1);
    assert!(
        !m.settled(T0 + MS, 0),
        "a waiting request keeps the node up"
    );
    m.release(&rel(1, 7, 2), &[2], T0 + 2 * MS, &mut tape);
    m.poll(T0 + 2 * MS, &mut tape);
    let got: Vec<Pkt> = tape.replies.iter().map(|(p, _)| decode(p)).collect();
    // Answered from the requested sequence, with what follows it.
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].seq, got[0].msgs.clone()),
        (3, vec![vec![2], vec![3]])
    );
    assert_eq!(m.stats().requests_served, 1);
    assert!(m.settled(T0 + 2 * MS, 0));
}

#[test]
fn bad_requests_are_dropped_and_counted() {
    let mut c = cfg();
    c.mold_buffer_messages = 16;
    let (mut m, _) = released(&c, &(0..100).collect::<Vec<_>>(), 4);
    let mut tape = Tape::default();
    let n = name(1, 7);
    let from = client(5000);
    let mut long = request(&n, 90, 1);
    long.push(0);
    for bad in [
        vec![],
        request(&n, 90, 1)[..19].to_vec(),
        long,
        request(&n, 0, 1),
        request(&n, 90, 0),
    ] {
        m.request(T0, from, &bad, &mut tape);
    }
    m.request(T0, from, &request("XXXXXXXXXX", 90, 1), &mut tape);
    m.request(T0, from, &request(&name(1, 8), 90, 1), &mut tape);
    m.request(T0, from, &request(&n, 10, 1), &mut tape); // evicted
    m.request(T0, from, &request(&n, 101, 1), &mut tape); // never announced
    m.request(T0, from, &request(&n, u64::MAX, 0xFFFF), &mut tape);
    assert!(tape.replies.is_empty());
    let st = m.stats();
    assert_eq!(st.refused_malformed, 5);
    assert_eq!(st.refused_unknown_session, 2);
    assert_eq!(st.refused_out_of_range, 3);
    assert_eq!(st.requests_refused, 10);
    assert_eq!(st.requests, 10);
    // Arbitrary bytes never panic and never get an answer they should not.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 24) as usize;
        let mut b: Vec<u8> = (0..len).map(|k| (x >> (k % 8 * 8)) as u8).collect();
        if i % 2 == 0 && len >= 10 {
            b[..10].copy_from_slice(n.as_bytes());
        }
        m.request(T0 + i, client(6000 + (i % 300) as u16), &b, &mut tape);
    }
    m.poll(T0 + 10_000 * MS, &mut tape);
    for (p, _) in &tape.replies {
        let d = decode(p);
        assert!((85..=100).contains(&d.seq) && d.count >= 1);
    }
}

#[test]
fn waiting_requests_are_bounded_and_expire() {
    let c = cfg();
    let (mut m, mut tape) = released(&c, &[0, 5], 1);
    let n = name(1, 7);
    for _ in 0..MAX_WAITING + 1 {
        m.request(T0, client(5000), &request(&n, 2, 1), &mut tape);
    }
    assert_eq!(m.stats().refused_busy, 1);
    let wait = c.mold_request_wait_ms * MS;
    assert_eq!(m.next_timer_ns(), Some(T0 + wait));
    m.poll(T0 + wait, &mut tape);
    assert_eq!(m.stats().refused_expired, MAX_WAITING as u64);
    assert!(tape.replies.is_empty());
    assert!(m.settled(T0 + wait, 0));
}

#[test]
fn replies_are_rate_limited_per_requester_and_in_all() {
    let mut c = cfg();
    c.mold_replies_per_s = 100; // bursts of 16
    let (mut m, _) = released(&c, &[0, 1, 2], 1);
    let mut tape = Tape::default();
    let n = name(1, 7);
    let ask = request(&n, 1, 3);
    for _ in 0..20 {
        m.request(T0, client(5000), &ask, &mut tape);
    }
    assert_eq!(tape.replies.len(), 16);
    assert_eq!(m.stats().refused_rate, 4);
    // Refilled at 100 per second.
    m.request(T0 + 10 * MS, client(5000), &ask, &mut tape);
    assert_eq!(tape.replies.len(), 17);
    // All requesters together get four bursts.
    let (mut m, _) = released(&c, &[0, 1, 2], 1);
    let mut tape = Tape::default();
    for p in 1..=10u16 {
        for _ in 0..16 {
            m.request(T0, client(5000 + p), &ask, &mut tape);
        }
    }
    assert_eq!(tape.replies.len(), 64);
    assert_eq!(m.stats().refused_rate, 160 - 64);
}
