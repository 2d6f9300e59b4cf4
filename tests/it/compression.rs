//! permessage-deflate (PROTOCOL.md section 11, RFC 7692) on the wire:
//! the 101's `Sec-WebSocket-Extensions`, compressed echoes both ways, room
//! events compressed for members that agreed and plain for the others, and
//! every close a compressed message can cause (1009 for a zip bomb, 1007
//! for bad deflate data or bad UTF-8 once inflated, 1002 for RSV1 where it
//! may not be). Compression is done here with flate2 directly, not with
//! the server's own code, so that a shared bug cannot hide.

use crate::common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use common::http::{HttpResponse, UpgradeRequest, read_head};
use common::raw::{Frame, MASK, encode_frame};
use common::rooms::Claims;
use common::{RawWs, Server, opcode, token};

/// RSV1 in `encode_frame`'s `rsv` argument (RSV1 is the high one of three).
pub(crate) const RSV1: u8 = 0b100;
const OFFER: &str = "permessage-deflate; client_max_window_bits";
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A raw deflate stream of `data`, sync-flushed, without its final
/// `00 00 ff ff` (RFC 7692 7.2.1).
pub(crate) fn deflate(data: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    compress
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .unwrap();
    assert_eq!(compress.total_in(), data.len() as u64, "one call suffices");
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// What a compressed frame's payload inflates to (RFC 7692 7.2.2).
pub(crate) fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut decompress = Decompress::new(false);
    let mut out = Vec::new();
    // decompress_vec fills only the spare capacity: grow until all is in.
    while decompress.total_in() < input.len() as u64 || out.len() == out.capacity() {
        out.reserve(out.capacity().max(4096));
        let at = decompress.total_in() as usize;
        decompress
            .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
            .unwrap();
    }
    out
}

/// A masked final frame with RSV1 holding `data` deflated.
pub(crate) fn compressed_frame(opcode: u8, data: &[u8]) -> Vec<u8> {
    encode_frame(true, RSV1, opcode, &deflate(data), Some(MASK))
}

/// Upgrades `path` with `offer` in `Sec-WebSocket-Extensions` (if any);
/// returns the connection and the 101 response.
fn connect_offering(addr: SocketAddr, path: &str, offer: Option<&str>) -> (RawWs, HttpResponse) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = UpgradeRequest::new(path).bearer(&token("u1"));
    if let Some(offer) = offer {
        request = request.header("Sec-WebSocket-Extensions", offer);
    }
    stream.write_all(&request.to_bytes()).unwrap();
    let (head, rest) = read_head(&mut stream);
    assert_eq!(head.status, 101, "{head:?}");
    (RawWs::from_parts(stream, rest), head)
}

fn echo_server() -> Server {
    Server::start(&["--echo", "--compression", "on"])
}

/// The next data frame, pings skipped.
fn next_data_frame(ws: &mut RawWs) -> Frame {
    ws.read_non_ping()
}

#[test]
fn the_101_carries_the_extension_only_when_on_and_offered() {
    let on = echo_server();
    let (_, head) = connect_offering(on.addr(), "/echo", Some(OFFER));
    assert_eq!(head.header("sec-websocket-extensions"), Some(AGREED));
    let (_, head) = connect_offering(on.addr(), "/echo", None);
    assert_eq!(head.header("sec-websocket-extensions"), None);
    let (_, head) = connect_offering(on.addr(), "/echo", Some("x-webkit-deflate-frame"));
    assert_eq!(head.header("sec-websocket-extensions"), None);
    let (_, head) = connect_offering(
        on.addr(),
        "/echo",
        Some("permessage-deflate; server_max_window_bits=9"),
    );
    assert_eq!(
        head.header("sec-websocket-extensions"),
        Some(format!("{AGREED}; server_max_window_bits=9").as_str())
    );

    let off = Server::start(&["--echo"]);
    let (_, head) = connect_offering(off.addr(), "/echo", Some(OFFER));
    assert_eq!(head.header("sec-websocket-extensions"), None, "off");
}

#[test]
fn compressed_messages_are_echoed_compressed_and_short_ones_plain() {
    let server = echo_server();
    let (mut ws, _) = connect_offering(server.addr(), "/echo", Some(OFFER));
    let text = "price update ".repeat(100);
    ws.send_raw(&compressed_frame(opcode::TEXT, text.as_bytes()));
    let reply = next_data_frame(&mut ws);
    assert_eq!(
        (reply.opcode, reply.rsv, reply.fin),
        (opcode::TEXT, RSV1, true)
    );
    assert!(
        reply.payload.len() < text.len() / 4,
        "{}",
        reply.payload.len()
    );
    assert_eq!(inflate(&reply.payload), text.as_bytes());

    // Binary, and a plain message to a compressing connection.
    let binary: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
    ws.send_raw(&encode_frame(true, 0, opcode::BINARY, &binary, Some(MASK)));
    let reply = next_data_frame(&mut ws);
    assert_eq!((reply.opcode, reply.rsv), (opcode::BINARY, RSV1));
    assert_eq!(inflate(&reply.payload), binary);

    // Below the threshold a reply goes plain, whatever the request was.
    ws.send_raw(&compressed_frame(opcode::TEXT, b"hi"));
    let reply = next_data_frame(&mut ws);
    assert_eq!((reply.rsv, reply.text()), (0, "hi"));
}

