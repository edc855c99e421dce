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
    }
}

/// Read `[policy]` (absent: every default).
pub(crate) fn read(ctx: &mut Ctx, sec: &Section) -> Result<PolicyConfig, Reported> {
    super::unknown_keys(ctx, sec, &[PolicyConfig::KEYS]);
    PolicyKeys::read(ctx, sec).build()
}
