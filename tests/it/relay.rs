//! End to end: client → postern → upstream, over loopback.

use std::net::{IpAddr, SocketAddr};

use crate::util::*;

const MSG: &[u8] = b"From: Printer <printer@lan.test>\r\n\
To: ops@example.test\r\n\
Subject: toner low\r\n\
Date: Mon, 23 Nov 2026 18:00:00 +0000\r\n\
Message-ID: <1@printer.lan.test>\r\n\
\r\n\
Black toner at 5%.\r\n\
.a line that starts with a dot\r\n\
caf\xc3\xa9 8-bit text\r\n";

fn smarthost(port: u16, extra: &str) -> String {
    format!("kind = \"smarthost\"\nhost = \"localhost\"\nport = {port}\n{extra}")
}

/// The message as the upstream got it must be exactly one Received header
/// followed by what the client sent.
fn assert_one_received_then(data: &[u8], original: &[u8]) {
    assert!(
        data.ends_with(original),
        "body changed:\n{}",
        String::from_utf8_lossy(data)
    );
    let prefix = std::str::from_utf8(&data[..data.len() - original.len()]).unwrap();
    assert!(prefix.starts_with("Received: from "), "{prefix}");
    // Folded continuation lines only after the first line.
    for line in prefix.split_terminator("\r\n").skip(1) {
        assert!(
            line.starts_with('\t') || line.starts_with(' '),
            "unexpected header line {line:?}"
        );
    }
}

#[test]
fn relays_through_a_starttls_smarthost_with_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = test_tls(dir.path());
    std::fs::write(dir.path().join("pass"), "s3cret\n").unwrap();
    let up = Upstream::start(UpstreamOpts {
        tls: Some(tls),
        auth: Some(("alerts@example.test".into(), "s3cret".into())),
        ..Default::default()
    });
    let port = free_port();
    let extra = format!(
        "tls = \"starttls\"\nca_file = \"{}\"\nusername = \"alerts@example.test\"\npassword_file = \"pass\"\n",
        ca.display()
    );
    let mut p = Postern::start(
        dir.path(),
        &config(port, &smarthost(up.port, &extra), ""),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    let ehlo = c.cmd("EHLO printer.lan.test", 250);
    for ext in [
        "PIPELINING",
        "SIZE 65536",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing from {ehlo}");
    }
    c.send("MAIL FROM:<printer@lan.test> BODY=8BITMIME");
    assert_eq!(c.reply().0, 250);
    c.cmd("RCPT TO:<ops@example.test>", 250);
    c.cmd("DATA", 354);
    c.raw(&MSG.to_vec().replace_dot_lines());
    c.raw(b".\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    assert!(text.starts_with("250 2.0.0 Ok: queued as "), "{text}");
    c.cmd("QUIT", 221);
    let got = up.next();
    assert!(got.tls, "delivered without TLS");
    assert_eq!(got.auth_user.as_deref(), Some("alerts@example.test"));
    assert_eq!(got.from, "printer@lan.test");
    assert_eq!(got.rcpts, vec!["ops@example.test"]);
    assert_one_received_then(&got.data, MSG);
    let received = String::from_utf8_lossy(&got.data);
    assert!(received.contains("for <ops@example.test>"), "{received}");
    p.wait_log("status=sent");
    assert!(!p.log().contains("s3cret"), "password in the log");
}

trait DotLines {
    fn replace_dot_lines(&self) -> Vec<u8>;
}

impl DotLines for Vec<u8> {
    /// Dot-stuff for the wire, as a client must.
    fn replace_dot_lines(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() + 8);
        let mut at_start = true;
        for &b in self {
            if at_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_start = b == b'\n';
        }
        out
    }
}

