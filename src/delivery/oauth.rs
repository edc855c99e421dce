//! OAuth2 access tokens for AUTH XOAUTH2 (Gmail, Microsoft 365): the
//! refresh-token grant and Microsoft's client-credentials grant. Secrets
//! (client secret, refresh token) are read from their own files, never from
//! the main config and never logged; the access token is kept in memory
//! and fetched again before it expires.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::config::{OAuthConfig, OAuthFlow};
use crate::dns::Resolver;

/// Fetch a new token this long before the current one expires (or at half
/// its lifetime, for short-lived tokens), so a message never goes out with
/// a token that expires on the way.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The whole token request, connect to reply.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Assumed lifetime when the endpoint does not say (RFC 6749 §5.1 makes
/// `expires_in` optional) or says something that is not a number of seconds.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest lifetime believed. Real tokens live an hour or a day; a reply
/// that claims more (up to 10^19 s has been seen from broken endpoints) is
/// cut to this, so the refresh time is always a valid instant.
const MAX_LIFETIME: Duration = Duration::from_secs(86_400);

/// Why no token could be had. All are deferrals for mail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// A secret file could not be read.
    #[error("cannot read {key} {path}: {source}")]
    File {
        /// The config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The token endpoint could not be reached.
    #[error("token endpoint: {0}")]
    Http(#[from] super::https::HttpError),
    /// The token endpoint refused (bad client, revoked refresh token).
    #[error("token endpoint refused ({status}): {error}{}", hint.map(|h| format!("; hint: {h}")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// `error` and `error_description` from the reply.
        error: String,
        /// What to do about it.
        hint: Option<&'static str>,
    },
    /// The reply had no usable token.
    #[error("token endpoint reply not understood: {0}")]
    Bad(String),
    /// The TLS configuration for the endpoint could not be built.
    #[error("token endpoint TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

#[derive(serde::Deserialize)]
struct TokenReply {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Debug)]
struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Where a route's access tokens come from; shared by its connections.
pub struct TokenSource {
    cfg: OAuthConfig,
    tls: Arc<rustls::ClientConfig>,
    resolver: Resolver,
    cached: smol::lock::Mutex<Option<Cached>>,
    /// A refresh token the endpoint rotated in, when it could not be saved.
    rotated: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSource({})", self.cfg.token_url)
    }
}

