//! The WebSocket upgrade: accepted requests, every rejection of PROTOCOL.md
//! section 2 with its status and body, token sources and subprotocols.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::token::{
    alg_none_token, expired_token, mint, not_yet_valid_token, now, sign, wrongly_signed_token,
};
use common::{
    HttpResponse, RawWs, Server, UpgradeRequest, recv_json, token, wait_until, ws_connect,
    ws_request, ws_try,
};

/// A valid upgrade to `/ws` for user `u1`.
fn valid() -> UpgradeRequest {
    UpgradeRequest::new("/ws").bearer(&token("u1"))
}

/// Sends `req`, asserts the rejection and that nothing secret leaks into it.
fn assert_rejected(
    addr: SocketAddr,
    req: &UpgradeRequest,
    status: u16,
    code: &str,
) -> HttpResponse {
    let resp = req.send(addr);
    resp.assert_error(status, code);
    let connection = resp.header("connection").unwrap_or("");
    assert!(
        connection.eq_ignore_ascii_case("close"),
        "rejection without Connection: close: {resp:?}"
    );
    assert_no_secret(req, &resp);
    resp
}

/// No token (nor any of its segments) and no server secret in a response.
fn assert_no_secret(req: &UpgradeRequest, resp: &HttpResponse) {
    let everything = format!("{:?} {}", resp.headers, resp.body);
    assert!(
        !everything.contains(common::SECRET),
        "secret leaked: {everything}"
    );
    let tokens = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim_start_matches("Bearer ").to_owned());
    let in_query = req.target.split_once("token=").map(|(_, t)| t.to_owned());
    for tok in tokens.chain(in_query) {
        for part in tok.split('.').filter(|p| p.len() >= 8) {
            assert!(!everything.contains(part), "token leaked into {everything}");
        }
    }
}

#[test]
fn bearer_token_upgrade_is_accepted_with_a_correct_accept_key() {
    let server = Server::start(&[]);
    // RawWs::connect asserts 101 and Sec-WebSocket-Accept.
    let mut ws = RawWs::connect(server.addr(), "/ws", &token("u1"));
    let first = ws.read_non_ping();
    assert!(first.text().contains("connection:established"), "{first:?}");
}

#[test]
fn token_in_query_is_accepted() {
    let server = Server::start(&[]);
    let req = UpgradeRequest::new(&format!("/ws?token={}", token("u1")));
    let resp = req.send(server.addr());
    assert_eq!(resp.status, 101, "{resp:?}");
}

#[test]
fn token_in_query_among_other_parameters_is_accepted() {
    let server = Server::start(&[]);
    let req = UpgradeRequest::new(&format!("/ws?v=2&token={}&x=y", token("u1")));
    assert_eq!(req.send(server.addr()).status, 101);
}

#[test]
fn not_get_is_400() {
    let server = Server::start(&[]);
    assert_rejected(server.addr(), &valid().method("POST"), 400, "BAD_REQUEST");
}

#[test]
fn missing_upgrade_header_is_400() {
    let server = Server::start(&[]);
    assert_rejected(
        server.addr(),
        &valid().without("Upgrade"),
        400,
        "BAD_REQUEST",
    );
}

#[test]
fn upgrade_to_something_else_is_400() {
    let server = Server::start(&[]);
    let req = valid().header("Upgrade", "h2c");
    assert_rejected(server.addr(), &req, 400, "BAD_REQUEST");
}

#[test]
fn connection_header_without_upgrade_token_is_400() {
    let server = Server::start(&[]);
    let req = valid().header("Connection", "keep-alive");
    assert_rejected(server.addr(), &req, 400, "BAD_REQUEST");
}

#[test]
fn connection_header_with_several_tokens_is_accepted() {
    let server = Server::start(&[]);
    let req = valid().header("Connection", "keep-alive, Upgrade");
    assert_eq!(req.send(server.addr()).status, 101);
}

#[test]
fn missing_key_is_400() {
    let server = Server::start(&[]);
    let req = valid().without("Sec-WebSocket-Key");
    assert_rejected(server.addr(), &req, 400, "BAD_REQUEST");
}

#[test]
fn key_of_8_bytes_is_400() {
    let server = Server::start(&[]);
    let req = valid().header("Sec-WebSocket-Key", "AAAAAAAAAAA=");
    assert_rejected(server.addr(), &req, 400, "BAD_REQUEST");
}

