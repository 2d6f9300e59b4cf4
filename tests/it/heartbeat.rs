//! Liveness: the server pings every `--ping-interval` and aborts connections
//! that stay silent for `--ping-timeout` after a ping.

use crate::common;

use std::time::Duration;

use tungstenite::Message;

use common::raw::NoFrame;
use common::{RawWs, Server, json_str, opcode, recv_json, token, ws_connect};

const FAST_HEARTBEAT: [&str; 4] = ["--ping-interval", "200ms", "--ping-timeout", "300ms"];

#[test]
fn silent_client_is_pinged_then_aborted_without_a_close_frame() {
    let server = Server::start(&FAST_HEARTBEAT);
    let mut ws = RawWs::connect(server.addr(), "/ws", &token("u1"));
    ws.set_read_timeout(Duration::from_secs(3));

    let mut seen = Vec::new();
    loop {
        let frame = ws.read_frame();
        let is_ping = frame.opcode == opcode::PING;
        if is_ping {
            assert!(
                frame.payload.is_empty(),
                "server pings are empty: {frame:?}"
            );
        }
        seen.push(frame);
        if is_ping {
            break;
        }
    }
    // Never answer: the server must drop the TCP connection, without a close frame.
    loop {
        match ws.try_read_frame() {
            Ok(frame) => {
                assert_ne!(
                    frame.opcode,
                    opcode::CLOSE,
                    "aborted connections get no close frame"
                );
                assert_eq!(frame.opcode, opcode::PING, "unexpected {frame:?}");
            }
            Err(NoFrame::Eof) => break,
            Err(NoFrame::Error(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(other) => panic!("silent client was not disconnected: {other:?}"),
        }
    }
    assert!(
        seen.iter().any(|f| f.opcode == opcode::TEXT),
        "no greeting before the ping: {seen:?}"
    );
    common::wait_for_metric(server.addr(), "roomcast_ping_timeouts_total", 1.0);
    let aborted = common::metric(
        server.addr(),
        r#"roomcast_connections_closed_total{code="1006"}"#,
    );
    assert_eq!(aborted, 1.0);
}

#[test]
fn client_answering_pings_stays_connected_across_many_intervals() {
    let server = Server::start(&FAST_HEARTBEAT);
    let mut ws = ws_connect(server.addr(), "/ws", &token("u1"));
    recv_json(&mut ws);

    // tungstenite answers each ping with a pong while reading. Five pings span
    // more than 800 ms, well past the 300 ms timeout after the first one.
    let mut pings = 0;
    while pings < 5 {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("connection lost after {pings} pings: {e}"),
        }
    }
    ws.send(Message::text(r#"{"event":"ping"}"#)).unwrap();
    loop {
        match ws.read().expect("still connected") {
            Message::Text(t) => {
                let v = common::parse_json(t.as_str());
                assert_eq!(json_str(&v, &["event"]), Some("pong"));
                break;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn any_inbound_frame_counts_as_liveness() {
    let server = Server::start(&FAST_HEARTBEAT);
    let mut ws = RawWs::connect(server.addr(), "/ws", &token("u1"));
    ws.set_read_timeout(Duration::from_secs(3));
    // Never send a pong, only bare text pings: each is an inbound frame.
    let mut pings = 0;
    while pings < 5 {
        let frame = ws.read_frame();
        match frame.opcode {
            opcode::PING => {
                pings += 1;
                ws.send_frame(true, opcode::TEXT, b"ping");
            }
            opcode::TEXT => {}
            _ => panic!("unexpected {frame:?}"),
        }
    }
}
