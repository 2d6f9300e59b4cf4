//! The Redis bridge: one thread per process, with its own mio loop, that
//! carries room events between this node and Redis (`docs/redis.md`).
//!
//! Shards hand it requests over a channel plus a waker (`BridgeHandle`) and
//! hear back through a `BridgeSink`; no shard thread ever waits on Redis.
//! Per `--redis` server it keeps one RESP3 connection (`HELLO 3`) for its
//! commands and for the channels of the rooms this node serves: commands
//! are pipelined (`redis::pipeline`), channel messages arrive as pushes in
//! between. One connection is what keeps a join exact: Redis writes every
//! event published before a join's `roomcast_history` ran ahead of its
//! reply and every later one after it, so the member gets each event once,
//! from its history or live. A lost connection is retried with backoff and
//! jitter (`redis::backoff`); meanwhile requests are answered
//! `Unavailable`, and once back every room served is recovered from its
//! history where its cursor left off (`redis::subscriptions`).
//! Owns those sockets; the RESP bytes and the function calls come from
//! `redis`, and what a reply means for a client is the sink's business.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::metrics::RedisMetrics;
use crate::proto::names::pattern_matches;
use crate::redis::backoff::Backoff;
use crate::redis::layout::{self, RoomKeys};
use crate::redis::pipeline::{Incoming, Pipeline};
use crate::redis::resp::{self, Reply};
use crate::redis::subscriptions::{Change, Subscriptions};
use crate::redis::url::RedisUrl;
use crate::redis::{
    self, History, HistoryQuery, NodeUser, Origin, Presence, PresenceChange, Publisher, Retention,
    Sequenced,
};
use crate::rooms::wire;
use crate::{log_info, log_warn};

const WAKER: Token = Token(usize::MAX);
/// Most commands waiting for Redis per server; past it, requests are
/// answered `Unavailable` rather than queued without bound.
const MAX_IN_FLIGHT: usize = 16_384;
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);
/// How often a node writes its heartbeat and looks for dead nodes.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node whose heartbeat is older is dead: its presence is removed and its
/// leaves announced (section 10: within 30 s).
const NODE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the bridge is asked to do.
#[derive(Debug)]
pub enum BridgeRequest<A> {
    /// Sequence a room event whose text is `head`, its seq, `tail`;
    /// `origin` (an `Origin` of this node) travels with it on the channel.
    Publish {
        room: Arc<str>,
        head: Vec<u8>,
        tail: Vec<u8>,
        origin: String,
        answer: A,
    },
    /// Read a room's history for a join and count the joiner in, in
    /// order with the room's events: the room must be served (`Serve` sent
    /// first) for that order to hold.
    Join {
        room: Arc<str>,
        query: OwnedQuery,
        change: Box<PresenceChange>,
        answer: A,
    },
    /// Count a connection out of a room.
    Leave {
        room: Arc<str>,
        change: Box<PresenceChange>,
    },
    /// The room's presence in the cluster (`presence:get`).
    PresenceGet {
        room: Arc<str>,
        answer: A,
    },
    /// Count `n` connections of a user in (or out) of the online set that
    /// `Send` counts.
    Online {
        change: Box<PresenceChange>,
        n: i64,
        /// This node's first connection in the online set.
        first_here: bool,
        /// This node has no connection left in the online set.
        last_here: bool,
    },
    /// A direct message (`to`) or a broadcast (`None`), `text` its
    /// message text: to every node, answered with the connections it is for.
    Send {
        to: Option<Box<str>>,
        text: Vec<u8>,
        origin: String,
        answer: A,
    },
    /// Set this node's connections in `room` to exactly `users`.
    Sync {
        room: Arc<str>,
        users: Vec<NodeUser>,
    },
    /// Shard `shard` now has members in `room`: its events must come here.
    Serve {
        room: Arc<str>,
        shard: usize,
    },
    /// Shard `shard` has no member left in `room`.
    Unserve {
        room: Arc<str>,
        shard: usize,
    },
    Stop,
}

/// A join's `history`, `since` and `epoch`, owned to cross threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedQuery {
    pub history: Option<u64>,
    pub since: Option<u64>,
    pub epoch: Option<String>,
}

impl OwnedQuery {
    fn as_query(&self) -> HistoryQuery<'_> {
        HistoryQuery {
            history: self.history,
            since: self.since,
            epoch: self.epoch.as_deref(),
        }
    }
}

/// Redis could not take the request (down, or over the in-flight bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// A room event from Redis for one shard's members.
#[derive(Debug, Clone)]
pub struct RoomEvent {
    pub room: Arc<str>,
    pub epoch: Arc<str>,
    pub seq: u64,
    /// The message as a server text frame, built once for every member;
    /// its text is exactly what Redis stored and published.
    pub frame: Arc<[u8]>,
    /// Set when this node published it.
    pub from_here: Option<FromHere>,
    /// A presence event (no `seq`, never in the history).
    pub presence: bool,
}

