//! The handler of one inbound connection: the loop that joins the
//! [`Connection`] (bytes) to the [`Session`] (rules), and the session's
//! instructions to the queue (spool writer, commit), TLS and the accounts.
//! It decides nothing itself: every reply comes from the session.
//!
//! Uses the rest of `server`, `queue` (spooling), `tls`, `auth` (the
//! password check), `policy` (the aliases and the upstream SIZE, for
//! [`Live`]) and `deadline`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use smol::io::{AsyncRead, AsyncWrite};

use super::connection::{ConnError, Connection, Line};
use super::limits::{ClientLimits, IdleWatch};
use super::session::{ClientFacts, Disposition, Gates, Out, Services, Session, SessionStats, Then};
use super::storm::{Storms, Ticket};
use crate::policy::Outbound;
use crate::queue::{Hold, Queue, QueueError, QueueId, SpoolWriter, Transaction};
use crate::smtp::{Address, Envelope};
use crate::tls::Stream;

/// The daemon's side of [`Services`]: the queue, the aliases and upstream
/// SIZE limits, the per-client rates.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    /// The queue, for its room.
    pub queue: &'a Queue,
    /// Aliases and the upstream size limits.
    pub outbound: Option<&'a Outbound>,
    /// Per-client rates; `None` where they do not apply (tests, fuzzing).
    pub limits: Option<&'a ClientLimits>,
    /// The daemon's counters (refusals by reason), when it keeps them.
    pub observer: Option<&'a crate::observe::Observer>,
    /// Storm suppression (it reads every message's Subject when on).
    pub storm: Option<&'a Storms>,
}

impl Services for Live<'_> {
    fn queue_room(&self, size: u64) -> Result<(), QueueError> {
        self.queue.check_room(size)
    }
    fn note_message(&self, client: std::net::IpAddr) -> bool {
        self.limits.is_none_or(|l| l.note_message(client))
    }
    fn note_recipient(&self, client: std::net::IpAddr) -> bool {
        self.limits.is_none_or(|l| l.note_recipient(client))
    }
    fn alias(&self, rcpt: &Address) -> Option<Address> {
        self.outbound?.alias(rcpt).cloned()
    }
    fn qualify(&self, addr: &Address) -> Option<Address> {
        self.outbound?.qualify(addr)
    }
    fn upstream_size_limit(&self) -> Option<u64> {
        self.outbound?.max_message_size()
    }
    fn reads_messages(&self) -> bool {
        self.storm.is_some_and(Storms::enabled)
    }
    fn refused(&self, reason: super::refusal::Reason) {
        if let Some(o) = self.observer {
            o.refused(reason.word());
        }
    }
}

/// What the handler reaches itself: the queue it spools into, TLS for
/// STARTTLS, the accounts for AUTH.
#[derive(Debug, Clone, Copy)]
pub struct Backing<'a> {
    /// Messages go here.
    pub queue: &'a Queue,
    /// Listener TLS, for STARTTLS.
    pub tls: Option<&'a Arc<rustls::ServerConfig>>,
    /// `[[user]]` accounts, for AUTH.
    pub users: &'a crate::auth::Users,
    /// Storm suppression, which may hold a message back.
    pub storm: Option<&'a Storms>,
}

/// What ended the wait for the next line.
enum Next {
    /// A line from the client.
    Line(Line),
    /// The daemon is stopping.
    Stop,
    /// The listener needs this silent connection's place.
    MakeRoom,
}

/// One inbound connection, from greeting to close.
pub struct Handler<'a, T> {
    conn: Connection<T>,
    session: Session<'a>,
    backing: Backing<'a>,
    peer: SocketAddr,
    /// Closed when the daemon stops: between commands that ends the
    /// session with 421.
    stop: Option<smol::channel::Receiver<()>>,
    /// Tells a connection that has sent no command yet to make room for
    /// another client (the listener's idle hoarding rule).
    idle: Option<IdleWatch>,
    /// Counted by the queue while a transaction is open (group commit).
    transaction: Option<Transaction>,
    /// The daemon's counters (status, metrics), when it keeps them.
    observer: Option<crate::observe::Observer>,
}

