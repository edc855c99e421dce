//! Rewriting the From header on the way out (`rewrite_from = true`):
//! providers refuse (Microsoft 365 `SendAsDenied`) or silently change
//! (Gmail) a From that is not the login. The display name is kept, the
//! address becomes the route's `rewrite_sender`, and the original address
//! goes into Reply-To unless the message has one, so replies still reach
//! the device's owner.
//!
//! Streaming: only the header section is buffered, up to
//! [`MAX_HEADER_SECTION`]; a message whose header section is bigger goes out
//! unchanged (with a warning) rather than being held in memory. This is
//! the one function that writes header values, and every value it writes
//! is checked for CR, LF and NUL.

use std::pin::Pin;

use super::client::BodySource;

/// Largest header section that is rewritten (RFC 5322 sets no limit;
/// device mail has a few hundred octets of headers).
pub const MAX_HEADER_SECTION: usize = 64 * 1024;

/// Rewrite the From of a complete header section (CRLF lines, without the
/// empty line that ends it). `None` if nothing may be written safely.
pub fn rewrite_from(headers: &[u8], new_addr: &str) -> Option<Vec<u8>> {
    if !safe(new_addr) || new_addr.contains(['<', '>', '"', ' ']) {
        return None;
    }
    // Split into fields: each starts at a line that does not begin with
    // white space (RFC 5322 §2.2.3 folding).
    let mut fields: Vec<&[u8]> = Vec::new();
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
    let name_is = |f: &[u8], n: &str| {
        f.len() > n.len() && f[..n.len()].eq_ignore_ascii_case(n.as_bytes()) && f[n.len()] == b':'
    };
    let has_reply_to = fields.iter().any(|f| name_is(f, "reply-to"));
    let mut out = Vec::with_capacity(headers.len() + 128);
    let mut done = false;
    for f in &fields {
        if done || !name_is(f, "from") {
            out.extend_from_slice(f);
            continue;
        }
        done = true;
        // Unfold: the value on one line.
        let value: String = String::from_utf8_lossy(&f[5..])
            .replace("\r\n", "")
            .trim()
            .to_string();
        let (display, orig) = split_mailbox(&value);
        let display = display.filter(|d| safe(d));
        let new_from = match &display {
            Some(d) => format!("From: {d} <{new_addr}>\r\n"),
            None => format!("From: <{new_addr}>\r\n"),
        };
        out.extend_from_slice(new_from.as_bytes());
        if let Some(o) = orig
            && !has_reply_to
            && !o.eq_ignore_ascii_case(new_addr)
            && safe(&o)
            && crate::smtp::Address::parse(&o).is_ok()
        {
            out.extend_from_slice(format!("Reply-To: <{o}>\r\n").as_bytes());
        }
    }
    if !done {
        out.extend_from_slice(format!("From: <{new_addr}>\r\n").as_bytes());
    }
    Some(out)
}

/// No CR, LF or NUL: the value stays on its own header line.
fn safe(s: &str) -> bool {
    !s.contains(['\r', '\n', '\0'])
}

/// `Name <addr>`, `"Name" <addr>`, `addr (Name)` or `addr` →
/// (display name, address).
fn split_mailbox(v: &str) -> (Option<String>, Option<String>) {
    if let (Some(a), Some(b)) = (v.rfind('<'), v.rfind('>'))
        && a < b
    {
        let addr = v[a + 1..b].trim().to_string();
        let name = v[..a].trim();
        let name = (!name.is_empty()).then(|| name.to_string());
        return (name, (!addr.is_empty()).then_some(addr));
    }
    if let (Some(a), Some(b)) = (v.find('('), v.rfind(')'))
        && a < b
    {
        let name = v[a + 1..b].trim();
        let addr = v[..a].trim().to_string();
        let name = (!name.is_empty()).then(|| format!("\"{}\"", name.replace(['"', '\\'], "")));
        return (name, (!addr.is_empty()).then_some(addr));
    }
    let addr = v.split_whitespace().next().map(str::to_string);
    (None, addr)
}

/// A body source that rewrites From in the header section as it streams.
pub struct RewritingBody<'a> {
    inner: &'a mut (dyn BodySource + Send),
    new_addr: String,
    /// Header bytes held until the end of the header section.
    held: Vec<u8>,
    /// True once the header section has been written out.
    passed: bool,
    tmp: Vec<u8>,
}

impl std::fmt::Debug for RewritingBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RewritingBody(From -> {})", self.new_addr)
    }
}

impl<'a> RewritingBody<'a> {
    /// Wrap `inner`; From becomes `new_addr`.
    pub fn new(inner: &'a mut (dyn BodySource + Send), new_addr: &str) -> RewritingBody<'a> {
        RewritingBody {
            inner,
            new_addr: new_addr.to_string(),
            held: Vec::new(),
            passed: false,
            tmp: Vec::new(),
        }
    }

    /// The held header section is complete (or the body ended): write it,
    /// rewritten, followed by whatever came after it.
    fn release(&mut self, out: &mut Vec<u8>) {
        self.passed = true;
        let held = std::mem::take(&mut self.held);
        let end = if held.starts_with(b"\r\n") {
            Some(0)
        } else {
            held.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| i + 2)
        };
        match end {
            Some(e) => match rewrite_from(&held[..e], &self.new_addr) {
                Some(h) => {
                    out.extend_from_slice(&h);
                    out.extend_from_slice(&held[e..]);
                }
                None => {
                    tracing::warn!(
                        "From not rewritten: the new value would not be a safe header line"
                    );
                    out.extend_from_slice(&held);
                }
            },
            None => {
                tracing::warn!(
                    max = MAX_HEADER_SECTION,
                    "From not rewritten: header section too long or unterminated"
                );
                out.extend_from_slice(&held);
            }
        }
    }
}

impl BodySource for RewritingBody<'_> {
    fn next_chunk<'b>(
        &'b mut self,
        buf: &'b mut Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + 'b>> {
        Box::pin(async move {
            if self.passed {
                return self.inner.next_chunk(buf).await;
            }
            buf.clear();
            loop {
                let mut tmp = std::mem::take(&mut self.tmp);
                self.inner.next_chunk(&mut tmp).await?;
                if tmp.is_empty() {
                    self.release(buf);
                    self.tmp = tmp;
                    return Ok(());
                }
                self.held.extend_from_slice(&tmp);
                self.tmp = tmp;
                let complete = self.held.starts_with(b"\r\n")
                    || self.held.windows(4).any(|w| w == b"\r\n\r\n");
                if complete || self.held.len() > MAX_HEADER_SECTION {
                    self.release(buf);
                    return Ok(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Only the first From is touched; a From-like field is not.
        assert_eq!(
            rw("From-X: a\r\nFrom: <a@b>\r\n"),
            "From-X: a\r\nFrom: <alerts@example.com>\r\nReply-To: <a@b>\r\n"
        );
    }

    #[test]
    fn nothing_unsafe_is_written() {
        assert!(rewrite_from(b"From: a@b\r\n", "x@y\r\nBcc: v@w").is_none());
        assert!(rewrite_from(b"From: a@b\r\n", "x\0@y").is_none());
        // An original address that is not an address gets no Reply-To.
        let out = rw("From: Evil <a\"b@c>\r\n");
        assert!(!out.contains("Reply-To"), "{out}");
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
            let mut rw = RewritingBody::new(&mut src, "a@example.com");
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
}
