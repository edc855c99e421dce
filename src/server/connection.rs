//! The connection layer of an inbound session: the client's byte stream
//! (plain, or TLS after STARTTLS or on the implicit-TLS port), the read and
//! write buffers and the time limits. It reads lines and chunks and writes
//! replies; what they mean is the session's business ([`super::session`]),
//! and joining the two is the handler's ([`super::handler`]).
//!
//! Uses `tls` (the stream type and the handshake), `deadline` and `smtp`
//! (a reply's wire form, the command line bound).

use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::smtp::Reply;
use crate::smtp::command::MAX_COMMAND_LINE;
use crate::tls::Stream;

/// Read buffer size: a few command lines, or one chunk of DATA.
pub const READ_BUF: usize = 16 * 1024;

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The client went quiet for longer than the idle limit in force
    /// (greeting_timeout, command_timeout or data_timeout), or did not read
    /// our replies within command_timeout.
    #[error("timeout")]
    Timeout,
    /// The session ran past session_timeout.
    #[error("session time limit")]
    SessionLimit,
    /// The client closed the connection between commands.
    #[error("client closed connection")]
    Eof,
    /// The client closed the connection in the middle of a line or a
    /// message.
    #[error("client closed connection mid-line")]
    Truncated,
    /// The TLS handshake failed (or took longer than its limit).
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One line from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The line without its line ending (CRLF, or a bare LF).
    Text(Vec<u8>),
    /// Longer than [`MAX_COMMAND_LINE`]; skipped through its end without
    /// being buffered.
    TooLong,
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
        self.buf.get(self.start..self.end).unwrap_or_default()
    }
    fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.clear();
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

/// The client's stream with its buffers and limits.
pub struct Connection<T> {
    stream: Stream<T>,
    rbuf: ReadBuf,
    wbuf: Vec<u8>,
    /// How long a write may wait for the client to read (command_timeout):
    /// a client that stops reading is cut like one that stops writing.
    write_timeout: Duration,
    /// session_timeout after the start: no read goes past it.
    deadline: Instant,
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("stream", &self.stream)
            .field("buffered", &self.rbuf.data().len())
            .field("unsent", &self.wbuf.len())
            .finish()
    }
}

