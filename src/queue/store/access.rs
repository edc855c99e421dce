//! Who may touch the queue. Queued mail is private and the queue's files
//! decide what is delivered, so at start:
//!
//! - a queue directory its group or every user may write is refused, and
//!   so is one owned by another user (root's is accepted: root could
//!   change it anyway), even when postern runs as root; postern's own
//!   directory left readable by others is made private (0700);
//! - a queue file owned by a user other than postern's own (or root, or
//!   the directory's owner) is not postern's: recovery sets it aside into
//!   `corrupt/` with a warning instead of delivering it (a lock file of
//!   another user is refused: it could be held to keep postern out);
//! - postern's own files left open to others (made under a looser umask by
//!   an older version) are made private again (0600): a line says how
//!   many, and a file others could *write* gets a warning of its own,
//!   naming it (its records are still checked as always, so it is loaded).
//!
//! Files and directories are created private whatever the umask
//! (`storage.rs`: 0600 and 0700, never through a link).
//!
//! Uses the queue's `storage` only.

use std::path::Path;

use super::super::QueueError;
use super::super::storage::{DIR_MODE, EntryInfo, EntryKind, FILE_MODE, Storage};

/// Who postern runs as and who owns the queue directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owners {
    /// Effective user id of this process (`None`: the storage has no owners).
    pub me: Option<u32>,
    /// Owner of the queue directory.
    pub dir: Option<u32>,
}

impl Owners {
    /// The owner of `info` if postern does not trust it: not this user,
    /// not root, not the directory's owner.
    pub fn foreign(&self, info: &EntryInfo) -> Option<u32> {
        let me = self.me?;
        let uid = info.uid?;
        (uid != me && uid != 0 && Some(uid) != self.dir).then_some(uid)
    }
}

fn unsafe_dir(dir: &Path, why: String) -> QueueError {
    QueueError::Unsafe {
        path: dir.to_path_buf(),
        why,
    }
}

/// Check the queue directory before anything in it is trusted.
pub(super) fn check_dir(fs: &dyn Storage, dir: &Path) -> Result<Owners, QueueError> {
    check_dir_as(fs, dir, fs.user())
}

/// [`check_dir`] for postern running as user `me` (`check` asks it for the
/// service's user, which need not be its own).
pub(crate) fn check_dir_as(
    fs: &dyn Storage,
    dir: &Path,
    me: Option<u32>,
) -> Result<Owners, QueueError> {
    let Some(me_uid) = me else {
        return Ok(Owners { me, dir: None });
    };
    // Through a symbolic link to the directory, if the path is one.
    let info = fs.entry(&dir.join(".")).map_err(|e| {
        QueueError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", dir.display()),
        ))
    })?;
    let mode = info.mode.unwrap_or(DIR_MODE);
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 {
            "every user"
        } else {
            "its group"
        };
        return Err(unsafe_dir(
            dir,
            format!(
                "the queue directory is writable by {who} (mode {mode:04o}): they could change or replace queued mail; make it private: chmod 700 {}",
                dir.display()
            ),
        ));
    }
    let owner = info.uid;
    if let Some(uid) = owner
        && uid != me_uid
        && uid != 0
    {
        // As root too: the files root would make there are not that
        // user's, and postern running as that user would set them aside.
        return Err(unsafe_dir(
            dir,
            format!(
                "the queue directory belongs to user id {uid}, not to the user postern runs as ({me_uid}): that user could change queued mail; run postern as that user (the shipped unit does), or chown -R the directory to postern's user"
            ),
        ));
    }
    Ok(Owners { me, dir: owner })
}

/// Make one of postern's own files or directories private again if an
/// older version (or a looser umask) left it open to others. Returns
/// whether it changed anything.
pub(super) fn tighten(fs: &dyn Storage, path: &Path, info: &EntryInfo, owners: &Owners) -> bool {
    let (Some(mode), Some(uid), Some(me)) = (info.mode, info.uid, owners.me) else {
        return false;
    };
    let want = match info.kind {
        EntryKind::File => FILE_MODE,
        EntryKind::Dir => DIR_MODE,
        _ => return false,
    };
    if uid != me || mode & 0o077 == 0 {
        return false;
    }
    if mode & 0o022 != 0 {
        tracing::warn!(file = %path.display(), mode = %format!("{mode:04o}"), "a queue file or directory other users could write: made private; check who else has access to this machine's queue");
    }
    match fs.set_mode(path, want) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot make a queue file private");
            false
        }
    }
}
