//! Cluster mode (`docs/protocol.md` section 10): several real `roomcast`
//! processes sharing real `redis-server`s, with publishers and members on
//! different nodes. Every server and every Redis is stopped by its PID.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::redis::{Proxy, RedisServer, free_port, node};
use common::rooms::{
    Claims, Client, ack_error, ack_seq, array_at, ok_data, publisher, q, seq_of, str_at, u64_at,
};
use common::{HttpConn, Server, http_get, json_str, parse_json, wait_until};
use roomcast::conn::id::ConnId;
use roomcast::redis::resp::Reply;

pub(crate) fn post_publish(server: &Server, body: &str) -> common::HttpResponse {
    let token = Claims::new("backend").publish(&["*"]).token();
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = HttpConn::connect(server.addr());
    conn.send(request.as_bytes());
    conn.read_response()
}

/// Reads room events (skipping presence) until `n` are in; their texts.
fn read_events(client: &mut Client, n: usize) -> Vec<String> {
    (0..n).map(|_| client.recv_skip_presence()).collect()
}

#[test]
fn a_message_published_on_one_node_reaches_members_on_another_in_one_order() {
    let redis = RedisServer::start();
    let (a, b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut alice = Client::user(a.addr(), "alice");
    let mut bob = Client::user(b.addr(), "bob");
    alice.join("lobby");
    bob.join("lobby");
    let seq = bob.publish_ok("lobby", "chat:msg", r#"{"text":"hi from b"}"#);
    assert_eq!(seq, 1);
    let text = alice.recv_skip_presence();
    common::rooms::assert_room_event(
        &text,
        "chat:msg",
        "lobby",
        r#"{"text":"hi from b"}"#,
        "bob",
        1,
    );
    assert_eq!(alice.publish_ok("lobby", "chat:msg", "2"), 2);
    assert_eq!(seq_of(&bob.recv_skip_presence()), 2);
    // Without echo, a publisher does not get its own message back.
    alice.assert_quiet(Duration::from_millis(300));
    let echoed = alice.request("chat:msg", "3", r#""room":"lobby","echo":true"#);
    assert_eq!(ack_seq(&echoed), 3);
    assert_eq!(seq_of(&alice.recv_skip_presence()), 3);
    assert_eq!(seq_of(&bob.recv_skip_presence()), 3);
}

#[test]
fn history_recovery_and_the_last_value_answer_the_same_on_every_node() {
    let redis = RedisServer::start();
    let (a, b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut feed = publisher(a.addr(), "feed");
    for i in 1..=5 {
        assert_eq!(
            feed.publish_ok("prices:btc", "price:tick", &i.to_string()),
            i
        );
    }
    let mut viewer = Client::user(b.addr(), "viewer");
    let joined = viewer.join_with(r#"{"room":"prices:btc","history":3}"#);
    let data = ok_data(&joined);
    assert_eq!(u64_at(data, &["seq"]), 5);
    let epoch = str_at(data, &["epoch"]).to_owned();
    let seqs: Vec<u64> = array_at(data, &["messages"])
        .iter()
        .map(|m| u64_at(m, &["seq"]))
        .collect();
    assert_eq!(seqs, [3, 4, 5]);

    // The same question on the other node gets the same answer.
    let mut other = Client::user(a.addr(), "other");
    let again = other.join_with(r#"{"room":"prices:btc","history":3}"#);
    assert_eq!(str_at(ok_data(&again), &["epoch"]), epoch);
    let texts = |v: &simd_json::OwnedValue| format!("{:?}", array_at(ok_data(v), &["messages"]));
    assert_eq!(texts(&again), texts(&joined));

    // Live events after the join, then a recovery from seq 6 on a third client.
    for i in 6..=8 {
        feed.publish_ok("prices:btc", "price:tick", &i.to_string());
    }
    let live: Vec<u64> = read_events(&mut viewer, 3)
        .iter()
        .map(|t| seq_of(t))
        .collect();
    assert_eq!(live, [6, 7, 8]);
    let mut back = Client::user(b.addr(), "back");
    let recovered = back.join_with(&format!(
        r#"{{"room":"prices:btc","since":6,"epoch":{}}}"#,
        q(&epoch)
    ));
    let data = ok_data(&recovered);
    assert_eq!(data["recovered"], simd_json::OwnedValue::from(true));
    let seqs: Vec<u64> = array_at(data, &["messages"])
        .iter()
        .map(|m| u64_at(m, &["seq"]))
        .collect();
    assert_eq!(seqs, [7, 8]);
    let stale = back.join_with(r#"{"room":"prices:btc","since":2,"epoch":"not-it"}"#);
    assert_eq!(
        ok_data(&stale)["recovered"],
        simd_json::OwnedValue::from(false)
    );
}

#[test]
fn concurrent_publishers_on_three_nodes_are_seen_in_one_order_by_every_member() {
    const PER_PUBLISHER: u64 = 150;
    let redis = RedisServer::start();
    let nodes: Vec<Server> = (0..3).map(|_| node(&[&redis], &[])).collect();
    let mut members: Vec<Client> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut m = Client::user(n.addr(), &format!("member{i}"));
            m.join("race");
            m
        })
        .collect();
    let threads: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(p, n)| {
            let addr = n.addr();
            std::thread::spawn(move || {
                let mut client = publisher(addr, &format!("pub{p}"));
                (0..PER_PUBLISHER)
                    .map(|i| client.publish_ok("race", "t:n", &format!("{}", p as u64 * 1000 + i)))
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut acked: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    acked.sort_unstable();
    let total = 3 * PER_PUBLISHER;
    assert_eq!(
        acked,
        (1..=total).collect::<Vec<_>>(),
        "every seq acked once"
    );
    every_member_saw_seqs_1_to(&mut members, total);
}

/// Reads `total` room events from every member and checks them: seqs
/// 1..=total with no gap, duplicate or reordering; each publisher's
/// messages (`data` = publisher × 1000 + n) in its own order; the same
/// texts for every member. Returns those texts.
fn every_member_saw_seqs_1_to(members: &mut [Client], total: u64) -> Vec<String> {
    let mut first: Option<Vec<String>> = None;
    for member in members {
        let events = read_events(member, total as usize);
        let seqs: Vec<u64> = events.iter().map(|t| seq_of(t)).collect();
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "no gap, duplicate or reordering"
        );
        let mut last: HashMap<u64, u64> = HashMap::new();
        for text in &events {
            let n = u64_at(&parse_json(text), &["data"]);
            if let Some(prev) = last.insert(n / 1000, n) {
                assert!(n > prev, "publisher order kept: {prev} then {n}");
            }
        }
        match &first {
            None => first = Some(events),
            Some(first) => assert_eq!(first, &events, "byte-identical for every member"),
        }
        member.assert_quiet(Duration::from_millis(200));
    }
    first.expect("at least one member")
}

/// The number of `FCALL`s Redis ran, from `INFO commandstats`.
fn fcalls(redis: &RedisServer) -> u64 {
    let info = redis.connect().call(&["INFO", "commandstats"]);
    let info = String::from_utf8_lossy(info.as_bytes().unwrap()).into_owned();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_fcall:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no fcall stats: {info}"))
}

#[test]
fn a_burst_of_publishes_to_one_room_is_sequenced_in_batches_without_a_gap() {
    const PUBLISHERS: u64 = 8;
    const PER_PUBLISHER: u64 = 100;
    let redis = RedisServer::start();
    let (a, b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut members: Vec<Client> = [&a, &a, &b]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut m = Client::user(n.addr(), &format!("member{i}"));
            m.join("burst");
            m
        })
        .collect();
    let calls_before = fcalls(&redis);
    // Every publisher sends all its messages before it reads an ack, so
    // the node takes many publishes to the room at once.
    let threads: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let addr = a.addr();
            std::thread::spawn(move || {
                let mut client = publisher(addr, &format!("pub{p}"));
                let ids: Vec<String> = (0..PER_PUBLISHER)
                    .map(|i| {
                        let id = client.new_id();
                        let data = p * 1000 + i;
                        client.send(&format!(
                            r#"{{"event":"t:n","room":"burst","data":{data},"id":{}}}"#,
                            q(&id)
                        ));
                        id
                    })
                    .collect();
                ids.iter()
                    .map(|id| ack_seq(&parse_json(&client.wait_ack(id))))
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut acked = Vec::new();
    for thread in threads {
        let seqs = thread.join().unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a publisher's seqs in the order it sent: {seqs:?}"
        );
        acked.extend(seqs);
    }
    acked.sort_unstable();
    let total = PUBLISHERS * PER_PUBLISHER;
    assert_eq!(
        acked,
        (1..=total).collect::<Vec<_>>(),
        "every seq acked once"
    );
    let calls = fcalls(&redis) - calls_before;
    assert!(
        calls < total,
        "{total} publishes in {calls} calls: none batched"
    );
    let first = every_member_saw_seqs_1_to(&mut members, total);
    // The history holds the same messages as were delivered live.
    let mut late = Client::user(b.addr(), "late");
    let joined = late.join_with(r#"{"room":"burst","history":100}"#);
    let history: Vec<String> = array_at(ok_data(&joined), &["messages"])
        .iter()
        .map(|m| format!("{m:?}"))
        .collect();
    let live: Vec<String> = first[(total as usize - 100)..]
        .iter()
        .map(|t| format!("{:?}", parse_json(t)))
        .collect();
    assert_eq!(history, live);
}

#[test]
fn conn_ids_name_their_node_so_two_nodes_never_give_out_the_same() {
    let redis = RedisServer::start();
    let one_shard = ["--shards", "1"];
    let a = node(
        &[&redis],
        &[&one_shard[..], &["--node-id", "edge-1"]].concat(),
    );
    let b = node(
        &[&redis],
        &[&one_shard[..], &["--node-id", "edge-1.b"]].concat(),
    );
    let (on_a, on_b) = (Client::user(a.addr(), "u"), Client::user(b.addr(), "u"));
    let (id_a, id_b) = (on_a.conn_id(), on_b.conn_id());
    assert_ne!(id_a, id_b);
    for (server, id, node_id) in [(&a, &id_a, "edge-1"), (&b, &id_b, "edge-1.b")] {
        let parsed = ConnId::parse(id).unwrap_or_else(|e| panic!("{id}: {e:?}"));
        assert_eq!((parsed.node, parsed.shard), (Some(node_id), 0), "{id}");
        // The node's log names the connection the same way.
        server.wait_for_log(&[" opened ", &format!("conn={id} ")]);
    }
}

#[test]
fn post_publish_on_any_node_is_the_same_as_on_one_server() {
    let redis = RedisServer::start();
    let (a, b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut member = Client::user(a.addr(), "member");
    member.join("news");
    let body = r#"{"messages":[{"room":"news","event":"news:story","data":1},{"room":"news","event":"news:story","data":2}]}"#;
    let resp = post_publish(&b, body);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.body,
        r#"{"success":true,"results":[{"room":"news","seq":1},{"room":"news","seq":2}]}"#
    );
    let got: Vec<u64> = read_events(&mut member, 2)
        .iter()
        .map(|t| seq_of(t))
        .collect();
    assert_eq!(got, [1, 2]);
    assert!(
        member.recv_skip_presence_or_none().is_none(),
        "nothing else arrives"
    );
}

pub(crate) trait Quiet {
    fn recv_skip_presence_or_none(&mut self) -> Option<String>;
}

impl Quiet for Client {
    fn recv_skip_presence_or_none(&mut self) -> Option<String> {
        while let Some(text) = self.try_recv(Duration::from_millis(300)) {
            if !text.starts_with(r#"{"event":"presence:"#) {
                return Some(text);
            }
        }
        None
    }
}

#[test]
fn redis_going_away_refuses_publishes_keeps_connections_and_recovers_after() {
    let port = free_port();
    let redis = RedisServer::start_on(port);
    let (a, b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut member = Client::user(a.addr(), "member");
    member.join("live");
    let mut feed = publisher(b.addr(), "feed");
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push((i, feed.publish_ok("live", "t:n", &i.to_string())));
    }
    // Redis keeps nothing here: what it published before dying must have
    // reached the member first (with persistence, see the next test, the
    // history covers it instead).
    let mut received: Vec<u64> = read_events(&mut member, 20)
        .iter()
        .map(|t| u64_at(&parse_json(t), &["data"]))
        .collect();
    redis.stop();
    wait_until(
        Duration::from_secs(10),
        "healthz reports Redis down",
        || http_get(b.addr(), "/healthz").status == 503,
    );
    let health = http_get(b.addr(), "/healthz");
    assert_eq!(health.body, r#"{"status":"degraded","redis":"down"}"#);
    let refused = feed.publish("live", "t:n", "999");
    assert_eq!(ack_error(&refused), "UNAVAILABLE", "{refused:?}");
    let resp = post_publish(&b, r#"{"room":"live","event":"t:n","data":998}"#);
    assert_eq!(resp.status, 503, "{resp:?}");
    let body = parse_json(&resp.body);
    assert_eq!(json_str(&body, &["error", "code"]), Some("UNAVAILABLE"));
    let metrics = http_get(b.addr(), "/metrics").body;
    assert!(metrics.contains("\nroomcast_redis_up 0\n"), "{metrics}");

    // Back, empty: the room starts a new epoch; connections were kept.
    let redis = RedisServer::start_on(port);
    wait_until(Duration::from_secs(15), "both nodes reconnect", || {
        http_get(a.addr(), "/healthz").status == 200 && http_get(b.addr(), "/healthz").status == 200
    });
    let mut seq = 0;
    wait_until(Duration::from_secs(10), "publishes are taken again", || {
        let ack = feed.publish("live", "t:n", "1000");
        if ack["success"] == true {
            seq = ack_seq(&ack);
            true
        } else {
            false
        }
    });
    assert_eq!(seq, 1, "Redis lost the room: a new epoch at seq 1");
    acked.push((1000, seq));
    // Every acknowledged message reached the member, in order.
    while let Some(text) = member.recv_skip_presence_or_none() {
        received.push(u64_at(&parse_json(&text), &["data"]));
    }
    let expected: Vec<u64> = acked.iter().map(|(n, _)| *n).collect();
    assert_eq!(received, expected);
    let metrics = http_get(b.addr(), "/metrics").body;
    assert!(metrics.contains("\nroomcast_redis_up 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nroomcast_redis_reconnects_total 1\n"),
        "{metrics}"
    );
    drop(redis);
}

#[test]
fn redis_killed_and_restarted_mid_stream_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("roomcast-aof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let redis = RedisServer::start_persistent(port, &dir);
    // History long enough to cover the outage: one node may be back and
    // publishing for a while before the other's backoff lets it in.
    let keep_all = ["--history", "10000"];
    let (a, b) = (node(&[&redis], &keep_all), node(&[&redis], &keep_all));
    let mut member = Client::user(a.addr(), "member");
    member.join("stream");
    let addr = b.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut feed = publisher(addr, "feed");
            let (mut acked, mut refused) = (Vec::new(), 0);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let ack = feed.publish("stream", "t:n", &n.to_string());
                if ack["success"] == true {
                    acked.push(n);
                } else {
                    assert_eq!(ack_error(&ack), "UNAVAILABLE", "{ack:?}");
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            (acked, refused)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    redis.stop();
    std::thread::sleep(Duration::from_millis(300));
    let redis = RedisServer::start_persistent(port, &dir);
    wait_until(Duration::from_secs(15), "both nodes reconnect", || {
        http_get(a.addr(), "/healthz").status == 200 && http_get(b.addr(), "/healthz").status == 200
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused) = publishing.join().unwrap();
    assert!(refused > 0, "some publishes met Redis away");
    let mut received = Vec::new();
    let mut seqs = Vec::new();
    while let Some(text) = member.recv_skip_presence_or_none() {
        let event = parse_json(&text);
        received.push(u64_at(&event, &["data"]));
        seqs.push(u64_at(&event, &["seq"]));
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "one epoch, no gap, no duplicate: {seqs:?}"
    );
    let missing: Vec<&u64> = acked.iter().filter(|n| !received.contains(n)).collect();
    assert!(missing.is_empty(), "acked but never delivered: {missing:?}");
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_member_gets_what_it_missed_while_its_node_was_cut_off() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.addr);
    // Node a reaches Redis through the proxy, node b directly.
    let a = Server::start(&["--redis", &proxy.url(), "--history", "100"]);
    let b = node(&[&redis], &[]);
    wait_until(Duration::from_secs(10), "node a reaches Redis", || {
        http_get(a.addr(), "/healthz").status == 200
    });
    let mut member = Client::user(a.addr(), "member");
    member.join("gap");
    let mut feed = publisher(b.addr(), "feed");
    assert_eq!(feed.publish_ok("gap", "t:n", "1"), 1);
    assert_eq!(seq_of(&member.recv_skip_presence()), 1);

    proxy.cut();
    wait_until(Duration::from_secs(10), "node a sees Redis down", || {
        http_get(a.addr(), "/healthz").status == 503
    });
    for i in 2..=6 {
        assert_eq!(feed.publish_ok("gap", "t:n", &i.to_string()), i);
    }
    member.assert_quiet(Duration::from_millis(200));
    proxy.restore();
    // What it missed comes first, in order, then live events again.
    let missed: Vec<u64> = read_events(&mut member, 5)
        .iter()
        .map(|t| seq_of(t))
        .collect();
    assert_eq!(missed, [2, 3, 4, 5, 6]);
    assert_eq!(feed.publish_ok("gap", "t:n", "7"), 7);
    assert_eq!(seq_of(&member.recv_skip_presence()), 7);
    assert!(
        member.recv_skip_presence_or_none().is_none(),
        "no duplicate"
    );
}

#[test]
fn rooms_spread_over_two_redis_servers_by_name() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let (a, b) = (node(&[&r1, &r2], &[]), node(&[&r1, &r2], &[]));
    let rooms: Vec<String> = (0..12).map(|i| format!("room{i}")).collect();
    let mut member = Client::user(a.addr(), "member");
    for room in &rooms {
        member.join(room);
    }
    let mut feed = publisher(b.addr(), "feed");
    for room in &rooms {
        assert_eq!(feed.publish_ok(room, "t:n", "1"), 1);
    }
    let mut got: Vec<String> = read_events(&mut member, rooms.len())
        .iter()
        .map(|t| str_at(&parse_json(t), &["room"]).to_owned())
        .collect();
    got.sort();
    let mut expected = rooms.clone();
    expected.sort();
    assert_eq!(got, expected);
    for redis in [&r1, &r2] {
        let keys = match redis.connect().call(&["DBSIZE"]) {
            Reply::Integer(n) => n,
            other => panic!("{other:?}"),
        };
        assert!(keys >= 3, "both servers hold rooms, this one {keys} keys");
    }
}

#[test]
fn the_emitter_publishes_into_a_room_without_a_node() {
    let redis = RedisServer::start();
    let a = node(&[&redis], &[]);
    let mut member = Client::user(a.addr(), "member");
    member.join("prices:eth");
    let tag = "roomcast:{prices:eth}";
    let reply = redis.connect().call(&[
        "FCALL",
        "roomcast_emit",
        "4",
        &format!("{tag}:seq"),
        &format!("{tag}:epoch"),
        &format!("{tag}:log"),
        &format!("{tag}:members"),
        "prices:eth",
        "price:tick",
        r#"{"p":3120.5}"#,
        "backend",
        "100",
        "300000",
        tag,
    ]);
    assert!(matches!(reply, Reply::Array(_)), "{reply:?}");
    let text = member.recv_skip_presence();
    common::rooms::assert_room_event(
        &text,
        "price:tick",
        "prices:eth",
        r#"{"p":3120.5}"#,
        "backend",
        1,
    );
}

#[test]
fn a_node_killed_leaves_the_others_serving() {
    let redis = RedisServer::start();
    let (a, mut b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut member = Client::user(a.addr(), "member");
    member.join("lobby");
    let mut doomed = publisher(b.addr(), "doomed");
    doomed.join("lobby");
    assert_eq!(doomed.publish_ok("lobby", "t:n", "1"), 1);
    assert_eq!(seq_of(&member.recv_skip_presence()), 1);
    b.signal(libc::SIGKILL);
    b.wait_exit(Duration::from_secs(5));
    let mut feed = publisher(a.addr(), "feed");
    assert_eq!(feed.publish_ok("lobby", "t:n", "2"), 2);
    assert_eq!(seq_of(&member.recv_skip_presence()), 2);
    let _ = q("");
}

/// The PIDs of `parent`'s children, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name, which ends with the last ')'.
        let after = &stat[stat.rfind(')').unwrap_or(0) + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.first() != Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str()) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
}

#[test]
fn processes_share_one_port_a_dead_one_is_restarted_and_all_stop_together() {
    let redis = RedisServer::start();
    let bind = format!("127.0.0.1:{}", free_port());
    let mut cmd = Server::command();
    cmd.args(["serve", "--bind", &bind, "--jwt-secret", common::SECRET]);
    cmd.args(["--redis", &redis.url(), "--processes", "2", "--shards", "1"]);
    cmd.args([
        "--node-id",
        "box",
        "--log-level",
        "warn",
        "--drain-timeout",
        "1s",
    ]);
    let mut supervisor = Server::spawn(cmd);
    let addr = supervisor.addr();
    wait_until(Duration::from_secs(10), "two processes serve", || {
        children_of(supervisor.pid()).len() == 2 && http_get(addr, "/healthz").status == 200
    });
    // Both answer on the one port: the kernel spreads connections.
    let mut nodes = std::collections::BTreeSet::new();
    wait_until(Duration::from_secs(10), "both processes answer", || {
        let stats = parse_json(&http_get(addr, "/stats").body);
        nodes.insert(str_at(&stats, &["config", "node_id"]).to_owned());
        nodes.len() == 2
    });
    assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ["box-0", "box-1"]);
    // One cluster: every member hears a publish, whichever process it is on.
    let mut members: Vec<Client> = (0..6)
        .map(|i| {
            let mut m = Client::user(addr, &format!("m{i}"));
            m.join("lobby");
            m
        })
        .collect();
    let mut feed = publisher(addr, "feed");
    let seq = feed.publish_ok("lobby", "t:n", "1");
    for member in &mut members {
        assert_eq!(seq_of(&member.recv_skip_presence()), seq);
    }

    let before = children_of(supervisor.pid());
    // A child of the supervisor this test started, not yet reaped.
    roomcast::sys::signal(before[0], libc::SIGKILL).expect("kill");
    wait_until(
        Duration::from_secs(10),
        "the dead process is replaced",
        || {
            let now = children_of(supervisor.pid());
            now.len() == 2 && !now.contains(&before[0])
        },
    );

    supervisor.terminate();
    let status = supervisor.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let left: Vec<u32> = before
        .iter()
        .copied()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(left.is_empty(), "children left running: {left:?}");
}

#[test]
fn processes_without_redis_or_on_port_0_are_refused() {
    for args in [
        &["--processes", "2", "--bind", "127.0.0.1:18080"][..],
        &[
            "--processes",
            "2",
            "--redis",
            "redis://127.0.0.1:1",
            "--bind",
            "127.0.0.1:0",
        ],
    ] {
        let out = Server::command()
            .args(["serve", "--check-config"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--processes: needs"), "{stderr}");
    }
}

/// The next presence event (other messages are skipped).
fn next_presence(client: &mut Client) -> simd_json::OwnedValue {
    loop {
        let text = client.recv();
        if text.starts_with(r#"{"event":"presence:"#) {
            return parse_json(&text);
        }
    }
}

fn presence_users(client: &mut Client, room: &str) -> (u64, Vec<(String, u64)>) {
    let ack = client.request("presence:get", &format!(r#"{{"room":{}}}"#, q(room)), "");
    let data = ok_data(&ack);
    let mut users: Vec<(String, u64)> = array_at(data, &["users"])
        .iter()
        .map(|u| {
            (
                str_at(u, &["userId"]).to_owned(),
                u64_at(u, &["connections"]),
            )
        })
        .collect();
    users.sort();
    (u64_at(data, &["count"]), users)
}

#[test]
fn presence_counts_users_and_connections_on_every_node_and_announces_once() {
    let redis = RedisServer::start();
    let (a, b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut alice = Client::connect(a.addr(), &Claims::new("alice").name("Alice").token());
    assert_eq!(u64_at(&alice.join("lobby"), &["members"]), 1);
    let mut bob = Client::connect(b.addr(), &Claims::new("bob").name("Bob").token());
    assert_eq!(u64_at(&bob.join("lobby"), &["members"]), 2);
    let join = next_presence(&mut alice);
    assert_eq!(str_at(&join, &["event"]), "presence:join");
    assert_eq!(str_at(&join, &["data", "userId"]), "bob");
    assert_eq!(str_at(&join, &["data", "name"]), "Bob");
    // Bob's second tab, on the other node: counted, not announced again.
    let mut bob2 = Client::connect(a.addr(), &Claims::new("bob").name("Bob").token());
    assert_eq!(u64_at(&bob2.join("lobby"), &["members"]), 3);
    let expected = (2, vec![("alice".to_owned(), 1), ("bob".to_owned(), 2)]);
    assert_eq!(presence_users(&mut alice, "lobby"), expected);
    assert_eq!(presence_users(&mut bob, "lobby"), expected);
    alice.assert_quiet(Duration::from_millis(200));
    // The first tab leaves: no leave yet; the last one: one leave, everywhere.
    bob.leave("lobby");
    alice.assert_quiet(Duration::from_millis(200));
    drop(bob2);
    let leave = next_presence(&mut alice);
    assert_eq!(str_at(&leave, &["event"]), "presence:leave");
    assert_eq!(str_at(&leave, &["data", "userId"]), "bob");
    assert_eq!(
        presence_users(&mut alice, "lobby"),
        (1, vec![("alice".to_owned(), 1)])
    );
    let _ = json_str(&leave, &["room"]);
}

#[test]
fn a_dead_nodes_connections_leave_its_rooms_within_30_seconds() {
    let redis = RedisServer::start();
    let (a, mut b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut alice = Client::user(a.addr(), "alice");
    alice.join("lobby");
    let mut bob = Client::user(b.addr(), "bob");
    bob.join("lobby");
    assert_eq!(
        str_at(&next_presence(&mut alice), &["data", "userId"]),
        "bob"
    );
    b.signal(libc::SIGKILL);
    b.wait_exit(Duration::from_secs(5));
    let killed = std::time::Instant::now();
    let leave = loop {
        match alice.try_recv(Duration::from_secs(35)) {
            Some(text) if text.starts_with(r#"{"event":"presence:leave""#) => {
                break parse_json(&text);
            }
            Some(_) => continue,
            None => panic!("no presence:leave within 35 s of the node's death"),
        }
    };
    assert_eq!(str_at(&leave, &["data", "userId"]), "bob");
    assert!(
        killed.elapsed() <= Duration::from_secs(30),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(
        presence_users(&mut alice, "lobby"),
        (1, vec![("alice".to_owned(), 1)])
    );
}

#[test]
fn presence_is_put_back_after_redis_lost_it() {
    let port = free_port();
    let redis = RedisServer::start_on(port);
    let (a, b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut alice = Client::user(a.addr(), "alice");
    alice.join("lobby");
    let mut bob = Client::user(b.addr(), "bob");
    bob.join("lobby");
    redis.stop();
    let _redis = RedisServer::start_on(port);
    wait_until(Duration::from_secs(15), "both nodes are back", || {
        http_get(a.addr(), "/healthz").status == 200 && http_get(b.addr(), "/healthz").status == 200
    });
    let expected = (2, vec![("alice".to_owned(), 1), ("bob".to_owned(), 1)]);
    wait_until(Duration::from_secs(5), "presence synced again", || {
        presence_users(&mut alice, "lobby") == expected
    });
}

#[test]
fn user_send_and_broadcast_reach_connections_on_every_node() {
    let redis = RedisServer::start();
    let (a, b) = (node(&[&redis], &[]), node(&[&redis], &[]));
    let mut alice = Client::user(a.addr(), "alice");
    let mut bob1 = Client::user(b.addr(), "bob");
    let mut bob2 = Client::user(a.addr(), "bob");
    let mut carol = Client::user(b.addr(), "carol");
    // The online counts reach Redis asynchronously after the upgrade.
    let send = |c: &mut Client, to: &str, data: &str| {
        c.request(
            "user:send",
            &format!(r#"{{"to":{},"data":{data}}}"#, q(to)),
            "",
        )
    };
    let mut delivered = 0;
    wait_until(
        Duration::from_secs(5),
        "bob's connections are counted",
        || {
            delivered = u64_at(ok_data(&send(&mut alice, "bob", "0")), &["delivered"]);
            delivered == 2
        },
    );
    while bob1.try_recv(Duration::from_millis(100)).is_some() {}
    while bob2.try_recv(Duration::from_millis(100)).is_some() {}
    let ack = send(&mut alice, "bob", r#"{"text":"hi"}"#);
    assert_eq!(u64_at(ok_data(&ack), &["delivered"]), 2);
    for bob in [&mut bob1, &mut bob2] {
        let v = parse_json(&bob.recv());
        assert_eq!(str_at(&v, &["event"]), "user:message");
        assert_eq!(str_at(&v, &["from"]), "alice");
    }
    carol.assert_quiet(Duration::from_millis(200));
    // To oneself: the other tab, on the other node, not the sender.
    let ack = send(&mut bob1, "bob", "1");
    assert_eq!(u64_at(ok_data(&ack), &["delivered"]), 1);
    assert_eq!(str_at(&parse_json(&bob2.recv()), &["from"]), "bob");
    bob1.assert_quiet(Duration::from_millis(200));

    let mut admin = Client::connect(b.addr(), &Claims::new("root").admin(true).token());
    let mut count = 0;
    wait_until(Duration::from_secs(5), "the admin is counted", || {
        let ack = admin.request(
            "system:broadcast",
            r#"{"event":"system:notice","data":0}"#,
            "",
        );
        count = u64_at(ok_data(&ack), &["delivered"]);
        count == 4
    });
    for c in [&mut alice, &mut bob1, &mut bob2, &mut carol] {
        let mut last = String::new();
        while let Some(text) = c.try_recv(Duration::from_millis(200)) {
            last = text;
        }
        assert_eq!(
            str_at(&parse_json(&last), &["event"]),
            "system:notice",
            "{last}"
        );
    }
    admin.assert_quiet(Duration::from_millis(200));
    // A connection that closes is no longer counted.
    drop(bob2);
    wait_until(
        Duration::from_secs(5),
        "bob's closed tab is no longer counted",
        || u64_at(ok_data(&send(&mut alice, "bob", "2")), &["delivered"]) == 1,
    );
}

#[test]
fn direct_messages_while_redis_is_away_are_unavailable() {
    let redis = RedisServer::start();
    let a = node(&[&redis], &[]);
    let mut alice = Client::user(a.addr(), "alice");
    redis.stop();
    wait_until(Duration::from_secs(10), "the node sees Redis down", || {
        http_get(a.addr(), "/healthz").status == 503
    });
    let ack = alice.request("user:send", r#"{"to":"bob","data":1}"#, "");
    assert_eq!(ack_error(&ack), "UNAVAILABLE");
    let ack = alice.request("presence:get", r#"{"room":"lobby"}"#, "");
    assert_eq!(ack_error(&ack), "UNAVAILABLE");
    alice.assert_open();
}

#[test]
fn processes_do_not_outlive_a_supervisor_killed_outright() {
    let redis = RedisServer::start();
    let bind = format!("127.0.0.1:{}", free_port());
    let mut cmd = Server::command();
    cmd.args(["serve", "--bind", &bind, "--jwt-secret", common::SECRET]);
    cmd.args(["--redis", &redis.url(), "--processes", "2", "--shards", "1"]);
    cmd.args(["--log-level", "warn", "--drain-timeout", "1s"]);
    let mut supervisor = Server::spawn(cmd);
    wait_until(Duration::from_secs(10), "two processes run", || {
        children_of(supervisor.pid()).len() == 2
    });
    let children = children_of(supervisor.pid());
    supervisor.signal(libc::SIGKILL);
    supervisor.wait_exit(Duration::from_secs(5));
    // Gone, or a zombie waiting for whoever adopted it to reap it.
    let exited = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    wait_until(Duration::from_secs(15), "the children exit too", || {
        children.iter().all(exited)
    });
}
