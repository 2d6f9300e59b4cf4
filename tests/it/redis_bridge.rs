//! The Redis bridge thread (`reactor::bridge`) against a real
//! `redis-server`: publishes answered after Redis sequenced them, room
//! events delivered to every shard serving the room in seq order, what
//! happens while Redis is away and after it comes back, and the Server
//! API's transport: its channels and the list of live nodes.

use crate::common;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use common::redis::{RedisServer, free_port};
use roomcast::config::{ClusterConfig, HistoryConfig, PresenceConfig};
use roomcast::proto::wire;
use roomcast::reactor::bridge::{
    self, BridgeConfig, BridgeHandle, BridgeRequest, BridgeSink, OwnedQuery, RoomEvent, Unavailable,
};
use roomcast::redis::resp::Reply;
use roomcast::redis::{History, Presence, PresenceChange, Sequenced};

#[derive(Debug)]
pub(crate) enum Out {
    Sequenced(u32, Result<Sequenced, Unavailable>),
    Joined(u32, Result<(History, u64), Unavailable>),
    Deliver(usize, RoomEvent),
    Link(bool),
    Api(Vec<u8>),
    LiveNodes(Vec<String>),
}

struct ChannelSink(Sender<Out>);

impl BridgeSink for ChannelSink {
    type Answer = u32;
    fn sequenced(&self, answer: u32, outcome: Result<Sequenced, Unavailable>) {
        let _ = self.0.send(Out::Sequenced(answer, outcome));
    }
    fn joined(&self, answer: u32, outcome: Result<(History, u64), Unavailable>) {
        let _ = self.0.send(Out::Joined(answer, outcome));
    }
    fn presence(&self, _: u32, _: Result<Presence, Unavailable>) {}
    fn room_read(&self, _: u32, _: Result<Option<roomcast::redis::History>, Unavailable>) {}
    fn room_users(&self, _: u32, _: Result<Vec<u64>, Unavailable>) {}
    fn resync(&self) {}
    fn sent(&self, _: u32, _: Result<u64, Unavailable>) {}
    fn direct(&self, _: bridge::DirectMessage) {}
    fn deliver(&self, shard: usize, event: RoomEvent) {
        let _ = self.0.send(Out::Deliver(shard, event));
    }
    fn link(&self, up: bool) {
        let _ = self.0.send(Out::Link(up));
    }
    fn api(&self, payload: Vec<u8>) {
        let _ = self.0.send(Out::Api(payload));
    }
    fn live_nodes(&self, nodes: Arc<[Box<str>]>) {
        let _ = self.0.send(Out::LiveNodes(
            nodes.iter().map(|n| n.to_string()).collect(),
        ));
    }
}

pub(crate) struct Node {
    handle: BridgeHandle<u32>,
    pub(crate) out: Receiver<Out>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The live nodes the bridge last reported.
    live_nodes: RefCell<Vec<String>>,
}

impl Node {
    fn start(port: u16) -> Node {
        Node::start_as(port, "n1")
    }

    fn start_as(port: u16, node_id: &str) -> Node {
        Node::start_with(port, node_id, Duration::from_secs(2))
    }

    /// A bridge with `--redis-timeout` `timeout`.
    pub(crate) fn start_with(port: u16, node_id: &str, timeout: Duration) -> Node {
        let (tx, out) = crossbeam_channel::unbounded();
        let config = BridgeConfig {
            cluster: ClusterConfig {
                servers: vec![format!("redis://127.0.0.1:{port}").parse().unwrap()],
                prefix: "rc".into(),
                node_id: node_id.into(),
                ca: None,
                replicas: 0,
                timeout,
            },
            history: HistoryConfig {
                messages: 100,
                ttl: Duration::from_secs(3600),
            },
            presence: PresenceConfig {
                rooms: Vec::new(),
                event_limit: 1000,
            },
            webhooks: None,
            tls: None,
        };
        let (handle, thread) =
            bridge::start(config, ChannelSink(tx), Default::default(), None).unwrap();
        Node {
            handle,
            out,
            thread: Some(thread),
            live_nodes: RefCell::default(),
        }
    }

    pub(crate) fn next(&self) -> Out {
        self.out
            .recv_timeout(Duration::from_secs(10))
            .expect("the bridge answers within 10 s")
    }

