//! Bad input to the server API: bodies that are no JSON object, unknown
//! methods, wrong HTTP methods, missing and ill-typed parameters, bounds
//! one past their limit, bodies over the size bound and nested without
//! end. After each, a marker proves nothing was published and a ping
//! proves no connection was closed.

use crate::common;

use common::api::{API_KEY, Api, Cred, assert_api_error, member, request_bytes, result_of};
use common::rooms::{Client, q};
use common::{Server, http_head_and_rest, http_raw};

use super::server;

/// Sends each `(method, body)` with the key and expects `400 code`; after
/// each, `alice` (in "lobby") gets the next marker and is still open.
fn assert_each_refused(
    api: &Api,
    alice: &mut Client,
    next_seq: &mut u64,
    code: &str,
    cases: &[(&str, String)],
) {
    for (method, body) in cases {
        let what = format!("{method} {body:.120}");
        let resp = api.call(method, body);
        assert_api_error(&resp, 400, code, &what);
        api.assert_next_is_marker(alice, "lobby", *next_seq, &what);
        *next_seq += 1;
        alice.assert_open();
    }
}

fn owned(cases: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    cases.iter().map(|(m, b)| (*m, b.to_string())).collect()
}

#[test]
fn a_body_that_is_no_json_object_is_invalid_message() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let mut seq = 1;
    let publish = r#"{"room":"lobby","event":"t:x","data":1}"#;
    let cases = [
        ("publish", format!("[{publish}]")),
        ("publish", "42".into()),
        ("publish", r#""lobby""#.into()),
        ("publish", "null".into()),
        ("publish", "true".into()),
        ("publish", format!("{publish} {publish}")),
        ("publish", publish[..publish.len() - 1].into()),
        (
            "publish",
            r#"{"room":"lobby","event":"t:x","data":NaN}"#.into(),
        ),
        (
            "publish",
            r#"{"room":"lobby","event":"t:x","data":1,}"#.into(),
        ),
        ("info", "[]".into()),
        ("batch", "[]".into()),
    ];
    assert_each_refused(&api, &mut alice, &mut seq, "INVALID_MESSAGE", &cases);
    // Bytes that are not UTF-8.
    let resp = api.call_bytes(
        "publish",
        b"{\"room\":\"lobby\",\"event\":\"t:x\",\"data\":\"\xff\"}",
    );
    assert_api_error(&resp, 400, "INVALID_MESSAGE", "invalid UTF-8");
    api.assert_next_is_marker(&mut alice, "lobby", seq, "invalid UTF-8");
}

#[test]
fn an_unknown_method_is_not_found() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let body = r#"{"room":"lobby","event":"t:x","data":1}"#;
    let methods = [
        "no_such_method",
        "Publish",
        "",
        "publish/x",
        "publish%20",
        "publish.json",
    ];
    for (n, method) in methods.into_iter().enumerate() {
        let resp = api.call(method, body);
        assert_api_error(&resp, 404, "NOT_FOUND", method);
        api.assert_next_is_marker(&mut alice, "lobby", n as u64 + 1, method);
    }
}

#[test]
fn other_http_methods_are_405_and_options_is_204_without_a_credential() {
    let server = server(&[]);
    let addr = server.addr();
    for verb in ["GET", "PUT", "DELETE", "PATCH"] {
        let resp = http_raw(addr, &request_bytes(verb, "/api/info", &Cred::key(), b""));
        assert_api_error(&resp, 405, "METHOD_NOT_ALLOWED", verb);
        assert_eq!(resp.header("Allow"), Some("POST, OPTIONS"), "{verb}");
    }
    // Without a credential a wrong HTTP method learns nothing either;
    // OPTIONS alone needs none (docs/api.md).
    let resp = http_raw(addr, &request_bytes("GET", "/api/nope", &Cred::None, b""));
    assert_api_error(&resp, 401, "UNAUTHENTICATED", "GET without a credential");
    for cred in [Cred::key(), Cred::None] {
        let req = request_bytes("OPTIONS", "/api/publish", &cred, b"");
        let (resp, rest) = http_head_and_rest(addr, &req);
        assert_eq!(resp.status, 204, "{resp:?}");
        assert_eq!(resp.header("Allow"), Some("POST, OPTIONS"));
        assert!(rest.is_empty(), "{rest:?}");
    }
}

