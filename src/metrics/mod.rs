//! What the server counts, and how the counts are read.
//!
//! Each shard owns one `ShardMetrics` and is the only thread that ever
//! writes to it; anyone may read it. That single-writer rule is what keeps
//! counting off the lock path and cheap: an increment is a relaxed load and
//! a relaxed store (plain moves on x86-64), not an atomic read-modify-write.
//! A scrape sums every shard's figures into a `Snapshot`
//! (`Snapshot::gather`), which `prometheus` and `stats` render.
//!
//! Sans-IO: no sockets and no clocks; callers pass durations in. Must not
//! decide anything: counts only.

mod hooks;
pub mod prometheus;
pub mod stats;

pub use hooks::{HOOK_BUCKETS_US, HOOK_FAILURE_REASONS, HookMetrics, HookSnapshot};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::codes::{ErrorCode, close};
use crate::tls::TlsFailure;

/// A count only its shard's thread increments.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard's thread may call this: a load and a
    /// store, not an atomic add, so two writers would lose counts.
    pub fn add(&self, n: u64) {
        let value = self.0.load(Ordering::Relaxed).wrapping_add(n);
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds one (owning thread only).
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value, from any thread.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level its shard's thread sets.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value (owning thread only).
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value, from any thread.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Buckets of a latency histogram with an upper bound (one more holds the rest).
pub const BOUNDED_BUCKETS: usize = 12;

/// Upper bounds of the handshake latency buckets, in microseconds.
pub const HANDSHAKE_BUCKETS_US: [u64; BOUNDED_BUCKETS] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, 5_000_000,
];

/// Upper bounds of the fan-out latency buckets, in microseconds.
pub const FANOUT_BUCKETS_US: [u64; BOUNDED_BUCKETS] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 100_000, 1_000_000,
];

/// Upper bounds of the Redis command latency buckets, in microseconds.
pub const REDIS_BUCKETS_US: [u64; BOUNDED_BUCKETS] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, 5_000_000,
];

/// Upper bounds of the Server API latency buckets, in microseconds: from
/// a call's body being read to its response being queued.
pub const API_BUCKETS_US: [u64; BOUNDED_BUCKETS] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000, 2_000_000, 10_000_000,
];

/// HTTP statuses Server API calls are counted under, one by one; any other
/// lands in one more slot.
pub const API_STATUSES: [u16; 8] = [200, 400, 401, 403, 404, 405, 413, 503];

/// Server API methods counted: each of `api::Method::ALL`, then one for a
/// path that names no method.
pub const API_METHODS: usize = crate::api::Method::ALL.len() + 1;

/// The label of the last `API_METHODS` slot: a path naming no method.
pub const API_UNKNOWN_METHOD: &str = "unknown";

/// The name a method slot is shown under.
pub fn api_method_label(index: usize) -> &'static str {
    crate::api::Method::ALL
        .get(index)
        .map_or(API_UNKNOWN_METHOD, |m| m.name())
}

/// What the Redis bridge counts (cluster mode only); written by the
/// bridge's thread alone.
#[derive(Debug)]
pub struct RedisMetrics {
    /// 1 while every Redis server is reachable.
    pub up: Gauge,
    /// Connections to a Redis server made again after one was lost.
    pub reconnects: Counter,
    /// Times a Sentinel named a master other than the one it named before.
    pub master_changes: Counter,
    /// Links dropped because Redis answered nothing within
    /// `--redis-timeout` (a command, a heartbeat `PING`, or the setup).
    pub timeouts: Counter,
    /// Commands written and not yet answered, over all servers.
    pub in_flight: Gauge,
    /// From queuing a command to reading its reply.
    pub command_latency: Histogram,
    /// Redis Cluster: commands sent again after `-MOVED` or `-ASK`.
    pub cluster_redirects: Counter,
    /// Redis Cluster: slot maps refused (out of shape or out of bounds).
    pub cluster_maps_refused: Counter,
}

impl Default for RedisMetrics {
    fn default() -> Self {
        Self {
            up: Gauge::default(),
            reconnects: Counter::default(),
            master_changes: Counter::default(),
            timeouts: Counter::default(),
            in_flight: Gauge::default(),
            command_latency: Histogram::new(&REDIS_BUCKETS_US),
            cluster_redirects: Counter::default(),
            cluster_maps_refused: Counter::default(),
        }
    }
}

