//! The handlers of client events (sections 6-7): permissions and field
//! validation, then either an immediate reply or a `Request` for the rooms.
//!
//! Sans-IO: reads the parsed envelope and the session, writes replies and
//! requests to the sink. Knows nothing of shards or of where rooms live.

use std::sync::Arc;
use std::time::Duration;

use simd_json::prelude::*;
use simd_json::tape::Value;

use crate::auth::{self, AuthError};
use crate::codes::ErrorCode;
use crate::codes::limits::{MAX_MAX_RATE, MAX_SUB_LEN, MIN_MAX_RATE};
use crate::json;
use crate::proto::envelope::Envelope;
use crate::proto::names::{self, may_join};
use crate::proto::reply::{self, OwnedId};
use crate::proto::wire;
use crate::proto::{JoinRecovery, Request, Session, Sink, scan};

/// A refusal: the code and the message the client reads.
pub type Outcome = Result<(), (ErrorCode, &'static str)>;

/// Everything a handler reads.
pub struct Event<'e, 't, 'i> {
    pub envelope: &'e Envelope<'t, 'i>,
    /// The exact text of the top-level `data` field, if present.
    pub data_text: Option<&'e [u8]>,
    pub session: Session<'e>,
    pub unix_ms: u64,
}

impl Event<'_, '_, '_> {
    fn id(&self) -> Option<OwnedId> {
        self.envelope.id.map(OwnedId::from)
    }

    fn data_field(&self, name: &str) -> Option<Value<'_, '_>> {
        self.envelope
            .field("data")
            .and_then(|d| d.as_object())
            .and_then(|o| o.get(name))
    }

    /// A room named in `data.room` (or, failing that, the top-level `room`).
    fn room_argument(&self) -> Result<Arc<str>, (ErrorCode, &'static str)> {
        let room = self
            .data_field("room")
            .or_else(|| self.envelope.field("room"))
            .and_then(|r| r.into_string())
            .ok_or((
                ErrorCode::ValidationError,
                "room is missing or not a string",
            ))?;
        valid_room(room)
    }

    fn may_join(&self, room: &str) -> bool {
        match self.session.claims.rooms.as_deref() {
            Some(patterns) => may_join(Some(patterns), room),
            None => may_join(Some(&self.session.config.default_rooms), room),
        }
    }

    fn is_member(&self, room: &str) -> bool {
        self.session.rooms.iter().any(|r| &**r == room)
    }
}

fn valid_room(room: &str) -> Result<Arc<str>, (ErrorCode, &'static str)> {
    if names::is_valid_room(room) {
        Ok(Arc::from(room))
    } else {
        Err((ErrorCode::ValidationError, "invalid room name"))
    }
}

/// A non-negative integer field, absent allowed.
fn optional_count(
    value: Option<Value<'_, '_>>,
    message: &'static str,
) -> Result<Option<u64>, (ErrorCode, &'static str)> {
    match value {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or((ErrorCode::ValidationError, message)),
    }
}

/// `data.maxRate` (section 14), absent allowed, as the least interval
/// between two room events: a number from `MIN_MAX_RATE` to
/// `MAX_MAX_RATE` per second, integer or not.
fn max_rate_interval(
    value: Option<Value<'_, '_>>,
) -> Result<Option<Duration>, (ErrorCode, &'static str)> {
    let Some(value) = value else {
        return Ok(None);
    };
    let rate = value
        .cast_f64()
        .filter(|rate| (MIN_MAX_RATE..=MAX_MAX_RATE).contains(rate))
        .ok_or((
            ErrorCode::ValidationError,
            "maxRate must be a number from 0.1 to 1000",
        ))?;
    Ok(Some(Duration::from_secs_f64(1.0 / rate)))
}

