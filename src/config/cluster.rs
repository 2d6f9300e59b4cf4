//! The cluster group: the Redis servers a node joins and its names there
//! (`docs/protocol.md` section 10, `docs/redis.md`).

use std::time::Duration;

use super::{ConfigError, JsonFields, out_of_range};

/// Cluster mode (`--redis`); `Config::cluster` is `None` without it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Rooms are spread over these by a hash of the room name.
    pub servers: Vec<crate::redis::url::RedisUrl>,
    /// Every key and channel starts with it.
    pub prefix: String,
    /// This node's name in the cluster: in its epochs and on the channels.
    pub node_id: String,
    /// `--redis-ca`: a PEM bundle trusted for `rediss://` servers instead
    /// of the system's.
    pub ca: Option<std::path::PathBuf>,
    /// `--redis-replicas`: a publish is acknowledged only once this many
    /// replicas of its server have it (`WAIT`); 0 acknowledges at once.
    pub replicas: u8,
    /// `--redis-timeout`: a server that answers no command (or heartbeat
    /// `PING`) within it is unreachable (section 15).
    pub timeout: Duration,
}

/// Most `--redis-replicas`: more replicas than that per master is not a
/// setup anyone runs, and `WAIT` waits for the slowest of them.
pub const MAX_REDIS_REPLICAS: u8 = 16;

/// The range of `--redis-timeout`: above a loopback round trip under load,
/// below what a client would wait for an answer.
const REDIS_TIMEOUT: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(60);

/// Least `--redis-timeout` with `--redis-replicas`: a `WAIT`'s second and
/// a round trip under load.
const MIN_TIMEOUT_WITH_REPLICAS: Duration = Duration::from_millis(1500);

/// Longest `--node-id` and `--redis-prefix`.
const MAX_CLUSTER_NAME: usize = 64;

/// The most shards a node of a cluster may run.
pub(super) const MAX_CLUSTER_SHARDS: usize = 64;

impl ClusterConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "must be 1-64 characters of A-Z, a-z, 0-9, _, - and .";
        if !is_cluster_name(&self.node_id) {
            return out_of_range("node-id", NAME);
        }
        if !is_cluster_name(&self.prefix) {
            return out_of_range("redis-prefix", NAME);
        }
        if self.replicas > MAX_REDIS_REPLICAS {
            return out_of_range("redis-replicas", "must be 0-16");
        }
        if !REDIS_TIMEOUT.contains(&self.timeout) {
            return out_of_range("redis-timeout", "must be between 100ms and 60s");
        }
        // A `WAIT` blocks the connection up to its second: a timeout that
        // short would drop the link whenever the replicas lag.
        if self.replicas > 0 && self.timeout < MIN_TIMEOUT_WITH_REPLICAS {
            return out_of_range(
                "redis-timeout",
                "must be at least 1500ms with --redis-replicas",
            );
        }
        if self.is_redis_cluster() && self.servers.len() > 1 {
            return out_of_range(
                "redis",
                "a redis+cluster:// URL stands alone: the Redis Cluster spreads the rooms",
            );
        }
        Ok(())
    }

    /// `--redis redis+cluster://...`: one Redis Cluster.
    pub fn is_redis_cluster(&self) -> bool {
        self.servers
            .iter()
            .any(crate::redis::url::RedisUrl::is_cluster)
    }

    /// Writes `redis` (empty without a cluster), `redis_prefix`, `node_id`,
    /// `redis_replicas`, `redis_ca` and `redis_timeout_ms`.
    pub(super) fn write_json(cluster: Option<&Self>, w: &mut JsonFields) {
        let Some(cluster) = cluster else {
            w.strs("redis", &[]);
            return;
        };
        let servers: Vec<String> = cluster.servers.iter().map(|u| u.to_string()).collect();
        w.strs("redis", &servers);
        w.str("redis_prefix", &cluster.prefix);
        w.str("node_id", &cluster.node_id);
        match &cluster.ca {
            Some(path) => w.str("redis_ca", &path.to_string_lossy()),
            None => w.null("redis_ca"),
        }
        w.u64("redis_replicas", cluster.replicas.into());
        w.u64("redis_timeout_ms", super::millis(cluster.timeout));
    }
}

/// Whether `name` is a `--node-id` or `--redis-prefix`: 1-64 bytes that
/// the key and channel layout never uses as separators.
pub fn is_cluster_name(name: &str) -> bool {
    crate::redis::layout::is_name(name, MAX_CLUSTER_NAME)
}
