//! `[status]`: what `postern status` calls a warning or critical, and the
//! status listener (`/metrics` and a page), off unless `listen` is set.
//!
//! Uses the config's own `schema`, `convert` and `values`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use super::convert::{DAY, MINUTE, count, duration, listen, net};
use super::schema::{Section, default, list, optional, table};
use super::values::Dur;
use super::{Ctx, Reported};

// Checked at compile time; the default for allow_clients.
const LOOPBACK_V4: IpNet = IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8);
const LOOPBACK_V6: IpNet = IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128);

table! {
    /// `[status]`
    pub struct StatusConfig, read as StatusKeys {
        /// Default off. Where to serve `/metrics` (Prometheus text format)
        /// and `/` (a status page) over HTTP, e.g. `"127.0.0.1:9025"`.
        listen: Option<SocketAddr> = optional(listen),
        /// Default `["127.0.0.0/8", "::1/128"]`: who may ask the status
        /// listener; others are closed on at once.
        allow_clients: Vec<IpNet> = default(vec![LOOPBACK_V4, LOOPBACK_V6], list(net)),
        /// Default 1h: a route failing (no success since its first error)
        /// this long makes `postern status` critical (exit 2).
        route_failing_critical: Dur = default(Dur::secs(3600), duration(MINUTE, 30 * DAY)),
        /// Default 90: the queue this full (percent of `max_size` or
        /// `max_messages`) makes `postern status` critical (exit 2).
        queue_full_critical: usize = default(90, count(1, 100)),
    }
}

/// Read `[status]` (absent: every default).
pub(crate) fn read(ctx: &mut Ctx, sec: &Section) -> Result<StatusConfig, Reported> {
    super::unknown_keys(ctx, sec, &[StatusConfig::KEYS]);
    StatusKeys::read(ctx, sec).build()
}
