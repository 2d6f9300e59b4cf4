//! `roomcast bench --tls`: the load generator's sockets, plain or TLS.
//!
//! A client session of rustls over each non-blocking socket, driven like the
//! server's (`reactor::transport`): plaintext in and out, ciphertext moved
//! between the session and the socket. The bench targets only loopback and
//! measures the server, so it does not check the server's certificate
//! against any authority (like `curl -k`); it does check the handshake's
//! signatures, so the server does all of a real handshake's work.
//!
//! Owns the bench's socket I/O. Must not know the WebSocket or the
//! scenarios: the worker reads and writes plaintext through it.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// The client configuration every TLS socket of a bench run shares.
pub fn client_config() -> Arc<ClientConfig> {
    // The server's provider: X25519 first, as browsers offer it.
    let provider = Arc::new(roomcast::tls::provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A bench client's socket.
pub enum BenchStream {
    Plain(TcpStream),
    Tls(Box<TlsClient>),
}

pub struct TlsClient {
    socket: TcpStream,
    session: ClientConnection,
}

impl BenchStream {
    /// `socket` with a TLS session for `host` over it when `config` is given.
    pub fn new(
        socket: TcpStream,
        config: Option<&Arc<ClientConfig>>,
        host: &str,
    ) -> io::Result<Self> {
        let Some(config) = config else {
            return Ok(Self::Plain(socket));
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let session = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        Ok(Self::Tls(Box::new(TlsClient { socket, session })))
    }

    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Self::Plain(socket) => socket,
            Self::Tls(tls) => &mut tls.socket,
        }
    }

    /// Plaintext; `WouldBlock` when none has arrived, `Ok(0)` at the end.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(socket) => socket.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }

    /// Takes plaintext (buffered by rustls until the handshake is done)
    /// and writes what the socket accepts.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(socket) => socket.write(data),
            Self::Tls(tls) => {
                if !tls.flush()? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let taken = tls.session.writer().write(data)?;
                tls.flush()?;
                Ok(taken)
            }
        }
    }

    /// Writes ciphertext a full socket held back; `Ok(true)` when none is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        match self {
            Self::Plain(_) => Ok(true),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

impl TlsClient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(n) = roomcast::tls::read_plaintext(&mut self.session, buf)? {
                return Ok(n);
            }
            if self.session.read_tls(&mut self.socket)? == 0 {
                return Ok(0);
            }
            self.session
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // The handshake's answers, and plaintext queued before it ended.
            self.flush()?;
        }
    }

    fn flush(&mut self) -> io::Result<bool> {
        roomcast::tls::write_records(&mut self.session, &mut self.socket)
    }
}

/// Accepts the server's certificate whatever it is; checks the handshake's
/// signatures with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
