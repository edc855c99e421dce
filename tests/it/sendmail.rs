//! `postern sendmail` / a `sendmail` symlink, as cron and friends call it:
//! the message goes through the running daemon, and a daemon
//! that is down is reported with exit status 75.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::*;

/// Run `program args` with `input` on stdin, as cron does (a pipe).
fn pipe_into(program: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("LOGNAME", "backup")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn cron_style_t_oi_goes_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let p = Postern::start(dir.path(), &config(port, &smarthost(up.port), ""), port);
    let cfg = dir.path().join("postern.toml");
    // What cron pipes in: LF line ends, a Bcc, a lone "." line in the body.
    let msg = b"To: ops@example.test\nBcc: audit@example.test\nSubject: Cron <root@gw> backup\n\nline one\n.\n..two dots\n";
    let out = pipe_into(
        &bin(),
        &[
            "sendmail",
            "-t",
            "-oi",
            "-f",
            "root@gw.test",
            "-F",
            "Cron Daemon",
            "-C",
        ],
        &[],
    );
    // -C without its value is a usage error (64), and nothing is sent.
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let out = pipe_into(
        &bin(),
        &[
            "sendmail",
            "-t",
            "-oi",
            "-f",
            "root@gw.test",
            "-F",
            "Cron Daemon",
            "-C",
            cfg.to_str().unwrap(),
        ],
        msg,
    );
    assert!(out.status.success(), "{out:?}\n{}", p.log());
    let got = up.next();
    assert_eq!(got.from, "root@gw.test");
    let mut rcpts = got.rcpts.clone();
    rcpts.sort();
    assert_eq!(rcpts, vec!["audit@example.test", "ops@example.test"]);
    let text = String::from_utf8_lossy(&got.data).into_owned();
    assert!(!text.contains("Bcc:"), "{text}");
    assert!(
        text.contains("\r\nFrom: \"Cron Daemon\" <root@gw.test>\r\n"),
        "{text}"
    );
    assert!(
        text.contains("\r\nSubject: Cron <root@gw> backup\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\nline one\r\n.\r\n..two dots\r\n"),
        "{text}"
    );
    drop(p);
}

#[test]
fn a_sendmail_symlink_takes_recipients_as_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let policy = "deny_recipients = [\"blocked.test\"]";
    let p = Postern::start(dir.path(), &config(port, &smarthost(up.port), policy), port);
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let cfg = dir.path().join("postern.toml");
    // Without -i a lone "." ends the message (what mdadm and mail(1) rely on).
    let out = pipe_into(
        &link,
        &[
            "-C",
            cfg.to_str().unwrap(),
            "ops@example.test",
            "disk@example.test",
        ],
        b"Subject: DegradedArray on /dev/md0\n\nmd0 lost a disk\n.\nnot part of it\n",
    );
    assert!(out.status.success(), "{out:?}");
    let got = up.next();
    assert_eq!(got.from, "backup@relay.test");
    assert_eq!(got.rcpts, vec!["ops@example.test", "disk@example.test"]);
    let text = String::from_utf8_lossy(&got.data).into_owned();
    assert!(text.contains("\r\nFrom: backup@relay.test\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nmd0 lost a disk\r\n"), "{text}");
    // A refusal is passed on with its reply and exit status 69 (EX_UNAVAILABLE).
    let out = pipe_into(
        &link,
        &["-C", cfg.to_str().unwrap(), "x@blocked.test"],
        b"Subject: no\n\nno\n",
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused recipient <x@blocked.test>: 550"),
        "{err}"
    );
    drop(p);
}

#[test]
fn daemon_down_says_so_and_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, port) = refusing_port();
    let cfg = dir.path().join("postern.toml");
    std::fs::write(
        &cfg,
        config(port, "kind = \"maildir\"\ndir = \"outbox\"", ""),
    )
    .unwrap();
    let out = pipe_into(
        &bin(),
        &["sendmail", "-C", cfg.to_str().unwrap(), "ops@example.test"],
        b"Subject: lost?\n\nno\n",
    );
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the postern daemon"), "{err}");
    assert!(err.contains("NOT sent"), "{err}");
    // No recipients at all: usage (64), before touching anything.
    let out = pipe_into(&bin(), &["sendmail", "-C", cfg.to_str().unwrap()], b"x\n");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}

