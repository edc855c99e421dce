//! `[upstream]` (and the upstream half of each `[[route]]`): where mail goes.
//! `kind` picks the table: a smarthost (or MX delivery, which takes the
//! same keys but `host`/`hosts`) or a maildir-style outbox.
//!
//! Uses the config's own `schema`, `convert`, `values` and `oauth`; `tls`
//! (through the error collector) to describe unusable certificate files.

use std::path::PathBuf;

use super::convert::{
    HOUR, MINUTE, SECOND, auth_method, boolean, count, duration, host_name, ip_family, mailbox,
    path, port, rate, size, text, tls_mode, username,
};
use super::oauth::{self, OAuthConfig};
use super::schema::{
    Section, Toml, default, list_at, non_empty, optional, required, scalar, table,
};
use super::server::{MAX_MESSAGE_SIZE, MIN_MESSAGE_SIZE};
use super::values::{AuthMethod, Dur, HostPort, IpFamily, Size, TlsMode};
use super::{Ctx, Reported};

/// `[upstream]`: where mail goes.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// `kind = "smarthost"`
    Smarthost(SmarthostConfig),
    /// `kind = "maildir"`
    Maildir(MaildirConfig),
    /// `kind = "mx"`: straight to the recipient domain's MX hosts. `host`
    /// and `hosts` are empty; `port` is the port spoken on every MX (25).
    Mx(SmarthostConfig),
}

/// One host of a smarthost route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS spoken with it.
    pub tls: TlsMode,
}

table! {
    /// `[upstream] kind = "smarthost"` (and `kind = "mx"`).
    pub struct SmarthostConfig, read as SmarthostKeys {
        /// Optional extra trust anchors (PEM); system roots otherwise.
        ca_file: Option<PathBuf> = optional(path),
        /// Optional; AUTH when set (then password_file is required).
        username: Option<String> = optional(username),
        /// File holding the password (first line; trailing newline ignored).
        password_file: Option<PathBuf> = optional(path),
        /// Default 2: parallel connections to this host.
        max_connections: usize = default(2, count(1, 100)),
        /// Default 100: messages sent over one connection before reconnecting.
        messages_per_connection: usize = default(100, count(1, 100_000)),
        /// Default 30s: TCP connect and TLS handshake.
        connect_timeout: Dur = default(Dur::new(30 * SECOND), duration(SECOND, HOUR)),
        /// Default 5m: each reply (RFC 5321 §4.5.3.2); the reply to the final
        /// dot gets 10m whatever this says.
        command_timeout: Dur = default(Dur::new(5 * MINUTE), duration(SECOND, HOUR)),
        /// Default any: which address family to connect over.
        ip_family: IpFamily = default(IpFamily::Any, ip_family),
        /// TLS client certificate chain (PEM), for certificate-authenticated connectors.
        client_cert: Option<PathBuf> = optional(path),
        /// Its private key (PEM).
        client_key: Option<PathBuf> = optional(path),
        /// AUTH with a password (PLAIN/LOGIN) or an OAuth2 token (XOAUTH2).
        auth: AuthMethod = default(AuthMethod::Password, auth_method),
        /// Default false. With `tls = "none"`, credentials may go in clear
        /// text: accepted only for a loopback or private host, and checked
        /// against the address connected to before each AUTH.
        allow_plaintext_auth: bool = default(false, boolean),
        /// The envelope sender becomes this address (the global one otherwise).
        rewrite_sender: Option<String> = optional(mailbox),
        /// With `rewrite_sender`: rewrite the From header too (display name
        /// kept, the original address goes to Reply-To unless one exists).
        rewrite_from: Option<bool> = optional(boolean),
        /// Messages per minute sent over this route; more wait in the queue.
        max_messages_per_minute: Option<u32> = optional(rate(100_000)),
        /// Recipients per 24 hours over this route; more wait in the queue.
        max_recipients_per_day: Option<u32> = optional(rate(10_000_000)),
        /// The upstream's message size limit when known in advance (the
        /// upstream's EHLO SIZE is learned and used too).
        max_message_size: Option<Size> =
            optional(size(MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE)),
    }
    inputs {
        /// `host`: the one smarthost's name or IP address.
        host_key as "host": Option<String> = optional(host_name),
        /// `port`: default 587 for starttls, 465 for implicit, 25 for none.
        port_key as "port": Option<u16> = optional(port),
        /// `tls`: default starttls (opportunistic for MX).
        tls_key as "tls": Option<TlsMode> = optional(tls_mode),
        /// `hosts`: several smarthosts, tried in order.
        hosts_key as "hosts": Option<Vec<(HostPort, usize)>> = optional(non_empty(
            "give at least one \"host:port\"",
            list_at(scalar(|v| text(v, "\"smtp.example.com:587\"")?.parse::<HostPort>())),
        )),
    }
    computed {
        /// Required (but empty for `kind = "mx"` and with `hosts`). Name or
        /// IP address.
        host: String,
        /// Default 587 for starttls, 465 for implicit, 25 for none.
        port: u16,
        /// Default starttls.
        tls: TlsMode,
        /// Every host to try, in order (`hosts`, or `host`/`port` alone); the
        /// first is `host`/`port`/`tls` above. Empty for `kind = "mx"`.
        hosts: Vec<HostSpec>,
        /// `auth = "xoauth2"`: where and how to get tokens.
        oauth: Option<OAuthConfig>,
    }
}

