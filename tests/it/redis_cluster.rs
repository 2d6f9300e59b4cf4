//! `redis+cluster://` (section 15): real roomcast nodes on a real Redis
//! Cluster of `redis-server`s (three masters, with a replica each where a
//! failover is tested). Rooms on every shard work across nodes; a shard
//! whose master is SIGKILLed pauses its own rooms until its replica is
//! promoted, while the rooms of the other shards keep being acknowledged.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::api::API_KEY;
use common::redis::RedisCluster;
use common::rooms::{Claims, Client, ok_data, q, seq_of, str_at, u64_at};
use common::{Server, http_get, parse_json, wait_until};
use roomcast::redis::layout;

/// A node on `cluster`, once it is up (`/healthz` 200).
fn node_on(cluster: &RedisCluster, id: &str) -> Server {
    let url = cluster.url();
    let server = Server::start(&[
        "--redis",
        &url,
        "--node-id",
        id,
        "--history",
        "100",
        "--api-key",
        API_KEY,
    ]);
    wait_until(
        Duration::from_secs(20),
        "the node reaches every master",
        || http_get(server.addr(), "/healthz").status == 200,
    );
    server
}

/// A room name for each master of `cluster`, in the order of `masters`.
fn room_per_master(cluster: &RedisCluster) -> Vec<(String, SocketAddr)> {
    let mut rooms: Vec<(String, SocketAddr)> = Vec::new();
    for i in 0.. {
        let room = format!("room-{i}");
        let master = cluster.master_of(layout::slot(room.as_bytes()));
        if rooms.iter().all(|(_, m)| *m != master) {
            rooms.push((room, master));
        }
        if rooms.len() == 3 || i > 1000 {
            break;
        }
    }
    assert_eq!(rooms.len(), 3, "three masters");
    rooms
}

