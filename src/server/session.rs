//! The SMTP session state machine, without I/O: a command goes in, a reply
//! (or the instruction to receive data, or to close) comes out. Every
//! command that arrives out of sequence gets 503 and changes nothing.

use crate::config::ServerConfig;
use crate::policy::Policy;
use crate::queue::{FLAG_8BITMIME, FLAG_SMTPUTF8, NewMessage, Queue, QueueError};
use crate::smtp::reply::EnhancedStatus as S;
use crate::smtp::{Address, BodyType, Command, MailParams, Reply};

/// Where the session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Greeted, no EHLO/HELO yet.
    Connected,
    /// EHLO/HELO done, no transaction.
    Ready,
    /// MAIL accepted.
    Mail {
        /// Sender (`None` = `<>`).
        from: Option<Address>,
        /// MAIL parameters.
        params: MailParams,
    },
    /// At least one RCPT accepted.
    Rcpt {
        /// Sender.
        from: Option<Address>,
        /// MAIL parameters.
        params: MailParams,
        /// Accepted recipients.
        rcpts: Vec<Address>,
    },
}

/// What the driver must do after a command.
#[derive(Debug)]
pub enum Step {
    /// Send this reply and read the next command.
    Reply(Reply),
    /// Send 354 and receive the message for this envelope.
    Data(NewMessage),
    /// Send this reply and close the connection.
    Close(Reply),
}

/// The parts of the daemon a session consults.
#[derive(Debug, Clone, Copy)]
pub struct Gates<'a> {
    /// Our hostname.
    pub hostname: &'a str,
    /// `[server]`.
    pub server: &'a ServerConfig,
    /// Relay policy.
    pub policy: &'a Policy,
    /// The queue, for room checks.
    pub queue: &'a Queue,
    /// Outbound routes (issue 3): aliases, upstream size limit.
    pub routes: Option<&'a crate::delivery::SharedRoutes>,
}

impl Gates<'_> {
    /// The size limit to advertise and enforce: `[server] max_message_size`,
    /// or the smallest upstream limit of the routes when that is smaller
    /// (devices get 552 at MAIL instead of a bounce later). (Issue 3.)
    pub fn max_message_size(&self) -> u64 {
        let own = self.server.max_message_size.bytes;
        self.routes
            .and_then(|r| r.max_message_size())
            .map_or(own, |up| up.min(own))
    }
}

/// A session's protocol state.
#[derive(Debug)]
pub struct SessionCore {
    phase: Phase,
    /// The EHLO/HELO argument, for Received.
    pub helo: Option<String>,
    /// True after EHLO (extensions may be used).
    pub esmtp: bool,
}

impl Default for SessionCore {
    fn default() -> Self {
        SessionCore::new()
    }
}

fn r(code: u16, st: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(code, S::new(st.0, st.1, st.2), text)
}

/// The reply for a queue error at MAIL or after DATA.
pub fn queue_error_reply(e: &QueueError) -> Reply {
    match e {
        QueueError::Full => r(
            452,
            (4, 3, 1),
            "Insufficient system storage: queue full, try again later",
        ),
        QueueError::Closed => r(421, (4, 3, 2), "Service shutting down, try again later"),
        _ => r(
            451,
            (4, 3, 0),
            "Local error in processing: could not store the message, try again later",
        ),
    }
}

