//! Outbound delivery: takes due messages from the queue, hands them to the
//! route (a smarthost over SMTP, or a maildir-style outbox), and settles
//! each recipient: delivered, deferred with backoff, or failed with a report
//! to the sender. A message past `max_age` fails instead of deferring.

pub mod client;
pub mod dsn;
pub mod maildir;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, Upstream};
use crate::dns::Resolver;
use crate::queue::{BodyReader, Job, Queue, RcptOutcome};
use crate::smtp::Reply;
use client::{BodySource, Client, Outgoing, RcptResult, Smarthost};
use dsn::Failure;

/// How much of the original message a failure report quotes (its headers).
const REPORT_HEADERS_MAX: usize = 16 * 1024;

/// Why the delivery side could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The TLS client configuration could not be built.
    #[error("[upstream] TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Where mail goes.
#[derive(Debug)]
pub enum Route {
    /// An SMTP smarthost.
    Smarthost(Box<Smarthost>),
    /// Files in a directory.
    Maildir(PathBuf),
}

impl Route {
    /// Build from the config.
    pub fn from_config(cfg: &Config, resolver: Resolver) -> Result<Route, SetupError> {
        Ok(match &cfg.upstream {
            Upstream::Maildir(m) => Route::Maildir(m.dir.clone()),
            Upstream::Smarthost(s) => {
                let tls = match s.tls {
                    crate::config::TlsMode::None => None,
                    _ => Some(crate::tls::client_config(s.ca_file.as_deref())?),
                };
                Route::Smarthost(Box::new(Smarthost {
                    cfg: s.clone(),
                    ehlo: cfg.hostname.clone(),
                    tls,
                    resolver,
                }))
            }
        })
    }

    fn parallel(&self) -> usize {
        match self {
            Route::Smarthost(s) => s.cfg.max_connections.max(1),
            Route::Maildir(_) => 1,
        }
    }
}

/// The delivery side: a scheduler and a few workers.
#[derive(Debug)]
pub struct Delivery {
    queue: Queue,
    route: Arc<Route>,
    hostname: String,
}

/// The body of a queued message, read on a blocking thread chunk by chunk.
struct QueuedBody {
    reader: Option<BodyReader>,
}