#[test]
fn key_that_is_not_base64_is_400() {
    let server = Server::start(&[]);
    let req = valid().header("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!==");
    assert_rejected(server.addr(), &req, 400, "BAD_REQUEST");
}

#[test]
fn version_8_is_426_naming_version_13() {
    let server = Server::start(&[]);
    let req = valid().header("Sec-WebSocket-Version", "8");
    let resp = assert_rejected(server.addr(), &req, 426, "UNSUPPORTED_VERSION");
    assert_eq!(resp.header("sec-websocket-version"), Some("13"), "{resp:?}");
}

#[test]
fn bad_version_is_reported_before_a_missing_token() {
    let server = Server::start(&[]);
    let req = UpgradeRequest::new("/ws").header("Sec-WebSocket-Version", "12");
    assert_rejected(server.addr(), &req, 426, "UNSUPPORTED_VERSION");
}

#[test]
fn origin_not_allowed_is_403() {
    let server = Server::start(&["--allowed-origins", "https://a.example,https://b.example"]);
    let req = valid().header("Origin", "https://evil.example");
    assert_rejected(server.addr(), &req, 403, "ORIGIN_FORBIDDEN");
}

#[test]
fn forbidden_origin_is_reported_before_a_missing_token() {
    let server = Server::start(&["--allowed-origins", "https://a.example"]);
    let req = UpgradeRequest::new("/ws").header("Origin", "https://evil.example");
    assert_rejected(server.addr(), &req, 403, "ORIGIN_FORBIDDEN");
}

#[test]
fn allowed_origin_and_absent_origin_are_accepted() {
    let server = Server::start(&["--allowed-origins", "https://a.example,https://b.example"]);
    let with_b = valid().header("Origin", "https://b.example");
    assert_eq!(with_b.send(server.addr()).status, 101);
    assert_eq!(valid().send(server.addr()).status, 101);
}

#[test]
fn over_max_connections_is_503_server_busy_until_one_leaves() {
    let server = Server::start(&["--max-connections", "2"]);
    let addr = server.addr();
    let first = ws_connect(addr, "/ws", &token("u1"));
    let _second = ws_connect(addr, "/ws", &token("u2"));
    assert_rejected(addr, &valid(), 503, "SERVER_BUSY");

    drop(first);
    wait_until(Duration::from_secs(5), "a free connection slot", || {
        valid().send(addr).status == 101
    });
}

#[test]
fn over_max_connections_per_ip_is_429() {
    let server = Server::start(&["--max-connections-per-ip", "2"]);
    let addr = server.addr();
    let _a = ws_connect(addr, "/ws", &token("u1"));
    let _b = ws_connect(addr, "/ws", &token("u1"));
    assert_rejected(addr, &valid(), 429, "TOO_MANY_CONNECTIONS");
}

#[test]
fn missing_token_is_401_unauthenticated() {
    let server = Server::start(&[]);
    let req = UpgradeRequest::new("/ws");
    assert_rejected(server.addr(), &req, 401, "UNAUTHENTICATED");
}

