//! Outbound rate shaping per route (`max_messages_per_minute`,
//! `max_recipients_per_day`): sliding windows on the monotonic clock. Over
//! the limit, a message is not attempted; it waits in the queue until the
//! window has room. The windows live in memory (a restart starts them
//! empty, which at worst sends one window's worth early).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// One route's windows.
#[derive(Debug, Default)]
pub struct Limiter {
    per_minute: Option<u32>,
    per_day: Option<u32>,
    messages: VecDeque<Instant>,
    recipients: VecDeque<(Instant, u32)>,
    rcpts_in_day: u64,
}

impl Limiter {
    /// Limits as configured; `None` is unlimited.
    pub fn new(per_minute: Option<u32>, per_day: Option<u32>) -> Limiter {
        Limiter {
            per_minute,
            per_day,
            ..Limiter::default()
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .messages
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            self.messages.pop_front();
        }
        while let Some((t, n)) = self.recipients.front().copied() {
            if now.saturating_duration_since(t) < DAY {
                break;
            }
            self.rcpts_in_day -= u64::from(n);
            self.recipients.pop_front();
        }
    }

    /// Reserve one message of `rcpts` recipients now, or say when there
    /// will be room. A message with more recipients than the daily limit
    /// goes when the day's window is empty, rather than never.
    pub fn reserve(&mut self, rcpts: u32, now: Instant) -> Result<(), Instant> {
        self.expire(now);
        if let Some(max) = self.per_minute
            && self.messages.len() >= max as usize
        {
            let oldest = self.messages[self.messages.len() - max as usize];
            return Err(oldest + MINUTE);
        }
        if let Some(max) = self.per_day
            && !self.recipients.is_empty()
            && self.rcpts_in_day + u64::from(rcpts) > u64::from(max)
        {
            // Room appears when enough of the oldest entries age out.
            let mut freed = 0u64;
            let need = self.rcpts_in_day + u64::from(rcpts) - u64::from(max);
            for (t, n) in &self.recipients {
                freed += u64::from(*n);
                if freed >= need {
                    return Err(*t + DAY);
                }
            }
            return Err(self.recipients.back().map_or(now, |(t, _)| *t + DAY));
        }
        if self.per_minute.is_some() {
            self.messages.push_back(now);
        }
        if self.per_day.is_some() {
            self.recipients.push_back((now, rcpts));
            self.rcpts_in_day += u64::from(rcpts);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_window() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Some(2), None);
        assert!(l.reserve(1, t0).is_ok());
        assert!(l.reserve(1, t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(l.reserve(1, t0 + Duration::from_secs(20)), Err(t0 + MINUTE));
        assert!(l.reserve(1, t0 + MINUTE).is_ok());
    }

    #[test]
    fn per_day_recipients() {
        let t0 = Instant::now();
        let mut l = Limiter::new(None, Some(5));
        assert!(l.reserve(3, t0).is_ok());
        assert!(l.reserve(2, t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(l.reserve(1, t0 + Duration::from_secs(2)), Err(t0 + DAY));
        assert!(l.reserve(3, t0 + DAY).is_ok());
        // Bigger than the whole limit: goes when the window is empty.
        let mut l = Limiter::new(None, Some(2));
        assert!(l.reserve(10, t0).is_ok());
        assert!(l.reserve(1, t0).is_err());
    }

    #[test]
    fn unlimited() {
        let mut l = Limiter::new(None, None);
        for _ in 0..1000 {
            assert!(l.reserve(100, Instant::now()).is_ok());
        }
    }
}
