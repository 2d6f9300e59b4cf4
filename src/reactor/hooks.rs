//! The shards' side of the proxies (section 13.2): which requests go to a
//! backend, the bodies they are sent as, the requests a connection sent
//! behind a pending decision, and what each answer decides. Sans-IO but
//! for the `HookHandle` it sends through: the shard carries out the
//! decisions (`shard::proxied`).
//!
//! Order: a connection's room requests (joins, leaves, room events,
//! `presence:get`) sent while one of its room events waits for the
//! publish proxy are held here, per connection, and handed back in order
//! once the decision is in. They are held on the connection's shard, not
//! at the room's owner, because the order to keep is the connection's
//! across rooms (a `room:leave` behind a message to that room must not
//! overtake it) and only the connection's shard sees all of them; holding
//! them in the router's owners would stall every other connection's
//! events to the same room behind one backend call. `user:send`,
//! broadcasts and rpc calls are not room events and are not held.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codes::ErrorCode;
use crate::config::{Config, HooksConfig};
use crate::conn::ConnRef;
use crate::hooks::answer::{self, Answer, AnswerError};
use crate::hooks::client::{ClientConfig, SetupError};
use crate::hooks::url::HookUrl;
use crate::hooks::{HookError, HookHandle, HookRequest, HookResponse, HookSink};
use crate::json;
use crate::log_debug;
use crate::metrics::HookMetrics;
use crate::proto::Request;
use crate::proto::names::matches_any;
use crate::proto::reply::{self, OwnedId};
use crate::reactor::shard::{Command, Handle};

/// What a shard waits for from a backend, given back with the answer.
pub struct HookAnswer {
    pub conn: ConnRef,
    pub asked: Asked,
}

/// The request a backend decides.
pub enum Asked {
    /// `rpc:<method>`: its ack.
    Rpc { id: Option<OwnedId> },
    /// A room event (`Request::Publish`) of `user`, published or refused
    /// by the answer.
    Publish { request: Request, user: Arc<str> },
}

/// The hooks client's sink: every answer goes to the shard of the
/// connection that asked.
pub struct ShardHookSink {
    pub shards: Vec<Handle>,
}

impl HookSink for ShardHookSink {
    type Answer = HookAnswer;

    fn answered(&self, answer: HookAnswer, outcome: Result<HookResponse, HookError>) {
        if let Some(handle) = self.shards.get(answer.conn.shard) {
            handle.send(Command::Hook(answer, outcome));
        }
    }
}

/// The URLs of the one client, in the order `urls` lists them.
pub struct ProxyUrls {
    pub rpc: Option<usize>,
    pub publish: Option<usize>,
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
    (urls, ProxyUrls { rpc, publish })
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
    /// The connection id as clients see it (`connId`).
    pub conn_id: &'a str,
}

/// Where a connection's request goes now.
pub enum Routed {
    /// To the rooms, as usual.
    Router(Request),
    /// Sent to a backend, or held behind a pending decision.
    Taken,
    /// Refused at once (`UNAVAILABLE`: the backend's queue is full);
    /// `awaited`: the connection counts an answer for it.
    Failed { text: Vec<u8>, awaited: bool },
}

/// What an answer decides.
pub enum Decision {
    /// Write `text` (if any) to the connection; `awaited`: it ends one of
    /// the answers the connection waits for.
    Answer {
        conn: ConnRef,
        text: Option<Vec<u8>>,
        awaited: bool,
    },
    /// Publish this room event (its data maybe replaced) as `user`'s.
    Publish {
        conn: ConnRef,
        request: Request,
        user: Arc<str>,
    },
}

/// One shard's proxies.
pub struct Proxies {
    handle: HookHandle<HookAnswer>,
    urls: ProxyUrls,
    timeout: Duration,
    publish_rooms: Vec<String>,
    metrics: Arc<HookMetrics>,
    /// Connections (by slab key) with a room event at the publish proxy:
    /// their id and the room requests they sent since, in order.
    held: HashMap<usize, (u64, VecDeque<Request>)>,
}

impl Proxies {
    pub fn new(
        handle: HookHandle<HookAnswer>,
        config: &HooksConfig,
        metrics: Arc<HookMetrics>,
    ) -> Self {
        Self {
            handle,
            urls: urls(config).1,
            timeout: config.timeout,
            publish_rooms: config.publish_proxy_rooms.clone(),
            metrics,
            held: HashMap::new(),
        }
    }

