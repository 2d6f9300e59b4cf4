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

use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use crate::config::Config;
use crate::conn::compression::{Codec, SharedFrame};
use crate::conn::id::Issuer;
use crate::conn::report::Report;
use crate::conn::{ConnRef, Delivered, Delivery};
use crate::metrics::ShardMetrics;
use crate::reactor::entry::{Entry, mark, write_through};
use crate::reactor::lifecycle;
use crate::rooms::bus::Fanout;
use crate::rooms::outlet::Outlet;

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
}

impl Outlet for ShardOutlet<'_> {
    fn deliver(
        &mut self,
        keys: &[usize],
        skip: Option<usize>,
        frame: &Arc<[u8]>,
        room: Option<&Arc<str>>,
        fanout: Fanout,
        now: Instant,
    ) -> usize {
        let kind = match fanout {
            Fanout::RoomEvent { .. } => Delivery::RoomEvent,
            Fanout::Other => Delivery::Other,
        };
        let mut tally = Tally::default();
        let mut shared = SharedFrame::new(frame);
        for &key in keys {
            if skip == Some(key) {
                continue;
            }
            let Some(entry) = self.conns.get_mut(key) else {
                continue;
            };
            let frame = shared.for_member(entry.conn.compresses_out(), self.codec);
            write_through(entry, self.metrics, frame.len(), self.config);
            tally.count(entry.conn.deliver(room, frame, kind, now, self.config));
            mark(entry, self.dirty, key);
        }
        tally.record(self.metrics, kind);
        if let Fanout::RoomEvent { read_at } = fanout {
            self.metrics.fanout_latency.observe(read_at.elapsed());
        }
        tally.reached
    }

    fn answer(&mut self, conn: ConnRef, text: Option<&[u8]>, now: Instant) {
        let Some(entry) = live(self.conns, conn) else {
            return;
        };
        if let Some(text) = text {
            write_through(entry, self.metrics, text.len(), self.config);
            if entry.conn.send_text(text, now, self.config, self.codec) {
                self.metrics.messages_out.inc();
            }
        }
        entry.conn.on_answer(now, self.config);
        mark(entry, self.dirty, conn.key);
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
}

/// What became of one delivery on this shard, counted once at the end.
#[derive(Default)]
struct Tally {
    /// Connections the frame was for.
    reached: usize,
    queued: u64,
    dropped: u64,
    conflated: u64,
}

impl Tally {
    fn count(&mut self, delivered: Delivered) {
        self.reached += 1;
        match delivered {
            Delivered::Queued => self.queued += 1,
            Delivered::Dropped => self.dropped += 1,
            Delivered::Conflated => self.conflated += 1,
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
    }
}

/// The entry of `conn` if it is still the same connection.
fn live(conns: &mut Slab<Entry>, conn: ConnRef) -> Option<&mut Entry> {
    conns.get_mut(conn.key).filter(|e| e.conn.id() == conn.id)
}
