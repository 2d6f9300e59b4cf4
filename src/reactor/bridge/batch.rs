//! Publishes to one room go to Redis together, as one `roomcast_publish`
//! call (`docs/redis.md`, "Cost per message").
//!
//! What a function call costs Redis before it does anything is about three
//! bare `PUBLISH`es, more than the work of sequencing one message. So the
//! publishes to a room are collected, in the order they were taken, and
//! sent as one call when the room has no call of its own waiting for
//! Redis; while one waits, the next ones gather and go as one call once
//! its reply came (group commit). An idle room's publish goes at once;
//! under load, a room's calls carry what came while the last one was in
//! Redis, so the calls per second stay about what Redis answers and the
//! messages per call grow with the load. A batch is sent anyway as soon as
//! it holds `MAX_MESSAGES` or `MAX_BYTES`, so one call stays short.
//!
//! Order is kept: any other request sends every collected batch first,
//! waiting or not (`Bridge::on_request`), so the pipeline carries
//! everything in the order it was asked for, except that publishes to
//! different rooms between two other requests may pass each other: rooms
//! are sequenced independently.
//!
//! Owns the batches being collected and the calls each room has waiting,
//! sans-IO; the bridge sends them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::redis::Unsequenced;

/// Most messages in one call: Redis runs nothing else during a call, and
/// past a few dozen the call's own cost is already spread thin.
pub(super) const MAX_MESSAGES: usize = 64;
/// About the most bytes of message text in one call.
pub(super) const MAX_BYTES: usize = 1 << 20;

/// Publishes to one room, in the order they were taken.
#[derive(Debug)]
pub(super) struct Batch<A> {
    pub room: Arc<str>,
    pub messages: Vec<Unsequenced>,
    /// Whom each message's outcome goes to, by position.
    pub answers: Vec<A>,
    bytes: usize,
}

impl<A> Batch<A> {
    fn new(room: Arc<str>) -> Self {
        Self {
            room,
            messages: Vec::new(),
            answers: Vec::new(),
            bytes: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.messages.len() >= MAX_MESSAGES || self.bytes >= MAX_BYTES
    }
}

/// The batches being collected, one per room, in the order of their
/// rooms' first publish, and the calls each room has waiting.
#[derive(Debug)]
pub(super) struct Batches<A> {
    open: Vec<Batch<A>>,
    /// Where each room's batch is in `open`.
    by_room: HashMap<Arc<str>, usize>,
    /// The rooms with calls waiting for Redis, and how many.
    in_flight: HashMap<Arc<str>, usize>,
}

impl<A> Default for Batches<A> {
    fn default() -> Self {
        Self {
            open: Vec::new(),
            by_room: HashMap::new(),
            in_flight: HashMap::new(),
        }
    }
}

impl<A> Batches<A> {
    /// Adds a publish to its room's batch; a batch it fills comes back, to
    /// send now (the room's next publish starts another).
    pub(super) fn add(
        &mut self,
        room: Arc<str>,
        message: Unsequenced,
        answer: A,
    ) -> Option<Batch<A>> {
        let at = match self.by_room.get(&room) {
            Some(&at) => at,
            None => {
                self.by_room.insert(room.clone(), self.open.len());
                self.open.push(Batch::new(room));
                self.open.len() - 1
            }
        };
        let batch = &mut self.open[at];
        batch.bytes += message.size();
        batch.messages.push(message);
        batch.answers.push(answer);
        if !batch.is_full() {
            return None;
        }
        // An empty batch keeps the room's place, so no index moves.
        let fresh = Batch::new(batch.room.clone());
        Some(std::mem::replace(batch, fresh))
    }

    /// Every batch collected, in order, leaving none.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = Batch<A>> + use<A> {
        self.by_room.clear();
        std::mem::take(&mut self.open)
            .into_iter()
            .filter(|batch| !batch.messages.is_empty())
    }

