//! Which hosts and addresses a delivery tries, and in what order: MX
//! records by preference (RFC 5321 §5.1), address families as configured.
//! Pure functions over what DNS returned; no I/O. Uses `config` only.

use crate::config::{IpFamily, TlsMode};

/// One host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS spoken with it.
    pub tls: TlsMode,
}

/// Preference order, shuffled among equal preferences (RFC 5321 §5.1).
pub fn order_mx(mut mxs: Vec<(u16, String)>) -> Vec<String> {
    mxs.sort_by_key(|(p, _)| *p);
    let mut out = Vec::with_capacity(mxs.len());
    let mut i = 0;
    while i < mxs.len() {
        let j = mxs[i..]
            .iter()
            .position(|(p, _)| *p != mxs[i].0)
            .map_or(mxs.len(), |k| i + k);
        let mut group: Vec<String> = mxs[i..j].iter().map(|(_, n)| n.clone()).collect();
        fastrand::shuffle(&mut group);
        out.extend(group);
        i = j;
    }
    out
}

/// The addresses to try, in order: only the configured family, or with
/// `any` both families interleaved (first as the resolver returned it), so
/// a broken family costs one failed attempt before the other is tried.
pub fn order_addrs(ips: Vec<std::net::IpAddr>, family: IpFamily) -> Vec<std::net::IpAddr> {
    let (v6, v4): (Vec<_>, Vec<_>) = ips.iter().copied().partition(|ip| ip.is_ipv6());
    match family {
        IpFamily::Ipv4 => v4,
        IpFamily::Ipv6 => v6,
        IpFamily::Any => {
            let v6_first = ips.first().is_some_and(|ip| ip.is_ipv6());
            let (a, b) = if v6_first { (v6, v4) } else { (v4, v6) };
            let mut out = Vec::with_capacity(ips.len());
            let mut a = a.into_iter();
            let mut b = b.into_iter();
            loop {
                match (a.next(), b.next()) {
                    (None, None) => break,
                    (x, y) => out.extend(x.into_iter().chain(y)),
                }
            }
            out
        }
    }
}
