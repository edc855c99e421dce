//! DATA as a phase of the session: the bytes after 354 go in through
//! [`Intake::feed`], which runs the decoder (end of data, dot-unstuffing,
//! line endings), the header fixer (Date, Message-ID) and the limits, and
//! hands back the bytes to spool; [`Intake::end`] says whether the message
//! may be committed or what to refuse it with. No I/O: the handler moves the
//! bytes from the connection to the spool writer.
//!
//! Uses `smtp` (the decoder, the header fixer).

use crate::queue::QueueId;
use crate::smtp::header::{HeaderSummary, MAX_DATE_LEN, Received};
use crate::smtp::{BareNewline, DataDecoder, DataError, HeaderFixer};

use super::connection::READ_BUF;

// The bounds of one message.
/// Longest text line in DATA, without its CRLF (RFC 5321 §4.5.3.1.6: 1000
/// with CRLF). Longer lines get the message refused (550 5.6.0), never cut.
pub const MAX_DATA_LINE: usize = 998;
/// Largest header section accepted (552 5.3.4 past it), our Received field
/// included: the one limit delivery's From rewriter shares
/// ([`crate::smtp::header::MAX_HEADER_SECTION`]).
pub const MAX_HEADER_SECTION: u64 = crate::smtp::header::MAX_HEADER_SECTION as u64;
/// Most `Received:` fields an incoming message may carry (Postfix's
/// hopcount_limit). More, and it is going round in a loop: refused with
/// 554 5.4.6 at the end of data, so a loop stops at the first relay that
/// notices instead of growing until a header limit.
pub const MAX_HOPS: u32 = 50;

/// The Message-ID postern gives a message that lacks one.
pub fn message_id(id: QueueId, hostname: &str) -> String {
    format!("<{id}.postern@{hostname}>")
}

/// Most octets postern adds to a message: its `Received:` field with every
/// part at its bound, and `Date:` and `Message-ID:` for a message that
/// lacks them. The SIZE advertised leaves this much room under the
/// upstream's limit, so a message within our SIZE is within theirs too.
pub fn added_bound(hostname: &str) -> u64 {
    // A queue id is a u64 in hex: 16 digits at most.
    let longest_id = message_id(QueueId(u64::MAX), hostname).len();
    let date = "Date: ".len() + MAX_DATE_LEN + "\r\n".len();
    let message_id = "Message-ID: ".len() + longest_id + "\r\n".len();
    let n = Received::max_len(hostname) + date + message_id;
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Why a message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A bare CR or LF in reject mode: the client's framing is not ours,
    /// so the connection ends after the reply.
    BareNewline,
    /// A NUL in reject mode: a next hop that strips NULs would frame the
    /// message differently; treated like a bare newline.
    Nul,
    /// A line over [`MAX_DATA_LINE`].
    LineTooLong,
    /// A header section over [`MAX_HEADER_SECTION`].
    HeaderTooBig,
    /// More `Received:` fields than [`MAX_HOPS`]: a mail loop.
    TooManyHops,
    /// More octets than the limit.
    TooBig,
    /// The spool could not be written.
    SpoolFailed,
}

impl Refused {
    /// The connection cannot go on after this refusal.
    pub fn ends_session(self) -> bool {
        matches!(self, Refused::BareNewline | Refused::Nul)
    }
}

/// What one [`Intake::feed`] did.
#[derive(Debug)]
pub struct Fed<'a> {
    /// Input octets used. Less than the input only once finished: the rest
    /// are the commands that follow (pipelining).
    pub consumed: usize,
    /// Octets to append to the spooled message (empty once refused).
    pub spool: &'a [u8],
    /// The message is refused already: what was spooled can go. Reading
    /// goes on to the end of data, unless the framing was lost.
    pub refused: bool,
    /// No more input belongs to the message: call [`Intake::end`].
    pub finished: bool,
}

