//! Relay policy: which clients may connect, which senders and recipients are
//! allowed (deny lists win over allow lists), and what the listener must
//! know of the outbound side ([`Outbound`]: aliases, the upstream size
//! limit). Pure functions over the configured lists; the server calls them
//! at the earliest point. Uses `config` and `smtp`; `server`, `delivery` and
//! `daemon` use it.

mod outbound;

pub use outbound::{Aliases, Outbound, UpstreamSize};

use std::fmt;
use std::net::IpAddr;

use crate::config::{AddressPattern, PolicyConfig};
use crate::smtp::Address;

/// The policy in force, built from `[policy]`.
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: PolicyConfig,
}

/// Why policy refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::ClientDenied => "client address is in deny_clients",
            Refusal::ClientNotAllowed => "client address is not in allow_clients",
            Refusal::SenderDenied => "sender is in deny_senders",
            Refusal::SenderNotAllowed => "sender is not in allow_senders",
            Refusal::RecipientDenied => "recipient is in deny_recipients",
            Refusal::RecipientNotAllowed => "recipient is not in allow_recipients",
        })
    }
}

impl Policy {
    /// Build from the config section.
    pub fn new(cfg: &PolicyConfig) -> Policy {
        Policy { cfg: cfg.clone() }
    }

    /// At connect. Deny wins over allow; an empty allow list allows nobody.
    /// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack
    /// socket reports for IPv4 clients) is checked as the IPv4 address.
    pub fn check_client(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if self.cfg.deny_clients.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::ClientDenied);
        }
        if self.cfg.allow_clients.iter().any(|n| n.contains(&ip)) {
            Ok(())
        } else {
            Err(Refusal::ClientNotAllowed)
        }
    }

    /// At MAIL; `None` is the null sender, which passes only when
    /// allow_senders is empty or lists `<>`.
    pub fn check_sender(&self, from: Option<&Address>) -> Result<(), Refusal> {
        self.check_sender_parts(from.map(|a| (a.local_part(), a.domain())))
    }

    /// At each RCPT.
    pub fn check_recipient(&self, to: &Address) -> Result<(), Refusal> {
        self.check_recipient_parts(to.local_part(), to.domain())
    }

    // The checks work on the address's parts, so they can be tested without
    // the SMTP address parser.

    fn check_sender_parts(&self, from: Option<(&str, Option<&str>)>) -> Result<(), Refusal> {
        let hit = |list: &[AddressPattern]| {
            list.iter().any(|p| match from {
                None => *p == AddressPattern::NullSender,
                Some((local, domain)) => p.matches_parts(local, domain),
            })
        };
        if hit(&self.cfg.deny_senders) {
            return Err(Refusal::SenderDenied);
        }
        if self.cfg.allow_senders.is_empty() || hit(&self.cfg.allow_senders) {
            Ok(())
        } else {
            Err(Refusal::SenderNotAllowed)
        }
    }

    fn check_recipient_parts(&self, local: &str, domain: Option<&str>) -> Result<(), Refusal> {
        let hit = |list: &[AddressPattern]| list.iter().any(|p| p.matches_parts(local, domain));
        if hit(&self.cfg.deny_recipients) {
            return Err(Refusal::RecipientDenied);
        }
        if self.cfg.allow_recipients.is_empty() || hit(&self.cfg.allow_recipients) {
            Ok(())
        } else {
            Err(Refusal::RecipientNotAllowed)
        }
    }
}

impl AddressPattern {
    /// Does this pattern match the address (domains case-insensitively)?
    ///
    /// `Domain` matches that domain only, `Subdomains` any deeper one but not
    /// the domain itself, `NullSender` no address (the null sender is no
    /// address; see [`Policy::check_sender`]). An address without a domain
    /// (`root`) matches only a `Mailbox` pattern equal to its local part.
    pub fn matches(&self, addr: &Address) -> bool {
        self.matches_parts(addr.local_part(), addr.domain())
    }