/// `room:join`.
pub fn join(event: &Event<'_, '_, '_>, sink: &mut dyn Sink) -> Outcome {
    let room = event.room_argument()?;
    if !event.may_join(&room) {
        return Err((ErrorCode::Forbidden, "may not join this room"));
    }
    let rejoin = event.is_member(&room);
    if !rejoin && event.session.rooms.len() >= event.session.config.max_rooms_per_connection {
        return Err((ErrorCode::RoomLimit, "too many rooms on this connection"));
    }
    let history = optional_count(
        event.data_field("history"),
        "history must be a non-negative integer",
    )?;
    let since = optional_count(
        event.data_field("since"),
        "since must be a non-negative integer",
    )?;
    let epoch = match event.data_field("epoch") {
        None => None,
        Some(e) => Some(
            e.into_string()
                .ok_or((ErrorCode::ValidationError, "epoch must be a string"))?
                .into(),
        ),
    };
    let min_interval = max_rate_interval(event.data_field("maxRate"))?;
    let delta = match event.data_field("delta") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or((ErrorCode::ValidationError, "delta must be a boolean"))?,
    };
    sink.request(Request::Join {
        room,
        id: event.id(),
        recovery: JoinRecovery {
            history,
            since,
            epoch,
        },
        rejoin,
        meta: event
            .data_text
            .and_then(|data| scan::field_range(data, "meta").map(|r| data[r].into())),
        min_interval,
        delta,
    });
    Ok(())
}

/// `room:leave`: always a success, even for a room the client is not in.
pub fn leave(event: &Event<'_, '_, '_>, scratch: &mut Vec<u8>, sink: &mut dyn Sink) -> Outcome {
    let room = event.room_argument()?;
    if event.is_member(&room) {
        sink.request(Request::Leave { room: room.clone() });
    }
    if let Some(id) = event.envelope.id {
        scratch.clear();
        let mut data = Vec::with_capacity(room.len() + 12);
        data.extend_from_slice(b"{\"room\":");
        json::write_str(&mut data, &room);
        data.push(b'}');
        reply::ack_ok(scratch, id, &data);
        sink.send_text(scratch);
    }
    Ok(())
}

/// A room event: published to `room` when permitted (section 7).
pub fn publish(event: &Event<'_, '_, '_>, sink: &mut dyn Sink) -> Outcome {
    let [room, echo, volatile] = event.envelope.fields(["room", "echo", "volatile"]);
    let room = room.and_then(|r| r.into_string()).ok_or((
        ErrorCode::ValidationError,
        "room is missing or not a string",
    ))?;
    // A member publishing to its room shares the connection's copy of
    // the name rather than making one per message.
    let joined = event.session.rooms.iter().find(|r| ***r == *room);
    let room = match joined {
        Some(joined) => joined.clone(),
        None => valid_room(room)?,
    };
    let echo = match echo {
        None => false,
        Some(e) => e
            .as_bool()
            .ok_or((ErrorCode::ValidationError, "echo must be a boolean"))?,
    };
    let volatile = match volatile {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or((ErrorCode::ValidationError, "volatile must be a boolean"))?,
    };
    let session = &event.session;
    let publish_patterns = session.claims.publish.as_deref().unwrap_or_default();
    let allowed = names::matches_any(publish_patterns, &room)
        || (session.config.members_publish && joined.is_some());
    if !allowed {
        return Err(if session.config.members_publish && event.may_join(&room) {
            (
                ErrorCode::NotInRoom,
                "join the room before publishing to it",
            )
        } else {
            (ErrorCode::Forbidden, "may not publish to this room")
        });
    }
    sink.request(Request::Publish {
        room,
        event: event.envelope.event.into(),
        data: event.data_text.unwrap_or(b"null").into(),
        echo,
        volatile,
        id: event.id(),
    });
    Ok(())
}

/// `rpc:<method>` (section 13.2): a call the `--rpc-proxy` answers.
pub fn rpc(event: &Event<'_, '_, '_>, sink: &mut dyn Sink) -> Outcome {
    let method = event.envelope.event.strip_prefix("rpc:");
    let (Some(method), true) = (method, event.session.rpc_proxy) else {
        return Err((ErrorCode::UnknownEvent, "unknown event"));
    };
    sink.request(Request::Rpc {
        method: method.into(),
        data: event.data_text.unwrap_or(b"null").into(),
        id: event.id(),
    });
    Ok(())
}

