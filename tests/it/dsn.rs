//! RFC 3461 DSN through the real binary: the listener takes RET, ENVID,
//! NOTIFY and ORCPT; an upstream that offers DSN gets them passed on; one
//! that does not leaves the confirmation (`Action: relayed`) to postern;
//! NOTIFY=NEVER silences failure reports; RET=FULL returns the message.

use std::time::{Duration, Instant};

use crate::util::*;

/// A daemon in `dir` relaying to `up` (plain SMTP), reports to the sender.
fn start(dir: &std::path::Path, up: u16, extra_queue: &str) -> Postern {
    let port = free_port();
    let cfg = config(
        port,
        &format!("kind = \"smarthost\"\nhost = \"localhost\"\nport = {up}\ntls = \"none\""),
        "",
    )
    .replace(
        "retry_intervals = [\"1s\"]",
        &format!("retry_intervals = [\"1s\"]\n{extra_queue}"),
    );
    Postern::start(dir, &cfg, port)
}

/// One message with DSN parameters; `rcpts` are `(address, RCPT params)`.
fn submit(p: &Postern, mail_params: &str, rcpts: &[(&str, &str)], body: &str) {
    let mut c = p.smtp();
    c.reply();
    let ehlo = c.cmd("EHLO sensor", 250);
    assert!(
        ehlo.contains("250-DSN\r\n") || ehlo.ends_with("250 DSN\r\n"),
        "{ehlo}"
    );
    c.cmd(&format!("MAIL FROM:<dev@lan.test> {mail_params}"), 250);
    for (to, params) in rcpts {
        c.cmd(&format!("RCPT TO:<{to}> {params}"), 250);
    }
    c.cmd("DATA", 354);
    c.raw(body.as_bytes());
    c.raw(b"\r\n.\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT", 221);
}

/// Wait until `postern queue list` says the queue is empty: every report
/// there was to make is made and sent.
fn wait_queue_empty(dir: &std::path::Path) {
    let end = Instant::now() + DEADLINE;
    loop {
        let out = std::process::Command::new(bin())
            .args(["queue", "list", "--config"])
            .arg(dir.join("postern.toml"))
            .current_dir(dir)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout) == "queue is empty\n" {
            return;
        }
        assert!(Instant::now() < end, "queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const BODY: &str = "Subject: dsn test\r\nMessage-ID: <t1@lan.test>\r\n\r\nthe body line";

#[test]
fn the_parameters_go_on_to_an_upstream_that_offers_dsn_and_it_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        dsn: true,
        ..Default::default()
    });
    let p = start(dir.path(), up.port, "");
    submit(
        &p,
        "RET=HDRS ENVID=QQ+2B314",
        &[(
            "ops@example.test",
            "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ops+40example.test",
        )],
        BODY,
    );
    let got = up.next();
    assert!(got.mail_line.contains(" RET=HDRS"), "{}", got.mail_line);
    assert!(
        got.mail_line.contains(" ENVID=QQ+2B314"),
        "{}",
        got.mail_line
    );
    assert!(
        got.rcpt_lines[0].contains(" NOTIFY=SUCCESS,FAILURE")
            && got.rcpt_lines[0].contains(" ORCPT=rfc822;ops+40example.test"),
        "{:?}",
        got.rcpt_lines
    );
    // The confirmation is the upstream's to send: none from postern.
    wait_queue_empty(dir.path());
    assert!(up.rx.try_recv().is_err(), "postern sent a report too");
    assert!(!p.log().contains("success report queued"), "{}", p.log());
}

#[test]
fn an_upstream_without_dsn_means_postern_confirms_as_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let mut p = start(dir.path(), up.port, "");
    submit(
        &p,
        "ENVID=job-42",
        &[
            (
                "ops@example.test",
                "NOTIFY=SUCCESS ORCPT=rfc822;root+40lan.test",
            ),
            ("quiet@example.test", ""),
        ],
        BODY,
    );
    let got = up.next();
    // Nothing DSN goes to a server that did not offer it.
    assert!(!got.mail_line.contains("ENVID"), "{}", got.mail_line);
    assert!(
        got.rcpt_lines.iter().all(|l| !l.contains("NOTIFY")),
        "{:?}",
        got.rcpt_lines
    );
    let report = up.next();
    p.wait_log("success report queued");
    assert_eq!(report.from, "");
    assert_eq!(report.rcpts, vec!["dev@lan.test"]);
    let text = String::from_utf8_lossy(&report.data);
    assert!(
        text.contains("Subject: Successful Mail Delivery Report"),
        "{text}"
    );
    assert!(text.contains("Original-Envelope-Id: job-42\r\n"), "{text}");
    assert!(
        text.contains(
            "Original-Recipient: rfc822; root@lan.test\r\n\
             Final-Recipient: rfc822; ops@example.test\r\nAction: relayed\r\n"
        ),
        "{text}"
    );
    assert!(text.contains("Remote-MTA: dns; localhost\r\n"), "{text}");
    // Only the recipient that asked.
    assert!(!text.contains("quiet@example.test"), "{text}");
    // The headers come back, not the body.
    assert!(text.contains("Subject: dsn test\r\n"), "{text}");
    assert!(!text.contains("the body line"), "{text}");
}

