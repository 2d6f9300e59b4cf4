//! The operator thread: serves the `--metrics-bind` port's read-only pages
//! (`/healthz`, `/metrics`, `/stats`, the dashboard `/`, and what `OPTIONS`,
//! a wrong method or an unknown path get there) off the shards, so that
//! they answer however busy the shards are with fan-out.
//!
//! Owns the metrics listener, its own mio `Poll` and its connections
//! (at most `OPERATOR_CONNECTIONS` waiting for a request head, as many
//! being answered), each until its request head is read, answered and the
//! socket closed (every page closes its connection,
//! as on a shard: there is no keep-alive to keep). The answers come from
//! `conn::operator_answer`, the code a shard's connection runs, over what
//! every thread shares (the counters' snapshot, the config, the uptime,
//! draining, Redis up or down). A request it does not serve — the Server
//! API, which needs the rooms, or a malformed head, whose answer is the
//! connection state machine's — goes to shard 0 with the bytes read so
//! far (`Command::AdoptOperator`), which serves it and the rest of that
//! connection as any other. Must not touch a shard's rooms or
//! connections, nor write to a shard's counters.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::codes::ErrorCode;
use crate::codes::limits::{CLOSE_LINGER_MILLIS, OPERATOR_CONNECTIONS};
use crate::conn::{Pages, operator_answer};
use crate::http::request::HeadReader;
use crate::http::response;
use crate::log_warn;
use crate::reactor::Shared;
use crate::reactor::refusals::{self, Refusal};
use crate::reactor::shard::{Command, Handle};
use crate::sys::unix_ms;

const LISTENER: Token = Token(usize::MAX);
/// The token of the operator thread's waker, used to stop it.
const STOP: Token = Token(usize::MAX - 1);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 4096;
/// How often deadlines are looked at with nothing else to do.
const SWEEP: Duration = Duration::from_secs(1);

/// What to do with the bytes a connection sent so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The head is not complete yet.
    Wait,
    /// Write these bytes, then close.
    Answer(Vec<u8>),
    /// Shard 0 serves it.
    HandOver,
}

/// Decides on `input`, everything a connection sent so far (sans IO).
/// A head over `max_header_bytes` or malformed is handed over: the shard
/// answers it as it answers any other.
pub fn decide(
    input: &[u8],
    reader: &mut HeadReader,
    pages: &Pages<'_>,
    max_header_bytes: usize,
) -> Decision {
    match reader.parse(input, max_header_bytes) {
        Ok(None) => Decision::Wait,
        Ok(Some((request, _))) => match operator_answer(&request, pages) {
            Some(bytes) => Decision::Answer(bytes),
            None => Decision::HandOver,
        },
        Err(_) => Decision::HandOver,
    }
}

/// One operator connection.
struct Visitor {
    stream: TcpStream,
    peer: SocketAddr,
    input: Vec<u8>,
    reader: HeadReader,
    stage: Stage,
    deadline: Instant,
}

enum Stage {
    Reading,
    Writing {
        out: Vec<u8>,
        written: usize,
    },
    /// Answered, write side shut: input is read and dropped until the
    /// peer closes or the linger ends, so that unread bytes do not turn
    /// the close into a reset that could cut the answer.
    Lingering,
}

/// What became of a visitor after an event.
enum Next {
    Keep,
    Drop,
    HandOver,
}

/// The running operator thread.
pub struct Operator {
    listener: TcpListener,
    poll: Poll,
    shared: Arc<Shared>,
    shard: Handle,
    visitors: Slab<Visitor>,
}

/// Creates the operator thread's poll and the waker that stops it.
pub fn poll_with_stop() -> io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
    Ok((poll, waker))
}

