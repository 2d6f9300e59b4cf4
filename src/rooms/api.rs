//! The Server API (section 12) carried out by the routers: a call runs on
//! its connection's shard, one command after the other; each command goes
//! where its work is, and its reply comes back.
//!
//! - `publish` and `broadcast`: each message to its room's owner, as a
//!   publish from the API (`PublishAnswer::Api`), sequenced like any other;
//! - `presence`, `history`, `history_remove`: to the room's owner;
//! - the node commands (`disconnect`, `subscribe`, `unsubscribe`, `rooms`,
//!   `user`, `info`): a *gather* asks every shard of this node for its
//!   part and adds them up; in a cluster the command also goes to every
//!   other live node over Redis (`api::cluster`), and the reply waits for
//!   their parts until `--api-timeout`, naming those that did not answer.
//!
//! The ordering promises hold because a shard answers its part only once
//! its work is done: a `subscribe`'s part waits for the owners to count
//! the connections in (so every later message reaches them), and an
//! `unsubscribe` or `disconnect` takes the connections off this shard's
//! member lists before it answers (so no later message does).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::api::cluster::{self, NodeMessage};
use crate::api::command::{BroadcastRoom, HistoryQuery};
use crate::api::part::{NodeInfo, Part};
use crate::api::reply::Reply;
use crate::api::{ApiError, Call, Command, NodeCommand};
use crate::conn::ConnRef;
use crate::json::ObjectWriter;
use crate::proto::JoinRecovery;
use crate::proto::envelope::Parser;
use crate::proto::names::pattern_matches;
use crate::proto::publish::NO_SEQ;
use crate::rooms::bus::{ApiTo, BusMsg, JoinAnswer, PublishAnswer, RoomAsk, ToOwner};
use crate::rooms::outlet::{ApiJoin, Outlet};
use crate::rooms::router::{Router, Time};
use crate::rooms::sequencer::Sequencer;
use crate::rooms::table::Recovery;

/// The Server API's state on one shard.
#[derive(Default)]
pub struct ApiState {
    next_id: u64,
    /// Calls whose connection is on this shard.
    calls: HashMap<u64, CallState>,
    /// Gathers this shard adds up: for its own calls, or for another
    /// node's (on the shard the bridge hands API messages to).
    gathers: HashMap<u64, Gather>,
    /// This shard's part of a `subscribe`, waiting for the owners.
    tallies: HashMap<u64, Tally>,
    /// Joins of this shard's connections for a `subscribe`: the tally
    /// each counts in.
    joins: HashMap<(Arc<str>, ConnRef), u64>,
    /// Gathers whose command came from some shards, not all yet: how
    /// many (`BusMsg::ApiShard`).
    relayed: HashMap<ApiTo, usize>,
    /// For the parts other nodes send.
    parser: Parser,
}

impl ApiState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

struct CallState {
    conn: ConnRef,
    /// `from` of what it publishes.
    from: Arc<str>,
    batch: bool,
    commands: VecDeque<Result<Command, ApiError>>,
    replies: Vec<Reply>,
    step: Step,
}

/// What the current command of a call waits for.
enum Step {
    Idle,
    /// The `seq` of each message (`publish`, `broadcast`).
    Publishing(Publishing),
    /// The room owner's reply.
    Room,
    /// This node's gather and the other nodes' parts.
    Nodes(NodeWait),
}

struct Publishing {
    /// Whether it is a `broadcast` (each room its own result) or a
    /// `publish` (one refused message fails the command).
    broadcast: bool,
    rooms: Vec<Arc<str>>,
    outcomes: Vec<Option<Result<u64, ApiError>>>,
    missing: usize,
}

struct NodeWait {
    command: Arc<NodeCommand>,
    part: Part,
    /// This node's part is in.
    local: bool,
    /// The other live nodes, and those that answered.
    expected: Vec<Box<str>>,
    answered: Vec<Box<str>>,
    deadline: Instant,
    /// Every part is in (or the deadline passed) and a cluster `rooms`
    /// waits for Redis to count each room's distinct users: the nodes
    /// that did not answer.
    counting: Option<Vec<Box<str>>>,
}