/// One message being received.
#[derive(Debug)]
pub struct Intake {
    decoder: DataDecoder,
    fixer: HeaderFixer,
    /// The decoder's output for the current chunk.
    decoded: Vec<u8>,
    /// The fixer's output for the current chunk, plus (at first) the
    /// Received field: the bytes to spool.
    out: Vec<u8>,
    /// The Received field is in `out` and not yet handed out.
    fresh: bool,
    /// Its length: it counts towards the header section as stored.
    received_len: u64,
    /// Message octets from the client, decoded.
    size: u64,
    /// Octets handed out to spool (Received field and added fields
    /// included): the size of the message as stored and sent on.
    spooled: u64,
    /// The most the client may send: the SIZE advertised.
    limit: u64,
    summary: HeaderSummary,
    /// A bare CR or LF or a NUL arrived in reject mode.
    framing: Option<DataError>,
    /// The spool could not be written.
    spool_failed: bool,
    finished: bool,
}

impl Intake {
    /// A message that starts with our `received` field; `date` and
    /// `message_id` are added when the message lacks them; `mode` for bare
    /// CR and LF; at most `limit` octets from the client.
    pub fn new(
        received: String,
        date: String,
        message_id: String,
        mode: BareNewline,
        limit: u64,
    ) -> Intake {
        let mut out = Vec::with_capacity(READ_BUF + 256);
        out.extend_from_slice(received.as_bytes());
        let received_len = u64::try_from(received.len()).unwrap_or(u64::MAX);
        Intake {
            decoder: DataDecoder::new(mode),
            fixer: HeaderFixer::new(date, message_id),
            decoded: Vec::with_capacity(READ_BUF),
            out,
            fresh: true,
            received_len,
            size: 0,
            spooled: 0,
            limit,
            summary: HeaderSummary::default(),
            framing: None,
            spool_failed: false,
            finished: false,
        }
    }

