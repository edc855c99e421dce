//! `postern queue …` against a running daemon: list, show, hold,
//! release, delete, flush over the control socket; a clear error without one.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::util::*;

fn queue_cmd(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(dir.join("postern.toml"))
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn send(p: &Postern, subject: &str) -> String {
    send_from(p, "dev@lan.test", subject)
}

/// Queue one message from `from`; its queue id (the last word of the 250).
fn send_from(p: &Postern, from: &str, subject: &str) -> String {
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO sensor", 250);
    let body = format!("Subject: {subject}\r\n\r\nbody of {subject}");
    let (code, text) = c.send_mail(from, &["ops@example.test"], body.as_bytes());
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT", 221);
    text.split_whitespace().last().unwrap().to_string()
}

#[test]
fn queue_commands_list_hold_release_delete_flush_and_say_when_no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let up_port = free_port();
    let port = free_port();
    let cfg = config(
        port,
        &format!("kind = \"smarthost\"\nhost = \"localhost\"\nport = {up_port}\ntls = \"none\""),
        "",
    );
    // Nothing running yet: a clear error, exit 1.
    std::fs::write(dir.path().join("postern.toml"), &cfg).unwrap();
    let (ok, _, err) = queue_cmd(dir.path(), &["list"]);
    assert!(!ok);
    assert!(err.contains("postern is not running"), "{err}");

    let mut p = Postern::start(dir.path(), &cfg, port);
    let sock = dir.path().join("queue/control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let (ok, out, _) = queue_cmd(dir.path(), &["list"]);
    assert!(ok);
    assert_eq!(out, "queue is empty\n");

    let a = send(&p, "first");
    let b = send(&p, "second");
    p.wait_log("status=deferred");
    let (ok, out, err) = queue_cmd(dir.path(), &["list"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ID "), "{out}");
    for id in [&a, &b] {
        let line = out.lines().find(|l| l.starts_with(id.as_str())).unwrap();
        assert!(line.contains("dev@lan.test -> ops@example.test"), "{line}");
    }
    assert!(out.contains("last error:"), "{out}");
    assert!(out.contains("2 message(s)"), "{out}");

    // Hold one, delete the other.
    let (ok, out, _) = queue_cmd(dir.path(), &["hold", &a]);
    assert!(ok && out.contains("held"), "{out}");
    let (_, out, _) = queue_cmd(dir.path(), &["show", &a]);
    assert!(out.contains("next attempt: held"), "{out}");
    assert!(
        out.contains("recipient:    ops@example.test (pending)"),
        "{out}"
    );
    let (ok, _, err) = queue_cmd(dir.path(), &["delete", &b]);
    assert!(ok, "{err}");
    let (ok, _, err) = queue_cmd(dir.path(), &["show", &b]);
    assert!(!ok);
    assert!(err.contains("no queued message"), "{err}");
    let (ok, _, err) = queue_cmd(dir.path(), &["hold", "zz"]);
    assert!(!ok && err.contains("not a queue id"), "{err}");

    // The upstream comes back; a flush sends what is due, not the held one.
    let up = Upstream::start_on(up_port, UpstreamOpts::default());
    let c = send(&p, "third");
    let (ok, _, _) = queue_cmd(dir.path(), &["flush"]);
    assert!(ok);
    let got = up.next();
    assert!(String::from_utf8_lossy(&got.data).contains("body of third"));
    // The upstream has it; the queue records that a moment later.
    let end = std::time::Instant::now() + DEADLINE;
    let out = loop {
        let (_, out, _) = queue_cmd(dir.path(), &["list"]);
        if !out.contains(&c) || std::time::Instant::now() > end {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        out.contains(&a) && !out.contains(&b) && !out.contains(&c),
        "{out}"
    );

    // Released: delivered now. The deleted one never goes out.
    let (ok, _, _) = queue_cmd(dir.path(), &["release", &a]);
    assert!(ok);
    let got = up.next();
    assert!(String::from_utf8_lossy(&got.data).contains("body of first"));
    p.wait_log(&format!("id={a}"));

    assert!(p.stop().success());
    assert!(!sock.exists(), "the socket goes with the daemon");
    let (ok, _, err) = queue_cmd(dir.path(), &["flush"]);
    assert!(!ok && err.contains("postern is not running"), "{err}");
    assert!(
        up.rx.try_recv().is_err(),
        "the deleted message must never be delivered"
    );
}

#[test]
fn a_full_queue_answers_452_keeps_what_it_has_and_accepts_again_when_space_frees() {
    let dir = tempfile::tempdir().unwrap();
    // The upstream refuses connections: everything accepted stays queued.
    let (_refuser, up_port) = refusing_port();
    let port = free_port();
    let cfg =
        config(port, &smarthost(up_port), "").replace("[queue]\n", "[queue]\nmax_messages = 2\n");
    std::fs::write(dir.path().join("postern.toml"), &cfg).unwrap();
    let p = Postern::start(dir.path(), &cfg, port);
    let a = send(&p, "one");
    send(&p, "two");

    // Full: 452 4.3.1 at MAIL, and the session stays usable.
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO sensor", 250);
    let refused = c.cmd("MAIL FROM:<dev@lan.test>", 452);
    assert!(refused.contains("4.3.1"), "{refused}");
    c.cmd("NOOP", 250);
    c.cmd("QUIT", 221);

    // Nothing already queued was harmed.
    let (ok, out, err) = queue_cmd(dir.path(), &["list"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("dev@lan.test").count(), 2, "{out}");

    // Space frees (the operator deletes one): accepting resumes.
    let (ok, _, err) = queue_cmd(dir.path(), &["delete", &a]);
    assert!(ok, "{err}");
    send(&p, "three");
    let (_, out, _) = queue_cmd(dir.path(), &["list"]);
    assert_eq!(out.matches("dev@lan.test").count(), 2, "{out}");
}

#[test]
fn queue_show_times_subject_and_body_list_filters_bulk_changes_and_mailq() {
    let dir = tempfile::tempdir().unwrap();
    let (_refuse, up_port) = refusing_port();
    let port = free_port();
    // One attempt each, then an hour's wait: nothing is in flight later.
    let cfg = config(port, &smarthost(up_port), "")
        .replace("retry_intervals = [\"1s\"]", "retry_intervals = [\"1h\"]");
    let p = Postern::start(dir.path(), &cfg, port);
    let a = send(&p, "first");
    let b = send(&p, "second");
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO sensor", 250);
    let (code, text) = c.send_mail(
        "",
        &["ops@example.test"],
        b"Subject: =?utf-8?q?report?=\r\n\r\nbounce body \xff\r\n",
    );
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT", 221);
    let null = text.split_whitespace().last().unwrap().to_string();
    let end = std::time::Instant::now() + DEADLINE;
    while p.log().matches("status=deferred").count() < 3 {
        assert!(std::time::Instant::now() < end, "{}", p.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // show: RFC 3339 and how long ago, the Subject; --body the message.
    let (ok, out, err) = queue_cmd(dir.path(), &["show", &a]);
    assert!(ok, "{err}");
    let arrival = out.lines().find(|l| l.starts_with("arrival:")).unwrap();
    let stamp = arrival.split_whitespace().nth(1).unwrap();
    assert!(
        stamp.len() == 20 && stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z'),
        "{arrival}"
    );
    assert!(arrival.ends_with(" ago)"), "{arrival}");
    assert!(out.contains("subject:      first\n"), "{out}");
    assert!(!out.contains("body of first"), "{out}");
    let (ok, out, _) = queue_cmd(dir.path(), &["show", &a, "--body"]);
    assert!(ok);
    assert!(out.contains("subject:      first\n"), "{out}");
    assert!(out.contains("\r\n\r\nbody of first"), "{out}");
    // A body that is not UTF-8 comes out as it is.
    let raw = Command::new(bin())
        .args(["queue", "show", &null, "--body", "--config"])
        .arg(dir.path().join("postern.toml"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        raw.stdout.windows(13).any(|w| w == b"bounce body \xff"),
        "{:?}",
        String::from_utf8_lossy(&raw.stdout)
    );

    // list filters.
    let list = |args: &[&str]| {
        let mut v = vec!["list"];
        v.extend_from_slice(args);
        let (ok, out, err) = queue_cmd(dir.path(), &v);
        assert!(ok, "{err}");
        out
    };
    let out = list(&["--from", "<>"]);
    assert!(
        out.contains(&null) && !out.contains(&a) && !out.contains(&b),
        "{out}"
    );
    let out = list(&["--from", "lan.test"]);
    assert!(
        out.contains(&a) && out.contains(&b) && !out.contains(&null),
        "{out}"
    );
    let out = list(&["--route", "127.0.0.1"]);
    assert!(out.contains("3 message(s)"), "{out}");
    assert!(list(&["--route", "elsewhere"]).starts_with("no queued message matches (of 3)"));
    assert!(list(&["--older-than", "1h"]).starts_with("no queued message matches"));
    let (ok, _, err) = queue_cmd(dir.path(), &["list", "--older-than", "2 days"]);
    assert!(!ok && err.contains("--older-than"), "{err}");

    // Bulk: hold what a filter takes, release it, delete it.
    let (ok, out, _) = queue_cmd(dir.path(), &["hold", "--all", "--from", "dev@lan.test"]);
    assert!(ok && out == "2 message(s) held\n", "{out}");
    assert!(list(&[]).contains(" held "), "{}", list(&[]));
    let (ok, out, _) = queue_cmd(dir.path(), &["release", "--all"]);
    assert!(ok && out == "3 message(s) released\n", "{out}");
    let (ok, _, err) = queue_cmd(dir.path(), &["delete", "--older-than", "0s"]);
    assert!(!ok && err.contains("--all"), "{err}");
    // Released means due: wait until the attempts are over.
    let end = std::time::Instant::now() + DEADLINE;
    while p.log().matches("status=deferred").count() < 6 {
        assert!(std::time::Instant::now() < end, "{}", p.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The delivery line comes just before the attempt is settled: wait
    // until no message is in flight ("now" in the NEXT column).
    while list(&[]).contains(" now ") {
        assert!(std::time::Instant::now() < end, "{}", list(&[]));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (ok, out, _) = queue_cmd(dir.path(), &["delete", "--all", "--from", "lan.test"]);
    assert!(ok && out == "2 message(s) deleted\n", "{out}");
    let out = list(&[]);
    assert!(out.contains(&null) && out.contains("1 message(s)"), "{out}");

    // `mailq` (a symlink to postern) lists, ignoring sendmail's options.
    let mailq = dir.path().join("mailq");
    std::os::unix::fs::symlink(bin(), &mailq).unwrap();
    let out = Command::new(&mailq)
        .args(["-v", "-Ac", "-C"])
        .arg(dir.path().join("postern.toml"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ID ") && text.contains(&null), "{text}");
}

/// A hold survives a restart of the daemon: after it, the held message
/// stays back while the rest is delivered, until it is released.
#[test]
fn a_held_message_stays_held_across_a_restart_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let up_port = free_port();
    let port = free_port();
    let cfg = config(
        port,
        &format!("kind = \"smarthost\"\nhost = \"localhost\"\nport = {up_port}\ntls = \"none\""),
        "",
    );
    std::fs::write(dir.path().join("postern.toml"), &cfg).unwrap();
    let mut p = Postern::start(dir.path(), &cfg, port);
    let held = send(&p, "held one");
    let other = send(&p, "other one");
    p.wait_log(&format!("id={other}"));
    let (ok, out, err) = queue_cmd(dir.path(), &["hold", &held]);
    assert!(ok && out.contains("held"), "{out}{err}");
    assert!(p.stop().success());

    let up = Upstream::start_on(up_port, UpstreamOpts::default());
    let mut p = Postern::start(dir.path(), &cfg, port);
    let (_, out, _) = queue_cmd(dir.path(), &["show", &held]);
    assert!(out.contains("next attempt: held"), "{out}");
    // The other one goes out; the held one stays.
    let got = up.next();
    assert!(String::from_utf8_lossy(&got.data).contains("body of other one"));
    let (ok, _, _) = queue_cmd(dir.path(), &["flush"]);
    assert!(ok);
    let (_, out, _) = queue_cmd(dir.path(), &["show", &held]);
    assert!(out.contains("next attempt: held"), "{out}");
    let (ok, _, _) = queue_cmd(dir.path(), &["release", &held]);
    assert!(ok);
    let got = up.next();
    assert!(String::from_utf8_lossy(&got.data).contains("body of held one"));
    p.wait_log(&format!("id={held}"));
    assert!(p.stop().success());
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file under `dirs` (not descending): (path, mode).
fn modes(dirs: &[std::path::PathBuf]) -> Vec<(std::path::PathBuf, u32)> {
    let mut out = Vec::new();
    for d in dirs {
        out.push((d.clone(), mode(d)));
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if !e.path().is_dir() {
                out.push((e.path(), mode(&e.path())));
            }
        }
    }
    out
}

/// Run outside the shipped unit under the usual umask (022) or none at
/// all (000): the queue directory, its segments, big/ files, the state,
/// the lock, storm.json and the maildir outbox with its .eml files are
/// private all the same (0700 and 0600), and another user cannot even
/// open the lock to hold it.
#[test]
fn queue_files_are_private_whatever_the_umask() {
    for umask in ["022", "000"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Mail for outbox.test goes to a maildir, the rest to a smarthost
        // that refuses connections (so it stays queued); storm suppression
        // holds copies from storm@lan.test (and saves storm.json).
        let (_refuser, up_port) = refusing_port();
        let cfg = config(
            port,
            &format!(
                "{}\n\n\
                 [storm]\nwindow = \"1h\"\nthreshold = 5\npass = 0\nsenders = [\"storm@lan.test\"]",
                smarthost(up_port)
            ),
            "",
        )
        .replace("max_message_size = \"64KiB\"", "max_message_size = \"2MiB\"")
        .replace(
            "[upstream]\n",
            "[[route]]\ndomains = [\"outbox.test\"]\nkind = \"maildir\"\ndir = \"outbox\"\n\n[[route]]\ndomains = [\"*\"]\n",
        );
        let mut p = Postern::start_with_umask(dir.path(), &cfg, port, umask);
        let mut c = p.smtp();
        c.reply();
        c.cmd("EHLO sensor", 250);
        // 700 KB: over the 512 KiB of a segment record, so a file of its
        // own under big/.
        let big = format!(
            "Subject: big\r\n\r\n{}",
            format!("{}\r\n", "y".repeat(98)).repeat(7000)
        );
        for (from, to, body) in [
            (
                "dev@lan.test",
                "ops@example.test",
                b"Subject: s\r\n\r\nstays".as_slice(),
            ),
            ("dev@lan.test", "ops@example.test", big.as_bytes()),
            ("dev@lan.test", "box@outbox.test", b"Subject: o\r\n\r\nhi"),
            (
                "storm@lan.test",
                "ops@example.test",
                b"Subject: UPS\r\n\r\nx",
            ),
        ] {
            let (code, text) = c.send_mail(from, &[to], body);
            assert_eq!(code, 250, "{text}");
        }
        c.cmd("QUIT", 221);
        p.wait_log("status=sent");
        let q = dir.path().join("queue");
        let outbox = dir.path().join("outbox");
        // Another user cannot open the lock, so cannot hold it either.
        if rustix::process::geteuid().is_root() {
            let out = Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .args(["flock", "-n"])
                .arg(q.join("lock"))
                .arg("true")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "another user took the lock");
            assert!(err.contains("Permission denied"), "{err}");
        } else {
            eprintln!("not root: the other-user lock check needs root to switch users; skipped");
        }
        let dirs = [
            q.clone(),
            q.join("big"),
            q.join("tmp"),
            q.join("corrupt"),
            outbox,
        ];
        let running = modes(&dirs);
        assert!(p.stop().success());
        // And what the stop wrote (storm.json).
        let stopped = modes(&dirs);
        for (path, m) in running.iter().chain(&stopped) {
            let want = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(*m, want, "umask {umask}: {} is {m:04o}", path.display());
        }
        let names: Vec<String> = running
            .iter()
            .chain(&stopped)
            .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for want in [
            "lock",
            "state",
            "seg-000001.log",
            "control.sock",
            "storm.json",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want}: {names:?}");
        }
        assert!(names.iter().any(|n| n.ends_with(".eml")), "{names:?}");
        assert!(
            running
                .iter()
                .any(|(p, _)| p.parent() == Some(&q.join("big"))),
            "no file under big/: {names:?}"
        );
    }
}

/// The daemon's start, refused: its stderr.
fn refused_start(dir: &std::path::Path, cfg: &str) -> String {
    std::fs::write(dir.join("postern.toml"), cfg).unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(dir.join("postern.toml"))
        .current_dir(dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must stop at once; one that serves instead is stopped here.
    let end = std::time::Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let started = child.try_wait().unwrap().is_none();
    if started {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!started, "postern served an unsafe queue: {err}");
    assert!(!out.status.success(), "{err}");
    err
}

/// `postern check` on the config `refused_start` just used: it must refuse
/// what serve refused, with the same reason. Returns its stderr.
fn refused_check(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(dir.join("postern.toml"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "check passed what serve refuses: {err}"
    );
    assert!(
        err.contains("error: [queue] dir: serve would refuse it: "),
        "{err}"
    );
    err
}

/// A queue directory its group or every user may write, or one owned by
/// another user, is refused at start: what, where, and what to do.
#[test]
fn a_queue_directory_others_may_write_or_own_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let q = dir.path().join("queue");
    std::fs::create_dir(&q).unwrap();
    let cfg = config(port, "kind = \"maildir\"\ndir = \"outbox\"", "");
    for (m, who) in [(0o777, "every user"), (0o770, "its group")] {
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(m)).unwrap();
        let err = refused_start(dir.path(), &cfg);
        assert!(err.contains(&format!("writable by {who}")), "{err}");
        assert!(err.contains("make it private: chmod 700 queue"), "{err}");
        let err = refused_check(dir.path(), &[]);
        assert!(err.contains(&format!("writable by {who}")), "{err}");
    }
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o700)).unwrap();
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&q, Some(65534), None).unwrap();
        let err = refused_start(dir.path(), &cfg);
        assert!(err.contains("belongs to user id 65534"), "{err}");
        assert!(err.contains("chown"), "{err}");
        // Run as root, as serve was here (check as root otherwise takes
        // the directory's owner for the service's user, as the unit runs).
        let err = refused_check(dir.path(), &["--user", "root"]);
        assert!(err.contains("belongs to user id 65534"), "{err}");
    } else {
        eprintln!("not root: giving the directory to another user needs root; skipped");
    }
}

/// Files in the queue that another user owns are set aside, not
/// delivered; postern's own files left open to others are made private,
/// with a warning for one others could write, and delivered.
#[test]
fn queue_files_of_another_user_are_set_aside_and_open_ones_made_private() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: making a file of another user needs root; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_refuser, down) = refusing_port();
    let cfg_to = |up: u16| {
        config(port, &smarthost(up), "").replace(
            "max_message_size = \"64KiB\"",
            "max_message_size = \"2MiB\"",
        )
    };
    let mut p = Postern::start(dir.path(), &cfg_to(down), port);
    let small = send(&p, "small one");
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO sensor", 250);
    let big = format!(
        "Subject: big one\r\n\r\n{}",
        format!("{}\r\n", "y".repeat(98)).repeat(7000)
    );
    let (code, text) = c.send_mail("dev@lan.test", &["ops@example.test"], big.as_bytes());
    assert_eq!(code, 250, "{text}");
    let big_id = text.split_whitespace().last().unwrap().to_string();
    c.cmd("QUIT", 221);
    assert!(p.stop().success());
    let q = dir.path().join("queue");
    let seg = q.join("seg-000001.log");
    std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(q.join("state"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let big_file = std::fs::read_dir(q.join("big"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::os::unix::fs::chown(&big_file, Some(65534), Some(65534)).unwrap();

    let up = Upstream::start(UpstreamOpts::default());
    let mut p = Postern::start(dir.path(), &cfg_to(up.port), port);
    let got = up.next();
    assert!(String::from_utf8_lossy(&got.data).contains("body of small one"));
    p.wait_log(&format!("id={small}"));
    let log = p.log();
    assert!(
        log.contains("a queue file or directory other users could write: made private")
            && log.contains("file=queue/seg-000001.log mode=0666"),
        "{log}"
    );
    assert!(log.contains("owned by user id 65534"), "{log}");
    assert_eq!(mode(&seg), 0o600);
    assert_eq!(mode(&q.join("state")), 0o600);
    let aside = q.join("corrupt").join(big_file.file_name().unwrap());
    assert!(aside.exists(), "not set aside: {log}");
    let (_, out, _) = queue_cmd(dir.path(), &["list"]);
    assert!(
        !out.contains(&big_id),
        "another user's file was loaded: {out}"
    );
    assert!(p.stop().success());
    assert!(
        up.rx.try_recv().is_err(),
        "another user's file was delivered"
    );
}

#[test]
fn invisible_and_bidi_characters_are_refused_in_addresses_and_escaped_where_printed() {
    // U+202E (right-to-left override) and U+200B (zero width space) used
    // to be accepted with SMTPUTF8, even in domains, and printed raw in
    // the log and in `queue list`: an address that looks like another.
    let dir = tempfile::tempdir().unwrap();
    let (_refusing, up_port) = refusing_port();
    let port = free_port();
    let cfg = config(port, &smarthost(up_port), "");
    let p = Postern::start(dir.path(), &cfg, port);
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO print\u{202e}er", 250);
    for bad in [
        "MAIL FROM:<admin\u{202e}moc.knab@lan.test> SMTPUTF8",
        "MAIL FROM:<ad\u{200b}min@lan.test> SMTPUTF8",
        "MAIL FROM:<admin@bank\u{202e}.test> SMTPUTF8",
    ] {
        c.send(bad);
        let (code, text) = c.reply();
        assert!((500..600).contains(&code), "{bad:?}: {text}");
    }
    c.cmd("MAIL FROM:<\"a\\\\b\"@lan.test>", 250);
    c.cmd("RCPT TO:<ops@example.test>", 250);
    c.cmd("DATA", 354);
    c.raw("Subject: pay \u{202e}fdp.exe\r\n\r\nx".as_bytes());
    c.raw(b"\r\n.\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    let id = text.split_whitespace().last().unwrap().to_string();
    c.cmd("QUIT", 221);
    // The log shows the HELO name escaped, never the raw override.
    let mut p = p;
    p.wait_log("helo=print\\u{202e}er");
    assert!(!p.log().contains('\u{202e}'), "{}", p.log());
    // queue list and show: backslash doubled, the override escaped.
    let (ok, out, err) = queue_cmd(dir.path(), &["list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\"a\\\\\\\\b\"@lan.test -> ops@example.test"),
        "{out}"
    );
    let (ok, out, err) = queue_cmd(dir.path(), &["show", &id]);
    assert!(ok, "{err}");
    assert!(
        out.contains("subject:      pay \\u{202e}fdp.exe\n"),
        "{out}"
    );
    assert!(!out.contains('\u{202e}'), "{out}");
}

/// Every kind of hold survives a restart of the daemon, and so does every
/// release: the operator's (`postern queue hold`), a `[[filter]]` rule's
/// and storm suppression's. Held, restarted: still held; released (while
/// the upstream is down), restarted: delivered.
#[test]
fn every_hold_survives_a_restart_and_so_does_its_release() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg_to = |up_port: u16| {
        format!(
            "{}\n[[filter]]\nname = \"hold-these\"\nsubject = [\"*filter-held*\"]\nhold = true\n\n\
             [storm]\nwindow = \"1h\"\nthreshold = 5\npass = 0\nsenders = [\"storm@lan.test\"]\n",
            config(port, &smarthost(up_port), "",)
        )
    };
    // The upstream is down for the first two runs: nothing can leave.
    let (_refusing, down) = refusing_port();
    let cfg = cfg_to(down);
    let mut p = Postern::start(dir.path(), &cfg, port);
    let by_operator = send_from(&p, "dev@lan.test", "operator-held");
    let by_filter = send_from(&p, "dev@lan.test", "filter-held");
    let by_storm = send_from(&p, "storm@lan.test", "UPS on battery");
    let plain = send_from(&p, "dev@lan.test", "plain");
    let (ok, out, err) = queue_cmd(dir.path(), &["hold", &by_operator]);
    assert!(ok && out.contains("held"), "{out}{err}");
    let held = [
        (&by_operator, "held (by the operator)"),
        (&by_filter, "held (by a [[filter]] rule)"),
        (&by_storm, "held (by storm suppression)"),
    ];
    assert!(p.stop().success());

    let mut p = Postern::start(dir.path(), &cfg, port);
    for (id, who) in held {
        let (ok, out, err) = queue_cmd(dir.path(), &["show", id]);
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!("next attempt: {who}\n")),
            "not held after a restart: {out}"
        );
        let (ok, out, err) = queue_cmd(dir.path(), &["release", id]);
        assert!(ok && out.contains("released"), "{out}{err}");
    }
    let (_, out, _) = queue_cmd(dir.path(), &["show", &plain]);
    assert!(!out.contains("held"), "{out}");
    assert!(p.stop().success());

    // Released before the restart: all four go out after it.
    let up = Upstream::start(UpstreamOpts::default());
    let cfg = cfg_to(up.port);
    let mut p = Postern::start(dir.path(), &cfg, port);
    let mut got: Vec<String> = (0..4)
        .map(|_| {
            let m = String::from_utf8_lossy(&up.next().data).into_owned();
            let subject = m
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default();
            subject.to_string()
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["UPS on battery", "filter-held", "operator-held", "plain"],
        "a release was lost at the restart"
    );
    assert!(p.stop().success());
}
