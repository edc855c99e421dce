//! Routes: which recipient goes where, built in one place from the config
//! ([`Routes::from_config`]) so that a reload builds new ones the same way
//! and swaps them in ([`SharedRoutes::replace`]); deliveries in progress
//! finish on the routes they started with.
//!
//! Aliases and the size limit the listener advertises are `policy`'s
//! ([`Outbound`]); a route only reports its upstream's SIZE there. Why
//! routes could not be built is [`SetupError`], here where they are built.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::config::{Config, DomainPattern, TlsMode, Upstream};
use crate::dns::Resolver;
use crate::policy::{Outbound, UpstreamSize};
use crate::smtp::Address;

use super::client::{Client, Smarthost};
use super::rate::Limiter;

/// Why the delivery side could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The TLS client configuration could not be built.
    #[error("route TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The XOAUTH2 token source could not be built.
    #[error("route XOAUTH2: {0}")]
    OAuth(String),
    /// A configured address does not parse (the config reader checks them,
    /// so this is a bug if it happens).
    #[error("{key}: not a mail address ({error})")]
    Address {
        /// The config key.
        key: &'static str,
        /// Why.
        error: crate::smtp::AddressError,
    },
}

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
    /// A short name, unique among the routes, for status and metrics: the
    /// first smarthost's name, `mx` or `maildir` (`#2`… appended when two
    /// routes would share one).
    pub label: String,
    /// Its `name` key: what `[[filter]] route = "…"` calls it.
    pub config_name: Option<String>,
    /// Recipient domains it takes.
    pub domains: Vec<DomainPattern>,
    /// Where mail goes.
    pub target: Target,
    /// Envelope sender rewrite (route's, else global).
    pub rewrite_sender: Option<Address>,
    /// From header rewrite.
    pub rewrite_from: bool,
    /// Parallel connections.
    pub parallel: usize,
    /// Messages per connection.
    pub per_conn: usize,
    pub(crate) limiter: Mutex<Limiter>,
    /// The upstream's size limit, configured and learned; shared with the
    /// listener through `policy`.
    size: Arc<UpstreamSize>,
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
        self.size.limit()
    }

    /// Remember the upstream's advertised SIZE (0 = no limit).
    pub fn learn_size(&self, size: Option<u64>) {
        self.size.learn(size);
    }

    /// Is this an MX route (one connection per recipient domain)?
    pub fn is_mx(&self) -> bool {
        matches!(&self.target, Target::Smtp(s) if s.mx)
    }
}

/// Everything delivery decides from the config: routes, reports.
#[derive(Debug)]
pub struct Routes {
    /// In config order; the first that takes a recipient's domain wins.
    pub routes: Vec<Arc<Route>>,
    /// Failure reports go here instead of the sender, when set.
    pub postmaster: Option<Address>,
    /// Reports (failure, delay, success) per hour.
    pub max_reports_per_hour: u32,
    /// `[queue] delay_warning`: a message still waiting this long gets one
    /// delay report; zero is off.
    pub delay_warning: std::time::Duration,
    /// The resolver the routes use.
    pub resolver: Resolver,
}

impl Routes {
    /// Build every route from `cfg`. `resolver` is used unless the config
    /// names its own DNS servers (`dns_servers`). Each route reports its
    /// upstream's size limit into `outbound` (built from the same config).
    pub fn from_config(
        cfg: &Config,
        resolver: Resolver,
        outbound: &Outbound,
    ) -> Result<Routes, SetupError> {
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
                    label: String::new(),
                    config_name: r.name.clone(),
                    domains: r.domains.clone(),
                    target: Target::Maildir(m.dir.clone()),
                    rewrite_sender: None,
                    rewrite_from: false,
                    parallel: 1,
                    per_conn: 1,
                    limiter: Mutex::new(Limiter::new(None, None)),
                    size: outbound.upstream_size(n),
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
                        label: String::new(),
                        config_name: r.name.clone(),
                        domains: r.domains.clone(),
                        rewrite_sender: mailbox(
                            s.rewrite_sender.as_ref().or(o.rewrite_sender.as_ref()),
                            "rewrite_sender",
                        )?,
                        rewrite_from: s.rewrite_from.unwrap_or(o.rewrite_from),
                        parallel: s.max_connections.max(1),
                        per_conn: s.messages_per_connection.max(1),
                        limiter: Mutex::new(Limiter::new(
                            s.max_messages_per_minute,
                            s.max_recipients_per_day,
                        )),
                        size: outbound.upstream_size(n),
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
            let mut route = route;
            // A route's own name, when it has one, is what people call it.
            let base = r.name.clone().unwrap_or_else(|| label_base(&r.upstream));
            route.label = unique_label(&routes, base, n);
            routes.push(Arc::new(route));
        }
        Ok(Routes {
            routes,
            postmaster: mailbox(o.postmaster.as_ref(), "postmaster")?,
            max_reports_per_hour: o.max_reports_per_hour,
            delay_warning: cfg.queue.delay_warning.value,
            resolver,
        })
    }

    /// The route for a recipient of `job`: the route a `[[filter]]` named
    /// for the message, else by the recipient's domain. A name no route
    /// has any more (the config was reloaded since) falls back to the
    /// domain; [`Routes::named`] tells, and the attempt warns once.
    pub fn route_for_job(
        &self,
        job: &crate::queue::Job,
        rcpt: &Address,
    ) -> Option<(usize, &Arc<Route>)> {
        job.route
            .as_deref()
            .and_then(|name| self.named(name))
            .or_else(|| self.route_for(rcpt))
    }

    /// The route whose `name` key is `name`.
    pub fn named(&self, name: &str) -> Option<(usize, &Arc<Route>)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.config_name.as_deref() == Some(name))
    }

    /// The route for a recipient, by its domain; `None` if no route takes it.
    pub fn route_for(&self, rcpt: &Address) -> Option<(usize, &Arc<Route>)> {
        let domain = rcpt.domain();
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.takes(domain))
    }
}

/// The routes in force, shared by the delivery workers; a reload swaps in
/// new ones.
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
}

/// What a route is called in status and metrics, before uniqueness.
fn label_base(u: &Upstream) -> String {
    match u {
        Upstream::Maildir(_) => "maildir".into(),
        Upstream::Mx(_) => "mx".into(),
        Upstream::Smarthost(s) => s
            .hosts
            .first()
            .map_or_else(|| s.host.clone(), |h| h.host.clone()),
    }
}

/// `base`, or `base#N` (N: the route's place, from 1) when an earlier
/// route has that label already.
fn unique_label(earlier: &[Arc<Route>], base: String, n: usize) -> String {
    if earlier.iter().any(|r| r.label == base) {
        format!("{base}#{}", n + 1)
    } else {
        base
    }
}

/// A mailbox from the config (checked by its reader), parsed once here.
fn mailbox(s: Option<&String>, key: &'static str) -> Result<Option<Address>, SetupError> {
    s.map(|s| Address::parse(s).map_err(|e| SetupError::Address { key, error: e }))
        .transpose()
}
