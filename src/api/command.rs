//! What an API body asks for: its method's parameters, validated and
//! typed before anything runs.
//!
//! A `batch` is checked as a whole (an object with at most
//! `MAX_API_BATCH` commands, each an object with a `method`) and then
//! each command on its own: an unknown method or a bad parameter becomes
//! that command's error reply, the others still run. Every string and
//! count is bounded; JSON deeper than `MAX_JSON_DEPTH` is refused by the
//! parser.

use std::sync::Arc;

use simd_json::prelude::*;
use simd_json::tape::{Object, Value};

use super::ApiError;
use crate::codes::ErrorCode;
use crate::codes::close;
use crate::codes::limits::{
    MAX_API_BATCH, MAX_API_BROADCAST_ROOMS, MAX_API_REASON, MAX_EPOCH_LEN, MAX_SUB_LEN,
};
use crate::proto::envelope::Parser;
use crate::proto::names::{is_reserved, is_valid_event, is_valid_pattern, is_valid_room};
use crate::proto::publish::{self, Message};
use crate::proto::scan;

/// Longest `connId` accepted, in bytes: a node id (64), the boot tag,
/// the shard and the count, with room to spare.
const MAX_CONN_ID_LEN: usize = 128;

/// The methods of section 12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Publish,
    Broadcast,
    Disconnect,
    Subscribe,
    Unsubscribe,
    Presence,
    History,
    HistoryRemove,
    Rooms,
    User,
    Info,
    Batch,
}

impl Method {
    pub const ALL: [Method; 12] = [
        Self::Publish,
        Self::Broadcast,
        Self::Disconnect,
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Presence,
        Self::History,
        Self::HistoryRemove,
        Self::Rooms,
        Self::User,
        Self::Info,
        Self::Batch,
    ];

    /// The method named `name` in a path or a `batch` command.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Broadcast => "broadcast",
            Self::Disconnect => "disconnect",
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Presence => "presence",
            Self::History => "history",
            Self::HistoryRemove => "history_remove",
            Self::Rooms => "rooms",
            Self::User => "user",
            Self::Info => "info",
            Self::Batch => "batch",
        }
    }

    /// Its place in `ALL`, for per-method metrics.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&m| m == self).unwrap_or(0)
    }
}

/// One command, valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The body of `POST /publish`: one message or several.
    Publish(Vec<Message>),
    /// One event into each of `rooms`; a bad room name is that room's
    /// error, with the name as given (cut to `MAX_ROOM_LEN` bytes).
    Broadcast {
        rooms: Vec<BroadcastRoom>,
        event: Box<str>,
        data: Box<[u8]>,
        /// Section 14: to the members connected now, no `seq` or history.
        volatile: bool,
    },
    Presence {
        room: Arc<str>,
    },
    History {
        room: Arc<str>,
        query: HistoryQuery,
    },
    HistoryRemove {
        room: Arc<str>,
    },
    /// A command every node of the cluster carries out on its connections.
    Node(NodeCommand),
}

/// A room of a `broadcast`: its name, or the name as given (cut to
/// `MAX_ROOM_LEN` bytes) and why it is not one.
pub type BroadcastRoom = Result<Arc<str>, (Box<str>, ApiError)>;

/// What a `history` call asks for, as a `room:join` would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub limit: Option<u64>,
    pub since: Option<u64>,
    pub epoch: Option<Box<str>>,
}

/// A command for every node and every shard: each applies it to its own
/// connections or rooms and answers a `part`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    Disconnect {
        user: Box<str>,
        conn_id: Option<Box<str>>,
        code: u16,
        reason: Box<str>,
    },
    Subscribe {
        user: Box<str>,
        room: Arc<str>,
        conn_id: Option<Box<str>>,
    },
    Unsubscribe {
        user: Box<str>,
        room: Arc<str>,
        conn_id: Option<Box<str>>,
    },
    Rooms {
        pattern: Option<Box<str>>,
    },
    User {
        user: Box<str>,
    },
    Info,
}

