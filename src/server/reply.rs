//! Every reply the listener sends, in one place: an [`Answer`] names what
//! happened, and [`Answer::reply`] is the only code that turns it into a
//! code, an enhanced status code (RFC 3463) and a text. `grep '421'` in this
//! file finds every way a session can be told 421.
//!
//! Uses `smtp` (the wire form of a reply, command errors), `policy` (its
//! refusals) and `queue` (its errors and ids); nothing here does I/O. The
//! upstream reply parser (`smtp::reply`) is a different concern: replies
//! read from a smarthost are data, not decisions.

use std::borrow::Cow;
use std::net::IpAddr;

use super::limits::Refused as ClientLimit;
use super::reason::Reason;
use crate::policy::Refusal;
use crate::queue::{QueueError, QueueId};
use crate::smtp::reply::EnhancedStatus;
use crate::smtp::{CommandError, Reply};

/// What the listener tells a client. Texts are part of the interface:
/// devices log them, and tests assert them byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    // Connection.
    /// The greeting.
    Greeting {
        /// Our hostname.
        hostname: String,
    },
    /// The client wrote before our greeting (RFC 5321 §4.3.1).
    TalkedFirst,
    /// Every connection slot is taken.
    TooManyConnections,
    /// This client address holds its share of connections, or connects too
    /// often.
    TooManyFromClient(ClientLimit),
    /// A connection that sent nothing is closed to make room for another
    /// client.
    IdleClosed,
    /// Policy refuses the client at connect.
    ClientRefused {
        /// The client's address, named so a device's log says what to allow.
        client: IpAddr,
        /// Which list (the log says; the client is not told).
        why: Refusal,
    },
    /// The client went quiet, or the session ran past its time.
    Timeout,
    /// The daemon is stopping.
    ShuttingDown {
        /// Our hostname.
        hostname: String,
    },
    /// Too many protocol errors in one session.
    TooManyErrors,
    /// Too many commands that move no transaction forward.
    TooManyJunkCommands,

    // Command lines.
    /// A command line past the limit.
    LineTooLong,
    /// A command line that does not parse.
    BadCommand(CommandError),
    /// Commands sent ahead of replies without EHLO.
    PipeliningWithoutEhlo,
    /// Out of sequence: TLS is on already.
    TlsAlreadyActive,
    /// Out of sequence: STARTTLS inside a transaction.
    StartTlsInTransaction,
    /// Out of sequence: STARTTLS or AUTH before EHLO.
    SendEhloFirst,
    /// Out of sequence: MAIL before HELO/EHLO.
    SendHeloFirst,
    /// Out of sequence: a second AUTH.
    AlreadyAuthenticated,
    /// Out of sequence: AUTH inside a transaction.
    AuthInTransaction,
    /// Out of sequence: MAIL inside a transaction.
    NestedMail,
    /// Out of sequence: RCPT or DATA without MAIL.
    NeedMail,
    /// Out of sequence: DATA without an accepted RCPT.
    NeedRcpt,
    /// STARTTLS or AUTH where it is not offered.
    NotImplemented,

    // Replies to commands that went through.
    /// The EHLO reply and its extensions.
    Ehlo {
        /// Our hostname.
        hostname: String,
        /// The SIZE to advertise.
        size: u64,
        /// STARTTLS is offered.
        starttls: bool,
        /// AUTH is offered.
        auth: bool,
    },
    /// The HELO reply.
    Helo {
        /// Our hostname.
        hostname: String,
    },
    /// RSET, NOOP.
    Ok,
    /// MAIL accepted.
    SenderOk,
    /// RCPT accepted.
    RecipientOk,
    /// QUIT.
    Bye,
    /// VRFY: we do not say.
    Vrfy,
    /// HELP.
    Help,

    // STARTTLS.
    /// Go ahead with the handshake.
    ReadyForTls,
    /// Commands pipelined behind STARTTLS (CVE-2011-0411).
    PipelinedAfterStartTls,

    // AUTH.
    /// AUTH in clear where only TLS may carry it.
    EncryptionRequired,
    /// A mechanism other than PLAIN and LOGIN.
    UnknownAuthMechanism,
    /// A 334 prompt: base64 text, empty for PLAIN's.
    AuthChallenge(&'static str),
    /// The client sent `*`.
    AuthCancelled,
    /// Logged in.
    AuthOk,
    /// Wrong name or password.
    AuthFailed,
    /// Too many failed logins in one session.
    TooManyAuthFailures,

    // MAIL and RCPT.
    /// MAIL or RCPT parameters after HELO.
    ParamsNeedEhlo,
    /// SIZE= (at MAIL) or the data (at the dot) over the limit.
    MessageTooBig {
        /// The limit, in octets.
        limit: u64,
    },
    /// A UTF-8 sender without SMTPUTF8.
    Utf8SenderNeedsSmtputf8,
    /// A UTF-8 recipient without SMTPUTF8.
    Utf8RecipientNeedsSmtputf8,
    /// Policy refuses the sender (which list: for the log only).
    SenderRefused(Refusal),
    /// The logged-in user may not use this sender.
    SenderNotOwned,
    /// Policy refuses the recipient (which list: for the log only).
    RecipientRefused(Refusal),
    /// The client may not relay (not allowed, not logged in).
    RelayDenied,
    /// Past `max_recipients` in one message.
    TooManyRecipients,
    /// This client's message rate.
    MessageRate,
    /// This client's recipient rate.
    RecipientRate,
    /// The queue is full.
    QueueFull,
    /// The queue is closing.
    QueueClosed,
    /// The queue could not store the message.
    QueueFailed,

    // DATA.
    /// Go ahead with the message.
    StartData,
    /// A bare CR or LF in the data, in reject mode.
    BareNewline,
    /// A NUL in the data, in reject mode.
    NulInData,
    /// More Received fields than the hop limit: a mail loop.
    TooManyHops,
    /// A text line over the RFC 5321 limit.
    DataLineTooLong {
        /// Longest allowed line, CRLF included.
        limit: usize,
    },
    /// The header section over its limit.
    HeaderTooBig {
        /// The limit, in octets.
        limit: u64,
    },
    /// The queue did not confirm the message within data_end_timeout.
    StorageTooSlow,
    /// A `[[filter]]` rule's `reject`, at any point of the transaction.
    FilterRejected {
        /// The rule's name (the log line's `reason=filter:NAME`).
        rule: String,
        /// Its reply.
        reply: crate::config::RejectReply,
    },
    /// The message is on stable storage.
    Queued {
        /// Its queue id.
        id: QueueId,
    },
}

