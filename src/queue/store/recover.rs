//! Recovery at start: read every segment and message file, apply the
//! state records, set aside what is not postern's own, and rebuild the
//! pins that decide when a segment may be recycled.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::record::{self, HEADER_LEN, Header, Kind, MessageMeta, RecordError};
use super::super::state;
use super::super::storage::{EntryKind, OpenMode, Storage, StorageFile};
use super::super::{Loc, MAX_ID, QueueError, Recovered};
use super::{Loaded, SegState, Segment, Store, access, tmp_dir};
use crate::smtp::RcptIndex;

impl Store {
    /// Move a file that is not (or no longer) postern's own into
    /// `corrupt/`: recovery never deletes what it cannot read, and never
    /// starts on it either.
    pub(super) fn set_aside(&mut self, path: &Path, why: &str, recovered: &mut Recovered) {
        if move_aside(self.fs.as_ref(), &self.dir, path, why) {
            self.dirty_dirs.push(self.dir.join("corrupt"));
            if let Some(parent) = path.parent() {
                self.dirty_dirs.push(parent.to_path_buf());
            }
        }
        recovered.set_aside += 1;
    }

    /// Open `seg-NNNNNN.log` at `path` if it is postern's own segment:
    /// a regular file with a valid start record, or a free one (the size
    /// of a segment, its start record zeroes or a torn remnant of one).
    /// Anything else is set aside, with the reason.
    fn open_segment(
        &mut self,
        path: &Path,
        recovered: &mut Recovered,
    ) -> Option<(Box<dyn StorageFile>, Option<u64>)> {
        let info = match self.fs.entry(path) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "queue segment vanished while reading the directory");
                return None;
            }
        };
        let why = match info.kind {
            EntryKind::File => None,
            EntryKind::Dir => Some("a directory named like a segment"),
            EntryKind::Symlink => Some("a symbolic link named like a segment"),
            EntryKind::Other => Some("not a regular file"),
        };
        if let Some(why) = why {
            self.set_aside(path, why, recovered);
            return None;
        }
        if let Some(uid) = self.owners.foreign(&info) {
            let why = format!("owned by user id {uid}, not by postern's user: not delivered");
            self.set_aside(path, &why, recovered);
            return None;
        }
        if access::tighten(self.fs.as_ref(), path, &info, &self.owners) {
            self.tightened += 1;
        }
        let file = match self.fs.open(path, OpenMode::ReadWrite) {
            Ok(f) => f,
            Err(e) => {
                self.set_aside(path, &format!("cannot open it: {e}"), recovered);
                return None;
            }
        };
        if let Some(seq) = read_segment_start(file.as_ref()) {
            if seq > state::MAX_SEQ {
                let why = format!(
                    "its sequence number {seq} is beyond any postern writes: not postern's, or damaged"
                );
                self.set_aside(path, &why, recovered);
                return None;
            }
            return Some((file, Some(seq)));
        }
        let len = file.size().unwrap_or(0);
        if len != self.opts.segment_size {
            let why = if len < self.opts.segment_size {
                format!(
                    "no start record and shorter than a segment ({len} octets): its creation was cut off, or it is not postern's"
                )
            } else {
                format!("no start record and longer than a segment ({len} octets): not postern's")
            };
            self.set_aside(path, &why, recovered);
            return None;
        }
        let mut head = [0u8; 4];
        let blank = file.read_exact_at(&mut head, 0).is_ok() && looks_free(&head);
        if !blank {
            self.set_aside(
                path,
                "no start record and not blank: not a postern segment",
                recovered,
            );
            return None;
        }
        Some((file, None))
    }

    pub(super) fn recover(&mut self, recovered: &mut Recovered) -> Result<Vec<Loaded>, QueueError> {
        // 0. Spill files of sessions cut off by a stop: never acknowledged.
        let tmp = tmp_dir(&self.dir);
        let mut spills = 0;
        for f in self.fs.list(&tmp)? {
            let path = tmp.join(f);
            match self.fs.entry(&path).map(|i| i.kind) {
                Ok(EntryKind::File) => {
                    if self.fs.remove(&path).is_ok() {
                        spills += 1;
                    }
                }
                Ok(_) => self.set_aside(&path, "not a spill file", recovered),
                Err(_) => {}
            }
        }
        if spills > 0 {
            self.dirty_dirs.push(tmp);
            tracing::info!(
                files = spills,
                "spill files of messages never acknowledged removed"
            );
        }
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
                self.next_file_no = self.next_file_no.max(no.saturating_add(1));
                let Some((file, seq)) = self.open_segment(&path, recovered) else {
                    continue;
                };
                let state = if seq.is_some() {
                    SegState::Sealed
                } else {
                    SegState::Free
                };
                if let Some(seq) = seq {
                    found.push((seq, no, path.clone()));
                    // At most MAX_SEQ (`open_segment`): no overflow.
                    self.next_seq = self.next_seq.max(seq.saturating_add(1));
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
                "lock"
                    | "big"
                    | "tmp"
                    | "corrupt"
                    | state::FILE_NAME
                    | super::super::CONTROL_SOCKET
            ) && !super::super::side::known(&name)
            {
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
        // id -> the latest note (segment, held) after its message record
        let mut notes: HashMap<u64, (u32, bool)> = HashMap::new();
        for (seq, no, path) in &found {
            let Some(seg) = self.segs.get(no) else {
                continue;
            };
            let mut scan = Scanner::new(seg.file.as_ref(), *seq)?;
            while let Some((offset, h, payload)) = scan.next_record()? {
                match h.kind {
                    Kind::SegmentStart => match record::Note::decode(&payload) {
                        Some(record::Note::Hold(id)) => {
                            notes.insert(id, (*no, true));
                        }
                        Some(record::Note::Release(id)) => {
                            notes.insert(id, (*no, false));
                        }
                        None => {}
                    },
                    Kind::Message => {
                        let Ok((meta, body_off)) = MessageMeta::decode(&payload) else {
                            tracing::warn!(segment = %path.display(), offset, "undecodable message record skipped");
                            continue;
                        };
                        if meta.id > MAX_ID {
                            tracing::warn!(segment = %path.display(), offset, id = meta.id, "message record with an id beyond any postern gives (damaged): skipped");
                            continue;
                        }
                        self.max_id_seen = self.max_id_seen.max(meta.id);
                        let id = meta.id;
                        let body_at = (HEADER_LEN as u64).checked_add(body_off as u64);
                        let (Some(body_start), Some(body_len)) = (
                            body_at.and_then(|b| offset.checked_add(b)),
                            payload.len().checked_sub(body_off).map(|n| n as u64),
                        ) else {
                            tracing::warn!(segment = %path.display(), offset, "message record whose body is outside it skipped");
                            continue;
                        };
                        let hold = meta.hold;
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
                                    hold,
                                    hold_seg: None,
                                },
                                data_seg: Some(*no),
                            },
                        );
                        done_at.remove(&id);
                        // A copy carries the hold it had: only a note
                        // after it changes that.
                        notes.remove(&id);
                    }
                    Kind::RcptsDone => {
                        let Ok((id, done, flags)) = record::decode_rcpts_done(&payload) else {
                            continue;
                        };
                        if id <= MAX_ID {
                            self.max_id_seen = self.max_id_seen.max(id);
                        }
                        if let Some(r) = msgs.get_mut(&id) {
                            r.loaded.meta.done = in_range(done, &r.loaded.meta);
                            r.loaded.meta.delay_warned = flags & record::DELAY_WARNED != 0;
                            r.loaded.state_seg = Some(*no);
                        }
                    }
                    Kind::Done => {
                        let Ok(id) = record::decode_u64(&payload) else {
                            continue;
                        };
                        if id <= MAX_ID {
                            self.max_id_seen = self.max_id_seen.max(id);
                        }
                        done_at.insert(id, *no);
                    }
                }
            }
        }

        // 2. Big messages.
        let big_dir = self.dir.join("big");
        for ent in self.fs.list(&big_dir)? {
            let path = big_dir.join(&ent);
            match self.fs.entry(&path) {
                Ok(i) if i.kind == EntryKind::File => {
                    if let Some(uid) = self.owners.foreign(&i) {
                        let why =
                            format!("owned by user id {uid}, not by postern's user: not delivered");
                        self.set_aside(&path, &why, recovered);
                        continue;
                    }
                    if access::tighten(self.fs.as_ref(), &path, &i, &self.owners) {
                        self.tightened += 1;
                    }
                }
                Ok(_) => {
                    self.set_aside(&path, "not a regular file", recovered);
                    continue;
                }
                Err(_) => continue,
            }
            let Some(id) = ent
                .to_str()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .filter(|id| *id <= MAX_ID)
            else {
                self.set_aside(&path, "not a queue file name", recovered);
                continue;
            };
            match read_big(self.fs.as_ref(), &path) {
                Ok((meta, body_off, total)) if meta.id == id => {
                    let body_start = (HEADER_LEN as u64).saturating_add(body_off as u64);
                    let Some(body_len) = total.checked_sub(body_start) else {
                        self.set_aside(&path, "its body is outside its record", recovered);
                        continue;
                    };
                    self.max_id_seen = self.max_id_seen.max(id);
                    let hold = meta.hold;
                    msgs.insert(
                        id,
                        Rec {
                            loaded: Loaded {
                                meta,
                                loc: Loc::Big { path: path.clone() },
                                body_start,
                                body_len,
                                record_len: total,
                                state_seg: None,
                                hold,
                                hold_seg: None,
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
                let Ok((id, done, flags)) = record::decode_rcpts_done(&payload) else {
                    continue;
                };
                if let Some(r) = msgs.get_mut(&id).filter(|r| r.data_seg.is_none()) {
                    r.loaded.meta.done = in_range(done, &r.loaded.meta);
                    r.loaded.meta.delay_warned = flags & record::DELAY_WARNED != 0;
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
            if let Some(&(s, held)) = notes.get(&id) {
                loaded.hold = if held {
                    super::super::Hold::Operator
                } else {
                    super::super::Hold::None
                };
                // A note beside its message's data pins nothing.
                if Some(s) != r.data_seg {
                    self.pin(s);
                    loaded.hold_seg = Some(s);
                }
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
}

/// Move `path` into `<dir>/corrupt/`, under a name not taken there yet,
/// and say so in the log; whether it moved.
pub(super) fn move_aside(fs: &dyn Storage, dir: &Path, path: &Path, why: &str) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let corrupt = dir.join("corrupt");
    let mut to = corrupt.join(&name);
    let mut n = 1;
    while fs.entry(&to).is_ok() && n < 1000 {
        to = corrupt.join(format!("{name}.{n}"));
        n += 1;
    }
    match fs.rename(path, &to) {
        Ok(()) => {
            tracing::warn!(file = %path.display(), reason = why, moved_to = %to.display(), "queue file set aside");
            true
        }
        Err(e) => {
            tracing::error!(file = %path.display(), reason = why, error = %e, "not postern's queue file, and cannot set it aside: ignored (move it away)");
            false
        }
    }
}

/// The indices of a recipients-done record that name a recipient of
/// `meta` (a record never names others; a damaged one is not trusted to).
fn in_range(done: Vec<RcptIndex>, meta: &MessageMeta) -> Vec<RcptIndex> {
    let n = meta.envelope.rcpts.len();
    done.into_iter()
        .filter(|d| usize::try_from(*d).is_ok_and(|d| d < n))
        .collect()
}

/// The first four octets of a free segment: its start record erased
/// (zeroes), or that erasure, or the writing of a new start record, torn
/// at a power cut: each octet zero or the record magic's.
fn looks_free(head: &[u8; 4]) -> bool {
    let magic = record::MAGIC.to_le_bytes();
    head.iter().zip(magic).all(|(b, m)| *b == 0 || *b == m)
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
pub(super) struct Scanner<'a> {
    file: &'a dyn StorageFile,
    seq: u32,
    pos: u64,
    len: u64,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(file: &'a dyn StorageFile, seq: u64) -> io::Result<Scanner<'a>> {
        Ok(Scanner {
            file,
            seq: seq as u32,
            pos: 0,
            len: file.size()?,
        })
    }

    pub(super) fn next_record(&mut self) -> io::Result<Option<(u64, Header, Vec<u8>)>> {
        // pos and len are at most the file's size: no overflow, but the
        // lengths read below are from disk, so every sum is checked.
        let Some(payload_at) = self.pos.checked_add(HEADER_LEN as u64) else {
            return Ok(None);
        };
        if payload_at > self.len {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut head, self.pos)?;
        let h = match Header::decode(&head) {
            Ok(h) if h.seq == self.seq => h,
            _ => return Ok(None),
        };
        let end = match payload_at.checked_add(u64::from(h.len)) {
            Some(end) if end <= self.len => end,
            _ => return Ok(None),
        };
        let Ok(n) = usize::try_from(h.len) else {
            return Ok(None);
        };
        let mut payload = vec![0u8; n];
        self.file.read_exact_at(&mut payload, payload_at)?;
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
