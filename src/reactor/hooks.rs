//! The shards' side of the proxies (section 13.2: rpc, publish and
//! subscribe): which requests go to a backend, the bodies they are sent as, the requests a connection sent
//! behind a pending decision, and what each answer decides. Sans-IO but
//! for the `HookHandle` it sends through: the shard carries out the
//! decisions (`shard::proxied`).
//!
//! Order: from a connection's first room event at the publish proxy until
//! its line is empty again, its room requests (joins, leaves, room events,
//! `presence:get`) wait in a line of its own here, and are carried out
//! from the front as far as every earlier one is decided. Decisions are
//! asked for at once, side by side (up to `--hook-concurrency` per URL),
//! so a connection's rate is not one backend round trip per message; the
//! line only puts the answers back in order. The line is on the
//! connection's shard, not at the room's owner, because the order to keep
//! is the connection's across rooms (a `room:leave` behind a message to
//! that room must not overtake it) and only its shard sees all of them;
//! holding them at the owners would stall every other connection's events
//! to the same room behind one backend call. `user:send`, broadcasts and
//! rpc calls are not room events and do not wait.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::Claims;
use crate::codes::ErrorCode;
use crate::config::{Config, HooksConfig};
use crate::conn::ConnRef;
use crate::conn::ConnectDecision;
use crate::conn::id::ConnId;
use crate::hooks::answer::{self, Answer, AnswerError};
use crate::hooks::client::{ClientConfig, SetupError};
use crate::hooks::url::HookUrl;
use crate::hooks::webhook::thread::WebhookHandle;
use crate::hooks::{HookError, HookHandle, HookRequest, HookResponse, HookSink};
use crate::http::response as http_response;
use crate::json;
use crate::log_debug;
use crate::metrics::HookMetrics;
use crate::proto::Request;
use crate::proto::names::matches_any;
use crate::proto::reply::{self, OwnedId};
use crate::reactor::shard::{Command, Handle};

/// Most room requests one connection may have in its line: a client that
/// sends faster than the backend decides is refused past it (`UNAVAILABLE`)
/// rather than queued without bound (its rate limit may be off).
pub const MAX_LINE: usize = 256;

/// What a shard waits for from a backend, given back with the answer.
pub struct HookAnswer {
    pub conn: ConnRef,
    pub asked: Asked,
}

/// The request a backend decides.
pub enum Asked {
    /// `rpc:<method>`: its ack.
    Rpc { id: Option<OwnedId> },
    /// An upgrade to `/ws` without a token: its claims.
    Connect,
    /// A room event for the publish proxy or a join for the subscribe
    /// proxy, the connection's `ticket`-th; the request itself waits in
    /// the connection's line.
    Room { ticket: u64 },
}

/// Who waits for a hook request's outcome: a connection (a proxy's
/// decision) or the webhooks thread (a batch, by its number).
pub enum Hooked {
    Proxy(HookAnswer),
    Webhook(u64),
}

/// The hooks client's sink: a proxy's answer goes to the shard of the
/// connection that asked, a webhook batch's to the webhooks thread.
pub struct ShardHookSink {
    pub shards: Vec<Handle>,
    pub webhooks: Option<WebhookHandle>,
}

impl HookSink for ShardHookSink {
    type Answer = Hooked;

    fn answered(&self, answer: Hooked, outcome: Result<HookResponse, HookError>) {
        match answer {
            Hooked::Proxy(answer) => {
                if let Some(handle) = self.shards.get(answer.conn.shard) {
                    handle.send(Command::Hook(answer, outcome));
                }
            }
            Hooked::Webhook(batch) => {
                if let Some(webhooks) = &self.webhooks {
                    webhooks.answered(batch, outcome);
                }
            }
        }
    }
}

/// The URLs of the one client, in the order `urls` lists them.
pub struct ProxyUrls {
    pub rpc: Option<usize>,
    pub publish: Option<usize>,
    pub subscribe: Option<usize>,
    pub connect: Option<usize>,
    pub webhook: Option<usize>,
}

