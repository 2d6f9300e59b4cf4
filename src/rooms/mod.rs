//! Rooms: who is in which room, and how a room message reaches them.
//!
//! Two halves, both sans-IO:
//! - `table`: the owner's view. Each room is owned by one shard
//!   (`owner_of`), which assigns its `seq`, keeps its history and presence
//!   and knows which shards have members. Serializing a room on one thread
//!   is what orders it.
//! - `local`: each shard's member lists, room -> connection keys, used for
//!   the fan-out of a frame the owner encoded once.
//!
//! `wire` writes the texts and frames. The reactor moves messages between
//! shards; this module never touches a channel or a socket.

pub mod local;
pub mod table;

/// The shard that owns `room`: a stable hash (FNV-1a) of its name.
pub fn owner_of(room: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_stable_and_spread() {
        assert_eq!(owner_of("lobby", 4), owner_of("lobby", 4));
        let mut counts = [0; 4];
        for i in 0..1000 {
            counts[owner_of(&format!("room-{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
        assert_eq!(owner_of("x", 1), 0);
    }
}
