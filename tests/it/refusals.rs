//! Every refusal leaves one log line an admin can grep: the reason word,
//! the client, the reply code (and the sender, recipient and queue id where
//! known). One daemon, one table: each case comes from a loopback address
//! of its own, so the line found is that case's line.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::util::{DEADLINE, Postern, Smtp, free_port};

/// A config with small limits, so each one is easy to reach; the status
/// listener on `web`.
fn config(port: u16, web: u16, hash: &str) -> String {
    format!(
        r#"hostname = "relay.test"
log_level = "debug"

[server]
listen = ["127.0.0.1:{port}", "[::1]:{port}"]
max_message_size = "64KiB"
max_recipients = 2
max_connections = 6
max_connections_per_client = 2
max_connections_per_minute = 4
max_messages_per_minute = 2
max_recipients_per_minute = 3
# The rates apply to allowed clients only when asked (every case here
# comes from an allowed address).
limit_trusted_clients = true
allow_plain_auth_clients = ["127.0.0.0/8"]

[policy]
allow_clients = ["127.0.0.0/8"]
deny_clients = ["127.0.0.2/32"]
deny_senders = ["spam@bad.test"]
deny_recipients = ["blocked@example.test"]

[queue]
dir = "queue"
retry_intervals = ["1s"]

[upstream]
kind = "maildir"
dir = "outbox"

[status]
listen = "127.0.0.1:{web}"

[[user]]
name = "dev"
password_hash = "{hash}"
"#
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A session from `src`, greeting read.
fn open(p: &Postern, src: &str) -> Smtp {
    let mut c = connect(p, src);
    let (code, text) = c.reply();
    assert_eq!(code, 220, "{text}");
    c
}

fn connect(p: &Postern, src: &str) -> Smtp {
    let to = if src.contains(':') {
        SocketAddr::new(ip("::1"), p.port)
    } else {
        SocketAddr::new(ip("127.0.0.1"), p.port)
    };
    Smtp::connect(to, Some(ip(src)))
}

/// Does `line` have the field `needle` (`key=value`, whole; or `key=`
/// with any value)?
fn has_field(line: &str, needle: &str) -> bool {
    line.split_whitespace().any(|w| {
        if needle.ends_with('=') {
            w.starts_with(needle)
        } else {
            w == needle
        }
    })
}

/// The refusal lines of client `src` in `log`.
fn refusals_of<'a>(log: &'a str, src: &str) -> Vec<&'a str> {
    let client = format!("client={src}");
    log.lines()
        .filter(|l| l.contains("refused: ") && has_field(l, &client))
        .collect()
}

/// Wait for a log line that has every field of `fields` and holds every
/// text of `texts`; return it.
fn log_line(p: &Postern, fields: &[String], texts: &[&str]) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let log = p.log();
        if let Some(l) = log
            .lines()
            .find(|l| fields.iter().all(|n| has_field(l, n)) && texts.iter().all(|t| l.contains(t)))
        {
            return l.to_string();
        }
        assert!(
            Instant::now() < end,
            "no log line with {fields:?} and {texts:?}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One case: provoke the refusal from `src`, then expect a line with
/// `reason=WORD`, `client=SRC`, `code=CODE`, the `more` fields (`key=value`,
/// or `key=` for any value) and the `texts`.
struct Case {
    src: &'static str,
    word: &'static str,
    code: u16,
    more: &'static [&'static str],
    texts: &'static [&'static str],
    provoke: fn(&Postern, &'static str),
}

const BIG: usize = 70 * 1024;

fn dialogue(p: &Postern, src: &'static str, lines: &[(&str, u16)]) {
    let mut c = open(p, src);
    for (line, want) in lines {
        c.cmd(line, *want);
    }
}

