//! The rule engine and the scanner.

use super::*;
use crate::config::{self, ParseOptions};

/// A minimal config (one maildir route named "m365") with `text` after
/// it: the filter and storm tests' one way to read their tables.
pub(crate) fn config(text: &str) -> config::Config {
    let full = format!(
        "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n[[route]]\nname = \"m365\"\n\
         domains = [\"*\"]\nkind = \"maildir\"\ndir = \"out\"\n{text}"
    );
    let opts = ParseOptions {
        skip_file_checks: true,
        default_hostname: Some("relay.test".into()),
    };
    config::parse_with(&full, std::path::Path::new("t.toml"), &opts)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn rules(text: &str) -> Rules {
    Rules::new(&config(text).filters)
}

fn scanned(msg: &str, wanted: &[&str]) -> Scan {
    let mut s = Scanner::new(wanted.iter().map(|w| w.to_string()).collect());
    // In awkward pieces: the scanner must not care where reads end.
    for chunk in msg.as_bytes().chunks(7) {
        s.feed(chunk);
    }
    s.finish();
    s.into_scan()
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

#[test]
fn each_rule_decides_at_the_earliest_point() {
    let r = rules(
        "[[filter]]\nname = \"c\"\nclient = [\"10.0.0.0/8\"]\nhold = true\n\
         [[filter]]\nname = \"m\"\nsender = [\"*@ups.lan\"]\nhold = true\n\
         [[filter]]\nname = \"r\"\nsender = [\"*@ups.lan\"]\nrecipient = [\"*@x\"]\nhold = true\n\
         [[filter]]\nname = \"h\"\nsubject = [\"*\"]\nhold = true\n\
         [[filter]]\nname = \"d\"\nsize_over = 10\nsender = [\"a*\"]\nhold = true\n",
    );
    let stages: Vec<Stage> = r.rules().iter().map(|r| r.stage).collect();
    assert_eq!(
        stages,
        vec![
            Stage::Connect,
            Stage::Mail,
            Stage::Rcpt,
            Stage::Headers,
            Stage::Data
        ]
    );
    assert!(r.needs_scan());
}

#[test]
fn reject_at_rcpt_is_per_recipient_and_redirect_replaces_it() {
    let r = rules(
        "[[filter]]\nname = \"no-ceo\"\nrecipient = [\"ceo@*\"]\nreject = \"550 5.7.1 not the CEO\"\n\
         [[filter]]\nname = \"to-ops\"\nrecipient = [\"root@*\"]\nredirect = [\"ops@example.com\"]\n",
    );
    let sender = addr("ups@ups.lan");
    let f = Facts {
        client: "127.0.0.1".parse().unwrap(),
        user: None,
        sender: Some(&sender),
        rcpts: &[],
        scan: None,
        size: 0,
    };
    let mut v = Verdict::default();
    match r.rcpt(&f, &addr("ceo@example.com"), &mut v) {
        RcptDecision::Reject(name, reply) => {
            assert_eq!(name, "no-ceo");
            assert_eq!(reply.code, 550);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.rcpt(&f, &addr("root@lan"), &mut v),
        RcptDecision::Redirect("to-ops".into(), vec!["ops@example.com".into()])
    );
    assert_eq!(
        r.rcpt(&f, &addr("bob@example.com"), &mut v),
        RcptDecision::Accept
    );
    assert!(v.is_plain());
}

#[test]
fn headers_and_attachments_decide_later() {
    let r = rules(
        "[[filter]]\nname = \"ups\"\nsubject = [\"/on battery/i\"]\nheader = [\"X-Mailer: APC*\"]\n\
         route = \"m365\"\nadd_header = [\"X-Alert: ups\"]\nremove_header = [\"X-Internal\"]\n\
         [[filter]]\nname = \"exe\"\nattachment_ext = [\"exe\"]\nreject = \"550 5.7.1 No executables\"\n",
    );
    let msg = "From: ups@lan\r\nSubject: =?utf-8?Q?UPS_1_on_battery?=\r\nX-Mailer: APC Network\r\n \
               Management Card\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
               preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b1\r\n\
               Content-Type: application/octet-stream; name=\"x.EXE\"\r\n\
               Content-Disposition: attachment;\r\n filename*=utf-8''tool%20v2.exe\r\n\r\nTVqQAAMA\r\n\
               --b1--\r\n";
    let scan = scanned(msg, &["x-mailer"]);
    assert_eq!(scan.subject.as_deref(), Some("UPS 1 on battery"));
    assert_eq!(
        scan.fields("X-Mailer").collect::<Vec<_>>(),
        vec!["APC Network Management Card"]
    );
    assert_eq!(
        scan.attachments,
        vec![Attachment {
            content_type: "application/octet-stream".into(),
            filename: Some("tool v2.exe".into()),
        }]
    );
    assert!(
        scan.digest_fields.starts_with("From: ups@lan\r\nSubject: "),
        "{}",
        scan.digest_fields
    );
    let f = Facts {
        client: "127.0.0.1".parse().unwrap(),
        user: None,
        sender: None,
        rcpts: &[],
        scan: Some(&scan),
        size: msg.len() as u64,
    };
    let mut v = Verdict::default();
    r.decide(Stage::Headers, &f, &mut v);
    assert_eq!(v.route.as_deref(), Some("m365"));
    assert_eq!(v.remove_header, vec!["x-internal".to_string()]);
    assert_eq!(v.add_header[0].to_string(), "X-Alert: ups");
    r.decide(Stage::Data, &f, &mut v);
    assert!(matches!(&v.stop, Some(Stop::Reject(n, _)) if n == "exe"));
    assert_eq!(v.matched, vec!["ups".to_string(), "exe".to_string()]);
}

#[test]
fn a_rule_says_which_condition_failed() {
    let r = rules(
        "[[filter]]\nname = \"x\"\nsender = [\"*@ups.lan\"]\nuser = [\"scanner\"]\nhold = true\n",
    );
    let s = addr("a@ups.lan");
    let f = Facts {
        client: "127.0.0.1".parse().unwrap(),
        user: None,
        sender: Some(&s),
        rcpts: &[],
        scan: None,
        size: 0,
    };
    assert_eq!(r.rules()[0].check(&f, None), Err("user"));
    let f = Facts {
        user: Some("Scanner"),
        ..f
    };
    assert_eq!(r.rules()[0].check(&f, None), Ok(()));
}

#[test]
fn the_scanner_finds_the_header_end_and_stays_bounded() {
    let mut s = Scanner::new(Vec::new());
    assert_eq!(s.feed(b"Subject: a\r\n"), None);
    assert_eq!(s.feed(b"\r\nbody\r\n"), Some(2));
    // A huge field is kept only up to its cap; a long body is not kept.
    let mut s = Scanner::new(vec!["x-big".into()]);
    let big = format!("X-Big: {}\r\n\r\n", "a".repeat(100_000));
    s.feed(big.as_bytes());
    s.feed(&vec![b'b'; 1 << 20]);
    s.finish();
    let scan = s.into_scan();
    assert!(scan.fields("x-big").next().unwrap().len() <= mime::FIELD_CAP);
    assert_eq!(scan.excerpt.len(), mime::EXCERPT_LEN);
    // Nested multiparts; a part without a name that is not text counts.
    let msg = "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\
               Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\
               Content-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>\r\n--b--\r\n\
               --a\r\nContent-Type: image/png\r\n\r\nPNG\r\n--a--\r\n";
    let scan = scanned(msg, &[]);
    assert_eq!(scan.attachments.len(), 1);
    assert_eq!(scan.attachments[0].content_type, "image/png");
}
