//! Backend hooks (section 13): the HTTP client that webhooks and proxies
//! send their requests through, and the webhooks' outbox.
//!
//! Owns: hook URLs (`url`), the request signature (`sign`), the HTTP/1.1
//! client codec (`http`, sans-IO), the webhook events and their outbox
//! (`webhook`, sans-IO, and its "webhooks" thread) and the hooks thread
//! (`client`): one
//! thread per process with its own mio loop, kept-alive connections per
//! URL, at most `--hook-concurrency` requests in flight per URL, a bounded
//! queue per URL, `--hook-timeout` bounding each request from the moment
//! it is handed over (time in the queue included), `https://` through
//! rustls. Like the Redis bridge, shards hand it requests over a channel
//! plus a waker (`HookHandle`) and hear back through a sink (`HookSink`),
//! so no shard ever waits on a backend: a refusal for a full queue is
//! synchronous (`Refused`), every other outcome comes through the sink,
//! exactly once per request `send` accepted (stopping included).
//!
//! Must not touch: what a proxy's answer decides (the shards' side of the
//! sink, `reactor::hooks`), what the rooms notice (`rooms::notes`), the shards' sockets, or the
//! room router. The client thread is the one place outside `reactor` that
//! holds sockets: it serves no client, so nothing it does can hold one up.
//!
//! # How proxies and webhooks use it
//!
//! The server starts one client (`client::start`) with every configured
//! URL (`--connect-proxy`, `--subscribe-proxy`, `--publish-proxy`,
//! `--rpc-proxy`, `--webhook`), each at its own `url_index`
//! (`reactor::hooks::urls`), and gives each shard a clone of the
//! `HookHandle`. The sink is the reactor's (`reactor::hooks::ShardHookSink`:
//! one `Command::Hook` per answer to the shard of the connection that
//! asked, as `ShardSink` does for the bridge), so `A` is whatever
//! identifies the waiting party: a connection and what it asked for a
//! proxy (`reactor::hooks::Hooked::Proxy`), a batch number for webhooks
//! (`Hooked::Webhook`).
//! What an answer says is read by `answer`.
//!
//! - A proxy decision: the shard writes the JSON body, sends it with
//!   `deadline = now + --hook-timeout` and parks the connection's request;
//!   `Err(Refused)` is `UNAVAILABLE` at once (section 13.2: "past a bounded
//!   queue, `UNAVAILABLE` at once"); an answer with a `2xx` status is
//!   parsed as `{"result"}`/`{"error"}`, anything else (`HookError`, a
//!   non-`2xx` status, an unreadable body) is `UNAVAILABLE` (503 for a
//!   connect). A connection's room events stay in order because the shard,
//!   not this client, holds the later ones until the earlier is decided.
//! - Webhooks: the "webhooks" thread (`webhook::thread`), fed by the
//!   shards, runs the outbox (`webhook::Outbox`) and sends one request per
//!   batch, its number as the answer (`reactor::hooks::Hooked::Webhook`,
//!   which the sink hands back to that thread); a non-`2xx` answer or an
//!   error is retried with backoff by the outbox, which keeps its own
//!   queue and timers. The webhooks thread is not this client's thread:
//!   its clock (batching, vacate delay, backoff) has a loop of its own,
//!   and this client stays generic over what waits for an answer. This
//!   client never retries: whether a request may be sent twice is the
//!   caller's decision.
//!
//! Metrics are `metrics::HookMetrics`, written by the hooks thread alone
//! (the `overloaded` count by the senders).

pub mod answer;
pub mod client;
pub mod http;
pub mod sign;
pub mod url;
pub mod webhook;

use std::fmt;

pub use client::{HookHandle, HookRequest, HookResponse, HookSink, Refused};

/// Why a hook request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookError {
    /// The URL's queue is full: refused at once, nothing was sent.
    Overloaded,
    /// The deadline passed: in the queue (then nothing was sent), while
    /// connecting, or waiting for a complete response.
    Timeout,
    /// No connection could be made (the name does not resolve, the port
    /// refuses, the network is unreachable).
    Connect,
    /// The TLS handshake failed (a certificate not trusted or not for the
    /// host, a protocol error), or the TLS stream broke.
    Tls,
    /// The backend reset or closed the connection before a complete
    /// response.
    Closed,
    /// The response is not HTTP roomcast reads, or over a bound.
    Response(http::ResponseError),
    /// The hooks thread has stopped (the server is shutting down).
    Stopped,
    /// No URL has the request's `url_index`.
    NoSuchUrl,
}

impl HookError {
    /// The reasons failures are counted under, in `index` order.
    pub const REASONS: [&'static str; 9] = [
        "overloaded",
        "timeout",
        "connect",
        "tls",
        "closed",
        "too_large",
        "bad_response",
        "stopped",
        "no_such_url",
    ];

    /// This error's slot in `REASONS`.
    pub const fn index(self) -> usize {
        match self {
            Self::Overloaded => 0,
            Self::Timeout => 1,
            Self::Connect => 2,
            Self::Tls => 3,
            Self::Closed => 4,
            Self::Response(http::ResponseError::BodyTooLarge) => 5,
            Self::Response(_) => 6,
            Self::Stopped => 7,
            Self::NoSuchUrl => 8,
        }
    }

    /// The label failures of this kind are counted under.
    pub const fn reason(self) -> &'static str {
        Self::REASONS[self.index()]
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overloaded => f.write_str("the hook's queue is full"),
            Self::Timeout => f.write_str("no answer within --hook-timeout"),
            Self::Connect => f.write_str("cannot connect to the hook's backend"),
            Self::Tls => f.write_str("TLS with the hook's backend failed"),
            Self::Closed => f.write_str("the backend closed the connection"),
            Self::Response(e) => write!(f, "the backend's response: {e}"),
            Self::Stopped => f.write_str("the hooks client has stopped"),
            Self::NoSuchUrl => f.write_str("no hook URL at that index"),
        }
    }
}

impl std::error::Error for HookError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_own_reason() {
        let errors = [
            HookError::Overloaded,
            HookError::Timeout,
            HookError::Connect,
            HookError::Tls,
            HookError::Closed,
            HookError::Response(http::ResponseError::BodyTooLarge),
            HookError::Response(http::ResponseError::Header),
            HookError::Stopped,
            HookError::NoSuchUrl,
        ];
        for (i, error) in errors.iter().enumerate() {
            assert_eq!(error.index(), i, "{error}");
        }
        assert_eq!(errors.len(), HookError::REASONS.len());
        assert_eq!(HookError::Timeout.reason(), "timeout");
    }
}
