//! Rewriting the From header on the way out (`rewrite_from = true`):
//! providers refuse (Microsoft 365 `SendAsDenied`) or silently change
//! (Gmail) a From that is not the login. The display name is kept, the
//! address becomes the route's `rewrite_sender`, and the original address
//! goes into Reply-To unless the message has one, so replies still reach
//! the device's owner.
//!
//! The whole From field is replaced, so nothing of the original value can
//! survive in it. A message that has more than one From field, or a From
//! with more than one mailbox, is not rewritten but refused (the delivery
//! fails with a report that says why): choosing one would let a second
//! `From: ceo@bank.example` go out as the device wrote it. Field names are
//! matched as RFC 5322 §4.5 allows, blanks before the colon included.
//!
//! The display name is written so that the field always parses: kept as it
//! was when it is a short, well-formed ASCII phrase, and otherwise
//! re-encoded (an RFC 5322 quoted-string, or RFC 2047 encoded-words when it
//! is not ASCII) after control characters are blanked and it is cut to
//! [`MAX_DISPLAY_NAME`] characters.
//!
//! Delivery reads the header section before it connects ([`prepare`]; at
//! most [`MAX_HEADER_SECTION`], the limit the listener enforces too) and
//! then streams the new header section followed by the rest of the queued
//! message ([`RewritingBody`]). Every value written is checked for CR, LF
//! and NUL. Uses `smtp` only.

use std::pin::Pin;

use super::client::BodySource;
pub use crate::smtp::header::MAX_HEADER_SECTION;

/// Longest display name written, in characters; longer ones are cut.
/// Device names are short, and a bound keeps every written line far below
/// RFC 5322's 998 octets.
pub const MAX_DISPLAY_NAME: usize = 128;

/// Why a message's From cannot be rewritten. The delivery fails (with a
/// report): sending it unchanged would defeat `rewrite_from`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The configured address cannot be written into a header safely.
    #[error("rewrite_sender {0:?} cannot be written into a From header")]
    UnsafeAddress(String),
    /// RFC 5322 allows one From field.
    #[error(
        "the message has {0} From header fields (RFC 5322 allows one); rewrite_from will not pick one and send the others unchanged"
    )]
    FromFields(usize),
    /// More than one author.
    #[error(
        "the From header names {0} mailboxes; rewrite_from replaces one author, so the message is not sent"
    )]
    Mailboxes(usize),
    /// No end of the header section within the limit.
    #[error(
        "the header section is longer than {MAX_HEADER_SECTION} octets; its From cannot be rewritten"
    )]
    TooLong,
}

/// A prepared rewrite: the new header section, and how many octets of the
/// queued message it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The rewritten header fields (CRLF lines, without the empty line).
    pub header: Vec<u8>,
    /// Octets of the original message the new fields stand for.
    pub replaced: usize,
}

/// Where the header section of `start` ends (after the last field's CRLF,
/// before the empty line), if it does within `start`. `whole`: `start` is
/// the entire message, so a message without an empty line is all header.
pub fn header_end(start: &[u8], whole: bool) -> Option<usize> {
    if start.starts_with(b"\r\n") {
        return Some(0);
    }
    match start.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => Some(i + 2),
        None if whole => Some(start.len()),
        None => None,
    }
}

/// Plan the rewrite of a message that begins with `start` (`whole`: that
/// is all of it).
pub fn prepare(start: &[u8], whole: bool, new_addr: &str) -> Result<Rewrite, RewriteError> {
    let end = header_end(start, whole)
        .filter(|e| *e <= MAX_HEADER_SECTION)
        .ok_or(RewriteError::TooLong)?;
    Ok(Rewrite {
        header: rewrite_from(&start[..end], new_addr)?,
        replaced: end,
    })
}

