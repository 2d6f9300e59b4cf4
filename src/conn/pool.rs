//! The per-shard pool of byte buffers for connection input and output.
//!
//! Each shard is one thread, so the pool is thread-local: a connection takes
//! a buffer only while it has bytes pending and gives it back when drained,
//! which is what keeps an idle connection free of buffers. Owns nothing but
//! the free list; knows nothing of what the bytes mean.

use std::cell::RefCell;

/// Buffers larger than this are freed instead of pooled, so a burst of big
/// messages does not pin memory forever.
const MAX_POOLED_CAPACITY: usize = 64 * 1024;
/// Most buffers kept per shard.
const MAX_POOLED_BUFFERS: usize = 1024;
/// Capacity of a fresh buffer.
const INITIAL_CAPACITY: usize = 512;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `min_capacity` bytes.
pub fn take(min_capacity: usize) -> Vec<u8> {
    let pooled = FREE.with(|free| free.borrow_mut().pop());
    let mut buf = pooled.unwrap_or_default();
    if buf.capacity() < min_capacity.max(INITIAL_CAPACITY) {
        buf.reserve_exact(min_capacity.max(INITIAL_CAPACITY));
    }
    buf
}

/// Returns a buffer to the pool (or frees it when it is large or the pool is full).
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > MAX_POOLED_CAPACITY {
        return;
    }
    buf.clear();
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < MAX_POOLED_BUFFERS {
            free.push(buf);
        }
    });
}

/// Buffers currently pooled on this thread.
pub fn pooled() -> usize {
    FREE.with(|free| free.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again() {
        let mut buf = take(10);
        buf.extend_from_slice(b"abc");
        let ptr = buf.as_ptr();
        let before = pooled();
        give(buf);
        assert_eq!(pooled(), before + 1);
        let again = take(10);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr);
    }

    #[test]
    fn large_buffers_are_not_pooled() {
        let before = pooled();
        give(Vec::with_capacity(MAX_POOLED_CAPACITY + 1));
        assert_eq!(pooled(), before);
    }
}
