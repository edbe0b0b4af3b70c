//! The Jasper wire format, version 1 (byte-by-byte layout in `docs/PROTOCOL.md`).
//!
//! Every packet is a fixed 48-byte header, a kind-specific body, and an
//! optional authentication tag of `auth_len` bytes at the very end.
//! All integers are big-endian (network order).
//!
//! Two layers, in the smoltcp style:
//! - [`Packet<T>`] is a zero-copy view over a buffer. [`Packet::new_checked`]
//!   validates the buffer once (length, magic, version, tag length); after
//!   that no accessor panics. Setters exist when `T: AsMut<[u8]>`.
//! - [`Repr`] is the parsed and fully validated form (the body is checked
//!   against the kind: message lengths add up, report bodies have their size).
//!   [`Repr::parse`] never panics on any byte string.
//!
//! Data packets carry a batch of length-prefixed messages: `u16 length`
//! followed by that many bytes, `count` times. [`DataBuilder`] packs them.

use core::fmt;

/// `"JSPR"`.
pub const MAGIC: u32 = 0x4A53_5052;
/// The only version this code speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 48;
/// Largest authentication tag the header can announce.
pub const MAX_AUTH_LEN: usize = 64;
/// Size of one message length prefix.
pub const MSG_LEN_PREFIX: usize = 2;
/// Body size of a [`Kind::DelayReport`].
pub const DELAY_REPORT_LEN: usize = 32;
/// Body size of a [`Kind::Control`].
pub const CONTROL_LEN: usize = 16;
/// Retransmit request body length.
pub const RETRANSMIT_REQUEST_LEN: usize = 8;
/// Most sequences one retransmit request may ask for.
pub const MAX_REQUEST_SEQS: u32 = 1 << 16;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const FLAGS: Range<usize> = 6..8;
    pub const STREAM: Range<usize> = 8..12;
    pub const SESSION: Range<usize> = 12..16;
    pub const SEQ: Range<usize> = 16..24;
    pub const COUNT: Range<usize> = 24..26;
    pub const PATH: Range<usize> = 26..28;
    pub const HOPS: usize = 28;
    pub const AUTH_LEN: usize = 29;
    pub const KEY_ID: usize = 30;
    pub const RESERVED: usize = 31;
    pub const SEND_TIME: Range<usize> = 32..40;
    pub const DEADLINE: Range<usize> = 40..48;
}

/// Packet kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A batch of market-data messages, `seq .. seq + count`.
    Data = 1,
    /// Liveness when idle: `seq` is the next sequence the sender will use.
    Heartbeat = 2,
    /// Ask for sequences `seq ..` again, node → upstream (body:
    /// [`RetransmitRequest`]; the header's `count` is 0). Answered with the
    /// original [`Kind::Data`] packets, unchanged: their tags were made by
    /// the publisher, so a retransmission is exactly a late copy.
    RetransmitRequest = 3,
    /// Reserved: a re-sent data batch, same body as [`Kind::Data`] (parsed,
    /// never sent; retransmissions reuse the original data packets).
    RetransmitData = 4,
    /// One-way-delay estimate, child → parent (body: [`DelayReport`]).
    DelayReport = 5,
    /// Control operations (body: [`Control`]).
    Control = 6,
}

impl Kind {
    /// Decode a kind byte.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Data,
            2 => Kind::Heartbeat,
            3 => Kind::RetransmitRequest,
            4 => Kind::RetransmitData,
            5 => Kind::DelayReport,
            6 => Kind::Control,
            _ => return None,
        })
    }
    /// Stable lower-case name (for counters and logs).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Heartbeat => "heartbeat",
            Kind::RetransmitRequest => "retransmit_request",
            Kind::RetransmitData => "retransmit_data",
            Kind::DelayReport => "delay_report",
            Kind::Control => "control",
        }
    }
}

/// Header flag bits.
pub mod flags {
    /// An authentication tag of `auth_len` bytes ends the packet.
    pub const AUTH: u16 = 0x0001;
    /// Set by the sender when the deadline was computed without a
    /// synchronized clock (receivers count such messages as degraded).
    pub const CLOCK_DEGRADED: u16 = 0x0004;
    /// All bits this version defines; others must be zero.
    pub const KNOWN: u16 = AUTH | CLOCK_DEGRADED;
}

/// Why a byte string is not a valid packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the fixed header (or than the announced tag).
    #[error("packet truncated: {len} bytes, need at least {need}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// First four bytes are not `JSPR`.
    #[error("bad magic")]
    BadMagic,
    /// A version this code does not speak.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// Unknown kind byte.
    #[error("unknown packet kind {0}")]
    BadKind(u8),
    /// Flag bits this version does not define, or AUTH inconsistent with `auth_len`.
    #[error("bad flags {0:#06x}")]
    BadFlags(u16),
    /// `auth_len` larger than [`MAX_AUTH_LEN`].
    #[error("authentication tag length {0} too large")]
    BadAuthLen(u8),
    /// The body does not match the kind (message lengths, report size...).
    #[error("malformed {kind} body")]
    BadBody {
        /// Kind whose body was malformed.
        kind: &'static str,
    },
    /// The destination buffer is too small to emit into.
    #[error("buffer too small: {have} bytes, need {need}")]
    BufferTooSmall {
        /// Bytes available.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A message longer than a u16 length prefix can describe.
    #[error("message of {0} bytes exceeds 65535")]
    MessageTooLong(usize),
}

