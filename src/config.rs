//! The server's effective configuration and the parsers for the value
//! syntax of `docs/protocol.md` (durations `25`, `500ms`, `2m`; sizes `64KiB`).
//!
//! Owns validation of every tuning value: a `Config` that exists is one the
//! server can run with. Knows nothing of clap (see `cli`) or of sockets.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::codes::limits;
use crate::proto::names::is_valid_room;

/// Everything `roomcast serve` runs with.
#[derive(Clone)]
pub struct Config {
    /// Address of the one public listener.
    pub bind: SocketAddr,
    /// A separate listener for `/metrics` and `/stats`; when set, the public
    /// port no longer serves them.
    pub metrics_bind: Option<SocketAddr>,
    /// Number of shard threads, each with its own event loop.
    pub shards: usize,
    /// HS256 secrets; a token signed with any of them is accepted.
    pub jwt_secrets: Vec<String>,
    /// Leeway applied to `exp` and `nbf`.
    pub jwt_leeway: Duration,
    /// Largest WebSocket message accepted (1009 above it).
    pub max_message_size: usize,
    /// Largest HTTP request head accepted (431 above it).
    pub max_header_bytes: usize,
    /// Bound on each connection's unsent output held in user space.
    pub max_write_buffer: usize,
    /// How often the server pings each connection.
    pub ping_interval: Duration,
    /// How long after a ping a silent connection is aborted.
    pub ping_timeout: Duration,
    /// Most WebSocket connections at once (503 above it).
    pub max_connections: usize,
    /// Most WebSocket connections from one IP address (429 above it); 0: no limit.
    pub max_connections_per_ip: usize,
    /// Origins allowed to upgrade; empty: any.
    pub allowed_origins: Vec<String>,
    /// How long queued output is flushed at shutdown before the exit.
    pub drain_timeout: Duration,
    /// Whether `/echo` is served.
    pub echo: bool,
    /// `--compression`: whether permessage-deflate is negotiated.
    pub compression: Compression,
    /// How connections reach the shards.
    pub accept_mode: AcceptMode,
    /// Verbosity of the lifecycle log on stderr.
    pub log_level: crate::log::Level,
    /// Text lines or JSON lines.
    pub log_format: crate::log::Format,
    /// WebSocket upgrade attempts per second per client address (IPv6: per
    /// /64), with a burst of as many; 0: no limit.
    pub handshake_rate: f64,
    /// Room behaviour: permissions, history, presence, limits.
    pub rooms: RoomsConfig,
    /// Cluster mode (`--redis`); `None`: one process, no Redis.
    pub cluster: Option<ClusterConfig>,
    /// Copies of the server on this machine (`--processes`), 1: just this one.
    pub processes: usize,
    /// `--demo`: run the price feed in-process and serve `/demo`.
    pub demo: bool,
    /// `--dashboard`: serve the live dashboard at `/`, beside `/stats`.
    pub dashboard: bool,
    /// `--tls-cert` and `--tls-key`: the public port speaks TLS.
    pub tls: Option<crate::tls::TlsFiles>,
    /// How long a new connection has for its TLS handshake and request
    /// head (and a kept-alive one for its next request).
    pub handshake_timeout: Duration,
    /// `POST /publish` messages per second per token subject (the token's
    /// `rate` overrides); 0: no limit.
    pub publish_rate: f64,
}

/// The flags of cluster mode (`docs/protocol.md` section 10, `docs/redis.md`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Rooms are spread over these by a hash of the room name.
    pub servers: Vec<crate::redis::url::RedisUrl>,
    /// Every key and channel starts with it.
    pub prefix: String,
    /// This node's name in the cluster: in its epochs and on the channels.
    pub node_id: String,
}

/// Most `--processes`.
const MAX_PROCESSES: usize = 64;

/// Longest `--node-id` and `--redis-prefix`.
const MAX_CLUSTER_NAME: usize = 64;

/// Whether `name` is a `--node-id` or `--redis-prefix`: 1-64 bytes that
/// the key and channel layout never uses as separators.
fn is_cluster_name(name: &str) -> bool {
    crate::redis::layout::is_name(name, MAX_CLUSTER_NAME)
}

