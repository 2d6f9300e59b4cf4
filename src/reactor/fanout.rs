//! Room traffic on a shard: turning a connection's requests into bus
//! messages, handling the bus messages that arrive, and the fan-out of one
//! encoded frame to this shard's members of a room.
//!
//! The path of a room message: the publisher's shard checks permissions
//! (`proto::events`) and sends `Publish` to the room's owner; the owner
//! assigns `seq`, encodes the frame once and records it (`rooms::table`),
//! then sends `Deliver` with that same `Arc<[u8]>` to every shard with
//! members, itself included; each of those walks its member list
//! (`rooms::local`) and queues the frame for each member by reference.
//!
//! permessage-deflate, compress once: members whose connection compresses
//! get a second shared frame, the text deflated (RSV1 set) by this shard's
//! `Codec` on the first such member of the delivery and then shared by
//! reference like the plain one. A room message is thus deflated at most
//! once per shard with compressing members, on that shard's own thread:
//! no lock, and no work at all on a shard whose members do not compress.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use slab::Slab;

use crate::codes::ErrorCode;
use crate::conn::compression::SharedFrame;
use crate::conn::report::Report;
use crate::conn::{Delivered, Delivery};
use crate::json;
use crate::metrics::ShardMetrics;
use crate::proto::Request;
use crate::proto::reply::{self, OwnedId};
use crate::reactor::bus::{BusMsg, ConnRef, PublishAnswer};
use crate::reactor::cluster::{ClusterPublish, PendingJoin};
use crate::reactor::shard::{Command, Entry, Gather, Shard, write_through};
use crate::rooms::table::{Joiner, Publish, Recovery, RoomLog};
use crate::rooms::{owner_of, wire};
use crate::sys::unix_ms;

impl Shard {
    /// Queues a bus message for `shard` (this one included); sent at the
    /// end of the turn, in order.
    pub(super) fn send_to(&mut self, shard: usize, message: BusMsg) {
        self.outbox[shard].push(message);
    }

    fn owner(&self, room: &str) -> usize {
        owner_of(room, self.peers.len())
    }

    /// Handles this shard's own bus messages until none are left, then
    /// sends every other shard its batch with one wake-up each, counted in
    /// `Shared::bus_pending` for flow control (its own are never counted:
    /// they are handled here and then).
    pub(super) fn pump(&mut self) {
        self.handle_own_outbox();
        for shard in 0..self.outbox.len() {
            if shard != self.index && !self.outbox[shard].is_empty() {
                let messages = std::mem::take(&mut self.outbox[shard]);
                // Counted before it is sent, so the receiver never
                // subtracts what was not added yet.
                if let Some(pending) = self.shared.bus_pending(self.index, shard) {
                    pending.fetch_add(messages.len(), Ordering::Relaxed);
                }
                self.peers[shard].send(Command::Bus {
                    from: self.index,
                    messages,
                });
            }
        }
        self.metrics().rooms.set(self.table.len() as u64);
    }

    /// Handles the bus messages this shard sent itself until none are left.
    pub(super) fn handle_own_outbox(&mut self) {
        loop {
            let own = std::mem::take(&mut self.outbox[self.index]);
            if own.is_empty() {
                break;
            }
            for message in own {
                self.on_bus(message);
            }
        }
    }

    fn conn_ref(&self, key: usize) -> Option<(ConnRef, Arc<str>, Option<Box<str>>)> {
        let conn = &self.conns.get(key)?.conn;
        let user = conn.user_id()?;
        let at = ConnRef {
            shard: self.index,
            key,
            id: conn.id(),
        };
        Some((at, user.clone(), conn.user_name().map(Into::into)))
    }

