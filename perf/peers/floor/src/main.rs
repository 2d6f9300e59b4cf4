//! The fan-out floor: the least a WebSocket server can do per delivery, as
//! the yardstick for roomcast's fan-out cost (perf/peers/README.md).
//!
//! One thread, one mio poll, no library beyond the handshake's SHA-1. It
//! parses the upgrade request only as far as the path and the key, reads
//! frame headers and unmasks payloads, and nothing else: no UTF-8 check, no
//! JSON, no auth, no bound. A message to `/room/NAME` is framed once into a
//! reference-counted buffer that goes to every other member's queue; each
//! queue is written with `writev` over up to 16 of those shared frames per
//! call. `/echo` sends each frame back. Frames are forwarded one by one
//! (fragments are gathered into one message), pings get pongs, a close gets its echo.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use sha1::{Digest, Sha1};

const LISTENER: Token = Token(usize::MAX);
/// Frames per `writev`.
const COALESCE: usize = 16;
/// Longest request head.
const MAX_HEAD: usize = 8192;
/// Largest frame payload accepted.
const MAX_PAYLOAD: usize = 64 << 20;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

type Frame = Rc<[u8]>;

enum Route {
    Echo,
    Room(Rc<str>),
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    /// `None` until the upgrade.
    route: Option<Route>,
    queue: VecDeque<Frame>,
    /// Bytes of the queue's first frame already written.
    written: usize,
    /// A fragmented message being assembled: its opcode and payload.
    partial: Option<(u8, Vec<u8>)>,
    /// Drop the connection once the queue is written.
    close_after: bool,
    dirty: bool,
}

#[derive(Default)]
struct Server {
    conns: Slab<Conn>,
    rooms: HashMap<Rc<str>, Vec<usize>>,
    dirty: Vec<usize>,
}

fn main() -> io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into())?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    let mut server = Server::default();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => server.accept(&listener, &poll),
                Token(key) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        server.on_readable(key, &mut buf);
                    }
                    if event.is_writable() {
                        server.mark(key);
                    }
                }
            }
        }
        server.flush_dirty();
    }
    std::process::exit(0);
}

impl Server {
    fn accept(&mut self, listener: &TcpListener, poll: &Poll) {
        while let Ok((mut stream, _)) = listener.accept() {
            let key = self.conns.vacant_key();
            let _ = stream.set_nodelay(true);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if poll
                .registry()
                .register(&mut stream, Token(key), interest)
                .is_err()
            {
                continue;
            }
            self.conns.insert(Conn {
                    stream,
                    input: Vec::new(),
                    route: None,
                    queue: VecDeque::new(),
                    written: 0,
                    partial: None,
                    close_after: false,
                    dirty: false,
            });
        }
    }

    fn on_readable(&mut self, key: usize, buf: &mut [u8]) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            match conn.stream.read(buf) {
                Ok(0) => return self.remove(key),
                Ok(n) => {
                    conn.input.extend_from_slice(&buf[..n]);
                    if !self.process(key) {
                        return self.remove(key);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.remove(key),
            }
        }
    }

    /// Handles the connection's input; false if it must be dropped.
    fn process(&mut self, key: usize) -> bool {
        let mut input = match self.conns.get_mut(key) {
            Some(conn) if !conn.close_after => std::mem::take(&mut conn.input),
            _ => return true,
        };
        let mut used = 0;
        if self.conns[key].route.is_none() {
            match upgrade(&input) {
                Upgrade::Incomplete if input.len() <= MAX_HEAD => {
                    self.conns.get_mut(key).unwrap().input = input;
                    return true;
                }
                Upgrade::Incomplete | Upgrade::Refused => {
                    let refusal: Frame = Rc::from(&b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..]);
                    self.queue(key, refusal);
                    self.conns.get_mut(key).unwrap().close_after = true;
                    return true;
                }
                Upgrade::Accepted { end, route, accept } => {
                    used = end;
                    let response = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    );
                    self.queue(key, Rc::from(response.into_bytes().into_boxed_slice()));
                    if let Route::Room(room) = &route {
                        self.rooms.entry(room.clone()).or_default().push(key);
                    }
                    self.conns.get_mut(key).unwrap().route = Some(route);
                }
            }
        }
        loop {
            match next_frame(&input[used..]) {
                Parsed::Incomplete => break,
                Parsed::Bad => return false,
                Parsed::Frame { len, opcode, frame } => {
                    used += len;
                    if !self.on_frame(key, opcode, frame) {
                        break;
                    }
                }
            }
        }
        input.drain(..used);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.input = input;
        }
        true
    }

    /// Routes one frame; false once the connection is closing.
    fn on_frame(&mut self, key: usize, opcode: u8, frame: Frame) -> bool {
        match opcode {
            0x8 => {
                self.queue(key, frame);
                self.conns.get_mut(key).unwrap().close_after = true;
                false
            }
            0x9 => {
                let mut pong = frame.to_vec();
                pong[0] = 0x80 | 0xA;
                self.queue(key, Rc::from(pong.into_boxed_slice()));
                true
            }
            0xA => true,
            _ => {
                let Some(frame) = self.assemble(key, opcode, frame) else {
                    return true;
                };
                let room = match &self.conns[key].route {
                    Some(Route::Echo) => {
                        self.queue(key, frame);
                        return true;
                    }
                    Some(Route::Room(room)) => room.clone(),
                    None => return true,
                };
                // Taken out and put back: no copy of the member list.
                let members = self.rooms.get_mut(&room).map(std::mem::take);
                let members = members.unwrap_or_default();
                for &member in &members {
                    if member != key {
                        self.queue(member, frame.clone());
                    }
                }
                if let Some(slot) = self.rooms.get_mut(&room) {
                    *slot = members;
                }
                true
            }
        }
    }

    /// A data frame as a whole message: unfragmented frames as they are,
    /// fragments gathered until the last.
    fn assemble(&mut self, key: usize, opcode: u8, frame: Frame) -> Option<Frame> {
        let conn = self.conns.get_mut(key)?;
        let fin = frame[0] & 0x80 != 0;
        if fin && opcode != 0 {
            return Some(frame);
        }
        let header = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let (first, mut payload) = conn.partial.take().unwrap_or((opcode, Vec::new()));
        payload.extend_from_slice(&frame[header..]);
        if !fin {
            conn.partial = Some((first, payload));
            return None;
        }
        Some(encode(0x80 | first, &payload))
    }

    fn queue(&mut self, key: usize, frame: Frame) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.queue.push_back(frame);
            self.mark(key);
        }
    }

    fn mark(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    fn flush_dirty(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            match write_queue(conn) {
                Ok(()) if conn.close_after && conn.queue.is_empty() => self.remove(key),
                Ok(()) => {}
                Err(_) => self.remove(key),
            }
        }
    }

    fn remove(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Some(Route::Room(room)) = conn.route
            && let Some(members) = self.rooms.get_mut(&room)
        {
            members.retain(|&m| m != key);
            if members.is_empty() {
                self.rooms.remove(&room);
            }
        }
    }
}

