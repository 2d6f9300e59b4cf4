//! The router in memory: several shards' routers wired by a test bus, a
//! scripted Redis bridge, and an outlet that records what each connection
//! was given.

mod cluster;
mod delta;
mod local;
mod notes;
mod paced;
mod server_api;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{self, part::ConnInfo, reply::Reply};
use crate::config::RoomsConfig;
use crate::conn::ConnRef;
use crate::hooks::webhook::{EventType, Types, What};
use crate::metrics::ShardMetrics;
use crate::proto::publish::NO_SEQ;
use crate::proto::reply::OwnedId;
use crate::proto::{JoinRecovery, Request, publish, wire};
use crate::redis::requests::BridgeRequest;
use crate::rooms::bus::{Fanout, Twin};
use crate::rooms::cluster::{BridgeAnswer, ClusterSide, FromBridge};
use crate::rooms::delta::Encoding;
use crate::rooms::notes::NoteRules;
use crate::rooms::outlet::{ApiJoin, NodeFacts, Outlet};
use crate::rooms::{Asker, Router, RouterConfig, Time, owner_of};

/// What a connection was given, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// A room event (`Fanout::RoomEvent`).
    Event(String),
    /// Anything else delivered: presence, direct messages, broadcasts.
    Other(String),
    /// A volatile room event (`Fanout::Volatile`).
    Volatile(String),
    /// The answer to one of its requests (`None`: answered without a text).
    Answer(Option<String>),
    /// An HTTP publisher's message `index` got `seq` (`None`: refused).
    Published(usize, Option<u64>),
    /// A Server API call's replies: the one reply object, or a batch's
    /// `{"replies":[...]}`.
    Api(String),
    /// A Server API `disconnect`: the close code and reason.
    Closed(u16, String),
}

struct TestConn {
    id: u64,
    user: Arc<str>,
    /// Rooms joined or joining, as the connection's session keeps them.
    rooms: Vec<Arc<str>>,
    got: Vec<Got>,
}

/// One shard's connections as the router sees them.
#[derive(Default)]
struct TestOutlet {
    shard: usize,
    conns: HashMap<usize, TestConn>,
    metrics: ShardMetrics,
    /// The cluster's live nodes, as the bridge would report them.
    live_nodes: Vec<Box<str>>,
}

impl TestOutlet {
    fn live(&mut self, conn: ConnRef) -> Option<&mut TestConn> {
        self.conns.get_mut(&conn.key).filter(|c| c.id == conn.id)
    }
}

fn text_of(frame: &[u8]) -> String {
    String::from_utf8(wire::frame_text(frame).to_vec()).expect("UTF-8")
}

