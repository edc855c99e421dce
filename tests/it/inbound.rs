//! Inbound hardening against the real binary: allow/deny from
//! other loopback source addresses, STARTTLS and implicit TLS, AUTH, the
//! strict session, and the bounds of DATA.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{DEADLINE, Postern, Smtp, free_port, test_tls};

const OUTBOX: &str = "kind = \"maildir\"\ndir = \"outbox\"";

/// A config listening on 127.0.0.1 and ::1 at `port`, delivering to
/// `outbox/`, with extra `[server]` and `[policy]` lines and trailing tables.
fn cfg(port: u16, server: &str, policy: &str, tail: &str) -> String {
    format!(
        r#"hostname = "relay.test"
log_level = "debug"

[server]
listen = ["127.0.0.1:{port}", "[::1]:{port}"]
max_message_size = "256KiB"
{server}

[policy]
{policy}

[queue]
dir = "queue"
retry_intervals = ["1s"]

[upstream]
{OUTBOX}
{tail}"#
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn from(p: &Postern, src: &str) -> Smtp {
    let to = if src.contains(':') {
        SocketAddr::new(ip("::1"), p.port)
    } else {
        SocketAddr::new(ip("127.0.0.1"), p.port)
    };
    Smtp::connect(to, Some(ip(src)))
}

/// Messages delivered to `dir/outbox` so far.
fn delivered(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("outbox")) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "eml") {
                out.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn wait_delivered(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    let end = Instant::now() + DEADLINE;
    loop {
        let got = delivered(dir);
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < end, "only {} of {n} delivered", got.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn b64(s: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn user(name: &str, pw: &str, senders: &str) -> String {
    let hash = postern::auth::hash_password(pw.as_bytes()).unwrap();
    format!(
        "\n[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\nallowed_senders = [{senders}]\n"
    )
}

#[test]
fn allow_and_deny_from_other_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = Postern::start(
        dir.path(),
        &cfg(
            port,
            "",
            "allow_clients = [\"127.0.0.2\", \"::1\"]\ndeny_clients = [\"127.0.0.3\"]",
            "",
        ),
        port,
    );
    // Allowed: 127.0.0.2 and ::1 relay.
    for src in ["127.0.0.2", "::1"] {
        let mut c = from(&p, src);
        assert_eq!(c.reply().0, 220, "{src}");
        c.cmd("EHLO dev", 250);
        let (code, text) = c.send_mail("a@lan.test", &["b@example.test"], b"Subject: x\r\n\r\nhi");
        assert_eq!(code, 250, "{src}: {text}");
    }
    // Denied (deny wins) and not allowed: 554 5.7.1 at connect, then closed.
    for src in ["127.0.0.3", "127.0.0.1", "127.0.0.4"] {
        let mut c = from(&p, src);
        let (code, text) = c.reply();
        assert_eq!(code, 554, "{src}: {text}");
        assert!(
            text.starts_with("554 5.7.1 ") && text.contains(src),
            "{text}"
        );
        assert!(c.closed(), "{src}");
    }
    wait_delivered(dir.path(), 2);
}

#[test]
fn default_config_relays_for_loopback_only() {
    // No allow_clients, no users: loopback (127/8, ::1) only. Other
    // addresses cannot be tested from loopback; the config test covers the
    // default list, this one that 127.0.0.x and ::1 get in.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = Postern::start(dir.path(), &cfg(port, "", "", ""), port);
    for src in ["127.0.0.2", "127.0.0.3", "::1"] {
        let mut c = from(&p, src);
        assert_eq!(c.reply().0, 220, "{src}");
        c.cmd("EHLO dev", 250);
    }
}

#[test]
fn auth_lets_an_outside_client_relay_and_limits_its_senders() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tail = user("scanner", "s3cret-pw", "\"scan@lan.test\"");
    let p = Postern::start(
        dir.path(),
        &cfg(
            port,
            "allow_plain_auth_clients = [\"127.0.0.4\"]",
            "allow_clients = [\"127.0.0.2\"]\ndeny_clients = [\"127.0.0.3\"]\nrelay_authenticated = true",
            &tail,
        ),
        port,
    );
    // Outside allow_clients, but AUTH could let it in: connect works,
    // RCPT is refused until it logs in.
    let mut c = from(&p, "127.0.0.4");
    assert_eq!(c.reply().0, 220);
    let ehlo = c.cmd("EHLO scanner", 250);
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    c.cmd("MAIL FROM:<scan@lan.test>", 250);
    let t = c.cmd("RCPT TO:<ops@example.test>", 550);
    assert!(t.starts_with("550 5.7.1 "), "{t}");
    c.cmd("RSET", 250);
    let t = c.cmd(&format!("AUTH PLAIN {}", b64(b"\0scanner\0wrong")), 535);
    assert!(t.starts_with("535 5.7.8 "), "{t}");
    c.cmd(&format!("AUTH PLAIN {}", b64(b"\0scanner\0s3cret-pw")), 235);
    // Only its own sender.
    let t = c.cmd("MAIL FROM:<boss@lan.test>", 550);
    assert!(t.starts_with("550 5.7.1 "), "{t}");
    let (code, text) = c.send_mail(
        "scan@lan.test",
        &["ops@example.test"],
        b"Subject: scan\r\n\r\npdf",
    );
    assert_eq!(code, 250, "{text}");
    let got = wait_delivered(dir.path(), 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("with ESMTPA"), "{text}");
    assert!(!p.log().contains("s3cret-pw"), "password in the log");

    // AUTH LOGIN works too.
    let mut c = from(&p, "127.0.0.4");
    c.reply();
    c.cmd("EHLO scanner", 250);
    c.cmd("AUTH LOGIN", 334);
    c.cmd(&b64(b"scanner"), 334);
    c.cmd(&b64(b"s3cret-pw"), 235);

    // A denied client stays out whatever the users.
    let mut c = from(&p, "127.0.0.3");
    assert_eq!(c.reply().0, 554);
    // Without TLS and outside allow_plain_auth_clients, AUTH could never
    // happen: 554 at connect.
    let mut c = from(&p, "127.0.0.5");
    assert_eq!(c.reply().0, 554);
}

#[test]
fn failed_auth_is_delayed_counted_and_ends_in_421() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tail = user("dev", "right", "");
    let p = Postern::start(
        dir.path(),
        &cfg(
            port,
            "allow_plain_auth_clients = [\"127.0.0.1\"]\nmax_auth_failures = 2",
            "allow_clients = [\"127.0.0.1\"]",
            &tail,
        ),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    let t0 = Instant::now();
    c.cmd(&format!("AUTH PLAIN {}", b64(b"\0dev\0wrong")), 535);
    // Delayed: at least the first step of the back-off.
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    // Unknown user: the same answer.
    let t = c.cmd(&format!("AUTH PLAIN {}", b64(b"\0nobody\0x")), 421);
    assert!(t.starts_with("421 4.7.0 "), "{t}");
    assert!(c.closed());
    assert!(p.log().contains("AUTH failed"), "{}", p.log());
}

#[test]
fn auth_plain_without_an_initial_response_is_prompted_with_334_space() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tail = user("dev", "right", "");
    let p = Postern::start(
        dir.path(),
        &cfg(
            port,
            "allow_plain_auth_clients = [\"127.0.0.1\"]",
            "allow_clients = [\"127.0.0.1\"]",
            &tail,
        ),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    // The exact wire bytes: RFC 4954 §4 wants "334" SP before the
    // (empty) challenge; a strict client waits for the space.
    assert_eq!(c.cmd("AUTH PLAIN", 334), "334 \r\n");
    c.send(&b64(b"\0dev\0right"));
    let (code, text) = c.reply();
    assert_eq!(code, 235, "{text}");
}

/// A blocking TLS line client (rustls) trusting `ca`.
struct TlsSmtp {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    postern::tls::client_config(Some(ca)).unwrap()
}

impl TlsSmtp {
    fn over(tcp: TcpStream, ca: &Path) -> TlsSmtp {
        tcp.set_read_timeout(Some(DEADLINE)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(client_config(ca), name).unwrap();
        TlsSmtp {
            s: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        }
    }
    fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let line = loop {
                if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                    let l: Vec<u8> = self.buf.drain(..=i).collect();
                    break String::from_utf8(l).unwrap();
                }
                let mut b = [0u8; 4096];
                let n = self.s.read(&mut b).unwrap();
                assert!(n > 0, "closed; so far {all:?}");
                self.buf.extend_from_slice(&b[..n]);
            };
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line[..3].parse().unwrap(), all);
            }
        }
    }
    fn cmd(&mut self, line: &str, want: u16) -> String {
        self.s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let (code, text) = self.reply();
        assert_eq!(code, want, "after {line:?}: {text}");
        text
    }
}

