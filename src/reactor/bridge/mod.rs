//! The Redis bridge: one thread per process, with its own mio loop, that
//! carries room events between this node and Redis (`docs/redis.md`).
//!
//! Shards hand it requests over a channel plus a waker (`BridgeHandle`) and
//! hear back through a `BridgeSink`; no shard thread ever waits on Redis.
//! Per `--redis` server it keeps one RESP3 connection (`HELLO 3`) for its
//! commands and for the channels of the rooms this node serves: commands
//! are pipelined (`redis::pipeline`), channel messages arrive as pushes in
//! between. One connection is what keeps a join exact: Redis writes every
//! event published before a join's `roomcast_join` ran ahead of its reply
//! and every later one after it, so the member gets each event once, from
//! its history or live. A lost connection is retried with backoff and
//! jitter (`redis::backoff`); meanwhile requests are answered
//! `Unavailable`, and once back every room served is recovered from its
//! history where its cursor left off (`redis::subscriptions`).
//!
//! Here: the requests, the loop, publishes and subscriptions. `batch`: the
//! publishes to a room taken together, sent as one call. `link`: the
//! connections. `bounds`: what waits for Redis, bounded in time
//! (`--redis-timeout`) and in size. `events`: what the channels bring. `presence`: joins,
//! leaves, the online set and node liveness. `api`: the Server API's
//! messages between nodes and the list of live nodes. `sentinel`: where a
//! `redis+sentinel://` server's master is. Owns those sockets; the RESP
//! bytes and the function calls come from `redis`, the requests and what
//! comes back unasked from `redis::requests`; what a reply means for a
//! client is the room router's business (`rooms::cluster`), reached through
//! the sink the reactor gives it (`ShardSink`, one `Command::Bridge` per
//! answer to the shard it is for).

mod api;
mod batch;
mod bounds;
mod cluster;
mod events;
mod link;
mod presence;
mod replicas;
mod sentinel;
mod stream;
mod webhooks;

pub use stream::client_tls;
pub use webhooks::WebhookFeed;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token, Waker};

use crate::config::{ClusterConfig, HistoryConfig, PresenceConfig};
use crate::hooks::webhook::{EventType, Types};
use crate::log_warn;
use crate::metrics::RedisMetrics;
use crate::proto::names::matches_any;
use crate::redis::backoff::Backoff;
use crate::redis::layout::{self, RoomKeys};
use crate::redis::liveness::Liveness;
use crate::redis::pipeline::Pipeline;
use crate::redis::resp;
use crate::redis::subscriptions::{Change, Subscriptions};
use crate::redis::url::RedisUrl;
use crate::redis::{self, History, Presence, Sequenced, Unsequenced};

pub use crate::redis::requests::{
    BridgeRequest, DirectMessage, FromHere, OwnedQuery, RoomEvent, Unavailable,
};

