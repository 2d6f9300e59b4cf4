//! The lifecycle log on stderr: one line per connection event, at the level
//! of `--log-level`, as text or JSON lines (`--log-format`), and never a
//! token or a secret.

use crate::common;

use std::time::Duration;

use common::token::{expired_token, mint, now, wrongly_signed_token};
use common::{
    Server, UpgradeRequest, http_raw, json_str, parse_json, recv_json, token, ws_request, ws_try,
};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// Closes with 1000 and waits for the server's answer.
fn close_normally(ws: &mut common::Ws) {
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .unwrap();
    while ws.read().is_ok() {}
}

/// The connection id of the one `opened` line for `user`.
fn conn_of(server: &Server, user: &str) -> String {
    let line = server.wait_for_log(&[" opened ", &format!("user={user}")]);
    let conn = line.split(' ').find_map(|w| w.strip_prefix("conn="));
    conn.expect("conn= in the opened line").to_owned()
}

#[test]
fn lifecycle_lines_appear_and_never_carry_a_token_or_the_secret() {
    // At debug, the most verbose level, so that every line that exists is checked.
    let server = Server::start(&["--log-level", "debug"]);
    let addr = server.addr();
    let in_query = token("query-user");
    let in_header = token("header-user");
    let bad_signature = wrongly_signed_token("forger");
    let expired = expired_token("late-user");
    let fresh = mint(&format!(r#"{{"sub":"query-user","exp":{}}}"#, now() + 7200));

    let (mut by_query, _) = ws_try(
        addr,
        ws_request(addr, &format!("/ws?token={in_query}"), None),
    )
    .unwrap();
    let hello = recv_json(&mut by_query);
    let conn_id = json_str(&hello, &["data", "connId"]).unwrap().to_owned();
    let (mut by_header, _) = ws_try(addr, ws_request(addr, "/ws", Some(&in_header))).unwrap();
    recv_json(&mut by_header);
    let refused = UpgradeRequest::new("/ws").bearer(&bad_signature).send(addr);
    assert_eq!(refused.status, 401);
    let refused = UpgradeRequest::new(&format!("/ws?token={expired}")).send(addr);
    assert_eq!(refused.status, 401);

    let publisher = mint(&format!(
        r#"{{"sub":"feed","exp":{},"pub":["*"]}}"#,
        now() + 3600
    ));
    let body = r#"{"room":"logged","event":"feed:tick","data":1}"#;
    let publish = |auth: &str, query: &str| {
        let request = format!(
            "POST /publish{query} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        http_raw(addr, request.as_bytes()).status
    };
    let bearer = format!("Authorization: Bearer {publisher}\r\n");
    assert_eq!(publish(&bearer, ""), 200);
    assert_eq!(publish("", &format!("?token={bad_signature}")), 401);

    let refresh =
        format!(r#"{{"event":"connection:refresh","data":{{"token":"{fresh}"}},"id":1}}"#);
    by_query.send(Message::text(refresh)).unwrap();
    let ack = recv_json(&mut by_query);
    assert_eq!(json_str(&ack, &["event"]), Some("ack"), "{ack:?}");
    close_normally(&mut by_query);
    close_normally(&mut by_header);

    // Every line of one connection names it as `connection:established` did.
    let conn = conn_of(&server, "query-user");
    assert_eq!(conn, conn_id);
    server.wait_for_log(&[" accepted ", &format!("conn={conn} ")]);
    let closed = server.wait_for_log(&[" closed ", &format!("conn={conn} "), "code=1000"]);
    for field in ["ip=127.0.0.1", "duration_ms=", "bytes_in=", "bytes_out="] {
        assert!(closed.contains(field), "{field} missing: {closed}");
    }
    assert!(!closed.contains("bytes_in=0 "), "{closed}");
    server.wait_for_log(&[" opened ", "endpoint=ws", "user=header-user"]);
    server.wait_for_log(&[
        " closed ",
        &format!("conn={} ", conn_of(&server, "header-user")),
    ]);
    server.wait_for_log(&[
        " rejected ",
        "path=/ws",
        "status=401",
        "code=UNAUTHENTICATED",
    ]);
    server.wait_for_log(&[" rejected ", "path=/ws", "status=401", "code=TOKEN_EXPIRED"]);
    server.wait_for_log(&[" http ", "method=POST", "path=/publish ", "status=200"]);
    server.wait_for_log(&[" http ", "path=/publish ", "status=401"]);

    let log = server.stderr();
    for secret in [
        &in_query,
        &in_header,
        &bad_signature,
        &expired,
        &fresh,
        &publisher,
    ] {
        assert!(!log.contains(secret.as_str()), "a token in the log:\n{log}");
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a signature in the log:\n{log}");
    }
    assert!(
        !log.contains(common::SECRET),
        "the secret in the log:\n{log}"
    );
    assert!(!log.contains("token="), "a query in the log:\n{log}");
}

#[test]
fn json_format_writes_one_object_per_line() {
    let mut server = Server::start(&["--log-format", "json", "--log-level", "debug"]);
    let addr = server.addr();
    // A user id that needs escaping in JSON.
    let quoted = mint(&format!(
        r#"{{"sub":"json \"user\"","exp":{}}}"#,
        now() + 3600
    ));
    let (mut ws, _) = ws_try(addr, ws_request(addr, "/ws", Some(&quoted))).unwrap();
    recv_json(&mut ws);
    close_normally(&mut ws);
    assert_eq!(UpgradeRequest::new("/ws").send(addr).status, 401);
    assert_eq!(common::http_get(addr, "/healthz").status, 200);
    assert_eq!(common::http_get(addr, "/nope").status, 404);
    server.wait_for_log(&["\"event\":\"closed\"", "\"code\":1000"]);
    server.wait_for_log(&[
        "\"event\":\"http\"",
        "\"path\":\"/healthz\"",
        "\"status\":200",
    ]);
    server.terminate();
    server.wait_exit(Duration::from_secs(15));

    let lines = server.log_lines();
    let mut events = Vec::new();
    for line in &lines {
        let record = parse_json(line);
        assert!(
            json_str(&record, &["ts"]).is_some_and(|ts| ts.ends_with('Z')),
            "{line}"
        );
        assert!(json_str(&record, &["level"]).is_some(), "{line}");
        let event = json_str(&record, &["event"]);
        assert!(
            event.is_some() || json_str(&record, &["msg"]).is_some(),
            "{line}"
        );
        events.extend(event.map(str::to_owned));
    }
    for expected in ["accepted", "opened", "closed", "rejected", "http"] {
        assert!(
            events.iter().any(|e| e == expected),
            "no {expected} in {lines:?}"
        );
    }
    let opened = lines.iter().find(|l| l.contains("\"opened\"")).unwrap();
    assert_eq!(
        json_str(&parse_json(opened), &["user"]),
        Some("json \"user\"")
    );
}

#[test]
fn warn_level_leaves_out_the_lifecycle_lines() {
    let server = Server::start(&["--log-level", "warn"]);
    let addr = server.addr();
    let (mut ws, _) = ws_try(addr, ws_request(addr, "/ws", Some(&token("quiet")))).unwrap();
    recv_json(&mut ws);
    close_normally(&mut ws);
    assert_eq!(UpgradeRequest::new("/ws").send(addr).status, 401);
    assert_eq!(common::http_get(addr, "/healthz").status, 200);
    // The same activity at the default level shows up well within this.
    std::thread::sleep(Duration::from_millis(500));
    let log = server.stderr();
    for word in [
        "opened", "closed", "rejected", "accepted", " INFO ", " DEBUG ",
    ] {
        assert!(!log.contains(word), "{word:?} at --log-level warn:\n{log}");
    }
}

/// One process (`--max-connections` counts per process), logging at warn.
fn single_server(extra: &[&str]) -> Server {
    let mut cmd = Server::single_command();
    cmd.args(["--log-level", "warn"]).args(extra);
    Server::spawn(cmd)
}

fn lines_with(server: &Server, words: &[&str]) -> Vec<String> {
    server
        .log_lines()
        .into_iter()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .collect()
}

#[test]
fn refusals_are_warned_once_a_second_per_reason_with_the_count_held_back() {
    let server = single_server(&["--max-connections", "1"]);
    let addr = server.addr();
    // The limit is checked before the token: this one is refused while
    // a slot is free.
    let refused = UpgradeRequest::new("/ws")
        .bearer(&wrongly_signed_token("forger"))
        .send(addr);
    assert_eq!(refused.status, 401);
    let _holder = common::rooms::Client::connect(addr, &token("holder"));
    for _ in 0..5 {
        let refused = UpgradeRequest::new(&format!("/ws?token={}", token("late"))).send(addr);
        assert_eq!(refused.status, 503);
    }
    let first = server.wait_for_log(&[" WARN refused ", "reason=connection_limit"]);
    assert!(first.contains("status=503 held_back=0"), "{first}");
    let bad_token = server.wait_for_log(&[" WARN refused ", "reason=UNAUTHENTICATED"]);
    assert!(bad_token.contains("status=401"), "{bad_token}");
    // The four others of that second were held back: once the second is
    // over, one more line counts them, though no refusal came since; and
    // no other line came.
    server.wait_for_log(&["reason=connection_limit", "held_back=4"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lines_with(&server, &["reason=connection_limit"]).len(), 2);
}
