//! Every close code path of PROTOCOL.md sections 3 and 8 that a client's
//! frames can trigger, checked on the wire with hand-crafted frames.

use crate::common;

use common::raw::{MASK, close_payload, encode_frame};
use common::{RawWs, Server, opcode, token};

/// Opens `/echo`, sends `bytes`, and returns the server's close code after
/// checking that the server then closes the TCP connection.
fn close_code_after(bytes: &[u8]) -> Option<u16> {
    let server = Server::start(&["--echo"]);
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_raw(bytes);
    let (code, _) = ws.read_until_close();
    ws.expect_eof();
    code
}

fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, payload, Some(MASK))
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

#[test]
fn invalid_utf8_text_is_closed_1007() {
    assert_eq!(
        close_code_after(&masked(true, opcode::TEXT, b"ok \xff\xfe")),
        Some(1007)
    );
}

#[test]
fn overlong_utf8_encoding_is_closed_1007() {
    assert_eq!(
        close_code_after(&masked(true, opcode::TEXT, b"\xc0\xaf")),
        Some(1007)
    );
}

#[test]
fn utf16_surrogate_in_text_is_closed_1007() {
    assert_eq!(
        close_code_after(&masked(true, opcode::TEXT, b"\xed\xa0\x80")),
        Some(1007)
    );
}

#[test]
fn text_ending_inside_a_code_point_is_closed_1007() {
    assert_eq!(
        close_code_after(&masked(true, opcode::TEXT, b"abc\xce")),
        Some(1007)
    );
}

#[test]
fn invalid_utf8_across_fragments_is_closed_1007() {
    let bytes = concat(&[
        masked(false, opcode::TEXT, b"abc\xce"),
        masked(true, opcode::CONTINUATION, b"\xff"),
    ]);
    assert_eq!(close_code_after(&bytes), Some(1007));
}

#[test]
fn code_point_split_across_fragments_is_valid() {
    let server = Server::start(&["--echo"]);
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_frame(false, opcode::TEXT, b"\xce");
    ws.send_frame(true, opcode::CONTINUATION, b"\xba");
    assert_eq!(ws.read_message(), (opcode::TEXT, "κ".as_bytes().to_vec()));
}

#[test]
fn invalid_utf8_in_a_first_fragment_is_closed_1007_without_waiting_for_the_rest() {
    // No final fragment is ever sent: the server must fail fast.
    assert_eq!(
        close_code_after(&masked(false, opcode::TEXT, b"ab\xf8cd")),
        Some(1007)
    );
}

#[test]
fn unmasked_client_frame_is_closed_1002() {
    let frame = encode_frame(true, 0, opcode::TEXT, b"not masked", None);
    assert_eq!(close_code_after(&frame), Some(1002));
}

#[test]
fn each_rsv_bit_is_closed_1002() {
    for rsv in [1, 2, 4] {
        let frame = encode_frame(true, rsv, opcode::TEXT, b"rsv", Some(MASK));
        assert_eq!(close_code_after(&frame), Some(1002), "rsv bits {rsv:03b}");
    }
}

#[test]
fn each_reserved_opcode_is_closed_1002() {
    for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        assert_eq!(
            close_code_after(&masked(true, op, b"x")),
            Some(1002),
            "opcode {op:#x}"
        );
    }
}

#[test]
fn fragmented_ping_is_closed_1002() {
    let bytes = concat(&[
        masked(false, opcode::PING, b"a"),
        masked(true, opcode::CONTINUATION, b"b"),
    ]);
    assert_eq!(close_code_after(&bytes), Some(1002));
}

#[test]
fn ping_of_126_bytes_is_closed_1002() {
    assert_eq!(
        close_code_after(&masked(true, opcode::PING, &[b'p'; 126])),
        Some(1002)
    );
}

#[test]
fn close_frame_of_126_bytes_is_closed_1002() {
    let payload = close_payload(1000, &"r".repeat(124));
    assert_eq!(
        close_code_after(&masked(true, opcode::CLOSE, &payload)),
        Some(1002)
    );
}

#[test]
fn continuation_without_a_message_is_closed_1002() {
    assert_eq!(
        close_code_after(&masked(true, opcode::CONTINUATION, b"orphan")),
        Some(1002)
    );
}

#[test]
fn new_message_inside_a_fragmented_one_is_closed_1002() {
    let bytes = concat(&[
        masked(false, opcode::TEXT, b"first "),
        masked(true, opcode::TEXT, b"second"),
    ]);
    assert_eq!(close_code_after(&bytes), Some(1002));
}

