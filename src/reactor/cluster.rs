//! Cluster mode on a shard (`--redis`, `docs/protocol.md` section 10): the
//! room owner hands publishes and joins to the Redis bridge instead of its
//! own table, and fans out what the bridge delivers.
//!
//! The owner of a room (`rooms::owner_of`) stays this node's one door to
//! it: joins, leaves and publishes still reach it over the bus in order, it
//! still counts the node's members per shard (and so knows where to fan
//! out), and it alone serves the room to the bridge — subscribed while it
//! has members or joins in flight. What changes is who sequences: Redis
//! (`roomcast_publish`), whose channel brings every event back, ours and
//! other nodes', to the owner, which sends the one frame to every shard
//! with members exactly as a locally sequenced one. A join's history comes
//! from Redis too, in order with the room's events (see `bridge`), and so
//! does presence: Redis counts every node's connections per user and
//! announces `presence:join` / `presence:leave` on the room's channel; the
//! owner's table counts only this node's, for the fan-out.
//! The ack of a publish goes from the bridge straight to the publisher's
//! shard once Redis answered; nothing here waits on Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codes::ErrorCode;
use crate::proto::JoinRecovery;
use crate::proto::reply::OwnedId;
use crate::reactor::bridge::{
    BridgeRequest, BridgeSink, DirectMessage, FromHere, OwnedQuery, RoomEvent, Unavailable,
};
use crate::reactor::bus::{BusMsg, ConnRef, PublishAnswer};
use crate::reactor::fanout::{Fanout, failure_text};
use crate::reactor::shard::{Command, Handle, Shard, unix_ms};
use crate::redis::{
    self, History, NodeUser, Origin, Presence, PresenceChange, Publisher, Sequenced,
};
use crate::rooms::table::{Joiner, Publish};
use crate::rooms::wire;

/// The message a client gets when its request needed Redis and Redis is away.
const UNAVAILABLE: &str = "the cluster's Redis is unreachable; try again";

/// Who hears back from the bridge.
#[derive(Debug)]
pub enum BridgeAnswer {
    /// The publisher, through the room's owner: its answers to one
    /// connection then keep the order of its requests (a publish's ack
    /// never overtakes the ack of the join before it).
    Publish {
        owner: usize,
        sender: ConnRef,
        answer: PublishAnswer,
    },
    /// The room's owner, which then answers the joiner.
    Join(Box<PendingJoin>),
    /// A `presence:get` asker, through the room's owner (as a publisher).
    Presence {
        owner: usize,
        conn: ConnRef,
        room: Arc<str>,
        id: OwnedId,
    },
    /// The sender of a `user:send` or `system:broadcast`, on its own
    /// shard; `minus` is its own connection when Redis counted it.
    Sent {
        conn: ConnRef,
        id: Option<OwnedId>,
        minus: u64,
    },
}

/// A join waiting for the room's history from Redis, at the owner.
#[derive(Debug)]
pub struct PendingJoin {
    pub owner: usize,
    pub room: Arc<str>,
    pub conn: ConnRef,
    pub user: Arc<str>,
    pub name: Option<Box<str>>,
    pub rejoin: bool,
    pub id: Option<OwnedId>,
}

/// What the bridge sends a shard.
#[derive(Debug)]
pub enum FromBridge {
    Sequenced(BridgeAnswer, Result<Sequenced, Unavailable>),
    Joined(BridgeAnswer, Result<(History, u64), Unavailable>),
    Presence(BridgeAnswer, Result<Presence, Unavailable>),
    Event(RoomEvent),
    Sent(BridgeAnswer, Result<u64, Unavailable>),
    Direct(DirectMessage),
    /// Redis is (again) reachable: tell it this shard's presence.
    Resync,
}

/// A connection coming to or leaving a room, as presence counts it.
struct Mover<'a> {
    room: &'a str,
    user: &'a str,
    name: Option<&'a str>,
    rejoin: bool,
    /// The connection, when it is known (a join's).
    conn: Option<ConnRef>,
}

