//! A connection's queue of outgoing frames, bounded by the caller.
//!
//! Small frames built for one connection (echoes, acks, control frames) are
//! appended to one contiguous buffer; frames shared by many connections (a
//! room message) are queued by reference (`ShardFrame`), never copied here.
//! The queue hands out `IoSlice`s so that everything pending leaves in one
//! write (`conn::cork` copies runs of short ones together at that moment).
//! It remembers frame boundaries so that a slow consumer can be cut off
//! after the frame in flight. Knows nothing of sockets: the reactor writes
//! the slices and reports how much went out.

use std::collections::VecDeque;
use std::io::IoSlice;

use crate::conn::pool;
use crate::conn::shard_frame::ShardFrame;
use crate::ws::frame::{self, OpCode};

thread_local! {
    /// Idle frame lists of this shard, kept for reuse.
    static FREE_CHUNK_LISTS: std::cell::RefCell<Vec<VecDeque<Chunk>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Frame lists longer than this are freed rather than kept. A fan-out
/// member gets a turn's events (16 in flight and more) in one list: a
/// list that short would be grown and freed again every turn.
const MAX_POOLED_CHUNKS: usize = 32;
/// Most idle frame lists kept per shard.
const MAX_POOLED_CHUNK_LISTS: usize = 16_384;

fn give_chunk_list(list: VecDeque<Chunk>) {
    if list.capacity() == 0 || list.capacity() > MAX_POOLED_CHUNKS {
        return;
    }
    FREE_CHUNK_LISTS.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < MAX_POOLED_CHUNK_LISTS {
            free.push(list);
        }
    });
}

/// An idle frame list of this shard's pool, or a new one. Out of line:
/// once per queue that was idle, not once per frame.
#[inline(never)]
fn take_chunk_list() -> VecDeque<Chunk> {
    FREE_CHUNK_LISTS
        .with(|free| free.borrow_mut().pop())
        .unwrap_or_default()
}

/// Most slices handed to one `writev` (Linux allows 1024; fewer is plenty).
pub const MAX_IO_SLICES: usize = 64;

/// One queued frame.
#[derive(Debug)]
enum Chunk {
    /// `len` bytes in `Outbound::inline`, following the previous inline chunk.
    Inline { len: usize },
    /// A frame encoded once and shared with other connections.
    Shared(ShardFrame),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Inline { len } => *len,
            Chunk::Shared(bytes) => bytes.len(),
        }
    }
}

/// Frames waiting to be written to one connection.
#[derive(Debug, Default)]
pub struct Outbound {
    chunks: VecDeque<Chunk>,
    /// Backing bytes of the inline chunks, in queue order, from `inline_start`.
    inline: Vec<u8>,
    /// Bytes at the front of `inline` that are already written.
    inline_start: usize,
    /// Bytes of the front chunk already written.
    head_written: usize,
    /// Unwritten bytes in total.
    pending: usize,
}

impl Outbound {
    /// Unwritten bytes.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Whether a frame is partly written (so it must be finished before anything else).
    pub fn in_flight(&self) -> bool {
        self.head_written > 0
    }

