//! The configuration file: schema, defaults, validation and errors.
//!
//! Parsing happens once, into typed values; nothing downstream sees raw
//! strings such as `"10MiB"`. Every problem is reported, not just the first,
//! as `FILE:LINE:COL: message`.

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where `postern serve` and `postern check` look without `--config`.
pub const DEFAULT_PATH: &str = "/etc/postern/postern.toml";

/// The whole, validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Our name in the greeting, EHLO and Received. Default: the system's hostname.
    pub hostname: String,
    /// Log level: `error`, `warn`, `info`, `debug`, `trace`. Default `info`.
    /// `RUST_LOG`, when set, wins.
    pub log_level: String,
    /// `[server]`
    pub server: ServerConfig,
    /// `[policy]`
    pub policy: PolicyConfig,
    /// `[queue]`
    pub queue: QueueConfig,
    /// `[upstream]`, or the first `[[route]]` when the file has routes.
    pub upstream: Upstream,
    /// Outbound: routes, aliases, rewriting, failure reports.
    pub outbound: OutboundConfig,
    /// `[[user]]`: accounts devices may AUTH as on the listener.
    pub users: Vec<UserConfig>,
}

/// `[[user]]`: one account for listener AUTH (PLAIN/LOGIN).
#[derive(Debug, Clone, Serialize)]
pub struct UserConfig {
    /// Required. The AUTH user name.
    pub name: String,
    /// Required. An Argon2id PHC string from `postern passwd`.
    pub password_hash: String,
    /// Default empty = any sender. Envelope senders this user may use.
    pub allowed_senders: Vec<AddressPattern>,
}

/// `[server]`: the listener and its bounds.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// Required. Addresses to accept SMTP on, IPv4 and IPv6.
    pub listen: Vec<SocketAddr>,
    /// Default 10MiB. Advertised in EHLO SIZE.
    pub max_message_size: Size,
    /// Default 100 (RFC 5321 §4.5.3.1.8's minimum).
    pub max_recipients: usize,
    /// Default 64, across all listeners.
    pub max_connections: usize,
    /// Default 5m (RFC 5321 §4.5.3.2.7): idle time allowed between commands
    /// and between data chunks.
    pub command_timeout: Dur,
    /// Default 30m: a whole session's cap, against slow-drip clients.
    pub session_timeout: Dur,
    /// Default 3m (RFC 5321 §4.5.3.2.5's DATA block): idle time allowed
    /// between chunks of message data.
    pub data_timeout: Dur,
    /// Default 5m (RFC 5321 §4.5.3.2.7 asks servers for at least 5
    /// minutes): time allowed from the greeting (or the start of implicit
    /// TLS) to the first command. Shorter values shed idle connections
    /// sooner, at the cost of that RFC SHOULD.
    pub greeting_timeout: Dur,
    /// Default 5m: how long the queue may take to make a message durable
    /// after the final dot before the client is told 451 instead (RFC 5321
    /// §4.5.3.2.6 gives clients 10 minutes; answering first means the
    /// client retries rather than giving up without a reply).
    pub data_end_timeout: Dur,
    /// Listener certificate chain (PEM); with `tls_key`, STARTTLS is offered
    /// on `listen` and `listen_tls` may be used. Re-read on reload.
    pub tls_cert: Option<PathBuf>,
    /// Listener private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Default empty. Addresses that speak TLS from the first byte (RFC 8314, port 465).
    pub listen_tls: Vec<SocketAddr>,
    /// Default empty. Networks to which STARTTLS is not advertised (legacy devices).
    pub no_starttls_clients: Vec<IpNet>,
    /// Default empty. Networks that may AUTH without TLS (legacy devices; a warning at start).
    pub allow_plain_auth_clients: Vec<IpNet>,
    /// Default reject. What a bare CR or LF in message data gets.
    pub bare_newline: BareNewlineMode,
    /// Default empty. Networks whose bare CR/LF are normalised to CRLF
    /// whatever `bare_newline` says (legacy devices).
    pub bare_newline_normalize_clients: Vec<IpNet>,
    /// Default 10: open connections from one client address.
    pub max_connections_per_client: usize,
    /// Default 60: new connections per minute from one client address.
    pub max_connections_per_minute: u32,
    /// Default 120: messages per minute from one client address.
    pub max_messages_per_minute: u32,
    /// Default 1000: recipients per minute from one client address.
    pub max_recipients_per_minute: u32,
    /// Default 3: failed AUTH attempts in a session before 421.
    pub max_auth_failures: u32,
}

/// `[server] bare_newline`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewlineMode {
    /// Refuse the message (550 5.6.0) and close.
    Reject,
    /// Turn each bare CR or LF into CRLF.
    Normalize,
}

impl BareNewlineMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BareNewlineMode::Reject => "reject",
            BareNewlineMode::Normalize => "normalize",
        }
    }
}

/// `[policy]`: who may relay, from and to whom.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyConfig {
    /// Default `["127.0.0.0/8", "::1/128"]`. Clients outside get 554 at connect.
    pub allow_clients: Vec<IpNet>,
    /// Default empty. Wins over allow.
    pub deny_clients: Vec<IpNet>,
    /// Default empty = any sender.
    pub allow_senders: Vec<AddressPattern>,
    /// Default empty. Wins over allow.
    pub deny_senders: Vec<AddressPattern>,
    /// Default empty = any recipient.
    pub allow_recipients: Vec<AddressPattern>,
    /// Default empty. Wins over allow.
    pub deny_recipients: Vec<AddressPattern>,
    /// Default false. An authenticated `[[user]]` may relay from outside allow_clients.
    pub relay_authenticated: bool,
}

/// One entry of a sender/recipient list, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressPattern {
    /// `user@example.com`: that mailbox (compared case-insensitively).
    Mailbox(String),
    /// `example.com`: any mailbox at that domain.
    Domain(String),
    /// `.example.com`: any mailbox at a subdomain of it (not the domain itself).
    Subdomains(String),
    /// `<>`: the null sender.
    NullSender,
}

/// `[queue]`
#[derive(Debug, Clone, Serialize)]
pub struct QueueConfig {
    /// Required. The spool directory; relative paths are taken from the
    /// working directory.
    pub dir: PathBuf,
    /// Default 64MiB: total bytes of queued messages.
    pub max_size: Size,
    /// Default 10000: number of queued messages.
    pub max_messages: usize,
    /// Default 5d: then the message fails with a report.
    pub max_age: Dur,
    /// Default `["1m", "5m", "15m", "30m", "1h"]`: waits between attempts;
    /// the last repeats.
    pub retry_intervals: Vec<Dur>,
}

/// `[upstream]`: where mail goes.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Upstream {
    /// `kind = "smarthost"`
    Smarthost(SmarthostConfig),
    /// `kind = "maildir"`
    Maildir(MaildirConfig),
    /// `kind = "mx"`: straight to the recipient domain's MX hosts. `host`
    /// and `hosts` are empty; `port` is the port spoken on every MX (25).
    Mx(SmarthostConfig),
}

/// `[upstream] kind = "smarthost"`
#[derive(Debug, Clone, Serialize)]
pub struct SmarthostConfig {
    /// Required. Name or IP address.
    pub host: String,
    /// Default 587 for starttls, 465 for implicit, 25 for none.
    pub port: u16,
    /// Default starttls.
    pub tls: TlsMode,
    /// Optional extra trust anchors (PEM); system roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// Optional; AUTH when set (then password_file is required).
    pub username: Option<String>,
    /// File holding the password (first line; trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Default 2: parallel connections to this host.
    pub max_connections: usize,
    /// Default 100: messages sent over one connection before reconnecting.
    pub messages_per_connection: usize,
    /// Default 30s: TCP connect and TLS handshake.
    pub connect_timeout: Dur,
    /// Default 5m: each reply (RFC 5321 §4.5.3.2); the reply to the final
    /// dot gets 10m whatever this says.
    pub command_timeout: Dur,
    /// Every host to try, in order (`hosts`, or `host`/`port` alone); the
    /// first is `host`/`port`/`tls` above. Empty for `kind = "mx"`.
    pub hosts: Vec<HostSpec>,
    /// Default any: which address family to connect over.
    pub ip_family: IpFamily,
    /// TLS client certificate chain (PEM), for certificate-authenticated connectors.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
    /// AUTH with a password (PLAIN/LOGIN) or an OAuth2 token (XOAUTH2).
    pub auth: AuthMethod,
    /// `auth = "xoauth2"`: where and how to get tokens.
    pub oauth: Option<OAuthConfig>,
    /// The envelope sender becomes this address (the global one otherwise).
    pub rewrite_sender: Option<String>,
    /// With `rewrite_sender`: rewrite the From header too (display name
    /// kept, the original address goes to Reply-To unless one exists).
    pub rewrite_from: Option<bool>,
    /// Messages per minute sent over this route; more wait in the queue.
    pub max_messages_per_minute: Option<u32>,
    /// Recipients per 24 hours over this route; more wait in the queue.
    pub max_recipients_per_day: Option<u32>,
    /// The upstream's message size limit when known in advance (the
    /// upstream's EHLO SIZE is learned and used too).
    pub max_message_size: Option<Size>,
}

/// One host of a smarthost route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSpec {
    /// Name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS spoken with it.
    pub tls: TlsMode,
}

/// Address family for outbound connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    /// Both; when one fails, the other is tried.
    Any,
    /// IPv4 only (IPv6 routes that do not work, Gmail's IPv6 PTR policy).
    Ipv4,
    /// IPv6 only.
    Ipv6,
}

/// How to log in upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// `username` + `password_file` (AUTH PLAIN or LOGIN), or no AUTH.
    Password,
    /// `username` + an OAuth2 access token (AUTH XOAUTH2).
    Xoauth2,
}

/// Which OAuth2 grant gets the access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthFlow {
    /// A refresh token (Gmail, Microsoft 365 delegated).
    RefreshToken,
    /// Microsoft's client credentials (an app registration with SMTP.SendAsApp).
    ClientCredentials,
}

/// `auth = "xoauth2"` settings. Secrets live in their own files.
#[derive(Debug, Clone, Serialize)]
pub struct OAuthConfig {
    /// The token endpoint (https).
    pub token_url: String,
    /// Default refresh_token.
    pub flow: OAuthFlow,
    /// The app's client id.
    pub client_id: String,
    /// File holding the client secret (first line); optional for public clients.
    pub client_secret_file: Option<PathBuf>,
    /// File holding the refresh token (first line); required for refresh_token.
    pub refresh_token_file: Option<PathBuf>,
    /// Scope asked for; defaults per provider.
    pub scope: Option<String>,
    /// Extra trust anchors for the token endpoint (tests, private IdPs).
    pub ca_file: Option<PathBuf>,
}

/// The outbound side beyond `[upstream]`: routes, aliases, rewriting and
/// failure reports.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundConfig {
    /// Every route in order; `[upstream]` is one route for every domain.
    pub routes: Vec<RouteConfig>,
    /// Whether the file used `[[route]]` tables (for printing).
    pub explicit_routes: bool,
    /// `[aliases]`, in file order.
    pub aliases: Vec<(String, String)>,
    /// Where failure reports go instead of the original sender.
    pub postmaster: Option<String>,
    /// Global envelope sender rewrite (a route's own wins).
    pub rewrite_sender: Option<String>,
    /// Global From rewrite (a route's own wins). Default false.
    pub rewrite_from: bool,
    /// Default 20: failure reports queued per hour; more are logged only.
    pub max_reports_per_hour: u32,
    /// DNS servers to ask instead of /etc/resolv.conf's.
    pub dns_servers: Vec<SocketAddr>,
}

/// One `[[route]]`.
#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    /// Recipient domains this route takes.
    pub domains: Vec<DomainPattern>,
    /// Where the mail goes.
    pub upstream: Upstream,
}

/// A recipient domain selector of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// `*`: every domain (and addresses without one).
    Any,
    /// `example.com`: exactly that domain.
    Exact(String),
    /// `.example.com`: any subdomain of it (not the domain itself).
    Subdomains(String),
}

impl DomainPattern {
    /// Does a recipient domain (any case; `None` for a bare local part) match?
    pub fn matches(&self, domain: Option<&str>) -> bool {
        match (self, domain) {
            (DomainPattern::Any, _) => true,
            (_, None) => false,
            (DomainPattern::Exact(d), Some(x)) => x.eq_ignore_ascii_case(d),
            (DomainPattern::Subdomains(d), Some(x)) => {
                x.len() > d.len() + 1
                    && x.is_char_boundary(x.len() - d.len() - 1)
                    && x[x.len() - d.len()..].eq_ignore_ascii_case(d)
                    && x.as_bytes()[x.len() - d.len() - 1] == b'.'
            }
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Any => f.write_str("*"),
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Subdomains(d) => write!(f, ".{d}"),
        }
    }
}

impl Serialize for DomainPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How to speak TLS to the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain SMTP; credentials are sent in clear only because the admin said so.
    None,
    /// STARTTLS when offered (certificate not verified), plain otherwise;
    /// the default for `kind = "mx"`. Never sends credentials in clear.
    Opportunistic,
    /// STARTTLS, required (refuse to continue without it).
    Starttls,
    /// TLS from the first byte (RFC 8314, port 465).
    Implicit,
}

