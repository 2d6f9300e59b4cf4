//! HTTP/1.1 for hooks, client side and sans-IO: the POST roomcast writes
//! and the incremental reading of the backend's response.
//!
//! Owns the request's exact bytes and the response grammar with its bounds:
//! a head of at most `MAX_RESPONSE_HEAD` bytes (interim `1xx` heads
//! included) and `MAX_RESPONSE_HEADERS` fields, a body of at most the
//! caller's limit, delimited by `Content-Length`, by chunks
//! (`http::chunked`) or by the end of the connection. Whether the
//! connection may carry another request is part of the result
//! (`Response::keep_alive`). Must not touch sockets or clocks: bytes in,
//! a `Response` or a `ResponseError` out; partial input is not an error.
//!
//! Decisions: what a backend sends is input like a client's, so every
//! framing doubt is refused rather than guessed (both `Content-Length` and
//! `Transfer-Encoding`, differing lengths, codings other than `chunked`).
//! Lines may end with a bare LF (RFC 9112 section 2.2 lets a recipient
//! accept it; some small backends write it); a bare CR is refused.

use std::fmt;

use crate::http::chunked::{ChunkedDecoder, ChunkedError};

use super::sign::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::url::HookUrl;

/// Longest response head, interim `1xx` heads included.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Most header fields in one response head.
pub const MAX_RESPONSE_HEADERS: usize = 64;

/// Appends a POST of `body` to `url` (a JSON body, kept alive, signed).
pub fn write_request(
    out: &mut Vec<u8>,
    url: &HookUrl,
    body: &[u8],
    timestamp_ms: u64,
    signature: &str,
) {
    let head = format!(
        "POST {path} HTTP/1.1\r\n\
         Host: {host}\r\n\
         User-Agent: roomcast/{version}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {len}\r\n\
         {TIMESTAMP_HEADER}: {timestamp_ms}\r\n\
         {SIGNATURE_HEADER}: {signature}\r\n\
         Connection: keep-alive\r\n\r\n",
        path = url.path,
        host = url.authority(),
        version = env!("CARGO_PKG_VERSION"),
        len = body.len(),
    );
    out.reserve(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The connection may carry the next request: HTTP/1.1 without
    /// `Connection: close` (HTTP/1.0 with `keep-alive`), and a body that
    /// did not end with the connection.
    pub keep_alive: bool,
}

/// Why a response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// Not `HTTP/1.0` or `HTTP/1.1`, a status outside 100-599, or `101`
    /// (nothing was asked to switch).
    StatusLine,
    /// A field without a colon or a valid name, a folded line, a bare CR.
    Header,
    /// Over `MAX_RESPONSE_HEAD` bytes.
    HeadTooLarge,
    /// Over `MAX_RESPONSE_HEADERS` fields.
    TooManyHeaders,
    /// A `Content-Length` that is not digits, or several that differ.
    ContentLength,
    /// `Transfer-Encoding` other than `chunked` alone, or beside a
    /// `Content-Length`.
    TransferEncoding,
    /// A chunked body that breaks the chunk grammar.
    Chunked(ChunkedError),
    /// A body over the caller's limit.
    BodyTooLarge,
    /// The connection ended before the response did.
    Truncated,
}

impl ResponseError {
    /// A short, fixed description, for logs.
    pub const fn message(self) -> &'static str {
        match self {
            Self::StatusLine => "a malformed status line",
            Self::Header => "a malformed header field",
            Self::HeadTooLarge => "a response head over 16 KiB",
            Self::TooManyHeaders => "more than 64 header fields",
            Self::ContentLength => "an invalid Content-Length",
            Self::TransferEncoding => "an unsupported or ambiguous Transfer-Encoding",
            Self::Chunked(_) => "a malformed chunked body",
            Self::BodyTooLarge => "a response body over the limit",
            Self::Truncated => "the connection ended inside the response",
        }
    }
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ResponseError {}

/// What one call to [`ResponseReader::read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes used; never past the end of the response.
    pub consumed: usize,
    /// The response is complete: `take` it.
    pub done: bool,
}

/// How the body ends.
#[derive(Debug, Clone)]
enum Body {
    Length(usize),
    Chunked(Box<ChunkedDecoder>),
    UntilClose,
}

#[derive(Debug, Clone)]
enum Phase {
    Head,
    Body(Body),
    Done,
}

