//! The reactor: threads, sockets and signals. The only module that uses mio.
//!
//! `Server::bind` opens the listener(s) and starts one shard thread per
//! `--shards` (see `shard`), plus, in hand-off mode, an acceptor thread
//! (see `accept`), with `--metrics-bind`, the operator thread that serves
//! that port's pages (see `operator`), in cluster mode, the Redis bridge (see `bridge`), and,
//! with any hook URL, the hooks client (`crate::hooks`, its shard side in
//! `hooks`).
//! Each shard runs its connections' state machines (`conn`) and its room
//! router (`rooms::Router`), and carries out what they return: bytes to
//! sockets, bus batches to other shards, requests to the bridge. `Server::run` waits for SIGTERM/SIGINT and runs the
//! graceful shutdown of `docs/protocol.md` section 8; SIGHUP reloads the
//! TLS certificate.
//!
//! How sockets reach shards (`--accept`): by default (`reuseport`) every
//! shard accepts on its own SO_REUSEPORT listener and the kernel spreads
//! connections by a hash of the peer's address and port; with `handoff` one
//! acceptor thread deals sockets round-robin over a crossbeam channel plus
//! each shard's mio `Waker`. Measured side by side (`perf/accept-modes.sh`,
//! figures in `perf/README.md`), reuseport costs about 15% less server CPU
//! per handshake — no extra thread, no channel hop, no wake-up per socket —
//! and spread 5,000 connections within 2.5% of even over two shards, while
//! hand-off's acceptor thread used about as much CPU as a shard. Hand-off
//! stays available for exact round-robin.

pub mod accept;
pub mod admission;
pub mod bridge;
mod buckets;
mod entry;
pub mod hooks;
mod lifecycle;
pub mod operator;
mod outlet;
mod pre_request;
pub mod refusals;
pub mod shard;
mod shared;
pub mod transport;

pub use shared::Shared;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use mio::net::TcpListener;
use mio::{Poll, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{AcceptMode, Config, ListenConfig};
use crate::hooks::HookHandle;
use crate::hooks::webhook::OutboxConfig;
use crate::hooks::webhook::thread::{self as webhook_thread, WebhookHandle};
use crate::redis::requests::{DirectMessage, RoomEvent, Unavailable};
use crate::redis::{self, History, Presence, Sequenced};
use crate::rooms::cluster::{BridgeAnswer, FromBridge};
use crate::{log_info, log_warn};
use bridge::{BridgeConfig, BridgeHandle, BridgeRequest, BridgeSink, WebhookFeed, WebhookRules};
use hooks::Hooked;
use shard::{Channels, Command, Handle, Listeners, Shard};

/// A running server.
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shards: Vec<Handle>,
    /// Cluster mode: the Redis bridge, stopped after the shards.
    bridge: Option<BridgeHandle<BridgeAnswer>>,
    /// Any hook URL given: the hooks client, stopped after the shards.
    hooks: Option<HookHandle<Hooked>>,
    /// The hooks client's thread, joined last.
    hooks_thread: Option<JoinHandle<()>>,
    /// `--webhook`: the webhooks thread, stopped once the shards are gone
    /// (so that what they noticed last is sent), before the hooks client.
    webhooks: Option<(WebhookHandle, JoinHandle<()>)>,
    threads: Vec<JoinHandle<()>>,
    acceptor_stop: Option<Arc<Waker>>,
    /// `--metrics-bind`: wakes the operator thread to stop.
    operator_stop: Option<Arc<Waker>>,
    drained: Receiver<usize>,
    /// Registered before the listener is announced, so a signal that comes
    /// right after start still shuts down gracefully.
    signals: Option<Signals>,
}

