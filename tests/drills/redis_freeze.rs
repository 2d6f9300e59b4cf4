//! Redis frozen under load (SIGSTOP): it keeps every socket open and
//! answers nothing. Two nodes, members on both, a publisher with request
//! ids on each, and at the freeze a burst of 1 KB publishes from one
//! unlimited token. Within `--redis-timeout` (2 s, the default) and a ping
//! the nodes say so (`/healthz` 503), what waits for Redis is bounded
//! (their memory stays put while the publishers keep sending), and once
//! Redis runs again every acknowledged message reaches every member, once
//! and in `seq` order.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use simd_json::prelude::*;
use tungstenite::Message;

use crate::common::redis::RedisServer;
use crate::common::rooms::{Claims, ack_seq, rss_bytes};
use crate::common::{Server, http_get, json_at, metric, parse_json, wait_until, ws_connect};
use crate::harness::{Drill, assert_no_secrets, ms, pick};
use crate::load::{node, subscribers};
use crate::tracker;

/// `--redis-timeout`'s default, which the nodes run with.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The most a node's memory may grow while Redis is frozen: the bridge
/// holds at most 16 MiB of unsent commands and 16,384 requests per server,
/// and the rest is the allocator's slack.
const RSS_GROWTH_BOUND: u64 = 40 << 20;

/// What one publisher got back.
#[derive(Debug, Default)]
struct Published {
    sent: u64,
    acked: BTreeSet<u64>,
    refused: u64,
    /// Refusals that came before `TIMEOUT` had passed since the first
    /// send: answered at once, past the bound.
    refused_early: u64,
}

/// How a publisher sends.
#[derive(Clone, Copy)]
enum Plan {
    /// One message every `Duration`, until told to stop.
    Paced(Duration),
    /// This many as fast as they go, reading answers in between, then
    /// every answer.
    Burst(u64),
}

