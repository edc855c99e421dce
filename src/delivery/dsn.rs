//! Failure reports (RFC 3464 delivery status notifications), sent from `<>`
//! to the envelope sender, naming only the recipients that failed.
//!
//! When anything in it is UTF-8 (the original was sent with SMTPUTF8, its
//! headers or a failed address are not ASCII), the report uses RFC 6533's
//! types, `message/global-delivery-status` (`utf-8;` addresses) and
//! `message/global-headers`, as a strict reader expects; the queue sends it
//! with SMTPUTF8 when its recipient needs it.
//!
//! A message from `<>` that fails (a report itself, or a bounce relayed for
//! a device) gets no report to its sender, which has none: delivery sends a
//! copy to the postmaster instead, once ([`render_postmaster_copy`]).

use std::fmt::Write as _;

use crate::smtp::header::format_date;
use crate::smtp::{Address, ReversePath};

/// One failed recipient.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The recipient address.
    pub rcpt: Address,
    /// RFC 3463 status, e.g. `5.1.1`, or `4.4.7` for an expired message.
    pub status: String,
    /// `smtp; 550 5.1.1 …` or a local explanation, one line.
    pub diagnostic: String,
    /// The host that said so, if any (`host[ip]:port`).
    pub remote: Option<String>,
}

/// What the report needs to know about the original message.
#[derive(Debug)]
pub struct Original<'a> {
    /// Our queue id.
    pub id: &'a str,
    /// Envelope sender (the report's recipient).
    pub from: &'a ReversePath,
    /// Arrival time, unix seconds.
    pub arrival: u64,
    /// The original header section (CRLF lines), possibly truncated.
    pub headers: &'a [u8],
    /// The original was sent with SMTPUTF8.
    pub smtputf8: bool,
}

impl Original<'_> {
    /// Does a report on it need RFC 6533's UTF-8 types?
    fn global(&self, failures: &[Failure], to: &str) -> bool {
        self.smtputf8
            || !self.headers.is_ascii()
            || !to.is_ascii()
            || !self.from.as_str().is_ascii()
            || failures.iter().any(|f| f.rcpt.is_utf8())
    }
}

/// Keep header values we generate on one line, whatever they were fed.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The complete report message, CRLF lines.
pub fn render(hostname: &str, orig: &Original<'_>, failures: &[Failure], now: u64) -> Vec<u8> {
    render_for(hostname, orig, failures, now, orig.from.as_str())
}

/// [`render`] addressed to `to` (the `postmaster`, when set) instead of the
/// original sender.
pub fn render_to(
    hostname: &str,
    orig: &Original<'_>,
    failures: &[Failure],
    now: u64,
    to: &Address,
) -> Vec<u8> {
    render_for(hostname, orig, failures, now, to.as_str())
}

/// The postmaster's copy of a failure of a message from `<>` (Postfix's
/// "double bounce"): nobody else can be told. Never sent for a message that
/// was itself addressed to the postmaster.
pub fn render_postmaster_copy(
    hostname: &str,
    orig: &Original<'_>,
    failures: &[Failure],
    now: u64,
    postmaster: &Address,
) -> Vec<u8> {
    render_for(hostname, orig, failures, now, postmaster.as_str())
}

