//! One load-generator connection, sans-IO: the opening handshake it sends
//! (offering permessage-deflate with `--compression`, `roomcast.msgpack`
//! with `--protocol msgpack`), the server frames it
//! reads back (compressed ones marked for the caller to inflate), and the
//! replies the protocol requires of a client (pong, close, Socket.IO's `40`
//! and `3`).

use crate::client::bench::args::Target;
use crate::client::bench::failure::Failure;
use roomcast::codes::SUBPROTOCOL_MSGPACK;
use roomcast::proto::msgpack;
use roomcast::ws::frame::{OpCode, encode_masked_frame, parse_header};

/// Masks the bench's own control frames; the server unmasks whatever key it gets.
const CONTROL_MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x2e];

/// What a browser offers: permessage-deflate, any client window.
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The request line's target and the request itself; `deflate` offers
/// permessage-deflate, `msgpack` the `roomcast.msgpack` subprotocol.
pub fn upgrade_request(path: &str, host: &str, deflate: bool, msgpack: bool) -> Vec<u8> {
    let mut offer = if deflate {
        format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
    } else {
        String::new()
    };
    if msgpack {
        offer.push_str(&format!(
            "Sec-WebSocket-Protocol: {SUBPROTOCOL_MSGPACK}\r\n"
        ));
    }
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
    .into_bytes()
}

/// A response head: where it ends, its status, whether it is `101`, and
/// whether the server agreed to permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    /// The status code; 0 when the status line is not HTTP's.
    pub status: u16,
    pub upgraded: bool,
    pub deflate: bool,
    /// The server chose `roomcast.msgpack`.
    pub msgpack: bool,
}

/// The response head at the start of `input`, once complete.
pub fn response_head(input: &[u8]) -> Option<Head> {
    let len = input.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&input[..len]).to_ascii_lowercase();
    Some(Head {
        len,
        status: status_of(input),
        upgraded: input.starts_with(b"HTTP/1.1 101"),
        deflate: head.contains("\r\nsec-websocket-extensions: permessage-deflate"),
        msgpack: head.contains(&format!(
            "\r\nsec-websocket-protocol: {SUBPROTOCOL_MSGPACK}\r\n"
        )),
    })
}

/// The status code of `HTTP/1.1 NNN ...`; 0 when there is none.
fn status_of(head: &[u8]) -> u16 {
    head.get(9..12)
        .filter(|_| head.starts_with(b"HTTP/1."))
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

/// A message from the server, as the scenarios see it.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A data message (for Socket.IO: the payload of an event packet), as
    /// its range in the input, so the caller can read it without a copy.
    Data(std::ops::Range<usize>),
    /// A compressed data message (RSV1): its deflate bytes' range, to inflate.
    Compressed(std::ops::Range<usize>),
    /// The connection is ready for traffic (Socket.IO after `40`).
    Ready,
    /// The server closed, with this close code.
    Closed(Failure),
    /// Nothing the scenario needs to see.
    Other,
}

/// Parses the next complete server frame in `input`; returns the bytes it
/// used and what it was, answering control traffic into `out`.
pub fn next_message(input: &[u8], target: Target, out: &mut Vec<u8>) -> Option<(usize, Incoming)> {
    let header = parse_header(input).ok()??;
    let len = usize::try_from(header.payload_len).ok()?;
    let end = header.header_len.checked_add(len)?;
    if input.len() < end {
        return None;
    }
    let payload = &input[header.header_len..end];
    let incoming = match header.opcode {
        OpCode::Ping => {
            encode_masked_frame(true, OpCode::Pong, payload, CONTROL_MASK, out);
            Incoming::Other
        }
        OpCode::Close => {
            encode_masked_frame(
                true,
                OpCode::Close,
                &payload[..payload.len().min(2)],
                CONTROL_MASK,
                out,
            );
            Incoming::Closed(Failure::of_close(payload))
        }
        OpCode::Text if target == Target::Socketio => {
            socketio_packet(payload, header.header_len, out)
        }
        OpCode::Text | OpCode::Binary if header.compressed => {
            Incoming::Compressed(header.header_len..end)
        }
        OpCode::Text | OpCode::Binary => Incoming::Data(header.header_len..end),
        _ => Incoming::Other,
    };
    Some((end, incoming))
}

/// Engine.IO v4 / Socket.IO packets: `0{..}` open, `40{..}` connected,
/// `2` ping, `42[..]` event.
/// `start` is where `payload` begins in the input.
fn socketio_packet(payload: &[u8], start: usize, out: &mut Vec<u8>) -> Incoming {
    match payload {
        [b'0', ..] => {
            encode_masked_frame(true, OpCode::Text, b"40", CONTROL_MASK, out);
            Incoming::Other
        }
        [b'4', b'0', ..] => Incoming::Ready,
        [b'2'] => {
            encode_masked_frame(true, OpCode::Text, b"3", CONTROL_MASK, out);
            Incoming::Other
        }
        [b'4', b'2', ..] => Incoming::Data(start + 2..start + payload.len()),
        _ => Incoming::Other,
    }
}

