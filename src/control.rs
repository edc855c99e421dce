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
//! Uses `queue`, `observe`, `status` and `smtp` (the escaping of what it
//! prints: addresses, subjects and upstream replies are not ours).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use smol::Async;
use smol::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::config::DomainPattern;
use crate::observe::{Observer, RouteStats};
use crate::queue::{Hold, Queue, QueueId, Summary};
use crate::smtp::escaped;

/// Longest request line accepted (a command, an id or a filter).
const MAX_REQUEST: usize = 1024;
/// A client that sends nothing for this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that takes no answer for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client waits for each part of an answer (a bulk delete
/// waits for syncs first).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
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
        // Each stage of a request has its own time limit (see handle).
        smol::spawn(handle(conn, q, o)).detach();
    }
}

async fn handle(conn: Async<UnixStream>, queue: Queue, observer: Observer) {
    let mut r = smol::io::BufReader::new(smol::io::AsyncReadExt::take(&conn, MAX_REQUEST as u64));
    let mut line = Vec::new();
    match crate::deadline::timeout(REQUEST_TIMEOUT, r.read_until(b'\n', &mut line)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    let req = String::from_utf8_lossy(&line).trim().to_string();
    let (answer, body) = match execute(&req, &queue, &observer).await {
        Ok(Answer { text, body }) => (format!("OK\n{text}"), body),
        Err(why) => (format!("ERR {why}\n"), None),
    };
    if !send(&conn, answer.as_bytes()).await {
        return;
    }
    if let Some(mut body) = body {
        let mut buf = Vec::with_capacity(BODY_CHUNK);
        loop {
            let (b, chunk) = smol::unblock(move || {
                let r = body.read_chunk(&mut buf, BODY_CHUNK);
                (body, r.map(|()| buf))
            })
            .await;
            body = b;
            match chunk {
                Ok(c) if c.is_empty() => break,
                Ok(c) => {
                    if !send(&conn, &c).await {
                        return;
                    }
                    buf = c;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control: cannot read a queued body");
                    break;
                }
            }
        }
    }
    let mut w = &conn;
    let _ = w.flush().await;
}

/// Write `bytes` within [`WRITE_TIMEOUT`]; false if the client is gone or
/// does not read.
async fn send(conn: &Async<UnixStream>, bytes: &[u8]) -> bool {
    let mut w = conn;
    matches!(
        crate::deadline::timeout(WRITE_TIMEOUT, w.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// What a request answers: text, then for `SHOW ID BODY` the body.
struct Answer {
    text: String,
    body: Option<crate::queue::BodyReader>,
}

impl From<String> for Answer {
    fn from(text: String) -> Answer {
        Answer { text, body: None }
    }
}

/// Which queued messages a listing or a bulk change means: all of them,
/// narrowed by a route, an age and a sender. On the wire: words
/// `route=NAME`, `older=SECONDS`, `from=ADDR`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A pending recipient goes by this route (its name as `postern
    /// status` shows it).
    pub route: Option<String>,
    /// Queued at least this long.
    pub older_than: Option<Duration>,
    /// The sender: `user@example.com` exactly, `example.com` or
    /// `@example.com` for a domain, `<>` for the null sender (no case).
    pub from: Option<String>,
}

impl Filter {
    /// The request words for this filter (empty when it takes everything).
    pub fn to_words(&self) -> String {
        let mut out = String::new();
        if let Some(r) = &self.route {
            out.push_str(&format!(" route={r}"));
        }
        if let Some(d) = self.older_than {
            out.push_str(&format!(" older={}", d.as_secs()));
        }
        if let Some(f) = &self.from {
            out.push_str(&format!(" from={f}"));
        }
        out
    }

    fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Filter, String> {
        let mut f = Filter::default();
        for w in words {
            match w.split_once('=') {
                Some(("route", v)) => f.route = Some(v.to_string()),
                Some(("from", v)) => f.from = Some(v.to_string()),
                Some(("older", v)) => {
                    let secs = v
                        .parse::<u64>()
                        .map_err(|_| format!("older={v}: not a number of seconds"))?;
                    f.older_than = Some(Duration::from_secs(secs));
                }
                _ => return Err(format!("'{w}' is not a filter (route=, older=, from=)")),
            }
        }
        Ok(f)
    }

    fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Does `s` match? `routes` are the routes in force, in order.
    fn matches(
        &self,
        s: &Summary,
        routes: &[(std::sync::Arc<RouteStats>, Vec<DomainPattern>)],
    ) -> bool {
        if let Some(d) = self.older_than
            && s.age < d
        {
            return false;
        }
        if let Some(f) = &self.from
            && !sender_matches(f, &s.from)
        {
            return false;
        }
        if let Some(name) = &self.route {
            let route_of = |rcpt: &str| {
                let domain = rcpt.rsplit_once('@').map(|(_, d)| d);
                routes
                    .iter()
                    .find(|(_, ds)| ds.iter().any(|d| d.matches(domain)))
                    .map(|(r, _)| r.name.as_str())
            };
            if !s.pending.iter().any(|r| route_of(r) == Some(name.as_str())) {
                return false;
            }
        }
        true
    }
}

/// `--from` against a sender (`""` is `<>`).
fn sender_matches(want: &str, from: &str) -> bool {
    if want == "<>" {
        return from.is_empty();
    }
    match want
        .strip_prefix('@')
        .or((!want.contains('@')).then_some(want))
    {
        Some(domain) => from
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)),
        None => from.eq_ignore_ascii_case(want),
    }
}

/// Largest header section read for `queue show`'s Subject.
const HEADER_READ: usize = 64 * 1024;
/// Chunks a body is sent to `queue show --body` in.
const BODY_CHUNK: usize = 64 * 1024;
/// Longest Subject shown.
const SUBJECT_MAX: usize = 200;

/// The Subject of a message from the start of its body: unfolded,
/// control characters dropped, cut at [`SUBJECT_MAX`] characters.
pub fn subject_of(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut found: Option<String> = None;
    for l in lines.by_ref() {
        if l.is_empty() {
            break;
        }
        match &mut found {
            Some(s) if l.starts_with([' ', '\t']) => s.push_str(l),
            Some(_) => break,
            None => {
                if let Some((name, value)) = l.split_once(':')
                    && name.eq_ignore_ascii_case("subject")
                {
                    found = Some(value.to_string());
                }
            }
        }
    }
    found.map(|s| {
        s.chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .map(|c| if c == '\t' { ' ' } else { c })
            .collect::<String>()
            .trim()
            .chars()
            .take(SUBJECT_MAX)
            .collect()
    })
}

async fn execute(req: &str, queue: &Queue, observer: &Observer) -> Result<Answer, String> {
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
    let all = arg == Some("ALL");
    let filtered = |f: &Filter| -> Vec<Summary> {
        let routes = observer.routes();
        queue
            .list()
            .into_iter()
            .filter(|s| f.matches(s, &routes))
            .collect()
    };
    match cmd.as_str() {
        "STATUS" => serde_json::to_string(&crate::status::snapshot(queue, observer))
            .map(|mut j| {
                j.push('\n');
                Answer::from(j)
            })
            .map_err(|e| format!("cannot encode the status: {e}")),
        "LIST" => {
            // Every word after LIST is a filter word (no id, no ALL).
            let f = Filter::parse(req.split_ascii_whitespace().skip(1))?;
            let v = filtered(&f);
            if v.is_empty() && !f.is_empty() {
                return Ok(format!("no queued message matches (of {})\n", queue.usage().0).into());
            }
            Ok(format_list(&v).into())
        }
        "SHOW" => {
            let id = id()?;
            let s = queue.show(id).map_err(|e| e.to_string())?;
            let with_body = words.next().is_some_and(|w| w.eq_ignore_ascii_case("BODY"));
            let head = match queue.open_body_of(id) {
                Ok(mut r) => smol::unblock(move || {
                    let mut buf = Vec::new();
                    r.read_chunk(&mut buf, HEADER_READ).map(|()| buf)
                })
                .await
                .ok(),
                Err(_) => None,
            };
            let mut text = format_show(&s, head.as_deref().and_then(subject_of));
            let body = if with_body {
                text.push('\n');
                Some(queue.open_body_of(id).map_err(|e| e.to_string())?)
            } else {
                None
            };
            Ok(Answer { text, body })
        }
        "FLUSH" => {
            queue.flush();
            Ok(format!("{} message(s) due now\n", queue.usage().0).into())
        }
        "HOLD" | "RELEASE" if all => {
            let ids: Vec<QueueId> = filtered(&Filter::parse(words)?)
                .iter()
                .map(|s| s.id)
                .collect();
            let hold = cmd == "HOLD";
            // Holds are durable (they wait for a sync): keep the event loop free.
            let q = queue.clone();
            let results = smol::unblock(move || q.set_held_many(&ids, hold)).await;
            let done = results.iter().filter(|(_, r)| r.is_ok()).count();
            let what = if hold { "held" } else { "released" };
            Ok(format!("{done} message(s) {what}\n").into())
        }
        "HOLD" => {
            let id = id()?;
            let q = queue.clone();
            smol::unblock(move || q.hold(id))
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{id} held\n").into())
        }
        "RELEASE" => {
            let id = id()?;
            let q = queue.clone();
            smol::unblock(move || q.release(id))
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{id} released\n").into())
        }
        "DELETE" if all => {
            let ids: Vec<QueueId> = filtered(&Filter::parse(words)?)
                .iter()
                .map(|s| s.id)
                .collect();
            // delete_many() waits for syncs: keep the event loop free.
            let q = queue.clone();
            let results = smol::unblock(move || q.delete_many(&ids)).await;
            let mut out = String::new();
            let mut deleted = 0usize;
            for (id, r) in results {
                match r {
                    Ok(()) => deleted += 1,
                    Err(e) => out.push_str(&format!("{id} not deleted: {e}\n")),
                }
            }
            out.push_str(&format!("{deleted} message(s) deleted\n"));
            Ok(out.into())
        }
        "DELETE" => {
            let id = id()?;
            // delete() waits for a sync: keep the event loop free.
            let q = queue.clone();
            smol::unblock(move || q.delete(id))
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{id} deleted\n").into())
        }
        _ => Err(format!("unknown request '{req}'")),
    }
}

fn human(d: Duration) -> String {
    crate::status::human_duration(d)
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
            escaped(sender(s)),
            s.pending
                .iter()
                .map(|r| escaped(r).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if let Some(e) = &s.last_error {
            out.push_str(&format!("{:16} last error: {}\n", "", escaped(e)));
        }
    }
    let bytes: u64 = v.iter().map(|s| s.size).sum();
    out.push_str(&format!("{} message(s), {bytes} octets\n", v.len()));
    out
}

fn format_show(s: &Summary, subject: Option<String>) -> String {
    let mut out = format!(
        "id:           {}\nsender:       {}\nsubject:      {}\nsize:         {} octets\narrival:      {} ({} ago)\nattempts:     {}\nnext attempt: {}\nlast error:   {}\n",
        s.id,
        escaped(sender(s)),
        escaped(subject.as_deref().unwrap_or("-")),
        s.size,
        crate::smtp::format_rfc3339(s.arrival),
        human(s.age),
        s.attempts,
        match s.hold {
            Hold::None => next_attempt(s),
            Hold::Filter => "held (by a [[filter]] rule)".into(),
            Hold::Storm => "held (by storm suppression)".into(),
            Hold::Operator => "held (by the operator)".into(),
        },
        escaped(s.last_error.as_deref().unwrap_or("-")),
    );
    for (r, done) in &s.rcpts {
        out.push_str(&format!(
            "recipient:    {} ({})\n",
            escaped(r),
            if *done { "finished" } else { "pending" }
        ));
    }
    out
}

/// Client side: send one request to the daemon serving `queue_dir` and
/// return the text to print.
pub fn request(queue_dir: &Path, req: &str) -> Result<String, ControlError> {
    request_bytes(queue_dir, req).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// [`request`], the answer as bytes (a message body need not be UTF-8).
pub fn request_bytes(queue_dir: &Path, req: &str) -> Result<Vec<u8>, ControlError> {
    let path = socket_path(queue_dir);
    let mut s = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(path.clone())
        }
        std::io::ErrorKind::PermissionDenied => ControlError::Denied(path.clone()),
        _ => ControlError::Io(path.clone(), e),
    })?;
    let io = |e| ControlError::Io(path.clone(), e);
    // DELETE waits for syncs; anything longer means the daemon is stuck.
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    s.write_all(format!("{req}\n").as_bytes()).map_err(io)?;
    let mut r = BufReader::new(s);
    let mut first = String::new();
    r.read_line(&mut first).map_err(io)?;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).map_err(io)?;
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
    fn subjects_are_found_unfolded_and_cleaned() {
        let head = b"From: a@b\r\nsubject: UPS on battery\r\n  since 10:02\r\nTo: c@d\r\n\r\nSubject: body";
        assert_eq!(
            subject_of(head).as_deref(),
            Some("UPS on battery  since 10:02")
        );
        assert_eq!(subject_of(b"From: a@b\r\n\r\nSubject: in the body"), None);
        assert_eq!(
            subject_of(b"Subject: a\x1b[2Jb\r\n\r\n").as_deref(),
            Some("a[2Jb")
        );
        let long = format!("Subject: {}\r\n\r\n", "x".repeat(500));
        assert_eq!(subject_of(long.as_bytes()).unwrap().len(), SUBJECT_MAX);
    }

    #[test]
    fn filters_by_sender_age_and_route() {
        let f = Filter {
            route: Some("smtp.example.net".into()),
            older_than: Some(Duration::from_secs(172_800)),
            from: Some("@Lan.Test".into()),
        };
        let words = f.to_words();
        assert_eq!(words, " route=smtp.example.net older=172800 from=@Lan.Test");
        assert_eq!(Filter::parse(words.split_ascii_whitespace()), Ok(f));
        assert!(Filter::parse(["bogus"].into_iter()).is_err());
        assert!(sender_matches("dev@lan.test", "DEV@lan.test"));
        assert!(sender_matches("lan.test", "dev@lan.test"));
        assert!(sender_matches("@lan.test", "dev@lan.test"));
        assert!(!sender_matches("lan.test", "dev@lan.test.evil"));
        assert!(sender_matches("<>", ""));
        assert!(!sender_matches("<>", "dev@lan.test"));
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