impl WireError {
    /// Stable name for drop counters.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated { .. } => "truncated",
            WireError::BadMagic => "bad_magic",
            WireError::BadVersion(_) => "bad_version",
            WireError::BadKind(_) => "bad_kind",
            WireError::BadFlags(_) => "bad_flags",
            WireError::BadAuthLen(_) => "bad_auth_len",
            WireError::BadBody { .. } => "bad_body",
            WireError::BufferTooSmall { .. } => "buffer_too_small",
            WireError::MessageTooLong(_) => "message_too_long",
        }
    }
}

#[inline]
fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
#[inline]
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
#[inline]
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Zero-copy view of a Jasper packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without any check. Accessors may panic on a short buffer; use
    /// [`Packet::new_checked`] for untrusted input.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap and validate the header (length, magic, version, kind, flags,
    /// tag length). After this no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Packet { buffer };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                len: b.len(),
                need: HEADER_LEN,
            });
        }
        if be_u32(&b[field::MAGIC]) != MAGIC {
            return Err(WireError::BadMagic);
        }
        if b[field::VERSION] != VERSION {
            return Err(WireError::BadVersion(b[field::VERSION]));
        }
        if Kind::from_u8(b[field::KIND]).is_none() {
            return Err(WireError::BadKind(b[field::KIND]));
        }
        let fl = be_u16(&b[field::FLAGS]);
        let auth = b[field::AUTH_LEN];
        if fl & !flags::KNOWN != 0 || ((fl & flags::AUTH != 0) != (auth != 0)) {
            return Err(WireError::BadFlags(fl));
        }
        if auth as usize > MAX_AUTH_LEN {
            return Err(WireError::BadAuthLen(auth));
        }
        if b.len() < HEADER_LEN + auth as usize {
            return Err(WireError::Truncated {
                len: b.len(),
                need: HEADER_LEN + auth as usize,
            });
        }
        Ok(())
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The whole packet bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Packet kind (valid after `new_checked`).
    #[inline]
    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.buffer.as_ref()[field::KIND]).unwrap_or(Kind::Control)
    }
    /// Flag bits.
    #[inline]
    pub fn flags(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::FLAGS])
    }
    /// Stream (publisher) id.
    #[inline]
    pub fn stream(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::STREAM])
    }
    /// Session id (changes when a publisher restarts its sequence space).
    #[inline]
    pub fn session(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::SESSION])
    }
    /// Sequence of the first message (data), next sequence (heartbeat),
    /// first requested (retransmit request).
    #[inline]
    pub fn seq(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::SEQ])
    }
    /// Message count.
    #[inline]
    pub fn count(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::COUNT])
    }
    /// Path tag: id of the last proxy that forwarded this copy (0 = sender).
    #[inline]
    pub fn path(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::PATH])
    }
    /// Number of proxies this copy went through.
    #[inline]
    pub fn hops(&self) -> u8 {
        self.buffer.as_ref()[field::HOPS]
    }
    /// Length of the trailing authentication tag.
    #[inline]
    pub fn auth_len(&self) -> usize {
        self.buffer.as_ref()[field::AUTH_LEN] as usize
    }
    /// Key set that tagged this packet (0 = unauthenticated).
    #[inline]
    pub fn key_id(&self) -> u8 {
        self.buffer.as_ref()[field::KEY_ID]
    }
    /// Sender send time, synchronized nanoseconds since the Unix epoch.
    #[inline]
    pub fn send_time_ns(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::SEND_TIME])
    }
    /// Release deadline, synchronized nanoseconds since the Unix epoch.
    #[inline]
    pub fn deadline_ns(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::DEADLINE])
    }
    /// The body: between the header and the tag.
    #[inline]
    pub fn body(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = b.len().saturating_sub(self.auth_len()).max(HEADER_LEN);
        &b[HEADER_LEN..end]
    }
    /// The authentication tag (empty when absent).
    pub fn auth_tag(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - self.auth_len()..]
    }
    /// Iterate over the length-prefixed messages of a data body.
    /// Stops (without panicking) at the first inconsistency; use
    /// [`Repr::parse`] to validate first.
    pub fn messages(&self) -> Messages<'_> {
        Messages {
            rest: self.body(),
            left: self.count(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the path tag (a proxy does this once per received packet,
    /// before replicating, so every copy shares one buffer).
    #[inline]
    pub fn set_path(&mut self, path: u16) {
        self.buffer.as_mut()[field::PATH].copy_from_slice(&path.to_be_bytes());
    }
    /// Set the hop count.
    #[inline]
    pub fn set_hops(&mut self, hops: u8) {
        self.buffer.as_mut()[field::HOPS] = hops;
    }
    /// Set the tag length and key id (the tag itself is written by
    /// [`crate::auth::Auth`]).
    #[inline]
    pub fn set_auth(&mut self, auth_len: u8, key_id: u8) {
        let b = self.buffer.as_mut();
        b[field::AUTH_LEN] = auth_len;
        b[field::KEY_ID] = key_id;
    }
    /// Set flag bits.
    #[inline]
    pub fn set_flags(&mut self, f: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&f.to_be_bytes());
    }
    /// Mutable body.
    pub fn body_mut(&mut self) -> &mut [u8] {
        let auth = self.auth_len();
        let b = self.buffer.as_mut();
        let end = b.len().saturating_sub(auth).max(HEADER_LEN);
        &mut b[HEADER_LEN..end]
    }
}

/// Iterator over the messages of a data body.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> Iterator for Messages<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 || self.rest.len() < MSG_LEN_PREFIX {
            return None;
        }
        let len = be_u16(self.rest) as usize;
        let total = MSG_LEN_PREFIX + len;
        if self.rest.len() < total {
            self.left = 0;
            return None;
        }
        let m = &self.rest[MSG_LEN_PREFIX..total];
        self.rest = &self.rest[total..];
        self.left -= 1;
        Some(m)
    }
}

