//! `ws_frames`: the WebSocket message decoder over a connection's input,
//! driven as the reactor drives it: append what a read brought, decode
//! until more input is needed, drop exactly `consumed` bytes, keep the rest.
//!
//! Oracles: the same messages and the same error whatever the split of the
//! input; no message over `max_message_size`, no control payload over 125
//! bytes, text always valid UTF-8; what is left unconsumed is never a
//! complete frame; the assembly buffer stays within the limit.

use roomcast::ws::decoder::{Decoder, Message, ProtocolError};
use roomcast::ws::frame::parse_header;

use crate::engine::{Rng, Target};

pub const TARGET: Target = Target {
    name: "ws_frames",
    check,
    generate,
    dictionary: &[
        b"\x81\x80\0\0\0\0",
        b"\x80\x80\0\0\0\0",
        b"\x01\x80\0\0\0\0",
        b"\x89\x80\0\0\0\0",
        b"\x88\x82\0\0\0\0\x03\xe8",
        b"\x82\xfe\x00\x7e",
        b"\x82\xff\x80\0\0\0\0\0\0\0",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xc0\xaf",
        b"\xe2\x82",
    ],
    max_len: 70 * 1024,
};

/// An owned copy of a message, to compare runs.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn own(message: Message<'_>, max: usize) -> Owned {
    let owned = match message {
        Message::Text(bytes) => {
            assert!(std::str::from_utf8(bytes).is_ok(), "text is not UTF-8");
            Owned::Text(bytes.to_vec())
        }
        Message::Binary(bytes) => Owned::Binary(bytes.to_vec()),
        Message::Ping(bytes) => Owned::Ping(bytes.to_vec()),
        Message::Pong(bytes) => Owned::Pong(bytes.to_vec()),
        Message::Close(close) => Owned::Close(close.map(|c| (c.code, c.reason.to_owned()))),
        // RSV1 is refused by a decoder that was not told the extension
        // was agreed, as this one was not.
        Message::Compressed { .. } => panic!("a compressed message without permessage-deflate"),
    };
    match &owned {
        Owned::Text(b) | Owned::Binary(b) => assert!(b.len() <= max, "message {} > {max}", b.len()),
        Owned::Ping(b) | Owned::Pong(b) => assert!(b.len() <= 125, "control payload {}", b.len()),
        Owned::Close(Some((_, reason))) => assert!(reason.len() <= 123),
        Owned::Close(None) => {}
    }
    owned
}

type Outcome = (Vec<Owned>, Option<ProtocolError>);

/// The reactor's loop over `input` arriving in the pieces `cuts` mark.
fn run(input: &[u8], max: usize, require_mask: bool, cuts: &[usize]) -> Outcome {
    let mut decoder = Decoder::new(max, require_mask);
    let mut buffer = Vec::new();
    let mut messages = Vec::new();
    let mut fed = 0;
    for &cut in cuts {
        buffer.extend_from_slice(&input[fed..cut]);
        fed = cut;
        loop {
            let (consumed, message) = match decoder.decode(&mut buffer) {
                Ok(decoded) => (decoded.consumed, decoded.message.map(|m| own(m, max))),
                Err(error) => return (messages, Some(error)),
            };
            assert!(consumed <= buffer.len(), "consumed past the input");
            buffer.drain(..consumed);
            assert!(decoder.buffered() <= max, "assembly over the limit");
            match message {
                Some(message) => messages.push(message),
                None => break,
            }
        }
    }
    assert_incomplete(&buffer);
    (messages, None)
}

/// What the decoder leaves when it asks for more input cannot be a whole frame.
fn assert_incomplete(rest: &[u8]) {
    if let Ok(Some(header)) = parse_header(rest) {
        let needed = header.header_len as u64 + header.payload_len;
        assert!(
            (rest.len() as u64) < needed,
            "a complete frame was left unconsumed"
        );
    }
}

fn check(input: &[u8]) {
    let mut rng = Rng::from_input(input);
    let small = rng.choose(&[0, 1, 125, 126, 1000, 65_535]);
    for (max, require_mask) in [(1 << 20, true), (small, false), (small, true)] {
        let whole = run(input, max, require_mask, &[input.len()]);
        let split = run(input, max, require_mask, &rng.cuts(input.len()));
        assert_eq!(
            split, whole,
            "split (max {max}, require_mask {require_mask})"
        );
    }
}

/// One frame as the generator writes it, before any breakage.
struct Frame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: Vec<u8>,
    mask: Option<[u8; 4]>,
    /// Use a longer length encoding than needed.
    long_length: bool,
}

