//! The configuration file: loading, the schema of every table, defaults,
//! validation, errors and the effective-config printer.
//!
//! Parsing happens once, into typed values; nothing downstream sees raw
//! strings such as `"10MiB"`. Every problem is reported, not just the first,
//! as `FILE:LINE:COL: message`, and an unknown key gets the nearest known
//! one as a suggestion ("did you mean…", "belongs in \[queue\]").
//!
//! # Layout
//!
//! - `mod.rs` (here): [`load`]/[`parse`], [`ConfigError`]/[`LoadError`],
//!   the error collector, unknown-key detection with suggestions, the root
//!   [`Config`] and the checks between tables.
//! - `schema.rs`: the `table!` macro that declares a table, key specs
//!   (required, default, optional), the section reader and the printer.
//! - `values.rs`: value types and their text grammar (`FromStr`): [`Size`],
//!   [`Dur`], [`AddressPattern`], [`DomainPattern`], networks, listen
//!   addresses, hosts, mailboxes.
//! - `words.rs`: the word-valued keys (log level, TLS mode, address family,
//!   AUTH method, OAuth flow and provider, bare-newline mode).
//! - `convert.rs`: TOML value → typed value, with per-key bounds.
//! - One file per table, holding its keys, defaults, checks and printer:
//!   `server.rs`, `policy.rs`, `queue.rs`, `upstream.rs` (`[upstream]` and
//!   what a `[[route]]` sends to), `oauth.rs` (its XOAUTH2 keys),
//!   `route.rs` (`[[route]]` and the top-level outbound keys),
//!   `aliases.rs`, `users.rs`, `status.rs`, `filter.rs` (`[[filter]]`
//!   rules, their pattern grammar, and `[storm]`).
//! - `tests/`: the reader's tests, by theme (values, errors, printing).
//!
//! This module may use `smtp` (address grammar, the bare-newline mode) and
//! `tls` (describing certificate and key files); nothing above it.
//!
//! # How to add a key
//!
//! Add one entry to the `table!` declaration in the table's file, e.g. in
//! `queue.rs`:
//!
//! ```text
//! /// Default 5s: how long … (what the key does, for the Rust reader).
//! sync_delay: Dur = default(Dur::secs(5), duration(SECOND, MINUTE)),
//! ```
//!
//! That one entry makes the struct field, the key (named after the field,
//! or `field as "key_name"`), what it is when absent (`default(value, …)`,
//! `required("example", …)` or `optional(…)` for an `Option`), its
//! converter from `convert.rs` with its bounds (lists: `list(…)`), and its
//! line in `postern check --print`. Unknown-key detection and the
//! suggestions pick the key up by themselves. A check between keys goes in
//! the table's `read` function; a value type of its own goes in
//! `values.rs` (`FromStr`, with the error a person reads) and gets a
//! `Print` impl in `schema.rs`. Then show the key, commented out with its
//! default, in `config/postern.toml`: a test checks that every key of the
//! top level, `[server]`, `[policy]` and `[queue]` is there.
//!
//! A new table is a file with its `table!` and a `read` function, a line
//! in `TABLES` (for unknown-key detection), a `computed` field of
//! [`Config`], and its read and print calls in `read_config` and
//! [`Config::to_toml`].

use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

mod aliases;
mod convert;
mod filter;
mod oauth;
mod policy;
mod queue;
mod route;
mod schema;
mod server;
mod status;
mod upstream;
mod users;
mod values;
mod words;

#[cfg(test)]
mod tests;

pub use filter::{
    Extension, FilterConfig, GlobPart, HeaderLine, HeaderMatch, Pattern, RejectReply, StormConfig,
    StormKey,
};
pub use oauth::OAuthConfig;
pub use policy::PolicyConfig;
pub use queue::QueueConfig;
pub use route::{OutboundConfig, RouteConfig};
pub use server::ServerConfig;
pub use status::StatusConfig;
pub use upstream::{HostSpec, MaildirConfig, SmarthostConfig, Upstream, is_trusted_hop};
pub use users::{HashFormatError, UserConfig, check_hash_format};
pub use values::{
    AddressPattern, AuthMethod, DomainPattern, Dur, IpFamily, OAuthFlow, Size, TlsMode,
};

