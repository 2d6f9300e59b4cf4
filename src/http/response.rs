//! HTTP/1.1 responses written straight into an output buffer.
//!
//! Owns: the status line, the framing headers (`Content-Type`,
//! `Content-Length`, `Connection`), the JSON error body
//! `{"error":{"code":"...","message":"..."}}` of `docs/protocol.md`, and
//! the bodiless answers: `204 No Content` and the cut made for `HEAD`.
//!
//! Must not touch: sockets, routing decisions, or what a body means. Every
//! function appends one whole response and never allocates beyond `out`.

use crate::codes::ErrorCode;
use crate::json;

/// `{"error":{"code":"...","message":"..."}}` with the code's HTTP status and
/// `Connection: close` (every error ends the connection, protocol section 1).
/// `extra_headers` are written as given, e.g.
/// `[("Sec-WebSocket-Version", "13")]` for 426 or
/// `[("Allow", "GET, HEAD, OPTIONS")]` for 405.
pub fn write_error(
    out: &mut Vec<u8>,
    code: ErrorCode,
    message: &str,
    extra_headers: &[(&str, &str)],
) {
    let mut body = Vec::with_capacity(48 + message.len());
    write_error_body(&mut body, code, message);
    write_with_headers(out, code.http_status(), extra_headers, &body, false);
}

/// `{"success":false,"error":{"code":"...","message":"..."}}`, the error
/// body of `POST /publish` (protocol section 9), with the code's HTTP
/// status; the connection is kept open when `keep_alive`.
pub fn write_failure(
    out: &mut Vec<u8>,
    code: ErrorCode,
    message: &str,
    extra_headers: &[(&str, &str)],
    keep_alive: bool,
) {
    let mut body = Vec::with_capacity(64 + message.len());
    body.extend_from_slice(b"{\"success\":false,");
    write_error_member(&mut body, code, message);
    body.push(b'}');
    write_with_headers(out, code.http_status(), extra_headers, &body, keep_alive);
}

/// Appends `{"error":{"code":"...","message":"..."}}` to `out`.
pub fn write_error_body(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    out.push(b'{');
    write_error_member(out, code, message);
    out.push(b'}');
}

/// `"error":{"code":"...","message":"..."}`, a member of an error body.
fn write_error_member(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    out.extend_from_slice(b"\"error\":{\"code\":");
    json::write_str(out, code.as_str());
    out.extend_from_slice(b",\"message\":");
    json::write_str(out, message);
    out.push(b'}');
}

/// The interim `100 Continue`, asked for with `Expect: 100-continue`.
pub fn write_continue(out: &mut Vec<u8>) {
    write_status_line(out, 100);
    out.extend_from_slice(b"\r\n");
}

/// A response with a JSON `body` (already serialized).
pub fn write_json(out: &mut Vec<u8>, status: u16, body: &[u8], keep_alive: bool) {
    write_text(out, status, "application/json", body, keep_alive);
}

/// A response with any body, e.g. the Prometheus text format for `/metrics`.
pub fn write_text(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) {
    write_status_line(out, status);
    write_body(out, content_type, body, keep_alive);
}

/// A static file: `content_type`, cacheable for a minute, importable from
/// pages of any origin (an ES module needs CORS), `Connection: close`.
pub fn write_asset(out: &mut Vec<u8>, content_type: &str, body: &[u8]) {
    write_status_line(out, 200);
    write_header(out, "Cache-Control", "public, max-age=60");
    write_header(out, "Access-Control-Allow-Origin", "*");
    write_header(out, "X-Content-Type-Options", "nosniff");
    write_body(out, content_type, body, false);
}

/// An HTML page made for one request (it may hold a token): never cached.
pub fn write_page(out: &mut Vec<u8>, body: &[u8]) {
    write_status_line(out, 200);
    write_header(out, "Cache-Control", "no-store");
    write_header(out, "X-Content-Type-Options", "nosniff");
    write_body(out, "text/html; charset=utf-8", body, false);
}

/// `204 No Content` with `headers` (an `OPTIONS` answer's `Allow`) and
/// `Connection: close`; no `Content-Length`, which a 204 must not carry
/// (RFC 9110 8.6).
pub fn write_no_content(out: &mut Vec<u8>, headers: &[(&str, &str)]) {
    write_status_line(out, 204);
    for (name, value) in headers {
        write_header(out, name, value);
    }
    write_header(out, "Connection", "close");
    out.extend_from_slice(b"\r\n");
}

/// Cuts `response`, one whole response, after its head: the answer to a
/// `HEAD`, whose head still describes the body a `GET` would get,
/// `Content-Length` included (RFC 9110 9.3.2). A response without a
/// complete head is left as it is.
pub fn cut_body(response: &mut Vec<u8>) {
    if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(end + 4);
    }
}

/// A JSON response with `extra_headers` before the framing headers.
fn write_with_headers(
    out: &mut Vec<u8>,
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    write_status_line(out, status);
    for (name, value) in extra_headers {
        write_header(out, name, value);
    }
    write_body(out, "application/json", body, keep_alive);
}

