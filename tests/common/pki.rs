//! Throwaway certificate authorities and the certificates they sign,
//! written as PEM files in a test's own directory (rcgen).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::CertificateDer;

/// An authority of its own.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pub der: CertificateDer<'static>,
    /// Its certificate as PEM, for whoever trusts it.
    pub file: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    pub der: CertificateDer<'static>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Authority {
    pub fn new(dir: &Path, name: &str) -> Authority {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Named apart, so that another authority's certificate is not
        // taken for this one's (a bad signature instead of an unknown one).
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test authority"));
        let cert = params.self_signed(&key).unwrap();
        let file = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&file, cert.pem()).unwrap();
        Authority {
            params,
            key,
            der: cert.der().clone(),
            file,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) that this
    /// authority signed.
    pub fn issue(&self, dir: &Path, name: &str, names: &[&str]) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let issued = Issued {
            der: cert.der().clone(),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// A fresh directory under the system's temporary one.
pub fn temp_dir(label: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("roomcast-{label}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
