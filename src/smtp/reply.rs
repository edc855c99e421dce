//! Replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463): built by
//! the server, parsed by the smarthost client.

use std::fmt;

/// Longest reply line we accept from an upstream, CRLF included. RFC 5321
/// §4.5.3.1.5 says 512; servers in the wild exceed it a little.
pub const MAX_REPLY_LINE: usize = 1024;
/// Most lines in one multi-line reply (EHLO lists are the longest, ~20).
pub const MAX_REPLY_LINES: usize = 64;

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus {
    /// 2, 4 or 5.
    pub class: u8,
    /// Subject (0..=999).
    pub subject: u16,
    /// Detail (0..=999).
    pub detail: u16,
}

impl EnhancedStatus {
    /// Build from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedStatus { class, subject, detail }
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply: a code, an optional enhanced status, one or more lines of
/// text (without the code prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code, if any.
    pub status: Option<EnhancedStatus>,
    /// Text lines; never empty when written (an empty text becomes one empty line).
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Reply {
        Reply { code, status: Some(status), lines: vec![text.into()] }
    }
    /// A one-line reply without an enhanced status (greeting, EHLO).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply { code, status: None, lines: vec![text.into()] }
    }
    /// 2xx
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 3xx
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }
    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
    /// Serialize for the wire: `code-status text\r\n` lines, the last with a
    /// space after the code. The status is repeated on every line (RFC 2034).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let _ = out;
        unimplemented!("helper: smtp/reply.rs")
    }
    /// One line for logs: `code status text / text …`, control characters
    /// replaced, at most 300 characters.
    pub fn to_log_string(&self) -> String {
        unimplemented!("helper: smtp/reply.rs")
    }
}

/// Why an upstream reply could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// Line longer than [`MAX_REPLY_LINE`].
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    /// More than [`MAX_REPLY_LINES`] continuation lines.
    #[error("reply has more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    /// Not `ddd[ -]text`, or the code changed between lines.
    #[error("malformed reply line")]
    Malformed,
}

/// Assembles a (possibly multi-line) reply from lines read off the wire.
#[derive(Debug, Default)]
pub struct ReplyParser {
    partial: Option<Reply>,
}

impl ReplyParser {
    /// A parser with no partial reply.
    pub fn new() -> Self {
        ReplyParser::default()
    }
    /// Feed one line (CRLF or LF already stripped). Returns the reply once its
    /// last line (`ddd ` or bare `ddd`) has arrived. The enhanced status code
    /// is recognised when the first line's text starts with `c.s.d ` whose
    /// class matches the reply code's first digit; it is stripped from the text.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let _ = (line, &mut self.partial);
        unimplemented!("helper: smtp/reply.rs")
    }
}

/// What a server offered in its EHLO reply (RFC 5321 §4.1.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920)
    pub pipelining: bool,
    /// STARTTLS (RFC 3207)
    pub starttls: bool,
    /// SIZE (RFC 1870); `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152)
    pub eightbitmime: bool,
    /// SMTPUTF8 (RFC 6531)
    pub smtputf8: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034)
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms offered (RFC 4954), upper-cased.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Read the keywords from the lines after the first of a 250 EHLO reply.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let _ = reply;
        unimplemented!("helper: smtp/reply.rs")
    }
}
