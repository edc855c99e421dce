//! Inbound SMTP: the listeners, the connection cap, the connect-time policy
//! check, and one task per session.
//!
//! A session is three layers (as mini-redis splits frames, connection and
//! commands): [`connection`] holds the bytes (stream, buffers, timeouts),
//! [`session`] every rule (with AUTH in [`sasl`] and DATA in [`intake`]),
//! and [`handler`] is the loop that joins them to the queue. Every reply
//! comes from [`reply`]; [`limits`] keeps the per-client counts;
//! [`storm`] runs alert-storm suppression against the queue.
//!
//! Uses `config`, `policy`, `queue`, `auth`, `filter`, `smtp`, `tls` and
//! `deadline`.
//!
//! Reload and stop: the state sessions share lives in a
//! [`Current`], swapped whole on SIGHUP. Each session takes the snapshot in
//! force when it was accepted and keeps it to its end, so a reload never
//! changes the rules under an open session. A stop closes [`Current`]'s stop
//! channel: sessions waiting for a command get 421, sessions in DATA finish.

pub mod connection;
pub mod handler;
pub mod intake;
pub mod limits;
pub mod reason;
pub mod refusal;
pub mod reply;
pub mod sasl;
pub mod session;
pub mod state;
pub mod storm;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use smol::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::policy::Policy;
use crate::queue::Queue;
use crate::smtp::Reply;
use connection::ConnError;
use handler::{Backing, Handler, Live};
use limits::ClientLimits;
use reply::Answer;
use session::{ClientFacts, Gates};

