//! One shard's member lists: for each room with members on this shard, the
//! keys of those connections, ready to be walked for a fan-out.
//!
//! Join and leave are O(1) (a position index per room, swap-remove); the
//! fan-out walks a plain `Vec`. Knows keys, not connections.
//!
//! Members that joined with `maxRate` (section 14) are kept apart, each
//! with its pace (`paced`): a room event reaches the plain members as
//! before, and those paced members whose slot has come; the others hold it
//! back as their newest pending event, sent from the shard's `Slots` when
//! their slot comes. A room without paced members costs nothing more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rooms::bus::Encodings;
use crate::rooms::hash::FastMap;
use crate::rooms::keys::KeyMap;
use crate::rooms::paced::{Held, Offered, Paced, Slots};

/// How `maxRate` (section 14) applies to an event delivered in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Not at all: presence events, which carry no `seq` to show a skip.
    None,
    /// Sequenced room events: a paced member whose slot has not come holds
    /// the newest back for its slot.
    Conflate,
    /// Volatile events: a paced member gets one only into a free slot.
    FreeSlotOnly,
}

/// Where a member is on its room's lists.
#[derive(Debug, Clone, Copy)]
enum Place {
    Plain(usize),
    Paced(usize),
}

struct LocalRoom {
    /// The room's name, shared with the map's key and the slots.
    name: Arc<str>,
    members: Vec<usize>,
    paced: Vec<Paced>,
    positions: KeyMap<Place>,
}

impl LocalRoom {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            members: Vec::new(),
            paced: Vec::new(),
            positions: KeyMap::default(),
        }
    }

    fn take_plain(&mut self, position: usize) {
        self.members.swap_remove(position);
        if let Some(&moved) = self.members.get(position) {
            self.positions.insert(moved, Place::Plain(position));
        }
    }

    fn take_paced(&mut self, position: usize) -> Paced {
        let paced = self.paced.swap_remove(position);
        if let Some(moved) = self.paced.get(position) {
            self.positions.insert(moved.key, Place::Paced(position));
        }
        paced
    }

    fn add_plain(&mut self, key: usize) {
        self.positions.insert(key, Place::Plain(self.members.len()));
        self.members.push(key);
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.paced.is_empty()
    }
}

/// Paced events due at a slot: one frame (with its fan-out's shared
/// cells, so its MessagePack twin and delta are the node's one encoding)
/// for the `keys` of one room.
#[derive(Debug)]
pub struct Due {
    pub room: Arc<str>,
    pub event: Held,
    pub keys: Vec<usize>,
}

/// Rooms with members on this shard.
#[derive(Default)]
pub struct LocalRooms {
    rooms: FastMap<Arc<str>, LocalRoom>,
    /// Paced members holding an event back, by slot.
    slots: Slots,
    /// The recipients of a fan-out in a room with paced members.
    scratch: Vec<usize>,
}

impl LocalRooms {
    /// Adds connection `key` to `room`; false when it was already there.
    pub fn add(&mut self, room: &str, key: usize) -> bool {
        let local = match self.rooms.get_mut(room) {
            Some(local) => local,
            None => {
                let name: Arc<str> = room.into();
                self.rooms
                    .entry(name.clone())
                    .or_insert_with(|| LocalRoom::new(name))
            }
        };
        if local.positions.contains_key(&key) {
            return false;
        }
        local.add_plain(key);
        true
    }

    /// Removes connection `key` from `room` (and its pending event, if
    /// paced); false when it was not there.
    pub fn remove(&mut self, room: &str, key: usize) -> bool {
        let Some(local) = self.rooms.get_mut(room) else {
            return false;
        };
        let Some(place) = local.positions.remove(&key) else {
            return false;
        };
        match place {
            Place::Plain(position) => local.take_plain(position),
            Place::Paced(position) => {
                if let Some(at) = local.take_paced(position).slot() {
                    self.slots.remove(at, &local.name, key);
                }
            }
        }
        if local.is_empty() {
            self.rooms.remove(room);
        }
        true
    }

