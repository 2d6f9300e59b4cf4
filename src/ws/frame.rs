//! RFC 6455 section 5.2: the wire format of one frame header, the encoding
//! of whole frames, and the protocol errors a peer can commit.
//!
//! Owns header parsing (with every check that can be made from the header
//! alone) and frame encoding. Must not keep state across frames: message
//! assembly, masking policy and UTF-8 validation belong to `decoder`. Close
//! codes and limits come from `crate::codes` and are not redefined here.

use std::fmt;

use crate::codes::close::{INVALID_PAYLOAD, PROTOCOL_ERROR, TOO_BIG};
use crate::codes::limits::MAX_CONTROL_PAYLOAD;
use crate::ws::mask::unmask;

/// The longest header a client frame can have: 2 + 8 (64-bit length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;

/// The FIN bit of the first header byte.
const FIN_BIT: u8 = 0x80;
/// RSV1: set on the first frame of a message compressed with
/// permessage-deflate (RFC 7692 6); whether that is allowed is the
/// decoder's call.
const RSV1_BIT: u8 = 0x40;
/// RSV2 and RSV3: no extension the server agrees to uses them, so they
/// must be 0.
const RSV2_RSV3_BITS: u8 = 0x30;
const OPCODE_BITS: u8 = 0x0f;
/// The MASK bit of the second header byte.
const MASK_BIT: u8 = 0x80;
const LEN7_BITS: u8 = 0x7f;
/// 7-bit length values that announce a 16-bit or a 64-bit extended length.
const LEN7_MEANS_16_BIT: u8 = 126;
const LEN7_MEANS_64_BIT: u8 = 127;
/// The largest length the 7-bit field carries directly.
const MAX_LEN7: usize = 125;
const MASK_KEY_LEN: usize = 4;
/// A close payload starts with a 2-byte status code.
const CLOSE_CODE_LEN: usize = 2;

/// The frame opcodes RFC 6455 defines; the others are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    /// Control frames (close, ping, pong) have opcodes with the high bit set.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }

    /// The opcode's 4-bit value on the wire; `None` for reserved values.
    fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xa => Some(Self::Pong),
            _ => None,
        }
    }

    fn to_bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xa,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    /// The masking key, present on client frames.
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes taken by the header, mask included: the payload starts here.
    pub header_len: usize,
    /// RSV1 is set: the message is compressed (permessage-deflate).
    pub compressed: bool,
}

/// A violation of RFC 6455 by the peer. Each one closes the connection with
/// the code given by [`ProtocolError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV2 or RSV3 is set, or RSV1 without permessage-deflate agreed.
    ReservedBits,
    /// RSV1 on a continuation or a control frame: only the first frame of
    /// a data message may say it is compressed (RFC 7692 6.1).
    MisplacedCompressedBit,
    /// An opcode RFC 6455 reserves (0x3-0x7, 0xB-0xF).
    ReservedOpcode,
    /// A control frame with FIN clear.
    FragmentedControl,
    /// A control frame with a payload over 125 bytes.
    ControlTooLong,
    /// A client frame without a mask.
    UnmaskedFrame,
    /// A 64-bit length with its most significant bit set.
    LengthMsbSet,
    /// A length encoded with more bytes than needed.
    NonMinimalLength,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// A close frame with a status code a peer must not send.
    InvalidCloseCode,
    /// A close frame with a 1-byte payload (half a status code).
    InvalidClosePayload,
    /// A close frame whose reason is not UTF-8.
    InvalidCloseReason,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A message over the configured maximum size.
    MessageTooBig,
}

