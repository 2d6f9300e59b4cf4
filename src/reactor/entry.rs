//! One connection on a shard: its socket (plain or TLS), its state
//! machine, and the bookkeeping of the event loop around them; and the
//! writes of its queued output to the socket.
//!
//! Used by the loop (`shard`) and by the router's outlet (`outlet`); knows
//! neither.

use std::io::{self, IoSlice};

use crate::conn::Connection;
use crate::conn::cork;
use crate::conn::outbound::{MAX_IO_SLICES, Outbound};
use crate::metrics::ShardMetrics;
use crate::reactor::lifecycle::ByteCounts;
use crate::reactor::transport::Transport;

/// Slices of a `writev` for a queue of at most this many frames, the
/// common case outside bursts.
const FEW_IO_SLICES: usize = 8;
/// Slices for a turn of a busy room (16 events in flight, the bench's
/// window) and for twice that.
const TURN_IO_SLICES: usize = 16;
const TWO_TURNS_IO_SLICES: usize = 32;

/// A socket and its connection state.
pub(super) struct Entry {
    /// The socket, plain or with a TLS session over it.
    pub(super) io: Transport,
    pub(super) conn: Connection,
    /// Input not yet consumed (an incomplete head or frame); empty and
    /// unallocated while idle.
    pub(super) input: Vec<u8>,
    pub(super) writable_interest: bool,
    /// The last write met `WouldBlock` and no WRITABLE event came since:
    /// writing through again would only fail again.
    pub(super) socket_full: bool,
    pub(super) write_shut: bool,
    pub(super) peer_closed: bool,
    pub(super) queued_for_flush: bool,
    /// On the `again` list, so it is put there once.
    pub(super) read_again: bool,
    /// For the lifecycle log's `closed` line.
    pub(super) bytes: ByteCounts,
    /// Accepted and no request head yet: counted in `Shard::pre_request`.
    pub(super) pre_request: bool,
}

impl Entry {
    /// A socket just accepted, before its request head.
    pub(super) fn accepted(io: Transport, conn: Connection) -> Self {
        Self {
            io,
            conn,
            input: Vec::new(),
            writable_interest: false,
            socket_full: false,
            write_shut: false,
            peer_closed: false,
            queued_for_flush: false,
            read_again: false,
            bytes: ByteCounts::default(),
            pre_request: true,
        }
    }
}

/// Puts a connection on the turn's flush list, once.
pub(super) fn mark(entry: &mut Entry, dirty: &mut Vec<usize>, key: usize) {
    if !entry.queued_for_flush {
        entry.queued_for_flush = true;
        dirty.push(key);
    }
}

/// Writes the connection's queue to the socket now if queuing `incoming`
/// more bytes would take it past half its bound
/// (`Connection::wants_write_through`), so that a burst leaves as it
/// arrives instead of being judged as backlog. A socket that was full is
/// left alone until its WRITABLE event. A write error is left for
/// the end-of-turn flush, which meets it again and drops the connection.
pub(super) fn write_through(
    entry: &mut Entry,
    metrics: &ShardMetrics,
    incoming: usize,
    config: &crate::config::Config,
) {
    if !entry.socket_full && entry.conn.wants_write_through(incoming, config) {
        let _ = write_pending(entry, metrics);
    }
}

/// Writes as much queued output as the socket takes (encrypted output
/// held back by an earlier full socket first).
pub(super) fn write_pending(entry: &mut Entry, metrics: &ShardMetrics) -> io::Result<()> {
    let out = entry.conn.outbound();
    loop {
        if !entry.io.flush()? {
            entry.socket_full = true;
            return Ok(());
        }
        if out.is_empty() {
            return Ok(());
        }
        // Every slice of the arrays (the queue's, and the cork's two) is
        // set up, used or not: all `MAX_IO_SLICES` of them cost more
        // instructions than the rest of a one-frame write in user space,
        // and 20 per frame of a 16-frame turn. So the fewest that hold
        // the queue's frames.
        let (io, frames) = (&mut entry.io, out.frames());
        let written = if frames <= FEW_IO_SLICES {
            write_front::<FEW_IO_SLICES>(io, out)
        } else if frames <= TURN_IO_SLICES {
            write_front::<TURN_IO_SLICES>(io, out)
        } else if frames <= TWO_TURNS_IO_SLICES {
            write_front::<TWO_TURNS_IO_SLICES>(io, out)
        } else {
            write_front::<MAX_IO_SLICES>(io, out)
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                entry.socket_full = false;
                metrics.bytes_out.add(n as u64);
                entry.bytes.written += n as u64;
                out.advance(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                entry.socket_full = true;
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One write of the first `N` slices of the queue, its short frames
/// corked into one run (`conn::cork`).
fn write_front<const N: usize>(io: &mut Transport, out: &Outbound) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); N];
    let count = out.io_slices(&mut slices);
    cork::with_corked::<N, _>(&slices[..count], |slices| io.write_vectored(slices))
}
