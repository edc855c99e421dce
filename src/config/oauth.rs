//! The XOAUTH2 keys of a smarthost (`auth = "xoauth2"`): where and how to
//! get access tokens. They sit in the smarthost's own table, each starting
//! with `oauth_`.
//!
//! Uses the config's own `schema`, `convert` and `values`.

use std::path::PathBuf;

use super::convert::oauth_flow;
use super::convert::{https_url, one_line, path, provider, tenant};
use super::schema::{Section, Toml, default, optional, required, table};
use super::values::{OAuthFlow, Provider};
use super::{Ctx, Reported};

const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

table! {
    /// `auth = "xoauth2"` settings. Secrets live in their own files.
    pub struct OAuthConfig, read as OAuthKeys {
        /// Default refresh_token.
        flow as "oauth_flow": OAuthFlow = default(OAuthFlow::RefreshToken, oauth_flow),
        /// The app's client id.
        client_id as "oauth_client_id": String =
            required("\"the app's client id\"", one_line("\"0123-client-id\"")),
        /// File holding the client secret (first line); optional for public clients.
        client_secret_file as "oauth_client_secret_file": Option<PathBuf> = optional(path),
        /// File holding the refresh token (first line); required for refresh_token.
        refresh_token_file as "oauth_refresh_token_file": Option<PathBuf> = optional(path),
        /// Extra trust anchors for the token endpoint (tests, private IdPs).
        ca_file as "oauth_ca_file": Option<PathBuf> = optional(path),
    }
    inputs {
        /// A provider whose token endpoint (and scope) is known.
        provider as "oauth_provider": Option<Provider> = optional(provider),
        /// Microsoft's tenant, part of its token endpoint.
        tenant as "oauth_tenant": Option<String> = optional(tenant),
        /// The token endpoint, for other providers.
        url as "oauth_token_url": Option<String> = optional(https_url),
        /// The scope, when not the provider's default.
        scope_key as "oauth_scope": Option<String> =
            optional(one_line("\"https://mail.google.com/\"")),
    }
    computed {
        /// The token endpoint (https).
        token_url: String,
        /// Scope asked for; defaults per provider.
        scope: Option<String>,
    }
}

/// Read the `oauth_*` keys of a smarthost table that has `auth = "xoauth2"`.
pub(crate) fn read(ctx: &mut Ctx, sec: &Section) -> Result<OAuthConfig, Reported> {
    let k = OAuthKeys::read(ctx, sec);
    let token_url = match (&k.url, &k.provider) {
        (Ok(Some(u)), _) => Ok(u.clone()),
        (Ok(None), Ok(Some(Provider::Google))) => Ok(GOOGLE_TOKEN_URL.to_string()),
        (Ok(None), Ok(Some(Provider::Microsoft))) => match &k.tenant {
            Ok(Some(t)) => Ok(format!(
                "https://login.microsoftonline.com/{t}/oauth2/v2.0/token"
            )),
            Ok(None) => Err(ctx.error(
                sec.key_offset("oauth_provider").unwrap_or(sec.at),
                "oauth_provider = \"microsoft\" needs oauth_tenant = \"your tenant id or \
                 domain\" (e.g. \"contoso.onmicrosoft.com\")",
            )),
            Err(r) => Err(*r),
        },
        (Ok(None), Ok(None)) => Err(ctx.error(
            sec.key_offset("auth").unwrap_or(sec.at),
            "auth = \"xoauth2\" needs oauth_provider = \"google\" or \"microsoft\", or \
             oauth_token_url = \"https://…\"",
        )),
        _ => Err(Reported),
    };
    match k.flow {
        Ok(OAuthFlow::RefreshToken) if matches!(k.refresh_token_file, Ok(None)) => {
            ctx.error(
                sec.key_offset("auth").unwrap_or(sec.at),
                "oauth_flow = \"refresh_token\" (the default) needs oauth_refresh_token_file = \
                 \"/var/lib/postern/oauth-refresh-token\"",
            );
        }
        Ok(OAuthFlow::ClientCredentials) if matches!(k.client_secret_file, Ok(None)) => {
            ctx.error(
                sec.key_offset("oauth_flow").unwrap_or(sec.at),
                "oauth_flow = \"client_credentials\" needs oauth_client_secret_file",
            );
        }
        _ => {}
    }
    for (key, value, certificates) in [
        ("oauth_client_secret_file", &k.client_secret_file, false),
        ("oauth_refresh_token_file", &k.refresh_token_file, false),
        ("oauth_ca_file", &k.ca_file, true),
    ] {
        if let (Ok(Some(p)), Some(at)) = (value, sec.offset(key)) {
            ctx.check_file(at, key, p, certificates);
        }
    }
    let scope = match (&k.scope_key, &k.provider, &k.flow) {
        (Ok(s), Ok(p), Ok(f)) => Ok(s
            .clone()
            .or_else(|| default_scope(*p, *f).map(str::to_string))),
        _ => Err(Reported),
    };
    k.build(token_url, scope)
}

fn default_scope(provider: Option<Provider>, flow: OAuthFlow) -> Option<&'static str> {
    match (provider, flow) {
        (Some(Provider::Microsoft), OAuthFlow::ClientCredentials) => {
            Some("https://outlook.office365.com/.default")
        }
        (Some(Provider::Microsoft), OAuthFlow::RefreshToken) => {
            Some("https://outlook.office.com/SMTP.Send offline_access")
        }
        _ => None,
    }
}

impl OAuthConfig {
    /// Print the XOAUTH2 keys, resolved: the token endpoint and scope
    /// rather than the provider and tenant they came from.
    pub(crate) fn print(&self, out: &mut Toml) {
        out.key("oauth_token_url", &self.token_url);
        self.print_keys(out);
        out.key("oauth_scope", &self.scope);
    }
}
