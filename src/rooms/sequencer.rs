//! The one seam between local and Redis sequencing: who orders a room's
//! joins and events, keeps its history and counts its presence.
//!
//! `Local`: the room's owner shard, with its `RoomTable` (one process).
//! `Redis`: the cluster's Redis (`--redis`, section 10), reached through
//! the bridge; the owner stays this node's one door to the room and its
//! table counts only this node's members, for the fan-out.
//!
//! Every decision that differs between the two is a `match` in this file;
//! nothing else in the router asks which one it runs.

use crate::codes::ErrorCode;
use crate::conn::ConnRef;
use crate::proto::JoinRecovery;
use crate::proto::reply::{self, OwnedId};
use crate::proto::wire;
use crate::redis::requests::BridgeRequest;
use crate::rooms::bus::{BusMsg, Fanout, JoinAnswer, ToOwner};
use crate::rooms::cluster::{BridgeAnswer, FromBridge, PendingJoin, PublishAtOwner, RedisRooms};
use crate::rooms::outlet::Outlet;
use crate::rooms::router::{Router, Time};
use crate::rooms::table::{Joiner, Publish, Recovery};
use std::sync::Arc;

/// Who sequences the rooms.
pub enum Sequencer {
    /// Each room's owner shard.
    Local,
    /// The cluster's Redis.
    Redis(Box<RedisRooms>),
}

impl Sequencer {
    /// Moves what is queued for the bridge to `into` (nothing in one
    /// process).
    pub fn move_bridge_requests(&mut self, into: &mut Vec<BridgeRequest<BridgeAnswer>>) {
        match self {
            Sequencer::Local => {}
            Sequencer::Redis(redis) => redis.move_requests(into),
        }
    }
}

