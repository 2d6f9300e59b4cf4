//! Benchmark peer for roomcast: the same `/echo` and `/room/<name>` semantics
//! as every other peer under `perf/peers/` (see `perf/peers/README.md`), on
//! tokio + tokio-tungstenite.
//!
//! * `peer-tokio-tungstenite [PORT]` listens on `127.0.0.1:PORT` (0 = any free
//!   port) and prints `listening on 127.0.0.1:PORT` once ready.
//! * Worker threads: `PEER_THREADS`, else the number of cores.
//! * Each connection has a reader (the accepting task) and a writer task fed by
//!   an unbounded channel. A room broadcast clones one `Message` (its payload is
//!   a reference-counted `Bytes`, so the clone copies no data) into the channel
//!   of every other member.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::accept_hdr_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

type Tx = UnboundedSender<Message>;

/// One room: its members' outbound channels, keyed by connection id.
#[derive(Default)]
struct Room {
    members: Mutex<Vec<(u64, Tx)>>,
}

impl Room {
    /// Sends `msg` to every member except `from`. Clients that have gone away
    /// (closed channel) are skipped; their reader removes them shortly.
    fn broadcast(&self, from: u64, msg: &Message) {
        let members = self.members.lock().unwrap();
        for (id, tx) in members.iter() {
            if *id != from {
                let _ = tx.send(msg.clone());
            }
        }
    }
}

#[derive(Default)]
struct State {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    next_id: AtomicU64,
}

impl State {
    fn join(&self, name: &str, id: u64, tx: Tx) -> Arc<Room> {
        let mut rooms = self.rooms.lock().unwrap();
        let room = rooms.entry(name.to_owned()).or_default().clone();
        room.members.lock().unwrap().push((id, tx));
        room
    }

    fn leave(&self, name: &str, id: u64, room: &Arc<Room>) {
        let mut rooms = self.rooms.lock().unwrap();
        let empty = {
            let mut members = room.members.lock().unwrap();
            if let Some(i) = members.iter().position(|(m, _)| *m == id) {
                members.swap_remove(i);
            }
            members.is_empty()
        };
        if empty && rooms.get(name).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(name);
        }
    }
}

enum Route {
    Echo,
    Room(String),
}

/// `/echo` or `/room/<name>` (name in `[A-Za-z0-9._:-]+`); the query string is
/// not part of `path`.
fn route(path: &str) -> Option<Route> {
    if path == "/echo" {
        return Some(Route::Echo);
    }
    let name = path.strip_prefix("/room/")?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    valid.then(|| Route::Room(name.to_owned()))
}

// The handshake callback's error type is tungstenite's `ErrorResponse`.
#[allow(clippy::result_large_err)]
async fn handle(state: Arc<State>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut target = None;
    let callback = |req: &Request, resp: Response| match route(req.uri().path()) {
        Some(r) => {
            target = Some(r);
            Ok(resp)
        }
        None => {
            let mut err = ErrorResponse::new(Some("not found".into()));
            *err.status_mut() = StatusCode::NOT_FOUND;
            Err(err)
        }
    };
    let Ok(ws) = accept_hdr_async(stream, callback).await else {
        return;
    };
    let Some(target) = target else { return };

    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.feed(msg).await.is_err() {
                return;
            }
            // Batch whatever else is already queued into one flush.
            while let Ok(msg) = rx.try_recv() {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let room = match &target {
        Route::Echo => None,
        Route::Room(name) => Some(state.join(name, id, tx.clone())),
    };

    // Reading also flushes tungstenite's automatic pong and close replies.
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => match &room {
                None => {
                    let _ = tx.send(msg);
                }
                Some(room) => room.broadcast(id, &msg),
            },
            Ok(_) => {}
            Err(_) => break,
        }
    }

    if let (Route::Room(name), Some(room)) = (&target, &room) {
        state.leave(name, id, room);
    }
    drop(tx);
    let _ = writer.await;
}

fn main() {
    let port: u16 = match std::env::args().nth(1) {
        None => 0,
        Some(p) => p.parse().unwrap_or_else(|_| {
            eprintln!("usage: peer-tokio-tungstenite [PORT]");
            std::process::exit(2);
        }),
    };
    let threads = std::env::var("PEER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");

    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| {
                eprintln!("bind 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            });
        let addr = listener.local_addr().expect("local_addr");
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on 127.0.0.1:{}", addr.port());
            let _ = out.flush();
        }

        let state = Arc::new(State::default());
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(handle(state.clone(), stream));
                    }
                    // EMFILE and the like: back off briefly rather than spin.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                }
            }
        });

        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    // Do not wait for open connections: exit at once.
    std::process::exit(0);
}