impl Answer {
    /// The answer for a policy refusal; `client` is named in refusals of
    /// the client itself.
    ///
    /// Deny and not-allowed get the same text on the wire: telling a client
    /// which list it hit helps a prober more than a device. The log line
    /// ([`Refusal`]'s `Display`) tells them apart.
    pub fn refused(refusal: &Refusal, client: IpAddr) -> Answer {
        match refusal {
            Refusal::ClientDenied | Refusal::ClientNotAllowed => Answer::ClientRefused {
                client: client.to_canonical(),
                why: *refusal,
            },
            Refusal::SenderDenied | Refusal::SenderNotAllowed => Answer::SenderRefused(*refusal),
            Refusal::RecipientDenied | Refusal::RecipientNotAllowed => {
                Answer::RecipientRefused(*refusal)
            }
        }
    }

    /// Why this answer refuses the client, or `None` when it is no
    /// refusal. Every answer is named here (no catch-all), so a new one
    /// is a refusal or not by decision.
    pub fn reason(&self) -> Option<Reason> {
        use Answer as A;
        use Reason as R;
        Some(match self {
            A::TalkedFirst => R::TalkedFirst,
            A::TooManyConnections => R::TooManyConnections,
            A::TooManyFromClient(ClientLimit::TooManyOpen) => R::ClientConnections,
            A::TooManyFromClient(ClientLimit::TooFast) => R::ConnectRate,
            A::TooManyFromClient(ClientLimit::TableFull) => R::ClientTable,
            A::IdleClosed => R::IdleClosed,
            A::ClientRefused { why, .. } | A::SenderRefused(why) | A::RecipientRefused(why) => {
                match why {
                    Refusal::ClientDenied => R::DenyClients,
                    Refusal::ClientNotAllowed => R::AllowClients,
                    Refusal::SenderDenied => R::DenySenders,
                    Refusal::SenderNotAllowed => R::AllowSenders,
                    Refusal::RecipientDenied => R::DenyRecipients,
                    Refusal::RecipientNotAllowed => R::AllowRecipients,
                }
            }
            A::TooManyErrors => R::TooManyErrors,
            A::TooManyJunkCommands => R::JunkCommands,
            A::LineTooLong => R::LineTooLong,
            A::BadCommand(e) => match e {
                CommandError::Unrecognized => R::UnknownCommand,
                CommandError::UnknownParameter(_) => R::UnknownParameter,
                CommandError::BadSender(_) | CommandError::BadRecipient(_) => R::BadAddress,
                _ => R::Syntax,
            },
            A::PipeliningWithoutEhlo => R::PipeliningWithoutEhlo,
            A::TlsAlreadyActive
            | A::StartTlsInTransaction
            | A::SendEhloFirst
            | A::SendHeloFirst
            | A::AlreadyAuthenticated
            | A::AuthInTransaction
            | A::NestedMail
            | A::NeedMail
            | A::NeedRcpt => R::BadSequence,
            A::NotImplemented => R::NotOffered,
            A::PipelinedAfterStartTls => R::PipelinedAfterStarttls,
            A::EncryptionRequired => R::EncryptionRequired,
            A::UnknownAuthMechanism => R::AuthMechanism,
            A::AuthFailed => R::AuthFailed,
            A::TooManyAuthFailures => R::AuthFailures,
            A::ParamsNeedEhlo => R::ParamsNeedEhlo,
            A::MessageTooBig { .. } => R::MessageTooBig,
            A::Utf8SenderNeedsSmtputf8 | A::Utf8RecipientNeedsSmtputf8 => R::NeedsSmtputf8,
            A::SenderNotOwned => R::SenderNotOwned,
            A::RelayDenied => R::RelayDenied,
            A::TooManyRecipients => R::TooManyRecipients,
            A::MessageRate => R::MessageRate,
            A::RecipientRate => R::RecipientRate,
            A::QueueFull => R::QueueFull,
            A::QueueClosed => R::QueueClosed,
            A::QueueFailed => R::QueueFailed,
            A::BareNewline => R::BareNewline,
            A::NulInData => R::Nul,
            A::TooManyHops => R::TooManyHops,
            A::DataLineTooLong { .. } => R::DataLineTooLong,
            A::HeaderTooBig { .. } => R::HeaderTooBig,
            A::StorageTooSlow => R::StorageTooSlow,
            A::FilterRejected { .. } => R::Filter,
            // The end of a session, and everything that goes through.
            A::Greeting { .. }
            | A::Timeout
            | A::ShuttingDown { .. }
            | A::Ehlo { .. }
            | A::Helo { .. }
            | A::Ok
            | A::SenderOk
            | A::RecipientOk
            | A::Bye
            | A::Vrfy
            | A::Help
            | A::ReadyForTls
            | A::AuthChallenge(_)
            | A::AuthCancelled
            | A::AuthOk
            | A::StartData
            | A::Queued { .. } => return None,
        })
    }

