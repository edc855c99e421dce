//! What the running daemon counts and remembers so that an admin can ask:
//! open sessions, messages accepted, refusals by reason word, recipients
//! delivered, deferred and bounced per route, a delivery latency histogram,
//! each route's last success and last error, and the last few failures.
//!
//! Sessions and delivery write here; `postern status` (over the control
//! socket), the status listener (`/metrics`, the page) and systemd's
//! `STATUS=` line read it, through `status`. Writing never waits for a
//! reader: counters are atomics, and the few things that are not (a route's
//! last error, the failure notes) sit behind mutexes held only to copy a
//! value in or out.
//!
//! Uses `config` (a route's domains, so that status can count what waits
//! for each route); nothing above it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::DomainPattern;

/// Upper bounds (seconds) of the delivery latency histogram's buckets:
/// from a LAN hop (under a second) to a message that waited a day.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 43_200.0, 86_400.0,
];
/// How many recent failures (deferrals, bounces) are kept for the page.
pub const FAILURE_NOTES: usize = 10;
/// Longest error text kept per route or failure note (a long upstream
/// reply is cut, not stored whole).
pub const MAX_ERROR_TEXT: usize = 300;

/// A moment, by the wall clock (for people) and the monotonic clock (for
/// ages: a board without an RTC may set its wall clock later).
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Seconds since the epoch, by the wall clock then.
    pub wall: u64,
    /// The monotonic clock then.
    pub mono: Instant,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp {
            wall: unix_now(),
            mono: Instant::now(),
        }
    }
}

/// Seconds since the epoch by the wall clock (0 if it reads before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What one route has been through lately.
#[derive(Debug, Clone, Default)]
pub struct RouteState {
    /// The last recipient the upstream accepted.
    pub last_success: Option<Stamp>,
    /// The last error (a deferral or a refusal) and its text.
    pub last_error: Option<(Stamp, String)>,
    /// Since when every attempt has failed for a temporary reason (none
    /// succeeded since): the route is failing.
    pub failing_since: Option<Stamp>,
}

/// One route's counters and state; shared by delivery (writing) and status
/// (reading), kept across reloads while the route keeps its name.
#[derive(Debug)]
pub struct RouteStats {
    /// The route's name in status, metrics and `STATUS=`.
    pub name: String,
    delivered: AtomicU64,
    deferred: AtomicU64,
    bounced: AtomicU64,
    state: Mutex<RouteState>,
}

/// How one attempt on a route went, for its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// At least one recipient was accepted.
    Sent,
    /// Nothing accepted, at least one recipient deferred (connection,
    /// TLS, login, a 4xx): the route is failing until it next succeeds.
    Deferred(String),
    /// Every recipient refused for good (a 5xx): the upstream works, the
    /// recipients do not; remembered as the last error only.
    Refused(String),
}

/// What happened to one recipient, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Accepted by the next hop, this long after it was queued.
    Delivered(Duration),
    /// Kept for a later attempt.
    Deferred,
    /// Failed for good (refused or expired): a report goes out.
    Bounced,
}

impl RouteStats {
    fn new(name: &str) -> RouteStats {
        RouteStats {
            name: name.to_string(),
            delivered: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            bounced: AtomicU64::new(0),
            state: Mutex::new(RouteState::default()),
        }
    }

    /// Recipients delivered, deferred and bounced so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.deferred.load(Ordering::Relaxed),
            self.bounced.load(Ordering::Relaxed),
        )
    }

    /// A copy of the route's state.
    pub fn state(&self) -> RouteState {
        lock(&self.state).clone()
    }

    /// Record an attempt; true when the state changed in a way a one-line
    /// status shows (failing started or ended, a new error text).
    fn attempted(&self, how: Attempted, at: Stamp) -> bool {
        let mut st = lock(&self.state);
        match how {
            Attempted::Sent => {
                let was_failing = st.failing_since.take().is_some();
                st.last_success = Some(at);
                was_failing
            }
            Attempted::Deferred(ref why) | Attempted::Refused(ref why) => {
                let why = clip(why);
                let new_text = st.last_error.as_ref().is_none_or(|(_, t)| *t != why);
                st.last_error = Some((at, why));
                let started = matches!(how, Attempted::Deferred(_)) && st.failing_since.is_none();
                if started {
                    st.failing_since = Some(at);
                }
                started || new_text
            }
        }
    }
}

