//! Webhooks in a cluster (section 13.1): two real nodes on a real
//! `redis-server`, clients on both, and the signature-checking backend of
//! `webhooks`. Each event is sent once, by one node; a room's events come
//! in the order they happened whichever node its members came through;
//! and a room re-occupied through the other node within the vacate delay
//! sends neither `room.vacated` nor a second `room.occupied`.

use std::time::Duration;

use simd_json::prelude::*;

use crate::common;
use crate::webhooks::{CHAT_FLAGS, HOOK_SECRET, Hooks, WAIT, assert_only_the_last_leave_vacates};
use common::redis::{RedisServer, node};
use common::rooms::Client;
use common::{Server, metric, wait_until};

fn hooked_node(redis: &RedisServer, id: &str, hooks: &Hooks, extra: &[&str]) -> Server {
    hooked_node_on(&[redis], id, hooks, extra)
}

fn hooked_node_on(redis: &[&RedisServer], id: &str, hooks: &Hooks, extra: &[&str]) -> Server {
    let url = hooks.url();
    let mut args = vec![
        "--node-id",
        id,
        "--hook-secret",
        HOOK_SECRET,
        "--webhook",
        url.as_str(),
    ];
    args.extend_from_slice(extra);
    node(redis, &args)
}

/// The lines of `summary` about `subject` (a room or a user).
fn about(summary: &[String], subject: &str) -> Vec<String> {
    summary
        .iter()
        .filter(|line| line.split(' ').nth(1) == Some(subject))
        .cloned()
        .collect()
}

#[test]
fn each_event_is_sent_once_by_one_node_in_the_order_it_happened() {
    let redis = RedisServer::start();
    let hooks = Hooks::always_ok();
    let a = hooked_node(&redis, "wh-a", &hooks, &CHAT_FLAGS);
    let b = hooked_node(&redis, "wh-b", &hooks, &CHAT_FLAGS);
    let mut alice = Client::user(a.addr(), "alice");
    let mut bob = Client::user(b.addr(), "bob");
    alice.join("chat:1");
    bob.join("chat:1");
    bob.publish_ok("chat:1", "chat:say", r#"{"text":"hi"}"#);
    alice.join("quiet");
    alice.leave("chat:1");
    // A leave is acknowledged before Redis counts it, and the two nodes'
    // leaves race there: bob leaves once alice's leave was recorded (the
    // eighth event), so the order below is the one that happened.
    hooks.wait_for("alice's leave", 8);
    bob.leave("chat:1");
    drop(alice);
    drop(bob);
    hooks.wait_for("every event", 13);
    // Nothing more comes: no node sends an event twice.
    std::thread::sleep(Duration::from_millis(1500));
    let summary = hooks.summary();
    assert_eq!(summary.len(), 13, "{summary:?}");
    assert_eq!(
        about(&summary, "chat:1"),
        [
            "room.occupied chat:1",
            "presence.join chat:1 alice",
            "presence.join chat:1 bob",
            "room.message chat:1",
            "presence.leave chat:1 alice",
            "presence.leave chat:1 bob",
            "room.vacated chat:1",
        ]
    );
    assert_eq!(
        about(&summary, "quiet"),
        ["room.occupied quiet", "room.vacated quiet"]
    );
    for user in ["alice", "bob"] {
        assert_eq!(
            about(&summary, user),
            [
                format!("user.online {user}"),
                format!("user.offline {user}")
            ]
        );
    }
    let message = hooks
        .events()
        .into_iter()
        .find(|e| e["type"].as_str() == Some("room.message"))
        .unwrap();
    assert_eq!(common::json_str(&message, &["from"]), Some("bob"));
    assert_eq!(common::json_str(&message, &["data", "text"]), Some("hi"));
    // One node sent them all: the live node with the smallest id.
    let delivered = |server: &Server| metric(server.addr(), "roomcast_webhook_delivered_total");
    assert_eq!((delivered(&a), delivered(&b)), (13.0, 0.0));
}

#[test]
fn a_quick_rejoin_through_the_other_node_sends_neither_vacated_nor_occupied() {
    let redis = RedisServer::start();
    let hooks = Hooks::always_ok();
    let flags = [
        "--webhook-vacate-delay",
        "2s",
        "--webhook-events",
        "room.occupied,room.vacated,user.online,user.offline",
    ];
    let a = hooked_node(&redis, "wh-a", &hooks, &flags);
    let b = hooked_node(&redis, "wh-b", &hooks, &flags);
    let mut on_a = Client::user(a.addr(), "carol");
    on_a.join("r");
    hooks.wait_for("the occupy", 2);
    on_a.leave("r");
    drop(on_a);
    let mut on_b = Client::user(b.addr(), "carol");
    on_b.join("r");
    // Past the delay the vacate and the offline were cancelled.
    assert_only_the_last_leave_vacates(&hooks, on_b);
    wait_until(WAIT, "the cursor is kept", || {
        let mut conn = redis.connect();
        let cursor = conn.call(&["GET", "roomcast:webhooks:cursor:0"]);
        let last = conn.call(&["XREVRANGE", "roomcast:webhooks", "+", "-", "COUNT", "1"]);
        let roomcast::redis::resp::Reply::Array(last) = last else {
            return false;
        };
        let roomcast::redis::resp::Reply::Array(entry) = &last[0] else {
            return false;
        };
        cursor.as_bytes().is_some() && cursor.as_bytes() == entry[0].as_bytes()
    });
}

#[test]
fn a_node_taking_over_sends_what_the_backend_had_not_acknowledged() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let redis = RedisServer::start();
    let up = Arc::new(AtomicBool::new(false));
    let backend_up = up.clone();
    let hooks = Hooks::start(move |_| {
        if backend_up.load(Ordering::SeqCst) {
            200
        } else {
            500
        }
    });
    let flags = ["--webhook-events", "room.occupied,user.online"];
    let mut a = hooked_node(&redis, "wh-a", &hooks, &flags);
    let b = hooked_node(&redis, "wh-b", &hooks, &flags);
    let mut dave = Client::user(b.addr(), "dave");
    dave.join("r");
    // The sender (wh-a) tried and was refused; then it dies at once.
    wait_until(WAIT, "a refused batch", || {
        hooks.ids_answered(500).len() >= 2
    });
    a.signal(libc::SIGKILL);
    a.wait_exit(WAIT);
    up.store(true, Ordering::SeqCst);
    // Once wh-a's heartbeat is stale, wh-b reads from the kept cursor.
    wait_until(Duration::from_secs(40), "wh-b sends", || {
        hooks.events().len() >= 2
    });
    assert_eq!(hooks.summary(), ["user.online dave", "room.occupied r"]);
    assert_eq!(metric(b.addr(), "roomcast_webhook_delivered_total"), 2.0);
    // Sent again under the ids they first had: a backend can tell.
    let ids = hooks.ids_answered(200);
    assert_eq!(ids, hooks.ids_answered(500));
    assert!(ids.iter().all(|id| id.starts_with("r0-")), "{ids:?}");
}

