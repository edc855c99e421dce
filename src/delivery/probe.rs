//! `postern check --connect`: for every route, resolve, connect, TLS (with
//! the certificate's details), AUTH, then QUIT, printing the conversation
//! with secrets masked, each line as it happens, and saying OK or exactly
//! what failed. No mail is sent. A step that gets no answer is given up
//! after [`STEP_TIMEOUT`] (or the route's own shorter timeout) and named,
//! instead of waiting out the delivery timeouts (5 minutes a reply).

use std::sync::Arc;
use std::time::Duration;

use super::client::{Client, ClientError, Transcript, candidates};
use super::routes::{Routes, Target};
use crate::config::{Config, DomainPattern, Dur, Upstream};

/// The longest `check --connect` waits for one step (connect, TLS, a
/// reply): a person is watching.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// What kind of failure, for the summary line: DNS, connect, certificate, auth…
fn stage(e: &ClientError) -> &'static str {
    match e {
        ClientError::Dns(_) => "DNS",
        ClientError::NullMx(_) => "DNS (null MX)",
        ClientError::Connect { .. } => "connect",
        ClientError::Tls { .. } => "certificate/TLS",
        ClientError::ClockNotSynced { .. } => "certificate (clock)",
        ClientError::NoStartTls => "STARTTLS",
        ClientError::AuthRefused { .. }
        | ClientError::NoAuthMechanism(_)
        | ClientError::PasswordFile { .. }
        | ClientError::InsecureAuth
        | ClientError::ClearTextToPublic(_)
        | ClientError::OAuth(_) => "auth",
        ClientError::Timeout(_) => "timeout",
        ClientError::AllFailed(_) => "every host",
        _ => "SMTP",
    }
}

/// Shorten every route's connect and reply timeouts to [`STEP_TIMEOUT`]
/// for a check; shorter ones configured stay.
pub fn for_check(cfg: &mut Config) {
    for route in &mut cfg.outbound.routes {
        if let Upstream::Smarthost(s) | Upstream::Mx(s) = &mut route.upstream {
            for t in [&mut s.connect_timeout, &mut s.command_timeout] {
                if t.value > STEP_TIMEOUT {
                    *t = Dur::new(STEP_TIMEOUT);
                }
            }
        }
    }
}

/// Check every route, telling `out` each line as it happens; `domain` is
/// used for MX routes whose domains are all wildcards. True when every
/// route is OK.
pub async fn check_routes(routes: &Routes, domain: Option<&str>, out: Transcript) -> bool {
    let mut all_ok = true;
    let line = |s: String| out(&s);
    for route in &routes.routes {
        line(format!("== {}", route.name));
        let indented: Transcript = {
            let out = out.clone();
            Arc::new(move |l: &str| out(&format!("   {l}")))
        };
        let say = |s: String| indented(&s);
        let failure = match &route.target {
            Target::Maildir(dir) => {
                let probe = dir.join(".postern-check");
                let r = super::maildir::create_dir(dir)
                    .and_then(|_| std::fs::write(&probe, b"check\n"))
                    .and_then(|_| std::fs::remove_file(&probe));
                say(format!("-- maildir {}", dir.display()));
                r.err()
                    .map(|e| format!("cannot write into {}: {e}", dir.display()))
            }
            Target::Smtp(sh) => {
                let d = if sh.mx {
                    route
                        .domains
                        .iter()
                        .find_map(|p| match p {
                            DomainPattern::Exact(d) => Some(d.clone()),
                            DomainPattern::Subdomains(d) => Some(d.clone()),
                            DomainPattern::Any => None,
                        })
                        .or(domain.map(str::to_string))
                } else {
                    None
                };
                if sh.mx && d.is_none() {
                    say(
                        "-- MX route for every domain: give --domain example.com to check one"
                            .into(),
                    );
                    None
                } else {
                    if let Some(d) = &d {
                        say(format!("-- MX for {d}: looking up"));
                        match candidates(sh, Some(d)).await {
                            Ok(c) => say(format!(
                                "-- MX for {d}: {}",
                                c.iter()
                                    .map(|c| c.host.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                            Err(e) => say(format!("-- MX for {d}: {e}")),
                        }
                    }
                    match Client::connect(sh, d.as_deref(), Some(indented.clone())).await {
                        Ok(c) => {
                            let size = c.caps().size;
                            c.quit().await;
                            if let Some(s) = size {
                                say(format!("-- upstream SIZE limit: {s} octets"));
                            }
                            None
                        }
                        // Each host's reason is in the notes above.
                        Err(ClientError::AllFailed(_)) => {
                            Some("every host failed (each one's reason is above)".to_string())
                        }
                        Err(e) => Some(format!("{}: {e}", stage(&e))),
                    }
                }
            }
        };
        match failure {
            None => line("   OK".into()),
            Some(f) => {
                all_ok = false;
                line(format!("   FAILED: {f}"));
            }
        }
    }
    all_ok
}
