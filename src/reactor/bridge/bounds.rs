//! What waits for Redis is bounded, in time and in size (section 15).
//!
//! In time: a link that has had no reply for `--redis-timeout` while a
//! command waited (the setup's commands, and so the TCP connect, included;
//! a Redis still working through a deep queue is answering, not gone) is
//! dropped like a link that failed: what it had in flight is answered
//! `Unavailable`, `/healthz` says `503`, and the bridge reconnects with
//! backoff. An idle ready link pings every second (`redis::liveness`), so
//! a node with nothing to say notices a frozen Redis as soon.
//!
//! In size: a request someone waits for (a publish, a join, a presence or
//! history read, a send, an API cast) is taken only while its link holds
//! less than `REQUESTS` (a batch of publishes sent as one call counts as
//! many requests as it has publishes, and so does one waiting to be sent);
//! past it, it is answered `Unavailable` at once, never left waiting in the
//! channel (which the bridge drains every turn). A join is the exception:
//! a join storm (every connection of a node joining its rooms at once)
//! would otherwise be refused while Redis is merely busy, so a join is
//! held once its link has `STORM_IN_FLIGHT` waiting (far below the bound,
//! so that the heartbeat written behind a storm is not late), and with it everything that comes after it (a leave
//! must not overtake its join), up to `HELD` requests; so are the leaves
//! and online counts of a disconnect storm (a node's every connection
//! closing at once), which would otherwise go past `ALL` and cost the
//! link; held requests go
//! out in order as replies make room (or, once a link is dropped, are
//! answered `Unavailable` as on any link that is down). Past `HELD`,
//! requests are refused as before (bookkeeping still goes in: it is bounded
//! by the joins it undoes).
//! Bookkeeping that nobody waits for (leaves, syncs, the online set,
//! subscriptions, heartbeats) may go past `REQUESTS` up to `ALL`, so it is
//! not lost to a burst of publishes while the link is up; a link that
//! cannot take even that is dropped, and the reconnect's resync (every
//! room's presence `Sync`ed, every subscription made again, every room
//! recovered from its history) puts right whatever was not sent.
//!
//! The shards queue nothing of their own while they wait: each turn hands
//! the bridge everything (`RedisRooms::move_requests`), and what the bridge
//! answers at once comes back as any answer does. What a connection or a
//! room keeps while it waits (a pending join, a `POST /publish`'s results,
//! the count of answers owed) is one entry per request in the bridge, so
//! the same bound holds it.

use std::time::{Duration, Instant};

use super::{Bridge, BridgeRequest, BridgeSink, MAX_IN_FLIGHT, Pending, Unavailable};
use crate::redis::pipeline::Bounds;
use crate::redis::resp;
use crate::{log_warn, redis};

/// Most a link holds for requests someone waits for: at most
/// `MAX_IN_FLIGHT` of them waiting for replies, and 16 MiB of commands not
/// yet written (a frozen Redis fills the socket's buffers first).
pub(super) const REQUESTS: Bounds = Bounds {
    in_flight: MAX_IN_FLIGHT,
    unsent: 16 << 20,
};

/// Most a link holds at all: bookkeeping has as much again beyond
/// `REQUESTS`. About 32 MiB and 32,768 small entries per Redis server.
pub(super) const ALL: Bounds = Bounds {
    in_flight: 2 * MAX_IN_FLIGHT,
    unsent: 2 * REQUESTS.unsent,
};

/// Most requests a link has waiting before joins, leaves and online counts
/// are held: Redis answers a link's commands in order, so a heartbeat
/// written behind 16,384 joins of a storm (with 63 other nodes' storms
/// before Redis too) came back after the 20 s that mark a node dead, and
/// the others removed its presence. A thousand keeps Redis busy and the
/// heartbeat's wait short.
pub(super) const STORM_IN_FLIGHT: usize = 1024;

/// Most requests held behind a join past the bound: four times what a
/// link may have waiting, a node's worth of connections joining a few
/// rooms each.
pub(super) const HELD: usize = 4 * MAX_IN_FLIGHT;

/// Most requests taken from the channel in one turn: the bridge then
/// writes, reads and checks its deadlines before it takes more.
const TAKE_PER_TURN: usize = 4096;

impl<S: BridgeSink> Bridge<S> {
    /// Handles what is in the channel, at most `TAKE_PER_TURN`; false on
    /// `Stop`. Sets `backlog` when more is waiting. The publishes taken are
    /// sent before it returns, but those to a room whose last call Redis
    /// has not answered yet (`batch`).
    pub(super) fn take_requests(&mut self) -> bool {
        let (more, backlog) = self.take_some();
        self.send_ready_batches();
        self.backlog = backlog;
        more
    }

    /// `take_requests` but for the batches: whether to go on, and whether
    /// requests were left in the channel.
    fn take_some(&mut self) -> (bool, bool) {
        self.release_held();
        for _ in 0..TAKE_PER_TURN {
            match self.requests.try_recv() {
                Ok(BridgeRequest::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return (false, self.backlog);
                }
                Ok(request) => self.take(request),
                Err(crossbeam_channel::TryRecvError::Empty) => return (true, false),
            }
        }
        (true, true)
    }

    /// One request from the channel: sent, held behind a join, or refused.
    fn take(&mut self, request: BridgeRequest<S::Answer>) {
        let over = self.over_bound(&request);
        let holding = !self.held.is_empty();
        let storm = matches!(
            request,
            BridgeRequest::Join { .. } | BridgeRequest::Leave { .. } | BridgeRequest::Online { .. }
        );
        if (holding || (over && storm)) && (self.held.len() < HELD || !waits_for_answer(&request)) {
            self.held.push_back(request);
        } else if over {
            self.refuse(request);
        } else {
            self.on_request(request);
        }
    }

