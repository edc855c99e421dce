//! Outbound delivery: takes due messages from the queue, splits each by
//! route (first route whose `domains` take the recipient's domain; MX routes
//! further by domain), hands each part to its route (smarthosts with
//! failover, MX, or a maildir-style outbox), and settles each recipient:
//! delivered, deferred with backoff, held by rate shaping (not an attempt),
//! or failed with a report to the sender (or `postmaster`). A message past
//! `max_age` fails instead of deferring.
//!
//! Reads the queued [`Envelope`](crate::smtp::Envelope): recipients are
//! routed by their parsed domain and go out as they were stored. Uses
//! `queue`, `policy` (each route's size limit), `smtp`, `dns`, `tls` and
//! `config`; never `server`.
//!
//! Routes do not wait for each other: a message is taken from the queue
//! only when every route it needs has a free connection slot
//! ([`Queue::take_due_with`]), so a route whose upstream hangs holds its
//! own slots and nothing else, and a message waiting for a slot is still
//! just queued (it can be deleted or held).

pub mod client;
pub mod client_error;
pub mod dsn;
pub mod hints;
pub mod hosts;
pub mod https;
pub mod maildir;
pub mod oauth;
pub mod probe;
pub mod rate;
pub mod rewrite;
pub mod routes;
pub mod sendtest;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::observe::{Attempted, FailureNote, Observer, Settled, Stamp};
use crate::queue::{BodyReader, Job, Queue, QueueId, RcptOutcome};
use crate::smtp::{
    Address, BodyType, EnhancedStatus, Notify, RcptIndex, Reply, Ret, ReversePath, escaped,
};
use client::{BodySource, Client, Outgoing, RcptResult, Smarthost};
use dsn::{Action, Entry};
pub use routes::{Route, Routes, SetupError, SharedRoutes, Target};

/// How much of the original message a failure report quotes (its headers).
const REPORT_HEADERS_MAX: usize = 16 * 1024;
/// The largest message a failure report returns whole when the sender
/// asked for it (`RET=FULL`); a larger one is returned as its header
/// section (Postfix's `bounce_size_limit` does the same, at 50 kB).
const REPORT_FULL_MAX: u64 = 64 * 1024;
/// An idle connection is kept this long for the next message, then closed.
const POOL_IDLE: Duration = Duration::from_secs(15);
/// How often idle connections are looked at.
const POOL_SWEEP: Duration = Duration::from_secs(5);
/// The window of `max_reports_per_hour`.
const REPORT_WINDOW: Duration = Duration::from_secs(3600);
/// Most attempts running at once. Each holds a connection slot of its
/// routes (`max_connections`), which bounds them first; this bounds the
/// rest (messages none of whose recipients has a route).
const MAX_ATTEMPTS: usize = 256;
/// The scheduler looks again at least this often while messages wait for
/// a slot or for room (a finished attempt wakes it sooner).
const RECHECK: Duration = Duration::from_secs(1);

/// What happened to one recipient in one attempt, for watchers
/// (`postern send-test`).
#[derive(Debug, Clone)]
pub struct Event {
    /// The message.
    pub id: QueueId,
    /// The recipient.
    pub rcpt: String,
    /// `sent`, `deferred`, `held`, `bounced` or `expired`.
    pub status: &'static str,
    /// Where it went (`host[ip]:port`, `maildir:…`).
    pub relay: String,
    /// The reply or reason.
    pub reply: String,
}

