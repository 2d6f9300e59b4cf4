//! Parsing of a client envelope (section 4), in place with simd-json.
//!
//! Owns the JSON parser state (buffers and tape reused across messages, so
//! parsing allocates nothing per message once warm) and the validation of
//! `event` and `id`. Does not decide what an event does.

use simd_json::prelude::*;
use simd_json::tape::{Tape, Value};
use simd_json::{Buffers, ErrorType};

use crate::codes::ErrorCode;
use crate::codes::limits::{MAX_ID_LEN, MAX_JSON_DEPTH, MAX_SAFE_INTEGER};
use crate::proto::numbers;
use crate::proto::reply::Id;

/// A parsed client envelope; borrows the message and the parser.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'t, 'i> {
    /// The valid id, if any (an invalid one fails the parse).
    pub id: Option<Id<'i>>,
    /// The `event` field, not yet checked against the grammar.
    pub event: &'i str,
    /// The whole object, for the fields each event needs.
    pub object: Value<'t, 'i>,
}

impl<'t, 'i> Envelope<'t, 'i> {
    /// A field of the object, when present.
    pub fn field(&self, name: &str) -> Option<Value<'t, 'i>> {
        self.object.as_object().and_then(|o| o.get(name))
    }

    /// The fields `names`, each as `field` finds it (the first of its
    /// name), in one pass over the object rather than one per name.
    pub fn fields<const N: usize>(&self, names: [&str; N]) -> [Option<Value<'t, 'i>>; N] {
        let mut found = [None; N];
        let Some(object) = self.object.as_object() else {
            return found;
        };
        for (key, value) in object.iter() {
            if let Some(at) = names.iter().position(|name| *name == key)
                && found[at].is_none()
            {
                found[at] = Some(value);
            }
        }
        found
    }
}

/// Why an envelope was refused, and what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal<'i> {
    /// The id to answer with an ack, when it was valid.
    pub id: Option<Id<'i>>,
    pub code: ErrorCode,
    pub message: &'static str,
}

/// The reusable state of the envelope parser; one per shard.
pub struct Parser {
    buffers: Buffers,
    tape: Option<Tape<'static>>,
    /// A copy of a message with escapes, whose in-place parse rewrites it,
    /// for the second parse once out-of-range numbers are tamed.
    pristine: Vec<u8>,
    /// Where `on_text` keeps the exact text of a message's `data` across
    /// the in-place parse, reused from message to message.
    pub(super) data_text: Vec<u8>,
}

impl Default for Parser {
    fn default() -> Self {
        Self {
            buffers: Buffers::with_max_depth(1024, MAX_JSON_DEPTH),
            tape: Some(Tape::null().reset()),
            pristine: Vec::new(),
            data_text: Vec::new(),
        }
    }
}

impl Parser {
    /// Parses `payload` in place and hands the result to `f`. The callback
    /// shape keeps the tape's borrow of the payload inside this call, so the
    /// tape's allocation can be kept for the next message.
    pub fn with_envelope<R>(
        &mut self,
        payload: &mut [u8],
        f: impl for<'t, 'i> FnOnce(Result<Envelope<'t, 'i>, Refusal<'i>>) -> R,
    ) -> R {
        self.with_json(payload, |parsed| match parsed {
            Some(value) => f(validate(value)),
            None => f(Err(Refusal {
                id: None,
                code: ErrorCode::InvalidMessage,
                message: "message is not valid JSON",
            })),
        })
    }

    /// Parses any JSON text in place (at most `MAX_JSON_DEPTH` deep) and
    /// hands `f` its value, or `None` when it is not valid JSON. A number
    /// beyond what simd-json holds is valid JSON: it is tamed (`numbers`)
    /// and the text parsed again.
    pub fn with_json<R>(
        &mut self,
        payload: &mut [u8],
        f: impl for<'t, 'i> FnOnce(Option<Value<'t, 'i>>) -> R,
    ) -> R {
        // Only escapes make a failed parse leave the text changed.
        let escaped = payload.contains(&b'\\');
        if escaped {
            self.pristine.clear();
            self.pristine.extend_from_slice(payload);
        }
        let mut tape: Tape<'_> = self
            .tape
            .take()
            .unwrap_or_else(|| Tape::null().reset())
            .reset();
        let first = simd_json::fill_tape(payload, &mut self.buffers, &mut tape);
        if !matches!(&first, Err(e) if *e.error() == ErrorType::InvalidNumber) {
            let result = f(first.ok().map(|()| tape.as_value()));
            self.tape = Some(tape.reset());
            return result;
        }
        let mut tape = tape.reset();
        if escaped {
            payload.copy_from_slice(&self.pristine);
        }
        numbers::tame(payload);
        let second = simd_json::fill_tape(payload, &mut self.buffers, &mut tape);
        let result = f(second.ok().map(|()| tape.as_value()));
        self.tape = Some(tape.reset());
        result
    }
}

fn validate<'t, 'i>(value: Value<'t, 'i>) -> Result<Envelope<'t, 'i>, Refusal<'i>> {
    let refuse = |id, code, message| Refusal { id, code, message };
    let Some(object) = value.as_object() else {
        return Err(refuse(
            None,
            ErrorCode::InvalidMessage,
            "message must be a JSON object",
        ));
    };
    let id = match object.get("id").map(parse_id) {
        None => None,
        Some(Some(id)) => Some(id),
        Some(None) => {
            return Err(refuse(
                None,
                ErrorCode::ValidationError,
                "id must be a string of at most 64 bytes or an integer within ±(2^53-1)",
            ));
        }
    };
    let Some(event) = object.get("event").and_then(|e| e.into_string()) else {
        return Err(refuse(
            id,
            ErrorCode::InvalidMessage,
            "event is missing or not a string",
        ));
    };
    Ok(Envelope {
        id,
        event,
        object: value,
    })
}