/// Who a gather's part is for.
enum Origin {
    /// A call of this shard.
    Call(u64),
    /// Call `op` of node `node`, answered over Redis.
    Node { node: String, op: u64 },
}

struct Gather {
    origin: Origin,
    command: Arc<NodeCommand>,
    part: Part,
    shards_left: usize,
}

struct Tally {
    to: ApiTo,
    count: u64,
    pending: usize,
}

impl Router {
    /// A call from connection `conn` starts (its own shard's bus message,
    /// so that it runs with the outlet at hand).
    pub(super) fn api_request(&mut self, conn: ConnRef, call: Box<Call>, from: Arc<str>) {
        let shard = self.shard();
        self.outbox
            .send(shard, BusMsg::ApiCall { conn, call, from });
    }

    /// The Server API's bus messages.
    pub(super) fn on_api_bus(&mut self, message: BusMsg, time: Time, out: &mut impl Outlet) {
        match message {
            BusMsg::ApiCall { conn, call, from } => {
                let id = self.api.next_id();
                let state = CallState {
                    conn,
                    from,
                    batch: call.batch,
                    commands: call.commands.into(),
                    replies: Vec::new(),
                    step: Step::Idle,
                };
                self.api.calls.insert(id, state);
                self.api_next(id, time, out);
            }
            BusMsg::ApiPublished { call, index, seq } => {
                self.api_published(call, index, seq, time, out)
            }
            BusMsg::ApiRoom { room, ask, to } => {
                let reply = self.api_at_owner(&room, ask, to, time);
                if let Some(reply) = reply {
                    self.outbox
                        .send(to.shard, BusMsg::ApiDone { call: to.id, reply });
                }
            }
            BusMsg::ApiDone { call, reply } => self.api_command_done(call, reply, time, out),
            BusMsg::ApiRelay { command, to } => {
                for shard in 0..self.outbox.shards() {
                    let command = command.clone();
                    self.outbox.send(shard, BusMsg::ApiShard { command, to });
                }
            }
            BusMsg::ApiShard { command, to } => {
                let from_all = self.outbox.shards();
                let arrived = self.api.relayed.entry(to).or_default();
                *arrived += 1;
                if *arrived == from_all {
                    self.api.relayed.remove(&to);
                    self.api_on_shard(&command, to, time, out);
                }
            }
            BusMsg::ApiPart { gather, part } => self.api_part(gather, part, time, out),
            BusMsg::ApiAnswer { op, from, result } => self.api_answer(op, from, result, time, out),
            _ => {}
        }
    }

    /// Runs the call's commands from the next one on, until one has to
    /// wait or none is left (then the call is answered).
    fn api_next(&mut self, id: u64, time: Time, out: &mut impl Outlet) {
        loop {
            let Some(call) = self.api.calls.get_mut(&id) else {
                return;
            };
            let Some(command) = call.commands.pop_front() else {
                if let Some(call) = self.api.calls.remove(&id) {
                    out.api_answered(call.conn, call.batch, &call.replies, time.now);
                }
                return;
            };
            let reply = match command {
                Err(error) => Some(Err(error)),
                Ok(command) => self.api_start(id, command, time, out),
            };
            match reply {
                Some(reply) => {
                    if let Some(call) = self.api.calls.get_mut(&id) {
                        call.replies.push(reply);
                    }
                }
                None => return,
            }
        }
    }

    /// The current command's reply is in: the next one runs.
    fn api_command_done(&mut self, id: u64, reply: Reply, time: Time, out: &mut impl Outlet) {
        let Some(call) = self.api.calls.get_mut(&id) else {
            return;
        };
        call.step = Step::Idle;
        call.replies.push(reply);
        self.api_next(id, time, out);
    }

