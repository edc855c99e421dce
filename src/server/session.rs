//! The session layer of an inbound connection: every protocol rule, and no
//! I/O. Lines go in ([`Session::line`]), replies and the next thing to do
//! come out ([`Out`]); AUTH is a phase of it (the exchange in
//! [`super::sasl`]), and so is DATA (the intake in [`super::intake`]). The
//! queue's room, the per-client rates and the aliases are reached through
//! the [`Services`] trait, so the tests need no disk.
//!
//! Inside, [`SessionCore`] is the command state machine: a command goes in,
//! a reply (or the instruction to receive data, start TLS, run AUTH, or
//! close) comes out. Every command that arrives out of sequence gets 503 and
//! changes nothing (a property test drives random sequences through it).
//! [`Session`] wraps it with what is about lines rather than commands: the
//! line and error limits, pipelining, idle commands, the AUTH and DATA
//! phases.
//!
//! The state table (phase × command → reply, next phase):
//!
//! | command   | Connected | Ready      | Mail        | Rcpt          |
//! |-----------|-----------|------------|-------------|---------------|
//! | EHLO/HELO | Ready     | Ready      | Ready (reset) | Ready (reset) |
//! | MAIL      | 503       | Mail       | 503         | 503           |
//! | RCPT      | 503       | 503        | Rcpt        | Rcpt          |
//! | DATA      | 503       | 503        | 503         | data → Ready  |
//! | STARTTLS  | 503       | TLS → Connected | 503    | 503           |
//! | AUTH      | 503       | AUTH → Ready | 503       | 503           |
//! | RSET      | Connected | Ready      | Ready       | Ready         |
//! | NOOP/VRFY/HELP | same | same       | same        | same          |
//! | QUIT      | close     | close      | close       | close         |
//!
//! Uses `smtp` (commands, addresses, the header lines), `policy`, `auth`
//! (who logged in), `config` and `queue` (the message it hands over, the
//! queue's errors and ids); the rest of `server` for replies, SASL and the
//! intake.

use std::net::IpAddr;
use std::time::Duration;

use super::connection::Line;
use super::intake::{
    FilterRun, Intake, MAX_DATA_LINE, MAX_HEADER_SECTION, MAX_HOPS, Refused, added_bound,
    message_id,
};
use super::refusal::{self, Reason, Sender, Who};
use super::reply::Answer;
use super::sasl::{self, Credentials, Exchange, Progress};
use crate::auth::Login;
use crate::config::ServerConfig;
use crate::filter::{Facts, RcptDecision, Rules, Stage, Stop, Verdict};
use crate::policy::Policy;
use crate::queue::{Hold, QueueError, QueueId};
use crate::smtp::header::{Received, format_date};
use crate::smtp::{
    Address, BareNewline, Command, Envelope, MailParams, RcptParams, Recipient, Reply, ReversePath,
    command, xtext,
};

// The bounds of a session.
/// Errors (bad commands, refusals of syntax) before we hang up (421).
pub const MAX_ERRORS: u32 = 20;
/// Commands in a row that move no transaction forward (NOOP, RSET, VRFY,
/// HELP, EHLO…) before 421, like Postfix's smtpd_junk_command_limit.
pub const MAX_JUNK_COMMANDS: u32 = 100;
/// Wait after a failed AUTH, times the failures so far: slows guessing.
pub const AUTH_FAIL_DELAY: Duration = Duration::from_secs(1);

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
        /// Accepted recipients, with their DSN parameters.
        rcpts: Vec<Recipient>,
    },
}

/// What the driver must do after a command.
#[derive(Debug)]
pub enum Step {
    /// Send this reply and read the next command.
    Reply(Reply),
    /// Send 354 and receive the message for this envelope.
    Data(Envelope),
    /// Send this reply and close the connection.
    Close(Reply),
    /// Send 220, run the TLS handshake, then [`SessionCore::tls_started`].
    StartTls,
    /// Run the AUTH exchange for this mechanism (`PLAIN` or `LOGIN`), then
    /// [`SessionCore::authenticated`] on success.
    Auth {
        /// `PLAIN` or `LOGIN`.
        mechanism: String,
        /// The initial response, base64, if the client sent one.
        initial: Option<String>,
    },
}

/// Facts about the client, fixed for the connection: what it may be
/// offered and whether policy lets it relay without AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFacts {
    /// In allow_clients (and not denied): relays without AUTH.
    pub allowed: bool,
    /// STARTTLS may be advertised (a certificate is configured and the
    /// client is not in no_starttls_clients).
    pub starttls: bool,
    /// AUTH may be advertised without TLS (allow_plain_auth_clients).
    pub plain_auth: bool,
    /// There are `[[user]]` accounts at all.
    pub users: bool,
    /// `[policy] relay_authenticated`.
    pub relay_authenticated: bool,
}

impl ClientFacts {
    /// Everything off: a plain allowed client, no TLS, no users.
    pub fn allowed_plain() -> ClientFacts {
        ClientFacts {
            allowed: true,
            starttls: false,
            plain_auth: false,
            users: false,
            relay_authenticated: false,
        }
    }
}

/// What a session asks of the rest of the daemon while it decides. The
/// daemon's side is `handler::Live`; tests use a fake.
pub trait Services: std::fmt::Debug {
    /// Is there room in the queue for a message of `size` octets (0 when
    /// the client gave no SIZE)?
    fn queue_room(&self, size: u64) -> Result<(), QueueError>;
    /// Count a message from `client`; false when that is over its rate.
    fn note_message(&self, client: IpAddr) -> bool;
    /// Count a recipient from `client`; false when that is over its rate.
    fn note_recipient(&self, client: IpAddr) -> bool;
    /// What `[aliases]` maps `rcpt` to, if anything.
    fn alias(&self, rcpt: &Address) -> Option<Address>;
    /// A bare local part with the qualifying domain (`None`: it has one,
    /// or there is no domain to give: fakes without an outbound side).
    fn qualify(&self, _addr: &Address) -> Option<Address> {
        None
    }
    /// The smallest SIZE limit of the upstreams, when one is known.
    fn upstream_size_limit(&self) -> Option<u64>;
    /// Something reads every message as it arrives (storm suppression
    /// wants its Subject), even without `[[filter]]` rules.
    fn reads_messages(&self) -> bool {
        false
    }
    /// A client was refused for `reason` (the log line is written by
    /// [`refusal::refused`], which calls this): count it.
    fn refused(&self, reason: Reason) {
        let _ = reason;
    }
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
    /// The queue's room, the rates, the aliases, the upstream SIZE.
    pub services: &'a (dyn Services + Sync),
    /// The client's address (IPv4-mapped IPv6 already made IPv4).
    pub client: IpAddr,
    /// `[[filter]]` rules.
    pub filters: &'a Rules,
}

impl Gates<'_> {
    /// The size limit to advertise and enforce: `[server] max_message_size`,
    /// or the smallest upstream limit of the routes, less room for what we
    /// add (`Received:`, `Date:`, `Message-ID:`), when that is smaller.
    /// Devices get 552 at MAIL or at the dot instead of a bounce later: a
    /// message within this SIZE is within the upstream's once we have added
    /// our fields.
    pub fn max_message_size(&self) -> u64 {
        let own = self.server.max_message_size.bytes;
        match self.services.upstream_size_limit() {
            // Never 0: SIZE 0 says "no limit" (RFC 1870).
            Some(up) => own.min(up.saturating_sub(added_bound(self.hostname)).max(1)),
            None => own,
        }
    }
}

/// A session's protocol state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCore {
    phase: Phase,
    /// The EHLO/HELO argument, for Received.
    pub helo: Option<String>,
    /// True after EHLO (extensions may be used).
    pub esmtp: bool,
    /// The connection is encrypted (implicit TLS or after STARTTLS).
    pub tls: bool,
    /// Who logged in with AUTH.
    pub login: Option<Login>,
    facts: ClientFacts,
    /// What the `[[filter]]` rules decided at connect, for every message.
    connect_verdict: Verdict,
    /// What they decided for the transaction so far.
    verdict: Verdict,
}

