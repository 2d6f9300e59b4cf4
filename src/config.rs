//! The server's effective configuration and the parsers for the value
//! syntax of `docs/protocol.md` (durations `25`, `500ms`, `2m`; sizes `64KiB`).
//!
//! Owns validation of every tuning value: a `Config` that exists is one the
//! server can run with. Knows nothing of clap (see `cli`) or of sockets.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::codes::limits;

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
    /// How connections reach the shards.
    pub accept_mode: AcceptMode,
    /// Verbosity of the lifecycle log on stderr.
    pub log_level: crate::log::Level,
    /// Room behaviour: permissions, history, presence, limits.
    pub rooms: RoomsConfig,
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
        reason: &'static str,
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

/// The most messages a room may keep.
const MAX_HISTORY: usize = 10_000;

/// The largest message size the server accepts at all (for Autobahn's 16 MiB cases, with room).
const MAX_MESSAGE_SIZE_CEILING: usize = 64 * 1024 * 1024;

impl Config {
    /// The effective configuration as one JSON object, for `/stats` and
    /// `--check-config`. Secrets are never written, only how many there are.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let rooms = &self.rooms;
        let mut w = JsonFields::new(out);
        w.str("bind", &self.bind.to_string());
        match self.metrics_bind {
            Some(addr) => w.str("metrics_bind", &addr.to_string()),
            None => w.raw("metrics_bind", b"null"),
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
        w.raw("echo", if self.echo { b"true" } else { b"false" });
        w.str("log_level", self.log_level.as_str());
        w.strs("default_rooms", &rooms.default_rooms);
        w.raw(
            "members_publish",
            if rooms.members_publish {
                b"true"
            } else {
                b"false"
            },
        );
        w.strs("presence_rooms", &rooms.presence_rooms);
        w.u64("presence_event_limit", rooms.presence_event_limit as u64);
        w.u64(
            "max_rooms_per_connection",
            rooms.max_rooms_per_connection as u64,
        );
        w.u64("max_room_members", rooms.max_room_members as u64);
        w.u64("history", rooms.history as u64);
        w.u64("history_ttl_ms", rooms.history_ttl.as_millis() as u64);
        w.raw("rate_limit", format!("{}", rooms.rate_limit).as_bytes());
        w.raw("rate_burst", format!("{}", rooms.rate_burst).as_bytes());
        w.str("slow_consumer", rooms.slow_consumer.as_str());
        w.finish();
    }

    /// Checks that the values fit together; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let out_of_range = |flag, reason| Err(ConfigError::OutOfRange { flag, reason });
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
        if self.ping_interval < Duration::from_millis(10) {
            return out_of_range("ping-interval", "must be at least 10ms");
        }
        if self.ping_timeout < Duration::from_millis(10) {
            return out_of_range("ping-timeout", "must be at least 10ms");
        }
        if self.jwt_leeway > Duration::from_secs(limits::MAX_JWT_LEEWAY_SECS) {
            return out_of_range("jwt-leeway", "must be at most 60s");
        }
        if self.max_connections == 0 {
            return out_of_range("max-connections", "must be at least 1");
        }
        if self.rooms.history > MAX_HISTORY {
            return out_of_range("history", "must be at most 10000");
        }
        if self.rooms.max_rooms_per_connection == 0 || self.rooms.max_rooms_per_connection > 10_000
        {
            return out_of_range("max-rooms-per-connection", "must be between 1 and 10000");
        }
        if !(self.rooms.rate_limit >= 0.0 && self.rooms.rate_limit.is_finite()) {
            return out_of_range("rate-limit", "must be a number >= 0");
        }
        if !(self.rooms.rate_burst >= 1.0 && self.rooms.rate_burst.is_finite()) {
            return out_of_range("rate-burst", "must be a number >= 1");
        }
        if self.jwt_secrets.iter().any(|s| s.is_empty()) {
            return out_of_range("jwt-secret", "a secret must not be empty");
        }
        Ok(())
    }
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

/// Writes `{"key":value,...}` field by field.
struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonFields<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn raw(&mut self, key: &str, value: &[u8]) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        crate::json::write_str(self.out, key);
        self.out.push(b':');
        self.out.extend_from_slice(value);
    }

    fn u64(&mut self, key: &str, value: u64) {
        let mut digits = Vec::with_capacity(20);
        crate::json::write_u64(&mut digits, value);
        self.raw(key, &digits);
    }

    fn str(&mut self, key: &str, value: &str) {
        let mut text = Vec::with_capacity(value.len() + 2);
        crate::json::write_str(&mut text, value);
        self.raw(key, &text);
    }

    fn strs(&mut self, key: &str, values: &[String]) {
        let mut list = vec![b'['];
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                list.push(b',');
            }
            crate::json::write_str(&mut list, value);
        }
        list.push(b']');
        self.raw(key, &list);
    }

    fn finish(self) {
        self.out.push(b'}');
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
}