    /// Work a connection's message, read at `now`, asked for: each kind
    /// becomes the bus message(s) of its own small function.
    pub(super) fn on_request(&mut self, key: usize, request: Request, now: Instant) {
        if let Request::HttpPublish {
            index,
            message,
            from,
        } = request
        {
            return self.publish_for_http(key, index, message, from, now);
        }
        let Some((conn, user, name)) = self.conn_ref(key) else {
            return;
        };
        match request {
            Request::Join {
                room,
                id,
                recovery,
                rejoin,
            } => {
                let owner = self.owner(&room);
                let join = BusMsg::Join {
                    room,
                    conn,
                    user,
                    name,
                    recovery,
                    rejoin,
                    id,
                };
                self.send_to(owner, join);
            }
            Request::Leave { room } => self.request_leave(key, room, user),
            Request::Publish {
                room,
                event,
                data,
                echo,
                id,
            } => {
                let owner = self.owner(&room);
                let publish = BusMsg::Publish {
                    room,
                    event,
                    data,
                    from: user,
                    sender: conn,
                    echo,
                    answer: PublishAnswer::ack(id),
                    read_at: now,
                };
                self.send_to(owner, publish);
            }
            Request::PresenceGet { room, id } => {
                let owner = self.owner(&room);
                self.send_to(owner, BusMsg::PresenceGet { room, conn, id });
            }
            Request::UserSend { to, text, id } if self.in_cluster() => {
                self.send_in_cluster(conn, &user, Some(to), text.to_vec(), id);
            }
            Request::Broadcast { text, id } if self.in_cluster() => {
                self.send_in_cluster(conn, &user, None, text.to_vec(), id);
            }
            Request::UserSend { to, text, id } => self.request_user_send(conn, to, &text, id),
            Request::Broadcast { text, id } => self.request_broadcast(conn, &text, id),
            Request::Refresh { .. } | Request::HttpPublish { .. } => {}
        }
    }

    /// Connection `key` leaves `room` here, and the owner is told.
    fn request_leave(&mut self, key: usize, room: Arc<str>, user: Arc<str>) {
        self.local.remove(&room, key);
        let owner = self.owner(&room);
        let leave = BusMsg::Leave {
            room,
            shard: self.index,
            user,
        };
        self.send_to(owner, leave);
    }

    /// A direct message goes to every shard, each of which counts the
    /// user's connections it reached.
    fn request_user_send(&mut self, conn: ConnRef, to: Box<str>, text: &[u8], id: Option<OwnedId>) {
        self.send_every_shard(conn, text, id, |frame, gather| BusMsg::UserSend {
            to: to.clone(),
            frame,
            exclude: conn,
            gather,
        });
    }

    fn request_broadcast(&mut self, conn: ConnRef, text: &[u8], id: Option<OwnedId>) {
        self.send_every_shard(conn, text, id, |frame, gather| BusMsg::Broadcast {
            frame,
            exclude: conn,
            gather,
        });
    }

    /// Frames `text` once and sends every shard the message `make` builds
    /// around it, under one gather that answers `conn` once all counted.
    fn send_every_shard(
        &mut self,
        conn: ConnRef,
        text: &[u8],
        id: Option<OwnedId>,
        make: impl Fn(Arc<[u8]>, u64) -> BusMsg,
    ) {
        let gather = self.start_gather(conn, id);
        let frame = wire::text_frame(text);
        for shard in 0..self.peers.len() {
            self.send_to(shard, make(frame.clone(), gather));
        }
    }

    /// Sends message `index` of a `POST /publish` to its room's owner, like
    /// a room event from a WebSocket. The HTTP connection is in no room, so
    /// nobody is excluded from the fan-out.
    fn publish_for_http(
        &mut self,
        key: usize,
        index: usize,
        message: crate::proto::publish::Message,
        from: Arc<str>,
        now: Instant,
    ) {
        let Some(entry) = self.conns.get(key) else {
            return;
        };
        let sender = ConnRef {
            shard: self.index,
            key,
            id: entry.conn.id(),
        };
        let owner = self.owner(&message.room);
        self.send_to(
            owner,
            BusMsg::Publish {
                room: message.room,
                event: message.event,
                data: message.data,
                from,
                sender,
                echo: true,
                answer: PublishAnswer::Http { index },
                read_at: now,
            },
        );
    }

    fn start_gather(&mut self, conn: ConnRef, id: Option<OwnedId>) -> u64 {
        self.next_gather += 1;
        let remaining = self.peers.len();
        self.gathers.insert(
            self.next_gather,
            Gather {
                conn,
                id,
                remaining,
                delivered: 0,
            },
        );
        self.next_gather
    }

    /// A connection is gone: it leaves its rooms and the user index.
    pub(super) fn forget_connection(&mut self, key: usize, conn: &crate::conn::Connection) {
        if let Some(user) = conn.user_id() {
            self.users.remove(user, key);
            self.shared.registry.user_disconnected(user);
            self.count_online(user, false);
            for room in conn.rooms() {
                self.request_leave(key, room.clone(), user.clone());
            }
        }
    }

