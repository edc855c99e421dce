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

fn msg(rcpts: &[&str]) -> NewMessage {
    NewMessage {
        from: Some("dev@lan".into()),
        rcpts: rcpts.iter().map(|s| s.to_string()).collect(),
        flags: 0,
    }
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
        assert_eq!(j.from, "dev@lan");
        assert_eq!(
            j.rcpts,
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
    assert_eq!(jobs[0].rcpts, vec![(1, "2@x".to_string())]);
    let _ = b;
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
    assert_eq!(j.rcpts, vec![(1, "b@x".to_string())]);
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
    let mut rep = q.begin_report("dev@lan".into());
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