/// A `/ws` publisher into `tracker::ROOM` with an id per message: 1 KB
/// messages, every answer read and counted.
fn publisher(
    addr: SocketAddr,
    name: &str,
    plan: Plan,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Published> {
    let token = Claims::new(name).publish(&["*"]).rate(0).token();
    thread::spawn(move || {
        let mut ws = ws_connect(addr, "/ws", &token);
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let pad = "x".repeat(1000);
        let mut out = Published::default();
        let started = Instant::now();
        let send = |ws: &mut crate::common::Ws, out: &mut Published| {
            out.sent += 1;
            let n = out.sent;
            let text = format!(
                r#"{{"event":"drill:tick","room":"{}","id":"{n}","data":{{"n":{n},"pad":"{pad}"}}}}"#,
                tracker::ROOM
            );
            ws.send(Message::text(text))
                .expect("the node takes the publish");
        };
        match plan {
            Plan::Paced(pause) => {
                while !stop.load(Ordering::Relaxed) {
                    send(&mut ws, &mut out);
                    read_answers(&mut ws, &mut out, started);
                    thread::sleep(pause);
                }
            }
            Plan::Burst(count) => {
                while out.sent < count {
                    for _ in 0..500.min(count - out.sent) {
                        send(&mut ws, &mut out);
                    }
                    read_answers(&mut ws, &mut out, started);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.acked.len() as u64 + out.refused < out.sent && Instant::now() < deadline {
            read_answers(&mut ws, &mut out, started);
        }
        assert_eq!(
            out.acked.len() as u64 + out.refused,
            out.sent,
            "every publish answered"
        );
        out
    })
}

/// Reads the answers that are in.
fn read_answers(ws: &mut crate::common::Ws, out: &mut Published, started: Instant) {
    loop {
        let text = match ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(_) => continue,
            Err(e) if tracker::nothing_yet(&e) => return,
            Err(e) => panic!("the publisher's connection failed: {e}"),
        };
        let value = parse_json(&text);
        if json_at(&value, &["event"]).and_then(|v| v.as_str()) != Some("ack") {
            continue;
        }
        match json_at(&value, &["data", "seq"]).and_then(|v| v.as_u64()) {
            Some(seq) => {
                out.acked.insert(seq);
            }
            None => {
                let code = json_at(&value, &["error", "code"]).and_then(|v| v.as_str());
                assert_eq!(code, Some("UNAVAILABLE"), "{text}");
                out.refused += 1;
                if started.elapsed() < TIMEOUT {
                    out.refused_early += 1;
                }
            }
        }
    }
}

/// Waits for `publishers`, adding up what they got.
fn gather(publishers: Vec<JoinHandle<Published>>) -> Published {
    let mut all = Published::default();
    for handle in publishers {
        let one = handle.join().unwrap();
        all.sent += one.sent;
        all.refused += one.refused;
        all.refused_early += one.refused_early;
        assert!(all.acked.is_disjoint(&one.acked), "a seq acked twice");
        all.acked.extend(one.acked);
    }
    all
}

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn redis_frozen_under_load_is_noticed_in_time_bounds_what_waits_and_loses_nothing_acknowledged() {
    let count = pick(10, 100);
    let burst = pick(40_000, 100_000);
    let frozen_for = pick(Duration::from_secs(4), Duration::from_secs(15));
    let pause = pick(Duration::from_millis(4), Duration::from_millis(2));
    let drill = Drill::start(
        "redis-freeze",
        &format!(
            "two nodes on one Redis, {count} members spread over them, a publisher on each; \
             Redis SIGSTOPped for {} s, with a burst of {burst} 1 KB publishes at the freeze",
            frozen_for.as_secs()
        ),
        "both nodes degraded within the timeout and a ping; memory bounded; every \
         acknowledged message reaches every member once, in order, after SIGCONT",
    );
    let redis = RedisServer::start();
    let nodes = [node(&redis.url(), 0, &[]), node(&redis.url(), 0, &[])];
    let addrs: Vec<SocketAddr> = nodes.iter().map(Server::addr).collect();
    let (stop_members, target) = (Arc::new(AtomicBool::new(false)), tracker::target());
    let members = subscribers(&addrs, count, &stop_members, &target);
    thread::sleep(Duration::from_millis(500));
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let mut publishers: Vec<JoinHandle<Published>> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let name = format!("feed-{i}");
            publisher(*a, &name, Plan::Paced(pause), stop_publishing.clone())
        })
        .collect();
    thread::sleep(Duration::from_secs(1));
    let rss_before: Vec<u64> = nodes.iter().map(|n| rss_bytes(n.pid())).collect();

    let frozen = redis.freeze();
    let froze = Instant::now();
    let bursting = publisher(addrs[0], "burst", Plan::Burst(burst), Arc::default());
    let mut degraded: [Option<Duration>; 2] = [None, None];
    let mut rss_peak = rss_before.clone();
    while froze.elapsed() < frozen_for {
        for (i, node) in nodes.iter().enumerate() {
            if degraded[i].is_none() && http_get(node.addr(), "/healthz").status == 503 {
                degraded[i] = Some(froze.elapsed());
            }
            rss_peak[i] = rss_peak[i].max(rss_bytes(node.pid()));
        }
        thread::sleep(Duration::from_millis(50));
    }
    frozen.thaw();
    let thawed = Instant::now();
    for node in &nodes {
        wait_until(Duration::from_secs(20), "the node is back on Redis", || {
            http_get(node.addr(), "/healthz").status == 200
        });
    }
    let back_in = thawed.elapsed();
    // Publishing works again; what is sequenced from now on comes in order.
    let mut late = crate::common::rooms::publisher(addrs[1], "late");
    let mut late_seq = None;
    wait_until(Duration::from_secs(10), "a publish acknowledged", || {
        let ack = late.publish(tracker::ROOM, "drill:late", "1");
        let ok = ack["success"] == true;
        if ok {
            late_seq = Some(ack_seq(&ack));
        }
        ok
    });
    let burst = bursting.join().unwrap();
    thread::sleep(Duration::from_secs(2));
    stop_publishing.store(true, Ordering::Relaxed);
    publishers.push(thread::spawn(move || burst));
    let mut published = gather(publishers);
    published.acked.extend(late_seq);
    tracker::set_target(&target, &published.acked);
    let waiting = Instant::now();
    stop_members.store(true, Ordering::Relaxed);
    let seen = tracker::join_all(members);
    let rss_after: Vec<u64> = nodes.iter().map(|n| rss_bytes(n.pid())).collect();

    for (i, at) in degraded.iter().enumerate() {
        let at = at.unwrap_or_else(|| panic!("node {i} never said Redis was down"));
        drill.figure(&format!("node {i} degraded (/healthz 503) after"), ms(at));
        assert!(
            at <= TIMEOUT + Duration::from_millis(1500),
            "node {i} degraded after {at:?}"
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        let grew = rss_peak[i].saturating_sub(rss_before[i]);
        drill.figure(
            &format!("node {i} RSS before, peak while frozen, at the end"),
            format!(
                "{} MiB, {} MiB, {} MiB",
                rss_before[i] >> 20,
                rss_peak[i] >> 20,
                rss_after[i] >> 20
            ),
        );
        assert!(grew < RSS_GROWTH_BOUND, "node {i} grew by {grew} bytes");
        let timeouts = metric(node.addr(), "roomcast_redis_timeouts_total");
        drill.figure(&format!("node {i} redis timeouts"), timeouts);
        assert!(timeouts >= 1.0);
    }
    drill.figure(
        "publishes sent; acknowledged; refused (of which before the timeout)",
        format!(
            "{}; {}; {} ({})",
            published.sent,
            published.acked.len(),
            published.refused,
            published.refused_early
        ),
    );
    drill.figure("both nodes healthy again after SIGCONT in", ms(back_in));
    drill.figure(
        "members caught up after the last publish in",
        ms(waiting.elapsed()),
    );
    let reconnects: u32 = seen.iter().map(|s| s.reconnects).sum();
    drill.figure("member reconnects", reconnects);
    for (i, member) in seen.iter().enumerate() {
        let from = member.seqs.first().copied().unwrap_or(u64::MAX);
        let (missed, in_order) = tracker::check(member, &published.acked, from);
        assert!(
            missed.is_empty(),
            "member {i} missed acknowledged {missed:?}"
        );
        assert!(in_order, "member {i} saw a gap or a repeat");
        assert_eq!(member.resets, 0, "member {i} had to reset");
    }
    for node in &nodes {
        assert_no_secrets(node, &[], &[]);
    }
}
