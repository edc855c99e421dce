//! The `postern` command line: `serve`, `check`; nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use postern::config;

const HELP: &str = "\
postern — a small SMTP relay for LAN devices: accept, queue durably, forward.

Usage: postern <COMMAND> [OPTIONS]

Commands:
  serve    Run the relay in the foreground (logs to stderr)
  check    Validate a config file; print every problem as FILE:LINE:COL: message
           (--connect: also connect to every route, TLS, AUTH, no mail sent)
  send-test  Send a test message through the routes and follow it
  passwd   Print an Argon2id hash for a [[user]] password_hash (reads the password)
  status   How the running daemon is doing: queue, routes, counters; exit 0
           healthy, 1 warning, 2 critical or not running (--json, --prometheus)
  queue    List or manage the running daemon's queue (list, show, flush,
           delete, hold, release)
  filter   Try the [[filter]] rules on a message: filter test --from A --to B FILE
  sendmail Hand a message on stdin to the running daemon, with sendmail's
           flags (-t -f -F -i -oi -C); also run as 'sendmail' via a symlink

Options:
  -h, --help       Print help (also: postern <COMMAND> --help)
  -V, --version    Print version
";

const SERVE_HELP: &str = "\
Run the relay in the foreground until SIGTERM or SIGINT; logs go to stderr.

Usage: postern serve [--config FILE]

Options:
  -c, --config FILE   Config file [default: /etc/postern/postern.toml]
  -h, --help          Print help

The log level is the config's log_level, or RUST_LOG when set.
";

const CHECK_HELP: &str = "\
Validate a config file. Exits 0 when it is valid; otherwise prints every
problem as FILE:LINE:COL: message and exits 1.

Usage: postern check [--config FILE] [--user NAME] [--print] [--connect [--domain DOMAIN]]

A valid file is then tried on this machine: the directories postern writes
(queue, drop directory, outboxes) can be written or created and the files it
reads can be read, by the service's user; they lie where the installed
systemd unit lets it write; every listen address can be bound. What could
not be tried is said (note:, warning:); an error: exits 1.

Options:
  -c, --config FILE   Config file [default: /etc/postern/postern.toml]
      --user NAME     Test file access as this user (needs root) [default: as
                      root, the owner of the queue directory; else yourself]
  -p, --print         Also print the effective config (every default filled in)
      --connect       For every route: resolve, connect, TLS (certificate
                      details), AUTH, QUIT; print the conversation with secrets
                      masked and OK or what failed (DNS, connect, certificate,
                      auth), each step as it happens; a step that gets no
                      answer is given up after a short timeout and named.
                      No mail is sent. Exits 1 if a route fails.
      --domain DOMAIN For MX routes that take every domain: the domain to check
  -h, --help          Print help
";

const SEND_TEST_HELP: &str = "\
Send a short test message through the configured routes and follow it until
it is delivered or fails, printing each attempt. Runs the normal path (queue,
aliases, routes, rewriting, retries) in this process with a throwaway queue:
it needs no running daemon and never touches the daemon's queue.

Usage: postern send-test [--config FILE] --to ADDR [--from ADDR] [--wait DURATION]

Options:
  -c, --config FILE   Config file [default: /etc/postern/postern.toml]
      --to ADDR       Recipient (aliases apply)
      --from ADDR     Envelope sender [default: postmaster, else postern@HOSTNAME]
      --wait DURATION How long to follow retries, e.g. \"2m\" [default: 2m]
  -h, --help          Print help

Exit status: 0 delivered, 1 failed or still queued, 2 usage.
";

const PASSWD_HELP: &str = "\
Read a password and print its Argon2id hash, for password_hash in a [[user]]
table. On a terminal the password is asked twice without echo; otherwise the
first line of standard input is the password. Never give it as an argument:
arguments are visible to every user of the machine.

Usage: postern passwd

Example: postern passwd < /run/secrets/scanner-password
";

const QUEUE_HELP: &str = "\
Ask the running daemon about its queue, or change it. The daemon is the only
writer of the queue: these commands talk to it over <queue dir>/control.sock
and fail with a clear message when it is not running.

Usage: postern queue <ACTION> [ID] [FILTERS] [--config FILE]

  list [FILTERS]        Messages: id, age, size, attempts, next attempt,
                        sender, pending recipients, last error
  show ID [--body]      One message: times (RFC 3339 and how long ago),
                        Subject, recipients; --body adds the message itself
  flush                 Make every message due now
  delete ID             Drop a message: no delivery, no report
  delete --all [FILTERS]  Drop every message that matches
  hold ID | hold --all [FILTERS]        Keep from delivery until released
                                        (or a restart)
  release ID | release --all [FILTERS]  Undo hold; due now

