use super::*;
use base64::Engine as _;

fn rw(h: &str) -> String {
    String::from_utf8(rewrite_from(h.as_bytes(), "alerts@example.com").unwrap()).unwrap()
}

#[test]
fn keeps_display_name_and_adds_reply_to() {
    let out = rw("Received: x\r\nFrom: Printer <printer@lan.test>\r\nSubject: s\r\n");
    assert_eq!(
        out,
        "Received: x\r\nFrom: Printer <alerts@example.com>\r\nReply-To: <printer@lan.test>\r\nSubject: s\r\n"
    );
}

#[test]
fn existing_reply_to_is_kept() {
    let out = rw("From: \"NAS\" <nas@lan>\r\nReply-To: <me@x.test>\r\n");
    assert_eq!(
        out,
        "From: \"NAS\" <alerts@example.com>\r\nReply-To: <me@x.test>\r\n"
    );
}

#[test]
fn folded_bare_and_comment_forms() {
    assert_eq!(
        rw("From: UPS\r\n <ups@lan.test>\r\nX: y\r\n"),
        "From: UPS <alerts@example.com>\r\nReply-To: <ups@lan.test>\r\nX: y\r\n"
    );
    assert_eq!(
        rw("from: root@localhost\r\n"),
        "From: <alerts@example.com>\r\nReply-To: <root@localhost>\r\n"
    );
    assert_eq!(
        rw("From: cam@lan (Camera 1)\r\n"),
        "From: \"Camera 1\" <alerts@example.com>\r\nReply-To: <cam@lan>\r\n"
    );
    // No From at all: one is added.
    assert_eq!(
        rw("Subject: x\r\n"),
        "Subject: x\r\nFrom: <alerts@example.com>\r\n"
    );
    // A From-like field is not a From.
    assert_eq!(
        rw("From-X: a\r\nFrom: <a@b>\r\n"),
        "From-X: a\r\nFrom: <alerts@example.com>\r\nReply-To: <a@b>\r\n"
    );
}

#[test]
fn nothing_unsafe_is_written() {
    assert!(rewrite_from(b"From: a@b\r\n", "x@y\r\nBcc: v@w").is_err());
    assert!(rewrite_from(b"From: a@b\r\n", "x\0@y").is_err());
    // An original address that is not an address gets no Reply-To.
    let out = rw("From: Evil <a\"b@c>\r\n");
    assert!(!out.contains("Reply-To"), "{out}");
}

#[test]
fn a_second_from_field_refuses_the_message() {
    // Only the first used to be rewritten: the second went out as written.
    for h in [
        "From: dev@lan\r\nSubject: s\r\nFrom: ceo@bank.example\r\n",
        "From: dev@lan\r\nfrom :ceo@bank.example\r\n",
        "FROM:a@b\r\nFrom\t: c@d\r\n",
    ] {
        assert_eq!(
            rewrite_from(h.as_bytes(), "alerts@example.com"),
            Err(RewriteError::FromFields(2)),
            "{h:?}"
        );
    }
}

#[test]
fn obsolete_blanks_before_the_colon_are_a_from() {
    assert_eq!(
        rw("Subject: s\r\nfrom :x@lan\r\n"),
        "Subject: s\r\nFrom: <alerts@example.com>\r\nReply-To: <x@lan>\r\n"
    );
    // And a Reply-To written that way counts as one.
    assert_eq!(
        rw("From: x@lan\r\nReply-To  : y@lan\r\n"),
        "From: <alerts@example.com>\r\nReply-To  : y@lan\r\n"
    );
}

#[test]
fn more_than_one_mailbox_refuses_the_message() {
    for (v, n) in [
        ("a@b, c@d", 2),
        ("A <a@b>, \"C, D\" <c@d>, e@f", 3),
        ("Team: a@b, c@d;", 2),
        ("root, admin", 2),
        ("x <a@b>, Evil <c@d>", 2),
    ] {
        assert_eq!(
            rewrite_from(format!("From: {v}\r\n").as_bytes(), "x@y.z"),
            Err(RewriteError::Mailboxes(n)),
            "{v}"
        );
    }
    // Commas inside quotes, comments and angle brackets separate nothing;
    // empty list elements are obsolete syntax, not mailboxes.
    for v in [
        "\"Smith, J\" <j@x>",
        "j@x (Smith, J)",
        "<\"a,b\"@x>",
        "j@x,",
        ", j@x ,, (c)",
    ] {
        assert!(
            rewrite_from(format!("From: {v}\r\n").as_bytes(), "x@y.z").is_ok(),
            "{v}"
        );
    }
}

