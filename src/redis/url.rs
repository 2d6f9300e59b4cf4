//! `--redis` URLs: `redis://[[user]:password@]host[:port][/db]`,
//! `rediss://` for TLS, and `redis+cluster://[[user]:password@]host:port[,host:port...]`
//! for a Redis Cluster (its seed nodes).
//!
//! Owns the parsing and the typed result; connecting is the bridge's job.
//! The password is kept out of `Debug` and `Display`, so a URL can be
//! logged.

use std::fmt;

/// The port when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// One Redis server to connect to.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// For `AUTH user password` (Redis 6 ACLs); `None` with a password
    /// alone means `AUTH password`.
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `redis+cluster://`: every seed node given, the first being
    /// `host:port`; empty for any other URL.
    pub seeds: Vec<(String, u16)>,
}

/// Why a `--redis` value is not a Redis URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// Not `redis://` or `rediss://`.
    Scheme,
    /// No host, or a bracketed IPv6 host without its `]`.
    Host,
    /// A port that is not a number in 1..=65535.
    Port,
    /// A database that is not a number.
    Db,
    /// A `%` not followed by two hex digits, or not UTF-8 once decoded.
    Escape,
    /// `redis+cluster://` with a database: a Redis Cluster has only 0.
    ClusterDb,
    /// A bare `host:port` that follows no `redis+cluster://` URL.
    Seed,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::Scheme => "a Redis URL starts with redis:// or rediss://",
            UrlError::Host => "the Redis URL has no valid host",
            UrlError::Port => "the Redis URL's port is not a number from 1 to 65535",
            UrlError::Db => "the Redis URL's database (after /) is not a number",
            UrlError::Escape => "the Redis URL has a malformed %-escape",
            UrlError::ClusterDb => {
                "a redis+cluster:// URL names no database (a Redis Cluster has only 0)"
            }
            UrlError::Seed => "a bare host:port in --redis follows only a redis+cluster:// URL",
        })
    }
}

impl std::error::Error for UrlError {}

impl std::str::FromStr for RedisUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            return cluster_url(rest);
        }
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(UrlError::Scheme);
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (non_empty(decode(user)?), Some(decode(password)?)),
                None => (non_empty(decode(info)?), None),
            },
        };
        let (host, port) = host_and_port(hostport)?;
        let db = match path.split(['?', '#']).next().unwrap_or("") {
            "" => 0,
            db => db.parse().map_err(|_| UrlError::Db)?,
        };
        Ok(RedisUrl {
            tls,
            host,
            port,
            user,
            password,
            db,
            seeds: Vec::new(),
        })
    }
}

/// `redis+cluster://[[user]:password@]host:port[,host:port...]`.
fn cluster_url(rest: &str) -> Result<RedisUrl, UrlError> {
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !path.split(['?', '#']).next().unwrap_or("").is_empty() {
        return Err(UrlError::ClusterDb);
    }
    let (first, others) = hosts.split_once(',').unwrap_or((hosts, ""));
    let mut url: RedisUrl = format!("redis://{first}").parse()?;
    url.seeds.push((url.host.clone(), url.port));
    for seed in others.split(',').filter(|s| !s.is_empty()) {
        url.seeds.push(host_and_port(seed)?);
    }
    Ok(url)
}

impl RedisUrl {
    /// A `redis+cluster://` URL.
    pub fn is_cluster(&self) -> bool {
        !self.seeds.is_empty()
    }

    /// The same credentials, at `host:port` (a cluster node the slot map names).
    pub fn at(&self, host: &str, port: u16) -> RedisUrl {
        RedisUrl {
            host: host.to_owned(),
            port,
            seeds: Vec::new(),
            ..self.clone()
        }
    }
}

/// The values of `--redis`: URLs separated by commas, where a bare
/// `host:port` after a `redis+cluster://` URL is one more seed of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrls(pub Vec<RedisUrl>);

impl std::str::FromStr for RedisUrls {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Self, UrlError> {
        let mut urls: Vec<RedisUrl> = Vec::new();
        for part in text.split(',') {
            if part.contains("://") {
                urls.push(part.parse()?);
                continue;
            }
            match urls.last_mut() {
                Some(cluster) if cluster.is_cluster() && !part.is_empty() => {
                    cluster.seeds.push(host_and_port(part)?);
                }
                _ => return Err(UrlError::Seed),
            }
        }
        Ok(RedisUrls(urls))
    }
}

