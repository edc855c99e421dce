//! Reading a message as it streams past, for the rules: the top-level
//! header fields they look at (Subject, named fields), and each MIME
//! part's type and file name. Every bound is fixed: a field is kept up to
//! [`FIELD_CAP`] octets, at most [`MAX_ATTACHMENTS`] parts are recorded,
//! multiparts nest at most [`MAX_DEPTH`] deep, and of the body only the
//! start of each line is looked at (for boundaries) and the first
//! [`EXCERPT_LEN`] octets kept (the storm digest's excerpt). The body itself
//! is never held.
//!
//! Input is the message as spooled: CRLF line ends, dot-unstuffed.

use base64::Engine as _;

/// Most octets of one header field kept (unfolded); the rest is ignored.
pub const FIELD_CAP: usize = 2048;
/// Most attachments recorded per message; further parts are not looked at.
pub const MAX_ATTACHMENTS: usize = 64;
/// Deepest multipart nesting followed.
pub const MAX_DEPTH: usize = 8;
/// Octets of the body kept for the storm digest's excerpt.
pub const EXCERPT_LEN: usize = 400;
/// Octets of the top-level fields kept for the storm digest (From, To,
/// Subject, Date, Message-ID as written).
pub const DIGEST_FIELDS_CAP: usize = 2048;
/// Most values kept of the fields rules name.
const MAX_FIELDS: usize = 32;
/// The longest boundary (RFC 2046 §5.1.1: 70) with its `--` and some slack.
const LINE_START: usize = 80;
/// Fields kept for the storm digest.
const DIGEST_FIELDS: &[&str] = &["from", "to", "subject", "date", "message-id"];

/// One attached part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `type/subtype`, lowercased (`text/plain` when the part says none).
    pub content_type: String,
    /// The file name (Content-Disposition `filename`, else Content-Type
    /// `name`), decoded.
    pub filename: Option<String>,
}

impl Attachment {
    /// The file name's extension, lowercased, without the dot.
    pub fn extension(&self) -> Option<String> {
        let name = self.filename.as_deref()?;
        let name = name.trim_end_matches(['.', ' ']);
        let (_, ext) = name.rsplit_once('.')?;
        (!ext.is_empty()).then(|| ext.to_lowercase())
    }
}

/// What the scanner found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// The Subject, unfolded and decoded (RFC 2047).
    pub subject: Option<String>,
    /// Values of the fields rules look at: (lowercased name, value).
    pub(crate) fields: Vec<(String, String)>,
    /// Attached parts, in order.
    pub attachments: Vec<Attachment>,
    /// The top-level header section is complete.
    pub header_done: bool,
    /// From, To, Subject, Date, Message-ID as written, CRLF-ended.
    pub digest_fields: String,
    /// The first octets of the body.
    pub excerpt: Vec<u8>,
}

impl Scan {
    /// Values of the field `name` (any case), in order.
    pub fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    /// The message's own header section.
    TopHeader,
    /// A MIME part's header section.
    PartHeader,
    /// Body text (of the message or a part).
    Body,
}

/// The streaming reader; see the module documentation.
#[derive(Debug)]
pub struct Scanner {
    wanted: Vec<String>,
    scan: Scan,
    at: Where,
    /// The current line so far: whole in header sections (capped), only
    /// its start in bodies.
    line: Vec<u8>,
    /// The field being read (unfolded), capped at FIELD_CAP.
    field: Vec<u8>,
    /// The current field as written, for the digest (capped).
    raw_field: Vec<u8>,
    /// Content-Type and Content-Disposition of the header being read.
    ctype: Option<String>,
    cdisp: Option<String>,
    /// Open multipart boundaries, outermost first.
    boundaries: Vec<Vec<u8>>,
    /// Octets of the body seen (for the excerpt).
    body_seen: usize,
}

impl Scanner {
    /// A scanner that also keeps the values of the fields named in
    /// `wanted` (lowercased).
    pub fn new(wanted: Vec<String>) -> Scanner {
        Scanner {
            wanted,
            scan: Scan::default(),
            at: Where::TopHeader,
            line: Vec::with_capacity(128),
            field: Vec::new(),
            raw_field: Vec::new(),
            ctype: None,
            cdisp: None,
            boundaries: Vec::new(),
            body_seen: 0,
        }
    }

    /// What was found so far.
    pub fn scan(&self) -> &Scan {
        &self.scan
    }

    /// Take the result.
    pub fn into_scan(self) -> Scan {
        self.scan
    }

