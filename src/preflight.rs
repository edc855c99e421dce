//! What `postern check` tries on this machine once the file itself is
//! valid, so that a config `check` passes is one `serve` can start with:
//!
//! - the directories postern writes (the queue, the drop directory beside
//!   it, maildir outboxes, the directory of a refresh token it writes
//!   back) can be written, or created, and the files it reads can be read,
//!   by the user the service runs as;
//! - an existing queue directory is one `serve` accepts (not writable by
//!   others, owned by the service's user);
//! - those paths lie where the installed systemd unit lets the service
//!   write (`ProtectSystem=strict` leaves only `StateDirectory=`,
//!   `ReadWritePaths=` and a few more writable);
//! - every listen address can be bound: a port another program holds is an
//!   error (unless the running postern holds it, as at a reload); an
//!   address not on this machine (yet) is a warning, because `serve`
//!   listens on it anyway and takes mail once it comes up.
//!
//! Whose permissions: the user named with `--user`, else, when run as
//! root, the owner of the queue directory, else this process. Running as
//! root, the access tests run in one thread that takes that user's ids
//! (Linux credentials are per thread), never in the whole process.
//!
//! Uses `config` (what is written and read), `maildrop` (where the drop
//! directory is) and `queue` (the control socket's name, its directory
//! check).

use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use crate::config::{Config, Upstream};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// What was tested and how, for the reader.
    Note,
    /// Allowed, but worth a look.
    Warning,
    /// `serve` would fail, or mail would never leave.
    Error,
}

/// One thing `check` found on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What, where, and what to do.
    pub text: String,
}

impl Finding {
    fn new(severity: Severity, text: impl Into<String>) -> Finding {
        Finding {
            severity,
            text: text.into(),
        }
    }
}

/// What the caller asks of the checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--user NAME`: test access as this user.
    pub user: Option<String>,
    /// The unit file to compare the written paths with; `None` looks for
    /// the installed `postern.service`.
    pub unit: Option<PathBuf>,
}

/// A path postern writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The config key it comes from, e.g. `[queue] dir`.
    pub key: String,
    /// The directory written into (a file's directory for files).
    pub dir: PathBuf,
    /// Without it postern cannot run or deliver (else it only loses a
    /// convenience: the drop directory, a rotated token).
    pub required: bool,
    /// What happens when it cannot be written, for the reader.
    pub then: &'static str,
}

/// Every directory postern writes into, by config key.
pub fn written_paths(cfg: &Config) -> Vec<Written> {
    let mut out = vec![
        Written {
            key: "[queue] dir".into(),
            dir: cfg.queue.dir.clone(),
            required: true,
            then: "serve would not start",
        },
        Written {
            key: "the drop directory for `postern sendmail` (beside [queue] dir)".into(),
            dir: crate::maildrop::default_dir(&cfg.queue.dir),
            required: false,
            then: "`postern sendmail` could not keep mail while the daemon is down",
        },
    ];
    for (n, route) in cfg.outbound.routes.iter().enumerate() {
        let name = route_name(n);
        match &route.upstream {
            Upstream::Maildir(m) => out.push(Written {
                key: format!("{name} dir"),
                dir: m.dir.clone(),
                required: true,
                then: "its mail would stay in the queue",
            }),
            Upstream::Smarthost(s) | Upstream::Mx(s) => {
                if let Some(file) = s
                    .oauth
                    .as_ref()
                    .filter(|o| o.flow == crate::config::OAuthFlow::RefreshToken)
                    .and_then(|o| o.refresh_token_file.as_ref())
                {
                    out.push(Written {
                        key: format!(
                            "{name} oauth_refresh_token_file (rewritten when the provider \
                             rotates it)"
                        ),
                        dir: parent_dir(file),
                        required: false,
                        then: "a rotated token would be kept in memory only, and lost at a restart",
                    });
                }
            }
        }
    }
    out
}

