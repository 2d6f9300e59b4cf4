//! Helpers for the rooms surface (PROTOCOL.md sections 6-8): tokens with
//! the `rooms`/`pub`/`admin`/`rate`/`name` claims, a client that matches acks
//! to requests by `id` while keeping every other message in arrival order,
//! exact checks of a room event's raw text, and the server's RSS.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use simd_json::OwnedValue;
use simd_json::prelude::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use super::token::{mint, now};
use super::ws::{Ws, is_interrupted, is_timeout, ws_connect};
use super::{READ_TIMEOUT, Server, json_at, json_str, parse_json};

/// A JSON string literal for `s` (quotes and escapes).
pub fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn patterns(list: &[&str]) -> String {
    let items: Vec<String> = list.iter().map(|p| q(p)).collect();
    format!("[{}]", items.join(","))
}

/// The claims of a test token; `Claims::new("u1").rooms(&["lobby"]).token()`.
#[derive(Debug, Clone)]
pub struct Claims {
    sub: String,
    exp: u64,
    name: Option<String>,
    rooms: Option<Vec<String>>,
    publish: Option<Vec<String>>,
    admin: Option<bool>,
    rate: Option<u64>,
}

impl Claims {
    /// `sub`, expiring in an hour, no optional claim.
    pub fn new(sub: &str) -> Claims {
        Claims {
            sub: sub.to_owned(),
            exp: now() + 3600,
            name: None,
            rooms: None,
            publish: None,
            admin: None,
            rate: None,
        }
    }

    pub fn name(mut self, name: &str) -> Claims {
        self.name = Some(name.to_owned());
        self
    }

    /// The `rooms` claim (join patterns).
    pub fn rooms(mut self, list: &[&str]) -> Claims {
        self.rooms = Some(list.iter().map(|s| s.to_string()).collect());
        self
    }