    /// Read more of the message. Returns, the first time, the offset in
    /// `data` just past the end of the top-level header section (its empty
    /// line).
    pub fn feed(&mut self, data: &[u8]) -> Option<usize> {
        let mut ended = None;
        let mut rest = data;
        let mut offset = 0;
        while !rest.is_empty() {
            if self.at == Where::Body && self.boundaries.is_empty() {
                // Nothing more to find: only the excerpt is wanted.
                self.excerpt(rest);
                return ended;
            }
            let (line_part, tail, complete) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..=i], &rest[i + 1..], true),
                None => (rest, &[][..], false),
            };
            if self.at == Where::Body {
                self.excerpt(line_part);
                let room = LINE_START.saturating_sub(self.line.len());
                self.line
                    .extend_from_slice(&line_part[..line_part.len().min(room)]);
            } else {
                let room = FIELD_CAP.saturating_sub(self.line.len());
                self.line
                    .extend_from_slice(&line_part[..line_part.len().min(room)]);
            }
            offset += line_part.len();
            rest = tail;
            if complete {
                let was_top = self.at == Where::TopHeader;
                let line = std::mem::take(&mut self.line);
                self.line_done(&line);
                self.line = line;
                self.line.clear();
                if was_top && self.at != Where::TopHeader && ended.is_none() {
                    ended = Some(offset);
                }
            }
        }
        ended
    }

    /// The end of the message: a field still open is taken as complete.
    pub fn finish(&mut self) {
        if !self.line.is_empty() && self.at != Where::Body {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
        }
        if self.at != Where::Body {
            self.end_field();
            if self.at == Where::TopHeader {
                self.scan.header_done = true;
            }
        }
    }

    fn excerpt(&mut self, data: &[u8]) {
        if self.body_seen < EXCERPT_LEN {
            let take = data.len().min(EXCERPT_LEN - self.body_seen);
            if self.boundaries.len() <= 1 || self.scan.excerpt.len() < EXCERPT_LEN {
                self.scan.excerpt.extend_from_slice(&data[..take]);
            }
            self.body_seen += take;
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        match self.at {
            Where::TopHeader | Where::PartHeader => {
                if text.is_empty() {
                    self.end_field();
                    self.end_header();
                } else if text[0] == b' ' || text[0] == b'\t' {
                    self.add_to_field(text, line);
                } else {
                    self.end_field();
                    self.add_to_field(text, line);
                }
            }
            Where::Body => self.body_line(text),
        }
    }

    fn add_to_field(&mut self, text: &[u8], raw: &[u8]) {
        let room = FIELD_CAP.saturating_sub(self.field.len());
        self.field.extend_from_slice(&text[..text.len().min(room)]);
        if self.at == Where::TopHeader {
            let room = DIGEST_FIELDS_CAP.saturating_sub(self.raw_field.len());
            self.raw_field
                .extend_from_slice(&raw[..raw.len().min(room)]);
        }
    }

    fn end_field(&mut self) {
        if self.field.is_empty() {
            return;
        }
        let field = std::mem::take(&mut self.field);
        let raw = std::mem::take(&mut self.raw_field);
        let text = String::from_utf8_lossy(&field);
        let Some((name, value)) = text.split_once(':') else {
            return;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        match name.as_str() {
            "content-type" => self.ctype = Some(value.to_string()),
            "content-disposition" => self.cdisp = Some(value.to_string()),
            _ => {}
        }
        if self.at != Where::TopHeader {
            return;
        }
        if name == "subject" && self.scan.subject.is_none() {
            self.scan.subject = Some(decode_words(value));
        }
        if self.wanted.contains(&name) && self.scan.fields.len() < MAX_FIELDS {
            self.scan.fields.push((name.clone(), decode_words(value)));
        }
        if DIGEST_FIELDS.contains(&name.as_str()) {
            let raw = String::from_utf8_lossy(&raw);
            if self.scan.digest_fields.len() + raw.len() <= DIGEST_FIELDS_CAP {
                self.scan.digest_fields.push_str(&raw);
            }
        }
    }

    /// The empty line after a header section: what the part (or the
    /// message) is decides what follows.
    fn end_header(&mut self) {
        let top = self.at == Where::TopHeader;
        if top {
            self.scan.header_done = true;
        }
        self.at = Where::Body;
        let ctype = self.ctype.take();
        let cdisp = self.cdisp.take();
        let (mime_type, params) = match &ctype {
            Some(ct) => split_params(ct),
            None => ("text/plain".to_string(), Vec::new()),
        };
        if mime_type.starts_with("multipart/")
            && let Some(b) = param(&params, "boundary")
            && !b.is_empty()
            && self.boundaries.len() < MAX_DEPTH
        {
            let mut marker = b"--".to_vec();
            marker.extend_from_slice(b.as_bytes());
            self.boundaries.push(marker);
            return;
        }
        let (disposition, dparams) = match &cdisp {
            Some(d) => split_params(d),
            None => (String::new(), Vec::new()),
        };
        let filename = param(&dparams, "filename").or_else(|| param(&params, "name"));
        let attached =
            filename.is_some() || disposition == "attachment" || !mime_type.starts_with("text/");
        if attached && self.scan.attachments.len() < MAX_ATTACHMENTS {
            self.scan.attachments.push(Attachment {
                content_type: mime_type,
                filename,
            });
        }
    }

    fn body_line(&mut self, text: &[u8]) {
        if !text.starts_with(b"--") {
            return;
        }
        // Innermost first: a part's boundary ends only its own parts.
        let found = self.boundaries.iter().rposition(|b| text.starts_with(b));
        let Some(level) = found else {
            return;
        };
        let after = &text[self.boundaries[level].len()..];
        if after.starts_with(b"--") {
            // The closing delimiter: this multipart is over.
            self.boundaries.truncate(level);
            return;
        }
        if after.iter().all(|b| *b == b' ' || *b == b'\t') {
            self.boundaries.truncate(level + 1);
            self.at = Where::PartHeader;
        }
    }
}

/// `type/subtype; a=b; c="d"` → (lowercased type, [(lowercased name, value)]).
fn split_params(s: &str) -> (String, Vec<(String, String)>) {
    let mut parts = split_unquoted(s);
    let mime_type = parts
        .first()
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !parts.is_empty() {
        parts.remove(0);
    }
    let mut params = Vec::new();
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            params.push((k.trim().to_ascii_lowercase(), unquote(v.trim())));
        }
    }
    (mime_type, params)
}

