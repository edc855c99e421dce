//! The local drop directory ("maildrop"): where `postern sendmail` leaves a
//! message when the daemon cannot take it (not running at boot, during a
//! restart or an upgrade), and where the daemon picks it up.
//!
//! This module owns the drop-file format, the directory's permissions, and
//! the SMTP hand-over to the daemon's own listener, which both sides use:
//! `sendmail` while the daemon runs, the daemon's pickup for dropped files.
//! It may use `smtp` only; `sendmail` and `daemon` use it.
//!
//! Why these permissions: cron jobs of every local user call sendmail, and
//! the daemon runs as its own user without privileges. The directory
//! belongs to the daemon's user with mode 1733: anyone may create a file in
//! it, only the owner may list it, and the sticky bit stops users from
//! removing or renaming each other's files. Files are 0644 so that the
//! daemon can read them; their names carry 128 random bits, and without the
//! right to list the directory nobody finds another user's file. (Postfix
//! gets the same with a set-gid `postdrop`; postern has no privileged
//! helper.)
//!
//! Why the daemon takes a dropped file in through its own SMTP listener: the
//! message then passes exactly the checks, aliases, header fixes and log
//! lines of any message a local program sends while the daemon runs.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The drop directory's mode: write and search for all, list for the owner
/// only, sticky.
pub const DIR_MODE: u32 = 0o1733;
/// A dropped file's mode: the daemon (another user) must read it.
pub const FILE_MODE: u32 = 0o644;
/// How often the daemon looks for dropped files (also once at start).
pub const SCAN_INTERVAL: Duration = Duration::from_secs(5);
/// A `tmp-*` file older than this was left by a sendmail that was killed
/// while writing; the daemon removes it.
pub const STALE_TMP: Duration = Duration::from_secs(24 * 3600);
/// Most recipients one dropped file may name (the config's upper bound for
/// `max_recipients`).
pub const MAX_RCPTS: usize = 100_000;
/// Longest envelope line (`to ` + an RFC 5321 path, with room to spare).
const MAX_ENVELOPE_LINE: usize = 1024;
/// How long to wait for each reply from the daemon (the last one follows
/// its fsync of the message).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for the daemon to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// First line of every drop file; a version bump changes it.
const MAGIC: &str = "postern-maildrop 1";
/// Suffix of a file ready for pickup.
const READY_SUFFIX: &str = ".msg";
/// Prefix of a file still being written.
const TMP_PREFIX: &str = "tmp-";
/// Suffix given to a file the daemon refused for good (kept, logged).
pub const REFUSED_SUFFIX: &str = ".refused";

/// Where the drop directory is when the config does not say: beside the
/// queue directory (`/var/lib/postern/queue` → `/var/lib/postern/maildrop`),
/// because the queue directory itself is private to the daemon.
pub fn default_dir(queue_dir: &Path) -> PathBuf {
    match queue_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join("maildrop"),
        _ => PathBuf::from("maildrop"),
    }
}

/// The envelope of a dropped message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// Envelope recipients, at least one.
    pub rcpts: Vec<String>,
}

/// Why a dropped file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DropError {
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a plain file of ours (a symbolic link, a hard link, a directory).
    #[error("not a plain file with one link ({0}); set aside")]
    NotPlain(&'static str),
    /// Not in the drop format.
    #[error("not a postern drop file: {0}")]
    Format(String),
}

/// Create the drop directory if it is missing and give it its mode,
/// whatever the umask. The daemon calls this at start.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} exists and is not a directory",
            dir.display()
        )));
    }
    if meta.mode() & 0o7777 != DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