/// A direct message or broadcast from the direct channel.
#[derive(Debug, Clone)]
pub struct DirectMessage {
    /// `None`: every `/ws` connection.
    pub to: Option<Arc<str>>,
    pub frame: Arc<[u8]>,
    /// The sender, when it is a connection of this node.
    pub exclude: Option<Publisher>,
}

/// What a node knows of an event it published itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FromHere {
    /// When the publisher's shard read it, in microseconds since start.
    pub read_micros: u64,
    /// The publisher, when it asked not to get its own message back.
    pub exclude: Option<Publisher>,
}

/// Where the bridge's results go (the shards, through their bus).
pub trait BridgeSink: Send + 'static {
    type Answer: Send + 'static;
    /// The outcome of a `Publish`.
    fn sequenced(&self, answer: Self::Answer, outcome: Result<Sequenced, Unavailable>);
    /// The outcome of a `Join` (the history, and the room's connections in
    /// the cluster), after every event the history covers was given to
    /// `deliver` and before any it does not.
    fn joined(&self, answer: Self::Answer, outcome: Result<(History, u64), Unavailable>);
    /// The outcome of a `PresenceGet`.
    fn presence(&self, answer: Self::Answer, outcome: Result<Presence, Unavailable>);
    /// The outcome of a `Send`: how many connections it is for.
    fn sent(&self, answer: Self::Answer, outcome: Result<u64, Unavailable>);
    /// A direct message or broadcast for every shard's own connections.
    fn direct(&self, message: DirectMessage);
    /// A link is (again) ready: every room's presence should be `Sync`ed,
    /// since Redis may have lost it or reaped it meanwhile.
    fn resync(&self);
    /// A room event for shard `shard`, in the room's seq order.
    fn deliver(&self, shard: usize, event: RoomEvent);
    /// Whether every Redis server is reachable, on every change.
    fn link(&self, up: bool);
}

/// How shards reach the bridge.
pub struct BridgeHandle<A> {
    requests: Sender<BridgeRequest<A>>,
    waker: Arc<Waker>,
}

impl<A> Clone for BridgeHandle<A> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<A> BridgeHandle<A> {
    /// Sends a request and wakes the bridge; false once it has stopped.
    pub fn send(&self, request: BridgeRequest<A>) -> bool {
        self.try_send(request).is_ok()
    }

    /// Sends a request and wakes the bridge; once it has stopped, the
    /// request comes back.
    pub fn try_send(&self, request: BridgeRequest<A>) -> Result<(), BridgeRequest<A>> {
        self.requests.send(request).map_err(|e| e.0)?;
        let _ = self.waker.wake();
        Ok(())
    }
}

/// The bridge's settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub servers: Vec<RedisUrl>,
    pub prefix: String,
    pub retention: Retention,
    /// Makes the epochs this node creates unique in the cluster, and tells
    /// its own events apart on the channels.
    pub node_id: String,
    pub presence: PresenceConfig,
}

/// Which rooms announce presence, for the leaves of dead nodes and syncs.
#[derive(Debug, Clone, Default)]
pub struct PresenceConfig {
    /// `--presence-rooms`.
    pub rooms: Vec<String>,
    /// `--presence-event-limit`.
    pub event_limit: usize,
}

/// Starts the bridge thread; it writes `metrics` alone.
pub fn start<S: BridgeSink>(
    config: BridgeConfig,
    sink: S,
    metrics: Arc<RedisMetrics>,
) -> io::Result<(BridgeHandle<S::Answer>, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let links = config.servers.iter().cloned().map(Link::new).collect();
    let mut bridge = Bridge {
        poll,
        requests: rx,
        sink,
        links,
        subscriptions: Subscriptions::default(),
        config,
        epochs_made: 0,
        up: None,
        read_buf: Vec::new(),
        metrics,
        next_heartbeat: Instant::now(),
        node_rooms: String::new(),
    };
    bridge.node_rooms = layout::node_rooms(&bridge.config.prefix, &bridge.config.node_id);
    let thread = std::thread::Builder::new()
        .name("redis-bridge".into())
        .spawn(move || bridge.run())?;
    Ok((
        BridgeHandle {
            requests: tx,
            waker,
        },
        thread,
    ))
}

