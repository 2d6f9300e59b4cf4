//! One connection to Redis, sans-IO: commands are pipelined (written back
//! to back without waiting), and each reply is matched to the request that
//! asked for it by order, as Redis answers in order. On a RESP3 connection
//! pushes (channel messages, subscription confirmations) come between the
//! replies; they are handed out in the order they arrived, which is the
//! order Redis produced them in, and answer no request.
//!
//! Owns the output bytes, the queue of requests in flight and the input not
//! yet parsed. Bounded (`Bounds`): past its bound in requests waiting for
//! replies or in bytes not yet written, `push` refuses and says so
//! (`take_overflow`), so a stalled Redis cannot grow a node's memory; the
//! bridge keeps a lower bound of its own for what callers wait for
//! (`within`). It also remembers when each request was queued and when a
//! reply last came (`stamp`), for the bridge to tell a Redis that stopped
//! answering from one that is only behind (`silent_since`).
//!
//! For a Redis Cluster (`keeping`), each command's bytes are kept until
//! its reply, so that a command refused with `-MOVED` or `-ASK` (not run)
//! can be sent again elsewhere; and a subscription may wait for its
//! confirmation push (`push_confirmed`), since a cluster node answers a
//! subscription to a slot it does not serve with an error reply instead.

use std::collections::VecDeque;
use std::time::Instant;

use crate::redis::resp::{self, Reply, RespError};

/// Bytes of buffer a reset pipeline keeps.
const KEPT_CAPACITY: usize = 64 * 1024;

/// How much may wait for Redis on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Requests waiting for a reply.
    pub in_flight: usize,
    /// Output bytes not yet written to the socket (what was written is
    /// the kernel's and Redis's to hold, not this process's).
    pub unsent: usize,
}

#[derive(Debug)]
pub struct Pipeline<T> {
    output: Vec<u8>,
    in_flight: VecDeque<T>,
    /// When each of the first `queued_at.len()` requests in flight was
    /// queued; the ones after it were pushed since the last `stamp`.
    queued_at: VecDeque<Instant>,
    /// A reply came since the last `stamp`.
    answered: bool,
    /// The `stamp` after the last reply.
    answered_at: Option<Instant>,
    input: Vec<u8>,
    bounds: Bounds,
    /// A push was refused since the last `take_overflow`.
    overflowed: bool,
    /// Per request in flight, in step with `in_flight`: how it is answered.
    waits: VecDeque<Wait>,
    /// Keep each command's bytes until its reply (`keeping`).
    keep: bool,
}

