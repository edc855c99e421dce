//! The queue at its edges, on the simulated filesystem where a disk can
//! be made full or read-only at will, and on the real one.

use super::*;
use crate::queue::sim::SimFs;

const SPOOL: &str = "/spool";

fn on(fs: &SimFs) -> StoreOptions {
    StoreOptions {
        storage: Arc::new(fs.clone()),
        ..small()
    }
}

fn open(fs: &SimFs) -> Queue {
    Queue::open_with(Path::new(SPOOL), limits(), on(fs))
        .unwrap()
        .0
}

fn deliver_all(q: &Queue) -> usize {
    let jobs = due(q);
    for j in &jobs {
        let o: Vec<(RcptIndex, RcptOutcome)> = j
            .pending
            .iter()
            .map(|i| (*i, RcptOutcome::Delivered))
            .collect();
        q.finish(j, &o, None);
    }
    jobs.len()
}

#[test]
fn on_a_full_disk_delivered_messages_are_not_sent_again_after_a_restart() {
    let fs = SimFs::new(7);
    // Room for three 16 KiB segments and the state file, not a fourth.
    fs.set_capacity(Some(3 * (16 << 10) + 1024));
    let q = open(&fs);
    let mut acked = 0;
    let refused = loop {
        let mut w = q.begin(msg(&["a@x"]));
        w.write(&body(2000, acked as u8)).unwrap();
        match smol::block_on(q.commit(w)) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 100, "the disk never filled up");
    };
    assert!(matches!(refused, QueueError::Io(_)), "{refused}");
    assert!(acked > 10, "{acked}");
    // The upstream takes everything while the disk is still full: the
    // "done" records go into the segment kept in reserve for them.
    assert_eq!(deliver_all(&q), acked);
    q.sync().unwrap();
    assert_eq!(q.usage().0, 0, "delivered messages still queued");
    // Delivered segments are recycled: accepting resumes by itself.
    let after = put(&q, &["a@x"], &body(2000, 200));
    q.close();
    let q = open(&fs);
    let ids: Vec<QueueId> = due(&q).iter().map(|j| j.id).collect();
    assert_eq!(
        ids,
        vec![after],
        "delivered messages came back after a restart"
    );
    q.close();
}

#[test]
fn delivery_state_a_read_only_disk_refused_is_written_once_it_takes_writes_again() {
    let fs = SimFs::new(8);
    let q = open(&fs);
    for i in 0..5 {
        put(&q, &["a@x", "b@x"], &body(1500, i));
    }
    fs.set_read_only(true);
    assert_eq!(deliver_all(&q), 5);
    // Not written, and a sync says so.
    assert!(q.sync().is_err());
    // Never taken again while running.
    assert!(due(&q).is_empty());
    fs.set_read_only(false);
    q.sync().unwrap();
    assert_eq!(q.usage().0, 0);
    q.close();
    let q = open(&fs);
    assert!(
        due(&q).is_empty(),
        "delivered messages came back after a restart"
    );
    q.close();
}

/// Remove every segment file but `keep`, as an `rm` from outside would.
fn remove_segments(fs: &SimFs, keep: &str) -> usize {
    let mut n = 0;
    for name in fs.list(Path::new(SPOOL)).unwrap() {
        if name.to_string_lossy().starts_with("seg-") && name != keep {
            fs.remove(&Path::new(SPOOL).join(name)).unwrap();
            n += 1;
        }
    }
    n
}

/// A message half delivered, one stuck, and a dozen delivered whose
/// "done" records sit in a later segment than their data.
fn a_queue_with_history(q: &Queue) -> (QueueId, QueueId) {
    let a = put(q, &["a@x", "b@x"], &body(1000, 1));
    let stuck = put(q, &["s@x"], &body(3000, 2));
    for j in due(q) {
        let o = if j.id == a {
            vec![
                (0, RcptOutcome::Delivered),
                (1, RcptOutcome::Deferred("451".into())),
            ]
        } else {
            vec![(0, RcptOutcome::Deferred("451".into()))]
        };
        q.finish(&j, &o, None);
    }
    for i in 0..12 {
        put(q, &["o@x"], &body(2000, 10 + i));
    }
    assert_eq!(deliver_all(q), 12);
    q.sync().unwrap();
    (a, stuck)
}