    /// Starts `command`; its reply when it needs no one else, else `None`
    /// (the call waits).
    fn api_start(
        &mut self,
        id: u64,
        command: Command,
        time: Time,
        out: &mut impl Outlet,
    ) -> Option<Reply> {
        let to = ApiTo {
            shard: self.shard(),
            id,
        };
        let step = match command {
            Command::Publish(messages) => {
                let rooms = messages.iter().map(|m| Ok(m.room.clone())).collect();
                let events = messages.into_iter().map(|m| (m.event, m.data, m.volatile));
                self.api_publish(id, rooms, events, false, time)
            }
            Command::Broadcast {
                rooms,
                event,
                data,
                volatile,
            } => {
                let events = std::iter::repeat_n((event, data, volatile), rooms.len());
                self.api_publish(id, rooms, events, true, time)
            }
            Command::Presence { room } => self.api_ask_owner(room, RoomAsk::Presence, to),
            Command::History { room, query } => {
                self.api_ask_owner(room, RoomAsk::History(query), to)
            }
            Command::HistoryRemove { room } => self.api_ask_owner(room, RoomAsk::HistoryRemove, to),
            Command::Node(command) => self.api_gather_nodes(id, command, time, out),
        };
        match step {
            Ok(step) => {
                let call = self.api.calls.get_mut(&id)?;
                call.step = step;
                None
            }
            Err(reply) => Some(reply),
        }
    }

    /// Sends each message to its room's owner; a room that is an error
    /// already (a bad name in a `broadcast`) keeps it.
    fn api_publish(
        &mut self,
        id: u64,
        rooms: Vec<BroadcastRoom>,
        events: impl Iterator<Item = (Box<str>, Box<[u8]>, bool)>,
        broadcast: bool,
        time: Time,
    ) -> Result<Step, Reply> {
        let (conn, from) = match self.api.calls.get(&id) {
            Some(call) => (call.conn, call.from.clone()),
            None => return Err(Err(ApiError::unavailable())),
        };
        let mut names = Vec::with_capacity(rooms.len());
        let mut outcomes = Vec::with_capacity(rooms.len());
        let mut missing = 0;
        for (index, (room, (event, data, volatile))) in rooms.into_iter().zip(events).enumerate() {
            match room {
                Ok(room) => {
                    names.push(room.clone());
                    outcomes.push(None);
                    missing += 1;
                    let publish = ToOwner {
                        room,
                        event,
                        data,
                        from: from.clone(),
                        sender: conn,
                        echo: true,
                        answer: PublishAnswer::Api { call: id, index },
                    };
                    let message = publish.into_message(volatile, time.now);
                    self.send_to_owner(message);
                }
                Err((name, error)) => {
                    names.push(Arc::from(name));
                    outcomes.push(Some(Err(error)));
                }
            }
        }
        let publishing = Publishing {
            broadcast,
            rooms: names,
            outcomes,
            missing,
        };
        if missing == 0 {
            return Err(publishing.result());
        }
        Ok(Step::Publishing(publishing))
    }

    fn api_published(
        &mut self,
        id: u64,
        index: usize,
        seq: Option<u64>,
        time: Time,
        out: &mut impl Outlet,
    ) {
        let Some(CallState {
            step: Step::Publishing(publishing),
            ..
        }) = self.api.calls.get_mut(&id)
        else {
            return;
        };
        if let Some(slot @ None) = publishing.outcomes.get_mut(index) {
            *slot = Some(seq.ok_or_else(ApiError::unavailable));
            publishing.missing -= 1;
        }
        if publishing.missing == 0 {
            let reply = publishing.result();
            self.api_command_done(id, reply, time, out);
        }
    }

    fn api_ask_owner(&mut self, room: Arc<str>, ask: RoomAsk, to: ApiTo) -> Result<Step, Reply> {
        let owner = self.owner(&room);
        self.outbox.send(owner, BusMsg::ApiRoom { room, ask, to });
        Ok(Step::Room)
    }