/// `[upstream] kind = "maildir"`
#[derive(Debug, Clone, Serialize)]
pub struct MaildirConfig {
    /// Required. One `.eml` file per delivered message lands here.
    pub dir: PathBuf,
}

/// A byte count that remembers how it was written (`"10MiB"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    /// The value in bytes.
    pub bytes: u64,
    /// The user's spelling, for the effective-config printout.
    pub text: String,
}

/// A duration that remembers how it was written (`"5d"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dur {
    /// The value.
    pub value: Duration,
    /// The user's spelling.
    pub text: String,
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
    /// The effective configuration (every default filled in) as TOML.
    ///
    /// Sizes and durations keep the user's spelling; addresses and networks
    /// are printed normalised. [`parse`] accepts the output again.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# postern: effective configuration, every setting with the value in force\n",
        );
        line(&mut out, "hostname", quote(&self.hostname));
        line(&mut out, "log_level", quote(&self.log_level));

        let s = &self.server;
        out.push_str("\n[server]\n");
        line(&mut out, "listen", array(s.listen.iter()));
        line(
            &mut out,
            "max_message_size",
            quote(&s.max_message_size.text),
        );
        line(&mut out, "max_recipients", s.max_recipients.to_string());
        line(&mut out, "max_connections", s.max_connections.to_string());
        line(&mut out, "command_timeout", quote(&s.command_timeout.text));
        line(&mut out, "session_timeout", quote(&s.session_timeout.text));
        line(&mut out, "data_timeout", quote(&s.data_timeout.text));
        line(
            &mut out,
            "greeting_timeout",
            quote(&s.greeting_timeout.text),
        );
        line(
            &mut out,
            "data_end_timeout",
            quote(&s.data_end_timeout.text),
        );
        if let Some(c) = &s.tls_cert {
            line(&mut out, "tls_cert", quote(&c.display().to_string()));
        }
        if let Some(k) = &s.tls_key {
            line(&mut out, "tls_key", quote(&k.display().to_string()));
        }
        line(&mut out, "listen_tls", array(s.listen_tls.iter()));
        line(
            &mut out,
            "no_starttls_clients",
            array(s.no_starttls_clients.iter()),
        );
        line(
            &mut out,
            "allow_plain_auth_clients",
            array(s.allow_plain_auth_clients.iter()),
        );
        line(&mut out, "bare_newline", quote(s.bare_newline.as_str()));
        line(
            &mut out,
            "bare_newline_normalize_clients",
            array(s.bare_newline_normalize_clients.iter()),
        );
        line(
            &mut out,
            "max_connections_per_client",
            s.max_connections_per_client.to_string(),
        );
        line(
            &mut out,
            "max_connections_per_minute",
            s.max_connections_per_minute.to_string(),
        );
        line(
            &mut out,
            "max_messages_per_minute",
            s.max_messages_per_minute.to_string(),
        );
        line(
            &mut out,
            "max_recipients_per_minute",
            s.max_recipients_per_minute.to_string(),
        );
        line(
            &mut out,
            "max_auth_failures",
            s.max_auth_failures.to_string(),
        );

        let p = &self.policy;
        out.push_str("\n[policy]\n");
        line(&mut out, "allow_clients", array(p.allow_clients.iter()));
        line(&mut out, "deny_clients", array(p.deny_clients.iter()));
        line(&mut out, "allow_senders", array(p.allow_senders.iter()));
        line(&mut out, "deny_senders", array(p.deny_senders.iter()));
        line(
            &mut out,
            "allow_recipients",
            array(p.allow_recipients.iter()),
        );
        line(&mut out, "deny_recipients", array(p.deny_recipients.iter()));
        line(
            &mut out,
            "relay_authenticated",
            p.relay_authenticated.to_string(),
        );

        let q = &self.queue;
        out.push_str("\n[queue]\n");
        line(&mut out, "dir", quote(&q.dir.display().to_string()));
        line(&mut out, "max_size", quote(&q.max_size.text));
        line(&mut out, "max_messages", q.max_messages.to_string());
        line(&mut out, "max_age", quote(&q.max_age.text));
        line(
            &mut out,
            "retry_intervals",
            array(q.retry_intervals.iter().map(|d| &d.text)),
        );

        if !self.outbound.explicit_routes {
            out.push_str("\n[upstream]\n");
            upstream_to_toml(&mut out, &self.upstream);
        }
        outbound_to_toml(&mut out, &self.outbound);
        for u in &self.users {
            out.push_str("\n[[user]]\n");
            line(&mut out, "name", quote(&u.name));
            line(&mut out, "password_hash", quote(&u.password_hash));
            line(&mut out, "allowed_senders", array(u.allowed_senders.iter()));
        }
        out
    }
}

impl TlsMode {
    /// The config spelling: `none`, `starttls`, `implicit`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Opportunistic => "opportunistic",
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
        }
    }
    /// The port this mode is normally spoken on: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None | TlsMode::Opportunistic => 25,
            TlsMode::Starttls => 587,
            TlsMode::Implicit => 465,
        }
    }
}

impl Size {
    /// Parse `"10MiB"`, `"64MB"`, `"1000"`: a whole number and an optional,
    /// case-insensitive unit (B, KB, MB, GB, KiB, MiB, GiB). The error says
    /// what was expected.
    pub fn parse(text: &str) -> Result<Size, String> {
        parse_size(text).map(|bytes| Size {
            bytes,
            text: text.to_string(),
        })
    }
}

impl Dur {
    /// Parse `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"5d"`: whole numbers
    /// with units d, h, m, s, ms, largest first. The error says what was
    /// expected.
    pub fn parse(text: &str) -> Result<Dur, String> {
        parse_duration(text).map(|value| Dur {
            value,
            text: text.to_string(),
        })
    }
}

impl AddressPattern {
    /// Parse one sender/recipient list entry: `"user@example.com"`,
    /// `"example.com"`, `".example.com"` or `"<>"`. Stored lowercased.
    pub fn parse(text: &str) -> Result<AddressPattern, String> {
        parse_pattern(text)
    }
}

// ---------------------------------------------------------------------------
// The schema: which keys exist where. Unknown-key suggestions and the
// "belongs in [x]" hints are computed from these lists.

const TOP_KEYS: &[&str] = &[
    "hostname",
    "log_level",
    // Outbound.
    "postmaster",
    "rewrite_sender",
    "rewrite_from",
    "max_reports_per_hour",
    "dns_servers",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "max_message_size",
    "max_recipients",
    "max_connections",
    "command_timeout",
    "session_timeout",
    // Inbound hardening.
    "data_timeout",
    "greeting_timeout",
    "data_end_timeout",
    "tls_cert",
    "tls_key",
    "listen_tls",
    "no_starttls_clients",
    "allow_plain_auth_clients",
    "bare_newline",
    "bare_newline_normalize_clients",
    "max_connections_per_client",
    "max_connections_per_minute",
    "max_messages_per_minute",
    "max_recipients_per_minute",
    "max_auth_failures",
];
const POLICY_KEYS: &[&str] = &[
    "allow_clients",
    "deny_clients",
    "allow_senders",
    "deny_senders",
    "allow_recipients",
    "deny_recipients",
    // Inbound hardening.
    "relay_authenticated",
];
/// `[[user]]`.
const USER_KEYS: &[&str] = &["name", "password_hash", "allowed_senders"];
const QUEUE_KEYS: &[&str] = &[
    "dir",
    "max_size",
    "max_messages",
    "max_age",
    "retry_intervals",
];
const UPSTREAM_KEYS: &[&str] = &["kind"];
const SMARTHOST_KEYS: &[&str] = &[
    "host",
    "port",
    "tls",
    "ca_file",
    "username",
    "password_file",
    "max_connections",
    "messages_per_connection",
    "connect_timeout",
    "command_timeout",
    // Outbound.
    "hosts",
    "ip_family",
    "client_cert",
    "client_key",
    "auth",
    "oauth_provider",
    "oauth_tenant",
    "oauth_flow",
    "oauth_token_url",
    "oauth_client_id",
    "oauth_client_secret_file",
    "oauth_refresh_token_file",
    "oauth_scope",
    "oauth_ca_file",
    "rewrite_sender",
    "rewrite_from",
    "max_messages_per_minute",
    "max_recipients_per_day",
    "max_message_size",
];
const MAILDIR_KEYS: &[&str] = &["dir"];
/// `[[route]]` holds the `[upstream]` keys and these.
const ROUTE_KEYS: &[&str] = &["domains"];
/// Smarthost keys that mean nothing for `kind = "mx"`.
const MX_FORBIDDEN: &[&str] = &["host", "hosts"];

/// Every table and the keys it may hold.
const TABLES: &[(&str, &[&[&str]])] = &[
    ("server", &[SERVER_KEYS]),
    ("policy", &[POLICY_KEYS]),
    ("queue", &[QUEUE_KEYS]),
    ("upstream", &[UPSTREAM_KEYS, SMARTHOST_KEYS, MAILDIR_KEYS]),
    // Outbound: [[route]] tables and [aliases] (any key).
    (
        "route",
        &[ROUTE_KEYS, UPSTREAM_KEYS, SMARTHOST_KEYS, MAILDIR_KEYS],
    ),
    ("aliases", &[]),
    // Inbound: [[user]] accounts for listener AUTH.
    ("user", &[USER_KEYS]),
];

// Bounds. Each is a sanity range: wide enough for any real site, narrow
// enough that a typo (an extra zero, a missing unit) is caught here and not
// by an overflow or an absurd allocation later.
const MIN_MESSAGE_SIZE: u64 = 64 * 1024; // RFC 5321 §4.5.3.1.7: at least 64K octets
const MAX_MESSAGE_SIZE: u64 = 4 * 1024 * 1024 * 1024;
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

// Checked at compile time; the default for allow_clients.
const LOOPBACK_V4: IpNet = IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8);
const LOOPBACK_V6: IpNet = IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128);

type Item<'i> = Spanned<DeValue<'i>>;

/// Marker: the problem has been recorded in [`Ctx::errors`] already.
#[derive(Debug, Clone, Copy)]
struct Reported;

/// The state of one validation run: where errors go and how to place them.
struct Ctx<'a> {
    file: &'a Path,
    src: &'a str,
    opts: &'a ParseOptions,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    /// Record a problem at a byte offset of the source.
    fn error(&mut self, offset: usize, message: impl Into<String>) -> Reported {
        let (line, col) = line_col(self.src, offset);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            message: message.into(),
        });
        Reported
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
    let unclosed: Vec<Range<usize>> = errors
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

fn collect_array_spans(table: &DeTable, out: &mut Vec<Range<usize>>) {
    for (_, item) in table.iter() {
        collect_value_spans(item, out);
    }
}

