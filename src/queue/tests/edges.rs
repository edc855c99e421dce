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
