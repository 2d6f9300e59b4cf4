//! An open WebSocket's input, sans-IO: decoding frames, inflating
//! compressed messages (permessage-deflate), the rate limit, handing `/ws`
//! text to the event protocol (`proto`) or echoing on `/echo`, and the
//! bound on the replies a message may queue (compressed when the
//! connection agreed to it). On a `roomcast.msgpack` connection binary
//! messages are read as MessagePack into JSON text for the same event
//! protocol, text messages close it with 1003, and replies go out as
//! MessagePack in binary frames.
//!
//! Owns how one batch of input becomes replies and room requests. Must not
//! touch: the connection's other states (`conn`), sockets or clocks.

use crate::codes::ErrorCode;
use crate::codes::close;
use crate::conn::backpressure::{Backpressure, Fate};
use crate::conn::compression::Codec;
use crate::conn::outbound::Outbound;
use crate::conn::packed;
use crate::conn::rate::Verdict;
use crate::conn::session::SessionState;
use crate::conn::{Context, Delivery, Endpoint};
use crate::metrics::ShardMetrics;
use crate::proto::{self, Request, Session, Sink, msgpack, reply};
use crate::ws::decoder::{CloseFrame, Decoder, Message};
use crate::ws::deflate::InflateError;
use crate::ws::frame::{self, OpCode};

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

/// How the messages of one connection are handled.
#[derive(Clone, Copy)]
struct Handling {
    endpoint: Endpoint,
    /// Replies may be compressed (permessage-deflate with the full window).
    compress: bool,
    /// `roomcast.msgpack`: messages both ways are MessagePack.
    msgpack: bool,
}

/// The result of feeding input to an open WebSocket.
pub(super) struct Step {
    pub consumed: usize,
    pub end: Option<End>,
}

/// Decodes and handles every complete message in `input`; replies are
/// compressed when the connection `compresses` (permessage-deflate with
/// the full window), and MessagePack when it chose `msgpack`.
pub(super) fn on_frames(
    session: &mut SessionState,
    input: &mut [u8],
    out: &mut Outbound,
    (compresses, msgpack): (bool, bool),
    cx: &mut Context<'_>,
) -> Step {
    // The decoder lends out slices of itself while the rest of the session
    // handles them, so it steps out of the session for the call.
    let mut decoder = std::mem::replace(&mut session.decoder, Decoder::new(0, true));
    let handling = Handling {
        endpoint: if session.events {
            Endpoint::Events
        } else {
            Endpoint::Echo
        },
        compress: compresses,
        msgpack,
    };
    let step = decode_and_handle(&mut decoder, session, input, out, handling, cx);
    session.decoder = decoder;
    step
}

fn decode_and_handle(
    decoder: &mut Decoder,
    session: &mut SessionState,
    input: &mut [u8],
    out: &mut Outbound,
    handling: Handling,
    cx: &mut Context<'_>,
) -> Step {
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
        let end = match message {
            Message::Compressed { text, payload } => {
                on_compressed(text, payload, handling, session, out, cx)
            }
            plain => on_message(plain, handling, session, out, cx),
        };
        consumed += used;
        if end.is_some() {
            return Step {
                consumed: input.len(),
                end,
            };
        }
    }
}

