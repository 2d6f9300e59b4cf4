//! The rpc and publish proxies (section 13.2) end to end: the real server
//! binary, real WebSocket clients, and a real local HTTP backend (the one
//! of `hooks_client`) that checks each request's signature and answers by
//! what the request asks: allow, refuse with its own code, replace the
//! data, answer slowly, badly or not at all.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::common;
use crate::hooks_client::{Backend, Received, Seen, read_request};
use common::rooms::{Client, ack_error, ack_seq, ok_data, q};
use common::{Server, json_at, json_str, metric, parse_json};

/// What `hooks_client`'s backend checks signatures with.
const HOOK_SECRET: &str = "hook-test-secret";

/// A backend's answer to one request.
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

impl Reply {
    fn ok(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A backend that answers each request (signature checked) by `answer`,
/// on kept-alive connections.
fn backend(answer: impl Fn(&OwnedValue, &Received) -> Reply + Send + Sync + 'static) -> Backend {
    Backend::start(move |stream: TcpStream, _, seen: &Seen| {
        let mut conn = BufReader::new(stream);
        while let Some(request) = read_request(&mut conn) {
            request.assert_signed();
            let body = parse_json(std::str::from_utf8(&request.body).expect("UTF-8 body"));
            let reply = answer(&body, &request);
            seen.record(request);
            let busy = seen.busy.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most_busy.fetch_max(busy, Ordering::SeqCst);
            thread::sleep(reply.delay);
            seen.busy.fetch_sub(1, Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                reply.status,
                reply.body.len(),
                reply.body
            );
            if conn.get_mut().write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    })
}

fn field<'v>(body: &'v OwnedValue, name: &str) -> &'v str {
    json_str(body, &[name]).unwrap_or_default()
}

pub(crate) fn server(flags: &[&str]) -> Server {
    let mut args = vec!["--hook-secret", HOOK_SECRET];
    args.extend_from_slice(flags);
    Server::start(&args)
}

/// One process whatever the environment: its `/metrics` count every
/// request (a cluster's nodes count their own).
fn single_server(flags: &[&str]) -> Server {
    let mut cmd = Server::single_command();
    cmd.args(["--hook-secret", HOOK_SECRET]).args(flags);
    Server::spawn(cmd)
}

/// A URL where nothing listens: a port just bound and let go.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/")
}

