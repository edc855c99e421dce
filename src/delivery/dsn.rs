//! Delivery status notifications (RFC 3464): failure reports, delay
//! warnings and success reports, sent from `<>` to the envelope sender (or
//! the `postmaster`), naming only the recipients they are about. One report
//! may hold recipients with different actions (one failed, one relayed):
//! delivery sends at most one report per attempt.
//!
//! Each report says in plain words what happened and what to do where
//! postern knows (the provider hints, the usual meaning of a status), and
//! carries the machine-readable part: `Reporting-MTA`, the sender's
//! `Original-Envelope-Id` (RFC 3461 ENVID), and per recipient its
//! `Original-Recipient` (ORCPT), `Action`, `Status`, `Remote-MTA: dns;
//! host` and `Diagnostic-Code: smtp; reply`. Its Message-ID is its own (two
//! reports on one message never share one: mail stores that de-duplicate
//! would drop the second). What it returns of the original is the header
//! section, or the whole message when the sender asked for it (`RET=FULL`)
//! and it is small enough ([`Original::content`] is already cut to that).
//!
//! When anything in it is UTF-8 (the original was sent with SMTPUTF8, its
//! headers or an address are not ASCII), the report uses RFC 6533's types,
//! `message/global-delivery-status` (`utf-8;` addresses),
//! `message/global-headers` and `message/global`; the queue sends it with
//! SMTPUTF8 when its recipient needs it.
//!
//! A message from `<>` that fails (a report itself, or a bounce relayed for
//! a device) gets no report to its sender, which has none: delivery sends a
//! copy to the postmaster instead, once ([`Report::postmaster_copy`]).
//!
//! Uses `smtp` (addresses, dates, xtext); values only, no I/O.

use std::fmt::Write as _;
use std::time::Duration;

use crate::smtp::Notify;
use crate::smtp::header::format_date;
use crate::smtp::{Address, ReversePath, xtext};

/// What happened to a recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Handed to a next hop that does not speak DSN: no further report
    /// will come from there.
    Relayed,
    /// Delivered (a local outbox).
    Delivered,
    /// Not delivered yet; still being tried.
    Delayed,
    /// Not delivered, and no more attempts.
    Failed,
}

impl Action {
    /// The field value.
    pub fn word(self) -> &'static str {
        match self {
            Action::Relayed => "relayed",
            Action::Delivered => "delivered",
            Action::Delayed => "delayed",
            Action::Failed => "failed",
        }
    }
}

/// One recipient a report is about.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The recipient address (after aliases).
    pub rcpt: Address,
    /// RFC 3461 ORCPT as stored (`rfc822;xtext`), for Original-Recipient.
    pub orcpt: Option<String>,
    /// What happened.
    pub action: Action,
    /// RFC 3463 status, e.g. `5.1.1`, `4.4.7`, `2.0.0`.
    pub status: String,
    /// `smtp; 550 5.1.1 …`: the typed diagnostic, one line.
    pub diagnostic: Option<String>,
    /// The host name of the server that said so (Remote-MTA).
    pub remote: Option<String>,
    /// In plain words: what this means and what to do, where known.
    pub advice: Option<String>,
    /// A delayed recipient: the relay gives up at this time (unix seconds).
    pub will_retry_until: Option<u64>,
}

/// What the report needs to know about the original message.
#[derive(Debug)]
pub struct Original<'a> {
    /// Our queue id of the original.
    pub id: &'a str,
    /// Envelope sender of the original.
    pub from: &'a ReversePath,
    /// Arrival time, unix seconds.
    pub arrival: u64,
    /// What the report returns: the header section (CRLF lines), or the
    /// whole message when `whole`.
    pub content: &'a [u8],
    /// `content` is the whole message (RET=FULL), not the header section.
    pub whole: bool,
    /// RET=FULL was asked for, but the message is over this many octets:
    /// the report says why it returns the header section only.
    pub too_big_to_return: Option<u64>,
    /// The original was sent with SMTPUTF8.
    pub smtputf8: bool,
    /// RFC 3461 ENVID as stored (xtext), for Original-Envelope-Id.
    pub envid: Option<&'a str>,
}

/// The report itself: who sends it, its own id, to whom, when.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// Our host name (Reporting-MTA, From, Message-ID).
    pub hostname: &'a str,
    /// The report's own queue id (its Message-ID is made from it).
    pub id: &'a str,
    /// Its recipient.
    pub to: &'a Address,
    /// Now, unix seconds (Date).
    pub now: u64,
}

