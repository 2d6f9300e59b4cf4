//! Clients for the drills that kill things: subscribers that reconnect and
//! recover with `since`/`epoch` like the browser client does, and an HTTP
//! publisher that remembers which messages were acknowledged.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use simd_json::prelude::*;
use tungstenite::Message;

use crate::common::rooms::Claims;
use crate::common::ws::ws_request;
use crate::common::{json_at, parse_json};

/// The one room the drills publish into.
pub const ROOM: &str = "drill";

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every `seq` received, live or recovered, in order of arrival.
    pub seqs: Vec<u64>,
    /// Joins answered `recovered: false` after a reconnect.
    pub resets: u32,
    /// Reconnects made.
    pub reconnects: u32,
    /// Longest time from losing the connection to being joined again.
    pub longest_outage: Duration,
}

/// A subscriber thread: connects to `addrs[first]` (then the next one
/// whenever a connection fails), joins `ROOM`, and after every reconnect
/// joins again with `since`/`epoch`. Stops once `stop` is set and it has
/// seen `target` (or waited `grace` for it).
pub fn subscriber(
    addrs: Vec<SocketAddr>,
    first: usize,
    name: String,
    stop: Arc<AtomicBool>,
    target: Arc<AtomicU64>,
) -> JoinHandle<Seen> {
    thread::spawn(move || {
        let token = Claims::new(&name).token();
        let mut seen = Seen::default();
        let mut at: Option<(String, u64)> = None;
        let mut index = first;
        let mut lost_at: Option<Instant> = None;
        let grace = Duration::from_secs(20);
        let mut stopping_since: Option<Instant> = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                let done = at
                    .as_ref()
                    .is_some_and(|(_, seq)| *seq >= target.load(Ordering::Relaxed));
                if done || since.elapsed() > grace {
                    return seen;
                }
            }
            let addr = addrs[index % addrs.len()];
            let Some(mut ws) = try_connect(addr, &token) else {
                index += 1;
                thread::sleep(Duration::from_millis(50));
                continue;
            };
            if lost_at.is_some() {
                seen.reconnects += 1;
            }
            if session(&mut ws, &mut at, &mut seen, &mut lost_at, &stop, &target).is_err() {
                lost_at.get_or_insert_with(Instant::now);
                index += 1;
            } else {
                return seen;
            }
        }
    })
}

type Ws = crate::common::Ws;

/// A WebSocket to `addr`, or `None` while nothing serves there. Reads time
/// out quickly, so the end of the drill is noticed promptly.
fn try_connect(addr: SocketAddr, token: &str) -> Option<Ws> {
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let (ws, _) = tungstenite::client(ws_request(addr, "/ws", Some(token)), stream).ok()?;
    Some(ws)
}

/// One connection's life: join (recovering), then room events until the
/// connection fails (`Err`) or the drill is over (`Ok`).
fn session(
    ws: &mut Ws,
    at: &mut Option<(String, u64)>,
    seen: &mut Seen,
    lost_at: &mut Option<Instant>,
    stop: &AtomicBool,
    target: &AtomicU64,
) -> Result<(), ()> {
    let join = match at {
        Some((epoch, seq)) => format!(
            r#"{{"event":"room:join","id":"j","data":{{"room":"{ROOM}","since":{seq},"epoch":"{epoch}"}}}}"#
        ),
        None => format!(r#"{{"event":"room:join","id":"j","data":{{"room":"{ROOM}"}}}}"#),
    };
    ws.send(Message::text(join)).map_err(|_| ())?;
    let mut grace_until: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let until =
                *grace_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(20));
            let done = at
                .as_ref()
                .is_some_and(|(_, seq)| *seq >= target.load(Ordering::Relaxed));
            if done || Instant::now() > until {
                return Ok(());
            }
        }
        let message = match ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(_) => continue,
            Err(e) if nothing_yet(&e) => continue,
            Err(_) => return Err(()),
        };
        let value = parse_json(&message);
        match json_at(&value, &["event"]).and_then(|v| v.as_str()) {
            Some("ack") if json_at(&value, &["id"]).and_then(|v| v.as_str()) == Some("j") => {
                on_joined(&value, at, seen, lost_at)?;
            }
            Some("presence:join" | "presence:leave" | "connection:established") => {}
            Some(_) => record(&value, at, seen),
            None => {}
        }
    }
}

