//! The durable message queue: the only code that touches the spool directory.
//!
//! Accepted messages are appended to preallocated segment files (or, when
//! big, kept as a file of their own); one writer thread owns every write, so
//! sessions that finish DATA together share one `fdatasync` (group commit)
//! and each gets its `250` only after it. Retry bookkeeping (attempts, next
//! attempt) lives in memory and is derived again at start; only what must
//! survive a crash — a recipient finished, a message finished — is appended
//! as a small record. See `docs/queue.md` for the format and its reasons.
//!
//! A message is stored with its [`Envelope`] as the session built it, and
//! handed to delivery as a [`Job`]: that envelope and the indices of the
//! recipients still pending.
//!
//! Scheduling uses the monotonic clock; a message's age is its age when
//! loaded (by the wall clock, if that looks sane) plus monotonic time since.

mod clock;
mod record;
mod side;
#[cfg(test)]
mod sim;
mod spool;
mod state;
mod storage;
mod store;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

pub use clock::{Clock, SystemClock};
pub use side::SideFile;
pub use spool::SpoolWriter;
pub use storage::{
    DIR_MODE, EntryInfo, EntryKind, FILE_MODE, OpenMode, RealFs, Storage, StorageFile, StorageLock,
    real_entry,
};
pub use store::StoreOptions;

/// Parse a queue id as shown (hexadecimal).
impl std::str::FromStr for QueueId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<QueueId, Self::Err> {
        u64::from_str_radix(s.trim(), 16).map(QueueId)
    }
}

pub use record::Hold;
use record::MessageMeta;
use store::Request;

use crate::smtp::{Address, BodyType, Envelope, RcptIndex, Recipient, ReversePath};

/// File name of the control socket (`postern queue …` to the daemon) in
/// the queue directory: the daemon binds it there, and recovery knows it
/// as one of the directory's own entries.
pub const CONTROL_SOCKET: &str = "control.sock";

/// What `serve` would refuse about an existing queue directory for a
/// daemon running as user `uid` (writable by others, another user's), so
/// `check` can say it first. `Ok` when the directory does not exist yet.
pub fn check_queue_dir(dir: &Path, uid: u32) -> Result<(), QueueError> {
    if !dir.exists() {
        return Ok(());
    }
    store::access::check_dir_as(&RealFs, dir, Some(uid)).map(|_| ())
}

/// The control socket's path for a queue directory.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join(CONTROL_SOCKET)
}

/// A queue id, shown to clients (`queued as …`) and in every log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}", self.0)
    }
}

/// Why the queue could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Over `max_size` or `max_messages`: the client should retry later (452 4.3.1).
    #[error("queue full")]
    Full,
    /// Reading or writing the spool failed (disk full, I/O error): 451 4.3.0.
    #[error("queue I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Another process holds the spool directory.
    #[error(
        "{}: queue directory is in use by another postern process (only one may write it)",
        .0.display()
    )]
    Locked(PathBuf),
    /// The queue is shutting down.
    #[error("queue is shutting down")]
    Closed,
    /// Writing the change failed (disk full, I/O error); nothing changed.
    #[error("could not record the change: {0}")]
    Failed(String),
    /// The queue directory or its lock is open to other users.
    #[error("{why}")]
    Unsafe {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong, where, and what to do.
        why: String,
    },
}

/// Limits and retry policy, from `[queue]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Total record bytes of queued messages.
    pub max_bytes: u64,
    /// Number of queued messages.
    pub max_messages: usize,
    /// Then the message fails with a report.
    pub max_age: Duration,
    /// Waits between attempts; the last one repeats.
    pub retry_intervals: Vec<Duration>,
}

impl Limits {
    /// From the config section.
    pub fn from_config(q: &crate::config::QueueConfig) -> Limits {
        Limits {
            max_bytes: q.max_size.bytes,
            max_messages: q.max_messages,
            max_age: q.max_age.value,
            retry_intervals: q.retry_intervals.iter().map(|d| d.value).collect(),
        }
    }

    fn retry_after(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) - 1) as usize;
        self.retry_intervals
            .get(i)
            .or(self.retry_intervals.last())
            .copied()
            .unwrap_or(Duration::from_secs(300))
    }
}

/// The largest message id taken from disk. postern's ids are the wall
/// clock's seconds shifted by 20 bits plus a count (about 2^51 today; this
/// is reached in 139,000 years), so a record with a larger one is damage:
/// recovery skips it, saying so, and the next id never overflows.
pub(crate) const MAX_ID: u64 = 1 << 62;

