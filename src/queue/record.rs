//! The on-disk record format: every record is a fixed header followed by a
//! payload, and carries a checksum over both, so recovery can tell a whole
//! record from a torn or stale one.
//!
//! ```text
//! header (24 octets, little-endian):
//!   magic  u32  "PSTN"
//!   kind   u8   1 = segment start (or, with a 9-octet payload, a note:
//!               hold or release; see [`Note`]), 2 = message,
//!               3 = recipients done, 4 = message done
//!   _      u8, u16 (zero)
//!   seq    u32  low 32 bits of the segment's sequence number (stale records
//!               from a recycled segment's previous life never match)
//!   len    u32  payload length
//!   crc    u32  CRC-32 of the header (crc field zeroed) and the payload
//!   _      u32  (zero)
//! ```
//!
//! Message payload (current layout):
//!
//! ```text
//!   id u64, arrival u64 (unix seconds),
//!   format u8    0x40 = this layout, | 0x80 when the queue time follows,
//!                | 0x20 when the disposition follows
//!   queued u64   queue time of arrival, ms (when 0x80)
//!   disposition (when 0x20): hold u8 (0 none, 1 by a [[filter]] rule,
//!                2 by storm suppression, 3 by the operator: a copy
//!                written again keeps the hold it had), route (u16
//!                length + bytes, empty = by domain)
//!   env_len u32  octets of the envelope section that follows
//!   envelope:
//!     flags u8   1 = BODY=8BITMIME, 2 = SMTPUTF8
//!     ret u8     0 = none, 1 = RET=FULL, 2 = RET=HDRS
//!     envid      u16 length + bytes (empty = none)
//!     from       u16 length + bytes (empty = null sender)
//!     rcpts u32, each: address (u16 length + bytes), notify u8 (bits:
//!                1 SUCCESS, 2 FAILURE, 4 DELAY, 8 NEVER; 0 = unspecified),
//!                orcpt (u16 length + bytes, empty = none)
//!     done u32, each finished recipient's index u32
//!   body         to the end of the payload
//! ```
//!
//! The body runs to the end of the payload, so the envelope can be written
//! before the body has arrived; `env_len` lets a reader take the envelope
//! whole before it streams the body. The done list lets a message be copied
//! forward with its state in one record. Recipient counts and indices are
//! 32 bits, above [`MAX_RECIPIENTS`], the most `max_recipients` allows.
//!
//! The first layout (format byte without 0x40, where it held the flags
//! bits) had 16-bit counts and no RFC 3461 fields: `from, rcpt count u16,
//! each rcpt, done count u16, each index u16`. It is still read, so queues
//! written by earlier versions recover; it is never written.
//!
//! Recipients-done payload: `id u64, 0xFFFF u16, count u32, each index
//! u32`, or, when a flag is set, `id u64, 0xFFFE u16, flags u8, count u32,
//! each index u32` (flag 1: the message's delay warning went out, so a
//! restart does not send it again); the first layout (`id u64, count u16,
//! each index u16`) is still read.

use std::fmt;
use std::sync::Arc;

use crate::smtp::envelope::MAX_RECIPIENTS;
use crate::smtp::{Address, BodyType, Envelope, Notify, RcptIndex, Recipient, Ret, ReversePath};

/// Size of the fixed record header.
pub const HEADER_LEN: usize = 24;
/// First four octets of every record header.
pub const MAGIC: u32 = u32::from_le_bytes(*b"PSTN");

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// First record of a segment: payload is the full 64-bit sequence number.
    SegmentStart = 1,
    /// An accepted message: envelope and body.
    Message = 2,
    /// Some recipients of a message are finished (delivered or failed with a
    /// report); payload: id, the complete list of finished indices.
    RcptsDone = 3,
    /// A message is finished for good; payload: id.
    Done = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::SegmentStart),
            2 => Some(Kind::Message),
            3 => Some(Kind::RcptsDone),
            4 => Some(Kind::Done),
            _ => None,
        }
    }
}