/// Every hook URL the configuration gives, and where each proxy's is.
pub fn urls(config: &HooksConfig) -> (Vec<HookUrl>, ProxyUrls) {
    let mut urls = Vec::new();
    let mut add = |url: &Option<HookUrl>| {
        url.as_ref().map(|url| {
            urls.push(url.clone());
            urls.len() - 1
        })
    };
    let rpc = add(&config.rpc_proxy);
    let publish = add(&config.publish_proxy);
    let subscribe = add(&config.subscribe_proxy);
    let connect = add(&config.connect_proxy);
    let webhook = add(&config.webhook);
    (
        urls,
        ProxyUrls {
            rpc,
            publish,
            subscribe,
            connect,
            webhook,
        },
    )
}

/// Longest proxy answer read, beyond `--max-message-size`: a publish
/// proxy's replacement data may be as long as a message, plus its wrapping.
const ANSWER_SLACK: usize = 4096;

/// The hooks client for the server's configuration: every hook URL, signed
/// with `--hook-secret` or the first JWT secret. Fails for a `--hook-ca`
/// that cannot be read (when a URL is `https://`).
pub fn client_config(config: &Config) -> Result<ClientConfig, SetupError> {
    let max_body = config.limits.max_message_size + ANSWER_SLACK;
    ClientConfig::new(
        &config.hooks,
        &config.auth.secrets,
        urls(&config.hooks).0,
        max_body,
    )
}

/// Who sent a request: what a backend is told about it.
pub struct Sender<'a> {
    pub conn: ConnRef,
    pub user: &'a Arc<str>,
    /// The connection id as clients see it (`connId`), written only into
    /// a request that goes to a backend.
    pub conn_id: ConnId<'a>,
}

/// Where a connection's request goes now.
pub enum Routed {
    /// To the rooms, as usual.
    Router(Request),
    /// Sent to a backend, or in line behind a pending decision.
    Taken,
    /// Refused at once (`UNAVAILABLE`: the backend's queue or the
    /// connection's line is full), to be carried out now.
    Now(Step),
}

/// What is carried out for a connection, in the order it sent them.
pub enum Step {
    /// To the rooms (a room event, its data maybe replaced by the proxy).
    Route(Request),
    /// `text` (if any) to the connection; `awaited`: it ends one of the
    /// answers the connection waits for.
    Reply {
        text: Option<Vec<u8>>,
        awaited: bool,
    },
    /// A join the subscribe proxy refused (or could not decide): the
    /// connection is not in `room` after all, and hears `text`.
    RefuseJoin { room: Arc<str>, text: Vec<u8> },
}

/// One place in a connection's line.
enum Slot {
    /// At the publish proxy, to come back with `ticket`.
    Asked { ticket: u64, request: Request },
    /// Decided, or never asked (a join, a leave, a room no proxy decides).
    Ready(Step),
}

/// A connection's room requests from its first one at the publish proxy
/// on: its decisions are asked for at once, side by side, and carried out
/// in the order the connection sent them.
struct Line {
    /// The connection's id: a slab key is reused.
    id: u64,
    next_ticket: u64,
    slots: VecDeque<Slot>,
}

impl Line {
    fn new(id: u64) -> Self {
        Self {
            id,
            next_ticket: 0,
            slots: VecDeque::new(),
        }
    }
}

/// One shard's proxies.
pub struct Proxies {
    handle: HookHandle<Hooked>,
    urls: ProxyUrls,
    timeout: Duration,
    publish_rooms: Vec<String>,
    subscribe_rooms: Vec<String>,
    metrics: Arc<HookMetrics>,
    /// Connections (by slab key) with room requests at a proxy.
    lines: HashMap<usize, Line>,
}

impl Proxies {
    pub fn new(
        handle: HookHandle<Hooked>,
        config: &HooksConfig,
        metrics: Arc<HookMetrics>,
    ) -> Self {
        Self {
            handle,
            urls: urls(config).1,
            timeout: config.timeout,
            publish_rooms: config.publish_proxy_rooms.clone(),
            subscribe_rooms: config.subscribe_proxy_rooms.clone(),
            metrics,
            lines: HashMap::new(),
        }
    }

