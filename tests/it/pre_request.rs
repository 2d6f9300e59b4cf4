//! Sockets that connect and never send a request are bounded (a share of
//! `--max-connections` per shard, the oldest evicted first, also when the
//! process runs out of file descriptors), so a real client is served at
//! once; `/metrics` counts them.

use crate::common;

use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{RawWs, SECRET, Server, metric, token, wait_until};

/// The server with an open-file limit of `limit` and two shards.
fn start_with_open_files(limit: usize) -> Server {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET])
        .args(["--shards", "2"]);
    Server::spawn(cmd)
}

#[test]
fn a_thousand_silent_sockets_do_not_keep_a_client_waiting() {
    // 600 files: --max-connections defaults to 472, so each of the two
    // shards keeps at most 472 / 4 / 2 = 59 sockets without a request.
    let server = start_with_open_files(600);
    let addr = server.addr();
    let silent: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    wait_until(Duration::from_secs(10), "silent sockets evicted", || {
        metric(addr, "roomcast_pre_request_evicted_total") >= 500.0
    });
    let started = Instant::now();
    let mut ws = RawWs::connect(addr, "/ws", &token("u1"));
    ws.read_message();
    // Without the bound the client waits for the 10 s request timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "upgrade took {:?}",
        started.elapsed()
    );
    let waiting = metric(addr, "roomcast_pre_request_connections");
    assert!(
        waiting <= 2.0 * 59.0 + 2.0,
        "{waiting} sockets without a request"
    );
    drop(silent);
}

#[test]
fn a_socket_that_sends_its_request_leaves_the_count() {
    let server = Server::start(&["--shards", "1"]);
    let addr = server.addr();
    let silent: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // The socket reading /metrics is counted too: it is answered while
    // its own head is being handled.
    wait_until(Duration::from_secs(5), "five silent sockets", || {
        metric(addr, "roomcast_pre_request_connections") == 6.0
    });
    let _ws = RawWs::connect(addr, "/ws", &token("u1"));
    thread::sleep(Duration::from_millis(100));
    assert_eq!(metric(addr, "roomcast_pre_request_connections"), 6.0);
    drop(silent);
    wait_until(Duration::from_secs(5), "silent sockets gone", || {
        metric(addr, "roomcast_pre_request_connections") == 1.0
    });
    assert_eq!(metric(addr, "roomcast_pre_request_evicted_total"), 0.0);
}
