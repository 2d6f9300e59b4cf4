//! Corking: the slices of one write of a connection's queue, with runs of
//! short frames copied into one buffer of the shard, so that the kernel
//! gets one contiguous run instead of one iovec per frame.
//!
//! A `writev`'s TCP path costs the kernel more per iovec than a copy of
//! the frame costs in user space, and a room's fan-out queues every
//! event as its own shared frame. Measured (perf/RESULTS.md, *Corked
//! writes*): 1,000 members, 16 frames per write, server CPU per delivery
//! 22% lower with ~500-byte frames copied than with one iovec each, 14%
//! lower with ~1,000-byte frames; with ~2,000-byte frames, half of them
//! fitting the cork buffer, no difference. So at write time, consecutive slices of at most
//! `COPY_MAX` bytes are copied into the shard's cork buffer, up to
//! `CORK_BYTES` for one write; a longer slice (a big message) keeps its
//! own iovec and is never copied.
//!
//! Owns only that buffer and the gathering. The queue (`conn::outbound`)
//! is not touched: it still holds shared frames by reference, so a slow
//! consumer's backlog costs no copy, and the bytes handed to the kernel
//! are, in order, exactly the queue's, so a partial write is reported to
//! the queue as before. Knows nothing of sockets.

use std::cell::RefCell;
use std::io::IoSlice;

/// Slices up to this long are copied into the cork buffer; longer ones
/// keep their own iovec. The largest frame size measured to gain.
pub const COPY_MAX: usize = 1024;
/// The most bytes copied for one write: the capacity of the shard's cork
/// buffer, allocated once per shard (16 frames of 1 KiB, a round turn of
/// the bench's window; uWebSockets' cork buffer is as large).
pub const CORK_BYTES: usize = 16 * 1024;

thread_local! {
    /// The shard's cork buffer (a shard is one thread).
    static CORK: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(CORK_BYTES));
}