    /// The batches of the rooms without a call waiting, in order; the
    /// others stay, to go once their room's call is answered.
    pub(super) fn take_ready(&mut self) -> Vec<Batch<A>> {
        let (ready, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .filter(|batch| !batch.messages.is_empty())
            .partition(|batch| !self.in_flight.contains_key(&batch.room));
        self.by_room.clear();
        for (at, batch) in held.iter().enumerate() {
            self.by_room.insert(batch.room.clone(), at);
        }
        self.open = held;
        ready
    }

    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// A call for `room` went to Redis.
    pub(super) fn sent(&mut self, room: &Arc<str>) {
        *self.in_flight.entry(room.clone()).or_default() += 1;
    }

    /// A call for `room` was answered, or will never be.
    pub(super) fn answered(&mut self, room: &str) {
        if let Some(calls) = self.in_flight.get_mut(room) {
            *calls -= 1;
            if *calls == 0 {
                self.in_flight.remove(room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Unsequenced {
        Unsequenced {
            head: text.as_bytes().to_vec(),
            tail: Vec::new(),
            origin: "-".into(),
        }
    }

    fn heads(batch: &Batch<u32>) -> Vec<&[u8]> {
        batch.messages.iter().map(|m| m.head.as_slice()).collect()
    }

    #[test]
    fn each_room_gets_one_batch_in_the_order_its_publishes_came() {
        let mut batches = Batches::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(batches.add(a.clone(), message("a1"), 1).is_none());
        assert!(batches.add(b.clone(), message("b1"), 2).is_none());
        assert!(batches.add(a.clone(), message("a2"), 3).is_none());
        assert!(!batches.is_empty());
        let all: Vec<Batch<u32>> = batches.take_all().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (&*all[0].room, heads(&all[0])),
            ("a", vec![&b"a1"[..], b"a2"])
        );
        assert_eq!(all[0].answers, [1, 3]);
        assert_eq!((&*all[1].room, heads(&all[1])), ("b", vec![&b"b1"[..]]));
        assert_eq!(all[1].answers, [2]);
        assert!(batches.is_empty());
        assert_eq!(batches.take_all().count(), 0);
        // A room's publishes after a taking start a batch of their own.
        assert!(batches.add(b.clone(), message("b2"), 4).is_none());
        let again: Vec<Batch<u32>> = batches.take_all().collect();
        assert_eq!(heads(&again[0]), [b"b2"]);
    }

    #[test]
    fn a_full_batch_comes_back_at_once_and_the_room_starts_another() {
        let mut batches = Batches::default();
        let room: Arc<str> = "r".into();
        let other: Arc<str> = "o".into();
        assert!(batches.add(other.clone(), message("o1"), 1000).is_none());
        for i in 0..MAX_MESSAGES - 1 {
            let answer = u32::try_from(i).unwrap();
            assert!(batches.add(room.clone(), message("m"), answer).is_none());
        }
        let full = batches
            .add(room.clone(), message("last"), 63)
            .expect("full");
        assert_eq!(full.messages.len(), MAX_MESSAGES);
        assert_eq!(full.answers, (0..64).collect::<Vec<u32>>());
        assert!(batches.add(room.clone(), message("next"), 64).is_none());
        assert!(batches.add(other.clone(), message("o2"), 1001).is_none());
        let rest: Vec<Batch<u32>> = batches.take_all().collect();
        assert_eq!(rest.len(), 2);
        assert_eq!(heads(&rest[0]), [b"o1", b"o2"], "other rooms untouched");
        assert_eq!(heads(&rest[1]), [b"next"]);
    }

    #[test]
    fn a_room_with_a_call_waiting_gathers_until_it_is_answered() {
        let mut batches = Batches::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        batches.add(a.clone(), message("a1"), 1);
        let ready = batches.take_ready();
        assert_eq!(
            heads(&ready[0]),
            [b"a1"],
            "an idle room's publish goes at once"
        );
        batches.sent(&a);
        batches.add(a.clone(), message("a2"), 2);
        batches.add(b.clone(), message("b1"), 3);
        batches.add(a.clone(), message("a3"), 4);
        let ready = batches.take_ready();
        assert_eq!(ready.len(), 1);
        assert_eq!((&*ready[0].room, heads(&ready[0])), ("b", vec![&b"b1"[..]]));
        assert!(!batches.is_empty(), "a's wait for its call");
        batches.add(a.clone(), message("a4"), 5);
        assert!(batches.take_ready().is_empty());
        batches.answered("a");
        let ready = batches.take_ready();
        assert_eq!(heads(&ready[0]), [b"a2", b"a3", b"a4"]);
        assert_eq!(ready[0].answers, [2, 4, 5]);
        assert!(batches.is_empty());
        // Two calls waiting: the room waits for both.
        batches.sent(&a);
        batches.sent(&a);
        batches.answered("a");
        batches.add(a.clone(), message("a5"), 6);
        assert!(batches.take_ready().is_empty());
        batches.answered("a");
        assert_eq!(batches.take_ready().len(), 1);
        // Another request sends what waits too, in order.
        batches.sent(&a);
        batches.add(b.clone(), message("b2"), 7);
        batches.add(a.clone(), message("a6"), 8);
        let all: Vec<Batch<u32>> = batches.take_all().collect();
        assert_eq!(all.iter().map(|b| &*b.room).collect::<Vec<_>>(), ["b", "a"]);
    }

    #[test]
    fn a_batch_is_bounded_in_bytes_too() {
        let mut batches = Batches::default();
        let room: Arc<str> = "r".into();
        let big = "x".repeat(MAX_BYTES / 2);
        assert!(batches.add(room.clone(), message(&big), 1).is_none());
        let full = batches.add(room.clone(), message(&big), 2).expect("1 MiB");
        assert_eq!(full.answers, [1, 2]);
        assert!(batches.is_empty() || batches.take_all().count() == 0);
    }
}