impl<T> std::fmt::Debug for Handler<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handler({})", self.peer)
    }
}

impl<'a, T: AsyncRead + AsyncWrite + Unpin> Handler<'a, T> {
    /// A connection from `peer` that passed the connect-time checks;
    /// `tls` when `stream` is TLS already (implicit-TLS port).
    pub fn new(
        stream: Stream<T>,
        peer: SocketAddr,
        gates: Gates<'a>,
        backing: Backing<'a>,
        facts: ClientFacts,
        tls: bool,
    ) -> Self {
        let server = gates.server;
        Handler {
            conn: Connection::new(
                stream,
                server.command_timeout.value,
                server.session_timeout.value,
            ),
            session: Session::new(gates, facts, tls),
            backing,
            peer,
            stop: None,
            idle: None,
            transaction: None,
            observer: None,
        }
    }

    /// Close with 421 when `watch` says so, while the client has sent no
    /// command yet; the first command line marks it as spoken.
    pub fn watch_idle(&mut self, watch: IdleWatch) {
        self.idle = Some(watch);
    }

    /// Count what this session accepts in `observer`.
    pub fn observe_with(&mut self, observer: crate::observe::Observer) {
        self.observer = Some(observer);
    }

    /// End the session with 421 between commands once `stop` is closed
    /// (a message in DATA is received and answered first).
    pub fn stop_on(&mut self, stop: smol::channel::Receiver<()>) {
        self.stop = Some(stop);
    }

    /// What the session did, for the connection's log line.
    pub fn stats(&self) -> &SessionStats {
        &self.session.stats
    }

    /// Serve the session to its end. A client that went quiet or ran out
    /// of time is told so (421) before the error returns.
    pub async fn run(&mut self) -> Result<(), ConnError> {
        let result = self.serve().await;
        if let Err(ConnError::Timeout | ConnError::SessionLimit) = result {
            let _ = self.conn.write_reply(&self.session.timed_out()).await;
        }
        result
    }

    async fn serve(&mut self) -> Result<(), ConnError> {
        let talked_first = self.conn.input_waiting().await?;
        let out = self.session.greet(talked_first);
        let mut then = self.apply(out).await?;
        loop {
            then = match then {
                Then::Close => return Ok(()),
                Then::Read => {
                    let out = match self.next_line().await? {
                        Next::Line(line) => {
                            if let Some(w) = &self.idle {
                                w.spoke();
                            }
                            let pipelined = self.conn.has_buffered();
                            self.session.line(line, pipelined)
                        }
                        Next::Stop => self.session.stopping(),
                        Next::MakeRoom => self.session.make_room(),
                    };
                    self.apply(out).await?
                }
                Then::StartTls => self.start_tls().await?,
                Then::CheckLogin(creds) => {
                    let login = self.backing.users.check(&creds.name, &creds.password).await;
                    let out = self.session.login_checked(&creds.name, login);
                    self.apply(out).await?
                }
                Then::Receive(msg) => self.receive(msg).await?,
            };
            let open = self.session.in_transaction();
            if open != self.transaction.is_some() {
                self.transaction = open.then(|| self.backing.queue.transaction());
            }
        }
    }

    /// Queue (or, after a pause, send) the session's replies.
    async fn apply(&mut self, out: Out) -> Result<Then, ConnError> {
        if let Some(pause) = out.pause {
            self.conn.flush().await?;
            smol::Timer::after(pause).await;
        }
        for r in &out.replies {
            self.conn.queue_reply(r);
        }
        if out.flush || matches!(out.then, Then::Close) {
            self.conn.flush().await?;
        }
        Ok(out.then)
    }

