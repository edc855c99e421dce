//! The stable reason words of refusals (`reason=deny_recipients`): in the
//! log line, in the metrics' labels, in searches admins keep. A word, once
//! given, keeps its meaning. The lowest piece of `server`: the answers
//! ([`super::reply`]) say which reason each refusal has, and
//! [`super::refusal`] writes and counts it; this module uses neither.

use std::fmt;

/// Why a client was refused: the stable word in the log line and in the
/// metrics ([`Reason::word`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    // Connect.
    /// The client address is in `deny_clients`.
    DenyClients,
    /// The client address is outside `allow_clients`.
    AllowClients,
    /// Every connection slot (`max_connections`) is taken.
    TooManyConnections,
    /// This address holds `max_connections_per_client` already.
    ClientConnections,
    /// This address connects faster than `max_connections_per_minute`.
    ConnectRate,
    /// The per-client table is full of active clients.
    ClientTable,
    /// The client wrote before the greeting.
    TalkedFirst,
    /// A connection that had sent no command was closed to make room for
    /// another client at `max_connections`.
    IdleClosed,

    // Command lines.
    /// A command line past the limit.
    LineTooLong,
    /// A verb we do not know.
    UnknownCommand,
    /// Bad arguments or characters.
    Syntax,
    /// A MAIL or RCPT parameter we do not support.
    UnknownParameter,
    /// An address that does not parse.
    BadAddress,
    /// A command out of sequence (503).
    BadSequence,
    /// STARTTLS or AUTH where it is not offered (502).
    NotOffered,
    /// Commands sent ahead of replies without EHLO.
    PipeliningWithoutEhlo,
    /// Commands pipelined behind STARTTLS.
    PipelinedAfterStarttls,
    /// Too many protocol errors in one session.
    TooManyErrors,
    /// Too many commands that move no transaction forward.
    JunkCommands,

    // AUTH.
    /// AUTH in clear where only TLS may carry it.
    EncryptionRequired,
    /// A mechanism other than PLAIN and LOGIN.
    AuthMechanism,
    /// Wrong name or password.
    AuthFailed,
    /// Too many failed logins in one session.
    AuthFailures,

    // MAIL and RCPT.
    /// MAIL or RCPT parameters after HELO.
    ParamsNeedEhlo,
    /// Over the size limit (SIZE= at MAIL, or the data at the dot).
    MessageTooBig,
    /// A UTF-8 address without SMTPUTF8.
    NeedsSmtputf8,
    /// The sender is in `deny_senders`.
    DenySenders,
    /// The sender is outside `allow_senders`.
    AllowSenders,
    /// The logged-in user may not use this sender.
    SenderNotOwned,
    /// This client's message rate.
    MessageRate,
    /// The client may not relay (not allowed, not logged in).
    RelayDenied,
    /// Past `max_recipients` in one message.
    TooManyRecipients,
    /// This client's recipient rate.
    RecipientRate,
    /// The recipient is in `deny_recipients`.
    DenyRecipients,
    /// The recipient is outside `allow_recipients`.
    AllowRecipients,
    /// The queue is full.
    QueueFull,
    /// The queue is closing (the daemon stops).
    QueueClosed,
    /// The queue could not store the message.
    QueueFailed,

    // DATA.
    /// A bare CR or LF in the data.
    BareNewline,
    /// A NUL in the data.
    Nul,
    /// A text line over the RFC 5321 limit.
    DataLineTooLong,
    /// The header section over its limit.
    HeaderTooBig,
    /// More Received fields than the hop limit.
    TooManyHops,
    /// The queue did not confirm the message in time.
    StorageTooSlow,

    // Rules.
    /// A `[[filter]]` rule's reject; the log line says `filter:NAME`.
    Filter,
}

