//! One shard's room router: the room protocol of sections 6-7 and 10 as a
//! state machine that takes a connection's requests, bus messages from
//! other shards, the Redis bridge's answers and the time, and returns what
//! to send where: bus messages per shard (`take_outbox`), requests for the
//! bridge (`move_bridge_requests`) and frames for this shard's connections
//! (through its `Outlet`). No socket, thread or clock inside.
//!
//! Three roles meet here, one per kind of message:
//! - the *requester*, on the shard of the connection that asked: turns a
//!   request into a bus message for the room's owner (`on_request`);
//! - the *owner* of a room (`owner_of`), which orders everything about it:
//!   joins, leaves, publishes and `presence:get` reach it over the bus in
//!   order, and it has them sequenced (`sequencer`: here, or by Redis);
//! - the *member side*, on every shard with members: delivers the owner's
//!   one frame to its members and the owner's answers to its connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::RoomsConfig;
use crate::conn::ConnRef;
use crate::hooks::webhook::What;
use crate::proto::Request;
use crate::proto::reply::{self, OwnedId};
use crate::proto::wire;
use crate::redis::requests::BridgeRequest;
use crate::rooms::api::ApiState;
use crate::rooms::bus::{BusMsg, Fanout, JoinAnswer, Outbox, PublishAnswer, ToOwner, Twin};
use crate::rooms::cluster::{BridgeAnswer, ClusterSide, RedisRooms};
use crate::rooms::delta::{Deltas, Encoding, Plan};
use crate::rooms::gather::Gathers;
use crate::rooms::local::{LocalRooms, Pacing};
use crate::rooms::notes::{NoteRules, Notes};
use crate::rooms::outlet::Outlet;
use crate::rooms::owner_of;
use crate::rooms::sequencer::Sequencer;
use crate::rooms::table::RoomTable;
use crate::rooms::users::UserIndex;

/// What a router is built with.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// This shard's index.
    pub shard: usize,
    /// How many shards the process runs.
    pub shards: usize,
    pub rooms: RoomsConfig,
    /// Makes room epochs unique across shards and restarts.
    pub epoch_seed: u64,
    /// Cluster mode: Redis sequences the rooms.
    pub cluster: Option<ClusterSide>,
    /// `--webhook` (one process): what is noticed for it.
    pub notes: Option<NoteRules>,
}

/// The moment a message is handled, as the reactor read it.
#[derive(Debug, Clone, Copy)]
pub struct Time {
    pub now: Instant,
    /// Milliseconds since the Unix epoch, for the `ts` of room events.
    pub unix_ms: u64,
}

/// The connection a request comes from.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub conn: ConnRef,
    /// The token's `sub`; `None` for a connection that is not a `/ws` one.
    pub user: Option<&'a Arc<str>>,
    pub name: Option<&'a str>,
    /// How it is given frames: a join with `data.delta` takes deltas so.
    pub encoding: Encoding,
}