/// `101 Switching Protocols` completing a WebSocket handshake, with the
/// subprotocol and the extensions agreed, if any (protocol sections 2, 11).
pub fn write_switching_protocols(
    out: &mut Vec<u8>,
    accept_key: &str,
    subprotocol: Option<&str>,
    extensions: Option<&str>,
) {
    write_status_line(out, 101);
    write_header(out, "Upgrade", "websocket");
    write_header(out, "Connection", "Upgrade");
    write_header(out, "Sec-WebSocket-Accept", accept_key);
    if let Some(protocol) = subprotocol {
        write_header(out, "Sec-WebSocket-Protocol", protocol);
    }
    if let Some(extensions) = extensions {
        write_header(out, "Sec-WebSocket-Extensions", extensions);
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for the statuses roomcast sends; empty (which HTTP
/// allows) for any other.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    json::write_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes `name: value\r\n`. CR and LF are dropped from both so that a
/// caller's mistake can never split the response (header injection).
fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    push_without_line_breaks(out, name);
    out.extend_from_slice(b": ");
    push_without_line_breaks(out, value);
    out.extend_from_slice(b"\r\n");
}

fn push_without_line_breaks(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|&b| b != b'\r' && b != b'\n'));
}

/// The framing headers, the blank line and the body.
fn write_body(out: &mut Vec<u8>, content_type: &str, body: &[u8], keep_alive: bool) {
    write_header(out, "Content-Type", content_type);
    out.extend_from_slice(b"Content-Length: ");
    json::write_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    write_header(
        out,
        "Connection",
        if keep_alive { "keep-alive" } else { "close" },
    );
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn error_response_has_status_json_body_and_close() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            ErrorCode::UnsupportedVersion,
            "say \"13\"",
            &[("Sec-WebSocket-Version", "13")],
        );
        let body = r#"{"error":{"code":"UNSUPPORTED_VERSION","message":"say \"13\""}}"#;
        let expected = format!(
            "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(text(&out), expected);
    }

    #[test]
    fn publish_failures_say_success_false_and_may_keep_the_connection() {
        let mut out = Vec::new();
        write_failure(&mut out, ErrorCode::Forbidden, "no", &[], true);
        let body = r#"{"success":false,"error":{"code":"FORBIDDEN","message":"no"}}"#;
        let expected = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(text(&out), expected);
        out.clear();
        write_failure(
            &mut out,
            ErrorCode::MethodNotAllowed,
            "use POST",
            &[("Allow", "POST")],
            false,
        );
        assert!(text(&out).starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: POST\r\n"));
        assert!(text(&out).contains("Connection: close\r\n"));
    }

    #[test]
    fn no_content_has_no_length_and_closes() {
        let mut out = Vec::new();
        write_no_content(&mut out, &[("Allow", "POST, OPTIONS")]);
        assert_eq!(
            text(&out),
            "HTTP/1.1 204 No Content\r\nAllow: POST, OPTIONS\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_cut_response_keeps_its_head_and_length_but_not_its_body() {
        let mut out = Vec::new();
        write_json(&mut out, 200, br#"{"status":"ok"}"#, false);
        let whole = out.clone();
        cut_body(&mut out);
        assert!(text(&out).ends_with("Content-Length: 15\r\nConnection: close\r\n\r\n"));
        assert_eq!(out.len(), whole.len() - 15);
        let mut partial = b"HTTP/1.1 200 OK\r\n".to_vec();
        cut_body(&mut partial);
        assert_eq!(partial, b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn continue_is_a_bare_status_line() {
        let mut out = Vec::new();
        write_continue(&mut out);
        assert_eq!(text(&out), "HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn json_and_text_responses() {
        let mut out = Vec::new();
        write_json(&mut out, 200, br#"{"status":"ok"}"#, true);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\
             Connection: keep-alive\r\n\r\n{\"status\":\"ok\"}"
        );
        out.clear();
        write_text(&mut out, 503, "text/plain; version=0.0.4", b"", false);
        assert_eq!(
            text(&out),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn switching_protocols_with_and_without_subprotocol() {
        let mut out = Vec::new();
        write_switching_protocols(
            &mut out,
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            Some("roomcast.v1"),
            None,
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: roomcast.v1\r\n\r\n"
        );
        out.clear();
        write_switching_protocols(&mut out, "abc", None, None);
        assert!(!text(&out).contains("Sec-WebSocket-Protocol"));
        assert!(!text(&out).contains("Sec-WebSocket-Extensions"));
        assert!(text(&out).ends_with("abc\r\n\r\n"));
        out.clear();
        write_switching_protocols(&mut out, "abc", None, Some("permessage-deflate"));
        assert!(text(&out).ends_with("Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"));
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            ErrorCode::NotFound,
            "x",
            &[("Allow", "GET\r\nSet-Cookie: a=b")],
        );
        assert!(text(&out).contains("Allow: GETSet-Cookie: a=b\r\n"));
    }

    #[test]
    fn every_error_code_has_a_reason_phrase() {
        for code in ErrorCode::ALL {
            assert!(!reason_phrase(code.http_status()).is_empty(), "{code}");
        }
        assert_eq!(reason_phrase(299), "");
    }
}
