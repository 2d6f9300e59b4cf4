//! The Redis bridge: one thread per process, with its own mio loop, that
//! carries room events between this node and Redis (`docs/redis.md`).
//!
//! Shards hand it requests over a channel plus a waker (`BridgeHandle`) and
//! hear back through a `BridgeSink`; no shard thread ever waits on Redis.
//! Per `--redis` server it keeps two connections: a command connection whose
//! commands are pipelined (`redis::pipeline`), and a subscriber connection
//! for the channels of the rooms this node serves
//! (`redis::subscriptions`). A lost connection is retried with backoff and
//! jitter (`redis::backoff`); meanwhile publishes are answered `Unavailable`.
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

use crate::log_warn;
use crate::redis::backoff::Backoff;
use crate::redis::layout::{self, RoomKeys};
use crate::redis::pipeline::Pipeline;
use crate::redis::resp::{self, Reply};
use crate::redis::subscriptions::{Change, Subscriptions};
use crate::redis::url::RedisUrl;
use crate::redis::{self, Retention, Sequenced};
use crate::rooms::wire;

const WAKER: Token = Token(0);
/// Most commands waiting for Redis per server; past it, publishes are
/// answered `Unavailable` rather than queued without bound.
const MAX_IN_FLIGHT: usize = 16_384;
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

/// What the bridge is asked to do.
#[derive(Debug)]
pub enum BridgeRequest<A> {
    /// Sequence a room event whose text is `head`, its seq, `tail`.
    Publish {
        room: Arc<str>,
        head: Vec<u8>,
        tail: Vec<u8>,
        answer: A,
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
}

/// Where the bridge's results go (the shards, through their bus).
pub trait BridgeSink: Send + 'static {
    type Answer: Send + 'static;
    /// The outcome of a `Publish`.
    fn sequenced(&self, answer: Self::Answer, outcome: Result<Sequenced, Unavailable>);
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
        self.requests.send(request).is_ok() && self.waker.wake().is_ok()
    }
}

/// The bridge's settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub servers: Vec<RedisUrl>,
    pub prefix: String,
    pub retention: Retention,
    /// Makes the epochs this node creates unique in the cluster.
    pub node_id: String,
}

/// Starts the bridge thread.
pub fn start<S: BridgeSink>(
    config: BridgeConfig,
    sink: S,
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
    };
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
    /// AUTH, SELECT or FUNCTION LOAD: an error reply means the link is unusable.
    Setup,
    Publish(A),
}

/// One side (commands or subscriptions) of a link.
struct Socket {
    stream: TcpStream,
    connected: bool,
}

/// Everything about one Redis server.
struct Link<A> {
    url: RedisUrl,
    commands: Option<Socket>,
    pipeline: Pipeline<Pending<A>>,
    subscriber: Option<Socket>,
    sub_output: Vec<u8>,
    sub_input: Vec<u8>,
    backoff: Backoff,
    retry_at: Instant,
}

impl<A> Link<A> {
    fn new(url: RedisUrl) -> Self {
        Self {
            url,
            commands: None,
            pipeline: Pipeline::new(MAX_IN_FLIGHT),
            subscriber: None,
            sub_output: Vec::new(),
            sub_input: Vec::new(),
            backoff: Backoff::new(RETRY_BASE, RETRY_CAP),
            retry_at: Instant::now(),
        }
    }

