//! `postern sendmail` (also run as `sendmail` through a symlink): the
//! sendmail command line that cron, smartd, mdadm and unattended-upgrades
//! use to send mail from the gateway itself.
//!
//! This module owns the command line, reading the message from stdin,
//! completing its headers and fitting long lines to SMTP. It never writes
//! the queue: the message is read whole into a drop file first
//! ([`crate::maildrop`]), then handed to the running daemon over SMTP on
//! loopback, so the daemon stays the queue's only writer. When the daemon
//! cannot take it (down at boot, restarting, upgrading, or answering 4xx),
//! the drop file is kept for the daemon to take in when it can, and the
//! command succeeds: cron, smartd and mdadm do not retry. Only a refusal
//! for good (5xx) or a machine without a drop directory fails the command,
//! with a sysexits status, so nothing is lost silently.

use std::io::BufRead;
use std::path::PathBuf;

use crate::config::{self, ParseOptions};
use crate::maildrop::{self, Spool, SubmitError};
use crate::smtp::longlines::{self, LongLines};

/// sysexits.h codes, as sendmail uses them.
pub mod exit {
    /// Bad command line.
    pub const USAGE: u8 = 64;
    /// The daemon refused the message for good (5xx).
    pub const UNAVAILABLE: u8 = 69;
    /// Reading the message failed.
    pub const IOERR: u8 = 74;
    /// Try again later: the daemon is down, busy or said 4xx.
    pub const TEMPFAIL: u8 = 75;
    /// The config file is missing or invalid.
    pub const CONFIG: u8 = 78;
}

/// Headers read before the first SMTP command (needed for `-t`); a message
/// whose header block is longer is refused rather than buffered.
const MAX_HEADER_BYTES: usize = 1 << 20;

const HELP: &str = "\
Send a message through the running postern daemon (sendmail-compatible).

Usage: postern sendmail [OPTIONS] [RECIPIENT...] < message
       sendmail [OPTIONS] [RECIPIENT...] < message    (symlink to postern)

Options:
  -t          Also take recipients from the To, Cc and Bcc headers (Bcc is removed)
  -f ADDR     Envelope sender [default: USER@hostname]; also -r ADDR
  -F NAME     Full name for the From header added when the message has none
  -i, -oi     A line with a single '.' does not end the message
  -C FILE     postern config [default: /etc/postern/postern.toml]
  -h, --help  Print help
Accepted and ignored, as sendmail does: -bm -em -ep -eq -m -n -v -U -odb -odi
-oem -oep -om -oX… -B TYPE -N DSN -R RET -V ENVID -X FILE -L TAG -h HOPS.

The message goes over SMTP to the first [server] listen address of the
config (0.0.0.0/:: means loopback), so [policy] must allow 127.0.0.1 or ::1.
When the daemon is not running (or says try later), the message is kept in
the drop directory beside the queue and the daemon takes it in when it runs.
Lines longer than SMTP's 998 octets are MIME-encoded (quoted-printable).
Exit status: 0 queued by the daemon or kept for it; 64 usage; 69 refused;
74 input error; 75 daemon not running and no drop directory; 78 bad config.
";

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `-t`.
    pub from_headers: bool,
    /// `-f` / `-r`.
    pub sender: Option<String>,
    /// `-F`.
    pub full_name: Option<String>,
    /// `-i` / `-oi`: a lone "." line is data.
    pub ignore_dot: bool,
    /// `-C`.
    pub config: Option<PathBuf>,
    /// Recipients given as arguments.
    pub rcpts: Vec<String>,
    /// `--help`.
    pub help: bool,
}

/// Why the message was not handed over; each maps to a sysexits code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendmailError {
    /// Bad command line.
    #[error("{0}\nTry 'postern sendmail --help' for more information.")]
    Usage(String),
    /// Config missing or invalid.
    #[error("{0}")]
    Config(config::LoadError),
    /// The message could not be read from stdin.
    #[error("cannot read the message: {0}")]
    Input(String),
    /// The daemon did not take the message and it could not be kept.
    #[error("{source}; the message was NOT sent{hint}")]
    NotSent {
        /// What the daemon said or why it could not be reached.
        source: SubmitError,
        /// What to do about it.
        hint: String,
    },
}