/// Where a message's record is.
#[derive(Debug, Clone)]
pub(crate) enum Loc {
    /// In a segment file.
    Seg { file_no: u32, path: Arc<PathBuf> },
    /// A file of its own.
    Big { path: PathBuf },
}

impl Loc {
    /// The file the message is in.
    fn path(&self) -> &Path {
        match self {
            Loc::Seg { path, .. } => path,
            Loc::Big { path } => path,
        }
    }
}

/// One queued message, in memory.
#[derive(Debug)]
struct Entry {
    meta: Arc<MessageMeta>,
    done: Vec<bool>,
    loc: Loc,
    /// Absolute offset of the body in the file at `loc`, and its length.
    body_start: u64,
    body_len: u64,
    record_len: u64,
    /// Segment holding the latest recipients-done record, when it pins one.
    state_seg: Option<u32>,
    /// Segment holding the latest hold or release note, when it pins one.
    hold_seg: Option<u32>,
    attempts: u32,
    next_attempt: Instant,
    in_flight: bool,
    /// Held (by a `[[filter]]` rule, storm suppression or the operator):
    /// never taken for delivery until released. Kept across restarts (the
    /// message record, then note records).
    hold: Hold,
    /// Recipients finished in memory whose failure report is still on its
    /// way to disk: never recorded as finished before it is.
    unreported: Vec<RcptIndex>,
    last_error: Option<String>,
    /// Queue time of arrival (`clock.rs`).
    queued: Duration,
    /// Its delay warning went out (recorded with its recipients-done
    /// state, so a restart does not send it again).
    delay_warned: bool,
}

impl Entry {
    fn age(&self, qnow: Duration) -> Duration {
        qnow.saturating_sub(self.queued)
    }
    fn pending(&self) -> usize {
        self.done.iter().filter(|d| !**d).count()
    }
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<u64, Entry>,
    bytes: u64,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    kick_tx: smol::channel::Sender<()>,
    kick_rx: smol::channel::Receiver<()>,
    next_id: AtomicU64,
    limits: Limits,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    qclock: clock::QueueClock,
    /// Sessions with a transaction open (MAIL accepted, message not yet
    /// handed to the writer): the writer waits a moment for them before it
    /// syncs (group commit).
    receiving: Arc<AtomicUsize>,
}

/// An open transaction, counted for group commit ([`Queue::transaction`]).
#[derive(Debug)]
pub struct Transaction(Arc<AtomicUsize>);

impl Drop for Transaction {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A handle on the queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

/// What recovery found at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Messages still to deliver.
    pub messages: usize,
    /// Their total record bytes.
    pub bytes: u64,
    /// Segment files in use.
    pub segments: usize,
    /// Files set aside as corrupt.
    pub set_aside: usize,
}

/// A message handed to delivery: its envelope, the recipients still
/// pending, and where to read the body.
#[derive(Debug, Clone)]
pub struct Job {
    /// Queue id.
    pub id: QueueId,
    /// The envelope as accepted (every recipient, finished or not).
    pub envelope: Arc<Envelope>,
    /// Indices in `envelope.rcpts` of the recipients this attempt is for:
    /// those still pending (delivery narrows it to one route's share).
    pub pending: Vec<RcptIndex>,
    /// Attempts made before this one.
    pub attempts: u32,
    /// How long the message has been queued.
    pub age: Duration,
    /// Arrival time, seconds since the epoch (for reports).
    pub arrival: u64,
    /// Body length in octets.
    pub body_len: u64,
    /// Deliver over the route of this name rather than by domain (a
    /// `[[filter]]` said so).
    pub route: Option<String>,
    /// Its delay warning went out already (once per message).
    pub delay_warned: bool,
    path: PathBuf,
    body_start: u64,
}

impl Job {
    /// The pending recipients with their indices.
    pub fn rcpts(&self) -> impl Iterator<Item = (RcptIndex, &Recipient)> + '_ {
        self.pending
            .iter()
            .filter_map(|i| Some((*i, self.rcpt(*i)?)))
    }

    /// Recipient `i` of the envelope.
    pub fn rcpt(&self, i: RcptIndex) -> Option<&Recipient> {
        self.envelope.rcpts.get(usize::try_from(i).ok()?)
    }
}

/// What happened to one recipient in an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// Accepted by the next hop.
    Delivered,
    /// Try again later; the reason is kept for `queue list` and logs.
    Deferred(String),
    /// Will never work; a report goes to the sender.
    Failed(String),
}