impl Outlet for TestOutlet {
    fn deliver(
        &mut self,
        keys: &[usize],
        skip: Option<usize>,
        frame: &Arc<[u8]>,
        _twin: &Twin,
        room: Option<&Arc<str>>,
        fanout: Fanout,
        _now: Instant,
    ) -> usize {
        let mut reached = 0;
        for key in keys {
            if skip == Some(*key) {
                continue;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            reached += 1;
            let text = text_of(frame);
            conn.got.push(match fanout {
                Fanout::RoomEvent { .. } => {
                    assert!(room.is_some(), "a room event names its room");
                    self.metrics.deliveries.inc();
                    Got::Event(text)
                }
                Fanout::Other => Got::Other(text),
                Fanout::Volatile => Got::Volatile(text),
            });
        }
        reached
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
        queued.extend(keys.iter().filter(|k| self.conns.contains_key(k)));
        self.deliver(keys, None, frame, twin, Some(room), fanout, now)
    }

    fn answer(&mut self, conn: ConnRef, text: Option<&[u8]>, _now: Instant) {
        if let Some(c) = self.live(conn) {
            let text = text.map(|t| String::from_utf8(t.to_vec()).expect("UTF-8"));
            c.got.push(Got::Answer(text));
        }
    }

    fn settle_join(&mut self, conn: ConnRef, room: &str, accepted: bool) -> bool {
        let Some(c) = self.live(conn) else {
            return false;
        };
        if accepted {
            return c.rooms.iter().any(|r| &**r == room);
        }
        c.rooms.retain(|r| &**r != room);
        false
    }

    fn http_published(&mut self, conn: ConnRef, index: usize, seq: Option<u64>, _now: Instant) {
        if let Some(c) = self.live(conn) {
            c.got.push(Got::Published(index, seq));
        }
    }

    fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    fn api_answered(&mut self, conn: ConnRef, batch: bool, replies: &[Reply], _now: Instant) {
        let mut text = Vec::new();
        if batch {
            text.extend_from_slice(b"{\"replies\":[");
            for (i, reply) in replies.iter().enumerate() {
                if i > 0 {
                    text.push(b',');
                }
                api::reply::write_reply(&mut text, reply);
            }
            text.extend_from_slice(b"]}");
        } else if let [reply] = replies {
            api::reply::write_reply(&mut text, reply);
        }
        if let Some(c) = self.live(conn) {
            c.got
                .push(Got::Api(String::from_utf8(text).expect("UTF-8")));
        }
    }

    fn api_disconnect(
        &mut self,
        key: usize,
        conn_id: Option<&str>,
        close: (u16, &str),
        _now: Instant,
    ) -> bool {
        let Some(c) = self.target(key, conn_id) else {
            return false;
        };
        c.got.push(Got::Closed(close.0, close.1.to_owned()));
        true
    }

    fn api_subscribe(&mut self, key: usize, conn_id: Option<&str>, room: &Arc<str>) -> ApiJoin {
        let shard = self.shard;
        let Some(c) = self.target(key, conn_id) else {
            return ApiJoin::Skipped;
        };
        if c.rooms.contains(room) {
            return ApiJoin::Already;
        }
        c.rooms.push(room.clone());
        ApiJoin::Joining {
            conn: ConnRef {
                shard,
                key,
                id: c.id,
            },
            user: c.user.clone(),
            name: None,
        }
    }

    fn api_unsubscribe(
        &mut self,
        key: usize,
        conn_id: Option<&str>,
        room: &Arc<str>,
        _now: Instant,
    ) -> Option<(ConnRef, Arc<str>)> {
        let shard = self.shard;
        let c = self.target(key, conn_id)?;
        if !c.rooms.contains(room) {
            return None;
        }
        c.rooms.retain(|r| r != room);
        c.got.push(Got::Other(
            String::from_utf8(wire::unsubscribed(room)).expect("UTF-8"),
        ));
        Some((
            ConnRef {
                shard,
                key,
                id: c.id,
            },
            c.user.clone(),
        ))
    }

    fn api_describe(&self, key: usize) -> Option<ConnInfo> {
        let c = self.conns.get(&key)?;
        Some(ConnInfo {
            conn_id: format!("c{}", c.id),
            node: "n1".to_owned(),
            rooms: c.rooms.clone(),
        })
    }

    fn node_facts(&self) -> NodeFacts {
        NodeFacts {
            node: Arc::from("n1"),
            version: "test",
            uptime_seconds: 1,
            connections: self.conns.len() as u64,
            users: 1,
            live_nodes: self.live_nodes.clone().into(),
            api_timeout: Duration::from_secs(2),
        }
    }
}

impl TestOutlet {
    /// Connection `key`, if `conn_id` (when given) is its id (`c<id>`).
    fn target(&mut self, key: usize, conn_id: Option<&str>) -> Option<&mut TestConn> {
        let c = self.conns.get_mut(&key)?;
        conn_id
            .is_none_or(|id| id == format!("c{}", c.id))
            .then_some(c)
    }
}

/// Settings of the routers under test.
#[derive(Clone)]
pub struct Setup {
    shards: usize,
    history: usize,
    presence_rooms: Vec<String>,
    presence_event_limit: usize,
    max_room_members: usize,
    cluster: bool,
    /// `--webhook`: the rooms notice every type, messages of `chat:*`.
    notes: bool,
}

impl Setup {
    pub fn local(shards: usize) -> Self {
        Self {
            shards,
            history: 100,
            presence_rooms: vec!["chat:*".into()],
            presence_event_limit: 100,
            max_room_members: 0,
            cluster: false,
            notes: false,
        }
    }

    pub fn cluster(shards: usize) -> Self {
        Self {
            cluster: true,
            ..Self::local(shards)
        }
    }

    pub fn history(mut self, history: usize) -> Self {
        self.history = history;
        self
    }

    pub fn webhooks(mut self) -> Self {
        self.notes = true;
        self
    }

    pub fn presence_event_limit(mut self, limit: usize) -> Self {
        self.presence_event_limit = limit;
        self
    }

    pub fn max_room_members(mut self, max: usize) -> Self {
        self.max_room_members = max;
        self
    }

    fn rooms_config(&self) -> RoomsConfig {
        let mut rooms = RoomsConfig::default();
        rooms.history.messages = self.history;
        rooms.history.ttl = Duration::from_secs(60);
        rooms.presence.rooms = self.presence_rooms.clone();
        rooms.presence.event_limit = self.presence_event_limit;
        rooms.max_room_members = self.max_room_members;
        rooms
    }