#[test]
fn an_empty_body_is_an_empty_object() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let info = api.ok("info", "");
    assert_eq!(common::rooms::keys(&info), ["nodes"], "{info:?}");
    assert_eq!(api.ok("rooms", ""), common::parse_json(r#"{"rooms":[]}"#));
    // A method with a required parameter sees it missing.
    api.refused("publish", "", 400, "VALIDATION_ERROR");
    api.refused("presence", "", 400, "VALIDATION_ERROR");
}

#[test]
fn missing_or_ill_typed_parameters_are_validation_errors() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let long_room = "r".repeat(129);
    let long_room = format!(r#"{{"room":{}}}"#, q(&long_room));
    // A `sub` is 1-128 bytes (section 2).
    let long_user = format!(r#"{{"user":{}}}"#, q(&"u".repeat(129)));
    let cases = owned(&[
        ("publish", "{}"),
        ("publish", r#"{"room":"lobby","data":1}"#),
        ("publish", r#"{"room":5,"event":"t:x","data":1}"#),
        ("publish", r#"{"room":"bad room","event":"t:x","data":1}"#),
        ("publish", r#"{"room":"lobby","event":"Bad","data":1}"#),
        (
            "publish",
            r#"{"room":"lobby","event":"room:join","data":1}"#,
        ),
        ("publish", r#"{"room":"lobby","event":7,"data":1}"#),
        ("publish", r#"{"messages":[]}"#),
        ("publish", r#"{"messages":{}}"#),
        (
            "publish",
            r#"{"messages":[{"room":"lobby","event":"t:x","data":1},{"room":"lobby","event":"system:x","data":2}]}"#,
        ),
        (
            "publish",
            r#"{"messages":[{"room":"lobby","event":"t:x","data":1},{"room":"","event":"t:x","data":2}]}"#,
        ),
        ("broadcast", r#"{"event":"t:x","data":1}"#),
        ("broadcast", r#"{"rooms":[],"event":"t:x","data":1}"#),
        ("broadcast", r#"{"rooms":"lobby","event":"t:x","data":1}"#),
        ("broadcast", r#"{"rooms":["lobby"],"data":1}"#),
        (
            "broadcast",
            r#"{"rooms":["lobby"],"event":"user:x","data":1}"#,
        ),
        ("broadcast", r#"{"rooms":["lobby"],"event":"t x","data":1}"#),
        ("presence", "{}"),
        ("presence", r#"{"room":["lobby"]}"#),
        ("presence", &long_room),
        ("history", r#"{"room":"lobby","limit":"2"}"#),
        ("history", r#"{"room":"lobby","limit":-1}"#),
        ("history", r#"{"room":"lobby","limit":1.5}"#),
        ("history", r#"{"room":"lobby","since":"1","epoch":"e"}"#),
        ("history", r#"{"room":"lobby","since":1,"epoch":5}"#),
        ("history", r#"{"limit":1}"#),
        ("history_remove", "{}"),
        ("history_remove", r#"{"room":"bad room"}"#),
        ("subscribe", r#"{"room":"lobby"}"#),
        ("subscribe", r#"{"user":"alice"}"#),
        ("subscribe", r#"{"user":5,"room":"lobby"}"#),
        ("subscribe", r#"{"user":"alice","room":"bad room"}"#),
        ("subscribe", r#"{"user":"alice","room":"lobby","connId":5}"#),
        ("unsubscribe", r#"{"user":"alice"}"#),
        ("unsubscribe", r#"{"user":"alice","room":7}"#),
        ("user", "{}"),
        ("user", &long_user),
        ("user", r#"{"user":""}"#),
        ("disconnect", r#"{"user":""}"#),
        ("user", r#"{"user":["alice"]}"#),
        ("rooms", r#"{"pattern":5}"#),
        ("batch", "{}"),
        ("batch", r#"{"commands":{}}"#),
        ("batch", r#"{"commands":"publish"}"#),
        // A batch whose shape is wrong runs none of its commands.
        (
            "batch",
            r#"{"commands":[{"method":"publish","params":{"room":"lobby","event":"t:x","data":1}},5]}"#,
        ),
        (
            "batch",
            r#"{"commands":[{"method":"publish","params":{"room":"lobby","event":"t:x","data":1}},{"method":5}]}"#,
        ),
        (
            "batch",
            r#"{"commands":[{"method":"publish","params":{"room":"lobby","event":"t:x","data":1}},{"method":"info","params":[]}]}"#,
        ),
    ]);
    let mut seq = 1;
    assert_each_refused(&api, &mut alice, &mut seq, "VALIDATION_ERROR", &cases);
    // Alice is still in lobby, and nothing was removed from its history.
    let history = api.ok("history", r#"{"room":"lobby"}"#);
    assert_eq!(common::rooms::u64_at(&history, &["seq"]), seq - 1);
    assert_eq!(
        common::rooms::array_at(&history, &["messages"]).len() as u64,
        seq - 1
    );
}

#[test]
fn a_pattern_that_is_no_room_pattern_is_a_validation_error() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let _alice = member(server.addr(), "alice", &["b:1"]);
    for pattern in [
        "",
        "b*x",
        "*b",
        "**",
        "b:**",
        "bad room*",
        "é*",
        &"r".repeat(129),
    ] {
        let body = format!(r#"{{"pattern":{}}}"#, q(pattern));
        api.refused("rooms", &body, 400, "VALIDATION_ERROR");
    }
    let listed = api.ok("rooms", r#"{"pattern":"b:*"}"#);
    assert_eq!(common::rooms::array_at(&listed, &["rooms"]).len(), 1);
}

#[test]
fn disconnect_refuses_a_bad_code_or_a_long_reason_and_closes_nothing() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let mut bob = member(server.addr(), "bob", &["lobby"]);
    let long_reason = format!(
        r#"{{"user":"bob","reason":{}}}"#,
        q(&format!("{}a", "é".repeat(60)))
    );
    let cases = owned(&[
        ("disconnect", r#"{"user":"bob","code":3999}"#),
        ("disconnect", r#"{"user":"bob","code":5000}"#),
        ("disconnect", r#"{"user":"bob","code":1000}"#),
        ("disconnect", r#"{"user":"bob","code":-4500}"#),
        ("disconnect", r#"{"user":"bob","code":4500.5}"#),
        ("disconnect", r#"{"user":"bob","code":"4500"}"#),
        ("disconnect", &long_reason),
        ("disconnect", r#"{"user":"bob","reason":5}"#),
        ("disconnect", r#"{"code":4500}"#),
        ("disconnect", r#"{"user":5}"#),
        ("disconnect", r#"{"user":"bob","connId":5}"#),
    ]);
    let mut seq = 1;
    assert_each_refused(&api, &mut alice, &mut seq, "VALIDATION_ERROR", &cases);
    for n in 1..seq {
        let text = bob.recv_skip_presence();
        assert!(text.contains(r#""event":"test:marker""#), "{n}: {text}");
    }
    bob.assert_open();
}

#[test]
fn one_past_each_count_bound_is_refused_whole() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let rooms: Vec<String> = (0..1001).map(|_| q("lobby")).collect();
    let broadcast = format!(
        r#"{{"rooms":[{}],"event":"t:x","data":1}}"#,
        rooms.join(",")
    );
    let one = r#"{"method":"publish","params":{"room":"lobby","event":"t:x","data":1}}"#;
    let batch = format!(r#"{{"commands":[{}]}}"#, vec![one; 101].join(","));
    let mut seq = 1;
    let cases = [("broadcast", broadcast), ("batch", batch)];
    assert_each_refused(&api, &mut alice, &mut seq, "VALIDATION_ERROR", &cases);
}

#[test]
fn deeply_nested_bodies_are_refused_and_the_server_goes_on() {
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let cases = [
        ("publish", arrays.clone()),
        (
            "publish",
            format!(r#"{{"room":"lobby","event":"t:x","data":{arrays}}}"#),
        ),
        (
            "publish",
            format!(r#"{{"room":"lobby","event":"t:x","data":{objects}}}"#),
        ),
        ("batch", format!(r#"{{"commands":{arrays}}}"#)),
        ("info", objects.clone()),
        ("publish", "[".repeat(depth)),
    ];
    let mut seq = 1;
    assert_each_refused(&api, &mut alice, &mut seq, "INVALID_MESSAGE", &cases);
    // Nesting within the bound of section 4 is data like any other.
    let data = format!("{}{}", "[".repeat(60), "]".repeat(60));
    assert_eq!(api.publish("lobby", "t:deep", &data), seq);
    common::rooms::assert_room_event(&alice.recv(), "t:deep", "lobby", &data, "api", seq);
}

/// `{"room":"lobby"}` padded with spaces to exactly `len` bytes.
fn padded_presence(len: usize) -> Vec<u8> {
    let mut body = br#"{"room":"lobby"}"#.to_vec();
    body.resize(len, b' ');
    body
}

#[test]
fn bodies_over_the_bound_are_413_and_the_bound_is_at_least_a_mebibyte() {
    const MIB: usize = 1 << 20;
    let server = server(&[]);
    let api = Api::key(server.addr());
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    result_of(&api.call_bytes("presence", &padded_presence(MIB)), "1 MiB");
    let resp = api.call_bytes("presence", &padded_presence(MIB + 1));
    assert_api_error(&resp, 413, "PAYLOAD_TOO_LARGE", "1 MiB + 1");
    let publish = format!(
        r#"{{"room":"lobby","event":"t:x","data":"{}"}}"#,
        "x".repeat(MIB)
    );
    let resp = api.call("publish", &publish);
    assert_api_error(&resp, 413, "PAYLOAD_TOO_LARGE", "a publish over 1 MiB");
    api.assert_next_is_marker(&mut alice, "lobby", 1, "bodies over the bound");
    alice.assert_open();

    // A larger --max-message-size raises the bound.
    let server = super::server(&["--max-message-size", "2MiB", "--max-write-buffer", "4MiB"]);
    let api = Api::key(server.addr());
    result_of(
        &api.call_bytes("presence", &padded_presence(2 * MIB)),
        "2 MiB",
    );
    let resp = api.call_bytes("presence", &padded_presence(2 * MIB + 1));
    assert_api_error(&resp, 413, "PAYLOAD_TOO_LARGE", "2 MiB + 1");
}

/// `POST /api/<method>` with `head_extra` header lines and `body` sent as
/// chunks of at most 64 KiB.
fn chunked(method: &str, head_extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head_extra}Connection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(64 << 10) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn a_chunked_body_is_read_and_bounded_like_any_other() {
    const MIB: usize = 1 << 20;
    let server = server(&[]);
    let addr = server.addr();
    let mut alice = member(addr, "alice", &["lobby"]);
    let key = format!("x-api-key: {API_KEY}\r\n");
    let body = br#"{"room":"lobby","event":"t:chunked","data":[1,2]}"#;
    let resp = http_raw(addr, &chunked("publish", &key, body));
    result_of(&resp, "a chunked publish with a lower-case key header");
    common::rooms::assert_room_event(&alice.recv(), "t:chunked", "lobby", "[1,2]", "api", 1);

    let resp = http_raw(addr, &chunked("presence", &key, &padded_presence(MIB + 1)));
    assert_api_error(&resp, 413, "PAYLOAD_TOO_LARGE", "a chunked body over 1 MiB");
    let resp = http_raw(addr, &chunked("presence", "", &padded_presence(MIB + 1)));
    assert_api_error(&resp, 401, "UNAUTHENTICATED", "the same without a key");
    // Chunks that do not parse are no HTTP/1.1: section 1's 400, in the
    // shape of every API error.
    let mut bad = chunked("publish", &key, body);
    bad.splice(bad.len() - 5.., b"zz\r\n\r\n".iter().copied());
    let resp = http_raw(addr, &bad);
    assert_api_error(&resp, 400, "BAD_REQUEST", "malformed chunks");
    Api::key(addr).assert_next_is_marker(&mut alice, "lobby", 2, "chunked bodies");
}

#[test]
fn a_post_without_content_length_has_an_empty_body() {
    let server = server(&[]);
    // RFC 9112 6.3: a request with neither Content-Length nor
    // Transfer-Encoding has a body of length zero, which is `{}` here.
    let request = format!(
        "POST /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n\
         Connection: close\r\n\r\n"
    );
    let resp = http_raw(server.addr(), request.as_bytes());
    let info = result_of(&resp, "info without Content-Length");
    assert_eq!(common::rooms::keys(&info), ["nodes"]);
}

#[test]
fn the_api_is_served_on_the_metrics_listener_when_there_is_one() {
    let server = Server::start(&["--api-key", API_KEY, "--metrics-bind", "127.0.0.1:0"]);
    let operator = common::wait_for_stdout(&server, "roomcast metrics on ")
        .parse()
        .expect("metrics address");
    result_of(
        &Api::key(operator).call("info", "{}"),
        "the metrics listener",
    );
    let resp = Api::key(server.addr()).call("info", "{}");
    assert_api_error(&resp, 404, "NOT_FOUND", "the public port");
}
