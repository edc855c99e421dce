//! A [`Snapshot`] for people (text), for monitoring systems (the
//! Prometheus text format, exposition format 0.0.4) and for a browser (one
//! small HTML page, no JavaScript, refreshing itself). Everything that came
//! from outside (addresses, upstream replies, route names) is escaped for
//! the format it goes into.

use std::fmt::Write;

use super::{Health, Snapshot, human, when};

/// Seconds between refreshes of the status page.
pub const PAGE_REFRESH_SECS: u32 = 10;

/// What `postern status` prints: a first line in the Nagios plugin form
/// (`OK: …` then performance data after `|`), the problems, then details.
pub fn text(s: &Snapshot) -> String {
    let q = &s.queue;
    let mut out = String::new();
    let oldest = q.oldest.as_ref().map_or(0, |o| o.age_secs);
    let _ = writeln!(
        out,
        "{}: {} | queued={} bytes={}B;;;0;{} oldest={oldest}s;{} deferred={} held={}",
        s.health.word(),
        s.summary,
        q.messages,
        q.bytes,
        q.max_bytes,
        if q.delay_warning_secs > 0 {
            q.delay_warning_secs.to_string()
        } else {
            String::new()
        },
        q.deferred,
        q.held
    );
    for p in &s.problems {
        let _ = writeln!(out, "{}: {p}", s.health.word());
    }
    let _ = writeln!(
        out,
        "queue:   {} message(s), {} bytes ({}% of max_size, {}% of max_messages); {} deferred, {} held",
        q.messages,
        q.bytes,
        percent(q.bytes, q.max_bytes),
        percent(q.messages, q.max_messages),
        q.deferred,
        q.held
    );
    if let Some(o) = &q.oldest {
        let _ = writeln!(
            out,
            "oldest:  {}, waiting {} (queued {})",
            o.id,
            human(o.age_secs),
            crate::smtp::format_rfc3339(o.arrival)
        );
    }
    for r in &s.routes {
        let _ = writeln!(
            out,
            "route {}{}: {} waiting; since start {} delivered, {} deferred, {} bounced",
            r.name,
            if r.configured {
                ""
            } else {
                " (not configured)"
            },
            r.waiting,
            r.delivered,
            r.deferred,
            r.bounced
        );
        let _ = writeln!(
            out,
            "  last success: {}",
            r.last_success.as_ref().map_or("none".to_string(), when)
        );
        if let Some((w, t)) = &r.last_error {
            let _ = writeln!(out, "  last error:   {}: {t}", when(w));
        }
        if let Some(f) = r.failing_secs {
            let _ = writeln!(out, "  failing for {}", human(f));
        }
    }
    let refused: u64 = s.refused.values().sum();
    let _ = writeln!(
        out,
        "since start ({} ago): {} accepted, {} refused; {} session(s) open",
        human(s.uptime_secs),
        s.accepted,
        refused,
        s.sessions
    );
    out
}

fn percent(n: u64, max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    u64::try_from(u128::from(n) * 100 / u128::from(max)).unwrap_or(u64::MAX)
}

/// A label value in the Prometheus text format: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float as Prometheus writes it (`+Inf` for the last bucket).
fn float(f: f64) -> String {
    if f.is_infinite() {
        "+Inf".into()
    } else {
        format!("{f}")
    }
}

const UP_HELP: &str = "1 when the daemon answered, 0 when postern status could not ask it.";

/// What `postern status --prometheus` prints when the daemon does not
/// answer, so that an alert on `postern_up == 0` fires.
pub fn prometheus_down() -> String {
    format!("# HELP postern_up {UP_HELP}\n# TYPE postern_up gauge\npostern_up 0\n")
}