impl Server {
    /// Binds the listener(s) and starts the threads.
    pub fn bind(config: Config) -> io::Result<Self> {
        let signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let shared = Arc::new(Shared::new(config)?);
        let (drained_tx, drained) = crossbeam_channel::unbounded();
        let mode = shared.config.listen.accept_mode;
        let mut listeners = open_listeners(&shared.config.listen)?;
        let addr = listeners[0].local_addr()?;
        let metrics_listener = match shared.config.listen.metrics_bind {
            Some(bind) => Some(TcpListener::from_std(crate::sys::plain_listener(bind)?)),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };
        let mut threads = Vec::new();
        let (shards, parts) = shard_channels(shared.config.listen.shards)?;
        let webhooks = WebhookWiring::new(&shared);
        let bridge = start_bridge(&shared, &shards, webhooks.feed)?;
        let hooks = start_hooks(&shared, &shards, webhooks.thread)?;
        for (index, (poll, rx)) in parts.into_iter().enumerate() {
            let own_listeners = Listeners {
                public: match mode {
                    AcceptMode::ReusePort => Some(listeners.remove(0)),
                    AcceptMode::Handoff => None,
                },
            };
            let channels = Channels {
                commands: rx,
                drained: drained_tx.clone(),
                peers: shards.clone(),
                bridge: bridge.as_ref().map(|(handle, _)| handle.clone()),
                hooks: hooks.as_ref().map(|hooks| hooks.handle.clone()),
                webhooks: hooks
                    .as_ref()
                    .and_then(|hooks| hooks.webhooks.as_ref())
                    .map(|(handle, _)| handle.clone()),
            };
            let parts = (poll, own_listeners, shared.clone(), channels);
            threads.push(spawn_shard(index, parts)?);
        }
        let mut operator_stop = None;
        if let Some(listener) = metrics_listener {
            let (poll, stop) = operator::poll_with_stop()?;
            let operator =
                operator::Operator::new(listener, poll, shared.clone(), shards[0].clone())?;
            threads.push(
                std::thread::Builder::new()
                    .name("operator".into())
                    .spawn(move || operator.run())?,
            );
            operator_stop = Some(stop);
        }
        let mut acceptor_stop = None;
        if mode == AcceptMode::Handoff {
            let listener = listeners.remove(0);
            let (poll, stop) = accept::poll_with_stop()?;
            let handles = shards.clone();
            let pending = shared.handoff_pending.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("acceptor".into())
                    .spawn(move || accept::run(listener, poll, handles, pending))?,
            );
            acceptor_stop = Some(stop);
        }
        let bridge = bridge.map(|(handle, thread)| {
            threads.push(thread);
            handle
        });
        let (hooks, hooks_thread, webhooks) = match hooks {
            Some(started) => (Some(started.handle), Some(started.thread), started.webhooks),
            None => (None, None, None),
        };
        Ok(Self {
            addr,
            metrics_addr,
            shared,
            shards,
            bridge,
            hooks,
            hooks_thread,
            webhooks,
            threads,
            acceptor_stop,
            operator_stop,
            drained,
            signals: Some(signals),
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether `--demo` is on.
    pub fn demo(&self) -> bool {
        self.shared.config.web.demo
    }

    /// The secret tokens are signed with first (the demo signs its own).
    pub fn first_secret(&self) -> Option<&str> {
        self.shared.config.auth.secrets.first().map(String::as_str)
    }

    /// The bound `--metrics-bind` address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Serves until SIGTERM or SIGINT, then drains and stops.
    pub fn run_until_signalled(mut self) -> io::Result<()> {
        let mut signals = match self.signals.take() {
            Some(signals) => signals,
            None => Signals::new([SIGTERM, SIGINT, SIGHUP])?,
        };
        let (signal_tx, signal_rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal_tx.send(signal).is_err() {
                        return;
                    }
                }
            })?;
        while let Ok(signal) = signal_rx.recv() {
            if signal != SIGHUP {
                break;
            }
            self.reload_certificate();
        }
        log_info!(
            "shutting down: draining {} connections",
            self.shared.registry.connections()
        );
        self.drain(&signal_rx);
        self.stop();
        Ok(())
    }

