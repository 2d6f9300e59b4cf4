//! `maxRate` (section 14): one member's pace in one room, and a shard's
//! schedule of the paced members that hold an event back.
//!
//! A paced membership holds its interval (`1/maxRate`), the moment it may
//! be sent its next event and at most one pending frame: the newest event
//! that came too early, shared by reference with every other member given
//! that event, with the cells the node encodes it once in (its MessagePack
//! twin, its delta: `bus::Encodings`), so that sent at its slot it costs
//! no encoding of its own (nothing is kept per skipped event). While it holds one it
//! has exactly one entry in its shard's `Slots`, keyed by that moment; the
//! shard's loop wakes at the earliest and sends what is due.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rooms::bus::Encodings;

/// A room event held back: its frame and its fan-out's shared cells.
#[derive(Debug, Clone)]
pub struct Held {
    pub frame: Arc<[u8]>,
    pub made: Arc<Encodings>,
}

/// One member's pace in one room.
#[derive(Debug)]
pub struct Paced {
    pub key: usize,
    interval: Duration,
    /// When it may be sent its next event.
    next: Instant,
    /// The newest event not sent yet; its slot is `next`, in the schedule.
    pending: Option<Held>,
}

/// What became of an event offered to a paced member.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// Its slot has come: send it now. `unschedule`: the slot of the older
    /// event it replaces, which is no longer pending.
    Now { unschedule: Option<Instant> },
    /// Held back as the newest pending; `schedule`: the slot to put in the
    /// schedule, when nothing was pending before.
    Held { schedule: Option<Instant> },
}

impl Paced {
    /// A member that may be sent an event at once.
    pub fn new(key: usize, interval: Duration, now: Instant) -> Self {
        Self {
            key,
            interval,
            next: now,
            pending: None,
        }
    }

    /// A room event (`frame`, fanned out with the cells `made`) for this
    /// member at `now`.
    pub fn offer(&mut self, frame: &Arc<[u8]>, made: &Arc<Encodings>, now: Instant) -> Offered {
        if now >= self.next {
            let unschedule = self.pending.take().map(|_| self.next);
            self.next = now + self.interval;
            return Offered::Now { unschedule };
        }
        let held = Held {
            frame: frame.clone(),
            made: made.clone(),
        };
        let first = self.pending.replace(held).is_none();
        Offered::Held {
            schedule: first.then_some(self.next),
        }
    }

    /// A volatile event for this member at `now`: sent only into a free
    /// slot (it is due and nothing is held back), which it then uses up;
    /// otherwise it is left out, never held back nor put in place of a
    /// sequenced event, which a member can recover and a volatile cannot.
    pub fn offer_volatile(&mut self, now: Instant) -> bool {
        if now < self.next || self.pending.is_some() {
            return false;
        }
        self.next = now + self.interval;
        true
    }

    /// The slot of the pending event, if one is pending.
    pub fn slot(&self) -> Option<Instant> {
        self.pending.as_ref().map(|_| self.next)
    }

    /// Its slot came at `now`: the pending event, and the next slot moves
    /// a whole interval from now (a late wake-up never sends two events
    /// closer together than the interval).
    pub fn take_due(&mut self, now: Instant) -> Option<Held> {
        let held = self.pending.take()?;
        self.next = now + self.interval;
        Some(held)
    }

    /// A rejoin asked for `interval` (zero: no pace): the next slot comes
    /// no later than a new interval from now. Returns the pending event's old and new slot
    /// when it moved.
    pub fn repace(&mut self, interval: Duration, now: Instant) -> Option<(Instant, Instant)> {
        self.interval = interval;
        let latest = now + interval;
        if self.next <= latest {
            return None;
        }
        let old = self.next;
        self.next = latest;
        self.pending.as_ref().map(|_| (old, latest))
    }

    /// Whether its pace was removed (a zero interval): it is to be a
    /// plain member once its pending event is sent.
    pub fn is_unpaced(&self) -> bool {
        self.interval.is_zero()
    }
}

/// A shard's paced members holding an event back, by slot: one entry per
/// such membership.
#[derive(Debug, Default)]
pub struct Slots {
    waiting: BTreeSet<(Instant, Arc<str>, usize)>,
}

