//! The one decision of what becomes of output a client is slow to read
//! (section 8 of `docs/protocol.md`), sans-IO: from the bytes already
//! queued for the connection, the size and kind of the next message, the
//! bound and `--slow-consumer`, it says `Fate::Queue`, `Fate::HoldBack` or
//! `Fate::Close`. Every producer of a connection's bounded output asks it:
//! room events and presence (`Connection::deliver`), replies built while
//! handling the client's input (`websocket::BoundedSink`) and answers from
//! the rooms (`Connection::send_text`). It never touches the queue: the
//! caller carries the fate out.
//!
//! The rules, with `B` = `--max-write-buffer` and `pending` = the unsent
//! bytes of the connection's queue (whole frames, headers included, and the
//! unwritten rest of the frame in flight):
//!
//! 1. A message of `len` bytes (its whole frame) fits when the queue is
//!    empty, whatever its size, or when `pending + len <= limit`; the limit
//!    is `B` for a room event and `2 * B` for any other message (acks,
//!    errors, pongs, `/echo` echoes, presence, direct messages).
//! 2. A message that fits is queued, except rule 4.
//! 3. A message that does not fit closes the connection with 4008 (frames
//!    not yet started are discarded, the frame in flight is finished), except
//!    a room event under `drop` or `conflate` (rule 4). Other messages are
//!    never held back, whatever the policy.
//! 4. Under `drop` or `conflate`, a room event is held back (counted for
//!    `system:dropped`, or kept as its room's newest) when it does not fit,
//!    and also while older events are still held back, so that each room's
//!    events stay in `seq` order.
//! 5. What was held back is released (queued, before any newer room event)
//!    once `pending < B / 2`. The release itself is not bounded: it is one
//!    `system:dropped` notice or one frame per room the client is in.
//! 6. A volatile room event (section 14) is queued only while
//!    `pending <= B / 2`, else skipped for that connection: never held
//!    back, never a cause of 4008. Volatile events go first without.
//! 7. Not a fate but the same bound: once a non-empty queue would pass
//!    `B / 2`, it is written to the socket before more is queued, so the
//!    bound judges a client that falls behind rather than a burst that
//!    arrived within one turn of the event loop.
//!
//! Outside the bound, by design: the HTTP upgrade response, the server's
//! pings and its close frame (one small frame each), and, over TLS, the
//! records rustls has encrypted and not yet written (`tls::SEND_BUFFER_LIMIT`,
//! like the kernel's socket buffer). The TLS layer takes new plaintext from
//! the queue only once its previous records are out, so a slow TLS client's
//! backlog stays in the queue, where these rules judge it.

use crate::config::{Config, SlowConsumer};
use crate::conn::Delivery;

/// How a room event the client is too slow for is kept from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldBack {
    /// Lost for this client, and counted for its `system:dropped`.
    Drop,
    /// Kept as its room's newest undelivered event.
    Conflate,
}

/// What becomes of one message offered to a connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Queue it.
    Queue,
    /// Keep it from the client for now (rule 4).
    HoldBack(HoldBack),
    /// Leave it out for this client (rule 6: a volatile event).
    Skip,
    /// The client is a slow consumer: close with 4008.
    Close,
}

/// One connection's bound and what happens to room events past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backpressure {
    /// `--max-write-buffer`.
    bound: usize,
    /// `--slow-consumer`, `None` for `close`.
    hold_back: Option<HoldBack>,
}

impl Backpressure {
    #[inline]
    pub fn new(bound: usize, policy: SlowConsumer) -> Self {
        let hold_back = match policy {
            SlowConsumer::Close => None,
            SlowConsumer::Drop => Some(HoldBack::Drop),
            SlowConsumer::Conflate => Some(HoldBack::Conflate),
        };
        Self { bound, hold_back }
    }

    /// The server's `--max-write-buffer` and `--slow-consumer`.
    #[inline]
    pub fn of(config: &Config) -> Self {
        let group = &config.backpressure;
        Self::new(group.max_write_buffer, group.slow_consumer)
    }

    /// Whether a message of this kind may be held back (rule 4), so that
    /// whether anything is held back already matters to its fate.
    #[inline]
    pub fn holds_back(self, kind: Delivery) -> bool {
        kind == Delivery::RoomEvent && self.may_hold_back()
    }

    /// Whether anything is ever held back (`drop` or `conflate`); under
    /// `close` nothing is, and there is nothing to release.
    #[inline]
    pub fn may_hold_back(self) -> bool {
        self.hold_back.is_some()
    }

    /// The fate of a `len`-byte frame of `kind` offered to a queue with
    /// `pending` unsent bytes (rules 1 to 4); `holding_back` says whether
    /// events are still held back once the caller released what it may
    /// (`releases`).
    #[inline]
    pub fn fate(self, pending: usize, len: usize, kind: Delivery, holding_back: bool) -> Fate {
        let limit = match kind {
            Delivery::RoomEvent => self.bound,
            Delivery::Other => self.bound.saturating_mul(2),
            Delivery::Volatile => {
                return if pending <= self.bound / 2 {
                    Fate::Queue
                } else {
                    Fate::Skip
                };
            }
        };
        let fits = pending == 0 || pending.saturating_add(len) <= limit;
        match self.hold_back {
            Some(how) if kind == Delivery::RoomEvent && (holding_back || !fits) => {
                Fate::HoldBack(how)
            }
            _ if fits => Fate::Queue,
            _ => Fate::Close,
        }
    }

