//! Alert-storm suppression in the real binary: copies past `pass` held,
//! the counts kept across a restart in the middle of a window, one digest
//! at its end, the held copies gone.

use crate::util::*;

fn send(p: &Postern, subject: &str) {
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO ups", 250);
    let body = format!("Subject: {subject}\r\n\r\nUtility power failure; on battery.\r\n");
    let (code, text) = c.send_mail("ups@ups.lan", &["ops@example.test"], body.as_bytes());
    assert_eq!(code, 250, "every copy is taken: {text}");
    c.cmd("QUIT", 221);
}

#[test]
fn a_restart_in_the_middle_of_a_window_keeps_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(UpstreamOpts::default());
    let port = free_port();
    // save_interval is long: only the stop saves the counts.
    let cfg = config(
        port,
        &format!(
            "{}\n\n[storm]\nwindow = \"15s\"\nthreshold = 5\npass = 2\nsave_interval = \"1h\"",
            smarthost(up.port)
        ),
        "",
    );
    let mut p = Postern::start(dir.path(), &cfg, port);
    for i in 0..8 {
        send(&p, &format!("UPS 3 on battery since 02:1{i}"));
    }
    for _ in 0..2 {
        let m = up.next();
        assert!(String::from_utf8_lossy(&m.data).contains("UPS 3 on battery"));
    }
    p.wait_log("storm: copy held back (suppressed)");
    p.stop();
    let saved = std::fs::read_to_string(dir.path().join("queue/storm.json")).unwrap();
    assert!(saved.contains("\"count\":8"), "{saved}");

    let mut p = Postern::start(dir.path(), &cfg, port);
    p.wait_log("storm: suppression on; counts restored windows=1 held=6 adopted=0");
    for i in 8..12 {
        send(&p, &format!("UPS 3 on battery since 02:2{i}"));
    }
    p.wait_log("storm: window ended; digest queued");
    let digest = up.next();
    let text = String::from_utf8_lossy(&digest.data).into_owned();
    assert!(
        text.contains("Subject: [alert storm] UPS 3 on battery since 02:10 (repeated 12 times)"),
        "{text}"
    );
    assert!(
        text.contains("This alert was repeated 12 times between"),
        "{text}"
    );
    assert_eq!(digest.rcpts, vec!["ops@example.test".to_string()]);
    assert!(p.log().contains("count=12"), "{}", p.log());
    assert!(p.log().contains("removed=10"), "{}", p.log());
    p.stop();
    assert!(
        up.rx.try_recv().is_err(),
        "nothing but two copies and the digest went out"
    );
}