/// Every file postern reads, by config key.
fn read_files(cfg: &Config) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let s = &cfg.server;
    for (key, p) in [("tls_cert", &s.tls_cert), ("tls_key", &s.tls_key)] {
        if let Some(p) = p {
            out.push((format!("[server] {key}"), p.clone()));
        }
    }
    for (n, route) in cfg.outbound.routes.iter().enumerate() {
        let name = route_name(n);
        let (Upstream::Smarthost(h) | Upstream::Mx(h)) = &route.upstream else {
            continue;
        };
        for (key, p) in [
            ("ca_file", &h.ca_file),
            ("password_file", &h.password_file),
            ("client_cert", &h.client_cert),
            ("client_key", &h.client_key),
        ] {
            if let Some(p) = p {
                out.push((format!("{name} {key}"), p.clone()));
            }
        }
        if let Some(o) = &h.oauth {
            for (key, p) in [
                ("oauth_client_secret_file", &o.client_secret_file),
                ("oauth_refresh_token_file", &o.refresh_token_file),
                ("oauth_ca_file", &o.ca_file),
            ] {
                if let Some(p) = p {
                    out.push((format!("{name} {key}"), p.clone()));
                }
            }
        }
    }
    out
}

/// How a route is named in findings: as `check --connect` and the log name
/// it (`[upstream]` is route 1).
fn route_name(n: usize) -> String {
    format!("route {}", n.saturating_add(1))
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

// ---------------------------------------------------------------------------
// The systemd unit's sandbox.

/// Where systemd lets a unit write, read from its `[Service]` section:
/// `ProtectSystem=`, `ReadWritePaths=`, the `*Directory=` keys,
/// `PrivateTmp=` and `WorkingDirectory=` (relative paths start there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// `ProtectSystem=`: `no`, `yes`, `full` or `strict`.
    pub protect_system: String,
    /// Writable under `strict` (and writable anyway otherwise).
    pub writable: Vec<PathBuf>,
    /// `WorkingDirectory=`.
    pub working_dir: Option<PathBuf>,
}

impl Sandbox {
    /// Read a unit file's text and its drop-ins' (in order: later ones
    /// override, an empty `ReadWritePaths=` resets the list as systemd
    /// does).
    pub fn parse(texts: &[&str]) -> Sandbox {
        let mut sb = Sandbox {
            protect_system: "no".into(),
            ..Sandbox::default()
        };
        let mut rw: Vec<PathBuf> = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut private_tmp = false;
        for text in texts {
            let mut in_service = false;
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with('[') {
                    in_service = line == "[Service]";
                    continue;
                }
                if !in_service || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let (key, value) = (key.trim(), value.trim());
                let words = || value.split_whitespace();
                let base = match key {
                    "StateDirectory" => Some("/var/lib"),
                    "RuntimeDirectory" => Some("/run"),
                    "CacheDirectory" => Some("/var/cache"),
                    "LogsDirectory" => Some("/var/log"),
                    _ => None,
                };
                if let Some(base) = base {
                    if value.is_empty() {
                        dirs.retain(|d| !d.starts_with(base));
                    }
                    // "name" or "name:mode"-free forms; a name may hold a
                    // path below the base.
                    dirs.extend(words().map(|w| Path::new(base).join(w.trim_start_matches('/'))));
                    continue;
                }
                match key {
                    "ProtectSystem" => sb.protect_system = value.to_ascii_lowercase(),
                    "ReadWritePaths" if value.is_empty() => rw.clear(),
                    "ReadWritePaths" => {
                        rw.extend(words().map(|w| PathBuf::from(w.trim_start_matches(['-', '+']))))
                    }
                    "PrivateTmp" => {
                        private_tmp = matches!(value, "yes" | "true" | "1" | "on");
                    }
                    "WorkingDirectory" => {
                        sb.working_dir = Some(PathBuf::from(value.trim_start_matches(['-', '~'])));
                    }
                    _ => {}
                }
            }
        }
        sb.writable = rw;
        sb.writable.extend(dirs);
        if private_tmp {
            sb.writable.push("/tmp".into());
            sb.writable.push("/var/tmp".into());
        }
        sb
    }

    /// `path` as the service sees it: relative paths start at
    /// `WorkingDirectory=` (or `/`, systemd's default).
    pub fn absolute(&self, path: &Path) -> PathBuf {
        let base = self.working_dir.clone().unwrap_or_else(|| "/".into());
        normalize(&base.join(path))
    }

    /// May the service write below `path`?
    pub fn allows(&self, path: &Path) -> bool {
        let p = self.absolute(path);
        let read_only: &[&str] = match self.protect_system.as_str() {
            "strict" => return self.writable.iter().any(|w| p.starts_with(normalize(w))),
            "full" => &["/usr", "/boot", "/efi", "/etc"],
            "yes" | "true" | "1" | "on" => &["/usr", "/boot", "/efi"],
            _ => &[],
        };
        !read_only.iter().any(|r| p.starts_with(r))
            || self.writable.iter().any(|w| p.starts_with(normalize(w)))
    }
}

