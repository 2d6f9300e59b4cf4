//! A client of the server API (PROTOCOL.md section 12): `POST /api/<method>`
//! with an API key, an admin token or no credential, over the raw HTTP
//! client, and the checks every API test repeats (a `200 {"result"}`
//! reply, an error reply, a close frame's code and reason, a room event
//! that proves nothing else reached a member).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use simd_json::OwnedValue;
use simd_json::prelude::*;

use super::rooms::{Claims, Client, array_at, assert_room_event, keys, q, sorted, str_at};
use super::{HttpResponse, http_raw, parse_json};

/// The API key every API test server is given.
pub const API_KEY: &str = "api-key-for-tests-71c3";

/// What a request carries to authenticate.
#[derive(Debug, Clone)]
pub enum Cred {
    None,
    /// `X-API-Key: <key>`.
    Key(String),
    /// `Authorization: Bearer <jwt>`.
    Bearer(String),
}

impl Cred {
    pub fn key() -> Cred {
        Cred::Key(API_KEY.to_owned())
    }

    /// An `admin: true` token of `sub`, minted by the tests' own signer.
    pub fn admin(sub: &str) -> Cred {
        Cred::Bearer(Claims::new(sub).admin(true).token())
    }

    fn header(&self) -> String {
        match self {
            Cred::None => String::new(),
            Cred::Key(key) => format!("X-API-Key: {key}\r\n"),
            Cred::Bearer(jwt) => format!("Authorization: Bearer {jwt}\r\n"),
        }
    }
}

/// The bytes of `<verb> <path>` with `cred` and `body` (by `Content-Length`).
pub fn request_bytes(verb: &str, path: &str, cred: &Cred, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{verb} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Content-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        cred.header(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The server API of one node, called with one credential.
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub cred: Cred,
}

impl Api {
    /// Calls with [`API_KEY`].
    pub fn key(addr: SocketAddr) -> Api {
        Api::with(addr, Cred::key())
    }

    pub fn with(addr: SocketAddr, cred: Cred) -> Api {
        Api { addr, cred }
    }

    /// `POST /api/<method>` with `body`; the response, whatever it is.
    pub fn call(&self, method: &str, body: &str) -> HttpResponse {
        self.call_bytes(method, body.as_bytes())
    }

    pub fn call_bytes(&self, method: &str, body: &[u8]) -> HttpResponse {
        let path = format!("/api/{method}");
        http_raw(self.addr, &request_bytes("POST", &path, &self.cred, body))
    }

    /// The `result` of a `200 {"result": ...}` reply; panics on anything else.
    pub fn ok(&self, method: &str, body: &str) -> OwnedValue {
        result_of(&self.call(method, body), method)
    }

    /// Asserts `method` with `body` is refused with `status` and `code`.
    pub fn refused(&self, method: &str, body: &str, status: u16, code: &str) -> HttpResponse {
        let resp = self.call(method, body);
        assert_api_error(&resp, status, code, &format!("{method} {body:.200}"));
        resp
    }

    /// `{"connections": n}` of a per-user command; panics unless those are
    /// its only keys (no `missingNodes`: every node answered).
    pub fn connections(&self, method: &str, body: &str) -> u64 {
        let result = self.ok(method, body);
        assert_eq!(
            keys(&result),
            ["connections"],
            "{method} {body}: {result:?}"
        );
        u64_of(&result, "connections")
    }

    /// Publishes `data` to `room` as `marker:n` and returns its `seq`.
    pub fn publish(&self, room: &str, event: &str, data: &str) -> u64 {
        let body = format!(
            r#"{{"room":{},"event":{},"data":{data}}}"#,
            q(room),
            q(event)
        );
        let result = self.ok("publish", &body);
        let results = result["results"]
            .as_array()
            .unwrap_or_else(|| panic!("no results in {result:?}"));
        assert_eq!(results.len(), 1, "{result:?}");
        assert_eq!(keys(&results[0]), sorted(&["room", "seq"]), "{result:?}");
        u64_of(&results[0], "seq")
    }

    /// Publishes a marker event to `room`, named after `what` (the step
    /// just done), and checks it got `seq`: nothing else was published.
    pub fn mark(&self, room: &str, seq: u64, what: &str) {
        let got = self.publish(room, "test:marker", &q(what));
        assert_eq!(
            got, seq,
            "the marker's seq after {what}: something was published"
        );
    }

    /// [`Api::mark`], then [`expect_marker`] on `member`.
    pub fn assert_next_is_marker(&self, member: &mut Client, room: &str, seq: u64, what: &str) {
        self.mark(room, seq, what);
        expect_marker(member, room, seq, what);
    }
}

/// Checks the next message `member` gets (presence skipped) is the marker
/// of [`Api::mark`]: proof that nothing else reached it meanwhile.
pub fn expect_marker(member: &mut Client, room: &str, seq: u64, what: &str) {
    let text = member.recv_skip_presence();
    assert!(
        text.starts_with(r#"{"event":"test:marker""#),
        "after {what} the member got {text} before the marker"
    );
    assert_room_event(&text, "test:marker", room, &q(what), "api", seq);
}

/// Asserts an API error reply: `status`, `{"error":{"code","message"}}`
/// and nothing else in the body.
pub fn assert_api_error(resp: &HttpResponse, status: u16, code: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    let body = parse_json(&resp.body);
    assert_eq!(keys(&body), ["error"], "{what}: {resp:?}");
    assert_eq!(
        keys(&body["error"]),
        sorted(&["code", "message"]),
        "{what}: {resp:?}"
    );
    resp.assert_error(status, code);
}

/// The `result` of a `200 {"result": ...}` reply.
pub fn result_of(resp: &HttpResponse, what: &str) -> OwnedValue {
    assert_eq!(resp.status, 200, "{what}: {resp:?}");
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{what}: {resp:?}"
    );
    let body = parse_json(&resp.body);
    assert_eq!(keys(&body), ["result"], "{what}: {resp:?}");
    body["result"].clone()
}

pub fn u64_of(v: &OwnedValue, key: &str) -> u64 {
    v.get(key)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("no unsigned integer {key} in {v:?}"))
}