    /// The next line; or, when no whole line is buffered, that the daemon
    /// is stopping or that this silent connection must make room (the
    /// replies so far are sent first).
    async fn next_line(&mut self) -> Result<Next, ConnError> {
        let idle = self.session.idle_timeout();
        let stop = self.stop.clone();
        let room = self.idle.clone().filter(|w| !w.has_spoken());
        if (stop.is_none() && room.is_none()) || self.conn.line_buffered() {
            return self.conn.read_line(idle).await.map(Next::Line);
        }
        // Flush before racing, so neither cuts a reply in half.
        self.conn.flush().await?;
        let stopped = async {
            match &stop {
                Some(stop) => {
                    let _ = stop.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
            Ok(Next::Stop)
        };
        let evicted = async {
            match &room {
                Some(w) => w.closing().await,
                None => std::future::pending::<()>().await,
            }
            Ok(Next::MakeRoom)
        };
        smol::future::or(
            async { self.conn.read_line(idle).await.map(Next::Line) },
            smol::future::or(stopped, evicted),
        )
        .await
    }

    /// The handshake after the session's 220 to STARTTLS; a failure ends
    /// the connection (the client's state is unknown).
    async fn start_tls(&mut self) -> Result<Then, ConnError> {
        let ip = self.peer.ip();
        let Some(cfg) = self.backing.tls.cloned() else {
            // The session offers STARTTLS only with a certificate.
            tracing::error!(client = %ip, "STARTTLS accepted without a certificate; closing");
            return Ok(Then::Close);
        };
        match self
            .conn
            .start_tls(cfg, self.session.handshake_timeout())
            .await
        {
            Ok(()) => {
                let out = self.session.tls_started();
                self.apply(out).await
            }
            Err(ConnError::Handshake(e)) => {
                let why = crate::tls::accept_failure(&e);
                tracing::info!(client = %ip, error = %why, "STARTTLS handshake failed");
                Ok(Then::Close)
            }
            Err(e) => Err(e),
        }
    }

    /// Receive one message into a spool writer and commit it.
    async fn receive(&mut self, msg: Envelope) -> Result<Then, ConnError> {
        let q = self.backing.queue;
        let mut writer = Some(q.begin(msg));
        // The spool writer counts itself now, until it is handed over.
        self.transaction = None;
        let id = QueueId(writer.as_ref().map_or(0, |w| w.id()));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (out, mut intake) = self.session.data_begin(id, now);
        self.apply(out).await?;
        let idle = self.session.data_timeout();
        loop {
            let chunk = match self.conn.read_chunk(idle).await {
                // The client left in the middle of its message.
                Err(ConnError::Eof) => return Err(ConnError::Truncated),
                r => r?,
            };
            let fed = intake.feed(chunk);
            let (consumed, finished) = (fed.consumed, fed.finished);
            let mut failed = None;
            if fed.refused {
                // Refused already: the rest is read and dropped.
                writer = None;
            } else if let Some(w) = writer.as_mut()
                && let Err(e) = w.write(fed.spool)
            {
                failed = Some(e);
            }
            if let Some(e) = failed {
                tracing::error!(id = %id, error = %e, "cannot spool message");
                writer = None;
                intake.spool_failed();
            }
            self.conn.consume(consumed);
            if finished {
                break;
            }
        }
        if writer.is_none() {
            intake.spool_failed();
        }
        let out = match (self.session.data_end(&intake), writer) {
            (Some(refusal), _) => refusal,
            (None, Some(mut w)) => {
                let size = w.body_len();
                let mut disposition = self.session.disposition(&intake);
                let ticket = self.storm_note(&intake, disposition.as_ref(), &w);
                if ticket.is_some() {
                    disposition.get_or_insert_with(Disposition::default).hold = Hold::Storm;
                }
                if let Some(d) = disposition
                    && let Err(e) = w.set_disposition(d.envelope, d.hold, d.route)
                {
                    // Never deliver what a rule held or routed elsewhere as
                    // if it had not: the client tries again later.
                    if let (Some(s), Some(t)) = (self.backing.storm, ticket) {
                        s.unnote(t);
                    }
                    let failed = Some(Err(QueueError::Io(e)));
                    let out = self.session.data_committed(failed, size);
                    return self.apply(out).await;
                }
                let stored_as = QueueId(w.id());
                let limit = self.session.data_end_timeout();
                let committed = crate::deadline::timeout(limit, q.commit(w)).await.ok();
                if let (Some(s), Some(t)) = (self.backing.storm, ticket) {
                    match &committed {
                        Some(Ok(id)) => s.held(t, *id),
                        // Not confirmed in time: it may still become durable
                        // (then it is held in its window; if not, the id
                        // names nothing and is passed over).
                        None => s.held(t, stored_as),
                        Some(Err(_)) => s.unnote(t),
                    }
                }
                if let (Some(Ok(_)), Some(o)) = (&committed, &self.observer) {
                    o.accepted();
                }
                self.session.data_committed(committed, size)
            }
            // Without a writer the intake has refused the message already.
            (None, None) => self
                .session
                .data_committed(Some(Err(QueueError::Failed("no spool writer".into()))), 0),
        };
        self.apply(out).await
    }
}

impl<T> Handler<'_, T> {
    /// Ask storm suppression about a message about to be committed (not
    /// one a rule holds already: the operator decides about that one).
    fn storm_note(
        &self,
        intake: &super::intake::Intake,
        d: Option<&Disposition>,
        w: &SpoolWriter,
    ) -> Option<Ticket> {
        let storm = self.backing.storm?;
        if d.is_some_and(|d| d.hold != Hold::None) {
            return None;
        }
        let scan = intake.scan()?;
        let envelope = d.and_then(|d| d.envelope.as_ref()).unwrap_or(w.envelope());
        let route = d.and_then(|d| d.route.as_deref());
        storm.note(envelope, scan, route)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{self, ParseOptions};
    use crate::policy::Policy;
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::net::unix::UnixStream;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// A world whose config has these `[[filter]]` rules.
    pub(crate) fn world_rules(rules: &str) -> World {
        world_full("", rules, crate::queue::StoreOptions::default())
    }

    /// One transaction: EHLO, MAIL, each RCPT, DATA, the message, QUIT;
    /// every reply in order (the one to QUIT last).
    pub(crate) fn conversation(
        w: &World,
        from: &str,
        rcpts: &[&str],
        message: &str,
    ) -> (Vec<String>, Result<(), ConnError>) {
        let mut replies = Vec::new();
        let (_, res) = session_in(w, b"", async |mut c| {
            assert!(reply(&mut c).await.starts_with("220 "));
            let mut cmds = vec!["EHLO dev".to_string(), format!("MAIL FROM:<{from}>")];
            cmds.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>")));
            cmds.push("DATA".into());
            for cmd in cmds {
                c.write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
                let r = reply(&mut c).await;
                let go_on = cmd != "DATA" || r.starts_with("354");
                replies.push(r);
                if !go_on {
                    break;
                }
            }
            if replies.last().is_some_and(|r| r.starts_with("354")) {
                c.write_all(message.as_bytes()).await.unwrap();
                c.write_all(b".\r\n").await.unwrap();
                replies.push(reply(&mut c).await);
            }
            c.write_all(b"QUIT\r\n").await.unwrap();
            replies.push(reply(&mut c).await);
            read_all(c).await
        });
        (replies, res)
    }

    /// The stored message of `id`, as text.
    pub(crate) fn stored_body(w: &World, id: QueueId) -> String {
        w.queue.release(id).unwrap();
        let job = w
            .queue
            .take_due(Instant::now(), usize::MAX)
            .0
            .into_iter()
            .find(|j| j.id == id)
            .unwrap();
        let mut r = w.queue.open_body(&job).unwrap();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            r.read_chunk(&mut buf, 4096).unwrap();
            if buf.is_empty() {
                break;
            }
            out.extend_from_slice(&buf);
        }
        w.queue.finish(&job, &[], None);
        w.queue.hold(id).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The daemon's parts on a real queue in a temp dir.
    pub(crate) struct World {
        cfg: config::Config,
        policy: Policy,
        pub(crate) queue: Queue,
        users: crate::auth::Users,
        rules: crate::filter::Rules,
        pub(crate) storm: Option<Arc<Storms>>,
        _dir: tempfile::TempDir,
    }

    fn world() -> World {
        world_with("", crate::queue::StoreOptions::default())
    }

    /// A world with extra `[server]` keys and its queue on `store`.
    fn world_with(server: &str, store: crate::queue::StoreOptions) -> World {
        world_full(server, "", store)
    }

    /// With tables after the rest (`[[filter]]`…).
    fn world_full(server: &str, tail: &str, store: crate::queue::StoreOptions) -> World {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:2525\"]\n{server}[queue]\ndir = \"q\"\n\
             [upstream]\nkind = \"maildir\"\ndir = \"out\"\n{tail}"
        );
        let opts = ParseOptions {
            skip_file_checks: true,
            default_hostname: Some("relay.test".into()),
        };
        let cfg = config::parse_with(&text, Path::new("t.toml"), &opts).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let limits = crate::queue::Limits {
            max_bytes: 1 << 20,
            max_messages: 100,
            max_age: Duration::from_secs(3600),
            retry_intervals: vec![Duration::from_secs(60)],
        };
        let (queue, _) = Queue::open_with(dir.path(), limits, store).unwrap();
        let storm = cfg.storm.as_ref().map(|s| {
            let clock = Arc::new(crate::queue::SystemClock);
            Arc::new(Storms::open(Some(s), queue.clone(), "relay.test", clock))
        });
        World {
            storm,
            policy: Policy::new(&cfg.policy),
            rules: crate::filter::Rules::new(&cfg.filters),
            cfg,
            queue,
            users: crate::auth::Users::default(),
            _dir: dir,
        }
    }

    /// Run a session over a socket pair; `client` gets the other end.
    /// `early` is written before the session starts.
    fn session(
        early: &[u8],
        script: impl AsyncFnOnce(UnixStream) -> Vec<u8>,
    ) -> (Vec<u8>, Result<(), ConnError>) {
        session_in(&world(), early, script)
    }

    fn session_in(
        w: &World,
        early: &[u8],
        script: impl AsyncFnOnce(UnixStream) -> Vec<u8>,
    ) -> (Vec<u8>, Result<(), ConnError>) {
        smol::block_on(async {
            let (server, mut client) = UnixStream::pair().unwrap();
            client.write_all(early).await.unwrap();
            let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let live = Live {
                queue: &w.queue,
                outbound: None,
                limits: None,
                observer: None,
                storm: w.storm.as_deref(),
            };
            let gates = Gates {
                hostname: "relay.test",
                server: &w.cfg.server,
                policy: &w.policy,
                services: &live,
                client: peer.ip(),
                filters: &w.rules,
            };
            let backing = Backing {
                queue: &w.queue,
                tls: None,
                users: &w.users,
                storm: w.storm.as_deref(),
            };
            let mut handler = Handler::new(
                Stream::Plain(server),
                peer,
                gates,
                backing,
                ClientFacts::allowed_plain(),
                false,
            );
            let (res, out) = smol::future::zip(
                async {
                    let r = handler.run().await;
                    drop(handler);
                    r
                },
                script(client),
            )
            .await;
            (out, res)
        })
    }

    async fn read_all(mut c: UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        out
    }

    #[test]
    fn input_before_the_greeting_gets_554_and_close() {
        // The bytes are in the socket before the session starts: exactly
        // what a pregreeting bot produces.
        let (out, res) = session(b"EHLO early\r\n", read_all);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("554 5.5.0 "), "{text}");
        assert!(!text.contains("220"), "{text}");
        assert!(res.is_ok());
    }