    /// Where `request` from `sender` goes. A request put in the
    /// connection's line is carried out by `ready`.
    pub fn route(&mut self, sender: &Sender<'_>, request: Request, now: Instant) -> Routed {
        let conn = sender.conn;
        if self
            .lines
            .get(&conn.key)
            .is_some_and(|line| line.id != conn.id)
        {
            self.lines.remove(&conn.key);
        }
        match request {
            Request::Rpc { method, data, id } => {
                let Some(url_index) = self.urls.rpc else {
                    return Routed::Now(rpc_unavailable(id.as_ref()));
                };
                let mut body = head(sender, "method", &method);
                finish(&mut body, &data);
                let answer = HookAnswer {
                    conn,
                    asked: Asked::Rpc { id },
                };
                match self.send(url_index, body, answer, now) {
                    Ok(()) => Routed::Taken,
                    Err(answer) => match answer.asked {
                        Asked::Rpc { id } => Routed::Now(rpc_unavailable(id.as_ref())),
                        Asked::Room { .. } | Asked::Connect => Routed::Taken,
                    },
                }
            }
            Request::Publish {
                ref room,
                ref event,
                ref data,
                volatile,
                ..
            } if let Some(url_index) = self.urls.publish
                && matches_any(&self.publish_rooms, room) =>
            {
                let mut body = head(sender, "room", room);
                body.extend_from_slice(b",\"event\":");
                json::write_str(&mut body, event);
                // The backend may want to skip storing a typing indicator.
                if volatile {
                    body.extend_from_slice(b",\"volatile\":true");
                }
                finish(&mut body, data);
                self.ask(url_index, body, conn, request, now)
            }
            // A rejoin was decided when the connection first joined.
            Request::Join {
                ref room,
                rejoin: false,
                ref meta,
                ..
            } if let Some(url_index) = self.urls.subscribe
                && matches_any(&self.subscribe_rooms, room) =>
            {
                let mut body = head(sender, "room", room);
                finish(&mut body, meta.as_deref().unwrap_or(b"null"));
                self.ask(url_index, body, conn, request, now)
            }
            request if is_room_request(&request) && self.lines.contains_key(&conn.key) => {
                self.line(conn).push_back(Slot::Ready(Step::Route(request)));
                Routed::Taken
            }
            other => Routed::Router(other),
        }
    }

    /// Sends a room request's decision to a proxy and puts the request in
    /// the connection's line (refused at once, if the client refuses it).
    fn ask(
        &mut self,
        url_index: usize,
        body: Vec<u8>,
        conn: ConnRef,
        request: Request,
        now: Instant,
    ) -> Routed {
        let line = self
            .lines
            .entry(conn.key)
            .or_insert_with(|| Line::new(conn.id));
        if line.slots.len() >= MAX_LINE {
            let text = unavailable_text(request_id(&request));
            return Routed::Now(refusal(request, text));
        }
        let ticket = line.next_ticket;
        line.next_ticket += 1;
        let answer = HookAnswer {
            conn,
            asked: Asked::Room { ticket },
        };
        let slot = match self.send(url_index, body, answer, now) {
            Ok(()) => Slot::Asked { ticket, request },
            Err(_) => {
                let text = unavailable_text(request_id(&request));
                Slot::Ready(refusal(request, text))
            }
        };
        self.line(conn).push_back(slot);
        Routed::Taken
    }

    fn line(&mut self, conn: ConnRef) -> &mut VecDeque<Slot> {
        &mut self
            .lines
            .entry(conn.key)
            .or_insert_with(|| Line::new(conn.id))
            .slots
    }

    /// Hands a request to the hooks client; gives its answer back when the
    /// client refuses it at once (`UNAVAILABLE` for the caller).
    fn send(
        &self,
        url_index: usize,
        body: Vec<u8>,
        answer: HookAnswer,
        now: Instant,
    ) -> Result<(), HookAnswer> {
        let request = HookRequest {
            url_index,
            body,
            deadline: now + self.timeout,
            answer: Hooked::Proxy(answer),
        };
        let Err(refused) = self.handle.send(request) else {
            return Ok(());
        };
        log_debug!("proxy request refused: {}", refused.error);
        match refused.request.answer {
            Hooked::Proxy(answer) => Err(answer),
            // Not what was sent: nothing to give back.
            Hooked::Webhook(_) => Ok(()),
        }
    }