use convert::{log_level, own_hostname};
use schema::{Section, Toml, default, default_from, table};

/// Where `postern serve` and `postern check` look without `--config`.
pub const DEFAULT_PATH: &str = "/etc/postern/postern.toml";

table! {
    /// The whole, validated configuration.
    pub struct Config, read as TopKeys {
        /// Our name in the greeting, EHLO and Received. Default: the system's hostname.
        hostname: String = default_from(default_hostname, own_hostname),
        /// Log level: `error`, `warn`, `info`, `debug`, `trace`. Default `info`.
        /// `RUST_LOG`, when set, wins.
        log_level: String = default("info".to_string(), log_level),
    }
    computed {
        /// `[server]`
        server: ServerConfig,
        /// `[policy]`
        policy: PolicyConfig,
        /// `[queue]`
        queue: QueueConfig,
        /// Outbound: routes (`[upstream]` is the one-route form), aliases,
        /// rewriting, failure reports.
        outbound: OutboundConfig,
        /// `[[user]]`: accounts devices may AUTH as on the listener.
        users: Vec<UserConfig>,
        /// `[[filter]]`: rules, in file order.
        filters: Vec<FilterConfig>,
        /// `[storm]`: alert-storm suppression, when the table is there.
        storm: Option<StormConfig>,
        /// `[status]`: `postern status` thresholds and the status listener.
        status: StatusConfig,
        /// What is allowed but deserves a second look (`check` prints
        /// these, `serve` logs them); sorted by position.
        warnings: Vec<ConfigError>,
    }
}

/// One problem in a config file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file was read and has problems; one line each.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    load_with(path, &ParseOptions::default())
}

/// [`load`] with explicit [`ParseOptions`].
pub fn load_with(path: &Path, opts: &ParseOptions) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_with(&text, path, opts).map_err(LoadError::Invalid)
}

/// Validate config text; `path` is only used in error messages.
///
/// Besides the text this looks at the machine, as [`ParseOptions::default`]
/// says: `password_file` and `ca_file` must be readable by this process now,
/// and a missing `hostname` is taken from the system.
pub fn parse(text: &str, path: &Path) -> Result<Config, Vec<ConfigError>> {
    parse_with(text, path, &ParseOptions::default())
}

/// The parts of validation that look at the machine rather than the text.
///
/// The default checks files and reads the system hostname, which is what
/// `postern serve` and `postern check` on the appliance want.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Do not check that `password_file` and `ca_file` exist and can be
    /// read. For checking a config written for another machine, and tests.
    pub skip_file_checks: bool,
    /// The hostname used when the file sets none. `None` reads
    /// /proc/sys/kernel/hostname, or uses "localhost" if that fails.
    pub default_hostname: Option<String>,
}

/// Validate config text with explicit [`ParseOptions`]. Returns every
/// problem found, sorted by position; a TOML syntax error stops before the
/// schema is checked, because the rest of the document is then unreliable.
pub fn parse_with(
    text: &str,
    path: &Path,
    opts: &ParseOptions,
) -> Result<Config, Vec<ConfigError>> {
    let mut ctx = Ctx {
        file: path,
        src: text,
        opts,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        report_syntax(&mut ctx, &syntax, doc.get_ref());
        let mut errors = ctx.into_sorted_errors();
        // A recovering parser reports follow-on errors for the rest of a
        // broken line (or unclosed array); the first per line is the cause.
        errors.dedup_by_key(|e| e.line);
        return Err(errors);
    }
    match read_config(&mut ctx, doc.get_ref()) {
        Ok(config) if ctx.errors.is_empty() => Ok(config),
        _ => {
            if ctx.errors.is_empty() {
                // Every rejection reports first; this is a bug guard so the
                // caller never gets an empty error list.
                ctx.error(0, "internal error: configuration rejected without a reason");
            }
            Err(ctx.into_sorted_errors())
        }
    }
}

