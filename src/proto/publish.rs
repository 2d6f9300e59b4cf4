//! The body of `POST /publish` (protocol section 9): one message
//! `{"room","event","data"}` or a batch `{"messages":[...]}`, validated as a
//! whole before anything is published (all or nothing).
//!
//! Owns: the shape of the body, the checks of each message (room and event
//! grammar, reserved namespaces), the batch bounds and the `pub` patterns,
//! in that order, and the exact `data` text of each message (forwarded as
//! sent, `null` when absent, as for room events on `/ws`).
//!
//! Sans-IO. Must not touch: HTTP framing or responses, connections, the
//! token's verification (the caller passes verified claims) or the rooms.

use std::fmt;
use std::sync::Arc;

use simd_json::prelude::*;
use simd_json::tape::Value;

use crate::auth::Claims;
use crate::codes::ErrorCode;
use crate::codes::limits::MAX_PUBLISH_MESSAGES;
use crate::proto::envelope::Parser;
use crate::proto::names::{is_reserved, is_valid_event, is_valid_room, matches_any};
use crate::proto::scan;

/// The `seq` an HTTP or API publisher hears back for a volatile message:
/// never one a sequenced message gets (they count from 1).
pub const NO_SEQ: u64 = 0;

/// One message to publish, valid and permitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub room: Arc<str>,
    pub event: Box<str>,
    /// The exact JSON text of `data` as sent.
    pub data: Box<[u8]>,
    /// Section 14: to the members connected now, with no `seq` or history.
    pub volatile: bool,
}

/// Why a body was refused; `code()` and `message()` make the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishError {
    /// The body is not JSON.
    NotJson,
    /// The body is JSON but not an object.
    NotAnObject,
    /// `messages` is present but not an array.
    MessagesNotAnArray,
    /// `messages` is an empty array.
    NoMessages,
    /// `messages` has more than `MAX_PUBLISH_MESSAGES` elements.
    TooManyMessages,
    /// A message is invalid; `index` is its place in `messages` (`None` for
    /// a single-message body).
    Invalid {
        index: Option<usize>,
        problem: Problem,
    },
    /// The token's `pub` patterns do not cover `room`.
    Forbidden { room: Arc<str> },
    /// The token's subject is over its publish rate (the token's `rate`,
    /// else `--publish-rate`), in messages per second.
    RateLimited { rate: f64 },
}

/// What is wrong with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    NotAnObject,
    MissingRoom,
    InvalidRoom,
    MissingEvent,
    InvalidEvent,
    /// The event lies in a reserved namespace (`room`, `user`, ...).
    ReservedEvent,
    /// `volatile` is not a boolean.
    InvalidVolatile,
}

impl Problem {
    const fn message(self) -> &'static str {
        match self {
            Self::NotAnObject => "message must be a JSON object",
            Self::MissingRoom => "room is missing or not a string",
            Self::InvalidRoom => "invalid room name",
            Self::MissingEvent => "event is missing or not a string",
            Self::InvalidEvent => "invalid event name",
            Self::ReservedEvent => "event namespace is reserved",
            Self::InvalidVolatile => "volatile must be a boolean",
        }
    }
}

