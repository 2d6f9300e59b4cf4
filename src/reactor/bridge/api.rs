//! The Server API's transport (section 12): messages cast to every node
//! or to one node's replies channel, what those channels bring, and the
//! list of live nodes kept from the heartbeats. Payloads are bytes here;
//! the room router reads them (`Router::on_cluster_api`).

use std::sync::Arc;

use super::{Bridge, BridgeSink};
use crate::config::is_cluster_name;
use crate::log_warn;
use crate::redis::api::{self, MAX_API_PAYLOAD};
use crate::redis::resp::{self, Reply};
use crate::redis::{self, layout};

/// A `RoomUsers` request on its way: the counts so far.
pub(super) struct UserCounts<A> {
    answer: A,
    counts: Vec<u64>,
    /// Counts not in yet.
    left: usize,
    /// A count could not be had: the whole answer is `Unavailable`.
    failed: bool,
}

impl<S: BridgeSink> Bridge<S> {
    /// `HLEN` of each room's users hash, on the room's server, pipelined;
    /// answered once every count is in.
    pub(super) fn room_users(&mut self, rooms: &[Arc<str>], answer: S::Answer) {
        if rooms.is_empty() {
            return self.sink.room_users(answer, Ok(Vec::new()));
        }
        self.next_gather += 1;
        let gather = self.next_gather;
        let counts = UserCounts {
            answer,
            counts: vec![0; rooms.len()],
            left: rooms.len(),
            failed: false,
        };
        self.room_users.insert(gather, counts);
        for (index, room) in rooms.iter().enumerate() {
            let server = self.route(room);
            let keys = self.keys_of(room);
            let link = &mut self.links[server];
            let pending = super::Pending::RoomUsers { gather, index };
            let sent = link.is_up()
                && link
                    .pipeline
                    .push(pending, |out| {
                        resp::write_command(out, &["HLEN", &keys.users])
                    })
                    .is_ok();
            if !sent {
                self.counted_users(gather, index, None);
            }
        }
    }

    /// One room's count of a `RoomUsers` (`None`: it could not be had).
    pub(super) fn counted_users(&mut self, gather: u64, index: usize, count: Option<u64>) {
        let Some(counts) = self.room_users.get_mut(&gather) else {
            return;
        };
        match (count, counts.counts.get_mut(index)) {
            (Some(n), Some(slot)) => *slot = n,
            _ => counts.failed = true,
        }
        counts.left -= 1;
        if counts.left > 0 {
            return;
        }
        if let Some(done) = self.room_users.remove(&gather) {
            let outcome = if done.failed {
                Err(super::Unavailable)
            } else {
                Ok(done.counts)
            };
            self.sink.room_users(done.answer, outcome);
        }
    }

    /// An `SPUBLISH` on the API channel (`to: None`) or on `to`'s replies
    /// channel, on the online set's server where every node listens.
    /// Nothing answers it, so nothing waits: what cannot go is dropped.
    pub(super) fn api_cast(&mut self, to: Option<&str>, payload: &[u8]) {
        if payload.len() > MAX_API_PAYLOAD {
            let len = payload.len();
            return log_warn!("redis bridge: an API message of {len} bytes is over the bound");
        }
        let named;
        let channel = match to {
            None => &self.api_channel,
            Some(node) if is_cluster_name(node) => {
                named = layout::api_node_channel(&self.config.cluster.prefix, node);
                &named
            }
            Some(_) => return log_warn!("redis bridge: an API message for no node id"),
        };
        let index = self.route(redis::ONLINE);
        let link = &mut self.links[index];
        if !link.is_up() {
            return;
        }
        let _ = link.pipeline.push(super::Pending::Ignored, |out| {
            resp::write_command(out, &[b"SPUBLISH".as_slice(), channel.as_bytes(), payload]);
        });
    }

    /// A message on either API channel goes to the sink, once.
    pub(super) fn on_api(&mut self, payload: &[u8]) {
        if payload.len() > MAX_API_PAYLOAD {
            let len = payload.len();
            return log_warn!("redis bridge: an API message of {len} bytes was dropped");
        }
        self.sink.api(payload.to_vec());
    }

    /// The nodes whose heartbeat is recent, on the online set's server:
    /// the sink hears of each change.
    pub(super) fn on_live_nodes(&mut self, reply: &Reply) {
        let node = &self.config.cluster.node_id;
        let Some(nodes) = api::live_nodes_reply(reply, node) else {
            return log_warn!("redis bridge: the list of live nodes is out of shape");
        };
        self.live_known = true;
        if *nodes != *self.live_nodes {
            self.live_nodes = Arc::from(nodes);
            self.sink.live_nodes(self.live_nodes.clone());
        }
    }
}
