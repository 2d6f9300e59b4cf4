//! The server's effective configuration and the parsers for the value
//! syntax of `docs/protocol.md` (durations `25`, `500ms`, `2m`; sizes `64KiB`).
//!
//! A `Config` is a set of groups, one per concern, each in its own module:
//! `listen`, `auth`, `limits`, `heartbeat`, `backpressure`, `rooms` (with
//! its `history` and `presence`), `cluster`, `web`, `api`, `hooks` and `log`. Each group
//! validates its own values and writes its own fields of the JSON that
//! `/stats` and `--check-config` print; `Config` adds the checks that span
//! groups and the order of the JSON fields. A `Config` that exists is one
//! the server can run with. Knows nothing of clap's parsing (see `cli`) or
//! of sockets; parts of the server that need one concern take its group.

mod api;
mod auth;
mod backpressure;
mod cluster;
mod heartbeat;
mod hooks;
mod limits;
mod listen;
mod logging;
mod rooms;
mod web;

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

pub use api::ApiConfig;
pub use auth::AuthConfig;
pub use backpressure::{BackpressureConfig, SlowConsumer};
pub use cluster::{ClusterConfig, is_cluster_name};
pub use heartbeat::HeartbeatConfig;
pub use hooks::{HOOK_QUEUE_PER_SLOT, HooksConfig};
pub use limits::{LimitsConfig, max_connections_for};
pub use listen::{AcceptMode, Compression, ListenConfig};
pub use logging::LogConfig;
pub use rooms::{HistoryConfig, PresenceConfig, RoomsConfig};
pub use web::WebConfig;

/// Everything `roomcast serve` runs with, grouped by concern.
#[derive(Clone)]
pub struct Config {
    /// Listeners, shards, processes, TLS, compression and their timeouts.
    pub listen: ListenConfig,
    /// Token secrets, leeway and allowed origins.
    pub auth: AuthConfig,
    /// Sizes, connection counts and rates past which clients are refused.
    pub limits: LimitsConfig,
    /// Pings and the timeout of a silent connection.
    pub heartbeat: HeartbeatConfig,
    /// The bound on unsent output and what happens past it.
    pub backpressure: BackpressureConfig,
    /// Room permissions and limits, history and presence.
    pub rooms: RoomsConfig,
    /// Cluster mode (`--redis`); `None`: one process, no Redis.
    pub cluster: Option<ClusterConfig>,
    /// The optional endpoints: `/echo`, `/demo`, the dashboard.
    pub web: WebConfig,
    /// The Server API's keys and timeout.
    pub api: ApiConfig,
    /// How backend hooks are sent: timeout, signing secret, concurrency, CA.
    pub hooks: HooksConfig,
    /// The lifecycle log on stderr.
    pub log: LogConfig,
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

impl Config {
    /// `--node-id` in cluster mode; `None` in one process.
    pub fn node_id(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.node_id.as_str())
    }

    /// The effective configuration as one JSON object, for `/stats` and
    /// `--check-config`. Secrets are never written, only how many there are.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut fields = JsonFields::default();
        self.listen.write_json(&mut fields);
        self.auth.write_json(&mut fields);
        self.limits.write_json(&mut fields);
        self.heartbeat.write_json(&mut fields);
        self.backpressure.write_json(&mut fields);
        self.rooms.write_json(&mut fields);
        ClusterConfig::write_json(self.cluster.as_ref(), &mut fields);
        self.web.write_json(&mut fields);
        self.api.write_json(&mut fields);
        self.hooks.write_json(&mut fields);
        self.log.write_json(&mut fields);
        fields.write_ordered(out);
    }

    /// Checks that the values fit together; the first problem found is
    /// returned, naming its flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen.validate()?;
        self.auth.validate()?;
        self.limits.validate()?;
        self.heartbeat.validate()?;
        self.backpressure.validate(self.limits.max_message_size)?;
        self.rooms.validate()?;
        self.api.validate()?;
        self.hooks.validate()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        self.validate_across_groups()
    }

    /// What one group allows only with, or only without, another's setting.
    fn validate_across_groups(&self) -> Result<(), ConfigError> {
        if self.web.demo && self.listen.tls.is_some() {
            return out_of_range(
                "demo",
                "the in-process demo feed publishes over plain HTTP; run `roomcast demo-feed` beside a TLS server instead",
            );
        }
        if self.cluster.is_some() && self.listen.shards > cluster::MAX_CLUSTER_SHARDS {
            return out_of_range("shards", "must be at most 64 with --redis");
        }
        if self.hooks.webhook.is_some()
            && self
                .cluster
                .as_ref()
                .is_some_and(ClusterConfig::is_redis_cluster)
        {
            return out_of_range(
                "webhook",
                "not with a redis+cluster:// Redis Cluster yet: the functions record webhook events in one stream, outside the rooms' slots",
            );
        }
        if self.listen.processes > 1 && self.cluster.is_none() {
            return out_of_range(
                "processes",
                "needs --redis: the processes share their rooms through it",
            );
        }
        Ok(())
    }
}

