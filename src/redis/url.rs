//! `--redis` URLs: `redis://[[user]:password@]host[:port][/db]`,
//! `rediss://` for TLS, and
//! `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]`
//! for a master that Redis Sentinel names (the hosts are Sentinels), and
//! `redis+cluster://[[user]:password@]host:port[,host:port...]` for a Redis
//! Cluster (the hosts are seed nodes).
//!
//! Owns the parsing and the typed result; connecting is the bridge's job.
//! The password is kept out of `Debug` and `Display`, so a URL can be
//! logged.

use std::fmt;

/// The port when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;
/// A Sentinel's port when a `redis+sentinel://` URL names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

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
    /// How the server at `host:port` is found.
    pub topology: Topology,
}

/// What kind of deployment a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// `redis://` or `rediss://`: the one server at `host:port`.
    Server,
    /// `redis+sentinel://`: the server is whichever master the Sentinels
    /// name, found at run time; `host` and `port` are then the first
    /// Sentinel's. The credentials and `db` are the master's: Sentinels
    /// are asked without `AUTH`.
    Sentinel(Sentinels),
    /// `redis+cluster://`: every seed node given, the first being
    /// `host:port`.
    Cluster(Vec<(String, u16)>),
}

/// Where a `redis+sentinel://` URL's master is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinels {
    /// The master's name in Sentinel (`sentinel monitor NAME ...`).
    pub master: String,
    /// Each Sentinel's host and port, in the URL's order (the order they
    /// are asked in).
    pub addrs: Vec<(String, u16)>,
}

/// Why a `--redis` value is not a Redis URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// Not `redis://`, `rediss://` or `redis+sentinel://`.
    Scheme,
    /// No host, or a bracketed IPv6 host without its `]`.
    Host,
    /// A port that is not a number in 1..=65535.
    Port,
    /// A database that is not a number.
    Db,
    /// A `redis+sentinel://` URL without the master's name after the hosts.
    Master,
    /// A `%` not followed by two hex digits, or not UTF-8 once decoded.
    Escape,
    /// `redis+cluster://` with a database: a Redis Cluster has only 0.
    ClusterDb,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::Scheme => {
                "a Redis URL starts with redis://, rediss://, redis+sentinel:// or redis+cluster://"
            }
            UrlError::Host => "the Redis URL has no valid host",
            UrlError::Port => "the Redis URL's port is not a number from 1 to 65535",
            UrlError::Db => "the Redis URL's database (after /) is not a number",
            UrlError::Master => {
                "a redis+sentinel:// URL names the master after the hosts: /MASTER[/db]"
            }
            UrlError::Escape => "the Redis URL has a malformed %-escape",
            UrlError::ClusterDb => {
                "a redis+cluster:// URL names no database (a Redis Cluster has only 0)"
            }
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
        let (tls, sentinel, rest) = if let Some(rest) = url.strip_prefix("redis://") {
            (false, false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (true, false, rest)
        } else if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            (false, true, rest)
        } else {
            return Err(UrlError::Scheme);
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.split(['?', '#']).next().unwrap_or("");
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
        let (topology, path) = if sentinel {
            let (master, db) = path.split_once('/').unwrap_or((path, ""));
            let master = non_empty(decode(master)?).ok_or(UrlError::Master)?;
            let addrs = hostport
                .split(',')
                .map(|h| host_and_port(h, DEFAULT_SENTINEL_PORT))
                .collect::<Result<_, _>>()?;
            (Topology::Sentinel(Sentinels { master, addrs }), db)
        } else {
            (Topology::Server, path)
        };
        let (host, port) = match &topology {
            Topology::Sentinel(sentinels) => sentinels.addrs[0].clone(),
            _ if hostport.contains(',') => return Err(UrlError::Host),
            _ => host_and_port(hostport, DEFAULT_PORT)?,
        };
        let db = match path {
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
            topology,
        })
    }
}

/// `redis+cluster://[[user]:password@]host:port[,host:port...]`.
fn cluster_url(rest: &str) -> Result<RedisUrl, UrlError> {
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !path.split(['?', '#']).next().unwrap_or("").is_empty() {
        return Err(UrlError::ClusterDb);
    }
    let mut hosts = hosts.split(',');
    let first = hosts.next().unwrap_or("");
    let mut url: RedisUrl = format!("redis://{first}").parse()?;
    let mut seeds = vec![(url.host.clone(), url.port)];
    for seed in hosts {
        seeds.push(host_and_port(seed, DEFAULT_PORT)?);
    }
    url.topology = Topology::Cluster(seeds);
    Ok(url)
}

impl RedisUrl {
    /// A `redis+cluster://` URL.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(_))
    }

    /// The Sentinels of a `redis+sentinel://` URL.
    pub fn sentinels(&self) -> Option<&Sentinels> {
        match &self.topology {
            Topology::Sentinel(sentinels) => Some(sentinels),
            _ => None,
        }
    }

    /// The seed nodes of a `redis+cluster://` URL; empty for any other.
    pub fn seeds(&self) -> &[(String, u16)] {
        match &self.topology {
            Topology::Cluster(seeds) => seeds,
            _ => &[],
        }
    }

    /// The same credentials, at `host:port` (a cluster node the slot map names).
    pub fn at(&self, host: &str, port: u16) -> RedisUrl {
        RedisUrl {
            host: host.to_owned(),
            port,
            topology: Topology::Server,
            ..self.clone()
        }
    }
}

/// A comma-separated list of URLs (`--redis`, `ROOMCAST_REDIS`). A comma
/// inside a URL separates a `redis+sentinel://` URL's hosts; only one
/// followed by a scheme (`name://`) starts the next URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrls(pub Vec<RedisUrl>);

