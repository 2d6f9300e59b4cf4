//! A load-generator thread: a mio `Poll` driving its share of the
//! connections through the run's phases (connect, measure, drain).
//!
//! The threads of one process share only the phase and a few counters
//! (atomics, read once a second for progress) and hand their histograms
//! and tallies back when they finish.

use std::io;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::client::bench::args::{BenchArgs, Payload, Scenario, Target};
use crate::client::bench::client::{self, Incoming};
use crate::client::bench::failure::{Failure, FailureCounts};
use crate::client::bench::last_delivery::LastDelivery;
use crate::client::bench::payload::{self, ID_PLACEHOLDER, Template};
use crate::client::bench::seqs::RoomSeqs;
use crate::client::bench::tls::{self, BenchStream};
use roomcast::auth::{self, Claims};
use roomcast::ws::deflate::Inflater;
use roomcast::ws::frame::OpCode;

/// The phases of a run, shared by every thread of a process.
pub mod phase {
    pub const CONNECT: u8 = 0;
    pub const MEASURE: u8 = 1;
    pub const DRAIN: u8 = 2;
    pub const STOP: u8 = 3;
}

/// State shared by the threads of one worker process.
pub struct Shared {
    pub args: BenchArgs,
    pub phase: AtomicU8,
    /// Threads whose connections are all open (and joined).
    pub ready: AtomicUsize,
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    pub handshakes: AtomicU64,
    /// Latency so far, merged by each thread about once a second.
    pub latency: Mutex<Histogram<u64>>,
}

impl Shared {
    pub fn new(args: BenchArgs) -> Self {
        Self {
            args,
            phase: AtomicU8::new(phase::CONNECT),
            ready: AtomicUsize::new(0),
            connected: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
        }
    }
}

/// A histogram of microseconds, up to an hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// What one thread measured.
pub struct Tally {
    pub latency: Histogram<u64>,
    /// Room events acknowledged (roomcast) or sent (peers), per room.
    pub published: Vec<u64>,
    pub delivered: u64,
    pub out_of_order: u64,
    pub handshakes: u64,
    pub errors: FailureCounts,
    /// Bytes read off the sockets from the measured window on.
    pub bytes_read: u64,
    /// Deliveries that arrived compressed (permessage-deflate).
    pub compressed: u64,
    /// Reconnecting clients' joins answered `recovered: true`.
    pub recovered: u64,
    /// The idle scenario's messages: the latest delivery of each seen here.
    pub last_delivery: LastDelivery,
}

/// The most a compressed message may inflate to here: the largest server
/// message a run can see (`--size` is at most 1 MiB) with room for JSON.
const MAX_INFLATED: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Echo,
    /// A fan-out subscriber whose first room is `room`
    /// (`BenchArgs::rooms_of_subscriber`).
    Subscriber {
        room: usize,
    },
    Publisher {
        index: usize,
        room: usize,
    },
    /// A subscriber that tells the publisher at slab key `publisher` that
    /// its message to room `slot` of its rooms arrived.
    Probe {
        room: usize,
        publisher: usize,
        slot: usize,
    },
    Idle {
        room: usize,
    },
    Connector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    /// Open, waiting for a join ack or Socket.IO's `40`.
    Joining,
    Open,
    Closed,
}

struct Client {
    stream: BenchStream,
    role: Role,
    state: State,
    input: Vec<u8>,
    out: Vec<u8>,
    writable: bool,
    opened_at: Instant,
    /// The upgrade request is written out (told apart from a connect that
    /// never completed when the handshake times out).
    request_sent: bool,
    /// The server's close frame, once one came.
    closed_by: Option<Failure>,
    /// Join acks still to come before the client is open.
    acks_due: usize,
    /// Upgraded: counted in `Shared::connected` until it is dropped.
    upgraded: bool,
    /// The idle scenario's publisher: messages sent into the --rooms, and
    /// into the common room.
    room_sent: u64,
    common_sent: u64,
    /// Messages sent per slot of `templates` and not answered yet: an
    /// echo's reply, or a probed publisher's arrival at the room's probe.
    /// Empty for a client paced by `--rate` or sending nothing.
    in_flight: Vec<usize>,
    sent: u64,
    /// The rooms a subscriber joins, and its order check in each.
    seqs: RoomSeqs,
    /// The client's index in the run (its token's `sub` is `bench-<global>`).
    global: usize,
    /// Idle with `--reconnect-rate`: the last `seq` seen in the common room.
    common_seq: u64,
    /// A reconnection: its joins recover from `seqs` and `common_seq`.
    recovering: bool,
    /// Raw peers: the last counter seen per publisher.
    last_counter: Vec<(u32, u64)>,
    /// What this client sends, in turn: (room, pre-encoded message).
    templates: Vec<(usize, Arc<Template>)>,
}

