//! Redis sequencing at a room's owner (`--redis`, section 10,
//! `docs/redis.md`): what the owner asks of the bridge instead of its own
//! table, and what it makes of the answers.
//!
//! The owner stays this node's one door to a room: joins, leaves and
//! publishes still reach it over the bus in order, it still counts the
//! node's members per shard (and so knows where to fan out), and it alone
//! serves the room to the bridge — subscribed while it has members or joins
//! in flight. Redis (`roomcast_publish`) sequences; its channel brings
//! every event back, ours and other nodes', to the owner, which fans out
//! the one frame exactly as a locally sequenced one. A join's history comes
//! from Redis too, in order with the room's events, and so does presence:
//! Redis counts every node's connections per user and announces
//! `presence:join` / `presence:leave` on the room's channel. The ack of a
//! publish comes back through the owner, so a connection's answers keep the
//! order of its requests; nothing here waits on Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::ApiError;
use crate::codes::ErrorCode;
use crate::conn::ConnRef;
use crate::proto::JoinRecovery;
use crate::proto::reply::{self, OwnedId};
use crate::proto::wire;
use crate::redis::requests::{
    BridgeRequest, DirectMessage, FromHere, OwnedQuery, RoomEvent, Unavailable,
};
use crate::redis::{self, History, NodeUser, Origin, Presence, PresenceChange, Sequenced};
use crate::rooms::bus::{ApiTo, BusMsg, Fanout, JoinAnswer, Outbox, PublishAnswer, RoomAsk};
use crate::rooms::table::{Joiner, Publish, RoomTable};

/// The message a client gets when its request needed Redis and Redis is away.
const UNAVAILABLE: &str = "the cluster's Redis is unreachable; try again";

/// What the owner needs to know of the node in cluster mode.
#[derive(Debug, Clone)]
pub struct ClusterSide {
    /// This node's name in the cluster (`--node-id`).
    pub node_id: String,
    /// When the node started: fan-out latency travels as microseconds
    /// since then.
    pub started: Instant,
}

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
    /// The publisher of a volatile event, through the room's owner (as
    /// for `Publish`): Redis took it (`{}`) or not (`UNAVAILABLE`).
    Volatile {
        owner: usize,
        sender: ConnRef,
        answer: PublishAnswer,
    },
    /// A Server API call's read or change of a room (section 12).
    Api {
        owner: usize,
        room: Arc<str>,
        to: ApiTo,
    },
    /// The sender of a `user:send` or `system:broadcast`, on its own
    /// shard; `minus` is its own connection when Redis counted it.
    Sent {
        conn: ConnRef,
        id: Option<OwnedId>,
        minus: u64,
    },
}

impl BridgeAnswer {
    /// The shard the answer goes to.
    pub fn shard(&self) -> usize {
        match self {
            BridgeAnswer::Publish { owner, .. }
            | BridgeAnswer::Volatile { owner, .. }
            | BridgeAnswer::Presence { owner, .. }
            | BridgeAnswer::Api { owner, .. } => *owner,
            BridgeAnswer::Join(join) => join.owner,
            BridgeAnswer::Sent { conn, .. } => conn.shard,
        }
    }
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
    pub answer: JoinAnswer,
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
    /// What Redis answered a Server API `history` (`Some`) or
    /// `history_remove` (`None`).
    RoomRead(BridgeAnswer, Result<Option<History>, Unavailable>),
    /// What Redis counted for a Server API `rooms`: each room's users.
    RoomUsers(BridgeAnswer, Result<Vec<u64>, Unavailable>),
    /// A Server API message from a node of the cluster (this one too),
    /// to shard 0 (section 12).
    Api(Vec<u8>),
}

impl FromBridge {
    /// The outcome of a request the bridge never took: `Unavailable` for
    /// whoever waits for an answer; `None` when nobody does.
    pub fn refused(request: BridgeRequest<BridgeAnswer>) -> Option<Self> {
        match request {
            BridgeRequest::Publish { answer, .. } => {
                Some(FromBridge::Sequenced(answer, Err(Unavailable)))
            }
            BridgeRequest::Join { answer, .. } => {
                Some(FromBridge::Joined(answer, Err(Unavailable)))
            }
            BridgeRequest::RoomUsers { answer, .. } => {
                Some(FromBridge::RoomUsers(answer, Err(Unavailable)))
            }
            BridgeRequest::History { answer, .. } | BridgeRequest::HistoryRemove { answer, .. } => {
                Some(FromBridge::RoomRead(answer, Err(Unavailable)))
            }
            BridgeRequest::PresenceGet { answer, .. } => {
                Some(FromBridge::Presence(answer, Err(Unavailable)))
            }
            BridgeRequest::Send { answer, .. } | BridgeRequest::Volatile { answer, .. } => {
                Some(FromBridge::Sent(answer, Err(Unavailable)))
            }
            _ => None,
        }
    }
}

