//! Per-client bounds, so one flooding or misbehaving host cannot starve the
//! others: open connections per address, and fixed one-minute windows for
//! new connections, messages and recipients.
//!
//! The rates apply to strangers: a client in `allow_clients` is exempt from
//! the connection rate, and it and a client that logged in are exempt from
//! the message and recipient rates, unless `limit_trusted_clients` says
//! otherwise (a LAN device sending 300 alerts in a minute is an incident
//! being reported, and simple devices do not retry a 421). The cap on open
//! connections per address applies to everyone.
//!
//! Idle hoarding: every open connection is listed with whether it has sent
//! a command yet. When the global cap is reached, [`ClientLimits::evict_idle`]
//! picks the oldest connection that has said nothing from the address
//! holding the most connections, and tells it to close, so a new address is
//! served instead of waiting out `greeting_timeout`.
//!
//! The table is bounded ([`MAX_TRACKED`] addresses). When it is full, idle
//! entries (no open connection, window expired) are dropped; if none is
//! idle, a new address is refused at connect rather than growing the table
//! (this happens only when thousands of distinct addresses are connected at
//! once, far past `max_connections`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ServerConfig;

/// Most client addresses tracked at once.
pub const MAX_TRACKED: usize = 4096;
/// An address holding fewer connections than this is not hoarding: its
/// one idle connection is never closed for a newcomer (a device that has
/// just connected and is about to speak).
const HOARDING: usize = 2;
/// The rate window.
const WINDOW: Duration = Duration::from_secs(60);

/// A count in a fixed window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            start: now,
            count: 0,
        }
    }
    /// Count one more; false when that would pass `max`.
    fn hit(&mut self, now: Instant, max: u32) -> bool {
        if now.duration_since(self.start) >= WINDOW {
            *self = Window::new(now);
        }
        if self.count >= max {
            return false;
        }
        self.count += 1;
        true
    }
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.start) >= WINDOW
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    open: usize,
    connections: Window,
    messages: Window,
    recipients: Window,
}

/// Why a connection was refused at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections_per_client` open already.
    TooManyOpen,
    /// `max_connections_per_minute` passed.
    TooFast,
    /// The table is full of active clients.
    TableFull,
}

/// One open connection, for choosing which idle one to close.
#[derive(Debug)]
struct Open {
    id: u64,
    ip: IpAddr,
    since: Instant,
    /// Set by the session's handler at its first command line.
    spoke: Arc<AtomicBool>,
    /// Told (by being dropped) that it must close; `None` once told.
    close: Option<smol::channel::Sender<()>>,
}

/// The per-address counts and the open connections.
#[derive(Debug, Default)]
struct Table {
    clients: HashMap<IpAddr, Entry>,
    /// One per [`ClientSlot`]; as many as the connection cap allows.
    open: Vec<Open>,
    next_id: u64,
}

/// The limits in force and the per-address counts.
#[derive(Debug)]
pub struct ClientLimits {
    max_open: usize,
    conn_rate: u32,
    msg_rate: u32,
    rcpt_rate: u32,
    table: Mutex<Table>,
}

/// Held while a connection is open; gives its slot back on drop.
#[derive(Debug)]
pub struct ClientSlot {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
    id: u64,
    watch: IdleWatch,
}

/// What the session's handler holds to be closed while idle: it marks the
/// connection as having spoken, and hears when it must close.
#[derive(Debug, Clone)]
pub struct IdleWatch {
    spoke: Arc<AtomicBool>,
    close: smol::channel::Receiver<()>,
}

impl IdleWatch {
    /// The client sent a command: from now on it is not idle.
    pub fn spoke(&self) {
        self.spoke.store(true, Ordering::Relaxed);
    }
    /// Has it sent a command yet?
    pub fn has_spoken(&self) -> bool {
        self.spoke.load(Ordering::Relaxed)
    }
    /// Resolves when the connection was chosen to make room.
    pub async fn closing(&self) {
        let _ = self.close.recv().await;
    }
}

