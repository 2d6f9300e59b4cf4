//! The replies of section 12: `200 {"result": {...}}`, an error's
//! `{"error": {"code", "message"}}` with its status, and a `batch`'s
//! `{"result": {"replies": [...]}}` (always `200`: each command's outcome
//! is in its reply).

use super::ApiError;
use crate::http::response;

/// What one command came to: its result object, or its error.
pub type Reply = Result<Vec<u8>, ApiError>;

/// `{"result": ...}` or `{"error": {...}}`.
pub fn write_reply(out: &mut Vec<u8>, reply: &Reply) {
    match reply {
        Ok(result) => {
            out.extend_from_slice(b"{\"result\":");
            out.extend_from_slice(result);
            out.push(b'}');
        }
        Err(error) => response::write_error_body(out, error.code, &error.message),
    }
}

/// The HTTP response to a call whose commands came to `replies`; returns
/// its status.
pub fn write_response(out: &mut Vec<u8>, batch: bool, replies: &[Reply], keep_alive: bool) -> u16 {
    let size: usize = replies
        .iter()
        .map(|r| r.as_ref().map_or(96, Vec::len) + 16)
        .sum();
    let mut body = Vec::with_capacity(32 + size);
    let status = match (batch, replies) {
        (false, [reply]) => {
            write_reply(&mut body, reply);
            reply
                .as_ref()
                .map_or_else(|e| e.code.http_status(), |_| 200)
        }
        _ => {
            body.extend_from_slice(b"{\"result\":{\"replies\":[");
            for (i, reply) in replies.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                write_reply(&mut body, reply);
            }
            body.extend_from_slice(b"]}}");
            200
        }
    };
    response::write_json(out, status, &body, keep_alive);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::ErrorCode;

    fn body(out: &[u8]) -> &str {
        let text = std::str::from_utf8(out).unwrap();
        &text[text.find("\r\n\r\n").unwrap() + 4..]
    }

    #[test]
    fn one_command_answers_with_its_result_or_its_error_status() {
        let mut out = Vec::new();
        let status = write_response(&mut out, false, &[Ok(b"{}".to_vec())], false);
        assert_eq!((status, body(&out)), (200, r#"{"result":{}}"#));
        out.clear();
        let error = ApiError::invalid("room is missing");
        let status = write_response(&mut out, false, &[Err(error)], false);
        assert_eq!(status, 400);
        assert_eq!(
            body(&out),
            r#"{"error":{"code":"VALIDATION_ERROR","message":"room is missing"}}"#
        );
    }

    #[test]
    fn a_batch_is_a_200_listing_each_reply_in_order() {
        let mut out = Vec::new();
        let replies = [
            Ok(br#"{"connections":1}"#.to_vec()),
            Err(ApiError::new(ErrorCode::NotFound, "no such method")),
        ];
        assert_eq!(write_response(&mut out, true, &replies, true), 200);
        assert_eq!(
            body(&out),
            r#"{"result":{"replies":[{"result":{"connections":1}},{"error":{"code":"NOT_FOUND","message":"no such method"}}]}}"#
        );
    }
}
