//! What the listener must know of the outbound side, decided from the
//! config and from what upstreams advertise: `[aliases]` (applied at RCPT,
//! before the recipient checks) and the upstream size limit (the smallest
//! of the routes', so devices get 552 at MAIL instead of a bounce later).
//!
//! Both live here, not in `delivery`, so that `server` and `delivery` are
//! siblings that never import each other. `delivery` writes each route's
//! learned limit into its [`UpstreamSize`]; `daemon` builds one
//! [`Outbound`] per config (at start and on reload) and hands it to both.
//! Uses `config` and `smtp`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Config, Upstream};
use crate::smtp::Address;

/// Alias table: `[aliases]`, targets parsed once when the table is built.
#[derive(Debug, Default)]
pub struct Aliases {
    /// `user@domain` → target.
    exact: HashMap<String, Address>,
    /// `*@domain` → target.
    domains: HashMap<String, Address>,
    /// `root` → target, for bare local parts and local domains.
    locals: HashMap<String, Address>,
    /// Domains that count as "this machine": localhost, our hostname.
    local_domains: Vec<String>,
}

impl Aliases {
    /// From `[aliases]` and our hostname. The config reader has checked
    /// every target; one that still does not parse is left out, logged.
    pub fn new(entries: &[(String, String)], hostname: &str) -> Aliases {
        let mut a = Aliases::default();
        for (k, v) in entries {
            let target = match Address::parse(v) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(alias = %k, target = %v.escape_debug(), error = %e, "alias target is not an address; alias ignored");
                    continue;
                }
            };
            let key = k.to_ascii_lowercase();
            match key.split_once('@') {
                Some(("*", d)) => a.domains.insert(d.to_string(), target),
                Some(_) => a.exact.insert(key, target),
                None => a.locals.insert(key, target),
            };
        }
        let host = hostname.to_ascii_lowercase();
        let short = host.split('.').next().unwrap_or("").to_string();
        a.local_domains = vec![
            "localhost".into(),
            "localhost.localdomain".into(),
            host,
            short,
        ];
        a
    }

    /// The address `rcpt` maps to, if any.
    pub fn resolve(&self, rcpt: &Address) -> Option<&Address> {
        if let Some(t) = self.exact.get(&rcpt.as_str().to_ascii_lowercase()) {
            return Some(t);
        }
        let local = rcpt.local_part().to_ascii_lowercase();
        match rcpt.domain().map(str::to_ascii_lowercase) {
            Some(domain) => {
                if let Some(t) = self.domains.get(&domain) {
                    return Some(t);
                }
                if self.local_domains.contains(&domain) {
                    return self.locals.get(&local);
                }
                None
            }
            None => self.locals.get(&local),
        }
    }

    /// True when there are no aliases.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.domains.is_empty() && self.locals.is_empty()
    }
}

/// One route's upstream size limit: as configured, and as the upstream
/// last advertised it (EHLO SIZE), which delivery records.
#[derive(Debug, Default)]
pub struct UpstreamSize {
    /// `max_message_size` of the route (0: none).
    configured: u64,
    /// The upstream's EHLO SIZE as last seen (0: unknown or unlimited).
    learned: AtomicU64,
}

impl UpstreamSize {
    /// Remember the upstream's advertised SIZE (`None` or 0: no limit).
    pub fn learn(&self, size: Option<u64>) {
        self.learned.store(size.unwrap_or(0), Ordering::Relaxed);
    }

    /// The smallest known limit, if any.
    pub fn limit(&self) -> Option<u64> {
        let learned = self.learned.load(Ordering::Relaxed);
        [self.configured, learned]
            .into_iter()
            .filter(|n| *n > 0)
            .min()
    }
}

/// The outbound facts of one config: aliases, the domain bare local parts
/// get, and every route's size limit. Cheap to clone; clones share the
/// learned limits.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    aliases: Arc<Aliases>,
    /// `qualify_domain` (or the hostname).
    qualify: String,
    /// One per route, in config order.
    sizes: Vec<Arc<UpstreamSize>>,
}

impl Outbound {
    /// From the config: its `[aliases]` and one size limit per route.
    pub fn from_config(cfg: &Config) -> Outbound {
        let o = &cfg.outbound;
        let sizes = o
            .routes
            .iter()
            .map(|r| {
                let configured = match &r.upstream {
                    Upstream::Smarthost(s) | Upstream::Mx(s) => {
                        s.max_message_size.as_ref().map_or(0, |m| m.bytes)
                    }
                    Upstream::Maildir(_) => 0,
                };
                Arc::new(UpstreamSize {
                    configured,
                    learned: AtomicU64::new(0),
                })
            })
            .collect();
        Outbound {
            aliases: Arc::new(Aliases::new(&o.aliases, &cfg.hostname)),
            qualify: cfg.qualify_domain().to_string(),
            sizes,
        }
    }

