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

Usage: postern check [--config FILE] [--print]

Options:
  -c, --config FILE   Config file [default: /etc/postern/postern.toml]
  -p, --print         Also print the effective config (every default filled in)
  -h, --help          Print help
";

/// A command-line mistake: say it, and where to look.
fn usage_error(msg: impl std::fmt::Display, help_for: &str) -> ExitCode {
    eprintln!("postern: {msg}\nTry 'postern {help_for}--help' for more information.");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    use lexopt::prelude::*;
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
    let mut config = PathBuf::from(config::DEFAULT_PATH);
    let mut print = false;
    let help = match sub.as_str() {
        "serve" => SERVE_HELP,
        "check" => CHECK_HELP,
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
            Ok(Some(other)) => return usage_error(other.unexpected(), &for_help),
            Ok(None) => break,
            Err(e) => return usage_error(e, &for_help),
        }
    }
    match sub.as_str() {
        "serve" => match postern::daemon::serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("postern: {e}");
                ExitCode::FAILURE
            }
        },
        _ => match config::load(&config) {
            Ok(cfg) => {
                if print {
                    print!("{}", cfg.to_toml());
                } else {
                    println!("{}: ok", config.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}
