//! The daemon's state as one value, [`Snapshot`], and the judgement an
//! admin's monitoring runs on: healthy, warning (a message waiting longer
//! than `[queue] delay_warning`) or critical (a route failing longer than
//! `[status] route_failing_critical`, or the queue `queue_full_critical`
//! percent full).
//!
//! The daemon builds a snapshot from the queue's depth and the
//! [`Observer`]'s counters and route states; `postern status` receives it
//! as JSON over the control socket and prints it (`render`: text, JSON,
//! Prometheus); the status listener serves the same renderings plus a page;
//! systemd's `STATUS=` is its [`Snapshot::summary`].
//!
//! Uses `queue` (depth), `observe` (counters, route states), `config`
//! (domain patterns) and `smtp` (dates); no I/O.

pub mod render;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::observe::{LATENCY_BUCKETS, Observer, RouteStats, Stamp, Thresholds, unix_now};
use crate::queue::Queue;

/// Longest error text in the one-line summary (the page and `postern
/// status` show it whole).
const SUMMARY_ERROR: usize = 60;

/// How things stand, for exit codes and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Nothing to do.
    #[default]
    Ok,
    /// Mail waits longer than it should.
    Warning,
    /// Mail is not getting out, or soon will not get in.
    Critical,
}

impl Health {
    /// The exit code of `postern status` (the Nagios plugin convention).
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Ok => 0,
            Health::Warning => 1,
            Health::Critical => 2,
        }
    }

    /// `OK`, `WARNING`, `CRITICAL`.
    pub fn word(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
        }
    }
}

/// A moment, with how long ago it was (by the daemon's monotonic clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    /// Seconds since the epoch (the wall clock then).
    pub at: u64,
    /// Seconds before the snapshot.
    pub ago_secs: u64,
}

impl When {
    fn of(s: Stamp) -> When {
        When {
            at: s.wall,
            ago_secs: s.mono.elapsed().as_secs(),
        }
    }
}

/// The oldest queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Oldest {
    /// Its queue id.
    pub id: String,
    /// How long it has been queued, seconds.
    pub age_secs: u64,
    /// When it arrived (seconds since the epoch, the wall clock then).
    pub arrival: u64,
}

/// The queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Messages queued.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// `[queue] max_messages`.
    pub max_messages: u64,
    /// `[queue] max_size`, bytes.
    pub max_bytes: u64,
    /// Messages waiting after a failed attempt.
    pub deferred: u64,
    /// Messages held by the operator.
    pub held: u64,
    /// The oldest message, if any.
    pub oldest: Option<Oldest>,
    /// `[queue] delay_warning`, seconds (0: off).
    pub delay_warning_secs: u64,
}

/// One route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// Its name.
    pub name: String,
    /// In the config in force (false: a route a reload removed, or
    /// `none` for recipients no route takes).
    pub configured: bool,
    /// Messages with a recipient waiting for it.
    pub waiting: u64,
    /// Recipients delivered since start.
    pub delivered: u64,
    /// Recipient attempts deferred since start.
    pub deferred: u64,
    /// Recipients bounced (refused or expired) since start.
    pub bounced: u64,
    /// The last success.
    pub last_success: Option<When>,
    /// The last error and its text.
    pub last_error: Option<(When, String)>,
    /// How long it has been failing (no success since its first
    /// temporary error), seconds.
    pub failing_secs: Option<u64>,
}

/// One recent failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// When.
    pub when: When,
    /// Queue id.
    pub id: String,
    /// Recipient.
    pub rcpt: String,
    /// Route name.
    pub route: String,
    /// `deferred`, `bounced` or `expired`.
    pub status: String,
    /// The reply or reason.
    pub text: String,
}

/// The delivery latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStatus {
    /// Upper bounds of the buckets, seconds.
    pub bounds: Vec<f64>,
    /// Observations per bucket (not cumulative), then those above the last bound.
    pub counts: Vec<u64>,
    /// Sum of the observations, seconds.
    pub sum_secs: f64,
}

/// Everything `postern status`, `/metrics` and the page show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The daemon's version.
    pub version: String,
    /// When the snapshot was taken (seconds since the epoch).
    pub now: u64,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The judgement.
    pub health: Health,
    /// Why it is not OK, one sentence each.
    pub problems: Vec<String>,
    /// One line: `12 queued, oldest 3h, route m365 failing: 535 5.7.139`.
    pub summary: String,
    /// The queue.
    pub queue: QueueStatus,
    /// Routes, in config order (then any no longer configured).
    pub routes: Vec<RouteStatus>,
    /// SMTP sessions open.
    pub sessions: u64,
    /// Messages accepted since start.
    pub accepted: u64,
    /// Refusals since start, by reason word.
    pub refused: BTreeMap<String, u64>,
    /// Time from acceptance to delivery, per delivered recipient.
    pub latency: LatencyStatus,
    /// The last failures, newest first.
    pub failures: Vec<Failure>,
}

fn route_status(s: &RouteStats, configured: bool, waiting: u64) -> RouteStatus {
    let (delivered, deferred, bounced) = s.counts();
    let st = s.state();
    RouteStatus {
        name: s.name.clone(),
        configured,
        waiting,
        delivered,
        deferred,
        bounced,
        last_success: st.last_success.map(When::of),
        last_error: st.last_error.map(|(at, t)| (When::of(at), t)),
        failing_secs: st.failing_since.map(|s| s.mono.elapsed().as_secs()),
    }
}

