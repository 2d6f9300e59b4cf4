//! Every error code of PROTOCOL.md section 4 provoked on `/ws`, as a failed
//! ack when the message has a valid `id` and as an `error` event otherwise;
//! no failure closes the connection (except a binary message: 1003).
//! RATE_LIMITED is in `rate_limit.rs`, the `connection:refresh` codes in
//! `refresh.rs`.

use crate::common;

use std::time::Duration;

use common::Server;
use common::rooms::{Claims, Client, ack_error, error_event_code, q, u64_at};

/// Sends `text` (which carries no `id`) and returns the error event's code.
fn error_for(c: &mut Client, text: &str) -> String {
    c.send(text);
    let v = c.recv_json();
    error_event_code(&v)
}

/// Sends `event` with `data` and `extra` fields and an id; the failed ack's code.
fn failed_ack(c: &mut Client, event: &str, data: &str, extra: &str) -> String {
    let ack = c.request(event, data, extra);
    ack_error(&ack)
}

#[test]
fn invalid_message_for_non_json_non_objects_and_a_missing_event() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    for text in [
        "{not json",
        r#"{"event":"chat:message","room":"lobby""#,
        "[1,2,3]",
        r#""a string""#,
        "42",
        "null",
        r#"{"room":"lobby","data":1}"#,
        r#"{"event":7,"room":"lobby"}"#,
        r#"{"event":null,"room":"lobby"}"#,
    ] {
        assert_eq!(error_for(&mut c, text), "INVALID_MESSAGE", "for {text}");
    }
    // With a valid id the missing event is answered by a failed ack.
    c.send(r#"{"room":"lobby","id":"m1"}"#);
    let ack = common::parse_json(&c.wait_ack("m1"));
    assert_eq!(ack_error(&ack), "INVALID_MESSAGE");
    c.assert_open();
}