    pub(crate) fn wait_link(&self, up: bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < deadline, "link never became {up}");
            if let Ok(Out::Link(now)) = self.out.recv_timeout(Duration::from_millis(100))
                && now == up
            {
                return;
            }
        }
    }

    fn serve(&self, room: &str, shard: usize) {
        assert!(self.handle.send(BridgeRequest::Serve {
            room: room.into(),
            shard,
        }));
    }

    /// `user` joins `room`, answered to `n`.
    pub(crate) fn join(&self, room: &str, user: &str, n: u32) {
        assert!(self.handle.send(BridgeRequest::Join {
            room: room.into(),
            query: OwnedQuery::default(),
            change: presence_change(user),
            answer: n,
        }));
    }

    /// A connection of `user` leaves `room` (nobody waits for it).
    pub(crate) fn leave(&self, room: &str, user: &str) {
        assert!(self.handle.send(BridgeRequest::Leave {
            room: room.into(),
            change: presence_change(user),
        }));
    }

    pub(crate) fn publish(&self, room: &str, n: u32) {
        let head = format!(r#"{{"event":"chat:msg","room":"{room}","data":{n},"from":"u","seq":"#);
        assert!(self.handle.send(BridgeRequest::Publish {
            room: room.into(),
            head: head.into_bytes(),
            tail: br#","ts":1}"#.to_vec(),
            origin: "other-node/0/-".into(),
            answer: n,
        }));
    }
}

/// A connection of `user` on node `n1`, announcing nothing.
fn presence_change(user: &str) -> Box<PresenceChange> {
    Box::new(PresenceChange {
        node: "n1".into(),
        user: user.into(),
        name: None,
        rejoin: false,
        announce: false,
        event_limit: 1000,
        origin: "n1/0/-".into(),
        text: b"{}".to_vec(),
    })
}