    /// A backend's answer (or its failure): an rpc's reply, or, for a room
    /// event, `None`: its decision waits in the line (`ready`).
    pub fn decide(
        &mut self,
        answer: HookAnswer,
        outcome: Result<HookResponse, HookError>,
    ) -> Option<Step> {
        let HookAnswer { conn, asked } = answer;
        let read = match outcome {
            Ok(response) => self.read(answer::parse(response.status, &response.body)),
            // Counted by the client, by reason.
            Err(_) => None,
        };
        match asked {
            // Decided by `decide_connect`, which the shard calls instead.
            Asked::Connect => None,
            Asked::Rpc { id } => {
                let text = match read {
                    Some(Answer::Result(result)) => {
                        id.as_ref().map(|id| reply::ack_text(id, &result))
                    }
                    Some(Answer::Error { code, message }) => {
                        Some(reply::failure_code_text(id.as_ref(), &code, &message))
                    }
                    None => Some(unavailable_text(id.as_ref())),
                };
                Some(Step::Reply {
                    text,
                    awaited: true,
                })
            }
            Asked::Room { ticket } => {
                let read = match read {
                    // Both proxies answer an object: a join's is `{}`, a
                    // room event's may carry the data to publish instead.
                    Some(Answer::Result(result)) => self
                        .read(answer::publish_data(&result))
                        .map(|data| Ok(data.map(Box::<[u8]>::from))),
                    Some(Answer::Error { code, message }) => Some(Err((code, message))),
                    None => None,
                };
                let line = self.lines.get_mut(&conn.key).filter(|l| l.id == conn.id)?;
                let slot = line
                    .slots
                    .iter_mut()
                    .find(|slot| matches!(slot, Slot::Asked { ticket: t, .. } if *t == ticket))?;
                let placeholder = Slot::Ready(Step::Reply {
                    text: None,
                    awaited: false,
                });
                let Slot::Asked { request, .. } = std::mem::replace(slot, placeholder) else {
                    return None;
                };
                let text = match &read {
                    Some(Ok(_)) => None,
                    Some(Err((code, message))) => Some(reply::failure_code_text(
                        request_id(&request),
                        code,
                        message,
                    )),
                    None => Some(unavailable_text(request_id(&request))),
                };
                *slot = Slot::Ready(match (read, text) {
                    (Some(Ok(data)), _) => Step::Route(replace_data(request, data)),
                    (_, text) => refusal(request, text.unwrap_or_default()),
                });
                None
            }
        }
    }

    /// Sends an upgrade's connect request; the decision when it cannot be
    /// sent (`503 UNAVAILABLE`).
    pub fn connect(&self, conn: ConnRef, body: Vec<u8>, now: Instant) -> Option<ConnectDecision> {
        let Some(url_index) = self.urls.connect else {
            return Some(connect_unavailable());
        };
        let answer = HookAnswer {
            conn,
            asked: Asked::Connect,
        };
        self.send(url_index, body, answer, now)
            .err()
            .map(|_| connect_unavailable())
    }

    /// What the connect proxy's answer decides, at `unix_ms` with `leeway`
    /// seconds for an `exp` it gave: claims, or a `401` (`UNAUTHENTICATED`,
    /// `TOKEN_EXPIRED`), `403` (any other code) or `503 UNAVAILABLE`.
    pub fn decide_connect(
        &self,
        outcome: Result<HookResponse, HookError>,
        unix_ms: u64,
        leeway: f64,
    ) -> ConnectDecision {
        let read = match outcome {
            Ok(response) => self.read(answer::parse(response.status, &response.body)),
            Err(_) => None,
        };
        match read {
            Some(Answer::Result(result)) => {
                let mut json = result.into_vec();
                let claims = Claims::from_backend(&mut json).map_err(|_| AnswerError::Shape);
                match self.read(claims) {
                    Some(claims) if claims.exp + leeway <= unix_ms as f64 / 1000.0 => {
                        refused_connect("TOKEN_EXPIRED", "the backend's claims have expired")
                    }
                    Some(claims) => ConnectDecision::Claims(claims),
                    None => connect_unavailable(),
                }
            }
            Some(Answer::Error { code, message }) => refused_connect(&code, &message),
            None => connect_unavailable(),
        }
    }

    /// An answer read, or counted and logged as unreadable.
    fn read<T>(&self, read: Result<T, AnswerError>) -> Option<T> {
        read.map_err(|e| {
            self.metrics.count_unreadable();
            log_debug!("proxy answer unreadable: {e}");
        })
        .ok()
    }