table! {
    /// `[upstream] kind = "maildir"`
    pub struct MaildirConfig, read as MaildirKeys {
        /// Required. One `.eml` file per delivered message lands here.
        dir: PathBuf = required("\"/var/lib/postern/outbox\"", path),
    }
}

/// The key that picks which of the tables above applies.
pub(crate) const KIND: &[&str] = &["kind"];

/// Every key `[upstream]` may hold.
pub(crate) const KEYS: &[&[&str]] = &[
    KIND,
    SmarthostConfig::KEYS,
    OAuthConfig::KEYS,
    MaildirConfig::KEYS,
];

/// Smarthost keys that mean nothing for `kind = "mx"`.
const NOT_FOR_MX: &[&str] = &["host", "hosts"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Smarthost,
    Maildir,
    Mx,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Smarthost => "smarthost",
            Kind::Maildir => "maildir",
            Kind::Mx => "mx",
        }
    }
    fn keys(self) -> &'static [&'static [&'static str]] {
        match self {
            Kind::Smarthost | Kind::Mx => &[SmarthostConfig::KEYS, OAuthConfig::KEYS],
            Kind::Maildir => &[MaildirConfig::KEYS],
        }
    }
    fn has_key(self, name: &str) -> bool {
        self.keys().iter().any(|l| l.contains(&name))
    }
}

fn kind(v: &toml::de::DeValue) -> Result<Kind, String> {
    let s = text(v, "\"smarthost\"")?;
    match s.to_ascii_lowercase().as_str() {
        "smarthost" => Ok(Kind::Smarthost),
        "maildir" => Ok(Kind::Maildir),
        "mx" => Ok(Kind::Mx),
        _ => Err(format!(
            "\"{s}\" is not an upstream kind; expected \"smarthost\" (forward to a mail server), \
             \"mx\" (straight to each recipient domain's mail servers) \
             or \"maildir\" (write each message into a directory)"
        )),
    }
}

/// Read an `[upstream]` table or the upstream half of a `[[route]]`;
/// `known` is every key the table may hold.
pub(crate) fn read(ctx: &mut Ctx, sec: &Section, known: &[&[&str]]) -> Result<Upstream, Reported> {
    let kind = match sec.get("kind") {
        None => Err(ctx.error(
            sec.at,
            format!(
                "missing required key 'kind' in [{}]; write kind = \"smarthost\" (forward to a \
                 mail server) or kind = \"maildir\" (write each message into a directory)",
                sec.name
            ),
        )),
        Some(item) => super::schema::Conv::conv(&kind, ctx, "kind", item),
    };
    super::unknown_keys(ctx, sec, known);
    let kind = kind?;
    let other = match kind {
        Kind::Smarthost | Kind::Mx => Kind::Maildir,
        Kind::Maildir => Kind::Smarthost,
    };
    for (key, _) in sec.table.iter() {
        let name: &str = key.get_ref();
        if other.has_key(name) && !kind.has_key(name) {
            ctx.error(
                key.span().start,
                format!(
                    "'{name}' is a setting for kind = \"{}\"; it has no meaning with kind = \"{}\"",
                    other.word(),
                    kind.word()
                ),
            );
        }
    }
    match kind {
        Kind::Smarthost => read_smarthost(ctx, sec, false).map(Upstream::Smarthost),
        Kind::Mx => {
            for (key, _) in sec.table.iter() {
                let name: &str = key.get_ref();
                if NOT_FOR_MX.contains(&name) {
                    ctx.error(
                        key.span().start,
                        format!(
                            "'{name}' has no meaning with kind = \"mx\": each recipient domain's \
                             MX hosts are looked up in DNS"
                        ),
                    );
                }
            }
            read_smarthost(ctx, sec, true).map(Upstream::Mx)
        }
        Kind::Maildir => MaildirKeys::read(ctx, sec).build().map(Upstream::Maildir),
    }
}