impl Operator {
    /// An operator thread for `listener`, handing what it does not serve
    /// to `shard` (shard 0).
    pub fn new(
        mut listener: TcpListener,
        poll: Poll,
        shared: Arc<Shared>,
        shard: Handle,
    ) -> io::Result<Self> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            listener,
            poll,
            shared,
            shard,
            visitors: Slab::with_capacity(OPERATOR_CONNECTIONS),
        })
    }

    /// Serves until woken through the waker made with `poll_with_stop`.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(SWEEP)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log_warn!("operator: poll failed: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    STOP => return,
                    LISTENER => self.accept_all(),
                    Token(key) => self.on_event(key),
                }
            }
            self.sweep(Instant::now());
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    refusals::refused_with(refusals::of_accept_error(&e), &e.to_string());
                    return;
                }
            }
        }
    }

    /// Takes a connection to read its request if fewer than
    /// `OPERATOR_CONNECTIONS` wait for theirs; otherwise refuses it with
    /// `503`, as a full server refuses an upgrade, written and lingered on
    /// like an answer (so that the request it sent does not turn the close
    /// into a reset) while as many are being answered; past that it is
    /// closed at once.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let reading = self
            .visitors
            .iter()
            .filter(|(_, visitor)| matches!(visitor.stage, Stage::Reading))
            .count();
        let stage = if reading < OPERATOR_CONNECTIONS {
            Stage::Reading
        } else {
            refusals::refused(Refusal::ConnectionLimit);
            if self.visitors.len() >= 2 * OPERATOR_CONNECTIONS {
                return;
            }
            let mut out = Vec::with_capacity(256);
            let message = "too many operator connections";
            response::write_error(&mut out, ErrorCode::ServerBusy, message, &[]);
            Stage::Writing { out, written: 0 }
        };
        let _ = stream.set_nodelay(true);
        let entry = self.visitors.vacant_entry();
        let key = entry.key();
        // Both, once: the edges are few, and a visitor that is not writing
        // ignores a writable one.
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            log_warn!("operator: register failed: {e}");
            return;
        }
        entry.insert(Visitor {
            stream,
            peer,
            input: Vec::new(),
            reader: HeadReader::default(),
            stage,
            deadline: Instant::now() + self.shared.config.listen.handshake_timeout,
        });
        // A fresh socket raises its events on registration: a refusal is
        // written then.
    }

    fn on_event(&mut self, key: usize) {
        let Some(visitor) = self.visitors.get_mut(key) else {
            return;
        };
        let next = match visitor.stage {
            Stage::Reading => read_request(visitor, &self.shared),
            Stage::Writing { .. } => write_answer(visitor),
            Stage::Lingering => linger(visitor),
        };
        match next {
            Next::Keep => {}
            Next::Drop => self.drop_visitor(key),
            Next::HandOver => self.hand_over(key),
        }
    }

    fn drop_visitor(&mut self, key: usize) {
        if let Some(mut visitor) = self.visitors.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut visitor.stream);
        }
    }

    fn hand_over(&mut self, key: usize) {
        let Some(mut visitor) = self.visitors.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut visitor.stream);
        // If shard 0 is gone the server is stopping: the socket is dropped.
        self.shard.send(Command::AdoptOperator(
            visitor.stream,
            visitor.peer,
            visitor.input,
        ));
    }

    /// Drops every connection past its deadline: a head not read within
    /// the request timeout, an answer not taken, a linger over.
    fn sweep(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .visitors
            .iter()
            .filter(|(_, visitor)| now >= visitor.deadline)
            .map(|(key, _)| key)
            .collect();
        for key in late {
            self.drop_visitor(key);
        }
    }
}

