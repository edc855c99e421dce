//! `[[user]]`: accounts devices may AUTH as on the listener, and the check
//! that a password hash is one `auth` can verify (config sits below `auth`,
//! which verifies passwords against these accounts).
//!
//! Uses the config's own `schema`, `convert` and `values`, and `argon2`.

use argon2::Params;
use argon2::password_hash::PasswordHash;
use toml::de::{DeTable, DeValue};

use super::convert::{sender_pattern, text, username};
use super::policy::PolicyConfig;
use super::schema::{Section, default, list, required, table};
use super::server::ServerConfig;
use super::values::AddressPattern;
use super::{Ctx, Reported};

/// Largest Argon2 memory cost we agree to verify: a hash from a hostile or
/// mistaken config must not make one AUTH allocate gigabytes.
const MAX_M_COST_KIB: u32 = 256 * 1024;

table! {
    /// `[[user]]`: one account for listener AUTH (PLAIN/LOGIN).
    pub struct UserConfig, read as UserKeys {
        /// Required. The AUTH user name.
        name: String = required("\"printer\"", username),
        /// Required. An Argon2id PHC string from `postern passwd`.
        password_hash: String =
            required("\"$argon2id$...\" (from `postern passwd`)", password_hash),
        /// Default empty = any sender. Envelope senders this user may use.
        allowed_senders: Vec<AddressPattern> = default(Vec::new(), list(sender_pattern)),
    }
}

/// Why a password hash cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashFormatError {
    /// Not a PHC string at all.
    #[error("not a password hash in PHC format ($argon2id$v=19$m=...,t=...,p=...$salt$hash)")]
    NotPhc,
    /// A PHC string of another algorithm.
    #[error("the hash uses {0}; only argon2id is accepted")]
    Algorithm(String),
    /// Parameters out of range.
    #[error("the hash's parameters are unusable: {0}")]
    Params(String),
}

/// Is `s` an Argon2id hash we can verify, with sane parameters?
pub fn check_hash_format(s: &str) -> Result<(), HashFormatError> {
    let h = PasswordHash::new(s).map_err(|_| HashFormatError::NotPhc)?;
    if h.algorithm.as_str() != "argon2id" {
        return Err(HashFormatError::Algorithm(h.algorithm.as_str().to_string()));
    }
    let params = Params::try_from(&h).map_err(|e| HashFormatError::Params(e.to_string()))?;
    if params.m_cost() > MAX_M_COST_KIB {
        return Err(HashFormatError::Params(format!(
            "m={} KiB is above the {} KiB this relay allows",
            params.m_cost(),
            MAX_M_COST_KIB
        )));
    }
    if h.hash.is_none() {
        return Err(HashFormatError::NotPhc);
    }
    Ok(())
}

fn password_hash(v: &DeValue) -> Result<String, String> {
    let s = text(v, "\"$argon2id$v=19$m=19456,t=2,p=1$...\"")?;
    match check_hash_format(s) {
        Ok(()) => Ok(s.to_string()),
        Err(e) => Err(format!("{e}; make one with `postern passwd`")),
    }
}

/// Read every `[[user]]`; a name may appear once.
pub(crate) fn read(ctx: &mut Ctx, root: &DeTable) -> Result<Vec<UserConfig>, Reported> {
    let Some((key, item)) = root.get_key_value("user") else {
        return Ok(Vec::new());
    };
    let DeValue::Array(tables) = item.get_ref() else {
        return Err(ctx.error(
            key.span().start,
            "'user' must be written [[user]] (double brackets), once per account",
        ));
    };
    let mut out: Vec<UserConfig> = Vec::new();
    let mut bad = false;
    for t in tables.iter() {
        let DeValue::Table(table) = t.get_ref() else {
            ctx.error(t.span().start, "each user is a [[user]] table");
            bad = true;
            continue;
        };
        let sec = Section::new("user", table, t.span().start);
        super::unknown_keys(ctx, &sec, &[UserConfig::KEYS]);
        match UserKeys::read(ctx, &sec).build() {
            Ok(user) => {
                if out.iter().any(|u| u.name == user.name) {
                    let at = sec.offset("name").unwrap_or(sec.at);
                    ctx.error(at, format!("name: user \"{}\" is defined twice", user.name));
                    bad = true;
                    continue;
                }
                out.push(user);
            }
            Err(_) => bad = true,
        }
    }
    if bad { Err(Reported) } else { Ok(out) }
}

/// Checks across `[server]`, `[policy]` and `[[user]]`: accounts that
/// could never be used, or a setting that needs one.
pub(crate) fn check_accounts(
    ctx: &mut Ctx,
    server: &ServerConfig,
    policy: &PolicyConfig,
    users: &[UserConfig],
    server_sec: &Section,
) {
    if policy.relay_authenticated && users.is_empty() {
        ctx.error(
            0,
            "[policy] relay_authenticated = true but there is no [[user]]; add one (name and \
             password_hash from `postern passwd`) or remove the setting",
        );
    }
    if !users.is_empty() && server.tls_cert.is_none() && server.allow_plain_auth_clients.is_empty()
    {
        ctx.error(
            server_sec.at,
            "[[user]] accounts can never log in: AUTH is offered only over TLS; set tls_cert and \
             tls_key in [server], or list legacy networks in allow_plain_auth_clients",
        );
    }
}
