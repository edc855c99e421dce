//! Outbound: routes, failover, MX, XOAUTH2, rewriting, aliases,
//! rate shaping, quota replies, TLS requirements, `check --connect` and
//! `send-test`; the real binary against fake upstreams, a fake DNS server
//! and a TLS token endpoint, all on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::*;

const MSG: &[u8] = b"From: Printer <printer@lan.test>\r\nTo: ops@example.test\r\n\
Subject: toner low\r\nMessage-ID: <1@printer.lan.test>\r\n\r\nBlack toner at 5%.\r\n";

/// A config with top-level keys `top` and the tables in `tail`
/// (`[upstream]`, `[[route]]`s, `[aliases]`).
fn conf(port: u16, top: &str, tail: &str) -> String {
    format!(
        r#"hostname = "relay.test"
log_level = "debug"
{top}

[server]
listen = ["127.0.0.1:{port}"]
max_message_size = "10MiB"

[policy]
allow_clients = ["127.0.0.1/32"]

[queue]
dir = "queue"
retry_intervals = ["1s"]

{tail}
"#
    )
}

fn smarthost(up: u16, extra: &str) -> String {
    format!(
        "[upstream]\nkind = \"smarthost\"\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n{extra}\n"
    )
}

/// Send one message; panics unless it is queued.
fn submit(p: &Postern, from: &str, to: &[&str], data: &[u8]) {
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev.lan.test", 250);
    let (code, text) = c.send_mail(from, to, data);
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT", 221);
}

fn wait_log_count(p: &mut Postern, needle: &str, n: usize, bound: Duration) {
    let end = Instant::now() + bound;
    while Instant::now() < end {
        if p.log().matches(needle).count() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("log never said {needle:?} {n} times; log:\n{}", p.log());
}

#[test]
fn failover_to_the_second_host_when_the_first_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let (_dead_socket, dead) = refusing_port();
    let busy = Upstream::start(UpstreamOpts {
        greeting: Some("421 4.3.2 busy, try later".into()),
        ..Default::default()
    });
    let port = free_port();
    let tail = format!(
        "[upstream]\nkind = \"smarthost\"\nhosts = [\"127.0.0.1:{dead}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\"]\ntls = \"none\"\n",
        busy.port, up.port
    );
    let mut p = Postern::start(dir.path(), &conf(port, "", &tail), port);
    submit(&p, "printer@lan.test", &["ops@example.test"], MSG);
    let got = up.next();
    assert_eq!(got.rcpts, vec!["ops@example.test"]);
    p.wait_log("status=sent");
    let log = p.log();
    assert!(log.contains("trying the next one"), "{log}");
    assert!(
        log.contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", up.port)),
        "{log}"
    );
    assert!(busy.rx.try_recv().is_err());
}

#[test]
fn a_4xx_defers_then_the_next_attempt_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        data_fail: Some(Arc::new(AtomicUsize::new(1))),
        ..Default::default()
    });
    let port = free_port();
    let mut p = Postern::start(dir.path(), &conf(port, "", &smarthost(up.port, "")), port);
    submit(&p, "printer@lan.test", &["ops@example.test"], MSG);
    p.wait_log("status=deferred");
    p.wait_log("status=sent");
    let log = p.log();
    assert!(log.contains("451 4.3.0 try again later"), "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
    // The start-up line names the TLS mode in words, not as a Rust value.
    let started = log.lines().find(|l| l.contains("postern started")).unwrap();
    assert!(started.contains("without TLS (plain text)"), "{started}");
    assert!(!started.contains("tls=None"), "{started}");
}

#[test]
fn reports_say_what_happened_in_words_and_each_has_its_own_message_id() {
    let dir = tempfile::tempdir().unwrap();
    // One recipient refused at once, the other put off until the message
    // expires: two reports on one message.
    let up = Upstream::start(UpstreamOpts {
        reject_rcpt: Some("nobody".into()),
        rcpt_reply: Some(("slow".into(), "451 4.3.0 try again later".into())),
        ..Default::default()
    });
    let port = free_port();
    let tail = format!(
        "[upstream]\nkind = \"smarthost\"\nhost = \"localhost\"\nport = {}\ntls = \"none\"\n",
        up.port
    );
    let cfg = conf(port, "", &tail).replace(
        "retry_intervals = [\"1s\"]",
        "retry_intervals = [\"1s\"]\nmax_age = \"3s\"",
    );
    let mut p = Postern::start(dir.path(), &cfg, port);
    submit(
        &p,
        "dev@lan.test",
        &["nobody@example.test", "slow@example.test"],
        MSG,
    );
    let first = up.next();
    let second = up.next();
    p.wait_log("status=expired");
    let (first, second) = (
        String::from_utf8_lossy(&first.data).into_owned(),
        String::from_utf8_lossy(&second.data).into_owned(),
    );
    let message_id = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("Message-ID: "))
            .unwrap_or_default()
            .to_string()
    };
    assert_ne!(message_id(&first), message_id(&second));
    // The refusal: typed diagnostic, the host by name, and words.
    assert!(
        first.contains("Final-Recipient: rfc822; nobody@example.test"),
        "{first}"
    );
    assert!(first.contains("Remote-MTA: dns; localhost\r\n"), "{first}");
    assert!(
        first.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user here\r\n"),
        "{first}"
    );
    assert!(
        first.contains("localhost said: 550 5.1.1 no such user here"),
        "{first}"
    );
    assert!(
        first.contains("What to do: the receiving server says this address does not exist"),
        "{first}"
    );
    // The expiry: a typed Diagnostic-Code too, and what to do.
    assert!(
        second.contains("Final-Recipient: rfc822; slow@example.test"),
        "{second}"
    );
    assert!(second.contains("Status: 4.4.7\r\n"), "{second}");
    assert!(
        second.contains("Diagnostic-Code: smtp; 451 4.3.0 try again later\r\n"),
        "{second}"
    );
    assert!(second.contains("gave up"), "{second}");
    for r in [&first, &second] {
        for l in r.lines().filter(|l| l.starts_with("Diagnostic-Code:")) {
            assert!(l.starts_with("Diagnostic-Code: smtp; "), "{l}");
        }
    }
}