    /// Whether what was held back may be queued now (rule 5).
    #[inline]
    pub fn releases(self, pending: usize) -> bool {
        pending < self.bound / 2
    }

    /// Whether the queue should be written to the socket before `incoming`
    /// more bytes are queued (rule 7).
    #[inline]
    pub fn writes_through(self, pending: usize, incoming: usize) -> bool {
        pending != 0 && pending.saturating_add(incoming) > self.bound / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Delivery::{Other, RoomEvent};

    const B: usize = 1000;
    const POLICIES: [SlowConsumer; 3] = [
        SlowConsumer::Close,
        SlowConsumer::Drop,
        SlowConsumer::Conflate,
    ];

    /// What a message that does not fit becomes under `policy`.
    fn past_the_bound(kind: Delivery, policy: SlowConsumer) -> Fate {
        match (kind, policy) {
            (RoomEvent, SlowConsumer::Drop) => Fate::HoldBack(HoldBack::Drop),
            (RoomEvent, SlowConsumer::Conflate) => Fate::HoldBack(HoldBack::Conflate),
            _ => Fate::Close,
        }
    }

    fn limit(kind: Delivery) -> usize {
        match kind {
            RoomEvent => B,
            Other => 2 * B,
            Delivery::Volatile => B / 2,
        }
    }

    #[test]
    fn only_drop_and_conflate_ever_hold_back() {
        for policy in POLICIES {
            let rule = Backpressure::new(B, policy);
            let holds = matches!(past_the_bound(RoomEvent, policy), Fate::HoldBack(_));
            assert_eq!(rule.may_hold_back(), holds, "{policy:?}");
        }
    }

    #[test]
    fn a_volatile_event_is_queued_up_to_half_the_bound_and_skipped_past_it_never_closed() {
        for policy in POLICIES {
            let rule = Backpressure::new(B, policy);
            let fate =
                |pending, holding_back| rule.fate(pending, 100, Delivery::Volatile, holding_back);
            assert_eq!(fate(0, false), Fate::Queue, "{policy:?}");
            assert_eq!(fate(B / 2, false), Fate::Queue, "{policy:?}");
            assert_eq!(fate(B / 2, true), Fate::Queue, "{policy:?}");
            assert_eq!(fate(B / 2 + 1, false), Fate::Skip, "{policy:?}");
            assert_eq!(fate(10 * B, false), Fate::Skip, "{policy:?}");
            assert!(!rule.holds_back(Delivery::Volatile));
        }
    }

    #[test]
    fn each_kind_is_queued_up_to_its_limit_and_meets_the_policy_one_byte_past_it() {
        for policy in POLICIES {
            let rule = Backpressure::new(B, policy);
            for kind in [RoomEvent, Other] {
                let limit = limit(kind);
                let case = format!("{kind:?} under {policy:?}");
                assert_eq!(
                    rule.fate(400, limit - 401, kind, false),
                    Fate::Queue,
                    "{case}"
                );
                assert_eq!(
                    rule.fate(400, limit - 400, kind, false),
                    Fate::Queue,
                    "{case}"
                );
                assert_eq!(
                    rule.fate(400, limit - 399, kind, false),
                    past_the_bound(kind, policy),
                    "{case}"
                );
                assert_eq!(
                    rule.fate(limit, 1, kind, false),
                    past_the_bound(kind, policy)
                );
            }
        }
    }

    #[test]
    fn an_empty_queue_takes_any_one_message() {
        for policy in POLICIES {
            let rule = Backpressure::new(B, policy);
            for kind in [RoomEvent, Other] {
                assert_eq!(rule.fate(0, 10 * B, kind, false), Fate::Queue);
                assert_eq!(rule.fate(0, usize::MAX, kind, false), Fate::Queue);
                assert_eq!(
                    rule.fate(1, 10 * B, kind, false),
                    past_the_bound(kind, policy)
                );
            }
        }
    }

    #[test]
    fn while_events_are_held_back_newer_room_events_are_too_but_nothing_else() {
        for policy in [SlowConsumer::Drop, SlowConsumer::Conflate] {
            let rule = Backpressure::new(B, policy);
            assert!(rule.holds_back(RoomEvent));
            assert!(!rule.holds_back(Other));
            let held = past_the_bound(RoomEvent, policy);
            assert_eq!(rule.fate(B / 2, 1, RoomEvent, true), held);
            assert_eq!(rule.fate(B / 2, 1, Other, true), Fate::Queue);
        }
        let close = Backpressure::new(B, SlowConsumer::Close);
        assert!(!close.holds_back(RoomEvent) && !close.holds_back(Other));
    }

    #[test]
    fn held_back_events_are_released_below_half_the_bound() {
        let rule = Backpressure::new(B, SlowConsumer::Drop);
        assert!(rule.releases(0));
        assert!(rule.releases(B / 2 - 1));
        assert!(!rule.releases(B / 2));
    }

    #[test]
    fn a_queue_passing_half_the_bound_is_written_through_unless_empty() {
        let rule = Backpressure::new(B, SlowConsumer::Close);
        assert!(!rule.writes_through(0, 10 * B));
        assert!(!rule.writes_through(100, B / 2 - 100));
        assert!(rule.writes_through(100, B / 2 - 99));
        assert!(rule.writes_through(1, usize::MAX));
    }
}