/// Rooms as one shard sees them.
pub struct Router {
    shard: usize,
    /// The rooms this shard owns.
    pub(super) table: RoomTable,
    /// Members on this shard, per room.
    pub(super) local: LocalRooms,
    /// `/ws` connections on this shard, per user.
    pub(super) users: UserIndex,
    pub(super) gathers: Gathers,
    /// Joins of this shard's connections the owner has not answered, by
    /// room and connection: a leave meanwhile waits for the answer (the
    /// user it leaves as, once it is asked for). The owner may refuse the
    /// join, and then has nothing to count out; once it has counted the
    /// connection in, the leave goes.
    joins_out: HashMap<(Arc<str>, ConnRef), Option<Arc<str>>>,
    /// The `maxRate` interval of joins the owner has not answered, for
    /// connections not on the member list yet: applied once they are.
    paces_out: HashMap<(Arc<str>, ConnRef), Duration>,
    /// Members that take room events as deltas (`data.delta`).
    deltas: Deltas,
    /// Joins the owner has not answered, with how each takes deltas
    /// (`None`: without `data.delta`).
    deltas_out: HashMap<(Arc<str>, ConnRef), Option<Encoding>>,
    /// Who sequences the rooms: this table, or Redis.
    pub(super) sequencer: Sequencer,
    pub(super) outbox: Outbox,
    /// Server API calls and gathers (`rooms::api`).
    pub(super) api: ApiState,
    /// Where a publish's ack is written before it is queued, reused.
    ack_text: Vec<u8>,
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        let shard = config.shard;
        let sequencer = match config.cluster {
            Some(side) => Sequencer::Redis(Box::new(RedisRooms::new(shard, side))),
            None => Sequencer::Local,
        };
        let mut table = RoomTable::new(config.rooms, config.shards, config.epoch_seed);
        table.notes = config.notes.map(Notes::new);
        Self {
            shard,
            table,
            local: LocalRooms::default(),
            users: UserIndex::default(),
            gathers: Gathers::default(),
            joins_out: HashMap::new(),
            paces_out: HashMap::new(),
            deltas: Deltas::default(),
            deltas_out: HashMap::new(),
            sequencer,
            outbox: Outbox::new(config.shards),
            api: ApiState::default(),
            ack_text: Vec::new(),
        }
    }

    /// This shard's index.
    pub(super) fn shard(&self) -> usize {
        self.shard
    }

    /// The shard that owns `room`.
    pub(super) fn owner(&self, room: &str) -> usize {
        owner_of(room, self.outbox.shards())
    }

    /// Bus messages queued for `shard`, to be sent in one batch.
    pub fn take_outbox(&mut self, shard: usize) -> Vec<BusMsg> {
        self.outbox.take(shard)
    }

    /// The webhook events noticed since the last call, in order.
    pub fn take_notes(&mut self) -> Vec<What> {
        self.table
            .notes
            .as_mut()
            .map(Notes::take)
            .unwrap_or_default()
    }

    /// Requests for the Redis bridge (cluster mode), in order.
    pub fn move_bridge_requests(&mut self, into: &mut Vec<BridgeRequest<BridgeAnswer>>) {
        self.sequencer.move_bridge_requests(into);
    }

    /// Rooms this shard owns.
    pub fn rooms_owned(&self) -> usize {
        self.table.len()
    }

    /// The `n` busiest rooms owned here since the last call:
    /// `(room, connections, messages)`.
    pub fn busiest(&mut self, n: usize) -> Vec<(Arc<str>, u64, u64)> {
        self.table.busiest(n)
    }

    /// Drops expired history and forgets rooms with nothing left.
    pub fn sweep(&mut self, now: Instant) {
        self.table.sweep(now);
    }

    /// Whether this shard sent itself bus messages not handled yet.
    pub fn has_own_work(&self) -> bool {
        self.outbox.has(self.shard)
    }

    /// Handles the bus messages this shard sent itself until none are left.
    pub fn run_own(&mut self, time: Time, out: &mut impl Outlet) {
        while self.outbox.has(self.shard) {
            let mut batch = self.outbox.take_own(self.shard);
            for message in batch.drain(..) {
                self.on_bus(message, time, out);
            }
            self.outbox.give_back(batch);
        }
    }

    /// A `/ws` connection of `user` opened on this shard.
    pub fn opened(&mut self, key: usize, user: &Arc<str>) {
        self.users.add(user, key);
        self.count_online(user, true);
    }

    /// A `/ws` connection of `user` is gone: it leaves its `rooms`.
    pub fn closed(&mut self, conn: ConnRef, user: &Arc<str>, rooms: &[Arc<str>]) {
        self.users.remove(user, conn.key);
        self.count_online(user, false);
        for room in rooms {
            self.request_leave(conn, room.clone(), user.clone());
        }
    }

    /// Work a connection's message, read at `now`, asked for: each kind
    /// becomes the bus message for the room's owner, or for every shard.
    pub fn on_request(&mut self, asker: Asker<'_>, request: Request, now: Instant) {
        let conn = asker.conn;
        if let Request::Api { call, from } = request {
            return self.api_request(conn, call, from);
        }
        if let Request::HttpPublish {
            index,
            message,
            from,
        } = request
        {
            let publish = ToOwner {
                room: message.room,
                event: message.event,
                data: message.data,
                from,
                sender: conn,
                // The HTTP connection is in no room: nobody to leave out.
                echo: true,
                answer: PublishAnswer::Http { index },
            };
            return self.send_to_owner(publish.into_message(message.volatile, now));
        }
        let Some(user) = asker.user.cloned() else {
            return;
        };
        match request {
            Request::Join {
                room,
                id,
                recovery,
                rejoin,
                meta: _,
                min_interval,
                delta,
            } => {
                if !rejoin {
                    self.note_join_out(room.clone(), conn);
                }
                self.pace(&room, conn, min_interval, now);
                let delta = delta.then_some(asker.encoding);
                if self.local.contains(&room, conn.key) {
                    self.deltas.set(&room, conn.key, delta);
                } else {
                    self.deltas_out.insert((room.clone(), conn), delta);
                }
                self.send_to_owner(BusMsg::Join {
                    room,
                    conn,
                    user,
                    name: asker.name.map(Into::into),
                    recovery,
                    rejoin,
                    answer: JoinAnswer::Ack(id),
                });
            }
            Request::Leave { room } => self.request_leave(conn, room, user),
            Request::Publish {
                room,
                event,
                data,
                echo,
                volatile,
                id,
            } => {
                let publish = ToOwner {
                    room,
                    event,
                    data,
                    from: user,
                    sender: conn,
                    echo,
                    answer: PublishAnswer::ack(id),
                };
                self.send_to_owner(publish.into_message(volatile, now));
            }
            Request::PresenceGet { room, id } => {
                self.send_to_owner(BusMsg::PresenceGet { room, conn, id });
            }
            Request::UserSend { to, text, id } => {
                self.send_to_users(conn, &user, Some(to), text, id)
            }
            Request::Broadcast { text, id } => self.send_to_users(conn, &user, None, text, id),
            // The shard hands these to the proxies; none reaches here.
            Request::Refresh { .. }
            | Request::HttpPublish { .. }
            | Request::Api { .. }
            | Request::Connect { .. }
            | Request::Rpc { .. } => {}
        }
    }

    /// A join of `conn` is on its way to the owner: a leave meanwhile waits
    /// for its answer.
    pub(super) fn note_join_out(&mut self, room: Arc<str>, conn: ConnRef) {
        self.joins_out.insert((room, conn), None);
    }

    /// A join (or rejoin) of `conn` asked for this pace in `room`: a member
    /// here takes it now, a joiner once the owner has admitted it.
    fn pace(&mut self, room: &Arc<str>, conn: ConnRef, interval: Option<Duration>, now: Instant) {
        if self.local.contains(room, conn.key) {
            self.local.set_pace(room, conn.key, interval, now);
        } else if let Some(interval) = interval {
            self.paces_out.insert((room.clone(), conn), interval);
        } else {
            self.paces_out.remove(&(room.clone(), conn));
        }
    }

    /// When a paced member's held-back event is due (`maxRate`), for the
    /// shard's poll timeout.
    pub fn next_slot(&self) -> Option<Instant> {
        self.local.next_slot()
    }

    /// Sends the paced members' held-back events whose slot has come.
    pub fn send_due(&mut self, time: Time, out: &mut impl Outlet) {
        for due in self.local.take_due(time.now) {
            let fanout = Fanout::RoomEvent { read_at: time.now };
            let (room, frame, made) = (&due.room, &due.event.frame, &due.event.made);
            if self.deltas.has(room) {
                let shared = Some(&made.delta);
                let plan = self
                    .deltas
                    .plan_sending(room, frame, &due.keys, None, shared);
                let frame = (frame, &made.twin);
                deliver_planned(&mut self.deltas, plan, room, frame, fanout, time.now, out);
                continue;
            }
            let twin = &made.twin;
            out.deliver(&due.keys, None, frame, twin, Some(room), fanout, time.now);
        }
    }

    /// Connection `conn` of `user` leaves `room` (a Server API
    /// `unsubscribe`), as if it had sent `room:leave`.
    pub(super) fn leave(&mut self, conn: ConnRef, room: Arc<str>, user: Arc<str>) {
        self.request_leave(conn, room, user);
    }

    /// Sends a room's message to its owner.
    pub(super) fn send_to_owner(&mut self, message: BusMsg) {
        let room = match &message {
            BusMsg::Join { room, .. }
            | BusMsg::Leave { room, .. }
            | BusMsg::Publish { room, .. }
            | BusMsg::PresenceGet { room, .. } => room,
            BusMsg::Volatile(event) => &event.room,
            _ => return,
        };
        let owner = self.owner(room);
        self.outbox.send(owner, message);
    }

    /// Connection `key` leaves `room` here, and the owner is told.
    /// A leave while the join is still out waits for the owner's answer:
    /// the owner may refuse the join, and then has nothing to count out.
    fn request_leave(&mut self, conn: ConnRef, room: Arc<str>, user: Arc<str>) {
        self.local.remove(&room, conn.key);
        self.deltas.remove(&room, conn.key);
        let key = (room, conn);
        self.paces_out.remove(&key);
        self.deltas_out.remove(&key);
        if let Some(leaving) = self.joins_out.get_mut(&key) {
            *leaving = Some(user);
            return;
        }
        let (room, _) = key;
        self.send_to_owner(BusMsg::Leave { room, conn, user });
    }

    /// The owner answered a join: a leave that waited for it goes now if
    /// the owner counted the connection in.
    fn join_answered(&mut self, room: &Arc<str>, conn: ConnRef, accepted: bool) {
        let leaving = self.joins_out.remove(&(room.clone(), conn)).flatten();
        if let (true, Some(user)) = (accepted, leaving) {
            let room = room.clone();
            self.send_to_owner(BusMsg::Leave { room, conn, user });
        }
    }

    /// `user:send` (`to`) or `system:broadcast` (`None`) in one process:
    /// framed once and sent to every shard, each of which counts the
    /// connections it reached, under one gather that answers `conn`.
    pub(super) fn gather_from_every_shard(
        &mut self,
        conn: ConnRef,
        to: Option<Box<str>>,
        text: &[u8],
        id: Option<OwnedId>,
    ) {
        let gather = self.gathers.start(conn, id, self.outbox.shards());
        let frame = wire::text_frame(text);
        let twin = Arc::new(Twin::default());
        for shard in 0..self.outbox.shards() {
            let (frame, twin) = (frame.clone(), twin.clone());
            let message = match &to {
                Some(to) => BusMsg::UserSend {
                    to: to.clone(),
                    frame,
                    twin,
                    exclude: conn,
                    gather,
                },
                None => BusMsg::Broadcast {
                    frame,
                    twin,
                    exclude: conn,
                    gather,
                },
            };
            self.outbox.send(shard, message);
        }
    }

    /// Handles one bus message: the owner's kinds go to the sequencer, the
    /// rest are the member side's.
    pub fn on_bus(&mut self, message: BusMsg, time: Time, out: &mut impl Outlet) {
        match message {
            BusMsg::Join { .. }
            | BusMsg::Leave { .. }
            | BusMsg::Publish { .. }
            | BusMsg::Volatile(_)
            | BusMsg::PresenceGet { .. }
            | BusMsg::Online { .. } => self.at_owner(message, time, out),
            BusMsg::Deliver {
                room,
                frame,
                exclude,
                fanout,
                made,
            } => {
                let skip = self.own_key(exclude);
                let pacing = match fanout {
                    Fanout::RoomEvent { .. } => Pacing::Conflate,
                    Fanout::Volatile => Pacing::FreeSlotOnly,
                    Fanout::Other => Pacing::None,
                };
                let event = (&frame, &made);
                let members = self.local.recipients(&room, event, skip, pacing, time.now);
                if pacing == Pacing::Conflate && self.deltas.has(&room) {
                    let plan = self
                        .deltas
                        .plan(&room, &frame, members, skip, Some(&made.delta));
                    let frame = (&frame, &made.twin);
                    deliver_planned(&mut self.deltas, plan, &room, frame, fanout, time.now, out);
                } else {
                    let twin = &made.twin;
                    out.deliver(members, skip, &frame, twin, Some(&room), fanout, time.now);
                }
            }
            BusMsg::Joined {
                room,
                conn,
                accepted,
                reply,
            } => {
                self.join_answered(&room, conn, accepted);
                let pace = self.paces_out.remove(&(room.clone(), conn));
                let delta = self.deltas_out.remove(&(room.clone(), conn)).flatten();
                if out.settle_join(conn, &room, accepted) && self.local.add(&room, conn.key) {
                    self.local.set_pace(&room, conn.key, pace, time.now);
                    self.deltas.set(&room, conn.key, delta);
                }
                out.answer(conn, reply.as_deref(), time.now);
                self.api_join_answered(&room, conn, accepted);
            }
            BusMsg::Reply { conn, text } => out.answer(conn, Some(&text), time.now),
            BusMsg::SeqAck { conn, id, seq } => {
                self.ack_text.clear();
                reply::write_count_ack(&mut self.ack_text, &id, "seq", seq);
                out.answer(conn, Some(&self.ack_text), time.now);
            }
            BusMsg::Published { conn, index, seq } => {
                out.http_published(conn, index, Some(seq), time.now);
            }
            BusMsg::PublishRefused { conn, index } => {
                out.http_published(conn, index, None, time.now);
            }
            BusMsg::UserSend {
                to,
                frame,
                twin,
                exclude,
                gather,
            } => {
                let keys = self.users.keys(&to);
                let count = self.deliver_direct(keys, (&frame, &twin), Some(exclude), time, out);
                self.outbox
                    .send(exclude.shard, BusMsg::Counted { gather, count });
            }
            BusMsg::Broadcast {
                frame,
                twin,
                exclude,
                gather,
            } => {
                let keys = &self.users.all();
                let count = self.deliver_direct(keys, (&frame, &twin), Some(exclude), time, out);
                self.outbox
                    .send(exclude.shard, BusMsg::Counted { gather, count });
            }
            BusMsg::Counted { gather, count } => {
                if let Some((conn, text)) = self.gathers.counted(gather, count) {
                    out.answer(conn, Some(&text), time.now);
                }
            }
            BusMsg::ApiCall { .. }
            | BusMsg::ApiPublished { .. }
            | BusMsg::ApiRoom { .. }
            | BusMsg::ApiDone { .. }
            | BusMsg::ApiRelay { .. }
            | BusMsg::ApiShard { .. }
            | BusMsg::ApiPart { .. }
            | BusMsg::ApiAnswer { .. } => self.on_api_bus(message, time, out),
        }
    }

    /// A direct message or broadcast (its frame and the frame's shared
    /// MessagePack twin) for `keys` on this shard, leaving out its sender;
    /// returns how many connections it reached.
    pub(super) fn deliver_direct(
        &self,
        keys: &[usize],
        (frame, twin): (&Arc<[u8]>, &Twin),
        exclude: Option<ConnRef>,
        time: Time,
        out: &mut impl Outlet,
    ) -> usize {
        let skip = self.own_key(exclude);
        out.deliver(keys, skip, frame, twin, None, Fanout::Other, time.now)
    }

    /// The slab key of `conn` when it is a connection of this shard.
    fn own_key(&self, conn: Option<ConnRef>) -> Option<usize> {
        conn.filter(|c| c.shard == self.shard).map(|c| c.key)
    }

    /// A Server API message from another node (or this one) over Redis (section 12).
    pub fn on_cluster_api(&mut self, payload: Vec<u8>, _time: Time, out: &mut impl Outlet) {
        self.api_from_node(payload, out);
    }
}

/// Sends a room event (its frame and, fanned out, the frame's shared
/// MessagePack twin) as `plan` says, whole or as a delta, and notes for
/// each delta member whether it was queued.
fn deliver_planned(
    deltas: &mut Deltas,
    plan: Plan,
    room: &Arc<str>,
    (frame, twin): (&Arc<[u8]>, &Twin),
    fanout: Fanout,
    now: Instant,
    out: &mut impl Outlet,
) {
    let mut queued = Vec::new();
    out.deliver_noting(&plan.whole, frame, twin, room, fanout, now, &mut queued);
    deltas.sent(room, &plan.whole, &queued);
    if let Some((delta, takers)) = plan.delta {
        queued.clear();
        let (delta, twin) = (&delta.frame, &delta.cells.twin);
        out.deliver_noting(&takers, delta, twin, room, fanout, now, &mut queued);
        deltas.sent(room, &takers, &queued);
    }
}
