//! The on-disk record format: every record is a fixed header followed by a
//! payload, and carries a checksum over both, so recovery can tell a whole
//! record from a torn or stale one.
//!
//! ```text
//! header (24 octets, little-endian):
//!   magic  u32  "PSTN"
//!   kind   u8   1 = segment start, 2 = message, 3 = recipients done, 4 = message done
//!   _      u8, u16 (zero)
//!   seq    u32  low 32 bits of the segment's sequence number (stale records
//!               from a recycled segment's previous life never match)
//!   len    u32  payload length
//!   crc    u32  CRC-32 of the header (crc field zeroed) and the payload
//!   _      u32  (zero)
//! ```
//!
//! Message payload: `id u64, arrival u64 (unix seconds), flags u8, from
//! (u16 length + bytes, empty = null sender), rcpt count u16, each rcpt (u16
//! length + bytes), done count u16, each done index u16, body`. The body runs
//! to the end of the payload, so the envelope can be written before the body
//! has arrived. The done list lets a message be copied forward with its state
//! in one record.

use std::fmt;

/// Size of the fixed record header.
pub const HEADER_LEN: usize = 24;
const MAGIC: u32 = u32::from_le_bytes(*b"PSTN");

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

/// Flag bit: the client declared BODY=8BITMIME.
pub const FLAG_8BITMIME: u8 = 1;
/// Flag bit: the client used SMTPUTF8.
pub const FLAG_SMTPUTF8: u8 = 2;
/// Flag bit (record only): the queue time of arrival follows the flags
/// (`u64`, milliseconds). Records written before the queue clock lack it.
pub const FLAG_QTIME: u8 = 0x80;

/// The envelope part of a message record, everything but the body.
#[derive(Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Queue id.
    pub id: u64,
    /// Arrival time, seconds since the epoch by the wall clock at arrival.
    pub arrival: u64,
    /// FLAG_* bits (FLAG_QTIME is managed here, never set by callers).
    pub flags: u8,
    /// Queue time of arrival, milliseconds (`clock.rs`); `None` in records
    /// written before the queue clock existed.
    pub queued_ms: Option<u64>,
    /// Envelope sender; empty for the null sender.
    pub from: String,
    /// Envelope recipients.
    pub rcpts: Vec<String>,
    /// Indices of recipients already finished.
    pub done: Vec<u16>,
}

impl fmt::Debug for MessageMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageMeta({:X}, {} rcpts)", self.id, self.rcpts.len())
    }
}

impl MessageMeta {
    /// Encode everything up to (not including) the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.from.len() + self.rcpts.len() * 32);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.arrival.to_le_bytes());
        match self.queued_ms {
            Some(q) => {
                out.push(self.flags | FLAG_QTIME);
                out.extend_from_slice(&q.to_le_bytes());
            }
            None => out.push(self.flags & !FLAG_QTIME),
        }
        put_str(&mut out, &self.from);
        out.extend_from_slice(&(self.rcpts.len() as u16).to_le_bytes());
        for r in &self.rcpts {
            put_str(&mut out, r);
        }
        out.extend_from_slice(&(self.done.len() as u16).to_le_bytes());
        for d in &self.done {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out
    }

    /// Decode from the start of a message payload; returns the meta and the
    /// offset of the body within the payload.
    pub fn decode(p: &[u8]) -> Result<(MessageMeta, usize), RecordError> {
        let mut r = Reader { p, at: 0 };
        let id = r.u64()?;
        let arrival = r.u64()?;
        let flags = r.u8()?;
        let queued_ms = if flags & FLAG_QTIME != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let flags = flags & !FLAG_QTIME;
        let from = r.string()?;
        let n = r.u16()?;
        let mut rcpts = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            rcpts.push(r.string()?);
        }
        let nd = r.u16()?;
        let mut done = Vec::with_capacity(usize::from(nd));
        for _ in 0..nd {
            let d = r.u16()?;
            if usize::from(d) >= rcpts.len() {
                return Err(RecordError::Malformed);
            }
            done.push(d);
        }
        Ok((
            MessageMeta {
                id,
                arrival,
                flags,
                queued_ms,
                from,
                rcpts,
                done,
            },
            r.at,
        ))
    }
}

/// Encode a recipients-done payload.
pub fn encode_rcpts_done(id: u64, done: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + done.len() * 2);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(done.len() as u16).to_le_bytes());
    for d in done {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Decode a recipients-done payload.
pub fn decode_rcpts_done(p: &[u8]) -> Result<(u64, Vec<u16>), RecordError> {
    let mut r = Reader { p, at: 0 };
    let id = r.u64()?;
    let n = r.u16()?;
    let mut done = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        done.push(r.u16()?);
    }
    Ok((id, done))
}

/// Encode a done payload or a segment-start payload (both one u64).
pub fn encode_u64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// Decode a one-u64 payload.
pub fn decode_u64(p: &[u8]) -> Result<u64, RecordError> {
    Reader { p, at: 0 }.u64()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
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

    fn meta() -> MessageMeta {
        MessageMeta {
            id: 0x1234,
            arrival: 1_790_000_000,
            flags: FLAG_8BITMIME,
            queued_ms: Some(123_456),
            from: "a@b.example".into(),
            rcpts: vec!["c@d.example".into(), "ü@e.example".into()],
            done: vec![1],
        }
    }

    #[test]
    fn meta_round_trip() {
        let m = meta();
        let mut enc = m.encode();
        enc.extend_from_slice(b"body follows");
        let (back, at) = MessageMeta::decode(&enc).unwrap();
        assert_eq!(back, m);
        assert_eq!(&enc[at..], b"body follows");
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
    fn zeroes_are_no_record() {
        assert_eq!(Header::decode(&[0; HEADER_LEN]), Err(RecordError::NoRecord));
    }
}
