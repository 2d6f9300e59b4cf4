//! The sans-IO message decoder that runs over a connection's read buffer:
//! frames in, complete messages out (RFC 6455 sections 5.4 to 5.6).
//!
//! Owns the state between frames: the masking policy, the fragmented message
//! in progress (assembled in a decoder-owned buffer), UTF-8 validation of
//! text as it arrives, and how far an incomplete frame has been unmasked.
//! Must not touch sockets or the caller's buffer beyond the bytes it is
//! given, and never copies an unfragmented message: it is unmasked in place.
//!
//! With permessage-deflate agreed (`with_deflate`), RSV1 on the first frame
//! of a text or binary message marks it compressed: its bytes are deflate,
//! so they are not UTF-8-validated here, and it is handed out as
//! `Message::Compressed` for the caller to inflate under the size limit
//! (and validate). RSV1 anywhere else is a protocol error.

use crate::codes::close::is_valid_from_peer;
use crate::codes::limits::{COMPRESSED_SLACK_BYTES, COMPRESSED_SLACK_DIVISOR};
use crate::ws::frame::{FrameHeader, OpCode, parse_header};
use crate::ws::mask::unmask;
use crate::ws::utf8::Utf8Validator;

pub use crate::ws::frame::ProtocolError;

/// A close frame's status code and reason.
#[derive(Debug)]
pub struct CloseFrame<'a> {
    pub code: u16,
    pub reason: &'a str,
}

/// One complete message, borrowed from the caller's input or from the
/// decoder's assembly buffer.
#[derive(Debug)]
pub enum Message<'a> {
    /// Complete, validated UTF-8, unmasked; mutable because the JSON layer
    /// parses it in place.
    Text(&'a mut [u8]),
    Binary(&'a mut [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// `None`: the close payload was empty.
    Close(Option<CloseFrame<'a>>),
    /// A compressed (RSV1) text or binary message, unmasked but still
    /// deflate: not UTF-8-validated, and at most `max_message_size` plus a
    /// small slack. The caller inflates it (no context takeover: on its own).
    Compressed {
        text: bool,
        payload: &'a [u8],
    },
}

/// The result of one [`Decoder::decode`] call.
pub struct Decoded<'a> {
    /// Bytes the caller must drop from the front of its input once it is
    /// done with `message`.
    pub consumed: usize,
    /// `None`: more input is needed.
    pub message: Option<Message<'a>>,
}

/// The data message kinds a message can be. One byte even inside an
/// `Option` (the bool's spare values are the other variants' tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
    /// RSV1 on its first frame: deflate bytes, of a text message or not.
    Compressed {
        text: bool,
    },
}

impl DataKind {
    /// The kind of a message whose first frame has `header`.
    fn of_first(header: &FrameHeader) -> Self {
        let text = header.opcode == OpCode::Text;
        match (header.compressed, text) {
            (true, text) => Self::Compressed { text },
            (false, true) => Self::Text,
            (false, false) => Self::Binary,
        }
    }

    fn is_compressed(self) -> bool {
        matches!(self, Self::Compressed { .. })
    }
}

/// A complete frame found in the input: where it is and what it is.
struct FrameSpan {
    header: FrameHeader,
    payload_start: usize,
    payload_end: usize,
}

/// Turns a connection's input bytes into messages; see [`Decoder::decode`].
#[derive(Debug)]
pub struct Decoder {
    // u32 rather than usize here and in `unmasked_prefix`: every upgraded
    // connection holds a decoder in its session, and the server's
    // `--max-message-size` is at most 64 MiB.
    /// Saturated at `u32::MAX` (4 GiB - 1).
    max_message_size: u32,
    require_mask: bool,
    /// permessage-deflate was agreed: RSV1 may start a data message.
    /// Whether the server compresses what it sends is the connection's
    /// business, not the decoder's.
    inflates: bool,
    /// The kind of the fragmented message being assembled, if any.
    fragmented: Option<DataKind>,
    /// The fragments received so far of the message in progress.
    assembly: Vec<u8>,
    /// Validation state of the text message in progress (fragmented or
    /// not), carried across frames and across calls.
    utf8: Utf8Validator,
    /// Payload bytes of the frame at the front of the input that an earlier
    /// call already unmasked (and validated, for text). The caller keeps
    /// those bytes unchanged between calls, so they must not be unmasked
    /// twice. At most one frame's payload, so at most `max_message_size`.
    unmasked_prefix: u32,
}

impl Decoder {
    /// A decoder that refuses messages over `max_message_size` bytes (at
    /// most `u32::MAX`: a larger limit is taken as that).
    /// `require_mask` is true for a server: every client frame must be
    /// masked. With `false` both masked and unmasked frames are accepted.
    pub fn new(max_message_size: usize, require_mask: bool) -> Self {
        Self {
            max_message_size: u32::try_from(max_message_size).unwrap_or(u32::MAX),
            require_mask,
            inflates: false,
            fragmented: None,
            assembly: Vec::new(),
            utf8: Utf8Validator::default(),
            unmasked_prefix: 0,
        }
    }

    /// The same decoder, accepting compressed messages when `agreed`
    /// (permessage-deflate was negotiated).
    pub fn with_deflate(mut self, agreed: bool) -> Self {
        self.inflates = agreed;
        self
    }