#[test]
fn rooms_on_two_redis_servers_are_read_from_both_each_in_order() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let hooks = Hooks::always_ok();
    let flags = [
        "--webhook-events",
        "room.occupied,room.vacated",
        "--webhook-vacate-delay",
        "100ms",
    ];
    let a = hooked_node_on(&[&r1, &r2], "wh-a", &hooks, &flags);
    let b = hooked_node_on(&[&r1, &r2], "wh-b", &hooks, &flags);
    let rooms: Vec<String> = (0..8).map(|i| format!("room{i}")).collect();
    let servers: std::collections::HashSet<usize> = rooms
        .iter()
        .map(|r| roomcast::redis::layout::server_of(r, 2))
        .collect();
    assert_eq!(servers.len(), 2, "the rooms are on both servers");
    let mut on_a = Client::user(a.addr(), "erin");
    let mut on_b = Client::user(b.addr(), "frank");
    for room in &rooms {
        on_a.join(room);
        on_b.join(room);
        on_a.leave(room);
        on_b.leave(room);
    }
    hooks.wait_for("every room occupied and vacated", 16);
    std::thread::sleep(Duration::from_millis(500));
    let summary = hooks.summary();
    assert_eq!(summary.len(), 16, "{summary:?}");
    for room in &rooms {
        assert_eq!(
            about(&summary, room),
            [
                format!("room.occupied {room}"),
                format!("room.vacated {room}")
            ]
        );
    }
    let ids = hooks.ids_answered(200);
    for server in ["r0-", "r1-"] {
        assert!(ids.iter().any(|id| id.starts_with(server)), "{ids:?}");
    }
    // Both stop gracefully, the sender and the other.
    drop((on_a, on_b));
    for mut node in [a, b] {
        node.terminate();
        assert!(node.wait_exit(WAIT).success());
    }
}