fn collect_value_spans(item: &Item, out: &mut Vec<Range<usize>>) {
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

/// One table of the document being read.
struct Section<'t, 'i> {
    /// `server`, `policy`…; empty for the top level.
    name: &'static str,
    table: &'t DeTable<'i>,
    /// Where "missing key" errors point: the table's header.
    at: usize,
}

impl<'t, 'i> Section<'t, 'i> {
    fn get(&self, key: &str) -> Option<&'t Item<'i>> {
        self.table.get(key)
    }
    /// Where the value of `key` starts: for problems with the value.
    fn offset(&self, key: &str) -> Option<usize> {
        self.get(key).map(|i| i.span().start)
    }
    /// Where `key` itself starts: for problems between keys.
    fn key_offset(&self, key: &str) -> Option<usize> {
        self.table.get_key_value(key).map(|(k, _)| k.span().start)
    }
}

fn get_or<T>(
    ctx: &mut Ctx,
    sec: &Section,
    key: &str,
    default: T,
    conv: impl FnOnce(&mut Ctx, &str, &Item) -> Result<T, Reported>,
) -> Result<T, Reported> {
    match sec.get(key) {
        None => Ok(default),
        Some(item) => conv(ctx, key, item),
    }
}

fn get_opt<T>(
    ctx: &mut Ctx,
    sec: &Section,
    key: &str,
    conv: impl FnOnce(&mut Ctx, &str, &Item) -> Result<T, Reported>,
) -> Result<Option<T>, Reported> {
    match sec.get(key) {
        None => Ok(None),
        Some(item) => conv(ctx, key, item).map(Some),
    }
}

fn get_req<T>(
    ctx: &mut Ctx,
    sec: &Section,
    key: &str,
    example: &str,
    conv: impl FnOnce(&mut Ctx, &str, &Item) -> Result<T, Reported>,
) -> Result<T, Reported> {
    match sec.get(key) {
        None => Err(ctx.error(
            sec.at,
            format!(
                "missing required key '{key}' in [{}]; e.g. {key} = {example}",
                sec.name
            ),
        )),
        Some(item) => conv(ctx, key, item),
    }
}

/// Lift a plain value check into a converter that reports at the value.
fn scalar<T>(
    f: impl FnOnce(&DeValue) -> Result<T, String>,
) -> impl FnOnce(&mut Ctx, &str, &Item) -> Result<T, Reported> {
    move |ctx, key, item| {
        f(item.get_ref()).map_err(|m| ctx.error(item.span().start, format!("{key}: {m}")))
    }
}

/// A list whose elements are checked one by one; each bad element is
/// reported at its own position. Returns the values with their offsets.
fn list_at<T>(
    f: impl Fn(&DeValue) -> Result<T, String>,
) -> impl FnOnce(&mut Ctx, &str, &Item) -> Result<Vec<(T, usize)>, Reported> {
    move |ctx, key, item| {
        let DeValue::Array(elems) = item.get_ref() else {
            let m = format!(
                "{key}: expected a list like [\"…\", \"…\"], found {}",
                describe(item.get_ref())
            );
            return Err(ctx.error(item.span().start, m));
        };
        let mut out = Vec::with_capacity(elems.len());
        let mut bad = false;
        for e in elems.iter() {
            match f(e.get_ref()) {
                Ok(v) => out.push((v, e.span().start)),
                Err(m) => {
                    ctx.error(e.span().start, format!("{key}: {m}"));
                    bad = true;
                }
            }
        }
        if bad { Err(Reported) } else { Ok(out) }
    }
}

fn list<T>(
    f: impl Fn(&DeValue) -> Result<T, String>,
) -> impl FnOnce(&mut Ctx, &str, &Item) -> Result<Vec<T>, Reported> {
    let inner = list_at(f);
    move |ctx, key, item| inner(ctx, key, item).map(|v| v.into_iter().map(|(x, _)| x).collect())
}

// ---------------------------------------------------------------------------
// Reading the document.

fn read_config(ctx: &mut Ctx, root: &DeTable) -> Result<Config, Reported> {
    let empty = DeTable::new();
    check_top_level(ctx, root);
    let top = Section {
        name: "",
        table: root,
        at: 0,
    };

    let hostname = match top.get("hostname") {
        Some(item) => scalar(conv_hostname)(ctx, "hostname", item),
        None => default_hostname(ctx),
    };
    let log_level = get_or(
        ctx,
        &top,
        "log_level",
        "info".to_string(),
        scalar(conv_log_level),
    );

    let server_sec = section(ctx, root, "server", true, &empty);
    let server = server_sec
        .as_ref()
        .map_err(|r| *r)
        .and_then(|sec| read_server(ctx, sec));
    let policy = section(ctx, root, "policy", false, &empty).and_then(|sec| read_policy(ctx, &sec));
    let queue_sec = section(ctx, root, "queue", true, &empty);
    let queue = queue_sec
        .as_ref()
        .map_err(|r| *r)
        .and_then(|sec| read_queue(ctx, sec));
    // Outbound: `[upstream]` is the one-route shorthand of `[[route]]`s.
    let has_routes = root.get("route").is_some();
    if has_routes && let Some((k, _)) = root.get_key_value("upstream") {
        ctx.error(
            k.span().start,
            "this file has both [upstream] and [[route]] tables; use one: [upstream] is the \
             same as a single [[route]] with domains = [\"*\"]",
        );
    }
    let upstream_sec = if has_routes {
        Err(Reported)
    } else {
        section(ctx, root, "upstream", true, &empty)
    };
    let upstream = upstream_sec
        .as_ref()
        .map_err(|r| *r)
        .and_then(|sec| read_upstream(ctx, sec));
    let outbound = read_outbound_top(ctx, root, &upstream);
    let upstream = if has_routes {
        outbound
            .as_ref()
            .map_err(|r| *r)
            .and_then(|o| o.routes.first().map(|r| r.upstream.clone()).ok_or(Reported))
    } else {
        upstream
    };

    // Cross-section checks, only between values that are themselves valid.
    if let (Ok(server), Ok(queue), Ok(server_sec), Ok(queue_sec)) =
        (&server, &queue, &server_sec, &queue_sec)
        && queue.max_size.bytes < server.max_message_size.bytes
    {
        let at = queue_sec
            .key_offset("max_size")
            .or(server_sec.key_offset("max_message_size"))
            .unwrap_or(queue_sec.at);
        ctx.error(
            at,
            format!(
                "[queue] max_size ({}) is smaller than [server] max_message_size ({}); \
                 a message of the largest allowed size could never be queued",
                queue.max_size.text, server.max_message_size.text
            ),
        );
    }
    if let (Ok(queue), Ok(Upstream::Maildir(m)), Ok(up_sec)) = (&queue, &upstream, &upstream_sec)
        && within(&m.dir, &queue.dir)
    {
        let at = up_sec.key_offset("dir").unwrap_or(up_sec.at);
        ctx.error(
            at,
            format!(
                "dir: the outbox \"{}\" is inside the queue directory \"{}\"; the queue owns \
                 that directory, so deliver somewhere else (e.g. \"var/outbox\")",
                m.dir.display(),
                queue.dir.display()
            ),
        );
    }

    let users = read_users(ctx, root);
    if let (Ok(server), Ok(policy), Ok(users), Ok(server_sec)) =
        (&server, &policy, &users, &server_sec)
    {
        check_inbound(ctx, server, policy, users, server_sec);
    }

    Ok(Config {
        hostname: hostname?,
        log_level: log_level?,
        server: server?,
        policy: policy?,
        queue: queue?,
        upstream: upstream?,
        outbound: outbound?,
        users: users?,
    })
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
        None => Ok(Section {
            name,
            table: empty,
            at: 0,
        }),
        Some((key, item)) => match item.get_ref() {
            DeValue::Table(table) => Ok(Section {
                name,
                table,
                at: item.span().start,
            }),
            other => Err(ctx.error(
                key.span().start,
                format!(
                    "'{name}' must be a table, written [{name}] on a line of its own, found {}",
                    describe(other)
                ),
            )),
        },
    }
}

fn missing_table_message(name: &str) -> String {
    let what = match name {
        "server" => "it needs at least listen = [\"127.0.0.1:2525\"]",
        "queue" => "it needs at least dir = \"/var/spool/postern\"",
        "upstream" => {
            "it needs at least kind = \"smarthost\" (with host) or kind = \"maildir\" (with dir); \
             or write [[route]] tables instead"
        }
        _ => "it is required",
    };
    format!("missing [{name}] table; {what}")
}