    fn is_up(&self) -> bool {
        let ready = |s: &Option<Socket>| s.as_ref().is_some_and(|s| s.connected);
        ready(&self.commands) && ready(&self.subscriber)
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
    /// What a command connection read this time, reused.
    read_buf: Vec<u8>,
}

fn command_token(link: usize) -> Token {
    Token(1 + 2 * link)
}

fn subscriber_token(link: usize) -> Token {
    Token(2 + 2 * link)
}

impl<S: BridgeSink> Bridge<S> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            self.connect_due();
            self.report_link();
            let timeout = self.next_retry();
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                log_warn!("redis bridge: poll failed: {e}");
                return;
            }
            for event in events.iter() {
                let token = event.token().0;
                if token == 0 {
                    continue;
                }
                let link = (token - 1) / 2;
                if token % 2 == 1 {
                    self.on_commands(link);
                } else {
                    self.on_subscriber(link);
                }
            }
            if !self.take_requests() {
                return;
            }
            for link in 0..self.links.len() {
                self.flush(link);
            }
        }
    }

    /// Handles every queued request; false on `Stop`.
    fn take_requests(&mut self) -> bool {
        loop {
            match self.requests.try_recv() {
                Ok(BridgeRequest::Stop) | Err(TryRecvError::Disconnected) => return false,
                Ok(request) => self.on_request(request),
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn on_request(&mut self, request: BridgeRequest<S::Answer>) {
        match request {
            BridgeRequest::Publish {
                room,
                head,
                tail,
                answer,
            } => self.publish(&room, &head, &tail, answer),
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

    fn publish(&mut self, room: &str, head: &[u8], tail: &[u8], answer: S::Answer) {
        let index = layout::server_of(room, self.links.len());
        let keys = RoomKeys::new(&self.config.prefix, room);
        let epoch = self.fresh_epoch();
        let retention = self.config.retention;
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.sequenced(answer, Err(Unavailable));
        }
        let pushed = link.pipeline.push(Pending::Publish(answer), |out| {
            redis::publish(out, &keys, head, tail, &epoch, retention);
        });
        if let Err(Pending::Publish(answer)) = pushed {
            self.sink.sequenced(answer, Err(Unavailable));
        }
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
        let link = &mut self.links[index];
        // Without a connection, the subscription is made when it comes back.
        if link.subscriber.is_some() {
            resp::write_command(&mut link.sub_output, &[verb, channel.as_str()]);
        }
    }

    /// Opens the connections of every link that is down and due a retry.
    fn connect_due(&mut self) {
        let now = Instant::now();
        for index in 0..self.links.len() {
            let link = &self.links[index];
            if link.commands.is_some() || now < link.retry_at {
                continue;
            }
            if let Err(e) = self.open(index) {
                log_warn!("redis bridge: {}: {e}", self.links[index].url);
                self.drop_link(index);
            }
        }
    }

    fn open(&mut self, index: usize) -> io::Result<()> {
        let addr = resolve(&self.links[index].url)?;
        let mut commands = TcpStream::connect(addr)?;
        let mut subscriber = TcpStream::connect(addr)?;
        let registry = self.poll.registry();
        let both = Interest::READABLE | Interest::WRITABLE;
        registry.register(&mut commands, command_token(index), both)?;
        registry.register(&mut subscriber, subscriber_token(index), both)?;
        let link = &mut self.links[index];
        link.pipeline.reset();
        link.sub_output.clear();
        link.sub_input.clear();
        for command in setup_commands(&link.url) {
            let pushed = link
                .pipeline
                .push(Pending::Setup, |out| resp::write_command(out, &command));
            debug_assert!(pushed.is_ok());
            resp::write_command(&mut link.sub_output, &command);
        }
        let _ = link.pipeline.push(Pending::Setup, redis::load_library);
        let channels: Vec<String> = self
            .subscriptions
            .rooms()
            .filter(|room| layout::server_of(room, self.links.len()) == index)
            .map(|room| RoomKeys::new(&self.config.prefix, room).channel)
            .collect();
        let link = &mut self.links[index];
        for channel in channels {
            resp::write_command(&mut link.sub_output, &["SUBSCRIBE", channel.as_str()]);
        }
        link.commands = Some(Socket {
            stream: commands,
            connected: false,
        });
        link.subscriber = Some(Socket {
            stream: subscriber,
            connected: false,
        });
        Ok(())
    }

    /// A link failed: its sockets go, what it had in flight is answered
    /// `Unavailable`, and the next attempt is scheduled.
    fn drop_link(&mut self, index: usize) {
        let link = &mut self.links[index];
        for socket in [link.commands.take(), link.subscriber.take()]
            .into_iter()
            .flatten()
        {
            let mut stream = socket.stream;
            let _ = self.poll.registry().deregister(&mut stream);
        }
        let lost = link.pipeline.reset();
        let delay = link.backoff.next_delay(random());
        link.retry_at = Instant::now() + delay;
        for pending in lost {
            if let Pending::Publish(answer) = pending {
                self.sink.sequenced(answer, Err(Unavailable));
            }
        }
    }

    fn next_retry(&self) -> Option<Duration> {
        let now = Instant::now();
        self.links
            .iter()
            .filter(|l| l.commands.is_none())
            .map(|l| l.retry_at.saturating_duration_since(now))
            .min()
    }

    fn report_link(&mut self) {
        let up = self.links.iter().all(Link::is_up);
        if self.up != Some(up) {
            self.up = Some(up);
            self.sink.link(up);
        }
    }

    fn on_commands(&mut self, index: usize) {
        if let Err(e) = self.read_commands(index) {
            log_warn!("redis bridge: {}: {e}", self.links[index].url);
            self.drop_link(index);
        }
    }

    fn read_commands(&mut self, index: usize) -> io::Result<()> {
        let link = &mut self.links[index];
        let Some(socket) = link.commands.as_mut() else {
            return Ok(());
        };
        socket.connected = true;
        self.read_buf.clear();
        read_available(&mut socket.stream, &mut self.read_buf)?;
        let replies = link
            .pipeline
            .on_input(&self.read_buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        link.backoff.reset();
        for (pending, reply) in replies {
            match (pending, reply) {
                (Pending::Setup, Reply::Error(e)) => {
                    return Err(io::Error::other(format!("setup refused: {e}")));
                }
                (Pending::Setup, _) => {}
                (Pending::Publish(answer), reply) => {
                    let outcome = redis::sequenced(&reply).ok_or(Unavailable);
                    if outcome.is_err() {
                        log_warn!("redis bridge: publish refused: {reply:?}");
                    }
                    self.sink.sequenced(answer, outcome);
                }
            }
        }
        Ok(())
    }

    fn on_subscriber(&mut self, index: usize) {
        if let Err(e) = self.read_subscriber(index) {
            log_warn!("redis bridge: {} (subscriber): {e}", self.links[index].url);
            self.drop_link(index);
        }
    }

    fn read_subscriber(&mut self, index: usize) -> io::Result<()> {
        let link = &mut self.links[index];
        let Some(socket) = link.subscriber.as_mut() else {
            return Ok(());
        };
        socket.connected = true;
        read_available(&mut socket.stream, &mut link.sub_input)?;
        let mut at = 0;
        let mut messages = Vec::new();
        while let Some((reply, used)) = resp::parse(&link.sub_input[at..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            at += used;
            if let Reply::Error(e) = &reply {
                return Err(io::Error::other(format!("subscriber refused: {e}")));
            }
            messages.push(reply);
        }
        link.sub_input.drain(..at);
        for reply in messages {
            self.on_pushed(&reply);
        }
        Ok(())
    }

    /// A `message` push: the event goes to every shard serving its room.
    fn on_pushed(&mut self, reply: &Reply) {
        let Reply::Array(items) = reply else { return };
        let [kind, channel, payload] = items.as_slice() else {
            return;
        };
        if kind.as_bytes() != Some(b"message") {
            return;
        }
        let (Some(channel), Some(payload)) = (channel.as_bytes(), payload.as_bytes()) else {
            return;
        };
        let Some(room) = room_of(&self.config.prefix, channel) else {
            return;
        };
        let Some(message) = redis::channel_message(payload) else {
            return;
        };
        // A room no longer served (unsubscribed meanwhile) has no shard to go to.
        let Some(room) = self.subscriptions.room(room) else {
            return;
        };
        let event = RoomEvent {
            room: room.clone(),
            epoch: message.epoch.into(),
            seq: message.seq,
            frame: wire::text_frame(message.text),
        };
        for shard in self.subscriptions.shards_of(&event.room) {
            self.sink.deliver(shard, event.clone());
        }
    }

    /// Writes what both connections of a link have queued.
    fn flush(&mut self, index: usize) {
        let link = &mut self.links[index];
        let mut failed = false;
        if let Some(socket) = link.commands.as_mut().filter(|s| s.connected) {
            match write_available(&mut socket.stream, link.pipeline.output()) {
                Ok(n) => link.pipeline.written(n),
                Err(_) => failed = true,
            }
        }
        if let Some(socket) = link.subscriber.as_mut().filter(|s| s.connected) {
            match write_available(&mut socket.stream, &link.sub_output) {
                Ok(n) => {
                    link.sub_output.drain(..n);
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            self.drop_link(index);
        }
    }
}

/// AUTH and SELECT, as the URL asks.
fn setup_commands(url: &RedisUrl) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    match (&url.user, &url.password) {
        (Some(user), Some(password)) => {
            commands.push(vec!["AUTH".into(), user.clone(), password.clone()]);
        }
        (None, Some(password)) => commands.push(vec!["AUTH".into(), password.clone()]),
        _ => {}
    }
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
        assert_eq!(
            setup_commands(&url),
            [vec!["AUTH", "app", "pw"], vec!["SELECT", "2"]]
        );
        let url: RedisUrl = "redis://:pw@h".parse().unwrap();
        assert_eq!(setup_commands(&url), [vec!["AUTH", "pw"]]);
        assert!(setup_commands(&"redis://h".parse().unwrap()).is_empty());
    }
}