impl<'a> Mover<'a> {
    fn joining(join: &'a PendingJoin) -> Self {
        Mover {
            room: &join.room,
            user: &join.user,
            name: join.name.as_deref(),
            rejoin: join.rejoin,
            conn: Some(join.conn),
        }
    }
}

/// The bridge's sink: every result goes to the shard it is for.
pub struct ShardSink {
    pub shards: Vec<Handle>,
}

impl ShardSink {
    fn send(&self, shard: usize, message: FromBridge) {
        if let Some(handle) = self.shards.get(shard) {
            handle.send(Command::Bridge(message));
        }
    }
}

impl BridgeAnswer {
    /// The shard the answer goes to.
    fn shard(&self) -> usize {
        match self {
            BridgeAnswer::Publish { owner, .. } | BridgeAnswer::Presence { owner, .. } => *owner,
            BridgeAnswer::Join(join) => join.owner,
            BridgeAnswer::Sent { conn, .. } => conn.shard,
        }
    }
}

impl BridgeSink for ShardSink {
    type Answer = BridgeAnswer;

    fn sequenced(&self, answer: BridgeAnswer, outcome: Result<Sequenced, Unavailable>) {
        self.send(answer.shard(), FromBridge::Sequenced(answer, outcome));
    }

    fn joined(&self, answer: BridgeAnswer, outcome: Result<(History, u64), Unavailable>) {
        self.send(answer.shard(), FromBridge::Joined(answer, outcome));
    }

    fn presence(&self, answer: BridgeAnswer, outcome: Result<Presence, Unavailable>) {
        self.send(answer.shard(), FromBridge::Presence(answer, outcome));
    }

    fn resync(&self) {
        for shard in 0..self.shards.len() {
            self.send(shard, FromBridge::Resync);
        }
    }

    fn sent(&self, answer: BridgeAnswer, outcome: Result<u64, Unavailable>) {
        self.send(answer.shard(), FromBridge::Sent(answer, outcome));
    }

    fn direct(&self, message: DirectMessage) {
        for shard in 0..self.shards.len() {
            self.send(shard, FromBridge::Direct(message.clone()));
        }
    }

    fn deliver(&self, shard: usize, event: RoomEvent) {
        self.send(shard, FromBridge::Event(event));
    }

    fn link(&self, up: bool) {
        if up {
            crate::log_info!("redis: connected");
        } else {
            crate::log_warn!("redis: unreachable; publishes are refused with UNAVAILABLE");
        }
    }
}

/// A room event to sequence in Redis, as the owner got it.
pub(super) struct ClusterPublish<'a> {
    pub room: &'a Arc<str>,
    pub event: &'a str,
    pub data: &'a [u8],
    pub from: &'a str,
    pub sender: ConnRef,
    pub echo: bool,
    pub answer: PublishAnswer,
    pub read_at: Instant,
}

impl Shard {
    /// Whether rooms are sequenced by Redis.
    pub(super) fn in_cluster(&self) -> bool {
        self.bridge.is_some()
    }

    fn to_bridge(&self, request: BridgeRequest<BridgeAnswer>) -> bool {
        self.bridge.as_ref().is_some_and(|b| b.send(request))
    }

    /// The owner passes a publish to Redis; the bridge answers the
    /// publisher and brings the event back on the room's channel.
    pub(super) fn publish_in_cluster(&mut self, publish: ClusterPublish<'_>) {
        let message = Publish {
            room: publish.room,
            event: publish.event,
            data: publish.data,
            from: publish.from,
            ts_ms: unix_ms(),
        };
        let (head, tail) = wire::room_message_around_seq(
            message.event,
            message.room,
            message.data,
            message.from,
            message.ts_ms,
        );
        let origin = Origin {
            node: self.node_id(),
            read_micros: publish
                .read_at
                .saturating_duration_since(self.shared.started)
                .as_micros() as u64,
            exclude: (!publish.echo).then_some(Publisher {
                shard: publish.sender.shard,
                key: publish.sender.key,
                id: publish.sender.id,
            }),
        }
        .write();
        let (sender, answer) = (publish.sender, publish.answer);
        let request = BridgeRequest::Publish {
            room: publish.room.clone(),
            head,
            tail,
            origin,
            answer: BridgeAnswer::Publish {
                owner: self.index,
                sender,
                answer,
            },
        };
        if let Some(bridge) = &self.bridge
            && let Err(BridgeRequest::Publish {
                answer: BridgeAnswer::Publish { sender, answer, .. },
                ..
            }) = bridge.try_send(request)
        {
            self.refuse_publish(sender, answer);
        }
    }

