//! Alert-storm suppression in the running daemon: [`Storms`] runs
//! `filter::storm`'s table against the queue.
//!
//! - At the end of data the handler asks [`Storms::note`] about each
//!   message the rules let through. The first `pass` copies of an alert in
//!   its window go as they came; every later copy is queued held back
//!   (`Hold::Storm`: stored, not delivered, not lost), its id given back
//!   through [`Storms::held`] and logged, one line a copy.
//! - [`Storms::run`] ends windows on time. A storm (more than `threshold`
//!   copies) gets one digest, queued like any message (routes, retries and
//!   each route's `max_messages_per_minute` apply), and only then are its
//!   held copies removed from the queue; a window that stayed at or below
//!   `threshold` releases them.
//! - The table is saved beside the queue's state (`SideFile::Storm`,
//!   replaced atomically) when it changed: every `save_interval`, when
//!   windows end, and at stop; not for every message, to spare the SD
//!   card. At start it is read back and squared with the queue: held
//!   copies it does not know (queued after the last save, before a crash)
//!   are read again and counted into their windows; ids it knows that are
//!   no longer held (released or deleted meanwhile) are forgotten.
//!
//! Uses `filter` (the table, the digest), `queue`, `config` and `smtp`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::StormConfig;
use crate::filter::storm::{Copy, Decision, Ended, Kept, Table, Window, digest_message};
use crate::filter::{Scan, Scanner};
use crate::queue::{Clock, Hold, OpError, Queue, QueueId, SideFile};
use crate::smtp::{Address, BodyType, Envelope, Recipient, ReversePath, format_rfc3339};

/// The longest the run loop sleeps without looking: a wall clock that
/// jumps (a board without a real-time clock) is noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Octets of a held copy read again at start to find its key: the largest
/// header section and the digest's excerpt after it.
const REREAD: usize = crate::smtp::header::MAX_HEADER_SECTION + 4096;

/// A copy [`Storms::note`] decided to hold: hand it back with its queue
/// id ([`Storms::held`]) or, if the queue refused it, to
/// [`Storms::unnote`].
#[derive(Debug)]
pub struct Ticket {
    key: String,
    sender: String,
    count: u64,
    storm: bool,
    began: bool,
}

/// Storm suppression's state, shared by the sessions and the run loop;
/// kept across reloads.
#[derive(Debug)]
pub struct Storms {
    queue: Queue,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    wake_tx: smol::channel::Sender<()>,
    wake_rx: smol::channel::Receiver<()>,
}

#[derive(Debug)]
struct Inner {
    cfg: Option<StormConfig>,
    /// `None` while suppression is off.
    table: Option<Table>,
    hostname: String,
    /// `pass` of the config in force last (for digests of windows ended
    /// by turning suppression off).
    pass: u64,
    /// Changed since the last save.
    dirty: bool,
    /// The last save (unix seconds).
    saved_at: u64,
    /// Windows ended outside the run loop (pushed out of a full table, a
    /// reload), for it to settle.
    ending: Vec<Ended>,
    /// Held copies whose window ended before they were queued: released.
    strays: Vec<u64>,
}

impl Inner {
    /// When changed counts are next due to be saved (unix seconds).
    fn save_due_at(&self) -> u64 {
        let every = self
            .cfg
            .as_ref()
            .map_or(0, |c| c.save_interval.value.as_secs());
        self.saved_at.saturating_add(every)
    }
}