/// A room event to sequence, as the owner got it.
pub struct PublishAtOwner<'a> {
    pub room: &'a Arc<str>,
    pub message: &'a Publish<'a>,
    pub sender: ConnRef,
    pub echo: bool,
    pub answer: PublishAnswer,
    pub read_at: Instant,
}

/// A connection coming to or leaving a room, as presence counts it.
struct Mover<'a> {
    room: &'a str,
    user: &'a str,
    name: Option<&'a str>,
    rejoin: bool,
    /// The connection, when it is known (a join's): left out of the
    /// announcement.
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

/// One shard's side of Redis sequencing.
pub struct RedisRooms {
    shard: usize,
    side: ClusterSide,
    /// Joins waiting for their history, per room owned here.
    joining: HashMap<Arc<str>, usize>,
    /// At the owner of the online set: this node's `/ws` connections per user.
    online: HashMap<Arc<str>, u32>,
    /// For the bridge, in order.
    requests: Vec<BridgeRequest<BridgeAnswer>>,
}

impl RedisRooms {
    pub fn new(shard: usize, side: ClusterSide) -> Self {
        Self {
            shard,
            side,
            joining: HashMap::new(),
            online: HashMap::new(),
            requests: Vec::new(),
        }
    }

    /// Moves what is queued for the bridge to the end of `into`; both
    /// keep their capacity.
    pub fn move_requests(&mut self, into: &mut Vec<BridgeRequest<BridgeAnswer>>) {
        into.append(&mut self.requests);
    }

    fn node_id(&self) -> &str {
        &self.side.node_id
    }

    /// The text that travels with a request on the room's channel.
    fn origin(&self, read_at: Option<Instant>, exclude: Option<ConnRef>) -> String {
        let read_micros = read_at.map_or(0, |at| {
            at.saturating_duration_since(self.side.started).as_micros() as u64
        });
        Origin {
            node: self.node_id(),
            read_micros,
            exclude,
        }
        .write()
    }

    /// The owner passes a publish to Redis; the answer and the event come
    /// back through the bridge.
    pub fn publish(&mut self, publish: PublishAtOwner<'_>) {
        let message = publish.message;
        let (head, tail) = wire::room_message_around_seq(
            message.event,
            message.room,
            message.data,
            message.from,
            message.ts_ms,
        );
        let exclude = (!publish.echo).then_some(publish.sender);
        let origin = self.origin(Some(publish.read_at), exclude);
        self.requests.push(BridgeRequest::Publish {
            room: publish.room.clone(),
            head,
            tail,
            origin,
            answer: BridgeAnswer::Publish {
                owner: self.shard,
                sender: publish.sender,
                answer: publish.answer,
            },
        });
    }

    /// The owner passes a volatile event (section 14) to Redis as one
    /// plain publish on the room's channel; every node with members, this
    /// one included, fans it out from there.
    pub fn volatile(
        &mut self,
        room: Arc<str>,
        text: Vec<u8>,
        exclude: Option<ConnRef>,
        sender: ConnRef,
        answer: PublishAnswer,
    ) {
        let origin = self.origin(None, exclude);
        self.requests.push(BridgeRequest::Volatile {
            room,
            text,
            origin,
            answer: BridgeAnswer::Volatile {
                owner: self.shard,
                sender,
                answer,
            },
        });
    }

    /// A publish Redis did not take: the publisher hears `UNAVAILABLE`.
    pub fn refuse(&self, outbox: &mut Outbox, sender: ConnRef, answer: PublishAnswer) {
        outbox.refuse(sender, answer, ErrorCode::Unavailable, UNAVAILABLE);
    }

