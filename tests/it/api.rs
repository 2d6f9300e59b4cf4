//! The server API on one server (PROTOCOL.md section 12): every method's
//! result and effect on real WebSocket clients. Authentication is in
//! `api/auth.rs`, bad input (and proof that it changed nothing) in
//! `api/input.rs`; two nodes sharing a Redis in `api_cluster.rs`.

mod auth;
mod input;

use crate::common;

use std::time::Duration;

use simd_json::OwnedValue;
use simd_json::prelude::*;

use common::api::{
    API_KEY, Api, Cred, assert_subscribed, assert_unsubscribed, expect_marker, member, u64_of,
    user_conn, user_connections,
};
use common::rooms::{
    Claims, Client, array_at, assert_room_event, keys, ok_data, publisher, q, sorted, str_at,
};
use common::{Server, parse_json};

const QUIET: Duration = Duration::from_millis(300);
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// The `node` of a server started without `--redis` (docs/api.md: the
/// contract names a node by its `--node-id`, which only a cluster has).
const NODE: &str = "local";

/// A server with the API key, presence only in `pres:*` rooms (so counts
/// elsewhere see no presence events) and 100 messages of history.
fn server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--api-key",
        API_KEY,
        "--presence-rooms",
        "pres:*",
        "--history",
        "100",
        // Consecutive connections on different shards: every gathering
        // method has to reach both.
        "--shards",
        "2",
        "--accept",
        "handoff",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn json(text: &str) -> OwnedValue {
    parse_json(text)
}

fn results(result: &OwnedValue) -> &Vec<OwnedValue> {
    array_at(result, &["results"])
}