fn data(p: &Postern, src: &'static str, body: &[u8], want: u16) {
    let mut c = open(p, src);
    c.cmd("EHLO dev", 250);
    c.cmd("MAIL FROM:<dev@lan.test>", 250);
    c.cmd("RCPT TO:<ops@example.test>", 250);
    c.cmd("DATA", 354);
    c.raw(body);
    c.raw(b"\r\n.\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, want, "{text}");
}

const CASES: &[Case] = &[
    Case {
        src: "127.0.0.2",
        word: "deny_clients",
        code: 554,
        more: &[],
        texts: &[],
        provoke: |p, src| {
            let mut c = connect(p, src);
            assert_eq!(c.reply().0, 554);
        },
    },
    Case {
        src: "::1",
        word: "allow_clients",
        code: 554,
        more: &[],
        texts: &[],
        provoke: |p, src| {
            let mut c = connect(p, src);
            assert_eq!(c.reply().0, 554);
        },
    },
    Case {
        src: "127.0.0.10",
        word: "talked_first",
        code: 554,
        more: &[],
        texts: &[],
        provoke: |p, src| {
            // Written at once, before the greeting could have been read.
            // The server looks at what has arrived when it would greet: a
            // first try whose bytes were still on the way is greeted, so it
            // tries again (within max_connections_per_minute).
            for _ in 0..3 {
                let mut c = connect(p, src);
                c.send("EHLO eager");
                if c.reply().0 == 554 {
                    return;
                }
            }
            panic!("never refused for talking first");
        },
    },
    Case {
        src: "127.0.0.11",
        word: "syntax",
        code: 501,
        more: &[],
        texts: &[],
        provoke: |p, src| dialogue(p, src, &[("HELO", 501)]),
    },
    Case {
        src: "127.0.0.12",
        word: "unknown_command",
        code: 500,
        more: &["helo=dev"],
        texts: &[],
        provoke: |p, src| dialogue(p, src, &[("EHLO dev", 250), ("BOGUS", 500)]),
    },
    Case {
        src: "127.0.0.13",
        word: "line_too_long",
        code: 500,
        more: &[],
        texts: &[],
        provoke: |p, src| {
            let long = format!("NOOP {}", "x".repeat(2000));
            dialogue(p, src, &[("EHLO dev", 250), (&long, 500)])
        },
    },
    Case {
        src: "127.0.0.14",
        word: "pipelining_without_ehlo",
        code: 554,
        more: &[],
        texts: &[],
        provoke: |p, src| {
            let mut c = open(p, src);
            c.raw(b"HELO dev\r\nMAIL FROM:<a@lan.test>\r\n");
            assert_eq!(c.reply().0, 554);
        },
    },
    Case {
        src: "127.0.0.15",
        word: "deny_senders",
        code: 550,
        more: &["from=spam@bad.test", "helo=dev"],
        texts: &[],
        provoke: |p, src| {
            dialogue(
                p,
                src,
                &[("EHLO dev", 250), ("MAIL FROM:<spam@bad.test>", 550)],
            )
        },
    },
    Case {
        src: "127.0.0.16",
        word: "message_too_big",
        code: 552,
        more: &["from=dev@lan.test"],
        texts: &[],
        provoke: |p, src| {
            dialogue(
                p,
                src,
                &[
                    ("EHLO dev", 250),
                    ("MAIL FROM:<dev@lan.test> SIZE=99999999", 552),
                ],
            )
        },
    },
    Case {
        src: "127.0.0.17",
        word: "unknown_parameter",
        code: 555,
        more: &[],
        texts: &[],
        provoke: |p, src| {
            dialogue(
                p,
                src,
                &[("EHLO dev", 250), ("MAIL FROM:<dev@lan.test> FOO=1", 555)],
            )
        },
    },
    Case {
        src: "127.0.0.18",
        word: "deny_recipients",
        code: 550,
        more: &["from=dev@lan.test", "rcpt=blocked@example.test"],
        texts: &[],
        provoke: |p, src| {
            dialogue(
                p,
                src,
                &[
                    ("EHLO dev", 250),
                    ("MAIL FROM:<dev@lan.test>", 250),
                    ("RCPT TO:<blocked@example.test>", 550),
                ],
            )
        },
    },
    Case {
        src: "127.0.0.19",
        word: "too_many_recipients",
        code: 452,
        more: &["rcpt=c@example.test"],
        texts: &[],
        provoke: |p, src| {
            dialogue(
                p,
                src,
                &[
                    ("EHLO dev", 250),
                    ("MAIL FROM:<dev@lan.test>", 250),
                    ("RCPT TO:<a@example.test>", 250),
                    ("RCPT TO:<b@example.test>", 250),
                    ("RCPT TO:<c@example.test>", 452),
                ],
            )
        },
    },
    Case {
        src: "127.0.0.20",
        word: "bad_sequence",
        code: 503,
        more: &["from=dev@lan.test"],
        texts: &[],
        provoke: |p, src| {
            dialogue(
                p,
                src,
                &[
                    ("EHLO dev", 250),
                    ("MAIL FROM:<dev@lan.test>", 250),
                    ("DATA", 503),
                ],
            )
        },
    },
    Case {
        src: "127.0.0.21",
        word: "message_too_big",
        code: 552,
        more: &["from=dev@lan.test", "id="],
        texts: &[],
        provoke: |p, src| {
            let mut body = b"Subject: big\r\n\r\n".to_vec();
            while body.len() < BIG {
                body.extend_from_slice(&[b'x'; 70]);
                body.extend_from_slice(b"\r\n");
            }
            data(p, src, &body, 552)
        },
    },
    Case {
        src: "127.0.0.22",
        word: "bare_newline",
        code: 550,
        more: &["id="],
        texts: &[],
        provoke: |p, src| data(p, src, b"Subject: t\r\n\r\none\ntwo", 550),
    },
    Case {
        src: "127.0.0.23",
        word: "nul",
        code: 550,
        more: &["id="],
        texts: &[],
        provoke: |p, src| data(p, src, b"Subject: t\r\n\r\none\0two", 550),
    },
    Case {
        src: "127.0.0.24",
        word: "data_line_too_long",
        code: 550,
        more: &["id="],
        texts: &[],
        provoke: |p, src| {
            let mut body = b"Subject: t\r\n\r\n".to_vec();
            body.extend_from_slice(&[b'x'; 1200]);
            data(p, src, &body, 550)
        },
    },
    Case {
        src: "127.0.0.25",
        word: "header_too_big",
        code: 552,
        more: &["id="],
        texts: &[],
        provoke: |p, src| {
            let mut body = Vec::new();
            for i in 0..1500 {
                body.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(60)).as_bytes());
            }
            body.extend_from_slice(b"\r\nbody");
            data(p, src, &body, 552)
        },
    },
    Case {
        src: "127.0.0.26",
        word: "too_many_hops",
        code: 554,
        more: &["id="],
        texts: &["hops=51"],
        provoke: |p, src| {
            let mut body = Vec::new();
            for i in 0..51 {
                body.extend_from_slice(
                    format!("Received: from h{i} by h{i}; Mon, 1 Jan 2024 00:00:00 +0000\r\n")
                        .as_bytes(),
                );
            }
            body.extend_from_slice(b"Subject: loop\r\n\r\nbody");
            data(p, src, &body, 554)
        },
    },
    Case {
        src: "127.0.0.27",
        word: "message_rate",
        code: 450,
        more: &[],
        texts: &[],
        provoke: |p, src| {
            dialogue(
                p,
                src,
                &[
                    ("EHLO dev", 250),
                    ("MAIL FROM:<dev@lan.test>", 250),
                    ("RSET", 250),
                    ("MAIL FROM:<dev@lan.test>", 250),
                    ("RSET", 250),
                    ("MAIL FROM:<dev@lan.test>", 450),
                ],
            )
        },
    },
    Case {
        src: "127.0.0.28",
        word: "recipient_rate",
        code: 450,
        more: &["rcpt=d@example.test"],
        texts: &[],
        provoke: |p, src| {
            dialogue(
                p,
                src,
                &[
                    ("EHLO dev", 250),
                    ("MAIL FROM:<dev@lan.test>", 250),
                    ("RCPT TO:<a@example.test>", 250),
                    ("RCPT TO:<b@example.test>", 250),
                    ("RSET", 250),
                    ("MAIL FROM:<dev@lan.test>", 250),
                    ("RCPT TO:<c@example.test>", 250),
                    ("RCPT TO:<d@example.test>", 450),
                ],
            )
        },
    },
    Case {
        src: "127.0.0.29",
        word: "auth_failed",
        code: 535,
        more: &[],
        texts: &["user=dev"],
        provoke: |p, src| {
            use base64::Engine;
            let wrong = base64::engine::general_purpose::STANDARD.encode(b"\0dev\0wrong");
            dialogue(
                p,
                src,
                &[("EHLO dev", 250), (&format!("AUTH PLAIN {wrong}"), 535)],
            )
        },
    },
    Case {
        src: "127.0.0.30",
        word: "client_connections",
        code: 421,
        more: &[],
        texts: &[],
        provoke: |p, src| {
            let _a = open(p, src);
            let _b = open(p, src);
            let mut c = connect(p, src);
            assert_eq!(c.reply().0, 421);
        },
    },
    Case {
        src: "127.0.0.31",
        word: "connect_rate",
        code: 421,
        more: &[],
        texts: &[],
        provoke: |p, src| {
            for _ in 0..4 {
                let mut c = open(p, src);
                c.cmd("QUIT", 221);
                assert!(c.closed());
            }
            let mut c = connect(p, src);
            assert_eq!(c.reply().0, 421);
        },
    },
];

