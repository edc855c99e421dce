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
        EnhancedStatus {
            class,
            subject,
            detail,
        }
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
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }
    /// A one-line reply without an enhanced status (greeting, EHLO).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: None,
            lines: vec![text.into()],
        }
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
    ///
    /// Text is sanitised on the way out: CR, LF, NUL and every other control
    /// character but HTAB become a space, so no text (an echoed address, an
    /// upstream's message) can end a reply line early or inject another.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let single_empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &single_empty
        } else {
            &self.lines
        };
        let last = lines.len().saturating_sub(1);
        for (i, text) in lines.iter().enumerate() {
            push_code(out, self.code);
            let sep = if i == last { b' ' } else { b'-' };
            let mut need_sep = true;
            if let Some(status) = self.status {
                out.push(sep);
                out.extend_from_slice(status.to_string().as_bytes());
                need_sep = false;
            }
            if !text.is_empty() {
                out.push(if need_sep { sep } else { b' ' });
                push_sanitised(out, text);
            } else if need_sep && (i != last || self.code == 334) {
                // `250-` alone: the dash is what says more lines follow.
                // `334 ` alone: RFC 4954 §4 puts the space there even before
                // an empty challenge (AUTH PLAIN), and strict clients wait
                // for it.
                out.push(sep);
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    /// One line for logs: `code status text / text …`, control characters
    /// replaced, at most 300 characters.
    pub fn to_log_string(&self) -> String {
        let mut s = String::with_capacity(64);
        let mut code = Vec::with_capacity(3);
        push_code(&mut code, self.code);
        s.extend(code.iter().map(|&b| char::from(b)));
        if let Some(status) = self.status {
            s.push(' ');
            s.push_str(&status.to_string());
        }
        for (i, line) in self.lines.iter().enumerate() {
            // Stop early: an upstream may send 64 long lines, and we keep 300.
            if s.len() > MAX_LOG_CHARS * 4 {
                break;
            }
            s.push_str(if i == 0 { " " } else { " / " });
            s.extend(line.chars().map(|c| if c.is_control() { ' ' } else { c }));
        }
        let s = s.trim_end();
        if s.chars().count() <= MAX_LOG_CHARS {
            return s.to_owned();
        }
        let mut cut: String = s.chars().take(MAX_LOG_CHARS - 1).collect();
        cut.push('…');
        cut
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
///
/// Strict by default: a line over [`MAX_REPLY_LINE`] or a reply over
/// [`MAX_REPLY_LINES`] is an error. [`ReplyParser::lenient`] keeps what it
/// can instead (see there); the smarthost client reads replies that way,
/// through [`ReplyReader`].
#[derive(Debug, Default)]
pub struct ReplyParser {
    partial: Option<Reply>,
    lenient: bool,
    /// Lines of the partial reply not kept (lenient mode).
    skipped: usize,
}

impl ReplyParser {
    /// A parser with no partial reply.
    pub fn new() -> Self {
        ReplyParser::default()
    }

    /// A parser that reads liberally but stays bounded: a long line keeps
    /// its first [`MAX_REPLY_LINE`] octets (code, enhanced code and the
    /// start of the text); a reply of more than [`MAX_REPLY_LINES`] lines
    /// keeps the first ones and the last, and says how many it left out.
    /// Servers that write a 100 KB banner or a 200-line 250 are odd, not
    /// wrong, and what matters most is their reply code.
    pub fn lenient() -> Self {
        ReplyParser {
            lenient: true,
            ..ReplyParser::default()
        }
    }

    /// The code of the reply being assembled, once its first line is in.
    pub fn partial_code(&self) -> Option<u16> {
        self.partial.as_ref().map(|r| r.code)
    }
    /// Feed one line (CRLF or LF already stripped). Returns the reply once its
    /// last line (`ddd ` or bare `ddd`) has arrived. The enhanced status code
    /// is recognised when the first line's text starts with `c.s.d ` whose
    /// class matches the reply code's first digit; it is stripped from the text.
    ///
    /// Later lines of a reply with an enhanced status have their own leading
    /// status stripped too (RFC 2034 repeats it on every line). Text that is
    /// not UTF-8 is converted lossily. After an error the partial reply is
    /// dropped; the connection's framing is not to be trusted any more.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let result = self.push_inner(line);
        if result.is_err() {
            self.partial = None;
            self.skipped = 0;
        }
        result
    }

    fn push_inner(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        // The bound counts the CRLF the caller already stripped.
        let keep = MAX_REPLY_LINE - 2;
        let line = match line.get(..keep) {
            Some(cut) if line.len() > keep && self.lenient => cut,
            Some(_) if line.len() > keep => return Err(ReplyError::LineTooLong),
            _ => line,
        };
        let (code, last, text) = split_reply_line(line)?;
        let text = String::from_utf8_lossy(text);
        let reply = match self.partial.take() {
            None => {
                let (status, text) = match split_status(&text, code) {
                    Some((status, rest)) => (Some(status), rest),
                    None => (None, &*text),
                };
                Reply {
                    code,
                    status,
                    lines: vec![text.to_owned()],
                }
            }
            Some(mut reply) => {
                if reply.code != code {
                    return Err(ReplyError::Malformed);
                }
                // Lenient: room for a note on what was left out and the
                // last line, which are kept whatever comes between.
                let full = if self.lenient {
                    reply.lines.len() >= MAX_REPLY_LINES - 2
                } else {
                    reply.lines.len() >= MAX_REPLY_LINES
                };
                if full && !self.lenient {
                    return Err(ReplyError::TooManyLines);
                }
                let text = match (reply.status, split_status(&text, code)) {
                    (Some(_), Some((_, rest))) => rest,
                    _ => &*text,
                };
                if full && !last {
                    self.skipped = self.skipped.saturating_add(1);
                } else {
                    if self.skipped > 0 {
                        reply
                            .lines
                            .push(format!("[{} more lines not kept]", self.skipped));
                        self.skipped = 0;
                    }
                    reply.lines.push(text.to_owned());
                }
                reply
            }
        };
        if last {
            Ok(Some(reply))
        } else {
            self.partial = Some(reply);
            Ok(None)
        }
    }
}

/// Reads replies from a byte stream, as they arrive in whatever pieces,
/// with a lenient [`ReplyParser`]: memory stays bounded (at most one
/// [`MAX_REPLY_LINE`] of the current line, and the kept lines) however
/// long a line or a reply is. Lines end in LF, with or without CR.
#[derive(Debug)]
pub struct ReplyReader {
    parser: ReplyParser,
    /// The current line so far, at most [`MAX_REPLY_LINE`] octets.
    line: Vec<u8>,
    /// The code the reply in progress began with; kept after an error.
    started: Option<u16>,
}

impl Default for ReplyReader {
    fn default() -> Self {
        ReplyReader::new()
    }
}

impl ReplyReader {
    /// A reader with nothing buffered.
    pub fn new() -> Self {
        ReplyReader {
            parser: ReplyParser::lenient(),
            line: Vec::with_capacity(128),
            started: None,
        }
    }

    /// Take bytes from `input` up to the end of the next complete reply.
    /// Returns how many octets were used (the rest belongs to later
    /// replies) and the reply, if one is complete. After an error, the
    /// reply in progress is dropped (the framing is not to be trusted).
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Result<Reply, ReplyError>>) {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            let (chunk, end_of_line) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            used += chunk.len() + usize::from(end_of_line);
            let room = MAX_REPLY_LINE.saturating_sub(self.line.len());
            self.line
                .extend_from_slice(chunk.get(..room).unwrap_or(chunk));
            if self.parser.partial_code().is_none()
                && let Some(code) = code_of(&self.line)
            {
                // The first line of a reply: what the server began to say.
                self.started = Some(code);
            }
            if !end_of_line {
                break;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let res = self.parser.push_line(&self.line);
            self.line.clear();
            match res {
                Ok(None) => {}
                Ok(Some(r)) => {
                    self.started = None;
                    return (used, Some(Ok(r)));
                }
                Err(e) => return (used, Some(Err(e))),
            }
        }
        (used, None)
    }

    /// The code the reply being read began with, once its first three
    /// octets are in, and still after the reply turned out malformed: what
    /// a server began to say, for when it never finishes properly (a 250 to
    /// the final dot that is cut off still means "accepted").
    pub fn partial_code(&self) -> Option<u16> {
        self.started
    }
}

/// The reply code at the start of `line`, if it starts with one.
fn code_of(line: &[u8]) -> Option<u16> {
    match line.get(..3) {
        Some(&[a @ b'2'..=b'5', b, c]) if b.is_ascii_digit() && c.is_ascii_digit() => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
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
    /// DSN (RFC 3461): the server takes NOTIFY, ORCPT, RET and ENVID.
    pub dsn: bool,
}

impl Capabilities {
    /// Read the keywords from the lines after the first of a 250 EHLO reply.
    ///
    /// Keywords are matched case-insensitively and unknown ones ignored. A
    /// reply other than 250 offers nothing. `SIZE` without a usable number
    /// gives `Some(0)`: the extension is there, its limit unknown.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        if reply.code != 250 {
            return caps;
        }
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            // Old servers (and clients that only read the old form) use
            // `AUTH=PLAIN LOGIN`; many servers send both forms.
            let old_auth = keyword
                .get(..5)
                .filter(|k| k.eq_ignore_ascii_case("AUTH="))
                .and_then(|_| keyword.get(5..));
            if let Some(first) = old_auth {
                add_mechanisms(&mut caps.auth, std::iter::once(first).chain(words));
                continue;
            }
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            } else if is("8BITMIME") {
                caps.eightbitmime = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("ENHANCEDSTATUSCODES") {
                caps.enhanced_status_codes = true;
            } else if is("DSN") {
                caps.dsn = true;
            } else if is("SIZE") {
                let limit = words.next().and_then(|w| w.parse::<u64>().ok());
                caps.size = Some(limit.unwrap_or(0));
            } else if is("AUTH") {
                add_mechanisms(&mut caps.auth, words);
            }
        }
        caps
    }
}

