//! A proxy's answer (section 13.2), read once the hooks client has a
//! complete response: `{"result": X}` or `{"error": {"code", "message"}}`
//! with a `2xx` status. Anything else is unreadable, and the caller
//! answers `UNAVAILABLE`.
//!
//! Owns the answer's shape and bounds, not what a result means to each
//! proxy (an rpc's `result` is the ack's `data`; a publish proxy's is
//! `{}` or `{"data": X}`: `publish_data`). The body's length is bounded
//! by the client (`ClientConfig::max_response_body`); `result` is kept as
//! the exact text the backend sent, numbers beyond 64 bits included, the
//! way a client's `data` is forwarded.

use std::fmt;

use simd_json::prelude::*;

use crate::proto::{numbers, scan};

/// Longest `message` passed on to a client, in bytes; a longer one is cut
/// at a character boundary (the backend's text, not roomcast's, so it is
/// shortened rather than refused).
pub const MAX_MESSAGE_LEN: usize = 512;
/// Longest application code: `[A-Z][A-Z0-9_]{0,31}`.
pub const MAX_CODE_LEN: usize = 32;

/// What the backend decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The exact JSON text of `result`.
    Result(Box<[u8]>),
    /// Refused with this code and message, passed to the client verbatim.
    Error { code: Box<str>, message: Box<str> },
}

/// Why an answer is unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    /// A status outside `2xx`.
    Status(u16),
    /// The body is not one JSON object.
    NotJson,
    /// Neither `result` nor `error`, or both, or an `error` that is not
    /// `{"code": string, "message": string}`.
    Shape,
    /// An error code outside `[A-Z][A-Z0-9_]{0,31}`.
    Code,
}

impl AnswerError {
    /// The label these failures are counted and logged under.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Status(_) => "non_2xx",
            Self::NotJson => "not_json",
            Self::Shape => "bad_shape",
            Self::Code => "bad_code",
        }
    }
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "status {status}"),
            Self::NotJson => f.write_str("the body is not a JSON object"),
            Self::Shape => f.write_str("neither a result nor an error with a code and a message"),
            Self::Code => f.write_str("the error code is not [A-Z][A-Z0-9_]{0,31}"),
        }
    }
}

impl std::error::Error for AnswerError {}

/// Reads a proxy's answer.
pub fn parse(status: u16, body: &[u8]) -> Result<Answer, AnswerError> {
    if !(200..300).contains(&status) {
        return Err(AnswerError::Status(status));
    }
    // Located while the bytes are pristine: the parse rewrites escapes.
    let result = scan::field_range(body, "result");
    let mut copy = body.to_vec();
    // Numbers simd-json cannot hold (`1e999`) are valid JSON: tamed in the
    // copy, as the envelope parser does, while `result` keeps them.
    numbers::tame(&mut copy);
    let value = simd_json::to_borrowed_value(&mut copy).map_err(|_| AnswerError::NotJson)?;
    let object = value.as_object().ok_or(AnswerError::NotJson)?;
    match (object.get("result"), object.get("error")) {
        (Some(_), None) => {
            let range = result.ok_or(AnswerError::Shape)?;
            Ok(Answer::Result(body[range].into()))
        }
        (None, Some(error)) => {
            let error = error.as_object().ok_or(AnswerError::Shape)?;
            let code = error
                .get("code")
                .and_then(|c| c.as_str())
                .ok_or(AnswerError::Shape)?;
            let message = match error.get("message") {
                None => "",
                Some(m) => m.as_str().ok_or(AnswerError::Shape)?,
            };
            if !is_valid_code(code) {
                return Err(AnswerError::Code);
            }
            Ok(Answer::Error {
                code: code.into(),
                message: truncate(message, MAX_MESSAGE_LEN).into(),
            })
        }
        _ => Err(AnswerError::Shape),
    }
}