impl std::str::FromStr for RedisUrls {
    type Err = UrlError;

    fn from_str(list: &str) -> Result<Self, UrlError> {
        let mut urls = Vec::new();
        let mut start = 0;
        for (comma, _) in list.match_indices(',') {
            if starts_with_scheme(&list[comma + 1..]) {
                urls.push(list[start..comma].parse()?);
                start = comma + 1;
            }
        }
        urls.push(list[start..].parse()?);
        Ok(RedisUrls(urls))
    }
}

fn starts_with_scheme(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    })
}

fn host_and_port(hostport: &str, default_port: u16) -> Result<(String, u16), UrlError> {
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
        None => default_port,
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
        let scheme = match (&self.topology, self.tls) {
            (Topology::Cluster(_), _) => "redis+cluster",
            (Topology::Sentinel(_), _) => "redis+sentinel",
            (Topology::Server, true) => "rediss",
            (Topology::Server, false) => "redis",
        };
        write!(f, "{scheme}://")?;
        match (&self.user, &self.password) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (Some(user), None) => write!(f, "{user}@")?,
            (None, None) => {}
        }
        match &self.topology {
            Topology::Server => {
                write_host(f, &self.host, self.port)?;
                write!(f, "/{}", self.db)
            }
            Topology::Sentinel(sentinels) => {
                write_hosts(f, &sentinels.addrs)?;
                write!(f, "/{}/{}", sentinels.master, self.db)
            }
            Topology::Cluster(seeds) => write_hosts(f, seeds),
        }
    }
}

fn write_host(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

/// Hosts separated by commas, as a URL lists Sentinels or seed nodes.
fn write_hosts(f: &mut fmt::Formatter<'_>, hosts: &[(String, u16)]) -> fmt::Result {
    for (i, (host, port)) in hosts.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write_host(f, host, *port)?;
    }
    Ok(())
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

    #[test]
    fn a_sentinel_url_names_its_sentinels_and_master() {
        let u = url("redis+sentinel://app:pw@10.0.0.1:26380,[::1],s3/cache/2");
        let sentinels = u.sentinels().unwrap();
        assert_eq!(sentinels.master, "cache");
        assert_eq!(
            sentinels.addrs,
            [
                ("10.0.0.1".to_string(), 26380),
                ("::1".to_string(), 26379),
                ("s3".to_string(), 26379)
            ]
        );
        assert_eq!((u.host.as_str(), u.port, u.db), ("10.0.0.1", 26380, 2));
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("app"), Some("pw"))
        );
        assert_eq!(
            u.to_string(),
            "redis+sentinel://app:***@10.0.0.1:26380,[::1]:26379,s3:26379/cache/2"
        );
        let u = url("redis+sentinel://h:1/mymaster");
        assert_eq!(
            (u.sentinels().unwrap().master.as_str(), u.db),
            ("mymaster", 0)
        );
        assert_eq!(url("redis://h").topology, Topology::Server);
    }

    #[test]
    fn a_list_splits_only_before_a_scheme() {
        let list: RedisUrls = "redis://a:1,redis+sentinel://s1,s2:2/m,rediss://b"
            .parse()
            .unwrap();
        let shown: Vec<String> = list.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "redis://a:1/0",
                "redis+sentinel://s1:26379,s2:2/m/0",
                "rediss://b:6379/0"
            ]
        );
        assert_eq!("redis://a,".parse::<RedisUrls>(), Err(UrlError::Host));
        assert_eq!("redis://a,b".parse::<RedisUrls>(), Err(UrlError::Host));
    }

    #[test]
    fn a_cluster_url_lists_its_seeds_and_hides_its_password() {
        let u = url("redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002");
        assert!(u.is_cluster());
        assert_eq!((u.host.as_str(), u.port, u.db), ("10.0.0.1", 7000, 0));
        assert_eq!(
            u.seeds(),
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
        for (text, error) in [
            ("redis+cluster://h:1/2", UrlError::ClusterDb),
            ("redis+cluster://h:1,h:0", UrlError::Port),
            ("redis+cluster://h:1,", UrlError::Host),
            ("redis+cluster://", UrlError::Host),
        ] {
            assert_eq!(text.parse::<RedisUrl>(), Err(error), "{text}");
        }
        let list: RedisUrls = "redis+cluster://h1:7000,h2:7001,redis://c:1"
            .parse()
            .unwrap();
        assert_eq!(list.0.len(), 2);
        assert_eq!(list.0[0].seeds().len(), 2);
        assert_eq!(list.0[1].host, "c");
    }

    #[test]
    fn bad_sentinel_urls_say_what_is_wrong() {
        for (text, error) in [
            ("redis+sentinel://h:1", UrlError::Master),
            ("redis+sentinel://h:1/", UrlError::Master),
            ("redis+sentinel://h:1//0", UrlError::Master),
            ("redis+sentinel:///m", UrlError::Host),
            ("redis+sentinel://h:1,/m", UrlError::Host),
            ("redis+sentinel://,/m", UrlError::Host),
            ("redis+sentinel://h:1,h:0/m", UrlError::Port),
            ("redis+sentinel://h:x/m", UrlError::Port),
            ("redis+sentinel://h/m/x", UrlError::Db),
            ("redis+sentinel://h/m/0/1", UrlError::Db),
            ("redis+sentinels://h/m", UrlError::Scheme),
        ] {
            assert_eq!(text.parse::<RedisUrl>(), Err(error), "{text}");
        }
    }
}
