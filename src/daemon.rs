//! `postern serve`: load the config, recover the queue, start delivery and
//! the listeners, and stop cleanly on SIGTERM/SIGINT.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::Async;
use smol::io::AsyncReadExt;

use crate::config::{self, Config};
use crate::delivery::{Delivery, Routes, SharedRoutes};
use crate::dns::Resolver;
use crate::queue::{Limits, Queue};
use crate::server::{self, Shared};

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
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Start logging to stderr: RUST_LOG if set, else the config's level.
pub fn init_logging(level: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let filter: Targets = spec
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    // Only our own crate talks at info; rustls and hickory only when asked.
    let filter = if spec.contains('=') {
        filter
    } else {
        quiet_deps(filter, &spec)
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

fn quiet_deps(
    _: tracing_subscriber::filter::Targets,
    spec: &str,
) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let level: LevelFilter = spec.parse().unwrap_or(LevelFilter::INFO);
    Targets::new()
        .with_default(LevelFilter::WARN.min(level))
        .with_target("postern", level)
}

/// Run the relay until SIGTERM or SIGINT.
pub fn serve(config_path: &Path) -> Result<(), DaemonError> {
    let cfg = config::load(config_path)?;
    init_logging(&cfg.log_level);
    run(cfg)
}

/// Run the relay with an already loaded config.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
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
    // Outbound (issue 3): every route built in one place; the listener
    // shares them for aliases and the size limit. A reload builds new
    // Routes::from_config and calls routes.replace(..).
    let routes = SharedRoutes::new(Routes::from_config(&cfg, Resolver::from_system())?);
    // Signals arrive as bytes on a pipe, read in the event loop like any
    // socket (signal-hook's self-pipe); nothing runs inside a handler.
    let stop_pipe = signal_pipe(&[signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
    let hup_pipe = signal_pipe(&[signal_hook::consts::SIGHUP])?;
    let result = smol::block_on(async {
        let listeners = server::bind(&cfg.server.listen).await?;
        let hostname = cfg.hostname.clone();
        let upstream = describe_upstream(&cfg);
        let mut shared = Shared::new(cfg, queue.clone())?;
        shared.routes = Some(routes.clone());
        let shared = Arc::new(shared);
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(smol::spawn(server::serve(l, shared.clone())));
        }
        // Issue 5: implicit-TLS listeners (RFC 8314).
        for l in server::bind(&shared.config.server.listen_tls).await? {
            tasks.push(smol::spawn(server::serve_tls(l, shared.clone())));
        }
        let delivery = smol::spawn(Delivery::new(queue.clone(), routes, hostname).run());
        tracing::info!(version = env!("CARGO_PKG_VERSION"), upstream = %upstream, "postern started");
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
                tracing::warn!(
                    "SIGHUP: reload is not supported yet; restart postern to apply config changes"
                );
                continue;
            }
            break;
        }
        tracing::info!("stopping: no new connections; waiting for sessions in progress");
        drop(tasks);
        let deadline = Instant::now() + STOP_GRACE;
        let max = shared.config.server.max_connections;
        let mut held = Vec::with_capacity(max);
        for _ in 0..max {
            let left = deadline.saturating_duration_since(Instant::now());
            let permit =
                smol::future::or(async { Some(shared.slots.acquire_arc().await) }, async {
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
        delivery.cancel().await;
        Ok::<(), DaemonError>(())
    });
    queue.close();
    tracing::info!("stopped");
    result
}

fn signal_pipe(sigs: &[i32]) -> Result<UnixStream, DaemonError> {
    let (read, write) = UnixStream::pair().map_err(DaemonError::Signals)?;
    for &sig in sigs {
        let w = write.try_clone().map_err(DaemonError::Signals)?;
        signal_hook::low_level::pipe::register(sig, w).map_err(DaemonError::Signals)?;
    }
    Ok(read)
}

fn describe_upstream(cfg: &Config) -> String {
    if cfg.outbound.routes.len() > 1 {
        return format!("{} routes", cfg.outbound.routes.len());
    }
    match &cfg.upstream {
        config::Upstream::Mx(s) => format!("mx port {} tls={:?}", s.port, s.tls),
        config::Upstream::Smarthost(s) => {
            format!("smarthost {}:{} tls={:?}", s.host, s.port, s.tls)
        }
        config::Upstream::Maildir(m) => format!("maildir {}", m.dir.display()),
    }
}