/// The delivery side: a scheduler and a few workers.
#[derive(Debug)]
pub struct Delivery {
    queue: Queue,
    routes: SharedRoutes,
    hostname: String,
    events: Option<smol::channel::Sender<Event>>,
    reports: bool,
    report_times: Mutex<VecDeque<Instant>>,
    observer: Observer,
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

/// The recipients of a job that take one route: (route index, MX domain, recipients).
type Part = (usize, Option<String>, Vec<RcptIndex>);

/// One recipient's result of an attempt: (index, relay, outcome).
type Outcome = (RcptIndex, String, Result<Sent, Attempt>);

/// A recipient the next hop took.
#[derive(Debug, Clone)]
struct Sent {
    /// What it said.
    reply: Reply,
    /// It offers DSN, so the sender's NOTIFY went on with the message and
    /// a success report is the next hop's to send, not ours.
    dsn_passed: bool,
    /// The message was delivered here (a local outbox), not relayed.
    delivered: bool,
}

/// A connection slot of a route (`max_connections` of them per route).
type Slot = smol::lock::SemaphoreGuardArc;

/// A free connection slot on every route `job` needs (one per route: its
/// parts go one after the other), or `None` when one of them has none
/// free; then whatever was taken is given back at once.
fn slots_for(routes: &Routes, job: &Job) -> Option<Vec<Slot>> {
    let mut taken: Vec<(usize, Slot)> = Vec::new();
    for (_, rcpt) in job.rcpts() {
        if let Some((ri, route)) = routes.route_for_job(job, &rcpt.addr)
            && !taken.iter().any(|(r, _)| *r == ri)
        {
            taken.push((ri, route.slots.try_acquire_arc()?));
        }
    }
    Some(taken.into_iter().map(|(_, s)| s).collect())
}

fn reply(code: u16, st: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(code, EnhancedStatus::new(st.0, st.1, st.2), text)
}

impl Delivery {
    /// A delivery side for `queue` over `routes`.
    pub fn new(queue: Queue, routes: SharedRoutes, hostname: String) -> Delivery {
        Delivery {
            queue,
            routes,
            hostname,
            events: None,
            reports: true,
            report_times: Mutex::new(VecDeque::new()),
            observer: Observer::new(),
        }
    }

    /// Count outcomes and keep each route's state in `observer` (the
    /// daemon's, which status reads).
    pub fn with_observer(mut self, observer: Observer) -> Delivery {
        self.observer = observer;
        self
    }

    /// Also send every recipient outcome to `tx`.
    pub fn with_events(mut self, tx: smol::channel::Sender<Event>) -> Delivery {
        self.events = Some(tx);
        self
    }

    /// Queue no failure reports (send-test: the report would go out).
    pub fn without_reports(mut self) -> Delivery {
        self.reports = false;
        self
    }

    /// Run until the task is dropped.
    pub async fn run(self) {
        let this = Arc::new(self);
        let running = Arc::new(AtomicUsize::new(0));
        let sweeper = this.routes.clone();
        let _sweep = smol::spawn(async move {
            loop {
                smol::Timer::after(POOL_SWEEP).await;
                sweep_idle(&sweeper.current()).await;
            }
        });
        // Attempts run as tasks of their own, dropped (cancelled) with this
        // one; each ends by settling its message, which wakes this loop.
        let mut attempts: Vec<smol::Task<()>> = Vec::new();
        loop {
            attempts.retain(|t| !t.is_finished());
            let routes = this.routes.current();
            let room = MAX_ATTEMPTS.saturating_sub(running.load(Ordering::SeqCst));
            let mut waiting = false;
            let (jobs, next) = this.queue.take_due_with(Instant::now(), room, |job| {
                let slots = slots_for(&routes, job);
                waiting |= slots.is_none();
                slots
            });
            let took = jobs.len();
            for (job, slots) in jobs {
                running.fetch_add(1, Ordering::SeqCst);
                let (me, routes, running) = (this.clone(), routes.clone(), running.clone());
                attempts.push(smol::spawn(async move {
                    me.deliver(job, &routes, slots).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                }));
            }
            if waiting || took == room {
                // Whatever waits for a slot or for room goes when an attempt
                // ends (its settling kicks the queue); the timer is only a
                // backstop.
                let backstop = Instant::now() + RECHECK;
                this.queue
                    .wait(Some(next.map_or(backstop, |n| n.min(backstop))))
                    .await;
            } else {
                this.queue.wait(next).await;
            }
            // A wait that is ready at once must not starve the sessions that
            // share this executor.
            smol::future::yield_now().await;
        }
    }

