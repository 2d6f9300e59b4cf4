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

impl<S: BridgeSink> Bridge<S> {
    /// A `PUBLISH` on the API channel (`to: None`) or on `to`'s replies
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
        let index = layout::server_of(redis::ONLINE, self.links.len());
        let link = &mut self.links[index];
        if !link.is_up() {
            return;
        }
        let _ = link.pipeline.push(super::Pending::Ignored, |out| {
            resp::write_command(out, &[b"PUBLISH".as_slice(), channel.as_bytes(), payload]);
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
        if *nodes != *self.live_nodes {
            self.live_nodes = Arc::from(nodes);
            self.sink.live_nodes(self.live_nodes.clone());
        }
    }
}
