//! The router's one way to its shard's connections: a small interface the
//! reactor implements over its slab.
//!
//! The router decides who gets which frame; the outlet queues it on each
//! connection (compressing a frame at most once per delivery for those that
//! agreed to permessage-deflate), puts the connection on the turn's flush
//! list, and counts what it queued. It never sees a room's state.

use std::sync::Arc;
use std::time::Instant;

use crate::conn::ConnRef;
use crate::metrics::ShardMetrics;
use crate::rooms::bus::Fanout;

/// What the router asks of its shard's connections.
pub trait Outlet {
    /// Queues `frame` for each connection of `keys` but `skip`; `room` is
    /// the room of a room event (`Fanout::RoomEvent`), for conflation.
    /// Returns how many connections it reached.
    fn deliver(
        &mut self,
        keys: &[usize],
        skip: Option<usize>,
        frame: &Arc<[u8]>,
        room: Option<&Arc<str>>,
        fanout: Fanout,
        now: Instant,
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
}