    /// One job: split by route, deliver each part, settle everything.
    /// `slots` are the connection slots of its routes, held until the
    /// attempt is over.
    async fn deliver(&self, job: Job, routes: &Routes, slots: Vec<Slot>) {
        let started = Instant::now();
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut parts: Vec<Part> = Vec::new();
        // Said once an attempt here, not at every lookup (the scheduler
        // looks a waiting message's routes up at every pass).
        if let Some(name) = job.route.as_deref()
            && routes.named(name).is_none()
        {
            tracing::warn!(id = %job.id, route = %name, "a [[filter]] routed this message to a route that is no longer configured; routing it by domain");
        }
        for (i, rcpt) in job.rcpts() {
            match routes.route_for_job(&job, &rcpt.addr) {
                None => outcomes.push((
                    i,
                    "none".into(),
                    Err(Attempt::Fail(reply(
                        550,
                        (5, 1, 2),
                        "no route for this recipient's domain (no [[route]] domains entry takes it)",
                    ))),
                )),
                Some((ri, route)) => {
                    let key = route
                        .is_mx()
                        .then(|| rcpt.addr.domain().map(str::to_ascii_lowercase))
                        .flatten();
                    match parts.iter_mut().find(|(r, k, _)| *r == ri && *k == key) {
                        Some(p) => p.2.push(i),
                        None => parts.push((ri, key, vec![i])),
                    }
                }
            }
        }
        let mut held: Option<Instant> = None;
        for (ri, key, rcpts) in parts {
            let route = routes.routes[ri].clone();
            let n = u32::try_from(rcpts.len()).unwrap_or(u32::MAX);
            let reserved = route
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reserve(n, Instant::now());
            if let Err(until) = reserved {
                let wait = until.saturating_duration_since(Instant::now()).as_secs();
                for r in rcpts.iter().filter_map(|i| job.rcpt(*i)).map(|r| &r.addr) {
                    tracing::info!(id = %job.id, to = %escaped(r.as_str()), route = %route.name, status = %"held", wait_secs = wait, "delivery held by rate limit (max_messages_per_minute / max_recipients_per_day); not an attempt");
                    self.event(
                        &job,
                        r.as_str(),
                        "held",
                        &route.name,
                        &format!("rate limit: waits {wait}s"),
                    );
                }
                held = Some(held.map_or(until, |h| h.min(until)));
                continue;
            }
            let mut part = job.clone();
            part.pending = rcpts;
            let got = match &route.target {
                Target::Maildir(dir) => self.to_maildir(dir, &part).await,
                Target::Smtp(sh) => self.to_smtp(&route, sh, &part, key).await,
            };
            self.observer.attempted(&route.label, attempted(&got));
            outcomes.extend(got);
        }
        // Free the slots before settling: settling wakes the scheduler,
        // which should find them free.
        drop(slots);
        self.settle(&job, started, outcomes, held).await;
    }

    async fn to_maildir(&self, dir: &std::path::Path, job: &Job) -> Vec<Outcome> {
        let res = match self.queue.open_body(job) {
            Ok(body) => {
                let (dir, job2) = (dir.to_path_buf(), job.clone());
                smol::unblock(move || maildir::deliver(&dir, &job2, body)).await
            }
            Err(e) => Err(e),
        };
        let relay = format!("maildir:{}", dir.display());
        job.pending
            .iter()
            .map(|i| {
                let o = match &res {
                    Ok(path) => Ok(Sent {
                        reply: Reply::plain(250, format!("written to {}", path.display())),
                        dsn_passed: false,
                        delivered: true,
                    }),
                    Err(e) => Err(Attempt::Defer(format!("cannot write: {e}"))),
                };
                (*i, relay.clone(), o)
            })
            .collect()
    }

    /// Take an idle connection for `key` from the route's pool, if a live one is there.
    async fn pooled(&self, route: &Route, key: &Option<String>) -> Option<(Client, usize)> {
        loop {
            let found = {
                let mut pool = route.pool.lock().unwrap_or_else(|p| p.into_inner());
                let i = pool.iter().position(|p| &p.key == key)?;
                pool.swap_remove(i)
            };
            if found.since.elapsed() >= POOL_IDLE {
                found.client.quit().await;
                continue;
            }
            let mut c = found.client;
            if c.probe().await {
                return Some((c, found.sent));
            }
        }
    }

