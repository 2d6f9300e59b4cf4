//! Why a node refused an upgrade or a connection, as WARN lines: at most
//! one line per reason a second, carrying how many refusals of that
//! reason were held back since its last line, so that a storm of refusals
//! names its cause without flooding the log. What a storm held back at its
//! end is written by the shards' sweep once the second is over.
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

    /// Every reason, each once.
    fn all() -> impl Iterator<Item = Refusal> {
        [
            Self::ConnectionLimit,
            Self::AddressLimit,
            Self::HandshakeRate,
            Self::Draining,
            Self::OutOfFiles,
            Self::AcceptFailed,
            Self::Evicted,
        ]
        .into_iter()
        .chain(ErrorCode::ALL.map(Self::Upgrade))
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
        if !self.due(now) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }

    /// `Some(n)` when `n` events were held back and a line is due at
    /// `now`: the count of a storm that ended within its second is told
    /// once the second is over, not at the next event.
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.held_back == 0 || !self.due(now) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }

    fn due(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval)
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
    if let Some(held_back) = limiter(refusal).note(Instant::now()) {
        write_line(refusal, held_back, detail);
    }
}

/// Writes the count of every reason whose refusals were held back and
/// whose line is due: called from each shard's periodic sweep.
pub fn flush_held_back() {
    if !log::enabled(Level::Warn) {
        return;
    }
    let now = Instant::now();
    for refusal in Refusal::all() {
        if let Some(held_back) = limiter(refusal).flush(now) {
            write_line(refusal, held_back, "");
        }
    }
}

fn limiter(refusal: Refusal) -> std::sync::MutexGuard<'static, LineLimiter> {
    LIMITERS[refusal.slot()]
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_line(refusal: Refusal, held_back: u64, detail: &str) {
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
    fn a_flush_tells_what_a_finished_storm_held_back_once_its_second_is_over() {
        let mut limiter = LineLimiter::new(ms(1000));
        let t0 = Instant::now();
        assert_eq!(limiter.flush(t0), None);
        assert_eq!(limiter.note(t0), Some(0));
        assert_eq!(limiter.flush(t0 + ms(2000)), None, "nothing held back");
        assert_eq!(limiter.note(t0 + ms(2000)), Some(0));
        assert_eq!(limiter.note(t0 + ms(2001)), None);
        assert_eq!(limiter.note(t0 + ms(2002)), None);
        assert_eq!(limiter.flush(t0 + ms(2500)), None, "not due yet");
        assert_eq!(limiter.flush(t0 + ms(3000)), Some(2));
        assert_eq!(limiter.flush(t0 + ms(9000)), None, "told once");
        // The flush counts as a line: the next event waits its second.
        assert_eq!(limiter.note(t0 + ms(3500)), None);
        assert_eq!(limiter.flush(t0 + ms(4000)), Some(1));
    }

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        let mut slots: Vec<usize> = Refusal::all().map(Refusal::slot).collect();
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
