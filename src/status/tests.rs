use std::time::Duration;

use super::render::{escape, html, prometheus, text};
use super::*;

fn thresholds() -> Thresholds {
    Thresholds {
        delay_warning: Duration::from_secs(4 * 3600),
        route_failing_critical: Duration::from_secs(3600),
        queue_full_percent: 90,
        max_messages: 100,
        max_bytes: 1000,
    }
}

fn snap() -> Snapshot {
    Snapshot {
        queue: QueueStatus {
            messages: 12,
            bytes: 100,
            max_messages: 100,
            max_bytes: 1000,
            delay_warning_secs: 4 * 3600,
            oldest: Some(Oldest {
                id: "6B0".into(),
                age_secs: 3 * 3600 + 5,
                arrival: 1_795_456_903,
            }),
            ..QueueStatus::default()
        },
        routes: vec![RouteStatus {
            name: "m365".into(),
            configured: true,
            waiting: 12,
            last_error: Some((
                When {
                    at: 1_795_456_903,
                    ago_secs: 60,
                },
                "535 5.7.139 Authentication unsuccessful".into(),
            )),
            failing_secs: Some(1800),
            ..RouteStatus::default()
        }],
        ..Snapshot::default()
    }
}

#[test]
fn a_failing_route_shows_in_the_summary_and_is_critical_past_its_time() {
    let mut s = snap();
    judge(&mut s, &thresholds());
    assert_eq!(s.health, Health::Ok);
    assert_eq!(
        s.summary,
        "12 queued, oldest 3h00m, route m365 failing: 535 5.7.139 Authentication unsuccessful"
    );
    s.routes[0].failing_secs = Some(3600);
    judge(&mut s, &thresholds());
    assert_eq!(s.health, Health::Critical);
    assert_eq!(s.health.exit_code(), 2);
    assert!(
        s.problems[0]
            .starts_with("route m365 failing for 1h00m (over route_failing_critical 1h00m)"),
        "{:?}",
        s.problems
    );
}

#[test]
fn old_mail_warns_unless_delay_warning_is_off_and_a_full_queue_is_critical() {
    let mut s = snap();
    s.routes.clear();
    s.queue.oldest.as_mut().unwrap().age_secs = 4 * 3600;
    judge(&mut s, &thresholds());
    assert_eq!((s.health, s.health.exit_code()), (Health::Warning, 1));
    s.queue.delay_warning_secs = 0;
    judge(&mut s, &thresholds());
    assert_eq!(s.health, Health::Ok);
    // 90 % of the bytes (either limit counts).
    s.queue.bytes = 900;
    judge(&mut s, &thresholds());
    assert_eq!(s.health, Health::Critical);
    assert!(
        s.problems[0].starts_with("queue 90% full"),
        "{:?}",
        s.problems
    );
}

#[test]
fn what_came_from_outside_is_escaped_in_the_page_and_the_metrics() {
    let mut s = snap();
    s.routes[0].name = "a\"b\\c".into();
    s.routes[0].last_error.as_mut().unwrap().1 = "<script>alert(1)</script> & 'x'".into();
    s.failures.push(Failure {
        when: When { at: 0, ago_secs: 1 },
        id: "1".into(),
        rcpt: "<img src=x>@example.com".into(),
        route: "r".into(),
        status: "bounced".into(),
        text: "550 \"no\"".into(),
    });
    s.refused.insert("deny_recipients".into(), 3);
    judge(&mut s, &thresholds());
    let page = html(&s, "relay<lan>");
    assert!(
        !page.contains("<script>") && !page.contains("<img"),
        "{page}"
    );
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#39;x&#39;"));
    assert!(page.contains("&lt;img src=x&gt;@example.com"));
    assert!(page.contains("<title>postern on relay&lt;lan&gt;: OK</title>"));
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    assert!(!page.to_ascii_lowercase().contains("<script"));
    let m = prometheus(&s);
    assert!(
        m.contains("postern_route_waiting_messages{route=\"a\\\"b\\\\c\"} 12\n"),
        "{m}"
    );
    assert!(
        m.contains("postern_refused_total{reason=\"deny_recipients\"} 3\n"),
        "{m}"
    );
    assert!(
        m.contains("postern_delivery_latency_seconds_count 0\n"),
        "{m}"
    );
    assert_eq!(escape("a&b"), "a&amp;b");
    let t = text(&s);
    assert!(
        t.starts_with("OK: 12 queued, oldest 3h00m, route a\"b\\c failing: <script>"),
        "{t}"
    );
}

#[test]
fn the_histogram_is_cumulative_and_ends_in_inf() {
    let mut s = snap();
    s.latency = LatencyStatus {
        bounds: vec![1.0, 5.0],
        counts: vec![2, 0, 1],
        sum_secs: 9.5,
    };
    let m = prometheus(&s);
    assert!(
        m.contains(
            "postern_delivery_latency_seconds_bucket{le=\"1\"} 2\n\
         postern_delivery_latency_seconds_bucket{le=\"5\"} 2\n\
         postern_delivery_latency_seconds_bucket{le=\"+Inf\"} 3\n\
         postern_delivery_latency_seconds_sum 9.5\n\
         postern_delivery_latency_seconds_count 3\n"
        ),
        "{m}"
    );
}

#[test]
fn durations_for_people() {
    assert_eq!(human(5), "5s");
    assert_eq!(human(65), "1m05s");
    assert_eq!(human(3 * 3600 + 60), "3h01m");
    assert_eq!(human(2 * 86400 + 7200), "2d02h");
}
