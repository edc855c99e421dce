//! Making a message fit SMTP's line limit: RFC 5321 §4.5.3.1.6 allows 998
//! octets of text per line, and local programs (a script's one-line JSON,
//! a report with long rows) write longer ones. Rather than refusing what
//! `postern sendmail` is given, its body is re-encoded as MIME requires:
//! quoted-printable for text, re-wrapped base64 lines, soft breaks in
//! quoted-printable lines, folded header lines. Multipart messages are
//! walked part by part; only parts that may hold raw text are encoded.
//!
//! Line-based and streaming: one line in, some lines out; the caller keeps
//! the message on disk. Lines are given and returned without line ends.
//! The SMTP listener does not use this: network clients that send long
//! lines are refused, as RFC 5321 says.

/// Longest line of text SMTP carries, without its CRLF (RFC 5321
/// §4.5.3.1.6).
pub const MAX_LINE: usize = 998;
/// Longest encoded line written, without its line end (RFC 2045 §6.7/§6.8).
const ENCODED_LINE: usize = 76;

/// How a body (or a body part) is re-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Text that may be raw: quoted-printable.
    Quote,
    /// Already base64: lines re-wrapped.
    Base64,
    /// Already quoted-printable: long lines get soft breaks.
    SoftBreak,
    /// A multipart preamble or epilogue, which readers ignore: long lines
    /// are cut.
    Ignored,
}

/// Header facts that decide a body's encoding.
#[derive(Debug, Default)]
struct Kind {
    multipart_boundary: Option<String>,
    encoding: Option<String>,
    has_type: bool,
    has_mime_version: bool,
}

fn field_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (n, v) = line.split_once(':')?;
    n.trim().eq_ignore_ascii_case(name).then_some(v)
}

/// Whole header fields (continuation lines joined) of a header block.
fn unfold(headers: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in headers {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push_str(line);
            }
        } else {
            out.push(line.clone());
        }
    }
    out
}

fn kind_of(headers: &[String]) -> Kind {
    let mut k = Kind::default();
    for field in unfold(headers) {
        if let Some(v) = field_value(&field, "content-type") {
            k.has_type = true;
            let lower = v.trim().to_ascii_lowercase();
            if lower.starts_with("multipart/") {
                k.multipart_boundary = boundary_param(v);
            }
        } else if let Some(v) = field_value(&field, "content-transfer-encoding") {
            k.encoding = Some(v.trim().to_ascii_lowercase());
        } else if field_value(&field, "mime-version").is_some() {
            k.has_mime_version = true;
        }
    }
    k
}

/// The `boundary=` parameter of a Content-Type value (quoted or not).
fn boundary_param(v: &str) -> Option<String> {
    let lower = v.to_ascii_lowercase();
    let at = lower.find("boundary=")? + "boundary=".len();
    let rest = &v[at..];
    let b = if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next()?
    } else {
        rest.split([';', ' ', '\t']).next()?
    };
    (!b.is_empty()).then(|| b.to_string())
}

/// Fold a header line longer than [`MAX_LINE`] at white space; a line with
/// no white space to fold at is returned as it is (the listener then
/// refuses it, and the caller says so).
pub fn fold_header(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while rest.len() > MAX_LINE {
        // Fold before the last blank that keeps this piece short enough
        // (never at the very start: a piece must hold text).
        let window = &rest.as_bytes()[..=MAX_LINE];
        match window
            .iter()
            .rposition(|&b| b == b' ' || b == b'\t')
            .filter(|&i| i > 0)
        {
            Some(i) => {
                out.push(rest[..i].to_string());
                rest = &rest[i..];
            }
            None => break,
        }
    }
    out.push(rest.to_string());
    out
}

