//! Alert-storm suppression's table: one window per alert key (sender and
//! masked Subject, by default), opened by the alert's first copy and
//! lasting `window`. The first `pass` copies go out as they come; every
//! later copy is queued held back ([`Decision::Hold`]). A window that sees
//! more than `threshold` copies is a storm. When the window ends, a storm
//! gets one digest (how many copies, when, the first and last copy's main
//! header fields and an excerpt) and its held copies are removed; a window
//! that stayed at or below `threshold` releases what it held, late but
//! whole. Pure logic, the saved form and the digest's text; the listener's
//! `storm` module runs it against the queue.
//!
//! Bounds: the table is capped (`max_keys`): a new alert pushes out the
//! oldest window, which ends early. A window holds at most [`MAX_HELD`]
//! copies: the copy that fills it ends it early too (its digest goes out
//! then, and the next copy opens a new window).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::{StormConfig, StormKey};

use super::mime::Scan;
use super::subject::normalize_subject;

/// Most copies one window holds back; the copy that reaches it ends the
/// window early. Bounds the table's memory and the saved file, whatever
/// `threshold` and the window say.
pub const MAX_HELD: usize = 1000;
/// Longest line of the digest's text, in octets (RFC 5322: 998).
const DIGEST_LINE: usize = 990;
/// Version of the saved form.
const SAVED_VERSION: u32 = 1;

/// What to do with one copy of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Queue it as usual.
    Pass,
    /// Queue it held back; tell the table its id ([`Table::held`]).
    Hold {
        /// The copy's number in the window.
        count: u64,
        /// The window is a storm (more than `threshold` copies).
        storm: bool,
        /// This copy made it one.
        began: bool,
    },
}

/// One alert's window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Opened (unix seconds).
    pub first: u64,
    /// The latest copy (unix seconds).
    pub last: u64,
    /// Copies seen.
    pub count: u64,
    /// Copies held back in the queue (ids).
    pub held: Vec<u64>,
    /// Over threshold: a storm.
    pub storm: bool,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
    /// The first copy's recipients (the digest goes to them).
    pub rcpts: Vec<String>,
    /// The first copy's named route (a `[[filter]]` said so), which the
    /// digest takes too.
    #[serde(default)]
    pub route: Option<String>,
    /// The first copy's Subject.
    pub subject: String,
    /// The first copy's main fields, as written.
    pub first_fields: String,
    /// The latest copy's main fields.
    pub last_fields: String,
    /// The start of the latest copy's body.
    pub excerpt: String,
    /// Order of opening, for dropping the oldest.
    seq: u64,
}

impl Window {
    /// When the window ends, for a window of `secs` seconds.
    fn end(&self, secs: u64) -> u64 {
        self.first.saturating_add(secs)
    }
}

/// A window that ended: what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The alert's key.
    pub key: String,
    /// The window as it ended.
    pub window: Window,
}

impl Ended {
    /// Held copies to release (a window that was no storm).
    pub fn release(&self) -> &[u64] {
        if self.window.storm {
            &[]
        } else {
            &self.window.held
        }
    }

    /// Held copies the digest stands for, to remove once it is queued.
    pub fn summed_up(&self) -> &[u64] {
        if self.window.storm {
            &self.window.held
        } else {
            &[]
        }
    }
}

/// A copy of an alert as the table sees it.
#[derive(Debug, Clone, Copy)]
pub struct Copy<'a> {
    /// Envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// Recipients.
    pub rcpts: &'a [String],
    /// A named route the copy goes by.
    pub route: Option<&'a str>,
    /// What the scanner found in it.
    pub scan: &'a Scan,
    /// Now (unix seconds).
    pub now: u64,
}

/// What became of a held copy's id ([`Table::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// In its window.
    Yes,
    /// In its window, which is full now: end it early.
    Full,
    /// The window ended meanwhile: release the copy.
    Gone,
}

/// The table of open windows.
#[derive(Debug, Clone)]
pub struct Table {
    windows: HashMap<String, Window>,
    window_secs: u64,
    threshold: u64,
    pass: u64,
    key: StormKey,
    max_keys: usize,
    next_seq: u64,
}

/// The saved form.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    version: u32,
    windows: Vec<(String, Window)>,
}

