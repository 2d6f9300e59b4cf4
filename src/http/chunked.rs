//! Incremental, bounded decoding of a `Transfer-Encoding: chunked` request
//! body (RFC 9112 section 7.1).
//!
//! Owns: the chunk grammar (hex size line, ignored chunk extensions, data,
//! CRLF, the last chunk and the trailer section) and its bounds: the decoded
//! body never grows past the caller's limit, a chunk-size line is at most
//! `MAX_CHUNK_LINE` bytes and the trailer section at most
//! `MAX_TRAILER_BYTES`. Trailers are read and discarded.
//!
//! Must not touch: sockets, the request head, or what the body means. Takes
//! bytes as they arrive and appends the decoded data to the caller's buffer.
//!
//! Decisions: lines end with CRLF only, as in the head (`http::request`); a
//! bare LF or CR is an error. A chunk size is refused as too large as soon
//! as its digits put the body over the limit, before any of its data is read.

use std::fmt;

use crate::codes::ErrorCode;
use crate::codes::limits::{MAX_CHUNK_LINE, MAX_TRAILER_BYTES};

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk-size line that is not hex digits, optionally followed by an
    /// extension, or data not followed by CRLF.
    BadChunk,
    /// A `\n` without `\r` before it, or a `\r` without `\n` after it.
    BadLineEnding,
    /// A chunk-size line over `MAX_CHUNK_LINE` bytes.
    LineTooLong,
    /// A trailer section over `MAX_TRAILER_BYTES` bytes.
    TrailersTooLarge,
    /// The body would be longer than the limit.
    TooLarge,
}

impl ChunkedError {
    /// `PAYLOAD_TOO_LARGE` (413) for the size limit, else `BAD_REQUEST` (400).
    pub const fn code(self) -> ErrorCode {
        match self {
            Self::TooLarge => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::BadRequest,
        }
    }

    /// A short, fixed message for the error response.
    pub const fn message(self) -> &'static str {
        match self {
            Self::BadChunk => "malformed chunked body",
            Self::BadLineEnding => "chunked body lines must end with CRLF",
            Self::LineTooLong => "chunk-size line is too long",
            Self::TrailersTooLarge => "chunked body trailers are too large",
            Self::TooLarge => "request body is over the size limit",
        }
    }
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ChunkedError {}

/// What one call to [`ChunkedDecoder::decode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes used; they never reach past the end of the body, so
    /// whatever follows (a pipelined request) is left to the caller.
    pub consumed: usize,
    /// The last chunk and the trailer section have been read.
    pub done: bool,
}

/// Where the decoder is in the chunk grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the hex digits of a chunk size.
    Size { size: usize, digits: usize },
    /// After the size: whitespace and an extension, ignored up to the CR.
    Extension { size: usize },
    /// The CR of the size line was read; its LF must follow.
    SizeLf { size: usize },
    /// Inside a chunk's data.
    Data { remaining: usize },
    /// The data of a chunk ended; its CR must follow.
    DataCr,
    /// The CR after a chunk's data was read; its LF must follow.
    DataLf,
    /// In the trailer section, `line` bytes into the current line.
    Trailer { line: usize },
    /// A trailer line's CR was read; its LF must follow.
    TrailerLf { line: usize },
    /// The body is complete.
    Done,
}

