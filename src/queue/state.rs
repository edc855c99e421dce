//! `<dir>/state`: the few numbers the queue must never forget, kept in two
//! checksummed slots written alternately in place (a torn write spoils
//! only the slot being written; the other still holds the previous value).
//!
//! - the segment sequence ceiling: no segment life may ever take a number
//!   below it again, or records of an old life could read as new (a torn
//!   start record can make recovery forget the highest number in use);
//! - the queue clock: queue time elapsed (how old messages are) and the
//!   wall clock when it was saved, so a restart can count the downtime
//!   without trusting a clock that may have jumped (see `clock.rs`).
//!
//! Written rarely: once per [`SEQ_STEP`] segments, and with the clock.

use std::io;
use std::path::{Path, PathBuf};

use super::storage::{OpenMode, Storage, StorageFile};

/// Sequence numbers reserved per write of the file.
pub const SEQ_STEP: u64 = 64;
/// The highest segment sequence number (and state write counter) taken
/// from disk. Both count one per segment started (or per write) from 1: at
/// a thousand a second this is reached in 290 million years, so a number
/// above it is damage, and adding a step to one at most this never
/// overflows.
pub const MAX_SEQ: u64 = 1 << 63;
const SLOT: usize = 64;
const MAGIC: u32 = u32::from_le_bytes(*b"PSTS");
pub const FILE_NAME: &str = "state";

/// What the file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Saved {
    /// Every segment sequence number in use is below this.
    pub seq_ceiling: u64,
    /// Queue time elapsed, milliseconds.
    pub queue_ms: u64,
    /// Wall clock (unix seconds) when saved.
    pub wall: u64,
}

/// The open state file.
#[derive(Debug)]
pub struct StateFile {
    file: Box<dyn StorageFile>,
    counter: u64,
    pub saved: Saved,
}

fn encode(counter: u64, s: &Saved) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[8..16].copy_from_slice(&counter.to_le_bytes());
    b[16..24].copy_from_slice(&s.seq_ceiling.to_le_bytes());
    b[24..32].copy_from_slice(&s.queue_ms.to_le_bytes());
    b[32..40].copy_from_slice(&s.wall.to_le_bytes());
    let crc = crc32fast::hash(&b[..40]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn decode(b: &[u8]) -> Option<(u64, Saved)> {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[0..4]);
    if u32::from_le_bytes(w) != MAGIC {
        return None;
    }
    w.copy_from_slice(&b[40..44]);
    if crc32fast::hash(&b[..40]) != u32::from_le_bytes(w) {
        return None;
    }
    let (counter, seq_ceiling) = (u64_at(b, 8), u64_at(b, 16));
    if counter > MAX_SEQ || seq_ceiling > MAX_SEQ {
        // Never written by postern: the slot is not trusted.
        return None;
    }
    Some((
        counter,
        Saved {
            seq_ceiling,
            queue_ms: u64_at(b, 24),
            wall: u64_at(b, 32),
        },
    ))
}

impl StateFile {
    /// Open (creating, durably, if missing). Returns the file and whether it
    /// was there.
    pub fn open(fs: &dyn Storage, dir: &Path) -> io::Result<(StateFile, bool)> {
        let path: PathBuf = dir.join(FILE_NAME);
        match fs.open(&path, OpenMode::ReadWrite) {
            Ok(file) => {
                let mut buf = vec![0u8; 2 * SLOT];
                let best = if file.read_exact_at(&mut buf, 0).is_ok() {
                    [decode(&buf[..SLOT]), decode(&buf[SLOT..])]
                        .into_iter()
                        .flatten()
                        .max_by_key(|(c, _)| *c)
                } else {
                    None
                };
                if best.is_none() {
                    tracing::warn!(file = %path.display(), "queue state file unreadable; starting it again");
                }
                let (counter, saved) = best.unwrap_or_default();
                Ok((
                    StateFile {
                        file,
                        counter,
                        saved,
                    },
                    best.is_some(),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = fs.open(&path, OpenMode::CreateNew)?;
                let s = Saved::default();
                let mut b = encode(0, &s).to_vec();
                b.extend_from_slice(&encode(0, &s));
                file.write_all_at(&b, 0)?;
                file.sync_all()?;
                fs.sync_dir(dir)?;
                Ok((
                    StateFile {
                        file,
                        counter: 0,
                        saved: s,
                    },
                    false,
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Write `s` durably (into the slot not holding the latest value).
    pub fn save(&mut self, s: Saved) -> io::Result<()> {
        // At most MAX_SEQ when read (see `decode`): no overflow here.
        let counter = self.counter.saturating_add(1);
        let slot = (counter % 2) * SLOT as u64;
        self.file.write_all_at(&encode(counter, &s), slot)?;
        self.file.sync_data()?;
        self.counter = counter;
        self.saved = s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_slot_falls_back_to_the_other() {
        let a = Saved {
            seq_ceiling: 64,
            queue_ms: 5,
            wall: 7,
        };
        let b = Saved {
            seq_ceiling: 128,
            queue_ms: 9,
            wall: 8,
        };
        let mut buf = encode(1, &a).to_vec();
        buf.extend_from_slice(&encode(2, &b));
        assert_eq!(decode(&buf[SLOT..]).unwrap().1, b);
        for cut in 0..44 {
            let mut torn = buf.clone();
            torn[SLOT + cut] ^= 0xFF;
            let best = [decode(&torn[..SLOT]), decode(&torn[SLOT..])]
                .into_iter()
                .flatten()
                .max_by_key(|(c, _)| *c)
                .unwrap();
            assert_eq!(best.1, a, "byte {cut}");
        }
    }
}
