//! The messages routers on different shards send each other about rooms,
//! users and replies.
//!
//! The router queues them per destination (`Router::take_outbox`); the
//! reactor carries each shard's batch of one event-loop turn in one
//! channel message with one wake-up. Messages between two shards stay in
//! order, which is what keeps every room's messages in `seq` order on
//! every shard.

use std::sync::{Arc, OnceLock};

use std::time::Instant;

use crate::api::command::HistoryQuery;
use crate::api::part::Part;
use crate::api::reply::Reply;
use crate::api::{Call, NodeCommand};
use crate::codes::ErrorCode;
pub use crate::conn::ConnRef;
pub use crate::conn::packed::Twin;
use crate::proto::JoinRecovery;
use crate::proto::publish::NO_SEQ;
use crate::proto::reply::{self, OwnedId};
use crate::proto::wire;
pub use crate::rooms::delta::DeltaFrame;

/// Who hears the `seq` of a published message.
#[derive(Debug)]
pub enum PublishAnswer {
    /// Nobody: a WebSocket message without an `id`.
    Nobody,
    /// A WebSocket client, in an ack with its `id`.
    Ack(OwnedId),
    /// An HTTP publisher: message `index` of its request body.
    Http { index: usize },
    /// A Server API call (`call`, on the sender's shard): message `index`
    /// of its current command.
    Api { call: u64, index: usize },
}

impl PublishAnswer {
    /// The answer a WebSocket message with this `id` asks for.
    pub fn ack(id: Option<OwnedId>) -> Self {
        id.map_or(Self::Nobody, Self::Ack)
    }
}

/// A room event on its way to the room's owner, from any publisher.
#[derive(Debug)]
pub struct ToOwner {
    pub room: Arc<str>,
    pub event: Box<str>,
    pub data: Box<[u8]>,
    pub from: Arc<str>,
    pub sender: ConnRef,
    pub echo: bool,
    pub answer: PublishAnswer,
}

impl ToOwner {
    /// The bus message: `Volatile` (section 14), or `Publish` to be
    /// sequenced, read from its publisher at `read_at`.
    pub fn into_message(self, volatile: bool, read_at: Instant) -> BusMsg {
        if volatile {
            return BusMsg::Volatile(self);
        }
        BusMsg::Publish {
            room: self.room,
            event: self.event,
            data: self.data,
            from: self.from,
            sender: self.sender,
            echo: self.echo,
            answer: self.answer,
            read_at,
        }
    }
}

/// What a joining member is told once the owner decided.
#[derive(Debug)]
pub enum JoinAnswer {
    /// Its `room:join`'s ack (an `error` event when refused without `id`).
    Ack(Option<OwnedId>),
    /// A Server API `subscribe` (section 12): `room:subscribed` when
    /// admitted, nothing when refused.
    Subscribed,
}

impl JoinAnswer {
    /// The text for an admitted member: the ack with the join's `data`,
    /// or the `room:subscribed` event of the room's `state`.
    pub fn admitted(
        &self,
        state: &wire::RoomState<'_>,
        data: impl FnOnce() -> Vec<u8>,
    ) -> Option<Vec<u8>> {
        match self {
            JoinAnswer::Ack(id) => id.as_ref().map(|id| reply::ack_text(id, &data())),
            JoinAnswer::Subscribed => Some(wire::subscribed(state)),
        }
    }

    /// The text for a refused member.
    pub fn refused(&self, code: ErrorCode, why: &str) -> Option<Vec<u8>> {
        match self {
            JoinAnswer::Ack(id) => Some(reply::failure_text(id.as_ref(), code, why)),
            JoinAnswer::Subscribed => None,
        }
    }
}