/// Longest SASL mechanism name (RFC 4422 §3.1).
const MAX_MECHANISM_LEN: usize = 20;

/// Most AUTH mechanisms remembered; real servers offer fewer than ten.
const MAX_MECHANISMS: usize = 16;

/// Append upper-cased, well-formed, not yet listed mechanism names.
fn add_mechanisms<'a>(list: &mut Vec<String>, names: impl Iterator<Item = &'a str>) {
    for name in names {
        let well_formed = !name.is_empty()
            && name.len() <= MAX_MECHANISM_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed || list.len() >= MAX_MECHANISMS {
            continue;
        }
        let name = name.to_ascii_uppercase();
        if !list.contains(&name) {
            list.push(name);
        }
    }
}

/// Most characters [`Reply::to_log_string`] returns.
const MAX_LOG_CHARS: usize = 300;

/// Three ASCII digits. Codes are ours or came through the parser, which only
/// accepts three digits; clamping keeps a stray value from widening the field.
fn push_code(out: &mut Vec<u8>, code: u16) {
    let code = code.min(999);
    for div in [100, 10, 1] {
        // `code / div % 10` is below 10, so the cast cannot truncate.
        out.push(b'0' + (code / div % 10) as u8);
    }
}

/// Reply text with every control character but HTAB turned into a space.
fn push_sanitised(out: &mut Vec<u8>, text: &str) {
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.push(b' ');
        } else {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// `ddd`, `ddd text` or `ddd-text` → (code, is last line, text).
fn split_reply_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let (digits, rest) = line.split_at_checked(3).ok_or(ReplyError::Malformed)?;
    let code = match digits {
        [a @ b'2'..=b'5', b, c] if b.is_ascii_digit() && c.is_ascii_digit() => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(ReplyError::Malformed),
    };
    match rest.split_first() {
        None => Ok((code, true, rest)),
        Some((b' ', text)) => Ok((code, true, text)),
        Some((b'-', text)) => Ok((code, false, text)),
        Some(_) => Err(ReplyError::Malformed),
    }
}