    async fn to_smtp(
        &self,
        route: &Route,
        sh: &Smarthost,
        job: &Job,
        key: Option<String>,
    ) -> Vec<Outcome> {
        // Before any connection: a message whose From cannot be rewritten
        // fails here, and a connection is not opened for nothing.
        let rewrite = match self.plan_rewrite(route, job).await {
            Ok(r) => r,
            Err(o) => {
                return job
                    .pending
                    .iter()
                    .map(|i| (*i, route.name.clone(), Err(o.clone())))
                    .collect();
            }
        };
        let name_for_mx = key.clone().or_else(|| {
            job.rcpts()
                .next()
                .and_then(|(_, r)| r.addr.domain())
                .map(str::to_string)
        });
        let (mut client, sent_before) = match self.pooled(route, &key).await {
            Some(c) => c,
            None => match Client::connect(sh, name_for_mx.as_deref(), None).await {
                Ok(c) => {
                    route.learn_size(c.caps().size);
                    (c, 0)
                }
                Err(e) => {
                    let relay = if sh.mx {
                        format!("mx:{}", name_for_mx.unwrap_or_default())
                    } else {
                        route.name.clone()
                    };
                    let o = if e.is_permanent() {
                        Attempt::Fail(reply(556, (5, 1, 10), e.to_string()))
                    } else {
                        Attempt::Defer(e.to_string())
                    };
                    return job
                        .pending
                        .iter()
                        .map(|i| (*i, relay.clone(), Err(o.clone())))
                        .collect();
                }
            },
        };
        let outcomes = self.send_one(route, &mut client, job, rewrite).await;
        let relay = client.relay.clone();
        let dsn_passed = client.caps().dsn;
        let sent = sent_before + 1;
        if !client.broken && sent < route.per_conn {
            route
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(routes::Pooled {
                    key,
                    client,
                    sent,
                    since: Instant::now(),
                });
        } else {
            client.quit().await;
        }
        outcomes
            .into_iter()
            .map(|(i, o)| {
                let o = o.map(|reply| Sent {
                    reply,
                    dsn_passed,
                    delivered: false,
                });
                (i, relay.clone(), o)
            })
            .collect()
    }