/// The fixed header fields, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet kind.
    pub kind: Kind,
    /// Flags (see [`flags`]).
    pub flags: u16,
    /// Stream (publisher) id.
    pub stream: u32,
    /// Session id.
    pub session: u32,
    /// First sequence / next sequence / first requested.
    pub seq: u64,
    /// Message count / requested count.
    pub count: u16,
    /// Path tag.
    pub path: u16,
    /// Hop count.
    pub hops: u8,
    /// Send time (synchronized ns).
    pub send_time_ns: u64,
    /// Release deadline (synchronized ns).
    pub deadline_ns: u64,
}

impl Header {
    /// A header of `kind` with every other field zero.
    pub fn new(kind: Kind) -> Header {
        Header {
            kind,
            flags: 0,
            stream: 0,
            session: 0,
            seq: 0,
            count: 0,
            path: 0,
            hops: 0,
            send_time_ns: 0,
            deadline_ns: 0,
        }
    }

    /// Write the header (with `auth_len` = 0) into `buf[..HEADER_LEN]`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::BufferTooSmall {
                have: buf.len(),
                need: HEADER_LEN,
            });
        }
        buf[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        buf[field::VERSION] = VERSION;
        buf[field::KIND] = self.kind as u8;
        buf[field::FLAGS].copy_from_slice(&(self.flags & !flags::AUTH).to_be_bytes());
        buf[field::STREAM].copy_from_slice(&self.stream.to_be_bytes());
        buf[field::SESSION].copy_from_slice(&self.session.to_be_bytes());
        buf[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        buf[field::COUNT].copy_from_slice(&self.count.to_be_bytes());
        buf[field::PATH].copy_from_slice(&self.path.to_be_bytes());
        buf[field::HOPS] = self.hops;
        buf[field::AUTH_LEN] = 0;
        buf[field::KEY_ID] = 0;
        buf[field::RESERVED] = 0;
        buf[field::SEND_TIME].copy_from_slice(&self.send_time_ns.to_be_bytes());
        buf[field::DEADLINE].copy_from_slice(&self.deadline_ns.to_be_bytes());
        Ok(())
    }

    fn read<T: AsRef<[u8]>>(p: &Packet<T>) -> Header {
        Header {
            kind: p.kind(),
            flags: p.flags(),
            stream: p.stream(),
            session: p.session(),
            seq: p.seq(),
            count: p.count(),
            path: p.path(),
            hops: p.hops(),
            send_time_ns: p.send_time_ns(),
            deadline_ns: p.deadline_ns(),
        }
    }
}

/// One-way-delay report body (child → parent), 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayReport {
    /// Node id of the reporter (for a proxy: itself, carrying its subtree's max).
    pub node: u32,
    /// Number of receivers whose estimates were reduced into this one.
    pub receivers: u32,
    /// The estimate: a high percentile of one-way delay, ns.
    pub owd_ns: u64,
    /// Worst clock error bound among those receivers, ns.
    pub clock_bound_ns: u64,
    /// Samples behind the estimate (0 = no data yet).
    pub samples: u64,
}

