//! Server-wide connection accounting: `--max-connections`,
//! `--max-connections-per-ip`, `--handshake-rate`, the draining flag, the
//! count of distinct users for the `users` gauge, and the `POST /publish`
//! rate per token subject.
//!
//! Touched once per upgrade attempt and once when a WebSocket ends, never
//! per message; the per-IP map (only when that limit is set), the rate
//! buckets (only when a rate is set) and the user map are the only locks.
//! Never reads a clock: callers pass the time in.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::codes::ErrorCode;
use crate::codes::limits::MAX_RATE_TRACKED_ADDRESSES;
use crate::conn::Admission;
use crate::reactor::buckets::{Buckets, Rate};
use crate::reactor::refusals::{self, Refusal};

/// Counts of admitted WebSocket connections.
pub struct Registry {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    draining: AtomicBool,
    /// Open `/ws` connections per user, keyed by a keyed 64-bit hash of the
    /// user id rather than the id itself: 16 bytes a user instead of a copy
    /// of the string. Two users colliding would be counted as one; with
    /// SipHash under a random key that takes billions of users.
    users: Mutex<HashMap<u64, u32>>,
    user_hasher: RandomState,
    /// `--handshake-rate`; `None` when off.
    handshakes: Option<HandshakeRate>,
    /// `POST /publish` messages per token subject (keyed like `users`).
    publishes: Buckets<u64>,
}

impl Registry {
    /// `max_per_ip` 0 means no per-IP limit.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self::with_handshake_rate(max_total, max_per_ip, 0.0)
    }

    /// With a limit of `rate` upgrade attempts per second per address
    /// (0: none).
    pub fn with_handshake_rate(max_total: usize, max_per_ip: usize, rate: f64) -> Self {
        Self {
            handshakes: (rate > 0.0).then(|| HandshakeRate::new(rate, MAX_RATE_TRACKED_ADDRESSES)),
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            users: Mutex::new(HashMap::new()),
            user_hasher: RandomState::new(),
            publishes: Buckets::new(MAX_RATE_TRACKED_ADDRESSES),
        }
    }

    /// A `/ws` connection of `user` opened.
    pub fn user_connected(&self, user: &str) {
        let key = self.user_hasher.hash_one(user);
        *self.users.lock().entry(key).or_insert(0) += 1;
    }

    /// A `/ws` connection of `user` ended.
    pub fn user_disconnected(&self, user: &str) {
        let key = self.user_hasher.hash_one(user);
        let mut users = self.users.lock();
        if let Some(count) = users.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                users.remove(&key);
            }
        }
    }

    /// Distinct users with an open `/ws` connection.
    pub fn users(&self) -> usize {
        self.users.lock().len()
    }

    /// Admitted connections right now.
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// From now on every upgrade is refused with `SERVER_BUSY`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Takes a slot for an upgrade from `ip`, or says which limit refuses it.
    fn check_admission(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.is_draining() {
            return Err(Refusal::Draining);
        }
        if self.total.fetch_add(1, Ordering::SeqCst) >= self.max_total {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::ConnectionLimit);
        }
        if !self.handshakes.as_ref().is_none_or(|r| r.take(ip, now)) {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::HandshakeRate);
        }
        if !self.admit_per_ip(ip) {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::AddressLimit);
        }
        Ok(())
    }

    fn admit_per_ip(&self, ip: IpAddr) -> bool {
        if self.max_per_ip == 0 {
            return true;
        }
        let mut per_ip = self.per_ip.lock();
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return false;
        }
        *count += 1;
        true
    }
}

impl Admission for Registry {
    /// Refusals are logged here, where the limit that refused is known
    /// (`reactor::refusals`).
    fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), ErrorCode> {
        self.check_admission(ip, now).map_err(|refusal| {
            refusals::refused(refusal);
            match refusal {
                Refusal::AddressLimit | Refusal::HandshakeRate => ErrorCode::TooManyConnections,
                _ => ErrorCode::ServerBusy,
            }
        })
    }

    fn admit_publish(&self, subject: &str, messages: usize, rate: f64, now: Instant) -> bool {
        if rate <= 0.0 {
            return true;
        }
        let key = self.user_hasher.hash_one(subject);
        let rate = Rate::per_second(rate);
        self.publishes.take(key, messages as f64, rate, now)
    }

    fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::SeqCst);
        if self.max_per_ip == 0 {
            return;
        }
        let mut per_ip = self.per_ip.lock();
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// A token bucket per client address for upgrade attempts: refills at
/// `rate` per second up to a burst of `rate` (at least 1). IPv6 addresses
/// are keyed by their /64, which one client usually holds whole.
struct HandshakeRate {
    rate: Rate,
    buckets: Buckets<AddressKey>,
}

/// An IPv4 address, or the /64 prefix of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4(u32),
    V6(u64),
}

impl AddressKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl HandshakeRate {
    fn new(rate: f64, cap: usize) -> Self {
        Self {
            rate: Rate::per_second(rate),
            buckets: Buckets::new(cap),
        }
    }

