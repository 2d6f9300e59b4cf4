//! One shard's member lists: for each room with members on this shard, the
//! keys of those connections, ready to be walked for a fan-out.
//!
//! Join and leave are O(1) (a position index per room, swap-remove); the
//! fan-out walks a plain `Vec`. Knows keys, not connections.

use std::collections::HashMap;

#[derive(Default)]
struct LocalRoom {
    members: Vec<usize>,
    positions: HashMap<usize, usize>,
}

/// Rooms with members on this shard.
#[derive(Default)]
pub struct LocalRooms {
    rooms: HashMap<Box<str>, LocalRoom>,
}

impl LocalRooms {
    /// Adds connection `key` to `room`; false when it was already there.
    pub fn add(&mut self, room: &str, key: usize) -> bool {
        let local = match self.rooms.get_mut(room) {
            Some(local) => local,
            None => self.rooms.entry(room.into()).or_default(),
        };
        if local.positions.contains_key(&key) {
            return false;
        }
        local.positions.insert(key, local.members.len());
        local.members.push(key);
        true
    }

    /// Removes connection `key` from `room`; false when it was not there.
    pub fn remove(&mut self, room: &str, key: usize) -> bool {
        let Some(local) = self.rooms.get_mut(room) else {
            return false;
        };
        let Some(position) = local.positions.remove(&key) else {
            return false;
        };
        local.members.swap_remove(position);
        if let Some(&moved) = local.members.get(position) {
            local.positions.insert(moved, position);
        }
        if local.members.is_empty() {
            self.rooms.remove(room);
        }
        true
    }

    /// The connections in `room` on this shard.
    pub fn members(&self, room: &str) -> &[usize] {
        self.rooms.get(room).map_or(&[], |local| &local.members)
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
}