/// The Redis figures of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisSnapshot {
    pub up: bool,
    pub reconnects: u64,
    pub master_changes: u64,
    pub timeouts: u64,
    pub in_flight: u64,
    pub command_latency: HistogramSnapshot,
    pub cluster_redirects: u64,
    pub cluster_maps_refused: u64,
}

impl RedisMetrics {
    pub fn snapshot(&self) -> RedisSnapshot {
        let mut command_latency = HistogramSnapshot::default();
        self.command_latency.add_to(&mut command_latency);
        RedisSnapshot {
            up: self.up.get() == 1,
            reconnects: self.reconnects.get(),
            master_changes: self.master_changes.get(),
            timeouts: self.timeouts.get(),
            in_flight: self.in_flight.get(),
            command_latency,
            cluster_redirects: self.cluster_redirects.get(),
            cluster_maps_refused: self.cluster_maps_refused.get(),
        }
    }
}

/// One of a shard's busiest rooms over its last sweep interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyRoom {
    pub room: std::sync::Arc<str>,
    /// Connections in the room on this process.
    pub members: u64,
    /// Messages published in the interval.
    pub messages: u64,
    /// The interval, in milliseconds.
    pub interval_ms: u64,
}

/// Rooms listed by `/stats` `rooms_top`.
pub const TOP_ROOMS: usize = 10;

/// A latency histogram with fixed buckets (cumulative only when rendered).
/// The counts live inline, inside the shard's cache-line-aligned metrics.
#[derive(Debug)]
pub struct Histogram {
    bounds_us: &'static [u64; BOUNDED_BUCKETS],
    /// One count per bound, plus one for everything above the last.
    buckets: [Counter; BOUNDED_BUCKETS + 1],
    sum_ns: Counter,
}

impl Histogram {
    /// An empty histogram over `bounds_us` (ascending).
    pub fn new(bounds_us: &'static [u64; BOUNDED_BUCKETS]) -> Self {
        Self {
            bounds_us,
            buckets: Default::default(),
            sum_ns: Counter::default(),
        }
    }