/// How one request in flight is answered, and what to send again.
#[derive(Debug, Default)]
struct Wait {
    /// A push `[kind, channel, ...]` answers it (a subscription's
    /// confirmation), or an error reply.
    confirm: Option<(&'static [u8], Vec<u8>)>,
    /// The command, kept for a redirection.
    command: Option<Vec<u8>>,
    /// Redirections it followed so far.
    redirects: u8,
}

impl<T> Pipeline<T> {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            output: Vec::new(),
            in_flight: VecDeque::new(),
            queued_at: VecDeque::new(),
            answered: false,
            answered_at: None,
            input: Vec::new(),
            bounds,
            overflowed: false,
            waits: VecDeque::new(),
            keep: false,
        }
    }

    /// A pipeline that keeps each command until its reply, for `-MOVED`
    /// and `-ASK` (Redis Cluster).
    pub fn keeping(bounds: Bounds) -> Self {
        Self {
            keep: true,
            ..Self::new(bounds)
        }
    }

    /// Queues the command `write` appends (exactly one), answered to
    /// `token`; a full pipeline hands `token` back.
    pub fn push(&mut self, token: T, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), T> {
        self.push_waiting(token, Wait::default(), write)
    }

    /// Queues a command answered by the push `[kind, channel, ...]` (or an
    /// error reply): an `SSUBSCRIBE` or `SUNSUBSCRIBE` of one channel.
    pub fn push_confirmed(
        &mut self,
        token: T,
        kind: &'static [u8],
        channel: &[u8],
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), T> {
        let wait = Wait {
            confirm: Some((kind, channel.to_vec())),
            ..Wait::default()
        };
        self.push_waiting(token, wait, write)
    }

    /// Queues `command` again after a redirection (its `redirects`-th).
    pub fn push_again(&mut self, token: T, command: Vec<u8>, redirects: u8) -> Result<(), T> {
        let wait = Wait {
            redirects,
            ..Wait::default()
        };
        self.push_waiting(token, wait, |out| out.extend_from_slice(&command))
    }

    fn push_waiting(
        &mut self,
        token: T,
        mut wait: Wait,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), T> {
        if !self.within(self.bounds) {
            self.overflowed = true;
            return Err(token);
        }
        let start = self.output.len();
        write(&mut self.output);
        // A subscription is not sent again elsewhere: its confirmation is
        // awaited where it went (a refusal is an ordinary error reply).
        if self.keep && wait.confirm.is_none() {
            wait.command = Some(self.output[start..].to_vec());
        }
        self.in_flight.push_back(token);
        self.waits.push_back(wait);
        Ok(())
    }

    /// Whether less than `bounds` waits: one more request may be pushed.
    pub fn within(&self, bounds: Bounds) -> bool {
        self.in_flight.len() < bounds.in_flight && self.output.len() < bounds.unsent
    }

    /// Whether a push was refused since the last call.
    pub fn take_overflow(&mut self) -> bool {
        std::mem::take(&mut self.overflowed)
    }

    /// Dates the requests pushed since the last call `now`: the caller
    /// calls it once per turn of its loop, before it waits.
    pub fn stamp(&mut self, now: Instant) {
        let unstamped = self.in_flight.len() - self.queued_at.len();
        self.queued_at.extend(std::iter::repeat_n(now, unstamped));
        if std::mem::take(&mut self.answered) {
            self.answered_at = Some(now);
        }
    }

    /// Since when the requests waiting have got no answer: the date of the
    /// oldest one still waiting, or the stamp after the last reply when
    /// that is later (`None`: none waits, or it was pushed since the last
    /// `stamp`). A Redis that answers steadily is never silent long, however
    /// deep its queue: under a burst (a join storm on a busy machine) the
    /// oldest command may wait longer than `--redis-timeout` while Redis
    /// works through what came before it.
    pub fn silent_since(&self) -> Option<Instant> {
        let oldest = self.queued_at.front().copied()?;
        Some(self.answered_at.map_or(oldest, |at| at.max(oldest)))
    }

    /// Queues a command that gets no reply of its own (on RESP3, SUBSCRIBE
    /// and UNSUBSCRIBE are confirmed by pushes).
    pub fn push_unanswered(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.output);
    }

    /// Bytes to write to the socket; call `written` with how many went.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    pub fn written(&mut self, n: usize) {
        self.output.drain(..n.min(self.output.len()));
    }

    /// Requests waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Feeds bytes read from the socket; every reply now complete is
    /// returned with its request's token, and every push as it is, in the
    /// order they came. An error (a reply Redis never sends, or one with no
    /// request) means the connection must be dropped; `reset` then gives
    /// back what was in flight.
    pub fn on_input(&mut self, bytes: &[u8]) -> Result<Vec<Incoming<T>>, PipelineError> {
        self.input.extend_from_slice(bytes);
        let mut done = Vec::new();
        let mut at = 0;
        while let Some((reply, used)) = resp::parse(&self.input[at..])? {
            at += used;
            if let Reply::Push(items) = reply {
                if self.confirms(&items) {
                    self.answered = true;
                    self.waits.pop_front();
                    self.queued_at.pop_front();
                    if let Some(token) = self.in_flight.pop_front() {
                        done.push(Incoming::Reply(token, Reply::Push(items)));
                    }
                } else {
                    done.push(Incoming::Push(items));
                }
                continue;
            }
            let token = self
                .in_flight
                .pop_front()
                .ok_or(PipelineError::Unrequested)?;
            self.answered = true;
            // The dated requests come first: if any is, this one was.
            self.queued_at.pop_front();
            let wait = self.waits.pop_front().unwrap_or_default();
            match (reply, wait.command) {
                (Reply::Error(error), Some(command)) if is_redirect(&error) => {
                    done.push(Incoming::Redirect {
                        token,
                        error,
                        command,
                        redirects: wait.redirects,
                    });
                }
                (reply, _) => done.push(Incoming::Reply(token, reply)),
            }
        }
        self.input.drain(..at);
        Ok(done)
    }

    /// The connection is gone: the requests it had in flight (whose effect
    /// on Redis is unknown) and unsent commands are handed back, and the
    /// pipeline starts empty.
    pub fn reset(&mut self) -> Vec<T> {
        self.output.clear();
        self.input.clear();
        self.queued_at.clear();
        self.answered = false;
        self.answered_at = None;
        self.waits.clear();
        self.overflowed = false;
        let lost = self.in_flight.drain(..).collect();
        // What a stalled Redis made grow is given back, not kept for good.
        self.output.shrink_to(KEPT_CAPACITY);
        self.input.shrink_to(KEPT_CAPACITY);
        self.in_flight.shrink_to(KEPT_CAPACITY / 64);
        self.queued_at.shrink_to(KEPT_CAPACITY / 64);
        lost
    }

    /// Whether `push` is the confirmation the oldest request waits for.
    fn confirms(&self, push: &[Reply]) -> bool {
        let Some(Wait {
            confirm: Some((kind, channel)),
            ..
        }) = self.waits.front()
        else {
            return false;
        };
        matches!(push, [k, c, ..] if k.as_bytes() == Some(kind) && c.as_bytes() == Some(channel))
    }
}

