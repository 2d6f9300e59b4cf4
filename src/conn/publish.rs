//! `POST /publish` on one connection, sans-IO: reading the body as its head
//! framed it, and gathering each message's `seq` into the `200` response.
//!
//! Owns: the body's framing (`Content-Length` or chunked, bounded by
//! `--max-message-size`), the results of one request in body order, and the
//! success response. Must not touch: sockets or clocks, routing and the
//! token checks (`routes`), the body's meaning (`proto::publish`), or the
//! rooms, which are reached only through `proto::Request::HttpPublish`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::Method;
use crate::api::auth::Caller;
use crate::auth::Claims;
use crate::codes::ErrorCode;
use crate::codes::limits;
use crate::conn::report::Report;
use crate::conn::{Connection, Context, State};
use crate::http::chunked::{ChunkedDecoder, ChunkedError};
use crate::http::request::HeadReader;
use crate::http::response;
use crate::json;
use crate::proto::publish::{NO_SEQ, PublishError};
use crate::proto::{self, Request};

/// A request with a body (`POST /publish`, `POST /api/<method>`) whose
/// head passed every check a head can pass.
pub(super) struct BodyHead {
    pub purpose: Purpose,
    pub framing: Framing,
    /// Whether the response may keep the connection open.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for `100 Continue`.
    pub expects_continue: bool,
}

/// What a body is for, and who sent it.
pub(super) enum Purpose {
    /// Messages to publish, under the token's claims.
    Publish(Claims),
    /// A Server API call (section 12).
    Api { method: Method, caller: Caller },
}

impl Purpose {
    /// The most bytes the body may have: `--max-message-size`, or for the
    /// API at least `MIN_API_BODY` (section 12).
    pub(super) fn limit(&self, max_message_size: usize) -> usize {
        match self {
            Purpose::Publish(_) => max_message_size,
            Purpose::Api { .. } => max_message_size.max(limits::MIN_API_BODY),
        }
    }
}

/// How the body arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// `Content-Length`, already checked against the limit.
    Length(usize),
    Chunked,
}

/// The body of a `/publish` request, as it arrives.
pub(super) struct BodyReader {
    purpose: Purpose,
    keep_alive: bool,
    body: Body,
    /// When the whole request must have arrived (the head's deadline).
    deadline: Instant,
}

enum Body {
    /// The body is read in place once all of it is in the input: until
    /// then nothing is consumed, and the reactor keeps the bytes.
    Length(usize),
    /// Chunks are decoded into a buffer as they come.
    Chunked {
        decoder: ChunkedDecoder,
        decoded: Vec<u8>,
    },
}

/// How far a call to [`BodyReader::read`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyRead {
    /// More bytes are needed; this many of the input were used.
    Incomplete(usize),
    /// The body ends this many bytes into the input.
    Complete(usize),
}

/// A complete body and what the head said about it.
pub(super) struct Received {
    pub purpose: Purpose,
    pub keep_alive: bool,
    /// The decoded body of a chunked request; `None` when the body is the
    /// first `Content-Length` bytes of the input.
    pub decoded: Option<Vec<u8>>,
}

impl BodyReader {
    /// A reader for the body `head` announced, of at most `limit` bytes,
    /// due by `deadline`.
    pub fn new(head: BodyHead, limit: usize, deadline: Instant) -> Self {
        let body = match head.framing {
            Framing::Length(length) => Body::Length(length),
            Framing::Chunked => Body::Chunked {
                decoder: ChunkedDecoder::new(limit),
                decoded: Vec::new(),
            },
        };
        Self {
            purpose: head.purpose,
            keep_alive: head.keep_alive,
            body,
            deadline,
        }
    }

    /// Whether the body is a Server API call's (its errors have the API's
    /// shape, not `/publish`'s).
    pub fn is_api(&self) -> bool {
        matches!(self.purpose, Purpose::Api { .. })
    }