    /// Records one observation (owning thread only).
    pub fn observe(&self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let slot = self
            .bounds_us
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(self.bounds_us.len());
        if let Some(bucket) = self.buckets.get(slot) {
            bucket.inc();
        }
        self.sum_ns
            .add(elapsed.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    fn add_to(&self, into: &mut HistogramSnapshot) {
        if into.counts.len() < self.buckets.len() {
            into.counts.resize(self.buckets.len(), 0);
        }
        into.bounds_us = self.bounds_us;
        for (total, bucket) in into.counts.iter_mut().zip(&self.buckets) {
            *total += bucket.get();
        }
        into.sum_ns += self.sum_ns.get();
    }
}

/// Close codes counted one by one; any other lands in `other`.
pub const COUNTED_CLOSE_CODES: [u16; 13] = [
    close::NORMAL,
    close::GOING_AWAY,
    close::PROTOCOL_ERROR,
    close::UNSUPPORTED_DATA,
    close::NO_STATUS,
    close::ABNORMAL,
    close::INVALID_PAYLOAD,
    close::POLICY,
    close::TOO_BIG,
    close::INTERNAL,
    close::TOKEN_EXPIRED,
    close::RATE_LIMITED,
    close::SLOW_CONSUMER,
];

/// Everything one shard counts. Aligned to two cache lines so that the
/// shards' counters, which sit side by side in one slice, never share a
/// line (no false sharing between shard threads).
#[derive(Debug)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Open WebSocket connections on this shard.
    pub connections: Gauge,
    /// The busiest rooms this shard owns, as of its last sweep: written at
    /// the sweep and read by scrapes, never on the message path.
    pub busiest: parking_lot::Mutex<Vec<BusyRoom>>,
    /// WebSocket connections opened (upgrades completed).
    pub opened: Counter,
    /// WebSocket connections ended, per `COUNTED_CLOSE_CODES`, then other
    /// codes; an abort without a close handshake counts as 1006.
    pub closed: [Counter; COUNTED_CLOSE_CODES.len() + 1],
    /// WebSocket data messages received.
    pub messages_in: Counter,
    /// WebSocket data messages queued for clients (room events, replies,
    /// presence, direct messages).
    pub messages_out: Counter,
    /// Bytes read from sockets.
    pub bytes_in: Counter,
    /// Bytes written to sockets.
    pub bytes_out: Counter,
    /// Room events sequenced by this shard as their room's owner.
    pub publishes: Counter,
    /// Room events queued for a member on this shard.
    pub deliveries: Counter,
    /// Room events dropped for slow consumers (`--slow-consumer drop`).
    pub dropped: Counter,
    /// Room events replaced by a newer one (`--slow-consumer conflate`).
    pub conflated: Counter,
    /// Volatile events (section 14) this shard fanned out as their room's
    /// owner, or sent to Redis.
    pub volatile: Counter,
    /// Volatile events not queued for a member whose queue was above half
    /// its bound.
    pub volatile_dropped: Counter,
    /// Connections closed with 4008.
    pub slow_consumer_closes: Counter,
    /// Messages refused by the per-connection rate limit.
    pub rate_limited: Counter,
    /// Refused upgrades, by `ErrorCode::index`.
    pub handshake_rejections: [Counter; ErrorCode::ALL.len()],
    /// Connections aborted for not answering a ping.
    pub ping_timeouts: Counter,
    /// TLS handshakes completed.
    pub tls_handshakes: Counter,
    /// TLS handshakes that failed, per `TlsFailure`.
    pub tls_failures: [Counter; TlsFailure::ALL.len()],
    /// Sockets accepted that have not completed a request head yet.
    pub pre_request: Gauge,
    /// Sockets closed before their first request head to make room for
    /// newer ones (`reactor::pre_request`).
    pub pre_request_evicted: Counter,
    /// Output queued in user space, summed over connections at each sweep.
    pub write_buffer_bytes: Gauge,
    /// Rooms this shard owns.
    pub rooms: Gauge,
    /// Messages from other threads (room traffic batches, adopted sockets)
    /// waiting in this shard's inbox, sampled at each sweep: a shard that
    /// cannot keep up with its room traffic shows here first.
    pub inbox: Gauge,
    /// Times the shard stopped reading its client sockets because another
    /// shard was too far behind on the room traffic it sent it.
    pub read_pauses: Counter,
    /// CPU time (user + system) the shard's thread has used, read from the
    /// kernel at each sweep rather than timed per event-loop turn, which
    /// would cost two clock reads per turn.
    pub busy_ns: Gauge,
    /// Share of the last sweep interval the thread was on a CPU, in millionths.
    pub busy_ppm: Gauge,
    /// From accepting a socket to queuing its `101 Switching Protocols`.
    pub handshake_latency: Histogram,
    /// From reading a publish to queuing it for the last member on this shard.
    pub fanout_latency: Histogram,
    /// Server API calls answered here, per method (`API_METHODS`) and
    /// status (`API_STATUSES`, then other).
    pub api_calls: [[Counter; API_STATUSES.len() + 1]; API_METHODS],
    /// Server API latency per method, for the calls whose body was read.
    pub api_latency: [Histogram; API_METHODS],
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self {
            connections: Gauge::default(),
            busiest: parking_lot::Mutex::new(Vec::new()),
            opened: Counter::default(),
            closed: Default::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            publishes: Counter::default(),
            deliveries: Counter::default(),
            dropped: Counter::default(),
            conflated: Counter::default(),
            volatile: Counter::default(),
            volatile_dropped: Counter::default(),
            slow_consumer_closes: Counter::default(),
            rate_limited: Counter::default(),
            handshake_rejections: Default::default(),
            ping_timeouts: Counter::default(),
            tls_handshakes: Counter::default(),
            tls_failures: Default::default(),
            pre_request: Gauge::default(),
            pre_request_evicted: Counter::default(),
            write_buffer_bytes: Gauge::default(),
            rooms: Gauge::default(),
            inbox: Gauge::default(),
            read_pauses: Counter::default(),
            busy_ns: Gauge::default(),
            busy_ppm: Gauge::default(),
            handshake_latency: Histogram::new(&HANDSHAKE_BUCKETS_US),
            fanout_latency: Histogram::new(&FANOUT_BUCKETS_US),
            api_calls: Default::default(),
            api_latency: std::array::from_fn(|_| Histogram::new(&API_BUCKETS_US)),
        }
    }
}