/// Plain SMTP up to STARTTLS's 220 on a raw socket, then TLS.
fn starttls(port: u16, src: &str, ca: &Path) -> TlsSmtp {
    let mut tcp = crate::util::bind_connect(ip(src), SocketAddr::new(ip("127.0.0.1"), port));
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut r = BufReader::new(tcp.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("220 "), "{line}");
    tcp.write_all(b"EHLO dev\r\n").unwrap();
    let mut ehlo = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        ehlo.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "AUTH offered in clear: {ehlo}");
    tcp.write_all(b"STARTTLS\r\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("220 2.0.0"), "{line}");
    TlsSmtp::over(tcp, ca)
}

#[test]
fn starttls_resets_the_session_and_then_offers_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = test_tls(dir.path());
    let port = free_port();
    let tail = user("dev", "pw-over-tls", "");
    let p = Postern::start(
        dir.path(),
        &cfg(
            port,
            "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nno_starttls_clients = [\"127.0.0.5\"]",
            "allow_clients = [\"127.0.0.0/8\"]",
            &tail,
        ),
        port,
    );
    let mut t = starttls(port, "127.0.0.1", &ca);
    // RFC 3207 §4.2: EHLO again before anything else.
    t.cmd("MAIL FROM:<a@lan.test>", 503);
    let ehlo = t.cmd("EHLO dev", 250);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    t.cmd(&format!("AUTH PLAIN {}", b64(b"\0dev\0pw-over-tls")), 235);
    t.cmd("MAIL FROM:<a@lan.test>", 250);
    t.cmd("RCPT TO:<b@example.test>", 250);
    t.cmd("DATA", 354);
    t.cmd("Subject: tls\r\n\r\nsecret\r\n.", 250);
    let got = wait_delivered(dir.path(), 1);
    assert!(String::from_utf8_lossy(&got[0]).contains("with ESMTPSA"));

    // A legacy device is not offered STARTTLS.
    let mut c = from(&p, "127.0.0.5");
    c.reply();
    let ehlo = c.cmd("EHLO printer", 250);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.cmd("STARTTLS", 502);
}

