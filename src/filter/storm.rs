//! Alert-storm suppression's table: one window per alert key (sender and
//! masked Subject, by default), opened by the alert's first copy and
//! lasting `window`. The first `pass` copies go out; copies up to
//! `threshold` are held back in the queue; the copy after that makes it a
//! storm: the held copies are dropped and every later copy is taken and
//! not queued. When the window ends, a storm gets one digest (how many
//! copies, when, the first and last copy's main header fields and an
//! excerpt); a window that stayed at or below `threshold` releases what it
//! held. Pure logic and the saved form; the listener's `storm` module runs
//! it against the queue.
//!
//! The table is capped (`max_keys`): a new alert pushes out the oldest
//! window, which ends early (its digest or release happens then).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::{StormConfig, StormKey};

use super::mime::Scan;
use super::subject::normalize_subject;

/// Most copies held back per alert, whatever `threshold` says: bounds the
/// table's memory and the queue's share.
pub const MAX_HELD: usize = 1000;
/// Version of the saved form.
const SAVED_VERSION: u32 = 1;

/// What to do with one copy of an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Queue it as usual.
    Pass,
    /// Queue it, held; tell the table its id ([`Table::held`]).
    Hold,
    /// Take it (250) without queueing it: the digest covers it. `drop`
    /// are the queued copies held so far, now part of a storm.
    Suppress {
        /// Queue ids to delete.
        drop: Vec<u64>,
        /// The copy's number in the window.
        count: u64,
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
    /// The first copy's Subject.
    pub subject: String,
    /// The first and the latest copy's main fields, as written.
    pub first_fields: String,
    /// The latest copy's main fields.
    pub last_fields: String,
    /// The start of the latest copy's body.
    pub excerpt: String,
    /// Order of opening, for dropping the oldest.
    seq: u64,
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
}

/// A copy of an alert as the table sees it.
#[derive(Debug, Clone, Copy)]
pub struct Copy<'a> {
    /// Envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// Recipients.
    pub rcpts: &'a [String],
    /// What the scanner found in it.
    pub scan: &'a Scan,
    /// Now (unix seconds).
    pub now: u64,
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
        Table {
            windows: HashMap::new(),
            window_secs: cfg.window.value.as_secs().max(1),
            threshold: u64::try_from(cfg.threshold).unwrap_or(u64::MAX),
            pass: u64::try_from(cfg.pass).unwrap_or(u64::MAX),
            key: cfg.key,
            max_keys: cfg.max_keys.max(1),
            next_seq: 0,
        }
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

    /// Count a copy. `ended` receives a window pushed out to make room.
    pub fn note(&mut self, key: &str, copy: Copy, ended: &mut Vec<Ended>) -> Decision {
        let fields = copy.scan.digest_fields.clone();
        let excerpt = String::from_utf8_lossy(&copy.scan.excerpt).into_owned();
        if let Some(w) = self.windows.get_mut(key) {
            w.count = w.count.saturating_add(1);
            w.last = copy.now.max(w.last);
            w.last_fields = fields;
            w.excerpt = excerpt;
            if w.count <= self.pass {
                return Decision::Pass;
            }
            if w.count <= self.threshold && w.held.len() < MAX_HELD {
                return Decision::Hold;
            }
            let drop = if w.storm {
                Vec::new()
            } else {
                w.storm = true;
                std::mem::take(&mut w.held)
            };
            return Decision::Suppress {
                drop,
                count: w.count,
            };
        }
        if self.windows.len() >= self.max_keys
            && let Some(oldest) = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.seq)
                .map(|(k, _)| k.clone())
            && let Some(window) = self.windows.remove(&oldest)
        {
            ended.push(Ended {
                key: oldest,
                window,
            });
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        self.windows.insert(
            key.to_string(),
            Window {
                first: copy.now,
                last: copy.now,
                count: 1,
                held: Vec::new(),
                storm: false,
                sender: copy.sender.to_string(),
                rcpts: copy.rcpts.to_vec(),
                subject: copy.scan.subject.clone().unwrap_or_default(),
                first_fields: fields.clone(),
                last_fields: fields,
                excerpt,
                seq: self.next_seq,
            },
        );
        if self.pass >= 1 {
            Decision::Pass
        } else {
            Decision::Hold
        }
    }

    /// A copy decided [`Decision::Hold`] is queued as `id`. False when the
    /// window is a storm by now (or gone): then the copy is to be dropped.
    pub fn held(&mut self, key: &str, id: u64) -> bool {
        match self.windows.get_mut(key) {
            Some(w) if !w.storm => {
                w.held.push(id);
                true
            }
            _ => false,
        }
    }

    /// Close the windows whose time is up at `now` (unix seconds). A clock
    /// that went back by more than a window closes them too: a board
    /// without a real-time clock must not keep copies for ever.
    pub fn expire(&mut self, now: u64) -> Vec<Ended> {
        let span = self.window_secs;
        let done: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, w)| {
                now >= w.first.saturating_add(span) || now.saturating_add(span) < w.first
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

    /// Every held id the table knows (to release strays after a restart).
    pub fn held_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.windows.values().flat_map(|w| w.held.iter().copied())
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

    /// Restore saved windows (over the cap, the newest are kept).
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
    let subject = if w.subject.is_empty() {
        format!("[alert storm] repeated {} times", w.count)
    } else {
        format!("[alert storm] {} (repeated {} times)", w.subject, w.count)
    };
    let mut body = String::new();
    let sent = w.count.min(pass);
    body.push_str(&format!(
        "This alert was repeated {} times between {} and {} (UTC).\r\n\
         The first {sent} went out as they came; the other {} were held back by\r\n\
         {hostname} and are summed up here.\r\n\r\n",
        w.count,
        clock(w.first, w.first),
        clock(w.last, w.first),
        w.count.saturating_sub(sent),
    ));
    body.push_str("First copy:\r\n");
    body.push_str(&indent(&w.first_fields));
    body.push_str("\r\nLast copy:\r\n");
    body.push_str(&indent(&w.last_fields));
    body.push_str("\r\nStart of the last copy:\r\n");
    body.push_str(&indent(&w.excerpt));
    (subject, body)
}