    /// SIGHUP: new TLS handshakes get the certificate now in the files;
    /// established connections keep theirs.
    fn reload_certificate(&self) {
        let Some(acceptor) = &self.shared.tls else {
            log_info!("SIGHUP: no --tls-cert, nothing to reload");
            return;
        };
        match acceptor.reload() {
            Ok(()) => log_info!(
                "SIGHUP: certificate reloaded from {}",
                acceptor.files().cert.display()
            ),
            Err(e) => log_warn!("SIGHUP: certificate not reloaded, the old one stays: {e}"),
        }
    }

    /// Refuses new upgrades, closes every WebSocket with 1001 and waits
    /// until all are gone, `--drain-timeout` passes or a second signal comes.
    pub fn drain(&self, signals: &Receiver<i32>) {
        self.shared.registry.start_draining();
        for shard in &self.shards {
            shard.send(Command::Drain);
        }
        let deadline = std::time::Instant::now() + self.shared.config.listen.drain_timeout;
        let mut waiting = self.shards.len();
        while waiting > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            crossbeam_channel::select! {
                recv(self.drained) -> _ => waiting -= 1,
                recv(signals) -> _ => {
                    log_info!("second signal: cutting the drain short");
                    return;
                }
                default(left) => {
                    log_info!("drain timeout reached");
                    return;
                }
            }
        }
    }

    /// Stops every thread and waits for them.
    pub fn stop(self) {
        if self.webhooks.is_some() {
            self.count_out();
        }
        for shard in &self.shards {
            shard.send(Command::Stop);
        }
        for stop in [&self.acceptor_stop, &self.operator_stop]
            .into_iter()
            .flatten()
        {
            let _ = stop.wake();
        }
        if let Some(bridge) = &self.bridge {
            bridge.send(BridgeRequest::Stop);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        // The shards are gone: the webhooks thread sends what they noticed
        // last (bounded by --hook-timeout) through the hooks client, which
        // stops after it.
        if let Some((webhooks, thread)) = self.webhooks {
            webhooks.stop();
            let _ = thread.join();
        }
        if let Some(hooks) = &self.hooks {
            hooks.stop();
        }
        if let Some(thread) = self.hooks_thread {
            let _ = thread.join();
        }
    }
}

/// Longest a stop waits for the shards to count their last connections
/// out (`Server::count_out`).
const COUNT_OUT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Server {
    /// `--webhook`: connections the drain left are counted out of their
    /// rooms on every shard, and each shard has sent its bus messages,
    /// before any shard is told to stop: the owners take those (one hop)
    /// before their own `Stop`, so the last leaves and offlines are
    /// noticed and sent.
    fn count_out(&self) {
        let (done, counted) = crossbeam_channel::unbounded();
        for shard in &self.shards {
            shard.send(Command::CountOut(done.clone()));
        }
        let deadline = std::time::Instant::now() + COUNT_OUT_WAIT;
        for _ in 0..self.shards.len() {
            if counted.recv_deadline(deadline).is_err() {
                log_warn!("webhooks: a shard did not count its connections out in time");
                return;
            }
        }
    }
}

/// Every shard's poll and inbox, and the handles that reach them: every
/// shard needs every other's handle before any starts.
type ShardParts = (Vec<Handle>, Vec<(Poll, Receiver<Command>)>);

fn shard_channels(count: usize) -> io::Result<ShardParts> {
    let mut handles = Vec::new();
    let mut parts = Vec::new();
    for _ in 0..count {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), shard::WAKER)?);
        let (commands, inbox) = crossbeam_channel::unbounded();
        handles.push(Handle { commands, waker });
        parts.push((poll, inbox));
    }
    Ok((handles, parts))
}

/// `--webhook`: the webhooks thread's channel, made before the bridge and
/// the hooks client that reach it; in cluster mode the bridge feeds it
/// what it reads from Redis, and hears back how far that is done with.
struct WebhookWiring {
    feed: Option<WebhookFeed>,
    thread: Option<WebhookInputs>,
}

/// The webhooks thread's end of its channels.
struct WebhookInputs {
    handle: WebhookHandle,
    inputs: Receiver<webhook_thread::Input>,
    cursors: Option<crossbeam_channel::Sender<webhook_thread::Cursor>>,
}

