//! Many connections at once: 1,000 clients echoing concurrently, driven by a
//! handful of threads with blocking sockets and read timeouts.

use crate::common;

use std::net::SocketAddr;
use std::thread;

use tungstenite::Message;

use common::{Server, recv, token, ws_connect};

const THREADS: usize = 4;
const PER_THREAD: usize = 250;
const ROUNDS: usize = 3;

/// Opens `PER_THREAD` connections, then echoes one message per connection
/// per round, writing to all before reading from any.
fn drive(addr: SocketAddr, t: usize) -> usize {
    let tok = token(&format!("load-{t}"));
    let mut conns: Vec<_> = (0..PER_THREAD)
        .map(|_| ws_connect(addr, "/echo", &tok))
        .collect();
    let mut echoed = 0;
    for round in 0..ROUNDS {
        let text = |c: usize| format!("t{t} c{c} r{round}");
        for (c, ws) in conns.iter_mut().enumerate() {
            ws.send(Message::text(text(c))).unwrap();
        }
        for (c, ws) in conns.iter_mut().enumerate() {
            assert_eq!(recv(ws), Message::text(text(c)));
            echoed += 1;
        }
    }
    echoed
}

#[test]
fn a_thousand_concurrent_connections_all_get_their_echoes() {
    let server = Server::start(&["--echo", "--shards", "2"]);
    let addr = server.addr();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| thread::spawn(move || drive(addr, t)))
        .collect();
    let echoed: usize = workers
        .into_iter()
        .map(|w| w.join().expect("client thread failed"))
        .sum();
    assert_eq!(echoed, THREADS * PER_THREAD * ROUNDS);
}

#[test]
fn clients_vanishing_mid_message_leave_the_server_serving() {
    use common::raw::{MASK, encode_frame};
    use common::{RawWs, opcode};

    let mut server = Server::start(&["--echo", "--shards", "2"]);
    let addr = server.addr();
    let tok = token("u1");
    for i in 0..100 {
        let mut ws = RawWs::connect(addr, "/echo", &tok);
        let frame = encode_frame(true, 0, opcode::BINARY, &[7; 5000], Some(MASK));
        ws.send_raw(&frame[..frame.len() / 2]);
        if i % 2 == 0 {
            common::reset(ws.stream);
        }
    }
    // Half-sent upgrade requests too.
    for _ in 0..50 {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let req = common::UpgradeRequest::new("/echo").to_bytes();
        std::io::Write::write_all(&mut &stream, &req[..req.len() / 2]).unwrap();
        common::reset(stream);
    }
    let mut ws = ws_connect(addr, "/echo", &tok);
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(recv(&mut ws), Message::text("still here"));
    assert!(server.is_running());
}
