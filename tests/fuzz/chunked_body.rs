//! `chunked_body`: the `Transfer-Encoding: chunked` body decoder.
//!
//! Oracles: the same body, length and error whatever the split of the
//! input; the body never grows past the limit; the decoder never consumes a
//! byte past the end of the body; the limit is exact (a complete body fits
//! a limit of its own length and not one byte less).

use roomcast::http::chunked::{ChunkedDecoder, ChunkedError};

use crate::engine::{Rng, Target};

pub const TARGET: Target = Target {
    name: "chunked_body",
    check,
    generate,
    dictionary: &[
        b"\r\n",
        b"0\r\n\r\n",
        b";",
        b";ext=\"q\\\"\"",
        b"\n",
        b"\r",
        b"ffffffffffffffff",
        b"Trailer: x\r\n",
        b" ",
        b"\t",
    ],
    max_len: 16 * 1024,
};

/// The decoded body and the input bytes used, or the error.
type Outcome = Result<(Vec<u8>, usize, bool), ChunkedError>;

fn decode(input: &[u8], limit: usize, cuts: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::new(limit);
    let mut body = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        if cut < at || decoder.is_done() {
            continue;
        }
        let progress = decoder.decode(&input[at..cut], &mut body)?;
        assert!(progress.consumed <= cut - at);
        assert!(
            progress.done || progress.consumed == cut - at,
            "stopped early"
        );
        assert!(
            body.len() <= limit,
            "body {} over the limit {limit}",
            body.len()
        );
        at += progress.consumed;
    }
    Ok((body, at, decoder.is_done()))
}

fn check(input: &[u8]) {
    let mut rng = Rng::from_input(input);
    let limit = rng.choose(&[64 * 1024, 0, 1, 16, input.len()]);
    let whole = decode(input, limit, &[input.len()]);
    assert_eq!(decode(input, limit, &rng.cuts(input.len())), whole, "split");
    let Ok((body, consumed, true)) = whole else {
        return;
    };
    // What follows the body (a pipelined request) is never touched.
    let mut followed = input[..consumed].to_vec();
    followed.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let again = decode(&followed, limit, &[followed.len()]);
    assert_eq!(again, Ok((body.clone(), consumed, true)), "trailing bytes");
    let exact = decode(&input[..consumed], body.len(), &[consumed]);
    assert_eq!(
        exact,
        Ok((body.clone(), consumed, true)),
        "limit = body length"
    );
    if !body.is_empty() {
        let short = decode(&input[..consumed], body.len() - 1, &[consumed]);
        assert_eq!(short, Err(ChunkedError::TooLarge), "limit one byte short");
    }
}

/// A body in chunks, with extensions and trailers, sometimes broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(6) {
        let len = 1 + rng.below(300);
        let data = rng.bytes(len);
        let size = format!("{:x}", data.len());
        let size = if rng.one_in(3) {
            size.to_uppercase()
        } else {
            size
        };
        let zeros = "0".repeat(if rng.one_in(5) { rng.below(5) } else { 0 });
        out.extend_from_slice(format!("{zeros}{size}{}\r\n", extension(rng)).as_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("0{}\r\n", extension(rng)).as_bytes());
    for _ in 0..rng.below(3) {
        out.extend_from_slice(b"X-Checksum: abc\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if rng.one_in(3) {
        break_one(rng, &mut out);
    }
    out
}

fn extension(rng: &mut Rng) -> &'static str {
    rng.choose(&[
        "",
        "",
        ";a",
        ";a=b",
        " ;name=\"quoted;value\"",
        "\t;x",
        "; y = z",
    ])
}

fn break_one(rng: &mut Rng, out: &mut Vec<u8>) {
    let at = rng.below(out.len());
    match rng.below(5) {
        0 => out[at] = b'\n',
        1 => out[at] = b'g',
        2 => out.insert(at, b'\r'),
        3 => out
            .splice(at..at, b"ffffffffffffffffff".iter().copied())
            .for_each(drop),
        _ => out.truncate(at),
    }
}