/// `{"event":"room:subscribed","room":R,"data":{"epoch","seq","members"}}`:
/// checks the shape and returns `data`.
pub fn assert_subscribed(text: &str, room: &str) -> OwnedValue {
    let v = parse_json(text);
    assert_eq!(keys(&v), sorted(&["event", "room", "data"]), "{text}");
    assert_eq!(v["event"], OwnedValue::from("room:subscribed"), "{text}");
    assert_eq!(v["room"], OwnedValue::from(room), "{text}");
    let data = v["data"].clone();
    assert_eq!(keys(&data), sorted(&["epoch", "seq", "members"]), "{text}");
    assert!(data["epoch"].as_str().is_some(), "{text}");
    u64_of(&data, "seq");
    assert!(u64_of(&data, "members") >= 1, "{text}");
    data
}

/// Checks `text` is exactly `{"event":"room:unsubscribed","room":R,"data":{}}`.
pub fn assert_unsubscribed(text: &str, room: &str) {
    let v = parse_json(text);
    assert_eq!(keys(&v), sorted(&["event", "room", "data"]), "{text}");
    assert_eq!(v["event"], OwnedValue::from("room:unsubscribed"), "{text}");
    assert_eq!(v["room"], OwnedValue::from(room), "{text}");
    assert!(keys(&v["data"]).is_empty(), "{text}");
}

/// A `/ws` client of `sub` joined to `rooms`.
pub fn member(addr: SocketAddr, sub: &str, rooms: &[&str]) -> Client {
    let mut client = Client::user(addr, sub);
    for room in rooms {
        client.join(room);
    }
    client
}

/// The string `field` of every object in the array `list` of `v`, sorted.
pub fn each_sorted(v: &OwnedValue, list: &str, field: &str) -> Vec<String> {
    let mut out: Vec<String> = array_at(v, &[list])
        .iter()
        .map(|item| str_at(item, &[field]).to_owned())
        .collect();
    out.sort();
    out
}

/// One connection of a `user` result: `(node, connId, rooms)`.
pub type UserConn = (String, String, BTreeSet<String>);

/// The `user` result of `user`: its connections, sorted, after checking
/// the result's and each connection's keys.
pub fn user_connections(result: &OwnedValue, user: &str) -> Vec<UserConn> {
    assert_eq!(keys(result), sorted(&["user", "connections"]), "{result:?}");
    assert_eq!(str_at(result, &["user"]), user, "{result:?}");
    let mut conns: Vec<UserConn> = array_at(result, &["connections"])
        .iter()
        .map(|c| {
            assert_eq!(keys(c), sorted(&["connId", "node", "rooms"]), "{result:?}");
            let rooms = array_at(c, &["rooms"])
                .iter()
                .map(|r| r.as_str().expect("a room name").to_owned())
                .collect();
            let node = str_at(c, &["node"]).to_owned();
            (node, str_at(c, &["connId"]).to_owned(), rooms)
        })
        .collect();
    conns.sort();
    conns
}

/// `(node, connId, rooms)` of `client`, for comparison with [`user_connections`].
pub fn user_conn(node: &str, client: &Client, rooms: &[&str]) -> UserConn {
    let rooms = rooms.iter().map(|r| r.to_string()).collect();
    (node.to_owned(), client.conn_id(), rooms)
}

/// Waits until `info` on the node at `addr` lists exactly `nodes` (sorted).
pub fn wait_info_nodes(addr: SocketAddr, nodes: &[&str]) {
    let api = Api::key(addr);
    super::wait_until(
        std::time::Duration::from_secs(10),
        "info lists every node",
        || {
            let resp = api.call("info", "{}");
            resp.status == 200 && each_sorted(&result_of(&resp, "info"), "nodes", "node") == nodes
        },
    );
}
