//! The per-connection rate limit of section 8: a token bucket over data
//! messages, and a second bucket that fills with the messages dropped, so
//! that a client flooding at more than twice the burst is disconnected.
//!
//! Sans-IO: takes the time as an `Instant`.

use std::time::Instant;

/// What to do with one incoming data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Allow,
    /// Drop it and answer `RATE_LIMITED`.
    Limited,
    /// Drop it and close the connection with 4003.
    Flood,
}

/// Two token buckets of the same size draining at the same rate.
#[derive(Debug, Clone)]
pub struct RateLimit {
    // f32: ample precision for message counts, and half the memory of an
    // idle connection's limiter.
    /// Messages per second; 0 means unlimited.
    rate: f32,
    burst: f32,
    tokens: f32,
    /// How full the bucket of dropped messages is.
    dropped: f32,
    updated: Instant,
}

impl RateLimit {
    /// A full bucket: `rate` per second (0: unlimited), `burst` at once.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let (rate, burst) = (rate as f32, burst as f32);
        Self {
            rate,
            burst,
            tokens: burst,
            dropped: 0.0,
            updated: now,
        }
    }

    /// Changes the rate (a refreshed token's `rate` claim), keeping the burst.
    pub fn set_rate(&mut self, rate: f64) {
        self.rate = rate as f32;
    }

    /// Accounts one message arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Allow;
        }
        let refill = now.saturating_duration_since(self.updated).as_secs_f32() * self.rate;
        self.updated = now;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.dropped = (self.dropped - refill).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.dropped += 1.0;
        if self.dropped > self.burst {
            Verdict::Flood
        } else {
            Verdict::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_burst_passes_then_messages_are_limited_then_the_flood_closes() {
        let now = Instant::now();
        let mut limit = RateLimit::new(10.0, 5.0, now);
        for _ in 0..5 {
            assert_eq!(limit.check(now), Verdict::Allow);
        }
        for _ in 0..5 {
            assert_eq!(limit.check(now), Verdict::Limited);
        }
        assert_eq!(limit.check(now), Verdict::Flood);
    }

    #[test]
    fn traffic_under_the_rate_is_never_limited() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10.0, 2.0, start);
        for i in 0..1000 {
            assert_eq!(
                limit.check(start + Duration::from_millis(100 * i)),
                Verdict::Allow,
                "{i}"
            );
        }
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let now = Instant::now();
        let mut limit = RateLimit::new(0.0, 1.0, now);
        assert!((0..10_000).all(|_| limit.check(now) == Verdict::Allow));
    }
}