/// `-MOVED ...` or `-ASK ...`: a Redis Cluster node did not run the command.
fn is_redirect(error: &str) -> bool {
    error.starts_with("MOVED ") || error.starts_with("ASK ")
}

/// What came in, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<T> {
    /// The reply to the request `T`.
    Reply(T, Reply),
    /// A RESP3 push.
    Push(Vec<Reply>),
    /// `-MOVED` or `-ASK` to the request `token` of a `keeping` pipeline:
    /// not run; `command` may go again where `error` says, as the
    /// `redirects + 1`-th redirection.
    Redirect {
        token: T,
        error: String,
        command: Vec<u8>,
        redirects: u8,
    },
}

/// Why a command connection must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineError {
    Resp(RespError),
    /// A reply arrived with no request waiting for it.
    Unrequested,
}

impl From<RespError> for PipelineError {
    fn from(e: RespError) -> Self {
        PipelineError::Resp(e)
    }
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineError::Resp(e) => e.fmt(f),
            PipelineError::Unrequested => f.write_str("a Redis reply with no request"),
        }
    }
}

impl std::error::Error for PipelineError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(out: &mut Vec<u8>) {
        resp::write_command(out, &["PING"]);
    }

    /// At most `n` requests in flight, bytes unbounded.
    fn requests(n: usize) -> Bounds {
        Bounds {
            in_flight: n,
            unsent: usize::MAX,
        }
    }

    #[test]
    fn replies_go_to_their_requests_in_order_across_reads() {
        let mut p = Pipeline::new(requests(8));
        p.push("a", ping).unwrap();
        p.push("b", |out| resp::write_command(out, &["INCR", "k"]))
            .unwrap();
        assert_eq!(
            p.output(),
            b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"
        );
        let all = p.output().to_vec();
        p.written(5);
        assert_eq!(p.output(), &all[5..]);
        assert_eq!(
            p.on_input(b"+PONG\r\n:").unwrap(),
            [Incoming::Reply("a", Reply::Status("PONG".into()))]
        );
        assert_eq!(p.in_flight(), 1);
        assert_eq!(
            p.on_input(b"7\r\n").unwrap(),
            [Incoming::Reply("b", Reply::Integer(7))]
        );
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn pushes_come_between_replies_in_order_and_answer_no_request() {
        let mut p = Pipeline::new(requests(8));
        p.push_unanswered(|out| resp::write_command(out, &["SUBSCRIBE", "c"]));
        p.push("a", ping).unwrap();
        assert_eq!(p.in_flight(), 1);
        let input = b">3\r\n+subscribe\r\n+c\r\n:1\r\n>1\r\n:9\r\n+PONG\r\n>1\r\n:8\r\n";
        assert_eq!(
            p.on_input(input).unwrap(),
            [
                Incoming::Push(vec![
                    Reply::Status("subscribe".into()),
                    Reply::Status("c".into()),
                    Reply::Integer(1)
                ]),
                Incoming::Push(vec![Reply::Integer(9)]),
                Incoming::Reply("a", Reply::Status("PONG".into())),
                Incoming::Push(vec![Reply::Integer(8)]),
            ]
        );
    }

    #[test]
    fn a_full_pipeline_refuses_and_a_reset_hands_back_what_was_in_flight() {
        let mut p = Pipeline::new(requests(2));
        p.push(1, ping).unwrap();
        p.push(2, ping).unwrap();
        assert_eq!(p.push(3, ping), Err(3));
        assert_eq!(p.on_input(b"+PONG\r\n").unwrap().len(), 1);
        p.push(3, ping).unwrap();
        assert_eq!(p.reset(), [2, 3]);
        assert!(p.output().is_empty());
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn a_subscription_is_answered_by_its_confirmation_or_an_error() {
        let mut p = Pipeline::new(requests(8));
        let ssub = |out: &mut Vec<u8>| resp::write_command(out, &["SSUBSCRIBE", "c"]);
        p.push_confirmed("sub", b"ssubscribe", b"c", ssub).unwrap();
        p.push("ping", ping).unwrap();
        let input = b">3\r\n$8\r\nsmessage\r\n$1\r\nd\r\n$1\r\nx\r\n>3\r\n$10\r\nssubscribe\r\n$1\r\nc\r\n:1\r\n+PONG\r\n";
        let got = p.on_input(input).unwrap();
        assert!(
            matches!(got[0], Incoming::Push(_)),
            "another channel's message"
        );
        assert!(matches!(got[1], Incoming::Reply("sub", Reply::Push(_))));
        assert_eq!(
            got[2],
            Incoming::Reply("ping", Reply::Status("PONG".into()))
        );
        p.push_confirmed("sub", b"ssubscribe", b"c", ssub).unwrap();
        p.push("ping", ping).unwrap();
        let got = p.on_input(b"-MOVED 1 h:1\r\n+PONG\r\n").unwrap();
        assert_eq!(
            got[0],
            Incoming::Reply("sub", Reply::Error("MOVED 1 h:1".into()))
        );
        assert_eq!(
            got[1],
            Incoming::Reply("ping", Reply::Status("PONG".into()))
        );
    }

    #[test]
    fn a_keeping_pipeline_hands_back_a_redirected_command() {
        let mut p = Pipeline::keeping(requests(8));
        p.push("a", ping).unwrap();
        p.push("b", ping).unwrap();
        let got = p.on_input(b"-MOVED 7 h:1\r\n-ERR no\r\n").unwrap();
        assert_eq!(
            got[0],
            Incoming::Redirect {
                token: "a",
                error: "MOVED 7 h:1".into(),
                command: b"*1\r\n$4\r\nPING\r\n".to_vec(),
                redirects: 0
            }
        );
        assert_eq!(got[1], Incoming::Reply("b", Reply::Error("ERR no".into())));
        p.push_again("a", b"*1\r\n$4\r\nPING\r\n".to_vec(), 1)
            .unwrap();
        let got = p.on_input(b"-ASK 7 h:2\r\n").unwrap();
        assert!(matches!(got[0], Incoming::Redirect { redirects: 1, .. }));
        let mut plain = Pipeline::new(requests(8));
        plain.push("a", ping).unwrap();
        let got = plain.on_input(b"-MOVED 7 h:1\r\n").unwrap();
        assert_eq!(
            got[0],
            Incoming::Reply("a", Reply::Error("MOVED 7 h:1".into()))
        );
    }

    #[test]
    fn a_reply_nobody_asked_for_or_garbage_drops_the_connection() {
        let mut p: Pipeline<u8> = Pipeline::new(requests(2));
        assert_eq!(p.on_input(b"+OK\r\n"), Err(PipelineError::Unrequested));
        let mut p: Pipeline<u8> = Pipeline::new(requests(2));
        p.push(1, ping).unwrap();
        assert_eq!(
            p.on_input(b"?\r\n"),
            Err(PipelineError::Resp(RespError::UnknownType(b'?')))
        );
    }

    #[test]
    fn unsent_bytes_are_bounded_and_a_refusal_is_reported_once() {
        let bounds = Bounds {
            in_flight: 100,
            unsent: 20,
        };
        let mut p = Pipeline::new(bounds);
        p.push(1, ping).unwrap();
        assert!(p.within(bounds));
        p.push(2, ping).unwrap();
        assert_eq!(p.output().len(), 28);
        assert!(!p.within(bounds));
        assert!(!p.take_overflow());
        assert_eq!(p.push(3, ping), Err(3));
        assert!(p.take_overflow());
        assert!(!p.take_overflow());
        // What was written no longer counts against the bound.
        p.written(28);
        p.push(3, ping).unwrap();
        // A lower bound of the caller's own refuses earlier.
        let lower = Bounds {
            in_flight: 3,
            unsent: 20,
        };
        assert!(!p.within(lower));
    }

    #[test]
    fn a_link_answering_steadily_is_not_silent_however_old_its_queue() {
        let start = Instant::now();
        let later = |ms| start + std::time::Duration::from_millis(ms);
        let mut p = Pipeline::new(requests(8));
        for token in ["a", "b", "c"] {
            p.push(token, ping).unwrap();
        }
        p.stamp(start);
        assert_eq!(p.silent_since(), Some(start));
        // "a" is answered at 1.5 s: "b" and "c" were queued at 0 but the
        // link has been silent only since that reply.
        p.on_input(b"+PONG\r\n").unwrap();
        p.stamp(later(1500));
        assert_eq!(p.silent_since(), Some(later(1500)));
        p.stamp(later(3000));
        assert_eq!(p.silent_since(), Some(later(1500)), "no reply since");
        p.on_input(b"+PONG\r\n+PONG\r\n").unwrap();
        assert_eq!(p.silent_since(), None);
        // Pushed after the last reply: dated by its own stamp.
        p.push("d", ping).unwrap();
        p.stamp(later(4000));
        assert_eq!(p.silent_since(), Some(later(4000)));
        p.reset();
        p.push("e", ping).unwrap();
        p.stamp(later(100));
        assert_eq!(
            p.silent_since(),
            Some(later(100)),
            "reset forgets the replies"
        );
    }

    #[test]
    fn the_oldest_unanswered_request_is_dated_by_the_stamp_after_its_push() {
        let start = Instant::now();
        let later = |ms| start + std::time::Duration::from_millis(ms);
        let mut p = Pipeline::new(requests(8));
        assert_eq!(p.silent_since(), None);
        p.push("a", ping).unwrap();
        // Pushed this turn: not dated yet, so not late either.
        assert_eq!(p.silent_since(), None);
        p.stamp(start);
        p.push("b", ping).unwrap();
        p.stamp(later(100));
        p.stamp(later(200));
        assert_eq!(p.silent_since(), Some(start));
        p.on_input(b"+PONG\r\n").unwrap();
        assert_eq!(p.silent_since(), Some(later(100)));
        p.push("c", ping).unwrap();
        p.on_input(b"+PONG\r\n").unwrap();
        // "c" was pushed after the last stamp.
        assert_eq!(p.silent_since(), None);
        p.stamp(later(300));
        assert_eq!(p.silent_since(), Some(later(300)));
        p.reset();
        assert_eq!(p.silent_since(), None);
        p.push("d", ping).unwrap();
        p.stamp(later(400));
        assert_eq!(p.silent_since(), Some(later(400)));
    }
}
