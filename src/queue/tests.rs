use super::*;
use std::time::Duration;

fn limits() -> Limits {
    Limits {
        max_bytes: 64 << 20,
        max_messages: 1000,
        max_age: Duration::from_secs(5 * 86400),
        retry_intervals: vec![Duration::from_secs(60)],
    }
}

fn small() -> StoreOptions {
    StoreOptions {
        segment_size: 16 << 10,
        big_threshold: 6 << 10,
        keep_free: 1,
        max_segments: 64,
        ..StoreOptions::default()
    }
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn msg(rcpts: &[&str]) -> Envelope {
    Envelope {
        from: ReversePath::Path(addr("dev@lan")),
        rcpts: rcpts.iter().map(|s| Recipient::new(addr(s))).collect(),
        ..Envelope::default()
    }
}

/// A job's pending recipients as (index, address).
fn pending(j: &Job) -> Vec<(RcptIndex, String)> {
    j.rcpts().map(|(i, r)| (i, r.addr.to_string())).collect()
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| b'a' + ((i as u8).wrapping_add(seed) % 26))
        .collect()
}

fn put(q: &Queue, rcpts: &[&str], b: &[u8]) -> QueueId {
    let mut w = q.begin(msg(rcpts));
    for chunk in b.chunks(1000) {
        w.write(chunk).unwrap();
    }
    smol::block_on(q.commit(w)).unwrap()
}

fn read_body(q: &Queue, job: &Job) -> Vec<u8> {
    let mut r = q.open_body(job).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        r.read_chunk(&mut buf, 777).unwrap();
        if buf.is_empty() {
            return out;
        }
        out.extend_from_slice(&buf);
    }
}

fn due(q: &Queue) -> Vec<Job> {
    q.take_due(Instant::now(), usize::MAX).0
}

fn seg_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .count()
}

#[test]
fn committed_messages_survive_a_restart_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bodies = HashMap::new();
    {
        let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
        assert_eq!(r.messages, 0);
        for (i, n) in [10usize, 3000, 20_000, 100_000].iter().enumerate() {
            let b = body(*n, i as u8);
            let id = put(&q, &["a@x.example", "b@y.example"], &b);
            bodies.insert(id, b);
        }
        q.close();
    }
    let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 4);
    let jobs = due(&q);
    assert_eq!(jobs.len(), 4);
    for j in &jobs {
        assert_eq!(read_body(&q, j), bodies[&j.id], "body of {}", j.id);
        assert_eq!(j.envelope.from.as_str(), "dev@lan");
        assert_eq!(
            pending(j),
            vec![
                (0, "a@x.example".to_string()),
                (1, "b@y.example".to_string())
            ]
        );
    }
    q.close();
}

#[test]
fn finished_recipients_stay_finished_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let a = put(&q, &["1@x", "2@x", "3@x"], b"one\r\n");
    let b = put(&q, &["1@x"], b"two\r\n");
    for j in due(&q) {
        if j.id == a {
            q.finish(
                &j,
                &[
                    (0, RcptOutcome::Delivered),
                    (1, RcptOutcome::Deferred("4xx".into())),
                    (2, RcptOutcome::Failed("5xx".into())),
                ],
                None,
            );
        } else {
            q.finish(&j, &[(0, RcptOutcome::Delivered)], None);
        }
    }
    q.sync().unwrap();
    assert_eq!(q.usage().0, 1);
    q.close();
    let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 1);
    let jobs = due(&q);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, a);
    assert_eq!(pending(&jobs[0]), vec![(1, "2@x".to_string())]);
    let _ = b;
    q.close();
}

#[test]
fn a_delay_warning_is_recorded_and_not_due_again_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let warned = put(&q, &["1@x", "2@x"], b"one\r\n");
    let plain = put(&q, &["1@x"], b"two\r\n");
    for j in due(&q) {
        assert!(!j.delay_warned);
        let put_off = [(0, RcptOutcome::Deferred("451 busy".into()))];
        if j.id == warned {
            let mut w = q.begin_report(addr("dev@lan"));
            w.write(b"Subject: Delayed Mail\r\n\r\nstill trying\r\n")
                .unwrap();
            w.mark_delay_warning();
            q.finish(&j, &put_off, Some(w));
        } else {
            q.finish(&j, &put_off, None);
        }
    }
    q.sync().unwrap();
    q.flush();
    // In memory at once, for the next attempt.
    let jobs = due(&q);
    let by_id = |jobs: &[Job], id| jobs.iter().find(|j| j.id == id).map(|j| j.delay_warned);
    assert_eq!(by_id(&jobs, warned), Some(true));
    assert_eq!(by_id(&jobs, plain), Some(false));
    q.close();
    // And after a restart: the warning is not sent twice.
    let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 3, "the two messages and the warning itself");
    let jobs = due(&q);
    assert_eq!(by_id(&jobs, warned), Some(true));
    assert_eq!(by_id(&jobs, plain), Some(false));
    q.close();
}

