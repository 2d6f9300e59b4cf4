//! Presence (PROTOCOL.md sections 6 and 7): `presence:join` once per user,
//! `presence:leave` after the user's last connection, abrupt disconnects,
//! no event about oneself, `presence:get`, `--presence-event-limit` and
//! `--presence-rooms`.

use crate::common;

use std::time::Duration;

use simd_json::OwnedValue;
use simd_json::prelude::*;

use common::Server;
use common::rooms::{Claims, Client, ack_error, array_at, keys, ok_data, sorted, str_at, u64_at};

const QUIET: Duration = Duration::from_millis(400);

fn named(server: &Server, sub: &str, name: &str) -> Client {
    Client::connect(server.addr(), &Claims::new(sub).name(name).token())
}

/// Asserts `v` is `{"event":"presence:join","room":room,"data":{"userId","name"}}`.
fn assert_presence_join(v: &OwnedValue, room: &str, user: &str, name: Option<&str>) {
    assert_eq!(keys(v), sorted(&["event", "room", "data"]), "{v:?}");
    assert_eq!(str_at(v, &["event"]), "presence:join", "{v:?}");
    assert_eq!(str_at(v, &["room"]), room, "{v:?}");
    let data = v.get("data").unwrap();
    assert_eq!(keys(data), sorted(&["userId", "name"]), "{v:?}");
    assert_eq!(str_at(data, &["userId"]), user, "{v:?}");
    match name {
        Some(n) => assert_eq!(str_at(data, &["name"]), n, "{v:?}"),
        None => assert!(data.get("name").unwrap().is_null(), "name not null: {v:?}"),
    }
}

/// Asserts `v` is `{"event":"presence:leave","room":room,"data":{"userId"}}`.
fn assert_presence_leave(v: &OwnedValue, room: &str, user: &str) {
    assert_eq!(keys(v), sorted(&["event", "room", "data"]), "{v:?}");
    assert_eq!(str_at(v, &["event"]), "presence:leave", "{v:?}");
    assert_eq!(str_at(v, &["room"]), room, "{v:?}");
    let data = v.get("data").unwrap();
    assert_eq!(keys(data), ["userId"], "{v:?}");
    assert_eq!(str_at(data, &["userId"]), user, "{v:?}");
}

#[test]
fn two_connections_of_one_user_make_one_join_and_one_leave() {
    let server = Server::start(&[]);
    let mut observer = Client::user(server.addr(), "observer");
    observer.join("room");
    let mut u1 = named(&server, "ursula", "Ursula K.");
    let mut u2 = named(&server, "ursula", "Ursula K.");
    u1.join("room");
    assert_presence_join(&observer.recv_json(), "room", "ursula", Some("Ursula K."));
    u2.join("room");
    observer.assert_quiet(QUIET);
    u1.leave("room");
    observer.assert_quiet(QUIET);
    u2.leave("room");
    assert_presence_leave(&observer.recv_json(), "room", "ursula");
    observer.assert_quiet(QUIET);
}

#[test]
fn the_joiner_gets_no_presence_event() {
    let server = Server::start(&[]);
    let mut observer = Client::user(server.addr(), "observer");
    observer.join("room");
    let mut u1 = Client::user(server.addr(), "u");
    let mut u2 = Client::user(server.addr(), "u");
    u1.join("room");
    u1.assert_quiet(QUIET);
    // A second connection of the same user gets nothing either, nor does the first.
    u2.join("room");
    u2.assert_quiet(QUIET);
    u1.assert_quiet(Duration::from_millis(50));
    assert_presence_join(&observer.recv_json(), "room", "u", None);
}

#[test]
fn name_is_null_when_the_token_has_none() {
    let server = Server::start(&[]);
    let mut observer = Client::user(server.addr(), "observer");
    observer.join("room");
    let mut anon = Client::user(server.addr(), "anon");
    anon.join("room");
    assert_presence_join(&observer.recv_json(), "room", "anon", None);
}

#[test]
fn disconnecting_without_leaving_sends_presence_leave() {
    let server = Server::start(&[]);
    let mut observer = Client::user(server.addr(), "observer");
    observer.join("room");
    let mut u = Client::user(server.addr(), "u");
    u.join("room");
    u.join("room2");
    observer.join("room2");
    assert_presence_join(&observer.recv_json(), "room", "u", None);
    // Killed socket (TCP reset), no close handshake.
    common::reset(u.ws.into_inner());
    let mut left: Vec<String> = (0..2)
        .map(|_| {
            let v = observer.recv_json();
            assert_eq!(str_at(&v, &["event"]), "presence:leave", "{v:?}");
            assert_eq!(str_at(&v, &["data", "userId"]), "u");
            str_at(&v, &["room"]).to_owned()
        })
        .collect();
    left.sort();
    assert_eq!(left, ["room", "room2"]);
}

#[test]
fn closing_cleanly_sends_presence_leave_after_the_last_connection() {
    let server = Server::start(&[]);
    let mut observer = Client::user(server.addr(), "observer");
    observer.join("room");
    let mut u1 = Client::user(server.addr(), "u");
    let mut u2 = Client::user(server.addr(), "u");
    u1.join("room");
    u2.join("room");
    assert_presence_join(&observer.recv_json(), "room", "u", None);
    u1.ws.close(None).unwrap();
    let _ = u1.ws.flush();
    drop(u1);
    observer.assert_quiet(QUIET);
    common::reset(u2.ws.into_inner());
    assert_presence_leave(&observer.recv_json(), "room", "u");
}

