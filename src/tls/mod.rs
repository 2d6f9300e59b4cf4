//! TLS for the public port (`docs/protocol.md` section 11): the certificate
//! and key from `--tls-cert` and `--tls-key`, the rustls server
//! configuration every connection's session is made from, and the reload
//! on SIGHUP; for the client side (hook backends, the binary's clients),
//! the authorities trusted (`roots`).
//!
//! rustls is sans-IO like the rest of the core: a session takes the
//! socket's bytes and gives bytes back. Driving it over a socket is the
//! reactor's job (`reactor::transport`); this module never touches a socket
//! and knows nothing of connections.
//!
//! Reloading swaps the certificate that *new* handshakes are answered with;
//! sessions already established keep their keys, so no connection drops.
//! A reload that fails (a missing file, a key that does not match the
//! certificate) keeps the certificate in use and says why.

mod roots;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerConnection};
use rustls::sign::CertifiedKey;

pub use roots::{RootsError, SYSTEM_CA_BUNDLE, client_config};

/// The only application protocol spoken over TLS (ALPN): WebSockets and
/// the plain endpoints are all HTTP/1.1.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Most bytes of encrypted output a session holds beyond the connection's
/// own bounded queue (`--max-write-buffer`): a few TLS records.
pub const SEND_BUFFER_LIMIT: usize = 64 * 1024;