#[test]
fn hostile_display_names_are_requoted() {
    assert_eq!(
        rw("From: \"Unterminated <a@b>\r\n"),
        "From: \"Unterminated <a@b>\" <alerts@example.com>\r\n"
    );
    assert_eq!(
        rw("From: \"Smith, J\" <j@x.test>\r\n"),
        "From: \"Smith, J\" <alerts@example.com>\r\nReply-To: <j@x.test>\r\n"
    );
    // An unquoted comma in a display name: one mailbox, name re-quoted.
    assert_eq!(
        rw("From: Smith, John <j@x.test>\r\n"),
        "From: \"Smith, John\" <alerts@example.com>\r\nReply-To: <j@x.test>\r\n"
    );
    assert_eq!(
        rw("From: Smith\\, J. <j@x.test>\r\n"),
        "From: \"Smith\\\\, J.\" <alerts@example.com>\r\nReply-To: <j@x.test>\r\n"
    );
    assert_eq!(
        rw("From: A \"q\\\"uote\" B <a@b.test>\r\n"),
        "From: A \"q\\\"uote\" B <alerts@example.com>\r\nReply-To: <a@b.test>\r\n"
    );
    assert_eq!(
        rw("From: Caf\u{e9} <c@d.test>\r\n"),
        "From: =?UTF-8?B?Q2Fmw6k=?= <alerts@example.com>\r\nReply-To: <c@d.test>\r\n"
    );
    assert_eq!(
        rw("From: Undisclosed:;\r\n"),
        "From: Undisclosed <alerts@example.com>\r\n"
    );
}

#[test]
fn prepare_finds_the_header_section_or_refuses() {
    let msg = b"From: a@b\r\nSubject: s\r\n\r\nFrom: body\r\n";
    let r = prepare(msg, true, "x@y.z").unwrap();
    assert_eq!(r.replaced, 23);
    assert_eq!(
        r.header,
        b"From: <x@y.z>\r\nReply-To: <a@b>\r\nSubject: s\r\n"
    );
    // All header, no body.
    assert_eq!(
        prepare(b"From: a@b\r\n", true, "x@y.z").unwrap().replaced,
        11
    );
    // No end of the header section within the limit.
    let mut big = b"From: a@b\r\n".to_vec();
    while big.len() <= MAX_HEADER_SECTION {
        big.extend_from_slice(b"X-Pad: 0123456789012345678901234567890123456789\r\n");
    }
    assert_eq!(prepare(&big, false, "x@y.z"), Err(RewriteError::TooLong));
    // Just inside the limit: rewritten (the listener stores no more).
    let mut edge = b"From: a@b\r\n".to_vec();
    while edge.len() + 50 <= MAX_HEADER_SECTION {
        edge.extend_from_slice(b"X-Pad: 01234567890123456789012345678901234567890\r\n");
    }
    assert!(edge.len() > 64 * 1024);
    let end = edge.len();
    edge.extend_from_slice(b"\r\nbody\r\n");
    assert_eq!(prepare(&edge, false, "x@y.z").unwrap().replaced, end);
}

struct Chunks(Vec<Vec<u8>>);
impl BodySource for Chunks {
    fn next_chunk<'a>(
        &'a mut self,
        buf: &'a mut Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            buf.clear();
            if !self.0.is_empty() {
                buf.extend_from_slice(&self.0.remove(0));
            }
            Ok(())
        })
    }
}

