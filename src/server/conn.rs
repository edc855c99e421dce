//! One inbound connection: owns the socket, the read buffer and the
//! timeouts, feeds commands to [`SessionCore`] and streams DATA into the
//! queue.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::session::{Gates, SessionCore, Step, queue_error_reply};
use crate::smtp::command::{self, MAX_COMMAND_LINE};
use crate::smtp::header::{HeaderFixer, Received, format_date};
use crate::smtp::reply::EnhancedStatus as S;
use crate::smtp::{Address, BareNewline, DataDecoder, Reply};

/// Read buffer size: a few command lines, or one chunk of DATA.
const READ_BUF: usize = 16 * 1024;
/// Errors (bad commands, refusals of syntax) before we hang up (421).
pub const MAX_ERRORS: u32 = 20;

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
    smol::future::or(async { Ok(f.await) }, async {
        smol::Timer::after(dur).await;
        Err(ConnError::Timeout)
    })
    .await
}

/// The driver of one connection.
pub struct Conn<'a, T> {
    stream: T,
    rbuf: ReadBuf,
    wbuf: Vec<u8>,
    peer: SocketAddr,
    gates: Gates<'a>,
    core: SessionCore,
    deadline: Instant,
    errors: u32,
    /// Closed when the daemon stops (issue 6): between commands that ends
    /// the session with 421.
    stop: Option<smol::channel::Receiver<()>>,
    /// Connection stats for the log line.
    pub stats: ConnStats,
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
    /// A connection from `peer` that passed the connect-time checks.
    pub fn new(stream: T, peer: SocketAddr, gates: Gates<'a>) -> Self {
        let deadline = Instant::now() + gates.server.session_timeout.value;
        Conn {
            stream,
            rbuf: ReadBuf::new(),
            wbuf: Vec::with_capacity(512),
            peer,
            gates,
            core: SessionCore::new(),
            deadline,
            errors: 0,
            stop: None,
            stats: ConnStats::default(),
        }
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
        self.flush().await?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnError::SessionLimit);
        }
        let t = self.gates.server.command_timeout.value.min(left);
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
            let bye = Reply::new(421, S::new(4, 7, 0), "Too many errors, closing connection");
            self.send(&bye).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Serve the session to its end.
    pub async fn run(&mut self) -> Result<(), ConnError> {
        let greeting = Reply::plain(220, format!("{} ESMTP postern", self.gates.hostname));
        self.send(&greeting).await?;
        loop {
            let Some(line) = self.next_line_or_stop().await? else {
                let bye = Reply::new(
                    421,
                    S::new(4, 3, 2),
                    format!("{} shutting down, try again later", self.gates.hostname),
                );
                self.send(&bye).await?;
                return Ok(());
            };
            let len = match line {
                Line::TooLong => {
                    let r = Reply::new(500, S::new(5, 5, 2), "Error: line too long");
                    if !self.error(r).await? {
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
                    if !self.error(e.reply()).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            match self.core.command(cmd, &self.gates) {
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
                    self.data(msg).await?;
                    self.core.reset();
                }
            }
        }
    }

    /// Receive one message after DATA.
    async fn data(&mut self, msg: crate::queue::NewMessage) -> Result<(), ConnError> {
        let q = self.gates.queue;
        let rcpt_count = msg.rcpts.len();
        let from = msg.from.clone().unwrap_or_default();
        let single_rcpt = if rcpt_count == 1 {
            msg.rcpts.first().and_then(|r| Address::parse(r).ok())
        } else {
            None
        };
        let mut w = Some(q.begin(msg));
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
            with: if self.core.esmtp { "ESMTP" } else { "SMTP" },
            id: &id_text,
            for_rcpt: single_rcpt.as_ref(),
            unix_secs: now,
        }
        .render();
        let mut fixer = HeaderFixer::new(
            format_date(now),
            format!("<{id_text}.postern@{}>", self.gates.hostname),
        );
        let mut decoder = DataDecoder::new(BareNewline::Normalize);
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
        self.send(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))
            .await?;
        let mut size: u64 = 0;
        loop {
            if self.rbuf.data().is_empty() {
                self.fill().await?;
            }
            decoded.clear();
            let res = decoder.decode(self.rbuf.data(), &mut decoded);
            let d = match res {
                Ok(d) => d,
                Err(_) => {
                    // Only in reject mode; normalize never errs.
                    self.rbuf.clear();
                    w = None;
                    continue;
                }
            };
            self.rbuf.consume(d.consumed);
            size += decoded.len() as u64;
            if size > limit {
                too_big = true;
                w = None;
            }
            fixed.clear();
            fixer.process(&decoded, &mut fixed);
            if d.finished {
                fixer.finish(&mut fixed);
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
        let reply = if too_big {
            Reply::new(
                552,
                S::new(5, 3, 4),
                format!("Message size exceeds fixed limit of {limit} octets"),
            )
        } else if let Some(e) = io_error {
            tracing::error!(id = %id, error = %e, "cannot spool message");
            queue_error_reply(&crate::queue::QueueError::Io(e))
        } else if let Some(wr) = w.take() {
            let body = wr.body_len();
            match q.commit(wr).await {
                Ok(id) => {
                    tracing::info!(id = %id, from = %from, rcpts = rcpt_count, size = body, client = %self.peer.ip(), "queued");
                    self.stats.accepted += 1;
                    Reply::new(250, S::new(2, 0, 0), format!("Ok: queued as {id}"))
                }
                Err(e) => {
                    tracing::warn!(id = %id, error = %e, client = %self.peer.ip(), "message not queued");
                    queue_error_reply(&e)
                }
            }
        } else {
            Reply::new(451, S::new(4, 3, 0), "Local error in processing")
        };
        if !reply.is_positive() {
            self.stats.refused += 1;
            if too_big {
                tracing::info!(id = %id, from = %from, size, limit, client = %self.peer.ip(), "refused: message too big");
            }
        }
        self.queue_reply(&reply);
        Ok(())
    }
}
