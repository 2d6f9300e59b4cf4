//! The integration tests, one module per surface (`tests/README.md` has the
//! table), in one test binary: linked once instead of once per surface.
//!
//! Run one surface with its module path as the filter:
//! `cargo test --test it rooms::`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod api_cluster;
mod backpressure;
mod bench;
mod bus_flow;
mod cli;
mod close_acks;
mod close_codes;
mod cluster;
mod cluster_drifts;
mod cluster_failover;
mod compression;
mod concurrency;
mod delta;
mod direct;
mod echo;
mod events;
mod handshake;
mod harness;
mod heartbeat;
mod history;
mod hooks_client;
mod hooks_proxy;
mod http;
mod lifecycle_log;
mod max_rate;
mod msgpack;
mod operator;
mod permissions;
mod pre_request;
mod presence;
mod publish;
mod rate_limit;
mod redis_bridge;
mod redis_cluster;
mod redis_freeze;
mod redis_function;
mod redis_history_bounds;
mod redis_tls;
mod redis_webhooks;
mod refresh;
mod room_errors;
mod rooms;
mod sentinel;
mod shutdown;
mod slow_consumers;
mod tls;
mod volatile;
mod webhooks;
mod webhooks_cluster;
