//! The owner's view of rooms: sequence numbers, epochs, history, member
//! counts per shard and presence. Every room is owned by exactly one shard
//! (see `rooms::owner_of`), so this table is only ever touched by that
//! shard's thread and needs no lock; ordering per room follows from it.
//!
//! Sans-IO: takes names, bytes and an `Instant`, returns JSON and frames.
//! In cluster mode (`rooms::cluster`) Redis sequences the rooms and keeps
//! their history; the owner then uses this table only to count the node's
//! members (`admit`, `leave`), for the fan-out, presence and the room limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codes::limits::MAX_PRESENCE_USERS;
use crate::config::RoomsConfig;
use crate::hooks::webhook::Message;
use crate::proto::names::pattern_matches;
use crate::proto::wire;
use crate::rooms::hash::FastMap;
use crate::rooms::notes::Notes;

/// Who joins.
#[derive(Debug, Clone)]
pub struct Joiner<'a> {
    pub shard: usize,
    /// Kept by the room's presence list without a copy of the string.
    pub user_id: Arc<str>,
    pub name: Option<&'a str>,
    /// The connection is already in the room: answer without counting it again.
    pub rejoin: bool,
}

/// What a join asks to get back (`history`, `since`, `epoch`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovery<'a> {
    pub history: Option<u64>,
    pub since: Option<u64>,
    pub epoch: Option<&'a str>,
}

/// A successful join.
#[derive(Debug)]
pub struct Joined {
    /// `{"room","epoch","seq","messages","recovered"?,"members"}`.
    pub data: Vec<u8>,
    /// A `presence:join` frame for the other members, when due.
    pub presence: Option<Arc<[u8]>>,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The room holds `--max-room-members` connections.
    RoomFull,
}

/// A message to publish.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    pub room: &'a str,
    pub event: &'a str,
    /// The `data` JSON text exactly as the sender wrote it.
    pub data: &'a [u8],
    pub from: &'a str,
    pub ts_ms: u64,
}

/// A published message.
#[derive(Debug, Clone)]
pub struct Published {
    pub seq: u64,
    /// The one frame every member gets.
    pub frame: Arc<[u8]>,
}

struct HistoryEntry {
    seq: u64,
    frame: Arc<[u8]>,
    at: Instant,
}

struct UserPresence {
    name: Option<Box<str>>,
    connections: u32,
}

struct Room {
    epoch: Arc<str>,
    seq: u64,
    history: VecDeque<HistoryEntry>,
    connections: usize,
    per_shard: Vec<u32>,
    /// By user id; the keys share the strings of the connections' claims.
    users: HashMap<Arc<str>, UserPresence>,
    announces_presence: bool,
    /// Messages published since the last `busiest` (the dashboard's rate).
    published: u64,
}

/// The rooms owned by one shard.
pub struct RoomTable {
    config: RoomsConfig,
    /// Shards of this node: the length of each room's member counts.
    shards: usize,
    rooms: FastMap<Box<str>, Room>,
    /// Makes epochs unique across shards and restarts.
    epoch_seed: u64,
    epochs_made: u64,
    /// `--webhook` (one process): the rooms' firsts and lasts and their
    /// messages, noticed here because only the owner sees them.
    pub notes: Option<Notes>,
}

impl RoomTable {
    /// An empty table for a node of `shards` shards; `epoch_seed` should
    /// differ per shard and per process.
    pub fn new(config: RoomsConfig, shards: usize, epoch_seed: u64) -> Self {
        Self {
            config,
            shards,
            rooms: FastMap::default(),
            epoch_seed,
            epochs_made: 0,
            notes: None,
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// Rooms currently known.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room is known.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    fn room_mut(&mut self, name: &str) -> &mut Room {
        if !self.rooms.contains_key(name) {
            self.epochs_made += 1;
            let epoch = format!("{:x}-{:x}", self.epoch_seed, self.epochs_made);
            let room = Room {
                epoch: Arc::from(epoch),
                seq: 0,
                history: VecDeque::new(),
                connections: 0,
                per_shard: vec![0; self.shards],
                users: HashMap::new(),
                announces_presence: self.announces(name),
                published: 0,
            };
            self.rooms.insert(name.into(), room);
        }
        self.rooms.get_mut(name).expect("inserted above")
    }

    /// Prunes `name`'s history and forgets the room if nothing is left, so
    /// that what comes next starts a new epoch at once (not at the next sweep).
    fn prune_or_forget(&mut self, name: &str, now: Instant) {
        let ttl = self.config.history.ttl;
        if let Some(room) = self.rooms.get_mut(name) {
            room.prune(ttl, now);
        }
        self.forget_if_empty(name);
    }

    fn forget_if_empty(&mut self, name: &str) {
        if self.rooms.get(name).is_some_and(Room::is_forgotten) {
            self.rooms.remove(name);
        }
    }
}

impl Room {
    /// No member and no history: nothing to keep it for.
    fn is_forgotten(&self) -> bool {
        self.connections == 0 && self.history.is_empty()
    }

