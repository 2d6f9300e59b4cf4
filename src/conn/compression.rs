//! The shard's permessage-deflate state, lent to its connections through
//! `Context` (and used by the shard's fan-out): one `Deflater`, one
//! `Inflater` and their buffers for every connection of the shard.
//!
//! With no context takeover on either side (`ws::extensions`) nothing
//! carries over from one message to the next, so a connection that agreed
//! to compression holds no deflate state of its own: an idle one costs
//! what an uncompressed one does. The deflate and inflate states are
//! created on first use, so a shard that never compresses never pays for
//! them.
//!
//! Owns: when a message is worth compressing (`COMPRESS_MIN_BYTES`, and
//! only when it shrinks), the inflation of a compressed message under
//! `--max-message-size`, and compress-once of a shared room frame. Must
//! not touch: frames on the wire (`ws::frame`), queues (`outbound`), or
//! who agreed to what (the session's `Deflate`).

use std::sync::Arc;

use crate::codes::limits::{COMPRESS_MIN_BYTES, MAX_KEPT_INFLATE_BUFFER};
use crate::conn::shard_frame::ShardFrame;
use crate::proto::wire;
use crate::ws::deflate::{Deflater, Inflater};

/// The shard's compression state; see the module doc.
#[derive(Default)]
pub struct Codec {
    deflater: Option<Box<Deflater>>,
    inflater: Option<Box<Inflater>>,
    /// The output of the last `compress`.
    compressed: Vec<u8>,
    /// The one inflate buffer, lent out while an inflated message is
    /// handled (`take_buffer`, `give_buffer`).
    inflated: Vec<u8>,
}

impl Codec {
    /// The compressed payload of a data message of `payload`, or `None`
    /// when it is to go uncompressed: shorter than `COMPRESS_MIN_BYTES`,
    /// or not shrinking (RFC 7692 lets any message go uncompressed).
    pub fn compress(&mut self, payload: &[u8]) -> Option<&[u8]> {
        if payload.len() < COMPRESS_MIN_BYTES {
            return None;
        }
        self.compressed.clear();
        let deflater = self.deflater.get_or_insert_with(Default::default);
        deflater.compress(payload, &mut self.compressed);
        (self.compressed.len() < payload.len()).then_some(&self.compressed[..])
    }

    /// The compressed twin (RSV1) of a room's shared text `frame`
    /// (`wire::text_frame`), or of its MessagePack binary twin
    /// (`conn::packed`), or `None` when its payload is not worth it.
    pub fn compress_frame(&mut self, frame: &[u8]) -> Option<Arc<[u8]>> {
        let twin = if wire::is_binary_frame(frame) {
            wire::compressed_binary_frame
        } else {
            wire::compressed_text_frame
        };
        self.compress(wire::frame_text(frame)).map(twin)
    }

    /// The shard's inflater, to inflate a compressed message into the
    /// buffer from `take_buffer`.
    pub fn inflater(&mut self) -> &mut Inflater {
        self.inflater.get_or_insert_with(Default::default)
    }

    /// The shard's inflate buffer, empty, for one message.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inflated)
    }

    /// Gives the buffer back once the message is handled; one that a
    /// large message grew is freed rather than kept.
    pub fn give_buffer(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        if buffer.capacity() <= MAX_KEPT_INFLATE_BUFFER {
            self.inflated = buffer;
        }
    }
}

/// One shared frame of a fan-out on this shard and its compressed twin,
/// made at most once, for the first member that takes compressed frames;
/// every later such member gets the same frame.
pub struct SharedFrame {
    plain: ShardFrame,
    /// `None`: not made yet; `Some(None)`: not worth compressing.
    compressed: Option<Option<ShardFrame>>,
}

impl SharedFrame {
    pub fn new(plain: ShardFrame) -> Self {
        Self {
            plain,
            compressed: None,
        }
    }

    /// The frame for a member: the compressed one when it `compresses`
    /// and the text is worth it, else the plain one.
    pub fn for_member(&mut self, compresses: bool, codec: &mut Codec) -> &ShardFrame {
        if !compresses {
            return &self.plain;
        }
        let plain = &self.plain;
        self.compressed
            .get_or_insert_with(|| codec.compress_frame(plain).map(ShardFrame::new))
            .as_ref()
            .unwrap_or(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(codec: &mut Codec, payload: &[u8]) -> Vec<u8> {
        let mut out = codec.take_buffer();
        codec
            .inflater()
            .inflate(payload, 1 << 20, &mut out)
            .unwrap();
        let text = out.clone();
        codec.give_buffer(out);
        text
    }

    #[test]
    fn short_and_incompressible_messages_stay_plain() {
        let mut codec = Codec::default();
        assert!(codec.compress(&[b'a'; COMPRESS_MIN_BYTES - 1]).is_none());
        assert!(
            codec.deflater.is_none(),
            "nothing compressed, nothing built"
        );
        let mut noise = vec![0u8; 4096];
        let mut x = 0x9e37_79b9_u32;
        for byte in &mut noise {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *byte = x as u8;
        }
        assert!(codec.compress(&noise).is_none(), "deflate would grow it");
        let text = b"{\"event\":\"tick\"}".repeat(20);
        let compressed = codec.compress(&text).unwrap().to_vec();
        assert!(compressed.len() < text.len());
        assert_eq!(inflate(&mut codec, &compressed), text);
    }

    #[test]
    fn a_room_frame_is_compressed_once_and_shared() {
        let text = br#"{"event":"price","room":"p","data":{"bid":1.5,"ask":1.6}}"#.repeat(8);
        let plain = wire::text_frame(&text);
        let mut codec = Codec::default();
        let mut frame = SharedFrame::new(ShardFrame::new(plain.clone()));
        assert_eq!(frame.for_member(false, &mut codec).as_ptr(), plain.as_ptr());
        let first = frame.for_member(true, &mut codec).clone();
        let second = frame.for_member(true, &mut codec).clone();
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "one compression per fan-out"
        );
        assert_eq!(first[0], 0xc1, "FIN, RSV1, text");
        assert!(first.len() < plain.len());
        assert_eq!(inflate(&mut codec, wire::frame_text(&first)), text);

        let short = wire::text_frame(b"{}");
        let mut frame = SharedFrame::new(ShardFrame::new(short.clone()));
        assert_eq!(frame.for_member(true, &mut codec).as_ptr(), short.as_ptr());
    }

    #[test]
    fn a_buffer_grown_by_a_large_message_is_not_kept() {
        let mut codec = Codec::default();
        codec.give_buffer(Vec::with_capacity(MAX_KEPT_INFLATE_BUFFER + 1));
        assert_eq!(codec.take_buffer().capacity(), 0);
        codec.give_buffer(Vec::with_capacity(1024));
        assert_eq!(codec.take_buffer().capacity(), 1024);
    }
}
