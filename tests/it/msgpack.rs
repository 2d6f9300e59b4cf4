//! The `roomcast.msgpack` subprotocol (PROTOCOL.md section 14): chosen in
//! the 101 when offered, every message both ways a MessagePack map in a
//! binary frame, a text frame closed with 1003, what JSON cannot say
//! refused with `VALIDATION_ERROR`, JSON and MessagePack members of one
//! room seeing the same events, with permessage-deflate too. MessagePack
//! is written and read here by a codec of the test's own, not the
//! server's, so that a shared bug cannot hide; only the canonical base of
//! a delta (section 14) is, by definition, the server's own `to_json`.

use crate::common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use simd_json::OwnedValue;
use simd_json::prelude::*;
use tungstenite::Message;

use common::http::{UpgradeRequest, read_head};
use common::raw::{MASK, encode_frame};
use common::rooms::{Claims, Client, q};
use common::ws::{Ws, ws_request, ws_try};
use common::{RawWs, Server, opcode, parse_json};
use roomcast::proto::{fossil, scan};

const PROTOCOL: &str = "roomcast.msgpack";

/// The test's MessagePack writer: the smallest forms, as any library does.
fn pack(value: &OwnedValue, out: &mut Vec<u8>) {
    fn len(out: &mut Vec<u8>, n: usize, fix: u8, fix_max: usize, tags: [u8; 3]) {
        match n {
            _ if n <= fix_max => out.push(fix | n as u8),
            _ if n <= 0xff && tags[0] != 0 => out.extend_from_slice(&[tags[0], n as u8]),
            _ if n <= 0xffff => {
                out.push(tags[1]);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(tags[2]);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }
    if let Some(s) = value.as_str() {
        len(out, s.len(), 0xa0, 31, [0xd9, 0xda, 0xdb]);
        out.extend_from_slice(s.as_bytes());
    } else if let Some(items) = value.as_array() {
        len(out, items.len(), 0x90, 15, [0, 0xdc, 0xdd]);
        items.iter().for_each(|item| pack(item, out));
    } else if let Some(entries) = value.as_object() {
        len(out, entries.len(), 0x80, 15, [0, 0xde, 0xdf]);
        for (key, item) in entries.iter() {
            pack(&OwnedValue::from(key.to_string()), out);
            pack(item, out);
        }
    } else if value.is_null() {
        out.push(0xc0);
    } else if let Some(b) = value.as_bool() {
        out.push(if b { 0xc3 } else { 0xc2 });
    } else if let Some(n) = value.as_u64() {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Some(n) = value.as_i64() {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&value.as_f64().unwrap().to_bits().to_be_bytes());
    }
}

fn packed(json: &str) -> Vec<u8> {
    let mut out = Vec::new();
    pack(&parse_json(json), &mut out);
    out
}

/// The test's MessagePack reader, for the types the server may send.
fn unpack(bytes: &[u8], at: &mut usize) -> OwnedValue {
    let mut take = |n: usize| {
        let slice = &bytes[*at..*at + n];
        *at += n;
        slice.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    let tag = take(1) as u8;
    let (kind, n) = match tag {
        0x00..=0x7f => return OwnedValue::from(u64::from(tag)),
        0xe0..=0xff => return OwnedValue::from(i64::from(tag as i8)),
        0xc0 => return OwnedValue::null(),
        0xc2 => return OwnedValue::from(false),
        0xc3 => return OwnedValue::from(true),
        0xcc..=0xcf => return OwnedValue::from(take(1 << (tag - 0xcc))),
        0xd0 => return OwnedValue::from(i64::from(take(1) as u8 as i8)),
        0xd1 => return OwnedValue::from(i64::from(take(2) as u16 as i16)),
        0xd2 => return OwnedValue::from(i64::from(take(4) as u32 as i32)),
        0xd3 => return OwnedValue::from(take(8) as i64),
        0xcb => return OwnedValue::from(f64::from_bits(take(8))),
        0xa0..=0xbf => ('s', usize::from(tag & 0x1f)),
        0xd9 => ('s', take(1) as usize),
        0xda => ('s', take(2) as usize),
        0xdb => ('s', take(4) as usize),
        0x90..=0x9f => ('a', usize::from(tag & 0x0f)),
        0xdc => ('a', take(2) as usize),
        0xdd => ('a', take(4) as usize),
        0x80..=0x8f => ('m', usize::from(tag & 0x0f)),
        0xde => ('m', take(2) as usize),
        0xdf => ('m', take(4) as usize),
        _ => panic!("the server sent MessagePack type {tag:#x}"),
    };
    match kind {
        's' => {
            let s = std::str::from_utf8(&bytes[*at..*at + n]).expect("UTF-8");
            *at += n;
            OwnedValue::from(s.to_owned())
        }
        'a' => OwnedValue::from((0..n).map(|_| unpack(bytes, at)).collect::<Vec<_>>()),
        _ => {
            let mut object = simd_json::owned::Object::new();
            for _ in 0..n {
                let key = unpack(bytes, at);
                let key = key.as_str().expect("string keys").to_owned();
                object.insert(key, unpack(bytes, at));
            }
            OwnedValue::from(object)
        }
    }
}

/// One whole MessagePack value, nothing after it.
fn unpacked(bytes: &[u8]) -> OwnedValue {
    let mut at = 0;
    let value = unpack(bytes, &mut at);
    assert_eq!(at, bytes.len(), "bytes after the value");
    value
}

/// A `/ws` client that offered `offer` (tungstenite checks the 101 names
/// one of them).
struct Packed {
    ws: Ws,
}

impl Packed {
    fn connect(addr: SocketAddr, sub: &str, offer: &str) -> (Packed, OwnedValue) {
        let mut req = ws_request(addr, "/ws", Some(&Claims::new(sub).token()));
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
        let (ws, response) = ws_try(addr, req).expect("upgrade");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            PROTOCOL,
            "the 101 chooses MessagePack"
        );
        let mut client = Packed { ws };
        let hello = client.recv();
        assert_eq!(hello["event"], "connection:established", "{hello:?}");
        (client, hello)
    }

    fn send(&mut self, json: &str) {
        self.send_bytes(packed(json));
    }

    fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).unwrap();
    }

    fn recv(&mut self) -> OwnedValue {
        loop {
            match self.ws.read().expect("a message") {
                Message::Binary(bytes) => return unpacked(&bytes),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("not a binary frame: {other:?}"),
            }
        }
    }

    fn recv_skip_presence(&mut self) -> OwnedValue {
        loop {
            let value = self.recv();
            if !value["event"].as_str().unwrap().starts_with("presence:") {
                return value;
            }
        }
    }

    fn expect_close(&mut self) -> u16 {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(frame))) => return frame.code.into(),
                Ok(Message::Close(None)) => panic!("close without a code"),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    }
}