/// The flags that shape rooms (`docs/protocol.md` sections 6-8).
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    /// Join patterns for tokens without a `rooms` claim.
    pub default_rooms: Vec<String>,
    /// Whether members may publish without a `pub` pattern.
    pub members_publish: bool,
    /// Rooms whose joins and leaves are announced.
    pub presence_rooms: Vec<String>,
    /// Rooms with more connections than this announce no joins and leaves.
    pub presence_event_limit: usize,
    /// Most rooms one connection may be in.
    pub max_rooms_per_connection: usize,
    /// Most connections in one room; 0: no limit.
    pub max_room_members: usize,
    /// Messages kept per room for `history` and recovery.
    pub history: usize,
    /// Age after which history entries are dropped.
    pub history_ttl: Duration,
    /// Messages per second per connection; 0: unlimited.
    pub rate_limit: f64,
    /// Messages a connection may send at once above the rate.
    pub rate_burst: f64,
    /// What happens to room events for a client over its write bound.
    pub slow_consumer: SlowConsumer,
}

/// `--compression`: whether the server negotiates permessage-deflate
/// (RFC 7692) with clients that offer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// `Sec-WebSocket-Extensions` is ignored: the wire is exactly v1.
    #[default]
    Off,
    /// An acceptable offer is agreed to (`docs/protocol.md`, decisions).
    On,
}

impl Compression {
    /// The flag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
        }
    }
}

/// The `--slow-consumer` policies of section 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowConsumer {
    /// Discard what is pending and close with 4008.
    Close,
    /// Drop the event for that client and tell it how many later.
    Drop,
    /// Keep only the newest undelivered event per room.
    Conflate,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_rooms: vec!["*".into()],
            members_publish: true,
            presence_rooms: vec!["*".into()],
            presence_event_limit: 1000,
            max_rooms_per_connection: 100,
            max_room_members: 0,
            history: 1,
            history_ttl: Duration::from_secs(300),
            rate_limit: 50.0,
            rate_burst: 100.0,
            slow_consumer: SlowConsumer::Close,
        }
    }
}

/// How accepted sockets are spread over the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptMode {
    /// One acceptor thread hands sockets round-robin to the shards.
    Handoff,
    /// Every shard accepts on its own `SO_REUSEPORT` listener.
    ReusePort,
}

/// Why a configuration value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A duration that is not `N`, `Nms`, `Ns` or `Nm`.
    BadDuration(String),
    /// A size that is not `N`, `NKiB` or `NMiB`.
    BadSize(String),
    /// A value outside what the server can run with.
    OutOfRange {
        flag: &'static str,
        reason: Cow<'static, str>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadDuration(v) => write!(
                f,
                "invalid duration {v:?}: expected seconds, or a number with ms, s or m"
            ),
            Self::BadSize(v) => write!(
                f,
                "invalid size {v:?}: expected bytes, or a number with KiB or MiB"
            ),
            Self::OutOfRange { flag, reason } => write!(f, "--{flag}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses `25` (seconds), `500ms`, `10s` or `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::BadDuration(text.to_owned());
    let text = text.trim();
    let (number, unit_millis) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1_000)
    };
    let n: u64 = number.trim().parse().map_err(|_| bad())?;
    n.checked_mul(unit_millis)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// Parses `65536` (bytes), `64KiB` or `16MiB`.
pub fn parse_size(text: &str) -> Result<usize, ConfigError> {
    let bad = || ConfigError::BadSize(text.to_owned());
    let text = text.trim();
    let (number, unit) = if let Some(n) = text.strip_suffix("KiB") {
        (n, 1024)
    } else if let Some(n) = text.strip_suffix("MiB") {
        (n, 1024 * 1024)
    } else {
        (text, 1)
    };
    let n: usize = number.trim().parse().map_err(|_| bad())?;
    n.checked_mul(unit).ok_or_else(bad)
}

/// The largest message size the server accepts at all (for Autobahn's 16 MiB cases, with room).
const MAX_MESSAGE_SIZE_CEILING: usize = 64 * 1024 * 1024;

