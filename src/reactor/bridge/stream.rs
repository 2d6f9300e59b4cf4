//! A link's socket: plain TCP for `redis://`, or TLS for `rediss://`,
//! driven in the bridge's own loop as the shards drive theirs
//! (`reactor::transport`) and the hooks client its own.
//!
//! The TLS handshake moves on whichever event comes (the bridge reads and
//! then writes on every event), and commands handed over before it is done
//! wait in rustls until it is. The name checked is the URL's host: a DNS
//! name, or an IP address. A certificate that does not check fails the
//! connection with an error that says `TLS:` and why; the link then goes
//! down like any other (`docs/protocol.md` sections 10 and 15).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::config::ClusterConfig;
use crate::redis::url::RedisUrl;
use crate::tls::RootsError;

/// One Redis connection's socket.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls {
        socket: TcpStream,
        session: Box<ClientConnection>,
    },
}

/// The TLS client configuration of a cluster's `rediss://` links, built
/// once at start: `--redis-ca`, else the system's authorities. `None` when
/// no link uses TLS (and no `--redis-ca` was given to be checked).
pub fn client_tls(cluster: &ClusterConfig) -> Result<Option<Arc<ClientConfig>>, RootsError> {
    if cluster.ca.is_none() && !cluster.servers.iter().any(|url| url.tls) {
        return Ok(None);
    }
    let shared = crate::tls::client_config(cluster.ca.as_deref().map(Path::new))?;
    let mut config = ClientConfig::clone(&shared);
    // Redis speaks no ALPN protocol; the HTTP one would only confuse a proxy.
    config.alpn_protocols.clear();
    Ok(Some(Arc::new(config)))
}

impl Stream {
    /// Starts connecting to `addr`, with TLS when `url` is `rediss://`.
    pub fn connect(
        addr: SocketAddr,
        url: &RedisUrl,
        tls: Option<&Arc<ClientConfig>>,
    ) -> io::Result<Self> {
        let session = match (url.tls, tls) {
            (false, _) => None,
            (true, None) => return Err(io::Error::other("TLS: no client configuration")),
            (true, Some(config)) => {
                let name = ServerName::try_from(url.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let session = ClientConnection::new(config.clone(), name).map_err(tls_error)?;
                Some(Box::new(session))
            }
        };
        let socket = TcpStream::connect(addr)?;
        // Commands are pipelined and written whole; waiting for more would
        // only delay them.
        let _ = socket.set_nodelay(true);
        Ok(match session {
            None => Self::Plain(socket),
            Some(session) => Self::Tls { socket, session },
        })
    }

    /// The socket, for registering with the poll.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Self::Plain(socket) | Self::Tls { socket, .. } => socket,
        }
    }

    /// Appends to `bytes` what has come, until the socket has no more; an
    /// end of the stream is an error (Redis went away).
    pub fn read_available(&mut self, bytes: &mut Vec<u8>) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let read = match self {
                Self::Plain(socket) => match socket.read(&mut chunk) {
                    Ok(n) => Some(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                },
                Self::Tls { socket, session } => {
                    crate::tls::read_through(session, socket, &mut chunk).map_err(|e| {
                        // The alert rustls queued tells Redis why.
                        let _ = crate::tls::write_records(session, socket);
                        tls_io_error(e)
                    })?
                }
            };
            match read {
                None => return Ok(()),
                Some(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "Redis closed the connection",
                    ));
                }
                Some(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Writes what the socket takes now (over TLS: also the handshake's
    /// records); returns how much of `bytes` was taken.
    pub fn write_available(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let (socket, session) = match self {
            Self::Plain(socket) => return write_plain(socket, bytes),
            Self::Tls { socket, session } => (socket, session),
        };
        crate::tls::write_through(session, socket, bytes)
    }
}

fn write_plain(socket: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match socket.write(&bytes[written..]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// A TLS failure, as the log line says it: `TLS: invalid peer
/// certificate: UnknownIssuer`.
fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {error}"))
}

/// A failed read over TLS: the records' own errors (`InvalidData`, a
/// `rustls::Error` inside) said as TLS failures, the socket's as they are.
fn tls_io_error(error: io::Error) -> io::Error {
    if error.kind() != io::ErrorKind::InvalidData {
        return error;
    }
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {error}"))
}
