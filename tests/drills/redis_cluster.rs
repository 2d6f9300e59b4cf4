//! A Redis Cluster shard loses its master: three masters with a replica
//! each, a node on `redis+cluster://`, rooms on every shard, each with a
//! publisher and a member. The master of one shard is SIGKILLed and its
//! replica promoted; only that shard's rooms pause, the others keep being
//! acknowledged as if nothing happened, and every room's member gets its
//! acknowledged messages in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::redis::RedisCluster;
use crate::common::rooms::{Client, publisher, seq_of};
use crate::common::{Server, http_get, json_at, wait_until};
use crate::harness::{Drill, assert_no_secrets, ms, pick};
use crate::load::node;
use roomcast::redis::layout;
use simd_json::prelude::*;

/// What one room's publisher saw.
struct Acks {
    room: String,
    acked: u64,
    refused: u64,
    /// The longest time between two acknowledged publishes.
    longest_gap: Duration,
    /// The highest `seq` acknowledged.
    last_seq: u64,
}

/// Publishes to `room` every `pause` until `stop`.
fn publish(addr: SocketAddr, room: String, pause: Duration, stop: Arc<AtomicBool>) -> Acks {
    let mut client = publisher(addr, "feed");
    let mut acks = Acks {
        room,
        acked: 0,
        refused: 0,
        longest_gap: Duration::ZERO,
        last_seq: 0,
    };
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let ack = client.publish(&acks.room, "t:n", "1");
        let ok = json_at(&ack, &["success"]).and_then(|v| v.as_bool());
        let seq = json_at(&ack, &["data", "seq"]).and_then(|v| v.as_u64());
        match (ok, seq) {
            (Some(true), Some(seq)) => {
                acks.longest_gap = acks.longest_gap.max(last.elapsed());
                last = Instant::now();
                acks.acked += 1;
                acks.last_seq = seq;
            }
            _ => acks.refused += 1,
        }
        thread::sleep(pause);
    }
    acks
}

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn a_redis_cluster_shard_fails_over_and_only_its_rooms_pause() {
    let per_shard = pick(1, 5);
    let pause = pick(Duration::from_millis(10), Duration::from_millis(2));
    let drill = Drill::start(
        "redis-cluster-failover",
        &format!(
            "a node on a Redis Cluster of 3 masters with a replica each, {per_shard} room(s) per \
             shard with a publisher and a member; one shard's master SIGKILLed, its replica promoted"
        ),
        "rooms on the other shards are never refused and never wait 1 s for an ack; the killed \
         shard's rooms are acknowledged again after the promotion; every member gets its room's \
         acknowledged messages in order",
    );
    let mut cluster = RedisCluster::start(3, 1);
    let node: Server = node(&cluster.url(), 0, &[]);
    let addr = node.addr();
    // Rooms grouped by their shard's master, `per_shard` each.
    let mut shards: Vec<(SocketAddr, Vec<String>)> = Vec::new();
    for i in 0..10_000 {
        let room = format!("drill-{i}");
        let master = cluster.master_of(layout::slot(room.as_bytes()));
        match shards.iter_mut().find(|(m, _)| *m == master) {
            Some((_, rooms)) if rooms.len() < per_shard => rooms.push(room),
            Some(_) => {}
            None => shards.push((master, vec![room])),
        }
        if shards.len() == 3 && shards.iter().all(|(_, r)| r.len() == per_shard) {
            break;
        }
    }
    let mut members: Vec<(String, Client)> = Vec::new();
    for (_, rooms) in &shards {
        for room in rooms {
            let mut member = Client::user(addr, "member");
            member.join(room);
            members.push((room.clone(), member));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = shards
        .iter()
        .flat_map(|(_, rooms)| rooms.clone())
        .map(|room| {
            let stop = stop.clone();
            thread::spawn(move || publish(addr, room, pause, stop))
        })
        .collect();
    thread::sleep(Duration::from_secs(1));
    let (killed_master, killed_rooms) = shards[0].clone();
    let killed_at = Instant::now();
    cluster.kill(killed_master);
    let slot = layout::slot(killed_rooms[0].as_bytes());
    cluster.wait_failover(slot, killed_master);
    let promoted_in = killed_at.elapsed();
    wait_until(Duration::from_secs(30), "the node is healthy again", || {
        http_get(addr, "/healthz").status == 200
    });
    let healthy_in = killed_at.elapsed();
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let acks: Vec<Acks> = publishers.into_iter().map(|p| p.join().unwrap()).collect();

    let killed = |a: &Acks| killed_rooms.contains(&a.room);
    let pause_killed = acks
        .iter()
        .filter(|a| killed(a))
        .map(|a| a.longest_gap)
        .max();
    let gap_others = acks
        .iter()
        .filter(|a| !killed(a))
        .map(|a| a.longest_gap)
        .max();
    let refused_others: u64 = acks.iter().filter(|a| !killed(a)).map(|a| a.refused).sum();
    let refused_killed: u64 = acks.iter().filter(|a| killed(a)).map(|a| a.refused).sum();
    let acked: u64 = acks.iter().map(|a| a.acked).sum();
    drill.figure(
        "from SIGKILL to the replica promoted (cluster's view)",
        ms(promoted_in),
    );
    drill.figure("from SIGKILL to /healthz 200 again", ms(healthy_in));
    drill.figure(
        "longest ack gap of the killed shard's rooms (their pause)",
        ms(pause_killed.unwrap_or_default()),
    );
    drill.figure(
        "longest ack gap of the other shards' rooms",
        ms(gap_others.unwrap_or_default()),
    );
    drill.figure("publishes acknowledged", acked);
    drill.figure(
        "refused: killed shard's rooms; other rooms",
        format!("{refused_killed}; {refused_others}"),
    );
    assert_eq!(
        refused_others, 0,
        "a room on a shard that stayed up was refused"
    );
    assert!(
        gap_others.unwrap_or_default() < Duration::from_secs(1),
        "a room on a shard that stayed up waited {gap_others:?} for an ack"
    );
    for a in acks.iter().filter(|a| killed(a)) {
        assert!(
            a.acked > 0 && a.last_seq > 0,
            "{} never acknowledged again",
            a.room
        );
    }
    // Every member reads its room's messages in seq order up to the last
    // acknowledged one (the killed shard's may miss what its master lost).
    for (room, member) in &mut members {
        let last = acks
            .iter()
            .find(|a| &a.room == room)
            .map_or(0, |a| a.last_seq);
        let mut previous = 0;
        while previous < last {
            let text = member.recv_skip_presence();
            let seq = seq_of(&text);
            assert!(seq > previous, "{room}: seq {seq} after {previous}");
            previous = seq;
        }
    }
    assert_no_secrets(&node, &[], &[]);
}
