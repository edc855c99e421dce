//! Routes: which recipient goes where, built in one place from the config
//! ([`Routes::from_config`]) so that a reload builds new ones the same way
//! and swaps them in ([`SharedRoutes::replace`]); deliveries in progress
//! finish on the routes they started with.
//!
//! Also here, because they are decided per recipient from the same config:
//! aliases (applied at RCPT, before policy) and the message size limit the
//! listener must advertise (the smallest of the routes' upstream limits).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::config::{Config, DomainPattern, TlsMode, Upstream};
use crate::dns::Resolver;

use super::SetupError;
use super::client::{Client, Smarthost};
use super::rate::Limiter;

/// Where one route's mail goes.
#[derive(Debug)]
pub enum Target {
    /// SMTP: smarthost(s) or MX.
    Smtp(Arc<Smarthost>),
    /// Files in a directory.
    Maildir(PathBuf),
}

/// An idle, logged-in connection kept for the next message.
pub(crate) struct Pooled {
    /// The MX domain it serves (`None` for smarthosts).
    pub key: Option<String>,
    pub client: Client,
    pub sent: usize,
    pub since: Instant,
}

/// One route, with its runtime state (rate windows, learned size limit,
/// connection slots and idle connections).
pub struct Route {
    /// `route 1 (smtp.gmail.com)`, for logs.
    pub name: String,
    /// Recipient domains it takes.
    pub domains: Vec<DomainPattern>,
    /// Where mail goes.
    pub target: Target,
    /// Envelope sender rewrite (route's, else global).
    pub rewrite_sender: Option<String>,
    /// From header rewrite.
    pub rewrite_from: bool,
    /// Parallel connections.
    pub parallel: usize,
    /// Messages per connection.
    pub per_conn: usize,
    pub(crate) limiter: Mutex<Limiter>,
    /// The configured upstream limit (0: none).
    config_size: u64,
    /// The upstream's EHLO SIZE as last seen (0: unknown or unlimited).
    learned_size: AtomicU64,
    pub(crate) slots: Arc<smol::lock::Semaphore>,
    pub(crate) pool: Mutex<Vec<Pooled>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Route({})", self.name)
    }
}

impl Route {
    /// Does this route take `domain` (`None`: a bare local part)?
    pub fn takes(&self, domain: Option<&str>) -> bool {
        self.domains.iter().any(|d| d.matches(domain))
    }

    /// The smallest known upstream limit of this route, if any.
    pub fn size_limit(&self) -> Option<u64> {
        let learned = self.learned_size.load(Ordering::Relaxed);
        [self.config_size, learned]
            .into_iter()
            .filter(|n| *n > 0)
            .min()
    }

    /// Remember the upstream's advertised SIZE (0 = no limit).
    pub fn learn_size(&self, size: Option<u64>) {
        self.learned_size
            .store(size.unwrap_or(0), Ordering::Relaxed);
    }

    /// Is this an MX route (one connection per recipient domain)?
    pub fn is_mx(&self) -> bool {
        matches!(&self.target, Target::Smtp(s) if s.mx)
    }
}

/// Alias table: `[aliases]`.
#[derive(Debug, Default)]
pub struct Aliases {
    /// `user@domain` → target.
    exact: HashMap<String, String>,
    /// `*@domain` → target.
    domains: HashMap<String, String>,
    /// `root` → target, for bare local parts and local domains.
    locals: HashMap<String, String>,
    /// Domains that count as "this machine": localhost, our hostname.
    local_domains: Vec<String>,
}

