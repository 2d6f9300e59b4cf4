//! One shard: a thread that owns a mio `Poll` and every socket it was given,
//! in a slab, and runs their `Connection` state machines.
//!
//! Readiness contract (mio): events are edge-triggered, so a readable socket
//! is read until `WouldBlock` — or until its per-turn read budget is spent,
//! in which case it is put on the `again` list and read next turn without
//! waiting for a new event. The listener is treated alike: at most
//! `ACCEPT_BUDGET` sockets are accepted per turn, and if the backlog may hold
//! more the next turn accepts again without waiting, so a connection flood
//! cannot keep the loop from established connections. Wake-ups may be
//! spurious; readable and writable are the only readiness relied on. Everything a connection queued during
//! one turn is written at the end of the turn in one write (corked: `conn::cork`), and WRITABLE
//! interest is registered only while output is pending.
//!
//! Flow control between shards: room traffic goes over unbounded channels,
//! so a shard that reads its clients faster than another handles what it is
//! sent would queue without bound. Each shard counts, per destination, the
//! messages sent and not yet handled (`Shared::bus_pending`); while one
//! count is over `BUS_HIGH_WATER` the shard *holds back*: it reads no client
//! socket (readable events wait on the `again` list, so TCP pushes back on
//! the clients) and polls with a short timeout instead of spinning, until
//! every count is below half the mark. It never blocks: it keeps handling
//! its inbox, flushing output, sweeping and accepting, so two shards holding
//! back on each other both still drain theirs.
//!
//! Nothing here is shared with other shards except the `Shared` state, which
//! is read-only but for the admission counters touched at connect and close
//! and the bus counts above.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::codes::limits::{ACCEPT_BUDGET, BUS_HIGH_WATER, SEND_BUFFER_PER_BOUND};
use crate::conn::compression::Codec;
use crate::conn::id;
use crate::conn::report::Report;
use crate::conn::{AbortReason, Admission, ConnRef, Connection, Context, Port, Tick, pool};
use crate::hooks::webhook::Event;
use crate::hooks::webhook::thread::WebhookHandle;
use crate::hooks::{HookError, HookHandle, HookResponse};
use crate::proto::Request;
use crate::proto::envelope::Parser;
use crate::reactor::bridge::{BridgeHandle, BridgeRequest};
use crate::reactor::entry::{Entry, mark, write_pending, write_through};
use crate::reactor::hooks::{HookAnswer, Hooked, Proxies};
use crate::reactor::lifecycle::{self, Ending};
use crate::reactor::outlet::ShardOutlet;
use crate::reactor::pre_request::{self, PreRequest};
use crate::reactor::refusals;
use crate::reactor::shared::Shared;
use crate::reactor::transport::Transport;
use crate::rooms::bus::BusMsg;
use crate::rooms::cluster::{BridgeAnswer, ClusterSide, FromBridge};
use crate::rooms::notes::NoteRules;
use crate::rooms::{Router, RouterConfig, Time};
use crate::sys::unix_ms;
use crate::tls::TlsFailure;
use crate::{log_debug, log_warn, sys};

mod proxied;

/// The token of the shard's waker.
pub const WAKER: Token = Token(usize::MAX);
/// The token of the shard's own listener (SO_REUSEPORT mode).
const LISTENER: Token = Token(usize::MAX - 1);
/// Size of the shard's shared read buffer.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one connection per turn before others get their turn.
const READ_BUDGET: usize = 256 * 1024;
/// How long a shard holding back waits for events before it looks at the
/// bus counts again: the shard it waits on does not wake it.
const HOLD_BACK_POLL: Duration = Duration::from_millis(1);

/// Messages to a shard from other threads; each send is followed by a wake.
pub enum Command {
    /// Take over a freshly accepted socket (hand-off mode).
    Adopt(TcpStream, SocketAddr),
    /// Take over a `--metrics-bind` connection whose request the operator
    /// thread does not serve (the Server API, a malformed head), with the
    /// bytes it already read (shard 0 only).
    AdoptOperator(TcpStream, SocketAddr, Vec<u8>),
    /// Begin the graceful shutdown.
    Drain,
    /// The drain is over (`--webhook`): every connection still here is
    /// dropped and counted out of its rooms, the bus sent, and the sender
    /// told, so the rooms' owners notice the last leaves before they stop.
    CountOut(Sender<usize>),
    /// Exit the loop now.
    Stop,
    /// Room traffic from shard `from`, batched per turn.
    Bus { from: usize, messages: Vec<BusMsg> },
    /// From the Redis bridge (cluster mode).
    Bridge(FromBridge),
    /// A backend's answer to a proxy request, or why there is none.
    Hook(HookAnswer, Result<HookResponse, HookError>),
}

