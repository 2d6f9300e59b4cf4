//! History and recovery (PROTOCOL.md section 7): `room:join` with
//! `history: k`, with `since`/`epoch`, `recovered`, the last value kept by
//! default, byte-identical history entries, forgotten rooms and
//! `--history-ttl`.

use crate::common;

use std::thread;
use std::time::Duration;

use simd_json::OwnedValue;
use simd_json::prelude::*;

use common::rooms::{Claims, Client, array_at, ok_data, q, str_at, u64_at};
use common::{Server, json_at, parse_json};

/// A publisher that may publish to every room without joining, unlimited rate.
fn publisher(server: &Server) -> Client {
    Client::connect(
        server.addr(),
        &Claims::new("feed")
            .rooms(&[])
            .publish(&["*"])
            .rate(0)
            .token(),
    )
}

/// `room:join` with `data`; the ack's raw text and its parsed `data`.
fn join_raw(c: &mut Client, data: &str) -> (String, OwnedValue) {
    let id = c.new_id();
    c.send(&format!(
        r#"{{"event":"room:join","data":{data},"id":{}}}"#,
        q(&id)
    ));
    let raw = c.wait_ack(&id);
    let v = parse_json(&raw);
    let data = ok_data(&v).clone();
    (raw, data)
}

/// The seqs of the messages in a join ack's data.
fn seqs(data: &OwnedValue) -> Vec<u64> {
    array_at(data, &["messages"])
        .iter()
        .map(|m| m.get("seq").and_then(|s| s.as_u64()).expect("seq"))
        .collect()
}

fn recovered(data: &OwnedValue) -> Option<bool> {
    json_at(data, &["recovered"]).and_then(|v| v.as_bool())
}

