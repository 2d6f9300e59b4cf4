//! Things killed under load: a node SIGKILLed and started again; in a
//! cluster of three, one node SIGKILLed and then Redis itself restarted.
//! Subscribers reconnect and join again with `since`/`epoch`; every message
//! acknowledged to the publisher must reach every one of them, once and in
//! order, with no reset while it is within the history.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::redis::{RedisServer, free_port};
use crate::common::{SECRET, Server, http_get, metric, wait_until};
use crate::harness::{Drill, assert_no_secrets, ms, pick};
use crate::tracker::{self, Seen};

/// A node on `redis` (keeping a history long enough for every outage) on
/// `port` (0: any).
pub(crate) fn node(redis: &str, port: u16) -> Server {
    node_with(redis, port, &[])
}

/// `node`, with `extra` arguments.
pub(crate) fn node_with(redis: &str, port: u16, extra: &[&str]) -> Server {
    let mut command = Server::command();
    command.args([
        "serve",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--jwt-secret",
        SECRET,
    ]);
    command.args([
        "--redis",
        redis,
        "--history",
        "10000",
        "--log-level",
        "debug",
    ]);
    command.args(extra);
    let server = Server::spawn(command);
    wait_until(Duration::from_secs(15), "the node reaches Redis", || {
        http_get(server.addr(), "/healthz").status == 200
    });
    server
}

/// Starts `count` subscribers spread over `addrs`; waits until they are in.
pub(crate) fn subscribers(
    addrs: &[SocketAddr],
    count: usize,
    stop: &Arc<AtomicBool>,
    target: &Arc<std::sync::atomic::AtomicU64>,
) -> Vec<thread::JoinHandle<Seen>> {
    let handles = (0..count)
        .map(|i| {
            let name = format!("sub-{i}");
            tracker::subscriber(addrs.to_vec(), i, name, stop.clone(), target.clone())
        })
        .collect();
    wait_until(
        Duration::from_secs(20),
        "every subscriber connected",
        || {
            addrs
                .iter()
                .map(|a| metric(*a, "roomcast_connections"))
                .sum::<f64>()
                >= count as f64
        },
    );
    // Their joins are answered right after.
    thread::sleep(Duration::from_millis(300));
    handles
}

/// Subscribers spread over the nodes and a publisher sending to each node
/// in turn, running until `finish`.
pub(crate) struct Load {
    subscribers: Vec<thread::JoinHandle<Seen>>,
    publisher: thread::JoinHandle<(std::collections::BTreeSet<u64>, u64)>,
    /// Tells the subscribers to stop once they have seen `target`.
    stop: Arc<AtomicBool>,
    target: Arc<std::sync::atomic::AtomicU64>,
    /// Tells the publisher to stop.
    publishing: Arc<AtomicBool>,
}

impl Load {
    /// `count` subscribers (in before this returns) and a publisher that
    /// pauses `pause` between messages.
    pub(crate) fn start(addrs: &[SocketAddr], count: usize, pause: Duration) -> Load {
        let (stop, target) = (Arc::default(), tracker::target());
        let subscribers = subscribers(addrs, count, &stop, &target);
        let publishing = Arc::new(AtomicBool::new(false));
        let publisher = tracker::publisher(addrs.to_vec(), pause, publishing.clone());
        Load {
            subscribers,
            publisher,
            stop,
            target,
            publishing,
        }
    }

