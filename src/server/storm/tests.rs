//! Storm suppression against a real queue in a temp dir, on a clock the
//! test moves.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::queue::{Limits, StoreOptions};

/// 2026-11-30 02:10:00 UTC.
const T0: u64 = 1_795_918_200;

#[derive(Debug)]
struct TestClock {
    start: Instant,
    wall: AtomicU64,
}

impl TestClock {
    fn new() -> Arc<TestClock> {
        Arc::new(TestClock {
            start: Instant::now(),
            wall: AtomicU64::new(T0),
        })
    }
    fn set(&self, wall: u64) {
        self.wall.store(wall, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn wall(&self) -> u64 {
        self.wall.load(Ordering::SeqCst)
    }
    fn mono(&self) -> Instant {
        self.start + Duration::from_secs(self.wall().saturating_sub(T0))
    }
}

fn cfg(storm: &str) -> StormConfig {
    crate::filter::tests::config(&format!("[storm]\n{storm}"))
        .storm
        .unwrap()
}

/// threshold 5, pass 2, a 10-minute window, saved every minute.
fn ups() -> StormConfig {
    cfg("threshold = 5\npass = 2\nwindow = \"10m\"\nsave_interval = \"1m\"\n")
}

fn open_queue(dir: &Path, clock: &Arc<TestClock>) -> Queue {
    let limits = Limits {
        max_bytes: 16 << 20,
        max_messages: 1000,
        max_age: Duration::from_secs(86_400),
        retry_intervals: vec![Duration::from_secs(60)],
    };
    let opts = StoreOptions {
        clock: clock.clone(),
        ..StoreOptions::default()
    };
    Queue::open_with(dir, limits, opts).unwrap().0
}

fn envelope(from: &str) -> Envelope {
    let mut e = Envelope {
        from: ReversePath::Path(Address::parse(from).unwrap()),
        ..Envelope::default()
    };
    e.add_rcpts([Recipient::new(Address::parse("ops@example.com").unwrap())]);
    e
}

/// One copy through the listener's path: noted, queued (held when the
/// table says so), handed back. Returns its id and whether it is held.
fn send(q: &Queue, s: &Storms, from: &str, subject: &str) -> (QueueId, bool) {
    let env = envelope(from);
    let text = format!("From: {from}\r\nSubject: {subject}\r\n\r\nUPS on battery\r\n");
    let mut scanner = Scanner::new(Vec::new());
    scanner.feed(text.as_bytes());
    scanner.finish();
    let scan = scanner.into_scan();
    let ticket = s.note(&env, &scan, None);
    let mut w = q.begin(env);
    w.write(text.as_bytes()).unwrap();
    if ticket.is_some() {
        w.set_disposition(None, Hold::Storm, None).unwrap();
    }
    let id = smol::block_on(q.commit(w)).unwrap();
    let held = ticket.is_some();
    if let Some(t) = ticket {
        s.held(t, id);
    }
    (id, held)
}

fn body(q: &Queue, id: QueueId) -> String {
    let mut r = q.open_body_of(id).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        r.read_chunk(&mut buf, 4096).unwrap();
        if buf.is_empty() {
            break;
        }
        out.extend_from_slice(&buf);
    }
    String::from_utf8(out).unwrap()
}

fn held(q: &Queue) -> usize {
    q.list().iter().filter(|s| s.held).count()
}

#[test]
fn thirty_copies_give_pass_copies_and_then_one_digest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = open_queue(dir.path(), &clock);
    let s = Storms::open(Some(&ups()), q.clone(), "relay.test", clock.clone());
    let mut sent = Vec::new();
    for i in 0..30u64 {
        clock.set(T0 + i * 10);
        let subject = format!(
            "UPS 3: on battery since 02:{:02}:{:02}",
            10 + i / 6,
            i % 6 * 10
        );
        sent.push(send(&q, &s, "ups@ups.lan", &subject));
    }
    let passed: Vec<QueueId> = sent.iter().filter(|(_, h)| !h).map(|(id, _)| *id).collect();
    assert_eq!(passed.len(), 2, "the first `pass` copies go out");
    assert_eq!(
        (q.list().len(), held(&q)),
        (30, 28),
        "the rest are queued, held"
    );
    // Nothing ends before the window does.
    clock.set(T0 + 599);
    smol::block_on(s.tick());
    assert_eq!(held(&q), 28);
    clock.set(T0 + 600);
    smol::block_on(s.tick());
    let left = q.list();
    assert_eq!(left.len(), 3, "two copies and the digest: {left:?}");
    assert_eq!(held(&q), 0);
    let digest = left.iter().find(|m| !passed.contains(&m.id)).unwrap();
    assert_eq!(digest.from, "ups@ups.lan");
    assert_eq!(digest.pending, vec!["ops@example.com".to_string()]);
    let text = body(&q, digest.id);
    assert!(
        text.contains(
            "Subject: [alert storm] UPS 3: on battery since 02:10:00 (repeated 30 times)"
        ),
        "{text}"
    );
    assert!(
        text.contains("This alert was repeated 30 times between 02:10 and 02:14 (UTC)."),
        "{text}"
    );
    assert!(
        text.contains("    Subject: UPS 3: on battery since 02:14:50"),
        "{text}"
    );
    assert!(text.contains("    UPS on battery"), "{text}");
    // The digest is an ordinary queued message: delivery takes it (and
    // its route's rate limit applies to it like to any other).
    let (jobs, _) = q.take_due(Instant::now() + Duration::from_secs(3600), usize::MAX);
    assert!(jobs.iter().any(|j| j.id == digest.id));
    q.close();
}