fn parse_id<'i>(value: Value<'_, 'i>) -> Option<Id<'i>> {
    if let Some(s) = value.into_string() {
        return (s.len() <= MAX_ID_LEN).then_some(Id::Str(s));
    }
    let n = value.as_i64()?;
    (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER)
        .contains(&n)
        .then_some(Id::Int(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Option<Id<'static>>, String), (ErrorCode, bool)> {
        let mut parser = Parser::default();
        let mut bytes = text.as_bytes().to_vec();
        parser.with_envelope(&mut bytes, |r| match r {
            Ok(env) => Ok((env.id.map(own_id), env.event.to_owned())),
            Err(refusal) => Err((refusal.code, refusal.id.is_some())),
        })
    }

    fn own_id(id: Id<'_>) -> Id<'static> {
        match id {
            Id::Str(s) => Id::Str(Box::leak(s.to_owned().into_boxed_str())),
            Id::Int(n) => Id::Int(n),
        }
    }

    #[test]
    fn a_full_envelope_parses() {
        let (id, event) = parse(
            r#"{"event":"chat:message","room":"lobby","data":{"text":"hi"},"id":"c1","extra":1}"#,
        )
        .unwrap();
        assert_eq!(id, Some(Id::Str("c1")));
        assert_eq!(event, "chat:message");
        assert_eq!(
            parse(r#"{"event":"ping","id":9007199254740991}"#)
                .unwrap()
                .0,
            Some(Id::Int(MAX_SAFE_INTEGER))
        );
        assert_eq!(
            parse(r#"{"event":"ping","id":-9007199254740991}"#)
                .unwrap()
                .0,
            Some(Id::Int(-MAX_SAFE_INTEGER))
        );
    }

    #[test]
    fn not_json_or_not_an_object_is_invalid_message() {
        for text in [
            "",
            "nope",
            "{",
            "[1,2]",
            "\"s\"",
            "42",
            "{\"event\":NaN}",
            "{\"a\":Infinity}",
        ] {
            assert_eq!(
                parse(text),
                Err((ErrorCode::InvalidMessage, false)),
                "{text}"
            );
        }
    }

    #[test]
    fn nesting_deeper_than_64_is_invalid_message() {
        let ok = format!(
            "{{\"event\":\"a:b\",\"data\":{}{}}}",
            "[".repeat(62),
            "]".repeat(62)
        );
        assert!(parse(&ok).is_ok());
        let deep = format!(
            "{{\"event\":\"a:b\",\"data\":{}{}}}",
            "[".repeat(64),
            "]".repeat(64)
        );
        assert_eq!(parse(&deep), Err((ErrorCode::InvalidMessage, false)));
    }

    #[test]
    fn missing_event_with_a_valid_id_is_answered_by_ack() {
        assert_eq!(parse(r#"{"id":1}"#), Err((ErrorCode::InvalidMessage, true)));
        assert_eq!(
            parse(r#"{"event":5}"#),
            Err((ErrorCode::InvalidMessage, false))
        );
    }

    #[test]
    fn invalid_ids_are_validation_errors_without_ack() {
        let long = format!(r#"{{"event":"ping","id":"{}"}}"#, "x".repeat(65));
        for text in [
            r#"{"event":"ping","id":1.5}"#,
            r#"{"event":"ping","id":9007199254740992}"#,
            r#"{"event":"ping","id":-9007199254740992}"#,
            r#"{"event":"ping","id":true}"#,
            r#"{"event":"ping","id":null}"#,
            r#"{"event":"ping","id":[1]}"#,
            &long,
        ] {
            assert_eq!(
                parse(text),
                Err((ErrorCode::ValidationError, false)),
                "{text}"
            );
        }
    }

    #[test]
    fn the_parser_is_reusable_across_messages() {
        let mut parser = Parser::default();
        for i in 0..100 {
            let mut bytes = format!(r#"{{"event":"a:b","id":{i}}}"#).into_bytes();
            let id = parser.with_envelope(&mut bytes, |r| r.unwrap().id.map(own_id));
            assert_eq!(id, Some(Id::Int(i)));
        }
    }

    #[test]
    fn fields_are_found_in_one_pass_as_field_finds_them() {
        let mut parser = Parser::default();
        let mut bytes = br#"{"event":"a:b","room":"r","echo":true,"room":"s","n":1}"#.to_vec();
        let found = parser.with_envelope(&mut bytes, |r| {
            let envelope = r.unwrap();
            let [room, echo, volatile, n] = envelope.fields(["room", "echo", "volatile", "n"]);
            let text = |v: Option<Value<'_, '_>>| v.map(|v| format!("{v:?}"));
            for (name, value) in [
                ("room", room),
                ("echo", echo),
                ("volatile", volatile),
                ("n", n),
            ] {
                assert_eq!(text(value), text(envelope.field(name)), "{name}");
            }
            let room = room.and_then(|r| r.into_string()).map(String::from);
            (room, echo.and_then(|e| e.as_bool()), volatile.is_none())
        });
        let first = (Some("r".to_string()), Some(true), true);
        assert_eq!(found, first, "the first of a repeated name");
    }
}