fn check_top_level(ctx: &mut Ctx, root: &DeTable) {
    for (key, item) in root.iter() {
        let name: &str = key.get_ref();
        if TOP_KEYS.contains(&name) || TABLES.iter().any(|(t, _)| *t == name) {
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
            if let Some(s) = nearest(name, TOP_KEYS) {
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
fn unknown_keys(ctx: &mut Ctx, sec: &Section, known: &[&[&str]]) {
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
            } else if TOP_KEYS.contains(&name) {
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

fn read_server(ctx: &mut Ctx, sec: &Section) -> Result<ServerConfig, Reported> {
    unknown_keys(ctx, sec, &[SERVER_KEYS]);
    let listen = get_req(
        ctx,
        sec,
        "listen",
        "[\"127.0.0.1:2525\"]",
        list_at(conv_listen),
    )
    .and_then(|addrs| check_listen(ctx, sec, addrs));
    let max_message_size = get_or(
        ctx,
        sec,
        "max_message_size",
        Size {
            bytes: 10 * 1024 * 1024,
            text: "10MiB".into(),
        },
        scalar(size_in(MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE)),
    );
    let max_recipients = get_or(
        ctx,
        sec,
        "max_recipients",
        100,
        scalar(count_in(1, 100_000)),
    );
    let max_connections = get_or(ctx, sec, "max_connections", 64, scalar(count_in(1, 10_000)));
    let command_timeout = get_or(
        ctx,
        sec,
        "command_timeout",
        dur(5 * MINUTE, "5m"),
        scalar(dur_in(SECOND, DAY)),
    );
    let session_timeout = get_or(
        ctx,
        sec,
        "session_timeout",
        dur(30 * MINUTE, "30m"),
        scalar(dur_in(SECOND, 7 * DAY)),
    );
    let inbound = read_server_inbound(ctx, sec);
    let inbound = inbound?;
    Ok(ServerConfig {
        listen: listen?,
        max_message_size: max_message_size?,
        max_recipients: max_recipients?,
        max_connections: max_connections?,
        command_timeout: command_timeout?,
        session_timeout: session_timeout?,
        data_timeout: inbound.data_timeout,
        greeting_timeout: inbound.greeting_timeout,
        data_end_timeout: inbound.data_end_timeout,
        tls_cert: inbound.tls_cert,
        tls_key: inbound.tls_key,
        listen_tls: inbound.listen_tls,
        no_starttls_clients: inbound.no_starttls_clients,
        allow_plain_auth_clients: inbound.allow_plain_auth_clients,
        bare_newline: inbound.bare_newline,
        bare_newline_normalize_clients: inbound.bare_newline_normalize_clients,
        max_connections_per_client: inbound.max_connections_per_client,
        max_connections_per_minute: inbound.max_connections_per_minute,
        max_messages_per_minute: inbound.max_messages_per_minute,
        max_recipients_per_minute: inbound.max_recipients_per_minute,
        max_auth_failures: inbound.max_auth_failures,
    })
}

fn check_listen(
    ctx: &mut Ctx,
    sec: &Section,
    addrs: Vec<(SocketAddr, usize)>,
) -> Result<Vec<SocketAddr>, Reported> {
    if addrs.is_empty() {
        let at = sec.offset("listen").unwrap_or(sec.at);
        return Err(ctx.error(
            at,
            "listen: the list is empty; give at least one address, e.g. [\"127.0.0.1:2525\"]",
        ));
    }
    let mut out: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    let mut bad = false;
    for (addr, at) in addrs {
        if out.contains(&addr) {
            ctx.error(at, format!("listen: \"{addr}\" is listed twice"));
            bad = true;
        } else {
            out.push(addr);
        }
    }
    if bad { Err(Reported) } else { Ok(out) }
}

fn read_policy(ctx: &mut Ctx, sec: &Section) -> Result<PolicyConfig, Reported> {
    unknown_keys(ctx, sec, &[POLICY_KEYS]);
    let loopback = vec![LOOPBACK_V4, LOOPBACK_V6];
    let allow_clients = get_or(
        ctx,
        sec,
        "allow_clients",
        loopback,
        list(|v| conv_net(v, true)),
    );
    let deny_clients = get_or(
        ctx,
        sec,
        "deny_clients",
        Vec::new(),
        list(|v| conv_net(v, false)),
    );
    let allow_senders = get_or(
        ctx,
        sec,
        "allow_senders",
        Vec::new(),
        list(|v| conv_pattern(v, true)),
    );
    let deny_senders = get_or(
        ctx,
        sec,
        "deny_senders",
        Vec::new(),
        list(|v| conv_pattern(v, true)),
    );
    let allow_recipients = get_or(
        ctx,
        sec,
        "allow_recipients",
        Vec::new(),
        list(|v| conv_pattern(v, false)),
    );
    let deny_recipients = get_or(
        ctx,
        sec,
        "deny_recipients",
        Vec::new(),
        list(|v| conv_pattern(v, false)),
    );
    let relay_authenticated = get_or(ctx, sec, "relay_authenticated", false, scalar(conv_bool));
    Ok(PolicyConfig {
        allow_clients: allow_clients?,
        deny_clients: deny_clients?,
        allow_senders: allow_senders?,
        deny_senders: deny_senders?,
        allow_recipients: allow_recipients?,
        deny_recipients: deny_recipients?,
        relay_authenticated: relay_authenticated?,
    })
}

fn read_queue(ctx: &mut Ctx, sec: &Section) -> Result<QueueConfig, Reported> {
    unknown_keys(ctx, sec, &[QUEUE_KEYS]);
    let dir = get_req(ctx, sec, "dir", "\"/var/spool/postern\"", scalar(conv_path));
    let max_size = get_or(
        ctx,
        sec,
        "max_size",
        Size {
            bytes: 64 * 1024 * 1024,
            text: "64MiB".into(),
        },
        scalar(size_in(1, u64::MAX)),
    );
    let max_messages = get_or(
        ctx,
        sec,
        "max_messages",
        10_000,
        scalar(count_in(1, 10_000_000)),
    );
    let max_age = get_or(
        ctx,
        sec,
        "max_age",
        dur(5 * DAY, "5d"),
        scalar(dur_in(Duration::from_secs(1), 365 * DAY)),
    );
    let default_retries = vec![
        dur(MINUTE, "1m"),
        dur(5 * MINUTE, "5m"),
        dur(15 * MINUTE, "15m"),
        dur(30 * MINUTE, "30m"),
        dur(HOUR, "1h"),
    ];
    let retry_intervals = get_or(ctx, sec, "retry_intervals", default_retries, list(dur_in(SECOND, 7 * DAY)))
        .and_then(|v| {
            if v.is_empty() {
                let at = sec.offset("retry_intervals").unwrap_or(sec.at);
                Err(ctx.error(
                    at,
                    "retry_intervals: the list is empty; give at least one wait, e.g. [\"5m\", \"30m\"] \
                     (the last one repeats)",
                ))
            } else {
                Ok(v)
            }
        });
    Ok(QueueConfig {
        dir: dir?,
        max_size: max_size?,
        max_messages: max_messages?,
        max_age: max_age?,
        retry_intervals: retry_intervals?,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Smarthost,
    Maildir,
    Mx,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Smarthost => "smarthost",
            Kind::Maildir => "maildir",
            Kind::Mx => "mx",
        }
    }
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Smarthost | Kind::Mx => SMARTHOST_KEYS,
            Kind::Maildir => MAILDIR_KEYS,
        }
    }
}

fn read_upstream(ctx: &mut Ctx, sec: &Section) -> Result<Upstream, Reported> {
    let kind = match sec.get("kind") {
        None => Err(ctx.error(
            sec.at,
            "missing required key 'kind' in [upstream]; write kind = \"smarthost\" (forward to a \
             mail server) or kind = \"maildir\" (write each message into a directory)",
        )),
        Some(item) => scalar(conv_kind)(ctx, "kind", item),
    };
    let Ok(kind) = kind else {
        // Without a kind, still catch keys that exist for neither kind.
        unknown_keys(ctx, sec, &[UPSTREAM_KEYS, SMARTHOST_KEYS, MAILDIR_KEYS]);
        return Err(Reported);
    };
    let other = match kind {
        Kind::Smarthost | Kind::Mx => Kind::Maildir,
        Kind::Maildir => Kind::Smarthost,
    };
    for (key, _) in sec.table.iter() {
        let name: &str = key.get_ref();
        if other.keys().contains(&name) && !kind.keys().contains(&name) {
            ctx.error(
                key.span().start,
                format!(
                    "'{name}' is a setting for kind = \"{}\"; it has no meaning with kind = \"{}\"",
                    other.word(),
                    kind.word()
                ),
            );
        }
    }
    if sec.name == "route" {
        unknown_keys(
            ctx,
            sec,
            &[ROUTE_KEYS, UPSTREAM_KEYS, SMARTHOST_KEYS, MAILDIR_KEYS],
        );
    } else {
        unknown_keys(ctx, sec, &[UPSTREAM_KEYS, SMARTHOST_KEYS, MAILDIR_KEYS]);
    }
    match kind {
        Kind::Smarthost => read_smarthost(ctx, sec, false).map(Upstream::Smarthost),
        Kind::Mx => {
            for (key, _) in sec.table.iter() {
                let name: &str = key.get_ref();
                if MX_FORBIDDEN.contains(&name) {
                    ctx.error(
                        key.span().start,
                        format!(
                            "'{name}' has no meaning with kind = \"mx\": each recipient domain's \
                             MX hosts are looked up in DNS"
                        ),
                    );
                }
            }
            read_smarthost(ctx, sec, true).map(Upstream::Mx)
        }
        Kind::Maildir => {
            let dir = get_req(
                ctx,
                sec,
                "dir",
                "\"/var/lib/postern/outbox\"",
                scalar(conv_path),
            )?;
            Ok(Upstream::Maildir(MaildirConfig { dir }))
        }
    }
}

fn read_smarthost(ctx: &mut Ctx, sec: &Section, mx: bool) -> Result<SmarthostConfig, Reported> {
    let extra = read_outbound_keys(ctx, sec, mx);
    let host = if mx {
        Ok(String::new())
    } else if sec.get("hosts").is_some() {
        if let Some(at) = sec.key_offset("host") {
            ctx.error(
                at,
                "give either host (one server) or hosts (several, tried in order), not both",
            );
        }
        Ok(String::new())
    } else {
        get_req(ctx, sec, "host", "\"smtp.example.com\"", scalar(conv_host))
    };
    let default_tls = if mx {
        TlsMode::Opportunistic
    } else {
        TlsMode::Starttls
    };
    let tls = get_or(ctx, sec, "tls", default_tls, scalar(conv_tls));
    let port = get_opt(ctx, sec, "port", scalar(conv_port));
    let ca_file = get_opt(ctx, sec, "ca_file", scalar(conv_path));
    let username = get_opt(ctx, sec, "username", scalar(conv_username));
    let password_file = get_opt(ctx, sec, "password_file", scalar(conv_path));
    let max_connections = get_or(ctx, sec, "max_connections", 2, scalar(count_in(1, 100)));
    let messages_per_connection = get_or(
        ctx,
        sec,
        "messages_per_connection",
        100,
        scalar(count_in(1, 100_000)),
    );
    let connect_timeout = get_or(
        ctx,
        sec,
        "connect_timeout",
        dur(30 * SECOND, "30s"),
        scalar(dur_in(SECOND, HOUR)),
    );
    let command_timeout = get_or(
        ctx,
        sec,
        "command_timeout",
        dur(5 * MINUTE, "5m"),
        scalar(dur_in(SECOND, HOUR)),
    );

    // Port 465 speaks TLS from the first byte and 25/587 start in plain
    // text; a mismatch hangs or fails at the first read, with an error that
    // does not point at the config. Caught here instead (field: dma#141).
    let port = match (port, tls) {
        (Ok(Some(p)), Ok(t)) if mx || sec.get("hosts").is_some() => {
            if !mx && let Some(at) = sec.key_offset("port") {
                ctx.error(
                    at,
                    "with hosts, give each port in the list (\"smtp.example.com:587\")",
                );
            }
            let _ = t;
            Ok(p)
        }
        (Ok(None), Ok(_)) if mx => Ok(25),
        (Ok(Some(p)), Ok(t)) => {
            let mismatch = match (p, t) {
                (465, TlsMode::Starttls | TlsMode::None) => Some(
                    "port 465 speaks TLS from the first byte; set tls = \"implicit\"".to_string(),
                ),
                (25 | 587, TlsMode::Implicit) => Some(format!(
                    "port {p} starts in plain text; use tls = \"starttls\" with port {p}, \
                     or port 465 with tls = \"implicit\""
                )),
                _ => None,
            };
            match mismatch {
                Some(m) => {
                    let at = sec
                        .key_offset("tls")
                        .or(sec.key_offset("port"))
                        .unwrap_or(sec.at);
                    Err(ctx.error(
                        at,
                        format!("tls = \"{}\" does not fit port {p}: {m}", t.as_str()),
                    ))
                }
                None => Ok(p),
            }
        }
        (Ok(None), Ok(t)) => Ok(t.default_port()),
        _ => Err(Reported),
    };

    // AUTH needs both halves; one without the other is a half-edited config.
    let xoauth2 = sec.get("auth").is_some_and(
        |v| matches!(v.get_ref(), DeValue::String(s) if s.eq_ignore_ascii_case("xoauth2")),
    );
    if let (Ok(user), Ok(pw)) = (&username, &password_file)
        && !xoauth2
    {
        match (user, pw) {
            (Some(_), None) => {
                let at = sec.key_offset("username").unwrap_or(sec.at);
                ctx.error(
                    at,
                    "username is set but password_file is not; AUTH needs both \
                     (password_file = \"/etc/postern/password\", the password on its first line)",
                );
            }
            (None, Some(_)) => {
                let at = sec.key_offset("password_file").unwrap_or(sec.at);
                ctx.error(
                    at,
                    "password_file is set but username is not; AUTH needs both",
                );
            }
            _ => {}
        }
    }
    if !ctx.opts.skip_file_checks {
        if let (Ok(Some(path)), Some(at)) = (&ca_file, sec.offset("ca_file")) {
            check_file(ctx, at, "ca_file", path, true);
        }
        if let (Ok(Some(path)), Some(at)) = (&password_file, sec.offset("password_file")) {
            check_file(ctx, at, "password_file", path, false);
        }
    }

    let tls_explicit = sec.get("tls").is_some();
    let hosts = match (&host, &port, &tls) {
        _ if mx => Ok(Vec::new()),
        (Ok(h), Ok(p), Ok(t)) if !h.is_empty() => Ok(vec![HostSpec {
            host: h.clone(),
            port: *p,
            tls: *t,
        }]),
        (Ok(_), _, Ok(t)) if sec.get("hosts").is_some() => read_hosts(ctx, sec, *t, tls_explicit),
        _ => Err(Reported),
    };
    let hosts = hosts?;
    let (host, port, tls) = match hosts.first() {
        Some(h) => (Ok(h.host.clone()), Ok(h.port), Ok(h.tls)),
        None => (host, port, tls),
    };
    let extra = extra?;
    if extra.auth == AuthMethod::Xoauth2 && !matches!(&username, Ok(Some(_))) {
        let at = sec.key_offset("auth").unwrap_or(sec.at);
        ctx.error(
            at,
            "auth = \"xoauth2\" needs username = \"the mailbox\" (the account the token is for)",
        );
    }
    if let (Ok(TlsMode::Opportunistic), Ok(Some(_))) = (&tls, &username)
        && !mx
    {
        let at = sec.key_offset("tls").unwrap_or(sec.at);
        ctx.error(
            at,
            "tls = \"opportunistic\" may end up in clear text, where credentials are never sent; \
             use tls = \"starttls\" or \"implicit\" with a username",
        );
    }
    Ok(SmarthostConfig {
        hosts,
        ip_family: extra.ip_family,
        client_cert: extra.client_cert,
        client_key: extra.client_key,
        auth: extra.auth,
        oauth: extra.oauth,
        rewrite_sender: extra.rewrite_sender,
        rewrite_from: extra.rewrite_from,
        max_messages_per_minute: extra.max_messages_per_minute,
        max_recipients_per_day: extra.max_recipients_per_day,
        max_message_size: extra.max_message_size,
        host: host?,
        port: port?,
        tls: tls?,
        ca_file: ca_file?,
        username: username?,
        password_file: password_file?,
        max_connections: max_connections?,
        messages_per_connection: messages_per_connection?,
        connect_timeout: connect_timeout?,
        command_timeout: command_timeout?,
    })
}

/// A secret or CA file must be readable now, by this process: the daemon
/// reads it at startup, and a missing file is better found by `check`.
fn check_file(ctx: &mut Ctx, at: usize, key: &str, path: &Path, want_pem: bool) {
    let shown = path.display();
    let problem = match std::fs::metadata(path) {
        Err(e) => Some(io_problem(&e, path)),
        Ok(m) if m.is_dir() => Some("is a directory; expected a file".to_string()),
        Ok(m) if m.len() == 0 => Some("is empty".to_string()),
        Ok(_) => {
            match std::fs::File::open(path) {
                Err(e) => Some(io_problem(&e, path)),
                Ok(file) if want_pem => {
                    // CA bundles are small; the cap keeps a wrong path (a disk
                    // image, say) from being read whole.
                    let mut head = Vec::new();
                    match file.take(4 * 1024 * 1024).read_to_end(&mut head) {
                    Err(e) => Some(io_problem(&e, path)),
                    Ok(_) if !String::from_utf8_lossy(&head).contains("-----BEGIN CERTIFICATE-----") => {
                        Some("holds no PEM certificate (a \"-----BEGIN CERTIFICATE-----\" block)".to_string())
                    }
                    Ok(_) => None,
                }
                }
                Ok(_) => None,
            }
        }
    };
    if let Some(p) = problem {
        ctx.error(at, format!("{key}: \"{shown}\" {p}"));
    }
}

fn io_problem(e: &std::io::Error, path: &Path) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            let mut m = "does not exist".to_string();
            if path.is_relative()
                && let Ok(cwd) = std::env::current_dir()
            {
                m.push_str(&format!(
                    " (relative paths are taken from the working directory, {})",
                    cwd.display()
                ));
            }
            m
        }
        std::io::ErrorKind::PermissionDenied => {
            "cannot be read: permission denied; the user postern runs as must be able to read it"
                .to_string()
        }
        _ => format!("cannot be read: {e}"),
    }
}

fn default_hostname(ctx: &mut Ctx) -> Result<String, Reported> {
    let name = ctx
        .opts
        .default_hostname
        .clone()
        .unwrap_or_else(system_hostname);
    match hostname_problem(&name) {
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
// Value checks. Each takes the TOML value and says, on error, what it found
// and what it expected, quoting the user's text.

fn describe(v: &DeValue) -> String {
    match v {
        DeValue::String(s) => format!("the text \"{s}\""),
        DeValue::Integer(i) => format!("the number {}", i.as_str()),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "a list".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

fn text<'v>(v: &'v DeValue, example: &str) -> Result<&'v str, String> {
    match v {
        DeValue::String(s) => Ok(s),
        other => Err(format!(
            "expected text in quotes like {example}, found {}",
            describe(other)
        )),
    }
}

fn int(v: &DeValue) -> Option<i128> {
    match v {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

fn dur(value: Duration, text: &str) -> Dur {
    Dur {
        value,
        text: text.to_string(),
    }
}

fn count_in(min: usize, max: usize) -> impl Fn(&DeValue) -> Result<usize, String> {
    move |v| match v {
        DeValue::Integer(i) => int(v)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("{} is out of range; expected {min} to {max}", i.as_str())),
        DeValue::String(s) if s.trim().parse::<u64>().is_ok() => Err(format!(
            "expected a number, found the text \"{s}\"; remove the quotes"
        )),
        other => Err(format!(
            "expected a whole number from {min} to {max}, found {}",
            describe(other)
        )),
    }
}

fn conv_port(v: &DeValue) -> Result<u16, String> {
    count_in(1, 65535)(v)
        .and_then(|n| u16::try_from(n).map_err(|_| "port out of range".to_string()))
}

fn size_in(min: u64, max: u64) -> impl Fn(&DeValue) -> Result<Size, String> {
    move |v| {
        let size = match v {
            DeValue::Integer(i) => {
                let text = i.as_str().to_string();
                match int(v).and_then(|n| u64::try_from(n).ok()) {
                    Some(bytes) => Size { bytes, text },
                    None => return Err(format!("{text} is not a size; expected e.g. \"10MiB\"")),
                }
            }
            DeValue::String(s) => Size::parse(s)?,
            other => {
                return Err(format!(
                    "expected a size like \"10MiB\", \"512KiB\" or \"64MB\", found {}",
                    describe(other)
                ));
            }
        };
        if size.bytes < min || size.bytes > max {
            let range = if max == u64::MAX {
                format!("at least {}", fmt_size(min))
            } else {
                format!("between {} and {}", fmt_size(min), fmt_size(max))
            };
            return Err(format!(
                "\"{}\" is out of range; expected {range}",
                size.text
            ));
        }
        Ok(size)
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    const UNITS: &str = "B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024)";
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, rest) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "\"{s}\" is not a size; expected a whole number and a unit, e.g. \"10MiB\", \"512KiB\" \
             or \"1000\" (bytes)"
        ));
    }
    if rest.starts_with(['.', ',']) {
        return Err(format!(
            "\"{s}\": sizes are whole numbers; use a smaller unit (\"1536KiB\", not \"1.5MiB\")"
        ));
    }
    let unit = rest.trim_start();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("\"{s}\": unknown unit \"{unit}\"; use {UNITS}")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("\"{s}\" is too large"))
}

