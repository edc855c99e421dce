//! From a TOML value to a typed one: the value must be of the right TOML
//! kind (text, number, list…) and, where the key has bounds, inside them.
//! Each converter is a `fn(&DeValue) -> Result<T, String>` whose error says
//! what it found and what it expected, quoting the user's text; the reader
//! ([`super::schema`]) prefixes the key and places it at the value.
//!
//! Uses [`super::values`] for the text grammar of each type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use toml::de::DeValue;

use super::values::{
    AddressPattern, AuthMethod, Dur, HostName, HttpsUrl, IpFamily, ListenAddr, LogLevel, Mailbox,
    NameServer, Network, OAuthFlow, OwnHostName, Provider, Size, TLS_HELP, Tenant, TlsMode,
};

/// Units for the bounds of durations.
pub(crate) const SECOND: Duration = Duration::from_secs(1);
pub(crate) const MINUTE: Duration = Duration::from_secs(60);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(86400);

/// How a TOML value is named in messages: `the text "x"`, `the number 5`.
pub(crate) fn describe(v: &DeValue) -> String {
    match v {
        DeValue::String(s) => format!("the text \"{s}\""),
        DeValue::Integer(i) => format!("the number {}", i.as_str()),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "a list".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// The text of a string value; `example` shows what was expected.
pub(crate) fn text<'v>(v: &'v DeValue, example: &str) -> Result<&'v str, String> {
    match v {
        DeValue::String(s) => Ok(s),
        other => Err(format!(
            "expected text in quotes like {example}, found {}",
            describe(other)
        )),
    }
}

/// Text parsed as `T`.
fn word<T: FromStr<Err = String>>(v: &DeValue, example: &str) -> Result<T, String> {
    text(v, example)?.parse()
}

