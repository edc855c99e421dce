//! Describing certificate and key files for people: why a file named in
//! the config cannot be used (`postern check`), and a one-line summary of
//! a certificate a peer presented (`check --connect`).

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

/// Most a certificate bundle is read to look for a certificate: bundles are
/// small, and the cap keeps a wrong path (a disk image, say) from being
/// read whole.
const PEM_SNIFF_LIMIT: u64 = 4 * 1024 * 1024;

/// Why the file at `path` cannot be used, if it cannot: missing, not
/// readable by this process, a directory, empty or, with `certificates`,
/// holding no PEM certificate. The text follows the quoted path, e.g.
/// `"/etc/ca.pem" does not exist`.
pub fn file_problem(path: &Path, certificates: bool) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) => Some(io_problem(&e, path)),
        Ok(m) if m.is_dir() => Some("is a directory; expected a file".to_string()),
        Ok(m) if m.len() == 0 => Some("is empty".to_string()),
        Ok(_) => match std::fs::File::open(path) {
            Err(e) => Some(io_problem(&e, path)),
            Ok(file) if certificates => {
                let mut head = Vec::new();
                match file.take(PEM_SNIFF_LIMIT).read_to_end(&mut head) {
                    Err(e) => Some(io_problem(&e, path)),
                    Ok(_)
                        if !String::from_utf8_lossy(&head)
                            .contains("-----BEGIN CERTIFICATE-----") =>
                    {
                        Some(
                            "holds no PEM certificate (a \"-----BEGIN CERTIFICATE-----\" block)"
                                .to_string(),
                        )
                    }
                    Ok(_) => None,
                }
            }
            Ok(_) => None,
        },
    }
}

fn io_problem(e: &std::io::Error, path: &Path) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            let mut m = "does not exist".to_string();
            if path.is_relative()
                && let Ok(cwd) = std::env::current_dir()
            {
                let _ = write!(
                    m,
                    " (relative paths are taken from the working directory, {})",
                    cwd.display()
                );
            }
            m
        }
        std::io::ErrorKind::PermissionDenied => {
            "cannot be read: permission denied; the user postern runs as must be able to read it"
                .to_string()
        }
        _ => format!("cannot be read: {e}"),
    }
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
