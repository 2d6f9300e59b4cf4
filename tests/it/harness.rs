//! Checks of the test harness itself (frame codec, accept key, tokens), so a
//! harness bug cannot pass for a server bug.

use crate::common;

use common::raw::{MASK, accept_for, encode_frame, parse_frame};
use common::token::{b64, mint};
use ring::hmac;

#[test]
fn accept_key_matches_the_rfc_6455_example() {
    assert_eq!(
        accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn frames_round_trip_at_every_length_boundary() {
    for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        for mask in [None, Some(MASK)] {
            let bytes = encode_frame(false, 5, 0x2, &payload, mask);
            let (frame, used) = parse_frame(&bytes).expect("complete frame");
            assert_eq!(used, bytes.len());
            assert_eq!((frame.fin, frame.rsv, frame.opcode), (false, 5, 0x2));
            assert_eq!(frame.masked, mask.is_some());
            assert_eq!(frame.payload, payload, "len {len}");
            assert!(parse_frame(&bytes[..bytes.len() - 1]).is_none());
        }
    }
}

#[test]
fn minted_token_is_a_valid_hs256_jwt() {
    let jwt = mint(r#"{"sub":"u1","exp":1}"#);
    let (input, sig) = jwt.rsplit_once('.').unwrap();
    assert!(input.starts_with(&b64(r#"{"alg":"HS256","typ":"JWT"}"#)));
    let key = hmac::Key::new(hmac::HMAC_SHA256, common::SECRET.as_bytes());
    assert_eq!(sig, b64(hmac::sign(&key, input.as_bytes()).as_ref()));
}