    /// Whether connection `key` is on `room`'s lists here.
    pub fn contains(&self, room: &str, key: usize) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|local| local.positions.contains_key(&key))
    }

    /// Sets the pace of member `key` of `room`: at most one room event per
    /// `interval`, or (`None`) every event at once. A member that held an
    /// event back is plain again once that event is sent, at once.
    pub fn set_pace(&mut self, room: &str, key: usize, interval: Option<Duration>, now: Instant) {
        let Some(local) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(&place) = local.positions.get(&key) else {
            return;
        };
        match (place, interval) {
            (Place::Plain(position), Some(interval)) => {
                local.take_plain(position);
                local.positions.insert(key, Place::Paced(local.paced.len()));
                local.paced.push(Paced::new(key, interval, now));
            }
            (Place::Paced(position), None) if local.paced[position].slot().is_none() => {
                local.take_paced(position);
                local.add_plain(key);
            }
            (Place::Paced(position), interval) => {
                let interval = interval.unwrap_or(Duration::ZERO);
                if let Some((old, new)) = local.paced[position].repace(interval, now) {
                    self.slots.remove(old, &local.name, key);
                    self.slots.insert(new, &local.name, key);
                }
            }
            (Place::Plain(_), None) => {}
        }
    }

    /// The plain members of `room` on this shard.
    pub fn members(&self, room: &str) -> &[usize] {
        self.rooms.get(room).map_or(&[], |local| &local.members)
    }

    /// Who gets `frame` (fanned out with the cells `made`) in `room` now:
    /// every member for `Pacing::None`
    /// (an event no pace applies to), else the plain members and those
    /// paced members (but `skip`) whose slot has come; for
    /// `Pacing::Conflate` the other paced members hold it back, for
    /// `Pacing::FreeSlotOnly` they go without.
    pub fn recipients(
        &mut self,
        room: &str,
        (frame, made): (&Arc<[u8]>, &Arc<Encodings>),
        skip: Option<usize>,
        pacing: Pacing,
        now: Instant,
    ) -> &[usize] {
        let Some(local) = self.rooms.get_mut(room) else {
            return &[];
        };
        let name = &local.name;
        if local.paced.is_empty() {
            return &local.members;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&local.members);
        for member in &mut local.paced {
            if pacing == Pacing::None {
                self.scratch.push(member.key);
                continue;
            }
            if skip == Some(member.key) {
                continue;
            }
            if pacing == Pacing::FreeSlotOnly {
                if member.offer_volatile(now) {
                    self.scratch.push(member.key);
                }
                continue;
            }
            match member.offer(frame, made, now) {
                Offered::Now { unschedule } => {
                    if let Some(at) = unschedule {
                        self.slots.remove(at, name, member.key);
                    }
                    self.scratch.push(member.key);
                }
                Offered::Held { schedule } => {
                    if let Some(at) = schedule {
                        self.slots.insert(at, name, member.key);
                    }
                }
            }
        }
        &self.scratch
    }

    /// When the earliest held-back event is due.
    pub fn next_slot(&self) -> Option<Instant> {
        self.slots.earliest()
    }

    /// The held-back events due at `now`, one `Due` per distinct frame, so
    /// each is written (and compressed) once for all its members.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let mut due: Vec<Due> = Vec::new();
        while let Some((room, key)) = self.slots.pop_due(now) {
            let Some(local) = self.rooms.get_mut(&room) else {
                continue;
            };
            let Some(&Place::Paced(position)) = local.positions.get(&key) else {
                continue;
            };
            let Some(event) = local.paced[position].take_due(now) else {
                continue;
            };
            if local.paced[position].is_unpaced() {
                // Its pace was removed while this event waited.
                local.take_paced(position);
                local.add_plain(key);
            }
            match due
                .iter_mut()
                .find(|d| Arc::ptr_eq(&d.event.frame, &event.frame))
            {
                Some(same) => same.keys.push(key),
                None => due.push(Due {
                    room,
                    event,
                    keys: vec![key],
                }),
            }
        }
        due
    }

    /// Paced members holding an event back, over every room.
    pub fn pending(&self) -> usize {
        self.slots.len()
    }

    /// Rooms with members here.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room has members here.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::packed;
    use crate::proto::wire;

    #[test]
    fn members_come_and_go_in_constant_time_order_aside() {
        let mut rooms = LocalRooms::default();
        for key in 0..5 {
            assert!(rooms.add("r", key));
        }
        assert!(!rooms.add("r", 3));
        assert!(rooms.remove("r", 1));
        assert!(!rooms.remove("r", 1));
        let mut members = rooms.members("r").to_vec();
        members.sort_unstable();
        assert_eq!(members, [0, 2, 3, 4]);
        for key in [0, 2, 3, 4] {
            assert!(rooms.remove("r", key));
        }
        assert!(rooms.is_empty());
        assert!(rooms.members("r").is_empty());
    }

    #[test]
    fn paced_and_plain_positions_stay_right_and_leaves_drop_their_slots() {
        let now = Instant::now();
        let second = Some(Duration::from_secs(1));
        let frame: Arc<[u8]> = Arc::from(&b"e"[..]);
        let event = (&frame, &Arc::default());
        let mut rooms = LocalRooms::default();
        for key in 0..20 {
            rooms.add("r", key);
        }
        for key in (0..20).step_by(2) {
            rooms.set_pace("r", key, second, now);
        }
        let mut first: Vec<usize> = rooms
            .recipients("r", event, None, Pacing::Conflate, now)
            .to_vec();
        first.sort_unstable();
        assert_eq!(
            first,
            (0..20).collect::<Vec<_>>(),
            "a first event goes to all"
        );
        let mut second_event = rooms
            .recipients("r", event, None, Pacing::Conflate, now)
            .to_vec();
        second_event.sort_unstable();
        assert_eq!(second_event, (1..20).step_by(2).collect::<Vec<_>>());
        assert_eq!(rooms.pending(), 10);
        for key in (0..20).step_by(4) {
            assert!(rooms.remove("r", key));
        }
        assert_eq!(rooms.pending(), 5);
        for key in 0..20 {
            assert_eq!(rooms.contains("r", key), key % 4 != 0, "{key}");
        }
        let due = rooms.take_due(now + Duration::from_secs(1));
        assert_eq!(due.len(), 1, "one frame for all");
        let mut keys = due[0].keys.clone();
        keys.sort_unstable();
        assert_eq!(keys, [2, 6, 10, 14, 18]);
        for key in 0..20 {
            rooms.remove("r", key);
        }
        assert!(rooms.is_empty());
        assert_eq!(rooms.pending(), 0);
    }

    #[test]
    fn positions_stay_right_after_many_swaps() {
        let mut rooms = LocalRooms::default();
        for key in 0..100 {
            rooms.add("r", key);
        }
        for key in (0..100).step_by(3) {
            assert!(rooms.remove("r", key));
        }
        for key in 0..100 {
            assert_eq!(rooms.members("r").contains(&key), key % 3 != 0);
            assert_eq!(rooms.remove("r", key), key % 3 != 0);
        }
    }

    #[test]
    fn a_held_back_event_keeps_its_fan_outs_twin() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let event = |seq| {
            let frame = wire::room_frame("e", "r", b"{\"n\":1}", "u", seq, 7);
            (frame, Arc::new(Encodings::default()))
        };
        let mut rooms = LocalRooms::default();
        rooms.add("r", 1);
        rooms.add("r", 2);
        rooms.set_pace("r", 2, Some(second), now);
        let (first, made) = event(1);
        rooms.recipients("r", (&first, &made), None, Pacing::Conflate, now);
        let (held, made) = event(2);
        let now_to = rooms.recipients("r", (&held, &made), None, Pacing::Conflate, now);
        assert_eq!(now_to, [1], "the paced member holds it back");
        let plain = packed::twin(&made.twin, &held).expect("a twin").clone();
        let due = rooms.take_due(now + second);
        let due = &due[0].event;
        let paced = packed::twin(&due.made.twin, &due.frame).expect("a twin");
        assert!(Arc::ptr_eq(&plain, paced), "one MessagePack twin per node");
    }
}
