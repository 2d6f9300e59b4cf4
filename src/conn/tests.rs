//! In-memory tests of the connection state machine: bytes in, bytes out,
//! no sockets.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::auth;
use crate::cli::{Cli, Command};
use crate::rooms::wire;
use crate::ws::frame::encode_masked_frame;

const SECRET: &str = "unit-secret";

struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _: IpAddr, _: Instant) -> Result<(), ErrorCode> {
        Ok(())
    }
    fn release(&self, _: IpAddr) {}
}

impl Observe for AdmitAll {
    fn snapshot(&self) -> Snapshot {
        Snapshot::default()
    }
    fn uptime(&self) -> Duration {
        Duration::ZERO
    }
}

fn config(args: &[&str]) -> Config {
    let mut argv = vec!["roomcast", "serve", "--jwt-secret", SECRET];
    argv.extend_from_slice(args);
    let Command::Serve(serve) = <Cli as clap::Parser>::parse_from(argv).command else {
        unreachable!()
    };
    serve.into_config(None, 1, 10_000).unwrap()
}

struct Harness {
    config: Config,
    keys: Keys,
    parser: Parser,
    requests: Vec<Request>,
    reports: Vec<report::Report>,
    metrics: ShardMetrics,
    now: Instant,
}

impl Harness {
    fn new(args: &[&str]) -> Self {
        Self {
            config: config(args),
            keys: Keys::new(&[SECRET]),
            parser: Parser::default(),
            requests: Vec::new(),
            reports: Vec::new(),
            metrics: ShardMetrics::default(),
            now: Instant::now(),
        }
    }

    fn feed(&mut self, conn: &mut Connection, bytes: &[u8]) -> usize {
        let mut input = bytes.to_vec();
        let mut scratch = Vec::new();
        let mut cx = Context {
            config: &self.config,
            keys: &self.keys,
            admission: &AdmitAll,
            observe: &AdmitAll,
            metrics: &self.metrics,
            parser: &mut self.parser,
            scratch: &mut scratch,
            now: self.now,
            unix_ms: 1_000,
            draining: false,
            requests: &mut self.requests,
            reports: &mut self.reports,
        };
        conn.on_input(&mut input, &mut cx)
    }

    fn open(&mut self) -> Connection {
        let claims = Claims::new("u1", f64::MAX);
        let token = auth::mint(&claims, SECRET.as_bytes());
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut conn = Connection::new(1, IpAddr::V4(Ipv4Addr::LOCALHOST), self.now);
        self.feed(&mut conn, request.as_bytes());
        assert!(conn.is_open_websocket());
        take_output(&mut conn);
        conn
    }

    fn send_text(&mut self, conn: &mut Connection, text: &str) {
        let mut frame = Vec::new();
        encode_masked_frame(
            true,
            OpCode::Text,
            text.as_bytes(),
            [1, 2, 3, 4],
            &mut frame,
        );
        assert_eq!(self.feed(conn, &frame), frame.len());
    }
}

