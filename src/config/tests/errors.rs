//! Errors: positions, every problem in one pass, unknown keys and tables
//! with suggestions, missing and misplaced keys, checks between keys.

use super::*;

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
fn columns_count_characters_not_bytes() {
    let text = format!("{BASE}[policy]\nallow_senders = [\"jörg@bücher.de\", \"bad one\"]\n");
    let m = one_error(&text, 9, 36);
    assert!(m.contains("contains a space"), "{m}");
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
        "dir: expected text in quotes like \"/var/lib/postern/queue\", found the number 5"
    );
    // Inline tables are tables.
    let c = ok(
        "server = { listen = [\"127.0.0.1:25\"] }\nqueue = { dir = \"q\" }\nupstream = { kind = \"maildir\", dir = \"o\" }\n",
    );
    assert_eq!(c.server.listen[0].port(), 25);
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

#[test]
fn each_key_is_declared_once_per_table() {
    // The known-key lists come from the declarations; a key declared twice
    // (a field and an input, or in two tables read from one section) would
    // be read twice and complain twice.
    let mut tables: Vec<(&str, &[&[&str]])> = TABLES.to_vec();
    tables.push(("top level", TOP_LEVEL));
    for (table, lists) in tables {
        let mut seen = std::collections::HashSet::new();
        for key in lists.iter().flat_map(|l| l.iter()) {
            assert!(seen.insert(*key), "[{table}] declares '{key}' twice");
        }
    }
}
