//! The event protocol on `/ws` (sections 4-6): what a client's text message
//! means and what the server answers.
//!
//! Sans-IO: takes an unmasked text payload and the session's identity, and
//! hands each JSON reply to a sink. Knows nothing of frames or sockets.

pub mod envelope;
pub mod events;
pub mod fossil;
pub mod msgpack;
pub mod names;
pub(crate) mod numbers;
pub mod publish;
pub mod reply;
pub mod scan;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

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
    /// Whether `--rpc-proxy` is given: without it `rpc:*` is unknown.
    pub rpc_proxy: bool,
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
        /// The exact text of `data.meta`, for the `--subscribe-proxy`.
        meta: Option<Box<[u8]>>,
        /// `data.maxRate` (section 14) as the least time between two room
        /// events for this member; `None`: every event at once.
        min_interval: Option<Duration>,
        /// `data.delta` (section 14): room events that directly follow the
        /// last one this member was sent come as Fossil deltas.
        delta: bool,
    },
    Leave {
        room: Arc<str>,
    },
    Publish {
        room: Arc<str>,
        event: Box<str>,
        data: Box<[u8]>,
        echo: bool,
        /// Section 14: to the members connected now, with no `seq` or history.
        volatile: bool,
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
    /// A Server API call (section 12) by `from`: its commands run in
    /// order and their replies come back to the connection together.
    Api {
        call: Box<crate::api::Call>,
        from: Arc<str>,
    },
    /// An upgrade to `/ws` without a token waits for the `--connect-proxy`
    /// (section 13.2): `body` is the request for it. Not the rooms' work:
    /// the shard takes it before them.
    Connect {
        body: Vec<u8>,
    },
    /// `rpc:<method>` for the `--rpc-proxy` (section 13.2); `data` is the
    /// exact text the client sent.
    Rpc {
        method: Box<str>,
        data: Box<[u8]>,
        id: Option<OwnedId>,
    },
}

