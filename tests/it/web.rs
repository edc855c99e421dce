//! The status listener (`[status] listen`): `/metrics` and `/` from a
//! running daemon; refusals outside allow_clients, over-large requests,
//! other methods and paths; a cap on connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::*;

/// Send `request` raw and read the whole answer (the server closes).
fn http(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(port: u16, path: &str) -> String {
    http(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

fn start(dir: &std::path::Path, status: &str) -> (Postern, u16) {
    let port = free_port();
    let web = free_port();
    let cfg = config(port, "kind = \"maildir\"\ndir = \"out\"", "")
        + &format!("\n[status]\nlisten = \"127.0.0.1:{web}\"\n{status}\n");
    let mut p = Postern::start(dir, &cfg, port);
    p.wait_log("status listener");
    (p, web)
}

#[test]
fn metrics_and_page_are_served_and_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, web) = start(dir.path(), "");
    let mut c = p.smtp();
    c.reply();
    c.cmd("EHLO sensor", 250);
    let (code, _) = c.send_mail(
        "dev@lan.test",
        &["ops@example.test"],
        b"Subject: x\r\n\r\ny",
    );
    assert_eq!(code, 250);
    c.cmd("QUIT", 221);
    p.wait_log("status=sent");
    // Counted just after the delivery line: wait for the count.
    let end = std::time::Instant::now() + DEADLINE;
    let m = loop {
        let m = get(web, "/metrics");
        if m.contains("\npostern_delivery_latency_seconds_count 1\n") {
            break m;
        }
        assert!(std::time::Instant::now() < end, "{m}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    assert!(m.contains("Content-Type: text/plain; version=0.0.4"), "{m}");
    assert!(m.contains("\npostern_messages_accepted_total 1\n"), "{m}");
    assert!(
        m.contains("\npostern_delivered_total{route=\"maildir\"} 1\n"),
        "{m}"
    );
    // The message leaves the queue once its outcome is written, a moment
    // after the delivery line: wait for the page to say so.
    let end = std::time::Instant::now() + DEADLINE;
    let page = loop {
        let page = get(web, "/");
        if page.contains("<p id=\"health\">OK: 0 queued</p>") {
            break page;
        }
        assert!(std::time::Instant::now() < end, "{page}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("Content-Type: text/html; charset=utf-8"),
        "{page}"
    );
    assert!(page.contains("<td>maildir</td><td>ok</td>"), "{page}");
    // HEAD: the head only.
    let head = http(web, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(get(web, "/nope").starts_with("HTTP/1.1 404 "));
    assert!(http(web, b"POST / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(http(web, b"hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    let r = http(web, big.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431 "), "{r:?}");
}

#[test]
fn only_allowed_clients_and_a_few_connections_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, web) = start(dir.path(), "allow_clients = [\"10.0.0.0/8\"]");
    let r = get(web, "/metrics");
    assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{r}");
    assert!(r.contains("[status] allow_clients"), "{r}");

    let dir = tempfile::tempdir().unwrap();
    let (_p, web) = start(dir.path(), "");
    // Four silent clients hold every slot: a fifth is closed at once,
    // without an answer.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", web)).unwrap())
        .collect();
    // The daemon accepts in order: once a request on a fifth connection
    // is answered after the four went away, the cap held them.
    let mut fifth = TcpStream::connect(("127.0.0.1", web)).unwrap();
    fifth.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = Vec::new();
    let _ = fifth.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let n = fifth.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf));
    drop(idle);
    // Freed slots serve again (each closed client ends its task).
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let r = get(web, "/metrics");
        if r.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        assert!(std::time::Instant::now() < end, "never served again: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