/// `/metrics` and `postern status --prometheus` (for node_exporter's
/// textfile collector): gauges of the queue and the routes, counters since
/// the daemon started, the delivery latency histogram.
pub fn prometheus(s: &Snapshot) -> String {
    let mut o = String::new();
    let metric =
        |o: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(o, "{name}{labels} {value}");
            }
        };
    let q = &s.queue;
    let one = |v: u64| vec![(String::new(), v.to_string())];
    metric(&mut o, "postern_up", "gauge", UP_HELP, one(1));
    metric(
        &mut o,
        "postern_health",
        "gauge",
        "0 healthy, 1 warning, 2 critical (as postern status exits).",
        one(u64::from(s.health.exit_code())),
    );
    metric(
        &mut o,
        "postern_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        one(s.uptime_secs),
    );
    metric(
        &mut o,
        "postern_queue_messages",
        "gauge",
        "Messages in the queue.",
        one(q.messages),
    );
    metric(
        &mut o,
        "postern_queue_bytes",
        "gauge",
        "Bytes of queued messages.",
        one(q.bytes),
    );
    metric(
        &mut o,
        "postern_queue_max_messages",
        "gauge",
        "The queue's message limit (max_messages).",
        one(q.max_messages),
    );
    metric(
        &mut o,
        "postern_queue_max_bytes",
        "gauge",
        "The queue's size limit (max_size).",
        one(q.max_bytes),
    );
    metric(
        &mut o,
        "postern_queue_deferred_messages",
        "gauge",
        "Messages waiting after a failed attempt.",
        one(q.deferred),
    );
    metric(
        &mut o,
        "postern_queue_held_messages",
        "gauge",
        "Messages held by the operator.",
        one(q.held),
    );
    metric(
        &mut o,
        "postern_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest queued message (0 when empty).",
        one(q.oldest.as_ref().map_or(0, |x| x.age_secs)),
    );
    metric(
        &mut o,
        "postern_sessions_open",
        "gauge",
        "SMTP sessions open now.",
        one(s.sessions),
    );
    metric(
        &mut o,
        "postern_messages_accepted_total",
        "counter",
        "Messages accepted (250 after DATA) since start.",
        one(s.accepted),
    );
    metric(
        &mut o,
        "postern_refused_total",
        "counter",
        "Refusals since start, by reason word (as in the log's reason=).",
        s.refused
            .iter()
            .map(|(r, n)| (format!("{{reason=\"{}\"}}", label(r)), n.to_string()))
            .collect(),
    );
    let per_route = |f: &dyn Fn(&super::RouteStatus) -> String| -> Vec<(String, String)> {
        s.routes
            .iter()
            .map(|r| (format!("{{route=\"{}\"}}", label(&r.name)), f(r)))
            .collect()
    };
    metric(
        &mut o,
        "postern_delivered_total",
        "counter",
        "Recipients delivered since start, by route.",
        per_route(&|r| r.delivered.to_string()),
    );
    metric(
        &mut o,
        "postern_deferred_total",
        "counter",
        "Recipient attempts deferred since start, by route.",
        per_route(&|r| r.deferred.to_string()),
    );
    metric(
        &mut o,
        "postern_bounced_total",
        "counter",
        "Recipients bounced (refused or expired) since start, by route.",
        per_route(&|r| r.bounced.to_string()),
    );
    metric(
        &mut o,
        "postern_route_waiting_messages",
        "gauge",
        "Queued messages with a recipient for the route.",
        per_route(&|r| r.waiting.to_string()),
    );
    metric(
        &mut o,
        "postern_route_failing_seconds",
        "gauge",
        "How long the route has been failing (0: it is not).",
        per_route(&|r| r.failing_secs.unwrap_or(0).to_string()),
    );
    metric(
        &mut o,
        "postern_route_last_success_timestamp_seconds",
        "gauge",
        "When the route last delivered (0: not since start).",
        per_route(&|r| r.last_success.as_ref().map_or(0, |w| w.at).to_string()),
    );
    // Histogram: cumulative buckets, +Inf equal to the count.
    let l = &s.latency;
    let mut rows = Vec::new();
    let mut cum: u64 = 0;
    for (i, n) in l.counts.iter().enumerate() {
        cum = cum.saturating_add(*n);
        let le = l.bounds.get(i).copied().unwrap_or(f64::INFINITY);
        rows.push((format!("_bucket{{le=\"{}\"}}", float(le)), cum.to_string()));
    }
    let _ = writeln!(
        o,
        "# HELP postern_delivery_latency_seconds Time from acceptance to delivery, per delivered recipient.\n# TYPE postern_delivery_latency_seconds histogram"
    );
    for (suffix, v) in rows {
        let _ = writeln!(o, "postern_delivery_latency_seconds{suffix} {v}");
    }
    let _ = writeln!(
        o,
        "postern_delivery_latency_seconds_sum {}",
        float(l.sum_secs)
    );
    let _ = writeln!(o, "postern_delivery_latency_seconds_count {cum}");
    o
}

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The status page: the judgement, the queue, each route, the last
/// failures. Plain HTML and a little CSS; a meta refresh reloads it.
pub fn html(s: &Snapshot, hostname: &str) -> String {
    let q = &s.queue;
    let colour = match s.health {
        Health::Ok => "#2e7d32",
        Health::Warning => "#b26a00",
        Health::Critical => "#c62828",
    };
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{PAGE_REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>postern on {host}: {word}</title>\
         <style>body{{font-family:sans-serif;margin:1.5em;max-width:60em}}\
         table{{border-collapse:collapse;margin-bottom:1em}}\
         td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}}\
         #health{{color:#fff;background:{colour};padding:.4em .8em;display:inline-block}}</style>\
         </head><body>\n<h1>postern on {host}</h1>\n\
         <p id=\"health\">{word}: {summary}</p>\n",
        host = escape(hostname),
        word = s.health.word(),
        summary = escape(&s.summary),
    );
    if !s.problems.is_empty() {
        o.push_str("<ul id=\"problems\">\n");
        for p in &s.problems {
            let _ = writeln!(o, "<li>{}</li>", escape(p));
        }
        o.push_str("</ul>\n");
    }
    let _ = write!(
        o,
        "<h2>Queue</h2>\n<table id=\"queue\">\
         <tr><th>messages</th><td>{}</td></tr>\
         <tr><th>bytes</th><td>{} ({}% of max_size)</td></tr>\
         <tr><th>deferred</th><td>{}</td></tr>\
         <tr><th>held</th><td>{}</td></tr>\
         <tr><th>oldest</th><td>{}</td></tr></table>\n",
        q.messages,
        q.bytes,
        percent(q.bytes, q.max_bytes),
        q.deferred,
        q.held,
        q.oldest.as_ref().map_or("none".to_string(), |x| format!(
            "{} waiting {} (queued {})",
            escape(&x.id),
            human(x.age_secs),
            crate::smtp::format_rfc3339(x.arrival)
        )),
    );
    o.push_str(
        "<h2>Routes</h2>\n<table id=\"routes\"><tr><th>route</th><th>state</th><th>waiting</th>\
         <th>delivered / deferred / bounced</th><th>last success</th><th>last error</th></tr>\n",
    );
    for r in &s.routes {
        let state = match r.failing_secs {
            Some(f) => format!("failing for {}", human(f)),
            None => "ok".to_string(),
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} / {} / {}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.name),
            state,
            r.waiting,
            r.delivered,
            r.deferred,
            r.bounced,
            r.last_success.as_ref().map_or("none".to_string(), when),
            r.last_error
                .as_ref()
                .map_or("none".to_string(), |(w, t)| format!(
                    "{}: {}",
                    when(w),
                    escape(t)
                )),
        );
    }
    o.push_str("</table>\n<h2>Last failures</h2>\n");
    if s.failures.is_empty() {
        o.push_str("<p id=\"failures\">none since start</p>\n");
    } else {
        o.push_str(
            "<table id=\"failures\"><tr><th>when</th><th>id</th><th>recipient</th><th>route</th>\
             <th>status</th><th>reply</th></tr>\n",
        );
        for f in &s.failures {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(&f.when),
                escape(&f.id),
                escape(&f.rcpt),
                escape(&f.route),
                escape(&f.status),
                escape(&f.text)
            );
        }
        o.push_str("</table>\n");
    }
    let refused: u64 = s.refused.values().sum();
    let _ = write!(
        o,
        "<p id=\"counters\">Since start ({} ago): {} accepted, {} refused; {} session(s) open. \
         postern {}; <a href=\"/metrics\">metrics</a>; this page refreshes every {PAGE_REFRESH_SECS} s.</p>\n\
         </body></html>\n",
        human(s.uptime_secs),
        s.accepted,
        refused,
        s.sessions,
        escape(&s.version),
    );
    o
}