/// Each line indented by four spaces, CRLF-ended, with no line that could
/// end the message (a lone dot is stuffed later by the client anyway).
fn indent(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .take(990)
            .collect();
        out.push_str("    ");
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(threshold: usize, pass: usize, max_keys: usize) -> StormConfig {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n[upstream]\n\
             kind = \"maildir\"\ndir = \"out\"\n[storm]\nthreshold = {threshold}\npass = {pass}\n\
             max_keys = {max_keys}\nwindow = \"30m\"\n"
        );
        let opts = crate::config::ParseOptions {
            skip_file_checks: true,
            default_hostname: Some("relay.test".into()),
        };
        crate::config::parse_with(&text, std::path::Path::new("t.toml"), &opts)
            .unwrap()
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

    fn note(t: &mut Table, subject: &str, now: u64) -> Decision {
        let s = scan(subject);
        let rcpts = vec!["ops@example.com".to_string()];
        let key = t.key_of("ups@lan", Some(subject));
        let mut ended = Vec::new();
        t.note(
            &key,
            Copy {
                sender: "ups@lan",
                rcpts: &rcpts,
                scan: &s,
                now,
            },
            &mut ended,
        )
    }

    #[test]
    fn pass_then_hold_then_storm_then_digest() {
        let mut t = Table::new(&cfg(4, 2, 10));
        let key = t.key_of("ups@lan", Some("UPS 1 on battery"));
        assert_eq!(note(&mut t, "UPS 1 on battery", 100), Decision::Pass);
        assert_eq!(note(&mut t, "UPS 2 on battery", 110), Decision::Pass);
        assert_eq!(note(&mut t, "UPS 3 on battery", 120), Decision::Hold);
        assert!(t.held(&key, 7));
        assert_eq!(note(&mut t, "UPS 4 on battery", 130), Decision::Hold);
        assert!(t.held(&key, 8));
        // The fifth is over threshold: a storm; the held copies go.
        assert_eq!(
            note(&mut t, "UPS 5 on battery", 140),
            Decision::Suppress {
                drop: vec![7, 8],
                count: 5
            }
        );
        assert_eq!(
            note(&mut t, "UPS 6 on battery", 150),
            Decision::Suppress {
                drop: vec![],
                count: 6
            }
        );
        assert!(t.expire(100 + 1799).is_empty());
        let ended = t.expire(100 + 1800);
        assert_eq!(ended.len(), 1);
        let w = &ended[0].window;
        assert!(w.storm && w.count == 6 && ended[0].release().is_empty());
        let (subject, body) = digest_text(w, "relay.test", 2);
        assert_eq!(subject, "[alert storm] UPS 1 on battery (repeated 6 times)");
        assert!(
            body.starts_with("This alert was repeated 6 times between 00:01 and 00:02"),
            "{body}"
        );
        assert!(body.contains("Subject: UPS 6 on battery"), "{body}");
    }

    #[test]
    fn a_window_that_stays_under_threshold_releases_what_it_held() {
        let mut t = Table::new(&cfg(5, 1, 10));
        let key = t.key_of("ups@lan", Some("x 1"));
        assert_eq!(note(&mut t, "x 1", 0), Decision::Pass);
        assert_eq!(note(&mut t, "x 2", 1), Decision::Hold);
        assert!(t.held(&key, 42));
        let ended = t.expire(1800);
        assert_eq!(ended[0].release(), &[42]);
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
        t.note(
            &key,
            Copy {
                sender: "ups@lan",
                rcpts: &rcpts,
                scan: &s,
                now: 2,
            },
            &mut ended,
        );
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].window.subject, "a");
        assert_eq!(t.len(), 2);
        let saved = t.save();
        let mut again = Table::new(&cfg(5, 1, 2));
        again.load(&saved).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.get(&key).unwrap().count, 1);
        assert!(again.load(b"not json").is_err());
    }
}
