//! The three brakes between a trigger and a reconcile, pure functions of
//! time: a debounce that turns a burst into one run, a token bucket that
//! caps the rate when something fights us, and a back-off after failures.

use std::time::{Duration, Instant};

/// Triggers waiting for a reconcile. Ready once no new trigger came for
/// `quiet`, or `max` after the first one (a steady trickle must not
/// postpone a repair forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    pub first: Instant,
    pub last: Instant,
}

impl Burst {
    pub fn new(now: Instant) -> Burst {
        Burst {
            first: now,
            last: now,
        }
    }

    pub fn touch(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    pub fn ready_at(&self, quiet: Duration, max: Duration) -> Instant {
        (self.last + quiet).min(self.first + max)
    }
}

/// `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            tokens: burst,
            burst,
            rate: rate.max(1e-3),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }

    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token is there (`now` if it is).
    pub fn ready_at(&self, now: Instant) -> Instant {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let have = (self.tokens + dt * self.rate).min(self.burst);
        if have >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - have) / self.rate)
        }
    }
}

/// Doubling delays from `min` to `max` after consecutive failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    pub failures: u32,
    pub until: Option<Instant>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            until: None,
        }
    }

    /// Records a failure; returns the delay before the next attempt.
    pub fn fail(&mut self, now: Instant) -> Duration {
        let shift = self.failures.min(20);
        self.failures += 1;
        let d = self.min.saturating_mul(1 << shift).min(self.max);
        self.until = Some(now + d);
        d
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
        self.until = None;
    }

    pub fn ready_at(&self, now: Instant) -> Instant {
        self.until.map_or(now, |u| u.max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_is_ready_after_quiet_or_at_the_cap() {
        let t0 = Instant::now();
        let mut b = Burst::new(t0);
        assert_eq!(b.ready_at(10 * MS, 100 * MS), t0 + 10 * MS);
        b.touch(t0 + 8 * MS);
        assert_eq!(b.ready_at(10 * MS, 100 * MS), t0 + 18 * MS);
        // Events every 5 ms forever: still runs at the cap.
        for i in 0..100 {
            b.touch(t0 + i * 5 * MS);
        }
        assert_eq!(b.ready_at(10 * MS, 100 * MS), t0 + 100 * MS);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut tb = TokenBucket::new(5.0, 3, t0);
        assert!(tb.try_take(t0) && tb.try_take(t0) && tb.try_take(t0));
        assert!(!tb.try_take(t0));
        assert_eq!(tb.ready_at(t0), t0 + 200 * MS);
        assert!(!tb.try_take(t0 + 150 * MS));
        assert!(tb.try_take(t0 + 200 * MS));
        // Saved-up tokens never exceed the burst.
        let later = t0 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| tb.try_take(later)).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let ds: Vec<u64> = (0..6).map(|_| b.fail(t0).as_secs()).collect();
        assert_eq!(ds, [1, 2, 4, 8, 8, 8]);
        assert_eq!(b.ready_at(t0), t0 + Duration::from_secs(8));
        b.succeed();
        assert_eq!(b.ready_at(t0), t0);
        assert_eq!(b.fail(t0), Duration::from_secs(1));
    }
}