    /// `input` is the connection's unconsumed input. Frames are unmasked IN
    /// PLACE. Returns how many bytes the caller must drop from the front of
    /// its input (after it is done with `message`) and at most one message.
    ///
    /// `message` `None` means more input is needed; `consumed` may still be
    /// above 0 because complete non-final fragments were moved into the
    /// decoder's assembly buffer. Between calls the caller may append to its
    /// input and must drop exactly `consumed` bytes from the front; it must
    /// not otherwise change the bytes it passed before.
    pub fn decode<'a>(&'a mut self, input: &'a mut [u8]) -> Result<Decoded<'a>, ProtocolError> {
        if self.fragmented.is_none() {
            // The previous fragmented message (if any) was handed out by the
            // last call and the caller is done with it.
            self.assembly.clear();
        }
        let mut consumed = 0;
        loop {
            let Some(frame) = self.next_complete_frame(input, consumed)? else {
                return Ok(Decoded {
                    consumed,
                    message: None,
                });
            };
            consumed = frame.payload_end;
            let opcode = frame.header.opcode;
            if opcode.is_control() {
                let payload: &'a [u8] = &input[frame.payload_start..frame.payload_end];
                let message = control_message(opcode, payload)?;
                return Ok(Decoded {
                    consumed,
                    message: Some(message),
                });
            }
            if let Some(kind) = self.finish_data_frame(&frame, input)? {
                let message = match self.fragmented.take() {
                    // The message was assembled from fragments.
                    Some(_) => data_message(kind, &mut self.assembly[..]),
                    None => data_message(kind, &mut input[frame.payload_start..frame.payload_end]),
                };
                return Ok(Decoded {
                    consumed,
                    message: Some(message),
                });
            }
            // A non-final fragment was moved into the assembly buffer: go on
            // with the next frame.
        }
    }

    /// Bytes held in the fragment assembly buffer (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.assembly.len()
    }

    /// Drops the assembly buffer's allocation when no message is in progress
    /// (called when the connection goes idle).
    pub fn shrink(&mut self) {
        if self.fragmented.is_none() {
            self.assembly = Vec::new();
        }
    }

    /// Parses and checks the frame starting at `input[start..]` and unmasks
    /// its payload in place. Returns `None` when the frame is incomplete,
    /// after unmasking and validating what has arrived of a text payload so
    /// that bad UTF-8 is reported as soon as it arrives.
    fn next_complete_frame(
        &mut self,
        input: &mut [u8],
        start: usize,
    ) -> Result<Option<FrameSpan>, ProtocolError> {
        let frame_bytes = input.get_mut(start..).unwrap_or_default();
        let Some(header) = parse_header(frame_bytes)? else {
            return Ok(None);
        };
        self.check_header(&header)?;
        // check_header bounded the length by max_message_size (data) or 125
        // (control), so it fits in memory.
        let payload_len =
            usize::try_from(header.payload_len).map_err(|_| ProtocolError::MessageTooBig)?;
        let arrived = &mut frame_bytes[header.header_len..];
        let complete = arrived.len() >= payload_len;
        let available = arrived.len().min(payload_len);
        if !complete && !self.is_text_payload(&header) {
            // Only text gains from early unmasking (fail-fast UTF-8 checks);
            // anything else is unmasked in one go once complete.
            return Ok(None);
        }
        self.unmask_new_bytes(&header, &mut arrived[..available])?;
        if !complete {
            return Ok(None);
        }
        self.unmasked_prefix = 0;
        let payload_start = start + header.header_len;
        Ok(Some(FrameSpan {
            header,
            payload_start,
            payload_end: payload_start + payload_len,
        }))
    }

    /// Checks what the frame header means in the current state: masking,
    /// RSV1, fragmentation order and message size.
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        if self.require_mask && header.mask.is_none() {
            return Err(ProtocolError::UnmaskedFrame);
        }
        self.check_compressed_bit(header)?;
        match (header.opcode, self.fragmented) {
            (OpCode::Continuation, None) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => Err(ProtocolError::ExpectedContinuation),
            // Known before the payload arrives: fail now rather than buffer.
            (OpCode::Text | OpCode::Binary, None) => {
                self.check_message_size(header.payload_len, header.compressed)
            }
            (OpCode::Continuation, Some(kind)) => {
                self.check_message_size(header.payload_len, kind.is_compressed())
            }
            (OpCode::Close | OpCode::Ping | OpCode::Pong, _) => Ok(()),
        }
    }

    /// RFC 7692 6.1: RSV1 only with the extension agreed, and only on the
    /// first frame of a data message.
    fn check_compressed_bit(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        if !header.compressed {
            return Ok(());
        }
        if !self.inflates {
            return Err(ProtocolError::ReservedBits);
        }
        match header.opcode {
            OpCode::Text | OpCode::Binary => Ok(()),
            _ => Err(ProtocolError::MisplacedCompressedBit),
        }
    }

    /// The message so far plus a frame of `payload_len` bytes must fit.
    fn check_message_size(&self, payload_len: u64, compressed: bool) -> Result<(), ProtocolError> {
        let total = (self.assembly.len() as u64).saturating_add(payload_len);
        if total > self.wire_limit(compressed) {
            return Err(ProtocolError::MessageTooBig);
        }
        Ok(())
    }

    /// The most bytes a message may take on the wire: `max_message_size`,
    /// with a slack for a compressed one, since deflate grows
    /// incompressible data a little (its inflated size is what the caller
    /// holds to `max_message_size`).
    fn wire_limit(&self, compressed: bool) -> u64 {
        let max = u64::from(self.max_message_size);
        if !compressed {
            return max;
        }
        let slack = max / COMPRESSED_SLACK_DIVISOR as u64 + COMPRESSED_SLACK_BYTES as u64;
        max.saturating_add(slack)
    }

    /// Whether a frame with `header` carries bytes of a text message still
    /// to validate (a compressed message's bytes are deflate, not text).
    fn is_text_payload(&self, header: &FrameHeader) -> bool {
        match header.opcode {
            OpCode::Text => !header.compressed,
            OpCode::Continuation => self.fragmented == Some(DataKind::Text),
            _ => false,
        }
    }

    /// Unmasks (and, for text, validates) the bytes of `payload` that an
    /// earlier call has not already seen; `payload` is what has arrived of
    /// the frame's payload.
    fn unmask_new_bytes(
        &mut self,
        header: &FrameHeader,
        payload: &mut [u8],
    ) -> Result<(), ProtocolError> {
        // min: never trust the remembered offset more than the bytes at hand.
        let seen = (self.unmasked_prefix as usize).min(payload.len());
        let new_bytes = &mut payload[seen..];
        if let Some(mask) = header.mask {
            unmask(new_bytes, mask, seen);
        }
        if self.is_text_payload(header) {
            self.utf8
                .feed(new_bytes)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        // check_header bounded the payload by max_message_size (a u32).
        self.unmasked_prefix = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        Ok(())
    }

    /// Handles a complete data frame (already unmasked and, for text,
    /// validated). Returns the kind of the message when this frame ends one;
    /// otherwise the fragment was appended to the assembly buffer.
    fn finish_data_frame(
        &mut self,
        frame: &FrameSpan,
        input: &[u8],
    ) -> Result<Option<DataKind>, ProtocolError> {
        let kind = match (frame.header.opcode, self.fragmented) {
            (OpCode::Continuation, Some(kind)) => kind,
            _ => DataKind::of_first(&frame.header),
        };
        let payload = &input[frame.payload_start..frame.payload_end];
        let starts_fragmented = frame.header.opcode != OpCode::Continuation && !frame.header.fin;
        if frame.header.opcode == OpCode::Continuation || starts_fragmented {
            self.append_fragment(payload, kind.is_compressed());
            self.fragmented = Some(kind);
        }
        if !frame.header.fin {
            return Ok(None);
        }
        if kind == DataKind::Text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(Some(kind))
    }

    /// Appends a fragment, growing the buffer without ever reserving past
    /// the message's wire limit (check_header guaranteed the fragment fits).
    fn append_fragment(&mut self, fragment: &[u8], compressed: bool) {
        let needed = self.assembly.len() + fragment.len();
        if needed > self.assembly.capacity() {
            // Amortised doubling, capped at the most a message may hold.
            let limit = usize::try_from(self.wire_limit(compressed)).unwrap_or(usize::MAX);
            let target = self
                .assembly
                .capacity()
                .saturating_mul(2)
                .min(limit)
                .max(needed);
            self.assembly.reserve_exact(target - self.assembly.len());
        }
        self.assembly.extend_from_slice(fragment);
    }
}

