//! The config's value types and their text grammar: sizes, durations,
//! address and domain patterns, client networks, listen addresses, hosts,
//! mailboxes (the small enumerations are in [`super::words`]). Each parses
//! with `FromStr`; the
//! error is a sentence that quotes the text and says what was expected.
//!
//! Nothing here knows TOML: [`super::convert`] takes a TOML value to these
//! types and adds the per-key bounds. Uses `crate::smtp` for the mailbox
//! grammar only.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

pub use super::words::*;

/// A byte count. Written `"10MiB"`, `"64MB"`, `"1000"` or a bare number;
/// printed by `check --print` in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size {
    /// The value in bytes.
    pub bytes: u64,
}

impl Size {
    /// A size of `bytes` bytes.
    pub const fn new(bytes: u64) -> Size {
        Size { bytes }
    }

    /// Parse `"10MiB"`, `"64MB"`, `"1000"`: a whole number and an optional,
    /// case-insensitive unit (B, KB, MB, GB, KiB, MiB, GiB). The error says
    /// what was expected.
    pub fn parse(text: &str) -> Result<Size, String> {
        text.parse()
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Size, String> {
        const UNITS: &str = "B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024)";
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, rest) = t.split_at(digits_end);
        if digits.is_empty() {
            return Err(format!(
                "\"{s}\" is not a size; expected a whole number and a unit, e.g. \"10MiB\", \
                 \"512KiB\" or \"1000\" (bytes)"
            ));
        }
        if rest.starts_with(['.', ',']) {
            return Err(format!(
                "\"{s}\": sizes are whole numbers; {}",
                size_in_whole_units(digits, rest)
            ));
        }
        let unit = rest.trim_start();
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "mb" => 1000 * 1000,
            "gb" => 1000 * 1000 * 1000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return Err(format!("\"{s}\": unknown unit \"{unit}\"; use {UNITS}")),
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .map(Size::new)
            .ok_or_else(|| format!("\"{s}\" is too large"))
    }
}

/// For people: the largest binary unit that divides the size (`"10MiB"`),
/// else bytes (`"1500 bytes"`).
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.bytes >= factor && self.bytes.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.bytes / factor);
            }
        }
        if self.bytes == 1 {
            f.write_str("1 byte")
        } else {
            write!(f, "{} bytes", self.bytes)
        }
    }
}

/// A duration. Written `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"5d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur {
    /// The value.
    pub value: Duration,
}

/// Duration units from largest to smallest, in milliseconds. A written
/// duration uses each at most once, in this order; the canonical form
/// (`Display`) uses every unit that is not zero.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

impl Dur {
    /// A duration of `value`.
    pub const fn new(value: Duration) -> Dur {
        Dur { value }
    }

    /// A duration of `secs` seconds.
    pub const fn secs(secs: u64) -> Dur {
        Dur::new(Duration::from_secs(secs))
    }

    /// Parse `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"5d"`: whole numbers
    /// with units d, h, m, s, ms, largest first. The error says what was
    /// expected.
    pub fn parse(text: &str) -> Result<Dur, String> {
        text.parse()
    }
}

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Dur, String> {
        const HELP: &str = "expected a whole number and a unit (ms, s, m, h, d), e.g. \"30s\", \
                            \"5m\", \"1h30m\" or \"5d\"";
        let t = s.trim();
        if t.is_empty() {
            return Err(format!("\"{s}\" is empty; {HELP}"));
        }
        let mut rest = t;
        let mut total: u64 = 0;
        let mut last_rank: Option<usize> = None;
        while !rest.is_empty() {
            let digits_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (digits, after) = rest.split_at(digits_end);
            if digits.is_empty() {
                return Err(format!("\"{s}\" is not a duration; {HELP}"));
            }
            if after.starts_with(['.', ',']) {
                return Err(format!(
                    "\"{s}\": durations are whole numbers; {}",
                    duration_in_whole_units(digits, after)
                ));
            }
            let after = after.trim_start();
            let unit_end = after
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_end);
            if unit.is_empty() {
                return Err(format!(
                    "\"{s}\": the number {digits} has no unit; write e.g. \"{digits}s\" or \"{digits}m\""
                ));
            }
            let Some(rank) = DURATION_UNITS.iter().position(|(u, _)| *u == unit) else {
                return Err(format!(
                    "\"{s}\": unknown unit \"{unit}\"; use ms, s, m, h or d"
                ));
            };
            if last_rank.is_some_and(|r| rank <= r) {
                return Err(format!(
                    "\"{s}\": units must go from largest to smallest, each once, e.g. \"1h30m\""
                ));
            }
            last_rank = Some(rank);
            let part = digits
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(DURATION_UNITS[rank].1))
                .and_then(|ms| total.checked_add(ms));
            total = part.ok_or_else(|| format!("\"{s}\" is too large"))?;
            rest = after.trim_start();
        }
        Ok(Dur::new(Duration::from_millis(total)))
    }
}

