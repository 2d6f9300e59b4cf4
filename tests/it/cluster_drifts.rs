//! Cluster mode (`--redis`) must count, time and hold back room traffic as
//! one process does: presence events are not room events (not deliveries,
//! not in the fan-out latency, not conflated with sequenced events), and
//! `/stats` `rooms_top` counts the messages each room published. Each test
//! runs a real node on a real `redis-server`, both stopped by their PIDs.

use crate::common;

use std::time::{Duration, Instant};

use common::redis::{RedisServer, node};
use common::rooms::{Claims, Client, publisher, seq_of, seq_tail};
use common::{RawWs, Server, connect_with_small_rcvbuf, http_get, metric, opcode, parse_json};
use simd_json::prelude::*;

const DELIVERIES: &str = "roomcast_deliveries_total";
const FANOUTS: &str = "roomcast_fanout_duration_seconds_count";

/// One shard, so that each fan-out is timed once.
fn one_shard_node(redis: Option<&RedisServer>, extra: &[&str]) -> Server {
    let mut args = vec!["--shards", "1"];
    args.extend_from_slice(extra);
    match redis {
        Some(redis) => node(&[redis], &args),
        None => Server::start(&args),
    }
}

/// Reads until a `presence:join` of `user`; panics on anything else.
fn expect_presence_join(client: &mut Client, user: &str) {
    let text = client.recv();
    let v = parse_json(&text);
    assert_eq!(
        common::json_str(&v, &["event"]),
        Some("presence:join"),
        "{text}"
    );
    assert_eq!(
        common::json_str(&v, &["data", "userId"]),
        Some(user),
        "{text}"
    );
}

/// Alice is told bob joined, then bob publishes once: one delivery and one
/// timed fan-out, whether the node is alone or in a cluster.
fn presence_then_one_message(redis: Option<&RedisServer>) {
    let mode = if redis.is_some() {
        "cluster"
    } else {
        "one process"
    };
    let server = one_shard_node(redis, &[]);
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice");
    alice.join("lobby");
    let mut bob = publisher(addr, "bob");
    bob.join("lobby");
    expect_presence_join(&mut alice, "bob");
    assert_eq!(
        metric(addr, DELIVERIES),
        0.0,
        "{mode}: presence counted as a delivery"
    );
    assert_eq!(
        metric(addr, FANOUTS),
        0.0,
        "{mode}: presence timed as a fan-out"
    );

    assert_eq!(bob.publish_ok("lobby", "chat:msg", "1"), 1);
    assert_eq!(seq_of(&alice.recv()), 1);
    assert_eq!(metric(addr, DELIVERIES), 1.0, "{mode}: deliveries");
    assert_eq!(metric(addr, FANOUTS), 1.0, "{mode}: timed fan-outs");
}

#[test]
fn presence_is_neither_a_delivery_nor_a_timed_fanout_in_cluster_mode() {
    presence_then_one_message(None);
    let redis = RedisServer::start();
    presence_then_one_message(Some(&redis));
}

/// A member that does not read (small SO_RCVBUF) under `--slow-consumer
/// conflate` while 16 KiB events flood its room, then someone joins: the
/// presence event must not take the place of the newest room event held
/// back for it.
#[test]
fn presence_does_not_replace_a_conflated_room_event_in_cluster_mode() {
    const PAD: usize = 16 * 1024;
    const MESSAGES: u64 = 300;
    let redis = RedisServer::start();
    let server = one_shard_node(
        Some(&redis),
        &["--max-write-buffer", "64KiB", "--slow-consumer", "conflate"],
    );
    let addr = server.addr();
    let mut fast = Client::user(addr, "fast");
    fast.join("feed");
    let stream = connect_with_small_rcvbuf(addr, 4096);
    let mut slow = RawWs::upgrade(stream, "/ws", &Claims::new("slow").token());
    slow.read_message();
    let join = r#"{"event":"room:join","data":{"room":"feed"},"id":"j"}"#;
    slow.send_frame(true, opcode::TEXT, join.as_bytes());
    let (_, ack) = slow.read_message();
    assert!(ack.starts_with(br#"{"event":"ack""#), "{ack:?}");

    let mut feed = publisher(addr, "feed");
    let pad = "x".repeat(PAD);
    for i in 1..=MESSAGES {
        feed.send(&format!(
            r#"{{"event":"feed:tick","room":"feed","data":{{"pad":"{pad}"}}}}"#
        ));
        assert_eq!(seq_of(&fast.recv_skip_presence()), i, "the fast member");
    }
    let conflated = metric(addr, "roomcast_deliveries_conflated_total");
    assert!(conflated > 0.0, "the slow member was not held back");

    let mut late = Client::user(addr, "late");
    late.join("feed");
    expect_presence_join(&mut fast, "late");

    let texts = slow.drain_texts(Duration::from_secs(1));
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with(r#"{"event":"presence:join""#)),
        "the slow member is told of the join"
    );
    let last_seq = texts
        .iter()
        .filter(|t| t.starts_with(r#"{"event":"feed:tick""#))
        .map(|t| seq_tail(t))
        .max();
    assert_eq!(
        last_seq,
        Some(MESSAGES),
        "the newest room event reaches the slow member"
    );
}

#[test]
fn stats_rooms_top_counts_the_messages_published_in_cluster_mode() {
    let redis = RedisServer::start();
    // Sweeps (and so `rooms_top` intervals) every 250 ms.
    let server = one_shard_node(Some(&redis), &["--ping-interval", "1s"]);
    let addr = server.addr();
    let mut member = Client::user(addr, "member");
    member.join("hot");
    let mut feed = publisher(addr, "feed");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for _ in 0..5 {
            feed.publish_ok("hot", "feed:tick", "1");
        }
        let stats = parse_json(&http_get(addr, "/stats").body);
        let hot = common::json_at(&stats, &["rooms_top"])
            .and_then(|list| list.as_array())
            .and_then(|list| list.first())
            .filter(|first| common::json_str(first, &["room"]) == Some("hot"))
            .and_then(|first| first.get("messages_per_second"))
            .and_then(|rate| rate.cast_f64());
        if hot.is_some_and(|rate| rate > 0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rooms_top never counted hot's messages: {:?}",
            stats.get("rooms_top")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
