//! Gathers: a `user:send` or `system:broadcast` in one process goes to
//! every shard, each counts the connections it reached, and the sender's
//! shard answers once every count is in.

use std::collections::HashMap;

use crate::conn::ConnRef;
use crate::proto::reply::{self, OwnedId};

/// One gather waiting for counts.
#[derive(Debug)]
struct Gather {
    conn: ConnRef,
    id: Option<OwnedId>,
    remaining: usize,
    delivered: u64,
}

/// The gathers a shard started and that still wait for counts.
#[derive(Debug, Default)]
pub struct Gathers {
    waiting: HashMap<u64, Gather>,
    last: u64,
}

impl Gathers {
    /// Starts a gather for `conn`'s request `id`, answered once `shards`
    /// counts are in; returns its number.
    pub fn start(&mut self, conn: ConnRef, id: Option<OwnedId>, shards: usize) -> u64 {
        self.last += 1;
        let gather = Gather {
            conn,
            id,
            remaining: shards,
            delivered: 0,
        };
        self.waiting.insert(self.last, gather);
        self.last
    }

    /// One shard reached `count` connections; once all have counted, the
    /// ack to send and to whom (none when the request had no `id`).
    pub fn counted(&mut self, gather: u64, count: usize) -> Option<(ConnRef, Vec<u8>)> {
        let pending = self.waiting.get_mut(&gather)?;
        pending.remaining = pending.remaining.saturating_sub(1);
        pending.delivered += count as u64;
        if pending.remaining > 0 {
            return None;
        }
        let done = self.waiting.remove(&gather)?;
        let text = reply::count_ack(&done.id?, "delivered", done.delivered);
        Some((done.conn, text))
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONN: ConnRef = ConnRef {
        shard: 1,
        key: 7,
        id: 9,
    };

    #[test]
    fn a_gather_answers_once_every_shard_counted() {
        let mut gathers = Gathers::default();
        let g = gathers.start(CONN, Some(OwnedId::Int(4)), 3);
        assert_eq!(gathers.counted(g, 2), None);
        assert_eq!(gathers.counted(g, 0), None);
        let (conn, text) = gathers.counted(g, 5).expect("all counted");
        assert_eq!(conn, CONN);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            r#"{"event":"ack","id":4,"success":true,"data":{"delivered":7}}"#
        );
        assert!(gathers.is_empty());
        assert_eq!(gathers.counted(g, 1), None, "a late count is ignored");
    }

    #[test]
    fn a_gather_without_an_id_answers_nobody() {
        let mut gathers = Gathers::default();
        let g = gathers.start(CONN, None, 1);
        assert_eq!(gathers.counted(g, 3), None);
        assert!(gathers.is_empty());
    }
}
