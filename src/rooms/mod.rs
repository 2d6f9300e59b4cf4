//! Rooms: who is in which room, who orders it, and how a room message
//! reaches every member. Sans-IO throughout: the reactor feeds the router
//! requests, bus messages, bridge answers and the time, and carries out
//! what it returns; nothing here touches a socket, a channel or a clock.
//!
//! - `router`: one shard's room protocol (join, leave, publish,
//!   `user:send`, `system:broadcast`, presence, recovery), as requester,
//!   room owner and member side.
//! - `sequencer`: the one seam between local and Redis sequencing;
//!   `cluster` is the Redis side of it, `table` the local one (and, in
//!   cluster mode, the owner's count of this node's members).
//! - `local`: each shard's member lists, walked for a fan-out; `users`:
//!   each shard's `/ws` connections per user; `gather`: the counts of a
//!   `user:send` or broadcast across shards.
//! - `delta`: section 14's delta members and what each was last queued;
//!   `keys`: the map keyed by connection keys that it looks up per member.
//! - `hash`: the keyed fast hasher of the maps keyed by room names that
//!   are looked up on every message.
//! - `notes`: what the rooms notice for webhooks (one process).
//! - `api`: the Server API's calls carried out across shards and nodes.
//! - `bus`: the messages between shards; `outlet`: the interface through
//!   which the router reaches its shard's connections.
//!
//! Each room is owned by one shard (`owner_of`); serializing a room on one
//! thread is what orders it. The frames themselves are written by
//! `proto::wire`, once per message.

pub mod api;
pub mod bus;
pub mod cluster;
pub mod delta;
pub mod gather;
pub mod hash;
pub mod keys;
pub mod local;
pub mod notes;
pub mod outlet;
pub mod paced;
pub mod router;
pub mod sequencer;
pub mod table;
pub mod users;

pub use router::{Asker, Router, RouterConfig, Time};

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
mod tests;
