//! Direct messages (PROTOCOL.md section 6, `user:send`): every connection
//! of the target on every shard, except the sending connection.

use crate::common;

use std::time::Duration;

use common::Server;
use common::rooms::{Client, ack_error, keys, now_ms, ok_data, q, sorted, str_at, u64_at};

const QUIET: Duration = Duration::from_millis(300);

/// Asserts a direct message: keys `event,data,from,ts`, `data` verbatim.
fn assert_direct(text: &str, event: &str, data: &str, from: &str) {
    let v = common::parse_json(text);
    assert_eq!(keys(&v), sorted(&["event", "data", "from", "ts"]), "{text}");
    assert_eq!(str_at(&v, &["event"]), event, "{text}");
    assert_eq!(str_at(&v, &["from"]), from, "{text}");
    assert!(
        u64_at(&v, &["ts"]).abs_diff(now_ms()) < 120_000,
        "ts in {text}"
    );
    assert!(
        text.contains(&format!(r#""data":{data}"#)),
        "data not verbatim in {text}"
    );
}

fn send_to(c: &mut Client, to: &str, event: Option<&str>, data: &str) -> simd_json::OwnedValue {
    let event = event.map_or(String::new(), |e| format!(r#","event":{}"#, q(e)));
    c.request(
        "user:send",
        &format!(r#"{{"to":{}{event},"data":{data}}}"#, q(to)),
        "",
    )
}

#[test]
fn user_send_reaches_every_connection_of_the_user_on_both_shards() {
    let server = Server::start(&["--shards", "2", "--accept", "handoff"]);
    let addr = server.addr();
    // Consecutive connections: bob's two land on different shards.
    let mut bob1 = Client::user(addr, "bob");
    let mut bob2 = Client::user(addr, "bob");
    let mut alice = Client::user(addr, "alice");
    let mut carol = Client::user(addr, "carol");
    let data = r#"{"text" : "hi \u00e9", "n": [1.50]}"#;
    let ack = send_to(&mut alice, "bob", None, data);
    let ack_data = ok_data(&ack);
    assert_eq!(keys(ack_data), ["delivered"]);
    assert_eq!(u64_at(ack_data, &["delivered"]), 2);
    assert_direct(&bob1.recv(), "user:message", data, "alice");
    assert_direct(&bob2.recv(), "user:message", data, "alice");
    alice.assert_quiet(QUIET);
    carol.assert_quiet(Duration::from_millis(50));

    // A custom event name.
    let ack = send_to(&mut alice, "bob", Some("chat:direct"), "[]");
    assert_eq!(u64_at(ok_data(&ack), &["delivered"]), 2);
    assert_direct(&bob1.recv(), "chat:direct", "[]", "alice");
    assert_direct(&bob2.recv(), "chat:direct", "[]", "alice");
    let ack = send_to(&mut alice, "bob", Some("user:poke"), "1");
    assert_eq!(u64_at(ok_data(&ack), &["delivered"]), 2);
    assert_direct(&bob1.recv(), "user:poke", "1", "alice");
    assert_direct(&bob2.recv(), "user:poke", "1", "alice");
}

#[test]
fn the_sending_connection_is_excluded_when_sending_to_oneself() {
    let server = Server::start(&["--shards", "2", "--accept", "handoff"]);
    let addr = server.addr();
    let mut bob1 = Client::user(addr, "bob");
    let mut bob2 = Client::user(addr, "bob");
    // In a cluster a new connection is counted in Redis a moment after its
    // upgrade (docs/protocol.md, Cluster), so until then the count is 0;
    // it is never 2, as the sender is left out.
    common::wait_until(Duration::from_secs(5), "one connection counted", || {
        let ack = send_to(&mut bob1, "bob", None, r#""note to self""#);
        u64_at(ok_data(&ack), &["delivered"]) == 1
    });
    assert_direct(&bob2.recv(), "user:message", r#""note to self""#, "bob");
    bob1.assert_quiet(QUIET);
}

#[test]
fn user_send_to_an_offline_user_delivers_zero() {
    let server = Server::start(&[]);
    let mut alice = Client::user(server.addr(), "alice");
    let ack = send_to(&mut alice, "nobody", None, "1");
    assert_eq!(u64_at(ok_data(&ack), &["delivered"]), 0);
    // A user who disconnected is offline again.
    let bob = Client::user(server.addr(), "bob");
    common::reset(bob.ws.into_inner());
    common::wait_until(Duration::from_secs(5), "bob to be offline", || {
        let ack = send_to(&mut alice, "bob", None, "1");
        u64_at(ok_data(&ack), &["delivered"]) == 0
    });
}

#[test]
fn user_send_event_must_be_outside_reserved_namespaces_or_in_user() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice");
    let mut bob = Client::user(addr, "bob");
    for event in [
        "room:join",
        "presence:join",
        "connection:refresh",
        "system:notice",
        "ack",
        "ping",
        "Bad:Name",
        "nocolon",
    ] {
        let ack = send_to(&mut alice, "bob", Some(event), "1");
        assert_eq!(ack_error(&ack), "VALIDATION_ERROR", "event {event}");
    }
    bob.assert_quiet(QUIET);
}

#[test]
fn user_send_without_to_is_a_validation_error() {
    let server = Server::start(&[]);
    let mut alice = Client::user(server.addr(), "alice");
    for data in [r#"{"data":1}"#, r#"{"to":5,"data":1}"#, "null"] {
        let ack = alice.request("user:send", data, "");
        assert_eq!(ack_error(&ack), "VALIDATION_ERROR", "data {data}");
    }
}