impl Client {
    /// A client whose upgrade request for `path` is queued, offering
    /// permessage-deflate when `deflate` and `roomcast.msgpack` when
    /// `msgpack`.
    fn new(
        stream: BenchStream,
        role: Role,
        path: &str,
        host: &str,
        (deflate, msgpack): (bool, bool),
    ) -> Self {
        Self {
            stream,
            role,
            state: State::Handshaking,
            input: Vec::new(),
            out: client::upgrade_request(path, host, deflate, msgpack),
            writable: true,
            opened_at: Instant::now(),
            request_sent: false,
            closed_by: None,
            acks_due: 1,
            upgraded: false,
            room_sent: 0,
            common_sent: 0,
            in_flight: Vec::new(),
            sent: 0,
            seqs: RoomSeqs::default(),
            global: 0,
            common_seq: 0,
            recovering: false,
            last_counter: Vec::new(),
            templates: Vec::new(),
        }
    }
}

/// Runs one thread's share: the global client indexes `mine`.
pub fn run(shared: &Shared, mine: Vec<usize>) -> io::Result<Tally> {
    let mut worker = Worker::new(shared, mine)?;
    worker.run()?;
    worker.merge_progress();
    Ok(worker.tally)
}

struct Worker<'a> {
    shared: &'a Shared,
    args: &'a BenchArgs,
    poll: Poll,
    clients: Slab<Client>,
    /// Global indexes not connected yet.
    pending: Vec<usize>,
    tally: Tally,
    ready_reported: bool,
    last_merge: Instant,
    measure_start: Option<Instant>,
    last_delivery: Instant,
    total_started: usize,
    /// `--tls`: the configuration of every client session.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Inflates compressed server messages, one at a time, into `inflated`.
    inflater: Inflater,
    inflated: Vec<u8>,
    /// `--protocol msgpack`: a server message's MessagePack as JSON text,
    /// read by the same scenario code as a JSON client's.
    unpacked: Vec<u8>,
    /// `"room":"<common room>"`: how a delivery into it is told apart.
    common_marker: String,
    /// The idle scenario's publisher, when this thread has it.
    idle_publisher: Option<usize>,
    /// `--reconnect-rate`: each room's epoch, from the first join ack of
    /// it (the common room at index `--rooms`), for recovering joins.
    epochs: std::collections::HashMap<usize, Box<str>>,
    /// `--reconnect-rate`: the idle clients taken in turn, and how many
    /// reconnections were made.
    reconnect_order: Vec<usize>,
    reconnected: u64,
}

impl<'a> Worker<'a> {
    fn new(shared: &'a Shared, mut mine: Vec<usize>) -> io::Result<Self> {
        mine.reverse();
        if shared.args.scenario == Scenario::Connect {
            // Connections are made on demand during the measured window.
            mine.clear();
        }
        let args = &shared.args;
        Ok(Self {
            shared,
            args,
            poll: Poll::new()?,
            clients: Slab::new(),
            pending: mine,
            tally: Tally {
                latency: new_histogram(),
                published: vec![0; args.rooms],
                delivered: 0,
                out_of_order: 0,
                handshakes: 0,
                errors: FailureCounts::default(),
                bytes_read: 0,
                compressed: 0,
                recovered: 0,
                last_delivery: LastDelivery::default(),
            },
            ready_reported: false,
            last_merge: Instant::now(),
            measure_start: None,
            last_delivery: Instant::now(),
            total_started: 0,
            tls: args.tls.then(tls::client_config),
            inflater: Inflater::default(),
            inflated: Vec::new(),
            unpacked: Vec::new(),
            common_marker: args
                .common_room
                .as_ref()
                .map_or_else(String::new, |room| format!(r#""room":"{room}""#)),
            idle_publisher: None,
            epochs: std::collections::HashMap::new(),
            reconnect_order: Vec::new(),
            reconnected: 0,
        })
    }

    fn role_of(&self, global: usize) -> Role {
        let args = self.args;
        match args.scenario {
            Scenario::Echo => Role::Echo,
            Scenario::Idle if global < args.conns => Role::Idle {
                room: global % args.rooms,
            },
            Scenario::Idle => Role::Publisher { index: 0, room: 0 },
            Scenario::Connect => Role::Connector,
            Scenario::Fanout if global < args.conns => Role::Subscriber {
                room: args.rooms_of_subscriber(global).next().unwrap_or(0),
            },
            Scenario::Fanout => {
                let index = global - args.conns;
                Role::Publisher {
                    index,
                    room: index % args.rooms,
                }
            }
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let phase = self.shared.phase.load(Ordering::Acquire);
            if phase == phase::STOP {
                self.close_all();
                return Ok(());
            }
            self.start_connections(phase);
            self.report_ready();
            let timeout = if phase == phase::MEASURE {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(5)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                let key = event.token().0;
                if event.is_writable() {
                    self.flush(key);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(key, phase, now);
                }
            }
            if phase == phase::MEASURE {
                self.measure_start.get_or_insert(now);
                self.pace(now);
            }
            if now.duration_since(self.last_merge) >= Duration::from_millis(500) {
                self.merge_progress();
                self.expire_stalled(phase, now);
            }
        }
    }

    /// Keeps `--connect-window` handshakes in flight until every client is open.
    fn start_connections(&mut self, phase: u8) {
        let connecting = self.args.scenario == Scenario::Connect;
        if connecting && phase != phase::MEASURE {
            return;
        }
        // In flight until open: a client waiting for its join acks counts,
        // or a join storm outruns what Redis answers and the joins time out.
        let in_flight = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Handshaking | State::Joining))
            .count();
        let mut budget = self.args.connect_window.saturating_sub(in_flight);
        while budget > 0 {
            let global = if connecting {
                if self.args.count.is_some_and(|n| {
                    self.shared.handshakes.load(Ordering::Relaxed) + in_flight as u64 >= n
                }) || self.clients.len()
                    >= self.args.conns.div_ceil(self.args.thread_count()).max(1)
                {
                    return;
                }
                self.total_started
            } else {
                match self.pending.pop() {
                    Some(global) => global,
                    None => return,
                }
            };
            self.total_started += 1;
            if let Err(e) = self.connect(global) {
                let failure = Failure::of_io(&e);
                self.fail(failure);
                if failure == Failure::OutOfFiles {
                    return;
                }
            }
            budget -= 1;
        }
    }