    /// Stops the publisher and the subscribers; checks and reports what
    /// each saw.
    pub(crate) fn finish(self, drill: &Drill) {
        let Load {
            subscribers,
            publisher,
            stop,
            target,
            publishing,
        } = self;
        publishing.store(true, Ordering::Relaxed);
        let (acked, failed) = publisher.join().unwrap();
        tracker::set_target(&target, &acked);
        let waiting = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let seen = tracker::join_all(subscribers);
        drill.figure(
            "publishes acknowledged, refused or failed",
            format!("{}, {failed}", acked.len()),
        );
        drill.figure(
            "subscribers caught up after the last publish in",
            ms(waiting.elapsed()),
        );
        let reconnects: u32 = seen.iter().map(|s| s.reconnects).sum();
        let longest = seen
            .iter()
            .map(|s| s.longest_outage)
            .max()
            .unwrap_or_default();
        drill.figure(
            "reconnects, longest time without a room",
            format!("{reconnects}, {}", ms(longest)),
        );
        assert!(
            acked.len() > 10,
            "the publisher got through: {}",
            acked.len()
        );
        for (i, subscriber) in seen.iter().enumerate() {
            let from = subscriber.seqs.first().copied().unwrap_or(u64::MAX);
            let (missed, in_order) = tracker::check(subscriber, &acked, from);
            assert!(
                missed.is_empty(),
                "subscriber {i} missed acknowledged {missed:?}"
            );
            assert!(
                in_order,
                "subscriber {i} saw a gap or a repeat: {:?}",
                subscriber.seqs
            );
            assert_eq!(subscriber.resets, 0, "subscriber {i} had to reset");
        }
    }
}

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn a_node_killed_under_load_and_restarted_loses_no_subscriber_anything() {
    let count = pick(20, 200);
    let pause = pick(Duration::from_millis(5), Duration::from_millis(1));
    let drill = Drill::start(
        "sigkill-restart",
        &format!(
            "{count} subscribers and a publisher on one node (on Redis); SIGKILL, start again"
        ),
        "every acknowledged message reaches every subscriber once, in order, recovered",
    );
    let redis = RedisServer::start();
    let port = free_port();
    let mut server = node(&redis.url(), port);
    let load = Load::start(&[server.addr()], count, pause);
    thread::sleep(Duration::from_secs(1));
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(10));
    let killed = Instant::now();
    let server = node(&redis.url(), port);
    drill.figure("node back and serving after", ms(killed.elapsed()));
    thread::sleep(Duration::from_millis(1500));
    load.finish(&drill);
    assert_no_secrets(&server, &[], &[]);
}

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn a_cluster_loses_a_node_and_then_redis_under_load_and_loses_nothing_acknowledged() {
    let count = pick(30, 300);
    let pause = pick(Duration::from_millis(5), Duration::from_millis(1));
    let drill = Drill::start(
        "cluster",
        &format!(
            "three nodes on one Redis (append-only, fsync always), {count} subscribers spread over them, \
             a publisher on every node; one node SIGKILLed, then Redis SIGKILLed and restarted"
        ),
        "every acknowledged message reaches every subscriber, those of the dead node after \
         reconnecting elsewhere; nobody resets",
    );
    let dir = std::env::temp_dir().join(format!("roomcast-drill-aof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let redis_port = free_port();
    let redis = RedisServer::start_persistent(redis_port, &dir);
    let url = redis.url();
    let nodes: Vec<Server> = (0..3).map(|_| node(&url, 0)).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(Server::addr).collect();
    let load = Load::start(&addrs, count, pause);
    thread::sleep(Duration::from_secs(1));
    let mut nodes = nodes;
    let mut dead = nodes.pop().unwrap();
    dead.signal(libc::SIGKILL);
    dead.wait_exit(Duration::from_secs(10));
    thread::sleep(Duration::from_millis(1500));
    let redis_down = Instant::now();
    redis.stop();
    thread::sleep(Duration::from_millis(300));
    let redis = RedisServer::start_persistent(redis_port, &dir);
    wait_until(Duration::from_secs(20), "both nodes back on Redis", || {
        nodes
            .iter()
            .all(|n| http_get(n.addr(), "/healthz").status == 200)
    });
    drill.figure(
        "Redis away, nodes healthy again after",
        ms(redis_down.elapsed()),
    );
    thread::sleep(Duration::from_millis(1500));
    load.finish(&drill);
    for node in &nodes {
        assert_no_secrets(node, &[], &[]);
    }
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
