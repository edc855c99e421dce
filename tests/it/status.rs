//! `postern status` against a running daemon: exit 0 healthy, 1 warning (a
//! message older than delay_warning), 2 critical (the queue nearly full) or
//! when no daemon answers; text, JSON and Prometheus output.

use std::process::Command;
use std::time::Instant;

use crate::util::*;

/// Run `postern status ARGS` in `dir`: (exit code, stdout, stderr).
fn status(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("status")
        .args(args)
        .arg("--config")
        .arg(dir.join("postern.toml"))
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Poll `postern status` until it exits with `code` (the daemon's state
/// changes as time passes and attempts end; there is no event to wait on
/// from outside).
fn status_until(dir: &std::path::Path, code: i32) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let (c, out, err) = status(dir, &[]);
        if c == code {
            return out;
        }
        assert!(
            Instant::now() < end,
            "postern status never exited {code}; last: {c}\n{out}{err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn send(p: &Postern) {
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO sensor", 250);
    // The sender wants no reports (RFC 3461 NOTIFY=NEVER): the queue then
    // holds this message only, with no delay warning queued beside it.
    c.cmd("MAIL FROM:<dev@lan.test>", 250);
    c.cmd("RCPT TO:<ops@example.test> NOTIFY=NEVER", 250);
    c.cmd("DATA", 354);
    c.raw(b"Subject: t\r\n\r\nx\r\n.\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT", 221);
}

#[test]
fn status_is_healthy_then_warns_about_an_old_message_and_is_critical_when_down() {
    let dir = tempfile::tempdir().unwrap();
    let (_refuse, up_port) = refusing_port();
    let port = free_port();
    let cfg = config(port, &smarthost(up_port), "").replace(
        "retry_intervals = [\"1s\"]",
        "retry_intervals = [\"1s\"]\ndelay_warning = \"2s\"",
    );
    // No daemon: critical, and says why.
    std::fs::write(dir.path().join("postern.toml"), &cfg).unwrap();
    let (code, out, _) = status(dir.path(), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("CRITICAL: postern is not running"), "{out}");
    let (code, out, err) = status(dir.path(), &["--prometheus"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("\npostern_up 0\n"), "{out}");
    assert!(err.contains("postern is not running"), "{err}");

    let p = Postern::start(dir.path(), &cfg, port);
    let (code, out, _) = status(dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: 0 queued |"), "{out}");
    assert!(out.contains("route 127.0.0.1: 0 waiting"), "{out}");

    // The upstream refuses connections: the message waits, and once it is
    // older than delay_warning the status warns (the route fails, but not
    // yet for route_failing_critical).
    send(&p);
    let out = status_until(dir.path(), 1);
    assert!(out.starts_with("WARNING: 1 queued, oldest "), "{out}");
    assert!(out.contains("route 127.0.0.1 failing: "), "{out}");
    assert!(out.contains("(over delay_warning 2s)"), "{out}");
    assert!(out.contains("route 127.0.0.1: 1 waiting"), "{out}");
    assert!(out.contains("  last error:   "), "{out}");
    let (code, json, _) = status(dir.path(), &["--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["health"], "warning");
    assert_eq!(v["queue"]["messages"], 1);
    assert_eq!(v["accepted"], 1);
    assert!(v["routes"][0]["failing_secs"].is_u64(), "{json}");
    assert!(v["routes"][0]["deferred"].as_u64().unwrap() >= 1, "{json}");
    let (code, prom, _) = status(dir.path(), &["--prometheus"]);
    assert_eq!(code, 1);
    assert!(prom.contains("\npostern_health 1\n"), "{prom}");
    assert!(
        prom.contains("\npostern_route_waiting_messages{route=\"127.0.0.1\"} 1\n"),
        "{prom}"
    );
}

#[test]
fn status_is_critical_when_the_queue_is_nearly_full() {
    let dir = tempfile::tempdir().unwrap();
    let (_refuse, up_port) = refusing_port();
    let port = free_port();
    let cfg = config(port, &smarthost(up_port), "").replace(
        "retry_intervals = [\"1s\"]",
        "retry_intervals = [\"1h\"]\nmax_messages = 2",
    ) + "\n[status]\nqueue_full_critical = 50\n";
    let p = Postern::start(dir.path(), &cfg, port);
    assert_eq!(status(dir.path(), &[]).0, 0);
    send(&p);
    let out = status_until(dir.path(), 2);
    assert!(out.starts_with("CRITICAL: 1 queued"), "{out}");
    assert!(out.contains("queue 50% full (1 of 2 messages"), "{out}");
}

#[test]
fn systemd_status_line_says_what_is_queued_and_which_route_fails() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let (_refuse, up_port) = refusing_port();
    let port = free_port();
    let cfg = config(port, &smarthost(up_port), "");
    let cfg_path = dir.path().join("postern.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The next STATUS= line (other notifications skipped).
    let status_line = || loop {
        let mut buf = [0u8; 512];
        let n = sock
            .recv(&mut buf)
            .expect("a STATUS= line before the deadline");
        if let Some(s) = String::from_utf8_lossy(&buf[..n]).strip_prefix("STATUS=") {
            return s.to_string();
        }
    };
    assert_eq!(status_line(), "0 queued");
    let mut c = Smtp::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)), None);
    c.reply();
    c.cmd("EHLO sensor", 250);
    let (code, text) = c.send_mail(
        "dev@lan.test",
        &["ops@example.test"],
        b"Subject: t\r\n\r\nx",
    );
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT", 221);
    // Lines come as things change (at most every 5 s): the message, then
    // the failing route.
    let end = Instant::now() + DEADLINE;
    let line = loop {
        let l = status_line();
        if l.contains("failing") {
            break l;
        }
        assert!(
            Instant::now() < end,
            "no failing route in STATUS=; last {l}"
        );
    };
    assert!(
        line.starts_with("1 queued, oldest ") && line.contains(", route 127.0.0.1 failing: "),
        "{line}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