    /// The owner asks Redis for a joiner's history, and to count it in,
    /// serving the room first so that the answer comes in order with the
    /// room's events. `--max-room-members` is this node's: checked here,
    /// with the joins still out counted.
    pub fn join(
        &mut self,
        table: &mut RoomTable,
        outbox: &mut Outbox,
        join: PendingJoin,
        recovery: &JoinRecovery,
    ) {
        let room = join.room.clone();
        let max = table.config().max_room_members;
        let pending = self.joining.get(&room).copied().unwrap_or(0);
        if !join.rejoin && max > 0 && table.connections(&room) + pending >= max {
            let text = join.answer.refused(ErrorCode::RoomFull, "room is full");
            return outbox.joined(room, join.conn, false, text);
        }
        self.serve(table, &room);
        *self.joining.entry(room.clone()).or_default() += 1;
        let query = OwnedQuery {
            history: recovery.history,
            since: recovery.since,
            epoch: recovery.epoch.as_deref().map(Into::into),
        };
        let text = wire::presence_join(&room, &join.user, join.name.as_deref());
        let change = self.presence_change(table, Mover::joining(&join), text);
        self.requests.push(BridgeRequest::Join {
            room,
            query,
            change: Box::new(change),
            answer: BridgeAnswer::Join(Box::new(join)),
        });
    }

    /// What Redis is told of a connection of `user` coming to or leaving
    /// `room`, with the presence event `text` to announce if due.
    fn presence_change(&self, table: &RoomTable, who: Mover<'_>, text: Vec<u8>) -> PresenceChange {
        PresenceChange {
            node: self.node_id().to_owned(),
            user: who.user.to_owned(),
            name: who.name.map(Into::into),
            rejoin: who.rejoin,
            announce: table.announces(who.room),
            event_limit: table.config().presence.event_limit,
            origin: self.origin(None, who.conn),
            text,
        }
    }

    /// A connection of `user` left `room` here (the owner's table has
    /// counted it out): Redis counts it out of the cluster.
    pub fn leave(&mut self, table: &RoomTable, room: &Arc<str>, user: &Arc<str>) {
        let who = Mover {
            room,
            user,
            name: None,
            rejoin: false,
            conn: None,
        };
        let change = self.presence_change(table, who, wire::presence_leave(room, user));
        self.requests.push(BridgeRequest::Leave {
            room: room.clone(),
            change: Box::new(change),
        });
        self.unserve_if_idle(table, room);
    }

    /// `presence:get` across the cluster, asked of Redis by the owner (so
    /// it comes after the asker's earlier joins).
    pub fn presence_get(&mut self, room: Arc<str>, conn: ConnRef, id: OwnedId) {
        let answer = BridgeAnswer::Presence {
            owner: self.shard,
            conn,
            room: room.clone(),
            id,
        };
        self.requests
            .push(BridgeRequest::PresenceGet { room, answer });
    }

    /// Redis answered a `presence:get`.
    pub fn presence(
        &self,
        outbox: &mut Outbox,
        answer: BridgeAnswer,
        outcome: Result<Presence, Unavailable>,
    ) {
        let data = |room: &str, presence: Presence| {
            let listed = presence
                .listed
                .iter()
                .map(|u| (u.user.as_str(), u.name.as_deref(), u.connections));
            let truncated = presence.users > presence.listed.len() as u64;
            wire::presence_data(room, presence.users, listed, truncated)
        };
        match answer {
            BridgeAnswer::Presence { conn, room, id, .. } => {
                let text = match outcome {
                    Ok(presence) => reply::ack_text(&id, &data(&room, presence)),
                    Err(Unavailable) => {
                        reply::failure_text(Some(&id), ErrorCode::Unavailable, UNAVAILABLE)
                    }
                };
                outbox.send(conn.shard, BusMsg::Reply { conn, text });
            }
            BridgeAnswer::Api { room, to, .. } => {
                let reply = outcome
                    .map(|presence| data(&room, presence))
                    .map_err(|Unavailable| ApiError::unavailable());
                outbox.send(to.shard, BusMsg::ApiDone { call: to.id, reply });
            }
            _ => {}
        }
    }

    /// A Server API call's read or change of `room` (section 12), which
    /// Redis answers.
    pub fn api_room(&mut self, room: Arc<str>, ask: RoomAsk, to: ApiTo) {
        let answer = BridgeAnswer::Api {
            owner: self.shard,
            room: room.clone(),
            to,
        };
        self.requests.push(match ask {
            RoomAsk::Presence => BridgeRequest::PresenceGet { room, answer },
            RoomAsk::History(query) => BridgeRequest::History {
                room,
                query: OwnedQuery {
                    // Redis takes a count it can hold; no room keeps more.
                    history: crate::rooms::api::recovery(&query)
                        .history
                        .map(|k| k.min(crate::codes::limits::MAX_HISTORY as u64)),
                    since: query.since,
                    epoch: query.epoch.map(Into::into),
                },
                answer,
            },
            RoomAsk::HistoryRemove => BridgeRequest::HistoryRemove { room, answer },
        });
    }