/// Rewrite the From of a complete header section (CRLF lines, without the
/// empty line that ends it). The original address becomes the Reply-To
/// when it is a whole address (local part and domain).
pub fn rewrite_from(headers: &[u8], new_addr: &str) -> Result<Vec<u8>, RewriteError> {
    if !safe(new_addr) || new_addr.is_empty() || new_addr.contains(['<', '>', '"', ' ', '\t']) {
        return Err(RewriteError::UnsafeAddress(new_addr.to_string()));
    }
    let fields = split_fields(headers);
    let froms = fields
        .iter()
        .filter(|f| value_of(f, "from").is_some())
        .count();
    if froms > 1 {
        return Err(RewriteError::FromFields(froms));
    }
    let has_reply_to = fields.iter().any(|f| value_of(f, "reply-to").is_some());
    let mut out = Vec::with_capacity(headers.len() + 128);
    let mut done = false;
    for f in &fields {
        let Some(value) = value_of(f, "from") else {
            out.extend_from_slice(f);
            continue;
        };
        done = true;
        let unfolded = String::from_utf8_lossy(value).replace("\r\n", "");
        let author = author(&unfolded)?;
        match author.display.as_ref().and_then(display_name) {
            Some(d) => out.extend_from_slice(format!("From: {d} <{new_addr}>\r\n").as_bytes()),
            None => out.extend_from_slice(format!("From: <{new_addr}>\r\n").as_bytes()),
        }
        if let Some(o) = author.addr
            && !has_reply_to
            && !o.eq_ignore_ascii_case(new_addr)
            && safe(&o)
            && crate::smtp::Address::parse(&o).is_ok_and(|a| a.domain().is_some())
        {
            out.extend_from_slice(format!("Reply-To: <{o}>\r\n").as_bytes());
        }
    }
    if !done {
        out.extend_from_slice(format!("From: <{new_addr}>\r\n").as_bytes());
    }
    Ok(out)
}

/// The fields of a header section: each starts at a line that does not
/// begin with white space (RFC 5322 §2.2.3 folding).
fn split_fields(headers: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < headers.len() {
        let line_end = headers[i..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(headers.len(), |p| i + p + 2);
        if i > start && !matches!(headers.get(i), Some(b' ' | b'\t')) {
            fields.push(&headers[start..i]);
            start = i;
        }
        i = line_end;
    }
    if start < headers.len() {
        fields.push(&headers[start..]);
    }
    fields
}

/// The value of `field` if its name is `name` (any case, blanks allowed
/// before the colon as in RFC 5322 §4.5's obsolete syntax).
fn value_of<'f>(field: &'f [u8], name: &str) -> Option<&'f [u8]> {
    let head = field.get(..name.len())?;
    if !head.eq_ignore_ascii_case(name.as_bytes()) {
        return None;
    }
    let rest = &field[name.len()..];
    let blanks = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    match rest.get(blanks) {
        Some(b':') => Some(&rest[blanks + 1..]),
        _ => None,
    }
}

/// No CR, LF or NUL: the value stays on its own header line.
fn safe(s: &str) -> bool {
    !s.contains(['\r', '\n', '\0'])
}

// ---------------------------------------------------------------------------
// The From value: a mailbox-list (RFC 5322 §3.4, with §4.4's obsolete forms
// and RFC 6854's group), read liberally. Malformed text can only lose the
// display name or the Reply-To: the field written is always ours.

/// One lexical piece of a structured value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A run of anything but blanks, specials and the openers below.
    Text(String),
    /// `"…"`: its content with escapes removed; `closed`: the quote ended.
    Quoted { value: String, closed: bool },
    /// `(…)`, nested; its content.
    Comment { value: String, closed: bool },
    /// `<…>`; its content.
    Angle { value: String, closed: bool },
    /// `,` `:` `;`
    Special(char),
    /// Blanks.
    Space,
}

fn tokenize(v: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut it = v.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            ' ' | '\t' => {
                while it.next_if(|c| matches!(c, ' ' | '\t')).is_some() {}
                toks.push(Tok::Space);
            }
            ',' | ':' | ';' => toks.push(Tok::Special(c)),
            '"' => {
                let (value, closed) = quoted(&mut it);
                toks.push(Tok::Quoted { value, closed });
            }
            '(' => {
                let mut value = String::new();
                let mut depth = 1usize;
                let mut closed = false;
                while let Some(c) = it.next() {
                    match c {
                        '\\' => value.extend(it.next()),
                        '(' => {
                            depth += 1;
                            value.push(c);
                        }
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                closed = true;
                                break;
                            }
                            value.push(c);
                        }
                        _ => value.push(c),
                    }
                }
                toks.push(Tok::Comment { value, closed });
            }
            '<' => {
                let mut value = String::new();
                let mut closed = false;
                while let Some(c) = it.next() {
                    match c {
                        '>' => {
                            closed = true;
                            break;
                        }
                        '"' => {
                            // A quoted local part may hold '>'.
                            let (q, _) = quoted(&mut it);
                            value.push('"');
                            value.push_str(&q.replace('\\', "\\\\").replace('"', "\\\""));
                            value.push('"');
                        }
                        _ => value.push(c),
                    }
                }
                toks.push(Tok::Angle { value, closed });
            }
            _ => {
                let mut s = String::from(c);
                while let Some(c) =
                    it.next_if(|c| !matches!(c, ' ' | '\t' | ',' | ':' | ';' | '"' | '(' | '<'))
                {
                    s.push(c);
                }
                toks.push(Tok::Text(s));
            }
        }
    }
    toks
}

