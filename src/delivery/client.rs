//! The SMTP client towards a smarthost or an MX host: find the hosts
//! (failover list, or MX records by preference), connect (address family
//! as configured, falling back to the other), TLS (implicit, required
//! STARTTLS, or opportunistic), EHLO, AUTH (PLAIN, LOGIN or XOAUTH2), then
//! any number of messages over the connection, each with a per-recipient
//! outcome. Timeouts follow RFC 5321 §4.5.3.2.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::config::{IpFamily, SmarthostConfig, TlsMode};
use crate::dns::{DnsError, Resolver};
use crate::smtp::{
    BodyType, Capabilities, DotStuffer, Notify, Recipient, Reply, ReplyReader, Ret, ReversePath,
};
use crate::tls::Stream;

pub use super::client_error::ClientError;
pub use super::hosts::{Candidate, order_addrs, order_mx};

/// RFC 5321 §4.5.3.2.6: wait at least 10 minutes for the reply to the
/// final dot; giving up sooner is how duplicates are made.
const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

/// Everything needed to reach one smarthost route (or MX route); built
/// once per config.
#[derive(Debug)]
pub struct Smarthost {
    /// `[upstream]` or the route's table.
    pub cfg: SmarthostConfig,
    /// Our EHLO name.
    pub ehlo: String,
    /// rustls config (trust anchors, client certificate); `None` when tls = none.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// For tls = "opportunistic": encrypts without verifying.
    pub tls_any: Option<Arc<rustls::ClientConfig>>,
    /// Name resolution.
    pub resolver: Resolver,
    /// XOAUTH2 tokens, when auth = "xoauth2".
    pub oauth: Option<Arc<super::oauth::TokenSource>>,
    /// kind = "mx": hosts come from the recipient domain's MX records.
    pub mx: bool,
}

/// Where `postern check --connect` shows the conversation, each line as
/// it happens (a stuck step is then visible while it is stuck); secrets
/// masked.
pub type Transcript = Arc<dyn Fn(&str) + Send + Sync>;

fn note(t: &Option<Transcript>, line: String) {
    if let Some(t) = t {
        t(&line);
    }
}

/// The envelope of one message to send, as it goes on the wire.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Envelope sender (after any rewrite).
    pub from: &'a ReversePath,
    /// Recipients, with their DSN parameters.
    pub rcpts: Vec<&'a Recipient>,
    /// `BODY=` as the client declared it.
    pub body: BodyType,
    /// The client used SMTPUTF8.
    pub smtputf8: bool,
    /// Body size, for SIZE=.
    pub size: u64,
    /// RFC 3461 `RET=`, passed on to a server that offers DSN.
    pub ret: Option<Ret>,
    /// RFC 3461 `ENVID=` (xtext), passed on to a server that offers DSN.
    pub envid: Option<&'a str>,
}

impl Outgoing<'_> {
    /// The MAIL FROM line for a server with `caps`.
    fn mail_line(&self, caps: &Capabilities) -> String {
        let mut mail = format!("MAIL FROM:<{}>", self.from);
        if self.body == BodyType::EightBitMime && caps.eightbitmime {
            mail.push_str(" BODY=8BITMIME");
        }
        if self.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        if caps.size.is_some() {
            mail.push_str(&format!(" SIZE={}", self.size));
        }
        if caps.dsn {
            // RFC 3461 §5.2: what the sender asked for goes on with the
            // message, so the next hop reports as it was asked to.
            match self.ret {
                Some(Ret::Full) => mail.push_str(" RET=FULL"),
                Some(Ret::Hdrs) => mail.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = self.envid {
                mail.push_str(&format!(" ENVID={envid}"));
            }
        }
        mail
    }

    /// The RCPT TO line of `r` for a server with `caps`.
    fn rcpt_line(r: &Recipient, caps: &Capabilities) -> String {
        let mut line = format!("RCPT TO:<{}>", r.addr);
        if caps.dsn {
            if let Some(n) = notify_value(r.notify) {
                line.push_str(&format!(" NOTIFY={n}"));
            }
            if let Some(o) = &r.orcpt {
                line.push_str(&format!(" ORCPT={o}"));
            }
        }
        line
    }
}

