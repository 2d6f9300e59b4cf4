//! The order check of one subscriber: the last `seq` it got in each room
//! it joined, starting from the `seq` its join's ack reported.
//!
//! Owns nothing but those numbers; what a message is and which room it
//! names is the worker's to read.

/// The last `seq` per joined room of one subscriber.
#[derive(Debug, Default)]
pub struct RoomSeqs {
    /// The rooms joined, with the last `seq` seen in each.
    rooms: Vec<(usize, u64)>,
}

impl RoomSeqs {
    /// A subscriber of `rooms` (distinct), none of them acknowledged yet.
    pub fn new(rooms: impl IntoIterator<Item = usize>) -> Self {
        Self {
            rooms: rooms.into_iter().map(|room| (room, 0)).collect(),
        }
    }

    /// The rooms, in the order they are joined.
    pub fn rooms(&self) -> impl Iterator<Item = usize> + '_ {
        self.rooms.iter().map(|&(room, _)| room)
    }

    /// The last `seq` seen in `room` (its ack's, or an event's).
    pub fn last(&self, room: usize) -> Option<u64> {
        self.rooms
            .iter()
            .find(|(r, _)| *r == room)
            .map(|&(_, last)| last)
    }

    /// `room`'s join was acknowledged at `seq`: its events come after.
    pub fn acked(&mut self, room: usize, seq: u64) {
        if let Some(last) = self.last_mut(room) {
            *last = seq;
        }
    }

    /// An event of `room` numbered `seq` arrived; returns whether it came
    /// after the last one of that room. An event of a room not joined is
    /// never in order.
    pub fn arrived(&mut self, room: usize, seq: u64) -> bool {
        let Some(last) = self.last_mut(room) else {
            return false;
        };
        let in_order = seq > *last;
        *last = (*last).max(seq);
        in_order
    }

    fn last_mut(&mut self, room: usize) -> Option<&mut u64> {
        self.rooms
            .iter_mut()
            .find(|(r, _)| *r == room)
            .map(|(_, last)| last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_room_starts_at_its_ack() {
        let mut seqs = RoomSeqs::new([3, 4]);
        seqs.acked(3, 10);
        seqs.acked(9, 1);
        assert_eq!(seqs.rooms().collect::<Vec<_>>(), [3, 4]);
        assert!(!seqs.arrived(3, 10) && seqs.arrived(3, 11));
        assert!(seqs.arrived(4, 1), "not acked yet: from 0");
        assert!(!seqs.arrived(9, 2), "a room not joined");
        assert_eq!(
            (seqs.last(3), seqs.last(4), seqs.last(9)),
            (Some(11), Some(1), None)
        );
    }

    #[test]
    fn order_is_per_room() {
        let mut seqs = RoomSeqs::new([0, 1]);
        seqs.acked(0, 10);
        seqs.acked(1, 0);
        assert!(seqs.arrived(1, 1), "room 1 starts at its own ack");
        assert!(!seqs.arrived(0, 10), "not after room 0's ack");
        assert!(seqs.arrived(0, 11));
        assert!(seqs.arrived(1, 2), "room 0's seq does not bear on room 1");
        assert!(!seqs.arrived(1, 2), "a repeat");
        assert!(seqs.arrived(1, 5), "a gap is in order");
        assert!(!seqs.arrived(2, 1), "a room not joined");
    }
}
