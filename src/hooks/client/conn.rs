//! One connection to a backend: plain TCP or TLS (rustls, driven here as
//! the shards drive their sessions), the request it is writing and the
//! response it is reading.
//!
//! Readiness is edge-triggered (mio): `pump` writes until the socket is
//! full and reads until `WouldBlock`, and must be called on every event
//! and once after `start`, since an idle connection that was writable
//! gets no new event. Which failure a broken socket means depends on how
//! far it got: before the TCP connection is made, `Connect`; during the
//! TLS handshake, `Tls`; after, `Closed`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

use crate::hooks::HookError;
use crate::hooks::http::{Response, ResponseReader};
use crate::hooks::url::HookUrl;

/// What a `pump` came to.
pub(super) enum Pumped {
    /// Nothing to report yet.
    Waiting,
    /// The response is complete; `reusable`: the connection may carry the
    /// next request.
    Answered { response: Response, reusable: bool },
}

pub(super) struct Conn {
    stream: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// The TCP connection is established.
    connected: bool,
    /// The request being written, and how much of it is.
    out: Vec<u8>,
    written: usize,
    /// Reading a response: some while a request is carried.
    reader: Option<ResponseReader>,
    /// When it last became idle.
    pub idle_since: Instant,
}

impl Conn {
    /// Starts connecting to `addr` for `url`; `tls` is required for https.
    pub fn open(
        addr: SocketAddr,
        url: &HookUrl,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Self, HookError> {
        let tls = match (url.tls, tls) {
            (false, _) => None,
            (true, None) => return Err(HookError::Tls),
            (true, Some(config)) => {
                let name = ServerName::try_from(url.host.clone()).map_err(|_| HookError::Tls)?;
                let session = ClientConnection::new(config.clone(), name);
                Some(Box::new(session.map_err(|_| HookError::Tls)?))
            }
        };
        let stream = TcpStream::connect(addr).map_err(|_| HookError::Connect)?;
        // Requests are written whole; waiting for more would only delay them.
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            tls,
            connected: false,
            out: Vec::new(),
            written: 0,
            reader: None,
            idle_since: Instant::now(),
        })
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let both = Interest::READABLE | Interest::WRITABLE;
        registry.register(&mut self.stream, token, both)
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Takes a request (its bytes, signed) and a reader for its response.
    pub fn start(&mut self, request: Vec<u8>, max_body: usize) {
        self.out = request;
        self.written = 0;
        self.reader = Some(ResponseReader::new(max_body));
    }

    /// Gives back the request's bytes, for another connection when this
    /// one could not be made (nothing of it was sent).
    pub fn take_request(&mut self) -> Vec<u8> {
        self.reader = None;
        self.written = 0;
        std::mem::take(&mut self.out)
    }

    /// Writes what it can, reads what has come; `read_buf` is scratch.
    pub fn pump(&mut self, read_buf: &mut [u8]) -> Result<Pumped, HookError> {
        if !self.connected && !self.check_connected()? {
            return Ok(Pumped::Waiting);
        }
        self.flush()?;
        loop {
            let n = match self.read_some(read_buf)? {
                None => break,
                Some(0) => return self.on_end(),
                Some(n) => n,
            };
            if let Some(answered) = self.on_bytes(&read_buf[..n])? {
                return Ok(answered);
            }
            // Reading may make a TLS session want to write (the handshake).
            self.flush()?;
        }
        self.flush()?;
        Ok(Pumped::Waiting)
    }

    /// Whether the connection is made; an error if it failed.
    fn check_connected(&mut self) -> Result<bool, HookError> {
        if let Ok(Some(_)) | Err(_) = self.stream.take_error() {
            return Err(HookError::Connect);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(_) => Err(HookError::Connect),
        }
    }

    /// What a broken socket means at this stage.
    fn broken(&self) -> HookError {
        match &self.tls {
            _ if !self.connected => HookError::Connect,
            Some(session) if session.is_handshaking() => HookError::Tls,
            _ => HookError::Closed,
        }
    }

    fn flush(&mut self) -> Result<(), HookError> {
        let broken = self.broken();
        let Some(session) = &mut self.tls else {
            while self.written < self.out.len() {
                match self.stream.write(&self.out[self.written..]) {
                    Ok(0) => return Err(broken),
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(broken),
                }
            }
            return Ok(());
        };
        let rest = &self.out[self.written..];
        self.written +=
            crate::tls::write_through(session, &mut self.stream, rest).map_err(|_| broken)?;
        Ok(())
    }

    /// Plaintext read: `None` when the socket has no more for now,
    /// `Some(0)` at the end of the stream.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, HookError> {
        let broken = self.broken();
        let Some(session) = &mut self.tls else {
            loop {
                match self.stream.read(buf) {
                    Ok(n) => return Ok(Some(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(broken),
                }
            }
        };
        match crate::tls::read_through(session, &mut self.stream, buf) {
            Ok(read) => Ok(read),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(HookError::Tls),
            Err(_) => Err(broken),
        }
    }

    /// Bytes of the response; bytes on an idle connection are a backend
    /// out of step, and the connection goes.
    fn on_bytes(&mut self, bytes: &[u8]) -> Result<Option<Pumped>, HookError> {
        let reader = self.reader.as_mut().ok_or(HookError::Closed)?;
        let progress = reader.read(bytes).map_err(HookError::Response)?;
        if !progress.done {
            return Ok(None);
        }
        // Bytes past the response, or a response before the whole request
        // was written: the next request would start out of step.
        let in_step = progress.consumed == bytes.len() && self.written == self.out.len();
        self.answered(in_step).map(Some)
    }

    /// The end of the stream: the end of a body that runs until the close,
    /// else the connection was lost.
    fn on_end(&mut self) -> Result<Pumped, HookError> {
        let reader = self.reader.as_mut().ok_or(HookError::Closed)?;
        reader.end().map_err(|_| HookError::Closed)?;
        self.answered(false)
    }

    /// Takes the complete response; the connection is idle from now.
    fn answered(&mut self, in_step: bool) -> Result<Pumped, HookError> {
        let response = self
            .reader
            .take()
            .and_then(ResponseReader::take)
            .ok_or(HookError::Closed)?;
        self.idle_since = Instant::now();
        Ok(Pumped::Answered {
            reusable: in_step && response.keep_alive,
            response,
        })
    }
}
