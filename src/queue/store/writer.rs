//! The writer thread: it owns every write and every sync of the spool.
//! It takes every request waiting (group commit), writes them, syncs once,
//! then answers; it records delivery outcomes as state records, and keeps
//! those the disk refuses in memory until it takes them.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::super::clock::SAVE_EVERY;
use super::super::record::{self, Kind};
use super::super::spool::SpoolWriter;
use super::super::{Entry, Loc, Queue, QueueError, QueueId};
use super::rescue::Check;
use super::{Pending, SegState, Store, Use};
use crate::smtp::RcptIndex;

/// How long a finished-recipient record may wait for a sync that a commit
/// would have done anyway. Losing it in a crash means a duplicate delivery,
/// never a lost message, so it is worth batching.
const LAZY_SYNC: Duration = Duration::from_secs(1);
/// Most requests handled in one group commit.
const MAX_BATCH: usize = 256;
/// How long a commit waits for other sessions with a transaction open, so
/// that they share its sync (a sync costs a flash page or more; 5 ms is
/// little next to an SMTP round trip).
const GROUP_WAIT: Duration = Duration::from_millis(5);
/// How often a state record the disk refused (full, read-only) is tried
/// again. Each try may attempt to make a segment, so not in a busy loop.
const STATE_RETRY: Duration = Duration::from_secs(1);

/// Answered once an operator's change is durable (or with why not).
pub(in crate::queue) type Ack = mpsc::Sender<Result<(), QueueError>>;

/// Where a commit's answer goes: the queue id once durable, or why not.
pub(super) type Reply = smol::channel::Sender<Result<u64, QueueError>>;

/// Requests to the writer thread.
#[derive(Debug)]
pub(in crate::queue) enum Request {
    Commit {
        w: SpoolWriter,
        reply: Reply,
    },
    /// Recipients of `id` finished in memory; the writer records what
    /// memory says about the message when it gets to it.
    Outcome {
        id: u64,
        newly_done: Vec<RcptIndex>,
        /// Operator delete: every recipient is finished, whatever memory
        /// says by the time the writer gets here (a report that could not
        /// be queued puts its recipients back in the meantime).
        delete: bool,
        report: Option<SpoolWriter>,
        /// Answered once the outcome is durable (operator delete).
        ack: Option<Ack>,
    },
    /// Hold (or release) a message: a note record, answered once durable.
    Note {
        id: u64,
        held: bool,
        ack: Ack,
    },
    Sync(mpsc::Sender<Result<(), QueueError>>),
    Shutdown,
}

