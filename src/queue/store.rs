//! Segment files, the writer thread, and recovery.
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

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::clock::{Clock, QueueClock, SAVE_EVERY, SystemClock};
use super::record::{self, HEADER_LEN, Header, Kind, MessageMeta, RecordError};
use super::spool::SpoolWriter;
use super::state::{self, SEQ_STEP, Saved, StateFile};
use super::storage::{OpenMode, RealFs, Storage, StorageFile, StorageLock};
use super::{Loc, Queue, QueueError, Recovered};
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

/// Tunables of the on-disk layout.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Size of each segment file.
    pub segment_size: u64,
    /// Records larger than this get a file of their own.
    pub big_threshold: u64,
    /// Free segments kept for reuse (the rest are deleted).
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

/// Answered once an operator's change is durable (or with why not).
pub(super) type Ack = mpsc::Sender<Result<(), QueueError>>;

/// Requests to the writer thread.
#[derive(Debug)]
pub(super) enum Request {
    Commit {
        w: SpoolWriter,
        reply: smol::channel::Sender<Result<u64, QueueError>>,
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
    Sync(mpsc::Sender<Result<(), QueueError>>),
    Shutdown,
}

/// What a record is written for (`Store::active_with_room`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// A message: only while a free segment stays in reserve.
    Message,
    /// A state record: may take the reserve.
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
        let lock_path = dir.join("lock");
        let lock_file = fsys
            .lock(&lock_path)
            .map_err(|e| io_context(e, "cannot open", &lock_path))?
            .ok_or_else(|| QueueError::Locked(dir.to_path_buf()))?;
        // Spill files of sessions cut off by a stop: never acknowledged.
        for f in fsys.list(&tmp_dir(dir))? {
            let _ = fsys.remove(&tmp_dir(dir).join(f));
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
        };
        let mut recovered = Recovered::default();
        let loaded = store.recover(&mut recovered)?;
        // Numbers reserved before a crash may have been used: skip them all.
        store.next_seq = store.next_seq.max(store.state.saved.seq_ceiling);
        for l in &loaded {
            if let Some(q) = l.meta.queued_ms {
                store.qclock.at_least(Duration::from_millis(q));
            }
        }
        store.save_clock()?;
        recovered.messages = loaded.len();
        recovered.bytes = loaded.iter().map(|l| l.record_len).sum();
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

    fn set_aside(&self, path: &Path, why: &str, recovered: &mut Recovered) {
        let name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let to = self.dir.join("corrupt").join(name);
        tracing::warn!(file = %path.display(), reason = why, moved_to = %to.display(), "queue file set aside");
        if let Err(e) = self.fs.rename(path, &to) {
            tracing::error!(file = %path.display(), error = %e, "cannot set queue file aside");
        }
        recovered.set_aside += 1;
    }