impl Aliases {
    /// From `[aliases]` and our hostname.
    pub fn new(entries: &[(String, String)], hostname: &str) -> Aliases {
        let mut a = Aliases::default();
        for (k, v) in entries {
            match k.split_once('@') {
                Some(("*", d)) => a.domains.insert(d.to_ascii_lowercase(), v.clone()),
                Some(_) => a.exact.insert(k.to_ascii_lowercase(), v.clone()),
                None => a.locals.insert(k.to_ascii_lowercase(), v.clone()),
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
    pub fn resolve(&self, rcpt: &str) -> Option<&str> {
        let lower = rcpt.to_ascii_lowercase();
        if let Some(t) = self.exact.get(&lower) {
            return Some(t);
        }
        match lower.rsplit_once('@') {
            Some((local, domain)) => {
                if let Some(t) = self.domains.get(domain) {
                    return Some(t);
                }
                if self.local_domains.iter().any(|d| d == domain) {
                    return self.locals.get(local).map(String::as_str);
                }
                None
            }
            None => self.locals.get(&lower).map(String::as_str),
        }
    }

    /// True when there are no aliases.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.domains.is_empty() && self.locals.is_empty()
    }
}

/// Everything delivery decides from the config: routes, aliases, reports.
#[derive(Debug)]
pub struct Routes {
    /// In config order; the first that takes a recipient's domain wins.
    pub routes: Vec<Arc<Route>>,
    /// `[aliases]`.
    pub aliases: Aliases,
    /// Failure reports go here instead of the sender, when set.
    pub postmaster: Option<String>,
    /// Failure reports per hour.
    pub max_reports_per_hour: u32,
    /// The resolver the routes use.
    pub resolver: Resolver,
}

impl Routes {
    /// Build every route from `cfg`. `resolver` is used unless the config
    /// names its own DNS servers (`dns_servers`).
    pub fn from_config(cfg: &Config, resolver: Resolver) -> Result<Routes, SetupError> {
        let o = &cfg.outbound;
        let resolver = if o.dns_servers.is_empty() {
            resolver
        } else {
            Resolver::with_nameservers(o.dns_servers.clone())
        };
        let mut routes = Vec::new();
        for (n, r) in o.routes.iter().enumerate() {
            let route = match &r.upstream {
                Upstream::Maildir(m) => Route {
                    name: format!("route {} (maildir {})", n + 1, m.dir.display()),
                    domains: r.domains.clone(),
                    target: Target::Maildir(m.dir.clone()),
                    rewrite_sender: None,
                    rewrite_from: false,
                    parallel: 1,
                    per_conn: 1,
                    limiter: Mutex::new(Limiter::new(None, None)),
                    config_size: 0,
                    learned_size: AtomicU64::new(0),
                    slots: Arc::new(smol::lock::Semaphore::new(1)),
                    pool: Mutex::new(Vec::new()),
                },
                Upstream::Smarthost(s) | Upstream::Mx(s) => {
                    let mx = matches!(r.upstream, Upstream::Mx(_));
                    let client_cert = s.client_cert.as_deref().zip(s.client_key.as_deref());
                    let needs_verified = s
                        .hosts
                        .iter()
                        .any(|h| matches!(h.tls, TlsMode::Starttls | TlsMode::Implicit))
                        || (!mx && s.tls != TlsMode::None && s.tls != TlsMode::Opportunistic)
                        || (mx && matches!(s.tls, TlsMode::Starttls | TlsMode::Implicit));
                    let tls = if needs_verified {
                        Some(crate::tls::client_config_with(
                            s.ca_file.as_deref(),
                            client_cert,
                        )?)
                    } else {
                        None
                    };
                    let tls_any = if s.tls == TlsMode::Opportunistic {
                        Some(crate::tls::client_config_unverified(client_cert)?)
                    } else {
                        None
                    };
                    let oauth = match &s.oauth {
                        Some(oc) => Some(Arc::new(
                            super::oauth::TokenSource::new(oc.clone(), resolver.clone())
                                .map_err(|e| SetupError::OAuth(e.to_string()))?,
                        )),
                        None => None,
                    };
                    let what = if mx {
                        "mx".to_string()
                    } else {
                        s.hosts
                            .iter()
                            .map(|h| format!("{}:{}", h.host, h.port))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    Route {
                        name: format!("route {} ({what})", n + 1),
                        domains: r.domains.clone(),
                        rewrite_sender: s.rewrite_sender.clone().or(o.rewrite_sender.clone()),
                        rewrite_from: s.rewrite_from.unwrap_or(o.rewrite_from),
                        parallel: s.max_connections.max(1),
                        per_conn: s.messages_per_connection.max(1),
                        limiter: Mutex::new(Limiter::new(
                            s.max_messages_per_minute,
                            s.max_recipients_per_day,
                        )),
                        config_size: s.max_message_size.as_ref().map_or(0, |m| m.bytes),
                        learned_size: AtomicU64::new(0),
                        slots: Arc::new(smol::lock::Semaphore::new(s.max_connections.max(1))),
                        pool: Mutex::new(Vec::new()),
                        target: Target::Smtp(Arc::new(Smarthost {
                            cfg: s.clone(),
                            ehlo: cfg.hostname.clone(),
                            tls,
                            tls_any,
                            resolver: resolver.clone(),
                            oauth,
                            mx,
                        })),
                    }
                }
            };
            routes.push(Arc::new(route));
        }
        Ok(Routes {
            routes,
            aliases: Aliases::new(&o.aliases, &cfg.hostname),
            postmaster: o.postmaster.clone(),
            max_reports_per_hour: o.max_reports_per_hour,
            resolver,
        })
    }

    /// The route for a recipient, by its domain; `None` if no route takes it.
    pub fn route_for(&self, rcpt: &str) -> Option<(usize, &Arc<Route>)> {
        let domain = rcpt.rsplit_once('@').map(|(_, d)| d);
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.takes(domain))
    }

    /// The smallest upstream size limit over every route (configured or
    /// learned from EHLO SIZE), if any route has one.
    pub fn max_message_size(&self) -> Option<u64> {
        self.routes.iter().filter_map(|r| r.size_limit()).min()
    }
}

/// The routes in force, shared by the listener (aliases, size) and the
/// delivery workers; a reload swaps in new ones.
#[derive(Debug, Clone)]
pub struct SharedRoutes(Arc<RwLock<Arc<Routes>>>);

impl SharedRoutes {
    /// Share `routes`.
    pub fn new(routes: Routes) -> SharedRoutes {
        SharedRoutes(Arc::new(RwLock::new(Arc::new(routes))))
    }

    /// The routes in force now (a delivery keeps this for its whole job).
    pub fn current(&self) -> Arc<Routes> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swap in new routes (reload). Connections of the old ones close as
    /// their deliveries finish.
    pub fn replace(&self, routes: Routes) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
    }

    /// `[aliases]` mapping for a recipient, applied at RCPT before policy.
    pub fn alias(&self, rcpt: &str) -> Option<String> {
        self.current().aliases.resolve(rcpt).map(str::to_string)
    }

    /// The size limit the listener should advertise and enforce: the
    /// smallest upstream limit among the routes, if any is known.
    pub fn max_message_size(&self) -> Option<u64> {
        self.current().max_message_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(a.resolve("root"), Some("ops@example.com"));
        assert_eq!(a.resolve("ROOT@localhost"), Some("ops@example.com"));
        assert_eq!(a.resolve("root@relay.lan"), Some("ops@example.com"));
        assert_eq!(a.resolve("root@relay"), Some("ops@example.com"));
        assert_eq!(a.resolve("root@example.org"), None);
        assert_eq!(a.resolve("admin@lan"), Some("boss@example.com"));
        assert_eq!(a.resolve("x@cams.lan"), Some("video@example.com"));
        assert_eq!(a.resolve("x@lan"), None);
    }
}
