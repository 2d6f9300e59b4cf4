//! Slow consumers at scale: stalled members (never reading) in a big room
//! while tens of megabytes are published into it. Every member that reads
//! must get every message in order, and the server's memory must stay
//! within the bounds it was given.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::rooms::{Claims, rss_bytes};
use crate::common::{
    RawWs, SECRET, Server, connect_with_small_rcvbuf, json_at, metric, opcode, parse_json,
    wait_until,
};
use crate::harness::{Drill, assert_no_secrets, pick};
use simd_json::prelude::*;

const WRITE_BOUND: u64 = 512 * 1024;

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn stalled_members_cost_their_bound_and_fast_members_lose_nothing() {
    // Messages of about 60 KB: 10 MB published (quick), 20 MB (full: 18 GB
    // of deliveries), or ROOMCAST_DRILL_PUBLISH_MB: well over what a
    // stalled member can absorb before its bound judges it (its 512 KiB
    // queue and a kernel send buffer of twice that, doubled by Linux:
    // about 2.5 MB). The rate is one the readers (the load generator's
    // clients, on the same 2 cores as the server) can take: faster, they
    // would fall behind for want of CPU and be cut as the slow consumers
    // they then are.
    let (members, stalled, default_mb, rate) =
        pick((200, 20, 10u64, "10"), (1_000, 100, 20u64, "4"));
    let size = 60_000;
    let megabytes = std::env::var("ROOMCAST_DRILL_PUBLISH_MB")
        .ok()
        .and_then(|mb| mb.parse().ok())
        .unwrap_or(default_mb);
    let messages = megabytes * 1_000_000 / size;
    let drill = Drill::start(
        "slow-consumers",
        &format!(
            "{stalled} of {members} members of one room never read while {megabytes} MB are published into it"
        ),
        "every reading member gets every message in order; RSS stays within the write bounds",
    );
    let server = Server::start(&[
        "--shards",
        "2",
        "--max-write-buffer",
        "512KiB",
        "--max-message-size",
        "128KiB",
    ]);
    let (addr, pid) = (server.addr(), server.pid());
    let rss_before = rss_bytes(pid);
    // The load generator's room 0 is `bench-0`; stalled members join it too.
    let token = Claims::new("stalled").token();
    let join = br#"{"event":"room:join","data":{"room":"bench-0"},"id":1}"#;
    let stalled_clients: Vec<RawWs> = (0..stalled)
        .map(|_| {
            let mut ws = RawWs::upgrade(connect_with_small_rcvbuf(addr, 4096), "/ws", &token);
            ws.read_message();
            ws.send_frame(true, opcode::TEXT, join);
            ws.read_message();
            ws
        })
        .collect();

    let peak = Arc::new(AtomicU64::new(rss_before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let readers = (members - stalled).to_string();
    let count = messages.to_string();
    let size_flag = size.to_string();
    let output = Server::command()
        .args([
            "bench",
            "fanout",
            "--rooms",
            "1",
            "--publishers",
            "1",
            "--rate",
            rate,
        ])
        .args([
            "-c", &readers, "-s", &size_flag, "--count", &count, "-d", "1200s",
        ])
        .args([
            "--json",
            "--jwt-secret",
            SECRET,
            "--addr",
            &addr.to_string(),
        ])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result = parse_json(stdout.trim());
    let number = |key: &str| {
        json_at(&result, &[key])
            .and_then(|v| v.as_u64())
            .unwrap_or(u64::MAX)
    };
    let peak = peak.load(Ordering::Relaxed);
    drill.figure("published", number("sent"));
    drill.figure(
        "delivered to readers",
        format!("{} of {}", number("delivered"), number("expected")),
    );
    drill.figure(
        "lost, out of order",
        format!("{}, {}", number("lost"), number("out_of_order")),
    );
    drill.figure(
        "server RSS before and at peak (MiB)",
        format!("{}, {}", rss_before >> 20, peak >> 20),
    );
    assert_eq!(number("sent"), messages);
    assert_eq!(number("delivered"), number("expected"));
    assert_eq!(number("lost"), 0);
    assert_eq!(number("out_of_order"), 0);
    assert_eq!(number("errors"), 0);
    // A cut member is counted once its socket is dropped: after the close
    // frame it cannot read, the linger and `--drain-timeout` (10 s).
    wait_until(Duration::from_secs(30), "every stalled member cut", || {
        metric(addr, "roomcast_slow_consumer_closes_total") == stalled as f64
    });
    drill.figure("stalled members closed 4008", stalled);

    // A stalled member holds at most its write bound (twice with replies)
    // before it is closed; readers keep up, so their queues stay short; 64
    // MiB covers them, the room's history and the allocator's slack.
    let bound = rss_before + stalled as u64 * 2 * WRITE_BOUND + (64 << 20);
    drill.figure("RSS bound checked (MiB)", bound >> 20);
    assert!(peak <= bound, "peak RSS {peak} over {bound}");
    drop(stalled_clients);
    assert_no_secrets(&server, &[token], &[]);
}