#[test]
fn every_refusal_is_one_log_line_with_reason_client_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hash = postern::auth::hash_password(b"right").unwrap();
    let web = free_port();
    let p = Postern::start(dir.path(), &config(port, web, &hash), port);
    for case in CASES {
        (case.provoke)(&p, case.src);
        let mut needles = vec![
            format!("reason={}", case.word),
            format!("client={}", case.src),
            format!("code={}", case.code),
        ];
        needles.extend(case.more.iter().map(|m| m.to_string()));
        let line = log_line(&p, &needles, case.texts);
        assert!(line.contains("refused: "), "{line}");
        // One line per refusal: this client has exactly one.
        let log = p.log();
        let lines = refusals_of(&log, case.src);
        assert_eq!(lines.len(), 1, "for {}: {lines:#?}", case.src);
    }
    // Every connection slot (max_connections = 6) taken: sessions that
    // ended above may still be closing, so open until one is refused.
    let mut held = Vec::new();
    let mut refused = None;
    for i in 41..60 {
        let src = format!("127.0.0.{i}");
        let mut c = connect(&p, &src);
        match c.reply().0 {
            220 => held.push(c),
            421 => {
                refused = Some(src);
                break;
            }
            other => panic!("{other} for {src}"),
        }
    }
    let src = refused.expect("never refused at max_connections");
    assert!(held.len() <= 6, "{} sessions open", held.len());
    let needles = [
        "reason=too_many_connections".to_string(),
        format!("client={src}"),
        "code=421".to_string(),
    ];
    log_line(&p, &needles, &["max=6"]);
    // The metrics count what the log says, by the same words.
    let metrics = get_metrics(web);
    for (word, n) in [
        ("deny_clients", 1),
        ("message_too_big", 2),
        ("deny_recipients", 1),
        ("too_many_connections", 1),
    ] {
        let line = format!("postern_refused_total{{reason=\"{word}\"}} {n}");
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
}

/// The status listener's `/metrics`.
fn get_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