impl Storms {
    /// Suppression as `cfg` says (off when `None`), on `queue`: reads the
    /// saved table back and squares it with the queue. Blocking (it reads
    /// the queue directory): call it at start, before serving.
    pub fn open(
        cfg: Option<&StormConfig>,
        queue: Queue,
        hostname: &str,
        clock: Arc<dyn Clock>,
    ) -> Storms {
        let (wake_tx, wake_rx) = smol::channel::bounded(1);
        let now = clock.wall();
        let storms = Storms {
            queue,
            clock,
            inner: Mutex::new(Inner {
                cfg: cfg.cloned(),
                table: None,
                hostname: hostname.to_string(),
                pass: cfg.map_or(0, |c| u64::try_from(c.pass).unwrap_or(u64::MAX)),
                dirty: false,
                saved_at: now,
                ending: Vec::new(),
                strays: Vec::new(),
            }),
            wake_tx,
            wake_rx,
        };
        let mut held: Vec<crate::queue::Summary> = storms
            .queue
            .list()
            .into_iter()
            .filter(|s| s.held && s.hold == Hold::Storm)
            .collect();
        held.sort_by_key(|s| s.id);
        let Some(cfg) = cfg else {
            // Off: nothing would ever end their windows.
            if !held.is_empty() {
                tracing::info!(
                    copies = held.len(),
                    "storm: suppression is off ([storm] not configured); copies it held are released"
                );
            }
            for s in &held {
                let _ = storms.queue.release(s.id);
            }
            if let Err(e) = storms.queue.remove_side(SideFile::Storm) {
                tracing::warn!(error = %e, "storm: cannot remove the saved counts");
            }
            return storms;
        };
        let mut table = Table::new(cfg);
        match storms.queue.load_side(SideFile::Storm) {
            Ok(Some(bytes)) => {
                if let Err(e) = table.load(&bytes) {
                    tracing::warn!(error = %e, "storm: saved counts unreadable; counting afresh (held copies are counted again from the queue)");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "storm: cannot read the saved counts; counting afresh (held copies are counted again from the queue)");
            }
        }
        let queued: HashSet<u64> = held.iter().map(|s| s.id.0).collect();
        table.retain_held(|id| queued.contains(&id));
        let known: HashSet<u64> = table.held_ids().collect();
        let mut ended = Vec::new();
        let mut adopted = 0usize;
        for s in held.iter().filter(|s| !known.contains(&s.id.0)) {
            let id = s.id;
            match reread(&storms.queue, id) {
                Ok(scan) => {
                    let key = table.key_of(&s.from, scan.subject.as_deref());
                    let rcpts: Vec<String> = s.rcpts.iter().map(|(r, _)| r.clone()).collect();
                    let copy = Copy {
                        sender: &s.from,
                        rcpts: &rcpts,
                        route: None,
                        scan: &scan,
                        now: s.arrival,
                    };
                    table.adopt(&key, copy, id.0, &mut ended);
                    adopted += 1;
                }
                Err(e) => {
                    tracing::warn!(id = %id, error = %e, "storm: held copy unreadable; released");
                    let _ = storms.queue.release(id);
                }
            }
        }
        tracing::info!(
            windows = table.len(),
            held = table.held_ids().count(),
            adopted,
            "storm: suppression on; counts restored"
        );
        {
            let mut g = storms.lock();
            g.table = Some(table);
            g.ending = ended;
            g.dirty = adopted > 0;
        }
        storms
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        let _ = self.wake_tx.try_send(());
    }

    /// Is suppression on? (The listener then reads every message's
    /// Subject.)
    pub fn enabled(&self) -> bool {
        self.lock().table.is_some()
    }

    /// A reload: take `cfg` (off when `None`) and `hostname`. Open windows
    /// are kept; turning suppression off ends them now (digests for
    /// storms, releases for the rest).
    pub fn reconfigure(&self, cfg: Option<&StormConfig>, hostname: &str) {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.hostname = hostname.to_string();
        match (cfg, inner.table.as_mut()) {
            (None, Some(t)) => {
                let all = t.drain();
                if !all.is_empty() {
                    tracing::info!(
                        windows = all.len(),
                        "storm: suppression turned off; open windows end now"
                    );
                }
                inner.ending.extend(all);
                inner.table = None;
            }
            (None, None) => {}
            (Some(c), Some(t)) => {
                let gone = t.reconfigure(c);
                inner.ending.extend(gone);
            }
            (Some(c), None) => {
                tracing::info!("storm: suppression turned on");
                inner.table = Some(Table::new(c));
            }
        }
        if let Some(c) = cfg {
            inner.pass = u64::try_from(c.pass).unwrap_or(u64::MAX);
        }
        inner.cfg = cfg.cloned();
        inner.dirty = true;
        drop(g);
        self.wake();
    }

