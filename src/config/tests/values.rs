//! Values: defaults, the grammar of each kind of value and its messages.

use super::*;

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
    assert!(err("\"2.5MiB\"").ends_with("for 2.5MiB use \"2560KiB\""));
    assert!(err("\"1.5GB\"").ends_with("for 1.5GB use \"1500MB\""));
    assert!(err("\"1.1KiB\"").ends_with("for 1.1KiB use about \"1126\""));
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
    // The hint is the value written, in a unit that holds it whole.
    assert_eq!(
        err("\"1.5h\""),
        "command_timeout: \"1.5h\": durations are whole numbers; for 1.5h use \"90m\""
    );
    assert!(err("\"0.25s\"").ends_with("for 0.25s use \"250ms\""));
    assert!(err("\"2,5m\"").ends_with("for 2.5m use \"150s\""));
    assert!(err("\"0.0001s\"").ends_with("for 0.0001s use about \"0ms\""));
    assert!(!err("\"0.75h\"").contains("90s"), "the canned example");
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
fn allow_clients_covering_public_space_needs_allow_public_clients() {
    let text =
        |nets: &str, extra: &str| format!("{BASE}[policy]\nallow_clients = [{nets}]\n{extra}");
    // Wide enough to let strangers relay: the /0 check alone let these by.
    for nets in [
        "\"0.0.0.0/1\", \"128.0.0.0/1\"",
        "\"8.0.0.0/5\"",
        "\"198.51.0.0/16\", \"198.52.0.0/16\"",
        "\"::/1\"",
        "\"2a00::/47\", \"2a01::/47\"",
    ] {
        let m = one_error(&text(nets, ""), 9, 17);
        assert!(
            m.starts_with("allow_clients: these networks cover ") && m.contains("open relay"),
            "{nets}: {m}"
        );
        assert!(m.contains("allow_public_clients = true"), "{m}");
        // Said explicitly, it is allowed.
        let c = ok(&text(nets, "allow_public_clients = true\n"));
        assert!(c.policy.allow_public_clients);
    }
    assert!(
        one_error(&text("\"8.0.0.0/5\"", ""), 9, 17)
            .contains("117440512 public IPv4 addresses (more than a /16)")
    );
    // Private, shared and documentation space, a site's own /16 (counted
    // once however often it is listed, and less the documentation /24
    // inside it), a /48 of IPv6: fine.
    for nets in [
        "\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\", \"100.64.0.0/10\", \"fd00::/8\"",
        "\"198.51.0.0/16\", \"198.51.7.0/24\", \"198.51.0.0/16\"",
        "\"198.51.0.0/16\", \"198.52.100.0/24\"",
        "\"2a00:1:2::/48\", \"fe80::/10\", \"2001:db8::/32\"",
        "\"127.0.0.0/8\", \"::1/128\"",
    ] {
        let c = ok(&text(nets, ""));
        assert!(!c.policy.allow_public_clients, "{nets}");
    }
    assert_eq!(
        super::super::policy::public_addresses(&[
            "198.51.0.0/16".parse().unwrap(),
            "198.52.100.0/24".parse().unwrap()
        ]),
        (65536 - 256 + 256, 0)
    );
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
    // The most one envelope (one queue record) holds is allowed.
    let c = ok(&BASE.replace("[queue]", "max_recipients = 100000\n[queue]"));
    assert_eq!(
        c.server.max_recipients,
        crate::smtp::envelope::MAX_RECIPIENTS
    );
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
fn the_listener_certificate_and_key_are_loaded_by_check() {
    // Readable files that serve cannot use used to pass check; serve then
    // exited at start.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let pair = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (
            write(&format!("{name}.crt"), &c.cert.pem()),
            write(&format!("{name}.key"), &c.signing_key.serialize_pem()),
        )
    };
    let (cert, key) = pair("relay");
    let (_, other_key) = pair("other");
    let garbage = write("garbage.pem", "this is no PEM\n");
    let checks = ParseOptions {
        skip_file_checks: false,
        ..opts()
    };
    let text = |c: &Path, k: &Path| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:2525\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             [queue]\ndir = \"q\"\n[upstream]\nkind = \"maildir\"\ndir = \"out\"\n",
            c.display(),
            k.display()
        )
    };
    parse_with(&text(&cert, &key), Path::new("t.toml"), &checks).unwrap();
    let one = |c: &Path, k: &Path| {
        let e = errs_with(&text(c, k), &checks);
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].clone()
    };
    let (line, col, m) = one(&garbage, &key);
    assert_eq!((line, col), (3, 12));
    assert!(
        m.starts_with("tls_cert: \"") && m.contains("holds no PEM certificate"),
        "{m}"
    );
    let (line, _, m) = one(&cert, &garbage);
    assert_eq!(line, 3);
    assert!(
        m.starts_with("tls_cert/tls_key: the listener cannot use them: ")
            && m.contains(&garbage.display().to_string()),
        "{m}"
    );
    let (_, _, m) = one(&cert, &other_key);
    assert!(
        m.contains("private key does not match the certificate"),
        "{m}"
    );
    // A key where the certificate should be: no certificate in it.
    let (_, _, m) = one(&key, &key);
    assert!(m.contains("holds no PEM certificate"), "{m}");
}

