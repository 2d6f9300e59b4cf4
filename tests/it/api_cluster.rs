//! The server API in a cluster (PROTOCOL.md sections 10 and 12): two real
//! `roomcast` nodes sharing a real `redis-server`, the API called on one
//! node acting on WebSocket clients of the other, counts and listings
//! summed over both, and `missingNodes` when a node is stopped (SIGSTOP,
//! always followed by SIGCONT).

use crate::common;

use std::time::{Duration, Instant};

use simd_json::OwnedValue;
use simd_json::prelude::*;

use common::api::{
    API_KEY, Api, assert_subscribed, assert_unsubscribed, each_sorted, expect_marker, member,
    result_of, u64_of, user_conn, user_connections,
};
use common::redis::{RedisServer, node};
use common::rooms::{array_at, assert_room_event, publisher, q, str_at};
use common::{Server, parse_json, wait_until};

const QUIET: Duration = Duration::from_millis(300);
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// How late past `--api-timeout` a reply may come on a loaded machine.
const SLACK: Duration = Duration::from_millis(400);

/// Two nodes, `node-a` and `node-b`, on one Redis, each given the API key
/// and `extra`, once each lists both in `info`.
fn cluster(extra: &[&str]) -> (RedisServer, Server, Server) {
    let redis = RedisServer::start();
    let start = |id: &str| {
        let mut args = vec!["--api-key", API_KEY, "--node-id", id];
        args.extend(["--presence-rooms", "pres:*"]);
        args.extend_from_slice(extra);
        node(&[&redis], &args)
    };
    let (a, b) = (start("node-a"), start("node-b"));
    for server in [&a, &b] {
        common::api::wait_info_nodes(server.addr(), &["node-a", "node-b"]);
    }
    (redis, a, b)
}

fn json(text: &str) -> OwnedValue {
    parse_json(text)
}

/// Sends SIGCONT to a stopped node when dropped, also when the test fails.
struct Stopped(u32);

impl Stopped {
    /// Stops `server` and returns once every one of its threads is
    /// stopped: a signal is delivered asynchronously, and a thread running
    /// on another core would otherwise still answer for a moment.
    fn stop(server: &Server) -> Stopped {
        server.signal(libc::SIGSTOP);
        let tasks = format!("/proc/{}/task", server.pid());
        let stopped = || {
            std::fs::read_dir(&tasks).unwrap().all(|task| {
                let stat = std::fs::read_to_string(task.unwrap().path().join("stat"));
                // The state follows the parenthesized name: "pid (comm) T ...".
                stat.is_ok_and(|s| {
                    s.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T'))
                })
            })
        };
        wait_until(Duration::from_secs(5), "every thread stopped", stopped);
        Stopped(server.pid())
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = roomcast::sys::signal(self.0, libc::SIGCONT);
    }
}

#[test]
fn disconnect_on_one_node_closes_the_users_connections_on_both() {
    let (_redis, a, b) = cluster(&[]);
    let mut on_a = member(a.addr(), "bob", &[]);
    let mut on_b = member(b.addr(), "bob", &[]);
    let mut alice = member(b.addr(), "alice", &[]);
    let body = r#"{"user":"bob","code":4400,"reason":"maintenance"}"#;
    assert_eq!(Api::key(a.addr()).connections("disconnect", body), 2);
    for bob in [&mut on_a, &mut on_b] {
        assert_eq!(bob.close_frame(CLOSE_WAIT), (4400, "maintenance".into()));
    }
    alice.assert_open();

    // One connection of the other node by its id, with the defaults.
    let mut kept = member(a.addr(), "bob", &[]);
    let mut gone = member(b.addr(), "bob", &[]);
    let body = format!(r#"{{"user":"bob","connId":{}}}"#, q(&gone.conn_id()));
    assert_eq!(Api::key(a.addr()).connections("disconnect", &body), 1);
    assert_eq!(gone.close_frame(CLOSE_WAIT), (4500, "disconnected".into()));
    kept.assert_open();
    alice.assert_open();
}

#[test]
fn a_disconnect_after_a_publish_closes_the_other_nodes_members_after_the_message() {
    let (_redis, a, b) = cluster(&[]);
    let mut bobs: Vec<_> = (0..5).map(|_| member(b.addr(), "bob", &["r"])).collect();
    let body = r#"{"commands":[
        {"method":"publish","params":{"room":"r","event":"last:words","data":"bye"}},
        {"method":"disconnect","params":{"user":"bob"}}]}"#;
    let result = Api::key(a.addr()).ok("batch", body);
    assert_eq!(
        result,
        json(
            r#"{"replies":[{"result":{"results":[{"room":"r","seq":1}]}},{"result":{"connections":5}}]}"#
        )
    );
    for bob in &mut bobs {
        let text = bob.try_recv(CLOSE_WAIT);
        let text = text.expect("the message published before the disconnect");
        assert_room_event(&text, "last:words", "r", r#""bye""#, "api", 1);
        assert_eq!(bob.close_frame(CLOSE_WAIT), (4500, "disconnected".into()));
    }
}