    /// What `conn` can carry out now, in the order it sent them: the front
    /// of its line up to the first room event still undecided.
    pub fn ready(&mut self, conn: ConnRef) -> Vec<Step> {
        let Some(line) = self.lines.get_mut(&conn.key).filter(|l| l.id == conn.id) else {
            return Vec::new();
        };
        let mut steps = Vec::new();
        while let Some(Slot::Ready(_)) = line.slots.front() {
            if let Some(Slot::Ready(step)) = line.slots.pop_front() {
                steps.push(step);
            }
        }
        if line.slots.is_empty() {
            self.lines.remove(&conn.key);
        }
        steps
    }

    /// Connection `key` is gone: its line goes with it (events not yet
    /// decided are not published: nobody is left to hear their acks).
    pub fn forget(&mut self, key: usize) {
        self.lines.remove(&key);
    }
}

/// A connect the backend refused with `code`: `401` for the codes of a
/// missing or expired token, `403` for any other.
fn refused_connect(code: &str, message: &str) -> ConnectDecision {
    let counted = match code {
        "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
        "TOKEN_EXPIRED" => ErrorCode::TokenExpired,
        _ => ErrorCode::Forbidden,
    };
    let mut body = Vec::with_capacity(64 + message.len());
    body.extend_from_slice(b"{\"error\":{\"code\":");
    json::write_str(&mut body, code);
    body.extend_from_slice(b",\"message\":");
    json::write_str(&mut body, message);
    body.extend_from_slice(b"}}");
    let mut response = Vec::with_capacity(160 + body.len());
    http_response::write_json(&mut response, counted.http_status(), &body, false);
    ConnectDecision::Refused {
        code: counted,
        response,
    }
}

/// A connect the backend did not decide: `503 UNAVAILABLE`.
pub fn connect_unavailable() -> ConnectDecision {
    let mut response = Vec::with_capacity(160);
    let message = "the backend did not decide";
    http_response::write_error(&mut response, ErrorCode::Unavailable, message, &[]);
    ConnectDecision::Refused {
        code: ErrorCode::Unavailable,
        response,
    }
}

/// An rpc call that could not be sent.
fn rpc_unavailable(id: Option<&OwnedId>) -> Step {
    Step::Reply {
        text: Some(unavailable_text(id)),
        awaited: true,
    }
}

/// A room request refused with `text`: a join is always awaited and the
/// connection is not in the room after all; a room event's refusal ends
/// an awaited answer only if it had an id (else it is an error event).
fn refusal(request: Request, text: Vec<u8>) -> Step {
    match request {
        Request::Join { room, .. } => Step::RefuseJoin { room, text },
        request => Step::Reply {
            awaited: request_id(&request).is_some(),
            text: Some(text),
        },
    }
}

/// The requests whose order among themselves a decision must keep.
fn is_room_request(request: &Request) -> bool {
    matches!(
        request,
        Request::Join { .. }
            | Request::Leave { .. }
            | Request::Publish { .. }
            | Request::PresenceGet { .. }
    )
}

fn request_id(request: &Request) -> Option<&OwnedId> {
    match request {
        Request::Publish { id, .. } | Request::Join { id, .. } => id.as_ref(),
        _ => None,
    }
}

/// `{"user":…,"connId":…,"<field>":<value>`: what every proxy body but
/// the connect's starts with (`field` names the method or the room).
fn head(sender: &Sender<'_>, field: &str, value: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(b"{\"user\":");
    json::write_str(&mut body, sender.user);
    body.extend_from_slice(b",\"connId\":");
    json::write_str(&mut body, &sender.conn_id.to_string());
    body.push(b',');
    json::write_str(&mut body, field);
    body.push(b':');
    json::write_str(&mut body, value);
    body
}

/// `,"data":<data>}`: the exact text the client sent.
fn finish(body: &mut Vec<u8>, data: &[u8]) {
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(data);
    body.push(b'}');
}

fn unavailable_text(id: Option<&OwnedId>) -> Vec<u8> {
    reply::failure_text(id, ErrorCode::Unavailable, "the backend did not decide")
}

fn replace_data(request: Request, replacement: Option<Box<[u8]>>) -> Request {
    match (request, replacement) {
        (
            Request::Publish {
                room,
                event,
                echo,
                volatile,
                id,
                ..
            },
            Some(data),
        ) => Request::Publish {
            room,
            event,
            data,
            echo,
            volatile,
            id,
        },
        (request, _) => request,
    }
}