/// One recent failure, for the status page.
#[derive(Debug, Clone)]
pub struct FailureNote {
    /// When.
    pub at: Stamp,
    /// Queue id, as shown.
    pub id: String,
    /// The recipient.
    pub rcpt: String,
    /// The route's name.
    pub route: String,
    /// `deferred`, `bounced` or `expired`.
    pub status: &'static str,
    /// The reply or reason.
    pub text: String,
}

/// What `postern status` judges by; set from the config at start and on
/// reload.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// `[queue] delay_warning`: an older message is a warning (zero: off).
    pub delay_warning: Duration,
    /// `[status] route_failing_critical`.
    pub route_failing_critical: Duration,
    /// `[status] queue_full_critical`, percent.
    pub queue_full_percent: u64,
    /// `[queue] max_messages`.
    pub max_messages: u64,
    /// `[queue] max_size`, bytes.
    pub max_bytes: u64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            delay_warning: Duration::from_secs(4 * 3600),
            route_failing_critical: Duration::from_secs(3600),
            queue_full_percent: 90,
            max_messages: u64::MAX,
            max_bytes: u64::MAX,
        }
    }
}

/// The delivery latency histogram (cumulative only when rendered).
#[derive(Debug)]
struct Histogram {
    /// One per bucket of [`LATENCY_BUCKETS`], plus one for the rest.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations, milliseconds.
    sum_ms: AtomicU64,
}

/// A copy of the histogram: per-bucket (not cumulative) counts, the last
/// one past every bound, and the sum of the observations.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// Observations per bucket of [`LATENCY_BUCKETS`], then those above.
    pub counts: Vec<u64>,
    /// Sum of the observations, seconds.
    pub sum_secs: f64,
}

#[derive(Debug)]
struct Inner {
    started: Stamp,
    sessions: AtomicU64,
    accepted: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    latency: Histogram,
    /// The routes in force, in config order, with their domains.
    routes: RwLock<Vec<(Arc<RouteStats>, Vec<DomainPattern>)>>,
    /// Routes delivery named that are not (or no longer) configured
    /// (`none`: a recipient no route takes).
    others: Mutex<Vec<Arc<RouteStats>>>,
    failures: Mutex<VecDeque<FailureNote>>,
    thresholds: RwLock<Thresholds>,
    changed_tx: smol::channel::Sender<()>,
    changed_rx: smol::channel::Receiver<()>,
}

/// The daemon's counters and route states; cheap to clone (one shared set).
#[derive(Debug, Clone)]
pub struct Observer(Arc<Inner>);

impl Default for Observer {
    fn default() -> Observer {
        Observer::new()
    }
}

/// Counts an open session until dropped.
#[derive(Debug)]
pub struct SessionGuard(Observer);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Observer {
    /// Nothing counted yet.
    pub fn new() -> Observer {
        let (changed_tx, changed_rx) = smol::channel::bounded(1);
        Observer(Arc::new(Inner {
            started: Stamp::now(),
            sessions: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: Mutex::new(BTreeMap::new()),
            latency: Histogram {
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
                sum_ms: AtomicU64::new(0),
            },
            routes: RwLock::new(Vec::new()),
            others: Mutex::new(Vec::new()),
            failures: Mutex::new(VecDeque::with_capacity(FAILURE_NOTES)),
            thresholds: RwLock::new(Thresholds::default()),
            changed_tx,
            changed_rx,
        }))
    }

    /// When this observer (the daemon) started.
    pub fn started(&self) -> Stamp {
        self.0.started
    }

    fn changed(&self) {
        let _ = self.0.changed_tx.try_send(());
    }

    /// Wait until something a one-line status shows may have changed
    /// (a message accepted or finished, a route failing or recovering).
    pub async fn wait_changed(&self) {
        let _ = self.0.changed_rx.recv().await;
    }

    // Sessions.

    /// A session opened; it counts until the guard is dropped.
    pub fn session(&self) -> SessionGuard {
        self.0.sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard(self.clone())
    }

