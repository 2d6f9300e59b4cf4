//! A Redis Sentinel failover under load: two nodes on `redis+sentinel://`
//! (a master, two replicas, three Sentinels), subscribers spread over both
//! nodes and a publisher sending to each in turn; the master is SIGKILLed
//! and Sentinel promotes a replica. The nodes must be on the new master
//! within 5 s of Sentinel's switch (`docs/protocol.md` section 15), and
//! every acknowledged message must reach every subscriber, once and in
//! order.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::sentinel::SentinelSetup;
use crate::common::{Server, http_get, metric, wait_until};
use crate::harness::{Drill, assert_no_secrets, ms, pick};
use crate::load::{Load, node};

/// The nodes' flags beyond the Sentinel URL: without `--redis-replicas 1`
/// a message the master acknowledged just before it died may not have
/// reached the replica Sentinel promotes. With it, the second replica
/// (reconfigured by Sentinel to follow the new master) is what lets the
/// new master confirm publishes.
const NODE_FLAGS: &[&str] = &["--redis-replicas", "1"];

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn a_sentinel_failover_under_load_loses_nothing_acknowledged() {
    let count = pick(20, 200);
    let pause = pick(Duration::from_millis(5), Duration::from_millis(1));
    let drill = Drill::start(
        "sentinel-failover",
        &format!(
            "two nodes on redis+sentinel:// with --redis-replicas 1 (a master, two replicas, three \
             Sentinels), {count} subscribers spread over them, a publisher on both; the master \
             SIGKILLed"
        ),
        "the nodes are on the new master within 5 s of Sentinel's switch; every acknowledged \
         message reaches every subscriber, once and in order; nobody resets",
    );
    let mut setup = SentinelSetup::start(2);
    let url = setup.url();
    let nodes: Vec<Server> = (0..2).map(|_| node(&url, 0, NODE_FLAGS)).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(Server::addr).collect();
    let load = Load::start(&addrs, count, pause);
    thread::sleep(Duration::from_secs(1));

    let old = setup.master_addr().expect("Sentinel names the master");
    let killed = Instant::now();
    setup.kill_master();
    let (_, switched) = setup.wait_for_switch(old, Duration::from_secs(30));
    wait_until(
        Duration::from_secs(10),
        "both nodes on the new master",
        || addrs.iter().all(|a| http_get(*a, "/healthz").status == 200),
    );
    let after_switch = switched.elapsed();
    drill.figure("Sentinel switched after the kill", ms(switched - killed));
    drill.figure("nodes on the new master after the switch", ms(after_switch));
    assert!(
        after_switch < Duration::from_secs(5),
        "the nodes took {after_switch:?} after the switch"
    );
    thread::sleep(Duration::from_millis(1500));
    load.finish(&drill);
    let total = |name: &str| addrs.iter().map(|a| metric(*a, name)).sum::<f64>();
    drill.figure(
        "node reconnects to Redis, master changes seen",
        format!(
            "{}, {}",
            total("roomcast_redis_reconnects_total"),
            total("roomcast_redis_master_changes_total")
        ),
    );
    for node in &nodes {
        assert_no_secrets(node, &[], &[]);
    }
}
