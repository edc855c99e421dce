//! `postern filter test`: run a message through the rules as the listener
//! would (connect, MAIL, each RCPT, end of headers, end of data) and say,
//! rule by rule, whether it matched and why not, then what would happen
//! to the message. No queue, no network.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{Facts, RcptDecision, Rules, Scanner, Stage, Stop, Verdict};
use crate::smtp::Address;

/// The transaction to try.
#[derive(Debug, Clone)]
pub struct Trial<'a> {
    /// The client's address.
    pub client: IpAddr,
    /// An AUTH user name.
    pub user: Option<&'a str>,
    /// The sender (`None`: `<>`).
    pub from: Option<Address>,
    /// The recipients.
    pub to: Vec<Address>,
    /// The message as a file holds it (LF or CRLF line ends).
    pub message: &'a [u8],
}

/// The report: one line per rule, then the outcome.
pub fn explain(rules: &Rules, t: &Trial) -> String {
    let mut out = String::new();
    let mut crlf = Vec::with_capacity(t.message.len() + t.message.len() / 20);
    for line in t.message.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        crlf.extend_from_slice(body);
        if line.ends_with(b"\n") {
            crlf.extend_from_slice(b"\r\n");
        }
    }
    let mut scanner = Scanner::new(rules.header_names());
    scanner.feed(&crlf);
    scanner.finish();
    let scan = scanner.into_scan();
    let size = crlf.len() as u64;
    let mut v = Verdict::default();
    let mut rcpts: Vec<Address> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    fn base<'b>(t: &'b Trial, rcpts: &'b [Address]) -> Facts<'b> {
        Facts {
            client: t.client,
            user: t.user,
            sender: t.from.as_ref(),
            rcpts,
            scan: None,
            size: 0,
        }
    }
    rules.decide(Stage::Connect, &base(t, &[]), &mut v);
    if v.stop.is_none() {
        rules.decide(Stage::Mail, &base(t, &[]), &mut v);
    }
    if v.stop.is_none() {
        for to in &t.to {
            let f = base(t, &rcpts);
            match rules.rcpt(&f, to, &mut v) {
                RcptDecision::Accept => rcpts.push(to.clone()),
                RcptDecision::Reject(rule, reply) => {
                    notes.push(format!("RCPT {to}: refused by \"{rule}\": {reply}"));
                }
                RcptDecision::Discard(rule) => {
                    v.stop.get_or_insert(Stop::Discard(rule));
                    rcpts.push(to.clone());
                }
                RcptDecision::Redirect(rule, list) => {
                    notes.push(format!(
                        "RCPT {to}: redirected by \"{rule}\" to {}",
                        list.join(", ")
                    ));
                    rcpts.extend(list.iter().filter_map(|a| Address::parse(a).ok()));
                }
            }
        }
    }
    let full = Facts {
        scan: Some(&scan),
        size,
        ..base(t, &rcpts)
    };
    if v.stop.is_none() && !rcpts.is_empty() {
        rules.decide(Stage::Headers, &full, &mut v);
        rules.decide(Stage::Data, &full, &mut v);
    }
    for r in rules.rules() {
        let verdict = if v.matched.iter().any(|m| m == r.name()) {
            "MATCH".to_string()
        } else {
            match r.check(&full, None) {
                Ok(()) => "matches, but not reached (an earlier rule ended it)".to_string(),
                Err(key) => format!("no match ({key})"),
            }
        };
        let _ = writeln!(
            out,
            "rule \"{}\" (decides at {}): {verdict}",
            r.name(),
            r.stage.as_str()
        );
    }
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    let outcome = match &v.stop {
        Some(Stop::Reject(rule, reply)) => format!("refused by \"{rule}\": {reply}"),
        Some(Stop::Discard(rule)) => format!("accepted and dropped (discard, \"{rule}\")"),
        None if rcpts.is_empty() => "refused: no recipient left".to_string(),
        None => {
            let mut parts = vec!["queued".to_string()];
            if let Some(h) = &v.hold {
                parts.push(format!("held (\"{h}\") until `postern queue release`"));
            }
            if let Some(r) = &v.route {
                parts.push(format!("over route \"{r}\""));
            }
            let to: Vec<String> = match &v.redirect {
                Some(list) => list.clone(),
                None => rcpts.iter().map(|a| a.to_string()).collect(),
            };
            parts.push(format!("for {}", to.join(", ")));
            for h in &v.add_header {
                parts.push(format!("adding \"{h}\""));
            }
            for h in &v.remove_header {
                parts.push(format!("removing {h}:"));
            }
            parts.join("; ")
        }
    };
    let _ = writeln!(out, "outcome: {outcome}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_each_rules_verdict_and_the_outcome() {
        let cfg = crate::filter::tests::config(
            "[[filter]]\nname = \"ups\"\nsender = [\"*@ups.lan\"]\nsubject = [\"*battery*\"]\n\
             hold = true\n[[filter]]\nname = \"exe\"\nattachment_ext = [\"exe\"]\n\
             reject = \"550 5.7.1 no\"\n",
        );
        let rules = Rules::new(&cfg.filters);
        let report = explain(
            &rules,
            &Trial {
                client: "192.168.1.9".parse().unwrap(),
                user: None,
                from: Address::parse("apc@ups.lan").ok(),
                to: vec![Address::parse("ops@example.com").unwrap()],
                message: b"Subject: UPS on battery\n\nbody\n",
            },
        );
        assert_eq!(
            report,
            "rule \"ups\" (decides at end of headers): MATCH\n\
             rule \"exe\" (decides at end of data): no match (attachment_ext)\n\
             outcome: queued; held (\"ups\") until `postern queue release`; for ops@example.com\n"
        );
    }
}