fn random_name() -> io::Result<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| io::Error::other("no randomness from the system"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A drop file being written: `tmp-<random>` in the drop directory (or an
/// unnamed scratch file when there is no drop directory), turned into a
/// ready file by [`Spool::keep`].
#[derive(Debug)]
pub struct Spool {
    out: BufWriter<File>,
    /// The temporary name; `None` for an unnamed scratch file.
    tmp: Option<PathBuf>,
    dir: Option<PathBuf>,
    name: String,
}

impl Spool {
    /// Start a drop file in `dir` with `env` as its envelope.
    pub fn create(dir: &Path, env: &Envelope) -> io::Result<Spool> {
        let name = random_name()?;
        let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc_o_nofollow())
            .open(&tmp)?;
        // The umask may have taken bits the daemon needs.
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        let mut s = Spool {
            out: BufWriter::new(file),
            tmp: Some(tmp),
            dir: Some(dir.to_path_buf()),
            name,
        };
        s.write_envelope(env)?;
        Ok(s)
    }

    /// An unnamed scratch file (in the system's temporary directory,
    /// removed at once), for when there is no drop directory: the message
    /// is still read whole before it is handed over, but cannot be kept.
    pub fn scratch(env: &Envelope) -> io::Result<Spool> {
        let name = random_name()?;
        let path = std::env::temp_dir().join(format!("postern-sendmail-{name}"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&path)?;
        std::fs::remove_file(&path)?;
        let mut s = Spool {
            out: BufWriter::new(file),
            tmp: None,
            dir: None,
            name,
        };
        s.write_envelope(env)?;
        Ok(s)
    }

    fn write_envelope(&mut self, env: &Envelope) -> io::Result<()> {
        writeln!(self.out, "{MAGIC}")?;
        writeln!(self.out, "from {}", env.sender)?;
        for r in &env.rcpts {
            writeln!(self.out, "to {r}")?;
        }
        writeln!(self.out)
    }

    /// Append one line of message text (without its line end).
    pub fn line(&mut self, text: &[u8]) -> io::Result<()> {
        self.out.write_all(text)?;
        self.out.write_all(b"\r\n")
    }

    /// Whether this spool can be kept for the daemon (it has a drop
    /// directory).
    pub fn can_keep(&self) -> bool {
        self.tmp.is_some()
    }

    /// Read the file back from the start: its envelope and a reader
    /// positioned at the message.
    pub fn reread(&mut self) -> Result<(Envelope, BufReader<File>), DropError> {
        self.out.flush()?;
        let mut f = self.out.get_ref().try_clone()?;
        f.rewind()?;
        let mut r = BufReader::new(f);
        let env = read_envelope(&mut r)?;
        Ok((env, r))
    }

    /// Make the file durable and ready for the daemon's pickup; returns its
    /// path.
    pub fn keep(mut self) -> io::Result<PathBuf> {
        let (Some(tmp), Some(dir)) = (self.tmp.take(), self.dir.take()) else {
            return Err(io::Error::other("no drop directory to keep the message in"));
        };
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        let ready = dir.join(format!("{}{READY_SUFFIX}", self.name));
        std::fs::rename(&tmp, &ready)?;
        // The rename must survive a power cut too. Other users may not
        // open the directory (it is not readable for them), so they sync
        // the file system the file is on instead. From here on the file is
        // in place: a failed sync is worth a warning, not "not sent".
        let synced = File::open(&dir)
            .and_then(|d| d.sync_all())
            .or_else(|_| rustix::fs::syncfs(self.out.get_ref()).map_err(io::Error::from));
        if let Err(e) = synced {
            eprintln!(
                "sendmail: warning: cannot sync {} ({e}); the message is kept but a power cut now could lose it",
                dir.display()
            );
        }
        Ok(ready)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Not kept: the message went to the daemon, or was refused.
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// The ready files in `dir`, oldest first; also removes `tmp-*` files
/// abandoned for longer than [`STALE_TMP`] (logged).
pub fn ready_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let now = SystemTime::now();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(READY_SUFFIX) {
            if is_random_name(stem) {
                let mtime = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((mtime, entry.path()));
            }
        } else if name.starts_with(TMP_PREFIX) {
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok());
            if age.is_some_and(|a| a > STALE_TMP) {
                tracing::warn!(
                    file = %entry.path().display(),
                    "maildrop: removing a file a sendmail left half-written over a day ago"
                );
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

fn is_random_name(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A dropped file opened for pickup.
#[derive(Debug)]
pub struct Dropped {
    /// Its envelope.
    pub envelope: Envelope,
    /// The user who dropped it (the file's owner).
    pub uid: u32,
    /// Its size in octets.
    pub size: u64,
    /// The message, positioned after the envelope.
    pub message: BufReader<File>,
}

/// Open a ready file: a plain file with one link (no symbolic or hard link
/// planted by a user to make the daemon read what they cannot), at most
/// `max_size` octets.
pub fn open(path: &Path, max_size: u64) -> Result<Dropped, DropError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow() | rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                DropError::NotPlain("a symbolic link")
            } else {
                DropError::Io(e)
            }
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(DropError::NotPlain("not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(DropError::NotPlain("a hard link"));
    }
    if meta.len() > max_size {
        return Err(DropError::Format(format!(
            "{} octets, more than the {max_size} a drop file may hold",
            meta.len()
        )));
    }
    let mut r = BufReader::new(f);
    let envelope = read_envelope(&mut r)?;
    Ok(Dropped {
        envelope,
        uid: meta.uid(),
        size: meta.len(),
        message: r,
    })
}

fn read_envelope(r: &mut impl BufRead) -> Result<Envelope, DropError> {
    let mut line = Vec::new();
    let mut next = |r: &mut dyn BufRead| -> Result<String, DropError> {
        line.clear();
        r.take(MAX_ENVELOPE_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            return Err(DropError::Format(
                "an envelope line is cut or too long".into(),
            ));
        }
        line.pop();
        String::from_utf8(line.clone())
            .map_err(|_| DropError::Format("an envelope line is not UTF-8".into()))
    };
    if next(r)? != MAGIC {
        return Err(DropError::Format(format!(
            "the first line is not {MAGIC:?}"
        )));
    }
    let from = next(r)?;
    let Some(sender) = from.strip_prefix("from ") else {
        return Err(DropError::Format(
            "the second line is not \"from …\"".into(),
        ));
    };
    let sender = sender.to_string();
    let mut rcpts = Vec::new();
    loop {
        let l = next(r)?;
        if l.is_empty() {
            break;
        }
        let Some(rcpt) = l.strip_prefix("to ") else {
            return Err(DropError::Format(format!("unexpected envelope line {l:?}")));
        };
        if rcpts.len() == MAX_RCPTS {
            return Err(DropError::Format(format!(
                "more than {MAX_RCPTS} recipients"
            )));
        }
        rcpts.push(rcpt.to_string());
    }
    if rcpts.is_empty() {
        return Err(DropError::Format("no recipients".into()));
    }
    Ok(Envelope { sender, rcpts })
}

/// Why the daemon did not take a message over SMTP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// Nothing answers on the listener.
    #[error("cannot reach the postern daemon at {addr}: {source}")]
    Down {
        /// The listener tried.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The connection broke or timed out mid-conversation.
    #[error("lost the connection to the postern daemon at {addr}: {source}")]
    Io {
        /// The listener.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Reading the message to hand over failed.
    #[error("cannot read the message: {0}")]
    Input(io::Error),
    /// The daemon answered with an error.
    #[error("the postern daemon refused {what}: {reply}")]
    Refused {
        /// Which step.
        what: String,
        /// The reply as received.
        reply: String,
        /// 4xx (try later) or 5xx.
        temporary: bool,
    },
}

impl SubmitError {
    /// True when trying again later may work (everything but a 5xx).
    pub fn is_temporary(&self) -> bool {
        !matches!(
            self,
            SubmitError::Refused {
                temporary: false,
                ..
            } | SubmitError::Input(_)
        )
    }
}

struct Client {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
    addr: SocketAddr,
}

impl Client {
    fn io(&self, source: io::Error) -> SubmitError {
        SubmitError::Io {
            addr: self.addr,
            source,
        }
    }

    /// Read one reply; error unless its code is `want`. Returns its text.
    fn expect(&mut self, want: u16, what: &str) -> Result<String, SubmitError> {
        self.w.flush().map_err(|e| self.io(e))?;
        let mut all = String::new();
        loop {
            let mut line = Vec::new();
            let n = (&mut self.r)
                .take(4096)
                .read_until(b'\n', &mut line)
                .map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(io::ErrorKind::UnexpectedEof.into()));
            }
            let line = String::from_utf8_lossy(&line);
            all.push_str(line.trim_end());
            let b = line.as_bytes();
            if b.len() < 4 || b[3] != b'-' {
                let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                if code == want {
                    return Ok(all);
                }
                return Err(SubmitError::Refused {
                    what: what.to_string(),
                    reply: all,
                    temporary: !(500..600).contains(&code),
                });
            }
            all.push_str(" / ");
        }
    }

    fn line(&mut self, s: &str) -> Result<(), SubmitError> {
        let r = self
            .w
            .write_all(s.as_bytes())
            .and_then(|_| self.w.write_all(b"\r\n"));
        r.map_err(|e| self.io(e))
    }
}

/// Hand a message to the daemon's listener at `addr` over SMTP: `message`
/// holds its lines with CRLF ends, not dot-stuffed. Returns the final reply
/// (`250 … queued as ID`).
pub fn submit(
    addr: SocketAddr,
    helo: &str,
    env: &Envelope,
    message: &mut dyn BufRead,
) -> Result<String, SubmitError> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|source| SubmitError::Down { addr, source })?;
    let setup = stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
        .and_then(|_| stream.try_clone());
    let w = setup.map_err(|source| SubmitError::Io { addr, source })?;
    let mut c = Client {
        r: BufReader::new(stream),
        w: BufWriter::new(w),
        addr,
    };
    c.expect(220, "the connection")?;
    c.line(&format!("EHLO {helo}"))?;
    c.expect(250, "EHLO")?;
    c.line(&format!("MAIL FROM:<{}>", env.sender))?;
    c.expect(250, &format!("sender <{}>", env.sender))?;
    for r in &env.rcpts {
        c.line(&format!("RCPT TO:<{r}>"))?;
        c.expect(250, &format!("recipient <{r}>"))?;
    }
    c.line("DATA")?;
    c.expect(354, "DATA")?;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = message
            .read_until(b'\n', &mut buf)
            .map_err(SubmitError::Input)?;
        if n == 0 {
            break;
        }
        if buf.first() == Some(&b'.') {
            c.w.write_all(b".").map_err(|e| c.io(e))?;
        }
        c.w.write_all(&buf).map_err(|e| c.io(e))?;
        if buf.last() != Some(&b'\n') {
            c.w.write_all(b"\r\n").map_err(|e| c.io(e))?;
        }
    }
    c.line(".")?;
    let done = c.expect(250, "the message")?;
    c.line("QUIT")?;
    // The message is queued; a lost 221 changes nothing.
    let _ = c.expect(221, "QUIT");
    let _ = c.r.get_mut().read(&mut [0u8; 1]);
    Ok(done)
}

/// The daemon's listener as a place to connect to: a wildcard address
/// means this machine's loopback.
pub fn listener_addr(listen: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// What one pickup round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Files the daemon took in (now queued).
    pub taken: usize,
    /// Files set aside (not ours, or refused for good); each is logged.
    pub set_aside: usize,
    /// Why the round stopped early with files left (the daemon said try
    /// later); they are tried again next round.
    pub deferred: Option<String>,
}

/// One pickup round: hand every ready file in `dir` to the listener at
/// `addr`, oldest first. A file taken is removed; a file that is not a
/// drop file, or that the listener refuses for good, is renamed
/// `*.refused` and logged at error level (kept, never silently lost); a
/// temporary refusal ends the round. Blocking: run it off the event loop.
pub fn pickup(dir: &Path, addr: SocketAddr, helo: &str, max_size: u64) -> io::Result<Round> {
    let mut round = Round::default();
    for path in ready_files(dir)? {
        let mut d = match open(&path, max_size) {
            Ok(d) => d,
            Err(DropError::Io(e)) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                set_aside(&path, &e.to_string());
                round.set_aside += 1;
                continue;
            }
        };
        match submit(addr, helo, &d.envelope, &mut d.message) {
            Ok(reply) => {
                tracing::info!(
                    file = %path.display(),
                    uid = d.uid,
                    from = %crate::smtp::escaped(d.envelope.sender.as_str()),
                    rcpts = d.envelope.rcpts.len(),
                    size = d.size,
                    id = queue_id_of(&reply).unwrap_or("?"),
                    "maildrop: taken in"
                );
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::error!(
                        file = %path.display(),
                        error = %e,
                        "maildrop: queued but cannot remove the file; it will be sent again"
                    );
                }
                round.taken += 1;
            }
            Err(e) if e.is_temporary() => {
                round.deferred = Some(e.to_string());
                break;
            }
            Err(e) => {
                set_aside(
                    &path,
                    &format!("from uid {} sender <{}>: {e}", d.uid, d.envelope.sender),
                );
                round.set_aside += 1;
            }
        }
    }
    Ok(round)
}