const WAKER: Token = Token(usize::MAX);
/// Most requests waiting for Redis per server; past it, requests are
/// answered `Unavailable` rather than queued without bound (`bounds`).
const MAX_IN_FLIGHT: usize = 16_384;
/// Rooms whose key names are kept; past it the cache starts afresh.
const MAX_CACHED_KEYS: usize = 65_536;
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);
/// How often a node writes its heartbeat and looks for dead nodes.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often a node reads which nodes are live (for the Server API): more
/// often than heartbeats, so that a node that just started (its first
/// heartbeat is written as soon as Redis is reachable) is waited for by
/// the others' calls within a second.
const LIVE_NODES_READ: Duration = Duration::from_secs(1);
/// A node whose heartbeat is older is dead: its presence is removed and its
/// leaves announced (section 10: within 30 s).
const NODE_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// The outcome of a `History` (`Some`) or a `HistoryRemove` (`None`).
    fn room_read(&self, answer: Self::Answer, outcome: Result<Option<History>, Unavailable>);
    /// The outcome of a `RoomUsers`: each room's distinct users, in order.
    fn room_users(&self, answer: Self::Answer, outcome: Result<Vec<u64>, Unavailable>);
    /// A direct message or broadcast for every shard's own connections.
    fn direct(&self, message: DirectMessage);
    /// A link is (again) ready: every room's presence should be `Sync`ed,
    /// since Redis may have lost it or reaped it meanwhile.
    fn resync(&self);
    /// A room event for shard `shard`, in the room's seq order.
    fn deliver(&self, shard: usize, event: RoomEvent);
    /// Whether every Redis server is reachable, on every change.
    fn link(&self, up: bool);
    /// A Server API message from a node (this one too) on `<prefix>:api`
    /// or on this node's `<prefix>:api:<node>`, at most
    /// `redis::api::MAX_API_PAYLOAD` bytes.
    fn api(&self, payload: Vec<u8>);
    /// The nodes whose heartbeat is at most `NODE_TIMEOUT` old, this one
    /// included, sorted: on every change, read each `HEARTBEAT` (while the
    /// online set's server is away, the last list stands).
    fn live_nodes(&self, nodes: Arc<[Box<str>]>);
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

/// The bridge's settings: the node's cluster group and the parts of the
/// rooms group that Redis keeps for it.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The servers, the prefix and the node id, which makes the epochs this
    /// node creates unique in the cluster and tells its own events apart on
    /// the channels.
    pub cluster: ClusterConfig,
    /// What the history of each room keeps.
    pub history: HistoryConfig,
    /// Which rooms announce presence, for the leaves of dead nodes and syncs.
    pub presence: PresenceConfig,
    /// `--webhook`: which transitions the functions add to each server's
    /// stream of webhook events (section 13.1).
    pub webhooks: Option<WebhookRules>,
    /// For `rediss://` servers: the authorities their certificates are
    /// checked against (`client_tls`), built once at start.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The webhook events this node asks Redis to record.
#[derive(Debug, Clone, Default)]
pub struct WebhookRules {
    /// The types (`--webhook-events`) and the stream's bound.
    pub flags: redis::WebhookFlags,
    /// `--webhook-rooms`: the rooms whose messages are recorded.
    pub message_rooms: Vec<String>,
}