    fn node_id(&self) -> &str {
        self.shared
            .config
            .cluster
            .as_ref()
            .map_or("", |c| c.node_id.as_str())
    }

    /// The owner asks Redis for a joiner's history, and to count it in,
    /// serving the room first so that the answer comes in order with the
    /// room's events. `--max-room-members` is this node's: checked here,
    /// with the joins still out counted.
    pub(super) fn join_in_cluster(&mut self, join: PendingJoin, recovery: &JoinRecovery) {
        let room = join.room.clone();
        let max = self.shared.config.rooms.max_room_members;
        let pending = self.joining.get(&room).copied().unwrap_or(0);
        if !join.rejoin && max > 0 && self.table.connections(&room) + pending >= max {
            let text = failure_text(join.id.as_ref(), ErrorCode::RoomFull, "room is full");
            let conn = join.conn;
            let joined = BusMsg::Joined {
                room,
                conn,
                accepted: false,
                reply: Some(text),
            };
            return self.send_to(conn.shard, joined);
        }
        self.serve(&room);
        *self.joining.entry(room.clone()).or_default() += 1;
        let query = OwnedQuery {
            history: recovery.history,
            since: recovery.since,
            epoch: recovery.epoch.as_deref().map(Into::into),
        };
        let text = wire::presence_join(&room, &join.user, join.name.as_deref());
        let change = self.presence_change(Mover::joining(&join), text);
        let request = BridgeRequest::Join {
            room,
            query,
            change: Box::new(change),
            answer: BridgeAnswer::Join(Box::new(join)),
        };
        if let Some(bridge) = &self.bridge
            && let Err(BridgeRequest::Join {
                answer: BridgeAnswer::Join(join),
                ..
            }) = bridge.try_send(request)
        {
            self.on_cluster_joined(*join, Err(Unavailable));
        }
    }

    /// What Redis is told of a connection of `user` coming to or leaving
    /// `room` (`conn`, left out of the announcement, when known), with the
    /// presence event `text` to announce if due.
    fn presence_change(&self, who: Mover<'_>, text: Vec<u8>) -> PresenceChange {
        let origin = Origin {
            node: self.node_id(),
            read_micros: 0,
            exclude: who.conn.map(|c| Publisher {
                shard: c.shard,
                key: c.key,
                id: c.id,
            }),
        }
        .write();
        PresenceChange {
            node: self.node_id().to_owned(),
            user: who.user.to_owned(),
            name: who.name.map(Into::into),
            rejoin: who.rejoin,
            announce: self.table.announces(who.room),
            event_limit: self.shared.config.rooms.presence_event_limit,
            origin,
            text,
        }
    }

    /// A connection of `user` left `room` here (the owner's table has
    /// counted it out): Redis counts it out of the cluster.
    pub(super) fn leave_in_cluster(&mut self, room: &Arc<str>, user: &Arc<str>) {
        let who = Mover {
            room,
            user,
            name: None,
            rejoin: false,
            conn: None,
        };
        let change = self.presence_change(who, wire::presence_leave(room, user));
        self.to_bridge(BridgeRequest::Leave {
            room: room.clone(),
            change: Box::new(change),
        });
        self.unserve_if_idle(room);
    }