fn fmt_size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    if bytes == 1 {
        "1 byte".to_string()
    } else {
        format!("{bytes} bytes")
    }
}

fn dur_in(min: Duration, max: Duration) -> impl Fn(&DeValue) -> Result<Dur, String> {
    move |v| {
        let d = match v {
            DeValue::String(s) => Dur::parse(s)?,
            DeValue::Integer(i) => {
                return Err(format!(
                    "the number {} has no unit; write e.g. \"{}s\" or \"{}m\" (in quotes)",
                    i.as_str(),
                    i.as_str(),
                    i.as_str()
                ));
            }
            other => {
                return Err(format!(
                    "expected a duration like \"30s\", \"5m\", \"1h\" or \"5d\", found {}",
                    describe(other)
                ));
            }
        };
        if d.value < min || d.value > max {
            return Err(format!(
                "\"{}\" is out of range; expected between {} and {}",
                d.text,
                fmt_dur(min),
                fmt_dur(max)
            ));
        }
        Ok(d)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    const HELP: &str = "expected a whole number and a unit (ms, s, m, h, d), e.g. \"30s\", \"5m\", \
                        \"1h30m\" or \"5d\"";
    // Units from largest to smallest; each may appear once, in this order.
    const UNITS: &[(&str, u64)] = &[
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("\"{s}\" is empty; {HELP}"));
    }
    let mut rest = t;
    let mut total: u64 = 0;
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        if digits.is_empty() {
            return Err(format!("\"{s}\" is not a duration; {HELP}"));
        }
        if after.starts_with(['.', ',']) {
            return Err(format!(
                "\"{s}\": durations are whole numbers; use a smaller unit (\"90s\", not \"1.5m\")"
            ));
        }
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(format!(
                "\"{s}\": the number {digits} has no unit; write e.g. \"{digits}s\" or \"{digits}m\""
            ));
        }
        let Some(rank) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!(
                "\"{s}\": unknown unit \"{unit}\"; use ms, s, m, h or d"
            ));
        };
        if last_rank.is_some_and(|r| rank <= r) {
            return Err(format!(
                "\"{s}\": units must go from largest to smallest, each once, e.g. \"1h30m\""
            ));
        }
        last_rank = Some(rank);
        let part = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[rank].1))
            .and_then(|ms| total.checked_add(ms));
        total = part.ok_or_else(|| format!("\"{s}\" is too large"))?;
        rest = after.trim_start();
    }
    Ok(Duration::from_millis(total))
}

fn fmt_dur(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, factor) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= factor {
            out.push_str(&format!("{}{unit}", ms / factor));
            ms %= factor;
        }
    }
    out
}

fn conv_log_level(v: &DeValue) -> Result<String, String> {
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    let s = text(v, "\"info\"")?;
    let lower = s.to_ascii_lowercase();
    if LEVELS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(format!(
            "\"{s}\" is not a log level; expected one of \"error\", \"warn\", \"info\", \"debug\", \"trace\""
        ))
    }
}

fn conv_hostname(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"relay.example.net\"")?;
    match hostname_problem(s) {
        None => Ok(s.to_string()),
        Some(p) => Err(format!("\"{s}\" is not a usable host name: {p}")),
    }
}

/// Our own name goes into EHLO and Received, so plain ASCII letters,
/// digits and hyphens only (RFC 5321 §4.1.2 `Domain`).
fn hostname_problem(s: &str) -> Option<String> {
    if let Some(p) = domain_problem(s, true) {
        return Some(p);
    }
    let last = s.rsplit('.').next().unwrap_or(s);
    if last.chars().all(|c| c.is_ascii_digit()) {
        return Some("it looks like an IP address; a name is needed".to_string());
    }
    None
}

/// Why `s` is not a domain name, if it is not. `ascii` restricts labels to
/// letters, digits and hyphens; otherwise any Unicode letter or digit is
/// allowed too (internationalised domains in address patterns).
fn domain_problem(s: &str, ascii: bool) -> Option<String> {
    if s.is_empty() {
        return Some("it is empty".to_string());
    }
    if s.len() > 253 {
        return Some("it is longer than 253 characters".to_string());
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Some("it has an empty label (a leading, trailing or double dot)".to_string());
        }
        if label.len() > 63 {
            return Some(format!(
                "the label \"{label}\" is longer than 63 characters"
            ));
        }
        if let Some(c) = label.chars().find(|&c| {
            !(c == '-'
                || if ascii {
                    c.is_ascii_alphanumeric()
                } else {
                    c.is_alphanumeric()
                })
        }) {
            let allowed = if ascii {
                "ASCII letters, digits, hyphens and dots"
            } else {
                "letters, digits, hyphens and dots"
            };
            return Some(format!(
                "it contains '{}'; only {allowed} are allowed",
                c.escape_default()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!(
                "the label \"{label}\" starts or ends with a hyphen"
            ));
        }
    }
    None
}

fn conv_path(v: &DeValue) -> Result<PathBuf, String> {
    let s = text(v, "\"/var/spool/postern\"")?;
    if s.trim().is_empty() {
        return Err("the path is empty".to_string());
    }
    if s.contains('\0') {
        return Err("the path contains a NUL character".to_string());
    }
    Ok(PathBuf::from(s))
}

fn conv_username(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"printer@example.com\"")?;
    if s.is_empty() {
        return Err("the user name is empty; remove the line to send without AUTH".to_string());
    }
    if s.chars().any(char::is_control) {
        return Err("the user name contains a control character".to_string());
    }
    Ok(s.to_string())
}

fn conv_kind(v: &DeValue) -> Result<Kind, String> {
    let s = text(v, "\"smarthost\"")?;
    match s.to_ascii_lowercase().as_str() {
        "smarthost" => Ok(Kind::Smarthost),
        "maildir" => Ok(Kind::Maildir),
        "mx" => Ok(Kind::Mx),
        _ => Err(format!(
            "\"{s}\" is not an upstream kind; expected \"smarthost\" (forward to a mail server), \
             \"mx\" (straight to each recipient domain's mail servers) \
             or \"maildir\" (write each message into a directory)"
        )),
    }
}

fn conv_tls(v: &DeValue) -> Result<TlsMode, String> {
    const HELP: &str = "expected \"starttls\" (port 587), \"implicit\" (TLS from the first byte, \
                        port 465) or \"none\"";
    let s = match v {
        DeValue::Boolean(b) => return Err(format!("found {b}, but tls takes a word; {HELP}")),
        other => text(other, "\"starttls\"")?,
    };
    match s.to_ascii_lowercase().as_str() {
        "none" => Ok(TlsMode::None),
        "opportunistic" => Ok(TlsMode::Opportunistic),
        "starttls" => Ok(TlsMode::Starttls),
        "implicit" => Ok(TlsMode::Implicit),
        "ssl" | "tls" | "smtps" => Err(format!(
            "\"{s}\" is ambiguous; write \"implicit\" for TLS from the first byte (port 465) \
             or \"starttls\" for port 587"
        )),
        _ => Err(format!("\"{s}\" is not a TLS mode; {HELP}")),
    }
}

fn conv_host(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"smtp.example.com\"")?;
    if s.parse::<IpAddr>().is_ok() {
        return Ok(s.to_string());
    }
    if s.contains("://") {
        return Err(format!(
            "\"{s}\": give just the host name, e.g. \"smtp.example.com\"; port and tls are separate keys"
        ));
    }
    if let Some((name, port)) = s.rsplit_once(':')
        && port.parse::<u16>().is_ok()
    {
        return Err(format!(
            "\"{s}\": give the port separately: host = \"{name}\" and port = {port}"
        ));
    }
    match domain_problem(s, true) {
        None => Ok(s.to_string()),
        Some(p) => Err(format!("\"{s}\" is not a host name or IP address: {p}")),
    }
}

fn conv_listen(v: &DeValue) -> Result<SocketAddr, String> {
    let s = text(v, "\"127.0.0.1:2525\"")?;
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => Err(format!(
            "\"{s}\": port 0 is not allowed; pick a port from 1 to 65535"
        )),
        Ok(a) => Ok(a),
        Err(_) => Err(listen_problem(s)),
    }
}

fn listen_problem(s: &str) -> String {
    let base = format!("\"{s}\" is not an IP address and port");
    if let Ok(ip) = s.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(_) => format!("{base}: the port is missing; e.g. \"{s}:2525\""),
            IpAddr::V6(_) => format!(
                "{base}: the port is missing; IPv6 addresses go in brackets, e.g. \"[{s}]:2525\""
            ),
        };
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && inner.parse::<Ipv6Addr>().is_ok()
    {
        return format!("{base}: the port is missing; e.g. \"{s}:2525\"");
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        if port.parse::<u16>().is_err() {
            return format!("{base}: \"{port}\" is not a port; expected 1 to 65535");
        }
        if host.parse::<IpAddr>().is_err() && !host.starts_with('[') {
            return format!(
                "{base}: listen takes IP addresses, not host names; e.g. \"0.0.0.0:{port}\" (every \
                 IPv4 interface) or \"192.168.1.10:{port}\""
            );
        }
    }
    format!("{base}; expected e.g. \"127.0.0.1:2525\" or \"[::1]:2525\"")
}

fn conv_net(v: &DeValue, allow_list: bool) -> Result<IpNet, String> {
    let s = text(v, "\"192.168.1.0/24\"")?;
    let help = "expected a network like \"192.168.1.0/24\" or \"fd00::/8\", or one address like \"192.168.1.20\"";
    let net = match s.split_once('/') {
        None => s
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("\"{s}\" is not an IP network; {help}"))?,
        Some((addr, len)) => {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("\"{s}\": \"{addr}\" is not an IP address; {help}"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = len
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be 0 to {max}"))?;
            // Host bits set (192.168.1.5/24) are a common way of writing the
            // network the host is on; accept it as that network.
            IpNet::new(addr, len)
                .map_err(|_| format!("\"{s}\": bad prefix length"))?
                .trunc()
        }
    };
    // An IPv4-mapped IPv6 network means the IPv4 one; the policy checks
    // mapped client addresses as IPv4, so store it that way.
    let net = match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96)
                .map(|n| n.trunc())
                .unwrap_or(IpNet::V6(n)),
            None => IpNet::V6(n),
        },
        other => other,
    };
    if allow_list && net.prefix_len() == 0 {
        return Err(format!(
            "\"{s}\" would let every address on the internet relay through this host (an open \
             relay); list the networks of your devices instead, e.g. \"192.168.1.0/24\""
        ));
    }
    Ok(net)
}

fn conv_pattern(v: &DeValue, senders: bool) -> Result<AddressPattern, String> {
    let s = text(v, "\"user@example.com\"")?;
    let p = parse_pattern(s)?;
    if p == AddressPattern::NullSender && !senders {
        return Err(
            "\"<>\" is the null sender; it only makes sense in allow_senders and deny_senders"
                .to_string(),
        );
    }
    Ok(p)
}

const PATTERN_FORMS: &str = "expected \"user@example.com\" (that mailbox), \"example.com\" (any \
                             mailbox at that domain), \".example.com\" (any mailbox at a subdomain) \
                             or \"<>\" (the null sender)";