/// Answers rpc calls by method: the request itself as the result, a
/// refusal with the application's code, a 500, a body that is not JSON,
/// a code outside the grammar.
fn rpc_backend() -> Backend {
    backend(|body, request| {
        let echo = String::from_utf8_lossy(&request.body).into_owned();
        match field(body, "method") {
            "echo" => Reply::ok(format!(r#"{{"result":{echo}}}"#)),
            "big" => Reply::ok(r#"{"result": [1.50, {"e" : "\u00e9"}] }"#),
            "refuse" => Reply::ok(r#"{"error":{"code":"NOT_YOURS","message":"ask the owner"}}"#),
            "broken" => Reply {
                status: 500,
                ..Reply::ok(r#"{"result":1}"#)
            },
            "garbage" => Reply::ok("<html>"),
            _ => Reply::ok(r#"{"error":{"code":"lower case","message":""}}"#),
        }
    })
}

#[test]
fn rpc_calls_are_answered_by_the_backend() {
    let backend = rpc_backend();
    let url = backend.url("/rpc?key=k");
    let server = single_server(&["--rpc-proxy", &url]);
    let mut alice = Client::user(server.addr(), "alice");

    let ack = alice.request("rpc:echo", r#"{"q" : [1, "\u00e9"]}"#, "");
    let result = ok_data(&ack);
    assert_eq!(json_str(result, &["user"]), Some("alice"), "{ack:?}");
    assert_eq!(
        json_str(result, &["connId"]),
        Some(alice.conn_id().as_str())
    );
    assert_eq!(json_str(result, &["method"]), Some("echo"));
    let seen = backend.seen.requests();
    assert_eq!(seen[0].request_line, "POST /rpc?key=k HTTP/1.1");
    assert!(
        String::from_utf8_lossy(&seen[0].body).ends_with(r#""data":{"q" : [1, "\u00e9"]}}"#),
        "the client's data goes to the backend as it was sent"
    );

    // The result is passed on as the backend wrote it.
    let id = alice.new_id();
    alice.send(&format!(r#"{{"event":"rpc:big","id":{}}}"#, q(&id)));
    let text = alice.wait_ack(&id);
    assert!(
        text.ends_with(r#""data":[1.50, {"e" : "\u00e9"}]}"#),
        "{text}"
    );

    let refused = alice.request("rpc:refuse", "{}", "");
    assert_eq!(ack_error(&refused), "NOT_YOURS");
    assert_eq!(
        json_str(&refused, &["error", "message"]),
        Some("ask the owner")
    );
    for method in ["broken", "garbage", "badcode"] {
        let ack = alice.request(&format!("rpc:{method}"), "null", "");
        assert_eq!(ack_error(&ack), "UNAVAILABLE", "{method}");
    }
    // Without an id a failure is an error event.
    alice.send(r#"{"event":"rpc:refuse"}"#);
    let error = alice.recv_json();
    assert_eq!(json_str(&error, &["event"]), Some("error"), "{error:?}");
    assert_eq!(json_str(&error, &["data", "code"]), Some("NOT_YOURS"));

    let addr = server.addr();
    assert_eq!(metric(addr, "roomcast_hook_requests_total"), 7.0);
    assert_eq!(metric(addr, "roomcast_hook_non_2xx_total"), 1.0);
    assert_eq!(metric(addr, "roomcast_hook_unreadable_answers_total"), 3.0);
    let stats = parse_json(&common::http::http_get(addr, "/stats").body);
    let requests = json_at(&stats, &["hooks", "requests"]).and_then(|v| v.as_u64());
    assert_eq!(requests, Some(7), "{stats:?}");
}

#[test]
fn rpc_is_an_unknown_event_without_a_proxy() {
    let server = Server::start(&[]);
    let mut alice = Client::user(server.addr(), "alice");
    let ack = alice.request("rpc:echo", "{}", "");
    assert_eq!(ack_error(&ack), "UNKNOWN_EVENT");
    // The namespace is reserved: no room event may use it either.
    alice.join("lobby");
    let ack = alice.publish("lobby", "rpc:echo", "1");
    assert_eq!(ack_error(&ack), "UNKNOWN_EVENT");
    let metrics = common::http::http_get(server.addr(), "/metrics").body;
    assert!(
        !metrics.contains("roomcast_hook_"),
        "no hooks client, no series"
    );
}

#[test]
fn a_slow_or_dead_backend_is_unavailable_within_the_hook_timeout() {
    let slow = backend(|_, _| Reply::ok(r#"{"result":{}}"#).after(Duration::from_secs(3)));
    let slow_url = slow.url("/");
    let dead = dead_url();
    let server = single_server(&[
        "--hook-timeout",
        "300ms",
        "--rpc-proxy",
        &slow_url,
        "--publish-proxy",
        &dead,
    ]);
    let mut alice = Client::user(server.addr(), "alice");
    let started = Instant::now();
    let ack = alice.request("rpc:anything", "{}", "");
    assert_eq!(ack_error(&ack), "UNAVAILABLE");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    alice.join("lobby");
    let ack = alice.publish("lobby", "chat:msg", r#"{"t":1}"#);
    assert_eq!(ack_error(&ack), "UNAVAILABLE");
    let addr = server.addr();
    assert_eq!(
        metric(addr, r#"roomcast_hook_failures_total{reason="timeout"}"#),
        1.0
    );
    assert_eq!(
        metric(addr, r#"roomcast_hook_failures_total{reason="connect"}"#),
        1.0
    );
    // The connection is fine afterwards.
    alice.assert_open();
}

/// Decides room events by their event name.
pub(crate) fn publish_backend() -> Backend {
    backend(|body, _| match field(body, "event") {
        "msg:bad" => Reply::ok(r#"{"error":{"code":"BANNED_WORD","message":"not here"}}"#),
        "msg:swap" => Reply::ok(r#"{"result":{"data":{"swapped" : true, "n":1.50}}}"#),
        "msg:odd" => Reply::ok(r#"{"result":{"data": 5"#),
        _ => Reply::ok(r#"{"result":{}}"#),
    })
}

#[test]
fn the_publish_proxy_allows_refuses_and_replaces_room_events() {
    let backend = publish_backend();
    let url = backend.url("/publish");
    let server = server(&[
        "--publish-proxy",
        &url,
        "--publish-proxy-rooms",
        "chat:*",
        "--history",
        "10",
        "--presence-rooms",
        "none",
    ]);
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice");
    let mut bob = Client::user(addr, "bob");
    for room in ["chat:1", "free"] {
        alice.join(room);
        bob.join(room);
    }

    let seq = ack_seq(&alice.publish("chat:1", "msg:ok", r#"{"t" : "hi"}"#));
    assert_eq!(seq, 1);
    let seen = backend.seen.requests();
    let body = parse_json(std::str::from_utf8(&seen[0].body).unwrap());
    assert_eq!(field(&body, "user"), "alice");
    assert_eq!(field(&body, "connId"), alice.conn_id());
    assert_eq!(field(&body, "room"), "chat:1");
    assert_eq!(field(&body, "event"), "msg:ok");
    assert!(String::from_utf8_lossy(&seen[0].body).ends_with(r#""data":{"t" : "hi"}}"#));
    let got = bob.recv();
    assert!(got.contains(r#""data":{"t" : "hi"}"#), "{got}");

    let refused = alice.publish("chat:1", "msg:bad", "1");
    assert_eq!(ack_error(&refused), "BANNED_WORD");
    assert_eq!(json_str(&refused, &["error", "message"]), Some("not here"));
    let unreadable = alice.publish("chat:1", "msg:odd", "1");
    assert_eq!(ack_error(&unreadable), "UNAVAILABLE");

    let seq = ack_seq(&alice.publish("chat:1", "msg:swap", r#""original""#));
    assert_eq!(seq, 2, "refused events take no seq");
    let got = bob.recv();
    assert!(got.contains(r#""event":"msg:swap""#), "{got}");
    assert!(
        got.contains(r#""data":{"swapped" : true, "n":1.50}"#),
        "{got}"
    );
    assert!(!got.contains("original"), "{got}");

    // A room the patterns leave out is not asked about.
    let asked = backend.seen.count();
    ack_seq(&alice.publish("free", "msg:bad", "2"));
    assert!(bob.recv().contains(r#""event":"msg:bad""#));
    assert_eq!(backend.seen.count(), asked);

    // History keeps what was published: the replacement, not the original.
    let mut carol = Client::user(addr, "carol");
    let ack = carol.join_with(r#"{"room":"chat:1","history":10}"#);
    let text = ok_data(&ack).to_string();
    assert!(text.contains("swapped"), "{text}");
    assert!(
        !text.contains("original") && !text.contains("BANNED"),
        "{text}"
    );
    bob.assert_quiet(Duration::from_millis(200));

    // POST /publish is the backend's own path: never sent to the proxy.
    let body = r#"{"room":"chat:1","event":"msg:bad","data":3}"#;
    let token = common::rooms::Claims::new("feed").publish(&["*"]).token();
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = common::http::http_raw(addr, request.as_bytes());
    assert_eq!(response.status, 200, "{response:?}");
    assert!(bob.recv().contains(r#""event":"msg:bad""#));
    assert_eq!(backend.seen.count(), asked);
}

/// A small deterministic spread of delays (0-60 ms) by message number.
fn delay_for(i: u64) -> Duration {
    Duration::from_millis(i.wrapping_mul(2_654_435_761) % 61)
}

#[test]
fn room_events_keep_their_order_while_the_backend_answers_with_random_delays() {
    let backend = backend(|body, _| {
        let i = json_at(body, &["data", "i"])
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let reply = if i % 5 == 3 {
            Reply::ok(r#"{"error":{"code":"NOPE","message":""}}"#)
        } else if i % 2 == 1 {
            Reply::ok(format!(r#"{{"result":{{"data":{{"i":{i},"odd":true}}}}}}"#))
        } else {
            Reply::ok(r#"{"result":{}}"#)
        };
        reply.after(delay_for(i))
    });
    let url = backend.url("/");
    let server = server(&[
        "--publish-proxy",
        &url,
        "--hook-concurrency",
        "8",
        "--presence-rooms",
        "race",
    ]);
    let addr = server.addr();
    let mut alice = common::rooms::publisher(addr, "alice");
    let mut bob = Client::user(addr, "bob");
    alice.join("race");
    bob.join("race");
    for i in 0..20 {
        alice.send(&format!(
            r#"{{"event":"msg:n","room":"race","data":{{"i":{i}}},"id":"m{i}"}}"#
        ));
    }
    // A leave behind the events must not overtake them: bob hears it
    // after every event alice sent before it.
    alice.send(r#"{"event":"room:leave","data":{"room":"race"}}"#);
    let mut acks = Vec::new();
    while acks.len() < 20 {
        let text = alice.recv();
        if text.starts_with(r#"{"event":"ack""#) {
            acks.push(parse_json(&text));
        }
    }
    // A refusal is written at once, an allowed event's ack comes from
    // its room: acks may cross, the events' seqs may not.
    let by_id: std::collections::HashMap<String, &OwnedValue> = acks
        .iter()
        .map(|a| (json_str(a, &["id"]).unwrap().to_owned(), a))
        .collect();
    let mut last_seq = 0;
    for i in 0..20 {
        let ack = by_id[&format!("m{i}")];
        if i % 5 == 3 {
            assert_eq!(ack_error(ack), "NOPE", "m{i}");
        } else {
            let seq = ack_seq(ack);
            assert!(seq > last_seq, "m{i}: {seq} after {last_seq}");
            last_seq = seq;
        }
    }
    let mut heard = Vec::new();
    loop {
        let got = parse_json(&bob.recv());
        match json_str(&got, &["event"]) {
            Some("presence:leave") => break,
            Some("presence:join") => continue,
            _ => heard.push(got),
        }
    }
    let allowed: Vec<u64> = (0..20).filter(|i| i % 5 != 3).collect();
    assert_eq!(heard.len(), allowed.len(), "{heard:?}");
    for (got, &i) in heard.iter().zip(&allowed) {
        assert_eq!(json_str(got, &["event"]), Some("msg:n"), "{got:?}");
        let n = json_at(got, &["data", "i"]).and_then(|v| v.as_u64());
        assert_eq!(n, Some(i), "{got:?}");
        let odd = json_at(got, &["data", "odd"]).and_then(|v| v.as_bool());
        assert_eq!(odd, (i % 2 == 1).then_some(true), "{got:?}");
    }
    bob.assert_quiet(Duration::from_millis(200));
    let most = backend.seen.most_busy.load(Ordering::SeqCst);
    assert!(
        most > 1,
        "decisions were asked for side by side: {most} at most"
    );
}

#[test]
fn an_unreadable_hook_ca_exits_2() {
    let out = Server::command()
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--jwt-secret",
            common::SECRET,
        ])
        .args(["--rpc-proxy", "https://127.0.0.1:1/", "--hook-ca"])
        .arg("/nonexistent/hook-ca.pem")
        .stdin(Stdio::null())
        .output()
        .expect("run roomcast serve");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--hook-ca: "), "{stderr}");
}

/// Decides joins by room: invited (after 100 ms), not invited, too slow.
fn subscribe_backend() -> Backend {
    backend(|body, _| match field(body, "room") {
        room if room.starts_with("private:yes") => {
            Reply::ok(r#"{"result":{}}"#).after(Duration::from_millis(100))
        }
        "private:slow" => Reply::ok(r#"{"result":{}}"#).after(Duration::from_secs(3)),
        _ => Reply::ok(r#"{"error":{"code":"NOT_INVITED","message":"ask for an invite"}}"#),
    })
}

#[test]
fn the_subscribe_proxy_decides_joins_and_events_behind_them_wait() {
    let backend = subscribe_backend();
    let url = backend.url("/join");
    let server = server(&[
        "--subscribe-proxy",
        &url,
        "--subscribe-proxy-rooms",
        "private:*",
        "--hook-timeout",
        "500ms",
        "--presence-rooms",
        "none",
    ]);
    let mut alice = Client::user(server.addr(), "alice");

    let ack = alice.join_with(r#"{"room":"private:yes","meta":{"invite" : "abc"}}"#);
    assert_eq!(
        json_at(ok_data(&ack), &["members"]).and_then(|v| v.as_u64()),
        Some(1)
    );
    let seen = backend.seen.requests();
    let body = parse_json(std::str::from_utf8(&seen[0].body).unwrap());
    assert_eq!(field(&body, "user"), "alice");
    assert_eq!(field(&body, "connId"), alice.conn_id());
    assert_eq!(field(&body, "room"), "private:yes");
    assert!(String::from_utf8_lossy(&seen[0].body).ends_with(r#""data":{"invite" : "abc"}}"#));

    let refused = alice.join_with(r#"{"room":"private:no"}"#);
    assert_eq!(ack_error(&refused), "NOT_INVITED");
    assert!(String::from_utf8_lossy(&backend.seen.requests()[1].body).ends_with(r#""data":null}"#));
    let ack = alice.publish("private:no", "chat:msg", "1");
    assert_eq!(
        ack_error(&ack),
        "NOT_IN_ROOM",
        "a refused join leaves no membership"
    );

    let slow = alice.join_with(r#"{"room":"private:slow"}"#);
    assert_eq!(ack_error(&slow), "UNAVAILABLE");

    // A join then a room event sent at once: the event waits for the
    // join's decision, and is refused with it when the join is.
    let asked = backend.seen.count();
    alice.send(r#"{"event":"room:join","data":{"room":"private:no2"},"id":"j"}"#);
    alice.send(r#"{"event":"chat:msg","room":"private:no2","data":1,"id":"p"}"#);
    assert_eq!(ack_error(&parse_json(&alice.wait_ack("j"))), "NOT_INVITED");
    assert_eq!(ack_error(&parse_json(&alice.wait_ack("p"))), "NOT_IN_ROOM");
    alice.send(r#"{"event":"room:join","data":{"room":"private:yes2"},"id":"j2"}"#);
    alice.send(r#"{"event":"chat:msg","room":"private:yes2","data":2,"id":"p2"}"#);
    ok_data(&parse_json(&alice.wait_ack("j2")));
    assert_eq!(ack_seq(&parse_json(&alice.wait_ack("p2"))), 1);
    assert_eq!(backend.seen.count(), asked + 2);
    alice.join("private:yes");
    assert_eq!(
        backend.seen.count(),
        asked + 2,
        "a rejoin is not asked again"
    );

    // Rooms outside the patterns join without the backend.
    alice.join("open");
    assert_eq!(backend.seen.count(), asked + 2);
}

#[test]
fn a_connection_sending_faster_than_the_backend_decides_is_refused_past_its_line() {
    let backend = backend(|_, _| Reply::ok(r#"{"result":{}}"#).after(Duration::from_millis(50)));
    let url = backend.url("/");
    let server = server(&[
        "--publish-proxy",
        &url,
        "--hook-timeout",
        "10s",
        "--presence-rooms",
        "none",
    ]);
    let mut alice = common::rooms::publisher(server.addr(), "alice");
    alice.join("flood");
    let sent = 300;
    // All written before the first decision comes back.
    for i in 0..sent {
        alice.send(&format!(
            r#"{{"event":"msg:n","room":"flood","data":{i},"id":"f{i}"}}"#
        ));
    }
    let mut outcome = std::collections::HashMap::new();
    while outcome.len() < sent {
        let ack = parse_json(&alice.recv());
        if json_str(&ack, &["event"]) == Some("ack") {
            outcome.insert(json_str(&ack, &["id"]).unwrap().to_owned(), ack);
        }
    }
    let mut last_seq = 0;
    let mut refused = Vec::new();
    for i in 0..sent {
        let ack = &outcome[&format!("f{i}")];
        if json_at(ack, &["success"]).and_then(|v| v.as_bool()) == Some(true) {
            let seq = ack_seq(ack);
            assert!(seq > last_seq, "f{i}: {seq} after {last_seq}");
            last_seq = seq;
        } else {
            assert_eq!(ack_error(ack), "UNAVAILABLE", "f{i}");
            refused.push(i);
        }
    }
    assert!(!refused.is_empty(), "the line is bounded");
    assert!(
        sent - refused.len() >= 256,
        "a full line's worth is decided: {} refused",
        refused.len()
    );
}

/// Decides upgrades by the session cookie.
fn connect_backend() -> Backend {
    backend(
        |body, _| match json_str(body, &["headers", "cookie"]).unwrap_or("") {
            "session=carol" => {
                Reply::ok(r#"{"result":{"sub":"carol","name":"Carol","rooms":["lobby"]}}"#)
            }
            "session=expired" => {
                Reply::ok(r#"{"error":{"code":"TOKEN_EXPIRED","message":"log in again"}}"#)
            }
            "session=banned" => Reply::ok(r#"{"error":{"code":"BANNED","message":"go away"}}"#),
            "session=nosub" => Reply::ok(r#"{"result":{"name":"nobody"}}"#),
            "session=past" => Reply::ok(r#"{"result":{"sub":"old","exp":1000}}"#),
            "session=slow" => {
                Reply::ok(r#"{"result":{"sub":"late"}}"#).after(Duration::from_secs(3))
            }
            _ => Reply::ok(r#"{"error":{"code":"UNAUTHENTICATED","message":"no session"}}"#),
        },
    )
}

/// An upgrade to `/ws?query` with `cookie` and no token.
fn upgrade_with_cookie(
    addr: std::net::SocketAddr,
    query: &str,
    cookie: Option<&str>,
) -> Result<common::ws::Ws, (u16, String)> {
    let mut request = common::ws::ws_request(addr, &format!("/ws{query}"), None);
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("Cookie", cookie.parse().unwrap());
    }
    match common::ws::ws_try(addr, request) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy);
            Err((
                response.status().as_u16(),
                body.unwrap_or_default().into_owned(),
            ))
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[test]
fn the_connect_proxy_gives_the_claims_of_an_upgrade_without_a_token() {
    let backend = connect_backend();
    let url = backend.url("/connect");
    let server = server(&["--connect-proxy", &url, "--hook-timeout", "500ms"]);
    let addr = server.addr();

    let mut ws = upgrade_with_cookie(addr, "?app=chat", Some("session=carol")).expect("upgraded");
    let hello = parse_json(&common::ws::recv_text(&mut ws));
    assert_eq!(json_str(&hello, &["event"]), Some("connection:established"));
    assert_eq!(json_str(&hello, &["data", "userId"]), Some("carol"));
    let seen = backend.seen.requests();
    let body = parse_json(std::str::from_utf8(&seen[0].body).unwrap());
    assert_eq!(json_str(&body, &["ip"]), Some("127.0.0.1"));
    assert_eq!(json_str(&body, &["query"]), Some("app=chat"));
    assert_eq!(
        json_str(&body, &["headers", "cookie"]),
        Some("session=carol")
    );
    assert_eq!(
        json_at(&body, &["headers", "origin"]),
        None,
        "only the headers sent"
    );
    // The claims are the connection's: its rooms claim decides its joins.
    ws.send(tungstenite::Message::text(
        r#"{"event":"room:join","data":{"room":"lobby"},"id":1}"#,
    ))
    .unwrap();
    let ack = parse_json(&common::ws::recv_text(&mut ws));
    assert_eq!(
        json_at(&ack, &["success"]).and_then(|v| v.as_bool()),
        Some(true),
        "{ack:?}"
    );
    ws.send(tungstenite::Message::text(
        r#"{"event":"room:join","data":{"room":"elsewhere"},"id":2}"#,
    ))
    .unwrap();
    let ack = parse_json(&common::ws::recv_text(&mut ws));
    assert_eq!(ack_error(&ack), "FORBIDDEN");

    let refusals = [
        (Some("session=expired"), 401, "TOKEN_EXPIRED"),
        (None, 401, "UNAUTHENTICATED"),
        (Some("session=banned"), 403, "BANNED"),
        (Some("session=nosub"), 503, "UNAVAILABLE"),
        (Some("session=past"), 401, "TOKEN_EXPIRED"),
        (Some("session=slow"), 503, "UNAVAILABLE"),
    ];
    for (cookie, status, code) in refusals {
        let (got, body) = upgrade_with_cookie(addr, "", cookie).expect_err("refused");
        assert_eq!(got, status, "{cookie:?}: {body}");
        let body = parse_json(&body);
        assert_eq!(
            json_str(&body, &["error", "code"]),
            Some(code),
            "{cookie:?}"
        );
    }
    let (_, body) = upgrade_with_cookie(addr, "", Some("session=banned")).unwrap_err();
    assert_eq!(
        json_str(&parse_json(&body), &["error", "message"]),
        Some("go away")
    );

    // A token is checked as ever, without the backend.
    let asked = backend.seen.count();
    let token = common::rooms::Claims::new("dave").token();
    let mut ws = common::ws::ws_connect(addr, "/ws", &token);
    let hello = parse_json(&common::ws::recv_text(&mut ws));
    assert_eq!(json_str(&hello, &["data", "userId"]), Some("dave"));
    assert_eq!(backend.seen.count(), asked);
}

#[test]
fn an_upgrade_waiting_for_claims_holds_its_slot_until_decided_or_dropped() {
    let backend = connect_backend();
    let url = backend.url("/connect");
    // The backend answers `session=slow` after 3 s and the hook would wait
    // 10 s: a slot freed within 2 s of the drop was freed by the drop.
    let server = single_server(&[
        "--connect-proxy",
        &url,
        "--hook-timeout",
        "10s",
        "--max-connections",
        "1",
    ]);
    let addr = server.addr();
    let token = common::rooms::Claims::new("dave").token();
    // Refusals give the slot back.
    for cookie in ["session=banned", "session=nosub"] {
        upgrade_with_cookie(addr, "", Some(cookie)).expect_err("refused");
    }
    drop(common::ws::ws_connect(addr, "/ws", &token));
    // Its slot is free once the server has seen it go.
    server.wait_for_log(&["closed conn="]);
    // A client that goes away while its claims are asked for gives it
    // back too, once the connection is gone.
    let mut request = common::ws::ws_request(addr, "/ws", None);
    request
        .headers_mut()
        .insert("Cookie", "session=slow".parse().unwrap());
    let raw = std::net::TcpStream::connect(addr).unwrap();
    let (head, _) = request.into_parts();
    let mut text = format!("GET {} HTTP/1.1\r\n", head.uri.path());
    for (name, value) in &head.headers {
        text.push_str(&format!("{}: {}\r\n", name, value.to_str().unwrap()));
    }
    text.push_str("\r\n");
    (&raw).write_all(text.as_bytes()).unwrap();
    common::wait_until(Duration::from_secs(10), "the backend is asked", || {
        backend.seen.count() == 3
    });
    // While it waits, the slot is taken.
    let busy = upgrade_with_cookie(addr, "", Some("session=carol")).expect_err("no slot");
    assert_eq!(busy.0, 503, "{busy:?}");
    drop(raw);
    common::wait_until(Duration::from_secs(2), "the slot is free again", || {
        upgrade_with_cookie(addr, "", Some("session=carol")).is_ok()
    });
}

/// A publish proxy that never answers in time holds up only the rooms it
/// decides: another room's members keep their round trip.
#[test]
fn a_room_keeps_its_round_trip_while_another_rooms_publish_proxy_times_out() {
    let stuck = backend(|_, _| Reply::ok(r#"{"result":{}}"#).after(Duration::from_secs(5)));
    let url = stuck.url("/publish");
    let server = single_server(&[
        "--hook-timeout",
        "3s",
        "--publish-proxy",
        &url,
        "--publish-proxy-rooms",
        "slow:*",
        "--rate-limit",
        "0",
    ]);
    let addr = server.addr();
    let mut waiting = Client::user(addr, "waiting");
    waiting.join("slow:1");
    for n in 0..20 {
        let text = format!(r#"{{"event":"chat:msg","room":"slow:1","data":{n},"id":"w{n}"}}"#);
        waiting.send(&text);
    }
    let mut alice = Client::user(addr, "alice");
    alice.join("fast");
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let ack = alice.publish("fast", "chat:msg", "1");
        ok_data(&ack);
        worst = worst.max(started.elapsed());
    }
    // Each decision of the other room takes the whole --hook-timeout.
    assert!(worst < Duration::from_secs(1), "worst round trip {worst:?}");
    // The other room's events are still waiting for their decisions, and
    // then fail UNAVAILABLE, in order.
    for n in 0..20 {
        let ack = waiting.wait_ack(&format!("w{n}"));
        assert!(ack.contains("UNAVAILABLE"), "w{n}: {ack}");
    }
}
