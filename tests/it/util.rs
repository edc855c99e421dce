//! Test helpers: run the real `postern` binary on a generated config, talk
//! SMTP to it, and a scriptable upstream SMTP server (STARTTLS, AUTH) that
//! records what it receives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything a test waits for is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_postern"))
}

/// A free loopback port (bound then released; the kernel does not hand it
/// out again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound but never listening, so no other test can take it
/// (a port from `free_port` is released and may be handed out again).
pub fn refusing_port() -> (rustix::fd::OwnedFd, u16) {
    use rustix::net::{AddressFamily, SocketType, bind, getsockname, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let port = SocketAddr::try_from(getsockname(&fd).unwrap())
        .unwrap()
        .port();
    (fd, port)
}

/// A running postern. Killed (SIGTERM, then SIGKILL) on drop; its stderr is
/// kept and printed if the test fails.
pub struct Postern {
    pub child: Option<Child>,
    pub port: u16,
    log: Arc<Mutex<String>>,
    log_thread: Option<std::thread::JoinHandle<()>>,
}

impl Postern {
    /// Start with `config` (TOML text) written to `dir/postern.toml`, cwd = dir.
    pub fn start(dir: &Path, config: &str, port: u16) -> Postern {
        Postern::spawn(dir, config, port, Command::new(bin()))
    }

    /// [`Postern::start`] with the process umask set first, as by an
    /// admin's shell outside the shipped unit.
    pub fn start_with_umask(dir: &Path, config: &str, port: u16, umask: &str) -> Postern {
        let mut sh = Command::new("sh");
        sh.args(["-c", &format!("umask {umask}; exec \"$0\" \"$@\"")])
            .arg(bin());
        Postern::spawn(dir, config, port, sh)
    }

    fn spawn(dir: &Path, config: &str, port: u16, mut cmd: Command) -> Postern {
        let cfg = dir.join("postern.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&cfg)
            .current_dir(dir)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        let log_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut p = Postern {
            child: Some(child),
            port,
            log,
            log_thread: Some(log_thread),
        };
        p.wait_log("postern started");
        p
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the log contains `needle` (the daemon says what it did;
    /// no sleeping and hoping).
    pub fn wait_log(&mut self, needle: &str) {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "postern exited ({st}) before saying {needle:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("postern log never said {needle:?}; log:\n{}", self.log());
    }

    /// Stop with SIGTERM and wait for the process to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                if let Some(t) = self.log_thread.take() {
                    let _ = t.join();
                }
                return st;
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("postern did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn smtp(&self) -> Smtp {
        Smtp::connect(SocketAddr::from(([127, 0, 0, 1], self.port)), None)
    }
}

impl Drop for Postern {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- postern log ----\n{}", self.log());
        }
    }
}

/// A minimal blocking SMTP client that speaks raw lines, so tests assert
/// the exact wire replies.
pub struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    pub fn connect(addr: SocketAddr, from_ip: Option<std::net::IpAddr>) -> Smtp {
        let s = match from_ip {
            None => TcpStream::connect_timeout(&addr, DEADLINE).unwrap(),
            Some(ip) => {
                // std cannot bind before connect; use socket2-free trick via
                // the `postern` crate's own resolver helpers is overkill:
                // a UDP-free approach is to use a std TcpStream from libc…
                // Simplest portable way: python-free bind through rustix.
                bind_connect(ip, addr)
            }
        };
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        // Without this, a command written in two pieces (or data, then the
        // dot) waits for a delayed ACK: 40 ms a time on loopback.
        s.set_nodelay(true).unwrap();
        let w = s.try_clone().unwrap();
        Smtp {
            r: BufReader::new(s),
            w,
        }
    }

    /// Read one complete reply; returns (code, full text of all lines).
    pub fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).unwrap();
            assert!(
                n > 0,
                "connection closed while waiting for a reply; got so far: {all:?}"
            );
            all.push_str(&line);
            let b = line.as_bytes();
            if b.len() < 4 || b[3] == b' ' || b[3] == b'\r' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (code, all);
            }
        }
    }

    pub fn send(&mut self, line: &str) {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    }

    /// Send a line to a connection the server may have closed already.
    pub fn send_lossy(&mut self, line: &str) {
        let _ = self.w.write_all(format!("{line}\r\n").as_bytes());
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// Send a command and expect a reply code.
    pub fn cmd(&mut self, line: &str, want: u16) -> String {
        self.send(line);
        let (code, text) = self.reply();
        assert_eq!(code, want, "after {line:?} got {text:?}");
        text
    }

    /// Is the connection closed by the server?
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0) | Err(_))
    }

    /// The usual dialogue for one message; returns the final reply text.
    pub fn send_mail(&mut self, from: &str, to: &[&str], data: &[u8]) -> (u16, String) {
        self.cmd(&format!("MAIL FROM:<{from}>"), 250);
        for t in to {
            self.cmd(&format!("RCPT TO:<{t}>"), 250);
        }
        self.cmd("DATA", 354);
        self.raw(data);
        self.raw(b"\r\n.\r\n");
        self.reply()
    }
}

