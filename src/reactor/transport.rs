//! The layer between a connection's socket and its `Connection`: plain TCP,
//! or TLS driven in the shard's own event loop.
//!
//! rustls is sans-IO: this layer moves ciphertext between the socket and
//! the session and hands plaintext up and down, so the connection state
//! machine above never knows whether the port is `ws://` or `wss://`. No
//! extra thread, no copy of the plaintext beyond rustls's own buffers.
//!
//! What a TLS socket adds to the readiness contract of `shard`:
//! - a read returns plaintext; a short one does not mean the socket was
//!   drained (rustls may hold more), so TLS sockets are always read until
//!   `WouldBlock` or the budget;
//! - encrypted output can be pending with the connection's queue empty
//!   (`has_pending_output`), and WRITABLE interest must cover it;
//! - the bytes rustls holds are bounded by `tls::SEND_BUFFER_LIMIT`, outside
//!   the connection's own bound (`conn::backpressure`): new plaintext is
//!   taken only once the previous records are out, so a slow client's
//!   backlog stays in the connection's queue, where that bound judges it.
//!
//! Owns the socket of one connection. Must not touch the connection's
//! state: bad TLS input ends here, as an error the shard drops the socket
//! for, counted by `failure()`.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use rustls::ServerConnection;

use crate::codes::ErrorCode;
use crate::http::response;
use crate::tls::TlsFailure;

/// The first byte of a TLS handshake record (RFC 8446 5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection's socket, with or without TLS.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// A TLS session over its socket.
pub struct TlsStream {
    socket: TcpStream,
    session: ServerConnection,
    /// No byte has been looked at yet (the plaintext check comes first).
    fresh: bool,
    /// The handshake completed and the shard has not counted it yet.
    established_unreported: bool,
    failure: Option<TlsFailure>,
}

impl Transport {
    /// `socket` with a TLS `session` over it.
    pub fn tls(socket: TcpStream, session: ServerConnection) -> Self {
        Self::Tls(Box::new(TlsStream {
            socket,
            session,
            fresh: true,
            established_unreported: false,
            failure: None,
        }))
    }

    /// The socket, for registering with the poll.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Self::Plain(socket) => socket,
            Self::Tls(tls) => &mut tls.socket,
        }
    }

    /// Whether a read shorter than the buffer means the socket is drained.
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Self::Plain(_))
    }

    /// Reads plaintext; `Ok(0)` at the end of the stream.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(socket) => socket.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }

    /// Takes plaintext from `slices` and writes what the socket accepts;
    /// returns how much plaintext was taken.
    pub fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Plain(socket) => send_slices(socket, slices),
            Self::Tls(tls) => tls.write_vectored(slices),
        }
    }

    /// Writes encrypted output held back by a full socket; `Ok(true)` once
    /// none is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        match self {
            Self::Plain(_) => Ok(true),
            Self::Tls(tls) => tls.flush(),
        }
    }

    /// Encrypted output waits for the socket.
    pub fn has_pending_output(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(tls) => tls.session.wants_write(),
        }
    }

    /// Ends the write side: TLS says `close_notify` first.
    pub fn shutdown_write(&mut self) {
        if let Self::Tls(tls) = self {
            tls.session.send_close_notify();
            let _ = tls.flush();
        }
        let _ = self.socket().shutdown(Shutdown::Write);
    }

    /// A TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Self::Tls(tls) if tls.session.is_handshaking())
    }

    /// Whether a handshake completed since the last call.
    pub fn take_established(&mut self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(tls) => std::mem::take(&mut tls.established_unreported),
        }
    }

    /// Why the TLS handshake failed, if it did.
    pub fn failure(&self) -> Option<TlsFailure> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(tls) => tls.failure,
        }
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fresh {
            self.refuse_plaintext()?;
        }
        loop {
            if let Some(n) = crate::tls::read_plaintext(&mut self.session, buf)? {
                return Ok(n);
            }
            let was_handshaking = self.session.is_handshaking();
            if self.session.read_tls(&mut self.socket)? == 0 {
                if was_handshaking {
                    self.failure = Some(TlsFailure::Closed);
                }
                return Ok(0);
            }
            if let Err(error) = self.session.process_new_packets() {
                // The alert rustls queued tells the peer why.
                let _ = self.flush();
                if was_handshaking {
                    self.failure = Some(TlsFailure::Protocol);
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
            if was_handshaking && !self.session.is_handshaking() {
                self.established_unreported = true;
            }
        }
    }

    /// A plain HTTP request on the TLS port gets a plaintext 400 that says
    /// so (as a browser user would hope), instead of bytes it cannot read.
    fn refuse_plaintext(&mut self) -> io::Result<()> {
        let mut first = [0u8; 1];
        if self.socket.peek(&mut first)? == 0 {
            return Ok(());
        }
        self.fresh = false;
        if first[0] == TLS_HANDSHAKE_RECORD || !first[0].is_ascii_uppercase() {
            return Ok(());
        }
        self.failure = Some(TlsFailure::Plaintext);
        let mut answer = Vec::with_capacity(256);
        let message = "this port speaks TLS: use https:// or wss://";
        response::write_error(&mut answer, ErrorCode::BadRequest, message, &[]);
        // An empty socket buffer takes these few bytes at once; the
        // request is read and dropped so that closing sends a FIN, not a
        // reset that could destroy the answer before the client reads it.
        let _ = self.socket.write_all(&answer);
        let _ = self.socket.shutdown(Shutdown::Write);
        let mut sink = [0u8; 4096];
        while matches!(self.socket.read(&mut sink), Ok(n) if n > 0) {}
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "plain HTTP on the TLS port",
        ))
    }

    fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        // Encrypt only once the previous records are out, so what rustls
        // holds stays within its limit and always has room for more.
        if !self.flush()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = self.session.writer().write_vectored(slices)?;
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush()?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<bool> {
        crate::tls::write_records(&mut self.session, &mut Sender(&mut self.socket))
    }
}

/// Writes `slices` to `socket`: one slice with `send`, which the kernel
/// takes on a shorter path than a `writev` of one iovec.
fn send_slices(socket: &mut TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    match slices {
        [one] => socket.write(one),
        _ => socket.write_vectored(slices),
    }
}

/// The socket as rustls writes its records to it (`send_slices`).
struct Sender<'a>(&'a mut TcpStream);

impl Write for Sender<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        send_slices(self.0, slices)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
