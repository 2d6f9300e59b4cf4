//! The shard's side of the router's `Outlet`: frames and answers from the
//! rooms queued on this shard's connections.
//!
//! permessage-deflate, compress once: members whose connection compresses
//! get a second shared frame, the text deflated (RSV1 set) by this shard's
//! `Codec` on the first such member of the delivery and then shared by
//! reference like the plain one. A room message is thus deflated at most
//! once per shard with compressing members, on that shard's own thread:
//! no lock, and no work at all on a shard whose members do not compress.
//! Every connection given something goes on the turn's flush list once.
//!
//! MessagePack members (`roomcast.msgpack`) get the frame's MessagePack
//! twin from the cell the frame travels with (`conn::packed::Twin`),
//! converted by the first shard that needs it and shared by the others
//! (a paced member's held-back event keeps its cell), and compressed once
//! per delivery the same way for those that compress. No lock either way.

use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use crate::api::STANDALONE_NODE;
use crate::api::part::ConnInfo;
use crate::api::reply::Reply;
use crate::config::Config;
use crate::conn::Subscribing;
use crate::conn::compression::{Codec, SharedFrame};
use crate::conn::id::Issuer;
use crate::conn::packed::{self, Twin};
use crate::conn::report::Report;
use crate::conn::shard_frame::ShardFrame;
use crate::conn::{ConnRef, Delivered, Delivery};
use crate::metrics::ShardMetrics;
use crate::reactor::entry::{Entry, mark, write_through};
use crate::reactor::lifecycle;
use crate::reactor::shared::Shared;
use crate::rooms::bus::Fanout;
use crate::rooms::outlet::{ApiJoin, NodeFacts, Outlet};

/// A shard's connections, lent to the router for one call.
pub(super) struct ShardOutlet<'a> {
    pub conns: &'a mut Slab<Entry>,
    /// The turn's flush list.
    pub dirty: &'a mut Vec<usize>,
    pub codec: &'a mut Codec,
    pub config: &'a Config,
    /// For the connection ids on lifecycle lines.
    pub issuer: Issuer<'a>,
    pub metrics: &'a ShardMetrics,
    /// HTTP publishers whose response is queued: requests they pipelined
    /// meanwhile are read once the router call returns.
    pub refeed: &'a mut Vec<usize>,
    /// What the Server API reports of the node.
    pub shared: &'a Shared,
    /// This shard's index.
    pub shard: usize,
}

impl ShardOutlet<'_> {
    #[allow(clippy::too_many_arguments)]
    fn deliver_to(
        &mut self,
        keys: &[usize],
        skip: Option<usize>,
        (frame, twin): (&Arc<[u8]>, &Twin),
        room: Option<&Arc<str>>,
        fanout: Fanout,
        now: Instant,
        mut queued: Option<&mut Vec<usize>>,
    ) -> usize {
        let kind = match fanout {
            Fanout::RoomEvent { .. } => Delivery::RoomEvent,
            Fanout::Other => Delivery::Other,
            Fanout::Volatile => Delivery::Volatile,
        };
        let mut tally = Tally::default();
        // Wrapped once for the shard's members (`conn::shard_frame`).
        let mut shared = SharedFrame::new(ShardFrame::new(frame.clone()));
        let mut packed = None;
        for &key in keys {
            if skip == Some(key) {
                continue;
            }
            let Some(entry) = self.conns.get_mut(key) else {
                continue;
            };
            let compresses = entry.conn.compresses_out();
            let msgpack = entry.conn.speaks_msgpack();
            let frame = if msgpack {
                let Some(twin) = packed::twin(twin, frame) else {
                    continue;
                };
                packed
                    .get_or_insert_with(|| SharedFrame::new(ShardFrame::new(twin.clone())))
                    .for_member(compresses, self.codec)
            } else {
                shared.for_member(compresses, self.codec)
            };
            write_through(entry, self.metrics, frame.len(), self.config);
            let delivered = entry.conn.deliver(room, frame, kind, now, self.config);
            if let (Some(queued), Delivered::Queued) = (queued.as_deref_mut(), delivered) {
                queued.push(key);
            }
            tally.count(delivered);
            mark(entry, self.dirty, key);
        }
        tally.record(self.metrics, kind);
        if let Fanout::RoomEvent { read_at } = fanout {
            self.metrics.fanout_latency.observe(read_at.elapsed());
        }
        tally.reached
    }
}