impl Table {
    /// An empty table for `cfg`.
    pub fn new(cfg: &StormConfig) -> Table {
        let mut t = Table {
            windows: HashMap::new(),
            window_secs: 1,
            threshold: 1,
            pass: 0,
            key: cfg.key,
            max_keys: 1,
            next_seq: 0,
        };
        t.set_bounds(cfg);
        t
    }

    fn set_bounds(&mut self, cfg: &StormConfig) {
        self.window_secs = cfg.window.value.as_secs().max(1);
        self.threshold = u64::try_from(cfg.threshold).unwrap_or(u64::MAX);
        self.pass = u64::try_from(cfg.pass).unwrap_or(u64::MAX);
        self.key = cfg.key;
        self.max_keys = cfg.max_keys.max(1);
    }

    /// Take `cfg`'s bounds (a reload), keeping the open windows: each is a
    /// storm or not by the new threshold, and over a smaller `max_keys` the
    /// oldest end now (returned).
    pub fn reconfigure(&mut self, cfg: &StormConfig) -> Vec<Ended> {
        self.set_bounds(cfg);
        let threshold = self.threshold;
        for w in self.windows.values_mut() {
            w.storm = w.count > threshold;
        }
        let mut out = Vec::new();
        while self.windows.len() > self.max_keys {
            match self.pop_oldest() {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }

    /// The key of a message: its sender and/or masked Subject.
    pub fn key_of(&self, sender: &str, subject: Option<&str>) -> String {
        let subject = normalize_subject(subject.unwrap_or(""));
        match self.key {
            StormKey::SenderSubject => format!("{}\n{subject}", sender.to_ascii_lowercase()),
            StormKey::Subject => subject,
            StormKey::Sender => sender.to_ascii_lowercase(),
        }
    }

    /// Copies that go out before the rest are held (`pass`).
    pub fn pass(&self) -> u64 {
        self.pass
    }

    /// More copies than this make a storm (`threshold`).
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// Open windows.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// No open windows.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// One window by key.
    pub fn get(&self, key: &str) -> Option<&Window> {
        self.windows.get(key)
    }

    /// When the window of `key` ends (unix seconds).
    pub fn end_of(&self, key: &str) -> Option<u64> {
        self.windows.get(key).map(|w| w.end(self.window_secs))
    }

    /// Count a copy. `ended` receives a window pushed out to make room.
    pub fn note(&mut self, key: &str, copy: Copy, ended: &mut Vec<Ended>) -> Decision {
        let (pass, threshold) = (self.pass, self.threshold);
        if let Some(w) = self.windows.get_mut(key) {
            w.count = w.count.saturating_add(1);
            w.last = copy.now.max(w.last);
            w.last_fields.clone_from(&copy.scan.digest_fields);
            w.excerpt = String::from_utf8_lossy(&copy.scan.excerpt).into_owned();
            if w.count <= pass {
                return Decision::Pass;
            }
            let began = !w.storm && w.count > threshold;
            w.storm |= began;
            return Decision::Hold {
                count: w.count,
                storm: w.storm,
                began,
            };
        }
        self.open(key, copy, 1, Vec::new(), ended);
        if pass >= 1 {
            Decision::Pass
        } else {
            let storm = 1 > threshold;
            Decision::Hold {
                count: 1,
                storm,
                began: storm,
            }
        }
    }

    /// A copy that was counted was not queued after all (the queue
    /// refused it; the client will send it again).
    pub fn unnote(&mut self, key: &str) {
        if let Some(w) = self.windows.get_mut(key) {
            w.count = w.count.saturating_sub(1);
        }
    }

    /// A copy decided [`Decision::Hold`] is queued as `id`.
    pub fn held(&mut self, key: &str, id: u64) -> Kept {
        match self.windows.get_mut(key) {
            Some(w) => {
                w.held.push(id);
                if w.held.len() >= MAX_HELD {
                    Kept::Full
                } else {
                    Kept::Yes
                }
            }
            None => Kept::Gone,
        }
    }

    /// A held copy found in the queue at start that the saved table does
    /// not know (it came after the last save, before a crash): counted
    /// into its window, or into a window opened for it as if `pass`
    /// copies had gone before it (they had, or it would not be held).
    pub fn adopt(&mut self, key: &str, copy: Copy, id: u64, ended: &mut Vec<Ended>) {
        let threshold = self.threshold;
        if let Some(w) = self.windows.get_mut(key) {
            w.count = w.count.saturating_add(1);
            w.first = w.first.min(copy.now);
            w.last = w.last.max(copy.now);
            w.held.push(id);
            w.storm = w.count > threshold;
            return;
        }
        let count = self.pass.saturating_add(1);
        self.open(key, copy, count, vec![id], ended);
    }

    /// Open the window of `key`; at the cap, the oldest window ends first
    /// (into `ended`).
    fn open(&mut self, key: &str, copy: Copy, count: u64, held: Vec<u64>, ended: &mut Vec<Ended>) {
        if self.windows.len() >= self.max_keys
            && let Some(e) = self.pop_oldest()
        {
            ended.push(e);
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        let fields = copy.scan.digest_fields.clone();
        self.windows.insert(
            key.to_string(),
            Window {
                first: copy.now,
                last: copy.now,
                count,
                held,
                storm: count > self.threshold,
                sender: copy.sender.to_string(),
                rcpts: copy.rcpts.to_vec(),
                route: copy.route.map(str::to_string),
                subject: copy.scan.subject.clone().unwrap_or_default(),
                first_fields: fields.clone(),
                last_fields: fields,
                excerpt: String::from_utf8_lossy(&copy.scan.excerpt).into_owned(),
                seq: self.next_seq,
            },
        );
    }

    fn pop_oldest(&mut self) -> Option<Ended> {
        let oldest = self
            .windows
            .iter()
            .min_by_key(|(_, w)| w.seq)
            .map(|(k, _)| k.clone())?;
        let window = self.windows.remove(&oldest)?;
        Some(Ended {
            key: oldest,
            window,
        })
    }

    /// Close the windows whose time is up at `now` (unix seconds), and
    /// those holding [`MAX_HELD`] copies, oldest first. A clock that went
    /// back by more than a window closes them too: a board without a
    /// real-time clock must not keep copies for ever.
    pub fn expire(&mut self, now: u64) -> Vec<Ended> {
        let span = self.window_secs;
        let done: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, w)| {
                now >= w.end(span) || now.saturating_add(span) < w.first || w.held.len() >= MAX_HELD
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Ended> = done
            .into_iter()
            .filter_map(|k| {
                self.windows
                    .remove(&k)
                    .map(|window| Ended { key: k, window })
            })
            .collect();
        out.sort_by_key(|e| e.window.seq);
        out
    }

    /// Close every window now (suppression turned off), oldest first.
    pub fn drain(&mut self) -> Vec<Ended> {
        let mut out: Vec<Ended> = self
            .windows
            .drain()
            .map(|(key, window)| Ended { key, window })
            .collect();
        out.sort_by_key(|e| e.window.seq);
        out
    }

    /// The earliest end of an open window (unix seconds): when
    /// [`Table::expire`] next has something to do.
    pub fn next_end(&self) -> Option<u64> {
        self.windows
            .values()
            .map(|w| {
                if w.held.len() >= MAX_HELD {
                    0
                } else {
                    w.end(self.window_secs)
                }
            })
            .min()
    }

    /// Every held id the table knows.
    pub fn held_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.windows.values().flat_map(|w| w.held.iter().copied())
    }

    /// Forget held ids for which `keep` says no (no longer queued, or no
    /// longer held: delivered, deleted or released by the operator).
    pub fn retain_held(&mut self, keep: impl Fn(u64) -> bool) {
        for w in self.windows.values_mut() {
            w.held.retain(|id| keep(*id));
        }
    }

    /// The saved form (JSON).
    pub fn save(&self) -> Vec<u8> {
        let mut windows: Vec<(String, Window)> = self
            .windows
            .iter()
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect();
        windows.sort_by_key(|(_, w)| w.seq);
        serde_json::to_vec(&Saved {
            version: SAVED_VERSION,
            windows,
        })
        .unwrap_or_default()
    }

    /// Restore saved windows (over the cap, the newest are kept; each is
    /// a storm or not by the threshold in force).
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        let saved: Saved = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if saved.version != SAVED_VERSION {
            return Err(format!("saved by an unknown version ({})", saved.version));
        }
        let skip = saved.windows.len().saturating_sub(self.max_keys);
        for (k, mut w) in saved.windows.into_iter().skip(skip) {
            self.next_seq = self.next_seq.wrapping_add(1);
            w.seq = self.next_seq;
            w.held.truncate(MAX_HELD);
            w.storm = w.count > self.threshold;
            self.windows.insert(k, w);
        }
        Ok(())
    }
}

/// `02:10` (UTC) of a unix time; the date too when it is not `than`'s day.
fn clock(t: u64, than: u64) -> String {
    let hm = format!("{:02}:{:02}", t / 3600 % 24, t / 60 % 60);
    if t / 86_400 == than / 86_400 {
        hm
    } else {
        let date = crate::smtp::format_date(t);
        // "Mon, 23 Nov 2026 …": the day, month and year.
        let day: String = date
            .split(' ')
            .skip(1)
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        format!("{day} {hm}")
    }
}

/// The digest of a storm: (Subject, body text with CRLF line ends).
pub fn digest_text(w: &Window, hostname: &str, pass: u64) -> (String, String) {
    let subject = one_line(&w.subject, 200);
    let subject = if subject.is_empty() {
        format!("[alert storm] repeated {} times", w.count)
    } else {
        format!("[alert storm] {subject} (repeated {} times)", w.count)
    };
    let mut body = String::new();
    let sent = w.count.min(pass);
    let _ = write!(
        body,
        "This alert was repeated {} times between {} and {} (UTC).\r\n\
         The first {sent} went out as they came; the other {} were held back by\r\n\
         {hostname} and are summed up here instead.\r\n\r\n",
        w.count,
        clock(w.first, w.first),
        clock(w.last, w.first),
        w.count.saturating_sub(sent),
    );
    body.push_str("First copy:\r\n");
    body.push_str(&indent(&w.first_fields));
    body.push_str("\r\nLast copy:\r\n");
    body.push_str(&indent(&w.last_fields));
    body.push_str("\r\nStart of the last copy:\r\n");
    body.push_str(&indent(&w.excerpt));
    (subject, body)
}

/// The digest as a whole message (header section and body, CRLF line
/// ends, lines within RFC 5322's limit), for the queue id `id`, written
/// at `now`. From: the alert's sender (so the mailbox files it with the
/// alerts), or MAILER-DAEMON for `<>`.
pub fn digest_message(w: &Window, hostname: &str, pass: u64, id: &str, now: u64) -> Vec<u8> {
    let (subject, body) = digest_text(w, hostname, pass);
    let from = if w.sender.is_empty() {
        format!("MAILER-DAEMON@{hostname}")
    } else {
        one_line(&w.sender, DIGEST_LINE)
    };
    let to: Vec<String> = w
        .rcpts
        .iter()
        .map(|r| format!("<{}>", one_line(r, DIGEST_LINE)))
        .collect();
    let mut m = String::with_capacity(body.len() + 1024);
    let _ = write!(
        m,
        "From: \"Alert storm digest, postern on {host}\" <{from}>\r\n\
         To: {to}\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.storm@{host}>\r\n\
         Auto-Submitted: auto-generated\r\n\
         X-Postern-Storm: {count} copies\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n",
        host = one_line(hostname, 200),
        to = to.join(",\r\n "),
        subject = encode_field(&subject),
        date = crate::smtp::format_date(now),
        count = w.count,
    );
    m.push_str(&body);
    m.into_bytes()
}

/// `s` on one line: control characters dropped, at most `max` octets.
fn one_line(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// A field value as written: as it is when ASCII, else RFC 2047 encoded
/// words of whole characters, one per folded line.
fn encode_field(s: &str) -> String {
    use base64::Engine as _;
    if s.is_ascii() {
        return s.to_string();
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        // 45 octets make 60 of base64: a word of 72, within the 75 allowed.
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", b64.encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", b64.encode(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// Each line indented by four spaces, CRLF-ended, control characters
/// dropped, cut to fit a line of [`DIGEST_LINE`] octets.
fn indent(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut kept = String::new();
        for c in line.chars().filter(|c| !c.is_control() || *c == '\t') {
            if kept.len() + c.len_utf8() > DIGEST_LINE - 4 {
                break;
            }
            kept.push(c);
        }
        out.push_str("    ");
        out.push_str(&kept);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(threshold: usize, pass: usize, max_keys: usize) -> StormConfig {
        crate::filter::tests::config(&format!(
            "[storm]\nthreshold = {threshold}\npass = {pass}\nmax_keys = {max_keys}\n\
             window = \"30m\"\n"
        ))
        .storm
        .unwrap()
    }

    fn scan(subject: &str) -> Scan {
        Scan {
            subject: Some(subject.into()),
            digest_fields: format!("Subject: {subject}\r\n"),
            excerpt: b"on battery".to_vec(),
            ..Scan::default()
        }
    }

    fn copy_at<'a>(s: &'a Scan, rcpts: &'a [String], now: u64) -> Copy<'a> {
        Copy {
            sender: "ups@lan",
            rcpts,
            route: None,
            scan: s,
            now,
        }
    }

    fn note(t: &mut Table, subject: &str, now: u64) -> Decision {
        let s = scan(subject);
        let rcpts = vec!["ops@example.com".to_string()];
        let key = t.key_of("ups@lan", Some(subject));
        let mut ended = Vec::new();
        t.note(&key, copy_at(&s, &rcpts, now), &mut ended)
    }

    fn hold(count: u64, storm: bool, began: bool) -> Decision {
        Decision::Hold {
            count,
            storm,
            began,
        }
    }

    #[test]
    fn pass_then_hold_then_storm_then_digest() {
        let mut t = Table::new(&cfg(4, 2, 10));
        let key = t.key_of("ups@lan", Some("UPS 1 on battery"));
        assert_eq!(note(&mut t, "UPS 1 on battery", 100), Decision::Pass);
        assert_eq!(note(&mut t, "UPS 2 on battery", 110), Decision::Pass);
        assert_eq!(note(&mut t, "UPS 3 on battery", 120), hold(3, false, false));
        assert_eq!(t.held(&key, 7), Kept::Yes);
        assert_eq!(note(&mut t, "UPS 4 on battery", 130), hold(4, false, false));
        assert_eq!(t.held(&key, 8), Kept::Yes);
        // The fifth is over threshold: a storm; every copy is still kept.
        assert_eq!(note(&mut t, "UPS 5 on battery", 140), hold(5, true, true));
        assert_eq!(t.held(&key, 9), Kept::Yes);
        assert_eq!(note(&mut t, "UPS 6 on battery", 150), hold(6, true, false));
        assert_eq!(t.held(&key, 10), Kept::Yes);
        assert_eq!(t.next_end(), Some(100 + 1800));
        assert!(t.expire(100 + 1799).is_empty());
        let ended = t.expire(100 + 1800);
        assert_eq!(ended.len(), 1);
        let w = &ended[0].window;
        assert!(w.storm && w.count == 6);
        assert!(ended[0].release().is_empty());
        assert_eq!(ended[0].summed_up(), &[7, 8, 9, 10]);
        let (subject, body) = digest_text(w, "relay.test", 2);
        assert_eq!(subject, "[alert storm] UPS 1 on battery (repeated 6 times)");
        assert!(
            body.starts_with("This alert was repeated 6 times between 00:01 and 00:02"),
            "{body}"
        );
        assert!(body.contains("the other 4 were held back"), "{body}");
        assert!(body.contains("Subject: UPS 6 on battery"), "{body}");
        // Gone: a copy whose window ended meanwhile is released.
        assert_eq!(t.held(&key, 11), Kept::Gone);
    }

    #[test]
    fn a_window_that_stays_under_threshold_releases_what_it_held() {
        let mut t = Table::new(&cfg(5, 1, 10));
        let key = t.key_of("ups@lan", Some("x 1"));
        assert_eq!(note(&mut t, "x 1", 0), Decision::Pass);
        assert_eq!(note(&mut t, "x 2", 1), hold(2, false, false));
        assert_eq!(t.held(&key, 42), Kept::Yes);
        let ended = t.expire(1800);
        assert_eq!(ended[0].release(), &[42]);
        assert!(ended[0].summed_up().is_empty());
    }

    #[test]
    fn a_full_window_ends_early() {
        let mut t = Table::new(&cfg(3, 1, 10));
        let key = t.key_of("ups@lan", Some("x"));
        note(&mut t, "x", 0);
        for i in 0..MAX_HELD as u64 {
            assert!(matches!(note(&mut t, "x", 1), Decision::Hold { .. }));
            let kept = t.held(&key, i);
            assert_eq!(kept == Kept::Full, i + 1 == MAX_HELD as u64, "{i}");
        }
        assert_eq!(t.next_end(), Some(0));
        let ended = t.expire(2);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].summed_up().len(), MAX_HELD);
        // The next copy starts again.
        assert_eq!(note(&mut t, "x", 3), Decision::Pass);
    }

    #[test]
    fn a_refused_copy_is_not_counted() {
        let mut t = Table::new(&cfg(3, 1, 10));
        let key = t.key_of("ups@lan", Some("x"));
        note(&mut t, "x", 0);
        note(&mut t, "x", 1);
        t.unnote(&key);
        assert_eq!(t.get(&key).unwrap().count, 1);
    }

    #[test]
    fn strays_are_adopted_into_their_window_or_a_new_one() {
        let mut t = Table::new(&cfg(3, 2, 10));
        let rcpts = vec!["ops@example.com".to_string()];
        let s = scan("x 1");
        let key = t.key_of("ups@lan", Some("x 1"));
        let mut ended = Vec::new();
        // No window: one is opened as if `pass` copies had gone out.
        t.adopt(&key, copy_at(&s, &rcpts, 50), 9, &mut ended);
        let w = t.get(&key).unwrap();
        assert_eq!(
            (w.count, w.first, w.held.clone(), w.storm),
            (3, 50, vec![9], false)
        );
        t.adopt(&key, copy_at(&s, &rcpts, 40), 10, &mut ended);
        let w = t.get(&key).unwrap();
        assert_eq!((w.count, w.first, w.storm), (4, 40, true));
        t.retain_held(|id| id != 9);
        assert_eq!(t.held_ids().collect::<Vec<_>>(), vec![10]);
        assert!(ended.is_empty());
    }

    #[test]
    fn the_table_is_capped_oldest_out_first_and_survives_a_save() {
        let mut t = Table::new(&cfg(5, 1, 2));
        note(&mut t, "a", 0);
        note(&mut t, "b", 1);
        let rcpts = vec![];
        let s = scan("c");
        let mut ended = Vec::new();
        let key = t.key_of("ups@lan", Some("c"));
        t.note(&key, copy_at(&s, &rcpts, 2), &mut ended);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].window.subject, "a");
        assert_eq!(t.len(), 2);
        let saved = t.save();
        let mut again = Table::new(&cfg(5, 1, 2));
        again.load(&saved).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.get(&key).unwrap().count, 1);
        assert!(again.load(b"not json").is_err());
        // A smaller cap on reload ends the oldest.
        let gone = again.reconfigure(&cfg(5, 1, 1));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].window.subject, "b");
        assert_eq!(again.drain().len(), 1);
        assert!(again.is_empty());
    }

    #[test]
    fn the_digest_is_a_message_any_server_takes() {
        let mut t = Table::new(&cfg(1, 1, 10));
        let subject = format!("Störung {}", "ä".repeat(400));
        for i in 0..3 {
            note(&mut t, &subject, 3600 * 2 + 600 + i);
        }
        let mut w = t.drain().remove(0).window;
        w.excerpt = format!(".\r\n{}", "x".repeat(3000));
        let m = digest_message(&w, "relay.test", 1, "6B0", 86_400 + 5);
        let text = String::from_utf8(m).unwrap();
        assert!(text.contains("\r\nSubject: =?UTF-8?B?"), "{text}");
        assert!(text.contains("From: \"Alert storm digest, postern on relay.test\" <ups@lan>\r\n"));
        assert!(text.contains("To: <ops@example.com>\r\n"));
        assert!(text.contains("Message-ID: <6B0.storm@relay.test>\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.is_ascii(), "{head}");
        assert!(body.starts_with("This alert was repeated 3 times between 02:10 and 02:10"));
        for line in text.split("\r\n") {
            assert!(line.len() <= 998, "{}", line.len());
            assert!(!line.contains('\n') && !line.contains('\r'));
        }
    }
}