/// A parsed record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Record kind.
    pub kind: Kind,
    /// Low 32 bits of the owning segment's sequence number.
    pub seq: u32,
    /// Payload length.
    pub len: u32,
    /// Checksum as stored.
    pub crc: u32,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No magic: zeroes or garbage (the end of the written part).
    #[error("no record here")]
    NoRecord,
    /// Magic present but the kind is unknown.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The checksum does not match: a torn write or corruption.
    #[error("checksum mismatch")]
    Checksum,
    /// The payload does not decode.
    #[error("malformed payload")]
    Malformed,
}

impl Header {
    /// Encode a header for `payload`, computing the checksum over both.
    pub fn encode(kind: Kind, seq: u32, payload: &[u8]) -> [u8; HEADER_LEN] {
        let mut crc = crc32fast::Hasher::new();
        let raw = raw_header(kind, seq, payload.len() as u32, 0);
        crc.update(&raw);
        crc.update(payload);
        raw_header(kind, seq, payload.len() as u32, crc.finalize())
    }

    /// Encode a header from a checksum of the payload alone, computed while
    /// the payload streamed in (before the segment, hence `seq`, was known).
    pub fn encode_with_payload_crc(
        kind: Kind,
        seq: u32,
        len: u32,
        payload_crc: &crc32fast::Hasher,
    ) -> [u8; HEADER_LEN] {
        let mut crc = Header::start_crc(kind, seq, len);
        crc.combine(payload_crc);
        raw_header(kind, seq, len, crc.finalize())
    }

    fn start_crc(kind: Kind, seq: u32, len: u32) -> crc32fast::Hasher {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&raw_header(kind, seq, len, 0));
        crc
    }

    /// Parse a header; the checksum is checked later with the payload.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, RecordError> {
        if u32_at(b, 0) != MAGIC {
            return Err(RecordError::NoRecord);
        }
        let kind = Kind::from_u8(b[4]).ok_or(RecordError::UnknownKind(b[4]))?;
        Ok(Header {
            kind,
            seq: u32_at(b, 8),
            len: u32_at(b, 12),
            crc: u32_at(b, 16),
        })
    }

    /// A checksum primed with this header, for verifying a payload read in
    /// pieces; compare `finalize()` with [`Header::crc`].
    pub fn verifier(&self) -> crc32fast::Hasher {
        Header::start_crc(self.kind, self.seq, self.len)
    }

    /// Check the payload against the stored checksum.
    pub fn verify(&self, payload: &[u8]) -> Result<(), RecordError> {
        let mut crc = Header::start_crc(self.kind, self.seq, self.len);
        crc.update(payload);
        if crc.finalize() == self.crc {
            Ok(())
        } else {
            Err(RecordError::Checksum)
        }
    }
}

fn raw_header(kind: Kind, seq: u32, len: u32, crc: u32) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4] = kind as u8;
    b[8..12].copy_from_slice(&seq.to_le_bytes());
    b[12..16].copy_from_slice(&len.to_le_bytes());
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

// The format holds every envelope the config allows.
const _: () = assert!(MAX_RECIPIENTS <= u32::MAX as usize);

/// Flag bit: the client declared BODY=8BITMIME.
const FLAG_8BITMIME: u8 = 1;
/// Flag bit: the client used SMTPUTF8.
const FLAG_SMTPUTF8: u8 = 2;
/// Format bit: the queue time of arrival follows (`u64`, milliseconds).
/// Records written before the queue clock lack it.
const FLAG_QTIME: u8 = 0x80;
/// Format bit: the disposition (held, named route) follows the queue
/// time. Records without it are neither held nor routed by name.
const FLAG_DISPOSITION: u8 = 0x20;
/// Format bit: the envelope layout with 32-bit recipient counts and the
/// RFC 3461 fields. Records without it are in the first layout, where this
/// byte also held the FLAG_8BITMIME and FLAG_SMTPUTF8 bits.
const FORMAT_ENVELOPE: u8 = 0x40;
/// `RET=` as stored: none, FULL, HDRS.
const RET_NONE: u8 = 0;
const RET_FULL: u8 = 1;
const RET_HDRS: u8 = 2;
/// Octets every stored recipient takes at least (address length, one octet
/// of address, NOTIFY, ORCPT length): bounds what a count may claim.
const MIN_RCPT_LEN: usize = 6;
/// The first recipients-done layout had a u16 count where the current one
/// has this marker. No record of that layout has this count: its message
/// record held at most 65,535 recipients, and a list of all of them was
/// written as a "message done" record instead.
const RCPTS_DONE_MARKER: u16 = 0xFFFF;
/// Recipients-done layout with a flags octet after the marker (bit 1: the
/// delay warning went out).
const RCPTS_DONE_FLAGS_MARKER: u16 = 0xFFFE;
/// A recipients-done flag: the message's delay warning went out.
pub const DELAY_WARNED: u8 = 1;