#[test]
fn a_torn_tail_loses_only_what_was_never_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let kept = put(&q, &["a@x"], b"kept\r\n");
    let torn = put(&q, &["a@x"], b"this one will be torn\r\n");
    q.close();
    // Find the second message record and damage its last byte, as a power
    // cut in the middle of its write would.
    let seg = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .unwrap()
        .path();
    let mut data = std::fs::read(&seg).unwrap();
    let needle = b"this one will be torn\r\n";
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    data[at + needle.len() - 1] ^= 0xff;
    std::fs::write(&seg, &data).unwrap();
    let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 1);
    let jobs = due(&q);
    assert_eq!(jobs[0].id, kept);
    assert_ne!(jobs[0].id, torn);
    // New mail after recovery lands in a fresh segment and survives too.
    let after = put(&q, &["a@x"], b"after\r\n");
    q.close();
    let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 2);
    let ids: Vec<QueueId> = due(&q).iter().map(|j| j.id).collect();
    assert!(ids.contains(&kept) && ids.contains(&after));
    q.close();
}

#[test]
fn segments_are_recycled_and_the_file_count_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let mut max_files = 0;
    for round in 0..40 {
        for i in 0..5 {
            put(&q, &["a@x"], &body(1500, (round * 5 + i) as u8));
        }
        for j in due(&q) {
            q.finish(&j, &[(0, RcptOutcome::Delivered)], None);
        }
        q.sync().unwrap();
        max_files = max_files.max(seg_files(tmp.path()));
    }
    assert_eq!(q.usage(), (0, 0));
    // 40 rounds of 7.5 KiB through 16 KiB segments: without recycling this
    // would be ~20 files.
    assert!(max_files <= 4, "{max_files} segment files");
    q.close();
    let (_q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 0, "delivered messages came back: {r:?}");
}

#[test]
fn a_stuck_message_keeps_its_data_and_the_rest_are_not_resurrected() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let stuck = put(&q, &["slow@x"], &body(1000, 1));
    for round in 0..20 {
        put(&q, &["a@x"], &body(2000, round));
        for j in due(&q) {
            let o = if j.id == stuck {
                RcptOutcome::Deferred("421".into())
            } else {
                RcptOutcome::Delivered
            };
            q.finish(&j, &[(0, o)], None);
        }
        q.flush();
    }
    q.close();
    let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 1);
    let jobs = due(&q);
    assert_eq!(jobs[0].id, stuck);
    assert_eq!(read_body(&q, &jobs[0]), body(1000, 1));
    q.close();
}

#[test]
fn big_messages_get_their_own_file_and_it_goes_when_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let b = body(50_000, 9);
    let id = put(&q, &["a@x", "b@x"], &b);
    let big = tmp.path().join("big").join(id.to_string());
    assert!(big.exists());
    let j = due(&q).remove(0);
    assert_eq!(read_body(&q, &j), b);
    q.finish(
        &j,
        &[
            (0, RcptOutcome::Delivered),
            (1, RcptOutcome::Deferred("x".into())),
        ],
        None,
    );
    q.close();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let j = due(&q).remove(0);
    assert_eq!(pending(&j), vec![(1, "b@x".to_string())]);
    q.finish(&j, &[(1, RcptOutcome::Delivered)], None);
    q.sync().unwrap();
    assert!(!big.exists());
    q.close();
}

#[test]
fn a_corrupt_big_file_is_set_aside_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("big")).unwrap();
    std::fs::write(tmp.path().join("big").join("ABC"), b"garbage").unwrap();
    let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.set_aside, 1);
    assert!(tmp.path().join("corrupt").join("ABC").exists());
    q.close();
}