    /// Take the client's next octets.
    pub fn feed(&mut self, input: &[u8]) -> Fed<'_> {
        if !std::mem::take(&mut self.fresh) {
            self.out.clear();
        }
        if self.finished {
            return self.fed(0);
        }
        self.decoded.clear();
        let d = match self.decoder.decode(input, &mut self.decoded) {
            Ok(d) => d,
            Err(e) => {
                // Reject mode only (normalize never errs). The client's
                // idea of where lines and the message end differs from
                // ours (or from a next hop's): answer now and hang up
                // rather than guess.
                self.framing = Some(e);
                self.finished = true;
                return self.fed(input.len());
            }
        };
        self.size = self
            .size
            .saturating_add(u64::try_from(self.decoded.len()).unwrap_or(u64::MAX));
        self.fixer.process(&self.decoded, &mut self.out);
        if d.finished {
            self.summary = self.fixer.finish(&mut self.out);
            self.finished = true;
        }
        self.fed(d.consumed)
    }

    fn fed(&mut self, consumed: usize) -> Fed<'_> {
        let out = u64::try_from(self.out.len()).unwrap_or(u64::MAX);
        self.spooled = self.spooled.saturating_add(out);
        let refused = self.verdict().is_some();
        Fed {
            consumed,
            spool: if refused { &[] } else { &self.out },
            refused,
            finished: self.finished,
        }
    }

    /// Writing the spool failed: the message is refused (451), and the
    /// rest of it is read and dropped.
    pub fn spool_failed(&mut self) {
        self.spool_failed = true;
    }

    /// Octets received from the client so far (decoded).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The message's size as spooled so far: what the upstream will see.
    pub fn spooled(&self) -> u64 {
        self.spooled
    }

    /// `Received:` fields in the message's header section (known at the
    /// end of data).
    pub fn hops(&self) -> u32 {
        self.summary.received
    }

    /// The reason to refuse the message, if there is one yet. The most
    /// specific comes first: a line too long before a header too big,
    /// that before the size, and our own failure last.
    fn verdict(&self) -> Option<Refused> {
        if let Some(e) = self.framing {
            Some(match e {
                DataError::Nul => Refused::Nul,
                _ => Refused::BareNewline,
            })
        } else if self.decoder.longest_line() > MAX_DATA_LINE {
            Some(Refused::LineTooLong)
        } else if self.summary.header_len.saturating_add(self.received_len) > MAX_HEADER_SECTION {
            Some(Refused::HeaderTooBig)
        } else if self.summary.received > MAX_HOPS {
            Some(Refused::TooManyHops)
        } else if self.size > self.limit {
            Some(Refused::TooBig)
        } else if self.spool_failed {
            Some(Refused::SpoolFailed)
        } else {
            None
        }
    }

    /// After the last feed: commit, or the reason to refuse.
    pub fn end(&self) -> Result<(), Refused> {
        match self.verdict() {
            Some(why) => Err(why),
            // Ended before the end of data: nothing to commit.
            None if !self.finished => Err(Refused::SpoolFailed),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake(mode: BareNewline, limit: u64) -> Intake {
        Intake::new(
            "Received: x\r\n".into(),
            "D".into(),
            "<M>".into(),
            mode,
            limit,
        )
    }

    /// Feed `input` in chunks of `step`; the spooled bytes, what was
    /// consumed, and the verdict.
    fn run(mut i: Intake, input: &[u8], step: usize) -> (Vec<u8>, usize, Result<(), Refused>) {
        let mut spooled = Vec::new();
        let mut used = 0;
        for chunk in input.chunks(step.max(1)) {
            let fed = i.feed(chunk);
            spooled.extend_from_slice(fed.spool);
            used += fed.consumed;
            if fed.finished {
                break;
            }
        }
        (spooled, used, i.end())
    }

    #[test]
    fn spools_received_then_the_fixed_message_and_stops_at_the_dot() {
        let input = b"Subject: t\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
        for step in [1, 3, input.len()] {
            let (spooled, used, verdict) = run(intake(BareNewline::Reject, 1000), input, step);
            assert_eq!(
                String::from_utf8(spooled).unwrap(),
                "Received: x\r\nSubject: t\r\nDate: D\r\nMessage-ID: <M>\r\n\r\n.dot\r\n"
            );
            assert_eq!(&input[used..], b"QUIT\r\n");
            assert_eq!(verdict, Ok(()));
        }
    }

    #[test]
    fn bare_newline_in_reject_mode_ends_at_once() {
        let mut i = intake(BareNewline::Reject, 1000);
        let fed = i.feed(b"a\nb\r\n.\r\n");
        assert!(fed.refused && fed.finished && fed.spool.is_empty());
        assert_eq!(i.end(), Err(Refused::BareNewline));
        assert!(Refused::BareNewline.ends_session());
    }

    #[test]
    fn too_big_stops_spooling_and_reads_to_the_end() {
        let body = vec![b'x'; 100];
        let mut input = b"\r\n".to_vec();
        input.extend_from_slice(&body);
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, used, verdict) = run(intake(BareNewline::Reject, 50), &input, 10);
        assert_eq!(used, input.len());
        assert_eq!(verdict, Err(Refused::TooBig));
    }

    #[test]
    fn a_long_line_is_said_before_the_size() {
        let mut input = vec![b'x'; MAX_DATA_LINE + 1];
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, _, verdict) = run(intake(BareNewline::Reject, 10), &input, 64);
        assert_eq!(verdict, Err(Refused::LineTooLong));
    }

    #[test]
    fn more_received_fields_than_the_hop_limit_is_a_loop() {
        let message = |hops: u32| {
            let mut m = String::new();
            for i in 0..hops {
                m.push_str(&format!("Received: from hop{i}\r\n"));
            }
            m.push_str("Subject: loop\r\n\r\nbody\r\n.\r\n");
            m
        };
        let (_, _, verdict) = run(
            intake(BareNewline::Reject, 1 << 20),
            message(MAX_HOPS).as_bytes(),
            7,
        );
        assert_eq!(verdict, Ok(()));
        let mut i = intake(BareNewline::Reject, 1 << 20);
        let fed = i.feed(message(MAX_HOPS + 1).as_bytes());
        assert!(fed.finished && fed.refused);
        assert_eq!(i.end(), Err(Refused::TooManyHops));
        assert_eq!(i.hops(), MAX_HOPS + 1);
    }

    #[test]
    fn a_spool_failure_is_a_refusal() {
        let mut i = intake(BareNewline::Reject, 1000);
        i.feed(b"a\r\n");
        i.spool_failed();
        let fed = i.feed(b".\r\n");
        assert!(fed.refused && fed.finished);
        assert_eq!(i.end(), Err(Refused::SpoolFailed));
    }
}
