//! A Server API call on one connection (section 12), sans-IO: its body
//! is read as `publish` reads bodies, its commands go to the rooms as one
//! `Request::Api`, and the rooms' replies come back to be answered.
//!
//! Owns: the wait for the replies and the response. Must not touch: the
//! caller's authentication (`routes`, before the body), what the body
//! means (`api::command`) or how the commands run (`rooms::api`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::auth::Caller;
use crate::api::reply::{self, Reply};
use crate::api::{Method, command};
use crate::config::Config;
use crate::conn::compression::Codec;
use crate::conn::report::Report;
use crate::conn::{Connection, Context, State};
use crate::proto::Request;
use crate::proto::wire;

/// A call whose commands are with the rooms.
pub(crate) struct Calling {
    pub method: Method,
    /// Whether the response may keep the connection open; cleared when the
    /// peer pipelines too much meanwhile.
    pub keep_alive: bool,
    /// How long the next request on a kept-alive connection may take.
    next_request_timeout: Duration,
    /// When the body was complete, for the call's latency.
    pub started: Instant,
}

impl Connection {
    /// The body of a call to `method` by `caller` is complete: a valid call
    /// goes to the rooms; a body the call cannot be read from is answered
    /// at once (section 12's `400`s), and nothing else happens.
    pub(super) fn on_api_body(
        &mut self,
        method: Method,
        caller: Caller,
        body: &mut [u8],
        keep_alive: bool,
        cx: &mut Context<'_>,
    ) {
        let timeout = cx.config.listen.handshake_timeout;
        match command::parse(method, body, cx.parser) {
            Ok(call) => {
                cx.requests.push(Request::Api {
                    call: Box::new(call),
                    from: caller.from,
                });
                self.state = State::Calling(Box::new(Calling {
                    method,
                    keep_alive,
                    next_request_timeout: timeout,
                    started: cx.now,
                }));
            }
            Err(error) => {
                let mut bytes = Vec::with_capacity(256);
                let status = reply::write_response(&mut bytes, false, &[Err(error)], keep_alive);
                self.out.push_raw(&bytes);
                cx.reports.push(Report::api_answered(method.name(), status));
                cx.metrics.count_api(method.index(), status, Duration::ZERO);
                self.after_response(keep_alive, timeout, cx.now);
            }
        }
    }

    /// The rooms' replies to the pending call: the response is queued and
    /// `Some((keep_alive, method, status, latency))` returned (with
    /// `keep_alive` the connection reads its next request: input held back
    /// meanwhile should be fed again); `None` when no call is pending.
    pub fn on_api_answered(
        &mut self,
        batch: bool,
        replies: &[Reply],
        now: Instant,
    ) -> Option<(bool, Method, u16, Duration)> {
        let State::Calling(calling) = &self.state else {
            return None;
        };
        let (keep_alive, method, timeout) = (
            calling.keep_alive,
            calling.method,
            calling.next_request_timeout,
        );
        let latency = now.saturating_duration_since(calling.started);
        let mut bytes = Vec::with_capacity(256);
        let status = reply::write_response(&mut bytes, batch, replies, keep_alive);
        self.out.push_raw(&bytes);
        self.after_response(keep_alive, timeout, now);
        Some((keep_alive, method, status, latency))
    }
}

/// What a connection did for a Server API `subscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribing {
    /// It counts the room as joined or joining: counted, told nothing.
    Already,
    /// Not an open `/ws` connection, or at `--max-rooms-per-connection`.
    Skipped,
    /// It counts the room as joining now; the owner's answer is owed.
    Joining,
}

/// The Server API's acts on an open WebSocket (section 12).
impl Connection {
    /// `disconnect`: the queued output, then the close `code` with
    /// `reason`, at once: unlike a close the server decides for the
    /// connection's own conduct, it does not wait for answers the rooms
    /// still owe it (an operator's disconnect is not held up by them).
    /// False if it is not an open `/ws` connection.
    pub fn disconnect(&mut self, code: u16, reason: &str, now: Instant, config: &Config) -> bool {
        if !self.is_open_websocket() || self.user_id().is_none() {
            return false;
        }
        self.push_close_with(Some((code, reason)), now, config);
        true
    }

    /// `subscribe`: counts `room` as joining unless it is in it already or
    /// at `max_rooms` rooms.
    pub fn subscribe(&mut self, room: &Arc<str>, max_rooms: usize) -> Subscribing {
        if !self.is_open_websocket() || self.user_id().is_none() {
            return Subscribing::Skipped;
        }
        if self.in_room(room) {
            return Subscribing::Already;
        }
        match self.session.as_mut() {
            Some(session) if session.rooms.len() < max_rooms => {
                session.join_for_api(room);
                Subscribing::Joining
            }
            _ => Subscribing::Skipped,
        }
    }

    /// `unsubscribe`: takes `room` off the connection's rooms and queues
    /// `room:unsubscribed`; false if it was not in it.
    pub fn unsubscribe(
        &mut self,
        room: &str,
        now: Instant,
        config: &Config,
        codec: &mut Codec,
    ) -> bool {
        if !self.is_open_websocket() || !self.in_room(room) {
            return false;
        }
        self.forget_room(room);
        self.send_text(&wire::unsubscribed(room), now, config, codec);
        true
    }
}