impl Default for SessionCore {
    fn default() -> Self {
        SessionCore::new(ClientFacts::allowed_plain(), false)
    }
}

impl SessionCore {
    /// A session just greeted; `tls` for implicit TLS.
    pub fn new(facts: ClientFacts, tls: bool) -> SessionCore {
        SessionCore {
            phase: Phase::Connected,
            helo: None,
            esmtp: false,
            tls,
            login: None,
            facts,
            connect_verdict: Verdict::default(),
            verdict: Verdict::default(),
        }
    }

    /// The TLS handshake after STARTTLS succeeded: RFC 3207 §4.2, the
    /// client must start over with EHLO; nothing said before counts.
    pub fn tls_started(&mut self) {
        self.phase = Phase::Connected;
        self.helo = None;
        self.esmtp = false;
        self.tls = true;
    }

    /// AUTH succeeded.
    pub fn authenticated(&mut self, login: Login) {
        self.login = Some(login);
    }

    /// Trusted clients (in allow_clients, or logged in) are not held to
    /// the message and recipient rates unless `limit_trusted_clients`.
    fn rate_exempt(&self, g: &Gates) -> bool {
        !g.server.limit_trusted_clients && (self.facts.allowed || self.login.is_some())
    }

    /// STARTTLS is advertised now.
    fn offers_starttls(&self) -> bool {
        self.facts.starttls && !self.tls
    }

    /// AUTH is advertised now.
    fn offers_auth(&self) -> bool {
        self.facts.users && (self.tls || self.facts.plain_auth) && self.login.is_none()
    }

    /// `with` of Received (RFC 3848).
    pub fn protocol(&self) -> &'static str {
        match (self.esmtp, self.tls, self.login.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The sender of the open transaction, if any.
    fn sender(&self) -> Option<Sender<'_>> {
        match &self.phase {
            Phase::Mail { from, .. } | Phase::Rcpt { from, .. } => Some(Sender(from.as_ref())),
            Phase::Connected | Phase::Ready => None,
        }
    }

    /// The reply for `answer`, logged and counted when it is a refusal
    /// (sender and recipient named where known).
    fn answer(
        &self,
        g: &Gates,
        answer: Answer,
        from: Option<Sender<'_>>,
        rcpt: Option<&Address>,
    ) -> Step {
        let who = Who {
            helo: self.helo.as_deref(),
            from: from.or(self.sender()),
            rcpt,
            ..Who::client(g.client)
        };
        Step::Reply(refusal::refused(&|r| g.services.refused(r), &who, &answer))
    }

    /// [`SessionCore::answer`] with what the session knows.
    fn say(&self, g: &Gates, answer: Answer) -> Step {
        self.answer(g, answer, None, None)
    }

    /// What the rules decided for the transaction (DATA takes it over).
    fn take_verdict(&mut self) -> Verdict {
        std::mem::take(&mut self.verdict)
    }

    /// Forget the transaction (RSET, EHLO, after DATA).
    pub fn reset(&mut self) {
        self.verdict = Verdict::default();
        if self.phase != Phase::Connected {
            self.phase = Phase::Ready;
        }
    }

    /// The EHLO reply.
    fn ehlo_reply(&self, g: &Gates) -> Reply {
        Answer::Ehlo {
            hostname: g.hostname.to_string(),
            size: g.max_message_size(),
            starttls: self.offers_starttls(),
            auth: self.offers_auth(),
        }
        .reply()
    }

    fn starttls(&mut self, g: &Gates) -> Step {
        if self.tls {
            return self.say(g, Answer::TlsAlreadyActive);
        }
        if !self.facts.starttls {
            return self.say(g, Answer::NotImplemented);
        }
        match self.phase {
            Phase::Ready if self.esmtp => Step::StartTls,
            Phase::Mail { .. } | Phase::Rcpt { .. } => self.say(g, Answer::StartTlsInTransaction),
            _ => self.say(g, Answer::SendEhloFirst),
        }
    }

