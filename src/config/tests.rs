use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use toml::de::DeValue;

use super::values::PATTERN_FORMS;
use super::*;

/// The one upstream of a file with `[upstream]` (or the first route's).
fn upstream(c: &Config) -> &Upstream {
    &c.outbound.routes[0].upstream
}

/// A duration, checking the form `check --print` shows it in.
fn dur(value: Duration, canonical: &str) -> Dur {
    let d = Dur::new(value);
    assert_eq!(d.to_string(), canonical);
    d
}

/// No file checks, fixed hostname: tests must not depend on the machine.
fn opts() -> ParseOptions {
    ParseOptions {
        skip_file_checks: true,
        default_hostname: Some("relay.test".into()),
    }
}

fn ok(text: &str) -> Config {
    match parse_with(text, Path::new("t.toml"), &opts()) {
        Ok(c) => c,
        Err(errors) => {
            let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            panic!("expected success, got:\n{}", all.join("\n"))
        }
    }
}

/// Errors as (line, col, message).
fn errs_with(text: &str, o: &ParseOptions) -> Vec<(usize, usize, String)> {
    match parse_with(text, Path::new("t.toml"), o) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(errors) => errors
            .into_iter()
            .map(|e| (e.line, e.col, e.message))
            .collect(),
    }
}

fn errs(text: &str) -> Vec<(usize, usize, String)> {
    errs_with(text, &opts())
}

