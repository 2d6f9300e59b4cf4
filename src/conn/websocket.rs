//! An open WebSocket's input, sans-IO: decoding frames, the rate limit,
//! handing `/ws` text to the event protocol (`proto`) or echoing on
//! `/echo`, and the bound on the replies a message may queue.
//!
//! Owns how one batch of input becomes replies and room requests. Must not
//! touch: the connection's other states (`conn`), sockets or clocks.

use crate::codes::close;
use crate::conn::outbound::Outbound;
use crate::conn::rate::Verdict;
use crate::conn::session::SessionState;
use crate::conn::{Context, Endpoint};
use crate::proto::{self, Request, Session, Sink};
use crate::ws::decoder::{CloseFrame, Decoder, Message};
use crate::ws::frame::OpCode;

/// How a WebSocket ends.
#[derive(Debug, Clone, Copy)]
pub(super) enum End {
    /// We close with this code (and its reason, `close::reason`).
    Close(u16),
    /// The peer closed; we answer with its code (none for an empty close).
    Reply(Option<u16>),
    /// The client fell too far behind: cut after the frame in flight, close 4008.
    SlowConsumer,
}

/// The result of feeding input to an open WebSocket.
pub(super) struct Step {
    pub consumed: usize,
    pub end: Option<End>,
}

/// Decodes and handles every complete message in `input`.
pub(super) fn on_frames(
    session: &mut SessionState,
    input: &mut [u8],
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Step {
    // The decoder lends out slices of itself while the rest of the session
    // handles them, so it steps out of the session for the call.
    let mut decoder = std::mem::replace(&mut session.decoder, Decoder::new(0, true));
    let step = decode_and_handle(&mut decoder, session, input, out, cx);
    session.decoder = decoder;
    step
}

fn decode_and_handle(
    decoder: &mut Decoder,
    session: &mut SessionState,
    input: &mut [u8],
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Step {
    let endpoint = if session.events {
        Endpoint::Events
    } else {
        Endpoint::Echo
    };
    let mut consumed = 0;
    loop {
        let decoded = match decoder.decode(&mut input[consumed..]) {
            Ok(decoded) => decoded,
            Err(error) => {
                let end = End::Close(error.close_code());
                return Step {
                    consumed: input.len(),
                    end: Some(end),
                };
            }
        };
        let used = decoded.consumed;
        let Some(message) = decoded.message else {
            consumed += used;
            if consumed == input.len() {
                // Idle again: an assembly buffer left from a fragmented
                // message goes back to the allocator.
                decoder.shrink();
            }
            return Step {
                consumed,
                end: None,
            };
        };
        let end = on_message(message, endpoint, session, out, cx);
        consumed += used;
        if end.is_some() {
            return Step {
                consumed: input.len(),
                end,
            };
        }
    }
}

fn on_message(
    message: Message<'_>,
    endpoint: Endpoint,
    session: &mut SessionState,
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Option<End> {
    let mut sink = BoundedSink::new(out, cx.config.max_write_buffer);
    if matches!(message, Message::Text(_) | Message::Binary(_)) {
        cx.metrics.messages_in.inc();
    }
    match message {
        Message::Text(payload) => match endpoint {
            Endpoint::Echo => sink.push(OpCode::Text, payload),
            Endpoint::Events => match session.check_rate(&cx.config.rooms, cx.now) {
                Verdict::Allow => on_event_text(payload, session, &mut sink, cx),
                Verdict::Limited => {
                    cx.metrics.rate_limited.inc();
                    proto::on_rate_limited(payload, cx.parser, cx.scratch, &mut sink)
                }
                Verdict::Flood => {
                    return Some(End::Close(close::RATE_LIMITED));
                }
            },
        },
        Message::Binary(payload) => match endpoint {
            Endpoint::Echo => sink.push(OpCode::Binary, payload),
            Endpoint::Events => {
                return Some(End::Close(close::UNSUPPORTED_DATA));
            }
        },
        Message::Ping(payload) => sink.push(OpCode::Pong, payload),
        Message::Pong(_) => {}
        Message::Close(frame) => return Some(End::Reply(frame.map(|f: CloseFrame<'_>| f.code))),
    }
    cx.metrics.messages_out.add(sink.messages);
    let end = sink.overflowed.then_some(End::SlowConsumer);
    for request in sink.requests {
        session.apply(&request);
        if !matches!(request, Request::Refresh { .. }) {
            cx.requests.push(request);
        }
    }
    end
}

fn on_event_text(
    payload: &mut [u8],
    session: &SessionState,
    sink: &mut BoundedSink<'_>,
    cx: &mut Context<'_>,
) {
    let view = Session {
        claims: &session.claims,
        rooms: &session.rooms,
        config: &cx.config.rooms,
        keys: cx.keys,
        leeway_secs: cx.config.jwt_leeway.as_secs_f64(),
    };
    proto::on_text(payload, cx.parser, view, cx.unix_ms, cx.scratch, sink);
}

/// Queues replies to the sender, up to twice `--max-write-buffer` (replies
/// are not room events: `docs/protocol.md` section 8). A message always fits
/// into an empty queue.
pub(super) struct BoundedSink<'a> {
    out: &'a mut Outbound,
    limit: usize,
    pub overflowed: bool,
    /// Data messages queued, for the shard's counters.
    messages: u64,
    requests: Vec<Request>,
}

impl<'a> BoundedSink<'a> {
    pub fn new(out: &'a mut Outbound, max_write_buffer: usize) -> Self {
        Self {
            out,
            limit: max_write_buffer.saturating_mul(2),
            overflowed: false,
            messages: 0,
            requests: Vec::new(),
        }
    }

    pub fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        if self.overflowed {
            return;
        }
        if !self.out.is_empty() && self.out.pending() + payload.len() > self.limit {
            self.overflowed = true;
            return;
        }
        self.out.push_frame(opcode, payload);
        if !opcode.is_control() {
            self.messages += 1;
        }
    }
}

impl Sink for BoundedSink<'_> {
    fn send_text(&mut self, text: &[u8]) {
        self.push(OpCode::Text, text);
    }

    fn request(&mut self, request: Request) {
        self.requests.push(request);
    }
}