#[test]
fn adds_date_and_message_id_only_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &config(port, "kind = \"maildir\"\ndir = \"outbox\"", ""),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    c.cmd("HELO cam", 250);
    let (code, text) = c.send_mail(
        "cam@lan.test",
        &["ops@example.test"],
        b"Subject: motion\r\n\r\nsomeone at the door",
    );
    assert_eq!(code, 250, "{text}");
    let (code, _) = c.send_mail(
        "cam@lan.test",
        &["ops@example.test"],
        MSG.strip_suffix(b"\r\n").unwrap(),
    );
    assert_eq!(code, 250);
    p.wait_log("status=sent");
    let out = dir.path().join("outbox");
    let end = std::time::Instant::now() + DEADLINE;
    let files = loop {
        let mut f: Vec<_> = std::fs::read_dir(&out)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        f.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        if f.len() == 2 || std::time::Instant::now() > end {
            break f;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(files.len(), 2);
    let mut texts: Vec<String> = files
        .iter()
        .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
        .collect();
    texts.sort_by_key(|t| t.contains("toner"));
    let bare = &texts[0];
    assert!(bare.contains("\r\nDate: "), "{bare}");
    assert!(bare.contains("\r\nMessage-ID: <"), "{bare}");
    assert!(bare.contains("Subject: motion\r\n"), "{bare}");
    assert!(bare.ends_with("\r\nsomeone at the door\r\n"), "{bare:?}");
    assert!(bare.contains("with SMTP"), "{bare}");
    let full = &texts[1];
    assert_eq!(full.matches("\r\nDate: ").count(), 1, "{full}");
    assert_eq!(full.matches("Message-ID: ").count(), 1, "{full}");
    assert!(
        full.starts_with(
            "Return-Path: <cam@lan.test>\r\nX-Envelope-To: ops@example.test\r\nReceived: from cam"
        ),
        "{full}"
    );
}

#[test]
fn size_limit_refuses_the_message_and_keeps_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &config(port, "kind = \"maildir\"\ndir = \"outbox\"", ""),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO nas", 250);
    let text = c.cmd("MAIL FROM:<nas@lan.test> SIZE=1000000", 552);
    assert!(text.starts_with("552 5.3.4 "), "{text}");
    // Lines of 900 octets: under the 1000-octet line limit, so only the
    // size limit can refuse this.
    let big = vec![b'x'; 900]
        .into_iter()
        .chain(*b"\r\n")
        .cycle()
        .take(100_000)
        .collect::<Vec<u8>>();
    let (code, text) = c.send_mail("nas@lan.test", &["ops@example.test"], &big);
    assert_eq!(code, 552, "{text}");
    assert!(text.starts_with("552 5.3.4 "), "{text}");
    let (code, text) = c.send_mail(
        "nas@lan.test",
        &["ops@example.test"],
        b"Subject: small\r\n\r\nok",
    );
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT", 221);
    p.wait_log("status=sent");
    assert_eq!(
        std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn policy_refuses_at_the_earliest_point() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let policy = "deny_senders = [\"spammer@bad.test\"]\ndeny_recipients = [\"blocked.test\"]";
    let p = Postern::start(
        dir.path(),
        &config(port, "kind = \"maildir\"\ndir = \"outbox\"", policy),
        port,
    );
    // A client outside allow_clients: 554 at connect, then closed.
    let mut c = Smtp::connect(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Some(IpAddr::from([127, 0, 0, 2])),
    );
    let (code, text) = c.reply();
    assert_eq!(code, 554, "{text}");
    assert!(text.starts_with("554 5.7.1 "), "{text}");
    assert!(c.closed());
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO ups", 250);
    let t = c.cmd("MAIL FROM:<spammer@bad.test>", 550);
    assert!(t.starts_with("550 5.7.1 "), "{t}");
    c.cmd("MAIL FROM:<ups@lan.test>", 250);
    let t = c.cmd("RCPT TO:<x@blocked.test>", 550);
    assert!(t.starts_with("550 5.7.1 "), "{t}");
    c.cmd("RCPT TO:<ops@example.test>", 250);
    c.cmd("RSET", 250);
    c.cmd("QUIT", 221);
}

#[test]
fn queued_mail_survives_a_restart_and_goes_out_when_the_upstream_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let up_port = free_port();
    let port = free_port();
    let cfg = config(port, &smarthost(up_port, "tls = \"none\""), "");
    let mut p = Postern::start(dir.path(), &cfg, port);
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO cron", 250);
    let (code, _) = c.send_mail(
        "root@lan.test",
        &["ops@example.test"],
        b"Subject: backup failed\r\n\r\nsee log",
    );
    assert_eq!(code, 250);
    c.cmd("QUIT", 221);
    p.wait_log("status=deferred");
    assert!(p.stop().success());
    // Upstream comes back while postern is down; postern restarts and sends.
    let up = Upstream::start_on(up_port, UpstreamOpts::default());
    let mut p = Postern::start(dir.path(), &cfg, port);
    let got = up.next();
    assert_eq!(got.rcpts, vec!["ops@example.test"]);
    let text = String::from_utf8_lossy(&got.data);
    assert!(text.contains("\r\nSubject: backup failed\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nsee log\r\n"), "{text}");
    p.wait_log("status=sent");
}

#[test]
fn a_dead_upstream_defers_then_delivers_when_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let up_port = free_port();
    let port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &config(port, &smarthost(up_port, "tls = \"none\""), ""),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO ups", 250);
    let (code, _) = c.send_mail(
        "ups@lan.test",
        &["ops@example.test"],
        b"Subject: on battery\r\n\r\n..a stuffed dot line",
    );
    assert_eq!(code, 250);
    p.wait_log("status=deferred");
    let up = Upstream::start_on(up_port, UpstreamOpts::default());
    let got = up.next();
    assert!(
        got.data.ends_with(b"\r\n\r\n.a stuffed dot line\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got.data)
    );
}

