use proptest::prelude::*;

use super::*;

const LIMIT: usize = 64 * 1024;

/// Reads `input` in one call: the response, or the error.
fn read_all(input: &[u8], limit: usize) -> Result<(Response, usize), ResponseError> {
    let mut reader = ResponseReader::new(limit);
    let progress = reader.read(input)?;
    if !progress.done {
        reader.end()?;
    }
    Ok((reader.take().expect("done"), progress.consumed))
}

fn response(input: &[u8]) -> Response {
    read_all(input, LIMIT).unwrap().0
}

fn error(input: &[u8]) -> ResponseError {
    read_all(input, LIMIT).unwrap_err()
}

#[test]
fn the_request_is_a_signed_json_post_kept_alive() {
    let url: HookUrl = "https://api.example:8443/hooks/connect?v=1"
        .parse()
        .unwrap();
    let mut out = Vec::new();
    write_request(&mut out, &url, br#"{"ip":"1.2.3.4"}"#, 1234, "sha256=ab");
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        format!(
            "POST /hooks/connect?v=1 HTTP/1.1\r\nHost: api.example:8443\r\n\
             User-Agent: roomcast/{}\r\nContent-Type: application/json\r\n\
             Content-Length: 16\r\nX-Roomcast-Timestamp: 1234\r\n\
             X-Roomcast-Signature: sha256=ab\r\nConnection: keep-alive\r\n\r\n\
             {{\"ip\":\"1.2.3.4\"}}",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn bodies_by_length_by_chunks_and_until_the_close() {
    let r = response(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"result\":1}");
    assert_eq!(
        (r.status, r.body.as_slice(), r.keep_alive),
        (200, &b"{\"result\":1"[..], true)
    );
    let r =
        response(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
    assert_eq!(
        (r.status, r.body.as_slice(), r.keep_alive),
        (201, &b"{}"[..], true)
    );
    let r = response(b"HTTP/1.1 200 OK\r\n\r\nuntil the end");
    assert_eq!(
        (r.body.as_slice(), r.keep_alive),
        (&b"until the end"[..], false)
    );
    let r = response(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
    assert_eq!((r.status, r.body.len(), r.keep_alive), (204, 0, true));
    let r = response(b"HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (503, 0));
}

#[test]
fn the_connection_is_kept_as_the_response_says() {
    let close = response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    assert!(!close.keep_alive);
    let both = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
    assert!(!response(both).keep_alive);
    assert!(!response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
    let kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
    assert!(response(kept).keep_alive);
}

#[test]
fn interim_responses_are_skipped_and_bare_lf_accepted() {
    let r = response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    let r = response(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok");
    assert_eq!(r.body, b"ok");
    let r = response(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn nothing_past_the_response_is_consumed() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
    let (r, consumed) = read_all(input, LIMIT).unwrap();
    assert_eq!(
        (r.body.as_slice(), consumed),
        (&b"ok"[..], input.len() - 17)
    );
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nextra";
    assert_eq!(read_all(chunked, LIMIT).unwrap().1, chunked.len() - 5);
}

#[test]
fn malformed_responses_say_why() {
    use ResponseError::*;
    let cases: &[(&[u8], ResponseError)] = &[
        (b"HTTP/2 200 OK\r\n\r\n", StatusLine),
        (b"HTTP/1.1 20 OK\r\n\r\n", StatusLine),
        (b"HTTP/1.1 2000 OK\r\n\r\n", StatusLine),
        (b"HTTP/1.1 099 OK\r\n\r\n", StatusLine),
        (b"HTTP/1.1 600 OK\r\n\r\n", StatusLine),
        (b"HTTP/1.1 101 Switching\r\n\r\n", StatusLine),
        (b"HTTP/1.1 200 O\rK\r\n\r\n", StatusLine),
        (b"\r\n\r\n", StatusLine),
        (b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n", Header),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", Header),
        (b"HTTP/1.1 200 OK\r\n: x\r\n\r\n", Header),
        (b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", Header),
        (b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", Header),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            ContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            ContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            ContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            ContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            ContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            TransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            TransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            TransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            Chunked(ChunkedError::BadChunk),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
            Truncated,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Le", Truncated),
        (b"", Truncated),
    ];
    for (input, expected) in cases {
        assert_eq!(
            error(input),
            *expected,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    // A list of one length, repeated, is that length.
    let same = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(response(same).body, b"ok");
}

#[test]
fn heads_fields_and_bodies_are_bounded() {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    while head.len() < MAX_RESPONSE_HEAD {
        head.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(error(&head), ResponseError::HeadTooLarge);
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for _ in 0..=MAX_RESPONSE_HEADERS {
        many.extend_from_slice(b"A: b\r\n");
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(error(&many), ResponseError::TooManyHeaders);

    let big = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n";
    assert_eq!(read_all(big, 10).unwrap_err(), ResponseError::BodyTooLarge);
    let chunks = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n";
    assert_eq!(
        read_all(chunks, 10).unwrap_err(),
        ResponseError::BodyTooLarge
    );
    let open = b"HTTP/1.1 200 OK\r\n\r\n01234567890";
    assert_eq!(read_all(open, 10).unwrap_err(), ResponseError::BodyTooLarge);
    let exact = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
    assert_eq!(read_all(exact, 10).unwrap().0.body.len(), 10);
}

#[test]
fn an_endless_stream_of_interim_heads_is_bounded() {
    let mut input = Vec::new();
    while input.len() <= MAX_RESPONSE_HEAD {
        input.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    assert_eq!(error(&input), ResponseError::HeadTooLarge);
}

#[test]
fn byte_by_byte_matches_all_at_once() {
    let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let mut reader = ResponseReader::new(LIMIT);
    for (i, byte) in input.iter().enumerate() {
        assert!(!reader.is_done());
        let progress = reader.read(std::slice::from_ref(byte)).unwrap();
        assert_eq!(progress.consumed, 1);
        assert_eq!(progress.done, i == input.len() - 1);
    }
    assert_eq!(reader.take().unwrap().body, b"abc");
}

/// A response with `body` framed as `framing` says (0: length, 1: chunks
/// of `chunk` bytes, 2: until the close), with an interim head first or not.
fn encode(body: &[u8], framing: u8, chunk: usize, interim: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if interim {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: test\r\n");
    match framing {
        0 => out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes()),
        1 => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n"),
        _ => out.extend_from_slice(b"\r\n"),
    }
    if framing == 1 {
        for piece in body.chunks(chunk.max(1)) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(body);
    }
    out
}

proptest! {
    #[test]
    fn responses_read_the_same_in_any_split(
        body in proptest::collection::vec(any::<u8>(), 0..1500),
        framing in 0u8..3,
        chunk in 1usize..400,
        interim in any::<bool>(),
        cuts in proptest::collection::vec(0usize..2000, 0..8),
    ) {
        let input = encode(&body, framing, chunk, interim);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        cuts.push(input.len());
        let mut reader = ResponseReader::new(body.len());
        let mut at = 0;
        for cut in cuts {
            if cut < at || reader.is_done() {
                continue;
            }
            let progress = reader.read(&input[at..cut]).unwrap();
            at += progress.consumed;
            prop_assert!(progress.done || at == cut);
        }
        if framing == 2 {
            prop_assert!(!reader.is_done());
            reader.end().unwrap();
        }
        prop_assert_eq!(at, input.len());
        let response = reader.take().unwrap();
        prop_assert_eq!(response.body, body);
        prop_assert_eq!(response.keep_alive, framing != 2);
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_pass_the_bounds(
        bytes in proptest::collection::vec(any::<u8>(), 0..800),
        limit in 0usize..300,
    ) {
        let mut reader = ResponseReader::new(limit);
        if let Ok(progress) = reader.read(&bytes) {
            prop_assert!(progress.consumed <= bytes.len());
            if let Some(response) = reader.take() {
                prop_assert!(response.body.len() <= limit);
                prop_assert!((100..600).contains(&response.status));
            }
        }
    }
}