/// Keep header values we generate on one line, whatever they were fed.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Report<'_> {
    /// The report to the original's sender (or the postmaster standing in
    /// for it), CRLF lines.
    pub fn render(&self, orig: &Original<'_>, entries: &[Entry]) -> Vec<u8> {
        self.render_as(orig, entries, false)
    }

    /// The postmaster's copy of a failure of a message from `<>`
    /// (Postfix's "double bounce"): nobody else can be told. Never sent
    /// for a message that was itself addressed to the postmaster.
    pub fn postmaster_copy(&self, orig: &Original<'_>, entries: &[Entry]) -> Vec<u8> {
        self.render_as(orig, entries, true)
    }

    fn render_as(&self, orig: &Original<'_>, entries: &[Entry], double: bool) -> Vec<u8> {
        let hostname = self.hostname;
        let to = self.to.as_str();
        let boundary = format!("{}.{}.report/{}", orig.id, self.id, hostname);
        let global = orig.smtputf8
            || !orig.content.is_ascii()
            || !to.is_ascii()
            || !orig.from.as_str().is_ascii()
            || entries.iter().any(|e| e.rcpt.is_utf8());
        let (report_type, status_type) = if global {
            ("global-delivery-status", "message/global-delivery-status")
        } else {
            ("delivery-status", "message/delivery-status")
        };
        let content_type = match (orig.whole, global) {
            (true, true) => "message/global",
            (true, false) => "message/rfc822",
            (false, true) => "message/global-headers",
            (false, false) => "text/rfc822-headers",
        };
        // The worst news decides the subject.
        let worst = entries.iter().map(|e| e.action).max();
        let subject = match worst {
            _ if double => "Postmaster Copy: Undelivered Mail from <>",
            Some(Action::Failed) => "Undelivered Mail Returned to Sender",
            Some(Action::Delayed) => "Delayed Mail (still being retried)",
            _ => "Successful Mail Delivery Report",
        };
        let mut m = String::with_capacity(2048);
        let _ = write!(
            m,
            "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
             To: <{to}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: <{orig_id}.{id}.report@{hostname}>\r\n\
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
             This is the mail relay at {hostname}, about your message {orig_id}\r\n\
             (received {arrival}).\r\n",
            to = one_line(to),
            date = format_date(self.now),
            orig_id = orig.id,
            id = self.id,
            arrival = format_date(orig.arrival),
        );
        if double {
            m.push_str(
                "\r\nA message from <> (a failure report, or a bounce relayed for a device) could\r\n\
                 not be delivered. It has no sender to tell, so you get this copy; nothing else\r\n\
                 is sent.\r\n",
            );
        }
        for (action, lead) in [
            (
                Action::Failed,
                "It could not be delivered to these recipients, and the relay has given up:",
            ),
            (
                Action::Delayed,
                "It has not been delivered yet to these recipients. The relay keeps trying;\r\n\
                 nothing needs doing unless you want it there sooner. You are told again\r\n\
                 only if it gives up:",
            ),
            (
                Action::Relayed,
                "It was handed on to the next mail server for these recipients (that server\r\n\
                 sends no confirmations of its own, so this is the last one you get):",
            ),
            (Action::Delivered, "It was delivered to these recipients:"),
        ] {
            let mine: Vec<&Entry> = entries.iter().filter(|e| e.action == action).collect();
            if mine.is_empty() {
                continue;
            }
            let _ = write!(m, "\r\n{lead}\r\n\r\n");
            for e in mine {
                let _ = write!(m, "  <{}>\r\n", one_line(e.rcpt.as_str()));
                if let Some(d) = &e.diagnostic {
                    let said = d.split_once("; ").map_or(d.as_str(), |(_, t)| t);
                    match &e.remote {
                        Some(r) => {
                            let _ = write!(m, "    {} said: {}\r\n", one_line(r), one_line(said));
                        }
                        None => {
                            let _ = write!(m, "    {}\r\n", one_line(said));
                        }
                    }
                }
                if let Some(a) = &e.advice {
                    let _ = write!(m, "    What to do: {}\r\n", one_line(a));
                }
            }
        }
        if worst == Some(Action::Failed) {
            m.push_str("\r\nOther recipients, if any, are not affected by this report.\r\n");
        }
        if let Some(max) = orig.too_big_to_return {
            let _ = write!(
                m,
                "\r\nOnly the message's header section is returned below: the whole message is\r\n\
                 larger than the {max} octets a report returns.\r\n"
            );
        }
        let _ = write!(
            m,
            "\r\n--{boundary}\r\n\
             Content-Type: {status_type}\r\n\
             \r\n\
             Reporting-MTA: dns; {hostname}\r\n\
             X-Postern-Queue-ID: {id}\r\n",
            id = orig.id,
        );
        if let Some(envid) = orig.envid {
            // Stored as the sender gave it (xtext); the report carries the
            // text itself.
            let _ = write!(
                m,
                "Original-Envelope-Id: {}\r\n",
                one_line(&xtext::decode_lossy(envid))
            );
        }
        let _ = write!(m, "Arrival-Date: {}\r\n", format_date(orig.arrival));
        for e in entries {
            m.push_str("\r\n");
            if let Some(o) = &e.orcpt {
                let _ = write!(m, "Original-Recipient: {}\r\n", one_line(&orcpt_field(o)));
            }
            // RFC 6533 §3: a UTF-8 address has its own type.
            let kind = if e.rcpt.is_utf8() { "utf-8" } else { "rfc822" };
            let _ = write!(
                m,
                "Final-Recipient: {kind}; {}\r\nAction: {}\r\nStatus: {}\r\n",
                one_line(e.rcpt.as_str()),
                e.action.word(),
                one_line(&e.status),
            );
            if let Some(r) = &e.remote {
                let _ = write!(m, "Remote-MTA: dns; {}\r\n", one_line(r));
            }
            if let Some(d) = &e.diagnostic {
                let _ = write!(m, "Diagnostic-Code: {}\r\n", one_line(d));
            }
            if let (Action::Delayed, Some(t)) = (e.action, e.will_retry_until) {
                let _ = write!(m, "Will-Retry-Until: {}\r\n", format_date(t));
            }
        }
        let _ = write!(
            m,
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
        );
        let mut out = m.into_bytes();
        out.extend_from_slice(orig.content);
        if !orig.content.ends_with(b"\r\n") && !orig.content.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }
}

