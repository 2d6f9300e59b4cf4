//! The Redis Functions that sequence room events for a cluster
//! (`src/redis/roomcast.lua`), run on a real `redis-server`: one atomic
//! INCR + history append + PUBLISH per event, the same order for every
//! subscriber, epochs that start over when a room is forgotten, and the
//! emitter call that lets any backend publish.

use crate::common;

use std::thread;
use std::time::Duration;

use common::redis::{RedisConn, RedisServer};
use roomcast::config::HistoryConfig;
use roomcast::redis as bridge;
use roomcast::redis::layout::RoomKeys;
use roomcast::redis::resp::Reply;

const KEEP_100: HistoryConfig = HistoryConfig {
    messages: 100,
    ttl: Duration::from_secs(3600),
};

/// A `redis-server` with the library loaded, and a connection to it.
pub(crate) fn loaded() -> (RedisServer, RedisConn) {
    let redis = RedisServer::start();
    let mut conn = redis.connect();
    let mut load = Vec::new();
    bridge::load_library(&mut load);
    conn.send_raw(&load);
    assert_eq!(conn.reply(), Reply::Bulk(b"roomcast".to_vec()));
    (redis, conn)
}

pub(crate) fn publish(
    conn: &mut RedisConn,
    keys: &RoomKeys,
    text: &str,
    retention: HistoryConfig,
) -> bridge::Sequenced {
    let mut run = publish_run(conn, keys, &[text], "n/1/-", retention);
    run.pop().unwrap()
}