    /// When the whole request must have arrived.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Reads what `input` holds of the body.
    pub fn read(&mut self, input: &[u8]) -> Result<BodyRead, ChunkedError> {
        match &mut self.body {
            Body::Length(length) if input.len() >= *length => Ok(BodyRead::Complete(*length)),
            Body::Length(_) => Ok(BodyRead::Incomplete(0)),
            Body::Chunked { decoder, decoded } => {
                let progress = decoder.decode(input, decoded)?;
                Ok(if progress.done {
                    BodyRead::Complete(progress.consumed)
                } else {
                    BodyRead::Incomplete(progress.consumed)
                })
            }
        }
    }

    /// Once the body is complete.
    pub fn into_received(self) -> Received {
        let decoded = match self.body {
            Body::Length(_) => None,
            Body::Chunked { decoded, .. } => Some(decoded),
        };
        Received {
            purpose: self.purpose,
            keep_alive: self.keep_alive,
            decoded,
        }
    }
}

/// What became of one message of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Waiting,
    Sequenced(u64),
    /// A volatile message went out (section 14): it has no `seq`.
    Volatile,
    /// Refused: the cluster's Redis is away.
    Refused,
}

/// The messages of one request, out with the rooms, and the `seq` each got.
pub(super) struct Results {
    rooms: Vec<Arc<str>>,
    seqs: Vec<Outcome>,
    missing: usize,
    /// Whether the response may keep the connection open; cleared when the
    /// peer pipelines too much meanwhile.
    pub keep_alive: bool,
    /// How long the next request on a kept-alive connection may take
    /// (`--handshake-timeout`).
    next_request_timeout: Duration,
}

impl Results {
    /// Waiting for one `seq` per room, in body order.
    pub fn new(rooms: Vec<Arc<str>>, keep_alive: bool, next_request_timeout: Duration) -> Self {
        Self {
            seqs: vec![Outcome::Waiting; rooms.len()],
            missing: rooms.len(),
            rooms,
            keep_alive,
            next_request_timeout,
        }
    }

    /// Records the `seq` of message `index` (`None`: it was refused);
    /// true once every message has its outcome.
    pub fn record(&mut self, index: usize, seq: Option<u64>) -> bool {
        if let Some(slot @ Outcome::Waiting) = self.seqs.get_mut(index) {
            *slot = match seq {
                None => Outcome::Refused,
                Some(NO_SEQ) => Outcome::Volatile,
                Some(seq) => Outcome::Sequenced(seq),
            };
            self.missing -= 1;
        }
        self.missing == 0
    }

    /// The response's status: 200, or 503 if any message was refused.
    pub fn status(&self) -> u16 {
        if self.seqs.contains(&Outcome::Refused) {
            ErrorCode::Unavailable.http_status()
        } else {
            200
        }
    }

    /// `{"success":true,"results":[{"room","seq"}]}`, or with a message
    /// refused `{"success":false,"error":{..},"results":[..]}` where each
    /// refused message has `"error":"UNAVAILABLE"` instead of a `seq`: the
    /// others were published.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let status = self.status();
        let mut body = Vec::with_capacity(96 + self.rooms.len() * 48);
        if status == 200 {
            body.extend_from_slice(b"{\"success\":true,");
        } else {
            let code = ErrorCode::Unavailable;
            let mut error = Vec::with_capacity(96);
            response::write_error_body(&mut error, code, "the cluster's Redis is unreachable");
            body.extend_from_slice(b"{\"success\":false,");
            // The error body's members, without its braces.
            body.extend_from_slice(&error[1..error.len() - 1]);
            body.push(b',');
        }
        body.extend_from_slice(b"\"results\":[");
        for (i, (room, outcome)) in self.rooms.iter().zip(&self.seqs).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"room\":");
            json::write_str(&mut body, room);
            match outcome {
                Outcome::Sequenced(seq) => {
                    body.extend_from_slice(b",\"seq\":");
                    json::write_u64(&mut body, *seq);
                }
                Outcome::Volatile => {}
                Outcome::Refused | Outcome::Waiting => {
                    body.extend_from_slice(b",\"error\":\"UNAVAILABLE\"");
                }
            }
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        response::write_json(out, status, &body, self.keep_alive);
    }
}

