//! What an upgraded connection carries beyond its socket state: the token's
//! claims, the rooms it is in, its rate limit, and what was held back from
//! it while it was a slow consumer (`--slow-consumer drop|conflate`).
//!
//! Bounded by construction: the rooms list by `--max-rooms-per-connection`,
//! the held-back frames by one per room.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Claims;
use crate::config::LimitsConfig;
use crate::conn::Delivered;
use crate::conn::backpressure::HoldBack;
use crate::conn::outbound::Outbound;
use crate::conn::packed;
use crate::conn::rate::{RateLimit, Verdict};
use crate::conn::shard_frame::ShardFrame;
use crate::proto::Request;
use crate::proto::wire;
use crate::ws::decoder::Decoder;

/// Room events a slow consumer did not get yet.
#[derive(Default)]
pub(crate) struct HeldBack {
    /// Room events dropped since the client last caught up (`drop`).
    dropped: u64,
    /// The newest undelivered event per room (`conflate`).
    conflated: Vec<(Arc<str>, ShardFrame)>,
}

pub(crate) struct SessionState {
    pub claims: Claims,
    /// Rooms joined or being joined.
    pub rooms: Vec<Arc<str>>,
    pub rate: RateLimit,
    /// What was held back while the client was slow; allocated only then.
    pub held_back: Option<Box<HeldBack>>,
    /// Whether this is a `/ws` connection (else `/echo`).
    pub events: bool,
    /// Set at the upgrade, taken by the shard to index the user.
    pub newly_opened: bool,
    /// The connection's frame decoder (kept here: one allocation per
    /// upgraded connection, not two).
    pub decoder: Decoder,
    /// Answers the rooms still owe this connection (`Request::awaits_answer`);
    /// `u16::MAX` once it overflowed, after which it is not counted down and
    /// a close waits for its deadline instead (a u16 keeps the session
    /// within its malloc chunk; only a client without a rate limit could
    /// have that many requests in flight).
    pub awaiting: u16,
}

impl SessionState {
    /// Keeps the connection's own view in step with what it asked for.
    pub fn apply(&mut self, request: &Request) {
        if request.awaits_answer() {
            self.awaiting = self.awaiting.saturating_add(1);
        }
        match request {
            Request::Join {
                room,
                rejoin: false,
                ..
            } => {
                // Most connections are in one room: the first join allocates
                // room for that one (a 32-byte malloc chunk, where Vec's
                // first growth to four would take 80); later joins grow as
                // usual.
                if self.rooms.capacity() == 0 {
                    self.rooms.reserve_exact(1);
                }
                self.rooms.push(room.clone());
            }
            Request::Leave { room } => self.rooms.retain(|r| r != room),
            // The rate limit follows the new claims' `rate` (see `check_rate`).
            Request::Refresh { claims } => self.claims = claims.clone(),
            _ => {}
        }
    }

    /// Counts `room` as joining for a Server API `subscribe`, as `apply`
    /// does for a `room:join`: the owner's answer is owed.
    pub fn join_for_api(&mut self, room: &Arc<str>) {
        self.rooms.push(room.clone());
        self.awaiting = self.awaiting.saturating_add(1);
    }

    /// One answer owed arrived.
    pub fn on_answer(&mut self) {
        if self.awaiting != u16::MAX {
            self.awaiting = self.awaiting.saturating_sub(1);
        }
    }

    /// Whether answers are still owed (or may be: the count overflowed).
    pub fn awaits_answers(&self) -> bool {
        self.awaiting > 0
    }

    /// Accounts one data message at `now`, at the rate of the token's `rate`
    /// claim (else `--rate-limit`) with `--rate-burst`.
    pub fn check_rate(&mut self, config: &LimitsConfig, now: Instant) -> Verdict {
        let rate = self.claims.rate.unwrap_or(config.rate_limit);
        self.rate.check(rate, config.rate_burst, now)
    }

    /// A room event held back (`backpressure::Fate::HoldBack`): counted
    /// (drop) or kept as the room's newest (conflate).
    pub fn hold_back(&mut self, room: &Arc<str>, frame: &ShardFrame, how: HoldBack) -> Delivered {
        let held = self.held_back.get_or_insert_with(Default::default);
        match how {
            HoldBack::Drop => {
                held.dropped += 1;
                Delivered::Dropped
            }
            HoldBack::Conflate => match held.conflated.iter_mut().find(|(r, _)| r == room) {
                Some(slot) => {
                    slot.1 = frame.clone();
                    Delivered::Conflated
                }
                None => {
                    held.conflated.push((room.clone(), frame.clone()));
                    Delivered::HeldBack
                }
            },
        }
    }

    /// Whether events were dropped or conflated since the client last caught up.
    pub fn is_holding_back(&self) -> bool {
        self.held_back.is_some()
    }

    /// Queues what was held back; returns whether there was anything.
    pub fn release(&mut self, out: &mut Outbound, msgpack: bool) -> bool {
        let Some(held) = self.held_back.take() else {
            return false;
        };
        if held.dropped > 0 {
            packed::push_message(out, msgpack, &wire::dropped(held.dropped));
        }
        for (_, frame) in held.conflated {
            out.push_shared(frame);
        }
        true
    }
}
