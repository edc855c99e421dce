//! Name resolution with hickory-resolver on smol: a `RuntimeProvider` built
//! on async-io sockets and timers, so no tokio enters the tree. Resolvers come
//! from /etc/resolv.conf (and /etc/hosts); a broken or missing resolv.conf
//! never stops startup, it only makes lookups fail (and deliveries defer).
//!
//! Timeouts and retries come from resolv.conf (`options timeout:N
//! attempts:N`, 5 s and 2 when absent) for [`Resolver::from_system`], and
//! from the caller for [`Resolver::with_nameservers_timeout`]. hickory takes
//! `attempts` as retries after the first try, so a dead name server costs a
//! lookup about `timeout * (attempts + 1)` (15 s with the defaults). hickory
//! runs each name server connection as a background task on smol's global
//! executor, so lookups work from any executor.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::{DnsTcpStream, DnsUdpSocket, RuntimeProvider, Spawn, Time};
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::rr::RData;
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncWrite};
use smol::{Async, Timer};

/// Why a lookup failed. Every variant is temporary from the queue's point of
/// view except [`DnsError::NoSuchHost`], which is still only deferred for
/// smarthosts (a typo in the config is fixed by the admin, not by bouncing).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// NXDOMAIN or no A/AAAA records.
    #[error("{0}: no such host")]
    NoSuchHost(String),
    /// Timeout, SERVFAIL, no reachable name server, bad resolv.conf.
    #[error("{name}: DNS lookup failed: {reason}")]
    Failed {
        /// The name looked up.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// A resolver shared by all deliveries.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// `None` only if hickory refused to build even an empty resolver; then
    /// `degraded` says why and every name lookup fails with it.
    inner: Option<hickory_resolver::Resolver<SmolRuntime>>,
    /// Why this resolver has no name servers. Repeated in every failed
    /// lookup, because the one warning at startup scrolls away long before
    /// someone reads a deferred delivery's reason.
    degraded: Option<Arc<str>>,
    /// For resolvers built from a resolv.conf: the file, watched so that a
    /// change (DHCP, a late dnsmasq at boot) takes effect without a restart.
    watch: Option<Arc<Watch>>,
}

/// A watched resolv.conf and the resolver last built from it.
#[derive(Debug)]
struct Watch {
    path: std::path::PathBuf,
    state: std::sync::Mutex<WatchState>,
}

#[derive(Debug)]
struct WatchState {
    /// (modification time, length) when last read; `None` if unreadable.
    stamp: Option<(std::time::SystemTime, u64)>,
    /// When the file was last looked at: at most once per [`WATCH_EVERY`].
    checked: std::time::Instant,
    /// The resolver built from the file as it was at `stamp`.
    current: (
        Option<hickory_resolver::Resolver<SmolRuntime>>,
        Option<Arc<str>>,
    ),
}

/// How often a lookup may stat resolv.conf to see whether it changed.
const WATCH_EVERY: Duration = Duration::from_secs(1);

fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Resolver {
    /// From /etc/resolv.conf and /etc/hosts; falls back to an empty
    /// configuration (every lookup fails, with a warning logged) if those
    /// cannot be read.
    ///
    /// resolv.conf is watched: a change (say, DHCP writing it after postern
    /// started) takes effect at the next lookup.
    pub fn from_system() -> Resolver {
        Self::from_resolv_conf(std::path::Path::new("/etc/resolv.conf"))
    }

    /// From a resolv.conf file (plus /etc/hosts), re-read whenever it
    /// changes: each lookup checks its modification time (at most once a
    /// second) and builds a new resolver when it moved.
    pub fn from_resolv_conf(path: &std::path::Path) -> Resolver {
        let stamp = file_stamp(path);
        let mut r = Self::from_system_conf(Self::read_conf(path));
        let current = (r.inner.clone(), r.degraded.clone());
        r.watch = Some(Arc::new(Watch {
            path: path.to_owned(),
            state: std::sync::Mutex::new(WatchState {
                stamp,
                checked: std::time::Instant::now(),
                current,
            }),
        }));
        r
    }

    fn read_conf(path: &std::path::Path) -> Result<(ResolverConfig, ResolverOpts), NetError> {
        let data = std::fs::read(path).map_err(NetError::from)?;
        hickory_resolver::system_conf::parse_resolv_conf(data)
    }

    /// The hickory resolver to use now, rebuilt if a watched resolv.conf
    /// changed since it was last read.
    fn live(
        &self,
    ) -> (
        Option<hickory_resolver::Resolver<SmolRuntime>>,
        Option<Arc<str>>,
    ) {
        let Some(w) = &self.watch else {
            return (self.inner.clone(), self.degraded.clone());
        };
        let mut st = w.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked.elapsed() >= WATCH_EVERY {
            st.checked = std::time::Instant::now();
            let stamp = file_stamp(&w.path);
            if stamp != st.stamp {
                tracing::info!(file = %w.path.display(), "resolv.conf changed; using its name servers now");
                let fresh = Self::from_system_conf(Self::read_conf(&w.path));
                st.stamp = stamp;
                st.current = (fresh.inner, fresh.degraded);
            }
        }
        st.current.clone()
    }

    /// The decision behind [`Resolver::from_system`], separate so the
    /// fallback can be tested without touching /etc.
    fn from_system_conf(conf: Result<(ResolverConfig, ResolverOpts), NetError>) -> Resolver {
        match conf {
            Ok((config, opts)) => Self::build(config, opts, None),
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    "cannot use /etc/resolv.conf; DNS lookups will fail (only /etc/hosts and IP addresses work)"
                );
                let reason = format!("no name servers: /etc/resolv.conf unusable ({err})");
                Self::build(
                    ResolverConfig::from_name_servers(Vec::new()),
                    ResolverOpts::default(),
                    Some(reason),
                )
            }
        }
    }

    /// Ask exactly these name servers (UDP, falling back to TCP for
    /// truncated answers) with hickory's default timeout (5 s) and attempts
    /// (2), instead of resolv.conf. /etc/hosts still applies.
    pub fn with_nameservers(servers: Vec<SocketAddr>) -> Resolver {
        let defaults = ResolverOpts::default();
        Self::with_nameservers_timeout(servers, defaults.timeout, defaults.attempts)
    }

    /// Like [`Resolver::with_nameservers`], with the per-query `timeout`
    /// and `attempts` given. As in hickory, `attempts` counts retries after
    /// the first try, so an unresponsive server makes a lookup fail after
    /// about `timeout * (attempts + 1)`.
    pub fn with_nameservers_timeout(
        servers: Vec<SocketAddr>,
        timeout: Duration,
        attempts: usize,
    ) -> Resolver {
        let name_servers = servers
            .iter()
            .map(|server| {
                // `ConnectionConfig` is non-exhaustive: start from hickory's
                // constructors and move them to the server's port.
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut connection| {
                        connection.port = server.port();
                        connection
                    })
                    .collect();
                NameServerConfig::new(server.ip(), true, connections)
            })
            .collect();
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = attempts;
        Self::build(ResolverConfig::from_name_servers(name_servers), opts, None)
    }

    fn build(config: ResolverConfig, opts: ResolverOpts, degraded: Option<String>) -> Resolver {
        let mut builder = hickory_resolver::Resolver::builder_with_config(config, SmolRuntime);
        *builder.options_mut() = opts;
        match builder.build() {
            Ok(inner) => Resolver {
                inner: Some(inner),
                degraded: degraded.map(Arc::from),
                watch: None,
            },
            // Without TLS features hickory has no reason to fail here, but
            // if it ever does, startup must go on and lookups say why.
            Err(err) => {
                tracing::warn!(error = %err, "cannot build a DNS resolver; DNS lookups will fail");
                let reason = match degraded {
                    Some(earlier) => format!("{earlier}; resolver not built ({err})"),
                    None => format!("resolver not built ({err})"),
                };
                Resolver {
                    inner: None,
                    degraded: Some(Arc::from(reason)),
                    watch: None,
                }
            }
        }
    }

    /// A and AAAA records of `host`, IPv6 first as returned; an IP literal
    /// (`192.0.2.1`, `::1`, `[::1]`) is returned as is without a lookup.
    ///
    /// SMTP address literals (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) count as
    /// IP literals too. Names follow resolv.conf's `search`/`ndots` rules;
    /// end a name with `.` to make it absolute.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(vec![ip]);
        }
        let (inner, degraded) = self.live();
        let inner = Self::hickory(&inner, &degraded, host)?;
        match inner.lookup_ip(host).await {
            Ok(found) => {
                let ips: Vec<IpAddr> = found.iter().collect();
                if ips.is_empty() {
                    // hickory reports "no records" as an error; an empty
                    // success would mean the same thing to a caller.
                    Err(DnsError::NoSuchHost(host.to_owned()))
                } else {
                    Ok(ips)
                }
            }
            Err(err) if err.is_no_records_found() => Err(DnsError::NoSuchHost(host.to_owned())),
            Err(err) => Err(Self::failed(&degraded, host, &err)),
        }
    }

    /// MX records of `domain` as (preference, exchange) pairs, lowest
    /// preference first, exchange names in ASCII (IDNA) without the trailing
    /// dot. An empty vector means the domain exists but has no MX records
    /// (RFC 5321 §5.1: fall back to its A/AAAA records); NXDOMAIN is
    /// [`DnsError::NoSuchHost`]. A null MX (RFC 7505, "the domain accepts no
    /// mail") comes back as an empty exchange name.
    ///
    /// `domain` is always taken as absolute: mail domains are fully
    /// qualified (RFC 5321 §2.3.5), so resolv.conf's `search` never applies.
    pub async fn lookup_mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let (inner, degraded) = self.live();
        let inner = Self::hickory(&inner, &degraded, domain)?;
        let absolute = if domain.ends_with('.') {
            domain.to_owned()
        } else {
            format!("{domain}.")
        };
        match inner.mx_lookup(absolute.as_str()).await {
            Ok(lookup) => {
                // The answer section may also hold the CNAME chain that led
                // here; only the MX records matter.
                let mut mxs: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => {
                            let name = mx.exchange.to_ascii();
                            let name = name.strip_suffix('.').unwrap_or(&name).to_owned();
                            Some((mx.preference, name))
                        }
                        _ => None,
                    })
                    .collect();
                // Stable: equal preferences keep the server's order, which
                // delivery may shuffle (RFC 5321 §5.1).
                mxs.sort_by_key(|(preference, _)| *preference);
                Ok(mxs)
            }
            Err(err) if err.is_nx_domain() => Err(DnsError::NoSuchHost(domain.to_owned())),
            Err(err) if err.is_no_records_found() => Ok(Vec::new()),
            Err(err) => Err(Self::failed(&degraded, domain, &err)),
        }
    }

    fn hickory<'r>(
        inner: &'r Option<hickory_resolver::Resolver<SmolRuntime>>,
        degraded: &Option<Arc<str>>,
        name: &str,
    ) -> Result<&'r hickory_resolver::Resolver<SmolRuntime>, DnsError> {
        inner.as_ref().ok_or_else(|| DnsError::Failed {
            name: name.to_owned(),
            reason: degraded.as_deref().unwrap_or("no resolver").to_owned(),
        })
    }

    /// A readable reason for a failure that is not "no such name".
    fn failed(degraded: &Option<Arc<str>>, name: &str, err: &NetError) -> DnsError {
        let what = match err {
            NetError::Timeout => "timed out waiting for the name servers".to_owned(),
            NetError::NoConnections => "no name server reachable".to_owned(),
            NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
                format!("name server answered {code}")
            }
            NetError::Io(io) => format!("network error: {io}"),
            other => other.to_string(),
        };
        let reason = match degraded {
            Some(why) => format!("{what}; {why}"),
            None => what,
        };
        DnsError::Failed {
            name: name.to_owned(),
            reason,
        }
    }
}

