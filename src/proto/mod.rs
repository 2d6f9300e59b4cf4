//! The event protocol on `/ws` (sections 4-6): what a client's text message
//! means and what the server answers.
//!
//! Sans-IO: takes an unmasked text payload and the session's identity, and
//! hands each JSON reply to a sink. Knows nothing of frames or sockets.

pub mod envelope;
pub mod events;
pub mod names;
pub mod publish;
pub mod reply;
pub mod scan;

use std::sync::Arc;

use crate::auth::{Claims, Keys};
use crate::codes::ErrorCode;
use crate::config::RoomsConfig;
use envelope::{Envelope, Parser};
use events::Event;
use reply::{Id, OwnedId};

/// What the event handlers know about the connection that sent a message.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    /// The token's claims (`sub` is the user id).
    pub claims: &'a Claims,
    /// Rooms the connection is in or joining.
    pub rooms: &'a [Arc<str>],
    pub config: &'a RoomsConfig,
    /// For `connection:refresh`.
    pub keys: &'a Keys,
    pub leeway_secs: f64,
}

/// What `room:join` asks to get back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinRecovery {
    pub history: Option<u64>,
    pub since: Option<u64>,
    pub epoch: Option<Box<str>>,
}

/// Work for the rooms, beyond replying to the sender.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Join {
        room: Arc<str>,
        id: Option<OwnedId>,
        recovery: JoinRecovery,
        rejoin: bool,
    },
    Leave {
        room: Arc<str>,
    },
    Publish {
        room: Arc<str>,
        event: Box<str>,
        data: Box<[u8]>,
        echo: bool,
        id: Option<OwnedId>,
    },
    /// `text` is the message every connection of `to` gets.
    UserSend {
        to: Box<str>,
        text: Vec<u8>,
        id: Option<OwnedId>,
    },
    PresenceGet {
        room: Arc<str>,
        id: Option<OwnedId>,
    },
    /// `text` is the message every other connection gets.
    Broadcast {
        text: Vec<u8>,
        id: Option<OwnedId>,
    },
    /// The connection now runs on these claims.
    Refresh {
        claims: Claims,
    },
    /// Message `index` of a `POST /publish` body, from user `from`; its
    /// `seq` comes back to the connection for the response.
    HttpPublish {
        index: usize,
        message: publish::Message,
        from: Arc<str>,
    },
}

/// Where replies and requests go.
pub trait Sink {
    /// Queues one text message for the sender.
    fn send_text(&mut self, text: &[u8]);
    /// Hands work to the rooms.
    fn request(&mut self, request: Request);
}

/// Handles one complete text message from a `/ws` client.
pub fn on_text(
    payload: &mut [u8],
    parser: &mut Parser,
    session: Session<'_>,
    unix_ms: u64,
    scratch: &mut Vec<u8>,
    sink: &mut dyn Sink,
) {
    if payload == b"ping" {
        // For browsers, which cannot send ping frames.
        sink.send_text(b"pong");
        return;
    }
    // Taken before the in-place parse rewrites escaped strings.
    let data_text: Option<Box<[u8]>> =
        scan::field_range(payload, "data").map(|r| payload[r].into());
    parser.with_envelope(payload, |parsed| match parsed {
        Err(refusal) => {
            scratch.clear();
            reply::failure(scratch, refusal.id, refusal.code, refusal.message);
            sink.send_text(scratch);
        }
        Ok(envelope) => {
            let event = Event {
                envelope: &envelope,
                data_text: data_text.as_deref(),
                session,
                unix_ms,
            };
            if let Err((code, message)) = dispatch(&event, scratch, sink) {
                scratch.clear();
                reply::failure(scratch, envelope.id, code, message);
                sink.send_text(scratch);
            }
        }
    });
}

/// Answers a message dropped by the rate limit, with an ack when it has a valid id.
pub fn on_rate_limited(
    payload: &mut [u8],
    parser: &mut Parser,
    scratch: &mut Vec<u8>,
    sink: &mut dyn Sink,
) {
    let id = if payload == b"ping" {
        None
    } else {
        parser.with_envelope(payload, |parsed| {
            parsed.ok().and_then(|e| e.id.map(OwnedId::from))
        })
    };
    scratch.clear();
    reply::failure(
        scratch,
        id.as_ref().map(OwnedId::as_id),
        ErrorCode::RateLimited,
        "rate limit exceeded",
    );
    sink.send_text(scratch);
}

fn dispatch(
    event: &Event<'_, '_, '_>,
    scratch: &mut Vec<u8>,
    sink: &mut dyn Sink,
) -> events::Outcome {
    let name = event.envelope.event;
    match name {
        "ping" => on_ping(event.envelope, event.unix_ms, scratch, sink),
        _ if names::RESERVED_BARE_NAMES.contains(&name) => {
            Err((ErrorCode::UnknownEvent, "event name is reserved"))
        }
        _ if !names::is_valid_event(name) => {
            Err((ErrorCode::ValidationError, "invalid event name"))
        }
        "room:join" => events::join(event, sink),
        "room:leave" => events::leave(event, scratch, sink),
        "user:send" => events::user_send(event, sink),
        "presence:get" => events::presence_get(event, sink),
        "connection:refresh" => events::refresh(event, scratch, sink),
        "system:broadcast" => events::broadcast(event, sink),
        _ if names::is_reserved(name) => Err((ErrorCode::UnknownEvent, "unknown event")),
        _ => events::publish(event, sink),
    }
}

