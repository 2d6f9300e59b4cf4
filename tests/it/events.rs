//! JSON events on `/ws`: the greeting, ping/pong, acks and error events.

use crate::common;

use simd_json::OwnedValue;
use simd_json::prelude::*;
use tungstenite::Message;

use common::token::now;
use common::{RawWs, Server, Ws, json_at, json_str, opcode, recv, recv_json, token, ws_connect};

/// Connects to `/ws` as `sub` and returns the socket and its greeting.
fn connect(server: &Server, sub: &str) -> (Ws, OwnedValue) {
    let mut ws = ws_connect(server.addr(), "/ws", &token(sub));
    let hello = recv_json(&mut ws);
    (ws, hello)
}

fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).unwrap();
}

/// Receives `n` JSON messages.
fn recv_n(ws: &mut Ws, n: usize) -> Vec<OwnedValue> {
    (0..n).map(|_| recv_json(ws)).collect()
}

fn event(v: &OwnedValue) -> &str {
    json_str(v, &["event"]).unwrap_or_else(|| panic!("no event in {v:?}"))
}

/// The one message among `msgs` whose event is `name`.
fn only<'a>(msgs: &'a [OwnedValue], name: &str) -> &'a OwnedValue {
    let found: Vec<_> = msgs.iter().filter(|m| event(m) == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} in {msgs:?}");
    found[0]
}

fn error_code(v: &OwnedValue) -> &str {
    assert_eq!(event(v), "error", "{v:?}");
    assert!(
        json_str(v, &["data", "message"]).is_some(),
        "no message in {v:?}"
    );
    json_str(v, &["data", "code"]).unwrap()
}

/// Asserts the connection still answers a ping event.
fn assert_still_open(ws: &mut Ws) {
    send(ws, r#"{"event":"ping"}"#);
    assert_eq!(event(&recv_json(ws)), "pong");
}

#[test]
fn connection_established_is_the_first_message() {
    let server = Server::start(&["--ping-interval", "7s"]);
    let (_ws, hello) = connect(&server, "alice");
    assert_eq!(event(&hello), "connection:established", "{hello:?}");
    let conn_id = json_str(&hello, &["data", "connId"]).expect("connId");
    assert!(!conn_id.is_empty());
    assert_eq!(json_str(&hello, &["data", "userId"]), Some("alice"));
    let ping_interval = json_at(&hello, &["data", "pingInterval"]).and_then(|v| v.as_u64());
    assert_eq!(ping_interval, Some(7000));
    let server_time = json_at(&hello, &["data", "serverTime"])
        .and_then(|v| v.as_u64())
        .expect("serverTime in ms");
    let now_ms = now() * 1000;
    assert!(
        server_time.abs_diff(now_ms) < 60_000,
        "serverTime {server_time} vs {now_ms}"
    );
}

#[test]
fn each_connection_gets_its_own_conn_id() {
    let server = Server::start(&[]);
    let (_a, hello_a) = connect(&server, "u1");
    let (_b, hello_b) = connect(&server, "u1");
    let id = |v: &OwnedValue| json_str(v, &["data", "connId"]).unwrap().to_owned();
    assert_ne!(id(&hello_a), id(&hello_b));
}

#[test]
fn conn_ids_do_not_repeat_after_a_restart() {
    let run = || {
        let server = Server::start(&["--shards", "1"]);
        let (_ws, hello) = connect(&server, "u1");
        json_str(&hello, &["data", "connId"]).unwrap().to_owned()
    };
    let (before, after) = (run(), run());
    assert_ne!(before, after);
    // The process's random tag differs (it follows the node's name on a
    // cluster node), whatever the shard and count.
    let boot = |id: &str| {
        let id = id.rsplit_once(':').map_or(id, |(_, local)| local);
        id.split_once('-').map(|(boot, _)| boot.to_owned())
    };
    assert!(boot(&before).is_some(), "{before}");
    assert_ne!(boot(&before), boot(&after), "{before} {after}");
}

#[test]
fn ping_event_with_id_gets_a_pong_and_an_ack() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(&mut ws, r#"{"event":"ping","id":1}"#);
    let msgs = recv_n(&mut ws, 2);
    let pong = only(&msgs, "pong");
    assert!(
        json_at(pong, &["data", "serverTime"])
            .and_then(|v| v.as_u64())
            .is_some()
    );
    let ack = only(&msgs, "ack");
    assert_eq!(
        json_at(ack, &["id"]).and_then(|v| v.as_i64()),
        Some(1),
        "{ack:?}"
    );
    assert_eq!(
        json_at(ack, &["success"]).and_then(|v| v.as_bool()),
        Some(true)
    );
}

#[test]
fn ack_echoes_a_string_id_as_a_string() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(
        &mut ws,
        r#"{"event":"ping","id":"c-42","data":{"any":[1,2]}}"#,
    );
    let msgs = recv_n(&mut ws, 2);
    assert_eq!(json_str(only(&msgs, "ack"), &["id"]), Some("c-42"));
}

#[test]
fn ping_event_without_id_gets_only_a_pong() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(&mut ws, r#"{"event":"ping"}"#);
    send(&mut ws, "ping");
    assert_eq!(event(&recv_json(&mut ws)), "pong");
    // The bare pong proves nothing else (no ack) was queued in between.
    assert_eq!(recv(&mut ws), Message::text("pong"));
}

#[test]
fn bare_text_ping_gets_text_pong() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(&mut ws, "ping");
    assert_eq!(recv(&mut ws), Message::text("pong"));
}