/// The listeners a shard accepts on.
#[derive(Default)]
pub struct Listeners {
    /// Its own SO_REUSEPORT listener on the public port.
    pub public: Option<TcpListener>,
}

/// How a shard reaches other threads, and they it.
pub struct Channels {
    /// Its own inbox.
    pub commands: Receiver<Command>,
    /// Told once every connection is gone after `Command::Drain`.
    pub drained: Sender<usize>,
    /// Every shard, this one included, for room traffic.
    pub peers: Vec<Handle>,
    /// Cluster mode: the Redis bridge.
    pub bridge: Option<BridgeHandle<BridgeAnswer>>,
    /// Any hook URL given: the hooks client.
    pub hooks: Option<HookHandle<Hooked>>,
    /// `--webhook`: the webhooks thread, told what the rooms noticed.
    pub webhooks: Option<WebhookHandle>,
}

/// How other threads reach a shard.
#[derive(Clone)]
pub struct Handle {
    pub commands: Sender<Command>,
    pub waker: Arc<Waker>,
}

impl Handle {
    /// Sends a command and wakes the shard; false if the shard has exited.
    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok() && self.waker.wake().is_ok()
    }
}

pub struct Shard {
    index: usize,
    poll: Poll,
    conns: Slab<Entry>,
    commands: Receiver<Command>,
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
    parser: Parser,
    scratch: Vec<u8>,
    /// permessage-deflate for every connection here: one deflate and one
    /// inflate state per shard, none per connection.
    codec: Codec,
    read_buf: Vec<u8>,
    /// Connections with output queued this turn.
    dirty: Vec<usize>,
    /// Connections whose read budget ran out with input maybe left, and,
    /// while holding back, those that became readable.
    again: Vec<usize>,
    /// Not reading client sockets: another shard is too far behind on the
    /// room traffic this one sent it.
    holding_back: bool,
    /// The accept budget ran out with sockets maybe left in the backlog
    /// (or handed over, in hand-off mode).
    accept_again: bool,
    /// Hand-off mode: sockets the acceptor handed over, adopted
    /// `ACCEPT_BUDGET` a turn.
    handed_over: std::collections::VecDeque<(TcpStream, SocketAddr)>,
    /// The clock as read once when `poll` returned: the time of every
    /// input read in this turn (see `feed`).
    turn: Time,
    next_tick: Instant,
    tick: Duration,
    next_conn: u64,
    draining: bool,
    drained: Sender<usize>,
    reported_drained: bool,
    /// Every shard, this one included, for room traffic.
    peers: Vec<Handle>,
    /// The rooms as this shard sees them.
    router: Router,
    /// HTTP publishers answered by the rooms, whose pipelined requests are
    /// read next (`ShardOutlet::refeed`).
    refeed: Vec<usize>,
    requests: Vec<Request>,
    /// What connections reported during `feed`, for the lifecycle log.
    reports: Vec<Report>,
    /// The thread's CPU time as of the last sweep, for the busy ratio.
    busy_at_last_sweep: (Instant, u64),
    /// Sockets that have not sent a request yet, oldest first.
    pre_request: PreRequest,
    /// Cluster mode: the Redis bridge, which sequences rooms.
    bridge: Option<BridgeHandle<BridgeAnswer>>,
    /// The router's requests for the bridge on their way to it; empty
    /// between turns, its allocation kept.
    bridge_out: Vec<BridgeRequest<BridgeAnswer>>,
    /// Any proxy URL given: the requests that go to backends.
    proxies: Option<Proxies>,
    webhooks: Option<WebhookHandle>,
}

