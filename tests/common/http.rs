//! A raw HTTP/1.1 client: exact bytes out, status, headers and body back.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::READ_TIMEOUT;

/// The `Sec-WebSocket-Key` of RFC 6455's example (base64 of 16 bytes).
pub const TEST_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Response head (and body, when the response has one).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `error.code` of a JSON error body; panics on any other body.
    pub fn error_code(&self) -> String {
        let v = super::parse_json(&self.body);
        super::json_str(&v, &["error", "code"])
            .unwrap_or_else(|| panic!("no error.code in body {:?}", self.body))
            .to_owned()
    }

    /// Asserts status, error code, a message string and `Connection: close`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status of {self:?}");
        assert_eq!(self.error_code(), code, "error code of {self:?}");
        let v = super::parse_json(&self.body);
        assert!(
            super::json_str(&v, &["error", "message"]).is_some(),
            "error.message missing in {:?}",
            self.body
        );
        assert_content_type_json(self);
    }
}

fn assert_content_type_json(resp: &HttpResponse) {
    let ct = resp.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "Content-Type {ct:?} in {resp:?}"
    );
}

/// A WebSocket upgrade request, valid unless a test changes it.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl UpgradeRequest {
    pub fn new(target: &str) -> UpgradeRequest {
        let headers = [
            ("Host", "127.0.0.1"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", TEST_KEY),
            ("Sec-WebSocket-Version", "13"),
        ];
        UpgradeRequest {
            method: "GET".into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    /// Sets `name` to `value`, replacing any header of that name.
    pub fn header(self, name: &str, value: &str) -> Self {
        let mut req = self.without(name);
        req.headers.push((name.into(), value.into()));
        req
    }

    /// Removes every header named `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    pub fn send(&self, addr: SocketAddr) -> HttpResponse {
        http_raw(addr, &self.to_bytes())
    }
}

/// `GET path` with `Connection: close`.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    http_raw(addr, req.as_bytes())
}

/// Sends `request` verbatim on a new connection and reads one response.
/// The body is read by `Content-Length`, else to end of stream; a 101 has none.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = send_on_new_connection(addr, request);
    let (mut resp, mut body) = read_head(&mut stream);
    if resp.status != 101 {
        let want = resp
            .header("content-length")
            .map(|n| n.trim().parse::<usize>().expect("Content-Length"));
        read_body(&mut stream, &mut body, want);
        resp.body = String::from_utf8(body).expect("UTF-8 body");
    }
    resp
}

/// Sends `request` verbatim on a new connection and reads one response
/// head, whatever its `Content-Length` says (the answer to a `HEAD`, or a
/// `204`); returns it and every byte the server sent after it until it
/// closed the connection, which a bodiless response leaves empty.
pub fn http_head_and_rest(addr: SocketAddr, request: &[u8]) -> (HttpResponse, Vec<u8>) {
    let mut stream = send_on_new_connection(addr, request);
    let (resp, mut rest) = read_head(&mut stream);
    read_body(&mut stream, &mut rest, None);
    (resp, rest)
}

fn send_on_new_connection(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    // The server may answer (and close) before reading all of a bad request.
    let _ = stream.write_all(request);
    stream
}

fn read_body(stream: &mut TcpStream, body: &mut Vec<u8>, want: Option<usize>) {
    let mut chunk = [0u8; 4096];
    while want.is_none_or(|n| body.len() < n) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && want.is_none() => break,
            Err(e) => panic!("reading the response body: {e}"),
        }
    }
    if let Some(n) = want {
        assert_eq!(body.len(), n, "body shorter than Content-Length");
    }
}

/// Reads a response head; returns it and the bytes read past it.
pub fn read_head(stream: &mut TcpStream) -> (HttpResponse, Vec<u8>) {
    let mut buf = Vec::new();
    let end = read_until_head_end(stream, &mut buf);
    let resp = parse_head(&buf[..end]);
    (resp, buf[end..].to_vec())
}

/// Reads into `buf` until it holds a whole head; the head's length.
fn read_until_head_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the response head: {e}"),
        }
    }
}

/// A response head (status line, headers, blank line); the body is empty.
fn parse_head(head: &[u8]) -> HttpResponse {
    let head = std::str::from_utf8(head).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status = parts.next().and_then(|s| s.parse().ok()).expect("status");
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: String::new(),
    }
}

/// One HTTP/1.1 connection for several requests (keep-alive, pipelining):
/// responses are read one at a time, by `Content-Length`.
pub struct HttpConn {
    pub stream: TcpStream,
    /// Bytes read past the last response.
    buf: Vec<u8>,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> HttpConn {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        HttpConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    /// The next response; a `1xx` has no body.
    pub fn read_response(&mut self) -> HttpResponse {
        let mut resp = self.read_head_only();
        if resp.status >= 200 {
            let length: usize = resp
                .header("content-length")
                .expect("Content-Length")
                .parse()
                .expect("Content-Length");
            let mut chunk = [0u8; 4096];
            while self.buf.len() < length {
                match self.stream.read(&mut chunk) {
                    Ok(0) => panic!("connection closed inside a response body"),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) => panic!("reading the response body: {e}"),
                }
            }
            let body: Vec<u8> = self.buf.drain(..length).collect();
            resp.body = String::from_utf8(body).expect("UTF-8 body");
        }
        resp
    }

    /// The next response's head only, whatever its `Content-Length` says:
    /// the answer to a `HEAD`.
    pub fn read_head_only(&mut self) -> HttpResponse {
        let end = read_until_head_end(&mut self.stream, &mut self.buf);
        let resp = parse_head(&self.buf[..end]);
        self.buf.drain(..end);
        resp
    }

    /// Bytes read past the last response and not yet parsed.
    pub fn unread(&self) -> &[u8] {
        &self.buf
    }

    /// Whether the server closed the connection (EOF within the read timeout).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }
}