#[test]
fn streaming_across_chunk_boundaries() {
    let msg = b"Received: r\r\nFrom: Dev <dev@lan>\r\nSubject: s\r\n\r\nbody line\r\nFrom: not a header\r\n";
    for split in 1..msg.len() {
        let mut src = Chunks(vec![msg[..split].to_vec(), msg[split..].to_vec()]);
        let plan = prepare(msg, true, "a@example.com").unwrap();
        let mut rw = RewritingBody::new(&mut src, plan);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        smol::block_on(async {
            loop {
                rw.next_chunk(&mut buf).await.unwrap();
                if buf.is_empty() {
                    break;
                }
                out.extend_from_slice(&buf);
            }
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: r\r\nFrom: Dev <a@example.com>\r\nReply-To: <dev@lan>\r\nSubject: s\r\n\r\nbody line\r\nFrom: not a header\r\n",
            "split at {split}"
        );
    }
}

// ---------------------------------------------------------------------------
// Whatever the display name, the From written parses: a strict reader of
// what we write (RFC 5322 phrase: atoms, quoted-strings, RFC 2047 words).

/// The display name of a From field value `v` we wrote, decoded, or why
/// it does not parse.
fn strict_display(v: &str, addr: &str) -> Result<String, String> {
    let tail = format!(" <{addr}>");
    let phrase = match v.strip_suffix(&tail) {
        Some(p) => p,
        None if v == format!("<{addr}>") => return Ok(String::new()),
        None => return Err(format!("does not end in the address: {v:?}")),
    };
    let mut out = String::new();
    let mut rest = phrase;
    let mut words = 0;
    while !rest.is_empty() {
        if let Some(r) = rest
            .strip_prefix("\r\n ")
            .or_else(|| rest.strip_prefix(' '))
        {
            rest = r;
            if words > 0 {
                out.push(' ');
            }
            continue;
        }
        words += 1;
        if let Some(r) = rest.strip_prefix('"') {
            let mut closed = None;
            let mut it = r.char_indices();
            while let Some((i, c)) = it.next() {
                match c {
                    '\\' => match it.next() {
                        Some((_, e)) if e.is_ascii() && !e.is_ascii_control() => out.push(e),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    '"' => {
                        closed = Some(i);
                        break;
                    }
                    c if c == ' ' || (c.is_ascii_graphic()) => out.push(c),
                    c => return Err(format!("{c:?} in a quoted-string")),
                }
            }
            let i = closed.ok_or("unterminated quoted-string")?;
            rest = &r[i + 1..];
        } else if let Some(r) = rest.strip_prefix("=?UTF-8?B?") {
            let end = r.find("?=").ok_or("unterminated encoded-word")?;
            if end + 12 > 75 {
                return Err("encoded-word over 75 characters".into());
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&r[..end])
                .map_err(|e| e.to_string())?;
            out.push_str(&String::from_utf8(bytes).map_err(|e| e.to_string())?);
            rest = &r[end + 2..];
            // Adjacent encoded-words: the blank between them is not text.
            if rest.starts_with("\r\n =?") {
                rest = &rest[3..];
            }
        } else {
            let n = rest
                .find(|c: char| !(is_atext(c) || c == '.'))
                .unwrap_or(rest.len());
            if n == 0 {
                return Err(format!("unexpected {rest:?}"));
            }
            out.push_str(&rest[..n]);
            rest = &rest[n..];
        }
    }
    Ok(out)
}

/// What [`encode`] promises to keep of a name.
fn cleaned(name: &str) -> String {
    let blanked: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let words: Vec<&str> = blanked.split(' ').filter(|w| !w.is_empty()).collect();
    let joined = words.join(" ");
    let cut: String = joined.chars().take(MAX_DISPLAY_NAME).collect();
    cut.trim_end().to_string()
}

fn check_output(out: &[u8], addr: &str) -> Result<String, String> {
    let text = std::str::from_utf8(out).map_err(|e| e.to_string())?;
    for (i, b) in out.iter().enumerate() {
        if *b == b'\n' && (i == 0 || out[i - 1] != b'\r') {
            return Err("bare LF".into());
        }
        if *b == b'\r' && out.get(i + 1) != Some(&b'\n') {
            return Err("bare CR".into());
        }
        if *b == 0 {
            return Err("NUL".into());
        }
    }
    if text.split("\r\n").any(|l| l.len() > 998) {
        return Err("line over 998 octets".into());
    }
    let fields = split_fields(out);
    let froms: Vec<_> = fields.iter().filter_map(|f| value_of(f, "from")).collect();
    if froms.len() != 1 {
        return Err(format!("{} From fields", froms.len()));
    }
    let v = std::str::from_utf8(froms[0]).map_err(|e| e.to_string())?;
    // (A Reply-To copies the message's own address, UTF-8 or not; what we
    // write into From is 7-bit.)
    if !v.is_ascii() {
        return Err("8-bit octets in From".into());
    }
    let v = v.strip_suffix("\r\n").ok_or("no CRLF")?.trim_start();
    strict_display(v, addr)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    #[test]
    fn the_from_written_always_parses(
        name in "\\PC{0,200}|[\"\\\\(),<>:;@. \\t\u{0}\r\n\u{e9}\u{202e}a-c]{0,40}",
        form in 0usize..5,
    ) {
        let addr = "alerts@example.com";
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        let commented = name.replace('\\', "\\\\").replace('(', "\\(").replace(')', "\\)");
        let header = match form {
            0 => format!("From: \"{quoted}\" <dev@lan.test>\r\n"),
            1 => format!("From: dev@lan.test ({commented})\r\n"),
            2 => format!("From: {name} <dev@lan.test>\r\n"),
            3 => format!("From: \"{name}\" <dev@lan.test>\r\n"),
            _ => format!("From: {name}\r\n"),
        };
        // The header as it could be queued: CRLF lines only.
        let header = header.replace("\r\n", "\n").replace('\r', " ").replace('\n', "\r\n ");
        let header = format!("{}\r\n", header.trim_end_matches([' ', '\r', '\n']));
        match rewrite_from(header.as_bytes(), addr) {
            Ok(out) => {
                let got = check_output(&out, addr);
                proptest::prop_assert!(got.is_ok(), "{header:?} -> {:?}: {got:?}", String::from_utf8_lossy(&out));
                let got = got.unwrap_or_default();
                // A name given in a quoted-string or a comment comes back as
                // it was, cleaned; it is never allowed to become an address.
                if form <= 1 && !name.contains(['\r', '\n']) {
                    proptest::prop_assert_eq!(got, cleaned(&name));
                }
            }
            Err(RewriteError::Mailboxes(_)) => proptest::prop_assert!(form >= 2),
            Err(e) => proptest::prop_assert!(false, "{header:?}: {e}"),
        }
    }
}