/// The header block of a body that gets quoted-printable: its encoding
/// field replaced, MIME-Version and a Content-Type added when missing
/// (`utf8`: the text is valid UTF-8, else its charset is unknown, RFC 1428).
fn quoted_headers(headers: &[String], kind: &Kind, top: bool, utf8: bool) -> Vec<String> {
    let mut out = Vec::with_capacity(headers.len() + 3);
    let mut skipping = false;
    for line in headers {
        if line.starts_with([' ', '\t']) {
            if !skipping {
                out.push(line.clone());
            }
            continue;
        }
        skipping = field_value(line, "content-transfer-encoding").is_some();
        if !skipping {
            out.push(line.clone());
        }
    }
    if top && !kind.has_mime_version {
        out.push("MIME-Version: 1.0".into());
    }
    if !kind.has_type {
        let charset = if utf8 { "utf-8" } else { "unknown-8bit" };
        out.push(format!("Content-Type: text/plain; charset={charset}"));
    }
    out.push("Content-Transfer-Encoding: quoted-printable".into());
    out
}

fn mode_for(kind: &Kind) -> Mode {
    match kind.encoding.as_deref() {
        Some("base64") => Mode::Base64,
        Some("quoted-printable") => Mode::SoftBreak,
        _ => Mode::Quote,
    }
}