fn check_after_restart(fs: &SimFs, want: &[(QueueId, Vec<RcptIndex>, Vec<u8>)]) {
    let q = open(fs);
    let mut jobs = due(&q);
    jobs.sort_by_key(|j| j.id);
    let got: Vec<(QueueId, Vec<RcptIndex>, Vec<u8>)> = jobs
        .iter()
        .map(|j| (j.id, j.pending.clone(), read_body(&q, j)))
        .collect();
    assert_eq!(got.len(), want.len(), "{:?}", jobs);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0);
        assert_eq!(g.1, w.1, "pending recipients of {}", g.0);
        assert!(g.2 == w.2, "body of {}", g.0);
    }
    q.close();
}

#[test]
fn a_message_is_not_acknowledged_into_a_segment_removed_from_outside() {
    let fs = SimFs::new(9);
    let q = open(&fs);
    let (a, stuck) = a_queue_with_history(&q);
    assert!(remove_segments(&fs, "") >= 2);
    // Written into the removed (still open) segment, then noticed before
    // the 250: written again into a new one first.
    let c = put(&q, &["c@x"], &body(500, 3));
    q.close();
    check_after_restart(
        &fs,
        &[
            (a, vec![1], body(1000, 1)),
            (stuck, vec![0], body(3000, 2)),
            (c, vec![0], body(500, 3)),
        ],
    );
}

#[test]
fn what_a_segment_removed_from_outside_held_is_written_again_without_new_mail() {
    let fs = SimFs::new(10);
    let q = open(&fs);
    let (a, stuck) = a_queue_with_history(&q);
    // The first segment holds the oldest messages (a, stuck and the first
    // delivered ones); the "done" records of those went to a later one.
    assert!(remove_segments(&fs, "seg-000001.log") >= 2);
    // Noticed at a sync (and when the writer is idle).
    q.sync().unwrap();
    q.close();
    // Neither lost (the queued ones) nor back (the delivered ones).
    check_after_restart(
        &fs,
        &[(a, vec![1], body(1000, 1)), (stuck, vec![0], body(3000, 2))],
    );
}

/// What the queue holds: id, each recipient finished or not, body.
fn snapshot(q: &Queue) -> Vec<(QueueId, Vec<bool>, Vec<u8>)> {
    let mut v: Vec<(QueueId, Vec<bool>, Vec<u8>)> = q
        .list()
        .into_iter()
        .map(|s| (s.id, s.rcpts.iter().map(|(_, d)| *d).collect(), Vec::new()))
        .collect();
    v.sort_by_key(|e| e.0);
    v
}

/// Random mail, deliveries, deletes and segment files removed from
/// outside (each followed by a sync, at which the writer notices), with a
/// restart now and then: what the queue held before each restart is
/// exactly what it holds after, and every body reads back whole.
#[test]
fn segment_files_removed_at_random_lose_nothing_and_bring_nothing_back() {
    use crate::queue::sim::Rng;
    for seed in 0..40u64 {
        let mut rng = Rng::new(seed);
        let fs = SimFs::new(seed);
        let mut bodies: HashMap<QueueId, Vec<u8>> = HashMap::new();
        for _life in 0..3 {
            let q = open(&fs);
            for _ in 0..30 {
                match rng.below(6) {
                    0..=2 => {
                        let n = 1 + rng.below(3) as usize;
                        let rcpts: Vec<String> = (0..n).map(|i| format!("r{i}@x")).collect();
                        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
                        let len = match rng.below(8) {
                            0 => 7000 + rng.below(3000) as usize,
                            _ => rng.below(3000) as usize,
                        };
                        let b = body(len, rng.below(26) as u8);
                        let id = put(&q, &refs, &b);
                        bodies.insert(id, b);
                    }
                    3 => {
                        for j in q.take_due(Instant::now() + Duration::from_secs(3600), 8).0 {
                            let o: Vec<(RcptIndex, RcptOutcome)> = j
                                .pending
                                .iter()
                                .map(|i| {
                                    let o = if rng.below(3) == 0 {
                                        RcptOutcome::Deferred("451".into())
                                    } else {
                                        RcptOutcome::Delivered
                                    };
                                    (*i, o)
                                })
                                .collect();
                            q.finish(&j, &o, None);
                        }
                    }
                    4 => {
                        let l = q.list();
                        if !l.is_empty() {
                            let _ = q.delete(l[rng.below(l.len() as u64) as usize].id);
                        }
                    }
                    _ => {
                        let segs: Vec<_> = fs
                            .list(Path::new(SPOOL))
                            .unwrap()
                            .into_iter()
                            .filter(|n| n.to_string_lossy().starts_with("seg-"))
                            .collect();
                        if !segs.is_empty() {
                            let n = &segs[rng.below(segs.len() as u64) as usize];
                            fs.remove(&Path::new(SPOOL).join(n)).unwrap();
                        }
                        q.sync().unwrap();
                    }
                }
            }
            q.sync().unwrap();
            let before = snapshot(&q);
            q.close();
            let q = open(&fs);
            let after = snapshot(&q);
            assert_eq!(
                before
                    .iter()
                    .map(|e| (e.0, e.1.clone()))
                    .collect::<Vec<_>>(),
                after.iter().map(|e| (e.0, e.1.clone())).collect::<Vec<_>>(),
                "seed {seed}: the queue changed across a restart"
            );
            for j in q
                .take_due(Instant::now() + Duration::from_secs(3600), usize::MAX)
                .0
            {
                assert!(
                    read_body(&q, &j) == bodies[&j.id],
                    "seed {seed}: body of {}",
                    j.id
                );
                q.finish(&j, &[], None);
            }
            q.close();
        }
    }
}

