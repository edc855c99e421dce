//! Outbound: `[[route]]` tables (or `[upstream]`, the one-route form) and
//! the top-level outbound keys (failure reports, sender rewriting, DNS).
//!
//! Uses the config's own `schema`, `convert`, `values`, `upstream` and
//! `aliases`.

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

use super::convert::{boolean, mail_domain, mailbox, name_server, rate};
use super::oauth::OAuthConfig;
use super::schema::{
    Item, Section, Toml, default, list, non_empty, optional, required, scalar, table,
};
use super::upstream::{self, MaildirConfig, SmarthostConfig, Upstream};
use super::values::DomainPattern;
use super::{Ctx, Reported};

table! {
    /// One `[[route]]`.
    pub struct RouteConfig, read as RouteKeys {
        /// Optional: what `[[filter]] route = "…"` calls this route (and logs).
        name: Option<String> = optional(super::convert::one_line("\"m365\"")),
        /// Recipient domains this route takes.
        domains: Vec<DomainPattern> = required(
            "[\"example.com\", \".example.org\", \"*\"]",
            non_empty(
                "give \"*\" for every domain",
                list(scalar(|v| super::convert::text(v, "\"example.com\"")?.parse())),
            ),
        ),
    }
    computed {
        /// Where the mail goes.
        upstream: Upstream,
    }
}

/// Every key a `[[route]]` may hold: its own and those of `[upstream]`.
pub(crate) const KEYS: &[&[&str]] = &[
    RouteConfig::KEYS,
    upstream::KIND,
    SmarthostConfig::KEYS,
    OAuthConfig::KEYS,
    MaildirConfig::KEYS,
];

table! {
    /// The outbound side beyond `[upstream]`: routes, aliases, rewriting and
    /// failure reports.
    pub struct OutboundConfig, read as OutboundKeys {
        /// Where failure reports go instead of the original sender.
        postmaster: Option<String> = optional(mailbox),
        /// Default: `hostname`. Bare local parts (cron's `root`, `MAIL
        /// FROM:<backup>`) get `@` and this domain after `[aliases]`, for
        /// sendmail and SMTP clients alike (Postfix's
        /// `append_at_myorigin`): upstreams refuse addresses without one.
        qualify_domain: Option<String> = optional(mail_domain),
        /// Global envelope sender rewrite (a route's own wins).
        rewrite_sender: Option<String> = optional(mailbox),
        /// Global From rewrite (a route's own wins). Default false.
        rewrite_from: bool = default(false, boolean),
        /// Default 20: failure reports queued per hour; more are logged only.
        max_reports_per_hour: u32 = default(20, rate(100_000)),
        /// DNS servers to ask instead of /etc/resolv.conf's.
        dns_servers: Vec<SocketAddr> = default(Vec::new(), list(name_server)),
    }
    computed {
        /// Every route in order; `[upstream]` is one route for every domain.
        routes: Vec<RouteConfig>,
        /// Whether the file used `[[route]]` tables (for printing).
        explicit_routes: bool,
        /// `[aliases]`, in file order.
        aliases: Vec<(String, String)>,
    }
}

/// The outbound configuration as read, and what the checks between tables
/// need to know of it.
pub(crate) struct Outbound {
    pub config: Result<OutboundConfig, Reported>,
    /// `[upstream]`'s outbox directory when it is a maildir, and where its
    /// `dir` key is.
    pub maildir: Option<(PathBuf, usize)>,
}

/// Read the top-level outbound keys, `[upstream]` or the `[[route]]`s, and
/// `[aliases]`.
pub(crate) fn read(ctx: &mut Ctx, root: &DeTable, empty: &DeTable) -> Outbound {
    let has_routes = root.get("route").is_some();
    if has_routes && let Some((k, _)) = root.get_key_value("upstream") {
        ctx.error(
            k.span().start,
            "this file has both [upstream] and [[route]] tables; use one: [upstream] is the \
             same as a single [[route]] with domains = [\"*\"]",
        );
    }
    let upstream_sec = if has_routes {
        Err(Reported)
    } else {
        super::section(ctx, root, "upstream", true, empty)
    };
    let upstream = upstream_sec
        .as_ref()
        .map_err(|r| *r)
        .and_then(|sec| upstream::read(ctx, sec, upstream::KEYS));

    let top = Section::new("", root, 0);
    let keys = OutboundKeys::read(ctx, &top);
    if let (Ok(true), Ok(None)) = (&keys.rewrite_from, &keys.rewrite_sender) {
        // A route may still set its own rewrite_sender; only complain when none does.
        let route_sender = matches!(&upstream, Ok(Upstream::Smarthost(h) | Upstream::Mx(h)) if h.rewrite_sender.is_some());
        if !route_sender && !has_routes {
            ctx.error(
                top.key_offset("rewrite_from").unwrap_or(0),
                "rewrite_from = true needs rewrite_sender = \"alerts@example.com\": the address \
                 to put in From",
            );
        }
    }
    let maildir = match (&upstream, &upstream_sec) {
        (Ok(Upstream::Maildir(m)), Ok(sec)) => {
            Some((m.dir.clone(), sec.key_offset("dir").unwrap_or(sec.at)))
        }
        _ => None,
    };
    let routes = match root.get_key_value("route") {
        None => upstream.map(|u| {
            vec![RouteConfig {
                name: None,
                domains: vec![DomainPattern::Any],
                upstream: u,
            }]
        }),
        Some((key, item)) => read_routes(ctx, key.span().start, item),
    };
    let aliases = super::aliases::read(ctx, root);
    Outbound {
        config: keys.build(routes, Ok(has_routes), aliases),
        maildir,
    }
}