impl SendmailError {
    /// The sysexits code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            SendmailError::Usage(_) => exit::USAGE,
            SendmailError::Config(_) => exit::CONFIG,
            SendmailError::Input(_) => exit::IOERR,
            SendmailError::NotSent { source, .. } => {
                if source.is_temporary() {
                    exit::TEMPFAIL
                } else if matches!(source, SubmitError::Input(_)) {
                    exit::IOERR
                } else {
                    exit::UNAVAILABLE
                }
            }
        }
    }
}

/// Parse sendmail's command line (without argv\[0\]). Flags may carry their
/// value attached (`-froot@x`) or as the next argument (`-f root@x`).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Args, SendmailError> {
    let mut out = Args::default();
    let mut it = args.into_iter().peekable();
    let usage = |m: String| SendmailError::Usage(m);
    while let Some(arg) = it.next() {
        if !arg.starts_with('-') || arg == "-" {
            out.rcpts.push(arg);
            continue;
        }
        if arg == "--" {
            out.rcpts.extend(it.by_ref());
            break;
        }
        if arg == "--help" {
            out.help = true;
            continue;
        }
        let flag = &arg[1..2];
        let attached = &arg[2..];
        // Flags that take a value, attached or as the next argument.
        let mut value = |name: &str| -> Result<String, SendmailError> {
            if !attached.is_empty() {
                Ok(attached.to_string())
            } else {
                it.next()
                    .ok_or_else(|| usage(format!("option -{name} needs a value")))
            }
        };
        match flag {
            "t" if attached.is_empty() => out.from_headers = true,
            "i" if attached.is_empty() => out.ignore_dot = true,
            "f" | "r" => out.sender = Some(value(flag)?),
            "F" => out.full_name = Some(value("F")?),
            "C" => out.config = Some(PathBuf::from(value("C")?)),
            // -h HOPS is sendmail's hop count; -h alone asks for help.
            "h" if !attached.is_empty() => {}
            "h" => match it.peek() {
                Some(n) if n.chars().all(|c| c.is_ascii_digit()) => {
                    it.next();
                }
                _ => out.help = true,
            },
            "o" => {
                // -oi is -i; every other -oX option is accepted and ignored.
                if attached == "i" {
                    out.ignore_dot = true;
                } else if attached.is_empty() {
                    return Err(usage("option -o needs a letter".into()));
                }
            }
            "B" | "N" | "R" | "V" | "X" | "L" => {
                let _ = value(flag)?;
            }
            "b" => match attached {
                "m" | "" => {}
                other => return Err(usage(mode_not_supported(other))),
            },
            "e" | "m" | "n" | "v" | "U" | "G" | "d" | "A" => {}
            "q" => {
                return Err(usage(
                    "-q is not supported: the daemon runs the queue; use 'postern queue flush'"
                        .into(),
                ));
            }
            _ => return Err(usage(format!("unknown option {arg}"))),
        }
    }
    Ok(out)
}

/// Why sendmail's mode `-bX` is not here, and what does the job instead.
fn mode_not_supported(mode: &str) -> String {
    let instead = match mode {
        "p" => "to list the queue, run 'postern queue list'".to_string(),
        "s" => "postern does not speak SMTP on standard input: connect to the listener \
                ([server] listen) with an SMTP client, or pipe the message to \
                'postern sendmail ADDRESS'"
            .to_string(),
        "d" | "D" => "to run the daemon, run 'postern serve'".to_string(),
        "i" => "there is no alias database to build: aliases are read from [aliases] in \
                the config (reload with SIGHUP)"
            .to_string(),
        "v" => "postern does not verify addresses; send a test with 'postern send-test \
                --to ADDRESS'"
            .to_string(),
        _ => "postern sendmail only sends a message read from standard input (-bm)".to_string(),
    };
    format!("-b{mode} is not supported: {instead}")
}