/// Reads one response, as its bytes arrive; one per request.
#[derive(Debug, Clone)]
pub struct ResponseReader {
    phase: Phase,
    max_body: usize,
    /// The head so far (the current one, after any interim heads).
    head: Vec<u8>,
    /// Head bytes seen, interim heads included, against `MAX_RESPONSE_HEAD`.
    head_total: usize,
    status: u16,
    keep_alive: bool,
    body: Vec<u8>,
}

impl ResponseReader {
    /// A reader for a response whose body is at most `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Self {
            phase: Phase::Head,
            max_body,
            head: Vec::new(),
            head_total: 0,
            status: 0,
            keep_alive: false,
            body: Vec::new(),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Reads what `input` holds of the response. Call again with the bytes
    /// that follow the consumed ones until `done`, or `end` when the
    /// connection ends. After an error the reader must not be used again.
    pub fn read(&mut self, input: &[u8]) -> Result<Progress, ResponseError> {
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            at += match &mut self.phase {
                Phase::Head => self.read_head(rest)?,
                Phase::Body(body) => read_body(body, rest, &mut self.body, self.max_body)?,
                Phase::Done => break,
            };
            if let Phase::Body(Body::Length(0)) = self.phase {
                self.phase = Phase::Done;
            }
            if let Phase::Body(Body::Chunked(decoder)) = &self.phase
                && decoder.is_done()
            {
                self.phase = Phase::Done;
            }
        }
        Ok(Progress {
            consumed: at,
            done: self.is_done(),
        })
    }

    /// The connection ended: a body that runs until the close is complete,
    /// anything else was cut short.
    pub fn end(&mut self) -> Result<(), ResponseError> {
        match self.phase {
            Phase::Done => Ok(()),
            Phase::Body(Body::UntilClose) => {
                self.phase = Phase::Done;
                Ok(())
            }
            _ => Err(ResponseError::Truncated),
        }
    }

    /// The complete response (`done`); `None` before.
    pub fn take(self) -> Option<Response> {
        self.is_done().then_some(Response {
            status: self.status,
            body: self.body,
            keep_alive: self.keep_alive,
        })
    }

    /// Takes head bytes up to the end of the head; parses it once whole.
    fn read_head(&mut self, input: &[u8]) -> Result<usize, ResponseError> {
        // The blank line may straddle two reads: look again from just
        // before what came last.
        let from = self.head.len().saturating_sub(2);
        let room = MAX_RESPONSE_HEAD - self.head_total;
        let take = input.len().min(room + 1);
        self.head.extend_from_slice(&input[..take]);
        let Some(end) = head_end(&self.head, from) else {
            if self.head_total + take > MAX_RESPONSE_HEAD {
                return Err(ResponseError::HeadTooLarge);
            }
            self.head_total += take;
            return Ok(take);
        };
        let used = end - (self.head.len() - take);
        self.head.truncate(end);
        self.head_total += used;
        if self.head_total > MAX_RESPONSE_HEAD {
            return Err(ResponseError::HeadTooLarge);
        }
        let head = std::mem::take(&mut self.head);
        self.on_head(&head)?;
        Ok(used)
    }

    fn on_head(&mut self, head: &[u8]) -> Result<(), ResponseError> {
        let mut lines = lines(head);
        let (http11, status) = status_line(lines.next().unwrap_or_default())?;
        if (100..200).contains(&status) {
            // An interim response (`100 Continue`, `103 Early Hints`):
            // the real one follows on the same connection.
            return Ok(());
        }
        let fields = Fields::read(lines)?;
        self.status = status;
        self.keep_alive = match fields.connection {
            Connection::Close => false,
            Connection::KeepAlive => true,
            Connection::Unsaid => http11,
        };
        let body = if status == 204 || status == 304 {
            Body::Length(0)
        } else {
            match (fields.chunked, fields.length) {
                (true, None) => Body::Chunked(Box::new(ChunkedDecoder::new(self.max_body))),
                (true, Some(_)) => return Err(ResponseError::TransferEncoding),
                (false, Some(len)) if len > self.max_body => {
                    return Err(ResponseError::BodyTooLarge);
                }
                (false, Some(len)) => Body::Length(len),
                (false, None) => {
                    self.keep_alive = false;
                    Body::UntilClose
                }
            }
        };
        self.phase = match body {
            Body::Length(0) => Phase::Done,
            body => Phase::Body(body),
        };
        Ok(())
    }
}

