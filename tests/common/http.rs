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
    let mut stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    // The server may answer (and close) before reading all of a bad request.
    let _ = stream.write_all(request);
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
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the response head: {e}"),
        }
    };
    let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
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
    let rest = buf[end..].to_vec();
    let resp = HttpResponse {
        status,
        headers,
        body: String::new(),
    };
    (resp, rest)
}
