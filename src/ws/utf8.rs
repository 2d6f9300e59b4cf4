//! Incremental UTF-8 validation for text messages that arrive in pieces
//! (split across socket reads and across fragments).
//!
//! Owns only the validation state (the carry of one unfinished code point).
//! Must not know about frames or buffers; the decoder feeds it bytes in
//! order and tells it when the message ends.

use std::fmt;

/// The longest UTF-8 encoding of one code point.
const MAX_CODE_POINT_LEN: usize = 4;

/// Incremental UTF-8 validator for text split across reads and fragments:
/// fails as soon as the bytes seen so far cannot be a prefix of valid UTF-8.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a code point whose remaining bytes have not arrived yet.
    /// Always a valid prefix of some code point, so at most 3 bytes long.
    carry: [u8; MAX_CODE_POINT_LEN],
    /// At most 3; a `u8` so that the validator, which every connection's
    /// frame decoder holds, is 5 bytes rather than 16.
    carry_len: u8,
}

/// The bytes are not (a prefix of) valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid UTF-8")
    }
}

impl std::error::Error for InvalidUtf8 {}

impl Utf8Validator {
    /// Validates the next bytes of the message.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), InvalidUtf8> {
        let rest = self.complete_carry(chunk)?;
        self.validate_and_keep_tail(rest)
    }

    /// The message ended: an unfinished code point is invalid. Resets the
    /// validator.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let unfinished = self.carry_len != 0;
        self.reset();
        if unfinished { Err(InvalidUtf8) } else { Ok(()) }
    }

    /// Forgets any carried bytes, ready for a new message.
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }

    /// Moves bytes from the front of `chunk` into the carry until the carried
    /// code point is complete (or `chunk` runs out), checks it, and returns
    /// the bytes of `chunk` that follow it.
    fn complete_carry<'c>(&mut self, chunk: &'c [u8]) -> Result<&'c [u8], InvalidUtf8> {
        let carried = usize::from(self.carry_len);
        if carried == 0 {
            return Ok(chunk);
        }
        let width = sequence_width(self.carry[0]);
        let wanted = width.saturating_sub(carried).min(chunk.len());
        let (head, rest) = chunk.split_at(wanted);
        let end = carried + wanted;
        self.carry[carried..end].copy_from_slice(head);
        self.set_carry_len(end);

        match std::str::from_utf8(&self.carry[..end]) {
            Ok(_) => {
                self.carry_len = 0;
                Ok(rest)
            }
            // A valid but unfinished prefix is only possible when the chunk
            // ran out before the code point's width was reached.
            Err(e) if e.error_len().is_none() && end < width => Ok(rest),
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Validates `bytes`, which start on a code point boundary, and keeps an
    /// unfinished last code point for the next call.
    fn validate_and_keep_tail(&mut self, bytes: &[u8]) -> Result<(), InvalidUtf8> {
        let Err(error) = std::str::from_utf8(bytes) else {
            return Ok(());
        };
        // `error_len() == None` means the input ended inside a sequence that
        // is still a valid prefix; anything else is already invalid.
        if error.error_len().is_some() {
            return Err(InvalidUtf8);
        }
        let tail = &bytes[error.valid_up_to()..];
        if tail.len() >= MAX_CODE_POINT_LEN {
            return Err(InvalidUtf8);
        }
        self.carry[..tail.len()].copy_from_slice(tail);
        self.set_carry_len(tail.len());
        Ok(())
    }

    /// `len` is at most `MAX_CODE_POINT_LEN`, so it fits the `u8`.
    fn set_carry_len(&mut self, len: usize) {
        debug_assert!(len <= MAX_CODE_POINT_LEN);
        self.carry_len = len as u8;
    }
}

/// How many bytes a sequence starting with `lead` has. Only called on the
/// first byte of a carry, which std has already accepted as a lead byte.
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_pieces(pieces: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut validator = Utf8Validator::default();
        for piece in pieces {
            validator.feed(piece)?;
        }
        validator.finish()
    }

    fn feed_split_everywhere(bytes: &[u8]) {
        let expected = std::str::from_utf8(bytes).is_ok();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                feed_pieces(&[a, b]).is_ok(),
                expected,
                "{bytes:02x?} at {split}"
            );
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            feed_pieces(&one_by_one).is_ok(),
            expected,
            "{bytes:02x?} bytewise"
        );
    }

    #[test]
    fn accepts_valid_text_split_anywhere() {
        feed_split_everywhere("héllo wörld € 𝄞 κόσμε".as_bytes());
        feed_split_everywhere(b"");
        feed_split_everywhere("\u{10ffff}\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}".as_bytes());
    }

    #[test]
    fn rejects_invalid_text_split_anywhere() {
        for bad in [
            &b"\xff"[..],
            b"abc\xc0\xafdef",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xe2\x82",
            b"ok\xf0\x9f\x98",
            b"\x80",
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        ] {
            feed_split_everywhere(bad);
        }
    }

    #[test]
    fn fails_fast_on_impossible_prefixes() {
        // Each of these is unfinished, yet no continuation can make it valid.
        for prefix in [
            &b"\xf4\x90"[..],
            b"\xe0\x80",
            b"\xed\xa0",
            b"\xf5",
            b"\xc0",
            b"\xf0\x80",
        ] {
            let mut whole = Utf8Validator::default();
            assert_eq!(whole.feed(prefix), Err(InvalidUtf8), "{prefix:02x?}");
            let mut split = Utf8Validator::default();
            assert_eq!(
                split.feed(&prefix[..1]).is_ok(),
                prefix.len() > 1,
                "{prefix:02x?}"
            );
            if prefix.len() > 1 {
                assert_eq!(split.feed(&prefix[1..]), Err(InvalidUtf8), "{prefix:02x?}");
            }
        }
    }

    #[test]
    fn unfinished_code_point_is_accepted_until_finish() {
        let mut validator = Utf8Validator::default();
        assert_eq!(validator.feed(b"a\xf0\x9f"), Ok(()));
        assert_eq!(validator.finish(), Err(InvalidUtf8));
        // finish() reset the validator.
        assert_eq!(validator.feed(b"abc"), Ok(()));
        assert_eq!(validator.finish(), Ok(()));
    }

    #[test]
    fn reset_forgets_the_carry() {
        let mut validator = Utf8Validator::default();
        assert_eq!(validator.feed(b"\xe2\x82"), Ok(()));
        validator.reset();
        assert_eq!(validator.feed(b"abc"), Ok(()));
        assert_eq!(validator.finish(), Ok(()));
    }

    #[test]
    fn empty_chunks_keep_the_carry() {
        assert_eq!(feed_pieces(&[b"\xe2", b"", b"\x82", b"", b"\xac"]), Ok(()));
    }

    fn arbitrary_text_like_bytes() -> impl Strategy<Value = Vec<u8>> {
        // Mostly valid text with some random bytes mixed in, so both outcomes
        // are exercised.
        prop_oneof![
            any::<String>().prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..40),
            (any::<String>(), any::<u8>(), any::<prop::sample::Index>()).prop_map(
                |(text, byte, at)| {
                    let mut bytes = text.into_bytes();
                    let at = at.index(bytes.len() + 1);
                    bytes.insert(at, byte);
                    bytes
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn matches_std_on_random_splits(
            bytes in arbitrary_text_like_bytes(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for point in points {
                pieces.push(&bytes[start..point]);
                start = point;
            }
            pieces.push(&bytes[start..]);
            prop_assert_eq!(feed_pieces(&pieces).is_ok(), std::str::from_utf8(&bytes).is_ok());
        }
    }
}