#[test]
fn subscribe_on_one_node_delivers_what_either_node_publishes_next() {
    let (_redis, a, b) = cluster(&[]);
    let mut alice = publisher(a.addr(), "alice");
    alice.join("news");
    assert_eq!(alice.publish_ok("news", "news:item", "1"), 1);
    let mut bobs = [member(b.addr(), "bob", &[]), member(a.addr(), "bob", &[])];
    let api_a = Api::key(a.addr());
    let body = r#"{"user":"bob","room":"news"}"#;
    assert_eq!(api_a.connections("subscribe", body), 2);
    for bob in &mut bobs {
        let data = assert_subscribed(&bob.recv(), "news");
        assert_eq!(u64_of(&data, "seq"), 1, "{data:?}");
    }
    assert_eq!(alice.publish_ok("news", "news:item", "2"), 2);
    assert_eq!(Api::key(b.addr()).publish("news", "news:item", "3"), 3);
    for bob in &mut bobs {
        assert_room_event(&bob.recv(), "news:item", "news", "2", "alice", 2);
        assert_room_event(&bob.recv(), "news:item", "news", "3", "api", 3);
    }
    // Counted again on both nodes, and told nothing.
    assert_eq!(Api::key(b.addr()).connections("subscribe", body), 2);
    api_a.mark("news", 4, "a second subscribe");
    for bob in &mut bobs {
        expect_marker(bob, "news", 4, "a second subscribe");
    }
    let presence = api_a.ok("presence", r#"{"room":"news"}"#);
    assert_eq!(u64_of(&presence, "count"), 2, "{presence:?}");
}

#[test]
fn unsubscribe_on_one_node_stops_delivery_on_the_other() {
    let (_redis, a, b) = cluster(&[]);
    let mut alice = publisher(a.addr(), "alice");
    alice.join("news");
    let mut bob = member(b.addr(), "bob", &["news", "side"]);
    let api_a = Api::key(a.addr());
    let body = r#"{"user":"bob","room":"news"}"#;
    assert_eq!(api_a.connections("unsubscribe", body), 1);
    assert_unsubscribed(&bob.recv(), "news");
    assert_eq!(alice.publish_ok("news", "news:item", "1"), 1);
    assert_eq!(Api::key(b.addr()).publish("news", "news:item", "2"), 2);
    assert_room_event(&alice.recv(), "news:item", "news", "2", "api", 2);
    api_a.assert_next_is_marker(&mut bob, "side", 1, "an unsubscribe from the other node");
    assert_eq!(api_a.connections("unsubscribe", body), 0);
}

#[test]
fn presence_announces_a_subscribe_from_the_other_node() {
    let (_redis, a, b) = cluster(&[]);
    let mut alice = member(a.addr(), "alice", &["pres:room"]);
    let mut bob = member(b.addr(), "bob", &[]);
    let body = r#"{"user":"bob","room":"pres:room"}"#;
    assert_eq!(Api::key(a.addr()).connections("subscribe", body), 1);
    assert_subscribed(&bob.recv(), "pres:room");
    assert_eq!(
        alice.recv_json(),
        json(r#"{"event":"presence:join","room":"pres:room","data":{"userId":"bob","name":null}}"#)
    );
    assert_eq!(Api::key(b.addr()).connections("unsubscribe", body), 1);
    assert_unsubscribed(&bob.recv(), "pres:room");
    assert_eq!(
        alice.recv_json(),
        json(r#"{"event":"presence:leave","room":"pres:room","data":{"userId":"bob"}}"#)
    );
}

#[test]
fn a_user_on_both_nodes_is_announced_once_on_subscribe_unsubscribe_and_disconnect() {
    let (_redis, a, b) = cluster(&[]);
    let mut alice = member(a.addr(), "alice", &["pres:room"]);
    let mut bobs = [member(a.addr(), "bob", &[]), member(b.addr(), "bob", &[])];
    let api = Api::key(b.addr());
    let room = r#"{"user":"bob","room":"pres:room"}"#;
    let join =
        r#"{"event":"presence:join","room":"pres:room","data":{"userId":"bob","name":null}}"#;
    let leave = r#"{"event":"presence:leave","room":"pres:room","data":{"userId":"bob"}}"#;
    let steps: [(&str, &str, u64); 4] = [
        ("subscribe", join, 2),
        ("unsubscribe", leave, 2),
        ("subscribe", join, 2),
        ("disconnect", leave, 2),
    ];
    for (n, (method, event, count)) in steps.into_iter().enumerate() {
        let body = if method == "disconnect" {
            r#"{"user":"bob"}"#
        } else {
            room
        };
        assert_eq!(api.connections(method, body), count, "{method}");
        assert_eq!(alice.recv_json(), json(event), "{method}");
        // One announcement per user, not per connection or node.
        let what = format!("{method} {n}");
        api.mark("pres:room", n as u64 + 1, &what);
        let text = alice.recv();
        assert!(text.contains("test:marker"), "after {what}: {text}");
    }
    for bob in &mut bobs {
        assert_eq!(bob.close_frame(CLOSE_WAIT).0, 4500);
    }
}

#[test]
fn concurrent_calls_on_both_nodes_each_get_their_own_answer() {
    const USERS: usize = 12;
    let (_redis, a, b) = cluster(&[]);
    let mut clients: Vec<_> = (0..USERS)
        .map(|i| member(b.addr(), &format!("user{i}"), &[]))
        .collect();
    let _on_a = member(a.addr(), "user0", &[]);
    let addrs = [a.addr(), b.addr()];
    let calls: Vec<_> = (0..USERS)
        .map(|i| {
            let api = Api::key(addrs[i % 2]);
            std::thread::spawn(move || {
                let body = format!(r#"{{"user":"user{i}","room":"room{i}"}}"#);
                api.ok("subscribe", &body)
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let expected = if i == 0 { 2 } else { 1 };
        let result = call.join().expect("a call");
        assert_eq!(
            result,
            json(&format!(r#"{{"connections":{expected}}}"#)),
            "user{i}"
        );
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_subscribed(&client.recv(), &format!("room{i}"));
        client.assert_quiet(Duration::from_millis(50));
    }
}

#[test]
fn user_lists_the_connections_of_both_nodes_with_their_node() {
    let (_redis, a, b) = cluster(&[]);
    let on_a = member(a.addr(), "alice", &["a", "b:1"]);
    let on_b = member(b.addr(), "alice", &["a"]);
    let _bob = member(b.addr(), "bob", &["b:2"]);
    for server in [&a, &b] {
        let got = Api::key(server.addr()).ok("user", r#"{"user":"alice"}"#);
        let expected = vec![
            user_conn("node-a", &on_a, &["a", "b:1"]),
            user_conn("node-b", &on_b, &["a"]),
        ];
        assert_eq!(user_connections(&got, "alice"), expected);
    }
}

#[test]
fn info_and_rooms_count_over_both_nodes() {
    let (_redis, a, b) = cluster(&[]);
    let _clients = [
        member(a.addr(), "alice", &["a", "b:1"]),
        member(b.addr(), "alice", &["a"]),
        member(b.addr(), "bob", &["b:2"]),
    ];
    for server in [&a, &b] {
        let api = Api::key(server.addr());
        let info = api.ok("info", "{}");
        let mut nodes = array_at(&info, &["nodes"]).clone();
        nodes.sort_by(|x, y| str_at(x, &["node"]).cmp(str_at(y, &["node"])));
        let counts: Vec<(String, u64, u64, u64)> = nodes
            .iter()
            .map(|n| {
                assert_eq!(str_at(n, &["version"]), env!("CARGO_PKG_VERSION"));
                let count = |k| u64_of(n, k);
                let name = str_at(n, &["node"]).to_owned();
                (name, count("connections"), count("users"), count("rooms"))
            })
            .collect();
        let expected = [("node-a", 1, 1, 2), ("node-b", 2, 2, 2)]
            .map(|(n, c, u, r)| (n.to_owned(), c, u, r))
            .to_vec();
        assert_eq!(counts, expected, "{info:?}");

        // alice is in "a" on both nodes: one distinct user, counted by Redis.
        let a_room = r#"{"room":"a","connections":2,"users":1}"#;
        let b1 = r#"{"room":"b:1","connections":1,"users":1}"#;
        let b2 = r#"{"room":"b:2","connections":1,"users":1}"#;
        let all = api.ok("rooms", "{}");
        assert_eq!(all, json(&format!(r#"{{"rooms":[{a_room},{b1},{b2}]}}"#)));
        let some = api.ok("rooms", r#"{"pattern":"b:*"}"#);
        assert_eq!(some, json(&format!(r#"{{"rooms":[{b1},{b2}]}}"#)));
    }
}

#[test]
fn presence_history_and_history_remove_answer_the_same_on_either_node() {
    let (_redis, a, b) = cluster(&[]);
    let mut alice = member(a.addr(), "alice", &["h"]);
    let _bob = member(b.addr(), "bob", &["h"]);
    let mut feed = publisher(b.addr(), "feed");
    for i in 1..=3 {
        feed.publish_ok("h", "t:x", &i.to_string());
    }
    let live: Vec<OwnedValue> = (0..3).map(|_| alice.recv_json()).collect();
    let (api_a, api_b) = (Api::key(a.addr()), Api::key(b.addr()));
    let presence = api_a.ok("presence", r#"{"room":"h"}"#);
    assert_eq!(u64_of(&presence, "count"), 2, "{presence:?}");
    assert_eq!(
        each_sorted(&api_b.ok("presence", r#"{"room":"h"}"#), "users", "userId"),
        each_sorted(&presence, "users", "userId")
    );
    let history = api_a.ok("history", r#"{"room":"h"}"#);
    assert_eq!(array_at(&history, &["messages"]), &live);
    assert_eq!(api_b.ok("history", r#"{"room":"h"}"#), history);
    let epoch = str_at(&history, &["epoch"]).to_owned();

    assert_eq!(api_b.ok("history_remove", r#"{"room":"h"}"#), json("{}"));
    for api in [&api_a, &api_b] {
        let after = api.ok("history", r#"{"room":"h"}"#);
        assert!(array_at(&after, &["messages"]).is_empty(), "{after:?}");
        assert_eq!(
            (u64_of(&after, "seq"), str_at(&after, &["epoch"])),
            (3, &*epoch)
        );
    }
    assert_eq!(api_a.publish("h", "t:x", "4"), 4, "the count goes on");
    assert_room_event(&alice.recv(), "t:x", "h", "4", "api", 4);
}

#[test]
fn a_broadcast_to_a_thousand_rooms_reaches_members_on_the_other_node() {
    let (_redis, a, b) = cluster(&[]);
    let mut first = member(b.addr(), "first", &["b0"]);
    let mut last = member(b.addr(), "last", &["b999"]);
    let rooms: Vec<String> = (0..1000).map(|i| q(&format!("b{i}"))).collect();
    let body = format!(
        r#"{{"rooms":[{}],"event":"t:x","data":0}}"#,
        rooms.join(",")
    );
    let started = Instant::now();
    let result = Api::key(a.addr()).ok("broadcast", &body);
    let took = started.elapsed();
    let list = array_at(&result, &["results"]);
    assert_eq!(list.len(), 1000);
    for (i, entry) in list.iter().enumerate() {
        assert_eq!(entry, &json(&format!(r#"{{"room":"b{i}","seq":1}}"#)));
    }
    assert!(
        took < Duration::from_secs(2),
        "a thousand rooms took {took:?}"
    );
    assert_room_event(&first.recv(), "t:x", "b0", "0", "api", 1);
    assert_room_event(&last.recv(), "t:x", "b999", "0", "api", 1);
}

#[test]
fn history_remove_forgets_a_room_without_members_on_any_node() {
    let (_redis, a, b) = cluster(&[]);
    let (api_a, api_b) = (Api::key(a.addr()), Api::key(b.addr()));
    for i in 1..=3 {
        api_a.publish("lonely", "t:x", &i.to_string());
    }
    let before = api_b.ok("history", r#"{"room":"lonely"}"#);
    assert_eq!(
        api_b.ok("history_remove", r#"{"room":"lonely"}"#),
        json("{}")
    );
    assert_eq!(
        api_a.publish("lonely", "t:x", "4"),
        1,
        "a new epoch at seq 1"
    );
    for api in [&api_a, &api_b] {
        let after = api.ok("history", r#"{"room":"lonely"}"#);
        assert_ne!(str_at(&after, &["epoch"]), str_at(&before, &["epoch"]));
        assert_eq!(
            (u64_of(&after, "seq"), array_at(&after, &["messages"]).len()),
            (1, 1)
        );
    }
}

#[test]
fn batch_on_one_node_runs_in_order_against_the_other() {
    let (_redis, a, b) = cluster(&[]);
    let mut bob = member(b.addr(), "bob", &[]);
    let bob_in =
        |method: &str| format!(r#"{{"method":"{method}","params":{{"user":"bob","room":"r"}}}}"#);
    let publish = |n: u32| {
        format!(r#"{{"method":"publish","params":{{"room":"r","event":"t:n","data":{n}}}}}"#)
    };
    let commands = [
        bob_in("subscribe"),
        publish(1),
        r#"{"method":"no_such_method","params":{}}"#.to_owned(),
        r#"{"method":"broadcast","params":{"rooms":["r","bad room"],"event":"t:b","data":0}}"#
            .to_owned(),
        bob_in("unsubscribe"),
        publish(3),
    ];
    let body = format!(r#"{{"commands":[{}]}}"#, commands.join(","));
    let got = Api::key(a.addr()).ok("batch", &body);
    let replies = array_at(&got, &["replies"]);
    assert_eq!(replies.len(), 6, "{got:?}");
    let one = json(r#"{"result":{"connections":1}}"#);
    assert_eq!(replies[0], one);
    assert_eq!(
        replies[1],
        json(r#"{"result":{"results":[{"room":"r","seq":1}]}}"#)
    );
    assert_eq!(
        str_at(&replies[2], &["error", "code"]),
        "NOT_FOUND",
        "{got:?}"
    );
    let broadcast = array_at(&replies[3], &["result", "results"]);
    assert_eq!(broadcast[0], json(r#"{"room":"r","seq":2}"#), "{got:?}");
    assert_eq!(
        str_at(&broadcast[1], &["error", "code"]),
        "VALIDATION_ERROR"
    );
    assert_eq!(replies[4], one);
    assert_eq!(
        replies[5],
        json(r#"{"result":{"results":[{"room":"r","seq":3}]}}"#)
    );

    assert_subscribed(&bob.recv(), "r");
    assert_room_event(&bob.recv(), "t:n", "r", "1", "api", 1);
    assert_room_event(&bob.recv(), "t:b", "r", "0", "api", 2);
    assert_unsubscribed(&bob.recv(), "r");
    bob.assert_quiet(QUIET);
}

/// Disconnects bob (one connection on each node) through `a` while `b` is
/// stopped; the reply and how long it took.
fn disconnect_with_b_stopped(a: &Server, b: &Server) -> (OwnedValue, Duration) {
    let mut on_a = member(a.addr(), "bob", &[]);
    let _on_b = member(b.addr(), "bob", &[]);
    let stopped = Stopped::stop(b);
    let started = Instant::now();
    let resp = Api::key(a.addr()).call("disconnect", r#"{"user":"bob"}"#);
    let took = started.elapsed();
    let result = result_of(&resp, "disconnect with a node stopped");
    assert_eq!(on_a.close_frame(CLOSE_WAIT).0, 4500);
    drop(stopped);
    (result, took)
}

/// Waits until a per-user command on `a` is answered by every node again.
fn wait_for_every_node(a: &Server) {
    let api = Api::key(a.addr());
    wait_until(Duration::from_secs(5), "both nodes answer again", || {
        let result = api.ok("subscribe", r#"{"user":"nobody","room":"x"}"#);
        result == json(r#"{"connections":0}"#)
    });
}

#[test]
fn a_node_that_does_not_answer_in_time_is_listed_in_missing_nodes() {
    let (_redis, a, b) = cluster(&["--api-timeout", "500ms"]);
    let (result, took) = disconnect_with_b_stopped(&a, &b);
    assert_eq!(
        result,
        json(r#"{"connections":1,"missingNodes":["node-b"]}"#),
        "after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(500) + SLACK,
        "answered after {took:?} with --api-timeout 500ms"
    );
    wait_for_every_node(&a);
}

#[test]
fn with_a_node_stopped_every_method_answers_within_the_timeout() {
    let (_redis, a, b) = cluster(&["--api-timeout", "500ms"]);
    let mut on_a = member(a.addr(), "bob", &["r"]);
    let _on_b = member(b.addr(), "bob", &["r"]);
    let stopped = Stopped::stop(&b);
    let api = Api::key(a.addr());
    let calls = [
        ("user", r#"{"user":"bob"}"#),
        ("rooms", "{}"),
        ("info", "{}"),
        ("subscribe", r#"{"user":"bob","room":"s"}"#),
        ("unsubscribe", r#"{"user":"bob","room":"s"}"#),
        ("publish", r#"{"room":"r","event":"t:x","data":1}"#),
        ("presence", r#"{"room":"r"}"#),
        ("history", r#"{"room":"r"}"#),
    ];
    for (method, body) in calls {
        let started = Instant::now();
        let result = result_of(&api.call(method, body), method);
        let took = started.elapsed();
        let bound = Duration::from_millis(500) + SLACK;
        assert!(
            took < bound,
            "{method} took {took:?} with --api-timeout 500ms"
        );
        if let Some(missing) = result.get("missingNodes") {
            assert_eq!(missing, &json(r#"["node-b"]"#), "{method}: {result:?}");
        }
    }
    let user = api.ok("user", r#"{"user":"bob"}"#);
    let nodes = each_sorted(&user, "connections", "node");
    assert!(nodes.contains(&"node-a".to_owned()), "{user:?}");
    assert_subscribed(&on_a.recv(), "s");
    assert_unsubscribed(&on_a.recv(), "s");
    assert_room_event(&on_a.recv(), "t:x", "r", "1", "api", 1);
    drop(stopped);
    wait_for_every_node(&a);
}

#[test]
fn the_api_timeout_is_two_seconds_by_default() {
    let (_redis, a, b) = cluster(&[]);
    let (result, took) = disconnect_with_b_stopped(&a, &b);
    assert_eq!(result["missingNodes"], json(r#"["node-b"]"#), "{result:?}");
    assert!(
        took >= Duration::from_millis(1950) && took < Duration::from_secs(2) + SLACK,
        "answered after {took:?} by default"
    );
    wait_for_every_node(&a);
}

#[test]
fn without_redis_a_publish_is_unavailable_and_no_connection_is_closed() {
    let (redis, a, _b) = cluster(&[]);
    let mut bob = member(a.addr(), "bob", &["news"]);
    redis.stop();
    wait_until(
        Duration::from_secs(10),
        "healthz reports Redis down",
        || common::http_get(a.addr(), "/healthz").status == 503,
    );
    let api = Api::key(a.addr());
    let publish = r#"{"room":"news","event":"t:x","data":1}"#;
    api.refused("publish", publish, 503, "UNAVAILABLE");
    let batch = format!(r#"{{"commands":[{{"method":"publish","params":{publish}}}]}}"#);
    let got = api.ok("batch", &batch);
    let replies = array_at(&got, &["replies"]);
    assert_eq!(
        str_at(&replies[0], &["error", "code"]),
        "UNAVAILABLE",
        "{got:?}"
    );
    bob.assert_open();
    bob.assert_quiet(QUIET);
}

/// How long after a node answers `/healthz` the others may take to count
/// it among the live nodes: docs/api.md says about a second (its first
/// heartbeat, read every second); commands made before reach only the
/// nodes their node knew.
const NEW_NODE_WINDOW: Duration = Duration::from_millis(2000);

#[test]
fn a_node_that_just_started_is_reached_within_about_a_second() {
    let redis = RedisServer::start();
    let start = |id: &str| node(&[&redis], &["--api-key", API_KEY, "--node-id", id]);
    let a = start("node-a");
    let b = start("node-b");
    let ready = Instant::now();
    let mut on_b = member(b.addr(), "bob", &[]);
    for (from, to) in [(&a, "node-b"), (&b, "node-a")] {
        let api = Api::key(from.addr());
        wait_until(NEW_NODE_WINDOW.saturating_sub(ready.elapsed()), to, || {
            each_sorted(&api.ok("info", "{}"), "nodes", "node").len() == 2
        });
    }
    let result = Api::key(a.addr()).ok("disconnect", r#"{"user":"bob"}"#);
    assert_eq!(result, json(r#"{"connections":1}"#));
    assert_eq!(on_b.close_frame(CLOSE_WAIT).0, 4500);
}