#[test]
fn a_5xx_for_one_of_three_recipients_reports_only_that_one_to_the_postmaster() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        reject_rcpt: Some("nobody".into()),
        ..Default::default()
    });
    let port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &conf(
            port,
            "postmaster = \"pm@example.test\"",
            &smarthost(up.port, ""),
        ),
        port,
    );
    submit(
        &p,
        "root@localhost",
        &["a@example.test", "nobody@example.test", "b@example.test"],
        MSG,
    );
    let got = up.next();
    assert_eq!(got.rcpts, vec!["a@example.test", "b@example.test"]);
    // The report, to the postmaster (not to root@localhost), from <>.
    let report = up.next();
    assert_eq!(report.from, "");
    assert_eq!(report.rcpts, vec!["pm@example.test"]);
    let text = String::from_utf8_lossy(&report.data);
    assert_eq!(text.matches("Final-Recipient:").count(), 1, "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; nobody@example.test"),
        "{text}"
    );
    p.wait_log("failure report queued");
}

#[test]
fn a_long_many_line_or_cut_off_250_after_the_dot_is_delivered_once() {
    // Each of these once counted as an error: the message was deferred and
    // sent again at every retry (43 copies in 10 minutes for the long line).
    let long_line = {
        let mut r = b"250 2.0.0 queued as ".to_vec();
        r.extend(std::iter::repeat_n(b'Q', 100_000));
        r.extend_from_slice(b"\r\n");
        r
    };
    let many_lines = {
        let mut r = Vec::new();
        for i in 0..300 {
            r.extend_from_slice(format!("250-2.0.0 line {i}\r\n").as_bytes());
        }
        r.extend_from_slice(b"250 2.0.0 done\r\n");
        r
    };
    let cases: [(&str, Vec<u8>); 4] = [
        ("long", long_line),
        ("many", many_lines),
        ("cut", b"250-2.0.0 queued\r\n250-more".to_vec()),
        ("garbled", b"250-2.0.0 queued\r\n%%% nonsense\r\n".to_vec()),
    ];
    for (name, reply) in cases {
        let dir = tempfile::tempdir().unwrap();
        let odd = Upstream::start(UpstreamOpts {
            data_reply: Some(reply),
            ..Default::default()
        });
        let port = free_port();
        let mut p = Postern::start(dir.path(), &conf(port, "", &smarthost(odd.port, "")), port);
        submit(&p, "printer@lan.test", &["ops@example.test"], MSG);
        assert_eq!(odd.next().rcpts, vec!["ops@example.test"], "{name}");
        p.wait_log("status=sent");
        // A second message behind it: the next thing the upstream sees is
        // that one, not a copy of the first (retry_intervals is 1s).
        let second = MSG
            .to_vec()
            .into_iter()
            .chain(*b"second\r\n")
            .collect::<Vec<u8>>();
        submit(&p, "printer@lan.test", &["two@example.test"], &second);
        let next = odd.next();
        assert_eq!(
            next.rcpts,
            vec!["two@example.test"],
            "{name}: a copy came first"
        );
        wait_log_count(&mut p, "status=sent", 2, DEADLINE);
        let log = p.log();
        assert!(!log.contains("status=deferred"), "{name}: {log}");
        assert!(odd.rx.try_recv().is_err(), "{name}: a copy");
    }
}

#[test]
fn a_route_whose_upstream_never_greets_delays_only_its_own_mail() {
    // Once, delivery workers waiting for the stuck route's one connection
    // slot were every worker there was: mail for a healthy route waited
    // for the stuck one's timeouts (59-119 s with command_timeout = 30s),
    // and a message that only waited for a slot was "being delivered".
    let dir = tempfile::tempdir().unwrap();
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Accept and say nothing; keep the sockets open.
        for s in mute.incoming() {
            let Ok(s) = s else { return };
            if held_tx.send(s).is_err() {
                return;
            }
        }
    });
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let tail = format!(
        "[[route]]\ndomains = [\"stuck.test\"]\nkind = \"smarthost\"\nhost = \"127.0.0.1\"\nport = {mute_port}\n\
         tls = \"none\"\nmax_connections = 1\ncommand_timeout = \"30s\"\n\n\
         [[route]]\ndomains = [\"*\"]\nkind = \"smarthost\"\nhost = \"127.0.0.1\"\nport = {}\n\
         tls = \"none\"\nmax_connections = 1\n",
        up.port
    );
    let mut p = Postern::start(dir.path(), &conf(port, "", &tail), port);
    let mut ids = Vec::new();
    for n in 0..4 {
        let mut c = p.smtp();
        c.reply();
        c.cmd("EHLO dev.lan.test", 250);
        let (code, text) = c.send_mail("dev@lan.test", &[&format!("x{n}@stuck.test")], MSG);
        assert_eq!(code, 250, "{text}");
        ids.push(text.trim().rsplit(' ').next().unwrap().to_string());
        c.cmd("QUIT", 221);
    }
    // The first one holds the stuck route's only connection.
    let _held = held_rx.recv_timeout(DEADLINE).unwrap();
    submit(&p, "dev@lan.test", &["ops@example.test"], MSG);
    let got = up.next();
    assert_eq!(got.rcpts, vec!["ops@example.test"]);
    p.wait_log("status=sent");
    // A message waiting for the stuck route's slot is only queued: it can
    // be held and deleted.
    let cfg = dir.path().join("postern.toml");
    let cfg = cfg.to_str().unwrap();
    let (ok, out) = run_postern(dir.path(), &["queue", "hold", &ids[2], "--config", cfg]);
    assert!(ok, "{out}");
    let (ok, out) = run_postern(dir.path(), &["queue", "delete", &ids[3], "--config", cfg]);
    assert!(ok, "{out}");
    let (_, list) = run_postern(dir.path(), &["queue", "list", "--config", cfg]);
    assert!(!list.contains(&ids[3]), "{list}");
    assert!(list.contains(&ids[2]), "{list}");
    // The stuck route made one connection: nothing else waits on it.
    assert!(held_rx.try_recv().is_err());
}

#[test]
fn a_report_to_a_utf8_sender_goes_with_smtputf8_and_the_global_types() {
    // Once it went without SMTPUTF8: a strict upstream refused it and, its
    // sender being <>, it was dropped.
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        smtputf8: true,
        reject_rcpt: Some("nobody".into()),
        ..Default::default()
    });
    let port = free_port();
    let mut p = Postern::start(dir.path(), &conf(port, "", &smarthost(up.port, "")), port);
    let sender = "δοκιμή@παράδειγμα.test";
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO dev.lan.test", 250);
    c.cmd(&format!("MAIL FROM:<{sender}> SMTPUTF8"), 250);
    c.cmd("RCPT TO:<nobody@example.test>", 250);
    c.cmd("DATA", 354);
    c.raw("From: Δοκιμή <δοκιμή@παράδειγμα.test>\r\nSubject: ação\r\n\r\nbody\r\n.\r\n".as_bytes());
    assert_eq!(c.reply().0, 250);
    c.cmd("QUIT", 221);
    let report = up.next();
    assert_eq!(report.from, "");
    assert_eq!(report.rcpts, vec![sender]);
    assert!(report.smtputf8, "the report's MAIL lacked SMTPUTF8");
    let text = String::from_utf8_lossy(&report.data);
    assert!(
        text.contains("report-type=global-delivery-status"),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: message/global-delivery-status\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: message/global-headers\r\n\r\n"),
        "{text}"
    );
    assert!(text.contains("Subject: ação\r\n"), "{text}");
    p.wait_log("failure report queued");
}

