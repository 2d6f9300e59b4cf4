//! `roomcast connect URL`: a small interactive WebSocket client for the
//! terminal, so that the example `serve` prints works with nothing else
//! installed. Each line typed is sent as one text message (a JSON envelope
//! or the bare `ping`); each message received is printed on a line of its
//! own, prefixed `< `.
//!
//! Blocking std sockets and two threads (stdin, the socket): this is a tool
//! for a person, not part of the server. Frames come from `ws::frame`; the
//! opening handshake is checked against `ws::handshake::accept_key`.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use crate::ws::frame::{OpCode, encode_masked_frame, parse_header};

/// Most bytes of a message printed; longer ones are cut with a note.
const MAX_SHOWN: usize = 64 * 1024;

/// Why `roomcast connect` stopped.
#[derive(Debug)]
pub enum ConnectError {
    /// Not `ws://host[:port]/path`.
    Url(&'static str),
    Io(io::Error),
    /// The server answered the upgrade with something else than 101.
    Refused(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Url(why) => write!(f, "not a ws:// URL: {why}"),
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Refused(head) => write!(f, "the server refused the upgrade: {head}"),
        }
    }
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        ConnectError::Io(e)
    }
}

/// A `ws://` URL split into what the connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `host:port`, for connecting and the `Host` header.
    pub authority: String,
    /// Path and query, at least `/`.
    pub target: String,
}