/// A publish proxy's `result`: `{}` publishes the client's data (`None`),
/// `{"data": X}` publishes X (its exact text). Anything else is
/// unreadable.
pub fn publish_data(result: &[u8]) -> Result<Option<&[u8]>, AnswerError> {
    let first = result.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(AnswerError::Shape);
    }
    Ok(scan::field_range(result, "data").map(|range| &result[range]))
}

/// `[A-Z][A-Z0-9_]{0,31}`: every code of section 4 and the application's.
pub fn is_valid_code(code: &str) -> bool {
    let mut bytes = code.bytes();
    code.len() <= MAX_CODE_LEN
        && matches!(bytes.next(), Some(b'A'..=b'Z'))
        && bytes.all(|b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_'))
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Answer {
        parse(200, body.as_bytes()).unwrap()
    }

    fn refused(body: &str) -> AnswerError {
        parse(200, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_result_is_kept_as_the_exact_text() {
        let text = r#"{"n" : 1e999, "s":"\u00e9"}"#;
        assert_eq!(
            ok(&format!(r#" {{"result": {text} }} "#)),
            Answer::Result(text.as_bytes().into())
        );
        assert_eq!(
            ok(r#"{"result":null}"#),
            Answer::Result(b"null".as_slice().into())
        );
    }

    #[test]
    fn an_error_carries_its_code_and_message() {
        assert_eq!(
            ok(r#"{"error":{"code":"BANNED_WORD","message":"no \"swearing\""}}"#),
            Answer::Error {
                code: "BANNED_WORD".into(),
                message: "no \"swearing\"".into()
            }
        );
        let long = "é".repeat(400);
        match ok(&format!(r#"{{"error":{{"code":"X","message":"{long}"}}}}"#)) {
            Answer::Error { message, .. } => assert_eq!(message.len(), MAX_MESSAGE_LEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn anything_else_is_unreadable() {
        assert_eq!(parse(500, b"{\"result\":1}"), Err(AnswerError::Status(500)));
        assert_eq!(parse(204, b""), Err(AnswerError::NotJson));
        assert_eq!(refused("[1]"), AnswerError::NotJson);
        assert_eq!(refused(r#"{"result":1"#), AnswerError::NotJson);
        assert_eq!(refused(r#"{"result":1} x"#), AnswerError::NotJson);
        assert_eq!(refused("{}"), AnswerError::Shape);
        assert_eq!(
            refused(r#"{"result":1,"error":{"code":"A"}}"#),
            AnswerError::Shape
        );
        assert_eq!(refused(r#"{"error":"nope"}"#), AnswerError::Shape);
        assert_eq!(refused(r#"{"error":{"code":7}}"#), AnswerError::Shape);
        assert_eq!(
            refused(r#"{"error":{"code":"A","message":1}}"#),
            AnswerError::Shape
        );
        for code in ["", "lower", "9LIVES", "A-B", &"A".repeat(33)] {
            let body = format!(r#"{{"error":{{"code":"{code}","message":""}}}}"#);
            assert_eq!(refused(&body), AnswerError::Code, "{code}");
        }
        assert!(is_valid_code(&"A".repeat(32)));
    }

    #[test]
    fn deep_nesting_is_bounded_not_a_stack_overflow() {
        let nested = |depth| format!(r#"{{"result":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        match parse(200, nested(100).as_bytes()) {
            Ok(Answer::Result(result)) => assert_eq!(result.len(), 200),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(200, nested(500_000).as_bytes()),
            Err(AnswerError::NotJson)
        );
    }

    #[test]
    fn a_publish_result_keeps_or_replaces_the_data() {
        assert_eq!(publish_data(b"{}"), Ok(None));
        assert_eq!(
            publish_data(br#"{"data": [1, 2]}"#),
            Ok(Some(b"[1, 2]".as_slice()))
        );
        assert_eq!(publish_data(b"null"), Err(AnswerError::Shape));
        assert_eq!(publish_data(b"[]"), Err(AnswerError::Shape));
    }
}
