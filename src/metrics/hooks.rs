//! What the hooks client counts (`hooks::client`): written by the hooks
//! thread alone, but for `overloaded`, which the senders count because a
//! request refused for a full queue never reaches the thread, and
//! `unreadable`.
//!
//! `/metrics` and `/stats` show a `HookSnapshot` while the server runs a
//! hooks client (any hook URL given). `unreadable` is counted by the
//! shards, which read the proxies' answers.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{BOUNDED_BUCKETS, Counter, Gauge, Histogram, HistogramSnapshot};
use crate::hooks::HookError;

/// Upper bounds of the hook latency buckets, in microseconds: from the
/// hooks thread taking a request to its complete response. Backends answer
/// in milliseconds; `--hook-timeout` is 1 s by default, at most 60 s.
pub const HOOK_BUCKETS_US: [u64; BOUNDED_BUCKETS] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000,
];

/// Failure reasons counted, one slot each (`HookError::index`).
pub const HOOK_FAILURE_REASONS: usize = HookError::REASONS.len();

#[derive(Debug)]
pub struct HookMetrics {
    /// Requests the hooks thread took (every one gets a response or a
    /// failure).
    pub requests: Counter,
    /// Complete responses, whatever their status.
    pub responses: Counter,
    /// Complete responses with a status outside 2xx.
    pub non_2xx: Counter,
    /// Requests that got no response, by reason (`HookError::index`); the
    /// `overloaded` slot stays 0 here (see `overloaded`).
    pub failures: [Counter; HOOK_FAILURE_REASONS],
    /// Requests refused for a full queue, counted by the senders (shards),
    /// hence an atomic add rather than the single writer's load and store.
    overloaded: AtomicU64,
    /// Proxy answers that were complete but unreadable (a non-`2xx`
    /// status, not JSON, a bad shape or code), counted by the shards that
    /// read them.
    unreadable: AtomicU64,
    /// Connections opened to backends.
    pub connects: Counter,
    /// Connections open now (idle ones included).
    pub connections: Gauge,
    /// Requests on a connection now.
    pub in_flight: Gauge,
    /// Requests waiting for a connection now.
    pub queued: Gauge,
    /// From the thread taking a request to its complete response.
    pub latency: Histogram,
    /// Webhooks, written by the webhooks thread alone: events waiting
    /// (the batch in flight included), events acknowledged, tries after a
    /// batch's first, events dropped for a full queue and for running out
    /// of `--webhook-retry`.
    pub webhook_queued: Gauge,
    pub webhook_delivered: Gauge,
    pub webhook_retries: Gauge,
    pub webhook_dropped_queue: Gauge,
    pub webhook_dropped_retry: Gauge,
}

impl Default for HookMetrics {
    fn default() -> Self {
        Self {
            requests: Counter::default(),
            responses: Counter::default(),
            non_2xx: Counter::default(),
            failures: Default::default(),
            overloaded: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            connects: Counter::default(),
            connections: Gauge::default(),
            in_flight: Gauge::default(),
            queued: Gauge::default(),
            latency: Histogram::new(&HOOK_BUCKETS_US),
            webhook_queued: Gauge::default(),
            webhook_delivered: Gauge::default(),
            webhook_retries: Gauge::default(),
            webhook_dropped_queue: Gauge::default(),
            webhook_dropped_retry: Gauge::default(),
        }
    }
}

/// The hook figures of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookSnapshot {
    pub requests: u64,
    pub responses: u64,
    pub non_2xx: u64,
    /// By reason, in `HookError::REASONS` order, `overloaded` included.
    pub failures: [u64; HOOK_FAILURE_REASONS],
    /// Proxy answers received but unreadable.
    pub unreadable: u64,
    pub connects: u64,
    pub connections: u64,
    pub in_flight: u64,
    pub queued: u64,
    pub latency: HistogramSnapshot,
    pub webhooks: WebhookSnapshot,
}

/// The webhook figures of one scrape (all 0 without `--webhook`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookSnapshot {
    pub queued: u64,
    pub delivered: u64,
    pub retries: u64,
    pub dropped_queue: u64,
    pub dropped_retry: u64,
}

impl HookMetrics {
    /// One more request refused for a full queue; any thread.
    pub fn count_overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    /// One more proxy answer that could not be read; any thread.
    pub fn count_unreadable(&self) {
        self.unreadable.fetch_add(1, Ordering::Relaxed);
    }

    /// The webhooks thread's figures, after each of its steps. Its counts
    /// only grow, so they are kept as gauges written by their one writer.
    pub fn record_webhooks(&self, queued: usize, counts: crate::hooks::webhook::Counts) {
        self.webhook_queued.set(queued as u64);
        self.webhook_delivered.set(counts.delivered);
        self.webhook_retries.set(counts.retries);
        self.webhook_dropped_queue.set(counts.dropped_queue);
        self.webhook_dropped_retry.set(counts.dropped_retry);
    }

    pub fn snapshot(&self) -> HookSnapshot {
        let mut latency = HistogramSnapshot::default();
        self.latency.add_to(&mut latency);
        let mut failures = self.failures.each_ref().map(Counter::get);
        failures[HookError::Overloaded.index()] += self.overloaded.load(Ordering::Relaxed);
        HookSnapshot {
            requests: self.requests.get(),
            responses: self.responses.get(),
            non_2xx: self.non_2xx.get(),
            failures,
            unreadable: self.unreadable.load(Ordering::Relaxed),
            connects: self.connects.get(),
            connections: self.connections.get(),
            in_flight: self.in_flight.get(),
            queued: self.queued.get(),
            latency,
            webhooks: WebhookSnapshot {
                queued: self.webhook_queued.get(),
                delivered: self.webhook_delivered.get(),
                retries: self.webhook_retries.get(),
                dropped_queue: self.webhook_dropped_queue.get(),
                dropped_retry: self.webhook_dropped_retry.get(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloads_counted_by_senders_join_the_failures() {
        let metrics = HookMetrics::default();
        metrics.count_overloaded();
        metrics.count_overloaded();
        metrics.failures[HookError::Timeout.index()].inc();
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.failures[HookError::Overloaded.index()], 2);
        assert_eq!(snapshot.failures[HookError::Timeout.index()], 1);
        assert_eq!(snapshot.latency.counts.len(), BOUNDED_BUCKETS + 1);
    }
}