/// A leading `class.subject.detail` followed by a space or the end of the
/// text, whose class is the reply code's first digit (RFC 3463 §2). Returns
/// the status and the text after it.
fn split_status(text: &str, code: u16) -> Option<(EnhancedStatus, &str)> {
    let (token, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = token.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let number = |s: &str, max_len: usize| -> Option<u16> {
        let ok = (1..=max_len).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        if ok { s.parse().ok() } else { None }
    };
    let class = u8::try_from(number(class, 1)?).ok()?;
    if !matches!(class, 2 | 4 | 5) || u16::from(class) != code / 100 {
        return None;
    }
    let status = EnhancedStatus::new(class, number(subject, 3)?, number(detail, 3)?);
    Some((status, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn parse_all(lines: &[&[u8]]) -> Result<Option<Reply>, ReplyError> {
        let mut p = ReplyParser::new();
        let mut last = Ok(None);
        for l in lines {
            last = p.push_line(l);
            if last.is_err() {
                break;
            }
        }
        last
    }

    #[test]
    fn single_line_with_status() {
        let r = Reply::new(250, EnhancedStatus::new(2, 1, 0), "Ok");
        assert_eq!(wire(&r), "250 2.1.0 Ok\r\n");
    }

    #[test]
    fn multi_line_repeats_code_and_status_and_ends_with_space() {
        let r = Reply {
            code: 250,
            status: Some(EnhancedStatus::new(2, 0, 0)),
            lines: vec!["one".into(), "two".into(), "three".into()],
        };
        assert_eq!(
            wire(&r),
            "250-2.0.0 one\r\n250-2.0.0 two\r\n250 2.0.0 three\r\n"
        );
    }

    #[test]
    fn multi_line_without_status() {
        let r = Reply {
            code: 250,
            status: None,
            lines: vec!["relay.lan".into(), "PIPELINING".into(), "SIZE 1000".into()],
        };
        assert_eq!(
            wire(&r),
            "250-relay.lan\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
        );
    }

    #[test]
    fn empty_text_writes_the_code_alone() {
        let r = Reply {
            code: 250,
            status: None,
            lines: vec![],
        };
        assert_eq!(wire(&r), "250\r\n");
        let r = Reply {
            code: 250,
            status: None,
            lines: vec![String::new(), String::new()],
        };
        assert_eq!(wire(&r), "250-\r\n250\r\n");
        let r = Reply::new(250, EnhancedStatus::new(2, 0, 0), "");
        assert_eq!(wire(&r), "250 2.0.0\r\n");
    }

    #[test]
    fn an_empty_334_challenge_keeps_its_space() {
        // RFC 4954 §4: continue-req = "334" SP [base64] CRLF.
        assert_eq!(wire(&Reply::plain(334, "")), "334 \r\n");
        assert_eq!(
            wire(&Reply::plain(334, "VXNlcm5hbWU6")),
            "334 VXNlcm5hbWU6\r\n"
        );
    }

    #[test]
    fn write_never_emits_cr_lf_or_nul_from_text() {
        let r = Reply {
            code: 550,
            status: Some(EnhancedStatus::new(5, 1, 1)),
            lines: vec!["a\r\n250 fake".into(), "b\0c\rd\ne\u{85}f\tg".into()],
        };
        let w = wire(&r);
        assert_eq!(w, "550-5.1.1 a  250 fake\r\n550 5.1.1 b c d e f\tg\r\n");
        // Exactly one CRLF per line and no other CR/LF/NUL.
        assert_eq!(w.matches("\r\n").count(), 2);
        assert_eq!(w.matches('\r').count(), 2);
        assert_eq!(w.matches('\n').count(), 2);
        assert!(!w.contains('\0'));
    }

    #[test]
    fn log_string_is_one_line_and_bounded() {
        let r = Reply {
            code: 250,
            status: Some(EnhancedStatus::new(2, 0, 0)),
            lines: vec!["first".into(), "sec\r\nond".into()],
        };
        assert_eq!(r.to_log_string(), "250 2.0.0 first / sec  ond");
        assert_eq!(Reply::plain(220, "hi").to_log_string(), "220 hi");
        let long = Reply {
            code: 250,
            status: None,
            lines: vec!["x".repeat(2000); 64],
        };
        let s = long.to_log_string();
        assert_eq!(s.chars().count(), 300);
        assert!(s.ends_with('…'));
        assert!(!s.contains(['\r', '\n']));
    }

    #[test]
    fn parses_single_line_with_enhanced_status() {
        let r = parse_all(&[b"250 2.1.5 Ok"]).unwrap().unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.status, Some(EnhancedStatus::new(2, 1, 5)));
        assert_eq!(r.lines, vec!["Ok".to_string()]);
        assert!(r.is_positive());
    }

    #[test]
    fn parses_multi_line_and_strips_status_from_every_line() {
        let mut p = ReplyParser::new();
        assert_eq!(p.push_line(b"550-5.7.1 Policy says no").unwrap(), None);
        assert_eq!(p.push_line(b"550-5.7.1 see https://x").unwrap(), None);
        let r = p.push_line(b"550 5.7.1 bye").unwrap().unwrap();
        assert_eq!(r.status, Some(EnhancedStatus::new(5, 7, 1)));
        assert_eq!(r.lines, vec!["Policy says no", "see https://x", "bye"]);
        assert!(r.is_permanent());
        // The parser is ready for the next reply.
        let r = p.push_line(b"221 2.0.0 Bye").unwrap().unwrap();
        assert_eq!(r.code, 221);
    }

    #[test]
    fn status_needs_matching_class_and_shape() {
        // Class differs from the code's first digit: it is just text.
        let r = parse_all(&[b"250 4.0.0 odd"]).unwrap().unwrap();
        assert_eq!(r.status, None);
        assert_eq!(r.lines, vec!["4.0.0 odd"]);
        // Not three parts, or too many digits.
        for line in [
            &b"250 2.0 Ok"[..],
            b"250 2.0.0.0 Ok",
            b"250 2.0000.0 Ok",
            b"250 22.0.0 Ok",
            b"250 2.0.0x Ok",
            b"250 2..0 Ok",
        ] {
            let r = parse_all(&[line]).unwrap().unwrap();
            assert_eq!(r.status, None, "{:?}", String::from_utf8_lossy(line));
        }
        // 3xx replies carry no enhanced status.
        let r = parse_all(&[b"354 3.0.0 go"]).unwrap().unwrap();
        assert_eq!(r.status, None);
        // Status with no text after it.
        let r = parse_all(&[b"250 2.0.0"]).unwrap().unwrap();
        assert_eq!(r.status, Some(EnhancedStatus::new(2, 0, 0)));
        assert_eq!(r.lines, vec![""]);
        // Three-digit subject and detail.
        let r = parse_all(&[b"452 4.123.999 x"]).unwrap().unwrap();
        assert_eq!(r.status, Some(EnhancedStatus::new(4, 123, 999)));
    }

    #[test]
    fn later_lines_without_status_keep_their_text() {
        let r = parse_all(&[b"250-2.0.0 a", b"250 b"]).unwrap().unwrap();
        assert_eq!(r.lines, vec!["a", "b"]);
    }

    #[test]
    fn status_on_later_lines_only_is_not_recognised() {
        let r = parse_all(&[b"250-a", b"250 2.0.0 b"]).unwrap().unwrap();
        assert_eq!(r.status, None);
        assert_eq!(r.lines, vec!["a", "2.0.0 b"]);
    }

    #[test]
    fn bare_code_is_a_valid_last_line() {
        let r = parse_all(&[b"250-first", b"250"]).unwrap().unwrap();
        assert_eq!(r.lines, vec!["first", ""]);
        let r = parse_all(&[b"250"]).unwrap().unwrap();
        assert_eq!(r.lines, vec![""]);
        assert_eq!(r.status, None);
    }

    #[test]
    fn malformed_lines_are_refused() {
        for line in [
            &b""[..],
            b"25",
            b"2500 x",
            b"250x",
            b"abc def",
            b"150 x",
            b"650 x",
            b"099 x",
            b" 250 x",
        ] {
            assert_eq!(
                parse_all(&[line]),
                Err(ReplyError::Malformed),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn code_change_between_lines_is_malformed_and_resets() {
        let mut p = ReplyParser::new();
        p.push_line(b"250-a").unwrap();
        assert_eq!(p.push_line(b"251 b"), Err(ReplyError::Malformed));
        // The partial reply was dropped: the next line starts afresh.
        let r = p.push_line(b"220 ready").unwrap().unwrap();
        assert_eq!(r.lines, vec!["ready"]);
    }

    #[test]
    fn line_length_is_bounded() {
        let mut line = b"250 ".to_vec();
        line.resize(MAX_REPLY_LINE - 2, b'x');
        assert!(parse_all(&[&line]).unwrap().is_some());
        line.push(b'x');
        assert_eq!(parse_all(&[&line]), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn line_count_is_bounded() {
        let mut p = ReplyParser::new();
        for _ in 0..MAX_REPLY_LINES - 1 {
            assert_eq!(p.push_line(b"250-x").unwrap(), None);
        }
        let r = p.push_line(b"250 last").unwrap().unwrap();
        assert_eq!(r.lines.len(), MAX_REPLY_LINES);

        let mut p = ReplyParser::new();
        for _ in 0..MAX_REPLY_LINES {
            assert_eq!(p.push_line(b"250-x").unwrap(), None);
        }
        assert_eq!(p.push_line(b"250-x"), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn non_utf8_text_is_converted_lossily() {
        let r = parse_all(&[b"550 caf\xe9"]).unwrap().unwrap();
        assert_eq!(r.lines, vec!["caf\u{fffd}"]);
    }

    #[test]
    fn parse_of_write_round_trips() {
        let r = Reply {
            code: 451,
            status: Some(EnhancedStatus::new(4, 3, 0)),
            lines: vec!["try".into(), "again later".into()],
        };
        let w = wire(&r);
        let mut p = ReplyParser::new();
        let mut got = None;
        for line in w.split_terminator("\r\n") {
            got = p.push_line(line.as_bytes()).unwrap();
        }
        assert_eq!(got, Some(r));
    }

    /// Feed `wire` to a reader in pieces of `step` octets; every reply.
    fn read_all(wire: &[u8], step: usize) -> Vec<Result<Reply, ReplyError>> {
        let mut r = ReplyReader::new();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in wire.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                let (used, got) = r.feed(&pending);
                pending.drain(..used);
                match got {
                    Some(x) => out.push(x),
                    None => break,
                }
            }
        }
        out
    }

    #[test]
    fn a_long_reply_line_keeps_its_code_status_and_start() {
        // A 100 KB 250 to the final dot once made the message be sent again
        // at every retry.
        let mut wire = b"250 2.0.0 queued as X".to_vec();
        wire.extend(std::iter::repeat_n(b'y', 100_000));
        wire.extend_from_slice(b"\r\n221 bye\r\n");
        for step in [1, 7, 4096, wire.len()] {
            let got = read_all(&wire, step);
            assert_eq!(got.len(), 2, "step {step}");
            let r = got[0].clone().unwrap();
            assert_eq!(r.code, 250);
            assert_eq!(r.status, Some(EnhancedStatus::new(2, 0, 0)));
            assert!(r.lines[0].starts_with("queued as Xyyy"));
            assert!(r.lines[0].len() <= MAX_REPLY_LINE);
            assert_eq!(got[1].clone().unwrap().code, 221);
        }
    }

    #[test]
    fn a_reply_of_many_lines_keeps_the_first_and_the_last() {
        let mut wire = Vec::new();
        for i in 0..500 {
            wire.extend_from_slice(format!("250-2.0.0 line {i}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"250 2.0.0 the end\n");
        for step in [3, 1000, wire.len()] {
            let got = read_all(&wire, step);
            let r = got[0].clone().unwrap();
            assert_eq!(r.lines.len(), MAX_REPLY_LINES, "step {step}");
            assert_eq!(r.lines[0], "line 0");
            assert_eq!(r.lines[MAX_REPLY_LINES - 1], "the end");
            let skipped = 500 - (MAX_REPLY_LINES - 2);
            assert_eq!(
                r.lines[MAX_REPLY_LINES - 2],
                format!("[{skipped} more lines not kept]")
            );
        }
    }

    #[test]
    fn the_code_of_a_reply_cut_short_is_known() {
        let mut r = ReplyReader::new();
        assert_eq!(r.partial_code(), None);
        assert_eq!(r.feed(b"25"), (2, None));
        assert_eq!(r.partial_code(), None);
        let long = [b'x'; 5000];
        r.feed(b"0 ");
        r.feed(&long);
        assert_eq!(r.partial_code(), Some(250));
        let mut r = ReplyReader::new();
        assert_eq!(r.feed(b"250-first\r\n"), (11, None));
        assert_eq!(r.partial_code(), Some(250));
        // The code changes: malformed, but it began as a 250.
        let (_, got) = r.feed(b"550 no\r\n");
        assert_eq!(got, Some(Err(ReplyError::Malformed)));
        assert_eq!(r.partial_code(), Some(250));
        // A complete reply: nothing in progress.
        let (_, got) = r.feed(b"221 bye\r\n");
        assert_eq!(got.unwrap().unwrap().code, 221);
        assert_eq!(r.partial_code(), None);
        let mut r = ReplyReader::new();
        r.feed(b"xyz");
        assert_eq!(r.partial_code(), None);
    }

    #[test]
    fn the_strict_parser_is_unchanged_by_the_lenient_one() {
        let mut p = ReplyParser::lenient();
        let mut line = b"250 ".to_vec();
        line.resize(MAX_REPLY_LINE * 3, b'x');
        let r = p.push_line(&line).unwrap().unwrap();
        assert_eq!(r.lines[0].len(), MAX_REPLY_LINE - 6);
        assert_eq!(
            ReplyParser::new().push_line(&line),
            Err(ReplyError::LineTooLong)
        );
    }

    fn ehlo(lines: &[&str]) -> Capabilities {
        let mut p = ReplyParser::new();
        let mut reply = None;
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            reply = p.push_line(format!("250{sep}{l}").as_bytes()).unwrap();
        }
        Capabilities::from_ehlo(&reply.unwrap())
    }

    #[test]
    fn capabilities_from_a_typical_ehlo() {
        let caps = ehlo(&[
            "smtp.example.com at your service",
            "SIZE 35882577",
            "8BITMIME",
            "STARTTLS",
            "ENHANCEDSTATUSCODES",
            "PIPELINING",
            "CHUNKING",
            "SMTPUTF8",
            "DSN",
        ]);
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                starttls: true,
                size: Some(35_882_577),
                eightbitmime: true,
                smtputf8: true,
                enhanced_status_codes: true,
                auth: vec![],
                dsn: true,
            }
        );
    }

    #[test]
    fn capability_keywords_are_case_insensitive() {
        let caps = ehlo(&["host", "pipelining", "StartTLS", "size 1000", "auth plain"]);
        assert!(caps.pipelining);
        assert!(caps.starttls);
        assert_eq!(caps.size, Some(1000));
        assert_eq!(caps.auth, vec!["PLAIN"]);
    }

    #[test]
    fn bare_or_garbled_size_means_no_fixed_limit() {
        assert_eq!(ehlo(&["host", "SIZE"]).size, Some(0));
        assert_eq!(ehlo(&["host", "SIZE lots"]).size, Some(0));
        assert_eq!(ehlo(&["host", "8BITMIME"]).size, None);
    }

    #[test]
    fn auth_mechanisms_both_forms_deduplicated() {
        let caps = ehlo(&[
            "host",
            "AUTH PLAIN LOGIN XOAUTH2",
            "AUTH=PLAIN LOGIN",
            "auth=cram-md5",
        ]);
        assert_eq!(caps.auth, vec!["PLAIN", "LOGIN", "XOAUTH2", "CRAM-MD5"]);
    }

    #[test]
    fn the_greeting_line_is_not_a_keyword() {
        // A server whose name happens to be a keyword.
        let caps = ehlo(&["STARTTLS", "SIZE 5"]);
        assert!(!caps.starttls);
        assert_eq!(caps.size, Some(5));
    }

    #[test]
    fn non_250_reply_offers_nothing() {
        let r = Reply {
            code: 502,
            status: None,
            lines: vec!["no".into(), "STARTTLS".into()],
        };
        assert_eq!(Capabilities::from_ehlo(&r), Capabilities::default());
    }
}
