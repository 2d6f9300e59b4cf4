//! Incremental, bounded parsing of an HTTP/1.x request head.
//!
//! Owns: finding the end of the head in a growing buffer (`HeadReader`), the
//! syntax of the request line and header fields, and zero-copy access to
//! them (`Request`). Never allocates: headers live in a fixed-size array of
//! at most `MAX_HEADERS` entries borrowed from the input.
//!
//! Must not touch: sockets, bodies (the caller reads `Content-Length` bytes
//! after the head), routing, or anything WebSocket-specific.
//!
//! Decisions (RFC 9112 leaves them to the recipient):
//! - Lines end with `\r\n` only. A bare `\n` or a bare `\r` is rejected with
//!   `BadLineEnding`, so there is exactly one way to find the end of a head
//!   and no room for request smuggling through ambiguous line ends.
//! - Empty lines before the request line are not skipped.
//! - obs-fold (a header line starting with SP or HTAB) is rejected.
//! - A missing `Host` header is tolerated (hand-written load generators and
//!   test clients often omit it); roomcast never routes on it.
//! - The request target may be origin-form (`/path?query`), absolute-form
//!   (`http://host/path?query`, reduced to its path and query) or `*`.

use crate::codes::ErrorCode;
use crate::codes::limits::MAX_HEADERS;
use std::fmt;

/// Why a request head is not valid HTTP/1.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequestReason {
    /// The request line is not `METHOD SP target SP HTTP/1.x`.
    BadRequestLine,
    /// The version is well-formed but not HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// A header line has a bad name, no colon, a forbidden byte, a value
    /// that is not UTF-8, or is an obs-fold continuation.
    BadHeader,
    /// A `\n` without `\r` before it, or a `\r` without `\n` after it.
    BadLineEnding,
    /// `Content-Length` is not a decimal number, or its copies disagree.
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    AmbiguousLength,
}

impl BadRequestReason {
    /// A short human-readable message for the error response body.
    pub const fn message(self) -> &'static str {
        match self {
            Self::BadRequestLine => "malformed request line",
            Self::UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported",
            Self::BadHeader => "malformed header field",
            Self::BadLineEnding => "lines must end with CRLF",
            Self::BadContentLength => "invalid Content-Length",
            Self::AmbiguousLength => "both Content-Length and Transfer-Encoding are present",
        }
    }
}

/// Why a request head could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// More than `max_header_bytes` arrived without the end of the head.
    HeadersTooLarge,
    /// More than `MAX_HEADERS` header lines: over a limit, like the size.
    TooManyHeaders,
    /// The head is not valid HTTP/1.x.
    BadRequest(BadRequestReason),
}

impl ParseError {
    /// The error code that answers this failure (431 or 400).
    pub const fn code(self) -> ErrorCode {
        match self {
            Self::HeadersTooLarge | Self::TooManyHeaders => ErrorCode::HeadersTooLarge,
            Self::BadRequest(_) => ErrorCode::BadRequest,
        }
    }