/// Reads what the socket has and decides on the head once it is complete.
fn read_request(visitor: &mut Visitor, shared: &Shared) -> Next {
    let max_header_bytes = shared.config.limits.max_header_bytes;
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        // One byte past the limit is enough to know the head is too large.
        let room = (max_header_bytes + 1).saturating_sub(visitor.input.len());
        let want = room.min(READ_CHUNK);
        if want == 0 {
            return Next::HandOver;
        }
        match visitor.stream.read(&mut chunk[..want]) {
            Ok(0) => return Next::Drop,
            Ok(n) => visitor.input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Next::Drop,
        }
        let pages = Pages {
            config: &shared.config,
            observe: shared,
            draining: shared.registry.is_draining(),
            unix_ms: unix_ms(),
        };
        match decide(
            &visitor.input,
            &mut visitor.reader,
            &pages,
            max_header_bytes,
        ) {
            Decision::Wait => {}
            Decision::HandOver => return Next::HandOver,
            Decision::Answer(out) => {
                visitor.stage = Stage::Writing { out, written: 0 };
                visitor.deadline = Instant::now() + shared.config.listen.handshake_timeout;
                return write_answer(visitor);
            }
        }
    }
}

/// Writes what the socket takes of the answer; once all is written, shuts
/// the write side and lingers.
fn write_answer(visitor: &mut Visitor) -> Next {
    let Stage::Writing { out, written } = &mut visitor.stage else {
        return Next::Keep;
    };
    while *written < out.len() {
        match visitor.stream.write(&out[*written..]) {
            Ok(0) => return Next::Drop,
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Drop,
        }
    }
    if visitor.stream.shutdown(Shutdown::Write).is_err() {
        return Next::Drop;
    }
    visitor.stage = Stage::Lingering;
    visitor.deadline = Instant::now() + Duration::from_millis(CLOSE_LINGER_MILLIS);
    linger(visitor)
}

/// Reads and drops input until the peer closes.
fn linger(visitor: &mut Visitor) -> Next {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match visitor.stream.read(&mut chunk) {
            Ok(0) => return Next::Drop,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ServeArgs;
    use crate::conn::Observe;
    use crate::metrics::Snapshot;

    struct Idle;

    impl Observe for Idle {
        fn snapshot(&self) -> Snapshot {
            Snapshot::default()
        }
        fn uptime(&self) -> Duration {
            Duration::ZERO
        }
    }

    fn decide_on(input: &[u8]) -> Decision {
        let serve =
            ServeArgs::try_parse_from(["--jwt-secret", "s", "--metrics-bind", "127.0.0.1:0"])
                .expect("parses");
        let config = serve
            .into_config(crate::cli::EnvLists::default(), 1, 10_000)
            .expect("valid");
        let pages = Pages {
            config: &config,
            observe: &Idle,
            draining: false,
            unix_ms: 0,
        };
        decide(input, &mut HeadReader::default(), &pages, 8192)
    }

    fn answer_text(decision: Decision) -> String {
        match decision {
            Decision::Answer(bytes) => String::from_utf8(bytes).expect("utf-8"),
            other => panic!("not answered: {other:?}"),
        }
    }

    #[test]
    fn pages_are_answered_here() {
        let stats = answer_text(decide_on(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(stats.starts_with("HTTP/1.1 200"), "{stats}");
        let dashboard = answer_text(decide_on(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(dashboard.starts_with("HTTP/1.1 200"), "{dashboard}");
        let head = answer_text(decide_on(b"HEAD /healthz HTTP/1.1\r\n\r\n"));
        assert!(head.ends_with("\r\n\r\n"), "no body: {head}");
        let missing = answer_text(decide_on(b"GET /nothing HTTP/1.1\r\n\r\n"));
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = answer_text(decide_on(b"POST /stats HTTP/1.1\r\n\r\n"));
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }

    #[test]
    fn an_incomplete_head_waits() {
        assert_eq!(decide_on(b"GET /stats HTTP/1.1\r\n"), Decision::Wait);
    }

    #[test]
    fn the_server_api_and_bad_heads_go_to_the_shard() {
        let api = b"POST /api/rooms HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(decide_on(api), Decision::HandOver);
        assert_eq!(decide_on(b"NOT HTTP\r\n\r\n"), Decision::HandOver);
        assert_eq!(decide_on(&[b'a'; 9000]), Decision::HandOver);
    }
}