impl DelayReport {
    fn parse(b: &[u8]) -> Result<Self, WireError> {
        if b.len() != DELAY_REPORT_LEN {
            return Err(WireError::BadBody {
                kind: "delay_report",
            });
        }
        Ok(DelayReport {
            node: be_u32(&b[0..4]),
            receivers: be_u32(&b[4..8]),
            owd_ns: be_u64(&b[8..16]),
            clock_bound_ns: be_u64(&b[16..24]),
            samples: be_u64(&b[24..32]),
        })
    }
    fn emit(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.node.to_be_bytes());
        b[4..8].copy_from_slice(&self.receivers.to_be_bytes());
        b[8..16].copy_from_slice(&self.owd_ns.to_be_bytes());
        b[16..24].copy_from_slice(&self.clock_bound_ns.to_be_bytes());
        b[24..32].copy_from_slice(&self.samples.to_be_bytes());
    }
}

/// Retransmit request body (node → upstream), 8 bytes: requester id (u32),
/// sequences wanted from the header's `seq` (u32, 1..=[`MAX_REQUEST_SEQS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitRequest {
    /// The requesting node (its node key tags the request).
    pub node: u32,
    /// Sequences wanted, from the header's `seq`.
    pub count: u32,
}

impl RetransmitRequest {
    fn parse(b: &[u8]) -> Result<Self, WireError> {
        if b.len() != RETRANSMIT_REQUEST_LEN {
            return Err(WireError::BadBody {
                kind: "retransmit_request",
            });
        }
        let r = RetransmitRequest {
            node: be_u32(&b[0..4]),
            count: be_u32(&b[4..8]),
        };
        if r.count == 0 || r.count > MAX_REQUEST_SEQS {
            return Err(WireError::BadBody {
                kind: "retransmit_request",
            });
        }
        Ok(r)
    }
    fn emit(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.node.to_be_bytes());
        b[4..8].copy_from_slice(&self.count.to_be_bytes());
    }
}

/// Control operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    /// The stream ends; `arg` = the sequence after the last message
    /// (like MoldUDP64's count 0xFFFF).
    EndOfSession,
    /// Ask the node to stop (operator/test harness use only).
    Shutdown,
    /// A session starts; `arg` = its first sequence. Sent by a publisher
    /// when it starts (or restarts, with a new session id).
    SessionStart,
    /// An operation this version does not know; forwarded, otherwise ignored.
    Other(u16),
}

impl ControlOp {
    fn code(self) -> u16 {
        match self {
            ControlOp::EndOfSession => 1,
            ControlOp::Shutdown => 2,
            ControlOp::SessionStart => 3,
            ControlOp::Other(c) => c,
        }
    }
    fn from_code(c: u16) -> ControlOp {
        match c {
            1 => ControlOp::EndOfSession,
            2 => ControlOp::Shutdown,
            3 => ControlOp::SessionStart,
            c => ControlOp::Other(c),
        }
    }
}

/// Control body, 16 bytes: op (u16), 6 reserved bytes, argument (u64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Operation.
    pub op: ControlOp,
    /// Operation argument.
    pub arg: u64,
}

/// The validated, parsed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr<'a> {
    /// Header fields.
    pub header: Header,
    /// Kind-specific body.
    pub body: Body<'a>,
    /// Authentication tag bytes (empty when absent).
    pub auth_tag: &'a [u8],
}

/// Kind-specific body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// Data or retransmit data: `header.count` length-prefixed messages,
    /// exactly filling this slice.
    Messages(&'a [u8]),
    /// Heartbeat: empty body.
    Empty,
    /// Retransmit request.
    Request(RetransmitRequest),
    /// Delay report.
    Report(DelayReport),
    /// Control.
    Control(Control),
}

impl<'a> Repr<'a> {
    /// Parse and validate. Never panics, whatever the bytes.
    pub fn parse(p: &Packet<&'a [u8]>) -> Result<Repr<'a>, WireError> {
        Self::parse_bytes(p.buffer)
    }

    /// Validate and parse raw bytes.
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Repr<'a>, WireError> {
        let p = Packet::new_checked(bytes)?;
        let header = Header::read(&p);
        let auth = p.auth_len();
        let body: &'a [u8] = &bytes[HEADER_LEN..bytes.len() - auth];
        let auth_tag: &'a [u8] = &bytes[bytes.len() - auth..];
        let body = match header.kind {
            Kind::Data | Kind::RetransmitData => {
                validate_messages(body, header.count)?;
                Body::Messages(body)
            }
            Kind::RetransmitRequest => Body::Request(RetransmitRequest::parse(body)?),
            Kind::Heartbeat => {
                if !body.is_empty() {
                    return Err(WireError::BadBody {
                        kind: header.kind.name(),
                    });
                }
                Body::Empty
            }
            Kind::DelayReport => Body::Report(DelayReport::parse(body)?),
            Kind::Control => {
                if body.len() != CONTROL_LEN {
                    return Err(WireError::BadBody { kind: "control" });
                }
                Body::Control(Control {
                    op: ControlOp::from_code(be_u16(&body[0..2])),
                    arg: be_u64(&body[8..16]),
                })
            }
        };
        Ok(Repr {
            header,
            body,
            auth_tag,
        })
    }

