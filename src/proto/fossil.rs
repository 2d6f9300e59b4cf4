//! Fossil deltas (section 14, `data.delta`): the encoder the server uses to
//! send a room event as the change from the previous one, and the applier
//! that is its reference (tests, fuzzing, the clients' oracle).
//!
//! The format is Fossil SCM's (`delta.c`), as Centrifugo and the npm package
//! `fossil-delta` use it: `<target length>\n`, then commands `<n>@<offset>,`
//! (copy `n` bytes of the source from `offset`) and `<n>:<n bytes>` (insert
//! bytes), then `<checksum>;`. Numbers are written in Fossil's base 64
//! (`0-9A-Z_a-z~`, most significant digit first); the checksum is the sum of
//! the target's big-endian 32-bit words, the last one padded with zeros.
//!
//! The encoder is `delta.c`'s: the source is indexed by the rolling hash of
//! its aligned 16-byte blocks and the target scanned with the same hash; a
//! match is taken when it is longer than the command that copies it. Bytes
//! are hashed unsigned, as the Go and JavaScript ports do (C's `char` may be
//! signed), which changes which matches are found, never the format.

/// Bytes in a hashed block.
const NHASH: usize = 16;

/// Candidate blocks examined per hash bucket, as in `delta.c`: bounds the
/// encoder's work on sources with many equal blocks.
const SEARCH_LIMIT: usize = 250;

const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// Why a delta does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyError {
    /// The target length is not followed by `\n`.
    BadHeader,
    /// A copy command lacks its `,`.
    CopyUnterminated,
    /// A copy reaches past the end of the source.
    CopyOutOfSource,
    /// The commands produce more bytes than the header announces.
    TooLong,
    /// An insert count exceeds what is left of the delta.
    InsertPastEnd,
    /// A command character other than `@`, `:` or `;`.
    UnknownOperator,
    /// The checksum does not match the produced target.
    BadChecksum,
    /// The commands produce fewer bytes than the header announces.
    TooShort,
    /// The delta ends before its checksum.
    Unterminated,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Self::BadHeader => "size integer not terminated by newline",
            Self::CopyUnterminated => "copy command not terminated by ','",
            Self::CopyOutOfSource => "copy extends past end of input",
            Self::TooLong => "output larger than predicted",
            Self::InsertPastEnd => "insert count exceeds size of delta",
            Self::UnknownOperator => "unknown delta operator",
            Self::BadChecksum => "bad checksum",
            Self::TooShort => "generated size does not match predicted size",
            Self::Unterminated => "unterminated delta",
        };
        f.write_str(text)
    }
}

impl std::error::Error for ApplyError {}

/// Fossil's checksum of `data`.
pub fn checksum(data: &[u8]) -> u32 {
    data.chunks(4).fold(0u32, |sum, word| {
        let mut be = [0u8; 4];
        be[..word.len()].copy_from_slice(word);
        sum.wrapping_add(u32::from_be_bytes(be))
    })
}

fn put_int(mut v: u64, out: &mut Vec<u8>) {
    if v == 0 {
        out.push(b'0');
        return;
    }
    let mut buf = [0u8; 11];
    let mut i = buf.len();
    while v > 0 {
        i -= 1;
        buf[i] = DIGITS[(v & 63) as usize];
        v >>= 6;
    }
    out.extend_from_slice(&buf[i..]);
}

fn digit_count(v: usize) -> usize {
    let mut n = 1;
    let mut x = v >> 6;
    while x > 0 {
        n += 1;
        x >>= 6;
    }
    n
}

fn digit_value(c: u8) -> Option<u64> {
    let v = match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'Z' => c - b'A' + 10,
        b'_' => 36,
        b'a'..=b'z' => c - b'a' + 37,
        b'~' => 63,
        _ => return None,
    };
    Some(u64::from(v))
}

/// Reads a number at `*pos`; a number too large for any length saturates,
/// so that the bounds checks after it refuse it.
fn get_int(delta: &[u8], pos: &mut usize) -> u64 {
    let mut v: u64 = 0;
    while let Some(d) = delta.get(*pos).copied().and_then(digit_value) {
        v = v.saturating_mul(64).saturating_add(d);
        *pos += 1;
    }
    v
}

