//! One client connection's state machine, sans-IO.
//!
//! Owns the life of a connection from its first byte to its last: the HTTP
//! request, the upgrade, WebSocket messages, heartbeats, the close
//! handshake, and the bound on its queued output. It takes input bytes, the
//! time and a `Context`, and leaves output in its `Outbound` queue; it never
//! touches a socket or a clock. The reactor feeds it and writes for it.
//!
//! The states live here; what happens inside two of them has its own file:
//! `routes` (a complete request head), `publish` (a `POST /publish` body and
//! its results), `websocket` (frames on an open WebSocket), with `session`,
//! `rate` and `outbound` for what an open connection carries,
//! `backpressure` for what becomes of output a client is slow to read, and
//! `id` for the connection id clients and the logs see.

mod api;
pub use api::Subscribing;
pub mod backpressure;
pub mod compression;
pub mod cork;
pub mod id;
pub mod outbound;
pub mod packed;
pub mod pool;
mod publish;
pub mod rate;
pub mod report;
mod routes;
pub use routes::{Pages, operator_answer};
mod session;
pub mod shard_frame;
mod websocket;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::auth::{Claims, Keys};
use crate::codes::{ErrorCode, close, limits};
use crate::config::Config;
use crate::http::request::{HeadReader, Request as HttpRequest};
use crate::http::response;
use crate::metrics::{ShardMetrics, Snapshot};
use crate::proto::{self, Request, envelope::Parser};
use crate::ws::decoder::Decoder;
use crate::ws::extensions::Deflate;
use crate::ws::frame::OpCode;
use crate::ws::handshake::{Accepted, Upgrade};
use backpressure::{Backpressure, Fate};
use compression::Codec;
use id::{ConnId, Issuer};
use outbound::Outbound;
use publish::{BodyRead, BodyReader, Results};
use rate::RateLimit;
use report::Report;
use routes::{RequestOutcome, route};
use session::SessionState;
use shard_frame::ShardFrame;
use std::sync::Arc;
use websocket::{BoundedSink, End, on_frames};

/// How long a client may take, by default (`--handshake-timeout`), to
/// finish its TLS handshake and send a request head and its body; an idle
/// keep-alive connection gets this long for its next request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection anywhere in the process: its shard, its slab key there,
/// and its `id`, which tells it from a newer connection given the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub shard: usize,
    pub key: usize,
    pub id: u64,
}

/// Server-wide decisions a connection cannot make alone.
pub trait Admission {
    /// Reserves a WebSocket slot for `ip`'s upgrade attempt at `now`, or
    /// says why there is none (`SERVER_BUSY` when full or draining,
    /// `TOO_MANY_CONNECTIONS` over the per-IP count or handshake rate).
    fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), ErrorCode>;
    /// Gives back a slot reserved by `admit`.
    fn release(&self, ip: IpAddr);
    /// Takes `messages` from the `POST /publish` budget of the token
    /// subject `subject` at `rate` messages per second (0: no limit);
    /// false when it is spent.
    fn admit_publish(&self, subject: &str, messages: usize, rate: f64, now: Instant) -> bool;
}

/// What the operator endpoints (`/metrics`, `/stats`) read of the whole server.
pub trait Observe {
    /// Every shard's figures, summed.
    fn snapshot(&self) -> Snapshot;
    /// Time since the server started.
    fn uptime(&self) -> Duration;
    /// Cluster mode: whether every Redis server is reachable.
    fn redis_up(&self) -> Option<bool> {
        None
    }
}

/// Everything a connection reads from its shard while handling input.
pub struct Context<'a> {
    pub config: &'a Config,
    pub keys: &'a Keys,
    pub admission: &'a dyn Admission,
    pub observe: &'a dyn Observe,
    /// The shard's counters; the connection runs on the shard's thread.
    pub metrics: &'a ShardMetrics,
    /// The shard's envelope parser, reused across messages.
    pub parser: &'a mut Parser,
    /// Scratch space for building replies.
    pub scratch: &'a mut Vec<u8>,
    /// The shard's permessage-deflate state, for every connection.
    pub codec: &'a mut Codec,
    pub now: Instant,
    /// Wall-clock time, for tokens and `serverTime`.
    pub unix_ms: u64,
    /// Whether the server is shutting down.
    pub draining: bool,
    /// What the connection ids this process gives out start with.
    pub issuer: Issuer<'a>,
    /// Work for the rooms that the connection's messages asked for.
    pub requests: &'a mut Vec<Request>,
    /// What became of each request, for the shard's lifecycle log.
    pub reports: &'a mut Vec<Report>,
}