/// Everything of a message record but the body: the envelope and the
/// message's queue facts.
#[derive(Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Queue id.
    pub id: u64,
    /// Arrival time, seconds since the epoch by the wall clock at arrival.
    pub arrival: u64,
    /// Queue time of arrival, milliseconds (`clock.rs`); `None` in records
    /// written before the queue clock existed.
    pub queued_ms: Option<u64>,
    /// Sender, recipients and their parameters.
    pub envelope: Arc<Envelope>,
    /// Indices of recipients already finished.
    pub done: Vec<RcptIndex>,
    /// Kept from delivery, and why.
    pub hold: Hold,
    /// Delivered over the route of this name (a `[[filter]]` said so)
    /// instead of by recipient domain.
    pub route: Option<String>,
    /// Its delay warning went out (from its latest recipients-done
    /// record; never in the message record itself).
    pub delay_warned: bool,
}

/// Why a message is kept from delivery. One hold, whoever set it: a
/// `[[filter]]` rule or storm suppression set it when the message is
/// queued (stored in the message record), the operator later (a [`Note`]
/// record, which also records a release of any kind). A restart keeps
/// whichever is the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hold {
    /// Not held.
    #[default]
    None,
    /// A `[[filter]]` rule with `hold = true`.
    Filter,
    /// Storm suppression, until its window ends.
    Storm,
    /// The operator (`postern queue hold`).
    Operator,
}

impl fmt::Debug for MessageMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MessageMeta({:X}, {} rcpts)",
            self.id,
            self.envelope.rcpts.len()
        )
    }
}