fn parse_pattern(s: &str) -> Result<AddressPattern, String> {
    if s == "<>" {
        return Ok(AddressPattern::NullSender);
    }
    let bad = |why: &str| Err(format!("\"{s}\" {why}; {PATTERN_FORMS}"));
    if s.is_empty() {
        return bad("is empty");
    }
    if s.chars().any(char::is_whitespace) {
        return bad("contains a space");
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || matches!(c, '<' | '>' | '"' | '*' | ',' | ';'))
    {
        let hint = match c {
            '*' => {
                "contains '*'; there are no wildcards (\".example.com\" matches every subdomain)"
            }
            '<' | '>' => "has angle brackets; write the address without them",
            _ => "contains a character that cannot appear in a pattern",
        };
        return bad(hint);
    }
    if let Some(domain) = s.strip_prefix('.') {
        return match domain_problem(domain, false) {
            None => Ok(AddressPattern::Subdomains(domain.to_lowercase())),
            Some(p) => bad(&format!("has a bad domain: {p}")),
        };
    }
    if let Some((local, domain)) = s.rsplit_once('@') {
        if local.is_empty() {
            return bad("has no local part (to match the whole domain, write it without the '@')");
        }
        if local.contains('@') {
            return bad("has more than one '@'");
        }
        if domain.is_empty() {
            return bad("has nothing after the '@'");
        }
        return match domain_problem(domain, false) {
            None => Ok(AddressPattern::Mailbox(s.to_lowercase())),
            Some(p) => bad(&format!("has a bad domain: {p}")),
        };
    }
    match domain_problem(s, false) {
        None => Ok(AddressPattern::Domain(s.to_lowercase())),
        Some(p) => bad(&format!("is not a domain: {p}")),
    }
}

// ---------------------------------------------------------------------------
// Outbound: routes, hosts, XOAUTH2, rewriting, rate limits,
// aliases, failure reports. Kept in their own readers.

/// The route keys beyond the spine's smarthost keys.
struct OutboundKeys {
    ip_family: IpFamily,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    auth: AuthMethod,
    oauth: Option<OAuthConfig>,
    rewrite_sender: Option<String>,
    rewrite_from: Option<bool>,
    max_messages_per_minute: Option<u32>,
    max_recipients_per_day: Option<u32>,
    max_message_size: Option<Size>,
}

const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

fn read_outbound_keys(ctx: &mut Ctx, sec: &Section, mx: bool) -> Result<OutboundKeys, Reported> {
    let ip_family = get_or(ctx, sec, "ip_family", IpFamily::Any, scalar(conv_ip_family));
    let client_cert = get_opt(ctx, sec, "client_cert", scalar(conv_path));
    let client_key = get_opt(ctx, sec, "client_key", scalar(conv_path));
    if let (Ok(c), Ok(k)) = (&client_cert, &client_key)
        && c.is_some() != k.is_some()
    {
        let at = sec
            .key_offset("client_cert")
            .or(sec.key_offset("client_key"))
            .unwrap_or(sec.at);
        ctx.error(
            at,
            "client_cert and client_key go together: the certificate chain (PEM) and its private key",
        );
    }
    if !ctx.opts.skip_file_checks {
        for key in ["client_cert", "client_key"] {
            if let (Some(item), Some(at)) = (sec.get(key), sec.offset(key))
                && let DeValue::String(p) = item.get_ref()
            {
                check_file(ctx, at, key, Path::new(p.as_ref()), key == "client_cert");
            }
        }
    }
    let auth = get_or(ctx, sec, "auth", AuthMethod::Password, scalar(conv_auth));
    let oauth = match &auth {
        Ok(AuthMethod::Xoauth2) => read_oauth(ctx, sec).map(Some),
        Ok(AuthMethod::Password) => {
            for (key, _) in sec.table.iter() {
                let name: &str = key.get_ref();
                if name.starts_with("oauth_") {
                    ctx.error(
                        key.span().start,
                        format!("'{name}' is used only with auth = \"xoauth2\""),
                    );
                }
            }
            Ok(None)
        }
        Err(_) => Err(Reported),
    };
    let rewrite_sender = get_opt(ctx, sec, "rewrite_sender", scalar(conv_mailbox));
    let rewrite_from = get_opt(ctx, sec, "rewrite_from", scalar(conv_bool));
    let max_messages_per_minute = get_opt(
        ctx,
        sec,
        "max_messages_per_minute",
        scalar(|v| count_in(1, 100_000)(v).map(|n| n as u32)),
    );
    let max_recipients_per_day = get_opt(
        ctx,
        sec,
        "max_recipients_per_day",
        scalar(|v| count_in(1, 10_000_000)(v).map(|n| n as u32)),
    );
    let max_message_size = get_opt(
        ctx,
        sec,
        "max_message_size",
        scalar(size_in(MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE)),
    );
    let _ = mx;
    Ok(OutboundKeys {
        ip_family: ip_family?,
        client_cert: client_cert?,
        client_key: client_key?,
        auth: auth?,
        oauth: oauth?,
        rewrite_sender: rewrite_sender?,
        rewrite_from: rewrite_from?,
        max_messages_per_minute: max_messages_per_minute?,
        max_recipients_per_day: max_recipients_per_day?,
        max_message_size: max_message_size?,
    })
}

fn read_oauth(ctx: &mut Ctx, sec: &Section) -> Result<OAuthConfig, Reported> {
    let provider = get_opt(ctx, sec, "oauth_provider", scalar(conv_provider))?;
    let tenant = get_opt(ctx, sec, "oauth_tenant", scalar(conv_tenant))?;
    let flow = get_or(
        ctx,
        sec,
        "oauth_flow",
        OAuthFlow::RefreshToken,
        scalar(conv_flow),
    )?;
    let url = get_opt(ctx, sec, "oauth_token_url", scalar(conv_https_url))?;
    let token_url = match (url, provider) {
        (Some(u), _) => u,
        (None, Some("google")) => GOOGLE_TOKEN_URL.to_string(),
        (None, Some(_)) => match &tenant {
            Some(t) => format!("https://login.microsoftonline.com/{t}/oauth2/v2.0/token"),
            None => {
                return Err(ctx.error(
                    sec.key_offset("oauth_provider").unwrap_or(sec.at),
                    "oauth_provider = \"microsoft\" needs oauth_tenant = \"your tenant id or \
                     domain\" (e.g. \"contoso.onmicrosoft.com\")",
                ));
            }
        },
        (None, None) => {
            return Err(ctx.error(
                sec.key_offset("auth").unwrap_or(sec.at),
                "auth = \"xoauth2\" needs oauth_provider = \"google\" or \"microsoft\", or \
                 oauth_token_url = \"https://…\"",
            ));
        }
    };
    let client_id = get_req(
        ctx,
        sec,
        "oauth_client_id",
        "\"the app's client id\"",
        scalar(|v| conv_secret_free_text(v, "\"0123-client-id\"")),
    );
    let client_secret_file = get_opt(ctx, sec, "oauth_client_secret_file", scalar(conv_path));
    let refresh_token_file = get_opt(ctx, sec, "oauth_refresh_token_file", scalar(conv_path));
    let scope = get_opt(
        ctx,
        sec,
        "oauth_scope",
        scalar(|v| conv_secret_free_text(v, "\"https://mail.google.com/\"")),
    );
    let ca_file = get_opt(ctx, sec, "oauth_ca_file", scalar(conv_path));
    match flow {
        OAuthFlow::RefreshToken => {
            if matches!(refresh_token_file, Ok(None)) {
                ctx.error(
                    sec.key_offset("auth").unwrap_or(sec.at),
                    "oauth_flow = \"refresh_token\" (the default) needs oauth_refresh_token_file = \
                     \"/etc/postern/oauth-refresh-token\"",
                );
            }
        }
        OAuthFlow::ClientCredentials => {
            if matches!(client_secret_file, Ok(None)) {
                ctx.error(
                    sec.key_offset("oauth_flow").unwrap_or(sec.at),
                    "oauth_flow = \"client_credentials\" needs oauth_client_secret_file",
                );
            }
        }
    }
    if !ctx.opts.skip_file_checks {
        for key in [
            "oauth_client_secret_file",
            "oauth_refresh_token_file",
            "oauth_ca_file",
        ] {
            if let (Some(item), Some(at)) = (sec.get(key), sec.offset(key))
                && let DeValue::String(p) = item.get_ref()
            {
                check_file(ctx, at, key, Path::new(p.as_ref()), key == "oauth_ca_file");
            }
        }
    }
    let scope = scope?.or_else(|| default_scope(provider, flow).map(str::to_string));
    Ok(OAuthConfig {
        token_url,
        flow,
        client_id: client_id?,
        client_secret_file: client_secret_file?,
        refresh_token_file: refresh_token_file?,
        scope,
        ca_file: ca_file?,
    })
}

fn default_scope(provider: Option<&str>, flow: OAuthFlow) -> Option<&'static str> {
    match (provider, flow) {
        (Some("microsoft"), OAuthFlow::ClientCredentials) => {
            Some("https://outlook.office365.com/.default")
        }
        (Some("microsoft"), OAuthFlow::RefreshToken) => {
            Some("https://outlook.office.com/SMTP.Send offline_access")
        }
        _ => None,
    }
}

/// `hosts = ["a.example:587", "b.example:465"]`: without an explicit `tls`,
/// each port says how it is spoken (465 implicit TLS, others STARTTLS).
fn read_hosts(
    ctx: &mut Ctx,
    sec: &Section,
    tls: TlsMode,
    tls_explicit: bool,
) -> Result<Vec<HostSpec>, Reported> {
    let entries = get_req(
        ctx,
        sec,
        "hosts",
        "[\"smtp1.example.com:587\", \"smtp2.example.com:465\"]",
        list_at(conv_host_port),
    )?;
    if entries.is_empty() {
        return Err(ctx.error(
            sec.offset("hosts").unwrap_or(sec.at),
            "hosts: the list is empty; give at least one \"host:port\"",
        ));
    }
    let mut out = Vec::new();
    let mut bad = false;
    for ((host, port), at) in entries {
        let port_tls = match port {
            Some(465) => TlsMode::Implicit,
            _ => TlsMode::Starttls,
        };
        let t = if tls_explicit { tls } else { port_tls };
        let port = port.unwrap_or(t.default_port());
        let mismatch = matches!(
            (port, t),
            (
                465,
                TlsMode::Starttls | TlsMode::None | TlsMode::Opportunistic
            ) | (25 | 587, TlsMode::Implicit)
        );
        if mismatch {
            ctx.error(
                at,
                format!(
                    "hosts: port {port} does not fit tls = \"{}\" (465 speaks TLS from the first \
                     byte, 25 and 587 start in plain text); remove tls to pick per port",
                    t.as_str()
                ),
            );
            bad = true;
        }
        out.push(HostSpec { host, port, tls: t });
    }
    if bad { Err(Reported) } else { Ok(out) }
}

fn conv_host_port(v: &DeValue) -> Result<(String, Option<u16>), String> {
    let s = text(v, "\"smtp.example.com:587\"")?;
    // "[2001:db8::1]:25", "host:587", "host", "192.0.2.1:25".
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("\"{s}\" is not \"host:port\"")),
            },
            None => return Err(format!("\"{s}\": the '[' is never closed")),
        }
    } else if s.matches(':').count() > 1 {
        return Err(format!(
            "\"{s}\": write IPv6 addresses in brackets, e.g. \"[2001:db8::1]:25\""
        ));
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("\"{s}\": \"{p}\" is not a port; expected 1 to 65535"))?,
        ),
    };
    if host.parse::<IpAddr>().is_err()
        && let Some(p) = domain_problem(host, true)
    {
        return Err(format!("\"{s}\": \"{host}\" is not a host name: {p}"));
    }
    Ok((host.to_string(), port))
}

fn conv_ip_family(v: &DeValue) -> Result<IpFamily, String> {
    let s = text(v, "\"ipv4\"")?;
    match s.to_ascii_lowercase().as_str() {
        "any" => Ok(IpFamily::Any),
        "ipv4" | "inet4" | "4" => Ok(IpFamily::Ipv4),
        "ipv6" | "inet6" | "6" => Ok(IpFamily::Ipv6),
        _ => Err(format!(
            "\"{s}\" is not an address family; expected \"any\", \"ipv4\" or \"ipv6\""
        )),
    }
}

fn conv_auth(v: &DeValue) -> Result<AuthMethod, String> {
    let s = text(v, "\"xoauth2\"")?;
    match s.to_ascii_lowercase().as_str() {
        "password" | "plain" | "login" => Ok(AuthMethod::Password),
        "xoauth2" | "oauth2" | "oauth" => Ok(AuthMethod::Xoauth2),
        _ => Err(format!(
            "\"{s}\" is not an AUTH method; expected \"password\" (PLAIN/LOGIN with \
             password_file) or \"xoauth2\" (OAuth2 tokens)"
        )),
    }
}

fn conv_provider(v: &DeValue) -> Result<&'static str, String> {
    let s = text(v, "\"google\"")?;
    match s.to_ascii_lowercase().as_str() {
        "google" | "gmail" => Ok("google"),
        "microsoft" | "microsoft365" | "office365" | "m365" => Ok("microsoft"),
        _ => Err(format!(
            "\"{s}\" is not a known provider; expected \"google\" or \"microsoft\" (or set \
             oauth_token_url instead)"
        )),
    }
}

fn conv_tenant(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"contoso.onmicrosoft.com\"")?;
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    {
        return Err(format!(
            "\"{s}\" is not a tenant; expected the tenant id (a GUID) or its domain"
        ));
    }
    Ok(s.to_string())
}

fn conv_flow(v: &DeValue) -> Result<OAuthFlow, String> {
    let s = text(v, "\"refresh_token\"")?;
    match s.to_ascii_lowercase().replace('-', "_").as_str() {
        "refresh_token" => Ok(OAuthFlow::RefreshToken),
        "client_credentials" => Ok(OAuthFlow::ClientCredentials),
        _ => Err(format!(
            "\"{s}\" is not an OAuth2 flow; expected \"refresh_token\" or \"client_credentials\""
        )),
    }
}

