//! What the rooms notice for webhooks (section 13.1), one process: a room's
//! first and last member and a user's first and last connection in a room
//! (at the room's owner, in `table`), a room's sequenced messages (at the
//! owner, after `table::publish`), and a user's first and last `/ws`
//! connection in the process (at the owner of the online set).
//!
//! Sans-IO: events are collected here and taken by the shard after each
//! turn (`Router::take_notes`), which hands them to the webhooks thread.
//! Whether a vacate or an offline stands after `--webhook-vacate-delay` is
//! decided there (`hooks::webhook::Outbox`), not here: a shard keeps no
//! webhook timers.

use std::collections::HashMap;
use std::sync::Arc;

use crate::hooks::webhook::{EventType, Message, Types, What};
use crate::proto::names::matches_any;

/// Which events are noticed.
#[derive(Debug, Clone)]
pub struct NoteRules {
    pub types: Types,
    /// `--webhook-rooms`: the rooms whose messages are noticed.
    pub message_rooms: Vec<String>,
}

/// The events one shard noticed since they were last taken.
#[derive(Debug)]
pub struct Notes {
    rules: NoteRules,
    events: Vec<What>,
    /// `/ws` connections per user in the process, at the online set's
    /// owner.
    online: HashMap<Arc<str>, u32>,
}

impl Notes {
    pub fn new(rules: NoteRules) -> Self {
        Self {
            rules,
            events: Vec::new(),
            online: HashMap::new(),
        }
    }

    fn wants(&self, kind: EventType) -> bool {
        self.rules.types.contains(kind)
    }

    fn note(&mut self, what: What) {
        if self.wants(what.kind()) {
            self.events.push(what);
        }
    }

    pub fn take(&mut self) -> Vec<What> {
        std::mem::take(&mut self.events)
    }

    /// A room's member count went from 0 to 1 (`first`) or from 1 to 0.
    pub fn room(&mut self, room: &str, first: bool) {
        let room: Arc<str> = room.into();
        self.note(if first {
            What::RoomOccupied(room)
        } else {
            What::RoomVacated(room)
        });
    }

    /// A user's first (`joined`) or last connection in a presence room.
    pub fn presence(&mut self, room: &str, user: &Arc<str>, joined: bool) {
        let (room, user) = (room.into(), user.clone());
        self.note(if joined {
            What::PresenceJoin { room, user }
        } else {
            What::PresenceLeave { room, user }
        });
    }

    /// Whether a message to `room` is noticed: the caller builds it only
    /// then.
    pub fn wants_message(&self, room: &str) -> bool {
        self.wants(EventType::RoomMessage) && matches_any(&self.rules.message_rooms, room)
    }

    pub fn message(&mut self, message: Message) {
        self.note(What::RoomMessage(Box::new(message)));
    }

    /// A `/ws` connection of `user` opened (`up`) or closed somewhere in
    /// the process; its first and last are noticed.
    pub fn online(&mut self, user: &Arc<str>, up: bool) {
        let count = self.online.entry(user.clone()).or_insert(0);
        if up {
            *count += 1;
            if *count == 1 {
                self.note(What::UserOnline(user.clone()));
            }
        } else if *count <= 1 {
            self.online.remove(user);
            self.note(What::UserOffline(user.clone()));
        } else {
            *count -= 1;
        }
    }
}