impl Reason {
    /// The stable word, as in `reason=deny_recipients`.
    pub fn word(self) -> &'static str {
        use Reason as R;
        match self {
            R::DenyClients => "deny_clients",
            R::AllowClients => "allow_clients",
            R::TooManyConnections => "too_many_connections",
            R::ClientConnections => "client_connections",
            R::ConnectRate => "connect_rate",
            R::ClientTable => "client_table",
            R::TalkedFirst => "talked_first",
            R::IdleClosed => "idle_closed",
            R::LineTooLong => "line_too_long",
            R::UnknownCommand => "unknown_command",
            R::Syntax => "syntax",
            R::UnknownParameter => "unknown_parameter",
            R::BadAddress => "bad_address",
            R::BadSequence => "bad_sequence",
            R::NotOffered => "not_offered",
            R::PipeliningWithoutEhlo => "pipelining_without_ehlo",
            R::PipelinedAfterStarttls => "pipelined_after_starttls",
            R::TooManyErrors => "too_many_errors",
            R::JunkCommands => "junk_commands",
            R::EncryptionRequired => "encryption_required",
            R::AuthMechanism => "auth_mechanism",
            R::AuthFailed => "auth_failed",
            R::AuthFailures => "auth_failures",
            R::ParamsNeedEhlo => "params_need_ehlo",
            R::MessageTooBig => "message_too_big",
            R::NeedsSmtputf8 => "needs_smtputf8",
            R::DenySenders => "deny_senders",
            R::AllowSenders => "allow_senders",
            R::SenderNotOwned => "sender_not_owned",
            R::MessageRate => "message_rate",
            R::RelayDenied => "relay_denied",
            R::TooManyRecipients => "too_many_recipients",
            R::RecipientRate => "recipient_rate",
            R::DenyRecipients => "deny_recipients",
            R::AllowRecipients => "allow_recipients",
            R::QueueFull => "queue_full",
            R::QueueClosed => "queue_closed",
            R::QueueFailed => "queue_failed",
            R::BareNewline => "bare_newline",
            R::Nul => "nul",
            R::DataLineTooLong => "data_line_too_long",
            R::HeaderTooBig => "header_too_big",
            R::TooManyHops => "too_many_hops",
            R::StorageTooSlow => "storage_too_slow",
            R::Filter => "filter",
        }
    }

    /// What happened, in words, for the log line (the reply the client got
    /// says it to the client).
    pub fn describe(self) -> &'static str {
        use Reason as R;
        match self {
            R::DenyClients => "client address is in deny_clients",
            R::AllowClients => "client address is not in allow_clients",
            R::TooManyConnections => "too many connections (max_connections)",
            R::ClientConnections => {
                "too many connections from this address (max_connections_per_client)"
            }
            R::ConnectRate => "this address connects too often (max_connections_per_minute)",
            R::ClientTable => "too many distinct clients at once",
            R::TalkedFirst => "sent data before the greeting",
            R::IdleClosed => {
                "closed while idle (no command yet) to make room for another client (max_connections)"
            }
            R::LineTooLong => "command line too long",
            R::UnknownCommand => "unknown command",
            R::Syntax => "command syntax error",
            R::UnknownParameter => "unsupported MAIL or RCPT parameter",
            R::BadAddress => "address does not parse",
            R::BadSequence => "command out of sequence",
            R::NotOffered => "command not offered to this client",
            R::PipeliningWithoutEhlo => "pipelining without EHLO",
            R::PipelinedAfterStarttls => "commands pipelined after STARTTLS",
            R::TooManyErrors => "too many errors, connection closed",
            R::JunkCommands => "too many commands without a transaction, connection closed",
            R::EncryptionRequired => {
                "AUTH without TLS (allow_plain_auth_clients does not include the client)"
            }
            R::AuthMechanism => "AUTH mechanism not offered",
            R::AuthFailed => "AUTH failed: wrong name or password",
            R::AuthFailures => "AUTH failed too often (max_auth_failures), connection closed",
            R::ParamsNeedEhlo => "MAIL or RCPT parameters after HELO (they need EHLO)",
            R::MessageTooBig => "message too big",
            R::NeedsSmtputf8 => "non-ASCII address without SMTPUTF8",
            R::DenySenders => "sender is in deny_senders",
            R::AllowSenders => "sender is not in allow_senders",
            R::SenderNotOwned => "sender not in the logged-in user's allowed_senders",
            R::MessageRate => "too many messages from this client (max_messages_per_minute)",
            R::RelayDenied => "client may not relay: not in allow_clients and not logged in",
            R::TooManyRecipients => "too many recipients (max_recipients)",
            R::RecipientRate => "too many recipients from this client (max_recipients_per_minute)",
            R::DenyRecipients => "recipient is in deny_recipients",
            R::AllowRecipients => "recipient is not in allow_recipients",
            R::QueueFull => "queue full (max_size or max_messages)",
            R::QueueClosed => "queue closing",
            R::QueueFailed => "queue could not store the message",
            R::BareNewline => "bare CR or LF in message data",
            R::Nul => "NUL in message data",
            R::DataLineTooLong => "text line over 1000 octets in message data",
            R::HeaderTooBig => "header section too big",
            R::TooManyHops => "too many hops (Received fields), a mail loop?",
            R::StorageTooSlow => "queue storage did not confirm the message in time",
            R::Filter => "rejected by a [[filter]] rule",
        }
    }

    /// Worth a warning: something an admin should look at (a loop, a flood,
    /// a guessed password, a full or slow queue); the rest is information.
    pub fn warns(self) -> bool {
        use Reason as R;
        matches!(
            self,
            R::TooManyConnections
                | R::ClientConnections
                | R::ConnectRate
                | R::ClientTable
                | R::AuthFailed
                | R::AuthFailures
                | R::TooManyHops
                | R::QueueFull
                | R::QueueFailed
                | R::StorageTooSlow
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}