/// Starts the bridge thread; it writes `metrics` alone.
pub fn start<S: BridgeSink>(
    config: BridgeConfig,
    sink: S,
    metrics: Arc<RedisMetrics>,
    feed: Option<WebhookFeed>,
) -> io::Result<(BridgeHandle<S::Answer>, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let (named, masters) = crossbeam_channel::unbounded();
    let timeout = config.cluster.timeout;
    let replicas = config.cluster.replicas;
    let redis_cluster = config
        .cluster
        .servers
        .iter()
        .find(|url| url.is_cluster())
        .cloned();
    let mut links: Vec<Link<S::Answer>> = match &redis_cluster {
        Some(url) => cluster::Topology::seed_links(url, replicas, timeout),
        None => config
            .cluster
            .servers
            .iter()
            .cloned()
            .map(|url| Link::new(url, replicas, timeout))
            .collect(),
    };
    for (index, link) in links.iter_mut().enumerate() {
        if let Some(sentinels) = link.url.sentinels() {
            let watch =
                sentinel::Watch::start(index, sentinels.clone(), named.clone(), waker.clone());
            link.watch = Some(watch?);
        }
    }
    let topology = redis_cluster.map(|url| cluster::Topology::new(url, replicas, timeout));
    let servers = config.cluster.servers.len();
    let webhooks = feed.map(|feed| webhooks::Reader::new(feed, &config.cluster.prefix, servers));
    let mut bridge = Bridge {
        poll,
        requests: rx,
        masters,
        sink,
        links,
        subscriptions: Subscriptions::default(),
        config,
        epochs_made: 0,
        up: None,
        backlog: false,
        held: std::collections::VecDeque::new(),
        read_buf: Vec::new(),
        metrics,
        next_heartbeat: Instant::now(),
        next_live_read: Instant::now(),
        started: Instant::now(),
        node_rooms: String::new(),
        direct_channel: String::new(),
        api_channel: String::new(),
        api_node_channel: String::new(),
        live_nodes: Arc::new([]),
        live_known: false,
        webhooks,
        keys: HashMap::new(),
        batches: batch::Batches::default(),
        batched: 0,
        room_users: HashMap::new(),
        next_gather: 0,
        topology,
    };
    bridge.node_rooms = layout::node_rooms(
        &bridge.config.cluster.prefix,
        &bridge.config.cluster.node_id,
    );
    let (prefix, node) = (
        &bridge.config.cluster.prefix,
        &bridge.config.cluster.node_id,
    );
    bridge.direct_channel = redis::direct_channel(prefix);
    bridge.api_channel = layout::api_channel(prefix);
    bridge.api_node_channel = layout::api_node_channel(prefix, node);
    bridge.live_nodes = Arc::new([node.as_str().into()]);
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
    /// `ROLE`, in the setup of a Sentinel-managed server: a server that
    /// is not the master is unusable too.
    Role,
    /// A `roomcast_publish` of a batch to `room`: `answers[i]` is the
    /// `i`th message's.
    Publish {
        room: Arc<str>,
        answers: Vec<A>,
        sent: Instant,
    },
    /// The `WAIT` covering the `covers` publishes answered before it that
    /// `Link::replication` holds.
    Replicated {
        covers: usize,
    },
    Join {
        answer: A,
        room: Arc<str>,
        sent: Instant,
    },
    Presence {
        answer: A,
    },
    /// A `History` (`remove: false`) or `HistoryRemove`.
    RoomRead {
        answer: A,
        remove: bool,
    },
    /// One room's users of `RoomUsers` gather `gather`.
    RoomUsers {
        gather: u64,
        index: usize,
    },
    Sent {
        answer: A,
    },
    /// A reply nobody waits for (leaves, syncs, heartbeats).
    Ignored,
    /// The nodes whose heartbeat is older than `NODE_TIMEOUT`.
    DeadNodes,
    /// The nodes whose heartbeat is not (`redis::api::live_nodes`).
    LiveNodes,
    /// The rooms on this server where the dead `node` counted connections.
    DeadRooms {
        node: String,
    },
    /// After a reconnect: what `room` missed, to deliver.
    Recover {
        room: Arc<str>,
    },
    /// Redis Cluster: a `CLUSTER SLOTS` (`bridge::cluster`).
    Topology,
    /// Redis Cluster: an `SSUBSCRIBE` (`subscribe`) or `SUNSUBSCRIBE` of
    /// `room`'s channel (`None`: a node-level one, or any unsubscription),
    /// confirmed by a push or refused.
    Subscribed {
        room: Option<Arc<str>>,
        subscribe: bool,
    },
    /// The webhook stream cursor of server `index` (`bridge::webhooks`).
    WebhookCursor {
        index: usize,
    },
    /// New entries of server `index`'s webhook stream.
    WebhookRead {
        index: usize,
    },
}

/// Everything about one Redis server.
struct Link<A> {
    url: RedisUrl,
    stream: Option<stream::Stream>,
    /// Where the connection goes, or went last.
    addr: Option<SocketAddr>,
    /// `redis+sentinel://`: the watcher that names the master.
    watch: Option<sentinel::Watch>,
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
    /// With `--redis-replicas`: publishes waiting for their `WAIT`.
    replication: replicas::Replication<A>,
    /// Whether Redis answers in time (`--redis-timeout`), and its pings.
    liveness: Liveness,
    /// Redis Cluster: its node is no longer a master; not reconnected.
    retired: bool,
}

