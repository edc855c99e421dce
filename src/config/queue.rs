//! `[queue]`: where accepted mail waits, how much of it, and for how long.
//!
//! Uses the config's own `schema`, `convert` and `values`.

use std::path::PathBuf;

use super::convert::{DAY, HOUR, MINUTE, SECOND, count, duration, duration_or_off, path, size};
use super::schema::{Section, default, list, non_empty, required, table};
use super::values::{Dur, Size};
use super::{Ctx, Reported};

table! {
    /// `[queue]`
    pub struct QueueConfig, read as QueueKeys {
        /// Required. The spool directory; relative paths are taken from the
        /// working directory.
        dir: PathBuf = required("\"/var/lib/postern/queue\"", path),
        /// Default 64MiB: total bytes of queued messages.
        max_size: Size = default(Size::new(64 << 20), size(1, u64::MAX)),
        /// Default 10000: number of queued messages.
        max_messages: usize = default(10_000, count(1, 10_000_000)),
        /// Default 5d: then the message fails with a report.
        max_age: Dur = default(Dur::new(5 * DAY), duration(SECOND, 365 * DAY)),
        /// Default `["1m", "5m", "15m", "30m", "1h"]`: waits between attempts;
        /// the last repeats.
        retry_intervals: Vec<Dur> = default(
            [MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR].map(Dur::new).to_vec(),
            non_empty(
                "give at least one wait, e.g. [\"5m\", \"30m\"] (the last one repeats)",
                list(duration(SECOND, 7 * DAY)),
            ),
        ),
        /// Default 4h: a message waiting this long gets one delay report
        /// (RFC 3464 `Action: delayed`, to the sender or `postmaster`; it
        /// stays queued) and is a warning in `postern status` (exit 1);
        /// `"0"` turns both off.
        delay_warning: Dur = default(Dur::new(4 * HOUR), duration_or_off(30 * DAY)),
    }
}

/// Read `[queue]`.
pub(crate) fn read(ctx: &mut Ctx, sec: &Section) -> Result<QueueConfig, Reported> {
    super::unknown_keys(ctx, sec, &[QueueConfig::KEYS]);
    QueueKeys::read(ctx, sec).build()
}
