//! One way to give up on a future: [`timeout`] races it against a timer.
//! The listener, the smarthost client, the HTTPS token client and the DNS
//! runtime all use it, each turning [`Elapsed`] into its own error (which
//! names the step that took too long).
//!
//! Uses nothing from the crate; anything may use it.

use std::future::Future;
use std::time::Duration;

/// The time ran out before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// `f`'s output, unless `dur` passes first (then `f` is dropped).
pub async fn timeout<F: Future>(dur: Duration, f: F) -> Result<F::Output, Elapsed> {
    smol::future::or(async { Ok(f.await) }, async {
        smol::Timer::after(dur).await;
        Err(Elapsed)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_future_wins_and_a_pending_one_times_out() {
        smol::block_on(async {
            assert_eq!(timeout(Duration::from_secs(60), async { 7 }).await, Ok(7));
            let never = std::future::pending::<()>();
            assert_eq!(timeout(Duration::from_millis(1), never).await, Err(Elapsed));
        });
    }
}