/// How long a new client waits for the place of the idle connection it
/// had closed (that connection only has to write one line and close).
const MAKE_ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}{}", bind_hint(*addr, source))]
    Bind {
        /// The address from `[server] listen`.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// `[server] tls_cert` / `tls_key` could not be loaded.
    #[error("listener TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// What every session of this server shares.
#[derive(Debug)]
pub struct Shared {
    /// The config in force.
    pub config: Config,
    /// Relay policy built from it.
    pub policy: Policy,
    /// The queue.
    pub queue: Queue,
    /// One permit per open connection.
    pub slots: Arc<smol::lock::Semaphore>,
    /// Aliases at RCPT and the upstream size limit (the daemon shares
    /// them with delivery, which learns the limits).
    pub outbound: Option<crate::policy::Outbound>,
    /// Listener TLS, from `[server] tls_cert`/`tls_key`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `[[user]]` accounts for AUTH.
    pub users: crate::auth::Users,
    /// Per-client connection and rate limits.
    pub limits: Arc<ClientLimits>,
    /// The daemon's counters for status and metrics (kept across reloads).
    pub observer: crate::observe::Observer,
    /// `[[filter]]` rules.
    pub filters: crate::filter::Rules,
    /// Storm suppression (kept across reloads), when the daemon runs it.
    pub storm: Option<Arc<storm::Storms>>,
}

impl Shared {
    /// Build from a config and an open queue. Fails when the listener's
    /// certificate or key cannot be loaded (a reload must then keep the old
    /// `Shared`).
    pub fn new(config: Config, queue: Queue) -> Result<Shared, ServerError> {
        let policy = Policy::new(&config.policy);
        let slots = Arc::new(smol::lock::Semaphore::new(config.server.max_connections));
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        if !config.server.allow_plain_auth_clients.is_empty() && !config.users.is_empty() {
            tracing::warn!(
                networks = ?config.server.allow_plain_auth_clients,
                "AUTH is offered without TLS to allow_plain_auth_clients: passwords cross the network in clear"
            );
        }
        let users = crate::auth::Users::new(&config.users);
        let limits = Arc::new(ClientLimits::new(&config.server));
        let filters = crate::filter::Rules::new(&config.filters);
        Ok(Shared {
            config,
            policy,
            queue,
            slots,
            outbound: None,
            tls,
            users,
            limits,
            observer: crate::observe::Observer::new(),
            filters,
            storm: None,
        })
    }

    /// What `ip` may be offered, and whether it may talk to us at all:
    /// `Err` is the refusal (554) to give at connect. A client outside allow_clients
    /// is let in only when AUTH could still make it a relay client
    /// (`relay_authenticated`, users, and AUTH reachable by TLS or
    /// allow_plain_auth_clients); it then gets 550 5.7.1 at RCPT unless it
    /// logs in.
    pub fn client_facts(
        &self,
        ip: std::net::IpAddr,
        implicit_tls: bool,
    ) -> Result<ClientFacts, Answer> {
        let s = &self.config.server;
        let ip = ip.to_canonical();
        let within = |nets: &[ipnet::IpNet]| nets.iter().any(|n| n.contains(&ip));
        let check = self.policy.check_client(ip);
        let facts = ClientFacts {
            allowed: check.is_ok(),
            starttls: self.tls.is_some() && !implicit_tls && !within(&s.no_starttls_clients),
            plain_auth: within(&s.allow_plain_auth_clients),
            users: !self.users.is_empty(),
            relay_authenticated: self.config.policy.relay_authenticated,
        };
        match check {
            Ok(()) => Ok(facts),
            Err(crate::policy::Refusal::ClientNotAllowed)
                if facts.users
                    && facts.relay_authenticated
                    && (implicit_tls || facts.starttls || facts.plain_auth) =>
            {
                Ok(facts)
            }
            Err(refusal) => Err(Answer::refused(&refusal, ip)),
        }
    }
}

/// The server state in force: swapped whole on reload, plus the stop
/// signal every session watches.
#[derive(Debug)]
pub struct Current {
    shared: RwLock<Arc<Shared>>,
    /// Closed (dropped) to tell sessions to stop.
    stop_tx: std::sync::Mutex<Option<smol::channel::Sender<()>>>,
    stop_rx: smol::channel::Receiver<()>,
}

impl Current {
    /// Start with `shared` in force.
    pub fn new(shared: Shared) -> Current {
        let (tx, rx) = smol::channel::bounded(1);
        Current {
            shared: RwLock::new(Arc::new(shared)),
            stop_tx: std::sync::Mutex::new(Some(tx)),
            stop_rx: rx,
        }
    }

    /// The state in force now; a session keeps this snapshot to its end.
    pub fn get(&self) -> Arc<Shared> {
        self.shared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Put `shared` in force for sessions accepted from now on.
    pub fn replace(&self, shared: Shared) {
        *self.shared.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(shared);
    }

    /// Tell every session to stop at its next safe point (between commands).
    pub fn stop(&self) {
        self.stop_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Resolves (with an error) once [`Current::stop`] was called.
    pub fn stopping(&self) -> smol::channel::Receiver<()> {
        self.stop_rx.clone()
    }
}

/// Bind every `[server] listen` address.
pub async fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, ServerError> {
    let mut out = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        out.push(bind_one(addr).await?);
    }
    Ok(out)
}

/// What to look at when `addr` cannot be bound, by the cause.
fn bind_hint(addr: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            " (is another mail server using that port? `ss -ltnp 'sport = :{}'` names it)",
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE, which the shipped unit grants)"
                .to_string()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!(" ({} is not an address of this machine)", addr.ip())
        }
        _ => String::new(),
    }
}

/// Bind one listen address. An address this machine does not have (yet:
/// a board's LAN address comes up after boot, an IPv6 address is still
/// being checked for duplicates) is bound anyway with `IP_FREEBIND`, so the
/// service starts and takes mail on it once the address is there.
pub async fn bind_one(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            let l = bind_free(addr).map_err(|source| ServerError::Bind { addr, source })?;
            tracing::warn!(
                listen = %addr,
                "{} is not an address of this machine (yet); listening anyway (IP_FREEBIND): \
                 mail to it arrives once the address comes up",
                addr.ip()
            );
            Ok(l)
        }
        Err(source) => Err(ServerError::Bind { addr, source }),
    }
}