    fn matches_parts(&self, local: &str, domain: Option<&str>) -> bool {
        // A trailing dot names the same domain (`example.com.`); without
        // this, a deny entry could be sidestepped by adding one.
        let domain = domain.map(|d| d.strip_suffix('.').unwrap_or(d));
        match (self, domain) {
            (AddressPattern::Mailbox(m), Some(d)) => match m.rsplit_once('@') {
                Some((ml, md)) => same(ml, local) && same(md, d),
                None => false,
            },
            (AddressPattern::Mailbox(m), None) => same(m, local),
            (AddressPattern::Domain(p), Some(d)) => same(p, d),
            (AddressPattern::Subdomains(p), Some(d)) => {
                // Compare on char boundaries: lowercase both, then look for
                // ".{p}" at the end with at least one label before it.
                let d = d.to_lowercase();
                let p = p.to_lowercase();
                d.len() > p.len() + 1 && d.ends_with(&p) && d[..d.len() - p.len()].ends_with('.')
            }
            (AddressPattern::Domain(_) | AddressPattern::Subdomains(_), None) => false,
            (AddressPattern::NullSender, _) => false,
        }
    }
}

/// Case-insensitive equality, Unicode-aware (SMTPUTF8 addresses).
fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn pats(list: &[&str]) -> Vec<AddressPattern> {
        list.iter()
            .map(|s| AddressPattern::parse(s).unwrap())
            .collect()
    }

    fn policy() -> PolicyConfig {
        PolicyConfig {
            allow_clients: Vec::new(),
            deny_clients: Vec::new(),
            allow_senders: Vec::new(),
            deny_senders: Vec::new(),
            allow_recipients: Vec::new(),
            deny_recipients: Vec::new(),
            relay_authenticated: false,
            allow_public_clients: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `user@domain` or a bare local part, split the way `Address` does.
    fn parts(s: &str) -> (&str, Option<&str>) {
        match s.rsplit_once('@') {
            Some((l, d)) => (l, Some(d)),
            None => (s, None),
        }
    }

    fn matches(pattern: &str, addr: &str) -> bool {
        let (l, d) = parts(addr);
        AddressPattern::parse(pattern).unwrap().matches_parts(l, d)
    }

    #[test]
    fn clients_need_allow_and_deny_wins() {
        let p = Policy::new(&PolicyConfig {
            allow_clients: nets(&["192.168.1.0/24", "::1/128"]),
            deny_clients: nets(&["192.168.1.66/32"]),
            ..policy()
        });
        assert_eq!(p.check_client(ip("192.168.1.20")), Ok(()));
        assert_eq!(p.check_client(ip("::1")), Ok(()));
        assert_eq!(
            p.check_client(ip("192.168.1.66")),
            Err(Refusal::ClientDenied)
        );
        assert_eq!(
            p.check_client(ip("192.168.2.1")),
            Err(Refusal::ClientNotAllowed)
        );
        assert_eq!(
            p.check_client(ip("127.0.0.1")),
            Err(Refusal::ClientNotAllowed)
        );
        // Deny wins even for an address outside allow.
        let p = Policy::new(&PolicyConfig {
            deny_clients: nets(&["10.0.0.0/8"]),
            ..policy()
        });
        assert_eq!(p.check_client(ip("10.1.1.1")), Err(Refusal::ClientDenied));
    }

    #[test]
    fn empty_allow_clients_allows_nobody() {
        let p = Policy::new(&policy());
        assert_eq!(
            p.check_client(ip("127.0.0.1")),
            Err(Refusal::ClientNotAllowed)
        );
        assert_eq!(p.check_client(ip("::1")), Err(Refusal::ClientNotAllowed));
    }

    #[test]
    fn ipv4_mapped_clients_are_checked_as_ipv4() {
        let p = Policy::new(&PolicyConfig {
            allow_clients: nets(&["192.0.2.0/24"]),
            deny_clients: nets(&["192.0.2.9/32"]),
            ..policy()
        });
        assert_eq!(p.check_client(ip("::ffff:192.0.2.1")), Ok(()));
        assert_eq!(
            p.check_client(ip("::ffff:192.0.2.9")),
            Err(Refusal::ClientDenied)
        );
        assert_eq!(
            p.check_client(ip("::ffff:198.51.100.1")),
            Err(Refusal::ClientNotAllowed)
        );
        // An IPv6 allow entry does not let mapped IPv4 clients in by accident.
        let p = Policy::new(&PolicyConfig {
            allow_clients: nets(&["::/1"]),
            ..policy()
        });
        assert_eq!(
            p.check_client(ip("::ffff:192.0.2.1")),
            Err(Refusal::ClientNotAllowed)
        );
    }

    #[test]
    fn mailbox_pattern() {
        assert!(matches("user@example.com", "user@example.com"));
        assert!(matches("user@example.com", "USER@Example.COM"));
        assert!(matches("user@example.com", "user@example.com."));
        assert!(!matches("user@example.com", "user2@example.com"));
        assert!(!matches("user@example.com", "user@sub.example.com"));
        assert!(!matches("user@example.com", "user"));
        assert!(matches("jörg@bücher.de", "JÖRG@BÜCHER.DE"));
    }

    #[test]
    fn domain_pattern_is_that_domain_only() {
        assert!(matches("example.com", "a@example.com"));
        assert!(matches("example.com", "a@EXAMPLE.com"));
        assert!(matches("example.com", "a@example.com."));
        assert!(!matches("example.com", "a@sub.example.com"));
        assert!(!matches("example.com", "a@badexample.com"));
        assert!(!matches("example.com", "a@example.com.evil.net"));
        assert!(!matches("example.com", "example.com"));
    }

    #[test]
    fn subdomains_pattern_excludes_the_domain_itself() {
        assert!(matches(".example.com", "a@sub.example.com"));
        assert!(matches(".example.com", "a@deep.sub.Example.Com"));
        assert!(matches(".example.com", "a@sub.example.com."));
        assert!(!matches(".example.com", "a@example.com"));
        assert!(!matches(".example.com", "a@badexample.com"));
        assert!(!matches(".example.com", "a@.example.com"));
        assert!(!matches(".example.com", "sub.example.com"));
    }

    #[test]
    fn addresses_without_domain_match_only_an_equal_mailbox_pattern() {
        let bare = AddressPattern::Mailbox("root".into());
        assert!(bare.matches_parts("root", None));
        assert!(bare.matches_parts("ROOT", None));
        assert!(!bare.matches_parts("admin", None));
        // A mailbox pattern with a domain does not match a bare local part,
        // nor a bare-word pattern an address with a domain.
        assert!(!matches("root@example.com", "root"));
        assert!(!bare.matches_parts("root", Some("example.com")));
        // Domain-shaped patterns never match a bare local part.
        assert!(!matches("root", "root"));
        assert!(!matches(".root", "root"));
        assert!(!AddressPattern::NullSender.matches_parts("root", None));
        assert!(!AddressPattern::NullSender.matches_parts("a", Some("b.c")));
    }

    #[test]
    fn senders_deny_wins_and_empty_allow_allows_all() {
        let p = Policy::new(&policy());
        assert_eq!(p.check_sender_parts(Some(parts("any@where.org"))), Ok(()));
        assert_eq!(p.check_sender_parts(None), Ok(()));

        let p = Policy::new(&PolicyConfig {
            allow_senders: pats(&["example.com", ".example.com"]),
            deny_senders: pats(&["spam@example.com", ".bad.example.com"]),
            ..policy()
        });
        assert_eq!(
            p.check_sender_parts(Some(parts("printer@example.com"))),
            Ok(())
        );
        assert_eq!(
            p.check_sender_parts(Some(parts("nas@lab.example.com"))),
            Ok(())
        );
        assert_eq!(
            p.check_sender_parts(Some(parts("Spam@Example.com"))),
            Err(Refusal::SenderDenied)
        );
        assert_eq!(
            p.check_sender_parts(Some(parts("x@a.bad.example.com"))),
            Err(Refusal::SenderDenied)
        );
        assert_eq!(
            p.check_sender_parts(Some(parts("x@other.org"))),
            Err(Refusal::SenderNotAllowed)
        );
        assert_eq!(
            p.check_sender_parts(Some(parts("root"))),
            Err(Refusal::SenderNotAllowed)
        );
    }

    #[test]
    fn null_sender_rules() {
        // Non-empty allow without <>: refused.
        let p = Policy::new(&PolicyConfig {
            allow_senders: pats(&["example.com"]),
            ..policy()
        });
        assert_eq!(p.check_sender_parts(None), Err(Refusal::SenderNotAllowed));
        // Listed: allowed.
        let p = Policy::new(&PolicyConfig {
            allow_senders: pats(&["example.com", "<>"]),
            ..policy()
        });
        assert_eq!(p.check_sender_parts(None), Ok(()));
        // Denied: refused, even when also allowed.
        let p = Policy::new(&PolicyConfig {
            allow_senders: pats(&["<>"]),
            deny_senders: pats(&["<>"]),
            ..policy()
        });
        assert_eq!(p.check_sender_parts(None), Err(Refusal::SenderDenied));
        // Denying <> does not deny real senders.
        let p = Policy::new(&PolicyConfig {
            deny_senders: pats(&["<>"]),
            ..policy()
        });
        assert_eq!(p.check_sender_parts(Some(parts("a@b.org"))), Ok(()));
        assert_eq!(p.check_sender_parts(None), Err(Refusal::SenderDenied));
        // Other patterns never match the null sender.
        let p = Policy::new(&PolicyConfig {
            deny_senders: pats(&["example.com"]),
            ..policy()
        });
        assert_eq!(p.check_sender_parts(None), Ok(()));
    }

    #[test]
    fn recipients_deny_wins_and_empty_allow_allows_all() {
        let p = Policy::new(&policy());
        assert_eq!(
            p.check_recipient_parts("anyone", Some("anywhere.org")),
            Ok(())
        );
        assert_eq!(p.check_recipient_parts("root", None), Ok(()));

        let p = Policy::new(&PolicyConfig {
            allow_recipients: pats(&["example.com", "oncall@partner.org"]),
            deny_recipients: pats(&["ceo@example.com"]),
            ..policy()
        });
        let check = |a: &str| {
            let (l, d) = parts(a);
            p.check_recipient_parts(l, d)
        };
        assert_eq!(check("ops@example.com"), Ok(()));
        assert_eq!(check("OnCall@Partner.org"), Ok(()));
        assert_eq!(check("ceo@example.com"), Err(Refusal::RecipientDenied));
        assert_eq!(check("ceo@example.com."), Err(Refusal::RecipientDenied));
        assert_eq!(
            check("someone@partner.org"),
            Err(Refusal::RecipientNotAllowed)
        );
        assert_eq!(check("root"), Err(Refusal::RecipientNotAllowed));
    }

    #[test]
    fn display_names_the_list_for_logs() {
        assert_eq!(
            Refusal::ClientDenied.to_string(),
            "client address is in deny_clients"
        );
        assert_eq!(
            Refusal::ClientNotAllowed.to_string(),
            "client address is not in allow_clients"
        );
        assert_eq!(
            Refusal::SenderDenied.to_string(),
            "sender is in deny_senders"
        );
        assert_eq!(
            Refusal::SenderNotAllowed.to_string(),
            "sender is not in allow_senders"
        );
        assert_eq!(
            Refusal::RecipientDenied.to_string(),
            "recipient is in deny_recipients"
        );
        assert_eq!(
            Refusal::RecipientNotAllowed.to_string(),
            "recipient is not in allow_recipients"
        );
    }

    // Through the real `Address` type, as the server calls it.
    #[test]
    fn through_the_address_type() {
        let a = |s: &str| Address::parse(s).unwrap();
        let p = Policy::new(&PolicyConfig {
            allow_senders: pats(&[".example.com"]),
            allow_recipients: pats(&["example.com"]),
            deny_recipients: pats(&["ceo@example.com"]),
            ..policy()
        });
        assert_eq!(p.check_sender(Some(&a("nas@lab.example.com"))), Ok(()));
        assert_eq!(
            p.check_sender(Some(&a("nas@example.com"))),
            Err(Refusal::SenderNotAllowed)
        );
        assert_eq!(p.check_sender(None), Err(Refusal::SenderNotAllowed));
        assert_eq!(p.check_recipient(&a("Ops@Example.com")), Ok(()));
        assert_eq!(
            p.check_recipient(&a("CEO@example.com")),
            Err(Refusal::RecipientDenied)
        );
        assert_eq!(
            p.check_recipient(&a("root")),
            Err(Refusal::RecipientNotAllowed)
        );
        assert!(AddressPattern::Mailbox("root".into()).matches(&a("root")));
    }
}