/// How a frame from the rooms is bounded (section 8, `backpressure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A room event: over the bound, `--slow-consumer` decides.
    RoomEvent,
    /// Anything else (acks, presence, direct messages): up to twice the bound.
    Other,
    /// A volatile room event (section 14): only to a queue at most half
    /// full, never held back, never a reason to close.
    Volatile,
}

/// What became of a frame offered to `Connection::deliver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Queued for the client.
    Queued,
    /// Kept to be sent once the client catches up (`conflate`).
    HeldBack,
    /// Lost for this client and counted for its `system:dropped` (`drop`).
    Dropped,
    /// Kept in place of an older event of the room, which is lost (`conflate`).
    Conflated,
    /// A volatile event left out: the queue was above half its bound.
    Skipped,
    /// Over the bound: the connection is closing with 4008.
    Closed,
    /// The connection is not an open WebSocket.
    NotOpen,
}

/// What the reactor should do with a connection after a timer tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Keep it.
    Keep,
    /// Drop the socket now, without a close frame.
    Abort(AbortReason),
}

/// Why a connection was dropped without a close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// No frame arrived within `--ping-timeout` of a ping.
    PingTimeout,
    /// The request head did not arrive in time.
    RequestTimeout,
    /// The peer did not finish the close handshake in time.
    LingerTimeout,
}

/// Which WebSocket endpoint a connection was upgraded on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: JSON events.
    Events,
    /// `/echo`: every message echoed verbatim.
    Echo,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The public port: WebSockets, `/publish`, `/healthz`, and `/metrics`
    /// and `/stats` unless `--metrics-bind` moves them.
    Public,
    /// The `--metrics-bind` listener: `/metrics`, `/stats`, `/healthz`.
    Metrics,
}

/// How data frames reach a client, in one byte so that `Connection`
/// stays within its size (`an_idle_connection_stays_small`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Wire(u8);

impl Wire {
    const COMPRESSES: u8 = 1;
    const MSGPACK: u8 = 2;

    fn new(compresses: bool, msgpack: bool) -> Self {
        Wire((u8::from(compresses) * Self::COMPRESSES) | (u8::from(msgpack) * Self::MSGPACK))
    }

    fn compresses(self) -> bool {
        self.0 & Self::COMPRESSES != 0
    }

    fn msgpack(self) -> bool {
        self.0 & Self::MSGPACK != 0
    }
}

/// A client connection.
pub struct Connection {
    id: u64,
    peer_ip: IpAddr,
    port: Port,
    /// When the socket was accepted, for the handshake latency and the
    /// lifecycle log.
    accepted_at: Instant,
    state: State,
    out: Outbound,
    /// Whether this connection holds a slot from `Admission::admit`.
    admitted: bool,
    /// Whether data frames to it may be compressed (permessage-deflate
    /// agreed with a 15-bit window) and are MessagePack (`roomcast.msgpack`,
    /// section 14). Kept here, not only in the boxed session's decoder, so
    /// that a fan-out reads it without another cache miss per member.
    wire: Wire,
    /// The close code sent or received, for the lifecycle log.
    close_code: Option<u16>,
    /// The oldest ping not yet followed by any inbound frame.
    unanswered_ping: Option<Instant>,
    next_ping: Instant,
    /// The user, rooms and limits of an upgraded connection; kept until the
    /// connection is dropped so its rooms can be left.
    session: Option<Box<SessionState>>,
}