/// The event name a `user:send` or `system:broadcast` may carry: the
/// grammar, outside the reserved namespaces or inside `allowed_namespace`.
fn forwarded_event<'v>(
    value: Option<Value<'v, 'v>>,
    default: &'static str,
    allowed_namespace: &str,
) -> Result<String, (ErrorCode, &'static str)> {
    let Some(value) = value else {
        return Ok(default.to_owned());
    };
    let name = value
        .into_string()
        .ok_or((ErrorCode::ValidationError, "event must be a string"))?;
    let valid = names::is_valid_event(name)
        && (!names::is_reserved(name) || names::namespace(name) == allowed_namespace);
    if !valid {
        return Err((ErrorCode::ValidationError, "invalid event name"));
    }
    Ok(name.to_owned())
}

/// The exact text of `data.data`.
fn inner_data<'d>(event: &Event<'d, '_, '_>) -> &'d [u8] {
    event
        .data_text
        .and_then(|outer| scan::field_range(outer, "data").map(|range| &outer[range]))
        .unwrap_or(b"null")
}

/// `user:send`.
pub fn user_send(event: &Event<'_, '_, '_>, sink: &mut dyn Sink) -> Outcome {
    let to = event
        .data_field("to")
        .and_then(|t| t.into_string())
        .filter(|t| !t.is_empty() && t.len() <= MAX_SUB_LEN)
        .ok_or((ErrorCode::ValidationError, "to must be a user id"))?;
    let name = forwarded_event(event.data_field("event"), "user:message", "user")?;
    let text = wire::direct_message(
        &name,
        inner_data(event),
        &event.session.claims.sub,
        event.unix_ms,
    );
    sink.request(Request::UserSend {
        to: to.into(),
        text,
        id: event.id(),
    });
    Ok(())
}

/// `system:broadcast` (admins only).
pub fn broadcast(event: &Event<'_, '_, '_>, sink: &mut dyn Sink) -> Outcome {
    if !event.session.claims.admin {
        return Err((
            ErrorCode::Forbidden,
            "system:broadcast needs an admin token",
        ));
    }
    let name = event
        .data_field("event")
        .ok_or((ErrorCode::ValidationError, "event is missing"))
        .and_then(|e| forwarded_event(Some(e), "", "system"))?;
    let text = wire::direct_message(
        &name,
        inner_data(event),
        &event.session.claims.sub,
        event.unix_ms,
    );
    sink.request(Request::Broadcast {
        text,
        id: event.id(),
    });
    Ok(())
}

/// `presence:get`: for members and for users who may join.
pub fn presence_get(event: &Event<'_, '_, '_>, sink: &mut dyn Sink) -> Outcome {
    let room = event.room_argument()?;
    if !event.is_member(&room) && !event.may_join(&room) {
        return Err((ErrorCode::Forbidden, "may not see this room"));
    }
    sink.request(Request::PresenceGet {
        room,
        id: event.id(),
    });
    Ok(())
}

/// `connection:refresh`: a new token for the same user moves the deadline.
pub fn refresh(event: &Event<'_, '_, '_>, scratch: &mut Vec<u8>, sink: &mut dyn Sink) -> Outcome {
    let token = event
        .data_field("token")
        .and_then(|t| t.into_string())
        .ok_or((
            ErrorCode::ValidationError,
            "token is missing or not a string",
        ))?;
    let now = event.unix_ms as f64 / 1000.0;
    let claims =
        auth::verify(token, event.session.keys, now, event.session.leeway_secs).map_err(|e| {
            let message = match e {
                AuthError::Expired | AuthError::NotYetValid => "token is expired or not yet valid",
                _ => "token is not valid",
            };
            (e.code(), message)
        })?;
    if claims.sub != event.session.claims.sub {
        return Err((ErrorCode::Forbidden, "token is for another user"));
    }
    if let Some(id) = event.envelope.id {
        scratch.clear();
        let mut data = Vec::with_capacity(32);
        data.extend_from_slice(b"{\"exp\":");
        write_number(&mut data, claims.exp);
        data.push(b'}');
        reply::ack_ok(scratch, id, &data);
        sink.send_text(scratch);
    }
    sink.request(Request::Refresh { claims });
    Ok(())
}

/// Writes a claim time: an integer when it is one.
fn write_number(out: &mut Vec<u8>, n: f64) {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        json::write_i64(out, n as i64);
    } else {
        out.extend_from_slice(n.to_string().as_bytes());
    }
}
