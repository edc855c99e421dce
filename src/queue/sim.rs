//! A simulated filesystem with power cuts, for the queue's crash tests.
//!
//! Every file keeps what a sync made durable apart from what was written
//! since, as a list of writes; every directory keeps its durable entries
//! apart from the current ones. After a chosen number of operations the
//! power goes: the surviving image is taken and every later operation fails
//! with EIO, as a dying disk would. What survives, per file and directory:
//!
//! - everything synced, always;
//! - of the writes since the last sync: either none (the cache was lost),
//!   or each independently kept whole, torn at a random byte, or lost (dirty
//!   pages reach the device in any order);
//! - of each directory's unsynced changes: all or none.
//!
//! Not modelled: a synced block corrupted later (bit rot), a device that
//! acknowledges a flush it did not do, partially applied directory
//! operations within one directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::storage::{EntryInfo, EntryKind, OpenMode, Storage, StorageFile, StorageLock};

/// A small deterministic generator (xorshift64*): tests replay by seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Default, Clone)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// Writes since the last sync, in order.
    unsynced: Vec<(u64, Vec<u8>)>,
}

fn apply(data: &mut Vec<u8>, off: u64, buf: &[u8]) {
    let off = off as usize;
    if data.len() < off + buf.len() {
        data.resize(off + buf.len(), 0);
    }
    data[off..off + buf.len()].copy_from_slice(buf);
}

#[derive(Debug)]
struct Sim {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Current entries: path -> inode.
    names: BTreeMap<PathBuf, u64>,
    /// Entries as of each directory's last sync.
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    dirty_dirs: BTreeSet<PathBuf>,
    /// Mutating operations so far.
    ops: u64,
    cut_at: Option<u64>,
    /// The image taken at the power cut; set once, then every op fails.
    image: Option<SimFs>,
    rng: Rng,
    /// Most bytes the files may hold together (a full disk); `None`: no limit.
    capacity: Option<u64>,
    /// Files created so far (`CreateNew`), by path, in order.
    created: Vec<PathBuf>,
    /// Every change fails, as on a read-only or immutable filesystem.
    read_only: bool,
}

/// The simulated filesystem; clones share it.
#[derive(Debug, Clone)]
pub struct SimFs(Arc<Mutex<Sim>>);

fn eio() -> io::Error {
    io::Error::other("simulated power cut: device gone")
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl SimFs {
    pub fn new(seed: u64) -> SimFs {
        SimFs(Arc::new(Mutex::new(Sim {
            inodes: HashMap::new(),
            next_ino: 1,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::new(),
            dirty_dirs: BTreeSet::new(),
            ops: 0,
            cut_at: None,
            image: None,
            rng: Rng::new(seed),
            capacity: None,
            read_only: false,
            created: Vec::new(),
        })))
    }

    /// Limit what the files may hold together: writes past it fail with
    /// ENOSPC, as on a full disk. `None` lifts the limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.sim().capacity = bytes;
    }

    /// Make every change fail (EROFS), or work again.
    pub fn set_read_only(&self, ro: bool) {
        self.sim().read_only = ro;
    }

    /// Bytes the named files hold together.
    pub fn used(&self) -> u64 {
        self.sim().used()
    }

    fn sim(&self) -> MutexGuard<'_, Sim> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many files whose name starts with `prefix` were created so far
    /// (a name used again counts again).
    pub fn created(&self, prefix: &str) -> usize {
        self.sim()
            .created
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .count()
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.sim().ops
    }

    /// Cut the power when the operation count reaches `at`.
    pub fn cut_at(&self, at: u64) {
        self.sim().cut_at = Some(at);
    }

    /// Cut the power now (if it has not been cut yet) and return what the
    /// disk holds: a fresh filesystem as the next boot sees it.
    pub fn power_cut(&self) -> SimFs {
        let mut s = self.sim();
        if s.image.is_none() {
            let img = s.take_image();
            s.image = Some(img);
        }
        s.image.clone().expect("image just taken")
    }
}

fn erofs() -> io::Error {
    io::Error::from_raw_os_error(30)
}

