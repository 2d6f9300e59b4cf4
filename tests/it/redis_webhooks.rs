//! The webhook stream of a cluster (section 13.1, docs/redis.md): with a
//! node's flags, the Redis Functions add each transition they make (a
//! room's first and last member, a user's first and last connection in a
//! room or in the cluster, a matching room's message) to the server's
//! stream in the same atomic call, on a real `redis-server`; without
//! them, nothing.

use crate::common;
use crate::redis_function::loaded;

use std::time::Duration;

use common::redis::RedisConn;
use roomcast::config::HistoryConfig;
use roomcast::hooks::webhook::{EventType, Types};
use roomcast::redis as bridge;
use roomcast::redis::layout::{self, RoomKeys};
use roomcast::redis::resp::Reply;
use roomcast::redis::{NodeUser, PresenceChange, SyncRules, WebhookFlags};

const KEEP: HistoryConfig = HistoryConfig {
    messages: 10,
    ttl: Duration::from_secs(60),
};

fn all_but_messages() -> WebhookFlags {
    let types: Vec<EventType> = EventType::ALL
        .into_iter()
        .filter(|t| *t != EventType::RoomMessage)
        .collect();
    WebhookFlags {
        types: Types::of(&types),
        queue: 1000,
    }
}

fn change(node: &str, user: &str) -> PresenceChange {
    PresenceChange {
        node: node.into(),
        user: user.into(),
        name: None,
        rejoin: false,
        announce: true,
        event_limit: 100,
        origin: format!("{node}/1/-"),
        text: Vec::new(),
    }
}

fn run(conn: &mut RedisConn, out: &[u8]) -> Reply {
    conn.send_raw(out);
    let reply = conn.reply();
    assert!(!matches!(reply, Reply::Error(_)), "{reply:?}");
    reply
}

/// Rooms named `quiet*` do not announce presence.
fn announcing(room: &str, mut who: PresenceChange) -> PresenceChange {
    who.announce = !room.starts_with("quiet");
    who
}

fn join(conn: &mut RedisConn, room: &str, node: &str, user: &str, hooks: WebhookFlags) {
    let keys = RoomKeys::new("rc", room);
    let mut out = Vec::new();
    let query = Default::default();
    let who = announcing(room, change(node, user));
    bridge::join(&mut out, &keys, query, "e", KEEP, &who, hooks.at(room));
    run(conn, &out);
}

fn leave(conn: &mut RedisConn, room: &str, node: &str, user: &str, hooks: WebhookFlags) {
    let keys = RoomKeys::new("rc", room);
    let mut out = Vec::new();
    let who = announcing(room, change(node, user));
    bridge::leave(&mut out, &keys, &who, 60_000, hooks.at(room));
    run(conn, &out);
}

fn online(conn: &mut RedisConn, node: &str, user: &str, n: i64, hooks: WebhookFlags) {
    let keys = RoomKeys::new("rc", bridge::ONLINE);
    let mut out = Vec::new();
    bridge::count(&mut out, &keys, &change(node, user), n, hooks);
    run(conn, &out);
}

fn publish(conn: &mut RedisConn, room: &str, hooks: WebhookFlags) {
    publish_run(conn, room, hooks, &[1]);
}

/// One call with a message of each `data`, as a node sends a room's
/// publishes taken together.
fn publish_run(conn: &mut RedisConn, room: &str, hooks: WebhookFlags, data: &[u32]) {
    let keys = RoomKeys::new("rc", room);
    let messages: Vec<_> = data
        .iter()
        .map(|d| bridge::Unsequenced {
            head: format!(r#"{{"event":"chat:msg","room":"{room}","data":{d},"from":"u1","seq":"#)
                .into_bytes(),
            tail: br#","ts":7}"#.to_vec(),
            origin: "a/1/-".into(),
        })
        .collect();
    let mut out = Vec::new();
    bridge::publish(&mut out, &keys, &messages, "e", KEEP, hooks.at(room));
    run(conn, &out);
}

/// The stream's entries as `type room user` lines (`-` for none), and
/// the ids, in order.
fn recorded(conn: &mut RedisConn) -> (Vec<String>, Vec<String>) {
    let reply = conn.call(&["XRANGE", &layout::webhooks("rc"), "-", "+"]);
    let Reply::Array(entries) = reply else {
        panic!("{reply:?}")
    };
    let mut lines = Vec::new();
    let mut ids = Vec::new();
    for entry in entries {
        let Reply::Array(parts) = entry else { panic!() };
        ids.push(String::from_utf8(parts[0].as_bytes().unwrap().to_vec()).unwrap());
        let Reply::Array(fields) = &parts[1] else {
            panic!()
        };
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|kv| kv[0].as_bytes() == Some(name.as_bytes()))
                .map(|kv| String::from_utf8(kv[1].as_bytes().unwrap().to_vec()).unwrap())
                .unwrap_or_else(|| "-".into())
        };
        lines.push(format!(
            "{} {} {}",
            field("type"),
            field("room"),
            field("user")
        ));
        if field("type") == "room.message" {
            lines.push(field("m"));
        }
    }
    (lines, ids)
}