    /// At a room's owner: the reply to `ask` (`None`: Redis will answer).
    fn api_at_owner(
        &mut self,
        room: &Arc<str>,
        ask: RoomAsk,
        to: ApiTo,
        time: Time,
    ) -> Option<Reply> {
        match &mut self.sequencer {
            Sequencer::Local => Some(Ok(match ask {
                RoomAsk::Presence => self.table.presence(room),
                RoomAsk::History(query) => self.table.history(room, &recovery(&query), time.now),
                RoomAsk::HistoryRemove => {
                    self.table.remove_history(room);
                    b"{}".to_vec()
                }
            })),
            Sequencer::Redis(redis) => {
                redis.api_room(room.clone(), ask, to);
                None
            }
        }
    }

    /// Asks every shard of this node, and in a cluster every other live
    /// node, for its part of `command`.
    fn api_gather_nodes(
        &mut self,
        id: u64,
        command: NodeCommand,
        time: Time,
        out: &mut impl Outlet,
    ) -> Result<Step, Reply> {
        let command = Arc::new(command);
        let facts = out.node_facts();
        let expected: Vec<Box<str>> = match &self.sequencer {
            Sequencer::Local => Vec::new(),
            Sequencer::Redis(_) => facts
                .live_nodes
                .iter()
                .filter(|n| ***n != *facts.node)
                .cloned()
                .collect(),
        };
        let op = cluster::op(self.shard(), id);
        if let (Sequencer::Redis(redis), false) = (&mut self.sequencer, expected.is_empty()) {
            redis.api_cast(None, cluster::write_command(op, &facts.node, &command));
        }
        self.api_gather(Origin::Call(id), command.clone());
        Ok(Step::Nodes(NodeWait {
            part: Part::empty_for(&command),
            command,
            local: false,
            expected,
            answered: Vec::new(),
            deadline: time.now + facts.api_timeout,
            counting: None,
        }))
    }

    /// Starts a gather of every shard's part of `command` on this node.
    ///
    /// The command reaches each shard through every shard (`ApiRelay`,
    /// then `ApiShard` from each): the channel between two shards is
    /// FIFO, so a shard carries it out only after every room message that
    /// any shard sent it before the command came by. A message published
    /// before a `disconnect` (acked, or in a cluster pushed by Redis
    /// before the command) thus reaches the members before their close,
    /// whichever shard owns its room.
    fn api_gather(&mut self, origin: Origin, command: Arc<NodeCommand>) {
        let gather = self.api.next_id();
        let shards = self.outbox.shards();
        let to = ApiTo {
            shard: self.shard(),
            id: gather,
        };
        for shard in 0..shards {
            let command = command.clone();
            self.outbox.send(shard, BusMsg::ApiRelay { command, to });
        }
        // A shard's share of `info` is its count of rooms; the node's
        // figures join them once all are in (`api_part`).
        let part = match &*command {
            NodeCommand::Info => Part::Count(0),
            command => Part::empty_for(command),
        };
        self.api.gathers.insert(
            gather,
            Gather {
                origin,
                part,
                command,
                shards_left: shards,
            },
        );
    }

