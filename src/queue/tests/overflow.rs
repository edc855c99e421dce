//! Numbers read from disk at their integer limits (sequence numbers,
//! ids, counters, offsets and lengths near `u64::MAX` or `u32::MAX`): what
//! they name is set aside or refused with a log line, never a panic (the
//! release build checks overflow and aborts, and the queue would abort
//! again at every start).

use super::*;
use crate::queue::record::{Header, Kind, MessageMeta};

/// A segment file of `small()`'s size: a start record for `seq`, then
/// `records` (kind, payload) stamped with the same life, then zeroes.
fn segment(seq: u64, records: &[(Kind, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let start = record::encode_u64(seq);
    out.extend_from_slice(&Header::encode(Kind::SegmentStart, seq as u32, &start));
    out.extend_from_slice(&start);
    for (kind, payload) in records {
        out.extend_from_slice(&Header::encode(*kind, seq as u32, payload));
        out.extend_from_slice(payload);
    }
    out.resize(small().segment_size as usize, 0);
    out
}

/// A message record's payload: `id`, one recipient, `body`.
fn message(id: u64, body: &[u8]) -> Vec<u8> {
    let meta = MessageMeta {
        id,
        arrival: 1_800_000_000,
        queued_ms: Some(1000),
        envelope: Arc::new(msg(&["a@x.example"])),
        done: Vec::new(),
        hold: Hold::None,
        route: None,
        delay_warned: false,
    };
    let mut p = meta.encode();
    p.extend_from_slice(body);
    p
}

/// A state file whose both slots hold `counter` and `seq_ceiling`.
fn state(counter: u64, seq_ceiling: u64) -> Vec<u8> {
    let mut slot = [0u8; 64];
    slot[0..4].copy_from_slice(b"PSTS");
    slot[4..8].copy_from_slice(&1u32.to_le_bytes());
    slot[8..16].copy_from_slice(&counter.to_le_bytes());
    slot[16..24].copy_from_slice(&seq_ceiling.to_le_bytes());
    slot[32..40].copy_from_slice(&1_800_000_000u64.to_le_bytes());
    let crc = crc32fast::hash(&slot[..40]);
    slot[40..44].copy_from_slice(&crc.to_le_bytes());
    [slot, slot].concat()
}

/// A segment whose start record says `u64::MAX` (its checksum right): not
/// postern's (it counts from 1), set aside; the rest of the queue loads
/// and takes new mail. Panicked before ("attempt to add with overflow":
/// the next sequence number was the highest seen plus one).
#[test]
fn a_segment_numbered_u64_max_is_set_aside_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (q, _) = Queue::open_with(d, limits(), small()).unwrap();
    let a = put(&q, &["a@x"], &body(100, 1));
    q.close();
    std::fs::write(
        d.join("seg-000050.log"),
        segment(u64::MAX, &[(Kind::Message, message(7, b"x"))]),
    )
    .unwrap();
    let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
    assert_eq!((r.messages, r.set_aside), (1, 1), "{r:?}");
    assert!(d.join("corrupt").join("seg-000050.log").exists());
    let b = put(&q, &["b@x"], &body(100, 2));
    let mut ids: Vec<QueueId> = due(&q).iter().map(|j| j.id).collect();
    ids.sort();
    assert_eq!(ids, vec![a, b]);
    q.close();
}

/// A message record whose id is `u64::MAX` (no id postern hands out
/// comes near: they start from the clock, shifted by 20 bits) is skipped
/// with a log line; new ids stay unique. Panicked before (the next id was
/// the highest seen plus one).
#[test]
fn a_message_id_of_u64_max_is_skipped_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("seg-000001.log"),
        segment(
            5,
            &[
                (Kind::Message, message(u64::MAX, b"bogus")),
                (Kind::Message, message(42 << 20, b"fine")),
            ],
        ),
    )
    .unwrap();
    let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
    assert_eq!(r.messages, 1, "{r:?}");
    let a = put(&q, &["a@x"], &body(100, 1));
    let mut ids: Vec<u64> = due(&q).iter().map(|j| j.id.0).collect();
    ids.sort();
    assert_eq!(ids, vec![42 << 20, a.0]);
    q.close();
}

/// A state file (checksums right) whose counter and sequence ceiling are
/// `u64::MAX`: unreadable, started again from what the segments say.
/// Panicked before, at the first save (the counter plus one) or the first
/// new segment (the ceiling plus the reserve step).
#[test]
fn a_state_at_u64_max_is_started_again_not_a_panic() {
    for (counter, ceiling) in [(u64::MAX, 64), (1, u64::MAX), (1, u64::MAX - 10)] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let (q, _) = Queue::open_with(d, limits(), small()).unwrap();
        let a = put(&q, &["a@x"], &body(100, 1));
        q.close();
        std::fs::write(d.join("state"), state(counter, ceiling)).unwrap();
        let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
        assert_eq!(r.messages, 1, "{counter} {ceiling}: {r:?}");
        // Enough new mail for new segments (each starts a new life).
        let mut ids = vec![a];
        for i in 0..40 {
            ids.push(put(&q, &["b@x"], &body(1500, i)));
        }
        q.close();
        let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
        assert_eq!(r.messages, ids.len(), "{counter} {ceiling}: {r:?}");
        let mut got: Vec<QueueId> = due(&q).iter().map(|j| j.id).collect();
        got.sort();
        ids.sort();
        assert_eq!(got, ids);
        q.close();
    }
}

/// A segment named with the highest number a name can hold
/// (`seg-4294967295.log`): new segments still get names. Panicked before,
/// at the first new segment (the next file number was its number plus
/// one).
#[test]
fn a_segment_named_u32_max_does_not_stop_new_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join(format!("seg-{}.log", u32::MAX)),
        segment(3, &[(Kind::Message, message(42 << 20, b"kept"))]),
    )
    .unwrap();
    let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
    assert_eq!(r.messages, 1, "{r:?}");
    let mut ids = vec![QueueId(42 << 20)];
    for i in 0..40 {
        ids.push(put(&q, &["b@x"], &body(1500, i)));
    }
    q.close();
    let (q, r) = Queue::open_with(d, limits(), small()).unwrap();
    assert_eq!(r.messages, ids.len(), "{r:?}");
    q.close();
}

/// A body whose offset and length add up past `u64::MAX` (as a damaged
/// record's could) is an error to the reader, not a panic. Panicked
/// before ("attempt to add with overflow" in `open_body`).
#[test]
fn a_body_offset_near_u64_max_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with(tmp.path(), limits(), small()).unwrap();
    put(&q, &["a@x"], &body(100, 1));
    let mut job = due(&q).pop().unwrap();
    job.body_start = u64::MAX - 10;
    job.body_len = u64::from(u32::MAX);
    let err = q.open_body(&job).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    job.body_start = u64::MAX - 10;
    job.body_len = 5;
    let mut r = q.open_body(&job).unwrap();
    let mut buf = Vec::new();
    // Past the end of the file: an I/O error, not a panic.
    assert!(r.read_chunk(&mut buf, 4096).is_err());
    q.close();
}