/// The rolling hash of a 16-byte window (`delta.c`'s Adler-like pair).
struct Hash {
    a: u16,
    b: u16,
    i: usize,
    z: [u8; NHASH],
}

impl Hash {
    fn new(window: &[u8]) -> Self {
        let mut z = [0u8; NHASH];
        z.copy_from_slice(&window[..NHASH]);
        let mut a = u16::from(z[0]);
        let mut b = a;
        for &c in &z[1..] {
            a = a.wrapping_add(u16::from(c));
            b = b.wrapping_add(a);
        }
        Self { a, b, i: 0, z }
    }

    fn next(&mut self, c: u8) {
        let old = u16::from(self.z[self.i]);
        self.z[self.i] = c;
        self.i = (self.i + 1) & (NHASH - 1);
        self.a = self.a.wrapping_sub(old).wrapping_add(u16::from(c));
        self.b = self
            .b
            .wrapping_sub((NHASH as u16).wrapping_mul(old))
            .wrapping_add(self.a);
    }

    fn value(&self) -> u32 {
        u32::from(self.a) | (u32::from(self.b) << 16)
    }
}

fn put_insert(bytes: &[u8], out: &mut Vec<u8>) {
    put_int(bytes.len() as u64, out);
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// The delta that turns `source` into `target`.
pub fn encode(source: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() / 4 + 32);
    put_int(target.len() as u64, &mut out);
    out.push(b'\n');
    if source.len() <= NHASH {
        put_insert(target, &mut out);
        put_int(u64::from(checksum(target)), &mut out);
        out.push(b';');
        return out;
    }
    // Index the source's aligned blocks: `landmark[h]` is the last block with
    // hash `h`, `collide[b]` the block before `b` with the same hash.
    // Rounded up, as the JavaScript port does, so that both write the same
    // delta (Fossil's C rounds down; the format does not depend on it).
    let n_hash = source.len().div_ceil(NHASH);
    let mut collide = vec![usize::MAX; n_hash];
    let mut landmark = vec![usize::MAX; n_hash];
    let mut i = 0;
    while i < source.len() - NHASH {
        let hv = Hash::new(&source[i..]).value() as usize % n_hash;
        collide[i / NHASH] = landmark[hv];
        landmark[hv] = i / NHASH;
        i += NHASH;
    }

    let mut base = 0;
    while base + NHASH < target.len() {
        let mut hash = Hash::new(&target[base..]);
        let mut i = 0;
        loop {
            let mut best: Option<(usize, usize, usize)> = None; // (count, offset, literal)
            let mut block = landmark[hash.value() as usize % n_hash];
            let mut limit = SEARCH_LIMIT;
            while block != usize::MAX && limit > 0 {
                limit -= 1;
                let src = block * NHASH;
                let forward = source[src..]
                    .iter()
                    .zip(&target[base + i..])
                    .take_while(|(a, b)| a == b)
                    .count();
                let backward = (1..=i.min(src.saturating_sub(1)))
                    .take_while(|&k| source[src - k] == target[base + i - k])
                    .count();
                let count = forward + backward;
                let literal = i - backward;
                let offset = src - backward;
                let cost = digit_count(literal) + digit_count(count) + digit_count(offset) + 3;
                if count >= cost && count > best.map_or(0, |b| b.0) {
                    best = Some((count, offset, literal));
                }
                block = collide[block];
            }
            if let Some((count, offset, literal)) = best {
                if literal > 0 {
                    put_insert(&target[base..base + literal], &mut out);
                    base += literal;
                }
                base += count;
                put_int(count as u64, &mut out);
                out.push(b'@');
                put_int(offset as u64, &mut out);
                out.push(b',');
                break;
            }
            if base + i + NHASH >= target.len() {
                put_insert(&target[base..], &mut out);
                base = target.len();
                break;
            }
            hash.next(target[base + i + NHASH]);
            i += 1;
        }
    }
    if base < target.len() {
        put_insert(&target[base..], &mut out);
    }
    put_int(u64::from(checksum(target)), &mut out);
    out.push(b';');
    out
}

