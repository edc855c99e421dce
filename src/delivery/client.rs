//! The SMTP client towards a smarthost: connect, TLS (implicit or
//! STARTTLS), EHLO, AUTH, then any number of messages over the connection,
//! each with a per-recipient outcome. Timeouts follow RFC 5321 §4.5.3.2.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;

use crate::config::{SmarthostConfig, TlsMode};
use crate::dns::{DnsError, Resolver};
use crate::queue::{FLAG_8BITMIME, FLAG_SMTPUTF8};
use crate::smtp::reply::MAX_REPLY_LINE;
use crate::smtp::{Capabilities, DotStuffer, Reply, ReplyParser};

/// RFC 5321 §4.5.3.2.6: wait at least 10 minutes for the reply to the
/// final dot; giving up sooner is how duplicates are made.
const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

/// Why talking to the smarthost failed. Everything here is temporary for
/// the messages involved (they stay queued), except a permanent reply,
/// which [`ClientError::reply`] exposes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The name did not resolve.
    #[error("{0}")]
    Dns(#[from] DnsError),
    /// No address accepted a TCP connection.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS with {host} failed: {source}")]
    Tls {
        /// The name verified.
        host: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A reply did not come in time.
    #[error("timeout waiting for {0}")]
    Timeout(&'static str),
    /// The server said something we did not expect at this step.
    #[error("{stage}: {}", reply.to_log_string())]
    Unexpected {
        /// What we were doing.
        stage: &'static str,
        /// What the server said.
        reply: Reply,
    },
    /// `tls = "starttls"` but the server does not offer it.
    #[error("server does not offer STARTTLS, which tls = \"starttls\" requires")]
    NoStartTls,
    /// `username` is set but no mechanism we speak is offered.
    #[error("server offers no AUTH mechanism we support (PLAIN, LOGIN); offered: {0}")]
    NoAuthMechanism(String),
    /// The password file could not be read.
    #[error("cannot read password_file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server broke the protocol (bad reply syntax, overlong line).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection failed mid-way.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
}

/// Plain TCP or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Everything needed to reach one smarthost; built once per config.
#[derive(Debug)]
pub struct Smarthost {
    /// `[upstream]`.
    pub cfg: SmarthostConfig,
    /// Our EHLO name.
    pub ehlo: String,
    /// rustls config (trust anchors); `None` when tls = none.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Name resolution.
    pub resolver: Resolver,
}

/// The envelope and body source of one message to send.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Envelope sender, empty for `<>`.
    pub from: &'a str,
    /// Recipients.
    pub rcpts: Vec<&'a str>,
    /// FLAG_* bits from the queue.
    pub flags: u8,
    /// Body size, for SIZE=.
    pub size: u64,
}

/// Per-recipient result of one message.
#[derive(Debug, Clone)]
pub enum RcptResult {
    /// Accepted after the final dot.
    Sent(Reply),
    /// 4xx at some step, or the connection failed.
    Deferred(String),
    /// 5xx at some step.
    Failed(Reply),
}

/// An open, ready session with the smarthost.
pub struct Client {
    stream: Stream,
    rbuf: Vec<u8>,
    parser: ReplyParser,
    caps: Capabilities,
    /// `host[ip]:port`, for logs.
    pub relay: String,
    timeout: Duration,
    /// Set when the connection must not be used again.
    pub broken: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.relay)
    }
}

async fn timeout<T>(
    dur: Duration,
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    smol::future::or(f, async {
        smol::Timer::after(dur).await;
        Err(ClientError::Timeout(what))
    })
    .await
}