impl Shard {
    /// A shard ready to run; `listeners` are its own public one in
    /// SO_REUSEPORT mode (the `--metrics-bind` one is the operator
    /// thread's, `reactor::operator`).
    pub fn new(
        index: usize,
        poll: Poll,
        listeners: Listeners,
        shared: Arc<Shared>,
        channels: Channels,
    ) -> io::Result<Self> {
        let Listeners { mut public } = listeners;
        let Channels {
            commands,
            drained,
            peers,
            bridge,
            hooks,
            webhooks,
        } = channels;
        let proxies = match (hooks, &shared.hooks) {
            (Some(handle), Some(metrics)) => {
                Some(Proxies::new(handle, &shared.config.hooks, metrics.clone()))
            }
            _ => None,
        };
        let pre_request = PreRequest::new(pre_request::limit_per_shard(
            shared.config.limits.max_connections,
            shared.config.listen.shards,
        ));
        if let Some(listener) = public.as_mut() {
            poll.registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        let tick = tick_interval(&shared.config);
        let router = Router::new(router_config(&shared, index, peers.len(), bridge.is_some()));
        Ok(Self {
            peers,
            router,
            refeed: Vec::new(),
            requests: Vec::new(),
            reports: Vec::new(),
            index,
            poll,
            conns: Slab::new(),
            commands,
            listener: public,
            shared,
            parser: Parser::default(),
            scratch: Vec::with_capacity(1024),
            codec: Codec::default(),
            read_buf: vec![0; READ_CHUNK],
            dirty: Vec::new(),
            again: Vec::new(),
            holding_back: false,
            accept_again: false,
            handed_over: std::collections::VecDeque::new(),
            turn: Time {
                now: Instant::now(),
                unix_ms: unix_ms(),
            },
            next_tick: Instant::now() + tick,
            tick,
            next_conn: 0,
            draining: false,
            drained,
            reported_drained: false,
            busy_at_last_sweep: (Instant::now(), 0),
            pre_request,
            bridge,
            bridge_out: Vec::new(),
            proxies,
            webhooks,
        })
    }

    /// Runs the event loop until `Command::Stop`.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let holding_back = self.update_holding_back();
            // A Server API call waiting for other nodes is answered at its
            // deadline, and a paced member's held-back event sent at its
            // slot, not at the next sweep.
            let wake_at = [self.router.api_deadline(), self.router.next_slot()]
                .into_iter()
                .flatten()
                .fold(self.next_tick, Instant::min);
            let until_tick = wake_at.saturating_duration_since(Instant::now());
            let timeout = if self.accept_again {
                Duration::ZERO
            } else if holding_back {
                until_tick.min(HOLD_BACK_POLL)
            } else if self.again.is_empty() {
                until_tick
            } else {
                Duration::ZERO
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log_warn!("shard {}: poll failed: {error}", self.index);
                return;
            }
            self.turn = self.time();
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        if !self.on_commands() {
                            return;
                        }
                    }
                    LISTENER => self.accept_all(),
                    Token(key) => {
                        if holding_back {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                self.read_again(key);
                            }
                        } else if event.is_read_closed() || event.is_error() {
                            self.on_readable(key, true);
                        } else if event.is_readable() {
                            self.on_readable(key, false);
                        }
                        if event.is_writable() {
                            if let Some(entry) = self.conns.get_mut(key) {
                                entry.socket_full = false;
                            }
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            if !holding_back {
                for key in std::mem::take(&mut self.again) {
                    if let Some(entry) = self.conns.get_mut(key) {
                        entry.read_again = false;
                    }
                    self.on_readable(key, true);
                }
            }
            if std::mem::take(&mut self.accept_again) {
                self.accept_all();
            }
            self.adopt_handed_over();
            if Instant::now() >= self.next_tick {
                self.sweep();
            } else if self
                .router
                .api_deadline()
                .is_some_and(|d| Instant::now() >= d)
            {
                self.api_tick();
            }
            if self
                .router
                .next_slot()
                .is_some_and(|at| Instant::now() >= at)
            {
                self.send_due();
            }
            self.pump();
            self.flush_dirty();
            self.report_if_drained();
        }
    }

    /// Whether to hold back this turn: while some shard has more than
    /// `BUS_HIGH_WATER` of this one's messages unhandled, until all have
    /// fewer than half of it. Counts each pause.
    fn update_holding_back(&mut self) -> bool {
        let mark = if self.holding_back {
            BUS_HIGH_WATER / 2
        } else {
            BUS_HIGH_WATER
        };
        let behind = (0..self.peers.len()).any(|to| {
            to != self.index
                && self
                    .shared
                    .bus_pending(self.index, to)
                    .is_some_and(|pending| pending.load(Ordering::Relaxed) > mark)
        });
        if behind && !self.holding_back {
            self.metrics().read_pauses.inc();
        }
        self.holding_back = behind;
        behind
    }

    /// Puts a connection on the `again` list, once.
    fn read_again(&mut self, key: usize) {
        if let Some(entry) = self.conns.get_mut(key)
            && !entry.read_again
        {
            entry.read_again = true;
            self.again.push(key);
        }
    }

    /// This shard's counters.
    fn metrics(&self) -> &crate::metrics::ShardMetrics {
        &self.shared.metrics[self.index]
    }

    /// Handles queued commands; false when told to stop.
    fn on_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Adopt(stream, peer) => self.handed_over.push_back((stream, peer)),
                Command::AdoptOperator(stream, peer, input) => {
                    self.adopt_operator(stream, peer, input)
                }
                Command::Drain => self.begin_drain(),
                Command::CountOut(done) => {
                    let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
                    for key in keys {
                        // They did not finish the close in the drain's time.
                        self.remove(key, Ending::Aborted(AbortReason::LingerTimeout));
                    }
                    self.pump();
                    let _ = done.send(self.index);
                }
                Command::Stop => {
                    // What the rooms noticed in this last turn still goes
                    // to the webhooks thread, which flushes after the
                    // shards are gone.
                    self.settle_rooms();
                    self.send_notes();
                    return false;
                }
                Command::Hook(answer, outcome) => self.on_hook(answer, outcome),
                Command::Bridge(message) => {
                    let time = self.time();
                    let (router, mut out) = self.split();
                    router.on_bridge(message, time, &mut out);
                }
                Command::Bus { from, messages } => {
                    let count = messages.len();
                    let time = self.time();
                    let (router, mut out) = self.split();
                    for message in messages {
                        router.on_bus(message, time, &mut out);
                    }
                    if let Some(pending) = self.shared.bus_pending(from, self.index) {
                        pending.fetch_sub(count, Ordering::Relaxed);
                    }
                }
            }
        }
        true
    }

    /// Accepts up to `ACCEPT_BUDGET` sockets; the rest wait for the next
    /// turn (`accept_again`), after the connections already here are served.
    fn accept_all(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.adopt(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && self.evict_oldest_pre_request() =>
                {
                    // A descriptor is free again: the accept is retried.
                }
                Err(e) => {
                    // Out of file descriptors, most likely: the backlog is
                    // retried at the next sweep.
                    refusals::refused_with(refusals::of_accept_error(&e), &e.to_string());
                    return;
                }
            }
        }
        self.accept_again = true;
    }

    /// Adopts up to `ACCEPT_BUDGET` of the sockets the acceptor handed
    /// over; the rest wait for the next turn, like a backlog.
    fn adopt_handed_over(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let Some((stream, peer)) = self.handed_over.pop_front() else {
                return;
            };
            self.shared.handoff_pending.fetch_sub(1, Ordering::Relaxed);
            self.adopt(stream, peer);
        }
        if !self.handed_over.is_empty() {
            self.accept_again = true;
        }
    }

    /// Serves a `--metrics-bind` connection from the request head the
    /// operator thread read, as if it had been read here: the connection
    /// then goes on as any other on that port.
    fn adopt_operator(&mut self, stream: TcpStream, peer: SocketAddr, input: Vec<u8>) {
        let Some(key) = self.adopt_on(stream, peer, Port::Metrics) else {
            return;
        };
        if let Some(entry) = self.conns.get_mut(key) {
            entry.bytes.read += input.len() as u64;
            entry.input = input;
        }
        self.feed(key, 0);
        self.after_slice(key);
        self.mark_dirty(key);
    }

    fn adopt(&mut self, stream: TcpStream, peer: SocketAddr) {
        self.adopt_on(stream, peer, Port::Public);
    }

    /// Registers an accepted socket as a connection on `port`; its key,
    /// or `None` when it could not be set up (it is dropped then).
    fn adopt_on(&mut self, stream: TcpStream, peer: SocketAddr, port: Port) -> Option<usize> {
        if let Err(e) = prepare_socket(&stream, self.shared.config.backpressure.max_write_buffer) {
            log_debug!("shard {}: socket setup failed for {peer}: {e}", self.index);
            return None;
        }
        let id = id::raw(self.index, self.next_conn);
        self.next_conn += 1;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut io = match (&self.shared.tls, port) {
            (Some(acceptor), Port::Public) => match acceptor.session() {
                Ok(session) => Transport::tls(stream, session),
                Err(e) => {
                    log_warn!("shard {}: no TLS session for {peer}: {e}", self.index);
                    return None;
                }
            },
            _ => Transport::Plain(stream),
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(io.socket(), Token(key), Interest::READABLE)
        {
            log_warn!("shard {}: register failed: {e}", self.index);
            return None;
        }
        let conn = Connection::new(id, peer.ip(), Instant::now())
            .on_port(port)
            .with_request_timeout(self.shared.config.listen.handshake_timeout);
        entry.insert(Entry::accepted(io, conn));
        lifecycle::accepted(self.shared.issuer().id(id), peer, self.index);
        let waiting = self.pre_request.arrived(key, id);
        self.metrics().pre_request.set(waiting);
        if self.pre_request.over_limit() {
            self.evict_oldest_pre_request();
        }
        // The client may have written already; edge-triggered readiness
        // reports that on registration, so nothing more to do here.
        Some(key)
    }

    /// Reads and handles what the socket has. A read that returns less than
    /// the buffer means the socket was drained at that moment, and anything
    /// arriving later raises a new edge, so the extra read that would only
    /// say `WouldBlock` is skipped — unless the peer's FIN may already be
    /// queued behind the data (`until_would_block`), which must be seen.
    fn on_readable(&mut self, key: usize, until_would_block: bool) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(entry) = self.conns.get_mut(key) else {
                return;
            };
            if entry.peer_closed {
                return;
            }
            let read = entry.io.read(&mut self.read_buf);
            if entry.io.take_established() {
                self.shared.metrics[self.index].tls_handshakes.inc();
            }
            match read {
                Ok(0) => {
                    entry.peer_closed = true;
                    entry.conn.on_eof(Instant::now());
                    self.mark_dirty(key);
                    return;
                }
                Ok(n) => {
                    self.shared.metrics[self.index].bytes_in.add(n as u64);
                    entry.bytes.read += n as u64;
                    let short = n < self.read_buf.len() && entry.io.short_read_drains();
                    self.feed(key, n);
                    self.after_slice(key);
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.read_again(key);
                        self.mark_dirty(key);
                        return;
                    }
                    if short && !until_would_block {
                        self.mark_dirty(key);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.mark_dirty(key);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.remove(key, Ending::Reset);
                    return;
                }
            }
        }
    }

    /// Runs the connection over `n` new bytes in the shard's read buffer,
    /// at the turn's time: every input of a turn was in its socket when
    /// `poll` returned, so that is when it counts as read (the rate limit,
    /// deadlines, a publish's `read_at` for the fan-out latency), precise
    /// to one turn, and the clock is read once a turn rather than once a
    /// read.
    /// A connection with leftover input gets the bytes appended to its own
    /// buffer; otherwise they are handled where they are, and only an
    /// incomplete tail is copied out. `n = 0` runs it again over the input
    /// it holds (requests pipelined behind a `/publish`).
    pub(super) fn feed(&mut self, key: usize, n: usize) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        let mut cx = Context {
            config: &self.shared.config,
            keys: &self.shared.keys,
            admission: &self.shared.registry,
            observe: &*self.shared,
            metrics: &self.shared.metrics[self.index],
            parser: &mut self.parser,
            scratch: &mut self.scratch,
            codec: &mut self.codec,
            now: self.turn.now,
            unix_ms: self.turn.unix_ms,
            draining: self.shared.registry.is_draining(),
            issuer: self.shared.issuer(),
            requests: &mut self.requests,
            reports: &mut self.reports,
        };
        if entry.input.is_empty() {
            let fresh = &mut self.read_buf[..n];
            let consumed = entry.conn.on_input(fresh, &mut cx);
            if consumed < n {
                entry.input = pool::take(n - consumed);
                entry.input.extend_from_slice(&fresh[consumed..]);
            }
        } else {
            entry.input.extend_from_slice(&self.read_buf[..n]);
            let consumed = entry.conn.on_input(&mut entry.input, &mut cx);
            entry.input.drain(..consumed);
            if entry.input.is_empty() {
                pool::give(std::mem::take(&mut entry.input));
            }
        }
        if entry.pre_request && !entry.conn.is_awaiting_request() {
            entry.pre_request = false;
            let waiting = self.pre_request.left();
            self.shared.metrics[self.index].pre_request.set(waiting);
        }
        let now = cx.now;
        for report in self.reports.drain(..) {
            lifecycle::reported(&entry.conn, self.shared.issuer(), &report);
        }
        // Only a `/ws` connection is newly opened, and it has a user.
        if entry.conn.take_newly_opened()
            && let Some(user) = entry.conn.user_id()
        {
            self.router.opened(key, user);
            self.shared.registry.user_connected(user);
        }
        if !self.requests.is_empty() {
            self.route_requests(key, now);
        }
    }

    /// The router and this shard's connections, apart, for one router call.
    fn split(&mut self) -> (&mut Router, ShardOutlet<'_>) {
        let out = ShardOutlet {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            codec: &mut self.codec,
            config: &self.shared.config,
            issuer: self.shared.issuer(),
            metrics: &self.shared.metrics[self.index],
            refeed: &mut self.refeed,
            shared: &self.shared,
            shard: self.index,
        };
        (&mut self.router, out)
    }

    fn time(&self) -> Time {
        Time {
            now: Instant::now(),
            unix_ms: unix_ms(),
        }
    }

    /// Lets the router finish what this turn started here: the bus
    /// messages it sent this shard, the requests HTTP publishers pipelined
    /// behind an answered publish, and its requests for the bridge (those
    /// the bridge cannot take are answered as refused).
    fn settle_rooms(&mut self) {
        loop {
            if self.router.has_own_work() {
                let time = self.time();
                let (router, mut out) = self.split();
                router.run_own(time, &mut out);
            }
            let refused = self.send_bridge_requests();
            let any_refused = !refused.is_empty();
            for request in refused {
                let time = self.time();
                let (router, mut out) = self.split();
                router.bridge_refused(request, time, &mut out);
            }
            if self.refeed.is_empty() && !any_refused {
                return;
            }
            for key in std::mem::take(&mut self.refeed) {
                self.feed(key, 0);
            }
        }
    }

    /// Hands the router's requests to the bridge (cluster mode), through
    /// a buffer kept from turn to turn; returns those it could not take,
    /// the bridge having stopped.
    fn send_bridge_requests(&mut self) -> Vec<BridgeRequest<BridgeAnswer>> {
        let Some(bridge) = &self.bridge else {
            return Vec::new();
        };
        self.router.move_bridge_requests(&mut self.bridge_out);
        self.bridge_out
            .drain(..)
            .filter_map(|request| bridge.try_send(request).err())
            .collect()
    }

    /// Settles the rooms, then sends every other shard its batch with one
    /// wake-up each, counted in `Shared::bus_pending` for flow control
    /// (its own are never counted: they are handled here and then).
    fn pump(&mut self) {
        self.settle_rooms();
        self.send_notes();
        for shard in 0..self.peers.len() {
            if shard == self.index {
                continue;
            }
            let messages = self.router.take_outbox(shard);
            if messages.is_empty() {
                continue;
            }
            // Counted before it is sent, so the receiver never subtracts
            // what was not added yet.
            if let Some(pending) = self.shared.bus_pending(self.index, shard) {
                pending.fetch_add(messages.len(), Ordering::Relaxed);
            }
            self.peers[shard].send(Command::Bus {
                from: self.index,
                messages,
            });
        }
        let rooms = self.router.rooms_owned() as u64;
        self.metrics().rooms.set(rooms);
    }

    /// Hands what the rooms noticed to the webhooks thread, stamped now
    /// (within the turn they happened in).
    fn send_notes(&mut self) {
        let Some(webhooks) = &self.webhooks else {
            return;
        };
        let notes = self.router.take_notes();
        if notes.is_empty() {
            return;
        }
        let time = unix_ms();
        for what in notes {
            webhooks.notice(Event { what, time });
        }
    }

    /// Between two slices of one connection's input (`READ_CHUNK` each):
    /// the room traffic the slice started on this shard is fanned out now,
    /// and the connection's own replies are written once they pass half
    /// its bound, so a flooding client balloons no queue before the turn
    /// ends.
    fn after_slice(&mut self, key: usize) {
        self.settle_rooms();
        if let Some(entry) = self.conns.get_mut(key) {
            let metrics = &self.shared.metrics[self.index];
            write_through(entry, metrics, 0, &self.shared.config);
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(entry) = self.conns.get_mut(key) {
            mark(entry, &mut self.dirty, key);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            self.flush(key);
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Writes what the connection has queued in as few write calls as
    /// the socket accepts, then settles interest and the connection's end.
    fn flush(&mut self, key: usize) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        entry.queued_for_flush = false;
        let metrics = &self.shared.metrics[self.index];
        let mut written = write_pending(entry, metrics);
        if written.is_ok() && entry.conn.release_held_back(&self.shared.config) {
            written = write_pending(entry, metrics);
        }
        if written.is_err() {
            self.remove(key, Ending::Reset);
            return;
        }
        let pending = !entry.conn.outbound().is_empty() || entry.io.has_pending_output();
        if pending != entry.writable_interest {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(entry.io.socket(), Token(key), interest)
                .is_err()
            {
                self.remove(key, Ending::Reset);
                return;
            }
            entry.writable_interest = pending;
        }
        if pending {
            return;
        }
        if entry.conn.is_finishing() {
            if entry.peer_closed {
                self.remove(key, Ending::Finished);
                return;
            }
            if !entry.write_shut {
                entry.write_shut = true;
                entry.io.shutdown_write();
            }
        } else if entry.peer_closed && !entry.conn.is_publishing() {
            self.remove(key, Ending::Finished);
        }
    }

    /// The periodic sweep: heartbeats, token expiry and every deadline, for
    /// all connections at once (one timer per shard, not per connection).
    fn sweep(&mut self) {
        refusals::flush_held_back();
        let now = Instant::now();
        let unix_ms = unix_ms();
        self.next_tick = now + self.tick;
        let mut aborted = Vec::new();
        let mut queued_bytes = 0;
        for (key, entry) in self.conns.iter_mut() {
            match entry.conn.on_tick(now, unix_ms, &self.shared.config) {
                Tick::Abort(reason) => aborted.push((key, reason)),
                Tick::Keep => {
                    let pending = entry.conn.outbound().pending();
                    queued_bytes += pending as u64;
                    if pending > 0 {
                        mark(entry, &mut self.dirty, key);
                    }
                }
            }
        }
        for (key, reason) in aborted {
            if reason == AbortReason::PingTimeout {
                self.metrics().ping_timeouts.inc();
            }
            self.remove(key, Ending::Aborted(reason));
        }
        self.sample_gauges(now, queued_bytes);
        let conns = &self.conns;
        self.pre_request
            .compact(|key, id| is_pre_request(conns, key, id));
        if self.listener.is_some() {
            self.accept_all();
        }
        self.router.sweep(now);
        self.api_tick();
    }

    /// Paced members (`maxRate`) are sent the events they held back until
    /// this slot.
    fn send_due(&mut self) {
        let time = self.time();
        let (router, mut out) = self.split();
        router.send_due(time, &mut out);
    }

    /// Server API calls past their `--api-timeout` are answered.
    fn api_tick(&mut self) {
        let time = self.time();
        let (router, mut out) = self.split();
        router.api_tick(time, &mut out);
    }

    /// Levels sampled once per sweep: queued output and the busy ratio.
    fn sample_gauges(&mut self, now: Instant, queued_bytes: u64) {
        let metrics = &self.shared.metrics[self.index];
        metrics.write_buffer_bytes.set(queued_bytes);
        metrics.inbox.set(self.commands.len() as u64);
        let busy_ns = sys::thread_cpu_time().as_nanos() as u64;
        metrics.busy_ns.set(busy_ns);
        let (then, busy_then) = self.busy_at_last_sweep;
        let window = now.saturating_duration_since(then).as_nanos() as u64;
        let busy = busy_ns.saturating_sub(busy_then).saturating_mul(1_000_000);
        if let Some(ppm) = busy.checked_div(window) {
            metrics.busy_ppm.set(ppm.min(1_000_000));
        }
        self.busy_at_last_sweep = (now, busy_ns);
        let interval_ms = window / 1_000_000;
        let busiest = self
            .router
            .busiest(crate::metrics::TOP_ROOMS)
            .into_iter()
            .map(|(room, members, messages)| crate::metrics::BusyRoom {
                room,
                members,
                messages,
                interval_ms,
            })
            .collect();
        *self.shared.metrics[self.index].busiest.lock() = busiest;
    }

    /// Closes the oldest socket still without a request, to make room for
    /// a newer one; returns whether there was one.
    fn evict_oldest_pre_request(&mut self) -> bool {
        let conns = &self.conns;
        let oldest = self
            .pre_request
            .oldest(|key, id| is_pre_request(conns, key, id));
        let Some(key) = oldest else {
            return false;
        };
        self.metrics().pre_request_evicted.inc();
        refusals::refused(refusals::Refusal::Evicted);
        self.remove(key, Ending::Evicted);
        true
    }

    fn begin_drain(&mut self) {
        self.draining = true;
        let now = Instant::now();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(entry) = self.conns.get_mut(key) {
                entry.conn.begin_shutdown(now, &self.shared.config);
            }
            self.mark_dirty(key);
        }
    }

    fn report_if_drained(&mut self) {
        if !self.draining || self.reported_drained {
            return;
        }
        if self
            .conns
            .iter()
            .all(|(_, entry)| !entry.conn.is_admitted())
        {
            self.reported_drained = true;
            let _ = self.drained.send(self.index);
        }
    }

    fn remove(&mut self, key: usize, ending: Ending) {
        let Some(mut entry) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(entry.io.socket());
        if let Some(proxies) = self.proxies.as_mut() {
            proxies.forget(key);
        }
        self.count_tls_failure(&entry, ending);
        if entry.pre_request {
            let waiting = self.pre_request.left();
            self.metrics().pre_request.set(waiting);
        }
        if let Some(user) = entry.conn.user_id() {
            self.shared.registry.user_disconnected(user);
            let conn = ConnRef {
                shard: self.index,
                key,
                id: entry.conn.id(),
            };
            self.router.closed(conn, user, entry.conn.rooms());
        }
        if entry.conn.is_admitted() {
            self.shared.registry.release(entry.conn.peer_ip());
            let code = entry
                .conn
                .close_code()
                .unwrap_or(crate::codes::close::ABNORMAL);
            self.shared.metrics[self.index].count_close(code);
        }
        let issuer = self.shared.issuer();
        lifecycle::closed(&entry.conn, issuer, ending, entry.bytes, Instant::now());
        pool::give(entry.input);
    }
}

