//! RFC 6455 section 5.3: the XOR masking of client frame payloads.
//!
//! Owns only the byte transform (masking and unmasking are the same XOR).
//! Must not know about frame headers, buffers or connections: callers pass
//! the payload bytes they have and where those bytes sit in the payload.

/// XORs `payload` with `mask`, where `payload[0]` is byte number `offset` of
/// the frame payload (so the mask phase is `offset % 4`).
///
/// Works a machine word (u64) at a time with safe code: the mask is rotated
/// to the phase of `payload[0]` and repeated to 8 bytes, then every full
/// 8-byte chunk is XORed as one word. The compiler turns this loop into
/// SIMD, so no `unsafe` alignment tricks are needed.
pub fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let phased = rotate_to_phase(mask, offset);
    let word_mask = u64::from_ne_bytes(repeat_to_word(phased));

    let (words, tail) = payload.as_chunks_mut::<8>();
    for word in words {
        // Native endianness both ways: the byte order of the mask word is the
        // byte order of the data word, whatever the machine.
        *word = (u64::from_ne_bytes(*word) ^ word_mask).to_ne_bytes();
    }
    // Each word is 8 bytes, a multiple of 4, so the tail starts at phase 0
    // of `phased`.
    for (byte, key) in tail.iter_mut().zip(phased.iter().cycle()) {
        *byte ^= key;
    }
}

/// The mask as seen from payload byte `offset`: `result[i] = mask[(offset + i) % 4]`.
fn rotate_to_phase(mask: [u8; 4], offset: usize) -> [u8; 4] {
    let mut phased = mask;
    phased.rotate_left(offset % 4);
    phased
}

/// Repeats a 4-byte mask to fill a u64.
fn repeat_to_word(mask: [u8; 4]) -> [u8; 8] {
    [
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC's definition, one byte at a time.
    fn reference_unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[(offset + i) % 4];
        }
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn matches_reference_for_all_small_lengths_and_offsets() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..70 {
            for offset in 0..8 {
                let mut fast = sample(len);
                let mut slow = sample(len);
                unmask(&mut fast, mask, offset);
                reference_unmask(&mut slow, mask, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn masking_twice_is_identity() {
        let original = sample(1000);
        let mut data = original.clone();
        unmask(&mut data, [1, 2, 3, 4], 3);
        assert_ne!(data, original);
        unmask(&mut data, [1, 2, 3, 4], 3);
        assert_eq!(data, original);
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_at_once() {
        let mask = [0xa1, 0xb2, 0xc3, 0xd4];
        let mut whole = sample(100);
        unmask(&mut whole, mask, 0);
        for split in 0..=100 {
            let mut pieces = sample(100);
            let (head, rest) = pieces.split_at_mut(split);
            unmask(head, mask, 0);
            unmask(rest, mask, split);
            assert_eq!(pieces, whole, "split {split}");
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 section 5.7: a masked "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn empty_payload_is_fine() {
        unmask(&mut [], [1, 2, 3, 4], 5);
    }
}