impl MessageMeta {
    /// Encode everything up to (not including) the body, in the current
    /// layout.
    pub fn encode(&self) -> Vec<u8> {
        let e = &self.envelope;
        let mut env = Vec::with_capacity(32 + e.rcpts.len() * 32);
        let mut flags = 0;
        if e.body == BodyType::EightBitMime {
            flags |= FLAG_8BITMIME;
        }
        if e.smtputf8 {
            flags |= FLAG_SMTPUTF8;
        }
        env.push(flags);
        env.push(match e.ret {
            None => RET_NONE,
            Some(Ret::Full) => RET_FULL,
            Some(Ret::Hdrs) => RET_HDRS,
        });
        put_str(&mut env, e.envid.as_deref().unwrap_or(""));
        put_str(&mut env, e.from.as_str());
        let rcpts = capped(e.rcpts.len());
        put_u32(&mut env, rcpts.0);
        for r in &e.rcpts[..rcpts.1] {
            put_str(&mut env, r.addr.as_str());
            env.push(r.notify.bits());
            put_str(&mut env, r.orcpt.as_deref().unwrap_or(""));
        }
        let done = capped(self.done.len());
        put_u32(&mut env, done.0);
        for d in &self.done[..done.1] {
            put_u32(&mut env, *d);
        }

        let mut out = Vec::with_capacity(29 + env.len());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.arrival.to_le_bytes());
        let disposition = self.hold != Hold::None || self.route.is_some();
        let mut format = FORMAT_ENVELOPE;
        if self.queued_ms.is_some() {
            format |= FLAG_QTIME;
        }
        if disposition {
            format |= FLAG_DISPOSITION;
        }
        out.push(format);
        if let Some(q) = self.queued_ms {
            out.extend_from_slice(&q.to_le_bytes());
        }
        if disposition {
            out.push(match self.hold {
                Hold::None => 0,
                Hold::Filter => 1,
                Hold::Storm => 2,
                Hold::Operator => 3,
            });
            put_str(&mut out, self.route.as_deref().unwrap_or(""));
        }
        put_u32(&mut out, capped(env.len()).0);
        out.extend_from_slice(&env);
        out
    }

    /// How many octets at the start of a message payload hold the meta,
    /// when the first octets tell (the current layout); `None` for the
    /// first layout or too short a prefix.
    pub fn encoded_len(prefix: &[u8]) -> Option<usize> {
        let mut r = Reader { p: prefix, at: 0 };
        r.u64().ok()?;
        r.u64().ok()?;
        let format = r.u8().ok()?;
        if format & FORMAT_ENVELOPE == 0 {
            return None;
        }
        if format & FLAG_QTIME != 0 {
            r.u64().ok()?;
        }
        if format & FLAG_DISPOSITION != 0 {
            r.u8().ok()?;
            r.string().ok()?;
        }
        let n = r.u32().ok()?;
        r.at.checked_add(usize::try_from(n).ok()?)
    }

    /// Decode from the start of a message payload, in either layout;
    /// returns the meta and the offset of the body within the payload.
    pub fn decode(p: &[u8]) -> Result<(MessageMeta, usize), RecordError> {
        let mut r = Reader { p, at: 0 };
        let id = r.u64()?;
        let arrival = r.u64()?;
        let format = r.u8()?;
        let queued_ms = if format & FLAG_QTIME != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let (hold, route) = if format & FLAG_DISPOSITION != 0 && format & FORMAT_ENVELOPE != 0 {
            let hold = match r.u8()? {
                0 => Hold::None,
                1 => Hold::Filter,
                2 => Hold::Storm,
                3 => Hold::Operator,
                _ => return Err(RecordError::Malformed),
            };
            (hold, Some(r.string()?).filter(|s| !s.is_empty()))
        } else {
            (Hold::None, None)
        };
        let (envelope, done) = if format & FORMAT_ENVELOPE != 0 {
            let len = usize::try_from(r.u32()?).map_err(|_| RecordError::Malformed)?;
            let env = r.take(len)?;
            let mut er = Reader { p: env, at: 0 };
            let parsed = decode_envelope(&mut er)?;
            if er.at != env.len() {
                return Err(RecordError::Malformed);
            }
            parsed
        } else {
            decode_first_layout(&mut r, format)?
        };
        if done.iter().any(|d| idx(*d) >= envelope.rcpts.len()) {
            return Err(RecordError::Malformed);
        }
        Ok((
            MessageMeta {
                id,
                arrival,
                queued_ms,
                envelope: Arc::new(envelope),
                done,
                hold,
                route,
                delay_warned: false,
            },
            r.at,
        ))
    }
}

/// The envelope section of the current layout.
fn decode_envelope(r: &mut Reader<'_>) -> Result<(Envelope, Vec<RcptIndex>), RecordError> {
    let flags = r.u8()?;
    if flags & !(FLAG_8BITMIME | FLAG_SMTPUTF8) != 0 {
        return Err(RecordError::Malformed);
    }
    let ret = match r.u8()? {
        RET_NONE => None,
        RET_FULL => Some(Ret::Full),
        RET_HDRS => Some(Ret::Hdrs),
        _ => return Err(RecordError::Malformed),
    };
    let envid = Some(r.string()?).filter(|s| !s.is_empty());
    let from = reverse_path(r.string()?)?;
    let n = r.count(MIN_RCPT_LEN)?;
    let mut rcpts = Vec::with_capacity(n);
    for _ in 0..n {
        let addr = Address::from_stored(&r.string()?).map_err(|_| RecordError::Malformed)?;
        let notify = Notify::from_bits(r.u8()?).ok_or(RecordError::Malformed)?;
        let orcpt = Some(r.string()?).filter(|s| !s.is_empty());
        rcpts.push(Recipient {
            addr,
            notify,
            orcpt,
        });
    }
    let nd = r.count(4)?;
    let mut done = Vec::with_capacity(nd);
    for _ in 0..nd {
        done.push(r.u32()?);
    }
    let envelope = Envelope {
        from,
        rcpts,
        body: body_type(flags),
        smtputf8: flags & FLAG_SMTPUTF8 != 0,
        ret,
        envid,
    };
    Ok((envelope, done))
}