/// Run `postern sendmail` with `args` (argv after the program name), the
/// message on stdin. Returns the process exit status.
pub fn main<I: IntoIterator<Item = String>>(args: I) -> u8 {
    match run(args, &mut std::io::stdin().lock()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sendmail: {e}");
            e.exit_code()
        }
    }
}

fn run<I: IntoIterator<Item = String>>(
    args: I,
    input: &mut dyn BufRead,
) -> Result<(), SendmailError> {
    let args = parse_args(args)?;
    if args.help {
        print!("{HELP}");
        return Ok(());
    }
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    // Secrets files are root's; a user's cron job only needs the listener.
    let opts = ParseOptions {
        skip_file_checks: true,
        ..Default::default()
    };
    let cfg = config::load_with(&path, &opts).map_err(SendmailError::Config)?;
    let Some(&listen) = cfg.server.listen.first() else {
        return Err(SendmailError::Usage(format!(
            "{}: [server] listen is empty; nothing to hand the message to",
            path.display()
        )));
    };
    let addr = maildrop::listener_addr(listen);
    let msg = read_headers(input, args.ignore_dot)?;
    let sender = args
        .sender
        .clone()
        .unwrap_or_else(|| format!("{}@{}", login_name(), cfg.hostname));
    let mut rcpts = args.rcpts.clone();
    if args.from_headers {
        rcpts.extend(header_recipients(&msg.headers));
    }
    if rcpts.is_empty() {
        return Err(SendmailError::Usage(
            "no recipients: give them as arguments, or use -t to read To/Cc/Bcc".into(),
        ));
    }
    for a in std::iter::once(&sender).chain(&rcpts) {
        if a.chars().any(|c| c.is_control() || c == '<' || c == '>') {
            return Err(SendmailError::Usage(format!(
                "{a:?} is not a mail address (control characters or angle brackets)"
            )));
        }
    }
    let headers = fix_headers(
        &msg.headers,
        args.from_headers,
        &sender,
        args.full_name.as_deref(),
    );
    let env = maildrop::Envelope { sender, rcpts };
    let drop_dir = maildrop::default_dir(&cfg.queue.dir);
    let input_err = |e: std::io::Error| SendmailError::Input(e.to_string());
    let new_spool = || match Spool::create(&drop_dir, &env) {
        Ok(s) => Ok((s, None)),
        Err(e) => Spool::scratch(&env).map(|s| (s, Some(e))),
    };
    let (mut spool, no_drop) = new_spool().map_err(input_err)?;
    let facts = spool_message(&mut spool, &headers, msg, input, args.ignore_dot)?;
    if facts.too_long {
        // Two passes: whether to encode is known only once the whole body
        // has been read.
        let (mut encoded, _) = new_spool().map_err(input_err)?;
        let (_, mut raw) = spool
            .reread()
            .map_err(|e| SendmailError::Input(e.to_string()))?;
        encode_long_lines(&mut raw, &mut encoded, facts.utf8)?;
        spool = encoded;
    }
    let (env, mut message) = spool
        .reread()
        .map_err(|e| SendmailError::Input(e.to_string()))?;
    match maildrop::submit(addr, &cfg.hostname, &env, &mut message) {
        Ok(_) => Ok(()),
        Err(e) if e.is_temporary() && spool.can_keep() => {
            let what = short(&e);
            let kept = spool.keep().map_err(|k| SendmailError::NotSent {
                source: e,
                hint: format!(" (and keeping it in {} failed: {k})", drop_dir.display()),
            })?;
            eprintln!(
                "sendmail: {what}: kept the message in {}; the daemon takes it in when it runs",
                kept.display()
            );
            Ok(())
        }
        Err(source) => {
            let hint = match (&source, no_drop) {
                (s, Some(why)) if s.is_temporary() => format!(
                    " (it could not be kept for later: drop directory {}: {why}; \
                     the daemon creates it at start). Is the daemon running? \
                     (systemctl status postern)",
                    drop_dir.display()
                ),
                _ => String::new(),
            };
            Err(SendmailError::NotSent { source, hint })
        }
    }
}