#[test]
fn a_failed_message_from_null_is_logged_and_copied_to_the_postmaster_once() {
    // Once a report (or a relayed bounce) that failed was dropped without a
    // word: no report on a report, and nothing else either.
    for pm in ["pm@example.test", "nobody-pm@example.test"] {
        let dir = tempfile::tempdir().unwrap();
        let up = Upstream::start(UpstreamOpts {
            reject_rcpt: Some("nobody".into()),
            ..Default::default()
        });
        let port = free_port();
        let mut p = Postern::start(
            dir.path(),
            &conf(
                port,
                &format!("postmaster = \"{pm}\""),
                &smarthost(up.port, ""),
            ),
            port,
        );
        let mut c = p.smtp();
        c.reply();
        c.cmd("EHLO dev.lan.test", 250);
        let (code, text) = c.send_mail("", &["nobody@example.test"], MSG);
        assert_eq!(code, 250, "{text}");
        let id = text.trim().rsplit(' ').next().unwrap().to_string();
        c.cmd("QUIT", 221);
        p.wait_log("a message from <> (a failure report, or a bounce relayed for a device) failed for good");
        let line = p
            .log()
            .lines()
            .find(|l| l.contains("failed for good"))
            .unwrap()
            .to_string();
        assert!(line.contains("ERROR") && line.contains(&id), "{line}");
        if pm == "pm@example.test" {
            // The postmaster's copy, once.
            let copy = up.next();
            assert_eq!(
                (copy.from.as_str(), copy.rcpts.clone()),
                ("", vec![pm.to_string()])
            );
            let text = String::from_utf8_lossy(&copy.data);
            assert!(
                text.contains("Subject: Postmaster Copy: Undelivered Mail from <>"),
                "{text}"
            );
            assert!(
                text.contains("Final-Recipient: rfc822; nobody@example.test"),
                "{text}"
            );
        } else {
            // The copy fails too: logged, and that is the end of it.
            p.wait_log("was for the postmaster: nobody else can be told");
        }
        // A message sent now is the next thing the upstream sees, and no
        // report was queued but the one copy.
        submit(&p, "dev@lan.test", &["ok@example.test"], MSG);
        assert_eq!(up.next().rcpts, vec!["ok@example.test"]);
        p.wait_log("status=sent");
        assert_eq!(
            p.log().matches("failure report queued").count(),
            1,
            "{}",
            p.log()
        );
        assert!(up.rx.try_recv().is_err());
    }
}

#[test]
fn a_message_split_across_two_routes_goes_to_each_upstream_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = Upstream::start(UpstreamOpts::default());
    let b = Upstream::start(UpstreamOpts {
        reject_rcpt: Some("bad".into()),
        ..Default::default()
    });
    let port = free_port();
    let tail = format!(
        "[[route]]\ndomains = [\"a.test\", \".sub.a.test\"]\nkind = \"smarthost\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\n\
         [[route]]\ndomains = [\"*\"]\nkind = \"smarthost\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        a.port, b.port
    );
    let mut p = Postern::start(dir.path(), &conf(port, "", &tail), port);
    submit(
        &p,
        "dev@lan.test",
        &["x@a.test", "y@b.test", "z@deep.sub.a.test", "bad@b.test"],
        MSG,
    );
    let got_a = a.next();
    let got_b = b.next();
    assert_eq!(got_a.rcpts, vec!["x@a.test", "z@deep.sub.a.test"]);
    assert_eq!(got_b.rcpts, vec!["y@b.test"]);
    p.wait_log("failure report queued");
    // Each part keeps its own outcome: three sent, one bounced.
    wait_log_count(&mut p, "status=sent", 3, DEADLINE);
    assert_eq!(p.log().matches("status=bounced").count(), 1);
}

#[test]
fn envelope_and_from_rewriting() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &conf(
            port,
            "",
            &smarthost(
                up.port,
                "rewrite_sender = \"alerts@example.test\"\nrewrite_from = true",
            ),
        ),
        port,
    );
    submit(&p, "printer@lan.test", &["ops@example.test"], MSG);
    let got = up.next();
    assert_eq!(got.from, "alerts@example.test");
    let text = String::from_utf8_lossy(&got.data);
    assert!(
        text.contains(
            "\r\nFrom: Printer <alerts@example.test>\r\nReply-To: <printer@lan.test>\r\n"
        ),
        "{text}"
    );
    assert!(!text.contains("From: Printer <printer@lan.test>"), "{text}");
    assert!(text.contains("\r\n\r\nBlack toner at 5%.\r\n"), "{text}");
    p.wait_log("status=sent");
}

#[test]
fn recipients_aliased_to_one_address_go_upstream_once() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let text = conf(
        port,
        "",
        &format!(
            "{}\n[aliases]\nroot = \"ops@example.test\"\nadmin = \"ops@example.test\"\n",
            smarthost(up.port, "")
        ),
    );
    let mut p = Postern::start(dir.path(), &text, port);
    submit(
        &p,
        "nas@lan.test",
        &[
            "root",
            "admin@localhost",
            "ops@example.test",
            "boss@example.test",
        ],
        MSG,
    );
    let got = up.next();
    assert_eq!(got.rcpts, vec!["ops@example.test", "boss@example.test"]);
    p.wait_log("status=sent");
}

