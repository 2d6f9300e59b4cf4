//! The hasher of the maps keyed by room names and looked up on every
//! message (room name → room, on the owner and on each member shard): a
//! keyed folded-multiply hash, the construction of wyhash and foldhash, in
//! place of std's SipHash-1-3. (Maps keyed by connection keys, which the
//! shard picks, use `rooms::keys` and need no key.)
//!
//! Room names are chosen by clients, so these maps must keep resisting
//! HashDoS: the two 64-bit keys are drawn once per process from std's
//! randomly seeded `RandomState`, and every input word is mixed with a key
//! before a 64×64→128-bit multiply whose halves are folded together. An
//! attacker who cannot see the keys (they never leave the process, and
//! iteration order is never sent to a client) cannot aim many names at one
//! bucket. What it gives up against SipHash is a proof of pseudo-randomness,
//! not the key: the same trade hashbrown's own default (foldhash) makes.
//!
//! This module owns only hashing; it must not know what the maps hold.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// A `HashMap` with [`RoomHash`].
pub type FastMap<K, V> = HashMap<K, V, RoomHash>;
/// A `HashSet` with [`RoomHash`].
pub type FastSet<K> = HashSet<K, RoomHash>;

/// Odd constants from the digits of pi (as wyhash), so that a zero key or
/// input still multiplies by something dense.
const PI: [u64; 2] = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344];

/// Builds [`FoldHasher`]s with this process's keys.
#[derive(Debug, Clone, Copy)]
pub struct RoomHash {
    keys: [u64; 2],
}

impl Default for RoomHash {
    fn default() -> Self {
        static KEYS: OnceLock<[u64; 2]> = OnceLock::new();
        let keys = *KEYS.get_or_init(|| {
            let random = std::collections::hash_map::RandomState::new();
            [random.hash_one(PI[0]) | 1, random.hash_one(PI[1]) | 1]
        });
        RoomHash { keys }
    }
}

impl BuildHasher for RoomHash {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        // Zero, not a key: the first word is xored with `keys[0]`, and a
        // state of `keys[0]` would cancel it (a zero first word would then
        // zero the product whatever followed).
        FoldHasher {
            state: 0,
            keys: self.keys,
        }
    }
}

/// One hash in progress; see the module docs.
#[derive(Debug, Clone)]
pub struct FoldHasher {
    state: u64,
    keys: [u64; 2],
}

/// The full product of `a` and `b`, its two halves xored together.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

impl FoldHasher {
    #[inline]
    fn mix(&mut self, a: u64, b: u64) {
        self.state = folded_multiply(self.state ^ a ^ self.keys[0], b ^ self.keys[1] ^ PI[1]);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        let (a, b) = if len <= 16 {
            short_words(bytes)
        } else {
            let (body, _) = bytes.split_at(len - 16);
            for chunk in body.chunks(16) {
                let (a, b) = short_words(chunk);
                self.mix(a, b);
            }
            short_words(&bytes[len - 16..])
        };
        // The length tells apart inputs whose overlapping words agree.
        self.mix(a ^ len as u64, b);
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n, PI[0]);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.state ^ self.keys[1], PI[0] ^ self.keys[0])
    }
}

/// Up to 16 bytes as two words, read without a copy loop: two
/// overlapping reads cover 4 to 16 bytes, three single bytes cover 1 to 3.
#[inline]
fn short_words(bytes: &[u8]) -> (u64, u64) {
    let len = bytes.len();
    if len >= 8 {
        (read_u64(bytes, 0), read_u64(bytes, len - 8))
    } else if len >= 4 {
        (read_u32(bytes, 0), read_u32(bytes, len - 4))
    } else if len > 0 {
        let spread = u64::from(bytes[0]) << 16 | u64::from(bytes[len / 2]) << 8;
        (spread | u64::from(bytes[len - 1]), 0)
    } else {
        (0, 0)
    }
}

#[inline]
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[inline]
fn read_u32(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u64::from(u32::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_str(build: &RoomHash, s: &str) -> u64 {
        build.hash_one(s)
    }

    #[test]
    fn equal_keys_hash_equal_and_near_keys_differ() {
        let build = RoomHash::default();
        assert_eq!(hash_str(&build, "room-1"), hash_str(&build, "room-1"));
        let names = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "room-1",
            "room-2",
            "room-10",
            "room-01",
            "0123456789abcdef",
            "0123456789abcdeg",
            "0123456789abcdef0",
        ];
        let hashes: FastSet<u64> = names.iter().map(|n| hash_str(&build, n)).collect();
        assert_eq!(hashes.len(), names.len());
    }

    #[test]
    fn a_split_between_writes_does_not_collide() {
        let build = RoomHash::default();
        let hash = |parts: &[&[u8]]| {
            let mut h = build.build_hasher();
            parts.iter().for_each(|p| h.write(p));
            h.finish()
        };
        assert_ne!(hash(&[b"ab", b""]), hash(&[b"a", b"b"]));
        assert_ne!(hash(&[b"\0"]), hash(&[b""]));
        // A zero first word must not zero the product and lose the rest.
        assert_ne!(hash(&[&[0; 16]]), hash(&[&[[0; 8], [1; 8]].concat()]));
    }

    #[test]
    fn the_keys_are_random_not_constant() {
        let keys = RoomHash::default().keys;
        // Not the all-zero or the bare constants: drawn from RandomState.
        assert_ne!(keys, [PI[0] | 1, PI[1] | 1]);
        assert!(keys[0] & 1 == 1 && keys[1] & 1 == 1);
        assert_ne!(keys[0], keys[1]);
    }

    #[test]
    fn sequential_names_spread_over_the_low_bits() {
        // hashbrown picks buckets by the low bits: 10,000 room names
        // should use nearly all of 16,384 buckets' worth of low 14 bits.
        let build = RoomHash::default();
        let buckets: FastSet<u64> = (0..10_000)
            .map(|i| hash_str(&build, &format!("room-{i}")) & 0x3fff)
            .collect();
        assert!(buckets.len() > 7_000, "{} buckets", buckets.len());
    }
}