/// The gist of a submission failure for the "kept" notice.
fn short(e: &SubmitError) -> String {
    match e {
        SubmitError::Down { addr, .. } => format!("the postern daemon at {addr} is not running"),
        other => other.to_string(),
    }
}

/// What reading the message found out.
#[derive(Debug, Default)]
struct Facts {
    /// A line is longer than SMTP carries.
    too_long: bool,
    /// The body is valid UTF-8 (for the charset of an encoded body).
    utf8: bool,
}

/// Copy the completed headers and the body from `input` into `spool`, with
/// CRLF line ends.
fn spool_message(
    spool: &mut Spool,
    headers: &[String],
    head: Head,
    input: &mut dyn BufRead,
    ignore_dot: bool,
) -> Result<Facts, SendmailError> {
    let io = |e: std::io::Error| SendmailError::Input(format!("cannot write the drop file: {e}"));
    let mut facts = Facts {
        too_long: headers.iter().any(|h| h.len() > longlines::MAX_LINE),
        utf8: true,
    };
    for h in headers {
        spool.line(h.as_bytes()).map_err(io)?;
    }
    spool.line(b"").map_err(io)?;
    let mut body_line = |spool: &mut Spool, l: &[u8]| -> Result<(), SendmailError> {
        facts.too_long |= l.len() > longlines::MAX_LINE;
        facts.utf8 &= std::str::from_utf8(l).is_ok();
        spool.line(l).map_err(io)
    };
    if let Some(first) = &head.first_body {
        body_line(spool, first)?;
    }
    if !head.ended {
        let mut buf = Vec::new();
        while read_line(input, &mut buf)? {
            if !ignore_dot && buf == b"." {
                break;
            }
            body_line(spool, &buf)?;
        }
    }
    Ok(facts)
}

/// Re-encode the spooled message `raw` (positioned at its headers) into
/// `out` so that every line fits SMTP.
fn encode_long_lines(
    raw: &mut dyn BufRead,
    out: &mut Spool,
    utf8: bool,
) -> Result<(), SendmailError> {
    let io = |e: std::io::Error| SendmailError::Input(format!("cannot write the drop file: {e}"));
    let mut headers = Vec::new();
    let mut buf = Vec::new();
    while read_line(raw, &mut buf)? && !buf.is_empty() {
        headers.push(String::from_utf8_lossy(&buf).into_owned());
    }
    let (mut enc, headers) = LongLines::new(&headers, utf8);
    for h in &headers {
        out.line(h.as_bytes()).map_err(io)?;
    }
    out.line(b"").map_err(io)?;
    let mut failed = None;
    let mut emit = |l: &[u8]| {
        if failed.is_none()
            && let Err(e) = out.line(l)
        {
            failed = Some(e);
        }
    };
    while read_line(raw, &mut buf)? {
        enc.body_line(&buf, &mut emit);
    }
    enc.finish(&mut emit);
    failed.map_or(Ok(()), |e| Err(io(e)))
}

/// The header block as read (lines without their line ends).
#[derive(Debug)]
struct Head {
    headers: Vec<String>,
    /// A body line read while looking for headers (input with no header
    /// block starts with its body).
    first_body: Option<Vec<u8>>,
    /// The input already ended (a "." line or EOF within the headers).
    ended: bool,
}

fn read_line(input: &mut dyn BufRead, buf: &mut Vec<u8>) -> Result<bool, SendmailError> {
    buf.clear();
    let n = input
        .read_until(b'\n', buf)
        .map_err(|e| SendmailError::Input(e.to_string()))?;
    while buf.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        buf.pop();
    }
    Ok(n > 0)
}

