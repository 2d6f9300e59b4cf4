//! Frames for connections that chose `roomcast.msgpack` (section 14): the
//! server writes every message as JSON, and a MessagePack connection gets
//! that JSON converted (`proto::msgpack`) into a binary frame.
//!
//! Owns the conversion of shared frames (`Twin`): a room message, its
//! delta frame (section 14), a presence event or a direct message is one
//! JSON frame shared by every shard, and it travels with a cell
//! (`rooms::bus::Encodings`, `rooms::delta::DeltaFrame`, or the direct
//! message's own) in which the first shard to deliver it to a
//! MessagePack member makes its MessagePack twin, shared by reference
//! like the JSON frame: converted at most once per node, with no lock. A
//! node without such members never converts. Replies to one connection
//! (acks, errors, `connection:established`) are converted on their own.

use std::sync::{Arc, OnceLock};

use crate::conn::outbound::Outbound;
use crate::proto::{msgpack, wire};
use crate::ws::frame::OpCode;

/// Writes into `out` the MessagePack form of a JSON message the server
/// wrote; false if it is not JSON (never for the server's own messages).
pub fn pack(text: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let packed = msgpack::from_json(text, out).is_ok();
    debug_assert!(packed, "the server wrote a message that is not JSON");
    packed
}

/// Queues the JSON message `text` the way the connection speaks: in a
/// text frame, or as MessagePack in a binary frame.
pub fn push_message(out: &mut Outbound, msgpack: bool, text: &[u8]) {
    if !msgpack {
        out.push_frame(OpCode::Text, text);
        return;
    }
    let mut packed = Vec::with_capacity(text.len());
    if pack(text, &mut packed) {
        out.push_frame(OpCode::Binary, &packed);
    }
}

/// A shared frame's MessagePack twin: converted by the first shard to
/// deliver the frame to a MessagePack member, shared by reference by the
/// others like the JSON frame (`None`: not JSON, never for the server's
/// own messages). The cell travels with the frame; see the module doc.
pub type Twin = OnceLock<Option<Arc<[u8]>>>;

/// The MessagePack twin of `frame` (a `wire::text_frame`) in `twin`,
/// converted there by the first caller.
pub fn twin<'a>(twin: &'a Twin, frame: &[u8]) -> Option<&'a Arc<[u8]>> {
    twin.get_or_init(|| pack_frame(frame)).as_ref()
}

/// The MessagePack binary frame of a shared JSON text frame.
fn pack_frame(frame: &[u8]) -> Option<Arc<[u8]>> {
    let text = wire::frame_text(frame);
    let mut out = Vec::with_capacity(text.len());
    pack(text, &mut out).then(|| wire::binary_frame(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(frame: &[u8]) -> Vec<u8> {
        let mut json = Vec::new();
        msgpack::to_json(wire::frame_text(frame), &mut json).unwrap();
        json
    }

    #[test]
    fn a_frame_is_packed_once_into_its_cell() {
        let text = br#"{"event":"chat:msg","room":"r","data":{"n":[1,2.5,null]},"from":"u","seq":7,"ts":1}"#;
        let frame = wire::text_frame(text);
        let cell = Twin::default();
        let first = twin(&cell, &frame).unwrap().clone();
        let second = twin(&cell, &frame).unwrap();
        assert!(Arc::ptr_eq(&first, second));
        assert_eq!(first[0], 0x82, "a final binary frame");
        assert_eq!(text_of(&first), text);
    }
}