impl Store {
    /// The writer thread: take every request that is waiting, write them,
    /// sync once, then answer.
    pub(in crate::queue) fn run(mut self, rx: mpsc::Receiver<Request>, q: Queue) {
        let mut stop = false;
        let mut last_save = self.clock.mono();
        while !stop {
            let now = self.clock.mono();
            if now.saturating_duration_since(last_save) >= SAVE_EVERY {
                last_save = now;
                if let Err(e) = self.save_clock() {
                    tracing::warn!(error = %e, "cannot save the queue clock");
                }
            }
            if (!self.unrecorded.is_empty() || !self.orphans.is_empty())
                && now.saturating_duration_since(self.last_retry) >= STATE_RETRY
            {
                self.retry_orphans(&q);
                self.retry_unrecorded(&q);
            }
            let mut wait = if self.is_dirty() {
                LAZY_SYNC
            } else {
                SAVE_EVERY
            };
            if !self.unrecorded.is_empty() || !self.orphans.is_empty() {
                wait = wait.min(STATE_RETRY);
            }
            let first = match rx.recv_timeout(wait) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) if self.is_dirty() => None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Idle: a segment removed from outside is noticed
                    // now, not only at the next message.
                    self.rescue(&q, Check::All, &mut []);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Request::Shutdown),
            };
            let mut batch: Vec<Request> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if batch.iter().any(|r| matches!(r, Request::Commit { .. })) {
                let until = std::time::Instant::now() + GROUP_WAIT;
                while batch.len() < MAX_BATCH
                    && q.shared.receiving.load(std::sync::atomic::Ordering::SeqCst) > 0
                {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(r) => batch.push(r),
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            batch.push(Request::Shutdown);
                            break;
                        }
                    }
                }
            }
            let mut answers = Vec::new();
            let mut after_sync: Vec<AfterSync> = Vec::new();
            let mut acks = Vec::new();
            let mut syncs = Vec::new();
            let mut notes = Vec::new();
            let mut must_sync = batch.is_empty();
            for req in batch {
                match req {
                    Request::Commit { mut w, reply } => {
                        if reply.is_closed() {
                            // The session stopped waiting before its message
                            // was written (data_end_timeout on a stuck device,
                            // or the session ended): the client was not told
                            // 250 and will send it again, so writing it now
                            // could only make a duplicate.
                            tracing::warn!(id = %QueueId(w.meta.id), "message abandoned by its session before it was written; not queued");
                            continue;
                        }
                        must_sync = true;
                        let r = self.commit_one(&q, &mut w);
                        answers.push((Some(reply), r));
                    }
                    Request::Outcome {
                        id,
                        newly_done,
                        delete,
                        report,
                        ack,
                    } => {
                        if let Some(mut rep) = report {
                            // The report must be durable before the failure
                            // it reports is: the outcome waits for the sync.
                            must_sync = true;
                            match self.commit_one(&q, &mut rep) {
                                Ok(p) => {
                                    answers.push((None, Ok(p)));
                                    after_sync.push(AfterSync {
                                        id,
                                        newly_done,
                                        ack: None,
                                        with_report: true,
                                        delete: false,
                                    });
                                }
                                Err(e) => {
                                    tracing::error!(id = %QueueId(id), error = %e, "cannot queue report; will retry");
                                    // Keep the recipients pending: the failure is found again.
                                    q.undo_done(id, &newly_done);
                                    if rep.delay_warning {
                                        // And the delay warning is due again.
                                        q.undo_delay_warned(id);
                                    }
                                }
                            }
                            continue;
                        }
                        if after_sync.iter().any(|a| a.id == id) {
                            // A report for this message waits for the sync:
                            // what follows it must not overtake it.
                            after_sync.push(AfterSync {
                                id,
                                newly_done,
                                ack,
                                with_report: false,
                                delete,
                            });
                            continue;
                        }
                        if delete {
                            q.finish_all(id);
                        }
                        match ack {
                            None => {
                                let _ = self.record(&q, id);
                            }
                            Some(tx) => {
                                // An operator waits: durable, or an error
                                // and nothing changed, never "later".
                                let r = self.outcome(&q, id);
                                must_sync = true;
                                acks.push((tx, r, id, newly_done));
                            }
                        }
                    }
                    Request::Note { id, held, ack } => {
                        must_sync = true;
                        let r = self.note(&q, id, held);
                        notes.push((ack, r));
                    }
                    Request::Sync(tx) => {
                        must_sync = true;
                        syncs.push(tx);
                    }
                    Request::Shutdown => stop = true,
                }
            }
            if !syncs.is_empty() || stop {
                // A sync means everything: state records the disk refused
                // before are tried again first.
                self.retry_unrecorded(&q);
            }
            let synced = if must_sync || stop {
                self.sync()
            } else {
                Ok(())
            };
            if stop && let Err(e) = self.save_clock() {
                tracing::warn!(error = %e, "cannot save the queue clock");
            }
            if let Err(e) = &synced {
                tracing::error!(error = %e, "queue sync failed; new mail refused until it works again");
                // After a failed fsync the page cache is not to be trusted:
                // never append to this segment again.
                self.abandon_active();
            }
            if synced.is_ok() && (!answers.is_empty() || !syncs.is_empty()) {
                // Before anything written into a segment is acknowledged,
                // and before a sync says everything is safe: is each
                // segment file still there? (Free ones hold nothing to
                // acknowledge: an explicit sync or idleness looks at them.)
                let check = if syncs.is_empty() {
                    Check::InUse
                } else {
                    Check::All
                };
                self.rescue(&q, check, &mut answers);
            }
            for (reply, r) in answers {
                let r = match (r, &synced) {
                    (Ok(pending), Ok(())) => {
                        let id = pending.id;
                        q.insert(pending);
                        Ok(id)
                    }
                    (Ok(_), Err(e)) => Err(QueueError::Io(io::Error::new(e.kind(), e.to_string()))),
                    (Err(e), _) => Err(e),
                };
                if let Some(reply) = reply {
                    let _ = reply.try_send(r);
                }
            }
            for AfterSync {
                id,
                newly_done,
                ack,
                with_report,
                delete,
            } in after_sync
            {
                if delete && synced.is_ok() {
                    q.finish_all(id);
                }
                let r = match (&synced, &ack) {
                    (Err(e), _) => {
                        if with_report || ack.is_some() {
                            // The report is not durable: the recipients it
                            // covers are pending again (reported next time).
                            q.undo_done(id, &newly_done);
                        } else {
                            self.record_later(id);
                        }
                        Err(QueueError::Io(io::Error::new(e.kind(), e.to_string())))
                    }
                    (Ok(()), None) => {
                        q.reported(id, &newly_done);
                        let _ = self.record(&q, id);
                        Ok(())
                    }
                    (Ok(()), Some(_)) => {
                        // An operator waits for this one to be durable.
                        let r = self
                            .outcome(&q, id)
                            .and_then(|()| self.sync().map_err(QueueError::Io));
                        if r.is_err() {
                            q.undo_done(id, &newly_done);
                        }
                        r
                    }
                };
                if let Some(tx) = ack {
                    let _ = tx.send(r);
                }
            }
            for (tx, r, id, newly_done) in acks {
                let r = match (r, &synced) {
                    (Ok(()), Ok(())) => Ok(()),
                    (Ok(()), Err(e)) => {
                        Err(QueueError::Io(io::Error::new(e.kind(), e.to_string())))
                    }
                    (Err(e), _) => Err(e),
                };
                if r.is_err() {
                    q.undo_done(id, &newly_done);
                }
                let _ = tx.send(r);
            }
            for (tx, r) in notes {
                let _ = tx.send(match (r, &synced) {
                    (Ok(()), Err(e)) => {
                        Err(QueueError::Io(io::Error::new(e.kind(), e.to_string())))
                    }
                    (r, _) => r,
                });
            }
            let unrecorded = self.unrecorded.len();
            for tx in syncs {
                let r = match &synced {
                    Err(e) => Err(QueueError::Io(io::Error::new(e.kind(), e.to_string()))),
                    Ok(()) if unrecorded > 0 => Err(QueueError::Io(io::Error::other(format!(
                        "{unrecorded} delivery state records not written yet (disk full or read-only?); kept in memory and tried again"
                    )))),
                    Ok(()) => Ok(()),
                };
                let _ = tx.send(r);
            }
            if stop && !self.unrecorded.is_empty() {
                let ids: Vec<String> = self
                    .unrecorded
                    .iter()
                    .map(|id| QueueId(*id).to_string())
                    .collect();
                tracing::error!(
                    ids = %ids.join(" "),
                    "stopping with delivery state not written (disk full or read-only): these messages will be delivered again after the restart; free space in the queue directory"
                );
            }
        }
    }

    fn commit_one(&mut self, q: &Queue, w: &mut SpoolWriter) -> Result<Pending, QueueError> {
        if !w.internal {
            q.check_room(w.record_len())?;
        }
        // A failure report finishes a message, as state records do: it may
        // use the reserve (reports are never refused for space).
        let use_ = if w.internal { Use::State } else { Use::Message };
        let (loc, body_start) = self.write_message(w, use_)?;
        if let Loc::Seg { file_no, .. } = &loc
            && let Some(s) = self.segs.get_mut(file_no)
        {
            s.live += 1;
        }
        Ok(Pending {
            id: w.meta.id,
            meta: w.meta.clone(),
            loc,
            body_start,
            body_len: w.body_len,
            record_len: w.record_len(),
        })
    }

    /// Write the state record for what memory says about message `id`
    /// now: "done" once every recipient is finished (and each failure's
    /// report is durable), else "recipients done". Nothing changes in
    /// memory unless the record was written, so a failure can simply be
    /// tried again ([`Store::record_later`]).
    fn outcome(&mut self, q: &Queue, id: u64) -> Result<(), QueueError> {
        let (loc, old_state, done_list, all_done, hold_seg, flags) = {
            let st = q.state();
            let Some(e) = st.entries.get(&id) else {
                return Ok(());
            };
            // Recipients whose failure report is not durable yet are left
            // out: a later outcome must not record them ahead of it.
            let unreported: HashSet<RcptIndex> = e.unreported.iter().copied().collect();
            let list: Vec<RcptIndex> = e
                .done
                .iter()
                .enumerate()
                .filter(|(_, d)| **d)
                .filter_map(|(i, _)| RcptIndex::try_from(i).ok())
                .filter(|i| !unreported.contains(i))
                .collect();
            let all = e.pending() == 0 && e.unreported.is_empty();
            let flags = if e.delay_warned {
                record::DELAY_WARNED
            } else {
                0
            };
            (e.loc.clone(), e.state_seg, list, all, e.hold_seg, flags)
        };
        if all_done && let Loc::Big { path } = &loc {
            // A file of its own needs no "done" record: removing it is the
            // record (and needs no room, which matters on a full disk).
            match self.fs.remove(path) {
                Ok(()) => self.dirty_dirs.push(self.dir.join("big")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Cannot remove it (read-only or immutable): a "done"
                    // record finishes it instead; recovery removes the file.
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove delivered message file; writing a done record instead");
                    let z = self.append(Kind::Done, &record::encode_u64(id))?;
                    // Kept while this process runs: the file is still there.
                    self.pin(z);
                }
            }
            self.release(old_state);
            self.release(hold_seg);
            q.remove(id);
        } else if all_done {
            let z = self.append(Kind::Done, &record::encode_u64(id))?;
            self.release(old_state);
            // A finished message's hold no longer matters.
            self.release(hold_seg);
            if let Loc::Seg { file_no: x, .. } = loc {
                if x != z {
                    self.pin(z);
                    if let Some(xs) = self.segs.get_mut(&x) {
                        xs.dependents.push(z);
                    }
                }
                if let Some(xs) = self.segs.get_mut(&x) {
                    xs.live = xs.live.saturating_sub(1);
                }
                self.recycle_soft(x);
            }
            q.remove(id);
        } else {
            let a = self.append(
                Kind::RcptsDone,
                &record::encode_rcpts_done(id, &done_list, flags),
            )?;
            self.release(old_state);
            let data_seg = match &loc {
                Loc::Seg { file_no, .. } => Some(*file_no),
                Loc::Big { .. } => None,
            };
            let new_state = if Some(a) != data_seg {
                self.pin(a);
                Some(a)
            } else {
                None
            };
            q.set_state_seg(id, new_state);
        }
        Ok(())
    }

    /// Write a note (hold or release) for message `id`; it supersedes the
    /// previous one, and pins its segment while the message is queued
    /// (unless it sits beside the message's data).
    pub(super) fn note(&mut self, q: &Queue, id: u64, held: bool) -> Result<(), QueueError> {
        let Some((data_seg, old)) = q.state().entries.get(&id).map(|e| {
            let data_seg = match e.loc {
                Loc::Seg { file_no, .. } => Some(file_no),
                Loc::Big { .. } => None,
            };
            (data_seg, e.hold_seg)
        }) else {
            return Ok(());
        };
        let n = if held {
            record::Note::Hold(id)
        } else {
            record::Note::Release(id)
        };
        let z = self.append(Kind::SegmentStart, &n.encode())?;
        let new = if Some(z) != data_seg {
            self.pin(z);
            Some(z)
        } else {
            None
        };
        if let Some(e) = q.state().entries.get_mut(&id) {
            e.hold_seg = new;
        }
        self.release(old);
        Ok(())
    }

    /// Write the state record of `id` now, or keep it for later when the
    /// disk will not take it: the message stays finished in memory (never
    /// sent again while running) and the record is tried again every
    /// [`STATE_RETRY`], at every sync and at shutdown.
    pub(super) fn record(&mut self, q: &Queue, id: u64) -> Result<(), QueueError> {
        let r = self.outcome(q, id);
        if let Err(e) = &r {
            tracing::error!(id = %QueueId(id), error = %e, "cannot record delivery state; kept in memory and tried again");
            self.record_later(id);
        }
        r
    }

    fn record_later(&mut self, id: u64) {
        if !self.unrecorded.contains(&id) {
            self.unrecorded.push(id);
        }
    }

    /// Try again every state record the disk did not take; say how many
    /// are still waiting.
    fn retry_unrecorded(&mut self, q: &Queue) -> usize {
        self.last_retry = self.clock.mono();
        // Sealed segments whose recycling failed: try them too.
        let idle: Vec<u32> = self
            .segs
            .iter()
            .filter(|(_, s)| s.state == SegState::Sealed && s.live == 0 && s.pins == 0)
            .map(|(n, _)| *n)
            .collect();
        for no in idle {
            self.recycle_soft(no);
        }
        if self.unrecorded.is_empty() {
            return 0;
        }
        let ids = std::mem::take(&mut self.unrecorded);
        let n = ids.len();
        for id in ids {
            if self.outcome(q, id).is_err() {
                self.unrecorded.push(id);
            }
        }
        if self.unrecorded.is_empty() {
            tracing::info!(records = n, "delivery state written after all");
        }
        self.unrecorded.len()
    }
}

