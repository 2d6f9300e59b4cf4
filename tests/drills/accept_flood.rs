//! The accept path under a flood, in both accept modes: thousands of
//! upgrades arriving at once while an established client keeps talking.
//! Each mode accepts at most its budget a turn (hand-off mode hands over
//! no more than the shards adopt), so the established client keeps being
//! served and every newcomer gets in.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::http::{UpgradeRequest, read_head};
use crate::common::rooms::Claims;
use crate::common::{Server, token};
use crate::harness::{Drill, assert_no_secrets, keep_echoing, ms, pick};

const FLOOD_THREADS: usize = 8;

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn a_connection_flood_is_absorbed_in_both_accept_modes() {
    let newcomers = pick(2_000, 8_000);
    let drill = Drill::start(
        "accept-flood",
        &format!(
            "{newcomers} upgrades at once from {FLOOD_THREADS} threads, reuseport then handoff"
        ),
        "every newcomer gets its 101; an established client is served all along",
    );
    for mode in ["reuseport", "handoff"] {
        let server = Server::start(&["--echo", "--shards", "2", "--accept", mode]);
        let addr = server.addr();
        let echo_token = token("established");
        let stop = Arc::new(AtomicBool::new(false));
        let established = keep_echoing(addr, echo_token.clone(), Duration::ZERO, stop.clone());
        let flood_token = Claims::new("flood").token();
        let request = UpgradeRequest::new("/ws").bearer(&flood_token).to_bytes();
        let started = Instant::now();
        let flood: Vec<_> = (0..FLOOD_THREADS)
            .map(|_| {
                let request = request.clone();
                thread::spawn(move || {
                    // Every connection first, then every answer: all of them
                    // wait in the backlog at once.
                    let mut streams: Vec<TcpStream> = (0..newcomers / FLOOD_THREADS)
                        .map(|_| {
                            let mut stream = TcpStream::connect(addr).unwrap();
                            stream.write_all(&request).unwrap();
                            stream
                        })
                        .collect();
                    let mut opened = 0;
                    for stream in &mut streams {
                        stream
                            .set_read_timeout(Some(Duration::from_secs(30)))
                            .unwrap();
                        opened += usize::from(read_head(stream).0.status == 101);
                    }
                    (opened, streams)
                })
            })
            .collect();
        let mut opened = 0;
        let mut held = Vec::new();
        for thread in flood {
            let (n, streams) = thread.join().unwrap();
            opened += n;
            held.push(streams);
        }
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (round_trips, slowest) = established.join().unwrap();
        drill.figure(
            &format!("{mode}: newcomers in"),
            format!(
                "{opened} of {} in {}",
                newcomers / FLOOD_THREADS * FLOOD_THREADS,
                ms(took)
            ),
        );
        drill.figure(
            &format!("{mode}: established client's round trips, slowest"),
            format!("{round_trips}, {}", ms(slowest)),
        );
        assert_eq!(opened, newcomers / FLOOD_THREADS * FLOOD_THREADS);
        assert!(round_trips > 0);
        assert_no_secrets(&server, &[echo_token, flood_token], &[]);
    }
}