    /// This shard's part of `command`, for gather `to`: carried out on its
    /// connections, or read from the rooms it owns.
    fn api_on_shard(
        &mut self,
        command: &NodeCommand,
        to: ApiTo,
        time: Time,
        out: &mut impl Outlet,
    ) {
        let part = match command {
            NodeCommand::Disconnect {
                user,
                conn_id,
                code,
                reason,
            } => {
                let keys = self.users.keys(user).to_vec();
                let close = (*code, &**reason);
                let n = keys
                    .into_iter()
                    .filter(|&key| out.api_disconnect(key, conn_id.as_deref(), close, time.now))
                    .count();
                Part::Count(n as u64)
            }
            NodeCommand::Subscribe {
                user,
                room,
                conn_id,
            } => match self.api_subscribe(user, room, conn_id.as_deref(), to, out) {
                Some(n) => Part::Count(n),
                None => return,
            },
            NodeCommand::Unsubscribe {
                user,
                room,
                conn_id,
            } => {
                let keys = self.users.keys(user).to_vec();
                let mut n = 0;
                for key in keys {
                    if let Some((conn, user)) =
                        out.api_unsubscribe(key, conn_id.as_deref(), room, time.now)
                    {
                        self.leave(conn, room.clone(), user);
                        n += 1;
                    }
                }
                Part::Count(n)
            }
            NodeCommand::User { user } => {
                let keys = self.users.keys(user);
                Part::Conns(
                    keys.iter()
                        .filter_map(|&key| out.api_describe(key))
                        .collect(),
                )
            }
            NodeCommand::Rooms { pattern } => {
                let matches =
                    |room: &str| pattern.as_deref().is_none_or(|p| pattern_matches(p, room));
                Part::rooms(self.table.rooms_with_members(matches))
            }
            NodeCommand::Info => {
                Part::Count(self.table.rooms_with_members(|_| true).count() as u64)
            }
        };
        self.outbox.send(
            to.shard,
            BusMsg::ApiPart {
                gather: to.id,
                part,
            },
        );
    }

    /// Puts this shard's connections of `user` in `room`; the count when
    /// no owner needs asking, else `None` (the part goes once they answer).
    fn api_subscribe(
        &mut self,
        user: &str,
        room: &Arc<str>,
        conn_id: Option<&str>,
        to: ApiTo,
        out: &mut impl Outlet,
    ) -> Option<u64> {
        let keys = self.users.keys(user).to_vec();
        let tally = self.api.next_id();
        let (mut count, mut pending) = (0, 0);
        for key in keys {
            match out.api_subscribe(key, conn_id, room) {
                ApiJoin::Already => count += 1,
                ApiJoin::Skipped => {}
                ApiJoin::Joining { conn, user, name } => {
                    pending += 1;
                    self.api.joins.insert((room.clone(), conn), tally);
                    self.join_for_api(room.clone(), conn, user, name);
                }
            }
        }
        if pending == 0 {
            return Some(count);
        }
        self.api.tallies.insert(tally, Tally { to, count, pending });
        None
    }

    /// The owner answered a join: one made for a `subscribe` counts in its
    /// tally, whose part goes once every join of it is answered.
    pub(super) fn api_join_answered(&mut self, room: &Arc<str>, conn: ConnRef, accepted: bool) {
        let Some(tally_id) = self.api.joins.remove(&(room.clone(), conn)) else {
            return;
        };
        let Some(tally) = self.api.tallies.get_mut(&tally_id) else {
            return;
        };
        tally.pending -= 1;
        tally.count += u64::from(accepted);
        if tally.pending == 0 {
            let tally = self.api.tallies.remove(&tally_id).expect("present");
            let part = Part::Count(tally.count);
            self.outbox.send(
                tally.to.shard,
                BusMsg::ApiPart {
                    gather: tally.to.id,
                    part,
                },
            );
        }
    }

    /// One shard's part of a gather; once all are in, this node's part
    /// goes to its call, or to the node that asked.
    fn api_part(&mut self, gather: u64, part: Part, time: Time, out: &mut impl Outlet) {
        let Some(g) = self.api.gathers.get_mut(&gather) else {
            return;
        };
        g.part.merge(part);
        g.shards_left -= 1;
        if g.shards_left > 0 {
            return;
        }
        let g = self.api.gathers.remove(&gather).expect("present");
        let facts = out.node_facts();
        let part = match (&*g.command, g.part) {
            (NodeCommand::Info, Part::Count(rooms)) => Part::Nodes(vec![NodeInfo {
                node: facts.node.to_string(),
                version: facts.version.to_owned(),
                uptime_seconds: facts.uptime_seconds,
                connections: facts.connections,
                users: facts.users,
                rooms,
            }]),
            (_, part) => part,
        };
        match g.origin {
            Origin::Call(id) => {
                let Some(CallState {
                    step: Step::Nodes(wait),
                    ..
                }) = self.api.calls.get_mut(&id)
                else {
                    return;
                };
                wait.part.merge(part);
                wait.local = true;
                self.api_nodes_settle(id, time, out, false);
            }
            Origin::Node { node, op } => {
                if let Sequencer::Redis(redis) = &mut self.sequencer {
                    let answer = cluster::write_answer(op, &facts.node, &g.command, &part);
                    redis.api_cast(Some(node.into()), answer);
                }
            }
        }
    }

