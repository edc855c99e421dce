//! The config's word-valued keys: the log level, TLS modes, address
//! families, AUTH methods, OAuth flows and providers, the tenant and token
//! URL, the bare-newline mode. Each parses with `FromStr` (or a `parse_*`
//! function); the error quotes the text and lists the words it takes.
//! Split from [`super::values`] only for size; it uses nothing else.

use std::str::FromStr;

/// The log level: `error`, `warn`, `info`, `debug` or `trace` (any case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLevel(pub String);

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<LogLevel, String> {
        const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
        let lower = s.to_ascii_lowercase();
        if LEVELS.contains(&lower.as_str()) {
            Ok(LogLevel(lower))
        } else {
            Err(format!(
                "\"{s}\" is not a log level; expected one of \"error\", \"warn\", \"info\", \
                 \"debug\", \"trace\""
            ))
        }
    }
}

/// How to speak TLS to the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The words `tls` takes, for messages.
pub(crate) const TLS_HELP: &str = "expected \"starttls\" (port 587), \"implicit\" (TLS from the \
                                   first byte, port 465) or \"none\"";

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
    /// What this mode does, in words (the start-up line, `check`).
    pub fn words(self) -> &'static str {
        match self {
            TlsMode::None => "without TLS (plain text)",
            TlsMode::Opportunistic => "STARTTLS when offered",
            TlsMode::Starttls => "STARTTLS required",
            TlsMode::Implicit => "implicit TLS",
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

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<TlsMode, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(TlsMode::None),
            "opportunistic" => Ok(TlsMode::Opportunistic),
            "starttls" => Ok(TlsMode::Starttls),
            "implicit" => Ok(TlsMode::Implicit),
            "ssl" | "tls" | "smtps" => Err(format!(
                "\"{s}\" is ambiguous; write \"implicit\" for TLS from the first byte (port 465) \
                 or \"starttls\" for port 587"
            )),
            _ => Err(format!("\"{s}\" is not a TLS mode; {TLS_HELP}")),
        }
    }
}

/// Address family for outbound connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    /// Both; when one fails, the other is tried.
    Any,
    /// IPv4 only (IPv6 routes that do not work, Gmail's IPv6 PTR policy).
    Ipv4,
    /// IPv6 only.
    Ipv6,
}

impl IpFamily {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::Any => "any",
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
        }
    }
}

impl FromStr for IpFamily {
    type Err = String;

    fn from_str(s: &str) -> Result<IpFamily, String> {
        match s.to_ascii_lowercase().as_str() {
            "any" => Ok(IpFamily::Any),
            "ipv4" | "inet4" | "4" => Ok(IpFamily::Ipv4),
            "ipv6" | "inet6" | "6" => Ok(IpFamily::Ipv6),
            _ => Err(format!(
                "\"{s}\" is not an address family; expected \"any\", \"ipv4\" or \"ipv6\""
            )),
        }
    }
}

/// How to log in upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `username` + `password_file` (AUTH PLAIN or LOGIN), or no AUTH.
    Password,
    /// `username` + an OAuth2 access token (AUTH XOAUTH2).
    Xoauth2,
}

impl AuthMethod {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::Xoauth2 => "xoauth2",
        }
    }
}

impl FromStr for AuthMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<AuthMethod, String> {
        match s.to_ascii_lowercase().as_str() {
            "password" | "plain" | "login" => Ok(AuthMethod::Password),
            "xoauth2" | "oauth2" | "oauth" => Ok(AuthMethod::Xoauth2),
            _ => Err(format!(
                "\"{s}\" is not an AUTH method; expected \"password\" (PLAIN/LOGIN with \
                 password_file) or \"xoauth2\" (OAuth2 tokens)"
            )),
        }
    }
}

/// Which OAuth2 grant gets the access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthFlow {
    /// A refresh token (Gmail, Microsoft 365 delegated).
    RefreshToken,
    /// Microsoft's client credentials (an app registration with SMTP.SendAsApp).
    ClientCredentials,
}

impl OAuthFlow {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthFlow::RefreshToken => "refresh_token",
            OAuthFlow::ClientCredentials => "client_credentials",
        }
    }
}

impl FromStr for OAuthFlow {
    type Err = String;

    fn from_str(s: &str) -> Result<OAuthFlow, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "refresh_token" => Ok(OAuthFlow::RefreshToken),
            "client_credentials" => Ok(OAuthFlow::ClientCredentials),
            _ => Err(format!(
                "\"{s}\" is not an OAuth2 flow; expected \"refresh_token\" or \"client_credentials\""
            )),
        }
    }
}

/// The identity providers `oauth_provider` knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    Google,
    Microsoft,
}

impl FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Provider, String> {
        match s.to_ascii_lowercase().as_str() {
            "google" | "gmail" => Ok(Provider::Google),
            "microsoft" | "microsoft365" | "office365" | "m365" => Ok(Provider::Microsoft),
            _ => Err(format!(
                "\"{s}\" is not a known provider; expected \"google\" or \"microsoft\" (or set \
                 oauth_token_url instead)"
            )),
        }
    }
}

/// An Entra ID (Azure AD) tenant: its id (a GUID) or its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tenant(pub String);

impl FromStr for Tenant {
    type Err = String;

    fn from_str(s: &str) -> Result<Tenant, String> {
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        {
            return Err(format!(
                "\"{s}\" is not a tenant; expected the tenant id (a GUID) or its domain"
            ));
        }
        Ok(Tenant(s.to_string()))
    }
}

/// An `https://` URL (the OAuth2 token endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpsUrl(pub String);

impl FromStr for HttpsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<HttpsUrl, String> {
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| format!("\"{s}\": the token endpoint must be an https:// URL"))?;
        if rest.is_empty() || s.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("\"{s}\" is not a URL"));
        }
        Ok(HttpsUrl(s.to_string()))
    }
}

/// What a bare CR or LF in message data gets (`[server] bare_newline`).
pub(crate) fn parse_bare_newline(s: &str) -> Result<crate::smtp::BareNewline, String> {
    use crate::smtp::BareNewline;
    match s.to_ascii_lowercase().as_str() {
        "reject" => Ok(BareNewline::Reject),
        "normalize" | "normalise" => Ok(BareNewline::Normalize),
        _ => Err(format!(
            "\"{s}\" is not a choice; expected \"reject\" (refuse messages with a bare CR or LF) \
             or \"normalize\" (turn them into CRLF); for a few legacy devices only, prefer \
             bare_newline_normalize_clients"
        )),
    }
}