    /// `presence:get` across the cluster, asked of Redis by the owner (so
    /// it comes after the asker's earlier joins).
    pub(super) fn presence_in_cluster(
        &mut self,
        room: Arc<str>,
        conn: ConnRef,
        id: Option<OwnedId>,
    ) {
        let Some(id) = id else { return };
        let answer = BridgeAnswer::Presence {
            owner: self.index,
            conn,
            room: room.clone(),
            id,
        };
        if let Some(bridge) = &self.bridge
            && let Err(BridgeRequest::PresenceGet { answer, .. }) =
                bridge.try_send(BridgeRequest::PresenceGet { room, answer })
        {
            self.on_presence(answer, Err(Unavailable));
        }
    }

    fn on_presence(&mut self, answer: BridgeAnswer, outcome: Result<Presence, Unavailable>) {
        let BridgeAnswer::Presence { conn, room, id, .. } = answer else {
            return;
        };
        let text = match outcome {
            Ok(presence) => {
                let listed = presence
                    .listed
                    .iter()
                    .map(|u| (u.user.as_str(), u.name.as_deref(), u.connections));
                let truncated = presence.users > presence.listed.len() as u64;
                let data = wire::presence_data(&room, presence.users, listed, truncated);
                super::fanout::ack_text(&id, &data)
            }
            Err(Unavailable) => failure_text(Some(&id), ErrorCode::Unavailable, UNAVAILABLE),
        };
        self.send_to(conn.shard, BusMsg::Reply { conn, text });
    }

    /// Redis is reachable again: every room this shard owns is synced to
    /// this node's connections in it.
    fn resync(&mut self) {
        let mut rooms: std::collections::HashMap<String, Vec<NodeUser>> = Default::default();
        self.table.each_user(|room, user, connections, name| {
            rooms.entry(room.to_owned()).or_default().push(NodeUser {
                user: user.to_owned(),
                connections,
                name: name.map(Into::into),
            });
        });
        if !self.online.is_empty() {
            let users = self
                .online
                .iter()
                .map(|(user, &connections)| NodeUser {
                    user: user.to_string(),
                    connections,
                    name: None,
                })
                .collect();
            rooms.insert(redis::ONLINE.to_owned(), users);
        }
        for (room, users) in rooms {
            self.to_bridge(BridgeRequest::Sync {
                room: room.into(),
                users,
            });
        }
    }

    /// At the owner of the online set: a `/ws` connection of `user` on
    /// this node opened (`up`) or closed; Redis counts it for `user:send`
    /// and `system:broadcast`.
    pub(super) fn online_in_cluster(&mut self, user: Arc<str>, up: bool) {
        let first_here = up && self.online.is_empty();
        if up {
            *self.online.entry(user.clone()).or_default() += 1;
        } else {
            let Some(count) = self.online.get_mut(&user) else {
                return;
            };
            *count -= 1;
            if *count == 0 {
                self.online.remove(&user);
            }
        }
        let change = PresenceChange {
            node: self.node_id().to_owned(),
            user: user.to_string(),
            name: None,
            rejoin: false,
            announce: false,
            event_limit: 0,
            origin: String::new(),
            text: Vec::new(),
        };
        let last_here = self.online.is_empty();
        self.to_bridge(BridgeRequest::Online {
            change: Box::new(change),
            n: if up { 1 } else { -1 },
            first_here,
            last_here,
        });
    }

    /// `user:send` (`to`) or `system:broadcast` (`None`) across the
    /// cluster: published once on the direct channel; every node delivers
    /// to its own connections, and the ack counts those Redis knew of.
    pub(super) fn send_in_cluster(
        &mut self,
        conn: ConnRef,
        sender: &str,
        to: Option<Box<str>>,
        text: Vec<u8>,
        id: Option<OwnedId>,
    ) {
        let minus = u64::from(to.as_deref().is_none_or(|to| to == sender));
        let origin = Origin {
            node: self.node_id(),
            read_micros: 0,
            exclude: Some(Publisher {
                shard: conn.shard,
                key: conn.key,
                id: conn.id,
            }),
        }
        .write();
        let request = BridgeRequest::Send {
            to,
            text,
            origin,
            answer: BridgeAnswer::Sent { conn, id, minus },
        };
        if let Some(bridge) = &self.bridge
            && let Err(BridgeRequest::Send { answer, .. }) = bridge.try_send(request)
        {
            self.on_sent(answer, Err(Unavailable));
        }
    }