/// The single error of `text`, which must be at line:col.
fn one_error(text: &str, line: usize, col: usize) -> String {
    let e = errs(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    assert_eq!((e[0].0, e[0].1), (line, col), "position of {:?}", e[0].2);
    e[0].2.clone()
}

/// The smallest valid config; tests append to or edit it.
const BASE: &str = "\
[server]
listen = [\"127.0.0.1:2525\"]
[queue]
dir = \"q\"
[upstream]
kind = \"maildir\"
dir = \"out\"
";

fn smarthost(extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n[upstream]\n\
         kind = \"smarthost\"\nhost = \"smtp.example.com\"\n{extra}"
    )
}

#[test]
fn minimal_config_gets_every_default() {
    let c = ok(BASE);
    assert_eq!(c.hostname, "relay.test");
    assert_eq!(c.log_level, "info");
    let s = &c.server;
    assert_eq!(
        s.listen,
        vec!["127.0.0.1:2525".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(s.max_message_size, Size::new(10 << 20));
    assert_eq!(s.max_message_size.to_string(), "10MiB");
    assert_eq!(s.max_recipients, 100);
    assert_eq!(s.max_connections, 64);
    assert_eq!(s.command_timeout, dur(Duration::from_secs(300), "5m"));
    assert_eq!(s.session_timeout, dur(Duration::from_secs(1800), "30m"));
    assert_eq!(s.greeting_timeout, dur(Duration::from_secs(300), "5m"));
    assert_eq!(s.data_end_timeout, dur(Duration::from_secs(300), "5m"));
    let p = &c.policy;
    assert_eq!(
        p.allow_clients,
        vec![
            "127.0.0.0/8".parse::<IpNet>().unwrap(),
            "::1/128".parse().unwrap()
        ]
    );
    assert!(p.deny_clients.is_empty());
    assert!(p.allow_senders.is_empty() && p.deny_senders.is_empty());
    assert!(p.allow_recipients.is_empty() && p.deny_recipients.is_empty());
    let q = &c.queue;
    assert_eq!(q.dir, PathBuf::from("q"));
    assert_eq!(q.max_size, Size::new(64 << 20));
    assert_eq!(q.max_size.to_string(), "64MiB");
    assert_eq!(q.max_messages, 10_000);
    assert_eq!(q.max_age, dur(Duration::from_secs(5 * 86400), "5d"));
    let retries: Vec<u64> = q
        .retry_intervals
        .iter()
        .map(|d| d.value.as_secs())
        .collect();
    assert_eq!(retries, vec![60, 300, 900, 1800, 3600]);
    match upstream(&c) {
        Upstream::Maildir(m) => assert_eq!(m.dir, PathBuf::from("out")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn shown_values_read_back_the_same() {
    // Sizes and durations are shown resolved (the canonical duration, the
    // size in bytes for --print, in the largest whole unit in messages);
    // each form must mean the value it shows.
    let c = ok(&smarthost(""));
    let mut durs = vec![
        c.server.command_timeout,
        c.server.session_timeout,
        c.queue.max_age,
        Dur::new(Duration::from_millis(5_400_250)),
    ];
    durs.extend(c.queue.retry_intervals.iter().copied());
    if let Upstream::Smarthost(h) = upstream(&c) {
        durs.push(h.connect_timeout);
        durs.push(h.command_timeout);
    }
    for d in durs {
        assert_eq!(Dur::parse(&d.to_string()).unwrap(), d);
    }
    for s in [
        c.server.max_message_size,
        c.queue.max_size,
        Size::new(3 << 30),
    ] {
        assert_eq!(Size::parse(&s.to_string()).unwrap(), s, "{s}");
        assert_eq!(Size::parse(&s.bytes.to_string()).unwrap(), s);
    }
    // Not a whole binary unit: messages say it in bytes.
    assert_eq!(Size::new(1500).to_string(), "1500 bytes");
    assert_eq!(
        Dur::new(Duration::from_millis(5_400_250)).to_string(),
        "1h30m250ms"
    );
}

#[test]
fn smarthost_defaults_and_port_from_tls() {
    let c = ok(&smarthost(""));
    let Upstream::Smarthost(h) = upstream(&c) else {
        panic!()
    };
    assert_eq!(h.host, "smtp.example.com");
    assert_eq!((h.tls, h.port), (TlsMode::Starttls, 587));
    assert_eq!(
        (
            h.ca_file.clone(),
            h.username.clone(),
            h.password_file.clone()
        ),
        (None, None, None)
    );
    assert_eq!((h.max_connections, h.messages_per_connection), (2, 100));
    assert_eq!(h.connect_timeout.value, Duration::from_secs(30));
    assert_eq!(h.command_timeout.value, Duration::from_secs(300));
    for (tls, port) in [("none", 25), ("starttls", 587), ("implicit", 465)] {
        let c = ok(&smarthost(&format!("tls = \"{tls}\"\n")));
        let Upstream::Smarthost(h) = upstream(&c) else {
            panic!()
        };
        assert_eq!(h.port, port, "default port for {tls}");
        assert_eq!(h.tls.as_str(), tls);
    }
    let c = ok(&smarthost("port = 2525\ntls = \"none\"\n"));
    let Upstream::Smarthost(h) = upstream(&c) else {
        panic!()
    };
    assert_eq!(h.port, 2525);
}

#[test]
fn syntax_errors_have_positions() {
    let m = one_error("hostname = relay\n", 1, 12);
    assert_eq!(m, "text must be in quotes: write \"relay\"");
    let e = errs("log_level = \"info\"\nlog_level = \"warn\"\n");
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].0, e[0].1), (2, 1));
    assert_eq!(
        e[0].2,
        "'log_level' is defined twice; TOML allows each key and each [table] once"
    );
    // An unclosed list: reported where it opens, without the follow-on
    // complaints about every later line.
    let e = errs("[server]\nlisten = [\"127.0.0.1:25\",\n[queue]\ndir = \"q\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].0, e[0].1), (2, 10));
    assert_eq!(
        e[0].2,
        "this list is never closed; add ']' after its last element"
    );
    let m = one_error("hostname =\nlog_level = \"info\"\n", 1, 11);
    assert_eq!(m, "a value is missing after '='");
    let e = errs("[server\nlisten = []\n");
    assert_eq!((e[0].0, e[0].1), (1, 8), "{e:?}");
    assert!(e[0].2.starts_with("TOML syntax error: "), "{e:?}");
}

#[test]
fn unknown_key_suggests_the_nearest() {
    let text = BASE.replace("[queue]", "max_recipient = 5\n[queue]");
    let m = one_error(&text, 3, 1);
    assert_eq!(
        m,
        "unknown key 'max_recipient' in [server]; did you mean 'max_recipients'?"
    );
    // Case and dashes are free.
    let text = BASE.replace("[queue]", "Max-Connections = 5\n[queue]");
    let m = one_error(&text, 3, 1);
    assert_eq!(
        m,
        "unknown key 'Max-Connections' in [server]; did you mean 'max_connections'?"
    );
    // Nothing close: no suggestion.
    let text = BASE.replace("[queue]", "colour = 5\n[queue]");
    assert_eq!(one_error(&text, 3, 1), "unknown key 'colour' in [server]");
}

#[test]
fn unknown_table_suggests_the_nearest() {
    let text = format!("{BASE}[polcy]\nallow_clients = []\n");
    let m = one_error(&text, 8, 2);
    assert_eq!(m, "unknown table [polcy]; did you mean [policy]?");
    let text = format!("{BASE}[tls]\ncert = \"x\"\n");
    let m = one_error(&text, 8, 2);
    assert_eq!(
        m,
        "unknown table [tls]; the tables are [server], [policy], [queue], [upstream] (or [[route]]) and [aliases]"
    );
    let text = BASE.replace("[queue]", "[server.tls]\ncert = \"x\"\n[queue]");
    let m = one_error(&text, 3, 9);
    assert_eq!(m, "unknown table [server.tls]; [server] has no sub-tables");
}

#[test]
fn keys_in_the_wrong_table_say_where_they_belong() {
    let text = BASE.replace("[queue]", "hostname = \"relay.example.net\"\n[queue]");
    let m = one_error(&text, 3, 1);
    assert!(
        m.starts_with("unknown key 'hostname' in [server]; 'hostname' belongs at the top"),
        "{m}"
    );
    let text = BASE.replace("[queue]", "retry_intervals = [\"1m\"]\n[queue]");
    let m = one_error(&text, 3, 1);
    assert_eq!(
        m,
        "unknown key 'retry_intervals' in [server]; 'retry_intervals' belongs in [queue]"
    );
    let text = format!("max_message_size = \"1MiB\"\n{BASE}");
    let m = one_error(&text, 1, 1);
    assert_eq!(
        m,
        "unknown key 'max_message_size' at the top level; 'max_message_size' belongs in [server], \
         below its [server] line"
    );
    let text = format!("max_mesage_size = \"1MiB\"\n{BASE}");
    let m = one_error(&text, 1, 1);
    assert_eq!(
        m,
        "unknown key 'max_mesage_size' at the top level; did you mean 'max_message_size' in [server]?"
    );
}

#[test]
fn missing_required_keys_and_tables() {
    // listen missing: reported at the [server] header.
    let text = BASE.replace("listen = [\"127.0.0.1:2525\"]\n", "");
    let m = one_error(&text, 1, 1);
    assert_eq!(
        m,
        "missing required key 'listen' in [server]; e.g. listen = [\"127.0.0.1:2525\"]"
    );
    // queue dir missing: at [queue] (line 3).
    let text = BASE.replace("dir = \"q\"\n", "");
    assert!(one_error(&text, 3, 1).starts_with("missing required key 'dir' in [queue]"));
    // Whole table missing: at the top of the file.
    let text = "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n";
    let m = one_error(text, 1, 1);
    assert!(m.starts_with("missing [upstream] table"), "{m}");
    // Empty listen.
    let text = BASE.replace("[\"127.0.0.1:2525\"]", "[]");
    assert!(one_error(&text, 2, 10).starts_with("listen: the list is empty"));
}

#[test]
fn upstream_kind_errors() {
    let text = BASE.replace("kind = \"maildir\"\n", "");
    let m = one_error(&text, 5, 1);
    assert!(
        m.starts_with("missing required key 'kind' in [upstream]"),
        "{m}"
    );
    let text = BASE.replace("\"maildir\"", "\"mxx\"");
    let m = one_error(&text, 6, 8);
    assert!(
        m.starts_with("kind: \"mxx\" is not an upstream kind; expected \"smarthost\""),
        "{m}"
    );
    // With an unknown kind, keys that exist for no kind are still found.
    let text = BASE
        .replace("\"maildir\"", "\"mxx\"")
        .replace("dir = \"out\"", "dri = \"out\"");
    let e = errs(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!((e[1].0, e[1].1), (7, 1));
    assert_eq!(
        e[1].2,
        "unknown key 'dri' in [upstream]; did you mean 'dir'?"
    );
    // Missing host.
    let text = smarthost("").replace("host = \"smtp.example.com\"\n", "");
    assert!(one_error(&text, 5, 1).starts_with("missing required key 'host' in [upstream]"));
}

#[test]
fn keys_of_the_other_kind_are_named() {
    let m = one_error(&smarthost("dir = \"out\"\n"), 8, 1);
    assert_eq!(
        m,
        "'dir' is a setting for kind = \"maildir\"; it has no meaning with kind = \"smarthost\""
    );
    let text = format!("{BASE}host = \"smtp.example.com\"\nport = 25\n");
    let e = errs(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!((e[0].0, e[0].1), (8, 1));
    assert_eq!(
        e[0].2,
        "'host' is a setting for kind = \"smarthost\"; it has no meaning with kind = \"maildir\""
    );
    assert_eq!((e[1].0, e[1].1), (9, 1));
}

#[test]
fn size_values() {
    let cases = [
        ("\"10MiB\"", 10 << 20),
        ("\"512KiB\"", 512 << 10),
        ("\"64MB\"", 64_000_000),
        ("\"1GiB\"", 1 << 30),
        ("\"1gb\"", 1_000_000_000),
        ("\"100000\"", 100_000),
        ("\"200000 B\"", 200_000),
        ("300000", 300_000),
    ];
    for (written, bytes) in cases {
        let text = BASE
            .replace("[queue]", &format!("max_message_size = {written}\n[queue]"))
            .replace("dir = \"q\"", "dir = \"q\"\nmax_size = \"8GiB\"");
        let c = ok(&text);
        assert_eq!(c.server.max_message_size.bytes, bytes, "{written}");
        // Printed resolved, in bytes, whatever the unit written.
        assert!(
            c.to_toml()
                .contains(&format!("\nmax_message_size = {bytes}\n")),
            "{written}"
        );
    }
    let err = |written: &str| {
        one_error(
            &BASE.replace("[queue]", &format!("max_message_size = {written}\n[queue]")),
            3,
            20,
        )
    };
    assert_eq!(
        err("\"10Mibs\""),
        "max_message_size: \"10Mibs\": unknown unit \"Mibs\"; use B, KB, MB, GB (powers of 1000) \
         or KiB, MiB, GiB (powers of 1024)"
    );
    assert!(err("\"1.5MiB\"").contains("sizes are whole numbers"));
    assert!(err("\"MiB\"").contains("is not a size"));
    assert_eq!(
        err("\"99999999999GiB\""),
        "max_message_size: \"99999999999GiB\" is too large"
    );
    assert_eq!(
        err("\"0\""),
        "max_message_size: \"0\" is out of range; expected between 64KiB and 4GiB"
    );
    assert!(err("-5").contains("is not a size"));
    assert!(err("true").contains("expected a size like \"10MiB\""));
}

#[test]
fn duration_values() {
    let cases = [
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1h30m", 5_400_000),
        ("1h 30m", 5_400_000),
        ("1d2h3m4s5ms", 93_784_005),
        ("250ms", 250),
    ];
    for (written, ms) in cases {
        assert_eq!(
            Dur::parse(written).unwrap().value,
            Duration::from_millis(ms),
            "{written}"
        );
    }
    let err = |written: &str| {
        one_error(
            &BASE.replace("[queue]", &format!("command_timeout = {written}\n[queue]")),
            3,
            19,
        )
    };
    assert_eq!(
        err("\"30\""),
        "command_timeout: \"30\": the number 30 has no unit; write e.g. \"30s\" or \"30m\""
    );
    assert_eq!(
        err("30"),
        "command_timeout: the number 30 has no unit; write e.g. \"30s\" or \"30m\" (in quotes)"
    );
    assert!(err("\"30m1h\"").contains("units must go from largest to smallest"));
    assert!(err("\"1m1m\"").contains("units must go from largest to smallest"));
    assert_eq!(
        err("\"5x\""),
        "command_timeout: \"5x\": unknown unit \"x\"; use ms, s, m, h or d"
    );
    assert!(err("\"1.5m\"").contains("durations are whole numbers"));
    assert!(err("\"\"").contains("is empty"));
    assert!(err("\"0s\"").contains("out of range; expected between 1s and 1d"));
    assert!(err("\"99999999999999999d\"").contains("is too large"));
    // max_age has its own range.
    let text = BASE.replace("dir = \"q\"", "dir = \"q\"\nmax_age = \"400d\"");
    assert!(one_error(&text, 5, 11).contains("expected between 1s and 365d"));
}

#[test]
fn listen_values() {
    let c = ok(&BASE.replace(
        "[\"127.0.0.1:2525\"]",
        "[\"127.0.0.1:2525\", \"[::1]:2525\", \"0.0.0.0:25\"]",
    ));
    assert_eq!(c.server.listen.len(), 3);
    let err = |list: &str| one_error(&BASE.replace("[\"127.0.0.1:2525\"]", list), 2, 11);
    assert_eq!(
        err("[\"127.0.0.1\"]"),
        "listen: \"127.0.0.1\" is not an IP address and port: the port is missing; e.g. \"127.0.0.1:2525\""
    );
    assert!(err("[\"::1\"]").contains("IPv6 addresses go in brackets, e.g. \"[::1]:2525\""));
    assert!(err("[\"[::1]\"]").contains("the port is missing"));
    assert!(err("[\"localhost:25\"]").contains("listen takes IP addresses, not host names"));
    assert!(err("[\"127.0.0.1:99999\"]").contains("\"99999\" is not a port"));
    assert!(err("[\"127.0.0.1:0\"]").contains("port 0 is not allowed"));
    assert!(
        err("[25]")
            .contains("expected text in quotes like \"127.0.0.1:2525\", found the number 25")
    );
    // Not a list at all.
    let m = one_error(
        &BASE.replace("[\"127.0.0.1:2525\"]", "\"127.0.0.1:2525\""),
        2,
        10,
    );
    assert!(m.starts_with("listen: expected a list like"), "{m}");
    // Duplicates, reported at the second one.
    let m = one_error(
        &BASE.replace(
            "[\"127.0.0.1:2525\"]",
            "[\"127.0.0.1:2525\", \"127.0.0.1:2525\"]",
        ),
        2,
        29,
    );
    assert_eq!(m, "listen: \"127.0.0.1:2525\" is listed twice");
}

#[test]
fn client_networks() {
    let text = format!(
        "{BASE}[policy]\nallow_clients = [\"10.0.0.0/8\", \"::1/128\", \"192.168.1.20\", \"fd00::1\", \
         \"192.168.1.5/24\", \"::ffff:172.16.0.0/108\"]\ndeny_clients = [\"0.0.0.0/0\"]\n"
    );
    let c = ok(&text);
    let shown: Vec<String> = c
        .policy
        .allow_clients
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        shown,
        [
            "10.0.0.0/8",
            "::1/128",
            "192.168.1.20/32",
            "fd00::1/128",
            "192.168.1.0/24",
            "172.16.0.0/12"
        ]
    );
    assert_eq!(c.policy.deny_clients[0].to_string(), "0.0.0.0/0");
    let err = |v: &str| one_error(&format!("{BASE}[policy]\nallow_clients = [{v}]\n"), 9, 18);
    assert!(err("\"10.0.0.0/33\"").ends_with("the prefix length must be 0 to 32"));
    assert!(err("\"fd00::/129\"").ends_with("the prefix length must be 0 to 128"));
    assert!(err("\"lan\"").starts_with("allow_clients: \"lan\" is not an IP network; expected"));
    assert!(err("\"10.0.0.x/8\"").contains("\"10.0.0.x\" is not an IP address"));
    assert!(err("\"0.0.0.0/0\"").contains("open"));
    assert!(err("\"::/0\"").contains("open"));
}

#[test]
fn address_patterns() {
    assert_eq!(
        AddressPattern::parse("User@Example.COM"),
        Ok(AddressPattern::Mailbox("user@example.com".into()))
    );
    assert_eq!(
        AddressPattern::parse("Example.com"),
        Ok(AddressPattern::Domain("example.com".into()))
    );
    assert_eq!(
        AddressPattern::parse(".example.com"),
        Ok(AddressPattern::Subdomains("example.com".into()))
    );
    assert_eq!(AddressPattern::parse("<>"), Ok(AddressPattern::NullSender));
    assert_eq!(
        AddressPattern::parse("jörg@bücher.de"),
        Ok(AddressPattern::Mailbox("jörg@bücher.de".into()))
    );
    for bad in [
        "",
        "@example.com",
        "user name@example.com",
        "user@",
        "a@b@c",
        "*.example.com",
        "<user@x.org>",
        "exa_mple.com",
        "example..com",
    ] {
        let e = AddressPattern::parse(bad).unwrap_err();
        assert!(e.contains(PATTERN_FORMS), "{bad}: {e}");
    }
    assert!(
        AddressPattern::parse("@example.com")
            .unwrap_err()
            .contains("write it without the '@'")
    );
    assert!(
        AddressPattern::parse("*.example.com")
            .unwrap_err()
            .contains("no wildcards")
    );

    let text = format!(
        "{BASE}[policy]\nallow_senders = [\"<>\", \".example.com\"]\ndeny_recipients = [\"x.org\", \"<>\"]\n"
    );
    let m = one_error(&text, 10, 29);
    assert_eq!(
        m,
        "deny_recipients: \"<>\" is the null sender; it only makes sense in allow_senders and deny_senders"
    );
    let text = format!("{BASE}[policy]\nallow_senders = [\"ok@example.com\", \"@example.com\"]\n");
    let m = one_error(&text, 9, 36);
    assert!(
        m.starts_with("allow_senders: \"@example.com\" has no local part"),
        "{m}"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = format!("{BASE}[policy]\nallow_senders = [\"jörg@bücher.de\", \"bad one\"]\n");
    let m = one_error(&text, 9, 36);
    assert!(m.contains("contains a space"), "{m}");
}

#[test]
fn counts_and_ports() {
    let err = |line: &str| one_error(&BASE.replace("[queue]", &format!("{line}\n[queue]")), 3, 18);
    assert_eq!(
        err("max_recipients = 0"),
        "max_recipients: 0 is out of range; expected 1 to 100000"
    );
    assert_eq!(
        err("max_recipients = 100001"),
        "max_recipients: 100001 is out of range; expected 1 to 100000"
    );
    assert_eq!(
        err("max_recipients = \"100\""),
        "max_recipients: expected a number, found the text \"100\"; remove the quotes"
    );
    assert!(err("max_recipients = 1.5").contains("expected a whole number from 1 to 100000"));
    assert!(err("max_recipients = 99999999999999999999999999").contains("out of range"));
    let c = ok(&BASE.replace("[queue]", "max_recipients = 0x10\n[queue]"));
    assert_eq!(c.server.max_recipients, 16);
    let m = one_error(&smarthost("port = 0\n"), 8, 8);
    assert_eq!(m, "port: 0 is out of range; expected 1 to 65535");
    let m = one_error(&smarthost("port = 65536\n"), 8, 8);
    assert_eq!(m, "port: 65536 is out of range; expected 1 to 65535");
}

#[test]
fn tls_values_and_port_mismatch() {
    let m = one_error(&smarthost("tls = \"ssl\"\n"), 8, 7);
    assert_eq!(
        m,
        "tls: \"ssl\" is ambiguous; write \"implicit\" for TLS from the first byte (port 465) \
         or \"starttls\" for port 587"
    );
    let m = one_error(&smarthost("tls = true\n"), 8, 7);
    assert!(
        m.starts_with("tls: found true, but tls takes a word"),
        "{m}"
    );
    let m = one_error(&smarthost("port = 465\ntls = \"starttls\"\n"), 9, 1);
    assert!(
        m.starts_with("tls = \"starttls\" does not fit port 465"),
        "{m}"
    );
    // tls left at its default: the error points at the port.
    let m = one_error(&smarthost("port = 465\n"), 8, 1);
    assert!(m.contains("set tls = \"implicit\""), "{m}");
    let m = one_error(&smarthost("port = 587\ntls = \"implicit\"\n"), 9, 1);
    assert!(m.contains("port 587 starts in plain text"), "{m}");
    // Unusual ports are the admin's business.
    ok(&smarthost("port = 2465\ntls = \"implicit\"\n"));
}

#[test]
fn host_values() {
    let err = |h: &str| one_error(&smarthost("").replace("\"smtp.example.com\"", h), 7, 8);
    assert!(
        err("\"smtp.gmail.com:587\"")
            .contains("give the port separately: host = \"smtp.gmail.com\" and port = 587")
    );
    assert!(err("\"smtps://smtp.gmail.com\"").contains("give just the host name"));
    assert!(err("\"smtp example.com\"").contains("is not a host name or IP address"));
    assert!(err("\"\"").contains("it is empty"));
    ok(&smarthost("").replace("\"smtp.example.com\"", "\"192.0.2.7\""));
    ok(&smarthost("").replace("\"smtp.example.com\"", "\"2001:db8::7\""));
}

#[test]
fn username_and_password_file_go_together() {
    let m = one_error(&smarthost("username = \"me@example.com\"\n"), 8, 1);
    assert!(
        m.starts_with("username is set but password_file is not"),
        "{m}"
    );
    let m = one_error(&smarthost("password_file = \"/etc/postern/pw\"\n"), 8, 1);
    assert_eq!(
        m,
        "password_file is set but username is not; AUTH needs both"
    );
    let c = ok(&smarthost(
        "username = \"me@example.com\"\npassword_file = \"/etc/postern/pw\"\n",
    ));
    let Upstream::Smarthost(h) = upstream(&c) else {
        panic!()
    };
    assert_eq!(h.username.as_deref(), Some("me@example.com"));
    assert_eq!(h.password_file, Some(PathBuf::from("/etc/postern/pw")));
}

#[test]
fn secret_and_ca_files_are_checked_at_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let not_pem = dir.path().join("ca.der");
    std::fs::write(&not_pem, [0x30u8, 0x82, 0x01]).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing");
    let checks = ParseOptions {
        skip_file_checks: false,
        ..opts()
    };
    let text = |pw: &Path, ca: &Path| {
        smarthost(&format!(
            "username = \"u\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
            pw.display(),
            ca.display()
        ))
    };
    parse_with(&text(&pw, &ca), Path::new("t.toml"), &checks).unwrap();

    let e = errs_with(&text(&missing, &not_pem), &checks);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!((e[0].0, e[0].1), (9, 17));
    assert_eq!(
        e[0].2,
        format!("password_file: \"{}\" does not exist", missing.display())
    );
    assert_eq!((e[1].0, e[1].1), (10, 11));
    assert!(
        e[1].2
            .ends_with("holds no PEM certificate (a \"-----BEGIN CERTIFICATE-----\" block)"),
        "{e:?}"
    );

    let e = errs_with(&text(&empty, dir.path()), &checks);
    assert!(e[0].2.ends_with("\" is empty"), "{e:?}");
    assert!(e[1].2.ends_with("is a directory; expected a file"), "{e:?}");

    let e = errs_with(&text(Path::new("no/such/pw"), &ca), &checks);
    assert!(
        e[0].2
            .contains("relative paths are taken from the working directory"),
        "{e:?}"
    );
    // The same text passes when checks are off.
    ok(&text(&missing, &not_pem));
}

#[test]
fn several_errors_in_one_go_sorted_by_position() {
    let text = "\
log_level = \"loud\"
[server]
listen = [\"127.0.0.1\"]
max_recipient = 5
[queue]
max_age = \"5 days\"
[upstream]
kind = \"smarthost\"
";
    let e = errs(text);
    let pos: Vec<(usize, usize)> = e.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(
        pos,
        vec![(1, 13), (3, 11), (4, 1), (5, 1), (6, 11), (7, 1)],
        "{e:#?}"
    );
    assert!(e[0].2.starts_with("log_level: \"loud\" is not a log level"));
    assert!(e[1].2.contains("the port is missing"));
    assert!(e[2].2.contains("did you mean 'max_recipients'"));
    assert!(e[3].2.starts_with("missing required key 'dir' in [queue]"));
    assert!(e[4].2.contains("unknown unit \"days\""));
    assert!(
        e[5].2
            .starts_with("missing required key 'host' in [upstream]")
    );
    let shown = ConfigError {
        file: "/etc/postern/postern.toml".into(),
        line: 4,
        col: 1,
        message: "m".into(),
    };
    assert_eq!(shown.to_string(), "/etc/postern/postern.toml:4:1: m");
}

#[test]
fn hostname_and_log_level() {
    let c = ok(&format!(
        "hostname = \"Relay-1.example.net\"\nlog_level = \"DEBUG\"\n{BASE}"
    ));
    assert_eq!(
        (c.hostname.as_str(), c.log_level.as_str()),
        ("Relay-1.example.net", "debug")
    );
    let m = one_error(&format!("hostname = \"relay_1.lan\"\n{BASE}"), 1, 12);
    assert!(
        m.starts_with("hostname: \"relay_1.lan\" is not a usable host name: it contains '_'"),
        "{m}"
    );
    assert!(
        one_error(&format!("hostname = \"192.0.2.1\"\n{BASE}"), 1, 12)
            .contains("looks like an IP address")
    );
    // A bad system hostname is reported at the top, with the fix.
    let o = ParseOptions {
        default_hostname: Some("my box".into()),
        ..opts()
    };
    let e = errs_with(BASE, &o);
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].0, e[0].1), (1, 1));
    assert!(
        e[0].2
            .contains("the system's hostname \"my box\" cannot be used"),
        "{e:?}"
    );
    assert!(e[0].2.contains("set hostname = "), "{e:?}");
    // Without an override the system's name (or "localhost") is used.
    let c = parse_with(
        BASE,
        Path::new("t"),
        &ParseOptions {
            skip_file_checks: true,
            default_hostname: None,
        },
    );
    if let Ok(c) = c {
        assert!(!c.hostname.is_empty());
    }
}

#[test]
fn cross_section_checks() {
    let text = BASE.replace("dir = \"q\"", "dir = \"q\"\nmax_size = \"1MiB\"");
    let m = one_error(&text, 5, 1);
    assert!(
        m.starts_with("[queue] max_size (1MiB) is smaller than [server] max_message_size (10MiB)"),
        "{m}"
    );
    let text = BASE.replace("dir = \"out\"", "dir = \"./q/\"");
    let m = one_error(&text, 7, 1);
    assert!(
        m.starts_with("dir: the outbox \"./q/\" is inside the queue directory \"q\""),
        "{m}"
    );
    let text = BASE.replace("dir = \"out\"", "dir = \"q/out\"");
    assert!(one_error(&text, 7, 1).contains("is inside the queue directory"));
    ok(&BASE.replace("dir = \"out\"", "dir = \"qq\""));
}

#[test]
fn wrong_types() {
    let m = one_error(
        "server = 5\n[queue]\ndir = \"q\"\n[upstream]\nkind = \"maildir\"\ndir = \"o\"\n",
        1,
        1,
    );
    assert!(
        m.starts_with(
            "'server' must be a table, written [server] on a line of its own, found the number 5"
        ),
        "{m}"
    );
    let m = one_error(&BASE.replace("dir = \"q\"", "dir = 5"), 4, 7);
    assert_eq!(
        m,
        "dir: expected text in quotes like \"/var/spool/postern\", found the number 5"
    );
    // Inline tables are tables.
    let c = ok(
        "server = { listen = [\"127.0.0.1:25\"] }\nqueue = { dir = \"q\" }\nupstream = { kind = \"maildir\", dir = \"o\" }\n",
    );
    assert_eq!(c.server.listen[0].port(), 25);
}

fn full_smarthost() -> String {
    "hostname = \"relay.example.net\"\nlog_level = \"warn\"\n\
     [server]\nlisten = [\"0.0.0.0:25\", \"[::]:25\"]\nmax_message_size = \"25MB\"\n\
     max_recipients = 50\nmax_connections = 10\ncommand_timeout = \"2m\"\nsession_timeout = \"1h30m\"\n\
     [policy]\nallow_clients = [\"192.168.1.0/24\"]\ndeny_clients = [\"192.168.1.66\"]\n\
     allow_senders = [\"<>\", \".example.com\", \"a@b.example\"]\ndeny_senders = [\"spam@example.com\"]\n\
     allow_recipients = [\"example.com\"]\ndeny_recipients = [\"ceo@example.com\"]\n\
     [queue]\ndir = \"/var/spool/po\\\"stern\"\nmax_size = \"1GiB\"\nmax_messages = 500\nmax_age = \"2d\"\n\
     retry_intervals = [\"30s\", \"1h30m\"]\n\
     [upstream]\nkind = \"smarthost\"\nhost = \"smtp.example.com\"\nport = 465\ntls = \"implicit\"\n\
     ca_file = \"/etc/ca.pem\"\nusername = \"u@example.com\"\npassword_file = \"/etc/pw\"\n\
     max_connections = 3\nmessages_per_connection = 7\nconnect_timeout = \"10s\"\ncommand_timeout = \"1m30s\"\n"
        .to_string()
}

#[test]
fn effective_config_round_trips() {
    for text in [full_smarthost(), BASE.to_string(), smarthost("")] {
        let first = ok(&text).to_toml();
        let again = ok(&first);
        assert_eq!(again.to_toml(), first, "round trip of:\n{first}");
    }
    let printed = ok(&full_smarthost()).to_toml();
    assert!(
        printed.contains("[upstream]\nkind = \"smarthost\"\nhost = \"smtp.example.com\"\n"),
        "{printed}"
    );
    assert!(
        printed.contains("dir = \"/var/spool/po\\\"stern\"\n"),
        "{printed}"
    );
    assert!(
        printed.contains("allow_senders = [\"<>\", \".example.com\", \"a@b.example\"]\n"),
        "{printed}"
    );
    assert!(
        printed.contains("session_timeout = \"1h30m\"\n"),
        "{printed}"
    );
    let printed = ok(BASE).to_toml();
    assert!(
        printed.contains("[upstream]\nkind = \"maildir\"\ndir = \"out\"\n"),
        "{printed}"
    );
    assert!(printed.contains("hostname = \"relay.test\"\n"), "{printed}");
}

#[test]
fn effective_config_prints_every_schema_key() {
    let printed = ok(&full_smarthost()).to_toml();
    let doc = DeTable::parse(&printed).unwrap();
    let root = doc.get_ref();
    // Printed only when set (they have no default value to show).
    const WHEN_SET: &[&str] = &[
        "postmaster",
        "rewrite_sender",
        "rewrite_from",
        "hosts",
        "client_cert",
        "client_key",
        "max_messages_per_minute",
        "max_recipients_per_day",
        "max_message_size",
        "tls_cert",
        "tls_key",
    ];
    for key in TOP_KEYS.iter().flat_map(|l| l.iter()) {
        assert!(root.get(*key).is_some() || WHEN_SET.contains(key), "{key}");
    }
    for (table, lists) in TABLES {
        if matches!(*table, "route" | "aliases" | "user") {
            continue;
        }
        let Some(DeValue::Table(t)) = root.get(*table).map(|v| v.get_ref()) else {
            panic!("{table}")
        };
        for key in lists.iter().flat_map(|l| l.iter()) {
            if *table == "server" && WHEN_SET.contains(key) {
                continue;
            }
            if *table == "upstream"
                && (MaildirConfig::KEYS.contains(key)
                    || WHEN_SET.contains(key)
                    || key.starts_with("oauth_"))
            {
                continue;
            }
            assert!(
                t.get(*key).is_some(),
                "[{table}] {key} missing from:\n{printed}"
            );
        }
    }
}

#[test]
fn edit_distance_basics() {
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("max_recipient", "max_recipients"), 1);
    assert_eq!(edit_distance("dri", "dir"), 1);
    assert_eq!(nearest("lsten", ServerConfig::KEYS), Some("listen"));
    assert_eq!(nearest("x", ServerConfig::KEYS), None);
}

fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn shipped_config_parses_as_is() {
    let text = shipped("postern.toml");
    // File checks on: the laptop config names no secret files.
    let o = ParseOptions {
        skip_file_checks: false,
        ..opts()
    };
    let c = parse_with(&text, Path::new("config/postern.toml"), &o).unwrap();
    assert_eq!(
        c.server.listen,
        vec!["127.0.0.1:2525".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.queue.dir, PathBuf::from("var/queue"));
    assert!(matches!(upstream(&c), Upstream::Maildir(m) if m.dir == Path::new("var/outbox")));
    // Every key is shown in it, set or commented with its default.
    for key in TOP_KEYS
        .iter()
        .flat_map(|l| l.iter())
        .chain(ServerConfig::KEYS)
        .chain(PolicyConfig::KEYS)
        .chain(QueueConfig::KEYS)
    {
        assert!(
            text.contains(&format!("{key} = ")),
            "postern.toml does not show {key}"
        );
    }
    // Uncommenting every commented default changes nothing.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.contains(" = ")
                    && !rest.starts_with(' ')
                    && !rest.starts_with("hostname") =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(uncommented, text);
    let c2 = parse_with(&uncommented, Path::new("u.toml"), &o).unwrap();
    assert_eq!(c2.to_toml(), c.to_toml());
}

#[test]
fn shipped_examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "direct-mx.toml",
            "gmail-xoauth2.toml",
            "gmail.toml",
            "isp-relay.toml",
            "microsoft365-connector.toml",
            "microsoft365-xoauth2.toml",
            "microsoft365.toml",
            "private-relay-ca.toml"
        ]
    );
    for name in names {
        let text = shipped(&format!("examples/{name}"));
        let c = parse_with(&text, Path::new(&name), &opts())
            .unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        assert!(
            matches!(upstream(&c), Upstream::Smarthost(_)) || c.outbound.routes.len() > 1,
            "{name}"
        );
        // With file checks on, the only complaints may be about the
        // secret and CA files that live on the real machine.
        let checks = ParseOptions {
            skip_file_checks: false,
            ..opts()
        };
        if let Err(errors) = parse_with(&text, Path::new(&name), &checks) {
            for e in errors {
                assert!(
                    (e.message.starts_with("password_file: \"/etc/postern/")
                        || e.message.starts_with("ca_file: \"/etc/postern/")
                        || e.message.starts_with("client_cert: \"/etc/postern/")
                        || e.message.starts_with("client_key: \"/etc/postern/")
                        || e.message
                            .starts_with("oauth_client_secret_file: \"/etc/postern/")
                        || e.message
                            .starts_with("oauth_refresh_token_file: \"/etc/postern/"))
                        && e.message.contains("does not exist"),
                    "{name}: {e}"
                );
            }
        }
    }
}

