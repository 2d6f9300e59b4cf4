//! When to try Redis again after losing it: exponential backoff with full
//! jitter (a uniformly random wait up to the exponential bound), so that
//! the nodes of a cluster do not all reconnect in the same instant.
//!
//! Sans-IO: the caller brings the randomness and keeps the clock.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// The wait before the next attempt after one more failure; `random`
    /// is any uniformly distributed value.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let bound = self.bound();
        self.failures = self.failures.saturating_add(1);
        let bound_ms = bound.as_millis().max(1) as u64;
        Duration::from_millis(random % (bound_ms + 1))
    }

    /// The connection works again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// How many failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn bound(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut bounds = Vec::new();
        for _ in 0..8 {
            bounds.push(b.bound().as_millis());
            b.next_delay(0);
        }
        assert_eq!(bounds, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.failures(), 8);
        b.reset();
        assert_eq!(b.bound(), Duration::from_millis(100));
    }

    #[test]
    fn every_delay_is_within_its_bound_whatever_the_randomness() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        for random in [0, 1, 7, 12_345, u64::MAX] {
            let bound = b.bound();
            assert!(b.next_delay(random) <= bound);
        }
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        assert_eq!(b.next_delay(0), Duration::ZERO);
        for _ in 0..100 {
            b.next_delay(3);
        }
        assert_eq!(b.bound(), Duration::from_secs(2));
    }
}