#[test]
fn full_queue_refuses_and_frees_when_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = limits();
    l.max_messages = 2;
    let (q, _) = Queue::open_with(tmp.path(), l, small()).unwrap();
    put(&q, &["a@x"], b"1\r\n");
    put(&q, &["a@x"], b"2\r\n");
    assert!(matches!(q.check_room(10), Err(QueueError::Full)));
    let mut w = q.begin(msg(&["a@x"]));
    w.write(b"3\r\n").unwrap();
    assert!(matches!(smol::block_on(q.commit(w)), Err(QueueError::Full)));
    let j = due(&q).remove(0);
    q.finish(&j, &[(0, RcptOutcome::Delivered)], None);
    q.sync().unwrap();
    q.check_room(10).unwrap();
    // Reports are never refused for space.
    put(&q, &["a@x"], b"3\r\n");
    let mut rep = q.begin_report(addr("dev@lan"));
    rep.write(b"report\r\n").unwrap();
    smol::block_on(q.commit(rep)).unwrap();
    assert_eq!(q.usage().0, 3);
    q.close();
}

#[test]
fn a_second_process_cannot_open_the_same_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert!(matches!(
        Queue::open_with(tmp.path(), limits(), small()),
        Err(QueueError::Locked(_))
    ));
    q.close();
}

#[test]
fn an_aborted_message_leaves_no_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let mut w = q.begin(msg(&["a@x"]));
    w.write(&body(100_000, 3)).unwrap();
    assert_eq!(
        std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
        1
    );
    drop(w);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
        0
    );
    q.close();
    let (_q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 0);
}

#[test]
fn ids_are_unique_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let a = put(&q, &["a@x"], b"1\r\n");
    q.close();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let b = put(&q, &["a@x"], b"2\r\n");
    assert!(b > a);
    q.close();
}

/// Clocks a test moves by hand.
#[derive(Debug)]
struct FakeClock {
    wall: std::sync::atomic::AtomicU64,
    start: Instant,
    mono_secs: std::sync::atomic::AtomicU64,
}

impl FakeClock {
    fn new(wall: u64) -> Arc<FakeClock> {
        Arc::new(FakeClock {
            wall: wall.into(),
            start: Instant::now(),
            mono_secs: 0.into(),
        })
    }
    fn set_wall(&self, w: u64) {
        self.wall.store(w, Ordering::SeqCst);
    }
    fn advance(&self, secs: u64) {
        self.mono_secs.fetch_add(secs, Ordering::SeqCst);
        self.wall.fetch_add(secs, Ordering::SeqCst);
    }
    /// A reboot: the monotonic clock starts again.
    fn reboot(&self, wall: u64) -> Arc<FakeClock> {
        let c = FakeClock::new(wall);
        let _ = self;
        c
    }
}

impl Clock for FakeClock {
    fn wall(&self) -> u64 {
        self.wall.load(Ordering::SeqCst)
    }
    fn mono(&self) -> Instant {
        self.start + Duration::from_secs(self.mono_secs.load(Ordering::SeqCst))
    }
}

fn with_clock(c: &Arc<FakeClock>) -> StoreOptions {
    StoreOptions {
        clock: c.clone(),
        ..small()
    }
}

fn age_of(q: &Queue) -> u64 {
    q.list()[0].age.as_secs()
}

const TODAY: u64 = 1_795_000_000;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

#[test]
fn a_board_booting_in_1970_then_jumping_to_today_neither_stalls_nor_expires_early() {
    let tmp = tempfile::tempdir().unwrap();
    let c = FakeClock::new(TODAY);
    let (q, _) = Queue::open_with(tmp.path(), limits(), with_clock(&c)).unwrap();
    put(&q, &["a@x.example"], b"hello");
    c.advance(2 * HOUR);
    assert_eq!(age_of(&q), 2 * HOUR);
    q.close();
    // Power back five minutes later, but the board has no RTC: 1970.
    let c = c.reboot(300);
    let (q, _) = Queue::open_with(tmp.path(), limits(), with_clock(&c)).unwrap();
    assert_eq!(age_of(&q), 2 * HOUR, "no downtime counted, none lost");
    c.advance(HOUR);
    assert_eq!(age_of(&q), 3 * HOUR, "ages with the monotonic clock");
    // NTP sets the clock to today while running: nothing jumps.
    c.set_wall(TODAY + 3 * HOUR);
    assert_eq!(age_of(&q), 3 * HOUR);
    q.close();
    // A normal restart ten minutes later counts those ten minutes.
    let c = c.reboot(TODAY + 3 * HOUR + 600);
    let (q, _) = Queue::open_with(tmp.path(), limits(), with_clock(&c)).unwrap();
    assert_eq!(age_of(&q), 3 * HOUR + 600);
    // And max_age still means about what it says: 5 days of queue time.
    c.advance(5 * DAY);
    assert!(q.expired(&due(&q)[0]));
}