#[test]
fn notify_never_means_no_failure_report_and_ret_full_returns_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        reject_rcpt: Some("nobody".into()),
        ..Default::default()
    });
    let mut p = start(dir.path(), up.port, "");
    // NOTIFY=NEVER: refused, and nobody is told.
    submit(
        &p,
        "RET=FULL",
        &[("nobody@example.test", "NOTIFY=NEVER")],
        BODY,
    );
    p.wait_log("no report: the sender asked not to be told");
    wait_queue_empty(dir.path());
    assert!(up.rx.try_recv().is_err(), "a report despite NOTIFY=NEVER");
    // The same with NOTIFY=FAILURE and RET=FULL: the whole message returns.
    submit(
        &p,
        "RET=FULL ENVID=x1",
        &[("nobody@example.test", "NOTIFY=FAILURE")],
        BODY,
    );
    let report = up.next();
    let text = String::from_utf8_lossy(&report.data);
    assert!(text.contains("Action: failed\r\n"), "{text}");
    assert!(text.contains("Original-Envelope-Id: x1\r\n"), "{text}");
    assert!(
        text.contains("Content-Type: message/rfc822\r\n\r\n"),
        "{text}"
    );
    assert!(text.contains("the body line"), "{text}");
}

#[test]
fn an_aliased_recipient_is_reported_under_the_address_the_device_used() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        reject_rcpt: Some("ops".into()),
        ..Default::default()
    });
    let port = free_port();
    let cfg = config(
        port,
        &format!(
            "kind = \"smarthost\"\nhost = \"localhost\"\nport = {}\ntls = \"none\"\n\n[aliases]\nroot = \"ops@example.test\"",
            up.port
        ),
        "",
    );
    let p = Postern::start(dir.path(), &cfg, port);
    submit(&p, "", &[("root", "")], BODY);
    let report = up.next();
    let text = String::from_utf8_lossy(&report.data);
    assert!(
        text.contains(
            "Original-Recipient: rfc822; root\r\nFinal-Recipient: rfc822; ops@example.test\r\n"
        ),
        "{text}"
    );
}

#[test]
fn a_message_that_waits_gets_one_delay_warning_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts {
        rcpt_reply: Some(("slow".into(), "451 4.3.0 try again later".into())),
        ..Default::default()
    });
    let mut p = start(dir.path(), up.port, "delay_warning = \"1s\"");
    submit(&p, "ENVID=w1", &[("slow@example.test", "")], BODY);
    // A sender who asked for failures only is not told of delays.
    submit(&p, "", &[("slow2@example.test", "NOTIFY=FAILURE")], BODY);
    let report = up.next();
    p.wait_log("delay report queued");
    assert_eq!(report.from, "");
    assert_eq!(report.rcpts, vec!["dev@lan.test"]);
    let text = String::from_utf8_lossy(&report.data);
    assert!(
        text.contains("Subject: Delayed Mail (still being retried)"),
        "{text}"
    );
    assert!(
        text.contains(
            "Final-Recipient: rfc822; slow@example.test\r\nAction: delayed\r\nStatus: 4.3.0\r\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("Diagnostic-Code: smtp; 451 4.3.0 try again later\r\n"),
        "{text}"
    );
    assert!(text.contains("Will-Retry-Until: "), "{text}");
    assert!(text.contains("Original-Envelope-Id: w1\r\n"), "{text}");
    assert!(!text.contains("slow2@example.test"), "{text}");
    // More attempts, then a restart and more: no second warning.
    wait_deferrals(&p, 4);
    p.stop();
    let mut p = start(dir.path(), up.port, "delay_warning = \"1s\"");
    wait_deferrals(&p, 4);
    assert!(!p.log().contains("delay report queued"), "{}", p.log());
    assert!(up.rx.try_recv().is_err(), "a second delay warning");
    p.stop();
}

/// Wait until `p` has logged `n` deferrals.
fn wait_deferrals(p: &Postern, n: usize) {
    let end = Instant::now() + DEADLINE;
    while p.log().matches("status=deferred").count() < n {
        assert!(
            Instant::now() < end,
            "fewer than {n} deferrals:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
