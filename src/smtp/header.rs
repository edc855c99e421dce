//! The header lines postern generates or completes (RFC 5322, RFC 5321 §4.4,
//! RFC 6409 §8): `Received`, and `Date`/`Message-ID` when a device left them
//! out. Every value is validated here so no CR, LF or NUL can reach a header.

use std::net::IpAddr;

use super::address::{Address, MAX_ADDRESS_LEN};

/// Largest header section postern stores, its own Received field included:
/// the listener refuses a bigger one (552 5.3.4), and delivery rewrites the
/// From of any it stored (`rewrite_from` reads this much and no more). A
/// device's header is a few KiB, and downstream filters choke on huge ones.
pub const MAX_HEADER_SECTION: usize = 100 * 1024;

/// Longest header section we scan for Date/Message-ID before treating the
/// rest as body. Bounded so a hostile header cannot grow our buffers.
pub const MAX_HEADER_LINE_SCAN: usize = 1000;

/// What a message's own header section contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderSummary {
    /// A `Date:` field was present.
    pub date: bool,
    /// A `Message-ID:` field was present.
    pub message_id: bool,
    /// A `From:` field was present.
    pub from: bool,
    /// `Received:` fields: the hops the message has made (loop detection).
    pub received: u32,
    /// Octets in the header section, up to and including its empty line, as
    /// written by [`HeaderFixer`]: inserted fields (and an inserted empty
    /// line) count. With no empty line, the whole output is header section.
    pub header_len: u64,
}

/// Streams decoded message bytes through, noting which header fields are
/// present and inserting the missing `Date` and `Message-ID` fields at the end
/// of the header section (just before its empty line).
///
/// The header section ends at the first empty line, or at the first line that
/// is neither a continuation (leading SP/HTAB) nor `field-name:`; in that case
/// the missing fields and an empty line are inserted before that line, so it
/// becomes the body. A message that ends inside its header section gets them
/// at the end, from [`HeaderFixer::finish`].
///
/// Field names are compared case-insensitively, and the obsolete form with
/// blanks before the colon (`Date :`, RFC 5322 §4.5) counts. A line is held
/// back only until its first byte that is not part of a field name, and never
/// more than [`MAX_HEADER_LINE_SCAN`] bytes of it: a longer "name" is not a
/// header field. [`HeaderSummary::header_len`] counts the header section as
/// written to `out`, inserted fields and empty line included.
#[derive(Debug)]
pub struct HeaderFixer {
    /// `Date:` field line to insert, sanitised, CRLF-terminated.
    date: String,
    /// `Message-ID:` field line to insert, sanitised, CRLF-terminated.
    message_id: String,
    summary: HeaderSummary,
    state: FixState,
    /// The start of the current line while we decide what it is.
    held: heapless::Vec<u8, MAX_HEADER_LINE_SCAN>,
    /// Bytes of `held` that form the field name (valid in `Name`/`NameWsp`).
    name_len: usize,
    /// A field has been seen, so a line starting with a blank continues it.
    seen_field: bool,
}

/// Where the fixer is in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FixState {
    /// Header section, start of a line: nothing held yet.
    LineStart,
    /// Header section: held a CR at the start of a line.
    Cr,
    /// Header section: holding what so far looks like a field name.
    Name,
    /// Header section: holding a field name and blanks (obsolete syntax).
    NameWsp,
    /// Header section: the rest of a field (or continuation) line.
    Field,
    /// Past the header section: everything passes through.
    Body,
    /// [`HeaderFixer::finish`] has run.
    Finished,
}

/// What the start of a line in the header section turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// `name:`, or a continuation of the previous field.
    Field,
    /// The empty line that ends the header section.
    Empty,
    /// Anything else: the body starts here.
    Body,
}

