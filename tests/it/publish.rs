//! `POST /publish` (PROTOCOL.md section 9): delivery to WebSocket members
//! exactly like a room event, into history; batches in order; every error
//! with its status and body; Content-Length and chunked bodies, keep-alive,
//! pipelining and `Expect: 100-continue`, over raw TCP for exact framing.

use crate::common;

use std::time::Duration;

use simd_json::OwnedValue;
use simd_json::prelude::*;

use common::rooms::{
    Claims, Client, alice_and_bob_in_lobby, array_at, assert_room_event, ok_data, q, str_at, u64_at,
};
use common::token::{expired_token, mint, now, wrongly_signed_token};
use common::{HttpConn, HttpResponse, Server, json_at, json_str, parse_json};

/// A token that may publish to rooms matching `patterns`.
fn publisher(patterns: &[&str]) -> String {
    Claims::new("feed").publish(patterns).token()
}

/// `POST /publish` with `token` (if any), extra header lines and `body`
/// framed by `Content-Length`.
fn post(token: Option<&str>, headers: &str, body: &str) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `{"room","event","data"}` as JSON text.
fn message(room: &str, event: &str, data: &str) -> String {
    format!(
        r#"{{"room":{},"event":{},"data":{data}}}"#,
        q(room),
        q(event)
    )
}

fn batch(messages: &[String]) -> String {
    format!(r#"{{"messages":[{}]}}"#, messages.join(","))
}

/// Sends one request on a new connection; its response.
fn send(server: &Server, request: &[u8]) -> HttpResponse {
    let mut conn = HttpConn::connect(server.addr());
    conn.send(request);
    conn.read_response()
}

/// The `(room, seq)` results of a successful response.
fn results(resp: &HttpResponse) -> Vec<(String, u64)> {
    assert_eq!(resp.status, 200, "{resp:?}");
    let body = parse_json(&resp.body);
    assert_eq!(
        json_at(&body, &["success"]).and_then(OwnedValue::as_bool),
        Some(true),
        "{resp:?}"
    );
    array_at(&body, &["results"])
        .iter()
        .map(|r| (str_at(r, &["room"]).to_owned(), u64_at(r, &["seq"])))
        .collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(r, s)| (r.to_string(), *s)).collect()
}

/// Asserts a `/publish` error: status, `{"success":false,"error":{code,message}}`.
fn assert_failure(resp: &HttpResponse, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{resp:?}");
    let body = parse_json(&resp.body);
    assert_eq!(
        json_at(&body, &["success"]).and_then(OwnedValue::as_bool),
        Some(false),
        "{resp:?}"
    );
    assert_eq!(json_str(&body, &["error", "code"]), Some(code), "{resp:?}");
    assert!(json_str(&body, &["error", "message"]).is_some(), "{resp:?}");
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
}