impl ClientSlot {
    /// The handle the session's handler watches.
    pub fn watch(&self) -> IdleWatch {
        self.watch.clone()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.limits.lock();
        if let Some(e) = t.clients.get_mut(&self.ip) {
            e.open = e.open.saturating_sub(1);
        }
        t.open.retain(|o| o.id != self.id);
    }
}

impl ClientLimits {
    /// From `[server]`.
    pub fn new(s: &ServerConfig) -> ClientLimits {
        ClientLimits {
            max_open: s.max_connections_per_client,
            conn_rate: s.max_connections_per_minute,
            msg_rate: s.max_messages_per_minute,
            rcpt_rate: s.max_recipients_per_minute,
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves plain counters behind;
        // they are still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection from `ip`: a slot, or why not. `rated`: the
    /// connection rate applies to it (not to a trusted client by default).
    pub fn connect(self: &Arc<Self>, ip: IpAddr, rated: bool) -> Result<ClientSlot, Refused> {
        let now = Instant::now();
        let mut guard = self.lock();
        let t = &mut *guard;
        if !t.clients.contains_key(&ip) && t.clients.len() >= MAX_TRACKED {
            t.clients.retain(|_, e| {
                e.open > 0
                    || !(e.connections.expired(now)
                        && e.messages.expired(now)
                        && e.recipients.expired(now))
            });
            if t.clients.len() >= MAX_TRACKED {
                return Err(Refused::TableFull);
            }
        }
        let e = t.clients.entry(ip).or_insert(Entry {
            open: 0,
            connections: Window::new(now),
            messages: Window::new(now),
            recipients: Window::new(now),
        });
        if e.open >= self.max_open {
            return Err(Refused::TooManyOpen);
        }
        if rated && !e.connections.hit(now, self.conn_rate) {
            return Err(Refused::TooFast);
        }
        e.open += 1;
        let id = t.next_id;
        t.next_id = t.next_id.wrapping_add(1);
        let (tx, rx) = smol::channel::bounded(1);
        let spoke = Arc::new(AtomicBool::new(false));
        t.open.push(Open {
            id,
            ip,
            since: now,
            spoke: spoke.clone(),
            close: Some(tx),
        });
        Ok(ClientSlot {
            limits: self.clone(),
            ip,
            id,
            watch: IdleWatch { spoke, close: rx },
        })
    }

    /// A MAIL from `ip`; false when over the message rate.
    pub fn note_message(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut t = self.lock();
        t.clients
            .get_mut(&ip)
            .is_none_or(|e| e.messages.hit(now, self.msg_rate))
    }

    /// A RCPT from `ip`; false when over the recipient rate.
    pub fn note_recipient(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut t = self.lock();
        t.clients
            .get_mut(&ip)
            .is_none_or(|e| e.recipients.hit(now, self.rcpt_rate))
    }

    /// Make room for a connection from `for_ip`: tell the oldest connection
    /// that has not sent a command yet, from the address holding the most
    /// connections, to close. Only an address holding more connections
    /// than `for_ip`, and at least [`HOARDING`], gives one up, so hoarders
    /// lose theirs to newcomers and never the other way round. Returns the
    /// address told, if any.
    pub fn evict_idle(&self, for_ip: IpAddr) -> Option<IpAddr> {
        let mut guard = self.lock();
        let t = &mut *guard;
        let held = |ip: &IpAddr| t.clients.get(ip).map_or(0, |e| e.open);
        let mine = held(&for_ip);
        // The candidate: most connections held, then the longest idle.
        let victim = t
            .open
            .iter()
            .enumerate()
            .filter(|(_, o)| o.close.is_some() && !o.spoke.load(Ordering::Relaxed))
            .filter(|(_, o)| held(&o.ip) > mine && held(&o.ip) >= HOARDING)
            .max_by(|(_, a), (_, b)| {
                held(&a.ip)
                    .cmp(&held(&b.ip))
                    .then_with(|| b.since.cmp(&a.since))
            })
            .map(|(i, _)| i)?;
        let o = t.open.get_mut(victim)?;
        // Dropping the sender wakes the connection's watch.
        o.close = None;
        Some(o.ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(open: usize, conns: u32, msgs: u32, rcpts: u32) -> Arc<ClientLimits> {
        Arc::new(ClientLimits {
            max_open: open,
            conn_rate: conns,
            msg_rate: msgs,
            rcpt_rate: rcpts,
            table: Mutex::new(Table::default()),
        })
    }

    #[test]
    fn open_connections_are_capped_per_address_and_released() {
        let l = limits(2, 100, 10, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.connect(a, true).unwrap();
        let _s2 = l.connect(a, true).unwrap();
        assert_eq!(l.connect(a, true).unwrap_err(), Refused::TooManyOpen);
        // Another address is not affected.
        let _s3 = l.connect(b, true).unwrap();
        drop(s1);
        assert!(l.connect(a, true).is_ok());
    }

    #[test]
    fn rates_per_minute() {
        let l = limits(100, 3, 2, 3);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let slots: Vec<_> = (0..3).map(|_| l.connect(a, true).unwrap()).collect();
        assert_eq!(l.connect(a, true).unwrap_err(), Refused::TooFast);
        assert!(l.note_message(a) && l.note_message(a));
        assert!(!l.note_message(a));
        assert!(l.note_recipient(a) && l.note_recipient(a) && l.note_recipient(a));
        assert!(!l.note_recipient(a));
        drop(slots);
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = limits(1, 100, 10, 10);
        let mut held = Vec::new();
        for i in 0..MAX_TRACKED as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            held.push(l.connect(ip, true).unwrap());
        }
        let extra = IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, 99));
        assert_eq!(l.connect(extra, true).unwrap_err(), Refused::TableFull);
        assert!(l.lock().clients.len() <= MAX_TRACKED);
    }

    #[test]
    fn trusted_clients_skip_the_connection_rate_but_not_the_open_cap() {
        let l = limits(3, 1, 10, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = l.connect(a, true).unwrap();
        assert_eq!(l.connect(a, true).unwrap_err(), Refused::TooFast);
        drop(first);
        let held: Vec<_> = (0..3).map(|_| l.connect(a, false).unwrap()).collect();
        assert_eq!(l.connect(a, false).unwrap_err(), Refused::TooManyOpen);
        drop(held);
    }

    #[test]
    fn the_oldest_silent_connection_of_the_biggest_holder_is_closed() {
        let l = limits(10, 100, 10, 10);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        let a1 = l.connect(a, true).unwrap();
        let b1 = l.connect(b, true).unwrap();
        let b2 = l.connect(b, true).unwrap();
        let b3 = l.connect(b, true).unwrap();
        let a2 = l.connect(a, true).unwrap();
        // b holds the most; its oldest has spoken, so the next oldest goes.
        b1.watch().spoke();
        assert_eq!(l.evict_idle(c), Some(b));
        assert!(b2.watch().close.is_closed());
        assert!(!b1.watch().close.is_closed() && !b3.watch().close.is_closed());
        // Told once: the next choice is another connection (b3, b's last
        // silent one, while b still holds three).
        assert_eq!(l.evict_idle(c), Some(b));
        assert!(b3.watch().close.is_closed());
        drop((b2, b3));
        // Now a and b hold two each; a's oldest silent one goes first.
        assert_eq!(l.evict_idle(c), Some(a));
        assert!(a1.watch().close.is_closed() && !a2.watch().close.is_closed());
        // An address never takes from one that holds no more than it does.
        drop(a1);
        assert_eq!(l.evict_idle(b), None);
        let _c1 = l.connect(c, true).unwrap();
        assert_eq!(l.evict_idle(c), None);
        drop((a2, b1));
        assert_eq!(l.lock().open.len(), 1);
    }
}