/// The target length a delta announces, before applying it: lets a caller
/// refuse a delta whose output it will not hold.
pub fn target_len(delta: &[u8]) -> Result<u64, ApplyError> {
    let mut pos = 0;
    let len = get_int(delta, &mut pos);
    if delta.get(pos) != Some(&b'\n') {
        return Err(ApplyError::BadHeader);
    }
    Ok(len)
}

/// Applies `delta` to `source`; the output never exceeds the announced
/// length, which is at most `max_len`.
pub fn apply(source: &[u8], delta: &[u8], max_len: usize) -> Result<Vec<u8>, ApplyError> {
    let mut pos = 0;
    let limit = get_int(delta, &mut pos);
    if delta.get(pos) != Some(&b'\n') {
        return Err(ApplyError::BadHeader);
    }
    pos += 1;
    if limit > max_len as u64 {
        return Err(ApplyError::TooLong);
    }
    let limit = limit as usize;
    let mut out = Vec::with_capacity(limit);
    while pos < delta.len() {
        let count = get_int(delta, &mut pos);
        let op = delta.get(pos).copied();
        pos += 1;
        match op {
            Some(b'@') => {
                let offset = get_int(delta, &mut pos);
                if delta.get(pos) != Some(&b',') {
                    return Err(ApplyError::CopyUnterminated);
                }
                pos += 1;
                if count > (limit - out.len()) as u64 {
                    return Err(ApplyError::TooLong);
                }
                let end = offset.saturating_add(count);
                if end > source.len() as u64 {
                    return Err(ApplyError::CopyOutOfSource);
                }
                out.extend_from_slice(&source[offset as usize..end as usize]);
            }
            Some(b':') => {
                if count > (limit - out.len()) as u64 {
                    return Err(ApplyError::TooLong);
                }
                if count > (delta.len() - pos) as u64 {
                    return Err(ApplyError::InsertPastEnd);
                }
                let end = pos + count as usize;
                out.extend_from_slice(&delta[pos..end]);
                pos = end;
            }
            Some(b';') => {
                if count != u64::from(checksum(&out)) {
                    return Err(ApplyError::BadChecksum);
                }
                if out.len() != limit {
                    return Err(ApplyError::TooShort);
                }
                return Ok(out);
            }
            _ => return Err(ApplyError::UnknownOperator),
        }
    }
    Err(ApplyError::Unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(a: &[u8], b: &[u8]) -> Vec<u8> {
        let d = encode(a, b);
        assert_eq!(apply(a, &d, b.len()).as_deref(), Ok(b), "delta {d:?}");
        d
    }

    #[test]
    fn numbers_use_fossils_digits() {
        let mut out = Vec::new();
        for v in [0u64, 9, 10, 35, 36, 37, 62, 63, 64, 4095, 4096] {
            out.clear();
            put_int(v, &mut out);
            let mut pos = 0;
            assert_eq!(get_int(&out, &mut pos), v);
            assert_eq!(pos, out.len());
            assert_eq!(digit_count(v as usize), out.len());
        }
        out.clear();
        put_int(36, &mut out);
        assert_eq!(out, b"_");
        out.clear();
        put_int(63, &mut out);
        assert_eq!(out, b"~");
        out.clear();
        put_int(64, &mut out);
        assert_eq!(out, b"10");
    }

    #[test]
    fn checksum_sums_big_endian_words() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(b"\x01"), 0x0100_0000);
        assert_eq!(checksum(b"\x00\x00\x00\x01\x00\x00\x01"), 0x0000_0101);
        assert_eq!(checksum(&[0xff; 8]), 0xffff_fffe);
    }

    #[test]
    fn a_short_source_gives_one_insert() {
        // Header, one insert of the whole target, checksum.
        let d = round_trip(b"abc", b"hello");
        let mut want = b"5\n5:hello".to_vec();
        put_int(u64::from(checksum(b"hello")), &mut want);
        want.push(b';');
        assert_eq!(d, want);
    }

    #[test]
    fn a_small_change_gives_a_small_delta() {
        let a = br#"{"symbol":"ACME","bid":101.25,"ask":101.5,"volume":123456,"venue":"XNAS","currency":"USD","ts":1700000000}"#;
        let b = br#"{"symbol":"ACME","bid":101.27,"ask":101.5,"volume":123460,"venue":"XNAS","currency":"USD","ts":1700000001}"#;
        let d = round_trip(a, b);
        assert!(d.len() * 2 < b.len(), "{}", String::from_utf8_lossy(&d));
        assert!(d.contains(&b'@'));
    }

    #[test]
    fn known_delta_applies() {
        // Written by hand from the format: copy 16 bytes at 0, insert "!".
        let src = b"0123456789abcdef";
        let target = b"0123456789abcdef!";
        let mut d = b"H\nG@0,1:!".to_vec();
        put_int(u64::from(checksum(target)), &mut d);
        d.push(b';');
        assert_eq!(apply(src, &d, 100).unwrap(), target);
    }

    #[test]
    fn bad_deltas_are_refused() {
        let src = b"0123456789abcdef";
        assert_eq!(apply(src, b"", 10), Err(ApplyError::BadHeader));
        assert_eq!(apply(src, b"3", 10), Err(ApplyError::BadHeader));
        assert_eq!(apply(src, b"3\n", 10), Err(ApplyError::Unterminated));
        assert_eq!(apply(src, b"3\n3@0", 10), Err(ApplyError::CopyUnterminated));
        assert_eq!(apply(src, b"3\n3@H,", 10), Err(ApplyError::CopyOutOfSource));
        assert_eq!(apply(src, b"3\n4@0,", 10), Err(ApplyError::TooLong));
        assert_eq!(apply(src, b"3\n3:ab", 10), Err(ApplyError::InsertPastEnd));
        assert_eq!(apply(src, b"3\n3!", 10), Err(ApplyError::UnknownOperator));
        assert_eq!(apply(src, b"3\n3:abc0;", 10), Err(ApplyError::BadChecksum));
        assert_eq!(apply(src, b"B\n", 10), Err(ApplyError::TooLong));
        let sum = checksum(b"ab");
        let mut d = b"3\n2:ab".to_vec();
        put_int(u64::from(sum), &mut d);
        d.push(b';');
        assert_eq!(apply(src, &d, 10), Err(ApplyError::TooShort));
        assert_eq!(
            apply(src, b"3\n~~~~~~~~~~~~~~~@~~~~~~~~~~~~~~,", 10),
            Err(ApplyError::TooLong)
        );
        assert_eq!(target_len(b"G\n"), Ok(16));
    }

    #[test]
    fn edge_cases_round_trip() {
        round_trip(b"", b"");
        round_trip(b"", b"x");
        round_trip(b"abcdefghijklmnopqrstuvwxyz", b"");
        let long = b"abcdefghijklmnopqrstuvwxyz0123456789".repeat(20);
        round_trip(&long, &long);
        let mut shifted = b"prefix".to_vec();
        shifted.extend_from_slice(&long);
        let d = round_trip(&long, &shifted);
        assert!(d.len() < 40, "{}", String::from_utf8_lossy(&d));
        round_trip(&[0u8; 1000], &[0u8; 1500]);
        round_trip("é€😀".repeat(30).as_bytes(), "é€😀!".repeat(30).as_bytes());
    }

    fn similar() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        (
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::collection::vec(
                (
                    any::<usize>(),
                    0usize..20,
                    proptest::collection::vec(any::<u8>(), 0..8),
                ),
                0..6,
            ),
        )
            .prop_map(|(a, edits)| {
                let mut b = a.clone();
                for (at, cut, insert) in edits {
                    let at = if b.is_empty() { 0 } else { at % b.len() };
                    let cut = cut.min(b.len() - at);
                    b.splice(at..at + cut, insert);
                }
                (a, b)
            })
    }

    proptest! {
        #[test]
        fn encode_then_apply_gives_the_target((a, b) in similar()) {
            let d = encode(&a, &b);
            prop_assert_eq!(apply(&a, &d, b.len()), Ok(b));
        }

        #[test]
        fn unrelated_bytes_round_trip(a in proptest::collection::vec(any::<u8>(), 0..300), b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let d = encode(&a, &b);
            prop_assert_eq!(apply(&a, &d, b.len()), Ok(b));
        }

        #[test]
        fn apply_never_exceeds_its_bound(a in proptest::collection::vec(any::<u8>(), 0..64), d in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..64) {
            if let Ok(out) = apply(&a, &d, max) {
                prop_assert!(out.len() <= max);
            }
        }
    }
}