    /// Bytes this packet occupies when emitted (without a tag).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match &self.body {
                Body::Messages(m) => m.len(),
                Body::Empty => 0,
                Body::Request(_) => RETRANSMIT_REQUEST_LEN,
                Body::Report(_) => DELAY_REPORT_LEN,
                Body::Control(_) => CONTROL_LEN,
            }
    }

    /// Emit into `buf`; returns the number of bytes written.
    /// The authentication tag is not emitted (tags are added by the layer
    /// that owns the key, after emission).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let need = self.buffer_len();
        if buf.len() < need {
            return Err(WireError::BufferTooSmall {
                have: buf.len(),
                need,
            });
        }
        self.header.emit(buf)?;
        let body = &mut buf[HEADER_LEN..need];
        match &self.body {
            Body::Messages(m) => body.copy_from_slice(m),
            Body::Empty => {}
            Body::Request(r) => r.emit(body),
            Body::Report(r) => r.emit(body),
            Body::Control(c) => {
                body[0..2].copy_from_slice(&c.op.code().to_be_bytes());
                body[2..8].fill(0);
                body[8..16].copy_from_slice(&c.arg.to_be_bytes());
            }
        }
        Ok(need)
    }

    /// Iterate the messages (empty for non-data kinds).
    pub fn messages(&self) -> Messages<'a> {
        match self.body {
            Body::Messages(m) => Messages {
                rest: m,
                left: self.header.count,
            },
            _ => Messages { rest: &[], left: 0 },
        }
    }
}

fn validate_messages(body: &[u8], count: u16) -> Result<(), WireError> {
    if messages_all_of_first_len(body, count) {
        return Ok(());
    }
    walk_messages(body, count)
}

/// The framing check, message by message: each length prefix says where
/// the next one starts (a chain of dependent loads). Work is bounded by the
/// body's length, never by `count` alone: every step advances 2 bytes or
/// more and stops once past the end.
fn walk_messages(body: &[u8], count: u16) -> Result<(), WireError> {
    let n = body.len();
    let mut off = 0usize;
    for _ in 0..count {
        if n - off.min(n) < MSG_LEN_PREFIX {
            return Err(WireError::BadBody { kind: "data" });
        }
        off += MSG_LEN_PREFIX + be_u16(&body[off..]) as usize;
    }
    if off != n {
        return Err(WireError::BadBody { kind: "data" });
    }
    Ok(())
}

/// True when the body is `count` messages all as long as the first one
/// (the common case: fixed-size messages). Exactly the bodies
/// [`walk_messages`] accepts with equal lengths, checked with independent
/// loads: if every prefix at `k · (2 + len)` says `len` and the total is
/// `count · (2 + len)`, the walk visits exactly these prefixes and ends at
/// the end. False means "not shown", never "malformed": the walk decides.
#[inline]
fn messages_all_of_first_len(body: &[u8], count: u16) -> bool {
    if count == 0 || body.len() < MSG_LEN_PREFIX {
        return false;
    }
    let step = MSG_LEN_PREFIX + be_u16(body) as usize;
    if step * count as usize != body.len() {
        return false;
    }
    let want = [body[0], body[1]];
    // Every prefix compared (no early exit: the loads overlap).
    body.chunks_exact(step)
        .fold(true, |ok, m| ok & (m[..MSG_LEN_PREFIX] == want))
}

/// The kind a packet claims, read without any check (None: too short for a
/// header, or an unknown kind). For ordering work only — what the packet
/// really is, the guard decides.
pub fn peek_kind(bytes: &[u8]) -> Option<Kind> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    Kind::from_u8(bytes[field::KIND])
}

/// Emit a packet with an empty body (heartbeat).
pub fn emit_empty(header: &Header, buf: &mut [u8]) -> Result<usize, WireError> {
    header.emit(buf)?;
    Ok(HEADER_LEN)
}

/// Emit a delay report.
pub fn emit_report(
    header: &Header,
    report: &DelayReport,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    Repr {
        header: *header,
        body: Body::Report(*report),
        auth_tag: &[],
    }
    .emit(buf)
}

/// Emit a retransmit request (`header.seq` = first sequence wanted).
pub fn emit_request(
    header: &Header,
    request: &RetransmitRequest,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    Repr {
        header: *header,
        body: Body::Request(*request),
        auth_tag: &[],
    }
    .emit(buf)
}

/// Emit a control packet.
pub fn emit_control(header: &Header, control: Control, buf: &mut [u8]) -> Result<usize, WireError> {
    Repr {
        header: *header,
        body: Body::Control(control),
        auth_tag: &[],
    }
    .emit(buf)
}