/// The rest of a quoted-string after its opening quote: (content, closed).
fn quoted(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> (String, bool) {
    let mut value = String::new();
    while let Some(c) = it.next() {
        match c {
            '\\' => value.extend(it.next()),
            '"' => return (value, true),
            _ => value.push(c),
        }
    }
    (value, false)
}

/// What the From field says about its author.
#[derive(Debug, Default)]
struct Author {
    /// Display name: the phrase before `<…>`, the comment after a bare
    /// address, or a group's name.
    display: Option<Display>,
    /// The address, as written.
    addr: Option<String>,
}

#[derive(Debug)]
enum Display {
    /// A phrase, kept verbatim when well-formed.
    Phrase(Vec<Tok>),
    /// `addr (Name)`: always re-encoded.
    Comment(String),
}

/// The single author of a From value, or why there is not one.
fn author(value: &str) -> Result<Author, RewriteError> {
    let toks = tokenize(value);
    // RFC 6854: `From: Name: a@b;` names a group.
    let (group, members) = match toks.iter().position(|t| *t == Tok::Special(':')) {
        Some(i) => {
            let end = toks[i + 1..]
                .iter()
                .position(|t| *t == Tok::Special(';'))
                .map_or(toks.len(), |j| i + 1 + j);
            (Some(&toks[..i]), &toks[i + 1..end])
        }
        None => (None, &toks[..]),
    };
    // Empty list elements (`a@b,,`) are obsolete syntax, not mailboxes.
    let elems: Vec<&[Tok]> = members
        .split(|t| *t == Tok::Special(','))
        .filter(|e| {
            e.iter()
                .any(|t| !matches!(t, Tok::Space | Tok::Comment { .. }))
        })
        .collect();
    let with_addr: Vec<usize> = (0..elems.len()).filter(|i| has_addr(elems[*i])).collect();
    let mut a = match (with_addr.as_slice(), elems.as_slice()) {
        ([], []) => Author::default(),
        // `From: root`: a bare local part.
        ([], [one]) => mailbox(one),
        ([], more) => return Err(RewriteError::Mailboxes(more.len())),
        ([i], _) if elems[*i].iter().any(|t| matches!(t, Tok::Angle { .. })) => {
            // Pieces before it without an address are its display name
            // cut at an unquoted comma (`Smith, John <j@x>`), which
            // devices write; after it, they are dropped.
            let mut toks: Vec<Tok> = Vec::new();
            for e in &elems[..*i] {
                toks.extend_from_slice(e);
                toks.push(Tok::Special(','));
            }
            toks.extend_from_slice(elems[*i]);
            mailbox(&toks)
        }
        ([i], _) => mailbox(elems[*i]),
        (more, _) => return Err(RewriteError::Mailboxes(more.len())),
    };
    if let Some(g) = group.filter(|g| a.display.is_none() && !trim(g).is_empty()) {
        a.display = Some(Display::Phrase(trim(g).to_vec()));
    }
    Ok(a)
}

/// Does this list element hold an address (`<…>`, or text with an `@`)?
fn has_addr(toks: &[Tok]) -> bool {
    toks.iter().any(|t| match t {
        Tok::Angle { .. } => true,
        Tok::Text(s) => s.contains('@'),
        _ => false,
    })
}

fn trim(toks: &[Tok]) -> &[Tok] {
    let start = toks
        .iter()
        .position(|t| *t != Tok::Space)
        .unwrap_or(toks.len());
    let end = toks
        .iter()
        .rposition(|t| *t != Tok::Space)
        .map_or(start, |e| e + 1);
    &toks[start..end]
}

fn mailbox(toks: &[Tok]) -> Author {
    if let Some(i) = toks.iter().position(|t| matches!(t, Tok::Angle { .. })) {
        let Tok::Angle { value, closed } = &toks[i] else {
            return Author::default();
        };
        // obs-route: `<@relay1,@relay2:user@host>`.
        let addr = match value.trim().strip_prefix('@') {
            Some(r) => r.rsplit_once(':').map_or("", |(_, a)| a),
            None => value.trim(),
        };
        let phrase = trim(&toks[..i]);
        return Author {
            display: (!phrase.is_empty()).then(|| Display::Phrase(phrase.to_vec())),
            addr: (*closed && !addr.is_empty()).then(|| addr.to_string()),
        };
    }
    // A quote that never closes swallowed the rest: a broken display name
    // (`"Name <a@b>`), no address to trust.
    if toks
        .iter()
        .any(|t| matches!(t, Tok::Quoted { closed: false, .. }))
    {
        return Author {
            display: Some(Display::Phrase(trim(toks).to_vec())),
            addr: None,
        };
    }
    // addr-spec, maybe with `(Name)`; blanks and comments are CFWS.
    let mut addr = String::new();
    let mut display = None;
    for t in toks {
        match t {
            Tok::Text(s) => addr.push_str(s),
            Tok::Quoted { value, .. } => {
                addr.push('"');
                addr.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
                addr.push('"');
            }
            Tok::Comment { value, .. } if display.is_none() => {
                display = Some(Display::Comment(value.clone()));
            }
            _ => {}
        }
    }
    Author {
        display,
        addr: (!addr.is_empty()).then_some(addr),
    }
}

/// The display name as it will be written, or `None` for none.
fn display_name(d: &Display) -> Option<String> {
    match d {
        Display::Phrase(toks) => {
            if let Some(v) = verbatim(toks) {
                return Some(v);
            }
            let mut text = String::new();
            for t in toks {
                match t {
                    Tok::Text(s) => text.push_str(s),
                    Tok::Quoted { value, .. } => text.push_str(value),
                    Tok::Angle { value, .. } => text.push_str(value),
                    Tok::Special(c) => text.push(*c),
                    Tok::Space => text.push(' '),
                    Tok::Comment { .. } => {}
                }
            }
            encode(&text)
        }
        Display::Comment(c) => encode(c),
    }
}

/// A well-formed, short, ASCII phrase, as written (blanks normalised).
fn verbatim(toks: &[Tok]) -> Option<String> {
    let mut out = String::new();
    for t in toks {
        match t {
            Tok::Text(s) if s.chars().all(|c| is_atext(c) || c == '.') => out.push_str(s),
            // As encode() would write it: printable ASCII, blanks single.
            Tok::Quoted {
                value,
                closed: true,
            } if value.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
                && !value.starts_with(' ')
                && !value.ends_with(' ')
                && !value.contains("  ") =>
            {
                out.push('"');
                out.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
                out.push('"');
            }
            Tok::Space => out.push(' '),
            _ => return None,
        }
    }
    (!out.is_empty() && out.chars().count() <= MAX_DISPLAY_NAME).then_some(out)
}

/// RFC 5322 §3.2.3 atext.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// `name` as a quoted-string (ASCII) or RFC 2047 encoded-words (UTF-8,
/// base64, one per folded line), with control characters blanked, blanks
/// collapsed and at most [`MAX_DISPLAY_NAME`] characters; `None` if
/// nothing is left.
pub fn encode(name: &str) -> Option<String> {
    let mut clean = String::new();
    for c in name.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if c == ' ' && (clean.is_empty() || clean.ends_with(' ')) {
            continue;
        }
        clean.push(c);
    }
    let clean: String = clean.trim_end().chars().take(MAX_DISPLAY_NAME).collect();
    let clean = clean.trim_end();
    if clean.is_empty() {
        return None;
    }
    if clean.is_ascii() {
        let escaped = clean.replace('\\', "\\\\").replace('"', "\\\"");
        return Some(format!("\"{escaped}\""));
    }
    Some(crate::smtp::header::encoded_words(clean))
}

