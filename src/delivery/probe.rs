//! `postern check --connect`: for every route, resolve, connect, TLS (with
//! the certificate's details), AUTH, then QUIT, printing the conversation
//! with secrets masked and saying OK or exactly what failed. No mail is sent.

use std::fmt::Write as _;
use std::sync::Arc;

use super::client::{Client, ClientError, Transcript, candidates};
use super::routes::{Routes, Target};
use crate::config::DomainPattern;

/// One route's result.
#[derive(Debug)]
pub struct RouteCheck {
    /// The route's name.
    pub name: String,
    /// Conversation and notes.
    pub lines: Vec<String>,
    /// `None`: OK; otherwise what failed.
    pub failure: Option<String>,
}

/// What kind of failure, for the summary line: DNS, connect, certificate, auth…
fn stage(e: &ClientError) -> &'static str {
    match e {
        ClientError::Dns(_) => "DNS",
        ClientError::NullMx(_) => "DNS (null MX)",
        ClientError::Connect { .. } => "connect",
        ClientError::Tls { .. } => "certificate/TLS",
        ClientError::ClockNotSynced { .. } => "certificate (clock)",
        ClientError::NoStartTls => "STARTTLS",
        ClientError::AuthRefused { .. }
        | ClientError::NoAuthMechanism(_)
        | ClientError::PasswordFile { .. }
        | ClientError::InsecureAuth
        | ClientError::OAuth(_) => "auth",
        ClientError::Timeout(_) => "timeout",
        ClientError::AllFailed(_) => "every host",
        _ => "SMTP",
    }
}

/// Check every route; `domain` is used for MX routes whose domains are all
/// wildcards.
pub async fn check_routes(routes: &Routes, domain: Option<&str>) -> Vec<RouteCheck> {
    let mut out = Vec::new();
    for route in &routes.routes {
        let mut lines = Vec::new();
        let failure = match &route.target {
            Target::Maildir(dir) => {
                let probe = dir.join(".postern-check");
                let r = std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::write(&probe, b"check\n"))
                    .and_then(|_| std::fs::remove_file(&probe));
                lines.push(format!("-- maildir {}", dir.display()));
                r.err()
                    .map(|e| format!("cannot write into {}: {e}", dir.display()))
            }
            Target::Smtp(sh) => {
                let d = if sh.mx {
                    route
                        .domains
                        .iter()
                        .find_map(|p| match p {
                            DomainPattern::Exact(d) => Some(d.clone()),
                            DomainPattern::Subdomains(d) => Some(d.clone()),
                            DomainPattern::Any => None,
                        })
                        .or(domain.map(str::to_string))
                } else {
                    None
                };
                if sh.mx && d.is_none() {
                    lines.push(
                        "-- MX route for every domain: give --domain example.com to check one"
                            .into(),
                    );
                    None
                } else {
                    if let Some(d) = &d {
                        match candidates(sh, Some(d)).await {
                            Ok(c) => lines.push(format!(
                                "-- MX for {d}: {}",
                                c.iter()
                                    .map(|c| c.host.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                            Err(e) => lines.push(format!("-- MX for {d}: {e}")),
                        }
                    }
                    let t: Transcript = Arc::new(std::sync::Mutex::new(Vec::new()));
                    let res = Client::connect(sh, d.as_deref(), Some(t.clone())).await;
                    let failure = match res {
                        Ok(c) => {
                            let size = c.caps().size;
                            c.quit().await;
                            if let Some(s) = size {
                                lines.push(format!("-- upstream SIZE limit: {s} octets"));
                            }
                            None
                        }
                        Err(e) => Some(format!("{}: {e}", stage(&e))),
                    };
                    lines.splice(0..0, t.lock().unwrap_or_else(|p| p.into_inner()).drain(..));
                    failure
                }
            }
        };
        out.push(RouteCheck {
            name: route.name.clone(),
            lines,
            failure,
        });
    }
    out
}

/// Print results; true when every route is OK.
pub fn print(results: &[RouteCheck]) -> bool {
    let mut ok = true;
    for r in results {
        println!("== {}", r.name);
        for l in &r.lines {
            println!("   {l}");
        }
        match &r.failure {
            None => println!("   OK"),
            Some(f) => {
                ok = false;
                println!("   FAILED: {f}");
            }
        }
    }
    ok
}

/// A one-line description of a DER certificate: subject CN, issuer CN,
/// validity and SHA-256 fingerprint (a small DER walk; no X.509 crate).
pub fn describe_cert(der: &[u8]) -> String {
    let fp = ring::digest::digest(&ring::digest::SHA256, der);
    let mut hex = String::new();
    for (i, b) in fp.as_ref().iter().enumerate() {
        if i > 0 {
            hex.push(':');
        }
        let _ = write!(hex, "{b:02X}");
    }
    let mut s = String::new();
    if let Some(t) = tbs_fields(der) {
        let _ = write!(
            s,
            "subject CN={} issuer CN={} valid {} to {} ",
            t.subject.as_deref().unwrap_or("?"),
            t.issuer.as_deref().unwrap_or("?"),
            t.not_before.as_deref().unwrap_or("?"),
            t.not_after.as_deref().unwrap_or("?"),
        );
    }
    let _ = write!(s, "sha256 {hex}");
    s
}

struct Tbs {
    subject: Option<String>,
    issuer: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
}

/// (tag, content, rest) of the DER element at the start of `b`.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let content = b.get(hdr..hdr.checked_add(len)?)?;
    Some((tag, content, &b[hdr + len..]))
}

fn tbs_fields(cert: &[u8]) -> Option<Tbs> {
    let (_, c, _) = der(cert)?; // Certificate SEQUENCE
    let (_, mut tbs, _) = der(c)?; // TBSCertificate SEQUENCE
    // [0] version (optional), serial, signature alg, issuer, validity, subject
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
        tbs = der(tbs)?.2; // serial
    } else {
        tbs = rest; // that was the serial
    }
    tbs = der(tbs)?.2; // signature algorithm
    let (_, issuer, rest) = der(tbs)?;
    let (_, validity, rest) = der(rest)?;
    let (_, subject, _) = der(rest)?;
    let (_, nb, r) = der(validity)?;
    let (_, na, _) = der(r)?;
    Some(Tbs {
        subject: common_name(subject),
        issuer: common_name(issuer),
        not_before: Some(String::from_utf8_lossy(nb).into_owned()),
        not_after: Some(String::from_utf8_lossy(na).into_owned()),
    })
}

/// The CN of an X.501 Name (OID 2.5.4.3).
fn common_name(mut name: &[u8]) -> Option<String> {
    while let Some((_, set, rest)) = der(name) {
        let mut atvs = set;
        while let Some((_, atv, r)) = der(atvs) {
            if let Some((6, oid, vrest)) = der(atv)
                && oid == [0x55, 0x04, 0x03]
                && let Some((_, v, _)) = der(vrest)
            {
                return Some(
                    String::from_utf8_lossy(v)
                        .chars()
                        .map(|c| if c.is_control() { '?' } else { c })
                        .collect(),
                );
            }
            atvs = r;
        }
        name = rest;
    }
    None
}