/// Packs messages into one data packet in place.
///
/// ```
/// use jasper_core::wire::{DataBuilder, Header, Kind, Repr};
/// let mut buf = [0u8; 256];
/// let mut h = Header::new(Kind::Data);
/// h.seq = 7;
/// let mut b = DataBuilder::new(&mut buf, 256).unwrap();
/// assert!(b.push(b"hello").unwrap());
/// assert!(b.push(b"world").unwrap());
/// let len = b.finish(&h);
/// let r = Repr::parse_bytes(&buf[..len]).unwrap();
/// assert_eq!(r.header.count, 2);
/// assert_eq!(r.messages().collect::<Vec<_>>(), vec![&b"hello"[..], &b"world"[..]]);
/// ```
#[derive(Debug)]
pub struct DataBuilder<'b> {
    buf: &'b mut [u8],
    limit: usize,
    len: usize,
    count: u16,
}

impl<'b> DataBuilder<'b> {
    /// Start a packet in `buf`, never growing past `limit` bytes
    /// (the path MTU payload, e.g. 1472 for UDP over a 1500-byte MTU).
    pub fn new(buf: &'b mut [u8], limit: usize) -> Result<Self, WireError> {
        let limit = limit.min(buf.len());
        if limit < HEADER_LEN + MSG_LEN_PREFIX {
            return Err(WireError::BufferTooSmall {
                have: limit,
                need: HEADER_LEN + MSG_LEN_PREFIX,
            });
        }
        Ok(DataBuilder {
            buf,
            limit,
            len: HEADER_LEN,
            count: 0,
        })
    }
    /// Messages packed so far.
    pub fn count(&self) -> u16 {
        self.count
    }
    /// Bytes used so far (header included).
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when no message has been packed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Would `msg_len` more bytes fit?
    pub fn fits(&self, msg_len: usize) -> bool {
        self.count < u16::MAX && self.len + MSG_LEN_PREFIX + msg_len <= self.limit
    }
    /// Append one message; `Ok(false)` when it does not fit (start a new packet).
    pub fn push(&mut self, msg: &[u8]) -> Result<bool, WireError> {
        if msg.len() > u16::MAX as usize {
            return Err(WireError::MessageTooLong(msg.len()));
        }
        if !self.fits(msg.len()) {
            if self.count == 0 {
                return Err(WireError::BufferTooSmall {
                    have: self.limit,
                    need: HEADER_LEN + MSG_LEN_PREFIX + msg.len(),
                });
            }
            return Ok(false);
        }
        let at = self.len;
        self.buf[at..at + 2].copy_from_slice(&(msg.len() as u16).to_be_bytes());
        self.buf[at + 2..at + 2 + msg.len()].copy_from_slice(msg);
        self.len += MSG_LEN_PREFIX + msg.len();
        self.count += 1;
        Ok(true)
    }
    /// Write the header (its `count` is overwritten) and return the packet length.
    pub fn finish(self, header: &Header) -> usize {
        let mut h = *header;
        h.count = self.count;
        // The constructor guaranteed HEADER_LEN bytes.
        let _ = h.emit(self.buf);
        self.len
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The framing check as it was written first (the reference).
    fn reference_walk(mut body: &[u8], count: u16) -> bool {
        for _ in 0..count {
            if body.len() < MSG_LEN_PREFIX {
                return false;
            }
            let len = be_u16(body) as usize;
            if body.len() < MSG_LEN_PREFIX + len {
                return false;
            }
            body = &body[MSG_LEN_PREFIX + len..];
        }
        body.is_empty()
    }

    /// Bodies of `lens` messages, then `tail` extra bytes (or cut short).
    fn body_of(lens: &[u16], tail: i32) -> Vec<u8> {
        let mut b = Vec::new();
        for &l in lens {
            b.extend_from_slice(&l.to_be_bytes());
            b.extend(std::iter::repeat_n(0x5a, l as usize));
        }
        if tail >= 0 {
            b.extend(std::iter::repeat_n(0, tail as usize));
        } else {
            b.truncate(b.len().saturating_sub((-tail) as usize));
        }
        b
    }

    #[test]
    fn framing_fast_path_accepts_exactly_what_the_walk_accepts() {
        let cases: Vec<(Vec<u16>, i32, u16)> = vec![
            (vec![32; 20], 0, 20),
            (vec![32; 20], 0, 19),
            (vec![32; 20], 0, 21),
            (vec![32; 20], 1, 20),
            (vec![32; 20], -1, 20),
            (vec![32; 20], 34, 20),
            (vec![0; 5], 0, 5),
            (vec![0; 5], 0, 0),
            (vec![], 0, 0),
            (vec![], 2, 0),
            (vec![], 2, 1),
            (vec![32, 32, 31, 33, 32], 0, 5),
            (vec![10, 20, 10], 0, 3),
            (vec![65535], 0, 1),
            (vec![65535], -1, 1),
            (vec![1; 3], 0, u16::MAX),
        ];
        for (lens, tail, count) in cases {
            let b = body_of(&lens, tail);
            assert_eq!(
                validate_messages(&b, count).is_ok(),
                reference_walk(&b, count),
                "lens {lens:?} tail {tail} count {count}"
            );
        }
        // Equal lengths in total but one prefix differs: the walk decides.
        let mut b = body_of(&[32; 20], 0);
        b[34] = 0;
        b[35] = 66; // the 2nd prefix says 66: skips into the 4th message
        assert!(!messages_all_of_first_len(&b, 20));
        assert_eq!(validate_messages(&b, 20).is_ok(), reference_walk(&b, 20));
    }

    fn sample_header(kind: Kind) -> Header {
        Header {
            kind,
            flags: flags::CLOCK_DEGRADED,
            stream: 3,
            session: 9,
            seq: 1_000_000,
            count: 0,
            path: 17,
            hops: 2,
            send_time_ns: 1_700_000_000_000_000_000,
            deadline_ns: 1_700_000_000_000_250_000,
        }
    }

    #[test]
    fn peek_kind_reads_the_claimed_kind_and_nothing_else() {
        let mut buf = [0u8; 256];
        let n = emit_empty(&Header::new(Kind::Heartbeat), &mut buf).unwrap();
        assert_eq!(peek_kind(&buf[..n]), Some(Kind::Heartbeat));
        assert_eq!(
            peek_kind(&buf[..HEADER_LEN - 1]),
            None,
            "shorter than a header"
        );
        buf[5] = 0xEE;
        assert_eq!(peek_kind(&buf[..n]), None, "an unknown kind");
    }

    #[test]
    fn data_round_trip() {
        let mut buf = [0u8; 1500];
        let h = sample_header(Kind::Data);
        let mut b = DataBuilder::new(&mut buf, 1472).unwrap();
        for i in 0..10u8 {
            assert!(b.push(&[i; 30]).unwrap());
        }
        let n = b.finish(&h);
        assert_eq!(n, HEADER_LEN + 10 * 32);
        let r = Repr::parse_bytes(&buf[..n]).unwrap();
        assert_eq!(r.header.count, 10);
        assert_eq!(r.header.seq, h.seq);
        assert_eq!(r.header.path, 17);
        let msgs: Vec<_> = r.messages().collect();
        assert_eq!(msgs.len(), 10);
        assert_eq!(msgs[4], &[4u8; 30][..]);
        let mut out = [0u8; 1500];
        let m = r.emit(&mut out).unwrap();
        assert_eq!(&out[..m], &buf[..n]);
    }

    #[test]
    fn builder_stops_at_limit() {
        let mut buf = [0u8; 200];
        let mut b = DataBuilder::new(&mut buf, 100).unwrap();
        assert!(b.push(&[0; 20]).unwrap());
        assert!(b.push(&[0; 20]).unwrap());
        assert!(!b.push(&[0; 20]).unwrap());
        assert_eq!(b.count(), 2);
        let mut small = [0u8; 60];
        let mut b = DataBuilder::new(&mut small, 60).unwrap();
        assert!(matches!(
            b.push(&[0; 40]),
            Err(WireError::BufferTooSmall { .. })
        ));
    }

    #[test]
    fn report_and_control_round_trip() {
        let mut buf = [0u8; 128];
        let rep = DelayReport {
            node: 5,
            receivers: 10,
            owd_ns: 123_456,
            clock_bound_ns: 200,
            samples: 99,
        };
        let n = emit_report(&sample_header(Kind::DelayReport), &rep, &mut buf).unwrap();
        let r = Repr::parse_bytes(&buf[..n]).unwrap();
        assert_eq!(r.body, Body::Report(rep));
        let c = Control {
            op: ControlOp::EndOfSession,
            arg: 42,
        };
        let n = emit_control(&sample_header(Kind::Control), c, &mut buf).unwrap();
        assert_eq!(Repr::parse_bytes(&buf[..n]).unwrap().body, Body::Control(c));
        let n = emit_empty(&sample_header(Kind::Heartbeat), &mut buf).unwrap();
        assert_eq!(Repr::parse_bytes(&buf[..n]).unwrap().body, Body::Empty);
    }

    #[test]
    fn rejects_bad_headers() {
        let mut buf = [0u8; 64];
        let n = emit_empty(&sample_header(Kind::Heartbeat), &mut buf).unwrap();
        assert!(matches!(
            Repr::parse_bytes(&buf[..n - 1]),
            Err(WireError::Truncated { .. })
        ));
        let mut b2 = buf;
        b2[0] = b'X';
        assert_eq!(Repr::parse_bytes(&b2[..n]), Err(WireError::BadMagic));
        let mut b2 = buf;
        b2[4] = 2;
        assert_eq!(Repr::parse_bytes(&b2[..n]), Err(WireError::BadVersion(2)));
        let mut b2 = buf;
        b2[5] = 77;
        assert_eq!(Repr::parse_bytes(&b2[..n]), Err(WireError::BadKind(77)));
        let mut b2 = buf;
        b2[7] = 0x80;
        assert!(matches!(
            Repr::parse_bytes(&b2[..n]),
            Err(WireError::BadFlags(_))
        ));
        // AUTH flag with a tag that is longer than the packet.
        let mut b2 = buf;
        b2[7] |= flags::AUTH as u8;
        b2[29] = 32;
        assert!(matches!(
            Repr::parse_bytes(&b2[..n]),
            Err(WireError::Truncated { .. })
        ));
        // Heartbeat with a body.
        assert!(matches!(
            Repr::parse_bytes(&buf[..n + 1]),
            Err(WireError::BadBody { .. })
        ));
    }

    #[test]
    fn auth_tag_is_excluded_from_body() {
        let mut buf = [0u8; 128];
        let h = sample_header(Kind::Data);
        let mut b = DataBuilder::new(&mut buf, 128).unwrap();
        b.push(b"abc").unwrap();
        let n = b.finish(&h);
        buf[n..n + 8].copy_from_slice(b"TAGTAGTA");
        let mut p = Packet::new_unchecked(&mut buf[..n + 8]);
        p.set_flags(p.flags() | flags::AUTH);
        p.buffer[field::AUTH_LEN] = 8;
        let r = Repr::parse_bytes(&buf[..n + 8]).unwrap();
        assert_eq!(r.auth_tag, b"TAGTAGTA");
        assert_eq!(r.messages().next(), Some(&b"abc"[..]));
    }

    #[test]
    fn proxy_rewrite_in_place() {
        let mut buf = [0u8; 128];
        let mut b = DataBuilder::new(&mut buf, 128).unwrap();
        b.push(b"x").unwrap();
        let n = b.finish(&sample_header(Kind::Data));
        let mut p = Packet::new_checked(&mut buf[..n]).unwrap();
        p.set_path(999);
        p.set_hops(p.hops() + 1);
        let r = Repr::parse_bytes(&buf[..n]).unwrap();
        assert_eq!(r.header.path, 999);
        assert_eq!(r.header.hops, 3);
    }

    proptest! {
        #[test]
        fn framing_check_matches_the_reference(
            body in proptest::collection::vec(prop_oneof![Just(0u8), Just(2), Just(3), any::<u8>()], 0..200),
            count in 0u16..40,
            fixed in 0u16..12,
            n in 0usize..12,
            tail in -3i32..3,
        ) {
            prop_assert_eq!(validate_messages(&body, count).is_ok(), reference_walk(&body, count));
            let b = body_of(&vec![fixed; n], tail);
            prop_assert_eq!(validate_messages(&b, count).is_ok(), reference_walk(&b, count));
            prop_assert_eq!(validate_messages(&b, n as u16).is_ok(), reference_walk(&b, n as u16));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Repr::parse_bytes(&bytes);
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                // Every accessor is safe after new_checked.
                let _ = (p.kind(), p.seq(), p.count(), p.path(), p.deadline_ns(), p.auth_tag().len());
                let _ = p.messages().count();
            }
        }

        #[test]
        fn hostile_header_prefix(mut bytes in proptest::collection::vec(any::<u8>(), 48..300),
                                 kind in 1u8..=6, count in any::<u16>()) {
            // Valid magic/version so the body validators are exercised.
            bytes[0..4].copy_from_slice(&MAGIC.to_be_bytes());
            bytes[4] = VERSION;
            bytes[5] = kind;
            bytes[6] = 0; bytes[7] = 0; bytes[29] = 0;
            bytes[24..26].copy_from_slice(&count.to_be_bytes());
            if let Ok(r) = Repr::parse_bytes(&bytes) {
                // A successful parse re-emits to identical bytes (reserved bytes aside).
                let mut out = vec![0u8; r.buffer_len()];
                let n = r.emit(&mut out).unwrap();
                prop_assert_eq!(n, bytes.len());
                prop_assert_eq!(&out[..30], &bytes[..30]);
                prop_assert_eq!(&out[32..HEADER_LEN], &bytes[32..HEADER_LEN]);
                prop_assert_eq!(r.messages().count(), if matches!(r.body, Body::Messages(_)) { count as usize } else { 0 });
            }
        }

        #[test]
        fn data_round_trips(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..30),
                            seq in any::<u64>(), stream in any::<u32>(), dl in any::<u64>()) {
            let mut buf = vec![0u8; 4096];
            let mut h = Header::new(Kind::Data);
            h.seq = seq; h.stream = stream; h.deadline_ns = dl;
            let mut b = DataBuilder::new(&mut buf, 4096).unwrap();
            for m in &msgs { prop_assert!(b.push(m).unwrap()); }
            let n = b.finish(&h);
            let r = Repr::parse_bytes(&buf[..n]).unwrap();
            prop_assert_eq!(r.header.seq, seq);
            prop_assert_eq!(r.header.stream, stream);
            prop_assert_eq!(r.header.deadline_ns, dl);
            let got: Vec<Vec<u8>> = r.messages().map(|m| m.to_vec()).collect();
            prop_assert_eq!(got, msgs);
        }
    }
}