fn user_entry<'a>(data: &'a OwnedValue, user: &str) -> &'a OwnedValue {
    array_at(data, &["users"])
        .iter()
        .find(|u| u.get("userId").and_then(|v| v.as_str()) == Some(user))
        .unwrap_or_else(|| panic!("{user} not in {data:?}"))
}

#[test]
fn presence_get_counts_distinct_users_and_their_connections() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut o = Client::user(addr, "observer");
    let mut u1 = named(&server, "ursula", "Ursula");
    let mut u2 = named(&server, "ursula", "Ursula");
    let mut v = Client::user(addr, "victor");
    for c in [&mut o, &mut u1, &mut u2, &mut v] {
        c.join("room");
    }
    let ack = o.request("presence:get", r#"{"room":"room"}"#, "");
    let data = ok_data(&ack);
    assert_eq!(str_at(data, &["room"]), "room");
    assert_eq!(u64_at(data, &["count"]), 3, "{data:?}");
    assert_eq!(array_at(data, &["users"]).len(), 3, "{data:?}");
    assert!(
        data.get("truncated")
            .is_none_or(|t| t.as_bool() == Some(false)),
        "{data:?}"
    );
    for u in array_at(data, &["users"]) {
        assert_eq!(keys(u), sorted(&["userId", "name", "connections"]), "{u:?}");
    }
    let ursula = user_entry(data, "ursula");
    assert_eq!(str_at(ursula, &["name"]), "Ursula");
    assert_eq!(u64_at(ursula, &["connections"]), 2);
    let victor = user_entry(data, "victor");
    assert!(victor.get("name").unwrap().is_null(), "{victor:?}");
    assert_eq!(u64_at(victor, &["connections"]), 1);
    assert_eq!(u64_at(user_entry(data, "observer"), &["connections"]), 1);
}

#[test]
fn presence_get_is_for_members_and_users_who_may_join() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut member = Client::user(addr, "member");
    member.join("room");
    let mut may = Client::connect(addr, &Claims::new("may").rooms(&["room"]).token());
    let ack = may.request("presence:get", r#"{"room":"room"}"#, "");
    assert_eq!(u64_at(ok_data(&ack), &["count"]), 1);
    let mut may_not = Client::connect(addr, &Claims::new("nope").rooms(&["other"]).token());
    let ack = may_not.request("presence:get", r#"{"room":"room"}"#, "");
    assert_eq!(ack_error(&ack), "FORBIDDEN");
    // `pub` lets one publish, not look at who is there.
    let mut feed = Client::connect(
        addr,
        &Claims::new("feed").rooms(&[]).publish(&["room"]).token(),
    );
    let ack = feed.request("presence:get", r#"{"room":"room"}"#, "");
    assert_eq!(ack_error(&ack), "FORBIDDEN");
    // An empty room: count 0, no users.
    let mut any = Client::user(addr, "any");
    let ack = any.request("presence:get", r#"{"room":"empty"}"#, "");
    let data = ok_data(&ack);
    assert_eq!(u64_at(data, &["count"]), 0);
    assert!(array_at(data, &["users"]).is_empty());
}

#[test]
fn presence_event_limit_counts_after_a_join_and_before_a_leave() {
    let server = Server::start(&["--presence-event-limit", "2"]);
    let addr = server.addr();
    let mut o = Client::user(addr, "observer");
    o.join("room");
    let mut a = Client::user(addr, "a");
    a.join("room"); // 2 connections after the join: announced
    assert_presence_join(&o.recv_json(), "room", "a", None);
    let mut b = Client::user(addr, "b");
    b.join("room"); // 3 > 2: silent
    o.assert_quiet(QUIET);
    a.assert_quiet(Duration::from_millis(50));
    b.leave("room"); // 3 before the leave: silent
    o.assert_quiet(QUIET);
    a.leave("room"); // 2 before the leave: announced
    assert_presence_leave(&o.recv_json(), "room", "a");
    // presence:get still answers in a room over the limit.
    let mut c = Client::user(addr, "c");
    let mut d = Client::user(addr, "d");
    c.join("room");
    d.join("room");
    let ack = o.request("presence:get", r#"{"room":"room"}"#, "");
    let data = ok_data(&ack);
    assert_eq!(u64_at(data, &["count"]), 3, "{data:?}");
}

#[test]
fn presence_rooms_limits_which_rooms_announce() {
    let server = Server::start(&["--presence-rooms", "chat:*,lobby"]);
    let addr = server.addr();
    let mut o = Client::user(addr, "observer");
    for room in ["chat:x", "lobby", "quiet"] {
        o.join(room);
    }
    let mut u = Client::user(addr, "u");
    u.join("quiet");
    o.assert_quiet(QUIET);
    u.join("chat:x");
    assert_presence_join(&o.recv_json(), "chat:x", "u", None);
    u.join("lobby");
    assert_presence_join(&o.recv_json(), "lobby", "u", None);
    u.leave("quiet");
    o.assert_quiet(QUIET);
    // presence:get answers in rooms without events too.
    let ack = o.request("presence:get", r#"{"room":"quiet"}"#, "");
    assert_eq!(u64_at(ok_data(&ack), &["count"]), 1);
}