/// `host` as an IP address if it is one: bare, in brackets, or as an SMTP
/// address literal (`[IPv6:…]`, RFC 5321 §4.1.3).
fn ip_literal(host: &str) -> Option<IpAddr> {
    let host = host.trim();
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let inner = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => &inner[5..],
            _ => inner,
        };
        return inner.parse().ok();
    }
    host.parse().ok()
}

// ---------------------------------------------------------------------------
// hickory's runtime hooks on smol. hickory ships only a tokio provider; these
// few types give it smol's executor, async-io's timers and sockets instead.

/// The `RuntimeProvider` the resolver is built with. It holds no state:
/// everything lives in smol's global executor and async-io's reactor.
#[derive(Debug, Clone, Copy, Default)]
struct SmolRuntime;

impl RuntimeProvider for SmolRuntime {
    type Handle = SmolHandle;
    type Timer = SmolTime;
    type Udp = SmolUdp;
    type Tcp = SmolTcp;

    fn create_handle(&self) -> SmolHandle {
        SmolHandle
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<SmolTcp>>>> {
        // hickory passes no timeout for some callers; never wait on a
        // SYN to a dead server forever (5 s is hickory's own default).
        let wait = timeout.unwrap_or(Duration::from_secs(5));
        Box::pin(async move {
            let connect = async move {
                let stream = match bind_addr {
                    None => Async::<std::net::TcpStream>::connect(server_addr).await?,
                    Some(local) => connect_from(local, server_addr).await?,
                };
                // Queries are small, whole messages: Nagle would only delay them.
                stream.get_ref().set_nodelay(true)?;
                Ok(SmolTcp(smol::net::TcpStream::from(stream)))
            };
            let expire = async move {
                Timer::after(wait).await;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TCP connect to {server_addr} timed out"),
                ))
            };
            connect.or(expire).await
        })
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        _server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<SmolUdp>>>> {
        // Binding never blocks, so do it now and hand back a ready future:
        // hickory picks random source ports and retries on a busy one, and a
        // pending future would cost it a round trip through the executor.
        let socket = std::net::UdpSocket::bind(local_addr)
            .and_then(Async::new)
            .map(SmolUdp);
        Box::pin(std::future::ready(socket))
    }
}