impl ProtocolError {
    /// The close code to send to the peer for this violation.
    pub fn close_code(self) -> u16 {
        match self {
            Self::InvalidUtf8 => INVALID_PAYLOAD,
            Self::MessageTooBig => TOO_BIG,
            // A close reason is part of the framing, not of a text message:
            // it is a protocol error like the rest.
            _ => PROTOCOL_ERROR,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::ReservedBits => "reserved bits set",
            Self::MisplacedCompressedBit => "RSV1 on a continuation or control frame",
            Self::ReservedOpcode => "reserved opcode",
            Self::FragmentedControl => "fragmented control frame",
            Self::ControlTooLong => "control frame payload over 125 bytes",
            Self::UnmaskedFrame => "unmasked client frame",
            Self::LengthMsbSet => "64-bit payload length with the top bit set",
            Self::NonMinimalLength => "payload length not minimally encoded",
            Self::UnexpectedContinuation => "continuation frame without a message in progress",
            Self::ExpectedContinuation => {
                "new data frame while a fragmented message is in progress"
            }
            Self::InvalidCloseCode => "invalid close code",
            Self::InvalidClosePayload => "close payload of 1 byte",
            Self::InvalidCloseReason => "close reason is not UTF-8",
            Self::InvalidUtf8 => "text message is not UTF-8",
            Self::MessageTooBig => "message too big",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for ProtocolError {}

/// Parses a frame header at the start of `buf`. `Ok(None)` when `buf` holds
/// less than the whole header.
///
/// Checks everything the header alone can tell: RSV2 and RSV3 must be 0
/// (RSV1 is reported in `compressed`, for the decoder to judge), no
/// reserved opcodes, control frames are final and at most 125 bytes, a
/// 64-bit length has its top bit clear, and lengths use the minimal
/// encoding (RFC 6455 5.2). Each check is made as soon as the bytes it needs
/// have arrived, so a bad frame is rejected without waiting for the rest.
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    let (fin, opcode) = parse_first_byte(first)?;
    let compressed = first & RSV1_BIT != 0;
    let len7 = second & LEN7_BITS;
    check_control_frame(fin, opcode, len7)?;

    let Some((payload_len, len_end)) = parse_payload_len(len7, buf)? else {
        return Ok(None);
    };
    let masked = second & MASK_BIT != 0;
    let header_len = len_end + if masked { MASK_KEY_LEN } else { 0 };
    let Some(header) = buf.get(..header_len) else {
        return Ok(None);
    };
    let mask = masked.then(|| read_array::<MASK_KEY_LEN>(&header[len_end..]));
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        header_len,
        compressed,
    }))
}

/// FIN and the opcode; rejects RSV2, RSV3 and reserved opcodes.
fn parse_first_byte(first: u8) -> Result<(bool, OpCode), ProtocolError> {
    if first & RSV2_RSV3_BITS != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(first & OPCODE_BITS).ok_or(ProtocolError::ReservedOpcode)?;
    Ok((first & FIN_BIT != 0, opcode))
}

/// RFC 6455 5.5: control frames are never fragmented and carry at most 125
/// bytes, which also means their length always fits the 7-bit field.
fn check_control_frame(fin: bool, opcode: OpCode, len7: u8) -> Result<(), ProtocolError> {
    if !opcode.is_control() {
        return Ok(());
    }
    if !fin {
        return Err(ProtocolError::FragmentedControl);
    }
    if usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::ControlTooLong);
    }
    Ok(())
}

/// The payload length and the offset just after it, or `None` when the
/// extended length has not fully arrived.
fn parse_payload_len(len7: u8, buf: &[u8]) -> Result<Option<(u64, usize)>, ProtocolError> {
    match len7 {
        LEN7_MEANS_16_BIT => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes(read_array(bytes));
            if usize::from(len) <= MAX_LEN7 {
                return Err(ProtocolError::NonMinimalLength);
            }
            Ok(Some((u64::from(len), 4)))
        }
        LEN7_MEANS_64_BIT => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(read_array(bytes));
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthMsbSet);
            }
            if len <= u64::from(u16::MAX) {
                return Err(ProtocolError::NonMinimalLength);
            }
            Ok(Some((len, 10)))
        }
        short => Ok(Some((u64::from(short), 2))),
    }
}

/// Copies the first `N` bytes of `bytes` (callers pass at least `N`) into an
/// array; missing bytes would read as zero rather than panic.
fn read_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0; N];
    for (slot, byte) in array.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    array
}

/// Server frames (unmasked): writes the header for a frame into `out` and
/// returns its length (2, 4 or 10).
pub fn encode_header(fin: bool, opcode: OpCode, payload_len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = if fin { FIN_BIT } else { 0 } | opcode.to_bits();
    encode_payload_len(payload_len, out)
}

/// The length of a whole server frame (unmasked: header and payload)
/// carrying `payload_len` bytes: what it takes in a connection's queue.
#[inline]
pub fn server_frame_len(payload_len: usize) -> usize {
    let mut header = [0; 10];
    encode_payload_len(payload_len, &mut header) + payload_len
}

