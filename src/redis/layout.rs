//! Where a room lives in Redis: its server, its keys and its channel.
//!
//! Every key of a room carries the room name as a `{hash tag}`, so they
//! all land in one Redis Cluster slot, and the server a room goes to among
//! several `--redis` servers is chosen the way Redis Cluster chooses a
//! slot (CRC16 of the tag), so one layout suits both. Room names cannot
//! hold `{` or `}` (section 4's grammar), so the tag is always the whole
//! name. Node-level keys and channels (the online set, the direct and
//! Server API channels, heartbeats, node room indexes) share the tag
//! `NODE_TAG`, which no room name can be, so the functions that use them
//! together touch one slot. Pure functions of names; no connection here.

/// Whether `name` is 1 to `max_len` of `A-Z a-z 0-9 _ - .`: none of the
/// `/`, `:`, braces or spaces that keys, channels and channel payloads use
/// as separators. Node ids, key prefixes and epochs are such names.
pub fn is_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The Redis Cluster hash slot of `tag` (CRC16/XMODEM mod 16384).
pub fn slot(tag: &[u8]) -> u16 {
    crc16(tag) % 16_384
}

/// The hash tag of node-level keys and channels: `~` is outside the room
/// grammar, so no room shares their names (an empty `{}` would not do: Redis
/// Cluster then hashes the whole key, and they would spread over slots).
pub const NODE_TAG: &str = "~";

/// The hash tag `room`'s keys and channel carry: its name, or `NODE_TAG`
/// for the online set (the pseudo-room `redis::ONLINE`, empty).
pub fn tag_of(room: &str) -> &str {
    if room.is_empty() { NODE_TAG } else { room }
}

/// Which of `servers` (at least one) holds `room`.
pub fn server_of(room: &str, servers: usize) -> usize {
    usize::from(slot(room.as_bytes())) % servers.max(1)
}

/// The names of one room's keys and channel under `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeys {
    /// The last `seq` given out (`INCR`).
    pub seq: String,
    /// The room's current epoch.
    pub epoch: String,
    /// The history: a stream whose entry ids are `0-<seq>`.
    pub log: String,
    /// Presence: user -> connections in the cluster.
    pub users: String,
    /// Presence: user -> display name.
    pub names: String,
    /// Presence: `<node>/<user>` -> that node's connections.
    pub nodes: String,
    /// Presence: connections in the cluster.
    pub members: String,
    /// The pub/sub channel every node with members subscribes to.
    pub channel: String,
    /// This server's stream of webhook events (`webhooks`), which the
    /// functions add a room's transitions to.
    pub webhooks: String,
}

impl RoomKeys {
    pub fn new(prefix: &str, room: &str) -> Self {
        let base = format!("{prefix}:{{{}}}", tag_of(room));
        Self {
            seq: format!("{base}:seq"),
            epoch: format!("{base}:epoch"),
            log: format!("{base}:log"),
            users: format!("{base}:users"),
            names: format!("{base}:names"),
            nodes: format!("{base}:nodes"),
            members: format!("{base}:members"),
            channel: base,
            webhooks: webhooks(prefix),
        }
    }
}

/// The stream of webhook events on each server (section 13.1): the
/// functions add every transition they make there, and the one node that
/// sends webhooks reads it.
pub fn webhooks(prefix: &str) -> String {
    format!("{prefix}:webhooks")
}

/// Where the node that sends webhooks keeps how far it has read server
/// `index`'s stream: the id of the last event the backend acknowledged.
pub fn webhooks_cursor(prefix: &str, index: usize) -> String {
    format!("{prefix}:webhooks:cursor:{index}")
}

/// The sorted set of node heartbeats on each server: node -> unix ms.
pub fn heartbeats(prefix: &str) -> String {
    format!("{prefix}:{{{NODE_TAG}}}:heartbeats")
}

/// The set of rooms on one server where `node` counts connections, for
/// removing them when the node dies.
pub fn node_rooms(prefix: &str, node: &str) -> String {
    format!("{prefix}:{{{NODE_TAG}}}:node:{node}:rooms")
}

/// The Server API's channel for commands every node runs (section 12),
/// subscribed by every node on the server of the online set.
pub fn api_channel(prefix: &str) -> String {
    format!("{prefix}:{{{NODE_TAG}}}:api")
}

/// The channel of `node`'s Server API replies, on the same server as
/// `api_channel`. A node id holds no `:`, so it never names another one.
pub fn api_node_channel(prefix: &str, node: &str) -> String {
    format!("{prefix}:{{{NODE_TAG}}}:api:{node}")
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT` on a Redis 7 server.
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"bar"), 5_061);
        assert_eq!(slot(b"123456789"), 12_739);
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn every_key_of_a_room_shares_its_tag() {
        let keys = RoomKeys::new("roomcast", "prices:btc");
        assert_eq!(keys.seq, "roomcast:{prices:btc}:seq");
        assert_eq!(keys.epoch, "roomcast:{prices:btc}:epoch");
        assert_eq!(keys.log, "roomcast:{prices:btc}:log");
        assert_eq!(keys.channel, "roomcast:{prices:btc}");
    }

    #[test]
    fn api_channels_are_apart_from_room_and_direct_channels() {
        assert_eq!(api_channel("rc"), "rc:{~}:api");
        assert_eq!(api_node_channel("rc", "n-1"), "rc:{~}:api:n-1");
        // A room's channel always has its braces; the direct channel is
        // `<prefix>:direct`.
        assert_ne!(api_channel("rc"), RoomKeys::new("rc", "api").channel);
        assert_ne!(api_channel("rc"), crate::redis::direct_channel("rc"));
    }

    #[test]
    fn node_level_keys_and_channels_share_one_slot() {
        let online = RoomKeys::new("rc", "");
        assert_eq!(online.users, "rc:{~}:users");
        let names = [
            online.users,
            online.names,
            online.nodes,
            online.members,
            crate::redis::direct_channel("rc"),
            api_channel("rc"),
            api_node_channel("rc", "n-1"),
            heartbeats("rc"),
            node_rooms("rc", "n-1"),
        ];
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        for name in &names {
            assert!(name.starts_with("rc:{~}:"), "{name}");
        }
        assert_eq!(tag_of("lobby"), "lobby");
    }

    #[test]
    fn rooms_spread_over_servers_by_slot() {
        assert_eq!(server_of("anything", 1), 0);
        assert_eq!(server_of("foo", 2), 12_182 % 2);
        let used: std::collections::BTreeSet<usize> = (0..100)
            .map(|i| server_of(&format!("room-{i}"), 3))
            .collect();
        assert_eq!(used.len(), 3);
    }
}