/// A client close frame.
pub fn close_frame(out: &mut Vec<u8>) {
    encode_masked_frame(
        true,
        OpCode::Close,
        &1000u16.to_be_bytes(),
        CONTROL_MASK,
        out,
    );
}

/// A client text frame (for the occasional control message: joins, leaves).
pub fn text_frame(text: &[u8], out: &mut Vec<u8>) {
    encode_masked_frame(true, OpCode::Text, text, CONTROL_MASK, out);
}

/// A client message written as JSON `text`: a text frame, or with
/// `msgpack` its MessagePack in a binary frame.
pub fn message_frame(text: &[u8], msgpack: bool, out: &mut Vec<u8>) {
    if !msgpack {
        return text_frame(text, out);
    }
    let packed = pack(text);
    encode_masked_frame(true, OpCode::Binary, &packed, CONTROL_MASK, out);
}

/// The MessagePack form of the bench's own JSON `text`.
pub fn pack(text: &[u8]) -> Vec<u8> {
    let mut packed = Vec::with_capacity(text.len());
    msgpack::from_json(text, &mut packed).expect("the bench writes JSON");
    packed
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::ws::frame::encode_frame;

    #[test]
    fn server_frames_and_pings_are_handled() {
        let mut input = Vec::new();
        encode_frame(OpCode::Ping, b"p", &mut input);
        encode_frame(OpCode::Text, b"hello", &mut input);
        let mut out = Vec::new();
        let (used, first) = next_message(&input, Target::Roomcast, &mut out).unwrap();
        assert_eq!(first, Incoming::Other);
        assert!(!out.is_empty(), "a pong was queued");
        let rest = &input[used..];
        let (_, second) = next_message(rest, Target::Roomcast, &mut out).unwrap();
        let Incoming::Data(range) = second else {
            panic!("{second:?}")
        };
        assert_eq!(&rest[range], b"hello");
        assert!(next_message(&input[..2], Target::Roomcast, &mut out).is_none());
    }

    #[test]
    fn socketio_handshake_packets() {
        let mut out = Vec::new();
        let mut frame = Vec::new();
        encode_frame(OpCode::Text, br#"0{"sid":"x"}"#, &mut frame);
        assert_eq!(
            next_message(&frame, Target::Socketio, &mut out).unwrap().1,
            Incoming::Other
        );
        assert!(!out.is_empty());
        frame.clear();
        encode_frame(OpCode::Text, br#"42["msg","T1"]"#, &mut frame);
        let Incoming::Data(range) = next_message(&frame, Target::Socketio, &mut out).unwrap().1
        else {
            panic!("not data")
        };
        assert_eq!(&frame[range], br#"["msg","T1"]"#);
    }

    #[test]
    fn response_heads() {
        assert_eq!(
            response_head(b"HTTP/1.1 101 Switching Protocols\r\n\r\nrest"),
            Some(Head {
                len: 36,
                status: 101,
                upgraded: true,
                deflate: false,
                msgpack: false,
            })
        );
        assert_eq!(
            response_head(b"HTTP/1.1 401 Unauthorized\r\n\r\n").map(|r| (r.upgraded, r.status)),
            Some((false, 401))
        );
        assert_eq!(response_head(b"SSH-2.0\r\n\r\n").map(|r| r.status), Some(0));
        assert_eq!(response_head(b"HTTP/1.1 101"), None);
        let agreed = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: \
            permessage-deflate; server_no_context_takeover\r\n\r\n";
        assert!(response_head(agreed).unwrap().deflate);
        let request = String::from_utf8(upgrade_request("/ws", "h", true, false)).unwrap();
        assert!(request.contains("\r\nSec-WebSocket-Extensions: permessage-deflate"));
        assert!(!request.contains("Sec-WebSocket-Protocol"));
        assert!(request.ends_with("\r\n\r\n"));
        let request = String::from_utf8(upgrade_request("/ws", "h", false, true)).unwrap();
        assert!(request.contains("\r\nSec-WebSocket-Protocol: roomcast.msgpack\r\n"));
        let chosen = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: \
            roomcast.msgpack\r\n\r\n";
        assert!(response_head(chosen).unwrap().msgpack);
        assert!(!response_head(agreed).unwrap().msgpack);
    }

    #[test]
    fn compressed_frames_are_marked_for_inflation() {
        let mut frame = Vec::new();
        roomcast::ws::frame::encode_compressed_frame(OpCode::Text, b"\xf2\x48", &mut frame);
        let mut out = Vec::new();
        let (_, incoming) = next_message(&frame, Target::Roomcast, &mut out).unwrap();
        assert_eq!(incoming, Incoming::Compressed(2..4));
    }
}
