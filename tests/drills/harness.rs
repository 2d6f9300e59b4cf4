//! What every drill shares: its size, one drill at a time, how figures are
//! printed, and the check that no secret or token leaked into anything the
//! server said.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::{SECRET, Server, http_get, ws_connect};

/// `ROOMCAST_DRILL_SIZE=full` for the sizes `docs/reliability.md` reports;
/// anything else (the default, and scripts/test.sh) is the quick size.
pub fn full() -> bool {
    std::env::var("ROOMCAST_DRILL_SIZE").is_ok_and(|size| size == "full")
}

/// The quick or the full value.
pub fn pick<T>(quick: T, full_size: T) -> T {
    if full() { full_size } else { quick }
}

/// Drills load the machine; two at once would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running drill: holds the machine and prints its figures.
pub struct Drill {
    name: &'static str,
    _turn: MutexGuard<'static, ()>,
}

impl Drill {
    /// Starts drill `name`, saying what it does and what must hold.
    pub fn start(name: &'static str, what: &str, must_hold: &str) -> Drill {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let size = if full() { "full" } else { "quick" };
        println!("\ndrill {name} ({size}): {what}\n  must hold: {must_hold}");
        Drill { name, _turn: turn }
    }

    /// Prints one figure of the drill.
    pub fn figure(&self, what: &str, value: impl std::fmt::Display) {
        println!("  {}: {what}: {value}", self.name);
    }
}

/// Asserts that nothing the server wrote or served carries the JWT secret
/// or any of `tokens` (or their signature, the part that proves them): its
/// stdout and stderr (the lifecycle log), `/metrics`, `/stats`, and the
/// `bodies` of the error responses the drill collected.
pub fn assert_no_secrets(server: &Server, tokens: &[String], bodies: &[String]) {
    let mut said = server.stdout().join("\n");
    said.push_str(&server.stderr());
    said.push_str(&http_get(server.addr(), "/metrics").body);
    said.push_str(&http_get(server.addr(), "/stats").body);
    for body in bodies {
        said.push_str(body);
    }
    assert!(!said.contains(SECRET), "the JWT secret leaked");
    for token in tokens {
        let signature = token.rsplit('.').next().unwrap_or(token);
        assert!(
            !said.contains(signature),
            "a token leaked: {}...",
            &token[..token.len().min(12)]
        );
    }
}

/// Milliseconds, for figures.
pub fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// A client that echoes on `/echo` over and over, `pause` apart, until
/// `stop`: what an established user does during a drill. Its round trips
/// and the slowest one; it panics (failing the drill) if one goes wrong.
pub fn keep_echoing(
    addr: SocketAddr,
    token: String,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(u32, Duration)> {
    thread::spawn(move || {
        let mut ws = ws_connect(addr, "/echo", &token);
        let (mut round_trips, mut slowest) = (0u32, Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            ws.send(tungstenite::Message::text("ping")).unwrap();
            assert_eq!(ws.read().unwrap(), tungstenite::Message::text("ping"));
            slowest = slowest.max(sent.elapsed());
            round_trips += 1;
            thread::sleep(pause);
        }
        (round_trips, slowest)
    })
}
