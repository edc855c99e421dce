//! Tests of the config reader, by theme; the helpers and fixtures are here.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use toml::de::DeValue;

use super::values::PATTERN_FORMS;
use super::*;

mod errors;
mod filters;
mod print;
mod values;

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

fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