#[test]
fn commands_pipelined_behind_starttls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    test_tls(dir.path());
    let port = free_port();
    let p = Postern::start(
        dir.path(),
        &cfg(
            port,
            "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"",
            "",
            "",
        ),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    // CVE-2011-0411: one write, so both arrive before the handshake.
    c.raw(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 554, "{text}");
    assert!(c.closed());
}

#[test]
fn implicit_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = test_tls(dir.path());
    let port = free_port();
    let tls_port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &cfg(
            port,
            &format!(
                "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nlisten_tls = [\"127.0.0.1:{tls_port}\"]"
            ),
            "",
            "",
        ),
        port,
    );
    let tcp = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    let mut t = TlsSmtp::over(tcp, &ca);
    assert_eq!(t.reply().0, 220);
    let ehlo = t.cmd("EHLO dev", 250);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    t.cmd("MAIL FROM:<a@lan.test>", 250);
    t.cmd("RCPT TO:<b@example.test>", 250);
    t.cmd("DATA", 354);
    t.cmd("Subject: 465\r\n\r\nhi\r\n.", 250);
    let got = wait_delivered(dir.path(), 1);
    assert!(String::from_utf8_lossy(&got[0]).contains("with ESMTPS"));
    // A device that talks plain SMTP to the implicit-TLS port: the log
    // says so in words.
    let mut plain = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    plain.write_all(b"EHLO plain\r\n").unwrap();
    let mut sink = Vec::new();
    plain.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = plain.read_to_end(&mut sink);
    p.wait_log("the client did not start TLS");
    assert!(!p.log().contains("InvalidContentType"), "{}", p.log());
}