Filters (all must match):
  --route NAME          a pending recipient goes by this route (as
                        'postern status' names it)
  --older-than DURATION queued at least this long, e.g. 2d, 6h
  --from ADDR           the sender: user@example.com, example.com (a
                        domain), or <>

Run as 'mailq' (a symlink), postern prints the list; sendmail's mailq
options are accepted and ignored (-C FILE names postern's config).

Options:
  -c, --config FILE   Config file (for [queue] dir) [default: /etc/postern/postern.toml]
  -h, --help          Print help
";

const STATUS_HELP: &str = "\
Ask the running daemon how it is doing: queue depth (messages, bytes), the
oldest message and its age, deferred and held counts; per route its last
success, last error and the messages waiting for it; counters since start.

Usage: postern status [--json | --prometheus] [--config FILE]

Exit status (for Nagios, Icinga, Monit, cron):
  0  healthy
  1  warning: a message has waited longer than [queue] delay_warning
  2  critical: a route has failed for longer than [status]
     route_failing_critical, the queue is [status] queue_full_critical
     percent full, or the daemon is not running

The first line of the text output is in the Nagios plugin form
(STATE: summary | performance data).

Options:
  -c, --config FILE   Config file (for [queue] dir) [default: /etc/postern/postern.toml]
      --json          The whole status as JSON, for scripts
      --prometheus    Prometheus text format, for node_exporter's textfile
                      collector (postern_up 0 when the daemon is down)
  -h, --help          Print help
";

const FILTER_HELP: &str = "\
Run a message through the [[filter]] rules as the listener would (connect,
MAIL, RCPT, end of headers, end of data) and print each rule's verdict and
what would happen to the message. Nothing is sent or queued.

Usage: postern filter test [--config FILE] --from ADDR --to ADDR [--to ADDR...]
                           [--client IP] [--user NAME] MESSAGE.eml