    fn auth(&mut self, mechanism: String, initial: Option<String>, g: &Gates) -> Step {
        if !self.facts.users {
            return self.say(g, Answer::NotImplemented);
        }
        if self.login.is_some() {
            return self.say(g, Answer::AlreadyAuthenticated);
        }
        match self.phase {
            Phase::Ready if self.esmtp => {}
            Phase::Mail { .. } | Phase::Rcpt { .. } => {
                return self.say(g, Answer::AuthInTransaction);
            }
            _ => return self.say(g, Answer::SendEhloFirst),
        }
        if !self.tls && !self.facts.plain_auth {
            return self.say(g, Answer::EncryptionRequired);
        }
        if mechanism != "PLAIN" && mechanism != "LOGIN" {
            return self.say(g, Answer::UnknownAuthMechanism);
        }
        Step::Auth { mechanism, initial }
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
                Step::Reply(
                    Answer::Helo {
                        hostname: g.hostname.to_string(),
                    }
                    .reply(),
                )
            }
            Command::Mail { from, params } => self.mail(from, params, g),
            Command::Rcpt { to, params } => self.rcpt(to, params, g),
            Command::Data => match &self.phase {
                Phase::Rcpt {
                    from,
                    params,
                    rcpts,
                } => {
                    let mut envelope = params.envelope(from.clone().into());
                    // Each address once, however many RCPTs (aliases) led to it.
                    envelope.add_rcpts(rcpts.iter().cloned());
                    Step::Data(envelope)
                }
                Phase::Mail { .. } => self.say(g, Answer::NeedRcpt),
                _ => self.say(g, Answer::NeedMail),
            },
            Command::Rset => {
                self.reset();
                Step::Reply(Answer::Ok.reply())
            }
            Command::Noop => Step::Reply(Answer::Ok.reply()),
            Command::Quit => Step::Close(Answer::Bye.reply()),
            Command::Vrfy(_) => Step::Reply(Answer::Vrfy.reply()),
            Command::Help => Step::Reply(Answer::Help.reply()),
            Command::StartTls => self.starttls(g),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial, g),
        }
    }

    fn mail(&mut self, from: Option<Address>, params: MailParams, g: &Gates) -> Step {
        // A bare sender (a script's `MAIL FROM:<backup>`) gets our domain
        // before policy sees it: upstreams refuse it without one.
        let from = from.map(|a| g.services.qualify(&a).unwrap_or(a));
        if let Some(answer) = self.mail_refusal(&from, &params, g) {
            return self.answer(g, answer, Some(Sender(from.as_ref())), None);
        }
        let mut verdict = self.connect_verdict.clone();
        let f = Facts {
            client: g.client,
            user: self.login.as_ref().map(|l| l.name.as_str()),
            sender: from.as_ref(),
            rcpts: &[],
            scan: None,
            size: 0,
        };
        g.filters.decide(Stage::Mail, &f, &mut verdict);
        if let Some(Stop::Reject(rule, reply)) = verdict.stop {
            let answer = Answer::FilterRejected { rule, reply };
            return self.answer(g, answer, Some(Sender(from.as_ref())), None);
        }
        self.verdict = verdict;
        self.phase = Phase::Mail { from, params };
        Step::Reply(Answer::SenderOk.reply())
    }

    /// A recipient policy took: what the RCPT-stage rules make of it.
    fn filter_rcpt(
        &mut self,
        g: &Gates,
        from: Option<&Address>,
        rcpts: &mut Vec<Recipient>,
        new: Recipient,
    ) -> Answer {
        if g.filters.is_empty() {
            rcpts.push(new);
            return Answer::RecipientOk;
        }
        let to = &new.addr;
        let user = self.login.as_ref().map(|l| l.name.clone());
        let so_far: Vec<Address> = rcpts.iter().map(|r| r.addr.clone()).collect();
        let f = Facts {
            client: g.client,
            user: user.as_deref(),
            sender: from,
            rcpts: &so_far,
            scan: None,
            size: 0,
        };
        match g.filters.rcpt(&f, to, &mut self.verdict) {
            RcptDecision::Accept => rcpts.push(new),
            RcptDecision::Reject(rule, reply) => return Answer::FilterRejected { rule, reply },
            RcptDecision::Discard(rule) => {
                // The message is taken and dropped at the end of data.
                if self.verdict.stop.is_none() {
                    self.verdict.stop = Some(Stop::Discard(rule));
                }
                rcpts.push(new);
            }
            RcptDecision::Redirect(rule, to_these) => {
                // The sender's DSN request goes with the new addresses, and
                // reports name the one it gave.
                let orcpt = new
                    .orcpt
                    .clone()
                    .or_else(|| Some(format!("rfc822;{}", xtext::encode(to.as_str().as_bytes()))));
                for a in to_these.iter().filter_map(|a| Address::parse(a).ok()) {
                    tracing::info!(client = %g.client, rule = %rule, rcpt = %crate::smtp::escaped(to.as_str()), to = %crate::smtp::escaped(a.as_str()), "recipient redirected by [[filter]]");
                    if !rcpts.iter().any(|r| r.addr == a) {
                        rcpts.push(Recipient {
                            addr: a,
                            notify: new.notify,
                            orcpt: orcpt.clone(),
                        });
                    }
                }
            }
        }
        Answer::RecipientOk
    }

    /// Why MAIL FROM `from` is refused, if it is.
    fn mail_refusal(
        &self,
        from: &Option<Address>,
        params: &MailParams,
        g: &Gates,
    ) -> Option<Answer> {
        match self.phase {
            Phase::Connected => return Some(Answer::SendHeloFirst),
            Phase::Mail { .. } | Phase::Rcpt { .. } => return Some(Answer::NestedMail),
            Phase::Ready => {}
        }
        if !self.esmtp && params.any() {
            return Some(Answer::ParamsNeedEhlo);
        }
        let limit = g.max_message_size();
        if let Some(size) = params.size
            && size > limit
        {
            return Some(Answer::MessageTooBig { limit });
        }
        if let Some(a) = from
            && a.is_utf8()
            && !params.smtputf8
        {
            return Some(Answer::Utf8SenderNeedsSmtputf8);
        }
        if let Err(e) = g.services.queue_room(params.size.unwrap_or(0)) {
            return Some(Answer::queue_error(&e));
        }
        if let Err(refusal) = g.policy.check_sender(from.as_ref()) {
            return Some(Answer::refused(&refusal, g.client));
        }
        if let Some(login) = &self.login
            && !login.allowed_senders.is_empty()
            && !from
                .as_ref()
                .is_some_and(|a| login.allowed_senders.iter().any(|p| p.matches(a)))
        {
            return Some(Answer::SenderNotOwned);
        }
        if !self.rate_exempt(g) && !g.services.note_message(g.client) {
            return Some(Answer::MessageRate);
        }
        None
    }

    fn rcpt(&mut self, to: Address, rparams: RcptParams, g: &Gates) -> Step {
        // [aliases] map root, admin, *@lan… to real addresses,
        // before policy sees the recipient. The address the client gave
        // stays the recipient's original one (RFC 3461 ORCPT, which reports
        // name), unless the client named one itself.
        let (to, orcpt) = match g.services.alias(&to) {
            Some(real) => {
                let orcpt = rparams
                    .orcpt
                    .clone()
                    .or_else(|| Some(format!("rfc822;{}", xtext::encode(to.as_str().as_bytes()))));
                (real, orcpt)
            }
            None => (to, rparams.orcpt.clone()),
        };
        // A bare local part nobody aliased (cron's `root`) gets our domain.
        let to = g.services.qualify(&to).unwrap_or(to);
        let (from, params, mut rcpts) = match std::mem::replace(&mut self.phase, Phase::Connected) {
            Phase::Mail { from, params } => (from, params, Vec::new()),
            Phase::Rcpt {
                from,
                params,
                rcpts,
            } => (from, params, rcpts),
            other => {
                self.phase = other;
                return self.answer(g, Answer::NeedMail, None, Some(&to));
            }
        };
        let may_relay =
            self.facts.allowed || (self.login.is_some() && self.facts.relay_authenticated);
        let answer = if !self.esmtp && rparams.any() {
            Answer::ParamsNeedEhlo
        } else if !may_relay {
            Answer::RelayDenied
        } else if rcpts.len() >= g.server.max_recipients {
            Answer::TooManyRecipients
        } else if !self.rate_exempt(g) && !g.services.note_recipient(g.client) {
            Answer::RecipientRate
        } else if to.is_utf8() && !params.smtputf8 {
            Answer::Utf8RecipientNeedsSmtputf8
        } else if let Err(refusal) = g.policy.check_recipient(&to) {
            Answer::refused(&refusal, g.client)
        } else {
            let new = Recipient {
                addr: to.clone(),
                notify: rparams.notify,
                orcpt,
            };
            self.filter_rcpt(g, from.as_ref(), &mut rcpts, new)
        };
        let step = self.answer(g, answer, Some(Sender(from.as_ref())), Some(&to));
        self.phase = if rcpts.is_empty() {
            Phase::Mail { from, params }
        } else {
            Phase::Rcpt {
                from,
                params,
                rcpts,
            }
        };
        step
    }
}

/// What the rules change about a message before it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    /// The recipients changed (redirect).
    pub envelope: Option<Envelope>,
    /// Held.
    pub hold: Hold,
    /// Delivered over this named route.
    pub route: Option<String>,
}

/// What the handler does next, once the replies of an [`Out`] are queued.
#[derive(Debug)]
pub enum Then {
    /// Read the next line (a command, or the response to a 334 prompt) and
    /// give it to [`Session::line`].
    Read,
    /// Close the connection.
    Close,
    /// Run the TLS handshake, then [`Session::tls_started`]; close if it
    /// fails.
    StartTls,
    /// Check these credentials (a slow password hash), then
    /// [`Session::login_checked`].
    CheckLogin(Credentials),
    /// Open a spool writer for this message, then [`Session::data_begin`].
    Receive(Envelope),
}

/// The session's answer to one input.
#[derive(Debug)]
pub struct Out {
    /// Send what was queued before, then wait this long before the
    /// replies: a failed login is answered slowly.
    pub pause: Option<Duration>,
    /// Replies, in order.
    pub replies: Vec<Reply>,
    /// Send them before reading on: the end of a pipelined group (RFC 2920
    /// §3.1) or a prompt. Closing always sends.
    pub flush: bool,
    /// Then this.
    pub then: Then,
}

impl Out {
    fn read(replies: Vec<Reply>, flush: bool) -> Out {
        Out {
            pause: None,
            replies,
            flush,
            then: Then::Read,
        }
    }
    fn close(replies: Vec<Reply>) -> Out {
        Out {
            pause: None,
            replies,
            flush: true,
            then: Then::Close,
        }
    }
    fn then(then: Then) -> Out {
        Out {
            pause: None,
            replies: Vec::new(),
            flush: false,
            then,
        }
    }
}

/// What a finished connection did, for its log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionStats {
    /// Messages accepted.
    pub accepted: u32,
    /// Messages refused after DATA.
    pub refused: u32,
    /// The last EHLO/HELO name.
    pub helo: Option<String>,
}

/// The message being received, for its log lines and its Received field.
#[derive(Debug)]
struct Receiving {
    id: QueueId,
    from: ReversePath,
    rcpts: usize,
    /// The envelope as DATA began (the rules may change it at the end).
    envelope: Envelope,
    /// What the rules decided up to DATA.
    verdict: Verdict,
    /// The recipient, when there is exactly one (Received's `for`).
    single_rcpt: Option<Address>,
}

/// One inbound session's rules: [`SessionCore`] plus the line-level
/// limits and the AUTH and DATA phases.
#[derive(Debug)]
pub struct Session<'a> {
    core: SessionCore,
    gates: Gates<'a>,
    /// A command line has arrived: command_timeout applies from now on,
    /// greeting_timeout before.
    spoke: bool,
    /// Protocol errors so far ([`MAX_ERRORS`]).
    errors: u32,
    /// Commands in a row that moved nothing ([`MAX_JUNK_COMMANDS`]).
    junk: u32,
    /// Failed logins so far (`max_auth_failures`).
    auth_failures: u32,
    /// An AUTH exchange waits for the client's response.
    sasl: Option<Exchange>,
    /// DATA was accepted; the message is being received.
    receiving: Option<Receiving>,
    /// For the connection's log line.
    pub stats: SessionStats,
}