impl WebhookWiring {
    fn new(shared: &Shared) -> Self {
        let group = &shared.config.hooks;
        if group.webhook.is_none() {
            return Self {
                feed: None,
                thread: None,
            };
        }
        let (handle, inputs) = webhook_thread::channel(group.webhook_types_set());
        let (feed, cursors) = if shared.config.cluster.is_some() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let feed = WebhookFeed {
                events: handle.clone(),
                cursors: rx,
            };
            (Some(feed), Some(tx))
        } else {
            (None, None)
        };
        Self {
            feed,
            thread: Some(WebhookInputs {
                handle,
                inputs,
                cursors,
            }),
        }
    }
}

/// Cluster mode: starts the Redis bridge, whose sink reaches every shard.
fn start_bridge(
    shared: &Arc<Shared>,
    shards: &[Handle],
    feed: Option<WebhookFeed>,
) -> io::Result<Option<(BridgeHandle<BridgeAnswer>, JoinHandle<()>)>> {
    let (Some(cluster), Some(metrics)) = (&shared.config.cluster, &shared.redis) else {
        return Ok(None);
    };
    let rooms = &shared.config.rooms;
    let tls =
        bridge::client_tls(cluster).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let config = BridgeConfig {
        cluster: cluster.clone(),
        history: rooms.history,
        presence: rooms.presence.clone(),
        webhooks: shared.config.hooks.webhook.as_ref().map(|_| WebhookRules {
            flags: redis::WebhookFlags {
                types: shared.config.hooks.webhook_types_set(),
                queue: shared.config.hooks.webhook_queue,
            },
            message_rooms: shared.config.hooks.webhook_rooms.clone(),
        }),
        tls,
    };
    let sink = ShardSink {
        shards: shards.to_vec(),
        shared: shared.clone(),
    };
    bridge::start(config, sink, metrics.clone(), feed).map(Some)
}

/// The hooks client and, with `--webhook`, the webhooks thread.
struct StartedHooks {
    handle: HookHandle<Hooked>,
    thread: JoinHandle<()>,
    webhooks: Option<(WebhookHandle, JoinHandle<()>)>,
}

/// Any hook URL given: starts the hooks client, whose sink reaches every
/// shard (and the webhooks thread, which it starts with `--webhook`). The
/// JWT secrets are final by now (a generated one included), so the
/// default signing key is known.
fn start_hooks(
    shared: &Arc<Shared>,
    shards: &[Handle],
    webhook: Option<WebhookInputs>,
) -> io::Result<Option<StartedHooks>> {
    let Some(metrics) = &shared.hooks else {
        return Ok(None);
    };
    let config = hooks::client_config(&shared.config)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let group = &shared.config.hooks;
    let webhook_url = hooks::urls(group).1.webhook;
    let sink = hooks::ShardHookSink {
        shards: shards.to_vec(),
        webhooks: webhook.as_ref().map(|w| w.handle.clone()),
    };
    let (handle, thread) = crate::hooks::client::start(config, sink, metrics.clone())?;
    let mut webhooks = None;
    if let (Some(webhook), Some(url_index)) = (webhook, webhook_url) {
        let outbox = OutboxConfig {
            node: format!(
                "{}{:x}",
                shared.config.node_id().unwrap_or_default(),
                shared.epoch_seed
            ),
            vacate_delay: group.webhook_vacate_delay,
            retry: group.webhook_retry,
            queue: group.webhook_queue,
        };
        let client = webhook_thread::Client {
            handle: handle.clone(),
            url_index,
            timeout: group.timeout,
            wrap: Hooked::Webhook,
        };
        let thread = webhook_thread::start(
            outbox,
            webhook.inputs,
            client,
            metrics.clone(),
            webhook.cursors,
        )?;
        webhooks = Some((webhook.handle, thread));
    }
    Ok(Some(StartedHooks {
        handle,
        thread,
        webhooks,
    }))
}