fn plain_server(dir: &Path, server: &str) -> Postern {
    let port = free_port();
    Postern::start(dir, &cfg(port, server, "", ""), port)
}

#[test]
fn out_of_order_commands_get_503_and_a_second_mail_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    let mut c = p.smtp();
    c.reply();
    c.cmd("MAIL FROM:<a@lan.test>", 503);
    c.cmd("EHLO dev", 250);
    c.cmd("RCPT TO:<b@example.test>", 503);
    c.cmd("DATA", 503);
    c.cmd("MAIL FROM:<a@lan.test>", 250);
    c.cmd("MAIL FROM:<c@lan.test>", 503);
    c.cmd("DATA", 503);
    c.cmd("RCPT TO:<b@example.test>", 250);
    c.cmd("MAIL FROM:<c@lan.test>", 503);
    c.cmd("DATA", 354);
    c.raw(b"Subject: one\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    wait_delivered(dir.path(), 1);
}

#[test]
fn pipelining_without_ehlo_is_a_violation() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    let mut c = p.smtp();
    c.reply();
    c.cmd("HELO old", 250);
    c.raw(b"MAIL FROM:<a@lan.test>\r\nRCPT TO:<b@example.test>\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 554, "{text}");
    assert!(c.closed());
    // After EHLO the same is fine, and the replies come in order.
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO new", 250);
    c.raw(b"MAIL FROM:<a@lan.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
    assert_eq!(c.reply().0, 250);
    assert_eq!(c.reply().0, 250);
    assert_eq!(c.reply().0, 354);
}

#[test]
fn long_data_lines_are_refused_never_cut() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    // 998 octets + CRLF: the longest allowed.
    let ok = format!("Subject: a\r\n\r\n{}", "y".repeat(998));
    assert_eq!(
        c.send_mail("a@lan.test", &["b@example.test"], ok.as_bytes())
            .0,
        250
    );
    let bad = format!("Subject: b\r\n\r\n{}", "z".repeat(999));
    let (code, text) = c.send_mail("a@lan.test", &["b@example.test"], bad.as_bytes());
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("550 5.6.0 "), "{text}");
    // The session goes on.
    c.cmd("NOOP", 250);
    let got = wait_delivered(dir.path(), 1);
    assert!(got[0].windows(998).any(|w| w == "y".repeat(998).as_bytes()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(delivered(dir.path()).len(), 1);
}

#[test]
fn huge_header_sections_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    let mut msg = String::new();
    for i in 0..1200 {
        msg.push_str(&format!("X-Filler-{i}: {}\r\n", "h".repeat(80)));
    }
    msg.push_str("\r\nbody");
    let (code, text) = c.send_mail("a@lan.test", &["b@example.test"], msg.as_bytes());
    assert_eq!(code, 552, "{text}");
    c.cmd("NOOP", 250);
}

#[test]
fn bare_newlines_are_refused_by_default_and_the_session_closed() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    c.cmd("MAIL FROM:<a@lan.test>", 250);
    c.cmd("RCPT TO:<b@example.test>", 250);
    c.cmd("DATA", 354);
    c.raw(b"Subject: smuggle\r\n\r\nx\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("550 5.6.0 "), "{text}");
    assert!(c.closed());
    std::thread::sleep(Duration::from_millis(300));
    assert!(delivered(dir.path()).is_empty());
}

