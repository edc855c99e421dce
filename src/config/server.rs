//! `[server]`: the listener and its bounds, listener TLS, bare newlines and
//! per-client limits.
//!
//! Uses the config's own `schema`, `convert` and `values`, and `smtp`'s
//! bare-newline mode.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::convert::{
    DAY, MINUTE, SECOND, bare_newline, boolean, count, duration, listen, net, path, rate, size,
};
use super::schema::{
    Conv, Item, Section, custom, default, list, list_at, non_empty, optional, required, table,
};
use super::values::{Dur, Size};
use super::{Ctx, Reported};
use crate::smtp::BareNewline;
use crate::smtp::envelope::MAX_RECIPIENTS;

// Bounds. Each is a sanity range: wide enough for any real site, narrow
// enough that a typo (an extra zero, a missing unit) is caught here and not
// by an overflow or an absurd allocation later.
/// RFC 5321 §4.5.3.1.7: at least 64K octets.
pub(crate) const MIN_MESSAGE_SIZE: u64 = 64 * 1024;
pub(crate) const MAX_MESSAGE_SIZE: u64 = 4 * 1024 * 1024 * 1024;

table! {
    /// `[server]`: the listener and its bounds.
    pub struct ServerConfig, read as ServerKeys {
        /// Required. Addresses to accept SMTP on, IPv4 and IPv6.
        listen: Vec<SocketAddr> = required("[\"127.0.0.1:2525\"]", custom(listen_addrs)),
        /// Default 10MiB. Advertised in EHLO SIZE.
        max_message_size: Size =
            default(Size::new(10 << 20), size(MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE)),
        /// Default 100 (RFC 5321 §4.5.3.1.8's minimum); at most
        /// `smtp::envelope::MAX_RECIPIENTS`, what a queued message can hold.
        max_recipients: usize = default(100, count(1, MAX_RECIPIENTS)),
        /// Default 64, across all listeners.
        max_connections: usize = default(64, count(1, 10_000)),
        /// Default 5m (RFC 5321 §4.5.3.2.7): idle time allowed between commands
        /// and between data chunks.
        command_timeout: Dur = default(Dur::new(5 * MINUTE), duration(SECOND, DAY)),
        /// Default 30m: a whole session's cap, against slow-drip clients.
        session_timeout: Dur = default(Dur::new(30 * MINUTE), duration(SECOND, 7 * DAY)),
        /// Default 3m (RFC 5321 §4.5.3.2.5's DATA block): idle time allowed
        /// between chunks of message data.
        data_timeout: Dur = default(Dur::new(3 * MINUTE), duration(SECOND, DAY)),
        /// Default 5m (RFC 5321 §4.5.3.2.7 asks servers for at least 5
        /// minutes): time allowed from the greeting (or the start of implicit
        /// TLS) to the first command. Shorter values shed idle connections
        /// sooner, at the cost of that RFC SHOULD.
        greeting_timeout: Dur = default(Dur::new(5 * MINUTE), duration(SECOND, DAY)),
        /// Default 5m: how long the queue may take to make a message durable
        /// after the final dot before the client is told 451 instead (RFC 5321
        /// §4.5.3.2.6 gives clients 10 minutes; answering first means the
        /// client retries rather than giving up without a reply). At most
        /// 10m: past it the client has given up, so a longer value could only
        /// turn a 451 into silence.
        data_end_timeout: Dur = default(Dur::new(5 * MINUTE), duration(SECOND, 10 * MINUTE)),
        /// Listener certificate chain (PEM); with `tls_key`, STARTTLS is offered
        /// on `listen` and `listen_tls` may be used. Re-read on reload.
        tls_cert: Option<PathBuf> = optional(path),
        /// Listener private key (PEM).
        tls_key: Option<PathBuf> = optional(path),
        /// Default empty. Addresses that speak TLS from the first byte (RFC 8314, port 465).
        listen_tls: Vec<SocketAddr> = default(Vec::new(), list(listen)),
        /// Default empty. Networks to which STARTTLS is not advertised (legacy devices).
        no_starttls_clients: Vec<IpNet> = default(Vec::new(), list(net)),
        /// Default empty. Networks that may AUTH without TLS (legacy devices; a warning at start).
        allow_plain_auth_clients: Vec<IpNet> = default(Vec::new(), list(net)),
        /// Default reject. What a bare CR or LF, or a NUL, in message data gets.
        bare_newline: BareNewline = default(BareNewline::Reject, bare_newline),
        /// Default empty. Networks whose bare CR/LF are normalised to CRLF
        /// whatever `bare_newline` says (legacy devices).
        bare_newline_normalize_clients: Vec<IpNet> =
            default(Vec::new(), list(net)),
        /// Default 10: open connections from one client address.
        max_connections_per_client: usize = default(10, count(1, 10_000)),
        /// Default 60: new connections per minute from one client address.
        max_connections_per_minute: u32 = default(60, rate(1_000_000)),
        /// Default 120: messages per minute from one client address.
        max_messages_per_minute: u32 = default(120, rate(1_000_000)),
        /// Default 1000: recipients per minute from one client address.
        max_recipients_per_minute: u32 = default(1000, rate(10_000_000)),
        /// Default false: clients in `[policy] allow_clients` are exempt
        /// from `max_connections_per_minute`, and they and clients that
        /// logged in from `max_messages_per_minute` and
        /// `max_recipients_per_minute` (Postfix exempts `$mynetworks`
        /// likewise). True holds them to those rates too.
        limit_trusted_clients: bool = default(false, boolean),
        /// Default 3: failed AUTH attempts in a session before 421.
        max_auth_failures: u32 = default(3, rate(100)),
    }
}