#[test]
fn rooms_on_every_shard_work_across_nodes() {
    let cluster = RedisCluster::start(3, 0);
    let (a, b) = (node_on(&cluster, "rc-a"), node_on(&cluster, "rc-b"));
    let mut alice = Client::user(a.addr(), "alice");
    let mut bob = Client::user(b.addr(), "bob");
    for (room, _) in room_per_master(&cluster) {
        alice.join(&room);
        bob.join(&room);
        assert_eq!(bob.publish_ok(&room, "chat:msg", r#"{"n":1}"#), 1, "{room}");
        assert_eq!(seq_of(&alice.recv_skip_presence()), 1, "{room}");
        assert_eq!(alice.publish_ok(&room, "chat:msg", r#"{"n":2}"#), 2);
        assert_eq!(seq_of(&bob.recv_skip_presence()), 2, "{room}");
        // History, read through the other node.
        let mut late = Client::user(a.addr(), "late");
        let joined = late.join_with(&format!(r#"{{"room":{},"history":5}}"#, q(&room)));
        assert_eq!(u64_at(ok_data(&joined), &["seq"]), 2, "{room}");
        let presence = alice.request("presence:get", &format!(r#"{{"room":{}}}"#, q(&room)), "");
        assert_eq!(u64_at(ok_data(&presence), &["count"]), 3, "{room}");
    }
    // user:send and system:broadcast, through the online set's master.
    let mut delivered = 0;
    wait_until(Duration::from_secs(5), "bob is counted", || {
        let ack = alice.request("user:send", r#"{"to":"bob","data":0}"#, "");
        delivered = u64_at(ok_data(&ack), &["delivered"]);
        delivered == 1
    });
    while bob.try_recv(Duration::from_millis(100)).is_some() {}
    alice.request("user:send", r#"{"to":"bob","data":{"text":"hi"}}"#, "");
    let message = parse_json(&bob.recv());
    assert_eq!(str_at(&message, &["event"]), "user:message");
    let mut admin = Client::connect(b.addr(), &Claims::new("root").admin(true).token());
    admin.request(
        "system:broadcast",
        r#"{"event":"system:notice","data":1}"#,
        "",
    );
    wait_until(
        Duration::from_secs(5),
        "the broadcast reaches alice",
        || {
            alice
                .try_recv(Duration::from_millis(100))
                .is_some_and(|t| t.contains("system:notice"))
        },
    );
    // The Server API between nodes: each lists both.
    for server in [&a, &b] {
        common::api::wait_info_nodes(server.addr(), &["rc-a", "rc-b"]);
    }
}

/// The `seq` of a publish's ack, `None` when it was refused.
pub(crate) fn acked(ack: &simd_json::OwnedValue) -> Option<u64> {
    use simd_json::prelude::*;
    let ok = common::json_at(ack, &["success"]).and_then(|v| v.as_bool()) == Some(true);
    ok.then(|| common::json_at(ack, &["data", "seq"]).and_then(|v| v.as_u64()))
        .flatten()
}

/// Publishes in `room` about every 10 ms until `until`; the longest time
/// between two acks, and how many publishes were refused.
pub(crate) fn publish_for(client: &mut Client, room: &str, until: Instant) -> (Duration, u64) {
    let (mut last, mut longest, mut refused) = (Instant::now(), Duration::ZERO, 0);
    while Instant::now() < until {
        if acked(&client.publish(room, "t:n", "1")).is_some() {
            longest = longest.max(last.elapsed());
            last = Instant::now();
        } else {
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (longest.max(last.elapsed()), refused)
}

#[test]
fn a_failover_pauses_only_its_shard_s_rooms() {
    let mut cluster = RedisCluster::start(3, 1);
    let a = node_on(&cluster, "fo-a");
    let rooms = room_per_master(&cluster);
    let (killed_room, killed_master) = rooms[0].clone();
    let mut members: Vec<Client> = rooms
        .iter()
        .map(|(room, _)| {
            let mut member = Client::user(a.addr(), "member");
            member.join(room);
            member
        })
        .collect();
    let mut publishers: Vec<Client> = rooms
        .iter()
        .map(|_| common::rooms::publisher(a.addr(), "feed"))
        .collect();
    for ((room, _), publisher) in rooms.iter().zip(&mut publishers) {
        assert_eq!(publisher.publish_ok(room, "t:n", "0"), 1);
    }
    cluster.kill(killed_master);
    let until = Instant::now() + Duration::from_secs(3);
    let gaps: Vec<(Duration, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = rooms[1..]
            .iter()
            .zip(&mut publishers[1..])
            .map(|((room, _), p)| s.spawn(move || publish_for(p, room, until)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((room, _), (gap, refused)) in rooms[1..].iter().zip(&gaps) {
        assert_eq!(
            *refused, 0,
            "{room}, on a shard that stayed up, was refused"
        );
        assert!(
            *gap < Duration::from_secs(1),
            "{room}: {gap:?} between acks"
        );
    }
    // The killed shard's room comes back once its replica is promoted.
    let slot = layout::slot(killed_room.as_bytes());
    let promoted = cluster.wait_failover(slot, killed_master);
    assert_ne!(promoted, killed_master);
    let publisher = &mut publishers[0];
    let mut seq = 0;
    wait_until(
        Duration::from_secs(20),
        "the killed shard's room is back",
        || {
            seq = acked(&publisher.publish(&killed_room, "t:n", "1")).unwrap_or(0);
            seq > 0
        },
    );
    // Its member gets what was acknowledged after the failover.
    let text = members[0].recv_skip_presence();
    assert!(seq_of(&text) >= 1, "{text}");
    wait_until(Duration::from_secs(10), "healthz is 200 again", || {
        http_get(a.addr(), "/healthz").status == 200
    });
    let _ = &mut members;
}

#[test]
fn a_room_whose_slot_moves_keeps_its_members_and_order() {
    let cluster = RedisCluster::start(3, 0);
    let a = node_on(&cluster, "rs-a");
    let room = "resharded";
    let slot = layout::slot(room.as_bytes());
    let mut member = Client::user(a.addr(), "member");
    member.join(room);
    let mut feed = common::rooms::publisher(a.addr(), "feed");
    assert_eq!(feed.publish_ok(room, "t:n", "1"), 1);
    assert_eq!(seq_of(&member.recv_skip_presence()), 1);
    let from = cluster.master_of(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).unwrap();
    cluster.move_slot(slot, to);
    // The next publishes are redirected (or follow the new map), and the
    // member, subscribed again at the new master, gets each in order.
    let mut seqs = Vec::new();
    wait_until(
        Duration::from_secs(10),
        "publishes are acknowledged again",
        || {
            if let Some(seq) = acked(&feed.publish(room, "t:n", "2")) {
                seqs.push(seq);
            }
            seqs.len() >= 3
        },
    );
    let mut seen = Vec::new();
    while seen.last() != seqs.last() {
        seen.push(seq_of(&member.recv_skip_presence()));
    }
    assert_eq!(
        seen, seqs,
        "the member got each acknowledged message once, in order"
    );
    assert_eq!(seqs[0], 2, "the room's history moved with its slot");
    let said = a.stderr();
    assert!(
        said.contains("a channel moved"),
        "the node saw its channel unsubscribed: {said}"
    );
}