    /// Handles one bus message: each kind in a function of its own.
    pub(super) fn on_bus(&mut self, message: BusMsg) {
        let now = Instant::now();
        match message {
            BusMsg::Join {
                room,
                conn,
                user,
                name,
                recovery,
                rejoin,
                id,
            } => {
                if self.in_cluster() {
                    let owner = self.index;
                    let join = PendingJoin {
                        owner,
                        room,
                        conn,
                        user,
                        name,
                        rejoin,
                        id,
                    };
                    return self.join_in_cluster(join, &recovery);
                }
                let joiner = Joiner {
                    shard: conn.shard,
                    user_id: user,
                    name: name.as_deref(),
                    rejoin,
                };
                self.on_join(room, conn, &joiner, &recovery, id, now);
            }
            BusMsg::Leave { room, shard, user } => {
                let frame = self.table.leave(&room, shard, &user, now);
                if self.in_cluster() {
                    return self.leave_in_cluster(&room, &user);
                }
                if let Some(frame) = frame {
                    self.fan_out(&room, frame, None, Fanout::Other);
                }
            }
            BusMsg::Publish {
                room,
                event,
                data,
                from,
                sender,
                echo,
                answer,
                read_at,
            } => {
                if self.in_cluster() {
                    return self.publish_in_cluster(ClusterPublish {
                        room: &room,
                        event: &event,
                        data: &data,
                        from: &from,
                        sender,
                        echo,
                        answer,
                        read_at,
                    });
                }
                let message = Publish {
                    room: &room,
                    event: &event,
                    data: &data,
                    from: &from,
                    ts_ms: unix_ms(),
                };
                let exclude = (!echo).then_some(sender);
                let seq = self.on_publish(&room, &message, exclude, read_at, now);
                self.answer_publish(sender, answer, seq);
            }
            BusMsg::PresenceGet { room, conn, id } if self.in_cluster() => {
                self.presence_in_cluster(room, conn, id);
            }
            BusMsg::PresenceGet { room, conn, id } => {
                if let Some(id) = id {
                    let text = ack_text(&id, &self.table.presence(&room));
                    self.send_to(conn.shard, BusMsg::Reply { conn, text });
                }
            }
            BusMsg::Deliver {
                room,
                frame,
                exclude,
                fanout,
            } => self.deliver_local(&room, &frame, exclude, fanout, now),
            BusMsg::Joined {
                room,
                conn,
                accepted,
                reply,
            } => self.on_joined(room, conn, accepted, reply, now),
            BusMsg::Reply { conn, text } => self.answer(conn, Some(&text), now),
            BusMsg::Published { conn, index, seq } => {
                self.on_published(conn, index, Some(seq), now);
            }
            BusMsg::PublishRefused { conn, index } => self.on_published(conn, index, None, now),
            BusMsg::UserSend {
                to,
                frame,
                exclude,
                gather,
            } => {
                let keys = self.users.keys(&to).to_vec();
                self.deliver_and_count(&keys, &frame, exclude, gather, now);
            }
            BusMsg::Broadcast {
                frame,
                exclude,
                gather,
            } => {
                let keys = self.users.all();
                self.deliver_and_count(&keys, &frame, exclude, gather, now);
            }
            BusMsg::Counted { gather, count } => self.on_counted(gather, count, now),
            BusMsg::Online { user, up } => self.online_in_cluster(user, up),
        }
    }

    /// The owner admits a member (or refuses: the room is full), announces
    /// it to the room's presence and answers the member's shard.
    fn on_join(
        &mut self,
        room: Arc<str>,
        conn: ConnRef,
        joiner: &Joiner<'_>,
        recovery: &crate::proto::JoinRecovery,
        id: Option<OwnedId>,
        now: Instant,
    ) {
        let recovery = Recovery {
            history: recovery.history,
            since: recovery.since,
            epoch: recovery.epoch.as_deref(),
        };
        let (accepted, reply) = match self.table.join(&room, joiner, &recovery, now) {
            Ok(joined) => {
                if let Some(frame) = joined.presence {
                    self.fan_out(&room, frame, Some(conn), Fanout::Other);
                }
                (true, id.map(|id| ack_text(&id, &joined.data)))
            }
            Err(_) => {
                let text = failure_text(id.as_ref(), ErrorCode::RoomFull, "room is full");
                (false, Some(text))
            }
        };
        let joined = BusMsg::Joined {
            room,
            conn,
            accepted,
            reply,
        };
        self.send_to(conn.shard, joined);
    }