/// `whole` and the fraction at the start of `after` (`.5h…`): the digits
/// after the point, and the rest.
fn fraction(after: &str) -> (&str, &str) {
    let frac = after.get(1..).unwrap_or("");
    let end = frac
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(frac.len());
    frac.split_at(end)
}

/// `whole.frac` units of `factor` base units: the value in base units,
/// and whether that is exact (a fraction finer than the base unit is
/// rounded). `None` when it does not fit.
fn decimal_value(whole: &str, frac: &str, factor: u64) -> Option<(u128, bool)> {
    // Digits past what a u128 holds add nothing but trouble.
    let frac = frac.get(..frac.len().min(18)).unwrap_or(frac);
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let f = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().ok()?
    };
    let factor = u128::from(factor);
    let w = whole.parse::<u128>().ok()?.checked_mul(factor)?;
    let part = f.checked_mul(factor)?;
    let exact = part % scale == 0;
    let rounded = part.checked_add(scale / 2)? / scale;
    Some((w.checked_add(rounded)?, exact))
}

/// What to write instead of a duration with a fraction (`"1.5h"`): the
/// same time in the largest smaller unit that holds it whole (`"90m"`).
fn duration_in_whole_units(whole: &str, after: &str) -> String {
    let (frac, rest) = fraction(after);
    let unit = rest.trim_start();
    let unit = &unit[..unit
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(unit.len())];
    let Some(rank) = DURATION_UNITS.iter().position(|(u, _)| *u == unit) else {
        return "use a smaller unit instead of a fraction (\"90m\", not \"1.5h\")".to_string();
    };
    let Some((ms, exact)) = decimal_value(whole, frac, DURATION_UNITS[rank].1) else {
        return "use a smaller unit instead of a fraction".to_string();
    };
    let (name, factor) = DURATION_UNITS
        .iter()
        .skip(rank + 1)
        .find(|(_, f)| ms % u128::from(*f) == 0)
        .copied()
        .unwrap_or(("ms", 1));
    let value = ms / u128::from(factor);
    let about = if exact { "" } else { "about " };
    format!("for {whole}.{frac}{unit} use {about}\"{value}{name}\"")
}

/// What to write instead of a size with a fraction (`"1.5MiB"`): the same
/// size in the largest smaller unit of its kind that holds it whole
/// (`"1536KiB"`), else in bytes.
fn size_in_whole_units(whole: &str, after: &str) -> String {
    let (frac, rest) = fraction(after);
    let unit = rest.trim();
    let units: &[(&str, u64)] = match unit.to_ascii_lowercase().as_str() {
        "kib" | "mib" | "gib" => &[("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)],
        "kb" | "mb" | "gb" => &[("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1000)],
        _ => return "use a smaller unit instead of a fraction".to_string(),
    };
    let Some(rank) = units.iter().position(|(u, _)| u.eq_ignore_ascii_case(unit)) else {
        return "use a smaller unit instead of a fraction".to_string();
    };
    let Some((bytes, exact)) = decimal_value(whole, frac, units[rank].1) else {
        return "use a smaller unit instead of a fraction".to_string();
    };
    let (name, factor) = units
        .iter()
        .skip(rank + 1)
        .find(|(_, f)| bytes % u128::from(*f) == 0)
        .copied()
        .unwrap_or(("", 1));
    let value = bytes / u128::from(factor);
    let about = if exact { "" } else { "about " };
    format!("for {whole}.{frac}{unit} use {about}\"{value}{name}\"")
}

/// The canonical form: every non-zero unit, largest first (`"1h30m"` for
/// 90 minutes, `"1m30s"` for 90 seconds, `"250ms"`); `"0s"` for zero.
/// [`Dur::parse`] reads it back to the same value.
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.value.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, factor) in DURATION_UNITS {
            let factor = u128::from(factor);
            if ms >= factor {
                write!(f, "{}{unit}", ms / factor)?;
                ms %= factor;
            }
        }
        Ok(())
    }
}

/// One entry of a sender/recipient list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressPattern {
    /// `user@example.com`: that mailbox (compared case-insensitively).
    Mailbox(String),
    /// `example.com`: any mailbox at that domain.
    Domain(String),
    /// `.example.com`: any mailbox at a subdomain of it (not the domain itself).
    Subdomains(String),
    /// `<>`: the null sender.
    NullSender,
}