impl BodySource for QueuedBody {
    fn next_chunk<'a>(
        &'a mut self,
        buf: &'a mut Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let Some(mut r) = self.reader.take() else {
                buf.clear();
                return Ok(());
            };
            let mut b = std::mem::take(buf);
            let (r, b, res) = smol::unblock(move || {
                let res = r.read_chunk(&mut b, 64 << 10);
                (r, b, res)
            })
            .await;
            *buf = b;
            self.reader = Some(r);
            res
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Delivery {
    /// A delivery side for `queue` over `route`.
    pub fn new(queue: Queue, route: Route, hostname: String) -> Delivery {
        Delivery {
            queue,
            route: Arc::new(route),
            hostname,
        }
    }

    /// Run until the task is dropped.
    pub async fn run(self) {
        let workers = self.route.parallel();
        let per_conn = match &*self.route {
            Route::Smarthost(s) => s.cfg.messages_per_connection.max(1),
            Route::Maildir(_) => 1,
        };
        let (tx, rx) = smol::channel::bounded::<Job>(workers * 2);
        let this = Arc::new(self);
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let rx = rx.clone();
            let me = this.clone();
            tasks.push(smol::spawn(async move { me.worker(rx, per_conn).await }));
        }
        loop {
            let room = tx.capacity().unwrap_or(1).saturating_sub(tx.len());
            let (jobs, next) = this.queue.take_due(Instant::now(), room);
            let took = jobs.len();
            for j in jobs {
                if tx.send(j).await.is_err() {
                    return;
                }
            }
            if took == room {
                // Every worker is busy (or just got work): whatever else is
                // due waits until one finishes, which kicks the queue. The
                // timer is only a backstop.
                this.queue
                    .wait(Some(Instant::now() + Duration::from_secs(1)))
                    .await;
            } else {
                this.queue.wait(next).await;
            }
            // A wait that is ready at once must not starve the sessions that
            // share this executor.
            smol::future::yield_now().await;
        }
    }

    async fn worker(&self, rx: smol::channel::Receiver<Job>, per_conn: usize) {
        while let Ok(job) = rx.recv().await {
            match &*self.route {
                Route::Maildir(dir) => self.to_maildir(dir, job).await,
                Route::Smarthost(sh) => self.to_smarthost(sh, job, &rx, per_conn).await,
            }
        }
    }

    async fn to_maildir(&self, dir: &std::path::Path, job: Job) {
        let started = Instant::now();
        let res = match self.queue.open_body(&job) {
            Ok(body) => {
                let (dir, job2) = (dir.to_path_buf(), job.clone());
                smol::unblock(move || maildir::deliver(&dir, &job2, body)).await
            }
            Err(e) => Err(e),
        };
        let relay = format!("maildir:{}", dir.display());
        let outcomes: Vec<(u16, Result<Reply, Attempt>)> = match &res {
            Ok(path) => job
                .rcpts
                .iter()
                .map(|(i, _)| {
                    (
                        *i,
                        Ok(Reply::plain(250, format!("written to {}", path.display()))),
                    )
                })
                .collect(),
            Err(e) => job
                .rcpts
                .iter()
                .map(|(i, _)| (*i, Err(Attempt::Defer(format!("cannot write: {e}")))))
                .collect(),
        };
        self.settle(&job, &relay, started, outcomes).await;
    }

    async fn to_smarthost(
        &self,
        sh: &Smarthost,
        first: Job,
        rx: &smol::channel::Receiver<Job>,
        per_conn: usize,
    ) {
        let started = Instant::now();
        let relay_name = format!("{}:{}", sh.cfg.host, sh.cfg.port);
        let mut client = match Client::connect(sh).await {
            Ok(c) => c,
            Err(e) => {
                // Whatever else is waiting would meet the same closed door:
                // defer it now rather than knock once per message.
                let why = e.to_string();
                let mut jobs = vec![first];
                while let Ok(j) = rx.try_recv() {
                    jobs.push(j);
                }
                for job in jobs {
                    let outcomes = job
                        .rcpts
                        .iter()
                        .map(|(i, _)| (*i, Err(Attempt::Defer(why.clone()))))
                        .collect();
                    self.settle(&job, &relay_name, started, outcomes).await;
                }
                return;
            }
        };
        let mut next = Some(first);
        let mut sent = 0;
        while let Some(job) = next.take() {
            let started = Instant::now();
            let outcomes = self.send_one(&mut client, &job).await;
            let relay = client.relay.clone();
            self.settle(&job, &relay, started, outcomes).await;
            sent += 1;
            if client.broken || sent >= per_conn {
                break;
            }
            next = rx.try_recv().ok();
        }
        client.quit().await;
    }

    async fn send_one(&self, client: &mut Client, job: &Job) -> Vec<(u16, Result<Reply, Attempt>)> {
        let body = match self.queue.open_body(job) {
            Ok(b) => b,
            Err(e) => {
                let why = format!("cannot read queued message: {e}");
                return job
                    .rcpts
                    .iter()
                    .map(|(i, _)| (*i, Err(Attempt::Defer(why.clone()))))
                    .collect();
            }
        };
        let mut src = QueuedBody { reader: Some(body) };
        let msg = Outgoing {
            from: &job.from,
            rcpts: job.rcpts.iter().map(|(_, r)| r.as_str()).collect(),
            flags: job.flags,
            size: job.body_len,
        };
        match client.send(&msg, &mut src).await {
            Ok(results) => job
                .rcpts
                .iter()
                .zip(results)
                .map(|((i, _), r)| {
                    let o = match r {
                        RcptResult::Sent(reply) => Ok(reply),
                        RcptResult::Deferred(why) => Err(Attempt::Defer(why)),
                        RcptResult::Failed(reply) => Err(Attempt::Fail(reply)),
                    };
                    (*i, o)
                })
                .collect(),
            Err(e) => {
                let why = e.to_string();
                job.rcpts
                    .iter()
                    .map(|(i, _)| (*i, Err(Attempt::Defer(why.clone()))))
                    .collect()
            }
        }
    }

    /// Log each recipient's outcome, turn deferrals of an expired message
    /// into failures, queue a report for the failures, and tell the queue.
    async fn settle(
        &self,
        job: &Job,
        relay: &str,
        started: Instant,
        outcomes: Vec<(u16, Result<Reply, Attempt>)>,
    ) {
        let expired = self.queue.expired(job);
        let mut failures = Vec::new();
        let mut result = Vec::with_capacity(outcomes.len());
        let delay = job.age.as_secs();
        let took = started.elapsed().as_millis();
        for (i, o) in outcomes {
            let to = job
                .rcpts
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, r)| r.as_str())
                .unwrap_or("");
            let outcome = match o {
                Ok(reply) => {
                    tracing::info!(id = %job.id, to = %to, relay = %relay, delay, ms = took, status = %"sent", reply = %reply.to_log_string(), "delivery");
                    RcptOutcome::Delivered
                }
                Err(Attempt::Defer(why)) if expired => {
                    let diag = format!("gave up after {}: {why}", human(job.age));
                    tracing::warn!(id = %job.id, to = %to, relay = %relay, delay, ms = took, status = %"expired", reply = %why, "delivery");
                    failures.push(Failure {
                        rcpt: to.into(),
                        status: "4.4.7".into(),
                        diagnostic: diag.clone(),
                        remote: None,
                    });
                    RcptOutcome::Failed(diag)
                }
                Err(Attempt::Defer(why)) => {
                    tracing::info!(id = %job.id, to = %to, relay = %relay, delay, ms = took, status = %"deferred", reply = %why, attempts = job.attempts + 1, "delivery");
                    RcptOutcome::Deferred(why)
                }
                Err(Attempt::Fail(reply)) => {
                    let text = reply.to_log_string();
                    tracing::warn!(id = %job.id, to = %to, relay = %relay, delay, ms = took, status = %"bounced", reply = %text, "delivery");
                    let status = reply
                        .status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "5.0.0".into());
                    failures.push(Failure {
                        rcpt: to.into(),
                        status,
                        diagnostic: format!("smtp; {text}"),
                        remote: Some(relay.to_string()),
                    });
                    RcptOutcome::Failed(text)
                }
            };
            result.push((i, outcome));
        }
        let report = if failures.is_empty() || job.from.is_empty() {
            // RFC 5321 §6.1 / §4.5.5: never report on a report.
            None
        } else {
            self.report(job, &failures).await
        };
        if !failures.is_empty() && !job.from.is_empty() && report.is_none() {
            // The report could not be built: keep the recipients pending
            // rather than fail them silently.
            let result: Vec<_> = result
                .into_iter()
                .map(|(i, o)| match o {
                    RcptOutcome::Failed(w) => (i, RcptOutcome::Deferred(w)),
                    other => (i, other),
                })
                .collect();
            self.queue.finish(job, &result, None);
            return;
        }
        self.queue.finish(job, &result, report);
    }

    async fn report(&self, job: &Job, failures: &[Failure]) -> Option<crate::queue::SpoolWriter> {
        let body = self.queue.open_body(job).ok();
        let headers = match body {
            Some(mut b) => smol::unblock(move || {
                let mut buf = Vec::new();
                b.read_chunk(&mut buf, REPORT_HEADERS_MAX).map(|_| buf)
            })
            .await
            .ok()?,
            None => Vec::new(),
        };
        let id = job.id.to_string();
        let orig = dsn::Original {
            id: &id,
            from: &job.from,
            arrival: job.arrival,
            headers: dsn::header_section(&headers),
        };
        let bytes = dsn::render(&self.hostname, &orig, failures, unix_now());
        let mut w = self.queue.begin_report(job.from.clone());
        match w.write(&bytes) {
            Ok(()) => {
                tracing::info!(id = %job.id, report = %crate::queue::QueueId(w.id()), to = %job.from, failed = failures.len(), "failure report queued");
                Some(w)
            }
            Err(e) => {
                tracing::error!(id = %job.id, error = %e, "cannot write failure report");
                None
            }
        }
    }
}

/// A failed attempt for one recipient.
#[derive(Debug, Clone)]
enum Attempt {
    /// Temporary: try again later.
    Defer(String),
    /// Permanent: report it.
    Fail(Reply),
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86400 {
        format!("{}d", s / 86400)
    } else if s >= 3600 {
        format!("{}h", s / 3600)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