/// ftext (RFC 5322 §3.6.8): printable ASCII except the colon.
fn is_ftext(b: u8) -> bool {
    matches!(b, 33..=57 | 59..=126)
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl HeaderFixer {
    /// `date` and `message_id` are the field values to insert when missing
    /// (e.g. from [`format_date`] and `<id@host>`). Control characters in
    /// them (CR, LF, NUL, ...) are replaced by spaces: a value can never end
    /// its field or start another.
    pub fn new(date: String, message_id: String) -> Self {
        HeaderFixer {
            date: field_line("Date", &date),
            message_id: field_line("Message-ID", &message_id),
            summary: HeaderSummary::default(),
            state: FixState::LineStart,
            held: heapless::Vec::new(),
            name_len: 0,
            seen_field: false,
        }
    }
    /// Pass CRLF-canonical bytes through to `out`, inserting as needed.
    pub fn process(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        while !rest.is_empty() {
            match self.state {
                FixState::Body | FixState::Finished => {
                    out.extend_from_slice(rest);
                    return;
                }
                FixState::Field => {
                    // Pass the rest of the line through in one go.
                    let (line, tail) = match rest.iter().position(|&b| b == b'\n') {
                        Some(lf) => {
                            self.state = FixState::LineStart;
                            rest.split_at(lf + 1)
                        }
                        None => (rest, &[][..]),
                    };
                    out.extend_from_slice(line);
                    self.add_header_len(line.len());
                    rest = tail;
                }
                _ => {
                    if let Some((&b, tail)) = rest.split_first() {
                        rest = tail;
                        self.scan(b, out);
                    }
                }
            }
        }
    }
    /// End of message: flush anything held back and insert what is still missing.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> HeaderSummary {
        match self.state {
            FixState::LineStart => self.insert_missing(out),
            FixState::Field => {
                // The last field lacked its CRLF; close it so the inserted
                // fields do not run into it.
                out.extend_from_slice(b"\r\n");
                self.add_header_len(2);
                self.insert_missing(out);
            }
            FixState::Cr | FixState::Name | FixState::NameWsp => {
                // A partial line that never became `name:`: it is body.
                // Close it, reusing a CR it ended with.
                let ends_with_cr = self.held.last() == Some(&b'\r');
                self.decided(LineKind::Body, out);
                out.extend_from_slice(if ends_with_cr { b"\n" } else { b"\r\n" });
            }
            FixState::Body | FixState::Finished => {}
        }
        self.state = FixState::Finished;
        self.summary
    }

    /// One byte at the start of a header-section line.
    fn scan(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.held.push(b).is_err() {
            // Cannot happen: we decide before the buffer fills (below).
            self.decided(LineKind::Body, out);
            out.push(b);
            return;
        }
        let kind = match (self.state, b) {
            (FixState::LineStart, b'\r') => {
                self.state = FixState::Cr;
                None
            }
            (FixState::LineStart, b'\n') | (FixState::Cr, b'\n') => Some(LineKind::Empty),
            (FixState::LineStart, b) if is_wsp(b) => Some(if self.seen_field {
                LineKind::Field
            } else {
                // A continuation of nothing: not a header section at all.
                LineKind::Body
            }),
            (FixState::LineStart, b) | (FixState::Name, b) if is_ftext(b) => {
                self.state = FixState::Name;
                self.name_len = self.held.len();
                None
            }
            (FixState::Name, b) | (FixState::NameWsp, b) if is_wsp(b) => {
                self.state = FixState::NameWsp;
                None
            }
            (FixState::Name, b':') | (FixState::NameWsp, b':') => {
                self.note_field();
                Some(LineKind::Field)
            }
            _ => Some(LineKind::Body),
        };
        match kind {
            Some(kind) => self.decided(kind, out),
            // A field name longer than any line may be is not one.
            None if self.held.is_full() => self.decided(LineKind::Body, out),
            None => {}
        }
    }

    /// Record which of the fields we care about the held name is.
    fn note_field(&mut self) {
        let name = self.held.get(..self.name_len).unwrap_or_default();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("Date") {
            self.summary.date = true;
        } else if is("Message-ID") {
            self.summary.message_id = true;
        } else if is("From") {
            self.summary.from = true;
        } else if is("Received") {
            self.summary.received = self.summary.received.saturating_add(1);
        }
        self.seen_field = true;
    }

    /// The held line start is now known to be `kind`: write what goes before
    /// it, then it, and move on.
    fn decided(&mut self, kind: LineKind, out: &mut Vec<u8>) {
        match kind {
            LineKind::Field => {
                self.add_header_len(self.held.len());
                self.state = FixState::Field;
            }
            LineKind::Empty => {
                self.insert_missing(out);
                self.add_header_len(self.held.len());
                self.state = FixState::Body;
            }
            LineKind::Body => {
                self.insert_missing(out);
                out.extend_from_slice(b"\r\n");
                self.add_header_len(2);
                self.state = FixState::Body;
            }
        }
        out.extend_from_slice(&self.held);
        self.held.clear();
        self.name_len = 0;
    }

    /// Write the fields the header section lacked. Called once, where the
    /// section ends.
    fn insert_missing(&mut self, out: &mut Vec<u8>) {
        if !self.summary.date {
            out.extend_from_slice(self.date.as_bytes());
            self.add_header_len(self.date.len());
        }
        if !self.summary.message_id {
            out.extend_from_slice(self.message_id.as_bytes());
            self.add_header_len(self.message_id.len());
        }
    }

    fn add_header_len(&mut self, n: usize) {
        self.summary.header_len = self
            .summary
            .header_len
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// `Name: value\r\n` with every control character in `value` made a space.
fn field_line(name: &str, value: &str) -> String {
    let mut line = String::with_capacity(name.len() + value.len() + 4);
    line.push_str(name);
    line.push_str(": ");
    line.extend(value.chars().map(|c| if c.is_control() { ' ' } else { c }));
    line.push_str("\r\n");
    line
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An RFC 5322 date-time in UTC, e.g. `Mon, 23 Nov 2026 18:01:43 +0000`.
pub fn format_date(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = usize::try_from((days + 4) % 7)
        .ok()
        .and_then(|i| WEEKDAYS.get(i));
    let month = usize::try_from(month.saturating_sub(1))
        .ok()
        .and_then(|i| MONTHS.get(i));
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        weekday.unwrap_or(&"???"),
        day,
        month.unwrap_or(&"???"),
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
    )
}

/// An RFC 3339 date-time in UTC, e.g. `2026-11-23T18:01:43Z` (for people
/// and scripts: `postern status`, `queue show`).
pub fn format_rfc3339(unix_secs: u64) -> String {
    let (year, month, day) = civil_from_days(unix_secs / 86_400);
    let secs = unix_secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic
/// Gregorian.
///
/// The trick is to count years from March: the leap day then falls on the
/// last day of the year, and month lengths from March on repeat a 5-month
/// pattern (31 30 31 30 31) that a linear formula captures. Days are shifted
/// so that day 0 is 0000-03-01, and split into 400-year eras of exactly
/// 146 097 days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    const DAYS_PER_ERA: u64 = 146_097;
    // From 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / DAYS_PER_ERA;
    let day_of_era = z % DAYS_PER_ERA;
    // Remove the leap days accumulated before this day (one per 4 years,
    // minus one per century, plus one per era) to get whole 365-day years.
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524
        - day_of_era / (DAYS_PER_ERA - 1))
        / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Month index from March (0) to February (11): 153 days per 5 months.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let (month, year_shift) = if march_month < 10 {
        (march_month + 3, 0)
    } else {
        (march_month - 9, 1)
    };
    (era * 400 + year_of_era + year_shift, month, day)
}

/// The parts of a `Received:` trace field (RFC 5321 §4.4).
#[derive(Debug, Clone)]
pub struct Received<'a> {
    /// What the client said in EHLO/HELO (sanitised before use).
    pub helo: &'a str,
    /// The client's address.
    pub client_ip: IpAddr,
    /// Our hostname.
    pub by: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA` (RFC 3848).
    pub with: &'a str,
    /// Our queue id.
    pub id: &'a str,
    /// The single recipient, if there is exactly one (never with several: it would leak Bcc).
    pub for_rcpt: Option<&'a Address>,
    /// Seconds since the epoch.
    pub unix_secs: u64,
}

impl Received<'_> {
    /// The complete field, folded, ending in CRLF.
    ///
    /// `from <helo> ([ip])`, `by <host> (postern) with <proto> id <id>`, an
    /// optional `for <rcpt>`, then the date, each clause on its own folded
    /// line. Every part is sanitised: the HELO name keeps only printable
    /// ASCII without `()[]<>;"\` and blanks (so it cannot fake a comment or
    /// a literal), at most 64 characters, `unknown` if nothing is left; no
    /// CR, LF or NUL can reach the output.
    pub fn render(&self) -> String {
        let helo = token(self.helo, MAX_HELO_LEN, "unknown");
        let by = token(self.by, MAX_HOST_LEN, "localhost");
        let with = token(self.with, MAX_TOKEN_LEN, "SMTP");
        let id = token(self.id, MAX_TOKEN_LEN, "unknown");
        let ip = match self.client_ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let mut field =
            format!("Received: from {helo} ([{ip}])\r\n\tby {by} (postern) with {with} id {id}");
        if let Some(rcpt) = self.for_rcpt {
            field.push_str("\r\n\tfor <");
            // Address::parse refuses control characters; this keeps the
            // guarantee local instead of trusting it.
            field.extend(
                rcpt.as_str()
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c }),
            );
            field.push('>');
        }
        field.push_str("; ");
        field.push_str(&format_date(self.unix_secs));
        field.push_str("\r\n");
        field
    }
}