impl Outlet for ShardOutlet<'_> {
    fn deliver(
        &mut self,
        keys: &[usize],
        skip: Option<usize>,
        frame: &Arc<[u8]>,
        twin: &Twin,
        room: Option<&Arc<str>>,
        fanout: Fanout,
        now: Instant,
    ) -> usize {
        self.deliver_to(keys, skip, (frame, twin), room, fanout, now, None)
    }

    fn deliver_noting(
        &mut self,
        keys: &[usize],
        frame: &Arc<[u8]>,
        twin: &Twin,
        room: &Arc<str>,
        fanout: Fanout,
        now: Instant,
        queued: &mut Vec<usize>,
    ) -> usize {
        let frame = (frame, twin);
        self.deliver_to(keys, None, frame, Some(room), fanout, now, Some(queued))
    }

    fn answer(&mut self, conn: ConnRef, text: Option<&[u8]>, now: Instant) {
        self.reply(conn, text, true, now);
    }

    fn settle_join(&mut self, conn: ConnRef, room: &str, accepted: bool) -> bool {
        let Some(entry) = live(self.conns, conn) else {
            return false;
        };
        if accepted {
            return entry.conn.in_room(room);
        }
        entry.conn.forget_room(room);
        false
    }

    fn http_published(&mut self, conn: ConnRef, index: usize, seq: Option<u64>, now: Instant) {
        let Some(entry) = live(self.conns, conn) else {
            return;
        };
        let answered = entry.conn.on_published(index, seq, now);
        if let Some((_, status)) = answered {
            lifecycle::reported(&entry.conn, self.issuer, &Report::publish_answered(status));
        }
        mark(entry, self.dirty, conn.key);
        if answered.is_some_and(|(keep_alive, _)| keep_alive) {
            self.refeed.push(conn.key);
        }
    }

    fn metrics(&self) -> &ShardMetrics {
        self.metrics
    }

    fn api_answered(&mut self, conn: ConnRef, batch: bool, replies: &[Reply], now: Instant) {
        let Some(entry) = live(self.conns, conn) else {
            return;
        };
        let Some((keep_alive, method, status, latency)) =
            entry.conn.on_api_answered(batch, replies, now)
        else {
            return;
        };
        self.metrics.count_api(method.index(), status, latency);
        let report = Report::api_answered(method.name(), status);
        lifecycle::reported(&entry.conn, self.issuer, &report);
        mark(entry, self.dirty, conn.key);
        if keep_alive {
            self.refeed.push(conn.key);
        }
    }

    fn api_disconnect(
        &mut self,
        key: usize,
        conn_id: Option<&str>,
        close: (u16, &str),
        now: Instant,
    ) -> bool {
        let Some(entry) = target(self.conns, self.issuer, key, conn_id) else {
            return false;
        };
        let (code, reason) = close;
        let done = entry.conn.disconnect(code, reason, now, self.config);
        mark(entry, self.dirty, key);
        done
    }

    fn api_subscribe(&mut self, key: usize, conn_id: Option<&str>, room: &Arc<str>) -> ApiJoin {
        let max_rooms = self.config.rooms.max_rooms_per_connection;
        let shard = self.shard;
        let Some(entry) = target(self.conns, self.issuer, key, conn_id) else {
            return ApiJoin::Skipped;
        };
        match entry.conn.subscribe(room, max_rooms) {
            Subscribing::Already => ApiJoin::Already,
            Subscribing::Skipped => ApiJoin::Skipped,
            Subscribing::Joining => match entry.conn.user_id() {
                Some(user) => ApiJoin::Joining {
                    conn: ConnRef {
                        shard,
                        key,
                        id: entry.conn.id(),
                    },
                    user: user.clone(),
                    name: entry.conn.user_name().map(Into::into),
                },
                None => ApiJoin::Skipped,
            },
        }
    }

    fn api_unsubscribe(
        &mut self,
        key: usize,
        conn_id: Option<&str>,
        room: &Arc<str>,
        now: Instant,
    ) -> Option<(ConnRef, Arc<str>)> {
        let entry = target(self.conns, self.issuer, key, conn_id)?;
        if !entry.conn.unsubscribe(room, now, self.config, self.codec) {
            return None;
        }
        mark(entry, self.dirty, key);
        let user = entry.conn.user_id()?.clone();
        let conn = ConnRef {
            shard: self.shard,
            key,
            id: entry.conn.id(),
        };
        Some((conn, user))
    }

    fn api_describe(&self, key: usize) -> Option<ConnInfo> {
        let entry = self.conns.get(key)?;
        Some(ConnInfo {
            conn_id: entry.conn.conn_id(self.issuer).to_string(),
            node: self.node_name().to_owned(),
            rooms: entry.conn.rooms().to_vec(),
        })
    }

    fn node_facts(&self) -> NodeFacts {
        NodeFacts {
            node: Arc::from(self.node_name()),
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.shared.started.elapsed().as_secs(),
            connections: self.shared.registry.connections() as u64,
            users: self.shared.registry.users() as u64,
            live_nodes: self.shared.live_nodes(),
            api_timeout: self.config.api.timeout,
        }
    }
}