pub fn bind_connect(ip: std::net::IpAddr, to: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fam = if ip.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = socket(fam, SocketType::STREAM, None).unwrap();
    bind(&fd, &SocketAddr::new(ip, 0)).unwrap();
    connect(&fd, &to).unwrap();
    TcpStream::from(fd)
}

/// What the fake upstream received.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    pub auth_user: Option<String>,
    /// The XOAUTH2 bearer token used, if any (outbound tests).
    pub auth_token: Option<String>,
    /// MAIL carried SMTPUTF8.
    pub smtputf8: bool,
    /// The MAIL FROM line and each accepted RCPT TO line, as sent.
    pub mail_line: String,
    pub rcpt_lines: Vec<String>,
}

/// How the fake upstream behaves.
#[derive(Clone, Default)]
pub struct UpstreamOpts {
    /// Offer STARTTLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Require AUTH with (user, password).
    pub auth: Option<(String, String)>,
    /// Recipients containing this substring get 550 5.1.1.
    pub reject_rcpt: Option<String>,
    /// Speak TLS from the first byte (port 465 style) instead of STARTTLS.
    pub implicit_tls: bool,
    /// Offer only AUTH LOGIN (old servers), not PLAIN.
    pub login_only: bool,
    // Outbound tests; all off by default.
    /// Greet with this line instead of 220 (e.g. "421 4.3.2 busy").
    pub greeting: Option<String>,
    /// Recipients containing .0 get the reply line .1 (e.g. a quota 550).
    pub rcpt_reply: Option<(String, String)>,
    /// While above zero, the reply to the final dot is 451 (and it counts down).
    pub data_fail: Option<Arc<std::sync::atomic::AtomicUsize>>,
    /// Offer and accept AUTH XOAUTH2 for `auth`'s user with tokens starting "tok-".
    pub xoauth2: bool,
    /// Advertise this SIZE instead of 50000000.
    pub size: Option<u64>,
    /// An old hop: no 8BITMIME in the EHLO reply.
    pub no_8bitmime: bool,
    /// Say these bytes after the final dot instead of a plain 250 (the
    /// message counts as received), then close the connection.
    pub data_reply: Option<Vec<u8>>,
    /// Offer SMTPUTF8, and refuse a UTF-8 address in a transaction that
    /// did not declare it, as Postfix does (553 5.6.7).
    pub smtputf8: bool,
    /// Offer DSN (RFC 3461).
    pub dsn: bool,
}

pub struct Upstream {
    pub port: u16,
    pub rx: mpsc::Receiver<Received>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    pub fn start(opts: UpstreamOpts) -> Upstream {
        Upstream::start_on(0, opts)
    }

    pub fn start_on(port: u16, opts: UpstreamOpts) -> Upstream {
        Upstream::start_on_ip("127.0.0.1".parse().unwrap(), port, opts)
    }