impl<'a> Session<'a> {
    /// A session with a client that passed the connect-time checks; `tls`
    /// when the stream is TLS already (implicit-TLS port).
    pub fn new(gates: Gates<'a>, facts: ClientFacts, tls: bool) -> Session<'a> {
        Session {
            core: SessionCore::new(facts, tls),
            gates,
            spoke: false,
            errors: 0,
            junk: 0,
            auth_failures: 0,
            sasl: None,
            receiving: None,
            stats: SessionStats::default(),
        }
    }

    /// The command state machine.
    pub fn core(&self) -> &SessionCore {
        &self.core
    }

    /// The reply for `answer`, logged and counted when it is a refusal,
    /// with what the session knows of the client.
    fn refuse(&self, answer: Answer) -> Reply {
        let who = Who {
            helo: self.core.helo.as_deref(),
            from: self.core.sender(),
            ..Who::client(self.gates.client)
        };
        refusal::refused(&|r| self.gates.services.refused(r), &who, &answer)
    }

    /// How long to wait for the next line.
    pub fn idle_timeout(&self) -> Duration {
        if self.spoke {
            self.gates.server.command_timeout.value
        } else {
            self.gates.server.greeting_timeout.value
        }
    }

    /// How long to wait for more of a message.
    pub fn data_timeout(&self) -> Duration {
        self.gates.server.data_timeout.value
    }

    /// How long the queue may take to confirm a message.
    pub fn data_end_timeout(&self) -> Duration {
        self.gates.server.data_end_timeout.value
    }

    /// How long a STARTTLS handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.gates.server.command_timeout.value
    }

    /// A mail transaction is open (MAIL accepted, no DATA yet): the queue
    /// counts it for group commit.
    pub fn in_transaction(&self) -> bool {
        matches!(self.core.phase(), Phase::Mail { .. } | Phase::Rcpt { .. })
    }

    /// The start: `talked_first` when the client sent something before our
    /// greeting (a protocol violation typical of spam bots and of
    /// pipelining attacks; RFC 5321 §4.3.1).
    pub fn greet(&mut self, talked_first: bool) -> Out {
        if talked_first {
            return Out::close(vec![self.refuse(Answer::TalkedFirst)]);
        }
        let g = self.gates;
        let f = Facts {
            client: g.client,
            user: None,
            sender: None,
            rcpts: &[],
            scan: None,
            size: 0,
        };
        let mut v = Verdict::default();
        g.filters.decide(Stage::Connect, &f, &mut v);
        if let Some(Stop::Reject(rule, reply)) = v.stop.clone() {
            return Out::close(vec![self.refuse(Answer::FilterRejected { rule, reply })]);
        }
        self.core.connect_verdict = v;
        let hostname = self.gates.hostname.to_string();
        Out::read(vec![Answer::Greeting { hostname }.reply()], true)
    }

    /// The daemon is stopping (between commands).
    pub fn stopping(&self) -> Out {
        let hostname = self.gates.hostname.to_string();
        Out::close(vec![Answer::ShuttingDown { hostname }.reply()])
    }

    /// The connection has sent no command and another client needs its
    /// place (the connection cap is reached).
    pub fn make_room(&self) -> Out {
        Out::close(vec![self.refuse(Answer::IdleClosed)])
    }

    /// The last word to a client that went quiet or ran out of time.
    pub fn timed_out(&self) -> Reply {
        Answer::Timeout.reply()
    }

    /// A line from the client; `pipelined` when more input is already
    /// buffered behind it.
    pub fn line(&mut self, line: Line, pipelined: bool) -> Out {
        self.spoke = true;
        if let Some(state) = self.sasl.take() {
            let text = match &line {
                Line::Text(t) => Some(&t[..]),
                Line::TooLong => None,
            };
            return self.sasl_progress(sasl::respond(state, text));
        }
        let text = match line {
            Line::Text(t) => t,
            Line::TooLong => {
                let r = self.refuse(Answer::LineTooLong);
                return self.error(r);
            }
        };
        let cmd = match command::parse(&text) {
            Ok(c) => c,
            Err(e) => {
                let r = self.refuse(Answer::BadCommand(e));
                return self.error(r);
            }
        };
        if !self.core.esmtp && pipelined {
            // PIPELINING is an EHLO extension: a client that did not say
            // EHLO (or before it) must wait for each reply.
            return Out::close(vec![self.refuse(Answer::PipeliningWithoutEhlo)]);
        }
        let moves = matches!(
            cmd,
            Command::Mail { .. } | Command::Rcpt { .. } | Command::Data | Command::Quit
        );
        // RFC 2920 §3.1: these end a pipeline group; their replies go out
        // before anything after them is read.
        let ends_group = matches!(
            cmd,
            Command::Ehlo(_)
                | Command::Helo(_)
                | Command::Noop
                | Command::Vrfy(_)
                | Command::Help
                | Command::Quit
        );
        if moves {
            self.junk = 0;
        } else {
            self.junk = self.junk.saturating_add(1);
            if self.junk > MAX_JUNK_COMMANDS {
                return Out::close(vec![self.refuse(Answer::TooManyJunkCommands)]);
            }
        }
        let step = self.core.command(cmd, &self.gates);
        self.stats.helo.clone_from(&self.core.helo);
        match step {
            Step::Reply(r) => {
                // Protocol errors count; policy refusals of single
                // addresses are normal traffic.
                if r.code >= 500 && r.code != 550 && r.code != 552 && r.code != 553 {
                    let mut out = self.error(r);
                    out.flush |= ends_group;
                    return out;
                }
                Out::read(vec![r], ends_group)
            }
            Step::Close(r) => Out::close(vec![r]),
            Step::StartTls => {
                if pipelined {
                    // CVE-2011-0411: what follows STARTTLS in the same
                    // packet would be taken as sent over TLS.
                    return Out::close(vec![self.refuse(Answer::PipelinedAfterStartTls)]);
                }
                Out {
                    pause: None,
                    replies: vec![Answer::ReadyForTls.reply()],
                    flush: true,
                    then: Then::StartTls,
                }
            }
            Step::Auth { mechanism, initial } => {
                self.sasl_progress(sasl::start(&mechanism, initial))
            }
            Step::Data(msg) => {
                self.receiving = Some(Receiving {
                    id: QueueId(0),
                    from: msg.from.clone(),
                    rcpts: msg.rcpts.len(),
                    envelope: msg.clone(),
                    verdict: self.core.take_verdict(),
                    single_rcpt: match msg.rcpts.as_slice() {
                        [only] => Some(only.addr.clone()),
                        _ => None,
                    },
                });
                // The spool writer takes over the transaction's place.
                self.core.reset();
                Out::then(Then::Receive(msg))
            }
        }
    }

    /// Count a protocol error and answer it; past the limit, say 421 too
    /// and close.
    fn error(&mut self, r: Reply) -> Out {
        self.errors = self.errors.saturating_add(1);
        if self.errors >= MAX_ERRORS {
            return Out::close(vec![r, self.refuse(Answer::TooManyErrors)]);
        }
        Out::read(vec![r], false)
    }

    /// The TLS handshake after STARTTLS succeeded.
    pub fn tls_started(&mut self) -> Out {
        self.core.tls_started();
        Out::then(Then::Read)
    }

    fn sasl_progress(&mut self, p: Progress) -> Out {
        match p {
            Progress::Prompt(text, state) => {
                self.sasl = Some(state);
                Out::read(vec![Answer::AuthChallenge(text).reply()], true)
            }
            Progress::Cancelled => Out::read(vec![Answer::AuthCancelled.reply()], false),
            Progress::Check(creds) => Out::then(Then::CheckLogin(creds)),
            Progress::Malformed => self.login_checked("", None),
        }
    }

