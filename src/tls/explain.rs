//! A failed client handshake in words: what went wrong with the server's
//! TLS or certificate and what to change, instead of rustls' own names
//! (`UnknownIssuer`, `InvalidContentType`, `Other(OtherError(…))`). Used in
//! the delivery log, deferral texts and `postern check --connect`.

use std::time::Duration;

use rustls::{AlertDescription, CertificateError, InvalidMessage};

/// How the handshake was started: it decides what a server that answers
/// in plain text most likely is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// TLS from the first byte (`tls = "implicit"`, port 465).
    Implicit,
    /// After the server's 220 to STARTTLS.
    Starttls,
}

/// What the failed handshake `e` (from futures-rustls) means, in words that
/// say what to do where there is something to do.
pub fn handshake_failure(e: &std::io::Error, start: Start) -> String {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return rustls_failure(tls, start);
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            if start == Start::Implicit =>
        {
            "the server closed the connection during the TLS handshake: is this port \
             STARTTLS (587) rather than implicit TLS (465)? Then set tls = \"starttls\""
                .to_string()
        }
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
            "the server closed the connection during the TLS handshake".to_string()
        }
        _ => e.to_string(),
    }
}

/// What a failed handshake on the listener (a client's TLS) means, for
/// the log line.
pub fn accept_failure(e: &std::io::Error) -> String {
    let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType)) => {
            "the client did not start TLS: it speaks plain SMTP (or STARTTLS) to the \
             implicit-TLS port (listen_tls); point it at a listen port instead"
                .to_string()
        }
        Some(rustls::Error::PeerIncompatible(p)) => format!(
            "the client shares no TLS version or cipher with postern (TLS 1.2 and 1.3): {p:?}"
        ),
        Some(rustls::Error::AlertReceived(a)) => format!(
            "the client ended the handshake (TLS alert {a:?}); does it trust this \
             listener's certificate?"
        ),
        Some(other) => format!("TLS error: {other}"),
        None => e.to_string(),
    }
}

fn rustls_failure(e: &rustls::Error, start: Start) -> String {
    match e {
        rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType)
            if start == Start::Implicit =>
        {
            "the server did not start TLS: is this port STARTTLS (587) rather than implicit \
             TLS (465)? Then set tls = \"starttls\", or use the server's implicit-TLS port"
                .to_string()
        }
        rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            "the server answered STARTTLS but then did not speak TLS".to_string()
        }
        rustls::Error::InvalidMessage(m) => {
            format!("the server's answer is not valid TLS ({m:?})")
        }
        rustls::Error::InvalidCertificate(c) => certificate_failure(c),
        rustls::Error::AlertReceived(a) => match a {
            AlertDescription::HandshakeFailure | AlertDescription::ProtocolVersion => {
                "the server refused the handshake: it shares no TLS version or cipher with \
                 postern (TLS 1.2 and 1.3), or it wants a client certificate"
                    .to_string()
            }
            AlertDescription::CertificateRequired => {
                "the server wants a client certificate, which this route does not send".to_string()
            }
            other => format!("the server ended the handshake (TLS alert {other:?})"),
        },
        rustls::Error::PeerIncompatible(p) => format!(
            "the server and postern share no TLS version or cipher (postern speaks TLS 1.2 \
             and 1.3): {p:?}"
        ),
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".to_string(),
        other => format!("TLS error: {other}"),
    }
}

fn certificate_failure(c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => {
            "the server's certificate is not signed by a certificate authority this system \
             trusts: if the server uses its own CA, set ca_file to that CA's certificate (PEM) \
             for this route"
                .to_string()
        }
        CertificateError::Expired => {
            "the server's certificate has expired: its administrator must renew it".to_string()
        }
        CertificateError::ExpiredContext { time, not_after } => {
            let ago = time.as_secs().saturating_sub(not_after.as_secs());
            format!(
                "the server's certificate expired {} ago: its administrator must renew it (or \
                 is this system's clock wrong?)",
                human(Duration::from_secs(ago))
            )
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet: is this system's clock right?".to_string()
        }
        CertificateError::NotValidForName => {
            "certificate not valid for name postern connected to: set host to a name the \
             certificate carries"
                .to_string()
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "certificate not valid for name {:?} (it names {}): set host to one of those names",
            expected.to_str(),
            if presented.is_empty() {
                "no host name".to_string()
            } else {
                presented
                    .iter()
                    .map(|p| plain_name(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        CertificateError::Revoked => {
            "the server's certificate has been revoked by its issuer".to_string()
        }
        CertificateError::BadSignature | CertificateError::BadEncoding => {
            "the server's certificate is damaged (bad signature or encoding)".to_string()
        }
        CertificateError::Other(o) if o.to_string().contains("CaUsedAsEndEntity") => {
            "the server presents a CA certificate (basicConstraints CA:TRUE) as its own, which \
             TLS does not accept even when ca_file names it: the server needs a certificate \
             issued by that CA"
                .to_string()
        }
        other => format!("the server's certificate is not acceptable: {other}"),
    }
}

/// A name from a certificate as rustls reports it (`DnsName("mx.example")`,
/// `IpAddress(192.0.2.1)`), without the wrapping.
fn plain_name(p: &str) -> &str {
    let inner = ["DnsName(", "IpAddress(", "UniformResourceIdentifier("]
        .iter()
        .find_map(|w| p.strip_prefix(w).and_then(|r| r.strip_suffix(')')))
        .unwrap_or(p);
    inner.trim_matches('"')
}

/// A duration as people say it: the largest unit or two.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
