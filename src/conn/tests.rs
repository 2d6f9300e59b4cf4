//! In-memory tests of the connection state machine: bytes in, bytes out,
//! no sockets.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::auth;
use crate::cli::ServeArgs;
use crate::proto::wire;
use crate::ws::frame::{self, encode_masked_frame};

const SECRET: &str = "unit-secret";

struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _: IpAddr, _: Instant) -> Result<(), ErrorCode> {
        Ok(())
    }
    fn release(&self, _: IpAddr) {}
    fn admit_publish(&self, _: &str, _: usize, _: f64, _: Instant) -> bool {
        true
    }
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
    let mut flags = vec!["--jwt-secret", SECRET];
    flags.extend_from_slice(args);
    let serve = ServeArgs::try_parse_from(flags).expect("parses");
    serve
        .into_config(crate::cli::EnvLists::default(), 1, 10_000)
        .unwrap()
}

struct Harness {
    config: Config,
    keys: Keys,
    parser: Parser,
    requests: Vec<Request>,
    reports: Vec<report::Report>,
    metrics: ShardMetrics,
    codec: Codec,
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
            codec: Codec::default(),
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
            codec: &mut self.codec,
            now: self.now,
            unix_ms: 1_000,
            draining: false,
            issuer: Issuer {
                node: self.config.node_id(),
                boot: 0xc0ffee,
            },
            requests: &mut self.requests,
            reports: &mut self.reports,
        };
        conn.on_input(&mut input, &mut cx)
    }

    fn open(&mut self) -> Connection {
        self.open_as(Claims::new("u1", f64::MAX))
    }

    fn open_as(&mut self, claims: Claims) -> Connection {
        let mut conn = self.upgrade(1, claims);
        take_output(&mut conn);
        conn
    }

    /// Connection `id` upgraded to `/ws` as `claims`; its output (the
    /// handshake response and `connection:established`) is left queued.
    fn upgrade(&mut self, id: u64, claims: Claims) -> Connection {
        self.upgrade_with(id, claims, "")
    }

    /// `upgrade` with `headers` (whole lines) added to the request.
    fn upgrade_with(&mut self, id: u64, claims: Claims, headers: &str) -> Connection {
        let token = auth::mint(&claims, SECRET.as_bytes());
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        let mut conn = Connection::new(id, IpAddr::V4(Ipv4Addr::LOCALHOST), self.now);
        self.feed(&mut conn, request.as_bytes());
        assert!(conn.is_open_websocket());
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

fn event(seq: u64, size: usize) -> ShardFrame {
    let data = format!("\"{}\"", "x".repeat(size));
    ShardFrame::new(wire::room_frame("a:b", "r", data.as_bytes(), "u", seq, 0))
}

/// Delivers room events until the next one would not fit under the bound;
/// returns the last `seq` delivered.
fn fill(h: &Harness, conn: &mut Connection, room: &Arc<str>) -> u64 {
    let mut seq = 0;
    while conn.outbound().pending() + event(seq + 1, 1000).len()
        <= h.config.backpressure.max_write_buffer
    {
        seq += 1;
        conn.deliver(
            Some(room),
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

/// Fills the queue to its bound, then delivers one room event more, to
/// room "r"; returns the room and that event's `seq`.
fn past_the_bound_by_one(h: &Harness, conn: &mut Connection) -> (Arc<str>, u64) {
    let room: Arc<str> = Arc::from("r");
    let sent = fill(h, conn, &room);
    assert!(conn.is_open_websocket());
    conn.deliver(
        Some(&room),
        &event(sent + 1, 1000),
        Delivery::RoomEvent,
        h.now,
        &h.config,
    );
    (room, sent + 1)
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
    past_the_bound_by_one(&h, &mut conn);
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
            Some(&room),
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

/// The JSON text of each MessagePack binary frame in `output` (after the
/// 101's head, if any), "text" for a text frame (room frames given to
/// `deliver` as they are: the outlet picks a member's form), "close CODE".
fn packed_messages(output: &[u8]) -> Vec<String> {
    let mut at = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |end| end + 4);
    let mut texts = Vec::new();
    while at < output.len() {
        let header = crate::ws::frame::parse_header(&output[at..])
            .unwrap()
            .unwrap();
        let end = at + header.header_len + header.payload_len as usize;
        let payload = &output[at + header.header_len..end];
        match header.opcode {
            OpCode::Binary => {
                let mut json = Vec::new();
                crate::proto::msgpack::to_json(payload, &mut json).unwrap();
                texts.push(String::from_utf8(json).unwrap());
            }
            OpCode::Close => texts.push(format!(
                "close {}",
                u16::from_be_bytes([payload[0], payload[1]])
            )),
            OpCode::Text => texts.push("text".into()),
            other => panic!("a {other:?} frame to a MessagePack connection"),
        }
        at = end;
    }
    texts
}

#[test]
fn a_msgpack_connection_gets_every_message_in_msgpack_and_closes_1003_on_text() {
    let mut h = small_buffer("drop");
    let mut conn = h.upgrade_with(
        1,
        Claims::new("u1", f64::MAX),
        "Sec-WebSocket-Protocol: roomcast.msgpack\r\n",
    );
    let output = take_output(&mut conn);
    assert!(
        String::from_utf8_lossy(&output).contains("Sec-WebSocket-Protocol: roomcast.msgpack\r\n")
    );
    let hello = packed_messages(&output);
    assert!(
        hello[0].starts_with(r#"{"event":"connection:established""#),
        "{hello:?}"
    );
    assert!(conn.speaks_msgpack());

    // A reply from the rooms, and `system:dropped` once caught up.
    assert!(conn.send_text(
        br#"{"event":"ack","id":7,"success":true,"data":{}}"#,
        h.now,
        &h.config,
        &mut Codec::default()
    ));
    past_the_bound_by_one(&h, &mut conn);
    let first = packed_messages(&take_output(&mut conn));
    assert_eq!(
        first[0],
        r#"{"event":"ack","id":7,"success":true,"data":{}}"#
    );
    assert!(conn.release_held_back(&h.config));
    assert_eq!(
        packed_messages(&take_output(&mut conn)),
        [r#"{"event":"system:dropped","data":{"count":1}}"#]
    );

    h.send_text(&mut conn, r#"{"event":"ping"}"#);
    assert_eq!(conn.close_code(), Some(close::UNSUPPORTED_DATA));
    assert_eq!(
        packed_messages(&take_output(&mut conn)).last().unwrap(),
        "close 1003"
    );
}

#[test]
fn conflate_policy_keeps_the_newest_event_per_room() {
    let mut h = small_buffer("conflate");
    let mut conn = h.open();
    let (room, held) = past_the_bound_by_one(&h, &mut conn);
    let newest = event(held + 1, 1000);
    conn.deliver(Some(&room), &newest, Delivery::RoomEvent, h.now, &h.config);
    take_output(&mut conn);
    assert!(conn.release_held_back(&h.config));
    let released = take_output(&mut conn);
    assert!(released.ends_with(wire::frame_text(&newest)));
    assert!(!String::from_utf8_lossy(&released).contains(&format!("\"seq\":{held},")));
}

/// What `deliver` makes of a message of `kind` past its bound under `policy`.
fn past_the_bound(kind: Delivery, policy: &str) -> Delivered {
    match (kind, policy) {
        (Delivery::RoomEvent, "drop") => Delivered::Dropped,
        (Delivery::RoomEvent, "conflate") => Delivered::HeldBack,
        _ => Delivered::Closed,
    }
}

/// An open connection whose queue holds `pending` unsent bytes.
fn with_pending(h: &mut Harness, pending: usize) -> Connection {
    let mut conn = h.open();
    if pending > 0 {
        conn.outbound().push_raw(&vec![0; pending]);
    }
    conn
}

#[test]
fn deliver_queues_up_to_each_kinds_bound_and_applies_the_policy_one_byte_past_it() {
    let room: Arc<str> = Arc::from("r");
    for policy in ["close", "drop", "conflate"] {
        let mut h = small_buffer(policy);
        let bound = h.config.backpressure.max_write_buffer;
        for (kind, limit) in [(Delivery::RoomEvent, bound), (Delivery::Other, 2 * bound)] {
            let case = format!("{kind:?} under {policy}");
            for (len, expected) in [
                (limit - 1001, Delivered::Queued),
                (limit - 1000, Delivered::Queued),
                (limit - 999, past_the_bound(kind, policy)),
            ] {
                let mut conn = with_pending(&mut h, 1000);
                let frame = ShardFrame::from(&vec![b'x'; len][..]);
                let delivered = conn.deliver(Some(&room), &frame, kind, h.now, &h.config);
                assert_eq!(delivered, expected, "{case}, a {len}-byte frame");
                let closed = expected == Delivered::Closed;
                assert_eq!(conn.is_finishing(), closed, "{case}, a {len}-byte frame");
            }
            let mut conn = with_pending(&mut h, 0);
            let huge = ShardFrame::from(&vec![b'x'; 3 * limit][..]);
            let delivered = conn.deliver(Some(&room), &huge, kind, h.now, &h.config);
            assert_eq!(
                delivered,
                Delivered::Queued,
                "{case}: an empty queue takes any frame"
            );
        }
    }
}

#[test]
fn replies_queue_up_to_twice_the_bound_counting_their_whole_frames() {
    for policy in ["close", "drop", "conflate"] {
        let mut h = small_buffer(policy);
        let limit = 2 * h.config.backpressure.max_write_buffer;
        for (frame_len, fits) in [
            (limit - 1001, true),
            (limit - 1000, true),
            (limit - 999, false),
        ] {
            let mut conn = with_pending(&mut h, 1000);
            // A 16-bit length: a 4-byte header.
            let text = vec![b'x'; frame_len - 4];
            assert_eq!(frame::server_frame_len(text.len()), frame_len);
            let queued = conn.send_text(&text, h.now, &h.config, &mut h.codec);
            assert_eq!(queued, fits, "a {frame_len}-byte reply under {policy}");
            assert_eq!(conn.is_finishing(), !fits);
            if !fits {
                assert_eq!(conn.close_code(), Some(close::SLOW_CONSUMER));
            }
        }
        let mut conn = with_pending(&mut h, 0);
        let huge = vec![b'x'; 3 * limit];
        assert!(
            conn.send_text(&huge, h.now, &h.config, &mut h.codec),
            "an empty queue takes any reply"
        );
    }
}

#[test]
fn a_pong_counts_its_header_against_twice_the_bound() {
    let mut h = small_buffer("close");
    let limit = 2 * h.config.backpressure.max_write_buffer;
    let payload = [b'p'; 125];
    let mut ping = Vec::new();
    encode_masked_frame(true, OpCode::Ping, &payload, [1, 2, 3, 4], &mut ping);
    for (pending, fits) in [
        (limit - frame::server_frame_len(125), true),
        (limit - 126, false),
    ] {
        let mut conn = with_pending(&mut h, pending);
        h.feed(&mut conn, &ping);
        assert_eq!(conn.is_open_websocket(), fits, "{pending} bytes pending");
        if !fits {
            assert_eq!(conn.close_code(), Some(close::SLOW_CONSUMER));
        }
    }
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

/// Two joins with ids pass the rate limit, then a flood closes 4003; the
/// rooms have not answered the joins yet.
fn closed_4003_owing_two_joins(h: &mut Harness) -> Connection {
    let mut conn = h.open();
    h.send_text(&mut conn, r#"{"event":"room:join","room":"a","id":1}"#);
    h.send_text(&mut conn, r#"{"event":"room:join","room":"b","id":2}"#);
    for _ in 0..3 {
        h.send_text(&mut conn, "ping");
    }
    assert_eq!(conn.close_code(), Some(close::RATE_LIMITED));
    assert_eq!(h.requests.len(), 2, "{:?}", h.requests);
    conn
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut frame = Vec::new();
    crate::ws::frame::encode_close(code, reason, &mut frame);
    frame
}

#[test]
fn a_close_waits_for_the_answers_the_rooms_owe() {
    let mut h = Harness::new(&["--rate-limit", "1", "--rate-burst", "2"]);
    let mut conn = closed_4003_owing_two_joins(&mut h);
    let before = take_output(&mut conn);
    let close = close_frame(close::RATE_LIMITED, "rate limit exceeded");
    assert!(!before.ends_with(&close), "closed before the answers came");
    assert!(!conn.is_finishing());
    let ack = |id: u32| format!(r#"{{"event":"ack","id":{id},"success":true}}"#);
    assert!(conn.send_text(ack(1).as_bytes(), h.now, &h.config, &mut h.codec));
    conn.on_answer(h.now, &h.config);
    assert!(!conn.is_finishing(), "one answer is still owed");
    assert!(conn.send_text(ack(2).as_bytes(), h.now, &h.config, &mut h.codec));
    conn.on_answer(h.now, &h.config);
    assert!(conn.is_finishing());
    let after = take_output(&mut conn);
    let mut expected = wire::text_frame(ack(1).as_bytes()).to_vec();
    expected.extend_from_slice(&wire::text_frame(ack(2).as_bytes()));
    expected.extend_from_slice(&close);
    assert_eq!(after, expected);
}

#[test]
fn a_close_owed_answers_goes_out_by_its_deadline() {
    let mut h = Harness::new(&["--rate-limit", "1", "--rate-burst", "2"]);
    let mut conn = closed_4003_owing_two_joins(&mut h);
    take_output(&mut conn);
    let almost = h.now + Duration::from_millis(limits::CLOSE_AWAIT_ANSWERS_MILLIS - 1);
    assert_eq!(conn.on_tick(almost, 0, &h.config), Tick::Keep);
    assert!(!conn.is_finishing());
    let late = h.now + Duration::from_millis(limits::CLOSE_AWAIT_ANSWERS_MILLIS);
    assert_eq!(conn.on_tick(late, 0, &h.config), Tick::Keep);
    assert!(conn.is_finishing());
    let close = close_frame(close::RATE_LIMITED, "rate limit exceeded");
    assert_eq!(take_output(&mut conn), close);
    // An answer that comes after the close is not sent.
    assert!(!conn.send_text(br#"{"event":"ack","id":1}"#, late, &h.config, &mut h.codec));
}

/// A connection owing the rooms one answer, to a publish with an id.
fn owing_one_publish(h: &mut Harness, exp: f64) -> Connection {
    let mut conn = h.open_as(Claims::new("u1", exp));
    h.send_text(&mut conn, r#"{"event":"room:join","room":"a"}"#);
    conn.on_answer(h.now, &h.config);
    h.send_text(
        &mut conn,
        r#"{"event":"feed:tick","room":"a","data":1,"id":9}"#,
    );
    assert_eq!(h.requests.len(), 2, "{:?}", h.requests);
    take_output(&mut conn);
    conn
}

#[test]
fn a_shutdown_close_waits_for_the_answers_owed() {
    let mut h = Harness::new(&[]);
    let mut conn = owing_one_publish(&mut h, f64::MAX);
    conn.begin_shutdown(h.now, &h.config);
    assert_eq!(conn.close_code(), Some(close::GOING_AWAY));
    assert!(take_output(&mut conn).is_empty());
    let ack = br#"{"event":"ack","id":9,"success":true,"data":{"seq":1}}"#;
    assert!(conn.send_text(ack, h.now, &h.config, &mut h.codec));
    conn.on_answer(h.now, &h.config);
    let mut expected = wire::text_frame(ack).to_vec();
    expected.extend_from_slice(&close_frame(close::GOING_AWAY, "server shutting down"));
    assert_eq!(take_output(&mut conn), expected);
}

#[test]
fn a_token_expiry_close_waits_for_the_answers_owed() {
    let mut h = Harness::new(&[]);
    let mut conn = owing_one_publish(&mut h, 2.0);
    let expired = conn.on_tick(h.now, 2_000, &h.config);
    assert_eq!(expired, Tick::Keep);
    assert_eq!(conn.close_code(), Some(close::TOKEN_EXPIRED));
    assert!(take_output(&mut conn).is_empty());
    conn.on_answer(h.now, &h.config);
    assert_eq!(
        take_output(&mut conn),
        close_frame(close::TOKEN_EXPIRED, "token expired")
    );
}

#[test]
fn a_slow_consumer_is_cut_without_waiting_for_answers() {
    let mut h = Harness::new(&["--rate-limit", "1", "--rate-burst", "2"]);
    let mut conn = closed_4003_owing_two_joins(&mut h);
    take_output(&mut conn);
    let huge = vec![b'x'; h.config.backpressure.max_write_buffer * 3];
    let mut ack = br#"{"event":"ack","id":1,"data":""#.to_vec();
    ack.extend_from_slice(&huge);
    ack.extend_from_slice(b"\"}");
    assert!(
        conn.send_text(&ack, h.now, &h.config, &mut h.codec),
        "a first frame always fits"
    );
    assert!(
        !conn.send_text(&ack, h.now, &h.config, &mut h.codec),
        "over twice the bound"
    );
    assert!(conn.is_finishing());
    assert_eq!(conn.close_code(), Some(close::SLOW_CONSUMER));
}

fn publisher_token(patterns: &[&str], exp: f64) -> String {
    let claims = Claims {
        publish: Some(patterns.iter().map(|&p| p.into()).collect()),
        ..Claims::new("feed", exp)
    };
    auth::mint(&claims, SECRET.as_bytes())
}

/// `POST /publish` with a bearer token for `prices:*`, `headers` (CRLF
/// terminated lines) and `body` framed by `Content-Length`.
fn post(headers: &str, body: &str) -> String {
    let token = publisher_token(&["prices:*"], f64::MAX);
    format!(
        "POST /publish HTTP/1.1\r\nAuthorization: Bearer {token}\r\n{headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const TICK: &str = r#"{"room":"prices:btc","event":"price:tick","data":{"p" : 1}}"#;

fn output_text(conn: &mut Connection) -> String {
    String::from_utf8(take_output(conn)).unwrap()
}

#[test]
fn the_conn_id_names_the_process_the_shard_and_the_count_and_in_a_cluster_the_node() {
    let node = ["--redis", "redis://127.0.0.1:1", "--node-id", "edge-1"];
    for (args, expected) in [
        (&[][..], r#""connId":"00c0ffee-2-1a""#),
        (&node[..], r#""connId":"edge-1:00c0ffee-2-1a""#),
    ] {
        let mut h = Harness::new(args);
        let mut conn = h.upgrade(id::raw(2, 0x1a), Claims::new("u1", f64::MAX));
        let out = String::from_utf8_lossy(&take_output(&mut conn)).into_owned();
        assert!(out.contains(expected), "{out}");
    }
}

fn http_conn(h: &Harness) -> Connection {
    Connection::new(1, IpAddr::V4(Ipv4Addr::LOCALHOST), h.now)
}

#[test]
fn a_publish_goes_to_the_rooms_and_is_answered_once_every_seq_is_back() {
    let mut h = Harness::new(&[]);
    let mut conn = http_conn(&h);
    let request = post("", TICK);
    assert_eq!(h.feed(&mut conn, request.as_bytes()), request.len());
    assert!(conn.is_publishing());
    assert!(take_output(&mut conn).is_empty());
    let [
        Request::HttpPublish {
            index: 0,
            message,
            from,
        },
    ] = &h.requests[..]
    else {
        panic!("{:?}", h.requests)
    };
    assert_eq!((&*message.room, &**from), ("prices:btc", "feed"));
    assert_eq!(&*message.data, br#"{"p" : 1}"#);
    assert_eq!(conn.on_published(0, Some(42), h.now), Some((true, 200)));
    let response = output_text(&mut conn);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("Connection: keep-alive\r\n"));
    assert!(response.ends_with(r#"{"success":true,"results":[{"room":"prices:btc","seq":42}]}"#));
    assert!(!conn.is_finishing() && !conn.is_publishing());
}

#[test]
fn a_batch_is_answered_in_body_order_whatever_order_the_seqs_come_in() {
    let mut h = Harness::new(&[]);
    let mut conn = http_conn(&h);
    let body =
        r#"{"messages":[{"room":"prices:a","event":"p:t"},{"room":"prices:b","event":"p:t"}]}"#;
    h.feed(&mut conn, post("Connection: close\r\n", body).as_bytes());
    assert_eq!(h.requests.len(), 2);
    assert_eq!(conn.on_published(1, Some(9), h.now), None);
    assert!(take_output(&mut conn).is_empty());
    assert_eq!(
        conn.on_published(0, Some(3), h.now),
        Some((false, 200)),
        "Connection: close"
    );
    let response = output_text(&mut conn);
    assert!(response.contains("Connection: close\r\n"), "{response}");
    assert!(response.ends_with(r#"[{"room":"prices:a","seq":3},{"room":"prices:b","seq":9}]}"#));
    assert!(conn.is_finishing());
}

#[test]
fn a_body_is_waited_for_and_a_pipelined_request_waits_for_the_response() {
    let mut h = Harness::new(&[]);
    let mut conn = http_conn(&h);
    let first = post("", TICK);
    let head_len = first.len() - TICK.len();
    assert_eq!(
        h.feed(&mut conn, &first.as_bytes()[..first.len() - 1]),
        head_len
    );
    let body_and_next = format!("{}{}", &first[head_len..], post("", TICK));
    assert_eq!(h.feed(&mut conn, body_and_next.as_bytes()), TICK.len());
    assert_eq!(h.requests.len(), 1);
    assert_eq!(conn.on_published(0, Some(1), h.now), Some((true, 200)));
    // The shard feeds what it held back again.
    let rest = &body_and_next[TICK.len()..];
    assert_eq!(h.feed(&mut conn, rest.as_bytes()), rest.len());
    assert_eq!(h.requests.len(), 2);
    assert_eq!(conn.on_published(0, Some(2), h.now), Some((true, 200)));
    let responses = output_text(&mut conn);
    let seq1 = responses.find(r#""seq":1"#).unwrap();
    let seq2 = responses.find(r#""seq":2"#).unwrap();
    assert!(seq1 < seq2, "{responses}");
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let mut h = Harness::new(&[]);
    let mut conn = http_conn(&h);
    let request = post("Expect: 100-continue\r\n", TICK);
    let head = &request[..request.len() - TICK.len()];
    h.feed(&mut conn, head.as_bytes());
    assert_eq!(output_text(&mut conn), "HTTP/1.1 100 Continue\r\n\r\n");
    h.feed(&mut conn, TICK.as_bytes());
    assert!(conn.is_publishing());
}

#[test]
fn a_chunked_body_is_decoded() {
    let mut h = Harness::new(&[]);
    let mut conn = http_conn(&h);
    let token = publisher_token(&["prices:*"], f64::MAX);
    let (a, b) = TICK.split_at(10);
    let request = format!(
        "POST /publish?token={token} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n",
        a.len(),
        b.len()
    );
    assert_eq!(h.feed(&mut conn, request.as_bytes()), request.len());
    let [Request::HttpPublish { message, .. }] = &h.requests[..] else {
        panic!("{:?}", h.requests)
    };
    assert_eq!(&*message.data, br#"{"p" : 1}"#);
}

/// Feeds `request` to a fresh connection; the response text.
fn answer(h: &mut Harness, request: &str) -> (String, Connection) {
    let mut conn = http_conn(h);
    h.feed(&mut conn, request.as_bytes());
    assert!(h.requests.is_empty(), "{:?}", h.requests);
    (output_text(&mut conn), conn)
}

fn assert_failure(response: &str, status: &str, code: &str) {
    assert!(
        response.starts_with(&format!("HTTP/1.1 {status}")),
        "{response}"
    );
    assert!(
        response.contains(&format!(r#"{{"success":false,"error":{{"code":"{code}","#)),
        "{response}"
    );
}

#[test]
fn body_errors_keep_a_keep_alive_connection_open() {
    let mut h = Harness::new(&[]);
    for (body, status, code) in [
        ("nope", "400", "INVALID_MESSAGE"),
        (r#"{"messages":[]}"#, "400", "VALIDATION_ERROR"),
        (
            r#"{"room":"prices:x","event":"room:join"}"#,
            "400",
            "VALIDATION_ERROR",
        ),
        (r#"{"room":"lobby","event":"a:b"}"#, "403", "FORBIDDEN"),
    ] {
        let (response, conn) = answer(&mut h, &post("", body));
        assert_failure(&response, status, code);
        assert!(
            response.contains("Connection: keep-alive\r\n"),
            "{response}"
        );
        assert!(!conn.is_finishing(), "{body}");
        let (response, conn) = answer(&mut h, &post("Connection: close\r\n", body));
        assert!(response.contains("Connection: close\r\n"), "{response}");
        assert!(conn.is_finishing(), "{body}");
    }
}

#[test]
fn head_and_framing_errors_close_the_connection() {
    let mut h = Harness::new(&["--max-message-size", "100"]);
    let expired = publisher_token(&["*"], 0.5);
    let big = "x".repeat(101);
    let cases = [
        (
            "GET /publish HTTP/1.1\r\n\r\n".to_owned(),
            "405",
            "METHOD_NOT_ALLOWED",
        ),
        (
            "POST /publish HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_owned(),
            "401",
            "UNAUTHENTICATED",
        ),
        (
            format!("POST /publish?token={expired} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}"),
            "401",
            "TOKEN_EXPIRED",
        ),
        (post("", &big), "413", "PAYLOAD_TOO_LARGE"),
        (
            post("Connection: keep-alive\r\n", "").replace("Content-Length: 0\r\n", ""),
            "411",
            "LENGTH_REQUIRED",
        ),
        (
            post("Transfer-Encoding: gzip\r\n", "").replace("Content-Length: 0\r\n", ""),
            "400",
            "BAD_REQUEST",
        ),
        (
            post("Transfer-Encoding: chunked\r\n", "").replace("Content-Length: 0\r\n", "")
                + "65\r\n",
            "413",
            "PAYLOAD_TOO_LARGE",
        ),
        (
            post("Transfer-Encoding: chunked\r\n", "").replace("Content-Length: 0\r\n", "")
                + "zz\r\n",
            "400",
            "BAD_REQUEST",
        ),
    ];
    for (request, status, code) in cases {
        let (response, conn) = answer(&mut h, &request);
        assert_failure(&response, status, code);
        assert!(response.contains("Connection: close\r\n"), "{response}");
        assert!(conn.is_finishing(), "{request}");
        assert!(!response.contains(&expired), "the token is never echoed");
    }
}

#[test]
fn publish_is_not_served_on_the_metrics_port() {
    let mut h = Harness::new(&[]);
    let mut conn = http_conn(&h).on_port(Port::Metrics);
    h.feed(&mut conn, post("", TICK).as_bytes());
    assert!(output_text(&mut conn).starts_with("HTTP/1.1 404"));
}

#[test]
fn a_body_must_arrive_by_the_request_deadline_and_idle_connections_get_a_fresh_one() {
    let mut h = Harness::new(&[]);
    let mut conn = http_conn(&h);
    let request = post("", TICK);
    h.feed(&mut conn, &request.as_bytes()[..request.len() - 1]);
    let late = h.now + REQUEST_TIMEOUT;
    assert_eq!(
        conn.on_tick(late, 0, &h.config),
        Tick::Abort(AbortReason::RequestTimeout)
    );

    let mut conn = http_conn(&h);
    h.feed(&mut conn, request.as_bytes());
    let answered_at = h.now + Duration::from_secs(9);
    conn.on_published(0, Some(1), answered_at);
    assert_eq!(conn.on_tick(late, 0, &h.config), Tick::Keep);
    assert_eq!(
        conn.on_tick(answered_at + REQUEST_TIMEOUT, 0, &h.config),
        Tick::Abort(AbortReason::RequestTimeout)
    );
}

#[test]
fn too_much_input_pipelined_behind_a_publish_closes_after_its_response() {
    let mut h = Harness::new(&["--max-message-size", "1KiB", "--max-header-bytes", "1KiB"]);
    let mut conn = http_conn(&h);
    let request = post("", TICK);
    h.feed(&mut conn, request.as_bytes());
    let flood = vec![b'x'; 2 * 1024 + 1];
    assert_eq!(h.feed(&mut conn, &flood), flood.len(), "dropped");
    assert_eq!(conn.on_published(0, Some(1), h.now), Some((false, 200)));
    assert!(output_text(&mut conn).contains("Connection: close\r\n"));
    assert!(conn.is_finishing());
}

/// What every idle connection holds: the shard's slot embeds a
/// `Connection`, and an upgraded one has a boxed `SessionState` (a 208-byte
/// malloc chunk at 200 bytes). Checked on the platform the figures were
/// measured on, so that growing either is a decision rather than a side
/// effect.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn an_idle_connection_stays_small() {
    use std::mem::size_of;
    assert!(size_of::<State>() <= 24, "{}", size_of::<State>());
    assert!(
        size_of::<Connection>() <= 192,
        "{}",
        size_of::<Connection>()
    );
    assert!(
        size_of::<SessionState>() <= 200,
        "{}",
        size_of::<SessionState>()
    );
    assert!(size_of::<Claims>() <= 96, "{}", size_of::<Claims>());
    assert!(size_of::<Decoder>() <= 40, "{}", size_of::<Decoder>());
}

#[test]
fn the_demo_page_token_is_issued_at_the_connections_time() {
    let mut h = Harness::new(&["--demo"]);
    let (response, _) = answer(&mut h, "GET /demo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let start = response.find("const token = \"").expect("a token") + "const token = \"".len();
    let token = &response[start..start + response[start..].find('"').unwrap()];
    // The harness's `unix_ms` is 1 000 ms after the epoch, not the clock.
    let claims = auth::verify(token, &h.keys, 1.0, 0.0).expect("valid at that time");
    assert_eq!(claims.exp, 1.0 + 3600.0);
}

#[test]
fn the_operator_thread_answers_the_metrics_port_pages_with_the_shards_bytes() {
    let mut h = Harness::new(&["--metrics-bind", "127.0.0.1:0"]);
    for request in [
        "GET /healthz HTTP/1.1\r\n\r\n",
        "HEAD /healthz HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\n\r\n",
        "GET /stats HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
        "HEAD /stats HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "OPTIONS / HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "DELETE /stats HTTP/1.1\r\n\r\n",
        "GET /publish HTTP/1.1\r\n\r\n",
        "GET /roomcast.js HTTP/1.1\r\n\r\n",
    ] {
        let mut conn = http_conn(&h).on_port(Port::Metrics);
        h.feed(&mut conn, request.as_bytes());
        let from_shard = take_output(&mut conn);
        let (head, _) = crate::http::request::HeadReader::default()
            .parse(request.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        let pages = Pages {
            config: &h.config,
            observe: &AdmitAll,
            draining: false,
            unix_ms: 0,
        };
        let from_operator = operator_answer(&head, &pages).expect("a page");
        assert_eq!(from_operator, from_shard, "{request}");
    }
}