/// What a command's reply is for.
enum Pending<A> {
    /// HELLO, SELECT or FUNCTION LOAD: an error reply means the link is
    /// unusable.
    Setup,
    Publish {
        answer: A,
        sent: Instant,
    },
    Join {
        answer: A,
        room: Arc<str>,
        sent: Instant,
    },
    Presence {
        answer: A,
    },
    Sent {
        answer: A,
    },
    /// A reply nobody waits for (leaves, syncs, heartbeats).
    Ignored,
    /// The nodes whose heartbeat is older than `NODE_TIMEOUT`.
    DeadNodes,
    /// The rooms on this server where the dead `node` counted connections.
    DeadRooms {
        node: String,
    },
    /// After a reconnect: what `room` missed, to deliver.
    Recover {
        room: Arc<str>,
    },
}

/// Everything about one Redis server.
struct Link<A> {
    url: RedisUrl,
    stream: Option<TcpStream>,
    /// The connection is established (a first event came).
    connected: bool,
    /// The setup commands are answered: requests may be taken.
    ready: bool,
    /// Setup commands not answered yet.
    setup_left: usize,
    pipeline: Pipeline<Pending<A>>,
    backoff: Backoff,
    retry_at: Instant,
    /// Has been up before: the next connection is a reconnect.
    was_up: bool,
}

impl<A> Link<A> {
    fn new(url: RedisUrl) -> Self {
        Self {
            url,
            stream: None,
            connected: false,
            ready: false,
            setup_left: 0,
            pipeline: Pipeline::new(MAX_IN_FLIGHT),
            backoff: Backoff::new(RETRY_BASE, RETRY_CAP),
            retry_at: Instant::now(),
            was_up: false,
        }
    }

    fn is_up(&self) -> bool {
        self.stream.is_some() && self.ready
    }
}

struct Bridge<S: BridgeSink> {
    poll: Poll,
    requests: Receiver<BridgeRequest<S::Answer>>,
    sink: S,
    links: Vec<Link<S::Answer>>,
    subscriptions: Subscriptions,
    config: BridgeConfig,
    epochs_made: u64,
    up: Option<bool>,
    /// What a connection read this time, reused.
    read_buf: Vec<u8>,
    metrics: Arc<RedisMetrics>,
    next_heartbeat: Instant,
    /// This node's room index key (`layout::node_rooms`).
    node_rooms: String,
}

