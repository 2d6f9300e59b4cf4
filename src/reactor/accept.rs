//! The acceptor thread of hand-off mode: accepts on the one listener and
//! deals sockets round-robin to the shards.
//!
//! Owns the listener only; a socket belongs to its shard from the moment it
//! is handed over.

use std::io;
use std::sync::Arc;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::log_warn;
use crate::reactor::shard::{Command, Handle};

const LISTENER: Token = Token(0);
/// The token of the acceptor's waker, used to stop it.
pub const STOP: Token = Token(1);

/// Accepts until woken through the waker made from `poll` with `STOP`.
pub fn run(mut listener: TcpListener, mut poll: Poll, shards: Vec<Handle>) {
    if let Err(e) = poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
    {
        log_warn!("acceptor: register failed: {e}");
        return;
    }
    let mut events = Events::with_capacity(64);
    let mut next = 0;
    loop {
        if let Err(e) = poll.poll(&mut events, Some(std::time::Duration::from_secs(1))) {
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
        // failed accept (out of file descriptors).
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    shards[next].send(Command::Adopt(stream, peer));
                    next = (next + 1) % shards.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log_warn!("acceptor: accept failed: {e}");
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
