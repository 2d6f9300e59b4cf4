//! The auth group: the secrets tokens are checked against, the clock
//! leeway, and the origins allowed to upgrade.

use std::time::Duration;

use super::{ConfigError, JsonFields, out_of_range};
use crate::codes::limits;

/// Who may connect.
#[derive(Clone)]
pub struct AuthConfig {
    /// HS256 secrets; a token signed with any of them is accepted.
    pub secrets: Vec<String>,
    /// Leeway applied to `exp` and `nbf`.
    pub leeway: Duration,
    /// Origins allowed to upgrade; empty: any.
    pub allowed_origins: Vec<String>,
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.leeway > Duration::from_secs(limits::MAX_JWT_LEEWAY_SECS) {
            return out_of_range("jwt-leeway", "must be at most 60s");
        }
        if let Some(bad) = self.allowed_origins.iter().find(|o| !is_origin(o)) {
            return out_of_range(
                "allowed-origins",
                format!(
                    "{bad:?} is not an origin: expected scheme://host or scheme://host:port \
                     (no path, no trailing slash, no wildcard) or null"
                ),
            );
        }
        if self.secrets.iter().any(|s| s.is_empty()) {
            return out_of_range("jwt-secret", "a secret must not be empty");
        }
        Ok(())
    }

    /// Secrets are never written, only how many there are.
    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.str("jwt_secrets", &format!("<{} redacted>", self.secrets.len()));
        w.u64("jwt_leeway_ms", self.leeway.as_millis() as u64);
        w.strs("allowed_origins", &self.allowed_origins);
    }
}

/// `null`, or `scheme://host[:port]` as browsers send it: a scheme of
/// letters, digits, `+`, `-` and `.`; a host name or IPv4 address, or an
/// IPv6 address in brackets; an optional port 1-65535; nothing after.
fn is_origin(origin: &str) -> bool {
    if origin == "null" {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    scheme_ok && is_authority(authority)
}

fn is_authority(authority: &str) -> bool {
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => (v6.parse::<std::net::Ipv6Addr>().is_ok(), port),
            None => return false,
        },
        None => {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            (is_host_name(host), port)
        }
    };
    host_ok && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port))
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn is_port(digits: &str) -> bool {
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u16>().is_ok_and(|port| port > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_or_null() {
        for ok in [
            "https://app.example",
            "http://localhost:8080",
            "https://[::1]:443",
            "null",
            "chrome-extension://abcdef",
        ] {
            assert!(is_origin(ok), "{ok:?} refused");
        }
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://*.example",
            "*",
            "https://",
            "https://host:0",
            "https://host:99999",
            "https://host:",
            "https://[::1",
            "https://a b",
            "",
        ] {
            assert!(!is_origin(bad), "{bad:?} accepted");
        }
    }
}