fn int(v: &DeValue) -> Option<i128> {
    match v {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

/// A whole number from `min` to `max`.
pub(crate) fn count(min: usize, max: usize) -> impl Fn(&DeValue) -> Result<usize, String> {
    move |v| match v {
        DeValue::Integer(i) => int(v)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("{} is out of range; expected {min} to {max}", i.as_str())),
        DeValue::String(s) if s.trim().parse::<u64>().is_ok() => Err(format!(
            "expected a number, found the text \"{s}\"; remove the quotes"
        )),
        other => Err(format!(
            "expected a whole number from {min} to {max}, found {}",
            describe(other)
        )),
    }
}

/// A count per period (or of failures), from 1 to `max`.
pub(crate) fn rate(max: u32) -> impl Fn(&DeValue) -> Result<u32, String> {
    let max_count = usize::try_from(max).unwrap_or(usize::MAX);
    move |v| count(1, max_count)(v).map(|n| u32::try_from(n).unwrap_or(max))
}

/// A TCP port, 1 to 65535.
pub(crate) fn port(v: &DeValue) -> Result<u16, String> {
    count(1, 65535)(v).and_then(|n| u16::try_from(n).map_err(|_| "port out of range".to_string()))
}

/// A size from `min` to `max` bytes: `"10MiB"` or a number of bytes.
pub(crate) fn size(min: u64, max: u64) -> impl Fn(&DeValue) -> Result<Size, String> {
    move |v| {
        let (size, text) = match v {
            DeValue::Integer(i) => {
                let text = i.as_str().to_string();
                match int(v).and_then(|n| u64::try_from(n).ok()) {
                    Some(bytes) => (Size::new(bytes), text),
                    None => return Err(format!("{text} is not a size; expected e.g. \"10MiB\"")),
                }
            }
            DeValue::String(s) => (s.parse::<Size>()?, s.to_string()),
            other => {
                return Err(format!(
                    "expected a size like \"10MiB\", \"512KiB\" or \"64MB\", found {}",
                    describe(other)
                ));
            }
        };
        if size.bytes < min || size.bytes > max {
            let range = if max == u64::MAX {
                format!("at least {}", Size::new(min))
            } else {
                format!("between {} and {}", Size::new(min), Size::new(max))
            };
            return Err(format!("\"{text}\" is out of range; expected {range}"));
        }
        Ok(size)
    }
}

/// A duration from `min` to `max`: `"30s"`, `"5m"`, `"1h30m"`.
pub(crate) fn duration(min: Duration, max: Duration) -> impl Fn(&DeValue) -> Result<Dur, String> {
    move |v| {
        let (d, text) = match v {
            DeValue::String(s) => (s.parse::<Dur>()?, s),
            DeValue::Integer(i) => {
                return Err(format!(
                    "the number {} has no unit; write e.g. \"{}s\" or \"{}m\" (in quotes)",
                    i.as_str(),
                    i.as_str(),
                    i.as_str()
                ));
            }
            other => {
                return Err(format!(
                    "expected a duration like \"30s\", \"5m\", \"1h\" or \"5d\", found {}",
                    describe(other)
                ));
            }
        };
        if d.value < min || d.value > max {
            return Err(format!(
                "\"{text}\" is out of range; expected between {} and {}",
                Dur::new(min),
                Dur::new(max)
            ));
        }
        Ok(d)
    }
}

/// A duration up to `max`, or `"0"` (also `"0s"`) for off.
pub(crate) fn duration_or_off(max: Duration) -> impl Fn(&DeValue) -> Result<Dur, String> {
    let within = duration(Duration::ZERO, max);
    move |v| match v {
        DeValue::String(s) if s.trim() == "0" => Ok(Dur::new(Duration::ZERO)),
        other => within(other),
    }
}

/// `true` or `false`, not in quotes.
pub(crate) fn boolean(v: &DeValue) -> Result<bool, String> {
    match v {
        DeValue::Boolean(b) => Ok(*b),
        DeValue::String(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {
            Err(format!(
                "expected true or false without quotes, found \"{s}\""
            ))
        }
        other => Err(format!("expected true or false, found {}", describe(other))),
    }
}

/// A file or directory path, not empty.
pub(crate) fn path(v: &DeValue) -> Result<PathBuf, String> {
    let s = text(v, "\"/var/lib/postern/queue\"")?;
    if s.trim().is_empty() {
        return Err("the path is empty".to_string());
    }
    if s.contains('\0') {
        return Err("the path contains a NUL character".to_string());
    }
    Ok(PathBuf::from(s))
}

/// Our own host name.
pub(crate) fn own_hostname(v: &DeValue) -> Result<String, String> {
    word::<OwnHostName>(v, "\"relay.example.net\"").map(|h| h.0)
}

/// The log level, lowercased.
pub(crate) fn log_level(v: &DeValue) -> Result<String, String> {
    word::<LogLevel>(v, "\"info\"").map(|l| l.0)
}

/// A user name (upstream AUTH or a `[[user]]`): one line, not empty.
pub(crate) fn username(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"printer@example.com\"")?;
    if s.is_empty() {
        return Err("the user name is empty; remove the line to send without AUTH".to_string());
    }
    if s.chars().any(char::is_control) {
        return Err("the user name contains a control character".to_string());
    }
    Ok(s.to_string())
}

/// Identifiers and scopes: one line of visible text.
pub(crate) fn one_line(example: &'static str) -> impl Fn(&DeValue) -> Result<String, String> {
    move |v| {
        let s = text(v, example)?;
        if s.is_empty() || s.chars().any(char::is_control) {
            return Err(format!("\"{s}\" must be one line of text, not empty"));
        }
        Ok(s.to_string())
    }
}

/// An address to listen on.
pub(crate) fn listen(v: &DeValue) -> Result<SocketAddr, String> {
    word::<ListenAddr>(v, "\"127.0.0.1:2525\"").map(|a| a.0)
}

/// A client network in a list that grants something (`allow_clients`):
/// every address on the internet is refused there, as an open relay.
pub(crate) fn allowed_net(v: &DeValue) -> Result<IpNet, String> {
    let s = text(v, "\"192.168.1.0/24\"")?;
    let net = s.parse::<Network>()?.0;
    if net.prefix_len() == 0 {
        return Err(format!(
            "\"{s}\" would let every address on the internet relay through this host (an open \
             relay); list the networks of your devices instead, e.g. \"192.168.1.0/24\""
        ));
    }
    Ok(net)
}

/// A client network.
pub(crate) fn net(v: &DeValue) -> Result<IpNet, String> {
    word::<Network>(v, "\"192.168.1.0/24\"").map(|n| n.0)
}

/// A mail domain of our own (ASCII), lowercased.
pub(crate) fn mail_domain(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"lan.example.com\"")?;
    match super::values::domain_problem(s, true) {
        Some(p) => Err(format!("\"{s}\" is not a domain: {p}")),
        None => Ok(s.to_ascii_lowercase()),
    }
}

