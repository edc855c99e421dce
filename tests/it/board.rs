//! The appliance under a service manager: reload on SIGHUP,
//! graceful stop on SIGTERM.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::*;

fn signal(p: &Postern, sig: &str) {
    let pid = p.child.as_ref().expect("running").id();
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// Wait until the log says `needle` at least `n` times.
fn wait_log_count(p: &Postern, needle: &str, n: usize) {
    let end = Instant::now() + DEADLINE;
    while p.log().matches(needle).count() < n {
        assert!(
            Instant::now() < end,
            "log never said {needle:?} {n} times; log:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn listen_on(cfg: String, from: u16, ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    cfg.replace(
        &format!("listen = [\"127.0.0.1:{from}\"]"),
        &format!("listen = [{}]", list.join(", ")),
    )
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn sighup_swaps_listeners_policy_and_routes_keeping_sessions_and_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (port1, port2) = (free_port(), free_port());
    let (refusing, dead) = refusing_port();
    let mut p = Postern::start(dir.path(), &config(port1, &smarthost(dead), ""), port1);

    // Mail waiting in the queue for an upstream that refuses.
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO cron", 250);
    let (code, _) = c.send_mail(
        "root@lan.test",
        &["queued@example.test"],
        b"Subject: waiting\r\n\r\nqueued before the reload",
    );
    assert_eq!(code, 250);
    c.cmd("QUIT", 221);
    p.wait_log("status=deferred");

    // A session open across the reload, halfway through a transaction.
    let mut open = p.smtp();
    open.reply();
    open.cmd("EHLO nas", 250);
    open.cmd("MAIL FROM:<nas@lan.test>", 250);

    // New config: a second listener, a recipient deny list, a live upstream.
    let up = Upstream::start(UpstreamOpts::default());
    let cfg2 = listen_on(
        config(
            port1,
            &smarthost(up.port),
            "deny_recipients = [\"blocked.test\"]",
        ),
        port1,
        &[port1, port2],
    );
    std::fs::write(dir.path().join("postern.toml"), &cfg2).unwrap();
    signal(&p, "HUP");
    wait_log_count(&p, "config reloaded", 1);

    // The open session finishes on the rules it started with.
    open.cmd("RCPT TO:<x@blocked.test>", 250);
    open.cmd("DATA", 354);
    open.raw(b"Subject: open\r\n\r\nsent across the reload\r\n.\r\n");
    assert_eq!(open.reply().0, 250);
    open.cmd("QUIT", 221);

    // New sessions get the new policy, on the new listener as well.
    for port in [port1, port2] {
        let mut c = Smtp::connect(local(port), None);
        c.reply();
        c.cmd("EHLO ups", 250);
        c.cmd("MAIL FROM:<ups@lan.test>", 250);
        let t = c.cmd("RCPT TO:<x@blocked.test>", 550);
        assert!(t.starts_with("550 5.7.1 "), "{t}");
        c.cmd("QUIT", 221);
    }

    // The queued message and the new one leave through the new route.
    let mut got: Vec<String> = (0..2).map(|_| up.next().rcpts.join(",")).collect();
    got.sort();
    assert_eq!(got, vec!["queued@example.test", "x@blocked.test"]);
    drop(refusing);

    // A broken config is refused with its errors logged; the old one stays.
    std::fs::write(
        dir.path().join("postern.toml"),
        cfg2.replace("[queue]", "[queue]\nmax_messages = \"lots\""),
    )
    .unwrap();
    signal(&p, "HUP");
    wait_log_count(&p, "reload failed", 1);
    assert!(p.log().contains("max_messages"), "{}", p.log());
    let mut c = Smtp::connect(local(port2), None);
    c.reply();
    c.cmd("EHLO ups", 250);
    c.cmd("MAIL FROM:<ups@lan.test>", 250);
    c.cmd("RCPT TO:<x@blocked.test>", 550);
    c.cmd("QUIT", 221);

    // A listener removed from the config is closed.
    let cfg3 = cfg2.replace(
        &format!("listen = [\"127.0.0.1:{port1}\", \"127.0.0.1:{port2}\"]"),
        &format!("listen = [\"127.0.0.1:{port2}\"]"),
    );
    std::fs::write(dir.path().join("postern.toml"), &cfg3).unwrap();
    signal(&p, "HUP");
    wait_log_count(&p, "config reloaded", 2);
    assert!(TcpStream::connect(local(port1)).is_err());
    let mut c = Smtp::connect(local(port2), None);
    assert_eq!(c.reply().0, 220);
    c.cmd("QUIT", 221);
    assert!(p.stop().success());
}

#[test]
fn sigterm_says_421_between_commands_and_finishes_a_message_in_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Nothing listens there yet: the message must wait in the queue.
    let up_port = free_port();
    let cfg = config(port, &smarthost(up_port), "");
    let mut p = Postern::start(dir.path(), &cfg, port);

    let mut idle = p.smtp();
    idle.reply();
    idle.cmd("EHLO idle", 250);
    let mut busy = p.smtp();
    busy.reply();
    busy.cmd("EHLO busy", 250);
    busy.cmd("MAIL FROM:<ups@lan.test>", 250);
    busy.cmd("RCPT TO:<ops@example.test>", 250);
    busy.cmd("DATA", 354);
    busy.raw(b"Subject: on battery\r\n\r\nfirst half\r\n");

    signal(&p, "TERM");
    p.wait_log("stopping");
    let (code, text) = idle.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.3.2 "), "{text}");
    assert!(idle.closed());
    // No new connections once stopping.
    assert!(TcpStream::connect(local(port)).is_err());

    // The message in DATA is received and queued, then 421.
    busy.raw(b"second half\r\n.\r\n");
    let (code, text) = busy.reply();
    assert_eq!(code, 250, "{text}");
    assert_eq!(busy.reply().0, 421);
    assert!(p.stop().success());
    assert!(p.log().contains("stopped"));

    // Nothing lost: after a restart it goes out.
    let up = Upstream::start_on(up_port, UpstreamOpts::default());
    let p = Postern::start(dir.path(), &cfg, port);
    let got = up.next();
    assert!(
        got.data.ends_with(b"\r\n\r\nfirst half\r\nsecond half\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got.data)
    );
    drop(p);
}

/// Under systemd (Type=notify, WatchdogSec): READY=1 once listening,
/// WATCHDOG=1 at half the interval, RELOADING=1 then READY=1 around a
/// reload, STOPPING=1 on SIGTERM, over a real datagram socket.
#[test]
fn tells_the_service_manager_ready_watchdog_reloading_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let port = free_port();
    let cfg = dir.path().join("postern.toml");
    std::fs::write(
        &cfg,
        config(port, "kind = \"maildir\"\ndir = \"outbox\"", ""),
    )
    .unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let next = |want: &str| loop {
        let mut buf = [0u8; 256];
        let n = sock
            .recv(&mut buf)
            .expect("a notification before the deadline");
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        if got == want {
            return;
        }
        assert!(
            got == "WATCHDOG=1" || got.starts_with("STATUS="),
            "wanted {want}, got {got}"
        );
    };
    next("READY=1");
    // Listening by the time READY=1 arrives.
    TcpStream::connect(local(port)).unwrap();
    next("WATCHDOG=1");
    next("WATCHDOG=1");
    let pid = child.id().to_string();
    let kill = |sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(st.success());
    };
    kill("-HUP");
    next("RELOADING=1");
    next("READY=1");
    kill("-TERM");
    next("STOPPING=1");
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success());
            break;
        }
        assert!(Instant::now() < end, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// EHLO's SIZE as a number.
fn advertised_size(p: &Postern) -> u64 {
    let mut c = p.smtp();
    c.reply();
    let ehlo = c.cmd("EHLO dev", 250);
    c.cmd("QUIT", 221);
    ehlo.lines()
        .find_map(|l| l.get(4..).and_then(|t| t.strip_prefix("SIZE ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no SIZE in {ehlo}"))
}

/// Aliases and the upstream size limit (configured, and learned from the
/// upstream's EHLO) reach the listener at start and again after a reload.
#[test]
fn sighup_brings_new_aliases_and_upstream_size_limits_to_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let up = Upstream::start(UpstreamOpts {
        size: Some(40_000),
        ..Default::default()
    });
    let with_1mib = |cfg: String| {
        cfg.replace(
            "max_message_size = \"64KiB\"",
            "max_message_size = \"1MiB\"",
        )
    };
    let cfg = with_1mib(config(port, &smarthost(up.port), ""));
    let mut p = Postern::start(dir.path(), &cfg, port);
    let send_to_root = |p: &Postern| {
        let mut c = p.smtp();
        c.reply();
        c.cmd("EHLO cron", 250);
        let (code, _) = c.send_mail("cron@lan.test", &["root"], b"Subject: disk\r\n\r\nfull\r\n");
        assert_eq!(code, 250);
        c.cmd("QUIT", 221);
    };
    // [server] max_message_size until the upstream has been seen; then its
    // limit, less room for the fields postern adds to a message.
    let room = postern::server::intake::added_bound("relay.test");
    assert_eq!(advertised_size(&p), 1 << 20);
    send_to_root(&p);
    // No alias yet: the bare local part is qualified with our domain.
    assert_eq!(up.next().rcpts, vec!["root@relay.test"]);
    p.wait_log("status=sent");
    assert_eq!(advertised_size(&p), 40_000 - room);

    let cfg2 = with_1mib(config(
        port,
        &format!(
            "{}\nmax_message_size = \"100KiB\"\n\n[aliases]\nroot = \"ops@example.test\"\n",
            smarthost(up.port)
        ),
        "",
    ));
    std::fs::write(dir.path().join("postern.toml"), &cfg2).unwrap();
    signal(&p, "HUP");
    wait_log_count(&p, "config reloaded", 1);
    // The new route's configured limit; what the old one learned is gone
    // with it, and the new one learns again.
    assert_eq!(advertised_size(&p), 102_400 - room);
    send_to_root(&p);
    assert_eq!(up.next().rcpts, vec!["ops@example.test"]);
    wait_log_count(&p, "status=sent", 2);
    assert_eq!(advertised_size(&p), 40_000 - room);
}

/// Start postern with stderr going to `log`, whose device and inode are in
/// `JOURNAL_STREAM` when `journal` (what systemd does for a service whose
/// output goes to the journal).
fn start_with_stderr_file(dir: &std::path::Path, port: u16, journal: bool) -> std::process::Child {
    use std::os::unix::fs::MetadataExt;
    let cfg = dir.join("postern.toml");
    std::fs::write(
        &cfg,
        config(port, "kind = \"maildir\"\ndir = \"outbox\"", ""),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let meta = log.metadata().unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stderr(log);
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    } else {
        cmd.env_remove("JOURNAL_STREAM");
    }
    cmd.spawn().unwrap()
}

fn read_until(path: &std::path::Path, needle: &str) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < end, "never logged {needle:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn under_the_journal_each_line_has_its_priority_and_no_timestamp_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start_with_stderr_file(dir.path(), port, true);
    let log = dir.path().join("stderr.log");
    read_until(&log, "postern started");
    // A broken config on SIGHUP is an error-level line.
    std::fs::write(dir.path().join("postern.toml"), "[server\n").unwrap();
    let st = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let text = read_until(&log, "reload failed");
    let _ = child.kill();
    let _ = child.wait();
    for line in text.lines() {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "a line without a priority prefix: {line:?}"
        );
        // No timestamp of our own: the journal keeps one.
        assert!(!line.contains("Z "), "a timestamp in {line:?}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("postern started")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<3>") && l.contains("reload failed")),
        "{text}"
    );

    // Outside systemd (or when stderr is not the stream systemd set up),
    // the output stays as it was: timestamped, no prefixes.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start_with_stderr_file(dir.path(), port, false);
    let text = read_until(&dir.path().join("stderr.log"), "postern started");
    let _ = child.kill();
    let _ = child.wait();
    let line = text
        .lines()
        .find(|l| l.contains("postern started"))
        .unwrap();
    assert!(!line.starts_with('<'), "{line}");
    assert!(line.starts_with("20"), "no timestamp: {line}");
}

