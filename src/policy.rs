//! Relay policy: which clients may connect, which senders and recipients are
//! allowed. Deny lists win over allow lists. Pure functions over the
//! configured lists; the server calls them at the earliest point.

use std::fmt;
use std::net::IpAddr;

use crate::config::{AddressPattern, PolicyConfig};
use crate::smtp::{Address, Reply};

/// The policy in force, built from `[policy]`.
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: PolicyConfig,
}

/// Why policy refused something.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Client address matches deny_clients.
    ClientDenied,
    /// Client address is outside allow_clients.
    ClientNotAllowed,
    /// Sender matches deny_senders.
    SenderDenied,
    /// Sender not in a non-empty allow_senders.
    SenderNotAllowed,
    /// Recipient matches deny_recipients.
    RecipientDenied,
    /// Recipient not in a non-empty allow_recipients.
    RecipientNotAllowed,
}

impl Refusal {
    /// The SMTP reply: 554 5.7.1 for clients, 550 5.7.1 for addresses.
    pub fn reply(&self) -> Reply {
        unimplemented!("helper: policy.rs")
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        unimplemented!("helper: policy.rs")
    }
}

impl Policy {
    /// Build from the config section.
    pub fn new(cfg: &PolicyConfig) -> Policy {
        Policy { cfg: cfg.clone() }
    }
    /// At connect.
    pub fn check_client(&self, ip: IpAddr) -> Result<(), Refusal> {
        let _ = (ip, &self.cfg);
        unimplemented!("helper: policy.rs")
    }
    /// At MAIL; `None` is the null sender, which passes only when
    /// allow_senders is empty or lists `<>`.
    pub fn check_sender(&self, from: Option<&Address>) -> Result<(), Refusal> {
        let _ = from;
        unimplemented!("helper: policy.rs")
    }
    /// At each RCPT.
    pub fn check_recipient(&self, to: &Address) -> Result<(), Refusal> {
        let _ = to;
        unimplemented!("helper: policy.rs")
    }
}

impl AddressPattern {
    /// Does this pattern match the address (domains case-insensitively)?
    pub fn matches(&self, addr: &Address) -> bool {
        let _ = addr;
        unimplemented!("helper: policy.rs")
    }
}