fn read_body(
    body: &mut Body,
    input: &[u8],
    out: &mut Vec<u8>,
    max_body: usize,
) -> Result<usize, ResponseError> {
    match body {
        Body::Length(remaining) => {
            let take = (*remaining).min(input.len());
            out.extend_from_slice(&input[..take]);
            *remaining -= take;
            Ok(take)
        }
        Body::Chunked(decoder) => match decoder.decode(input, out) {
            Ok(progress) => Ok(progress.consumed),
            Err(ChunkedError::TooLarge) => Err(ResponseError::BodyTooLarge),
            Err(e) => Err(ResponseError::Chunked(e)),
        },
        Body::UntilClose => {
            if out.len() + input.len() > max_body {
                return Err(ResponseError::BodyTooLarge);
            }
            out.extend_from_slice(input);
            Ok(input.len())
        }
    }
}

/// Where the head that `head` starts ends (after its blank line), looking
/// from `from` on: CRLF CRLF, or LF LF, or a mix.
fn head_end(head: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(lf) = head.get(at..)?.iter().position(|&b| b == b'\n') {
        let next = at + lf + 1;
        match head.get(next..) {
            Some([b'\n', ..]) => return Some(next + 1),
            Some([b'\r', b'\n', ..]) => return Some(next + 2),
            _ => at = next,
        }
    }
    None
}

/// The lines of a whole head, without their line endings.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
}

/// `HTTP/1.x SSS[ reason]`: whether it is 1.1, and the status.
fn status_line(line: &[u8]) -> Result<(bool, u16), ResponseError> {
    let bad = ResponseError::StatusLine;
    let http11 = match line.get(..9) {
        Some(b"HTTP/1.1 ") => true,
        Some(b"HTTP/1.0 ") => false,
        _ => return Err(bad),
    };
    let digits = line.get(9..12).ok_or(bad)?;
    if !digits.iter().all(u8::is_ascii_digit) || !matches!(line.get(12), None | Some(b' ')) {
        return Err(bad);
    }
    let status = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..600).contains(&status) || status == 101 {
        return Err(bad);
    }
    if line.iter().any(|&b| b == b'\r' || (b < 0x20 && b != b'\t')) {
        return Err(bad);
    }
    Ok((http11, status))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Unsaid,
    Close,
    KeepAlive,
}

/// What the header fields say about framing and the connection.
struct Fields {
    length: Option<usize>,
    chunked: bool,
    connection: Connection,
}

impl Fields {
    fn read<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Self, ResponseError> {
        let mut fields = Fields {
            length: None,
            chunked: false,
            connection: Connection::Unsaid,
        };
        let mut codings = 0;
        for (count, line) in lines.enumerate() {
            if count >= MAX_RESPONSE_HEADERS {
                return Err(ResponseError::TooManyHeaders);
            }
            let (name, value) = field(line)?;
            if name.eq_ignore_ascii_case(b"content-length") {
                fields.content_length(value)?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                for coding in tokens(value) {
                    codings += 1;
                    fields.chunked = coding.eq_ignore_ascii_case(b"chunked") && codings == 1;
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                fields.connection_tokens(value);
            }
        }
        if codings > 0 && !fields.chunked {
            return Err(ResponseError::TransferEncoding);
        }
        Ok(fields)
    }

    /// One `Content-Length` field: a number, or a list of the same number.
    fn content_length(&mut self, value: &[u8]) -> Result<(), ResponseError> {
        for item in value.split(|&b| b == b',') {
            let digits = item.trim_ascii();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(ResponseError::ContentLength);
            }
            let len = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or(ResponseError::ContentLength)?;
            if self.length.is_some_and(|known| known != len) {
                return Err(ResponseError::ContentLength);
            }
            self.length = Some(len);
        }
        Ok(())
    }

    fn connection_tokens(&mut self, value: &[u8]) {
        for token in tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.connection = Connection::Close;
            } else if token.eq_ignore_ascii_case(b"keep-alive")
                && self.connection != Connection::Close
            {
                self.connection = Connection::KeepAlive;
            }
        }
    }
}

/// `name: value`, the value without surrounding whitespace.
fn field(line: &[u8]) -> Result<(&[u8], &[u8]), ResponseError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(ResponseError::Header)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let name_ok = !name.is_empty() && name.iter().all(|&b| is_token_byte(b));
    let value_ok = value.iter().all(|&b| b == b'\t' || b >= 0x20) && !value.contains(&0x7f);
    if !name_ok || !value_ok {
        return Err(ResponseError::Header);
    }
    Ok((name, value.trim_ascii()))
}

/// RFC 9110's `tchar`: what a field name is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The non-empty items of a comma-separated list.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests;