    /// A short human-readable message for the error response body.
    pub const fn message(self) -> &'static str {
        match self {
            Self::HeadersTooLarge => "request headers are too large",
            Self::TooManyHeaders => "more than 64 header fields",
            Self::BadRequest(reason) => reason.message(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ParseError {}

fn bad(reason: BadRequestReason) -> ParseError {
    ParseError::BadRequest(reason)
}

/// How a request's body is framed (RFC 9112 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Neither `Content-Length` nor `Transfer-Encoding`.
    Unframed,
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`, the only coding.
    Chunked,
    /// Any other `Transfer-Encoding` (a coding roomcast does not decode, a
    /// list of codings, or any on HTTP/1.0, where RFC 9112 section 6.1
    /// makes the framing faulty).
    UnsupportedCoding,
}

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

#[derive(Clone, Copy, Default)]
struct Header<'a> {
    name: &'a str,
    value: &'a str,
}

/// A parsed request head, borrowing every string from the input buffer.
#[derive(Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// What follows the first `?` of the target, if there is one.
    pub query: Option<&'a str>,
    pub version: Version,
    headers: [Header<'a>; MAX_HEADERS],
    header_count: usize,
}

// Hand-written so that logging a request never prints a token: header values
// (Authorization) and the query (`?token=`) are left out.
impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.header_pairs().map(|(name, _)| name).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("has_query", &self.query.is_some())
            .field("version", &self.version)
            .field("header_names", &names)
            .finish()
    }
}

impl<'a> Request<'a> {
    /// The first value of header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers(name).next()
    }

    /// Every value of header `name` (case-insensitive), in order, trimmed.
    pub fn headers(&self, name: &str) -> impl Iterator<Item = &'a str> {
        self.header_pairs()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Every header as `(name, value)`, in the order received.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let used = self.headers.get(..self.header_count).unwrap_or(&[]);
        used.iter().map(|h| (h.name, h.value))
    }

    /// Whether any occurrence of header `name` holds `token` in its
    /// comma-separated list, both compared case-insensitively
    /// (`Connection: keep-alive, Upgrade`).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers(name)
            .flat_map(|value| value.split(','))
            .any(|item| trim_ows(item).eq_ignore_ascii_case(token))
    }

    /// The value of the first `key=value` pair of the query (`key` compared
    /// exactly; a bare `key` gives `""`).
    ///
    /// The value is returned raw, without percent-decoding: that keeps it
    /// zero-copy, and the values read here (base64url tokens) consist of
    /// unreserved characters that no client encodes.
    pub fn query_param(&self, key: &str) -> Option<&'a str> {
        self.query?
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| *k == key)
            .map(|(_, value)| value)
    }

    /// The token of a request (`docs/protocol.md` section 2):
    /// `Authorization: Bearer <jwt>`, else the query's `token=`. An
    /// `Authorization` header with another scheme is not ours (a proxy's
    /// Basic auth, say), so the query is used then.
    pub fn token(&self) -> Option<&'a str> {
        self.bearer_token()
            .or_else(|| self.query_param("token").filter(|t| !t.is_empty()))
    }

    /// The token of an `Authorization: Bearer` header.
    pub fn bearer_token(&self) -> Option<&'a str> {
        let (scheme, token) = self.header("authorization")?.split_once(' ')?;
        let token = token.trim_start_matches(' ');
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }

    /// The body length announced by `Content-Length`, if any.
    ///
    /// Repeated headers or list values (`5, 5`) are accepted when they all
    /// agree. A value that is not a plain decimal number, copies that
    /// disagree, or a `Content-Length` next to `Transfer-Encoding` (a
    /// request-smuggling vector, RFC 9112 section 6.1) are `BadRequest`.
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        let mut length = None;
        for item in self.headers("content-length").flat_map(|v| v.split(',')) {
            let parsed = parse_decimal(trim_ows(item))?;
            match length {
                Some(previous) if previous != parsed => {
                    return Err(bad(BadRequestReason::BadContentLength));
                }
                _ => length = Some(parsed),
            }
        }
        if length.is_some() && self.header("transfer-encoding").is_some() {
            return Err(bad(BadRequestReason::AmbiguousLength));
        }
        Ok(length)
    }

    /// How the body is framed; errors as for [`Request::content_length`].
    pub fn body_framing(&self) -> Result<BodyFraming, ParseError> {
        if let Some(length) = self.content_length()? {
            return Ok(BodyFraming::Length(length));
        }
        let mut codings = self
            .headers("transfer-encoding")
            .flat_map(|v| v.split(','))
            .map(trim_ows);
        Ok(match (codings.next(), codings.next()) {
            (None, _) => BodyFraming::Unframed,
            (Some(coding), None)
                if coding.eq_ignore_ascii_case("chunked") && self.version == Version::Http11 =>
            {
                BodyFraming::Chunked
            }
            _ => BodyFraming::UnsupportedCoding,
        })
    }

    /// Whether the client wants the connection kept open after the response:
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub fn wants_keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.header_has_token("connection", "close"),
            Version::Http10 => self.header_has_token("connection", "keep-alive"),
        }
    }
}

fn parse_decimal(s: &str) -> Result<usize, ParseError> {
    let invalid = bad(BadRequestReason::BadContentLength);
    if s.is_empty() {
        return Err(invalid);
    }
    s.bytes().try_fold(0usize, |acc, b| {
        let digit = match b {
            b'0'..=b'9' => usize::from(b - b'0'),
            _ => return Err(invalid),
        };
        acc.checked_mul(10)
            .and_then(|n| n.checked_add(digit))
            .ok_or(invalid)
    })
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Finds the end of a request head in a buffer that grows between calls,
/// remembering how far it has scanned so each call costs O(new bytes).
///
/// The buffer passed to successive calls must keep the bytes of the earlier
/// calls as its prefix. Call [`HeadReader::reset`] after consuming a head
/// (keep-alive) before parsing the next one.
#[derive(Debug, Default)]
pub struct HeadReader {
    /// Every `\n` before this offset has been checked and none ended the head.
    scanned: usize,
}

impl HeadReader {
    /// Forgets the scan position, for the next request on the connection.
    pub fn reset(&mut self) {
        self.scanned = 0;
    }

    /// `Ok(None)`: the head is not complete yet (and `buf` is still no longer
    /// than `max_header_bytes`). `Ok(Some((request, head_len)))`: the head
    /// ends at `head_len` (the body or the next request, if any, follows).
    /// `Err(HeadersTooLarge)` as soon as more than `max_header_bytes` arrived
    /// without the end of the head. Bytes past `max_header_bytes` are never
    /// read.
    pub fn parse<'a>(
        &mut self,
        buf: &'a [u8],
        max_header_bytes: usize,
    ) -> Result<Option<(Request<'a>, usize)>, ParseError> {
        match self.find_head_end(buf, max_header_bytes)? {
            Some(head_len) => {
                let head = buf.get(..head_len).unwrap_or(&[]);
                parse_head(head).map(|request| Some((request, head_len)))
            }
            None if buf.len() > max_header_bytes => Err(ParseError::HeadersTooLarge),
            None => Ok(None),
        }
    }

    /// The length of the head (up to and including `\r\n\r\n`) if it ends
    /// within the first `max_header_bytes` bytes.
    fn find_head_end(
        &mut self,
        buf: &[u8],
        max_header_bytes: usize,
    ) -> Result<Option<usize>, ParseError> {
        // A shorter buffer than last time means the caller started over.
        if self.scanned > buf.len() {
            self.scanned = 0;
        }
        let window = buf.get(..buf.len().min(max_header_bytes)).unwrap_or(&[]);
        let mut i = self.scanned;
        while let Some(offset) = window
            .get(i..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            let lf = i + offset;
            if lf == 0 || window.get(lf - 1) != Some(&b'\r') {
                return Err(bad(BadRequestReason::BadLineEnding));
            }
            if lf >= 3 && window.get(lf - 3..=lf) == Some(b"\r\n\r\n".as_slice()) {
                return Ok(Some(lf + 1));
            }
            i = lf + 1;
        }
        // Every `\n` so far is checked; a later one looks back at most three
        // bytes, which stay in the buffer, so nothing needs rescanning.
        self.scanned = window.len();
        Ok(None)
    }
}

/// Parses a complete head ending in `\r\n\r\n` whose `\n`s are all preceded
/// by `\r` (checked by `find_head_end`).
fn parse_head(head: &[u8]) -> Result<Request<'_>, ParseError> {
    let body = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    let mut lines = body
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().unwrap_or(&[]);
    let mut request = parse_request_line(request_line)?;
    for line in lines {
        let header = parse_header_line(line)?;
        let slot = request
            .headers
            .get_mut(request.header_count)
            .ok_or(ParseError::TooManyHeaders)?;
        *slot = header;
        request.header_count += 1;
    }
    Ok(request)
}

fn parse_request_line(line: &[u8]) -> Result<Request<'_>, ParseError> {
    let invalid = bad(BadRequestReason::BadRequestLine);
    if line.contains(&b'\r') {
        return Err(bad(BadRequestReason::BadLineEnding));
    }
    let line = std::str::from_utf8(line).map_err(|_| invalid)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid);
    };
    if !is_token(method) || target.is_empty() || !target.bytes().all(is_visible_ascii) {
        return Err(invalid);
    }
    let version = parse_version(version)?;
    let (path, query) = split_target(target).ok_or(invalid)?;
    Ok(Request {
        method,
        path,
        query,
        version,
        headers: [Header::default(); MAX_HEADERS],
        header_count: 0,
    })
}

fn parse_version(version: &str) -> Result<Version, ParseError> {
    match version.as_bytes() {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(bad(BadRequestReason::UnsupportedVersion))
        }
        _ => Err(bad(BadRequestReason::BadRequestLine)),
    }
}

/// Splits a request target into path and query; `None` if it is not
/// origin-form, absolute-form or `*`.
fn split_target(target: &str) -> Option<(&str, Option<&str>)> {
    let path_and_query = if target.starts_with('/') || target == "*" {
        target
    } else {
        strip_scheme_and_authority(target)?
    };
    Some(match path_and_query.split_once('?') {
        Some((path, query)) => (path_or_root(path), Some(query)),
        None => (path_or_root(path_and_query), None),
    })
}

/// `http://host:port/p?q` -> `/p?q`; `http://host?q` -> `?q`.
fn strip_scheme_and_authority(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if authority_end == 0 {
        return None;
    }
    rest.get(authority_end..)
}

fn path_or_root(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

fn parse_header_line(line: &[u8]) -> Result<Header<'_>, ParseError> {
    let invalid = bad(BadRequestReason::BadHeader);
    if line.contains(&b'\r') {
        return Err(bad(BadRequestReason::BadLineEnding));
    }
    // No whitespace is allowed before the colon, and a line starting with
    // whitespace is obs-fold: both fail the token check on the name.
    let colon = line.iter().position(|&b| b == b':').ok_or(invalid)?;
    let (name, value) = (
        line.get(..colon).unwrap_or(&[]),
        line.get(colon + 1..).unwrap_or(&[]),
    );
    let name = std::str::from_utf8(name).map_err(|_| invalid)?;
    if !is_token(name) || !value.iter().copied().all(is_field_value_byte) {
        return Err(invalid);
    }
    let value = std::str::from_utf8(value).map_err(|_| invalid)?;
    Ok(Header {
        name,
        value: trim_ows(value),
    })
}

/// RFC 9110 `token`: one or more tchar.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_visible_ascii(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// SP, HTAB, VCHAR and obs-text; excludes NUL, the other controls and DEL.
fn is_field_value_byte(b: u8) -> bool {
    b == b' ' || b == b'\t' || is_visible_ascii(b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 8 * 1024;

    fn parse_all(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, ParseError> {
        HeadReader::default().parse(buf, MAX)
    }

    fn parse_ok(buf: &[u8]) -> (Request<'_>, usize) {
        match parse_all(buf) {
            Ok(Some(parsed)) => parsed,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn parse_err(buf: &[u8]) -> ParseError {
        match parse_all(buf) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const UPGRADE: &[u8] = b"GET /ws?token=abc.def-_.ghi&x=1 HTTP/1.1\r\n\
        Host: example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        X-Empty:\r\n\
        X-Multi: a\r\n\
        x-multi:  b \t\r\n\
        \r\n";

    #[test]
    fn parses_a_websocket_upgrade() {
        let (req, len) = parse_ok(UPGRADE);
        assert_eq!(len, UPGRADE.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/ws");
        assert_eq!(req.query, Some("token=abc.def-_.ghi&x=1"));
        assert_eq!(req.version, Version::Http11);
        assert_eq!(req.header("HOST"), Some("example.com"));
        assert_eq!(req.header("x-empty"), Some(""));
        assert_eq!(req.header("missing"), None);
        assert_eq!(req.headers("X-MULTI").collect::<Vec<_>>(), ["a", "b"]);
        assert!(req.header_has_token("connection", "upgrade"));
        assert!(req.header_has_token("Connection", "KEEP-ALIVE"));
        assert!(!req.header_has_token("connection", "close"));
        assert_eq!(req.query_param("token"), Some("abc.def-_.ghi"));
        assert_eq!(req.query_param("x"), Some("1"));
        assert_eq!(req.query_param("tok"), None);
        assert_eq!(req.content_length(), Ok(None));
        assert!(req.wants_keep_alive());
    }

    #[test]
    fn parses_http_1_0_and_other_targets() {
        let (req, _) = parse_ok(b"GET http://example.com:8080/stats?a HTTP/1.0\r\n\r\n");
        assert_eq!(
            (req.path, req.query, req.version),
            ("/stats", Some("a"), Version::Http10)
        );
        assert!(!req.wants_keep_alive());
        let (req, _) = parse_ok(b"GET http://example.com HTTP/1.1\r\n\r\n");
        assert_eq!((req.path, req.query), ("/", None));
        let (req, _) = parse_ok(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!(req.path, "*");
        let (req, _) = parse_ok(b"GET /?k HTTP/1.1\r\n\r\n");
        assert_eq!((req.path, req.query_param("k")), ("/", Some("")));
    }

    #[test]
    fn the_token_comes_from_a_bearer_header_else_the_query() {
        fn token(head: &str) -> Option<&str> {
            parse_ok(head.as_bytes()).0.token()
        }
        assert_eq!(
            token("GET /?token=q HTTP/1.1\r\nAuthorization: bearer  h\r\n\r\n"),
            Some("h")
        );
        assert_eq!(
            token("GET /?token=q HTTP/1.1\r\nAuthorization: Basic h\r\n\r\n"),
            Some("q")
        );
        assert_eq!(
            token("GET /?token= HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n"),
            None
        );
        assert_eq!(token("GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn debug_output_hides_header_values_and_query() {
        let (req, _) =
            parse_ok(b"GET /ws?token=SECRET HTTP/1.1\r\nAuthorization: Bearer SECRET\r\n\r\n");
        let debug = format!("{req:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("Authorization"));
    }

    #[test]
    fn byte_by_byte_feeding_matches_all_at_once() {
        let mut reader = HeadReader::default();
        for end in 0..UPGRADE.len() {
            assert_eq!(
                reader.parse(&UPGRADE[..end], MAX).map(|r| r.is_none()),
                Ok(true),
                "at {end}"
            );
        }
        let (req, len) = reader.parse(UPGRADE, MAX).unwrap().unwrap();
        let (whole, whole_len) = parse_ok(UPGRADE);
        assert_eq!(len, whole_len);
        assert_eq!(req.method, whole.method);
        assert_eq!(req.path, whole.path);
        assert_eq!(req.query, whole.query);
        assert!(req.header_pairs().eq(whole.header_pairs()));
    }

    #[test]
    fn pipelined_bytes_after_the_head_are_not_consumed() {
        let mut buf = b"POST /publish HTTP/1.1\r\nContent-Length: 5\r\n\r\n".to_vec();
        let head_len = buf.len();
        buf.extend_from_slice(b"hello");
        buf.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
        let (req, len) = parse_ok(&buf);
        assert_eq!(len, head_len);
        assert_eq!(req.content_length(), Ok(Some(5)));
        let (next, next_len) = parse_ok(&buf[head_len + 5..]);
        assert_eq!((next.path, next_len), ("/healthz", 25));
    }

    #[test]
    fn reset_and_shrinking_buffers_start_over() {
        let mut reader = HeadReader::default();
        assert_eq!(
            reader
                .parse(b"GET / HTTP/1.1\r\nHost: aaaaaaaa", MAX)
                .map(|r| r.is_none()),
            Ok(true)
        );
        reader.reset();
        assert!(
            reader
                .parse(b"GET / HTTP/1.1\r\n\r\n", MAX)
                .unwrap()
                .is_some()
        );
        let mut reader = HeadReader::default();
        assert!(
            reader
                .parse(b"GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaa", MAX)
                .unwrap()
                .is_none()
        );
        assert!(
            reader
                .parse(b"GET / HTTP/1.1\r\n\r\n", MAX)
                .unwrap()
                .is_some()
        );
    }

    fn head_of_len(len: usize) -> Vec<u8> {
        let prefix = b"GET / HTTP/1.1\r\nX-Pad: ";
        let mut head = prefix.to_vec();
        head.resize(len - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    #[test]
    fn headers_too_large_exactly_at_the_bound() {
        let bound = 200;
        let under = head_of_len(bound - 1);
        assert_eq!(
            HeadReader::default()
                .parse(&under, bound)
                .unwrap()
                .map(|r| r.1),
            Some(bound - 1)
        );
        let exact = head_of_len(bound);
        assert_eq!(
            HeadReader::default()
                .parse(&exact, bound)
                .unwrap()
                .map(|r| r.1),
            Some(bound)
        );
        let over = head_of_len(bound + 1);
        assert_eq!(
            HeadReader::default().parse(&over, bound).unwrap_err(),
            ParseError::HeadersTooLarge
        );
        let incomplete = &over[..bound];
        assert!(
            HeadReader::default()
                .parse(incomplete, bound)
                .unwrap()
                .is_none()
        );
        let incomplete = &over[..bound + 1];
        assert_eq!(
            HeadReader::default().parse(incomplete, bound).unwrap_err(),
            ParseError::HeadersTooLarge
        );
        assert_eq!(
            ParseError::HeadersTooLarge.code(),
            ErrorCode::HeadersTooLarge
        );
    }

    #[test]
    fn too_many_headers() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut ok = head.clone();
        ok.extend_from_slice(b"\r\n");
        assert_eq!(parse_ok(&ok).0.header_pairs().count(), MAX_HEADERS);
        head.extend_from_slice(b"X-Last: v\r\n\r\n");
        assert_eq!(parse_err(&head), ParseError::TooManyHeaders);
        assert_eq!(parse_err(&head).code(), ErrorCode::HeadersTooLarge);
        assert!(
            ParseError::TooManyHeaders
                .message()
                .contains(&MAX_HEADERS.to_string())
        );
    }

    #[test]
    fn bad_request_lines() {
        use BadRequestReason::*;
        let cases: &[(&[u8], BadRequestReason)] = &[
            (b"\r\n\r\n", BadRequestLine),
            (b"GET\r\n\r\n", BadRequestLine),
            (b"GET /\r\n\r\n", BadRequestLine),
            (b"GET  / HTTP/1.1\r\n\r\n", BadRequestLine),
            (b"GET / HTTP/1.1 \r\n\r\n", BadRequestLine),
            (b"G(T / HTTP/1.1\r\n\r\n", BadRequestLine),
            (b"GET nopath HTTP/1.1\r\n\r\n", BadRequestLine),
            (b"GET ftp://x/ HTTP/1.1\r\n\r\n", BadRequestLine),
            (b"GET /\x7f HTTP/1.1\r\n\r\n", BadRequestLine),
            (b"GET / HTTP/1.1x\r\n\r\n", BadRequestLine),
            (b"GET / http/1.1\r\n\r\n", BadRequestLine),
            (b"GET / HTTP/2.0\r\n\r\n", UnsupportedVersion),
            (b"GET / HTTP/0.9\r\n\r\n", UnsupportedVersion),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", BadRequestLine),
        ];
        for (input, reason) in cases {
            assert_eq!(
                parse_err(input),
                bad(*reason),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn bad_headers_and_line_ends() {
        use BadRequestReason::*;
        let cases: &[(&[u8], BadRequestReason)] = &[
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", BadHeader),
            (b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n", BadHeader),
            (b"GET / HTTP/1.1\r\nName : space\r\n\r\n", BadHeader),
            (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", BadHeader),
            (b"GET / HTTP/1.1\r\nA: b\r\n\tfolded\r\n\r\n", BadHeader),
            (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", BadHeader),
            (b"GET / HTTP/1.1\r\nA: b\x7fc\r\n\r\n", BadHeader),
            (b"GET / HTTP/1.1\r\nA: \xff\xfe\r\n\r\n", BadHeader),
            (b"GET / HTTP/1.1\r\nA\x01: b\r\n\r\n", BadHeader),
            (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", BadLineEnding),
            (b"GET / HTTP/1.1\nA: b\r\n\r\n", BadLineEnding),
            (b"GET / HTTP/1.1\r\n\n", BadLineEnding),
            (b"\n", BadLineEnding),
        ];
        for (input, reason) in cases {
            assert_eq!(
                parse_err(input),
                bad(*reason),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // UTF-8 (obs-text) values are fine.
        assert_eq!(
            parse_ok("GET / HTTP/1.1\r\nX-Name: Zoë\r\n\r\n".as_bytes())
                .0
                .header("x-name"),
            Some("Zoë")
        );
    }

    #[test]
    fn bare_lf_fails_before_the_head_is_complete() {
        assert_eq!(
            parse_err(b"GET / HTTP/1.1\n"),
            bad(BadRequestReason::BadLineEnding)
        );
    }

    fn content_length_of(headers: &str) -> Result<Option<usize>, ParseError> {
        let head = format!("POST /publish HTTP/1.1\r\n{headers}\r\n");
        let (req, _) = parse_ok(head.as_bytes());
        req.content_length()
    }

    #[test]
    fn content_length_edge_cases() {
        let invalid = Err(bad(BadRequestReason::BadContentLength));
        assert_eq!(content_length_of(""), Ok(None));
        assert_eq!(content_length_of("Content-Length: 0\r\n"), Ok(Some(0)));
        assert_eq!(content_length_of("content-length:  42 \r\n"), Ok(Some(42)));
        assert_eq!(content_length_of("Content-Length: 007\r\n"), Ok(Some(7)));
        assert_eq!(
            content_length_of("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Ok(Some(5))
        );
        assert_eq!(content_length_of("Content-Length: 5, 5\r\n"), Ok(Some(5)));
        assert_eq!(
            content_length_of("Content-Length: 5\r\nContent-Length: 6\r\n"),
            invalid
        );
        assert_eq!(content_length_of("Content-Length: 5, 6\r\n"), invalid);
        assert_eq!(content_length_of("Content-Length: \r\n"), invalid);
        assert_eq!(content_length_of("Content-Length: -1\r\n"), invalid);
        assert_eq!(content_length_of("Content-Length: +1\r\n"), invalid);
        assert_eq!(content_length_of("Content-Length: 1 2\r\n"), invalid);
        assert_eq!(content_length_of("Content-Length: 0x10\r\n"), invalid);
        assert_eq!(
            content_length_of("Content-Length: 99999999999999999999999\r\n"),
            invalid
        );
        assert_eq!(
            content_length_of("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            Err(bad(BadRequestReason::AmbiguousLength))
        );
        assert_eq!(
            content_length_of("Transfer-Encoding: chunked\r\n"),
            Ok(None)
        );
    }

    #[test]
    fn body_framing_from_length_or_coding() {
        let framing = |headers: &str| {
            let head = format!("POST /publish HTTP/1.1\r\n{headers}\r\n");
            parse_ok(head.as_bytes()).0.body_framing()
        };
        assert_eq!(framing(""), Ok(BodyFraming::Unframed));
        assert_eq!(framing("Content-Length: 3\r\n"), Ok(BodyFraming::Length(3)));
        assert_eq!(
            framing("Transfer-Encoding: Chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
        for coding in [
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "chunked\r\nTransfer-Encoding: gzip",
        ] {
            assert_eq!(
                framing(&format!("Transfer-Encoding: {coding}\r\n")),
                Ok(BodyFraming::UnsupportedCoding),
                "{coding}"
            );
        }
        assert_eq!(
            framing("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
            Err(bad(BadRequestReason::AmbiguousLength))
        );
        let (old, _) = parse_ok(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(old.body_framing(), Ok(BodyFraming::UnsupportedCoding));
    }

    #[test]
    fn error_messages_are_short_and_fixed() {
        assert_eq!(
            ParseError::HeadersTooLarge.to_string(),
            "request headers are too large"
        );
        assert_eq!(
            ParseError::TooManyHeaders.to_string(),
            "more than 64 header fields"
        );
    }

    fn header_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}"
    }

    fn header_value() -> impl Strategy<Value = String> {
        "[!-~]([ -~]{0,30}[!-~])?|"
    }

    proptest! {
        #[test]
        fn arbitrary_split_bytes_never_panic_or_pass_the_bound(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            splits in proptest::collection::vec(0usize..600, 0..6),
            bound in 0usize..400,
        ) {
            let mut reader = HeadReader::default();
            let mut cuts: Vec<usize> = splits.into_iter().map(|s| s.min(bytes.len())).collect();
            cuts.sort_unstable();
            cuts.push(bytes.len());
            for cut in cuts {
                match reader.parse(&bytes[..cut], bound) {
                    Ok(Some((_, head_len))) => {
                        prop_assert!(head_len <= bound && head_len <= cut);
                        break;
                    }
                    Ok(None) => prop_assert!(cut <= bound),
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn valid_requests_round_trip(
            method in "[A-Z]{1,10}",
            path in "/[A-Za-z0-9._~/-]{0,30}",
            query in proptest::option::of("[A-Za-z0-9=&._-]{0,30}"),
            headers in proptest::collection::vec((header_name(), header_value()), 0..MAX_HEADERS),
            split in 0usize..2000,
        ) {
            let mut head = format!("{method} {path}");
            if let Some(q) = &query {
                head.push('?');
                head.push_str(q);
            }
            head.push_str(" HTTP/1.1\r\n");
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let bytes = head.as_bytes();
            let mut reader = HeadReader::default();
            let split = split.min(bytes.len() - 1);
            prop_assert!(reader.parse(&bytes[..split], MAX).unwrap().is_none());
            let (req, len) = reader.parse(bytes, MAX).unwrap().unwrap();
            prop_assert_eq!(len, bytes.len());
            prop_assert_eq!(req.method, method.as_str());
            prop_assert_eq!(req.path, path.as_str());
            prop_assert_eq!(req.query, query.as_deref());
            let parsed: Vec<(&str, &str)> = req.header_pairs().collect();
            let expected: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            prop_assert_eq!(parsed, expected);
        }
    }
}
