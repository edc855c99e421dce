//! `kind = "maildir"`: each delivered message becomes one `.eml` file in a
//! directory, written whole and synced under a temporary name, then renamed,
//! so a reader never sees half a message. The directory and the files are
//! private (0700, 0600) whatever the umask, as the queue's are: they hold
//! the same mail.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::queue::{BodyReader, Job};

/// Write `job` as `<dir>/<id>.eml`, with `Return-Path` and `X-Envelope-To`
/// prepended so the envelope is not lost. Blocking.
pub fn deliver(dir: &Path, job: &Job, mut body: BodyReader) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(crate::queue::DIR_MODE)
        .create(dir)?;
    let final_path = dir.join(format!("{}.eml", job.id));
    let tmp = dir.join(format!(".{}.tmp", job.id));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::queue::FILE_MODE)
        // A link planted under the temporary name is not followed.
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    let res = (|| {
        let rcpts: Vec<&str> = job.rcpts().map(|(_, r)| r.addr.as_str()).collect();
        write!(
            f,
            "Return-Path: <{}>\r\nX-Envelope-To: {}\r\n",
            job.envelope.from,
            rcpts.join(", ")
        )?;
        let mut buf = Vec::with_capacity(64 << 10);
        loop {
            body.read_chunk(&mut buf, 64 << 10)?;
            if buf.is_empty() {
                break;
            }
            f.write_all(&buf)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, &final_path)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map(|_| final_path)
}