enum State {
    /// Waiting for the request head.
    Request {
        reader: HeadReader,
        deadline: Instant,
    },
    /// Reading the body of `POST /publish`, by the head's deadline (kept
    /// in the box, so that `Request` stays the largest variant and every
    /// connection's `State` 24 bytes).
    Body(Box<BodyReader>),
    /// The messages of a `POST /publish` are with the rooms; input that
    /// arrives meanwhile (a pipelined request) is left unconsumed until the
    /// response is queued.
    Publishing(Box<Results>),
    /// A Server API call is with the rooms; pipelined input waits as for
    /// `Publishing`.
    Calling(Box<api::Calling>),
    /// An upgrade to `/ws` without a token, with a connection slot held,
    /// waiting for the `--connect-proxy`'s claims (section 13.2); input
    /// waits unconsumed, as for `Publishing`.
    AwaitingClaims(Box<AwaitingClaims>),
    /// An upgraded WebSocket; its decoder and session are in `session`.
    Open,
    /// The server decided to close (with `close_code`) while the
    /// rooms still owed the connection answers to requests it had made:
    /// those answers are queued as they come, then the close frame, by the
    /// deadline at the latest. Input is discarded, room events are not sent.
    Closing { deadline: Instant },
    /// The last output (a close frame or a final HTTP response) is queued.
    /// Once it is written the reactor shuts the write side; input is read
    /// and discarded until EOF or the deadline, so the peer sees our last
    /// bytes instead of a reset.
    Finishing { deadline: Instant },
}

/// An upgrade waiting for its claims, and, once the shard has it, what
/// the connect proxy decided (carried out by the next `on_input`, which has
/// the context to open the WebSocket).
pub struct AwaitingClaims {
    upgrade: Upgrade,
    deadline: Instant,
    decided: Option<ConnectDecision>,
}

/// What the connect proxy decided about an upgrade.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectDecision {
    /// Upgrade with these claims.
    Claims(Claims),
    /// Answer `response` (a complete HTTP response), counted under `code`.
    Refused { code: ErrorCode, response: Vec<u8> },
}

/// How long past `--hook-timeout` an upgrade waits for its claims: the
/// hooks client answers every request by then, this only guards the slot.
const CLAIMS_GRACE: Duration = Duration::from_secs(1);

impl Connection {
    /// A freshly accepted connection.
    pub fn new(id: u64, peer_ip: IpAddr, now: Instant) -> Self {
        Self {
            id,
            peer_ip,
            port: Port::Public,
            accepted_at: now,
            state: State::Request {
                reader: HeadReader::default(),
                deadline: now + REQUEST_TIMEOUT,
            },
            out: Outbound::default(),
            admitted: false,
            wire: Wire::default(),
            close_code: None,
            unanswered_ping: None,
            next_ping: now,
            session: None,
        }
    }