/// Reads `ws://host[:port][/path][?query]`; `wss://` is refused (no TLS yet).
pub fn parse_url(url: &str) -> Result<WsUrl, ConnectError> {
    if url.starts_with("wss://") {
        return Err(ConnectError::Url("wss:// (TLS) is not supported yet"));
    }
    let rest = url
        .strip_prefix("ws://")
        .ok_or(ConnectError::Url("it must start with ws://"))?;
    let (authority, target) = match rest.find(['/', '?']) {
        Some(at) if rest.as_bytes()[at] == b'?' => (&rest[..at], format!("/{}", &rest[at..])),
        Some(at) => (&rest[..at], rest[at..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() {
        return Err(ConnectError::Url("no host"));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        || authority.ends_with(']') && authority.starts_with('[')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(WsUrl { authority, target })
}

/// Connects, then relays stdin lines out and messages in until either side
/// closes. Returns the close code the server sent, if any.
pub fn run(url: &str, token: Option<&str>) -> Result<Option<u16>, ConnectError> {
    let url = parse_url(url)?;
    let addr = url
        .authority
        .to_socket_addrs()?
        .next()
        .ok_or(ConnectError::Url("the host has no address"))?;
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut input = handshake(&mut stream, &url, token)?;
    eprintln!("connected to ws://{}{}", url.authority, redact(&url.target));
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    let stdin_writer = writer.clone();
    std::thread::spawn(move || send_lines(&stdin_writer));
    let code = receive(&mut stream, &mut input, &writer)?;
    Ok(code)
}

/// The path with its `token=` value hidden, for printing.
fn redact(target: &str) -> String {
    match target.find("token=") {
        Some(at) => {
            let end = target[at..].find('&').map_or(target.len(), |e| at + e);
            format!("{}token=...{}", &target[..at], &target[end..])
        }
        None => target.to_owned(),
    }
}

/// Sends the upgrade and reads the response head; returns what followed it.
fn handshake(
    stream: &mut TcpStream,
    url: &WsUrl,
    token: Option<&str>,
) -> Result<Vec<u8>, ConnectError> {
    let key = base64_key();
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        url.target, url.authority
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let (mut input, end) =
        crate::http::client::read_head(stream).map_err(|e| ConnectError::Refused(e.to_string()))?;
    let head = String::from_utf8_lossy(&input[..end]).into_owned();
    let expected = crate::ws::handshake::accept_key(&key);
    let accepted = head.starts_with("HTTP/1.1 101")
        && head.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("sec-websocket-accept:") && l.ends_with(&expected)
        });
    if !accepted {
        let mut body = input[end..].to_vec();
        let _ = stream.read_to_end(&mut body);
        let status = head.lines().next().unwrap_or_default();
        return Err(ConnectError::Refused(format!(
            "{status} {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    Ok(input.split_off(end))
}

fn base64_key() -> String {
    use base64::Engine;
    let bytes = crate::auth::random_u64().to_le_bytes();
    let more = crate::auth::random_u64().to_le_bytes();
    let key: Vec<u8> = bytes.iter().chain(&more).copied().collect();
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Writes one client frame (masked with a fresh key, as RFC 6455 asks).
fn write_frame(writer: &Mutex<TcpStream>, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
    let mask = (crate::auth::random_u64() as u32).to_be_bytes();
    let mut out = Vec::with_capacity(payload.len() + 14);
    encode_masked_frame(true, opcode, payload, mask, &mut out);
    let mut stream = writer
        .lock()
        .map_err(|_| io::Error::other("writer poisoned"))?;
    stream.write_all(&out)
}

/// Every stdin line becomes a text message; at EOF the connection is closed.
fn send_lines(writer: &Mutex<TcpStream>) {
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.is_empty() {
            continue;
        }
        if write_frame(writer, OpCode::Text, line.as_bytes()).is_err() {
            return;
        }
    }
    let _ = write_frame(writer, OpCode::Close, &1000u16.to_be_bytes());
}

/// Prints every message until the server closes; answers pings.
fn receive(
    stream: &mut TcpStream,
    input: &mut Vec<u8>,
    writer: &Mutex<TcpStream>,
) -> Result<Option<u16>, ConnectError> {
    let mut chunk = [0u8; 16 * 1024];
    let mut stdout = io::stdout();
    loop {
        while let Ok(Some(header)) = parse_header(input) {
            let len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
            let Some(end) = header
                .header_len
                .checked_add(len)
                .filter(|&e| e <= input.len())
            else {
                break;
            };
            let payload = input[header.header_len..end].to_vec();
            input.drain(..end);
            match header.opcode {
                OpCode::Text | OpCode::Binary => {
                    let shown = &payload[..payload.len().min(MAX_SHOWN)];
                    let cut = if payload.len() > MAX_SHOWN {
                        " [cut]"
                    } else {
                        ""
                    };
                    writeln!(stdout, "< {}{cut}", String::from_utf8_lossy(shown))?;
                    stdout.flush()?;
                }
                OpCode::Ping => write_frame(writer, OpCode::Pong, &payload)?,
                OpCode::Close => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    eprintln!(
                        "closed {} {reason}",
                        code.map_or("(no code)".into(), |c| c.to_string())
                    );
                    let _ = write_frame(writer, OpCode::Close, &payload[..payload.len().min(2)]);
                    return Ok(code);
                }
                _ => {}
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            eprintln!("the connection closed without a close frame");
            return Ok(None);
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ws_url_gives_its_address_and_target() {
        let url = parse_url("ws://127.0.0.1:8080/ws?token=abc").unwrap();
        assert_eq!(url.authority, "127.0.0.1:8080");
        assert_eq!(url.target, "/ws?token=abc");
        assert_eq!(
            parse_url("ws://example.com").unwrap().authority,
            "example.com:80"
        );
        assert_eq!(parse_url("ws://h:1?x").unwrap().target, "/?x");
        assert_eq!(parse_url("ws://[::1]:9/a").unwrap().authority, "[::1]:9");
        assert!(parse_url("http://h/").is_err());
        assert!(parse_url("wss://h/").is_err());
        assert!(parse_url("ws:///ws").is_err());
    }

    #[test]
    fn the_token_is_not_printed() {
        assert_eq!(redact("/ws?token=secret"), "/ws?token=...");
        assert_eq!(redact("/ws?a=1&token=s&b=2"), "/ws?a=1&token=...&b=2");
        assert_eq!(redact("/ws"), "/ws");
    }
}
