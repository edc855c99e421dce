//! DATA as a phase of the session: the bytes after 354 go in through
//! [`Intake::feed`], which runs the decoder (end of data, dot-unstuffing,
//! line endings), the header fixer (Date, Message-ID) and the limits, and
//! hands back the bytes to spool; [`Intake::end`] says whether the message
//! may be committed or what to refuse it with. No I/O: the handler moves the
//! bytes from the connection to the spool writer.
//!
//! With `[[filter]]` rules that look inside the message (or storm
//! suppression), the bytes also go through `filter`'s scanner; the rules
//! that decide at the end of the header section run there, and when some
//! rule edits header fields the section is kept back (bounded by
//! [`MAX_HEADER_SECTION`]) until they have, then written edited.
//!
//! Uses `smtp` (the decoder, the header fixer) and `filter` (the scanner
//! and the rules).

use crate::filter::{Facts, Rules, Scan, Scanner, Stage, Verdict};
use crate::queue::QueueId;
use crate::smtp::Address;
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
    /// The rules and what is known about the transaction, when some rule
    /// (or storm suppression) reads the message.
    filters: Option<Box<FilterRun>>,
}

/// The rules' part of one message.
#[derive(Debug)]
pub struct FilterRun {
    /// Every rule.
    pub rules: Rules,
    /// What they decided up to DATA.
    pub verdict: Verdict,
    /// The client.
    pub client: std::net::IpAddr,
    /// Who logged in.
    pub user: Option<String>,
    /// The sender.
    pub sender: Option<Address>,
    /// The recipients.
    pub rcpts: Vec<Address>,
    scanner: Scanner,
    /// Keep the header section back for the rules' header edits.
    hold_header: bool,
    /// The header section kept back so far.
    held: Vec<u8>,
    /// The header section is past (and written, when it was kept).
    header_done: bool,
    /// The kept-back section grew past its bound.
    overflow: bool,
}

impl FilterRun {
    /// A run for `rules` (`scan` even without rules: storm suppression
    /// reads the Subject).
    pub fn new(
        rules: Rules,
        verdict: Verdict,
        client: std::net::IpAddr,
        user: Option<String>,
        sender: Option<Address>,
        rcpts: Vec<Address>,
    ) -> FilterRun {
        let hold_header = rules.edits_headers();
        let scanner = Scanner::new(rules.header_names());
        FilterRun {
            rules,
            verdict,
            client,
            user,
            sender,
            rcpts,
            scanner,
            hold_header,
            held: Vec::new(),
            header_done: false,
            overflow: false,
        }
    }

    fn decide(&mut self, stage: Stage, size: u64) {
        let f = Facts {
            client: self.client,
            user: self.user.as_deref(),
            sender: self.sender.as_ref(),
            rcpts: &self.rcpts,
            scan: Some(self.scanner.scan()),
            size,
        };
        self.rules.decide(stage, &f, &mut self.verdict);
    }

    /// The end of the header section: its rules decide, and a kept-back
    /// section is edited and put before `out`.
    fn header_end(&mut self, out: &mut Vec<u8>, size: u64) {
        self.header_done = true;
        self.decide(Stage::Headers, size);
        if self.hold_header {
            let held = std::mem::take(&mut self.held);
            let mut edited = edit_header(&held, &self.verdict);
            edited.extend_from_slice(out);
            *out = edited;
        }
    }
}

/// The header section `held` with the verdict's fields removed, and its
/// fields added before the empty line that ends it (at the end when
/// there is none).
fn edit_header(held: &[u8], v: &Verdict) -> Vec<u8> {
    if v.stop.is_some() || (v.remove_header.is_empty() && v.add_header.is_empty()) {
        return held.to_vec();
    }
    let mut out = Vec::with_capacity(held.len() + 256);
    let mut dropping = false;
    let mut rest = held;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        if line == b"\r\n" || line == b"\n" {
            add_fields(&mut out, v);
            out.extend_from_slice(line);
            out.extend_from_slice(rest);
            return out;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            dropping = v.remove_header.contains(&name);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    add_fields(&mut out, v);
    out
}

fn add_fields(out: &mut Vec<u8>, v: &Verdict) {
    for h in &v.add_header {
        out.extend_from_slice(h.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
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
            filters: None,
        }
    }

    /// Read the message for the rules too.
    pub fn with_filters(mut self, run: FilterRun) -> Intake {
        self.filters = Some(Box::new(run));
        self
    }

    /// What the rules decided, once the message is in (`None`: no rules).
    pub fn rules_verdict(&self) -> Option<&Verdict> {
        self.filters.as_ref().map(|f| &f.verdict)
    }

    /// What the scanner found (`None`: nothing read it).
    pub fn scan(&self) -> Option<&Scan> {
        self.filters.as_ref().map(|f| f.scanner.scan())
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
        self.filter_out();
        self.fed(d.consumed)
    }

    /// Pass this round's output through the rules' scanner; keep the
    /// header section back while they may still edit it.
    fn filter_out(&mut self) {
        let Some(run) = self.filters.as_mut() else {
            return;
        };
        let size = self.size;
        let ended = run.scanner.feed(&self.out);
        if self.finished {
            run.scanner.finish();
        }
        if !run.header_done {
            match ended {
                Some(_) if !run.hold_header => run.header_end(&mut Vec::new(), size),
                Some(k) => {
                    let rest = self.out.split_off(k.min(self.out.len()));
                    run.held.append(&mut self.out);
                    let mut out = rest;
                    run.header_end(&mut out, size);
                    self.out = out;
                }
                None if self.finished => {
                    if run.hold_header {
                        run.held.append(&mut self.out);
                    }
                    let mut out = std::mem::take(&mut self.out);
                    run.header_end(&mut out, size);
                    self.out = out;
                }
                None => {
                    if run.hold_header {
                        run.held.append(&mut self.out);
                        if run.held.len() as u64
                            > MAX_HEADER_SECTION.saturating_add(self.received_len)
                        {
                            // Refused for its size in any case: keep no more.
                            run.overflow = true;
                            run.held = Vec::new();
                            run.hold_header = false;
                            run.header_done = true;
                        }
                    }
                }
            }
        }
        if self.finished {
            run.decide(
                Stage::Data,
                self.spooled.saturating_add(self.out.len() as u64),
            );
        }
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
        } else if self.summary.header_len.saturating_add(self.received_len) > MAX_HEADER_SECTION
            || self.filters.as_ref().is_some_and(|f| f.overflow)
        {
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