/// What an address pattern may look like; every pattern error ends with it.
pub(crate) const PATTERN_FORMS: &str = "expected \"user@example.com\" (that mailbox), \
                                        \"example.com\" (any mailbox at that domain), \
                                        \".example.com\" (any mailbox at a subdomain) or \"<>\" \
                                        (the null sender)";

impl AddressPattern {
    /// Parse one sender/recipient list entry: `"user@example.com"`,
    /// `"example.com"`, `".example.com"` or `"<>"`. Stored lowercased.
    pub fn parse(text: &str) -> Result<AddressPattern, String> {
        text.parse()
    }
}

impl FromStr for AddressPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<AddressPattern, String> {
        if s == "<>" {
            return Ok(AddressPattern::NullSender);
        }
        let bad = |why: &str| Err(format!("\"{s}\" {why}; {PATTERN_FORMS}"));
        if s.is_empty() {
            return bad("is empty");
        }
        if s.chars().any(char::is_whitespace) {
            return bad("contains a space");
        }
        if let Some(c) = s
            .chars()
            .find(|c| c.is_control() || matches!(c, '<' | '>' | '"' | '*' | ',' | ';'))
        {
            let hint = match c {
                '*' => {
                    "contains '*'; there are no wildcards (\".example.com\" matches every subdomain)"
                }
                '<' | '>' => "has angle brackets; write the address without them",
                _ => "contains a character that cannot appear in a pattern",
            };
            return bad(hint);
        }
        if let Some(domain) = s.strip_prefix('.') {
            return match domain_problem(domain, false) {
                None => Ok(AddressPattern::Subdomains(domain.to_lowercase())),
                Some(p) => bad(&format!("has a bad domain: {p}")),
            };
        }
        if let Some((local, domain)) = s.rsplit_once('@') {
            if local.is_empty() {
                return bad(
                    "has no local part (to match the whole domain, write it without the '@')",
                );
            }
            if local.contains('@') {
                return bad("has more than one '@'");
            }
            if domain.is_empty() {
                return bad("has nothing after the '@'");
            }
            return match domain_problem(domain, false) {
                None => Ok(AddressPattern::Mailbox(s.to_lowercase())),
                Some(p) => bad(&format!("has a bad domain: {p}")),
            };
        }
        match domain_problem(s, false) {
            None => Ok(AddressPattern::Domain(s.to_lowercase())),
            Some(p) => bad(&format!("is not a domain: {p}")),
        }
    }
}

impl fmt::Display for AddressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressPattern::Mailbox(m) => f.write_str(m),
            AddressPattern::Domain(d) => f.write_str(d),
            AddressPattern::Subdomains(d) => write!(f, ".{d}"),
            AddressPattern::NullSender => f.write_str("<>"),
        }
    }
}

/// A recipient domain selector of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// `*`: every domain (and addresses without one).
    Any,
    /// `example.com`: exactly that domain.
    Exact(String),
    /// `.example.com`: any subdomain of it (not the domain itself).
    Subdomains(String),
}

impl DomainPattern {
    /// Does a recipient domain (any case; `None` for a bare local part) match?
    pub fn matches(&self, domain: Option<&str>) -> bool {
        match (self, domain) {
            (DomainPattern::Any, _) => true,
            (_, None) => false,
            (DomainPattern::Exact(d), Some(x)) => x.eq_ignore_ascii_case(d),
            (DomainPattern::Subdomains(d), Some(x)) => {
                x.len() > d.len() + 1
                    && x.is_char_boundary(x.len() - d.len() - 1)
                    && x[x.len() - d.len()..].eq_ignore_ascii_case(d)
                    && x.as_bytes()[x.len() - d.len() - 1] == b'.'
            }
        }
    }
}