/// The same on a real filesystem: the link count of the open file says
/// it was removed.
#[test]
fn a_segment_removed_with_rm_is_noticed_on_a_real_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let a = put(&q, &["a@x"], &body(1000, 1));
    for e in std::fs::read_dir(tmp.path()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("seg-") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let b = put(&q, &["b@x"], &body(2000, 2));
    q.close();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    let mut ids: Vec<QueueId> = due(&q).iter().map(|j| j.id).collect();
    ids.sort();
    assert_eq!(ids, vec![a, b]);
    q.close();
}

/// Recovery sets aside whatever is named like a queue file but is not
/// postern's own (empty, short, random, a symbolic link, a directory),
/// says why for each, never deletes or reuses it, and starts anyway.
#[test]
fn recovery_sets_aside_what_is_not_postern_s_own_and_starts_anyway() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (q, _) = Queue::open_with(d, limits(), small()).unwrap();
    let a = put(&q, &["a@x"], &body(1000, 1));
    q.close();
    let seg = small().segment_size as usize;
    std::fs::write(d.join("seg-000100.log"), b"").unwrap();
    std::fs::write(d.join("seg-000101.log"), vec![0u8; 100]).unwrap();
    let mut x = 0x1234_5678u32;
    let random: Vec<u8> = (0..seg)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8 | 1
        })
        .collect();
    std::fs::write(d.join("seg-000102.log"), &random).unwrap();
    // A link to a blank file of a segment's size: would pass for a free one.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("blank");
    std::fs::write(&target, vec![0u8; seg]).unwrap();
    std::os::unix::fs::symlink(&target, d.join("seg-000103.log")).unwrap();
    std::fs::create_dir(d.join("seg-000104.log")).unwrap();
    std::fs::create_dir(d.join("big").join("ABC")).unwrap();
    std::fs::create_dir(d.join("tmp").join("x")).unwrap();
    let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
    assert_eq!(r.set_aside, 7, "{r:?}");
    for name in [
        "seg-000100.log",
        "seg-000101.log",
        "seg-000102.log",
        "seg-000103.log",
        "seg-000104.log",
        "ABC",
        "x",
    ] {
        assert!(
            std::fs::symlink_metadata(d.join("corrupt").join(name)).is_ok(),
            "{name} not in corrupt/"
        );
    }
    assert_eq!(
        std::fs::read(d.join("corrupt").join("seg-000102.log")).unwrap(),
        random
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        vec![0u8; seg],
        "the link's target"
    );
    let ids: Vec<QueueId> = due(&q).iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![a]);
    // New mail goes into segments of postern's own.
    let b = put(&q, &["b@x"], &body(1000, 2));
    q.close();
    let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
    assert_eq!((r.messages, r.set_aside), (2, 0));
    let mut ids: Vec<QueueId> = due(&q).iter().map(|j| j.id).collect();
    ids.sort();
    assert_eq!(ids, vec![a, b]);
    q.close();
}