/// A sender pattern (`<>` allowed).
pub(crate) fn sender_pattern(v: &DeValue) -> Result<AddressPattern, String> {
    word(v, "\"user@example.com\"")
}

/// A recipient pattern (`<>` refused: it is no recipient).
pub(crate) fn recipient_pattern(v: &DeValue) -> Result<AddressPattern, String> {
    let p = sender_pattern(v)?;
    if p == AddressPattern::NullSender {
        return Err(
            "\"<>\" is the null sender; it only makes sense in allow_senders and deny_senders"
                .to_string(),
        );
    }
    Ok(p)
}

/// The smarthost's name or address.
pub(crate) fn host_name(v: &DeValue) -> Result<String, String> {
    word::<HostName>(v, "\"smtp.example.com\"").map(|h| h.0)
}

/// How TLS is spoken upstream. `tls = true` is a common guess; say which
/// word was meant.
pub(crate) fn tls_mode(v: &DeValue) -> Result<TlsMode, String> {
    match v {
        DeValue::Boolean(b) => Err(format!("found {b}, but tls takes a word; {TLS_HELP}")),
        other => word(other, "\"starttls\""),
    }
}

/// `any`, `ipv4` or `ipv6`.
pub(crate) fn ip_family(v: &DeValue) -> Result<IpFamily, String> {
    word(v, "\"ipv4\"")
}

/// `password` or `xoauth2`.
pub(crate) fn auth_method(v: &DeValue) -> Result<AuthMethod, String> {
    word(v, "\"xoauth2\"")
}

/// A full ASCII mailbox.
pub(crate) fn mailbox(v: &DeValue) -> Result<String, String> {
    word::<Mailbox>(v, "\"alerts@example.com\"").map(|m| m.0)
}

/// A DNS server address.
pub(crate) fn name_server(v: &DeValue) -> Result<SocketAddr, String> {
    word::<NameServer>(v, "\"192.168.1.1\"").map(|n| n.0)
}

/// An identity provider by name.
pub(crate) fn provider(v: &DeValue) -> Result<Provider, String> {
    word(v, "\"google\"")
}

/// An Entra ID tenant.
pub(crate) fn tenant(v: &DeValue) -> Result<String, String> {
    word::<Tenant>(v, "\"contoso.onmicrosoft.com\"").map(|t| t.0)
}

/// `refresh_token` or `client_credentials`.
pub(crate) fn oauth_flow(v: &DeValue) -> Result<OAuthFlow, String> {
    word(v, "\"refresh_token\"")
}

/// The token endpoint.
pub(crate) fn https_url(v: &DeValue) -> Result<String, String> {
    word::<HttpsUrl>(v, "\"https://oauth2.googleapis.com/token\"").map(|u| u.0)
}

/// `reject` or `normalize`.
pub(crate) fn bare_newline(v: &DeValue) -> Result<crate::smtp::BareNewline, String> {
    super::values::parse_bare_newline(text(v, "\"reject\"")?)
}
