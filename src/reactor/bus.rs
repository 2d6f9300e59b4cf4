//! The messages shards send each other about rooms, users and replies.
//!
//! Each shard has one inbound channel; a sender batches what it has for a
//! shard during one event-loop turn and sends it as one `Command::Bus` with
//! one wake-up. Messages between two shards stay in order, which is what
//! keeps every room's messages in `seq` order on every shard.

use std::sync::Arc;

use std::time::Instant;

use crate::proto::JoinRecovery;
use crate::proto::reply::OwnedId;
pub use crate::reactor::fanout::Fanout;

/// A connection anywhere in the process. `id` guards against a slab key
/// reused by a newer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub shard: usize,
    pub key: usize,
    pub id: u64,
}

/// Who hears the `seq` of a published message.
#[derive(Debug)]
pub enum PublishAnswer {
    /// Nobody: a WebSocket message without an `id`.
    Nobody,
    /// A WebSocket client, in an ack with its `id`.
    Ack(OwnedId),
    /// An HTTP publisher: message `index` of its request body.
    Http { index: usize },
}

impl PublishAnswer {
    /// The answer a WebSocket message with this `id` asks for.
    pub fn ack(id: Option<OwnedId>) -> Self {
        id.map_or(Self::Nobody, Self::Ack)
    }
}

/// One message between shards.
#[derive(Debug)]
pub enum BusMsg {
    /// To a room's owner: count a connection in and answer with the join ack.
    Join {
        room: Arc<str>,
        conn: ConnRef,
        /// The token's `sub`, shared with the connection's claims.
        user: Arc<str>,
        name: Option<Box<str>>,
        recovery: JoinRecovery,
        rejoin: bool,
        id: Option<OwnedId>,
    },
    /// To a room's owner: a connection of `user` on `shard` left.
    Leave {
        room: Arc<str>,
        shard: usize,
        user: Arc<str>,
    },
    /// To a room's owner: sequence, record and fan out a room event.
    Publish {
        room: Arc<str>,
        event: Box<str>,
        data: Box<[u8]>,
        from: Arc<str>,
        sender: ConnRef,
        echo: bool,
        /// Who hears the `seq` back.
        answer: PublishAnswer,
        /// When the publisher's shard read it, for the fan-out latency.
        read_at: Instant,
    },
    /// To a room's owner: answer `presence:get`.
    PresenceGet {
        room: Arc<str>,
        conn: ConnRef,
        id: Option<OwnedId>,
    },
    /// To a shard with members: queue `frame` for its members of `room`.
    Deliver {
        room: Arc<str>,
        frame: Arc<[u8]>,
        exclude: Option<ConnRef>,
        fanout: Fanout,
    },
    /// To the joiner's shard: the owner's answer to `Join`.
    Joined {
        room: Arc<str>,
        conn: ConnRef,
        accepted: bool,
        reply: Option<Vec<u8>>,
    },
    /// To a connection's shard: a reply to queue for it.
    Reply { conn: ConnRef, text: Vec<u8> },
    /// To an HTTP publisher's shard: message `index` of its request got `seq`.
    Published {
        conn: ConnRef,
        index: usize,
        seq: u64,
    },
    /// To an HTTP publisher's shard: message `index` of its request was
    /// refused (cluster mode, Redis away).
    PublishRefused { conn: ConnRef, index: usize },
    /// To every shard: deliver to each connection of `to`, then count.
    UserSend {
        to: Box<str>,
        frame: Arc<[u8]>,
        exclude: ConnRef,
        gather: u64,
    },
    /// To every shard: deliver to each `/ws` connection, then count.
    Broadcast {
        frame: Arc<[u8]>,
        exclude: ConnRef,
        gather: u64,
    },
    /// To the owner of the online set (cluster mode): a `/ws` connection
    /// of `user` opened (`up`) or closed.
    Online { user: Arc<str>, up: bool },
    /// To the shard gathering counts for a `user:send` or broadcast ack.
    Counted { gather: u64, count: usize },
}