#[test]
fn rewrite_from_cannot_be_bypassed_and_writes_a_valid_from() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &conf(
            port,
            "postmaster = \"pm@example.test\"",
            &smarthost(
                up.port,
                "rewrite_sender = \"alerts@example.test\"\nrewrite_from = true",
            ),
        ),
        port,
    );
    // A second From (here in the obsolete spelling) once went out as the
    // device wrote it: now the message fails, with a report.
    let spoof = b"From: Printer <printer@lan.test>\r\nSubject: s\r\nfrom : ceo@bank.example\r\n\r\nPay.\r\n";
    submit(&p, "printer@lan.test", &["ops@example.test"], spoof);
    let report = up.next();
    assert_eq!(report.rcpts, vec!["pm@example.test"]);
    let text = String::from_utf8_lossy(&report.data);
    assert!(
        text.contains("rewrite_from: the message has 2 From header fields"),
        "{text}"
    );
    // A display name with a comma, and a header section between 64 and
    // 100 KiB (once sent unrewritten): rewritten, and the From parses.
    let mut big = b"From: Smith, John <printer@lan.test>\r\nSubject: big\r\n".to_vec();
    while big.len() < 90 * 1024 {
        big.extend_from_slice(b"X-Pad: 0123456789012345678901234567890123456789\r\n");
    }
    big.extend_from_slice(b"\r\nbody\r\n");
    submit(&p, "printer@lan.test", &["ops@example.test"], &big);
    let got = up.next();
    assert_eq!(got.rcpts, vec!["ops@example.test"]);
    let text = String::from_utf8_lossy(&got.data);
    assert!(
        text.contains(
            "\r\nFrom: \"Smith, John\" <alerts@example.test>\r\nReply-To: <printer@lan.test>\r\n"
        ),
        "{}",
        &text[..400]
    );
    assert!(!text.contains("From: Smith, John"), "{}", &text[..400]);
    let tail = &text[text.len().saturating_sub(120)..];
    assert!(
        tail.contains("postern@relay.test>\r\n\r\nbody\r\n"),
        "{tail:?}"
    );
    // Nothing of the refused message reached the upstream.
    assert!(up.rx.try_recv().is_err());
    p.wait_log("rewrite_from refuses the message");
}

#[test]
fn aliases_apply_at_rcpt_before_policy() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let text = conf(
        port,
        "",
        &format!(
            "{}\n[aliases]\nroot = \"ops@example.test\"\n\"*@cams.lan\" = \"video@example.test\"\n",
            smarthost(up.port, "")
        ),
    )
    .replace(
        "allow_clients = [\"127.0.0.1/32\"]",
        "allow_clients = [\"127.0.0.1/32\"]\nallow_recipients = [\"example.test\"]",
    );
    let mut p = Postern::start(dir.path(), &text, port);
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO nas", 250);
    c.cmd("MAIL FROM:<root@localhost>", 250);
    c.cmd("RCPT TO:<root>", 250);
    c.cmd("RCPT TO:<cam1@cams.lan>", 250);
    // Not aliased and not allowed: policy still refuses.
    c.send("RCPT TO:<someone@elsewhere.test>");
    assert_eq!(c.reply().0 / 100, 5);
    c.cmd("DATA", 354);
    c.raw(MSG);
    c.raw(b".\r\n");
    assert_eq!(c.reply().0, 250);
    let got = up.next();
    assert_eq!(got.rcpts, vec!["ops@example.test", "video@example.test"]);
    p.wait_log("status=sent");
}

#[test]
fn starttls_required_but_not_offered_defers_and_sends_nothing_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let tail = format!(
        "[upstream]\nkind = \"smarthost\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\n",
        up.port
    );
    let mut p = Postern::start(dir.path(), &conf(port, "", &tail), port);
    submit(&p, "printer@lan.test", &["ops@example.test"], MSG);
    p.wait_log("status=deferred");
    assert!(p.log().contains("does not offer STARTTLS"), "{}", p.log());
    assert!(up.rx.recv_timeout(Duration::from_millis(500)).is_err());
}

#[test]
fn certificate_for_the_wrong_name_defers_with_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = test_tls(dir.path());
    // The certificate names localhost and 127.0.0.1; we call it 127.0.0.2.
    let up = Upstream::start_on_ip(
        "127.0.0.2".parse().unwrap(),
        0,
        UpstreamOpts {
            tls: Some(tls),
            ..Default::default()
        },
    );
    let port = free_port();
    let tail = format!(
        "[upstream]\nkind = \"smarthost\"\nhost = \"127.0.0.2\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n",
        up.port,
        ca.display()
    );
    let mut p = Postern::start(dir.path(), &conf(port, "", &tail), port);
    submit(&p, "printer@lan.test", &["ops@example.test"], MSG);
    p.wait_log("status=deferred");
    let log = p.log();
    assert!(log.contains("TLS with 127.0.0.2 failed"), "{log}");
    assert!(log.contains("certificate not valid for name"), "{log}");
    assert!(up.rx.try_recv().is_err());
}

#[test]
fn certificate_not_yet_valid_is_a_clock_deferral_not_a_bounce() {
    // What a board without an RTC sees after boot: every certificate starts
    // in "the future". Here the certificate really does (2099), which is
    // the same check from the other side.
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = test_tls_with(dir.path(), |p| {
        p.not_before = rcgen::date_time_ymd(2099, 1, 1);
        p.not_after = rcgen::date_time_ymd(2100, 1, 1);
    });
    let up = Upstream::start(UpstreamOpts {
        tls: Some(tls),
        ..Default::default()
    });
    let port = free_port();
    let tail = format!(
        "[upstream]\nkind = \"smarthost\"\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n",
        up.port,
        ca.display()
    );
    let mut p = Postern::start(dir.path(), &conf(port, "", &tail), port);
    submit(&p, "printer@lan.test", &["ops@example.test"], MSG);
    p.wait_log("status=deferred");
    let log = p.log();
    assert!(log.contains("clock not synchronised"), "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(up.rx.try_recv().is_err());
}

#[test]
fn eight_bit_content_to_a_hop_without_8bitmime_fails_with_a_report_not_blindly() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        no_8bitmime: true,
        ..Default::default()
    });
    let port = free_port();
    let p = Postern::start(dir.path(), &conf(port, "", &smarthost(up.port, "")), port);
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO printer.lan.test", 250);
    c.cmd("MAIL FROM:<printer@lan.test> BODY=8BITMIME", 250);
    c.cmd("RCPT TO:<ops@example.test>", 250);
    c.cmd("DATA", 354);
    c.raw("Subject: Druckerstatus\r\n\r\nTonerfüllstand niedrig\r\n.\r\n".as_bytes());
    assert_eq!(c.reply().0, 250);
    c.cmd("QUIT", 221);
    // The only thing the old hop gets is the failure report, from <>.
    let report = up.next();
    assert_eq!(report.from, "");
    assert_eq!(report.rcpts, vec!["printer@lan.test"]);
    let text = String::from_utf8_lossy(&report.data);
    assert!(text.contains("8BITMIME"), "{text}");
    assert!(
        up.rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "8-bit message sent to a hop without 8BITMIME"
    );
}