impl Router {
    /// A room's message at its owner: joins, leaves, publishes,
    /// `presence:get`, and the online set of cluster mode.
    pub(super) fn at_owner(&mut self, message: BusMsg, time: Time, out: &mut impl Outlet) {
        match message {
            BusMsg::Join {
                room,
                conn,
                user,
                name,
                recovery,
                rejoin,
                answer,
            } => {
                let owner = self.shard();
                let join = PendingJoin {
                    owner,
                    room,
                    conn,
                    user,
                    name,
                    rejoin,
                    answer,
                };
                self.join_at_owner(join, &recovery, time);
            }
            BusMsg::Leave { room, conn, user } => self.leave_at_owner(&room, conn, &user, time),
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
                let message = Publish {
                    room: &room,
                    event: &event,
                    data: &data,
                    from: &from,
                    ts_ms: time.unix_ms,
                };
                let publish = PublishAtOwner {
                    room: &room,
                    message: &message,
                    sender,
                    echo,
                    answer,
                    read_at,
                };
                self.publish_at_owner(publish, time, out);
            }
            BusMsg::Volatile(event) => self.volatile_at_owner(event, time, out),
            BusMsg::PresenceGet {
                room,
                conn,
                id: Some(id),
            } => match &mut self.sequencer {
                Sequencer::Local => {
                    let text = reply::ack_text(&id, &self.table.presence(&room));
                    self.outbox.send(conn.shard, BusMsg::Reply { conn, text });
                }
                Sequencer::Redis(redis) => redis.presence_get(room, conn, id),
            },
            BusMsg::Online { user, up } => match &mut self.sequencer {
                Sequencer::Local => {
                    if let Some(notes) = &mut self.table.notes {
                        notes.online(&user, up);
                    }
                }
                Sequencer::Redis(redis) => redis.online(user, up),
            },
            _ => {}
        }
    }

    /// A volatile event (section 14): written once, with no `seq`, and
    /// fanned out here or handed to Redis as one plain publish.
    fn volatile_at_owner(&mut self, event: ToOwner, time: Time, out: &mut impl Outlet) {
        out.metrics().volatile.inc();
        let text = wire::volatile_message(
            &event.event,
            &event.room,
            &event.data,
            &event.from,
            time.unix_ms,
        );
        let (room, sender, answer) = (event.room, event.sender, event.answer);
        let exclude = (!event.echo).then_some(sender);
        match &mut self.sequencer {
            Sequencer::Local => {
                let frame = wire::text_frame(&text);
                let shards = self.table.member_shards(&room);
                self.outbox
                    .fan_out(shards, &room, &frame, exclude, Fanout::Volatile);
                self.outbox.answer_volatile(sender, answer);
            }
            Sequencer::Redis(redis) => redis.volatile(room, text, exclude, sender, answer),
        }
    }

    fn join_at_owner(&mut self, join: PendingJoin, recovery: &JoinRecovery, time: Time) {
        match &mut self.sequencer {
            Sequencer::Local => {
                let joiner = Joiner {
                    shard: join.conn.shard,
                    user_id: join.user,
                    name: join.name.as_deref(),
                    rejoin: join.rejoin,
                };
                let recovery = Recovery {
                    history: recovery.history,
                    since: recovery.since,
                    epoch: recovery.epoch.as_deref(),
                };
                self.join_here(join.room, join.conn, &joiner, &recovery, &join.answer, time);
            }
            Sequencer::Redis(redis) => {
                redis.join(&mut self.table, &mut self.outbox, join, recovery);
            }
        }
    }

    fn leave_at_owner(&mut self, room: &Arc<str>, conn: ConnRef, user: &Arc<str>, time: Time) {
        match &mut self.sequencer {
            Sequencer::Local => {
                let presence = self.table.leave(room, conn.shard, user, time.now);
                if let Some(frame) = presence {
                    let shards = self.table.member_shards(room);
                    self.outbox
                        .fan_out(shards, room, &frame, None, Fanout::Other);
                }
            }
            Sequencer::Redis(redis) => {
                self.table.leave(room, conn.shard, user, time.now);
                redis.leave(&self.table, room, user);
            }
        }
    }

    fn publish_at_owner(&mut self, publish: PublishAtOwner<'_>, time: Time, out: &mut impl Outlet) {
        match &mut self.sequencer {
            Sequencer::Local => {
                out.metrics().publishes.inc();
                let published = self.table.publish(publish.message, time.now);
                let exclude = (!publish.echo).then_some(publish.sender);
                let room = publish.room;
                let shards = self.table.member_shards(room);
                let fanout = Fanout::RoomEvent {
                    read_at: publish.read_at,
                };
                self.outbox
                    .fan_out(shards, room, &published.frame, exclude, fanout);
                self.outbox
                    .answer_publish(publish.sender, publish.answer, published.seq);
            }
            Sequencer::Redis(redis) => redis.publish(publish),
        }
    }

    /// The owner admits a member (or refuses: the room is full), announces
    /// it to the room's presence and answers the member's shard.
    fn join_here(
        &mut self,
        room: Arc<str>,
        conn: ConnRef,
        joiner: &Joiner<'_>,
        recovery: &Recovery<'_>,
        answer: &JoinAnswer,
        time: Time,
    ) {
        let (accepted, reply) = match self.table.join(&room, joiner, recovery, time.now) {
            Ok(joined) => {
                if let Some(frame) = joined.presence {
                    let shards = self.table.member_shards(&room);
                    self.outbox
                        .fan_out(shards, &room, &frame, Some(conn), Fanout::Other);
                }
                let text = self
                    .table
                    .state(&room)
                    .and_then(|state| answer.admitted(&state, || joined.data));
                (true, text)
            }
            Err(_) => (false, answer.refused(ErrorCode::RoomFull, "room is full")),
        };
        self.outbox.joined(room, conn, accepted, reply);
    }

    /// Tells the owner of the online set that a `/ws` connection of
    /// `user` opened (`up`) or closed here: in cluster mode, for Redis's
    /// online set; in one process, for webhooks (`user.online`/`offline`).
    pub(super) fn count_online(&mut self, user: &Arc<str>, up: bool) {
        let counted = match self.sequencer {
            Sequencer::Local => self.table.notes.is_some(),
            Sequencer::Redis(_) => true,
        };
        if counted {
            let owner = self.owner(crate::redis::ONLINE);
            let user = user.clone();
            self.outbox.send(owner, BusMsg::Online { user, up });
        }
    }

    /// `user:send` (`to`) or `system:broadcast` (`None`) from `conn`.
    pub(super) fn send_to_users(
        &mut self,
        conn: ConnRef,
        sender: &str,
        to: Option<Box<str>>,
        text: Vec<u8>,
        id: Option<OwnedId>,
    ) {
        match &mut self.sequencer {
            Sequencer::Local => self.gather_from_every_shard(conn, to, &text, id),
            Sequencer::Redis(redis) => redis.send(conn, sender, to, text, id),
        }
    }

    /// What the bridge sent this shard (cluster mode).
    pub fn on_bridge(&mut self, message: FromBridge, time: Time, out: &mut impl Outlet) {
        let Sequencer::Redis(redis) = &mut self.sequencer else {
            return;
        };
        match message {
            FromBridge::Sequenced(BridgeAnswer::Publish { sender, answer, .. }, outcome) => {
                match outcome {
                    Ok(sequenced) => {
                        out.metrics().publishes.inc();
                        self.outbox.answer_publish(sender, answer, sequenced.seq);
                    }
                    Err(_) => redis.refuse(&mut self.outbox, sender, answer),
                }
            }
            FromBridge::Joined(BridgeAnswer::Join(join), outcome) => {
                redis.joined(&mut self.table, &mut self.outbox, *join, outcome);
            }
            FromBridge::Presence(answer, outcome) => {
                redis.presence(&mut self.outbox, answer, outcome);
            }
            FromBridge::RoomRead(answer, outcome) => {
                redis.api_room_answered(&mut self.outbox, answer, outcome);
            }
            FromBridge::RoomUsers(BridgeAnswer::Api { to, .. }, outcome) => {
                self.api_room_users(to.id, outcome.ok(), time, out);
            }
            FromBridge::RoomUsers(..) => {}
            FromBridge::Event(event) => {
                let (exclude, fanout) = redis.event_fanout(&event, time.now);
                if matches!(fanout, Fanout::RoomEvent { .. }) {
                    self.table.count_published(&event.room);
                }
                let shards = self.table.member_shards(&event.room);
                self.outbox
                    .fan_out(shards, &event.room, &event.frame, exclude, fanout);
            }
            FromBridge::Resync => redis.resync(&self.table),
            FromBridge::Api(payload) => self.on_cluster_api(payload, time, out),
            FromBridge::Sent(answer, outcome) => redis.sent(&mut self.outbox, answer, outcome),
            FromBridge::Direct(message) => {
                let all;
                let keys = match &message.to {
                    Some(to) => self.users.keys(to),
                    None => {
                        all = self.users.all();
                        &all
                    }
                };
                let frame = (&message.frame, &*message.twin);
                self.deliver_direct(keys, frame, message.exclude, time, out);
            }
            FromBridge::Sequenced(..) | FromBridge::Joined(..) => {}
        }
    }

    /// A request the bridge could not take (it has stopped): its asker
    /// hears `UNAVAILABLE` as if Redis had refused it.
    pub fn bridge_refused(
        &mut self,
        request: BridgeRequest<BridgeAnswer>,
        time: Time,
        out: &mut impl Outlet,
    ) {
        if let Some(message) = FromBridge::refused(request) {
            self.on_bridge(message, time, out);
        }
    }
}