#[test]
fn every_example_config_writes_only_where_the_shipped_unit_lets_it() {
    // The examples used dir = "/var/spool/postern" and a refresh token in
    // /etc/postern, which the unit (ProtectSystem=strict, only the state
    // directory writable) cannot write: a copied example made a service
    // that failed, and a rotated Microsoft 365 token was lost.
    use postern::preflight::{Sandbox, outside_sandbox, written_paths};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("board/postern.service")).unwrap();
    let sandbox = Sandbox::parse(&[&unit]);
    // Read from the unit, not assumed.
    assert_eq!(sandbox.protect_system, "strict");
    assert!(
        sandbox
            .writable
            .iter()
            .any(|p| p == std::path::Path::new("/var/lib/postern")),
        "{sandbox:?}"
    );
    let opts = postern::config::ParseOptions {
        skip_file_checks: true,
        default_hostname: Some("relay.test".into()),
    };
    let mut configs: Vec<(String, String)> = std::fs::read_dir(root.join("config/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    // What the packages install as /etc/postern/postern.toml.
    let default = std::process::Command::new("bash")
        .arg(root.join("board/default-config.sh"))
        .output()
        .unwrap();
    assert!(default.status.success());
    configs.push((
        "board/default-config.sh".into(),
        String::from_utf8(default.stdout).unwrap(),
    ));
    assert!(configs.len() >= 9, "{}", configs.len());
    let mut tokens = 0;
    for (name, text) in &configs {
        let cfg = postern::config::parse_with(text, std::path::Path::new(name), &opts)
            .unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        let written = written_paths(&cfg);
        tokens += written
            .iter()
            .filter(|w| w.key.contains("oauth_refresh_token_file"))
            .count();
        let outside = outside_sandbox(&written, &sandbox);
        assert!(outside.is_empty(), "{name}: {outside:#?}");
    }
    // The XOAUTH2 examples' token files are among what was checked.
    assert!(tokens >= 1, "no refresh token file in the examples");
    // And `check` runs each example (through the same code): nothing but
    // the secret files that live on the real machine is missing.
    for (name, _) in configs.iter().filter(|(n, _)| n.ends_with(".toml")) {
        let out = std::process::Command::new(bin())
            .args(["check", "--config", name])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        for line in err.lines() {
            // Warnings depend on the machine (its host name, its ports).
            assert!(
                line.contains("does not exist")
                    || line.contains(": note: ")
                    || line.contains(": warning: ")
                    || line.contains("is in use by another program"),
                "{name}: {line}"
            );
            assert!(!line.contains("outside what"), "{name}: {line}");
        }
    }
}