    /// The answer for a queue error at MAIL or after DATA.
    pub fn queue_error(e: &QueueError) -> Answer {
        match e {
            QueueError::Full => Answer::QueueFull,
            QueueError::Closed => Answer::QueueClosed,
            _ => Answer::QueueFailed,
        }
    }

    /// The reply on the wire.
    pub fn reply(&self) -> Reply {
        use Answer as A;
        let st = EnhancedStatus::new;
        let (code, status, text): (u16, Option<EnhancedStatus>, Cow<'static, str>) = match self {
            A::Greeting { hostname } => (220, None, format!("{hostname} ESMTP postern").into()),
            A::TalkedFirst => (
                554,
                Some(st(5, 5, 0)),
                "Error: SMTP protocol violation (data sent before the greeting)".into(),
            ),
            A::TooManyConnections => (
                421,
                Some(st(4, 7, 0)),
                "Too many connections, try again later".into(),
            ),
            A::IdleClosed => (
                421,
                Some(st(4, 7, 0)),
                "Too many connections; closing this idle one, try again later".into(),
            ),
            A::TooManyFromClient(_) => (
                421,
                Some(st(4, 7, 0)),
                "Too many connections from your address, try again later".into(),
            ),
            A::ClientRefused { client, .. } => (
                554,
                Some(st(5, 7, 1)),
                format!("Access denied: {client} is not allowed to relay through this host")
                    .into(),
            ),
            A::Timeout => (421, Some(st(4, 4, 2)), "Timeout, closing connection".into()),
            A::ShuttingDown { hostname } => (
                421,
                Some(st(4, 3, 2)),
                format!("{hostname} shutting down, try again later").into(),
            ),
            A::TooManyErrors => (
                421,
                Some(st(4, 7, 0)),
                "Too many errors, closing connection".into(),
            ),
            A::TooManyJunkCommands => (
                421,
                Some(st(4, 7, 0)),
                "Too many commands without a transaction, closing connection".into(),
            ),
            A::LineTooLong => (500, Some(st(5, 5, 2)), "Error: line too long".into()),
            A::BadCommand(e) => command_error(e),
            A::PipeliningWithoutEhlo => (
                554,
                Some(st(5, 5, 0)),
                "Error: improper command pipelining (PIPELINING needs EHLO)".into(),
            ),
            A::TlsAlreadyActive => (503, Some(st(5, 5, 1)), "Error: TLS already active".into()),
            A::StartTlsInTransaction => (
                503,
                Some(st(5, 5, 1)),
                "Error: STARTTLS not allowed during a mail transaction".into(),
            ),
            A::SendEhloFirst => (503, Some(st(5, 5, 1)), "Error: send EHLO first".into()),
            A::SendHeloFirst => (503, Some(st(5, 5, 1)), "Error: send HELO/EHLO first".into()),
            A::AlreadyAuthenticated => (
                503,
                Some(st(5, 5, 1)),
                "Error: already authenticated".into(),
            ),
            A::AuthInTransaction => (
                503,
                Some(st(5, 5, 1)),
                "Error: AUTH not allowed during a mail transaction".into(),
            ),
            A::NestedMail => (503, Some(st(5, 5, 1)), "Error: nested MAIL command".into()),
            A::NeedMail => (503, Some(st(5, 5, 1)), "Error: need MAIL command".into()),
            A::NeedRcpt => (503, Some(st(5, 5, 1)), "Error: need RCPT command".into()),
            A::NotImplemented => (
                502,
                Some(st(5, 5, 1)),
                "Error: command not implemented".into(),
            ),
            A::Ehlo {
                hostname,
                size,
                starttls,
                auth,
            } => return ehlo(hostname, *size, *starttls, *auth),
            A::Helo { hostname } => (250, None, hostname.clone().into()),
            A::Ok => (250, Some(st(2, 0, 0)), "Ok".into()),
            A::SenderOk => (250, Some(st(2, 1, 0)), "Ok".into()),
            A::RecipientOk => (250, Some(st(2, 1, 5)), "Ok".into()),
            A::Bye => (221, Some(st(2, 0, 0)), "Bye".into()),
            A::Vrfy => (
                252,
                Some(st(2, 5, 0)),
                "Cannot VRFY user, but will accept message and attempt delivery".into(),
            ),
            A::Help => (
                214,
                Some(st(2, 0, 0)),
                "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP; see RFC 5321".into(),
            ),
            A::ReadyForTls => (220, Some(st(2, 0, 0)), "Ready to start TLS".into()),
            A::PipelinedAfterStartTls => (
                554,
                Some(st(5, 5, 0)),
                "Error: commands pipelined after STARTTLS (RFC 3207 §4.2)".into(),
            ),
            A::EncryptionRequired => (
                538,
                Some(st(5, 7, 11)),
                "Encryption required for requested authentication mechanism".into(),
            ),
            A::UnknownAuthMechanism => (
                504,
                Some(st(5, 5, 4)),
                "Unrecognized authentication type; use PLAIN or LOGIN".into(),
            ),
            A::AuthChallenge(text) => (334, None, Cow::Borrowed(*text)),
            A::AuthCancelled => (501, Some(st(5, 7, 0)), "Authentication cancelled".into()),
            A::AuthOk => (235, Some(st(2, 7, 0)), "Authentication successful".into()),
            A::AuthFailed => (
                535,
                Some(st(5, 7, 8)),
                "Authentication credentials invalid".into(),
            ),
            A::TooManyAuthFailures => (
                421,
                Some(st(4, 7, 0)),
                "Too many failed authentication attempts, closing connection".into(),
            ),
            A::ParamsNeedEhlo => (555, Some(st(5, 5, 4)), "MAIL and RCPT parameters need EHLO, not HELO".into()),
            A::MessageTooBig { limit } => (
                552,
                Some(st(5, 3, 4)),
                format!("Message size exceeds fixed limit of {limit} octets").into(),
            ),
            A::Utf8SenderNeedsSmtputf8 => (
                553,
                Some(st(5, 6, 7)),
                "Non-ASCII sender address needs SMTPUTF8".into(),
            ),
            A::Utf8RecipientNeedsSmtputf8 => (
                553,
                Some(st(5, 6, 7)),
                "Non-ASCII recipient address needs SMTPUTF8".into(),
            ),
            A::SenderRefused(_) => (
                550,
                Some(st(5, 7, 1)),
                "Sender address rejected: not allowed".into(),
            ),
            A::SenderNotOwned => (
                550,
                Some(st(5, 7, 1)),
                "Sender address rejected: not owned by the authenticated user".into(),
            ),
            A::RecipientRefused(_) => (
                550,
                Some(st(5, 7, 1)),
                "Recipient address rejected: not allowed to relay to this address".into(),
            ),
            A::RelayDenied => (
                550,
                Some(st(5, 7, 1)),
                "Relaying denied: authenticate first (AUTH), or relay from an allowed client"
                    .into(),
            ),
            A::TooManyRecipients => (452, Some(st(4, 5, 3)), "Error: too many recipients".into()),
            A::MessageRate => (
                450,
                Some(st(4, 7, 1)),
                "Too many messages from this client, try again later".into(),
            ),
            A::RecipientRate => (
                450,
                Some(st(4, 7, 1)),
                "Too many recipients from this client, try again later".into(),
            ),
            A::QueueFull => (
                452,
                Some(st(4, 3, 1)),
                "Insufficient system storage: queue full, try again later".into(),
            ),
            A::QueueClosed => (
                421,
                Some(st(4, 3, 2)),
                "Service shutting down, try again later".into(),
            ),
            A::QueueFailed => (
                451,
                Some(st(4, 3, 0)),
                "Local error in processing: could not store the message, try again later".into(),
            ),
            A::StartData => (354, None, "End data with <CR><LF>.<CR><LF>".into()),
            A::BareNewline => (
                550,
                Some(st(5, 6, 0)),
                "Message refused: bare CR or LF in the data (lines must end in CRLF)".into(),
            ),
            A::NulInData => (
                550,
                Some(st(5, 6, 0)),
                "Message refused: NUL character in the data".into(),
            ),
            A::TooManyHops => (554, Some(st(5, 4, 6)), "Too many hops".into()),
            A::DataLineTooLong { limit } => (
                550,
                Some(st(5, 6, 0)),
                format!(
                    "Message refused: a text line is longer than {limit} octets (RFC 5321 §4.5.3.1.6)"
                )
                .into(),
            ),
            A::HeaderTooBig { limit } => (
                552,
                Some(st(5, 3, 4)),
                format!("Message header section exceeds {limit} octets").into(),
            ),
            A::StorageTooSlow => (
                451,
                Some(st(4, 3, 0)),
                "Queue storage too slow, try again later".into(),
            ),
            A::FilterRejected { reply, .. } => {
                let (a, b, c) = reply.status;
                (reply.code, Some(st(a, b, c)), reply.text.clone().into())
            }
            A::Queued { id } => (250, Some(st(2, 0, 0)), format!("Ok: queued as {id}").into()),
        };
        Reply {
            code,
            status,
            lines: vec![text.into_owned()],
        }
    }
}