/// Split at `;` outside quotes.
fn split_unquoted(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// A parameter by name, with RFC 2231 extended values and continuations
/// (`name*=utf-8''a%20b`, `name*0=…; name*1=…`) joined and decoded, and
/// RFC 2047 encoded words (as many mailers write file names) decoded.
fn param(params: &[(String, String)], name: &str) -> Option<String> {
    if let Some((_, v)) = params.iter().find(|(k, _)| k == name) {
        return Some(decode_words(v));
    }
    if let Some((_, v)) = params
        .iter()
        .find(|(k, _)| k.strip_suffix('*') == Some(name))
    {
        return Some(decode_2231(v, true));
    }
    // Continuations: name*0, name*1* … in order of their index.
    let mut pieces: Vec<(u32, bool, &str)> = params
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(name)?.strip_prefix('*')?;
            let (idx, ext) = match rest.strip_suffix('*') {
                Some(i) => (i, true),
                None => (rest, false),
            };
            Some((idx.parse::<u32>().ok()?, ext, v.as_str()))
        })
        .collect();
    if pieces.is_empty() {
        return None;
    }
    pieces.sort_by_key(|p| p.0);
    let mut out = String::new();
    for (i, (_, ext, v)) in pieces.iter().enumerate() {
        if *ext {
            out.push_str(&decode_2231(v, i == 0));
        } else {
            out.push_str(v);
        }
    }
    Some(out)
}

/// An RFC 2231 value: `charset'lang'%XX…` (the prefix only on the first
/// piece); percent-escapes decoded, read as UTF-8 (Latin-1 when it says so).
fn decode_2231(v: &str, first: bool) -> String {
    let (charset, body) = if first {
        let mut it = v.splitn(3, '\'');
        match (it.next(), it.next(), it.next()) {
            (Some(cs), Some(_lang), Some(rest)) => (cs.to_ascii_lowercase(), rest),
            _ => (String::new(), v),
        }
    } else {
        (String::new(), v)
    };
    let bytes = percent_decode(body);
    to_text(&charset, &bytes)
}

fn percent_decode(s: &str) -> Vec<u8> {
    unescape_hex(s.as_bytes(), b'%')
}

/// `bytes` with every `escape` followed by two hex digits replaced by the
/// octet they spell; an escape without them stays as written. RFC 2231's
/// `%XX` and RFC 2047's Q `=XX` are the same rule with another mark.
fn unescape_hex(b: &[u8], escape: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == escape
            && i + 2 < b.len()
            && let Some(x) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn to_text(charset: &str, bytes: &[u8]) -> String {
    match charset {
        "iso-8859-1" | "latin1" | "latin-1" | "windows-1252" => {
            bytes.iter().map(|b| char::from(*b)).collect()
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Decode RFC 2047 encoded words (`=?utf-8?B?…?=`, `=?…?Q?…?=`) in a field
/// value; blanks between two encoded words go. Text that is not an
/// encoded word passes as it is.
pub fn decode_words(s: &str) -> String {
    if !s.contains("=?") {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, from) = rest.split_at(start);
        match encoded_word(from) {
            Some((text, used)) => {
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&text);
                rest = &from[used..];
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &from[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `s`: its text and the octets it took.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, rest) = inner.split_once('?')?;
    let (enc, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let data = &rest[..end];
    if charset.is_empty() || data.contains(' ') {
        return None;
    }
    let used = 2 + charset.len() + 1 + enc.len() + 1 + end + 2;
    // RFC 2231 §5: a language may follow the charset after a '*'.
    let charset = charset.split('*').next().unwrap_or("").to_ascii_lowercase();
    let bytes = match enc {
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(data)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(data))
            .ok()?,
        "Q" | "q" => unescape_hex(data.replace('_', " ").as_bytes(), b'='),
        _ => return None,
    };
    Some((to_text(&charset, &bytes), used.min(s.len())))
}