impl Request {
    /// Whether the rooms answer this request to the sender's connection:
    /// every join (`Joined`, accepted or refused), and any other request
    /// with an `id` (its ack). A connection closes only once these are in.
    pub fn awaits_answer(&self) -> bool {
        match self {
            // Answered even without an id: a failure is an error event.
            Request::Join { .. } | Request::Rpc { .. } => true,
            Request::Publish { id, .. }
            | Request::UserSend { id, .. }
            | Request::PresenceGet { id, .. }
            | Request::Broadcast { id, .. } => id.is_some(),
            Request::Leave { .. }
            | Request::Connect { .. }
            | Request::Refresh { .. }
            | Request::HttpPublish { .. }
            | Request::Api { .. } => false,
        }
    }
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
    // Taken before the in-place parse rewrites escaped strings, into a
    // buffer the parser keeps for the next message.
    let mut kept = std::mem::take(&mut parser.data_text);
    kept.clear();
    let data_text = scan::field_range(payload, "data").map(|r| {
        kept.extend_from_slice(&payload[r]);
        &kept[..]
    });
    parser.with_envelope(payload, |parsed| match parsed {
        Err(refusal) => {
            scratch.clear();
            reply::failure(scratch, refusal.id, refusal.code, refusal.message);
            sink.send_text(scratch);
        }
        Ok(envelope) => {
            let event = Event {
                envelope: &envelope,
                data_text,
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
    // A big message's `data` does not pin its size for good.
    if kept.capacity() <= KEPT_DATA_TEXT {
        parser.data_text = kept;
    }
}

/// The largest `data` text buffer the parser keeps between messages.
const KEPT_DATA_TEXT: usize = 64 * 1024;

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
        _ if names::namespace(name) == "rpc" => events::rpc(event, sink),
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
            rpc_proxy: false,
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
    fn a_members_publish_shares_the_connections_name_of_the_room() {
        let lobby: Arc<str> = Arc::from("lobby");
        let text = r#"{"event":"chat:msg","room":"lobby","data":1}"#;
        match requests(text, std::slice::from_ref(&lobby)).as_slice() {
            [Request::Publish { room, .. }] => assert!(Arc::ptr_eq(room, &lobby)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_message_of_one_parser_publishes_its_own_data() {
        let lobby: Arc<str> = Arc::from("lobby");
        let (claims, config, keys) = (claims(), RoomsConfig::default(), Keys::new(&["k"]));
        let mut parser = Parser::default();
        let mut collected = Collected::default();
        for text in [
            r#"{"event":"chat:msg","room":"lobby","data":{"long":"a\"b"}}"#,
            r#"{"event":"chat:msg","room":"lobby","data":2}"#,
            r#"{"event":"chat:msg","room":"lobby"}"#,
        ] {
            let session = Session {
                claims: &claims,
                rooms: std::slice::from_ref(&lobby),
                config: &config,
                keys: &keys,
                leeway_secs: 0.0,
                rpc_proxy: false,
            };
            let mut payload = text.as_bytes().to_vec();
            on_text(
                &mut payload,
                &mut parser,
                session,
                1,
                &mut Vec::new(),
                &mut collected,
            );
        }
        let data: Vec<&[u8]> = collected
            .1
            .iter()
            .map(|request| match request {
                Request::Publish { data, .. } => &data[..],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(data, [&br#"{"long":"a\"b"}"#[..], b"2", b"null"]);
    }

    /// The `data` text of the one publish `text` asks for.
    fn published_data(text: &str) -> Vec<u8> {
        let lobby: Arc<str> = Arc::from("lobby");
        match requests(text, std::slice::from_ref(&lobby)).as_slice() {
            [Request::Publish { data, .. }] => data.to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_beyond_64_bits_in_data_are_forwarded_verbatim() {
        for data in [
            "1e30",
            "18446744073709551616",
            "-9223372036854775809",
            "1.8e308",
            "-1e400",
            "3.14159265358979323846264338327950288419716939937510",
            r#"{"big":[1e999,{"s":"\u00e9 \" 1e999"}],"n":123456789012345678901234567890}"#,
        ] {
            let text = format!(r#"{{"event":"chat:msg","room":"lobby","data":{data},"id":1}}"#);
            assert_eq!(published_data(&text), data.as_bytes(), "{data}");
        }
    }

    #[test]
    fn an_id_beyond_64_bits_is_a_validation_error_not_invalid_json() {
        for id in ["18446744073709551616", "-1e400", "1e30"] {
            let text = format!(r#"{{"event":"chat:msg","room":"lobby","data":1,"id":{id}}}"#);
            let replies = answer(&text);
            assert_eq!(replies.len(), 1, "{replies:?}");
            assert!(replies[0].contains("VALIDATION_ERROR"), "{id}: {replies:?}");
        }
    }

    #[test]
    fn a_history_beyond_64_bits_is_a_validation_error() {
        let replies =
            answer(r#"{"event":"room:join","data":{"room":"lobby","history":1e400},"id":1}"#);
        assert!(replies[0].contains("VALIDATION_ERROR"), "{replies:?}");
    }

    /// Any JSON value: numbers of every size, strings with escapes, nesting.
    fn json_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let number = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            (
                "-?[1-9][0-9]{0,60}",
                "(\\.[0-9]{1,40})?",
                "([eE][-+]?[0-9]{1,4})?"
            )
                .prop_map(|(i, f, e)| format!("{i}{f}{e}")),
        ];
        let string = "([a-z \u{e9}\u{1f600}]|\\\\[nt\"\\\\/]|\\\\u00e9){0,12}"
            .prop_map(|s| format!("\"{s}\""));
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number,
            string.clone(),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6)
                    .prop_map(|items| format!("[{}]", items.join(" , "))),
                proptest::collection::vec((string.clone(), inner), 0..6).prop_map(|fields| {
                    let fields: Vec<String> = fields
                        .into_iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn any_json_in_data_is_forwarded_byte_for_byte(data in json_value()) {
            let text = format!(r#"{{"event":"chat:msg","room":"lobby","data":{data},"id":7}}"#);
            proptest::prop_assert_eq!(published_data(&text), data.into_bytes());
        }
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
                volatile: false,
                id: Some(OwnedId::Int(1)),
            }]
        );
    }

    #[test]
    fn join_reads_max_rate_as_an_interval() {
        for (rate, millis) in [("2", 500), ("0.1", 10_000), ("1000", 1), ("2.5e0", 400)] {
            let text = format!(
                r#"{{"event":"room:join","data":{{"room":"prices:btc","maxRate":{rate}}}}}"#
            );
            match requests(&text, &[]).as_slice() {
                [Request::Join { min_interval, .. }] => {
                    assert_eq!(*min_interval, Some(Duration::from_millis(millis)), "{rate}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_max_rate_out_of_range_or_not_a_number_is_a_validation_error() {
        for rate in [
            "0", "0.09", "1000.5", "-1", "1e400", "\"5\"", "null", "true", "[2]",
        ] {
            let text = format!(
                r#"{{"event":"room:join","data":{{"room":"prices:btc","maxRate":{rate}}},"id":1}}"#
            );
            let replies = answer(&text);
            assert_eq!(replies.len(), 1, "{rate}: {replies:?}");
            assert!(
                replies[0].contains("VALIDATION_ERROR"),
                "{rate}: {replies:?}"
            );
            assert!(replies[0].contains("maxRate"), "{rate}: {replies:?}");
        }
    }

    #[test]
    fn join_reads_delta_as_a_boolean() {
        for (delta, want) in [("true", true), ("false", false)] {
            let text = format!(
                r#"{{"event":"room:join","data":{{"room":"prices:btc","delta":{delta}}}}}"#
            );
            match requests(&text, &[]).as_slice() {
                [Request::Join { delta, .. }] => assert_eq!(*delta, want),
                other => panic!("{other:?}"),
            }
        }
        match requests(r#"{"event":"room:join","data":{"room":"prices:btc"}}"#, &[]).as_slice() {
            [Request::Join { delta, .. }] => assert!(!delta),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_delta_not_a_boolean_is_a_validation_error() {
        for delta in ["1", "0", "\"true\"", "null", "[true]", "{}"] {
            let text = format!(
                r#"{{"event":"room:join","data":{{"room":"prices:btc","delta":{delta}}},"id":1}}"#
            );
            let replies = answer(&text);
            assert_eq!(replies.len(), 1, "{delta}: {replies:?}");
            assert!(
                replies[0].contains("VALIDATION_ERROR"),
                "{delta}: {replies:?}"
            );
            assert!(replies[0].contains("delta"), "{delta}: {replies:?}");
        }
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
                meta: None,
                min_interval: None,
                delta: false,
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
