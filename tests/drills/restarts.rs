//! Things killed under load: a node SIGKILLed and started again; in a
//! cluster of three, one node SIGKILLed and then Redis itself restarted.
//! Subscribers reconnect and join again with `since`/`epoch`; every message
//! acknowledged to the publisher must reach every one of them, once and in
//! order, with no reset while it is within the history.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::redis::{RedisServer, free_port};
use crate::common::{Server, http_get, wait_until};
use crate::harness::{Drill, assert_no_secrets, ms, pick};
use crate::load::{Load, node};

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
    let mut server = node(&redis.url(), port, &[]);
    let load = Load::start(&[server.addr()], count, pause);
    thread::sleep(Duration::from_secs(1));
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(10));
    let killed = Instant::now();
    let server = node(&redis.url(), port, &[]);
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
    let nodes: Vec<Server> = (0..3).map(|_| node(&url, 0, &[])).collect();
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