    /// Opens client `global`; returns its key.
    fn connect(&mut self, global: usize) -> io::Result<usize> {
        let args = self.args;
        let role = self.role_of(global);
        let source = (!args.src_ips.is_empty()).then(|| args.src_ips[global % args.src_ips.len()]);
        let mut stream = self.open_socket(source)?;
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(
            stream.socket(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let path = request_path(args, role, global);
        let templates = templates_for(args, role);
        let probes: Vec<usize> = match role {
            Role::Publisher { .. } if args.probed() => templates.iter().map(|t| t.0).collect(),
            _ => Vec::new(),
        };
        let host = args.addr.to_string();
        let mut client = Client::new(
            stream,
            role,
            &path,
            &host,
            (args.compression, args.msgpack()),
        );
        let windowed = role == Role::Echo || !probes.is_empty();
        client.in_flight = if windowed {
            vec![0; templates.len()]
        } else {
            Vec::new()
        };
        client.templates = templates;
        client.seqs = rooms_joined(args, role, global);
        client.global = global;
        entry.insert(client);
        if args.scenario == Scenario::Idle && matches!(role, Role::Publisher { .. }) {
            self.idle_publisher = Some(key);
        }
        for (slot, room) in probes.into_iter().enumerate() {
            let probe = Role::Probe {
                room,
                publisher: key,
                slot,
            };
            self.connect_probe(probe, global, source)?;
        }
        Ok(key)
    }

    /// Opens a probe subscriber for the publisher that is client `global`.
    fn connect_probe(
        &mut self,
        role: Role,
        global: usize,
        source: Option<std::net::IpAddr>,
    ) -> io::Result<()> {
        let args = self.args;
        let mut stream = self.open_socket(source)?;
        let entry = self.clients.vacant_entry();
        self.poll.registry().register(
            stream.socket(),
            Token(entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let path = request_path(args, role, global);
        let host = args.addr.to_string();
        let mut client = Client::new(
            stream,
            role,
            &path,
            &host,
            (args.compression, args.msgpack()),
        );
        client.seqs = rooms_joined(args, role, global);
        entry.insert(client);
        Ok(())
    }

    /// A socket to the server, with a TLS session over it under `--tls`.
    fn open_socket(&self, source: Option<std::net::IpAddr>) -> io::Result<BenchStream> {
        let stream = roomcast::sys::connect_from(source, self.args.addr)?;
        stream.set_nodelay(true)?;
        let host = self.args.addr.ip().to_string();
        BenchStream::new(TcpStream::from_std(stream), self.tls.as_ref(), &host)
    }

    fn report_ready(&mut self) {
        if self.ready_reported || !self.pending.is_empty() {
            return;
        }
        let all_open = self
            .clients
            .iter()
            .all(|(_, c)| c.state == State::Open || c.state == State::Closed);
        if all_open {
            self.ready_reported = true;
            self.shared.ready.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn on_readable(&mut self, key: usize, phase: u8, now: Instant) {
        let mut buf = [0u8; 65536];
        loop {
            let Some(client) = self.clients.get_mut(key) else {
                return;
            };
            match client.stream.read(&mut buf) {
                Ok(0) => {
                    let failure = client.closed_by.unwrap_or(Failure::Eof);
                    self.drop_client(key, phase, failure);
                    return;
                }
                Ok(n) => {
                    if phase >= phase::MEASURE {
                        self.tally.bytes_read += n as u64;
                    }
                    client.input.extend_from_slice(&buf[..n]);
                    self.process_input(key, phase, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_client(key, phase, Failure::of_io(&e));
                    return;
                }
            }
        }
        self.flush(key);
    }

    fn process_input(&mut self, key: usize, phase: u8, now: Instant) {
        let target = self.args.target;
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let mut input = std::mem::take(&mut client.input);
        let mut used = 0;
        if client.state == State::Handshaking {
            let Some(head) = client::response_head(&input) else {
                client.input = input;
                return;
            };
            used = head.len;
            if !head.upgraded
                || (self.args.compression && !head.deflate)
                || (self.args.msgpack() && !head.msgpack)
            {
                // Refused, or compression or MessagePack asked for and not
                // agreed: the run would not measure what it says.
                let failure = match head.upgraded {
                    false => Failure::Http(head.status),
                    true => Failure::NotNegotiated,
                };
                self.drop_client(key, phase, failure);
                return;
            }
            self.on_open(key, now);
        }
        loop {
            let Some(client) = self.clients.get_mut(key) else {
                return;
            };
            let Some((len, incoming)) =
                client::next_message(&input[used..], target, &mut client.out)
            else {
                break;
            };
            let start = used;
            used += len;
            match incoming {
                // `input` is a local the handlers cannot touch, so they read
                // the payload in place: nothing is copied per message.
                Incoming::Data(range) => {
                    self.on_message(
                        key,
                        &input[start + range.start..start + range.end],
                        phase,
                        now,
                    );
                }
                Incoming::Compressed(range) => {
                    let deflated = &input[start + range.start..start + range.end];
                    self.on_compressed(key, deflated, phase, now);
                }
                Incoming::Ready => self.mark_open(key),
                Incoming::Closed(failure) => {
                    client.state = State::Closed;
                    client.closed_by = Some(failure);
                }
                Incoming::Other => {}
            }
        }
        input.drain(..used);
        if let Some(client) = self.clients.get_mut(key) {
            client.input = input;
        }
    }

    /// A compressed message: inflated into the worker's buffer, then
    /// handled like any other; one that does not inflate is an error.
    fn on_compressed(&mut self, key: usize, deflated: &[u8], phase: u8, now: Instant) {
        let mut inflated = std::mem::take(&mut self.inflated);
        inflated.clear();
        match self.inflater.inflate(deflated, MAX_INFLATED, &mut inflated) {
            Ok(()) => {
                self.tally.compressed += 1;
                self.on_message(key, &inflated, phase, now);
            }
            Err(_) => self.fail(Failure::BadMessage),
        }
        self.inflated = inflated;
    }

    /// A whole server message; with `--protocol msgpack` turned into the
    /// JSON text the scenarios read (one that is not MessagePack is an
    /// error).
    fn on_message(&mut self, key: usize, data: &[u8], phase: u8, now: Instant) {
        if !self.args.msgpack() {
            return self.on_data(key, data, phase, now);
        }
        let mut unpacked = std::mem::take(&mut self.unpacked);
        unpacked.clear();
        if roomcast::proto::msgpack::to_json(data, &mut unpacked).is_ok() {
            self.on_data(key, &unpacked, phase, now);
        } else {
            self.fail(Failure::BadMessage);
        }
        self.unpacked = unpacked;
    }

    fn on_open(&mut self, key: usize, now: Instant) {
        let args = self.args;
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        self.tally.handshakes += 1;
        self.shared.handshakes.fetch_add(1, Ordering::Relaxed);
        self.shared.connected.fetch_add(1, Ordering::Relaxed);
        client.upgraded = true;
        let joins = matches!(
            client.role,
            Role::Subscriber { .. } | Role::Probe { .. } | Role::Idle { .. }
        ) || (client.role == Role::Connector && args.churn);
        match (args.target, client.role) {
            (_, Role::Connector) if args.scenario == Scenario::Connect => {
                let micros = now.duration_since(client.opened_at).as_micros() as u64;
                let _ = self.tally.latency.record(micros.max(1));
                if args.churn && args.target == Target::Roomcast {
                    client.state = State::Joining;
                    client::message_frame(
                        br#"{"event":"room:join","data":{"room":"bench-churn"},"id":"j"}"#,
                        args.msgpack(),
                        &mut client.out,
                    );
                } else {
                    self.finish_connector(key);
                }
            }
            (Target::Socketio, _) => client.state = State::Joining,
            (
                Target::Roomcast,
                Role::Subscriber { .. } | Role::Probe { .. } | Role::Idle { .. },
            ) if joins => {
                client.state = State::Joining;
                let mut options = match (client.role, args.max_rate) {
                    (Role::Subscriber { .. }, Some(rate)) => format!(r#","maxRate":{rate}"#),
                    _ => String::new(),
                };
                if args.delta && matches!(client.role, Role::Subscriber { .. }) {
                    options.push_str(r#","delta":true"#);
                }
                client.acks_due = 0;
                for room in client.seqs.rooms() {
                    let since = since(
                        client.recovering,
                        &self.epochs,
                        room,
                        client.seqs.last(room),
                    );
                    let join = format!(
                        r#"{{"event":"room:join","data":{{"room":"bench-{room}"{options}{since}}},"id":"j"}}"#
                    );
                    client::message_frame(join.as_bytes(), args.msgpack(), &mut client.out);
                    client.acks_due += 1;
                }
                if let (Role::Idle { .. }, Some(common)) = (client.role, &args.common_room) {
                    let seq = Some(client.common_seq);
                    let since = since(client.recovering, &self.epochs, args.rooms, seq);
                    let join = format!(
                        r#"{{"event":"room:join","data":{{"room":"{common}"{since}}},"id":"c"}}"#
                    );
                    client::message_frame(join.as_bytes(), args.msgpack(), &mut client.out);
                    client.acks_due += 1;
                }
            }
            _ => client.state = State::Open,
        }
    }

    fn mark_open(&mut self, key: usize) {
        if let Some(client) = self.clients.get_mut(key) {
            client.state = State::Open;
        }
    }

    /// A connect-scenario connection is done: close it and let another start.
    fn finish_connector(&mut self, key: usize) {
        if let Some(mut client) = self.clients.try_remove(key) {
            let _ = self.poll.registry().deregister(client.stream.socket());
            let _ = roomcast::sys::reset_on_close(client.stream.socket());
        }
    }

    fn on_data(&mut self, key: usize, data: &[u8], phase: u8, now: Instant) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.state == State::Joining {
            if data.starts_with(br#"{"event":"ack""#)
                && payload::find(data, b"\"success\":false").is_some()
            {
                // A refused join (a full room, a cluster without Redis):
                // the client would never get its deliveries.
                return self.drop_client(key, phase, Failure::of_refused_join(data));
            }
            if data.starts_with(br#"{"event":"ack""#) {
                if client.role == Role::Connector {
                    if data.windows(9).any(|w| w == b"\"id\":\"j\"") {
                        client::message_frame(
                            br#"{"event":"room:leave","data":{"room":"bench-churn"},"id":"l"}"#,
                            self.args.msgpack(),
                            &mut client.out,
                        );
                        return;
                    }
                    self.finish_connector(key);
                    return;
                }
                // Open once every join is acknowledged, each bench room's
                // order check starting from its ack's `seq`.
                let seq = payload::number_after(data, b"\"seq\":").unwrap_or(0);
                let common = !self.common_marker.is_empty()
                    && payload::find(data, self.common_marker.as_bytes()).is_some();
                let room = match room_named(data) {
                    Some(room) => {
                        client.seqs.acked(room, seq);
                        Some(room)
                    }
                    None if common => {
                        client.common_seq = seq;
                        Some(self.args.rooms)
                    }
                    None => None,
                };
                let lost =
                    client.recovering && payload::find(data, b"\"recovered\":false").is_some();
                if client.recovering && payload::find(data, b"\"recovered\":true").is_some() {
                    self.tally.recovered += 1;
                }
                client.acks_due = client.acks_due.saturating_sub(1);
                if client.acks_due == 0 {
                    client.state = State::Open;
                }
                if self.args.reconnect_rate > 0.0
                    && let Some(room) = room
                    && let Some(epoch) = payload::string_after(data, b"\"epoch\":\"")
                {
                    self.epochs
                        .entry(room)
                        .or_insert_with(|| String::from_utf8_lossy(epoch).into());
                }
                if lost {
                    self.fail(Failure::NotRecovered);
                }
            }
            return;
        }
        match client.role {
            Role::Echo => {
                if let Some(n) = client.in_flight.first_mut() {
                    *n = n.saturating_sub(1);
                }
                self.count_delivery(data, now);
                if phase == phase::MEASURE {
                    self.send_message(key, 0);
                }
            }
            Role::Publisher { .. } => {
                if data.starts_with(br#"{"event":"ack""#) {
                    // The id is the slot of the message's room.
                    let slot = payload::number_after(data, b"\"id\":\"").unwrap_or(0) as usize;
                    let room = client.templates.get(slot).map_or(0, |t| t.0);
                    if data.windows(14).any(|w| w == b"\"success\":true") {
                        // The common room is not one of the --rooms.
                        if let Some(n) = self.tally.published.get_mut(room) {
                            *n += 1;
                        }
                    } else {
                        // Refused: it never reaches the probe.
                        if let Some(n) = client.in_flight.get_mut(slot) {
                            *n = n.saturating_sub(1);
                        }
                        self.fail(Failure::PublishRefused);
                    }
                }
            }
            Role::Subscriber { .. } | Role::Probe { .. } => {
                if self.args.target == Target::Roomcast
                    && !data.starts_with(br#"{"event":"bench:msg""#)
                {
                    return;
                }
                if let Role::Probe {
                    publisher, slot, ..
                } = client.role
                    && let Some(n) = self
                        .clients
                        .get_mut(publisher)
                        .and_then(|p| p.in_flight.get_mut(slot))
                {
                    *n = n.saturating_sub(1);
                }
                self.check_order(key, data);
                self.count_delivery(data, now);
            }
            Role::Idle { .. } => {
                if !data.starts_with(br#"{"event":"bench:msg""#) {
                    return;
                }
                self.count_delivery(data, now);
                if self.args.reconnect_rate > 0.0 {
                    self.note_seq(key, data);
                }
                if let Some(record) = payload::find_record(data) {
                    let common = payload::find(data, self.common_marker.as_bytes()).is_some();
                    let latency = payload::now_us().saturating_sub(record.time_us);
                    self.tally
                        .last_delivery
                        .note(record.counter, common, latency);
                }
            }
            Role::Connector => {}
        }
    }

    fn check_order(&mut self, key: usize, data: &[u8]) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if self.args.target == Target::Roomcast {
            let (Some(room), Some(seq)) =
                (room_named(data), payload::number_after(data, b"\"seq\":"))
            else {
                return;
            };
            if !client.seqs.arrived(room, seq) {
                self.tally.out_of_order += 1;
            }
            return;
        }
        let Some(record) = payload::find_record(data) else {
            return;
        };
        match client
            .last_counter
            .iter_mut()
            .find(|(p, _)| *p == record.publisher)
        {
            Some((_, last)) => {
                if record.counter <= *last {
                    self.tally.out_of_order += 1;
                }
                *last = (*last).max(record.counter);
            }
            None => client.last_counter.push((record.publisher, record.counter)),
        }
    }

    fn count_delivery(&mut self, data: &[u8], now: Instant) {
        self.tally.delivered += 1;
        self.shared.delivered.fetch_add(1, Ordering::Relaxed);
        self.last_delivery = now;
        if let Some(record) = payload::find_record(data) {
            let latency = payload::now_us().saturating_sub(record.time_us);
            let _ = self.tally.latency.record(latency.max(1));
        }
    }

    /// Sends what the scenario calls for during the measured window.
    fn pace(&mut self, now: Instant) {
        let args = self.args;
        let elapsed = now
            .duration_since(self.measure_start.unwrap_or(now))
            .as_secs_f64();
        if args.scenario == Scenario::Idle {
            self.pace_reconnects(elapsed);
            // Only the publisher sends (the others flush their pongs when
            // they read): 18,000 idle clients are not walked every turn.
            if let Some(key) = self.idle_publisher
                && self
                    .clients
                    .get(key)
                    .is_some_and(|c| c.state == State::Open)
            {
                self.pace_idle_publisher(key, elapsed);
            }
            return;
        }
        let count_reached = args
            .count
            .is_some_and(|n| self.shared.sent.load(Ordering::Relaxed) >= n);
        let keys: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.state == State::Open)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let Some(client) = self.clients.get(key) else {
                continue;
            };
            if count_reached {
                self.flush(key);
                continue;
            }
            if client.in_flight.is_empty() {
                // Paced by --rate: the rooms in turn.
                if matches!(client.role, Role::Publisher { .. }) {
                    let per_publisher = args.rate / args.publishers as f64;
                    let due = ((elapsed * per_publisher) as u64).saturating_sub(client.sent);
                    let rooms = client.templates.len().max(1);
                    let first = client.sent as usize;
                    for n in 0..due.min(1000) as usize {
                        self.send_message(key, (first + n) % rooms);
                    }
                }
            } else {
                // Keeping the window full, per slot.
                for slot in 0..client.in_flight.len() {
                    let busy = self
                        .clients
                        .get(key)
                        .map_or(args.window, |c| c.in_flight[slot]);
                    for _ in busy..args.window {
                        self.send_message(key, slot);
                    }
                }
            }
            self.flush(key);
        }
    }

    /// The idle scenario's publisher: `--rate` messages a second into the
    /// rooms in turn, and one into the common room every `--common-every`,
    /// the first at once.
    fn pace_idle_publisher(&mut self, key: usize, elapsed: f64) {
        let args = self.args;
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let due = ((elapsed * args.rate) as u64).saturating_sub(client.room_sent);
        let mut slots = Vec::new();
        for _ in 0..due.min(1000) {
            slots.push((client.room_sent % args.rooms as u64) as usize);
            client.room_sent += 1;
        }
        if let Some(every) = args.common_every {
            let due = (elapsed / every.as_secs_f64()) as u64 + 1;
            if client.common_sent < due {
                client.common_sent = due;
                slots.push(args.rooms);
            }
        }
        for slot in slots {
            self.send_message(key, slot);
        }
        self.flush(key);
    }

    /// An idle client's delivery: the last `seq` of its room, for a
    /// recovery when it reconnects.
    fn note_seq(&mut self, key: usize, data: &[u8]) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Some(seq) = payload::number_after(data, b"\"seq\":") else {
            return;
        };
        match room_named(data) {
            Some(room) => {
                client.seqs.arrived(room, seq);
            }
            None => client.common_seq = client.common_seq.max(seq),
        }
    }

    /// `--reconnect-rate`: that share of this thread's idle clients a
    /// second, taken in turn, close and connect again, recovering their
    /// rooms.
    fn pace_reconnects(&mut self, elapsed: f64) {
        let rate = self.args.reconnect_rate;
        if rate == 0.0 {
            return;
        }
        if self.reconnect_order.is_empty() {
            self.reconnect_order = self
                .clients
                .iter()
                .filter(|(_, c)| matches!(c.role, Role::Idle { .. }) && c.state == State::Open)
                .map(|(key, _)| key)
                .collect();
        }
        let clients = self.reconnect_order.len();
        if clients == 0 {
            return;
        }
        let due = (elapsed * rate * clients as f64) as u64;
        // At most 1,000 a turn, so that a stalled turn does not reconnect
        // in one burst what was due over seconds.
        let due = due.min(self.reconnected + 1000);
        while self.reconnected < due {
            let slot = (self.reconnected % clients as u64) as usize;
            self.reconnected += 1;
            let key = self.reconnect_order[slot];
            if let Some(new_key) = self.reconnect(key) {
                self.reconnect_order[slot] = new_key;
            }
        }
    }

    /// Closes open idle client `key` (a close frame, then the socket) and
    /// connects it again as a recovering client; returns its new key.
    fn reconnect(&mut self, key: usize) -> Option<usize> {
        let open_idle = self
            .clients
            .get(key)
            .is_some_and(|c| matches!(c.role, Role::Idle { .. }) && c.state == State::Open);
        if !open_idle {
            return None;
        }
        let mut old = self.clients.try_remove(key)?;
        let _ = self.poll.registry().deregister(old.stream.socket());
        client::close_frame(&mut old.out);
        let _ = old.stream.write(&old.out);
        let _ = old.stream.flush();
        if old.upgraded {
            self.shared.connected.fetch_sub(1, Ordering::Relaxed);
        }
        let (global, seqs, common_seq) = (old.global, old.seqs, old.common_seq);
        drop(old.stream);
        match self.connect(global) {
            Ok(new_key) => {
                let client = self.clients.get_mut(new_key)?;
                client.seqs = seqs;
                client.common_seq = common_seq;
                client.recovering = true;
                Some(new_key)
            }
            Err(e) => {
                self.fail(Failure::of_io(&e));
                None
            }
        }
    }

    /// Sends client `key` message number `sent + 1`, to the room of its
    /// `slot`.
    fn send_message(&mut self, key: usize, slot: usize) {
        if self
            .args
            .count
            .is_some_and(|n| self.shared.sent.load(Ordering::Relaxed) >= n)
        {
            return;
        }
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.templates.is_empty() {
            return;
        }
        let Some((room, template)) = client.templates.get(slot) else {
            return;
        };
        let room = *room;
        client.sent += 1;
        if let Some(n) = client.in_flight.get_mut(slot) {
            *n += 1;
        }
        template.write(&mut client.out, payload::now_us(), client.sent, slot as u64);
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        // Without an ack to count (a peer, or roomcast with --no-ack), a
        // message is published once sent.
        let unacked = self.args.target != Target::Roomcast || self.args.no_ack;
        if unacked && matches!(client.role, Role::Publisher { .. }) {
            self.tally.published[room] += 1;
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        loop {
            match client.stream.flush() {
                Ok(true) => {}
                Ok(false) => {
                    client.writable = false;
                    return;
                }
                Err(_) => {
                    client.state = State::Closed;
                    return;
                }
            }
            if client.out.is_empty() {
                client.request_sent = true;
                break;
            }
            match client.stream.write(&client.out) {
                Ok(0) => break,
                Ok(n) => {
                    client.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    client.writable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    client.state = State::Closed;
                    return;
                }
            }
        }
        client.writable = true;
    }

    /// Drops client `key` for `failure`, counted unless the run is past
    /// its measured window (the server may then close as it likes).
    fn drop_client(&mut self, key: usize, phase: u8, failure: Failure) {
        let Some(mut client) = self.clients.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(client.stream.socket());
        if phase < phase::DRAIN {
            self.fail(failure);
            // `connected` counts what is still open at the end of the window.
            if client.upgraded {
                self.shared.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn fail(&mut self, failure: Failure) {
        self.tally.errors.add(failure);
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops the clients not open (upgraded and joined) within
    /// `--connect-timeout` of their connect, by where they stood.
    fn expire_stalled(&mut self, phase: u8, now: Instant) {
        let limit = self.args.connect_timeout;
        let stalled: Vec<(usize, Failure)> = self
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.opened_at) > limit)
            .filter_map(|(key, c)| {
                let failure = match (c.state, c.request_sent) {
                    (State::Handshaking, false) => Failure::ConnectTimeout,
                    (State::Handshaking, true) => Failure::HandshakeTimeout,
                    (State::Joining, _) => Failure::AckTimeout,
                    _ => return None,
                };
                Some((key, failure))
            })
            .collect();
        for (key, failure) in stalled {
            self.drop_client(key, phase, failure);
        }
    }

    fn merge_progress(&mut self) {
        self.last_merge = Instant::now();
        if let Ok(mut shared) = self.shared.latency.lock() {
            let _ = shared.add(&self.tally.latency);
        }
        // The shared histogram now holds these; it is the one reported.
        self.tally.latency.reset();
    }

    fn close_all(&mut self) {
        for (_, client) in self.clients.iter_mut() {
            client::close_frame(&mut client.out);
            let _ = client.stream.write(&client.out);
            let _ = client.stream.flush();
        }
        self.clients.clear();
    }
}

/// The join fields of a recovering client in room `room` (section 7):
/// `since` its last `seq` there and the room's `epoch`; none for a first
/// join, or when the epoch is not known.
fn since(
    recovering: bool,
    epochs: &std::collections::HashMap<usize, Box<str>>,
    room: usize,
    seq: Option<u64>,
) -> String {
    match (recovering, epochs.get(&room), seq) {
        (true, Some(epoch), Some(seq)) => format!(r#","since":{seq},"epoch":"{epoch}""#),
        _ => String::new(),
    }
}

/// The rooms a client joins on a roomcast server: a subscriber's
/// `--rooms-per-sub`, one for a probe or an idle connection.
fn rooms_joined(args: &BenchArgs, role: Role, global: usize) -> RoomSeqs {
    match role {
        Role::Subscriber { .. } => RoomSeqs::new(args.rooms_of_subscriber(global)),
        Role::Probe { room, .. } | Role::Idle { room } => RoomSeqs::new([room]),
        _ => RoomSeqs::default(),
    }
}

/// The bench room a server message names (`"room":"bench-N"`, the first
/// `room` key: a room event's, or a join ack's `data`).
fn room_named(data: &[u8]) -> Option<usize> {
    payload::number_after(data, br#""room":"bench-"#).and_then(|n| usize::try_from(n).ok())
}

fn request_path(args: &BenchArgs, role: Role, global: usize) -> String {
    let room = match role {
        Role::Subscriber { room }
        | Role::Probe { room, .. }
        | Role::Idle { room }
        | Role::Publisher { room, .. } => room,
        _ => 0,
    };
    match args.target {
        Target::Roomcast => {
            let exp = (payload::now_us() / 1_000_000 + 24 * 3600) as f64;
            let claims = Claims {
                publish: matches!(role, Role::Publisher { .. }).then(|| {
                    let mut rooms = vec!["bench-*".into()];
                    rooms.extend(args.common_room.as_deref().map(Into::into));
                    rooms.into()
                }),
                rate: Some(0.0),
                ..Claims::new(format!("bench-{global}"), exp)
            };
            let token = auth::mint(&claims, args.jwt_secret.as_bytes());
            let path = if role == Role::Echo { "/echo" } else { "/ws" };
            format!("{path}?token={token}")
        }
        Target::Raw => match role {
            Role::Echo | Role::Connector => "/echo".to_owned(),
            _ => format!("/room/bench-{room}"),
        },
        Target::Socketio => format!("/socket.io/?EIO=4&transport=websocket&room=bench-{room}"),
    }
}

/// The messages a client sends, one per room it publishes to
/// (`BenchArgs::rooms_of_publisher`).
fn templates_for(args: &BenchArgs, role: Role) -> Vec<(usize, Arc<Template>)> {
    let rooms: Vec<usize> = match role {
        Role::Echo => vec![0],
        Role::Publisher { index, .. } => {
            let mut rooms = args.rooms_of_publisher(index);
            if args.scenario == Scenario::Idle && args.common_every.is_some() {
                rooms.push(args.common_room_index());
            }
            rooms
        }
        _ => return Vec::new(),
    };
    rooms
        .into_iter()
        .filter_map(|room| {
            let role = match role {
                Role::Publisher { index, .. } => Role::Publisher { index, room },
                other => other,
            };
            template_for(args, role).map(|t| (room, t))
        })
        .collect()
}

fn template_for(args: &BenchArgs, role: Role) -> Option<Arc<Template>> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let (publisher, room) = match role {
        Role::Echo => (0, 0),
        Role::Publisher { index, room } => (index as u32, room),
        _ => return None,
    };
    let record = payload::placeholder_record(publisher, args.size.max(payload::RECORD_LEN));
    let template = match (args.target, role) {
        (Target::Socketio, Role::Echo) => Template::new(
            OpCode::Text,
            format!(r#"42["echo","{record}"]"#).as_bytes(),
            mask,
        ),
        (_, Role::Echo) => Template::new(OpCode::Binary, record.as_bytes(), mask),
        (Target::Roomcast, _) => {
            let data = match args.payload {
                Payload::Padded => format!(r#""{record}""#),
                Payload::Prices => {
                    let record = payload::placeholder_record(publisher, 0);
                    payload::price_update(&record, args.size)
                }
            };
            let id = if args.no_ack {
                String::new()
            } else {
                format!(r#","id":"{ID_PLACEHOLDER}#""#)
            };
            let text = format!(
                r#"{{"event":"bench:msg","room":"{}","data":{data}{id}}}"#,
                args.room_name(room)
            );
            if args.msgpack() {
                Template::new(OpCode::Binary, &client::pack(text.as_bytes()), mask)
            } else {
                Template::new(OpCode::Text, text.as_bytes(), mask)
            }
        }
        (Target::Raw, _) => Template::new(OpCode::Binary, record.as_bytes(), mask),
        (Target::Socketio, _) => Template::new(
            OpCode::Text,
            format!(r#"42["msg","{record}"]"#).as_bytes(),
            mask,
        ),
    };
    Some(Arc::new(template))
}