impl ShardMetrics {
    /// Counts a Server API call to method `method` (`Method::index`, or
    /// `API_METHODS - 1` for none) answered with `status` after `latency`
    /// (zero for a call refused before its body was read: not timed).
    pub fn count_api(&self, method: usize, status: u16, latency: Duration) {
        let method = method.min(API_METHODS - 1);
        let slot = API_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(API_STATUSES.len());
        self.api_calls[method][slot].inc();
        if !latency.is_zero() {
            self.api_latency[method].observe(latency);
        }
    }

    /// Counts a WebSocket connection opened `handshake` after its socket
    /// was accepted.
    pub fn count_open(&self, handshake: Duration) {
        self.opened.inc();
        self.connections.set(self.connections.get() + 1);
        self.handshake_latency.observe(handshake);
    }

    /// Counts a WebSocket connection that ended with `code`.
    pub fn count_close(&self, code: u16) {
        self.connections
            .set(self.connections.get().saturating_sub(1));
        let slot = COUNTED_CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(COUNTED_CLOSE_CODES.len());
        if let Some(counter) = self.closed.get(slot) {
            counter.inc();
        }
        if code == close::SLOW_CONSUMER {
            self.slow_consumer_closes.inc();
        }
    }

    /// Counts a refused upgrade.
    pub fn count_rejection(&self, code: ErrorCode) {
        if let Some(counter) = self.handshake_rejections.get(code.index()) {
            counter.inc();
        }
    }
}

/// The figures of one shard at a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardSnapshot {
    pub connections: u64,
    pub inbox: u64,
    pub read_pauses: u64,
    pub busy_seconds: f64,
    pub busy_ratio: f64,
}

/// A latency histogram summed over shards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds_us: &'static [u64],
    /// Per bucket (not cumulative), the last one above every bound.
    pub counts: Vec<u64>,
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The Server API figures of one method slot, summed over shards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiMethodSnapshot {
    /// `Method::name`, or `API_UNKNOWN_METHOD` for the last slot.
    pub method: &'static str,
    /// `(status, count)` for `API_STATUSES`, then `(0, other)`.
    pub calls: Vec<(u16, u64)>,
    /// Calls whose body was read; always empty for the unknown slot,
    /// whose calls are refused before any body.
    pub latency: HistogramSnapshot,
}

impl ApiMethodSnapshot {
    fn empty(index: usize) -> Self {
        Self {
            method: api_method_label(index),
            calls: API_STATUSES
                .iter()
                .map(|&s| (s, 0))
                .chain([(0, 0)])
                .collect(),
            latency: HistogramSnapshot::default(),
        }
    }

    /// Calls answered, whatever the status.
    pub fn total(&self) -> u64 {
        self.calls.iter().map(|(_, n)| n).sum()
    }
}

/// Every figure, summed over shards, as of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub connections: u64,
    pub users: u64,
    pub rooms: u64,
    pub opened: u64,
    /// `(code, count)` for `COUNTED_CLOSE_CODES`, then `(0, other)`.
    pub closed: Vec<(u16, u64)>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub publishes: u64,
    pub deliveries: u64,
    pub dropped: u64,
    pub conflated: u64,
    pub volatile: u64,
    pub volatile_dropped: u64,
    pub slow_consumer_closes: u64,
    pub rate_limited: u64,
    /// `(code, count)` for every code that can refuse an upgrade.
    pub handshake_rejections: Vec<(ErrorCode, u64)>,
    pub ping_timeouts: u64,
    pub tls_handshakes: u64,
    /// `(reason, count)` for every `TlsFailure`.
    pub tls_failures: Vec<(TlsFailure, u64)>,
    pub pre_request: u64,
    pub pre_request_evicted: u64,
    pub write_buffer_bytes: u64,
    pub handshake_latency: HistogramSnapshot,
    pub fanout_latency: HistogramSnapshot,
    pub shards: Vec<ShardSnapshot>,
    /// Server API calls, one entry per `API_METHODS` slot in order.
    pub api: Vec<ApiMethodSnapshot>,
    /// The busiest rooms over every shard, most messages first.
    pub busiest: Vec<BusyRoom>,
    /// Only in cluster mode (`--redis`).
    pub redis: Option<RedisSnapshot>,
    /// Only with a hook URL (`--rpc-proxy`, `--publish-proxy`).
    pub hooks: Option<HookSnapshot>,
}

