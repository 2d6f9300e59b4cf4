//! Server-wide connection accounting: `--max-connections`,
//! `--max-connections-per-ip`, the draining flag, and the count of distinct
//! users for the `users` gauge.
//!
//! Touched once when a WebSocket is admitted and once when it ends, never
//! per message; the per-IP map (only when that limit is set) and the user
//! map are the only locks.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::codes::ErrorCode;
use crate::conn::Admission;

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
}

impl Registry {
    /// `max_per_ip` 0 means no per-IP limit.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            users: Mutex::new(HashMap::new()),
            user_hasher: RandomState::new(),
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
    fn admit(&self, ip: IpAddr) -> Result<(), ErrorCode> {
        if self.is_draining() {
            return Err(ErrorCode::ServerBusy);
        }
        if self.total.fetch_add(1, Ordering::SeqCst) >= self.max_total {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(ErrorCode::ServerBusy);
        }
        if !self.admit_per_ip(ip) {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(ErrorCode::TooManyConnections);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn total_limit_answers_server_busy() {
        let registry = Registry::new(2, 0);
        assert_eq!(registry.admit(A), Ok(()));
        assert_eq!(registry.admit(B), Ok(()));
        assert_eq!(registry.admit(A), Err(ErrorCode::ServerBusy));
        registry.release(A);
        assert_eq!(registry.admit(A), Ok(()));
        assert_eq!(registry.connections(), 2);
    }

    #[test]
    fn per_ip_limit_answers_too_many_connections() {
        let registry = Registry::new(10, 1);
        assert_eq!(registry.admit(A), Ok(()));
        assert_eq!(registry.admit(A), Err(ErrorCode::TooManyConnections));
        assert_eq!(registry.admit(B), Ok(()));
        assert_eq!(registry.connections(), 2);
        registry.release(A);
        assert_eq!(registry.admit(A), Ok(()));
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
        assert_eq!(registry.admit(A), Err(ErrorCode::ServerBusy));
        assert_eq!(registry.connections(), 0);
    }
}
