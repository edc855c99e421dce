//! `postern sendmail` / a `sendmail` symlink, as cron and friends call it:
//! the message goes through the running daemon, and a daemon
//! that is down is reported with exit status 75.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::*;

fn smarthost(port: u16) -> String {
    format!("kind = \"smarthost\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"")
}

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