    /// The cluster's distinct users of each of `rooms`, for call `to`.
    pub fn api_room_users(&mut self, rooms: Vec<Arc<str>>, to: ApiTo) {
        let answer = BridgeAnswer::Api {
            owner: to.shard,
            room: Arc::from(""),
            to,
        };
        self.requests
            .push(BridgeRequest::RoomUsers { rooms, answer });
    }

    /// A Server API message for every node (`to: None`) or one.
    pub fn api_cast(&mut self, to: Option<Box<str>>, payload: Vec<u8>) {
        self.requests.push(BridgeRequest::ApiCast { to, payload });
    }

    /// What Redis answered a call's `history` or `history_remove`.
    pub fn api_room_answered(
        &self,
        outbox: &mut Outbox,
        answer: BridgeAnswer,
        outcome: Result<Option<History>, Unavailable>,
    ) {
        let BridgeAnswer::Api { room, to, .. } = answer else {
            return;
        };
        let reply = match outcome {
            Ok(Some(history)) => {
                let state = room_state(&room, &history, 0);
                Ok(wire::history_data(
                    &state,
                    history.messages.iter().map(Vec::as_slice),
                ))
            }
            Ok(None) => Ok(b"{}".to_vec()),
            Err(Unavailable) => Err(ApiError::unavailable()),
        };
        outbox.send(to.shard, BusMsg::ApiDone { call: to.id, reply });
    }

    /// Redis is reachable again: every room this shard owns is synced to
    /// this node's connections in it.
    pub fn resync(&mut self, table: &RoomTable) {
        let mut rooms: HashMap<String, Vec<NodeUser>> = HashMap::new();
        table.each_user(|room, user, connections, name| {
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
            self.requests.push(BridgeRequest::Sync {
                room: room.into(),
                users,
            });
        }
    }

    /// At the owner of the online set: a `/ws` connection of `user` on
    /// this node opened (`up`) or closed; Redis counts it for `user:send`
    /// and `system:broadcast`.
    pub fn online(&mut self, user: Arc<str>, up: bool) {
        let first_here = up && self.online.is_empty();
        if up {
            *self.online.entry(user.clone()).or_default() += 1;
        } else {
            let Some(count) = self.online.get_mut(&user) else {
                return;
            };
            *count = count.saturating_sub(1);
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
        self.requests.push(BridgeRequest::Online {
            change: Box::new(change),
            n: if up { 1 } else { -1 },
            first_here,
            last_here,
        });
    }

    /// `user:send` (`to`) or `system:broadcast` (`None`) across the
    /// cluster: published once on the direct channel; every node delivers
    /// to its own connections, and the ack counts those Redis knew of.
    pub fn send(
        &mut self,
        conn: ConnRef,
        sender: &str,
        to: Option<Box<str>>,
        text: Vec<u8>,
        id: Option<OwnedId>,
    ) {
        let minus = u64::from(to.as_deref().is_none_or(|to| to == sender));
        let origin = self.origin(None, Some(conn));
        self.requests.push(BridgeRequest::Send {
            to,
            text,
            origin,
            answer: BridgeAnswer::Sent { conn, id, minus },
        });
    }

    /// Redis answered a `Send`.
    pub fn sent(
        &self,
        outbox: &mut Outbox,
        answer: BridgeAnswer,
        outcome: Result<u64, Unavailable>,
    ) {
        let (conn, id, minus) = match answer {
            BridgeAnswer::Sent { conn, id, minus } => (conn, id, minus),
            BridgeAnswer::Volatile { sender, answer, .. } => {
                return match outcome {
                    Ok(_) => outbox.answer_volatile(sender, answer),
                    Err(Unavailable) => self.refuse(outbox, sender, answer),
                };
            }
            _ => return,
        };
        let text = match outcome {
            Ok(count) => {
                let Some(id) = id else { return };
                reply::count_ack(&id, "delivered", count.saturating_sub(minus))
            }
            Err(Unavailable) => {
                reply::failure_text(id.as_ref(), ErrorCode::Unavailable, UNAVAILABLE)
            }
        };
        outbox.send(conn.shard, BusMsg::Reply { conn, text });
    }

    /// Subscribes the room's channel when the first member or join comes.
    fn serve(&mut self, table: &RoomTable, room: &Arc<str>) {
        if table.connections(room) == 0 && !self.joining.contains_key(room) {
            self.requests.push(BridgeRequest::Serve {
                room: room.clone(),
                shard: self.shard,
            });
        }
    }

    /// Unsubscribes once no member and no join is left.
    fn unserve_if_idle(&mut self, table: &RoomTable, room: &Arc<str>) {
        if table.connections(room) == 0 && !self.joining.contains_key(room) {
            self.requests.push(BridgeRequest::Unserve {
                room: room.clone(),
                shard: self.shard,
            });
        }
    }

    /// The room's history for a join is in: the owner counts the member
    /// and answers its shard, before any event the history did not hold.
    pub fn joined(
        &mut self,
        table: &mut RoomTable,
        outbox: &mut Outbox,
        join: PendingJoin,
        outcome: Result<(History, u64), Unavailable>,
    ) {
        let room = join.room.clone();
        if let Some(count) = self.joining.get_mut(&room) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.joining.remove(&room);
            }
        }
        let conn = join.conn;
        match outcome {
            Ok((history, members)) => self.admit(table, outbox, &join, &history, members),
            Err(Unavailable) => {
                let text = join.answer.refused(ErrorCode::Unavailable, UNAVAILABLE);
                match (join.rejoin, text) {
                    // Still a member: only this request failed.
                    (true, Some(text)) => outbox.send(conn.shard, BusMsg::Reply { conn, text }),
                    (true, None) => {}
                    (false, text) => outbox.joined(room.clone(), conn, false, text),
                }
            }
        }
        self.unserve_if_idle(table, &room);
    }