#[test]
fn validation_error_for_a_too_long_id() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    let long_id = "i".repeat(65);
    c.join("lobby");
    let text = format!(
        r#"{{"event":"chat:message","room":"lobby","data":1,"id":{}}}"#,
        q(&long_id)
    );
    assert_eq!(error_for(&mut c, &text), "VALIDATION_ERROR");
    // Not executed: a second member sees nothing and the room's seq is still 0.
    let mut other = Client::user(server.addr(), "u2");
    assert_eq!(u64_at(&other.join("lobby"), &["seq"]), 0);
    // 64 bytes is fine.
    let ok_id = "i".repeat(64);
    c.send(&format!(r#"{{"event":"ping","id":{}}}"#, q(&ok_id)));
    c.wait_ack(&ok_id);
    c.assert_open();
}

#[test]
fn validation_error_for_bad_room_names() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    let too_long = "r".repeat(129);
    for room in [
        "",
        "has space",
        "bad!",
        "caf\u{e9}",
        "a\"b",
        too_long.as_str(),
    ] {
        let data = format!(r#"{{"room":{}}}"#, q(room));
        assert_eq!(
            failed_ack(&mut c, "room:join", &data, ""),
            "VALIDATION_ERROR",
            "room:join {room:?}"
        );
        assert_eq!(
            failed_ack(
                &mut c,
                "chat:message",
                "1",
                &format!(r#""room":{}"#, q(room))
            ),
            "VALIDATION_ERROR",
            "publish to {room:?}"
        );
    }
    // Every allowed character and 128 bytes are fine.
    let longest = "R".repeat(128);
    for room in ["Az09._:@/-", longest.as_str()] {
        c.join(room);
    }
    c.assert_open();
}

#[test]
fn validation_error_for_bad_event_names() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    c.join("lobby");
    let too_long = format!("a:{}", "b".repeat(63));
    for event in [
        "chat",
        "Chat:message",
        "chat:Message",
        "chat:",
        ":message",
        "1chat:message",
        "chat-x:message",
        "a:b:c:d:e",
        too_long.as_str(),
    ] {
        assert_eq!(
            failed_ack(&mut c, event, "1", r#""room":"lobby""#),
            "VALIDATION_ERROR",
            "event {event:?}"
        );
    }
    c.assert_open();
}

#[test]
fn validation_error_for_a_missing_room() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    c.join("lobby");
    // A room event without `room`.
    assert_eq!(
        failed_ack(&mut c, "chat:message", "1", ""),
        "VALIDATION_ERROR"
    );
    assert_eq!(
        error_for(&mut c, r#"{"event":"chat:message","data":1}"#),
        "VALIDATION_ERROR"
    );
    // `room` of the wrong type.
    assert_eq!(
        failed_ack(&mut c, "chat:message", "1", r#""room":5"#),
        "VALIDATION_ERROR"
    );
    // room:join, room:leave and presence:get whose data lacks `room`.
    for event in ["room:join", "room:leave", "presence:get"] {
        for data in ["{}", "null", r#""lobby""#, r#"{"room":7}"#] {
            assert_eq!(
                failed_ack(&mut c, event, data, ""),
                "VALIDATION_ERROR",
                "{event} with data {data}"
            );
        }
    }
    c.assert_open();
}

#[test]
fn validation_error_for_bad_join_options() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    for data in [
        r#"{"room":"lobby","history":"3"}"#,
        r#"{"room":"lobby","history":-1}"#,
        r#"{"room":"lobby","since":"1","epoch":"e"}"#,
        r#"{"room":"lobby","since":1,"epoch":5}"#,
    ] {
        assert_eq!(
            failed_ack(&mut c, "room:join", data, ""),
            "VALIDATION_ERROR",
            "room:join {data}"
        );
    }
    c.assert_open();
}

#[test]
fn unknown_event_for_unknown_actions_in_reserved_namespaces() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    for event in [
        "room:nope",
        "user:nope",
        "presence:nope",
        "connection:nope",
        "system:nope",
        "room:join:x",
    ] {
        assert_eq!(
            failed_ack(&mut c, event, r#"{"room":"lobby"}"#, r#""room":"lobby""#),
            "UNKNOWN_EVENT",
            "{event}"
        );
        let text = format!(r#"{{"event":{},"room":"lobby"}}"#, q(event));
        assert_eq!(error_for(&mut c, &text), "UNKNOWN_EVENT", "{event}");
    }
    c.assert_open();
}

#[test]
fn forbidden_to_join_a_room_outside_the_join_patterns() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr(), &Claims::new("u1").rooms(&["lobby"]).token());
    assert_eq!(
        failed_ack(&mut c, "room:join", r#"{"room":"secret"}"#, ""),
        "FORBIDDEN"
    );
    assert_eq!(
        error_for(&mut c, r#"{"event":"room:join","data":{"room":"secret"}}"#),
        "FORBIDDEN"
    );
    c.join("lobby");
}

#[test]
fn not_in_room_to_publish_to_a_joinable_room_one_has_not_joined() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    assert_eq!(
        failed_ack(&mut c, "chat:message", "1", r#""room":"lobby""#),
        "NOT_IN_ROOM"
    );
    assert_eq!(
        error_for(
            &mut c,
            r#"{"event":"chat:message","room":"lobby","data":1}"#
        ),
        "NOT_IN_ROOM"
    );
    c.join("lobby");
    c.leave("lobby");
    assert_eq!(
        failed_ack(&mut c, "chat:message", "1", r#""room":"lobby""#),
        "NOT_IN_ROOM",
        "after leaving"
    );
}

#[test]
fn room_full_over_max_room_members_counting_connections() {
    let server = Server::start(&["--max-room-members", "1"]);
    let addr = server.addr();
    let mut a = Client::user(addr, "a");
    let mut a2 = Client::user(addr, "a");
    let mut b = Client::user(addr, "b");
    a.join("lobby");
    assert_eq!(
        failed_ack(&mut b, "room:join", r#"{"room":"lobby"}"#, ""),
        "ROOM_FULL"
    );
    assert_eq!(
        failed_ack(&mut a2, "room:join", r#"{"room":"lobby"}"#, ""),
        "ROOM_FULL",
        "a second connection of the same user counts too"
    );
    // Joining again is still a success for the member; another room is free.
    a.join("lobby");
    b.join("other");
    // A place frees when the member leaves.
    a.leave("lobby");
    b.join("lobby");
}

#[test]
fn room_limit_over_max_rooms_per_connection() {
    let server = Server::start(&["--max-rooms-per-connection", "2"]);
    let addr = server.addr();
    let mut c = Client::user(addr, "u1");
    c.join("r1");
    c.join("r2");
    assert_eq!(
        failed_ack(&mut c, "room:join", r#"{"room":"r3"}"#, ""),
        "ROOM_LIMIT"
    );
    assert_eq!(
        error_for(&mut c, r#"{"event":"room:join","data":{"room":"r3"}}"#),
        "ROOM_LIMIT"
    );
    // Re-joining a room one is in is not over the limit.
    c.join("r1");
    // The limit is per connection: another connection of the same user is free.
    let mut other = Client::user(addr, "u1");
    other.join("r3");
    // Leaving frees a place.
    c.leave("r1");
    c.join("r3");
}

#[test]
fn binary_message_on_ws_closes_1003_even_in_a_room() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    c.join("lobby");
    c.send_binary(br#"{"event":"chat:message","room":"lobby","data":1}"#);
    assert_eq!(c.expect_close(Duration::from_secs(5)), 1003);
}

#[test]
fn errors_do_not_close_the_connection_or_leave_rooms() {
    let server = Server::start(&["--presence-rooms", "presence-only"]);
    let addr = server.addr();
    let mut a = Client::user(addr, "a");
    let mut b = Client::user(addr, "b");
    a.join("lobby");
    b.join("lobby");
    for text in [
        "garbage",
        r#"{"event":"room:nope"}"#,
        r#"{"event":"Bad"}"#,
        r#"{"event":"chat:x","room":"not-joined"}"#,
    ] {
        a.send(text);
        error_event_code(&a.recv_json());
    }
    let seq = a.publish_ok("lobby", "chat:message", "1");
    common::rooms::assert_room_event(&b.recv(), "chat:message", "lobby", "1", "a", seq);
}
