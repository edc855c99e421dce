//! One inbound connection: owns the socket (plain, or TLS after STARTTLS or
//! on the implicit-TLS port), the read buffer and the timeouts, feeds
//! commands to [`SessionCore`], runs the STARTTLS and AUTH exchanges, and
//! streams DATA into the queue.
//!
//! The bounds of a session are named in the constants block below; the
//! per-client rates live in [`super::limits`].

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::reply::Answer;
use super::session::{ClientFacts, Gates, SessionCore, Step};
use crate::smtp::command::{self, MAX_COMMAND_LINE};
use crate::smtp::header::{HeaderFixer, Received, format_date};
use crate::smtp::{BareNewline, Command, DataDecoder, Reply};
pub use crate::tls::Stream;

// The bounds of one session.
/// Read buffer size: a few command lines, or one chunk of DATA.
const READ_BUF: usize = 16 * 1024;
/// Errors (bad commands, refusals of syntax) before we hang up (421).
pub const MAX_ERRORS: u32 = 20;
/// Longest text line in DATA, without its CRLF (RFC 5321 §4.5.3.1.6: 1000
/// with CRLF). Longer lines get the message refused (550 5.6.0), never cut.
pub const MAX_DATA_LINE: usize = 998;
/// Largest header section accepted (552 5.3.4 past it); a device's header
/// is a few KiB, and downstream filters choke on huge ones.
pub const MAX_HEADER_SECTION: u64 = 100 * 1024;
/// Commands in a row that move no transaction forward (NOOP, RSET, VRFY,
/// HELP, EHLO…) before 421, like Postfix's smtpd_junk_command_limit.
pub const MAX_JUNK_COMMANDS: u32 = 100;
/// Wait after a failed AUTH, times the failures so far: slows guessing.
const AUTH_FAIL_DELAY: Duration = Duration::from_secs(1);

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The client went quiet for longer than command_timeout.
    #[error("timeout")]
    Timeout,
    /// The session ran past session_timeout.
    #[error("session time limit")]
    SessionLimit,
    /// The client closed the connection.
    #[error("client closed connection")]
    Eof,
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a finished connection did, for its log line.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Messages accepted.
    pub accepted: u32,
    /// Messages refused after DATA.
    pub refused: u32,
    /// The last EHLO/HELO name.
    pub helo: Option<String>,
}

/// A read buffer with a start and end; compacted when it runs out of room.
struct ReadBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new() -> ReadBuf {
        ReadBuf {
            buf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
    /// Read more from `s`; 0 means EOF.
    async fn fill<R: AsyncRead + Unpin>(&mut self, s: &mut R) -> std::io::Result<usize> {
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = s.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// Run `f` unless `dur` passes first.
async fn timeout<T>(
    dur: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, ConnError> {
    crate::deadline::timeout(dur, f)
        .await
        .map_err(|_| ConnError::Timeout)
}

/// The driver of one connection.
pub struct Conn<'a, T> {
    stream: Stream<T>,
    rbuf: ReadBuf,
    wbuf: Vec<u8>,
    peer: SocketAddr,
    gates: Gates<'a>,
    core: SessionCore,
    deadline: Instant,
    /// Idle limit while waiting for a command: greeting_timeout until the
    /// first command line has arrived, command_timeout after.
    idle: Duration,
    errors: u32,
    junk: u32,
    auth_failures: u32,
    /// Closed when the daemon stops: between commands that ends
    /// the session with 421.
    stop: Option<smol::channel::Receiver<()>>,
    /// Counted by the queue while a transaction is open (group commit).
    transaction: Option<crate::queue::Transaction>,
    /// Connection stats for the log line.
    pub stats: ConnStats,
    /// The daemon's counters (status, metrics), when it keeps them.
    observer: Option<crate::observe::Observer>,
}

impl<T> std::fmt::Debug for Conn<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.peer)
    }
}

enum Line {
    Ok(usize),
    TooLong,
}