fn take_output(conn: &mut Connection) -> Vec<u8> {
    let out = conn.outbound();
    let mut bytes = Vec::new();
    while !out.is_empty() {
        let mut slices = [std::io::IoSlice::new(&[]); outbound::MAX_IO_SLICES];
        let n = out.io_slices(&mut slices);
        let chunk: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        out.advance(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

fn event(seq: u64, size: usize) -> Arc<[u8]> {
    let data = format!("\"{}\"", "x".repeat(size));
    wire::text_frame(&wire::room_message(
        "a:b",
        "r",
        data.as_bytes(),
        "u",
        seq,
        0,
    ))
}

/// Delivers room events until the next one would not fit under the bound;
/// returns the last `seq` delivered.
fn fill(h: &Harness, conn: &mut Connection, room: &Arc<str>) -> u64 {
    let mut seq = 0;
    while conn.outbound().pending() + event(seq + 1, 1000).len() <= h.config.max_write_buffer {
        seq += 1;
        conn.deliver(
            room,
            &event(seq, 1000),
            Delivery::RoomEvent,
            h.now,
            &h.config,
        );
    }
    seq
}

#[test]
fn join_and_publish_become_requests_and_membership_is_tracked() {
    let mut h = Harness::new(&[]);
    let mut conn = h.open();
    h.send_text(
        &mut conn,
        r#"{"event":"room:join","data":{"room":"lobby"},"id":1}"#,
    );
    h.send_text(
        &mut conn,
        r#"{"event":"chat:msg","room":"lobby","data":[1],"id":2}"#,
    );
    assert!(conn.in_room("lobby"));
    assert!(
        matches!(
            &h.requests[..],
            [Request::Join { .. }, Request::Publish { .. }]
        ),
        "{:?}",
        h.requests
    );
    h.send_text(
        &mut conn,
        r#"{"event":"room:leave","data":{"room":"lobby"}}"#,
    );
    assert!(!conn.in_room("lobby"));
}

/// A harness with a 16 KiB write bound (and messages as large) under `policy`.
fn small_buffer(policy: &str) -> Harness {
    Harness::new(&[
        "--max-message-size",
        "16KiB",
        "--max-write-buffer",
        "16KiB",
        "--slow-consumer",
        policy,
    ])
}

#[test]
fn close_policy_cuts_a_slow_consumer_with_4008() {
    let mut h = small_buffer("close");
    let mut conn = h.open();
    let room: Arc<str> = Arc::from("r");
    let sent = fill(&h, &mut conn, &room);
    assert!(conn.is_open_websocket());
    conn.deliver(
        &room,
        &event(sent + 1, 1000),
        Delivery::RoomEvent,
        h.now,
        &h.config,
    );
    assert!(conn.is_finishing());
    assert_eq!(conn.close_code(), Some(close::SLOW_CONSUMER));
    let output = take_output(&mut conn);
    assert!(
        output.ends_with(b"slow consumer"),
        "the close frame comes last"
    );
}

#[test]
fn drop_policy_counts_and_reports_dropped_events_once_caught_up() {
    let mut h = small_buffer("drop");
    let mut conn = h.open();
    let room: Arc<str> = Arc::from("r");
    let sent = fill(&h, &mut conn, &room);
    for extra in 1..=5 {
        conn.deliver(
            &room,
            &event(sent + extra, 1000),
            Delivery::RoomEvent,
            h.now,
            &h.config,
        );
    }
    assert!(conn.is_open_websocket());
    let first = take_output(&mut conn);
    assert!(conn.release_held_back(&h.config));
    let notice = take_output(&mut conn);
    assert!(
        String::from_utf8_lossy(&notice)
            .contains(r#"{"event":"system:dropped","data":{"count":5}}"#)
    );
    assert_eq!(
        first.len(),
        (1..=sent).map(|seq| event(seq, 1000).len()).sum::<usize>()
    );
}

#[test]
fn conflate_policy_keeps_the_newest_event_per_room() {
    let mut h = small_buffer("conflate");
    let mut conn = h.open();
    let room: Arc<str> = Arc::from("r");
    let sent = fill(&h, &mut conn, &room);
    let newest = event(sent + 2, 1000);
    conn.deliver(
        &room,
        &event(sent + 1, 1000),
        Delivery::RoomEvent,
        h.now,
        &h.config,
    );
    conn.deliver(&room, &newest, Delivery::RoomEvent, h.now, &h.config);
    take_output(&mut conn);
    assert!(conn.release_held_back(&h.config));
    let released = take_output(&mut conn);
    assert!(released.ends_with(wire::frame_text(&newest)));
    assert!(!String::from_utf8_lossy(&released).contains(&format!("\"seq\":{},", sent + 1)));
}

#[test]
fn flooding_past_twice_the_burst_closes_4003() {
    let mut h = Harness::new(&["--rate-limit", "1", "--rate-burst", "2"]);
    let mut conn = h.open();
    for _ in 0..4 {
        h.send_text(&mut conn, "ping");
    }
    let replies = String::from_utf8_lossy(&take_output(&mut conn)).into_owned();
    assert!(replies.contains("RATE_LIMITED"), "{replies}");
    assert!(conn.is_open_websocket());
    h.send_text(&mut conn, "ping");
    assert_eq!(conn.close_code(), Some(close::RATE_LIMITED));
}