impl NodeCommand {
    /// The method it came from.
    pub fn method(&self) -> Method {
        match self {
            Self::Disconnect { .. } => Method::Disconnect,
            Self::Subscribe { .. } => Method::Subscribe,
            Self::Unsubscribe { .. } => Method::Unsubscribe,
            Self::Rooms { .. } => Method::Rooms,
            Self::User { .. } => Method::User,
            Self::Info => Method::Info,
        }
    }

    /// Its parameters as JSON, which `parse` reads back (for other nodes).
    pub fn write_params(&self, out: &mut Vec<u8>) {
        let mut w = crate::json::ObjectWriter::new(out);
        match self {
            Self::Disconnect {
                user,
                conn_id,
                code,
                reason,
            } => {
                w.str("user", user);
                if let Some(id) = conn_id {
                    w.str("connId", id);
                }
                w.u64("code", u64::from(*code));
                w.str("reason", reason);
            }
            Self::Subscribe {
                user,
                room,
                conn_id,
            }
            | Self::Unsubscribe {
                user,
                room,
                conn_id,
            } => {
                w.str("user", user);
                w.str("room", room);
                if let Some(id) = conn_id {
                    w.str("connId", id);
                }
            }
            Self::Rooms { pattern } => {
                if let Some(pattern) = pattern {
                    w.str("pattern", pattern);
                }
            }
            Self::User { user } => w.str("user", user),
            Self::Info => {}
        }
        w.close();
    }
}

/// What one request asks: a single command, or a batch's commands in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub commands: Vec<Result<Command, ApiError>>,
    /// Whether the reply lists `replies` (a `batch`) or is the one command's.
    pub batch: bool,
}

/// Reads the body of a call to `method`; an empty body is `{}`. The body
/// is parsed in place and left scrambled. An error here is the whole
/// request's (`400`); in a batch, a command's own error is its reply.
pub fn parse(method: Method, body: &mut [u8], parser: &mut Parser) -> Result<Call, ApiError> {
    if method == Method::Batch {
        return parse_batch(body, parser);
    }
    let command = parse_command(method, body, parser)?;
    Ok(Call {
        commands: vec![Ok(command)],
        batch: false,
    })
}

/// One command's parameters, `body` the text of its object (empty: `{}`).
pub fn parse_command(
    method: Method,
    body: &mut [u8],
    parser: &mut Parser,
) -> Result<Command, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return parse_command(method, &mut b"{}".to_vec(), parser);
    }
    match method {
        Method::Publish => publish::parse_unchecked(body, parser)
            .map(Command::Publish)
            .map_err(|e| ApiError::new(e.code(), e.message())),
        Method::Broadcast => {
            // Taken before the in-place parse rewrites escaped strings.
            let data = scan::field_range(body, "data").and_then(|r| body.get(r).map(Box::from));
            with_object(body, parser, |params| read_broadcast(params, data))
        }
        Method::Batch => Err(ApiError::invalid("a batch may not hold a batch")),
        _ => with_object(body, parser, |params| read_params(method, params)),
    }
}

/// Parses `body` and hands `f` its object, or refuses a body that is not
/// one (`INVALID_MESSAGE`).
fn with_object<R>(
    body: &mut [u8],
    parser: &mut Parser,
    f: impl FnOnce(&Object<'_, '_>) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    parser.with_json(body, |value| {
        let value = value.ok_or_else(not_json)?;
        let object = value.as_object().ok_or_else(not_an_object)?;
        f(&object)
    })
}

fn not_json() -> ApiError {
    ApiError::new(ErrorCode::InvalidMessage, "body is not valid JSON")
}

fn not_an_object() -> ApiError {
    ApiError::new(ErrorCode::InvalidMessage, "body must be a JSON object")
}

