//! roomcast: a WebSocket pub/sub server.
//!
//! The crate is split so that the protocol core is sans-IO: the modules
//! `ws`, `http`, `auth`, `proto`, `conn`, `rooms` (the room router) and
//! `redis` (RESP and the cluster's functions) take bytes, messages and an
//! `Instant` and return bytes and actions. Sockets, `mio` and threads live
//! only in `reactor` (and raw socket options in `sys`). `docs/architecture.md`
//! follows one message through these modules.
//!
//! The client tools of the `roomcast` binary (`bench`, `connect`,
//! `demo-feed`) are not part of this library: they live in the binary
//! (`src/client/`) and use it as any client would.
//!
//! `unsafe` is denied everywhere but in `sys` (raw socket options, rlimits,
//! clocks) and `supervisor` (fork-time setup of its children), where every
//! block states why it is sound.

#![deny(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod codes;
pub mod config;
pub mod conn;
pub mod http;
pub mod json;
pub mod log;
pub mod metrics;
pub mod preflight;
pub mod proto;
pub mod reactor;
pub mod redis;
pub mod rooms;
pub mod supervisor;
pub mod sys;
pub mod tls;
pub mod web;
pub mod ws;