    /// Redis counted a joiner in that this node does not admit (the room
    /// is full here): counted out again.
    fn count_out(&mut self, table: &RoomTable, join: &PendingJoin) {
        let text = wire::presence_leave(&join.room, &join.user);
        let change = self.presence_change(table, Mover::joining(join), text);
        self.requests.push(BridgeRequest::Leave {
            room: join.room.clone(),
            change: Box::new(change),
        });
    }

    fn admit(
        &mut self,
        table: &mut RoomTable,
        outbox: &mut Outbox,
        join: &PendingJoin,
        history: &History,
        members: u64,
    ) {
        let joiner = Joiner {
            shard: join.conn.shard,
            user_id: join.user.clone(),
            name: join.name.as_deref(),
            rejoin: join.rejoin,
        };
        let conn = join.conn;
        let (accepted, reply) = match table.admit(&join.room, &joiner) {
            // Redis announced the join to the whole cluster, this node included.
            Ok(_presence) => {
                let state = room_state(&join.room, history, members);
                let messages = history.messages.iter().map(Vec::as_slice);
                let text = join
                    .answer
                    .admitted(&state, || wire::join_data(&state, messages));
                (true, text)
            }
            Err(_) => {
                self.count_out(table, join);
                (
                    false,
                    join.answer.refused(ErrorCode::RoomFull, "room is full"),
                )
            }
        };
        outbox.joined(join.room.clone(), conn, accepted, reply);
    }

    /// How an event from the room's channel is fanned out: a room event
    /// timed from when its publisher's shard read it (when this node
    /// published it), presence as presence; the publisher of this node
    /// that asked not to get it back is left out.
    pub fn event_fanout(&self, event: &RoomEvent, now: Instant) -> (Option<ConnRef>, Fanout) {
        let (exclude, read_at) = match event.from_here {
            Some(FromHere {
                read_micros,
                exclude,
            }) => {
                let read_at = self
                    .side
                    .started
                    .checked_add(Duration::from_micros(read_micros));
                (exclude, read_at.unwrap_or(now))
            }
            None => (None, now),
        };
        let fanout = if event.volatile {
            Fanout::Volatile
        } else if event.presence {
            Fanout::Other
        } else {
            Fanout::RoomEvent { read_at }
        };
        (exclude, fanout)
    }
}

/// A room as a join's ack reports it, from what Redis answered.
fn room_state<'a>(room: &'a str, history: &'a History, members: u64) -> wire::RoomState<'a> {
    wire::RoomState {
        room,
        epoch: &history.epoch,
        seq: history.seq,
        recovered: history.recovered,
        members,
    }
}