/// A `chat:msg` of `data` (JSON text) from `u1` in `lobby`.
fn chat(data: &str, origin: &str) -> bridge::Unsequenced {
    bridge::Unsequenced {
        head: format!(r#"{{"event":"chat:msg","room":"lobby","data":{data},"from":"u1","seq":"#)
            .into_bytes(),
        tail: br#","ts":1}"#.to_vec(),
        origin: origin.into(),
    }
}

/// One `roomcast_publish` of a `chat:msg` per `data`, as a node sends the
/// publishes to a room it took together.
pub(crate) fn publish_run(
    conn: &mut RedisConn,
    keys: &RoomKeys,
    data: &[&str],
    origin: &str,
    retention: HistoryConfig,
) -> Vec<bridge::Sequenced> {
    let messages: Vec<_> = data.iter().map(|d| chat(d, origin)).collect();
    let mut out = Vec::new();
    let hooks = bridge::RoomHooks::OFF;
    bridge::publish(&mut out, keys, &messages, "e-fresh", retention, hooks);
    conn.send_raw(&out);
    let reply = conn.reply();
    bridge::sequenced_run(&reply, data.len()).unwrap_or_else(|| panic!("{reply:?}"))
}

fn subscribe(redis: &RedisServer, channel: &str) -> RedisConn {
    let mut sub = redis.connect();
    let reply = sub.call(&["SSUBSCRIBE", channel]);
    assert!(matches!(reply, Reply::Array(_)), "{reply:?}");
    sub
}

/// The payload of the next sharded pub/sub message on `sub`.
fn next_message(sub: &mut RedisConn) -> Vec<u8> {
    match sub.reply() {
        Reply::Array(items) if items.first() == Some(&Reply::Bulk(b"smessage".to_vec())) => {
            items[2].as_bytes().unwrap().to_vec()
        }
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn a_publish_is_sequenced_stored_and_published_in_one_step() {
    let (redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    let mut sub = subscribe(&redis, &keys.channel);
    let first = publish(&mut conn, &keys, r#"{"n":1e400}"#, KEEP_100);
    let second = publish(&mut conn, &keys, "2", KEEP_100);
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(first.epoch, "e-fresh");
    assert_eq!(second.epoch, "e-fresh");
    let live = next_message(&mut sub);
    let message = bridge::channel_message(&live).unwrap();
    assert_eq!((message.epoch, message.seq), ("e-fresh", 1));
    let text =
        br#"{"event":"chat:msg","room":"lobby","data":{"n":1e400},"from":"u1","seq":1,"ts":1}"#;
    assert_eq!(message.text, text);
    // The history holds the very bytes delivered live, under id 0-<seq>.
    let stored = conn.call(&["XRANGE", &keys.log, "-", "+"]);
    let Reply::Array(entries) = stored else {
        panic!("{stored:?}")
    };
    assert_eq!(entries.len(), 2);
    let Reply::Array(entry) = &entries[0] else {
        panic!()
    };
    assert_eq!(entry[0], Reply::Bulk(b"0-1".to_vec()));
    let Reply::Array(fields) = &entry[1] else {
        panic!("{entry:?}")
    };
    assert_eq!(
        fields[..2],
        [Reply::Bulk(b"m".to_vec()), Reply::Bulk(text.to_vec())]
    );
    assert_eq!(fields[2], Reply::Bulk(b"t".to_vec()), "the entry's time");
}

#[test]
fn a_batch_is_sequenced_stored_and_published_in_its_order_in_one_call() {
    let (redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    let mut sub = subscribe(&redis, &keys.channel);
    let first = publish(&mut conn, &keys, "0", KEEP_100);
    let data: Vec<String> = (1..=16).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    let data: Vec<&str> = data.iter().map(String::as_str).collect();
    let run = publish_run(&mut conn, &keys, &data, "n/1/0.2.9", KEEP_100);
    let after = publish(&mut conn, &keys, "17", KEEP_100);
    let seqs: Vec<u64> = run.iter().map(|s| s.seq).collect();
    assert_eq!(first.seq, 1);
    assert_eq!(seqs, (2..=17).collect::<Vec<u64>>());
    assert!(run.iter().all(|s| s.epoch == "e-fresh"));
    assert_eq!(after.seq, 18, "the seq counted every message of the batch");
    // One function call for the batch.
    let stats = conn.call(&["INFO", "commandstats"]);
    let stats = String::from_utf8_lossy(stats.as_bytes().unwrap()).into_owned();
    assert!(stats.contains("cmdstat_fcall:calls=3,"), "{stats}");
    let stored = conn.call(&["XRANGE", &keys.log, "-", "+"]);
    let Reply::Array(entries) = stored else {
        panic!("{stored:?}")
    };
    assert_eq!(entries.len(), 18);
    for seq in 1..=18u64 {
        let live = next_message(&mut sub);
        let message = bridge::channel_message(&live).unwrap();
        assert_eq!((message.epoch, message.seq), ("e-fresh", seq));
        let (origin, data) = match seq {
            1 => ("n/1/-", "0".to_owned()),
            18 => ("n/1/-", "17".to_owned()),
            i => ("n/1/0.2.9", format!(r#"{{"i":{}}}"#, i - 1)),
        };
        assert_eq!(message.origin, origin);
        let text = format!(
            r#"{{"event":"chat:msg","room":"lobby","data":{data},"from":"u1","seq":{seq},"ts":1}}"#
        );
        assert_eq!(message.text, text.as_bytes());
        // The history holds the very bytes delivered live, under id 0-<seq>.
        let Reply::Array(entry) = &entries[usize::try_from(seq).unwrap() - 1] else {
            panic!()
        };
        assert_eq!(entry[0], Reply::Bulk(format!("0-{seq}").into_bytes()));
        let Reply::Array(fields) = &entry[1] else {
            panic!("{entry:?}")
        };
        assert_eq!(fields[1], Reply::Bulk(text.into_bytes()));
    }
}

#[test]
fn a_batch_in_a_room_without_members_expires_with_its_newest_entry() {
    let (_redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    let short = HistoryConfig {
        messages: 2,
        ttl: Duration::from_secs(60),
    };
    let run = publish_run(&mut conn, &keys, &["1", "2", "3"], "-", short);
    assert_eq!(run.last().unwrap().seq, 3);
    for key in [&keys.seq, &keys.epoch, &keys.log] {
        let Reply::Integer(ttl) = conn.call(&["PTTL", key]) else {
            panic!()
        };
        assert!((59_000..=60_000).contains(&ttl), "{key}: {ttl}");
    }
    let none = HistoryConfig {
        messages: 0,
        ttl: Duration::from_secs(60),
    };
    let other = RoomKeys::new("rc", "gone");
    assert_eq!(
        publish_run(&mut conn, &other, &["1", "2"], "-", none)[1].seq,
        2
    );
    assert_eq!(
        conn.call(&["EXISTS", &other.seq, &other.epoch, &other.log]),
        Reply::Integer(0)
    );
}

#[test]
fn a_call_without_its_messages_is_refused_and_sequences_nothing() {
    let (_redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    for count in ["0", "2", "x"] {
        let reply = conn.call(&[
            "FCALL",
            "roomcast_publish",
            "4",
            &keys.seq,
            &keys.epoch,
            &keys.log,
            &keys.members,
            "e",
            "100",
            "60000",
            &keys.channel,
            "1",
            count,
            "{",
            "}",
            "-",
        ]);
        assert!(matches!(reply, Reply::Error(_)), "{count}: {reply:?}");
    }
    assert_eq!(conn.call(&["EXISTS", &keys.seq]), Reply::Integer(0));
}

#[test]
fn history_keeps_the_newest_messages_and_expires_with_the_room() {
    let (_redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "prices:btc");
    let keep_3 = HistoryConfig {
        messages: 3,
        ttl: Duration::from_secs(60),
    };
    for i in 0..10 {
        publish(&mut conn, &keys, &i.to_string(), keep_3);
    }
    // Trimming is approximate (whole stream nodes): what counts is that
    // the readers give exactly the last 3 (tests/it/redis_history_bounds.rs).
    let all = bridge::HistoryQuery {
        history: Some(100),
        ..Default::default()
    };
    let kept = history(&mut conn, &keys, keep_3, all).messages;
    let seqs: Vec<bool> = (8..=10)
        .map(|i| String::from_utf8_lossy(&kept[i - 8]).contains(&format!(r#""seq":{i},"#)))
        .collect();
    assert_eq!((kept.len(), seqs), (3, vec![true; 3]));
    for key in [&keys.seq, &keys.epoch, &keys.log] {
        let ttl = conn.call(&["PTTL", key.as_str()]).as_i64().unwrap();
        assert!((1..=60_000).contains(&ttl), "{key}: {ttl}");
    }
}

#[test]
fn a_forgotten_room_starts_a_new_epoch_at_seq_1() {
    let (_redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    for _ in 0..5 {
        publish(&mut conn, &keys, "0", KEEP_100);
    }
    // As after the TTL, or a Redis that restarted without its data.
    conn.call(&["DEL", &keys.epoch]);
    let mut out = Vec::new();
    let hooks = bridge::RoomHooks::OFF;
    bridge::publish(
        &mut out,
        &keys,
        &[chat("0", "-")],
        "e-next",
        KEEP_100,
        hooks,
    );
    conn.send_raw(&out);
    let after = bridge::sequenced(&conn.reply()).unwrap();
    assert_eq!((after.seq, after.epoch.as_str()), (1, "e-next"));
    assert_eq!(conn.call(&["XLEN", &keys.log]), Reply::Integer(1));
}

#[test]
fn concurrent_publishers_get_one_order_seen_by_every_subscriber() {
    let (redis, _conn) = loaded();
    let keys = RoomKeys::new("rc", "game:1");
    let mut subs: Vec<RedisConn> = (0..3).map(|_| subscribe(&redis, &keys.channel)).collect();
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let mut conn = redis.connect();
            let keys = keys.clone();
            thread::spawn(move || {
                (0..50)
                    .map(|i| publish(&mut conn, &keys, &format!("{}", p * 1000 + i), KEEP_100).seq)
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut acked: Vec<u64> = publishers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    acked.sort_unstable();
    assert_eq!(acked, (1..=200).collect::<Vec<u64>>());
    let orders: Vec<Vec<(u64, Vec<u8>)>> = subs
        .iter_mut()
        .map(|sub| {
            (0..200)
                .map(|_| {
                    let payload = next_message(sub);
                    let m = bridge::channel_message(&payload).unwrap();
                    (m.seq, m.text.to_vec())
                })
                .collect()
        })
        .collect();
    let seqs: Vec<u64> = orders[0].iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "in seq order, no gap"
    );
    assert!(
        orders.iter().all(|o| o == &orders[0]),
        "every subscriber, the same bytes"
    );
}

/// The emitter call of docs/redis.md, for room `prices:eth`.
fn emit(conn: &mut RedisConn, keys: &RoomKeys, data: &str) -> Reply {
    conn.call(&[
        "FCALL",
        "roomcast_emit",
        "4",
        &keys.seq,
        &keys.epoch,
        &keys.log,
        &keys.members,
        "prices:eth",
        "price:tick",
        data,
        "backend",
        "100",
        "300000",
        &keys.channel,
    ])
}

#[test]
fn the_emitter_publishes_without_a_node_and_refuses_invalid_json() {
    let (redis, mut conn) = loaded();
    let keys = RoomKeys::new("roomcast", "prices:eth");
    let mut sub = subscribe(&redis, &keys.channel);
    let reply = emit(&mut conn, &keys, r#"{"p":3120.5}"#);
    let sequenced = bridge::sequenced(&reply).unwrap_or_else(|| panic!("{reply:?}"));
    assert_eq!(sequenced.seq, 1);
    let payload = next_message(&mut sub);
    let text = std::str::from_utf8(bridge::channel_message(&payload).unwrap().text).unwrap();
    assert!(
        text.starts_with(r#"{"event":"price:tick","room":"prices:eth","data":{"p":3120.5},"from":"backend","seq":1,"ts":"#),
        "{text}"
    );
    let refused = emit(&mut conn, &keys, "{not json");
    assert!(
        matches!(&refused, Reply::Error(e) if e.starts_with("INVALID_MESSAGE")),
        "{refused:?}"
    );
    assert_eq!(conn.call(&["GET", &keys.seq]).as_i64(), Some(1));
}

/// `roomcast_history` for a join asking `query`, on nodes that keep
/// `retention`.
pub(crate) fn history(
    conn: &mut RedisConn,
    keys: &RoomKeys,
    retention: HistoryConfig,
    query: bridge::HistoryQuery<'_>,
) -> bridge::History {
    let mut out = Vec::new();
    bridge::history(&mut out, keys, query, "e-join", retention);
    conn.send_raw(&out);
    let reply = conn.reply();
    bridge::history_reply(&reply).unwrap_or_else(|| panic!("{reply:?}"))
}

#[test]
fn a_join_gets_the_same_history_and_recovery_as_on_one_server() {
    let (_redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    // A join to a room nobody published in gives it its epoch.
    let empty = history(&mut conn, &keys, KEEP_100, Default::default());
    assert_eq!(
        (empty.epoch.as_str(), empty.seq, empty.recovered),
        ("e-join", 0, None)
    );
    assert!(empty.messages.is_empty());
    let keep_3 = HistoryConfig {
        messages: 3,
        ttl: Duration::from_secs(3600),
    };
    let texts: Vec<Vec<u8>> = (1..=5)
        .map(|i| {
            publish(&mut conn, &keys, &i.to_string(), keep_3);
            format!(
                r#"{{"event":"chat:msg","room":"lobby","data":{i},"from":"u1","seq":{i},"ts":1}}"#
            )
            .into_bytes()
        })
        .collect();
    let query = |history, since, epoch| bridge::HistoryQuery {
        history,
        since,
        epoch,
    };
    // history: k gives the latest k, oldest first; none without it.
    assert_eq!(
        history(&mut conn, &keys, keep_3, query(Some(2), None, None)).messages,
        texts[3..]
    );
    assert!(
        history(&mut conn, &keys, keep_3, query(None, None, None))
            .messages
            .is_empty()
    );
    // since within the kept history, same epoch: what was missed, recovered.
    let back = history(
        &mut conn,
        &keys,
        keep_3,
        query(None, Some(3), Some("e-join")),
    );
    assert_eq!((back.seq, back.recovered), (5, Some(true)));
    assert_eq!(back.messages, texts[3..]);
    let current = history(
        &mut conn,
        &keys,
        keep_3,
        query(None, Some(5), Some("e-join")),
    );
    assert_eq!((current.recovered, current.messages.len()), (Some(true), 0));
    // Messages gone, another epoch, or a seq from the future: not recovered,
    // and the retained history (at most k).
    for (since, epoch) in [(1, "e-join"), (4, "other"), (9, "e-join")] {
        let lost = history(
            &mut conn,
            &keys,
            keep_3,
            query(None, Some(since), Some(epoch)),
        );
        assert_eq!(lost.recovered, Some(false), "since {since} epoch {epoch}");
        assert_eq!(lost.messages, texts[2..]);
    }
    let lost = history(
        &mut conn,
        &keys,
        keep_3,
        query(Some(1), Some(1), Some("e-join")),
    );
    assert_eq!(lost.messages, texts[4..]);
}

/// `roomcast_recover`: a node's recovery after a reconnect.
fn recover(conn: &mut RedisConn, keys: &RoomKeys, since: u64, epoch: &str) -> bridge::History {
    let mut out = Vec::new();
    bridge::recover(&mut out, keys, (epoch, since), "e-recover", KEEP_100);
    conn.send_raw(&out);
    let reply = conn.reply();
    bridge::history_reply(&reply).unwrap_or_else(|| panic!("{reply:?}"))
}

#[test]
fn a_recovery_raises_a_seq_the_engine_lost_so_no_seq_is_given_out_twice() {
    let (_redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    for i in 1..=5 {
        publish(&mut conn, &keys, &i.to_string(), KEEP_100);
    }
    // A failover to a replica that had not got 4 and 5.
    assert_eq!(
        conn.call(&["SET", &keys.seq, "3"]),
        Reply::Status("OK".into())
    );
    assert_eq!(
        conn.call(&["XDEL", &keys.log, "0-4", "0-5"]),
        Reply::Integer(2)
    );
    assert_eq!(
        conn.call(&["XSETID", &keys.log, "0-3"]),
        Reply::Status("OK".into())
    );
    // A join's `since` is a client's number: it raises nothing.
    let asked = bridge::HistoryQuery {
        history: None,
        since: Some(5),
        epoch: Some("e-fresh"),
    };
    let joined = history(&mut conn, &keys, KEEP_100, asked);
    assert_eq!((joined.seq, joined.recovered), (3, Some(false)));
    // Nor does a recovery from another epoch.
    assert_eq!(recover(&mut conn, &keys, 9, "other").seq, 3);
    // A node that delivered 5 of this epoch raises the seq to it.
    let raised = recover(&mut conn, &keys, 5, "e-fresh");
    assert_eq!(
        (raised.epoch.as_str(), raised.seq, raised.recovered),
        ("e-fresh", 5, Some(true))
    );
    assert!(raised.messages.is_empty());
    assert_eq!(
        recover(&mut conn, &keys, 4, "e-fresh").seq,
        5,
        "never lowered"
    );
    let next = publish(&mut conn, &keys, "6", KEEP_100);
    assert_eq!((next.seq, next.epoch.as_str()), (6, "e-fresh"));
    // The history keeps 1-3 and 6, but serves only what follows the gap,
    // as each message's seq is told by its place.
    let after = history(
        &mut conn,
        &keys,
        KEEP_100,
        bridge::HistoryQuery {
            history: Some(10),
            since: Some(3),
            epoch: Some("e-fresh"),
        },
    );
    assert_eq!((after.seq, after.recovered), (6, Some(false)));
    assert_eq!(after.messages.len(), 1);
    assert_eq!(after.first_seq(), Some(6));
    let from_5 = recover(&mut conn, &keys, 5, "e-fresh");
    assert_eq!((from_5.recovered, from_5.messages.len()), (Some(true), 1));
    // A room the engine lost entirely starts a new epoch, at seq 0.
    assert_eq!(
        conn.call(&["DEL", &keys.seq, &keys.epoch, &keys.log]),
        Reply::Integer(3)
    );
    let fresh = recover(&mut conn, &keys, 6, "e-fresh");
    assert_eq!(
        (fresh.epoch.as_str(), fresh.seq, fresh.recovered),
        ("e-recover", 0, Some(false))
    );
}
