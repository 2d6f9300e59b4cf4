//! The history a cluster keeps (section 7) when Redis trims a room's log
//! approximately (`roomcast_publish` drops whole stream nodes only, so the
//! log may hold more than `--history` entries): `roomcast_history` and
//! `roomcast_join` still give exactly the last `--history` messages, and
//! recovery succeeds only within them; entries stamped with the node's
//! clock still expire with the history TTL. On a real `redis-server`.

use crate::common;
use crate::redis_function::{history, loaded, publish, publish_run};

use std::thread;
use std::time::Duration;

use roomcast::config::HistoryConfig;
use roomcast::redis as bridge;
use roomcast::redis::PresenceChange;
use roomcast::redis::layout::RoomKeys;
use roomcast::redis::resp::Reply;

const KEEP_5: HistoryConfig = HistoryConfig {
    messages: 5,
    ttl: Duration::from_secs(3600),
};

/// The text `redis_function::publish` makes of message `i` (data and seq).
fn text(i: u64) -> Vec<u8> {
    format!(r#"{{"event":"chat:msg","room":"lobby","data":{i},"from":"u1","seq":{i},"ts":1}}"#)
        .into_bytes()
}

fn texts(seqs: std::ops::RangeInclusive<u64>) -> Vec<Vec<u8>> {
    seqs.map(text).collect()
}

fn query<'a>(
    k: Option<u64>,
    since: Option<u64>,
    epoch: Option<&'a str>,
) -> bridge::HistoryQuery<'a> {
    bridge::HistoryQuery {
        history: k,
        since,
        epoch,
    }
}

/// `roomcast_join` of a user on node `n1` asking `query`.
fn join(
    conn: &mut common::redis::RedisConn,
    keys: &RoomKeys,
    q: bridge::HistoryQuery<'_>,
) -> bridge::History {
    let who = PresenceChange {
        node: "n1".into(),
        user: "u9".into(),
        name: None,
        rejoin: false,
        announce: false,
        event_limit: 100,
        origin: "n1/1/-".into(),
        text: Vec::new(),
    };
    let mut out = Vec::new();
    bridge::join(
        &mut out,
        keys,
        q,
        "e-join",
        KEEP_5,
        &who,
        bridge::RoomHooks::OFF,
    );
    conn.send_raw(&out);
    let reply = conn.reply();
    bridge::join_reply(&reply)
        .unwrap_or_else(|| panic!("{reply:?}"))
        .0
}

