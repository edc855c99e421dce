//! Who may touch the queue. Queued mail is private and the queue's files
//! decide what is delivered, so at start: a queue directory every user may
//! write is refused, and so is one owned by another (non-root) user; a
//! group-writable one is warned about. A queue file owned by a user other
//! than postern's own (or root, or the directory's owner) is not postern's:
//! recovery sets it aside instead of delivering it. Postern's own files
//! left readable by others (made under a looser umask by an older version)
//! are made private again. Files and directories are created private
//! whatever the umask (`storage.rs`: 0600 and 0700, never through a link).

use std::path::Path;

use super::super::QueueError;
use super::super::storage::{DIR_MODE, EntryInfo, EntryKind, FILE_MODE, Storage};

/// Who postern runs as and who owns the queue directory.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owners {
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
    let me = fs.user();
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
    if mode & 0o002 != 0 {
        return Err(unsafe_dir(
            dir,
            format!(
                "the queue directory is writable by every user (mode {mode:04o}): anyone could change or replace queued mail; make it private: chmod 700 {}",
                dir.display()
            ),
        ));
    }
    let owner = info.uid;
    if let Some(uid) = owner
        && uid != me_uid
        && uid != 0
        && me_uid != 0
    {
        return Err(unsafe_dir(
            dir,
            format!(
                "the queue directory belongs to user id {uid}, not to the user postern runs as ({me_uid}): that user could change queued mail; chown it to postern's user"
            ),
        ));
    }
    if mode & 0o020 != 0 {
        tracing::warn!(dir = %dir.display(), mode = %format!("{mode:04o}"), "queue directory is writable by its group: its members could change queued mail (chmod g-w)");
    }
    if me_uid == 0
        && let Some(uid) = owner
        && uid != 0
    {
        tracing::warn!(dir = %dir.display(), owner = uid, "running as root in a queue directory of another user: files made now belong to root, and postern running as that user will set them aside");
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
    match fs.set_mode(path, want) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot make a queue file private");
            false
        }
    }
}