#[test]
fn publish_from_a_key_comes_from_api_and_from_an_admin_token_from_its_sub() {
    let server = server(&[]);
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let api = Api::key(server.addr());
    let data = r#"{"t" : [1, 2.50]}"#;
    let body = format!(r#"{{"room":"lobby","event":"chat:msg","data":{data}}}"#);
    let result = api.ok("publish", &body);
    assert_eq!(result, json(r#"{"results":[{"room":"lobby","seq":1}]}"#));
    assert_room_event(&alice.recv(), "chat:msg", "lobby", data, "api", 1);

    // The API is trusted: an admin token whose patterns allow nothing
    // publishes anywhere, as its `sub`.
    let token = Claims::new("ops")
        .admin(true)
        .rooms(&[])
        .publish(&[])
        .token();
    let admin = Api::with(server.addr(), Cred::Bearer(token));
    let body = r#"{"messages":[{"room":"lobby","event":"a:b","data":1},{"room":"other","event":"a:b","data":2},{"room":"lobby","event":"a:c","data":3}]}"#;
    let result = admin.ok("publish", body);
    assert_eq!(
        result,
        json(
            r#"{"results":[{"room":"lobby","seq":2},{"room":"other","seq":1},{"room":"lobby","seq":3}]}"#
        )
    );
    assert_room_event(&alice.recv(), "a:b", "lobby", "1", "ops", 2);
    assert_room_event(&alice.recv(), "a:c", "lobby", "3", "ops", 3);
    alice.assert_quiet(QUIET);
}

#[test]
fn broadcast_publishes_to_each_room_in_order_and_reports_each() {
    let server = server(&[]);
    let mut one = member(server.addr(), "one", &["r1"]);
    let mut two = member(server.addr(), "two", &["r2"]);
    let api = Api::key(server.addr());
    let body = r#"{"rooms":["r1","bad room","r2","r1"],"event":"news:flash","data":{"x":1}}"#;
    let result = api.ok("broadcast", body);
    assert_eq!(keys(&result), ["results"], "{result:?}");
    let list = results(&result);
    assert_eq!(list.len(), 4, "{result:?}");
    assert_eq!(list[0], json(r#"{"room":"r1","seq":1}"#));
    assert_eq!(keys(&list[1]), sorted(&["room", "error"]), "{result:?}");
    assert_eq!(str_at(&list[1], &["room"]), "bad room");
    assert_eq!(
        str_at(&list[1], &["error", "code"]),
        "VALIDATION_ERROR",
        "{result:?}"
    );
    assert!(list[1]["error"]["message"].as_str().is_some(), "{result:?}");
    assert_eq!(list[2], json(r#"{"room":"r2","seq":1}"#));
    assert_eq!(list[3], json(r#"{"room":"r1","seq":2}"#));
    assert_room_event(&one.recv(), "news:flash", "r1", r#"{"x":1}"#, "api", 1);
    assert_room_event(&one.recv(), "news:flash", "r1", r#"{"x":1}"#, "api", 2);
    assert_room_event(&two.recv(), "news:flash", "r2", r#"{"x":1}"#, "api", 1);

    // From an admin token, the messages are its `sub`'s.
    let admin = Api::with(server.addr(), Cred::admin("ops"));
    let result = admin.ok(
        "broadcast",
        r#"{"rooms":["r2"],"event":"news:flash","data":2}"#,
    );
    assert_eq!(result, json(r#"{"results":[{"room":"r2","seq":2}]}"#));
    assert_room_event(&two.recv(), "news:flash", "r2", "2", "ops", 2);
    two.assert_quiet(QUIET);
}

#[test]
fn broadcast_takes_a_thousand_rooms() {
    let server = server(&[]);
    let mut last = member(server.addr(), "last", &["b999"]);
    let rooms: Vec<String> = (0..1000).map(|i| q(&format!("b{i}"))).collect();
    let body = format!(
        r#"{{"rooms":[{}],"event":"t:x","data":0}}"#,
        rooms.join(",")
    );
    let result = Api::key(server.addr()).ok("broadcast", &body);
    let list = results(&result);
    assert_eq!(list.len(), 1000);
    for (i, entry) in list.iter().enumerate() {
        assert_eq!(entry, &json(&format!(r#"{{"room":"b{i}","seq":1}}"#)));
    }
    assert_room_event(&last.recv(), "t:x", "b999", "0", "api", 1);
}

#[test]
fn disconnect_closes_every_connection_of_the_user_with_4500_disconnected() {
    let server = server(&[]);
    let mut bob1 = member(server.addr(), "bob", &["lobby"]);
    let mut bob2 = member(server.addr(), "bob", &[]);
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let api = Api::key(server.addr());
    assert_eq!(api.connections("disconnect", r#"{"user":"bob"}"#), 2);
    for bob in [&mut bob1, &mut bob2] {
        assert_eq!(bob.close_frame(CLOSE_WAIT), (4500, "disconnected".into()));
    }
    alice.assert_open();
    alice.assert_quiet(QUIET);
    assert_eq!(api.connections("disconnect", r#"{"user":"nobody"}"#), 0);
    alice.assert_open();
}

#[test]
fn disconnect_of_one_conn_id_with_its_own_code_and_reason() {
    let server = server(&[]);
    let mut bob1 = member(server.addr(), "bob", &[]);
    let mut bob2 = member(server.addr(), "bob", &[]);
    let mut alice = member(server.addr(), "alice", &[]);
    let api = Api::key(server.addr());
    let body = format!(
        r#"{{"user":"bob","connId":{},"code":4001,"reason":"moved é"}}"#,
        q(&bob2.conn_id())
    );
    assert_eq!(api.connections("disconnect", &body), 1);
    assert_eq!(bob2.close_frame(CLOSE_WAIT), (4001, "moved é".into()));
    bob1.assert_open();

    // Another user's connection is not bob's.
    let body = format!(r#"{{"user":"bob","connId":{}}}"#, q(&alice.conn_id()));
    assert_eq!(api.connections("disconnect", &body), 0);
    alice.assert_open();

    // A reason of exactly 120 bytes (60 two-byte characters), the top code.
    let reason = "é".repeat(60);
    let body = format!(r#"{{"user":"bob","code":4999,"reason":{}}}"#, q(&reason));
    assert_eq!(api.connections("disconnect", &body), 1);
    assert_eq!(bob1.close_frame(CLOSE_WAIT), (4999, reason));
    alice.assert_open();
}

#[test]
fn disconnect_sends_the_queued_output_before_the_close() {
    let server = server(&[]);
    let mut bob = member(server.addr(), "bob", &["lobby"]);
    let body = r#"{"commands":[
        {"method":"publish","params":{"room":"lobby","event":"last:words","data":"bye"}},
        {"method":"disconnect","params":{"user":"bob","code":4100}}]}"#;
    let result = Api::key(server.addr()).ok("batch", body);
    assert_eq!(
        result,
        json(
            r#"{"replies":[{"result":{"results":[{"room":"lobby","seq":1}]}},{"result":{"connections":1}}]}"#
        )
    );
    assert_room_event(&bob.recv(), "last:words", "lobby", r#""bye""#, "api", 1);
    assert_eq!(bob.close_frame(CLOSE_WAIT), (4100, "disconnected".into()));
}

#[test]
fn disconnect_waits_for_a_large_queued_output() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut bob = member(server.addr(), "bob", &["feed"]);
    // 40 events of 8 KiB, queued while bob reads nothing.
    let data = q(&"x".repeat(8 << 10));
    let one = format!(r#"{{"room":"feed","event":"t:big","data":{data}}}"#);
    let messages = vec![one; 40].join(",");
    let result = api.ok("publish", &format!(r#"{{"messages":[{messages}]}}"#));
    assert_eq!(array_at(&result, &["results"]).len(), 40);
    assert_eq!(api.connections("disconnect", r#"{"user":"bob"}"#), 1);
    for seq in 1..=40 {
        assert_room_event(&bob.recv(), "t:big", "feed", &data, "api", seq);
    }
    assert_eq!(bob.close_frame(CLOSE_WAIT), (4500, "disconnected".into()));
}

#[test]
fn subscribe_joins_every_connection_of_the_user_which_then_gets_the_room() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    for i in 1..=3 {
        assert_eq!(api.publish("news", "news:item", &i.to_string()), i);
    }
    let epoch = str_at(&api.ok("history", r#"{"room":"news"}"#), &["epoch"]).to_owned();
    // No permission check: bob may join nothing himself.
    let token = Claims::new("bob").rooms(&["own"]).token();
    let mut bobs = [
        Client::connect(server.addr(), &token),
        Client::connect(server.addr(), &token),
    ];
    let mut alice = publisher(server.addr(), "alice");
    alice.join("lobby");
    assert_eq!(
        api.connections("subscribe", r#"{"user":"bob","room":"news"}"#),
        2
    );
    // Published at once by a client, then through the API.
    assert_eq!(alice.publish_ok("news", "news:item", "4"), 4);
    for bob in &mut bobs {
        let data = assert_subscribed(&bob.recv(), "news");
        assert_eq!(u64_of(&data, "seq"), 3, "{data:?}");
        assert_eq!(str_at(&data, &["epoch"]), epoch, "{data:?}");
        assert!(u64_of(&data, "members") <= 2, "{data:?}");
        assert_room_event(&bob.recv(), "news:item", "news", "4", "alice", 4);
    }
    // Already in the room: counted, told nothing.
    assert_eq!(
        api.connections("subscribe", r#"{"user":"bob","room":"news"}"#),
        2
    );
    api.mark("news", 5, "a second subscribe");
    for bob in &mut bobs {
        expect_marker(bob, "news", 5, "a second subscribe");
    }
    let presence = api.ok("presence", r#"{"room":"news"}"#);
    assert_eq!(u64_of(&presence, "count"), 1, "{presence:?}");
    alice.assert_quiet(QUIET);
}

#[test]
fn subscribe_of_one_conn_id_skips_a_connection_over_its_room_limit() {
    let server = server(&["--max-rooms-per-connection", "1"]);
    let api = Api::key(server.addr());
    let mut full = member(server.addr(), "bob", &["a"]);
    let mut free = member(server.addr(), "bob", &[]);
    assert_eq!(
        api.connections("subscribe", r#"{"user":"bob","room":"b"}"#),
        1
    );
    assert_subscribed(&free.recv(), "b");
    assert_eq!(api.publish("b", "t:x", "1"), 1);
    assert_room_event(&free.recv(), "t:x", "b", "1", "api", 1);
    api.assert_next_is_marker(&mut full, "a", 1, "a skipped subscribe");

    let body = format!(
        r#"{{"user":"bob","room":"c","connId":{}}}"#,
        q(&free.conn_id())
    );
    // `free` is now in one room too: skipped, not counted.
    assert_eq!(api.connections("subscribe", &body), 0);
    let body = format!(
        r#"{{"user":"bob","room":"a","connId":{}}}"#,
        q(&full.conn_id())
    );
    assert_eq!(api.connections("subscribe", &body), 1, "already in a");
    api.assert_next_is_marker(&mut full, "a", 2, "a subscribe to a room it is in");
    api.assert_next_is_marker(&mut free, "b", 2, "subscribes of other connections");
    assert_eq!(
        api.connections("subscribe", r#"{"user":"nobody","room":"x"}"#),
        0
    );
}

#[test]
fn subscribe_and_unsubscribe_announce_presence_as_a_join_and_a_leave() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["pres:room"]);
    let mut bob = Client::connect(server.addr(), &Claims::new("bob").name("Bob").token());
    assert_eq!(
        api.connections("subscribe", r#"{"user":"bob","room":"pres:room"}"#),
        1
    );
    assert_eq!(
        alice.recv_json(),
        json(
            r#"{"event":"presence:join","room":"pres:room","data":{"userId":"bob","name":"Bob"}}"#
        )
    );
    assert_subscribed(&bob.recv(), "pres:room");
    assert_eq!(
        api.connections("unsubscribe", r#"{"user":"bob","room":"pres:room"}"#),
        1
    );
    assert_eq!(
        alice.recv_json(),
        json(r#"{"event":"presence:leave","room":"pres:room","data":{"userId":"bob"}}"#)
    );
    assert_unsubscribed(&bob.recv(), "pres:room");
}

#[test]
fn unsubscribe_makes_every_connection_in_the_room_leave_and_get_nothing_more() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["news"]);
    let mut bobs = [
        member(server.addr(), "bob", &["news", "side"]),
        member(server.addr(), "bob", &["news", "side"]),
        member(server.addr(), "bob", &["side"]),
    ];
    assert_eq!(
        api.connections("unsubscribe", r#"{"user":"bob","room":"news"}"#),
        2
    );
    for bob in &mut bobs[..2] {
        assert_unsubscribed(&bob.recv(), "news");
    }
    assert_eq!(api.publish("news", "news:item", "1"), 1);
    assert_room_event(&alice.recv(), "news:item", "news", "1", "api", 1);
    api.mark("side", 1, "an unsubscribe");
    for bob in &mut bobs {
        expect_marker(bob, "side", 1, "an unsubscribe");
    }
    assert_eq!(
        api.connections("unsubscribe", r#"{"user":"bob","room":"news"}"#),
        0
    );
    let presence = api.ok("presence", r#"{"room":"news"}"#);
    assert_eq!(u64_of(&presence, "count"), 1, "only alice: {presence:?}");
}

/// `presence:get` data with its users sorted by `userId`.
fn sorted_users(mut data: OwnedValue) -> OwnedValue {
    if let Some(users) = data.get_mut("users").and_then(|u| u.as_array_mut()) {
        users.sort_by(|a, b| str_at(a, &["userId"]).cmp(str_at(b, &["userId"])));
    }
    data
}

#[test]
fn presence_answers_what_presence_get_answers() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = Client::connect(server.addr(), &Claims::new("alice").name("A").token());
    alice.join("pres:r");
    let _bobs = [
        member(server.addr(), "bob", &["pres:r"]),
        member(server.addr(), "bob", &["pres:r"]),
    ];
    for room in ["pres:r", "empty"] {
        let body = format!(r#"{{"room":{}}}"#, q(room));
        let ack = alice.request("presence:get", &body, "");
        let expected = sorted_users(ok_data(&ack).clone());
        let got = sorted_users(api.ok("presence", &body));
        assert_eq!(got, expected, "{room}");
    }
    let got = api.ok("presence", r#"{"room":"pres:r"}"#);
    assert_eq!(u64_of(&got, "count"), 2, "{got:?}");
}

#[test]
fn history_answers_what_room_join_answers() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["h"]);
    let mut feed = publisher(server.addr(), "feed");
    for i in 1..=5 {
        feed.publish_ok("h", "price:tick", &format!(r#"{{"p" : {i}}}"#));
    }
    let live: Vec<OwnedValue> = (0..5).map(|_| alice.recv_json()).collect();

    let all = api.ok("history", r#"{"room":"h"}"#);
    assert_eq!(
        keys(&all),
        sorted(&["room", "epoch", "seq", "messages"]),
        "{all:?}"
    );
    assert_eq!(str_at(&all, &["room"]), "h");
    assert_eq!(u64_of(&all, "seq"), 5);
    assert_eq!(array_at(&all, &["messages"]), &live, "entries as delivered");
    let epoch = str_at(&all, &["epoch"]).to_owned();

    let last2 = api.ok("history", r#"{"room":"h","limit":2}"#);
    assert_eq!(array_at(&last2, &["messages"])[..], live[3..]);
    let mut carol = member(server.addr(), "carol", &[]);
    let joined = carol.join_with(r#"{"room":"h","history":2}"#);
    assert_eq!(
        array_at(ok_data(&joined), &["messages"]),
        array_at(&last2, &["messages"])
    );

    let since = |since: u64, epoch: &str| {
        let body = format!(r#"{{"room":"h","since":{since},"epoch":{}}}"#, q(epoch));
        api.ok("history", &body)
    };
    let recovered = since(3, &epoch);
    assert_eq!(
        recovered["recovered"],
        OwnedValue::from(true),
        "{recovered:?}"
    );
    assert_eq!(array_at(&recovered, &["messages"])[..], live[3..]);
    let latest = since(5, &epoch);
    assert_eq!(latest["recovered"], OwnedValue::from(true), "{latest:?}");
    assert!(array_at(&latest, &["messages"]).is_empty(), "{latest:?}");
    let stale = since(3, "not-the-epoch");
    assert_eq!(stale["recovered"], OwnedValue::from(false), "{stale:?}");
    assert_eq!(array_at(&stale, &["messages"]), &live);

    // As a join would: no message for history 0, the whole history and
    // `recovered: false` for a since without its epoch.
    for (body, join) in [
        (r#"{"room":"h","limit":0}"#, r#"{"room":"h","history":0}"#),
        (r#"{"room":"h","since":3}"#, r#"{"room":"h","since":3}"#),
    ] {
        let got = api.ok("history", body);
        let mut dave = member(server.addr(), "dave", &[]);
        let joined = dave.join_with(join);
        let data = ok_data(&joined);
        assert_eq!(
            array_at(&got, &["messages"]),
            array_at(data, &["messages"]),
            "{body}"
        );
        assert_eq!(got.get("recovered"), data.get("recovered"), "{body}");
    }

    let unknown = api.ok("history", r#"{"room":"never"}"#);
    assert!(array_at(&unknown, &["messages"]).is_empty(), "{unknown:?}");
}

#[test]
fn history_remove_drops_the_messages_and_keeps_seq_and_epoch_while_remembered() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["h"]);
    for i in 1..=3 {
        api.publish("h", "t:x", &i.to_string());
        alice.recv();
    }
    let before = api.ok("history", r#"{"room":"h"}"#);
    let epoch = str_at(&before, &["epoch"]).to_owned();
    assert_eq!(api.ok("history_remove", r#"{"room":"h"}"#), json("{}"));
    let after = api.ok("history", r#"{"room":"h"}"#);
    assert!(array_at(&after, &["messages"]).is_empty(), "{after:?}");
    assert_eq!(u64_of(&after, "seq"), 3, "{after:?}");
    assert_eq!(str_at(&after, &["epoch"]), epoch);

    assert_eq!(api.publish("h", "t:x", "4"), 4, "the count goes on");
    assert_room_event(&alice.recv(), "t:x", "h", "4", "api", 4);
    let mut carol = member(server.addr(), "carol", &[]);
    let ack = carol.join_with(&format!(
        r#"{{"room":"h","since":1,"epoch":{}}}"#,
        q(&epoch)
    ));
    let data = ok_data(&ack);
    assert_eq!(data["recovered"], OwnedValue::from(false), "{ack:?}");
    assert_eq!(str_at(data, &["epoch"]), epoch);
}

#[test]
fn history_remove_of_a_room_without_members_forgets_it() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    for i in 1..=3 {
        api.publish("lonely", "t:x", &i.to_string());
    }
    let before = api.ok("history", r#"{"room":"lonely"}"#);
    assert_eq!(api.ok("history_remove", r#"{"room":"lonely"}"#), json("{}"));
    // No members and no history left: section 7 forgets the room, and its
    // next message starts a new epoch at seq 1.
    assert_eq!(api.publish("lonely", "t:x", "4"), 1);
    let after = api.ok("history", r#"{"room":"lonely"}"#);
    assert_ne!(str_at(&after, &["epoch"]), str_at(&before, &["epoch"]));
    assert_eq!(array_at(&after, &["messages"]).len(), 1, "{after:?}");
    // Removing the history of a room nobody ever used is no error.
    assert_eq!(api.ok("history_remove", r#"{"room":"never"}"#), json("{}"));
}

#[test]
fn rooms_lists_rooms_with_members_sorted_with_their_counts() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let _alice = member(server.addr(), "alice", &["b:2", "a"]);
    let _bob1 = member(server.addr(), "bob", &["b:1", "a"]);
    let _bob2 = member(server.addr(), "bob", &["a"]);
    api.publish("history-only", "t:x", "1");
    let a = r#"{"room":"a","connections":3,"users":2}"#;
    let b1 = r#"{"room":"b:1","connections":1,"users":1}"#;
    let b2 = r#"{"room":"b:2","connections":1,"users":1}"#;
    let cases = [
        ("", format!("[{a},{b1},{b2}]")),
        (r#"{"pattern":"*"}"#, format!("[{a},{b1},{b2}]")),
        (r#"{"pattern":"b:*"}"#, format!("[{b1},{b2}]")),
        (r#"{"pattern":"a"}"#, format!("[{a}]")),
        (r#"{"pattern":"zzz"}"#, "[]".to_owned()),
    ];
    for (body, rooms) in cases {
        let got = api.ok("rooms", body);
        assert_eq!(got, json(&format!(r#"{{"rooms":{rooms}}}"#)), "{body}");
    }
}

#[test]
fn rooms_lists_at_most_ten_thousand_then_says_truncated() {
    const ROOMS: usize = 10_001;
    let server = server(&["--max-rooms-per-connection", "10000"]);
    let unlimited = |sub: &str| Client::connect(server.addr(), &Claims::new(sub).rate(0).token());
    let mut clients = [unlimited("alice"), unlimited("bob")];
    // Joins sent a thousand at a time, then their acks read; half the
    // rooms each, as one connection may be in at most 10,000.
    let all: Vec<usize> = (0..ROOMS).collect();
    for chunk in all.chunks(1000) {
        let client = &mut clients[chunk[0] * 2 / ROOMS];
        for i in chunk {
            client.send(&format!(
                r#"{{"event":"room:join","data":{{"room":"r{i:05}"}},"id":{i}}}"#
            ));
        }
        for _ in chunk {
            ok_data(&client.recv_json());
        }
    }
    let got = Api::key(server.addr()).ok("rooms", "{}");
    assert_eq!(keys(&got), sorted(&["rooms", "truncated"]));
    assert_eq!(got["truncated"], OwnedValue::from(true));
    let rooms = array_at(&got, &["rooms"]);
    assert_eq!(rooms.len(), 10_000);
    for (i, room) in rooms.iter().enumerate() {
        let expected = format!(r#"{{"room":"r{i:05}","connections":1,"users":1}}"#);
        assert_eq!(room, &json(&expected), "sorted by name");
    }
    let some = Api::key(server.addr()).ok("rooms", r#"{"pattern":"r1000*"}"#);
    let last = r#"{"rooms":[{"room":"r10000","connections":1,"users":1}]}"#;
    assert_eq!(some, json(last), "not truncated");
}

#[test]
fn user_lists_every_connection_with_its_node_and_rooms() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let one = member(server.addr(), "alice", &["b", "a"]);
    let two = member(server.addr(), "alice", &[]);
    let _bob = member(server.addr(), "bob", &["a"]);
    let got = api.ok("user", r#"{"user":"alice"}"#);
    let mut expected = vec![
        user_conn(NODE, &one, &["a", "b"]),
        user_conn(NODE, &two, &[]),
    ];
    expected.sort();
    assert_eq!(user_connections(&got, "alice"), expected);
    assert_eq!(
        api.ok("user", r#"{"user":"nobody"}"#),
        json(r#"{"user":"nobody","connections":[]}"#)
    );
}

#[test]
fn info_describes_this_node() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let _clients = [
        member(server.addr(), "alice", &["a"]),
        member(server.addr(), "alice", &[]),
        member(server.addr(), "bob", &["b", "a"]),
    ];
    for body in ["", "{}"] {
        let got = api.ok("info", body);
        assert_eq!(keys(&got), ["nodes"], "{got:?}");
        let nodes = array_at(&got, &["nodes"]);
        assert_eq!(nodes.len(), 1, "{got:?}");
        let node = &nodes[0];
        let expected = sorted(&[
            "node",
            "version",
            "uptimeSeconds",
            "connections",
            "users",
            "rooms",
        ]);
        assert_eq!(keys(node), expected, "{got:?}");
        assert_eq!(str_at(node, &["node"]), NODE);
        assert_eq!(str_at(node, &["version"]), env!("CARGO_PKG_VERSION"));
        assert!(u64_of(node, "uptimeSeconds") < 600, "{got:?}");
        assert_eq!(
            (
                u64_of(node, "connections"),
                u64_of(node, "users"),
                u64_of(node, "rooms")
            ),
            (3, 2, 2),
            "{got:?}"
        );
    }
}

#[test]
fn batch_runs_its_commands_in_order_and_replies_to_each() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let mut bob = member(server.addr(), "bob", &[]);
    let publish = |n: u32| {
        format!(r#"{{"method":"publish","params":{{"room":"lobby","event":"t:n","data":{n}}}}}"#)
    };
    let bob_in = |method: &str| {
        format!(r#"{{"method":"{method}","params":{{"user":"bob","room":"lobby"}}}}"#)
    };
    let commands = [
        publish(1),
        bob_in("subscribe"),
        publish(2),
        r#"{"method":"no_such_method","params":{}}"#.to_owned(),
        r#"{"method":"disconnect","params":{"user":"bob","code":3000}}"#.to_owned(),
        r#"{"method":"presence","params":{"room":"lobby"}}"#.to_owned(),
        bob_in("unsubscribe"),
        publish(3),
    ];
    let body = format!(r#"{{"commands":[{}]}}"#, commands.join(","));
    let got = api.ok("batch", &body);
    assert_eq!(keys(&got), ["replies"], "{got:?}");
    let replies = array_at(&got, &["replies"]);
    assert_eq!(replies.len(), commands.len(), "{got:?}");
    let seq = |n: u64| {
        json(&format!(
            r#"{{"result":{{"results":[{{"room":"lobby","seq":{n}}}]}}}}"#
        ))
    };
    let one_connection = json(r#"{"result":{"connections":1}}"#);
    assert_eq!(replies[0], seq(1));
    assert_eq!(replies[1], one_connection);
    assert_eq!(replies[2], seq(2));
    for (i, code) in [(3, "NOT_FOUND"), (4, "VALIDATION_ERROR")] {
        assert_eq!(keys(&replies[i]), ["error"], "{got:?}");
        assert_eq!(keys(&replies[i]["error"]), sorted(&["code", "message"]));
        assert_eq!(str_at(&replies[i], &["error", "code"]), code, "{got:?}");
    }
    assert_eq!(keys(&replies[5]), ["result"], "{got:?}");
    assert_eq!(
        u64_of(&replies[5]["result"], "count"),
        2,
        "alice and bob: {got:?}"
    );
    assert_eq!(replies[6], one_connection);
    assert_eq!(replies[7], seq(3));

    for n in 1..=3 {
        assert_room_event(&alice.recv(), "t:n", "lobby", &n.to_string(), "api", n);
    }
    let data = assert_subscribed(&bob.recv(), "lobby");
    assert_eq!(u64_of(&data, "seq"), 1, "{data:?}");
    assert_room_event(&bob.recv(), "t:n", "lobby", "2", "api", 2);
    assert_unsubscribed(&bob.recv(), "lobby");
    bob.assert_open();
    bob.assert_quiet(QUIET);
}

#[test]
fn batch_takes_a_hundred_commands() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let one = r#"{"method":"publish","params":{"room":"lobby","event":"t:n","data":0}}"#;
    let body = format!(r#"{{"commands":[{}]}}"#, vec![one; 100].join(","));
    let got = api.ok("batch", &body);
    let replies = array_at(&got, &["replies"]);
    assert_eq!(replies.len(), 100);
    for (i, reply) in replies.iter().enumerate() {
        let expected = format!(
            r#"{{"result":{{"results":[{{"room":"lobby","seq":{}}}]}}}}"#,
            i + 1
        );
        assert_eq!(reply, &json(&expected));
    }
    for n in 1..=100 {
        assert_room_event(&alice.recv(), "t:n", "lobby", "0", "api", n);
    }
}