#[test]
fn text_that_is_not_json_is_an_invalid_message_error() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(&mut ws, "hello there");
    assert_eq!(error_code(&recv_json(&mut ws)), "INVALID_MESSAGE");
    assert_still_open(&mut ws);
}

#[test]
fn json_that_is_not_an_envelope_is_an_invalid_message_error() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    for text in [
        "[1,2]",
        "42",
        r#"{"data":1}"#,
        r#"{"event":5}"#,
        r#"{"event":"ping""#,
    ] {
        send(&mut ws, text);
        assert_eq!(
            error_code(&recv_json(&mut ws)),
            "INVALID_MESSAGE",
            "for {text}"
        );
    }
    assert_still_open(&mut ws);
}

#[test]
fn unknown_action_in_a_reserved_namespace_is_unknown_event() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(&mut ws, r#"{"event":"system:nope"}"#);
    assert_eq!(error_code(&recv_json(&mut ws)), "UNKNOWN_EVENT");
    assert_still_open(&mut ws);
}

#[test]
fn unknown_action_with_an_id_gets_a_failed_ack() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(&mut ws, r#"{"event":"connection:nope","id":"x1"}"#);
    let ack = recv_json(&mut ws);
    assert_eq!(event(&ack), "ack", "{ack:?}");
    assert_eq!(json_str(&ack, &["id"]), Some("x1"));
    assert_eq!(
        json_at(&ack, &["success"]).and_then(|v| v.as_bool()),
        Some(false)
    );
    assert_eq!(json_str(&ack, &["error", "code"]), Some("UNKNOWN_EVENT"));
}

#[test]
fn invalid_id_is_a_validation_error_and_not_executed() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(&mut ws, r#"{"event":"ping","id":{"no":1}}"#);
    assert_eq!(error_code(&recv_json(&mut ws)), "VALIDATION_ERROR");
    // Not executed: the next message is the answer to the bare ping, not a pong event.
    send(&mut ws, "ping");
    assert_eq!(recv(&mut ws), Message::text("pong"));
}

#[test]
fn fragmented_json_message_is_handled_as_one() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr(), "/ws", &token("u1"));
    let hello = ws.read_message();
    assert!(String::from_utf8_lossy(&hello.1).contains("connection:established"));
    ws.send_frame(false, opcode::TEXT, br#"{"event":"pi"#);
    ws.send_frame(false, opcode::CONTINUATION, br#"ng","id""#);
    ws.send_frame(true, opcode::CONTINUATION, br#":7}"#);
    let texts: Vec<String> = (0..2)
        .map(|_| String::from_utf8(ws.read_message().1).unwrap())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains(r#""event":"pong""#)),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains(r#""event":"ack""#)),
        "{texts:?}"
    );
}

#[test]
fn ping_ack_carries_the_server_time() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(&mut ws, r#"{"event":"ping","id":9}"#);
    let msgs = recv_n(&mut ws, 2);
    let ack = only(&msgs, "ack");
    assert!(
        json_at(ack, &["data", "serverTime"])
            .and_then(|v| v.as_u64())
            .is_some(),
        "{ack:?}"
    );
}

#[test]
fn valid_id_without_event_gets_a_failed_ack_invalid_message() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    send(&mut ws, r#"{"id":3,"data":{}}"#);
    let ack = recv_json(&mut ws);
    assert_eq!(event(&ack), "ack", "{ack:?}");
    assert_eq!(json_at(&ack, &["id"]).and_then(|v| v.as_i64()), Some(3));
    assert_eq!(
        json_at(&ack, &["success"]).and_then(|v| v.as_bool()),
        Some(false)
    );
    assert_eq!(json_str(&ack, &["error", "code"]), Some("INVALID_MESSAGE"));
}

#[test]
fn invalid_ids_are_validation_errors() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    let too_long = "i".repeat(65);
    let cases = [
        format!(r#"{{"event":"ping","id":"{too_long}"}}"#),
        r#"{"event":"ping","id":9007199254740992}"#.to_owned(),
        r#"{"event":"ping","id":1.5}"#.to_owned(),
        r#"{"event":"ping","id":true}"#.to_owned(),
    ];
    for text in cases {
        send(&mut ws, &text);
        assert_eq!(
            error_code(&recv_json(&mut ws)),
            "VALIDATION_ERROR",
            "for {text}"
        );
    }
    assert_still_open(&mut ws);
}

#[test]
fn reserved_bare_names_from_a_client_are_unknown_events() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    for name in ["ack", "error", "pong"] {
        send(&mut ws, &format!(r#"{{"event":"{name}"}}"#));
        assert_eq!(
            error_code(&recv_json(&mut ws)),
            "UNKNOWN_EVENT",
            "for {name}"
        );
    }
}

#[test]
fn event_names_outside_the_grammar_are_validation_errors() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    let long = format!("a:{}", "b".repeat(63));
    for name in [
        "Chat:msg",
        "chat",
        "chat:",
        "a:b:c:d:e",
        "chat:Msg",
        "1a:b",
        long.as_str(),
    ] {
        let text = format!(r#"{{"event":"{name}","room":"lobby"}}"#);
        send(&mut ws, &text);
        assert_eq!(
            error_code(&recv_json(&mut ws)),
            "VALIDATION_ERROR",
            "for {name}"
        );
    }
    assert_still_open(&mut ws);
}

#[test]
fn json_nested_deeper_than_64_is_an_invalid_message() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server, "u1");
    let deep = format!(
        r#"{{"event":"ping","data":{}{}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    send(&mut ws, &deep);
    assert_eq!(error_code(&recv_json(&mut ws)), "INVALID_MESSAGE");
    assert_still_open(&mut ws);
}