/// Set aside twice under the same name: the first one is kept too.
#[test]
fn a_second_file_set_aside_under_a_taken_name_does_not_replace_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("big")).unwrap();
    std::fs::write(d.join("big").join("ABC"), b"first").unwrap();
    let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
    assert_eq!(r.set_aside, 1);
    q.close();
    std::fs::write(d.join("big").join("ABC"), b"second").unwrap();
    let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
    assert_eq!(r.set_aside, 1);
    assert_eq!(
        std::fs::read(d.join("corrupt").join("ABC")).unwrap(),
        b"first"
    );
    assert_eq!(
        std::fs::read(d.join("corrupt").join("ABC.1")).unwrap(),
        b"second"
    );
    q.close();
}

/// A hold survives restarts, and so does its release, wherever the
/// message's data is (a segment, a file of its own) and however many
/// segments have been recycled since.
#[test]
fn a_hold_and_its_release_survive_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (q, _) = Queue::open_with(d, limits(), small()).unwrap();
    let small_one = put(&q, &["a@x"], &body(1000, 1));
    let big_one = put(&q, &["b@x"], &body(20_000, 2));
    let other = put(&q, &["c@x"], &body(1000, 3));
    q.hold(small_one).unwrap();
    q.hold(big_one).unwrap();
    // Traffic after the holds: the notes' segments must not be recycled.
    for i in 0..30 {
        put(&q, &["o@x"], &body(1500, 10 + i));
        for j in due(&q) {
            if j.id != other {
                q.finish(&j, &[(0, RcptOutcome::Delivered)], None);
            } else {
                q.finish(&j, &[(0, RcptOutcome::Deferred("451".into()))], None);
            }
        }
    }
    q.close();
    let (q, _) = Queue::open_with(d, limits(), small()).unwrap();
    let mut shown: Vec<(QueueId, bool)> = q.list().iter().map(|s| (s.id, s.held)).collect();
    shown.sort();
    assert_eq!(
        shown,
        vec![(small_one, true), (big_one, true), (other, false)]
    );
    let ids: Vec<QueueId> = due(&q).iter().map(|j| j.id).collect();
    assert_eq!(
        ids,
        vec![other],
        "held messages taken for delivery after a restart"
    );
    q.release(big_one).unwrap();
    q.close();
    let (q, _) = Queue::open_with(d, limits(), small()).unwrap();
    let mut ids: Vec<QueueId> = due(&q).iter().map(|j| j.id).collect();
    ids.sort();
    assert_eq!(ids, vec![big_one, other], "a release lost at restart");
    assert!(q.show(small_one).unwrap().held);
    q.close();
}

/// A hold the disk cannot record is refused and not applied.
#[test]
fn a_hold_that_cannot_be_written_is_refused_and_undone() {
    let fs = SimFs::new(11);
    let q = open(&fs);
    let a = put(&q, &["a@x"], &body(100, 1));
    fs.set_read_only(true);
    assert!(matches!(q.hold(a), Err(OpError::Failed(_))));
    assert!(!q.show(a).unwrap().held);
    fs.set_read_only(false);
    q.hold(a).unwrap();
    assert!(q.show(a).unwrap().held);
    q.close();
    let q = open(&fs);
    assert!(q.show(a).unwrap().held);
    assert!(due(&q).is_empty());
    q.close();
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

#[test]
fn a_queue_directory_its_group_or_every_user_may_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (m, who) in [
        (0o777, "every user"),
        (0o1777, "every user"),
        (0o770, "its group"),
    ] {
        set_mode(tmp.path(), m);
        let err = Queue::open_with(tmp.path(), limits(), small())
            .map(|(q, _)| q.close())
            .unwrap_err();
        assert!(matches!(err, QueueError::Unsafe { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("writable by {who}"))
                && text.contains(&format!("chmod 700 {}", tmp.path().display())),
            "{text}"
        );
    }
    // Made private, it opens.
    set_mode(tmp.path(), 0o700);
    Queue::open_with(tmp.path(), limits(), small())
        .unwrap()
        .0
        .close();
}

/// Files made by an older version under umask 022 (world-readable) are
/// made private at start; new ones are private from the first.
#[test]
fn queue_files_are_private_and_old_ones_are_made_so() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("q");
    let (q, _) = Queue::open_with(&d, limits(), small()).unwrap();
    put(&q, &["a@x"], &body(1000, 1));
    put(&q, &["a@x"], &body(20_000, 2));
    let check = |why: &str| {
        for sub in [d.clone(), d.join("big"), d.join("tmp"), d.join("corrupt")] {
            assert_eq!(mode_of(&sub), 0o700, "{why}: {}", sub.display());
            for e in std::fs::read_dir(&sub).unwrap().flatten() {
                if !e.path().is_dir() {
                    assert_eq!(mode_of(&e.path()), 0o600, "{why}: {}", e.path().display());
                }
            }
        }
    };
    check("new");
    q.close();
    for sub in [d.clone(), d.join("big")] {
        for e in std::fs::read_dir(&sub).unwrap().flatten() {
            if !e.path().is_dir() {
                set_mode(&e.path(), 0o644);
            }
        }
    }
    set_mode(&d.join("big"), 0o755);
    set_mode(&d, 0o755);
    let (q, r) = Queue::open_with(&d, limits(), small()).unwrap();
    assert_eq!((r.messages, r.set_aside), (2, 0));
    check("after a restart");
    q.close();
}