impl Drop for Node {
    fn drop(&mut self) {
        self.handle.send(BridgeRequest::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn publishes_are_acked_after_sequencing_and_reach_every_serving_shard_in_order() {
    let redis = RedisServer::start();
    let node = Node::start(redis.addr.port());
    node.wait_link(true);
    node.serve("lobby", 0);
    node.serve("lobby", 2);
    // The subscription is in place once an event comes back; publish until then.
    std::thread::sleep(Duration::from_millis(200));
    for n in 0..20 {
        node.publish("lobby", n);
    }
    let mut acks = Vec::new();
    let mut delivered: [Vec<(u64, Arc<[u8]>)>; 3] = Default::default();
    while acks.len() < 20 || delivered[0].len() < 20 || delivered[2].len() < 20 {
        match node.next() {
            Out::Sequenced(n, Ok(s)) => acks.push((n, s.seq)),
            Out::Deliver(shard, event) => {
                let text = wire::frame_text(&event.frame).into();
                delivered[shard].push((event.seq, text));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        acks,
        (0..20).map(|n| (n, u64::from(n) + 1)).collect::<Vec<_>>()
    );
    assert!(delivered[1].is_empty());
    assert_eq!(delivered[0], delivered[2]);
    let seqs: Vec<u64> = delivered[0].iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    assert_eq!(
        &*delivered[0][0].1,
        br#"{"event":"chat:msg","room":"lobby","data":0,"from":"u","seq":1,"ts":1}"#
    );
}

#[test]
fn while_redis_is_away_publishes_are_unavailable_and_after_it_returns_they_flow_again() {
    let port = free_port();
    let node = Node::start(port);
    node.publish("lobby", 1);
    assert!(matches!(
        node.next(),
        Out::Link(false) | Out::Sequenced(1, Err(Unavailable))
    ));
    let redis = RedisServer::start_on(port);
    node.wait_link(true);
    node.serve("lobby", 0);
    std::thread::sleep(Duration::from_millis(200));
    node.publish("lobby", 2);
    let mut got = (None, None);
    while got.0.is_none() || got.1.is_none() {
        match node.next() {
            Out::Sequenced(2, outcome) => got.0 = Some(outcome.unwrap()),
            Out::Deliver(0, event) => got.1 = Some(event.seq),
            Out::Sequenced(1, Err(Unavailable)) | Out::Link(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let first = got.0.unwrap();
    assert_eq!((first.seq, got.1), (1, Some(1)));
    // Redis dies with its data: the link goes down, then comes back, the
    // room is subscribed again, and the room starts a new epoch.
    redis.stop();
    node.wait_link(false);
    node.publish("lobby", 3);
    let _redis = RedisServer::start_on(port);
    node.wait_link(true);
    std::thread::sleep(Duration::from_millis(200));
    node.publish("lobby", 4);
    let mut second = None;
    loop {
        match node.next() {
            Out::Sequenced(3, outcome) => assert_eq!(outcome, Err(Unavailable)),
            Out::Sequenced(4, outcome) => second = Some(outcome.unwrap()),
            Out::Deliver(0, event) => {
                assert_eq!(event.seq, 1, "a new epoch starts at 1");
                assert_ne!(*event.epoch, *first.epoch);
                break;
            }
            Out::Link(_) => {}
            other => panic!("{other:?}"),
        }
    }
    if let Some(second) = second {
        assert_eq!(second.seq, 1);
    }
}

#[test]
fn functions_flushed_under_the_bridge_are_loaded_again_and_publishes_flow() {
    let redis = RedisServer::start();
    let node = Node::start(redis.addr.port());
    node.wait_link(true);
    redis.connect().call(&["FUNCTION", "FLUSH"]);
    // The first publish finds no function and is refused; the link is set
    // up again, which loads the library, and later publishes are sequenced.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        assert!(Instant::now() < deadline, "no publish sequenced again");
        n += 1;
        node.publish("lobby", n);
        let sequenced = loop {
            match node.next() {
                Out::Sequenced(m, outcome) if m == n => break outcome.is_ok(),
                Out::Link(_) => {}
                other => panic!("{other:?}"),
            }
        };
        if sequenced {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(n > 1, "the flushed library was never noticed");
}

#[test]
fn a_history_answer_comes_after_every_event_it_holds_and_before_every_later_one() {
    let redis = RedisServer::start();
    let node = Node::start(redis.addr.port());
    node.wait_link(true);
    node.serve("lobby", 0);
    // Publishes and a history request pipelined together, on one connection.
    for n in 0..10 {
        node.publish("lobby", n);
    }
    assert!(node.handle.send(BridgeRequest::Join {
        room: "lobby".into(),
        query: OwnedQuery {
            history: Some(100),
            ..OwnedQuery::default()
        },
        change: presence_change("u"),
        answer: 100,
    }));
    for n in 10..20 {
        node.publish("lobby", n);
    }
    let mut delivered_before = None;
    let mut delivered = Vec::new();
    let mut acks = 0;
    while acks < 20 || delivered.len() < 20 || delivered_before.is_none() {
        match node.next() {
            Out::Sequenced(_, Ok(_)) => acks += 1,
            Out::Deliver(0, event) => delivered.push(event.seq),
            Out::Joined(100, Ok((history, members))) => {
                assert_eq!(members, 1);
                assert_eq!(history.seq, 10);
                assert_eq!(history.messages.len(), 10);
                delivered_before = Some(delivered.len());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered, (1..=20).collect::<Vec<u64>>());
    assert_eq!(
        delivered_before,
        Some(10),
        "the history holds exactly what was delivered before it"
    );
}

/// Redis holding more history than its `seq` allows (a corrupted or
/// hostile server) answers a recovery with more messages than `seq`: the
/// reply is refused, as client input would be, and the bridge goes on
/// serving the room instead of failing on `seq + 1 - messages`.
#[test]
fn a_recovery_with_more_messages_than_its_seq_is_refused_and_the_bridge_goes_on() {
    let redis = RedisServer::start();
    let proxy = common::redis::Proxy::start(redis.addr);
    let node = Node::start(proxy.addr.port());
    node.wait_link(true);
    node.serve("lobby", 0);
    std::thread::sleep(Duration::from_millis(200));
    for n in 1..=3 {
        node.publish("lobby", n);
    }
    let mut delivered = Vec::new();
    while delivered.len() < 3 {
        match node.next() {
            Out::Deliver(0, event) => delivered.push(event.seq),
            Out::Sequenced(_, outcome) => assert!(outcome.is_ok()),
            other => panic!("{other:?}"),
        }
    }
    proxy.cut();
    node.wait_link(false);
    // Entries 4..=50 in the log while seq says 5: a recovery from 3 gets 47.
    let mut conn = redis.connect();
    let at = common::rooms::now_ms().to_string();
    for seq in 4..=50 {
        let id = format!("0-{seq}");
        let reply = conn.call(&["XADD", "rc:{lobby}:log", &id, "m", "{}", "t", &at]);
        assert!(matches!(reply, Reply::Bulk(_)), "{reply:?}");
    }
    conn.call(&["SET", "rc:{lobby}:seq", "5"]);
    proxy.restore();
    node.wait_link(true);
    // Answered after the recovery (one link, in order): nothing of lobby
    // comes first, and another room's events still flow.
    node.serve("other", 1);
    std::thread::sleep(Duration::from_millis(200));
    node.publish("other", 6);
    loop {
        match node.next() {
            Out::Deliver(1, event) => {
                assert_eq!(event.seq, 1);
                break;
            }
            Out::Sequenced(6, outcome) => assert!(outcome.is_ok()),
            Out::Link(_) => {}
            other => panic!("nothing of the refused recovery is delivered: {other:?}"),
        }
    }
}

impl Node {
    fn api_cast(&self, to: Option<&str>, payload: &[u8]) {
        assert!(self.handle.send(BridgeRequest::ApiCast {
            to: to.map(Box::from),
            payload: payload.to_vec(),
        }));
    }

    /// The next Server API message this node received.
    fn next_api(&self) -> Vec<u8> {
        loop {
            match self.next() {
                Out::Api(payload) => return payload,
                Out::LiveNodes(nodes) => *self.live_nodes.borrow_mut() = nodes,
                Out::Link(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    /// Waits until the bridge reports exactly `expected` as the live nodes.
    fn wait_live_nodes(&self, expected: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(12);
        while *self.live_nodes.borrow() != expected {
            assert!(
                Instant::now() < deadline,
                "live nodes never became {expected:?}"
            );
            if let Ok(Out::LiveNodes(nodes)) = self.out.recv_timeout(Duration::from_millis(100)) {
                *self.live_nodes.borrow_mut() = nodes;
            }
        }
    }
}

/// `PUBSUB SHARDNUMSUB` of one (sharded) channel: how many connections listen on it.
fn listeners(conn: &mut common::redis::RedisConn, channel: &str) -> i64 {
    let reply = conn.call(&["PUBSUB", "SHARDNUMSUB", channel]);
    let Reply::Array(items) = &reply else {
        panic!("{reply:?}")
    };
    items[1].as_i64().expect("a count")
}

fn wait_listeners(conn: &mut common::redis::RedisConn, channel: &str, n: i64) {
    common::wait_until(Duration::from_secs(10), channel, || {
        listeners(conn, channel) == n
    });
}

#[test]
fn every_node_listens_on_the_api_channels_and_a_cast_reaches_every_node_or_one() {
    let redis = RedisServer::start();
    let mut conn = redis.connect();
    // A node whose heartbeat stopped 60 s ago is not live.
    let long_ago = (common::rooms::now_ms() - 60_000).to_string();
    conn.call(&["ZADD", "rc:{~}:heartbeats", &long_ago, "gone"]);
    let n1 = Node::start_as(redis.addr.port(), "n1");
    n1.wait_link(true);
    let n2 = Node::start_as(redis.addr.port(), "n2");
    n2.wait_link(true);
    wait_listeners(&mut conn, "rc:{~}:api", 2);
    wait_listeners(&mut conn, "rc:{~}:api:n1", 1);
    wait_listeners(&mut conn, "rc:{~}:api:n2", 1);
    assert_eq!(listeners(&mut conn, "rc:{~}:api:gone"), 0);

    n1.api_cast(None, b"to all");
    assert_eq!(n1.next_api(), b"to all", "the caster is a node too");
    assert_eq!(n2.next_api(), b"to all");
    n1.api_cast(Some("n2"), b"to n2");
    n1.api_cast(Some("n1"), b"to n1");
    assert_eq!(n2.next_api(), b"to n2");
    assert_eq!(n1.next_api(), b"to n1", "n1 never got n2's message");

    // Over 16 MiB is dropped on both sides; what follows still flows.
    let huge = vec![b'x'; 16 * 1024 * 1024 + 1];
    n1.api_cast(Some("n2"), &huge);
    let mut command = Vec::new();
    roomcast::redis::resp::write_command(
        &mut command,
        &[&b"SPUBLISH"[..], b"rc:{~}:api:n2", &huge],
    );
    conn.send_raw(&command);
    assert_eq!(conn.reply().as_i64(), Some(1), "Redis took it to n2");
    n1.api_cast(Some("n2"), b"after");
    assert_eq!(n2.next_api(), b"after");

    // n1 was alone at its first heartbeat round; the next one sees n2.
    n2.wait_live_nodes(&["n1", "n2"]);
    n1.wait_live_nodes(&["n1", "n2"]);
}

#[test]
fn the_api_channels_are_subscribed_again_after_a_reconnect() {
    let redis = RedisServer::start();
    let proxy = common::redis::Proxy::start(redis.addr);
    let node = Node::start(proxy.addr.port());
    node.wait_link(true);
    let mut conn = redis.connect();
    wait_listeners(&mut conn, "rc:{~}:api", 1);
    proxy.cut();
    node.wait_link(false);
    wait_listeners(&mut conn, "rc:{~}:api", 0);
    node.api_cast(None, b"lost");
    proxy.restore();
    node.wait_link(true);
    wait_listeners(&mut conn, "rc:{~}:api", 1);
    wait_listeners(&mut conn, "rc:{~}:api:n1", 1);
    node.api_cast(None, b"again");
    assert_eq!(
        node.next_api(),
        b"again",
        "a cast while Redis was away is dropped"
    );
}
