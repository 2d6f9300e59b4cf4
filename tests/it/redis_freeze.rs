//! A Redis that stops answering without closing anything (SIGSTOP): it is
//! unreachable once `--redis-timeout` passes (section 15), what waits for
//! it is bounded and answered `UNAVAILABLE` at once past the bound, and
//! once it answers again the node recovers as after any outage (section 10).

use crate::cluster::post_publish;
use crate::common;
use crate::redis_bridge::{Node as Bridge, Out};

use std::time::{Duration, Instant};

use common::redis::{RedisServer, node};
use common::rooms::{Client, ack_error, ack_seq, publisher, seq_of};
use common::{Server, http_get, metric, wait_until};
use roomcast::redis::requests::Unavailable;

/// Everything the node logged so far.
fn log_of(server: &Server) -> String {
    server.stderr()
}

/// A bridge whose link to a fresh Redis is up, with a timeout long enough
/// that only the bounds answer while Redis is frozen.
fn bridge_on_a_fresh_redis() -> (RedisServer, Bridge) {
    let redis = RedisServer::start();
    let bridge = Bridge::start_with(redis.addr.port(), "n1", Duration::from_secs(30));
    bridge.wait_link(true);
    (redis, bridge)
}

#[test]
fn a_frozen_redis_is_unreachable_within_the_timeout_and_a_node_recovers_after_it() {
    let redis = RedisServer::start();
    let timeout = ["--redis-timeout", "500ms"];
    let (a, b) = (node(&[&redis], &timeout), node(&[&redis], &timeout));
    // A node does not warn before it has tried.
    assert!(!log_of(&a).contains("unreachable"), "{}", log_of(&a));
    let mut member = Client::user(a.addr(), "member");
    member.join("live");
    let mut feed = publisher(b.addr(), "feed");
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(feed.publish_ok("live", "t:n", &i.to_string()));
    }

    let frozen = redis.freeze();
    let froze = Instant::now();
    // A publish Redis does not answer is answered UNAVAILABLE once the
    // timeout passes (a 503 from then on).
    let refused = feed.publish("live", "t:n", "100");
    let answered_in = froze.elapsed();
    assert_eq!(ack_error(&refused), "UNAVAILABLE", "{refused:?}");
    assert!(
        answered_in < Duration::from_millis(1500),
        "answered after {answered_in:?}"
    );
    // The idle node notices through its pings: within a second and the timeout.
    for server in [&b, &a] {
        wait_until(Duration::from_secs(3), "healthz reports Redis down", || {
            http_get(server.addr(), "/healthz").status == 503
        });
    }
    // At most a ping's second and the timeout, with room for a busy machine.
    let degraded_in = froze.elapsed();
    assert!(
        degraded_in < Duration::from_millis(2500),
        "degraded after {degraded_in:?}"
    );
    let started = Instant::now();
    let refused = feed.publish("live", "t:n", "101");
    assert_eq!(ack_error(&refused), "UNAVAILABLE", "{refused:?}");
    let resp = post_publish(&b, r#"{"room":"live","event":"t:n","data":102}"#);
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refusals took {:?}",
        started.elapsed()
    );
    for server in [&a, &b] {
        let log = log_of(server);
        assert!(log.contains("no answer within 500ms"), "{log}");
        assert!(metric(server.addr(), "roomcast_redis_timeouts_total") >= 1.0);
        assert_eq!(metric(server.addr(), "roomcast_redis_up"), 0.0);
    }

    // Reconnecting to the frozen server connects (the kernel accepts) but
    // its setup is never answered: bounded by the same timeout.
    wait_until(
        Duration::from_secs(5),
        "a reconnect attempt timed out",
        || metric(b.addr(), "roomcast_redis_timeouts_total") >= 2.0,
    );
    assert!(
        log_of(&b).contains("not connected and set up within 500ms"),
        "{}",
        log_of(&b)
    );

    frozen.thaw();
    for server in [&a, &b] {
        wait_until(Duration::from_secs(15), "the node is back on Redis", || {
            http_get(server.addr(), "/healthz").status == 200
        });
    }
    wait_until(Duration::from_secs(10), "publishes are taken again", || {
        let ack = feed.publish("live", "t:n", "1000");
        let ok = ack["success"] == true;
        if ok {
            acked.push(ack_seq(&ack));
        }
        ok
    });
    acked.push(feed.publish_ok("live", "t:n", "1001"));
    // The member got every acknowledged message once, in seq order, and
    // nothing else but what Redis sequenced before it froze (a publish
    // refused for the timeout may still have been run once it thawed).
    let last = *acked.last().unwrap();
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        seqs.push(seq_of(&member.recv_skip_presence()));
    }
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
    assert!(acked.iter().all(|s| seqs.contains(s)));
}