fn first_line(key: &'static str, path: &Path) -> Result<String, OAuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| OAuthError::File {
        key,
        path: path.to_owned(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

impl TokenSource {
    /// For a route's `oauth_*` settings.
    pub fn new(cfg: OAuthConfig, resolver: Resolver) -> Result<TokenSource, OAuthError> {
        let tls = crate::tls::client_config(cfg.ca_file.as_deref())?;
        Ok(TokenSource {
            cfg,
            tls,
            resolver,
            cached: smol::lock::Mutex::new(None),
            rotated: std::sync::Mutex::new(None),
        })
    }

    /// A valid access token, fetched now if the cached one is missing or
    /// close to expiry.
    pub async fn token(&self) -> Result<String, OAuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        tracing::info!(endpoint = %self.cfg.token_url, expires_in = lifetime.as_secs(), "OAuth2 access token obtained");
        let now = Instant::now();
        // The lifetime is already capped at MAX_LIFETIME; should the clock
        // still not have room, refetch next time rather than panic.
        let refresh_at = now
            .checked_add(lifetime.saturating_sub(margin))
            .unwrap_or(now);
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at,
        });
        Ok(token)
    }

    /// Forget the cached token (the server refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<(String, Duration), OAuthError> {
        let c = &self.cfg;
        let secret = match &c.client_secret_file {
            Some(p) => Some(first_line("oauth_client_secret_file", p)?),
            None => None,
        };
        // Built in a block: the serializer is not Send and must be gone
        // before the request is awaited.
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("client_id", &c.client_id);
            if let Some(s) = &secret {
                form.append_pair("client_secret", s);
            }
            match c.flow {
                OAuthFlow::RefreshToken => {
                    let rotated = self
                        .rotated
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    let refresh = match (rotated, &c.refresh_token_file) {
                        (Some(r), _) => r,
                        (None, Some(p)) => first_line("oauth_refresh_token_file", p)?,
                        (None, None) => {
                            return Err(OAuthError::Bad("no oauth_refresh_token_file".into()));
                        }
                    };
                    form.append_pair("grant_type", "refresh_token");
                    form.append_pair("refresh_token", &refresh);
                }
                OAuthFlow::ClientCredentials => {
                    form.append_pair("grant_type", "client_credentials");
                }
            }
            if let Some(s) = &c.scope {
                form.append_pair("scope", s);
            }
            form.finish()
        };
        let r = super::https::post_form(
            &c.token_url,
            &body,
            self.tls.clone(),
            &self.resolver,
            TOKEN_TIMEOUT,
        )
        .await?;
        let reply = parse_token_reply(r.status, &r.body)?;
        if let Some(new) = reply.refresh_token
            && c.flow == OAuthFlow::RefreshToken
        {
            self.keep_refresh_token(new);
        }
        Ok((reply.access_token, reply.lifetime))
    }

    /// The endpoint rotated the refresh token (Microsoft does): save it
    /// where the old one was, atomically, so a restart months later still
    /// works; keep it in memory if the file cannot be written.
    fn keep_refresh_token(&self, new: String) {
        let Some(path) = &self.cfg.refresh_token_file else {
            return;
        };
        if first_line("oauth_refresh_token_file", path).ok().as_deref() == Some(new.as_str()) {
            return;
        }
        let tmp = path.with_extension("new");
        let res = (|| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(new.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        match res {
            Ok(()) => {
                tracing::info!(file = %path.display(), "OAuth2 refresh token rotated by the endpoint; saved");
                *self.rotated.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(file = %path.display(), error = %e, "OAuth2 refresh token rotated by the endpoint but cannot be saved; using it from memory (a restart goes back to the file's token)");
                *self.rotated.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
            }
        }
    }
}

/// What a token endpoint's successful reply gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The bearer token (printable ASCII, not empty).
    pub access_token: String,
    /// How long it may be used: `expires_in`, capped at a day
    /// ([`MAX_LIFETIME`]); an hour when absent or not a number.
    pub lifetime: Duration,
    /// A rotated refresh token, if the endpoint sent one.
    pub refresh_token: Option<String>,
}

/// Read a token endpoint's reply (RFC 6749 §5.1 and §5.2): the token and
/// its lifetime, or why there is none. Everything in it comes from the
/// network: no value may panic or overflow later (fuzzed: fuzz/token).
pub fn parse_token_reply(status: u16, body: &[u8]) -> Result<Token, OAuthError> {
    let reply: TokenReply = serde_json::from_slice(body).map_err(|e| {
        OAuthError::Bad(format!(
            "HTTP {status} with a body that is not a JSON token reply ({e})"
        ))
    })?;
    if status != 200 || reply.access_token.is_none() {
        let error = reply.error.unwrap_or_else(|| format!("HTTP {status}"));
        let hint = match error.as_str() {
            "invalid_grant" => Some(
                "the refresh token is expired or revoked: get a new one and put it in oauth_refresh_token_file",
            ),
            "invalid_client" | "unauthorized_client" => {
                Some("check oauth_client_id and oauth_client_secret_file")
            }
            "invalid_scope" => Some("check oauth_scope"),
            _ => None,
        };
        let clean = |d: String| -> String {
            d.chars()
                .take(200)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        };
        let desc = reply
            .error_description
            .map(|d| format!(": {}", clean(d)))
            .unwrap_or_default();
        return Err(OAuthError::Refused {
            status,
            error: format!("{}{desc}", clean(error)),
            hint,
        });
    }
    let token = reply.access_token.unwrap_or_default();
    if token.is_empty() || token.bytes().any(is_control) {
        return Err(OAuthError::Bad("empty or malformed access_token".into()));
    }
    Ok(Token {
        access_token: token,
        lifetime: lifetime(reply.expires_in.as_ref()),
        refresh_token: reply
            .refresh_token
            .filter(|t| !t.is_empty() && !t.bytes().any(is_control)),
    })
}