#[test]
fn non_minimal_length_encoding_is_closed_1002() {
    // A 7-byte payload announced with the 16-bit length form (RFC 6455 5.2).
    let mut frame = vec![0x81, 0x80 | 126, 0, 7];
    frame.extend_from_slice(&MASK);
    frame.extend(b"minimal".iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    assert_eq!(close_code_after(&frame), Some(1002));
}

#[test]
fn close_reason_that_is_not_utf8_is_closed_1002() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bad \xff reason");
    assert_eq!(
        close_code_after(&masked(true, opcode::CLOSE, &payload)),
        Some(1002)
    );
}

#[test]
fn client_close_with_a_valid_code_is_echoed_with_that_code() {
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999,
    ] {
        let payload = close_payload(code, "bye");
        let got = close_code_after(&masked(true, opcode::CLOSE, &payload));
        assert_eq!(got, Some(code), "client close {code}");
    }
}

#[test]
fn client_close_with_an_invalid_code_is_closed_1002() {
    for code in [
        0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let payload = close_payload(code, "");
        let got = close_code_after(&masked(true, opcode::CLOSE, &payload));
        assert_eq!(got, Some(1002), "client close {code}");
    }
}

#[test]
fn close_with_a_one_byte_payload_is_closed_1002() {
    assert_eq!(
        close_code_after(&masked(true, opcode::CLOSE, &[0x03])),
        Some(1002)
    );
}

#[test]
fn empty_client_close_is_answered_with_a_close() {
    let code = close_code_after(&masked(true, opcode::CLOSE, b""));
    assert!(matches!(code, None | Some(1000)), "answered {code:?}");
}

#[test]
fn binary_message_on_ws_is_closed_1003() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr(), "/ws", &token("u1"));
    ws.send_frame(true, opcode::BINARY, b"\x00\x01");
    assert_eq!(ws.expect_close(), 1003);
    ws.expect_eof();
}

#[test]
fn invalid_utf8_on_ws_is_closed_1007() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr(), "/ws", &token("u1"));
    ws.send_frame(true, opcode::TEXT, b"{\"event\":\"\xff\"}");
    assert_eq!(ws.expect_close(), 1007);
}

#[test]
fn too_big_message_on_ws_is_closed_1009() {
    let server = Server::start(&["--max-message-size", "1KiB"]);
    let mut ws = RawWs::connect(server.addr(), "/ws", &token("u1"));
    let text = format!(r#"{{"event":"ping","data":"{}"}}"#, "x".repeat(1100));
    ws.send_frame(true, opcode::TEXT, text.as_bytes());
    assert_eq!(ws.expect_close(), 1009);
}

#[test]
fn frames_after_the_client_close_are_ignored() {
    let server = Server::start(&["--echo"]);
    let mut ws = RawWs::connect(server.addr(), "/echo", &token("u1"));
    ws.send_raw(&concat(&[
        masked(true, opcode::CLOSE, &close_payload(1000, "")),
        masked(true, opcode::TEXT, b"too late"),
    ]));
    let (code, before) = ws.read_until_close();
    assert_eq!(code, Some(1000));
    assert!(before.is_empty(), "frames before the close: {before:?}");
    ws.expect_eof();
}

#[test]
fn flooding_past_twice_the_rate_burst_is_closed_4003() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr(), "/ws", &token("u1"));
    ws.read_message();
    // Default burst 100 at 50/s: 1000 messages at once overflow both buckets.
    for _ in 0..1000 {
        if ws.try_send_frame(true, opcode::TEXT, b"ping").is_err() {
            break;
        }
    }
    let (code, before) = ws.read_until_close();
    assert_eq!(code, Some(4003));
    let limited = before.iter().filter(|f| f.text().contains("RATE_LIMITED"));
    assert!(
        limited.count() > 0,
        "no RATE_LIMITED error before the close"
    );
}

#[test]
fn connection_is_closed_4002_when_its_token_expires() {
    let server = Server::start(&[]);
    let exp = common::token::now() + 2;
    let short = common::mint(&format!(r#"{{"sub":"u1","exp":{exp}}}"#));
    let mut ws = RawWs::connect(server.addr(), "/ws", &short);
    ws.set_read_timeout(std::time::Duration::from_secs(10));
    assert_eq!(ws.expect_close(), 4002);
}