/// One queued message, for listings.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Queue id.
    pub id: QueueId,
    /// Envelope sender; empty for `<>`.
    pub from: String,
    /// Recipients still pending.
    pub pending: Vec<String>,
    /// Body octets.
    pub size: u64,
    /// Time queued.
    pub age: Duration,
    /// Attempts so far.
    pub attempts: u32,
    /// Time until the next attempt (zero if due or in progress).
    pub next_in: Duration,
    /// The last temporary error.
    pub last_error: Option<String>,
    /// Every recipient, with whether it is finished.
    pub rcpts: Vec<(String, bool)>,
    /// Arrival, seconds since the epoch by the wall clock then.
    pub arrival: u64,
    /// Held by the operator, a `[[filter]]` rule or storm suppression.
    pub held: bool,
    /// Who holds it (`Hold::None` when not held); a restart keeps it.
    pub hold: Hold,
    /// An attempt is in progress.
    pub in_flight: bool,
}

/// How full the queue is and how long mail waits, counted under the
/// queue's lock without copying any message ([`Queue::depth`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    /// Messages queued (finished ones leave at once).
    pub messages: usize,
    /// Their total record bytes (what `max_size` bounds).
    pub bytes: u64,
    /// The oldest message: id, age, arrival (seconds since the epoch).
    pub oldest: Option<(QueueId, Duration, u64)>,
    /// Messages waiting after a failed attempt (not held).
    pub deferred: usize,
    /// Messages held (by the operator, a `[[filter]]` rule or storm
    /// suppression).
    pub held: usize,
    /// Per route (by the index `route_of` gives): messages with a pending
    /// recipient for it.
    pub waiting: Vec<usize>,
}

/// Why an operator command on one message did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// No queued message has this id (delivered, deleted, or mistyped).
    #[error("no queued message {0}")]
    NotFound(QueueId),
    /// A delivery attempt is running; the outcome decides what happens.
    #[error("message {0} is being delivered right now; try again in a moment")]
    InFlight(QueueId),
    /// The queue is shutting down.
    #[error("queue is shutting down")]
    Closed,
    /// Writing the change failed (disk full, I/O error); nothing changed.
    #[error("could not record the change: {0}")]
    Failed(String),
}

impl Queue {
    /// Open (creating if needed) the spool directory, recover what is in
    /// it and start the writer thread.
    pub fn open(dir: &Path, limits: Limits) -> Result<(Queue, Recovered), QueueError> {
        Queue::open_with(dir, limits, StoreOptions::default())
    }

