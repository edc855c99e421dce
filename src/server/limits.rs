//! Per-client bounds, so one flooding or misbehaving host cannot starve the
//! others: open connections per address, and fixed one-minute windows for
//! new connections, messages and recipients.
//!
//! The table is bounded ([`MAX_TRACKED`] addresses). When it is full, idle
//! entries (no open connection, window expired) are dropped; if none is
//! idle, a new address is refused at connect rather than growing the table
//! (this happens only when thousands of distinct addresses are connected at
//! once, far past `max_connections`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ServerConfig;

/// Most client addresses tracked at once.
pub const MAX_TRACKED: usize = 4096;
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

/// The limits in force and the per-address counts.
#[derive(Debug)]
pub struct ClientLimits {
    max_open: usize,
    conn_rate: u32,
    msg_rate: u32,
    rcpt_rate: u32,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

/// Held while a connection is open; gives its slot back on drop.
#[derive(Debug)]
pub struct ClientSlot {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.limits.lock();
        if let Some(e) = t.get_mut(&self.ip) {
            e.open = e.open.saturating_sub(1);
        }
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
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // A panic while holding the lock leaves plain counters behind;
        // they are still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection from `ip`: a slot, or why not.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<ClientSlot, Refused> {
        let now = Instant::now();
        let mut t = self.lock();
        if !t.contains_key(&ip) && t.len() >= MAX_TRACKED {
            t.retain(|_, e| {
                e.open > 0
                    || !(e.connections.expired(now)
                        && e.messages.expired(now)
                        && e.recipients.expired(now))
            });
            if t.len() >= MAX_TRACKED {
                return Err(Refused::TableFull);
            }
        }
        let e = t.entry(ip).or_insert(Entry {
            open: 0,
            connections: Window::new(now),
            messages: Window::new(now),
            recipients: Window::new(now),
        });
        if e.open >= self.max_open {
            return Err(Refused::TooManyOpen);
        }
        if !e.connections.hit(now, self.conn_rate) {
            return Err(Refused::TooFast);
        }
        e.open += 1;
        Ok(ClientSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// A MAIL from `ip`; false when over the message rate.
    pub fn note_message(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut t = self.lock();
        t.get_mut(&ip)
            .is_none_or(|e| e.messages.hit(now, self.msg_rate))
    }

    /// A RCPT from `ip`; false when over the recipient rate.
    pub fn note_recipient(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut t = self.lock();
        t.get_mut(&ip)
            .is_none_or(|e| e.recipients.hit(now, self.rcpt_rate))
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
            table: Mutex::new(HashMap::new()),
        })
    }

    #[test]
    fn open_connections_are_capped_per_address_and_released() {
        let l = limits(2, 100, 10, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.connect(a).unwrap();
        let _s2 = l.connect(a).unwrap();
        assert_eq!(l.connect(a).unwrap_err(), Refused::TooManyOpen);
        // Another address is not affected.
        let _s3 = l.connect(b).unwrap();
        drop(s1);
        assert!(l.connect(a).is_ok());
    }

    #[test]
    fn rates_per_minute() {
        let l = limits(100, 3, 2, 3);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let slots: Vec<_> = (0..3).map(|_| l.connect(a).unwrap()).collect();
        assert_eq!(l.connect(a).unwrap_err(), Refused::TooFast);
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
            held.push(l.connect(ip).unwrap());
        }
        let extra = IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, 99));
        assert_eq!(l.connect(extra).unwrap_err(), Refused::TableFull);
        assert!(l.lock().len() <= MAX_TRACKED);
    }
}