fn read_params(method: Method, params: &Object<'_, '_>) -> Result<Command, ApiError> {
    let p = Params(params);
    Ok(match method {
        Method::Disconnect => {
            let code = match p.get("code") {
                None => close::API_DISCONNECT,
                Some(v) => v
                    .as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .filter(|c| close::API_CODES.contains(c))
                    .ok_or_else(|| ApiError::invalid("code must be an integer 4000-4999"))?,
            };
            let reason = match p.get("reason") {
                None => close::API_DISCONNECT_REASON.into(),
                Some(v) => v
                    .into_string()
                    .filter(|r| r.len() <= MAX_API_REASON)
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "reason must be a string of at most {MAX_API_REASON} bytes"
                        ))
                    })?
                    .into(),
            };
            Command::Node(NodeCommand::Disconnect {
                user: p.user()?,
                conn_id: p.conn_id()?,
                code,
                reason,
            })
        }
        Method::Subscribe => Command::Node(NodeCommand::Subscribe {
            user: p.user()?,
            room: p.room()?,
            conn_id: p.conn_id()?,
        }),
        Method::Unsubscribe => Command::Node(NodeCommand::Unsubscribe {
            user: p.user()?,
            room: p.room()?,
            conn_id: p.conn_id()?,
        }),
        Method::Presence => Command::Presence { room: p.room()? },
        Method::History => Command::History {
            room: p.room()?,
            query: HistoryQuery {
                limit: p.count("limit")?,
                since: p.count("since")?,
                epoch: p.optional_str("epoch", MAX_EPOCH_LEN)?,
            },
        },
        Method::HistoryRemove => Command::HistoryRemove { room: p.room()? },
        Method::Rooms => {
            let pattern = p.optional_str("pattern", crate::codes::limits::MAX_ROOM_LEN)?;
            if pattern.as_deref().is_some_and(|p| !is_valid_pattern(p)) {
                return Err(ApiError::invalid(
                    "pattern must be a room name, a prefix ending in *, or *",
                ));
            }
            Command::Node(NodeCommand::Rooms { pattern })
        }
        Method::User => Command::Node(NodeCommand::User { user: p.user()? }),
        Method::Info => Command::Node(NodeCommand::Info),
        Method::Publish | Method::Broadcast | Method::Batch => {
            return Err(ApiError::invalid("not a plain method"));
        }
    })
}

fn read_broadcast(params: &Object<'_, '_>, data: Option<Box<[u8]>>) -> Result<Command, ApiError> {
    let p = Params(params);
    let list = p
        .get("rooms")
        .and_then(|v| v.as_array())
        .ok_or_else(|| ApiError::invalid("rooms must be an array of room names"))?;
    if list.is_empty() || list.len() > MAX_API_BROADCAST_ROOMS {
        return Err(ApiError::invalid(format!(
            "rooms must hold 1 to {MAX_API_BROADCAST_ROOMS} rooms"
        )));
    }
    let rooms = list
        .iter()
        .map(|v| match v.into_string() {
            Some(room) if is_valid_room(room) => Ok(Arc::from(room)),
            name => Err((
                clip(name.unwrap_or_default(), crate::codes::limits::MAX_ROOM_LEN),
                ApiError::invalid("invalid room name"),
            )),
        })
        .collect();
    let event = p
        .get("event")
        .and_then(|v| v.into_string())
        .ok_or_else(|| ApiError::invalid("event is missing or not a string"))?;
    if !is_valid_event(event) {
        return Err(ApiError::invalid("invalid event name"));
    }
    if is_reserved(event) {
        return Err(ApiError::invalid("event namespace is reserved"));
    }
    let volatile = match p.get("volatile") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ApiError::invalid("volatile must be a boolean"))?,
    };
    Ok(Command::Broadcast {
        rooms,
        event: event.into(),
        data: data.unwrap_or_else(|| Box::from(b"null".as_slice())),
        volatile,
    })
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn clip(text: &str, max: usize) -> Box<str> {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].into()
}

