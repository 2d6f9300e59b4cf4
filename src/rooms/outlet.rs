//! The router's one way to its shard's connections: a small interface the
//! reactor implements over its slab.
//!
//! The router decides who gets which frame; the outlet queues it on each
//! connection (compressing a frame at most once per delivery for those that
//! agreed to permessage-deflate), puts the connection on the turn's flush
//! list, and counts what it queued. It never sees a room's state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::part::ConnInfo;
use crate::api::reply::Reply;

use crate::conn::ConnRef;
use crate::metrics::ShardMetrics;
use crate::rooms::bus::{Fanout, Twin};

/// What the router asks of its shard's connections.
pub trait Outlet {
    /// Queues `frame` for each connection of `keys` but `skip`; `room` is
    /// the room of a room event (`Fanout::RoomEvent`), for conflation.
    /// `twin`: the cell the frame's MessagePack twin is shared in by the
    /// shards it was sent to, made there at most once per node.
    /// Returns how many connections it reached.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        keys: &[usize],
        skip: Option<usize>,
        frame: &Arc<[u8]>,
        twin: &Twin,
        room: Option<&Arc<str>>,
        fanout: Fanout,
        now: Instant,
    ) -> usize;

    /// As `deliver` for a room event, noting in `queued` the keys it was
    /// queued for (not held back, dropped or left out): section 14's
    /// deltas follow what each member was queued, in either encoding.
    #[allow(clippy::too_many_arguments)]
    fn deliver_noting(
        &mut self,
        keys: &[usize],
        frame: &Arc<[u8]>,
        twin: &Twin,
        room: &Arc<str>,
        fanout: Fanout,
        now: Instant,
        queued: &mut Vec<usize>,
    ) -> usize;

    /// Queues `text` (if any) as the answer to a request `conn` made, if it
    /// is still here, and counts the answer as in (a close waiting for its
    /// last answer follows).
    fn answer(&mut self, conn: ConnRef, text: Option<&[u8]>, now: Instant);

    /// The owner's verdict on a join of `conn`; returns whether the
    /// connection is in the room now (it may have left meanwhile), to be
    /// put on the room's member list.
    fn settle_join(&mut self, conn: ConnRef, room: &str, accepted: bool) -> bool;

    /// Message `index` of a `POST /publish` got `seq` (`None`: refused).
    fn http_published(&mut self, conn: ConnRef, index: usize, seq: Option<u64>, now: Instant);

    /// This shard's counters.
    fn metrics(&self) -> &ShardMetrics;

    /// The replies of a Server API call, for its connection to answer.
    fn api_answered(&mut self, conn: ConnRef, batch: bool, replies: &[Reply], now: Instant);

    /// Closes connection `key` (if `conn_id` is `None` or its id) with
    /// `code` and `reason` after its queued output (section 12's
    /// `disconnect`); returns whether it did.
    fn api_disconnect(
        &mut self,
        key: usize,
        conn_id: Option<&str>,
        close: (u16, &str),
        now: Instant,
    ) -> bool;

    /// Puts connection `key` (if `conn_id` is `None` or its id) in `room`
    /// for a Server API `subscribe`: counts it as joining, as a
    /// `room:join` would.
    fn api_subscribe(&mut self, key: usize, conn_id: Option<&str>, room: &Arc<str>) -> ApiJoin;

    /// Takes connection `key` (if `conn_id` is `None` or its id) out of
    /// `room` and queues `room:unsubscribed`; returns it if it was in.
    fn api_unsubscribe(
        &mut self,
        key: usize,
        conn_id: Option<&str>,
        room: &Arc<str>,
        now: Instant,
    ) -> Option<(ConnRef, Arc<str>)>;

    /// Connection `key` as the Server API's `user` lists it.
    fn api_describe(&self, key: usize) -> Option<ConnInfo>;

    /// What the Server API reports of this node.
    fn node_facts(&self) -> NodeFacts;
}

/// What a connection did for a Server API `subscribe`.
#[derive(Debug)]
pub enum ApiJoin {
    /// It is in the room already (or joining): counted, told nothing.
    Already,
    /// Not this connection, or it is at `--max-rooms-per-connection`.
    Skipped,
    /// It is joining now: the owner is to be asked.
    Joining {
        conn: ConnRef,
        user: Arc<str>,
        name: Option<Box<str>>,
    },
}

/// This node as the Server API reports it.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// `--node-id`, or `api::STANDALONE_NODE`.
    pub node: Arc<str>,
    pub version: &'static str,
    pub uptime_seconds: u64,
    /// WebSocket connections on the node.
    pub connections: u64,
    /// Distinct users with a `/ws` connection on the node.
    pub users: u64,
    /// Cluster mode: the nodes whose heartbeat is recent, this one included.
    pub live_nodes: Arc<[Box<str>]>,
    /// How long a call waits for the other nodes (`--api-timeout`).
    pub api_timeout: Duration,
}