/// The reply for a command line that does not parse.
fn command_error(e: &CommandError) -> (u16, Option<EnhancedStatus>, Cow<'static, str>) {
    let st = EnhancedStatus::new;
    match e {
        CommandError::Unrecognized => (500, Some(st(5, 5, 1)), "Command unrecognized".into()),
        CommandError::Syntax(what) => (501, Some(st(5, 5, 4)), Cow::Borrowed(*what)),
        CommandError::UnknownParameter(p) => (
            555,
            Some(st(5, 5, 4)),
            format!("Parameter not supported: {p}").into(),
        ),
        CommandError::BadSender(e) => (
            501,
            Some(st(5, 1, 7)),
            format!("Bad sender address syntax: {e}").into(),
        ),
        CommandError::BadRecipient(e) => (
            501,
            Some(st(5, 1, 3)),
            format!("Bad recipient address syntax: {e}").into(),
        ),
        CommandError::BadCharacters => (
            500,
            Some(st(5, 5, 2)),
            "Invalid characters in command".into(),
        ),
    }
}

/// The EHLO reply: our name, then one extension a line.
fn ehlo(hostname: &str, size: u64, starttls: bool, auth: bool) -> Reply {
    let mut lines = vec![
        hostname.to_string(),
        "PIPELINING".into(),
        format!("SIZE {size}"),
        "8BITMIME".into(),
        "SMTPUTF8".into(),
        "ENHANCEDSTATUSCODES".into(),
        "DSN".into(),
    ];
    if starttls {
        lines.push("STARTTLS".into());
    }
    if auth {
        lines.push("AUTH PLAIN LOGIN".into());
    }
    Reply {
        code: 250,
        status: None,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::AddressError;
    use crate::smtp::command::MAIL_SYNTAX;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn wire(a: &Answer) -> String {
        let mut out = Vec::new();
        a.reply().write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn policy_refusals() {
        let status = Some(EnhancedStatus::new(5, 7, 1));
        for r in [Refusal::ClientDenied, Refusal::ClientNotAllowed] {
            let named = Answer::refused(&r, ip("::ffff:192.0.2.9")).reply();
            assert_eq!((named.code, named.status), (554, status));
            assert_eq!(
                named.lines,
                vec!["Access denied: 192.0.2.9 is not allowed to relay through this host"]
            );
        }
        for r in [Refusal::SenderDenied, Refusal::SenderNotAllowed] {
            let reply = Answer::refused(&r, ip("192.0.2.9")).reply();
            assert_eq!((reply.code, reply.status), (550, status));
            assert_eq!(reply.lines, vec!["Sender address rejected: not allowed"]);
        }
        for r in [Refusal::RecipientDenied, Refusal::RecipientNotAllowed] {
            let reply = Answer::refused(&r, ip("192.0.2.9")).reply();
            assert_eq!((reply.code, reply.status), (550, status));
            assert!(reply.lines[0].starts_with("Recipient address rejected: "));
        }
    }

    #[test]
    fn command_error_replies() {
        let check = |e: CommandError, code: u16, status: (u8, u16, u16)| {
            let r = Answer::BadCommand(e.clone()).reply();
            assert_eq!(r.code, code, "{e:?}");
            assert_eq!(
                r.status,
                Some(EnhancedStatus::new(status.0, status.1, status.2)),
                "{e:?}"
            );
            r
        };
        check(CommandError::Unrecognized, 500, (5, 5, 1));
        let r = check(CommandError::Syntax(MAIL_SYNTAX), 501, (5, 5, 4));
        assert_eq!(r.lines, vec![MAIL_SYNTAX]);
        let r = check(
            CommandError::UnknownParameter("MTRK".into()),
            555,
            (5, 5, 4),
        );
        assert!(r.lines[0].contains("MTRK"));
        check(
            CommandError::BadSender(AddressError::Domain),
            501,
            (5, 1, 7),
        );
        check(
            CommandError::BadRecipient(AddressError::Empty),
            501,
            (5, 1, 3),
        );
        check(CommandError::BadCharacters, 500, (5, 5, 2));
    }

    #[test]
    fn wire_forms() {
        assert_eq!(
            wire(&Answer::Greeting {
                hostname: "relay.test".into()
            }),
            "220 relay.test ESMTP postern\r\n"
        );
        assert_eq!(
            wire(&Answer::Queued { id: QueueId(0xAB) }),
            "250 2.0.0 Ok: queued as AB\r\n"
        );
        assert_eq!(
            wire(&Answer::Ehlo {
                hostname: "relay.test".into(),
                size: 10,
                starttls: true,
                auth: true
            }),
            "250-relay.test\r\n250-PIPELINING\r\n250-SIZE 10\r\n250-8BITMIME\r\n\
             250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-STARTTLS\r\n\
             250 AUTH PLAIN LOGIN\r\n"
        );
        assert_eq!(
            wire(&Answer::StartData),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
    }
}