/// The `POST /publish` states of a connection: reading the body, waiting
/// for the rooms, answering.
impl Connection {
    /// Whether a `POST /publish` or an API call is waiting for the rooms' answers; the
    /// connection must stay until they come, even if the peer half-closed.
    pub fn is_publishing(&self) -> bool {
        matches!(self.state, State::Publishing(_) | State::Calling(_))
    }

    /// The rooms gave message `index` of the pending `POST /publish` its
    /// `seq`. Once every message has one, the `200` response is queued and
    /// `Some(keep_alive)` returned: with `true` the connection reads its
    /// next request (input held back meanwhile should be fed again).
    pub fn on_published(
        &mut self,
        index: usize,
        seq: Option<u64>,
        now: Instant,
    ) -> Option<(bool, u16)> {
        let State::Publishing(results) = &mut self.state else {
            return None;
        };
        if !results.record(index, seq) {
            return None;
        }
        let keep_alive = results.keep_alive;
        let status = results.status();
        let timeout = results.next_request_timeout;
        let mut bytes = Vec::with_capacity(256);
        results.write_response(&mut bytes);
        self.out.push_raw(&bytes);
        self.after_response(keep_alive, timeout, now);
        Some((keep_alive, status))
    }

    pub(super) fn expect_body(&mut self, head: BodyHead, deadline: Instant, cx: &Context<'_>) {
        if head.expects_continue {
            let mut bytes = Vec::with_capacity(32);
            response::write_continue(&mut bytes);
            self.out.push_raw(&bytes);
        }
        let limit = head.purpose.limit(cx.config.limits.max_message_size);
        let reader = BodyReader::new(head, limit, deadline);
        self.state = State::Body(Box::new(reader));
    }

    /// The body of a `/publish` is complete: it is the first `length`
    /// bytes of `input`, or was decoded from chunks. Valid messages go to
    /// the rooms; anything else is answered at once.
    pub(super) fn on_body(&mut self, input: &mut [u8], length: usize, cx: &mut Context<'_>) {
        // Every path below sets the next state; until then the connection
        // counts as finishing, never as anything that reads input.
        let finishing = State::Finishing { deadline: cx.now };
        let reader = match std::mem::replace(&mut self.state, finishing) {
            State::Body(reader) => reader,
            other => {
                self.state = other;
                return;
            }
        };
        let mut received = reader.into_received();
        let body = match received.decoded.as_deref_mut() {
            Some(decoded) => decoded,
            None => input.get_mut(..length).unwrap_or_default(),
        };
        let keep_alive = received.keep_alive;
        let claims = match received.purpose {
            Purpose::Publish(claims) => claims,
            Purpose::Api { method, caller } => {
                return self.on_api_body(method, caller, body, keep_alive, cx);
            }
        };
        let parsed = proto::publish::parse(body, cx.parser, &claims).and_then(|messages| {
            let rate = claims.rate.unwrap_or(cx.config.limits.publish_rate);
            let subject = &claims.sub;
            if cx
                .admission
                .admit_publish(subject, messages.len(), rate, cx.now)
            {
                Ok(messages)
            } else {
                cx.metrics.rate_limited.inc();
                Err(PublishError::RateLimited { rate })
            }
        });
        match parsed {
            Ok(messages) => self.send_to_rooms(messages, &claims, keep_alive, cx),
            Err(error) => {
                let mut bytes = Vec::with_capacity(256);
                // A client over the rate may try again in a second.
                let retry: &[(&str, &str)] = match error {
                    PublishError::RateLimited { .. } => &[("Retry-After", "1")],
                    _ => &[],
                };
                response::write_failure(
                    &mut bytes,
                    error.code(),
                    &error.message(),
                    retry,
                    keep_alive,
                );
                self.out.push_raw(&bytes);
                cx.reports
                    .push(Report::publish_answered(error.code().http_status()));
                self.after_response(keep_alive, cx.config.listen.handshake_timeout, cx.now);
            }
        }
    }