    fn recover(&mut self, recovered: &mut Recovered) -> Result<Vec<Loaded>, QueueError> {
        // 1. Segments, by sequence number.
        let mut found: Vec<(u64, u32, PathBuf)> = Vec::new();
        for ent in self.fs.list(&self.dir)? {
            let path = self.dir.join(&ent);
            let name = ent.to_string_lossy().into_owned();
            if let Some(no) = name
                .strip_prefix("seg-")
                .and_then(|s| s.strip_suffix(".log"))
                .and_then(|s| s.parse::<u32>().ok())
            {
                self.next_file_no = self.next_file_no.max(no + 1);
                let file = self
                    .fs
                    .open(&path, OpenMode::ReadWrite)
                    .map_err(|e| io_context(e, "cannot open", &path))?;
                let seq = read_segment_start(file.as_ref());
                let state = if seq.is_some() {
                    SegState::Sealed
                } else {
                    SegState::Free
                };
                if let Some(seq) = seq {
                    found.push((seq, no, path.clone()));
                    self.next_seq = self.next_seq.max(seq + 1);
                }
                // A recycled segment's start record is erased, but records
                // of its last life follow it: a new life must never take
                // that sequence number again, or they would read as new.
                if let Some(old) = stale_seq(file.as_ref()) {
                    self.next_seq = self.next_seq.max(u64::from(old) + 1);
                }
                self.segs.insert(
                    no,
                    Segment {
                        path: Arc::new(path),
                        file,
                        seq: seq.unwrap_or(0),
                        pos: 0,
                        live: 0,
                        pins: 0,
                        dependents: Vec::new(),
                        state,
                        dirty: false,
                    },
                );
            } else if !matches!(
                name.as_str(),
                "lock" | "big" | "tmp" | "corrupt" | state::FILE_NAME | crate::control::SOCKET_NAME
            ) {
                tracing::warn!(file = %path.display(), "unknown file in queue directory; left alone");
            }
        }
        found.sort();

        struct Rec {
            loaded: Loaded,
            data_seg: Option<u32>,
        }
        let mut msgs: HashMap<u64, Rec> = HashMap::new();
        // id -> segment holding its done record
        let mut done_at: HashMap<u64, u32> = HashMap::new();
        for (seq, no, path) in &found {
            let Some(seg) = self.segs.get(no) else {
                continue;
            };
            let mut scan = Scanner::new(seg.file.as_ref(), *seq)?;
            while let Some((offset, h, payload)) = scan.next_record()? {
                match h.kind {
                    Kind::SegmentStart => {}
                    Kind::Message => {
                        let Ok((meta, body_off)) = MessageMeta::decode(&payload) else {
                            tracing::warn!(segment = %path.display(), offset, "undecodable message record skipped");
                            continue;
                        };
                        self.max_id_seen = self.max_id_seen.max(meta.id);
                        let id = meta.id;
                        let body_start = offset + (HEADER_LEN + body_off) as u64;
                        let body_len = (payload.len() - body_off) as u64;
                        // A copy carried forward supersedes the older one.
                        msgs.insert(
                            id,
                            Rec {
                                loaded: Loaded {
                                    meta,
                                    loc: Loc::Seg {
                                        file_no: *no,
                                        path: seg.path.clone(),
                                    },
                                    body_start,
                                    body_len,
                                    record_len: (HEADER_LEN + payload.len()) as u64,
                                    state_seg: None,
                                },
                                data_seg: Some(*no),
                            },
                        );
                        done_at.remove(&id);
                    }
                    Kind::RcptsDone => {
                        let Ok((id, done)) = record::decode_rcpts_done(&payload) else {
                            continue;
                        };
                        self.max_id_seen = self.max_id_seen.max(id);
                        if let Some(r) = msgs.get_mut(&id) {
                            r.loaded.meta.done = in_range(done, &r.loaded.meta);
                            r.loaded.state_seg = Some(*no);
                        }
                    }
                    Kind::Done => {
                        let Ok(id) = record::decode_u64(&payload) else {
                            continue;
                        };
                        self.max_id_seen = self.max_id_seen.max(id);
                        done_at.insert(id, *no);
                    }
                }
            }
        }

        // 2. Big messages.
        let big_dir = self.dir.join("big");
        for ent in self.fs.list(&big_dir)? {
            let path = big_dir.join(&ent);
            let Some(id) = ent.to_str().and_then(|s| u64::from_str_radix(s, 16).ok()) else {
                self.set_aside(&path, "not a queue file name", recovered);
                continue;
            };
            match read_big(self.fs.as_ref(), &path) {
                Ok((meta, body_off, total)) if meta.id == id => {
                    self.max_id_seen = self.max_id_seen.max(id);
                    msgs.insert(
                        id,
                        Rec {
                            loaded: Loaded {
                                meta,
                                loc: Loc::Big { path: path.clone() },
                                body_start: (HEADER_LEN + body_off) as u64,
                                body_len: total - (HEADER_LEN + body_off) as u64,
                                record_len: total,
                                state_seg: None,
                            },
                            data_seg: None,
                        },
                    );
                }
                Ok(_) => self.set_aside(&path, "id does not match file name", recovered),
                Err(e) => self.set_aside(&path, &e.to_string(), recovered),
            }
        }
        // Re-apply state records to big messages (their data was read after
        // the segments, so the loop above could not attach them).
        for (seq, no, _) in &found {
            let Some(seg) = self.segs.get(no) else {
                continue;
            };
            let mut scan = Scanner::new(seg.file.as_ref(), *seq)?;
            while let Some((_, h, payload)) = scan.next_record()? {
                if h.kind != Kind::RcptsDone {
                    continue;
                }
                let Ok((id, done)) = record::decode_rcpts_done(&payload) else {
                    continue;
                };
                if let Some(r) = msgs.get_mut(&id).filter(|r| r.data_seg.is_none()) {
                    r.loaded.meta.done = in_range(done, &r.loaded.meta);
                    r.loaded.state_seg = Some(*no);
                }
            }
        }

        // 3. Finished messages leave; their done records pin as at run time.
        let mut out = Vec::new();
        for (id, r) in msgs {
            let finished = done_at.get(&id).copied();
            let all_rcpts_done = r.loaded.meta.done.len() >= r.loaded.meta.envelope.rcpts.len();
            if finished.is_some() || all_rcpts_done {
                match (&r.loaded.loc, finished) {
                    (Loc::Big { path }, _) => {
                        let _ = self.fs.remove(path);
                        self.dirty_dirs.push(big_dir.clone());
                    }
                    (Loc::Seg { file_no, .. }, Some(z)) if z != *file_no => {
                        self.pin(z);
                        if let Some(x) = self.segs.get_mut(file_no) {
                            x.dependents.push(z);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if let Some(x) = r.data_seg.and_then(|no| self.segs.get_mut(&no)) {
                x.live += 1;
            }
            if let Some(s) = r.loaded.state_seg {
                if Some(s) != r.data_seg {
                    self.pin(s);
                } else {
                    // A state record beside its own data pins nothing.
                }
            }
            let mut loaded = r.loaded;
            if loaded.state_seg.is_some() && loaded.state_seg == r.data_seg {
                loaded.state_seg = None;
            }
            out.push(loaded);
        }
        // 4. Whatever no longer matters is recycled.
        let nos: Vec<u32> = self.segs.keys().copied().collect();
        for no in nos {
            self.maybe_recycle(no)?;
        }
        Ok(out)
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
        // Never below one: the last free segment is the reserve for state
        // records (`active_with_room`), and making it again costs a
        // segment's worth of writes.
        while free.len() > self.opts.keep_free.max(1) {
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
        let no = self.next_file_no;
        let path = self.dir.join(seg_name(no));
        let file = match self.fs.open(&path, OpenMode::CreateNew) {
            Ok(f) => f,
            Err(e) => {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    // Not ours (or a leftover we could not remove): leave
                    // it for recovery to set aside, use the next name.
                    self.next_file_no += 1;
                }
                return Err(io_context(e, "cannot create", &path));
            }
        };
        self.next_file_no += 1;
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
                self.next_file_no -= 1;
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
    fn write_message(&mut self, w: &mut SpoolWriter) -> Result<(Loc, u64), QueueError> {
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
        let no = self.active_with_room(record_len, Use::Message)?;
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
        Ok(())
    }

    /// Save queue time and the wall clock now (`clock.rs`).
    fn save_clock(&mut self) -> io::Result<()> {
        let saved = Saved {
            queue_ms: self.qclock.at(self.clock.mono()).as_millis() as u64,
            wall: self.clock.wall(),
            ..self.state.saved
        };
        self.state.save(saved)
    }

    fn is_dirty(&self) -> bool {
        !self.dirty_dirs.is_empty() || self.segs.values().any(|s| s.dirty)
    }

    /// The writer thread: take every request that is waiting, write them,
    /// sync once, then answer.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Request>, q: Queue) {
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
            if !self.unrecorded.is_empty()
                && now.saturating_duration_since(self.last_retry) >= STATE_RETRY
            {
                self.retry_unrecorded(&q);
            }
            let mut wait = if self.is_dirty() {
                LAZY_SYNC
            } else {
                SAVE_EVERY
            };
            if !self.unrecorded.is_empty() {
                wait = wait.min(STATE_RETRY);
            }
            let first = match rx.recv_timeout(wait) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) if self.is_dirty() => None,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
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
                            tracing::warn!(id = %super::QueueId(w.meta.id), "message abandoned by its session before it was written; not queued");
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
                                    tracing::error!(id = %super::QueueId(id), error = %e, "cannot queue failure report; will retry");
                                    // Keep the recipients pending: the failure is found again.
                                    q.undo_done(id, &newly_done);
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
                    .map(|id| super::QueueId(*id).to_string())
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
        let (loc, body_start) = self.write_message(w)?;
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
        let (loc, old_state, done_list, all_done) = {
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
            (e.loc.clone(), e.state_seg, list, all)
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
            q.remove(id);
        } else if all_done {
            let z = self.append(Kind::Done, &record::encode_u64(id))?;
            self.release(old_state);
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
            let a = self.append(Kind::RcptsDone, &record::encode_rcpts_done(id, &done_list))?;
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

    /// Write the state record of `id` now, or keep it for later when the
    /// disk will not take it: the message stays finished in memory (never
    /// sent again while running) and the record is tried again every
    /// [`STATE_RETRY`], at every sync and at shutdown.
    fn record(&mut self, q: &Queue, id: u64) -> Result<(), QueueError> {
        let r = self.outcome(q, id);
        if let Err(e) = &r {
            tracing::error!(id = %super::QueueId(id), error = %e, "cannot record delivery state; kept in memory and tried again");
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

    /// A state record no longer pins its segment.
    fn release(&mut self, seg: Option<u32>) {
        if let Some(s) = seg {
            self.unpin(s);
            self.recycle_soft(s);
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

/// The indices of a recipients-done record that name a recipient of
/// `meta` (a record never names others; a damaged one is not trusted to).
fn in_range(done: Vec<RcptIndex>, meta: &MessageMeta) -> Vec<RcptIndex> {
    let n = meta.envelope.rcpts.len();
    done.into_iter()
        .filter(|d| usize::try_from(*d).is_ok_and(|d| d < n))
        .collect()
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

/// The sequence number in a segment's start record, if it has a valid one.
fn read_segment_start(file: &dyn StorageFile) -> Option<u64> {
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, 0).ok()?;
    let h = Header::decode(&head).ok()?;
    if h.kind != Kind::SegmentStart || h.len != 8 {
        return None;
    }
    let mut p = [0u8; 8];
    file.read_exact_at(&mut p, HEADER_LEN as u64).ok()?;
    h.verify(&p).ok()?;
    let seq = record::decode_u64(&p).ok()?;
    (seq as u32 == h.seq).then_some(seq)
}

/// The sequence stamp of the record after the start record, if one is
/// there: the last life's, since each life writes from the start.
fn stale_seq(file: &dyn StorageFile) -> Option<u32> {
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, (HEADER_LEN + 8) as u64)
        .ok()?;
    Header::decode(&head).ok().map(|h| h.seq)
}

/// Reads a segment's records in order until the first one that is not
/// whole, not of this segment's life, or not there.
struct Scanner<'a> {
    file: &'a dyn StorageFile,
    seq: u32,
    pos: u64,
    len: u64,
}

impl<'a> Scanner<'a> {
    fn new(file: &'a dyn StorageFile, seq: u64) -> io::Result<Scanner<'a>> {
        Ok(Scanner {
            file,
            seq: seq as u32,
            pos: 0,
            len: file.size()?,
        })
    }

    fn next_record(&mut self) -> io::Result<Option<(u64, Header, Vec<u8>)>> {
        if self.pos + HEADER_LEN as u64 > self.len {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut head, self.pos)?;
        let h = match Header::decode(&head) {
            Ok(h) if h.seq == self.seq => h,
            _ => return Ok(None),
        };
        let end = self.pos + HEADER_LEN as u64 + u64::from(h.len);
        if end > self.len {
            return Ok(None);
        }
        let mut payload = vec![0u8; h.len as usize];
        self.file
            .read_exact_at(&mut payload, self.pos + HEADER_LEN as u64)?;
        if h.verify(&payload).is_err() {
            // A torn tail: what follows was never acknowledged.
            return Ok(None);
        }
        let at = self.pos;
        self.pos = end;
        Ok(Some((at, h, payload)))
    }
}

/// How much of a big message file of the first record layout is searched
/// for its envelope.
const FIRST_LAYOUT_META_MAX: usize = 1 << 20;

/// Check a big message file whole; returns its meta, the body's offset in
/// the payload, and the file's length.
fn read_big(fsys: &dyn Storage, path: &Path) -> Result<(MessageMeta, usize, u64), RecordError> {
    let f = fsys
        .open(path, OpenMode::Read)
        .map_err(|_| RecordError::NoRecord)?;
    let mut head = [0u8; HEADER_LEN];
    f.read_exact_at(&mut head, 0)
        .map_err(|_| RecordError::NoRecord)?;
    let mut at = HEADER_LEN as u64;
    let h = Header::decode(&head)?;
    if h.kind != Kind::Message {
        return Err(RecordError::Malformed);
    }
    let mut crc = h.verifier();
    let mut first: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut left = u64::from(h.len);
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], at)
            .map_err(|_| RecordError::Checksum)?;
        at += n as u64;
        crc.update(&buf[..n]);
        // Keep the whole envelope (its length is in the record; a message
        // at the recipient bound has megabytes of it), or for records of the
        // first layout, which do not say, the first MiB as always.
        let keep = MessageMeta::encoded_len(&first).unwrap_or(FIRST_LAYOUT_META_MAX);
        if first.len() < keep {
            first.extend_from_slice(&buf[..n]);
        }
        left -= n as u64;
    }
    if crc.finalize() != h.crc {
        return Err(RecordError::Checksum);
    }
    let (meta, body_off) = MessageMeta::decode(&first)?;
    Ok((meta, body_off, HEADER_LEN as u64 + u64::from(h.len)))
}

impl Queue {
    fn insert(&self, p: Pending) {
        let now = std::time::Instant::now();
        let mut st = self.state();
        st.bytes += p.record_len;
        let n = p.meta.envelope.rcpts.len();
        let queued = Duration::from_millis(p.meta.queued_ms.unwrap_or(0));
        st.entries.insert(
            p.id,
            super::Entry {
                meta: Arc::new(p.meta),
                done: vec![false; n],
                loc: p.loc,
                body_start: p.body_start,
                body_len: p.body_len,
                record_len: p.record_len,
                state_seg: None,
                attempts: 0,
                next_attempt: now,
                in_flight: false,
                held: false,
                unreported: Vec::new(),
                last_error: None,
                queued,
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

    fn set_state_seg(&self, id: u64, seg: Option<u32>) {
        if let Some(e) = self.state().entries.get_mut(&id) {
            e.state_seg = seg;
        }
    }
}
