//! What the client runs with, and how the server's configuration makes it:
//! the URLs, the signing key (`--hook-secret`, else the first JWT secret),
//! the caps, and, when a URL is `https://`, the authorities trusted
//! (`--hook-ca`, else the system's), loaded once at start.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crate::config::HooksConfig;
use crate::hooks::sign::Signer;
use crate::hooks::url::HookUrl;
use crate::tls::RootsError;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The URLs requests name by index.
    pub urls: Vec<HookUrl>,
    /// Signs every request.
    pub signer: Signer,
    /// Most requests in flight per URL, hence most connections per URL;
    /// at least 1.
    pub concurrency: usize,
    /// Most requests waiting per URL beyond those in flight.
    pub queue: usize,
    /// Longest response body read.
    pub max_response_body: usize,
    /// For `https://` URLs: the authorities trusted (`tls::client_config`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How host names are looked up.
    pub resolver: Resolver,
}

/// Looks a host name up: the system's resolver, or, in tests, a name with
/// the addresses a test needs (one that refuses, then one that answers).
#[derive(Clone)]
pub struct Resolver(Arc<Lookup>);

/// A lookup: host and port in, addresses out.
type Lookup = dyn Fn(&str, u16) -> Vec<SocketAddr> + Send + Sync;

impl Resolver {
    /// `getaddrinfo`, through `ToSocketAddrs`: blocking.
    pub fn system() -> Self {
        Self::new(|host, port| {
            (host, port)
                .to_socket_addrs()
                .map(Iterator::collect)
                .unwrap_or_default()
        })
    }

    pub fn new(lookup: impl Fn(&str, u16) -> Vec<SocketAddr> + Send + Sync + 'static) -> Self {
        Self(Arc::new(lookup))
    }

    /// The addresses of `host`, in the order to try them; none if it does
    /// not resolve.
    pub fn resolve(&self, host: &str, port: u16) -> Vec<SocketAddr> {
        (self.0)(host, port)
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

/// Why no client could be made from the configuration.
#[derive(Debug)]
pub enum SetupError {
    /// Neither `--hook-secret` nor a JWT secret (the server generates one
    /// before it starts the client, so this is a caller's mistake).
    NoSecret,
    /// An `https://` URL, and `--hook-ca` or the system's bundle unusable.
    Roots(RootsError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSecret => f.write_str("--hook-secret: no secret to sign hooks with"),
            Self::Roots(e) => write!(f, "--hook-ca: {e}"),
        }
    }
}

impl std::error::Error for SetupError {}

impl ClientConfig {
    /// The client for `urls` under the hooks group; `jwt_secrets` are the
    /// server's (the generated one included), `max_response_body` the
    /// longest answer the callers read (a publish proxy's replacement
    /// data is up to `--max-message-size`).
    pub fn new(
        hooks: &HooksConfig,
        jwt_secrets: &[String],
        urls: Vec<HookUrl>,
        max_response_body: usize,
    ) -> Result<Self, SetupError> {
        let secret = hooks.secret(jwt_secrets).ok_or(SetupError::NoSecret)?;
        let tls = match urls.iter().any(|url| url.tls) {
            true => {
                Some(crate::tls::client_config(hooks.ca.as_deref()).map_err(SetupError::Roots)?)
            }
            false => None,
        };
        Ok(Self {
            urls,
            signer: Signer::new(secret.as_bytes()),
            concurrency: hooks.concurrency.max(1),
            queue: hooks.queue(),
            max_response_body,
            tls,
            resolver: Resolver::system(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(ca: Option<&str>) -> HooksConfig {
        HooksConfig {
            concurrency: 4,
            ca: ca.map(Into::into),
            publish_proxy_rooms: Vec::new(),
            subscribe_proxy_rooms: Vec::new(),
            ..HooksConfig::default()
        }
    }

    fn urls(texts: &[&str]) -> Vec<HookUrl> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn signs_with_the_first_jwt_secret_and_loads_roots_only_for_https() {
        let jwt = ["first".to_owned(), "second".to_owned()];
        let missing = Some("/nonexistent/hooks-ca.pem");
        let plain = ClientConfig::new(&hooks(missing), &jwt, urls(&["http://h/"]), 1024).unwrap();
        assert!(plain.tls.is_none(), "no https URL, no roots read");
        assert_eq!((plain.concurrency, plain.queue), (4, 64));
        let expected = Signer::new(b"first").sign(1, b"{}");
        assert_eq!(plain.signer.sign(1, b"{}"), expected);

        let error = ClientConfig::new(&hooks(missing), &jwt, urls(&["https://h/"]), 1024);
        let error = error.unwrap_err().to_string();
        assert!(error.starts_with("--hook-ca: cannot read"), "{error}");
        let error = ClientConfig::new(&hooks(None), &[], urls(&["http://h/"]), 1024);
        assert!(matches!(error, Err(SetupError::NoSecret)));
    }
}
