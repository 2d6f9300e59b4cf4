//! The bound on a shard's sockets that have not sent a request yet.
//!
//! A socket costs a file descriptor from the moment it is accepted, but
//! `--max-connections` only counts upgraded WebSockets. Without a bound,
//! sockets that connect and send nothing hold descriptors until the 10 s
//! request timeout, and once the process is out of them a real client
//! waits in the backlog. So each shard keeps its pre-request sockets in
//! accept order: past its share (`limit_per_shard`), or when an accept
//! fails for want of descriptors, the oldest is closed to make room. A
//! client that sends its request head at once is never the oldest for long.
//!
//! Owns only the order and the count; the shard says when a socket arrives,
//! sends its first request head or goes, and closes what this hands back.
//! No sockets here.

use std::collections::VecDeque;

/// Fewest pre-request sockets a shard keeps, however small
/// `--max-connections` is.
const MIN_PER_SHARD: usize = 16;

/// Each shard's share of pre-request sockets: a quarter of
/// `--max-connections` over the shards.
pub fn limit_per_shard(max_connections: usize, shards: usize) -> usize {
    (max_connections / 4 / shards.max(1)).max(MIN_PER_SHARD)
}

/// One shard's sockets waiting for their first request head.
#[derive(Debug)]
pub struct PreRequest {
    /// `(slab key, connection id)` in accept order; entries for sockets
    /// that already sent a request or went are skipped when met.
    order: VecDeque<(usize, u64)>,
    count: usize,
    limit: usize,
}

impl PreRequest {
    pub fn new(limit: usize) -> Self {
        Self {
            order: VecDeque::new(),
            count: 0,
            limit,
        }
    }

    /// A socket was accepted; returns how many wait now.
    pub fn arrived(&mut self, key: usize, id: u64) -> u64 {
        self.order.push_back((key, id));
        self.count += 1;
        self.count as u64
    }

    /// A waiting socket sent its first request head, or went; returns how
    /// many wait now.
    pub fn left(&mut self) -> u64 {
        self.count = self.count.saturating_sub(1);
        self.count as u64
    }

    /// Whether the shard holds more than its share.
    pub fn over_limit(&self) -> bool {
        self.count > self.limit
    }

    /// The oldest socket still waiting, by `still_waiting(key, id)`; it is
    /// taken off the order, and the caller closes it (and calls `left`).
    pub fn oldest(&mut self, still_waiting: impl Fn(usize, u64) -> bool) -> Option<usize> {
        while let Some((key, id)) = self.order.pop_front() {
            if still_waiting(key, id) {
                return Some(key);
            }
        }
        None
    }

    /// Drops the entries of sockets no longer waiting, so that the order
    /// stays as long as the count (called at each sweep).
    pub fn compact(&mut self, still_waiting: impl Fn(usize, u64) -> bool) {
        self.order.retain(|&(key, id)| still_waiting(key, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_a_quarter_of_max_connections_over_the_shards() {
        assert_eq!(limit_per_shard(472, 2), 59);
        assert_eq!(limit_per_shard(20, 2), MIN_PER_SHARD);
        assert_eq!(limit_per_shard(100_000, 0), 25_000);
    }

    #[test]
    fn the_oldest_still_waiting_goes_first() {
        let mut pre = PreRequest::new(2);
        for key in 0..3 {
            pre.arrived(key, 100 + key as u64);
        }
        assert!(pre.over_limit());
        // Socket 0 sent its request meanwhile; socket 1 is the oldest waiting.
        pre.left();
        let waiting = |key: usize, _| key != 0;
        assert_eq!(pre.oldest(waiting), Some(1));
        assert_eq!(pre.left(), 1);
        assert!(!pre.over_limit());
        assert_eq!(pre.oldest(waiting), Some(2));
        assert_eq!(pre.oldest(waiting), None);
    }

    #[test]
    fn a_reused_slab_key_is_told_apart_by_the_id() {
        let mut pre = PreRequest::new(4);
        pre.arrived(7, 1);
        pre.left();
        pre.arrived(7, 2);
        // Key 7 now holds connection 2: the first entry is stale.
        let waiting = |key: usize, id: u64| key == 7 && id == 2;
        pre.compact(waiting);
        assert_eq!(pre.order.len(), 1);
        assert_eq!(pre.oldest(waiting), Some(7));
    }
}
