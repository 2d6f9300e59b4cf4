//! Replicas and failover (`docs/protocol.md` section 15): with
//! `--redis-replicas` a publish is acknowledged only once a real replica
//! has it, and after a reconnect to an engine that lost writes no `seq` is
//! given out twice. Real nodes, a real master and replica, each stopped by
//! its PID.

use crate::common;

use std::time::{Duration, Instant};

use common::redis::{Proxy, RedisServer, node};
use common::rooms::{Client, ack_error, publisher, seq_of};
use common::{Server, http_get, wait_until};

use crate::cluster::{Quiet, post_publish};
use roomcast::redis::resp::Reply;

#[test]
fn with_replicas_a_publish_is_acked_once_a_replica_has_it_and_refused_when_none_confirms() {
    let master = RedisServer::start();
    let replica = RedisServer::start_replica_of(&master);
    let a = node(&[&master], &["--redis-replicas", "1"]);
    let mut member = Client::user(a.addr(), "member");
    member.join("replicated");
    let mut feed = publisher(a.addr(), "feed");
    let mut on_replica = replica.connect();
    for i in 1..=3 {
        assert_eq!(feed.publish_ok("replicated", "t:n", &i.to_string()), i);
        // Acknowledged: the replica has it already.
        let seq = on_replica.call(&["GET", "roomcast:{replicated}:seq"]);
        assert_eq!(seq, Reply::Bulk(i.to_string().into_bytes()));
        assert_eq!(seq_of(&member.recv_skip_presence()), i);
    }

    // A replica that hangs confirms nothing: refused after the 1 s WAIT.
    replica.pause();
    let started = Instant::now();
    let refused = feed.publish("replicated", "t:n", "4");
    let waited = started.elapsed();
    assert_eq!(ack_error(&refused), "UNAVAILABLE", "{refused:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "refused after the WAIT's second: {waited:?}"
    );
    let resp = post_publish(&a, r#"{"room":"other","event":"t:n","data":5}"#);
    assert_eq!(resp.status, 503, "{resp:?}");
    // The link itself is fine: the node stays healthy.
    assert_eq!(http_get(a.addr(), "/healthz").status, 200);

    replica.resume();
    let mut seq = 0;
    wait_until(Duration::from_secs(10), "publishes are acked again", || {
        let ack = feed.publish("replicated", "t:n", "6");
        if ack["success"] == true {
            seq = common::rooms::ack_seq(&ack);
            true
        } else {
            false
        }
    });
    // The refused one was sequenced all the same (section 15: it may have
    // been delivered); the count goes on past it.
    assert!(seq >= 5, "{seq}");
}

#[test]
fn a_node_that_delivered_seqs_an_engine_lost_raises_the_engine_seq_after_a_reconnect() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.addr);
    let a = Server::start(&["--redis", &proxy.url(), "--history", "100"]);
    wait_until(Duration::from_secs(10), "node a reaches Redis", || {
        http_get(a.addr(), "/healthz").status == 200
    });
    let mut member = Client::user(a.addr(), "member");
    member.join("lost");
    let mut feed = publisher(a.addr(), "feed");
    for i in 1..=5 {
        assert_eq!(feed.publish_ok("lost", "t:n", &i.to_string()), i);
        assert_eq!(seq_of(&member.recv_skip_presence()), i);
    }
    // A failover to a replica that had not got 4 and 5, seen by the node
    // as a reconnect.
    proxy.cut();
    let mut raw = redis.connect();
    assert_eq!(
        raw.call(&["SET", "roomcast:{lost}:seq", "3"]),
        Reply::Status("OK".into())
    );
    assert_eq!(
        raw.call(&["XDEL", "roomcast:{lost}:log", "0-4", "0-5"]),
        Reply::Integer(2)
    );
    // As the replica had it: the stream's last id is 3, not 5.
    assert_eq!(
        raw.call(&["XSETID", "roomcast:{lost}:log", "0-3"]),
        Reply::Status("OK".into())
    );
    wait_until(Duration::from_secs(10), "node a sees Redis down", || {
        http_get(a.addr(), "/healthz").status == 503
    });
    proxy.restore();
    wait_until(Duration::from_secs(10), "node a is back", || {
        http_get(a.addr(), "/healthz").status == 200
    });
    // 4 and 5 are never given out again: the next message is 6, and the
    // member (whose node delivered 5) gets it.
    assert_eq!(feed.publish_ok("lost", "t:n", "6"), 6);
    assert_eq!(seq_of(&member.recv_skip_presence()), 6);
    assert!(
        member.recv_skip_presence_or_none().is_none(),
        "nothing else"
    );
    // A member joining now is told of the gap rather than handed 1-3 as
    // if they came right before 6.
    let mut late = Client::user(a.addr(), "late");
    let joined = late.join_with(r#"{"room":"lost","history":10}"#);
    let data = common::rooms::ok_data(&joined);
    assert_eq!(common::rooms::u64_at(data, &["seq"]), 6);
    let seqs: Vec<u64> = common::rooms::array_at(data, &["messages"])
        .iter()
        .map(|m| common::rooms::u64_at(m, &["seq"]))
        .collect();
    assert_eq!(seqs, [6]);
}
