//! The storage the queue writes through: the real filesystem, or (in tests)
//! a simulator that can lose whatever was not synced and tear writes at a
//! power cut (`sim.rs`).
//!
//! Only what the queue needs: positional reads and writes, data sync, a
//! directory listing, rename, remove, directory sync and the spool lock.
//! Every durability decision is made by the caller; this layer adds none.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file, read and write.
    ReadWrite,
    /// A new file (fails if it exists), read and write.
    CreateNew,
}

/// An open file.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Read exactly `buf.len()` bytes at `off`.
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Append exactly `n` bytes read at `off` to `buf` (without first
    /// zero-filling it, where the platform allows).
    fn read_append_at(&self, buf: &mut Vec<u8>, n: usize, off: u64) -> io::Result<()> {
        let start = buf.len();
        buf.resize(start + n, 0);
        self.read_exact_at(&mut buf[start..], off)
    }
    /// Write all of `buf` at `off`.
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Make the data written so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Make data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
    /// Current length.
    fn size(&self) -> io::Result<u64>;
    /// Is the file still in a directory? (Not if someone removed it while
    /// it was open: writes then go nowhere that survives a restart.)
    fn linked(&self) -> io::Result<bool> {
        Ok(true)
    }
}

/// What a directory entry is (a symbolic link is not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (a socket, a device, a pipe).
    Other,
}

/// A directory entry's kind, size, and where the storage has them, its
/// owner and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo {
    /// What it is.
    pub kind: EntryKind,
    /// Length in octets.
    pub len: u64,
    /// Owner's user id.
    pub uid: Option<u32>,
    /// Permission bits (`0o777` and the special bits).
    pub mode: Option<u32>,
}

/// `lstat` on the real filesystem.
pub fn real_entry(path: &Path) -> io::Result<EntryInfo> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path)?;
    let t = m.file_type();
    let kind = if t.is_symlink() {
        EntryKind::Symlink
    } else if t.is_dir() {
        EntryKind::Dir
    } else if t.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    };
    Ok(EntryInfo {
        kind,
        len: m.len(),
        uid: Some(m.uid()),
        mode: Some(m.mode() & 0o7777),
    })
}

/// A held lock on the spool directory; released when dropped.
pub trait StorageLock: Send + Sync + fmt::Debug {}

/// A filesystem.
pub trait Storage: Send + Sync + fmt::Debug {
    /// `mkdir -p`.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Open a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    /// Names in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Is this a directory?
    fn is_dir(&self, path: &Path) -> bool;
    /// Atomically rename (durable once the directory is synced).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file (durable once the directory is synced).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Make a directory's entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Take the exclusive lock at `path`; `None` if another process has it.
    fn lock(&self, path: &Path) -> io::Result<Option<Box<dyn StorageLock>>>;
    /// What is at `path` (a symbolic link is not followed). The default is
    /// the real filesystem's answer, for storages that wrap it.
    fn entry(&self, path: &Path) -> io::Result<EntryInfo> {
        real_entry(path)
    }
    /// Set the permission bits of the file or directory at `path`.
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
    /// The user id files are created as (the effective one); `None` where
    /// the storage has no owners.
    fn user(&self) -> Option<u32> {
        Some(rustix::process::geteuid().as_raw())
    }
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl StorageFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, off)
    }
    fn read_append_at(&self, buf: &mut Vec<u8>, n: usize, off: u64) -> io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        // read_to_end fills spare capacity without zeroing it first (a
        // resize would write every byte twice: 1 MiB messages notice).
        // Each reader has its own handle, so moving its offset is safe.
        let mut f = &self.0;
        f.seek(SeekFrom::Start(off))?;
        buf.reserve(n);
        let got = f.take(n as u64).read_to_end(buf)?;
        if got < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "queued message shorter than its record says",
            ));
        }
        Ok(())
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.0.write_all_at(buf, off)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn linked(&self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.0.metadata()?.nlink() > 0)
    }
}

#[derive(Debug)]
struct RealLock(#[allow(dead_code)] File);
impl StorageLock for RealLock {}

/// Mode of every directory the queue makes: queued mail is nobody else's
/// business, whatever the process umask.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the queue makes.
pub const FILE_MODE: u32 = 0o600;

/// Open flags for every queue file: a symbolic link planted where a queue
/// file should be is never followed.
fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

impl Storage for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
        };
        o.mode(FILE_MODE).custom_flags(nofollow());
        Ok(Box::new(RealFile(o.open(path)?)))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        Ok(fs::read_dir(dir)?
            .flatten()
            .map(|e| e.file_name())
            .collect())
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn lock(&self, path: &Path) -> io::Result<Option<Box<dyn StorageLock>>> {
        use std::os::unix::fs::OpenOptionsExt;
        // Private (another user cannot even open it, so cannot hold the
        // lock to keep postern from starting) and never through a link.
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .custom_flags(nofollow())
            .open(path)?;
        if f.try_lock().is_err() {
            return Ok(None);
        }
        Ok(Some(Box::new(RealLock(f))))
    }
}
