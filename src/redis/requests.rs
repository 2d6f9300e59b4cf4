//! What a node asks of the cluster's Redis, and what comes back unasked:
//! the messages between the room router (`rooms`) and the Redis bridge
//! thread (`reactor::bridge`), which carries them over the network.
//!
//! Plain data: no sockets, no threads; `A` is whatever the asker wants
//! handed back with the outcome.

use std::sync::Arc;

use crate::conn::ConnRef;
use crate::conn::packed::Twin;
use crate::redis::{HistoryQuery, NodeUser, PresenceChange};

/// What the bridge is asked to do.
#[derive(Debug)]
pub enum BridgeRequest<A> {
    /// Sequence a room event whose text is `head`, its seq, `tail`;
    /// `origin` (an `Origin` of this node) travels with it on the channel.
    Publish {
        room: Arc<str>,
        head: Vec<u8>,
        tail: Vec<u8>,
        origin: String,
        answer: A,
    },
    /// A volatile event (section 14) whose text is `text`: one plain
    /// publish on the room's channel, no sequencing, no history; `origin`
    /// (an `Origin` of this node) travels with it. Answered as a `Send`.
    Volatile {
        room: Arc<str>,
        text: Vec<u8>,
        origin: String,
        answer: A,
    },
    /// Read a room's history for a join and count the joiner in, in
    /// order with the room's events: the room must be served (`Serve` sent
    /// first) for that order to hold.
    Join {
        room: Arc<str>,
        query: OwnedQuery,
        change: Box<PresenceChange>,
        answer: A,
    },
    /// Count a connection out of a room.
    Leave {
        room: Arc<str>,
        change: Box<PresenceChange>,
    },
    /// The room's presence in the cluster (`presence:get`).
    PresenceGet {
        room: Arc<str>,
        answer: A,
    },
    /// Read the room's history as a join would, without joining (the
    /// Server API's `history`).
    History {
        room: Arc<str>,
        query: OwnedQuery,
        answer: A,
    },
    /// Drop the room's history, and the room when no node has members in
    /// it (the Server API's `history_remove`).
    HistoryRemove {
        room: Arc<str>,
        answer: A,
    },
    /// The distinct users in the cluster of each of `rooms` (the Server
    /// API's `rooms`), answered together, in order.
    RoomUsers {
        rooms: Vec<Arc<str>>,
        answer: A,
    },
    /// Count `n` connections of a user in (or out) of the online set that
    /// `Send` counts.
    Online {
        change: Box<PresenceChange>,
        n: i64,
        /// This node's first connection in the online set.
        first_here: bool,
        /// This node has no connection left in the online set.
        last_here: bool,
    },
    /// A direct message (`to`) or a broadcast (`None`), `text` its
    /// message text: to every node, answered with the connections it is for.
    Send {
        to: Option<Box<str>>,
        text: Vec<u8>,
        origin: String,
        answer: A,
    },
    /// A Server API message (section 12), opaque here: to every node
    /// (`None`, on `<prefix>:api`) or to one node's replies channel
    /// (`<prefix>:api:<node>`), this node included when it is one of
    /// them. Nothing answers it: while Redis is away, over the pipeline's
    /// bound or over `api::MAX_API_PAYLOAD` it is dropped, and once the
    /// bridge has stopped it is refused with nobody to tell, so whoever
    /// waits for replies sees the nodes that did not answer in time.
    ApiCast {
        to: Option<Box<str>>,
        payload: Vec<u8>,
    },
    /// Set this node's connections in `room` to exactly `users`.
    Sync {
        room: Arc<str>,
        users: Vec<NodeUser>,
    },
    /// Shard `shard` now has members in `room`: its events must come here.
    Serve {
        room: Arc<str>,
        shard: usize,
    },
    /// Shard `shard` has no member left in `room`.
    Unserve {
        room: Arc<str>,
        shard: usize,
    },
    Stop,
}

/// A join's `history`, `since` and `epoch`, owned to cross threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedQuery {
    pub history: Option<u64>,
    pub since: Option<u64>,
    pub epoch: Option<String>,
}

impl OwnedQuery {
    pub fn as_query(&self) -> HistoryQuery<'_> {
        HistoryQuery {
            history: self.history,
            since: self.since,
            epoch: self.epoch.as_deref(),
        }
    }
}

/// Redis could not take the request (down, or over the in-flight bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// A room event from Redis for one shard's members.
#[derive(Debug, Clone)]
pub struct RoomEvent {
    pub room: Arc<str>,
    pub epoch: Arc<str>,
    pub seq: u64,
    /// The message as a server text frame, built once for every member;
    /// its text is exactly what Redis stored and published.
    pub frame: Arc<[u8]>,
    /// Set when this node published it.
    pub from_here: Option<FromHere>,
    /// A presence event (no `seq`, never in the history).
    pub presence: bool,
    /// A volatile event (section 14): no `seq`, never in the history, left
    /// out for members whose queue is above half its bound.
    pub volatile: bool,
}

/// A direct message or broadcast from the direct channel.
#[derive(Debug, Clone)]
pub struct DirectMessage {
    /// `None`: every `/ws` connection.
    pub to: Option<Arc<str>>,
    pub frame: Arc<[u8]>,
    /// The frame's MessagePack twin, made once for every shard.
    pub twin: Arc<Twin>,
    /// The sender, when it is a connection of this node.
    pub exclude: Option<ConnRef>,
}

/// What a node knows of an event it published itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FromHere {
    /// When the publisher's shard read it, in microseconds since start.
    pub read_micros: u64,
    /// The publisher, when it asked not to get its own message back.
    pub exclude: Option<ConnRef>,
}