impl Config {
    /// The domain bare local parts are qualified with: `qualify_domain`,
    /// or our hostname.
    pub fn qualify_domain(&self) -> &str {
        self.outbound
            .qualify_domain
            .as_deref()
            .unwrap_or(&self.hostname)
    }

    /// The effective configuration (every default filled in) as TOML.
    ///
    /// Values are printed resolved, not as the file spelled them: sizes in
    /// bytes (`max_message_size = 10485760`), durations in their canonical
    /// form (every non-zero unit, largest first: `"90m"` prints as
    /// `"1h30m"`), addresses and networks normalised. [`parse`] accepts the
    /// output again, to the same values.
    pub fn to_toml(&self) -> String {
        let mut out = Toml::new(
            "# postern: effective configuration, every setting with the value in force\n",
        );
        // Top-level keys must come before the first table.
        self.print_keys(&mut out);
        self.outbound.print_keys(&mut out);
        out.header("[server]");
        self.server.print_keys(&mut out);
        out.header("[policy]");
        self.policy.print_keys(&mut out);
        out.header("[queue]");
        self.queue.print_keys(&mut out);
        out.header("[status]");
        self.status.print_keys(&mut out);
        self.outbound.print_tables(&mut out);
        for u in &self.users {
            out.header("[[user]]");
            u.print_keys(&mut out);
        }
        for f in &self.filters {
            out.header("[[filter]]");
            f.print_keys(&mut out);
        }
        if let Some(s) = &self.storm {
            out.header("[storm]");
            s.print_keys(&mut out);
        }
        out.finish()
    }
}

// ---------------------------------------------------------------------------
// Collecting errors.

/// Marker: the problem has been recorded in [`Ctx::errors`] already.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reported;

/// The state of one validation run: where errors go and how to place them.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) file: &'a Path,
    pub(crate) src: &'a str,
    pub(crate) opts: &'a ParseOptions,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) warnings: Vec<ConfigError>,
}

impl Ctx<'_> {
    /// Record a problem at a byte offset of the source.
    pub(crate) fn error(&mut self, offset: usize, message: impl Into<String>) -> Reported {
        let (line, col) = line_col(self.src, offset);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            message: message.into(),
        });
        Reported
    }

    /// Record something allowed that deserves a second look.
    pub(crate) fn warn(&mut self, offset: usize, message: impl Into<String>) {
        let (line, col) = line_col(self.src, offset);
        self.warnings.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            message: message.into(),
        });
    }

    /// A file named by `key` (value at `at`) must be readable now, by this
    /// process: the daemon reads it at startup, and a missing file is
    /// better found by `check`. `certificates`: it must hold a PEM
    /// certificate. Skipped when the options say so.
    pub(crate) fn check_file(&mut self, at: usize, key: &str, path: &Path, certificates: bool) {
        if self.opts.skip_file_checks {
            return;
        }
        if let Some(p) = crate::tls::file_problem(path, certificates) {
            self.error(at, format!("{key}: \"{}\" {p}", path.display()));
        }
    }

    fn syntax_error(&mut self, e: &toml::de::Error) {
        let span = e.span().unwrap_or(0..0);
        let snippet = self.src.get(span.clone()).unwrap_or("").trim();
        let raw = e.message();
        let message = if raw.starts_with("string values must be quoted") && snippet.is_empty() {
            "a value is missing after '='".to_string()
        } else if raw.starts_with("string values must be quoted") {
            format!("text must be in quotes: write \"{snippet}\"")
        } else if raw == "duplicate key" && !snippet.is_empty() {
            format!("'{snippet}' is defined twice; TOML allows each key and each [table] once")
        } else {
            format!("TOML syntax error: {raw}")
        };
        self.error(span.start, message);
    }

    fn into_sorted_errors(self) -> Vec<ConfigError> {
        let mut errors = self.errors;
        errors.sort_by_key(|e| (e.line, e.col));
        errors
    }
}