    /// Gives `message` the next `seq`, keeping it in the history.
    fn record(&mut self, message: &Publish<'_>, keep: usize, now: Instant) -> Published {
        self.seq += 1;
        self.published += 1;
        let frame = wire::room_frame(
            message.event,
            message.room,
            message.data,
            message.from,
            self.seq,
            message.ts_ms,
        );
        if keep > 0 {
            if self.history.len() == keep {
                self.history.pop_front();
            }
            self.history.push_back(HistoryEntry {
                seq: self.seq,
                frame: frame.clone(),
                at: now,
            });
        }
        Published {
            seq: self.seq,
            frame,
        }
    }

    fn prune(&mut self, ttl: Duration, now: Instant) {
        while self
            .history
            .front()
            .is_some_and(|e| now.duration_since(e.at) >= ttl)
        {
            self.history.pop_front();
        }
    }

    /// The messages a join gets back, and whether they recover the gap.
    fn recover(&self, recovery: &Recovery<'_>) -> (Vec<&HistoryEntry>, Option<bool>) {
        let last_k = |k: usize| {
            let skip = self.history.len().saturating_sub(k);
            self.history.iter().skip(skip).collect::<Vec<_>>()
        };
        let Some(since) = recovery.since else {
            let k = recovery
                .history
                .map_or(0, |k| usize::try_from(k).unwrap_or(usize::MAX));
            return (last_k(k), None);
        };
        let same_epoch = recovery.epoch == Some(&*self.epoch);
        let oldest_needed = since.saturating_add(1);
        let covered = since == self.seq
            || (since < self.seq && self.history.front().is_some_and(|e| e.seq <= oldest_needed));
        if same_epoch && covered {
            let missed = self.history.iter().filter(|e| e.seq > since).collect();
            return (missed, Some(true));
        }
        let k = recovery
            .history
            .map_or(usize::MAX, |k| usize::try_from(k).unwrap_or(usize::MAX));
        (last_k(k), Some(false))
    }

    /// The result of a Server API `history`: as a join with this
    /// `recovery` would get it, without `members`.
    fn history_data(&self, name: &str, recovery: &Recovery<'_>) -> Vec<u8> {
        self.write_recovered(name, recovery, false)
    }

    fn join_data(&self, name: &str, recovery: &Recovery<'_>) -> Vec<u8> {
        self.write_recovered(name, recovery, true)
    }

