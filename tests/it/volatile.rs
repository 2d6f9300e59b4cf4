//! Volatile events (PROTOCOL.md section 14): a room event with
//! `"volatile": true` reaches the members connected now as
//! `{"event","room","data","from","ts"}`, with no `seq`, outside history
//! and recovery, acked `{}`; from a client, `POST /publish` and the Server
//! API; skipped (never a 4008) for a member whose queue is above half its
//! bound. scripts/test.sh runs this module in cluster mode too
//! (`ROOMCAST_TEST_REDIS`), where a volatile event is one plain publish.

use crate::cluster::post_publish;
use crate::common;

use std::time::Duration;

use simd_json::prelude::*;

use common::api::{API_KEY, Api};
use common::redis::{RedisServer, node};
use common::rooms::{
    Claims, Client, ack_error, alice_and_bob_in_lobby, array_at, keys, ok_data, publisher, q,
    seq_of, str_at, u64_at,
};
use common::{RawWs, Server, connect_with_small_rcvbuf, opcode, parse_json};

const QUIET: Duration = Duration::from_millis(300);

/// The exact text a member gets for a volatile event, but its `ts`.
fn assert_volatile(text: &str, event: &str, room: &str, data: &str, from: &str) {
    let head = format!(
        r#"{{"event":{},"room":{},"data":{data},"from":{},"ts":"#,
        q(event),
        q(room),
        q(from)
    );
    assert!(text.starts_with(&head), "{text}\nwanted {head}...");
    let ts = &text[head.len()..text.len() - 1];
    assert!(
        text.ends_with('}') && !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()),
        "{text}"
    );
}

/// Sends a volatile event with an id; the ack's raw text.
fn send_volatile(client: &mut Client, room: &str, event: &str, data: &str) -> String {
    let id = client.new_id();
    client.send(&format!(
        r#"{{"event":{},"room":{},"data":{data},"volatile":true,"id":{}}}"#,
        q(event),
        q(room),
        q(&id)
    ));
    client.wait_ack(&id)
}

