//! `postern serve`: load the config, recover the queue, start delivery and
//! the listeners, tell systemd (`sd_notify`), re-read the config on SIGHUP,
//! and stop cleanly on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::Async;
use smol::io::AsyncReadExt;

use crate::config::{self, Config};
use crate::delivery::{Delivery, Routes, SharedRoutes};
use crate::dns::Resolver;
use crate::maildrop;
use crate::notify::Notifier;
use crate::observe::{Observer, Thresholds};
use crate::policy::Outbound;
use crate::queue::{Limits, Queue};
use crate::server::storm::Storms;
use crate::server::{self, Current, Shared};

/// `STATUS=` (the line `systemctl status` shows) is sent at most this
/// often, when it changed.
const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// ... and looked at again at least this often without any event (the
/// oldest message's age grows on its own).
const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// How long a stop waits for sessions in progress (a device halfway
/// through DATA) before it closes the queue anyway.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The config file is missing or invalid.
    #[error("{0}")]
    Config(#[from] config::LoadError),
    /// The queue could not be opened.
    #[error("queue {dir}: {source}")]
    Queue {
        /// `[queue] dir`.
        dir: String,
        /// The cause.
        source: crate::queue::QueueError,
    },
    /// Delivery could not be set up.
    #[error("{0}")]
    Delivery(#[from] crate::delivery::SetupError),
    /// A listener could not be bound.
    #[error("{0}")]
    Server(#[from] server::ServerError),
    /// The status listener could not be bound.
    #[error("{0}")]
    Web(#[from] crate::web::WebError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Run the relay until SIGTERM or SIGINT; SIGHUP re-reads `config_path`.
pub fn serve(config_path: &Path) -> Result<(), DaemonError> {
    let cfg = config::load(config_path)?;
    crate::logging::init(&cfg.log_level);
    log_warnings(&cfg);
    run_with(cfg, Some(config_path))
}

/// Run the relay with an already loaded config (no reload: SIGHUP is
/// logged and ignored).
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    run_with(cfg, None)
}

/// The open listeners, by address; dropping a task closes its socket.
type Listeners = HashMap<SocketAddr, smol::Task<()>>;

fn run_with(cfg: Config, config_path: Option<&Path>) -> Result<(), DaemonError> {
    let notifier = Arc::new(Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "not notifying systemd");
        Notifier::none()
    }));
    let limits = Limits::from_config(&cfg.queue);
    let (queue, recovered) =
        Queue::open(&cfg.queue.dir, limits).map_err(|source| DaemonError::Queue {
            dir: cfg.queue.dir.display().to_string(),
            source,
        })?;
    tracing::info!(
        dir = %cfg.queue.dir.display(),
        messages = recovered.messages,
        bytes = recovered.bytes,
        set_aside = recovered.set_aside,
        "queue opened"
    );
    // Storm suppression's counts, read back and squared with the queue
    // before anything is accepted or delivered.
    let storms = Arc::new(Storms::open(
        cfg.storm.as_ref(),
        queue.clone(),
        &cfg.hostname,
        Arc::new(crate::queue::SystemClock),
    ));
    // Outbound: every route built in one place. What the listener needs of
    // it (aliases, the upstream size limit that routes learn) is policy's
    // Outbound, shared by both. A reload builds both again and swaps them.
    let outbound = Outbound::from_config(&cfg);
    let routes = SharedRoutes::new(Routes::from_config(
        &cfg,
        Resolver::from_system(),
        &outbound,
    )?);
    // What `postern status`, the status listener and STATUS= read.
    let observer = Observer::new();
    observe_config(&observer, &cfg, &routes.current());
    // Signals arrive as bytes on a pipe, read in the event loop like any
    // socket (signal-hook's self-pipe); nothing runs inside a handler.
    let stop_pipe = signal_pipe(&[signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
    let hup_pipe = signal_pipe(&[signal_hook::consts::SIGHUP])?;
    let cfg_queue_dir = cfg.queue.dir.display().to_string();
    let cfg_queue_path = cfg.queue.dir.clone();
    let result = smol::block_on(async {
        let bound = server::bind(&cfg.server.listen).await?;
        // The status listener, when configured: bound before anything
        // starts, so a port in use stops the start with a clear error.
        let web = match cfg.status.listen {
            Some(addr) => {
                let l = crate::web::bind(addr).await?;
                let src = crate::web::Source {
                    queue: queue.clone(),
                    observer: observer.clone(),
                    allow: Arc::new(cfg.status.allow_clients.clone()),
                    hostname: cfg.hostname.clone(),
                };
                Some(smol::spawn(crate::web::serve(l, src)))
            }
            None => None,
        };
        let hostname = cfg.hostname.clone();
        let upstream = describe_upstream(&cfg);
        let mut shared = Shared::new(cfg, queue.clone())?;
        shared.outbound = Some(outbound);
        shared.observer = observer.clone();
        shared.storm = Some(storms.clone());
        let (storm_stop, storm_stopping) = smol::channel::bounded::<()>(1);
        let storm_task = smol::spawn(storms.clone().run(storm_stopping));
        let slots = shared.slots.clone();
        let max_connections = shared.config.server.max_connections;
        let current = Arc::new(Current::new(shared));
        let mut listeners = Listeners::new();
        for (addr, l) in current.get().config.server.listen.iter().zip(bound) {
            listeners.insert(*addr, smol::spawn(server::serve(l, current.clone())));
        }
        // Implicit-TLS listeners (RFC 8314), in the same map.
        for addr in current.get().config.server.listen_tls.clone() {
            let l = server::bind_one(addr).await?;
            listeners.insert(addr, smol::spawn(server::serve_tls(l, current.clone())));
        }
        let delivery = smol::spawn(
            Delivery::new(queue.clone(), routes.clone(), hostname)
                .with_observer(observer.clone())
                .run(),
        );
        let _watchdog = notifier.watchdog_interval().map(|every| {
            // Pets the dog from the event loop, so a wedged loop gets us restarted.
            let n = notifier.clone();
            smol::spawn(async move {
                loop {
                    n.watchdog();
                    smol::Timer::after(every).await;
                }
            })
        });
        // `postern queue …`: the daemon is the queue's only writer.
        let control = crate::control::bind(queue.dir()).map_err(|source| DaemonError::Queue {
            dir: cfg_queue_dir.clone(),
            source: crate::queue::QueueError::Io(source),
        })?;
        let control = smol::spawn(crate::control::serve(
            control,
            queue.clone(),
            observer.clone(),
        ));
        // `postern sendmail` keeps what it cannot hand over in the drop
        // directory; taken in now and every few seconds.
        let drop_dir = maildrop::default_dir(&cfg_queue_path);
        if let Err(e) = maildrop::prepare_dir(&drop_dir) {
            tracing::error!(
                dir = %drop_dir.display(),
                error = %e,
                "maildrop: cannot prepare the drop directory; `postern sendmail` cannot keep \
                 mail while the daemon is down"
            );
        }
        let pickup = smol::spawn(pickup_loop(drop_dir, current.clone()));
        tracing::info!(version = env!("CARGO_PKG_VERSION"), upstream = %upstream, "postern started");
        notifier.ready();
        let status_line = notifier.is_active().then(|| {
            smol::spawn(status_line(
                notifier.clone(),
                queue.clone(),
                observer.clone(),
            ))
        });
        let mut stop = Async::new(stop_pipe).map_err(DaemonError::Signals)?;
        let mut hup = Async::new(hup_pipe).map_err(DaemonError::Signals)?;
        loop {
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            let got_hup =
                smol::future::or(async { stop.read(&mut a).await.map(|_| false) }, async {
                    hup.read(&mut b).await.map(|_| true)
                })
                .await;
            if let Ok(true) = got_hup {
                match config_path {
                    Some(path) => {
                        notifier.reloading();
                        let ok = reload(path, &current, &routes, &mut listeners).await;
                        // Success shows in the next status line; a failure
                        // stays on show until the state changes.
                        if !ok {
                            notifier
                                .status("accepting mail (reload failed: old config kept, see log)");
                        }
                        notifier.ready();
                    }
                    None => tracing::warn!("SIGHUP: no config file to re-read; ignored"),
                }
                continue;
            }
            break;
        }
        notifier.stopping();
        tracing::info!(
            "stopping: no new connections; idle sessions get 421, messages in DATA finish"
        );
        listeners.clear();
        current.stop();
        let deadline = Instant::now() + STOP_GRACE;
        let mut held = Vec::with_capacity(max_connections);
        for _ in 0..max_connections {
            let left = deadline.saturating_duration_since(Instant::now());
            let permit = smol::future::or(async { Some(slots.acquire_arc().await) }, async {
                smol::Timer::after(left).await;
                None
            })
            .await;
            match permit {
                Some(p) => held.push(p),
                None => {
                    tracing::warn!(
                        "sessions still open after {}s; stopping anyway",
                        STOP_GRACE.as_secs()
                    );
                    break;
                }
            }
        }
        // A delivery cut short stays queued and is tried again at start.
        pickup.cancel().await;
        if let Some(t) = status_line {
            t.cancel().await;
        }
        delivery.cancel().await;
        // The round in progress finishes (a digest and the removal of the
        // copies it sums up go together); then the counts are saved.
        drop(storm_stop);
        storm_task.await;
        storms.save_blocking();
        control.cancel().await;
        if let Some(w) = web {
            w.cancel().await;
        }
        let _ = std::fs::remove_file(crate::control::socket_path(queue.dir()));
        Ok::<(), DaemonError>(())
    });
    queue.close();
    tracing::info!("stopped");
    result
}

/// Keep systemd's `STATUS=` line (`12 queued, oldest 3h, route m365
/// failing: 535 5.7.139`) current: sent when it changed, at most every
/// [`STATUS_MIN_INTERVAL`]; looked at when something happened (mail
/// accepted or finished, a route failing or recovering) and every
/// [`STATUS_REFRESH`].
async fn status_line(notifier: Arc<Notifier>, queue: crate::queue::Queue, observer: Observer) {
    let mut last = String::new();
    loop {
        let (q, o) = (queue.clone(), observer.clone());
        let line = smol::unblock(move || crate::status::snapshot(&q, &o).summary).await;
        if line != last {
            notifier.status(&line);
            last = line;
        }
        smol::Timer::after(STATUS_MIN_INTERVAL).await;
        smol::future::or(observer.wait_changed(), async {
            smol::Timer::after(STATUS_REFRESH).await;
        })
        .await;
    }
}

/// Take in what `postern sendmail` left in `dir` while the daemon could not
/// take it, through the first listener, at start and every
/// [`maildrop::SCAN_INTERVAL`]. A temporary refusal is logged once, not at
/// every round.
async fn pickup_loop(dir: std::path::PathBuf, current: Arc<Current>) {
    let mut last_deferral: Option<String> = None;
    loop {
        let shared = current.get();
        let cfg = &shared.config;
        if let Some(&listen) = cfg.server.listen.first() {
            let addr = maildrop::listener_addr(listen);
            let helo = cfg.hostname.clone();
            // The listener enforces the real limit; this only keeps the
            // pickup from reading a file that could never be a message.
            let max = cfg
                .server
                .max_message_size
                .bytes
                .saturating_mul(4)
                .saturating_add(32 << 20);
            let d = dir.clone();
            match smol::unblock(move || maildrop::pickup(&d, addr, &helo, max)).await {
                Ok(round) => {
                    if round.deferred != last_deferral {
                        if let Some(why) = &round.deferred {
                            tracing::warn!(
                                dir = %dir.display(),
                                "maildrop: files wait: {why}; trying again every {}s",
                                maildrop::SCAN_INTERVAL.as_secs()
                            );
                        }
                        last_deferral = round.deferred;
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    if last_deferral.as_deref() != Some(&why) {
                        tracing::warn!(dir = %dir.display(), error = %e, "maildrop: cannot read");
                        last_deferral = Some(why);
                    }
                }
            }
        }
        drop(shared);
        smol::Timer::after(maildrop::SCAN_INTERVAL).await;
    }
}

/// Why a reload was refused (the old config stays in force).
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error("{0}")]
    Config(#[from] config::LoadError),
    #[error("{0}")]
    Delivery(#[from] crate::delivery::SetupError),
    #[error("{0}")]
    Server(#[from] server::ServerError),
}

/// SIGHUP: re-read the config; on success swap policy, server settings and
/// routes and open/close listeners; on any error log it and keep the old
/// config whole. Open sessions finish on the snapshot they started with;
/// the queue is not touched. Returns whether the new config is in force.
async fn reload(
    path: &Path,
    current: &Arc<Current>,
    routes: &SharedRoutes,
    listeners: &mut Listeners,
) -> bool {
    tracing::info!(config = %path.display(), "SIGHUP: reloading config");
    match try_reload(path, current, routes, listeners).await {
        Ok(()) => true,
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!("reload: {line}");
            }
            tracing::error!("reload failed: the old config stays in force");
            false
        }
    }
}

async fn try_reload(
    path: &Path,
    current: &Arc<Current>,
    routes: &SharedRoutes,
    listeners: &mut Listeners,
) -> Result<(), ReloadError> {
    let cfg = config::load(path)?;
    log_warnings(&cfg);
    let outbound = Outbound::from_config(&cfg);
    let new_routes = Routes::from_config(&cfg, Resolver::from_system(), &outbound)?;
    let old = current.get();
    for what in restart_only_changes(&old.config, &cfg) {
        tracing::warn!("reload: {what} changed; that takes effect at the next restart");
    }
    // Bind every new address before changing anything, so a port in use
    // leaves the old set of listeners and config whole.
    let mut added = Vec::new();
    for addr in &cfg.server.listen {
        if !listeners.contains_key(addr) {
            added.push((*addr, server::bind_one(*addr).await?, false));
        }
    }
    // Implicit-TLS listeners too.
    for addr in &cfg.server.listen_tls {
        if !listeners.contains_key(addr) {
            added.push((*addr, server::bind_one(*addr).await?, true));
        }
    }
    // Fallible: the listener certificate is re-read here; a bad
    // one keeps the old config whole.
    let observer = old.observer.clone();
    observe_config(&observer, &cfg, &new_routes);
    let mut shared = Shared::new(cfg, old.queue.clone())?;
    shared.observer = observer;
    // One connection cap across reloads: open sessions hold its permits.
    shared.slots = old.slots.clone();
    shared.outbound = Some(outbound);
    shared.storm = old.storm.clone();
    if let Some(s) = &shared.storm {
        s.reconfigure(shared.config.storm.as_ref(), &shared.config.hostname);
    }
    let mut keep: Vec<SocketAddr> = shared.config.server.listen.clone();
    keep.extend(shared.config.server.listen_tls.iter().copied());
    current.replace(shared);
    routes.replace(new_routes);
    // Cancelled and awaited, not just dropped: a dropped task's socket
    // closes whenever the executor gets to it, and "config reloaded" must
    // mean the old address no longer accepts.
    let gone: Vec<SocketAddr> = listeners
        .keys()
        .filter(|a| !keep.contains(a))
        .copied()
        .collect();
    for addr in gone {
        if let Some(task) = listeners.remove(&addr) {
            task.cancel().await;
            tracing::info!(listen = %addr, "reload: listener closed");
        }
    }
    for (addr, l, implicit_tls) in added {
        let task = if implicit_tls {
            smol::spawn(server::serve_tls(l, current.clone()))
        } else {
            smol::spawn(server::serve(l, current.clone()))
        };
        listeners.insert(addr, task);
    }
    tracing::info!(listeners = listeners.len(), "config reloaded");
    Ok(())
}

/// Settings a reload cannot apply in place: the queue is open with its
/// directory and limits, the connection cap is shared by open sessions, and
/// the log filter is installed once.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if format!("{:?}", old.queue) != format!("{:?}", new.queue) {
        out.push("[queue]");
    }
    if old.server.max_connections != new.server.max_connections {
        out.push("[server] max_connections");
    }
    if old.status.listen != new.status.listen
        || old.status.allow_clients != new.status.allow_clients
    {
        out.push("[status] listen or allow_clients");
    }
    if old.log_level != new.log_level {
        out.push("log_level");
    }
    if old.hostname != new.hostname {
        out.push("hostname (for delivery; the listener uses the new one)");
    }
    out
}