impl Config {
    /// The effective configuration as one JSON object, for `/stats` and
    /// `--check-config`. Secrets are never written, only how many there are.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let rooms = &self.rooms;
        let mut w = crate::json::ObjectWriter::new(out);
        w.str("bind", &self.bind.to_string());
        match self.metrics_bind {
            Some(addr) => w.str("metrics_bind", &addr.to_string()),
            None => w.null("metrics_bind"),
        }
        w.u64("shards", self.shards as u64);
        w.str(
            "jwt_secrets",
            &format!("<{} redacted>", self.jwt_secrets.len()),
        );
        w.u64("jwt_leeway_ms", self.jwt_leeway.as_millis() as u64);
        w.u64("max_message_size", self.max_message_size as u64);
        w.u64("max_header_bytes", self.max_header_bytes as u64);
        w.u64("max_write_buffer", self.max_write_buffer as u64);
        w.u64("ping_interval_ms", self.ping_interval.as_millis() as u64);
        w.u64("ping_timeout_ms", self.ping_timeout.as_millis() as u64);
        w.u64("max_connections", self.max_connections as u64);
        w.u64("max_connections_per_ip", self.max_connections_per_ip as u64);
        w.strs("allowed_origins", &self.allowed_origins);
        w.u64("drain_timeout_ms", self.drain_timeout.as_millis() as u64);
        w.bool("echo", self.echo);
        w.str("compression", self.compression.as_str());
        w.str("log_level", self.log_level.as_str());
        w.str("log_format", self.log_format.as_str());
        w.f64("handshake_rate", self.handshake_rate);
        w.strs("default_rooms", &rooms.default_rooms);
        w.bool("members_publish", rooms.members_publish);
        w.strs("presence_rooms", &rooms.presence_rooms);
        w.u64("presence_event_limit", rooms.presence_event_limit as u64);
        w.u64(
            "max_rooms_per_connection",
            rooms.max_rooms_per_connection as u64,
        );
        w.u64("max_room_members", rooms.max_room_members as u64);
        w.u64("history", rooms.history as u64);
        w.u64("history_ttl_ms", rooms.history_ttl.as_millis() as u64);
        w.f64("rate_limit", rooms.rate_limit);
        w.f64("rate_burst", rooms.rate_burst);
        w.str("slow_consumer", rooms.slow_consumer.as_str());
        match &self.cluster {
            Some(cluster) => {
                let servers: Vec<String> = cluster.servers.iter().map(|u| u.to_string()).collect();
                w.strs("redis", &servers);
                w.str("redis_prefix", &cluster.prefix);
                w.str("node_id", &cluster.node_id);
            }
            None => w.strs("redis", &[]),
        }
        w.u64("processes", self.processes as u64);
        w.bool("demo", self.demo);
        w.bool("dashboard", self.dashboard);
        match &self.tls {
            Some(files) => {
                w.str("tls_cert", &files.cert.display().to_string());
                w.str("tls_key", &files.key.display().to_string());
            }
            None => w.null("tls_cert"),
        }
        w.u64(
            "handshake_timeout_ms",
            self.handshake_timeout.as_millis() as u64,
        );
        w.f64("publish_rate", self.publish_rate);
        w.close();
    }

    /// Checks that the values fit together; the first problem found is
    /// returned, naming its flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_sizes()?;
        self.validate_durations()?;
        self.validate_limits()?;
        self.validate_rooms()?;
        self.validate_addresses()?;
        if self.jwt_secrets.iter().any(|s| s.is_empty()) {
            return out_of_range("jwt-secret", "a secret must not be empty");
        }
        Ok(())
    }

    /// `--max-connections` against the process's open-file limit, less the
    /// descriptors the listeners, pollers and plain HTTP requests need.
    pub fn validate_open_files(&self, open_file_limit: usize) -> Result<(), ConfigError> {
        let most = max_connections_for(open_file_limit);
        if self.max_connections > most {
            return out_of_range(
                "max-connections",
                format!(
                    "must be at most {most} (the open-file limit {open_file_limit} less {} \
                     reserved); raise the limit with ulimit -n",
                    limits::FD_RESERVE
                ),
            );
        }
        Ok(())
    }

    fn validate_sizes(&self) -> Result<(), ConfigError> {
        if self.shards == 0 || self.shards > 1024 {
            return out_of_range("shards", "must be between 1 and 1024");
        }
        if self.max_message_size == 0 || self.max_message_size > MAX_MESSAGE_SIZE_CEILING {
            return out_of_range("max-message-size", "must be between 1 byte and 64MiB");
        }
        if self.max_header_bytes < 256 || self.max_header_bytes > 1024 * 1024 {
            return out_of_range("max-header-bytes", "must be between 256 bytes and 1MiB");
        }
        if self.max_write_buffer < 1024 {
            return out_of_range("max-write-buffer", "must be at least 1KiB");
        }
        if self.max_write_buffer < self.max_message_size {
            return out_of_range(
                "max-write-buffer",
                format!(
                    "must be at least --max-message-size ({} bytes)",
                    self.max_message_size
                ),
            );
        }
        Ok(())
    }

    fn validate_durations(&self) -> Result<(), ConfigError> {
        let heartbeat = 10..=limits::MAX_HEARTBEAT_SECS * 1000;
        if !heartbeat.contains(&millis(self.ping_interval)) {
            return out_of_range("ping-interval", "must be between 10ms and 60m");
        }
        if !heartbeat.contains(&millis(self.ping_timeout)) {
            return out_of_range("ping-timeout", "must be between 10ms and 60m");
        }
        if self.jwt_leeway > Duration::from_secs(limits::MAX_JWT_LEEWAY_SECS) {
            return out_of_range("jwt-leeway", "must be at most 60s");
        }
        if self.drain_timeout > Duration::from_secs(limits::MAX_DRAIN_TIMEOUT_SECS) {
            return out_of_range("drain-timeout", "must be at most 10m");
        }
        if self.demo && self.tls.is_some() {
            return out_of_range(
                "demo",
                "the in-process demo feed publishes over plain HTTP; run `roomcast demo-feed` beside a TLS server instead",
            );
        }
        let handshake = 100..=limits::MAX_HANDSHAKE_TIMEOUT_SECS * 1000;
        if !handshake.contains(&millis(self.handshake_timeout)) {
            return out_of_range("handshake-timeout", "must be between 100ms and 5m");
        }
        if self.rooms.history > 0 && self.rooms.history_ttl < Duration::from_secs(1) {
            return out_of_range(
                "history-ttl",
                "must be at least 1s when --history is above 0",
            );
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return out_of_range("max-connections", "must be at least 1");
        }
        if !is_rate(self.publish_rate) {
            return out_of_range("publish-rate", "must be a number >= 0");
        }
        if !is_rate(self.handshake_rate) {
            return out_of_range("handshake-rate", "must be a number >= 0");
        }
        let rooms = &self.rooms;
        if rooms.history > limits::MAX_HISTORY {
            return out_of_range("history", "must be at most 10000");
        }
        if rooms.max_rooms_per_connection == 0 || rooms.max_rooms_per_connection > 10_000 {
            return out_of_range("max-rooms-per-connection", "must be between 1 and 10000");
        }
        if rooms.presence_event_limit == 0 {
            return out_of_range("presence-event-limit", "must be at least 1");
        }
        if !is_rate(rooms.rate_limit) {
            return out_of_range("rate-limit", "must be a number >= 0");
        }
        if !(rooms.rate_burst >= 1.0 && rooms.rate_burst.is_finite()) {
            return out_of_range("rate-burst", "must be a number >= 1");
        }
        self.validate_cluster()?;
        self.validate_processes()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        const NAME: &str = "must be 1-64 characters of A-Z, a-z, 0-9, _, - and .";
        if !is_cluster_name(&cluster.node_id) {
            return out_of_range("node-id", NAME);
        }
        if !is_cluster_name(&cluster.prefix) {
            return out_of_range("redis-prefix", NAME);
        }
        if cluster.servers.iter().any(|url| url.tls) {
            return out_of_range("redis", "rediss:// (TLS to Redis) is not supported yet");
        }
        if self.shards > 64 {
            return out_of_range("shards", "must be at most 64 with --redis");
        }
        Ok(())
    }

    fn validate_processes(&self) -> Result<(), ConfigError> {
        if self.processes == 0 || self.processes > MAX_PROCESSES {
            return out_of_range("processes", "must be between 1 and 64");
        }
        if self.processes == 1 {
            return Ok(());
        }
        if self.cluster.is_none() {
            return out_of_range(
                "processes",
                "needs --redis: the processes share their rooms through it",
            );
        }
        if self.bind.port() == 0 || self.metrics_bind.is_some_and(|a| a.port() == 0) {
            return out_of_range(
                "processes",
                "needs a fixed --bind port (and --metrics-bind port): every process listens on it",
            );
        }
        Ok(())
    }

    fn validate_rooms(&self) -> Result<(), ConfigError> {
        let lists = [
            ("default-rooms", &self.rooms.default_rooms),
            ("presence-rooms", &self.rooms.presence_rooms),
        ];
        for (flag, patterns) in lists {
            if let Some(bad) = patterns.iter().find(|p| !is_room_pattern(p)) {
                return out_of_range(
                    flag,
                    format!(
                        "{bad:?} is not a room pattern (an exact room name, a prefix ending \
                         in *, or *)"
                    ),
                );
            }
        }
        Ok(())
    }

    fn validate_addresses(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self.allowed_origins.iter().find(|o| !is_origin(o)) {
            return out_of_range(
                "allowed-origins",
                format!(
                    "{bad:?} is not an origin: expected scheme://host or scheme://host:port \
                     (no path, no trailing slash, no wildcard) or null"
                ),
            );
        }
        if let Some(metrics) = self.metrics_bind
            && same_listener(metrics, self.bind)
        {
            return out_of_range("metrics-bind", "must differ from --bind (use another port)");
        }
        Ok(())
    }
}