    /// The same connection, with `timeout` for its TLS handshake and
    /// first request head instead of `REQUEST_TIMEOUT` (later requests on a
    /// kept-alive connection get `--handshake-timeout` from the config).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        if let State::Request { deadline, .. } = &mut self.state {
            *deadline = self.accepted_at + timeout;
        }
        self
    }

    /// The same connection, come in on `port`.
    pub fn on_port(mut self, port: Port) -> Self {
        self.port = port;
        self
    }

    /// When the socket was accepted.
    pub fn accepted_at(&self) -> Instant {
        self.accepted_at
    }

    /// The connection's id, unique within the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The connection's id as clients and the logs see it.
    pub fn conn_id<'a>(&self, issuer: Issuer<'a>) -> ConnId<'a> {
        issuer.id(self.id)
    }

    /// The token's `sub` of an upgraded connection, `/ws` or `/echo`.
    pub fn subject(&self) -> Option<&str> {
        self.session.as_ref().map(|s| &*s.claims.sub)
    }

    /// The user of an upgraded `/ws` connection (the claims' shared string).
    pub fn user_id(&self) -> Option<&Arc<str>> {
        self.session
            .as_ref()
            .filter(|s| s.events)
            .map(|s| &s.claims.sub)
    }

    /// The display name of the user of an upgraded connection.
    pub fn user_name(&self) -> Option<&str> {
        self.session.as_ref().and_then(|s| s.claims.name.as_deref())
    }

    /// Rooms the connection is in or joining.
    pub fn rooms(&self) -> &[Arc<str>] {
        self.session.as_ref().map_or(&[], |s| &s.rooms)
    }

    /// Whether the connection may publish to `room` now (section 7): a
    /// `pub` pattern of its token, or membership where members publish.
    /// For a room event that waited for a proxy's decision on an earlier
    /// join, which may have been refused meanwhile.
    pub fn may_publish(&self, room: &str, members_publish: bool) -> bool {
        self.session.as_ref().is_some_and(|s| {
            let patterns = s.claims.publish.as_deref().unwrap_or_default();
            crate::proto::names::matches_any(patterns, room)
                || (members_publish && s.rooms.iter().any(|r| &**r == room))
        })
    }

    /// Whether data frames to this connection may be compressed
    /// (permessage-deflate agreed with the server's full window).
    pub fn compresses_out(&self) -> bool {
        self.wire.compresses()
    }

    /// Whether the connection chose `roomcast.msgpack`: frames shared by a
    /// fan-out go to it as their MessagePack twin (`conn::packed`).
    pub fn speaks_msgpack(&self) -> bool {
        self.wire.msgpack()
    }

    /// Whether the connection counts `room` as joined or joining.
    pub fn in_room(&self, room: &str) -> bool {
        self.rooms().iter().any(|r| &**r == room)
    }

    /// A join the rooms refused: the room is no longer counted as joining.
    pub fn forget_room(&mut self, room: &str) {
        if let Some(session) = self.session.as_mut() {
            session.rooms.retain(|r| &**r != room);
        }
    }

    /// Whether this `/ws` connection was upgraded since the last call.
    pub fn take_newly_opened(&mut self) -> bool {
        self.session
            .as_mut()
            .is_some_and(|s| std::mem::take(&mut s.newly_opened))
    }

    /// Queues a frame from the rooms, within the bound of section 8, and
    /// says what became of it; `room` is a room event's room (the one a
    /// held-back event is kept under), `None` for anything else.
    // Inline: a fan-out calls it once per member, and the call's register
    // saves cost more than its common path.
    #[inline]
    pub fn deliver(
        &mut self,
        room: Option<&Arc<str>>,
        frame: &ShardFrame,
        kind: Delivery,
        now: Instant,
        config: &Config,
    ) -> Delivered {
        if !self.is_open_websocket() {
            return Delivered::NotOpen;
        }
        let rule = Backpressure::of(config);
        // Whatever was held back goes first, so a room's events stay in
        // order. The session (another cache line per member) is read only
        // under a policy that holds events back.
        let holding_back = rule.holds_back(kind) && {
            self.release_if_caught_up(rule);
            self.is_holding_back()
        };
        match rule.fate(self.out.pending(), frame.len(), kind, holding_back) {
            Fate::Queue => {
                self.out.push_shared(frame.clone());
                Delivered::Queued
            }
            Fate::HoldBack(how) => match (self.session.as_mut(), room) {
                (Some(session), Some(room)) => session.hold_back(room, frame, how),
                _ => Delivered::NotOpen,
            },
            Fate::Skip => Delivered::Skipped,
            Fate::Close => {
                self.end_websocket(End::SlowConsumer, now, config);
                Delivered::Closed
            }
        }
    }

    /// Whether the queue should go to the socket now, before `incoming`
    /// more bytes are queued: once it would pass half the bound. The bound
    /// of section 8 is about a client that falls behind, not about how much
    /// arrived within one turn of the event loop, so a burst is written as
    /// it comes rather than judged in user space first; a client that reads
    /// keeps up, and only one whose socket is full reaches the bound.
    pub fn wants_write_through(&self, incoming: usize, config: &Config) -> bool {
        Backpressure::of(config).writes_through(self.out.pending(), incoming)
    }

    /// Queues a reply built elsewhere (an ack from the rooms), compressed
    /// with the shard's `codec` when the connection agreed to it; returns
    /// whether it was queued.
    pub fn send_text(
        &mut self,
        text: &[u8],
        now: Instant,
        config: &Config,
        codec: &mut Codec,
    ) -> bool {
        if !matches!(self.state, State::Open | State::Closing { .. }) {
            return false;
        }
        let codec = self.compresses_out().then_some(codec);
        let mut sink = BoundedSink::new(&mut self.out, Backpressure::of(config), codec)
            .with_msgpack(self.wire.msgpack());
        proto::Sink::send_text(&mut sink, text);
        if sink.overflowed {
            self.end_websocket(End::SlowConsumer, now, config);
            return false;
        }
        true
    }

    /// One answer the rooms owed this connection is queued (or was not
    /// needed); a close waiting for the last of them goes out now.
    pub fn on_answer(&mut self, now: Instant, config: &Config) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.on_answer();
        if !session.awaits_answers() && matches!(self.state, State::Closing { .. }) {
            self.send_pending_close(now, config);
        }
    }

    /// Once a slow client's queue is below half the bound, queues what was
    /// held back for it (`system:dropped`, or the newest event per room).
    /// Returns whether anything was queued.
    pub fn release_held_back(&mut self, config: &Config) -> bool {
        let rule = Backpressure::of(config);
        // Asked after every write: under `close` the session (another
        // cache line per member) is not even looked at.
        rule.may_hold_back() && self.is_open_websocket() && self.release_if_caught_up(rule)
    }

    /// Queues what was held back if the queue is below half the bound;
    /// returns whether anything was queued.
    fn release_if_caught_up(&mut self, rule: Backpressure) -> bool {
        let pending = self.out.pending();
        match self.session.as_mut() {
            Some(session) if rule.releases(pending) => {
                session.release(&mut self.out, self.wire.msgpack())
            }
            _ => false,
        }
    }

    /// Whether room events are held back from this slow client.
    fn is_holding_back(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.is_holding_back())
    }

    /// The queued output, for the reactor to write.
    pub fn outbound(&mut self) -> &mut Outbound {
        &mut self.out
    }

    /// The peer's address.
    pub fn peer_ip(&self) -> IpAddr {
        self.peer_ip
    }

    /// Whether the connection holds an admission slot to give back.
    pub fn is_admitted(&self) -> bool {
        self.admitted
    }

    /// The close code sent or received, if any.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Whether only the final output and the drain remain.
    pub fn is_finishing(&self) -> bool {
        matches!(self.state, State::Finishing { .. })
    }

    /// Whether the connection waits for a request head (its first, or the
    /// next on a kept-alive `POST /publish` connection).
    pub fn is_awaiting_request(&self) -> bool {
        matches!(self.state, State::Request { .. })
    }

    /// Whether the connection is an open WebSocket.
    pub fn is_open_websocket(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Feeds input; returns how many bytes from the front were consumed
    /// (the rest is an incomplete request head or frame, to be fed again
    /// with more bytes appended).
    pub fn on_input(&mut self, input: &mut [u8], cx: &mut Context<'_>) -> usize {
        self.unanswered_ping = None;
        let mut consumed = 0;
        loop {
            let step = match &mut self.state {
                State::Request { reader, deadline } => {
                    let deadline = *deadline;
                    match reader.parse(&input[consumed..], cx.config.limits.max_header_bytes) {
                        Ok(Some((request, head_len))) => {
                            let outcome = route(&request, self.port, self.peer_ip, cx);
                            consumed += head_len;
                            self.after_request(outcome, &request, deadline, cx);
                            continue;
                        }
                        Ok(None) => return consumed,
                        Err(error) => {
                            let code = error.code();
                            self.finish_http_error(code, error.message(), cx.now);
                            cx.reports.push(Report::Rejected { path: None, code });
                            return input.len();
                        }
                    }
                }
                State::Body(reader) => {
                    let rest = &mut input[consumed..];
                    match reader.read(rest) {
                        Ok(BodyRead::Incomplete(used)) => return consumed + used,
                        Ok(BodyRead::Complete(used)) => {
                            self.on_body(rest, used, cx);
                            consumed += used;
                            continue;
                        }
                        Err(error) => {
                            self.refuse_body(error, cx);
                            return input.len();
                        }
                    }
                }
                State::Publishing(results) => {
                    let body = cx.config.limits.max_message_size;
                    if pipelined_too_much(input.len() - consumed, body, cx.config) {
                        results.keep_alive = false;
                        return input.len();
                    }
                    return consumed;
                }
                State::Calling(calling) => {
                    let body = cx.config.limits.max_message_size.max(limits::MIN_API_BODY);
                    if pipelined_too_much(input.len() - consumed, body, cx.config) {
                        calling.keep_alive = false;
                        return input.len();
                    }
                    return consumed;
                }
                State::AwaitingClaims(waiting) => match waiting.decided.take() {
                    Some(decision) => {
                        self.on_connect_decision(decision, cx);
                        continue;
                    }
                    None => {
                        let waiting = input.len() - consumed;
                        if waiting > cx.config.limits.max_message_size {
                            self.finish_http_error(
                                ErrorCode::BadRequest,
                                "sent before the upgrade",
                                cx.now,
                            );
                            return input.len();
                        }
                        return consumed;
                    }
                },
                State::Open => {
                    let rest = &mut input[consumed..];
                    let Some(session) = self.session.as_mut() else {
                        return input.len();
                    };
                    on_frames(
                        session,
                        rest,
                        &mut self.out,
                        (self.wire.compresses(), self.wire.msgpack()),
                        cx,
                    )
                }
                State::Closing { .. } | State::Finishing { .. } => return input.len(),
            };
            consumed += step.consumed;
            match step.end {
                None => return consumed,
                Some(end) => {
                    self.end_websocket(end, cx.now, cx.config);
                    return input.len();
                }
            }
        }
    }

    /// The peer closed its write side. A `/publish` already with the rooms
    /// is still answered, and so are the requests pipelined behind it; the
    /// reactor drops the connection once that output is written.
    pub fn on_eof(&mut self, now: Instant) {
        let closing = matches!(self.state, State::Closing { .. });
        if !self.is_finishing() && !self.is_publishing() && !closing {
            self.state = State::Finishing {
                deadline: now + Duration::from_millis(limits::CLOSE_LINGER_MILLIS),
            };
        }
    }

    /// Heartbeats, token expiry and deadlines; called by the shard's sweep.
    pub fn on_tick(&mut self, now: Instant, unix_ms: u64, config: &Config) -> Tick {
        match &self.state {
            State::Request { deadline, .. } if now >= *deadline => {
                return Tick::Abort(AbortReason::RequestTimeout);
            }
            State::Body(reader) if now >= reader.deadline() => {
                return Tick::Abort(AbortReason::RequestTimeout);
            }
            State::AwaitingClaims(waiting) if now >= waiting.deadline => {
                return Tick::Abort(AbortReason::RequestTimeout);
            }
            State::Closing { deadline } if now >= *deadline => {
                // The answers did not come in time; the close goes anyway.
                self.send_pending_close(now, config);
            }
            State::Finishing { deadline } if now >= *deadline => {
                // A client that has not yet read our last bytes (a slow
                // consumer's 4008) gets up to --drain-timeout more to read them.
                let flushing =
                    !self.out.is_empty() && now < *deadline + config.listen.drain_timeout;
                if !flushing {
                    return Tick::Abort(AbortReason::LingerTimeout);
                }
            }
            State::Open => {
                if let Some(sent) = self.unanswered_ping
                    && now.duration_since(sent) >= config.heartbeat.timeout
                {
                    return Tick::Abort(AbortReason::PingTimeout);
                }
                let expired = self
                    .session
                    .as_ref()
                    .is_some_and(|s| token_expired(&s.claims, unix_ms, config));
                if expired {
                    self.end_websocket(End::Close(close::TOKEN_EXPIRED), now, config);
                } else if now >= self.next_ping {
                    self.out.push_frame(OpCode::Ping, b"");
                    self.unanswered_ping.get_or_insert(now);
                    self.next_ping = now + config.heartbeat.interval;
                }
            }
            _ => {}
        }
        Tick::Keep
    }

    /// Shutdown: a WebSocket gets close 1001 after the output already queued.
    pub fn begin_shutdown(&mut self, now: Instant, config: &Config) {
        if self.is_open_websocket() {
            self.end_websocket(End::Close(close::GOING_AWAY), now, config);
        }
    }

    fn after_request(
        &mut self,
        outcome: RequestOutcome,
        request: &HttpRequest<'_>,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) {
        let (mut bytes, report) = match outcome {
            RequestOutcome::Upgraded(endpoint, accepted) => {
                self.open(endpoint, accepted, cx);
                cx.reports.push(Report::Opened(endpoint));
                return;
            }
            RequestOutcome::AwaitClaims(upgrade, body) => {
                // The slot is held: released on a refusal, or when the
                // connection is dropped meanwhile.
                self.admitted = true;
                self.state = State::AwaitingClaims(Box::new(AwaitingClaims {
                    upgrade,
                    deadline: cx.now + cx.config.hooks.timeout + CLAIMS_GRACE,
                    decided: None,
                }));
                cx.requests.push(Request::Connect { body });
                return;
            }
            // Reported once answered (`on_body`, `on_published`).
            RequestOutcome::Body(head) => return self.expect_body(*head, deadline, cx),
            RequestOutcome::Respond(bytes) => {
                let report = Report::answered(request, &bytes);
                (bytes, report)
            }
            RequestOutcome::Refused(rejection) => {
                let mut bytes = Vec::with_capacity(256);
                rejection.write_response(&mut bytes);
                cx.reports.extend(Report::upgrade_refused(rejection.code));
                (bytes, Report::rejected(request, rejection.code))
            }
            RequestOutcome::Reject(code, message, headers) => (
                routes::error_response(code, message, headers),
                Report::rejected(request, code),
            ),
        };
        // The one place every answer to a `HEAD` passes: none has a body.
        if request.method == "HEAD" {
            response::cut_body(&mut bytes);
        }
        self.out.push_raw(&bytes);
        self.finish(cx.now);
        cx.reports.extend(report);
    }

    /// Hands the connect proxy's decision to an upgrade waiting for it;
    /// the shard then feeds the connection (`on_input`) to carry it out.
    /// False when the connection is not waiting for one.
    pub fn decide_connect(&mut self, decision: ConnectDecision) -> bool {
        match &mut self.state {
            State::AwaitingClaims(waiting) => {
                waiting.decided = Some(decision);
                true
            }
            _ => false,
        }
    }

    fn on_connect_decision(&mut self, decision: ConnectDecision, cx: &mut Context<'_>) {
        let finished = State::Finishing {
            deadline: cx.now + Duration::from_millis(limits::CLOSE_LINGER_MILLIS),
        };
        let State::AwaitingClaims(waiting) = std::mem::replace(&mut self.state, finished) else {
            return;
        };
        match decision {
            ConnectDecision::Claims(claims) if !cx.draining => {
                self.open(Endpoint::Events, waiting.upgrade.with(claims), cx);
                cx.reports.push(Report::Opened(Endpoint::Events));
            }
            decision => {
                let (code, response) = match decision {
                    ConnectDecision::Refused { code, response } => (code, response),
                    ConnectDecision::Claims(_) => {
                        let mut bytes = Vec::with_capacity(128);
                        response::write_error(
                            &mut bytes,
                            ErrorCode::ServerBusy,
                            "shutting down",
                            &[],
                        );
                        (ErrorCode::ServerBusy, bytes)
                    }
                };
                cx.metrics.count_rejection(code);
                cx.admission.release(self.peer_ip);
                self.admitted = false;
                self.out.push_raw(&response);
                cx.reports.push(Report::UpgradeRefused(code));
                cx.reports.push(Report::Rejected {
                    path: Some("/ws".into()),
                    code,
                });
            }
        }
    }

    fn open(&mut self, endpoint: Endpoint, accepted: Accepted, cx: &mut Context<'_>) {
        self.admitted = true;
        self.wire = Wire::new(
            accepted.deflate.is_some_and(Deflate::compresses_out),
            endpoint == Endpoint::Events && accepted.msgpack(),
        );
        cx.metrics
            .count_open(cx.now.saturating_duration_since(self.accepted_at));
        cx.scratch.clear();
        accepted.write_response(cx.scratch);
        self.out.push_raw(cx.scratch);
        if endpoint == Endpoint::Events {
            cx.scratch.clear();
            proto::reply::established(
                cx.scratch,
                &self.conn_id(cx.issuer).to_string(),
                &accepted.claims.sub,
                cx.unix_ms,
                cx.config.heartbeat.interval.as_millis() as u64,
            );
            packed::push_message(&mut self.out, self.wire.msgpack(), cx.scratch);
            cx.metrics.messages_out.inc();
        }
        self.next_ping = cx.now + cx.config.heartbeat.interval;
        self.session = Some(Box::new(SessionState {
            rate: RateLimit::new(cx.config.limits.rate_burst, cx.now),
            claims: accepted.claims,
            rooms: Vec::new(),
            held_back: None,
            events: endpoint == Endpoint::Events,
            newly_opened: endpoint == Endpoint::Events,
            decoder: Decoder::new(cx.config.limits.max_message_size, true)
                .with_deflate(accepted.deflate.is_some()),
            awaiting: 0,
        }));
        self.state = State::Open;
    }

    fn finish_http_error(&mut self, code: ErrorCode, message: &str, now: Instant) {
        let mut bytes = Vec::with_capacity(256);
        response::write_error(&mut bytes, code, message, &[]);
        self.out.push_raw(&bytes);
        self.finish(now);
    }

    fn finish(&mut self, now: Instant) {
        self.state = State::Finishing {
            deadline: now + Duration::from_millis(limits::CLOSE_LINGER_MILLIS),
        };
    }

    /// Closes the WebSocket. Whatever the client asked for and the rooms
    /// still owe it an answer to is answered first (section 4: every valid
    /// `id` is acknowledged exactly once); only a slow consumer's queue is
    /// cut, as section 8 says.
    fn end_websocket(&mut self, end: End, now: Instant, config: &Config) {
        let code = match end {
            End::Close(code) => Some(code),
            End::Reply(code) => code,
            End::SlowConsumer => {
                self.out.discard_unstarted();
                return self.push_close(Some(close::SLOW_CONSUMER), now, config);
            }
        };
        if self.session.as_ref().is_some_and(|s| s.awaits_answers()) {
            self.close_code = code.or(Some(close::NO_STATUS));
            self.state = State::Closing {
                deadline: now + Duration::from_millis(limits::CLOSE_AWAIT_ANSWERS_MILLIS),
            };
        } else {
            self.push_close(code, now, config);
        }
    }

    /// The close `end_websocket` decided on, once its wait is over.
    fn send_pending_close(&mut self, now: Instant, config: &Config) {
        let code = self.close_code.filter(|&c| c != close::NO_STATUS);
        self.push_close(code, now, config);
    }

    /// Queues the close frame; the last output, written before the drain.
    fn push_close(&mut self, code: Option<u16>, now: Instant, config: &Config) {
        let reason = code.map(close::reason);
        self.push_close_with(code.zip(reason), now, config);
    }

    /// Queues the close frame with `code` and `reason` (none: an empty
    /// close), the last output.
    pub(super) fn push_close_with(
        &mut self,
        frame: Option<(u16, &str)>,
        now: Instant,
        config: &Config,
    ) {
        let code = frame.map(|(code, _)| code);
        match frame {
            Some((code, reason)) => self.out.push_close(code, reason),
            None => self.out.push_frame(OpCode::Close, b""),
        }
        self.close_code = code.or(Some(close::NO_STATUS));
        let linger = if code == Some(close::GOING_AWAY) {
            config.listen.drain_timeout
        } else {
            Duration::from_millis(limits::CLOSE_LINGER_MILLIS)
        };
        self.state = State::Finishing {
            deadline: now + linger,
        };
    }
}

/// A client may pipeline requests behind one the rooms are answering, but
/// not without bound: past a request head and a body, the rest is dropped
/// and the connection closes after the answer.
fn pipelined_too_much(waiting: usize, body: usize, config: &Config) -> bool {
    waiting > config.limits.max_header_bytes + body
}

fn token_expired(claims: &Claims, unix_ms: u64, config: &Config) -> bool {
    let deadline = claims.exp + config.auth.leeway.as_secs_f64();
    unix_ms as f64 / 1000.0 >= deadline
}

#[cfg(test)]
mod tests;