fn read_routes(ctx: &mut Ctx, at: usize, item: &Item) -> Result<Vec<RouteConfig>, Reported> {
    let DeValue::Array(tables) = item.get_ref() else {
        return Err(ctx.error(
            at,
            "'route' must be written [[route]] (double brackets), once per route",
        ));
    };
    let mut out = Vec::new();
    let mut bad = false;
    let mut saw_any = None::<usize>;
    let mut names: Vec<String> = Vec::new();
    for (n, t) in tables.iter().enumerate() {
        let DeValue::Table(table) = t.get_ref() else {
            ctx.error(t.span().start, "each route is a [[route]] table");
            bad = true;
            continue;
        };
        let sec = Section::new("route", table, t.span().start);
        if let Some(first) = saw_any {
            ctx.error(
                sec.at,
                format!(
                    "route #{} can never be used: route #{} before it has domains = [\"*\"] and \
                     takes every recipient; put the catch-all route last",
                    n + 1,
                    first + 1
                ),
            );
            bad = true;
        }
        let keys = RouteKeys::read(ctx, &sec);
        if let Ok(Some(name)) = &keys.name {
            if names.contains(name) {
                ctx.error(
                    sec.offset("name").unwrap_or(sec.at),
                    format!(
                        "name: a [[route]] \"{name}\" is defined already; route names must differ"
                    ),
                );
                bad = true;
            }
            names.push(name.clone());
        }
        if let Ok(d) = &keys.domains
            && d.contains(&DomainPattern::Any)
        {
            saw_any = Some(n);
        }
        let upstream = upstream::read(ctx, &sec, KEYS);
        match keys.build(upstream) {
            Ok(route) => out.push(route),
            Err(_) => bad = true,
        }
    }
    if out.is_empty() && !bad {
        return Err(ctx.error(at, "no [[route]] tables"));
    }
    if bad { Err(Reported) } else { Ok(out) }
}

/// Mail to `root` and `postmaster` (cron, smartd, mdadm, RFC 5321's
/// required mailbox) without an alias is qualified with our domain and must
/// then be deliverable: warn when no route takes that domain, when only an
/// MX route does (a LAN host name has no MX), or when the domain is a bare
/// host name no upstream can deliver to.
pub(crate) fn check_local_mail(ctx: &mut Ctx, root: &DeTable, out: &OutboundConfig, host: &str) {
    let domain = out.qualify_domain.as_deref().unwrap_or(host);
    let aliased = |local: &str| {
        out.aliases.iter().any(|(k, _)| {
            k == local || *k == format!("{local}@{domain}") || *k == format!("*@{domain}")
        })
    };
    let missing: Vec<&str> = ["root", "postmaster"]
        .into_iter()
        .filter(|l| !aliased(l))
        .collect();
    if missing.is_empty() {
        return;
    }
    let route = out
        .routes
        .iter()
        .find(|r| r.domains.iter().any(|p| p.matches(Some(domain))));
    let why = match route.map(|r| &r.upstream) {
        None => "no route takes".to_string(),
        Some(Upstream::Mx(_)) => {
            format!("only an MX route takes ({domain} is unlikely to have an MX record)")
        }
        // An outbox takes any address.
        Some(Upstream::Maildir(_)) => return,
        Some(_) if !domain.contains('.') => {
            format!("no upstream can deliver (\"{domain}\" is a bare host name, not a mail domain)")
        }
        Some(_) => return,
    };
    let at = Section::new("", root, 0)
        .key_offset("qualify_domain")
        .or(root.get_key_value("aliases").map(|(k, _)| k.span().start))
        .unwrap_or(0);
    let who = missing.join(" and ");
    ctx.warn(
        at,
        format!(
            "{who} {} no alias: mail to {who} (cron, smartd and mdadm write to root) goes to \
             {}@{domain}, which {why}; add [aliases] {} = \"you@example.com\", or set \
             qualify_domain",
            if missing.len() > 1 { "have" } else { "has" },
            missing[0],
            missing[0],
        ),
    );
}

impl OutboundConfig {
    /// Print `[upstream]` or the `[[route]]`s, then `[aliases]`.
    pub(crate) fn print_tables(&self, out: &mut Toml) {
        if self.explicit_routes {
            for r in &self.routes {
                out.header("[[route]]");
                r.print_keys(out);
                upstream::print(&r.upstream, out);
            }
        } else if let Some(r) = self.routes.first() {
            out.header("[upstream]");
            upstream::print(&r.upstream, out);
        }
        super::aliases::print(&self.aliases, out);
    }
}