/// The directories of `written` the unit would not let postern write.
pub fn outside_sandbox<'w>(written: &'w [Written], sandbox: &Sandbox) -> Vec<&'w Written> {
    written.iter().filter(|w| !sandbox.allows(&w.dir)).collect()
}

/// `.` and `..` taken out, lexically (the paths may not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Where packages and `board/install.sh` put the unit, and where an admin's
/// own copy and drop-ins go.
const UNIT_PATHS: &[&str] = &[
    "/etc/systemd/system/postern.service",
    "/lib/systemd/system/postern.service",
    "/usr/lib/systemd/system/postern.service",
];
const DROP_IN_DIR: &str = "/etc/systemd/system/postern.service.d";

/// The installed unit's sandbox (with its drop-ins) and the file it came
/// from, if a unit is installed.
fn installed_sandbox(unit: Option<&Path>) -> Option<(PathBuf, Sandbox)> {
    let path = match unit {
        Some(p) => p.to_path_buf(),
        None => UNIT_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())?,
    };
    let mut texts = vec![std::fs::read_to_string(&path).ok()?];
    if unit.is_none()
        && let Ok(rd) = std::fs::read_dir(DROP_IN_DIR)
    {
        let mut confs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        confs.sort();
        texts.extend(confs.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    Some((path, Sandbox::parse(&refs)))
}

// ---------------------------------------------------------------------------
// Whose permissions.

/// A user to test access as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

/// `name` (or a uid) from /etc/passwd, its groups from /etc/group. Read
/// directly: postern calls no NSS (static builds).
fn account(by: &str) -> Option<Account> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let (name, uid, gid) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?, f.get(3)?);
        (*name == by || *uid == by)
            .then(|| Some((name.to_string(), uid.parse().ok()?, gid.parse().ok()?)))?
    })?;
    let mut groups = vec![gid];
    if let Ok(group) = std::fs::read_to_string("/etc/group") {
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if let (Some(g), Some(members)) = (f.get(2).and_then(|g| g.parse().ok()), f.get(3))
                && members.split(',').any(|m| m == name)
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
    }
    Some(Account {
        name,
        uid,
        gid,
        groups,
    })
}

