//! The acceptor thread of hand-off mode: accepts on the one listener and
//! deals sockets round-robin to the shards.
//!
//! Owns the listener only; a socket belongs to its shard from the moment it
//! is handed over. Under a flood it accepts no faster than the shards adopt
//! (`HANDOFF_PER_SHARD` in flight each, adopted `ACCEPT_BUDGET` a turn, as
//! in reuseport mode): the rest waits in the kernel's backlog instead of in
//! an unbounded queue, and established connections keep being served.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::codes::limits::HANDOFF_PER_SHARD;
use crate::log_warn;
use crate::reactor::refusals;
use crate::reactor::shard::{Command, Handle};

const LISTENER: Token = Token(0);
/// The token of the acceptor's waker, used to stop it.
pub const STOP: Token = Token(1);

/// How often a full hand-off is looked at again: the listener raises no
/// new edge for a backlog left unaccepted.
const FULL_RETRY: Duration = Duration::from_millis(5);
/// How often the backlog is retried otherwise (after a failed accept).
const IDLE_RETRY: Duration = Duration::from_secs(1);

/// Accepts until woken through the waker made from `poll` with `STOP`.
/// `pending` counts sockets handed over and not yet adopted (the shards
/// take them off).
pub fn run(
    mut listener: TcpListener,
    mut poll: Poll,
    shards: Vec<Handle>,
    pending: Arc<AtomicUsize>,
) {
    if let Err(e) = poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
    {
        log_warn!("acceptor: register failed: {e}");
        return;
    }
    let mut events = Events::with_capacity(64);
    let mut next = 0;
    let limit = HANDOFF_PER_SHARD * shards.len();
    let mut full = false;
    loop {
        let timeout = if full { FULL_RETRY } else { IDLE_RETRY };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log_warn!("acceptor: poll failed: {e}");
            return;
        }
        if events.iter().any(|e| e.token() == STOP) {
            return;
        }
        // Also reached on the timeout, which retries a backlog left by a
        // failed accept (out of file descriptors) or by a full hand-off.
        loop {
            full = pending.load(Ordering::Relaxed) >= limit;
            if full {
                break;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    pending.fetch_add(1, Ordering::Relaxed);
                    shards[next].send(Command::Adopt(stream, peer));
                    next = (next + 1) % shards.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    refusals::refused_with(refusals::of_accept_error(&e), &e.to_string());
                    break;
                }
            }
        }
    }
}

/// Creates the acceptor's poll and the waker that stops it.
pub fn poll_with_stop() -> io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
    Ok((poll, waker))
}