/// Handles one message as it arrived, not compressed (`on_compressed`
/// inflates first). Not recursive and inlined into the decode loop: as a
/// call of its own (it was one while it also took compressed messages) an
/// echo cost about 70 instructions more in user space.
#[inline(always)]
fn on_message(
    message: Message<'_>,
    handling: Handling,
    session: &mut SessionState,
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Option<End> {
    let Context {
        config,
        keys,
        metrics,
        parser,
        scratch,
        codec,
        now,
        unix_ms,
        requests,
        ..
    } = cx;
    let codec = handling.compress.then_some(&mut **codec);
    let mut sink =
        BoundedSink::new(out, Backpressure::of(config), codec).with_msgpack(handling.msgpack);
    if matches!(message, Message::Text(_) | Message::Binary(_)) {
        metrics.messages_in.inc();
    }
    // A MessagePack message's JSON text, handled below as a text message.
    let mut converted = Vec::new();
    let message = match message {
        Message::Text(_) if handling.msgpack => return Some(End::Close(close::UNSUPPORTED_DATA)),
        Message::Binary(payload) if handling.msgpack => {
            converted.reserve(payload.len() * 2);
            if let Err(error) = msgpack::to_json(payload, &mut converted) {
                // Counted by the rate limit like a message that is not JSON.
                let (code, message) = match session.check_rate(&config.limits, *now) {
                    Verdict::Allow => (ErrorCode::ValidationError, error.message()),
                    Verdict::Limited => {
                        metrics.rate_limited.inc();
                        (ErrorCode::RateLimited, "rate limit exceeded")
                    }
                    Verdict::Flood => return Some(End::Close(close::RATE_LIMITED)),
                };
                scratch.clear();
                reply::failure(scratch, None, code, message);
                sink.send_text(scratch);
                return finish(sink, session, metrics, requests);
            }
            Message::Text(&mut converted)
        }
        other => other,
    };
    match message {
        Message::Text(payload) => match handling.endpoint {
            Endpoint::Echo => sink.push(OpCode::Text, payload),
            Endpoint::Events => match session.check_rate(&config.limits, *now) {
                Verdict::Allow => {
                    let view = Session {
                        claims: &session.claims,
                        rooms: &session.rooms,
                        config: &config.rooms,
                        keys,
                        leeway_secs: config.auth.leeway.as_secs_f64(),
                        rpc_proxy: config.hooks.rpc_proxy.is_some(),
                    };
                    sink.adopt_requests(requests);
                    proto::on_text(payload, parser, view, *unix_ms, scratch, &mut sink);
                }
                Verdict::Limited => {
                    metrics.rate_limited.inc();
                    proto::on_rate_limited(payload, parser, scratch, &mut sink)
                }
                Verdict::Flood => {
                    return Some(End::Close(close::RATE_LIMITED));
                }
            },
        },
        Message::Binary(payload) => match handling.endpoint {
            Endpoint::Echo => sink.push(OpCode::Binary, payload),
            Endpoint::Events => {
                return Some(End::Close(close::UNSUPPORTED_DATA));
            }
        },
        Message::Ping(payload) => sink.push(OpCode::Pong, payload),
        Message::Pong(_) => {}
        Message::Close(frame) => return Some(End::Reply(frame.map(|f: CloseFrame<'_>| f.code))),
        // Inflated by `on_compressed` before it comes here.
        Message::Compressed { .. } => {}
    }
    finish(sink, session, metrics, requests)
}

/// Counts what one message queued and hands its requests on.
#[inline(always)]
fn finish(
    sink: BoundedSink<'_>,
    session: &mut SessionState,
    metrics: &ShardMetrics,
    requests: &mut Vec<Request>,
) -> Option<End> {
    metrics.messages_out.add(sink.messages);
    let end = sink.overflowed.then_some(End::SlowConsumer);
    // Not adopted (an echo, a ping), or nothing ever asked of the rooms.
    if sink.requests.capacity() == 0 {
        return end;
    }
    let (mut taken, first) = (sink.requests, sink.first);
    let mut at = first;
    while let Some(request) = taken.get(at) {
        session.apply(request);
        if matches!(request, Request::Refresh { .. }) {
            taken.remove(at);
        } else {
            at += 1;
        }
    }
    // Adopted, the shard's list is all in `taken`, with its capacity.
    if requests.is_empty() && taken.capacity() > 0 {
        *requests = taken;
    } else {
        requests.append(&mut taken);
    }
    end
}

/// A compressed message: inflated into the shard's buffer under
/// `--max-message-size` (past it: 1009; not deflate: 1007), text checked
/// for UTF-8 (1007), then handled like the same message sent uncompressed.
fn on_compressed(
    text: bool,
    payload: &[u8],
    handling: Handling,
    session: &mut SessionState,
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Option<End> {
    // The buffer steps out of the codec while the message borrows it and
    // the handlers borrow the whole context.
    let mut inflated = cx.codec.take_buffer();
    let limit = cx.config.limits.max_message_size;
    let end = match cx.codec.inflater().inflate(payload, limit, &mut inflated) {
        Err(InflateError::TooBig) => Some(End::Close(close::TOO_BIG)),
        Err(InflateError::Corrupt) => Some(End::Close(close::INVALID_PAYLOAD)),
        Ok(()) if text && std::str::from_utf8(&inflated).is_err() => {
            Some(End::Close(close::INVALID_PAYLOAD))
        }
        Ok(()) if text => on_message(Message::Text(&mut inflated), handling, session, out, cx),
        Ok(()) => on_message(Message::Binary(&mut inflated), handling, session, out, cx),
    };
    cx.codec.give_buffer(inflated);
    end
}

/// Queues replies to the sender within their bound (they are not room
/// events: twice `--max-write-buffer`, as `backpressure` decides), their
/// whole frames counted. With a codec (the connection agreed to
/// permessage-deflate) data frames worth it go compressed.
pub(super) struct BoundedSink<'a> {
    out: &'a mut Outbound,
    codec: Option<&'a mut Codec>,
    rule: Backpressure,
    pub overflowed: bool,
    /// Data messages queued, for the shard's counters.
    messages: u64,
    /// The shard's requests, adopted while a message is handled so that a
    /// request costs no buffer of its own; those from `first` on are this
    /// message's.
    requests: Vec<Request>,
    first: usize,
    /// `Some` on a `roomcast.msgpack` connection: the buffer its text
    /// replies are converted in.
    packed: Option<Vec<u8>>,
}

impl<'a> BoundedSink<'a> {
    pub fn new(out: &'a mut Outbound, rule: Backpressure, codec: Option<&'a mut Codec>) -> Self {
        Self {
            out,
            codec,
            rule,
            overflowed: false,
            messages: 0,
            requests: Vec::new(),
            first: 0,
            packed: None,
        }
    }

    /// The same sink, sending text replies as MessagePack binary frames
    /// when `msgpack`.
    pub fn with_msgpack(mut self, msgpack: bool) -> Self {
        self.packed = msgpack.then(Vec::new);
        self
    }

    /// Takes the shard's `requests` to append this message's to; `finish`
    /// gives them back.
    fn adopt_requests(&mut self, requests: &mut Vec<Request>) {
        self.requests = std::mem::take(requests);
        self.first = self.requests.len();
    }

    // Inlined into the echo and event paths: as a call it cost an echo
    // about 20 instructions more in user space.
    #[inline(always)]
    pub fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        if self.overflowed {
            return;
        }
        let compressed = match self.codec.as_deref_mut() {
            Some(codec) if !opcode.is_control() => codec.compress(payload),
            _ => None,
        };
        let len = frame::server_frame_len(compressed.map_or(payload.len(), <[u8]>::len));
        // A reply is never held back: it is queued or the client is cut.
        if self
            .rule
            .fate(self.out.pending(), len, Delivery::Other, false)
            != Fate::Queue
        {
            self.overflowed = true;
            return;
        }
        match compressed {
            Some(deflated) => self.out.push_compressed(opcode, deflated),
            None => self.out.push_frame(opcode, payload),
        }
        if !opcode.is_control() {
            self.messages += 1;
        }
    }
}

impl Sink for BoundedSink<'_> {
    fn send_text(&mut self, text: &[u8]) {
        let Some(mut packed) = self.packed.take() else {
            self.push(OpCode::Text, text);
            return;
        };
        if packed::pack(text, &mut packed) {
            self.push(OpCode::Binary, &packed);
        }
        self.packed = Some(packed);
    }

    fn request(&mut self, request: Request) {
        self.requests.push(request);
    }
}
