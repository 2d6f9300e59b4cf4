//! Hook URLs (section 13): `http://host[:port][/path][?query]` and
//! `https://...`, parsed once when the configuration is read.
//!
//! Owns the syntax, its bounds and the typed result; resolving and
//! connecting are the client thread's (`hooks::client`). No user info (a
//! password in a URL would end up in logs and `--check-config`, and the
//! signature already says who is calling), no fragment (never sent), and
//! only the visible ASCII of RFC 3986 in the path, so the request line
//! roomcast writes is always valid. A query often carries a backend's key
//! (`?token=...`), so `Display` and `Debug` show that there is one, not
//! what it says, and a URL can be logged or printed by `--check-config`.

use std::fmt;

/// Longest hook URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Longest host name (RFC 1035's 253 characters of a domain name).
pub const MAX_HOST_LEN: usize = 253;

/// One backend endpoint that hooks are POSTed to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HookUrl {
    /// `https`: the connection is TLS, the host's certificate checked.
    pub tls: bool,
    /// A name, an IPv4 address, or an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// The request target: the path, with its query if any; `/` when the
    /// URL has none.
    pub path: String,
}

/// Why a value is not a hook URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// Longer than `MAX_URL_LEN`.
    TooLong,
    /// Neither `http://` nor `https://`.
    Scheme,
    /// `user:password@` before the host.
    UserInfo,
    /// No host, a host over `MAX_HOST_LEN` or with characters no host
    /// name has, or a bracketed IPv6 address that does not parse.
    Host,
    /// A port that is not a number in 1..=65535.
    Port,
    /// A space, a control character or a non-ASCII byte in the path.
    Path,
    /// A `#fragment`.
    Fragment,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLong => "a hook URL must be at most 2048 bytes",
            Self::Scheme => "a hook URL starts with http:// or https://",
            Self::UserInfo => "a hook URL must not carry user:password@",
            Self::Host => "the hook URL has no valid host",
            Self::Port => "the hook URL's port is not a number from 1 to 65535",
            Self::Path => "the hook URL's path must be visible ASCII (percent-encode the rest)",
            Self::Fragment => "a hook URL must not have a #fragment",
        })
    }
}

impl std::error::Error for UrlError {}

impl HookUrl {
    /// The port a scheme implies, left out of `Host`.
    pub const fn default_port(tls: bool) -> u16 {
        if tls { 443 } else { 80 }
    }

    /// The `Host` header's value: the host (bracketed if IPv6) and the
    /// port unless it is the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == Self::default_port(self.tls) {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl std::str::FromStr for HookUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        if url.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(UrlError::Scheme),
        };
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = host_and_port(authority, tls)?;
        let path = match target {
            "" => "/".to_owned(),
            query if query.starts_with('?') => format!("/{query}"),
            path => path.to_owned(),
        };
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UrlError::Path);
        }
        Ok(Self {
            tls,
            host,
            port,
            path,
        })
    }
}

fn host_and_port(authority: &str, tls: bool) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(UrlError::Host)?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| UrlError::Host)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or(UrlError::Port)?)),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let name_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !name_ok {
            return Err(UrlError::Host);
        }
        (host, port)
    };
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return Err(UrlError::Host);
    }
    let port = match port {
        None => HookUrl::default_port(tls),
        Some(digits) => digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse::<u16>().ok())
            .flatten()
            .filter(|&p| p != 0)
            .ok_or(UrlError::Port)?,
    };
    Ok((host.to_owned(), port))
}

impl fmt::Display for HookUrl {
    /// The URL with its query hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        let (path, query) = match self.path.split_once('?') {
            Some((path, _)) => (path, "?***"),
            None => (self.path.as_str(), ""),
        };
        write!(f, "{scheme}://{}{path}{query}", self.authority())
    }
}

impl fmt::Debug for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HookUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> HookUrl {
        text.parse().unwrap()
    }

    #[test]
    fn scheme_host_port_and_path_default_and_parse() {
        let u = url("http://backend");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (false, "backend", 80, "/")
        );
        let u = url("https://api.example.com:8443/hooks/connect?v=2");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "api.example.com", 8443, "/hooks/connect?v=2")
        );
        assert_eq!(url("http://h?x=1").path, "/?x=1");
        let u = url("http://[::1]:9000/p");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(url("https://127.0.0.1/").port, 443);
    }

    #[test]
    fn the_host_header_leaves_out_the_default_port() {
        assert_eq!(url("http://h/").authority(), "h");
        assert_eq!(url("http://h:80/").authority(), "h");
        assert_eq!(url("https://h:80/").authority(), "h:80");
        assert_eq!(url("http://[::1]:81/").authority(), "[::1]:81");
        assert_eq!(url("https://h:8443/a").to_string(), "https://h:8443/a");
    }

    #[test]
    fn a_query_is_sent_but_never_shown() {
        let u = url("https://h/hooks?token=s3cret&v=1");
        assert_eq!(u.path, "/hooks?token=s3cret&v=1");
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(u.to_string(), "https://h/hooks?***");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let long = format!("http://h/{}", "a".repeat(MAX_URL_LEN));
        let long_host = format!("http://{}/", "a".repeat(MAX_HOST_LEN + 1));
        for (text, error) in [
            (long.as_str(), UrlError::TooLong),
            ("ftp://h/", UrlError::Scheme),
            ("HTTP://h/", UrlError::Scheme),
            ("h/", UrlError::Scheme),
            ("http://user:pw@h/", UrlError::UserInfo),
            ("http:///path", UrlError::Host),
            ("http://", UrlError::Host),
            (long_host.as_str(), UrlError::Host),
            ("http://a b/", UrlError::Host),
            ("http://[::1/", UrlError::Host),
            ("http://[nope]/", UrlError::Host),
            ("http://[::1]x/", UrlError::Port),
            ("http://h:0/", UrlError::Port),
            ("http://h:65536/", UrlError::Port),
            ("http://h:+80/", UrlError::Port),
            ("http://h:/", UrlError::Port),
            ("http://h/a b", UrlError::Path),
            ("http://h/\u{e9}", UrlError::Path),
            ("http://h/a#b", UrlError::Fragment),
        ] {
            assert_eq!(text.parse::<HookUrl>(), Err(error), "{text}");
        }
    }
}