/// An ORCPT as the Original-Recipient field gives it: `type; address`,
/// the address's xtext decoded.
fn orcpt_field(stored: &str) -> String {
    match stored.split_once(';') {
        Some((kind, addr)) => format!("{}; {}", kind.trim(), xtext::decode_lossy(addr)),
        None => stored.to_string(),
    }
}

/// The header section at the start of `body` (up to and including the
/// empty line), or all of `body` if it has no end within it.
pub fn header_section(body: &[u8]) -> &[u8] {
    match body.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &body[..i + 2],
        None => body,
    }
}

/// `smtp; …` for a reason that is an SMTP reply (`451 4.3.0 busy`), or,
/// for one postern made up (`connect to … failed`), the same reason as a
/// reply with `code` and `status`: a Diagnostic-Code is always typed.
pub fn smtp_diagnostic(why: &str, code: u16, status: &str) -> String {
    if is_reply(why) {
        format!("smtp; {why}")
    } else {
        format!("smtp; {code} {status} {why}")
    }
}

/// Does `text` start like an SMTP reply (three digits, then a space, a
/// hyphen or the end)?
pub fn is_reply(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && matches!(b.get(3), None | Some(b' ' | b'-'))
        && matches!(b[0], b'2'..=b'5')
}

/// The enhanced status code in a reply's text (`451 4.3.0 busy` → `4.3.0`).
pub fn reply_status(text: &str) -> Option<&str> {
    if !is_reply(text) {
        return None;
    }
    let word = text.get(4..)?.split(' ').next()?;
    let parts: Vec<&str> = word.split('.').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.len() <= 3)
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && word.as_bytes().first() == text.as_bytes().first();
    ok.then_some(word)
}

/// The host name in a relay as delivery names it (`mx.example[192.0.2.1]:25`),
/// for Remote-MTA; `None` for one that is not a remote host (a maildir, a
/// route that never connected).
pub fn remote_host(relay: &str) -> Option<String> {
    let (host, _) = relay.split_once('[')?;
    (!host.is_empty()).then(|| host.to_string())
}

/// Does a sender who said `notify` want to hear of `what` (RFC 3461 §4.1)?
/// Saying nothing means failures and delays, not successes.
pub fn wants(notify: Notify, what: Notify) -> bool {
    if notify == Notify::UNSPECIFIED {
        what != Notify::SUCCESS
    } else {
        notify.contains(what)
    }
}

