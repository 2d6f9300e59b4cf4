//! `msgpack`: MessagePack messages of the `roomcast.msgpack` subprotocol
//! through `proto::msgpack::to_json`, and the JSON it writes back through
//! `from_json`.
//!
//! Oracles: never a panic; accepted input becomes one valid JSON text,
//! within `MAX_JSON_DEPTH` and at most `JSON_GROWTH` times the input plus
//! two bytes; that text converted to MessagePack and back is the same text;
//! every strict prefix of an accepted input is refused as truncated.

use roomcast::codes::limits::MAX_JSON_DEPTH;
use roomcast::proto::msgpack::{DecodeError, JSON_GROWTH, from_json, to_json};

use crate::engine::{Rng, Target};
use crate::json::{JsonGen, depth, parses};

pub const TARGET: Target = Target {
    name: "msgpack",
    check,
    generate,
    dictionary: &[
        b"\xc0",
        b"\xc1",
        b"\xc4\x01",
        b"\xc7\x01\x01",
        b"\xd4\x00",
        b"\xca\x7f\x80\x00\x00",
        b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",
        b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
        b"\xdb\xff\xff\xff\xff",
        b"\xdd\xff\xff\xff\xff",
        b"\xdf\xff\xff\xff\xff",
        b"\x91\x91\x91\x91\x91\x91\x91\x91",
        b"\x81\xa0",
        b"\x81\x01",
        b"\xa1\xff",
        b"\xa3\xed\xa0\x80",
        b"\xa5event",
        b"\xa4room",
        b"\xa4data",
    ],
    max_len: 16 * 1024,
};

fn check(input: &[u8]) {
    let mut out = Vec::new();
    if to_json(input, &mut out).is_err() {
        return;
    }
    assert!(
        out.len() <= JSON_GROWTH * input.len() + 2,
        "{} JSON bytes from {}",
        out.len(),
        input.len()
    );
    assert!(parses(&out), "not JSON: {}", String::from_utf8_lossy(&out));
    assert!(depth(&out) <= MAX_JSON_DEPTH);
    let mut packed = Vec::new();
    from_json(&out, &mut packed).expect("its own JSON converts back");
    let mut again = Vec::new();
    to_json(&packed, &mut again).expect("its own MessagePack reads back");
    assert_eq!(again, out, "JSON through MessagePack changed");
    let cut = Rng::from_input(input).below(input.len());
    assert_eq!(
        to_json(&input[..cut], &mut Vec::new()),
        Err(DecodeError::Truncated),
        "a prefix of {cut} bytes"
    );
}

/// A JSON value's MessagePack, sometimes with one value made binary or
/// an extension, or nested past the bound.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let text = JsonGen::new(rng).value(4);
    let mut packed = Vec::new();
    if from_json(text.as_bytes(), &mut packed).is_err() {
        return text.into_bytes();
    }
    match rng.below(8) {
        0 => [&[0xc4, 2, 1, 2][..], &packed].concat(),
        1 => [vec![0x91; MAX_JSON_DEPTH + rng.below(3) - 1], packed].concat(),
        2 => {
            let at = rng.below(packed.len());
            packed.insert(at, rng.choose(&[0xc1, 0xd4, 0xc7, 0xc5]));
            packed
        }
        _ => packed,
    }
}