    /// The room's state and the messages `recovery` gets, `with_members`
    /// (a join's `data`) or not (a `history` result).
    fn write_recovered(&self, name: &str, recovery: &Recovery<'_>, with_members: bool) -> Vec<u8> {
        let (messages, recovered) = self.recover(recovery);
        let state = wire::RoomState {
            room: name,
            epoch: &self.epoch,
            seq: self.seq,
            recovered,
            members: self.connections as u64,
        };
        let texts = messages.iter().map(|e| wire::frame_text(&e.frame));
        wire::room_data(&state, texts, with_members)
    }
}

impl RoomTable {
    /// Counts a connection of `joiner` into `name` (unless it is a rejoin);
    /// returns a `presence:join` frame when it is the user's first
    /// connection in a room that announces presence. The join's history is
    /// the caller's: this table's (`join`) or the cluster's.
    pub fn admit(
        &mut self,
        name: &str,
        joiner: &Joiner<'_>,
    ) -> Result<Option<Arc<[u8]>>, JoinError> {
        let max_members = self.config.max_room_members;
        let event_limit = self.config.presence.event_limit;
        let room = self.room_mut(name);
        if joiner.rejoin {
            return Ok(None);
        }
        if max_members > 0 && room.connections >= max_members {
            self.forget_if_empty(name);
            return Err(JoinError::RoomFull);
        }
        room.connections += 1;
        if let Some(count) = room.per_shard.get_mut(joiner.shard) {
            *count += 1;
        }
        let user = room
            .users
            .entry(joiner.user_id.clone())
            .or_insert(UserPresence {
                name: joiner.name.map(Into::into),
                connections: 0,
            });
        user.connections += 1;
        let first_here = user.connections == 1;
        let occupied = room.connections == 1;
        let presence_room = room.announces_presence;
        let announce = first_here && presence_room && room.connections <= event_limit;
        if let Some(notes) = &mut self.notes {
            if occupied {
                notes.room(name, true);
            }
            if first_here && presence_room {
                notes.presence(name, &joiner.user_id, true);
            }
        }
        Ok(announce
            .then(|| wire::text_frame(&wire::presence_join(name, &joiner.user_id, joiner.name))))
    }

    /// Every room with members here, and each of its users: `f(room, user,
    /// connections, name)`.
    pub fn each_user(&self, mut f: impl FnMut(&str, &str, u32, Option<&str>)) {
        for (room, state) in &self.rooms {
            for (user, presence) in &state.users {
                f(room, user, presence.connections, presence.name.as_deref());
            }
        }
    }

    /// Whether `name` announces joins and leaves (`--presence-rooms`).
    pub fn announces(&self, name: &str) -> bool {
        self.config
            .presence
            .rooms
            .iter()
            .any(|p| pattern_matches(p, name))
    }

    /// A message was published into `name` (cluster mode: it came back
    /// from Redis); counted for `busiest`.
    pub fn count_published(&mut self, name: &str) {
        if let Some(room) = self.rooms.get_mut(name) {
            room.published += 1;
        }
    }

    /// The `n` rooms with the most messages since the last call (then those
    /// with the most connections): `(room, connections here, messages)`.
    /// The counts start again from zero.
    pub fn busiest(&mut self, n: usize) -> Vec<(Arc<str>, u64, u64)> {
        let mut all: Vec<(&str, u64, u64)> = self
            .rooms
            .iter_mut()
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, room)| {
                (
                    &**name,
                    room.connections as u64,
                    std::mem::take(&mut room.published),
                )
            })
            .collect();
        let order = |a: &(&str, u64, u64), b: &(&str, u64, u64)| b.2.cmp(&a.2).then(b.1.cmp(&a.1));
        // Only the top `n` are sorted, and only they get a shared name.
        if all.len() > n {
            all.select_nth_unstable_by(n, order);
            all.truncate(n);
        }
        all.sort_unstable_by(order);
        all.into_iter()
            .map(|(name, members, published)| (Arc::from(name), members, published))
            .collect()
    }

    /// A room's history as a join with `recovery` would read it (section
    /// 12's `history`); a room not known here reads as a new one, and is
    /// not kept.
    pub fn history(&mut self, name: &str, recovery: &Recovery<'_>, now: Instant) -> Vec<u8> {
        self.prune_or_forget(name, now);
        let data = self.room_mut(name).history_data(name, recovery);
        self.forget_if_empty(name);
        data
    }

    /// Drops a room's messages (section 12's `history_remove`); its `seq`
    /// and epoch stay while it has members.
    pub fn remove_history(&mut self, name: &str) {
        if let Some(room) = self.rooms.get_mut(name) {
            room.history.clear();
        }
        self.forget_if_empty(name);
    }

    /// Rooms with members here whose name `matches`: `(room, connections,
    /// users)`, in no order.
    pub fn rooms_with_members(
        &self,
        matches: impl Fn(&str) -> bool,
    ) -> impl Iterator<Item = (&str, u64, u64)> {
        self.rooms
            .iter()
            .filter(move |(name, room)| room.connections > 0 && matches(name))
            .map(|(name, room)| (&**name, room.connections as u64, room.users.len() as u64))
    }

    /// The room as a `room:subscribed` reports it (`None`: not known here).
    pub fn state(&self, name: &str) -> Option<wire::RoomState<'_>> {
        let (name, room) = self.rooms.get_key_value(name)?;
        Some(wire::RoomState {
            room: name,
            epoch: &room.epoch,
            seq: room.seq,
            recovered: None,
            members: room.connections as u64,
        })
    }

    /// Connections in `name` counted here (on every shard of this process).
    pub fn connections(&self, name: &str) -> usize {
        self.rooms.get(name).map_or(0, |r| r.connections)
    }
}