/// The entry of `key` if `conn_id` (when given) names it.
fn target<'e>(
    conns: &'e mut Slab<Entry>,
    issuer: Issuer<'_>,
    key: usize,
    conn_id: Option<&str>,
) -> Option<&'e mut Entry> {
    let entry = conns.get_mut(key)?;
    let named = conn_id.is_none_or(|id| entry.conn.conn_id(issuer).to_string() == id);
    named.then_some(entry)
}

impl ShardOutlet<'_> {
    /// This node's name in the Server API's replies.
    fn node_name(&self) -> &str {
        self.config.node_id().unwrap_or(STANDALONE_NODE)
    }
}

/// What became of one delivery on this shard, counted once at the end.
#[derive(Default)]
struct Tally {
    /// Connections the frame was for.
    reached: usize,
    queued: u64,
    dropped: u64,
    conflated: u64,
    skipped: u64,
}

impl Tally {
    fn count(&mut self, delivered: Delivered) {
        self.reached += 1;
        match delivered {
            Delivered::Queued => self.queued += 1,
            Delivered::Dropped => self.dropped += 1,
            Delivered::Conflated => self.conflated += 1,
            Delivered::Skipped => self.skipped += 1,
            Delivered::HeldBack | Delivered::Closed | Delivered::NotOpen => {}
        }
    }

    fn record(&self, metrics: &ShardMetrics, kind: Delivery) {
        metrics.messages_out.add(self.queued);
        if kind == Delivery::RoomEvent {
            metrics.deliveries.add(self.queued);
            metrics.dropped.add(self.dropped);
            metrics.conflated.add(self.conflated);
        }
        metrics.volatile_dropped.add(self.skipped);
    }
}

/// The entry of `conn` if it is still the same connection.
impl ShardOutlet<'_> {
    /// Queues `text` (if any) for `conn`; `awaited`: it ends one of the
    /// answers the connection waits for before it may close (an error
    /// event for a request without an id ends none).
    pub(super) fn reply(
        &mut self,
        conn: ConnRef,
        text: Option<&[u8]>,
        awaited: bool,
        now: Instant,
    ) {
        let Some(entry) = live(self.conns, conn) else {
            return;
        };
        if let Some(text) = text {
            write_through(entry, self.metrics, text.len(), self.config);
            if entry.conn.send_text(text, now, self.config, self.codec) {
                self.metrics.messages_out.inc();
            }
        }
        if awaited {
            entry.conn.on_answer(now, self.config);
        }
        mark(entry, self.dirty, conn.key);
    }
}

fn live(conns: &mut Slab<Entry>, conn: ConnRef) -> Option<&mut Entry> {
    conns.get_mut(conn.key).filter(|e| e.conn.id() == conn.id)
}