impl Received<'_> {
    /// The longest field [`Received::render`] can write with `by` as our
    /// hostname: every other part at its bound (the longest HELO, an IPv6
    /// literal, the longest address in `for`, the latest date).
    pub fn max_len(by: &str) -> usize {
        let by = token(by, MAX_HOST_LEN, "localhost").len();
        // INET6_ADDRSTRLEN without its NUL: the longest text form.
        const MAX_IP_LEN: usize = "IPv6:".len() + 45;
        "Received: from ".len()
            + MAX_HELO_LEN
            + " ([".len()
            + MAX_IP_LEN
            + "])\r\n\tby ".len()
            + by
            + " (postern) with ".len()
            + MAX_TOKEN_LEN
            + " id ".len()
            + MAX_TOKEN_LEN
            + "\r\n\tfor <".len()
            + MAX_ADDRESS_LEN
            + ">; ".len()
            + MAX_DATE_LEN
            + "\r\n".len()
    }
}

/// Longest date [`format_date`] writes: a u64 of seconds reaches a
/// 12-digit year.
pub const MAX_DATE_LEN: usize = 39;

/// Longest HELO name kept in `Received:`.
const MAX_HELO_LEN: usize = 64;
/// Longest host name (RFC 1035 §2.3.4 allows 253 in text form).
const MAX_HOST_LEN: usize = 253;
/// Longest protocol name or queue id kept.
const MAX_TOKEN_LEN: usize = 64;

