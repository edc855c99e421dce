//! The control socket: how `postern queue …` talks to the running daemon.
//!
//! The daemon is the only writer of the queue (it holds the spool lock), so
//! the operator commands do not open the queue themselves: they connect to
//! `<queue dir>/control.sock`, served by the daemon, send one request line
//! and print the answer. The socket is mode 0600: only the user the daemon
//! runs as (and root) may list or change the queue.
//!
//! Protocol (one request per connection): the client sends `LIST`, `SHOW
//! ID`, `FLUSH`, `DELETE ID`, `HOLD ID`, `RELEASE ID` or `STATUS` and a
//! newline; the daemon answers `OK` or `ERR <reason>` on the first line,
//! then text to print (for `STATUS`, a [`Snapshot`](crate::status::Snapshot)
//! in JSON), then closes.
//!
//! Uses `queue`, `observe` and `status`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use smol::Async;
use smol::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::observe::Observer;
use crate::queue::{Queue, QueueId, Summary};

/// Longest request line accepted (a command and an id).
const MAX_REQUEST: usize = 256;
/// A client that sends nothing for this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The socket path for a queue directory (the queue owns the name: it is
/// the only code that knows what lives in its directory).
pub fn socket_path(queue_dir: &Path) -> PathBuf {
    crate::queue::control_socket(queue_dir)
}