/// The message for a complete control frame.
fn control_message(opcode: OpCode, payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    match opcode {
        OpCode::Ping => Ok(Message::Ping(payload)),
        OpCode::Pong => Ok(Message::Pong(payload)),
        _ => parse_close_payload(payload).map(Message::Close),
    }
}

/// RFC 6455 5.5.1: an empty payload, or a 2-byte code a peer may send
/// followed by a UTF-8 reason.
fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(ProtocolError::InvalidClosePayload),
        [high, low, reason @ ..] => (u16::from_be_bytes([*high, *low]), reason),
    };
    if !is_valid_from_peer(code) {
        return Err(ProtocolError::InvalidCloseCode);
    }
    let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
    Ok(Some(CloseFrame { code, reason }))
}

fn data_message(kind: DataKind, payload: &mut [u8]) -> Message<'_> {
    match kind {
        DataKind::Text => Message::Text(payload),
        DataKind::Binary => Message::Binary(payload),
        DataKind::Compressed { text } => Message::Compressed { text, payload },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{encode_frame, encode_masked_frame};
    use proptest::prelude::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    /// Large enough for every valid shape below (65536-byte payloads).
    const BIG: usize = 1 << 20;

    /// An owned copy of a [`Message`], so that it outlives the input.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
        Compressed { text: bool, payload: Vec<u8> },
    }

    impl From<Message<'_>> for Owned {
        fn from(message: Message<'_>) -> Self {
            match message {
                Message::Text(bytes) => Owned::Text(
                    String::from_utf8(bytes.to_vec()).expect("decoder passed invalid UTF-8"),
                ),
                Message::Binary(bytes) => Owned::Binary(bytes.to_vec()),
                Message::Ping(bytes) => Owned::Ping(bytes.to_vec()),
                Message::Pong(bytes) => Owned::Pong(bytes.to_vec()),
                Message::Close(close) => Owned::Close(close.map(|c| (c.code, c.reason.to_owned()))),
                Message::Compressed { text, payload } => Owned::Compressed {
                    text,
                    payload: payload.to_vec(),
                },
            }
        }
    }

    fn text(s: &str) -> Owned {
        Owned::Text(s.to_owned())
    }

    /// What came out of a byte stream: the messages, then the error if any.
    type Outcome = (Vec<Owned>, Option<ProtocolError>);

    /// Simulates the reactor: appends each chunk to a Vec, decodes until
    /// more input is needed, drains what was consumed, and keeps owned
    /// copies of the messages.
    fn run_chunks<'c>(
        decoder: &mut Decoder,
        chunks: impl IntoIterator<Item = &'c [u8]>,
    ) -> Outcome {
        let mut input = Vec::new();
        let mut messages = Vec::new();
        for chunk in chunks {
            input.extend_from_slice(chunk);
            loop {
                let (consumed, message) = match decoder.decode(&mut input) {
                    Ok(decoded) => (decoded.consumed, decoded.message.map(Owned::from)),
                    Err(error) => return (messages, Some(error)),
                };
                assert!(consumed <= input.len());
                input.drain(..consumed);
                // A compressed message may use the slack over the limit.
                let max = decoder.wire_limit(decoder.inflates) as usize;
                assert!(decoder.buffered() <= max);
                assert!(decoder.assembly.capacity() <= max);
                match message {
                    Some(message) => messages.push(message),
                    None => break,
                }
            }
        }
        (messages, None)
    }

    fn run_split(make: &impl Fn() -> Decoder, stream: &[u8], split: usize) -> Outcome {
        let (a, b) = stream.split_at(split);
        run_chunks(&mut make(), [a, b])
    }

    /// The 2-way split points to try: all of them for small streams; for big
    /// ones all those near either end (where the headers are) plus a stride.
    fn split_points(len: usize) -> Vec<usize> {
        if len <= 4096 {
            return (0..=len).collect();
        }
        let ends = (0..300).chain(len - 300..=len);
        ends.chain((300..len - 300).step_by(997)).collect()
    }

    /// Feeds `stream` whole, split in two at every point, and one byte at a
    /// time; all must give `expected`.
    fn check_with(max: usize, require_mask: bool, stream: &[u8], expected: Outcome) {
        check_decoder(|| Decoder::new(max, require_mask), stream, expected);
    }

    /// `check_with` for the decoders `make` builds.
    fn check_decoder(make: impl Fn() -> Decoder, stream: &[u8], expected: Outcome) {
        let whole = run_chunks(&mut make(), [stream]);
        assert_eq!(whole, expected, "whole");
        for split in split_points(stream.len()) {
            assert_eq!(
                run_split(&make, stream, split),
                expected,
                "split at {split}"
            );
        }
        let bytewise = run_chunks(&mut make(), stream.chunks(1));
        assert_eq!(bytewise, expected, "byte at a time");
    }

    fn check(stream: &[u8], expected: &[Owned]) {
        check_with(BIG, true, stream, (expected.to_vec(), None));
    }

    fn check_error(stream: &[u8], expected: &[Owned], error: ProtocolError) {
        check_with(BIG, true, stream, (expected.to_vec(), Some(error)));
    }

    /// A stream of masked frames, each given as (fin, opcode, payload).
    fn masked_stream(frames: &[(bool, OpCode, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (fin, opcode, payload)) in frames.iter().enumerate() {
            let mask = [MASK[0], MASK[1], MASK[2], i as u8];
            encode_masked_frame(*fin, *opcode, payload, mask, &mut out);
        }
        out
    }

    fn one(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        masked_stream(&[(true, opcode, payload)])
    }

    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        payload
    }

    // --- Valid shapes -----------------------------------------------------

    #[test]
    fn binary_of_every_length_encoding() {
        for len in [0, 1, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            check(
                &one(OpCode::Binary, &payload),
                &[Owned::Binary(payload.clone())],
            );
        }
    }

    #[test]
    fn text_of_every_length_encoding() {
        for len in [0, 125, 126, 65535, 65536] {
            let payload = "ab€".repeat(len / 5 + 1)[..len].to_owned();
            check(
                &one(OpCode::Text, payload.as_bytes()),
                &[Owned::Text(payload.clone())],
            );
        }
    }

    #[test]
    fn several_messages_in_one_read() {
        let stream = masked_stream(&[
            (true, OpCode::Text, b"one"),
            (true, OpCode::Binary, b"two"),
            (true, OpCode::Ping, b"three"),
            (true, OpCode::Pong, b""),
        ]);
        check(
            &stream,
            &[
                text("one"),
                Owned::Binary(b"two".to_vec()),
                Owned::Ping(b"three".to_vec()),
                Owned::Pong(vec![]),
            ],
        );
    }

    #[test]
    fn unfragmented_message_is_unmasked_in_place() {
        let mut input = one(OpCode::Text, b"hello");
        let range = input.as_ptr_range();
        let mut decoder = Decoder::new(BIG, true);
        let decoded = decoder.decode(&mut input).unwrap();
        assert_eq!(decoded.consumed, 11);
        let Some(Message::Text(bytes)) = decoded.message else {
            panic!("expected text")
        };
        assert_eq!(bytes, b"hello");
        assert!(
            range.contains(&bytes.as_ptr()),
            "the message must point into the input"
        );
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(
            decoder.assembly.capacity(),
            0,
            "no allocation for an unfragmented message"
        );
    }

    #[test]
    fn fragmented_text_with_interleaved_ping() {
        let stream = masked_stream(&[
            (false, OpCode::Text, b"Hel"),
            (true, OpCode::Ping, b"p"),
            (false, OpCode::Continuation, b"lo, "),
            (true, OpCode::Pong, b""),
            (true, OpCode::Continuation, b"world"),
        ]);
        check(
            &stream,
            &[
                Owned::Ping(b"p".to_vec()),
                Owned::Pong(vec![]),
                text("Hello, world"),
            ],
        );
    }

    #[test]
    fn fragmented_binary_with_empty_fragments() {
        let stream = masked_stream(&[
            (false, OpCode::Binary, b""),
            (false, OpCode::Continuation, b"\x00\xff"),
            (false, OpCode::Continuation, b""),
            (true, OpCode::Continuation, b""),
            (true, OpCode::Binary, b"next"),
        ]);
        check(
            &stream,
            &[
                Owned::Binary(vec![0, 0xff]),
                Owned::Binary(b"next".to_vec()),
            ],
        );
    }

    #[test]
    fn code_point_split_across_fragments_is_valid() {
        let euro = "€".as_bytes();
        let stream = masked_stream(&[
            (false, OpCode::Text, &euro[..1]),
            (false, OpCode::Continuation, &euro[1..2]),
            (true, OpCode::Continuation, &euro[2..]),
        ]);
        check(&stream, &[text("€")]);
    }

    #[test]
    fn consumed_counts_fragments_moved_to_the_assembly_buffer() {
        let mut input = masked_stream(&[
            (false, OpCode::Binary, b"abc"),
            (true, OpCode::Continuation, b"de"),
        ]);
        input.truncate(9 + 3); // the first frame and part of the second
        let mut decoder = Decoder::new(BIG, true);
        let decoded = decoder.decode(&mut input).unwrap();
        assert_eq!(decoded.consumed, 9);
        assert!(decoded.message.is_none());
        assert_eq!(decoder.buffered(), 3);
        decoder.shrink(); // a message is in progress: keeps the buffer
        assert_eq!(decoder.buffered(), 3);
    }

    #[test]
    fn shrink_releases_the_assembly_buffer_when_idle() {
        let mut input = masked_stream(&[
            (false, OpCode::Binary, b"abc"),
            (true, OpCode::Continuation, b"de"),
        ]);
        let mut decoder = Decoder::new(BIG, true);
        let decoded = decoder.decode(&mut input).unwrap();
        assert!(matches!(decoded.message, Some(Message::Binary(b)) if b == b"abcde"));
        decoder.shrink();
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(decoder.assembly.capacity(), 0);
    }

    #[test]
    fn close_without_payload() {
        check(&one(OpCode::Close, b""), &[Owned::Close(None)]);
    }

    #[test]
    fn close_with_code_only() {
        check(
            &one(OpCode::Close, &close_payload(1000, b"")),
            &[Owned::Close(Some((1000, String::new())))],
        );
    }

    #[test]
    fn close_with_code_and_reason() {
        let reason = "é".repeat(61);
        check(
            &one(OpCode::Close, &close_payload(4999, reason.as_bytes())),
            &[Owned::Close(Some((4999, reason.clone())))],
        );
    }

    #[test]
    fn every_valid_close_code_is_accepted() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            check(
                &one(OpCode::Close, &close_payload(code, b"x")),
                &[Owned::Close(Some((code, "x".into())))],
            );
        }
    }

    #[test]
    fn ping_and_pong_of_125_bytes() {
        check(&one(OpCode::Ping, &[9; 125]), &[Owned::Ping(vec![9; 125])]);
        check(&one(OpCode::Pong, &[8; 125]), &[Owned::Pong(vec![8; 125])]);
    }

    #[test]
    fn unmasked_frames_are_accepted_without_require_mask() {
        let mut stream = Vec::new();
        encode_frame(OpCode::Text, b"from server", &mut stream);
        encode_masked_frame(true, OpCode::Binary, b"masked", MASK, &mut stream);
        let expected = vec![text("from server"), Owned::Binary(b"masked".to_vec())];
        check_with(BIG, false, &stream, (expected, None));
    }

    #[test]
    fn message_of_exactly_max_size_is_accepted() {
        let stream = masked_stream(&[
            (false, OpCode::Binary, &[1; 6]),
            (true, OpCode::Continuation, &[2; 4]),
        ]);
        let mut expected = vec![1; 6];
        expected.extend([2; 4]);
        check_with(10, true, &stream, (vec![Owned::Binary(expected)], None));
    }

    // --- Violations: one test per rule ----------------------------------

    #[test]
    fn reserved_bits() {
        let mut stream = one(OpCode::Text, b"hi");
        stream[0] |= 0x40;
        check_error(&stream, &[], ProtocolError::ReservedBits);
    }

    #[test]
    fn reserved_opcode() {
        let mut stream = one(OpCode::Binary, b"hi");
        stream[0] = 0x83;
        check_error(&stream, &[], ProtocolError::ReservedOpcode);
        stream[0] = 0x8b;
        check_error(&stream, &[], ProtocolError::ReservedOpcode);
    }

    #[test]
    fn fragmented_control() {
        let stream = masked_stream(&[(false, OpCode::Ping, b"hi")]);
        check_error(&stream, &[], ProtocolError::FragmentedControl);
    }

    #[test]
    fn control_too_long() {
        check_error(
            &one(OpCode::Ping, &[0; 126]),
            &[],
            ProtocolError::ControlTooLong,
        );
        check_error(
            &one(OpCode::Close, &[0; 200]),
            &[],
            ProtocolError::ControlTooLong,
        );
    }

    #[test]
    fn unmasked_frame() {
        let mut stream = Vec::new();
        encode_frame(OpCode::Text, b"hi", &mut stream);
        check_error(&stream, &[], ProtocolError::UnmaskedFrame);
    }

    #[test]
    fn length_msb_set() {
        let stream = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4];
        check_error(&stream, &[], ProtocolError::LengthMsbSet);
    }

    #[test]
    fn non_minimal_length() {
        let mut stream = vec![0x82, 0xfe, 0x00, 0x05, 1, 2, 3, 4];
        stream.extend([0; 5]);
        check_error(&stream, &[], ProtocolError::NonMinimalLength);
        let stream = [0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 1, 2, 3, 4];
        check_error(&stream, &[], ProtocolError::NonMinimalLength);
    }

    #[test]
    fn unexpected_continuation() {
        let stream = masked_stream(&[
            (true, OpCode::Text, b"a"),
            (true, OpCode::Continuation, b"b"),
        ]);
        check_error(&stream, &[text("a")], ProtocolError::UnexpectedContinuation);
    }

    #[test]
    fn expected_continuation() {
        for opcode in [OpCode::Text, OpCode::Binary] {
            let stream = masked_stream(&[(false, OpCode::Text, b"a"), (true, opcode, b"b")]);
            check_error(&stream, &[], ProtocolError::ExpectedContinuation);
        }
    }

    #[test]
    fn invalid_close_code() {
        for code in [
            0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2999, 5000, 65535,
        ] {
            check_error(
                &one(OpCode::Close, &close_payload(code, b"")),
                &[],
                ProtocolError::InvalidCloseCode,
            );
        }
    }

    #[test]
    fn invalid_close_payload() {
        check_error(
            &one(OpCode::Close, &[0x03]),
            &[],
            ProtocolError::InvalidClosePayload,
        );
    }

    #[test]
    fn invalid_close_reason() {
        check_error(
            &one(OpCode::Close, &close_payload(1000, b"ok\xff")),
            &[],
            ProtocolError::InvalidCloseReason,
        );
    }

    #[test]
    fn invalid_utf8_in_text() {
        check_error(
            &one(OpCode::Text, b"abc\xc0\xafdef"),
            &[],
            ProtocolError::InvalidUtf8,
        );
        // Truncated at the end of the message.
        check_error(
            &one(OpCode::Text, b"abc\xe2\x82"),
            &[],
            ProtocolError::InvalidUtf8,
        );
        // Binary is not checked.
        check(
            &one(OpCode::Binary, b"abc\xe2\x82"),
            &[Owned::Binary(b"abc\xe2\x82".to_vec())],
        );
    }

    #[test]
    fn invalid_utf8_across_fragments() {
        let stream = masked_stream(&[
            (false, OpCode::Text, b"ok \xf0\x9f"),
            (true, OpCode::Ping, b""),
            (true, OpCode::Continuation, b"\x98"),
        ]);
        check_error(&stream, &[Owned::Ping(vec![])], ProtocolError::InvalidUtf8);
        // Surrogate split over two fragments.
        let stream = masked_stream(&[
            (false, OpCode::Text, b"\xed"),
            (true, OpCode::Continuation, b"\xa0\x80"),
        ]);
        check_error(&stream, &[], ProtocolError::InvalidUtf8);
    }

    #[test]
    fn message_too_big_single_frame() {
        check_with(
            10,
            true,
            &one(OpCode::Binary, &[0; 11]),
            (vec![], Some(ProtocolError::MessageTooBig)),
        );
        check_with(
            10,
            true,
            &one(OpCode::Text, b"abcdefghijk"),
            (vec![], Some(ProtocolError::MessageTooBig)),
        );
    }

    #[test]
    fn message_too_big_across_fragments() {
        let stream = masked_stream(&[
            (false, OpCode::Binary, &[1; 6]),
            (true, OpCode::Ping, b""),
            (true, OpCode::Continuation, &[2; 5]),
        ]);
        check_with(
            10,
            true,
            &stream,
            (
                vec![Owned::Ping(vec![])],
                Some(ProtocolError::MessageTooBig),
            ),
        );
    }

    #[test]
    fn huge_announced_length_fails_without_allocating() {
        let header = [
            0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ];
        let mut decoder = Decoder::new(BIG, true);
        assert_eq!(
            run_chunks(&mut decoder, [&header[..]]),
            (vec![], Some(ProtocolError::MessageTooBig))
        );
        assert_eq!(decoder.assembly.capacity(), 0);
    }

    // --- permessage-deflate (RSV1) --------------------------------------

    /// A stream of masked frames given as (fin, rsv1, opcode, payload).
    fn rsv_stream(frames: &[(bool, bool, OpCode, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (fin, rsv1, opcode, payload)) in frames.iter().enumerate() {
            let start = out.len();
            let mask = [MASK[0], MASK[1], MASK[2], i as u8];
            encode_masked_frame(*fin, *opcode, payload, mask, &mut out);
            if *rsv1 {
                out[start] |= 0x40;
            }
        }
        out
    }

    fn deflating(max: usize) -> impl Fn() -> Decoder {
        move || Decoder::new(max, true).with_deflate(true)
    }

    fn compressed(text: bool, payload: &[u8]) -> Owned {
        Owned::Compressed {
            text,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn rsv1_on_a_first_frame_hands_out_the_compressed_bytes_unvalidated() {
        // Deflate bytes are not UTF-8: a compressed text is not checked here.
        let stream = rsv_stream(&[
            (true, true, OpCode::Text, b"\xf2\x48\xcd\xc9\xc9\x07\x00"),
            (true, false, OpCode::Text, b"plain"),
            (true, true, OpCode::Binary, b"\xff\xfe"),
        ]);
        let expected = vec![
            compressed(true, b"\xf2\x48\xcd\xc9\xc9\x07\x00"),
            text("plain"),
            compressed(false, b"\xff\xfe"),
        ];
        check_decoder(deflating(BIG), &stream, (expected, None));
    }

    #[test]
    fn a_fragmented_compressed_message_is_joined_with_controls_between() {
        let stream = rsv_stream(&[
            (false, true, OpCode::Text, b"\xf2\x48"),
            (true, false, OpCode::Ping, b"p"),
            (false, false, OpCode::Continuation, b"\xcd\xc9"),
            (true, false, OpCode::Continuation, b"\xc9\x07\x00"),
        ]);
        let expected = vec![
            Owned::Ping(b"p".to_vec()),
            compressed(true, b"\xf2\x48\xcd\xc9\xc9\x07\x00"),
        ];
        check_decoder(deflating(BIG), &stream, (expected, None));
    }

    #[test]
    fn rsv1_anywhere_else_is_a_protocol_error() {
        let continuation = rsv_stream(&[
            (false, true, OpCode::Text, b"a"),
            (true, true, OpCode::Continuation, b"b"),
        ]);
        let uncompressed_then_rsv1 = rsv_stream(&[
            (false, false, OpCode::Text, b"a"),
            (true, true, OpCode::Continuation, b"b"),
        ]);
        for stream in [continuation, uncompressed_then_rsv1] {
            check_decoder(
                deflating(BIG),
                &stream,
                (vec![], Some(ProtocolError::MisplacedCompressedBit)),
            );
        }
        for opcode in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
            let stream = rsv_stream(&[(true, true, opcode, b"")]);
            check_decoder(
                deflating(BIG),
                &stream,
                (vec![], Some(ProtocolError::MisplacedCompressedBit)),
            );
        }
        // Not negotiated: RSV1 is a reserved bit like the others.
        let stream = rsv_stream(&[(true, true, OpCode::Text, b"a")]);
        check_error(&stream, &[], ProtocolError::ReservedBits);
        assert_eq!(ProtocolError::MisplacedCompressedBit.close_code(), 1002);
    }

    #[test]
    fn a_compressed_message_may_be_slightly_over_the_size_limit() {
        let max = 4096;
        let slack = max / COMPRESSED_SLACK_DIVISOR + COMPRESSED_SLACK_BYTES;
        let fits = vec![7u8; max + slack];
        let stream = rsv_stream(&[(true, true, OpCode::Binary, &fits)]);
        let outcome = run_chunks(&mut deflating(max)(), [&stream[..]]);
        assert_eq!(outcome, (vec![compressed(false, &fits)], None));
        let over = vec![7u8; max + slack + 1];
        let stream = rsv_stream(&[(true, true, OpCode::Binary, &over)]);
        let outcome = run_chunks(&mut deflating(max)(), [&stream[..]]);
        assert_eq!(outcome, (vec![], Some(ProtocolError::MessageTooBig)));
        // Uncompressed, the limit is exact.
        let stream = rsv_stream(&[(true, false, OpCode::Binary, &fits)]);
        let outcome = run_chunks(&mut deflating(max)(), [&stream[..]]);
        assert_eq!(outcome, (vec![], Some(ProtocolError::MessageTooBig)));
    }

    // --- Fail fast --------------------------------------------------------

    /// Feeds only the first `arrived` bytes of `stream` and returns the result.
    fn decode_prefix(stream: &[u8], arrived: usize) -> Result<Option<Owned>, ProtocolError> {
        let mut input = stream[..arrived].to_vec();
        let mut decoder = Decoder::new(BIG, true);
        loop {
            let decoded = decoder.decode(&mut input)?;
            let consumed = decoded.consumed;
            if let Some(message) = decoded.message.map(Owned::from) {
                return Ok(Some(message));
            }
            if consumed == 0 {
                return Ok(None);
            }
            input.drain(..consumed);
        }
    }

    #[test]
    fn invalid_utf8_is_reported_before_the_frame_is_complete() {
        let mut payload = vec![b'a'; 1000];
        payload[1] = 0xff;
        let stream = one(OpCode::Text, &payload);
        // 8 header bytes (2 + 16-bit length + mask) and 2 payload bytes.
        assert_eq!(decode_prefix(&stream, 9), Ok(None));
        assert_eq!(decode_prefix(&stream, 10), Err(ProtocolError::InvalidUtf8));
        // Also when the bytes arrive one read at a time.
        let (messages, error) = run_chunks(&mut Decoder::new(BIG, true), stream[..10].chunks(1));
        assert_eq!(
            (messages, error),
            (vec![], Some(ProtocolError::InvalidUtf8))
        );
    }

    #[test]
    fn invalid_utf8_in_a_continuation_is_reported_before_it_is_complete() {
        let mut payload = vec![b'a'; 1000];
        payload[0] = 0xed; // followed by a surrogate half
        payload[1] = 0xa0;
        let stream = masked_stream(&[
            (false, OpCode::Text, "héllo".as_bytes()),
            (true, OpCode::Continuation, &payload),
        ]);
        let second_frame = 6 + "héllo".len();
        assert_eq!(decode_prefix(&stream, second_frame + 9), Ok(None));
        assert_eq!(
            decode_prefix(&stream, second_frame + 10),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn too_big_is_reported_from_the_header_alone() {
        let stream = one(OpCode::Binary, &[0; 1000]);
        let mut input = stream[..8].to_vec();
        let mut decoder = Decoder::new(999, true);
        assert_eq!(
            decoder.decode(&mut input).err(),
            Some(ProtocolError::MessageTooBig)
        );
    }

    #[test]
    fn errors_map_to_close_codes() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
        assert_eq!(ProtocolError::MessageTooBig.close_code(), 1009);
        assert_eq!(ProtocolError::UnexpectedContinuation.close_code(), 1002);
        assert_eq!(ProtocolError::InvalidCloseReason.close_code(), 1002);
    }

    // --- Properties -----------------------------------------------------

    /// Splits `stream` into chunks whose sizes cycle through `sizes`.
    fn chunked<'s>(stream: &'s [u8], sizes: &[usize]) -> Vec<&'s [u8]> {
        let mut chunks = Vec::new();
        let mut rest = stream;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }

    #[derive(Debug, Clone)]
    enum Control {
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
    }

    impl Control {
        fn encode(&self, mask: [u8; 4], out: &mut Vec<u8>) -> Owned {
            match self {
                Control::Ping(p) => {
                    encode_masked_frame(true, OpCode::Ping, p, mask, out);
                    Owned::Ping(p.clone())
                }
                Control::Pong(p) => {
                    encode_masked_frame(true, OpCode::Pong, p, mask, out);
                    Owned::Pong(p.clone())
                }
                Control::Close(None) => {
                    encode_masked_frame(true, OpCode::Close, b"", mask, out);
                    Owned::Close(None)
                }
                Control::Close(Some((code, reason))) => {
                    encode_masked_frame(
                        true,
                        OpCode::Close,
                        &close_payload(*code, reason.as_bytes()),
                        mask,
                        out,
                    );
                    Owned::Close(Some((*code, reason.clone())))
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Item {
        Control(Control),
        Data {
            text: bool,
            payload: Vec<u8>,
            cuts: Vec<prop::sample::Index>,
            between: Vec<Option<Control>>,
        },
    }

    fn control() -> impl Strategy<Value = Control> {
        let payload = || proptest::collection::vec(any::<u8>(), 0..=125);
        let code = prop::sample::select(vec![1000u16, 1001, 1003, 1007, 1009, 1011, 3000, 4999]);
        prop_oneof![
            payload().prop_map(Control::Ping),
            payload().prop_map(Control::Pong),
            proptest::option::of((code, "[a-zé€ ]{0,30}")).prop_map(Control::Close),
        ]
    }

    fn item() -> impl Strategy<Value = Item> {
        let payload = prop_oneof![
            any::<String>().prop_map(|s| (true, s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..600).prop_map(|b| (false, b)),
        ];
        let data = (
            payload,
            proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            proptest::collection::vec(proptest::option::of(control()), 0..4),
        )
            .prop_map(|((text, payload), cuts, between)| Item::Data {
                text,
                payload,
                cuts,
                between,
            });
        prop_oneof![1 => control().prop_map(Item::Control), 3 => data]
    }

    /// Encodes `items` as masked frames; returns the stream and the messages
    /// a decoder must produce from it.
    fn encode_items(items: &[Item], mask_seed: u64) -> (Vec<u8>, Vec<Owned>) {
        let mut seed = mask_seed | 1;
        let mut next_mask = move || {
            // xorshift: cheap varied masks.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed as u32).to_ne_bytes()
        };
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for item in items {
            match item {
                Item::Control(c) => expected.push(c.encode(next_mask(), &mut stream)),
                Item::Data {
                    text,
                    payload,
                    cuts,
                    between,
                } => {
                    let mut points: Vec<usize> =
                        cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
                    points.sort_unstable();
                    points.push(payload.len());
                    let mut start = 0;
                    for (i, end) in points.iter().enumerate() {
                        let fin = i + 1 == points.len();
                        let opcode = match (i, text) {
                            (0, true) => OpCode::Text,
                            (0, false) => OpCode::Binary,
                            _ => OpCode::Continuation,
                        };
                        encode_masked_frame(
                            fin,
                            opcode,
                            &payload[start..*end],
                            next_mask(),
                            &mut stream,
                        );
                        start = *end;
                        if let (false, Some(Some(c))) = (fin, between.get(i)) {
                            expected.push(c.encode(next_mask(), &mut stream));
                        }
                    }
                    expected.push(if *text {
                        Owned::Text(String::from_utf8(payload.clone()).expect("generated text"))
                    } else {
                        Owned::Binary(payload.clone())
                    });
                }
            }
        }
        (stream, expected)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_nor_overbuffer(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            max in 0usize..300,
            require_mask in any::<bool>(),
            deflate in any::<bool>(),
        ) {
            // run_chunks asserts the assembly buffer bound after every call.
            let mut decoder = Decoder::new(max, require_mask).with_deflate(deflate);
            let _ = run_chunks(&mut decoder, chunked(&bytes, &sizes));
        }

        #[test]
        fn valid_frames_with_noise_never_panic(
            items in proptest::collection::vec(item(), 0..6),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            max in 0usize..1000,
        ) {
            // Mostly well-formed streams reach deeper states than random bytes.
            let (mut stream, _) = encode_items(&items, 7);
            if !stream.is_empty() {
                for (at, byte) in flips {
                    let at = at.index(stream.len());
                    stream[at] ^= byte;
                }
            }
            let _ = run_chunks(&mut Decoder::new(max, true), chunked(&stream, &sizes));
        }

        #[test]
        fn valid_frames_decode_to_the_original_messages(
            items in proptest::collection::vec(item(), 0..8),
            mask_seed in any::<u64>(),
            sizes in proptest::collection::vec(1usize..200, 1..10),
        ) {
            let (stream, expected) = encode_items(&items, mask_seed);
            let outcome = run_chunks(&mut Decoder::new(BIG, true), chunked(&stream, &sizes));
            prop_assert_eq!(outcome, (expected, None));
        }
    }
}