#[test]
fn a_permanent_failure_reports_that_recipient_only() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        reject_rcpt: Some("nobody".into()),
        ..Default::default()
    });
    let port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &config(port, &smarthost(up.port, "tls = \"none\""), ""),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO nas", 250);
    let (code, _) = c.send_mail(
        "nas@lan.test",
        &["ops@example.test", "nobody@example.test"],
        b"Subject: disk\r\n\r\nSMART error",
    );
    assert_eq!(code, 250);
    let first = up.next();
    assert_eq!(first.rcpts, vec!["ops@example.test"]);
    let report = up.next();
    assert_eq!(report.from, "", "a report comes from the null sender");
    assert_eq!(report.rcpts, vec!["nas@lan.test"]);
    let text = String::from_utf8_lossy(&report.data);
    assert!(
        text.contains("Final-Recipient: rfc822; nobody@example.test"),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; ops@example.test"),
        "{text}"
    );
    assert!(text.contains("550 5.1.1"), "{text}");
    assert!(text.contains("Subject: disk"), "{text}");
    p.wait_log("status=bounced");
}

#[test]
fn the_shipped_config_delivers_into_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/postern.toml"))
            .unwrap();
    assert!(shipped.contains("\"127.0.0.1:2525\""));
    let cfg = shipped.replace("\"127.0.0.1:2525\"", &format!("\"127.0.0.1:{port}\""));
    let mut p = Postern::start(dir.path(), &cfg, port);
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO laptop", 250);
    let (code, text) = c.send_mail(
        "me@laptop.test",
        &["someone@example.com"],
        b"Subject: hi\r\n\r\nhello",
    );
    assert_eq!(code, 250, "{text}");
    p.wait_log("status=sent");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("var/outbox"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    assert!(dir.path().join("var/queue").is_dir());
}

#[test]
fn implicit_tls_with_auth_login_and_a_wrong_password_defers() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = test_tls(dir.path());
    std::fs::write(dir.path().join("pass"), "wrong\n").unwrap();
    let up = Upstream::start(UpstreamOpts {
        tls: Some(tls),
        implicit_tls: true,
        login_only: true,
        auth: Some(("alerts@example.test".into(), "c0rrect-h0rse".into())),
        ..Default::default()
    });
    let port = free_port();
    let extra = format!(
        "tls = \"implicit\"\nca_file = \"{}\"\nusername = \"alerts@example.test\"\npassword_file = \"pass\"\n",
        ca.display()
    );
    let mut p = Postern::start(
        dir.path(),
        &config(port, &smarthost(up.port, &extra), ""),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO cron", 250);
    let (code, _) = c.send_mail(
        "cron@lan.test",
        &["ops@example.test"],
        b"Subject: x\r\n\r\ny",
    );
    assert_eq!(code, 250);
    // A wrong password is the admin's to fix: the message waits, no report.
    p.wait_log("status=deferred");
    assert!(p.log().contains("535 5.7.8"), "{}", p.log());
    assert!(!p.log().contains("status=bounced"));
    assert!(up.rx.try_recv().is_err());
    std::fs::write(dir.path().join("pass"), "c0rrect-h0rse\n").unwrap();
    let got = up.next();
    assert!(got.tls);
    assert_eq!(got.auth_user.as_deref(), Some("alerts@example.test"));
    assert!(!p.log().contains("c0rrect-h0rse"), "password in the log");
}

#[test]
fn bare_lf_from_a_legacy_device_arrives_as_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    // The default is to refuse bare newlines; this device's address is
    // listed for normalising.
    let cfg = config(port, &smarthost(up.port, "tls = \"none\""), "").replace(
        "max_recipients = 5",
        "max_recipients = 5\nbare_newline_normalize_clients = [\"127.0.0.1\"]",
    );
    let mut p = Postern::start(dir.path(), &cfg, port);
    let mut c = p.smtp();
    c.reply();
    c.cmd("HELO old-printer", 250);
    c.cmd("MAIL FROM:<mfp@lan.test>", 250);
    c.cmd("RCPT TO:<ops@example.test>", 250);
    c.cmd("DATA", 354);
    c.raw(b"Subject: scan\n\nline one\nline two\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    let got = up.next();
    assert!(
        got.data.ends_with(b"\r\n\r\nline one\r\nline two\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got.data)
    );
    p.wait_log("status=sent");
}

#[test]
fn a_message_past_max_age_fails_with_a_report_instead_of_waiting_forever() {
    let dir = tempfile::tempdir().unwrap();
    let up_port = free_port();
    let port = free_port();
    // The upstream never answers; max_age is two seconds.
    let cfg = config(port, &smarthost(up_port, "tls = \"none\""), "").replace(
        "retry_intervals = [\"1s\"]",
        "retry_intervals = [\"1s\"]\nmax_age = \"2s\"",
    );
    let mut p = Postern::start(dir.path(), &cfg, port);
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO ups", 250);
    let (code, _) = c.send_mail(
        "ups@lan.test",
        &["ops@example.test"],
        b"Subject: x\r\n\r\ny",
    );
    assert_eq!(code, 250);
    p.wait_log("status=expired");
    p.wait_log("failure report queued");
    let log = p.log();
    let expired = log.lines().find(|l| l.contains("status=expired")).unwrap();
    assert!(expired.contains("to=ops@example.test"), "{expired}");
    // The report itself is addressed to the sender; it is a message from <>,
    // so when it expires in turn nobody gets a report about it.
    let reports = log
        .lines()
        .filter(|l| l.contains("failure report queued"))
        .count();
    assert_eq!(reports, 1, "{log}");
}