    /// The result of checking the credentials of [`Then::CheckLogin`]
    /// named `name`.
    pub fn login_checked(&mut self, name: &str, login: Option<Login>) -> Out {
        if let Some(login) = login {
            tracing::info!(client = %self.gates.client, user = %login.name, "authenticated");
            self.core.authenticated(login);
            return Out::read(vec![Answer::AuthOk.reply()], false);
        }
        self.auth_failures = self.auth_failures.saturating_add(1);
        let detail = format!(
            "user={} failures={}",
            crate::smtp::escaped(name),
            self.auth_failures
        );
        let who = Who {
            helo: self.core.helo.as_deref(),
            detail: Some(&detail),
            ..Who::client(self.gates.client)
        };
        let pause = Some(AUTH_FAIL_DELAY.saturating_mul(self.auth_failures));
        if self.auth_failures >= self.gates.server.max_auth_failures {
            let r = refusal::refused(&|r| self.gates.services.refused(r), &who, &Answer::TooManyAuthFailures);
            let mut out = Out::close(vec![r]);
            out.pause = pause;
            return out;
        }
        let r = refusal::refused(&|r| self.gates.services.refused(r), &who, &Answer::AuthFailed);
        let mut out = Out::read(vec![r], false);
        out.pause = pause;
        out
    }

    /// The spool writer for [`Then::Receive`] is open as message `id`;
    /// `unix_secs` is the time now. The 354, and the intake that takes the
    /// message.
    pub fn data_begin(&mut self, id: QueueId, unix_secs: u64) -> (Out, Intake) {
        let g = self.gates;
        let id_text = id.to_string();
        let helo = self.core.helo.clone().unwrap_or_default();
        let single_rcpt = self.receiving.as_mut().and_then(|r| {
            r.id = id;
            r.single_rcpt.take()
        });
        let received = Received {
            helo: &helo,
            client_ip: g.client,
            by: g.hostname,
            with: self.core.protocol(),
            id: &id_text,
            for_rcpt: single_rcpt.as_ref(),
            unix_secs,
        }
        .render();
        let ip = g.client.to_canonical();
        let normalize = g.server.bare_newline == BareNewline::Normalize
            || g.server
                .bare_newline_normalize_clients
                .iter()
                .any(|n| n.contains(&ip));
        let mut intake = Intake::new(
            received,
            format_date(unix_secs),
            message_id(id, g.hostname),
            if normalize {
                BareNewline::Normalize
            } else {
                BareNewline::Reject
            },
            g.max_message_size(),
        );
        if let Some(r) = self.receiving.as_mut()
            && (!g.filters.is_empty() || g.services.reads_messages())
        {
            let run = FilterRun::new(
                g.filters.clone(),
                std::mem::take(&mut r.verdict),
                g.client,
                self.core.login.as_ref().map(|l| l.name.clone()),
                r.envelope.from.address().cloned(),
                r.envelope.rcpts.iter().map(|x| x.addr.clone()).collect(),
            );
            intake = intake.with_filters(run);
        }
        (Out::read(vec![Answer::StartData.reply()], true), intake)
    }

    /// A message the limits let through: what the rules' verdict makes of
    /// it (`None`: commit it).
    fn filter_end(&mut self, intake: &Intake) -> Option<Out> {
        let stop = intake.rules_verdict()?.stop.clone()?;
        let r = self.receiving.take();
        let (id, from) = r.map_or((QueueId(0), ReversePath::Null), |r| (r.id, r.from));
        match stop {
            Stop::Reject(rule, reply) => {
                self.stats.refused = self.stats.refused.saturating_add(1);
                let who = Who {
                    helo: self.core.helo.as_deref(),
                    from: Some(Sender::path(&from)),
                    id: Some(id),
                    ..Who::client(self.gates.client)
                };
                let answer = Answer::FilterRejected { rule, reply };
                let reply = refusal::refused(&|r| self.gates.services.refused(r), &who, &answer);
                Some(Out::read(vec![reply], false))
            }
            Stop::Discard(rule) => {
                // Taken and dropped: the client sees what a queued message
                // gets, so a device does not retry it.
                tracing::info!(id = %id, from = %crate::smtp::escaped(from.as_str()), client = %self.gates.client, rule = %rule, size = intake.spooled(), "discarded by [[filter]]");
                self.stats.accepted = self.stats.accepted.saturating_add(1);
                Some(Out::read(vec![Answer::Queued { id }.reply()], false))
            }
        }
    }

    /// What to store with a message the rules let through: other
    /// recipients, held, a named route; `None` when it goes as it came.
    pub fn disposition(&self, intake: &Intake) -> Option<Disposition> {
        let v = intake.rules_verdict()?;
        if v.hold.is_none() && v.route.is_none() && v.redirect.is_none() {
            return None;
        }
        let r = self.receiving.as_ref()?;
        let envelope = v.redirect.as_ref().map(|to| {
            let mut e = r.envelope.clone();
            e.rcpts.clear();
            e.add_rcpts(
                to.iter()
                    .filter_map(|a| Address::parse(a).ok())
                    .map(Recipient::new),
            );
            e
        });
        let log_to: Vec<&str> = envelope
            .as_ref()
            .map(|e| e.rcpts.iter().map(|x| x.addr.as_str()).collect())
            .unwrap_or_default();
        tracing::info!(id = %r.id, client = %self.gates.client, rules = ?v.matched, held = v.hold.is_some(), route = v.route.as_deref().unwrap_or("-"), redirected = ?log_to, "[[filter]] disposition");
        Some(Disposition {
            envelope,
            hold: if v.hold.is_some() {
                Hold::Filter
            } else {
                Hold::None
            },
            route: v.route.clone(),
        })
    }

    /// The end of data: the refusal, or `None` to commit the message.
    pub fn data_end(&mut self, intake: &Intake) -> Option<Out> {
        // The SIZE we advertised leaves room for what we add; this holds
        // the line when the upstream's limit went down since (learned
        // from its EHLO): never 250 and then a bounce of our making.
        let upstream = self.gates.services.upstream_size_limit();
        let over_upstream = upstream.is_some_and(|up| intake.spooled() > up);
        let verdict = match intake.end() {
            Ok(()) if over_upstream => Err(Refused::TooBig),
            v => v,
        };
        let Err(why) = verdict else {
            return self.filter_end(intake);
        };
        let r = self.receiving.take();
        let (id, from) = r.map_or((QueueId(0), ReversePath::Null), |r| (r.id, r.from));
        self.stats.refused = self.stats.refused.saturating_add(1);
        let (answer, detail) = match why {
            Refused::BareNewline => (Answer::BareNewline, None),
            Refused::Nul => (Answer::NulInData, None),
            Refused::LineTooLong => (
                Answer::DataLineTooLong {
                    limit: MAX_DATA_LINE + 2,
                },
                None,
            ),
            Refused::HeaderTooBig => (
                Answer::HeaderTooBig {
                    limit: MAX_HEADER_SECTION,
                },
                None,
            ),
            Refused::TooManyHops => (
                Answer::TooManyHops,
                Some(format!("hops={} limit={MAX_HOPS}", intake.hops())),
            ),
            Refused::TooBig => {
                let limit = self.gates.max_message_size();
                let upstream = upstream.map_or_else(|| "-".to_string(), |u| u.to_string());
                (
                    Answer::MessageTooBig { limit },
                    Some(format!(
                        "size={} stored={} limit={limit} upstream={upstream}",
                        intake.size(),
                        intake.spooled()
                    )),
                )
            }
            Refused::SpoolFailed => (Answer::QueueFailed, None),
        };
        let who = Who {
            helo: self.core.helo.as_deref(),
            from: Some(Sender::path(&from)),
            id: Some(id),
            detail: detail.as_deref(),
            ..Who::client(self.gates.client)
        };
        let reply = refusal::refused(&|r| self.gates.services.refused(r), &who, &answer);
        Some(if why.ends_session() {
            Out::close(vec![reply])
        } else {
            Out::read(vec![reply], false)
        })
    }

