//! A segment file removed from outside while postern runs (an admin's
//! `rm`, a cleanup script): the open file still reads and writes, but
//! nothing in it survives a restart. The writer notices it by the file's
//! link count: that of each segment holding anything before it
//! acknowledges a commit (a free one holds nothing, and is checked once it
//! is written into), that of every segment after every sync it was asked
//! for and when idle; it stops using the segment and
//! writes again, into live segments, everything that still mattered in it:
//! the queued messages (with their finished recipients), the "done"
//! records that keep delivered messages in other segments from coming
//! back, and the latest state record and hold note of each message. What it cannot write
//! (a full disk) it says by id and tries again.

use std::io;

use super::super::record::{self, Hold, Kind, MessageMeta};
use super::super::spool::SpoolWriter;
use super::super::{Loc, Queue, QueueError, QueueId};
use super::writer::Reply;
use super::{Pending, SegState, Segment, Store, Use, tmp_dir};
use crate::smtp::RcptIndex;

/// Which segments' link counts [`Store::rescue`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Those holding anything: before commits are acknowledged (one
    /// `fstat` each, on the path of every message).
    InUse,
    /// Every one, free ones too.
    All,
}

/// A segment whose file was removed from outside, until everything that
/// mattered in it is written elsewhere.
#[derive(Debug)]
pub(super) struct Orphan {
    no: u32,
    seg: Segment,
    /// Ids of the "done" records in it not yet written again.
    done: Vec<u64>,
    /// Segments the "done" records went to.
    targets: Vec<u32>,
}

