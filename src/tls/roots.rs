//! The client side's trust: the authorities that certificates of servers
//! roomcast connects to (hook backends, and the binary's own clients) are
//! checked against, and the rustls client configuration made from them.
//!
//! The system's bundle by default, or one PEM file that replaces it
//! (`--hook-ca`, the clients' `--ca`): a private authority for an internal
//! backend should not widen what else is trusted. Read from the file the
//! system keeps rather than from a crate of compiled-in roots, so that
//! the machine's administrator, not roomcast's release, decides.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Where Debian (and most Linux systems) keep the trusted authorities.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why no client configuration could be made.
#[derive(Debug)]
pub enum RootsError {
    /// The bundle cannot be read.
    Read { path: PathBuf, error: io::Error },
    /// The bundle holds no certificate rustls accepts.
    NoCertificate(PathBuf),
    /// rustls refused the provider's protocol versions (not expected).
    Config(rustls::Error),
}

impl fmt::Display for RootsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Self::NoCertificate(path) => write!(f, "no certificate in {}", path.display()),
            Self::Config(e) => write!(f, "TLS client configuration: {e}"),
        }
    }
}

impl std::error::Error for RootsError {}

/// A client configuration trusting the authorities of `ca`, or of the
/// system's bundle when `None`.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, RootsError> {
    let path = ca.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let pem = std::fs::read(path).map_err(|error| RootsError::Read {
        path: path.to_owned(),
        error,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        // One certificate rustls cannot use must not cost the others.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(RootsError::NoCertificate(path.to_owned()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(super::provider()))
        .with_safe_default_protocol_versions()
        .map_err(RootsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every client of roomcast speaks HTTP/1.1 (hooks, WebSocket upgrades):
    // said up front, a server that would pick HTTP/2 cannot.
    config.alpn_protocols = vec![super::ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("roomcast-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = client_config(Some(&empty)).unwrap_err();
        assert!(matches!(error, RootsError::NoCertificate(_)), "{error}");
        let missing = dir.join("missing.pem");
        let error = client_config(Some(&missing)).unwrap_err();
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, made.cert.pem()).unwrap();
        assert!(client_config(Some(&ca)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
