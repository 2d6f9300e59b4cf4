//! Graceful shutdown: SIGTERM/SIGINT close every connection with 1001 after
//! its queued output, refuse new upgrades with 503, and exit 0.

use crate::common;

use std::time::Duration;

use tungstenite::Message;

use common::{
    RawWs, Server, UpgradeRequest, expect_close, http_get, json_str, parse_json, recv_json, token,
    ws_connect,
};

const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn sigterm_closes_every_connection_with_1001_and_exits_0() {
    let mut server = Server::start(&["--shards", "2"]);
    let mut clients: Vec<_> = (0..5)
        .map(|i| {
            let mut ws = ws_connect(server.addr(), "/ws", &token(&format!("u{i}")));
            recv_json(&mut ws);
            ws
        })
        .collect();

    server.terminate();
    // Each client answers the close and then closes its socket (on drop).
    for mut ws in clients.drain(..) {
        assert_eq!(expect_close(&mut ws), 1001);
    }
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn sigint_behaves_like_sigterm() {
    let mut server = Server::start(&[]);
    let mut ws = ws_connect(server.addr(), "/ws", &token("u1"));
    recv_json(&mut ws);
    server.signal(libc::SIGINT);
    assert_eq!(expect_close(&mut ws), 1001);
    drop(ws);
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0));
}

#[test]
fn queued_output_is_delivered_before_the_1001_close() {
    let mut server = Server::start(&["--echo"]);
    let mut ws = ws_connect(server.addr(), "/echo", &token("u1"));
    for i in 0..50 {
        ws.write(Message::text(format!("queued {i}"))).unwrap();
    }
    ws.flush().unwrap();
    // The first echo proves the server is processing the batch.
    assert_eq!(common::recv(&mut ws), Message::text("queued 0"));
    server.terminate();
    let mut rest = Vec::new();
    let code = loop {
        match ws.read().expect("read until close") {
            Message::Text(t) => rest.push(t.as_str().to_owned()),
            Message::Close(frame) => {
                let _ = ws.flush();
                break frame.map(|f| u16::from(f.code));
            }
            _ => {}
        }
    };
    assert_eq!(code, Some(1001));
    drop(ws);
    // Whatever was echoed after the signal came in order, without gaps.
    for (i, text) in rest.iter().enumerate() {
        assert_eq!(text, &format!("queued {}", i + 1));
    }
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0));
}

/// Starts a server, connects a raw client that will never answer the close
/// (which keeps the drain going), sends SIGTERM and waits for the 1001.
fn draining_server() -> (Server, RawWs) {
    let server = Server::start(&["--drain-timeout", "2s"]);
    let mut lingering = RawWs::connect(server.addr(), "/ws", &token("u1"));
    lingering.read_non_ping();
    server.terminate();
    assert_eq!(lingering.expect_close(), 1001);
    (server, lingering)
}

#[test]
fn during_drain_healthz_is_503_draining() {
    let (mut server, _lingering) = draining_server();
    let health = http_get(server.addr(), "/healthz");
    assert_eq!(health.status, 503, "{health:?}");
    assert_eq!(
        json_str(&parse_json(&health.body), &["status"]),
        Some("draining")
    );
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0));
}

#[test]
fn during_drain_upgrades_are_503_server_busy() {
    let (mut server, _lingering) = draining_server();
    let upgrade = UpgradeRequest::new("/ws")
        .bearer(&token("u2"))
        .send(server.addr());
    upgrade.assert_error(503, "SERVER_BUSY");
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0));
}

#[test]
fn second_signal_cuts_the_drain_short_and_still_exits_0() {
    let mut server = Server::start(&["--drain-timeout", "60s"]);
    let mut lingering = RawWs::connect(server.addr(), "/ws", &token("u1"));
    lingering.read_non_ping();
    server.terminate();
    assert_eq!(lingering.expect_close(), 1001);
    if server.is_running() {
        server.terminate();
    }
    // Far less than the 60 s drain: only the second signal can end it this soon.
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn idle_server_exits_0_on_sigterm() {
    let mut server = Server::start(&[]);
    server.terminate();
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0));
}
