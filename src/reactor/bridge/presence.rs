//! The bridge's presence work: joins and leaves counted in Redis, presence
//! lists, the online set behind `user:send` and `system:broadcast`, and
//! node liveness (heartbeats, and the removal of a dead node's
//! connections). What the replies mean for clients is the sink's business.

use std::sync::Arc;
use std::time::Instant;

use super::{
    Bridge, BridgeSink, HEARTBEAT, LIVE_NODES_READ, NODE_TIMEOUT, OwnedQuery, Pending, Unavailable,
};
use crate::log_info;
use crate::proto::names::pattern_matches;
use crate::redis::layout::{self, RoomKeys};
use crate::redis::resp::{self, Reply};
use crate::redis::{self, NodeUser, PresenceChange};

impl<S: BridgeSink> Bridge<S> {
    pub(super) fn join(
        &mut self,
        room: Arc<str>,
        query: &OwnedQuery,
        change: &PresenceChange,
        answer: S::Answer,
    ) {
        let index = self.route(&room);
        let keys = self.keys_of(&room);
        let epoch = self.fresh_epoch();
        let retention = self.config.history;
        let hooks = self.count_hooks();
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.joined(answer, Err(Unavailable));
        }
        let sent = Instant::now();
        let pushed = link.pipeline.push(
            Pending::Join {
                answer,
                room: room.clone(),
                sent,
            },
            |out| {
                let query = query.as_query();
                redis::join(
                    out,
                    &keys,
                    query,
                    &epoch,
                    retention,
                    change,
                    hooks.at(&room),
                );
            },
        );
        if let Err(Pending::Join { answer, .. }) = pushed {
            self.sink.joined(answer, Err(Unavailable));
        }
    }

    /// A leave is not answered: if Redis is away it is lost, and the sync
    /// after the reconnect puts the room's presence right.
    pub(super) fn leave(&mut self, room: &str, change: &PresenceChange) {
        let index = self.route(room);
        let keys = self.keys_of(room);
        let hooks = self.count_hooks();
        let link = &mut self.links[index];
        if !link.is_up() {
            return;
        }
        let ttl = self.config.history.ttl_ms();
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            redis::leave(out, &keys, change, ttl, hooks.at(room))
        });
    }

    pub(super) fn presence(&mut self, room: &str, answer: S::Answer) {
        let index = self.route(room);
        let keys = self.keys_of(room);
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.presence(answer, Err(Unavailable));
        }
        let pushed = link.pipeline.push(Pending::Presence { answer }, |out| {
            redis::presence(out, &keys, crate::codes::limits::MAX_PRESENCE_USERS);
        });
        if let Err(Pending::Presence { answer }) = pushed {
            self.sink.presence(answer, Err(Unavailable));
        }
    }

    /// The Server API's `history` (`query`) or `history_remove` (`None`).
    pub(super) fn room_read(&mut self, room: &str, query: Option<&OwnedQuery>, answer: S::Answer) {
        let index = self.route(room);
        let keys = self.keys_of(room);
        let epoch = self.fresh_epoch();
        let retention = self.config.history;
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.room_read(answer, Err(Unavailable));
        }
        let remove = query.is_none();
        let pushed = link
            .pipeline
            .push(Pending::RoomRead { answer, remove }, |out| match query {
                Some(query) => redis::history(out, &keys, query.as_query(), &epoch, retention),
                None => redis::forget(out, &keys),
            });
        if let Err(Pending::RoomRead { answer, .. }) = pushed {
            self.sink.room_read(answer, Err(Unavailable));
        }
    }

    pub(super) fn sync(&mut self, room: &str, users: &[NodeUser]) {
        let index = self.route(room);
        let keys = self.keys_of(room);
        let announce = self.announces(room);
        let limit = self.config.presence.event_limit;
        let ttl = self.config.history.ttl_ms();
        let hooks = self.count_hooks();
        let at = self.index_link(index);
        let node = &self.config.cluster.node_id;
        let node_rooms = &self.node_rooms;
        if !self.links[index].is_up() {
            return;
        }
        let index_link = &mut self.links[at];
        if index_link.is_up() {
            let _ = index_link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &["SADD", node_rooms, room]);
            });
        }
        let link = &mut self.links[index];
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            let rules = redis::SyncRules {
                announce,
                event_limit: limit,
                ttl_ms: ttl,
                hooks,
            };
            redis::sync(out, &keys, room, node, rules, users);
        });
    }

    pub(super) fn online(
        &mut self,
        change: &PresenceChange,
        n: i64,
        first_here: bool,
        last_here: bool,
    ) {
        let index = self.route(redis::ONLINE);
        let keys = self.keys_of(redis::ONLINE);
        let hooks = self.count_hooks();
        let node_rooms = &self.node_rooms;
        let link = &mut self.links[index];
        if !link.is_up() {
            return;
        }
        if first_here {
            let _ = link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &["SADD", node_rooms, redis::ONLINE]);
            });
        }
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            redis::count(out, &keys, change, n, hooks)
        });
        if last_here {
            let _ = link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &["SREM", node_rooms, redis::ONLINE]);
            });
        }
    }

    pub(super) fn send_direct(
        &mut self,
        to: Option<&str>,
        text: &[u8],
        origin: &str,
        answer: S::Answer,
    ) {
        let index = self.route(redis::ONLINE);
        let payload = redis::Direct { origin, to, text }.write();
        let prefix = &self.config.cluster.prefix;
        let link = &mut self.links[index];
        if !link.is_up() {
            return self.sink.sent(answer, Err(Unavailable));
        }
        let pushed = link.pipeline.push(Pending::Sent { answer }, |out| {
            redis::send(out, prefix, to, &payload);
        });
        if let Err(Pending::Sent { answer }) = pushed {
            self.sink.sent(answer, Err(Unavailable));
        }
    }

    /// Whether `room` announces presence (`--presence-rooms`); the online
    /// set never does.
    pub(super) fn announces(&self, room: &str) -> bool {
        room != redis::ONLINE
            && self
                .config
                .presence
                .rooms
                .iter()
                .any(|p| pattern_matches(p, room))
    }

    /// Every `HEARTBEAT`: this node's heartbeat on every server, a look
    /// for nodes whose heartbeat stopped, and the list of those whose
    /// heartbeat did not, on the online set's server: the one the Server
    /// API travels through, so a node listed there can hear it.
    pub(super) fn heartbeat(&mut self) {
        let now = Instant::now();
        if now < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = now + HEARTBEAT;
        let unix_ms = crate::sys::unix_ms();
        let set = layout::heartbeats(&self.config.cluster.prefix);
        let node = self.config.cluster.node_id.clone();
        let stale = unix_ms.saturating_sub(NODE_TIMEOUT.as_millis() as u64);
        for index in self.heartbeat_links() {
            let link = &mut self.links[index];
            if !link.is_up() {
                continue;
            }
            let _ = link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &["ZADD", &set, &unix_ms.to_string(), &node]);
            });
            let _ = link.pipeline.push(Pending::DeadNodes, |out| {
                let max = format!("({stale}");
                resp::write_command(
                    out,
                    &["ZRANGEBYSCORE", &set, "-inf", &max, "LIMIT", "0", "16"],
                );
            });
        }
    }

    /// Reads the live nodes, on the online set's server, every
    /// `LIVE_NODES_READ`.
    pub(super) fn read_live_nodes(&mut self) {
        let now = Instant::now();
        if now < self.next_live_read {
            return;
        }
        self.next_live_read = now + LIVE_NODES_READ;
        let set = layout::heartbeats(&self.config.cluster.prefix);
        let stale = crate::sys::unix_ms().saturating_sub(NODE_TIMEOUT.as_millis() as u64);
        let online = self.route(redis::ONLINE);
        let link = &mut self.links[online];
        if link.is_up() {
            let _ = link.pipeline.push(Pending::LiveNodes, |out| {
                redis::api::live_nodes(out, &set, stale);
            });
        }
    }

    /// Dead nodes on server `index`: their rooms there are looked up.
    pub(super) fn on_dead_nodes(&mut self, index: usize, reply: &Reply) {
        let Reply::Array(nodes) = reply else { return };
        for node in nodes.iter().filter_map(Reply::as_bytes) {
            let node = String::from_utf8_lossy(node).into_owned();
            if node == self.config.cluster.node_id {
                continue;
            }
            log_info!("redis bridge: node {node} stopped its heartbeat; removing its presence");
            let rooms = layout::node_rooms(&self.config.cluster.prefix, &node);
            let _ = self.links[index]
                .pipeline
                .push(Pending::DeadRooms { node }, |out| {
                    resp::write_command(out, &["SMEMBERS", &rooms]);
                });
        }
    }

    /// The rooms of a dead node: its connections there are removed (with
    /// the leaves announced), then the node itself.
    pub(super) fn on_dead_rooms(&mut self, index: usize, node: &str, reply: &Reply) {
        let Reply::Array(rooms) = reply else { return };
        let limit = self.config.presence.event_limit;
        let ttl = self.config.history.ttl_ms();
        let hooks = self.count_hooks();
        for room in rooms.iter().filter_map(Reply::as_bytes) {
            let room = String::from_utf8_lossy(room).into_owned();
            let keys = RoomKeys::new(&self.config.cluster.prefix, &room);
            let announce = self.announces(&room);
            // On its own server; in a Redis Cluster, at its slot's master.
            let at = if self.topology.is_some() {
                self.route(&room)
            } else {
                index
            };
            if !self.links[at].is_up() {
                continue;
            }
            let _ = self.links[at].pipeline.push(Pending::Ignored, |out| {
                let rules = redis::SyncRules {
                    announce,
                    event_limit: limit,
                    ttl_ms: ttl,
                    hooks,
                };
                redis::sync(out, &keys, &room, node, rules, &[]);
            });
        }
        let rooms_key = layout::node_rooms(&self.config.cluster.prefix, node);
        let set = layout::heartbeats(&self.config.cluster.prefix);
        let link = &mut self.links[index];
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            resp::write_command(out, &["DEL", &rooms_key]);
        });
        let _ = link.pipeline.push(Pending::Ignored, |out| {
            resp::write_command(out, &["ZREM", &set, node]);
        });
    }
}