    /// Count a message the rules let through, with envelope `env` (after
    /// any redirect), what the scanner found, and the named route it goes
    /// by. `Some` when it is to be queued held back (`Hold::Storm`).
    pub fn note(&self, env: &Envelope, scan: &Scan, route: Option<&str>) -> Option<Ticket> {
        let now = self.clock.wall();
        let mut g = self.lock();
        let inner = &mut *g;
        let (Some(cfg), Some(table)) = (&inner.cfg, inner.table.as_mut()) else {
            return None;
        };
        let sender = env.from.address().map_or("", Address::as_str);
        if !cfg.senders.is_empty() && !cfg.senders.iter().any(|p| p.matches(shown(sender))) {
            return None;
        }
        let key = table.key_of(sender, scan.subject.as_deref());
        let rcpts: Vec<String> = env.rcpts.iter().map(|r| r.addr.to_string()).collect();
        let copy = Copy {
            sender,
            rcpts: &rcpts,
            route,
            scan,
            now,
        };
        let mut ended = Vec::new();
        let opened = table.get(&key).is_none();
        let decision = table.note(&key, copy, &mut ended);
        // The run loop sleeps until the earliest end or save it knew of:
        // a new window, a first change or an ended window moves that.
        let woke = opened || !inner.dirty || !ended.is_empty();
        inner.dirty = true;
        inner.ending.extend(ended);
        drop(g);
        if woke {
            self.wake();
        }
        match decision {
            Decision::Pass => None,
            Decision::Hold {
                count,
                storm,
                began,
            } => Some(Ticket {
                key,
                sender: shown(sender).to_string(),
                count,
                storm,
                began,
            }),
        }
    }

    /// The copy `t` is queued (held) as `id`: one log line, the
    /// suppression's record.
    pub fn held(&self, t: Ticket, id: QueueId) {
        let mut g = self.lock();
        let (kept, end, threshold) = match g.table.as_mut() {
            Some(table) => (
                table.held(&t.key, id.0),
                table.end_of(&t.key),
                table.threshold(),
            ),
            None => (Kept::Gone, None, 0),
        };
        g.dirty = true;
        if kept == Kept::Gone {
            g.strays.push(id.0);
        }
        drop(g);
        if kept != Kept::Yes {
            self.wake();
        }
        let alert = alert_words(&t.key);
        if t.began {
            tracing::warn!(from = %t.sender, alert = %alert, count = t.count, threshold, "storm: alert over threshold; its copies are held back and summed up in one digest when the window ends");
        }
        let until = end.map_or_else(|| "-".to_string(), format_rfc3339);
        tracing::info!(id = %id, from = %t.sender, alert = %alert, count = t.count, storm = t.storm, until = %until, "storm: copy held back (suppressed)");
        if kept == Kept::Gone {
            tracing::info!(id = %id, "storm: its window ended as it was queued; released");
        }
    }

    /// The copy `t` was not queued after all (the client is told to try
    /// again, and is counted then).
    pub fn unnote(&self, t: Ticket) {
        if let Some(table) = self.lock().table.as_mut() {
            table.unnote(&t.key);
        }
    }

    /// End windows on time and save the counts, until `stop` is closed
    /// (looked at between rounds, so a digest and the removal of what it
    /// sums up are never cut apart by a stop).
    pub async fn run(self: Arc<Self>, stop: smol::channel::Receiver<()>) {
        loop {
            let wait = self.next_wait();
            let wake = self.wake_rx.clone();
            let stopped = smol::future::or(
                async {
                    let _ = stop.recv().await;
                    true
                },
                smol::future::or(
                    async {
                        let _ = wake.recv().await;
                        false
                    },
                    async {
                        smol::Timer::after(wait).await;
                        false
                    },
                ),
            )
            .await;
            if stopped {
                return;
            }
            self.tick().await;
        }
    }

