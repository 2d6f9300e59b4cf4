//! Fault drills: the server under the things that go wrong in production,
//! each stating what it does and what must hold, and printing its figures.
//!
//! `scripts/test.sh` runs them at their quick size:
//! `cargo test --test drills -- --ignored --nocapture`.
//! `ROOMCAST_DRILL_SIZE=full` runs the sizes `docs/reliability.md` reports.
//! They run one at a time (each loads the machine) and every one checks
//! that no secret or token appears in anything the server said.

#[path = "../common/mod.rs"]
mod common;

mod accept_flood;
mod half_open;
mod harness;
mod load;
mod reconnect_storm;
mod redis_cluster;
mod redis_freeze;
mod redis_tls;
mod restarts;
mod sentinel_failover;
mod slow_consumers;
mod slowloris;
mod tracker;
