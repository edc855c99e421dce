//! Client commands (RFC 5321 §4.1), parsed from one line without its CRLF.

use super::address::{Address, AddressError};
use super::reply::Reply;

/// Longest command line accepted, CRLF included. RFC 5321 §4.5.3.1.4 gives
/// 512; RFC 1870 (SIZE) and RFC 6152 (BODY) add parameters to MAIL, so we
/// allow one more 512 for extensions, as Postfix does with its line limit.
pub const MAX_COMMAND_LINE: usize = 1024;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `EHLO domain-or-literal`
    Ehlo(String),
    /// `HELO domain`
    Helo(String),
    /// `MAIL FROM:<reverse-path> [params]`; `from` is `None` for `<>`.
    Mail {
        /// The reverse path; `None` is the null sender.
        from: Option<Address>,
        /// ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path>`
    Rcpt {
        /// The forward path.
        to: Address,
    },
    /// `DATA`
    Data,
    /// `RSET`
    Rset,
    /// `NOOP [string]`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy(String),
    /// `HELP [string]`
    Help,
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954)
    Auth {
        /// Mechanism name, upper-cased.
        mechanism: String,
        /// Initial response, still base64.
        initial: Option<String>,
    },
}

/// Body type declared with `BODY=` (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    /// `BODY=7BIT` or nothing said.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`
    EightBitMime,
}

/// ESMTP parameters on MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the client's estimate of the message size.
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152).
    pub body: BodyType,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
}

/// Why a command line was refused; each maps to one reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Verb not known: 500 5.5.1.
    #[error("command unrecognized")]
    Unrecognized,
    /// Known verb, bad arguments: 501 5.5.4 with the explanation.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// A MAIL/RCPT parameter we do not support: 555 5.5.4.
    #[error("parameter not supported: {0}")]
    UnknownParameter(String),
    /// The address in MAIL FROM is malformed: 501 5.1.7.
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    /// The address in RCPT TO is malformed: 501 5.1.3.
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    /// Line is not valid UTF-8 or contains control characters: 500 5.5.2.
    #[error("invalid characters in command")]
    BadCharacters,
}

impl CommandError {
    /// The reply a server sends for this error.
    pub fn reply(&self) -> Reply {
        unimplemented!("helper: smtp/command.rs")
    }
}

/// Parse one command line, CRLF already removed.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let _ = line;
    unimplemented!("helper: smtp/command.rs")
}