#[test]
fn a_member_gets_a_volatile_event_without_seq_and_the_sender_an_empty_ack() {
    let (server, mut alice, mut bob) = alice_and_bob_in_lobby(&[]);
    let ack = send_volatile(&mut alice, "lobby", "typing:start", r#"{"on" : true}"#);
    assert!(
        ack.ends_with(r#","success":true,"data":{}}"#),
        "ack data is {{}}: {ack}"
    );
    let text = bob.recv();
    assert_volatile(&text, "typing:start", "lobby", r#"{"on" : true}"#, "alice");
    // No echo asked: the sender does not get it back.
    alice.assert_quiet(QUIET);
    bob.assert_quiet(QUIET);

    // With the default `--history 1`, a typing indicator does not take the
    // place of the room's last value.
    let seq = alice.publish_ok("lobby", "chat:msg", r#""last""#);
    bob.recv();
    send_volatile(&mut alice, "lobby", "typing:stop", "null");
    bob.recv();
    let mut carol = Client::user(server.addr(), "carol");
    let joined = carol.join_with(r#"{"room":"lobby","history":1}"#);
    let messages = array_at(ok_data(&joined), &["messages"]);
    assert_eq!(messages.len(), 1, "{joined:?}");
    assert_eq!(u64_at(&messages[0], &["seq"]), seq);
    assert_eq!(str_at(&messages[0], &["data"]), "last");
}

#[test]
fn a_volatile_event_takes_no_seq_and_stays_out_of_history_and_recovery() {
    let (server, mut alice, mut bob) = alice_and_bob_in_lobby(&["--history", "10"]);
    let first = alice.publish_ok("lobby", "chat:msg", r#""hello""#);
    for i in 0..3 {
        send_volatile(&mut alice, "lobby", "typing:start", &i.to_string());
    }
    let second = alice.publish_ok("lobby", "chat:msg", r#""again""#);
    assert_eq!(second, first + 1, "volatile events are not counted in seq");
    let texts: Vec<String> = (0..5).map(|_| bob.recv()).collect();
    let volatile: Vec<&String> = texts.iter().filter(|t| !t.contains("\"seq\"")).collect();
    assert_eq!(volatile.len(), 3, "{texts:?}");
    for (i, text) in volatile.iter().enumerate() {
        assert_volatile(text, "typing:start", "lobby", &i.to_string(), "alice");
    }

    let mut carol = Client::user(server.addr(), "carol");
    let joined = carol.join_with(r#"{"room":"lobby","history":10}"#);
    let data = ok_data(&joined);
    assert_eq!(u64_at(data, &["seq"]), second);
    let history: Vec<u64> = array_at(data, &["messages"])
        .iter()
        .map(|m| u64_at(m, &["seq"]))
        .collect();
    assert_eq!(history, [first, second], "{data:?}");
    let epoch = str_at(data, &["epoch"]).to_owned();

    let mut dave = Client::user(server.addr(), "dave");
    let rejoin = format!(
        r#"{{"room":"lobby","since":{first},"epoch":{}}}"#,
        q(&epoch)
    );
    let joined = dave.join_with(&rejoin);
    let data = ok_data(&joined);
    assert_eq!(
        data["recovered"].as_bool(),
        Some(true),
        "volatile events leave no gap: {data:?}"
    );
    let recovered = array_at(data, &["messages"]);
    assert_eq!(recovered.len(), 1, "{data:?}");
    assert_eq!(u64_at(&recovered[0], &["seq"]), second);
}

#[test]
fn a_volatile_that_is_not_a_boolean_is_a_validation_error() {
    let (_server, mut alice, mut bob) = alice_and_bob_in_lobby(&[]);
    for bad in ["1", r#""true""#, "null", "{}"] {
        let ack = alice.request(
            "typing:start",
            "1",
            &format!(r#""room":"lobby","volatile":{bad}"#),
        );
        assert_eq!(ack_error(&ack), "VALIDATION_ERROR", "{bad}: {ack:?}");
    }
    let ack = alice.request("typing:start", "1", r#""room":"lobby","volatile":false"#);
    assert!(
        ok_data(&ack)["seq"].as_u64().is_some(),
        "volatile false is a sequenced event: {ack:?}"
    );
    assert!(bob.recv().contains("\"seq\":"));
    bob.assert_quiet(QUIET);
}

#[test]
fn a_volatile_event_follows_the_publish_permissions() {
    let (server, _alice, mut bob) = alice_and_bob_in_lobby(&["--members-publish", "false"]);
    let mut eve = Client::user(server.addr(), "eve");
    let ack = eve.request("typing:start", "1", r#""room":"lobby","volatile":true"#);
    assert_eq!(ack_error(&ack), "FORBIDDEN", "{ack:?}");
    let mut feed = publisher(server.addr(), "feed");
    assert!(send_volatile(&mut feed, "lobby", "cursor:move", "[1,2]").contains(r#""data":{}"#));
    assert_volatile(&bob.recv(), "cursor:move", "lobby", "[1,2]", "feed");
}

#[test]
fn post_publish_sends_volatile_messages_with_results_without_seq() {
    let (server, _alice, mut bob) = alice_and_bob_in_lobby(&[]);
    let body = r#"{"messages":[{"room":"lobby","event":"cursor:move","data":{"x":1},"volatile":true},{"room":"lobby","event":"chat:msg","data":2}]}"#;
    let resp = post_publish(&server, body);
    assert_eq!(resp.status, 200, "{resp:?}");
    let body = parse_json(&resp.body);
    let results = array_at(&body, &["results"]);
    assert_eq!(results.len(), 2, "{body:?}");
    assert_eq!(str_at(&results[0], &["room"]), "lobby");
    assert_eq!(keys(&results[0]), ["room"], "{body:?}");
    assert_eq!(keys(&results[1]), ["room", "seq"], "{body:?}");
    let texts = [bob.recv(), bob.recv()];
    let volatile = texts
        .iter()
        .find(|t| !t.contains("\"seq\""))
        .expect("the volatile one");
    assert_volatile(volatile, "cursor:move", "lobby", r#"{"x":1}"#, "backend");
    assert!(texts.iter().any(|t| t.contains("\"seq\":")));

    let bad = post_publish(
        &server,
        r#"{"room":"lobby","event":"cursor:move","volatile":"yes"}"#,
    );
    bad.assert_error(400, "VALIDATION_ERROR");
    bob.assert_quiet(QUIET);
}

#[test]
fn the_server_api_publishes_and_broadcasts_volatile_events() {
    let (server, _alice, mut bob) = alice_and_bob_in_lobby(&["--api-key", API_KEY]);
    let api = Api::key(server.addr());
    let result = api.ok(
        "publish",
        r#"{"room":"lobby","event":"cursor:move","data":1,"volatile":true}"#,
    );
    assert_results_without_seq(&result, &["lobby"]);
    assert_volatile(&bob.recv(), "cursor:move", "lobby", "1", "api");
    let result = api.ok(
        "broadcast",
        r#"{"rooms":["lobby","nobody-here"],"event":"cursor:move","data":2,"volatile":true}"#,
    );
    assert_results_without_seq(&result, &["lobby", "nobody-here"]);
    assert_volatile(&bob.recv(), "cursor:move", "lobby", "2", "api");
    api.refused(
        "broadcast",
        r#"{"rooms":["lobby"],"event":"cursor:move","volatile":1}"#,
        400,
        "VALIDATION_ERROR",
    );
    bob.assert_quiet(QUIET);
    // Neither took a seq: the next message of the room is its first.
    assert_eq!(api.publish("lobby", "chat:msg", "3"), 1);
}

/// `{"results":[{"room"}...]}` for `rooms`, in order: no `seq`.
fn assert_results_without_seq(result: &simd_json::OwnedValue, rooms: &[&str]) {
    assert_eq!(keys(result), ["results"], "{result:?}");
    let results = array_at(result, &["results"]);
    let named: Vec<&str> = results.iter().map(|r| str_at(r, &["room"])).collect();
    assert_eq!(named, rooms, "{result:?}");
    for r in results {
        assert_eq!(keys(r), ["room"], "{result:?}");
    }
}

const PAD: usize = 8 * 1024;
/// About 3 MB of volatile events: far past the bound, the server's socket
/// buffer and the stalled member's receive buffer together.
const FLOOD: u64 = 400;

#[test]
fn a_stalled_member_is_skipped_not_closed_while_a_fast_one_gets_every_volatile_event_in_order() {
    let server = Server::start(&[
        "--max-write-buffer",
        "64KiB",
        "--presence-rooms",
        "presence-only",
    ]);
    let addr = server.addr();
    let mut fast = Client::user(addr, "fast");
    fast.join("game");
    let stream = connect_with_small_rcvbuf(addr, 4096);
    let mut stalled = RawWs::upgrade(stream, "/ws", &Claims::new("stalled").token());
    stalled.read_message();
    stalled.send_frame(
        true,
        opcode::TEXT,
        br#"{"event":"room:join","data":{"room":"game"},"id":1}"#,
    );
    let (_, ack) = stalled.read_message();
    assert!(String::from_utf8_lossy(&ack).contains(r#""success":true"#));

    let mut feed = publisher(addr, "feed");
    let pad = "x".repeat(PAD);
    for i in 0..FLOOD {
        feed.send(&format!(
            r#"{{"event":"game:pos","room":"game","data":{{"i":{i},"pad":"{pad}"}},"volatile":true}}"#
        ));
        let text = fast.recv();
        assert!(
            text.starts_with(&format!(
                r#"{{"event":"game:pos","room":"game","data":{{"i":{i},"#
            )),
            "fast member, event {i}: {}",
            &text[..text.len().min(120)]
        );
        assert!(!text.contains("\"seq\""));
    }
    // The stalled member reads now: whole frames, in order, some left out,
    // and no close.
    let texts = stalled.drain_texts(Duration::from_secs(1));
    let seen: Vec<u64> = texts
        .iter()
        .map(|t| {
            let v = parse_json(t);
            u64_at(&v, &["data", "i"])
        })
        .collect();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeat: {seen:?}"
    );
    assert!(
        (seen.len() as u64) < FLOOD,
        "the stalled member was never skipped: {} of {FLOOD}",
        seen.len()
    );
    stalled.send_frame(true, opcode::TEXT, br#"{"event":"ping","id":2}"#);
    let after = stalled.drain_texts(Duration::from_millis(500));
    assert!(
        after.iter().any(|t| t.starts_with(r#"{"event":"pong""#)),
        "the stalled member is still served: {after:?}"
    );
    if !common::in_cluster() {
        let dropped = common::metric(addr, "roomcast_volatile_dropped_total");
        assert_eq!(dropped as u64, FLOOD - seen.len() as u64);
    }
}

#[test]
fn across_two_nodes_a_volatile_event_is_one_plain_publish_outside_history() {
    // Its nodes have a Redis of their own; the cluster pass of the suite
    // (`ROOMCAST_TEST_REDIS`) would give them a second one.
    if common::in_cluster() {
        return;
    }
    let redis = RedisServer::start();
    let quiet = ["--presence-rooms", "presence-only"];
    let (a, b) = (node(&[&redis], &quiet), node(&[&redis], &quiet));
    let mut alice = Client::user(a.addr(), "alice");
    let mut bob = Client::user(b.addr(), "bob");
    alice.join("lobby");
    bob.join("lobby");
    assert_eq!(alice.publish_ok("lobby", "chat:msg", "1"), 1);
    assert_eq!(seq_of(&bob.recv_skip_presence()), 1);
    let mut conn = redis.connect();
    let before = conn.call(&["INFO", "commandstats"]);
    for i in 0..5 {
        let ack = send_volatile(&mut alice, "lobby", "cursor:move", &i.to_string());
        assert!(ack.ends_with(r#""data":{}}"#), "{ack}");
    }
    for i in 0..5 {
        assert_volatile(
            &bob.recv_skip_presence(),
            "cursor:move",
            "lobby",
            &i.to_string(),
            "alice",
        );
    }
    let after = conn.call(&["INFO", "commandstats"]);
    assert_eq!(
        calls(&after, "fcall") - calls(&before, "fcall"),
        0,
        "no function for a volatile event"
    );
    assert_eq!(calls(&after, "spublish") - calls(&before, "spublish"), 5);
    alice.assert_quiet(QUIET);
    assert_eq!(alice.publish_ok("lobby", "chat:msg", "2"), 2);
    // Node b's cursor of the room did not move: the next event is no gap.
    assert_eq!(seq_of(&bob.recv_skip_presence()), 2);
    let mut carol = Client::user(b.addr(), "carol");
    let joined = carol.join_with(r#"{"room":"lobby","history":10}"#);
    let messages = array_at(ok_data(&joined), &["messages"]);
    assert_eq!(messages.len(), 2, "{joined:?}");

    // A node cut off from Redis refuses a volatile event as any publish.
    drop(redis);
    common::wait_until(Duration::from_secs(10), "node a sees Redis down", || {
        common::http_get(a.addr(), "/healthz").status == 503
    });
    let ack = alice.request("cursor:move", "1", r#""room":"lobby","volatile":true"#);
    assert_eq!(ack_error(&ack), "UNAVAILABLE", "{ack:?}");
}

/// `calls=` of `cmdstat_<command>` in an `INFO commandstats` reply.
fn calls(info: &roomcast::redis::resp::Reply, command: &str) -> u64 {
    let text = String::from_utf8_lossy(info.as_bytes().expect("a bulk reply")).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .map_or(0, |rest| {
            rest.split(',').next().unwrap().parse().expect("a count")
        })
}

#[test]
fn a_volatile_client_event_goes_through_the_publish_proxy_which_is_told_so() {
    let backend = crate::hooks_proxy::publish_backend();
    let url = backend.url("/publish");
    let server = crate::hooks_proxy::server(&["--publish-proxy", &url, "--presence-rooms", "none"]);
    let mut alice = Client::user(server.addr(), "alice");
    let mut bob = Client::user(server.addr(), "bob");
    alice.join("chat:1");
    bob.join("chat:1");
    let ack = send_volatile(&mut alice, "chat:1", "msg:swap", r#""original""#);
    assert!(ack.ends_with(r#""data":{}}"#), "{ack}");
    assert_volatile(
        &bob.recv(),
        "msg:swap",
        "chat:1",
        r#"{"swapped" : true, "n":1.50}"#,
        "alice",
    );
    let asked = String::from_utf8(backend.seen.requests()[0].body.clone()).unwrap();
    assert!(
        asked.contains(r#""event":"msg:swap","volatile":true,"data":"original"}"#),
        "{asked}"
    );
    let refused = alice.request("msg:bad", "1", r#""room":"chat:1","volatile":true"#);
    assert_eq!(ack_error(&refused), "BANNED_WORD");
    bob.assert_quiet(QUIET);
}

#[test]
fn a_volatile_event_makes_no_room_message_webhook() {
    use crate::webhooks::{CHAT_FLAGS, Hooks};
    let hooks = Hooks::always_ok();
    let server = crate::webhooks::server(&hooks.url(), &CHAT_FLAGS);
    let mut alice = Client::user(server.addr(), "alice");
    alice.join("chat:1");
    send_volatile(&mut alice, "chat:1", "typing:start", "null");
    alice.publish_ok("chat:1", "chat:say", r#""hi""#);
    hooks.wait_for("the room's message", 4);
    let messages: Vec<String> = hooks
        .summary()
        .into_iter()
        .filter(|line| line.starts_with("room.message"))
        .collect();
    assert_eq!(messages, ["room.message chat:1"]);
    let events = hooks.events();
    let message = events
        .iter()
        .find(|e| e["type"].as_str() == Some("room.message"))
        .unwrap();
    assert_eq!(message["event"].as_str(), Some("chat:say"));
}