fn host_and_port(hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(UrlError::Host)?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::Host);
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or(UrlError::Port)?,
    };
    Ok((host.to_owned(), port))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Percent-decoding, for passwords with reserved characters.
fn decode(s: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(UrlError::Escape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::Escape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Escape)
}

impl fmt::Display for RedisUrl {
    /// The URL with the password hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (self.is_cluster(), self.tls) {
            (true, _) => "redis+cluster",
            (false, true) => "rediss",
            (false, false) => "redis",
        };
        write!(f, "{scheme}://")?;
        match (&self.user, &self.password) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (Some(user), None) => write!(f, "{user}@")?,
            (None, None) => {}
        }
        if self.is_cluster() {
            for (i, (host, port)) in self.seeds.iter().enumerate() {
                let comma = if i > 0 { "," } else { "" };
                write_host(f, comma, host, *port)?;
            }
            return Ok(());
        }
        write_host(f, "", &self.host, self.port)?;
        write!(f, "/{}", self.db)
    }
}

fn write_host(f: &mut fmt::Formatter<'_>, before: &str, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "{before}[{host}]:{port}")
    } else {
        write!(f, "{before}{host}:{port}")
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RedisUrl {
        s.parse().unwrap()
    }

    #[test]
    fn host_port_and_db_default_and_parse() {
        let u = url("redis://127.0.0.1");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.db),
            (false, "127.0.0.1", 6379, 0)
        );
        let u = url("rediss://cache.internal:6380/3");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.db),
            (true, "cache.internal", 6380, 3)
        );
        let u = url("redis://[::1]:7000/");
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let u = url("redis://:p%40ss%3Aword@h:1");
        assert_eq!((u.user, u.password.as_deref()), (None, Some("p@ss:word")));
        let u = url("redis://app:s3cret@h");
        assert_eq!(u.user.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(u.to_string(), "redis://app:***@h:6379/0");
    }

    #[test]
    fn a_cluster_url_lists_its_seeds_and_hides_its_password() {
        let u = url("redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002");
        assert!(u.is_cluster());
        assert_eq!((u.host.as_str(), u.port, u.db), ("10.0.0.1", 7000, 0));
        assert_eq!(
            u.seeds,
            [
                ("10.0.0.1".to_owned(), 7000),
                ("10.0.0.2".to_owned(), 7001),
                ("::1".to_owned(), 7002)
            ]
        );
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            u.to_string(),
            "redis+cluster://app:***@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002"
        );
        let node = u.at("10.0.0.3", 7003);
        assert!(!node.is_cluster());
        assert_eq!(node.to_string(), "redis://app:***@10.0.0.3:7003/0");
        assert!(!url("redis://h").is_cluster());
        assert_eq!(
            "redis+cluster://h:1/2".parse::<RedisUrl>(),
            Err(UrlError::ClusterDb)
        );
        assert_eq!(
            "redis+cluster://h:1,h:0".parse::<RedisUrl>(),
            Err(UrlError::Port)
        );
    }

    #[test]
    fn a_list_splits_at_commas_and_keeps_a_cluster_s_seeds_together() {
        let list: RedisUrls = "redis+cluster://h1:7000,h2:7001,redis://c:1"
            .parse()
            .unwrap();
        assert_eq!(list.0.len(), 2);
        assert_eq!(list.0[0].seeds.len(), 2);
        assert_eq!(list.0[1].host, "c");
        let two: RedisUrls = "redis://a:1,redis://:pw@b/2".parse().unwrap();
        assert_eq!(two.0.len(), 2);
        assert_eq!("redis://a,b:1".parse::<RedisUrls>(), Err(UrlError::Seed));
        assert_eq!("b:1".parse::<RedisUrls>(), Err(UrlError::Seed));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (text, error) in [
            ("http://h", UrlError::Scheme),
            ("redis://", UrlError::Host),
            ("redis://:pw@", UrlError::Host),
            ("redis://[::1", UrlError::Host),
            ("redis://h:0", UrlError::Port),
            ("redis://h:70000", UrlError::Port),
            ("redis://h:x", UrlError::Port),
            ("redis://h/zero", UrlError::Db),
            ("redis://:%zz@h", UrlError::Escape),
            ("redis://:%4@h", UrlError::Escape),
        ] {
            assert_eq!(text.parse::<RedisUrl>(), Err(error), "{text}");
        }
    }
}