impl<'a, T: AsyncRead + AsyncWrite + Unpin> Conn<'a, T> {
    /// A connection from `peer` that passed the connect-time checks;
    /// `tls` when `stream` is already TLS (implicit-TLS port).
    pub fn new(
        stream: Stream<T>,
        peer: SocketAddr,
        gates: Gates<'a>,
        facts: ClientFacts,
        tls: bool,
    ) -> Self {
        let deadline = Instant::now() + gates.server.session_timeout.value;
        Conn {
            stream,
            rbuf: ReadBuf::new(),
            wbuf: Vec::with_capacity(512),
            peer,
            gates,
            core: SessionCore::new(facts, tls),
            deadline,
            idle: gates.server.greeting_timeout.value,
            errors: 0,
            junk: 0,
            auth_failures: 0,
            stop: None,
            transaction: None,
            stats: ConnStats::default(),
            observer: None,
        }
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

    /// The next command line, or `None` when the daemon is stopping and no
    /// complete command is buffered (the replies so far are sent first).
    async fn next_line_or_stop(&mut self) -> Result<Option<Line>, ConnError> {
        let Some(stop) = self.stop.clone() else {
            return self.next_line().await.map(Some);
        };
        if self.rbuf.data().contains(&b'\n') {
            return self.next_line().await.map(Some);
        }
        // Flush before racing, so a stop never cuts a reply in half.
        self.flush().await?;
        smol::future::or(async { self.next_line().await.map(Some) }, async {
            let _ = stop.recv().await;
            Ok(None)
        })
        .await
    }

    fn queue_reply(&mut self, r: &Reply) {
        r.write_to(&mut self.wbuf);
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let t = self.gates.server.command_timeout.value;
        timeout(t, self.stream.write_all(&self.wbuf)).await??;
        timeout(t, self.stream.flush()).await??;
        self.wbuf.clear();
        Ok(())
    }

    /// Write one reply now.
    pub async fn send(&mut self, r: &Reply) -> Result<(), ConnError> {
        self.queue_reply(r);
        self.flush().await
    }

    /// Read more input, flushing pending replies first (RFC 2920: reply to
    /// a whole pipelined group before waiting for more).
    async fn fill(&mut self) -> Result<(), ConnError> {
        self.fill_within(self.idle).await
    }

    /// [`Conn::fill`] with another idle limit (DATA blocks).
    async fn fill_within(&mut self, idle: Duration) -> Result<(), ConnError> {
        self.flush().await?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnError::SessionLimit);
        }
        let t = idle.min(left);
        let n = timeout(t, self.rbuf.fill(&mut self.stream)).await??;
        if n == 0 {
            return Err(ConnError::Eof);
        }
        Ok(())
    }

    /// The next command line's length including its LF, or TooLong (after
    /// skipping the rest of that line).
    async fn next_line(&mut self) -> Result<Line, ConnError> {
        loop {
            let data = self.rbuf.data();
            if let Some(i) = data.iter().position(|&b| b == b'\n') {
                if i + 1 > MAX_COMMAND_LINE {
                    self.rbuf.consume(i + 1);
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Ok(i + 1));
            }
            if data.len() >= MAX_COMMAND_LINE {
                // Skip to the end of this overlong line without buffering it.
                loop {
                    let d = self.rbuf.data();
                    if let Some(i) = d.iter().position(|&b| b == b'\n') {
                        self.rbuf.consume(i + 1);
                        return Ok(Line::TooLong);
                    }
                    let n = d.len();
                    self.rbuf.consume(n);
                    self.fill().await?;
                }
            }
            self.fill().await?;
        }
    }

    /// Count an error; past the limit, say 421 and stop.
    async fn error(&mut self, r: Reply) -> Result<bool, ConnError> {
        self.errors += 1;
        self.queue_reply(&r);
        if self.errors >= MAX_ERRORS {
            self.send(&Answer::TooManyErrors.reply()).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Did the client talk before our greeting? (A protocol violation,
    /// typical of spam bots and of pipelining attacks; RFC 5321 §4.3.1.)
    /// Only what has already arrived is looked at: no delay for anyone.
    async fn talked_first(&mut self) -> Result<bool, ConnError> {
        match smol::future::poll_once(self.rbuf.fill(&mut self.stream)).await {
            Some(Ok(0)) => Err(ConnError::Eof),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(ConnError::Io(e)),
            None => Ok(false),
        }
    }

    /// Serve the session to its end.
    pub async fn run(&mut self) -> Result<(), ConnError> {
        if self.talked_first().await? {
            tracing::info!(client = %self.peer.ip(), "refused: sent data before the greeting");
            self.send(&Answer::TalkedFirst.reply()).await?;
            return Ok(());
        }
        let greeting = Answer::Greeting {
            hostname: self.gates.hostname.to_string(),
        }
        .reply();
        self.send(&greeting).await?;
        loop {
            let Some(line) = self.next_line_or_stop().await? else {
                let bye = Answer::ShuttingDown {
                    hostname: self.gates.hostname.to_string(),
                }
                .reply();
                self.send(&bye).await?;
                return Ok(());
            };
            self.idle = self.gates.server.command_timeout.value;
            let len = match line {
                Line::TooLong => {
                    if !self.error(Answer::LineTooLong.reply()).await? {
                        return Ok(());
                    }
                    continue;
                }
                Line::Ok(len) => len,
            };
            let line = self.rbuf.data()[..len].to_vec();
            self.rbuf.consume(len);
            let mut text = &line[..len - 1];
            if let Some(t) = text.strip_suffix(b"\r") {
                text = t;
            }
            let cmd = match command::parse(text) {
                Ok(c) => c,
                Err(e) => {
                    if !self.error(Answer::BadCommand(e).reply()).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            if !self.core.esmtp && !self.rbuf.data().is_empty() {
                // PIPELINING is an EHLO extension: a client that did not
                // say EHLO (or before it) must wait for each reply.
                tracing::info!(client = %self.peer.ip(), "refused: pipelining without EHLO");
                self.send(&Answer::PipeliningWithoutEhlo.reply()).await?;
                return Ok(());
            }
            let moves = matches!(
                cmd,
                Command::Mail { .. } | Command::Rcpt { .. } | Command::Data | Command::Quit
            );
            // RFC 2920 §3.1: these end a pipeline group; their replies go
            // out before anything after them is read.
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
                self.junk += 1;
                if self.junk > MAX_JUNK_COMMANDS {
                    self.send(&Answer::TooManyJunkCommands.reply()).await?;
                    return Ok(());
                }
            }
            match self.core.command(cmd, &self.gates) {
                Step::StartTls => {
                    if !self.starttls().await? {
                        return Ok(());
                    }
                }
                Step::Auth { mechanism, initial } => {
                    if !self.auth(&mechanism, initial).await? {
                        return Ok(());
                    }
                }
                Step::Reply(r) => {
                    if r.code >= 500 && r.code != 550 && r.code != 552 && r.code != 553 {
                        // Protocol errors count; policy refusals of single
                        // addresses are normal traffic.
                        if !self.error(r).await? {
                            return Ok(());
                        }
                    } else {
                        self.queue_reply(&r);
                    }
                    self.stats.helo = self.core.helo.clone();
                }
                Step::Close(r) => {
                    self.send(&r).await?;
                    return Ok(());
                }
                Step::Data(msg) => {
                    let go_on = self.data(msg).await?;
                    self.core.reset();
                    if !go_on {
                        self.flush().await?;
                        return Ok(());
                    }
                }
            }
            let open = matches!(
                self.core.phase(),
                super::session::Phase::Mail { .. } | super::session::Phase::Rcpt { .. }
            );
            if open != self.transaction.is_some() {
                self.transaction = open.then(|| self.gates.queue.transaction());
            }
            if ends_group {
                self.flush().await?;
            }
        }
    }

    /// After STARTTLS was accepted by the state machine: refuse anything
    /// pipelined behind it (CVE-2011-0411: it would be taken as sent over
    /// TLS), say 220, run the handshake, start the session over. False:
    /// close the connection.
    async fn starttls(&mut self) -> Result<bool, ConnError> {
        let Some(cfg) = self.gates.tls.cloned() else {
            self.queue_reply(&Answer::TlsNotAvailable.reply());
            return Ok(true);
        };
        if !self.rbuf.data().is_empty() {
            tracing::info!(client = %self.peer.ip(), "refused: commands pipelined after STARTTLS");
            self.send(&Answer::PipelinedAfterStartTls.reply()).await?;
            return Ok(false);
        }
        self.send(&Answer::ReadyForTls.reply()).await?;
        let Some(plain) = self.stream.take_plain() else {
            return Ok(false);
        };
        let t = self.gates.server.command_timeout.value;
        match timeout(t, crate::tls::accept(cfg, plain)).await {
            Ok(Ok(tls)) => {
                self.stream = tls;
                self.rbuf.clear();
                self.core.tls_started();
                Ok(true)
            }
            Ok(Err(e)) => {
                tracing::info!(client = %self.peer.ip(), error = %e, "STARTTLS handshake failed");
                Ok(false)
            }
            Err(_) => {
                tracing::info!(client = %self.peer.ip(), "STARTTLS handshake timed out");
                Ok(false)
            }
        }
    }

    /// One base64 line of an AUTH exchange after a 334 prompt; `None` when
    /// the client cancelled with `*`.
    async fn auth_line(&mut self, prompt: &'static str) -> Result<Option<Vec<u8>>, ConnError> {
        self.send(&Answer::AuthChallenge(prompt).reply()).await?;
        let len = match self.next_line().await? {
            Line::Ok(len) => len,
            Line::TooLong => return Ok(Some(Vec::new())),
        };
        let mut line = self.rbuf.data()[..len - 1].to_vec();
        self.rbuf.consume(len);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line == b"*" {
            return Ok(None);
        }
        Ok(Some(line))
    }

    /// The AUTH exchange (RFC 4954) for PLAIN or LOGIN. False: close.
    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Result<bool, ConnError> {
        use crate::auth::{decode_line, decode_plain};
        // RFC 4954 §4: "=" is an empty initial response.
        let initial = initial.map(|i| if i == "=" { Vec::new() } else { i.into_bytes() });
        let creds = if mechanism == "PLAIN" {
            let resp = match initial {
                Some(r) => Some(r),
                None => self.auth_line("").await?,
            };
            resp.map(|r| decode_plain(&r))
        } else {
            let user = match initial {
                Some(r) => Some(r),
                None => self.auth_line("VXNlcm5hbWU6").await?,
            };
            match user {
                None => None,
                Some(u) => self.auth_line("UGFzc3dvcmQ6").await?.map(|p| {
                    decode_line(&u).and_then(|u| {
                        let u =
                            String::from_utf8(u).map_err(|_| crate::auth::AuthError::Malformed)?;
                        Ok((u, decode_line(&p)?))
                    })
                }),
            }
        };
        let Some(creds) = creds else {
            self.queue_reply(&Answer::AuthCancelled.reply());
            return Ok(true);
        };
        let login = match creds {
            Ok((name, password)) => self.gates.users.check(&name, &password).await.ok_or(name),
            Err(_) => Err(String::new()),
        };
        match login {
            Ok(login) => {
                tracing::info!(client = %self.peer.ip(), user = %login.name, "authenticated");
                self.core.authenticated(login);
                self.queue_reply(&Answer::AuthOk.reply());
                Ok(true)
            }
            Err(name) => {
                self.auth_failures += 1;
                tracing::warn!(client = %self.peer.ip(), user = %name.escape_debug(), failures = self.auth_failures, "AUTH failed");
                self.flush().await?;
                smol::Timer::after(AUTH_FAIL_DELAY * self.auth_failures).await;
                if self.auth_failures >= self.gates.server.max_auth_failures {
                    self.send(&Answer::TooManyAuthFailures.reply()).await?;
                    return Ok(false);
                }
                self.queue_reply(&Answer::AuthFailed.reply());
                Ok(true)
            }
        }
    }

    /// Receive one message after DATA. False: the framing cannot be
    /// trusted any more (a bare newline in reject mode); close.
    async fn data(&mut self, msg: crate::smtp::Envelope) -> Result<bool, ConnError> {
        let q = self.gates.queue;
        let rcpt_count = msg.rcpts.len();
        let from = msg.from.clone();
        let single_rcpt = match msg.rcpts.as_slice() {
            [only] => Some(only.addr.clone()),
            _ => None,
        };
        let mut w = Some(q.begin(msg));
        // The spool writer counts itself now, until it is handed over.
        self.transaction = None;
        let id = w
            .as_ref()
            .map(|w| crate::queue::QueueId(w.id()))
            .unwrap_or(crate::queue::QueueId(0));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id_text = id.to_string();
        let helo = self.core.helo.clone().unwrap_or_default();
        let received = Received {
            helo: &helo,
            client_ip: self.peer.ip(),
            by: self.gates.hostname,
            with: self.core.protocol(),
            id: &id_text,
            for_rcpt: single_rcpt.as_ref(),
            unix_secs: now,
        }
        .render();
        let mut fixer = HeaderFixer::new(
            format_date(now),
            format!("<{id_text}.postern@{}>", self.gates.hostname),
        );
        let ip = self.peer.ip().to_canonical();
        let normalize = self.gates.server.bare_newline == BareNewline::Normalize
            || self
                .gates
                .server
                .bare_newline_normalize_clients
                .iter()
                .any(|n| n.contains(&ip));
        let mut decoder = DataDecoder::new(if normalize {
            BareNewline::Normalize
        } else {
            BareNewline::Reject
        });
        let data_timeout = self.gates.server.data_timeout.value;
        let mut line_too_long = false;
        let mut header_len = 0;
        let limit = self.gates.max_message_size();
        let mut io_error: Option<std::io::Error> = None;
        let mut too_big = false;
        let mut decoded = Vec::with_capacity(READ_BUF);
        let mut fixed = Vec::with_capacity(READ_BUF + 256);
        if let Some(w) = w.as_mut()
            && let Err(e) = w.write(received.as_bytes())
        {
            io_error = Some(e);
        }
        self.send(&Answer::StartData.reply()).await?;
        let mut size: u64 = 0;
        loop {
            if self.rbuf.data().is_empty() {
                self.fill_within(data_timeout).await?;
            }
            decoded.clear();
            let res = decoder.decode(self.rbuf.data(), &mut decoded);
            let d = match res {
                Ok(d) => d,
                Err(_) => {
                    // Reject mode only (normalize never errs). The client's
                    // idea of where lines and the message end differs from
                    // ours: answer now and hang up rather than guess.
                    drop(w.take());
                    self.rbuf.clear();
                    self.stats.refused += 1;
                    tracing::info!(id = %id, from = %from, client = %ip, "refused: bare CR or LF in message data");
                    self.queue_reply(&Answer::BareNewline.reply());
                    return Ok(false);
                }
            };
            self.rbuf.consume(d.consumed);
            size += decoded.len() as u64;
            if size > limit {
                too_big = true;
                w = None;
            }
            if decoder.longest_line() > MAX_DATA_LINE {
                line_too_long = true;
                w = None;
            }
            fixed.clear();
            fixer.process(&decoded, &mut fixed);
            if d.finished {
                header_len = fixer.finish(&mut fixed).header_len;
                if header_len > MAX_HEADER_SECTION {
                    w = None;
                }
            }
            if let Some(wr) = w.as_mut()
                && let Err(e) = wr.write(&fixed)
            {
                io_error = Some(e);
                w = None;
            }
            if d.finished {
                break;
            }
        }
        let reply = if line_too_long {
            Answer::DataLineTooLong {
                limit: MAX_DATA_LINE + 2,
            }
            .reply()
        } else if header_len > MAX_HEADER_SECTION {
            Answer::HeaderTooBig {
                limit: MAX_HEADER_SECTION,
            }
            .reply()
        } else if too_big {
            Answer::MessageTooBig { limit }.reply()
        } else if let Some(e) = io_error {
            tracing::error!(id = %id, error = %e, "cannot spool message");
            Answer::queue_error(&crate::queue::QueueError::Io(e)).reply()
        } else if let Some(wr) = w.take() {
            let body = wr.body_len();
            let limit = self.gates.server.data_end_timeout.value;
            let committed = smol::future::or(async { Some(q.commit(wr).await) }, async {
                smol::Timer::after(limit).await;
                None
            });
            match committed.await {
                None => {
                    // A message the writer has not reached yet is dropped
                    // (it sees nobody waits); one already written, its sync
                    // stuck, becomes durable later, and the client's retry
                    // makes a duplicate: better than a client that times out
                    // unsure, or a message lost.
                    tracing::error!(id = %id, client = %self.peer.ip(), limit = %self.gates.server.data_end_timeout, "queue storage did not confirm the message within data_end_timeout; answered 451 (if it was already written it will still be delivered, and the client's retry then twice); check the storage device");
                    Answer::StorageTooSlow.reply()
                }
                Some(Ok(id)) => {
                    tracing::info!(id = %id, from = %from, rcpts = rcpt_count, size = body, client = %self.peer.ip(), "queued");
                    self.stats.accepted += 1;
                    if let Some(o) = &self.observer {
                        o.accepted();
                    }
                    Answer::Queued { id }.reply()
                }
                Some(Err(e)) => {
                    tracing::warn!(id = %id, error = %e, client = %self.peer.ip(), "message not queued");
                    Answer::queue_error(&e).reply()
                }
            }
        } else {
            Answer::LocalError.reply()
        };
        if !reply.is_positive() {
            self.stats.refused += 1;
            if too_big {
                tracing::info!(id = %id, from = %from, size, limit, client = %self.peer.ip(), "refused: message too big");
            }
        }
        self.queue_reply(&reply);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::session::tests::{World, gates, world, world_with};
    use smol::net::unix::UnixStream;
    use std::sync::Arc;

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
            let mut conn = Conn::new(
                Stream::Plain(server),
                peer,
                gates(w),
                ClientFacts::allowed_plain(),
                false,
            );
            let (res, out) = smol::future::zip(
                async {
                    let r = conn.run().await;
                    drop(conn);
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