fn on_ping(
    envelope: &Envelope<'_, '_>,
    unix_ms: u64,
    scratch: &mut Vec<u8>,
    sink: &mut dyn Sink,
) -> events::Outcome {
    scratch.clear();
    reply::pong(scratch, unix_ms);
    sink.send_text(scratch);
    if let Some(id) = envelope.id {
        send_ack(id, unix_ms, scratch, sink);
    }
    Ok(())
}

fn send_ack(id: Id<'_>, unix_ms: u64, scratch: &mut Vec<u8>, sink: &mut dyn Sink) {
    scratch.clear();
    let mut data = Vec::with_capacity(32);
    reply::server_time(&mut data, unix_ms);
    reply::ack_ok(scratch, id, &data);
    sink.send_text(scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collected(Vec<String>, Vec<Request>);

    impl Sink for Collected {
        fn send_text(&mut self, text: &[u8]) {
            self.0.push(String::from_utf8(text.to_vec()).unwrap());
        }

        fn request(&mut self, request: Request) {
            self.1.push(request);
        }
    }

    fn claims() -> Claims {
        Claims {
            rooms: Some(["lobby".into(), "prices:*".into()].into()),
            ..Claims::new("u1", 0.0)
        }
    }

    fn run(text: &str, claims: &Claims, rooms: &[Arc<str>], config: &RoomsConfig) -> Collected {
        let keys = Keys::new(&["k"]);
        let session = Session {
            claims,
            rooms,
            config,
            keys: &keys,
            leeway_secs: 0.0,
        };
        let mut collected = Collected::default();
        let mut payload = text.as_bytes().to_vec();
        on_text(
            &mut payload,
            &mut Parser::default(),
            session,
            1234,
            &mut Vec::new(),
            &mut collected,
        );
        collected
    }

    fn answer(text: &str) -> Vec<String> {
        run(text, &claims(), &[], &RoomsConfig::default()).0
    }

    fn requests(text: &str, rooms: &[Arc<str>]) -> Vec<Request> {
        let collected = run(text, &claims(), rooms, &RoomsConfig::default());
        assert!(collected.0.is_empty(), "{:?}", collected.0);
        collected.1
    }

    #[test]
    fn a_room_event_keeps_the_data_text_verbatim() {
        let lobby: Arc<str> = Arc::from("lobby");
        let sent = requests(
            r#"{"event":"chat:msg","room":"lobby","data":{"t" : "\u00e9"},"echo":true,"id":1}"#,
            std::slice::from_ref(&lobby),
        );
        assert_eq!(
            sent,
            [Request::Publish {
                room: lobby,
                event: "chat:msg".into(),
                data: br#"{"t" : "\u00e9"}"#.as_slice().into(),
                echo: true,
                id: Some(OwnedId::Int(1)),
            }]
        );
    }

    #[test]
    fn join_reads_its_arguments_from_data() {
        let sent = requests(
            r#"{"event":"room:join","data":{"room":"prices:btc","history":5,"since":3,"epoch":"e"}}"#,
            &[],
        );
        assert_eq!(
            sent,
            [Request::Join {
                room: Arc::from("prices:btc"),
                id: None,
                recovery: JoinRecovery {
                    history: Some(5),
                    since: Some(3),
                    epoch: Some("e".into())
                },
                rejoin: false,
            }]
        );
    }

    #[test]
    fn join_is_limited_by_patterns_and_room_count() {
        let code = |text: &str, rooms: &[Arc<str>], config: &RoomsConfig| {
            run(text, &claims(), rooms, config).0.concat()
        };
        let config = RoomsConfig {
            max_rooms_per_connection: 1,
            ..RoomsConfig::default()
        };
        assert!(
            code(
                r#"{"event":"room:join","data":{"room":"secret"}}"#,
                &[],
                &config
            )
            .contains("FORBIDDEN")
        );
        let one: Vec<Arc<str>> = vec![Arc::from("lobby")];
        assert!(
            code(
                r#"{"event":"room:join","data":{"room":"prices:x"}}"#,
                &one,
                &config
            )
            .contains("ROOM_LIMIT")
        );
        assert!(
            code(
                r#"{"event":"room:join","data":{"room":"lobby"}}"#,
                &one,
                &config
            )
            .is_empty()
        );
    }

    #[test]
    fn user_send_builds_the_message_once() {
        let sent = requests(
            r#"{"event":"user:send","data":{"to":"bob","data":[1, 2]}}"#,
            &[],
        );
        let [Request::UserSend { to, text, id: None }] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(&**to, "bob");
        assert_eq!(
            text,
            br#"{"event":"user:message","data":[1, 2],"from":"u1","ts":1234}"#
        );
    }

    #[test]
    fn broadcast_needs_an_admin() {
        let text = r#"{"event":"system:broadcast","data":{"event":"system:notice","data":1}}"#;
        assert!(answer(text).concat().contains("FORBIDDEN"));
        let admin = Claims {
            admin: true,
            ..claims()
        };
        let collected = run(text, &admin, &[], &RoomsConfig::default());
        assert!(
            matches!(&collected.1[..], [Request::Broadcast { .. }]),
            "{:?}",
            collected.0
        );
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
        assert_eq!(
            code(r#"{"event":"user:send","data":{"to":"b","event":"room:x"}}"#),
            "VALIDATION_ERROR"
        );
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