impl RoomTable {
    /// Adds a connection of `joiner` on `shard` (or re-reads the room for a
    /// connection already in it) and returns the join ack's `data`.
    pub fn join(
        &mut self,
        name: &str,
        joiner: &Joiner<'_>,
        recovery: &Recovery<'_>,
        now: Instant,
    ) -> Result<Joined, JoinError> {
        self.prune_or_forget(name, now);
        let presence = self.admit(name, joiner)?;
        let room = self.rooms.get(name).expect("admitted above");
        Ok(Joined {
            data: room.join_data(name, recovery),
            presence,
        })
    }

    /// Removes a connection; returns a `presence:leave` frame when it was
    /// the user's last connection in a room that announces presence.
    pub fn leave(
        &mut self,
        name: &str,
        shard: usize,
        user_id: &str,
        _now: Instant,
    ) -> Option<Arc<[u8]>> {
        let event_limit = self.config.presence.event_limit;
        let room = self.rooms.get_mut(name)?;
        let announce_if_last = room.announces_presence && room.connections <= event_limit;
        room.connections = room.connections.saturating_sub(1);
        if let Some(count) = room.per_shard.get_mut(shard) {
            *count = count.saturating_sub(1);
        }
        let mut presence = None;
        let mut left = None;
        if let Some(user) = room.users.get_mut(user_id) {
            user.connections -= 1;
            if user.connections == 0 {
                left = room.users.remove_entry(user_id).map(|(user, _)| user);
                if announce_if_last {
                    presence = Some(wire::text_frame(&wire::presence_leave(name, user_id)));
                }
            }
        }
        let vacated = room.connections == 0;
        let presence_room = room.announces_presence;
        if let Some(notes) = &mut self.notes {
            if let Some(user) = left.filter(|_| presence_room) {
                notes.presence(name, &user, false);
            }
            if vacated {
                notes.room(name, false);
            }
        }
        self.forget_if_empty(name);
        presence
    }

    /// Assigns the next `seq`, encodes the message once, keeps it in history.
    pub fn publish(&mut self, message: &Publish<'_>, now: Instant) -> Published {
        let ttl = self.config.history.ttl;
        let keep = self.config.history.messages;
        // One lookup for a live room: pruned, then recorded in place.
        let mut recorded = None;
        if let Some(room) = self.rooms.get_mut(message.room) {
            room.prune(ttl, now);
            if !room.is_forgotten() {
                recorded = Some(room.record(message, keep, now));
            }
        }
        let published = match recorded {
            Some(published) => published,
            None => {
                // Nothing left of it (or never was): a new room, new epoch.
                self.rooms.remove(message.room);
                self.room_mut(message.room).record(message, keep, now)
            }
        };
        if let Some(notes) = &mut self.notes
            && notes.wants_message(message.room)
        {
            notes.message(Message {
                room: message.room.into(),
                event: message.event.into(),
                data: message.data.into(),
                from: message.from.into(),
                seq: published.seq,
                ts: message.ts_ms,
            });
        }
        if keep == 0 {
            // Otherwise the event just recorded keeps the room.
            self.forget_if_empty(message.room);
        }
        published
    }

    /// The `data` of a `presence:get` ack.
    pub fn presence(&self, name: &str) -> Vec<u8> {
        let Some(room) = self.rooms.get(name) else {
            return wire::presence_data(name, 0, std::iter::empty(), false);
        };
        let listed = room
            .users
            .iter()
            .take(MAX_PRESENCE_USERS)
            .map(|(id, user)| (&**id, user.name.as_deref(), u64::from(user.connections)));
        let truncated = room.users.len() > MAX_PRESENCE_USERS;
        wire::presence_data(name, room.users.len() as u64, listed, truncated)
    }