/// The code of a failed ack or of an error event.
fn error_code(reply: &OwnedValue) -> &str {
    let error = match reply.get("error") {
        Some(error) => error,
        None => reply.get("data").unwrap_or_else(|| panic!("{reply:?}")),
    };
    error
        .get_str("code")
        .unwrap_or_else(|| panic!("not an error: {reply:?}"))
}

#[test]
fn msgpack_and_json_members_see_the_same_room_events() {
    let server = Server::start(&[]);
    let (mut packed_member, hello) = Packed::connect(server.addr(), "mp", PROTOCOL);
    assert!(hello["data"]["connId"].is_str(), "{hello:?}");
    let mut json_member = Client::user(server.addr(), "js");
    json_member.join("lobby");
    packed_member.send(r#"{"event":"room:join","room":"lobby","data":{"room":"lobby"},"id":1}"#);
    let ack = packed_member.recv_skip_presence();
    assert_eq!(ack["event"], "ack", "{ack:?}");
    assert_eq!(ack["id"], 1u64, "an integer id stays an integer");
    assert_eq!(ack["data"]["room"], "lobby", "{ack:?}");

    // Integers past 2^53, floats, nil, nesting and unicode, both ways.
    let data = r#"{"big":18446744073709551615,"neg":-9223372036854775808,"f":0.1,"none":null,"deep":[[{"é":"😀"}]],"t":true}"#;
    packed_member.send(&format!(
        r#"{{"event":"chat:msg","room":"lobby","data":{data},"id":"p1","echo":true}}"#
    ));
    // The ack and the echoed event, in either order.
    let (mut ack, mut echoed) = (
        packed_member.recv_skip_presence(),
        packed_member.recv_skip_presence(),
    );
    if echoed.get_str("event") == Some("ack") {
        std::mem::swap(&mut ack, &mut echoed);
    }
    assert_eq!(ack.get_str("id"), Some("p1"), "{ack:?}");
    let seq = ack["data"]["seq"].as_u64().unwrap();
    let seen = json_member.recv_skip_presence();
    let seen = parse_json(&seen);
    assert_eq!(echoed, seen, "one event, two encodings");
    assert_eq!(echoed["data"], parse_json(data));
    assert_eq!(echoed["seq"], seq);
    assert_eq!(echoed["from"], "mp");

    // A JSON publisher's event reaches the MessagePack member.
    json_member.publish_ok("lobby", "chat:msg", r#"{"text":"hi","n":[1,2.5]}"#);
    let event = packed_member.recv_skip_presence();
    assert_eq!(event["data"], parse_json(r#"{"text":"hi","n":[1,2.5]}"#));
    assert_eq!(event["from"], "js");

    // Direct messages and errors are MessagePack too.
    json_member.request(
        "user:send",
        r#"{"to":"mp","event":"dm:hi","data":{"x":1}}"#,
        "",
    );
    let direct = packed_member.recv_skip_presence();
    assert_eq!(direct["event"], "dm:hi", "{direct:?}");
    packed_member.send(r#"{"event":"no such","id":2}"#);
    let refused = packed_member.recv_skip_presence();
    assert_eq!(error_code(&refused), "VALIDATION_ERROR", "{refused:?}");
}

#[test]
fn what_json_cannot_say_is_a_validation_error() {
    let server = Server::start(&[]);
    let (mut client, _) = Packed::connect(server.addr(), "mp", "roomcast.v1, roomcast.msgpack");
    let event = packed(r#"{"event":"chat:msg","room":"r"}"#);
    let with_data = |value: &[u8]| {
        let mut bytes = vec![0x83];
        bytes.extend_from_slice(&event[1..]);
        bytes.extend_from_slice(&[0xa4, b'd', b'a', b't', b'a']);
        bytes.extend_from_slice(value);
        bytes
    };
    let deep = [vec![0x91; 70], vec![0xc0]].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bin", with_data(&[0xc4, 2, 1, 2])),
        ("ext", with_data(&[0xd4, 1, 0])),
        ("non-string key", vec![0x81, 0x01, 0xa1, b'x']),
        ("truncated", event[..event.len() - 2].to_vec()),
        ("too deep", with_data(&deep)),
        ("NaN", with_data(&[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0])),
        ("string past its end", vec![0x81, 0xa5, b'e', b'v']),
        ("reserved type", vec![0xc1]),
        (
            "two values",
            [packed(r#"{"event":"ping"}"#), vec![0xc0]].concat(),
        ),
    ];
    for (what, bytes) in cases {
        client.send_bytes(bytes);
        let reply = client.recv();
        assert_eq!(error_code(&reply), "VALIDATION_ERROR", "{what}: {reply:?}");
    }
    // Well-formed MessagePack gets what the same JSON would.
    for (json, code) in [
        ("[1,2]", "INVALID_MESSAGE"),
        (r#"{"event":"NOPE"}"#, "VALIDATION_ERROR"),
        (
            r#"{"event":"chat:msg","room":"r","id":9007199254740992}"#,
            "VALIDATION_ERROR",
        ),
    ] {
        client.send(json);
        let reply = client.recv();
        assert_eq!(error_code(&reply), code, "{json}: {reply:?}");
    }
    client.send(r#"{"event":"ping"}"#);
    let pong = client.recv();
    assert_eq!(
        pong.get_str("event"),
        Some("pong"),
        "the connection lives on: {pong:?}"
    );
}

#[test]
fn a_text_frame_closes_a_msgpack_connection_with_1003() {
    let server = Server::start(&[]);
    let (mut client, _) = Packed::connect(server.addr(), "mp", PROTOCOL);
    client
        .ws
        .send(Message::text(r#"{"event":"ping"}"#))
        .unwrap();
    assert_eq!(client.expect_close(), 1003);

    // And a JSON connection still closes with 1003 on a binary frame.
    let mut json = Client::user(server.addr(), "js");
    json.send_binary(&packed(r#"{"event":"ping"}"#));
    assert_eq!(json.expect_close(Duration::from_secs(5)), 1003);
}

#[test]
fn without_the_offer_a_connection_speaks_json() {
    let server = Server::start(&[]);
    let mut req = ws_request(server.addr(), "/ws", Some(&Claims::new("js").token()));
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "roomcast.v1".parse().unwrap());
    let (mut ws, response) = ws_try(server.addr(), req).unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "roomcast.v1");
    assert!(matches!(ws.read().unwrap(), Message::Text(_)));
}

/// A raw `/ws` client that chose MessagePack, offering permessage-deflate
/// when `deflate` (and checking it was agreed), past its greeting.
fn raw_packed(addr: SocketAddr, sub: &str, deflate: bool) -> RawWs {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = UpgradeRequest::new("/ws")
        .bearer(&Claims::new(sub).token())
        .header("Sec-WebSocket-Protocol", PROTOCOL);
    if deflate {
        request = request.header("Sec-WebSocket-Extensions", "permessage-deflate");
    }
    stream.write_all(&request.to_bytes()).unwrap();
    let (head, rest) = read_head(&mut stream);
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("sec-websocket-protocol"), Some(PROTOCOL));
    assert_eq!(head.header("sec-websocket-extensions").is_some(), deflate);
    let mut member = RawWs::from_parts(stream, rest);
    let (kind, hello) = member.read_message();
    assert_eq!(kind, opcode::BINARY);
    assert_eq!(unpacked(&hello)["event"], "connection:established");
    member
}

#[test]
fn msgpack_room_events_are_compressed_when_agreed() {
    let server = Server::start(&["--compression", "on"]);
    let addr = server.addr();
    let mut member = raw_packed(addr, "mp", true);

    // A compressed join, answered.
    let join = packed(r#"{"event":"room:join","room":"feed","data":{"room":"feed"},"id":"j"}"#);
    member.send_raw(&crate::compression::compressed_frame(opcode::BINARY, &join));
    let frame = member.read_non_ping();
    assert_eq!(frame.opcode, opcode::BINARY);
    let ack = unpacked(&inflate_if(&frame));
    assert_eq!(ack["id"], "j", "{ack:?}");

    let mut publisher = common::rooms::publisher(addr, "pub");
    let text = "compressible price update ".repeat(40);
    publisher.publish_ok("feed", "price:tick", &format!(r#"{{"t":{}}}"#, q(&text)));
    let frame = member.read_non_ping();
    assert_eq!(
        (frame.opcode, frame.rsv),
        (opcode::BINARY, 0b100),
        "RSV1 binary"
    );
    assert!(frame.payload.len() < text.len() / 4);
    let event = unpacked(&crate::compression::inflate(&frame.payload));
    assert_eq!(event["data"]["t"], text.as_str());
}

/// A MessagePack publish split over a binary frame and two continuation
/// frames, a ping between the first two, is read as one message: acked,
/// answered the ping meanwhile, and delivered to a JSON member; and so
/// with permessage-deflate, RSV1 on the first frame only (RFC 7692 6.1).
#[test]
fn a_fragmented_msgpack_publish_is_read_whole_with_and_without_deflate() {
    let server = Server::start(&["--compression", "on"]);
    let addr = server.addr();
    let mut json_member = Client::user(addr, "js");
    json_member.join("frag");
    for deflate in [false, true] {
        let mut publisher = raw_packed(addr, "mp", deflate);
        let join = packed(r#"{"event":"room:join","room":"frag","data":{"room":"frag"},"id":"j"}"#);
        publisher.send_frame(true, opcode::BINARY, &join);
        let joined = unpacked(&inflate_if(&publisher.read_non_ping()));
        assert_eq!(joined["id"], "j", "{joined:?}");
        let data = format!(
            r#"{{"text":"fragmenté – 東京 😀 {deflate}","pad":{}}}"#,
            q(&"x".repeat(300))
        );
        let message = packed(&format!(
            r#"{{"event":"chat:msg","room":"frag","data":{data},"id":"f"}}"#
        ));
        let (payload, rsv) = if deflate {
            (
                crate::compression::deflate(&message),
                crate::compression::RSV1,
            )
        } else {
            (message, 0)
        };
        let third = payload.len() / 3;
        let (first, rest) = payload.split_at(third);
        let (second, last) = rest.split_at(third);
        let frame = |fin, rsv, kind, part: &[u8]| encode_frame(fin, rsv, kind, part, Some(MASK));
        publisher.send_raw(&frame(false, rsv, opcode::BINARY, first));
        publisher.send_raw(&frame(true, 0, opcode::PING, b"mid"));
        publisher.send_raw(&frame(false, 0, opcode::CONTINUATION, second));
        publisher.send_raw(&frame(true, 0, opcode::CONTINUATION, last));
        let mut ponged = false;
        let ack = loop {
            let frame = publisher.read_frame();
            match frame.opcode {
                opcode::PONG => ponged = frame.payload == b"mid",
                opcode::BINARY => break unpacked(&inflate_if(&frame)),
                other => panic!("{deflate}: opcode {other}"),
            }
        };
        assert!(ponged, "{deflate}: the ping between fragments answered");
        assert_eq!(ack["event"], "ack", "{deflate}: {ack:?}");
        let (id, success) = (ack["id"].as_str(), ack["success"].as_bool());
        assert_eq!((id, success), (Some("f"), Some(true)), "{deflate}: {ack:?}");
        let event = parse_json(&json_member.recv_skip_presence());
        assert_eq!(event["data"], parse_json(&data), "{deflate}");
        assert_eq!(event["from"], "mp");
    }
}

fn inflate_if(frame: &common::raw::Frame) -> Vec<u8> {
    if frame.rsv == 0b100 {
        crate::compression::inflate(&frame.payload)
    } else {
        frame.payload.clone()
    }
}

/// The JSON text of the MessagePack value at `at`, written by section
/// 14's MessagePack to JSON rules (compact, keys in order, integers
/// exact, floats the shortest text that reads back, strings escaped as
/// the server escapes them): the text a delta's source is, for `data`
/// the server wrote in that same form.
fn json_text(bytes: &[u8], at: &mut usize, out: &mut String) {
    let start = *at;
    let value = unpack(bytes, at);
    match bytes[start] {
        tag @ (0x80..=0x9f | 0xdc..=0xdf) => {
            let map = matches!(tag, 0x80..=0x8f | 0xde..=0xdf);
            let (mut pos, n) = header(bytes, start);
            out.push(if map { '{' } else { '[' });
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                if map {
                    json_text(bytes, &mut pos, out);
                    out.push(':');
                }
                json_text(bytes, &mut pos, out);
            }
            out.push(if map { '}' } else { ']' });
        }
        0xcb => out.push_str(&format!("{:?}", value.as_f64().unwrap())),
        _ if value.is_str() => {
            out.push('"');
            for c in value.as_str().unwrap().chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        _ => out.push_str(&value.encode()),
    }
}

/// Where the items of the map or array at `start` begin, and how many.
fn header(bytes: &[u8], start: usize) -> (usize, usize) {
    let be = |from: usize, n: usize| {
        bytes[from..from + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    match bytes[start] {
        tag @ 0x80..=0x9f => (start + 1, usize::from(tag & 0x0f)),
        0xdc | 0xde => (start + 3, be(start + 1, 2)),
        _ => (start + 5, be(start + 1, 4)),
    }
}

/// A MessagePack delta member's view of a room event (a binary frame's
/// bytes): its `seq`, and its `data` JSON text, rebuilt from a delta over
/// `base` (the previous `data` text) when it came as one; `true` then.
fn rebuild_packed(bytes: &[u8], base: &str) -> (u64, String, bool) {
    let event = unpacked(bytes);
    let keys: Vec<String> = {
        let (mut pos, n) = header(bytes, 0);
        (0..n)
            .map(|_| {
                let key = unpack(bytes, &mut pos).as_str().unwrap().to_owned();
                unpack(bytes, &mut pos);
                key
            })
            .collect()
    };
    let seq = event["seq"].as_u64().expect("a seq");
    let Some(delta) = event.get_str("delta") else {
        let (mut pos, n) = header(bytes, 0);
        let mut data = String::new();
        for _ in 0..n {
            let key = unpack(bytes, &mut pos);
            if key.as_str() == Some("data") {
                json_text(bytes, &mut pos, &mut data);
            } else {
                unpack(bytes, &mut pos);
            }
        }
        return (seq, data, false);
    };
    assert_eq!(
        keys,
        ["event", "room", "delta", "from", "seq", "ts"],
        "a delta event's keys, in order"
    );
    let data = fossil::apply(base.as_bytes(), delta.as_bytes(), 1 << 20).expect("applies");
    (seq, String::from_utf8(data).expect("UTF-8"), true)
}

/// A price tick in the form the server writes `data` it read as
/// MessagePack (compact, floats with a fraction), non-ASCII too.
fn tick(n: u64) -> String {
    format!(
        r#"{{"symbol":"ACME","bid":{}.25,"ask":{}.75,"volume":{},"desk":"Zürich – 東京 ✓","note":"prix à payer {}","levels":[1,2,3,4,5,6,7,8,9,10],"n":{n}}}"#,
        100 + n % 3,
        101 + n % 3,
        1000 + n * 13,
        "é".repeat((n % 4) as usize)
    )
}

/// The next room event a MessagePack member receives, as its frame's bytes.
fn next_event_bytes(member: &mut Packed) -> Vec<u8> {
    loop {
        match member.ws.read().expect("a message") {
            Message::Binary(bytes) => {
                if unpacked(&bytes)["event"] == "feed:tick" {
                    return bytes.to_vec();
                }
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("not a binary frame: {other:?}"),
        }
    }
}

/// `data.delta` (section 14) for MessagePack members: an event that
/// directly follows the last one a member received comes as the MessagePack
/// map of the delta event, whose `delta` string applies to the previous
/// `data` JSON text, exactly when a JSON delta member gets a delta; each
/// member rebuilds what a plain JSON member receives, seq by seq. After a
/// gap (`maxRate` skipped events) the event is whole.
#[test]
fn a_msgpack_delta_member_rebuilds_what_a_plain_json_member_gets() {
    let server = Server::start(&["--shards", "2", "--accept", "handoff"]);
    let addr = server.addr();
    let join = |member: &mut Packed, extra: &str| {
        member.send(&format!(
            r#"{{"event":"room:join","data":{{"room":"prices"{extra}}},"id":1}}"#
        ));
        assert_eq!(member.recv_skip_presence()["event"], "ack");
    };
    let packed_members: Vec<Packed> = ["mp1", "mp2"]
        .iter()
        .map(|sub| {
            let (mut member, _) = Packed::connect(addr, sub, PROTOCOL);
            join(&mut member, r#","delta":true"#);
            member
        })
        .collect();
    let mut packed_members = packed_members;
    let mut json_delta = Client::user(addr, "jd");
    common::rooms::ok_data(&json_delta.join_with(r#"{"room":"prices","delta":true}"#));
    let mut plain = Client::user(addr, "plain");
    plain.join("prices");
    let mut publisher = common::rooms::publisher(addr, "feed");
    const N: u64 = 12;
    for n in 1..=N {
        publisher.publish_ok("prices", "feed:tick", &tick(n));
    }
    let next_text = |client: &mut Client| loop {
        let text = client.recv();
        if text.starts_with(r#"{"event":"feed:tick""#) {
            return text;
        }
    };
    let want: Vec<(u64, String)> = (0..N)
        .map(|_| {
            let text = next_text(&mut plain);
            let data = scan::field_range(text.as_bytes(), "data").unwrap();
            (common::rooms::seq_of(&text), text[data].to_owned())
        })
        .collect();
    assert_eq!(want[4].1, tick(5), "the data as published");
    let json_came: Vec<bool> = (0..N)
        .map(|_| next_text(&mut json_delta).contains(r#","delta":"#))
        .collect();
    for member in &mut packed_members {
        let mut base = String::new();
        let mut came = Vec::new();
        for (seq, data) in &want {
            let (got_seq, got, delta) = rebuild_packed(&next_event_bytes(member), &base);
            assert_eq!((got_seq, &got), (*seq, data), "seq {seq}");
            came.push(delta);
            base = got;
        }
        assert_eq!(
            came, json_came,
            "deltas exactly when a JSON member gets them"
        );
        assert!(!came[0] && came[1..].iter().all(|&d| d), "{came:?}");
    }

    // A paced delta member skips events: the one after the gap is whole,
    // the next a delta again.
    let (mut paced, _) = Packed::connect(addr, "paced", PROTOCOL);
    join(&mut paced, r#","delta":true,"maxRate":2"#);
    for n in N + 1..=N + 3 {
        publisher.publish_ok("prices", "feed:tick", &tick(n));
    }
    let mut came = Vec::new();
    let mut base = String::new();
    for _ in 0..2 {
        let (seq, data, delta) = rebuild_packed(&next_event_bytes(&mut paced), &base);
        came.push((seq, delta));
        base = data;
    }
    std::thread::sleep(Duration::from_millis(700));
    publisher.publish_ok("prices", "feed:tick", &tick(N + 4));
    let (seq, data, delta) = rebuild_packed(&next_event_bytes(&mut paced), &base);
    came.push((seq, delta));
    assert_eq!(came, [(N + 1, false), (N + 3, false), (N + 4, true)]);
    assert_eq!(data, tick(N + 4));
}

/// The bytes of the `data` value in a room event's MessagePack map.
fn data_bytes(bytes: &[u8]) -> &[u8] {
    let (mut pos, n) = header(bytes, 0);
    for _ in 0..n {
        let key = unpack(bytes, &mut pos);
        let start = pos;
        unpack(bytes, &mut pos);
        if key.as_str() == Some("data") {
            return &bytes[start..pos];
        }
    }
    panic!("an event without data");
}

/// `tick(n)` as a publisher may write it, not in the server's canonical
/// form: spaces, `.250`, an escaped `ü`.
fn loose_tick(n: u64) -> String {
    tick(n)
        .replacen(".25,", ".250,", 1)
        .replace("Zürich", "Z\\u00fcrich")
        .replace(",\"", ", \"")
}

/// Section 14's canonical base: a MessagePack delta member is sent a delta
/// only from an event whose `data` text is canonical, the text it rebuilds
/// from the whole event's MessagePack `data` (here with the server's own
/// `msgpack::to_json`); after a published text that is not (spaces, `.250`,
/// `\u00fc`) it gets the whole event, while a JSON delta member still gets
/// the delta. Either way it ends up with exactly what a plain member gets.
#[test]
fn a_msgpack_delta_member_gets_whole_events_after_a_non_canonical_base() {
    use roomcast::proto::msgpack;

    let server = Server::start(&["--shards", "2", "--accept", "handoff"]);
    let addr = server.addr();
    let (mut packed, _) = Packed::connect(addr, "mp", PROTOCOL);
    packed.send(r#"{"event":"room:join","data":{"room":"feed","delta":true},"id":1}"#);
    assert_eq!(packed.recv_skip_presence()["event"], "ack");
    let mut json_delta = Client::user(addr, "jd");
    common::rooms::ok_data(&json_delta.join_with(r#"{"room":"feed","delta":true}"#));
    let mut plain = Client::user(addr, "plain");
    plain.join("feed");
    let mut publisher = common::rooms::publisher(addr, "pub");
    let canonical = [
        false, false, true, true, false, true, true, false, false, true,
    ];
    for (n, &canonical) in (1..).zip(&canonical) {
        let data = if canonical { tick(n) } else { loose_tick(n) };
        publisher.publish_ok("feed", "feed:tick", &data);
    }
    let next_text = |client: &mut Client| loop {
        let text = client.recv();
        if text.starts_with(r#"{"event":"feed:tick""#) {
            return text;
        }
    };
    let want: Vec<String> = canonical
        .iter()
        .map(|_| {
            let text = next_text(&mut plain);
            text[scan::field_range(text.as_bytes(), "data").unwrap()].to_owned()
        })
        .collect();
    assert_eq!(want[1], loose_tick(2), "the data as published");
    let json_came: Vec<bool> = canonical
        .iter()
        .map(|_| next_text(&mut json_delta).contains(r#","delta":"#))
        .collect();

    let mut base = String::new();
    let mut came = Vec::new();
    for want in &want {
        let bytes = next_event_bytes(&mut packed);
        let delta = unpacked(&bytes).get_str("delta").map(str::to_owned);
        let got = match &delta {
            Some(delta) => {
                let data = fossil::apply(base.as_bytes(), delta.as_bytes(), 1 << 20)
                    .expect("a delta applies to the canonical base");
                String::from_utf8(data).unwrap()
            }
            None => {
                let mut text = Vec::new();
                msgpack::to_json(data_bytes(&bytes), &mut text).unwrap();
                String::from_utf8(text).unwrap()
            }
        };
        if delta.is_some() {
            assert_eq!(&got, want, "a delta rebuilds the very text published");
        } else {
            assert_eq!(parse_json(&got), parse_json(want), "the same value");
        }
        came.push(delta.is_some());
        base = got;
    }
    let expected: Vec<bool> = (0..canonical.len())
        .map(|i| i > 0 && canonical[i - 1] && json_came[i])
        .collect();
    assert_eq!(came, expected, "deltas from canonical bases only");
    assert!(
        (1..canonical.len()).any(|i| json_came[i] && !canonical[i - 1]),
        "a JSON member still gets deltas from non-canonical bases: {json_came:?}"
    );
    assert!(came.iter().filter(|&&d| d).count() >= 3, "{came:?}");
}
