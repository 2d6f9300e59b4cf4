//! `KeyMap`: a hash map keyed by a shard's connection keys (slab keys), for
//! state looked up once per member on the fan-out path.
//!
//! The std map's SipHash guards against keys chosen to collide; a slab key
//! is chosen by the shard (the lowest free slot), never by a client, so a
//! multiply by an odd constant is enough: it is a bijection of the key's
//! low bits (which pick the bucket: dense keys land in distinct ones) and
//! mixes them into the high bits (the map's tag bits). Owns no state of its
//! own.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from connection keys to `V`.
pub type KeyMap<V> = HashMap<usize, V, BuildHasherDefault<KeyHasher>>;

/// Hashes one `usize` key by a multiply (Fibonacci hashing).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `usize` keys; folds anything else in all the same.
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_usize(&mut self, key: usize) {
        self.write_u64(key as u64);
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = (self.0.rotate_left(5) ^ key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn dense_keys_get_distinct_buckets_and_spread_tags() {
        let build = BuildHasherDefault::<KeyHasher>::default();
        let hashes: Vec<u64> = (0..1024usize).map(|k| build.hash_one(k)).collect();
        let mut buckets: Vec<u64> = hashes.iter().map(|h| h & 1023).collect();
        buckets.sort_unstable();
        buckets.dedup();
        assert_eq!(buckets.len(), 1024, "the low bits are a bijection");
        let mut tags: Vec<u64> = hashes.iter().map(|h| h >> 57).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), 128, "every 7-bit tag is used");
    }

    #[test]
    fn a_key_map_is_a_map() {
        let mut map = KeyMap::default();
        for key in 0..10_000 {
            map.insert(key, key * 2);
        }
        map.remove(&5);
        assert_eq!(map.get(&7), Some(&14));
        assert_eq!(map.get(&5), None);
        assert_eq!(map.len(), 9_999);
    }
}