fn render_for(
    hostname: &str,
    orig: &Original<'_>,
    failures: &[Failure],
    now: u64,
    to: &str,
) -> Vec<u8> {
    let boundary = format!("{}.report/{}", orig.id, hostname);
    let global = orig.global(failures, to);
    let (report_type, status_type, headers_type) = if global {
        (
            "global-delivery-status",
            "message/global-delivery-status",
            "message/global-headers",
        )
    } else {
        (
            "delivery-status",
            "message/delivery-status",
            "text/rfc822-headers",
        )
    };
    let double = orig.from.is_null();
    let subject = if double {
        "Postmaster Copy: Undelivered Mail from <>"
    } else {
        "Undelivered Mail Returned to Sender"
    };
    let mut m = String::with_capacity(2048);
    let expired = failures.iter().all(|f| f.status == "4.4.7");
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.report@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type={report_type};\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This is the mail relay at {hostname}.\r\n\
         \r\n",
        to = one_line(to),
        date = format_date(now),
        id = orig.id,
    );
    if double {
        m.push_str(
            "A message from <> (a failure report, or a bounce relayed for a device) could not\r\n\
             be delivered. It has no sender to tell, so you get this copy; nothing else is sent.\r\n",
        );
    } else if expired {
        m.push_str(
            "Your message could not be delivered in the time allowed; the relay gave up.\r\n",
        );
    } else {
        m.push_str("Your message could not be delivered to the recipients below.\r\n");
    }
    m.push_str("Other recipients, if any, are not affected by this report.\r\n\r\n");
    for f in failures {
        let _ = write!(
            m,
            "<{}>: {}\r\n",
            one_line(f.rcpt.as_str()),
            one_line(&f.diagnostic)
        );
    }
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Type: {status_type}\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n\
         X-Postern-Queue-ID: {id}\r\n\
         Arrival-Date: {arr}\r\n",
        id = orig.id,
        arr = format_date(orig.arrival),
    );
    for f in failures {
        // RFC 6533 §3: a UTF-8 address has its own type.
        let kind = if f.rcpt.is_utf8() { "utf-8" } else { "rfc822" };
        let _ = write!(
            m,
            "\r\nFinal-Recipient: {kind}; {}\r\nAction: failed\r\nStatus: {}\r\n",
            one_line(f.rcpt.as_str()),
            one_line(&f.status),
        );
        if let Some(r) = &f.remote {
            let _ = write!(m, "Remote-MTA: dns; {}\r\n", one_line(r));
        }
        let _ = write!(m, "Diagnostic-Code: {}\r\n", one_line(&f.diagnostic));
    }
    let _ = write!(
        m,
        "\r\n--{boundary}\r\nContent-Type: {headers_type}\r\n\r\n"
    );
    let mut out = m.into_bytes();
    out.extend_from_slice(orig.headers);
    if !orig.headers.ends_with(b"\r\n") && !orig.headers.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The header section at the start of `body` (up to and including the
/// empty line), or all of `body` if it has no end within it.
pub fn header_section(body: &[u8]) -> &[u8] {
    match body.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &body[..i + 2],
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_only_the_failed_recipients_and_carries_the_headers() {
        let f = vec![Failure {
            rcpt: Address::parse("bad@x.example").unwrap(),
            status: "5.1.1".into(),
            diagnostic: "smtp; 550 5.1.1 no such user".into(),
            remote: Some("mx[192.0.2.1]:25".into()),
        }];
        let orig = Original {
            id: "AB12",
            from: &ReversePath::Path(Address::parse("dev@lan").unwrap()),
            arrival: 0,
            headers: b"Subject: hi\r\nFrom: dev@lan\r\n",
            smtputf8: false,
        };
        let out = String::from_utf8(render("relay.lan", &orig, &f, 86400)).unwrap();
        assert!(out.contains("To: <dev@lan>\r\n"));
        assert!(out.contains(
            "Final-Recipient: rfc822; bad@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(out.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
        assert!(
            out.contains(
                "Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\nFrom: dev@lan\r\n"
            )
        );
        assert_eq!(out.matches("Final-Recipient").count(), 1);
        // Canonical CRLF only.
        let b = out.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if c == b'\n' {
                assert_eq!(b[i - 1], b'\r', "bare LF at {i}");
            }
        }
    }

    #[test]
    fn hostile_text_cannot_break_a_header_line() {
        let f = vec![Failure {
            rcpt: Address::parse("a@b").unwrap(),
            status: "5.0.0".into(),
            diagnostic: "smtp; 550 evil\r\nBcc: victim@x".into(),
            remote: None,
        }];
        let orig = Original {
            id: "1",
            from: &ReversePath::Path(Address::parse("x@y").unwrap()),
            arrival: 0,
            headers: b"",
            smtputf8: false,
        };
        let out = String::from_utf8(render("h", &orig, &f, 0)).unwrap();
        assert!(!out.contains("\r\nBcc:"));
    }

    #[test]
    fn a_utf8_report_uses_the_global_types() {
        // Once a report to a UTF-8 sender carried its raw UTF-8 headers as
        // text/rfc822-headers and a plain delivery-status.
        let f = vec![Failure {
            rcpt: Address::parse("usuário@exemplo.test").unwrap(),
            status: "5.1.1".into(),
            diagnostic: "smtp; 550 5.1.1 no".into(),
            remote: None,
        }];
        let from = ReversePath::Path(Address::parse("δοκιμή@παράδειγμα.test").unwrap());
        let orig = Original {
            id: "7",
            from: &from,
            arrival: 0,
            headers: "Subject: ação\r\n".as_bytes(),
            smtputf8: true,
        };
        let out = String::from_utf8(render("h", &orig, &f, 0)).unwrap();
        assert!(out.contains("To: <δοκιμή@παράδειγμα.test>\r\n"), "{out}");
        assert!(out.contains("report-type=global-delivery-status;"), "{out}");
        assert!(out.contains("Content-Type: message/global-delivery-status\r\n"));
        assert!(out.contains("Final-Recipient: utf-8; usuário@exemplo.test\r\n"));
        assert!(out.contains("Content-Type: message/global-headers\r\n\r\nSubject: ação\r\n"));
        assert!(!out.contains("rfc822-headers") && !out.contains("report-type=delivery-status"));
        // All ASCII: the RFC 3464 types, as before.
        let f = vec![Failure {
            rcpt: Address::parse("a@b.test").unwrap(),
            ..f[0].clone()
        }];
        let from = ReversePath::Path(Address::parse("dev@lan").unwrap());
        let orig = Original {
            from: &from,
            headers: b"Subject: x\r\n",
            smtputf8: false,
            ..orig
        };
        let out = String::from_utf8(render("h", &orig, &f, 0)).unwrap();
        assert!(out.contains("Content-Type: message/delivery-status\r\n"));
        assert!(out.contains("Final-Recipient: rfc822; a@b.test\r\n"));
        assert!(out.contains("Content-Type: text/rfc822-headers\r\n"));
    }

    #[test]
    fn the_postmaster_copy_says_what_it_is() {
        let f = vec![Failure {
            rcpt: Address::parse("dev@lan").unwrap(),
            status: "5.4.6".into(),
            diagnostic: "smtp; 554 5.4.6 mail loop".into(),
            remote: None,
        }];
        let orig = Original {
            id: "9",
            from: &ReversePath::Null,
            arrival: 0,
            headers: b"Subject: Undelivered Mail Returned to Sender\r\n",
            smtputf8: false,
        };
        let pm = Address::parse("pm@example.test").unwrap();
        let out = String::from_utf8(render_postmaster_copy("h", &orig, &f, 0, &pm)).unwrap();
        assert!(out.contains("To: <pm@example.test>\r\n"));
        assert!(out.contains("Subject: Postmaster Copy: Undelivered Mail from <>\r\n"));
        assert!(out.contains("Final-Recipient: rfc822; dev@lan\r\n"));
    }

    #[test]
    fn header_section_stops_at_the_empty_line() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
    }
}