fn conv_https_url(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"https://oauth2.googleapis.com/token\"")?;
    let rest = s
        .strip_prefix("https://")
        .ok_or_else(|| format!("\"{s}\": the token endpoint must be an https:// URL"))?;
    if rest.is_empty() || s.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("\"{s}\" is not a URL"));
    }
    Ok(s.to_string())
}

/// Identifiers and scopes: one line of visible text.
fn conv_secret_free_text(v: &DeValue, example: &str) -> Result<String, String> {
    let s = text(v, example)?;
    if s.is_empty() || s.chars().any(char::is_control) {
        return Err(format!("\"{s}\" must be one line of text, not empty"));
    }
    Ok(s.to_string())
}

fn conv_bool(v: &DeValue) -> Result<bool, String> {
    match v {
        DeValue::Boolean(b) => Ok(*b),
        DeValue::String(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {
            Err(format!(
                "expected true or false without quotes, found \"{s}\""
            ))
        }
        other => Err(format!("expected true or false, found {}", describe(other))),
    }
}

/// A full mailbox, `user@example.com`: what a rewritten sender, a
/// postmaster or an alias target must be.
fn conv_mailbox(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"alerts@example.com\"")?;
    let s = s.trim();
    let s = s
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(s);
    match crate::smtp::Address::parse(s) {
        Ok(a) if a.domain().is_some() && !a.is_utf8() => Ok(s.to_string()),
        Ok(a) if a.domain().is_some() => Err(format!(
            "\"{s}\" has non-ASCII characters; use an ASCII address here"
        )),
        Ok(_) => Err(format!(
            "\"{s}\" has no domain; expected a full address like \"ops@example.com\""
        )),
        Err(e) => Err(format!(
            "\"{s}\" is not a mail address ({e}); expected e.g. \"ops@example.com\""
        )),
    }
}

/// Top-level outbound keys, `[[route]]`s or `[upstream]`, and `[aliases]`.
fn read_outbound_top(
    ctx: &mut Ctx,
    root: &DeTable,
    upstream: &Result<Upstream, Reported>,
) -> Result<OutboundConfig, Reported> {
    let top = Section {
        name: "",
        table: root,
        at: 0,
    };
    let postmaster = get_opt(ctx, &top, "postmaster", scalar(conv_mailbox));
    let rewrite_sender = get_opt(ctx, &top, "rewrite_sender", scalar(conv_mailbox));
    let rewrite_from = get_or(ctx, &top, "rewrite_from", false, scalar(conv_bool));
    let max_reports_per_hour = get_or(
        ctx,
        &top,
        "max_reports_per_hour",
        20,
        scalar(|v| count_in(1, 100_000)(v).map(|n| n as u32)),
    );
    let dns_servers = get_or(ctx, &top, "dns_servers", Vec::new(), list(conv_dns_server));
    if let (Ok(true), Ok(None)) = (&rewrite_from, &rewrite_sender) {
        // A route may still set its own rewrite_sender; only warn when none does.
        let any_route_sender = matches!(upstream, Ok(Upstream::Smarthost(h) | Upstream::Mx(h)) if h.rewrite_sender.is_some());
        if !any_route_sender && root.get("route").is_none() {
            ctx.error(
                top.key_offset("rewrite_from").unwrap_or(0),
                "rewrite_from = true needs rewrite_sender = \"alerts@example.com\": the address \
                 to put in From",
            );
        }
    }
    let routes = match root.get_key_value("route") {
        None => upstream.as_ref().map_err(|r| *r).map(|u| {
            vec![RouteConfig {
                domains: vec![DomainPattern::Any],
                upstream: u.clone(),
            }]
        }),
        Some((key, item)) => read_routes(ctx, key.span().start, item),
    };
    let aliases = read_aliases(ctx, root);
    Ok(OutboundConfig {
        explicit_routes: root.get("route").is_some(),
        routes: routes?,
        aliases: aliases?,
        postmaster: postmaster?,
        rewrite_sender: rewrite_sender?,
        rewrite_from: rewrite_from?,
        max_reports_per_hour: max_reports_per_hour?,
        dns_servers: dns_servers?,
    })
}

fn conv_dns_server(v: &DeValue) -> Result<SocketAddr, String> {
    let s = text(v, "\"192.168.1.1\"")?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("\"{s}\" is not a name server address; expected e.g. \"192.168.1.1\" or \"127.0.0.1:5353\"")
    })
}

fn read_routes(ctx: &mut Ctx, at: usize, item: &Item) -> Result<Vec<RouteConfig>, Reported> {
    let DeValue::Array(tables) = item.get_ref() else {
        return Err(ctx.error(
            at,
            "'route' must be written [[route]] (double brackets), once per route",
        ));
    };
    let mut out = Vec::new();
    let mut bad = false;
    let mut saw_any = None::<usize>;
    for (n, t) in tables.iter().enumerate() {
        let DeValue::Table(table) = t.get_ref() else {
            ctx.error(t.span().start, "each route is a [[route]] table");
            bad = true;
            continue;
        };
        let sec = Section {
            name: "route",
            table,
            at: t.span().start,
        };
        if let Some(first) = saw_any {
            ctx.error(
                sec.at,
                format!(
                    "route #{} can never be used: route #{} before it has domains = [\"*\"] and \
                     takes every recipient; put the catch-all route last",
                    n + 1,
                    first + 1
                ),
            );
            bad = true;
        }
        let domains = get_req(
            ctx,
            &sec,
            "domains",
            "[\"example.com\", \".example.org\", \"*\"]",
            list(conv_domain_pattern),
        )
        .and_then(|d| {
            if d.is_empty() {
                Err(ctx.error(
                    sec.offset("domains").unwrap_or(sec.at),
                    "domains: the list is empty; give \"*\" for every domain",
                ))
            } else {
                Ok(d)
            }
        });
        if let Ok(d) = &domains
            && d.contains(&DomainPattern::Any)
        {
            saw_any = Some(n);
        }
        let upstream = read_upstream(ctx, &sec);
        match (domains, upstream) {
            (Ok(domains), Ok(upstream)) => out.push(RouteConfig { domains, upstream }),
            _ => bad = true,
        }
    }
    if out.is_empty() && !bad {
        return Err(ctx.error(at, "no [[route]] tables"));
    }
    if bad { Err(Reported) } else { Ok(out) }
}

fn conv_domain_pattern(v: &DeValue) -> Result<DomainPattern, String> {
    let s = text(v, "\"example.com\"")?;
    if s == "*" {
        return Ok(DomainPattern::Any);
    }
    let (sub, d) = match s.strip_prefix('.') {
        Some(d) => (true, d),
        None => (false, s),
    };
    if let Some(p) = domain_problem(d, false) {
        return Err(format!(
            "\"{s}\" is not a domain ({p}); expected \"example.com\", \".example.com\" (its \
             subdomains) or \"*\" (every domain)"
        ));
    }
    let d = d.to_lowercase();
    Ok(if sub {
        DomainPattern::Subdomains(d)
    } else {
        DomainPattern::Exact(d)
    })
}

/// `[aliases]`: `root = "ops@example.com"`, `"*@lan" = "…"`, `"a@b" = "…"`.
fn read_aliases(ctx: &mut Ctx, root: &DeTable) -> Result<Vec<(String, String)>, Reported> {
    let Some((key, item)) = root.get_key_value("aliases") else {
        return Ok(Vec::new());
    };
    let DeValue::Table(t) = item.get_ref() else {
        return Err(ctx.error(
            key.span().start,
            "'aliases' must be a table: [aliases] on its own line, then root = \"ops@example.com\"",
        ));
    };
    let mut out = Vec::new();
    let mut bad = false;
    for (k, v) in t.iter() {
        let name: &str = k.get_ref();
        let key_ok = match name.split_once('@') {
            None => crate::smtp::Address::parse(name).is_ok() && name != "*",
            Some(("*", d)) => domain_problem(d, false).is_none(),
            Some(_) => crate::smtp::Address::parse(name).is_ok(),
        };
        if !key_ok {
            ctx.error(
                k.span().start,
                format!(
                    "aliases: \"{name}\" is not something to map; expected a local part (root), an \
                     address (\"admin@lan\") or every address of a domain (\"*@lan\")"
                ),
            );
            bad = true;
            continue;
        }
        match conv_mailbox(v.get_ref()) {
            Ok(target) => out.push((name.to_lowercase(), target)),
            Err(m) => {
                ctx.error(v.span().start, format!("aliases: {name}: {m}"));
                bad = true;
            }
        }
    }
    if bad { Err(Reported) } else { Ok(out) }
}

/// The outbound part of the effective config.
fn outbound_to_toml(out: &mut String, o: &OutboundConfig) {
    let mut top = String::new();
    if let Some(p) = &o.postmaster {
        line(&mut top, "postmaster", quote(p));
    }
    if let Some(r) = &o.rewrite_sender {
        line(&mut top, "rewrite_sender", quote(r));
    }
    line(&mut top, "rewrite_from", o.rewrite_from.to_string());
    line(
        &mut top,
        "max_reports_per_hour",
        o.max_reports_per_hour.to_string(),
    );
    line(&mut top, "dns_servers", array(o.dns_servers.iter()));
    // Top-level keys must come before the first table.
    let at = out.find("\n\n[").map_or(out.len(), |i| i + 1);
    out.insert_str(at, &top);
    if o.explicit_routes {
        for r in &o.routes {
            out.push_str("\n[[route]]\n");
            line(out, "domains", array(r.domains.iter()));
            upstream_to_toml(out, &r.upstream);
        }
    }
    if !o.aliases.is_empty() {
        out.push_str("\n[aliases]\n");
        for (k, v) in &o.aliases {
            line(out, &quote(k), quote(v));
        }
    }
}

fn upstream_to_toml(out: &mut String, u: &Upstream) {
    match u {
        Upstream::Smarthost(h) | Upstream::Mx(h) => {
            let mx = matches!(u, Upstream::Mx(_));
            line(out, "kind", quote(if mx { "mx" } else { "smarthost" }));
            if mx {
                line(out, "port", h.port.to_string());
                line(out, "tls", quote(h.tls.as_str()));
            } else if h.hosts.len() > 1 {
                let hs: Vec<String> = h
                    .hosts
                    .iter()
                    .map(|x| {
                        if x.host.contains(':') {
                            format!("[{}]:{}", x.host, x.port)
                        } else {
                            format!("{}:{}", x.host, x.port)
                        }
                    })
                    .collect();
                line(out, "hosts", array(hs.iter()));
                if h.hosts.iter().all(|x| x.tls == h.tls) {
                    line(out, "tls", quote(h.tls.as_str()));
                }
            } else {
                line(out, "host", quote(&h.host));
                line(out, "port", h.port.to_string());
                line(out, "tls", quote(h.tls.as_str()));
            }
            if let Some(ca) = &h.ca_file {
                line(out, "ca_file", quote(&ca.display().to_string()));
            }
            if let Some(user) = &h.username {
                line(out, "username", quote(user));
            }
            if let Some(pw) = &h.password_file {
                line(out, "password_file", quote(&pw.display().to_string()));
            }
            line(out, "max_connections", h.max_connections.to_string());
            line(
                out,
                "messages_per_connection",
                h.messages_per_connection.to_string(),
            );
            line(out, "connect_timeout", quote(&h.connect_timeout.text));
            line(out, "command_timeout", quote(&h.command_timeout.text));
            let fam = match h.ip_family {
                IpFamily::Any => "any",
                IpFamily::Ipv4 => "ipv4",
                IpFamily::Ipv6 => "ipv6",
            };
            line(out, "ip_family", quote(fam));
            if let (Some(c), Some(k)) = (&h.client_cert, &h.client_key) {
                line(out, "client_cert", quote(&c.display().to_string()));
                line(out, "client_key", quote(&k.display().to_string()));
            }
            match &h.oauth {
                Some(o) => {
                    line(out, "auth", quote("xoauth2"));
                    line(out, "oauth_token_url", quote(&o.token_url));
                    let flow = match o.flow {
                        OAuthFlow::RefreshToken => "refresh_token",
                        OAuthFlow::ClientCredentials => "client_credentials",
                    };
                    line(out, "oauth_flow", quote(flow));
                    line(out, "oauth_client_id", quote(&o.client_id));
                    if let Some(p) = &o.client_secret_file {
                        line(
                            out,
                            "oauth_client_secret_file",
                            quote(&p.display().to_string()),
                        );
                    }
                    if let Some(p) = &o.refresh_token_file {
                        line(
                            out,
                            "oauth_refresh_token_file",
                            quote(&p.display().to_string()),
                        );
                    }
                    if let Some(s) = &o.scope {
                        line(out, "oauth_scope", quote(s));
                    }
                    if let Some(p) = &o.ca_file {
                        line(out, "oauth_ca_file", quote(&p.display().to_string()));
                    }
                }
                None => line(out, "auth", quote("password")),
            }
            if let Some(r) = &h.rewrite_sender {
                line(out, "rewrite_sender", quote(r));
            }
            if let Some(r) = h.rewrite_from {
                line(out, "rewrite_from", r.to_string());
            }
            if let Some(n) = h.max_messages_per_minute {
                line(out, "max_messages_per_minute", n.to_string());
            }
            if let Some(n) = h.max_recipients_per_day {
                line(out, "max_recipients_per_day", n.to_string());
            }
            if let Some(s) = &h.max_message_size {
                line(out, "max_message_size", quote(&s.text));
            }
        }
        Upstream::Maildir(m) => {
            line(out, "kind", quote("maildir"));
            line(out, "dir", quote(&m.dir.display().to_string()));
        }
    }
}