    /// The owner sequences a room event and sends its one frame to every
    /// shard with members; returns its `seq`.
    fn on_publish(
        &mut self,
        room: &Arc<str>,
        message: &Publish<'_>,
        exclude: Option<ConnRef>,
        read_at: Instant,
        now: Instant,
    ) -> u64 {
        self.metrics().publishes.inc();
        let published = self.table.publish(message, now);
        self.fan_out(
            room,
            published.frame,
            exclude,
            Fanout::RoomEvent { read_at },
        );
        published.seq
    }

    /// A direct message or broadcast on this shard; the count goes back to
    /// the sender's shard.
    fn deliver_and_count(
        &mut self,
        keys: &[usize],
        frame: &Arc<[u8]>,
        exclude: ConnRef,
        gather: u64,
        now: Instant,
    ) {
        let count = self.deliver_each(keys, frame, exclude, now);
        self.send_to(exclude.shard, BusMsg::Counted { gather, count });
    }

    /// Tells the publisher the `seq` its message got, as it asked.
    pub(super) fn answer_publish(&mut self, sender: ConnRef, answer: PublishAnswer, seq: u64) {
        let message = match answer {
            PublishAnswer::Nobody => return,
            PublishAnswer::Ack(id) => {
                let mut data = Vec::with_capacity(24);
                data.extend_from_slice(b"{\"seq\":");
                json::write_u64(&mut data, seq);
                data.push(b'}');
                BusMsg::Reply {
                    conn: sender,
                    text: ack_text(&id, &data),
                }
            }
            PublishAnswer::Http { index } => BusMsg::Published {
                conn: sender,
                index,
                seq,
            },
        };
        self.send_to(sender.shard, message);
    }

    /// An HTTP publisher's message got its `seq` (`None`: refused, the
    /// cluster's Redis being away); once the response is queued, requests
    /// it pipelined meanwhile are read.
    fn on_published(&mut self, conn: ConnRef, index: usize, seq: Option<u64>, now: Instant) {
        let Some(entry) = live(&mut self.conns, conn) else {
            return;
        };
        let answered = entry.conn.on_published(index, seq, now);
        if let Some((_, status)) = answered {
            crate::reactor::lifecycle::reported(&entry.conn, &Report::publish_answered(status));
        }
        let answered = answered.map(|(keep_alive, _)| keep_alive);
        mark(&mut self.conns, &mut self.dirty, conn.key);
        if answered == Some(true) {
            self.feed(conn.key, 0);
        }
    }

    /// Sends `frame` to every shard with members of `room`.
    pub(super) fn fan_out(
        &mut self,
        room: &Arc<str>,
        frame: Arc<[u8]>,
        exclude: Option<ConnRef>,
        fanout: Fanout,
    ) {
        for shard in self.table.member_shards(room) {
            let room = room.clone();
            self.send_to(
                shard,
                BusMsg::Deliver {
                    room,
                    frame: frame.clone(),
                    exclude,
                    fanout,
                },
            );
        }
    }

    /// Queues one frame for every member of `room` on this shard: the same
    /// bytes for all, by reference (the compressed twin, made once, for
    /// those that compress).
    fn deliver_local(
        &mut self,
        room: &Arc<str>,
        frame: &Arc<[u8]>,
        exclude: Option<ConnRef>,
        fanout: Fanout,
        now: Instant,
    ) {
        let config = &self.shared.config;
        let metrics = &self.shared.metrics[self.index];
        let kind = fanout.kind();
        let mut tally = Tally::default();
        let mut shared = SharedFrame::new(frame);
        for &key in self.local.members(room) {
            if exclude.is_some_and(|x| x.shard == self.index && x.key == key) {
                continue;
            }
            if let Some(entry) = self.conns.get_mut(key) {
                let frame = shared.for_member(entry.conn.compresses_out(), &mut self.codec);
                write_through(entry, metrics, frame.len(), config);
                tally.count(entry.conn.deliver(room, frame, kind, now, config));
                mark(&mut self.conns, &mut self.dirty, key);
            }
        }
        tally.record(metrics, kind);
        if let Fanout::RoomEvent { read_at } = fanout {
            metrics.fanout_latency.observe(read_at.elapsed());
        }
    }

    /// Cluster mode: tells the owner of the online set that a `/ws`
    /// connection of `user` opened (`up`) or closed here.
    pub(super) fn count_online(&mut self, user: &Arc<str>, up: bool) {
        if self.in_cluster() {
            let owner = self.owner(crate::redis::ONLINE);
            let user = user.clone();
            self.send_to(owner, BusMsg::Online { user, up });
        }
    }