#[test]
fn credentials_over_clear_text_need_allow_plaintext_auth_and_a_private_host() {
    let creds = "username = \"u@example.com\"\npassword_file = \"/etc/pw\"\n";
    let text = |host: &str, extra: &str| {
        smarthost(&format!("tls = \"none\"\nport = 25\n{creds}{extra}"))
            .replace("smtp.example.com", host)
    };
    let m = one_error(&text("smtp.example.com", ""), 8, 1);
    assert!(
        m.starts_with("tls = \"none\" with a username: the credentials would cross the network")
            && m.contains("smtp.example.com:25 in clear text"),
        "{m}"
    );
    // XOAUTH2's bearer token is a credential too.
    let xoauth2 = smarthost(
        "tls = \"none\"\nport = 25\nusername = \"u@example.com\"\nauth = \"xoauth2\"\n\
         oauth_provider = \"google\"\noauth_client_id = \"id\"\n\
         oauth_client_secret_file = \"/etc/s\"\noauth_refresh_token_file = \"/etc/r\"\n",
    );
    assert!(
        errs(&xoauth2).iter().any(|e| e.2.contains("in clear text")),
        "{:?}",
        errs(&xoauth2)
    );
    // Allowed by the key for loopback and private hops, with a warning.
    for (host, when) in [
        ("127.0.0.1", false),
        ("10.1.2.3", false),
        ("fd00::25", false),
        ("relay.lan", true),
    ] {
        let c = ok(&text(host, "allow_plaintext_auth = true\n"));
        assert_eq!(c.warnings.len(), 1, "{host}");
        let w = &c.warnings[0];
        assert_eq!(w.line, 12, "{w}");
        assert!(
            w.message
                .starts_with(&format!("credentials go to {host}:25 in clear text")),
            "{w}"
        );
        assert_eq!(w.message.contains("only while it resolves"), when, "{w}");
    }
    // Never to a public address.
    let m = one_error(&text("192.0.32.10", "allow_plaintext_auth = true\n"), 12, 1);
    assert!(
        m.starts_with("allow_plaintext_auth: 192.0.32.10 is not a loopback or private"),
        "{m}"
    );
    // TLS needs no key, and gets no warning.
    let c = ok(&smarthost(creds));
    assert!(c.warnings.is_empty());
}

#[test]
fn qualify_domain_defaults_to_the_hostname_and_check_warns_about_undeliverable_root() {
    let c = ok(BASE);
    assert_eq!(c.outbound.qualify_domain.as_deref(), Some("relay.test"));
    assert_eq!(c.qualify_domain(), "relay.test");
    let c = ok(&format!("qualify_domain = \"LAN.Example.com\"\n{BASE}"));
    assert_eq!(c.qualify_domain(), "lan.example.com");
    assert!(
        one_error(&format!("qualify_domain = \"a..b\"\n{BASE}"), 1, 18).contains("not a domain")
    );
    // A maildir route takes relay.test: deliverable, no warning.
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let warn =
        |text: &str| -> Vec<String> { ok(text).warnings.into_iter().map(|w| w.message).collect() };
    // An outbox takes any address, even one at a bare host name.
    assert!(warn(&format!("hostname = \"pi\"\n{BASE}")).is_empty());
    // A bare host name as the domain, to a smarthost.
    let w = warn(&format!("hostname = \"pi\"\n{}", smarthost("")));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("root and postmaster have no alias: mail to root and postmaster")
            && w[0].contains("goes to root@pi, which no upstream can deliver")
            && w[0].contains("[aliases] root = \"you@example.com\""),
        "{w:?}"
    );
    // One of them aliased: the other is named.
    let w = warn(&format!(
        "hostname = \"pi\"\n{}[aliases]\nroot = \"ops@example.com\"\n",
        smarthost("")
    ));
    assert!(
        w.len() == 1 && w[0].starts_with("postmaster has no alias"),
        "{w:?}"
    );
    // Both aliased, or every address of the domain: nothing to say.
    assert!(warn(&format!(
        "hostname = \"pi\"\n{}[aliases]\nroot = \"ops@example.com\"\npostmaster = \"ops@example.com\"\n",
        smarthost("")
    ))
    .is_empty());
    assert!(
        warn(&format!(
            "hostname = \"pi\"\n{}[aliases]\n\"*@pi\" = \"ops@example.com\"\n",
            smarthost("")
        ))
        .is_empty()
    );
    // Only an MX route takes the domain; or no route at all.
    let mx = "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n\
              [[route]]\ndomains = [\"*\"]\nkind = \"mx\"\n";
    let w = warn(&format!("qualify_domain = \"lan.example.com\"\n{mx}"));
    assert!(
        w.len() == 1 && w[0].contains("which only an MX route takes"),
        "{w:?}"
    );
    let only = "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n\
                [[route]]\ndomains = [\"example.com\"]\nkind = \"maildir\"\ndir = \"out\"\n";
    let w = warn(only);
    assert!(
        w.len() == 1 && w[0].contains("which no route takes"),
        "{w:?}"
    );
}