impl Shard {
    /// A TLS handshake that failed, or was still under way when the
    /// connection was dropped (by the request deadline, or the peer), is
    /// counted by why.
    fn count_tls_failure(&self, entry: &Entry, ending: Ending) {
        let failure = entry.io.failure().or_else(|| {
            let timed_out = ending == Ending::Aborted(AbortReason::RequestTimeout);
            (timed_out && entry.io.is_handshaking()).then_some(TlsFailure::Timeout)
        });
        if let Some(failure) = failure {
            self.metrics().tls_failures[failure.index()].inc();
        }
    }
}

/// What the router of shard `index` runs with.
fn router_config(shared: &Shared, index: usize, shards: usize, cluster: bool) -> RouterConfig {
    let node_id = shared.config.cluster.as_ref().map(|c| c.node_id.clone());
    let hooks = &shared.config.hooks;
    RouterConfig {
        shard: index,
        shards,
        rooms: shared.config.rooms.clone(),
        epoch_seed: shared.epoch_seed.wrapping_add(index as u64),
        cluster: cluster.then(|| ClusterSide {
            node_id: node_id.unwrap_or_default(),
            started: shared.started,
        }),
        // In cluster mode no node sees a room's or a user's first and last:
        // Redis records them and one node sends them (`bridge::webhooks`).
        notes: (!cluster && hooks.webhook.is_some()).then(|| NoteRules {
            types: hooks.webhook_types_set(),
            message_rooms: hooks.webhook_rooms.clone(),
        }),
    }
}

/// Whether slab `key` still holds connection `id`, without a request yet.
fn is_pre_request(conns: &Slab<Entry>, key: usize, id: u64) -> bool {
    conns
        .get(key)
        .is_some_and(|e| e.pre_request && e.conn.id() == id)
}

fn prepare_socket(stream: &TcpStream, max_write_buffer: usize) -> io::Result<()> {
    stream.set_nodelay(true)?;
    sys::cap_send_buffer(stream, SEND_BUFFER_PER_BOUND * max_write_buffer)
}

/// The sweep runs often enough to time heartbeats to a quarter of their
/// shortest period, and at least once a second for the other deadlines.
fn tick_interval(config: &crate::config::Config) -> Duration {
    let shortest = config.heartbeat.interval.min(config.heartbeat.timeout);
    (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}