/// Report TOML syntax errors. A list that is never closed makes the
/// recovering parser complain about every line after it; those follow-on
/// errors are dropped and the list is reported where it opens.
fn report_syntax(ctx: &mut Ctx, errors: &[toml::de::Error], doc: &DeTable) {
    let mut arrays = Vec::new();
    collect_array_spans(doc, &mut arrays);
    let unclosed: Vec<std::ops::Range<usize>> = errors
        .iter()
        .filter(|e| e.message().starts_with("unclosed array"))
        .filter_map(|e| e.span())
        .filter_map(|at| {
            arrays
                .iter()
                .find(|a| a.end == at.start && a.start < at.start)
                .cloned()
        })
        .collect();
    for e in errors {
        let at = e.span().map_or(0, |s| s.start);
        if unclosed.iter().any(|a| a.start < at && at <= a.end) {
            continue;
        }
        ctx.syntax_error(e);
    }
    for a in unclosed {
        ctx.error(
            a.start,
            "this list is never closed; add ']' after its last element",
        );
    }
}

fn collect_array_spans(table: &DeTable, out: &mut Vec<std::ops::Range<usize>>) {
    for (_, item) in table.iter() {
        collect_value_spans(item, out);
    }
}

fn collect_value_spans(item: &schema::Item, out: &mut Vec<std::ops::Range<usize>>) {
    match item.get_ref() {
        DeValue::Array(elems) => {
            out.push(item.span());
            for e in elems.iter() {
                collect_value_spans(e, out);
            }
        }
        DeValue::Table(t) => collect_array_spans(t, out),
        _ => {}
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

// ---------------------------------------------------------------------------
// Reading the document.

/// The keys allowed at the top of the file, above the first table.
const TOP_LEVEL: &[&[&str]] = &[Config::KEYS, OutboundConfig::KEYS];

/// Every table and the keys it may hold, from the tables' declarations.
const TABLES: &[(&str, &[&[&str]])] = &[
    ("server", &[ServerConfig::KEYS]),
    ("policy", &[PolicyConfig::KEYS]),
    ("queue", &[QueueConfig::KEYS]),
    ("upstream", upstream::KEYS),
    ("route", route::KEYS),
    // Any key: each is an address to map.
    ("aliases", &[]),
    ("user", &[UserConfig::KEYS]),
    ("filter", &[FilterConfig::KEYS]),
    ("storm", &[StormConfig::KEYS]),
    ("status", &[StatusConfig::KEYS]),
];

fn read_config(ctx: &mut Ctx, root: &DeTable) -> Result<Config, Reported> {
    let empty = DeTable::new();
    check_top_level(ctx, root);
    let top = TopKeys::read(ctx, &Section::new("", root, 0));

    let server_sec = section(ctx, root, "server", true, &empty);
    let server = server_sec
        .as_ref()
        .map_err(|r| *r)
        .and_then(|sec| server::read(ctx, sec));
    let policy =
        section(ctx, root, "policy", false, &empty).and_then(|sec| policy::read(ctx, &sec));
    let queue_sec = section(ctx, root, "queue", true, &empty);
    let queue = queue_sec
        .as_ref()
        .map_err(|r| *r)
        .and_then(|sec| queue::read(ctx, sec));
    let mut outbound = route::read(ctx, root, &empty);
    // qualify_domain defaults to the hostname: resolved here, so that
    // `--print` shows the domain in force.
    if let (Ok(o), Ok(host)) = (&mut outbound.config, &top.hostname)
        && o.qualify_domain.is_none()
    {
        o.qualify_domain = Some(host.clone());
    }

    // Checks between tables, only between values that are themselves valid.
    if let (Ok(server), Ok(queue), Ok(server_sec), Ok(queue_sec)) =
        (&server, &queue, &server_sec, &queue_sec)
        && queue.max_size.bytes < server.max_message_size.bytes
    {
        let at = queue_sec
            .key_offset("max_size")
            .or(server_sec.key_offset("max_message_size"))
            .unwrap_or(queue_sec.at);
        let shown = |sec: &Section, key, size: Size| {
            sec.written(ctx, key).unwrap_or_else(|| size.to_string())
        };
        let message = format!(
            "[queue] max_size ({}) is smaller than [server] max_message_size ({}); a message of \
             the largest allowed size could never be queued",
            shown(queue_sec, "max_size", queue.max_size),
            shown(server_sec, "max_message_size", server.max_message_size),
        );
        ctx.error(at, message);
    }
    if let (Ok(queue), Some((outbox, at))) = (&queue, &outbound.maildir)
        && within(outbox, &queue.dir)
    {
        ctx.error(
            *at,
            format!(
                "dir: the outbox \"{}\" is inside the queue directory \"{}\"; the queue owns \
                 that directory, so deliver somewhere else (e.g. \"var/outbox\")",
                outbox.display(),
                queue.dir.display()
            ),
        );
    }

    if let (Ok(host), Ok(out)) = (&top.hostname, &outbound.config) {
        route::check_local_mail(ctx, root, out, host);
    }

    let users = users::read(ctx, root);
    if let (Ok(server), Ok(policy), Ok(users), Ok(server_sec)) =
        (&server, &policy, &users, &server_sec)
    {
        users::check_accounts(ctx, server, policy, users, server_sec);
    }

    let route_names: Option<Vec<String>> = outbound
        .config
        .as_ref()
        .ok()
        .map(|o| o.routes.iter().filter_map(|r| r.name.clone()).collect());
    let filters = filter::read_filters(ctx, root, route_names.as_deref());
    let storm = filter::read_storm(ctx, root);

    let status =
        section(ctx, root, "status", false, &empty).and_then(|sec| status::read(ctx, &sec));
    let mut warnings = std::mem::take(&mut ctx.warnings);
    warnings.sort_by_key(|w| (w.line, w.col));
    top.build(
        server,
        policy,
        queue,
        outbound.config,
        users,
        filters,
        storm,
        status,
        Ok(warnings),
    )
}

/// Is `inner` the directory `outer` or below it? Lexical, ignoring `./` and
/// trailing slashes: enough to catch the same spelling twice without
/// touching the filesystem (which may not exist yet at check time).
fn within(inner: &Path, outer: &Path) -> bool {
    let norm = |p: &Path| -> PathBuf {
        p.components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect()
    };
    norm(inner).starts_with(norm(outer))
}

/// Find a top-level table; a missing optional one reads as empty.
fn section<'t, 'i>(
    ctx: &mut Ctx,
    root: &'t DeTable<'i>,
    name: &'static str,
    required: bool,
    empty: &'t DeTable<'i>,
) -> Result<Section<'t, 'i>, Reported> {
    match root.get_key_value(name) {
        None if required => Err(ctx.error(0, missing_table_message(name))),
        None => Ok(Section::new(name, empty, 0)),
        Some((key, item)) => match item.get_ref() {
            DeValue::Table(table) => Ok(Section::new(name, table, item.span().start)),
            other => Err(ctx.error(
                key.span().start,
                format!(
                    "'{name}' must be a table, written [{name}] on a line of its own, found {}",
                    convert::describe(other)
                ),
            )),
        },
    }
}

fn missing_table_message(name: &str) -> String {
    let what = match name {
        "server" => "it needs at least listen = [\"127.0.0.1:2525\"]",
        "queue" => "it needs at least dir = \"/var/lib/postern/queue\"",
        "upstream" => {
            "it needs at least kind = \"smarthost\" (with host) or kind = \"maildir\" (with dir); \
             or write [[route]] tables instead"
        }
        _ => "it is required",
    };
    format!("missing [{name}] table; {what}")
}

/// Our name when the file sets none: the system's, if it is usable.
fn default_hostname(ctx: &mut Ctx) -> Result<String, Reported> {
    let name = ctx
        .opts
        .default_hostname
        .clone()
        .unwrap_or_else(system_hostname);
    match values::hostname_problem(&name) {
        None => Ok(name),
        Some(p) => Err(ctx.error(
            0,
            format!(
                "hostname is not set and the system's hostname \"{name}\" cannot be used: {p}; \
                 set hostname = \"relay.example.net\" at the top of this file"
            ),
        )),
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

// ---------------------------------------------------------------------------
// Unknown keys and tables, with suggestions.

fn is_top_key(name: &str) -> bool {
    TOP_LEVEL.iter().any(|l| l.contains(&name))
}

fn check_top_level(ctx: &mut Ctx, root: &DeTable) {
    for (key, item) in root.iter() {
        let name: &str = key.get_ref();
        if is_top_key(name) || TABLES.iter().any(|(t, _)| *t == name) {
            continue;
        }
        let mut message;
        if matches!(item.get_ref(), DeValue::Table(_)) {
            message = format!("unknown table [{name}]");
            let names: Vec<&str> = TABLES.iter().map(|(t, _)| *t).collect();
            if let Some(s) = nearest(name, &names) {
                message.push_str(&format!("; did you mean [{s}]?"));
            } else {
                message.push_str(
                    "; the tables are [server], [policy], [queue], [upstream] (or [[route]]) and [aliases]",
                );
            }
        } else {
            message = format!("unknown key '{name}' at the top level");
            let top: Vec<&str> = TOP_LEVEL.iter().flat_map(|l| l.iter().copied()).collect();
            if let Some(s) = nearest(name, &top) {
                message.push_str(&format!("; did you mean '{s}'?"));
            } else if let Some(table) = home_table(name, None) {
                message.push_str(&format!(
                    "; '{name}' belongs in [{table}], below its [{table}] line"
                ));
            } else if let Some((table, s)) = nearest_anywhere(name) {
                message.push_str(&format!("; did you mean '{s}' in [{table}]?"));
            }
        }
        ctx.error(key.span().start, message);
    }
}

/// Report keys of `sec` that are in none of `known`.
pub(crate) fn unknown_keys(ctx: &mut Ctx, sec: &Section, known: &[&[&str]]) {
    for (key, item) in sec.table.iter() {
        let name: &str = key.get_ref();
        if known.iter().any(|l| l.contains(&name)) {
            continue;
        }
        let table = sec.name;
        let message = if matches!(item.get_ref(), DeValue::Table(_)) {
            format!("unknown table [{table}.{name}]; [{table}] has no sub-tables")
        } else {
            let candidates: Vec<&str> = known.iter().flat_map(|l| l.iter().copied()).collect();
            let mut m = format!("unknown key '{name}' in [{table}]");
            if let Some(s) = nearest(name, &candidates) {
                m.push_str(&format!("; did you mean '{s}'?"));
            } else if is_top_key(name) {
                m.push_str(&format!(
                    "; '{name}' belongs at the top of the file, above the first [table] line \
                     (in TOML every key below a [table] line belongs to that table)"
                ));
            } else if let Some(home) = home_table(name, Some(table)) {
                m.push_str(&format!("; '{name}' belongs in [{home}]"));
            }
            m
        };
        ctx.error(key.span().start, message);
    }
}

/// The table (other than `except`) that has a key of exactly this name.
fn home_table(name: &str, except: Option<&str>) -> Option<&'static str> {
    TABLES
        .iter()
        .filter(|(t, _)| Some(*t) != except)
        .find(|(_, lists)| lists.iter().any(|l| l.contains(&name)))
        .map(|(t, _)| *t)
}

fn nearest_anywhere(name: &str) -> Option<(&'static str, &'static str)> {
    let mut best: Option<(usize, &'static str, &'static str)> = None;
    for (table, lists) in TABLES {
        for key in lists.iter().flat_map(|l| l.iter()) {
            if let Some(d) = close_enough(name, key)
                && best.is_none_or(|(bd, _, _)| d < bd)
            {
                best = Some((d, table, key));
            }
        }
    }
    best.map(|(_, t, k)| (t, k))
}

/// The candidate closest to `name`, if it is close enough to be a typo.
fn nearest<'c>(name: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .filter_map(|c| close_enough(name, c).map(|d| (d, *c)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance when it is small for the word's length; case and
/// `-`/`_` differences are free (both are common slips).
fn close_enough(name: &str, candidate: &str) -> Option<usize> {
    let norm: String = name.to_lowercase().replace('-', "_");
    let d = edit_distance(&norm, candidate);
    let limit = match candidate.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    (d <= limit).then_some(d)
}

/// Edit distance over characters, counting a swap of two neighbours as one
/// edit (optimal string alignment): "dri" is one slip away from "dir".
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
