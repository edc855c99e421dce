//! The SMTP session state machine, without I/O: a command goes in, a reply
//! (or the instruction to receive data, start TLS, run AUTH, or close) comes
//! out. Every command that arrives out of sequence gets 503 and changes
//! nothing (a property test drives random sequences through it).
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

use super::reply::Answer;
use crate::auth::Login;
use crate::config::ServerConfig;
use crate::policy::{Outbound, Policy};
use crate::queue::Queue;
use crate::smtp::{Address, BodyType, Command, Envelope, MailParams, Recipient, Reply};

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
    /// Aliases and the upstream size limit.
    pub outbound: Option<&'a Outbound>,
    /// Per-client rates; `None` in tests that do not need them.
    pub limits: Option<&'a super::limits::ClientLimits>,
    /// The client's address, for the per-client rates.
    pub client: std::net::IpAddr,
    /// Listener TLS, for STARTTLS.
    pub tls: Option<&'a std::sync::Arc<rustls::ServerConfig>>,
    /// `[[user]]` accounts, for AUTH.
    pub users: &'a crate::auth::Users,
}

impl Gates<'_> {
    /// The size limit to advertise and enforce: `[server] max_message_size`,
    /// or the smallest upstream limit of the routes when that is smaller
    /// (devices get 552 at MAIL instead of a bounce later).
    pub fn max_message_size(&self) -> u64 {
        let own = self.server.max_message_size.bytes;
        self.outbound
            .and_then(Outbound::max_message_size)
            .map_or(own, |up| up.min(own))
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

    /// Forget the transaction (RSET, EHLO, after DATA).
    pub fn reset(&mut self) {
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

    fn starttls(&mut self) -> Step {
        if self.tls {
            return Step::Reply(Answer::TlsAlreadyActive.reply());
        }
        if !self.facts.starttls {
            return Step::Reply(Answer::NotImplemented.reply());
        }
        match self.phase {
            Phase::Ready if self.esmtp => Step::StartTls,
            Phase::Mail { .. } | Phase::Rcpt { .. } => {
                Step::Reply(Answer::StartTlsInTransaction.reply())
            }
            _ => Step::Reply(Answer::SendEhloFirst.reply()),
        }
    }

    fn auth(&mut self, mechanism: String, initial: Option<String>) -> Step {
        if !self.facts.users {
            return Step::Reply(Answer::NotImplemented.reply());
        }
        if self.login.is_some() {
            return Step::Reply(Answer::AlreadyAuthenticated.reply());
        }
        match self.phase {
            Phase::Ready if self.esmtp => {}
            Phase::Mail { .. } | Phase::Rcpt { .. } => {
                return Step::Reply(Answer::AuthInTransaction.reply());
            }
            _ => return Step::Reply(Answer::SendEhloFirst.reply()),
        }
        if !self.tls && !self.facts.plain_auth {
            return Step::Reply(Answer::EncryptionRequired.reply());
        }
        if mechanism != "PLAIN" && mechanism != "LOGIN" {
            return Step::Reply(Answer::UnknownAuthMechanism.reply());
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
            Command::Rcpt { to } => self.rcpt(to, g),
            Command::Data => match &self.phase {
                Phase::Rcpt {
                    from,
                    params,
                    rcpts,
                } => {
                    let mut envelope = Envelope::new(from.clone().into(), params);
                    // Each address once, however many RCPTs (aliases) led to it.
                    envelope.add_rcpts(rcpts.iter().cloned().map(Recipient::new));
                    Step::Data(envelope)
                }
                Phase::Mail { .. } => Step::Reply(Answer::NeedRcpt.reply()),
                _ => Step::Reply(Answer::NeedMail.reply()),
            },
            Command::Rset => {
                self.reset();
                Step::Reply(Answer::Ok.reply())
            }
            Command::Noop => Step::Reply(Answer::Ok.reply()),
            Command::Quit => Step::Close(Answer::Bye.reply()),
            Command::Vrfy(_) => Step::Reply(Answer::Vrfy.reply()),
            Command::Help => Step::Reply(Answer::Help.reply()),
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
        }
    }

    fn mail(&mut self, from: Option<Address>, params: MailParams, g: &Gates) -> Step {
        match self.phase {
            Phase::Connected => {
                return Step::Reply(Answer::SendHeloFirst.reply());
            }
            Phase::Mail { .. } | Phase::Rcpt { .. } => {
                return Step::Reply(Answer::NestedMail.reply());
            }
            Phase::Ready => {}
        }
        if !self.esmtp
            && (params.size.is_some() || params.smtputf8 || params.body != BodyType::SevenBit)
        {
            return Step::Reply(Answer::ParamsNeedEhlo.reply());
        }
        let limit = g.max_message_size();
        if let Some(size) = params.size
            && size > limit
        {
            return Step::Reply(Answer::MessageTooBig { limit }.reply());
        }
        if let Some(a) = &from
            && a.is_utf8()
            && !params.smtputf8
        {
            return Step::Reply(Answer::Utf8SenderNeedsSmtputf8.reply());
        }
        if let Err(e) = g.queue.check_room(params.size.unwrap_or(0)) {
            return Step::Reply(Answer::queue_error(&e).reply());
        }
        if let Err(refusal) = g.policy.check_sender(from.as_ref()) {
            return Step::Reply(Answer::refused(&refusal, g.client).reply());
        }
        if let Some(login) = &self.login
            && !login.allowed_senders.is_empty()
            && !from
                .as_ref()
                .is_some_and(|a| login.allowed_senders.iter().any(|p| p.matches(a)))
        {
            return Step::Reply(Answer::SenderNotOwned.reply());
        }
        if let Some(limits) = g.limits
            && !limits.note_message(g.client)
        {
            return Step::Reply(Answer::MessageRate.reply());
        }
        self.phase = Phase::Mail { from, params };
        Step::Reply(Answer::SenderOk.reply())
    }

    fn rcpt(&mut self, to: Address, g: &Gates) -> Step {
        // [aliases] map root, admin, *@lan… to real addresses,
        // before policy sees the recipient.
        let to = match g.outbound.and_then(|o| o.alias(&to)) {
            Some(target) => target.clone(),
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
                return Step::Reply(Answer::NeedMail.reply());
            }
        };
        let may_relay =
            self.facts.allowed || (self.login.is_some() && self.facts.relay_authenticated);
        let answer = if !may_relay {
            Answer::RelayDenied
        } else if rcpts.len() >= g.server.max_recipients {
            Answer::TooManyRecipients
        } else if g.limits.is_some_and(|l| !l.note_recipient(g.client)) {
            Answer::RecipientRate
        } else if to.is_utf8() && !params.smtputf8 {
            Answer::Utf8RecipientNeedsSmtputf8
        } else if let Err(refusal) = g.policy.check_recipient(&to) {
            Answer::refused(&refusal, g.client)
        } else {
            rcpts.push(to);
            Answer::RecipientOk
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
        Step::Reply(answer.reply())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{self, ParseOptions};
    use crate::queue::Limits;
    use crate::smtp::reply::EnhancedStatus as S;
    use proptest::prelude::*;
    use std::path::Path;
    use std::time::Duration;

    pub(crate) struct World {
        cfg: config::Config,
        policy: Policy,
        pub(crate) queue: Queue,
        users: crate::auth::Users,
        _dir: tempfile::TempDir,
    }

    pub(crate) fn world() -> World {
        world_with("", crate::queue::StoreOptions::default())
    }

    /// A world with extra `[server]` keys and its queue on `store`.
    pub(crate) fn world_with(server: &str, store: crate::queue::StoreOptions) -> World {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:2525\"]\n{server}[queue]\ndir = \"q\"\n\
             [upstream]\nkind = \"maildir\"\ndir = \"out\"\n"
        );
        let opts = ParseOptions {
            skip_file_checks: true,
            default_hostname: Some("relay.test".into()),
        };
        let cfg = config::parse_with(&text, Path::new("t.toml"), &opts).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_messages: 100,
            max_age: Duration::from_secs(3600),
            retry_intervals: vec![Duration::from_secs(60)],
        };
        let (queue, _) = Queue::open_with(dir.path(), limits, store).unwrap();
        World {
            policy: Policy::new(&cfg.policy),
            cfg,
            queue,
            users: crate::auth::Users::default(),
            _dir: dir,
        }
    }

    pub(crate) fn gates(w: &World) -> Gates<'_> {
        Gates {
            hostname: "relay.test",
            server: &w.cfg.server,
            policy: &w.policy,
            queue: &w.queue,
            outbound: None,
            limits: None,
            client: "127.0.0.1".parse().unwrap(),
            tls: None,
            users: &w.users,
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
                to: addr("b@example.test")
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
        let w = world();
        let text = "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n\
                    [upstream]\nkind = \"maildir\"\ndir = \"out\"\n\
                    [aliases]\nroot = \"ops@example.test\"\nadmin = \"ops@example.test\"\n";
        let opts = ParseOptions {
            skip_file_checks: true,
            default_hostname: Some("relay.test".into()),
        };
        let cfg = config::parse_with(text, Path::new("t.toml"), &opts).unwrap();
        let outbound = Outbound::from_config(&cfg);
        let g = Gates {
            outbound: Some(&outbound),
            ..gates(&w)
        };
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
            },
            &g,
        ) else {
            panic!()
        };
        assert_eq!((r.code, r.status), (550, Some(S::new(5, 7, 1))));
    }
}