    /// The From rewrite of `job` on `route` (`rewrite_from`), planned from
    /// its header section; `None` when the route does not rewrite.
    async fn plan_rewrite(
        &self,
        route: &Route,
        job: &Job,
    ) -> Result<Option<rewrite::Rewrite>, Attempt> {
        let (Some(addr), true) = (&route.rewrite_sender, route.rewrite_from) else {
            return Ok(None);
        };
        let unreadable =
            |e: std::io::Error| Attempt::Defer(format!("cannot read queued message: {e}"));
        let mut r = self.queue.open_body(job).map_err(unreadable)?;
        // The header section, and the empty line after it.
        let want = rewrite::MAX_HEADER_SECTION + 2;
        let (start, res) = smol::unblock(move || {
            let mut b = Vec::new();
            let res = r.read_chunk(&mut b, want);
            (b, res)
        })
        .await;
        res.map_err(unreadable)?;
        let whole = u64::try_from(start.len()).is_ok_and(|n| n >= job.body_len);
        match rewrite::prepare(&start, whole, addr.as_str()) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(id = %job.id, route = %route.name, error = %e, "rewrite_from refuses the message");
                Err(Attempt::Fail(reply(
                    554,
                    (5, 6, 0),
                    format!("rewrite_from: {e}"),
                )))
            }
        }
    }

    async fn send_one(
        &self,
        route: &Route,
        client: &mut Client,
        job: &Job,
        rewrite: Option<rewrite::Rewrite>,
    ) -> Vec<(RcptIndex, Result<Reply, Attempt>)> {
        let all = |o: Attempt| -> Vec<(RcptIndex, Result<Reply, Attempt>)> {
            job.pending.iter().map(|i| (*i, Err(o.clone()))).collect()
        };
        // RFC 6152: never 8-bit to a hop without 8BITMIME. Only a message
        // that really has 8-bit octets is refused; a 7-bit one goes as is.
        if job.envelope.body == BodyType::EightBitMime && !client.caps().eightbitmime {
            match self.has_8bit(job).await {
                Ok(false) => {}
                Ok(true) => {
                    return all(Attempt::Fail(reply(
                        554,
                        (5, 6, 3),
                        "the message has 8-bit content and the next hop does not support 8BITMIME (RFC 6152); it cannot be sent unchanged",
                    )));
                }
                Err(e) => return all(Attempt::Defer(format!("cannot read queued message: {e}"))),
            }
        }
        let body = match self.queue.open_body(job) {
            Ok(b) => b,
            Err(e) => return all(Attempt::Defer(format!("cannot read queued message: {e}"))),
        };
        let mut src = QueuedBody { reader: Some(body) };
        let rewritten = route.rewrite_sender.clone().map(ReversePath::Path);
        // SIZE= is what goes out: the rewritten header instead of the old.
        let size = match &rewrite {
            Some(r) => job
                .body_len
                .saturating_sub(u64::try_from(r.replaced).unwrap_or(u64::MAX))
                .saturating_add(u64::try_from(r.header.len()).unwrap_or(u64::MAX)),
            None => job.body_len,
        };
        let msg = Outgoing {
            from: rewritten.as_ref().unwrap_or(&job.envelope.from),
            rcpts: job.rcpts().map(|(_, r)| r).collect(),
            body: job.envelope.body,
            smtputf8: job.envelope.smtputf8,
            size,
            ret: job.envelope.ret,
            envid: job.envelope.envid.as_deref(),
        };
        let res = match rewrite {
            Some(plan) => {
                let mut rw = rewrite::RewritingBody::new(&mut src, plan);
                client.send(&msg, &mut rw).await
            }
            None => client.send(&msg, &mut src).await,
        };
        match res {
            Ok(results) => job
                .pending
                .iter()
                .zip(results)
                .map(|(i, r)| {
                    let o = match r {
                        RcptResult::Sent(reply) => Ok(reply),
                        RcptResult::Deferred(why) => Err(Attempt::Defer(why)),
                        RcptResult::Failed(reply) => Err(Attempt::Fail(reply)),
                    };
                    (*i, o)
                })
                .collect(),
            Err(e) => all(Attempt::Defer(e.to_string())),
        }
    }

    /// Does the queued body hold any octet above 127? (A read of the body,
    /// only when a hop lacks 8BITMIME.)
    async fn has_8bit(&self, job: &Job) -> std::io::Result<bool> {
        let mut r = self.queue.open_body(job)?;
        smol::unblock(move || {
            let mut buf = Vec::with_capacity(64 << 10);
            loop {
                r.read_chunk(&mut buf, 64 << 10)?;
                if buf.is_empty() {
                    return Ok(false);
                }
                if buf.iter().any(|b| *b >= 0x80) {
                    return Ok(true);
                }
            }
        })
        .await
    }

    fn event(&self, job: &Job, rcpt: &str, status: &'static str, relay: &str, reply: &str) {
        if let Some(tx) = &self.events {
            let _ = tx.try_send(Event {
                id: job.id,
                rcpt: rcpt.to_string(),
                status,
                relay: relay.to_string(),
                reply: reply.to_string(),
            });
        }
    }

    /// May another failure report go out this hour?
    fn report_allowed(&self, max: u32) -> bool {
        let now = Instant::now();
        let mut t = self.report_times.lock().unwrap_or_else(|p| p.into_inner());
        while t
            .front()
            .is_some_and(|x| now.saturating_duration_since(*x) >= REPORT_WINDOW)
        {
            t.pop_front();
        }
        if t.len() >= max as usize {
            return false;
        }
        t.push_back(now);
        true
    }

    /// Log each recipient's outcome, turn deferrals of an expired message
    /// into failures, queue a report for the failures, and tell the queue.
    async fn settle(
        &self,
        job: &Job,
        started: Instant,
        outcomes: Vec<Outcome>,
        held: Option<Instant>,
    ) {
        let expired = self.queue.expired(job);
        let routes = self.routes.current();
        let mut entries: Vec<Entry> = Vec::new();
        // Postfix's delay_warning_time: once a message has waited this
        // long, one report says so (the message stays queued). Not for
        // mail from <>: there is nobody to tell.
        let warn_delay = !routes.delay_warning.is_zero()
            && job.age >= routes.delay_warning
            && !job.delay_warned
            && !expired
            && !job.envelope.from.is_null();
        let left = self.queue.max_age().saturating_sub(job.age);
        let mut result = Vec::with_capacity(outcomes.len());
        let delay = job.age.as_secs();
        let took = started.elapsed().as_millis();
        for (i, relay, o) in outcomes {
            let relay = relay.as_str();
            let Some(rcpt) = job.rcpt(i) else {
                // Outcomes only ever name the job's own recipients.
                tracing::error!(id = %job.id, index = i, "outcome for a recipient the message does not have; ignored");
                continue;
            };
            let to = rcpt.addr.as_str();
            let route = routes
                .route_for_job(job, &rcpt.addr)
                .map_or("none", |(_, r)| r.label.as_str());
            let note = |status: &'static str, text: &str| FailureNote {
                at: Stamp::now(),
                id: job.id.to_string(),
                rcpt: to.to_string(),
                route: route.to_string(),
                status,
                text: text.to_string(),
            };
            let outcome = match o {
                Ok(sent) => {
                    let text = sent.reply.to_log_string();
                    // RFC 3461 §5.2.2: a next hop without DSN will not
                    // confirm, so the confirmation asked for is ours.
                    if dsn::wants(rcpt.notify, Notify::SUCCESS) && !sent.dsn_passed {
                        entries.push(Entry {
                            rcpt: rcpt.addr.clone(),
                            orcpt: rcpt.orcpt.clone(),
                            action: if sent.delivered {
                                Action::Delivered
                            } else {
                                Action::Relayed
                            },
                            status: sent
                                .reply
                                .status
                                .map_or_else(|| "2.0.0".to_string(), |s| s.to_string()),
                            diagnostic: (!sent.delivered).then(|| format!("smtp; {text}")),
                            remote: dsn::remote_host(relay),
                            advice: None,
                            will_retry_until: None,
                        });
                    }
                    tracing::info!(id = %job.id, to = %escaped(to), relay = %relay, delay, ms = took, status = %"sent", reply = %escaped(&text), "delivery");
                    self.event(job, to, "sent", relay, &text);
                    self.observer.settled(
                        route,
                        Settled::Delivered(job.age.saturating_add(started.elapsed())),
                    );
                    RcptOutcome::Delivered
                }
                Err(Attempt::Defer(why)) if expired => {
                    let diag = format!("gave up after {}: {why}", dsn::human(job.age));
                    tracing::warn!(id = %job.id, to = %escaped(to), relay = %relay, delay, ms = took, status = %"expired", reply = %escaped(&why), "delivery");
                    self.event(job, to, "expired", relay, &why);
                    self.observer.settled(route, Settled::Bounced);
                    self.observer.failure(note("expired", &why));
                    if !no_report_wanted(job, rcpt, Notify::FAILURE) {
                        entries.push(Entry {
                            rcpt: rcpt.addr.clone(),
                            orcpt: rcpt.orcpt.clone(),
                            action: Action::Failed,
                            status: "4.4.7".into(),
                            diagnostic: Some(dsn::smtp_diagnostic(&why, 451, "4.4.7")),
                            remote: dsn::remote_host(relay),
                            advice: Some(format!(
                                "the relay tried for {} and gave up (the last error is above); \
                             its administrator should check the route (postern status, the log). \
                             Send the message again once it works",
                                dsn::human(job.age)
                            )),
                            will_retry_until: None,
                        });
                    }
                    RcptOutcome::Failed(diag)
                }
                Err(Attempt::Defer(why)) => {
                    tracing::info!(id = %job.id, to = %escaped(to), relay = %relay, delay, ms = took, status = %"deferred", reply = %escaped(&why), attempts = job.attempts.saturating_add(1), "delivery");
                    self.event(job, to, "deferred", relay, &why);
                    self.observer.settled(route, Settled::Deferred);
                    self.observer.failure(note("deferred", &why));
                    if warn_delay && !no_report_wanted(job, rcpt, Notify::DELAY) {
                        entries.push(delayed(job, rcpt, relay, &why, left));
                    }
                    RcptOutcome::Deferred(why)
                }
                Err(Attempt::Fail(reply)) => {
                    let text = reply.to_log_string();
                    match hints::hint(&reply) {
                        Some(h) => {
                            tracing::warn!(id = %job.id, to = %escaped(to), relay = %relay, delay, ms = took, status = %"bounced", reply = %escaped(&text), hint = %h, "delivery")
                        }
                        None => {
                            tracing::warn!(id = %job.id, to = %escaped(to), relay = %relay, delay, ms = took, status = %"bounced", reply = %escaped(&text), "delivery")
                        }
                    }
                    self.event(job, to, "bounced", relay, &text);
                    self.observer.settled(route, Settled::Bounced);
                    self.observer.failure(note("bounced", &text));
                    let status = reply
                        .status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "5.0.0".into());
                    if !no_report_wanted(job, rcpt, Notify::FAILURE) {
                        entries.push(Entry {
                            rcpt: rcpt.addr.clone(),
                            orcpt: rcpt.orcpt.clone(),
                            action: Action::Failed,
                            status,
                            diagnostic: Some(format!("smtp; {text}")),
                            remote: dsn::remote_host(relay),
                            advice: hints::advice(&reply),
                            will_retry_until: None,
                        });
                    }
                    RcptOutcome::Failed(text)
                }
            };
            result.push((i, outcome));
        }
        let report_to = match job.envelope.from.address() {
            Some(sender) => Some(routes.postmaster.clone().unwrap_or_else(|| sender.clone())),
            None => {
                // Nobody to confirm anything to; failures go to the
                // postmaster, once.
                entries.retain(|e| e.action == Action::Failed);
                self.null_sender_failed(job, &entries, &routes)
            }
        };
        let mut report = None;
        if let (false, Some(to)) = (entries.is_empty(), report_to) {
            if !self.reports {
                // send-test: the failure is printed, not mailed.
            } else if !self.report_allowed(routes.max_reports_per_hour) {
                tracing::warn!(id = %job.id, to = %escaped(to.as_str()), recipients = entries.len(), max = routes.max_reports_per_hour, "report not sent: max_reports_per_hour reached (what it would say is in the log)");
            } else {
                report = self.report(job, &entries, to).await;
                if report.is_none() {
                    // The report could not be built: keep the recipients
                    // pending rather than fail them silently.
                    result = result
                        .into_iter()
                        .map(|(i, o)| match o {
                            RcptOutcome::Failed(w) => (i, RcptOutcome::Deferred(w)),
                            other => (i, other),
                        })
                        .collect();
                }
            }
        }
        match held {
            Some(t) => self.queue.finish_held(job, &result, report, t),
            None => self.queue.finish(job, &result, report),
        }
    }

    /// A message from `<>` failed for good: a report itself, or a bounce
    /// relayed for a device. RFC 5321 §6.1: never a report to its (null)
    /// sender, so a report cannot loop; but never silent either. Each
    /// failure is logged at error level, and the postmaster (if there is
    /// one) gets one copy — unless the message was for the postmaster, whom
    /// nothing more can reach: then it ends here. A copy that fails is such
    /// a message, so there is never a third.
    fn null_sender_failed(
        &self,
        job: &Job,
        failures: &[Entry],
        routes: &Routes,
    ) -> Option<Address> {
        for f in failures {
            let reply = f.diagnostic.as_deref().unwrap_or("-");
            tracing::error!(id = %job.id, to = %escaped(f.rcpt.as_str()), status = %f.status, reply = %escaped(reply), "a message from <> (a failure report, or a bounce relayed for a device) failed for good; its sender cannot be told");
        }
        let pm = routes.postmaster.as_ref()?;
        if failures.is_empty() {
            return None;
        }
        if failures
            .iter()
            .any(|f| f.rcpt.as_str().eq_ignore_ascii_case(pm.as_str()))
        {
            tracing::error!(id = %job.id, postmaster = %pm, "the failed message from <> was for the postmaster: nobody else can be told; dropped (see the lines above)");
            return None;
        }
        Some(pm.clone())
    }

    /// Queue the report on `job` about `entries` to `to`: its text is
    /// built here, its own queue id names it.
    async fn report(
        &self,
        job: &Job,
        entries: &[Entry],
        to: Address,
    ) -> Option<crate::queue::SpoolWriter> {
        // RET=FULL: a failure report returns the message whole, when it
        // is small enough; anything else returns the header section.
        let failed = entries.iter().any(|e| e.action == Action::Failed);
        let full = failed && job.envelope.ret == Some(Ret::Full);
        let whole = full && job.body_len <= REPORT_FULL_MAX;
        let want = if whole {
            usize::try_from(job.body_len).unwrap_or(REPORT_HEADERS_MAX)
        } else {
            REPORT_HEADERS_MAX
        };
        let body = self.queue.open_body(job).ok();
        let read = match body {
            Some(mut b) => smol::unblock(move || {
                let mut buf = Vec::new();
                b.read_chunk(&mut buf, want).map(|_| buf)
            })
            .await
            .ok()?,
            None => Vec::new(),
        };
        let id = job.id.to_string();
        let orig = dsn::Original {
            id: &id,
            from: &job.envelope.from,
            arrival: job.arrival,
            content: if whole {
                &read
            } else {
                dsn::header_section(&read)
            },
            whole,
            too_big_to_return: (full && !whole).then_some(REPORT_FULL_MAX),
            smtputf8: job.envelope.smtputf8,
            envid: job.envelope.envid.as_deref(),
        };
        let mut w = self.queue.begin_report(to.clone());
        if entries.iter().any(|e| e.action == Action::Delayed) {
            // Queued with the message's outcome, it is recorded as sent.
            w.mark_delay_warning();
        }
        let report_id = crate::queue::QueueId(w.id()).to_string();
        let report = dsn::Report {
            hostname: &self.hostname,
            id: &report_id,
            to: &to,
            now: unix_now(),
        };
        let bytes = if job.envelope.from.is_null() {
            report.postmaster_copy(&orig, entries)
        } else {
            report.render(&orig, entries)
        };
        let kind = match entries.iter().map(|e| e.action).max() {
            Some(Action::Failed) => "failure",
            Some(Action::Delayed) => "delay",
            _ => "success",
        };
        match w.write(&bytes) {
            Ok(()) => {
                tracing::info!(id = %job.id, report = %report_id, to = %escaped(to.as_str()), recipients = entries.len(), "{kind} report queued");
                Some(w)
            }
            Err(e) => {
                tracing::error!(id = %job.id, error = %e, "cannot write {kind} report");
                None
            }
        }
    }
}

