//! The header lines postern generates or completes (RFC 5322, RFC 5321 §4.4,
//! RFC 6409 §8): `Received`, and `Date`/`Message-ID` when a device left them
//! out. Every value is validated here so no CR, LF or NUL can reach a header.

use std::net::IpAddr;

use super::address::Address;

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
    /// Octets in the header section, up to and including its empty line.
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
#[derive(Debug)]
pub struct HeaderFixer {
    date: String,
    message_id: String,
    summary: HeaderSummary,
}

impl HeaderFixer {
    /// `date` and `message_id` are the field values to insert when missing
    /// (e.g. from [`format_date`] and `<id@host>`).
    pub fn new(date: String, message_id: String) -> Self {
        HeaderFixer { date, message_id, summary: HeaderSummary::default() }
    }
    /// Pass CRLF-canonical bytes through to `out`, inserting as needed.
    pub fn process(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let _ = (input, out, &self.date, &self.message_id);
        unimplemented!("helper: smtp/header.rs")
    }
    /// End of message: flush anything held back and insert what is still missing.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> HeaderSummary {
        let _ = out;
        unimplemented!("helper: smtp/header.rs")
    }
}

/// An RFC 5322 date-time in UTC, e.g. `Mon, 23 Nov 2026 18:01:43 +0000`.
pub fn format_date(unix_secs: u64) -> String {
    let _ = unix_secs;
    unimplemented!("helper: smtp/header.rs")
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
    pub fn render(&self) -> String {
        unimplemented!("helper: smtp/header.rs")
    }
}