/// Why a control command failed, on the client side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Nobody listens: the daemon is not running (or uses another queue dir).
    #[error(
        "postern is not running: nothing listens on {} (start it with 'postern serve', or check [queue] dir in the config)",
        .0.display()
    )]
    NotRunning(PathBuf),
    /// The socket is there but this user may not use it.
    #[error(
        "permission denied on {}: run this as the user postern runs as, or as root",
        .0.display()
    )]
    Denied(PathBuf),
    /// Talking to the daemon failed half way.
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Bind the control socket (replacing a stale one: the caller holds the
/// queue lock, so no other daemon can be serving it).
pub fn bind(queue_dir: &Path) -> std::io::Result<Async<UnixListener>> {
    let path = socket_path(queue_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Async::new(l)
}

/// Serve requests until the task is dropped.
pub async fn serve(listener: Async<UnixListener>, queue: Queue, observer: Observer) {
    loop {
        let conn = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let q = queue.clone();
        let o = observer.clone();
        smol::spawn(async move {
            let talk = handle(conn, q, o);
            let timeout = async {
                smol::Timer::after(REQUEST_TIMEOUT).await;
            };
            smol::future::or(talk, timeout).await;
        })
        .detach();
    }
}

async fn handle(conn: Async<UnixStream>, queue: Queue, observer: Observer) {
    let mut r = smol::io::BufReader::new(smol::io::AsyncReadExt::take(&conn, MAX_REQUEST as u64));
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).await.is_err() {
        return;
    }
    let req = String::from_utf8_lossy(&line).trim().to_string();
    let answer = match execute(&req, &queue, &observer).await {
        Ok(text) => format!("OK\n{text}"),
        Err(why) => format!("ERR {why}\n"),
    };
    let mut w = &conn;
    let _ = w.write_all(answer.as_bytes()).await;
    let _ = w.flush().await;
}

async fn execute(req: &str, queue: &Queue, observer: &Observer) -> Result<String, String> {
    let mut words = req.split_ascii_whitespace();
    let cmd = words.next().unwrap_or("").to_ascii_uppercase();
    let arg = words.next();
    let id = || -> Result<QueueId, String> {
        let a = arg.ok_or_else(|| format!("{} needs a queue id", cmd.to_ascii_lowercase()))?;
        a.parse::<QueueId>()
            .map_err(|_| format!("'{a}' is not a queue id (hexadecimal, as 'queue list' shows)"))
    };
    // `postern status` runs from cron and monitoring every few minutes: not
    // worth a line each.
    if cmd == "STATUS" {
        tracing::debug!(request = %req, "control request");
    } else {
        tracing::info!(request = %req, "control request");
    }
    match cmd.as_str() {
        "STATUS" => serde_json::to_string(&crate::status::snapshot(queue, observer))
            .map(|mut j| {
                j.push('\n');
                j
            })
            .map_err(|e| format!("cannot encode the status: {e}")),
        "LIST" => Ok(format_list(&queue.list())),
        "SHOW" => queue
            .show(id()?)
            .map(|s| format_show(&s))
            .map_err(|e| e.to_string()),
        "FLUSH" => {
            queue.flush();
            Ok(format!("{} message(s) due now\n", queue.usage().0))
        }
        "HOLD" => {
            let id = id()?;
            queue.hold(id).map_err(|e| e.to_string())?;
            Ok(format!("{id} held\n"))
        }
        "RELEASE" => {
            let id = id()?;
            queue.release(id).map_err(|e| e.to_string())?;
            Ok(format!("{id} released\n"))
        }
        "DELETE" => {
            let id = id()?;
            // delete() waits for a sync: keep the event loop free.
            let q = queue.clone();
            smol::unblock(move || q.delete(id))
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{id} deleted\n"))
        }
        _ => Err(format!("unknown request '{req}'")),
    }
}

/// `1h05m`, `3d2h`, `42s`: the two largest units.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (dd, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if dd > 0 {
        format!("{dd}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

fn next_attempt(s: &Summary) -> String {
    if s.held {
        "held".into()
    } else if s.in_flight {
        "now".into()
    } else if s.next_in.is_zero() {
        "due".into()
    } else {
        format!("in {}", human(s.next_in))
    }
}

fn sender(s: &Summary) -> &str {
    if s.from.is_empty() { "<>" } else { &s.from }
}

/// The table `postern queue list` prints.
pub fn format_list(v: &[Summary]) -> String {
    if v.is_empty() {
        return "queue is empty\n".into();
    }
    let mut out = format!(
        "{:<16} {:>7} {:>9} {:>4} {:<9} {} -> {}\n",
        "ID", "AGE", "SIZE", "ATT", "NEXT", "SENDER", "RECIPIENTS"
    );
    for s in v {
        out.push_str(&format!(
            "{:<16} {:>7} {:>9} {:>4} {:<9} {} -> {}\n",
            s.id.to_string(),
            human(s.age),
            s.size,
            s.attempts,
            next_attempt(s),
            sender(s),
            s.pending.join(", ")
        ));
        if let Some(e) = &s.last_error {
            out.push_str(&format!("{:16} last error: {e}\n", ""));
        }
    }
    let bytes: u64 = v.iter().map(|s| s.size).sum();
    out.push_str(&format!("{} message(s), {bytes} octets\n", v.len()));
    out
}

fn format_show(s: &Summary) -> String {
    let mut out = format!(
        "id:           {}\nsender:       {}\nsize:         {} octets\nage:          {}\narrival:      {} (unix time)\nattempts:     {}\nnext attempt: {}\nlast error:   {}\n",
        s.id,
        sender(s),
        s.size,
        human(s.age),
        s.arrival,
        s.attempts,
        next_attempt(s),
        s.last_error.as_deref().unwrap_or("-"),
    );
    for (r, done) in &s.rcpts {
        out.push_str(&format!(
            "recipient:    {r} ({})\n",
            if *done { "finished" } else { "pending" }
        ));
    }
    out
}

/// Client side: send one request to the daemon serving `queue_dir` and
/// return the text to print.
pub fn request(queue_dir: &Path, req: &str) -> Result<String, ControlError> {
    let path = socket_path(queue_dir);
    let mut s = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(path.clone())
        }
        std::io::ErrorKind::PermissionDenied => ControlError::Denied(path.clone()),
        _ => ControlError::Io(path.clone(), e),
    })?;
    let io = |e| ControlError::Io(path.clone(), e);
    // DELETE waits for a sync; anything longer means the daemon is stuck.
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    s.write_all(format!("{req}\n").as_bytes()).map_err(io)?;
    let mut r = BufReader::new(s);
    let mut first = String::new();
    r.read_line(&mut first).map_err(io)?;
    let mut rest = String::new();
    r.read_to_string(&mut rest).map_err(io)?;
    match first.trim_end().split_once(' ') {
        _ if first.trim_end() == "OK" => Ok(rest),
        Some(("ERR", why)) => Err(ControlError::Refused(why.to_string())),
        _ => Err(ControlError::Io(
            path.clone(),
            std::io::Error::other(format!("unexpected answer {:?}", first.trim_end())),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(65)), "1m05s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 60)), "3h01m");
        assert_eq!(human(Duration::from_secs(2 * 86400 + 7200)), "2d02h");
    }

    #[test]
    fn no_daemon_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = request(tmp.path(), "LIST").unwrap_err();
        assert!(matches!(e, ControlError::NotRunning(_)), "{e}");
        assert!(e.to_string().contains("postern is not running"));
        // A stale socket file (daemon killed) says the same.
        drop(UnixListener::bind(socket_path(tmp.path())).unwrap());
        let e = request(tmp.path(), "LIST").unwrap_err();
        assert!(matches!(e, ControlError::NotRunning(_)), "{e}");
    }
}