#[test]
fn a_window_at_or_below_threshold_releases_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = open_queue(dir.path(), &clock);
    let s = Storms::open(Some(&ups()), q.clone(), "relay.test", clock.clone());
    for i in 0..5 {
        send(&q, &s, "ups@ups.lan", &format!("UPS {i} on battery"));
    }
    assert_eq!(held(&q), 3);
    clock.set(T0 + 600);
    smol::block_on(s.tick());
    assert_eq!((q.list().len(), held(&q)), (5, 0), "all five go, late");
    q.close();
}

#[test]
fn other_senders_and_other_alerts_are_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = open_queue(dir.path(), &clock);
    let only_ups = cfg("threshold = 1\npass = 1\nsenders = [\"*@ups.lan\"]\n");
    let s = Storms::open(Some(&only_ups), q.clone(), "relay.test", clock.clone());
    for _ in 0..3 {
        assert!(!send(&q, &s, "nas@nas.lan", "disk 1 failed").1);
    }
    assert!(!send(&q, &s, "ups@ups.lan", "on battery").1);
    assert!(!send(&q, &s, "ups@ups.lan", "battery low").1);
    assert!(send(&q, &s, "ups@ups.lan", "on battery").1);
    q.close();
}

#[test]
fn counts_are_saved_on_a_timer_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = open_queue(dir.path(), &clock);
    let s = Storms::open(Some(&ups()), q.clone(), "relay.test", clock.clone());
    for i in 0..10 {
        send(&q, &s, "ups@ups.lan", &format!("UPS on battery {i}"));
    }
    // Not written for each message, nor before save_interval.
    assert_eq!(q.load_side(SideFile::Storm).unwrap(), None);
    clock.set(T0 + 30);
    smol::block_on(s.tick());
    assert_eq!(q.load_side(SideFile::Storm).unwrap(), None);
    clock.set(T0 + 60);
    smol::block_on(s.tick());
    assert!(q.load_side(SideFile::Storm).unwrap().is_some());
    // Three more after the last save, then a crash: no save.
    for i in 10..13 {
        send(&q, &s, "ups@ups.lan", &format!("UPS on battery {i}"));
    }
    drop(s);
    q.close();
    let q = open_queue(dir.path(), &clock);
    let s = Storms::open(Some(&ups()), q.clone(), "relay.test", clock.clone());
    {
        let g = s.lock();
        let t = g.table.as_ref().unwrap();
        let key = t.key_of("ups@ups.lan", Some("UPS on battery 0"));
        let w = t.get(&key).unwrap();
        assert_eq!(
            (w.count, w.held.len()),
            (13, 11),
            "saved 10, found 3 more held"
        );
    }
    // And counting goes on where it was.
    send(&q, &s, "ups@ups.lan", "UPS on battery 13");
    clock.set(T0 + 600);
    smol::block_on(s.tick());
    let digest = q
        .list()
        .into_iter()
        .find(|m| body(&q, m.id).contains("[alert storm]"));
    let text = body(&q, digest.unwrap().id);
    assert!(text.contains("repeated 14 times"), "{text}");
    assert_eq!((q.list().len(), held(&q)), (3, 0));
    q.close();
}

#[test]
fn a_stop_saves_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = open_queue(dir.path(), &clock);
    let s = Storms::open(Some(&ups()), q.clone(), "relay.test", clock.clone());
    send(&q, &s, "ups@ups.lan", "on battery");
    s.save_blocking();
    let saved = q.load_side(SideFile::Storm).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&saved).contains("\"count\":1"));
    q.close();
}

#[test]
fn turned_off_the_held_copies_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = open_queue(dir.path(), &clock);
    let s = Storms::open(Some(&ups()), q.clone(), "relay.test", clock.clone());
    for i in 0..4 {
        send(&q, &s, "ups@ups.lan", &format!("on battery {i}"));
    }
    s.save_blocking();
    assert_eq!(held(&q), 2);
    q.close();
    // At start without [storm]: released, and the saved counts go.
    let q = open_queue(dir.path(), &clock);
    let s = Storms::open(None, q.clone(), "relay.test", clock.clone());
    assert!(!s.enabled());
    assert_eq!((q.list().len(), held(&q)), (4, 0));
    assert_eq!(q.load_side(SideFile::Storm).unwrap(), None);
    // On a reload: the windows end now (a storm gets its digest).
    s.reconfigure(Some(&cfg("threshold = 1\npass = 1\n")), "relay.test");
    for _ in 0..3 {
        send(&q, &s, "ups@ups.lan", "on battery");
    }
    assert_eq!(held(&q), 2);
    s.reconfigure(None, "relay.test");
    smol::block_on(s.tick());
    let all = q.list();
    assert_eq!((all.len(), held(&q)), (4 + 1 + 1, 0), "{all:?}");
    assert_eq!(q.load_side(SideFile::Storm).unwrap(), None);
    q.close();
}

#[test]
fn a_new_window_wakes_the_run_loop_and_shortens_its_sleep() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = open_queue(dir.path(), &clock);
    let c = cfg("threshold = 5\npass = 2\nwindow = \"30s\"\nsave_interval = \"1h\"\n");
    let s = Storms::open(Some(&c), q.clone(), "relay.test", clock.clone());
    assert_eq!(s.next_wait(), MAX_SLEEP, "nothing to do: the longest sleep");
    assert!(s.wake_rx.try_recv().is_err());
    clock.set(T0 + 5);
    send(&q, &s, "ups@ups.lan", "on battery");
    assert!(s.wake_rx.try_recv().is_ok(), "the loop is woken");
    assert_eq!(
        s.next_wait(),
        Duration::from_secs(30),
        "and sleeps until the window ends"
    );
    // Another copy in the same window changes neither.
    send(&q, &s, "ups@ups.lan", "on battery");
    assert!(s.wake_rx.try_recv().is_err());
    q.close();
}
