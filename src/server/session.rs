//! The session layer of an inbound connection: every protocol rule, and no
//! I/O. Lines go in ([`Session::line`]), replies and the next thing to do
//! come out ([`Out`]); AUTH is a phase of it (the exchange in
//! [`super::sasl`]), and so is DATA (the intake in [`super::intake`]). The
//! queue's room, the per-client rates and the aliases are reached through
//! the [`Services`] trait, so the tests need no disk.
//!
//! Inside, [`SessionCore`] ([`super::state`]) is the command state machine;
//! [`Session`] wraps it with what is about lines rather than commands: the
//! line and error limits, pipelining, idle commands, the AUTH and DATA
//! phases.
//!
//! Uses `smtp` (commands, addresses, the header lines), `policy`, `auth`
//! (who logged in), `config` and `queue` (the message it hands over, the
//! queue's errors and ids); the rest of `server` for the state machine,
//! replies, SASL and the intake.

use std::time::Duration;

use super::connection::Line;
use super::intake::{
    FilterRun, Intake, MAX_DATA_LINE, MAX_HEADER_SECTION, MAX_HOPS, Refused, message_id,
};
use super::refusal::{Sender, Who};
use super::reply::Answer;
use super::sasl::{self, Credentials, Exchange, Progress};
use crate::auth::Login;
use crate::filter::{Facts, Stage, Stop, Verdict};
use crate::queue::{Hold, QueueError, QueueId};
use crate::smtp::header::{Received, format_date};
use crate::smtp::{
    Address, BareNewline, Command, Envelope, Recipient, Reply, ReversePath, command,
};

pub use super::state::{
    AUTH_FAIL_DELAY, ClientFacts, Gates, MAX_ERRORS, MAX_JUNK_COMMANDS, Phase, Services,
    SessionCore, Step,
};

/// What the rules change about a message before it is committed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
        self.gates.services.refuse(&who, &answer)
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
            let r = self
                .gates
                .services
                .refuse(&who, &Answer::TooManyAuthFailures);
            let mut out = Out::close(vec![r]);
            out.pause = pause;
            return out;
        }
        let r = self.gates.services.refuse(&who, &Answer::AuthFailed);
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
                let reply = self.gates.services.refuse(&who, &answer);
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
        let reply = self.gates.services.refuse(&who, &answer);
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
        Out::read(vec![self.gates.services.refuse(&who, &answer)], false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{self, ParseOptions};
    use crate::filter::Rules;
    use crate::policy::Policy;
    use crate::server::intake::added_bound;
    use crate::smtp::reply::EnhancedStatus as S;
    use crate::smtp::{MailParams, RcptParams};
    use proptest::prelude::*;
    use std::net::IpAddr;
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

    /// A session that has said `EHLO dev`.
    fn greeted(w: &World, facts: ClientFacts) -> Session<'_> {
        let mut s = Session::new(gates(w), facts, false);
        say(&mut s, "EHLO dev");
        s
    }

    /// A world whose services alias `root` to `ops@example.test`.
    fn root_aliased() -> World {
        let mut w = world();
        w.fake
            .aliases
            .push(("root".into(), "ops@example.test".into()));
        w
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
        let mut s = greeted(&w, ClientFacts::allowed_plain());
        let out = say(&mut s, "MAIL FROM:<a@lan.test>");
        assert!(wire(&out).starts_with("452 4.3.1 "), "{}", wire(&out));
        assert!(!s.in_transaction());
    }

    #[test]
    fn aliases_and_rates_come_from_the_services() {
        let mut w = root_aliased();
        let mut s = greeted(&w, ClientFacts::allowed_plain());
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
        let mut s = greeted(&w, ClientFacts::allowed_plain());
        assert!(wire(&say(&mut s, "MAIL FROM:<a@lan.test>")).starts_with("250 "));
        assert!(wire(&say(&mut s, "RCPT TO:<root>")).starts_with("250 "));
        // …and is with limit_trusted_clients.
        let mut w = world_with("limit_trusted_clients = true\n");
        w.fake.over_rate = true;
        let mut s = greeted(&w, ClientFacts::allowed_plain());
        assert!(wire(&say(&mut s, "MAIL FROM:<a@lan.test>")).starts_with("450 4.7.1 "));
    }

    #[test]
    fn dsn_parameters_reach_the_envelope_and_need_ehlo() {
        let w = root_aliased();
        let mut s = greeted(&w, ClientFacts::allowed_plain());
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
        let mut s = greeted(&w, facts);
        let out = s.line(Line::Text(b"STARTTLS".to_vec()), true);
        assert!(wire(&out).starts_with("554 5.5.0 "), "{}", wire(&out));
        assert!(matches!(out.then, Then::Close));
        let mut s = greeted(&w, facts);
        let out = say(&mut s, "STARTTLS");
        assert_eq!(wire(&out), "220 2.0.0 Ready to start TLS\r\n");
        assert!(matches!(out.then, Then::StartTls));
    }

    #[test]
    fn auth_plain_without_an_initial_response_gets_334_and_a_space() {
        let w = world();
        let mut s = greeted(&w, users_facts());
        let out = say(&mut s, "AUTH PLAIN");
        // RFC 4954 §4: "334" SP, even before an empty challenge.
        assert_eq!(wire(&out), "334 \r\n");
        assert!(out.flush);
    }

    #[test]
    fn auth_is_a_phase_and_failures_are_slowed_then_421() {
        let w = world();
        let mut s = greeted(&w, users_facts());
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
        let mut s = greeted(&w, ClientFacts::allowed_plain());
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
        let mut s = greeted(&w, ClientFacts::allowed_plain());
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
