//! tungstenite clients over blocking `std` sockets with read timeouts.

use std::io;
use std::net::{SocketAddr, TcpStream};

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::READ_TIMEOUT;

pub type Ws = WebSocket<TcpStream>;

/// An upgrade request for `path` carrying `token` as `Authorization: Bearer`.
pub fn ws_request(addr: SocketAddr, path: &str, token: Option<&str>) -> Request {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        req.headers_mut().insert("Authorization", value);
    }
    req
}

/// Tries the upgrade; the error carries the HTTP response when rejected.
pub fn ws_try(addr: SocketAddr, req: Request) -> Result<(Ws, Response), tungstenite::Error> {
    let stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    tungstenite::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => {
            panic!("handshake timed out after {READ_TIMEOUT:?}")
        }
    })
}

/// Connects to `path` with a bearer token; panics unless the upgrade succeeds.
pub fn ws_connect(addr: SocketAddr, path: &str, token: &str) -> Ws {
    let req = ws_request(addr, path, Some(token));
    match ws_try(addr, req) {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(resp)) => panic!(
            "upgrade to {path} refused: {} {:?}",
            resp.status(),
            resp.body().as_deref().map(String::from_utf8_lossy)
        ),
        Err(e) => panic!("upgrade to {path} failed: {e}"),
    }
}

/// The next data or close message, skipping pings and pongs.
pub fn recv(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(msg) => return msg,
            Err(e) if is_interrupted(&e) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                panic!("no message within {READ_TIMEOUT:?}")
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// The next message, which must be text.
pub fn recv_text(ws: &mut Ws) -> String {
    match recv(ws) {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The next message, which must be a JSON text.
pub fn recv_json(ws: &mut Ws) -> simd_json::OwnedValue {
    super::parse_json(&recv_text(ws))
}

/// Reads until the server's close frame and returns its code (data is
/// skipped). The close reply tungstenite queued is sent before returning.
pub fn expect_close(ws: &mut Ws) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                let _ = ws.flush();
                return frame.map_or(u16::from(CloseCode::Status), |f| u16::from(f.code));
            }
            Ok(_) => continue,
            Err(e) if is_interrupted(&e) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                panic!("no close frame within {READ_TIMEOUT:?}")
            }
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// Whether a read was interrupted and is to be made again: on Linux a
/// blocking socket read with a timeout (`SO_RCVTIMEO`) fails with `EINTR`
/// when the process is stopped and continued, even without a signal
/// handler (signal(7)), and a handler without `SA_RESTART` does the same.
pub fn is_interrupted(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e) if e.kind() == io::ErrorKind::Interrupted)
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