fn read_smarthost(ctx: &mut Ctx, sec: &Section, mx: bool) -> Result<SmarthostConfig, Reported> {
    let has_hosts = sec.get("hosts").is_some();
    // Keys already reported as meaningless are not read (and complained
    // about) again.
    let sec = &Section {
        skip: match (mx, has_hosts) {
            (true, _) => NOT_FOR_MX,
            (false, true) => &["host"],
            (false, false) => &[],
        },
        ..*sec
    };
    let k = SmarthostKeys::read(ctx, sec);

    if let (Ok(c), Ok(key)) = (&k.client_cert, &k.client_key)
        && c.is_some() != key.is_some()
    {
        let at = sec
            .key_offset("client_cert")
            .or(sec.key_offset("client_key"))
            .unwrap_or(sec.at);
        ctx.error(
            at,
            "client_cert and client_key go together: the certificate chain (PEM) and its private key",
        );
    }
    for (key, value, certificates) in [
        ("client_cert", &k.client_cert, true),
        ("client_key", &k.client_key, false),
        ("ca_file", &k.ca_file, true),
        ("password_file", &k.password_file, false),
    ] {
        if let (Ok(Some(p)), Some(at)) = (value, sec.offset(key)) {
            ctx.check_file(at, key, p, certificates);
        }
    }
    let oauth = match &k.auth {
        Ok(AuthMethod::Xoauth2) => oauth::read(ctx, sec).map(Some),
        Ok(AuthMethod::Password) => {
            for (key, _) in sec.table.iter() {
                let name: &str = key.get_ref();
                if OAuthConfig::KEYS.contains(&name) {
                    ctx.error(
                        key.span().start,
                        format!("'{name}' is used only with auth = \"xoauth2\""),
                    );
                }
            }
            Ok(None)
        }
        Err(_) => Err(Reported),
    };

    let host = match &k.host_key {
        _ if mx => Ok(String::new()),
        _ if has_hosts => {
            if let Some(at) = sec.key_offset("host") {
                ctx.error(
                    at,
                    "give either host (one server) or hosts (several, tried in order), not both",
                );
            }
            Ok(String::new())
        }
        Ok(Some(h)) => Ok(h.clone()),
        Ok(None) => Err(ctx.error(
            sec.at,
            format!(
                "missing required key 'host' in [{}]; e.g. host = \"smtp.example.com\"",
                sec.name
            ),
        )),
        Err(r) => Err(*r),
    };
    let default_tls = if mx {
        TlsMode::Opportunistic
    } else {
        TlsMode::Starttls
    };
    let tls = k.tls_key.map(|t| t.unwrap_or(default_tls));
    let port = resolve_port(ctx, sec, mx, has_hosts, k.port_key, tls);

    // AUTH needs both halves; one without the other is a half-edited config.
    if let (Ok(user), Ok(pw)) = (&k.username, &k.password_file)
        && !matches!(k.auth, Ok(AuthMethod::Xoauth2))
    {
        match (user, pw) {
            (Some(_), None) => {
                let at = sec.key_offset("username").unwrap_or(sec.at);
                ctx.error(
                    at,
                    "username is set but password_file is not; AUTH needs both \
                     (password_file = \"/etc/postern/password\", the password on its first line)",
                );
            }
            (None, Some(_)) => {
                let at = sec.key_offset("password_file").unwrap_or(sec.at);
                ctx.error(
                    at,
                    "password_file is set but username is not; AUTH needs both",
                );
            }
            _ => {}
        }
    }

    let hosts = match (&host, &port, &tls) {
        _ if mx => Ok(Vec::new()),
        (Ok(h), Ok(p), Ok(t)) if !h.is_empty() => Ok(vec![HostSpec {
            host: h.clone(),
            port: *p,
            tls: *t,
        }]),
        (Ok(_), _, Ok(t)) if has_hosts => match &k.hosts_key {
            Ok(Some(entries)) => hosts_from(ctx, entries, *t, sec.get("tls").is_some()),
            _ => Err(Reported),
        },
        _ => Err(Reported),
    };
    let (host, port, tls) = match hosts.as_ref().ok().and_then(|h| h.first()) {
        Some(h) => (Ok(h.host.clone()), Ok(h.port), Ok(h.tls)),
        None => (host, port, tls),
    };
    if matches!(k.auth, Ok(AuthMethod::Xoauth2)) && !matches!(&k.username, Ok(Some(_))) {
        let at = sec.key_offset("auth").unwrap_or(sec.at);
        ctx.error(
            at,
            "auth = \"xoauth2\" needs username = \"the mailbox\" (the account the token is for)",
        );
    }
    if let (Ok(TlsMode::Opportunistic), Ok(Some(_))) = (&tls, &k.username)
        && !mx
    {
        let at = sec.key_offset("tls").unwrap_or(sec.at);
        ctx.error(
            at,
            "tls = \"opportunistic\" may end up in clear text, where credentials are never sent; \
             use tls = \"starttls\" or \"implicit\" with a username",
        );
    }
    if let (Ok(hosts), Ok(Some(_)), Ok(allowed)) = (&hosts, &k.username, &k.allow_plaintext_auth) {
        clear_text_credentials(ctx, sec, hosts, *allowed);
    }
    k.build(host, port, tls, hosts, oauth)
}