/// Quoted-printable encoding of one line of text (RFC 2045 §6.7), as lines
/// of at most 76 characters with soft breaks.
fn quote_line(line: &[u8], emit: &mut dyn FnMut(&[u8])) {
    let mut cur: Vec<u8> = Vec::with_capacity(ENCODED_LINE + 1);
    for (i, &b) in line.iter().enumerate() {
        let last = i + 1 == line.len();
        let literal = (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
        let mut token = [0u8; 3];
        let token: &[u8] = if literal {
            token[0] = b;
            &token[..1]
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            token[0] = b'=';
            token[1] = HEX[usize::from(b >> 4)];
            token[2] = HEX[usize::from(b & 15)];
            &token[..]
        };
        // Room for the soft break's '=' unless this is the line's end.
        let limit = if last { ENCODED_LINE } else { ENCODED_LINE - 1 };
        if cur.len() + token.len() > limit {
            cur.push(b'=');
            emit(&cur);
            cur.clear();
        }
        cur.extend_from_slice(token);
    }
    emit(&cur);
}

/// Soft breaks in a quoted-printable line that is too long, never inside
/// an `=XX` escape.
fn soft_break(line: &[u8], emit: &mut dyn FnMut(&[u8])) {
    if line.len() <= MAX_LINE {
        emit(line);
        return;
    }
    let mut start = 0;
    while line.len() - start > ENCODED_LINE {
        let mut end = start + ENCODED_LINE - 1;
        // Do not split "=XX": step back to before an '=' in the last two.
        for back in 1..=2 {
            if line[end - back] == b'=' {
                end -= back;
                break;
            }
        }
        let mut piece = line[start..end].to_vec();
        piece.push(b'=');
        emit(&piece);
        start = end;
    }
    emit(&line[start..]);
}

/// Re-encodes a message line by line so that no line exceeds
/// [`MAX_LINE`]. Feed the body with [`LongLines::body_line`] after taking
/// the top-level headers from [`LongLines::new`].
#[derive(Debug)]
pub struct LongLines {
    /// The boundaries of the multiparts we are inside, innermost last.
    boundaries: Vec<String>,
    mode: Mode,
    /// Part headers being collected (after a boundary line).
    part_headers: Option<Vec<String>>,
    /// base64 text carried over to fill the next 76-character line.
    b64: Vec<u8>,
    utf8: bool,
}

impl LongLines {
    /// Start with the message's header block; returns the encoder and the
    /// header lines to write (followed by the blank line, written by the
    /// caller). `utf8`: the body is valid UTF-8.
    pub fn new(headers: &[String], utf8: bool) -> (LongLines, Vec<String>) {
        let kind = kind_of(headers);
        let mut enc = LongLines {
            boundaries: Vec::new(),
            mode: Mode::Ignored,
            part_headers: None,
            b64: Vec::new(),
            utf8,
        };
        let out = match kind.multipart_boundary {
            Some(b) => {
                enc.boundaries.push(b);
                headers.to_vec()
            }
            None => {
                enc.mode = mode_for(&kind);
                if enc.mode == Mode::Quote {
                    quoted_headers(headers, &kind, true, utf8)
                } else {
                    headers.to_vec()
                }
            }
        };
        let folded = out.iter().flat_map(|l| fold_header(l)).collect();
        (enc, folded)
    }

    /// Is `line` a delimiter of one of the open multiparts? Returns its
    /// depth and whether it is the closing one.
    fn delimiter(&self, line: &[u8]) -> Option<(usize, bool)> {
        let rest = line.strip_prefix(b"--")?;
        let rest = rest.trim_ascii_end();
        self.boundaries.iter().enumerate().rev().find_map(|(i, b)| {
            let tail = rest.strip_prefix(b.as_bytes())?;
            match tail {
                b"" => Some((i, false)),
                b"--" => Some((i, true)),
                _ => None,
            }
        })
    }

    fn flush_b64(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.b64.is_empty() {
            emit(&self.b64);
            self.b64.clear();
        }
    }

    /// One body line in; the encoded lines out through `emit`.
    pub fn body_line(&mut self, line: &[u8], emit: &mut dyn FnMut(&[u8])) {
        if let Some((depth, closing)) = self.delimiter(line) {
            self.flush_b64(emit);
            self.boundaries.truncate(depth + 1);
            if closing {
                self.boundaries.pop();
                self.mode = Mode::Ignored;
                self.part_headers = None;
            } else {
                self.part_headers = Some(Vec::new());
            }
            emit(line);
            return;
        }
        if let Some(headers) = self.part_headers.as_mut() {
            if !line.is_empty() {
                headers.push(String::from_utf8_lossy(line).into_owned());
                return;
            }
            let headers = self.part_headers.take().unwrap_or_default();
            let kind = kind_of(&headers);
            let out = match kind.multipart_boundary.clone() {
                Some(b) => {
                    self.boundaries.push(b);
                    self.mode = Mode::Ignored;
                    headers
                }
                None => {
                    self.mode = mode_for(&kind);
                    if self.mode == Mode::Quote {
                        quoted_headers(&headers, &kind, false, self.utf8)
                    } else {
                        headers
                    }
                }
            };
            for h in out.iter().flat_map(|l| fold_header(l)) {
                emit(h.as_bytes());
            }
            emit(b"");
            return;
        }
        match self.mode {
            Mode::Quote => quote_line(line, emit),
            Mode::SoftBreak => soft_break(line, emit),
            Mode::Ignored => {
                for piece in line.chunks(MAX_LINE) {
                    emit(piece);
                }
                if line.is_empty() {
                    emit(line);
                }
            }
            Mode::Base64 => {
                for &b in line {
                    if b.is_ascii_whitespace() {
                        continue;
                    }
                    self.b64.push(b);
                    if self.b64.len() == ENCODED_LINE {
                        self.flush_b64(emit);
                    }
                }
            }
        }
    }

    /// The body ended: write what is carried over.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        self.flush_b64(emit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(headers: &[&str], body: &[&[u8]]) -> (Vec<String>, Vec<Vec<u8>>) {
        let headers: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        let (mut enc, h) = LongLines::new(&headers, true);
        let mut out = Vec::new();
        for l in body {
            enc.body_line(l, &mut |x| out.push(x.to_vec()));
        }
        enc.finish(&mut |x| out.push(x.to_vec()));
        (h, out)
    }

    /// Quoted-printable decoding, to check the round trip.
    fn unquote(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            let (text, soft) = match l.strip_suffix(b"=") {
                Some(t) => (t, true),
                None => (&l[..], false),
            };
            let mut i = 0;
            while i < text.len() {
                if text[i] == b'=' {
                    let hex = std::str::from_utf8(&text[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(text[i]);
                    i += 1;
                }
            }
            if !soft {
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    #[test]
    fn a_long_plain_line_becomes_quoted_printable_and_decodes_back() {
        let long: Vec<u8> = (0..3000u32)
            .map(|i| b"ab= \t\xc3\xa9xyz"[(i % 10) as usize])
            .collect();
        let (h, out) = run(&["Subject: report"], &[b"short", &long, b"end "]);
        assert!(h.contains(&"MIME-Version: 1.0".to_string()), "{h:?}");
        assert!(h.contains(&"Content-Type: text/plain; charset=utf-8".to_string()));
        assert!(h.contains(&"Content-Transfer-Encoding: quoted-printable".to_string()));
        assert!(out.iter().all(|l| l.len() <= ENCODED_LINE), "{out:?}");
        let mut want = b"short\r\n".to_vec();
        want.extend_from_slice(&long);
        want.extend_from_slice(b"\r\nend \r\n");
        assert_eq!(unquote(&out), want);
    }

    #[test]
    fn an_existing_encoding_field_is_replaced_not_doubled() {
        let (h, _) = run(
            &[
                "MIME-Version: 1.0",
                "Content-Type: text/html; charset=iso-8859-1",
                "Content-Transfer-Encoding: 8bit",
            ],
            &[&[b'x'; 1200]],
        );
        assert_eq!(
            h,
            vec![
                "MIME-Version: 1.0",
                "Content-Type: text/html; charset=iso-8859-1",
                "Content-Transfer-Encoding: quoted-printable"
            ]
        );
    }

    #[test]
    fn multipart_parts_are_encoded_each_by_its_kind() {
        let long_text = vec![b'T'; 2000];
        let long_b64 = vec![b'Q'; 300];
        let long_qp = [b"=C3=A9".repeat(300), b"end".to_vec()].concat();
        let (h, out) = run(
            &["Content-Type: multipart/mixed; boundary=\"xx\""],
            &[
                b"preamble",
                b"--xx",
                b"Content-Type: text/plain",
                b"",
                &long_text,
                b"--xx",
                b"Content-Type: application/pdf",
                b"Content-Transfer-Encoding: base64",
                b"",
                &long_b64,
                b"--xx",
                b"Content-Transfer-Encoding: quoted-printable",
                b"",
                &long_qp,
                b"--xx--",
                b"epilogue",
            ],
        );
        assert_eq!(h, vec!["Content-Type: multipart/mixed; boundary=\"xx\""]);
        assert!(out.iter().all(|l| l.len() <= MAX_LINE));
        let text: Vec<String> = out
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let at = |s: &str| text.iter().position(|l| l == s).unwrap();
        // The text part got an encoding field; the others kept theirs.
        assert_eq!(text[at("--xx") + 1], "Content-Type: text/plain");
        assert_eq!(
            text[at("--xx") + 2],
            "Content-Transfer-Encoding: quoted-printable"
        );
        assert_eq!(text.iter().filter(|l| *l == "--xx").count(), 3);
        assert_eq!(text.last().unwrap(), "epilogue");
        // base64 rewrapped at 76 without losing a character.
        let b64: String = text
            .iter()
            .filter(|l| l.chars().all(|c| c == 'Q'))
            .cloned()
            .collect();
        assert_eq!(b64.len(), 300);
        // quoted-printable got soft breaks, never inside an escape.
        let qp: Vec<&String> = text.iter().filter(|l| l.starts_with("=C3")).collect();
        assert!(qp.len() > 1);
        for l in &qp {
            let body = l.strip_suffix('=').unwrap_or(l);
            assert_eq!(body.len() % 3, 0, "{l}");
        }
    }

    #[test]
    fn nested_multiparts_close_in_order() {
        let (_, out) = run(
            &["Content-Type: multipart/mixed; boundary=outer"],
            &[
                b"--outer",
                b"Content-Type: multipart/alternative; boundary=inner",
                b"",
                b"--inner",
                b"",
                &[b'a'; 1500],
                b"--inner--",
                b"--outer--",
            ],
        );
        let text: Vec<String> = out
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert!(text.contains(&"--inner--".to_string()));
        assert_eq!(text.last().unwrap(), "--outer--");
        assert!(out.iter().all(|l| l.len() <= MAX_LINE));
    }

    #[test]
    fn long_header_lines_fold_at_white_space() {
        let line = format!("Subject: {}", "word ".repeat(400));
        let folded = fold_header(&line);
        assert!(folded.len() > 1);
        assert!(folded.iter().all(|l| l.len() <= MAX_LINE));
        assert!(folded[1..].iter().all(|l| l.starts_with(' ')));
        assert_eq!(folded.concat(), line);
        let solid = format!("X-Id: {}", "z".repeat(1200));
        // No blank to fold at inside the long word: it stays too long (the
        // listener refuses it, and sendmail says so).
        let folded = fold_header(&solid);
        assert_eq!(folded.concat(), solid);
        assert!(folded.iter().any(|l| l.len() > MAX_LINE));
    }
}