/// A segment another user put there is not delivered: set aside, said why.
#[test]
fn a_segment_of_another_user_is_set_aside_not_delivered() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: making a file of another user needs root; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (q, _) = Queue::open_with(d, limits(), small()).unwrap();
    put(&q, &["a@x"], &body(1000, 1));
    q.close();
    std::os::unix::fs::chown(d.join("seg-000001.log"), Some(4242), Some(4242)).unwrap();
    let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
    assert_eq!((r.messages, r.set_aside), (0, 1), "{r:?}");
    assert!(d.join("corrupt").join("seg-000001.log").exists());
    assert!(due(&q).is_empty());
    q.close();
}

/// The lock is never taken through a link planted in its place (the link
/// is set aside, its target untouched), and a lock file of another user,
/// who could hold it to keep postern out, is refused with what to do.
#[test]
fn a_linked_lock_is_not_followed_and_another_users_lock_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("q");
    let target = tmp.path().join("elsewhere");
    std::fs::create_dir(&d).unwrap();
    set_mode(&d, 0o700);
    std::os::unix::fs::symlink(&target, d.join("lock")).unwrap();
    let (q, _) = Queue::open_with(&d, limits(), small()).unwrap();
    q.close();
    assert!(!target.exists(), "the lock was opened through the link");
    assert!(d.join("corrupt").join("lock").is_symlink());
    assert_eq!(mode_of(&d.join("lock")), 0o600);
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: making a file of another user needs root; skipped");
        return;
    }
    std::os::unix::fs::chown(d.join("lock"), Some(4242), Some(4242)).unwrap();
    let err = Queue::open_with(&d, limits(), small())
        .map(|(q, _)| q.close())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("lock file") && text.contains("user id 4242") && text.contains("remove it"),
        "{text}"
    );
}

/// Loads that alternate between delivery lagging a segment behind and
/// delivery keeping up reuse the same segment files. A switch keeps one
/// free segment in reserve for state records; if the recycling at a
/// switch trims the free segments before the next active one is taken
/// from them, the next lagging switch has to make a segment again (a
/// segment's worth of zeroes written: with 4 MiB segments, 4 KiB more per
/// 4 KiB message) and a later recycling deletes it.
#[test]
fn alternating_loads_reuse_segment_files_instead_of_making_new_ones() {
    let fs = SimFs::new(11);
    let opts = StoreOptions {
        keep_free: 2,
        ..on(&fs)
    };
    let q = Queue::open_with(Path::new(SPOOL), limits(), opts)
        .unwrap()
        .0;
    let mut made = Vec::new();
    for round in 0..6u8 {
        // Lagging: a segment and a half queued before any is delivered.
        for i in 0..12 {
            put(&q, &["a@x"], &body(2000, round.wrapping_add(i)));
        }
        deliver_all(&q);
        q.sync().unwrap();
        // Keeping up: each message delivered before the next arrives.
        for i in 0..12 {
            put(&q, &["a@x"], &body(2000, round.wrapping_add(i)));
            deliver_all(&q);
            q.sync().unwrap();
        }
        made.push(fs.created("seg-"));
    }
    q.close();
    // The first rounds make what the load needs; after that, nothing.
    assert_eq!(made[2], made[5], "segments made after each round: {made:?}");
}