/// Printable ASCII without blanks and the characters that delimit
/// comments, literals, paths and the date in a `Received:` field, at most
/// `max` of them; `empty` when nothing is left.
fn token(s: &str, max: usize, empty: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|&c| c.is_ascii_graphic() && !"()[]<>;\"\\".contains(c))
        .take(max)
        .collect();
    if kept.is_empty() {
        empty.to_owned()
    } else {
        kept
    }
}

/// `text` as RFC 2047 encoded words (UTF-8, base64) for a header field
/// value, folded with CRLF and a space between words; ASCII text is
/// returned as it is. 45 octets make 60 base64 characters, so each word
/// stays within 75 (RFC 2047 §2), and a character is never split across
/// two words.
pub fn encoded_words(text: &str) -> String {
    use base64::Engine as _;
    if text.is_ascii() {
        return text.to_string();
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", b64.encode(&chunk)));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", b64.encode(&chunk)));
    }
    words.join("\r\n ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const DATE: &str = "Mon, 23 Nov 2026 18:01:43 +0000";
    const ID: &str = "<1A2B3C@relay.lan>";
    const ADDED: &str =
        "Date: Mon, 23 Nov 2026 18:01:43 +0000\r\nMessage-ID: <1A2B3C@relay.lan>\r\n";

    fn fixer() -> HeaderFixer {
        HeaderFixer::new(DATE.into(), ID.into())
    }

    /// Run `input` through a fixer in the given chunks.
    fn fix_chunks(input: &[u8], cuts: &[usize]) -> (String, HeaderSummary) {
        let mut f = fixer();
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            f.process(&input[start..end], &mut out);
            start = end;
        }
        let summary = f.finish(&mut out);
        (String::from_utf8(out).unwrap(), summary)
    }

    /// Run `input` through a fixer in one piece and at every split point,
    /// checking they agree, and return the result.
    fn fix(input: &str) -> (String, HeaderSummary) {
        let whole = fix_chunks(input.as_bytes(), &[]);
        for cut in 0..=input.len() {
            assert_eq!(
                fix_chunks(input.as_bytes(), &[cut]),
                whole,
                "{input:?} cut at {cut}"
            );
        }
        whole
    }

    fn header_section(out: &str, summary: &HeaderSummary) -> String {
        out[..summary.header_len as usize].to_owned()
    }

    #[test]
    fn received_fields_are_counted_in_the_header_section_only() {
        let (_, s) = fix(
            "Received: from a\r\n\tby b\r\nreceived : from c\r\nRECEIVED:x\r\n\
             X-Received: no\r\n\r\nReceived: in the body\r\n",
        );
        assert_eq!(s.received, 3);
        assert_eq!(fix("Subject: x\r\n\r\n").1.received, 0);
    }

    #[test]
    fn complete_header_passes_through_untouched() {
        let msg = "From: a@lan\r\nDate: Tue, 1 Jan 2030 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n";
        let (out, s) = fix(msg);
        assert_eq!(out, msg);
        assert!(s.date && s.message_id && s.from);
        assert_eq!(s.header_len as usize, msg.find("\r\n\r\n").unwrap() + 4);
    }

    #[test]
    fn missing_fields_go_before_the_empty_line() {
        let (out, s) = fix("From: a@lan\r\nSubject: hi\r\n\r\nbody\r\n");
        assert_eq!(
            out,
            format!("From: a@lan\r\nSubject: hi\r\n{ADDED}\r\nbody\r\n")
        );
        assert!(!s.date && !s.message_id && s.from);
        assert_eq!(
            header_section(&out, &s),
            format!("From: a@lan\r\nSubject: hi\r\n{ADDED}\r\n")
        );
    }

    #[test]
    fn only_the_missing_one_is_added() {
        let (out, s) = fix("date: x\r\n\r\nb\r\n");
        assert_eq!(
            out,
            "date: x\r\nMessage-ID: <1A2B3C@relay.lan>\r\n\r\nb\r\n"
        );
        assert!(s.date && !s.message_id && !s.from);
        let (out, s) = fix("MESSAGE-ID: <x@y>\r\n\r\n");
        assert_eq!(
            out,
            "MESSAGE-ID: <x@y>\r\nDate: Mon, 23 Nov 2026 18:01:43 +0000\r\n\r\n"
        );
        assert!(s.message_id && !s.date);
    }

    #[test]
    fn names_match_case_insensitively_and_with_obsolete_blanks() {
        let (_, s) = fix("dAtE : x\r\nmessage-id\t: <a@b>\r\nfROM: c\r\n\r\n");
        assert!(s.date && s.message_id && s.from);
    }

    #[test]
    fn similar_names_do_not_count() {
        let (out, s) = fix("Resent-Date: x\r\nDates: y\r\nMessage-IDs: z\r\nFrom-: q\r\n\r\n");
        assert!(!s.date && !s.message_id && !s.from);
        assert!(out.contains(ADDED));
    }

    #[test]
    fn continuation_lines_stay_in_the_header() {
        let (out, s) = fix("Subject: a\r\n b\r\n\tDate: not a field\r\nFrom: x\r\n\r\nbody\r\n");
        assert!(!s.date, "a continuation line is not a Date field");
        assert!(s.from);
        assert_eq!(
            out,
            format!("Subject: a\r\n b\r\n\tDate: not a field\r\nFrom: x\r\n{ADDED}\r\nbody\r\n")
        );
    }

    #[test]
    fn fields_in_the_body_are_ignored() {
        let (out, s) = fix("Subject: a\r\n\r\nDate: in body\r\nMessage-ID: <b@c>\r\n");
        assert!(!s.date && !s.message_id);
        assert_eq!(
            out,
            format!("Subject: a\r\n{ADDED}\r\nDate: in body\r\nMessage-ID: <b@c>\r\n")
        );
    }

    #[test]
    fn no_header_section_gets_fields_and_an_empty_line_first() {
        let (out, s) = fix("hello world\r\nDate: late\r\n");
        assert_eq!(out, format!("{ADDED}\r\nhello world\r\nDate: late\r\n"));
        assert!(!s.date);
        assert_eq!(s.header_len as usize, ADDED.len() + 2);
        // An mbox-style "From " line is not a field.
        let (out, s) = fix("From someone Mon Nov 23 18:01:43 2026\r\n");
        assert!(out.starts_with(&format!("{ADDED}\r\nFrom someone")));
        assert!(!s.from);
        // Nor is a continuation line with nothing to continue.
        let (out, _) = fix(" indented\r\n");
        assert_eq!(out, format!("{ADDED}\r\n indented\r\n"));
    }

    #[test]
    fn a_non_field_line_ends_the_header_section() {
        let (out, s) = fix("Subject: a\r\nthis is text\r\nmore\r\n");
        assert_eq!(
            out,
            format!("Subject: a\r\n{ADDED}\r\nthis is text\r\nmore\r\n")
        );
        assert_eq!(
            header_section(&out, &s),
            format!("Subject: a\r\n{ADDED}\r\n")
        );
        // Empty field name.
        let (out, _) = fix("Subject: a\r\n: x\r\n");
        assert_eq!(out, format!("Subject: a\r\n{ADDED}\r\n: x\r\n"));
    }

    #[test]
    fn empty_line_first_means_empty_header_section() {
        let (out, s) = fix("\r\nbody\r\n");
        assert_eq!(out, format!("{ADDED}\r\nbody\r\n"));
        assert_eq!(s.header_len as usize, ADDED.len() + 2);
    }

    #[test]
    fn message_without_body_gets_fields_at_the_end() {
        let (out, s) = fix("Subject: only headers\r\nFrom: a\r\n");
        assert_eq!(out, format!("Subject: only headers\r\nFrom: a\r\n{ADDED}"));
        assert_eq!(s.header_len as usize, out.len());
    }

    #[test]
    fn empty_message_gets_just_the_fields() {
        let (out, s) = fix("");
        assert_eq!(out, ADDED);
        assert_eq!(s.header_len as usize, ADDED.len());
    }

    #[test]
    fn unterminated_last_lines_are_closed() {
        let (out, _) = fix("Subject: x");
        assert_eq!(out, format!("Subject: x\r\n{ADDED}"));
        let (out, _) = fix("Subject: x\r\nSubj");
        assert_eq!(out, format!("Subject: x\r\n{ADDED}\r\nSubj\r\n"));
        let (out, _) = fix("Subject: x\r\n\r");
        assert_eq!(out, format!("Subject: x\r\n{ADDED}\r\n\r\n"));
    }

    #[test]
    fn long_field_name_is_not_held_forever() {
        let name = "X".repeat(MAX_HEADER_LINE_SCAN + 10);
        let msg = format!("Subject: a\r\n{name}: v\r\n");
        let mut f = fixer();
        let mut out = Vec::new();
        f.process(msg.as_bytes(), &mut out);
        // The decision was made without waiting for the end of the line.
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            format!("Subject: a\r\n{ADDED}\r\n{name}: v\r\n")
        );
        let s = f.finish(&mut out);
        assert_eq!(
            s.header_len as usize,
            "Subject: a\r\n".len() + ADDED.len() + 2
        );
        // A name just under the bound is still a field.
        let name = "X".repeat(MAX_HEADER_LINE_SCAN - 1);
        let (out, _) = fix_chunks(format!("{name}: v\r\n\r\n").as_bytes(), &[]);
        assert_eq!(out, format!("{name}: v\r\n{ADDED}\r\n"));
    }

    #[test]
    fn long_header_lines_stream_without_holding() {
        // The value of a field is not held back: only the name is.
        let mut f = fixer();
        let mut out = Vec::new();
        f.process(b"Subject: ", &mut out);
        assert_eq!(out, b"Subject: ");
        f.process(&[b'v'; 5000], &mut out);
        assert_eq!(out.len(), 5009);
        // While a name is undecided, it is held.
        let mut out = Vec::new();
        let mut f = fixer();
        f.process(b"Subj", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn hostile_values_cannot_inject_fields() {
        let mut f = HeaderFixer::new("x\r\nBcc: evil@x".into(), "<a\0b\n@c>".into());
        let mut out = Vec::new();
        f.process(b"Subject: s\r\n\r\n", &mut out);
        f.finish(&mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "Subject: s\r\nDate: x  Bcc: evil@x\r\nMessage-ID: <a b @c>\r\n\r\n"
        );
    }

    #[test]
    fn finish_twice_inserts_once() {
        let mut f = fixer();
        let mut out = Vec::new();
        let first = f.finish(&mut out);
        let second = f.finish(&mut out);
        assert_eq!(first, second);
        assert_eq!(String::from_utf8(out).unwrap(), ADDED);
    }

    #[test]
    fn random_chunking_gives_the_same_output() {
        let msg = b"Received: from x\r\n\tby y\r\nSubject: hi\r\nDate : z\r\n\r\nbody\r\n.line\r\n";
        let whole = fix_chunks(msg, &[]);
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..500 {
            let mut cuts: Vec<usize> = (0..4)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % (msg.len() as u64 + 1)) as usize
                })
                .collect();
            cuts.sort_unstable();
            assert_eq!(fix_chunks(msg, &cuts), whole, "cuts {cuts:?}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_456_903), "2026-11-23T18:01:43Z");
    }

    #[test]
    fn dates_match_known_values() {
        for (secs, text) in [
            (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
            (68_169_600, "Tue, 29 Feb 1972 00:00:00 +0000"),
            (946_684_799, "Fri, 31 Dec 1999 23:59:59 +0000"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (951_868_799, "Tue, 29 Feb 2000 23:59:59 +0000"),
            (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 +0000"),
            (1_795_456_903, "Mon, 23 Nov 2026 18:01:43 +0000"),
            (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 +0000"),
            // 2100 is not a leap year: 28 Feb is followed by 1 Mar.
            (4_107_542_399, "Sun, 28 Feb 2100 23:59:59 +0000"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 +0000"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 +0000"),
        ] {
            assert_eq!(format_date(secs), text, "{secs}");
        }
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walk 1970..2500 day by day and check the calendar never skips or
        // repeats: day+1, or 1 with month+1, or 1 Jan with year+1.
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for days in 1..(530 * 366) {
            let cur = civil_from_days(days);
            let (py, pm, pd) = prev;
            let ok = cur == (py, pm, pd + 1) || cur == (py, pm + 1, 1) || cur == (py + 1, 1, 1);
            assert!(ok, "{prev:?} -> {cur:?}");
            let leap = (py % 4 == 0 && py % 100 != 0) || py % 400 == 0;
            let month_len = match pm {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            if cur.2 == 1 {
                assert_eq!(pd, month_len, "{prev:?} -> {cur:?}");
            }
            prev = cur;
        }
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let s = format_date(u64::MAX);
        assert!(s.ends_with(" +0000"));
    }

    fn received<'a>(helo: &'a str, ip: IpAddr, rcpt: Option<&'a Address>) -> Received<'a> {
        Received {
            helo,
            client_ip: ip,
            by: "relay.lan",
            with: "ESMTP",
            id: "1A2B3C",
            for_rcpt: rcpt,
            unix_secs: 1_795_456_903,
        }
    }

    #[test]
    fn max_len_bounds_the_longest_received_field() {
        let local = "l".repeat(64);
        let domain = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(59),
            "d"
        );
        let longest = format!("{local}@{domain}");
        assert_eq!(longest.len(), MAX_ADDRESS_LEN);
        let rcpt = Address::parse(&longest).unwrap();
        let by = "relay.example.net";
        let r = Received {
            helo: &"h".repeat(300),
            client_ip: IpAddr::V6(Ipv6Addr::new(
                0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xfffe,
            )),
            by,
            with: &"w".repeat(300),
            id: &"i".repeat(300),
            for_rcpt: Some(&rcpt),
            unix_secs: u64::MAX,
        }
        .render();
        assert!(
            r.len() <= Received::max_len(by),
            "{} > {}",
            r.len(),
            Received::max_len(by)
        );
        // Close to it: the bound is not loose by much.
        assert!(Received::max_len(by) - r.len() < 16, "{r}");
        assert!(format_date(u64::MAX).len() <= MAX_DATE_LEN);
    }

    #[test]
    fn received_with_recipient() {
        let rcpt = Address::parse("a@b.example").unwrap();
        let r = received(
            "printer.lan",
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            Some(&rcpt),
        );
        assert_eq!(
            r.render(),
            "Received: from printer.lan ([192.0.2.1])\r\n\tby relay.lan (postern) with ESMTP id 1A2B3C\r\n\tfor <a@b.example>; Mon, 23 Nov 2026 18:01:43 +0000\r\n"
        );
    }

    #[test]
    fn received_without_recipient_and_with_ipv6() {
        let ip = IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            received("nas", ip, None).render(),
            "Received: from nas ([IPv6:2001:db8::1])\r\n\tby relay.lan (postern) with ESMTP id 1A2B3C; Mon, 23 Nov 2026 18:01:43 +0000\r\n"
        );
        // An IPv4 client seen through a dual-stack socket shows as IPv4.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert!(
            received("nas", mapped, None)
                .render()
                .contains("([192.0.2.7])")
        );
    }

    #[test]
    fn helo_is_sanitised() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let cases = [
            ("My Printer", "MyPrinter"),
            ("a(b)[c]<d>;e\"f\\g", "abcdefg"),
            ("", "unknown"),
            ("   ", "unknown"),
            ("ünïcode", "ncode"),
            ("x\r\nBcc: evil", "xBcc:evil"),
        ];
        for (helo, shown) in cases {
            let text = received(helo, ip, None).render();
            assert!(
                text.starts_with(&format!("Received: from {shown} ([127.0.0.1])\r\n")),
                "{helo:?}: {text:?}"
            );
        }
        let long = "h".repeat(200);
        let text = received(&long, ip, None).render();
        assert!(text.starts_with(&format!("Received: from {} (", "h".repeat(64))));
    }

    #[test]
    fn received_never_contains_stray_cr_lf_or_nul() {
        let hostile = [
            "evil\r\n.\r\nMAIL FROM:<x>",
            "a\nb\rc\0d",
            "\r\n\r\n",
            "\0",
            "(comment) [1.2.3.4] <x>; Mon",
            "\u{85}\u{2028}\u{2029}",
        ];
        let rcpt = Address::parse("\"odd;rcpt>\"@x").unwrap();
        for helo in hostile {
            let r = Received {
                helo,
                client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                by: helo,
                with: helo,
                id: helo,
                for_rcpt: Some(&rcpt),
                unix_secs: 0,
            };
            let text = r.render();
            assert!(!text.contains('\0'), "{text:?}");
            // Line breaks only where we fold (CRLF TAB) and at the end.
            let lines: Vec<&str> = text.split("\r\n").collect();
            assert_eq!(lines.len(), 4, "{text:?}");
            assert_eq!(lines[3], "", "{text:?}");
            assert!(
                lines[1].starts_with('\t') && lines[2].starts_with('\t'),
                "{text:?}"
            );
            assert!(lines.iter().all(|l| !l.contains(['\r', '\n'])), "{text:?}");
            assert!(text.starts_with("Received: from "), "{text:?}");
            assert!(
                text.ends_with("; Thu, 01 Jan 1970 00:00:00 +0000\r\n"),
                "{text:?}"
            );
        }
    }
}