impl<S: BridgeSink> Bridge<S> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            self.connect_due();
            self.report_link();
            self.heartbeat();
            for link in 0..self.links.len() {
                self.flush(link);
            }
            let until_heartbeat = self
                .next_heartbeat
                .saturating_duration_since(Instant::now());
            let timeout = Some(
                self.next_retry()
                    .map_or(until_heartbeat, |t| t.min(until_heartbeat)),
            );
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                log_warn!("redis bridge: poll failed: {e}");
                return;
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.on_readable(event.token().0);
                }
            }
            if !self.take_requests() {
                return;
            }
            for link in 0..self.links.len() {
                self.flush(link);
            }
            let in_flight: usize = self.links.iter().map(|l| l.pipeline.in_flight()).sum();
            self.metrics.in_flight.set(in_flight as u64);
        }
    }

    /// Handles every queued request; false on `Stop`.
    fn take_requests(&mut self) -> bool {
        // A full pipeline takes no more: requests wait in the channel (a
        // join storm is slowed down, not refused) until Redis answers.
        while self.has_room() {
            match self.requests.try_recv() {
                Ok(BridgeRequest::Stop) | Err(TryRecvError::Disconnected) => return false,
                Ok(request) => self.on_request(request),
                Err(TryRecvError::Empty) => return true,
            }
        }
        true
    }

    /// Whether every link's pipeline can take one more request (at most
    /// three commands).
    fn has_room(&self) -> bool {
        self.links
            .iter()
            .all(|l| l.pipeline.in_flight() + 4 <= MAX_IN_FLIGHT)
    }

    fn on_request(&mut self, request: BridgeRequest<S::Answer>) {
        match request {
            BridgeRequest::Publish {
                room,
                head,
                tail,
                origin,
                answer,
            } => self.publish(&room, (&head, &tail), &origin, answer),
            BridgeRequest::Join {
                room,
                query,
                change,
                answer,
            } => self.join(room, &query, &change, answer),
            BridgeRequest::Leave { room, change } => self.leave(&room, &change),
            BridgeRequest::PresenceGet { room, answer } => self.presence(&room, answer),
            BridgeRequest::Online {
                change,
                n,
                first_here,
                last_here,
            } => self.online(&change, n, first_here, last_here),
            BridgeRequest::Send {
                to,
                text,
                origin,
                answer,
            } => self.send_direct(to.as_deref(), &text, &origin, answer),
            BridgeRequest::Sync { room, users } => self.sync(&room, &users),
            BridgeRequest::Serve { room, shard } => {
                if let Some(change) = self.subscriptions.shard_joined(&room, shard) {
                    self.subscribe(change);
                }
            }
            BridgeRequest::Unserve { room, shard } => {
                if let Some(change) = self.subscriptions.shard_left(&room, shard) {
                    self.subscribe(change);
                }
            }
            BridgeRequest::Stop => {}
        }
    }

    fn publish(&mut self, room: &str, text: (&[u8], &[u8]), origin: &str, answer: S::Answer) {
        let index = layout::server_of(room, self.links.len());
        let keys = RoomKeys::new(&self.config.prefix, room);
        let epoch = self.fresh_epoch();
        let retention = self.config.retention;
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.sequenced(answer, Err(Unavailable));
        }
        let sent = Instant::now();
        let pushed = link
            .pipeline
            .push(Pending::Publish { answer, sent }, |out| {
                redis::publish(out, &keys, text, &epoch, retention, origin);
            });
        if let Err(Pending::Publish { answer, .. }) = pushed {
            self.sink.sequenced(answer, Err(Unavailable));
        }
    }

    fn join(
        &mut self,
        room: Arc<str>,
        query: &OwnedQuery,
        change: &PresenceChange,
        answer: S::Answer,
    ) {
        let index = layout::server_of(&room, self.links.len());
        let keys = RoomKeys::new(&self.config.prefix, &room);
        let epoch = self.fresh_epoch();
        let retention = self.config.retention;
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.joined(answer, Err(Unavailable));
        }
        let sent = Instant::now();
        let pending = Pending::Join { answer, room, sent };
        let pushed = link.pipeline.push(pending, |out| {
            redis::join(out, &keys, query.as_query(), &epoch, retention, change);
        });
        if let Err(Pending::Join { answer, .. }) = pushed {
            self.sink.joined(answer, Err(Unavailable));
        }
    }

    /// A leave is not answered: if Redis is away it is lost, and the sync
    /// after the reconnect puts the room's presence right.
    fn leave(&mut self, room: &str, change: &PresenceChange) {
        let index = layout::server_of(room, self.links.len());
        let keys = RoomKeys::new(&self.config.prefix, room);
        let link = &mut self.links[index];
        if !link.is_up() {
            return;
        }
        let ttl = self.config.retention.ttl_ms;
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            redis::leave(out, &keys, change, ttl)
        });
    }

    fn presence(&mut self, room: &str, answer: S::Answer) {
        let index = layout::server_of(room, self.links.len());
        let keys = RoomKeys::new(&self.config.prefix, room);
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.presence(answer, Err(Unavailable));
        }
        let pushed = link.pipeline.push(Pending::Presence { answer }, |out| {
            redis::presence(out, &keys, crate::rooms::table::MAX_PRESENCE_USERS);
        });
        if let Err(Pending::Presence { answer }) = pushed {
            self.sink.presence(answer, Err(Unavailable));
        }
    }

    fn sync(&mut self, room: &str, users: &[NodeUser]) {
        let index = layout::server_of(room, self.links.len());
        let keys = RoomKeys::new(&self.config.prefix, room);
        let announce = self.announces(room);
        let limit = self.config.presence.event_limit;
        let ttl = self.config.retention.ttl_ms;
        let node = &self.config.node_id;
        let node_rooms = layout::node_rooms(&self.config.prefix, node);
        let link = &mut self.links[index];
        if !link.is_up() {
            return;
        }
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            resp::write_command(out, &["SADD", &node_rooms, room]);
        });
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            let rules = redis::SyncRules {
                announce,
                event_limit: limit,
                ttl_ms: ttl,
            };
            redis::sync(out, &keys, room, node, rules, users);
        });
    }

    fn online(&mut self, change: &PresenceChange, n: i64, first_here: bool, last_here: bool) {
        let index = layout::server_of(redis::ONLINE, self.links.len());
        let keys = RoomKeys::new(&self.config.prefix, redis::ONLINE);
        let node_rooms = layout::node_rooms(&self.config.prefix, &self.config.node_id);
        let link = &mut self.links[index];
        if !link.is_up() {
            return;
        }
        if first_here {
            let _ = link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &["SADD", &node_rooms, redis::ONLINE]);
            });
        }
        let _ = link
            .pipeline
            .push(Pending::Ignored, |out| redis::count(out, &keys, change, n));
        if last_here {
            let _ = link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &["SREM", &node_rooms, redis::ONLINE]);
            });
        }
    }

    fn send_direct(&mut self, to: Option<&str>, text: &[u8], origin: &str, answer: S::Answer) {
        let index = layout::server_of(redis::ONLINE, self.links.len());
        let payload = redis::Direct { origin, to, text }.write();
        let prefix = &self.config.prefix;
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.sent(answer, Err(Unavailable));
        }
        let pushed = link.pipeline.push(Pending::Sent { answer }, |out| {
            redis::send(out, prefix, to, &payload);
        });
        if let Err(Pending::Sent { answer }) = pushed {
            self.sink.sent(answer, Err(Unavailable));
        }
    }

    /// Whether `room` announces presence (`--presence-rooms`); the online
    /// set never does.
    fn announces(&self, room: &str) -> bool {
        room != redis::ONLINE
            && self
                .config
                .presence
                .rooms
                .iter()
                .any(|p| pattern_matches(p, room))
    }

    /// Every `HEARTBEAT`: this node's heartbeat on every server, and a look
    /// for nodes whose heartbeat stopped.
    fn heartbeat(&mut self) {
        let now = Instant::now();
        if now < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = now + HEARTBEAT;
        let unix_ms = crate::reactor::shard::unix_ms();
        let set = layout::heartbeats(&self.config.prefix);
        let node = self.config.node_id.clone();
        let stale = unix_ms.saturating_sub(NODE_TIMEOUT.as_millis() as u64);
        for link in self.links.iter_mut().filter(|l| l.is_up()) {
            let _ = link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &["ZADD", &set, &unix_ms.to_string(), &node]);
            });
            let _ = link.pipeline.push(Pending::DeadNodes, |out| {
                let max = format!("({stale}");
                resp::write_command(
                    out,
                    &["ZRANGEBYSCORE", &set, "-inf", &max, "LIMIT", "0", "16"],
                );
            });
        }
    }

    /// Dead nodes on server `index`: their rooms there are looked up.
    fn on_dead_nodes(&mut self, index: usize, reply: &Reply) {
        let Reply::Array(nodes) = reply else { return };
        for node in nodes.iter().filter_map(Reply::as_bytes) {
            let node = String::from_utf8_lossy(node).into_owned();
            if node == self.config.node_id {
                continue;
            }
            log_info!("redis bridge: node {node} stopped its heartbeat; removing its presence");
            let rooms = layout::node_rooms(&self.config.prefix, &node);
            let _ = self.links[index]
                .pipeline
                .push(Pending::DeadRooms { node }, |out| {
                    resp::write_command(out, &["SMEMBERS", &rooms]);
                });
        }
    }

    /// The rooms of a dead node: its connections there are removed (with
    /// the leaves announced), then the node itself.
    fn on_dead_rooms(&mut self, index: usize, node: &str, reply: &Reply) {
        let Reply::Array(rooms) = reply else { return };
        let limit = self.config.presence.event_limit;
        let ttl = self.config.retention.ttl_ms;
        for room in rooms.iter().filter_map(Reply::as_bytes) {
            let room = String::from_utf8_lossy(room).into_owned();
            let keys = RoomKeys::new(&self.config.prefix, &room);
            let announce = self.announces(&room);
            let _ = self.links[index].pipeline.push(Pending::Ignored, |out| {
                let rules = redis::SyncRules {
                    announce,
                    event_limit: limit,
                    ttl_ms: ttl,
                };
                redis::sync(out, &keys, &room, node, rules, &[]);
            });
        }
        let rooms_key = layout::node_rooms(&self.config.prefix, node);
        let set = layout::heartbeats(&self.config.prefix);
        let link = &mut self.links[index];
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            resp::write_command(out, &["DEL", &rooms_key]);
        });
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            resp::write_command(out, &["ZREM", &set, node]);
        });
    }

    fn fresh_epoch(&mut self) -> String {
        self.epochs_made += 1;
        format!("{}-{:x}", self.config.node_id, self.epochs_made)
    }

    fn subscribe(&mut self, change: Change) {
        let (verb, room) = match &change {
            Change::Subscribe(room) => ("SUBSCRIBE", room),
            Change::Unsubscribe(room) => ("UNSUBSCRIBE", room),
        };
        let index = layout::server_of(room, self.links.len());
        let channel = RoomKeys::new(&self.config.prefix, room).channel;
        // The rooms a node serves are where a reaper looks for its
        // connections, should it die.
        let (index_verb, node_rooms) = match &change {
            Change::Subscribe(_) => ("SADD", &self.node_rooms),
            Change::Unsubscribe(_) => ("SREM", &self.node_rooms),
        };
        let link = &mut self.links[index];
        // Without a connection, the subscription is made when it comes back
        // (and the index by the sync that follows).
        if link.stream.is_some() {
            link.pipeline
                .push_unanswered(|out| resp::write_command(out, &[verb, channel.as_str()]));
            let _ = link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &[index_verb, node_rooms.as_str(), room]);
            });
        }
    }

    /// Opens the connection of every link that is down and due a retry.
    fn connect_due(&mut self) {
        let now = Instant::now();
        for index in 0..self.links.len() {
            let link = &self.links[index];
            if link.stream.is_some() || now < link.retry_at {
                continue;
            }
            if let Err(e) = self.open(index) {
                log_warn!("redis bridge: {}: {e}", self.links[index].url);
                self.drop_link(index);
            }
        }
    }

    /// Connects, and queues the setup, the subscriptions of every room
    /// served on this server and the recovery of each.
    fn open(&mut self, index: usize) -> io::Result<()> {
        let addr = resolve(&self.links[index].url)?;
        let mut stream = TcpStream::connect(addr)?;
        let both = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(&mut stream, Token(index), both)?;
        let servers = self.links.len();
        let link = &mut self.links[index];
        link.pipeline.reset();
        let setup = setup_commands(&link.url, &self.config.node_id);
        link.setup_left = setup.len() + 1;
        for command in setup {
            let pushed = link
                .pipeline
                .push(Pending::Setup, |out| resp::write_command(out, &command));
            debug_assert!(pushed.is_ok());
        }
        let _ = link.pipeline.push(Pending::Setup, redis::load_library);
        let prefix = &self.config.prefix;
        if layout::server_of(redis::ONLINE, servers) == index {
            let direct = redis::direct_channel(prefix);
            link.pipeline
                .push_unanswered(|out| resp::write_command(out, &["SUBSCRIBE", &direct]));
        }
        for room in self.subscriptions.rooms() {
            if layout::server_of(room, servers) == index {
                let channel = RoomKeys::new(prefix, room).channel;
                link.pipeline
                    .push_unanswered(|out| resp::write_command(out, &["SUBSCRIBE", &channel]));
            }
        }
        let retention = self.config.retention;
        let on_server = |room: &str| layout::server_of(room, servers) == index;
        for (room, cursor) in self.subscriptions.start_recoveries(on_server) {
            let keys = RoomKeys::new(prefix, &room);
            let query = HistoryQuery {
                history: Some(retention.messages),
                since: Some(cursor.seq),
                epoch: Some(&cursor.epoch),
            };
            let epoch = format!("{}-r{}", self.config.node_id, cursor.seq);
            let _ = link.pipeline.push(Pending::Recover { room }, |out| {
                redis::history(out, &keys, query, &epoch, retention);
            });
        }
        link.stream = Some(stream);
        link.connected = false;
        link.ready = false;
        Ok(())
    }

    /// A link failed: its socket goes, what it had in flight is answered
    /// `Unavailable`, and the next attempt is scheduled.
    fn drop_link(&mut self, index: usize) {
        let link = &mut self.links[index];
        if let Some(mut stream) = link.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        link.ready = false;
        let lost = link.pipeline.reset();
        let delay = link.backoff.next_delay(random());
        link.retry_at = Instant::now() + delay;
        for pending in lost {
            match pending {
                Pending::Publish { answer, .. } => self.sink.sequenced(answer, Err(Unavailable)),
                Pending::Join { answer, .. } => self.sink.joined(answer, Err(Unavailable)),
                Pending::Presence { answer } => self.sink.presence(answer, Err(Unavailable)),
                Pending::Sent { answer } => self.sink.sent(answer, Err(Unavailable)),
                Pending::Setup
                | Pending::Recover { .. }
                | Pending::Ignored
                | Pending::DeadNodes
                | Pending::DeadRooms { .. } => {}
            }
        }
    }

    fn next_retry(&self) -> Option<Duration> {
        let now = Instant::now();
        self.links
            .iter()
            .filter(|l| l.stream.is_none())
            .map(|l| l.retry_at.saturating_duration_since(now))
            .min()
    }

    fn report_link(&mut self) {
        let up = self.links.iter().all(Link::is_up);
        if self.up != Some(up) {
            self.up = Some(up);
            self.metrics.up.set(u64::from(up));
            self.sink.link(up);
        }
    }

    fn on_readable(&mut self, index: usize) {
        if index >= self.links.len() {
            return;
        }
        if let Err(e) = self.read(index) {
            log_warn!("redis bridge: {}: {e}", self.links[index].url);
            self.drop_link(index);
        }
    }

    fn read(&mut self, index: usize) -> io::Result<()> {
        let link = &mut self.links[index];
        let Some(stream) = link.stream.as_mut() else {
            return Ok(());
        };
        link.connected = true;
        self.read_buf.clear();
        // What came before a close is still handled: replies answered,
        // events delivered.
        let closed = read_available(stream, &mut self.read_buf);
        let incoming = link
            .pipeline
            .on_input(&self.read_buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        for item in incoming {
            match item {
                Incoming::Push(items) => self.on_push(&items),
                Incoming::Reply(pending, reply) => self.on_reply(index, pending, reply)?,
            }
        }
        closed
    }

    fn on_reply(
        &mut self,
        index: usize,
        pending: Pending<S::Answer>,
        reply: Reply,
    ) -> io::Result<()> {
        match pending {
            Pending::Setup => {
                if let Reply::Error(e) = reply {
                    return Err(io::Error::other(format!("setup refused: {e}")));
                }
                let link = &mut self.links[index];
                link.setup_left = link.setup_left.saturating_sub(1);
                if link.setup_left == 0 {
                    self.on_setup_answered(index);
                }
            }
            Pending::Publish { answer, sent } => {
                self.metrics.command_latency.observe(sent.elapsed());
                let outcome = redis::sequenced(&reply).ok_or(Unavailable);
                if outcome.is_err() {
                    log_warn!("redis bridge: publish refused: {reply:?}");
                }
                self.sink.sequenced(answer, outcome);
            }
            Pending::Join { answer, room, sent } => {
                self.metrics.command_latency.observe(sent.elapsed());
                let outcome = redis::join_reply(&reply).ok_or(Unavailable);
                match &outcome {
                    Ok((history, _)) => {
                        self.subscriptions
                            .observe(&room, &history.epoch, history.seq);
                    }
                    Err(_) => log_warn!("redis bridge: join refused: {reply:?}"),
                }
                self.sink.joined(answer, outcome);
            }
            Pending::Presence { answer } => {
                let outcome = redis::presence_reply(&reply).ok_or(Unavailable);
                if outcome.is_err() {
                    log_warn!("redis bridge: presence refused: {reply:?}");
                }
                self.sink.presence(answer, outcome);
            }
            Pending::Sent { answer } => {
                let outcome = reply
                    .as_i64()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or(Unavailable);
                if outcome.is_err() {
                    log_warn!("redis bridge: send refused: {reply:?}");
                }
                self.sink.sent(answer, outcome);
            }
            Pending::Ignored => {
                if let Reply::Error(e) = reply {
                    log_warn!("redis bridge: a command was refused: {e}");
                }
            }
            Pending::DeadNodes => self.on_dead_nodes(index, &reply),
            Pending::DeadRooms { node } => self.on_dead_rooms(index, &node, &reply),
            Pending::Recover { room } => self.on_recovered(&room, &reply),
        }
        Ok(())
    }

    /// The last setup reply is in (the library is loaded): the link takes
    /// requests.
    fn on_setup_answered(&mut self, index: usize) {
        let link = &mut self.links[index];
        if link.ready {
            return;
        }
        link.ready = true;
        link.backoff.reset();
        if link.was_up {
            self.metrics.reconnects.inc();
            log_info!("redis bridge: {} is back", link.url);
        }
        link.was_up = true;
        self.next_heartbeat = Instant::now();
        self.sink.resync();
    }

    /// What a room missed while the link was down: the events the recovery
    /// returned go to the shards in order (a gap stays where history did
    /// not reach; another epoch means Redis lost the room).
    fn on_recovered(&mut self, room: &str, reply: &Reply) {
        if !self.subscriptions.recovered(room) {
            return;
        }
        let Some(history) = redis::history_reply(reply) else {
            log_warn!("redis bridge: recovery of a room refused: {reply:?}");
            return;
        };
        let Some(room) = self.subscriptions.room(room).cloned() else {
            return;
        };
        let first = history.seq + 1 - history.messages.len() as u64;
        let epoch: Arc<str> = history.epoch.as_str().into();
        for (i, text) in history.messages.iter().enumerate() {
            self.forward(&room, &epoch, first + i as u64, text, None);
        }
        self.subscriptions
            .observe(&room, &history.epoch, history.seq);
    }

    /// A push: a `message` goes to every shard serving its room;
    /// subscription confirmations need nothing.
    fn on_push(&mut self, items: &[Reply]) {
        let [kind, channel, payload] = items else {
            return;
        };
        if kind.as_bytes() != Some(b"message") {
            return;
        }
        let (Some(channel), Some(payload)) = (channel.as_bytes(), payload.as_bytes()) else {
            return;
        };
        if channel == redis::direct_channel(&self.config.prefix).as_bytes() {
            return self.on_direct(payload);
        }
        let Some(room) = room_of(&self.config.prefix, channel) else {
            return;
        };
        let Some(message) = redis::channel_message(payload) else {
            return;
        };
        // A room no longer served (unsubscribed meanwhile) has no shard to go to.
        let Some(room) = self.subscriptions.room(room).cloned() else {
            return;
        };
        let from_here = Origin::parse(message.origin)
            .filter(|o| o.node == self.config.node_id)
            .map(|o| FromHere {
                read_micros: o.read_micros,
                exclude: o.exclude,
            });
        if message.epoch == "-" {
            return self.forward_presence(&room, message.text, from_here);
        }
        let epoch: Arc<str> = message.epoch.into();
        self.forward(&room, &epoch, message.seq, message.text, from_here);
    }

    /// A direct message or broadcast: every shard delivers to its own.
    fn on_direct(&mut self, payload: &[u8]) {
        let Some(direct) = redis::Direct::parse(payload) else {
            return;
        };
        let exclude = Origin::parse(direct.origin)
            .filter(|o| o.node == self.config.node_id)
            .and_then(|o| o.exclude);
        self.sink.direct(DirectMessage {
            to: direct.to.map(Arc::from),
            frame: wire::text_frame(direct.text),
            exclude,
        });
    }

    /// A presence event goes to the shards as it comes: it has no `seq`.
    fn forward_presence(&mut self, room: &Arc<str>, text: &[u8], from_here: Option<FromHere>) {
        let event = RoomEvent {
            room: room.clone(),
            epoch: Arc::from(""),
            seq: 0,
            frame: wire::text_frame(text),
            from_here,
            presence: true,
        };
        for shard in self.subscriptions.shards_of(room) {
            self.sink.deliver(shard, event.clone());
        }
    }

    /// Hands one event to every shard serving `room`, once, in order.
    fn forward(
        &mut self,
        room: &Arc<str>,
        epoch: &Arc<str>,
        seq: u64,
        text: &[u8],
        from_here: Option<FromHere>,
    ) {
        if !self.subscriptions.forward(room, epoch, seq) {
            return;
        }
        let event = RoomEvent {
            room: room.clone(),
            epoch: epoch.clone(),
            seq,
            frame: wire::text_frame(text),
            from_here,
            presence: false,
        };
        for shard in self.subscriptions.shards_of(room) {
            self.sink.deliver(shard, event.clone());
        }
    }

    /// Writes what a link has queued.
    fn flush(&mut self, index: usize) {
        let link = &mut self.links[index];
        let Some(stream) = link.stream.as_mut().filter(|_| link.connected) else {
            return;
        };
        match write_available(stream, link.pipeline.output()) {
            Ok(n) => link.pipeline.written(n),
            Err(e) => {
                log_warn!("redis bridge: {}: {e}", link.url);
                self.drop_link(index);
            }
        }
    }
}