    /// Where `request` from `sender` goes.
    pub fn route(&mut self, sender: &Sender<'_>, request: Request, now: Instant) -> Routed {
        let conn = sender.conn;
        if is_room_request(&request)
            && let Some((id, queue)) = self.held.get_mut(&conn.key)
        {
            if *id == conn.id {
                queue.push_back(request);
                return Routed::Taken;
            }
            self.held.remove(&conn.key);
        }
        match request {
            Request::Rpc { method, data, id } => {
                let Some(url_index) = self.urls.rpc else {
                    return unavailable(id.as_ref(), true);
                };
                let mut body = head(sender);
                body.extend_from_slice(b",\"method\":");
                json::write_str(&mut body, &method);
                finish(&mut body, &data);
                let asked = Asked::Rpc { id };
                self.send(url_index, body, conn, asked, now)
            }
            Request::Publish {
                ref room,
                ref event,
                ref data,
                ref id,
                ..
            } if self.urls.publish.is_some() && matches_any(&self.publish_rooms, room) => {
                let awaited = id.is_some();
                let mut body = head(sender);
                body.extend_from_slice(b",\"room\":");
                json::write_str(&mut body, room);
                body.extend_from_slice(b",\"event\":");
                json::write_str(&mut body, event);
                finish(&mut body, data);
                let asked = Asked::Publish {
                    request,
                    user: sender.user.clone(),
                };
                let url_index = self.urls.publish.unwrap_or_default();
                let routed = self.send(url_index, body, conn, asked, now);
                match routed {
                    Routed::Taken => {
                        self.held.insert(conn.key, (conn.id, VecDeque::new()));
                        Routed::Taken
                    }
                    Routed::Failed { text, .. } => Routed::Failed { text, awaited },
                    other => other,
                }
            }
            other => Routed::Router(other),
        }
    }

    fn send(
        &self,
        url_index: usize,
        body: Vec<u8>,
        conn: ConnRef,
        asked: Asked,
        now: Instant,
    ) -> Routed {
        let request = HookRequest {
            url_index,
            body,
            deadline: now + self.timeout,
            answer: HookAnswer { conn, asked },
        };
        match self.handle.send(request) {
            Ok(()) => Routed::Taken,
            Err(refused) => {
                log_debug!("proxy request refused: {}", refused.error);
                let id = match &refused.request.answer.asked {
                    Asked::Rpc { id } => id.as_ref(),
                    Asked::Publish { request, .. } => request_id(request),
                };
                unavailable(id, true)
            }
        }
    }

    /// What a backend's answer (or its failure) decides.
    pub fn decide(&self, answer: HookAnswer, outcome: Result<HookResponse, HookError>) -> Decision {
        let HookAnswer { conn, asked } = answer;
        let read = match outcome {
            Ok(response) => self.read(answer::parse(response.status, &response.body)),
            // Counted by the client, by reason.
            Err(_) => None,
        };
        match asked {
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
                Decision::Answer {
                    conn,
                    text,
                    awaited: true,
                }
            }
            Asked::Publish { request, user } => {
                let id = request_id(&request);
                let awaited = id.is_some();
                let refusal = |text| Decision::Answer {
                    conn,
                    text: Some(text),
                    awaited,
                };
                match read {
                    Some(Answer::Result(result)) => {
                        match self.read(answer::publish_data(&result)) {
                            Some(data) => Decision::Publish {
                                conn,
                                request: replace_data(request, data),
                                user,
                            },
                            None => refusal(unavailable_text(id)),
                        }
                    }
                    Some(Answer::Error { code, message }) => {
                        refusal(reply::failure_code_text(id, &code, &message))
                    }
                    None => refusal(unavailable_text(id)),
                }
            }
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

    /// The room requests `conn` sent behind its decided room event, in
    /// order, to be routed again (the next room event to the proxy holds
    /// the rest again).
    pub fn release(&mut self, conn: ConnRef) -> VecDeque<Request> {
        match self.held.get(&conn.key) {
            Some((id, _)) if *id == conn.id => self
                .held
                .remove(&conn.key)
                .map(|(_, queue)| queue)
                .unwrap_or_default(),
            _ => VecDeque::new(),
        }
    }

    /// Connection `key` is gone: what it had held goes with it.
    pub fn forget(&mut self, key: usize) {
        self.held.remove(&key);
    }

    /// Stops the client: what waits is answered `Stopped`.
    pub fn stop(&self) {
        self.handle.stop();
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
        Request::Publish { id, .. } => id.as_ref(),
        _ => None,
    }
}

/// `{"user":…,"connId":…`: what every proxy body but the connect's starts with.
fn head(sender: &Sender<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(b"{\"user\":");
    json::write_str(&mut body, sender.user);
    body.extend_from_slice(b",\"connId\":");
    json::write_str(&mut body, sender.conn_id);
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

fn unavailable(id: Option<&OwnedId>, awaited: bool) -> Routed {
    Routed::Failed {
        text: unavailable_text(id),
        awaited,
    }
}

fn replace_data(request: Request, replacement: Option<&[u8]>) -> Request {
    match (request, replacement) {
        (
            Request::Publish {
                room,
                event,
                echo,
                id,
                ..
            },
            Some(data),
        ) => Request::Publish {
            room,
            event,
            data: data.into(),
            echo,
            id,
        },
        (request, _) => request,
    }
}