    /// What the queue said to the commit of a message of `size` octets:
    /// `None` when it did not answer within data_end_timeout.
    pub fn data_committed(
        &mut self,
        result: Option<Result<QueueId, QueueError>>,
        size: u64,
    ) -> Out {
        let r = self.receiving.take();
        let (id, rcpts, from) = r.map_or((QueueId(0), 0, ReversePath::Null), |r| {
            (r.id, r.rcpts, r.from)
        });
        let client = self.gates.client;
        let mut detail = None;
        let answer = match result {
            None => {
                // A message the writer has not reached yet is dropped (it
                // sees nobody waits); one already written, its sync stuck,
                // becomes durable later, and the client's retry makes a
                // duplicate: better than a client that times out unsure, or
                // a message lost.
                tracing::error!(id = %id, client = %client, limit = %self.gates.server.data_end_timeout, "queue storage did not confirm the message within data_end_timeout; answered 451 (if it was already written it will still be delivered, and the client's retry then twice); check the storage device");
                Answer::StorageTooSlow
            }
            Some(Ok(id)) => {
                tracing::info!(id = %id, from = %crate::smtp::escaped(from.as_str()), rcpts, size, client = %client, "queued");
                self.stats.accepted = self.stats.accepted.saturating_add(1);
                Answer::Queued { id }
            }
            Some(Err(e)) => {
                detail = Some(format!("error={e}"));
                Answer::queue_error(&e)
            }
        };
        if matches!(answer, Answer::Queued { .. }) {
            return Out::read(vec![answer.reply()], false);
        }
        self.stats.refused = self.stats.refused.saturating_add(1);
        let who = Who {
            helo: self.core.helo.as_deref(),
            from: Some(Sender::path(&from)),
            id: Some(id),
            detail: detail.as_deref(),
            ..Who::client(client)
        };
        Out::read(
            vec![refusal::refused(&|r| self.gates.services.refused(r), &who, &answer)],
            false,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{self, ParseOptions};
    use crate::smtp::reply::EnhancedStatus as S;
    use proptest::prelude::*;
    use std::path::Path;

    /// The daemon as the session sees it, without a disk.
    #[derive(Debug, Default)]
    pub(crate) struct Fake {
        /// queue_room answers this.
        pub(crate) full: bool,
        /// The upstream SIZE (0: none known); it may change mid-session.
        pub(crate) upstream: std::sync::atomic::AtomicU64,
        /// `[aliases]`: exact addresses.
        pub(crate) aliases: Vec<(String, String)>,
        /// The per-client rates are used up.
        pub(crate) over_rate: bool,
        /// Aliases from a config, after `aliases`.
        pub(crate) outbound: Option<crate::policy::Outbound>,
    }

    impl Services for Fake {
        fn queue_room(&self, _size: u64) -> Result<(), QueueError> {
            if self.full {
                Err(QueueError::Full)
            } else {
                Ok(())
            }
        }
        fn note_message(&self, _client: IpAddr) -> bool {
            !self.over_rate
        }
        fn note_recipient(&self, _client: IpAddr) -> bool {
            !self.over_rate
        }
        fn qualify(&self, addr: &Address) -> Option<Address> {
            self.outbound.as_ref()?.qualify(addr)
        }
        fn alias(&self, rcpt: &Address) -> Option<Address> {
            self.aliases
                .iter()
                .find(|(from, _)| from == rcpt.as_str())
                .and_then(|(_, to)| Address::parse(to).ok())
                .or_else(|| self.outbound.as_ref()?.alias(rcpt).cloned())
        }
        fn upstream_size_limit(&self) -> Option<u64> {
            Some(self.upstream.load(std::sync::atomic::Ordering::Relaxed)).filter(|&n| n > 0)
        }
    }

    pub(crate) struct World {
        cfg: config::Config,
        policy: Policy,
        pub(crate) fake: Fake,
        rules: Rules,
    }

    pub(crate) fn world() -> World {
        world_with("")
    }

    /// A world with extra `[server]` keys.
    pub(crate) fn world_with(server: &str) -> World {
        world_full(server, "")
    }

    /// A world with extra `[server]` keys and tables after the rest.
    pub(crate) fn world_full(server: &str, tail: &str) -> World {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:2525\"]\n{server}[queue]\ndir = \"q\"\n\
             [upstream]\nkind = \"maildir\"\ndir = \"out\"\n{tail}"
        );
        let opts = ParseOptions {
            skip_file_checks: true,
            default_hostname: Some("relay.test".into()),
        };
        let cfg = config::parse_with(&text, Path::new("t.toml"), &opts).unwrap();
        World {
            policy: Policy::new(&cfg.policy),
            rules: Rules::new(&cfg.filters),
            cfg,
            fake: Fake::default(),
        }
    }

    pub(crate) fn gates(w: &World) -> Gates<'_> {
        Gates {
            hostname: "relay.test",
            server: &w.cfg.server,
            policy: &w.policy,
            services: &w.fake,
            client: "127.0.0.1".parse().unwrap(),
            filters: &w.rules,
        }
    }