#[test]
fn quota_reply_is_a_deferral_not_a_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        rcpt_reply: Some((
            "ops".into(),
            "550 5.4.5 Daily user sending limit exceeded".into(),
        )),
        ..Default::default()
    });
    let port = free_port();
    let mut p = Postern::start(dir.path(), &conf(port, "", &smarthost(up.port, "")), port);
    submit(&p, "printer@lan.test", &["ops@example.test"], MSG);
    wait_log_count(&mut p, "status=deferred", 2, DEADLINE);
    let log = p.log();
    assert!(log.contains("quota or rate limit: deferred"), "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(!log.contains("failure report"), "{log}");
}

#[test]
fn rate_shaping_holds_mail_and_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &conf(port, "", &smarthost(up.port, "max_messages_per_minute = 1")),
        port,
    );
    submit(&p, "a@lan.test", &["ops@example.test"], MSG);
    submit(&p, "b@lan.test", &["ops@example.test"], MSG);
    let first = up.next();
    p.wait_log("status=held");
    // Held is not an attempt: nothing deferred, nothing else sent yet.
    assert!(!p.log().contains("status=deferred"), "{}", p.log());
    assert!(up.rx.recv_timeout(Duration::from_secs(5)).is_err());
    // The minute's window frees up and the second goes.
    let second = up
        .rx
        .recv_timeout(Duration::from_secs(75))
        .expect("the held message was not released");
    let mut froms = vec![first.from, second.from];
    froms.sort();
    assert_eq!(froms, vec!["a@lan.test", "b@lan.test"]);
}

#[test]
fn route_size_limit_is_advertised_and_enforced_at_mail() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        size: Some(90_000),
        ..Default::default()
    });
    let port = free_port();
    let mut p = Postern::start(
        dir.path(),
        &conf(
            port,
            "",
            &smarthost(up.port, "max_message_size = \"100KiB\""),
        ),
        port,
    );
    // The route's limit, less room for the fields postern adds.
    let room = postern::server::intake::added_bound("relay.test");
    let mut c = p.smtp();
    c.reply();
    let ehlo = c.cmd("EHLO dev", 250);
    assert!(
        ehlo.contains(&format!("SIZE {}\r\n", 102_400 - room)),
        "{ehlo}"
    );
    c.send("MAIL FROM:<a@lan.test> SIZE=200000");
    let (code, text) = c.reply();
    assert_eq!(code, 552, "{text}");
    c.cmd("QUIT", 221);
    // After a delivery the upstream's own, smaller SIZE is known and used.
    submit(&p, "a@lan.test", &["ops@example.test"], MSG);
    up.next();
    p.wait_log("status=sent");
    let mut c = p.smtp();
    c.reply();
    let ehlo = c.cmd("EHLO dev", 250);
    assert!(
        ehlo.contains(&format!("SIZE {}\r\n", 90_000 - room)),
        "{ehlo}"
    );
}

/// `len` octets of message as the listener counts them (its last CRLF
/// included), with no Date or Message-ID: postern adds both.
fn message_of(len: usize) -> Vec<u8> {
    let mut m = b"Subject: exactly at SIZE\r\n\r\n".to_vec();
    let rest = len - m.len() - 2;
    for _ in 0..rest / 902 {
        m.extend(std::iter::repeat_n(b'x', 900));
        m.extend_from_slice(b"\r\n");
    }
    m.extend(std::iter::repeat_n(b'x', rest % 902));
    m
}

#[test]
fn a_message_exactly_at_the_advertised_size_reaches_the_upstream_within_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let limit = 102_400;
    let p = Postern::start(
        dir.path(),
        &conf(
            port,
            "",
            &smarthost(up.port, "max_message_size = \"100KiB\""),
        ),
        port,
    );
    let mut c = p.smtp();
    c.reply();
    let ehlo = c.cmd("EHLO dev", 250);
    let size: usize = ehlo
        .lines()
        .find_map(|l| l.strip_prefix("250-SIZE "))
        .and_then(|v| v.trim().parse().ok())
        .expect("SIZE advertised");
    // One octet more than SIZE: refused at the dot, never 250 then a bounce.
    let (code, text) = c.send_mail("a@lan.test", &["ops@example.test"], &message_of(size + 1));
    assert!(text.starts_with("552 5.3.4 "), "{text}");
    assert_eq!(code, 552);
    // Exactly SIZE: accepted, and with Received, Date and Message-ID added
    // it still fits the upstream's limit.
    let (code, text) = c.send_mail("a@lan.test", &["ops@example.test"], &message_of(size));
    assert_eq!(code, 250, "{text}");
    let got = up.next();
    let text = String::from_utf8_lossy(&got.data);
    assert!(
        text.starts_with("Received: ") && text.contains("\r\nMessage-ID: <"),
        "{}",
        &text[..200]
    );
    assert!(
        got.data.len() <= limit,
        "{} octets reached an upstream whose limit is {limit}",
        got.data.len()
    );
}

// ---------------------------------------------------------------------------
// MX delivery against a DNS server the test controls.

/// A fake DNS server: mx.test MX 10 mail.mx.test (A 127.0.0.1); nomx.test
/// A 127.0.0.1 and no MX; nullmx.test MX 0 "."; servfail.test SERVFAIL;
/// dual.test AAAA ::1 and A 127.0.0.1.
fn fake_dns() -> SocketAddr {
    use hickory_resolver::proto::op::{Message, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, AAAA, MX};
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.clone());
            let Some(question) = q.queries.first() else {
                continue;
            };
            let owner = question.name.clone();
            let rec = |d: RData| Record::from_rdata(owner.clone(), 60, d);
            let name = question.name.to_ascii().to_ascii_lowercase();
            let lo = A("127.0.0.1".parse().unwrap());
            match (name.as_str(), question.query_type) {
                ("mx.test.", RecordType::MX) => {
                    r.add_answer(rec(RData::MX(MX::new(
                        10,
                        Name::from_ascii("mail.mx.test.").unwrap(),
                    ))));
                }
                ("mail.mx.test." | "nomx.test." | "dual.test.", RecordType::A) => {
                    r.add_answer(rec(RData::A(lo)));
                }
                ("dual.test.", RecordType::AAAA) => {
                    r.add_answer(rec(RData::AAAA(AAAA("::1".parse().unwrap()))));
                }
                ("nullmx.test.", RecordType::MX) => {
                    r.add_answer(rec(RData::MX(MX::new(0, Name::root()))));
                }
                ("servfail.test.", _) => r.metadata.response_code = ResponseCode::ServFail,
                (
                    "mx.test." | "mail.mx.test." | "nomx.test." | "nullmx.test." | "dual.test.",
                    _,
                ) => {}
                _ => r.metadata.response_code = ResponseCode::NXDomain,
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer);
        }
    });
    addr
}