#[test]
fn batches_trim_the_log_as_single_publishes_do() {
    let (_redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    for batch in 0..5u64 {
        let data: Vec<String> = (1..=50).map(|i| (batch * 50 + i).to_string()).collect();
        let data: Vec<&str> = data.iter().map(String::as_str).collect();
        publish_run(&mut conn, &keys, &data, "n/1/-", KEEP_5);
    }
    let stored = conn.call(&["XLEN", &keys.log]).as_i64().unwrap();
    assert!(
        (6..=105).contains(&stored),
        "approximate: more than 5 kept, at most one node more: {stored}"
    );
    let all = history(&mut conn, &keys, KEEP_5, query(Some(100), None, None));
    assert_eq!((all.seq, all.messages), (250, texts(246..=250)));
}

#[test]
fn a_log_longer_than_the_history_reads_back_exactly_the_last_messages() {
    let (_redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    // More than two stream nodes (100 entries each by default).
    let mut epoch = String::new();
    for i in 1..=250 {
        epoch = publish(&mut conn, &keys, &i.to_string(), KEEP_5).epoch;
    }
    let stored = conn.call(&["XLEN", &keys.log]).as_i64().unwrap();
    assert!(
        (6..=105).contains(&stored),
        "approximate: more than 5 kept, at most one node more: {stored}"
    );
    let name = epoch.as_str();
    let epoch = Some(name);
    let all = history(&mut conn, &keys, KEEP_5, query(Some(100), None, None));
    assert_eq!((all.seq, all.messages), (250, texts(246..=250)));
    let two = history(&mut conn, &keys, KEEP_5, query(Some(2), None, None));
    assert_eq!(two.messages, texts(249..=250));
    // Recovery within the last 5 succeeds; one further back does not,
    // though the log still holds the message after `since`.
    let back = history(&mut conn, &keys, KEEP_5, query(None, Some(245), epoch));
    assert_eq!(
        (back.recovered, back.messages),
        (Some(true), texts(246..=250))
    );
    let lost = history(&mut conn, &keys, KEEP_5, query(None, Some(244), epoch));
    assert_eq!(
        (lost.recovered, lost.messages),
        (Some(false), texts(246..=250))
    );
    let lost = history(&mut conn, &keys, KEEP_5, query(Some(1), Some(200), epoch));
    assert_eq!(
        (lost.recovered, lost.messages),
        (Some(false), texts(250..=250))
    );
    let current = history(&mut conn, &keys, KEEP_5, query(None, Some(250), epoch));
    assert_eq!((current.recovered, current.messages.len()), (Some(true), 0));
    // So does a node's recovery after a reconnect.
    let mut out = Vec::new();
    bridge::recover(&mut out, &keys, (name, 244), "e-next", KEEP_5);
    conn.send_raw(&out);
    let reply = conn.reply();
    let recovered = bridge::history_reply(&reply).unwrap_or_else(|| panic!("{reply:?}"));
    assert_eq!(
        (recovered.recovered, recovered.messages),
        (Some(false), texts(246..=250))
    );
    // A join reads the same bounds.
    assert_eq!(
        join(&mut conn, &keys, query(Some(50), None, None)).messages,
        texts(246..=250)
    );
    let joined = join(&mut conn, &keys, query(None, Some(210), epoch));
    assert_eq!(
        (joined.recovered, joined.messages),
        (Some(false), texts(246..=250))
    );
}

#[test]
fn history_off_keeps_and_reads_nothing() {
    let (_redis, mut conn) = loaded();
    let keys = RoomKeys::new("rc", "lobby");
    let off = HistoryConfig {
        messages: 0,
        ttl: Duration::from_secs(3600),
    };
    conn.call(&["SET", &keys.members, "1"]);
    for i in 1..=3 {
        publish(&mut conn, &keys, &i.to_string(), off);
    }
    assert_eq!(conn.call(&["EXISTS", &keys.log]), Reply::Integer(0));
    let read = history(
        &mut conn,
        &keys,
        off,
        query(Some(10), Some(1), Some("e-fresh")),
    );
    assert_eq!((read.seq, read.recovered), (3, Some(false)));
    assert!(read.messages.is_empty());
}

#[test]
fn entries_stamped_by_the_node_expire_with_the_history_ttl() {
    let (_redis, mut conn) = loaded();
    let short = HistoryConfig {
        messages: 5,
        ttl: Duration::from_millis(400),
    };
    // A room with members keeps its seq and epoch, but not its old messages.
    let kept = RoomKeys::new("rc", "members");
    conn.call(&["SET", &kept.members, "2"]);
    let first = publish(&mut conn, &kept, "1", short);
    let young = history(&mut conn, &kept, short, query(Some(5), None, None));
    assert_eq!(young.messages.len(), 1);
    // A room without members is forgotten with its history.
    let empty = RoomKeys::new("rc", "empty");
    publish(&mut conn, &empty, "1", short);
    let ttl = conn.call(&["PTTL", &empty.seq]).as_i64().unwrap();
    assert!((1..=400).contains(&ttl), "{ttl}");
    thread::sleep(Duration::from_millis(600));
    let old = history(&mut conn, &kept, short, query(Some(5), None, None));
    assert_eq!((old.seq, old.messages.len()), (1, 0), "older than the TTL");
    let recover = history(
        &mut conn,
        &kept,
        short,
        query(None, Some(0), Some(&first.epoch)),
    );
    assert_eq!(recover.recovered, Some(false));
    let next = publish(&mut conn, &kept, "2", short);
    assert_eq!((next.seq, &next.epoch), (2, &first.epoch));
    assert_eq!(
        conn.call(&["EXISTS", &empty.seq, &empty.epoch, &empty.log]),
        Reply::Integer(0)
    );
    let again = publish(&mut conn, &empty, "1", short);
    assert_eq!((again.seq, again.epoch.as_str()), (1, "e-fresh"));
}