/// Calls `write` with the slices to write for `slices`: `slices` itself
/// when there is nothing to gather, else runs of short slices gathered
/// into the shard's cork buffer.
pub fn with_corked<const N: usize, R>(
    slices: &[IoSlice<'_>],
    write: impl FnOnce(&[IoSlice<'_>]) -> R,
) -> R {
    if !worth_corking(slices) {
        return write(slices);
    }
    CORK.with(|buffer| {
        let mut buf = buffer.borrow_mut();
        let mut corked = [IoSlice::new(&[]); N];
        let count = cork(slices, &mut buf, &mut corked);
        write(&corked[..count])
    })
}

/// Whether gathering saves an iovec: two neighbours both short enough.
fn worth_corking(slices: &[IoSlice<'_>]) -> bool {
    slices
        .windows(2)
        .any(|pair| pair[0].len() <= COPY_MAX && pair[1].len() <= COPY_MAX)
}

/// Where one output slice comes from.
#[derive(Clone, Copy)]
enum Piece {
    /// `buf[start..end]`, a run of gathered slices.
    Gathered { start: usize, end: usize },
    /// Input slice `index`, as it is.
    Own { index: usize },
}

/// Fills `out` with `slices`, runs of short slices copied into `buf`
/// (emptied first, never grown past `CORK_BYTES`); returns how many
/// slices of `out` are used. Input slices that `out` has no room for are
/// left out: they go in a later write.
pub fn cork<'a, const N: usize>(
    slices: &[IoSlice<'a>],
    buf: &'a mut Vec<u8>,
    out: &mut [IoSlice<'a>; N],
) -> usize {
    let mut pieces = [Piece::Own { index: 0 }; N];
    let count = gather(slices, buf, &mut pieces);
    let buf: &'a [u8] = buf;
    for (slot, piece) in out.iter_mut().zip(&pieces[..count]) {
        *slot = match *piece {
            Piece::Gathered { start, end } => IoSlice::new(&buf[start..end]),
            Piece::Own { index } => slices[index],
        };
    }
    count
}

/// Copies runs of short slices into `buf` and says, in order, where each
/// output slice comes from; returns how many pieces there are.
fn gather<const N: usize>(
    slices: &[IoSlice<'_>],
    buf: &mut Vec<u8>,
    pieces: &mut [Piece; N],
) -> usize {
    buf.clear();
    let mut count: usize = 0;
    for (index, slice) in slices.iter().enumerate() {
        let start = buf.len();
        let copied = slice.len() <= COPY_MAX && start + slice.len() <= CORK_BYTES;
        // Only gathered bytes are in `buf`, so a gathered last piece ends
        // where this slice would start.
        let last = count.checked_sub(1).map(|last| &mut pieces[last]);
        if let (true, Some(Piece::Gathered { end, .. })) = (copied, last) {
            buf.extend_from_slice(slice);
            *end = buf.len();
            continue;
        }
        if count == N {
            break;
        }
        pieces[count] = if copied {
            buf.extend_from_slice(slice);
            Piece::Gathered {
                start,
                end: buf.len(),
            }
        } else {
            Piece::Own { index }
        };
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::conn::outbound::{MAX_IO_SLICES, Outbound};
    use crate::conn::shard_frame::ShardFrame;

    fn joined(slices: &[IoSlice<'_>]) -> Vec<u8> {
        slices.iter().flat_map(|s| s.iter().copied()).collect()
    }

    /// `cork` over `parts`: the output slices' lengths and their bytes.
    fn corked<const N: usize>(parts: &[&[u8]]) -> (Vec<usize>, Vec<u8>) {
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut buf = Vec::with_capacity(CORK_BYTES);
        let mut out = [IoSlice::new(&[]); N];
        let count = cork(&slices, &mut buf, &mut out);
        let lens = out[..count].iter().map(|s| s.len()).collect();
        (lens, joined(&out[..count]))
    }

    #[test]
    fn short_slices_leave_as_one() {
        let (lens, bytes) = corked::<8>(&[b"one", b"two", b"three"]);
        assert_eq!(lens, [11]);
        assert_eq!(bytes, b"onetwothree");
    }

    #[test]
    fn a_long_slice_keeps_its_own_iovec() {
        let long = vec![7u8; COPY_MAX + 1];
        let (lens, bytes) = corked::<8>(&[b"a", b"b", &long, b"c", b"d"]);
        assert_eq!(lens, [2, COPY_MAX + 1, 2]);
        assert_eq!(bytes, [&b"ab"[..], &long, b"cd"].concat());
    }

    #[test]
    fn the_cork_buffer_never_grows_past_its_size() {
        let frame = vec![1u8; COPY_MAX];
        let parts: Vec<&[u8]> = (0..2 * CORK_BYTES / COPY_MAX).map(|_| &frame[..]).collect();
        let (lens, bytes) = corked::<MAX_IO_SLICES>(&parts);
        assert_eq!(lens[0], CORK_BYTES);
        assert!(lens[1..].iter().all(|&len| len == COPY_MAX));
        assert_eq!(bytes.len(), parts.len() * COPY_MAX);
    }

    #[test]
    fn slices_past_the_output_room_are_left_for_the_next_write() {
        let long = vec![7u8; COPY_MAX + 1];
        let (lens, bytes) = corked::<2>(&[b"a", &long, b"b", &long]);
        assert_eq!(lens, [1, COPY_MAX + 1]);
        assert_eq!(bytes, [&b"a"[..], &long].concat());
    }

    #[test]
    fn one_slice_is_written_as_it_is() {
        let frame = b"alone".to_vec();
        let slices = [IoSlice::new(&frame)];
        let written = with_corked::<8, _>(&slices, |out| out[0].as_ptr());
        assert_eq!(written, frame.as_ptr(), "not copied");
    }

    /// Writes `out` in pieces of at most `step` bytes, each corked the
    /// way the reactor does, and returns what went out.
    fn write_in_steps(out: &mut Outbound, step: usize) -> Vec<u8> {
        let mut sent = Vec::new();
        while !out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
            let count = out.io_slices(&mut slices);
            let taken = with_corked::<MAX_IO_SLICES, _>(&slices[..count], |corked| {
                let bytes = joined(corked);
                let n = bytes.len().min(step);
                sent.extend_from_slice(&bytes[..n]);
                n
            });
            out.advance(taken);
        }
        sent
    }

    #[test]
    fn partial_writes_of_corked_frames_resume_mid_frame() {
        let mut out = Outbound::default();
        let shared = ShardFrame::from(&b"shared"[..]);
        out.push_raw(b"inline");
        out.push_shared(shared.clone());
        out.push_shared(ShardFrame::from(&[9u8; COPY_MAX + 5][..]));
        out.push_shared(shared);
        out.push_raw(b"end");
        let expected = [&b"inlineshared"[..], &[9u8; COPY_MAX + 5], b"sharedend"].concat();
        assert_eq!(out.pending(), expected.len());
        assert_eq!(write_in_steps(&mut out, 5), expected);
        assert!(out.is_empty());
    }

    #[test]
    fn a_corked_frame_cut_mid_write_is_finished_after_a_discard() {
        let mut out = Outbound::default();
        out.push_shared(ShardFrame::from(&b"first"[..]));
        out.push_shared(ShardFrame::from(&b"second"[..]));
        out.push_shared(ShardFrame::from(&b"third"[..]));
        let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
        let count = out.io_slices(&mut slices);
        // The socket takes "first" and two bytes of "second".
        let taken = with_corked::<MAX_IO_SLICES, _>(&slices[..count], |corked| {
            assert_eq!(corked.len(), 1, "gathered into one slice");
            7
        });
        out.advance(taken);
        out.discard_unstarted();
        assert_eq!(out.pending(), 4);
        assert_eq!(write_in_steps(&mut out, usize::MAX), b"cond");
    }

    proptest! {
        #[test]
        fn corking_keeps_every_byte_in_order(
            lens in proptest::collection::vec(0usize..3 * COPY_MAX, 0..80),
        ) {
            let parts: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| vec![i as u8; len])
                .collect();
            let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            let (lens, bytes) = corked::<MAX_IO_SLICES>(&refs);
            let whole = refs.concat();
            prop_assert!(lens.len() <= MAX_IO_SLICES);
            prop_assert!(whole.starts_with(&bytes));
            if refs.len() <= MAX_IO_SLICES {
                prop_assert_eq!(bytes, whole);
            }
        }
    }
}