    /// Hands every message of a valid body to the rooms and waits for their
    /// `seq`s.
    fn send_to_rooms(
        &mut self,
        messages: Vec<proto::publish::Message>,
        claims: &Claims,
        keep_alive: bool,
        cx: &mut Context<'_>,
    ) {
        let rooms = messages.iter().map(|m| m.room.clone()).collect();
        for (index, message) in messages.into_iter().enumerate() {
            cx.requests.push(Request::HttpPublish {
                index,
                message,
                from: claims.sub.clone(),
            });
        }
        let timeout = cx.config.listen.handshake_timeout;
        self.state = State::Publishing(Box::new(Results::new(rooms, keep_alive, timeout)));
    }

    /// A chunked body that breaks its framing or the size limit: answered,
    /// then the connection closes, since where the next request would
    /// start is unknown.
    pub(super) fn refuse_body(&mut self, error: ChunkedError, cx: &mut Context<'_>) {
        let mut bytes = Vec::with_capacity(256);
        let api = matches!(&self.state, State::Body(reader) if reader.is_api());
        if api {
            response::write_error(&mut bytes, error.code(), error.message(), &[]);
        } else {
            response::write_failure(&mut bytes, error.code(), error.message(), &[], false);
        }
        self.out.push_raw(&bytes);
        cx.reports
            .push(Report::publish_answered(error.code().http_status()));
        self.finish(cx.now);
    }

    /// After a response: the next request on a kept-alive connection gets
    /// a fresh deadline; otherwise the connection finishes.
    pub(super) fn after_response(&mut self, keep_alive: bool, timeout: Duration, now: Instant) {
        if keep_alive {
            self.state = State::Request {
                reader: HeadReader::default(),
                deadline: now + timeout,
            };
        } else {
            self.finish(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(framing: Framing) -> BodyHead {
        BodyHead {
            purpose: Purpose::Publish(Claims::new("u", f64::MAX)),
            framing,
            keep_alive: true,
            expects_continue: false,
        }
    }

    #[test]
    fn a_length_body_is_read_in_place_once_complete() {
        let mut reader = BodyReader::new(head(Framing::Length(4)), 100, Instant::now());
        assert_eq!(reader.read(b"abc"), Ok(BodyRead::Incomplete(0)));
        assert_eq!(reader.read(b"abcdGET"), Ok(BodyRead::Complete(4)));
        assert_eq!(reader.into_received().decoded, None);
    }

    #[test]
    fn a_chunked_body_is_decoded_as_it_comes() {
        let mut reader = BodyReader::new(head(Framing::Chunked), 100, Instant::now());
        assert_eq!(reader.read(b"2\r\nab"), Ok(BodyRead::Incomplete(5)));
        assert_eq!(reader.read(b"\r\n0\r\n\r\nGET"), Ok(BodyRead::Complete(7)));
        assert_eq!(reader.into_received().decoded.as_deref(), Some(&b"ab"[..]));
        let mut small = BodyReader::new(head(Framing::Chunked), 1, Instant::now());
        assert_eq!(small.read(b"2\r\n"), Err(ChunkedError::TooLarge));
    }

    #[test]
    fn results_are_listed_in_body_order_once_all_are_in() {
        let rooms: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b\"")];
        let mut results = Results::new(rooms, false, crate::conn::REQUEST_TIMEOUT);
        assert!(!results.record(1, Some(7)));
        assert!(!results.record(1, Some(8)), "a repeated index counts once");
        assert!(results.record(0, Some(3)));
        let mut out = Vec::new();
        results.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with(
            r#"{"success":true,"results":[{"room":"a","seq":3},{"room":"b\"","seq":7}]}"#
        ));
    }

    #[test]
    fn a_refused_message_makes_the_response_a_503_that_lists_what_went_through() {
        let rooms: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
        let mut results = Results::new(rooms, true, crate::conn::REQUEST_TIMEOUT);
        assert!(!results.record(0, Some(3)));
        assert!(results.record(1, None));
        assert_eq!(results.status(), 503);
        let mut out = Vec::new();
        results.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.ends_with(
            r#"{"success":false,"error":{"code":"UNAVAILABLE","message":"the cluster's Redis is unreachable"},"results":[{"room":"a","seq":3},{"room":"b","error":"UNAVAILABLE"}]}"#
        ), "{text}");
    }
}