/// The fields of the configuration's JSON, collected from the groups, each
/// value already JSON.
#[derive(Default)]
struct JsonFields {
    fields: Vec<(&'static str, Vec<u8>)>,
}

/// The order of the JSON fields, as `/stats` and `--check-config` have
/// always printed them (scripts compare these outputs as text). A field not
/// listed here follows them, in the order the groups write it.
const JSON_ORDER: &[&str] = &[
    "bind",
    "metrics_bind",
    "shards",
    "jwt_secrets",
    "jwt_leeway_ms",
    "max_message_size",
    "max_header_bytes",
    "max_write_buffer",
    "ping_interval_ms",
    "ping_timeout_ms",
    "max_connections",
    "max_connections_per_ip",
    "allowed_origins",
    "drain_timeout_ms",
    "echo",
    "compression",
    "log_level",
    "log_format",
    "handshake_rate",
    "default_rooms",
    "members_publish",
    "presence_rooms",
    "presence_event_limit",
    "max_rooms_per_connection",
    "max_room_members",
    "history",
    "history_ttl_ms",
    "rate_limit",
    "rate_burst",
    "slow_consumer",
    "redis",
    "redis_prefix",
    "node_id",
    "processes",
    "demo",
    "dashboard",
    "tls_cert",
    "tls_key",
    "handshake_timeout_ms",
    "publish_rate",
];

impl JsonFields {
    fn push(&mut self, key: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        let mut value = Vec::new();
        write(&mut value);
        self.fields.push((key, value));
    }

    fn u64(&mut self, key: &'static str, value: u64) {
        self.push(key, |out| crate::json::write_u64(out, value));
    }

    /// NaN and infinities, which JSON cannot hold, are written as 0.
    fn f64(&mut self, key: &'static str, value: f64) {
        self.push(key, |out| crate::json::write_f64(out, value));
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        self.push(key, |out| {
            out.extend_from_slice(if value { b"true" } else { b"false" })
        });
    }

    fn null(&mut self, key: &'static str) {
        self.push(key, |out| out.extend_from_slice(b"null"));
    }

    fn str(&mut self, key: &'static str, value: &str) {
        self.push(key, |out| crate::json::write_str(out, value));
    }

    fn strs(&mut self, key: &'static str, values: &[String]) {
        self.push(key, |out| crate::json::write_strs(out, values));
    }

    /// One object: the fields of `JSON_ORDER` in its order, then the rest.
    fn write_ordered(mut self, out: &mut Vec<u8>) {
        let rank = |key: &str| JSON_ORDER.iter().position(|k| *k == key);
        self.fields
            .sort_by_key(|(key, _)| rank(key).unwrap_or(JSON_ORDER.len()));
        let mut w = crate::json::ObjectWriter::new(out);
        for (key, value) in &self.fields {
            w.raw(key, value);
        }
        w.close();
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

// By hand, so that printing a configuration never prints a secret.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut json = Vec::new();
        self.write_json(&mut json);
        f.write_str(&String::from_utf8_lossy(&json))
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
