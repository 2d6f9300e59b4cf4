//! Slowloris: sockets that send a request head one byte at a time, never
//! finishing it. Each must be cut by `--handshake-timeout`, and a normal
//! client must be served throughout.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Server, metric, token};
use crate::harness::{Drill, assert_no_secrets, keep_echoing, ms, pick};

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn slowloris_sockets_are_cut_by_the_handshake_timeout_and_others_are_served() {
    let sockets = pick(500, 2_000);
    let timeout = pick(Duration::from_secs(2), Duration::from_secs(10));
    let drip = pick(Duration::from_millis(400), Duration::from_secs(3));
    let drill = Drill::start(
        "slowloris",
        &format!("{sockets} sockets send a request head one byte every {drip:?}"),
        "each is cut within --handshake-timeout plus a sweep; a normal client is served all along",
    );
    let timeout_flag = format!("{}ms", timeout.as_millis());
    let server = Server::start(&[
        "--echo",
        "--handshake-timeout",
        &timeout_flag,
        "--log-level",
        "debug",
    ]);
    let addr = server.addr();

    let normal = token("normal");
    let stop = Arc::new(AtomicBool::new(false));
    let served = keep_echoing(
        addr,
        normal.clone(),
        Duration::from_millis(20),
        stop.clone(),
    );

    let head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    let started = Instant::now();
    let mut slow: Vec<(TcpStream, Option<Duration>)> = (0..sockets)
        .map(|_| {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_nonblocking(true).unwrap();
            (stream, None)
        })
        .collect();
    let mut sent = 0;
    while slow.iter().any(|(_, cut)| cut.is_none()) {
        assert!(
            started.elapsed() < timeout * 4,
            "slow sockets outlived the timeout"
        );
        let byte = [head[sent % head.len()]];
        sent += 1;
        for (stream, cut) in slow.iter_mut().filter(|(_, cut)| cut.is_none()) {
            // A write fails once the server has closed the socket.
            if stream.write(&byte).is_err() || is_closed(stream) {
                *cut = Some(started.elapsed());
            }
        }
        thread::sleep(drip);
    }
    stop.store(true, Ordering::Relaxed);
    let (round_trips, slowest) = served.join().unwrap();
    let cuts: Vec<Duration> = slow.iter().filter_map(|(_, cut)| *cut).collect();
    let (first, last) = (cuts.iter().min().unwrap(), cuts.iter().max().unwrap());
    drill.figure("sockets cut", format!("{} of {sockets}", cuts.len()));
    drill.figure(
        "first and last cut after",
        format!("{} and {}", ms(*first), ms(*last)),
    );
    drill.figure("normal client's round trips meanwhile", round_trips);
    drill.figure("its slowest round trip", ms(slowest));
    assert!(
        *first >= timeout - Duration::from_millis(200),
        "cut before the timeout"
    );
    assert!(
        *last <= timeout + drip + Duration::from_secs(2),
        "cut late: {last:?}"
    );
    assert!(round_trips > 0);
    assert_eq!(metric(addr, "roomcast_connections_opened_total"), 1.0);
    assert_no_secrets(&server, &[normal], &[]);
}

/// Whether the peer has closed (a read sees EOF or a reset).
fn is_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}