/// `NOTIFY=` as the wire has it; `None` when the sender said nothing.
fn notify_value(n: Notify) -> Option<String> {
    if n == Notify::UNSPECIFIED {
        return None;
    }
    if n == Notify::NEVER {
        return Some("NEVER".into());
    }
    let items: Vec<&str> = [
        (Notify::SUCCESS, "SUCCESS"),
        (Notify::FAILURE, "FAILURE"),
        (Notify::DELAY, "DELAY"),
    ]
    .into_iter()
    .filter(|(bit, _)| n.contains(*bit))
    .map(|(_, w)| w)
    .collect();
    Some(items.join(","))
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
    stream: Stream<TcpStream>,
    rbuf: Vec<u8>,
    reader: ReplyReader,
    caps: Capabilities,
    /// `host[ip]:port`, for logs.
    pub relay: String,
    timeout: Duration,
    /// Set when the connection must not be used again.
    pub broken: bool,
    /// TLS with a verified certificate (credentials may be sent).
    pub verified_tls: bool,
    transcript: Option<Transcript>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.relay)
    }
}

/// `f` bounded by `dur`; running out is [`ClientError::Timeout`] naming
/// the step.
async fn timeout<T>(
    dur: Duration,
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    crate::deadline::timeout(dur, f)
        .await
        .map_err(|_| ClientError::Timeout(what))?
}

/// The hosts to try for `domain` (MX routes) or the configured list.
pub async fn candidates(
    sh: &Smarthost,
    domain: Option<&str>,
) -> Result<Vec<Candidate>, ClientError> {
    if !sh.mx {
        return Ok(sh
            .cfg
            .hosts
            .iter()
            .map(|h| Candidate {
                host: h.host.clone(),
                port: h.port,
                tls: h.tls,
            })
            .collect());
    }
    let domain = domain.unwrap_or("");
    let mk = |host: String| Candidate {
        host,
        port: sh.cfg.port,
        tls: sh.cfg.tls,
    };
    // An address literal (`user@[192.0.2.1]`) names the host itself.
    if domain.starts_with('[') {
        return Ok(vec![mk(domain.to_string())]);
    }
    let mxs = sh.resolver.lookup_mx(domain).await?;
    if mxs.is_empty() {
        // RFC 5321 §5.1: no MX, the domain's own address records.
        return Ok(vec![mk(domain.to_string())]);
    }
    if mxs.iter().any(|(_, name)| name.is_empty()) {
        return Err(ClientError::NullMx(domain.to_string()));
    }
    Ok(order_mx(mxs).into_iter().map(mk).collect())
}

