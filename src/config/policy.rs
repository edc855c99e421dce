//! `[policy]`: who may relay, from and to whom.
//!
//! Uses the config's own `schema`, `convert` and `values`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::convert::{allowed_net, boolean, net, recipient_pattern, sender_pattern};
use super::schema::{Section, default, list, table};
use super::values::AddressPattern;
use super::{Ctx, Reported};

// Checked at compile time; the default for allow_clients.
const LOOPBACK_V4: IpNet = IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8);
const LOOPBACK_V6: IpNet = IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128);

table! {
    /// `[policy]`: who may relay, from and to whom.
    pub struct PolicyConfig, read as PolicyKeys {
        /// Default `["127.0.0.0/8", "::1/128"]`. Clients outside get 554 at connect.
        allow_clients: Vec<IpNet> = default(vec![LOOPBACK_V4, LOOPBACK_V6], list(allowed_net)),
        /// Default empty. Wins over allow.
        deny_clients: Vec<IpNet> = default(Vec::new(), list(net)),
        /// Default empty = any sender.
        allow_senders: Vec<AddressPattern> = default(Vec::new(), list(sender_pattern)),
        /// Default empty. Wins over allow.
        deny_senders: Vec<AddressPattern> = default(Vec::new(), list(sender_pattern)),
        /// Default empty = any recipient.
        allow_recipients: Vec<AddressPattern> = default(Vec::new(), list(recipient_pattern)),
        /// Default empty. Wins over allow.
        deny_recipients: Vec<AddressPattern> = default(Vec::new(), list(recipient_pattern)),
        /// Default false. An authenticated `[[user]]` may relay from outside allow_clients.
        relay_authenticated: bool = default(false, boolean),
        /// Default false. allow_clients may cover more public address
        /// space than a /16 of IPv4 or a /48 of IPv6 (summed): only for
        /// networks that are all the site's own.
        allow_public_clients: bool = default(false, boolean),
    }
}

// How much public address space allow_clients may cover before postern
// asks for allow_public_clients: a site's own public block fits, a slip of
// a prefix length ("8.0.0.0/5", two /1s) that opens the relay to strangers
// does not. Summed over the list, after merging overlaps.
/// A /16 of public IPv4 addresses.
pub(crate) const MAX_PUBLIC_V4: u128 = 1 << 16;
/// A /48 of public IPv6 addresses.
pub(crate) const MAX_PUBLIC_V6: u128 = 1 << 80;

/// IPv4 ranges that are not reachable from the internet at large (RFC 6890:
/// this network, private, shared, loopback, link-local, protocol
/// assignments, documentation, benchmarking, multicast and reserved),
/// sorted and disjoint.
const NOT_PUBLIC_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    (Ipv4Addr::new(224, 0, 0, 0), 3),
];

/// Read `[policy]` (absent: every default).
pub(crate) fn read(ctx: &mut Ctx, sec: &Section) -> Result<PolicyConfig, Reported> {
    super::unknown_keys(ctx, sec, &[PolicyConfig::KEYS]);
    let keys = PolicyKeys::read(ctx, sec);
    let mut good = Ok(());
    if let (Ok(nets), Ok(false)) = (&keys.allow_clients, &keys.allow_public_clients) {
        let (v4, v6) = public_addresses(nets);
        let what = if v4 > MAX_PUBLIC_V4 {
            Some(format!("{v4} public IPv4 addresses (more than a /16)"))
        } else if v6 > MAX_PUBLIC_V6 {
            Some("more public IPv6 addresses than a /48".to_string())
        } else {
            None
        };
        if let Some(what) = what {
            let at = sec.offset("allow_clients").unwrap_or(sec.at);
            good = Err(ctx.error(
                at,
                format!(
                    "allow_clients: these networks cover {what}: every host there could relay \
                     mail through this one (an open relay); list only your devices' networks, \
                     e.g. \"192.168.1.0/24\", or, if all of that address space is yours, set \
                     allow_public_clients = true in [policy]"
                ),
            ));
        }
    }
    let policy = keys.build();
    good.and(policy)
}

/// How many public IPv4 and IPv6 addresses `nets` cover together, each
/// address counted once (saturating: a count past `u128` is still "too
/// many").
pub(crate) fn public_addresses(nets: &[IpNet]) -> (u128, u128) {
    let range = |start: u128, len: u8, bits: u8| -> (u128, u128) {
        let host_bits = u32::from(bits.saturating_sub(len));
        let span = 1u128.checked_shl(host_bits).map_or(u128::MAX, |s| s - 1);
        (start, start.saturating_add(span))
    };
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for n in nets {
        match n.trunc() {
            IpNet::V4(n) => v4.push(range(
                u128::from(u32::from(n.network())),
                n.prefix_len(),
                32,
            )),
            IpNet::V6(n) => v6.push(range(u128::from(n.network()), n.prefix_len(), 128)),
        }
    }
    let not_v4: Vec<(u128, u128)> = NOT_PUBLIC_V4
        .iter()
        .map(|(a, len)| range(u128::from(u32::from(*a)), *len, 32))
        .collect();
    // Public IPv6 is global unicast, 2000::/3, less documentation
    // (2001:db8::/32); the rest is private, link-local, multicast or not
    // allocated.
    let unicast = range(0x2000u128 << 112, 3, 128);
    let not_v6 = [
        (0, unicast.0 - 1),
        range(0x2001_0db8u128 << 96, 32, 128),
        (unicast.1 + 1, u128::MAX),
    ];
    (public_count(v4, &not_v4), public_count(v6, &not_v6))
}

/// Addresses in the union of `ranges` (inclusive) that are outside every
/// range of `excluded` (sorted, disjoint).
fn public_count(mut ranges: Vec<(u128, u128)>, excluded: &[(u128, u128)]) -> u128 {
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let size = |(s, e): (u128, u128)| (e - s).saturating_add(1);
    let mut total: u128 = 0;
    for r in merged {
        let mut public = size(r);
        for x in excluded {
            let (s, e) = (r.0.max(x.0), r.1.min(x.1));
            if s <= e {
                public = public.saturating_sub(size((s, e)));
            }
        }
        total = total.saturating_add(public);
    }
    total
}