    #[test]
    fn a_polite_client_gets_the_greeting() {
        let (out, _) = session(b"", async |mut c| {
            let mut b = [0u8; 256];
            let n = c.read(&mut b).await.unwrap();
            assert!(b[..n].starts_with(b"220 "));
            c.write_all(b"QUIT\r\n").await.unwrap();
            read_all(c).await
        });
        assert!(
            out.starts_with(b"221 "),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    /// Read one reply (up to its last line) from the client end.
    async fn reply(c: &mut UnixStream) -> String {
        let mut out = Vec::new();
        let mut b = [0u8; 512];
        loop {
            let n = c.read(&mut b).await.unwrap();
            assert!(n > 0, "closed after {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&b[..n]);
            let text = String::from_utf8_lossy(&out);
            if let Some(last) = text.trim_end().lines().last()
                && last.len() > 3
                && last.as_bytes()[3] == b' '
                && text.ends_with("\r\n")
            {
                return text.into_owned();
            }
        }
    }

    #[test]
    fn a_client_silent_after_the_greeting_is_cut_at_greeting_timeout() {
        let w = world_with(
            "greeting_timeout = \"1s\"\ncommand_timeout = \"1h\"\n",
            Default::default(),
        );
        let started = Instant::now();
        let (_, res) = session_in(&w, b"", async |mut c| {
            assert!(reply(&mut c).await.starts_with("220 "));
            read_all(c).await
        });
        // command_timeout is an hour: only greeting_timeout can end it.
        assert!(matches!(res, Err(ConnError::Timeout)), "{res:?}");
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn after_the_first_command_the_command_timeout_applies() {
        let w = world_with(
            "greeting_timeout = \"1s\"\ncommand_timeout = \"3s\"\n",
            Default::default(),
        );
        let mut idle_for = Duration::ZERO;
        let (_, res) = session_in(&w, b"", async |mut c| {
            assert!(reply(&mut c).await.starts_with("220 "));
            c.write_all(b"EHLO dev\r\n").await.unwrap();
            assert!(reply(&mut c).await.starts_with("250"));
            let quiet = Instant::now();
            let out = read_all(c).await;
            idle_for = quiet.elapsed();
            out
        });
        assert!(matches!(res, Err(ConnError::Timeout)), "{res:?}");
        // Cut by command_timeout (3 s), not by greeting_timeout (1 s).
        assert!(idle_for >= Duration::from_millis(2900), "{idle_for:?}");
    }

    /// A filesystem whose syncs wait until `release` (a stuck SD card).
    #[derive(Debug, Clone)]
    struct StuckSync(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

    impl StuckSync {
        fn release(&self) {
            *self.0.0.lock().unwrap() = true;
            self.0.1.notify_all();
        }
        fn wait(&self) {
            let mut free = self.0.0.lock().unwrap();
            while !*free {
                free = self.0.1.wait(free).unwrap();
            }
        }
    }

    #[derive(Debug)]
    struct StuckFile(Box<dyn crate::queue::StorageFile>, StuckSync);

    impl crate::queue::StorageFile for StuckFile {
        fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
            self.0.read_exact_at(buf, off)
        }
        fn write_all_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
            self.0.write_all_at(buf, off)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.1.wait();
            self.0.sync_data()
        }
        fn size(&self) -> std::io::Result<u64> {
            self.0.size()
        }
    }

    impl crate::queue::Storage for StuckSync {
        fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
            crate::queue::RealFs.create_dir_all(dir)
        }
        fn open(
            &self,
            path: &std::path::Path,
            mode: crate::queue::OpenMode,
        ) -> std::io::Result<Box<dyn crate::queue::StorageFile>> {
            let f = crate::queue::RealFs.open(path, mode)?;
            Ok(Box::new(StuckFile(f, self.clone())))
        }
        fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<std::ffi::OsString>> {
            crate::queue::RealFs.list(dir)
        }
        fn is_dir(&self, path: &std::path::Path) -> bool {
            crate::queue::RealFs.is_dir(path)
        }
        fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
            crate::queue::RealFs.rename(from, to)
        }
        fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
            crate::queue::RealFs.remove(path)
        }
        fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
            self.wait();
            crate::queue::RealFs.sync_dir(dir)
        }
        fn lock(
            &self,
            path: &std::path::Path,
        ) -> std::io::Result<Option<Box<dyn crate::queue::StorageLock>>> {
            crate::queue::RealFs.lock(path)
        }
    }

    /// One message from `from` through a session; the end-of-data reply
    /// and what follows QUIT.
    fn send_one(w: &World, from: &str) -> String {
        let (out, _) = session_in(w, b"", async |mut c| {
            assert!(reply(&mut c).await.starts_with("220 "));
            for (cmd, want) in [
                ("EHLO dev".to_string(), "250"),
                (format!("MAIL FROM:<{from}>"), "250"),
                ("RCPT TO:<b@example.org>".to_string(), "250"),
                ("DATA".to_string(), "354"),
            ] {
                c.write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
                let r = reply(&mut c).await;
                assert!(r.starts_with(want), "{cmd}: {r}");
            }
            c.write_all(b"Subject: t\r\n\r\nhello\r\n.\r\n")
                .await
                .unwrap();
            // Without the limit the session would wait for the storage
            // for ever; 30 s is a verdict, not a synchronisation.
            let end = smol::future::or(reply(&mut c), async {
                smol::Timer::after(Duration::from_secs(30)).await;
                "no reply within 30 s".to_string()
            })
            .await;
            c.write_all(b"QUIT\r\n").await.unwrap();
            let mut all = end.into_bytes();
            all.extend(read_all(c).await);
            all
        });
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn a_queue_that_cannot_sync_in_time_gets_451_and_skips_what_it_had_not_written() {
        let stuck = StuckSync(Default::default());
        let store = crate::queue::StoreOptions {
            storage: Arc::new(stuck.clone()),
            ..Default::default()
        };
        // Opening the queue syncs: let that through, then get stuck.
        stuck.release();
        let w = world_with("data_end_timeout = \"1s\"\n", store);
        *stuck.0.0.lock().unwrap() = false;
        // The first message is written, then its sync hangs.
        let first = send_one(&w, "first@lan.test");
        assert!(first.starts_with("451 4.3.0 "), "{first}");
        assert!(first.contains("221 "), "{first}");
        // The second waits behind that sync and is given up on unwritten.
        let second = send_one(&w, "second@lan.test");
        assert!(second.starts_with("451 4.3.0 "), "{second}");
        stuck.release();
        // In order behind both: when this returns, the writer has seen them.
        w.queue.sync().unwrap();
        let from: Vec<String> = w.queue.list().into_iter().map(|s| s.from).collect();
        // The first is durable (its client will retry: a duplicate, logged);
        // the second was never written, so its retry is the only copy.
        assert_eq!(from, vec!["first@lan.test".to_string()]);
    }
}