    fn on_sent(&mut self, answer: BridgeAnswer, outcome: Result<u64, Unavailable>) {
        let BridgeAnswer::Sent { conn, id, minus } = answer else {
            return;
        };
        let text = match outcome {
            Ok(count) => {
                let Some(id) = id else { return };
                let mut data = Vec::with_capacity(24);
                data.extend_from_slice(b"{\"delivered\":");
                crate::json::write_u64(&mut data, count.saturating_sub(minus));
                data.push(b'}');
                super::fanout::ack_text(&id, &data)
            }
            Err(Unavailable) => failure_text(id.as_ref(), ErrorCode::Unavailable, UNAVAILABLE),
        };
        self.send_to(conn.shard, BusMsg::Reply { conn, text });
    }

    /// A direct message or broadcast from any node, for this shard's own
    /// connections.
    fn on_direct(&mut self, message: &DirectMessage) {
        let keys = match &message.to {
            Some(to) => self.users.keys(to).to_vec(),
            None => self.users.all(),
        };
        let exclude = message.exclude.map_or(
            ConnRef {
                shard: usize::MAX,
                key: usize::MAX,
                id: 0,
            },
            |p| ConnRef {
                shard: p.shard,
                key: p.key,
                id: p.id,
            },
        );
        self.deliver_each(&keys, &message.frame, exclude, Instant::now());
    }

    /// Subscribes the room's channel when the first member or join comes.
    fn serve(&mut self, room: &Arc<str>) {
        if self.table.connections(room) == 0 && !self.joining.contains_key(room) {
            let shard = self.index;
            self.to_bridge(BridgeRequest::Serve {
                room: room.clone(),
                shard,
            });
        }
    }

    /// Unsubscribes once no member and no join is left.
    pub(super) fn unserve_if_idle(&mut self, room: &Arc<str>) {
        if self.in_cluster()
            && self.table.connections(room) == 0
            && !self.joining.contains_key(room)
        {
            let shard = self.index;
            self.to_bridge(BridgeRequest::Unserve {
                room: room.clone(),
                shard,
            });
        }
    }

    /// What the bridge sent this shard.
    pub(super) fn on_bridge(&mut self, message: FromBridge) {
        match message {
            FromBridge::Sequenced(BridgeAnswer::Publish { sender, answer, .. }, outcome) => {
                match outcome {
                    Ok(sequenced) => {
                        self.metrics().publishes.inc();
                        self.answer_publish(sender, answer, sequenced.seq);
                    }
                    Err(Unavailable) => self.refuse_publish(sender, answer),
                }
            }
            FromBridge::Joined(BridgeAnswer::Join(join), outcome) => {
                self.on_cluster_joined(*join, outcome);
            }
            FromBridge::Presence(answer, outcome) => self.on_presence(answer, outcome),
            FromBridge::Event(event) => self.on_room_event(event),
            FromBridge::Resync => self.resync(),
            FromBridge::Sent(answer, outcome) => self.on_sent(answer, outcome),
            FromBridge::Direct(message) => self.on_direct(&message),
            FromBridge::Sequenced(..) | FromBridge::Joined(..) => {}
        }
    }

    /// A publish Redis did not take: the publisher hears `UNAVAILABLE`.
    fn refuse_publish(&mut self, sender: ConnRef, answer: PublishAnswer) {
        let message = match answer {
            PublishAnswer::Http { index } => BusMsg::PublishRefused {
                conn: sender,
                index,
            },
            PublishAnswer::Ack(id) => BusMsg::Reply {
                conn: sender,
                text: failure_text(Some(&id), ErrorCode::Unavailable, UNAVAILABLE),
            },
            PublishAnswer::Nobody => BusMsg::Reply {
                conn: sender,
                text: failure_text(None, ErrorCode::Unavailable, UNAVAILABLE),
            },
        };
        self.send_to(sender.shard, message);
    }