    /// Sessions open now.
    pub fn sessions(&self) -> u64 {
        self.0.sessions.load(Ordering::Relaxed)
    }

    /// A message was accepted (250 after DATA).
    pub fn accepted(&self) {
        self.0.accepted.fetch_add(1, Ordering::Relaxed);
        self.changed();
    }

    /// Messages accepted so far.
    pub fn accepted_count(&self) -> u64 {
        self.0.accepted.load(Ordering::Relaxed)
    }

    /// A refusal, by its stable reason word (`deny_recipients`,
    /// `message_too_big`, …): the function every refusal's log line goes
    /// through, so that the log and the counter never disagree.
    pub fn refused(&self, reason: &'static str) {
        *lock(&self.0.refused).entry(reason).or_insert(0) += 1;
    }

    /// Refusals so far, by reason word.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.0.refused).clone()
    }

    // Routes.

    /// The routes in force, in config order: their names and domains.
    /// Counters and state of a route whose name stays are kept.
    pub fn set_routes(&self, routes: Vec<(String, Vec<DomainPattern>)>) {
        {
            let mut cur = self.0.routes.write().unwrap_or_else(|p| p.into_inner());
            let mut others = lock(&self.0.others);
            let mut old: Vec<Arc<RouteStats>> = cur.drain(..).map(|(s, _)| s).collect();
            old.append(&mut others);
            for (name, domains) in routes {
                let stats = match old.iter().position(|s| s.name == name) {
                    Some(i) => old.swap_remove(i),
                    None => Arc::new(RouteStats::new(&name)),
                };
                cur.push((stats, domains));
            }
        }
        // What is left of `old` is gone from the config: no longer shown,
        // its counters dropped with it.
        self.changed();
    }

    /// The routes in force, in config order, with their domains.
    pub fn routes(&self) -> Vec<(Arc<RouteStats>, Vec<DomainPattern>)> {
        self.0
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Routes delivery named that are not configured (now).
    pub fn other_routes(&self) -> Vec<Arc<RouteStats>> {
        lock(&self.0.others).clone()
    }

    /// The stats of the route called `name` (made on first use when the
    /// config does not name it: a route of an old config still finishing,
    /// or `none`).
    pub fn route(&self, name: &str) -> Arc<RouteStats> {
        if let Some((s, _)) = self
            .0
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(s, _)| s.name == name)
        {
            return s.clone();
        }
        let mut others = lock(&self.0.others);
        if let Some(s) = others.iter().find(|s| s.name == name) {
            return s.clone();
        }
        let s = Arc::new(RouteStats::new(name));
        others.push(s.clone());
        s
    }

    /// An attempt on route `name` ended (rate-held parts are not attempts).
    pub fn attempted(&self, name: &str, how: Attempted) {
        if self.route(name).attempted(how, Stamp::now()) {
            self.changed();
        }
    }

    /// One recipient settled on route `name`.
    pub fn settled(&self, name: &str, how: Settled) {
        let r = self.route(name);
        match how {
            Settled::Delivered(latency) => {
                r.delivered.fetch_add(1, Ordering::Relaxed);
                let secs = latency.as_secs_f64();
                let i = LATENCY_BUCKETS
                    .iter()
                    .position(|b| secs <= *b)
                    .unwrap_or(LATENCY_BUCKETS.len());
                if let Some(c) = self.0.latency.counts.get(i) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
                // Saturating: a sum that reached u64::MAX ms stays there.
                let _ =
                    self.0
                        .latency
                        .sum_ms
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                            Some(s.saturating_add(ms))
                        });
                self.changed();
            }
            Settled::Deferred => {
                r.deferred.fetch_add(1, Ordering::Relaxed);
            }
            Settled::Bounced => {
                r.bounced.fetch_add(1, Ordering::Relaxed);
                self.changed();
            }
        }
    }

    /// The latency histogram so far.
    pub fn latency(&self) -> Latency {
        let h = &self.0.latency;
        Latency {
            counts: h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum_secs: h.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    /// Remember a failure for the page (the oldest note goes).
    pub fn failure(&self, mut note: FailureNote) {
        note.text = clip(&note.text);
        let mut f = lock(&self.0.failures);
        if f.len() >= FAILURE_NOTES {
            f.pop_front();
        }
        f.push_back(note);
    }

    /// The last failures, newest first.
    pub fn failures(&self) -> Vec<FailureNote> {
        lock(&self.0.failures).iter().rev().cloned().collect()
    }

    // Thresholds.

    /// Put the config's thresholds in force (start, reload).
    pub fn set_thresholds(&self, t: Thresholds) {
        *self.0.thresholds.write().unwrap_or_else(|p| p.into_inner()) = t;
        self.changed();
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        self.0
            .thresholds
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// At most [`MAX_ERROR_TEXT`] bytes, cut at a character boundary, on one line.
fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_ERROR_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = s[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < s.len() {
        out.push('…');
    }
    out
}

/// Lock a mutex, shrugging off poisoning: every critical section here
/// leaves the value whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_fails_from_its_first_deferral_until_a_success() {
        let o = Observer::new();
        o.set_routes(vec![("m365".into(), vec![DomainPattern::Any])]);
        o.attempted(
            "m365",
            Attempted::Deferred("535 5.7.139 auth failed".into()),
        );
        let first = o.route("m365").state().failing_since.unwrap();
        o.attempted("m365", Attempted::Deferred("connect refused".into()));
        let st = o.route("m365").state();
        // The streak keeps its start; the last error is the newest.
        assert_eq!(st.failing_since.unwrap().mono, first.mono);
        assert_eq!(st.last_error.unwrap().1, "connect refused");
        // A refusal (5xx) is an error, not a failing route.
        o.attempted("m365", Attempted::Sent);
        o.attempted("m365", Attempted::Refused("550 5.1.1 no such user".into()));
        let st = o.route("m365").state();
        assert!(st.failing_since.is_none() && st.last_success.is_some());
        assert_eq!(st.last_error.unwrap().1, "550 5.1.1 no such user");
    }

    #[test]
    fn routes_keep_their_counters_across_a_reload_by_name() {
        let o = Observer::new();
        o.set_routes(vec![("a".into(), vec![]), ("b".into(), vec![])]);
        o.settled("a", Settled::Delivered(Duration::from_millis(300)));
        o.settled("b", Settled::Bounced);
        o.set_routes(vec![("a".into(), vec![]), ("c".into(), vec![])]);
        let names: Vec<String> = o.routes().iter().map(|(s, _)| s.name.clone()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(o.route("a").counts(), (1, 0, 0));
        assert_eq!(o.route("c").counts(), (0, 0, 0));
        // A name delivery uses that no route has shows up apart.
        o.settled("none", Settled::Bounced);
        assert_eq!(o.other_routes().len(), 1);
        let l = o.latency();
        assert_eq!(l.counts[1], 1, "0.3 s falls in the 0.5 s bucket");
        assert!((l.sum_secs - 0.3).abs() < 1e-9);
    }

    #[test]
    fn sessions_and_refusals_count() {
        let o = Observer::new();
        let a = o.session();
        let b = o.session();
        assert_eq!(o.sessions(), 2);
        drop(a);
        drop(b);
        assert_eq!(o.sessions(), 0);
        o.refused("deny_recipients");
        o.refused("deny_recipients");
        o.refused("message_too_big");
        assert_eq!(o.refusals().get("deny_recipients"), Some(&2));
    }

    #[test]
    fn failure_notes_are_bounded_and_texts_clipped() {
        let o = Observer::new();
        for n in 0..FAILURE_NOTES + 3 {
            o.failure(FailureNote {
                at: Stamp::now(),
                id: format!("{n}"),
                rcpt: "a@b".into(),
                route: "r".into(),
                status: "deferred",
                text: "é".repeat(MAX_ERROR_TEXT),
            });
        }
        let f = o.failures();
        assert_eq!(f.len(), FAILURE_NOTES);
        assert_eq!(f[0].id, format!("{}", FAILURE_NOTES + 2), "newest first");
        assert!(f[0].text.len() <= MAX_ERROR_TEXT + '…'.len_utf8());
    }
}