/// The codes an upgrade can be refused with (`docs/protocol.md` section 2).
pub const REJECTION_CODES: [ErrorCode; 7] = [
    ErrorCode::BadRequest,
    ErrorCode::UnsupportedVersion,
    ErrorCode::OriginForbidden,
    ErrorCode::ServerBusy,
    ErrorCode::TooManyConnections,
    ErrorCode::Unauthenticated,
    ErrorCode::TokenExpired,
];

impl Snapshot {
    /// Sums every shard. `connections` and `users` are the process-wide
    /// counts kept by the admission registry.
    pub fn gather(shards: &[ShardMetrics], connections: u64, users: u64) -> Self {
        let mut snap = Snapshot {
            connections,
            users,
            closed: COUNTED_CLOSE_CODES
                .iter()
                .map(|&c| (c, 0))
                .chain([(0, 0)])
                .collect(),
            handshake_rejections: REJECTION_CODES.iter().map(|&c| (c, 0)).collect(),
            tls_failures: TlsFailure::ALL.iter().map(|&f| (f, 0)).collect(),
            api: (0..API_METHODS).map(ApiMethodSnapshot::empty).collect(),
            ..Default::default()
        };
        for shard in shards {
            snap.add_shard(shard);
            snap.busiest.extend(shard.busiest.lock().iter().cloned());
        }
        snap.busiest
            .sort_unstable_by(|a, b| b.messages.cmp(&a.messages).then(b.members.cmp(&a.members)));
        snap.busiest.truncate(TOP_ROOMS);
        snap
    }

    fn add_shard(&mut self, m: &ShardMetrics) {
        self.rooms += m.rooms.get();
        self.opened += m.opened.get();
        for (slot, counter) in self.closed.iter_mut().zip(&m.closed) {
            slot.1 += counter.get();
        }
        self.messages_in += m.messages_in.get();
        self.messages_out += m.messages_out.get();
        self.bytes_in += m.bytes_in.get();
        self.bytes_out += m.bytes_out.get();
        self.publishes += m.publishes.get();
        self.deliveries += m.deliveries.get();
        self.dropped += m.dropped.get();
        self.conflated += m.conflated.get();
        self.volatile += m.volatile.get();
        self.volatile_dropped += m.volatile_dropped.get();
        self.slow_consumer_closes += m.slow_consumer_closes.get();
        self.rate_limited += m.rate_limited.get();
        for (code, count) in &mut self.handshake_rejections {
            *count += m
                .handshake_rejections
                .get(code.index())
                .map_or(0, Counter::get);
        }
        self.ping_timeouts += m.ping_timeouts.get();
        self.tls_handshakes += m.tls_handshakes.get();
        for (failure, count) in &mut self.tls_failures {
            *count += m.tls_failures[failure.index()].get();
        }
        self.pre_request += m.pre_request.get();
        self.pre_request_evicted += m.pre_request_evicted.get();
        self.write_buffer_bytes += m.write_buffer_bytes.get();
        m.handshake_latency.add_to(&mut self.handshake_latency);
        m.fanout_latency.add_to(&mut self.fanout_latency);
        for ((method, calls), latency) in self.api.iter_mut().zip(&m.api_calls).zip(&m.api_latency)
        {
            for (slot, counter) in method.calls.iter_mut().zip(calls) {
                slot.1 += counter.get();
            }
            latency.add_to(&mut method.latency);
        }
        self.shards.push(ShardSnapshot {
            connections: m.connections.get(),
            inbox: m.inbox.get(),
            read_pauses: m.read_pauses.get(),
            busy_seconds: m.busy_ns.get() as f64 / 1e9,
            busy_ratio: m.busy_ppm.get() as f64 / 1e6,
        });
    }