    /// The shards that have members in `room`.
    pub fn member_shards(&self, name: &str) -> impl Iterator<Item = usize> + '_ {
        let counts = self.rooms.get(name).map_or(&[][..], |room| &room.per_shard);
        counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(shard, _)| shard)
    }

    /// Drops expired history and forgets rooms with nothing left.
    pub fn sweep(&mut self, now: Instant) {
        let ttl = self.config.history.ttl;
        self.rooms.retain(|_, room| {
            room.prune(ttl, now);
            !room.is_forgotten()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(history: usize) -> RoomTable {
        let mut config = RoomsConfig::default();
        config.history.messages = history;
        RoomTable::new(config, 2, 7)
    }

    fn joiner(user: &str, shard: usize) -> Joiner<'static> {
        Joiner {
            shard,
            user_id: user.into(),
            name: None,
            rejoin: false,
        }
    }

    fn publish(table: &mut RoomTable, room: &str, data: &str, now: Instant) -> Published {
        table.publish(
            &Publish {
                room,
                event: "chat:msg",
                data: data.as_bytes(),
                from: "u",
                ts_ms: 1,
            },
            now,
        )
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Joins "r" as user "a" and returns the room's epoch.
    fn first_join_epoch(t: &mut RoomTable, now: Instant) -> String {
        let joined = t
            .join("r", &joiner("a", 0), &Recovery::default(), now)
            .unwrap();
        epoch_of(&text(&joined.data))
    }

    fn epoch_of(data: &str) -> String {
        let start = data.find("\"epoch\":\"").unwrap() + 9;
        data[start..start + data[start..].find('"').unwrap()].to_owned()
    }

    #[test]
    fn seq_counts_from_one_and_frames_are_shared_with_history() {
        let mut t = table(3);
        let now = Instant::now();
        let first = publish(&mut t, "r", "1", now);
        let second = publish(&mut t, "r", "2", now);
        assert_eq!((first.seq, second.seq), (1, 2));
        let joined = t
            .join(
                "r",
                &joiner("a", 0),
                &Recovery {
                    history: Some(5),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        let data = text(&joined.data);
        assert!(
            data.contains(&format!(
                "\"messages\":[{},{}]",
                text(wire::frame_text(&first.frame)),
                text(wire::frame_text(&second.frame))
            )),
            "{data}"
        );
        assert!(data.contains("\"seq\":2"));
        assert!(data.ends_with("\"members\":1}"));
    }

    #[test]
    fn recovery_within_the_ring_returns_exactly_the_missed_messages() {
        let mut t = table(10);
        let now = Instant::now();
        let epoch = first_join_epoch(&mut t, now);
        for i in 0..5 {
            publish(&mut t, "r", &i.to_string(), now);
        }
        let again = Recovery {
            since: Some(3),
            epoch: Some(&epoch),
            history: None,
        };
        let data = text(&t.join("r", &joiner("a", 1), &again, now).unwrap().data);
        assert!(data.contains("\"recovered\":true"), "{data}");
        assert!(
            data.contains("\"seq\":4,")
                && data.contains("\"seq\":5,")
                && !data.contains("\"seq\":3,"),
            "{data}"
        );
        let current = Recovery {
            since: Some(5),
            epoch: Some(&epoch),
            history: None,
        };
        let data = text(&t.join("r", &joiner("b", 1), &current, now).unwrap().data);
        assert!(
            data.contains("\"messages\":[],\"recovered\":true"),
            "{data}"
        );
    }

    #[test]
    fn overflowed_ring_or_other_epoch_is_not_recovered() {
        let mut t = table(3);
        let now = Instant::now();
        let epoch = first_join_epoch(&mut t, now);
        for i in 0..6 {
            publish(&mut t, "r", &i.to_string(), now);
        }
        let gap = Recovery {
            since: Some(1),
            epoch: Some(&epoch),
            history: None,
        };
        let data = text(&t.join("r", &joiner("a", 0), &gap, now).unwrap().data);
        assert!(data.contains("\"recovered\":false"), "{data}");
        assert_eq!(data.matches("\"event\":\"chat:msg\"").count(), 3);
        let other = Recovery {
            since: Some(5),
            epoch: Some("nope"),
            history: Some(1),
        };
        let data = text(&t.join("r", &joiner("a", 0), &other, now).unwrap().data);
        assert!(data.contains("\"recovered\":false"), "{data}");
        assert_eq!(data.matches("\"event\":\"chat:msg\"").count(), 1);
    }

    #[test]
    fn a_room_with_nothing_left_starts_a_new_epoch() {
        let mut t = table(0);
        let now = Instant::now();
        assert_eq!(publish(&mut t, "r", "1", now).seq, 1);
        assert_eq!(publish(&mut t, "r", "2", now).seq, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_room_whose_history_expired_starts_afresh_without_waiting_for_a_sweep() {
        let mut t = table(5);
        let start = Instant::now();
        let first = first_join_epoch(&mut t, start);
        publish(&mut t, "r", "1", start);
        t.leave("r", 0, "a", start);
        let later = start + Duration::from_secs(301);
        assert_eq!(publish(&mut t, "r", "2", later).seq, 1);
        let joined = t
            .join("r", &joiner("a", 0), &Recovery::default(), later)
            .unwrap();
        assert_ne!(epoch_of(&text(&joined.data)), first);
    }

    #[test]
    fn without_history_a_room_without_members_is_forgotten_after_each_publish() {
        let mut t = table(0);
        let now = Instant::now();
        assert_eq!(publish(&mut t, "r", "1", now).seq, 1);
        assert_eq!(publish(&mut t, "r", "2", now).seq, 1);
        first_join_epoch(&mut t, now);
        assert_eq!(publish(&mut t, "r", "3", now).seq, 1);
        assert_eq!(publish(&mut t, "r", "4", now).seq, 2);
    }

    #[test]
    fn history_expires_after_the_ttl() {
        let mut t = table(5);
        let start = Instant::now();
        publish(&mut t, "r", "1", start);
        t.sweep(start + Duration::from_secs(301));
        assert!(t.is_empty());
    }

    #[test]
    fn presence_is_announced_once_per_user() {
        let mut t = table(1);
        let now = Instant::now();
        assert!(
            t.join("r", &joiner("a", 0), &Recovery::default(), now)
                .unwrap()
                .presence
                .is_some()
        );
        assert!(
            t.join("r", &joiner("a", 1), &Recovery::default(), now)
                .unwrap()
                .presence
                .is_none()
        );
        assert!(t.leave("r", 0, "a", now).is_none());
        let leave = t.leave("r", 1, "a", now).unwrap();
        assert_eq!(
            wire::frame_text(&leave),
            br#"{"event":"presence:leave","room":"r","data":{"userId":"a"}}"#
        );
    }

    #[test]
    fn presence_get_counts_distinct_users() {
        let mut t = table(1);
        let now = Instant::now();
        t.join(
            "r",
            &Joiner {
                name: Some("Ann"),
                ..joiner("a", 0)
            },
            &Recovery::default(),
            now,
        )
        .unwrap();
        t.join("r", &joiner("a", 1), &Recovery::default(), now)
            .unwrap();
        assert_eq!(
            text(&t.presence("r")),
            r#"{"room":"r","count":1,"users":[{"userId":"a","name":"Ann","connections":2}]}"#
        );
    }

    #[test]
    fn room_full_and_rejoin() {
        let mut t = table(1);
        t.config.max_room_members = 1;
        let now = Instant::now();
        t.join("r", &joiner("a", 0), &Recovery::default(), now)
            .unwrap();
        assert_eq!(
            t.join("r", &joiner("b", 0), &Recovery::default(), now)
                .unwrap_err(),
            JoinError::RoomFull
        );
        let rejoin = Joiner {
            rejoin: true,
            ..joiner("a", 0)
        };
        assert!(
            text(
                &t.join("r", &rejoin, &Recovery::default(), now)
                    .unwrap()
                    .data
            )
            .ends_with("\"members\":1}")
        );
        assert_eq!(t.member_shards("r").collect::<Vec<_>>(), [0]);
    }
}
