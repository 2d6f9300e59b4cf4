//! A frame-level WebSocket client: sends hand-crafted (possibly invalid)
//! frames and reads the server's frames exactly as they are on the wire.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::READ_TIMEOUT;
use super::http::{UpgradeRequest, read_head};

pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// The mask every raw client frame uses; non-trivial so unmasking is exercised.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Encodes one frame. `rsv` holds the three RSV bits (0..=7); `mask: None`
/// sends the frame unmasked (a protocol violation from a client).
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(u8::from(fin) << 7 | (rsv & 7) << 4 | (opcode & 0xf));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame payload: the code, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame (`None` for an empty close payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, opcode::CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("UTF-8 payload")
    }
}

/// How reading a frame can end without one.
#[derive(Debug)]
pub enum NoFrame {
    /// The server closed the TCP connection (FIN).
    Eof,
    /// No byte within the read timeout.
    Timeout,
    /// Reset or another socket error.
    Error(io::Error),
}

/// A WebSocket connection driven frame by frame.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades `path` with a bearer token; panics unless the answer is 101.
    pub fn connect(addr: SocketAddr, path: &str, token: &str) -> RawWs {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        RawWs::upgrade(stream, path, token)
    }

    /// Upgrades an already connected stream (e.g. one with small buffers).
    pub fn upgrade(mut stream: TcpStream, path: &str, token: &str) -> RawWs {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let req = UpgradeRequest::new(path).bearer(token);
        stream.write_all(&req.to_bytes()).unwrap();
        let (head, rest) = read_head(&mut stream);
        assert_eq!(head.status, 101, "upgrade refused: {head:?}");
        let accept = head
            .header("sec-websocket-accept")
            .expect("Sec-WebSocket-Accept");
        assert_eq!(accept, accept_for(super::http::TEST_KEY));
        RawWs { stream, buf: rest }
    }

    /// A connection already upgraded by hand; `buffered` holds bytes read
    /// past the response head.
    pub fn from_parts(stream: TcpStream, buffered: Vec<u8>) -> RawWs {
        RawWs {
            stream,
            buf: buffered,
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Sends one masked frame; an error means the server stopped reading or closed.
    pub fn try_send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.stream
            .write_all(&encode_frame(fin, 0, opcode, payload, Some(MASK)))
    }

    /// Sends one masked frame with RSV bits clear.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&encode_frame(fin, 0, opcode, payload, Some(MASK)));
    }

    /// Sends a close frame with `code` and `reason`.
    pub fn send_close(&mut self, code: u16, reason: &str) {
        self.send_frame(true, opcode::CLOSE, &close_payload(code, reason));
    }

    /// The next frame, or why there is none.
    pub fn try_read_frame(&mut self) -> Result<Frame, NoFrame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(NoFrame::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if super::ws::is_timeout(&e) => return Err(NoFrame::Timeout),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NoFrame::Error(e)),
            }
        }
    }

    /// The next frame; panics on timeout or end of connection.
    pub fn read_frame(&mut self) -> Frame {
        let frame = self
            .try_read_frame()
            .unwrap_or_else(|e| panic!("expected a frame, got {e:?}"));
        assert!(!frame.masked, "server frames must not be masked: {frame:?}");
        frame
    }

    /// The next frame that is not a ping (pings are skipped, unanswered).
    pub fn read_non_ping(&mut self) -> Frame {
        loop {
            let frame = self.read_frame();
            if frame.opcode != opcode::PING {
                return frame;
            }
        }
    }

    /// Reads frames up to the close frame; returns its code and the frames before it.
    pub fn read_until_close(&mut self) -> (Option<u16>, Vec<Frame>) {
        let mut before = Vec::new();
        loop {
            let frame = self.read_frame();
            if frame.opcode == opcode::CLOSE {
                return (frame.close_code(), before);
            }
            before.push(frame);
        }
    }

    /// Reads up to the close frame and returns its code, skipping other frames.
    pub fn expect_close(&mut self) -> u16 {
        let (code, _) = self.read_until_close();
        code.expect("close frame without a status code")
    }

    /// The text frames read until `quiet` of silence (room events come
    /// unfragmented); panics on a close frame.
    pub fn drain_texts(&mut self, quiet: Duration) -> Vec<String> {
        self.set_read_timeout(quiet);
        let mut texts = Vec::new();
        loop {
            match self.try_read_frame() {
                Ok(f) if f.opcode == opcode::TEXT => {
                    assert!(f.fin, "room events come unfragmented here");
                    texts.push(f.text().to_owned());
                }
                Ok(f) if f.opcode == opcode::CLOSE => panic!(
                    "closed with {:?} after {} messages",
                    f.close_code(),
                    texts.len()
                ),
                Ok(_) => {}
                Err(NoFrame::Timeout) => return texts,
                Err(e) => panic!("no frame: {e:?}"),
            }
        }
    }

    /// Asserts the server closes the TCP connection with nothing more to read.
    pub fn expect_eof(&mut self) {
        match self.try_read_frame() {
            Err(NoFrame::Eof) => {}
            Err(NoFrame::Error(e)) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the server to close the connection, got {other:?}"),
        }
    }
}

/// Parses one complete frame at the start of `buf`: the frame and its length.
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap())),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()), 10),
        n => (u64::from(n), 2),
    };
    let mask: Option<[u8; 4]> = if masked {
        let m = buf.get(at..at + 4)?.try_into().unwrap();
        at += 4;
        Some(m)
    } else {
        None
    };
    let end = at + usize::try_from(len).ok()?;
    let mut payload = buf.get(at..end)?.to_vec();
    if let Some(m) = mask {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= m[i % 4]);
    }
    let frame = Frame {
        fin: buf[0] & 0x80 != 0,
        rsv: (buf[0] >> 4) & 7,
        opcode: buf[0] & 0xf,
        masked,
        payload,
    };
    Some((frame, end))
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 section 4.2.2).
pub fn accept_for(key: &str) -> String {
    use base64::Engine;
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

impl RawWs {
    /// The next whole message (continuations joined), skipping pings and pongs:
    /// its opcode and payload. Panics on a close frame.
    pub fn read_message(&mut self) -> (u8, Vec<u8>) {
        let first = self.read_data_frame();
        assert_ne!(
            first.opcode,
            opcode::CONTINUATION,
            "message starts with a continuation"
        );
        let mut payload = first.payload;
        let mut fin = first.fin;
        while !fin {
            let next = self.read_data_frame();
            assert_eq!(next.opcode, opcode::CONTINUATION, "interleaved message");
            payload.extend_from_slice(&next.payload);
            fin = next.fin;
        }
        (first.opcode, payload)
    }

    fn read_data_frame(&mut self) -> Frame {
        loop {
            let frame = self.read_frame();
            match frame.opcode {
                opcode::PING | opcode::PONG => continue,
                opcode::CLOSE => panic!("unexpected close {:?}", frame.close_code()),
                _ => return frame,
            }
        }
    }
}