impl FromStr for DomainPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<DomainPattern, String> {
        if s == "*" {
            return Ok(DomainPattern::Any);
        }
        let (sub, d) = match s.strip_prefix('.') {
            Some(d) => (true, d),
            None => (false, s),
        };
        if let Some(p) = domain_problem(d, false) {
            return Err(format!(
                "\"{s}\" is not a domain ({p}); expected \"example.com\", \".example.com\" (its \
                 subdomains) or \"*\" (every domain)"
            ));
        }
        let d = d.to_lowercase();
        Ok(if sub {
            DomainPattern::Subdomains(d)
        } else {
            DomainPattern::Exact(d)
        })
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Any => f.write_str("*"),
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Subdomains(d) => write!(f, ".{d}"),
        }
    }
}

/// A client network: `"192.168.1.0/24"`, `"fd00::/8"` or one address.
/// Host bits are cleared, and an IPv4-mapped IPv6 network becomes the IPv4
/// one (policy checks mapped client addresses as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Network(pub IpNet);

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let help = "expected a network like \"192.168.1.0/24\" or \"fd00::/8\", or one address \
                    like \"192.168.1.20\"";
        let net = match s.split_once('/') {
            None => s
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("\"{s}\" is not an IP network; {help}"))?,
            Some((addr, len)) => {
                let addr: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("\"{s}\": \"{addr}\" is not an IP address; {help}"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let len = len
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("\"{s}\": the prefix length must be 0 to {max}"))?;
                // Host bits set (192.168.1.5/24) are a common way of writing
                // the network the host is on; accept it as that network.
                IpNet::new(addr, len)
                    .map_err(|_| format!("\"{s}\": bad prefix length"))?
                    .trunc()
            }
        };
        let net = match net {
            IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
                Some(v4) => IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96)
                    .map(|n| n.trunc())
                    .unwrap_or(IpNet::V6(n)),
                None => IpNet::V6(n),
            },
            other => other,
        };
        Ok(Network(net))
    }
}

/// An address to listen on: an IP address and a port other than 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddr, String> {
        match s.parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => Err(format!(
                "\"{s}\": port 0 is not allowed; pick a port from 1 to 65535"
            )),
            Ok(a) => Ok(ListenAddr(a)),
            Err(_) => Err(listen_problem(s)),
        }
    }
}

fn listen_problem(s: &str) -> String {
    let base = format!("\"{s}\" is not an IP address and port");
    if let Ok(ip) = s.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(_) => format!("{base}: the port is missing; e.g. \"{s}:2525\""),
            IpAddr::V6(_) => format!(
                "{base}: the port is missing; IPv6 addresses go in brackets, e.g. \"[{s}]:2525\""
            ),
        };
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && inner.parse::<Ipv6Addr>().is_ok()
    {
        return format!("{base}: the port is missing; e.g. \"{s}:2525\"");
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        if port.parse::<u16>().is_err() {
            return format!("{base}: \"{port}\" is not a port; expected 1 to 65535");
        }
        if host.parse::<IpAddr>().is_err() && !host.starts_with('[') {
            return format!(
                "{base}: listen takes IP addresses, not host names; e.g. \"0.0.0.0:{port}\" (every \
                 IPv4 interface) or \"192.168.1.10:{port}\""
            );
        }
    }
    format!("{base}; expected e.g. \"127.0.0.1:2525\" or \"[::1]:2525\"")
}

/// A name server: an IP address, with port 53 unless one is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameServer(pub SocketAddr);

impl FromStr for NameServer {
    type Err = String;

    fn from_str(s: &str) -> Result<NameServer, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(NameServer(SocketAddr::new(ip, 53)));
        }
        s.parse::<SocketAddr>().map(NameServer).map_err(|_| {
            format!(
                "\"{s}\" is not a name server address; expected e.g. \"192.168.1.1\" or \
                 \"127.0.0.1:5353\""
            )
        })
    }
}

/// The smarthost's name or IP address (`host = …`), without port or scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostName(pub String);

impl FromStr for HostName {
    type Err = String;

