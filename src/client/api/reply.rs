//! Reading the one reply of a `roomcast api` call: the status line, the
//! framing (`Content-Length`, `Transfer-Encoding: chunked`, or the close),
//! and the body, never more than `MAX_BODY` bytes whatever the server
//! announces.

use std::io::{self, Read};

use roomcast::http::chunked::{ChunkedDecoder, ChunkedError};

use super::{ApiError, MAX_BODY};

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) status: u16,
    /// The status line, e.g. `HTTP/1.1 401 Unauthorized`.
    pub(super) status_line: String,
    pub(super) body: Vec<u8>,
}

/// Why reading a reply failed: the connection, or what came over it.
#[derive(Debug)]
pub(super) enum ReadError {
    Io(io::Error),
    Api(ApiError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// How the reply's body ends.
enum Framing {
    Length(usize),
    Chunked,
    /// Neither header: the body runs until the server closes.
    UntilClose,
}

/// Reads one reply, its body bounded by `MAX_BODY`.
pub(super) fn read_reply(reader: &mut impl Read) -> Result<Reply, ReadError> {
    let (input, end) = roomcast::http::client::read_head(reader)?;
    let bad = |why| ReadError::Api(ApiError::BadReply(why));
    let head = std::str::from_utf8(&input[..end]).map_err(|_| bad("its head is not UTF-8"))?;
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad("no HTTP/1.1 status line"))?;
    let rest = input[end..].to_vec();
    let body = match framing(head).ok_or_else(|| bad("a Content-Length that is not a number"))? {
        Framing::Length(len) if len > MAX_BODY => return Err(ReadError::Api(ApiError::TooLarge)),
        Framing::Length(len) => read_sized(reader, rest, len)?,
        Framing::Chunked => read_chunked(reader, &rest)?,
        Framing::UntilClose => read_until_close(reader, rest)?,
    };
    Ok(Reply {
        status,
        status_line,
        body,
    })
}

/// The framing the head announces; `None` for a malformed length.
fn framing(head: &str) -> Option<Framing> {
    let mut framing = Framing::UntilClose;
    for (name, value) in head.lines().skip(1).filter_map(|l| l.split_once(':')) {
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().ends_with("chunked")
        {
            // Chunked wins over any length (RFC 9112 section 6.3).
            return Some(Framing::Chunked);
        }
        if name.eq_ignore_ascii_case("content-length") {
            framing = Framing::Length(value.parse().ok()?);
        }
    }
    Some(framing)
}

fn read_sized(reader: &mut impl Read, mut body: Vec<u8>, len: usize) -> Result<Vec<u8>, ReadError> {
    body.truncate(len);
    let missing = (len - body.len()) as u64;
    reader.take(missing).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(ReadError::Api(ApiError::BadReply(
            "the connection closed before the end of the body",
        )));
    }
    Ok(body)
}

fn read_until_close(reader: &mut impl Read, mut body: Vec<u8>) -> Result<Vec<u8>, ReadError> {
    let room = (MAX_BODY + 1).saturating_sub(body.len()) as u64;
    reader.take(room).read_to_end(&mut body)?;
    if body.len() > MAX_BODY {
        return Err(ReadError::Api(ApiError::TooLarge));
    }
    Ok(body)
}

fn read_chunked(reader: &mut impl Read, rest: &[u8]) -> Result<Vec<u8>, ReadError> {
    let mut decoder = ChunkedDecoder::new(MAX_BODY);
    let mut body = Vec::new();
    let mut input = rest.to_vec();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let progress = decoder.decode(&input, &mut body).map_err(|e| {
            ReadError::Api(match e {
                ChunkedError::TooLarge => ApiError::TooLarge,
                _ => ApiError::BadReply("a malformed chunked body"),
            })
        })?;
        if progress.done {
            return Ok(body);
        }
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Err(ReadError::Api(ApiError::BadReply(
                "the connection closed before the last chunk",
            )));
        }
        input.clear();
        input.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(bytes: &[u8]) -> Result<Reply, ReadError> {
        read_reply(&mut &bytes[..])
    }

    #[test]
    fn a_reply_is_read_by_its_length_its_chunks_or_to_the_close() {
        let sized = reply(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}{}extra").unwrap();
        assert_eq!((sized.status, sized.body.as_slice()), (200, &b"{}{}"[..]));
        let chunked = reply(
            b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.status_line, "HTTP/1.1 401 Unauthorized");
        assert_eq!(chunked.body, b"{}");
        let closed = reply(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!(closed.body, br#"{"a":1}"#);
    }

    #[test]
    fn a_short_oversized_or_foreign_reply_is_an_error() {
        let short = reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}");
        assert!(matches!(short, Err(ReadError::Api(ApiError::BadReply(_)))));
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let huge = reply(huge.as_bytes());
        assert!(matches!(huge, Err(ReadError::Api(ApiError::TooLarge))));
        let chunk = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_BODY + 1
        );
        let chunk = reply(chunk.as_bytes());
        assert!(matches!(chunk, Err(ReadError::Api(ApiError::TooLarge))));
        let foreign = reply(b"SSH-2.0-OpenSSH\r\n\r\n");
        assert!(matches!(
            foreign,
            Err(ReadError::Api(ApiError::BadReply(_)))
        ));
    }
}