/// Run `program args` in `cwd` with `input` on stdin (relative paths in the
/// config are taken from the working directory, as the daemon's are).
fn pipe_in(cwd: &Path, program: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("LOGNAME", "backup")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn mail_sent_while_the_daemon_is_down_is_kept_and_taken_in_when_it_starts() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let cfg_text = config(
        port,
        &smarthost(up.port),
        "deny_recipients = [\"blocked.test\"]",
    );
    let mut p = Postern::start(dir.path(), &cfg_text, port);
    let drop_dir = dir.path().join("maildrop");
    // The daemon made the drop directory: anyone may drop, nobody lists.
    assert_eq!(
        std::fs::metadata(&drop_dir).unwrap().mode() & 0o7777,
        0o1733
    );
    assert!(p.stop().success());
    let cfg = dir.path().join("postern.toml");
    let send = |to: &str, subject: &str| {
        pipe_in(
            dir.path(),
            &bin(),
            &["sendmail", "-C", cfg.to_str().unwrap(), to],
            format!("Subject: {subject}\n\nthe disk is failing\n").as_bytes(),
        )
    };
    // cron at boot: the daemon is not up yet. The command still succeeds.
    let out = send("ops@example.test", "smartd at boot");
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kept the message in"), "{err}");
    let out = send("x@blocked.test", "to a refused address");
    assert!(out.status.success(), "{out:?}");
    let files: Vec<_> = std::fs::read_dir(&drop_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        assert_eq!(std::fs::metadata(f).unwrap().mode() & 0o777, 0o644);
    }
    // The daemon starts and takes both in: one is delivered, the other is
    // refused by policy, set aside and logged, never dropped silently.
    let mut p = Postern::start(dir.path(), &cfg_text, port);
    let got = up.next();
    assert_eq!(got.rcpts, vec!["ops@example.test"]);
    assert!(
        String::from_utf8_lossy(&got.data).contains("Subject: smartd at boot"),
        "{}",
        String::from_utf8_lossy(&got.data)
    );
    p.wait_log("maildrop: not taken in");
    let log = p.log();
    assert!(log.contains("maildrop: taken in"), "{log}");
    let left: Vec<String> = std::fs::read_dir(&drop_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(".msg.refused"), "{left:?}");
}

#[test]
fn a_line_longer_than_smtp_allows_is_encoded_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let p = Postern::start(dir.path(), &config(port, &smarthost(up.port), ""), port);
    let cfg = dir.path().join("postern.toml");
    let long = "0123456789=é".repeat(400);
    let msg = format!("Subject: json dump\n\n{{\"rows\": \"{long}\"}}\nshort line\n");
    let out = pipe_in(
        dir.path(),
        &bin(),
        &["sendmail", "-C", cfg.to_str().unwrap(), "ops@example.test"],
        msg.as_bytes(),
    );
    assert!(out.status.success(), "{out:?}\n{}", p.log());
    let got = up.next();
    let text = String::from_utf8_lossy(&got.data).into_owned();
    assert!(
        text.contains("\r\nContent-Transfer-Encoding: quoted-printable\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nMIME-Version: 1.0\r\n"), "{text}");
    assert!(text.split("\r\n").all(|l| l.len() <= 998));
    // The body decodes back to what the program wrote.
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let mut decoded = Vec::new();
    for line in body.split("\r\n") {
        let (l, soft) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let b = l.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' {
                decoded.push(u8::from_str_radix(&l[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                decoded.push(b[i]);
                i += 1;
            }
        }
        if !soft {
            decoded.extend_from_slice(b"\r\n");
        }
    }
    let want = format!("{{\"rows\": \"{long}\"}}\r\nshort line\r\n\r\n");
    assert_eq!(String::from_utf8(decoded).unwrap(), want);
}

#[test]
fn bare_local_parts_are_qualified_for_sendmail_and_smtp_clients_alike() {
    // cron's `root` and a script's `MAIL FROM:<backup>` used to reach the
    // smarthost bare (`RCPT TO:<root>`), which real smarthosts refuse.
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    let text = config(port, &smarthost(up.port), "");
    let mut p = Postern::start(dir.path(), &text, port);
    let cfg = dir.path().join("postern.toml");
    // sendmail, as cron calls it: a bare recipient.
    let out = pipe_into(
        &bin(),
        &[
            "sendmail",
            "-C",
            cfg.to_str().unwrap(),
            "-f",
            "cron",
            "root",
        ],
        b"Subject: Cron <root@gw> backup\n\ndone\n",
    );
    assert!(out.status.success(), "{out:?}");
    let got = up.next();
    assert_eq!(got.from, "cron@relay.test");
    assert_eq!(got.rcpts, vec!["root@relay.test"]);
    // An SMTP client: bare sender and recipient, after aliases (admin is
    // aliased, so it is not qualified but mapped).
    p.wait_log("status=sent");
    assert!(p.stop().success());
    let text = format!(
        "qualify_domain = \"lan.example.com\"\n{}[aliases]\nadmin = \"ops@example.test\"\n",
        config(port, &smarthost(up.port), "")
    );
    let p = Postern::start(dir.path(), &text, port);
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO script", 250);
    let (code, reply) = c.send_mail(
        "unq",
        &["root", "admin", "ops@example.test"],
        b"Subject: x\r\n\r\ny",
    );
    assert_eq!(code, 250, "{reply}");
    let got = up.next();
    assert_eq!(got.from, "unq@lan.example.com");
    let mut rcpts = got.rcpts.clone();
    rcpts.sort();
    // admin and ops@example.test are one mailbox: one RCPT.
    assert_eq!(rcpts, vec!["ops@example.test", "root@lan.example.com"]);
}