/// One message between shards.
#[derive(Debug)]
pub enum BusMsg {
    /// To a room's owner: count a connection in and answer with the join ack.
    Join {
        room: Arc<str>,
        conn: ConnRef,
        /// The token's `sub`, shared with the connection's claims.
        user: Arc<str>,
        name: Option<Box<str>>,
        recovery: JoinRecovery,
        rejoin: bool,
        /// What the member is told: an ack, or `room:subscribed`.
        answer: JoinAnswer,
    },
    /// To a room's owner: connection `conn` of `user` left (or closed).
    Leave {
        room: Arc<str>,
        conn: ConnRef,
        user: Arc<str>,
    },
    /// To a room's owner: sequence, record and fan out a room event.
    Publish {
        room: Arc<str>,
        event: Box<str>,
        data: Box<[u8]>,
        from: Arc<str>,
        sender: ConnRef,
        echo: bool,
        /// Who hears the `seq` back.
        answer: PublishAnswer,
        /// When the publisher's shard read it, for the fan-out latency.
        read_at: Instant,
    },
    /// To a room's owner: a volatile event (section 14) for the members
    /// connected now, with no `seq` and no history; its publisher hears `{}`.
    Volatile(ToOwner),
    /// To a room's owner: answer `presence:get`.
    PresenceGet {
        room: Arc<str>,
        conn: ConnRef,
        id: Option<OwnedId>,
    },
    /// To a shard with members: queue `frame` for its members of `room`.
    Deliver {
        room: Arc<str>,
        frame: Arc<[u8]>,
        exclude: Option<ConnRef>,
        fanout: Fanout,
        /// What the shards it is sent to encode once for all of them.
        made: Arc<Encodings>,
    },
    /// To the joiner's shard: the owner's answer to `Join`.
    Joined {
        room: Arc<str>,
        conn: ConnRef,
        accepted: bool,
        reply: Option<Vec<u8>>,
    },
    /// To a connection's shard: a reply to queue for it.
    Reply { conn: ConnRef, text: Vec<u8> },
    /// To a WebSocket publisher's shard: the ack of its message `id`,
    /// which got `seq`; written there straight into its queue.
    SeqAck {
        conn: ConnRef,
        id: OwnedId,
        seq: u64,
    },
    /// To an HTTP publisher's shard: message `index` of its request got `seq`.
    Published {
        conn: ConnRef,
        index: usize,
        seq: u64,
    },
    /// To an HTTP publisher's shard: message `index` of its request was
    /// refused (cluster mode, Redis away).
    PublishRefused { conn: ConnRef, index: usize },
    /// To every shard: deliver to each connection of `to`, then count.
    UserSend {
        to: Box<str>,
        frame: Arc<[u8]>,
        twin: Arc<Twin>,
        exclude: ConnRef,
        gather: u64,
    },
    /// To every shard: deliver to each `/ws` connection, then count.
    Broadcast {
        frame: Arc<[u8]>,
        twin: Arc<Twin>,
        exclude: ConnRef,
        gather: u64,
    },
    /// To the owner of the online set (cluster mode): a `/ws` connection
    /// of `user` opened (`up`) or closed.
    Online { user: Arc<str>, up: bool },
    /// To the shard gathering counts for a `user:send` or broadcast ack.
    Counted { gather: u64, count: usize },
    /// To an API connection's own shard: run its call (`rooms::api`).
    ApiCall {
        conn: ConnRef,
        call: Box<Call>,
        from: Arc<str>,
    },
    /// To a call's shard: message `index` of its current command got
    /// `seq` (`None`: refused, Redis away).
    ApiPublished {
        call: u64,
        index: usize,
        seq: Option<u64>,
    },
    /// To a room's owner: read or change the room for a call.
    ApiRoom {
        room: Arc<str>,
        ask: RoomAsk,
        to: ApiTo,
    },
    /// To a call's shard: the reply of its current command.
    ApiDone { call: u64, reply: Reply },
    /// To every shard of this node, from a gather's shard: pass `command`
    /// on to every shard (`ApiShard`), behind the room traffic this shard
    /// already sent them.
    ApiRelay {
        command: Arc<NodeCommand>,
        to: ApiTo,
    },
    /// To every shard of this node, from every shard: once it came from
    /// all of them, carry out `command` on its own connections or rooms,
    /// and answer gather `to` with a part.
    ApiShard {
        command: Arc<NodeCommand>,
        to: ApiTo,
    },
    /// To a gather's shard: one shard's part.
    ApiPart { gather: u64, part: Part },
    /// To a call's shard, from the shard the bridge hands API messages
    /// to: node `from`'s part of call `op`, as its result text.
    ApiAnswer {
        op: u64,
        from: String,
        result: Vec<u8>,
    },
}

