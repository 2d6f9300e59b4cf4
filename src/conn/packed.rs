//! Frames for connections that chose `roomcast.msgpack` (section 14): the
//! server writes every message as JSON, and a MessagePack connection gets
//! that JSON converted (`proto::msgpack`) into a binary frame.
//!
//! Owns the node's memo of shared frames in MessagePack (`PackedFrames`):
//! a room message, presence event or direct message is one JSON frame
//! shared by every shard, and its MessagePack twin is made at most once
//! per node, by the first shard to deliver it to a MessagePack member, and
//! shared by reference like the JSON frame. A node without such members
//! never converts nor takes the memo's lock. Replies to one connection
//! (acks, errors, `connection:established`) are converted on their own.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;

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

/// The MessagePack binary frame of a shared JSON text frame.
fn pack_frame(frame: &[u8]) -> Option<Arc<[u8]>> {
    let text = wire::frame_text(frame);
    let mut out = Vec::with_capacity(text.len());
    pack(text, &mut out).then(|| wire::binary_frame(&out))
}

/// A frame's twin, made once by whichever shard asks first.
type Twin = Arc<OnceLock<Option<Arc<[u8]>>>>;

/// The node's MessagePack twins of shared frames; see the module doc.
#[derive(Default)]
pub struct PackedFrames {
    memo: Mutex<Memo>,
}

#[derive(Default)]
struct Memo {
    /// By the address of the JSON frame. The `Weak` keeps that allocation,
    /// so the address names no other frame while the entry is here; an
    /// entry whose frame is gone everywhere (delivered, out of history) is
    /// pruned.
    twins: HashMap<usize, (Weak<[u8]>, Twin)>,
    /// The size at which dead entries are pruned next.
    prune_at: usize,
}

/// Entries below which the memo is never pruned.
const MIN_PRUNE_AT: usize = 64;

impl PackedFrames {
    /// The MessagePack twin of `frame` (a `wire::text_frame`): converted
    /// on the first call for it on this node, shared afterwards. The lock
    /// is held only to find the entry; the conversion runs outside it.
    pub fn twin(&self, frame: &Arc<[u8]>) -> Option<Arc<[u8]>> {
        let twin = self.entry(frame);
        twin.get_or_init(|| pack_frame(frame)).clone()
    }

    fn entry(&self, frame: &Arc<[u8]>) -> Twin {
        let key = Arc::as_ptr(frame).cast::<u8>() as usize;
        let mut memo = self.memo.lock();
        if let Some((_, twin)) = memo.twins.get(&key) {
            return twin.clone();
        }
        if memo.twins.len() >= memo.prune_at {
            memo.twins.retain(|_, (weak, _)| weak.strong_count() > 0);
            memo.prune_at = (memo.twins.len() * 2).max(MIN_PRUNE_AT);
        }
        let twin = Twin::default();
        memo.twins
            .insert(key, (Arc::downgrade(frame), twin.clone()));
        twin
    }

    /// Frames with an entry, dead or alive.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.memo.lock().twins.len()
    }
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
    fn a_frame_is_packed_once_and_shared() {
        let frames = PackedFrames::default();
        let text = br#"{"event":"chat:msg","room":"r","data":{"n":[1,2.5,null]},"from":"u","seq":7,"ts":1}"#;
        let frame = wire::text_frame(text);
        let first = frames.twin(&frame).unwrap();
        let second = frames.twin(&frame).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first[0], 0x82, "a final binary frame");
        assert_eq!(text_of(&first), text);
        let other = wire::text_frame(br#"{"event":"x"}"#);
        assert!(!Arc::ptr_eq(&frames.twin(&other).unwrap(), &first));
    }

    #[test]
    fn twins_of_dropped_frames_are_pruned() {
        let frames = PackedFrames::default();
        let kept = wire::text_frame(b"{}");
        frames.twin(&kept);
        for n in 0..10 * MIN_PRUNE_AT {
            let frame = wire::text_frame(format!("[{n}]").as_bytes());
            assert_eq!(
                text_of(&frames.twin(&frame).unwrap()),
                format!("[{n}]").as_bytes()
            );
        }
        assert!(frames.len() <= MIN_PRUNE_AT + 1, "{} entries", frames.len());
        let again = frames.twin(&kept).unwrap();
        assert_eq!(text_of(&again), b"{}");
    }
}
