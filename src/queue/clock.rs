//! Queue time: how old messages are, on a board with no real-time clock.
//!
//! Scheduling (next attempt) uses the monotonic clock only. A message's age
//! is measured in *queue time*: monotonic time while postern runs, plus, for
//! each stop, the downtime the wall clock shows, counted as zero when the
//! wall clock went backwards and as at most [`MAX_DOWNTIME`] otherwise.
//! Queue time is saved in the state file (`state.rs`) with the wall clock
//! of the moment, every [`SAVE_EVERY`] and at stop, and each message
//! records the queue time it arrived at. So:
//!
//! - a board that boots with its clock in 1970 neither stalls (ages keep
//!   growing with the monotonic clock) nor expires anything when NTP later
//!   jumps to today (a jump while running changes nothing);
//! - a clock set a year ahead between two runs adds at most a day.
//!
//! The cost: a real outage longer than a day is counted as a day, so a
//! message may outlive `max_age` by the excess; never the other way.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most downtime counted for one stop.
pub const MAX_DOWNTIME: Duration = Duration::from_secs(86_400);
/// How often the queue clock is saved while running.
pub const SAVE_EVERY: Duration = Duration::from_secs(600);

/// The clocks the queue reads (tests inject their own).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Wall clock, seconds since the epoch (may be wrong, may jump).
    fn wall(&self) -> u64;
    /// Monotonic clock.
    fn mono(&self) -> Instant;
}

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
    fn mono(&self) -> Instant {
        Instant::now()
    }
}

/// Queue time, running from a base fixed at open.
#[derive(Debug, Clone, Copy)]
pub struct QueueClock {
    base: Duration,
    since: Instant,
}

impl QueueClock {
    /// Start from what was saved (`saved_ms` of queue time at wall clock
    /// `saved_wall`; zero when never saved) and the clocks now.
    pub fn resume(saved_ms: u64, saved_wall: u64, wall_now: u64, mono_now: Instant) -> QueueClock {
        let downtime = if saved_wall == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(wall_now.saturating_sub(saved_wall)).min(MAX_DOWNTIME)
        };
        QueueClock {
            // saved_ms is from disk: never an overflow, whatever it says.
            base: Duration::from_millis(saved_ms).saturating_add(downtime),
            since: mono_now,
        }
    }

    /// Never behind `t` (a message stamped later than the saved clock: the
    /// clock was saved before it arrived, then the power went).
    pub fn at_least(&mut self, t: Duration) {
        self.base = self.base.max(t);
    }

    /// Queue time at monotonic instant `now`.
    pub fn at(&self, now: Instant) -> Duration {
        self.base
            .saturating_add(now.saturating_duration_since(self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downtime_counts_but_never_backwards_nor_more_than_a_day() {
        let m = Instant::now();
        let today = 1_795_000_000;
        // Normal restart ten minutes later.
        let c = QueueClock::resume(3_600_000, today, today + 600, m);
        assert_eq!(c.at(m), Duration::from_secs(3600 + 600));
        // Booted in 1970: nothing counted, nothing lost.
        let c = QueueClock::resume(3_600_000, today, 100, m);
        assert_eq!(c.at(m), Duration::from_secs(3600));
        assert_eq!(c.at(m + Duration::from_secs(60)), Duration::from_secs(3660));
        // Clock a year ahead: one day at most.
        let c = QueueClock::resume(3_600_000, today, today + 365 * 86_400, m);
        assert_eq!(c.at(m), Duration::from_secs(3600 + 86_400));
        // Never saved: starts at zero.
        let c = QueueClock::resume(0, 0, today, m);
        assert_eq!(c.at(m), Duration::ZERO);
    }
}