impl Client {
    /// Connect, greet, secure and authenticate.
    pub async fn connect(sh: &Smarthost) -> Result<Client, ClientError> {
        let cfg = &sh.cfg;
        let addrs = sh.resolver.lookup_ip(&cfg.host).await?;
        let mut last: Option<(SocketAddr, std::io::Error)> = None;
        let mut tcp = None;
        for ip in addrs {
            let addr = SocketAddr::new(ip, cfg.port);
            let attempt = smol::future::or(TcpStream::connect(addr), async {
                smol::Timer::after(cfg.connect_timeout.value).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })
            .await;
            match attempt {
                Ok(s) => {
                    tcp = Some((s, addr));
                    break;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let (tcp, addr) = match (tcp, last) {
            (Some(t), _) => t,
            (None, Some((addr, source))) => return Err(ClientError::Connect { addr, source }),
            (None, None) => {
                return Err(ClientError::Dns(DnsError::NoSuchHost(cfg.host.clone())));
            }
        };
        let _ = tcp.set_nodelay(true);
        let relay = format!("{}[{}]:{}", cfg.host, addr.ip(), addr.port());
        let stream = if cfg.tls == TlsMode::Implicit {
            Stream::Tls(Box::new(handshake(sh, tcp).await?))
        } else {
            Stream::Plain(tcp)
        };
        let mut c = Client {
            stream,
            rbuf: Vec::with_capacity(1024),
            parser: ReplyParser::new(),
            caps: Capabilities::default(),
            relay,
            timeout: cfg.command_timeout.value,
            broken: false,
        };
        let greeting = c.read_reply("greeting").await?;
        if greeting.code != 220 {
            return Err(ClientError::Unexpected {
                stage: "greeting",
                reply: greeting,
            });
        }
        c.ehlo(&sh.ehlo).await?;
        if cfg.tls == TlsMode::Starttls {
            if !c.caps.starttls {
                return Err(ClientError::NoStartTls);
            }
            c.send_line("STARTTLS").await?;
            let r = c.read_reply("STARTTLS").await?;
            if r.code != 220 {
                return Err(ClientError::Unexpected {
                    stage: "STARTTLS",
                    reply: r,
                });
            }
            // Anything the server sent after its 220 was sent in clear and
            // could have been injected: drop it (the NO STARTTLS attacks).
            c.rbuf.clear();
            c.parser = ReplyParser::new();
            let Stream::Plain(tcp) = c.stream else {
                return Err(ClientError::Protocol("STARTTLS on a TLS stream".into()));
            };
            c.stream = Stream::Tls(Box::new(handshake(sh, tcp).await?));
            // RFC 3207 §4.2: forget everything learnt before TLS.
            c.ehlo(&sh.ehlo).await?;
        }
        if let Some(user) = &cfg.username {
            c.auth(user, cfg).await?;
        }
        Ok(c)
    }

    async fn ehlo(&mut self, name: &str) -> Result<(), ClientError> {
        self.send_line(&format!("EHLO {name}")).await?;
        let r = self.read_reply("EHLO").await?;
        if r.is_positive() {
            self.caps = Capabilities::from_ehlo(&r);
            return Ok(());
        }
        // An old server without ESMTP: HELO, and no extensions.
        self.send_line(&format!("HELO {name}")).await?;
        let r = self.read_reply("HELO").await?;
        if !r.is_positive() {
            return Err(ClientError::Unexpected {
                stage: "HELO",
                reply: r,
            });
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    async fn auth(&mut self, user: &str, cfg: &SmarthostConfig) -> Result<(), ClientError> {
        let password = match &cfg.password_file {
            Some(p) => read_password(p)?,
            None => String::new(),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let offered = |m: &str| self.caps.auth.iter().any(|a| a == m);
        let r = if offered("PLAIN") {
            let token = b64.encode(format!("\0{user}\0{password}"));
            self.send_secret(&format!("AUTH PLAIN {token}")).await?;
            self.read_reply("AUTH").await?
        } else if offered("LOGIN") {
            self.send_line("AUTH LOGIN").await?;
            let r = self.read_reply("AUTH").await?;
            if r.code != 334 {
                return Err(ClientError::Unexpected {
                    stage: "AUTH LOGIN",
                    reply: r,
                });
            }
            self.send_secret(&b64.encode(user)).await?;
            let r = self.read_reply("AUTH").await?;
            if r.code != 334 {
                return Err(ClientError::Unexpected {
                    stage: "AUTH LOGIN",
                    reply: r,
                });
            }
            self.send_secret(&b64.encode(&password)).await?;
            self.read_reply("AUTH").await?
        } else {
            return Err(ClientError::NoAuthMechanism(self.caps.auth.join(" ")));
        };
        if r.code != 235 {
            return Err(ClientError::Unexpected {
                stage: "AUTH",
                reply: r,
            });
        }
        Ok(())
    }

    /// Send one message. Connection-level failures come back as `Err` (and
    /// mark the client broken); everything the server said about the
    /// message comes back per recipient.
    pub async fn send(
        &mut self,
        msg: &Outgoing<'_>,
        body: &mut (dyn BodySource + Send),
    ) -> Result<Vec<RcptResult>, ClientError> {
        let res = self.send_inner(msg, body).await;
        if res.is_err() {
            self.broken = true;
        }
        res
    }

    async fn send_inner(
        &mut self,
        msg: &Outgoing<'_>,
        body: &mut (dyn BodySource + Send),
    ) -> Result<Vec<RcptResult>, ClientError> {
        let n = msg.rcpts.len();
        if let Some(limit) = self.caps.size.filter(|l| *l > 0)
            && msg.size > limit
        {
            let r = Reply::new(
                552,
                crate::smtp::EnhancedStatus::new(5, 3, 4),
                format!(
                    "message of {} octets exceeds the smarthost's limit of {limit}",
                    msg.size
                ),
            );
            return Ok(vec![RcptResult::Failed(r); n]);
        }
        if msg.flags & FLAG_SMTPUTF8 != 0 && !self.caps.smtputf8 {
            let r = Reply::new(
                553,
                crate::smtp::EnhancedStatus::new(5, 6, 7),
                "smarthost does not support SMTPUTF8, needed for this message's addresses",
            );
            return Ok(vec![RcptResult::Failed(r); n]);
        }
        let mut mail = format!("MAIL FROM:<{}>", msg.from);
        if msg.flags & FLAG_8BITMIME != 0 && self.caps.eightbitmime {
            mail.push_str(" BODY=8BITMIME");
        }
        if msg.flags & FLAG_SMTPUTF8 != 0 {
            mail.push_str(" SMTPUTF8");
        }
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={}", msg.size));
        }
        let mut cmds = vec![mail];
        cmds.extend(msg.rcpts.iter().map(|r| format!("RCPT TO:<{r}>")));
        cmds.push("DATA".into());
        // With PIPELINING, MAIL, every RCPT and DATA go in one write and
        // the replies are read in order (RFC 2920).
        let mut replies = Vec::with_capacity(cmds.len());
        if self.caps.pipelining {
            let mut out = String::new();
            for c in &cmds {
                out.push_str(c);
                out.push_str("\r\n");
            }
            self.write(out.as_bytes()).await?;
            for stage in std::iter::once("MAIL")
                .chain(std::iter::repeat_n("RCPT", n))
                .chain(["DATA"])
            {
                replies.push(self.read_reply(stage).await?);
            }
        } else {
            self.send_line(&cmds[0]).await?;
            let r = self.read_reply("MAIL").await?;
            let ok = r.is_positive();
            replies.push(r);
            if ok {
                for c in &cmds[1..=n] {
                    self.send_line(c).await?;
                    replies.push(self.read_reply("RCPT").await?);
                }
                // No recipient accepted: no DATA at all.
                if replies[1..].iter().any(Reply::is_positive) {
                    self.send_line("DATA").await?;
                    replies.push(self.read_reply("DATA").await?);
                }
            }
        }
        let mail_r = replies[0].clone();
        if !mail_r.is_positive() {
            self.rset().await?;
            return Ok(vec![fail_or_defer(&mail_r); n]);
        }
        let mut results: Vec<Option<RcptResult>> = (0..n)
            .map(|i| match replies.get(1 + i) {
                Some(r) if r.is_positive() => None,
                Some(r) => Some(fail_or_defer(r)),
                None => Some(RcptResult::Deferred("no reply to RCPT".into())),
            })
            .collect();
        let data_r = replies.get(1 + n);
        let accepted = results.iter().any(Option::is_none);
        match data_r {
            Some(r) if r.code == 354 => {
                if !accepted {
                    // A server that says 354 with no recipient accepted:
                    // end the empty transaction at once.
                    self.write(b".\r\n").await?;
                    let _ = self.read_reply("end of data").await?;
                    return Ok(results
                        .into_iter()
                        .map(|r| r.unwrap_or(RcptResult::Deferred("no recipient".into())))
                        .collect());
                }
            }
            Some(r) => {
                self.rset().await?;
                let outcome = fail_or_defer(r);
                return Ok(results
                    .into_iter()
                    .map(|x| x.unwrap_or_else(|| outcome.clone()))
                    .collect());
            }
            None => {
                self.rset().await?;
                return Ok(results
                    .into_iter()
                    .map(|x| x.unwrap_or(RcptResult::Deferred("no recipient accepted".into())))
                    .collect());
            }
        }
        // Stream the body, dot-stuffed, canonical CRLF.
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::with_capacity(66 << 10);
        let mut chunk = Vec::with_capacity(64 << 10);
        loop {
            body.next_chunk(&mut chunk).await?;
            if chunk.is_empty() {
                break;
            }
            out.clear();
            stuffer.encode(&chunk, &mut out);
            self.write(&out).await?;
        }
        out.clear();
        stuffer.finish(&mut out);
        self.write(&out).await?;
        let final_r = self
            .read_reply_within(DATA_END_TIMEOUT.max(self.timeout), "end of data")
            .await?;
        let outcome = if final_r.is_positive() {
            RcptResult::Sent(final_r)
        } else {
            fail_or_defer(&final_r)
        };
        for r in results.iter_mut() {
            if r.is_none() {
                *r = Some(outcome.clone());
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(RcptResult::Deferred("internal".into())))
            .collect())
    }

    async fn rset(&mut self) -> Result<(), ClientError> {
        self.send_line("RSET").await?;
        let r = self.read_reply("RSET").await?;
        if !r.is_positive() {
            self.broken = true;
        }
        Ok(())
    }

    /// Say goodbye (best effort).
    pub async fn quit(mut self) {
        if self.broken {
            return;
        }
        if self.send_line("QUIT").await.is_ok() {
            let _ = timeout(Duration::from_secs(5), "QUIT", self.read_reply_now()).await;
        }
        let _ = self.stream.close().await;
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), ClientError> {
        let t = self.timeout;
        let s = &mut self.stream;
        timeout(t, "write", async {
            s.write_all(b).await?;
            s.flush().await?;
            Ok(())
        })
        .await
    }

    async fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        tracing::trace!(relay = %self.relay, "> {line}");
        let mut b = Vec::with_capacity(line.len() + 2);
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.write(&b).await
    }

    /// Like send_line, but never logged.
    async fn send_secret(&mut self, line: &str) -> Result<(), ClientError> {
        tracing::trace!(relay = %self.relay, "> (credentials)");
        let mut b = Vec::with_capacity(line.len() + 2);
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.write(&b).await
    }

    async fn read_reply(&mut self, stage: &'static str) -> Result<Reply, ClientError> {
        self.read_reply_within(self.timeout, stage).await
    }

    async fn read_reply_within(
        &mut self,
        t: Duration,
        stage: &'static str,
    ) -> Result<Reply, ClientError> {
        timeout(t, stage, self.read_reply_now()).await
    }

    async fn read_reply_now(&mut self) -> Result<Reply, ClientError> {
        let mut tmp = [0u8; 4096];
        loop {
            while let Some(i) = self.rbuf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.rbuf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                match self.parser.push_line(&line) {
                    Ok(Some(r)) => {
                        tracing::trace!(relay = %self.relay, "< {}", r.to_log_string());
                        return Ok(r);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                }
            }
            if self.rbuf.len() > MAX_REPLY_LINE {
                return Err(ClientError::Protocol("reply line too long".into()));
            }
            let n = self.stream.read(&mut tmp).await?;
            if n == 0 {
                return Err(ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
            self.rbuf.extend_from_slice(&tmp[..n]);
        }
    }
}

fn fail_or_defer(r: &Reply) -> RcptResult {
    if r.is_permanent() {
        RcptResult::Failed(r.clone())
    } else {
        RcptResult::Deferred(r.to_log_string())
    }
}

fn read_password(path: &std::path::Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClientError::PasswordFile {
        path: path.display().to_string(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

async fn handshake(
    sh: &Smarthost,
    tcp: TcpStream,
) -> Result<futures_rustls::client::TlsStream<TcpStream>, ClientError> {
    let host = sh
        .cfg
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let config = sh
        .tls
        .clone()
        .ok_or_else(|| ClientError::Protocol("TLS requested without a TLS config".into()))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| ClientError::Tls {
            host: host.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        })?;
    let connector = futures_rustls::TlsConnector::from(config);
    let hs = async {
        connector
            .connect(name, tcp)
            .await
            .map_err(|source| ClientError::Tls {
                host: host.clone(),
                source,
            })
    };
    timeout(sh.cfg.connect_timeout.value, "TLS handshake", hs).await
}

/// Where the body comes from, chunk by chunk.
pub trait BodySource {
    /// Fill `buf` with the next chunk; empty at the end.
    fn next_chunk<'a>(
        &'a mut self,
        buf: &'a mut Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + 'a>>;
}