/// The delay report entry of `rcpt`, put off with `why`; the relay keeps
/// trying for `left` more.
fn delayed(
    job: &Job,
    rcpt: &crate::smtp::Recipient,
    relay: &str,
    why: &str,
    left: Duration,
) -> Entry {
    let status = dsn::reply_status(why)
        .filter(|s| s.starts_with('4'))
        .unwrap_or("4.0.0")
        .to_string();
    Entry {
        rcpt: rcpt.addr.clone(),
        orcpt: rcpt.orcpt.clone(),
        action: Action::Delayed,
        diagnostic: Some(dsn::smtp_diagnostic(why, 451, &status)),
        status,
        remote: dsn::remote_host(relay),
        advice: Some(format!(
            "nothing yet: it has waited {} and the relay keeps trying for up to {} more; \
             you hear again only if it gives up",
            dsn::human(job.age),
            dsn::human(left)
        )),
        will_retry_until: Some(unix_now().saturating_add(left.as_secs())),
    }
}

/// True, and logged, when `rcpt`'s sender asked to hear nothing of `what`
/// (the outcome itself is logged apart).
fn no_report_wanted(job: &Job, rcpt: &crate::smtp::Recipient, what: Notify) -> bool {
    if dsn::wants(rcpt.notify, what) {
        return false;
    }
    tracing::info!(id = %job.id, to = %escaped(rcpt.addr.as_str()), notify = ?rcpt.notify, "no report: the sender asked not to be told (NOTIFY)");
    true
}