/// An outcome that waits for the sync of a failure report (its own, or an
/// earlier one for the same message that it must not overtake).
#[derive(Debug)]
struct AfterSync {
    id: u64,
    newly_done: Vec<RcptIndex>,
    ack: Option<Ack>,
    /// The report came with this outcome.
    with_report: bool,
    /// Operator delete.
    delete: bool,
}

impl Queue {
    fn insert(&self, p: Pending) {
        let now = std::time::Instant::now();
        let mut st = self.state();
        st.bytes = st.bytes.saturating_add(p.record_len);
        let n = p.meta.envelope.rcpts.len();
        let queued = Duration::from_millis(p.meta.queued_ms.unwrap_or(0));
        let hold = p.meta.hold;
        st.entries.insert(
            p.id,
            Entry {
                meta: Arc::new(p.meta),
                done: vec![false; n],
                loc: p.loc,
                body_start: p.body_start,
                body_len: p.body_len,
                record_len: p.record_len,
                state_seg: None,
                hold_seg: None,
                attempts: 0,
                next_attempt: now,
                in_flight: false,
                hold,
                unreported: Vec::new(),
                last_error: None,
                queued,
                delay_warned: false,
            },
        );
        drop(st);
        self.kick();
    }

    fn remove(&self, id: u64) {
        let mut st = self.state();
        if let Some(e) = st.entries.remove(&id) {
            st.bytes = st.bytes.saturating_sub(e.record_len);
        }
    }

    pub(super) fn set_state_seg(&self, id: u64, seg: Option<u32>) {
        if let Some(e) = self.state().entries.get_mut(&id) {
            e.state_seg = seg;
        }
    }
}