    fn command() -> impl Strategy<Value = Command> {
        let addr = |s: &str| Address::parse(s).unwrap();
        prop_oneof![
            Just(Command::Ehlo("dev".into())),
            Just(Command::Helo("dev".into())),
            Just(Command::Mail {
                from: Some(addr("a@lan.test")),
                params: MailParams::default()
            }),
            Just(Command::Mail {
                from: None,
                params: MailParams::default()
            }),
            Just(Command::Rcpt {
                to: addr("b@example.test"),
                params: RcptParams::default()
            }),
            Just(Command::Data),
            Just(Command::Rset),
            Just(Command::Noop),
            Just(Command::Vrfy("x".into())),
            Just(Command::Help),
            Just(Command::StartTls),
            Just(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: None
            }),
        ]
    }

    /// The state table, written out independently of the code: may this
    /// command be accepted in this phase?
    fn in_order(phase: &Phase, cmd: &Command) -> bool {
        match cmd {
            Command::Mail { .. } => *phase == Phase::Ready,
            Command::Rcpt { .. } => matches!(phase, Phase::Mail { .. } | Phase::Rcpt { .. }),
            Command::Data => matches!(phase, Phase::Rcpt { .. }),
            // Not offered here (no TLS, no users): 502, never 503.
            Command::StartTls | Command::Auth { .. } => false,
            _ => true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn out_of_order_commands_get_503_and_change_nothing(
            cmds in proptest::collection::vec(command(), 1..40)
        ) {
            let w = world();
            let g = gates(&w);
            let mut core = SessionCore::new(ClientFacts::allowed_plain(), false);
            for cmd in cmds {
                let before = core.clone();
                let ok = in_order(core.phase(), &cmd);
                let is_tls_or_auth = matches!(cmd, Command::StartTls | Command::Auth { .. });
                let step = core.command(cmd.clone(), &g);
                match step {
                    Step::Reply(r) if r.code == 503 => {
                        prop_assert!(!ok, "{cmd:?} in {:?} got 503", before.phase());
                        prop_assert_eq!(&core, &before, "503 changed the state");
                    }
                    Step::Reply(r) if is_tls_or_auth => {
                        prop_assert_eq!(r.code, 502);
                        prop_assert_eq!(&core, &before);
                    }
                    Step::Reply(r) => {
                        prop_assert!(ok, "{cmd:?} in {:?} got {}", before.phase(), r.code);
                        prop_assert!(r.code < 400, "{cmd:?}: {}", r.code);
                    }
                    Step::Data(_) => {
                        prop_assert!(ok);
                        // The driver resets after the message.
                        core.reset();
                    }
                    Step::Close(_) | Step::StartTls | Step::Auth { .. } => {
                        prop_assert!(false, "unexpected step for {:?}", cmd);
                    }
                }
            }
        }
    }

    #[test]
    fn a_second_mail_is_refused_and_keeps_the_first_sender() {
        let w = world();
        let g = gates(&w);
        let mut core = SessionCore::default();
        core.command(Command::Ehlo("d".into()), &g);
        let a = Address::parse("first@lan.test").unwrap();
        core.command(
            Command::Mail {
                from: Some(a.clone()),
                params: MailParams::default(),
            },
            &g,
        );
        let Step::Reply(r) = core.command(
            Command::Mail {
                from: Some(Address::parse("second@lan.test").unwrap()),
                params: MailParams::default(),
            },
            &g,
        ) else {
            panic!()
        };
        assert_eq!(r.code, 503);
        assert!(matches!(core.phase(), Phase::Mail { from: Some(f), .. } if *f == a));
    }

    #[test]
    fn recipients_aliased_to_one_address_are_in_the_envelope_once() {
        let mut w = world();
        let text = "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n\
                    [upstream]\nkind = \"maildir\"\ndir = \"out\"\n\
                    [aliases]\nroot = \"ops@example.test\"\nadmin = \"ops@example.test\"\n";
        let opts = ParseOptions {
            skip_file_checks: true,
            default_hostname: Some("relay.test".into()),
        };
        let cfg = config::parse_with(text, Path::new("t.toml"), &opts).unwrap();
        w.fake.outbound = Some(crate::policy::Outbound::from_config(&cfg));
        let g = gates(&w);
        let mut core = SessionCore::default();
        core.command(Command::Ehlo("d".into()), &g);
        core.command(
            Command::Mail {
                from: None,
                params: MailParams::default(),
            },
            &g,
        );
        for to in [
            "root",
            "admin@localhost",
            "ops@example.test",
            "OPS@Example.Test",
            "b@x.test",
        ] {
            let Step::Reply(r) = core.command(
                Command::Rcpt {
                    to: Address::parse(to).unwrap(),
                    params: RcptParams::default(),
                },
                &g,
            ) else {
                panic!()
            };
            // Every RCPT is accepted; the duplicates just add nothing.
            assert_eq!(r.code, 250, "{to}");
        }
        let Step::Data(env) = core.command(Command::Data, &g) else {
            panic!("DATA should start")
        };
        let rcpts: Vec<&str> = env.rcpts.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(rcpts, ["ops@example.test", "OPS@Example.Test", "b@x.test"]);
    }

    #[test]
    fn outside_client_without_login_gets_550_at_rcpt() {
        let w = world();
        let g = gates(&w);
        let facts = ClientFacts {
            allowed: false,
            starttls: false,
            plain_auth: true,
            users: true,
            relay_authenticated: true,
        };
        let mut core = SessionCore::new(facts, false);
        core.command(Command::Ehlo("d".into()), &g);
        core.command(
            Command::Mail {
                from: None,
                params: MailParams::default(),
            },
            &g,
        );
        let Step::Reply(r) = core.command(
            Command::Rcpt {
                to: Address::parse("x@example.test").unwrap(),
                params: RcptParams::default(),
            },
            &g,
        ) else {
            panic!()
        };
        assert_eq!((r.code, r.status), (550, Some(S::new(5, 7, 1))));
    }

    // The line-level rules, with the fake: no disk, no sockets.

    /// The wire form of an Out's replies.
    fn wire(out: &Out) -> String {
        let mut b = Vec::new();
        for r in &out.replies {
            r.write_to(&mut b);
        }
        String::from_utf8(b).unwrap()
    }

    fn say(s: &mut Session, line: &str) -> Out {
        s.line(Line::Text(line.as_bytes().to_vec()), false)
    }

    fn users_facts() -> ClientFacts {
        ClientFacts {
            plain_auth: true,
            users: true,
            ..ClientFacts::allowed_plain()
        }
    }

    #[test]
    fn a_full_queue_is_452_at_mail() {
        let mut w = world();
        w.fake.full = true;
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        say(&mut s, "EHLO dev");
        let out = say(&mut s, "MAIL FROM:<a@lan.test>");
        assert!(wire(&out).starts_with("452 4.3.1 "), "{}", wire(&out));
        assert!(!s.in_transaction());
    }

    #[test]
    fn aliases_and_rates_come_from_the_services() {
        let mut w = world();
        w.fake
            .aliases
            .push(("root".into(), "ops@example.test".into()));
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        say(&mut s, "EHLO dev");
        say(&mut s, "MAIL FROM:<a@lan.test>");
        assert!(s.in_transaction());
        assert!(wire(&say(&mut s, "RCPT TO:<root>")).starts_with("250 2.1.5 "));
        let Then::Receive(msg) = say(&mut s, "DATA").then else {
            panic!("no DATA")
        };
        let rcpts: Vec<&str> = msg.rcpts.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(rcpts, ["ops@example.test"]);
        // A client in allow_clients is not held to the rates by default…
        w.fake.over_rate = true;
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        say(&mut s, "EHLO dev");
        assert!(wire(&say(&mut s, "MAIL FROM:<a@lan.test>")).starts_with("250 "));
        assert!(wire(&say(&mut s, "RCPT TO:<root>")).starts_with("250 "));
        // …and is with limit_trusted_clients.
        let mut w = world_with("limit_trusted_clients = true\n");
        w.fake.over_rate = true;
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        say(&mut s, "EHLO dev");
        assert!(wire(&say(&mut s, "MAIL FROM:<a@lan.test>")).starts_with("450 4.7.1 "));
    }

    #[test]
    fn dsn_parameters_reach_the_envelope_and_need_ehlo() {
        let mut w = world();
        w.fake
            .aliases
            .push(("root".into(), "ops@example.test".into()));
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        say(&mut s, "EHLO dev");
        say(&mut s, "MAIL FROM:<a@lan.test> RET=HDRS ENVID=e+2B1");
        let r = say(
            &mut s,
            "RCPT TO:<b@example.test> NOTIFY=SUCCESS ORCPT=rfc822;b+40x",
        );
        assert!(wire(&r).starts_with("250 "), "{}", wire(&r));
        // An alias keeps the address the client gave as the original one.
        say(&mut s, "RCPT TO:<root> NOTIFY=NEVER");
        let Then::Receive(env) = say(&mut s, "DATA").then else {
            panic!("no DATA")
        };
        assert_eq!(env.ret, Some(crate::smtp::Ret::Hdrs));
        assert_eq!(env.envid.as_deref(), Some("e+2B1"));
        assert_eq!(env.rcpts[0].notify, crate::smtp::Notify::SUCCESS);
        assert_eq!(env.rcpts[0].orcpt.as_deref(), Some("rfc822;b+40x"));
        assert_eq!(env.rcpts[1].addr.as_str(), "ops@example.test");
        assert_eq!(env.rcpts[1].notify, crate::smtp::Notify::NEVER);
        assert_eq!(env.rcpts[1].orcpt.as_deref(), Some("rfc822;root"));
        // After HELO, DSN parameters are refused like any other.
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        say(&mut s, "HELO dev");
        assert!(wire(&say(&mut s, "MAIL FROM:<a@lan.test> RET=FULL")).starts_with("555 "));
        say(&mut s, "MAIL FROM:<a@lan.test>");
        assert!(wire(&say(&mut s, "RCPT TO:<b@x.test> NOTIFY=NEVER")).starts_with("555 "));
    }

    #[test]
    fn pipelining_without_ehlo_is_refused_and_closes() {
        let w = world();
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        let out = s.line(Line::Text(b"HELO dev".to_vec()), true);
        assert!(wire(&out).starts_with("554 5.5.0 "), "{}", wire(&out));
        assert!(matches!(out.then, Then::Close));
    }

    #[test]
    fn errors_and_idle_commands_are_counted_to_421() {
        let w = world();
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        for _ in 1..MAX_ERRORS {
            assert!(matches!(say(&mut s, "BOGUS").then, Then::Read));
        }
        let out = say(&mut s, "BOGUS");
        assert!(wire(&out).starts_with("500 5.5.1 "), "{}", wire(&out));
        assert!(wire(&out).contains("\r\n421 4.7.0 "), "{}", wire(&out));
        assert!(matches!(out.then, Then::Close));
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        let mut last = None;
        for _ in 0..=MAX_JUNK_COMMANDS {
            last = Some(say(&mut s, "NOOP"));
        }
        let out = last.unwrap();
        assert!(wire(&out).starts_with("421 4.7.0 "), "{}", wire(&out));
        assert!(matches!(out.then, Then::Close));
    }

    #[test]
    fn starttls_with_commands_behind_it_is_refused() {
        let w = world();
        let facts = ClientFacts {
            starttls: true,
            ..ClientFacts::allowed_plain()
        };
        let mut s = Session::new(gates(&w), facts, false);
        say(&mut s, "EHLO dev");
        let out = s.line(Line::Text(b"STARTTLS".to_vec()), true);
        assert!(wire(&out).starts_with("554 5.5.0 "), "{}", wire(&out));
        assert!(matches!(out.then, Then::Close));
        let mut s = Session::new(gates(&w), facts, false);
        say(&mut s, "EHLO dev");
        let out = say(&mut s, "STARTTLS");
        assert_eq!(wire(&out), "220 2.0.0 Ready to start TLS\r\n");
        assert!(matches!(out.then, Then::StartTls));
    }

    #[test]
    fn auth_plain_without_an_initial_response_gets_334_and_a_space() {
        let w = world();
        let mut s = Session::new(gates(&w), users_facts(), false);
        say(&mut s, "EHLO dev");
        let out = say(&mut s, "AUTH PLAIN");
        // RFC 4954 §4: "334" SP, even before an empty challenge.
        assert_eq!(wire(&out), "334 \r\n");
        assert!(out.flush);
    }

    #[test]
    fn auth_is_a_phase_and_failures_are_slowed_then_421() {
        let w = world();
        let mut s = Session::new(gates(&w), users_facts(), false);
        say(&mut s, "EHLO dev");
        let out = say(&mut s, "AUTH LOGIN");
        assert!(wire(&out).starts_with("334 VXNlcm5hbWU6"), "{}", wire(&out));
        assert!(out.flush);
        say(&mut s, "ZGV2");
        let Then::CheckLogin(creds) = say(&mut s, "cHc=").then else {
            panic!("no credentials")
        };
        assert_eq!(
            (creds.name.as_str(), &creds.password[..]),
            ("dev", &b"pw"[..])
        );
        let out = s.login_checked(&creds.name, None);
        assert_eq!(out.pause, Some(AUTH_FAIL_DELAY));
        assert!(wire(&out).starts_with("535 5.7.8 "), "{}", wire(&out));
        // A response that is not `authzid NUL authcid NUL password` is a
        // failure too; the third (max_auth_failures) ends the session.
        let out = say(&mut s, "AUTH PLAIN eHg=");
        assert_eq!(out.pause, Some(AUTH_FAIL_DELAY * 2));
        assert!(wire(&out).starts_with("535 5.7.8 "), "{}", wire(&out));
        let out = say(&mut s, "AUTH PLAIN eHg=");
        assert_eq!(out.pause, Some(AUTH_FAIL_DELAY * 3));
        assert!(wire(&out).starts_with("421 4.7.0 "), "{}", wire(&out));
        assert!(matches!(out.then, Then::Close));
    }

    #[test]
    fn a_message_goes_through_the_data_phase() {
        let w = world();
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        say(&mut s, "EHLO dev");
        say(&mut s, "MAIL FROM:<a@lan.test>");
        say(&mut s, "RCPT TO:<b@example.test>");
        let Then::Receive(_) = say(&mut s, "DATA").then else {
            panic!("no DATA")
        };
        assert!(!s.in_transaction());
        let (out, mut intake) = s.data_begin(QueueId(0x1F), 0);
        assert_eq!(wire(&out), "354 End data with <CR><LF>.<CR><LF>\r\n");
        let fed = intake.feed(b"Subject: t\r\n\r\nhi\r\n.\r\n");
        let spooled = String::from_utf8(fed.spool.to_vec()).unwrap();
        assert!(fed.finished);
        assert!(
            spooled.starts_with("Received: from dev ([127.0.0.1])"),
            "{spooled}"
        );
        assert!(spooled.contains("\r\n\tfor <b@example.test>;"), "{spooled}");
        assert!(
            spooled.contains("Message-ID: <1F.postern@relay.test>"),
            "{spooled}"
        );
        assert!(s.data_end(&intake).is_none());
        let out = s.data_committed(Some(Ok(QueueId(0x1F))), 10);
        assert_eq!(wire(&out), "250 2.0.0 Ok: queued as 1F\r\n");
        assert_eq!(s.stats.accepted, 1);
        let out = s.data_committed(None, 10);
        assert!(wire(&out).starts_with("451 4.3.0 "), "{}", wire(&out));
        assert_eq!(s.stats.refused, 1);
    }

    /// A message of `n` octets as the decoder counts them (the final CRLF
    /// included), without Date or Message-ID, and its terminator.
    fn message_of(n: usize) -> Vec<u8> {
        let mut m = b"Subject: size\r\n\r\n".to_vec();
        let rest = n - m.len() - 2;
        for _ in 0..rest / 902 {
            m.extend(std::iter::repeat_n(b'x', 900));
            m.extend_from_slice(b"\r\n");
        }
        m.extend(std::iter::repeat_n(b'x', rest % 902));
        m.extend_from_slice(b"\r\n.\r\n");
        m
    }

    /// EHLO, one message of `n` octets: the SIZE advertised, and the end
    /// of data (None: committed) with the size as it would be stored.
    fn send_sized(w: &World, n: usize) -> (u64, Option<String>, u64) {
        let mut s = Session::new(gates(w), ClientFacts::allowed_plain(), false);
        let ehlo = wire(&say(&mut s, "EHLO dev"));
        let size = ehlo
            .lines()
            .find_map(|l| l.strip_prefix("250-SIZE "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        say(&mut s, "MAIL FROM:<a@lan.test>");
        say(&mut s, "RCPT TO:<b@example.test>");
        let Then::Receive(_) = say(&mut s, "DATA").then else {
            panic!("no DATA")
        };
        let (_, mut intake) = s.data_begin(QueueId(u64::MAX), 4_102_444_800);
        let fed = intake.feed(&message_of(n));
        assert!(fed.finished);
        assert_eq!(intake.size(), u64::try_from(n).unwrap());
        let end = s.data_end(&intake).map(|out| wire(&out));
        (size, end, intake.spooled())
    }

    #[test]
    fn a_message_at_the_advertised_size_still_fits_the_upstream_with_our_fields() {
        let w = world();
        let upstream = 102_400;
        w.fake
            .upstream
            .store(upstream, std::sync::atomic::Ordering::Relaxed);
        let (size, end, stored) = send_sized(&w, 1000);
        // Room for Received, Date and Message-ID under the upstream's limit.
        assert_eq!(size, upstream - added_bound("relay.test"));
        assert_eq!(end, None);
        let n = usize::try_from(size).unwrap();
        let (_, end, stored_at_limit) = send_sized(&w, n);
        assert_eq!(end, None, "exactly at SIZE is accepted");
        assert!(
            stored_at_limit <= upstream,
            "{stored_at_limit} > {upstream}"
        );
        assert!(stored < stored_at_limit);
        let (_, end, _) = send_sized(&w, n + 1);
        let end = end.unwrap();
        assert!(end.starts_with("552 5.3.4 "), "{end}");
    }

    #[test]
    fn a_message_over_an_upstream_limit_learned_mid_session_is_552_not_a_bounce() {
        let w = world();
        let mut s = Session::new(gates(&w), ClientFacts::allowed_plain(), false);
        say(&mut s, "EHLO dev");
        say(&mut s, "MAIL FROM:<a@lan.test>");
        say(&mut s, "RCPT TO:<b@example.test>");
        say(&mut s, "DATA");
        let (_, mut intake) = s.data_begin(QueueId(1), 0);
        assert!(intake.feed(&message_of(5000)).finished);
        // A delivery learns a smaller SIZE meanwhile.
        w.fake
            .upstream
            .store(4000, std::sync::atomic::Ordering::Relaxed);
        let end = wire(&s.data_end(&intake).unwrap());
        assert!(end.starts_with("552 5.3.4 "), "{end}");
        assert_eq!(s.stats.refused, 1);
    }
}
