//! Small files other parts of the daemon keep in the queue directory,
//! beside the queue's own state (storm suppression's open windows). The
//! queue owns their names, so recovery knows them as its own, and the
//! directory is touched by this module only.
//!
//! A side file is replaced whole and atomically: written to a temporary
//! name, synced, renamed over the old one, and the directory synced, so a
//! power cut leaves the old file or the new one, never a mix. It is
//! written by the caller's thread (the daemon's blocking pool), not the
//! queue's writer thread: it is no queue record, and its sync must not
//! hold up a commit. Callers write rarely (on a timer, at events, at
//! stop), to spare the SD card.

use std::io;
use std::path::PathBuf;

use super::storage::OpenMode;
use super::{Queue, QueueError};

/// The largest side file read back; a bigger one is left alone and
/// reported (nothing postern writes comes near it).
pub const MAX_SIDE_FILE: u64 = 64 << 20;

/// A side file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SideFile {
    /// Storm suppression's open windows and their counts.
    Storm,
}

impl SideFile {
    /// Every side file.
    const ALL: &'static [SideFile] = &[SideFile::Storm];

    /// Its name in the queue directory.
    pub fn name(self) -> &'static str {
        match self {
            SideFile::Storm => "storm.json",
        }
    }

    /// The name it is written under before the rename.
    fn tmp_name(self) -> &'static str {
        match self {
            SideFile::Storm => "storm.json.tmp",
        }
    }
}

/// Is `name` (in the queue directory) a side file or one being written?
pub(super) fn known(name: &str) -> bool {
    SideFile::ALL
        .iter()
        .any(|f| f.name() == name || f.tmp_name() == name)
}

impl Queue {
    fn side_path(&self, name: &str) -> PathBuf {
        self.shared.dir.join(name)
    }

    /// Replace side file `f` with `bytes`, atomically and durably.
    /// Blocking (it syncs): call it off the event loop.
    pub fn save_side(&self, f: SideFile, bytes: &[u8]) -> Result<(), QueueError> {
        let fs = &self.shared.storage;
        let tmp = self.side_path(f.tmp_name());
        match fs.remove(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let file = fs.open(&tmp, OpenMode::CreateNew)?;
        let written = file.write_all_at(bytes, 0).and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written {
            let _ = fs.remove(&tmp);
            return Err(e.into());
        }
        fs.rename(&tmp, &self.side_path(f.name()))?;
        fs.sync_dir(&self.shared.dir)?;
        Ok(())
    }

    /// The content of side file `f`; `None` when there is none.
    pub fn load_side(&self, f: SideFile) -> Result<Option<Vec<u8>>, QueueError> {
        let file = match self
            .shared
            .storage
            .open(&self.side_path(f.name()), OpenMode::Read)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = file.size()?;
        if len > MAX_SIDE_FILE {
            return Err(QueueError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {len} octets, over the {MAX_SIDE_FILE} read back; move it away",
                    self.side_path(f.name()).display()
                ),
            )));
        }
        let mut buf = Vec::new();
        let n = usize::try_from(len).unwrap_or(0);
        file.read_append_at(&mut buf, n, 0)?;
        Ok(Some(buf))
    }

    /// Remove side file `f` (nothing to do when there is none).
    pub fn remove_side(&self, f: SideFile) -> Result<(), QueueError> {
        match self.shared.storage.remove(&self.side_path(f.name())) {
            Ok(()) => {
                self.shared.storage.sync_dir(&self.shared.dir)?;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Limits, Queue};
    use std::time::Duration;

    #[test]
    fn a_side_file_is_replaced_whole_and_known_to_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_messages: 10,
            max_age: Duration::from_secs(3600),
            retry_intervals: vec![Duration::from_secs(60)],
        };
        let (q, _) = Queue::open(dir.path(), limits.clone()).unwrap();
        assert_eq!(q.load_side(SideFile::Storm).unwrap(), None);
        q.save_side(SideFile::Storm, b"one").unwrap();
        q.save_side(SideFile::Storm, b"two").unwrap();
        assert_eq!(q.load_side(SideFile::Storm).unwrap().unwrap(), b"two");
        assert!(!dir.path().join("storm.json.tmp").exists());
        q.close();
        // A leftover temporary file (a cut during a save) is no stranger.
        std::fs::write(dir.path().join("storm.json.tmp"), b"half").unwrap();
        let (q, rec) = Queue::open(dir.path(), limits).unwrap();
        assert_eq!(rec.set_aside, 0);
        assert_eq!(q.load_side(SideFile::Storm).unwrap().unwrap(), b"two");
        q.remove_side(SideFile::Storm).unwrap();
        q.remove_side(SideFile::Storm).unwrap();
        assert_eq!(q.load_side(SideFile::Storm).unwrap(), None);
        q.close();
    }
}