/// Starts shard `index` on its own thread and returns once it is built
/// (or with the error that kept it from being built). The shard is built
/// there, not here: its connections share frames through non-atomic
/// counts (`conn::shard_frame`), so a shard is not `Send`.
fn spawn_shard(
    index: usize,
    (poll, listeners, shared, channels): (Poll, Listeners, Arc<Shared>, Channels),
) -> io::Result<JoinHandle<()>> {
    let (built_tx, built) = crossbeam_channel::bounded(1);
    let thread = std::thread::Builder::new()
        .name(format!("shard-{index}"))
        .spawn(
            move || match Shard::new(index, poll, listeners, shared, channels) {
                Ok(shard) => {
                    let _ = built_tx.send(Ok(()));
                    shard.run();
                }
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                }
            },
        )?;
    built
        .recv()
        .map_err(|_| io::Error::other("a shard thread ended before it was built"))??;
    Ok(thread)
}

/// The public listeners: one in hand-off mode, one per shard otherwise.
fn open_listeners(config: &ListenConfig) -> io::Result<Vec<TcpListener>> {
    match config.accept_mode {
        AcceptMode::Handoff => {
            let listener = crate::sys::plain_listener(config.bind)?;
            Ok(vec![TcpListener::from_std(listener)])
        }
        AcceptMode::ReusePort => {
            let first = crate::sys::reuseport_listener(config.bind)?;
            let addr = first.local_addr()?;
            let mut listeners = vec![TcpListener::from_std(first)];
            for _ in 1..config.shards {
                listeners.push(TcpListener::from_std(crate::sys::reuseport_listener(addr)?));
            }
            Ok(listeners)
        }
    }
}

/// The bridge's sink: every result goes to the shard it is for, and the
/// live nodes to `Shared`.
struct ShardSink {
    shards: Vec<Handle>,
    shared: Arc<Shared>,
}

impl ShardSink {
    fn send(&self, shard: usize, message: FromBridge) {
        if let Some(handle) = self.shards.get(shard) {
            handle.send(Command::Bridge(message));
        }
    }
}

impl BridgeSink for ShardSink {
    type Answer = BridgeAnswer;

    fn sequenced(&self, answer: BridgeAnswer, outcome: Result<Sequenced, Unavailable>) {
        self.send(answer.shard(), FromBridge::Sequenced(answer, outcome));
    }

    fn joined(&self, answer: BridgeAnswer, outcome: Result<(History, u64), Unavailable>) {
        self.send(answer.shard(), FromBridge::Joined(answer, outcome));
    }

    fn presence(&self, answer: BridgeAnswer, outcome: Result<Presence, Unavailable>) {
        self.send(answer.shard(), FromBridge::Presence(answer, outcome));
    }

    fn room_read(&self, answer: BridgeAnswer, outcome: Result<Option<History>, Unavailable>) {
        self.send(answer.shard(), FromBridge::RoomRead(answer, outcome));
    }

    fn room_users(&self, answer: BridgeAnswer, outcome: Result<Vec<u64>, Unavailable>) {
        self.send(answer.shard(), FromBridge::RoomUsers(answer, outcome));
    }

    fn resync(&self) {
        for shard in 0..self.shards.len() {
            self.send(shard, FromBridge::Resync);
        }
    }

    fn sent(&self, answer: BridgeAnswer, outcome: Result<u64, Unavailable>) {
        self.send(answer.shard(), FromBridge::Sent(answer, outcome));
    }

    fn direct(&self, message: DirectMessage) {
        for shard in 0..self.shards.len() {
            self.send(shard, FromBridge::Direct(message.clone()));
        }
    }

    fn deliver(&self, shard: usize, event: RoomEvent) {
        self.send(shard, FromBridge::Event(event));
    }

    fn link(&self, up: bool) {
        if up {
            log_info!("redis: connected");
        } else {
            log_warn!("redis: unreachable; publishes are refused with UNAVAILABLE");
        }
    }

    /// Shard 0 reads every Server API message of the cluster for the node.
    fn api(&self, payload: Vec<u8>) {
        self.send(0, FromBridge::Api(payload));
    }

    fn live_nodes(&self, nodes: Arc<[Box<str>]>) {
        self.shared.set_live_nodes(nodes);
    }
}