    /// How long the run loop may sleep.
    fn next_wait(&self) -> Duration {
        let now = self.clock.wall();
        let g = self.lock();
        if !g.ending.is_empty() || !g.strays.is_empty() {
            return Duration::ZERO;
        }
        let mut at = g.table.as_ref().and_then(Table::next_end);
        if g.dirty {
            let due = g.save_due_at();
            at = Some(at.map_or(due, |a| a.min(due)));
        }
        at.map_or(MAX_SLEEP, |t| {
            Duration::from_secs(t.saturating_sub(now)).min(MAX_SLEEP)
        })
    }

    /// One round: end the windows whose time is up, settle them, release
    /// strays, and save when it is time to.
    pub async fn tick(&self) {
        let now = self.clock.wall();
        let (ended, strays, hostname, pass, save_due) = {
            let mut g = self.lock();
            let mut ended = std::mem::take(&mut g.ending);
            if let Some(t) = g.table.as_mut() {
                ended.extend(t.expire(now));
            }
            let strays = std::mem::take(&mut g.strays);
            // A clock that went back counts as time to save too.
            let save_due = now >= g.save_due_at() || now < g.saved_at;
            (ended, strays, g.hostname.clone(), g.pass, save_due)
        };
        let settled = !ended.is_empty() || !strays.is_empty();
        for e in ended {
            self.settle(e, &hostname, pass, now).await;
        }
        if !strays.is_empty() {
            self.release(strays).await;
        }
        let dirty = {
            let mut g = self.lock();
            g.dirty |= settled;
            g.dirty
        };
        if dirty && (settled || save_due) {
            self.save().await;
        }
    }

    /// What an ended window leaves: a storm's digest then its copies
    /// removed; otherwise its copies released.
    async fn settle(&self, e: Ended, hostname: &str, pass: u64, now: u64) {
        let w = &e.window;
        let alert = alert_words(&e.key);
        let (first, last) = (format_rfc3339(w.first), format_rfc3339(w.last));
        if !w.storm {
            let ids = e.release().to_vec();
            if !ids.is_empty() {
                tracing::info!(from = %shown(&w.sender), alert = %alert, count = w.count, released = ids.len(), first = %first, last = %last, "storm: window ended at or below threshold; held copies released");
            }
            self.release(ids).await;
            return;
        }
        // Only what is still held goes: the operator may have released or
        // deleted a copy meanwhile.
        let ids: Vec<QueueId> = e
            .summed_up()
            .iter()
            .map(|id| QueueId(*id))
            .filter(|id| {
                self.queue
                    .show(*id)
                    .is_ok_and(|s| s.held && s.hold == Hold::Storm)
            })
            .collect();
        match self.queue_digest(w, hostname, pass, now).await {
            Ok(id) => {
                tracing::info!(id = %id, from = %shown(&w.sender), alert = %alert, count = w.count, first = %first, last = %last, removed = ids.len(), "storm: window ended; digest queued, held copies removed");
                let q = self.queue.clone();
                let out = smol::unblock(move || q.delete_many(&ids)).await;
                for (id, r) in out {
                    match r {
                        Ok(()) | Err(OpError::NotFound(_)) => {}
                        Err(e) => {
                            tracing::warn!(id = %id, error = %e, "storm: held copy not removed; remove it with `postern queue delete`");
                        }
                    }
                }
            }
            Err(why) => {
                tracing::error!(from = %shown(&w.sender), alert = %alert, count = w.count, error = %why, "storm: digest could not be queued; the held copies are released instead (nothing is lost)");
                self.release(ids.into_iter().map(|i| i.0).collect()).await;
            }
        }
    }