/// Writes the queue, up to `COALESCE` frames per `writev`, until the socket
/// is full or the queue empty.
fn write_queue(conn: &mut Conn) -> io::Result<()> {
    while !conn.queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); COALESCE];
        let mut count = 0;
        for (i, frame) in conn.queue.iter().take(COALESCE).enumerate() {
            let start = if i == 0 { conn.written } else { 0 };
            slices[i] = IoSlice::new(&frame[start..]);
            count += 1;
        }
        match conn.stream.write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                while n > 0 {
                    let left = conn.queue[0].len() - conn.written;
                    if n >= left {
                        n -= left;
                        conn.written = 0;
                        conn.queue.pop_front();
                    } else {
                        conn.written += n;
                        n = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Upgrade {
    Incomplete,
    Refused,
    Accepted {
        end: usize,
        route: Route,
        accept: String,
    },
}

/// The request head: its path and `Sec-WebSocket-Key`, nothing more.
fn upgrade(input: &[u8]) -> Upgrade {
    let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Upgrade::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(&input[..end]) else {
        return Upgrade::Refused;
    };
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .map(|target| target.split('?').next().unwrap_or(""))
        .unwrap_or("");
    let key = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim())
    });
    let route = if path == "/echo" {
        Route::Echo
    } else if let Some(name) = path.strip_prefix("/room/")
        && !name.is_empty()
    {
        Route::Room(Rc::from(name))
    } else {
        return Upgrade::Refused;
    };
    let Some(key) = key else {
        return Upgrade::Refused;
    };
    let digest = Sha1::digest(format!("{key}{WS_GUID}").as_bytes());
    Upgrade::Accepted {
        end: end + 4,
        route,
        accept: base64::engine::general_purpose::STANDARD.encode(digest),
    }
}

enum Parsed {
    Incomplete,
    Bad,
    /// A whole client frame of `len` bytes, reframed unmasked for sending.
    Frame { len: usize, opcode: u8, frame: Frame },
}

fn next_frame(input: &[u8]) -> Parsed {
    if input.len() < 2 {
        return Parsed::Incomplete;
    }
    let (b0, b1) = (input[0], input[1]);
    if b1 & 0x80 == 0 {
        return Parsed::Bad;
    }
    let (payload_len, mut at) = match b1 & 0x7f {
        126 if input.len() >= 4 => (u16::from_be_bytes([input[2], input[3]]) as usize, 4),
        127 if input.len() >= 10 => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&input[2..10]);
            (u64::from_be_bytes(len) as usize, 10)
        }
        126 | 127 => return Parsed::Incomplete,
        n => (n as usize, 2),
    };
    if payload_len > MAX_PAYLOAD {
        return Parsed::Bad;
    }
    if input.len() < at + 4 + payload_len {
        return Parsed::Incomplete;
    }
    let mask = [input[at], input[at + 1], input[at + 2], input[at + 3]];
    at += 4;
    let mut frame = header(b0, payload_len);
    let payload = &input[at..at + payload_len];
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    Parsed::Frame {
        len: at + payload_len,
        opcode: b0 & 0x0f,
        frame: Rc::from(frame.into_boxed_slice()),
    }
}

fn encode(b0: u8, payload: &[u8]) -> Frame {
    let mut frame = header(b0, payload.len());
    frame.extend_from_slice(payload);
    Rc::from(frame.into_boxed_slice())
}

/// A server frame's header, with room for the payload after it.
fn header(b0: u8, payload_len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(10 + payload_len);
    frame.push(b0);
    match payload_len {
        0..=125 => frame.push(payload_len as u8),
        126..=65535 => {
            frame.push(126);
            frame.extend_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            frame.push(127);
            frame.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
    frame
}