    /// [`Queue::open`] with explicit store options (segment size; tests).
    pub fn open_with(
        dir: &Path,
        limits: Limits,
        opts: StoreOptions,
    ) -> Result<(Queue, Recovered), QueueError> {
        let storage = opts.storage.clone();
        let clock = opts.clock.clone();
        let (store, loaded, recovered) = store::Store::open(dir, opts)?;
        let qclock = store.qclock;
        let now = clock.mono();
        let qnow = qclock.at(now);
        let wall = clock.wall();
        let mut state = State::default();
        let mut max_id = 0u64;
        for l in loaded {
            max_id = max_id.max(l.meta.id);
            state.bytes = state.bytes.saturating_add(l.record_len);
            let mut done = vec![false; l.meta.envelope.rcpts.len()];
            for &d in &l.meta.done {
                if let Some(x) = usize::try_from(d).ok().and_then(|d| done.get_mut(d)) {
                    *x = true;
                }
            }
            // Records from before the queue clock: their age by the wall
            // clock (none if it reads earlier than the arrival).
            let queued = match l.meta.queued_ms {
                Some(q) => Duration::from_millis(q),
                None => {
                    qnow.saturating_sub(Duration::from_secs(wall.saturating_sub(l.meta.arrival)))
                }
            };
            let hold = l.hold;
            let delay_warned = l.meta.delay_warned;
            state.entries.insert(
                l.meta.id,
                Entry {
                    meta: Arc::new(l.meta),
                    done,
                    loc: l.loc,
                    body_start: l.body_start,
                    body_len: l.body_len,
                    record_len: l.record_len,
                    state_seg: l.state_seg,
                    hold_seg: l.hold_seg,
                    attempts: 0,
                    next_attempt: now,
                    in_flight: false,
                    hold,
                    unreported: Vec::new(),
                    last_error: None,
                    queued,
                    delay_warned,
                },
            );
        }
        max_id = max_id.max(store.max_id_seen());
        // Ids grow with time so that they stay unique across restarts even
        // when the queue was empty; never below what the store has seen
        // (at most MAX_ID: recovery skips records with larger ones).
        let next_id = max_id.saturating_add(1).max(wall << 20);
        let (tx, rx) = mpsc::channel();
        let (kick_tx, kick_rx) = smol::channel::bounded(1);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
            tx: Mutex::new(Some(tx)),
            kick_tx,
            kick_rx,
            next_id: AtomicU64::new(next_id),
            limits,
            writer: Mutex::new(None),
            storage,
            clock,
            qclock,
            receiving: Arc::new(AtomicUsize::new(0)),
        });
        let q = Queue {
            shared: shared.clone(),
        };
        let writer_q = q.clone();
        let handle = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || store.run(rx, writer_q))?;
        *lock(&shared.writer) = Some(handle);
        if recovered.messages > 0 {
            q.kick();
        }
        Ok((q, recovered))
    }

    /// Queue time now.
    fn qnow(&self) -> Duration {
        self.shared.qclock.at(self.shared.clock.mono())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    fn send(&self, req: Request) -> Result<(), QueueError> {
        match lock(&self.shared.tx).as_ref() {
            Some(tx) => tx.send(req).map_err(|_| QueueError::Closed),
            None => Err(QueueError::Closed),
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Is there room for a message of about `size` octets? Called at MAIL
    /// (with SIZE=) and again at commit.
    pub fn check_room(&self, size: u64) -> Result<(), QueueError> {
        let st = self.state();
        if st.closed {
            return Err(QueueError::Closed);
        }
        let l = &self.shared.limits;
        if st.entries.len() >= l.max_messages || st.bytes.saturating_add(size) > l.max_bytes {
            return Err(QueueError::Full);
        }
        Ok(())
    }

    /// Start receiving a message for `envelope` (at least one recipient);
    /// the id is assigned now (it goes into the Received header before the
    /// body).
    pub fn begin(&self, envelope: Envelope) -> SpoolWriter {
        self.begin_inner(envelope, false)
    }

    fn begin_inner(&self, envelope: Envelope, internal: bool) -> SpoolWriter {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let meta = MessageMeta {
            id,
            arrival: self.shared.clock.wall(),
            queued_ms: Some(u64::try_from(self.qnow().as_millis()).unwrap_or(u64::MAX)),
            envelope: Arc::new(envelope),
            done: Vec::new(),
            hold: Hold::None,
            route: None,
            delay_warned: false,
        };
        let mut w = SpoolWriter::new(
            meta,
            store::tmp_dir(&self.shared.dir),
            internal,
            self.shared.storage.clone(),
        );
        if !internal {
            w.receiving = Some(self.transaction());
        }
        w
    }

    /// Count a session's open transaction (from MAIL on) until the guard
    /// is dropped, so a commit waits a moment for its message too: a
    /// small message spends less time in DATA than a commit waits, and
    /// sessions counted only from DATA were rarely caught.
    pub fn transaction(&self) -> Transaction {
        self.shared.receiving.fetch_add(1, Ordering::SeqCst);
        Transaction(self.shared.receiving.clone())
    }

    /// Make the message durable. Returns once it is on stable storage (the
    /// moment a server may say 250), or with the reason it is not.
    pub async fn commit(&self, mut w: SpoolWriter) -> Result<QueueId, QueueError> {
        w.stop_receiving();
        let (reply, rx) = smol::channel::bounded(1);
        self.send(Request::Commit { w, reply })?;
        match rx.recv().await {
            Ok(r) => r.map(QueueId),
            Err(_) => Err(QueueError::Closed),
        }
    }

    fn kick(&self) {
        let _ = self.shared.kick_tx.try_send(());
    }

    /// Wait until a message may have become due (new mail, a flush), or
    /// `until`, whichever is first.
    pub async fn wait(&self, until: Option<Instant>) {
        let kicked = self.shared.kick_rx.recv();
        match until {
            Some(t) => {
                let timer = async {
                    smol::Timer::at(t).await;
                };
                smol::future::or(async { kicked.await.unwrap_or(()) }, timer).await
            }
            None => kicked.await.unwrap_or(()),
        }
    }

    /// Take up to `max` due messages (marking them in flight) and say when
    /// the next one not taken is due.
    pub fn take_due(&self, now: Instant, max: usize) -> (Vec<Job>, Option<Instant>) {
        let (jobs, next) = self.take_due_with(now, max, |_| Some(()));
        (jobs.into_iter().map(|(j, ())| j).collect(), next)
    }

    /// Like [`Queue::take_due`], but a due message is taken (and is in
    /// flight) only if `admit` returns something for it — delivery asks for
    /// its routes' connection slots here, so that a message waiting for a
    /// slot stays queued: it can be deleted or held, and it keeps no worker.
    /// `admit` runs under the queue's lock: it must not block. A refused
    /// message does not count for the returned wake-up time; the attempt
    /// that frees what it waits for ends with [`Queue::finish`], which wakes
    /// [`Queue::wait`].
    pub fn take_due_with<T>(
        &self,
        now: Instant,
        max: usize,
        mut admit: impl FnMut(&Job) -> Option<T>,
    ) -> (Vec<(Job, T)>, Option<Instant>) {
        let qnow = self.qnow();
        let mut st = self.state();
        let mut jobs = Vec::new();
        let mut next: Option<Instant> = None;
        let mut due: Vec<(&u64, Instant)> = st
            .entries
            .iter()
            .filter(|(_, e)| !e.in_flight && e.hold == Hold::None && e.pending() > 0)
            .map(|(id, e)| (id, e.next_attempt))
            .collect();
        due.sort_by_key(|(id, t)| (*t, **id));
        let ids: Vec<u64> = due.iter().map(|(id, _)| **id).collect();
        for id in ids {
            let Some(e) = st.entries.get_mut(&id) else {
                continue;
            };
            if e.next_attempt > now || jobs.len() >= max {
                next = Some(next.map_or(e.next_attempt, |n: Instant| n.min(e.next_attempt)));
                continue;
            }
            let path = e.loc.path().to_path_buf();
            let job = Job {
                id: QueueId(id),
                envelope: e.meta.envelope.clone(),
                pending: pending_indices(&e.done).collect(),
                attempts: e.attempts,
                age: e.age(qnow),
                arrival: e.meta.arrival,
                body_len: e.body_len,
                route: e.meta.route.clone(),
                delay_warned: e.delay_warned,
                path,
                body_start: e.body_start,
            };
            if let Some(t) = admit(&job) {
                e.in_flight = true;
                jobs.push((job, t));
            }
        }
        (jobs, next)
    }

    /// Open a message body for reading.
    pub fn open_body(&self, job: &Job) -> std::io::Result<BodyReader> {
        self.open_at(&job.path, job.body_start, job.body_len)
    }

    /// The `len` octets at `start` of the queue file at `path`.
    fn open_at(&self, path: &Path, start: u64, len: u64) -> std::io::Result<BodyReader> {
        let file = self.shared.storage.open(path, OpenMode::Read)?;
        BodyReader::new(file, start, len)
    }

    /// Record the outcome of an attempt. Finished recipients are persisted;
    /// the others are rescheduled, or failed if the message is too old.
    /// `report` is a failure report to queue in the same durable step as the
    /// failure it reports (see [`Queue::begin_report`]).
    pub fn finish(
        &self,
        job: &Job,
        outcomes: &[(RcptIndex, RcptOutcome)],
        report: Option<SpoolWriter>,
    ) {
        self.finish_inner(job, outcomes, report, None)
    }

    /// Like [`Queue::finish`], for a job some of whose recipients were not
    /// attempted at all (outbound rate shaping held them back): those are
    /// simply absent from `outcomes` and become due again at `held_until`.
    /// The attempt counts only if `outcomes` is not empty.
    pub fn finish_held(
        &self,
        job: &Job,
        outcomes: &[(RcptIndex, RcptOutcome)],
        report: Option<SpoolWriter>,
        held_until: Instant,
    ) {
        self.finish_inner(job, outcomes, report, Some(held_until))
    }

    fn finish_inner(
        &self,
        job: &Job,
        outcomes: &[(RcptIndex, RcptOutcome)],
        report: Option<SpoolWriter>,
        held_until: Option<Instant>,
    ) {
        let now = Instant::now();
        let mut newly_done = Vec::new();
        {
            let mut st = self.state();
            let Some(e) = st.entries.get_mut(&job.id.0) else {
                return;
            };
            e.in_flight = false;
            if held_until.is_none() || !outcomes.is_empty() {
                e.attempts += 1;
            }
            let mut deferred = None;
            for (i, o) in outcomes {
                let Some(slot) = usize::try_from(*i).ok().and_then(|i| e.done.get_mut(i)) else {
                    continue;
                };
                match o {
                    RcptOutcome::Delivered | RcptOutcome::Failed(_) => {
                        if !*slot {
                            *slot = true;
                            newly_done.push(*i);
                        }
                    }
                    RcptOutcome::Deferred(why) => deferred = Some(why.clone()),
                }
            }
            let backoff = now + self.shared.limits.retry_after(e.attempts);
            e.next_attempt = match held_until {
                None => backoff,
                Some(t) if deferred.is_some() => t.min(backoff),
                Some(t) => t,
            };
            if let Some(why) = deferred {
                e.last_error = Some(why);
            }
            if report.is_some() {
                e.unreported.extend_from_slice(&newly_done);
            }
            if report.as_ref().is_some_and(|r| r.delay_warning) {
                e.delay_warned = true;
            }
        }
        if !newly_done.is_empty() || report.is_some() {
            let _ = self.send(Request::Outcome {
                id: job.id.0,
                newly_done,
                delete: false,
                report,
                ack: None,
            });
        }
        // A finished message frees room; a rescheduled one changes the wake-up time.
        self.kick();
    }

    /// Has this job outlived `max_age`? (Delivery then fails what is still
    /// pending instead of deferring it.)
    pub fn expired(&self, job: &Job) -> bool {
        job.age >= self.shared.limits.max_age
    }

    /// How long a message may wait before it fails (`max_age`).
    pub fn max_age(&self) -> Duration {
        self.shared.limits.max_age
    }

    /// Start a failure report: an internal message from `<>` that the
    /// queue's size limits never refuse (losing a report is worse than
    /// exceeding a limit by one small message).
    pub fn begin_report(&self, to: Address) -> SpoolWriter {
        // A UTF-8 recipient (and the To: field naming it) needs SMTPUTF8
        // from every hop (RFC 6531); a strict one refuses it otherwise.
        let envelope = Envelope {
            from: ReversePath::Null,
            smtputf8: to.is_utf8(),
            rcpts: vec![Recipient::new(to)],
            body: BodyType::EightBitMime,
            ..Envelope::default()
        };
        self.begin_inner(envelope, true)
    }

    /// Start a message postern writes itself (a storm digest): like a
    /// failure report, never refused by the queue's size limits (it stands
    /// in for the copies it sums up, which leave the queue after it).
    pub fn begin_internal(&self, envelope: Envelope) -> SpoolWriter {
        self.begin_inner(envelope, true)
    }

    /// Make every queued message due now.
    pub fn flush(&self) {
        let now = Instant::now();
        for e in self.state().entries.values_mut() {
            e.next_attempt = now;
        }
        self.kick();
    }

    /// Number of messages and their total bytes.
    pub fn usage(&self) -> (usize, u64) {
        let st = self.state();
        (st.entries.len(), st.bytes)
    }

    /// How full the queue is; `waiting[i]` counts the messages with a
    /// pending recipient for which `route_of` says `Some(i)` (`i <
    /// routes`). `route_of` runs under the queue's lock: it must be quick.
    pub fn depth(&self, routes: usize, route_of: impl Fn(&Address) -> Option<usize>) -> Depth {
        let qnow = self.qnow();
        let st = self.state();
        let mut d = Depth {
            messages: st.entries.len(),
            bytes: st.bytes,
            waiting: vec![0; routes],
            ..Depth::default()
        };
        let mut seen = vec![false; routes];
        for (id, e) in &st.entries {
            let age = e.age(qnow);
            if d.oldest.is_none_or(|(oid, oage, _)| {
                (age, std::cmp::Reverse(*id)) > (oage, std::cmp::Reverse(oid.0))
            }) {
                d.oldest = Some((QueueId(*id), age, e.meta.arrival));
            }
            if e.hold != Hold::None {
                d.held += 1;
            } else if e.attempts > 0 && e.pending() > 0 {
                d.deferred += 1;
            }
            seen.iter_mut().for_each(|s| *s = false);
            for (r, done) in e.meta.envelope.rcpts.iter().zip(&e.done) {
                if !*done
                    && let Some(i) = route_of(&r.addr)
                    && let Some(s) = seen.get_mut(i)
                {
                    *s = true;
                }
            }
            for (w, s) in d.waiting.iter_mut().zip(&seen) {
                if *s {
                    *w += 1;
                }
            }
        }
        d
    }

    /// Every queued message, oldest first.
    pub fn list(&self) -> Vec<Summary> {
        let now = self.shared.clock.mono();
        let st = self.state();
        let mut v: Vec<Summary> = st
            .entries
            .iter()
            .map(|(id, e)| summarize(*id, e, now, self.shared.qclock.at(now)))
            .collect();
        v.sort_by_key(|s| (std::cmp::Reverse(s.age), s.id));
        v
    }

    /// One queued message.
    pub fn show(&self, id: QueueId) -> Result<Summary, OpError> {
        let st = self.state();
        let e = st.entries.get(&id.0).ok_or(OpError::NotFound(id))?;
        let now = self.shared.clock.mono();
        Ok(summarize(id.0, e, now, self.shared.qclock.at(now)))
    }

    /// Keep a message out of delivery until [`Queue::release`]. Durable: a
    /// note record, synced before this returns, so a restart keeps it
    /// held. Blocks on the writer: call it off the event loop.
    pub fn hold(&self, id: QueueId) -> Result<(), OpError> {
        one(id, self.set_held_many(&[id], true))
    }

    /// Undo [`Queue::hold`]; the message is due at once. Durable as a hold.
    pub fn release(&self, id: QueueId) -> Result<(), OpError> {
        one(id, self.set_held_many(&[id], false))
    }

    /// Hold (or release) several messages: every change is handed to the
    /// writer first and then waited for, so they share syncs. A change
    /// that cannot be made durable is undone and reported.
    pub fn set_held_many(
        &self,
        ids: &[QueueId],
        held: bool,
    ) -> Vec<(QueueId, Result<(), OpError>)> {
        let mut waiting = Vec::with_capacity(ids.len());
        for &id in ids {
            let was = {
                let mut st = self.state();
                match st.entries.get_mut(&id.0) {
                    None => Err(OpError::NotFound(id)),
                    Some(e) => {
                        let was = e.hold;
                        if (was != Hold::None) != held {
                            e.hold = if held { Hold::Operator } else { Hold::None };
                        }
                        if !held {
                            e.next_attempt = Instant::now();
                        }
                        Ok(was)
                    }
                }
            };
            let sent = was.and_then(|was| {
                if (was != Hold::None) == held {
                    // Nothing to record: memory and disk already agree.
                    return Ok(None);
                }
                let (tx, rx) = mpsc::channel();
                self.send(Request::Note {
                    id: id.0,
                    held,
                    ack: tx,
                })
                .map_err(|_| OpError::Closed)?;
                Ok(Some((rx, was)))
            });
            waiting.push((id, sent));
        }
        let out = waiting
            .into_iter()
            .map(|(id, sent)| {
                let r = sent.and_then(|w| {
                    let Some((rx, was)) = w else { return Ok(()) };
                    let r = rx
                        .recv()
                        .map_err(|_| OpError::Closed)
                        .and_then(|r| r.map_err(|e| OpError::Failed(e.to_string())));
                    if r.is_err()
                        && let Some(e) = self.state().entries.get_mut(&id.0)
                    {
                        e.hold = was;
                    }
                    r
                });
                (id, r)
            })
            .collect();
        if !held {
            self.kick();
        }
        out
    }

    /// Drop a message without delivering it and without a report. Durable
    /// like a delivery: a "done" record, synced before this returns.
    pub fn delete(&self, id: QueueId) -> Result<(), OpError> {
        one(id, self.delete_many(&[id]))
    }

    /// [`Queue::delete`] for several messages: every change is handed to
    /// the writer first and then waited for, so they share syncs (group
    /// commit). Each id gets its own result.
    pub fn delete_many(&self, ids: &[QueueId]) -> Vec<(QueueId, Result<(), OpError>)> {
        let mut waiting = Vec::with_capacity(ids.len());
        for &id in ids {
            let newly_done = {
                let mut st = self.state();
                match st.entries.get_mut(&id.0) {
                    None => Err(OpError::NotFound(id)),
                    Some(e) if e.in_flight => Err(OpError::InFlight(id)),
                    Some(e) => {
                        let v: Vec<RcptIndex> = pending_indices(&e.done).collect();
                        e.done.iter_mut().for_each(|d| *d = true);
                        Ok(v)
                    }
                }
            };
            let sent = newly_done.and_then(|newly_done| {
                let (tx, rx) = mpsc::channel();
                self.send(Request::Outcome {
                    id: id.0,
                    newly_done,
                    delete: true,
                    report: None,
                    ack: Some(tx),
                })
                .map_err(|_| OpError::Closed)?;
                Ok(rx)
            });
            waiting.push((id, sent));
        }
        let out = waiting
            .into_iter()
            .map(|(id, sent)| {
                let r = sent.and_then(|rx| {
                    rx.recv()
                        .map_err(|_| OpError::Closed)?
                        .map_err(|e| OpError::Failed(e.to_string()))
                });
                (id, r)
            })
            .collect();
        self.kick();
        out
    }

    /// Open the body of a queued message for reading (`queue show --body`).
    pub fn open_body_of(&self, id: QueueId) -> Result<BodyReader, OpError> {
        let (path, start, len) = {
            let st = self.state();
            let e = st.entries.get(&id.0).ok_or(OpError::NotFound(id))?;
            (e.loc.path().to_path_buf(), e.body_start, e.body_len)
        };
        self.open_at(&path, start, len)
            .map_err(|e| OpError::Failed(e.to_string()))
    }

    /// Every recipient of `id` is finished (operator delete); reports
    /// still on their way no longer matter.
    fn finish_all(&self, id: u64) {
        if let Some(e) = self.state().entries.get_mut(&id) {
            e.done.iter_mut().for_each(|d| *d = true);
            e.unreported.clear();
        }
    }

    /// The report covering these recipients is durable.
    fn reported(&self, id: u64, idx: &[RcptIndex]) {
        if let Some(e) = self.state().entries.get_mut(&id) {
            e.unreported.retain(|u| !idx.contains(u));
        }
    }

    /// A report could not be made durable: the recipients it covered are
    /// pending again (found failed again at the next attempt, reported then).
    /// A delay warning could not be queued: it is due again.
    fn undo_delay_warned(&self, id: u64) {
        if let Some(e) = self.state().entries.get_mut(&id) {
            e.delay_warned = false;
        }
    }

    fn undo_done(&self, id: u64, idx: &[RcptIndex]) {
        let mut st = self.state();
        if let Some(e) = st.entries.get_mut(&id) {
            e.unreported.retain(|u| !idx.contains(u));
            for i in idx {
                if let Some(d) = usize::try_from(*i).ok().and_then(|i| e.done.get_mut(i)) {
                    *d = false;
                }
            }
            e.next_attempt = Instant::now() + self.shared.limits.retry_after(e.attempts);
        }
    }

    /// Stop accepting, sync what is pending and stop the writer thread.
    pub fn close(&self) {
        self.state().closed = true;
        if let Some(tx) = lock(&self.shared.tx).take() {
            let _ = tx.send(Request::Shutdown);
        }
        if let Some(h) = lock(&self.shared.writer).take() {
            let _ = h.join();
        }
    }

    /// Wait until every record written so far is on stable storage (tests,
    /// shutdown).
    pub fn sync(&self) -> Result<(), QueueError> {
        let (tx, rx) = mpsc::channel();
        self.send(Request::Sync(tx))?;
        rx.recv().map_err(|_| QueueError::Closed)?
    }
}

/// Indices of the recipients not finished, by the done flags.
fn pending_indices(done: &[bool]) -> impl Iterator<Item = RcptIndex> + '_ {
    done.iter()
        .enumerate()
        .filter(|(_, d)| !**d)
        .filter_map(|(i, _)| RcptIndex::try_from(i).ok())
}

fn summarize(id: u64, e: &Entry, now: Instant, qnow: Duration) -> Summary {
    let env = &e.meta.envelope;
    Summary {
        id: QueueId(id),
        from: env.from.to_string(),
        pending: env
            .rcpts
            .iter()
            .zip(&e.done)
            .filter(|(_, d)| !**d)
            .map(|(r, _)| r.addr.to_string())
            .collect(),
        size: e.body_len,
        age: e.age(qnow),
        attempts: e.attempts,
        next_in: e.next_attempt.saturating_duration_since(now),
        last_error: e.last_error.clone(),
        rcpts: env
            .rcpts
            .iter()
            .map(|r| r.addr.to_string())
            .zip(e.done.iter().copied())
            .collect(),
        arrival: e.meta.arrival,
        held: e.hold != Hold::None,
        hold: e.hold,
        in_flight: e.in_flight,
    }
}

/// Reads a message body in chunks (blocking; call from a blocking thread).
#[derive(Debug)]
pub struct BodyReader {
    file: Box<dyn StorageFile>,
    pos: u64,
    end: u64,
}

impl BodyReader {
    /// The `len` octets at `start` of `file`: refused when they would end
    /// past the largest offset there is (a damaged record's numbers).
    fn new(file: Box<dyn StorageFile>, start: u64, len: u64) -> std::io::Result<BodyReader> {
        let end = start.checked_add(len).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("message body at offset {start}, {len} octets long, ends past any file"),
            )
        })?;
        Ok(BodyReader {
            file,
            pos: start,
            end,
        })
    }

    /// Fill `buf` with up to `max` more body bytes; an empty `buf` means the end.
    pub fn read_chunk(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<()> {
        buf.clear();
        let left = self.end.saturating_sub(self.pos);
        // At most `max`, so it fits a usize.
        let n = usize::try_from(left.min(max as u64)).unwrap_or(max);
        if n > 0 {
            self.file.read_append_at(buf, n, self.pos)?;
        }
        self.pos = self.pos.saturating_add(n as u64);
        Ok(())
    }
}

/// The one result of a `*_many` call made for one id.
fn one(id: QueueId, mut v: Vec<(QueueId, Result<(), OpError>)>) -> Result<(), OpError> {
    v.pop().map_or(Err(OpError::NotFound(id)), |(_, r)| r)
}

/// Lock a mutex, shrugging off poisoning: every critical section here leaves
/// the state consistent at each step, so a panic elsewhere must not wedge it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