    /// Sends the held requests, in order, while their links have room.
    fn release_held(&mut self) {
        while let Some(request) = self.held.front() {
            if self.over_bound(request) {
                return;
            }
            if let Some(request) = self.held.pop_front() {
                self.on_request(request);
            }
        }
        if self.held.capacity() > TAKE_PER_TURN {
            self.held.shrink_to(TAKE_PER_TURN);
        }
    }

    /// Whether `request` would go to a link that holds `REQUESTS` already
    /// (a leave or an online count too: held behind a storm, or sent past
    /// the bound when nothing is held).
    fn over_bound(&self, request: &BridgeRequest<S::Answer>) -> bool {
        let full_at = |room: &str, most: usize| {
            let link = &self.links[self.route(room)];
            // A batch of publishes is one command that answers each, and
            // publishes wait in batches before they are sent: they count
            // as that many requests, against every link.
            let in_flight = most.saturating_sub(self.batched);
            !link.pipeline.within(Bounds {
                in_flight,
                ..REQUESTS
            })
        };
        let full = |room: &str| full_at(room, REQUESTS.in_flight);
        match request {
            BridgeRequest::Join { room, .. } | BridgeRequest::Leave { room, .. } => {
                full_at(room, STORM_IN_FLIGHT)
            }
            BridgeRequest::Online { .. } => full_at(redis::ONLINE, STORM_IN_FLIGHT),
            BridgeRequest::Publish { room, .. }
            | BridgeRequest::Volatile { room, .. }
            | BridgeRequest::PresenceGet { room, .. }
            | BridgeRequest::History { room, .. }
            | BridgeRequest::HistoryRemove { room, .. } => full(room),
            BridgeRequest::Send { .. } | BridgeRequest::ApiCast { .. } => full(redis::ONLINE),
            BridgeRequest::RoomUsers { rooms, .. } => rooms.iter().any(|room| full(room)),
            BridgeRequest::Sync { .. }
            | BridgeRequest::Serve { .. }
            | BridgeRequest::Unserve { .. }
            | BridgeRequest::Stop => false,
        }
    }

    /// Answers a request over the bound `Unavailable`, now.
    fn refuse(&mut self, request: BridgeRequest<S::Answer>) {
        let sink = &self.sink;
        match request {
            BridgeRequest::Publish { answer, .. } => sink.sequenced(answer, Err(Unavailable)),
            BridgeRequest::Join { answer, .. } => sink.joined(answer, Err(Unavailable)),
            BridgeRequest::PresenceGet { answer, .. } => sink.presence(answer, Err(Unavailable)),
            BridgeRequest::History { answer, .. } | BridgeRequest::HistoryRemove { answer, .. } => {
                sink.room_read(answer, Err(Unavailable));
            }
            BridgeRequest::RoomUsers { answer, .. } => sink.room_users(answer, Err(Unavailable)),
            BridgeRequest::Send { answer, .. } | BridgeRequest::Volatile { answer, .. } => {
                sink.sent(answer, Err(Unavailable));
            }
            // Nobody waits for it: whoever waits for replies counts this
            // node's as missing.
            BridgeRequest::ApiCast { .. } => {}
            bookkeeping => self.on_request(bookkeeping),
        }
    }

    /// Once per turn, before anything is sent: links whose Redis did not
    /// answer in time, or that could not take their bookkeeping, are
    /// dropped; idle ready links ping.
    pub(super) fn watch_links(&mut self, now: Instant) {
        for index in 0..self.links.len() {
            let link = &mut self.links[index];
            if link.stream.is_none() {
                continue;
            }
            if link.liveness.overdue(link.pipeline.silent_since(), now) {
                let timeout = link.liveness.timeout();
                if link.ready {
                    log_warn!(
                        "redis bridge: {}: no answer within {timeout:?} (--redis-timeout); reconnecting",
                        link.url
                    );
                } else {
                    log_warn!(
                        "redis bridge: {}: not connected and set up within {timeout:?} (--redis-timeout); retrying",
                        link.url
                    );
                }
                self.metrics.timeouts.inc();
                self.drop_link(index);
                continue;
            }
            if link.pipeline.take_overflow() {
                log_warn!(
                    "redis bridge: {}: over {} commands or {} MiB waiting for Redis; reconnecting",
                    link.url,
                    ALL.in_flight,
                    ALL.unsent >> 20
                );
                self.drop_link(index);
                continue;
            }
            let idle = link.pipeline.in_flight() == 0;
            if link.is_up() && link.liveness.ping_due(idle, now) {
                let _ = link
                    .pipeline
                    .push(Pending::Ignored, |out| resp::write_command(out, &["PING"]));
            }
        }
    }

    /// Right before the bridge waits: dates what this turn queued, and
    /// shortens `wait` to the next deadline or ping (to nothing while
    /// requests are left in the channel).
    pub(super) fn until_next_check(&mut self, wait: Duration) -> Duration {
        let now = Instant::now();
        let mut wait = wait;
        for link in &mut self.links {
            link.pipeline.stamp(now);
            if let Some(at) = link.liveness.next_check(link.pipeline.silent_since()) {
                wait = wait.min(at.saturating_duration_since(now));
            }
        }
        if self.backlog { Duration::ZERO } else { wait }
    }
}

/// Whether someone waits for `request`'s answer (what `refuse` answers),
/// rather than bookkeeping nobody waits for.
fn waits_for_answer<A>(request: &BridgeRequest<A>) -> bool {
    !matches!(
        request,
        BridgeRequest::Leave { .. }
            | BridgeRequest::Online { .. }
            | BridgeRequest::Sync { .. }
            | BridgeRequest::Serve { .. }
            | BridgeRequest::Unserve { .. }
            | BridgeRequest::Stop
    )
}
