//! `fossil`: the Fossil delta encoder and applier (`proto::fossil`). The
//! input is a source, a NUL byte, then a second string, read both as a
//! target to encode against the source and as a delta to apply to it.
//!
//! Oracles: never a panic; `apply(source, encode(source, target))` is the
//! target, byte for byte; an applied delta's output is exactly the length
//! it announces and never past the caller's bound, and a delta written for
//! that output applies to the same.

use roomcast::proto::fossil::{apply, encode, target_len};

use crate::engine::{Rng, Target};

pub const TARGET: Target = Target {
    name: "fossil",
    check,
    generate,
    dictionary: &[
        b"\x00",
        b"\n",
        b"@",
        b",",
        b":",
        b";",
        b"0",
        b"~",
        b"_",
        b"~~~~~~~~~~~~",
        b"10\n",
        b"{\"price\":",
        b"\xc3\xa9",
        b"\xf0\x9f\x98\x80",
    ],
    max_len: 16 * 1024,
};

/// The bound the check gives `apply`, below what some inputs announce.
const BOUND: usize = 4096;

fn check(input: &[u8]) {
    let (source, second) = match input.iter().position(|&b| b == 0) {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (&input[..0], input),
    };
    let delta = encode(source, second);
    assert_eq!(
        apply(source, &delta, second.len()).as_deref(),
        Ok(second),
        "round trip"
    );
    let identity = encode(second, second);
    assert_eq!(
        apply(second, &identity, second.len()).as_deref(),
        Ok(second)
    );
    if let Ok(out) = apply(source, second, BOUND) {
        assert!(out.len() <= BOUND);
        assert_eq!(target_len(second), Ok(out.len() as u64));
        let again = encode(source, &out);
        assert_eq!(apply(source, &again, out.len()), Ok(out));
    }
}

fn generate(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(1500);
    let alphabet: &[u8] = if rng.one_in(2) {
        b"{}\":,0123456789abcdef"
    } else {
        b"\x00\x80\xffab"
    };
    let source: Vec<u8> = (0..len).map(|_| *rng.pick(alphabet)).collect();
    let mut target = source.clone();
    for _ in 0..rng.below(6) {
        let at = rng.below(target.len() + 1);
        let cut = rng.below(20).min(target.len() - at);
        let insert_len = rng.below(10);
        let insert = rng.bytes(insert_len);
        target.splice(at..at + cut, insert);
    }
    let mut second = if rng.one_in(2) {
        target
    } else {
        encode(&source, &target)
    };
    if !second.is_empty() && rng.one_in(3) {
        let at = rng.below(second.len());
        second[at] = rng.byte();
    }
    let mut input = source.into_iter().filter(|&b| b != 0).collect::<Vec<u8>>();
    input.push(0);
    input.extend_from_slice(&second);
    input
}