    pub(super) fn deliver_each(
        &mut self,
        keys: &[usize],
        frame: &Arc<[u8]>,
        exclude: ConnRef,
        now: Instant,
    ) -> usize {
        let room: Arc<str> = Arc::from("");
        let mut count = 0;
        let mut shared = SharedFrame::new(frame);
        for &key in keys {
            if exclude.shard == self.index && exclude.key == key {
                continue;
            }
            if let Some(entry) = self.conns.get_mut(key) {
                if entry.conn.user_id().is_none() {
                    continue;
                }
                let metrics = &self.shared.metrics[self.index];
                let frame = shared.for_member(entry.conn.compresses_out(), &mut self.codec);
                write_through(entry, metrics, frame.len(), &self.shared.config);
                let delivered =
                    entry
                        .conn
                        .deliver(&room, frame, Delivery::Other, now, &self.shared.config);
                if delivered == Delivered::Queued {
                    self.shared.metrics[self.index].messages_out.inc();
                }
                mark(&mut self.conns, &mut self.dirty, key);
                count += 1;
            }
        }
        count
    }

    fn on_joined(
        &mut self,
        room: Arc<str>,
        conn: ConnRef,
        accepted: bool,
        reply: Option<Vec<u8>>,
        now: Instant,
    ) {
        let Some(entry) = live(&mut self.conns, conn) else {
            return;
        };
        if accepted {
            if entry.conn.in_room(&room) {
                self.local.add(&room, conn.key);
            }
        } else {
            entry.conn.forget_room(&room);
        }
        self.answer(conn, reply.as_deref(), now);
    }

    /// Queues the answer (if any) to a request `conn` made, if it is still
    /// there; a close that waited for the connection's last answer follows.
    fn answer(&mut self, conn: ConnRef, text: Option<&[u8]>, now: Instant) {
        let Some(entry) = live(&mut self.conns, conn) else {
            return;
        };
        let config = &self.shared.config;
        if let Some(text) = text {
            let metrics = &self.shared.metrics[self.index];
            write_through(entry, metrics, text.len(), config);
            if entry.conn.send_text(text, now, config, &mut self.codec) {
                metrics.messages_out.inc();
            }
        }
        entry.conn.on_answer(now, config);
        mark(&mut self.conns, &mut self.dirty, conn.key);
    }

    fn on_counted(&mut self, gather: u64, count: usize, now: Instant) {
        let Some(pending) = self.gathers.get_mut(&gather) else {
            return;
        };
        pending.remaining -= 1;
        pending.delivered += count;
        if pending.remaining > 0 {
            return;
        }
        let Some(done) = self.gathers.remove(&gather) else {
            return;
        };
        let Some(id) = done.id else { return };
        let mut data = Vec::with_capacity(24);
        data.extend_from_slice(b"{\"delivered\":");
        json::write_u64(&mut data, done.delivered as u64);
        data.push(b'}');
        self.answer(done.conn, Some(&ack_text(&id, &data)), now);
    }
}

/// What a `Deliver` carries: a room event, or presence.
#[derive(Debug, Clone, Copy)]
pub enum Fanout {
    /// A published room event, read from its publisher at `read_at`.
    RoomEvent { read_at: Instant },
    /// A presence event.
    Other,
}

impl Fanout {
    fn kind(self) -> Delivery {
        match self {
            Self::RoomEvent { .. } => Delivery::RoomEvent,
            Self::Other => Delivery::Other,
        }
    }
}

/// What became of one fan-out on this shard, counted once at the end.
#[derive(Default)]
struct Tally {
    queued: u64,
    dropped: u64,
    conflated: u64,
}

impl Tally {
    fn count(&mut self, delivered: Delivered) {
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

/// Puts a connection on the end-of-turn flush list once.
fn mark(conns: &mut Slab<Entry>, dirty: &mut Vec<usize>, key: usize) {
    if let Some(entry) = conns.get_mut(key)
        && !entry.queued_for_flush
    {
        entry.queued_for_flush = true;
        dirty.push(key);
    }
}

pub(super) fn ack_text(id: &OwnedId, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + data.len());
    reply::ack_ok(&mut out, id.as_id(), data);
    out
}

pub(super) fn failure_text(id: Option<&OwnedId>, code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    reply::failure(&mut out, id.map(OwnedId::as_id), code, message);
    out
}
