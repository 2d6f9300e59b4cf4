//! The compression of permessage-deflate (RFC 7692 section 7.2), sans-IO,
//! with the parameters `extensions` always agrees: no context takeover on
//! either side, so every message is compressed and inflated on its own.
//!
//! - `Deflater::compress` turns one message's payload into the bytes of its
//!   compressed frame (the deflate stream, sync-flushed, less its final
//!   `00 00 ff ff`): computed once per room message, the same bytes go to
//!   every member that agreed to the extension.
//! - `Inflater::inflate` undoes it, and stops as soon as the output would
//!   pass the limit (`--max-message-size`): a small frame that inflates to
//!   gigabytes (a "zip bomb") costs at most the limit and is refused, for
//!   a close with `1009`.
//!
//! Owns the deflate state; the frame headers (RSV1) and the decision to
//! compress are the caller's.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The tail a sync flush ends with, which the frame leaves out (7.2.1).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// How much the output grows per step while inflating.
const STEP: usize = 16 * 1024;

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit: close with 1009.
    TooBig,
    /// Not a valid deflate stream: close with 1007 (invalid payload data).
    Corrupt,
}

impl std::fmt::Display for InflateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InflateError::TooBig => "the message inflates past the size limit",
            InflateError::Corrupt => "the compressed message is not valid deflate data",
        })
    }
}

impl std::error::Error for InflateError {}

/// Compresses messages one at a time (no context takeover).
pub struct Deflater {
    compress: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Self {
            compress: Compress::new(Compression::fast(), false),
        }
    }
}

impl Deflater {
    /// Appends to `out` the compressed payload of a message whose
    /// uncompressed payload is `payload`.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.compress.reset();
        let start = out.len();
        // Room for the worst case (stored blocks: 5 bytes per 64 KiB, and
        // the flush), so that one call compresses and flushes everything.
        out.reserve(payload.len() + payload.len() / 1024 + 64);
        let mut input = payload;
        loop {
            let before_in = self.compress.total_in();
            self.compress
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("compressing into memory cannot fail");
            input = &input[(self.compress.total_in() - before_in) as usize..];
            // Done once all input is in and the flush left spare room.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out[start..].ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
    }
}

/// Inflates messages one at a time (no context takeover), under a limit.
pub struct Inflater {
    decompress: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            decompress: Decompress::new(false),
        }
    }
}

impl Inflater {
    /// Appends to `out` the message `payload` (a compressed frame's payload,
    /// or the frames of a fragmented message joined) inflates to, at most
    /// `limit` bytes; past it, what was appended is left and `TooBig`
    /// returned.
    pub fn inflate(
        &mut self,
        payload: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        self.decompress.reset(false);
        let start = out.len();
        let mut chunk = [0u8; STEP];
        for part in [payload, &SYNC_TAIL[..]] {
            let mut input = part;
            loop {
                let (before_in, before_out) =
                    (self.decompress.total_in(), self.decompress.total_out());
                let status = self
                    .decompress
                    .decompress(input, &mut chunk, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                let used = (self.decompress.total_in() - before_in) as usize;
                let produced = (self.decompress.total_out() - before_out) as usize;
                input = &input[used..];
                if out.len() - start + produced > limit {
                    return Err(InflateError::TooBig);
                }
                out.extend_from_slice(&chunk[..produced]);
                if status == Status::StreamEnd || (input.is_empty() && produced < chunk.len()) {
                    break;
                }
                if used == 0 && produced == 0 {
                    return Err(InflateError::Corrupt);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(message: &[u8]) -> Vec<u8> {
        let mut compressed = Vec::new();
        Deflater::default().compress(message, &mut compressed);
        let mut out = Vec::new();
        Inflater::default()
            .inflate(&compressed, message.len(), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn rfc_7692_examples() {
        // 7.2.3.1: "Hello" compressed without context takeover.
        let mut out = Vec::new();
        Inflater::default()
            .inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out)
            .unwrap();
        assert_eq!(out, b"Hello");
        // 7.2.3.3: a stored (uncompressed) block.
        let mut out = Vec::new();
        Inflater::default()
            .inflate(
                &[
                    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
                ],
                100,
                &mut out,
            )
            .unwrap();
        assert_eq!(out, b"Hello");
        let mut compressed = Vec::new();
        Deflater::default().compress(b"Hello", &mut compressed);
        assert!(!compressed.ends_with(&SYNC_TAIL));
        assert_eq!(round_trip(b"Hello"), b"Hello");
        assert_eq!(round_trip(b""), b"");
    }

    #[test]
    fn a_price_update_shrinks_and_comes_back_whole() {
        let text = br#"{"event":"price:tick","room":"prices:BTC-USD","data":{"bid":67001.5,"ask":67002.0,"venue":"x","ts":1700000000000},"from":"feed","seq":41,"ts":1700000000000}"#.repeat(6);
        let mut compressed = Vec::new();
        Deflater::default().compress(&text, &mut compressed);
        assert!(
            compressed.len() < text.len() / 3,
            "{} of {}",
            compressed.len(),
            text.len()
        );
        assert_eq!(round_trip(&text), text);
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 20 * 1024 * 1024];
        let mut bomb = Vec::new();
        Deflater::default().compress(&zeros, &mut bomb);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        let mut out = Vec::new();
        let limit = 64 * 1024;
        assert_eq!(
            Inflater::default().inflate(&bomb, limit, &mut out),
            Err(InflateError::TooBig)
        );
        assert!(
            out.len() <= limit,
            "at most the limit is inflated: {}",
            out.len()
        );
        assert!(out.capacity() <= limit + 2 * STEP, "{}", out.capacity());
    }

    #[test]
    fn garbage_is_refused_as_corrupt() {
        let mut out = Vec::new();
        assert_eq!(
            Inflater::default().inflate(&[0xff; 16], 1024, &mut out),
            Err(InflateError::Corrupt)
        );
    }

    proptest! {
        #[test]
        fn any_message_round_trips(message in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            prop_assert_eq!(round_trip(&message), message);
        }

        #[test]
        fn any_input_inflates_or_is_refused_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let mut out = Vec::new();
            let _ = Inflater::default().inflate(&bytes, 4096, &mut out);
            prop_assert!(out.len() <= 4096);
        }
    }
}