/// A next hop credentials may cross to in clear text when the admin says
/// so (`allow_plaintext_auth`): this machine, a private network (RFC 1918,
/// IPv6 unique local) or a link-local neighbour. Never the internet, and
/// not carrier-grade NAT space (the ISP's network, not the site's).
pub fn is_trusted_hop(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local()
        }
    }
}

/// Credentials (a password or an OAuth2 bearer token) to a host spoken to
/// with `tls = "none"` cross the network in clear text: refused, unless
/// `allow_plaintext_auth` says it is a trusted hop on this machine or the
/// LAN, and then only to a loopback or private address (a host name is
/// checked when it is connected to).
fn clear_text_credentials(ctx: &mut Ctx, sec: &Section, hosts: &[HostSpec], allowed: bool) {
    let at = sec
        .key_offset("tls")
        .or(sec.key_offset("hosts"))
        .unwrap_or(sec.at);
    for h in hosts.iter().filter(|h| h.tls == TlsMode::None) {
        let ip = h.host.parse::<std::net::IpAddr>().ok();
        if !allowed {
            ctx.error(
                at,
                format!(
                    "tls = \"none\" with a username: the credentials would cross the network to \
                     {}:{} in clear text; use tls = \"starttls\" or \"implicit\", or, for a \
                     trusted hop on this machine or your LAN, set allow_plaintext_auth = true",
                    h.host, h.port
                ),
            );
        } else if let Some(ip) = ip.filter(|ip| !is_trusted_hop(*ip)) {
            let at = sec.key_offset("allow_plaintext_auth").unwrap_or(at);
            ctx.error(
                at,
                format!(
                    "allow_plaintext_auth: {ip} is not a loopback or private address; \
                     credentials go in clear text only to this machine or the LAN, so use TLS \
                     for this host"
                ),
            );
        } else {
            let at = sec.key_offset("allow_plaintext_auth").unwrap_or(at);
            let when = if ip.is_some() {
                String::new()
            } else {
                " (only while it resolves to a loopback or private address)".to_string()
            };
            ctx.warn(
                at,
                format!(
                    "credentials go to {}:{} in clear text (tls = \"none\", \
                     allow_plaintext_auth = true){when}; anyone on that network can read them",
                    h.host, h.port
                ),
            );
        }
    }
}