/// A call or gather of the Server API, on the shard that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiTo {
    pub shard: usize,
    pub id: u64,
}

/// What a Server API call asks of a room's owner.
#[derive(Debug)]
pub enum RoomAsk {
    Presence,
    History(HistoryQuery),
    HistoryRemove,
}

/// One room event's delta frame, encoded by the first shard that needs
/// it: the frame of the event it was encoded from, and the delta frame
/// with its MessagePack twin's cell (`None`: the delta is not shorter, or
/// not UTF-8).
pub type SharedDelta = OnceLock<(Arc<[u8]>, Option<DeltaFrame>)>;

/// What the shards a fan-out goes to encode once for all of them: each
/// cell is filled by the first shard that needs it, and a shard that needs
/// neither never touches them. The owner reuses the cells (`CellPool`).
#[derive(Debug, Default)]
pub struct Encodings {
    /// The frame's MessagePack twin.
    pub twin: Twin,
    /// A room event's delta (never filled for other fan-outs).
    pub delta: SharedDelta,
}

impl Encodings {
    /// Empties both cells for the next message.
    fn clear(&mut self) {
        self.twin.take();
        self.delta.take();
    }
}

/// The most `Encodings` cells an owner keeps for reuse: about the fan-outs
/// in flight at once; past it a cell still held is left to its holders.
const POOLED_CELLS: usize = 4096;

/// `Encodings` cells handed out in turn and taken again once every shard
/// has dropped its share, so that a fan-out costs no allocation of its own.
/// Shards drop their shares in about the order they were sent, so the
/// oldest cell is the one to try; a cell still held (a paced member keeps
/// its event for its slot) is passed over. A free cell keeps what was
/// encoded in it (a MessagePack twin, a delta) until it is reused: at most
/// one message's encodings per cell of the ring.
#[derive(Debug, Default)]
struct CellPool {
    ring: Vec<Arc<Encodings>>,
    next: usize,
}

impl CellPool {
    /// An empty cell, reused when the oldest is free again.
    fn take(&mut self) -> Arc<Encodings> {
        if let Some(cell) = self.ring.get_mut(self.next)
            && let Some(free) = Arc::get_mut(cell)
        {
            free.clear();
            let cell = cell.clone();
            self.next = (self.next + 1) % self.ring.len();
            return cell;
        }
        let fresh = Arc::new(Encodings::default());
        if self.ring.len() < POOLED_CELLS {
            self.ring.push(fresh.clone());
        } else if let Some(held) = self.ring.get_mut(self.next) {
            *held = fresh.clone();
            self.next = (self.next + 1) % self.ring.len();
        }
        fresh
    }
}

/// What a `Deliver` carries: a room event, or anything else (presence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// A sequenced room event, read from its publisher at `read_at`.
    RoomEvent { read_at: Instant },
    /// A presence event: no `seq`, never conflated or dropped as a room
    /// event, not a delivery in the metrics.
    Other,
    /// A volatile room event (section 14): no `seq`, left out for a member
    /// whose queue is above half its bound.
    Volatile,
}

/// Bus messages queued during one turn, per destination shard (this one
/// included: the router handles its own before the turn ends).
#[derive(Debug)]
pub struct Outbox {
    queues: Vec<Vec<BusMsg>>,
    /// The emptied batch of this shard's own messages, kept to be the
    /// queue again (`take_own`, `give_back`).
    spare: Vec<BusMsg>,
    cells: CellPool,
}

/// The most messages a kept batch of a shard's own has room for: a burst
/// does not pin its size for good.
const MAX_KEPT_BATCH: usize = 4096;

impl Outbox {
    /// An empty outbox for `shards` destinations.
    pub fn new(shards: usize) -> Self {
        Self {
            queues: (0..shards).map(|_| Vec::new()).collect(),
            spare: Vec::new(),
            cells: CellPool::default(),
        }
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.queues.len()
    }

    /// Queues `message` for `shard`; sent in order.
    pub fn send(&mut self, shard: usize, message: BusMsg) {
        if let Some(queue) = self.queues.get_mut(shard) {
            queue.push(message);
        }
    }

