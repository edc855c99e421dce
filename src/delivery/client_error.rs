//! Why talking to a smarthost or MX host failed ([`ClientError`]), in
//! words a person can act on. Split from [`super::client`], which returns
//! these; uses `dns` (its errors) and `smtp` (replies) only.

use std::net::SocketAddr;

use crate::dns::DnsError;
use crate::smtp::Reply;

/// Why talking to the smarthost failed. Everything here is temporary for
/// the messages involved (they stay queued), except a permanent reply,
/// which [`ClientError::reply`] exposes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The name did not resolve.
    #[error("{0}")]
    Dns(#[from] DnsError),
    /// No address accepted a TCP connection.
    #[error("connect to {addr} failed: {source}{}", connect_hint(source))]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS with {host} failed: {reason}")]
    Tls {
        /// The name verified.
        host: String,
        /// What went wrong and what to do, in words
        /// ([`crate::tls::handshake_failure`]).
        reason: String,
    },
    /// A reply did not come in time.
    #[error("timeout waiting for {0}")]
    Timeout(&'static str),
    /// The server said something we did not expect at this step.
    #[error("{stage}: {}", reply.to_log_string())]
    Unexpected {
        /// What we were doing.
        stage: &'static str,
        /// What the server said.
        reply: Reply,
    },
    /// `tls = "starttls"` but the server does not offer it.
    #[error("server does not offer STARTTLS, which tls = \"starttls\" requires")]
    NoStartTls,
    /// `username` is set but no mechanism we speak is offered.
    #[error("server offers no AUTH mechanism we support (PLAIN, LOGIN); offered: {0}")]
    NoAuthMechanism(String),
    /// The password file could not be read.
    #[error("cannot read password_file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server broke the protocol (bad reply syntax, overlong line).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection failed mid-way.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// RFC 7505 null MX: the domain accepts no mail. Permanent.
    #[error("{0} accepts no mail (null MX record, RFC 7505)")]
    NullMx(String),
    /// The server's certificate is not valid yet: with a board that booted
    /// without a real-time clock, our clock is what is wrong.
    #[error(
        "TLS with {host}: certificate not valid yet; clock not synchronised? (system time {now})"
    )]
    ClockNotSynced {
        /// The server.
        host: String,
        /// Our clock, as it reads.
        now: String,
    },
    /// Credentials would go out without verified TLS.
    #[error(
        "not sending credentials: the connection is not TLS with a verified certificate (tls = \"starttls\" or \"implicit\" for AUTH)"
    )]
    InsecureAuth,
    /// `allow_plaintext_auth` covers this machine and private networks;
    /// the host resolved to an address outside them.
    #[error(
        "not sending credentials in clear text to {0}: allow_plaintext_auth covers only loopback and private addresses; use TLS for this host"
    )]
    ClearTextToPublic(SocketAddr),
    /// The server refused the login.
    #[error("AUTH {mechanism} refused: {}{}", reply.to_log_string(), super::hints::hint(reply).map(|h| format!("; hint: {h}")).unwrap_or_default())]
    AuthRefused {
        /// PLAIN, LOGIN or XOAUTH2.
        mechanism: &'static str,
        /// The reply.
        reply: Reply,
    },
    /// No OAuth2 access token.
    #[error("XOAUTH2: {0}")]
    OAuth(#[from] super::oauth::OAuthError),
    /// Every host of the route failed; each reason in order.
    #[error("every host failed: {0}")]
    AllFailed(String),
}

/// What a failed connect usually means, for people.
fn connect_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            " (nothing listens there: check host and port, and that the server is up)"
        }
        std::io::ErrorKind::TimedOut => {
            " (no answer: a firewall in the way, or the wrong address?)"
        }
        std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
            " (no route to it: check this system's network and the address)"
        }
        _ => "",
    }
}

impl ClientError {
    /// Permanent failures (report now) as opposed to deferrals.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::NullMx(_))
    }
}