/// Whether a read failed only for its timeout: nothing came yet.
pub fn nothing_yet(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Io(e) if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ))
}

fn on_joined(
    ack: &simd_json::OwnedValue,
    at: &mut Option<(String, u64)>,
    seen: &mut Seen,
    lost_at: &mut Option<Instant>,
) -> Result<(), ()> {
    let data = json_at(ack, &["data"]).ok_or(())?;
    let epoch = json_at(data, &["epoch"])
        .and_then(|v| v.as_str())
        .ok_or(())?;
    if at.is_some() && json_at(data, &["recovered"]).and_then(|v| v.as_bool()) != Some(true) {
        seen.resets += 1;
    }
    let latest = json_at(data, &["seq"])
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let start = at.as_ref().map_or(latest, |(_, seq)| *seq);
    *at = Some((epoch.to_owned(), start));
    if let Some(messages) = json_at(data, &["messages"]).and_then(|v| v.as_array()) {
        for message in messages {
            record(message, at, seen);
        }
    }
    if let Some(lost) = lost_at.take() {
        seen.longest_outage = seen.longest_outage.max(lost.elapsed());
    }
    Ok(())
}

fn record(event: &simd_json::OwnedValue, at: &mut Option<(String, u64)>, seen: &mut Seen) {
    let Some(seq) = json_at(event, &["seq"]).and_then(|v| v.as_u64()) else {
        return;
    };
    seen.seqs.push(seq);
    if let Some((_, last)) = at {
        *last = (*last).max(seq);
    }
}

/// What a publisher got done.
#[derive(Debug, Default)]
pub struct Published {
    /// The `seq`s acknowledged.
    pub acked: BTreeSet<u64>,
    /// The requests refused or failed.
    pub failed: u64,
    /// The longest time between two acknowledgements.
    pub longest_gap: Duration,
}

/// Publishes `n`, `n + 1`, ... into `ROOM` with `POST /publish`, to each
/// address in turn, every `pause`, until `stop`.
pub fn publisher(
    addrs: Vec<SocketAddr>,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Published> {
    thread::spawn(move || {
        let token = Claims::new("drill-feed").publish(&["*"]).rate(0).token();
        let mut published = Published::default();
        let mut last_ack: Option<Instant> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            match publish_once(addrs[n as usize % addrs.len()], &token, n) {
                Some(seq) => {
                    published.acked.insert(seq);
                    let gap = last_ack.map_or(Duration::ZERO, |at| at.elapsed());
                    published.longest_gap = published.longest_gap.max(gap);
                    last_ack = Some(Instant::now());
                }
                None => published.failed += 1,
            }
            thread::sleep(pause);
        }
        published
    })
}

/// One `POST /publish`; its `seq`, or `None` when refused or failed (a
/// node that is down, or dies during the request).
fn publish_once(addr: SocketAddr, token: &str, n: u64) -> Option<u64> {
    use std::io::{Read, Write};
    let body = format!(r#"{{"room":"{ROOM}","event":"drill:tick","data":{n}}}"#);
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    let (_, body) = response.split_once("\r\n\r\n")?;
    let value = parse_json(body);
    let results = json_at(&value, &["results"]).and_then(|v| v.as_array())?;
    json_at(results.first()?, &["seq"]).and_then(|v| v.as_u64())
}

/// Every acknowledged `seq` a subscriber missed, and whether what it saw
/// ran without a gap or a repeat from its first `seq` on.
pub fn check(seen: &Seen, acked: &BTreeSet<u64>, from: u64) -> (Vec<u64>, bool) {
    let got: BTreeSet<u64> = seen.seqs.iter().copied().collect();
    let missed = acked
        .iter()
        .filter(|s| **s >= from && !got.contains(s))
        .copied()
        .collect();
    let in_order = seen.seqs.windows(2).all(|w| w[1] == w[0] + 1);
    (missed, in_order)
}

/// Shared counters for the subscribers: the last `seq` they must reach.
pub fn target() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(u64::MAX))
}

/// The highest acknowledged `seq`, for the subscribers to wait for.
pub fn set_target(target: &AtomicU64, acked: &BTreeSet<u64>) {
    target.store(acked.last().copied().unwrap_or(0), Ordering::Relaxed);
}

/// Joins every subscriber.
pub fn join_all(handles: Vec<JoinHandle<Seen>>) -> Vec<Seen> {
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}