    pub fn start_on_ip(ip: std::net::IpAddr, port: u16, opts: UpstreamOpts) -> Upstream {
        let l = TcpListener::bind((ip, port)).unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let (tx, opts) = (tx.clone(), opts.clone());
                        std::thread::spawn(move || {
                            let _ = serve_upstream(s, &opts, &tx);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Upstream { port, rx, stop }
    }

    /// The next message, or panic after the deadline.
    pub fn next(&self) -> Received {
        self.rx
            .recv_timeout(DEADLINE)
            .expect("upstream received nothing in time")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

trait Rw: Read + Write {}
impl<T: Read + Write> Rw for T {}

fn serve_upstream(
    s: TcpStream,
    opts: &UpstreamOpts,
    tx: &mpsc::Sender<Received>,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(DEADLINE))?;
    let mut conn: Box<dyn Rw> = Box::new(s.try_clone()?);
    let mut tls = false;
    if opts.implicit_tls {
        let sc = rustls::ServerConnection::new(opts.tls.clone().unwrap()).unwrap();
        conn = Box::new(rustls::StreamOwned::new(sc, s.try_clone()?));
        tls = true;
    }
    match &opts.greeting {
        Some(g) => {
            conn.write_all(format!("{g}\r\n").as_bytes())?;
            if !g.starts_with("220") {
                conn.flush()?;
                return Ok(());
            }
        }
        None => conn.write_all(b"220 upstream.test ESMTP fake\r\n")?,
    }
    let mut auth_token = None;
    let mut auth_user = None;
    let mut cur = Received::default();
    let mut buf = Vec::new();
    loop {
        let line = match read_line(&mut conn, &mut buf)? {
            Some(l) => l,
            None => return Ok(()),
        };
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            let mut r = format!(
                "250-upstream.test\r\n250-PIPELINING\r\n{}250-SIZE {}\r\n",
                if opts.no_8bitmime {
                    ""
                } else {
                    "250-8BITMIME\r\n"
                },
                opts.size.unwrap_or(50_000_000)
            );
            if opts.tls.is_some() && !tls && !opts.implicit_tls {
                r.push_str("250-STARTTLS\r\n");
            }
            if opts.auth.is_some() && (tls || opts.tls.is_none()) {
                r.push_str(if opts.xoauth2 {
                    "250-AUTH LOGIN XOAUTH2\r\n"
                } else if opts.login_only {
                    "250-AUTH LOGIN\r\n"
                } else {
                    "250-AUTH PLAIN LOGIN\r\n"
                });
            }
            if opts.smtputf8 {
                r.push_str("250-SMTPUTF8\r\n");
            }
            if opts.dsn {
                r.push_str("250-DSN\r\n");
            }
            r.push_str("250 ENHANCEDSTATUSCODES\r\n");
            conn.write_all(r.as_bytes())?;
        } else if upper == "STARTTLS" {
            conn.write_all(b"220 2.0.0 go ahead\r\n")?;
            let cfg = opts.tls.clone().unwrap();
            let sc = rustls::ServerConnection::new(cfg).unwrap();
            let raw = s.try_clone()?;
            conn = Box::new(rustls::StreamOwned::new(sc, raw));
            tls = true;
            buf.clear();
        } else if upper == "AUTH LOGIN" {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            conn.write_all(b"334 VXNlcm5hbWU6\r\n")?;
            let u = read_line(&mut conn, &mut buf)?.unwrap_or_default();
            conn.write_all(b"334 UGFzc3dvcmQ6\r\n")?;
            let p = read_line(&mut conn, &mut buf)?.unwrap_or_default();
            let u = String::from_utf8_lossy(&b64.decode(u.trim()).unwrap_or_default()).to_string();
            let p = String::from_utf8_lossy(&b64.decode(p.trim()).unwrap_or_default()).to_string();
            if Some((u.clone(), p)) == opts.auth {
                auth_user = Some(u);
                conn.write_all(b"235 2.7.0 ok\r\n")?;
            } else {
                conn.write_all(b"535 5.7.8 bad credentials\r\n")?;
            }
        } else if upper.starts_with("AUTH XOAUTH2 ") && opts.xoauth2 {
            use base64::Engine;
            let dec = base64::engine::general_purpose::STANDARD
                .decode(line[13..].trim())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&dec).to_string();
            let user = text
                .strip_prefix("user=")
                .and_then(|r| r.split('\x01').next())
                .unwrap_or("")
                .to_string();
            let token = text
                .split("auth=Bearer ")
                .nth(1)
                .and_then(|r| r.split('\x01').next())
                .unwrap_or("")
                .to_string();
            let want = opts.auth.as_ref().map(|(u, _)| u.clone());
            if Some(user.clone()) == want && token.starts_with("tok-") {
                auth_user = Some(user);
                auth_token = Some(token);
                conn.write_all(b"235 2.7.0 ok\r\n")?;
            } else {
                // As Gmail does: a JSON challenge, then 535 after the empty line.
                conn.write_all(b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n")?;
                let _ = read_line(&mut conn, &mut buf)?;
                conn.write_all(b"535 5.7.8 Username and Password not accepted\r\n")?;
            }
        } else if upper.starts_with("AUTH PLAIN ") {
            use base64::Engine;
            let dec = base64::engine::general_purpose::STANDARD
                .decode(line[11..].trim())
                .unwrap_or_default();
            let parts: Vec<&[u8]> = dec.split(|b| *b == 0).collect();
            let (u, p) = (
                String::from_utf8_lossy(parts.get(1).copied().unwrap_or(b"")).to_string(),
                String::from_utf8_lossy(parts.get(2).copied().unwrap_or(b"")).to_string(),
            );
            if Some((u.clone(), p)) == opts.auth {
                auth_user = Some(u);
                conn.write_all(b"235 2.7.0 ok\r\n")?;
            } else {
                conn.write_all(b"535 5.7.8 bad credentials\r\n")?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            if opts.auth.is_some() && auth_user.is_none() {
                conn.write_all(b"530 5.7.0 authentication required\r\n")?;
                continue;
            }
            cur = Received {
                tls,
                auth_user: auth_user.clone(),
                auth_token: auth_token.clone(),
                ..Default::default()
            };
            cur.from = between(&line, '<', '>');
            cur.mail_line = line.clone();
            cur.smtputf8 = upper.contains(" SMTPUTF8");
            if opts.smtputf8 && !cur.smtputf8 && !cur.from.is_ascii() {
                conn.write_all(b"553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n")?;
                conn.flush()?;
                continue;
            }
            conn.write_all(b"250 2.1.0 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            let r = between(&line, '<', '>');
            if opts.smtputf8 && !cur.smtputf8 && !r.is_ascii() {
                conn.write_all(b"553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n")?;
                conn.flush()?;
                continue;
            }
            if let Some((_, reply)) = opts
                .rcpt_reply
                .as_ref()
                .filter(|(x, _)| r.contains(x.as_str()))
            {
                conn.write_all(format!("{reply}\r\n").as_bytes())?;
            } else if opts.reject_rcpt.as_deref().is_some_and(|x| r.contains(x)) {
                conn.write_all(b"550 5.1.1 no such user here\r\n")?;
            } else {
                cur.rcpts.push(r);
                cur.rcpt_lines.push(line.clone());
                conn.write_all(b"250 2.1.5 ok\r\n")?;
            }
        } else if upper == "DATA" {
            if cur.rcpts.is_empty() {
                conn.write_all(b"554 5.5.1 no valid recipients\r\n")?;
                continue;
            }
            conn.write_all(b"354 go\r\n")?;
            let mut data = Vec::new();
            loop {
                let Some(l) = read_raw_line(&mut conn, &mut buf)? else {
                    return Ok(());
                };
                if l == b".\r\n" {
                    break;
                }
                let l = if l.starts_with(b"..") {
                    &l[1..]
                } else {
                    &l[..]
                };
                data.extend_from_slice(l);
            }
            cur.data = data;
            if let Some(n) = &opts.data_fail
                && n.load(std::sync::atomic::Ordering::SeqCst) > 0
            {
                n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                conn.write_all(b"451 4.3.0 try again later\r\n")?;
                conn.flush()?;
                continue;
            }
            if let Some(reply) = &opts.data_reply {
                let _ = tx.send(std::mem::take(&mut cur));
                conn.write_all(reply)?;
                conn.flush()?;
                return Ok(());
            }
            conn.write_all(b"250 2.0.0 accepted\r\n")?;
            let _ = tx.send(std::mem::take(&mut cur));
        } else if upper == "RSET" || upper == "NOOP" {
            conn.write_all(b"250 2.0.0 ok\r\n")?;
        } else if upper == "QUIT" {
            conn.write_all(b"221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            conn.write_all(b"502 5.5.1 what\r\n")?;
        }
        conn.flush()?;
    }
}

fn between(s: &str, a: char, b: char) -> String {
    let i = s.find(a).map(|i| i + 1).unwrap_or(0);
    let j = s[i..].find(b).map(|j| i + j).unwrap_or(s.len());
    s[i..j].to_string()
}

fn read_raw_line(conn: &mut Box<dyn Rw>, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            return Ok(Some(buf.drain(..=i).collect()));
        }
        let mut tmp = [0u8; 8192];
        let n = conn.read(&mut tmp)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn read_line(conn: &mut Box<dyn Rw>, buf: &mut Vec<u8>) -> std::io::Result<Option<String>> {
    Ok(read_raw_line(conn, buf)?.map(|l| {
        String::from_utf8_lossy(&l)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }))
}

/// A CA and a server certificate for `localhost`/127.0.0.1, written to dir;
/// returns (ca.pem path, server config).
pub fn test_tls(dir: &Path) -> (PathBuf, Arc<rustls::ServerConfig>) {
    test_tls_with(dir, |_| {})
}

/// Like [`test_tls`], with the server certificate's parameters adjusted
/// (validity dates, names) before it is signed.
pub fn test_tls_with(
    dir: &Path,
    adjust: impl FnOnce(&mut rcgen::CertificateParams),
) -> (PathBuf, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    adjust(&mut params);
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let cfg = postern::tls::server_config(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    (ca_path, cfg)
}

/// The upstream section for a plain-SMTP smarthost on loopback `port`.
pub fn smarthost(port: u16) -> String {
    format!("kind = \"smarthost\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"")
}

/// A config for tests: listen on `port`, queue in `dir/queue`, upstream
/// section as given.
pub fn config(port: u16, upstream: &str, extra_policy: &str) -> String {
    format!(
        r#"hostname = "relay.test"
log_level = "debug"

[server]
listen = ["127.0.0.1:{port}"]
max_message_size = "64KiB"
max_recipients = 5

[policy]
allow_clients = ["127.0.0.1/32", "::1/128"]
{extra_policy}

[queue]
dir = "queue"
retry_intervals = ["1s"]

[upstream]
{upstream}
"#
    )
}