#[test]
fn nul_in_data_is_refused_by_default_and_dropped_when_normalizing() {
    // A next hop that strips NULs would see CRLF.CRLF in `\r\n\0.\r\n`
    // and take what follows as a new transaction.
    let smuggle = b"Subject: nul\r\n\r\nx\r\n\x00.\r\nMAIL FROM:<evil@x.test>\r\n";
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    let (code, text) = c.send_mail("a@lan.test", &["b@example.test"], smuggle);
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("550 5.6.0 "), "{text}");
    assert!(c.closed());
    std::thread::sleep(Duration::from_millis(300));
    assert!(delivered(dir.path()).is_empty());

    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "bare_newline = \"normalize\"");
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    let (code, text) = c.send_mail("a@lan.test", &["b@example.test"], smuggle);
    assert_eq!(code, 250, "{text}");
    let got = wait_delivered(dir.path(), 1);
    assert!(!got[0].contains(&0), "a NUL went through");
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.contains("\r\nx\r\n.\r\nMAIL FROM:<evil@x.test>\r\n"),
        "{text}"
    );
}

#[test]
fn a_message_that_went_round_too_many_hops_is_554_and_not_queued() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    let message = |hops: usize| {
        let mut m = String::new();
        for i in 0..hops {
            m.push_str(&format!(
                "Received: from hop{i}.test ([192.0.2.1])\r\n\tby relay.test (postern) with ESMTP id {i:X}; Mon, 23 Nov 2026 18:01:43 +0000\r\n"
            ));
        }
        m.push_str("Subject: loop\r\n\r\nround and round\r\n");
        m
    };
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    let (code, text) = c.send_mail("a@lan.test", &["b@example.test"], message(51).as_bytes());
    assert_eq!(text, "554 5.4.6 Too many hops\r\n");
    assert_eq!(code, 554);
    // The session goes on, and 50 hops are still fine.
    let (code, text) = c.send_mail("a@lan.test", &["b@example.test"], message(50).as_bytes());
    assert_eq!(code, 250, "{text}");
    let got = wait_delivered(dir.path(), 1);
    assert!(String::from_utf8_lossy(&got[0]).contains("Subject: loop"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        delivered(dir.path()).len(),
        1,
        "the looping message was queued"
    );
    assert!(p.log().contains("too many hops"), "{}", p.log());
}

#[test]
fn too_many_errors_or_idle_commands_end_in_421() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    let mut c = p.smtp();
    c.reply();
    for _ in 0..20 {
        c.cmd("BOGUS", 500);
    }
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert!(c.closed());

    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev", 250);
    for _ in 0..99 {
        c.cmd("NOOP", 250);
    }
    let t = c.cmd("NOOP", 421);
    assert!(t.starts_with("421 4.7.0 "), "{t}");
}

#[test]
fn connections_per_client_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "max_connections_per_client = 2");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = from(&p, "127.0.0.2");
        assert_eq!(c.reply().0, 220);
        held.push(c);
    }
    let mut c = from(&p, "127.0.0.2");
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    // Another address is served.
    let mut c = from(&p, "127.0.0.3");
    assert_eq!(c.reply().0, 220);
}