/// The first layout, after `flags`: `from (u16 length + bytes, empty =
/// null sender), rcpt count u16, each rcpt (u16 length + bytes), done count
/// u16, each done index u16`. Still read, so queues written by earlier
/// versions recover.
fn decode_first_layout(
    r: &mut Reader<'_>,
    flags: u8,
) -> Result<(Envelope, Vec<RcptIndex>), RecordError> {
    let from = reverse_path(r.string()?)?;
    let n = r.u16()?;
    let mut rcpts = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let addr = Address::from_stored(&r.string()?).map_err(|_| RecordError::Malformed)?;
        rcpts.push(Recipient::new(addr));
    }
    let nd = r.u16()?;
    let mut done = Vec::with_capacity(usize::from(nd));
    for _ in 0..nd {
        done.push(RcptIndex::from(r.u16()?));
    }
    let envelope = Envelope {
        from,
        rcpts,
        body: body_type(flags),
        smtputf8: flags & FLAG_SMTPUTF8 != 0,
        ret: None,
        envid: None,
    };
    Ok((envelope, done))
}

fn body_type(flags: u8) -> BodyType {
    if flags & FLAG_8BITMIME != 0 {
        BodyType::EightBitMime
    } else {
        BodyType::SevenBit
    }
}

fn reverse_path(s: String) -> Result<ReversePath, RecordError> {
    if s.is_empty() {
        return Ok(ReversePath::Null);
    }
    Address::from_stored(&s)
        .map(ReversePath::Path)
        .map_err(|_| RecordError::Malformed)
}

/// A recipient index as a position in the envelope's list.
fn idx(i: RcptIndex) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

/// A length as stored (u32), and how many items that lets through: the
/// envelope never holds more than [`MAX_RECIPIENTS`], far below, but a
/// record must stay self-consistent whatever it is given.
fn capped(n: usize) -> (u32, usize) {
    let c = u32::try_from(n).unwrap_or(u32::MAX);
    (c, idx(c).min(n))
}

/// Encode a recipients-done payload: `id u64, marker u16 (0xFFFF), count
/// u32, each index u32`; with `flags` (e.g. [`DELAY_WARNED`]), `id u64,
/// marker u16 (0xFFFE), flags u8, count u32, each index u32`.
pub fn encode_rcpts_done(id: u64, done: &[RcptIndex], flags: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(15 + done.len() * 4);
    out.extend_from_slice(&id.to_le_bytes());
    if flags == 0 {
        out.extend_from_slice(&RCPTS_DONE_MARKER.to_le_bytes());
    } else {
        out.extend_from_slice(&RCPTS_DONE_FLAGS_MARKER.to_le_bytes());
        out.push(flags);
    }
    let n = capped(done.len());
    put_u32(&mut out, n.0);
    for d in &done[..n.1] {
        put_u32(&mut out, *d);
    }
    out
}

/// Decode a recipients-done payload, in any layout (the first one: `id
/// u64, count u16, each index u16`): the id, the finished indices, the
/// flags.
pub fn decode_rcpts_done(p: &[u8]) -> Result<(u64, Vec<RcptIndex>, u8), RecordError> {
    let mut r = Reader { p, at: 0 };
    let id = r.u64()?;
    let mut first = r.u16()?;
    let mut flags = 0;
    if first == RCPTS_DONE_FLAGS_MARKER {
        flags = r.u8()?;
        first = RCPTS_DONE_MARKER;
    }
    let done = if first == RCPTS_DONE_MARKER {
        let n = r.count(4)?;
        let mut done = Vec::with_capacity(n);
        for _ in 0..n {
            done.push(r.u32()?);
        }
        done
    } else {
        let mut done = Vec::with_capacity(usize::from(first));
        for _ in 0..first {
            done.push(RcptIndex::from(r.u16()?));
        }
        done
    };
    if r.at != p.len() {
        return Err(RecordError::Malformed);
    }
    Ok((id, done, flags))
}