#[test]
fn mx_delivery_null_mx_no_mx_and_servfail() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let dns = fake_dns();
    let port = free_port();
    let tail = format!("[upstream]\nkind = \"mx\"\nport = {}\n", up.port);
    let mut p = Postern::start(
        dir.path(),
        &conf(port, &format!("dns_servers = [\"{dns}\"]"), &tail),
        port,
    );
    submit(
        &p,
        "dev@lan.test",
        &[
            "u@mx.test",
            "u@nomx.test",
            "u@nullmx.test",
            "u@servfail.test",
        ],
        MSG,
    );
    // One connection per domain: two messages arrive.
    let mut got: Vec<String> = vec![up.next(), up.next()]
        .into_iter()
        .flat_map(|r| r.rcpts)
        .collect();
    got.sort();
    assert_eq!(got, vec!["u@mx.test", "u@nomx.test"]);
    p.wait_log("status=bounced");
    p.wait_log("status=deferred");
    let log = p.log();
    assert!(
        log.contains("nullmx.test accepts no mail (null MX record, RFC 7505)"),
        "{log}"
    );
    assert!(log.contains("relay=mail.mx.test[127.0.0.1]"), "{log}");
    let deferred = log.lines().find(|l| l.contains("status=deferred")).unwrap();
    assert!(deferred.contains("u@servfail.test"), "{deferred}");
    assert!(
        deferred.contains("SERVFAIL")
            || deferred.contains("Server Failure")
            || deferred.contains("DNS"),
        "{deferred}"
    );
}

#[test]
fn ip_family_any_falls_back_and_ipv6_only_defers() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let dns = fake_dns();
    let port = free_port();
    // dual.test has ::1 (nothing listens there) and 127.0.0.1.
    let tail = format!(
        "[[route]]\ndomains = [\"v6.test\"]\nkind = \"smarthost\"\nhost = \"dual.test\"\nport = {p}\ntls = \"none\"\nip_family = \"ipv6\"\n\n\
         [[route]]\ndomains = [\"*\"]\nkind = \"smarthost\"\nhost = \"dual.test\"\nport = {p}\ntls = \"none\"\n",
        p = up.port
    );
    let mut p = Postern::start(
        dir.path(),
        &conf(port, &format!("dns_servers = [\"{dns}\"]"), &tail),
        port,
    );
    submit(&p, "dev@lan.test", &["ops@example.test", "x@v6.test"], MSG);
    let got = up.next();
    assert_eq!(got.rcpts, vec!["ops@example.test"]);
    p.wait_log("status=sent");
    p.wait_log("status=deferred");
    let log = p.log();
    assert!(
        log.contains(&format!("relay=dual.test[127.0.0.1]:{}", up.port)),
        "{log}"
    );
    assert!(
        log.contains("connected after falling back to another address"),
        "{log}"
    );
    let deferred = log.lines().find(|l| l.contains("status=deferred")).unwrap();
    assert!(
        deferred.contains("x@v6.test") && deferred.contains("[::1]"),
        "{deferred}"
    );
}

// ---------------------------------------------------------------------------
// XOAUTH2 with a token endpoint over TLS.

