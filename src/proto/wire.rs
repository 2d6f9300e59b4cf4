//! The JSON texts and frames of room traffic (sections 6-7), each encoded
//! once and shared by reference with every member.
//!
//! Pure byte writers: no room state, no sockets.

use std::sync::Arc;

use crate::json;
use crate::ws::frame::{self, OpCode};

/// A complete server text frame holding `text`.
pub fn text_frame(text: &[u8]) -> Arc<[u8]> {
    shared_frame(text, false)
}

/// A complete server binary frame holding `payload`: a message in
/// MessagePack (section 14), shared like a text frame.
pub fn binary_frame(payload: &[u8]) -> Arc<[u8]> {
    frame_of(OpCode::Binary, payload, false)
}

/// `binary_frame` with RSV1 set, holding a compressed message.
pub fn compressed_binary_frame(deflated: &[u8]) -> Arc<[u8]> {
    frame_of(OpCode::Binary, deflated, true)
}

/// A complete server text frame with RSV1 set, holding a message
/// compressed by `ws::deflate` (permessage-deflate): one per room message
/// and shard, shared by every member that agreed to the extension.
pub fn compressed_text_frame(deflated: &[u8]) -> Arc<[u8]> {
    shared_frame(deflated, true)
}

fn shared_frame(payload: &[u8], compressed: bool) -> Arc<[u8]> {
    frame_of(OpCode::Text, payload, compressed)
}

fn frame_of(opcode: OpCode, payload: &[u8], compressed: bool) -> Arc<[u8]> {
    let mut header = [0u8; 10];
    let header_len = if compressed {
        frame::encode_compressed_header(opcode, payload.len(), &mut header)
    } else {
        frame::encode_header(true, opcode, payload.len(), &mut header)
    };
    let mut bytes = Vec::with_capacity(header_len + payload.len());
    bytes.extend_from_slice(&header[..header_len]);
    bytes.extend_from_slice(payload);
    Arc::from(bytes)
}

/// Whether a frame built here is a binary one.
pub fn is_binary_frame(frame: &[u8]) -> bool {
    // Opcode 0x2 (RFC 6455), in the low bits of the first byte.
    frame.first().is_some_and(|b| b & 0x0f == 0x2)
}

/// The payload inside a frame built here (the JSON text of a `text_frame`).
pub fn frame_text(frame: &[u8]) -> &[u8] {
    let header_len = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(header_len..).unwrap_or_default()
}

/// `{"event","room","data","from","ts"}`, in exactly that order: a
/// volatile room event (section 14), which has no `seq`.
pub fn volatile_message(event: &str, room: &str, data: &[u8], from: &str, ts_ms: u64) -> Vec<u8> {
    let mut out = event_head(event, room, data, from);
    out.extend_from_slice(b",\"ts\":");
    json::write_u64(&mut out, ts_ms);
    out.push(b'}');
    out
}

/// The text frame of a room event, `{"event","room","data","from","seq",
/// "ts"}` in exactly that order, written in place: the frame's own
/// allocation is the only one (a room event is built once per publish,
/// on the room owner's thread).
pub fn room_frame(
    event: &str,
    room: &str,
    data: &[u8],
    from: &str,
    seq: u64,
    ts_ms: u64,
) -> Arc<[u8]> {
    // Room for the longest header of an unmasked frame, filled in last.
    const AT: usize = 10;
    ROOM_FRAME_SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        buf.clear();
        buf.resize(AT, 0);
        write_event_head(&mut buf, event, room, data, from);
        buf.extend_from_slice(b",\"seq\":");
        json::write_u64(&mut buf, seq);
        buf.extend_from_slice(b",\"ts\":");
        json::write_u64(&mut buf, ts_ms);
        buf.push(b'}');
        let mut header = [0u8; AT];
        let header_len = frame::encode_header(true, OpCode::Text, buf.len() - AT, &mut header);
        let start = AT - header_len;
        buf[start..AT].copy_from_slice(&header[..header_len]);
        let frame = Arc::from(&buf[start..]);
        if buf.capacity() > MAX_KEPT_SCRATCH {
            *buf = Vec::new();
        }
        frame
    })
}

/// The largest `room_frame` scratch kept for the next event, so that one
/// big message does not pin its size for good.
const MAX_KEPT_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Where `room_frame` writes an event before it takes its own copy.
    static ROOM_FRAME_SCRATCH: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `{"event","room","data","from"` of a room event, open for what follows.
fn event_head(event: &str, room: &str, data: &[u8], from: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + event.len() + room.len() + data.len() + from.len());
    write_event_head(&mut out, event, room, data, from);
    out
}