#[test]
fn a_rooms_first_and_last_member_and_a_users_first_and_last_connection_are_recorded_once() {
    let (_redis, mut conn) = loaded();
    let on = all_but_messages();
    join(&mut conn, "lobby", "a", "u1", on);
    join(&mut conn, "lobby", "b", "u1", on);
    join(&mut conn, "lobby", "b", "u2", on);
    leave(&mut conn, "lobby", "a", "u1", on);
    leave(&mut conn, "lobby", "b", "u1", on);
    leave(&mut conn, "lobby", "b", "u2", on);
    join(&mut conn, "lobby", "a", "u3", on);
    // Presence only where the room announces it, as on one server.
    join(&mut conn, "quiet", "a", "u1", on);
    leave(&mut conn, "quiet", "a", "u1", on);
    online(&mut conn, "a", "u1", 1, on);
    online(&mut conn, "b", "u1", 1, on);
    online(&mut conn, "a", "u1", -1, on);
    online(&mut conn, "b", "u1", -1, on);
    let (lines, ids) = recorded(&mut conn);
    assert_eq!(
        lines,
        [
            "room.occupied lobby -",
            "presence.join lobby u1",
            "presence.join lobby u2",
            "presence.leave lobby u1",
            "presence.leave lobby u2",
            "room.vacated lobby -",
            "room.occupied lobby -",
            "presence.join lobby u3",
            "room.occupied quiet -",
            "room.vacated quiet -",
            "user.online - u1",
            "user.offline - u1",
        ]
    );
    // The ids carry the Redis time (unix ms) and keep the order.
    let ms: u64 = ids[0].split('-').next().unwrap().parse().unwrap();
    assert!(ms > 1_700_000_000_000, "{}", ids[0]);
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        let (a, b) = id.split_once('-').unwrap();
        (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap())
    });
    assert_eq!(ids, sorted);
}

#[test]
fn only_the_types_asked_for_and_nothing_without_the_flags() {
    let (_redis, mut conn) = loaded();
    join(&mut conn, "lobby", "a", "u1", WebhookFlags::default());
    online(&mut conn, "a", "u1", 1, WebhookFlags::default());
    publish(&mut conn, "lobby", WebhookFlags::default());
    leave(&mut conn, "lobby", "a", "u1", WebhookFlags::default());
    let exists = conn.call(&["EXISTS", &layout::webhooks("rc")]);
    assert_eq!(exists, Reply::Integer(0), "webhooks off: no stream");
    let vacates = WebhookFlags {
        types: Types::of(&[EventType::RoomVacated, EventType::UserOffline]),
        queue: 1000,
    };
    join(&mut conn, "lobby", "a", "u1", vacates);
    leave(&mut conn, "lobby", "a", "u1", vacates);
    online(&mut conn, "a", "u1", -1, vacates);
    assert_eq!(
        recorded(&mut conn).0,
        ["room.vacated lobby -", "user.offline - u1"]
    );
}

#[test]
fn a_message_is_recorded_as_sequenced_when_the_node_asks() {
    let (_redis, mut conn) = loaded();
    let messages = WebhookFlags {
        types: Types::of(&[EventType::RoomMessage]),
        queue: 1000,
    };
    publish(&mut conn, "chat:1", messages);
    publish(&mut conn, "other", WebhookFlags::default());
    publish(&mut conn, "chat:1", messages);
    publish_run(&mut conn, "other", WebhookFlags::default(), &[2, 3]);
    // Each message of a batch, in order.
    publish_run(&mut conn, "chat:1", messages, &[2, 3]);
    assert_eq!(
        recorded(&mut conn).0,
        [
            "room.message chat:1 -",
            r#"{"event":"chat:msg","room":"chat:1","data":1,"from":"u1","seq":1,"ts":7}"#,
            "room.message chat:1 -",
            r#"{"event":"chat:msg","room":"chat:1","data":1,"from":"u1","seq":2,"ts":7}"#,
            "room.message chat:1 -",
            r#"{"event":"chat:msg","room":"chat:1","data":2,"from":"u1","seq":3,"ts":7}"#,
            "room.message chat:1 -",
            r#"{"event":"chat:msg","room":"chat:1","data":3,"from":"u1","seq":4,"ts":7}"#,
        ]
    );
}

#[test]
fn a_sync_records_what_it_changes_and_a_dead_nodes_removal_vacates() {
    let (_redis, mut conn) = loaded();
    let on = all_but_messages();
    let keys = RoomKeys::new("rc", "lobby");
    let rules = SyncRules {
        announce: true,
        event_limit: 100,
        ttl_ms: 60_000,
        hooks: on,
    };
    let user = |name: &str| NodeUser {
        user: name.into(),
        connections: 1,
        name: None,
    };
    let mut out = Vec::new();
    bridge::sync(&mut out, &keys, "lobby", "a", rules, &[user("v1")]);
    run(&mut conn, &out);
    // The same again changes nothing.
    run(&mut conn, &out);
    join(&mut conn, "lobby", "b", "v1", on);
    let mut out = Vec::new();
    bridge::sync(&mut out, &keys, "lobby", "a", rules, &[user("v2")]);
    run(&mut conn, &out);
    leave(&mut conn, "lobby", "b", "v1", on);
    // Node a died: everything of it goes.
    let mut out = Vec::new();
    bridge::sync(&mut out, &keys, "lobby", "a", rules, &[]);
    run(&mut conn, &out);
    assert_eq!(
        recorded(&mut conn).0,
        [
            "room.occupied lobby -",
            "presence.join lobby v1",
            "presence.join lobby v2",
            "presence.leave lobby v1",
            "presence.leave lobby v2",
            "room.vacated lobby -",
        ]
    );
}

#[test]
fn the_stream_is_bounded() {
    let (_redis, mut conn) = loaded();
    let on = WebhookFlags {
        types: all_but_messages().types,
        queue: 10,
    };
    for i in 0..500 {
        online(&mut conn, "a", &format!("u{i}"), 1, on);
    }
    let len = conn
        .call(&["XLEN", &layout::webhooks("rc")])
        .as_i64()
        .unwrap();
    assert!((10..=200).contains(&len), "{len}");
}