    pub fn build(self) -> Shards {
        let started = Instant::now();
        let routers = (0..self.shards)
            .map(|shard| {
                Router::new(RouterConfig {
                    shard,
                    shards: self.shards,
                    rooms: self.rooms_config(),
                    epoch_seed: 0x5eed + shard as u64,
                    cluster: self.cluster.then(|| ClusterSide {
                        node_id: "n1".into(),
                        started,
                    }),
                    notes: self.notes.then(|| NoteRules {
                        types: Types::of(&EventType::ALL),
                        message_rooms: vec!["chat:*".into()],
                    }),
                })
            })
            .collect();
        Shards {
            routers,
            outlets: (0..self.shards)
                .map(|shard| TestOutlet {
                    shard,
                    ..TestOutlet::default()
                })
                .collect(),
            bridge: Vec::new(),
            bridge_stopped: false,
            time: Time {
                now: started,
                unix_ms: 1_700_000_000_000,
            },
            next_id: 1,
        }
    }
}

/// Several shards' routers, the bus between them, and the bridge's inbox.
pub struct Shards {
    routers: Vec<Router>,
    outlets: Vec<TestOutlet>,
    /// What the routers asked of the bridge, in order, with the asking shard.
    pub bridge: Vec<(usize, BridgeRequest<BridgeAnswer>)>,
    /// The bridge has stopped: requests come back to their router.
    pub bridge_stopped: bool,
    pub time: Time,
    next_id: u64,
}

impl Shards {
    /// A `/ws` connection of `user` opens on `shard`.
    pub fn connect(&mut self, shard: usize, user: &str) -> ConnRef {
        let outlet = &mut self.outlets[shard];
        let key = (0..)
            .find(|k| !outlet.conns.contains_key(k))
            .expect("a key");
        let conn = ConnRef {
            shard,
            key,
            id: self.next_id,
        };
        self.next_id += 1;
        let user: Arc<str> = Arc::from(user);
        outlet.conns.insert(
            key,
            TestConn {
                id: conn.id,
                user: user.clone(),
                rooms: Vec::new(),
                got: Vec::new(),
            },
        );
        self.routers[shard].opened(key, &user);
        self.settle();
        conn
    }

    /// The connection is gone.
    pub fn close(&mut self, conn: ConnRef) {
        let Some(c) = self.outlets[conn.shard].conns.remove(&conn.key) else {
            return;
        };
        self.routers[conn.shard].closed(conn, &c.user, &c.rooms);
        self.settle();
    }

    /// `conn` sends `request`, as its session applied it.
    pub fn request(&mut self, conn: ConnRef, request: Request) {
        self.requests_at_once(conn, vec![request]);
    }

    /// `conn` sends `requests` in one read: none is answered before the
    /// last is handed to the router.
    pub fn requests_at_once(&mut self, conn: ConnRef, requests: Vec<Request>) {
        for request in requests {
            self.hand_over(conn, request);
        }
        self.settle();
    }

    /// Applies `request` to the connection's session, as `proto::events`
    /// does, and hands it to the router if it is work for the rooms.
    fn hand_over(&mut self, conn: ConnRef, request: Request) {
        let c = self.outlets[conn.shard]
            .conns
            .get_mut(&conn.key)
            .expect("open");
        match &request {
            Request::Join { room, .. } if !c.rooms.contains(room) => c.rooms.push(room.clone()),
            // Only a member's leave reaches the rooms.
            Request::Leave { room } if !c.rooms.contains(room) => return,
            Request::Leave { room } => c.rooms.retain(|r| r != room),
            _ => {}
        }
        let user = c.user.clone();
        let asker = Asker {
            conn,
            user: Some(&user),
            name: None,
            encoding: Encoding::Json,
        };
        self.routers[conn.shard].on_request(asker, request, self.time.now);
    }

    /// A `POST /publish` message from an HTTP connection (no user) on `shard`.
    pub fn http_publish(&mut self, shard: usize, index: usize, room: &str, data: &str) -> ConnRef {
        self.http_message(shard, index, room, data, false)
    }

    /// As `http_publish`, a volatile message (section 14).
    pub fn http_volatile(&mut self, shard: usize, index: usize, room: &str, data: &str) -> ConnRef {
        self.http_message(shard, index, room, data, true)
    }