impl Sim {
    fn used(&self) -> u64 {
        let inos: BTreeSet<u64> = self.names.values().copied().collect();
        inos.iter()
            .filter_map(|i| self.inodes.get(i))
            .map(|i| i.data.len() as u64)
            .sum()
    }

    /// Would growing inode `ino` to `end` bytes overflow the disk?
    fn check_room(&self, ino: u64, end: u64) -> io::Result<()> {
        let Some(cap) = self.capacity else {
            return Ok(());
        };
        let cur = self.inodes.get(&ino).map_or(0, |i| i.data.len() as u64);
        let grow = end.saturating_sub(cur);
        if grow > 0 && self.used() + grow > cap {
            // ENOSPC
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }

    /// Count a mutating operation; fail once the power is gone.
    fn tick(&mut self) -> io::Result<()> {
        if self.image.is_some() {
            return Err(eio());
        }
        self.ops += 1;
        if self.cut_at.is_some_and(|c| self.ops >= c) {
            let img = self.take_image();
            self.image = Some(img);
            return Err(eio());
        }
        Ok(())
    }

    fn take_image(&mut self) -> SimFs {
        let lose_all = self.rng.below(3) == 0;
        let mut names = self.durable_names.clone();
        for d in self.dirty_dirs.clone() {
            if !lose_all && self.rng.below(2) == 0 {
                names.retain(|p, _| parent(p) != d);
                for (p, ino) in self.names.iter().filter(|(p, _)| parent(p) == d) {
                    names.insert(p.clone(), *ino);
                }
            }
        }
        let mut inodes = HashMap::new();
        let wanted: BTreeSet<u64> = names.values().copied().collect();
        for ino in wanted {
            let Some(i) = self.inodes.get(&ino) else {
                continue;
            };
            let mut data = i.durable.clone();
            if !lose_all {
                for (off, buf) in &i.unsynced {
                    match self.rng.below(3) {
                        0 => apply(&mut data, *off, buf),
                        1 => {
                            let n = self.rng.below(buf.len() as u64 + 1) as usize;
                            apply(&mut data, *off, &buf[..n]);
                        }
                        _ => {}
                    }
                }
            }
            inodes.insert(
                ino,
                Inode {
                    durable: data.clone(),
                    data,
                    unsynced: Vec::new(),
                },
            );
        }
        let seed = self.rng.next();
        let img = SimFs::new(seed);
        {
            let mut s = img.sim();
            s.inodes = inodes;
            s.next_ino = self.next_ino;
            s.durable_names = names.clone();
            s.names = names;
            s.dirs = self.dirs.clone();
        }
        img
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: u64,
    writable: bool,
}

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let s = self.fs.sim();
        if s.image.is_some() {
            return Err(eio());
        }
        let d = &s.inodes.get(&self.ino).ok_or_else(eio)?.data;
        let off = off as usize;
        if off + buf.len() > d.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        buf.copy_from_slice(&d[off..off + buf.len()]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "read only"));
        }
        let mut s = self.fs.sim();
        if s.image.is_some() {
            return Err(eio());
        }
        if s.read_only {
            return Err(erofs());
        }
        s.check_room(self.ino, off + buf.len() as u64)?;
        // The write is in the cache before the cut can take it (torn).
        let i = s.inodes.get_mut(&self.ino).ok_or_else(eio)?;
        apply(&mut i.data, off, buf);
        i.unsynced.push((off, buf.to_vec()));
        s.tick()
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.fs.sim();
        s.tick()?;
        let i = s.inodes.get_mut(&self.ino).ok_or_else(eio)?;
        i.durable = i.data.clone();
        i.unsynced.clear();
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let s = self.fs.sim();
        Ok(s.inodes.get(&self.ino).map_or(0, |i| i.data.len() as u64))
    }

    fn linked(&self) -> io::Result<bool> {
        let s = self.fs.sim();
        Ok(s.names.values().any(|i| *i == self.ino))
    }
}

#[derive(Debug)]
struct SimLock;
impl StorageLock for SimLock {}

