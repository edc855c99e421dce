//! The command state machine of an inbound session, and what it consults:
//! [`SessionCore`] takes one command and gives a reply (or the instruction
//! to receive data, start TLS, run AUTH, or close). Every command that
//! arrives out of sequence gets 503 and changes nothing (a property test
//! drives random sequences through it). Also the session's bounds, the
//! facts about the client, and the [`Services`] trait through which the
//! queue's room, the rates and the aliases are reached (so tests need no
//! disk). [`super::session`] wraps it with what is about lines rather than
//! commands.
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
//! Uses `smtp` (commands, addresses), `policy`, `auth` (who logged in),
//! `config`, `filter` and `queue` (errors); in `server`, the replies, the
//! reason words and the refusal log line. No I/O.

use std::net::IpAddr;
use std::time::Duration;

use super::intake::added_bound;
use super::refusal::{self, Reason, Sender, Who};
use super::reply::Answer;
use crate::auth::Login;
use crate::config::ServerConfig;
use crate::filter::{Facts, RcptDecision, Rules, Stage, Stop, Verdict};
use crate::policy::Policy;
use crate::queue::QueueError;
use crate::smtp::{Address, Command, Envelope, MailParams, RcptParams, Recipient, Reply, xtext};

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
    /// The reply for `answer`: when it is a refusal, logged with `who` and
    /// counted here ([`refusal::refused`]).
    fn refuse(&self, who: &Who<'_>, answer: &Answer) -> Reply {
        refusal::refused(&|r| self.refused(r), who, answer)
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
    pub(super) connect_verdict: Verdict,
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
    pub(super) fn sender(&self) -> Option<Sender<'_>> {
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
        Step::Reply(g.services.refuse(&who, &answer))
    }

    /// [`SessionCore::answer`] with what the session knows.
    fn say(&self, g: &Gates, answer: Answer) -> Step {
        self.answer(g, answer, None, None)
    }

    /// What the rules decided for the transaction (DATA takes it over).
    pub(super) fn take_verdict(&mut self) -> Verdict {
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
        let so_far: Vec<Address> = rcpts.iter().map(|r| r.addr.clone()).collect();
        let f = Facts {
            client: g.client,
            user: self.login.as_ref().map(|l| l.name.as_str()),
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
                let orcpt = original_rcpt(new.orcpt.as_deref(), to);
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
            Some(real) => (real, original_rcpt(rparams.orcpt.as_deref(), &to)),
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

/// The recipient's original address for reports (RFC 3461 ORCPT): the one
/// the client named with ORCPT=, else `addr` as the client gave it, before
/// an alias or a filter replaced it.
fn original_rcpt(given: Option<&str>, addr: &Address) -> Option<String> {
    Some(given.map_or_else(
        || format!("rfc822;{}", xtext::encode(addr.as_str().as_bytes())),
        str::to_string,
    ))
}