    /// What is queued for `shard`, leaving its queue empty with the room
    /// the last batch needed, so that a busy turn's batch is one
    /// allocation rather than a chain of regrowths.
    pub fn take(&mut self, shard: usize) -> Vec<BusMsg> {
        match self.queues.get_mut(shard) {
            Some(queue) if !queue.is_empty() => {
                let room = queue.len();
                std::mem::replace(queue, Vec::with_capacity(room))
            }
            _ => Vec::new(),
        }
    }

    /// What is queued for `shard`, which is the caller's own: handled on
    /// this thread, the batch comes back emptied (`give_back`) and the two
    /// take turns as the queue, so that a turn's own traffic allocates no
    /// batch.
    pub fn take_own(&mut self, shard: usize) -> Vec<BusMsg> {
        match self.queues.get_mut(shard) {
            Some(queue) => std::mem::replace(queue, std::mem::take(&mut self.spare)),
            None => Vec::new(),
        }
    }

    /// An emptied batch from `take_own`, kept for the next.
    pub fn give_back(&mut self, mut batch: Vec<BusMsg>) {
        batch.clear();
        if batch.capacity() <= MAX_KEPT_BATCH && batch.capacity() > self.spare.capacity() {
            self.spare = batch;
        }
    }

    /// Whether anything is queued for `shard`.
    pub fn has(&self, shard: usize) -> bool {
        self.queues.get(shard).is_some_and(|q| !q.is_empty())
    }

    /// Sends `frame` to each of `shards`, for its members of `room`.
    pub fn fan_out(
        &mut self,
        shards: impl IntoIterator<Item = usize>,
        room: &Arc<str>,
        frame: &Arc<[u8]>,
        exclude: Option<ConnRef>,
        fanout: Fanout,
    ) {
        let made = self.cells.take();
        for shard in shards {
            let deliver = BusMsg::Deliver {
                room: room.clone(),
                frame: frame.clone(),
                exclude,
                fanout,
                made: made.clone(),
            };
            self.send(shard, deliver);
        }
    }

    /// The owner's answer to a join of `conn`: accepted or not, and the
    /// text to queue for it.
    pub fn joined(
        &mut self,
        room: Arc<str>,
        conn: ConnRef,
        accepted: bool,
        reply: Option<Vec<u8>>,
    ) {
        let joined = BusMsg::Joined {
            room,
            conn,
            accepted,
            reply,
        };
        self.send(conn.shard, joined);
    }

    /// Tells a publisher the `seq` its message got, as it asked.
    pub fn answer_publish(&mut self, sender: ConnRef, answer: PublishAnswer, seq: u64) {
        let message = match answer {
            PublishAnswer::Nobody => return,
            PublishAnswer::Ack(id) => BusMsg::SeqAck {
                conn: sender,
                id,
                seq,
            },
            PublishAnswer::Http { index } => BusMsg::Published {
                conn: sender,
                index,
                seq,
            },
            PublishAnswer::Api { call, index } => BusMsg::ApiPublished {
                call,
                index,
                seq: Some(seq),
            },
        };
        self.send(sender.shard, message);
    }

    /// Tells the publisher of a volatile event that it went out: an ack
    /// `{}`, or `NO_SEQ` where a `seq` would go.
    pub fn answer_volatile(&mut self, sender: ConnRef, answer: PublishAnswer) {
        let message = match answer {
            PublishAnswer::Ack(id) => BusMsg::Reply {
                conn: sender,
                text: reply::ack_text(&id, b"{}"),
            },
            answer => return self.answer_publish(sender, answer, NO_SEQ),
        };
        self.send(sender.shard, message);
    }