/// `listen`: at least one address, none twice (reported at the second).
fn listen_addrs(ctx: &mut Ctx, key: &str, item: &Item) -> Result<Vec<SocketAddr>, Reported> {
    let addrs = non_empty(
        "give at least one address, e.g. [\"127.0.0.1:2525\"]",
        list_at(listen),
    )
    .conv(ctx, key, item)?;
    let mut out: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    let mut bad = false;
    for (addr, at) in addrs {
        if out.contains(&addr) {
            ctx.error(at, format!("{key}: \"{addr}\" is listed twice"));
            bad = true;
        } else {
            out.push(addr);
        }
    }
    if bad { Err(Reported) } else { Ok(out) }
}

/// Read `[server]` and check its keys against each other.
pub(crate) fn read(ctx: &mut Ctx, sec: &Section) -> Result<ServerConfig, Reported> {
    super::unknown_keys(ctx, sec, &[ServerConfig::KEYS]);
    let keys = ServerKeys::read(ctx, sec);
    let mut good = Ok(());
    if let (Ok(cert), Ok(key)) = (&keys.tls_cert, &keys.tls_key) {
        if cert.is_some() != key.is_some() {
            let (have, missing) = if cert.is_some() {
                ("tls_cert", "tls_key")
            } else {
                ("tls_key", "tls_cert")
            };
            let at = sec.key_offset(have).unwrap_or(sec.at);
            good = Err(ctx.error(
                at,
                format!("{have} is set but {missing} is not; the listener needs both (PEM files)"),
            ));
        } else if let Ok(listen_tls) = &keys.listen_tls
            && !listen_tls.is_empty()
            && cert.is_none()
        {
            let at = sec.key_offset("listen_tls").unwrap_or(sec.at);
            good = Err(ctx.error(
                at,
                "listen_tls needs tls_cert and tls_key in [server] (the certificate to present)",
            ));
        }
    }
    if let (Ok(Some(cert)), Ok(Some(key))) = (&keys.tls_cert, &keys.tls_key) {
        let (cert_at, key_at) = (
            sec.offset("tls_cert").unwrap_or(sec.at),
            sec.offset("tls_key").unwrap_or(sec.at),
        );
        let before = ctx.errors.len();
        ctx.check_file(cert_at, "tls_cert", cert, true);
        ctx.check_file(key_at, "tls_key", key, false);
        // Readable is not enough: serve loads both and exits if it cannot
        // use them (not PEM, no key in the file, a key of another
        // certificate), so check loads them the same way.
        if ctx.errors.len() == before && !ctx.opts.skip_file_checks {
            if let Err(e) = crate::tls::server_config(cert, key) {
                good = Err(ctx.error(
                    cert_at,
                    format!(
                        "tls_cert/tls_key: the listener cannot use them: {e}; give the \
                         certificate chain and its private key as PEM files"
                    ),
                ));
            }
        } else if ctx.errors.len() != before {
            good = Err(Reported);
        }
    }
    let server = keys.build();
    good.and(server)
}