/// Writes the length fields (byte 1 onwards) of a header with the MASK bit
/// clear; returns the header length so far.
fn encode_payload_len(payload_len: usize, out: &mut [u8; 10]) -> usize {
    if payload_len <= MAX_LEN7 {
        // Fits 7 bits by the check above.
        out[1] = payload_len as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = LEN7_MEANS_16_BIT;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = LEN7_MEANS_64_BIT;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// Server frames of a compressed message: the header of a final frame
/// with RSV1 set (permessage-deflate, RFC 7692 6); returns its length.
pub fn encode_compressed_header(opcode: OpCode, payload_len: usize, out: &mut [u8; 10]) -> usize {
    let header_len = encode_header(true, opcode, payload_len, out);
    out[0] |= RSV1_BIT;
    header_len
}

/// Appends a whole unmasked, final frame (header, then payload) to `out`,
/// reserving once.
pub fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0; 10];
    let header_len = encode_header(true, opcode, payload.len(), &mut header);
    append_frame(&header[..header_len], payload, out);
}

/// Appends a whole unmasked, final frame with RSV1 set: `payload` is a
/// message compressed by `ws::deflate`.
pub fn encode_compressed_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0; 10];
    let header_len = encode_compressed_header(opcode, payload.len(), &mut header);
    append_frame(&header[..header_len], payload, out);
}

