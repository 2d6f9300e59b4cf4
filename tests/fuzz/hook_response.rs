//! `hook_response`: the hooks client's reading of a backend's response
//! (`hooks::http::ResponseReader`).
//!
//! Oracles: the same response, length and error whatever the split of the
//! input; the body never passes the limit; nothing past the end of a
//! complete response is consumed, and bytes after it change nothing; a
//! complete response has a final status (200-599, no `1xx`); a response
//! ended by the close is never kept alive.

use roomcast::hooks::http::{Response, ResponseError, ResponseReader};

use crate::engine::{Rng, Target};

pub const TARGET: Target = Target {
    name: "hook_response",
    check,
    generate,
    dictionary: &[
        b"HTTP/1.1 ",
        b"HTTP/1.0 ",
        b"200 OK",
        b"100 Continue\r\n\r\n",
        b"\r\n",
        b"\r\n\r\n",
        b"\n",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked",
        b"Connection: close",
        b"Connection: keep-alive",
        b"0\r\n\r\n",
        b"ffffffffffffffff",
        b", ",
        b":",
    ],
    max_len: 32 * 1024,
};

/// The response (if complete), the input bytes used, or the error.
type Outcome = Result<(Option<Response>, usize), ResponseError>;

fn read(input: &[u8], limit: usize, cuts: &[usize]) -> Outcome {
    let mut reader = ResponseReader::new(limit);
    let mut at = 0;
    for &cut in cuts {
        if cut < at || reader.is_done() {
            continue;
        }
        let progress = reader.read(&input[at..cut])?;
        assert!(progress.consumed <= cut - at);
        assert!(
            progress.done || progress.consumed == cut - at,
            "stopped early"
        );
        at += progress.consumed;
    }
    Ok((reader.take(), at))
}

fn check(input: &[u8]) {
    let mut rng = Rng::from_input(input);
    let limit = rng.choose(&[64 * 1024, 0, 1, 16, input.len()]);
    let whole = read(input, limit, &[input.len()]);
    assert_eq!(read(input, limit, &rng.cuts(input.len())), whole, "split");
    ended(input, limit);
    let Ok((Some(response), consumed)) = whole else {
        return;
    };
    assert!(response.body.len() <= limit, "body over the limit");
    assert!((200..600).contains(&response.status), "{}", response.status);
    let mut followed = input[..consumed].to_vec();
    followed.extend_from_slice(b"HTTP/1.1 500 Next\r\nContent-Length: 1\r\n\r\nx");
    let again = read(&followed, limit, &[followed.len()]);
    assert_eq!(again, Ok((Some(response), consumed)), "trailing bytes");
}

/// The connection ends after `input`: a response it completes is bounded
/// and not kept alive.
fn ended(input: &[u8], limit: usize) {
    let mut reader = ResponseReader::new(limit);
    let Ok(progress) = reader.read(input) else {
        return;
    };
    if progress.done {
        return;
    }
    if reader.end().is_ok() {
        let response = reader.take().expect("complete once ended");
        assert!(!response.keep_alive, "kept alive past the close");
        assert!(response.body.len() <= limit);
    }
}

/// A response, sometimes after interim ones, framed by length, chunks or
/// the close, sometimes broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(3) {
        out.extend_from_slice(rng.choose(&[
            &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        ]));
    }
    let version = rng.choose(&["HTTP/1.1", "HTTP/1.0"]);
    let status = rng.choose(&[200, 201, 204, 304, 400, 401, 403, 500, 503]);
    let eol = if rng.one_in(8) { "\n" } else { "\r\n" };
    out.extend_from_slice(format!("{version} {status} Reason{eol}").as_bytes());
    if rng.one_in(3) {
        let connection = rng.choose(&["close", "keep-alive", "Keep-Alive, x"]);
        out.extend_from_slice(format!("Connection: {connection}{eol}").as_bytes());
    }
    let len = rng.below(200);
    let body = rng.bytes(len);
    match rng.below(3) {
        0 => {
            out.extend_from_slice(format!("Content-Length: {}{eol}{eol}", body.len()).as_bytes());
            out.extend_from_slice(&body);
        }
        1 => {
            out.extend_from_slice(format!("Transfer-Encoding: chunked{eol}{eol}").as_bytes());
            for piece in body.chunks(1 + rng.below(64)) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        _ => {
            out.extend_from_slice(eol.as_bytes());
            out.extend_from_slice(&body);
        }
    }
    if rng.one_in(3) && !out.is_empty() {
        let at = rng.below(out.len());
        match rng.below(4) {
            0 => out[at] = b'\r',
            1 => out[at] = b':',
            2 => out
                .splice(at..at, b"ffffffff".iter().copied())
                .for_each(drop),
            _ => out.truncate(at),
        }
    }
    out
}
