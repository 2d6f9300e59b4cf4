//! Token buckets for many keys at once, shared by every shard: the
//! `--handshake-rate` per client address and the publish rate per token
//! subject (`POST /publish`).
//!
//! Each bucket refills at its rate per second up to its burst. At most
//! `cap` keys are tracked; when a new one arrives at the cap, buckets that
//! have refilled (they hold nothing a fresh bucket would not) are dropped.
//! If none has, the new key shares one overflow bucket with every other
//! untracked key: memory stays bounded, and a flood from very many keys is
//! still limited as a whole rather than let through.
//!
//! One lock, taken once per upgrade attempt or per HTTP publish, never per
//! WebSocket message. Never reads a clock: callers pass the time in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long an eviction sweep that freed nothing holds off the next.
const SWEEP_BACKOFF: Duration = Duration::from_secs(1);

/// A rate in units per second and the most a bucket holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    /// `per_second` with a burst as large (at least 1, so that a slow rate
    /// still lets one through).
    pub fn per_second(per_second: f64) -> Self {
        Self {
            per_second,
            burst: per_second.max(1.0),
        }
    }
}

/// Token buckets keyed by `K`.
pub struct Buckets<K> {
    cap: usize,
    state: Mutex<Table<K>>,
}

struct Table<K> {
    by_key: HashMap<K, Bucket>,
    overflow: Option<Bucket>,
    /// No eviction sweep before this: one that just freed nothing would
    /// free nothing again so soon.
    next_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    rate: Rate,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
            rate,
        }
    }

    /// Takes `cost` tokens if the bucket holds at least one: a cost above
    /// one (a batch) may leave it in debt, paid back before the next.
    fn take(&mut self, cost: f64, rate: Rate, now: Instant) -> bool {
        self.rate = rate;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full by `now`: forgetting it loses nothing.
    fn is_refilled(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.rate.per_second >= self.rate.burst
    }
}

impl<K: Hash + Eq> Buckets<K> {
    /// Tracks at most `cap` keys.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            state: Mutex::new(Table {
                by_key: HashMap::new(),
                overflow: None,
                next_sweep: None,
            }),
        }
    }

    /// Takes `cost` from `key`'s bucket (made full at `rate` if new);
    /// false when it is empty.
    pub fn take(&self, key: K, cost: f64, rate: Rate, now: Instant) -> bool {
        let mut state = self.state.lock();
        if let Some(bucket) = state.by_key.get_mut(&key) {
            return bucket.take(cost, rate, now);
        }
        if state.by_key.len() >= self.cap {
            Self::evict_refilled(&mut state, self.cap, now);
        }
        if state.by_key.len() >= self.cap {
            let overflow = state.overflow.get_or_insert(Bucket::full(rate, now));
            return overflow.take(cost, rate, now);
        }
        let mut bucket = Bucket::full(rate, now);
        let taken = bucket.take(cost, rate, now);
        state.by_key.insert(key, bucket);
        taken
    }

    fn evict_refilled(state: &mut Table<K>, cap: usize, now: Instant) {
        if state.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        state.by_key.retain(|_, bucket| !bucket.is_refilled(now));
        state.next_sweep = (state.by_key.len() >= cap).then_some(now + SWEEP_BACKOFF);
    }

    /// Keys with a bucket of their own.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.state.lock().by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_batch_is_let_through_with_one_token_and_paid_back_before_the_next() {
        let buckets = Buckets::new(10);
        let rate = Rate::per_second(10.0);
        let t0 = Instant::now();
        assert!(
            buckets.take("feed", 25.0, rate, t0),
            "a full bucket takes a batch"
        );
        assert!(
            !buckets.take("feed", 1.0, rate, t0 + ms(1_000)),
            "15 in debt, 10 back"
        );
        assert!(buckets.take("feed", 1.0, rate, t0 + ms(1_600)));
        assert!(
            buckets.take("other", 1.0, rate, t0),
            "every key has its own"
        );
    }

    #[test]
    fn each_key_keeps_the_rate_it_was_last_taken_at() {
        let buckets = Buckets::new(10);
        let t0 = Instant::now();
        assert!(buckets.take(1, 2.0, Rate::per_second(2.0), t0));
        assert!(!buckets.take(1, 1.0, Rate::per_second(2.0), t0));
        assert!(buckets.take(1, 1.0, Rate::per_second(100.0), t0 + ms(10)));
    }
}