    /// Takes one attempt from `ip`'s bucket; false when it is empty.
    fn take(&self, ip: IpAddr, now: Instant) -> bool {
        self.buckets.take(AddressKey::of(ip), 1.0, self.rate, now)
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.tracked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    fn now() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn v6(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn total_limit_answers_server_busy() {
        let registry = Registry::new(2, 0);
        assert_eq!(registry.admit(A, now()), Ok(()));
        assert_eq!(registry.admit(B, now()), Ok(()));
        assert_eq!(registry.admit(A, now()), Err(ErrorCode::ServerBusy));
        registry.release(A);
        assert_eq!(registry.admit(A, now()), Ok(()));
        assert_eq!(registry.connections(), 2);
    }

    #[test]
    fn per_ip_limit_answers_too_many_connections() {
        let registry = Registry::new(10, 1);
        assert_eq!(registry.admit(A, now()), Ok(()));
        assert_eq!(registry.admit(A, now()), Err(ErrorCode::TooManyConnections));
        assert_eq!(registry.admit(B, now()), Ok(()));
        assert_eq!(registry.connections(), 2);
        registry.release(A);
        assert_eq!(registry.admit(A, now()), Ok(()));
    }

    #[test]
    fn users_are_counted_once_however_many_connections() {
        let registry = Registry::new(10, 0);
        registry.user_connected("alice");
        registry.user_connected("alice");
        registry.user_connected("bob");
        assert_eq!(registry.users(), 2);
        registry.user_disconnected("alice");
        assert_eq!(registry.users(), 2);
        registry.user_disconnected("alice");
        registry.user_disconnected("nobody");
        assert_eq!(registry.users(), 1);
    }

    #[test]
    fn draining_refuses_everyone() {
        let registry = Registry::new(10, 0);
        registry.start_draining();
        assert_eq!(registry.admit(A, now()), Err(ErrorCode::ServerBusy));
        assert_eq!(registry.connections(), 0);
    }

    #[test]
    fn handshake_rate_allows_a_burst_then_refills_at_the_rate() {
        let limiter = HandshakeRate::new(5.0, 100);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.take(A, t0));
        }
        assert!(!limiter.take(A, t0));
        assert!(limiter.take(B, t0), "another address has its own bucket");
        assert!(!limiter.take(A, t0 + ms(150)));
        assert!(limiter.take(A, t0 + ms(200)), "one token after 1/5 s");
        assert!(!limiter.take(A, t0 + ms(200)));
        for _ in 0..5 {
            assert!(limiter.take(A, t0 + ms(1_500)));
        }
        assert!(!limiter.take(A, t0 + ms(1_500)), "the burst is the bound");
    }

    #[test]
    fn a_slow_rate_still_allows_one_attempt() {
        let limiter = HandshakeRate::new(0.5, 100);
        let t0 = Instant::now();
        assert!(limiter.take(A, t0));
        assert!(!limiter.take(A, t0 + ms(1_000)));
        assert!(limiter.take(A, t0 + ms(2_000)));
    }

    #[test]
    fn ipv6_addresses_share_their_64_bucket() {
        let limiter = HandshakeRate::new(1.0, 100);
        let t0 = Instant::now();
        assert!(limiter.take(v6("2001:db8:1:2::1"), t0));
        assert!(!limiter.take(v6("2001:db8:1:2:ffff::9"), t0));
        assert!(limiter.take(v6("2001:db8:1:3::1"), t0));
        assert!(limiter.take(v6("::ffff:10.0.0.1"), t0));
        assert!(!limiter.take(v6("::ffff:10.0.0.1"), t0));
    }

    #[test]
    fn at_the_cap_refilled_buckets_are_evicted_and_else_one_is_shared() {
        let limiter = HandshakeRate::new(1.0, 2);
        let t0 = Instant::now();
        let ip = |n: u8| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, n));
        assert!(limiter.take(ip(1), t0));
        assert!(limiter.take(ip(2), t0));
        // Full, and nothing has refilled: newcomers share the overflow bucket.
        assert!(limiter.take(ip(3), t0));
        assert!(!limiter.take(ip(4), t0));
        assert_eq!(limiter.tracked(), 2);
        // A second later both tracked buckets have refilled and make room.
        let later = t0 + ms(1_000);
        assert!(limiter.take(ip(5), later));
        assert_eq!(limiter.tracked(), 1);
        assert!(!limiter.take(ip(5), later));
    }

    #[test]
    fn rate_refusal_is_429_and_frees_the_slot() {
        let registry = Registry::with_handshake_rate(10, 0, 1.0);
        let t0 = Instant::now();
        assert_eq!(registry.admit(A, t0), Ok(()));
        assert_eq!(registry.admit(A, t0), Err(ErrorCode::TooManyConnections));
        assert_eq!(registry.connections(), 1);
        assert_eq!(registry.admit(B, t0), Ok(()));
        assert_eq!(registry.admit(A, t0 + ms(1_000)), Ok(()));
    }
}
