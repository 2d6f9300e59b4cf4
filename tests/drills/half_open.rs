//! Half-open peers: clients that upgrade and then go silent (no FIN, no
//! reads, no pongs), as when a phone drops off the network. The heartbeat
//! must drop each within `--ping-interval` + `--ping-timeout`, and give
//! back its file descriptor and its memory.

use std::time::{Duration, Instant};

use crate::common::rooms::{Claims, rss_bytes};
use crate::common::{RawWs, Server, connect_with_small_rcvbuf, metric, wait_until};
use crate::harness::{Drill, assert_no_secrets, ms, pick};

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn half_open_peers_are_dropped_by_the_heartbeat_and_give_everything_back() {
    let peers = pick(500, 5_000);
    let (interval, timeout) = pick((1, 1), (5, 5));
    let drill = Drill::start(
        "half-open",
        &format!("{peers} clients join a room, then neither read nor answer pings nor close"),
        "each is dropped within ping interval + timeout; descriptors and memory come back",
    );
    let (interval_flag, timeout_flag) = (format!("{interval}s"), format!("{timeout}s"));
    let server = Server::start(&[
        "--ping-interval",
        &interval_flag,
        "--ping-timeout",
        &timeout_flag,
        "--log-level",
        "debug",
    ]);
    let (addr, pid) = (server.addr(), server.pid());
    let fds_before = open_fds(pid);
    let rss_before = rss_bytes(pid);
    let token = Claims::new("silent").token();
    let budget = Duration::from_secs(interval + timeout) + Duration::from_secs(3);
    // Twice: what the first round held must be reused by the second, not
    // added to (a leak would grow the server by the first round's share).
    let mut held = Vec::new();
    for round in 1..=2 {
        let started = Instant::now();
        let silent = go_silent(addr, &token, peers);
        let connected_in = started.elapsed();
        wait_until(Duration::from_secs(10), "every peer counted", || {
            metric(addr, "roomcast_connections") == peers as f64
        });
        held.push(rss_bytes(pid));
        let last_join = Instant::now();
        wait_until(
            budget + connected_in + Duration::from_secs(5),
            "every peer dropped",
            || metric(addr, "roomcast_ping_timeouts_total") == (round * peers) as f64,
        );
        let dropped_after = last_join.elapsed();
        wait_until(Duration::from_secs(5), "descriptors given back", || {
            open_fds(pid) <= fds_before
        });
        drill.figure(
            &format!("round {round}: peers connected in"),
            ms(connected_in),
        );
        drill.figure(
            &format!("round {round}: all dropped, counted from the last join"),
            ms(dropped_after),
        );
        assert!(
            dropped_after <= budget + connected_in,
            "dropped after {dropped_after:?}"
        );
        assert_eq!(metric(addr, "roomcast_connections"), 0.0);
        drop(silent);
    }
    // The gauge is sampled at each sweep: the sweep that dropped the last
    // peers may have summed their queues just before.
    wait_until(Duration::from_secs(5), "queued output given back", || {
        metric(addr, "roomcast_write_buffer_bytes") == 0.0
    });
    drill.figure(
        "server RSS before, holding round 1, holding round 2 (KiB)",
        format!(
            "{}, {}, {}",
            rss_before / 1024,
            held[0] / 1024,
            held[1] / 1024
        ),
    );
    let first_share = held[0].saturating_sub(rss_before);
    assert!(
        held[1] <= held[0] + first_share / 2 + 2 * 1024 * 1024,
        "round 2 held {} where round 1 held {}: memory was not given back",
        held[1],
        held[0]
    );
    assert_no_secrets(&server, &[token], &[]);
}

/// `peers` clients that join a room and then do nothing at all.
fn go_silent(addr: std::net::SocketAddr, token: &str, peers: usize) -> Vec<RawWs> {
    let join = br#"{"event":"room:join","data":{"room":"lobby"}}"#;
    (0..peers)
        .map(|_| {
            let mut ws = RawWs::upgrade(connect_with_small_rcvbuf(addr, 4096), "/ws", token);
            ws.send_frame(true, crate::common::opcode::TEXT, join);
            ws
        })
        .collect()
}