/// `f`, unless `dur` passes first.
async fn timeout<T>(
    dur: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, ConnError> {
    crate::deadline::timeout(dur, f)
        .await
        .map_err(|_| ConnError::Timeout)
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// A connection over `stream`; writes wait at most `write_timeout`, and
    /// reading stops `session_limit` from now.
    pub fn new(stream: Stream<T>, write_timeout: Duration, session_limit: Duration) -> Self {
        Connection {
            stream,
            rbuf: ReadBuf::new(),
            wbuf: Vec::with_capacity(512),
            write_timeout,
            deadline: Instant::now() + session_limit,
        }
    }

    /// Has the client sent anything yet? Looks only at what has already
    /// arrived: no delay for anyone.
    pub async fn input_waiting(&mut self) -> Result<bool, ConnError> {
        match smol::future::poll_once(self.rbuf.fill(&mut self.stream)).await {
            Some(Ok(0)) => Err(ConnError::Eof),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(ConnError::Io(e)),
            None => Ok(false),
        }
    }

    /// Some input is buffered (the client sent ahead of our replies).
    pub fn has_buffered(&self) -> bool {
        !self.rbuf.data().is_empty()
    }

    /// A whole line is buffered: [`Connection::read_line`] will not wait.
    pub fn line_buffered(&self) -> bool {
        self.rbuf.data().contains(&b'\n')
    }

    /// The next line, waiting at most `idle` for more input. Replies queued
    /// so far go out before any wait (RFC 2920: answer a whole pipelined
    /// group before reading more).
    pub async fn read_line(&mut self, idle: Duration) -> Result<Line, ConnError> {
        loop {
            let data = self.rbuf.data();
            if let Some(i) = memchr::memchr(b'\n', data) {
                let len = i + 1;
                if len > MAX_COMMAND_LINE {
                    self.rbuf.consume(len);
                    return Ok(Line::TooLong);
                }
                let mut text = data[..i].to_vec();
                if text.last() == Some(&b'\r') {
                    text.pop();
                }
                self.rbuf.consume(len);
                return Ok(Line::Text(text));
            }
            if data.len() >= MAX_COMMAND_LINE {
                // Skip to the end of this overlong line without buffering it.
                loop {
                    let d = self.rbuf.data();
                    if let Some(i) = memchr::memchr(b'\n', d) {
                        self.rbuf.consume(i + 1);
                        return Ok(Line::TooLong);
                    }
                    let n = d.len();
                    self.rbuf.consume(n);
                    self.fill(idle).await?;
                }
            }
            self.fill(idle).await?;
        }
    }

    /// What is buffered, reading more (at most `idle`) when nothing is.
    /// [`Connection::consume`] says how much of it was used.
    pub async fn read_chunk(&mut self, idle: Duration) -> Result<&[u8], ConnError> {
        if self.rbuf.data().is_empty() {
            self.fill(idle).await?;
        }
        Ok(self.rbuf.data())
    }

    /// `n` octets of [`Connection::read_chunk`]'s input were used.
    pub fn consume(&mut self, n: usize) {
        self.rbuf.consume(n);
    }

    /// Read more input, sending pending replies first. EOF with a partial
    /// line buffered is [`ConnError::Truncated`].
    async fn fill(&mut self, idle: Duration) -> Result<(), ConnError> {
        self.flush().await?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnError::SessionLimit);
        }
        let n = timeout(idle.min(left), self.rbuf.fill(&mut self.stream)).await??;
        if n == 0 {
            return Err(if self.rbuf.data().is_empty() {
                ConnError::Eof
            } else {
                ConnError::Truncated
            });
        }
        Ok(())
    }

    /// Add a reply to what goes out at the next flush.
    pub fn queue_reply(&mut self, r: &Reply) {
        r.write_to(&mut self.wbuf);
    }

    /// Send what is queued.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let t = self.write_timeout;
        timeout(t, self.stream.write_all(&self.wbuf)).await??;
        timeout(t, self.stream.flush()).await??;
        self.wbuf.clear();
        Ok(())
    }

    /// Send one reply now (after anything queued).
    pub async fn write_reply(&mut self, r: &Reply) -> Result<(), ConnError> {
        self.queue_reply(r);
        self.flush().await
    }

    /// Run the server side of TLS over the plain stream, within `limit`.
    /// Input buffered before it is dropped (the session refuses commands
    /// pipelined after STARTTLS before it gets here; nothing sent in clear
    /// may count as sent over TLS).
    pub async fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        limit: Duration,
    ) -> Result<(), ConnError> {
        self.flush().await?;
        let Some(plain) = self.stream.take_plain() else {
            return Err(ConnError::Handshake(std::io::Error::other(
                "TLS is already on",
            )));
        };
        self.rbuf.clear();
        match timeout(limit, crate::tls::accept(config, plain)).await {
            Ok(Ok(tls)) => {
                self.stream = tls;
                Ok(())
            }
            Ok(Err(e)) => Err(ConnError::Handshake(e)),
            Err(_) => Err(ConnError::Handshake(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "handshake timed out",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::net::unix::UnixStream;

    const LONG: Duration = Duration::from_secs(60);

    fn pair() -> (Connection<UnixStream>, UnixStream) {
        let (server, client) = UnixStream::pair().unwrap();
        (Connection::new(Stream::Plain(server), LONG, LONG), client)
    }

    #[test]
    fn lines_end_in_crlf_or_lf_and_a_clean_eof_is_told_from_a_cut_one() {
        smol::block_on(async {
            let (mut c, mut client) = pair();
            client.write_all(b"EHLO a\r\nNOOP\nQUI").await.unwrap();
            drop(client);
            assert_eq!(
                c.read_line(LONG).await.unwrap(),
                Line::Text(b"EHLO a".to_vec())
            );
            assert_eq!(
                c.read_line(LONG).await.unwrap(),
                Line::Text(b"NOOP".to_vec())
            );
            assert!(matches!(c.read_line(LONG).await, Err(ConnError::Truncated)));

            let (mut c, mut client) = pair();
            client.write_all(b"QUIT\r\n").await.unwrap();
            drop(client);
            assert_eq!(
                c.read_line(LONG).await.unwrap(),
                Line::Text(b"QUIT".to_vec())
            );
            assert!(matches!(c.read_line(LONG).await, Err(ConnError::Eof)));
        });
    }

    #[test]
    fn an_overlong_line_is_skipped_whole() {
        smol::block_on(async {
            let (mut c, mut client) = pair();
            let mut long = vec![b'x'; 3 * MAX_COMMAND_LINE];
            long.extend_from_slice(b"\r\nNOOP\r\n");
            let write = async {
                client.write_all(&long).await.unwrap();
                client
            };
            let (client, first) = smol::future::zip(write, c.read_line(LONG)).await;
            assert_eq!(first.unwrap(), Line::TooLong);
            assert_eq!(
                c.read_line(LONG).await.unwrap(),
                Line::Text(b"NOOP".to_vec())
            );
            drop(client);
        });
    }

    #[test]
    fn replies_go_out_before_a_read_waits() {
        smol::block_on(async {
            let (mut c, mut client) = pair();
            c.queue_reply(&Reply::plain(250, "queued"));
            let read = async { c.read_line(LONG).await };
            let talk = async {
                let mut b = [0u8; 64];
                let n = client.read(&mut b).await.unwrap();
                assert_eq!(&b[..n], b"250 queued\r\n");
                client.write_all(b"QUIT\r\n").await.unwrap();
            };
            let (line, ()) = smol::future::zip(read, talk).await;
            assert_eq!(line.unwrap(), Line::Text(b"QUIT".to_vec()));
        });
    }

    #[test]
    fn a_chunk_is_what_is_buffered_until_consumed() {
        smol::block_on(async {
            let (mut c, mut client) = pair();
            client.write_all(b"abc").await.unwrap();
            assert_eq!(c.read_chunk(LONG).await.unwrap(), b"abc");
            c.consume(1);
            assert_eq!(c.read_chunk(LONG).await.unwrap(), b"bc");
            c.consume(2);
            drop(client);
            assert!(matches!(c.read_chunk(LONG).await, Err(ConnError::Eof)));
        });
    }

    #[test]
    fn a_silent_client_times_out() {
        smol::block_on(async {
            let (mut c, _client) = pair();
            let r = c.read_line(Duration::from_millis(10)).await;
            assert!(matches!(r, Err(ConnError::Timeout)), "{r:?}");
        });
    }
}