    /// A call waiting for nodes is answered once every node's part is in,
    /// or (`timed_out`) with what came, naming the nodes that did not answer.
    fn api_nodes_settle(&mut self, id: u64, time: Time, out: &mut impl Outlet, timed_out: bool) {
        let shard = self.shard();
        let Some(CallState {
            step: Step::Nodes(wait),
            ..
        }) = self.api.calls.get_mut(&id)
        else {
            return;
        };
        let missing: Vec<Box<str>> = wait
            .expected
            .iter()
            .filter(|n| !wait.answered.contains(n))
            .cloned()
            .collect();
        if wait.counting.is_some() || !wait.local || (!missing.is_empty() && !timed_out) {
            return;
        }
        // In a cluster each node counts its own users of a room: Redis
        // counts the distinct ones of the rooms listed by several nodes
        // (a room on one node has its count already).
        let shared: Vec<Arc<str>> = match &wait.part {
            Part::Rooms { rooms, .. } => rooms
                .iter()
                .filter(|r| r.shared)
                .map(|r| r.room.clone())
                .collect(),
            _ => Vec::new(),
        };
        if let (Sequencer::Redis(redis), false) = (&mut self.sequencer, shared.is_empty()) {
            redis.api_room_users(shared, ApiTo { shard, id });
            wait.counting = Some(missing);
            return;
        }
        let mut result = Vec::with_capacity(256);
        wait.part.write_result(&wait.command, &missing, &mut result);
        self.api_command_done(id, Ok(result), time, out);
    }

    /// Redis counted the distinct users of a cluster `rooms`' shared
    /// rooms, in order (`None`: it could not).
    pub(super) fn api_room_users(
        &mut self,
        id: u64,
        counts: Option<Vec<u64>>,
        time: Time,
        out: &mut impl Outlet,
    ) {
        let Some(CallState {
            step: Step::Nodes(wait),
            ..
        }) = self.api.calls.get_mut(&id)
        else {
            return;
        };
        let (Some(missing), Part::Rooms { rooms, .. }) = (wait.counting.take(), &mut wait.part)
        else {
            return;
        };
        let mut shared: Vec<_> = rooms.iter_mut().filter(|r| r.shared).collect();
        let reply = match counts {
            Some(counts) if counts.len() == shared.len() => {
                for (room, users) in shared.iter_mut().zip(counts) {
                    room.users = users;
                }
                let mut result = Vec::with_capacity(256);
                wait.part.write_result(&wait.command, &missing, &mut result);
                Ok(result)
            }
            _ => Err(ApiError::unavailable()),
        };
        self.api_command_done(id, reply, time, out);
    }

    /// A message from another node over Redis, on the shard the bridge
    /// hands them to: a command to gather here, or an answer for one of
    /// this node's calls.
    pub(super) fn api_from_node(&mut self, mut payload: Vec<u8>, out: &mut impl Outlet) {
        let Some(message) = cluster::read(&mut payload, &mut self.api.parser) else {
            return;
        };
        let here = out.node_facts().node;
        match message {
            NodeMessage::Command { from, .. } if *from == *here => {}
            NodeMessage::Command { op, from, command } => {
                self.api_gather(Origin::Node { node: from, op }, Arc::new(command));
            }
            NodeMessage::Answer { op, from, result } => {
                let shard = cluster::op_shard(op);
                self.outbox
                    .send(shard, BusMsg::ApiAnswer { op, from, result });
            }
        }
    }