/// `HELLO 3` (with AUTH when the URL has a password, and the node's client
/// name) and SELECT.
fn setup_commands(url: &RedisUrl, node_id: &str) -> Vec<Vec<String>> {
    let mut hello = vec!["HELLO".to_string(), "3".into()];
    if let Some(password) = &url.password {
        let user = url.user.clone().unwrap_or_else(|| "default".into());
        hello.extend(["AUTH".into(), user, password.clone()]);
    }
    hello.extend(["SETNAME".into(), format!("roomcast-{node_id}")]);
    let mut commands = vec![hello];
    if url.db != 0 {
        commands.push(vec!["SELECT".into(), url.db.to_string()]);
    }
    commands
}

fn resolve(url: &RedisUrl) -> io::Result<SocketAddr> {
    if url.tls {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "rediss:// (TLS to Redis) is not supported yet",
        ));
    }
    (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for the Redis host"))
}

/// The room of a channel `<prefix>:{<room>}`.
fn room_of<'a>(prefix: &str, channel: &'a [u8]) -> Option<&'a str> {
    let channel = std::str::from_utf8(channel).ok()?;
    channel
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix('}')
}

/// Appends to `bytes` what the socket has, until `WouldBlock`; an EOF is
/// an error (Redis went away).
fn read_available(stream: &mut TcpStream, bytes: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                ));
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes what the socket takes now; returns how much.
fn write_available(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Randomness for the backoff's jitter: std's randomly keyed hasher (fresh
/// keys per `RandomState`) over the time, so nodes do not retry in step.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_names_its_room() {
        assert_eq!(room_of("rc", b"rc:{prices:btc}"), Some("prices:btc"));
        assert_eq!(room_of("rc", b"other:{x}"), None);
        assert_eq!(room_of("rc", b"rc:{x"), None);
    }

    #[test]
    fn credentials_and_database_become_setup_commands() {
        let url: RedisUrl = "redis://app:pw@h/2".parse().unwrap();
        let name = ["SETNAME", "roomcast-n1"];
        let hello = |auth: &[&'static str]| {
            let mut all = vec!["HELLO", "3"];
            all.extend_from_slice(auth);
            all.extend_from_slice(&name);
            all
        };
        assert_eq!(
            setup_commands(&url, "n1"),
            [hello(&["AUTH", "app", "pw"]), vec!["SELECT", "2"]]
        );
        let url: RedisUrl = "redis://:pw@h".parse().unwrap();
        assert_eq!(
            setup_commands(&url, "n1"),
            [hello(&["AUTH", "default", "pw"])]
        );
        assert_eq!(
            setup_commands(&"redis://h".parse().unwrap(), "n1"),
            [hello(&[])]
        );
    }
}
