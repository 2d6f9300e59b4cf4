//! Whether a Redis server still answers (`--redis-timeout`, section 15),
//! sans-IO: the caller brings the time and since when the commands waiting
//! have got no reply (`pipeline::Pipeline::silent_since`).
//!
//! A server that has answered nothing for the timeout while a command
//! waited is unreachable, whether it is frozen, cut off without a reset, or
//! still accepting the TCP connection of a setup it never answers. One
//! that answers, however far behind (a join storm on a machine short of
//! CPU), is not: dropping it would answer everything in flight
//! `UNAVAILABLE` and add a resync to its load. A link with
//! nothing in flight sends a `PING` every `PING_EVERY`, so an idle node
//! notices too: within `PING_EVERY` plus the timeout.

use std::time::{Duration, Instant};

/// How often a ready link with nothing waiting for a reply pings.
pub const PING_EVERY: Duration = Duration::from_secs(1);

/// One link's watch.
#[derive(Debug, Clone)]
pub struct Liveness {
    timeout: Duration,
    /// When an idle link pings next; `None` until it is ready.
    next_ping: Option<Instant>,
}

impl Liveness {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            next_ping: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The link is ready at `now`: it pings from `PING_EVERY` on.
    pub fn ready(&mut self, now: Instant) {
        self.next_ping = Some(now + PING_EVERY);
    }

    /// The link is gone: no pings until it is ready again.
    pub fn down(&mut self) {
        self.next_ping = None;
    }

    /// Whether the server failed to answer: the commands waiting have had
    /// no reply since `oldest` (`Pipeline::silent_since`), a timeout or more
    /// before `now`.
    pub fn overdue(&self, oldest: Option<Instant>, now: Instant) -> bool {
        oldest.is_some_and(|queued| now.saturating_duration_since(queued) >= self.timeout)
    }

    /// Whether to send a `PING` now: every `PING_EVERY` on a ready link,
    /// unless something is in flight (`idle` false), whose reply proves as
    /// much.
    pub fn ping_due(&mut self, idle: bool, now: Instant) -> bool {
        if self.next_ping.is_none_or(|at| now < at) {
            return false;
        }
        self.next_ping = Some(now + PING_EVERY);
        idle
    }

    /// When the caller must look again: the oldest command's deadline or
    /// the next ping, whichever comes first.
    pub fn next_check(&self, oldest: Option<Instant>) -> Option<Instant> {
        let deadline = oldest.map(|queued| queued + self.timeout);
        match (deadline, self.next_ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_command_unanswered_for_the_timeout_is_overdue() {
        let start = Instant::now();
        let watch = Liveness::new(Duration::from_millis(500));
        assert!(!watch.overdue(None, at(start, 10_000)));
        assert!(!watch.overdue(Some(start), at(start, 499)));
        assert!(watch.overdue(Some(start), at(start, 500)));
        // A clock that is behind the stamp is not a reason to drop a link.
        assert!(!watch.overdue(Some(at(start, 100)), start));
    }

    #[test]
    fn an_idle_ready_link_pings_every_second_and_a_busy_one_does_not() {
        let start = Instant::now();
        let mut watch = Liveness::new(Duration::from_secs(2));
        assert!(!watch.ping_due(true, at(start, 5_000)), "not ready yet");
        watch.ready(start);
        assert!(!watch.ping_due(true, at(start, 999)));
        assert!(watch.ping_due(true, at(start, 1_000)));
        assert!(!watch.ping_due(true, at(start, 1_500)));
        // Busy at the second mark: no ping, and none until the next mark.
        assert!(!watch.ping_due(false, at(start, 2_000)));
        assert!(!watch.ping_due(true, at(start, 2_500)));
        assert!(watch.ping_due(true, at(start, 3_000)));
        watch.down();
        assert!(!watch.ping_due(true, at(start, 9_000)));
    }

    #[test]
    fn a_late_turn_does_not_make_pings_pile_up() {
        let start = Instant::now();
        let mut watch = Liveness::new(Duration::from_secs(2));
        watch.ready(start);
        assert!(watch.ping_due(true, at(start, 7_300)));
        assert!(!watch.ping_due(true, at(start, 7_400)));
        assert!(watch.ping_due(true, at(start, 8_300)));
    }

    #[test]
    fn the_next_check_is_the_nearest_of_the_deadline_and_the_ping() {
        let start = Instant::now();
        let mut watch = Liveness::new(Duration::from_millis(500));
        assert_eq!(watch.next_check(None), None);
        assert_eq!(watch.next_check(Some(start)), Some(at(start, 500)));
        watch.ready(start);
        assert_eq!(watch.next_check(None), Some(at(start, 1_000)));
        assert_eq!(watch.next_check(Some(at(start, 100))), Some(at(start, 600)));
        assert_eq!(
            watch.next_check(Some(at(start, 900))),
            Some(at(start, 1_000))
        );
    }
}