/// A hold or release after a message was queued (by the operator, or a
/// storm window's end), kept across restarts: the latest note after a
/// message's latest message record says whether it is held.
///
/// Written as a record of the segment-start kind with a 9-octet payload
/// (tag u8: 1 = hold, 2 = release; id u64), not as a kind of its own: a
/// postern from before notes stops reading a segment at a record kind it
/// does not know (everything after it would be lost to it after a
/// downgrade), but it skips segment-start records after the first. The
/// start record itself has exactly 8 octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Kept out of delivery until released.
    Hold(u64),
    /// Delivered again as usual.
    Release(u64),
}

impl Note {
    /// The payload of a note record.
    pub fn encode(self) -> [u8; 9] {
        let (tag, id) = match self {
            Note::Hold(id) => (1u8, id),
            Note::Release(id) => (2u8, id),
        };
        let mut b = [0u8; 9];
        b[0] = tag;
        b[1..].copy_from_slice(&id.to_le_bytes());
        b
    }

    /// A segment-start-kind payload that is a note (`None` for the start
    /// record itself, or anything else).
    pub fn decode(p: &[u8]) -> Option<Note> {
        if p.len() != 9 {
            return None;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&p[1..]);
        let id = u64::from_le_bytes(w);
        match p[0] {
            1 => Some(Note::Hold(id)),
            2 => Some(Note::Release(id)),
            _ => None,
        }
    }
}

/// Encode a done payload or a segment-start payload (both one u64).
pub fn encode_u64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// Decode a one-u64 payload.
pub fn decode_u64(p: &[u8]) -> Result<u64, RecordError> {
    Reader { p, at: 0 }.u64()
}