/// A listening socket on `addr` whether or not the address exists yet.
fn bind_free(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    // As std's bind does: a restart must not wait for old connections.
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if addr.is_ipv4() {
        sockopt::set_ip_freebind(&fd, true)?;
    } else {
        sockopt::set_ipv6_freebind(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, LISTEN_BACKLOG)?;
    TcpListener::try_from(std::net::TcpListener::from(fd))
}

/// Pending connections the kernel holds for a listener bound this way.
const LISTEN_BACKLOG: i32 = 128;

/// Accept connections on `listener` until the task is dropped; each session
/// runs on the state in force when it was accepted.
pub async fn serve(listener: TcpListener, current: Arc<Current>) {
    accept_loop(listener, current, false).await
}

/// Accept implicit-TLS connections (`[server] listen_tls`, RFC 8314).
pub async fn serve_tls(listener: TcpListener, current: Arc<Current>) {
    accept_loop(listener, current, true).await
}

async fn accept_loop(listener: TcpListener, current: Arc<Current>, implicit_tls: bool) {
    match listener.local_addr() {
        Ok(a) => tracing::info!(listen = %a, "listening"),
        Err(e) => tracing::warn!(error = %e, "listening on an address that cannot be named"),
    }
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                backoff = std::time::Duration::from_millis(10);
                x
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, don't spin.
                tracing::warn!(error = %e, "accept failed");
                smol::Timer::after(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                continue;
            }
        };
        let shared = current.get();
        let stop = current.stopping();
        smol::spawn(async move { handle(stream, peer, shared, stop, implicit_tls).await }).detach();
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: smol::channel::Receiver<()>,
    implicit_tls: bool,
) {
    let started = Instant::now();
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(peer.ip()),
        v4 => v4,
    };
    let peer = SocketAddr::new(ip, peer.port());
    let live = Live {
        queue: &shared.queue,
        outbound: shared.outbound.as_ref(),
        limits: Some(&shared.limits),
        observer: Some(&shared.observer),
        storm: shared.storm.as_deref(),
    };
    let who = refusal::Who::client(ip);
    let facts = shared.client_facts(ip, implicit_tls);
    let permit = match shared.slots.try_acquire_arc() {
        Some(p) => Some(p),
        // At the cap, a client we would serve takes the place of a silent
        // connection from an address that holds more than it does.
        None if facts.is_ok() => match shared.limits.evict_idle(ip) {
            Some(victim) => {
                tracing::info!(client = %ip, idle_from = %victim, "connection cap reached: closing an idle connection to make room");
                crate::deadline::timeout(MAKE_ROOM_WAIT, shared.slots.acquire_arc())
                    .await
                    .ok()
            }
            None => None,
        },
        None => None,
    };
    let Some(_permit) = permit else {
        let detail = format!("max={}", shared.config.server.max_connections);
        let who = refusal::Who {
            detail: Some(&detail),
            ..who
        };
        let reply = session::Services::refuse(&live, &who, &Answer::TooManyConnections);
        refuse(&mut stream, &reply).await;
        return;
    };
    let _session = shared.observer.session();
    let facts = match facts {
        Ok(f) => f,
        Err(answer) => {
            // Refused before TLS, even on the implicit-TLS port: saying 554
            // in clear costs nothing and spares a handshake.
            let reply = session::Services::refuse(&live, &who, &answer);
            refuse(&mut stream, &reply).await;
            return;
        }
    };
    let rated = !facts.allowed || shared.config.server.limit_trusted_clients;
    let client_slot = match shared.limits.connect(ip, rated) {
        Ok(slot) => slot,
        Err(why) => {
            let reply = session::Services::refuse(&live, &who, &Answer::TooManyFromClient(why));
            refuse(&mut stream, &reply).await;
            return;
        }
    };
    let gates = Gates {
        hostname: &shared.config.hostname,
        server: &shared.config.server,
        policy: &shared.policy,
        services: &live,
        client: ip,
        filters: &shared.filters,
    };
    let backing = Backing {
        queue: &shared.queue,
        tls: shared.tls.as_ref(),
        users: &shared.users,
        storm: shared.storm.as_deref(),
    };
    let stream = if implicit_tls {
        let Some(cfg) = shared.tls.clone() else {
            return;
        };
        // The handshake stands where the first command would.
        let t = shared.config.server.greeting_timeout.value;
        match crate::deadline::timeout(t, crate::tls::accept(cfg, stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let why = crate::tls::accept_failure(&e);
                tracing::info!(client = %ip, error = %why, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(client = %ip, "TLS handshake timed out");
                return;
            }
        }
    } else {
        crate::tls::Stream::Plain(stream)
    };
    let mut handler = Handler::new(stream, peer, gates, backing, facts, implicit_tls);
    handler.stop_on(stop);
    handler.watch_idle(client_slot.watch());
    handler.observe_with(shared.observer.clone());
    let result = handler.run().await;
    let outcome = match &result {
        Ok(()) | Err(ConnError::Eof) => "closed".to_string(),
        Err(e) => e.to_string(),
    };
    let stats = handler.stats();
    tracing::info!(
        client = %ip,
        helo = %crate::smtp::escaped(stats.helo.as_deref().unwrap_or("-")),
        accepted = stats.accepted,
        refused = stats.refused,
        secs = started.elapsed().as_secs(),
        end = %outcome,
        "connection"
    );
}

