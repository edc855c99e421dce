//! The configuration file: schema, defaults, validation and errors.
//!
//! Parsing happens once, into typed values; nothing downstream sees raw
//! strings such as `"10MiB"`. Every problem is reported, not just the first,
//! as `FILE:LINE:COL: message`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

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
    /// `[upstream]`
    pub upstream: Upstream,
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
}

/// How to speak TLS to the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain SMTP; credentials are sent in clear only because the admin said so.
    None,
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
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)
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
    let text = std::fs::read_to_string(path)
        .map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    parse(&text, path).map_err(LoadError::Invalid)
}

/// Validate config text; `path` is only used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, Vec<ConfigError>> {
    let _ = (text, path);
    unimplemented!("helper: config.rs")
}

impl Config {
    /// The effective configuration (every default filled in) as TOML.
    pub fn to_toml(&self) -> String {
        unimplemented!("helper: config.rs")
    }
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