impl<A> Link<A> {
    fn new(url: RedisUrl, replicas: u8, timeout: Duration) -> Self {
        Self {
            url,
            stream: None,
            addr: None,
            watch: None,
            connected: false,
            ready: false,
            setup_left: 0,
            pipeline: Pipeline::new(bounds::ALL),
            backoff: Backoff::new(RETRY_BASE, RETRY_CAP),
            retry_at: Instant::now(),
            was_up: false,
            replication: replicas::Replication::new(replicas),
            liveness: Liveness::new(timeout),
            retired: false,
        }
    }

    /// A link to a Redis Cluster node, whose commands are kept until
    /// answered, for `-MOVED` and `-ASK`.
    fn for_cluster(url: RedisUrl, replicas: u8, timeout: Duration) -> Self {
        Self {
            pipeline: Pipeline::keeping(bounds::ALL),
            ..Self::new(url, replicas, timeout)
        }
    }

    fn is_up(&self) -> bool {
        self.stream.is_some() && self.ready
    }

    /// Whether there is a server to connect to: a Sentinel-managed one
    /// waits for its watcher to name the master.
    fn knows_address(&self) -> bool {
        self.watch.as_ref().is_none_or(|w| w.master.is_some())
    }

    /// Neither up yet nor failed yet: its first attempt is under way.
    fn first_try(&self) -> bool {
        !self.was_up && self.backoff.failures() == 0
    }
}

struct Bridge<S: BridgeSink> {
    poll: Poll,
    requests: Receiver<BridgeRequest<S::Answer>>,
    /// The masters the Sentinel watchers name, by link.
    masters: Receiver<(usize, SocketAddr)>,
    sink: S,
    links: Vec<Link<S::Answer>>,
    subscriptions: Subscriptions,
    config: BridgeConfig,
    epochs_made: u64,
    up: Option<bool>,
    /// Requests were left in the channel last turn (`bounds`).
    backlog: bool,
    /// Requests held behind a join past the bound, in order (`bounds`).
    held: std::collections::VecDeque<BridgeRequest<S::Answer>>,
    /// What a connection read this time, reused.
    read_buf: Vec<u8>,
    metrics: Arc<RedisMetrics>,
    next_heartbeat: Instant,
    /// When the live nodes are read next (`LIVE_NODES_READ`).
    next_live_read: Instant,
    /// When the bridge started: a link still waiting for its Sentinels to
    /// name a master has had its first try once `--redis-timeout` passed.
    started: Instant,
    /// This node's room index key (`layout::node_rooms`).
    node_rooms: String,
    /// The channel of direct messages and broadcasts (`redis::direct_channel`).
    direct_channel: String,
    /// The Server API's channel to every node (`layout::api_channel`).
    api_channel: String,
    /// This node's Server API replies channel (`layout::api_node_channel`).
    api_node_channel: String,
    /// The live nodes the sink was last told of (`BridgeSink::live_nodes`).
    live_nodes: Arc<[Box<str>]>,
    /// The live nodes were read from Redis at least once.
    live_known: bool,
    /// `--webhook` in a cluster: the streams' reader.
    webhooks: Option<webhooks::Reader>,
    /// The key names of the rooms in use, built once each (`keys_of`).
    keys: HashMap<Arc<str>, Arc<RoomKeys>>,
    /// Publishes taken and not sent yet (`batch`).
    batches: batch::Batches<S::Answer>,
    /// Publishes taken and not answered yet, beyond the one per command
    /// that a pipeline counts: a batch of `n` waits as one command and
    /// counts `n`; one collected or held (`batch`) counts before it is
    /// sent (`bounds`). Kept for all links together: a call may be
    /// redirected to another link in a Redis Cluster.
    batched: usize,
    /// `RoomUsers` requests whose counts are coming, by gather.
    room_users: HashMap<u64, api::UserCounts<S::Answer>>,
    next_gather: u64,
    /// `redis+cluster://`: the slot map and its links (`bridge::cluster`).
    topology: Option<cluster::Topology>,
}