/// `{"commands":[{"method","params"?}, ...]}`: the shape is checked with
/// the parser, then each command's `params` text is read on its own.
fn parse_batch(body: &mut [u8], parser: &mut Parser) -> Result<Call, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("commands must be an array"));
    }
    // The text of each command, taken before the parse scrambles it; at
    // most one more than the bound, enough to refuse a longer batch.
    let texts: Vec<Vec<u8>> = match scan::field_range(body, "commands") {
        Some(array) => scan::elements(body, array)
            .take(MAX_API_BATCH + 1)
            .filter_map(|r| body.get(r).map(<[u8]>::to_vec))
            .collect(),
        None => Vec::new(),
    };
    let methods = with_object(body, parser, |object| {
        let list = object
            .get("commands")
            .and_then(|v| v.as_array())
            .ok_or_else(|| ApiError::invalid("commands must be an array"))?;
        if list.len() > MAX_API_BATCH {
            return Err(ApiError::invalid(format!(
                "at most {MAX_API_BATCH} commands per batch"
            )));
        }
        // The skim and the parser agree on every valid JSON text.
        if list.len() != texts.len() {
            return Err(not_json());
        }
        list.iter()
            .enumerate()
            .map(|(i, command)| {
                let object = command
                    .as_object()
                    .ok_or_else(|| ApiError::invalid(format!("commands[{i}] must be an object")))?;
                let name = object
                    .get("method")
                    .and_then(|v| v.into_string())
                    .ok_or_else(|| {
                        ApiError::invalid(format!("commands[{i}]: method must be a string"))
                    })?;
                let params_ok = object.get("params").is_none_or(|p| p.as_object().is_some());
                if !params_ok {
                    return Err(ApiError::invalid(format!(
                        "commands[{i}]: params must be an object"
                    )));
                }
                Ok(Method::named(name).ok_or(name.len()))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let commands = methods
        .into_iter()
        .zip(texts)
        .map(|(method, text)| {
            let method =
                method.map_err(|_| ApiError::new(ErrorCode::NotFound, "no such method"))?;
            let mut params = scan::field_range(&text, "params")
                .and_then(|r| text.get(r).map(<[u8]>::to_vec))
                .unwrap_or_default();
            parse_command(method, &mut params, parser)
        })
        .collect();
    Ok(Call {
        commands,
        batch: true,
    })
}

/// A method's parameters, read with the checks every method shares.
struct Params<'a, 't, 'i>(&'a Object<'t, 'i>);

impl<'t, 'i> Params<'_, 't, 'i> {
    fn get(&self, key: &str) -> Option<Value<'t, 'i>> {
        self.0.get(key)
    }

    fn user(&self) -> Result<Box<str>, ApiError> {
        self.get("user")
            .and_then(|v| v.into_string())
            .filter(|u| (1..=MAX_SUB_LEN).contains(&u.len()))
            .map(Into::into)
            .ok_or_else(|| {
                ApiError::invalid(format!("user must be a string of 1 to {MAX_SUB_LEN} bytes"))
            })
    }

    fn room(&self) -> Result<Arc<str>, ApiError> {
        match self.get("room").and_then(|v| v.into_string()) {
            Some(room) if is_valid_room(room) => Ok(Arc::from(room)),
            Some(_) => Err(ApiError::invalid("invalid room name")),
            None => Err(ApiError::invalid("room is missing or not a string")),
        }
    }

    fn conn_id(&self) -> Result<Option<Box<str>>, ApiError> {
        self.optional_str("connId", MAX_CONN_ID_LEN)
    }

    fn optional_str(&self, key: &str, max: usize) -> Result<Option<Box<str>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .into_string()
                .filter(|s| (1..=max).contains(&s.len()))
                .map(|s| Some(s.into()))
                .ok_or_else(|| {
                    ApiError::invalid(format!("{key} must be a string of 1 to {max} bytes"))
                }),
        }
    }

    /// A non-negative integer, if present.
    fn count(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n <= crate::codes::limits::MAX_SAFE_INTEGER as u64)
                .map(Some)
                .ok_or_else(|| ApiError::invalid(format!("{key} must be a non-negative integer"))),
        }
    }
}

#[cfg(test)]
mod tests;