fn read_headers(input: &mut dyn BufRead, ignore_dot: bool) -> Result<Head, SendmailError> {
    let mut headers = Vec::new();
    let mut total = 0usize;
    let mut buf = Vec::new();
    loop {
        if !read_line(input, &mut buf)? {
            return Ok(Head {
                headers,
                first_body: None,
                ended: true,
            });
        }
        if !ignore_dot && buf == b"." {
            return Ok(Head {
                headers,
                first_body: None,
                ended: true,
            });
        }
        if buf.is_empty() {
            return Ok(Head {
                headers,
                first_body: None,
                ended: false,
            });
        }
        total += buf.len() + 2;
        if total > MAX_HEADER_BYTES {
            return Err(SendmailError::Input(format!(
                "the header block is longer than {MAX_HEADER_BYTES} bytes"
            )));
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        let is_header = line.starts_with([' ', '\t'])
            || line
                .split_once(':')
                .is_some_and(|(name, _)| !name.is_empty() && !name.contains(' '));
        if !is_header && headers.is_empty() {
            // No header block at all: the first line is body text.
            return Ok(Head {
                headers,
                first_body: Some(buf),
                ended: false,
            });
        }
        headers.push(line);
    }
}

/// Whole header fields (continuation lines joined) as (name, value).
fn fields(headers: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in headers {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Addresses in To, Cc and Bcc (`-t`).
fn header_recipients(headers: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in fields(headers) {
        if ["to", "cc", "bcc"].contains(&name.to_ascii_lowercase().as_str()) {
            out.extend(addresses(&value));
        }
    }
    out
}

/// The addresses of an address-list header: `a@x, "B, C" <b@y>, group: c@z;`.
fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut item = String::new();
    let mut quoted = false;
    let mut depth = 0u32;
    let mut push = |item: &mut String| {
        let it = item.trim();
        let it = it.rsplit_once(':').map_or(it, |(_, a)| a).trim();
        let addr = match (it.rfind('<'), it.rfind('>')) {
            (Some(a), Some(b)) if a < b => &it[a + 1..b],
            _ => it.split_whitespace().next().unwrap_or(""),
        };
        let addr = addr.trim().trim_end_matches(';');
        if addr.contains('@') || (!addr.is_empty() && !addr.contains(' ')) {
            out.push(addr.to_string());
        }
        item.clear();
    };
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            ',' | ';' if !quoted && depth == 0 => {
                push(&mut item);
                continue;
            }
            _ => {}
        }
        if depth == 0 && c != ')' {
            item.push(c);
        }
    }
    push(&mut item);
    out
}

/// The header block to send: Bcc removed under `-t` (sendmail does), and
/// a From header added when there is none. Date and Message-ID are added
/// by the daemon as for any client.
fn fix_headers(
    headers: &[String],
    from_headers: bool,
    sender: &str,
    full_name: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::with_capacity(headers.len() + 1);
    let mut in_bcc = false;
    let mut has_from = false;
    for line in headers {
        if line.starts_with([' ', '\t']) {
            if !in_bcc {
                out.push(line.clone());
            }
            continue;
        }
        let name = line
            .split_once(':')
            .map(|(n, _)| n.trim().to_ascii_lowercase());
        in_bcc = from_headers && name.as_deref() == Some("bcc");
        has_from |= name.as_deref() == Some("from");
        if !in_bcc {
            out.push(line.clone());
        }
    }
    if !has_from {
        let from = match full_name {
            Some(n) if !n.is_empty() => {
                let n = n.replace(['"', '\\', '\r', '\n'], "");
                format!("From: \"{n}\" <{sender}>")
            }
            _ => format!("From: {sender}"),
        };
        out.insert(0, from);
    }
    out
}

