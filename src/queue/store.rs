//! Segment files: the writer's view of the spool directory, how records
//! are placed in segments, and when a segment is recycled. The writer
//! thread's loop is in `writer.rs`, recovery at start in `recover.rs`.
//! Uses only the queue's own modules (record format, storage, state file,
//! clock, spool writer).
//!
//! Layout of the spool directory:
//! - `seg-NNNNNN.log`: preallocated segment files (written full of zeroes
//!   once, so appending never changes file metadata and `fdatasync` costs
//!   only the data blocks). Each starts with a segment-start record holding
//!   its sequence number; records follow back to back.
//! - `big/ID`: a message too big for a segment, one record per file.
//! - `tmp/`: spill files of messages being received; emptied at start.
//! - `corrupt/`: files set aside by recovery.
//! - `lock`: held (flock) by the one process that may write here.
//!
//! A segment is recycled once nothing in it matters any more: no message
//! whose data is in it is still queued, and no state record in it is still
//! needed (a "done" record matters as long as the data it finishes still
//! exists; a "recipients done" record until a newer one supersedes it).
//! State records only ever refer to data in the same or older segments, so
//! these dependencies cannot form a cycle.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::clock::{Clock, QueueClock, SystemClock};
use super::record::{self, HEADER_LEN, Header, Kind, MessageMeta};
use super::spool::SpoolWriter;
use super::state::{self, SEQ_STEP, Saved, StateFile};
use super::storage::{EntryKind, OpenMode, RealFs, Storage, StorageFile, StorageLock};
use super::{Loc, QueueError, Recovered};

pub(super) mod access;
mod recover;
mod rescue;
mod writer;

pub(super) use writer::Request;

/// Tunables of the on-disk layout.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Size of each segment file.
    pub segment_size: u64,
    /// Records larger than this get a file of their own.
    pub big_threshold: u64,
    /// Free segments kept for reuse besides the one always kept in reserve
    /// for state records (the rest are deleted).
    pub keep_free: usize,
    /// Most segment files at once; past it, new mail is refused (452).
    pub max_segments: usize,
    /// What the queue writes through (the real filesystem but in tests).
    pub storage: Arc<dyn Storage>,
    /// The clocks it reads (the system's but in tests).
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_size: 4 << 20,
            big_threshold: 512 << 10,
            keep_free: 2,
            max_segments: 64,
            storage: Arc::new(RealFs),
            clock: Arc::new(SystemClock),
        }
    }
}

/// What a record is written for (`Store::active_with_room`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// A message: only while a free segment stays in reserve.
    Message,
    /// A state record, a failure report, or a message rewritten from a
    /// segment removed from outside: may take the reserve.
    State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegState {
    Active,
    Sealed,
    Free,
}

#[derive(Debug)]
struct Segment {
    path: Arc<PathBuf>,
    file: Box<dyn StorageFile>,
    seq: u64,
    /// Append position (the active segment's).
    pos: u64,
    /// Queued messages whose data is here.
    live: u32,
    /// State records here that still matter.
    pins: u32,
    /// Segments holding "done" records for messages whose data is here;
    /// each holds a pin that is released when this segment is recycled.
    dependents: Vec<u32>,
    state: SegState,
    /// Written since the last sync.
    dirty: bool,
}

/// A message found by recovery.
#[derive(Debug)]
pub(super) struct Loaded {
    pub meta: MessageMeta,
    pub loc: Loc,
    pub body_start: u64,
    pub body_len: u64,
    pub record_len: u64,
    pub state_seg: Option<u32>,
    /// Held, and by whom: the message record's hold, unless a later note
    /// changed it.
    pub hold: super::Hold,
    /// Segment holding the latest note, when it pins one.
    pub hold_seg: Option<u32>,
}

/// The writer's view of the spool; owned by the writer thread after `open`.
#[derive(Debug)]
pub(super) struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    segs: HashMap<u32, Segment>,
    active: Option<u32>,
    next_seq: u64,
    next_file_no: u32,
    max_id_seen: u64,
    /// Directories whose entries changed since the last sync.
    dirty_dirs: Vec<PathBuf>,
    fs: Arc<dyn Storage>,
    /// Sequence ceiling and queue clock (`state.rs`).
    pub(super) state: StateFile,
    /// Queue time (fixed at open; see `clock.rs`).
    pub(super) qclock: QueueClock,
    clock: Arc<dyn Clock>,
    _lock: Box<dyn StorageLock>,
    /// Messages finished in memory whose state record the disk did not
    /// take (full, read-only): written as soon as it does.
    unrecorded: Vec<u64>,
    /// When `unrecorded` was last tried.
    last_retry: std::time::Instant,
    /// Segments removed from outside whose contents are not all written
    /// again yet (`rescue.rs`).
    orphans: Vec<rescue::Orphan>,
    /// Pins to release at the next sync (`Store::release`).
    released: Vec<u32>,
    /// Who postern runs as, who owns the directory (`access.rs`).
    owners: access::Owners,
    /// Own files made private again at start.
    tightened: usize,
}