// ---------------------------------------------------------------------------
// Writing TOML.

fn line(out: &mut String, key: &str, value: String) {
    out.push_str(key);
    out.push_str(" = ");
    out.push_str(&value);
    out.push('\n');
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn array<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let parts: Vec<String> = items.map(|i| quote(&i.to_string())).collect();
    format!("[{}]", parts.join(", "))
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl fmt::Display for AddressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressPattern::Mailbox(m) => f.write_str(m),
            AddressPattern::Domain(d) => f.write_str(d),
            AddressPattern::Subdomains(d) => write!(f, ".{d}"),
            AddressPattern::NullSender => f.write_str("<>"),
        }
    }
}

impl Serialize for AddressPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// ---------------------------------------------------------------------------
// Inbound hardening: listener TLS, AUTH accounts, bare newlines,
// per-client limits.

/// The inbound-hardening `[server]` keys, read apart from the spine's.
struct InboundServer {
    data_timeout: Dur,
    greeting_timeout: Dur,
    data_end_timeout: Dur,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    listen_tls: Vec<SocketAddr>,
    no_starttls_clients: Vec<IpNet>,
    allow_plain_auth_clients: Vec<IpNet>,
    bare_newline: BareNewlineMode,
    bare_newline_normalize_clients: Vec<IpNet>,
    max_connections_per_client: usize,
    max_connections_per_minute: u32,
    max_messages_per_minute: u32,
    max_recipients_per_minute: u32,
    max_auth_failures: u32,
}

fn rate_in(max: usize) -> impl Fn(&DeValue) -> Result<u32, String> {
    move |v| count_in(1, max)(v).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn conv_bare_newline(v: &DeValue) -> Result<BareNewlineMode, String> {
    let s = text(v, "\"reject\"")?;
    match s.to_ascii_lowercase().as_str() {
        "reject" => Ok(BareNewlineMode::Reject),
        "normalize" | "normalise" => Ok(BareNewlineMode::Normalize),
        _ => Err(format!(
            "\"{s}\" is not a choice; expected \"reject\" (refuse messages with a bare CR or LF) \
             or \"normalize\" (turn them into CRLF); for a few legacy devices only, prefer \
             bare_newline_normalize_clients"
        )),
    }
}

fn read_server_inbound(ctx: &mut Ctx, sec: &Section) -> Result<InboundServer, Reported> {
    let data_timeout = get_or(
        ctx,
        sec,
        "data_timeout",
        dur(3 * MINUTE, "3m"),
        scalar(dur_in(SECOND, DAY)),
    );
    let greeting_timeout = get_or(
        ctx,
        sec,
        "greeting_timeout",
        dur(5 * MINUTE, "5m"),
        scalar(dur_in(SECOND, DAY)),
    );
    // Past 10 minutes the client has given up (RFC 5321 §4.5.3.2.6), so a
    // longer value could only turn a 451 into silence.
    let data_end_timeout = get_or(
        ctx,
        sec,
        "data_end_timeout",
        dur(5 * MINUTE, "5m"),
        scalar(dur_in(SECOND, 10 * MINUTE)),
    );
    let tls_cert = get_opt(ctx, sec, "tls_cert", scalar(conv_path));
    let tls_key = get_opt(ctx, sec, "tls_key", scalar(conv_path));
    let listen_tls = get_or(ctx, sec, "listen_tls", Vec::new(), list_at(conv_listen));
    let nets =
        |ctx: &mut Ctx, key: &str| get_or(ctx, sec, key, Vec::new(), list(|v| conv_net(v, false)));
    let no_starttls_clients = nets(ctx, "no_starttls_clients");
    let allow_plain_auth_clients = nets(ctx, "allow_plain_auth_clients");
    let bare_newline_normalize_clients = nets(ctx, "bare_newline_normalize_clients");
    let bare_newline = get_or(
        ctx,
        sec,
        "bare_newline",
        BareNewlineMode::Reject,
        scalar(conv_bare_newline),
    );
    let max_connections_per_client = get_or(
        ctx,
        sec,
        "max_connections_per_client",
        10,
        scalar(count_in(1, 10_000)),
    );
    let max_connections_per_minute = get_or(
        ctx,
        sec,
        "max_connections_per_minute",
        60,
        scalar(rate_in(1_000_000)),
    );
    let max_messages_per_minute = get_or(
        ctx,
        sec,
        "max_messages_per_minute",
        120,
        scalar(rate_in(1_000_000)),
    );
    let max_recipients_per_minute = get_or(
        ctx,
        sec,
        "max_recipients_per_minute",
        1000,
        scalar(rate_in(10_000_000)),
    );
    let max_auth_failures = get_or(ctx, sec, "max_auth_failures", 3, scalar(rate_in(100)));

    let (tls_cert, tls_key) = (tls_cert?, tls_key?);
    if tls_cert.is_some() != tls_key.is_some() {
        let (have, missing) = if tls_cert.is_some() {
            ("tls_cert", "tls_key")
        } else {
            ("tls_key", "tls_cert")
        };
        let at = sec.key_offset(have).unwrap_or(sec.at);
        return Err(ctx.error(
            at,
            format!("{have} is set but {missing} is not; the listener needs both (PEM files)"),
        ));
    }
    let listen_tls: Vec<SocketAddr> = listen_tls?.into_iter().map(|(a, _)| a).collect();
    if !listen_tls.is_empty() && tls_cert.is_none() {
        let at = sec.key_offset("listen_tls").unwrap_or(sec.at);
        return Err(ctx.error(
            at,
            "listen_tls needs tls_cert and tls_key in [server] (the certificate to present)",
        ));
    }
    Ok(InboundServer {
        data_timeout: data_timeout?,
        greeting_timeout: greeting_timeout?,
        data_end_timeout: data_end_timeout?,
        tls_cert,
        tls_key,
        listen_tls,
        no_starttls_clients: no_starttls_clients?,
        allow_plain_auth_clients: allow_plain_auth_clients?,
        bare_newline: bare_newline?,
        bare_newline_normalize_clients: bare_newline_normalize_clients?,
        max_connections_per_client: max_connections_per_client?,
        max_connections_per_minute: max_connections_per_minute?,
        max_messages_per_minute: max_messages_per_minute?,
        max_recipients_per_minute: max_recipients_per_minute?,
        max_auth_failures: max_auth_failures?,
    })
}

fn conv_password_hash(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"$argon2id$v=19$m=19456,t=2,p=1$...\"")?;
    match crate::auth::check_hash_format(s) {
        Ok(()) => Ok(s.to_string()),
        Err(e) => Err(format!("{e}; make one with `postern passwd`")),
    }
}

fn read_users(ctx: &mut Ctx, root: &DeTable) -> Result<Vec<UserConfig>, Reported> {
    let Some((key, item)) = root.get_key_value("user") else {
        return Ok(Vec::new());
    };
    let DeValue::Array(tables) = item.get_ref() else {
        return Err(ctx.error(
            key.span().start,
            "'user' must be written [[user]] (double brackets), once per account",
        ));
    };
    let mut out: Vec<UserConfig> = Vec::new();
    let mut bad = false;
    for t in tables.iter() {
        let DeValue::Table(table) = t.get_ref() else {
            ctx.error(t.span().start, "each user is a [[user]] table");
            bad = true;
            continue;
        };
        let sec = Section {
            name: "user",
            table,
            at: t.span().start,
        };
        unknown_keys(ctx, &sec, &[USER_KEYS]);
        let name = get_req(ctx, &sec, "name", "\"printer\"", scalar(conv_username));
        let hash = get_req(
            ctx,
            &sec,
            "password_hash",
            "\"$argon2id$...\" (from `postern passwd`)",
            scalar(conv_password_hash),
        );
        let senders = get_or(
            ctx,
            &sec,
            "allowed_senders",
            Vec::new(),
            list(|v| conv_pattern(v, true)),
        );
        match (name, hash, senders) {
            (Ok(name), Ok(password_hash), Ok(allowed_senders)) => {
                if out.iter().any(|u| u.name == name) {
                    let at = sec.offset("name").unwrap_or(sec.at);
                    ctx.error(at, format!("name: user \"{name}\" is defined twice"));
                    bad = true;
                    continue;
                }
                out.push(UserConfig {
                    name,
                    password_hash,
                    allowed_senders,
                });
            }
            _ => bad = true,
        }
    }
    if bad { Err(Reported) } else { Ok(out) }
}

/// Checks across `[server]`, `[policy]` and `[[user]]`.
fn check_inbound(
    ctx: &mut Ctx,
    server: &ServerConfig,
    policy: &PolicyConfig,
    users: &[UserConfig],
    server_sec: &Section,
) {
    if policy.relay_authenticated && users.is_empty() {
        ctx.error(
            0,
            "[policy] relay_authenticated = true but there is no [[user]]; add one (name and \
             password_hash from `postern passwd`) or remove the setting",
        );
    }
    if !users.is_empty() && server.tls_cert.is_none() && server.allow_plain_auth_clients.is_empty()
    {
        ctx.error(
            server_sec.at,
            "[[user]] accounts can never log in: AUTH is offered only over TLS; set tls_cert and \
             tls_key in [server], or list legacy networks in allow_plain_auth_clients",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            s.max_message_size,
            Size {
                bytes: 10 << 20,
                text: "10MiB".into()
            }
        );
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
        assert_eq!(
            q.max_size,
            Size {
                bytes: 64 << 20,
                text: "64MiB".into()
            }
        );
        assert_eq!(q.max_messages, 10_000);
        assert_eq!(q.max_age, dur(Duration::from_secs(5 * 86400), "5d"));
        let retries: Vec<u64> = q
            .retry_intervals
            .iter()
            .map(|d| d.value.as_secs())
            .collect();
        assert_eq!(retries, vec![60, 300, 900, 1800, 3600]);
        match &c.upstream {
            Upstream::Maildir(m) => assert_eq!(m.dir, PathBuf::from("out")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn default_texts_mean_the_default_values() {
        // The defaults are built directly (no parsing at run time); this
        // keeps their text and value in step.
        let c = ok(&smarthost(""));
        let mut durs = vec![
            c.server.command_timeout.clone(),
            c.server.session_timeout.clone(),
            c.queue.max_age.clone(),
        ];
        durs.extend(c.queue.retry_intervals.clone());
        if let Upstream::Smarthost(h) = &c.upstream {
            durs.push(h.connect_timeout.clone());
            durs.push(h.command_timeout.clone());
        }
        for d in durs {
            assert_eq!(Dur::parse(&d.text).unwrap(), d);
        }
        for s in [c.server.max_message_size.clone(), c.queue.max_size.clone()] {
            assert_eq!(Size::parse(&s.text).unwrap(), s);
        }
    }

    #[test]
    fn smarthost_defaults_and_port_from_tls() {
        let c = ok(&smarthost(""));
        let Upstream::Smarthost(h) = &c.upstream else {
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
            let Upstream::Smarthost(h) = &c.upstream else {
                panic!()
            };
            assert_eq!(h.port, port, "default port for {tls}");
            assert_eq!(h.tls.as_str(), tls);
        }
        let c = ok(&smarthost("port = 2525\ntls = \"none\"\n"));
        let Upstream::Smarthost(h) = &c.upstream else {
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
            assert_eq!(c.server.max_message_size.text, written.trim_matches('"'));
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
        assert!(
            err("\"lan\"").starts_with("allow_clients: \"lan\" is not an IP network; expected")
        );
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
        let text =
            format!("{BASE}[policy]\nallow_senders = [\"ok@example.com\", \"@example.com\"]\n");
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
        let err =
            |line: &str| one_error(&BASE.replace("[queue]", &format!("{line}\n[queue]")), 3, 18);
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
        let Upstream::Smarthost(h) = &c.upstream else {
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
            m.starts_with(
                "[queue] max_size (1MiB) is smaller than [server] max_message_size (10MiB)"
            ),
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
        assert!(m.starts_with("'server' must be a table, written [server] on a line of its own, found the number 5"), "{m}");
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
        for key in TOP_KEYS {
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
                    && (MAILDIR_KEYS.contains(key)
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
        assert_eq!(nearest("lsten", SERVER_KEYS), Some("listen"));
        assert_eq!(nearest("x", SERVER_KEYS), None);
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
        assert!(matches!(&c.upstream, Upstream::Maildir(m) if m.dir == Path::new("var/outbox")));
        // Every key is shown in it, set or commented with its default.
        for key in TOP_KEYS
            .iter()
            .chain(SERVER_KEYS)
            .chain(POLICY_KEYS)
            .chain(QUEUE_KEYS)
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
                matches!(c.upstream, Upstream::Smarthost(_)) || c.outbound.routes.len() > 1,
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
}
