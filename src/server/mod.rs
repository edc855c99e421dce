//! Inbound SMTP: the listeners, the connection cap, the connect-time policy
//! check, and one task per session.
//!
//! Reload and stop (issue 6): the state sessions share lives in a
//! [`Current`], swapped whole on SIGHUP. Each session takes the snapshot in
//! force when it was accepted and keeps it to its end, so a reload never
//! changes the rules under an open session. A stop closes [`Current`]'s stop
//! channel: sessions waiting for a command get 421, sessions in DATA finish.

pub mod conn;
pub mod session;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use smol::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::policy::Policy;
use crate::queue::Queue;
use crate::smtp::Reply;
use crate::smtp::reply::EnhancedStatus;
use conn::{Conn, ConnError};
use session::Gates;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another mail server using that port?)")]
    Bind {
        /// The address from `[server] listen`.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
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
    /// Outbound routes (issue 3): aliases at RCPT, the upstream size limit.
    pub routes: Option<crate::delivery::SharedRoutes>,
}

impl Shared {
    /// Build from a config and an open queue.
    pub fn new(config: Config, queue: Queue) -> Shared {
        let policy = Policy::new(&config.policy);
        let slots = Arc::new(smol::lock::Semaphore::new(config.server.max_connections));
        Shared {
            config,
            policy,
            queue,
            slots,
            routes: None,
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

/// Bind one listen address.
pub async fn bind_one(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Accept connections on `listener` until the task is dropped; each session
/// runs on the state in force when it was accepted.
pub async fn serve(listener: TcpListener, current: Arc<Current>) {
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
        smol::spawn(async move { handle(stream, peer, shared, stop).await }).detach();
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: smol::channel::Receiver<()>,
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
    let Some(_permit) = shared.slots.try_acquire_arc() else {
        tracing::warn!(client = %ip, max = shared.config.server.max_connections, "refused: too many connections");
        let r = Reply::new(
            421,
            EnhancedStatus::new(4, 7, 0),
            "Too many connections, try again later",
        );
        refuse(&mut stream, &r).await;
        return;
    };
    if let Err(refusal) = shared.policy.check_client(ip) {
        tracing::info!(client = %ip, reason = %refusal, "refused at connect");
        refuse(&mut stream, &refusal.reply_for(ip)).await;
        return;
    }
    let gates = Gates {
        hostname: &shared.config.hostname,
        server: &shared.config.server,
        policy: &shared.policy,
        queue: &shared.queue,
        routes: shared.routes.as_ref(),
    };
    let mut conn = Conn::new(stream, peer, gates);
    conn.stop_on(stop);
    let result = conn.run().await;
    let outcome = match &result {
        Ok(()) | Err(ConnError::Eof) => "closed".to_string(),
        Err(e) => e.to_string(),
    };
    tracing::info!(
        client = %ip,
        helo = %conn.stats.helo.as_deref().unwrap_or("-"),
        accepted = conn.stats.accepted,
        refused = conn.stats.refused,
        secs = started.elapsed().as_secs(),
        end = %outcome,
        "connection"
    );
    if let Err(ConnError::Timeout | ConnError::SessionLimit) = result {
        let r = Reply::new(
            421,
            EnhancedStatus::new(4, 4, 2),
            "Timeout, closing connection",
        );
        let _ = conn.send(&r).await;
    }
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