#[test]
fn passwd_prints_a_hash_that_verifies_and_never_takes_argv() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::util::bin())
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(postern::auth::verify(hash, b"correct horse"));
    assert!(!postern::auth::verify(hash, b"correct horse\n"));
    // A password given as an argument is a usage error.
    let out = Command::new(crate::util::bin())
        .args(["passwd", "secret"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn per_client_rates_refuse_the_fast_client_and_serve_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(
        dir.path(),
        "max_connections_per_minute = 3\nmax_messages_per_minute = 1\nmax_recipients_per_minute = 2\n\
         limit_trusted_clients = true",
    );
    // Messages: the second MAIL in a minute gets 450 4.7.1, nothing else changes.
    let mut c = from(&p, "127.0.0.2");
    assert_eq!(c.reply().0, 220);
    c.cmd("EHLO sensor", 250);
    c.cmd("MAIL FROM:<dev@lan.test>", 250);
    // Recipients: two a minute, the third is 450 4.7.1.
    c.cmd("RCPT TO:<a@example.test>", 250);
    c.cmd("RCPT TO:<b@example.test>", 250);
    let t = c.cmd("RCPT TO:<c@example.test>", 450);
    assert!(t.contains("4.7.1"), "{t}");
    c.cmd("RSET", 250);
    let t = c.cmd("MAIL FROM:<dev@lan.test>", 450);
    assert!(t.contains("4.7.1"), "{t}");
    c.cmd("QUIT", 221);
    // Connections: the fourth in a minute gets 421 4.7.0 at once.
    for _ in 0..2 {
        let mut c = from(&p, "127.0.0.2");
        assert_eq!(c.reply().0, 220);
        c.cmd("QUIT", 221);
    }
    let mut c = from(&p, "127.0.0.2");
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.7.0"), "{text}");
    // Another client is not held to the first one's counts.
    let mut c = from(&p, "127.0.0.3");
    assert_eq!(c.reply().0, 220);
    c.cmd("EHLO sensor", 250);
    c.cmd("MAIL FROM:<dev@lan.test>", 250);
    c.cmd("RCPT TO:<a@example.test>", 250);
}

#[test]
fn an_allowed_client_sends_300_alerts_one_connection_each_and_all_get_250() {
    // The defaults (60 connections, 120 messages a minute per client) used
    // to give a device in allow_clients 421 after 60: simple devices do not
    // retry. Trusted clients are exempt unless limit_trusted_clients.
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    for i in 0..300 {
        let mut c = from(&p, "127.0.0.2");
        let (code, text) = c.reply();
        assert_eq!(code, 220, "alert {i}: {text}");
        c.cmd("EHLO ups", 250);
        let (code, text) = c.send_mail(
            "ups@lan.test",
            &["ops@example.test"],
            format!("Subject: on battery {i}\r\n\r\nalert").as_bytes(),
        );
        assert_eq!(code, 250, "alert {i}: {text}");
        c.cmd("QUIT", 221);
    }
    assert_eq!(wait_delivered(dir.path(), 300).len(), 300);
}

#[test]
fn clients_outside_allow_clients_stay_rate_limited_and_a_login_lifts_the_message_rate() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tail = user("scanner", "s3cret-pw", "");
    let p = Postern::start(
        dir.path(),
        &cfg(
            port,
            "allow_plain_auth_clients = [\"127.0.0.4\"]\nmax_connections_per_minute = 3\n\
             max_messages_per_minute = 1",
            "allow_clients = [\"127.0.0.2\"]\nrelay_authenticated = true",
            &tail,
        ),
        port,
    );
    // Logged in: two messages although the rate is one a minute.
    let mut c = from(&p, "127.0.0.4");
    assert_eq!(c.reply().0, 220);
    c.cmd("EHLO scanner", 250);
    c.cmd(&format!("AUTH PLAIN {}", b64(b"\0scanner\0s3cret-pw")), 235);
    for i in 0..2 {
        let (code, text) = c.send_mail(
            "scan@lan.test",
            &["ops@example.test"],
            format!("Subject: scan {i}\r\n\r\npdf").as_bytes(),
        );
        assert_eq!(code, 250, "{text}");
    }
    c.cmd("QUIT", 221);
    // Not logged in, outside allow_clients: the connection rate holds.
    for _ in 0..2 {
        let mut c = from(&p, "127.0.0.4");
        assert_eq!(c.reply().0, 220);
        c.cmd("QUIT", 221);
    }
    let mut c = from(&p, "127.0.0.4");
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    // The allowed client is not.
    for _ in 0..5 {
        let mut c = from(&p, "127.0.0.2");
        assert_eq!(c.reply().0, 220);
        c.cmd("QUIT", 221);
    }
}