impl Storage for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.sim();
        if s.image.is_some() {
            return Err(eio());
        }
        // Directories are made once, at the first open: taken as durable.
        let mut d = dir.to_path_buf();
        loop {
            s.dirs.insert(d.clone());
            if !d.pop() || d.as_os_str().is_empty() {
                break;
            }
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut s = self.sim();
        if s.image.is_some() {
            return Err(eio());
        }
        let ino = match (mode, s.names.get(path).copied()) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
            }
            (OpenMode::CreateNew, None) => {
                if s.read_only {
                    return Err(erofs());
                }
                if !s.dirs.contains(&parent(path)) {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "no such dir"));
                }
                s.tick()?;
                let ino = s.next_ino;
                s.next_ino += 1;
                s.inodes.insert(ino, Inode::default());
                s.names.insert(path.to_path_buf(), ino);
                s.dirty_dirs.insert(parent(path));
                s.created.push(path.to_path_buf());
                ino
            }
            (_, Some(ino)) => ino,
            (_, None) => return Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
            writable: mode != OpenMode::Read,
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let s = self.sim();
        let mut v: Vec<OsString> = s
            .names
            .keys()
            .filter(|p| parent(p) == dir)
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect();
        for d in &s.dirs {
            if parent(d) == dir
                && let Some(n) = d.file_name()
            {
                v.push(n.to_os_string());
            }
        }
        Ok(v)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.sim().dirs.contains(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.sim();
        if s.read_only {
            return Err(erofs());
        }
        s.tick()?;
        let ino = s
            .names
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        s.names.insert(to.to_path_buf(), ino);
        s.dirty_dirs.insert(parent(from));
        s.dirty_dirs.insert(parent(to));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.sim();
        if s.read_only {
            return Err(erofs());
        }
        s.tick()?;
        s.names
            .remove(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        s.dirty_dirs.insert(parent(path));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.sim();
        s.tick()?;
        let cur: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| parent(p) == dir)
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.retain(|p, _| parent(p) != dir);
        s.durable_names.extend(cur);
        s.dirty_dirs.remove(dir);
        Ok(())
    }

    fn lock(&self, _path: &Path) -> io::Result<Option<Box<dyn StorageLock>>> {
        Ok(Some(Box::new(SimLock)))
    }

    fn set_mode(&self, _path: &Path, _mode: u32) -> io::Result<()> {
        Ok(())
    }

    fn user(&self) -> Option<u32> {
        None
    }

    fn entry(&self, path: &Path) -> io::Result<EntryInfo> {
        let s = self.sim();
        if s.dirs.contains(path) {
            return Ok(EntryInfo {
                kind: EntryKind::Dir,
                len: 0,
                uid: None,
                mode: None,
            });
        }
        let ino = s
            .names
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        Ok(EntryInfo {
            kind: EntryKind::File,
            len: s.inodes.get(ino).map_or(0, |i| i.data.len() as u64),
            uid: None,
            mode: None,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Power cuts at random points of a random workload, many seeds: every
    //! acknowledged message survives, byte for byte, with no recipient
    //! finished that was not; nothing corrupt is ever handed to delivery; a
    //! failure is never forgotten without its report; a confirmed delete
    //! stays deleted.
    //!
    //! `POSTERN_POWERCUT_SEEDS=N` runs N seeds (default 120, for CI);
    //! `POSTERN_POWERCUT_FIRST=S` starts at seed S (to replay one).

    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// What this seed did, printed if it fails.
        static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// Note a step of the workload: printed at once with
    /// `POSTERN_POWERCUT_TRACE`, else kept and printed if the seed fails.
    macro_rules! trace {
        ($($a:tt)*) => {{
            let line = format!($($a)*);
            if std::env::var_os("POSTERN_POWERCUT_TRACE").is_some() {
                eprintln!("{line}");
            } else {
                LOG.with(|l| l.borrow_mut().push(line));
            }
        }};
    }
    use crate::queue::{Hold, Job, Limits, Queue, QueueError, QueueId, RcptOutcome, StoreOptions};
    use crate::smtp::{Address, Envelope, Recipient, ReversePath};
    use std::time::{Duration, Instant};

    const DIR: &str = "/spool";

    #[derive(Debug, Clone)]
    struct Model {
        len: usize,
        rcpts: usize,
        /// The queue has said 250 (or recovery showed the message).
        acked: bool,
        /// Recipients the queue may show as finished.
        may_be_done: Vec<bool>,
        /// Recipient index -> report id, for failures reported.
        reports: Vec<(usize, u64)>,
        deleted: bool,
        /// Held by the operator: `None` when a hold or release was cut off
        /// by the power (either may have stuck).
        held: Option<bool>,
    }

    fn body(id: u64, len: usize) -> Vec<u8> {
        let mut r = Rng::new(id);
        (0..len).map(|_| b'a' + (r.below(26) as u8)).collect()
    }

    fn limits() -> Limits {
        Limits {
            max_bytes: 1 << 30,
            max_messages: 100_000,
            max_age: Duration::from_secs(86400),
            retry_intervals: vec![Duration::ZERO],
        }
    }

    fn opts(fs: &SimFs) -> StoreOptions {
        StoreOptions {
            segment_size: 16 << 10,
            big_threshold: 6 << 10,
            keep_free: 1,
            max_segments: 1000,
            storage: Arc::new(fs.clone()),
            ..StoreOptions::default()
        }
    }

    fn read_all(q: &Queue, job: &Job) -> io::Result<Vec<u8>> {
        let mut r = q.open_body(job)?;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            r.read_chunk(&mut buf, 1000)?;
            if buf.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&buf);
        }
    }

    fn commit_some(q: &Queue, rng: &mut Rng, model: &mut HashMap<u64, Model>) {
        let k = 1 + rng.below(4) as usize;
        let mut handles = Vec::new();
        for _ in 0..k {
            let rcpts = 1 + rng.below(3) as usize;
            let len = match rng.below(10) {
                0 => 6000 + rng.below(20_000) as usize, // a file of its own
                1..=3 => rng.below(40) as usize,
                _ => rng.below(3000) as usize,
            };
            let addr = |s: &str| Address::parse(s).expect("a test address");
            let mut w = q.begin(Envelope {
                from: ReversePath::Path(addr("dev@lan")),
                rcpts: (0..rcpts)
                    .map(|i| Recipient::new(addr(&format!("r{i}@x.example"))))
                    .collect(),
                ..Envelope::default()
            });
            let id = w.id();
            // Some are queued held, as a [[filter]] rule or storm
            // suppression does: the same hold the operator's notes change.
            let hold = match rng.below(8) {
                0 => Hold::Filter,
                1 => Hold::Storm,
                _ => Hold::None,
            };
            model.insert(
                id,
                Model {
                    len,
                    rcpts,
                    acked: false,
                    may_be_done: vec![false; rcpts],
                    reports: Vec::new(),
                    deleted: false,
                    held: Some(hold != Hold::None),
                },
            );
            let b = body(id, len);
            let q = q.clone();
            handles.push(std::thread::spawn(move || {
                for c in b.chunks(700) {
                    w.write(c)?;
                }
                if hold != Hold::None {
                    w.set_disposition(None, hold, None)?;
                }
                smol::block_on(q.commit(w)).map_err(|e| io::Error::other(e.to_string()))
            }));
        }
        for h in handles {
            let r = h.join();
            trace!("commit {r:?}");
            if let Ok(Ok(QueueId(id))) = r
                && let Some(m) = model.get_mut(&id)
            {
                m.acked = true;
            }
        }
    }

    fn deliver_some(q: &Queue, rng: &mut Rng, model: &mut HashMap<u64, Model>, seed: u64) {
        let (jobs, _) = q.take_due(Instant::now() + Duration::from_secs(1), usize::MAX);
        for job in jobs {
            let m = model.get_mut(&job.id.0).expect("a message the test queued");
            if let Ok(b) = read_all(q, &job) {
                assert!(
                    b == body(job.id.0, m.len),
                    "seed {seed}: {} read back different bytes",
                    job.id
                );
            }
            if rng.below(3) == 0 {
                // Left alone this round (stays in flight until the next).
                q.finish(&job, &[], None);
                continue;
            }
            let mut outcomes = Vec::new();
            let mut failed = Vec::new();
            for i in &job.pending {
                // Attempted again: any earlier report for it was never made
                // durable (the queue put the recipient back).
                m.reports.retain(|(j, _)| *j != *i as usize);
                let o = match rng.below(4) {
                    0 | 1 => RcptOutcome::Delivered,
                    2 => RcptOutcome::Deferred("451 later".into()),
                    _ => {
                        failed.push(*i as usize);
                        RcptOutcome::Failed("550 no".into())
                    }
                };
                if o != RcptOutcome::Deferred("451 later".into()) {
                    m.may_be_done[*i as usize] = true;
                }
                outcomes.push((*i, o));
            }
            let report = if failed.is_empty() {
                None
            } else {
                let mut w = q.begin_report(Address::parse("dev@lan").expect("a test address"));
                let rid = w.id();
                let len = 100 + rng.below(500) as usize;
                let _ = w.write(&body(rid, len));
                for i in &failed {
                    m.reports.push((*i, rid));
                }
                model.insert(
                    rid,
                    Model {
                        len,
                        rcpts: 1,
                        // Durable exactly when the failure is; checked below.
                        acked: false,
                        may_be_done: vec![false],
                        reports: Vec::new(),
                        deleted: false,
                        held: Some(false),
                    },
                );
                Some(w)
            };
            trace!("finish {} {outcomes:?}", job.id);
            q.finish(&job, &outcomes, report);
        }
    }

    /// Hold or release a random message.
    fn hold_one(q: &Queue, rng: &mut Rng, model: &mut HashMap<u64, Model>) {
        let list = q.list();
        if list.is_empty() {
            return;
        }
        let s = &list[rng.below(list.len() as u64) as usize];
        let held = !s.held;
        let r = if held { q.hold(s.id) } else { q.release(s.id) };
        trace!("hold {} {held} {r:?}", s.id);
        if let Some(m) = model.get_mut(&s.id.0) {
            match r {
                Ok(()) => m.held = Some(held),
                Err(crate::queue::OpError::NotFound(_)) => {}
                // Written and then the sync failed, or never written: the
                // model cannot tell, so it takes either.
                Err(_) => m.held = None,
            }
        }
    }

    fn delete_one(q: &Queue, rng: &mut Rng, model: &mut HashMap<u64, Model>, fs: &SimFs) {
        let list = q.list();
        if list.is_empty() {
            return;
        }
        let s = &list[rng.below(list.len() as u64) as usize];
        let r = q.delete(s.id);
        if let Err(crate::queue::OpError::Failed(_) | crate::queue::OpError::Closed) = r
            && let Some(m) = model.get_mut(&s.id.0)
        {
            // The power went during the delete: it may or may not stick.
            m.may_be_done.iter_mut().for_each(|d| *d = true);
            m.reports.clear();
        }
        if r.is_ok()
            && let Some(m) = model.get_mut(&s.id.0)
        {
            trace!("deleted {} len {} ops {}", s.id, m.len, fs.ops());
            m.deleted = true;
            m.may_be_done.iter_mut().for_each(|d| *d = true);
            // Its failures were all reported (or put back, then deleted).
            m.reports.clear();
        }
    }

    /// Print what is on the simulated disk (debugging a failed seed).
    fn dump(fs: &SimFs) {
        use crate::queue::record::{HEADER_LEN, Header, Kind, MessageMeta};
        let s = fs.sim();
        for (p, ino) in &s.names {
            let d = &s.inodes[ino].data;
            trace!("{} ({} bytes)", p.display(), d.len());
            let mut at = 0usize;
            while at + HEADER_LEN <= d.len() {
                let mut h = [0u8; HEADER_LEN];
                h.copy_from_slice(&d[at..at + HEADER_LEN]);
                let Ok(h) = Header::decode(&h) else { break };
                let end = at + HEADER_LEN + h.len as usize;
                if end > d.len() {
                    break;
                }
                let ok = h.verify(&d[at + HEADER_LEN..end]).is_ok();
                let id = match h.kind {
                    Kind::Message => MessageMeta::decode(&d[at + HEADER_LEN..end])
                        .map(|m| format!("{:X}", m.0.id))
                        .unwrap_or_default(),
                    Kind::SegmentStart => format!(
                        "{:?}",
                        crate::queue::record::Note::decode(&d[at + HEADER_LEN..end])
                    ),
                    Kind::Done | Kind::RcptsDone if h.len >= 8 => {
                        let mut w = [0u8; 8];
                        w.copy_from_slice(&d[at + HEADER_LEN..at + HEADER_LEN + 8]);
                        format!(
                            "{:X} {:?}",
                            u64::from_le_bytes(w),
                            &d[at + HEADER_LEN + 8..end]
                        )
                    }
                    _ => String::new(),
                };
                trace!(
                    "  @{at} seq {} {:?} len {} ok {ok} {id}",
                    h.seq, h.kind, h.len
                );
                at = end;
            }
        }
    }

    /// Open the queue on what survived and check it against the model.
    fn recover_and_check(fs: &SimFs, model: &mut HashMap<u64, Model>, seed: u64) -> Option<Queue> {
        dump(fs);
        let q = match Queue::open_with(Path::new(DIR), limits(), opts(fs)) {
            Ok((q, _)) => q,
            // The power went again during recovery: try on the next image.
            Err(QueueError::Io(_)) if fs.sim().image.is_some() => return None,
            Err(e) => panic!("seed {seed}: recovery failed: {e}"),
        };
        if fs.sim().image.is_some() {
            // The power went during recovery, in a step whose failure
            // recovery shrugs off (removing a leftover): next image.
            q.close();
            return None;
        }
        let (jobs, _) = q.take_due(Instant::now() + Duration::from_secs(1), usize::MAX);
        let mut seen = HashMap::new();
        // Held messages are not due: check them from the listing.
        for sm in q.list() {
            let Some(m) = model.get_mut(&sm.id.0) else {
                panic!(
                    "seed {seed}: recovery produced {} that was never queued",
                    sm.id
                );
            };
            assert!(
                m.held.is_none() || m.held == Some(sm.held),
                "seed {seed}: {} came back {}held",
                sm.id,
                if sm.held { "" } else { "not " }
            );
            m.held = Some(sm.held);
            trace!("recovered {} held {}", sm.id, sm.held);
            if !sm.held {
                continue;
            }
            assert!(!m.deleted, "seed {seed}: deleted {} came back", sm.id);
            let mut r = q.open_body_of(sm.id).expect("opening a held body");
            let mut b = Vec::new();
            let mut buf = Vec::new();
            loop {
                r.read_chunk(&mut buf, 1000).expect("reading a held body");
                if buf.is_empty() {
                    break;
                }
                b.extend_from_slice(&buf);
            }
            assert!(
                b == body(sm.id.0, m.len),
                "seed {seed}: {} recovered with different bytes",
                sm.id
            );
            let pending: Vec<usize> = (0..sm.rcpts.len()).filter(|i| !sm.rcpts[*i].1).collect();
            for i in 0..m.rcpts {
                if !pending.contains(&i) {
                    assert!(
                        m.may_be_done[i],
                        "seed {seed}: {} recipient {i} finished but never was",
                        sm.id
                    );
                }
            }
            seen.insert(sm.id.0, pending);
        }
        for job in &jobs {
            let Some(m) = model.get(&job.id.0) else {
                panic!(
                    "seed {seed}: recovery produced {} that was never queued",
                    job.id
                );
            };
            assert!(!m.deleted, "seed {seed}: deleted {} came back", job.id);
            let b = read_all(&q, job).expect("reading a recovered body");
            assert!(
                b == body(job.id.0, m.len),
                "seed {seed}: {} recovered with different bytes",
                job.id
            );
            let pending: Vec<usize> = job.pending.iter().map(|i| *i as usize).collect();
            for i in 0..m.rcpts {
                if !pending.contains(&i) {
                    assert!(
                        m.may_be_done[i],
                        "seed {seed}: {} recipient {i} finished but never was",
                        job.id
                    );
                }
            }
            seen.insert(job.id.0, pending);
        }
        // Finished recipients went to the report: check both ways.
        for (id, m) in model.iter() {
            let present = seen.get(id);
            if m.acked && !m.deleted {
                for i in 0..m.rcpts {
                    let pending = present.is_some_and(|p| p.contains(&i));
                    if !(pending || m.may_be_done[i]) {
                        eprintln!("present {present:?} model {m:?}");
                    }
                    assert!(
                        pending || m.may_be_done[i],
                        "seed {seed}: acknowledged {} lost recipient {i}",
                        QueueId(*id)
                    );
                }
            }
            for (i, rid) in &m.reports {
                let finished = !present.is_some_and(|p| p.contains(i));
                let report_kept =
                    seen.contains_key(rid) || model.get(rid).is_some_and(|r| r.may_be_done[0]);
                if finished && (m.acked || present.is_some()) {
                    assert!(
                        report_kept,
                        "seed {seed}: {} failure forgotten without its report {}",
                        QueueId(*id),
                        QueueId(*rid)
                    );
                }
            }
        }
        // What recovery shows is the truth from here on.
        for (id, m) in model.iter_mut() {
            match seen.get(id) {
                Some(pending) => {
                    m.acked = true;
                    for i in 0..m.rcpts {
                        m.may_be_done[i] = !pending.contains(&i);
                    }
                }
                None => m.acked = false,
            }
        }
        for job in &jobs {
            q.finish(&job.clone(), &[], None);
        }
        Some(q)
    }

    #[test]
    fn power_cuts_never_lose_an_acknowledged_message_nor_hand_out_a_corrupt_one() {
        let n: u64 = std::env::var("POSTERN_POWERCUT_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120);
        let first: u64 = std::env::var("POSTERN_POWERCUT_FIRST")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut cuts = 0;
        for seed in first..first + n {
            LOG.with(|l| l.borrow_mut().clear());
            match std::panic::catch_unwind(|| run_seed(seed)) {
                Ok(c) => cuts += c,
                Err(e) => {
                    LOG.with(|l| {
                        for line in l.borrow().iter() {
                            eprintln!("{line}");
                        }
                    });
                    std::panic::resume_unwind(e);
                }
            }
        }
        eprintln!("{n} seeds, {cuts} power cuts, all recovered");
    }

    /// Three lives of one spool, each ended by a power cut at a random
    /// operation (or by the workload running out); returns the cuts.
    fn run_seed(seed: u64) -> u64 {
        let mut rng = Rng::new(seed);
        let mut fs = SimFs::new(seed);
        let mut model: HashMap<u64, Model> = HashMap::new();
        let mut cuts = 0;
        for life in 0..3 {
            // Sometimes during recovery itself, mostly during the workload.
            let budget = if rng.below(5) == 0 {
                1 + rng.below(20)
            } else {
                1 + rng.below(400)
            };
            fs.cut_at(fs.ops() + budget);
            trace!("life {life}: ops {} cut at {}", fs.ops(), fs.ops() + budget);
            let q = if life == 0 {
                match Queue::open_with(Path::new(DIR), limits(), opts(&fs)) {
                    Ok((q, _)) => Some(q),
                    Err(_) => None,
                }
            } else {
                recover_and_check(&fs, &mut model, seed)
            };
            if let Some(q) = q {
                for _ in 0..40 {
                    if fs.sim().image.is_some() {
                        break;
                    }
                    match rng.below(12) {
                        0..=4 => commit_some(&q, &mut rng, &mut model),
                        5..=7 => deliver_some(&q, &mut rng, &mut model, seed),
                        8 => {
                            let _ = q.sync();
                        }
                        9 => {
                            if rng.below(2) == 0 {
                                delete_one(&q, &mut rng, &mut model, &fs)
                            } else {
                                hold_one(&q, &mut rng, &mut model)
                            }
                        }
                        // The disk fills up (to a little more than it holds
                        // now) or frees again.
                        10 => {
                            let full = fs.sim().capacity.is_some();
                            fs.set_capacity((!full).then(|| fs.used() + rng.below(20 << 10)));
                        }
                        // Read-only for a while (remounted, `chattr +i`).
                        _ => {
                            let ro = fs.sim().read_only;
                            fs.set_read_only(!ro);
                        }
                    }
                }
                let img = fs.power_cut();
                q.close();
                fs = img;
            } else {
                fs = fs.power_cut();
            }
            cuts += 1;
        }
        if let Some(q) = recover_and_check(&fs, &mut model, seed) {
            q.close();
        }
        cuts
    }
}