    /// Tells a publisher (or a request's sender) its request failed with
    /// `code`; an HTTP publisher hears it in its response.
    pub fn refuse(&mut self, sender: ConnRef, answer: PublishAnswer, code: ErrorCode, why: &str) {
        let message = match answer {
            PublishAnswer::Http { index } => BusMsg::PublishRefused {
                conn: sender,
                index,
            },
            PublishAnswer::Api { call, index } => BusMsg::ApiPublished {
                call,
                index,
                seq: None,
            },
            PublishAnswer::Ack(id) => BusMsg::Reply {
                conn: sender,
                text: reply::failure_text(Some(&id), code, why),
            },
            PublishAnswer::Nobody => BusMsg::Reply {
                conn: sender,
                text: reply::failure_text(None, code, why),
            },
        };
        self.send(sender.shard, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_queue_keeps_room_for_a_batch_as_large() {
        let mut outbox = Outbox::new(1);
        let room: Arc<str> = Arc::from("r");
        let frame: Arc<[u8]> = Arc::from(&b"{}"[..]);
        for _ in 0..100 {
            outbox.fan_out([0], &room, &frame, None, Fanout::Other);
        }
        assert_eq!(outbox.take(0).len(), 100);
        assert!(outbox.queues[0].capacity() >= 100);
        assert!(outbox.take(0).is_empty());
    }

    #[test]
    fn an_own_batch_given_back_becomes_the_queue_again() {
        let mut outbox = Outbox::new(1);
        let room: Arc<str> = Arc::from("r");
        let frame: Arc<[u8]> = Arc::from(&b"{}"[..]);
        outbox.fan_out([0], &room, &frame, None, Fanout::Other);
        outbox.fan_out([0], &room, &frame, None, Fanout::Other);
        let batch = outbox.take_own(0);
        assert_eq!(batch.len(), 2);
        let kept = batch.as_ptr();
        outbox.give_back(batch);
        outbox.fan_out([0], &room, &frame, None, Fanout::Other);
        let next = outbox.take_own(0);
        assert_eq!(next.len(), 1);
        outbox.give_back(next);
        let third = outbox.take_own(0);
        assert!(third.is_empty());
        assert_eq!(
            third.as_ptr(),
            kept,
            "the first batch's buffer is the queue again"
        );
        assert!(third.capacity() >= 2);
    }

    #[test]
    fn a_fan_out_shares_one_encodings_cell_across_its_shards() {
        let mut outbox = Outbox::new(3);
        let room: Arc<str> = Arc::from("r");
        let frame: Arc<[u8]> = Arc::from(&b"{}"[..]);
        outbox.fan_out([0, 2], &room, &frame, None, Fanout::Other);
        outbox.fan_out([0], &room, &frame, None, Fanout::Other);
        let mut made = |shard: usize| -> Vec<Arc<Encodings>> {
            outbox
                .take(shard)
                .into_iter()
                .map(|message| match message {
                    BusMsg::Deliver { made, .. } => made,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let (first, last) = (made(0), made(2));
        assert_eq!((first.len(), last.len()), (2, 1));
        assert!(Arc::ptr_eq(&first[0], &last[0]), "one cell per message");
        assert!(!Arc::ptr_eq(&first[0], &first[1]), "a cell per message");
    }

    #[test]
    fn a_cell_is_reused_empty_once_every_shard_dropped_it_and_never_before() {
        let mut pool = CellPool::default();
        let first = pool.take();
        let _ = first.twin.set(Some(Arc::from(&b"packed"[..])));
        let held = pool.take();
        assert!(!Arc::ptr_eq(&first, &held), "a held cell is not handed out");
        let first_at = Arc::as_ptr(&first);
        drop(first);
        let again = pool.take();
        assert_eq!(
            Arc::as_ptr(&again),
            first_at,
            "the oldest free cell comes back"
        );
        assert!(again.twin.get().is_none(), "emptied before reuse");
        assert!(!Arc::ptr_eq(&again, &held));
    }

    #[test]
    fn a_full_pool_passes_over_a_cell_held_for_good() {
        let mut pool = CellPool::default();
        let pinned = pool.take();
        let mut held = Vec::new();
        for _ in 1..POOLED_CELLS {
            held.push(pool.take());
        }
        assert_eq!(pool.ring.len(), POOLED_CELLS);
        let fresh = pool.take();
        assert!(!Arc::ptr_eq(&fresh, &pinned));
        assert_eq!(pool.ring.len(), POOLED_CELLS, "bounded");
        assert!(
            pool.ring.iter().all(|c| !Arc::ptr_eq(c, &pinned)),
            "passed over"
        );
    }
}