pub(super) fn tmp_dir(dir: &Path) -> PathBuf {
    dir.join("tmp")
}

fn seg_name(file_no: u32) -> String {
    format!("seg-{file_no:06}.log")
}

fn io_context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl Store {
    /// Lock the directory, recover its contents.
    pub(super) fn open(
        dir: &Path,
        opts: StoreOptions,
    ) -> Result<(Store, Vec<Loaded>, Recovered), QueueError> {
        let fsys = opts.storage.clone();
        let clock = opts.clock.clone();
        for d in [
            dir.to_path_buf(),
            dir.join("big"),
            tmp_dir(dir),
            dir.join("corrupt"),
        ] {
            fsys.create_dir_all(&d)
                .map_err(|e| io_context(e, "cannot create", &d))?;
        }
        let owners = access::check_dir(fsys.as_ref(), dir)?;
        let mut tightened = 0usize;
        for d in [
            dir.to_path_buf(),
            dir.join("big"),
            tmp_dir(dir),
            dir.join("corrupt"),
        ] {
            if let Ok(i) = fsys.entry(&d)
                && access::tighten(fsys.as_ref(), &d, &i, &owners)
            {
                tightened += 1;
            }
        }
        let lock_path = dir.join("lock");
        match fsys.entry(&lock_path) {
            Ok(i) if i.kind != EntryKind::File => {
                // Never one of postern's: it makes a plain file.
                recover::move_aside(fsys.as_ref(), dir, &lock_path, "not a regular file");
            }
            Ok(i) => {
                if let Some(uid) = owners.foreign(&i) {
                    return Err(QueueError::Unsafe {
                        why: format!(
                            "the lock file {} belongs to user id {uid}, who could hold it to keep postern from starting; if no postern is running, remove it",
                            lock_path.display()
                        ),
                        path: lock_path,
                    });
                }
                if access::tighten(fsys.as_ref(), &lock_path, &i, &owners) {
                    tightened += 1;
                }
            }
            Err(_) => {}
        }
        let lock_file = fsys
            .lock(&lock_path)
            .map_err(|e| io_context(e, "cannot open", &lock_path))?
            .ok_or_else(|| QueueError::Locked(dir.to_path_buf()))?;
        let state_path = dir.join(state::FILE_NAME);
        let mut state_aside = false;
        if let Ok(i) = fsys.entry(&state_path) {
            let why = if i.kind != EntryKind::File {
                Some("not a regular file".to_string())
            } else {
                owners
                    .foreign(&i)
                    .map(|uid| format!("owned by user id {uid}, not by postern's user"))
            };
            if let Some(why) = why {
                state_aside = true;
                recover::move_aside(fsys.as_ref(), dir, &state_path, &why);
            } else if access::tighten(fsys.as_ref(), &state_path, &i, &owners) {
                tightened += 1;
            }
        }
        let (state_file, _) = StateFile::open(fsys.as_ref(), dir)
            .map_err(|e| io_context(e, "cannot open", &dir.join(state::FILE_NAME)))?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            opts,
            segs: HashMap::new(),
            active: None,
            next_seq: 1,
            next_file_no: 1,
            max_id_seen: 0,
            dirty_dirs: Vec::new(),
            fs: fsys.clone(),
            qclock: QueueClock::resume(
                state_file.saved.queue_ms,
                state_file.saved.wall,
                clock.wall(),
                clock.mono(),
            ),
            clock: clock.clone(),
            state: state_file,
            _lock: lock_file,
            unrecorded: Vec::new(),
            last_retry: clock.mono(),
            orphans: Vec::new(),
            released: Vec::new(),
            owners,
            tightened,
        };
        let mut recovered = Recovered {
            set_aside: usize::from(state_aside),
            ..Recovered::default()
        };
        let loaded = store.recover(&mut recovered)?;
        if store.tightened > 0 {
            tracing::info!(files = store.tightened, dir = %dir.display(), "queue files that other users could read made private (0600, directories 0700)");
        }
        // Numbers reserved before a crash may have been used: skip them all.
        store.next_seq = store.next_seq.max(store.state.saved.seq_ceiling);
        for l in &loaded {
            if let Some(q) = l.meta.queued_ms {
                store.qclock.at_least(Duration::from_millis(q));
            }
        }
        store.save_clock()?;
        recovered.messages = loaded.len();
        recovered.bytes = loaded
            .iter()
            .fold(0u64, |n, l| n.saturating_add(l.record_len));
        recovered.segments = store
            .segs
            .values()
            .filter(|s| s.state != SegState::Free)
            .count();
        Ok((store, loaded, recovered))
    }

    pub(super) fn max_id_seen(&self) -> u64 {
        self.max_id_seen
    }

    fn pin(&mut self, no: u32) {
        if let Some(s) = self.segs.get_mut(&no) {
            s.pins += 1;
        }
    }

    fn unpin(&mut self, no: u32) {
        if let Some(s) = self.segs.get_mut(&no) {
            s.pins = s.pins.saturating_sub(1);
        }
    }

    /// Recycle a sealed segment nothing depends on: erase its start record
    /// (synced, so its old records can never come back), release the pins
    /// it held on others, and keep or delete the file.
    fn maybe_recycle(&mut self, no: u32) -> io::Result<()> {
        let mut work = vec![no];
        while let Some(no) = work.pop() {
            let Some(s) = self.segs.get_mut(&no) else {
                continue;
            };
            if s.state != SegState::Sealed || s.live > 0 || s.pins > 0 {
                continue;
            }
            s.file.write_all_at(&[0u8; HEADER_LEN], 0)?;
            s.file.sync_data()?;
            s.state = SegState::Free;
            s.seq = 0;
            s.dirty = false;
            let deps = std::mem::take(&mut s.dependents);
            for d in deps {
                self.unpin(d);
                work.push(d);
            }
        }
        self.trim_free()
    }

    fn trim_free(&mut self) -> io::Result<()> {
        let mut free: Vec<u32> = self
            .segs
            .iter()
            .filter(|(_, s)| s.state == SegState::Free)
            .map(|(n, _)| *n)
            .collect();
        free.sort();
        // `keep_free` spare segments, plus the one kept in reserve for
        // state records (`active_with_room`): counting the reserve among
        // the spares made a load that needed them all make a segment at
        // each switch (a segment's worth of zeroes written) and the next
        // recycling delete it. During a switch (no active segment) one of
        // the free ones is about to become active: it is kept on top.
        let keep = self.opts.keep_free + 1 + usize::from(self.active.is_none());
        while free.len() > keep {
            if let Some(no) = free.pop()
                && let Some(s) = self.segs.remove(&no)
            {
                self.fs.remove(s.path.as_ref())?;
                self.dirty_dirs.push(self.dir.clone());
            }
        }
        Ok(())
    }

    /// The active segment, with room for `len` more bytes; switching to a
    /// free or new segment when needed.
    ///
    /// A message is written only while a free segment stays in reserve
    /// behind it (made now if need be): on a full disk the message is
    /// refused, and the state records that finish messages ("done",
    /// "recipients done", holds) still have somewhere to go. Without the
    /// reserve a delivered message whose "done" record found no room stayed
    /// queued, pinned its segment, and was sent again after every restart.
    fn active_with_room(&mut self, len: u64, use_: Use) -> Result<u32, QueueError> {
        let active = self
            .active
            .and_then(|no| self.segs.get(&no).map(|s| (no, s)));
        let fits = active.is_some_and(|(_, s)| s.pos + len <= self.opts.segment_size);
        if use_ == Use::Message {
            // Switching seals the active segment; if nothing in it matters
            // any more it is recycled at once and counts as free.
            let recyclable = !fits && active.is_some_and(|(_, s)| s.live == 0 && s.pins == 0);
            let need = if fits { 1 } else { 2 };
            let mut have = self.free_count() + usize::from(recyclable);
            while have < need {
                if self.segs.len() >= self.opts.max_segments {
                    return Err(QueueError::Full);
                }
                self.create_segment()?;
                have += 1;
            }
        }
        if fits && let Some(no) = self.active {
            return Ok(no);
        }
        if let Some(no) = self.active.take() {
            if let Some(s) = self.segs.get_mut(&no) {
                s.state = SegState::Sealed;
            }
            self.maybe_recycle(no)?;
        }
        let free = self
            .segs
            .iter()
            .filter(|(_, s)| s.state == SegState::Free)
            .map(|(n, _)| *n)
            .min();
        let no = match free {
            Some(no) => no,
            None => {
                if self.segs.len() >= self.opts.max_segments {
                    return Err(QueueError::Full);
                }
                self.create_segment()?
            }
        };
        let seq = self.next_seq;
        if seq >= self.state.saved.seq_ceiling {
            // Reserve the next numbers durably before using one of them.
            let saved = Saved {
                seq_ceiling: seq + SEQ_STEP,
                ..self.state.saved
            };
            self.state.save(saved)?;
        }
        self.next_seq = seq + 1;
        let payload = record::encode_u64(seq);
        let head = Header::encode(Kind::SegmentStart, seq as u32, &payload);
        let s = self.segs.get_mut(&no).ok_or(QueueError::Closed)?;
        s.file.write_all_at(&head, 0)?;
        s.file.write_all_at(&payload, HEADER_LEN as u64)?;
        s.seq = seq;
        s.pos = (HEADER_LEN + payload.len()) as u64;
        s.state = SegState::Active;
        s.dirty = true;
        s.live = 0;
        s.pins = 0;
        self.active = Some(no);
        Ok(no)
    }

    fn free_count(&self) -> usize {
        self.segs
            .values()
            .filter(|s| s.state == SegState::Free)
            .count()
    }

    /// A new segment file, written full of zeroes once so that later appends
    /// are overwrites of allocated blocks: fdatasync then has no metadata to
    /// journal, which is most of what a small sync costs on ext4.
    fn create_segment(&mut self) -> io::Result<u32> {
        // The next number no segment has; after the highest a name holds
        // (a file named so from outside), from 1 again.
        let mut no = self.next_file_no;
        while no == 0 || self.segs.contains_key(&no) {
            no = no.checked_add(1).unwrap_or(1);
        }
        let path = self.dir.join(seg_name(no));
        let after = no.checked_add(1).unwrap_or(1);
        let file = match self.fs.open(&path, OpenMode::CreateNew) {
            Ok(f) => f,
            Err(e) => {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    // Not ours (or a leftover we could not remove): leave
                    // it for recovery to set aside, use the next name.
                    self.next_file_no = after;
                }
                return Err(io_context(e, "cannot create", &path));
            }
        };
        self.next_file_no = after;
        let zeroes = vec![0u8; 64 << 10];
        let mut at = 0;
        let mut res = Ok(());
        while at < self.opts.segment_size && res.is_ok() {
            let n = (self.opts.segment_size - at).min(zeroes.len() as u64) as usize;
            res = file.write_all_at(&zeroes[..n], at);
            at += n as u64;
        }
        if let Err(e) = res.and_then(|_| file.sync_all()) {
            // Disk full: leave no half-made segment behind to fill it more.
            if self.fs.remove(&path).is_ok() {
                self.next_file_no = no;
            }
            return Err(io_context(e, "cannot preallocate", &path));
        }
        self.dirty_dirs.push(self.dir.clone());
        self.segs.insert(
            no,
            Segment {
                path: Arc::new(path),
                file,
                seq: 0,
                pos: 0,
                live: 0,
                pins: 0,
                dependents: Vec::new(),
                state: SegState::Free,
                dirty: false,
            },
        );
        Ok(no)
    }

    /// Append one small record to the active segment.
    fn append(&mut self, kind: Kind, payload: &[u8]) -> Result<u32, QueueError> {
        let len = (HEADER_LEN + payload.len()) as u64;
        let no = self.active_with_room(len, Use::State)?;
        let s = self.segs.get_mut(&no).ok_or(QueueError::Closed)?;
        let mut buf = Vec::with_capacity(len as usize);
        buf.extend_from_slice(&Header::encode(kind, s.seq as u32, payload));
        buf.extend_from_slice(payload);
        if let Err(e) = s.file.write_all_at(&buf, s.pos) {
            self.abandon_active();
            return Err(e.into());
        }
        s.pos += len;
        s.dirty = true;
        Ok(no)
    }

    /// After a failed write the active segment's tail is unknown: never
    /// append after it again.
    fn abandon_active(&mut self) {
        if let Some(no) = self.active.take()
            && let Some(s) = self.segs.get_mut(&no)
        {
            s.state = SegState::Sealed;
        }
    }

    /// Write a message; returns its location and body offset. Not yet synced.
    fn write_message(&mut self, w: &mut SpoolWriter, use_: Use) -> Result<(Loc, u64), QueueError> {
        let record_len = w.record_len();
        let payload_len = u32::try_from(record_len - HEADER_LEN as u64).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "message too large for the queue",
            )
        })?;
        let env_len = (record_len - HEADER_LEN as u64) - w.body_len;
        let big = record_len > self.opts.big_threshold;
        w.finish_spill(big)?;
        if big {
            return self.write_big(w, payload_len, env_len);
        }
        let no = self.active_with_room(record_len, use_)?;
        let s = self.segs.get_mut(&no).ok_or(QueueError::Closed)?;
        let head =
            Header::encode_with_payload_crc(Kind::Message, s.seq as u32, payload_len, &w.crc);
        let offset = s.pos;
        let res = match w.spill.as_ref() {
            None => {
                w.buf[..HEADER_LEN].copy_from_slice(&head);
                s.file.write_all_at(&w.buf, offset)
            }
            Some(sp) => copy_spill(sp.file.as_ref(), &head, record_len, s.file.as_ref(), offset),
        };
        if let Err(e) = res {
            self.abandon_active();
            return Err(e.into());
        }
        s.pos += record_len;
        s.dirty = true;
        let loc = Loc::Seg {
            file_no: no,
            path: s.path.clone(),
        };
        Ok((loc, offset + HEADER_LEN as u64 + env_len))
    }

    fn write_big(
        &mut self,
        w: &mut SpoolWriter,
        payload_len: u32,
        env_len: u64,
    ) -> Result<(Loc, u64), QueueError> {
        let sp = w.spill.take().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "big message without a spill file",
            )
        })?;
        // seq 0: a big file is not part of any segment's life.
        let head = Header::encode_with_payload_crc(Kind::Message, 0, payload_len, &w.crc);
        let to = self.dir.join("big").join(format!("{:X}", w.meta.id));
        let res = sp
            .file
            .write_all_at(&head, 0)
            .and_then(|_| sp.file.sync_data())
            .and_then(|_| self.fs.rename(&sp.path, &to));
        if let Err(e) = res {
            let _ = self.fs.remove(&sp.path);
            return Err(e.into());
        }
        self.dirty_dirs.push(self.dir.join("big"));
        Ok((Loc::Big { path: to }, HEADER_LEN as u64 + env_len))
    }

    /// Make everything written so far durable.
    fn sync(&mut self) -> io::Result<()> {
        for s in self.segs.values_mut().filter(|s| s.dirty) {
            s.file.sync_data()?;
            s.dirty = false;
        }
        self.dirty_dirs.sort();
        self.dirty_dirs.dedup();
        while let Some(d) = self.dirty_dirs.last() {
            // Popped only once synced: a failure leaves it for the next try.
            self.fs.sync_dir(d)?;
            self.dirty_dirs.pop();
        }
        // The records that superseded these pins are durable now.
        for no in std::mem::take(&mut self.released) {
            self.unpin(no);
            self.recycle_soft(no);
        }
        Ok(())
    }

    /// Save queue time and the wall clock now (`clock.rs`).
    fn save_clock(&mut self) -> io::Result<()> {
        let saved = Saved {
            queue_ms: u64::try_from(self.qclock.at(self.clock.mono()).as_millis())
                .unwrap_or(u64::MAX),
            wall: self.clock.wall(),
            ..self.state.saved
        };
        self.state.save(saved)
    }

    fn is_dirty(&self) -> bool {
        !self.dirty_dirs.is_empty()
            || !self.released.is_empty()
            || self.segs.values().any(|s| s.dirty)
    }

    /// A record no longer pins its segment, because a newer one (just
    /// written) supersedes it: released at the next sync, not now. Were
    /// the segment recycled at once (an erase synced on the spot) while
    /// the newer record still waited for its sync, a power cut in between
    /// would leave neither: a hold forgotten, finished recipients sent
    /// again.
    fn release(&mut self, seg: Option<u32>) {
        if let Some(s) = seg {
            self.released.push(s);
        }
    }

    /// Recycle if possible; a failure only delays it (`retry_unrecorded`
    /// tries idle segments again), so it must not undo the record that
    /// made the segment idle.
    fn recycle_soft(&mut self, no: u32) {
        if let Err(e) = self.maybe_recycle(no) {
            tracing::warn!(segment = no, error = %e, "cannot recycle queue segment yet; will try again");
        }
    }
}

/// A committed message waiting for its sync before it joins the schedule.
#[derive(Debug)]
pub(super) struct Pending {
    pub id: u64,
    pub meta: MessageMeta,
    pub loc: Loc,
    pub body_start: u64,
    pub body_len: u64,
    pub record_len: u64,
}

fn copy_spill(
    spill: &dyn StorageFile,
    head: &[u8],
    record_len: u64,
    to: &dyn StorageFile,
    offset: u64,
) -> io::Result<()> {
    to.write_all_at(head, offset)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut at = HEADER_LEN as u64;
    while at < record_len {
        let n = (record_len - at).min(buf.len() as u64) as usize;
        spill.read_exact_at(&mut buf[..n], at)?;
        to.write_all_at(&buf[..n], offset + at)?;
        at += n as u64;
    }
    Ok(())
}