    /// WebSocket connections closed, whatever the code.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_hold_their_values() {
        let m = ShardMetrics::default();
        m.messages_in.inc();
        m.messages_in.add(4);
        m.rooms.set(7);
        m.rooms.set(3);
        assert_eq!(m.messages_in.get(), 5);
        assert_eq!(m.rooms.get(), 3);
    }

    #[test]
    fn histogram_puts_each_observation_in_the_first_bucket_that_holds_it() {
        let h = Histogram::new(&FANOUT_BUCKETS_US);
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_micros(6));
        h.observe(Duration::from_secs(10));
        let mut snap = HistogramSnapshot::default();
        h.add_to(&mut snap);
        assert_eq!(snap.counts[0], 1);
        assert_eq!(snap.counts[1], 1);
        assert_eq!(*snap.counts.last().unwrap(), 1);
        assert_eq!(snap.count(), 3);
        assert_eq!(snap.sum_ns, 10_000_011_000);
    }

    #[test]
    fn snapshot_sums_shards() {
        let shards = [ShardMetrics::default(), ShardMetrics::default()];
        shards[0].count_close(close::NORMAL);
        shards[1].count_close(close::NORMAL);
        shards[1].count_close(close::SLOW_CONSUMER);
        shards[1].count_close(3999);
        shards[0].count_rejection(ErrorCode::Unauthenticated);
        shards[0].connections.set(2);
        shards[1].connections.set(5);
        shards[0].fanout_latency.observe(Duration::from_micros(1));
        shards[1].fanout_latency.observe(Duration::from_micros(1));
        let snap = Snapshot::gather(&shards, 7, 4);
        assert_eq!(snap.connections, 7);
        assert_eq!(snap.users, 4);
        assert_eq!(snap.closed[0], (close::NORMAL, 2));
        assert_eq!(snap.closed.last(), Some(&(0, 1)));
        assert_eq!(snap.closed_total(), 4);
        assert_eq!(snap.slow_consumer_closes, 1);
        let unauthenticated = snap
            .handshake_rejections
            .iter()
            .find(|(c, _)| *c == ErrorCode::Unauthenticated);
        assert_eq!(unauthenticated, Some(&(ErrorCode::Unauthenticated, 1)));
        assert_eq!(snap.shards.len(), 2);
        assert_eq!(snap.shards[1].connections, 5);
        assert_eq!(snap.fanout_latency.counts[0], 2);
    }

    #[test]
    fn snapshot_sums_api_calls_per_method_and_status() {
        use crate::api::Method;
        let shards = [ShardMetrics::default(), ShardMetrics::default()];
        let publish = Method::Publish.index();
        shards[0].count_api(publish, 200, Duration::from_micros(90));
        shards[1].count_api(publish, 200, Duration::from_millis(3));
        shards[1].count_api(publish, 400, Duration::ZERO);
        shards[0].count_api(Method::Batch.index(), 418, Duration::from_micros(1));
        shards[1].count_api(usize::MAX, 404, Duration::ZERO);
        let snap = Snapshot::gather(&shards, 0, 0);
        assert_eq!(snap.api.len(), API_METHODS);
        let names: Vec<_> = snap.api.iter().map(|a| a.method).collect();
        assert_eq!(names.first(), Some(&"publish"));
        assert_eq!(names.last(), Some(&API_UNKNOWN_METHOD));
        let publish = &snap.api[publish];
        assert_eq!(publish.calls[0], (200, 2));
        assert_eq!(publish.calls[1], (400, 1));
        assert_eq!(publish.total(), 3);
        // The refused call was not timed.
        assert_eq!(publish.latency.count(), 2);
        assert_eq!(publish.latency.counts[0], 1);
        assert_eq!(publish.latency.sum_ns, 3_090_000);
        let batch = &snap.api[Method::Batch.index()];
        assert_eq!(batch.calls.last(), Some(&(0, 1)));
        let unknown = snap.api.last().unwrap();
        assert_eq!(unknown.calls[4], (404, 1));
        assert_eq!(unknown.latency.count(), 0);
    }
}