impl Client {
    /// Connect to the first host of the route that works (failover on
    /// connect failure, timeout, TLS failure, a 4xx greeting, AUTH trouble),
    /// greet, secure and authenticate. `domain`: the recipient domain, for
    /// MX routes.
    pub async fn connect(
        sh: &Smarthost,
        domain: Option<&str>,
        transcript: Option<Transcript>,
    ) -> Result<Client, ClientError> {
        let cands = candidates(sh, domain).await?;
        note(
            &transcript,
            format!(
                "-- hosts to try: {}",
                cands
                    .iter()
                    .map(|c| format!("{}:{} ({})", c.host, c.port, c.tls.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        let mut errors = Vec::new();
        let mut last = None;
        for (n, c) in cands.iter().enumerate() {
            match Self::connect_host(sh, c, transcript.clone(), true).await {
                Ok(client) => return Ok(client),
                Err(e) => {
                    // With one host the error itself says it; with several,
                    // each host's reason is noted once, here.
                    if cands.len() > 1 {
                        note(&transcript, format!("-- {}:{} failed: {e}", c.host, c.port));
                    }
                    if n + 1 < cands.len() {
                        tracing::info!(host = %c.host, port = c.port, error = %e, "host failed; trying the next one");
                    }
                    errors.push(format!("{}:{}: {e}", c.host, c.port));
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if errors.len() == 1 => Err(e),
            Some(_) => Err(ClientError::AllFailed(errors.join("; "))),
            None => Err(ClientError::Dns(DnsError::NoSuchHost(
                domain.unwrap_or("(no hosts)").to_string(),
            ))),
        }
    }

    /// One host: every address of it in order until one accepts TCP.
    async fn connect_host(
        sh: &Smarthost,
        cand: &Candidate,
        transcript: Option<Transcript>,
        try_tls: bool,
    ) -> Result<Client, ClientError> {
        let cfg = &sh.cfg;
        let all = sh.resolver.lookup_ip(&cand.host).await?;
        let addrs = order_addrs(all.clone(), cfg.ip_family);
        if addrs.is_empty() {
            let fam = if cfg.ip_family == IpFamily::Ipv4 {
                "IPv4"
            } else {
                "IPv6"
            };
            return Err(ClientError::Dns(DnsError::Failed {
                name: cand.host.clone(),
                reason: format!("no {fam} address (ip_family); it has {all:?}"),
            }));
        }
        let mut last: Option<(SocketAddr, std::io::Error)> = None;
        let mut tcp = None;
        let count = addrs.len();
        for (k, ip) in addrs.into_iter().enumerate() {
            let addr = SocketAddr::new(ip, cand.port);
            note(
                &transcript,
                format!("-- connecting to {} ({addr})", cand.host),
            );
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
                    if let Some((failed, e)) = &last {
                        tracing::info!(host = %cand.host, failed = %failed, error = %e, used = %addr, "connected after falling back to another address");
                    }
                    tcp = Some((s, addr));
                    break;
                }
                Err(e) => {
                    tracing::debug!(host = %cand.host, addr = %addr, error = %e, "connect failed");
                    // The last address's failure is the host's error.
                    if k + 1 < count {
                        note(
                            &transcript,
                            format!("-- connect {addr}: {e}; trying the next address"),
                        );
                    }
                    last = Some((addr, e));
                }
            }
        }
        let (tcp, addr) = match (tcp, last) {
            (Some(t), _) => t,
            (None, Some((addr, source))) => return Err(ClientError::Connect { addr, source }),
            (None, None) => {
                return Err(ClientError::Dns(DnsError::NoSuchHost(cand.host.clone())));
            }
        };
        note(
            &transcript,
            format!("-- connected to {} ({addr})", cand.host),
        );
        let _ = tcp.set_nodelay(true);
        let relay = format!("{}[{}]:{}", cand.host, addr.ip(), addr.port());
        let (stream, verified_tls) = if cand.tls == TlsMode::Implicit {
            let start = crate::tls::Start::Implicit;
            let s = handshake(sh, &cand.host, tcp, sh.tls.clone(), start, &transcript).await?;
            (Stream::from(s), true)
        } else {
            (Stream::Plain(tcp), false)
        };
        let mut c = Client {
            stream,
            rbuf: Vec::with_capacity(1024),
            reader: ReplyReader::new(),
            caps: Capabilities::default(),
            relay,
            timeout: cfg.command_timeout.value,
            broken: false,
            verified_tls,
            transcript: transcript.clone(),
        };
        let greeting = c.read_reply("greeting").await?;
        if greeting.code != 220 {
            return Err(ClientError::Unexpected {
                stage: "greeting",
                reply: greeting,
            });
        }
        c.ehlo(&sh.ehlo).await?;
        let want_tls = match cand.tls {
            TlsMode::Starttls => true,
            TlsMode::Opportunistic => try_tls && c.caps.starttls,
            _ => false,
        };
        if want_tls {
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
            c.reader = ReplyReader::new();
            let Some(tcp) = c.stream.take_plain() else {
                return Err(ClientError::Protocol("STARTTLS on a TLS stream".into()));
            };
            let opportunistic = cand.tls == TlsMode::Opportunistic;
            let config = if opportunistic {
                sh.tls_any.clone()
            } else {
                sh.tls.clone()
            };
            let start = crate::tls::Start::Starttls;
            match handshake(sh, &cand.host, tcp, config, start, &transcript).await {
                Ok(s) => c.stream = Stream::from(s),
                Err(e) if opportunistic => {
                    // Opportunistic: a failed handshake means plain text,
                    // on a fresh connection (RFC 7435 §4).
                    tracing::info!(host = %cand.host, error = %e, "opportunistic TLS failed; retrying in plain text");
                    return Box::pin(Self::connect_host(sh, cand, transcript, false)).await;
                }
                Err(e) => return Err(e),
            }
            c.verified_tls = !opportunistic;
            // RFC 3207 §4.2: forget everything learnt before TLS.
            c.ehlo(&sh.ehlo).await?;
        }
        if let Some(user) = &cfg.username {
            // In clear only where the admin said so (tls = "none" and
            // allow_plaintext_auth), and only to the address the config
            // check could not see when the host is a name.
            let clear_ok = cand.tls == TlsMode::None && cfg.allow_plaintext_auth;
            if !c.verified_tls && !clear_ok {
                return Err(ClientError::InsecureAuth);
            }
            if !c.verified_tls && !crate::config::is_trusted_hop(addr.ip()) {
                return Err(ClientError::ClearTextToPublic(addr));
            }
            c.auth(user, sh).await?;
        }
        Ok(c)
    }

    /// The server's EHLO capabilities.
    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// Is a pooled connection still usable? (RSET, one round trip.)
    pub async fn probe(&mut self) -> bool {
        if self.send_line("RSET").await.is_err() {
            return false;
        }
        matches!(self.read_reply("RSET").await, Ok(r) if r.is_positive())
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

    async fn auth(&mut self, user: &str, sh: &Smarthost) -> Result<(), ClientError> {
        let cfg: &SmarthostConfig = &sh.cfg;
        let b64 = base64::engine::general_purpose::STANDARD;
        let offered = |m: &str| self.caps.auth.iter().any(|a| a.eq_ignore_ascii_case(m));
        if let Some(tokens) = &sh.oauth {
            if !offered("XOAUTH2") {
                return Err(ClientError::NoAuthMechanism(format!(
                    "{} (XOAUTH2 needed for auth = \"xoauth2\")",
                    self.caps.auth.join(" ")
                )));
            }
            let token = tokens.token().await?;
            let resp = super::oauth::xoauth2_response(user, &token);
            self.send_secret(&format!("AUTH XOAUTH2 {resp}"), "AUTH XOAUTH2 ********")
                .await?;
            let mut r = self.read_reply("AUTH").await?;
            if r.code == 334 {
                // The error details come as a base64 JSON challenge; an
                // empty line ends the exchange with the final reply.
                self.send_line("").await?;
                r = self.read_reply("AUTH").await?;
            }
            if r.code != 235 {
                tokens.invalidate().await;
                return Err(ClientError::AuthRefused {
                    mechanism: "XOAUTH2",
                    reply: r,
                });
            }
            return Ok(());
        }
        let password = match &cfg.password_file {
            Some(p) => read_password(p)?,
            None => String::new(),
        };
        let (mechanism, r) = if offered("PLAIN") {
            let token = b64.encode(format!("\0{user}\0{password}"));
            self.send_secret(&format!("AUTH PLAIN {token}"), "AUTH PLAIN ********")
                .await?;
            ("PLAIN", self.read_reply("AUTH").await?)
        } else if offered("LOGIN") {
            self.send_line("AUTH LOGIN").await?;
            let r = self.read_reply("AUTH").await?;
            if r.code != 334 {
                return Err(ClientError::AuthRefused {
                    mechanism: "LOGIN",
                    reply: r,
                });
            }
            self.send_secret(&b64.encode(user), "******** (user name)")
                .await?;
            let r = self.read_reply("AUTH").await?;
            if r.code != 334 {
                return Err(ClientError::AuthRefused {
                    mechanism: "LOGIN",
                    reply: r,
                });
            }
            self.send_secret(&b64.encode(&password), "******** (password)")
                .await?;
            ("LOGIN", self.read_reply("AUTH").await?)
        } else {
            return Err(ClientError::NoAuthMechanism(self.caps.auth.join(" ")));
        };
        if r.code != 235 {
            return Err(ClientError::AuthRefused {
                mechanism,
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
        if msg.smtputf8 && !self.caps.smtputf8 {
            let r = Reply::new(
                553,
                crate::smtp::EnhancedStatus::new(5, 6, 7),
                "smarthost does not support SMTPUTF8, needed for this message's addresses",
            );
            return Ok(vec![RcptResult::Failed(r); n]);
        }
        let mut cmds = vec![msg.mail_line(&self.caps)];
        cmds.extend(msg.rcpts.iter().map(|r| Outgoing::rcpt_line(r, &self.caps)));
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
        let final_r = self.read_final_reply().await?;
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
        note(&self.transcript, format!("C: {line}"));
        let mut b = Vec::with_capacity(line.len() + 2);
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.write(&b).await
    }

    /// Like send_line, but only `shown` is logged. No length limit: an
    /// XOAUTH2 line with a Microsoft token is several KB.
    async fn send_secret(&mut self, line: &str, shown: &str) -> Result<(), ClientError> {
        tracing::trace!(relay = %self.relay, "> {shown}");
        note(&self.transcript, format!("C: {shown}"));
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
            // The reader takes what it needs and keeps at most one bounded
            // line: rbuf holds only what came after a complete reply.
            let (used, got) = self.reader.feed(&self.rbuf);
            self.rbuf.drain(..used);
            match got {
                Some(Ok(r)) => {
                    tracing::trace!(relay = %self.relay, "< {}", r.to_log_string());
                    if self.transcript.is_some() {
                        let mut out = Vec::new();
                        r.write_to(&mut out);
                        for l in String::from_utf8_lossy(&out).lines() {
                            note(&self.transcript, format!("S: {l}"));
                        }
                    }
                    return Ok(r);
                }
                Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
                None => {}
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

    /// The reply to the final dot. A reply that began with 2xx means the
    /// server took the message, even if the rest of it never came or made
    /// no sense: sending it again would deliver it twice. Such a reply
    /// counts as accepted, and the connection is not used again.
    async fn read_final_reply(&mut self) -> Result<Reply, ClientError> {
        let wait = DATA_END_TIMEOUT.max(self.timeout);
        match self.read_reply_within(wait, "end of data").await {
            Ok(r) => Ok(r),
            Err(e) => match self.reader.partial_code() {
                Some(code) if (200..300).contains(&code) => {
                    self.broken = true;
                    tracing::warn!(relay = %self.relay, code, error = %e, "the reply to the end of data began with {code} but did not complete; the message counts as accepted and is not sent again");
                    Ok(Reply::plain(
                        code,
                        format!("(the rest of the reply was lost: {e})"),
                    ))
                }
                _ => Err(e),
            },
        }
    }
}

fn fail_or_defer(r: &Reply) -> RcptResult {
    if r.is_permanent() && super::hints::is_quota(r) {
        // Quotas and rate limits clear by themselves: wait, do not bounce.
        RcptResult::Deferred(format!(
            "{} (quota or rate limit: deferred)",
            r.to_log_string()
        ))
    } else if r.is_permanent() {
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
    host: &str,
    tcp: TcpStream,
    config: Option<Arc<rustls::ClientConfig>>,
    start: crate::tls::Start,
    transcript: &Option<Transcript>,
) -> Result<futures_rustls::client::TlsStream<TcpStream>, ClientError> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let config =
        config.ok_or_else(|| ClientError::Protocol("TLS requested without a TLS config".into()))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| ClientError::Tls {
            host: host.clone(),
            reason: format!("{host:?} cannot be a TLS server name ({e})"),
        })?;
    let connector = futures_rustls::TlsConnector::from(config);
    let hs = async {
        connector.connect(name, tcp).await.map_err(|source| {
            let not_yet = source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::InvalidCertificate(
                            rustls::CertificateError::NotValidYet
                                | rustls::CertificateError::NotValidYetContext { .. }
                        )
                    )
                });
            if not_yet {
                let now = crate::smtp::format_date(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                );
                tracing::warn!(host = %host, system_time = %now, "clock not synchronised: the server's certificate is not valid yet by our clock; deferring");
                ClientError::ClockNotSynced {
                    host: host.clone(),
                    now,
                }
            } else {
                ClientError::Tls {
                    host: host.clone(),
                    reason: crate::tls::handshake_failure(&source, start),
                }
            }
        })
    };
    let s = timeout(sh.cfg.connect_timeout.value, "TLS handshake", hs).await?;
    if transcript.is_some() {
        let conn = s.get_ref().1;
        let version = conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let suite = conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        note(transcript, format!("-- TLS {version} {suite}"));
        if let Some(certs) = conn.peer_certificates() {
            for (i, c) in certs.iter().enumerate() {
                note(
                    transcript,
                    format!("-- certificate #{i}: {}", crate::tls::describe_cert(c)),
                );
            }
        }
    }
    Ok(s)
}

/// Where the body comes from, chunk by chunk.
pub trait BodySource {
    /// Fill `buf` with the next chunk; empty at the end.
    fn next_chunk<'a>(
        &'a mut self,
        buf: &'a mut Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + 'a>>;
}