/// Appends `{"event","room","data","from"` to `out`.
fn write_event_head(out: &mut Vec<u8>, event: &str, room: &str, data: &[u8], from: &str) {
    out.extend_from_slice(b"{\"event\":");
    json::write_str(out, event);
    out.extend_from_slice(b",\"room\":");
    json::write_str(out, room);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.extend_from_slice(b",\"from\":");
    json::write_str(out, from);
}

/// A room message's text before its `seq` and after it, for Redis to put
/// the `seq` in between (`redis::publish`).
pub fn room_message_around_seq(
    event: &str,
    room: &str,
    data: &[u8],
    from: &str,
    ts_ms: u64,
) -> (Vec<u8>, Vec<u8>) {
    let mut out = event_head(event, room, data, from);
    out.extend_from_slice(b",\"seq\":");
    let mut tail = Vec::with_capacity(24);
    tail.extend_from_slice(b",\"ts\":");
    json::write_u64(&mut tail, ts_ms);
    tail.push(b'}');
    (out, tail)
}

/// A room as a join's ack reports it (section 7).
#[derive(Debug, Clone, Copy)]
pub struct RoomState<'a> {
    pub room: &'a str,
    pub epoch: &'a str,
    pub seq: u64,
    /// `None` when the join did not ask to recover.
    pub recovered: Option<bool>,
    pub members: u64,
}

/// `{"room","epoch","seq","messages","recovered"?,"members"}`, the `data`
/// of a join's ack, with `messages` the texts of the history returned.
pub fn join_data<'m>(
    state: &RoomState<'_>,
    messages: impl Iterator<Item = &'m [u8]> + Clone,
) -> Vec<u8> {
    room_data(state, messages, true)
}

/// `{"room","epoch","seq","messages","recovered"?}`: the result of a Server
/// API `history` (section 12), a join's `data` without `members`.
pub fn history_data<'m>(
    state: &RoomState<'_>,
    messages: impl Iterator<Item = &'m [u8]> + Clone,
) -> Vec<u8> {
    room_data(state, messages, false)
}

/// A join's `data` (`with_members`) or a `history` result.
pub fn room_data<'m>(
    state: &RoomState<'_>,
    messages: impl Iterator<Item = &'m [u8]> + Clone,
    with_members: bool,
) -> Vec<u8> {
    let size: usize = messages.clone().map(<[u8]>::len).sum();
    let mut out = Vec::with_capacity(96 + size);
    out.extend_from_slice(b"{\"room\":");
    json::write_str(&mut out, state.room);
    out.extend_from_slice(b",\"epoch\":");
    json::write_str(&mut out, state.epoch);
    out.extend_from_slice(b",\"seq\":");
    json::write_u64(&mut out, state.seq);
    out.extend_from_slice(b",\"messages\":[");
    for (i, text) in messages.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(text);
    }
    out.push(b']');
    match state.recovered {
        Some(true) => out.extend_from_slice(b",\"recovered\":true"),
        Some(false) => out.extend_from_slice(b",\"recovered\":false"),
        None => {}
    }
    if with_members {
        out.extend_from_slice(b",\"members\":");
        json::write_u64(&mut out, state.members);
    }
    out.push(b'}');
    out
}

/// `{"event":"room:subscribed","room","data":{"epoch","seq","members"}}`:
/// a Server API `subscribe` put the connection in the room (section 12).
pub fn subscribed(state: &RoomState<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + state.room.len() + state.epoch.len());
    out.extend_from_slice(b"{\"event\":\"room:subscribed\",\"room\":");
    json::write_str(&mut out, state.room);
    out.extend_from_slice(b",\"data\":{\"epoch\":");
    json::write_str(&mut out, state.epoch);
    out.extend_from_slice(b",\"seq\":");
    json::write_u64(&mut out, state.seq);
    out.extend_from_slice(b",\"members\":");
    json::write_u64(&mut out, state.members);
    out.extend_from_slice(b"}}");
    out
}

/// `{"event":"room:unsubscribed","room","data":{}}`: a Server API
/// `unsubscribe` took the connection out of the room (section 12).
pub fn unsubscribed(room: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + room.len());
    out.extend_from_slice(b"{\"event\":\"room:unsubscribed\",\"room\":");
    json::write_str(&mut out, room);
    out.extend_from_slice(b",\"data\":{}}");
    out
}

