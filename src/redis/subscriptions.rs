//! Which room channels a node listens to: a room's channel is subscribed
//! when the first of the node's shards has a member in it and unsubscribed
//! when the last one has none (Socket.IO's per-room subscriptions), so a
//! node only receives the rooms it serves, and Redis work per room message
//! is one PUBLISH whatever the number of members.
//!
//! Sans-IO: it says which SUBSCRIBE / UNSUBSCRIBE to send; the bridge
//! sends them, and after a reconnect asks for every channel again.

use std::collections::HashMap;
use std::sync::Arc;

/// What to send to the subscriber connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
}

/// Per room, the set of shards with members there, as a bit set (a node
/// has at most 64 shards: `--shards` is bounded by the cores).
#[derive(Debug, Default)]
pub struct Subscriptions {
    rooms: HashMap<Arc<str>, u64>,
}

impl Subscriptions {
    /// Shard `shard` (below 64) now has members in `room`.
    pub fn shard_joined(&mut self, room: &Arc<str>, shard: usize) -> Option<Change> {
        let bit = 1u64 << shard;
        let shards = self.rooms.entry(room.clone()).or_insert(0);
        let first = *shards == 0;
        *shards |= bit;
        first.then(|| Change::Subscribe(room.clone()))
    }

    /// Shard `shard` has no member left in `room`.
    pub fn shard_left(&mut self, room: &str, shard: usize) -> Option<Change> {
        let shards = self.rooms.get_mut(room)?;
        *shards &= !(1u64 << shard);
        if *shards != 0 {
            return None;
        }
        let (room, _) = self.rooms.remove_entry(room)?;
        Some(Change::Unsubscribe(room))
    }

    /// The shared name of a room some shard serves.
    pub fn room(&self, name: &str) -> Option<&Arc<str>> {
        self.rooms.get_key_value(name).map(|(room, _)| room)
    }

    /// Whether members of `room` are on shard `shard`.
    pub fn has(&self, room: &str, shard: usize) -> bool {
        self.rooms.get(room).is_some_and(|s| s & (1 << shard) != 0)
    }

    /// The shards with members in `room`, lowest first.
    pub fn shards_of(&self, room: &str) -> impl Iterator<Item = usize> + '_ {
        let shards = self.rooms.get(room).copied().unwrap_or(0);
        (0..64).filter(move |s| shards & (1 << s) != 0)
    }

    /// Every room to subscribe again on a new connection.
    pub fn rooms(&self) -> impl Iterator<Item = &Arc<str>> {
        self.rooms.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_shard_in_subscribes_and_the_last_out_unsubscribes() {
        let mut subs = Subscriptions::default();
        let lobby: Arc<str> = "lobby".into();
        assert_eq!(
            subs.shard_joined(&lobby, 0),
            Some(Change::Subscribe(lobby.clone()))
        );
        assert_eq!(subs.shard_joined(&lobby, 3), None);
        assert_eq!(subs.shard_joined(&lobby, 3), None);
        assert_eq!(subs.shards_of("lobby").collect::<Vec<_>>(), [0, 3]);
        assert!(Arc::ptr_eq(subs.room("lobby").unwrap(), &lobby));
        assert_eq!(subs.shard_left("lobby", 0), None);
        assert!(!subs.has("lobby", 0) && subs.has("lobby", 3));
        assert_eq!(
            subs.shard_left("lobby", 3),
            Some(Change::Unsubscribe(lobby.clone()))
        );
        assert_eq!(subs.shard_left("lobby", 3), None);
        assert_eq!(subs.rooms().count(), 0);
    }

    #[test]
    fn after_a_reconnect_every_room_served_is_listed() {
        let mut subs = Subscriptions::default();
        for (i, room) in ["a", "b", "c"].iter().enumerate() {
            subs.shard_joined(&Arc::from(*room), i);
        }
        subs.shard_left("b", 1);
        let mut rooms: Vec<&str> = subs.rooms().map(|r| &**r).collect();
        rooms.sort_unstable();
        assert_eq!(rooms, ["a", "c"]);
    }
}
