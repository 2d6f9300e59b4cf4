//! A reconnect storm: many clients connected, the server restarted
//! (SIGTERM, then started again on the same port), every client
//! reconnecting at once.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::http::{UpgradeRequest, read_head};
use crate::common::redis::free_port;
use crate::common::rooms::{Claims, rss_bytes};
use crate::common::{SECRET, Server};
use crate::harness::{Drill, assert_no_secrets, ms, pick};

/// Client threads opening connections at once.
const THREADS: usize = 8;

/// Opens `count` WebSockets from `THREADS` threads as fast as they go;
/// the open sockets, and the status of every refusal.
fn storm(addr: SocketAddr, token: &str, count: usize) -> (Vec<TcpStream>, Vec<u16>) {
    let request = UpgradeRequest::new("/ws").bearer(token).to_bytes();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let request = request.clone();
            let share = count / THREADS + usize::from(t < count % THREADS);
            thread::spawn(move || {
                let (mut open, mut refused) = (Vec::new(), Vec::new());
                for _ in 0..share {
                    let mut stream = TcpStream::connect(addr).expect("connect");
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    stream.write_all(&request).unwrap();
                    let (response, _) = read_head(&mut stream);
                    if response.status == 101 {
                        open.push(stream);
                    } else {
                        refused.push(response.status);
                    }
                }
                (open, refused)
            })
        })
        .collect();
    let (mut open, mut refused) = (Vec::new(), Vec::new());
    for thread in threads {
        let (o, r) = thread.join().unwrap();
        open.extend(o);
        refused.extend(r);
    }
    (open, refused)
}

fn start_on(port: u16) -> Server {
    let mut command = Server::command();
    command.args(["serve", "--bind", &format!("127.0.0.1:{port}")]);
    command.args(["--jwt-secret", SECRET, "--drain-timeout", "2s"]);
    Server::spawn(command)
}

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn a_restart_under_many_clients_is_a_storm_every_client_survives() {
    let clients = pick(1_000, 10_000);
    let drill = Drill::start(
        "reconnect-storm",
        &format!("{clients} clients connected; the server is restarted and all reconnect at once"),
        "every client is back, none refused with a 5xx; RSS comes back to what it was",
    );
    let port = free_port();
    let token = Claims::new("storm").token();
    let mut server = start_on(port);
    let addr = server.addr();
    let (before, refused) = storm(addr, &token, clients);
    assert_eq!(refused, Vec::<u16>::new());
    let rss_before = rss_bytes(server.pid());

    let stopping = Instant::now();
    server.terminate();
    server.wait_exit(Duration::from_secs(30));
    let stopped_in = stopping.elapsed();
    assert_no_secrets_after_exit(&server, &token);
    drop(before);

    let server = start_on(port);
    let started = Instant::now();
    let (after, refused) = storm(addr, &token, clients);
    let storm_took = started.elapsed();
    let rss_after = rss_bytes(server.pid());
    drill.figure("stop with the drain", ms(stopped_in));
    drill.figure(
        "all reconnected in",
        format!(
            "{} ({:.0} handshakes/s)",
            ms(storm_took),
            clients as f64 / storm_took.as_secs_f64()
        ),
    );
    drill.figure("refused", format!("{refused:?}"));
    drill.figure(
        "server RSS with every client, before and after (MiB)",
        format!("{}, {}", rss_before >> 20, rss_after >> 20),
    );
    assert!(refused.iter().all(|status| *status < 500), "{refused:?}");
    assert_eq!(after.len(), clients);
    assert!(
        rss_after <= rss_before + rss_before / 5 + (8 << 20),
        "RSS {rss_after} after {rss_before}"
    );
    assert_no_secrets(&server, &[token], &[]);
}

/// The stopped server's output, checked like a running one's.
fn assert_no_secrets_after_exit(server: &Server, token: &str) {
    let said = format!("{}{}", server.stdout().join("\n"), server.stderr());
    assert!(!said.contains(SECRET) && !said.contains(token.rsplit('.').next().unwrap()));
}