    fn from_str(s: &str) -> Result<HostName, String> {
        if s.parse::<IpAddr>().is_ok() {
            return Ok(HostName(s.to_string()));
        }
        if s.contains("://") {
            return Err(format!(
                "\"{s}\": give just the host name, e.g. \"smtp.example.com\"; port and tls are \
                 separate keys"
            ));
        }
        if let Some((name, port)) = s.rsplit_once(':')
            && port.parse::<u16>().is_ok()
        {
            return Err(format!(
                "\"{s}\": give the port separately: host = \"{name}\" and port = {port}"
            ));
        }
        match domain_problem(s, true) {
            None => Ok(HostName(s.to_string())),
            Some(p) => Err(format!("\"{s}\" is not a host name or IP address: {p}")),
        }
    }
}

/// One entry of `hosts`: `"host:587"`, `"host"`, `"[2001:db8::1]:25"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<HostPort, String> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            match rest.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, p)) => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(format!("\"{s}\" is not \"host:port\"")),
                },
                None => return Err(format!("\"{s}\": the '[' is never closed")),
            }
        } else if s.matches(':').count() > 1 {
            return Err(format!(
                "\"{s}\": write IPv6 addresses in brackets, e.g. \"[2001:db8::1]:25\""
            ));
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port =
            match port {
                None => None,
                Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!("\"{s}\": \"{p}\" is not a port; expected 1 to 65535")
                })?),
            };
        if host.parse::<IpAddr>().is_err()
            && let Some(p) = domain_problem(host, true)
        {
            return Err(format!("\"{s}\": \"{host}\" is not a host name: {p}"));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

/// A full ASCII mailbox, `user@example.com` (angle brackets allowed and
/// dropped): what a rewritten sender, a postmaster or an alias target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mailbox(pub String);

impl FromStr for Mailbox {
    type Err = String;

    fn from_str(s: &str) -> Result<Mailbox, String> {
        let s = s.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|x| x.strip_suffix('>'))
            .unwrap_or(s);
        match crate::smtp::Address::parse(s) {
            Ok(a) if a.domain().is_some() && !a.is_utf8() => Ok(Mailbox(s.to_string())),
            Ok(a) if a.domain().is_some() => Err(format!(
                "\"{s}\" has non-ASCII characters; use an ASCII address here"
            )),
            Ok(_) => Err(format!(
                "\"{s}\" has no domain; expected a full address like \"ops@example.com\""
            )),
            Err(e) => Err(format!(
                "\"{s}\" is not a mail address ({e}); expected e.g. \"ops@example.com\""
            )),
        }
    }
}

/// Our own name (EHLO, Received): a domain name in plain ASCII letters,
/// digits and hyphens (RFC 5321 §4.1.2 `Domain`), not an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnHostName(pub String);

impl FromStr for OwnHostName {
    type Err = String;

    fn from_str(s: &str) -> Result<OwnHostName, String> {
        match hostname_problem(s) {
            None => Ok(OwnHostName(s.to_string())),
            Some(p) => Err(format!("\"{s}\" is not a usable host name: {p}")),
        }
    }
}

/// Why `s` cannot be our own name, if it cannot.
pub(crate) fn hostname_problem(s: &str) -> Option<String> {
    if let Some(p) = domain_problem(s, true) {
        return Some(p);
    }
    let last = s.rsplit('.').next().unwrap_or(s);
    if last.chars().all(|c| c.is_ascii_digit()) {
        return Some("it looks like an IP address; a name is needed".to_string());
    }
    None
}

/// Why `s` is not a domain name, if it is not. `ascii` restricts labels to
/// letters, digits and hyphens; otherwise any Unicode letter or digit is
/// allowed too (internationalised domains in address patterns).
pub(crate) fn domain_problem(s: &str, ascii: bool) -> Option<String> {
    if s.is_empty() {
        return Some("it is empty".to_string());
    }
    if s.len() > 253 {
        return Some("it is longer than 253 characters".to_string());
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Some("it has an empty label (a leading, trailing or double dot)".to_string());
        }
        if label.len() > 63 {
            return Some(format!(
                "the label \"{label}\" is longer than 63 characters"
            ));
        }
        if let Some(c) = label.chars().find(|&c| {
            !(c == '-'
                || if ascii {
                    c.is_ascii_alphanumeric()
                } else {
                    c.is_alphanumeric()
                })
        }) {
            let allowed = if ascii {
                "ASCII letters, digits, hyphens and dots"
            } else {
                "letters, digits, hyphens and dots"
            };
            return Some(format!(
                "it contains '{}'; only {allowed} are allowed",
                c.escape_default()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!(
                "the label \"{label}\" starts or ends with a hyphen"
            ));
        }
    }
    None
}