#[test]
fn a_fragmented_compressed_message_is_inflated_whole() {
    let server = echo_server();
    let (mut ws, _) = connect_offering(server.addr(), "/echo", Some(OFFER));
    let text = "fragmented and compressed ".repeat(50);
    let deflated = deflate(text.as_bytes());
    let (a, b) = deflated.split_at(deflated.len() / 2);
    ws.send_raw(&encode_frame(false, RSV1, opcode::TEXT, a, Some(MASK)));
    ws.send_raw(&encode_frame(true, 0, opcode::PING, b"p", Some(MASK)));
    ws.send_raw(&encode_frame(true, 0, opcode::CONTINUATION, b, Some(MASK)));
    let pong = ws.read_frame();
    assert_eq!(pong.opcode, opcode::PONG);
    let reply = next_data_frame(&mut ws);
    assert_eq!(inflate(&reply.payload), text.as_bytes());
}

#[test]
fn a_limited_server_window_gets_only_plain_frames() {
    let server = echo_server();
    let offer = "permessage-deflate; server_max_window_bits=9";
    let (mut ws, _) = connect_offering(server.addr(), "/echo", Some(offer));
    let text = "compressible ".repeat(200);
    ws.send_raw(&compressed_frame(opcode::TEXT, text.as_bytes()));
    let reply = next_data_frame(&mut ws);
    assert_eq!(reply.rsv, 0, "the server compresses with 15 bits only");
    assert_eq!(reply.text(), text);
}

