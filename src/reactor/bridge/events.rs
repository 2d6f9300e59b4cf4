//! What comes in on the channels: room events handed to the shards once
//! each and in `seq` order (`redis::subscriptions` keeps the cursor),
//! presence events, direct messages, Server API messages (to `api`), and
//! what a room missed while its link was down.

use std::sync::Arc;

use super::{Bridge, BridgeSink, DirectMessage, FromHere, RoomEvent, room_of};
use crate::log_warn;
use crate::proto::wire;
use crate::redis::resp::Reply;
use crate::redis::{self, Origin};

impl<S: BridgeSink> Bridge<S> {
    /// What a room missed while the link was down: the events the recovery
    /// returned go to the shards in order (a gap stays where history did
    /// not reach; another epoch means Redis lost the room).
    pub(super) fn on_recovered(&mut self, room: &str, reply: &Reply) {
        if !self.subscriptions.recovered(room) {
            return;
        }
        let Some(history) = redis::history_reply(reply) else {
            log_warn!("redis bridge: recovery of a room refused: {reply:?}");
            return;
        };
        let Some(room) = self.subscriptions.room(room).cloned() else {
            return;
        };
        // `history_reply` holds no more messages than `seq` allows.
        let Some(first) = history.first_seq() else {
            return;
        };
        for (seq, text) in (first..).zip(&history.messages) {
            self.forward(&room, &history.epoch, seq, text, None);
        }
        self.subscriptions
            .observe(&room, &history.epoch, history.seq);
    }

    /// A push: an `smessage` (sharded pub/sub) goes to every shard serving
    /// its room; an `sunsubscribe` nobody asked for is a Redis Cluster that
    /// moved the channel (`cluster`); other confirmations need nothing.
    pub(super) fn on_push(&mut self, items: &[Reply]) {
        let [kind, channel, payload] = items else {
            return;
        };
        if kind.as_bytes() == Some(b"sunsubscribe") {
            if let Some(channel) = channel.as_bytes() {
                self.on_unsubscribed(channel);
            }
            return;
        }
        if kind.as_bytes() != Some(b"smessage") {
            return;
        }
        let (Some(channel), Some(payload)) = (channel.as_bytes(), payload.as_bytes()) else {
            return;
        };
        if channel == self.direct_channel.as_bytes() {
            return self.on_direct(payload);
        }
        if channel == self.api_channel.as_bytes() || channel == self.api_node_channel.as_bytes() {
            return self.on_api(payload);
        }
        let Some(room) = room_of(&self.config.cluster.prefix, channel) else {
            return;
        };
        let Some(message) = redis::channel_message(payload) else {
            return;
        };
        // A room no longer served (unsubscribed meanwhile) has no shard to go to.
        let Some(room) = self.subscriptions.room(room).cloned() else {
            return;
        };
        let from_here = Origin::parse(message.origin)
            .filter(|o| o.node == self.config.cluster.node_id)
            .map(|o| FromHere {
                read_micros: o.read_micros,
                exclude: o.exclude,
            });
        if message.epoch == redis::PRESENCE_EPOCH {
            return self.forward_presence(&room, message.text, from_here, false);
        }
        if message.epoch == redis::VOLATILE_EPOCH {
            return self.forward_presence(&room, message.text, from_here, true);
        }
        self.forward(&room, message.epoch, message.seq, message.text, from_here);
    }

    /// A direct message or broadcast: every shard delivers to its own.
    pub(super) fn on_direct(&mut self, payload: &[u8]) {
        let Some(direct) = redis::Direct::parse(payload) else {
            return;
        };
        let exclude = Origin::parse(direct.origin)
            .filter(|o| o.node == self.config.cluster.node_id)
            .and_then(|o| o.exclude);
        self.sink.direct(DirectMessage {
            to: direct.to.map(Arc::from),
            frame: wire::text_frame(direct.text),
            twin: Arc::default(),
            exclude,
        });
    }

    /// A presence event, or a `volatile` one, goes to the shards as it
    /// comes: it has no `seq`, and the room's cursor does not move.
    pub(super) fn forward_presence(
        &mut self,
        room: &Arc<str>,
        text: &[u8],
        from_here: Option<FromHere>,
        volatile: bool,
    ) {
        let event = RoomEvent {
            room: room.clone(),
            epoch: Arc::from(""),
            seq: 0,
            frame: wire::text_frame(text),
            from_here,
            presence: !volatile,
            volatile,
        };
        for shard in self.subscriptions.shards_of(room) {
            self.sink.deliver(shard, event.clone());
        }
    }

    /// Hands one event to every shard serving `room`, once, in order.
    pub(super) fn forward(
        &mut self,
        room: &Arc<str>,
        epoch: &str,
        seq: u64,
        text: &[u8],
        from_here: Option<FromHere>,
    ) {
        let Some(epoch) = self.subscriptions.forward(room, epoch, seq) else {
            return;
        };
        let event = RoomEvent {
            room: room.clone(),
            epoch,
            seq,
            frame: wire::text_frame(text),
            from_here,
            presence: false,
            volatile: false,
        };
        for shard in self.subscriptions.shards_of(room) {
            self.sink.deliver(shard, event.clone());
        }
    }
}
