//! Benchmark peer for roomcast: the same `/echo` and `/room/<name>` semantics
//! as every other peer under `perf/peers/` (see `perf/peers/README.md`), on
//! fastwebsockets (with its `upgrade` feature) over hyper 1 + tokio.
//!
//! * `peer-fastwebsockets [PORT]` listens on `127.0.0.1:PORT` (0 = any free
//!   port) and prints `listening on 127.0.0.1:PORT` once ready.
//! * Worker threads: `PEER_THREADS`, else the number of cores.
//! * hyper answers the HTTP/1.1 upgrade; fastwebsockets' `upgrade::upgrade`
//!   builds the 101 response. The upgraded stream is split: fastwebsockets
//!   reads frames (`FragmentCollectorRead`: reassembles fragments, unmasks,
//!   checks UTF-8, turns pings into pongs and closes into close replies), and a
//!   writer task writes already-encoded frames from an unbounded channel
//!   through a `BufWriter`, flushing once per batch.
//! * Every outgoing frame is encoded once with fastwebsockets' own
//!   `Frame::write` (server frames are unmasked, so the bytes are the same for
//!   every recipient); a room broadcast then hands the same reference-counted
//!   `Bytes` to every other member.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fastwebsockets::upgrade::{self, UpgradeFut};
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Payload, Role, after_handshake_split};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// An encoded WebSocket frame, ready to write.
type Tx = UnboundedSender<Bytes>;

#[derive(Default)]
struct Room {
    members: Mutex<Vec<(u64, Tx)>>,
}

impl Room {
    /// Sends the encoded frame to every member except `from`. Members whose
    /// writer is gone are skipped; their reader removes them shortly.
    fn broadcast(&self, from: u64, frame: &Bytes) {
        let members = self.members.lock().unwrap();
        for (id, tx) in members.iter() {
            if *id != from {
                let _ = tx.send(frame.clone());
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

/// Encodes a server (unmasked) frame once, with fastwebsockets' encoder.
fn encode(fin: bool, opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut frame = Frame::new(fin, opcode, None, Payload::Borrowed(payload));
    let mut buf = Vec::new();
    let len = frame.write(&mut buf).len();
    buf.truncate(len);
    Bytes::from(buf)
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut resp = Response::new(Empty::new());
    *resp.status_mut() = code;
    resp
}

async fn serve(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let Some(target) = route(req.uri().path()) else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    if !upgrade::is_upgrade_request(&req) {
        return Ok(status(StatusCode::BAD_REQUEST));
    }
    match upgrade::upgrade(&mut req) {
        Ok((response, fut)) => {
            tokio::spawn(connection(state, target, fut));
            Ok(response)
        }
        Err(_) => Ok(status(StatusCode::BAD_REQUEST)),
    }
}

async fn connection(state: Arc<State>, target: Route, fut: UpgradeFut) {
    let Ok(ws) = fut.await else { return };
    // A fresh `WebSocket` has read nothing yet, so its stream can be taken
    // back and split: reads go through fastwebsockets, writes are raw
    // already-encoded frames. (The read side's own write half is never used:
    // its obligated pongs and close replies come back through `send_fn`.)
    let (r, w) = tokio::io::split(ws.into_inner());
    let (rd, _) = after_handshake_split(r, tokio::io::sink(), Role::Server);
    let mut rd = FragmentCollectorRead::new(rd);

    let (tx, mut rx) = unbounded_channel::<Bytes>();
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::new(w);
        while let Some(frame) = rx.recv().await {
            if w.write_all(&frame).await.is_err() {
                return;
            }
            // Batch whatever else is already queued into one flush.
            while let Ok(frame) = rx.try_recv() {
                if w.write_all(&frame).await.is_err() {
                    return;
                }
            }
            if w.flush().await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });

    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let room = match &target {
        Route::Echo => None,
        Route::Room(name) => Some(state.join(name, id, tx.clone())),
    };

    // Pongs and close replies owed by the reader go to the writer like data.
    let obligated = tx.clone();
    let mut send_fn = move |frame: Frame<'_>| {
        let _ = obligated.send(encode(frame.fin, frame.opcode, &frame.payload));
        std::future::ready(Ok::<(), std::io::Error>(()))
    };
    loop {
        let Ok(frame) = rd.read_frame(&mut send_fn).await else {
            break;
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                let encoded = encode(true, frame.opcode, &frame.payload);
                match &room {
                    None => {
                        let _ = tx.send(encoded);
                    }
                    Some(room) => room.broadcast(id, &encoded),
                }
            }
            OpCode::Close => break,
            _ => {}
        }
    }

    if let (Route::Room(name), Some(room)) = (&target, &room) {
        state.leave(name, id, room);
    }
    drop(send_fn);
    drop(tx);
    let _ = writer.await;
}

fn main() {
    let port: u16 = match std::env::args().nth(1) {
        None => 0,
        Some(p) => p.parse().unwrap_or_else(|_| {
            eprintln!("usage: peer-fastwebsockets [PORT]");
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
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    // EMFILE and the like: back off briefly rather than spin.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| serve(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
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