/// A body source that sends a prepared header section in place of the
/// queued one, then the rest of the message as it is.
pub struct RewritingBody<'a> {
    inner: &'a mut (dyn BodySource + Send),
    header: Option<Vec<u8>>,
    /// Octets of the inner source still to drop (the original fields).
    skip: usize,
}

impl std::fmt::Debug for RewritingBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RewritingBody(skip {})", self.skip)
    }
}

impl<'a> RewritingBody<'a> {
    /// Wrap `inner`, whose first `rewrite.replaced` octets become
    /// `rewrite.header`.
    pub fn new(inner: &'a mut (dyn BodySource + Send), rewrite: Rewrite) -> RewritingBody<'a> {
        RewritingBody {
            inner,
            header: Some(rewrite.header),
            skip: rewrite.replaced,
        }
    }
}

impl BodySource for RewritingBody<'_> {
    fn next_chunk<'b>(
        &'b mut self,
        buf: &'b mut Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + 'b>> {
        Box::pin(async move {
            if let Some(h) = self.header.take() {
                buf.clear();
                buf.extend_from_slice(&h);
                if !buf.is_empty() {
                    return Ok(());
                }
            }
            loop {
                self.inner.next_chunk(buf).await?;
                if self.skip == 0 || buf.is_empty() {
                    return Ok(());
                }
                let n = self.skip.min(buf.len());
                buf.drain(..n);
                self.skip -= n;
                if !buf.is_empty() {
                    return Ok(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
