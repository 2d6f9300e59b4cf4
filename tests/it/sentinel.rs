//! `redis+sentinel://` (`docs/protocol.md` section 15): nodes find the
//! master through real Redis Sentinels, follow a failover within 5 s of
//! Sentinel's switch, notice a master demoted under them, and stay
//! unavailable, without spinning, while Sentinel names a master nobody
//! can reach. Every Redis, Sentinel and server is stopped by its PID.

use crate::common;

use std::time::{Duration, Instant};

use common::redis::{RedisConn, RedisServer, free_port};
use common::rooms::{Client, ack_error, ack_seq, publisher, u64_at};
use common::sentinel::{FakeSentinel, Sentinel, SentinelSetup, master_answer};
use common::{Server, http_get, parse_json, wait_until};

/// A node on `url` with `--history 100`, once it reached the master.
fn sentinel_node(url: &str) -> Server {
    let server = Server::start(&["--redis", url, "--history", "100"]);
    wait_until(
        Duration::from_secs(15),
        "the node reaches the master",
        || healthy(&server),
    );
    server
}

fn healthy(server: &Server) -> bool {
    http_get(server.addr(), "/healthz").status == 200
}

fn metric(server: &Server, name: &str) -> Option<u64> {
    let body = http_get(server.addr(), "/metrics").body;
    let prefix = format!("{name} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th of the whole line.
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Publishes `text` until a publish is acknowledged (the node may take the
/// first ones while still leaving a dead master).
fn publish_until_acked(feed: &mut Client, room: &str, text: &str) -> u64 {
    let mut seq = 0;
    wait_until(Duration::from_secs(10), "a publish is acknowledged", || {
        let ack = feed.publish(room, "t:n", text);
        if ack["success"] == true {
            seq = ack_seq(&ack);
            return true;
        }
        assert_eq!(ack_error(&ack), "UNAVAILABLE", "{ack:?}");
        false
    });
    seq
}

#[test]
fn nodes_find_the_master_through_sentinel_and_follow_a_failover_within_5s() {
    let mut setup = SentinelSetup::start(1);
    let url = setup.url();
    let (a, b) = (sentinel_node(&url), sentinel_node(&url));
    let mut member = Client::user(a.addr(), "member");
    member.join("lobby");
    let mut feed = publisher(b.addr(), "feed");
    assert_eq!(feed.publish_ok("lobby", "t:n", "1"), 1);
    assert_eq!(
        u64_at(&parse_json(&member.recv_skip_presence()), &["data"]),
        1
    );

    let old = setup.master_addr().expect("Sentinel names the master");
    setup.kill_master();
    wait_until(
        Duration::from_secs(5),
        "both nodes report Redis down",
        || !healthy(&a) && !healthy(&b),
    );
    let refused = feed.publish("lobby", "t:n", "2");
    assert_eq!(ack_error(&refused), "UNAVAILABLE", "{refused:?}");
    let (new, switched) = setup.wait_for_switch(old, Duration::from_secs(30));
    assert_ne!(new, old);
    wait_until(
        Duration::from_secs(10),
        "both nodes reach the new master",
        || healthy(&a) && healthy(&b),
    );
    let took = switched.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "back {took:?} after the switch"
    );

    // Publishing and delivery resume, on the new master.
    publish_until_acked(&mut feed, "lobby", "3");
    let mut seen = Vec::new();
    while seen.last() != Some(&3) {
        let text = member.recv_skip_presence();
        seen.push(u64_at(&parse_json(&text), &["data"]));
    }
    assert!(
        !seen.contains(&2),
        "a refused publish was delivered: {seen:?}"
    );
    for node in [&a, &b] {
        assert_eq!(metric(node, "roomcast_redis_master_changes_total"), Some(1));
        assert_eq!(metric(node, "roomcast_redis_up"), Some(1));
        assert!(metric(node, "roomcast_redis_reconnects_total") >= Some(1));
    }
    let log = b.stderr();
    assert!(
        log.contains(&format!("Sentinel names the master {new}")),
        "{log}"
    );
}

#[test]
fn a_master_demoted_under_a_node_is_noticed_and_the_node_follows_sentinel() {
    let setup = SentinelSetup::start(1);
    let node = sentinel_node(&setup.url());
    let mut feed = publisher(node.addr(), "feed");
    assert_eq!(feed.publish_ok("demoted", "t:n", "1"), 1);

    // The master is made a replica of another server behind Sentinel's
    // back: its clients stay connected, and its writes are refused.
    let elsewhere = RedisServer::start();
    let old = setup.master_addr().unwrap();
    let mut master = RedisConn::connect(old);
    let port = elsewhere.addr.port().to_string();
    master.call(&["REPLICAOF", "127.0.0.1", &port]);
    let refused = feed.publish("demoted", "t:n", "2");
    assert_eq!(ack_error(&refused), "UNAVAILABLE", "{refused:?}");
    wait_until(
        Duration::from_secs(2),
        "the node reports Redis down",
        || !healthy(&node),
    );
    node.wait_for_log(&["is not the master"]);

    // Sentinel takes a master that says it is a replica for a failing one
    // and promotes the real replica; the node follows.
    let (new, _) = setup.wait_for_switch(old, Duration::from_secs(40));
    wait_until(
        Duration::from_secs(10),
        "the node reaches the new master",
        || healthy(&node),
    );
    publish_until_acked(&mut feed, "demoted", "3");
    assert_eq!(
        metric(&node, "roomcast_redis_master_changes_total"),
        Some(1)
    );
    let log = node.stderr();
    assert!(
        log.contains(&format!("Sentinel names the master {new}")),
        "{log}"
    );
}

#[test]
fn a_sentinel_naming_an_unreachable_master_leaves_the_node_unavailable_without_spinning() {
    let nobody = free_port();
    let sentinel = Sentinel::start(nobody, 1);
    let addr = sentinel.addr;
    // The second Sentinel of the URL is not there at all.
    let url = format!("redis+sentinel://{addr},127.0.0.1:{}/roomcast", free_port());
    let node = Server::start(&["--redis", &url]);
    node.wait_for_log(&[&format!("127.0.0.1:{nobody}")]);
    let before = cpu_ticks(node.pid());
    let lines_before = node.log_lines().len();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(node.pid()) - before;
    let lines = node.log_lines().len() - lines_before;
    let health = http_get(node.addr(), "/healthz");
    assert_eq!(health.status, 503, "{health:?}");
    assert_eq!(metric(&node, "roomcast_redis_up"), Some(0));
    // Clock ticks are 10 ms: a retry loop that spun would use most of the
    // 3 s; backoff retries use next to nothing.
    assert!(
        spent < 50,
        "{spent} ticks of CPU in {:?}",
        started.elapsed()
    );
    assert!(lines <= 12, "{lines} log lines in 3 s:\n{}", node.stderr());
    let mut publisher = publisher(node.addr(), "feed");
    let refused = publisher.publish("r", "t:n", "1");
    assert_eq!(ack_error(&refused), "UNAVAILABLE", "{refused:?}");
}

#[test]
fn bad_then_changing_sentinel_answers_are_survived_without_spinning() {
    let fake = FakeSentinel::start();
    fake.answer(&[
        b":1\r\n",
        b"*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n",
        b"*1\r\n$1\r\nh\r\n",
        b"-ERR no such master\r\n",
        b"$-1\r\n",
        b"*2\r\n$3\r\na b\r\n$4\r\n6379\r\n",
        b"?not RESP\r\n",
    ]);
    let url = format!("redis+sentinel://{}/roomcast", fake.addr);
    let node = Server::start(&["--redis", &url]);
    node.wait_for_log(&["no Sentinel names the master"]);
    // Past --redis-timeout without a master the node says it is down, as
    // one whose Redis refuses connections does.
    node.wait_for_log(&["redis: unreachable"]);
    let before = cpu_ticks(node.pid());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        cpu_ticks(node.pid()) - before < 40,
        "spinning on bad answers"
    );
    assert_eq!(http_get(node.addr(), "/healthz").status, 503);
    let warnings = node
        .stderr()
        .matches("no Sentinel names the master")
        .count();
    assert_eq!(warnings, 1, "said once:\n{}", node.stderr());

    // Two masters named in turn, one each second: each change is taken,
    // counted and said, and costs a reconnect, not a spin.
    let (a, b) = (RedisServer::start(), RedisServer::start());
    fake.answer(&[&master_answer(a.addr), &master_answer(b.addr)]);
    let before = cpu_ticks(node.pid());
    wait_until(Duration::from_secs(10), "the master changes twice", || {
        metric(&node, "roomcast_redis_master_changes_total") >= Some(2)
    });
    assert!(
        cpu_ticks(node.pid()) - before < 100,
        "spinning on a flapping master"
    );

    fake.answer(&[&master_answer(b.addr)]);
    wait_until(
        Duration::from_secs(5),
        "the node settles on one master",
        || healthy(&node),
    );
    let mut feed = publisher(node.addr(), "feed");
    publish_until_acked(&mut feed, "settled", "1");
    assert!(
        node.stderr()
            .contains(&format!("Sentinel names the master {}", b.addr))
    );
}
