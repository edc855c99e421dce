//! `[aliases]`: local parts, addresses or whole domains mapped to one
//! mailbox each. Its keys are the addresses themselves, so the table has
//! no schema of its own.
//!
//! Uses the config's own `convert` and `values`, and `smtp`'s address
//! grammar.

use toml::de::{DeTable, DeValue};

use super::convert::mailbox;
use super::schema::{Toml, quote};
use super::values::domain_problem;
use super::{Ctx, Reported};

/// `[aliases]`: `root = "ops@example.com"`, `"*@lan" = "…"`, `"a@b" = "…"`.
pub(crate) fn read(ctx: &mut Ctx, root: &DeTable) -> Result<Vec<(String, String)>, Reported> {
    let Some((key, item)) = root.get_key_value("aliases") else {
        return Ok(Vec::new());
    };
    let DeValue::Table(t) = item.get_ref() else {
        return Err(ctx.error(
            key.span().start,
            "'aliases' must be a table: [aliases] on its own line, then root = \"ops@example.com\"",
        ));
    };
    let mut out = Vec::new();
    let mut bad = false;
    for (k, v) in t.iter() {
        let name: &str = k.get_ref();
        let key_ok = match name.split_once('@') {
            None => crate::smtp::Address::parse(name).is_ok() && name != "*",
            Some(("*", d)) => domain_problem(d, false).is_none(),
            Some(_) => crate::smtp::Address::parse(name).is_ok(),
        };
        if !key_ok {
            ctx.error(
                k.span().start,
                format!(
                    "aliases: \"{name}\" is not something to map; expected a local part (root), an \
                     address (\"admin@lan\") or every address of a domain (\"*@lan\")"
                ),
            );
            bad = true;
            continue;
        }
        match mailbox(v.get_ref()) {
            Ok(target) => out.push((name.to_lowercase(), target)),
            Err(m) => {
                ctx.error(v.span().start, format!("aliases: {name}: {m}"));
                bad = true;
            }
        }
    }
    if bad { Err(Reported) } else { Ok(out) }
}

/// Print `[aliases]`, if there are any.
pub(crate) fn print(aliases: &[(String, String)], out: &mut Toml) {
    if aliases.is_empty() {
        return;
    }
    out.header("[aliases]");
    for (k, v) in aliases {
        out.line(&quote(k), &quote(v));
    }
}
