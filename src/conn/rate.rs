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
///
/// The rate and the size are passed to `check` rather than kept: the rate
/// is the token's `rate` claim (or `--rate-limit`) and the size is
/// `--rate-burst`, both held elsewhere already, and every open connection
/// has a limiter.
#[derive(Debug, Clone)]
pub struct RateLimit {
    // f32: ample precision for message counts, and half the memory of an
    // idle connection's limiter.
    tokens: f32,
    /// How full the bucket of dropped messages is.
    dropped: f32,
    updated: Instant,
}

impl RateLimit {
    /// A full bucket of `burst` messages.
    pub fn new(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst as f32,
            dropped: 0.0,
            updated: now,
        }
    }

    /// Accounts one message arriving at `now`, at `rate` messages per second
    /// (0: unlimited) with buckets of `burst` messages.
    pub fn check(&mut self, rate: f64, burst: f64, now: Instant) -> Verdict {
        let (rate, burst) = (rate as f32, burst as f32);
        if rate <= 0.0 {
            return Verdict::Allow;
        }
        let refill = now.saturating_duration_since(self.updated).as_secs_f32() * rate;
        self.updated = now;
        self.tokens = (self.tokens + refill).min(burst);
        self.dropped = (self.dropped - refill).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.dropped += 1.0;
        if self.dropped > burst {
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
        let mut limit = RateLimit::new(5.0, now);
        for _ in 0..5 {
            assert_eq!(limit.check(10.0, 5.0, now), Verdict::Allow);
        }
        for _ in 0..5 {
            assert_eq!(limit.check(10.0, 5.0, now), Verdict::Limited);
        }
        assert_eq!(limit.check(10.0, 5.0, now), Verdict::Flood);
    }

    #[test]
    fn traffic_under_the_rate_is_never_limited() {
        let start = Instant::now();
        let mut limit = RateLimit::new(2.0, start);
        for i in 0..1000 {
            assert_eq!(
                limit.check(10.0, 2.0, start + Duration::from_millis(100 * i)),
                Verdict::Allow,
                "{i}"
            );
        }
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let now = Instant::now();
        let mut limit = RateLimit::new(1.0, now);
        assert!((0..10_000).all(|_| limit.check(0.0, 1.0, now) == Verdict::Allow));
    }
}