/// Plaintext `session` has decrypted: `Some(0)` at the end of the stream
/// (close_notify, or the peer closing without it: an ordinary end for a
/// WebSocket, whose close handshake says it all), `None` when it needs
/// more records from the socket.
pub fn read_plaintext<D>(
    session: &mut rustls::ConnectionCommon<D>,
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    use std::io::Read;
    match session.reader().read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(0)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the records `session` holds to `socket` until none is left
/// (`Ok(true)`) or the socket is full (`Ok(false)`). Shared by the server's
/// connections and the load generator's clients.
pub fn write_records<D>(
    session: &mut rustls::ConnectionCommon<D>,
    socket: &mut impl io::Write,
) -> io::Result<bool> {
    while session.wants_write() {
        match session.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Plaintext from `session`, pulling records from `socket` as they are
/// needed: `Some(0)` at the end of the stream, `None` when the socket has
/// nothing more for now. Records that do not check (a certificate refused,
/// an alert from the peer) are an `InvalidData` error carrying the
/// `rustls::Error`; the alert rustls queued for the peer is left to send.
/// Shared by the clients over mio (hooks, the Redis bridge).
pub fn read_through<D>(
    session: &mut rustls::ConnectionCommon<D>,
    socket: &mut impl io::Read,
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    loop {
        if let Some(n) = read_plaintext(session, buf)? {
            return Ok(Some(n));
        }
        match session.read_tls(socket) {
            Ok(0) => return Ok(Some(0)),
            Ok(_) => {
                session
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Hands `session` what it takes of `plaintext` and writes its records to
/// `socket`, until everything is written or the socket or rustls's buffer
/// is full; returns how much plaintext was taken. Before the handshake is
/// done rustls keeps the plaintext (up to its buffer limit) for after it.
pub fn write_through<D>(
    session: &mut rustls::ConnectionCommon<D>,
    socket: &mut impl io::Write,
    plaintext: &[u8],
) -> io::Result<usize> {
    use std::io::Write;
    let mut taken = 0;
    while write_records(session, socket)? && taken < plaintext.len() {
        match session.writer().write(&plaintext[taken..])? {
            0 => break,
            n => taken += n,
        }
    }
    Ok(taken)
}

/// Why a TLS handshake did not complete, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// A plain HTTP request on the TLS port; answered 400 in plaintext.
    Plaintext,
    /// Not a valid TLS handshake (garbage, a truncated or refused
    /// ClientHello, an alert from the peer).
    Protocol,
    /// The handshake was not done by the request deadline.
    Timeout,
    /// The peer closed the socket during the handshake.
    Closed,
}

impl TlsFailure {
    pub const ALL: [Self; 4] = [Self::Plaintext, Self::Protocol, Self::Timeout, Self::Closed];

    /// The label on `/metrics` and the key in `/stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where the certificate chain and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate or key could not be used.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read { path: PathBuf, error: io::Error },
    /// The certificate file holds no certificate.
    NoCertificate(PathBuf),
    /// The key file holds no private key, or one that cannot be parsed.
    BadKey(PathBuf),
    /// The file is not valid PEM.
    Pem { path: PathBuf, error: pem::Error },
    /// rustls refused the pair (an unsupported key type, or a key that does
    /// not belong to the certificate).
    Refused(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Self::NoCertificate(path) => {
                write!(f, "{} holds no PEM certificate", path.display())
            }
            Self::BadKey(path) => write!(f, "{} holds no usable PEM private key", path.display()),
            Self::Pem { path, error } => write!(f, "{} is not valid PEM: {error}", path.display()),
            Self::Refused(error) => write!(f, "the certificate and key cannot be used: {error}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The server side of TLS: makes a session per accepted connection and
/// reloads the certificate. Cheap to share between shards.
#[derive(Clone)]
pub struct Acceptor {
    config: Arc<ServerConfig>,
    certificate: Arc<CurrentCertificate>,
    files: TlsFiles,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Loads `files` and builds the configuration: TLS 1.2 and 1.3 with the
    /// ring provider, ALPN `http/1.1`, no client certificates.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(provider());
        let key = load_certified_key(&files, &provider)?;
        let certificate = Arc::new(CurrentCertificate {
            key: RwLock::new(Arc::new(key)),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Refused)?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        Ok(Self {
            config: Arc::new(config),
            certificate,
            files,
        })
    }

    /// A session for a newly accepted connection.
    pub fn session(&self) -> Result<ServerConnection, rustls::Error> {
        let mut session = ServerConnection::new(self.config.clone())?;
        session.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
        Ok(session)
    }

    /// Reads the files again; new handshakes get the new certificate, and
    /// on error the one in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.files, self.config.crypto_provider())?;
        *self.certificate.key.write() = Arc::new(key);
        Ok(())
    }

    /// The files the certificate comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// rustls's ring provider, with the key exchanges in the order clients
/// (browsers, OpenSSL) prefer: X25519 first, then P-256; P-384 (about ten
/// times the CPU of X25519 in ring, measured in perf/RESULTS.md) last.
pub fn provider() -> CryptoProvider {
    use rustls::crypto::ring::kx_group;
    // rustls marks ring's provider deprecated for lacking post-quantum key
    // exchange, which only its aws-lc-rs provider (C code and a cmake
    // build) has; ring is the crypto the server already uses.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    provider
}

/// The certificate handshakes are answered with; swapped by a reload. The
/// lock is taken once per handshake, never per message.
#[derive(Debug)]
struct CurrentCertificate {
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.read().clone())
    }
}

fn load_certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    CertifiedKey::from_der(chain, key, provider).map_err(TlsError::Refused)
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            error,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::BadKey(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh self-signed pair written to a temporary directory.
    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, certified.cert.pem()).unwrap();
        std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();
        files
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-tls-{name}-{}-{}",
            std::process::id(),
            crate::auth::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn served_chain(acceptor: &Acceptor) -> Vec<CertificateDer<'static>> {
        acceptor.certificate.key.read().cert.clone()
    }

    /// One direction of an in-memory socket: `WouldBlock` when empty.
    #[derive(Default)]
    struct Pipe(std::collections::VecDeque<u8>);

    impl io::Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            io::Read::read(&mut self.0, buf)
        }
    }

    impl io::Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A client trusting `ca` writes `b"PING"` before the handshake and
    /// steps with the server of `files` until it arrives; what the server
    /// read, or the client's error.
    fn ping(files: &TlsFiles, ca: &Path) -> io::Result<Vec<u8>> {
        let config = client_config(Some(ca)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(config, name).unwrap();
        let mut server = Acceptor::load(files.clone()).unwrap().session().unwrap();
        let (mut to_server, mut to_client) = (Pipe::default(), Pipe::default());
        let mut buf = [0u8; 64];
        // Taken before the handshake, and kept for after it.
        assert_eq!(write_through(&mut client, &mut to_server, b"PING")?, 4);
        for _ in 0..10 {
            if let Some(n) = read_through(&mut server, &mut to_server, &mut buf)? {
                return Ok(buf[..n].to_vec());
            }
            write_records(&mut server, &mut to_client)?;
            read_through(&mut client, &mut to_client, &mut buf)?;
            write_through(&mut client, &mut to_server, b"")?;
        }
        panic!("no plaintext after 10 steps");
    }

    #[test]
    fn plaintext_written_before_the_handshake_arrives_after_it() {
        let dir = temp_dir("through");
        let files = write_pair(&dir, "a");
        assert_eq!(ping(&files, &files.cert).unwrap(), b"PING");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_certificate_from_another_authority_is_invalid_data_from_rustls() {
        let dir = temp_dir("unknown");
        let (files, other) = (write_pair(&dir, "a"), write_pair(&dir, "b"));
        let error = ping(&files, &other.cert).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let inner = error.into_inner().unwrap().downcast::<rustls::Error>();
        assert!(
            matches!(*inner.unwrap(), rustls::Error::InvalidCertificate(_)),
            "refused for its certificate"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_pair_loads_and_a_reload_swaps_the_certificate() {
        let dir = temp_dir("reload");
        let files = write_pair(&dir, "a");
        let acceptor = Acceptor::load(files.clone()).unwrap();
        let before = served_chain(&acceptor);
        assert!(acceptor.session().is_ok());
        let fresh = write_pair(&dir, "b");
        std::fs::copy(&fresh.cert, &files.cert).unwrap();
        std::fs::copy(&fresh.key, &files.key).unwrap();
        acceptor.reload().unwrap();
        assert_ne!(served_chain(&acceptor), before);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let dir = temp_dir("keep");
        let files = write_pair(&dir, "a");
        let acceptor = Acceptor::load(files.clone()).unwrap();
        let before = served_chain(&acceptor);
        std::fs::write(&files.key, "not a key").unwrap();
        let error = acceptor.reload().unwrap_err();
        assert!(matches!(error, TlsError::BadKey(_)), "{error}");
        assert_eq!(served_chain(&acceptor), before);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_files_are_refused_with_their_path() {
        let dir = temp_dir("bad");
        let a = write_pair(&dir, "a");
        let b = write_pair(&dir, "b");
        let missing = TlsFiles {
            cert: dir.join("missing.crt"),
            key: a.key.clone(),
        };
        let error = Acceptor::load(missing).unwrap_err();
        assert!(error.to_string().contains("missing.crt"), "{error}");
        std::fs::write(dir.join("empty.crt"), "").unwrap();
        let empty = TlsFiles {
            cert: dir.join("empty.crt"),
            key: a.key.clone(),
        };
        assert!(matches!(
            Acceptor::load(empty).unwrap_err(),
            TlsError::NoCertificate(_)
        ));
        let mismatched = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        assert!(matches!(
            Acceptor::load(mismatched).unwrap_err(),
            TlsError::Refused(_)
        ));
        let swapped = TlsFiles {
            cert: a.key.clone(),
            key: a.cert.clone(),
        };
        assert!(Acceptor::load(swapped).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