/// The port: as given, or the one `tls` is normally spoken on. Port 465
/// speaks TLS from the first byte and 25/587 start in plain text; a
/// mismatch hangs or fails at the first read, with an error that does not
/// point at the config, so it is caught here instead (field: dma#141).
fn resolve_port(
    ctx: &mut Ctx,
    sec: &Section,
    mx: bool,
    has_hosts: bool,
    port: Result<Option<u16>, Reported>,
    tls: Result<TlsMode, Reported>,
) -> Result<u16, Reported> {
    match (port, tls) {
        (Ok(Some(p)), Ok(_)) if mx || has_hosts => {
            if !mx && let Some(at) = sec.key_offset("port") {
                ctx.error(
                    at,
                    "with hosts, give each port in the list (\"smtp.example.com:587\")",
                );
            }
            Ok(p)
        }
        (Ok(None), Ok(_)) if mx => Ok(25),
        (Ok(Some(p)), Ok(t)) => {
            let mismatch = match (p, t) {
                (465, TlsMode::Starttls | TlsMode::None) => Some(
                    "port 465 speaks TLS from the first byte; set tls = \"implicit\"".to_string(),
                ),
                (25 | 587, TlsMode::Implicit) => Some(format!(
                    "port {p} starts in plain text; use tls = \"starttls\" with port {p}, \
                     or port 465 with tls = \"implicit\""
                )),
                _ => None,
            };
            match mismatch {
                Some(m) => {
                    let at = sec
                        .key_offset("tls")
                        .or(sec.key_offset("port"))
                        .unwrap_or(sec.at);
                    Err(ctx.error(
                        at,
                        format!("tls = \"{}\" does not fit port {p}: {m}", t.as_str()),
                    ))
                }
                None => Ok(p),
            }
        }
        (Ok(None), Ok(t)) => Ok(t.default_port()),
        _ => Err(Reported),
    }
}

/// `hosts = ["a.example:587", "b.example:465"]`: without an explicit `tls`,
/// each port says how it is spoken (465 implicit TLS, others STARTTLS).
fn hosts_from(
    ctx: &mut Ctx,
    entries: &[(HostPort, usize)],
    tls: TlsMode,
    tls_explicit: bool,
) -> Result<Vec<HostSpec>, Reported> {
    let mut out = Vec::new();
    let mut bad = false;
    for (entry, at) in entries {
        let port_tls = match entry.port {
            Some(465) => TlsMode::Implicit,
            _ => TlsMode::Starttls,
        };
        let t = if tls_explicit { tls } else { port_tls };
        let port = entry.port.unwrap_or(t.default_port());
        let mismatch = matches!(
            (port, t),
            (
                465,
                TlsMode::Starttls | TlsMode::None | TlsMode::Opportunistic
            ) | (25 | 587, TlsMode::Implicit)
        );
        if mismatch {
            ctx.error(
                *at,
                format!(
                    "hosts: port {port} does not fit tls = \"{}\" (465 speaks TLS from the first \
                     byte, 25 and 587 start in plain text); remove tls to pick per port",
                    t.as_str()
                ),
            );
            bad = true;
        }
        out.push(HostSpec {
            host: entry.host.clone(),
            port,
            tls: t,
        });
    }
    if bad { Err(Reported) } else { Ok(out) }
}

/// Print an upstream's keys (below its `[upstream]` or `[[route]]` line).
pub(crate) fn print(u: &Upstream, out: &mut Toml) {
    match u {
        Upstream::Smarthost(h) | Upstream::Mx(h) => {
            let mx = matches!(u, Upstream::Mx(_));
            out.key("kind", if mx { "mx" } else { "smarthost" });
            if mx {
                out.key("port", &h.port);
                out.key("tls", &h.tls);
            } else if h.hosts.len() > 1 {
                let hs: Vec<String> = h
                    .hosts
                    .iter()
                    .map(|x| {
                        if x.host.contains(':') {
                            format!("[{}]:{}", x.host, x.port)
                        } else {
                            format!("{}:{}", x.host, x.port)
                        }
                    })
                    .collect();
                out.key("hosts", &hs);
                if h.hosts.iter().all(|x| x.tls == h.tls) {
                    out.key("tls", &h.tls);
                }
            } else {
                out.key("host", &h.host);
                out.key("port", &h.port);
                out.key("tls", &h.tls);
            }
            h.print_keys(out);
            if let Some(o) = &h.oauth {
                o.print(out);
            }
        }
        Upstream::Maildir(m) => {
            out.key("kind", "maildir");
            m.print_keys(out);
        }
    }
}
