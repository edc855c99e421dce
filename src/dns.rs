//! Name resolution with hickory-resolver on smol: a `RuntimeProvider` built
//! on async-io sockets and timers, so no tokio enters the tree. Resolvers come
//! from /etc/resolv.conf (and /etc/hosts); a broken or missing resolv.conf
//! never stops startup, it only makes lookups fail (and deliveries defer).

use std::net::IpAddr;

/// Why a lookup failed. Every variant is temporary from the queue's point of
/// view except [`DnsError::NoSuchHost`], which is still only deferred for
/// smarthosts (a typo in the config is fixed by the admin, not by bouncing).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// NXDOMAIN or no A/AAAA records.
    #[error("{0}: no such host")]
    NoSuchHost(String),
    /// Timeout, SERVFAIL, no reachable name server, bad resolv.conf.
    #[error("{name}: DNS lookup failed: {reason}")]
    Failed {
        /// The name looked up.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// A resolver shared by all deliveries.
#[derive(Debug, Clone)]
pub struct Resolver {
    _private: (),
}

impl Resolver {
    /// From /etc/resolv.conf and /etc/hosts; falls back to an empty
    /// configuration (every lookup fails, with a warning logged) if those
    /// cannot be read.
    pub fn from_system() -> Resolver {
        unimplemented!("helper: dns.rs")
    }
    /// A and AAAA records of `host`, IPv6 first as returned; an IP literal
    /// (`192.0.2.1`, `::1`, `[::1]`) is returned as is without a lookup.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let _ = host;
        unimplemented!("helper: dns.rs")
    }
}