    /// Queues one unmasked frame built from `payload`.
    pub fn push_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        self.push_encoded(payload.len(), |inline| {
            frame::encode_frame(opcode, payload, inline);
        });
    }

    /// Queues one unmasked data frame with RSV1 set: `deflated` is a
    /// message compressed for permessage-deflate.
    pub fn push_compressed(&mut self, opcode: OpCode, deflated: &[u8]) {
        self.push_encoded(deflated.len(), |inline| {
            frame::encode_compressed_frame(opcode, deflated, inline);
        });
    }

    /// Queues the frame `encode` appends, its payload `payload_len` bytes.
    fn push_encoded(&mut self, payload_len: usize, encode: impl FnOnce(&mut Vec<u8>)) {
        self.ensure_inline(payload_len + frame::MAX_HEADER_LEN);
        let before = self.inline.len();
        encode(&mut self.inline);
        self.push_inline(self.inline.len() - before);
    }

    /// Queues a close frame.
    pub fn push_close(&mut self, code: u16, reason: &str) {
        self.ensure_inline(2 + 125);
        let before = self.inline.len();
        frame::encode_close(code, reason, &mut self.inline);
        self.push_inline(self.inline.len() - before);
    }

    /// Queues bytes that are already a whole frame or HTTP response.
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.ensure_inline(bytes.len());
        self.inline.extend_from_slice(bytes);
        self.push_inline(bytes.len());
    }

    /// Queues a frame shared with other connections.
    pub fn push_shared(&mut self, frame: ShardFrame) {
        self.pending += frame.len();
        self.chunk_list().push_back(Chunk::Shared(frame));
    }

    /// Drops every frame not yet started; a frame in flight is kept so the
    /// peer still sees a well-formed stream.
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.in_flight());
        let kept_inline: usize = self
            .chunks
            .iter()
            .take(keep)
            .filter(|c| matches!(c, Chunk::Inline { .. }))
            .map(Chunk::len)
            .sum();
        self.chunks.truncate(keep);
        self.inline.truncate(self.inline_start + kept_inline);
        self.pending = self
            .chunks
            .front()
            .map_or(0, |c| c.len() - self.head_written);
    }

    /// Frames queued (a partly written one included): `io_slices` needs
    /// at most this many slices for all of them.
    pub fn frames(&self) -> usize {
        self.chunks.len()
    }

    /// Fills `slices` with the pending bytes, front first, as many as fit;
    /// returns how many. Consecutive inline frames are contiguous and share
    /// one slice. An array, not a slice: with its length known the
    /// compiler drops the bounds check of every frame.
    pub fn io_slices<'a, const N: usize>(&'a self, slices: &mut [IoSlice<'a>; N]) -> usize {
        let mut count = 0;
        let mut push = |bytes: &'a [u8]| {
            if count < N && !bytes.is_empty() {
                slices[count] = IoSlice::new(bytes);
                count += 1;
            }
        };
        let mut inline_at = self.inline_start;
        let mut run = inline_at..inline_at;
        let mut skip = self.head_written;
        for chunk in &self.chunks {
            match chunk {
                Chunk::Inline { len } => {
                    if run.is_empty() {
                        run = inline_at + skip..inline_at + len;
                    } else {
                        run.end = inline_at + len;
                    }
                    inline_at += len;
                }
                Chunk::Shared(frame) => {
                    push(&self.inline[run.clone()]);
                    run = inline_at..inline_at;
                    push(&frame[skip..]);
                }
            }
            skip = 0;
        }
        push(&self.inline[run]);
        count
    }

    /// Records that `written` bytes from the front went out.
    pub fn advance(&mut self, mut written: usize) {
        if written == self.pending {
            // All of it (the common case): the frames are let go without
            // a look at their lengths. `clear` costs less per frame than
            // popping them one by one, but more than one pop for a lone
            // frame (callgrind, perf/RESULTS.md).
            self.pending = 0;
            if self.chunks.len() == 1 {
                self.chunks.pop_front();
            } else {
                self.chunks.clear();
            }
            return self.release();
        }
        self.pending -= written;
        while written > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.len() - self.head_written;
            if written < left {
                self.head_written += written;
                return;
            }
            written -= left;
            if let Some(Chunk::Inline { len }) = self.chunks.pop_front() {
                self.inline_start += len;
            }
            self.head_written = 0;
        }
        if self.chunks.is_empty() {
            self.release();
        }
    }

    /// Gives the buffers back to the shard's pool once nothing is pending,
    /// so an idle connection holds none.
    #[inline]
    fn release(&mut self) {
        debug_assert!(self.chunks.is_empty());
        give_chunk_list(std::mem::take(&mut self.chunks));
        self.inline_start = 0;
        self.head_written = 0;
        pool::give(std::mem::take(&mut self.inline));
    }

    fn ensure_inline(&mut self, additional: usize) {
        if self.inline.capacity() == 0 {
            self.inline = pool::take(additional);
        } else if self.inline_start > 0 && self.inline_start >= self.inline.len() / 2 {
            // Reclaim the written front before growing.
            self.inline.drain(..self.inline_start);
            self.inline_start = 0;
        }
        self.inline.reserve(additional);
    }

    /// The frame list, taken from the shard's pool when the queue was idle,
    /// so a fan-out allocates nothing per member.
    #[inline]
    fn chunk_list(&mut self) -> &mut VecDeque<Chunk> {
        if self.chunks.capacity() == 0 {
            self.chunks = take_chunk_list();
        }
        &mut self.chunks
    }

    fn push_inline(&mut self, len: usize) {
        self.pending += len;
        self.chunk_list().push_back(Chunk::Inline { len });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(bytes: &[u8]) -> ShardFrame {
        ShardFrame::from(bytes)
    }

    fn drain_all(out: &mut Outbound) -> Vec<u8> {
        let mut sent = Vec::new();
        while !out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
            let n = out.io_slices(&mut slices);
            let bytes: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            sent.extend_from_slice(&bytes);
            out.advance(bytes.len());
        }
        sent
    }

    #[test]
    fn inline_and_shared_frames_leave_in_order() {
        let mut out = Outbound::default();
        out.push_raw(b"one");
        out.push_shared(shared(b"two"));
        out.push_raw(b"three");
        assert_eq!(out.pending(), 11);
        assert_eq!(drain_all(&mut out), b"onetwothree");
        assert!(out.is_empty());
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut out = Outbound::default();
        out.push_raw(b"hello");
        out.push_shared(shared(b"world"));
        out.advance(3);
        assert!(out.in_flight());
        let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
        let n = out.io_slices(&mut slices);
        let rest: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(rest, b"loworld");
        out.advance(4);
        assert_eq!(drain_all(&mut out), b"rld");
    }

    #[test]
    fn discard_keeps_only_the_frame_in_flight() {
        let mut out = Outbound::default();
        out.push_raw(b"first");
        out.push_raw(b"second");
        out.push_shared(shared(b"third"));
        out.advance(2);
        out.discard_unstarted();
        out.push_raw(b"!");
        assert_eq!(drain_all(&mut out), b"rst!");
    }

    #[test]
    fn discard_with_nothing_in_flight_drops_everything() {
        let mut out = Outbound::default();
        out.push_raw(b"first");
        out.push_shared(shared(b"second"));
        out.discard_unstarted();
        assert!(out.is_empty());
        out.push_raw(b"close");
        assert_eq!(drain_all(&mut out), b"close");
    }

    #[test]
    fn the_rest_written_at_once_after_a_partial_write_empties_the_queue() {
        for frames in [1, 2, 20] {
            let mut out = Outbound::default();
            out.push_raw(b"head");
            for _ in 1..frames {
                out.push_shared(shared(b"event"));
            }
            out.advance(3);
            out.advance(out.pending());
            assert!(out.is_empty(), "{frames} frames");
            assert_eq!(out.frames(), 0, "{frames} frames");
            assert_eq!(out.chunks.capacity(), 0, "the list went back to the pool");
            out.push_raw(b"next");
            assert_eq!(drain_all(&mut out), b"next", "nothing of the old head left");
        }
    }

    #[test]
    fn drained_queue_holds_no_buffer() {
        let mut out = Outbound::default();
        out.push_raw(&[7; 100]);
        drain_all(&mut out);
        assert_eq!(out.inline.capacity(), 0);
        assert_eq!(out.chunks.capacity(), 0);
    }

    #[test]
    fn a_turn_of_fan_out_keeps_its_frame_list_for_the_next() {
        let mut out = Outbound::default();
        let frame = shared(b"x");
        for _ in 0..20 {
            out.push_shared(frame.clone());
        }
        drain_all(&mut out);
        out.push_shared(frame);
        assert!(out.chunks.capacity() >= 20, "the grown list was pooled");
    }

    #[test]
    fn a_short_slice_array_takes_the_front_frames() {
        let mut out = Outbound::default();
        out.push_raw(b"a");
        out.push_raw(b"b");
        out.push_shared(shared(b"c"));
        out.push_shared(shared(b"d"));
        out.push_raw(b"e");
        assert_eq!(out.frames(), 5);
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(out.io_slices(&mut slices), 2);
        let front: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(front, b"abc");
        out.advance(front.len());
        assert_eq!(out.frames(), 2);
        assert_eq!(drain_all(&mut out), b"de");
    }

    #[test]
    fn many_frames_are_cut_into_at_most_max_slices() {
        let mut out = Outbound::default();
        let frame = shared(b"x");
        for _ in 0..(MAX_IO_SLICES * 2) {
            out.push_shared(frame.clone());
        }
        let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
        assert_eq!(out.io_slices(&mut slices), MAX_IO_SLICES);
        assert_eq!(drain_all(&mut out).len(), MAX_IO_SLICES * 2);
    }
}
