//! The event protocol on `/ws` (sections 4-6): what a client's text message
//! means and what the server answers.
//!
//! Sans-IO: takes an unmasked text payload and the session's identity, and
//! hands each JSON reply to a sink. Knows nothing of frames or sockets.

pub mod envelope;
pub mod names;
pub mod reply;

use simd_json::prelude::*;

use crate::auth::Claims;
use crate::codes::ErrorCode;
use envelope::{Envelope, Parser};
use reply::Id;

/// What the event handlers know about the connection that sent a message.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    /// The token's claims (`sub` is the user id).
    pub claims: &'a Claims,
}

/// Where replies go: the caller frames each JSON text as one text message.
pub trait Replies {
    /// Queues one text message for the sender.
    fn send_text(&mut self, text: &[u8]);
}

/// Handles one complete text message from a `/ws` client.
pub fn on_text(
    payload: &mut [u8],
    parser: &mut Parser,
    session: Session<'_>,
    unix_ms: u64,
    scratch: &mut Vec<u8>,
    replies: &mut dyn Replies,
) {
    if payload == b"ping" {
        // For browsers, which cannot send ping frames.
        replies.send_text(b"pong");
        return;
    }
    parser.with_envelope(payload, |parsed| match parsed {
        Err(refusal) => {
            scratch.clear();
            reply::failure(scratch, refusal.id, refusal.code, refusal.message);
            replies.send_text(scratch);
        }
        Ok(envelope) => dispatch(&envelope, session, unix_ms, scratch, replies),
    });
}

fn dispatch(
    envelope: &Envelope<'_, '_>,
    session: Session<'_>,
    unix_ms: u64,
    scratch: &mut Vec<u8>,
    replies: &mut dyn Replies,
) {
    let id = envelope.id;
    let event = envelope.event;
    let outcome = if event == "ping" {
        on_ping(id, unix_ms, scratch, replies)
    } else if names::RESERVED_BARE_NAMES.contains(&event) {
        Err((ErrorCode::UnknownEvent, "event name is reserved"))
    } else if !names::is_valid_event(event) {
        Err((ErrorCode::ValidationError, "invalid event name"))
    } else if names::is_reserved(event) {
        Err((ErrorCode::UnknownEvent, "unknown event"))
    } else {
        on_room_event(envelope, session)
    };
    if let Err((code, message)) = outcome {
        scratch.clear();
        reply::failure(scratch, id, code, message);
        replies.send_text(scratch);
    }
}

type Outcome = Result<(), (ErrorCode, &'static str)>;

fn on_ping(
    id: Option<Id<'_>>,
    unix_ms: u64,
    scratch: &mut Vec<u8>,
    replies: &mut dyn Replies,
) -> Outcome {
    scratch.clear();
    reply::pong(scratch, unix_ms);
    replies.send_text(scratch);
    if let Some(id) = id {
        scratch.clear();
        let mut data = Vec::with_capacity(32);
        reply::server_time(&mut data, unix_ms);
        reply::ack_ok(scratch, id, &data);
        replies.send_text(scratch);
    }
    Ok(())
}

/// Room events need a room the sender has joined; rooms are not served yet,
/// so a valid request is answered as for a room the sender is not in.
fn on_room_event(envelope: &Envelope<'_, '_>, session: Session<'_>) -> Outcome {
    let Some(room) = envelope.field("room").and_then(|r| r.into_string()) else {
        return Err((
            ErrorCode::ValidationError,
            "room is missing or not a string",
        ));
    };
    if !names::is_valid_room(room) {
        return Err((ErrorCode::ValidationError, "invalid room name"));
    }
    if names::may_join(session.claims.rooms.as_deref(), room) {
        Err((ErrorCode::NotInRoom, "not a member of the room"))
    } else {
        Err((ErrorCode::Forbidden, "may not publish to the room"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collected(Vec<String>);

    impl Replies for Collected {
        fn send_text(&mut self, text: &[u8]) {
            self.0.push(String::from_utf8(text.to_vec()).unwrap());
        }
    }

    fn claims() -> Claims {
        Claims {
            rooms: Some(vec!["lobby".into(), "prices:*".into()]),
            ..Claims::new("u1", 0.0)
        }
    }

    fn answer(text: &str) -> Vec<String> {
        let claims = claims();
        let mut replies = Collected(Vec::new());
        let mut payload = text.as_bytes().to_vec();
        on_text(
            &mut payload,
            &mut Parser::default(),
            Session { claims: &claims },
            1234,
            &mut Vec::new(),
            &mut replies,
        );
        replies.0
    }

    #[test]
    fn bare_ping_gets_bare_pong() {
        assert_eq!(answer("ping"), ["pong"]);
    }

    #[test]
    fn ping_event_gets_pong_and_ack_when_id_is_set() {
        assert_eq!(
            answer(r#"{"event":"ping"}"#),
            [r#"{"event":"pong","data":{"serverTime":1234}}"#]
        );
        assert_eq!(
            answer(r#"{"event":"ping","id":"p"}"#),
            [
                r#"{"event":"pong","data":{"serverTime":1234}}"#,
                r#"{"event":"ack","id":"p","success":true,"data":{"serverTime":1234}}"#
            ]
        );
    }

    #[test]
    fn failures_carry_their_codes() {
        let code = |text: &str| {
            let replies = answer(text);
            assert_eq!(replies.len(), 1, "{text}");
            let reply = &replies[0];
            let start = reply.find("\"code\":\"").unwrap() + 8;
            reply[start..start + reply[start..].find('"').unwrap()].to_owned()
        };
        assert_eq!(code("not json"), "INVALID_MESSAGE");
        assert_eq!(code("[]"), "INVALID_MESSAGE");
        assert_eq!(code(r#"{"event":"pong"}"#), "UNKNOWN_EVENT");
        assert_eq!(code(r#"{"event":"system:nope"}"#), "UNKNOWN_EVENT");
        assert_eq!(code(r#"{"event":"Bad Name"}"#), "VALIDATION_ERROR");
        assert_eq!(code(r#"{"event":"chat:msg"}"#), "VALIDATION_ERROR");
        assert_eq!(
            code(r#"{"event":"chat:msg","room":"no space"}"#),
            "VALIDATION_ERROR"
        );
        assert_eq!(
            code(r#"{"event":"chat:msg","room":"lobby"}"#),
            "NOT_IN_ROOM"
        );
        assert_eq!(code(r#"{"event":"chat:msg","room":"secret"}"#), "FORBIDDEN");
    }

    #[test]
    fn a_failure_with_an_id_is_a_failed_ack() {
        assert_eq!(
            answer(r#"{"event":"system:nope","id":3}"#),
            [
                r#"{"event":"ack","id":3,"success":false,"error":{"code":"UNKNOWN_EVENT","message":"unknown event"}}"#
            ]
        );
    }
}