impl Store {
    /// Segments (of `check`) whose files are no longer in the directory.
    /// Once one is, every one is looked at: what it held is about to be
    /// written again, maybe into a free segment removed with it.
    fn unlinked(&self, check: Check) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .segs
            .iter()
            .filter(|(_, s)| check == Check::All || s.state != SegState::Free)
            .filter(|(_, s)| matches!(s.file.linked(), Ok(false)))
            .map(|(n, _)| *n)
            .collect();
        if check == Check::InUse && !v.is_empty() {
            return self.unlinked(Check::All);
        }
        v.sort_unstable();
        v
    }

    /// Notice segment files removed from outside and write what mattered
    /// in them again. `pending` are this batch's commits, synced but not
    /// yet acknowledged: one that cannot be written again becomes an error
    /// (its client gets 451 and sends it again), never a 250 for bytes
    /// that will not survive a restart. Syncs what it wrote.
    pub(super) fn rescue(
        &mut self,
        q: &Queue,
        check: Check,
        pending: &mut [(Option<Reply>, Result<Pending, QueueError>)],
    ) {
        for no in self.unlinked(check) {
            let Some(seg) = self.segs.remove(&no) else {
                continue;
            };
            if self.active == Some(no) {
                self.active = None;
            }
            if seg.state == SegState::Free {
                tracing::warn!(segment = %seg.path.display(), "free queue segment file removed from outside; nothing was in it");
                continue;
            }
            tracing::error!(segment = %seg.path.display(), "queue segment file removed from outside while in use: writing what it held again");
            let done = self.done_records(&seg);
            self.orphans.push(Orphan {
                no,
                seg,
                done,
                targets: Vec::new(),
            });
        }
        if self.orphans.is_empty() {
            return;
        }
        let mut wrote = false;
        for (_, r) in pending.iter_mut() {
            let Ok(p) = r else { continue };
            let Loc::Seg { file_no, .. } = p.loc else {
                continue;
            };
            let Some(o) = self.orphans.iter().position(|o| o.no == file_no) else {
                continue;
            };
            let meta = p.meta.clone();
            match self.copy_message(o, meta, p.body_start, p.body_len) {
                Ok(moved) => {
                    wrote = true;
                    p.loc = moved.0;
                    p.body_start = moved.1;
                    p.record_len = moved.2;
                }
                Err(e) => {
                    tracing::error!(id = %QueueId(p.id), error = %e, "message written into a segment removed from outside, and cannot be written again: not acknowledged");
                    *r = Err(e);
                }
            }
        }
        let mut i = 0;
        while i < self.orphans.len() {
            match self.rescue_one(q, i, &mut wrote) {
                Ok(()) => {
                    let o = self.orphans.remove(i);
                    // Its data is gone: the "done" records elsewhere that
                    // finished messages in it no longer matter.
                    for d in o.seg.dependents {
                        self.release(Some(d));
                    }
                    tracing::info!(segment = %o.seg.path.display(), "everything the removed segment held is written again");
                }
                Err(lost) => {
                    tracing::error!(
                        segment = %self.orphans[i].seg.path.display(),
                        only_in_memory = %lost,
                        "cannot write again what the removed segment held (disk full?): these messages are lost at a restart unless delivered first; trying again"
                    );
                    i += 1;
                }
            }
        }
        if wrote && let Err(e) = self.sync() {
            tracing::error!(error = %e, "queue sync failed after writing a removed segment's contents again");
            self.abandon_active();
            for (_, r) in pending.iter_mut() {
                if r.is_ok() {
                    *r = Err(QueueError::Io(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }

    /// Try again what a removed segment held (`rescue` could not write
    /// all of it).
    pub(super) fn retry_orphans(&mut self, q: &Queue) {
        if !self.orphans.is_empty() {
            self.rescue(q, Check::All, &mut []);
        }
    }

    /// Everything of orphan `i` that is still only in memory, written to
    /// live segments; on failure, the ids of the messages still in it.
    fn rescue_one(&mut self, q: &Queue, i: usize, wrote: &mut bool) -> Result<(), String> {
        let no = self.orphans[i].no;
        // Queued messages whose data was in it.
        let in_it: Vec<u64> = {
            let st = q.state();
            let mut v: Vec<u64> = st
                .entries
                .iter()
                .filter(|(_, e)| matches!(e.loc, Loc::Seg { file_no, .. } if file_no == no))
                .map(|(id, _)| *id)
                .collect();
            v.sort_unstable();
            v
        };
        let mut lost = Vec::new();
        for id in in_it {
            let Some((meta, body_start, body_len, old_state, old_note)) =
                q.state().entries.get(&id).map(|e| {
                    let mut meta = MessageMeta::clone(&e.meta);
                    // Finished recipients go into the copy, except those whose
                    // failure report is not durable yet.
                    meta.done = e
                        .done
                        .iter()
                        .enumerate()
                        .filter(|(_, d)| **d)
                        .filter_map(|(i, _)| RcptIndex::try_from(i).ok())
                        .filter(|i| !e.unreported.contains(i))
                        .collect();
                    // The copy carries the hold as it is now, whoever set
                    // it: no note need follow it.
                    meta.hold = e.hold;
                    (meta, e.body_start, e.body_len, e.state_seg, e.hold_seg)
                })
            else {
                continue;
            };
            match self.copy_message(i, meta, body_start, body_len) {
                Ok((loc, start, len)) => {
                    *wrote = true;
                    q.moved(id, loc, start, len);
                    // The copy carries the finished recipients: an older
                    // "recipients done" record no longer matters.
                    if old_state != Some(no) {
                        self.release(old_state);
                    }
                    // Nor does an older note: the copy carries the hold.
                    if let Some(e) = q.state().entries.get_mut(&id) {
                        e.hold_seg = None;
                    }
                    if old_note != Some(no) {
                        self.release(old_note);
                    }
                }
                Err(e) => {
                    tracing::warn!(id = %QueueId(id), error = %e, "cannot write a queued message again");
                    lost.push(QueueId(id).to_string());
                }
            }
        }
        // Messages elsewhere whose latest "recipients done" record was in it.
        let stated: Vec<u64> = {
            let st = q.state();
            st.entries
                .iter()
                .filter(|(_, e)| e.state_seg == Some(no))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in stated {
            q.set_state_seg(id, None);
            *wrote = true;
            let _ = self.record(q, id);
        }
        // Messages elsewhere whose latest note was in it.
        let noted: Vec<(u64, bool)> = {
            let st = q.state();
            st.entries
                .iter()
                .filter(|(_, e)| e.hold_seg == Some(no))
                .map(|(id, e)| (*id, e.hold != Hold::None))
                .collect()
        };
        for (id, held) in noted {
            *wrote = true;
            if self.note(q, id, held).is_err() {
                lost.push(format!("{} (its hold)", QueueId(id)));
            }
        }
        // "Done" records: they keep delivered messages whose data is in
        // other segments from coming back at recovery.
        while let Some(&id) = self.orphans[i].done.last() {
            match self.append(Kind::Done, &record::encode_u64(id)) {
                Ok(z) => {
                    *wrote = true;
                    let o = &mut self.orphans[i];
                    o.done.pop();
                    if !o.targets.contains(&z) {
                        o.targets.push(z);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write a \"done\" record again");
                    lost.push("(delivered messages whose \"done\" record was in it)".into());
                    break;
                }
            }
        }
        if !lost.is_empty() {
            return Err(lost.join(" "));
        }
        // Whoever depended on the removed segment's "done" records now
        // depends on where they went.
        let targets = self.orphans[i].targets.clone();
        let mut pins = Vec::new();
        for (x, s) in self.segs.iter_mut() {
            let before = s.dependents.len();
            s.dependents.retain(|d| *d != no);
            for _ in s.dependents.len()..before {
                // A record beside the data it finishes pins nothing.
                for t in targets.iter().filter(|t| *t != x) {
                    s.dependents.push(*t);
                    pins.push(*t);
                }
            }
        }
        for t in pins {
            self.pin(t);
        }
        Ok(())
    }

    /// Write a message again from orphan `i`'s open file (still readable);
    /// returns its new location, body offset and record length.
    fn copy_message(
        &mut self,
        i: usize,
        meta: MessageMeta,
        body_start: u64,
        body_len: u64,
    ) -> Result<(Loc, u64, u64), QueueError> {
        let mut w = SpoolWriter::new(meta, tmp_dir(&self.dir), true, self.fs.clone());
        let mut buf = Vec::with_capacity(64 << 10);
        let mut at = 0u64;
        while at < body_len {
            let n = (body_len - at).min(64 << 10) as usize;
            let from = body_start.checked_add(at).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "message body past any file")
            })?;
            buf.clear();
            self.orphans[i].seg.file.read_append_at(&mut buf, n, from)?;
            w.write(&buf)?;
            at += n as u64;
        }
        let (loc, start) = self.write_message(&mut w, Use::State)?;
        if let Loc::Seg { file_no, .. } = &loc
            && let Some(s) = self.segs.get_mut(file_no)
        {
            s.live += 1;
        }
        Ok((loc, start, w.record_len()))
    }

    /// The ids of the "done" records of a segment's current life.
    fn done_records(&self, seg: &Segment) -> Vec<u64> {
        let mut v = Vec::new();
        let Ok(mut scan) = super::recover::Scanner::new(seg.file.as_ref(), seg.seq) else {
            return v;
        };
        while let Ok(Some((_, h, payload))) = scan.next_record() {
            if h.kind == Kind::Done
                && let Ok(id) = record::decode_u64(&payload)
            {
                v.push(id);
            }
        }
        v
    }
}

impl Queue {
    /// A message's data was written again elsewhere.
    fn moved(&self, id: u64, loc: Loc, body_start: u64, record_len: u64) {
        let mut st = self.state();
        let mut delta = None;
        if let Some(e) = st.entries.get_mut(&id) {
            delta = Some((e.record_len, record_len));
            e.loc = loc;
            e.body_start = body_start;
            e.record_len = record_len;
            e.state_seg = None;
        }
        if let Some((old, new)) = delta {
            st.bytes = st.bytes.saturating_sub(old).saturating_add(new);
        }
    }
}