fn set_aside(path: &Path, why: &str) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(REFUSED_SUFFIX);
    let aside = PathBuf::from(aside);
    match std::fs::rename(path, &aside) {
        Ok(()) => tracing::error!(
            file = %aside.display(),
            "maildrop: not taken in: {why}; the file is kept for the admin"
        ),
        Err(e) => tracing::error!(
            file = %path.display(),
            error = %e,
            "maildrop: not taken in: {why}; and it cannot be set aside"
        ),
    }
}

/// The queue id in a `250 … queued as ID` reply, for the pickup's log line.
pub fn queue_id_of(reply: &str) -> Option<&str> {
    reply
        .rsplit_once("queued as ")
        .map(|(_, id)| id.split_whitespace().next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            sender: "root@gw.test".into(),
            rcpts: vec!["ops@example.test".into(), "b@example.test".into()],
        }
    }

    #[test]
    fn a_kept_file_reads_back_with_its_envelope_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("maildrop");
        prepare_dir(&drop).unwrap();
        let mode = std::fs::metadata(&drop).unwrap().mode() & 0o7777;
        assert_eq!(mode, DIR_MODE);
        let mut s = Spool::create(&drop, &env()).unwrap();
        s.line(b"Subject: x").unwrap();
        s.line(b"").unwrap();
        s.line(b"body").unwrap();
        let path = s.keep().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, FILE_MODE);
        assert_eq!(ready_files(&drop).unwrap(), vec![path.clone()]);
        let mut d = open(&path, 1 << 20).unwrap();
        assert_eq!(d.envelope, env());
        let mut rest = String::new();
        d.message.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "Subject: x\r\n\r\nbody\r\n");
    }

    #[test]
    fn a_spool_not_kept_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::create(dir.path(), &env()).unwrap();
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn links_and_foreign_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "postern-maildrop 1\nfrom a\nto b\n\nsecret\n").unwrap();
        let sym = dir.path().join(format!("{}.msg", "a".repeat(32)));
        std::os::unix::fs::symlink(&secret, &sym).unwrap();
        assert!(matches!(open(&sym, 1 << 20), Err(DropError::NotPlain(_))));
        let hard = dir.path().join(format!("{}.msg", "b".repeat(32)));
        std::fs::hard_link(&secret, &hard).unwrap();
        assert!(matches!(open(&hard, 1 << 20), Err(DropError::NotPlain(_))));
        let junk = dir.path().join(format!("{}.msg", "c".repeat(32)));
        std::fs::write(&junk, "hello\n").unwrap();
        assert!(matches!(open(&junk, 1 << 20), Err(DropError::Format(_))));
        assert!(matches!(open(&junk, 2), Err(DropError::Format(_))));
    }

    #[test]
    fn the_queue_id_is_read_from_the_reply() {
        assert_eq!(
            queue_id_of("250 2.0.0 Ok: queued as 6B04874500000"),
            Some("6B04874500000")
        );
        assert_eq!(queue_id_of("250 ok"), None);
    }

    #[test]
    fn the_default_dir_is_beside_the_queue() {
        assert_eq!(
            default_dir(Path::new("/var/lib/postern/queue")),
            PathBuf::from("/var/lib/postern/maildrop")
        );
        assert_eq!(default_dir(Path::new("queue")), PathBuf::from("maildrop"));
    }
}