/// A string as `u16 length + bytes`. Nothing stored is that long (an
/// address is at most 254 octets, ORCPT 500, ENVID 100); a longer one is
/// cut at a character boundary rather than written inconsistently.
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let len = u16::try_from(end).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        let end = self.at.checked_add(n).ok_or(RecordError::Malformed)?;
        let s = self.p.get(self.at..end).ok_or(RecordError::Malformed)?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A u32 count of items that take at least `min_len` octets each:
    /// refused when the rest of the payload cannot hold that many (so a
    /// damaged count never asks for a huge allocation).
    fn count(&mut self, min_len: usize) -> Result<usize, RecordError> {
        let n = usize::try_from(self.u32()?).map_err(|_| RecordError::Malformed)?;
        let left = self.p.len().saturating_sub(self.at);
        if n.checked_mul(min_len).is_none_or(|need| need > left) {
            return Err(RecordError::Malformed);
        }
        Ok(n)
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Ok(u64::from_le_bytes(w))
    }
    fn string(&mut self) -> Result<String, RecordError> {
        let n = self.u16()?;
        let b = self.take(usize::from(n))?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn meta() -> MessageMeta {
        let mut rcpts = vec![
            Recipient::new(addr("c@d.example")),
            Recipient::new(addr("ü@e.example")),
        ];
        rcpts[1].notify = Notify::SUCCESS.with(Notify::DELAY).unwrap();
        rcpts[1].orcpt = Some("rfc822;x@e.example".into());
        MessageMeta {
            id: 0x1234,
            arrival: 1_790_000_000,
            queued_ms: Some(123_456),
            envelope: Arc::new(Envelope {
                from: ReversePath::Path(addr("a@b.example")),
                rcpts,
                body: BodyType::EightBitMime,
                smtputf8: true,
                ret: Some(Ret::Hdrs),
                envid: Some("QQ314159".into()),
            }),
            done: vec![1],
            hold: Hold::None,
            route: None,
            delay_warned: false,
        }
    }

    #[test]
    fn a_held_and_routed_message_keeps_both_and_others_do_not_change() {
        let plain = meta().encode();
        let mut m = meta();
        m.hold = Hold::Storm;
        m.route = Some("m365".into());
        let mut enc = m.encode();
        assert_eq!(MessageMeta::encoded_len(&enc), Some(enc.len()));
        assert_eq!(enc.len(), plain.len() + 1 + 2 + 4);
        enc.extend_from_slice(b"body");
        let (back, at) = MessageMeta::decode(&enc).unwrap();
        assert_eq!(back, m);
        assert_eq!(&enc[at..], b"body");
        // Without a disposition the record is byte for byte the former one.
        assert_eq!(plain[16] & FLAG_DISPOSITION, 0);
    }

    #[test]
    fn meta_round_trip() {
        let m = meta();
        let mut enc = m.encode();
        assert_eq!(MessageMeta::encoded_len(&enc), Some(enc.len()));
        enc.extend_from_slice(b"body follows");
        let (back, at) = MessageMeta::decode(&enc).unwrap();
        assert_eq!(back, m);
        assert_eq!(&enc[at..], b"body follows");
        // The null sender, no parameters, no queue time.
        let mut m = meta();
        m.queued_ms = None;
        m.envelope = Arc::new(Envelope {
            rcpts: vec![Recipient::new(addr("root"))],
            ..Envelope::default()
        });
        m.done.clear();
        let (back, _) = MessageMeta::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn truncated_meta_is_malformed_not_a_panic() {
        let enc = meta().encode();
        for cut in 0..enc.len() {
            assert!(MessageMeta::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn done_index_out_of_range_is_malformed() {
        let mut m = meta();
        m.done = vec![7];
        assert_eq!(
            MessageMeta::decode(&m.encode()),
            Err(RecordError::Malformed)
        );
    }

    #[test]
    fn more_recipients_than_16_bits_round_trip() {
        let n = MAX_RECIPIENTS;
        let mut m = meta();
        m.envelope = Arc::new(Envelope {
            rcpts: (0..n)
                .map(|i| Recipient::new(addr(&format!("r{i}@x.example"))))
                .collect(),
            ..Envelope::default()
        });
        m.done = vec![0, 65_535, 65_536, (n - 1) as RcptIndex];
        let (back, _) = MessageMeta::decode(&m.encode()).unwrap();
        assert_eq!(back.envelope.rcpts.len(), n);
        assert_eq!(back, m);
        let big: Vec<RcptIndex> = (0..70_000).collect();
        assert_eq!(
            decode_rcpts_done(&encode_rcpts_done(9, &big, 0)),
            Ok((9, big.clone(), 0))
        );
        assert_eq!(
            decode_rcpts_done(&encode_rcpts_done(9, &big, DELAY_WARNED)),
            Ok((9, big, DELAY_WARNED))
        );
    }

    #[test]
    fn a_count_larger_than_the_record_is_malformed_without_allocating() {
        let mut enc = meta().encode();
        // The recipient count sits after id, arrival, format, queued,
        // env_len, flags, ret, envid and from.
        let at = 8 + 8 + 1 + 8 + 4 + 1 + 1 + (2 + 8) + (2 + 11);
        assert_eq!(&enc[at..at + 4], &2u32.to_le_bytes());
        enc[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(MessageMeta::decode(&enc), Err(RecordError::Malformed));
        let mut done = encode_rcpts_done(1, &[1, 2], 0);
        done[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_rcpts_done(&done), Err(RecordError::Malformed));
    }

    /// A message record exactly as the first layout wrote it: flags 8BITMIME
    /// with the queue time, two recipients, the second one done.
    fn first_layout_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x1234u64.to_le_bytes());
        b.extend_from_slice(&1_790_000_000u64.to_le_bytes());
        b.push(0x80 | 1);
        b.extend_from_slice(&123_456u64.to_le_bytes());
        b.extend_from_slice(&11u16.to_le_bytes());
        b.extend_from_slice(b"a@b.example");
        b.extend_from_slice(&2u16.to_le_bytes());
        for s in ["c@d.example", "root"] {
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(b"Subject: old\r\n\r\nbody\r\n");
        b
    }

    #[test]
    fn first_layout_records_still_decode() {
        let b = first_layout_bytes();
        assert_eq!(MessageMeta::encoded_len(&b), None);
        let (m, at) = MessageMeta::decode(&b).unwrap();
        assert_eq!(m.id, 0x1234);
        assert_eq!(m.arrival, 1_790_000_000);
        assert_eq!(m.queued_ms, Some(123_456));
        assert_eq!(m.envelope.from.as_str(), "a@b.example");
        assert_eq!(m.envelope.body, BodyType::EightBitMime);
        assert!(!m.envelope.smtputf8);
        let rcpts: Vec<&str> = m.envelope.rcpts.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(rcpts, ["c@d.example", "root"]);
        assert_eq!(m.envelope.rcpts[0].addr.domain(), Some("d.example"));
        assert_eq!(m.envelope.rcpts[1].notify, Notify::UNSPECIFIED);
        assert_eq!(m.done, vec![1]);
        assert_eq!(&b[at..], b"Subject: old\r\n\r\nbody\r\n");
        // Without queue time, null sender, SMTPUTF8.
        let mut b = Vec::new();
        b.extend_from_slice(&7u64.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.push(2);
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&3u16.to_le_bytes());
        b.extend_from_slice(b"x@y");
        b.extend_from_slice(&0u16.to_le_bytes());
        let (m, at) = MessageMeta::decode(&b).unwrap();
        assert_eq!((m.queued_ms, at), (None, b.len()));
        assert!(m.envelope.from.is_null() && m.envelope.smtputf8);
        assert_eq!(m.envelope.body, BodyType::SevenBit);
    }

    #[test]
    fn first_layout_rcpts_done_still_decodes() {
        let mut b = 0x99u64.to_le_bytes().to_vec();
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&5u16.to_le_bytes());
        assert_eq!(decode_rcpts_done(&b), Ok((0x99, vec![0, 5], 0)));
        // Written now: the marker and 32-bit indices.
        let enc = encode_rcpts_done(0x99, &[0, 5], 0);
        assert_eq!(&enc[8..10], &[0xFF, 0xFF]);
        assert_eq!(enc.len(), 8 + 2 + 4 + 8);
        assert_eq!(decode_rcpts_done(&enc), Ok((0x99, vec![0, 5], 0)));
    }

    #[test]
    fn header_checksum_detects_any_flipped_bit() {
        let payload = b"hello world".to_vec();
        let h = Header::encode(Kind::Message, 9, &payload);
        let parsed = Header::decode(&h).unwrap();
        parsed.verify(&payload).unwrap();
        for i in 0..payload.len() * 8 {
            let mut p = payload.clone();
            p[i / 8] ^= 1 << (i % 8);
            assert_eq!(parsed.verify(&p), Err(RecordError::Checksum));
        }
        // A header from another segment life does not verify against this payload.
        let other = Header::decode(&Header::encode(Kind::Message, 10, &payload)).unwrap();
        assert_ne!(other.crc, parsed.crc);
    }

    #[test]
    fn streaming_checksum_equals_one_shot() {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut c = crc32fast::Hasher::new();
        c.update(&payload[..300]);
        c.update(&payload[300..]);
        let h = Header::encode_with_payload_crc(Kind::Message, 3, 1000, &c);
        assert_eq!(h, Header::encode(Kind::Message, 3, &payload));
    }

    #[test]
    fn notes_round_trip_and_are_never_a_start_record() {
        for n in [Note::Hold(0x1234), Note::Release(u64::MAX)] {
            assert_eq!(Note::decode(&n.encode()), Some(n));
        }
        assert_eq!(Note::decode(&encode_u64(7)), None);
        assert_eq!(Note::decode(&[3, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn zeroes_are_no_record() {
        assert_eq!(Header::decode(&[0; HEADER_LEN]), Err(RecordError::NoRecord));
    }
}