#[test]
fn malformed_tokens_are_401_unauthenticated() {
    let server = Server::start(&[]);
    let exp = now() + 3600;
    let cases = [
        "not-a-jwt".to_owned(),
        "a.b.c".to_owned(),
        format!("{}.", token("u1")),
        token("u1").replace('.', ".."),
        // claims missing or of the wrong type
        mint(&format!(r#"{{"exp":{exp}}}"#)),
        mint(&format!(r#"{{"sub":5,"exp":{exp}}}"#)),
        mint(&format!(r#"{{"sub":"","exp":{exp}}}"#)),
        mint(r#"{"sub":"u1"}"#),
        mint(&format!(r#"{{"sub":"u1","exp":"{exp}"}}"#)),
        mint(&format!(r#"{{"sub":"u1","exp":{exp},"admin":"yes"}}"#)),
        mint(&format!(r#"{{"sub":"u1","exp":{exp},"rooms":"lobby"}}"#)),
        mint("[1,2]"),
    ];
    for tok in cases {
        let req = UpgradeRequest::new("/ws").bearer(&tok);
        let resp = req.send(server.addr());
        assert_eq!(resp.status, 401, "token {tok:?}: {resp:?}");
        assert_eq!(resp.error_code(), "UNAUTHENTICATED", "token {tok:?}");
        assert_no_secret(&req, &resp);
    }
}

#[test]
fn bad_signature_is_401_unauthenticated() {
    let server = Server::start(&[]);
    let req = UpgradeRequest::new("/ws").bearer(&wrongly_signed_token("u1"));
    assert_rejected(server.addr(), &req, 401, "UNAUTHENTICATED");
}

#[test]
fn alg_none_is_401_unauthenticated() {
    let server = Server::start(&[]);
    let req = UpgradeRequest::new("/ws").bearer(&alg_none_token("u1"));
    assert_rejected(server.addr(), &req, 401, "UNAUTHENTICATED");
}

#[test]
fn other_alg_signed_with_the_secret_is_401_unauthenticated() {
    let server = Server::start(&[]);
    let claims = format!(r#"{{"sub":"u1","exp":{}}}"#, now() + 3600);
    let hs512 = sign(r#"{"alg":"HS512","typ":"JWT"}"#, &claims, common::SECRET);
    let req = UpgradeRequest::new("/ws").bearer(&hs512);
    assert_rejected(server.addr(), &req, 401, "UNAUTHENTICATED");
}

#[test]
fn expired_token_is_401_token_expired() {
    let server = Server::start(&[]);
    let req = UpgradeRequest::new("/ws").bearer(&expired_token("u1"));
    assert_rejected(server.addr(), &req, 401, "TOKEN_EXPIRED");
}

#[test]
fn token_not_yet_valid_is_401_token_expired() {
    let server = Server::start(&[]);
    let req = UpgradeRequest::new("/ws").bearer(&not_yet_valid_token("u1"));
    assert_rejected(server.addr(), &req, 401, "TOKEN_EXPIRED");
}

#[test]
fn expired_token_with_a_bad_signature_is_unauthenticated_not_expired() {
    let server = Server::start(&[]);
    let claims = format!(r#"{{"sub":"u1","exp":{}}}"#, now() - 60);
    let forged = sign(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, "wrong");
    let req = UpgradeRequest::new("/ws").bearer(&forged);
    assert_rejected(server.addr(), &req, 401, "UNAUTHENTICATED");
}

#[test]
fn bad_token_in_query_is_rejected_without_echoing_it() {
    let server = Server::start(&[]);
    let bad = wrongly_signed_token("u1");
    let req = UpgradeRequest::new(&format!("/ws?token={bad}"));
    assert_rejected(server.addr(), &req, 401, "UNAUTHENTICATED");
}

#[test]
fn token_signed_with_any_configured_secret_is_accepted() {
    let mut cmd = Server::command();
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .args(["--jwt-secret", "old-secret", "--jwt-secret", "new-secret"])
        .env("ROOMCAST_JWT_SECRET", "env-one,env-two");
    let server = Server::spawn(cmd);
    let claims = format!(r#"{{"sub":"u1","exp":{}}}"#, now() + 3600);
    for secret in ["old-secret", "new-secret", "env-one", "env-two"] {
        let tok = sign(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, secret);
        let resp = UpgradeRequest::new("/ws").bearer(&tok).send(server.addr());
        assert_eq!(resp.status, 101, "token signed with {secret}: {resp:?}");
    }
    let tok = sign(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, "unknown");
    let resp = UpgradeRequest::new("/ws").bearer(&tok).send(server.addr());
    assert_eq!(resp.status, 401);
}

#[test]
fn offered_roomcast_v1_subprotocol_is_selected() {
    let server = Server::start(&[]);
    let req = valid().header("Sec-WebSocket-Protocol", "chat, roomcast.v1");
    let resp = req.send(server.addr());
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-protocol"), Some("roomcast.v1"));
}

#[test]
fn subprotocol_is_selected_for_the_tungstenite_client() {
    let server = Server::start(&[]);
    let mut req = ws_request(server.addr(), "/ws", Some(&token("u1")));
    let offer = "roomcast.v1".parse().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", offer);
    let (mut ws, resp) = ws_try(server.addr(), req).expect("upgrade");
    let chosen = resp.headers().get("sec-websocket-protocol");
    assert_eq!(chosen.and_then(|v| v.to_str().ok()), Some("roomcast.v1"));
    let hello = recv_json(&mut ws);
    assert_eq!(
        common::json_str(&hello, &["event"]),
        Some("connection:established")
    );
}

#[test]
fn other_subprotocols_only_are_accepted_without_selection() {
    let server = Server::start(&[]);
    let resp = valid()
        .header("Sec-WebSocket-Protocol", "chat")
        .send(server.addr());
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-protocol"), None);
    assert_eq!(
        valid().send(server.addr()).header("sec-websocket-protocol"),
        None
    );
}

#[test]
fn no_extension_is_negotiated() {
    let server = Server::start(&[]);
    let resp = valid()
        .header(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )
        .send(server.addr());
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-extensions"), None, "{resp:?}");
}

#[test]
fn http_1_0_upgrade_is_400() {
    let server = Server::start(&[]);
    let mut bytes = valid().to_bytes();
    bytes.splice(
        ..b"GET /ws HTTP/1.1".len(),
        b"GET /ws HTTP/1.0".iter().copied(),
    );
    common::http_raw(server.addr(), &bytes).assert_error(400, "BAD_REQUEST");
}

#[test]
fn repeated_key_is_400() {
    let server = Server::start(&[]);
    let mut req = valid();
    req.headers.push((
        "Sec-WebSocket-Key".into(),
        "AAAAAAAAAAAAAAAAAAAAAA==".into(),
    ));
    assert_rejected(server.addr(), &req, 400, "BAD_REQUEST");
}

#[test]
fn non_bearer_authorization_falls_back_to_the_query_token() {
    let server = Server::start(&[]);
    let req = UpgradeRequest::new(&format!("/ws?token={}", token("u1")))
        .header("Authorization", "Basic dTE6cHc=");
    assert_eq!(req.send(server.addr()).status, 101);
}

#[test]
fn per_ip_limit_counts_each_address_separately_and_frees_on_disconnect() {
    use std::net::Ipv4Addr;
    let server = Server::start(&["--max-connections-per-ip", "1"]);
    let addr = server.addr();
    let upgrade_from = |ip: Ipv4Addr| {
        let stream = common::connect_from(ip, addr);
        RawWs::upgrade(stream, "/ws", &token("u1"))
    };
    let first = upgrade_from(Ipv4Addr::new(127, 0, 0, 1));
    let _other_ip = upgrade_from(Ipv4Addr::new(127, 0, 0, 2));
    assert_rejected(addr, &valid(), 429, "TOO_MANY_CONNECTIONS");

    drop(first);
    wait_until(Duration::from_secs(5), "the per-IP slot to free", || {
        valid().send(addr).status == 101
    });
}

#[test]
fn jwt_leeway_applies_to_exp_and_nbf() {
    let server = Server::start(&["--jwt-leeway", "30s"]);
    let t = now();
    let status = |claims: String| {
        let req = UpgradeRequest::new("/ws").bearer(&mint(&claims));
        let resp = req.send(server.addr());
        (resp.status, (resp.status != 101).then(|| resp.error_code()))
    };
    let ok = (101, None);
    let expired = (401, Some("TOKEN_EXPIRED".to_owned()));
    assert_eq!(status(format!(r#"{{"sub":"u1","exp":{}}}"#, t - 10)), ok);
    assert_eq!(
        status(format!(r#"{{"sub":"u1","exp":{}}}"#, t - 90)),
        expired
    );
    assert_eq!(
        status(format!(
            r#"{{"sub":"u1","exp":{},"nbf":{}}}"#,
            t + 600,
            t + 10
        )),
        ok
    );
    assert_eq!(
        status(format!(
            r#"{{"sub":"u1","exp":{},"nbf":{}}}"#,
            t + 600,
            t + 90
        )),
        expired
    );
    assert_eq!(status(format!(r#"{{"sub":"u1","exp":{}.5}}"#, t + 600)), ok);
}

#[test]
fn over_the_handshake_rate_is_429_before_the_token_is_checked_then_recovers() {
    let server = Server::start(&["--handshake-rate", "3"]);
    let addr = server.addr();
    for _ in 0..3 {
        assert_eq!(valid().send(addr).status, 101);
    }
    assert_rejected(addr, &valid(), 429, "TOO_MANY_CONNECTIONS");
    // Over the rate, even a forged token is not worth an HMAC.
    let forged = UpgradeRequest::new("/ws").bearer(&wrongly_signed_token("u1"));
    assert_rejected(addr, &forged, 429, "TOO_MANY_CONNECTIONS");
    // Plain HTTP is not an upgrade attempt.
    assert_eq!(common::http_get(addr, "/healthz").status, 200);

    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(valid().send(addr).status, 101, "the bucket refilled");
}

#[test]
fn the_handshake_rate_counts_each_address_separately() {
    use std::net::Ipv4Addr;
    let server = Server::start(&["--handshake-rate", "1"]);
    let addr = server.addr();
    assert_eq!(valid().send(addr).status, 101);
    assert_rejected(addr, &valid(), 429, "TOO_MANY_CONNECTIONS");
    let stream = common::connect_from(Ipv4Addr::new(127, 0, 0, 3), addr);
    let _other = RawWs::upgrade(stream, "/ws", &token("u2"));
}

/// One upgrade attempt from `local`; the response status.
fn attempt_from(local: std::net::Ipv4Addr, addr: SocketAddr, request: &[u8]) -> u16 {
    use std::io::Write;
    let mut stream = common::connect_from(local, addr);
    stream.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    common::http::read_head(&mut stream).0.status
}

#[test]
fn a_handshake_flood_from_one_address_does_not_delay_an_open_connection() {
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    const ATTEMPTS: usize = 2_000;
    const FLOODERS: usize = 4;
    let server = Server::start(&["--handshake-rate", "5", "--shards", "1"]);
    let addr = server.addr();
    let mut member = RawWs::connect(addr, "/ws", &token("member"));
    member.read_non_ping();
    member.send_frame(
        true,
        common::opcode::TEXT,
        br#"{"event":"room:join","data":{"room":"lobby"},"id":1}"#,
    );
    assert!(member.read_non_ping().text().contains("\"success\":true"));

    let refused = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let request = valid().to_bytes();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (refused, request) = (refused.clone(), request.clone());
            std::thread::spawn(move || {
                for _ in 0..ATTEMPTS / FLOODERS {
                    if attempt_from(Ipv4Addr::new(127, 0, 0, 2), addr, &request) == 429 {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            for flooder in flooders {
                flooder.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut worst = Duration::ZERO;
    let mut pings = 0;
    while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
        let sent = Instant::now();
        member.send_frame(true, common::opcode::PING, b"rtt");
        loop {
            let frame = member.read_frame();
            if frame.opcode == common::opcode::PONG && frame.payload == b"rtt" {
                break;
            }
        }
        worst = worst.max(sent.elapsed());
        pings += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    watcher.join().unwrap();
    let refused = refused.load(Ordering::Relaxed);
    assert!(pings >= 5, "only {pings} pings during the flood");
    assert!(
        refused >= ATTEMPTS / 2,
        "only {refused} of {ATTEMPTS} attempts got 429"
    );
    assert!(
        worst < Duration::from_secs(1),
        "a ping round trip took {worst:?} during the flood"
    );
}

/// A token whose `rooms` and `pub` claims each hold `patterns` patterns.
fn token_with_patterns(patterns: usize) -> String {
    let list: Vec<String> = (0..patterns)
        .map(|i| format!("\"prices:SYM{i:04}\""))
        .collect();
    let list = list.join(",");
    mint(&format!(
        r#"{{"sub":"feed","exp":{},"rooms":[{list}],"pub":[{list}]}}"#,
        now() + 3600
    ))
}

#[test]
fn a_token_with_a_few_hundred_patterns_fits_the_default_head() {
    let server = Server::start(&[]);
    let token = token_with_patterns(150);
    assert!(token.len() > 5000, "{}", token.len());
    let resp = UpgradeRequest::new("/ws")
        .bearer(&token)
        .send(server.addr());
    assert_eq!(resp.status, 101, "{resp:?}");
}

#[test]
fn a_token_at_the_most_patterns_needs_a_larger_head_and_then_passes() {
    let token = token_with_patterns(256);
    assert!(
        (8 * 1024..=16 * 1024).contains(&token.len()),
        "{}",
        token.len()
    );
    let small = Server::start(&[]);
    let req = UpgradeRequest::new("/ws").bearer(&token);
    assert_rejected(small.addr(), &req, 431, "HEADERS_TOO_LARGE");
    let large = Server::start(&["--max-header-bytes", "32KiB"]);
    assert_eq!(req.send(large.addr()).status, 101);
}

#[test]
fn a_token_over_16_kib_is_401_saying_it_is_too_long() {
    let server = Server::start(&["--max-header-bytes", "64KiB"]);
    let token = format!("{}.{}.sig", "a".repeat(10), "b".repeat(16 * 1024));
    let req = UpgradeRequest::new("/ws").bearer(&token);
    let resp = assert_rejected(server.addr(), &req, 401, "UNAUTHENTICATED");
    assert!(
        resp.body.contains("token is longer than 16384 bytes"),
        "{resp:?}"
    );
}