impl PublishError {
    /// `INVALID_MESSAGE` when the body is not a JSON object,
    /// `FORBIDDEN` for a room the token does not cover, `RATE_LIMITED`
    /// over the publish rate, else `VALIDATION_ERROR`.
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::NotJson | Self::NotAnObject => ErrorCode::InvalidMessage,
            Self::Forbidden { .. } => ErrorCode::Forbidden,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            _ => ErrorCode::ValidationError,
        }
    }

    /// The message of the error response; names the message at fault in a
    /// batch (`messages[2]: invalid room name`).
    pub fn message(&self) -> String {
        match self {
            Self::NotJson => "body is not valid JSON".to_owned(),
            Self::NotAnObject => "body must be a JSON object".to_owned(),
            Self::MessagesNotAnArray => "messages must be an array".to_owned(),
            Self::NoMessages => "messages must not be empty".to_owned(),
            Self::TooManyMessages => {
                format!("at most {MAX_PUBLISH_MESSAGES} messages per request")
            }
            Self::Invalid {
                index: None,
                problem,
            } => problem.message().to_owned(),
            Self::Invalid {
                index: Some(index),
                problem,
            } => format!("messages[{index}]: {}", problem.message()),
            // Room names are validated before permissions: safe to show.
            Self::Forbidden { room } => format!("may not publish to {room}"),
            Self::RateLimited { rate } => {
                format!("over the publish rate of {rate} messages per second")
            }
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for PublishError {}

/// Validates a whole body and returns its messages in order. `body` is
/// parsed in place and left scrambled. Checks run in this order: JSON, the
/// body's shape, each message, then the `pub` patterns of `claims`.
pub fn parse(
    body: &mut [u8],
    parser: &mut Parser,
    claims: &Claims,
) -> Result<Vec<Message>, PublishError> {
    let messages = parse_unchecked(body, parser)?;
    let patterns = claims.publish.as_deref().unwrap_or_default();
    for message in &messages {
        if !matches_any(patterns, &message.room) {
            return Err(PublishError::Forbidden {
                room: message.room.clone(),
            });
        }
    }
    Ok(messages)
}

/// Validates a whole body as [`parse`] does, but for the `pub` patterns:
/// for a caller no pattern applies to (the Server API, section 12).
pub fn parse_unchecked(body: &mut [u8], parser: &mut Parser) -> Result<Vec<Message>, PublishError> {
    // Taken before the in-place parse rewrites escaped strings.
    let data_texts = data_texts(body);
    parser.with_json(body, |value| {
        read_body(value.ok_or(PublishError::NotJson)?, data_texts)
    })
}

/// The raw `data` text of each message, in order: of each element of
/// `messages` (at most one more than the batch bound, enough to refuse a
/// longer batch), or of the body itself. Meaningful only once the body
/// parses as JSON.
fn data_texts(body: &[u8]) -> Vec<Option<Box<[u8]>>> {
    let data_of = |range: std::ops::Range<usize>| {
        let text = body.get(range)?;
        let data = scan::field_range(text, "data")?;
        text.get(data).map(Box::from)
    };
    match scan::field_range(body, "messages") {
        Some(array) => scan::elements(body, array)
            .take(MAX_PUBLISH_MESSAGES + 1)
            .map(data_of)
            .collect(),
        None => vec![data_of(0..body.len())],
    }
}

fn read_body(
    value: Value<'_, '_>,
    data_texts: Vec<Option<Box<[u8]>>>,
) -> Result<Vec<Message>, PublishError> {
    let object = value.as_object().ok_or(PublishError::NotAnObject)?;
    let Some(list) = object.get("messages") else {
        let data = data_texts.into_iter().next().flatten();
        return Ok(vec![read_message(value, None, data)?]);
    };
    let list = list.as_array().ok_or(PublishError::MessagesNotAnArray)?;
    match list.len() {
        0 => return Err(PublishError::NoMessages),
        n if n > MAX_PUBLISH_MESSAGES => return Err(PublishError::TooManyMessages),
        // The skim and the parser agree on every valid JSON text.
        n if n != data_texts.len() => return Err(PublishError::NotJson),
        _ => {}
    }
    list.iter()
        .zip(data_texts)
        .enumerate()
        .map(|(index, (value, data))| read_message(value, Some(index), data))
        .collect()
}

fn read_message(
    value: Value<'_, '_>,
    index: Option<usize>,
    data: Option<Box<[u8]>>,
) -> Result<Message, PublishError> {
    let invalid = |problem| PublishError::Invalid { index, problem };
    let object = value.as_object().ok_or(invalid(Problem::NotAnObject))?;
    let string = |key: &str, missing| {
        object
            .get(key)
            .and_then(|v| v.into_string())
            .ok_or(invalid(missing))
    };
    let room = string("room", Problem::MissingRoom)?;
    if !is_valid_room(room) {
        return Err(invalid(Problem::InvalidRoom));
    }
    let event = string("event", Problem::MissingEvent)?;
    if !is_valid_event(event) {
        return Err(invalid(Problem::InvalidEvent));
    }
    if is_reserved(event) {
        return Err(invalid(Problem::ReservedEvent));
    }
    let volatile = match object.get("volatile") {
        None => false,
        Some(v) => v.as_bool().ok_or(invalid(Problem::InvalidVolatile))?,
    };
    Ok(Message {
        room: Arc::from(room),
        event: event.into(),
        data: data.unwrap_or_else(|| Box::from(b"null".as_slice())),
        volatile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims(patterns: &[&str]) -> Claims {
        Claims {
            publish: Some(patterns.iter().map(|&p| p.into()).collect()),
            ..Claims::new("feed", f64::MAX)
        }
    }

    fn run(body: &str, patterns: &[&str]) -> Result<Vec<Message>, PublishError> {
        let mut bytes = body.as_bytes().to_vec();
        parse(&mut bytes, &mut Parser::default(), &claims(patterns))
    }

    fn message(room: &str, event: &str, data: &str) -> Message {
        Message {
            room: Arc::from(room),
            event: event.into(),
            data: data.as_bytes().into(),
            volatile: false,
        }
    }

    #[test]
    fn volatile_is_read_per_message_and_must_be_a_boolean() {
        let messages = run(
            r#"{"messages":[{"room":"a","event":"x:y","volatile":true},{"room":"b","event":"x:y","volatile":false}]}"#,
            &["*"],
        )
        .unwrap();
        assert_eq!(
            messages.iter().map(|m| m.volatile).collect::<Vec<_>>(),
            [true, false]
        );
        for bad in ["1", "\"true\"", "null", "{}"] {
            let body = format!(r#"{{"room":"a","event":"x:y","volatile":{bad}}}"#);
            assert_eq!(
                error(&body),
                (
                    ErrorCode::ValidationError,
                    "volatile must be a boolean".to_owned()
                ),
                "{bad}"
            );
        }
    }

    fn error(body: &str) -> (ErrorCode, String) {
        let error = run(body, &["*"]).unwrap_err();
        (error.code(), error.message())
    }

    #[test]
    fn a_single_message_keeps_its_data_verbatim() {
        assert_eq!(
            run(
                r#"{"room":"prices:btc","event":"price:tick","data":{"p" : "\u00e9", "n":1.50}}"#,
                &["prices:*"]
            ),
            Ok(vec![message(
                "prices:btc",
                "price:tick",
                r#"{"p" : "\u00e9", "n":1.50}"#
            )])
        );
        assert_eq!(
            run(r#"{"room":"r","event":"a:b","id":1}"#, &["r"]),
            Ok(vec![message("r", "a:b", "null")])
        );
    }

    #[test]
    fn a_batch_keeps_its_order_and_each_data() {
        let body = r#"{"messages":[
            {"room":"a","event":"x:y","data":[1, "\"]"]},
            {"room":"b","event":"x:z"},
            {"data":"s","room":"a","event":"x:y"}
        ]}"#;
        assert_eq!(
            run(body, &["a", "b"]),
            Ok(vec![
                message("a", "x:y", r#"[1, "\"]"]"#),
                message("b", "x:z", "null"),
                message("a", "x:y", r#""s""#),
            ])
        );
    }

    #[test]
    fn body_errors_carry_their_codes() {
        use ErrorCode::*;
        let cases: &[(&str, ErrorCode, &str)] = &[
            ("", InvalidMessage, "body is not valid JSON"),
            ("{", InvalidMessage, "body is not valid JSON"),
            ("[1]", InvalidMessage, "body must be a JSON object"),
            (
                r#"{"messages":{}}"#,
                ValidationError,
                "messages must be an array",
            ),
            (
                r#"{"messages":[]}"#,
                ValidationError,
                "messages must not be empty",
            ),
            (
                r#"{"messages":[1]}"#,
                ValidationError,
                "messages[0]: message must be a JSON object",
            ),
            (
                r#"{"event":"a:b"}"#,
                ValidationError,
                "room is missing or not a string",
            ),
            (
                r#"{"room":7,"event":"a:b"}"#,
                ValidationError,
                "room is missing or not a string",
            ),
            (
                r#"{"room":"a b","event":"a:b"}"#,
                ValidationError,
                "invalid room name",
            ),
            (
                r#"{"room":"r"}"#,
                ValidationError,
                "event is missing or not a string",
            ),
            (
                r#"{"room":"r","event":"Bad"}"#,
                ValidationError,
                "invalid event name",
            ),
            (
                r#"{"room":"r","event":"ping"}"#,
                ValidationError,
                "invalid event name",
            ),
            (
                r#"{"room":"r","event":"room:join"}"#,
                ValidationError,
                "event namespace is reserved",
            ),
            (
                r#"{"room":"r","event":"system:x"}"#,
                ValidationError,
                "event namespace is reserved",
            ),
            (
                r#"{"messages":[{"room":"r","event":"a:b"},{"room":"r","event":"user:x"}]}"#,
                ValidationError,
                "messages[1]: event namespace is reserved",
            ),
        ];
        for (body, code, message) in cases {
            assert_eq!(error(body), (*code, message.to_string()), "{body}");
        }
    }

    #[test]
    fn batches_are_bounded() {
        let one = r#"{"room":"r","event":"a:b"}"#;
        let batch = |n: usize| format!(r#"{{"messages":[{}]}}"#, vec![one; n].join(","));
        assert_eq!(
            run(&batch(MAX_PUBLISH_MESSAGES), &["r"]).unwrap().len(),
            MAX_PUBLISH_MESSAGES
        );
        assert_eq!(
            error(&batch(MAX_PUBLISH_MESSAGES + 1)).0,
            ErrorCode::ValidationError
        );
    }

    #[test]
    fn permissions_come_after_validation_and_cover_every_room() {
        let body = r#"{"messages":[{"room":"ok","event":"a:b"},{"room":"secret","event":"a:b"}]}"#;
        let forbidden = run(body, &["ok"]).unwrap_err();
        assert_eq!(forbidden.code(), ErrorCode::Forbidden);
        assert_eq!(forbidden.message(), "may not publish to secret");
        assert_eq!(run(body, &["ok", "sec*"]).map(|m| m.len()), Ok(2));
        let invalid = r#"{"messages":[{"room":"secret","event":"a:b"},{"room":"ok"}]}"#;
        assert_eq!(
            run(invalid, &["ok"]).unwrap_err().code(),
            ErrorCode::ValidationError
        );
        // `rooms` (join patterns) do not grant publishing.
        let member = Claims {
            rooms: Some(["*".into()].into()),
            ..Claims::new("u", f64::MAX)
        };
        let mut bytes = br#"{"room":"r","event":"a:b"}"#.to_vec();
        assert_eq!(
            parse(&mut bytes, &mut Parser::default(), &member).map_err(|e| e.code()),
            Err(ErrorCode::Forbidden)
        );
    }

    fn json_data() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            "-?(0|[1-9][0-9]{0,6})".prop_map(|s| s),
            "[a-z \\\\\"é]{0,10}".prop_map(|s| format!("{s:?}")),
            "[a-z]{1,5}".prop_map(|k| format!(r#"{{ "{k}" : [1, {{"x":"\u00e9"}}] }}"#)),
        ]
    }

    proptest! {
        #[test]
        fn valid_batches_round_trip(
            items in proptest::collection::vec(
                ("[a-z][a-z0-9._:@/-]{0,20}", "[a-z]{1,8}:[a-z]{1,8}", proptest::option::of(json_data())),
                1..20,
            ),
        ) {
            let texts: Vec<String> = items
                .iter()
                .map(|(room, event, data)| match data {
                    Some(d) => format!(r#"{{ "event":"{event}", "data" :{d}, "room":"{room}" }}"#),
                    None => format!(r#"{{"room":"{room}","event":"{event}"}}"#),
                })
                .collect();
            let body = format!(r#"{{"messages" : [{}]}}"#, texts.join(" , "));
            let expected: Vec<Message> = items
                .iter()
                .map(|(room, event, data)| message(room, event, data.as_deref().unwrap_or("null")))
                .collect();
            prop_assume!(expected.iter().all(|m| !is_reserved(&m.event)));
            prop_assert_eq!(run(&body, &["*"]), Ok(expected));
        }

        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = bytes;
            let _ = parse(&mut bytes, &mut Parser::default(), &claims(&["*"]));
        }

        #[test]
        fn arbitrary_message_lists_never_panic(
            body in r#"\{"messages":\[[{}\[\]",:a-z0-9 ]{0,80}\]\}"#,
        ) {
            let mut bytes = body.into_bytes();
            let _ = parse(&mut bytes, &mut Parser::default(), &claims(&["*"]));
        }
    }
}