/// A control octet: never in a token that goes into a command line or the
/// refresh-token file.
fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// `expires_in` as a duration, as a number or a string of digits (both are
/// seen), capped at [`MAX_LIFETIME`]; [`DEFAULT_LIFETIME`] when it is
/// missing, negative or not a number.
fn lifetime(v: Option<&serde_json::Value>) -> Duration {
    let secs = match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().or_else(|| {
            // 3599.5 or 1e30: whole seconds, saturating.
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f.min(MAX_LIFETIME.as_secs_f64()) as u64)
        }),
        Some(serde_json::Value::String(s)) => match s.trim().parse::<u64>() {
            Ok(n) => Some(n),
            // More digits than a u64 holds: as long as can be.
            Err(_) if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) => {
                Some(u64::MAX)
            }
            Err(_) => None,
        },
        _ => None,
    };
    secs.map_or(DEFAULT_LIFETIME, |s| {
        Duration::from_secs(s).min(MAX_LIFETIME)
    })
}

/// The XOAUTH2 initial response: base64 of
/// `user=<user>^Aauth=Bearer <token>^A^A`. Several KB with Microsoft's
/// tokens: sent as one line, whatever its length.
pub fn xoauth2_response(user: &str, token: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Token {
        parse_token_reply(200, body.as_bytes()).unwrap()
    }

    #[test]
    fn expires_in_is_capped_whatever_its_form() {
        let day = MAX_LIFETIME;
        for v in [
            "10000000000000000000",
            "\"10000000000000000000\"",
            "18446744073709551615",
            "\"999999999999999999999999999\"",
            "1e30",
        ] {
            let t = ok(&format!("{{\"access_token\":\"t\",\"expires_in\":{v}}}"));
            assert_eq!(t.lifetime, day, "{v}");
        }
        assert_eq!(
            ok(r#"{"access_token":"t","expires_in":3599}"#).lifetime,
            Duration::from_secs(3599)
        );
        assert_eq!(
            ok(r#"{"access_token":"t","expires_in":"3599"}"#).lifetime,
            Duration::from_secs(3599)
        );
        for v in ["-5", "\"soon\"", "null", "[]", "\"-1\"", "\"\""] {
            let t = ok(&format!("{{\"access_token\":\"t\",\"expires_in\":{v}}}"));
            assert_eq!(t.lifetime, DEFAULT_LIFETIME, "{v}");
        }
        assert_eq!(ok(r#"{"access_token":"t"}"#).lifetime, DEFAULT_LIFETIME);
    }

    #[test]
    fn a_huge_lifetime_gives_a_valid_refresh_time() {
        // What token() does with the lifetime: must not overflow.
        let t = ok(r#"{"access_token":"t","expires_in":10000000000000000000}"#);
        let margin = REFRESH_MARGIN.min(t.lifetime / 2);
        let now = Instant::now();
        assert!(now.checked_add(t.lifetime.saturating_sub(margin)).is_some());
    }

    #[test]
    fn refusals_and_bad_tokens() {
        let e = parse_token_reply(
            400,
            br#"{"error":"invalid_grant","error_description":"a\nb"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid_grant: a b"), "{e}");
        assert!(e.contains("hint: the refresh token"), "{e}");
        assert!(parse_token_reply(200, br#"{"access_token":"a\r\nb"}"#).is_err());
        assert!(parse_token_reply(200, br#"{"access_token":""}"#).is_err());
        assert!(parse_token_reply(200, b"<html>").is_err());
        let t = ok(r#"{"access_token":"t","refresh_token":"r\nx"}"#);
        assert_eq!(t.refresh_token, None);
        let t = ok(r#"{"access_token":"t","refresh_token":"r2"}"#);
        assert_eq!(t.refresh_token.as_deref(), Some("r2"));
    }

    #[test]
    fn xoauth2_string() {
        let b = xoauth2_response(
            "someuser@example.com",
            "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
        );
        // The example from Google's XOAUTH2 protocol page.
        assert_eq!(
            b,
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }
}
