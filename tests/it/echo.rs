//! `/echo` (with `--echo`): verbatim echo of text and binary, sizes up to the
//! message limit, fragmentation and control frames.

use crate::common;

use common::raw::{MASK, close_payload, encode_frame};
use common::{RawWs, Server, UpgradeRequest, expect_close, opcode, recv, token, ws_connect};
use tungstenite::Message;

const MAX: usize = 64 * 1024;
/// Lengths around every frame-header boundary, up to exactly the default max.
const SIZES: [usize; 9] = [0, 1, 125, 126, 127, 65_535, MAX - 1, MAX, 4096];

fn echo_server() -> Server {
    Server::start(&["--echo"])
}

fn binary_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// ASCII text of `len` bytes whose content depends on the position.
fn text_of(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

#[test]
fn text_of_each_size_up_to_the_max_is_echoed_verbatim() {
    let server = echo_server();
    let mut ws = ws_connect(server.addr(), "/echo", &token("u1"));
    for len in SIZES {
        let text = text_of(len);
        ws.send(Message::text(text.clone())).unwrap();
        match recv(&mut ws) {
            Message::Text(t) => assert!(t.as_str() == text, "text of {len} bytes differs"),
            other => panic!("expected text for {len} bytes, got {other:?}"),
        }
    }
}

#[test]
fn binary_of_each_size_up_to_the_max_is_echoed_verbatim() {
    let server = echo_server();
    let mut ws = ws_connect(server.addr(), "/echo", &token("u1"));
    for len in SIZES {
        let data = binary_of(len);
        ws.send(Message::binary(data.clone())).unwrap();
        match recv(&mut ws) {
            Message::Binary(b) => assert!(b[..] == data[..], "binary of {len} bytes differs"),
            other => panic!("expected binary for {len} bytes, got {other:?}"),
        }
    }
}

#[test]
fn multibyte_utf8_text_is_echoed_verbatim() {
    let server = echo_server();
    let mut ws = ws_connect(server.addr(), "/echo", &token("u1"));
    let text = "κόσμε – 日本語 – 🎉".repeat(100);
    ws.send(Message::text(text.clone())).unwrap();
    assert_eq!(recv(&mut ws), Message::text(text));
}

#[test]
fn pipelined_messages_are_echoed_in_order() {
    let server = echo_server();
    let mut ws = ws_connect(server.addr(), "/echo", &token("u1"));
    for i in 0..200 {
        ws.write(Message::text(format!("message {i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..200 {
        assert_eq!(recv(&mut ws), Message::text(format!("message {i}")));
    }
}

#[test]
fn text_one_byte_over_the_max_is_closed_1009() {
    let server = echo_server();
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_frame(true, opcode::TEXT, text_of(MAX + 1).as_bytes());
    assert_eq!(ws.expect_close(), 1009);
}

#[test]
fn binary_one_byte_over_the_max_is_closed_1009() {
    let server = echo_server();
    let mut ws = ws_connect(server.addr(), "/echo", &token("u1"));
    ws.send(Message::binary(binary_of(MAX + 1))).unwrap();
    assert_eq!(expect_close(&mut ws), 1009);
}

#[test]
fn max_message_size_flag_moves_the_limit() {
    let server = Server::start(&["--echo", "--max-message-size", "1KiB"]);
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_frame(true, opcode::BINARY, &binary_of(1024));
    assert_eq!(ws.read_message(), (opcode::BINARY, binary_of(1024)));
    ws.send_frame(true, opcode::BINARY, &binary_of(1025));
    assert_eq!(ws.expect_close(), 1009);
}

#[test]
fn max_message_size_is_read_from_the_environment() {
    let mut cmd = Server::single_command();
    cmd.env("ROOMCAST_ECHO", "true")
        .env("ROOMCAST_MAX_MESSAGE_SIZE", "100");
    let server = Server::spawn(cmd);
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_frame(true, opcode::TEXT, text_of(100).as_bytes());
    assert_eq!(ws.read_message(), (opcode::TEXT, text_of(100).into_bytes()));
    ws.send_frame(true, opcode::TEXT, text_of(101).as_bytes());
    assert_eq!(ws.expect_close(), 1009);
}

#[test]
fn fragmented_text_with_an_interleaved_ping_is_echoed_whole_after_the_pong() {
    let server = echo_server();
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_frame(false, opcode::TEXT, "Hello, ".as_bytes());
    ws.send_frame(true, opcode::PING, b"mid-message");
    ws.send_frame(false, opcode::CONTINUATION, "wör".as_bytes());
    ws.send_frame(true, opcode::CONTINUATION, "ld".as_bytes());

    let pong = ws.read_frame();
    assert_eq!(
        (pong.opcode, &pong.payload[..]),
        (opcode::PONG, &b"mid-message"[..])
    );
    assert_eq!(
        ws.read_message(),
        (opcode::TEXT, "Hello, wörld".as_bytes().to_vec())
    );
}

#[test]
fn fragmented_binary_of_exactly_the_max_is_echoed() {
    let server = echo_server();
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    let data = binary_of(MAX);
    let mut chunks = data.chunks(10_000).peekable();
    let mut op = opcode::BINARY;
    while let Some(chunk) = chunks.next() {
        ws.send_frame(chunks.peek().is_none(), op, chunk);
        op = opcode::CONTINUATION;
    }
    assert_eq!(ws.read_message(), (opcode::BINARY, data));
}

#[test]
fn fragments_adding_up_to_one_byte_over_the_max_are_closed_1009() {
    let server = echo_server();
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_frame(false, opcode::BINARY, &binary_of(MAX));
    ws.send_frame(true, opcode::CONTINUATION, &[0]);
    assert_eq!(ws.expect_close(), 1009);
}

#[test]
fn empty_fragments_make_an_empty_message() {
    let server = echo_server();
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_frame(false, opcode::TEXT, b"");
    ws.send_frame(false, opcode::CONTINUATION, b"");
    ws.send_frame(true, opcode::CONTINUATION, b"");
    assert_eq!(ws.read_message(), (opcode::TEXT, Vec::new()));
}

#[test]
fn ping_is_answered_with_a_pong_carrying_the_same_payload() {
    let server = echo_server();
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    for payload in [&b""[..], b"hello", &[0xAB; 125]] {
        ws.send_frame(true, opcode::PING, payload);
        let pong = ws.read_frame();
        assert_eq!(pong.opcode, opcode::PONG, "{pong:?}");
        assert!(pong.fin);
        assert_eq!(pong.payload, payload);
    }
}

#[test]
fn unsolicited_pong_is_ignored() {
    let server = echo_server();
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_frame(true, opcode::PONG, b"unasked");
    ws.send_frame(true, opcode::TEXT, b"after the pong");
    let frame = ws.read_frame();
    assert_eq!(
        (frame.opcode, frame.text()),
        (opcode::TEXT, "after the pong")
    );
}

#[test]
fn clean_close_after_echo_gets_the_close_echoed() {
    let server = echo_server();
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_frame(true, opcode::TEXT, b"bye");
    assert_eq!(ws.read_message(), (opcode::TEXT, b"bye".to_vec()));
    ws.send_frame(true, opcode::CLOSE, &close_payload(1000, "done"));
    assert_eq!(ws.expect_close(), 1000);
    ws.expect_eof();
}

#[test]
fn echo_requires_a_token() {
    let server = echo_server();
    UpgradeRequest::new("/echo")
        .send(server.addr())
        .assert_error(401, "UNAUTHENTICATED");
}

#[test]
fn echo_accepts_a_token_in_the_query() {
    let server = echo_server();
    let req = UpgradeRequest::new(&format!("/echo?token={}", token("u1")));
    assert_eq!(req.send(server.addr()).status, 101);
}

#[test]
fn frame_sent_in_the_same_packet_as_the_upgrade_is_echoed() {
    let server = echo_server();
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    let mut bytes = UpgradeRequest::new("/echo").bearer(&token("u1")).to_bytes();
    bytes.extend(encode_frame(
        true,
        0,
        opcode::TEXT,
        b"early bird",
        Some(MASK),
    ));
    std::io::Write::write_all(&mut stream, &bytes).unwrap();
    let (head, rest) = common::http::read_head(&mut stream);
    assert_eq!(head.status, 101, "{head:?}");
    let mut ws = RawWs::from_parts(stream, rest);
    assert_eq!(ws.read_message(), (opcode::TEXT, b"early bird".to_vec()));
}

#[test]
fn upgrade_and_frame_sent_byte_by_byte_are_handled() {
    let server = echo_server();
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let request = UpgradeRequest::new("/echo").bearer(&token("u1")).to_bytes();
    let frame = encode_frame(true, 0, opcode::BINARY, &binary_of(300), Some(MASK));
    for byte in request.iter().chain(&frame) {
        std::io::Write::write_all(&mut stream, &[*byte]).unwrap();
    }
    let (head, rest) = common::http::read_head(&mut stream);
    assert_eq!(head.status, 101, "{head:?}");
    let mut ws = RawWs::from_parts(stream, rest);
    assert_eq!(ws.read_message(), (opcode::BINARY, binary_of(300)));
}

#[test]
fn oversized_length_is_closed_1009_before_the_payload_arrives() {
    let server = echo_server();
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    // Announce 1 MiB, send 10 bytes, and never the rest.
    let mut frame = encode_frame(true, 0, opcode::BINARY, &vec![0; 1 << 20], Some(MASK));
    frame.truncate(14 + 10);
    ws.send_raw(&frame);
    assert_eq!(ws.expect_close(), 1009);
}
