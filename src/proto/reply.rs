//! Writers for the JSON messages the server sends on `/ws` (section 4-6 of
//! `docs/protocol.md`): acks, error events, pong, `connection:established`.
//!
//! Each appends one complete JSON text to a buffer; framing is the caller's.
//! Field order is fixed, as clients and tests compare bytes.

use crate::codes::ErrorCode;
use crate::json;

/// A client message id, echoed with its JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id<'a> {
    /// A string id, as the client sent it (unescaped).
    Str(&'a str),
    /// An integer id within ±(2^53-1).
    Int(i64),
}

/// An id kept beyond the message it came in, for an ack sent later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedId {
    /// A string id short enough to be kept without an allocation: most
    /// are (counters, UUIDs without dashes are 32 bytes and are not).
    Short(ShortId),
    Str(Box<str>),
    Int(i64),
}

/// The bytes a `ShortId` holds: an `OwnedId` stays as large as with a
/// `Box<str>` alone.
const SHORT_ID: usize = 22;

/// A string id of at most `SHORT_ID` bytes, kept in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortId {
    len: u8,
    bytes: [u8; SHORT_ID],
}

impl ShortId {
    fn new(id: &str) -> Option<Self> {
        let mut bytes = [0; SHORT_ID];
        bytes.get_mut(..id.len())?.copy_from_slice(id.as_bytes());
        let len = id.len() as u8;
        Some(Self { len, bytes })
    }

    fn as_str(&self) -> &str {
        // Whole `str` bytes were copied in, so this never fails.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl OwnedId {
    /// The id to write.
    pub fn as_id(&self) -> Id<'_> {
        match self {
            OwnedId::Short(s) => Id::Str(s.as_str()),
            OwnedId::Str(s) => Id::Str(s),
            OwnedId::Int(n) => Id::Int(*n),
        }
    }
}

impl From<Id<'_>> for OwnedId {
    fn from(id: Id<'_>) -> Self {
        match id {
            Id::Str(s) => ShortId::new(s).map_or_else(|| OwnedId::Str(s.into()), OwnedId::Short),
            Id::Int(n) => OwnedId::Int(n),
        }
    }
}

fn write_id(out: &mut Vec<u8>, id: Id<'_>) {
    match id {
        Id::Str(s) => json::write_str(out, s),
        Id::Int(n) => json::write_i64(out, n),
    }
}

/// `code` is one of section 4 or, from a backend's answer (section 13.2),
/// the application's own, already checked to be `[A-Z][A-Z0-9_]{0,31}`.
fn write_error_object(out: &mut Vec<u8>, code: &str, message: &str) {
    out.extend_from_slice(b"{\"code\":");
    json::write_str(out, code);
    out.extend_from_slice(b",\"message\":");
    json::write_str(out, message);
    out.push(b'}');
}

/// `{"event":"ack","id":…,"success":true,"data":…}`; `data` is JSON text.
pub fn ack_ok(out: &mut Vec<u8>, id: Id<'_>, data: &[u8]) {
    out.extend_from_slice(b"{\"event\":\"ack\",\"id\":");
    write_id(out, id);
    out.extend_from_slice(b",\"success\":true,\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
}

/// `{"event":"ack","id":…,"success":false,"error":{"code","message"}}`.
pub fn ack_err(out: &mut Vec<u8>, id: Id<'_>, code: ErrorCode, message: &str) {
    ack_err_code(out, id, code.as_str(), message);
}

fn ack_err_code(out: &mut Vec<u8>, id: Id<'_>, code: &str, message: &str) {
    out.extend_from_slice(b"{\"event\":\"ack\",\"id\":");
    write_id(out, id);
    out.extend_from_slice(b",\"success\":false,\"error\":");
    write_error_object(out, code, message);
    out.push(b'}');
}

/// `{"event":"error","data":{"code","message"}}`.
pub fn error_event(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    error_event_code(out, code.as_str(), message);
}

fn error_event_code(out: &mut Vec<u8>, code: &str, message: &str) {
    out.extend_from_slice(b"{\"event\":\"error\",\"data\":");
    write_error_object(out, code, message);
    out.push(b'}');
}

/// A failure answered as an ack when the message had a valid id, else as an error event.
pub fn failure(out: &mut Vec<u8>, id: Option<Id<'_>>, code: ErrorCode, message: &str) {
    failure_code(out, id, code.as_str(), message);
}

/// `failure` with a code given as text: a backend's (section 13.2).
pub fn failure_code(out: &mut Vec<u8>, id: Option<Id<'_>>, code: &str, message: &str) {
    match id {
        Some(id) => ack_err_code(out, id, code, message),
        None => error_event_code(out, code, message),
    }
}

/// `{"event":"pong","data":{"serverTime":ms}}`.
pub fn pong(out: &mut Vec<u8>, server_time_ms: u64) {
    out.extend_from_slice(b"{\"event\":\"pong\",\"data\":");
    server_time(out, server_time_ms);
    out.push(b'}');
}

/// `{"serverTime":ms}`.
pub fn server_time(out: &mut Vec<u8>, server_time_ms: u64) {
    out.extend_from_slice(b"{\"serverTime\":");
    json::write_u64(out, server_time_ms);
    out.push(b'}');
}

/// The first message on `/ws` (section 5).
pub fn established(
    out: &mut Vec<u8>,
    conn_id: &str,
    user_id: &str,
    server_time_ms: u64,
    ping_interval_ms: u64,
) {
    out.extend_from_slice(b"{\"event\":\"connection:established\",\"data\":{\"connId\":");
    json::write_str(out, conn_id);
    out.extend_from_slice(b",\"userId\":");
    json::write_str(out, user_id);
    out.extend_from_slice(b",\"serverTime\":");
    json::write_u64(out, server_time_ms);
    out.extend_from_slice(b",\"pingInterval\":");
    json::write_u64(out, ping_interval_ms);
    out.extend_from_slice(b"}}");
}

/// `ack_ok` as a text of its own, for an answer that travels to the
/// connection's shard before it is queued.
pub fn ack_text(id: &OwnedId, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + data.len());
    ack_ok(&mut out, id.as_id(), data);
    out
}