#[test]
fn past_the_bound_requests_are_answered_at_once_and_within_it_after_redis_answers() {
    const SENT: u32 = 20_000;
    let (redis, bridge) = bridge_on_a_fresh_redis();
    let frozen = redis.freeze();
    let sent_at = Instant::now();
    for n in 1..=SENT {
        bridge.publish("lobby", n);
    }
    // 16,384 wait for Redis (less what else the link had in flight); the
    // rest is answered at once.
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused.len() < (SENT - 16_384) as usize && Instant::now() < deadline {
        match bridge.next() {
            Out::Sequenced(n, Err(Unavailable)) => refused.push(n),
            Out::Sequenced(n, Ok(_)) => panic!("{n} acked by a frozen Redis"),
            _ => {}
        }
    }
    let refused_in = sent_at.elapsed();
    assert!(
        refused.len() >= (SENT - 16_384) as usize,
        "{} refused",
        refused.len()
    );
    assert!(refused_in < Duration::from_secs(5), "{refused_in:?}");
    frozen.thaw();
    let mut acked = Vec::new();
    while acked.len() + refused.len() < SENT as usize {
        match bridge.next() {
            Out::Sequenced(n, Ok(s)) => acked.push((n, s.seq)),
            Out::Sequenced(n, Err(Unavailable)) => refused.push(n),
            _ => {}
        }
    }
    assert!(
        refused.len() < (SENT - 16_384) as usize + 8,
        "{}",
        refused.len()
    );
    // What was taken is sequenced in the order it came, without a gap.
    assert!(
        acked
            .windows(2)
            .all(|w| w[1].0 > w[0].0 && w[1].1 == w[0].1 + 1)
    );
    let refused: std::collections::HashSet<u32> = refused.into_iter().collect();
    assert!(acked.iter().all(|(n, _)| !refused.contains(n)));
}

/// Sends `count` requests (`send`) to a bridge whose Redis is frozen, runs
/// `while_frozen`, and thaws Redis.
fn storm_while_frozen(
    count: u32,
    send: impl Fn(&Bridge, u32),
    while_frozen: impl FnOnce(&Bridge),
) -> (RedisServer, Bridge) {
    let (redis, bridge) = bridge_on_a_fresh_redis();
    let frozen = redis.freeze();
    for n in 1..=count {
        send(&bridge, n);
    }
    while_frozen(&bridge);
    frozen.thaw();
    (redis, bridge)
}

#[test]
fn a_join_storm_past_the_bound_is_held_and_joined_once_redis_answers() {
    // More joins than a link may have waiting, less than it holds back.
    const JOINS: u32 = 24_000;
    let join = |bridge: &Bridge, n| bridge.join(&format!("room-{}", n % 100), &format!("u{n}"), n);
    // Nothing is refused while Redis is only slow...
    let nothing_answered = |bridge: &Bridge| {
        let quiet_until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < quiet_until {
            match bridge.out.recv_timeout(Duration::from_millis(50)) {
                Ok(Out::Joined(n, Err(Unavailable))) => panic!("join {n} refused"),
                Ok(Out::Joined(n, Ok(_))) => panic!("join {n} answered by a frozen Redis"),
                _ => {}
            }
        }
    };
    let (_redis, bridge) = storm_while_frozen(JOINS, join, nothing_answered);
    // ...and every join is answered once it answers again.
    let mut joined = std::collections::HashSet::new();
    while joined.len() < JOINS as usize {
        match bridge.next() {
            Out::Joined(n, Ok(_)) => assert!(joined.insert(n), "{n} twice"),
            Out::Joined(n, Err(Unavailable)) => panic!("join {n} refused"),
            _ => {}
        }
    }
}

#[test]
fn a_disconnect_storm_past_every_bound_is_held_and_keeps_the_link() {
    // More leaves than a link takes at all (twice `REQUESTS`), then a
    // publish behind them.
    let leave = |bridge: &Bridge, n| bridge.leave(&format!("room-{}", n % 100), &format!("u{n}"));
    let publish_behind = |bridge: &Bridge| {
        bridge.publish("lobby", 1);
        std::thread::sleep(Duration::from_millis(500));
    };
    let (_redis, bridge) = storm_while_frozen(40_000, leave, publish_behind);
    // The publish is sequenced, on a link never dropped.
    loop {
        match bridge.next() {
            Out::Sequenced(1, outcome) => {
                assert!(outcome.is_ok(), "{outcome:?}");
                break;
            }
            Out::Link(false) => panic!("the link was dropped"),
            _ => {}
        }
    }
}

#[test]
fn joins_wait_in_the_node_not_in_redis_so_a_heartbeat_is_not_late() {
    // 3,000 joins while Redis is frozen: a thousand or so go out, the rest
    // wait in the node, so a heartbeat written now has a thousand ahead
    // of it, not 3,000 (with 64 nodes, 16,384 each made it 20 s late).
    const JOINS: usize = 3000;
    let redis = RedisServer::start();
    let flags = [
        "--redis-timeout",
        "30s",
        "--rate-limit",
        "0",
        "--max-rooms-per-connection",
        "5000",
    ];
    let server = node(&[&redis], &flags);
    let mut member = Client::user(server.addr(), "member");
    member.join("first");
    let frozen = redis.freeze();
    for n in 0..JOINS {
        member.send(&format!(
            r#"{{"event":"room:join","data":{{"room":"r{n}"}},"id":{n}}}"#
        ));
    }
    let depth = || metric(server.addr(), "roomcast_redis_pipeline_depth");
    wait_until(Duration::from_secs(5), "the joins reach the bridge", || {
        depth() >= 1000.0
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(depth() <= 1100.0, "{} waiting for Redis", depth());
    frozen.thaw();
    // Every join is answered, and joined.
    for _ in 0..JOINS {
        let ack = member.recv();
        assert!(ack.contains(r#""success":true"#), "{ack}");
    }
}

#[test]
fn a_bridge_reports_nothing_until_its_first_attempt_ended() {
    let redis = RedisServer::start();
    let bridge = Bridge::start_with(redis.addr.port(), "n1", Duration::from_secs(2));
    match bridge.next() {
        Out::Link(up) => assert!(up, "the first report is that Redis is up"),
        other => panic!("{other:?}"),
    }
}
