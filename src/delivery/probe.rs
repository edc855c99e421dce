//! `postern check --connect`: for every route, resolve, connect, TLS (with
//! the certificate's details), AUTH, then QUIT, printing the conversation
//! with secrets masked and saying OK or exactly what failed. No mail is sent.

use std::sync::Arc;

use super::client::{Client, ClientError, Transcript, candidates};
use super::routes::{Routes, Target};
use crate::config::DomainPattern;

/// One route's result.
#[derive(Debug)]
pub struct RouteCheck {
    /// The route's name.
    pub name: String,
    /// Conversation and notes.
    pub lines: Vec<String>,
    /// `None`: OK; otherwise what failed.
    pub failure: Option<String>,
}

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

/// Check every route; `domain` is used for MX routes whose domains are all
/// wildcards.
pub async fn check_routes(routes: &Routes, domain: Option<&str>) -> Vec<RouteCheck> {
    let mut out = Vec::new();
    for route in &routes.routes {
        let mut lines = Vec::new();
        let failure = match &route.target {
            Target::Maildir(dir) => {
                let probe = dir.join(".postern-check");
                let r = std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::write(&probe, b"check\n"))
                    .and_then(|_| std::fs::remove_file(&probe));
                lines.push(format!("-- maildir {}", dir.display()));
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
                    lines.push(
                        "-- MX route for every domain: give --domain example.com to check one"
                            .into(),
                    );
                    None
                } else {
                    if let Some(d) = &d {
                        match candidates(sh, Some(d)).await {
                            Ok(c) => lines.push(format!(
                                "-- MX for {d}: {}",
                                c.iter()
                                    .map(|c| c.host.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                            Err(e) => lines.push(format!("-- MX for {d}: {e}")),
                        }
                    }
                    let t: Transcript = Arc::new(std::sync::Mutex::new(Vec::new()));
                    let res = Client::connect(sh, d.as_deref(), Some(t.clone())).await;
                    let failure = match res {
                        Ok(c) => {
                            let size = c.caps().size;
                            c.quit().await;
                            if let Some(s) = size {
                                lines.push(format!("-- upstream SIZE limit: {s} octets"));
                            }
                            None
                        }
                        // Each host's reason is in the notes above.
                        Err(ClientError::AllFailed(_)) => {
                            Some("every host failed (each one's reason is above)".to_string())
                        }
                        Err(e) => Some(format!("{}: {e}", stage(&e))),
                    };
                    lines.splice(0..0, t.lock().unwrap_or_else(|p| p.into_inner()).drain(..));
                    failure
                }
            }
        };
        out.push(RouteCheck {
            name: route.name.clone(),
            lines,
            failure,
        });
    }
    out
}

/// Print results; true when every route is OK.
pub fn print(results: &[RouteCheck]) -> bool {
    let mut ok = true;
    for r in results {
        println!("== {}", r.name);
        for l in &r.lines {
            println!("   {l}");
        }
        match &r.failure {
            None => println!("   OK"),
            Some(f) => {
                ok = false;
                println!("   FAILED: {f}");
            }
        }
    }
    ok
}