    /// The room's history for a join is in: the owner counts the member
    /// and answers its shard, before any event the history did not hold.
    fn on_cluster_joined(
        &mut self,
        join: PendingJoin,
        outcome: Result<(History, u64), Unavailable>,
    ) {
        let room = join.room.clone();
        if let Some(count) = self.joining.get_mut(&room) {
            *count -= 1;
            if *count == 0 {
                self.joining.remove(&room);
            }
        }
        let conn = join.conn;
        match outcome {
            Ok((history, members)) => self.admit_from_history(&join, &history, members),
            Err(Unavailable) if join.rejoin => {
                // Still a member: only this request failed.
                let text = failure_text(join.id.as_ref(), ErrorCode::Unavailable, UNAVAILABLE);
                self.send_to(conn.shard, BusMsg::Reply { conn, text });
            }
            Err(Unavailable) => {
                let text = failure_text(join.id.as_ref(), ErrorCode::Unavailable, UNAVAILABLE);
                let joined = BusMsg::Joined {
                    room: room.clone(),
                    conn,
                    accepted: false,
                    reply: Some(text),
                };
                self.send_to(conn.shard, joined);
            }
        }
        self.unserve_if_idle(&room);
    }

    fn admit_from_history(&mut self, join: &PendingJoin, history: &History, members: u64) {
        let joiner = Joiner {
            shard: join.conn.shard,
            user_id: join.user.clone(),
            name: join.name.as_deref(),
            rejoin: join.rejoin,
        };
        let conn = join.conn;
        let (accepted, reply) = match self.table.admit(&join.room, &joiner) {
            // Redis announced the join to the whole cluster, this node included.
            Ok(_presence) => {
                let state = wire::RoomState {
                    room: &join.room,
                    epoch: &history.epoch,
                    seq: history.seq,
                    recovered: history.recovered,
                    members,
                };
                let data = wire::join_data(&state, history.messages.iter().map(Vec::as_slice));
                (
                    true,
                    join.id
                        .as_ref()
                        .map(|id| super::fanout::ack_text(id, &data)),
                )
            }
            Err(_) => {
                // Counted in by Redis already: counted out again.
                let text = wire::presence_leave(&join.room, &join.user);
                let change = self.presence_change(Mover::joining(join), text);
                self.to_bridge(BridgeRequest::Leave {
                    room: join.room.clone(),
                    change: Box::new(change),
                });
                let text = failure_text(join.id.as_ref(), ErrorCode::RoomFull, "room is full");
                (false, Some(text))
            }
        };
        let joined = BusMsg::Joined {
            room: join.room.clone(),
            conn,
            accepted,
            reply,
        };
        self.send_to(conn.shard, joined);
    }

    /// An event from the room's channel: the owner sends its one frame to
    /// every shard with members, leaving out a publisher of this node that
    /// asked not to get it back. A presence event goes out as presence does
    /// in one process (not a delivery, not timed, never held back in place
    /// of a room event); a room event counts for `/stats` `rooms_top`.
    fn on_room_event(&mut self, event: RoomEvent) {
        let (exclude, read_at) = match event.from_here {
            Some(FromHere {
                read_micros,
                exclude,
            }) => (
                exclude.map(|p| ConnRef {
                    shard: p.shard,
                    key: p.key,
                    id: p.id,
                }),
                self.shared.started + Duration::from_micros(read_micros),
            ),
            None => (None, Instant::now()),
        };
        let fanout = if event.presence {
            Fanout::Other
        } else {
            self.table.count_published(&event.room);
            Fanout::RoomEvent { read_at }
        };
        self.fan_out(&event.room, event.frame, exclude, fanout);
    }
}