impl<S: BridgeSink> Bridge<S> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            self.watch_links(Instant::now());
            self.connect_due();
            self.refresh_map();
            self.report_link();
            self.heartbeat();
            self.read_live_nodes();
            self.read_webhooks();
            for link in 0..self.links.len() {
                self.flush(link);
            }
            let next_webhooks = self.webhooks.as_ref().map(webhooks::Reader::next_read);
            let until_heartbeat = self
                .next_heartbeat
                .min(self.next_live_read)
                .min(next_webhooks.unwrap_or(self.next_live_read))
                .saturating_duration_since(Instant::now());
            let mut timeout = self
                .next_retry()
                .map_or(until_heartbeat, |t| t.min(until_heartbeat));
            if self.topology.is_some() {
                // The map is asked for again within this when it may be stale.
                timeout = timeout.min(Duration::from_millis(100));
            }
            let timeout = Some(self.until_next_check(timeout));
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
            while let Ok((index, addr)) = self.masters.try_recv() {
                self.on_master(index, addr);
            }
            self.apply_map();
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

    fn on_request(&mut self, request: BridgeRequest<S::Answer>) {
        // Everything but a publish goes after the publishes taken before it.
        if !matches!(request, BridgeRequest::Publish { .. }) {
            self.send_batches();
        }
        match request {
            BridgeRequest::Publish {
                room,
                head,
                tail,
                origin,
                answer,
            } => {
                self.batched += 1;
                let message = Unsequenced { head, tail, origin };
                if let Some(full) = self.batches.add(room, message, answer) {
                    self.publish(full);
                }
            }
            BridgeRequest::Volatile {
                room,
                text,
                origin,
                answer,
            } => self.volatile(&room, &text, &origin, answer),
            BridgeRequest::Join {
                room,
                query,
                change,
                answer,
            } => self.join(room, &query, &change, answer),
            BridgeRequest::Leave { room, change } => self.leave(&room, &change),
            BridgeRequest::PresenceGet { room, answer } => self.presence(&room, answer),
            BridgeRequest::History {
                room,
                query,
                answer,
            } => self.room_read(&room, Some(&query), answer),
            BridgeRequest::HistoryRemove { room, answer } => self.room_read(&room, None, answer),
            BridgeRequest::RoomUsers { rooms, answer } => self.room_users(&rooms, answer),
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
            BridgeRequest::ApiCast { to, payload } => self.api_cast(to.as_deref(), &payload),
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

    /// The key names of `room`: eight strings, built once per room in use
    /// rather than for every message.
    fn keys_of(&mut self, room: &str) -> Arc<RoomKeys> {
        if let Some(keys) = self.keys.get(room) {
            return keys.clone();
        }
        if self.keys.len() >= MAX_CACHED_KEYS {
            self.keys.clear();
        }
        let keys = Arc::new(RoomKeys::new(&self.config.cluster.prefix, room));
        self.keys.insert(room.into(), keys.clone());
        keys
    }

    /// Sends every batch of publishes collected, waiting or not (`batch`).
    pub(super) fn send_batches(&mut self) {
        if self.batches.is_empty() {
            return;
        }
        for batch in self.batches.take_all() {
            self.publish(batch);
        }
    }

    /// Sends the batches of publishes whose room has no call waiting.
    pub(super) fn send_ready_batches(&mut self) {
        if self.batches.is_empty() {
            return;
        }
        for batch in self.batches.take_ready() {
            self.publish(batch);
        }
    }

    /// Sequences a batch of publishes to one room with one call.
    fn publish(&mut self, batch: batch::Batch<S::Answer>) {
        let batch::Batch {
            room,
            messages,
            answers,
            ..
        } = batch;
        let index = self.route(&room);
        let keys = self.keys_of(&room);
        let epoch = self.fresh_epoch();
        let retention = self.config.history;
        let hooks = self.message_hooks(&room);
        let link = &mut self.links[index];
        let n = answers.len();
        if !link.is_up() {
            return self.unavailable(answers);
        }
        let sent = Instant::now();
        let pending = Pending::Publish {
            room: room.clone(),
            answers,
            sent,
        };
        let pushed = link.pipeline.push(pending, |out| {
            redis::publish(out, &keys, &messages, &epoch, retention, hooks.at(&room));
        });
        match pushed {
            Ok(()) => {
                link.replication.published(n);
                self.batched = self.batched.saturating_sub(1);
                self.batches.sent(&room);
            }
            Err(Pending::Publish { answers, .. }) => self.unavailable(answers),
            Err(_) => {}
        }
    }

    /// Answers publishes that were not sent `Unavailable`.
    fn unavailable(&mut self, answers: Vec<S::Answer>) {
        self.batched = self.batched.saturating_sub(answers.len());
        for answer in answers {
            self.sink.sequenced(answer, Err(Unavailable));
        }
    }

    /// A volatile event: one `SPUBLISH` on the room's channel, no
    /// function, answered as a `Send` once Redis took it.
    fn volatile(&mut self, room: &str, text: &[u8], origin: &str, answer: S::Answer) {
        let index = self.route(room);
        let keys = self.keys_of(room);
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.sent(answer, Err(Unavailable));
        }
        let pushed = link.pipeline.push(Pending::Sent { answer }, |out| {
            redis::volatile(out, &keys.channel, origin, text);
        });
        if let Err(Pending::Sent { answer }) = pushed {
            self.sink.sent(answer, Err(Unavailable));
        }
    }

    /// The flags of calls that count (all types but `room.message`).
    fn count_hooks(&self) -> redis::WebhookFlags {
        self.config
            .webhooks
            .as_ref()
            .map(|w| redis::WebhookFlags {
                types: w.flags.types.without(EventType::RoomMessage),
                ..w.flags
            })
            .unwrap_or_default()
    }

    /// The flags of a publish to `room`: `room.message` alone, when
    /// `--webhook-rooms` matches it.
    fn message_hooks(&self, room: &str) -> redis::WebhookFlags {
        match &self.config.webhooks {
            Some(w)
                if w.flags.types.contains(EventType::RoomMessage)
                    && matches_any(&w.message_rooms, room) =>
            {
                redis::WebhookFlags {
                    types: Types::of(&[EventType::RoomMessage]),
                    ..w.flags
                }
            }
            _ => redis::WebhookFlags::default(),
        }
    }

    fn fresh_epoch(&mut self) -> String {
        self.epochs_made += 1;
        format!("{}-{:x}", self.config.cluster.node_id, self.epochs_made)
    }

    fn subscribe(&mut self, change: Change) {
        let (verb, room) = match &change {
            Change::Subscribe(room) => ("SSUBSCRIBE", room),
            Change::Unsubscribe(room) => ("SUNSUBSCRIBE", room),
        };
        let index = self.route(room);
        let channel = self.keys_of(room).channel.clone();
        // The rooms a node serves are where a reaper looks for its
        // connections, should it die.
        let index_verb = match &change {
            Change::Subscribe(_) => "SADD",
            Change::Unsubscribe(_) => "SREM",
        };
        // Without a connection, the subscription is made when it comes back
        // (and the index by the sync that follows).
        if self.links[index].stream.is_none() {
            return;
        }
        let served = match &change {
            Change::Subscribe(room) => Some(room.clone()),
            Change::Unsubscribe(_) => None,
        };
        self.push_subscription(index, verb, &channel, served);
        let at = self.index_link(index);
        let node_rooms = &self.node_rooms;
        let link = &mut self.links[at];
        if link.stream.is_some() {
            let _ = link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &[index_verb, node_rooms.as_str(), room]);
            });
        }
    }
}

/// The room of a channel `<prefix>:{<room>}`.
fn room_of<'a>(prefix: &str, channel: &'a [u8]) -> Option<&'a str> {
    let channel = std::str::from_utf8(channel).ok()?;
    channel
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix('}')
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
}