/// The user running us, for the default envelope sender.
fn login_name() -> String {
    for var in ["LOGNAME", "USER"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return v;
        }
    }
    // No environment (some daemons): the owner of our own /proc entry.
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if let (Some(uid), Ok(passwd)) = (uid, std::fs::read_to_string("/etc/passwd")) {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 2 && f[2].parse() == Ok(uid) {
                return f[0].to_string();
            }
        }
    }
    "root".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn args(s: &[&str]) -> Result<Args, SendmailError> {
        parse_args(s.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_the_flags_cron_and_friends_use() {
        let a = args(&[
            "-t",
            "-oi",
            "-fcron@lan",
            "-F",
            "Cron Daemon",
            "-C",
            "/x.toml",
        ])
        .unwrap();
        assert!(a.from_headers && a.ignore_dot);
        assert_eq!(a.sender.as_deref(), Some("cron@lan"));
        assert_eq!(a.full_name.as_deref(), Some("Cron Daemon"));
        assert_eq!(a.config, Some(PathBuf::from("/x.toml")));
        let a = args(&[
            "-i", "-f", "root", "-odi", "-oem", "-v", "ops@x", "--", "-odd@x",
        ])
        .unwrap();
        assert!(a.ignore_dot && !a.from_headers);
        assert_eq!(a.sender.as_deref(), Some("root"));
        assert_eq!(a.rcpts, vec!["ops@x", "-odd@x"]);
        let a = args(&["-N", "never", "-r", "a@b", "-bm", "-em", "x@y"]).unwrap();
        assert_eq!(a.sender.as_deref(), Some("a@b"));
        assert_eq!(a.rcpts, vec!["x@y"]);
        assert!(matches!(args(&["-f"]), Err(SendmailError::Usage(_))));
        assert!(matches!(args(&["-bs"]), Err(SendmailError::Usage(_))));
        // Each mode points at what does its job; -bs is not the queue.
        let said = |m: &str| match args(&[m]) {
            Err(SendmailError::Usage(text)) => text,
            other => panic!("{m}: {other:?}"),
        };
        let bs = said("-bs");
        assert!(!bs.contains("queue list"), "{bs}");
        assert!(bs.contains("[server] listen"), "{bs}");
        assert!(said("-bp").contains("postern queue list"));
        assert!(said("-bd").contains("postern serve"));
        assert!(said("-bi").contains("[aliases]"));
        assert!(matches!(args(&["-q"]), Err(SendmailError::Usage(_))));
        assert!(matches!(args(&["-Z"]), Err(SendmailError::Usage(_))));
        assert!(args(&["--help"]).unwrap().help);
    }

    #[test]
    fn takes_recipients_from_to_cc_bcc_and_drops_bcc() {
        let h: Vec<String> = [
            "From: root",
            "To: ops@example.test, \"Doe, Jane\" <jane@example.test>",
            "Cc: team: a@x.test, b@x.test;",
            "Bcc: hidden@example.test (audit)",
            "Subject: hi",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            header_recipients(&h),
            vec![
                "ops@example.test",
                "jane@example.test",
                "a@x.test",
                "b@x.test",
                "hidden@example.test"
            ]
        );
        let fixed = fix_headers(&h, true, "root@gw", None);
        assert!(!fixed.iter().any(|l| l.starts_with("Bcc")));
        assert_eq!(fixed.len(), 4);
    }

    #[test]
    fn adds_from_with_the_full_name_when_missing() {
        let h = vec!["Subject: x".to_string()];
        let fixed = fix_headers(&h, false, "cron@gw", Some("Cron \"Daemon\""));
        assert_eq!(fixed[0], "From: \"Cron Daemon\" <cron@gw>");
    }

    #[test]
    fn a_lone_dot_ends_input_unless_i() {
        let mut input: &[u8] = b"Subject: a\n.\nmore\n";
        let h = read_headers(&mut input, false).unwrap();
        assert!(h.ended);
        let mut input: &[u8] = b"Subject: a\n\nbody\n";
        let h = read_headers(&mut input, true).unwrap();
        assert!(!h.ended);
        assert_eq!(h.headers, vec!["Subject: a"]);
    }

    #[test]
    fn wildcard_listeners_mean_loopback() {
        assert_eq!(
            maildrop::listener_addr("0.0.0.0:25".parse().unwrap()),
            "127.0.0.1:25".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            maildrop::listener_addr("[::]:25".parse().unwrap()),
            "[::1]:25".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            maildrop::listener_addr("192.168.1.2:25".parse().unwrap()),
            "192.168.1.2:25".parse::<SocketAddr>().unwrap()
        );
    }
}