    fn http_message(
        &mut self,
        shard: usize,
        index: usize,
        room: &str,
        data: &str,
        volatile: bool,
    ) -> ConnRef {
        let conn = self.connect(shard, "http");
        let asker = Asker {
            conn,
            user: None,
            name: None,
            encoding: Encoding::Json,
        };
        let request = Request::HttpPublish {
            index,
            message: publish::Message {
                room: room.into(),
                event: "tick".into(),
                data: data.as_bytes().into(),
                volatile,
            },
            from: Arc::from("backend"),
        };
        self.routers[shard].on_request(asker, request, self.time.now);
        self.settle();
        conn
    }

    /// A Server API call with `body` to `method` from an HTTP connection
    /// on `shard`; returns the connection, which gets `Got::Api`.
    pub fn api_call(&mut self, shard: usize, method: &str, body: &str) -> ConnRef {
        let conn = self.connect(shard, "http");
        let method = api::Method::named(method).expect("a method");
        let call = api::command::parse(
            method,
            &mut body.as_bytes().to_vec(),
            &mut Default::default(),
        )
        .expect("a valid call");
        let asker = Asker {
            conn,
            user: None,
            name: None,
            encoding: Encoding::Json,
        };
        let request = Request::Api {
            call: Box::new(call),
            from: Arc::from("api"),
        };
        self.routers[shard].on_request(asker, request, self.time.now);
        self.settle();
        conn
    }

    /// What every shard noticed for webhooks since the last call, shard by
    /// shard.
    pub fn notes(&mut self) -> Vec<What> {
        self.routers
            .iter_mut()
            .flat_map(Router::take_notes)
            .collect()
    }

    /// The live nodes shard `shard` knows (cluster mode).
    pub fn set_live_nodes(&mut self, shard: usize, nodes: &[&str]) {
        self.outlets[shard].live_nodes = nodes.iter().map(|&n| n.into()).collect();
    }

    /// The shards' Server API deadlines are checked at `time`.
    pub fn api_tick(&mut self) {
        let time = self.time;
        for shard in 0..self.routers.len() {
            self.routers[shard].api_tick(time, &mut self.outlets[shard]);
        }
        self.settle();
    }

    /// A Server API message from another node reaches shard `shard`.
    pub fn node_sends(&mut self, shard: usize, payload: Vec<u8>) {
        let time = self.time;
        self.routers[shard].on_cluster_api(payload, time, &mut self.outlets[shard]);
        self.settle();
    }

    /// The bridge sends shard `shard` a message.
    pub fn bridge_sends(&mut self, shard: usize, message: FromBridge) {
        let time = self.time;
        self.routers[shard].on_bridge(message, time, &mut self.outlets[shard]);
        self.settle();
    }

    /// Takes the bridge's inbox.
    pub fn take_bridge(&mut self) -> Vec<(usize, BridgeRequest<BridgeAnswer>)> {
        std::mem::take(&mut self.bridge)
    }

