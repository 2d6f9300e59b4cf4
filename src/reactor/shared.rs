//! What every shard of the process shares: the configuration and keys,
//! the admission registry, each shard's counters, the counts of the bus's
//! flow control, the cluster's live nodes, and what the Redis bridge and
//! the hooks client count. Read-only but for atomics and the live nodes'
//! lock, which only the Redis bridge writes and only the Server API
//! reads: no lock here is on the per-message path.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::auth::Keys;
use crate::config::Config;
use crate::conn::Observe;
use crate::conn::id::Issuer;
use crate::metrics::{HookMetrics, RedisMetrics, ShardMetrics, Snapshot};
use crate::reactor::admission::Registry;

/// State every shard reads; mutated only through the admission counters,
/// each shard's own metrics and the bus counts.
pub struct Shared {
    pub config: Config,
    pub keys: Keys,
    pub registry: Registry,
    /// Random per process, so room epochs never repeat across restarts.
    pub epoch_seed: u64,
    /// Random per process, in every connection id (`conn::id`), so that
    /// ids do not repeat across restarts.
    pub boot: u32,
    /// One per shard, written only by that shard's thread.
    pub metrics: Box<[ShardMetrics]>,
    pub started: Instant,
    /// Room-traffic messages sent and not yet handled, per ordered pair of
    /// shards: `bus_pending[from * shards + to]`. The sender adds a batch's
    /// length when it sends it, the receiver subtracts it once it has
    /// handled the batch; a shard that is too far ahead of another stops
    /// reading its sockets (see `shard`).
    pub bus_pending: Box<[AtomicUsize]>,
    /// Hand-off mode: sockets the acceptor handed over and the shards have
    /// not adopted yet.
    pub handoff_pending: Arc<AtomicUsize>,
    /// Cluster mode: what the Redis bridge counts.
    pub redis: Option<Arc<RedisMetrics>>,
    /// Any hook URL given: what the hooks client counts.
    pub hooks: Option<Arc<HookMetrics>>,
    /// `--tls-cert`: the public port speaks TLS.
    pub tls: Option<crate::tls::Acceptor>,
    /// Cluster mode: the nodes the Server API waits for (`live_nodes`).
    live_nodes: RwLock<Arc<[Box<str>]>>,
}

impl Shared {
    /// What this process's connection ids start with.
    pub fn issuer(&self) -> Issuer<'_> {
        Issuer {
            node: self.config.node_id(),
            boot: self.boot,
        }
    }

    /// The state of a server about to start with `config`; loads the TLS
    /// certificate, if any.
    pub fn new(config: Config) -> io::Result<Self> {
        let tls = match &config.listen.tls {
            Some(files) => Some(
                crate::tls::Acceptor::load(files.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            ),
            None => None,
        };
        let shards = config.listen.shards;
        let limits = &config.limits;
        let registry = Registry::with_handshake_rate(
            limits.max_connections,
            limits.max_connections_per_ip,
            limits.handshake_rate,
        );
        Ok(Self {
            keys: Keys::new(&config.auth.secrets),
            registry,
            metrics: (0..shards).map(|_| ShardMetrics::default()).collect(),
            bus_pending: (0..shards * shards).map(|_| AtomicUsize::new(0)).collect(),
            epoch_seed: crate::auth::random_u64(),
            boot: crate::auth::random_u64() as u32,
            started: Instant::now(),
            redis: config.cluster.is_some().then(Arc::default),
            hooks: config.hooks.any_url().then(Arc::default),
            handoff_pending: Arc::default(),
            tls,
            live_nodes: RwLock::new(config.node_id().map(Box::from).into_iter().collect()),
            config,
        })
    }

    /// Cluster mode: the nodes whose heartbeat the Redis bridge last saw
    /// within 20 s, this one included, sorted (at most
    /// `redis::api::MAX_NODES`); the Server API waits for each one's reply.
    /// Until the bridge first reads them, only this node; empty outside
    /// cluster mode. This node's own id is `config.node_id()`.
    pub fn live_nodes(&self) -> Arc<[Box<str>]> {
        self.live_nodes.read().clone()
    }

    /// What the Redis bridge read of the live nodes.
    pub fn set_live_nodes(&self, nodes: Arc<[Box<str>]>) {
        *self.live_nodes.write() = nodes;
    }

    /// The count of messages `from` sent `to` and `to` has not handled yet
    /// (`None` only for a shard index out of range).
    pub fn bus_pending(&self, from: usize, to: usize) -> Option<&AtomicUsize> {
        self.bus_pending.get(from * self.config.listen.shards + to)
    }
}

impl Observe for Shared {
    fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::gather(
            &self.metrics,
            self.registry.connections() as u64,
            self.registry.users() as u64,
        );
        snapshot.redis = self.redis.as_ref().map(|r| r.snapshot());
        snapshot.hooks = self.hooks.as_ref().map(|h| h.snapshot());
        snapshot
    }

    fn redis_up(&self) -> Option<bool> {
        self.redis.as_ref().map(|r| r.up.get() == 1)
    }

    fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(args: &[&str]) -> Shared {
        let mut flags = vec!["--jwt-secret", "s"];
        flags.extend_from_slice(args);
        let args = crate::cli::ServeArgs::try_parse_from(flags).unwrap();
        Shared::new(
            args.into_config(crate::cli::EnvLists::default(), 1, 1 << 20)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_live_nodes_are_this_node_alone_until_the_bridge_reads_them() {
        assert!(shared(&[]).live_nodes().is_empty(), "no cluster, no node");
        let cluster = ["--redis", "redis://127.0.0.1:1", "--node-id", "n1"];
        let node = shared(&cluster);
        assert_eq!(node.config.node_id(), Some("n1"));
        assert_eq!(*node.live_nodes(), [Box::from("n1")]);
        let read: Arc<[Box<str>]> = Arc::new(["n1".into(), "n2".into()]);
        node.set_live_nodes(read.clone());
        assert!(Arc::ptr_eq(&node.live_nodes(), &read));
    }
}