/// How an attempt on one route went, from its recipients' outcomes: any
/// accepted is a success; otherwise a deferral means the route is failing,
/// and refusals alone mean it works but the recipients do not.
fn attempted(got: &[Outcome]) -> Attempted {
    if got.iter().any(|(_, _, o)| o.is_ok()) {
        return Attempted::Sent;
    }
    if let Some(why) = got.iter().find_map(|(_, _, o)| match o {
        Err(Attempt::Defer(why)) => Some(why.clone()),
        _ => None,
    }) {
        return Attempted::Deferred(why);
    }
    match got.iter().find_map(|(_, _, o)| match o {
        Err(Attempt::Fail(r)) => Some(r),
        _ => None,
    }) {
        Some(r) => Attempted::Refused(r.to_log_string()),
        None => Attempted::Sent,
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

/// Close idle connections that have waited long enough.
async fn sweep_idle(routes: &Routes) {
    for r in &routes.routes {
        let stale: Vec<routes::Pooled> = {
            let mut pool = r.pool.lock().unwrap_or_else(|p| p.into_inner());
            let (old, keep): (Vec<_>, Vec<_>) =
                pool.drain(..).partition(|p| p.since.elapsed() >= POOL_IDLE);
            *pool = keep;
            old
        };
        for p in stale {
            p.client.quit().await;
        }
    }
}
