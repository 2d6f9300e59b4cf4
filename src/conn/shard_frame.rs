//! A frame of a fan-out as the connections of one shard queue it: shared
//! by reference, counted without atomics.
//!
//! The router hands a shard each room frame as an `Arc<[u8]>` (other shards
//! and the room's history hold the same bytes). Cloning that `Arc` for each
//! member and dropping it once written costs two lock-prefixed operations
//! per delivery, all on the one cache line of the frame's count. The shard
//! wraps the `Arc` once per fan-out into a `ShardFrame` instead: members
//! queue clones of that, whose count is a plain integer, and the `Arc` is
//! released once, with the last member's copy. The bytes are not copied.
//!
//! Being `Rc`-based, a `ShardFrame` (and so a connection's queue) is not
//! `Send`: a connection stays on the thread of its shard, which is also
//! where the shard is built (`reactor`).
//!
//! Owns only the handle; what is queued where is `outbound`'s.

use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

/// One frame shared by the connections of one shard.
#[derive(Debug, Clone)]
pub struct ShardFrame(Rc<Arc<[u8]>>);

impl ShardFrame {
    /// Wraps `frame` for this shard's members: one allocation per fan-out.
    pub fn new(frame: Arc<[u8]>) -> Self {
        Self(Rc::new(frame))
    }
}

impl From<&[u8]> for ShardFrame {
    fn from(bytes: &[u8]) -> Self {
        Self::new(Arc::from(bytes))
    }
}

impl Deref for ShardFrame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_share_the_bytes_and_one_count_of_the_arc() {
        let frame: Arc<[u8]> = Arc::from(&b"event"[..]);
        let local = ShardFrame::new(frame.clone());
        let members: Vec<ShardFrame> = (0..1000).map(|_| local.clone()).collect();
        assert_eq!(Arc::strong_count(&frame), 2, "one count for the shard");
        assert!(members.iter().all(|m| m.as_ptr() == frame.as_ptr()));
        drop(members);
        drop(local);
        assert_eq!(
            Arc::strong_count(&frame),
            1,
            "released with the last member"
        );
    }
}