#[test]
fn print_shows_resolved_values_not_the_spelling() {
    let text = BASE
        .replace(
            "[queue]",
            "max_message_size = \"25MB\"\ncommand_timeout = \"90m\"\n[queue]",
        )
        .replace(
            "dir = \"q\"",
            "dir = \"q\"\nmax_size = \"1GiB\"\nretry_intervals = [\"90s\", \"120m\", \"1d 0h\"]",
        );
    let printed = ok(&text).to_toml();
    for line in [
        "max_message_size = 25000000\n",
        "command_timeout = \"1h30m\"\n",
        "max_size = 1073741824\n",
        "retry_intervals = [\"1m30s\", \"2h\", \"1d\"]\n",
    ] {
        assert!(printed.contains(line), "{line} in:\n{printed}");
    }
    assert_eq!(ok(&printed).to_toml(), printed);
}

#[test]
fn a_route_without_kind_is_named_as_a_route_and_keeps_its_domains() {
    // The [[route]] header is where a missing key is reported; `domains` is
    // a route's own key, not an unknown one, even when `kind` is missing.
    let text = "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n\
                [[route]]\ndomains = [\"*\"]\ndir = \"out\"\n";
    let m = one_error(text, 5, 1);
    assert!(
        m.starts_with("missing required key 'kind' in [route]; write kind = "),
        "{m}"
    );
}