/// TCP connect from a chosen local address. std's `TcpStream` cannot bind
/// before connecting, so the socket is set up with rustix (what async-io
/// itself uses underneath) and then handed to async-io. Only reached when a
/// name server's config carries a `bind_addr`.
async fn connect_from(
    local: SocketAddr,
    remote: SocketAddr,
) -> io::Result<Async<std::net::TcpStream>> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto};

    let family = match remote {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let socket = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(ipproto::TCP),
    )?;
    rustix::net::bind(&socket, &local)?;
    match rustix::net::connect(&socket, &remote) {
        // Non-blocking connect: the handshake finishes in the background.
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(err) => return Err(err.into()),
    }
    let stream = Async::new_nonblocking(std::net::TcpStream::from(socket))?;
    // Writable means the handshake ended; SO_ERROR says whether it worked.
    stream.writable().await?;
    match stream.get_ref().take_error()? {
        None => Ok(stream),
        Some(err) => Err(err),
    }
}

/// Spawns hickory's background tasks (one per name server connection).
#[derive(Debug, Clone, Copy, Default)]
struct SmolHandle;

impl Spawn for SmolHandle {
    fn spawn_bg(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        // Detached: the task ends by itself once the resolver drops the
        // connection's handles, and nobody waits for its result.
        smol::spawn(future).detach();
    }
}

/// hickory's timers on async-io.
#[derive(Debug, Clone, Copy)]
struct SmolTime;

#[async_trait::async_trait]
impl Time for SmolTime {
    async fn delay_for(duration: Duration) {
        Timer::after(duration).await;
    }

    async fn timeout<F: 'static + Future + Send>(
        duration: Duration,
        future: F,
    ) -> Result<F::Output, io::Error> {
        crate::deadline::timeout(duration, future)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "DNS request timed out"))
    }
}

/// A UDP socket for hickory. hickory needs `&self` polling (one socket is
/// shared by the send and receive halves), which async-io offers through
/// `poll_readable`/`poll_writable` on `Async<UdpSocket>`.
struct SmolUdp(Async<std::net::UdpSocket>);

impl DnsUdpSocket for SmolUdp {
    type Time = SmolTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        loop {
            match self.0.get_ref().recv_from(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            // Nothing queued: register the waker. If readiness is reported at
            // once (a datagram raced in), loop and read it now.
            ready!(self.0.poll_readable(cx))?;
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.0.get_ref().send_to(buf, target) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            ready!(self.0.poll_writable(cx))?;
        }
    }
}