struct TokenEndpoint {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

fn token_endpoint(tls: Arc<rustls::ServerConfig>, lifetime: u64) -> TokenEndpoint {
    token_endpoint_saying(tls, lifetime.to_string())
}

/// A token endpoint whose replies carry `expires_in` as the JSON text given.
fn token_endpoint_saying(tls: Arc<rustls::ServerConfig>, expires_in: String) -> TokenEndpoint {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let reqs = requests.clone();
    std::thread::spawn(move || {
        for (n, s) in l.incoming().enumerate() {
            let Ok(s) = s else { return };
            let conn = rustls::ServerConnection::new(tls.clone()).unwrap();
            let mut t = rustls::StreamOwned::new(conn, s);
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let body = loop {
                let Ok(k) = t.read(&mut tmp) else { break None };
                if k == 0 {
                    break None;
                }
                buf.extend_from_slice(&tmp[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if text.len() >= i + 4 + len {
                        break Some(text);
                    }
                }
            };
            let Some(req) = body else { continue };
            reqs.lock().unwrap().push(req);
            // A long token, as Microsoft's are: no line-length limit may cut it.
            let token = format!("tok-{}-{}", n + 1, "x".repeat(3000));
            let json = format!(
                "{{\"access_token\":\"{token}\",\"expires_in\":{expires_in},\"token_type\":\"Bearer\"}}"
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
            let _ = t.write_all(resp.as_bytes());
            let _ = t.flush();
            t.conn.send_close_notify();
            let _ = t.flush();
        }
    });
    TokenEndpoint { port, requests }
}

#[test]
fn xoauth2_with_a_refresh_token_and_refresh_before_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = test_tls(dir.path());
    let ep = token_endpoint(tls.clone(), 4);
    std::fs::write(dir.path().join("refresh"), "rt-secret-1\n").unwrap();
    std::fs::write(dir.path().join("client-secret"), "cs-secret-1\n").unwrap();
    let up = Upstream::start(UpstreamOpts {
        tls: Some(tls),
        auth: Some(("alerts@example.test".into(), String::new())),
        xoauth2: true,
        ..Default::default()
    });
    let port = free_port();
    let extra = format!(
        "tls = \"starttls\"\nca_file = \"{ca}\"\nusername = \"alerts@example.test\"\nauth = \"xoauth2\"\n\
         oauth_token_url = \"https://127.0.0.1:{ep}/token\"\noauth_client_id = \"client-1\"\n\
         oauth_client_secret_file = \"client-secret\"\noauth_refresh_token_file = \"refresh\"\n\
         oauth_scope = \"https://mail.google.com/\"\noauth_ca_file = \"{ca}\"\nmessages_per_connection = 1\n",
        ca = ca.display(),
        ep = ep.port
    );
    let tail = format!(
        "[upstream]\nkind = \"smarthost\"\nhost = \"localhost\"\nport = {}\n{extra}",
        up.port
    );
    let mut p = Postern::start(dir.path(), &conf(port, "", &tail), port);
    submit(&p, "a@lan.test", &["ops@example.test"], MSG);
    let first = up.next();
    let t1 = Instant::now();
    assert!(first.tls);
    let tok1 = first.auth_token.unwrap();
    assert!(
        tok1.starts_with("tok-1-") && tok1.len() > 3000,
        "{}",
        tok1.len()
    );
    // The token lives 4 s and is refreshed at half its life: after 2 s the
    // next message must bring a new one, before the old one expires.
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(t1.elapsed()));
    submit(&p, "b@lan.test", &["ops@example.test"], MSG);
    let second = up.next();
    assert!(second.auth_token.unwrap().starts_with("tok-2-"));
    let reqs = ep.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    for r in &reqs {
        assert!(r.starts_with("POST /token HTTP/1.1\r\n"), "{r}");
        assert!(r.contains("grant_type=refresh_token"), "{r}");
        assert!(r.contains("refresh_token=rt-secret-1"), "{r}");
        assert!(
            r.contains("client_id=client-1") && r.contains("client_secret=cs-secret-1"),
            "{r}"
        );
    }
    p.wait_log("status=sent");
    let log = p.log();
    for secret in ["rt-secret-1", "cs-secret-1", "tok-1-", "tok-2-"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// A route with XOAUTH2 through `ep`, towards `up`.
fn xoauth2_route(dir: &std::path::Path, ca: &std::path::Path, ep: u16, up: u16) -> String {
    std::fs::write(dir.join("refresh"), "rt-secret-1\n").unwrap();
    std::fs::write(dir.join("client-secret"), "cs-secret-1\n").unwrap();
    format!(
        "[upstream]\nkind = \"smarthost\"\nhost = \"localhost\"\nport = {up}\n\
         tls = \"starttls\"\nca_file = \"{ca}\"\nusername = \"alerts@example.test\"\nauth = \"xoauth2\"\n\
         oauth_token_url = \"https://127.0.0.1:{ep}/token\"\noauth_client_id = \"client-1\"\n\
         oauth_client_secret_file = \"client-secret\"\noauth_refresh_token_file = \"refresh\"\n\
         oauth_ca_file = \"{ca}\"\nmessages_per_connection = 1\n",
        ca = ca.display(),
    )
}

#[test]
fn a_token_lifetime_near_u64_max_is_capped_not_a_crash() {
    // expires_in = 10^19 once overflowed `Instant + Duration` in the
    // delivery task (an abort in the release build, again at every retry).
    for expires_in in ["10000000000000000000", "\"10000000000000000000\""] {
        let dir = tempfile::tempdir().unwrap();
        let (ca, tls) = test_tls(dir.path());
        let ep = token_endpoint_saying(tls.clone(), expires_in.into());
        let up = Upstream::start(UpstreamOpts {
            tls: Some(tls),
            auth: Some(("alerts@example.test".into(), String::new())),
            xoauth2: true,
            ..Default::default()
        });
        let port = free_port();
        let tail = xoauth2_route(dir.path(), &ca, ep.port, up.port);
        let mut p = Postern::start(dir.path(), &conf(port, "", &tail), port);
        submit(&p, "a@lan.test", &["ops@example.test"], MSG);
        assert!(up.next().auth_token.unwrap().starts_with("tok-1-"));
        // The token is cached (for at most a day), not fetched again.
        submit(&p, "b@lan.test", &["ops@example.test"], MSG);
        assert!(up.next().auth_token.unwrap().starts_with("tok-1-"));
        assert_eq!(ep.requests.lock().unwrap().len(), 1);
        wait_log_count(&mut p, "status=sent", 2, DEADLINE);
        assert!(p.log().contains("expires_in=86400"), "{}", p.log());
    }
}

// ---------------------------------------------------------------------------
// The operator's tools.

fn run_postern(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_connect_shows_the_conversation_masked_and_says_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = test_tls(dir.path());
    std::fs::write(dir.path().join("pass"), "s3cret\n").unwrap();
    let up = Upstream::start(UpstreamOpts {
        tls: Some(tls),
        auth: Some(("alerts@example.test".into(), "s3cret".into())),
        ..Default::default()
    });
    let tail = format!(
        "[upstream]\nkind = \"smarthost\"\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n\
         username = \"alerts@example.test\"\npassword_file = \"pass\"\n",
        up.port,
        ca.display()
    );
    std::fs::write(dir.path().join("c.toml"), conf(free_port(), "", &tail)).unwrap();
    let (ok, out) = run_postern(dir.path(), &["check", "--config", "c.toml", "--connect"]);
    assert!(ok, "{out}");
    for want in [
        "S: 220 upstream.test",
        "C: STARTTLS",
        "-- TLS TLSv1_3",
        "-- certificate #0: subject CN=",
        "C: AUTH PLAIN ********",
        "S: 235",
        "   OK",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(!out.contains("s3cret"), "{out}");
    assert!(up.rx.try_recv().is_err(), "check --connect sent mail");
    // A wrong password: exit 1, and it says the login failed.
    std::fs::write(dir.path().join("pass"), "wrong\n").unwrap();
    let (ok, out) = run_postern(dir.path(), &["check", "--config", "c.toml", "--connect"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAILED: auth: AUTH PLAIN refused: 535 5.7.8"),
        "{out}"
    );
    assert!(out.contains("hint: bad credentials"), "{out}");
    // Nothing listening: a connect failure.
    let dead = free_port();
    std::fs::write(
        dir.path().join("d.toml"),
        conf(free_port(), "", &smarthost(dead, "")),
    )
    .unwrap();
    let (ok, out) = run_postern(dir.path(), &["check", "--config", "d.toml", "--connect"]);
    assert!(!ok && out.contains("FAILED: connect:"), "{out}");
}

#[test]
fn check_connect_says_each_failure_once_and_in_words() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listening: said once, with what to check.
    let dead = free_port();
    std::fs::write(
        dir.path().join("d.toml"),
        conf(free_port(), "", &smarthost(dead, "")),
    )
    .unwrap();
    let (ok, out) = run_postern(dir.path(), &["check", "--config", "d.toml", "--connect"]);
    assert!(!ok, "{out}");
    assert_eq!(out.matches("refused").count(), 1, "{out}");
    assert!(out.contains("check host and port"), "{out}");
    // Implicit TLS to a port that speaks plain SMTP: the likely mix-up,
    // said once, not rustls' name for it.
    let plain = Upstream::start(UpstreamOpts::default());
    let tail = format!(
        "[upstream]\nkind = \"smarthost\"\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\n",
        plain.port
    );
    std::fs::write(dir.path().join("i.toml"), conf(free_port(), "", &tail)).unwrap();
    let (ok, out) = run_postern(dir.path(), &["check", "--config", "i.toml", "--connect"]);
    assert!(!ok, "{out}");
    let said =
        "the server did not start TLS: is this port STARTTLS (587) rather than implicit TLS (465)?";
    assert_eq!(out.matches(said).count(), 1, "{out}");
    assert!(!out.contains("InvalidContentType"), "{out}");
    // Two hosts, both dead: each reason once, and a summary that does not
    // repeat them.
    let (_a, a) = refusing_port();
    let (_b, b) = refusing_port();
    let tail = format!(
        "[upstream]\nkind = \"smarthost\"\nhosts = [\"127.0.0.1:{a}\", \"127.0.0.1:{b}\"]\ntls = \"none\"\n"
    );
    std::fs::write(dir.path().join("h.toml"), conf(free_port(), "", &tail)).unwrap();
    let (ok, out) = run_postern(dir.path(), &["check", "--config", "h.toml", "--connect"]);
    assert!(!ok, "{out}");
    for port in [a, b] {
        let said = format!("connect to 127.0.0.1:{port} failed");
        assert_eq!(out.matches(&said).count(), 1, "{out}");
    }
    assert!(
        out.contains("FAILED: every host failed (each one's reason is above)"),
        "{out}"
    );
}

#[test]
fn send_test_delivers_through_the_route_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    std::fs::write(
        dir.path().join("c.toml"),
        conf(
            free_port(),
            "",
            &format!(
                "{}\n[aliases]\nroot = \"ops@example.test\"\n",
                smarthost(up.port, "")
            ),
        ),
    )
    .unwrap();
    let (ok, out) = run_postern(
        dir.path(),
        &[
            "send-test",
            "--config",
            "c.toml",
            "--to",
            "root",
            "--wait",
            "20s",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("attempt: to=<ops@example.test> status=sent"),
        "{out}"
    );
    let got = up.next();
    assert_eq!(got.rcpts, vec!["ops@example.test"]);
    assert!(String::from_utf8_lossy(&got.data).contains("Subject: postern test message"));
    // Nothing listening: it says so and exits 1 once the wait is over.
    let dead = free_port();
    std::fs::write(
        dir.path().join("d.toml"),
        conf(free_port(), "", &smarthost(dead, "")),
    )
    .unwrap();
    let (ok, out) = run_postern(
        dir.path(),
        &[
            "send-test",
            "--config",
            "d.toml",
            "--to",
            "x@example.test",
            "--wait",
            "2s",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("status=deferred") && out.contains("still queued"),
        "{out}"
    );
    // Words, not a Rust enum's name.
    assert!(!out.contains("StillQueued"), "{out}");
    assert!(out.contains("not delivered yet: "), "{out}");
}

#[test]
fn credentials_go_in_clear_text_only_with_allow_plaintext_auth_to_a_private_host() {
    // A password (or an XOAUTH2 bearer token) over tls = "none" used to
    // pass check and cross the network in clear text.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pass"), "s3cret\n").unwrap();
    let up = Upstream::start(UpstreamOpts {
        auth: Some(("dev@relay.test".into(), "s3cret".into())),
        ..Default::default()
    });
    let port = free_port();
    let creds = "username = \"dev@relay.test\"\npassword_file = \"pass\"\n";
    std::fs::write(
        dir.path().join("plain.toml"),
        conf(port, "", &smarthost(up.port, creds)),
    )
    .unwrap();
    let (ok, out) = run_postern(dir.path(), &["check", "--config", "plain.toml"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("in clear text") && out.contains("allow_plaintext_auth = true"),
        "{out}"
    );
    // Said explicitly, for a hop on this machine: allowed, with a warning.
    let cfg = conf(
        port,
        "",
        &smarthost(up.port, &format!("{creds}allow_plaintext_auth = true\n")),
    );
    std::fs::write(dir.path().join("trusted.toml"), &cfg).unwrap();
    let (ok, out) = run_postern(dir.path(), &["check", "--config", "trusted.toml"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("trusted.toml:") && out.contains(": warning: credentials go to 127.0.0.1:"),
        "{out}"
    );
    // Never to a public address, even when said.
    let public = cfg.replace("host = \"127.0.0.1\"", "host = \"192.0.32.10\"");
    std::fs::write(dir.path().join("public.toml"), public).unwrap();
    let (ok, out) = run_postern(dir.path(), &["check", "--config", "public.toml"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("192.0.32.10 is not a loopback or private address"),
        "{out}"
    );
    // And the trusted hop works.
    let p = Postern::start(dir.path(), &cfg, port);
    submit(&p, "dev@lan.test", &["ops@example.test"], MSG);
    let got = up.rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(got.auth_user.as_deref(), Some("dev@relay.test"));
}

/// An upstream that greets and answers EHLO, then never answers AUTH.
fn silent_after_auth() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let _ = s.write_all(b"220 stuck.test ESMTP\r\n");
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        use std::io::BufRead;
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.to_ascii_uppercase().starts_with("EHLO") {
                let _ = s.write_all(b"250-stuck.test\r\n250 AUTH PLAIN LOGIN\r\n");
            }
            // AUTH: no answer, ever; the client gives up.
            line.clear();
        }
    });
    (port, t)
}

#[test]
fn check_connect_prints_each_step_as_it_happens_and_names_the_one_that_hangs() {
    // An upstream that stopped answering after AUTH kept check --connect
    // silent for over three minutes: output came at the end, and the wait
    // was the delivery timeout (5 minutes a reply).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pass"), "s3cret\n").unwrap();
    let (port, _t) = silent_after_auth();
    let extra =
        "username = \"dev@relay.test\"\npassword_file = \"pass\"\nallow_plaintext_auth = true\n";
    std::fs::write(
        dir.path().join("c.toml"),
        conf(free_port(), "", &smarthost(port, extra)),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = std::process::Command::new(bin())
        .args(["check", "--config", "c.toml", "--connect"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // The AUTH line arrives while the check is still waiting for its reply.
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push(l.clone());
        if l.contains("C: AUTH PLAIN ********") {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("S: 220 stuck.test")),
        "{seen:#?}"
    );
    assert!(
        child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(5),
        "the AUTH line came only at the end ({:?}): {seen:#?}",
        started.elapsed()
    );
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let took = started.elapsed();
    assert!(!status.success());
    let last = rest.join("\n");
    assert!(
        last.contains("FAILED: timeout: timeout waiting for AUTH"),
        "{last}"
    );
    // The step is given up after a short time, not the default 5 minutes.
    assert!(
        took < postern::delivery::probe::STEP_TIMEOUT + Duration::from_secs(10),
        "{took:?}"
    );
}