impl SessionCore {
    /// A session just greeted.
    pub fn new() -> SessionCore {
        SessionCore {
            phase: Phase::Connected,
            helo: None,
            esmtp: false,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Forget the transaction (RSET, EHLO, after DATA).
    pub fn reset(&mut self) {
        if self.phase != Phase::Connected {
            self.phase = Phase::Ready;
        }
    }

    /// The EHLO reply's lines.
    fn ehlo_reply(&self, g: &Gates) -> Reply {
        Reply {
            code: 250,
            status: None,
            lines: vec![
                g.hostname.to_string(),
                "PIPELINING".into(),
                format!("SIZE {}", g.max_message_size()),
                "8BITMIME".into(),
                "SMTPUTF8".into(),
                "ENHANCEDSTATUSCODES".into(),
            ],
        }
    }

    /// Handle one parsed command.
    pub fn command(&mut self, cmd: Command, g: &Gates) -> Step {
        match cmd {
            Command::Ehlo(name) => {
                self.helo = Some(name);
                self.esmtp = true;
                self.phase = Phase::Ready;
                Step::Reply(self.ehlo_reply(g))
            }
            Command::Helo(name) => {
                self.helo = Some(name);
                self.esmtp = false;
                self.phase = Phase::Ready;
                Step::Reply(Reply::plain(250, g.hostname))
            }
            Command::Mail { from, params } => self.mail(from, params, g),
            Command::Rcpt { to } => self.rcpt(to, g),
            Command::Data => match &self.phase {
                Phase::Rcpt {
                    from,
                    params,
                    rcpts,
                } => {
                    let mut flags = 0;
                    if params.body == BodyType::EightBitMime {
                        flags |= FLAG_8BITMIME;
                    }
                    if params.smtputf8 {
                        flags |= FLAG_SMTPUTF8;
                    }
                    Step::Data(NewMessage {
                        from: from.as_ref().map(|a| a.as_str().to_string()),
                        rcpts: rcpts.iter().map(|a| a.as_str().to_string()).collect(),
                        flags,
                    })
                }
                Phase::Mail { .. } => Step::Reply(r(503, (5, 5, 1), "Error: need RCPT command")),
                _ => Step::Reply(r(503, (5, 5, 1), "Error: need MAIL command")),
            },
            Command::Rset => {
                self.reset();
                Step::Reply(r(250, (2, 0, 0), "Ok"))
            }
            Command::Noop => Step::Reply(r(250, (2, 0, 0), "Ok")),
            Command::Quit => Step::Close(r(221, (2, 0, 0), "Bye")),
            Command::Vrfy(_) => Step::Reply(r(
                252,
                (2, 5, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => Step::Reply(r(
                214,
                (2, 0, 0),
                "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP; see RFC 5321",
            )),
            Command::StartTls | Command::Auth { .. } => {
                Step::Reply(r(502, (5, 5, 1), "Error: command not implemented"))
            }
        }
    }

    fn mail(&mut self, from: Option<Address>, params: MailParams, g: &Gates) -> Step {
        match self.phase {
            Phase::Connected => {
                return Step::Reply(r(503, (5, 5, 1), "Error: send HELO/EHLO first"));
            }
            Phase::Mail { .. } | Phase::Rcpt { .. } => {
                return Step::Reply(r(503, (5, 5, 1), "Error: nested MAIL command"));
            }
            Phase::Ready => {}
        }
        if !self.esmtp
            && (params.size.is_some() || params.smtputf8 || params.body != BodyType::SevenBit)
        {
            return Step::Reply(r(555, (5, 5, 4), "MAIL parameters need EHLO"));
        }
        let limit = g.max_message_size();
        if let Some(size) = params.size
            && size > limit
        {
            return Step::Reply(r(
                552,
                (5, 3, 4),
                format!("Message size exceeds fixed limit of {limit} octets"),
            ));
        }
        if let Some(a) = &from
            && a.is_utf8()
            && !params.smtputf8
        {
            return Step::Reply(r(553, (5, 6, 7), "Non-ASCII sender address needs SMTPUTF8"));
        }
        if let Err(e) = g.queue.check_room(params.size.unwrap_or(0)) {
            return Step::Reply(queue_error_reply(&e));
        }
        if let Err(refusal) = g.policy.check_sender(from.as_ref()) {
            return Step::Reply(refusal.reply());
        }
        self.phase = Phase::Mail { from, params };
        Step::Reply(r(250, (2, 1, 0), "Ok"))
    }

    fn rcpt(&mut self, to: Address, g: &Gates) -> Step {
        // Issue 3: [aliases] map root, admin, *@lan… to real addresses,
        // before policy sees the recipient.
        let to = match g.routes.and_then(|r| r.alias(to.as_str())) {
            Some(target) => Address::parse(&target).unwrap_or(to),
            None => to,
        };
        let (from, params, mut rcpts) = match std::mem::replace(&mut self.phase, Phase::Connected) {
            Phase::Mail { from, params } => (from, params, Vec::new()),
            Phase::Rcpt {
                from,
                params,
                rcpts,
            } => (from, params, rcpts),
            other => {
                self.phase = other;
                return Step::Reply(r(503, (5, 5, 1), "Error: need MAIL command"));
            }
        };
        let reply = if rcpts.len() >= g.server.max_recipients {
            r(452, (4, 5, 3), "Error: too many recipients")
        } else if to.is_utf8() && !params.smtputf8 {
            r(553, (5, 6, 7), "Non-ASCII recipient address needs SMTPUTF8")
        } else if let Err(refusal) = g.policy.check_recipient(&to) {
            refusal.reply()
        } else {
            rcpts.push(to);
            r(250, (2, 1, 5), "Ok")
        };
        self.phase = if rcpts.is_empty() {
            Phase::Mail { from, params }
        } else {
            Phase::Rcpt {
                from,
                params,
                rcpts,
            }
        };
        Step::Reply(reply)
    }
}