    /// The `pub` claim (publish patterns).
    pub fn publish(mut self, list: &[&str]) -> Claims {
        self.publish = Some(list.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn admin(mut self, admin: bool) -> Claims {
        self.admin = Some(admin);
        self
    }

    /// The `rate` claim (messages per second, 0 = unlimited).
    pub fn rate(mut self, rate: u64) -> Claims {
        self.rate = Some(rate);
        self
    }

    /// `exp` as an absolute Unix time in seconds.
    pub fn exp(mut self, exp: u64) -> Claims {
        self.exp = exp;
        self
    }

    pub fn json(&self) -> String {
        let mut out = format!(r#"{{"sub":{},"exp":{}"#, q(&self.sub), self.exp);
        if let Some(name) = &self.name {
            out.push_str(&format!(r#","name":{}"#, q(name)));
        }
        if let Some(rooms) = &self.rooms {
            let list: Vec<&str> = rooms.iter().map(String::as_str).collect();
            out.push_str(&format!(r#","rooms":{}"#, patterns(&list)));
        }
        if let Some(publish) = &self.publish {
            let list: Vec<&str> = publish.iter().map(String::as_str).collect();
            out.push_str(&format!(r#","pub":{}"#, patterns(&list)));
        }
        if let Some(admin) = self.admin {
            out.push_str(&format!(r#","admin":{admin}"#));
        }
        if let Some(rate) = self.rate {
            out.push_str(&format!(r#","rate":{rate}"#));
        }
        out.push('}');
        out
    }

    /// The signed JWT.
    pub fn token(&self) -> String {
        mint(&self.json())
    }
}

/// A server started with `extra` flags that announces no presence in
/// "lobby", and alice and bob joined to it.
pub fn alice_and_bob_in_lobby(extra: &[&str]) -> (Server, Client, Client) {
    let mut args = vec!["--presence-rooms", "presence-only"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let mut a = Client::user(server.addr(), "alice");
    let mut b = Client::user(server.addr(), "bob");
    a.join("lobby");
    b.join("lobby");
    (server, a, b)
}

/// A client of `sub` that may publish anywhere, at any rate.
pub fn publisher(addr: SocketAddr, sub: &str) -> Client {
    Client::connect(addr, &Claims::new(sub).publish(&["*"]).rate(0).token())
}

/// A `/ws` client. Acks are matched to requests by `id`; every other message
/// received meanwhile is kept, in order, for [`Client::recv`].
pub struct Client {
    pub ws: Ws,
    pending: VecDeque<String>,
    next_id: u64,
    /// The `connection:established` greeting.
    pub hello: OwnedValue,
}

impl Client {
    /// Connects to `/ws` with `token` and reads the greeting.
    pub fn connect(addr: SocketAddr, token: &str) -> Client {
        let mut ws = ws_connect(addr, "/ws", token);
        let hello = parse_json(&read_text(&mut ws, READ_TIMEOUT).expect("greeting"));
        assert_eq!(
            json_str(&hello, &["event"]),
            Some("connection:established"),
            "{hello:?}"
        );
        Client {
            ws,
            pending: VecDeque::new(),
            next_id: 0,
            hello,
        }
    }

    /// Connects as `sub` with no optional claim.
    pub fn user(addr: SocketAddr, sub: &str) -> Client {
        Client::connect(addr, &Claims::new(sub).token())
    }

    pub fn conn_id(&self) -> String {
        json_str(&self.hello, &["data", "connId"])
            .unwrap()
            .to_owned()
    }

    /// Sends one text message as it is.
    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send to server");
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .expect("send to server");
    }

    /// The next text message (kept ones first); `None` after `timeout` of silence.
    pub fn try_recv(&mut self, timeout: Duration) -> Option<String> {
        if let Some(text) = self.pending.pop_front() {
            return Some(text);
        }
        read_text(&mut self.ws, timeout)
    }

    /// The next text message; panics after [`READ_TIMEOUT`].
    pub fn recv(&mut self) -> String {
        self.try_recv(READ_TIMEOUT)
            .unwrap_or_else(|| panic!("no message within {READ_TIMEOUT:?}"))
    }

    pub fn recv_json(&mut self) -> OwnedValue {
        parse_json(&self.recv())
    }

    /// The next message whose event is not `presence:*` (those are skipped).
    pub fn recv_skip_presence(&mut self) -> String {
        loop {
            let text = self.recv();
            if !text.starts_with(r#"{"event":"presence:"#) {
                return text;
            }
        }
    }

    /// Asserts nothing arrives within `quiet`.
    pub fn assert_quiet(&mut self, quiet: Duration) {
        if let Some(text) = self.try_recv(quiet) {
            panic!("expected no message, got {text}");
        }
    }

    /// A fresh request id.
    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("r{}", self.next_id)
    }

    /// Sends `{"event": event, "data": data, "id": fresh}` plus `extra`
    /// fields (a JSON fragment like `"room":"x"`, or empty) and returns the
    /// ack with that id. Other messages received meanwhile are kept.
    pub fn request(&mut self, event: &str, data: &str, extra: &str) -> OwnedValue {
        let id = self.new_id();
        let sep = if extra.is_empty() { "" } else { "," };
        self.send(&format!(
            r#"{{"event":{},"data":{data},"id":{}{sep}{extra}}}"#,
            q(event),
            q(&id)
        ));
        parse_json(&self.wait_ack(&id))
    }

    /// Reads until the ack carrying the string `id`; returns its raw text.
    pub fn wait_ack(&mut self, id: &str) -> String {
        let mut kept = Vec::new();
        let found = loop {
            let text = read_text(&mut self.ws, READ_TIMEOUT).unwrap_or_else(|| {
                panic!("no ack for {id} within {READ_TIMEOUT:?}; got meanwhile: {kept:?}")
            });
            if text.starts_with(r#"{"event":"ack""#) {
                let v = parse_json(&text);
                if json_str(&v, &["id"]) == Some(id) {
                    break text;
                }
            }
            kept.push(text);
        };
        self.pending.extend(kept);
        found
    }

    /// `room:join` with `data` (a JSON object text); returns the ack.
    pub fn join_with(&mut self, data: &str) -> OwnedValue {
        self.request("room:join", data, "")
    }

    /// Joins `room`; panics unless the ack is a success. Returns its `data`.
    pub fn join(&mut self, room: &str) -> OwnedValue {
        let ack = self.join_with(&format!(r#"{{"room":{}}}"#, q(room)));
        ok_data(&ack).clone()
    }

    /// Leaves `room`; panics unless the ack is a success.
    pub fn leave(&mut self, room: &str) {
        let ack = self.request("room:leave", &format!(r#"{{"room":{}}}"#, q(room)), "");
        let data = ok_data(&ack);
        assert_eq!(json_str(data, &["room"]), Some(room), "{ack:?}");
    }

    /// Publishes `event` with `data` (JSON text) to `room` with an id; the ack.
    pub fn publish(&mut self, room: &str, event: &str, data: &str) -> OwnedValue {
        self.request(event, data, &format!(r#""room":{}"#, q(room)))
    }

    /// Publishes and returns the acked `seq`; panics unless the ack is a success.
    pub fn publish_ok(&mut self, room: &str, event: &str, data: &str) -> u64 {
        let ack = self.publish(room, event, data);
        ack_seq(&ack)
    }

    /// Reads until a close frame; its code. Other messages are skipped.
    pub fn expect_close(&mut self, timeout: Duration) -> u16 {
        self.close_frame(timeout).0
    }

    /// Reads until a close frame; its code and reason (1005 and no reason
    /// for a close frame without a body). Other messages are skipped.
    pub fn close_frame(&mut self, timeout: Duration) -> (u16, String) {
        self.ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => {
                    let _ = self.ws.flush();
                    return frame.map_or((u16::from(CloseCode::Status), String::new()), |f| {
                        (u16::from(f.code), f.reason.as_str().to_owned())
                    });
                }
                Ok(_) => {}
                Err(e) if is_interrupted(&e) => {}
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                    panic!("no close frame within {timeout:?}")
                }
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "no close frame within {timeout:?}"
            );
        }
    }

    /// Asserts the connection still answers a ping event (its pong and ack
    /// are consumed; other messages stay kept).
    pub fn assert_open(&mut self) {
        let ack = self.request("ping", "null", "");
        ok_data(&ack);
        let is_pong = |t: &String| t.starts_with(r#"{"event":"pong""#);
        if let Some(at) = self.pending.iter().rposition(is_pong) {
            self.pending.remove(at);
        } else {
            let text = self.recv();
            assert!(is_pong(&text), "expected the pong, got {text}");
        }
    }
}

/// Reads the next text message within `timeout` (pings and pongs skipped);
/// `None` on silence. Panics on a close or a binary message.
pub fn read_text(ws: &mut Ws, timeout: Duration) -> Option<String> {
    ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
    let deadline = Instant::now() + timeout;
    let result = loop {
        match ws.read() {
            Ok(Message::Text(t)) => break Some(t.as_str().to_owned()),
            Ok(Message::Ping(_) | Message::Pong(_)) => {
                if Instant::now() >= deadline {
                    break None;
                }
            }
            Ok(other) => panic!("expected a text message, got {other:?}"),
            Err(e) if is_interrupted(&e) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => break None,
            Err(e) => panic!("read failed: {e}"),
        }
    };
    ws.get_mut().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    result
}

/// The event name of a message.
pub fn event(v: &OwnedValue) -> &str {
    json_str(v, &["event"]).unwrap_or_else(|| panic!("no event in {v:?}"))
}

/// The `data` of a successful ack; panics on anything else.
pub fn ok_data(ack: &OwnedValue) -> &OwnedValue {
    assert_eq!(event(ack), "ack", "{ack:?}");
    assert_eq!(
        json_at(ack, &["success"]).and_then(|v| v.as_bool()),
        Some(true),
        "expected a successful ack, got {ack:?}"
    );
    json_at(ack, &["data"]).unwrap_or_else(|| panic!("no data in {ack:?}"))
}

/// The error code of a failed ack (with a message); panics on anything else.
pub fn ack_error(ack: &OwnedValue) -> String {
    assert_eq!(event(ack), "ack", "{ack:?}");
    assert_eq!(
        json_at(ack, &["success"]).and_then(|v| v.as_bool()),
        Some(false),
        "expected a failed ack, got {ack:?}"
    );
    assert!(
        json_str(ack, &["error", "message"]).is_some(),
        "no error.message in {ack:?}"
    );
    json_str(ack, &["error", "code"])
        .unwrap_or_else(|| panic!("no error.code in {ack:?}"))
        .to_owned()
}

/// The code of an `error` event (with a message); panics on anything else.
pub fn error_event_code(v: &OwnedValue) -> String {
    assert_eq!(event(v), "error", "{v:?}");
    assert!(
        json_str(v, &["data", "message"]).is_some(),
        "no data.message in {v:?}"
    );
    json_str(v, &["data", "code"])
        .unwrap_or_else(|| panic!("no data.code in {v:?}"))
        .to_owned()
}

/// The `seq` of a successful publish ack, whose `data` must be exactly `{"seq"}`.
pub fn ack_seq(ack: &OwnedValue) -> u64 {
    let data = ok_data(ack);
    assert_eq!(keys(data), ["seq"], "publish ack data of {ack:?}");
    data.get("seq")
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no integer seq in {ack:?}"))
}

/// The keys of a JSON object, sorted.
pub fn keys(v: &OwnedValue) -> Vec<String> {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v:?}"));
    let mut keys: Vec<String> = obj.keys().map(|k| k.to_string()).collect();
    keys.sort();
    keys
}

/// The keys of `v` as a sorted list of `&str` literals, for comparisons.
pub fn sorted(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

pub fn u64_at(v: &OwnedValue, path: &[&str]) -> u64 {
    json_at(v, path)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("no unsigned integer at {path:?} in {v:?}"))
}

pub fn str_at<'a>(v: &'a OwnedValue, path: &[&str]) -> &'a str {
    json_str(v, path).unwrap_or_else(|| panic!("no string at {path:?} in {v:?}"))
}

/// The array at `path`.
pub fn array_at<'a>(v: &'a OwnedValue, path: &[&str]) -> &'a Vec<OwnedValue> {
    json_at(v, path)
        .and_then(|x| x.as_array())
        .unwrap_or_else(|| panic!("no array at {path:?} in {v:?}"))
}

/// Checks that `text` is exactly
/// `{"event":E,"room":R,"data":D,"from":F,"seq":S,"ts":T}` with `data` the
/// verbatim `data` text and the fields in this order; returns `ts`.
pub fn assert_room_event(
    text: &str,
    event: &str,
    room: &str,
    data: &str,
    from: &str,
    seq: u64,
) -> u64 {
    let prefix = format!(
        r#"{{"event":{},"room":{},"data":{data},"from":{},"seq":{seq},"ts":"#,
        q(event),
        q(room),
        q(from)
    );
    assert!(
        text.starts_with(&prefix),
        "room event\n  got:      {text}\n  expected: {prefix}<ts>}}"
    );
    let ts = &text[prefix.len()..];
    let ts = ts
        .strip_suffix('}')
        .unwrap_or_else(|| panic!("room event does not end after ts: {text}"));
    assert!(
        !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()),
        "ts is not an integer in {text}"
    );
    ts.parse().unwrap()
}

/// `seq` of a room event text (parsed).
pub fn seq_of(text: &str) -> u64 {
    u64_at(&parse_json(text), &["seq"])
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// VmRSS of process `pid` in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// The `seq` of a room event, read from its tail (`,"seq":N,"ts":T}`)
/// without parsing 16 KiB of data.
pub fn seq_tail(text: &str) -> u64 {
    let at = text.rfind(r#","seq":"#).expect("seq in a room event") + 7;
    let end = at + text[at..].find(',').expect("ts after seq");
    text[at..end].parse().expect("integer seq")
}