/// Decodes one chunked body; one per request.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    phase: Phase,
    /// Most body bytes accepted.
    limit: usize,
    /// Body bytes announced so far (every chunk size read).
    total: usize,
    /// Bytes of the current chunk-size line.
    line: usize,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder for a body of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            phase: Phase::Size { size: 0, digits: 0 },
            limit,
            total: 0,
            line: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Decodes what `input` holds of the body, appending the data to `body`.
    /// Call again with the following bytes (not the consumed ones) until
    /// `done`. After an error the decoder must not be used again.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Progress, ChunkedError> {
        let mut at = 0;
        while let Some(rest) = input.get(at..).filter(|rest| !rest.is_empty()) {
            match self.phase {
                Phase::Done => break,
                Phase::Data { remaining } => {
                    let take = remaining.min(rest.len());
                    body.extend_from_slice(rest.get(..take).unwrap_or_default());
                    at += take;
                    self.phase = match remaining - take {
                        0 => Phase::DataCr,
                        left => Phase::Data { remaining: left },
                    };
                }
                _ => {
                    let byte = rest.first().copied().unwrap_or_default();
                    at += 1;
                    self.step(byte)?;
                }
            }
        }
        Ok(Progress {
            consumed: at,
            done: self.is_done(),
        })
    }

    /// Advances over one byte outside of chunk data.
    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        self.phase = match self.phase {
            Phase::Size { size, digits } => self.size_byte(size, digits, byte)?,
            Phase::Extension { size } => {
                self.count_line_byte(byte)?;
                match byte {
                    b'\r' => Phase::SizeLf { size },
                    b'\n' => return Err(ChunkedError::BadLineEnding),
                    b'\t' | b' '..=b'~' | 0x80.. => Phase::Extension { size },
                    _ => return Err(ChunkedError::BadChunk),
                }
            }
            Phase::SizeLf { size } => {
                expect(byte, b'\n', ChunkedError::BadLineEnding)?;
                self.line = 0;
                self.total += size;
                match size {
                    0 => Phase::Trailer { line: 0 },
                    _ => Phase::Data { remaining: size },
                }
            }
            Phase::DataCr => {
                expect(byte, b'\r', ChunkedError::BadChunk)?;
                Phase::DataLf
            }
            Phase::DataLf => {
                expect(byte, b'\n', ChunkedError::BadLineEnding)?;
                Phase::Size { size: 0, digits: 0 }
            }
            Phase::Trailer { line } => {
                self.count_trailer_byte()?;
                match byte {
                    b'\r' => Phase::TrailerLf { line },
                    b'\n' => return Err(ChunkedError::BadLineEnding),
                    _ => Phase::Trailer { line: line + 1 },
                }
            }
            Phase::TrailerLf { line } => {
                self.count_trailer_byte()?;
                expect(byte, b'\n', ChunkedError::BadLineEnding)?;
                match line {
                    0 => Phase::Done,
                    _ => Phase::Trailer { line: 0 },
                }
            }
            // `decode` never steps over data or past the end.
            phase @ (Phase::Data { .. } | Phase::Done) => phase,
        };
        Ok(())
    }

    /// One byte of a chunk-size line while its digits are being read.
    fn size_byte(&mut self, size: usize, digits: usize, byte: u8) -> Result<Phase, ChunkedError> {
        self.count_line_byte(byte)?;
        if let Some(digit) = hex_value(byte) {
            let size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(digit))
                .ok_or(ChunkedError::TooLarge)?;
            // Sizes only grow with more digits: refuse before any data.
            if size > self.limit.saturating_sub(self.total) {
                return Err(ChunkedError::TooLarge);
            }
            return Ok(Phase::Size {
                size,
                digits: digits + 1,
            });
        }
        match byte {
            _ if digits == 0 => Err(ChunkedError::BadChunk),
            b'\r' => Ok(Phase::SizeLf { size }),
            b'\n' => Err(ChunkedError::BadLineEnding),
            // Whitespace before `;` (RFC 9112's BWS) and the extension.
            b';' | b' ' | b'\t' => Ok(Phase::Extension { size }),
            _ => Err(ChunkedError::BadChunk),
        }
    }

    /// Counts a byte of the chunk-size line against its bound, which
    /// includes the line's CRLF.
    fn count_line_byte(&mut self, byte: u8) -> Result<(), ChunkedError> {
        if byte == b'\r' {
            return Ok(());
        }
        self.line += 1;
        if self.line + 2 > MAX_CHUNK_LINE {
            return Err(ChunkedError::LineTooLong);
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkedError::TrailersTooLarge);
        }
        Ok(())
    }
}

fn expect(byte: u8, wanted: u8, error: ChunkedError) -> Result<(), ChunkedError> {
    if byte == wanted { Ok(()) } else { Err(error) }
}