/// A TCP stream for hickory. A newtype only because hickory's
/// `DnsTcpStream` and smol's `TcpStream` are both foreign to this crate.
struct SmolTcp(smol::net::TcpStream);

impl DnsTcpStream for SmolTcp {
    type Time = SmolTime;
}

impl AsyncRead for SmolTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SmolTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::{Message, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, AAAA, MX};
    use hickory_resolver::proto::rr::{Name, Record, RecordType};
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
    const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x25);

    /// Upper bound on any lookup in these tests, so a bug hangs nothing.
    const BOUND: Duration = Duration::from_secs(10);

    /// Runs `fut` on smol, failing the test if it takes longer than BOUND.
    fn run<T>(fut: impl Future<Output = T>) -> T {
        smol::block_on(fut.or(async {
            Timer::after(BOUND).await;
            panic!("lookup not finished within {BOUND:?}");
        }))
    }

    /// A fake authoritative server for `postern.test.` on 127.0.0.1 (UDP):
    /// - `mail.postern.test.`: A 192.0.2.25, AAAA 2001:db8::25;
    /// - `postern.test.`: MX 20 mx2, MX 10 mx1 (deliberately unsorted);
    /// - `nomx.postern.test.`: exists (A) but has no MX;
    /// - anything else: NXDOMAIN.
    ///
    /// Returns its address and a counter of queries received; the server
    /// stops when the returned task is dropped.
    fn fake_dns() -> (SocketAddr, Arc<AtomicUsize>, smol::Task<()>) {
        let socket = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = socket.get_ref().local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let task = smol::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let reply = answer(&query).to_vec().unwrap();
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        (addr, queries, task)
    }

    fn answer(query: &Message) -> Message {
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.metadata.authoritative = true;
        reply.add_queries(query.queries.clone());
        let Some(question) = query.queries.first() else {
            reply.metadata.response_code = ResponseCode::FormErr;
            return reply;
        };
        let owner = question.name.clone();
        let record = |data: RData| Record::from_rdata(owner.clone(), 60, data);
        let name = |s: &str| Name::from_ascii(s).unwrap();
        match (
            question.name.to_ascii().to_ascii_lowercase().as_str(),
            question.query_type,
        ) {
            ("mail.postern.test.", RecordType::A) | ("nomx.postern.test.", RecordType::A) => {
                reply.add_answer(record(RData::A(A(V4))));
            }
            ("mail.postern.test.", RecordType::AAAA) => {
                reply.add_answer(record(RData::AAAA(AAAA(V6))));
            }
            ("postern.test.", RecordType::MX) => {
                reply.add_answer(record(RData::MX(MX::new(20, name("mx2.postern.test.")))));
                reply.add_answer(record(RData::MX(MX::new(10, name("mx1.postern.test.")))));
            }
            // The name exists, just not with this type: NOERROR, no answers.
            ("mail.postern.test." | "nomx.postern.test." | "postern.test.", _) => {}
            _ => reply.metadata.response_code = ResponseCode::NXDomain,
        }
        reply
    }

    /// The same zone over DNS-over-TCP (2-byte length prefix per message).
    fn fake_dns_tcp() -> (SocketAddr, smol::Task<()>) {
        use smol::io::{AsyncReadExt, AsyncWriteExt};
        let listener = smol::net::TcpListener::bind(("127.0.0.1", 0));
        let listener = smol::block_on(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let task = smol::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                smol::spawn(async move {
                    let mut len = [0u8; 2];
                    while conn.read_exact(&mut len).await.is_ok() {
                        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if conn.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let Ok(query) = Message::from_vec(&buf) else {
                            return;
                        };
                        let reply = answer(&query).to_vec().unwrap();
                        let len = u16::try_from(reply.len()).unwrap().to_be_bytes();
                        if conn.write_all(&len).await.is_err()
                            || conn.write_all(&reply).await.is_err()
                        {
                            return;
                        }
                    }
                })
                .detach();
            }
        });
        (addr, task)
    }

    #[test]
    fn lookups_over_tcp() {
        let (addr, _server) = fake_dns_tcp();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = addr.port();
        let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            addr.ip(),
            true,
            vec![tcp],
        )]);
        let resolver = Resolver::build(config, ResolverOpts::default(), None);
        let ips = run(resolver.lookup_ip("mail.postern.test")).unwrap();
        assert_eq!(ips, vec![IpAddr::V6(V6), IpAddr::V4(V4)]);
        let err = run(resolver.lookup_ip("nothere.postern.test")).unwrap_err();
        assert!(matches!(err, DnsError::NoSuchHost(_)), "{err:?}");
    }

    #[test]
    fn tcp_connect_from_bind_address() {
        use smol::io::{AsyncReadExt, AsyncWriteExt};
        run(async {
            let listener = smol::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap();
            let server = listener.local_addr().unwrap();
            // All of 127/8 is loopback on Linux: a second source address
            // shows that the bind took effect.
            let local: SocketAddr = ([127, 0, 0, 2], 0).into();
            let connect =
                SmolRuntime.connect_tcp(server, Some(local), Some(Duration::from_secs(2)));
            let (client, accepted) = smol::future::zip(connect, listener.accept()).await;
            let mut client = client.unwrap();
            let (mut peer, peer_addr) = accepted.unwrap();
            assert_eq!(peer_addr.ip(), local.ip());
            client.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            peer.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
        });
    }

    #[test]
    fn tcp_connect_refused_is_an_error() {
        // A port held by a socket that is bound but does not listen: a
        // connection to it is refused, and neither another test's listener
        // nor this connect's own source port (a TCP self-connect, which
        // succeeds) can take it meanwhile, as they could a port merely
        // freed.
        use rustix::net::{AddressFamily, SocketType, bind, getsockname, socket};
        let held = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        bind(&held, &SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = SocketAddr::try_from(getsockname(&held).unwrap()).unwrap();
        for bind in [None, Some(SocketAddr::from(([127, 0, 0, 1], 0)))] {
            let result = run(SmolRuntime.connect_tcp(addr, bind, Some(Duration::from_secs(2))));
            assert!(result.is_err(), "bind {bind:?}");
        }
    }

    #[test]
    fn lookup_ip_returns_aaaa_then_a() {
        let (addr, _queries, _server) = fake_dns();
        let resolver = Resolver::with_nameservers(vec![addr]);
        let ips = run(resolver.lookup_ip("mail.postern.test")).unwrap();
        assert_eq!(ips, vec![IpAddr::V6(V6), IpAddr::V4(V4)]);
    }

    #[test]
    fn nxdomain_is_no_such_host() {
        let (addr, _queries, _server) = fake_dns();
        let resolver = Resolver::with_nameservers(vec![addr]);
        let err = run(resolver.lookup_ip("nothere.postern.test")).unwrap_err();
        assert!(
            matches!(&err, DnsError::NoSuchHost(name) if name == "nothere.postern.test"),
            "{err:?}"
        );
        let err = run(resolver.lookup_mx("nothere.postern.test")).unwrap_err();
        assert!(matches!(err, DnsError::NoSuchHost(_)), "{err:?}");
    }

    #[test]
    fn name_without_addresses_is_no_such_host() {
        let (addr, _queries, _server) = fake_dns();
        let resolver = Resolver::with_nameservers(vec![addr]);
        // postern.test exists (it has MX records) but has no A/AAAA.
        let err = run(resolver.lookup_ip("postern.test")).unwrap_err();
        assert!(matches!(err, DnsError::NoSuchHost(_)), "{err:?}");
    }

    #[test]
    fn lookup_mx_sorted_without_trailing_dot() {
        let (addr, _queries, _server) = fake_dns();
        let resolver = Resolver::with_nameservers(vec![addr]);
        let mxs = run(resolver.lookup_mx("postern.test")).unwrap();
        assert_eq!(
            mxs,
            vec![
                (10, "mx1.postern.test".to_owned()),
                (20, "mx2.postern.test".to_owned())
            ]
        );
        // An absolute name gives the same answer.
        assert_eq!(run(resolver.lookup_mx("postern.test.")).unwrap(), mxs);
    }

    #[test]
    fn lookup_mx_empty_when_domain_has_none() {
        let (addr, _queries, _server) = fake_dns();
        let resolver = Resolver::with_nameservers(vec![addr]);
        assert_eq!(
            run(resolver.lookup_mx("nomx.postern.test")).unwrap(),
            vec![]
        );
    }

    #[test]
    fn dead_server_fails_within_bound() {
        // Bound but never read: queries vanish, as with a dead server.
        let silent = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        let addr = silent.local_addr().unwrap();
        let resolver =
            Resolver::with_nameservers_timeout(vec![addr], Duration::from_millis(200), 1);
        let started = Instant::now();
        let err = run(resolver.lookup_ip("mail.postern.test")).unwrap_err();
        let DnsError::Failed { name, reason } = &err else {
            panic!("expected Failed, got {err:?}");
        };
        assert_eq!(name, "mail.postern.test");
        assert!(!reason.is_empty());
        // 200 ms per try, a couple of tries: far below the 10 s bound.
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        let err = run(resolver.lookup_mx("postern.test")).unwrap_err();
        assert!(matches!(err, DnsError::Failed { .. }), "{err:?}");
    }

    #[test]
    fn ip_literals_skip_dns() {
        let (addr, queries, _server) = fake_dns();
        let resolver = Resolver::with_nameservers(vec![addr]);
        let cases: [(&str, IpAddr); 6] = [
            ("192.0.2.1", Ipv4Addr::new(192, 0, 2, 1).into()),
            ("::1", Ipv6Addr::LOCALHOST.into()),
            ("[::1]", Ipv6Addr::LOCALHOST.into()),
            ("[192.0.2.1]", Ipv4Addr::new(192, 0, 2, 1).into()),
            ("[IPv6:2001:db8::25]", V6.into()),
            ("[ipv6:::1]", Ipv6Addr::LOCALHOST.into()),
        ];
        for (literal, ip) in cases {
            assert_eq!(
                run(resolver.lookup_ip(literal)).unwrap(),
                vec![ip],
                "{literal}"
            );
        }
        assert_eq!(queries.load(Ordering::SeqCst), 0);
        // Sanity: the same server does get asked for a name.
        run(resolver.lookup_ip("mail.postern.test")).unwrap();
        assert!(queries.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn ip_literal_parsing() {
        assert_eq!(ip_literal("[IPv6:]"), None);
        assert_eq!(ip_literal("[]"), None);
        assert_eq!(ip_literal("[mail.example]"), None);
        assert_eq!(ip_literal("mail.example"), None);
        assert_eq!(ip_literal("[192.0.2.1"), None);
        assert_eq!(
            ip_literal("[IPv6:192.0.2.1]"),
            Some(Ipv4Addr::new(192, 0, 2, 1).into())
        );
    }

    #[test]
    fn unusable_resolv_conf_degrades_without_panic() {
        let resolver = Resolver::from_system_conf(Err(NetError::from("no nameservers found")));
        let err = run(resolver.lookup_ip("mail.postern.test")).unwrap_err();
        let DnsError::Failed { reason, .. } = &err else {
            panic!("expected Failed, got {err:?}");
        };
        assert!(reason.contains("resolv.conf"), "{reason}");
        let err = run(resolver.lookup_mx("postern.test")).unwrap_err();
        assert!(matches!(err, DnsError::Failed { .. }), "{err:?}");
        // IP literals still work.
        assert_eq!(
            run(resolver.lookup_ip("192.0.2.1")).unwrap(),
            vec![IpAddr::from([192, 0, 2, 1])]
        );
    }

    #[test]
    fn resolv_conf_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        // Missing at start (DNS not up at boot): lookups fail and say why.
        let resolver = Resolver::from_resolv_conf(&path);
        let err = run(resolver.lookup_ip("mail.postern.test")).unwrap_err();
        assert!(err.to_string().contains("resolv.conf"), "{err}");
        // DHCP writes it: after the check interval the next lookup uses it.
        std::fs::write(
            &path,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        std::thread::sleep(WATCH_EVERY + Duration::from_millis(100));
        let again = run(resolver.lookup_ip("mail.postern.test"));
        if let Err(e) = &again {
            assert!(!e.to_string().contains("resolv.conf unusable"), "{e}");
        }
    }

    #[test]
    fn from_system_builds() {
        // Whatever this machine's resolv.conf holds, building must not panic
        // or block; no lookup is made (tests stay off the real network).
        let _ = Resolver::from_system();
    }
}