fn out_of_range(
    flag: &'static str,
    reason: impl Into<Cow<'static, str>>,
) -> Result<(), ConfigError> {
    Err(ConfigError::OutOfRange {
        flag,
        reason: reason.into(),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn is_rate(rate: f64) -> bool {
    rate >= 0.0 && rate.is_finite()
}

/// The largest `--max-connections` an open-file limit leaves room for.
pub fn max_connections_for(open_file_limit: usize) -> usize {
    open_file_limit.saturating_sub(limits::FD_RESERVE).max(1)
}

/// An exact room name, a room-name prefix ending in `*`, or `*` alone
/// (what `proto::names::pattern_matches` understands).
fn is_room_pattern(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => is_valid_room(prefix),
        None => is_valid_room(pattern),
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

/// Two explicit addresses that would be the same listener: one port, not
/// 0, and the same address or a wildcard on either side.
fn same_listener(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

// By hand, so that printing a configuration never prints a secret.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut json = Vec::new();
        self.write_json(&mut json);
        f.write_str(&String::from_utf8_lossy(&json))
    }
}

impl SlowConsumer {
    /// The flag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Close => "close",
            Self::Drop => "drop",
            Self::Conflate => "conflate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_documented_suffixes() {
        assert_eq!(parse_duration("25"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "ms", "-1", "1h", "1.5s", "99999999999999999999m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_take_the_documented_suffixes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        for bad in ["", "KiB", "1GB", "-5", "1.5MiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

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

    #[test]
    fn room_patterns_are_names_prefixes_or_star() {
        for ok in ["*", "lobby", "prices:*", "a.b/c@d-e_f:*"] {
            assert!(is_room_pattern(ok), "{ok:?} refused");
        }
        for bad in [
            "",
            "**",
            "a*b",
            "*a",
            "with space",
            "p:**",
            &"r".repeat(129),
        ] {
            assert!(!is_room_pattern(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_metrics_listener_must_be_another_one() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(same_listener(
            addr("127.0.0.1:9000"),
            addr("127.0.0.1:9000")
        ));
        assert!(same_listener(addr("0.0.0.0:9000"), addr("127.0.0.1:9000")));
        assert!(!same_listener(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
        assert!(!same_listener(
            addr("127.0.0.1:9000"),
            addr("127.0.0.1:9001")
        ));
        assert!(!same_listener(
            addr("127.0.0.1:9000"),
            addr("127.0.0.2:9000")
        ));
    }
}
