//! The effective config (`check --print`) and the shipped configs.

use super::*;

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
    for key in TOP_LEVEL.iter().flat_map(|l| l.iter()) {
        assert!(root.get(*key).is_some() || WHEN_SET.contains(key), "{key}");
    }
    for (table, lists) in TABLES {
        // Lists of tables, or tables only there when set: tested on their own.
        if matches!(*table, "route" | "aliases" | "user" | "filter" | "storm") {
            continue;
        }
        let Some(DeValue::Table(t)) = root.get(*table).map(|v| v.get_ref()) else {
            panic!("{table}")
        };
        for key in lists.iter().flat_map(|l| l.iter()) {
            if *table == "server" && WHEN_SET.contains(key) {
                continue;
            }
            // The status listener is off unless set.
            if *table == "status" && *key == "listen" {
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
    for key in TOP_LEVEL
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
            "private-relay-ca.toml",
            "ups-storm.toml"
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
                            .starts_with("oauth_refresh_token_file: \"/var/lib/postern/"))
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