/// What `postern check` prints as warnings, in the log.
fn log_warnings(cfg: &Config) {
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
}

/// Tell the observer what the config in force judges by and which routes
/// it has (start, reload).
fn observe_config(observer: &Observer, cfg: &Config, routes: &Routes) {
    observer.set_thresholds(Thresholds {
        delay_warning: cfg.queue.delay_warning.value,
        route_failing_critical: cfg.status.route_failing_critical.value,
        queue_full_percent: cfg.status.queue_full_critical as u64,
        max_messages: cfg.queue.max_messages as u64,
        max_bytes: cfg.queue.max_size.bytes,
    });
    observer.set_routes(
        routes
            .routes
            .iter()
            .map(|r| (r.label.clone(), r.domains.clone()))
            .collect(),
    );
}

fn signal_pipe(sigs: &[i32]) -> Result<UnixStream, DaemonError> {
    let (read, write) = UnixStream::pair().map_err(DaemonError::Signals)?;
    for &sig in sigs {
        let w = write.try_clone().map_err(DaemonError::Signals)?;
        signal_hook::low_level::pipe::register(sig, w).map_err(DaemonError::Signals)?;
    }
    Ok(read)
}

/// The upstream, in words, for the start-up line.
fn describe_upstream(cfg: &Config) -> String {
    match cfg.outbound.routes.as_slice() {
        [only] => match &only.upstream {
            config::Upstream::Mx(s) => format!("mx port {}, {}", s.port, s.tls.words()),
            config::Upstream::Smarthost(s) => {
                format!("smarthost {}:{}, {}", s.host, s.port, s.tls.words())
            }
            config::Upstream::Maildir(m) => format!("maildir {}", m.dir.display()),
        },
        routes => format!("{} routes", routes.len()),
    }
}