#[cfg(test)]
mod filter_tests {
    //! `[[filter]]` end to end through a session on a real queue.
    use super::tests::*;
    use crate::queue::Hold;

    const RULES: &str = "\
[[filter]]
name = \"no-exe\"
attachment_ext = [\"exe\"]
reject = \"550 5.7.1 Executables are not accepted here\"
[[filter]]
name = \"drop-test\"
subject = [\"test*\"]
discard = true
[[filter]]
name = \"ups\"
sender = [\"*@ups.lan\"]
hold = true
add_header = [\"X-Alert: ups\"]
remove_header = [\"X-Internal-Ip\"]
[[filter]]
name = \"to-ops\"
recipient = [\"root@*\"]
redirect = [\"ops@example.com\"]
[[filter]]
name = \"no-ceo\"
recipient = [\"ceo@*\"]
reject = \"550 5.7.1 Not for the CEO\"
";

    #[test]
    fn rules_act_at_each_point_of_a_real_session() {
        let w = world_rules(RULES);
        // RCPT: a rejected recipient, a redirected one.
        let (replies, _) = conversation(
            &w,
            "ups@ups.lan",
            &["ceo@example.com", "root@lan.test"],
            "Subject: UPS on battery\r\nX-Internal-Ip: 10.0.0.5\r\n\r\nbody\r\n",
        );
        assert!(
            replies[2].starts_with("550 5.7.1 Not for the CEO"),
            "{replies:?}"
        );
        assert!(replies[3].starts_with("250"), "{replies:?}");
        assert!(
            replies[5].starts_with("250 2.0.0 Ok: queued as"),
            "{replies:?}"
        );
        let listed = w.queue.list();
        assert_eq!(listed.len(), 1);
        let s = &listed[0];
        assert!(s.held && s.hold == Hold::Filter, "held by the rule");
        assert_eq!(s.pending, vec!["ops@example.com".to_string()]);
        let body = stored_body(&w, s.id);
        assert!(body.contains("X-Alert: ups\r\n\r\nbody"), "{body}");
        assert!(!body.contains("X-Internal-Ip"), "{body}");
        // End of headers: discarded, answered like a queued message.
        let (replies, _) = conversation(
            &w,
            "dev@lan",
            &["a@example.com"],
            "Subject: test 1\r\n\r\nx\r\n",
        );
        assert!(
            replies[4].starts_with("250 2.0.0 Ok: queued as"),
            "{replies:?}"
        );
        assert_eq!(w.queue.list().len(), 1, "nothing more queued");
        // End of data: an attachment refused.
        let msg = "Subject: report\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
                   Content-Type: application/octet-stream; name=\"setup.exe\"\r\n\r\nMZ\r\n--b--\r\n";
        let (replies, _) = conversation(&w, "dev@lan", &["a@example.com"], msg);
        assert!(
            replies[4].starts_with("550 5.7.1 Executables are not accepted here"),
            "{replies:?}"
        );
        assert_eq!(w.queue.list().len(), 1);
    }

    #[test]
    fn storm_suppression_holds_copies_past_pass_without_any_rule() {
        let w = world_rules("[storm]\nthreshold = 2\npass = 1\n");
        for i in 0..3 {
            let msg = format!("Subject: UPS {i} on battery\r\n\r\nbody\r\n");
            let (replies, _) = conversation(&w, "ups@ups.lan", &["ops@example.com"], &msg);
            assert!(
                replies[4].starts_with("250 2.0.0 Ok: queued as"),
                "every copy is taken: {replies:?}"
            );
        }
        let listed = w.queue.list();
        assert_eq!(listed.len(), 3, "every copy is queued");
        let holds: Vec<Hold> = listed.iter().filter(|s| s.held).map(|s| s.hold).collect();
        assert_eq!(holds, vec![Hold::Storm, Hold::Storm], "{listed:?}");
        // A rule's hold wins: that copy is the operator's, not counted.
        let w = world_rules(
            "[[filter]]\nname = \"h\"\nsender = [\"*@ups.lan\"]\nhold = true\n\
             [storm]\nthreshold = 1\npass = 0\n",
        );
        let _ = conversation(
            &w,
            "ups@ups.lan",
            &["ops@example.com"],
            "Subject: x\r\n\r\ny\r\n",
        );
        assert_eq!(w.queue.list()[0].hold, Hold::Filter);
    }
}