    /// Node `from`'s part of call `op`.
    fn api_answer(
        &mut self,
        op: u64,
        from: String,
        mut result: Vec<u8>,
        time: Time,
        out: &mut impl Outlet,
    ) {
        let id = op & ((1 << 48) - 1);
        if cluster::op(self.shard(), id) != op {
            return;
        }
        let Some(CallState {
            step: Step::Nodes(wait),
            ..
        }) = self.api.calls.get_mut(&id)
        else {
            return;
        };
        let expected = wait.expected.iter().any(|n| **n == *from);
        let already = wait.answered.iter().any(|n| **n == *from);
        if !expected || already {
            return;
        }
        let Some(part) = Part::read_result(&wait.command, &mut result, &mut self.api.parser) else {
            return;
        };
        wait.part.merge(part);
        wait.answered.push(from.into());
        self.api_nodes_settle(id, time, out, false);
    }

    /// The earliest deadline of a call waiting for other nodes.
    pub fn api_deadline(&self) -> Option<Instant> {
        self.api
            .calls
            .values()
            .filter_map(|call| match &call.step {
                Step::Nodes(wait) if wait.local && wait.counting.is_none() => Some(wait.deadline),
                _ => None,
            })
            .min()
    }

    /// Calls past `--api-timeout` are answered with what came.
    pub fn api_tick(&mut self, time: Time, out: &mut impl Outlet) {
        let late: Vec<u64> = self
            .api
            .calls
            .iter()
            .filter(
                |(_, call)| matches!(&call.step, Step::Nodes(wait) if time.now >= wait.deadline),
            )
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.api_nodes_settle(id, time, out, true);
        }
    }
}

impl Publishing {
    /// `publish`: `{"results":[{"room","seq"}]}`, or `UNAVAILABLE` if a
    /// message was refused; `broadcast`: each room its own result.
    fn result(&self) -> Reply {
        if !self.broadcast
            && let Some(Err(error)) = self.outcomes.iter().flatten().find(|o| o.is_err())
        {
            return Err(error.clone());
        }
        let mut out = Vec::with_capacity(32 + 48 * self.rooms.len());
        let mut w = ObjectWriter::new(&mut out);
        w.objects(
            "results",
            self.rooms.iter().zip(&self.outcomes),
            |w, (room, outcome)| {
                w.str("room", room);
                match outcome {
                    // A volatile message has no `seq` (section 14).
                    Some(Ok(NO_SEQ)) => {}
                    Some(Ok(seq)) => w.u64("seq", *seq),
                    Some(Err(error)) => {
                        w.open("error");
                        w.str("code", error.code.as_str());
                        w.str("message", &error.message);
                        w.close();
                    }
                    None => {}
                }
            },
        );
        w.close();
        Ok(out)
    }
}

/// A `history` call as a join's recovery: without `limit` or `since`, the
/// whole retained history.
pub(super) fn recovery(query: &HistoryQuery) -> Recovery<'_> {
    let history = match (query.limit, query.since) {
        (None, None) => Some(u64::MAX),
        (limit, _) => limit,
    };
    Recovery {
        history,
        since: query.since,
        epoch: query.epoch.as_deref(),
    }
}

impl Router {
    /// A join of `conn` for a `subscribe`, as a `room:join` would send it.
    fn join_for_api(
        &mut self,
        room: Arc<str>,
        conn: ConnRef,
        user: Arc<str>,
        name: Option<Box<str>>,
    ) {
        self.note_join_out(room.clone(), conn);
        self.send_to_owner(BusMsg::Join {
            room,
            conn,
            user,
            name,
            recovery: JoinRecovery::default(),
            rejoin: false,
            answer: JoinAnswer::Subscribed,
        });
    }
}