/// `failure` as a text of its own.
pub fn failure_text(id: Option<&OwnedId>, code: ErrorCode, message: &str) -> Vec<u8> {
    failure_code_text(id, code.as_str(), message)
}

/// `failure_code` as a text of its own.
pub fn failure_code_text(id: Option<&OwnedId>, code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + message.len());
    failure_code(&mut out, id.map(OwnedId::as_id), code, message);
    out
}

/// The ack of `id` whose `data` is `{"<field>":<n>}`: a publish's `seq`,
/// a `user:send` or broadcast's `delivered`. Written into one buffer.
pub fn count_ack(id: &OwnedId, field: &str, n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + field.len());
    write_count_ack(&mut out, id, field, n);
    out
}

/// `count_ack` appended to `out`.
pub fn write_count_ack(out: &mut Vec<u8>, id: &OwnedId, field: &str, n: u64) {
    out.extend_from_slice(b"{\"event\":\"ack\",\"id\":");
    write_id(out, id.as_id());
    out.extend_from_slice(b",\"success\":true,\"data\":{\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    json::write_u64(out, n);
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn acks_echo_the_id_with_its_type() {
        assert_eq!(
            text(|o| ack_ok(o, Id::Str("c1"), b"{\"seq\":42}")),
            r#"{"event":"ack","id":"c1","success":true,"data":{"seq":42}}"#
        );
        assert_eq!(
            text(|o| ack_err(
                o,
                Id::Int(-7),
                ErrorCode::Forbidden,
                "may not publish to lobby"
            )),
            r#"{"event":"ack","id":-7,"success":false,"error":{"code":"FORBIDDEN","message":"may not publish to lobby"}}"#
        );
    }

    #[test]
    fn failure_without_id_is_an_error_event() {
        assert_eq!(
            text(|o| failure(o, None, ErrorCode::InvalidMessage, "not JSON")),
            r#"{"event":"error","data":{"code":"INVALID_MESSAGE","message":"not JSON"}}"#
        );
    }

    #[test]
    fn established_has_the_documented_shape() {
        assert_eq!(
            text(|o| established(o, "0-1", "u\"1", 1_700_000_000_000, 25_000)),
            r#"{"event":"connection:established","data":{"connId":"0-1","userId":"u\"1","serverTime":1700000000000,"pingInterval":25000}}"#
        );
        assert_eq!(
            text(|o| pong(o, 5)),
            r#"{"event":"pong","data":{"serverTime":5}}"#
        );
    }

    #[test]
    fn a_count_ack_is_an_ack_with_its_count_as_data() {
        let id = OwnedId::Str("a\"b".into());
        let mut expected = Vec::new();
        ack_ok(&mut expected, id.as_id(), br#"{"seq":42}"#);
        assert_eq!(count_ack(&id, "seq", 42), expected);
        assert_eq!(
            String::from_utf8(count_ack(&OwnedId::Int(7), "delivered", 0)).unwrap(),
            r#"{"event":"ack","id":7,"success":true,"data":{"delivered":0}}"#
        );
    }

    #[test]
    fn a_string_id_is_kept_whole_in_place_or_boxed() {
        for id in ["", "7", "é-22-bytes-of-id-ok", &"x".repeat(SHORT_ID)] {
            let owned = OwnedId::from(Id::Str(id));
            assert!(matches!(owned, OwnedId::Short(_)), "{id}");
            assert_eq!(owned.as_id(), Id::Str(id));
        }
        let long = "y".repeat(SHORT_ID + 1);
        let owned = OwnedId::from(Id::Str(&long));
        assert!(matches!(owned, OwnedId::Str(_)));
        assert_eq!(owned.as_id(), Id::Str(&long));
        assert_eq!(OwnedId::from(Id::Int(-3)).as_id(), Id::Int(-3));
        assert_eq!(std::mem::size_of::<OwnedId>(), 24, "no larger than before");
    }
}