/// Say why and hang up, without waiting long on a client that won't read.
async fn refuse(stream: &mut TcpStream, r: &Reply) {
    use smol::io::AsyncWriteExt;
    let mut out = Vec::new();
    r.write_to(&mut out);
    let _ = smol::future::or(
        async {
            let _ = stream.write_all(&out).await;
        },
        async {
            smol::Timer::after(std::time::Duration::from_secs(5)).await;
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn shared(
        dir: &Path,
        extra_server: &str,
        policy: &str,
        tail: &str,
    ) -> Result<Shared, ServerError> {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:2525\"]\n{extra_server}\n[policy]\n{policy}\n\
             [queue]\ndir = \"q\"\n[upstream]\nkind = \"maildir\"\ndir = \"out\"\n{tail}"
        );
        let opts = crate::config::ParseOptions {
            skip_file_checks: true,
            default_hostname: Some("relay.test".into()),
        };
        let cfg = crate::config::parse_with(&text, Path::new("t.toml"), &opts).unwrap();
        let limits = crate::queue::Limits {
            max_bytes: 1 << 20,
            max_messages: 10,
            max_age: std::time::Duration::from_secs(60),
            retry_intervals: vec![std::time::Duration::from_secs(60)],
        };
        let (queue, _) = Queue::open(&dir.join("q"), limits).unwrap();
        Shared::new(cfg, queue)
    }

    #[test]
    fn an_unreadable_certificate_fails_shared_new() {
        // A reload builds a new Shared; this error keeps the old one.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
        std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
        let server = format!(
            "tls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"",
            dir.path().display()
        );
        let err = shared(dir.path(), &server, "", "").unwrap_err();
        assert!(matches!(err, ServerError::Tls(_)), "{err}");
    }

    #[test]
    fn connect_time_decision() {
        let dir = tempfile::tempdir().unwrap();
        let hash = crate::auth::hash_password(b"pw").unwrap();
        let user = format!("[[user]]\nname = \"dev\"\npassword_hash = \"{hash}\"\n");
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // Users and relay_authenticated, AUTH in clear for 10.0.0.0/8 only.
        let s = shared(
            dir.path(),
            "allow_plain_auth_clients = [\"10.0.0.0/8\"]",
            "allow_clients = [\"192.168.1.0/24\"]\ndeny_clients = [\"10.6.6.6\"]\nrelay_authenticated = true",
            &user,
        )
        .unwrap();
        let f = s.client_facts(ip("192.168.1.5"), false).unwrap();
        assert!(f.allowed && f.users && !f.starttls);
        // Outside allow, but AUTH reachable: let in, not allowed to relay yet.
        let f = s.client_facts(ip("10.1.2.3"), false).unwrap();
        assert!(!f.allowed && f.plain_auth);
        // Denied wins over AUTH.
        assert_eq!(
            s.client_facts(ip("10.6.6.6"), false)
                .unwrap_err()
                .reply()
                .code,
            554
        );
        // Outside allow and AUTH unreachable (no TLS, not a plain-auth net): 554.
        assert_eq!(
            s.client_facts(ip("172.16.0.1"), false)
                .unwrap_err()
                .reply()
                .code,
            554
        );
        // No relay_authenticated: users do not open the door.
        let dir2 = tempfile::tempdir().unwrap();
        let s = shared(
            dir2.path(),
            "allow_plain_auth_clients = [\"10.0.0.0/8\"]",
            "allow_clients = [\"192.168.1.0/24\"]",
            &user,
        )
        .unwrap();
        assert_eq!(
            s.client_facts(ip("10.1.2.3"), false)
                .unwrap_err()
                .reply()
                .code,
            554
        );
        // Default config: loopback only.
        let dir3 = tempfile::tempdir().unwrap();
        let s = shared(dir3.path(), "", "", "").unwrap();
        assert!(s.client_facts(ip("127.0.0.9"), false).is_ok());
        assert!(s.client_facts(ip("::1"), false).is_ok());
        assert_eq!(
            s.client_facts(ip("192.168.1.5"), false)
                .unwrap_err()
                .reply()
                .code,
            554
        );
    }
}