/// Publishes `n` messages `{"n":i}` to `room`; their seqs.
fn publish_n(p: &mut Client, room: &str, from: u64, n: u64) -> Vec<u64> {
    (from..from + n)
        .map(|i| p.publish_ok(room, "feed:tick", &format!(r#"{{"n" : {i}}}"#)))
        .collect()
}

#[test]
fn history_k_returns_up_to_k_latest_oldest_first() {
    let server = Server::start(&["--history", "10"]);
    let mut p = publisher(&server);
    assert_eq!(publish_n(&mut p, "room", 1, 5), [1, 2, 3, 4, 5]);
    let mut c = Client::user(server.addr(), "reader");
    let (_, data) = join_raw(&mut c, r#"{"room":"room","history":3}"#);
    assert_eq!(seqs(&data), [3, 4, 5]);
    assert_eq!(u64_at(&data, &["seq"]), 5);
    for m in array_at(&data, &["messages"]) {
        let n = m.get("seq").and_then(|s| s.as_u64()).unwrap();
        assert_eq!(str_at(m, &["event"]), "feed:tick");
        assert_eq!(str_at(m, &["room"]), "room");
        assert_eq!(str_at(m, &["from"]), "feed");
        assert_eq!(u64_at(m, &["data", "n"]), n);
        assert!(u64_at(m, &["ts"]) > 0);
    }
    let mut c2 = Client::user(server.addr(), "reader2");
    let (_, data) = join_raw(&mut c2, r#"{"room":"room","history":50}"#);
    assert_eq!(seqs(&data), [1, 2, 3, 4, 5], "up to k");
    let mut c3 = Client::user(server.addr(), "reader3");
    let (_, data) = join_raw(&mut c3, r#"{"room":"room","history":0}"#);
    assert_eq!(seqs(&data), Vec::<u64>::new());
}

#[test]
fn history_entries_are_byte_identical_to_live_delivery() {
    let server = Server::start(&["--history", "10", "--presence-rooms", "presence-only"]);
    let addr = server.addr();
    let mut live = Client::user(addr, "live");
    live.join("room");
    let mut p = publisher(&server);
    let datas = [
        r#"{"a" : [1, 2.50, "\u00e9"]}"#,
        r#"  "spaced string\n"  "#.trim(),
        r#"[ ]"#,
        r#"-0.0e+1"#,
    ];
    for d in datas {
        p.publish_ok("room", "feed:raw", d);
    }
    let delivered: Vec<String> = (0..datas.len()).map(|_| live.recv()).collect();
    let mut late = Client::user(addr, "late");
    let (raw, data) = join_raw(&mut late, r#"{"room":"room","history":10}"#);
    assert_eq!(seqs(&data), [1, 2, 3, 4]);
    let mut at = 0;
    for text in &delivered {
        let pos = raw[at..]
            .find(text.as_str())
            .unwrap_or_else(|| panic!("history in {raw}\ndoes not hold the live bytes {text}"));
        at += pos + text.len();
    }
}

#[test]
fn reconnect_with_since_and_epoch_gets_exactly_the_missed_messages() {
    let server = Server::start(&["--history", "10"]);
    let addr = server.addr();
    let mut p = publisher(&server);
    let mut keeper = Client::user(addr, "keeper");
    keeper.join("room");
    let mut c = Client::user(addr, "reader");
    let (_, joined) = join_raw(&mut c, r#"{"room":"room"}"#);
    let epoch = str_at(&joined, &["epoch"]).to_owned();
    publish_n(&mut p, "room", 1, 2);
    let mut last = 0;
    for _ in 0..2 {
        last = common::rooms::seq_of(&c.recv_skip_presence());
    }
    assert_eq!(last, 2);
    drop(c);
    publish_n(&mut p, "room", 3, 3);

    let mut c = Client::user(addr, "reader");
    let (_, data) = join_raw(
        &mut c,
        &format!(r#"{{"room":"room","since":{last},"epoch":{}}}"#, q(&epoch)),
    );
    assert_eq!(seqs(&data), [3, 4, 5]);
    assert_eq!(recovered(&data), Some(true), "{data:?}");
    assert_eq!(str_at(&data, &["epoch"]), epoch);
    assert_eq!(u64_at(&data, &["seq"]), 5);
    // And it is a member again: live messages follow.
    let seq = p.publish_ok("room", "feed:tick", "6");
    assert_eq!(common::rooms::seq_of(&c.recv_skip_presence()), seq);
}

#[test]
fn since_equal_to_the_latest_seq_is_an_empty_recovery() {
    let server = Server::start(&["--history", "10"]);
    let mut p = publisher(&server);
    let mut keeper = Client::user(server.addr(), "keeper");
    let epoch = str_at(&keeper.join("room"), &["epoch"]).to_owned();
    publish_n(&mut p, "room", 1, 4);
    let mut c = Client::user(server.addr(), "reader");
    let (raw, data) = join_raw(
        &mut c,
        &format!(r#"{{"room":"room","since":4,"epoch":{}}}"#, q(&epoch)),
    );
    assert_eq!(seqs(&data), Vec::<u64>::new(), "{raw}");
    assert_eq!(recovered(&data), Some(true), "{raw}");
}

#[test]
fn overflowed_ring_is_not_recovered_and_returns_the_whole_retained_history() {
    let server = Server::start(&["--history", "3"]);
    let mut p = publisher(&server);
    let mut keeper = Client::user(server.addr(), "keeper");
    let epoch = str_at(&keeper.join("room"), &["epoch"]).to_owned();
    publish_n(&mut p, "room", 1, 2);
    // The reader saw seq 2, then missed 5 messages; only the last 3 are kept.
    publish_n(&mut p, "room", 3, 5);
    let mut c = Client::user(server.addr(), "reader");
    let (raw, data) = join_raw(
        &mut c,
        &format!(r#"{{"room":"room","since":2,"epoch":{}}}"#, q(&epoch)),
    );
    assert_eq!(recovered(&data), Some(false), "{raw}");
    assert_eq!(seqs(&data), [5, 6, 7], "{raw}");
    // With history k, at most k of them.
    let mut c2 = Client::user(server.addr(), "reader2");
    let (raw, data) = join_raw(
        &mut c2,
        &format!(
            r#"{{"room":"room","since":2,"epoch":{},"history":2}}"#,
            q(&epoch)
        ),
    );
    assert_eq!(recovered(&data), Some(false), "{raw}");
    assert_eq!(seqs(&data), [6, 7], "{raw}");
}

#[test]
fn missing_exactly_the_retained_messages_is_still_recovered() {
    let server = Server::start(&["--history", "3"]);
    let mut p = publisher(&server);
    let mut keeper = Client::user(server.addr(), "keeper");
    let epoch = str_at(&keeper.join("room"), &["epoch"]).to_owned();
    publish_n(&mut p, "room", 1, 6);
    // Since 3: 4, 5, 6 missed, all three retained.
    let mut c = Client::user(server.addr(), "reader");
    let (raw, data) = join_raw(
        &mut c,
        &format!(r#"{{"room":"room","since":3,"epoch":{}}}"#, q(&epoch)),
    );
    assert_eq!(recovered(&data), Some(true), "{raw}");
    assert_eq!(seqs(&data), [4, 5, 6], "{raw}");
}

#[test]
fn other_or_absent_epoch_is_not_recovered() {
    let server = Server::start(&["--history", "5"]);
    let mut p = publisher(&server);
    let mut keeper = Client::user(server.addr(), "keeper");
    keeper.join("room");
    publish_n(&mut p, "room", 1, 3);
    let mut c = Client::user(server.addr(), "reader");
    let (raw, data) = join_raw(
        &mut c,
        r#"{"room":"room","since":1,"epoch":"not-the-epoch"}"#,
    );
    assert_eq!(recovered(&data), Some(false), "{raw}");
    assert_eq!(seqs(&data), [1, 2, 3], "{raw}");
    let mut c2 = Client::user(server.addr(), "reader2");
    let (raw, data) = join_raw(&mut c2, r#"{"room":"room","since":1}"#);
    assert_eq!(recovered(&data), Some(false), "{raw}");
    assert_eq!(seqs(&data), [1, 2, 3], "{raw}");
}

#[test]
fn since_beyond_the_latest_seq_is_not_recovered() {
    // docs/protocol.md: a `since` past the latest seq is `recovered: false`.
    let server = Server::start(&["--history", "5"]);
    let mut p = publisher(&server);
    let mut keeper = Client::user(server.addr(), "keeper");
    let epoch = str_at(&keeper.join("room"), &["epoch"]).to_owned();
    publish_n(&mut p, "room", 1, 3);
    let mut c = Client::user(server.addr(), "reader");
    let (raw, data) = join_raw(
        &mut c,
        &format!(r#"{{"room":"room","since":10,"epoch":{}}}"#, q(&epoch)),
    );
    assert_eq!(recovered(&data), Some(false), "{raw}");
    assert_eq!(seqs(&data), [1, 2, 3], "{raw}");
}

#[test]
fn last_value_is_kept_by_default_for_a_room_without_members() {
    let server = Server::start(&[]);
    let mut p = publisher(&server);
    for i in 1..=3 {
        assert_eq!(
            p.publish_ok("prices:btc", "price:tick", &format!(r#"{{"p":{i}}}"#)),
            i
        );
    }
    let mut c = Client::user(server.addr(), "late");
    let (raw, data) = join_raw(&mut c, r#"{"room":"prices:btc","history":1}"#);
    assert_eq!(seqs(&data), [3], "{raw}");
    assert!(
        raw.contains(r#""data":{"p":3}"#),
        "last value not verbatim: {raw}"
    );
    let mut c2 = Client::user(server.addr(), "late2");
    let (_, data) = join_raw(&mut c2, r#"{"room":"prices:btc","history":5}"#);
    assert_eq!(seqs(&data), [3], "only one is kept by default");
}

#[test]
fn history_zero_forgets_an_empty_room_and_starts_a_new_epoch() {
    let server = Server::start(&["--history", "0"]);
    let mut p = publisher(&server);
    assert_eq!(p.publish_ok("room", "feed:tick", "1"), 1);
    assert_eq!(
        p.publish_ok("room", "feed:tick", "2"),
        1,
        "a room with no members and no history is forgotten"
    );
    let mut m = Client::user(server.addr(), "member");
    let first = m.join("room");
    let epoch1 = str_at(&first, &["epoch"]).to_owned();
    assert_eq!(p.publish_ok("room", "feed:tick", "3"), 1);
    assert_eq!(
        p.publish_ok("room", "feed:tick", "4"),
        2,
        "kept while a member stays"
    );
    let (_, data) = join_raw(&mut m, r#"{"room":"room","history":5}"#);
    assert_eq!(
        seqs(&data),
        Vec::<u64>::new(),
        "no history with --history 0"
    );
    m.leave("room");
    if common::in_cluster() {
        // The leave reaches Redis through the member's node and the publish
        // through the publisher's: between two nodes nothing orders them,
        // so the leave is given time to land first.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(p.publish_ok("room", "feed:tick", "5"), 1);
    let again = m.join("room");
    assert_ne!(
        str_at(&again, &["epoch"]),
        epoch1,
        "a forgotten room starts a new epoch"
    );
}

#[test]
fn recovery_across_a_forgotten_room_is_not_recovered() {
    let server = Server::start(&["--history", "0"]);
    let mut p = publisher(&server);
    let mut m = Client::user(server.addr(), "member");
    let epoch = str_at(&m.join("room"), &["epoch"]).to_owned();
    p.publish_ok("room", "feed:tick", "1");
    m.leave("room");
    p.publish_ok("room", "feed:tick", "2");
    let (raw, data) = join_raw(
        &mut m,
        &format!(r#"{{"room":"room","since":1,"epoch":{}}}"#, q(&epoch)),
    );
    assert_eq!(recovered(&data), Some(false), "{raw}");
    assert_ne!(str_at(&data, &["epoch"]), epoch);
}

#[test]
fn history_ttl_drops_old_entries() {
    let server = Server::start(&["--history", "10", "--history-ttl", "1s"]);
    let mut p = publisher(&server);
    let mut keeper = Client::user(server.addr(), "keeper");
    let epoch = str_at(&keeper.join("room"), &["epoch"]).to_owned();
    publish_n(&mut p, "room", 1, 3);
    thread::sleep(Duration::from_millis(1600));
    let seq = p.publish_ok("room", "feed:tick", "4");
    assert_eq!(seq, 4, "the room has a member, so its epoch goes on");
    let mut c = Client::user(server.addr(), "reader");
    let (raw, data) = join_raw(&mut c, r#"{"room":"room","history":10}"#);
    assert_eq!(seqs(&data), [4], "entries older than the TTL: {raw}");
    // Recovery of messages dropped by age fails.
    let mut c2 = Client::user(server.addr(), "reader2");
    let (raw, data) = join_raw(
        &mut c2,
        &format!(r#"{{"room":"room","since":1,"epoch":{}}}"#, q(&epoch)),
    );
    assert_eq!(recovered(&data), Some(false), "{raw}");
    assert_eq!(seqs(&data), [4], "{raw}");
}

#[test]
fn room_without_members_is_forgotten_once_its_history_expires() {
    let server = Server::start(&["--history", "10", "--history-ttl", "1s"]);
    let mut p = publisher(&server);
    publish_n(&mut p, "room", 1, 3);
    thread::sleep(Duration::from_millis(1800));
    assert_eq!(
        p.publish_ok("room", "feed:tick", r#""new""#),
        1,
        "no members and no history left: a new epoch at seq 1"
    );
}

#[test]
fn joining_a_room_whose_history_expired_starts_a_new_epoch() {
    let server = Server::start(&["--history", "10", "--history-ttl", "1s"]);
    let mut p = publisher(&server);
    let mut m = Client::user(server.addr(), "member");
    let epoch = str_at(&m.join("room"), &["epoch"]).to_owned();
    publish_n(&mut p, "room", 1, 3);
    m.leave("room");
    thread::sleep(Duration::from_millis(1800));
    let (raw, data) = join_raw(&mut m, r#"{"room":"room","history":10}"#);
    assert_eq!(seqs(&data), Vec::<u64>::new(), "{raw}");
    assert_eq!(
        u64_at(&data, &["seq"]),
        0,
        "no members and no history left: the room was forgotten: {raw}"
    );
    assert_ne!(str_at(&data, &["epoch"]), epoch, "{raw}");
}

#[test]
fn history_ttl_from_the_environment_in_milliseconds() {
    let mut cmd = Server::single_command();
    cmd.env("ROOMCAST_HISTORY", "5");
    cmd.env("ROOMCAST_HISTORY_TTL", "1200ms");
    let server = Server::spawn(cmd);
    let mut p = publisher(&server);
    publish_n(&mut p, "room", 1, 2);
    let mut c = Client::user(server.addr(), "reader");
    let (_, data) = join_raw(&mut c, r#"{"room":"room","history":5}"#);
    assert_eq!(seqs(&data), [1, 2]);
    c.leave("room");
    thread::sleep(Duration::from_millis(2000));
    let (_, data) = join_raw(&mut c, r#"{"room":"room","history":5}"#);
    assert_eq!(seqs(&data), Vec::<u64>::new());
}
