//! One hook URL's share of the client: the requests waiting for a
//! connection, in arrival order, the idle connections kept for it, how
//! many carry a request, and where its host resolved to.
//!
//! A name may resolve to several addresses (`localhost` to `::1` and
//! `127.0.0.1`, with a backend listening on one of them): connections go
//! to the first until one fails to connect, then to the next, round and
//! round, and the name is resolved again after `RESOLVED_FOR`. A lookup
//! that found nothing is remembered for `UNRESOLVED_FOR`, so a dead
//! resolver costs one blocking lookup per second, not one per request.
//!
//! Sans-IO: no sockets, the caller brings the time. The bound of the queue
//! is kept by the senders (`Shared::waiting`), before a request is ever
//! queued here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::hooks::url::HookUrl;

/// How long a resolved address list is used before asking again.
const RESOLVED_FOR: Duration = Duration::from_secs(10);
/// How long a lookup that found nothing stands.
const UNRESOLVED_FOR: Duration = Duration::from_secs(1);

/// A request taken by the client, not yet on a connection.
pub(super) struct Waiting<A> {
    pub answer: A,
    pub body: Vec<u8>,
    pub deadline: Instant,
    /// When the client took it, for the latency.
    pub taken: Instant,
}

pub(super) struct Origin<A> {
    pub url: HookUrl,
    queue: VecDeque<Waiting<A>>,
    /// No waiting request's deadline is earlier (deadlines need not come
    /// in order: each caller sets its own).
    earliest: Option<Instant>,
    /// Keys of idle connections, the most recently used last: it is taken
    /// first, so the others age out by the idle timeout.
    pub idle: Vec<usize>,
    /// Connections carrying a request (connecting ones included).
    pub busy: usize,
    /// The addresses of the last lookup (none if it failed), when it was
    /// made, and which one connections go to.
    resolved: Option<(Vec<SocketAddr>, Instant)>,
    next_address: usize,
}

/// Where a new connection should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Address {
    /// To this address.
    Use(SocketAddr),
    /// Nowhere: the name did not resolve a moment ago.
    Unresolved,
    /// The name must be looked up (`resolved`).
    Lookup,
}

impl<A> Origin<A> {
    pub fn new(url: HookUrl) -> Self {
        Self {
            url,
            queue: VecDeque::new(),
            earliest: None,
            idle: Vec::new(),
            busy: 0,
            resolved: None,
            next_address: 0,
        }
    }

    pub fn push(&mut self, waiting: Waiting<A>) {
        let deadline = waiting.deadline;
        self.earliest = Some(self.earliest.map_or(deadline, |e| e.min(deadline)));
        self.queue.push_back(waiting);
    }

    /// The oldest waiting request, if a connection may take it (fewer
    /// than `concurrency` in flight).
    pub fn next(&mut self, concurrency: usize) -> Option<Waiting<A>> {
        if self.busy >= concurrency {
            return None;
        }
        let next = self.queue.pop_front();
        if self.queue.is_empty() {
            self.earliest = None;
        }
        next
    }

    /// Takes out every waiting request whose deadline is past: they are
    /// failed, never sent.
    pub fn expire(&mut self, now: Instant) -> Vec<Waiting<A>> {
        if self.earliest.is_none_or(|e| e > now) {
            return Vec::new();
        }
        let (late, kept): (VecDeque<_>, VecDeque<_>) =
            self.queue.drain(..).partition(|w| w.deadline <= now);
        self.queue = kept;
        self.earliest = self.queue.iter().map(|w| w.deadline).min();
        late.into()
    }

    /// Takes out every waiting request (the client is stopping).
    pub fn drain(&mut self) -> impl Iterator<Item = Waiting<A>> + '_ {
        self.earliest = None;
        self.queue.drain(..)
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// The earliest deadline of a waiting request.
    pub fn earliest(&self) -> Option<Instant> {
        self.earliest
    }

    /// Where the next connection goes, as far as the last lookup says.
    pub fn address(&self, now: Instant) -> Address {
        let Some((addrs, at)) = &self.resolved else {
            return Address::Lookup;
        };
        let age = now.saturating_duration_since(*at);
        match addrs.get(self.next_address % addrs.len().max(1)) {
            Some(&addr) if age < RESOLVED_FOR => Address::Use(addr),
            None if age < UNRESOLVED_FOR => Address::Unresolved,
            _ => Address::Lookup,
        }
    }

    /// The result of a lookup (empty: it found nothing).
    pub fn resolved(&mut self, addrs: Vec<SocketAddr>, now: Instant) {
        self.resolved = Some((addrs, now));
        self.next_address = 0;
    }

    /// A connection to the current address failed: the next goes to the
    /// next address. Returns how many addresses there are.
    pub fn skip_address(&mut self) -> usize {
        self.next_address = self.next_address.wrapping_add(1);
        self.resolved.as_ref().map_or(0, |(addrs, _)| addrs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin<u32> {
        Origin::new("http://h/".parse().unwrap())
    }

    fn waiting(answer: u32, deadline: Instant) -> Waiting<u32> {
        Waiting {
            answer,
            body: Vec::new(),
            deadline,
            taken: deadline,
        }
    }

    #[test]
    fn requests_leave_in_order_while_the_cap_allows() {
        let now = Instant::now();
        let mut o = origin();
        for i in 0..3 {
            o.push(waiting(i, now + Duration::from_secs(1)));
        }
        assert_eq!(o.next(1).map(|w| w.answer), Some(0));
        o.busy = 1;
        assert!(o.next(1).is_none(), "the cap holds the rest back");
        assert_eq!(o.next(2).map(|w| w.answer), Some(1));
        o.busy = 2;
        assert_eq!(o.waiting(), 1);
        assert_eq!(o.next(3).map(|w| w.answer), Some(2));
        assert_eq!(o.earliest(), None);
    }

    #[test]
    fn only_late_requests_expire_whatever_their_order() {
        let now = Instant::now();
        let mut o = origin();
        o.push(waiting(0, now + Duration::from_millis(50)));
        o.push(waiting(1, now + Duration::from_millis(10)));
        o.push(waiting(2, now + Duration::from_millis(30)));
        assert_eq!(o.earliest(), Some(now + Duration::from_millis(10)));
        assert!(o.expire(now).is_empty());
        let late: Vec<u32> = o
            .expire(now + Duration::from_millis(30))
            .iter()
            .map(|w| w.answer)
            .collect();
        assert_eq!(late, [1, 2]);
        assert_eq!(o.earliest(), Some(now + Duration::from_millis(50)));
        assert_eq!(o.next(1).map(|w| w.answer), Some(0));
    }

    #[test]
    fn addresses_are_kept_for_a_while_and_tried_in_turn() {
        let now = Instant::now();
        let mut o = origin();
        let (v6, v4): (SocketAddr, SocketAddr) =
            ("[::1]:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap());
        assert_eq!(o.address(now), Address::Lookup);
        o.resolved(vec![v6, v4], now);
        assert_eq!(o.address(now + Duration::from_secs(1)), Address::Use(v6));
        assert_eq!(o.skip_address(), 2);
        assert_eq!(o.address(now), Address::Use(v4));
        o.skip_address();
        assert_eq!(o.address(now), Address::Use(v6), "round and round");
        assert_eq!(o.address(now + RESOLVED_FOR), Address::Lookup);
        o.resolved(Vec::new(), now);
        assert_eq!(o.address(now), Address::Unresolved);
        assert_eq!(o.skip_address(), 0);
        assert_eq!(o.address(now + UNRESOLVED_FOR), Address::Lookup);
    }
}