/// `{"event","data","from","ts"}`: a direct message or a broadcast.
pub fn direct_message(event: &str, data: &[u8], from: &str, ts_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + event.len() + data.len() + from.len());
    out.extend_from_slice(b"{\"event\":");
    json::write_str(&mut out, event);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.extend_from_slice(b",\"from\":");
    json::write_str(&mut out, from);
    out.extend_from_slice(b",\"ts\":");
    json::write_u64(&mut out, ts_ms);
    out.push(b'}');
    out
}

/// `{"event":"presence:join","room","data":{"userId","name"}}`.
pub fn presence_join(room: &str, user_id: &str, name: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + room.len() + user_id.len());
    out.extend_from_slice(b"{\"event\":\"presence:join\",\"room\":");
    json::write_str(&mut out, room);
    out.extend_from_slice(b",\"data\":{\"userId\":");
    json::write_str(&mut out, user_id);
    out.extend_from_slice(b",\"name\":");
    write_optional_str(&mut out, name);
    out.extend_from_slice(b"}}");
    out
}

/// `{"room","count","users":[{"userId","name","connections"}],"truncated"?}`,
/// the `data` of a `presence:get` ack: `count` distinct users, `listed`
/// as `(user, name, connections)`.
pub fn presence_data<'a>(
    room: &str,
    count: u64,
    listed: impl Iterator<Item = (&'a str, Option<&'a str>, u64)>,
    truncated: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"room\":");
    json::write_str(&mut out, room);
    out.extend_from_slice(b",\"count\":");
    json::write_u64(&mut out, count);
    out.extend_from_slice(b",\"users\":[");
    for (i, (user, name, connections)) in listed.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"userId\":");
        json::write_str(&mut out, user);
        out.extend_from_slice(b",\"name\":");
        write_optional_str(&mut out, name);
        out.extend_from_slice(b",\"connections\":");
        json::write_u64(&mut out, connections);
        out.push(b'}');
    }
    out.push(b']');
    if truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.push(b'}');
    out
}

/// `{"event":"presence:leave","room","data":{"userId"}}`.
pub fn presence_leave(room: &str, user_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + room.len() + user_id.len());
    out.extend_from_slice(b"{\"event\":\"presence:leave\",\"room\":");
    json::write_str(&mut out, room);
    out.extend_from_slice(b",\"data\":{\"userId\":");
    json::write_str(&mut out, user_id);
    out.extend_from_slice(b"}}");
    out
}

/// `{"event":"system:dropped","data":{"count":n}}`.
pub fn dropped(count: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(b"{\"event\":\"system:dropped\",\"data\":{\"count\":");
    json::write_u64(&mut out, count);
    out.extend_from_slice(b"}}");
    out
}

/// A JSON string, or `null`.
pub fn write_optional_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(s) => json::write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_frame_holds_the_text_redis_puts_its_seq_into() {
        for len in [0, 100, 125, 126, 65_535, 70_000] {
            let data = format!("\"{}\"", "x".repeat(len));
            let (mut text, tail) = room_message_around_seq("e", "r\"1", data.as_bytes(), "u", 99);
            json::write_u64(&mut text, 7);
            text.extend_from_slice(&tail);
            let frame = room_frame("e", "r\"1", data.as_bytes(), "u", 7, 99);
            assert_eq!(frame, text_frame(&text), "data of {len} bytes");
        }
    }

    #[test]
    fn room_message_has_fields_in_protocol_order() {
        let frame = room_frame("chat:msg", "lobby", br#"{"a" : 1}"#, "u\"1", 7, 99);
        let text = frame_text(&frame);
        assert_eq!(
            text,
            &br#"{"event":"chat:msg","room":"lobby","data":{"a" : 1},"from":"u\"1","seq":7,"ts":99}"#[..]
        );
    }

    #[test]
    fn frames_wrap_text_and_give_it_back() {
        for len in [0, 125, 126, 65535, 65536] {
            let text = vec![b'x'; len];
            let frame = text_frame(&text);
            assert_eq!(frame_text(&frame), &text[..], "{len}");
            assert_eq!(frame[0], 0x81);
        }
    }

    #[test]
    fn presence_events_have_the_documented_shape() {
        assert_eq!(
            presence_join("r", "u1", None),
            br#"{"event":"presence:join","room":"r","data":{"userId":"u1","name":null}}"#
        );
        assert_eq!(
            presence_leave("r", "u1"),
            br#"{"event":"presence:leave","room":"r","data":{"userId":"u1"}}"#
        );
        assert_eq!(
            dropped(3),
            br#"{"event":"system:dropped","data":{"count":3}}"#
        );
    }
}