impl Slots {
    pub fn insert(&mut self, at: Instant, room: &Arc<str>, key: usize) {
        self.waiting.insert((at, room.clone(), key));
    }

    pub fn remove(&mut self, at: Instant, room: &Arc<str>, key: usize) {
        self.waiting.remove(&(at, room.clone(), key));
    }

    /// The earliest slot, for the shard's poll timeout.
    pub fn earliest(&self) -> Option<Instant> {
        self.waiting.first().map(|(at, _, _)| *at)
    }

    /// Takes the entry of the earliest slot if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Arc<str>, usize)> {
        if self.earliest()? > now {
            return None;
        }
        self.waiting.pop_first().map(|(_, room, key)| (room, key))
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Arc<[u8]> {
        Arc::from(text.as_bytes())
    }

    fn made() -> Arc<Encodings> {
        Arc::default()
    }

    #[test]
    fn the_first_event_goes_at_once_and_the_next_waits_an_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut paced = Paced::new(7, ms(500), t0);
        assert_eq!(
            paced.offer(&frame("a"), &made(), t0),
            Offered::Now { unschedule: None }
        );
        assert_eq!(
            paced.offer(&frame("b"), &made(), t0 + ms(10)),
            Offered::Held {
                schedule: Some(t0 + ms(500))
            }
        );
        assert_eq!(
            paced.offer(&frame("c"), &made(), t0 + ms(20)),
            Offered::Held { schedule: None },
            "one slot per membership"
        );
        assert_eq!(paced.take_due(t0 + ms(501)).unwrap().frame[..], b"c"[..]);
        assert_eq!(paced.slot(), None);
        assert_eq!(
            paced.offer(&frame("d"), &made(), t0 + ms(600)),
            Offered::Held {
                schedule: Some(t0 + ms(1001))
            }
        );
    }

    #[test]
    fn a_volatile_event_takes_only_a_free_slot_and_is_never_held() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut paced = Paced::new(7, second, start);
        assert!(paced.offer_volatile(start), "the first slot is free");
        assert!(!paced.offer_volatile(start), "the slot is used up");
        let sequenced = frame("s");
        assert_eq!(
            paced.offer(&sequenced, &made(), start),
            Offered::Held {
                schedule: Some(start + second)
            }
        );
        assert!(
            !paced.offer_volatile(start + second),
            "a held sequenced event keeps its slot"
        );
        assert!(Arc::ptr_eq(
            &paced.take_due(start + second).unwrap().frame,
            &sequenced
        ));
        assert!(paced.offer_volatile(start + 2 * second));
        assert_eq!(paced.slot(), None, "nothing held for a volatile event");
    }

    #[test]
    fn a_shorter_interval_brings_the_slot_forward_and_a_longer_one_does_not_delay_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut paced = Paced::new(1, ms(10_000), t0);
        paced.offer(&frame("a"), &made(), t0);
        paced.offer(&frame("b"), &made(), t0 + ms(1));
        assert_eq!(
            paced.repace(ms(100), t0 + ms(2)),
            Some((t0 + ms(10_000), t0 + ms(102)))
        );
        assert_eq!(paced.repace(ms(5_000), t0 + ms(3)), None);
        assert_eq!(paced.slot(), Some(t0 + ms(102)));
    }

    #[test]
    fn slots_come_out_in_time_order_and_only_when_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let room: Arc<str> = Arc::from("r");
        let mut slots = Slots::default();
        slots.insert(t0 + ms(20), &room, 2);
        slots.insert(t0 + ms(10), &room, 1);
        slots.insert(t0 + ms(30), &room, 3);
        slots.remove(t0 + ms(30), &room, 3);
        assert_eq!(slots.earliest(), Some(t0 + ms(10)));
        assert_eq!(slots.pop_due(t0 + ms(5)), None);
        assert_eq!(slots.pop_due(t0 + ms(25)), Some((room.clone(), 1)));
        assert_eq!(slots.pop_due(t0 + ms(25)), Some((room, 2)));
        assert_eq!(slots.pop_due(t0 + ms(100)), None);
        assert!(slots.is_empty());
    }
}