#[test]
fn a_zip_bomb_is_closed_1009_promptly_and_others_are_served() {
    let server = echo_server();
    let (mut bystander, _) = connect_offering(server.addr(), "/echo", Some(OFFER));
    let (mut bomber, _) = connect_offering(server.addr(), "/echo", Some(OFFER));
    // 64 MiB of zeros deflate to about 64 KB; the limit is 64 KiB inflated.
    let bomb = deflate(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let started = Instant::now();
    bomber.send_raw(&encode_frame(true, RSV1, opcode::BINARY, &bomb, Some(MASK)));
    assert_eq!(bomber.expect_close(), 1009);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    bystander.send_raw(&compressed_frame(opcode::TEXT, b"still here"));
    assert_eq!(next_data_frame(&mut bystander).text(), "still here");
    let (mut newcomer, _) = connect_offering(server.addr(), "/echo", Some(OFFER));
    newcomer.send_raw(&compressed_frame(opcode::TEXT, b"and me"));
    assert_eq!(next_data_frame(&mut newcomer).text(), "and me");
}

#[test]
fn a_message_inflating_to_exactly_the_limit_is_accepted() {
    let server = Server::start(&[
        "--echo",
        "--compression",
        "on",
        "--max-message-size",
        "4096",
    ]);
    let (mut ws, _) = connect_offering(server.addr(), "/echo", Some(OFFER));
    ws.send_raw(&compressed_frame(opcode::BINARY, &[b'a'; 4096]));
    assert_eq!(inflate(&next_data_frame(&mut ws).payload), [b'a'; 4096]);
    // Incompressible data at the limit still fits: deflate grows it a little.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            // xorshift64: bytes deflate cannot shrink.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let stored = deflate(&noise);
    assert!(stored.len() > noise.len(), "{}", stored.len());
    ws.send_raw(&encode_frame(
        true,
        RSV1,
        opcode::BINARY,
        &stored,
        Some(MASK),
    ));
    assert_eq!(next_data_frame(&mut ws).payload, noise);
    ws.send_raw(&compressed_frame(opcode::BINARY, &[b'a'; 4097]));
    assert_eq!(ws.expect_close(), 1009);
}

#[test]
fn corrupt_deflate_data_is_closed_1007() {
    let server = echo_server();
    let (mut ws, _) = connect_offering(server.addr(), "/echo", Some(OFFER));
    ws.send_raw(&encode_frame(
        true,
        RSV1,
        opcode::TEXT,
        &[0xff; 16],
        Some(MASK),
    ));
    assert_eq!(ws.expect_close(), 1007);
}

#[test]
fn invalid_utf8_once_inflated_is_closed_1007() {
    let server = echo_server();
    let (mut ws, _) = connect_offering(server.addr(), "/echo", Some(OFFER));
    ws.send_raw(&compressed_frame(opcode::TEXT, b"ok \xff\xfe"));
    assert_eq!(ws.expect_close(), 1007);
    // The same bytes as binary are fine.
    let (mut ws, _) = connect_offering(server.addr(), "/echo", Some(OFFER));
    ws.send_raw(&compressed_frame(opcode::BINARY, b"ok \xff\xfe"));
    assert_eq!(next_data_frame(&mut ws).payload, b"ok \xff\xfe");
}

#[test]
fn rsv1_without_the_extension_or_out_of_place_is_closed_1002() {
    let on = echo_server();
    let off = Server::start(&["--echo"]);
    for (server, offer) in [(&on, None), (&off, Some(OFFER))] {
        let (mut ws, _) = connect_offering(server.addr(), "/echo", offer);
        ws.send_raw(&compressed_frame(opcode::TEXT, b"hello"));
        assert_eq!(ws.expect_close(), 1002, "offer {offer:?}");
    }
    let (mut ws, _) = connect_offering(on.addr(), "/echo", Some(OFFER));
    ws.send_raw(&encode_frame(true, RSV1, opcode::PING, b"", Some(MASK)));
    assert_eq!(ws.expect_close(), 1002, "RSV1 on a ping");
    let (mut ws, _) = connect_offering(on.addr(), "/echo", Some(OFFER));
    let deflated = deflate(b"two parts");
    ws.send_raw(&encode_frame(
        false,
        RSV1,
        opcode::TEXT,
        &deflated[..2],
        Some(MASK),
    ));
    ws.send_raw(&encode_frame(
        true,
        RSV1,
        opcode::CONTINUATION,
        &deflated[2..],
        Some(MASK),
    ));
    assert_eq!(ws.expect_close(), 1002, "RSV1 on a continuation");
    let (mut ws, _) = connect_offering(on.addr(), "/echo", Some(OFFER));
    ws.send_raw(&encode_frame(true, 0b010, opcode::TEXT, b"x", Some(MASK)));
    assert_eq!(ws.expect_close(), 1002, "RSV2 is never agreed");
}

/// Upgrades `/ws` as `sub` and joins `room`, offering compression or not.
fn member(addr: SocketAddr, sub: &str, room: &str, offer: Option<&str>) -> RawWs {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = UpgradeRequest::new("/ws").bearer(&Claims::new(sub).token());
    if let Some(offer) = offer {
        request = request.header("Sec-WebSocket-Extensions", offer);
    }
    stream.write_all(&request.to_bytes()).unwrap();
    let (head, rest) = read_head(&mut stream);
    assert_eq!(head.status, 101);
    let mut ws = RawWs::from_parts(stream, rest);
    let established = next_event(&mut ws).1;
    assert!(
        established.contains("connection:established"),
        "{established}"
    );
    let join = format!(r#"{{"event":"room:join","data":{{"room":"{room}"}},"id":"j"}}"#);
    ws.send_raw(&encode_frame(
        true,
        0,
        opcode::TEXT,
        join.as_bytes(),
        Some(MASK),
    ));
    let ack = next_event(&mut ws).1;
    assert!(ack.contains(r#""success":true"#), "{ack}");
    ws
}

#[test]
fn room_events_reach_compressing_and_plain_members_alike() {
    let server = Server::start(&["--compression", "on", "--shards", "2"]);
    let addr = server.addr();
    let mut compressing: Vec<RawWs> = (0..4)
        .map(|i| member(addr, &format!("z{i}"), "prices", Some(OFFER)))
        .collect();
    let mut plain: Vec<RawWs> = (0..4)
        .map(|i| member(addr, &format!("p{i}"), "prices", None))
        .collect();
    let mut publisher = member(addr, "pub", "prices", Some(OFFER));
    let data = format!(r#"{{"bids":[{}]}}"#, vec!["[67001.5,0.25]"; 40].join(","));
    let publish = format!(r#"{{"event":"price:tick","room":"prices","data":{data},"id":1}}"#);
    // Published compressed, as a browser would.
    publisher.send_raw(&compressed_frame(opcode::TEXT, publish.as_bytes()));
    let ack = next_event(&mut publisher).1;
    assert!(ack.starts_with(r#"{"event":"ack""#), "{ack}");
    assert!(ack.contains(r#""success":true"#), "{ack}");

    let mut texts = Vec::new();
    for ws in &mut compressing {
        let (rsv, text) = next_event(ws);
        assert_eq!(rsv, RSV1, "a compressing member gets RSV1");
        texts.push(text);
    }
    for ws in &mut plain {
        let (rsv, text) = next_event(ws);
        assert_eq!(rsv, 0, "a plain member gets plain frames");
        texts.push(text);
    }
    assert!(texts[0].contains(r#""event":"price:tick""#), "{}", texts[0]);
    assert!(texts[0].contains(&data), "{}", texts[0]);
    assert!(texts.iter().all(|t| t == &texts[0]), "{texts:?}");
}

/// The next message that is not presence: its RSV bits and its text
/// (inflated when compressed).
fn next_event(ws: &mut RawWs) -> (u8, String) {
    loop {
        let frame = next_data_frame(ws);
        let rsv = frame.rsv;
        let bytes = if rsv == RSV1 {
            inflate(&frame.payload)
        } else {
            frame.payload
        };
        let text = String::from_utf8(bytes).unwrap();
        if !text.starts_with(r#"{"event":"presence:"#) {
            return (rsv, text);
        }
    }
}