    /// Runs every shard's bus until no message is left in flight.
    pub fn settle(&mut self) {
        let time = self.time;
        loop {
            let mut moved = false;
            for shard in 0..self.routers.len() {
                self.routers[shard].run_own(time, &mut self.outlets[shard]);
                let mut requests = Vec::new();
                self.routers[shard].move_bridge_requests(&mut requests);
                for request in requests {
                    moved = true;
                    if self.bridge_stopped {
                        self.routers[shard].bridge_refused(request, time, &mut self.outlets[shard]);
                    } else {
                        self.bridge.push((shard, request));
                    }
                }
                for to in 0..self.routers.len() {
                    if to == shard {
                        continue;
                    }
                    for message in self.routers[shard].take_outbox(to) {
                        moved = true;
                        self.routers[to].on_bus(message, time, &mut self.outlets[to]);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// What `conn` was given since the last call.
    pub fn got(&mut self, conn: ConnRef) -> Vec<Got> {
        self.outlets[conn.shard]
            .conns
            .get_mut(&conn.key)
            .map(|c| std::mem::take(&mut c.got))
            .unwrap_or_default()
    }

    /// Whether `conn` is on its shard's member list of `room`.
    pub fn is_member(&self, conn: ConnRef, room: &str) -> bool {
        self.routers[conn.shard].local.contains(room, conn.key)
    }

    /// Room events delivered, over every shard.
    pub fn deliveries(&self) -> u64 {
        self.outlets
            .iter()
            .map(|o| o.metrics.deliveries.get())
            .sum()
    }

    /// Publishes counted, over every shard.
    pub fn publishes(&self) -> u64 {
        self.outlets.iter().map(|o| o.metrics.publishes.get()).sum()
    }

    /// Time passes until `to`, each shard sending its paced members'
    /// held-back events at their slots, as its loop would wake for them.
    pub fn advance(&mut self, to: Instant) {
        loop {
            let slot = self.routers.iter().filter_map(Router::next_slot).min();
            let Some(slot) = slot.filter(|&slot| slot <= to) else {
                break;
            };
            self.time.now = self.time.now.max(slot);
            let time = self.time;
            for shard in 0..self.routers.len() {
                self.routers[shard].send_due(time, &mut self.outlets[shard]);
            }
        }
        self.time.now = self.time.now.max(to);
    }

    /// Paced members holding an event back, over every shard.
    pub fn held_back(&self) -> usize {
        self.routers.iter().map(|r| r.local.pending()).sum()
    }

    pub fn router(&mut self, shard: usize) -> &mut Router {
        &mut self.routers[shard]
    }
}

pub fn id(n: i64) -> Option<OwnedId> {
    Some(OwnedId::Int(n))
}

pub fn join(room: &str, id: Option<OwnedId>) -> Request {
    Request::Join {
        room: room.into(),
        id,
        recovery: JoinRecovery::default(),
        rejoin: false,
        meta: None,
        min_interval: None,
        delta: false,
    }
}

pub fn join_with(room: &str, recovery: JoinRecovery) -> Request {
    Request::Join {
        room: room.into(),
        id: id(1),
        recovery,
        rejoin: false,
        meta: None,
        min_interval: None,
        delta: false,
    }
}

/// A join with `data.maxRate: rate`.
pub fn join_paced(room: &str, rate: f64, rejoin: bool) -> Request {
    Request::Join {
        room: room.into(),
        id: id(1),
        recovery: JoinRecovery::default(),
        rejoin,
        meta: None,
        min_interval: Some(Duration::from_secs_f64(1.0 / rate)),
        delta: false,
    }
}

/// A join with `data.delta: true`.
pub fn join_delta(room: &str, rejoin: bool) -> Request {
    Request::Join {
        room: room.into(),
        id: id(1),
        recovery: JoinRecovery::default(),
        rejoin,
        meta: None,
        min_interval: None,
        delta: true,
    }
}

pub fn leave(room: &str) -> Request {
    Request::Leave { room: room.into() }
}

pub fn publish(room: &str, data: &str, echo: bool, id: Option<OwnedId>) -> Request {
    Request::Publish {
        room: room.into(),
        event: "chat".into(),
        data: data.as_bytes().into(),
        echo,
        volatile: false,
        id,
    }
}

/// A volatile room event (section 14).
pub fn volatile(room: &str, data: &str, echo: bool, id: Option<OwnedId>) -> Request {
    Request::Publish {
        room: room.into(),
        event: "chat".into(),
        data: data.as_bytes().into(),
        echo,
        volatile: true,
        id,
    }
}

pub fn user_send(to: &str, text: &str, id: Option<OwnedId>) -> Request {
    Request::UserSend {
        to: to.into(),
        text: text.as_bytes().to_vec(),
        id,
    }
}

pub fn broadcast(text: &str, id: Option<OwnedId>) -> Request {
    Request::Broadcast {
        text: text.as_bytes().to_vec(),
        id,
    }
}

pub fn presence_get(room: &str, id: Option<OwnedId>) -> Request {
    Request::PresenceGet {
        room: room.into(),
        id,
    }
}

/// The texts of `got`'s room events.
pub fn events(got: &[Got]) -> Vec<&str> {
    got.iter()
        .filter_map(|g| match g {
            Got::Event(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The answer texts of `got`.
pub fn answers(got: &[Got]) -> Vec<&str> {
    got.iter()
        .filter_map(|g| match g {
            Got::Answer(Some(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The `seq` field of a room event's text.
pub fn seq_of(text: &str) -> u64 {
    let at = text.find("\"seq\":").expect("a seq") + 6;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

/// A room owned by `shard` out of `shards`.
pub fn room_owned_by(shard: usize, shards: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|room| owner_of(room, shards) == shard)
        .expect("a room")
}

#[test]
fn owners_are_stable_and_spread() {
    assert_eq!(owner_of("lobby", 4), owner_of("lobby", 4));
    let mut counts = [0; 4];
    for i in 0..1000 {
        counts[owner_of(&format!("room-{i}"), 4)] += 1;
    }
    assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
    assert_eq!(owner_of("x", 1), 0);
}