    /// `[aliases]`.
    pub fn aliases(&self) -> &Aliases {
        &self.aliases
    }

    /// The alias target of a recipient, applied at RCPT before policy.
    pub fn alias(&self, rcpt: &Address) -> Option<&Address> {
        self.aliases.resolve(rcpt)
    }

    /// A bare local part (`root`) with `@` and the qualifying domain:
    /// upstreams refuse addresses without a domain. `None` when `addr` has
    /// one already (or the result would be too long to be an address).
    /// Applied after the aliases, to senders and recipients alike.
    pub fn qualify(&self, addr: &Address) -> Option<Address> {
        if addr.domain().is_some() || self.qualify.is_empty() {
            return None;
        }
        Address::parse(&format!("{}@{}", addr.local_part(), self.qualify)).ok()
    }

    /// Route `n`'s size limit (config order), for delivery to keep and
    /// update; a fresh one if the config has no such route.
    pub fn upstream_size(&self, n: usize) -> Arc<UpstreamSize> {
        self.sizes.get(n).cloned().unwrap_or_default()
    }

    /// The smallest upstream size limit over every route (configured or
    /// learned from EHLO SIZE), if any route has one.
    pub fn max_message_size(&self) -> Option<u64> {
        self.sizes.iter().filter_map(|s| s.limit()).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn resolve<'a>(a: &'a Aliases, s: &str) -> Option<&'a str> {
        a.resolve(&addr(s)).map(Address::as_str)
    }

    #[test]
    fn aliases_map_local_parts_local_domains_and_wildcards() {
        let a = Aliases::new(
            &[
                ("root".into(), "ops@example.com".into()),
                ("admin@lan".into(), "boss@example.com".into()),
                ("*@cams.lan".into(), "video@example.com".into()),
            ],
            "relay.lan",
        );
        assert_eq!(resolve(&a, "root"), Some("ops@example.com"));
        assert_eq!(resolve(&a, "ROOT@localhost"), Some("ops@example.com"));
        assert_eq!(resolve(&a, "root@relay.lan"), Some("ops@example.com"));
        assert_eq!(resolve(&a, "root@relay"), Some("ops@example.com"));
        assert_eq!(resolve(&a, "root@example.org"), None);
        assert_eq!(resolve(&a, "admin@lan"), Some("boss@example.com"));
        assert_eq!(resolve(&a, "x@cams.lan"), Some("video@example.com"));
        assert_eq!(resolve(&a, "x@CAMS.lan"), Some("video@example.com"));
        assert_eq!(resolve(&a, "x@lan"), None);
        // The target comes back parsed: its domain is there to route by.
        assert_eq!(
            a.resolve(&addr("root")).and_then(Address::domain),
            Some("example.com")
        );
    }

    #[test]
    fn bare_local_parts_get_the_qualifying_domain() {
        let o = Outbound {
            qualify: "lan.example.com".into(),
            ..Outbound::default()
        };
        let q = |s: &str| o.qualify(&addr(s)).map(|a| a.as_str().to_string());
        assert_eq!(q("root").as_deref(), Some("root@lan.example.com"));
        assert_eq!(
            q("Postmaster").as_deref(),
            Some("Postmaster@lan.example.com")
        );
        assert_eq!(
            q("\"john doe\"").as_deref(),
            Some("\"john doe\"@lan.example.com")
        );
        assert_eq!(q("ops@example.com"), None);
        // Nothing to qualify with: left as it is.
        assert_eq!(Outbound::default().qualify(&addr("root")), None);
    }

    #[test]
    fn the_smallest_configured_or_learned_upstream_size_wins() {
        let o = Outbound {
            aliases: Arc::default(),
            qualify: String::new(),
            sizes: vec![
                Arc::new(UpstreamSize {
                    configured: 0,
                    learned: AtomicU64::new(0),
                }),
                Arc::new(UpstreamSize {
                    configured: 5000,
                    learned: AtomicU64::new(0),
                }),
            ],
        };
        assert_eq!(o.max_message_size(), Some(5000));
        o.upstream_size(0).learn(Some(3000));
        assert_eq!(o.max_message_size(), Some(3000));
        // A clone shares what delivery learns.
        let c = o.clone();
        o.upstream_size(1).learn(Some(1000));
        assert_eq!(c.max_message_size(), Some(1000));
        o.upstream_size(0).learn(None);
        o.upstream_size(1).learn(Some(0));
        assert_eq!(c.max_message_size(), Some(5000));
        assert_eq!(Outbound::default().max_message_size(), None);
    }
}