#[test]
fn a_clock_a_year_ahead_adds_at_most_a_day() {
    let tmp = tempfile::tempdir().unwrap();
    let c = FakeClock::new(TODAY);
    let (q, _) = Queue::open_with(tmp.path(), limits(), with_clock(&c)).unwrap();
    put(&q, &["a@x.example"], b"hello");
    c.advance(HOUR);
    q.close();
    let c = c.reboot(TODAY + HOUR + 365 * DAY);
    let (q, _) = Queue::open_with(tmp.path(), limits(), with_clock(&c)).unwrap();
    assert_eq!(age_of(&q), HOUR + DAY);
    let job = &due(&q)[0];
    assert!(
        !q.expired(job),
        "a 5-day max_age is not over after a clock jump"
    );
    // A jump while running changes nothing either.
    c.set_wall(TODAY + 800 * DAY);
    assert_eq!(age_of(&q), HOUR + DAY);
}

#[test]
fn a_crash_keeps_queue_time_from_the_last_save_or_the_newest_message() {
    let tmp = tempfile::tempdir().unwrap();
    let c = FakeClock::new(TODAY);
    {
        let (q, _) = Queue::open_with(tmp.path(), limits(), with_clock(&c)).unwrap();
        c.advance(HOUR);
        put(&q, &["a@x.example"], b"one");
        // Killed: no save at close (the writer is simply dropped with the
        // process). Simulated by leaking the queue without closing it.
        std::mem::forget(q);
    }
    // Restart with the wall clock in 1970: queue time resumes no earlier
    // than the newest message's arrival stamp.
    let c = c.reboot(100);
    let dir2 = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), dir2.path());
    let (q, _) = Queue::open_with(dir2.path(), limits(), with_clock(&c)).unwrap();
    assert_eq!(age_of(&q), 0);
    c.advance(60);
    assert_eq!(age_of(&q), 60);
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&t).unwrap();
            copy_dir(&e.path(), &t);
        } else if e.file_name() != "lock" {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// The most recipients the config allows: stored, recovered after a
/// restart, every one listed and handed to delivery, and finished ones
/// (more than 16 bits of them) stay finished, whether the message is in a
/// segment or a file of its own.
#[test]
fn a_message_at_the_recipient_bound_survives_restarts_whole() {
    use crate::smtp::envelope::MAX_RECIPIENTS;
    let n = MAX_RECIPIENTS;
    let names: Vec<String> = (0..n).map(|i| format!("r{i}@x.example")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let all: Vec<(RcptIndex, String)> = (0..).zip(names.iter().cloned()).collect();
    let in_segment = StoreOptions {
        segment_size: 8 << 20,
        big_threshold: 8 << 20,
        ..StoreOptions::default()
    };
    for (what, opts) in [("file of its own", small()), ("segment", in_segment)] {
        let tmp = tempfile::tempdir().unwrap();
        let id = {
            let (q, _) = Queue::open_with(tmp.path(), limits(), opts.clone()).unwrap();
            let id = put(&q, &refs, b"Subject: many\r\n\r\nhi\r\n");
            q.close();
            id
        };
        let (q, r) = Queue::open_with(tmp.path(), limits(), opts.clone()).unwrap();
        assert_eq!(r.messages, 1, "{what}");
        let listed = q.show(id).unwrap();
        assert_eq!(listed.rcpts.len(), n, "{what}");
        assert_eq!(listed.pending, names, "{what}");
        let j = due(&q).remove(0);
        assert_eq!(pending(&j), all, "{what}");
        assert_eq!(read_body(&q, &j), b"Subject: many\r\n\r\nhi\r\n");
        let first: Vec<(RcptIndex, RcptOutcome)> =
            (0..70_000).map(|i| (i, RcptOutcome::Delivered)).collect();
        q.finish(&j, &first, None);
        q.sync().unwrap();
        q.close();

        let (q, r) = Queue::open_with(tmp.path(), limits(), opts.clone()).unwrap();
        assert_eq!(r.messages, 1, "{what}");
        let j = due(&q).remove(0);
        assert_eq!(pending(&j), all[70_000..], "{what}");
        let rest: Vec<(RcptIndex, RcptOutcome)> = j
            .pending
            .iter()
            .map(|i| (*i, RcptOutcome::Delivered))
            .collect();
        q.finish(&j, &rest, None);
        q.sync().unwrap();
        assert_eq!(q.usage().0, 0, "{what}");
        q.close();

        let (q, r) = Queue::open_with(tmp.path(), limits(), opts).unwrap();
        assert_eq!(r.messages, 0, "{what}: delivered, so gone");
        q.close();
    }
}

/// A spool written by the first record layout (16-bit counts, flags in the
/// format byte) recovers: the message and its finished recipient.
#[test]
fn a_queue_of_the_first_record_layout_recovers() {
    use super::record::{Header, Kind};
    let tmp = tempfile::tempdir().unwrap();
    // A segment as the first layout wrote it: its start record, a message
    // record for three recipients with the first one done in the message
    // record, then a recipients-done record finishing the third too.
    let seq: u64 = 1;
    let mut seg = Vec::new();
    let start = seq.to_le_bytes();
    seg.extend_from_slice(&Header::encode(Kind::SegmentStart, seq as u32, &start));
    seg.extend_from_slice(&start);
    let id: u64 = 0xABC;
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&1_790_000_000u64.to_le_bytes());
    p.push(0x80 | 2); // queue time follows; SMTPUTF8
    p.extend_from_slice(&5_000u64.to_le_bytes());
    let s16 = |p: &mut Vec<u8>, s: &str| {
        p.extend_from_slice(&(s.len() as u16).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    s16(&mut p, "dev@lan");
    p.extend_from_slice(&3u16.to_le_bytes());
    for r in ["a@x.example", "jörg@x.example", "root"] {
        s16(&mut p, r);
    }
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(b"Subject: old\r\n\r\nold body\r\n");
    seg.extend_from_slice(&Header::encode(Kind::Message, seq as u32, &p));
    seg.extend_from_slice(&p);
    // (A recipients-done record holds the complete list.)
    let mut d = id.to_le_bytes().to_vec();
    d.extend_from_slice(&2u16.to_le_bytes());
    d.extend_from_slice(&0u16.to_le_bytes());
    d.extend_from_slice(&2u16.to_le_bytes());
    seg.extend_from_slice(&Header::encode(Kind::RcptsDone, seq as u32, &d));
    seg.extend_from_slice(&d);
    seg.resize(64 << 10, 0);
    std::fs::write(tmp.path().join("seg-000001.log"), &seg).unwrap();

    let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!((r.messages, r.set_aside), (1, 0));
    let j = due(&q).remove(0);
    assert_eq!(j.id, QueueId(id));
    assert_eq!(j.envelope.from.as_str(), "dev@lan");
    assert!(j.envelope.smtputf8);
    assert_eq!(j.envelope.body, BodyType::SevenBit);
    assert_eq!(pending(&j), vec![(1, "jörg@x.example".to_string())]);
    assert_eq!(j.rcpt(1).and_then(|r| r.addr.domain()), Some("x.example"));
    assert_eq!(read_body(&q, &j), b"Subject: old\r\n\r\nold body\r\n");
    q.finish(&j, &[(1, RcptOutcome::Delivered)], None);
    q.sync().unwrap();
    assert_eq!(q.usage().0, 0);
    q.close();
    let (_, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 0);
}

/// The queue at its edges: a full or read-only disk, files changed from
/// outside, holds across a restart, file modes.
#[test]
fn depth_counts_deferred_held_and_what_waits_for_each_route_without_copying() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(dir.path(), limits(), small()).unwrap();
    let a = put(&q, &["x@one.test", "y@two.test"], b"a");
    let b = put(&q, &["z@two.test"], b"b");
    let c = put(&q, &["w@nowhere.test"], b"c");
    // One attempt for a: deferred; b held; c never tried.
    let jobs = due(&q);
    let ja = jobs.iter().find(|j| j.id == a).unwrap();
    q.finish(ja, &[(0, RcptOutcome::Deferred("451 later".into()))], None);
    for j in jobs.iter().filter(|j| j.id != a) {
        q.finish_held(j, &[], None, Instant::now());
    }
    q.hold(b).unwrap();
    let route_of = |r: &Address| match r.domain() {
        Some("one.test") => Some(0),
        Some("two.test") => Some(1),
        _ => None,
    };
    let d = q.depth(2, route_of);
    assert_eq!((d.messages, d.deferred, d.held), (3, 1, 1));
    assert_eq!(
        d.waiting,
        vec![1, 2],
        "a waits for both routes, b for the second"
    );
    assert_eq!(d.bytes, q.usage().1);
    // Oldest: the earliest arrival (ages tie at this resolution: lowest id).
    assert_eq!(d.oldest.map(|(id, _, _)| id), Some(a));
    q.delete(c).unwrap();
    q.delete(a).unwrap();
    q.release(b).unwrap();
    let d = q.depth(2, route_of);
    assert_eq!((d.messages, d.held, d.waiting.clone()), (1, 0, vec![0, 1]));
    q.close();
}

mod edges;
mod overflow;

/// What `[[filter]]` and storm suppression decide at the end of data
/// (other recipients, held, a named route) is stored with the message,
/// small or spilled, and survives a restart; the body is untouched.
#[test]
fn a_disposition_set_at_the_end_of_data_is_stored_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bodies = HashMap::new();
    {
        let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
        // 100 octets stay in memory; 200,000 spill to a file first.
        for (i, n) in [100usize, 200_000].iter().enumerate() {
            let b = body(*n, i as u8);
            let mut w = q.begin(msg(&["a@x.example"]));
            for chunk in b.chunks(1000) {
                w.write(chunk).unwrap();
            }
            let held = if i == 0 { Hold::Filter } else { Hold::None };
            w.set_disposition(
                Some(msg(&["ops@z.example", "sec@z.example"])),
                held,
                Some("m365".into()),
            )
            .unwrap();
            let id = smol::block_on(q.commit(w)).unwrap();
            bodies.insert(id, (b, held));
        }
        let jobs = due(&q);
        assert_eq!(jobs.len(), 1, "the held one is not taken");
        q.close();
    }
    let (q, r) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    assert_eq!(r.messages, 2);
    let listed = q.list();
    assert_eq!(
        listed
            .iter()
            .filter(|s| s.held && s.hold == Hold::Filter)
            .count(),
        1
    );
    let jobs = due(&q);
    assert_eq!(jobs.len(), 1, "still held after a restart");
    let j = &jobs[0];
    assert_eq!(read_body(&q, j), bodies[&j.id].0);
    assert_eq!(j.route.as_deref(), Some("m365"));
    assert_eq!(
        pending(j),
        vec![
            (0, "ops@z.example".to_string()),
            (1, "sec@z.example".to_string())
        ]
    );
    let held = listed.iter().find(|s| s.held).unwrap().id;
    q.release(held).unwrap();
    let j = due(&q);
    assert_eq!(read_body(&q, &j[0]), bodies[&held].0);
}

/// Held mail does not expire while it is held (as in Postfix, whose
/// postsuper(1) says held mail "will not expire ... It becomes subject to
/// expiration after it is released"): nothing takes it, so nothing fails
/// it. Its age keeps counting, so once released a message past max_age
/// fails at its first deferral like any other.
#[test]
fn a_held_message_does_not_expire_while_held_and_can_once_released() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(1_800_000_000);
    let (q, _) = Queue::open_with(tmp.path(), limits(), with_clock(&clock)).unwrap();
    let id = put(&q, &["a@x.example"], b"held past max_age");
    q.hold(id).unwrap();
    clock.advance(6 * 86_400);
    let later = Instant::now() + Duration::from_secs(7 * 86_400);
    assert!(
        q.take_due(later, usize::MAX).0.is_empty(),
        "held: never taken"
    );
    assert_eq!(q.list().len(), 1, "and never failed");
    q.release(id).unwrap();
    let jobs = q.take_due(later, usize::MAX).0;
    assert_eq!(jobs.len(), 1);
    assert!(q.expired(&jobs[0]), "released, its age is past max_age");
    q.close();
}
