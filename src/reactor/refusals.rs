//! Why a node refused an upgrade or a connection, as WARN lines: at most
//! one line per reason a second, carrying how many refusals of that
//! reason the line stands for, so that a storm of refusals names its
//! cause without flooding the log.
//!
//! Owns the reasons, their names in the log and the per-reason limiter
//! (`LineLimiter`, sans-IO: it takes the time). The process-wide limiters
//! are shared by every shard, the acceptor and the admission registry;
//! each is a lock held for a few instructions, taken only on a refusal.
//! Never logs a token, an address or anything else from a request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::codes::ErrorCode;
use crate::log::{self, Field, Level};

/// At most one line per reason this often.
const INTERVAL: Duration = Duration::from_secs(1);

/// Why an upgrade or a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` reached (503).
    ConnectionLimit,
    /// `--max-connections-per-ip` reached for one address (429).
    AddressLimit,
    /// `--handshake-rate` exceeded by one address (429).
    HandshakeRate,
    /// Shutting down: every upgrade is refused (503).
    Draining,
    /// An upgrade refused for what the request carried (a bad or expired
    /// token, an origin, a malformed upgrade) or by the connect proxy.
    Upgrade(ErrorCode),
    /// `accept` failed for want of file descriptors (EMFILE, ENFILE): the
    /// connection waits in the kernel's backlog.
    OutOfFiles,
    /// `accept` failed otherwise.
    AcceptFailed,
    /// A connection that had not sent its first request was closed to
    /// make room (`--max-pre-request`, or out of file descriptors).
    Evicted,
}

/// Reasons that are not an upgrade's error code.
const FIXED: usize = 7;
const SLOTS: usize = FIXED + ErrorCode::ALL.len();

impl Refusal {
    /// The reason's name in the log line.
    pub fn name(self) -> &'static str {
        match self {
            Self::ConnectionLimit => "connection_limit",
            Self::AddressLimit => "address_limit",
            Self::HandshakeRate => "handshake_rate",
            Self::Draining => "draining",
            Self::Upgrade(code) => code.as_str(),
            Self::OutOfFiles => "out_of_files",
            Self::AcceptFailed => "accept_failed",
            Self::Evicted => "evicted_before_request",
        }
    }

    /// What the client got: an HTTP status, or 0 when none was sent.
    fn status(self) -> u16 {
        match self {
            Self::ConnectionLimit | Self::Draining => 503,
            Self::AddressLimit | Self::HandshakeRate => 429,
            Self::Upgrade(code) => code.http_status(),
            Self::OutOfFiles | Self::AcceptFailed | Self::Evicted => 0,
        }
    }

    fn slot(self) -> usize {
        match self {
            Self::ConnectionLimit => 0,
            Self::AddressLimit => 1,
            Self::HandshakeRate => 2,
            Self::Draining => 3,
            Self::OutOfFiles => 4,
            Self::AcceptFailed => 5,
            Self::Evicted => 6,
            Self::Upgrade(code) => FIXED + code.index(),
        }
    }
}

/// Lets through one line per `interval` and counts the ones held back.
#[derive(Debug)]
pub struct LineLimiter {
    interval: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LineLimiter {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            held_back: 0,
        }
    }

    /// One more event at `now`: `Some(n)` when a line is due, `n` being
    /// the events held back since the last line; `None` when this one is
    /// held back.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// The reason of a failed `accept`.
pub fn of_accept_error(error: &std::io::Error) -> Refusal {
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => Refusal::OutOfFiles,
        _ => Refusal::AcceptFailed,
    }
}

static LIMITERS: [Mutex<LineLimiter>; SLOTS] =
    [const { Mutex::new(LineLimiter::new(INTERVAL)) }; SLOTS];

/// Counts a refusal; writes its WARN line when one is due:
/// `refused reason=connection_limit status=503 held_back=523`, where
/// `held_back` counts the refusals of that reason since its last line.
pub fn refused(refusal: Refusal) {
    refused_with(refusal, "");
}

/// `refused`, with a detail (an accept error's text).
pub fn refused_with(refusal: Refusal, detail: &str) {
    if !log::enabled(Level::Warn) {
        return;
    }
    let due = {
        let mut limiter = LIMITERS[refusal.slot()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        limiter.note(Instant::now())
    };
    let Some(held_back) = due else {
        return;
    };
    let mut fields = vec![
        ("reason", Field::Str(refusal.name())),
        ("status", Field::U64(u64::from(refusal.status()))),
        ("held_back", Field::U64(held_back)),
    ];
    if !detail.is_empty() {
        fields.push(("error", Field::Str(detail)));
    }
    log::event(Level::Warn, "refused", &fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_line_a_second_counting_the_ones_held_back() {
        let mut limiter = LineLimiter::new(ms(1000));
        let t0 = Instant::now();
        assert_eq!(limiter.note(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(limiter.note(t0 + ms(i)), None);
        }
        assert_eq!(limiter.note(t0 + ms(999)), None);
        assert_eq!(limiter.note(t0 + ms(1000)), Some(501));
        assert_eq!(limiter.note(t0 + ms(1500)), None);
        // A quiet spell: the next line is due at once, and counts only
        // what came after the last one.
        assert_eq!(limiter.note(t0 + ms(60_000)), Some(1));
        assert_eq!(limiter.note(t0 + ms(60_001)), None);
    }

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        let mut reasons = vec![
            Refusal::ConnectionLimit,
            Refusal::AddressLimit,
            Refusal::HandshakeRate,
            Refusal::Draining,
            Refusal::OutOfFiles,
            Refusal::AcceptFailed,
            Refusal::Evicted,
        ];
        reasons.extend(ErrorCode::ALL.map(Refusal::Upgrade));
        let mut slots: Vec<usize> = reasons.iter().map(|r| r.slot()).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), SLOTS);
        assert!(slots.iter().all(|&s| s < SLOTS));
        assert_eq!(Refusal::ConnectionLimit.status(), 503);
        assert_eq!(Refusal::HandshakeRate.status(), 429);
        assert_eq!(
            Refusal::Upgrade(ErrorCode::Unauthenticated).name(),
            "UNAUTHENTICATED"
        );
        assert_eq!(Refusal::Upgrade(ErrorCode::Unauthenticated).status(), 401);
    }
}