Options:
  -c, --config FILE   Config file [default: /etc/postern/postern.toml]
      --from ADDR     Envelope sender (\"<>\" for the null sender)
      --to ADDR       Recipient (repeat for more)
      --client IP     The client's address [default: 127.0.0.1]
      --user NAME     As if the client had logged in as NAME
  -h, --help          Print help

Exit status: 0 when the message would be taken, 1 refused, 2 usage.
";

/// `postern filter test …`.
fn filter_command(mut parser: lexopt::Parser) -> ExitCode {
    use lexopt::prelude::*;
    let mut config = PathBuf::from(config::DEFAULT_PATH);
    let (mut from, mut to, mut client, mut user) = (None, Vec::new(), None, None);
    let mut words: Vec<String> = Vec::new();
    loop {
        let arg = match parser.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return usage_error(e, "filter "),
        };
        let value = |p: &mut lexopt::Parser| p.value().map(|v| v.to_string_lossy().into_owned());
        let got = match arg {
            Short('h') | Long("help") => {
                print!("{FILTER_HELP}");
                return ExitCode::SUCCESS;
            }
            Short('c') | Long("config") => value(&mut parser).map(|v| config = PathBuf::from(v)),
            Long("from") => value(&mut parser).map(|v| from = Some(v)),
            Long("to") => value(&mut parser).map(|v| to.push(v)),
            Long("client") => value(&mut parser).map(|v| client = Some(v)),
            Long("user") => value(&mut parser).map(|v| user = Some(v)),
            Value(v) => {
                words.push(v.to_string_lossy().into_owned());
                Ok(())
            }
            other => return usage_error(other.unexpected(), "filter "),
        };
        if let Err(e) = got {
            return usage_error(e, "filter ");
        }
    }
    let [action, file] = words.as_slice() else {
        return usage_error("expected: filter test [OPTIONS] MESSAGE.eml", "filter ");
    };
    if action != "test" {
        return usage_error(format!("unknown filter action '{action}'"), "filter ");
    }
    let Some(from) = from else {
        return usage_error("filter test needs --from ADDR", "filter ");
    };
    if to.is_empty() {
        return usage_error("filter test needs --to ADDR", "filter ");
    }
    let parse_addr = |s: &str| postern::smtp::Address::parse(s).map_err(|e| format!("{s}: {e}"));
    let from = if from == "<>" || from.is_empty() {
        None
    } else {
        match parse_addr(&from) {
            Ok(a) => Some(a),
            Err(e) => return usage_error(format!("--from {e}"), "filter "),
        }
    };
    let mut rcpts = Vec::new();
    for t in &to {
        match parse_addr(t) {
            Ok(a) => rcpts.push(a),
            Err(e) => return usage_error(format!("--to {e}"), "filter "),
        }
    }
    let client = match client
        .as_deref()
        .unwrap_or("127.0.0.1")
        .parse::<std::net::IpAddr>()
    {
        Ok(ip) => ip.to_canonical(),
        Err(e) => return usage_error(format!("--client: {e}"), "filter "),
    };
    let cfg = match config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let message = match std::fs::read(file) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("postern: {file}: cannot read the message: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rules = postern::filter::Rules::new(&cfg.filters);
    let report = postern::filter::explain(
        &rules,
        &postern::filter::Trial {
            client,
            user: user.as_deref(),
            from,
            to: rcpts,
            message: &message,
        },
    );
    print!("{report}");
    if report
        .lines()
        .last()
        .is_some_and(|l| l.starts_with("outcome: refused"))
    {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A command-line mistake: say it, and where to look.
fn usage_error(msg: impl std::fmt::Display, help_for: &str) -> ExitCode {
    eprintln!("postern: {msg}\nTry 'postern {help_for}--help' for more information.");
    ExitCode::from(2)
}

/// `postern ... | head` closes our stdout early. Rust ignores SIGPIPE, so
/// every `print!` would then panic ("failed printing to stdout: Broken
/// pipe"); a reader that has seen enough is not an error, so end quietly
/// (as ripgrep does). Covers every command's output, present and future.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    use lexopt::prelude::*;
    quiet_on_broken_pipe();
    // Installed as /usr/sbin/sendmail (a symlink), or `postern
    // sendmail`: sendmail's own flags (-t -f -oi ...), not ours.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv0 = argv.first().map(String::as_str).unwrap_or_default();
    if std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "sendmail")
    {
        return ExitCode::from(postern::sendmail::main(argv.into_iter().skip(1)));
    }
    if std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "mailq")
    {
        return mailq(argv.into_iter().skip(1));
    }
    if argv.get(1).map(String::as_str) == Some("sendmail") {
        return ExitCode::from(postern::sendmail::main(argv.into_iter().skip(2)));
    }
    let mut parser = lexopt::Parser::from_env();
    let sub = match parser.next() {
        Ok(Some(Short('h') | Long("help"))) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Some(Short('V') | Long("version"))) => {
            println!("postern {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Some(Value(v))) => v.to_string_lossy().into_owned(),
        Ok(Some(other)) => return usage_error(other.unexpected(), ""),
        Ok(None) => {
            eprint!("{HELP}");
            return ExitCode::from(2);
        }
        Err(e) => return usage_error(e, ""),
    };
    if sub == "filter" {
        return filter_command(parser);
    }
    let mut config = PathBuf::from(config::DEFAULT_PATH);
    let mut print = false;
    // check --connect, send-test.
    let mut connect = false;
    let mut domain: Option<String> = None;
    // check --user NAME.
    let mut user: Option<String> = None;
    let mut to: Option<String> = None;
    let mut from: Option<String> = None;
    let mut wait = std::time::Duration::from_secs(120);
    // postern queue ACTION [ID].
    let mut queue_args: Vec<String> = Vec::new();
    let mut queue_opts = QueueOpts::default();
    // postern status --json | --prometheus.
    let mut format = StatusFormat::Text;
    let help = match sub.as_str() {
        "serve" => SERVE_HELP,
        "check" => CHECK_HELP,
        "send-test" => SEND_TEST_HELP,
        "passwd" => PASSWD_HELP,
        "queue" => QUEUE_HELP,
        "status" => STATUS_HELP,
        _ => return usage_error(format!("unknown command '{sub}'"), ""),
    };
    let for_help = format!("{sub} ");
    loop {
        match parser.next() {
            Ok(Some(Short('h') | Long("help"))) => {
                print!("{help}");
                return ExitCode::SUCCESS;
            }
            Ok(Some(Short('c') | Long("config"))) => match parser.value() {
                Ok(v) => config = PathBuf::from(v),
                Err(e) => return usage_error(e, &for_help),
            },
            Ok(Some(Short('p') | Long("print"))) if sub == "check" => print = true,
            Ok(Some(Long("connect"))) if sub == "check" => connect = true,
            Ok(Some(Long("json"))) if sub == "status" => format = StatusFormat::Json,
            Ok(Some(Long("prometheus"))) if sub == "status" => format = StatusFormat::Prometheus,
            Ok(Some(Long(k @ ("domain" | "to" | "from" | "wait" | "user"))))
                if (sub == "check" && matches!(k, "domain" | "user"))
                    || (sub == "send-test" && matches!(k, "to" | "from" | "wait")) =>
            {
                let k = k.to_string();
                let v = match parser.value() {
                    Ok(v) => v.to_string_lossy().into_owned(),
                    Err(e) => return usage_error(e, &for_help),
                };
                match k.as_str() {
                    "domain" => domain = Some(v),
                    "user" => user = Some(v),
                    "to" => to = Some(v),
                    "from" => from = Some(v),
                    _ => match config::Dur::parse(&v) {
                        Ok(d) => wait = d.value,
                        Err(e) => return usage_error(format!("--wait: {e}"), &for_help),
                    },
                }
            }
            Ok(Some(Long("all"))) if sub == "queue" => queue_opts.all = true,
            Ok(Some(Long("body"))) if sub == "queue" => queue_opts.body = true,
            Ok(Some(Long(k @ ("route" | "older-than" | "from")))) if sub == "queue" => {
                let k = k.to_string();
                let v = match parser.value() {
                    Ok(v) => v.to_string_lossy().into_owned(),
                    Err(e) => return usage_error(e, &for_help),
                };
                let f = &mut queue_opts.filter;
                match k.as_str() {
                    "route" => f.route = Some(v),
                    "from" => f.from = Some(v),
                    _ => match config::Dur::parse(&v) {
                        Ok(d) => f.older_than = Some(d.value),
                        Err(e) => return usage_error(format!("--older-than: {e}"), &for_help),
                    },
                }
            }
            Ok(Some(Value(v))) if sub == "queue" && queue_args.len() < 2 => {
                queue_args.push(v.to_string_lossy().into_owned())
            }
            Ok(Some(other)) => return usage_error(other.unexpected(), &for_help),
            Ok(None) => break,
            Err(e) => return usage_error(e, &for_help),
        }
    }
    match sub.as_str() {
        "passwd" => match postern::auth::passwd_from_stdin() {
            Ok(hash) => {
                println!("{hash}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("postern: {e}");
                ExitCode::FAILURE
            }
        },
        "queue" => queue_command(&config, &queue_args, &queue_opts, &for_help),
        "status" => status_command(&config, format),
        "serve" => match postern::daemon::serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("postern: {e}");
                ExitCode::FAILURE
            }
        },
        "send-test" => {
            let Some(to) = to else {
                return usage_error("send-test needs --to ADDR", &for_help);
            };
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            postern::logging::init(&cfg.log_level);
            match postern::delivery::sendtest::run(&cfg, &to, from.as_deref(), wait) {
                Ok(o @ postern::delivery::sendtest::Outcome::Delivered) => {
                    println!("{o}");
                    ExitCode::SUCCESS
                }
                Ok(o) => {
                    println!("{o}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("postern: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => match config::load(&config) {
            Ok(mut cfg) if connect => {
                print_warnings(&cfg);
                let machine_ok = machine_checks(&config, &cfg, user);
                postern::delivery::probe::for_check(&mut cfg);
                let routes = match postern::delivery::Routes::from_config(
                    &cfg,
                    postern::dns::Resolver::from_system(),
                    &postern::policy::Outbound::from_config(&cfg),
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("postern: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                // stdout is line-buffered: each line shows as it happens.
                let out: postern::delivery::client::Transcript =
                    std::sync::Arc::new(|l| println!("{l}"));
                let routes_ok = smol::block_on(postern::delivery::probe::check_routes(
                    &routes,
                    domain.as_deref(),
                    out,
                ));
                if routes_ok && machine_ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Ok(cfg) => {
                print_warnings(&cfg);
                let machine_ok = machine_checks(&config, &cfg, user);
                if print {
                    print!("{}", cfg.to_toml());
                } else if machine_ok {
                    println!("{}: ok", config.display());
                }
                if machine_ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `check` on this machine (see [`postern::preflight`]): every finding on
/// stderr as `FILE: error|warning|note: text`; false when one is an error.
fn machine_checks(path: &std::path::Path, cfg: &config::Config, user: Option<String>) -> bool {
    use postern::preflight::{Options, Severity, run};
    let findings = run(cfg, &Options { user, unit: None });
    for f in &findings {
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        eprintln!("{}: {level}: {}", path.display(), f.text);
    }
    !findings.iter().any(|f| f.severity == Severity::Error)
}

/// What the config allows but deserves a second look, as
/// `FILE:LINE:COL: warning: message` on stderr (errors use the same form).
fn print_warnings(cfg: &config::Config) {
    for w in &cfg.warnings {
        eprintln!(
            "{}:{}:{}: warning: {}",
            w.file.display(),
            w.line,
            w.col,
            w.message
        );
    }
}

/// How `postern status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFormat {
    Text,
    Json,
    Prometheus,
}

/// `postern status`: ask the daemon, print, exit by its health (2 when it
/// cannot be asked: monitoring must not read silence as health).
fn status_command(config_path: &std::path::Path, format: StatusFormat) -> ExitCode {
    let down = |why: String| {
        match format {
            StatusFormat::Text => println!("CRITICAL: {why}"),
            StatusFormat::Json => eprintln!("postern: {why}"),
            StatusFormat::Prometheus => {
                print!("{}", postern::status::render::prometheus_down());
                eprintln!("postern: {why}");
            }
        }
        ExitCode::from(2)
    };
    let cfg = match config::load(config_path) {
        Ok(c) => c,
        Err(e) => return down(e.to_string()),
    };
    let json = match postern::control::request(&cfg.queue.dir, "STATUS") {
        Ok(j) => j,
        Err(e) => return down(e.to_string()),
    };
    let snap: postern::status::Snapshot = match serde_json::from_str(&json) {
        Ok(s) => s,
        Err(e) => {
            return down(format!(
                "the daemon's status could not be read ({e}); is it the same version as this command?"
            ));
        }
    };
    match format {
        StatusFormat::Text => print!("{}", postern::status::render::text(&snap)),
        StatusFormat::Json => print!("{json}"),
        StatusFormat::Prometheus => print!("{}", postern::status::render::prometheus(&snap)),
    }
    ExitCode::from(snap.health.exit_code())
}

/// `postern queue` options beyond the action and id.
#[derive(Debug, Default)]
struct QueueOpts {
    /// `--all`: every message the filter takes.
    all: bool,
    /// `show --body`.
    body: bool,
    filter: postern::control::Filter,
}

/// `postern queue ACTION [ID]`: one request to the daemon's control socket.
fn queue_command(
    config_path: &std::path::Path,
    args: &[String],
    opts: &QueueOpts,
    for_help: &str,
) -> ExitCode {
    let filter = opts.filter.to_words();
    let bulk = matches!(args, [a] if matches!(a.as_str(), "delete" | "hold" | "release"));
    if opts.body && !matches!(args, [a, _] if a == "show") {
        return usage_error("--body goes with 'queue show ID'", for_help);
    }
    if opts.all && !bulk {
        return usage_error(
            "--all goes with 'queue delete', 'hold' or 'release' (without an id)",
            for_help,
        );
    }
    if !filter.is_empty() && !opts.all && !matches!(args, [a] if a == "list") {
        return usage_error(
            "filters go with 'queue list', or with --all for delete, hold and release",
            for_help,
        );
    }
    let req = match args {
        [a] if a == "list" => format!("LIST{filter}"),
        [a] if a == "flush" => "FLUSH".to_string(),
        [a] if bulk && opts.all => format!("{} ALL{filter}", a.to_ascii_uppercase()),
        [a, id] if a == "show" && opts.body => format!("SHOW {id} BODY"),
        [a, id] if matches!(a.as_str(), "show" | "delete" | "hold" | "release") => {
            format!("{} {id}", a.to_ascii_uppercase())
        }
        [a] if matches!(a.as_str(), "show" | "delete" | "hold" | "release") => {
            let more = if a == "show" {
                ""
            } else {
                " (or --all with filters)"
            };
            return usage_error(format!("queue {a} needs a queue id{more}"), for_help);
        }
        [] => return usage_error("queue needs an action", for_help),
        _ => {
            return usage_error(
                format!("unknown queue action '{}'", args.join(" ")),
                for_help,
            );
        }
    };
    let cfg = match config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match postern::control::request_bytes(&cfg.queue.dir, &req) {
        Ok(out) => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            // A reader that closed early (| head) is not an error.
            let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run as `mailq`: the queue list. sendmail's mailq options (`-v`, `-Ac`,
/// `-q…`, `-bp`, `-O…`) are accepted and ignored; `-C FILE` names the
/// config, as for `postern sendmail`.
fn mailq(args: impl Iterator<Item = String>) -> ExitCode {
    let mut config = PathBuf::from(config::DEFAULT_PATH);
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        if a == "-C" {
            if let Some(v) = args.next() {
                config = PathBuf::from(v);
            }
        } else if let Some(v) = a.strip_prefix("-C") {
            config = PathBuf::from(v);
        }
    }
    queue_command(
        &config,
        &["list".to_string()],
        &QueueOpts::default(),
        "queue ",
    )
}