fn append_frame(header: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(header.len() + payload.len());
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason`. The reason is truncated
/// on a char boundary so that the payload stays within 125 bytes.
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let reason = truncate_on_char_boundary(reason, MAX_CONTROL_PAYLOAD - CLOSE_CODE_LEN);
    let mut payload = [0; MAX_CONTROL_PAYLOAD];
    payload[..CLOSE_CODE_LEN].copy_from_slice(&code.to_be_bytes());
    let payload_len = CLOSE_CODE_LEN + reason.len();
    payload[CLOSE_CODE_LEN..payload_len].copy_from_slice(reason.as_bytes());
    encode_frame(OpCode::Close, &payload[..payload_len], out);
}

/// The longest prefix of `text` of at most `max_len` bytes that ends on a
/// char boundary.
fn truncate_on_char_boundary(text: &str, max_len: usize) -> &str {
    let mut end = text.len().min(max_len);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Client side (tests, load generator): appends a masked frame.
pub fn encode_masked_frame(
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
    out: &mut Vec<u8>,
) {
    encode_masked(fin, false, opcode, payload, mask, out);
}

/// Client side: appends a masked final frame with RSV1 set, `payload`
/// being a message compressed by `ws::deflate`.
pub fn encode_masked_compressed_frame(
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
    out: &mut Vec<u8>,
) {
    encode_masked(true, true, opcode, payload, mask, out);
}

fn encode_masked(
    fin: bool,
    compressed: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
    out: &mut Vec<u8>,
) {
    let mut header = [0; 10];
    let header_len = encode_header(fin, opcode, payload.len(), &mut header);
    if compressed {
        header[0] |= RSV1_BIT;
    }
    header[1] |= MASK_BIT;
    out.reserve(header_len + MASK_KEY_LEN + payload.len());
    out.extend_from_slice(&header[..header_len]);
    out.extend_from_slice(&mask);
    let payload_start = out.len();
    out.extend_from_slice(payload);
    // Masking is the same XOR as unmasking.
    unmask(&mut out[payload_start..], mask, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_masked_frame(fin, opcode, payload, MASK, &mut out);
        out
    }

    /// Parses `bytes` whole, and checks that every strict prefix is either
    /// "need more" or the same error.
    fn parse_all_prefixes(bytes: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
        let whole = parse_header(bytes);
        for end in 0..bytes.len() {
            match parse_header(&bytes[..end]) {
                Ok(None) => {}
                Ok(Some(header)) => assert!(header.header_len <= end),
                Err(e) => assert_eq!(Err(e), whole, "prefix {end}"),
            }
        }
        whole
    }

    #[test]
    fn opcode_classes() {
        assert!(OpCode::Close.is_control());
        assert!(OpCode::Ping.is_control());
        assert!(OpCode::Pong.is_control());
        assert!(!OpCode::Text.is_control());
        assert!(!OpCode::Binary.is_control());
        assert!(!OpCode::Continuation.is_control());
    }

    #[test]
    fn parses_rfc_example_masked_hello() {
        // RFC 6455 section 5.7.
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let header = parse_all_prefixes(&bytes).unwrap().unwrap();
        assert_eq!(
            header,
            FrameHeader {
                fin: true,
                opcode: OpCode::Text,
                mask: Some(MASK),
                payload_len: 5,
                header_len: 6,
                compressed: false,
            }
        );
    }

    #[test]
    fn needs_more_for_short_input() {
        assert_eq!(parse_header(&[]), Ok(None));
        assert_eq!(parse_header(&[0x82]), Ok(None));
        assert_eq!(parse_header(&[0x82, 0xfe, 0x01]), Ok(None));
        assert_eq!(parse_header(&[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0]), Ok(None));
        assert_eq!(parse_header(&[0x82, 0x80, 1, 2, 3]), Ok(None));
    }

    #[test]
    fn length_encodings_round_trip() {
        for (len, header_len) in [
            (0, 6),
            (1, 6),
            (125, 6),
            (126, 8),
            (65535, 8),
            (65536, 14),
            (100_000, 14),
        ] {
            let bytes = masked(true, OpCode::Binary, &vec![7; len]);
            let header = parse_all_prefixes(&bytes).unwrap().unwrap();
            assert_eq!(header.payload_len, len as u64);
            assert_eq!(header.header_len, header_len);
            assert_eq!(bytes.len(), header_len + len);
        }
    }

    #[test]
    fn server_frame_len_is_what_encoding_appends() {
        for len in [0, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            encode_frame(OpCode::Text, &vec![b'x'; len], &mut out);
            assert_eq!(server_frame_len(len), out.len(), "payload of {len}");
        }
    }

    #[test]
    fn unmasked_header_has_no_mask() {
        let mut out = Vec::new();
        encode_frame(OpCode::Ping, b"hi", &mut out);
        assert_eq!(out, [0x89, 0x02, b'h', b'i']);
        let header = parse_header(&out).unwrap().unwrap();
        assert_eq!(header.mask, None);
        assert_eq!(header.header_len, 2);
    }

    #[test]
    fn rejects_rsv2_and_rsv3_always() {
        for rsv in [0x20, 0x10, 0x30, 0x70, 0x60, 0x50] {
            assert_eq!(
                parse_all_prefixes(&[0x81 | rsv, 0x80, 1, 2, 3, 4]),
                Err(ProtocolError::ReservedBits)
            );
        }
    }

    #[test]
    fn rsv1_is_reported_for_the_decoder_to_judge() {
        for first in [0xc1, 0xc2, 0x40, 0xc9, 0xc0] {
            let header = parse_all_prefixes(&[first, 0x80, 1, 2, 3, 4])
                .unwrap()
                .unwrap();
            assert!(header.compressed, "{first:#x}");
        }
        let plain = parse_header(&[0x81, 0x80, 1, 2, 3, 4]).unwrap().unwrap();
        assert!(!plain.compressed);
    }

    #[test]
    fn compressed_frames_carry_rsv1() {
        let mut out = Vec::new();
        encode_compressed_frame(OpCode::Text, b"\xf2\x48", &mut out);
        assert_eq!(out, [0xc1, 0x02, 0xf2, 0x48]);
        let header = parse_header(&out).unwrap().unwrap();
        assert!(header.compressed && header.fin);
        let mut masked = Vec::new();
        encode_masked_compressed_frame(OpCode::Binary, b"ab", MASK, &mut masked);
        let header = parse_header(&masked).unwrap().unwrap();
        assert!(header.compressed);
        assert_eq!(header.opcode, OpCode::Binary);
        assert_eq!(header.mask, Some(MASK));
    }

    #[test]
    fn rejects_reserved_opcodes() {
        for opcode in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                parse_all_prefixes(&[0x80 | opcode, 0x80, 1, 2, 3, 4]),
                Err(ProtocolError::ReservedOpcode)
            );
        }
    }

    #[test]
    fn rejects_fragmented_control_frames() {
        for opcode in [0x8, 0x9, 0xa] {
            assert_eq!(
                parse_all_prefixes(&[opcode, 0x80, 1, 2, 3, 4]),
                Err(ProtocolError::FragmentedControl)
            );
        }
    }

    #[test]
    fn rejects_long_control_frames() {
        assert_eq!(
            parse_all_prefixes(&[0x89, 0xfe, 0x00, 0x7e, 1, 2, 3, 4]),
            Err(ProtocolError::ControlTooLong)
        );
        assert_eq!(
            parse_all_prefixes(&[0x89, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]),
            Err(ProtocolError::ControlTooLong)
        );
        // 125 is the limit and is fine.
        let ok = masked(true, OpCode::Ping, &[0; 125]);
        assert_eq!(parse_all_prefixes(&ok).unwrap().unwrap().payload_len, 125);
    }

    #[test]
    fn rejects_64_bit_length_with_top_bit() {
        let bytes = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(parse_all_prefixes(&bytes), Err(ProtocolError::LengthMsbSet));
    }

    #[test]
    fn rejects_non_minimal_lengths() {
        let short_in_16 = [0x82, 0xfe, 0x00, 0x7d, 1, 2, 3, 4];
        assert_eq!(
            parse_all_prefixes(&short_in_16),
            Err(ProtocolError::NonMinimalLength)
        );
        let short_in_64 = [0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4];
        assert_eq!(
            parse_all_prefixes(&short_in_64),
            Err(ProtocolError::NonMinimalLength)
        );
        let tiny_in_64 = [0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4];
        assert_eq!(
            parse_all_prefixes(&tiny_in_64),
            Err(ProtocolError::NonMinimalLength)
        );
    }

    #[test]
    fn accepts_largest_legal_64_bit_length() {
        let bytes = [
            0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ];
        let header = parse_all_prefixes(&bytes).unwrap().unwrap();
        assert_eq!(header.payload_len, u64::MAX >> 1);
        assert_eq!(header.header_len, MAX_HEADER_LEN);
    }

    #[test]
    fn encodes_header_lengths() {
        let mut out = [0; 10];
        assert_eq!(encode_header(true, OpCode::Text, 0, &mut out), 2);
        assert_eq!(out[..2], [0x81, 0x00]);
        assert_eq!(encode_header(false, OpCode::Binary, 125, &mut out), 2);
        assert_eq!(out[..2], [0x02, 125]);
        assert_eq!(encode_header(true, OpCode::Binary, 126, &mut out), 4);
        assert_eq!(out[..4], [0x82, 126, 0, 126]);
        assert_eq!(encode_header(true, OpCode::Binary, 65535, &mut out), 4);
        assert_eq!(out[..4], [0x82, 126, 0xff, 0xff]);
        assert_eq!(
            encode_header(true, OpCode::Continuation, 65536, &mut out),
            10
        );
        assert_eq!(out, [0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn encoded_frames_parse_back() {
        for len in [0, 5, 125, 126, 65535, 65536] {
            let payload = vec![0xab; len];
            let mut out = vec![0xee]; // appends, keeps what was there
            encode_frame(OpCode::Binary, &payload, &mut out);
            let header = parse_header(&out[1..]).unwrap().unwrap();
            assert!(header.fin);
            assert_eq!(header.opcode, OpCode::Binary);
            assert_eq!(header.payload_len, len as u64);
            assert_eq!(&out[1 + header.header_len..], &payload[..]);
        }
    }

    #[test]
    fn masked_frame_unmasks_to_payload() {
        let mut bytes = masked(false, OpCode::Text, b"Hello");
        assert_eq!(
            bytes,
            [
                0x01, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let header = parse_header(&bytes).unwrap().unwrap();
        assert!(!header.fin);
        unmask(&mut bytes[header.header_len..], header.mask.unwrap(), 0);
        assert_eq!(&bytes[header.header_len..], b"Hello");
    }

    #[test]
    fn encodes_close_with_reason() {
        let mut out = Vec::new();
        encode_close(1000, "bye", &mut out);
        assert_eq!(out, [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        // 62 two-byte chars = 124 bytes: only 61 of them (122 bytes) fit in
        // the 123 bytes left after the code.
        let reason = "é".repeat(62);
        let mut out = Vec::new();
        encode_close(1001, &reason, &mut out);
        let header = parse_header(&out).unwrap().unwrap();
        assert_eq!(header.payload_len, 124);
        let text = std::str::from_utf8(&out[4..]).unwrap();
        assert_eq!(text, "é".repeat(61));

        let ascii = "x".repeat(200);
        out.clear();
        encode_close(1001, &ascii, &mut out);
        assert_eq!(parse_header(&out).unwrap().unwrap().payload_len, 125);
    }

    #[test]
    fn close_codes_of_errors() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
        assert_eq!(ProtocolError::MessageTooBig.close_code(), 1009);
        assert_eq!(ProtocolError::InvalidCloseReason.close_code(), 1002);
        assert_eq!(ProtocolError::ReservedBits.close_code(), 1002);
        assert_eq!(ProtocolError::MisplacedCompressedBit.close_code(), 1002);
        assert_eq!(
            ProtocolError::UnmaskedFrame.to_string(),
            "unmasked client frame"
        );
    }
}