/// Take a snapshot of the running daemon.
pub fn snapshot(queue: &Queue, obs: &Observer) -> Snapshot {
    let routes = obs.routes();
    let depth = queue.depth(routes.len(), |addr| {
        let domain = addr.domain();
        routes
            .iter()
            .position(|(_, domains)| domains.iter().any(|d| d.matches(domain)))
    });
    let t = obs.thresholds();
    let mut out_routes: Vec<RouteStatus> = routes
        .iter()
        .zip(&depth.waiting)
        .map(|((s, _), w)| route_status(s, true, *w as u64))
        .collect();
    for s in obs.other_routes() {
        let r = route_status(&s, false, 0);
        if r.delivered + r.deferred + r.bounced > 0 {
            out_routes.push(r);
        }
    }
    let latency = obs.latency();
    let mut snap = Snapshot {
        version: env!("CARGO_PKG_VERSION").to_string(),
        now: unix_now(),
        uptime_secs: obs.started().mono.elapsed().as_secs(),
        queue: QueueStatus {
            messages: depth.messages as u64,
            bytes: depth.bytes,
            max_messages: t.max_messages,
            max_bytes: t.max_bytes,
            deferred: depth.deferred as u64,
            held: depth.held as u64,
            oldest: depth.oldest.map(|(id, age, arrival)| Oldest {
                id: id.to_string(),
                age_secs: age.as_secs(),
                arrival,
            }),
            delay_warning_secs: t.delay_warning.as_secs(),
        },
        routes: out_routes,
        sessions: obs.sessions(),
        accepted: obs.accepted_count(),
        refused: obs
            .refusals()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        latency: LatencyStatus {
            bounds: LATENCY_BUCKETS.to_vec(),
            counts: latency.counts,
            sum_secs: latency.sum_secs,
        },
        failures: obs
            .failures()
            .into_iter()
            .map(|f| Failure {
                when: When::of(f.at),
                id: f.id,
                rcpt: f.rcpt,
                route: f.route,
                status: f.status.to_string(),
                text: f.text,
            })
            .collect(),
        ..Snapshot::default()
    };
    judge(&mut snap, &t);
    snap
}

/// Set `health`, `problems` and `summary` from the rest.
pub fn judge(s: &mut Snapshot, t: &Thresholds) {
    let mut health = Health::Ok;
    let mut problems = Vec::new();
    let crit = t.route_failing_critical.as_secs();
    for r in &s.routes {
        if let Some(f) = r.failing_secs
            && f >= crit
        {
            health = Health::Critical;
            let why = r.last_error.as_ref().map_or("", |(_, t)| t.as_str());
            problems.push(format!(
                "route {} failing for {} (over route_failing_critical {}): {why}",
                r.name,
                human(f),
                human(crit)
            ));
        }
    }
    let q = &s.queue;
    let pct = |n: u64, max: u64| -> u64 {
        if max == 0 {
            0
        } else {
            u64::try_from(u128::from(n) * 100 / u128::from(max)).unwrap_or(u64::MAX)
        }
    };
    let full = pct(q.messages, q.max_messages).max(pct(q.bytes, q.max_bytes));
    if full >= t.queue_full_percent {
        health = Health::Critical;
        problems.push(format!(
            "queue {full}% full ({} of {} messages, {} of {} bytes; queue_full_critical {}%): \
             clients will soon get 452",
            q.messages, q.max_messages, q.bytes, q.max_bytes, t.queue_full_percent
        ));
    }
    if let Some(o) = &q.oldest
        && q.delay_warning_secs > 0
        && o.age_secs >= q.delay_warning_secs
    {
        health = health.max(Health::Warning);
        problems.push(format!(
            "message {} has waited {} (over delay_warning {})",
            o.id,
            human(o.age_secs),
            human(q.delay_warning_secs)
        ));
    }
    s.health = health;
    s.problems = problems;
    s.summary = summary(s);
}

/// One line: `12 queued, oldest 3h05m, route m365 failing: 535 5.7.139`.
fn summary(s: &Snapshot) -> String {
    let q = &s.queue;
    let mut parts = vec![format!("{} queued", q.messages)];
    if let Some(o) = &q.oldest {
        parts.push(format!("oldest {}", human(o.age_secs)));
    }
    if q.held > 0 {
        parts.push(format!("{} held", q.held));
    }
    for r in s.routes.iter().filter(|r| r.failing_secs.is_some()) {
        let why = r.last_error.as_ref().map_or("", |(_, t)| t.as_str());
        parts.push(format!("route {} failing: {}", r.name, shorten(why)));
    }
    parts.join(", ")
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= SUMMARY_ERROR {
        return s.to_string();
    }
    let mut out: String = s.chars().take(SUMMARY_ERROR).collect();
    out.push('…');
    out
}

/// `5s`, `1m05s`, `3h01m`, `2d02h`: the two largest units.
pub fn human(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `2026-11-28T10:00:00Z (3h01m ago)`.
pub fn when(w: &When) -> String {
    format!(
        "{} ({} ago)",
        crate::smtp::format_rfc3339(w.at),
        human(w.ago_secs)
    )
}

/// A duration as `human` shows it (whole seconds).
pub fn human_duration(d: Duration) -> String {
    human(d.as_secs())
}

#[cfg(test)]
mod tests;