/// Run `f` in a thread that has `who`'s ids (root only; the rest of the
/// process keeps its own).
fn as_account<T: Send>(who: &Account, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    use rustix::process::{Gid, Uid};
    std::thread::scope(|s| {
        s.spawn(|| {
            let groups: Vec<Gid> = who.groups.iter().map(|g| Gid::from_raw(*g)).collect();
            rustix::thread::set_thread_groups(&groups)?;
            rustix::thread::set_thread_gid(Gid::from_raw(who.gid))?;
            rustix::thread::set_thread_uid(Uid::from_raw(who.uid))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the access test thread panicked")))
    })
}

// ---------------------------------------------------------------------------
// The checks.

/// Run every check `check` can make on this machine for `cfg`.
pub fn run(cfg: &Config, opts: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    let written = written_paths(cfg);
    let read = read_files(cfg);

    let me = rustix::process::geteuid().as_raw();
    let wanted = match &opts.user {
        Some(name) => match account(name) {
            Some(a) => Some((a, format!("as user {name} (--user)"))),
            None => {
                out.push(Finding::new(
                    Severity::Error,
                    format!("--user {name}: no such user in /etc/passwd"),
                ));
                None
            }
        },
        None if me == 0 => std::fs::metadata(&cfg.queue.dir)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .filter(|&uid| uid != 0)
            .and_then(|uid| account(&uid.to_string()))
            .map(|a| {
                let why = format!(
                    "as user {} (the owner of {})",
                    a.name,
                    cfg.queue.dir.display()
                );
                (a, why)
            }),
        None => None,
    };
    // Who `serve` will run as: the queue directory must be that user's own.
    let service_uid = wanted.as_ref().map_or(me, |(a, _)| a.uid);
    let tests = || access_tests(&written, &read);
    let results = match wanted {
        Some((a, why)) if a.uid != me && me == 0 => match as_account(&a, tests) {
            Ok(r) => {
                out.push(Finding::new(
                    Severity::Note,
                    format!("files and directories checked {why}"),
                ));
                r
            }
            Err(e) => {
                out.push(Finding::new(
                    Severity::Warning,
                    format!(
                        "cannot take the ids of user {} ({e}); files checked as this process",
                        a.name
                    ),
                ));
                tests()
            }
        },
        Some((a, _)) if a.uid != me => {
            out.push(Finding::new(
                Severity::Warning,
                format!(
                    "files checked as this process (uid {me}), not as user {}: only root can test \
                     as another user (sudo postern check)",
                    a.name
                ),
            ));
            tests()
        }
        Some(_) => tests(),
        None if me == 0 => {
            out.push(Finding::new(
                Severity::Note,
                "files and directories checked as root, who may write anywhere; give the \
                 service's user (--user postern) to check as it",
            ));
            tests()
        }
        None => tests(),
    };
    out.extend(results);
    if let Err(e) = crate::queue::check_queue_dir(&cfg.queue.dir, service_uid) {
        out.push(Finding::new(
            Severity::Error,
            format!("[queue] dir: serve would refuse it: {e}"),
        ));
    }

    if let Some((unit_path, sandbox)) = installed_sandbox(opts.unit.as_deref()) {
        let outside = outside_sandbox(&written, &sandbox);
        for w in &outside {
            out.push(Finding::new(
                if w.required {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                format!(
                    "{}: {} is outside what {} lets the service write (ProtectSystem={}; \
                     writable: {}); put it under one of those, or add ReadWritePaths={} in a \
                     drop-in (systemctl edit postern)",
                    w.key,
                    sandbox.absolute(&w.dir).display(),
                    unit_path.display(),
                    sandbox.protect_system,
                    sandbox
                        .writable
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                    sandbox.absolute(&w.dir).display(),
                ),
            ));
        }
        if outside.is_empty() {
            out.push(Finding::new(
                Severity::Note,
                format!(
                    "every directory postern writes is writable under {}",
                    unit_path.display()
                ),
            ));
        }
    }

    let running =
        std::os::unix::net::UnixStream::connect(crate::queue::control_socket(&cfg.queue.dir))
            .is_ok();
    let mut addrs: Vec<SocketAddr> = cfg.server.listen.clone();
    addrs.extend(cfg.server.listen_tls.iter().copied());
    for addr in addrs {
        if let Some(f) = bind_test(addr, running) {
            out.push(f);
        }
    }
    out
}

/// Can each directory be written (or created) and each file read, by
/// whoever runs this?
fn access_tests(written: &[Written], read: &[(String, PathBuf)]) -> Vec<Finding> {
    use rustix::fs::{Access, access};
    let mut out = Vec::new();
    for w in written {
        // The directory, or the nearest one above it that exists (postern
        // creates what is missing).
        let mut at = w.dir.clone();
        let mut created = false;
        while !at.exists() {
            match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => {
                    at = p.to_path_buf();
                    created = true;
                }
                _ => {
                    at = PathBuf::from(".");
                    created = true;
                    break;
                }
            }
        }
        let problem = if !at.is_dir() {
            Some(format!("{} is not a directory", at.display()))
        } else {
            access(&at, Access::WRITE_OK | Access::EXEC_OK)
                .err()
                .map(|e| format!("{} is not writable: {}", at.display(), io::Error::from(e)))
        };
        if let Some(p) = problem {
            let what = if created {
                format!("{} cannot be created: {p}", w.dir.display())
            } else {
                p
            };
            out.push(Finding::new(
                if w.required {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                format!("{}: {what}; {}", w.key, w.then),
            ));
        }
    }
    for (key, p) in read {
        if let Err(e) = access(p, Access::READ_OK) {
            out.push(Finding::new(
                Severity::Error,
                format!(
                    "{key}: {} cannot be read: {}; serve reads it",
                    p.display(),
                    io::Error::from(e)
                ),
            ));
        }
    }
    out
}

/// Bind `addr` and let go at once: what `serve` will meet.
fn bind_test(addr: SocketAddr, running: bool) -> Option<Finding> {
    let e = match std::net::TcpListener::bind(addr) {
        Ok(_) => return None,
        Err(e) => e,
    };
    Some(match e.kind() {
        io::ErrorKind::AddrInUse if running => Finding::new(
            Severity::Note,
            format!("listen: {addr} is in use, by the running postern (as at a reload)"),
        ),
        io::ErrorKind::AddrInUse => Finding::new(
            Severity::Error,
            format!(
                "listen: {addr} is in use by another program (another mail server? \
                 `ss -ltnp 'sport = :{}'` names it); serve would fail",
                addr.port()
            ),
        ),
        io::ErrorKind::AddrNotAvailable => Finding::new(
            Severity::Warning,
            format!(
                "listen: {} is not an address of this machine (yet); serve listens on {addr} \
                 anyway and takes mail once the address comes up (check the address if it \
                 should be up already)",
                addr.ip()
            ),
        ),
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => Finding::new(
            Severity::Warning,
            format!(
                "listen: {addr} not tested: ports below 1024 need root or CAP_NET_BIND_SERVICE \
                 (the shipped unit grants it)"
            ),
        ),
        _ => Finding::new(Severity::Error, format!("listen: cannot bind {addr}: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = include_str!("../board/postern.service");

    #[test]
    fn the_shipped_unit_allows_its_state_directory_only() {
        let sb = Sandbox::parse(&[UNIT]);
        assert_eq!(sb.protect_system, "strict");
        assert_eq!(
            sb.working_dir.as_deref(),
            Some(Path::new("/var/lib/postern"))
        );
        assert!(sb.allows(Path::new("/var/lib/postern/queue")));
        assert!(sb.allows(Path::new("queue")));
        assert!(sb.allows(Path::new("/tmp/x")));
        assert!(!sb.allows(Path::new("/var/spool/postern")));
        assert!(!sb.allows(Path::new("/etc/postern")));
        assert!(!sb.allows(Path::new("/var/lib/postern/../postfix")));
        // A drop-in adds a path; an empty assignment resets the list.
        let sb = Sandbox::parse(&[UNIT, "[Service]\nReadWritePaths=-/srv/outbox\n"]);
        assert!(sb.allows(Path::new("/srv/outbox/new")));
        let sb = Sandbox::parse(&[
            "[Service]\nProtectSystem=strict\nReadWritePaths=/a\nReadWritePaths=\n",
        ]);
        assert!(!sb.allows(Path::new("/a")));
        // Without strict, only the system directories are read-only.
        let sb = Sandbox::parse(&["[Service]\nProtectSystem=full\n"]);
        assert!(sb.allows(Path::new("/var/spool/postern")));
        assert!(!sb.allows(Path::new("/etc/postern/token")));
        assert!(Sandbox::parse(&[""]).allows(Path::new("/etc/x")));
    }

    #[test]
    fn a_port_in_use_and_an_address_not_here() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let f = bind_test(addr, false).unwrap();
        assert_eq!(f.severity, Severity::Error);
        assert!(f.text.contains("in use by another program"), "{}", f.text);
        assert_eq!(bind_test(addr, true).unwrap().severity, Severity::Note);
        // TEST-NET-3: on no machine's interfaces.
        let f = bind_test("203.0.113.77:2525".parse().unwrap(), false).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.text.contains("not an address of this machine (yet)"),
            "{}",
            f.text
        );
        assert!(!f.text.contains("another mail server"), "{}", f.text);
        drop(held);
        assert_eq!(bind_test(addr, false), None);
    }
}
