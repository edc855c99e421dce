//! systemd's readiness protocol (`sd_notify`), without libsystemd: one
//! datagram per state change to the Unix socket named by `$NOTIFY_SOCKET`
//! (a path, or an abstract name written with a leading `@`).
//!
//! This module owns the messages postern sends to its service manager:
//! `READY=1` once the listeners are bound, `RELOADING=1` / `READY=1` around a
//! SIGHUP reload, `STOPPING=1` on SIGTERM, and `WATCHDOG=1` at half the
//! interval systemd asks for in `$WATCHDOG_USEC` (`WatchdogSec=` in the
//! unit). Outside systemd every call is a no-op.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The service manager's notification socket, if we run under one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

/// Why `$NOTIFY_SOCKET` could not be used (logged; the daemon runs anyway).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The variable names something that is not a Unix socket address.
    #[error("NOTIFY_SOCKET={0:?} is not a socket path or @abstract name")]
    BadAddress(String),
    /// The datagram socket could not be created.
    #[error("cannot create a socket for NOTIFY_SOCKET: {0}")]
    Socket(std::io::Error),
}

impl Notifier {
    /// A notifier that sends nothing (not under systemd).
    pub fn none() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Read `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        let watchdog = watchdog_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Notifier {
                target: None,
                watchdog,
            }),
            Some(s) => {
                let mut n = Notifier::to_address(&s.to_string_lossy())?;
                n.watchdog = watchdog;
                Ok(n)
            }
        }
    }

    /// Send to `addr` (a path, or `@name` for an abstract socket).
    pub fn to_address(addr: &str) -> Result<Notifier, NotifyError> {
        let sa = parse_address(addr)?;
        let sock = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        Ok(Notifier {
            target: Some((sock, sa)),
            watchdog: None,
        })
    }

    /// Is there a service manager to tell (`$NOTIFY_SOCKET` was set)?
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1` (half of what systemd asked for), if
    /// the watchdog is on for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// The listeners are up: systemd may start units ordered after us.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// A reload started (followed by [`Notifier::ready`] when it is done).
    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    /// Shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// The event loop is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// A one-line status for `systemctl status`.
    pub fn status(&self, text: &str) {
        // Newlines would start a new assignment; keep it to one line.
        let line: String = text.chars().filter(|&c| c != '\n').collect();
        self.send(&format!("STATUS={line}"));
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target
            && let Err(e) = sock.send_to_addr(msg.as_bytes(), addr)
        {
            // Not fatal: the service manager may be restarting; it will
            // time us out if it really needed the message.
            tracing::debug!(error = %e, msg, "sd_notify failed");
        }
    }
}

fn parse_address(addr: &str) -> Result<SocketAddr, NotifyError> {
    let bad = || NotifyError::BadAddress(addr.to_string());
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| bad())
    } else if addr.starts_with('/') {
        SocketAddr::from_pathname(addr).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

/// The watchdog period, when `WATCHDOG_USEC` is set and `WATCHDOG_PID` (if
/// set) names this process (a forked child must not pet its parent's dog).
fn watchdog_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok()? != me
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_states_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to_address(path.to_str().unwrap()).unwrap();
        n.ready();
        n.reloading();
        n.watchdog();
        n.status("reloaded\nconfig");
        n.stopping();
        assert_eq!(recv(&server), "READY=1");
        assert_eq!(recv(&server), "RELOADING=1");
        assert_eq!(recv(&server), "WATCHDOG=1");
        assert_eq!(recv(&server), "STATUS=reloadedconfig");
        assert_eq!(recv(&server), "STOPPING=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("postern-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::to_address(&format!("@{name}")).unwrap();
        n.ready();
        assert_eq!(recv(&server), "READY=1");
    }

    #[test]
    fn rejects_relative_addresses() {
        assert!(matches!(
            Notifier::to_address("notify.sock"),
            Err(NotifyError::BadAddress(_))
        ));
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_us() {
        assert_eq!(
            watchdog_from(Some("10000000"), None, 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            watchdog_from(Some("10000000"), Some("7"), 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(watchdog_from(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(None, None, 7), None);
        let n = Notifier {
            target: None,
            watchdog: Some(Duration::from_secs(10)),
        };
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        // Outside systemd, sending is a no-op.
        Notifier::none().ready();
    }
}