    /// Queue the digest of storm window `w`.
    async fn queue_digest(
        &self,
        w: &Window,
        hostname: &str,
        pass: u64,
        now: u64,
    ) -> Result<QueueId, String> {
        let rcpts: Vec<Recipient> = w
            .rcpts
            .iter()
            .filter_map(|r| Address::parse(r).ok())
            .map(Recipient::new)
            .collect();
        if rcpts.is_empty() {
            return Err("the alert's recipients cannot be read back".into());
        }
        let from = match Address::parse(&w.sender) {
            Ok(a) if !w.sender.is_empty() => ReversePath::Path(a),
            _ => ReversePath::Null,
        };
        let smtputf8 =
            from.address().is_some_and(Address::is_utf8) || rcpts.iter().any(|r| r.addr.is_utf8());
        let mut envelope = Envelope {
            from,
            smtputf8,
            body: BodyType::EightBitMime,
            ..Envelope::default()
        };
        envelope.add_rcpts(rcpts);
        let mut writer = self.queue.begin_internal(envelope);
        let id = QueueId(writer.id());
        let text = digest_message(w, hostname, pass, &id.to_string(), now);
        writer.write(&text).map_err(|e| e.to_string())?;
        if w.route.is_some() {
            writer
                .set_disposition(None, Hold::None, w.route.clone())
                .map_err(|e| e.to_string())?;
        }
        self.queue.commit(writer).await.map_err(|e| e.to_string())
    }

    async fn release(&self, ids: Vec<u64>) {
        if ids.is_empty() {
            return;
        }
        let q = self.queue.clone();
        smol::unblock(move || {
            for id in ids {
                match q.release(QueueId(id)) {
                    Ok(()) | Err(OpError::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(id = %QueueId(id), error = %e, "storm: held copy not released; release it with `postern queue release`");
                    }
                }
            }
        })
        .await;
    }

    /// What to write: the table, or nothing (remove the file) when off.
    fn snapshot(&self) -> Option<Vec<u8>> {
        let mut g = self.lock();
        g.dirty = false;
        g.saved_at = self.clock.wall();
        g.table.as_ref().map(Table::save)
    }

    async fn save(&self) {
        let bytes = self.snapshot();
        let q = self.queue.clone();
        let r = smol::unblock(move || write_side(&q, bytes)).await;
        self.saved(r);
    }

    fn saved(&self, r: Result<(), crate::queue::QueueError>) {
        if let Err(e) = r {
            self.lock().dirty = true;
            tracing::warn!(error = %e, "storm: counts not saved; tried again later");
        }
    }

    /// Save now if anything changed (at stop; blocking).
    pub fn save_blocking(&self) {
        if self.lock().dirty {
            let bytes = self.snapshot();
            self.saved(write_side(&self.queue, bytes));
        }
    }
}

/// Write the saved table, or remove it (`None`: suppression is off).
fn write_side(q: &Queue, bytes: Option<Vec<u8>>) -> Result<(), crate::queue::QueueError> {
    match bytes {
        Some(b) => q.save_side(SideFile::Storm, &b),
        None => q.remove_side(SideFile::Storm),
    }
}

/// The key as log words (sender and masked Subject on one line).
fn alert_words(key: &str) -> String {
    key.replace('\n', " ")
}

/// The sender as logs and `[storm] senders` patterns write it (`<>`).
fn shown(sender: &str) -> &str {
    if sender.is_empty() { "<>" } else { sender }
}

/// Read a held copy's header section and the start of its body again.
fn reread(queue: &Queue, id: QueueId) -> Result<Scan, OpError> {
    let mut body = queue.open_body_of(id)?;
    let mut scanner = Scanner::new(Vec::new());
    let mut buf = Vec::new();
    let mut read = 0usize;
    while read < REREAD {
        body.read_chunk(&mut buf, 16 * 1024)
            .map_err(|e| OpError::Failed(e.to_string()))?;
        if buf.is_empty() {
            break;
        }
        read = read.saturating_add(buf.len());
        scanner.feed(&buf);
    }
    scanner.finish();
    Ok(scanner.into_scan())
}

#[cfg(test)]
mod tests;
