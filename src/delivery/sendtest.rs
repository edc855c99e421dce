//! `postern send-test`: queue a short test message and follow it until it
//! is delivered or fails, printing each attempt.
//!
//! It runs the normal path — the queue, the routes, aliases, rewriting, the
//! SMTP client, retries — in this process, with a throwaway queue in a
//! temporary directory: it does not need the daemon and never touches the
//! daemon's queue (which the daemon locks). A failure is printed, not
//! mailed back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::dns::Resolver;
use crate::policy::Outbound;
use crate::queue::{Limits, Queue};
use crate::smtp::{Address, Envelope, Recipient, ReversePath};

use super::{Delivery, Routes, SharedRoutes};

/// Why send-test could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendTestError {
    /// Building routes failed.
    #[error("{0}")]
    Setup(#[from] super::SetupError),
    /// The temporary queue failed.
    #[error("temporary queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    /// I/O on the temporary directory.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
    /// The recipient is not an address.
    #[error("--to {0}: not a mail address")]
    BadAddress(String),
    /// The sender is not an address.
    #[error("{0}: not a mail address to send from; give one with --from")]
    BadSender(String),
}

/// How it ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the next hop.
    Delivered,
    /// Refused for good, or expired.
    Failed,
    /// Still deferred when the wait ran out.
    StillQueued,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => {
                "not delivered: the next hop refused it for good (the attempt above says \
                 why); fix that and run send-test again"
            }
            Outcome::StillQueued => {
                "not delivered yet: it still waited for a retry when --wait ran out (the \
                 attempts above say why); fix the cause, or give a longer --wait"
            }
        })
    }
}

/// Send one test message to `to`, following it for at most `wait`.
pub fn run(
    cfg: &Config,
    to: &str,
    from: Option<&str>,
    wait: Duration,
) -> Result<Outcome, SendTestError> {
    let Ok(to) = Address::parse(to) else {
        return Err(SendTestError::BadAddress(to.to_string()));
    };
    let outbound = Outbound::from_config(cfg);
    let routes = Routes::from_config(cfg, Resolver::from_system(), &outbound)?;
    let to = outbound.alias(&to).cloned().unwrap_or(to);
    let to = outbound.qualify(&to).unwrap_or(to);
    let from = from
        .map(str::to_string)
        .or_else(|| cfg.outbound.postmaster.clone())
        .unwrap_or_else(|| format!("postern@{}", cfg.hostname));
    let Ok(from) = Address::parse(&from) else {
        return Err(SendTestError::BadSender(from));
    };
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir =
        std::env::temp_dir().join(format!("postern-send-test.{}.{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let mut limits = Limits::from_config(&cfg.queue);
        // Retries come quickly here: someone is watching.
        limits.retry_intervals = vec![Duration::from_secs(10), Duration::from_secs(30)];
        let (queue, _) = Queue::open(&dir.join("queue"), limits)?;
        let res = smol::block_on(follow(cfg, queue.clone(), routes, &from, &to, wait, stamp));
        queue.close();
        res
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn follow(
    cfg: &Config,
    queue: Queue,
    routes: Routes,
    from: &Address,
    to: &Address,
    wait: Duration,
    stamp: u64,
) -> Result<Outcome, SendTestError> {
    let mut w = queue.begin(Envelope {
        from: ReversePath::Path(from.clone()),
        rcpts: vec![Recipient::new(to.clone())],
        ..Envelope::default()
    });
    let text = format!(
        "Date: {date}\r\nFrom: postern <{from}>\r\nTo: <{to}>\r\nSubject: postern test message from {host}\r\n\
         Message-ID: <{stamp}.{pid}.send-test@{host}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n\
         This is a test message sent with `postern send-test` from {host}.\r\n\
         If you read this, the route works.\r\n",
        date = crate::smtp::format_date(stamp),
        host = cfg.hostname,
        pid = std::process::id(),
    );
    w.write(text.as_bytes())?;
    let id = queue.commit(w).await?;
    println!("queued {id}: from <{from}> to <{to}>");
    let (tx, rx) = smol::channel::unbounded();
    let delivery = Delivery::new(
        queue.clone(),
        SharedRoutes::new(routes),
        cfg.hostname.clone(),
    )
    .with_events(tx)
    .without_reports();
    let task = smol::spawn(delivery.run());
    // `--wait` may be any duration the parser takes (years): past what the
    // clock can hold, it means "until there is an outcome".
    let deadline = Instant::now().checked_add(wait);
    let outcome = loop {
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        let ev = smol::future::or(async { rx.recv().await.ok() }, async {
            smol::Timer::after(left).await;
            None
        })
        .await;
        let Some(ev) = ev else {
            println!(
                "still queued after {}s; giving up watching (the daemon would keep retrying)",
                wait.as_secs()
            );
            break Outcome::StillQueued;
        };
        println!(
            "attempt: to=<{}> status={} relay={} reply={}",
            ev.rcpt, ev.status, ev.relay, ev.reply
        );
        match ev.status {
            "sent" => break Outcome::Delivered,
            "bounced" | "expired" => break Outcome::Failed,
            _ => {}
        }
    };
    task.cancel().await;
    Ok(outcome)
}