#[test]
fn a_publish_reaches_every_member_like_a_room_event_and_enters_history() {
    let (server, mut alice, mut bob) =
        alice_and_bob_in_lobby(&["--shards", "2", "--accept", "handoff"]);
    let data = r#"{"text" : "h\u00e9llo", "n": [1, 2.50]}"#;
    let body = message("lobby", "chat:message", data);
    let resp = send(&server, &post(Some(&publisher(&["lobby"])), "", &body));
    assert_eq!(results(&resp), pairs(&[("lobby", 1)]));
    assert_eq!(resp.header("connection"), Some("keep-alive"));
    let delivered = alice.recv();
    assert_room_event(&delivered, "chat:message", "lobby", data, "feed", 1);
    assert_eq!(bob.recv(), delivered, "the same bytes for every member");

    let mut carol = Client::user(server.addr(), "carol");
    let ack = carol.join_with(r#"{"room":"lobby","history":5}"#);
    let history = array_at(ok_data(&ack), &["messages"]);
    assert_eq!(history.len(), 1, "{ack:?}");
    assert_eq!(
        history[0],
        parse_json(&delivered),
        "history is what was delivered"
    );
    assert_eq!(u64_at(ok_data(&ack), &["seq"]), 1);
}

#[test]
fn a_batch_keeps_its_order_across_rooms_and_shards() {
    let server = Server::start(&[
        "--presence-rooms",
        "presence-only",
        "--shards",
        "2",
        "--accept",
        "handoff",
    ]);
    let mut a = Client::user(server.addr(), "a");
    let mut b = Client::user(server.addr(), "b");
    a.join("room-a");
    b.join("room-a");
    b.join("room-b");
    let sent = [
        ("room-a", "1"),
        ("room-b", "2"),
        ("room-a", "3"),
        ("room-a", "4"),
        ("room-b", "5"),
    ];
    let messages: Vec<String> = sent
        .iter()
        .map(|(room, data)| message(room, "feed:item", data))
        .collect();
    let resp = send(
        &server,
        &post(Some(&publisher(&["room-*"])), "", &batch(&messages)),
    );
    assert_eq!(
        results(&resp),
        pairs(&[
            ("room-a", 1),
            ("room-b", 1),
            ("room-a", 2),
            ("room-a", 3),
            ("room-b", 2)
        ])
    );
    for (seq, data) in [(1, "1"), (2, "3"), (3, "4")] {
        assert_room_event(&a.recv(), "feed:item", "room-a", data, "feed", seq);
    }
    // b is in both rooms: each room's events in order.
    let mut seen: Vec<(String, String)> = (0..5)
        .map(|_| {
            let v = parse_json(&b.recv());
            (
                str_at(&v, &["room"]).to_owned(),
                u64_at(&v, &["data"]).to_string(),
            )
        })
        .collect();
    seen.sort_by(|x, y| x.0.cmp(&y.0));
    let expected: Vec<(String, String)> = ["1", "3", "4", "2", "5"]
        .iter()
        .zip(["room-a", "room-a", "room-a", "room-b", "room-b"])
        .map(|(d, r)| (r.to_owned(), d.to_string()))
        .collect();
    assert_eq!(seen, expected);
    if !common::in_cluster() {
        let addr = server.addr();
        assert_eq!(common::metric(addr, "roomcast_publishes_total"), 5.0);
        assert_eq!(common::metric(addr, "roomcast_deliveries_total"), 8.0);
    }
}

#[test]
fn token_errors_are_401_and_close_the_connection() {
    let server = Server::start(&[]);
    let body = message("lobby", "chat:message", "1");
    let cases = [
        (None, "UNAUTHENTICATED"),
        (Some("not.a.jwt".to_owned()), "UNAUTHENTICATED"),
        (Some(wrongly_signed_token("feed")), "UNAUTHENTICATED"),
        (Some(expired_token("feed")), "TOKEN_EXPIRED"),
    ];
    for (token, code) in cases {
        let mut conn = HttpConn::connect(server.addr());
        conn.send(&post(token.as_deref(), "", &body));
        let resp = conn.read_response();
        assert_failure(&resp, 401, code);
        assert_eq!(resp.header("connection"), Some("close"));
        if let Some(token) = &token {
            assert!(!resp.body.contains(token.as_str()));
        }
        assert!(conn.is_closed_by_server());
    }
}

#[test]
fn the_token_may_come_in_the_query_and_the_leeway_applies() {
    let server = Server::start(&["--jwt-leeway", "60"]);
    let recently_expired = mint(&format!(
        r#"{{"sub":"feed","exp":{},"pub":["*"]}}"#,
        now() - 30
    ));
    let body = message("lobby", "chat:message", "1");
    let request = String::from_utf8(post(None, "", &body))
        .unwrap()
        .replace("/publish", &format!("/publish?token={recently_expired}"));
    assert_eq!(
        results(&send(&server, request.as_bytes())),
        pairs(&[("lobby", 1)])
    );
}

#[test]
fn rooms_not_covered_by_pub_are_403_and_nothing_is_published() {
    let (server, mut alice, _bob) = alice_and_bob_in_lobby(&[]);
    let token = publisher(&["prices:*"]);
    let mixed = batch(&[
        message("prices:btc", "price:tick", "1"),
        message("lobby", "chat:message", "2"),
    ]);
    assert_failure(
        &send(&server, &post(Some(&token), "", &mixed)),
        403,
        "FORBIDDEN",
    );
    // Join patterns and membership do not grant HTTP publishing.
    let member = Claims::new("alice").rooms(&["*"]).token();
    let single = message("lobby", "chat:message", "3");
    assert_failure(
        &send(&server, &post(Some(&member), "", &single)),
        403,
        "FORBIDDEN",
    );
    alice.assert_quiet(Duration::from_millis(300));
    assert_eq!(
        common::metric(server.addr(), "roomcast_publishes_total"),
        0.0
    );
}

#[test]
fn body_errors_are_400_and_keep_the_connection() {
    let server = Server::start(&[]);
    let token = publisher(&["*"]);
    let mut conn = HttpConn::connect(server.addr());
    let cases = [
        ("{not json".to_owned(), "INVALID_MESSAGE"),
        (message("lobby", "room:join", "1"), "VALIDATION_ERROR"),
        (message("lobby", "system:x", "1"), "VALIDATION_ERROR"),
        (
            message("has space", "chat:message", "1"),
            "VALIDATION_ERROR",
        ),
        (r#"{"messages":[]}"#.to_owned(), "VALIDATION_ERROR"),
        (r#"{"messages":{}}"#.to_owned(), "VALIDATION_ERROR"),
    ];
    for (body, code) in cases {
        conn.send(&post(Some(&token), "", &body));
        let resp = conn.read_response();
        assert_failure(&resp, 400, code);
        assert_eq!(resp.header("connection"), Some("keep-alive"), "{body}");
    }
    conn.send(&post(
        Some(&token),
        "",
        &message("lobby", "chat:message", "1"),
    ));
    assert_eq!(results(&conn.read_response()), pairs(&[("lobby", 1)]));
}

#[test]
fn bodies_over_the_limit_are_413_before_they_are_read() {
    let server = Server::start(&["--max-message-size", "1KiB"]);
    let token = publisher(&["*"]);
    // Only the head is sent: the answer cannot wait for the body.
    let head = format!(
        "POST /publish HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 1025\r\n\r\n"
    );
    let mut conn = HttpConn::connect(server.addr());
    conn.send(head.as_bytes());
    let resp = conn.read_response();
    assert_failure(&resp, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(resp.header("connection"), Some("close"));

    let chunked = format!(
        "POST /publish HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\n\r\n200\r\n{}\r\n201\r\n",
        "x".repeat(0x200)
    );
    let mut conn = HttpConn::connect(server.addr());
    conn.send(chunked.as_bytes());
    assert_failure(&conn.read_response(), 413, "PAYLOAD_TOO_LARGE");
    assert!(conn.is_closed_by_server());

    let fits = message("lobby", "chat:message", &q(&"x".repeat(900)));
    assert_eq!(
        results(&send(&server, &post(Some(&token), "", &fits))),
        pairs(&[("lobby", 1)])
    );
}

#[test]
fn a_post_without_a_length_is_411_and_other_codings_are_400() {
    let server = Server::start(&[]);
    let token = publisher(&["*"]);
    let unframed = format!("POST /publish HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n");
    let resp = send(&server, unframed.as_bytes());
    assert_failure(&resp, 411, "LENGTH_REQUIRED");
    assert_eq!(resp.header("connection"), Some("close"));
    let gzip = format!(
        "POST /publish HTTP/1.1\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: gzip\r\n\r\n"
    );
    assert_failure(&send(&server, gzip.as_bytes()), 400, "BAD_REQUEST");
}

#[test]
fn a_chunked_body_is_accepted() {
    let server = Server::start(&[]);
    let token = publisher(&["*"]);
    let body = message("lobby", "chat:message", r#"{"a":[1,2,3]}"#);
    let (first, second) = body.split_at(7);
    let request = format!(
        "POST /publish HTTP/1.1\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{first}\r\n{:x};name=value\r\n{second}\r\n0\r\nX-Trailer: ignored\r\n\r\n",
        first.len(),
        second.len()
    );
    assert_eq!(
        results(&send(&server, request.as_bytes())),
        pairs(&[("lobby", 1)])
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&["--shards", "2"]);
    let token = publisher(&["*"]);
    let mut all = Vec::new();
    for room in ["p1", "p2", "p1", "p3", "p1"] {
        all.extend(post(Some(&token), "", &message(room, "a:b", "null")));
    }
    all.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
    let mut conn = HttpConn::connect(server.addr());
    conn.send(&all);
    for expected in [("p1", 1), ("p2", 1), ("p1", 2), ("p3", 1), ("p1", 3)] {
        assert_eq!(results(&conn.read_response()), pairs(&[expected]));
    }
    let health = conn.read_response();
    assert_eq!(
        (health.status, health.header("connection")),
        (200, Some("close"))
    );
}

#[test]
fn a_hundred_requests_over_one_keep_alive_connection() {
    let server = Server::start(&[]);
    let token = publisher(&["*"]);
    let mut conn = HttpConn::connect(server.addr());
    for seq in 1..=100 {
        conn.send(&post(
            Some(&token),
            "",
            &message("counter", "count:up", &seq.to_string()),
        ));
        let resp = conn.read_response();
        assert_eq!(results(&resp), pairs(&[("counter", seq)]));
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
    conn.send(&post(
        Some(&token),
        "Connection: close\r\n",
        &message("counter", "count:up", "0"),
    ));
    let last = conn.read_response();
    assert_eq!(results(&last), pairs(&[("counter", 101)]));
    assert_eq!(last.header("connection"), Some("close"));
    assert!(conn.is_closed_by_server());
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let server = Server::start(&[]);
    let token = publisher(&["*"]);
    let body = message("lobby", "chat:message", &q(&"y".repeat(2000)));
    let request = post(Some(&token), "Expect: 100-continue\r\n", &body);
    let (head, rest) = request.split_at(request.len() - body.len());
    let mut conn = HttpConn::connect(server.addr());
    conn.send(head);
    assert_eq!(conn.read_response().status, 100);
    conn.send(rest);
    assert_eq!(results(&conn.read_response()), pairs(&[("lobby", 1)]));
}

#[test]
fn other_methods_are_405() {
    let server = Server::start(&[]);
    let resp = send(&server, b"GET /publish HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_failure(&resp, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(resp.header("allow"), Some("POST, OPTIONS"));
}

#[test]
fn a_head_pipelined_behind_a_publish_is_answered_without_a_body() {
    let server = Server::start(&[]);
    let token = publisher(&["*"]);
    let mut requests = post(Some(&token), "", &message("lobby", "chat:message", "1"));
    requests.extend_from_slice(b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut conn = HttpConn::connect(server.addr());
    conn.send(&requests);
    assert_eq!(conn.read_response().status, 200);
    let head = conn.read_head_only();
    assert_eq!(head.status, 200, "{head:?}");
    // What GET /healthz would say (its body names Redis on a cluster node).
    let get = common::http_get(server.addr(), "/healthz");
    let length = get.body.len().to_string();
    assert_eq!(head.header("Content-Length"), Some(length.as_str()));
    assert!(conn.unread().is_empty(), "{:?}", conn.unread());
    assert!(conn.is_closed_by_server());
}

#[test]
fn a_token_over_its_publish_rate_is_answered_429_and_others_are_not() {
    if common::in_cluster() {
        // The budget is per node (like the per-IP limits): with requests
        // spread over two nodes, one node's count is not the subject's.
        return;
    }
    let server = Server::start(&["--publish-rate", "5"]);
    let token = publisher(&["*"]);
    let one = post(Some(&token), "", &message("r", "feed:tick", "1"));
    // The burst is the rate: five messages at once, then 429.
    for _ in 0..5 {
        assert_eq!(send(&server, &one).status, 200);
    }
    let refused = send(&server, &one);
    assert_failure(&refused, 429, "RATE_LIMITED");
    assert_eq!(refused.header("retry-after"), Some("1"));

    // Another subject has a budget of its own, and a token's `rate` claim
    // overrides the flag (0: no limit).
    let other = Claims::new("other-feed").publish(&["*"]).token();
    assert_eq!(
        send(
            &server,
            &post(Some(&other), "", &message("r", "feed:tick", "2"))
        )
        .status,
        200
    );
    let unlimited = Claims::new("bulk").publish(&["*"]).rate(0).token();
    let twenty: Vec<String> = (0..20)
        .map(|i| message("r", "feed:tick", &i.to_string()))
        .collect();
    for _ in 0..3 {
        let resp = send(&server, &post(Some(&unlimited), "", &batch(&twenty)));
        assert_eq!(results(&resp).len(), 20);
    }

    // A batch takes as many tokens as it has messages: a full budget lets
    // one through, then the subject waits for the debt to be paid back.
    let batcher = Claims::new("batcher").publish(&["*"]).token();
    let request = post(Some(&batcher), "", &batch(&twenty));
    assert_eq!(results(&send(&server, &request)).len(), 20);
    assert_failure(&send(&server, &request), 429, "RATE_LIMITED");
    assert!(common::metric(server.addr(), "roomcast_rate_limited_total") >= 2.0);
}