/// A stream of messages: whole, fragmented with control frames between the
/// fragments, sometimes with one header field broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let masked = !rng.one_in(8);
    let mut frames = Vec::new();
    for _ in 0..1 + rng.below(5) {
        push_message(rng, &mut frames, masked);
    }
    if rng.one_in(3) {
        let at = rng.below(frames.len());
        break_one(rng, &mut frames[at]);
    }
    let mut out = Vec::new();
    for frame in &frames {
        encode(frame, &mut out);
    }
    if rng.one_in(4) {
        out.truncate(rng.below(out.len() + 1));
    }
    out
}

fn push_message(rng: &mut Rng, frames: &mut Vec<Frame>, masked: bool) {
    let frame = |fin, opcode, payload, rng: &mut Rng| Frame {
        fin,
        rsv: 0,
        opcode,
        payload,
        mask: masked.then(|| [rng.byte(), rng.byte(), rng.byte(), rng.byte()]),
        long_length: rng.one_in(6),
    };
    match rng.below(5) {
        0 => {
            let len = rng.below(126);
            let f = frame(true, 0x9, rng.bytes(len), rng);
            frames.push(f);
        }
        1 => {
            let f = frame(true, 0x8, close_payload(rng), rng);
            frames.push(f);
        }
        kind => {
            let opcode = if kind == 2 { 0x2 } else { 0x1 };
            let payload = if opcode == 0x1 {
                text(rng)
            } else {
                binary(rng)
            };
            let pieces = 1 + rng.below(4);
            let step = payload.len().div_ceil(pieces).max(1);
            let chunks: Vec<&[u8]> = payload.chunks(step).collect();
            let chunks = if chunks.is_empty() {
                vec![&[][..]]
            } else {
                chunks
            };
            for (i, chunk) in chunks.iter().enumerate() {
                let op = if i == 0 { opcode } else { 0x0 };
                let f = frame(i + 1 == chunks.len(), op, chunk.to_vec(), rng);
                frames.push(f);
                if rng.one_in(4) {
                    let ping = frame(true, 0xA, b"p".to_vec(), rng);
                    frames.push(ping);
                }
            }
        }
    }
}

fn text(rng: &mut Rng) -> Vec<u8> {
    let pieces = [
        "a",
        "hello ",
        "é",
        "€",
        "😀",
        "{\"event\":\"x\"}",
        "\u{7ff}",
        "\u{10ffff}",
    ];
    let mut out = String::new();
    for _ in 0..rng.below(40) {
        out.push_str(rng.choose(&pieces));
    }
    if rng.one_in(10) {
        out.push_str(&"x".repeat(rng.below(70_000)));
    }
    out.into_bytes()
}

fn binary(rng: &mut Rng) -> Vec<u8> {
    let len = rng.choose(&[0, 1, 125, 126, 127, 1000, 65_535, 65_536]);
    let len = len.min(rng.below(70_000) + 1);
    rng.bytes(len)
}

fn close_payload(rng: &mut Rng) -> Vec<u8> {
    let code: u16 = rng.choose(&[1000, 1001, 1005, 1006, 1015, 3000, 4999, 5000, 999, 1004]);
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(rng.choose(&[&b""[..], b"bye", "ünï".as_bytes(), b"\xff"]));
    match rng.below(6) {
        0 => Vec::new(),
        1 => vec![3],
        _ => payload,
    }
}

fn break_one(rng: &mut Rng, frame: &mut Frame) {
    match rng.below(6) {
        0 => frame.rsv = 1 + rng.below(7) as u8,
        1 => frame.opcode = rng.choose(&[3, 4, 7, 0xB, 0xF]),
        2 => frame.fin = !frame.fin,
        3 => frame.mask = None,
        4 => frame.payload.extend(std::iter::repeat_n(b'x', 126)),
        _ => frame.payload.extend_from_slice(b"\xc3\x28"),
    }
}

fn encode(frame: &Frame, out: &mut Vec<u8>) {
    out.push(u8::from(frame.fin) << 7 | frame.rsv << 4 | frame.opcode);
    let mask_bit = if frame.mask.is_some() { 0x80 } else { 0 };
    let len = frame.payload.len();
    if len < 126 && !frame.long_length {
        out.push(mask_bit | len as u8);
    } else if len < 65_536 && !(frame.long_length && len >= 126) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let start = out.len() + frame.mask.map_or(0, |_| 4);
    if let Some(mask) = frame.mask {
        out.extend_from_slice(&mask);
    }
    out.extend_from_slice(&frame.payload);
    if let Some(mask) = frame.mask {
        for (i, byte) in out[start..].iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
    }
}