/// A duration as people say it in a report: the largest whole unit.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86400 {
        format!("{}d", s / 86400)
    } else if s >= 3600 {
        format!("{}h", s / 3600)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn failed(rcpt: &str) -> Entry {
        Entry {
            rcpt: addr(rcpt),
            orcpt: None,
            action: Action::Failed,
            status: "5.1.1".into(),
            diagnostic: Some("smtp; 550 5.1.1 no such user".into()),
            remote: Some("mx.x.example".into()),
            advice: Some("check the address".into()),
            will_retry_until: None,
        }
    }

    fn render(orig: &Original<'_>, entries: &[Entry], to: &str, id: &str) -> String {
        let to = addr(to);
        let r = Report {
            hostname: "relay.lan",
            id,
            to: &to,
            now: 86400,
        };
        String::from_utf8(r.render(orig, entries)).unwrap()
    }

    fn orig<'a>(from: &'a ReversePath, content: &'a [u8]) -> Original<'a> {
        Original {
            id: "AB12",
            from,
            arrival: 0,
            content,
            whole: false,
            too_big_to_return: None,
            smtputf8: false,
            envid: None,
        }
    }

    #[test]
    fn report_names_only_the_failed_recipients_and_carries_the_headers() {
        let from = ReversePath::Path(addr("dev@lan"));
        let o = orig(&from, b"Subject: hi\r\nFrom: dev@lan\r\n");
        let out = render(&o, &[failed("bad@x.example")], "dev@lan", "CD34");
        assert!(out.contains("To: <dev@lan>\r\n"));
        assert!(out.contains(
            "Final-Recipient: rfc822; bad@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(out.contains("Remote-MTA: dns; mx.x.example\r\n"), "{out}");
        assert!(out.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
        assert!(
            out.contains(
                "Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\nFrom: dev@lan\r\n"
            )
        );
        assert_eq!(out.matches("Final-Recipient").count(), 1);
        // The text part says it in words, with what to do.
        assert!(
            out.contains("mx.x.example said: 550 5.1.1 no such user"),
            "{out}"
        );
        assert!(out.contains("What to do: check the address"), "{out}");
        // Canonical CRLF only.
        let b = out.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if c == b'\n' {
                assert_eq!(b[i - 1], b'\r', "bare LF at {i}");
            }
        }
    }

    #[test]
    fn two_reports_on_one_message_have_their_own_message_ids() {
        let from = ReversePath::Path(addr("dev@lan"));
        let o = orig(&from, b"Subject: hi\r\n");
        let a = render(&o, &[failed("a@x.example")], "dev@lan", "R1");
        let b = render(&o, &[failed("b@x.example")], "dev@lan", "R2");
        let id = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("Message-ID: "))
                .unwrap()
                .to_string()
        };
        assert_ne!(id(&a), id(&b));
        assert!(id(&a).contains("AB12"), "names the original: {}", id(&a));
    }

    #[test]
    fn envelope_id_original_recipient_and_the_whole_message() {
        let from = ReversePath::Path(addr("dev@lan"));
        let whole = b"Subject: hi\r\n\r\nbody line\r\n";
        let o = Original {
            envid: Some("QQ+2B314"),
            whole: true,
            ..orig(&from, whole)
        };
        let mut e = failed("ops@x.example");
        e.orcpt = Some("rfc822;root+40lan".into());
        let out = render(&o, &[e], "dev@lan", "R1");
        assert!(out.contains("Original-Envelope-Id: QQ+314\r\n"), "{out}");
        assert!(
            out.contains("Original-Recipient: rfc822; root@lan\r\nFinal-Recipient:"),
            "{out}"
        );
        assert!(
            out.contains("Content-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\nbody line\r\n"),
            "{out}"
        );
    }

    #[test]
    fn actions_decide_subject_and_words() {
        let from = ReversePath::Path(addr("dev@lan"));
        let o = orig(&from, b"Subject: hi\r\n");
        let mut relayed = failed("ok@x.example");
        relayed.action = Action::Relayed;
        relayed.status = "2.0.0".into();
        relayed.diagnostic = Some("smtp; 250 2.0.0 queued".into());
        relayed.advice = None;
        let out = render(&o, std::slice::from_ref(&relayed), "dev@lan", "R1");
        assert!(out.contains("Subject: Successful Mail Delivery Report\r\n"));
        assert!(
            out.contains("Action: relayed\r\nStatus: 2.0.0\r\n"),
            "{out}"
        );
        assert!(out.contains("handed on to the next mail server"), "{out}");
        let mut delayed = failed("slow@x.example");
        delayed.action = Action::Delayed;
        delayed.status = "4.4.1".into();
        delayed.will_retry_until = Some(86400 * 3);
        let out = render(&o, &[relayed.clone(), delayed], "dev@lan", "R2");
        assert!(out.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert!(
            out.contains("Action: delayed\r\nStatus: 4.4.1\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Will-Retry-Until: Sun, 04 Jan 1970 00:00:00 +0000\r\n"),
            "{out}"
        );
        assert!(out.contains("The relay keeps trying"), "{out}");
        assert!(!out.contains("not affected by this report"), "{out}");
    }

    #[test]
    fn hostile_text_cannot_break_a_header_line() {
        let mut e = failed("a@b");
        e.diagnostic = Some("smtp; 550 evil\r\nBcc: victim@x".into());
        let from = ReversePath::Path(addr("x@y"));
        let o = Original {
            envid: Some("a+0D+0ABcc:+20v@x"),
            ..orig(&from, b"")
        };
        let out = render(&o, &[e], "x@y", "1");
        assert!(!out.contains("\r\nBcc:"), "{out}");
    }

    #[test]
    fn a_utf8_report_uses_the_global_types() {
        // Once a report to a UTF-8 sender carried its raw UTF-8 headers as
        // text/rfc822-headers and a plain delivery-status.
        let from = ReversePath::Path(addr("δοκιμή@παράδειγμα.test"));
        let o = Original {
            smtputf8: true,
            ..orig(&from, "Subject: ação\r\n".as_bytes())
        };
        let out = render(
            &o,
            &[failed("usuário@exemplo.test")],
            "δοκιμή@παράδειγμα.test",
            "7",
        );
        assert!(out.contains("To: <δοκιμή@παράδειγμα.test>\r\n"), "{out}");
        assert!(out.contains("report-type=global-delivery-status;"), "{out}");
        assert!(out.contains("Content-Type: message/global-delivery-status\r\n"));
        assert!(out.contains("Final-Recipient: utf-8; usuário@exemplo.test\r\n"));
        assert!(out.contains("Content-Type: message/global-headers\r\n\r\nSubject: ação\r\n"));
        assert!(!out.contains("rfc822-headers") && !out.contains("report-type=delivery-status"));
        // All ASCII: the RFC 3464 types, as before.
        let from = ReversePath::Path(addr("dev@lan"));
        let o = orig(&from, b"Subject: x\r\n");
        let out = render(&o, &[failed("a@b.test")], "dev@lan", "8");
        assert!(out.contains("Content-Type: message/delivery-status\r\n"));
        assert!(out.contains("Final-Recipient: rfc822; a@b.test\r\n"));
        assert!(out.contains("Content-Type: text/rfc822-headers\r\n"));
    }

    #[test]
    fn the_postmaster_copy_says_what_it_is() {
        let o = orig(
            &ReversePath::Null,
            b"Subject: Undelivered Mail Returned to Sender\r\n",
        );
        let pm = addr("pm@example.test");
        let r = Report {
            hostname: "h",
            id: "10",
            to: &pm,
            now: 0,
        };
        let out = String::from_utf8(r.postmaster_copy(&o, &[failed("dev@lan")])).unwrap();
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

    #[test]
    fn diagnostics_are_typed_and_hosts_named() {
        assert_eq!(
            smtp_diagnostic("451 4.3.0 busy", 451, "4.4.7"),
            "smtp; 451 4.3.0 busy"
        );
        assert_eq!(
            smtp_diagnostic("connect to 192.0.2.1:25 failed: refused", 451, "4.4.7"),
            "smtp; 451 4.4.7 connect to 192.0.2.1:25 failed: refused"
        );
        assert_eq!(reply_status("451 4.3.0 busy"), Some("4.3.0"));
        assert_eq!(reply_status("451 busy"), None);
        assert_eq!(reply_status("451 5.3.0 mixed"), None);
        assert_eq!(
            remote_host("mx.example[192.0.2.1]:25").as_deref(),
            Some("mx.example")
        );
        assert_eq!(remote_host("maildir:/var/out"), None);
        assert_eq!(remote_host("route 1"), None);
    }
}