#[test]
fn a_new_client_is_served_while_seven_addresses_hoard_idle_connections() {
    // Seven LAN addresses open ten connections each and say nothing; the
    // cap (64 across all) used to lock every other device out until
    // greeting_timeout. At the cap, the oldest silent connection of the
    // address holding the most is closed with 421 to make room.
    let dir = tempfile::tempdir().unwrap();
    let p = plain_server(dir.path(), "");
    let mut hoard: Vec<(String, Smtp)> = Vec::new();
    for a in 10..17 {
        let src = format!("127.0.0.{a}");
        for _ in 0..10 {
            let mut c = from(&p, &src);
            let (code, text) = c.reply();
            // Once each holds as many as the next, there is no more room
            // for any of them.
            if code == 421 {
                assert!(
                    a > 10 && text.contains("Too many connections"),
                    "{src}: {text}"
                );
                continue;
            }
            assert_eq!(code, 220, "{src}: {text}");
            // The first address's connections have spoken: never closed.
            if a == 10 {
                c.cmd("EHLO busy", 250);
            }
            hoard.push((src.clone(), c));
        }
    }
    // A device that was not there before is served at once.
    let mut c = from(&p, "127.0.0.99");
    let (code, text) = c.reply();
    assert_eq!(code, 220, "{text}");
    c.cmd("EHLO printer", 250);
    let (code, text) = c.send_mail(
        "printer@lan.test",
        &["ops@example.test"],
        b"Subject: x\r\n\r\ny",
    );
    assert_eq!(code, 250, "{text}");
    // Room was made by closing silent connections, each with a 421 that
    // says why; the ones that had spoken are all still there.
    let mut closed = 0;
    for (src, c) in &mut hoard {
        if src == "127.0.0.10" {
            c.cmd("NOOP", 250);
            continue;
        }
        c.send_lossy("NOOP");
        let (code, text) = c.reply();
        if code == 421 {
            assert!(
                text.starts_with("421 4.7.0 ") && text.contains("idle"),
                "{text}"
            );
            closed += 1;
        } else {
            assert_eq!(code, 250, "{text}");
        }
    }
    // Closed: as many as were served beyond the 64 places.
    let served = hoard.len() + 1;
    assert_eq!(closed, served - 64, "{}", p.log());
    assert!(closed > 0);
    assert!(p.log().contains("closing an idle connection to make room"));
}

#[test]
fn a_listen_address_that_is_not_up_yet_does_not_stop_the_service() {
    // A Pi whose LAN address comes up after postern starts: the bind used
    // to fail ("is another mail server using that port?") and the service
    // with it. It listens anyway (IP_FREEBIND) and says so; check warns.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // TEST-NET-1: on no machine.
    let config = cfg(port, "", "", "").replace(
        &format!("listen = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]"),
        &format!("listen = [\"127.0.0.1:{port}\", \"192.0.2.55:{port}\"]"),
    );
    assert!(config.contains("192.0.2.55"));
    std::fs::write(dir.path().join("c.toml"), &config).unwrap();
    let out = std::process::Command::new(crate::util::bin())
        .args(["check", "--config", "c.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: listen: 192.0.2.55 is not an address of this machine (yet)"),
        "{err}"
    );
    let mut p = Postern::start(dir.path(), &config, port);
    p.wait_log("192.0.2.55 is not an address of this machine (yet); listening anyway");
    assert!(!p.log().contains("another mail server"), "{}", p.log());
    let mut c = p.smtp();
    assert_eq!(c.reply().0, 220);
    c.cmd("EHLO dev", 250);
}

#[test]
fn check_refuses_a_port_another_program_holds_and_an_unwritable_queue() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    std::fs::create_dir(dir.path().join("ro")).unwrap();
    let config = cfg(port, "", "", "")
        .replace(
            &format!("listen = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]"),
            &format!("listen = [\"127.0.0.1:{port}\"]"),
        )
        .replace("dir = \"queue\"", "dir = \"ro/queue\"");
    std::fs::write(dir.path().join("c.toml"), &config).unwrap();
    let check = |args: &[&str]| {
        let out = std::process::Command::new(crate::util::bin())
            .args(["check", "--config", "c.toml"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(&[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "error: listen: 127.0.0.1:{port} is in use by another program"
        )),
        "{err}"
    );
    drop(held);
    let (ok, err) = check(&[]);
    assert!(ok, "{err}");
    // As the service's user (root can take its ids): a directory it
    // cannot write is an error check used to pass and serve then refused.
    if rustix::process::geteuid().is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            dir.path().join("ro"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let (ok, err) = check(&["--user", "nobody"]);
        assert!(!ok, "{err}");
        assert!(
            err.contains("note: files and directories checked as user nobody"),
            "{err}"
        );
        assert!(
            err.contains("error: [queue] dir: ro/queue cannot be created: ro is not writable"),
            "{err}"
        );
    }
}