fn hex_value(byte: u8) -> Option<usize> {
    char::from(byte).to_digit(16).map(|d| d as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 64 * 1024;

    /// Decodes `input` in one call.
    fn decode_all(input: &[u8], limit: usize) -> Result<(Vec<u8>, Progress), ChunkedError> {
        let mut body = Vec::new();
        let progress = ChunkedDecoder::new(limit).decode(input, &mut body)?;
        Ok((body, progress))
    }

    fn decoded(input: &[u8]) -> Vec<u8> {
        let (body, progress) = decode_all(input, LIMIT).unwrap();
        assert!(progress.done, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(progress.consumed, input.len());
        body
    }

    fn error(input: &[u8]) -> ChunkedError {
        decode_all(input, LIMIT).unwrap_err()
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        assert_eq!(
            decoded(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        assert_eq!(decoded(b"0\r\n\r\n"), b"");
        assert_eq!(decoded(b"A\r\n0123456789\r\n0\r\n\r\n"), b"0123456789");
        assert_eq!(decoded(b"00a\r\n0123456789\r\n000\r\n\r\n"), b"0123456789");
        assert_eq!(
            decoded(b"3;name=value;x=\"q\"\r\nabc\r\n3 ; ext\r\nxyz\r\n0;last\r\n\r\n"),
            b"abcxyz"
        );
        assert_eq!(
            decoded(b"2\r\nhi\r\n0\r\nX-Trailer: 1\r\nOther: two\r\n\r\n"),
            b"hi"
        );
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let input = b"2\r\nhi\r\n0\r\n\r\nPOST /next HTTP/1.1\r\n";
        let (body, progress) = decode_all(input, LIMIT).unwrap();
        assert_eq!(body, b"hi");
        assert_eq!(
            progress,
            Progress {
                consumed: 12,
                done: true
            }
        );
    }

    #[test]
    fn byte_by_byte_matches_all_at_once() {
        let input = b"5;e\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n";
        let mut decoder = ChunkedDecoder::new(LIMIT);
        let mut body = Vec::new();
        for (i, byte) in input.iter().enumerate() {
            let progress = decoder
                .decode(std::slice::from_ref(byte), &mut body)
                .unwrap();
            assert_eq!(progress.consumed, 1);
            assert_eq!(progress.done, i == input.len() - 1);
        }
        assert_eq!(body, b"hello!");
    }

    #[test]
    fn malformed_bodies() {
        use ChunkedError::*;
        let cases: &[(&[u8], ChunkedError)] = &[
            (b"\r\n", BadChunk),
            (b"x\r\n", BadChunk),
            (b";ext\r\n", BadChunk),
            (b"-1\r\n", BadChunk),
            (b"+1\r\n", BadChunk),
            (b"1x\r\n", BadChunk),
            (b"5\nhello", BadLineEnding),
            (b"5\rhello", BadLineEnding),
            (b"5;e\nhello", BadLineEnding),
            (b"5;e\x00\r\n", BadChunk),
            (b"5\r\nhelloX\r\n", BadChunk),
            (b"5\r\nhello\rX", BadLineEnding),
            (b"0\r\nT: v\n", BadLineEnding),
            (b"0\r\n\rX", BadLineEnding),
        ];
        for (input, expected) in cases {
            assert_eq!(
                error(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(BadChunk.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn the_limit_is_checked_from_the_size_digits() {
        assert_eq!(
            decode_all(b"a\r\n0123456789\r\n0\r\n\r\n", 10)
                .unwrap()
                .0
                .len(),
            10
        );
        assert_eq!(
            decode_all(b"b\r\n", 10).unwrap_err(),
            ChunkedError::TooLarge
        );
        // The second chunk goes over: refused before its data arrives.
        assert_eq!(
            decode_all(b"6\r\nabcdef\r\n5", 10).unwrap_err(),
            ChunkedError::TooLarge
        );
        assert_eq!(
            decode_all(b"fffffffffffffffffffffff\r\n", usize::MAX).unwrap_err(),
            ChunkedError::TooLarge
        );
        assert_eq!(ChunkedError::TooLarge.code(), ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn size_lines_and_trailers_are_bounded() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE - 2, b'e');
        line.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decoded(&line), b"x");
        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE - 1, b'e');
        long.extend_from_slice(b"\r\n");
        assert_eq!(error(&long), ChunkedError::LineTooLong);
        let zeros = vec![b'0'; MAX_CHUNK_LINE];
        assert_eq!(error(&zeros), ChunkedError::LineTooLong);

        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILER_BYTES + 3 {
            trailers.extend_from_slice(b"X-Pad: aaaaaaaa\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(error(&trailers), ChunkedError::TrailersTooLarge);
    }

    /// `body` as chunks of the given sizes (cycled), with optional
    /// extensions and trailers.
    fn encode(body: &[u8], sizes: &[usize], extension: bool, trailer: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let size = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
            out.extend_from_slice(format!("{size:X}").as_bytes());
            if extension {
                out.extend_from_slice(b" ;a=b");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&rest[..size]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"X-Checksum: 1\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn encoded_bodies_round_trip_in_any_split(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            extension in any::<bool>(),
            trailer in any::<bool>(),
            cuts in proptest::collection::vec(0usize..3000, 0..8),
        ) {
            let mut input = encode(&body, &sizes, extension, trailer);
            let encoded_len = input.len();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            cuts.push(input.len());
            let mut decoder = ChunkedDecoder::new(body.len());
            let mut decoded = Vec::new();
            let mut at = 0;
            for cut in cuts {
                if cut < at || decoder.is_done() {
                    continue;
                }
                let progress = decoder.decode(&input[at..cut], &mut decoded).unwrap();
                at += progress.consumed;
                prop_assert!(progress.done || at == cut);
            }
            prop_assert!(decoder.is_done());
            prop_assert_eq!(at, encoded_len);
            prop_assert_eq!(decoded, body);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_pass_the_limit(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            limit in 0usize..200,
        ) {
            let mut body = Vec::new();
            if let Ok(progress) = ChunkedDecoder::new(limit).decode(&bytes, &mut body) {
                prop_assert!(progress.consumed <= bytes.len());
            }
            prop_assert!(body.len() <= limit);
        }

        #[test]
        fn bodies_over_the_limit_are_refused(
            body in proptest::collection::vec(any::<u8>(), 1..500),
            sizes in proptest::collection::vec(1usize..100, 1..4),
            short in 1usize..50,
        ) {
            let limit = body.len().saturating_sub(short);
            let input = encode(&body, &sizes, false, false);
            let mut decoded = Vec::new();
            let result = ChunkedDecoder::new(limit).decode(&input, &mut decoded);
            prop_assert_eq!(result, Err(ChunkedError::TooLarge));
            prop_assert!(decoded.len() <= limit);
        }
    }
}
